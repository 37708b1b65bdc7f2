"""Atomic writes: a file is written beside its target and renamed, so a crash leaves the old file.

A full disk (or quota, or file-size limit) while writing is a DiskFullError naming the file, one line
for the user; the temp file is removed and the old file stays as it was.
"""
import errno
import json
import os
import tempfile

from common.errors import DiskFullError

# errno values that mean "no room for these bytes": freeing space (or writing elsewhere) fixes them
DISK_FULL = {errno.ENOSPC: "free space", errno.EDQUOT: "free space within your quota",
             errno.EFBIG: "raise the file-size limit (ulimit -f) or write to a filesystem that allows larger files"}


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import: os.umask is process-wide, not thread-safe


def temp_prefix(path):
    return "." + os.path.basename(path)


def remove_stale_temps(path):
    """Delete the temp files that a killed atomic_write of `path` left behind (one writer per path)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith(temp_prefix(path)) and f.endswith(".tmp"):
                os.remove(os.path.join(folder, f))


def is_disk_full(error):
    return isinstance(error, OSError) and error.errno in DISK_FULL


def disk_full_error(path, error, kept, doing="writing it"):
    """DiskFullError for an OSError of is_disk_full, one line: what failed at `path`, what is `kept`, what to do."""
    reason = os.strerror(error.errno).lower()
    return DiskFullError(f"{path}: {reason} while {doing} (errno {error.errno} {errno.errorcode[error.errno]}); "
                         f"{kept}; {DISK_FULL[error.errno]}, then run the command again (a training stage "
                         f"continues from its last checkpoint with --resume)")


def atomic_save(path, save_to):
    """save_to(temp path) writes the file, which is then renamed to `path`: a crash leaves the old file.

    The temp file sits beside `path` (a rename within one folder is atomic); temp files of earlier,
    killed writes of the same path are removed first; the file gets the usual permissions (0666
    less the umask; mkstemp alone gives 0600). A full disk raises DiskFullError (the old file kept).
    """
    try:
        _atomic_save(path, save_to)
    except OSError as e:
        if not is_disk_full(e):
            raise
        kept = f"the previous {os.path.basename(path)} is intact" if os.path.exists(path) else "no file was written"
        raise disk_full_error(path, e, kept) from None


def _atomic_save(path, save_to):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        save_to(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path, write_fn, mode="wb"):
    """atomic_save for a writer of an open file: write_fn(f), flushed to disk before the rename."""
    def save_to(tmp):
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    atomic_save(path, save_to)



def write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), mode="w")

