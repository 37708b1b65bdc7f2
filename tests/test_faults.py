"""Faults get one line: a full disk while writing a file, and NaN or infinite weights in a checkpoint.

A full disk is simulated without root: the writing modules' open() is replaced by one whose files
sit on a "disk" with a given number of bytes free (a write past them fails with ENOSPC, as the
kernel's does), or os.fsync fails. One subprocess check runs the real convert.py under a
file-size limit (RLIMIT_FSIZE), so that the kernel itself refuses the write.
"""
import errno
import io
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

from common import files, logs
from common.checkpoint import save_checkpoint
from common.errors import CheckpointError, DiskFullError
from common.files import atomic_save, write_json
from common.logs import EventWriter, read_scalars
from common.weights import check_finite_weights, finite_weights_warning, nonfinite_message, nonfinite_weights
from conftest import ROOT, error_line

REAL_OPEN = open


class DiskFile(io.FileIO):
    """A file on a simulated disk (self.disk["free"]: the bytes left): a write takes what room is
    left, and a write with none fails with ENOSPC (the kernel's short write, then its error)."""

    def write(self, data):
        room = min(len(data), self.disk["free"])
        if data and room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        self.disk["free"] -= room
        return super().write(bytes(data)[:room])


def disk_open(disk):
    """A replacement for a module's open(): what it writes goes to DiskFiles on `disk`."""
    def fake_open(path, mode="r", **kwargs):
        if "w" not in mode and "a" not in mode:
            return REAL_OPEN(path, mode, **kwargs)
        raw = DiskFile(path, mode.replace("b", "").replace("t", ""))
        raw.disk = disk
        buffered = io.BufferedWriter(raw)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding=kwargs.get("encoding") or "utf-8")
    return fake_open


def failing_fsync(code):
    def fsync(fd):
        raise OSError(code, os.strerror(code))
    return fsync


def small_ckpt():
    return {"model": {"w": np.ones((4, 4), np.float32)}, "optimizer": {}, "epoch": 0, "best_top1": 1.0,
            "config": {"name": "x"}, "framework": "torch", "arch": "cifar10quick"}


def write_report(path):
    import report  # its figures and tables go through report.write_file / write_text
    report.write_text(path, "| table |\n" * 200)


# the writers that every checkpoint, JSON record and report file goes through
WRITERS = {
    "json": lambda path: write_json(path, {"top1": [1.0] * 200}),
    "checkpoint": lambda path: save_checkpoint(path, small_ckpt()),
    "report": write_report,
}

# where the disk fills: in a write (no room at all, or room for part of the file), or at the fsync
# (network filesystems and quotas often report it only there)
FAILURES = {
    "no room": lambda mp: mp.setattr(files, "open", disk_open({"free": 0}), raising=False),
    "part written": lambda mp: mp.setattr(files, "open", disk_open({"free": 100}), raising=False),
    "fsync ENOSPC": lambda mp: mp.setattr(os, "fsync", failing_fsync(errno.ENOSPC)),
    "fsync EDQUOT": lambda mp: mp.setattr(os, "fsync", failing_fsync(errno.EDQUOT)),
}


def assert_one_line(error, path):
    message = str(error)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert "while writing it (errno " in message and "run the command again" in message, message


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("writer", WRITERS)
def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, writer, failure):
    path = tmp_path / "out.file"
    path.write_bytes(b"the previous, complete file")
    FAILURES[failure](monkeypatch)
    with pytest.raises(DiskFullError) as caught:
        WRITERS[writer](str(path))
    assert_one_line(caught.value, path)
    assert "the previous out.file is intact" in str(caught.value)
    code = errno.EDQUOT if "EDQUOT" in failure else errno.ENOSPC
    assert f"(errno {code} {errno.errorcode[code]})" in str(caught.value)
    assert path.read_bytes() == b"the previous, complete file"
    assert os.listdir(tmp_path) == ["out.file"], "a temp file was left behind"


def test_full_disk_before_any_file(tmp_path, monkeypatch):
    """No previous file: the message says nothing was written, and nothing is (no empty or partial file)."""
    monkeypatch.setattr(files, "open", disk_open({"free": 10}), raising=False)
    path = tmp_path / "metrics.json"
    with pytest.raises(DiskFullError, match="no file was written"):
        write_json(str(path), {"a": 1})
    assert os.listdir(tmp_path) == []


def test_full_disk_creating_the_temp_file(tmp_path, monkeypatch):
    """No free inode (or block) for the temp file itself: the same one line."""
    def mkstemp(**kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)
    with pytest.raises(DiskFullError) as caught:
        write_json(str(tmp_path / "a.json"), {})
    assert_one_line(caught.value, tmp_path / "a.json")


def test_full_disk_in_a_path_writer(tmp_path):
    """atomic_save with a writer that opens the temp path itself (jt.save): its half file is removed."""
    def save_to(tmp):
        with REAL_OPEN(tmp, "wb") as f:
            f.write(b"half of it")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    path = tmp_path / "w.pkl"
    path.write_bytes(b"old")
    with pytest.raises(DiskFullError, match=r"w\.pkl: no space left on device while writing it"):
        atomic_save(str(path), save_to)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["w.pkl"]


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch, code):
    monkeypatch.setattr(os, "fsync", failing_fsync(code))
    with pytest.raises(OSError) as caught:
        write_json(str(tmp_path / "a.json"), {})
    assert not isinstance(caught.value, DiskFullError) and caught.value.errno == code
    assert os.listdir(tmp_path) == []


def event_file(folder):
    names = [f for f in os.listdir(folder) if f.startswith("events.out.tfevents")]
    assert len(names) == 1, names
    return os.path.join(folder, names[0])


def test_event_writer_full_disk_at_flush(tmp_path, monkeypatch, capfd):
    """The epoch whose flush fails is cut off whole; the error is one line naming the run folder, from
    the call that wrote, again from close(), and nothing else reaches stderr (no thread's traceback)."""
    disk = {"free": 10 ** 9}
    monkeypatch.setattr(logs, "open", disk_open(disk), raising=False)
    folder = str(tmp_path / "run")
    writer = EventWriter(folder, history=[{"train/loss": 1.0}])
    writer.scalars({"train/loss": 0.5}, 2)
    writer.flush()
    size = os.path.getsize(event_file(folder))
    disk["free"] = 10  # room for a part of the next epoch's record
    writer.scalars({"train/loss": 0.25}, 3)  # still in the file's buffer
    with pytest.raises(DiskFullError) as caught:
        writer.flush()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{folder}: no space left on device while writing its "
                                                      f"TensorBoard events (errno 28 ENOSPC)"), message
    with pytest.raises(DiskFullError):
        writer.close()
    assert os.path.getsize(event_file(folder)) == size, "the torn record was left in the event file"
    assert read_scalars(folder) == {"train/loss": [(1, 1.0), (2, 0.5)]}
    assert capfd.readouterr().err == ""


def test_event_writer_full_disk_in_scalars(tmp_path, monkeypatch):
    """Once the file's buffer spills, scalars() itself meets the full disk."""
    disk = {"free": 10 ** 9}
    monkeypatch.setattr(logs, "open", disk_open(disk), raising=False)
    writer = EventWriter(str(tmp_path / "run"))
    disk["free"] = 0
    with pytest.raises(DiskFullError, match="while writing its TensorBoard events"):
        for step in range(10_000):
            writer.scalars({"train/loss": 1.0, "val/top1": 50.0}, step)


def test_convert_on_a_full_disk_prints_one_line(tmp_path):
    """The real convert.py, its checkpoint refused by the kernel: a file-size limit below the
    checkpoint's size (with SIGXFSZ ignored, write() fails with EFBIG, as on a filesystem whose
    files cannot grow that large). One line, exit 2, the previous output intact, no temp file."""
    from torch_ import models as tm
    src, dst = tmp_path / "src" / "teacher.ckpt", tmp_path / "out" / "copy.ckpt"
    os.makedirs(dst.parent)
    save_checkpoint(str(src), {**small_ckpt(), "model": tm.get_state(tm.build_model("cifar10quick", 0))})
    dst.write_bytes(b"an earlier copy")
    limit = os.path.getsize(src) // 2  # Jittor's import writes a small header file: well below this

    def file_size_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process at the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, os.path.join(ROOT, "convert.py"), str(src), str(dst)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, preexec_fn=file_size_limit)
    line = error_line(proc)
    assert line.startswith(f"error: {dst}: file too large while writing it (errno 27 EFBIG); "
                           f"the previous copy.ckpt is intact"), line
    assert dst.read_bytes() == b"an earlier copy" and os.listdir(dst.parent) == ["copy.ckpt"]


def bn_state():
    return {"conv.weight": np.ones((4, 3, 3, 3), np.float32), "bn.weight": np.ones(4, np.float32),
            "bn.running_var": np.ones(4, np.float32), "fc.weight": np.ones((10, 4), np.float32),
            "num_batches_tracked": np.array(7, np.int64)}


def test_finite_weights_pass():
    """Large finite values are fine (a sum of them would overflow to inf: the check must not sum)."""
    state = {**bn_state(), "fc.weight": np.full((10, 4), 3e38, np.float32)}
    assert nonfinite_weights(state) == [] and nonfinite_message(state, "t.ckpt") is None
    assert finite_weights_warning(state, "t.ckpt") is None
    check_finite_weights(state, "t.ckpt", "--teacher")


def test_nan_and_inf_weights_are_named():
    state = bn_state()
    state["conv.weight"][0, 0, 0, 0] = np.nan
    state["bn.running_var"][2] = np.inf
    assert nonfinite_weights(state) == ["conv.weight", "bn.running_var"]
    with pytest.raises(CheckpointError) as caught:
        check_finite_weights(state, "ckpt/t.ckpt", "--teacher")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "--teacher ckpt/t.ckpt: weights conv.weight, bn.running_var (2 of 5 arrays) hold NaN or infinite values"), message
    warning = finite_weights_warning(state, "ckpt/t.ckpt")
    assert "\n" not in warning and warning.startswith("warning: ckpt/t.ckpt: weights conv.weight, bn.running_var ")


def test_many_nonfinite_weights_name_three():
    state = {f"layer{i}.weight": np.full(3, -np.inf, np.float32) for i in range(5)}
    assert nonfinite_message(state, "x.pth") == ("x.pth: weights layer0.weight, layer1.weight, layer2.weight "
                                                 "and 2 more (5 of 5 arrays) hold NaN or infinite values")
