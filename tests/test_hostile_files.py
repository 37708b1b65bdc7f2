"""No checkpoint can run code: hostile .ckpt, .pth and .pkl files are refused by every entry point
that reads weights, in both frameworks, with one line naming the file, exit code 2, and nothing run.

Each hostile file carries a pickled object whose __reduce__ would create a marker file (what a real
payload would do with a shell command); the test checks that the marker was never created.
"""
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from common.config import FRAMEWORKS
from common.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from common.errors import CheckpointError
from common.files import UMASK
from conftest import ROOT, error_line
from stage_runner import stage_process
from torch_ import models as tm


class Payload:
    """Unpickling this calls os.system("touch MARKER")."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def teacher_state():
    return tm.get_state(tm.build_model("cifar10quick", 0))


def hostile_ckpt(path, marker):
    """The repo's old pickle checkpoint layout with a payload among the plain data."""
    with open(path, "wb") as f:
        pickle.dump({"model": teacher_state(), "optimizer": {}, "epoch": 0, "best_top1": 1.0, "framework": "torch",
                     "arch": "cifar10quick", "config": {"name": "x", "hook": Payload(marker)}}, f, protocol=4)


def hostile_pth(path, marker):
    """torch.save pickles any object: mdistiller's layout with a payload beside the state dict."""
    state = {k: torch.from_numpy(v) for k, v in teacher_state().items()}
    torch.save({"model": state, "epoch": 240, "note": Payload(marker)}, path)


def hostile_pkl(path, marker):
    """A Jittor-style .pkl (a pickled dict of arrays) with a payload."""
    with open(path, "wb") as f:
        pickle.dump({**teacher_state(), "extra": Payload(marker)}, f, protocol=4)


MAKERS = {"ckpt": hostile_ckpt, "pth": hostile_pth, "pkl": hostile_pkl}


@pytest.fixture
def hostile(tmp_path):
    """hostile(kind) -> (path of a fresh hostile file, its marker path)."""
    def make(kind):
        marker = tmp_path / f"ran_{kind}"
        path = tmp_path / f"evil.{kind}"
        MAKERS[kind](str(path), str(marker))
        return str(path), marker
    return make


def assert_refused(proc, path, marker):
    assert not marker.exists(), f"the payload ran: {marker} exists"
    line = error_line(proc)
    assert line.startswith(f"error: {path}: refused: it pickles posix.system"), line


def run_tool(script, *args):
    import subprocess
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)




@pytest.mark.parametrize("kind", ["ckpt", "pth", "pkl"])
def test_the_one_reader_refuses(kind, hostile):
    """common.checkpoint.read_checkpoint, which every entry point of both frameworks reads weights with."""
    path, marker = hostile(kind)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path, "cifar10quick")
    assert not marker.exists(), f"the payload ran: {marker} exists"
    assert str(e.value).startswith(f"{path}: refused: it pickles posix.system"), e.value


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["ckpt", "pth", "pkl"])
def test_test_py_refuses(fw, kind, hostile, tiny_data):
    path, marker = hostile(kind)
    proc = stage_process(fw, "test", "--ckpt", path, "--model", "cifar10quick", "--data-dir", tiny_data)
    assert_refused(proc, path, marker)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["ckpt", "pth"])
def test_student_teacher_and_init_refuse(fw, kind, hostile, tiny_data):
    path, marker = hostile(kind)
    proc = stage_process(fw, "train_student", "--method", "kd", "--teacher", path, "--teacher-model", "cifar10quick",
                      "--data-dir", tiny_data, "--epochs", 1, "--name", "h/s")
    assert_refused(proc, path, marker)
    proc = stage_process(fw, "train_teacher", "--init", path, "--data-dir", tiny_data, "--epochs", 1,
                      "--train-size", 100, "--val-size", 20, "--name", "h/t")
    assert_refused(proc, path, marker)


@pytest.mark.parametrize("kind", ["ckpt", "pth"])
def test_align_compare_ckpt_refuses(kind, hostile, tiny_data):
    path, marker = hostile(kind)
    proc = run_tool("align.py", "--compare-ckpt", path, "--model", "cifar10quick", "--data-dir", tiny_data)
    assert_refused(proc, path, marker)


@pytest.mark.parametrize("kind", ["ckpt", "pth", "pkl"])
def test_convert_refuses(kind, hostile, tmp_path):
    path, marker = hostile(kind)
    out = tmp_path / "out.ckpt"
    proc = run_tool("convert.py", path, out)
    assert_refused(proc, path, marker)
    assert not out.exists()


def test_checkpoints_are_not_pickles_and_round_trip(tmp_path):
    state = teacher_state()
    ckpt = {"model": state, "optimizer": {"fc2.weight": np.full((10, 1024), 0.5, np.float32)}, "epoch": 3,
            "best_top1": np.float64(41.5), "config": {"name": "x", "milestones": [1, 2], "beta": None},
            "framework": "torch", "arch": "cifar10quick", "history": [{"val/top1": 40.0}]}
    path = str(tmp_path / "a.ckpt")
    save_checkpoint(path, ckpt)
    with open(path, "rb") as f:
        head = f.read(16)
    assert not head.startswith(b"\x80"), "a pickle"
    back = load_checkpoint(path)
    assert list(back["model"]) == list(state)  # the state's order survives (the classifier is the last 2-D weight)
    assert all(back["model"][k].tobytes() == v.tobytes() and back["model"][k].dtype == v.dtype for k, v in state.items())
    assert back["optimizer"]["fc2.weight"].tobytes() == ckpt["optimizer"]["fc2.weight"].tobytes()
    assert back["best_top1"] == 41.5 and back["config"] == ckpt["config"] and back["history"] == ckpt["history"]
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~UMASK)  # not mkstemp's 0600


def test_legacy_pickle_checkpoints_still_load(tmp_path):
    state = teacher_state()
    path = tmp_path / "old.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"model": state, "optimizer": {}, "epoch": 1, "best_top1": 12.5, "config": {"name": "old"},
                     "framework": "jittor", "arch": "cifar10quick"}, f, protocol=4)
    back = load_checkpoint(str(path))
    assert back["arch"] == "cifar10quick" and all(np.array_equal(back["model"][k], v) for k, v in state.items())


@pytest.mark.parametrize("damage", ["truncated", "foreign header"])
def test_damaged_checkpoints_are_clear_errors(damage, tmp_path):
    path = str(tmp_path / "d.ckpt")
    save_checkpoint(path, {"model": teacher_state(), "optimizer": {}, "epoch": 0, "best_top1": 0.0,
                                  "config": {}, "framework": "torch", "arch": "cifar10quick"})
    data = open(path, "rb").read()
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:  # a valid safetensors file that is not ours
        import safetensors.numpy
        data = safetensors.numpy.save({"w": np.zeros(3, np.float32)}, metadata={"format": "pt"})
    open(path, "wb").write(data)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint of this repo"):
        load_checkpoint(path)
