"""Atomic writes: a file is written beside its target and renamed, so a crash leaves the old file."""
import json
import os
import tempfile


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


def atomic_save(path, save_to):
    """save_to(temp path) writes the file, which is then renamed to `path`: a crash leaves the old file.

    The temp file sits beside `path` (a rename within one folder is atomic); temp files of earlier,
    killed writes of the same path are removed first; the file gets the usual permissions (0666
    less the umask; mkstemp alone gives 0600).
    """
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

