"""Every stage end to end, as a user runs it, on a tiny dataset in the official layout, in both frameworks."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from common.config import FRAMEWORKS, build_config
from common.checkpoint import CKPT_KEYS, ckpt_path, load_checkpoint, make_checkpoint, save_checkpoint
from common.datasets import load_cifar10
from common.errors import DIVERGED_EXIT
from common.logs import read_scalars
from common.results import read_result, run_dir
from conftest import SHARED_TEACHER_ARGS as TINY_TEACHER, SHARED_TEACHER_NAME, error_line, run_script
from stage_runner import stage_process
from jittor_ import dataset as jt_dataset, distillers as jt_distillers, engine as jt_engine, models as jm
from torch_ import dataset as th_dataset, distillers as th_distillers, engine as th_engine, models as tm

TINY_STUDENT = ["--train-size", 200, "--val-size", 50, "--batch-size", 32, "--epochs", 2, "--milestones", 1,
                "--warmup", 1]


def ckpt(name, framework):
    return ckpt_path(name, framework)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_run_writes_checkpoint_events_and_result(fw, shared_teacher):
    """The shared tiny teacher (conftest: 200/50 images, batches of 32, 2 epochs, lr x0.1 from epoch 1)."""
    path, stdout = shared_teacher[fw]
    assert f"[{fw} teacher] epoch 1/2" in stdout and f"[{fw} teacher] epoch 2/2" in stdout  # per-epoch lines
    state = load_checkpoint(path)
    assert set(CKPT_KEYS) <= set(state) and state["framework"] == fw and state["epoch"] == 1
    assert state["arch"] == "cifar10quick" and len(state["history"]) == 2
    run = run_dir(SHARED_TEACHER_NAME, fw)
    scalars = read_scalars(run)
    for tag in ("train/loss", "train/loss_ce", "train/top1", "train/top5", "val/loss", "val/top1", "val/top5", "lr",
                "time/data", "time/train", "time/eval"):
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
    assert "distill_weight" not in scalars  # no teacher of its own: nothing to weigh
    assert scalars["lr"][1][1] == pytest.approx(0.001)  # milestone 1: lr x 0.1 from the second epoch
    result = read_result(SHARED_TEACHER_NAME, fw)
    assert result["finished"] and result["diverged"] is None and result["stage"] == "teacher"
    assert result["epochs"] == 2 and result["seconds"]["train"] > 0 and result["framework"] == fw
    assert result["final"]["val/top1"] == state["history"][-1]["val/top1"]
    assert result["best_val_top1"] == state["best_top1"] and result["config"]["milestones"] == [1]
    assert not [f for f in os.listdir(run) if f in ("metrics.json", "test.json", "diverged.json")]
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]


@pytest.fixture(scope="module")
def ce_students(tiny_data):
    """The CE student (no teacher) per framework, trained once: a run checked below, and an --init."""
    for fw in FRAMEWORKS:
        run_script(fw, "train_student", "--method", "ce", "--data-dir", tiny_data, "--name", "t/student_ce",
                   *TINY_STUDENT)
    return {fw: ckpt("t/student_ce", fw) for fw in FRAMEWORKS}


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["ce", "kd", "dkd"])
def test_student_methods_run_end_to_end(fw, method, teachers, tiny_data, request):
    name = f"t/student_{method}"
    if method == "ce":
        request.getfixturevalue("ce_students")
    else:
        run_script(fw, "train_student", "--method", method, "--teacher", teachers[fw], "--data-dir", tiny_data,
                   "--name", name, *TINY_STUDENT)
    tags = set(read_scalars(run_dir(name, fw)))
    expected = {"ce": {"train/loss_ce"}, "kd": {"train/loss_ce", "train/loss_kd"},
                "dkd": {"train/loss_ce", "train/loss_tckd", "train/loss_nckd"}}[method]
    assert expected <= tags and ("distill_weight" in tags) == (method != "ce")  # logged only with a teacher
    assert load_checkpoint(ckpt(name, fw))["arch"] == "cifar10simple"
    result = read_result(name, fw)
    assert result["finished"] and result["stage"] == f"student-{method}" and result["config"]["method"] == method


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
        # the same metrics in the teacher run's record in this framework's folder: "test" for its own
        # checkpoint, "test_from"[other] for the other framework's
        record = read_result(SHARED_TEACHER_NAME, fw)
        assert (record["test"] if source == fw else record["test_from"][source]) == metrics
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
def test_student_from_other_frameworks_teacher_and_init(fw, teachers, ce_students, tiny_data):
    other = "jittor" if fw == "torch" else "torch"
    proc = run_script(fw, "train_student", "--method", "kd", "--teacher", teachers[other], "--init",
                      ce_students[other], "--data-dir", tiny_data, "--name", "t/cross", *TINY_STUDENT)
    assert f"teacher cifar10quick from {teachers[other]} ({other} checkpoint" in proc.stdout
    assert f"initial weights from {ce_students[other]} ({other} checkpoint)" in proc.stdout


# ------------------------------------------------------------------ error paths: one clear line, exit code 2
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_missing_data_is_a_clear_error(fw, tmp_path):
    proc = run_script(fw, "train_teacher", "--data-dir", tmp_path, *TINY_TEACHER, check=False)
    # exit 2, no traceback; the message has more lines by design: where to download, how to unpack
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: CIFAR-10 not found") and str(tmp_path) in proc.stderr
    assert "tar -xzf cifar-10-python.tar.gz" in proc.stderr


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_checkpoints_are_clear_errors(fw, teachers, tiny_data, tmp_path):
    base = ["--method", "kd", "--data-dir", tiny_data, "--name", "t/err", *TINY_STUDENT]
    err = error_line(stage_process(fw, "train_student", *base, "--teacher", tmp_path / "nope.ckpt"))
    assert "checkpoint not found" in err
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a pickle")
    err = error_line(stage_process(fw, "train_student", *base, "--teacher", garbage))
    assert "not a readable checkpoint" in err
    raw = tmp_path / "raw_state_dict.ckpt"  # e.g. a bare state_dict, not this repo's checkpoint dict
    with open(raw, "wb") as f:
        pickle.dump({"conv1.weight": np.zeros(3)}, f)
    err = error_line(stage_process(fw, "train_student", *base, "--teacher", raw))
    assert "not a checkpoint of this repo" in err
    # --init with the teacher's checkpoint for a student: wrong architecture
    err = error_line(stage_process(fw, "train_student", "--method", "ce", "--init", teachers[fw], "--data-dir", tiny_data,
                                "--name", "t/err", *TINY_STUDENT))
    assert "'cifar10quick'" in err and "'cifar10simple'" in err
    err = error_line(stage_process(fw, "train_teacher", "--resume", "--data-dir", tiny_data, "--name", "t/never-run",
                                *TINY_TEACHER))
    assert "checkpoint not found" in err


def nan_teacher(path, tmp_path):
    """The teacher's checkpoint rewritten with one weight set to NaN (what a diverged run leaves)."""
    ckpt = load_checkpoint(path)
    model = dict(ckpt["model"])
    model["fc1.weight"] = model["fc1.weight"].copy()
    model["fc1.weight"][0, 0] = np.nan
    out = str(tmp_path / "nan_teacher.ckpt")
    # a run name of its own: test.py adds its metrics to the record of the run the checkpoint names
    config = dict(ckpt["config"], name="t/nan_weights")
    save_checkpoint(out, make_checkpoint(model, config, ckpt["framework"], ckpt["arch"], ckpt["dataset"],
                                         epoch=ckpt["epoch"], best_top1=ckpt["best_top1"], history=ckpt["history"]))
    return out


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_nan_weights_are_refused_for_training_and_a_warning_for_test(fw, teachers, tiny_data, tmp_path):
    bad = nan_teacher(teachers[fw], tmp_path)
    line = error_line(stage_process(fw, "train_student", "--method", "kd", "--teacher", bad, "--data-dir", tiny_data,
                                 "--name", "t/nan_teacher", *TINY_STUDENT))
    assert line.startswith(f"error: --teacher {bad}: weights fc1.weight (1 of ") and "NaN or infinite" in line
    line = error_line(stage_process(fw, "train_teacher", "--init", bad, "--data-dir", tiny_data, "--name", "t/nan_init",
                                 "--epochs", 1))
    assert line.startswith(f"error: --init {bad}: weights fc1.weight (1 of ") and "NaN or infinite" in line
    assert not os.path.exists(ckpt("t/nan_teacher", fw)) and not os.path.exists(ckpt("t/nan_init", fw))
    # test.py evaluates what it is asked to, and says once that the numbers mean nothing
    out = tmp_path / "nan.json"
    proc = stage_process(fw, "test", "--ckpt", bad, "--data-dir", tiny_data, "--json", out)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {bad}: weights fc1.weight"), proc.stderr
    assert json.loads(out.read_text())["n"] == 70 and read_result("t/nan_weights", fw)["test"]["n"] == 70


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bad_flags_are_clear_errors(fw, tiny_data):
    err = error_line(run_script(fw, "train_student", "--method", "dkd", "--data-dir", tiny_data, check=False))
    assert "needs a teacher" in err and f"python {fw}_/train_teacher.py`" in err
    # the rest in-process (the contract above is checked on a real process)
    proc = stage_process(fw, "train_teacher", "--model", "vgg99")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    err = error_line(stage_process(fw, "train_teacher", "--data-dir", tiny_data, "--train-size", 100000))
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


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_is_frozen_and_sees_the_students_batch(fw, teachers, tiny_data):
    data = load_cifar10(tiny_data)
    x, y = data["train_x"][:128], data["train_y"][:128]
    if fw == "torch":
        models, engine, methods, loader = tm, th_engine, th_distillers.METHODS, th_dataset.Loader(x, y, 32, True, 0, "cpu")
        device = torch.device("cpu")
    else:
        models, engine, methods, loader = jm, jt_engine, jt_distillers.METHODS, jt_dataset.Loader(x, y, 32, True, 0, "cpu")
        device = "cpu"
    teacher, _ = engine.load_teacher(teachers[fw], device)
    student = models.build_model("cifar10simple")
    config = build_config("student", methods, method="dkd", warmup=1)
    teacher.train()  # a stray train() before the epoch must not leak into distillation
    before = models.get_state(teacher)
    rec_t = Recorder(teacher, lambda v: v.numpy())
    rec_s = Recorder(student, lambda v: v.numpy())
    optimizer = engine.make_optimizer(student, config)
    engine.train_one_epoch(rec_s, rec_t, loader, optimizer, 0, config, device, {}, "student-dkd")
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
    """A NaN loss is a result, not a crash: its own exit code, one line, and a record saying where it stopped."""
    line = error_line(run_script(fw, "train_teacher", "--data-dir", tiny_data, "--name", "t/diverge",
                                 *TINY_TEACHER, "--lr", 1e6, check=False), code=DIVERGED_EXIT)
    assert DIVERGED_EXIT == 3 and "training diverged" in line and "at epoch 1," in line
    result = read_result("t/diverge", fw)
    assert result["diverged"]["epoch"] == 1 and "training diverged" in result["diverged"]["error"]
    assert not result["finished"] and result["epochs"] == 0 and result["stage"] == "teacher"


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
    plain = stage_process("torch", "train_teacher", *args)  # output to a pipe (in-process: a StringIO)
    assert plain.returncode == 0
    assert "/6 [" not in plain.stdout + plain.stderr and "epoch 2/2" in plain.stdout
