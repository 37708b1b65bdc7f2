"""Every stage end to end, as a user runs it, on a tiny dataset in the official layout, in both frameworks."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from common.config import FRAMEWORKS
from common.checkpoint import CKPT_KEYS, ckpt_path, load_checkpoint
from common.datasets import load_cifar10
from common.logs import read_scalars, run_dir
from conftest import run_script
from jittor_ import dataset as jt_dataset, models as jm, train_student as jt_student, train_teacher as jt_teacher
from torch_ import dataset as th_dataset, models as tm, train_student as th_student, train_teacher as th_teacher

TINY_TEACHER = ["--train-size", 200, "--val-size", 50, "--batch-size", 32, "--epochs", 2, "--milestones", 1]
TINY_STUDENT = ["--train-size", 200, "--val-size", 50, "--batch-size", 32, "--epochs", 2, "--milestones", 1,
                "--warmup", 1]


def ckpt(name, framework):
    return ckpt_path(name, framework)


@pytest.fixture(scope="module")
def teachers(tiny_data):
    """A tiny teacher per framework, trained once for this module."""
    for fw in FRAMEWORKS:
        proc = run_script(fw, "train_teacher", "--data-dir", tiny_data, "--name", "t/teacher", *TINY_TEACHER)
        assert f"[{fw} teacher] epoch 2/2" in proc.stdout  # per-epoch progress lines
    return {fw: ckpt("t/teacher", fw) for fw in FRAMEWORKS}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_run_writes_checkpoint_events_and_json(fw, teachers):
    state = load_checkpoint(teachers[fw])
    assert set(CKPT_KEYS) <= set(state) and state["framework"] == fw and state["epoch"] == 1
    assert state["arch"] == "cifar10quick" and len(state["history"]) == 2
    run = run_dir("t/teacher", fw)
    scalars = read_scalars(run)
    for tag in ("train/loss", "train/top1", "train/top5", "val/loss", "val/top1", "val/top5", "lr",
                "time/data", "time/train", "time/eval"):
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
    assert scalars["lr"][1][1] == pytest.approx(0.001)  # milestone 1: lr x 0.1 from the second epoch
    with open(os.path.join(run, "metrics.json")) as f:
        summary = json.load(f)
    assert summary["epochs"] == 2 and summary["seconds"]["train"] > 0
    assert not [f for f in os.listdir(os.path.dirname(teachers[fw])) if f.endswith(".tmp")]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["ce", "kd", "dkd"])
def test_student_methods_run_end_to_end(fw, method, teachers, tiny_data):
    name = f"t/student_{method}"
    args = ["--method", method, "--data-dir", tiny_data, "--name", name, *TINY_STUDENT]
    if method != "ce":
        args += ["--teacher", teachers[fw]]
    run_script(fw, "train_student", *args)
    tags = set(read_scalars(run_dir(name, fw)))
    expected = {"ce": {"train/loss_ce"}, "kd": {"train/loss_ce", "train/loss_kd"},
                "dkd": {"train/loss_ce", "train/loss_tckd", "train/loss_nckd"}}[method]
    assert expected <= tags and "distill_weight" in tags
    assert load_checkpoint(ckpt(name, fw))["arch"] == "cifar10simple"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_test_script_on_saved_checkpoints_of_both_frameworks(fw, teachers, tiny_data, tmp_path):
    for source in FRAMEWORKS:
        out = tmp_path / f"{fw}_{source}.json"
        proc = run_script(fw, "test", "--ckpt", teachers[source], "--data-dir", tiny_data, "--batch-size", 32,
                          "--json", out)
        metrics = json.loads(out.read_text())
        assert metrics["n"] == 70  # 70 test images in batches of 32: the last batch holds 6
        # top-1 is sample-weighted: the per-class accuracies weighted by the test set's class counts
        counts = np.bincount(load_cifar10(tiny_data)["test_y"], minlength=10)
        assert metrics["top1"] == pytest.approx(float(np.dot(metrics["per_class"], counts)) / 70, abs=1e-9)
        assert metrics["top5"] >= metrics["top1"] and len(metrics["per_class"]) == 10
        assert metrics["images_per_s"] > 0 and "top-1" in proc.stdout
    a = json.loads((tmp_path / f"{fw}_torch.json").read_text())
    b = json.loads((tmp_path / f"{fw}_jittor.json").read_text())
    assert a["ckpt_framework"] == "torch" and b["ckpt_framework"] == "jittor"


def test_same_checkpoint_same_top1_in_both_frameworks(teachers, tiny_data, tmp_path):
    results = {}
    for fw in FRAMEWORKS:
        run_script(fw, "test", "--ckpt", teachers["torch"], "--data-dir", tiny_data, "--json", tmp_path / f"{fw}.json")
        results[fw] = json.loads((tmp_path / f"{fw}.json").read_text())
    assert results["torch"]["top1"] == pytest.approx(results["jittor"]["top1"], abs=100 / 70 + 1e-9)
    assert results["torch"]["loss"] == pytest.approx(results["jittor"]["loss"], rel=1e-4)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_student_from_other_frameworks_teacher_and_init(fw, teachers, tiny_data):
    other = "jittor" if fw == "torch" else "torch"
    run_script(other, "train_student", "--method", "ce", "--data-dir", tiny_data, "--name", "t/init", *TINY_STUDENT)
    proc = run_script(fw, "train_student", "--method", "kd", "--teacher", teachers[other], "--init",
                      ckpt("t/init", other), "--data-dir", tiny_data, "--name", "t/cross", *TINY_STUDENT)
    assert f"({other} checkpoint" in proc.stdout


# ------------------------------------------------------------------ error paths: clear message, exit code 2
def error_of(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_missing_data_is_a_clear_error(fw, tmp_path):
    err = error_of(run_script(fw, "train_teacher", "--data-dir", tmp_path, *TINY_TEACHER, check=False))
    assert "CIFAR-10 not found" in err and str(tmp_path) in err


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_checkpoints_are_clear_errors(fw, teachers, tiny_data, tmp_path):
    base = ["--method", "kd", "--data-dir", tiny_data, "--name", "t/err", *TINY_STUDENT]
    err = error_of(run_script(fw, "train_student", *base, "--teacher", tmp_path / "nope.ckpt", check=False))
    assert "checkpoint not found" in err
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a pickle")
    err = error_of(run_script(fw, "train_student", *base, "--teacher", garbage, check=False))
    assert "not a readable checkpoint" in err
    raw = tmp_path / "raw_state_dict.ckpt"  # e.g. a bare state_dict, not this repo's checkpoint dict
    with open(raw, "wb") as f:
        pickle.dump({"conv1.weight": np.zeros(3)}, f)
    err = error_of(run_script(fw, "train_student", *base, "--teacher", raw, check=False))
    assert "not a checkpoint of this repo" in err
    # --init with the teacher's checkpoint for a student: wrong architecture
    err = error_of(run_script(fw, "train_student", "--method", "ce", "--init", teachers[fw], "--data-dir", tiny_data,
                              "--name", "t/err", *TINY_STUDENT, check=False))
    assert "'cifar10quick'" in err and "'cifar10simple'" in err
    err = error_of(run_script(fw, "train_teacher", "--resume", "--data-dir", tiny_data, "--name", "t/never-run",
                              *TINY_TEACHER, check=False))
    assert "checkpoint not found" in err


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_flags_are_clear_errors(fw, tiny_data):
    proc = run_script(fw, "train_student", "--method", "dkd", "--data-dir", tiny_data, check=False)
    assert proc.returncode == 2 and "needs a teacher" in proc.stderr and f"python {fw}_/train_teacher.py`" in proc.stderr
    proc = run_script(fw, "train_teacher", "--model", "vgg99", check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    err = error_of(run_script(fw, "train_teacher", "--data-dir", tiny_data, "--train-size", 100000, check=False))
    assert "train_size + val_size" in err


# ------------------------------------------------------------------ the teacher inside a student epoch
class Recorder:
    """Wraps a model; records every input batch and whether the model was in training mode."""

    def __init__(self, model, to_numpy):
        self.model, self.to_numpy, self.inputs, self.modes = model, to_numpy, [], []

    def __call__(self, x):
        self.inputs.append(self.to_numpy(x))
        self.modes.append(self.model.training if hasattr(self.model, "training") else self.model.is_train)
        return self.model(x)

    def __getattr__(self, name):
        return getattr(self.model, name)


class Args:
    method, temperature, warmup, alpha, beta, dkd_ce_weight, kd_ce_weight, kd_weight = "dkd", 4.0, 1, 1.0, 2.0, 1.0, 0.1, 0.9
    lr, momentum, weight_decay, rdrop = 0.01, 0.9, 5e-4, 0.0


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_is_frozen_and_sees_the_students_batch(fw, teachers, tiny_data):
    data = load_cifar10(tiny_data)
    x, y = data["train_x"][:128], data["train_y"][:128]
    if fw == "torch":
        models, student_mod, teacher_mod, loader = tm, th_student, th_teacher, th_dataset.Loader(x, y, 32, True, 0, "cpu")
        device = torch.device("cpu")
        teacher, _ = th_student.load_teacher(teachers[fw], device)
        student = tm.build_model("cifar10simple")
    else:
        models, student_mod, teacher_mod, loader = jm, jt_student, jt_teacher, jt_dataset.Loader(x, y, 32, True, 0, "cpu")
        device = "cpu"
        teacher, _ = jt_student.load_teacher(teachers[fw], device)
        student = jm.build_model("cifar10simple")
    teacher.train()  # a stray train() before the epoch must not leak into distillation
    before = models.get_state(teacher)
    rec_t = Recorder(teacher, lambda v: v.numpy())
    rec_s = Recorder(student, lambda v: v.numpy())
    optimizer = teacher_mod.make_optimizer(student, Args)
    student_mod.train_one_epoch(rec_s, rec_t, loader, optimizer, 0, Args, device)
    assert len(rec_t.inputs) == len(rec_s.inputs) == 4
    for a, b in zip(rec_t.inputs, rec_s.inputs):
        np.testing.assert_array_equal(a, b)  # same images, same augmentation, same order
    assert rec_t.modes == [False] * 4 and rec_s.modes == [True] * 4
    after = models.get_state(teacher)
    for k in before:  # no gradient step and no BatchNorm update reached the teacher
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    if fw == "torch":
        assert all(not p.requires_grad for p in teacher.parameters())
    else:
        assert all(p.is_stop_grad() for p in teacher.parameters())


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_divergence_stops_with_a_clear_error(fw, tiny_data):
    err = error_of(run_script(fw, "train_teacher", "--data-dir", tiny_data, "--name", "t/diverge", *TINY_TEACHER[:-4],
                              "--epochs", 1, "--lr", 1e6, check=False))
    assert "training diverged" in err and "epoch 1" in err


def test_progress_bar_on_a_terminal_only(tiny_data):
    """A tqdm bar within the epoch when the output is a terminal (a pseudo-terminal here, 120 columns);
    with output to a pipe (logs, CI) only the per-epoch lines."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios
    from conftest import ROOT
    args = ["--data-dir", tiny_data, "--name", "t/bar", *map(str, TINY_TEACHER)]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "torch_", "train_teacher.py"), *args],
                            cwd=ROOT, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=600) == 0
    text = out.decode("utf-8", "replace")
    assert "torch teacher: " in text and "/6 [" in text and "batch" in text  # 200 images, batches of 32: 6
    plain = run_script("torch", "train_teacher", *args)
    assert "/6 [" not in plain.stdout + plain.stderr and "epoch 2/2" in plain.stdout
