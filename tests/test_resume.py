"""Exact resume: a stage killed with SIGKILL in the middle of an epoch and continued with --resume
ends bit-identical to the uninterrupted run: weights, momentum, metrics, event-file curves and
test result, in both frameworks, for the teacher (also with R-Drop) and the KD, DKD and FitNet
students (FitNet's regressor and its momentum included).

The kill is real (a subprocess, SIGKILL, no chance to clean up): it lands half an epoch after the
run printed the end of epoch 1, so the process is inside epoch 2 with epoch 1's checkpoint on disk.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from common.config import FRAMEWORKS
from common.batches import epoch_seed
from common.checkpoint import ckpt_path, load_checkpoint
from common.files import temp_prefix
from common.logs import read_scalars, run_dir
from conftest import error_line, ROOT, run_script

EPOCHS = 3
# 20 steps of 10 images per epoch, lr x0.1 after epoch 1; teacher dropout 0.5 draws new masks every step
RUN = ["--train-size", 200, "--val-size", 50, "--batch-size", 10, "--epochs", EPOCHS, "--milestones", 1]
STUDENT = ["--warmup", 2, "--lr", 0.002]  # the BN-free student diverges at 0.01 with batches of 10


def stage_cmd(fw, stage, *args):
    return [sys.executable, os.path.join(ROOT, f"{fw}_", f"{stage}.py"), *map(str, args)]


def run_timed(fw, stage, *args):
    """Run to the end; the times at which each 'epoch k/N' line appeared."""
    proc = subprocess.Popen(stage_cmd(fw, stage, *args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    times, out = [], []
    for line in proc.stdout:
        out.append(line)
        if "] epoch " in line:
            times.append(time.monotonic())
    assert proc.wait(timeout=600) == 0, "".join(out)[-4000:]
    assert len(times) == EPOCHS, "".join(out)[-4000:]
    return times


def run_and_kill(fw, stage, delay, *args):
    """Start a run, SIGKILL it `delay` seconds after it printed the end of epoch 1."""
    proc = subprocess.Popen(stage_cmd(fw, stage, *args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if f"] epoch 1/{EPOCHS}" in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    out.append(proc.stdout.read())
    assert proc.wait(timeout=600) == -signal.SIGKILL, "".join(out)[-4000:]
    return "".join(out)


def plant_stale_temps(name, fw):
    """What a kill inside atomic_write leaves: a temp file beside the checkpoint (and beside a JSON file)."""
    ckpt = ckpt_path(name, fw)
    stale = [os.path.join(os.path.dirname(ckpt), temp_prefix(ckpt) + "killed.tmp"),
             os.path.join(run_dir(name, fw), temp_prefix("metrics.json") + "killed.tmp")]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"half a file")
    return stale


def without_times(metrics):
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def assert_same_run(reference, resumed, fw):
    """Bit-identical checkpoints (arrays compared byte for byte) and curves, timings aside."""
    a, b = (load_checkpoint(ckpt_path(n, fw)) for n in (reference, resumed))
    assert a["epoch"] == b["epoch"] == EPOCHS - 1
    for group in [g for g in ("model", "optimizer", "regressor") if g in a or g in b]:
        assert list(a[group]) == list(b[group]) and a[group], group
        for key in a[group]:
            assert a[group][key].tobytes() == b[group][key].tobytes(), f"{group} {key} differs"
    assert [without_times(h) for h in a["history"]] == [without_times(h) for h in b["history"]]
    assert a["best_top1"] == b["best_top1"]
    curves = [read_scalars(run_dir(n, fw)) for n in (reference, resumed)]
    assert set(curves[0]) == set(curves[1])
    for tag in curves[0]:
        assert [s for s, _ in curves[1][tag]] == list(range(1, EPOCHS + 1)), f"{tag}: every epoch exactly once"
        if not tag.startswith("time/"):
            assert curves[0][tag] == curves[1][tag], tag


def kill_and_resume(fw, stage, name, reference_times, args):
    """Kill a run of `args` mid-epoch 2, check that it was cut short, plant stale temps, resume it."""
    epoch_seconds = reference_times[1] - reference_times[0]
    run_and_kill(fw, stage, 0.5 * epoch_seconds, *args)
    cut = load_checkpoint(ckpt_path(name, fw))
    assert cut["epoch"] < EPOCHS - 1, "the kill came after the run had finished: nothing was resumed"
    stale = plant_stale_temps(name, fw)
    proc = run_script(fw, stage, *args, "--resume")
    assert f"resuming {ckpt_path(name, fw)} after epoch {cut['epoch'] + 1}" in proc.stdout
    assert not [p for p in stale if os.path.exists(p)], "stale temp files were left"


@pytest.fixture(scope="module")
def reference_teachers(tiny_data):
    """The uninterrupted teacher per framework, with the times of its epoch lines."""
    return {fw: run_timed(fw, "train_teacher", "--data-dir", tiny_data, "--name", "r/teacher_ref", *RUN)
            for fw in FRAMEWORKS}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_killed_mid_epoch_resumes_exactly(fw, reference_teachers, tiny_data, tmp_path):
    args = ["--data-dir", tiny_data, "--name", "r/teacher_cut", *RUN]
    kill_and_resume(fw, "train_teacher", "r/teacher_cut", reference_teachers[fw], args)
    assert_same_run("r/teacher_ref", "r/teacher_cut", fw)
    results = []
    for name in ("r/teacher_ref", "r/teacher_cut"):
        out = tmp_path / f"{name.replace('/', '_')}.json"
        run_script(fw, "test", "--ckpt", ckpt_path(name, fw), "--data-dir", tiny_data, "--json", out)
        results.append(json.loads(out.read_text()))
    for key in ("top1", "top5", "loss", "per_class", "n"):
        assert results[0][key] == results[1][key], key
    # a resume that contradicts the checkpoint is one clear line, not a silent mix
    line = error_line(run_script(fw, "train_teacher", *args, "--resume", "--seed", 1, check=False))
    assert "--seed 0" in line and "this run has 1" in line
    line = error_line(run_script(fw, "train_teacher", *args[:-2], "--milestones", 2, "--resume", check=False))
    assert "--milestones [1]" in line


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_rdrop_teacher_killed_mid_epoch_resumes_exactly(fw, tiny_data):
    """R-Drop draws two dropout masks per step: both come back after a kill, from the epoch's seed."""
    args = lambda name: ["--data-dir", tiny_data, "--name", name, *RUN, "--rdrop", 5, "--dropout", 0.3]
    times = run_timed(fw, "train_teacher", *args("r/rdrop_ref"))
    kill_and_resume(fw, "train_teacher", "r/rdrop_cut", times, args("r/rdrop_cut"))
    assert_same_run("r/rdrop_ref", "r/rdrop_cut", fw)
    history = load_checkpoint(ckpt_path("r/rdrop_ref", fw))["history"]
    assert all(h["train/loss_rdrop"] > 0 for h in history)  # the two passes did differ
    # resuming with another R-Drop setting is refused
    line = error_line(run_script(fw, "train_teacher", *args("r/rdrop_cut")[:-4], "--rdrop", 1, "--dropout", 0.3,
                                 "--resume", check=False))
    assert "--rdrop 5.0" in line


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["kd", "dkd", "fitnet"])
def test_student_killed_mid_epoch_resumes_exactly(fw, method, reference_teachers, tiny_data):
    teacher = ckpt_path("r/teacher_ref", fw)
    args = lambda name: ["--method", method, "--teacher", teacher, "--data-dir", tiny_data, "--name", name,
                         *RUN, *STUDENT]
    times = run_timed(fw, "train_student", *args(f"r/{method}_ref"))
    kill_and_resume(fw, "train_student", f"r/{method}_cut", times, args(f"r/{method}_cut"))
    assert_same_run(f"r/{method}_ref", f"r/{method}_cut", fw)
    if method == "fitnet":  # the regressor trained: saved, with its momentum, and not what it started from
        ckpt = load_checkpoint(ckpt_path(f"r/{method}_cut", fw))
        assert set(ckpt["regressor"]) >= {"conv.weight", "bn.weight", "bn.running_mean"}
        assert "regressor.conv.weight" in ckpt["optimizer"] and np.abs(ckpt["optimizer"]["regressor.conv.weight"]).sum() > 0
    # another teacher (the other framework's: close, but not the same weights) is refused
    other = ckpt_path("r/teacher_ref", FRAMEWORKS[1 - FRAMEWORKS.index(fw)])
    wrong = args(f"r/{method}_cut")
    wrong[wrong.index(teacher)] = other
    line = error_line(run_script(fw, "train_student", *wrong, "--resume", check=False))
    assert "other weights than the teacher" in line


def test_epoch_seed_depends_on_seed_and_epoch_only():
    seeds = {epoch_seed(s, e) for s in range(3) for e in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2 ** 32 for s in seeds)
    assert epoch_seed(4, 7) == epoch_seed(4, 7)
