"""Exact resume: a stage killed with SIGKILL in the middle of an epoch and continued with --resume
ends bit-identical to the uninterrupted run: weights, momentum, metrics, event-file curves and
test result, in both frameworks, for the teacher with R-Drop, the KD student and every method whose setup
trains modules with the student (FitNet's regressor, VID's regressors and variances, with their momentum).

The kill is real (a subprocess, SIGKILL, no chance to clean up), and triggered by what the run does,
not by a clock: it lands as soon as the run has printed the end of epoch 1, a line it prints after
epoch 1's checkpoint and events are on disk. The process is then in epoch 2, which it never finishes
(an epoch takes far longer than the kill); until epoch 2's checkpoint nothing more reaches the disk,
so this is the state of any kill inside epoch 2.
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from common.config import FRAMEWORKS
from common.batches import epoch_seed
from common.checkpoint import ckpt_path, load_checkpoint, ran_on_here
from common.files import temp_prefix
from common.logs import read_scalars
from common.results import read_result, result_path, run_dir
from conftest import error_line, ROOT, run_script
from stage_runner import stage_process
from test_distillers import methods_with_modules

pytestmark = pytest.mark.slow  # every test here launches stages (make test-fast leaves them out)

EPOCHS = 3
# 8 steps of 25 images per epoch (an epoch still takes far longer than the kill: ~0.1 s against ~1 ms), lr x0.1
# after epoch 1; teacher dropout 0.5 draws new masks every step
RUN = ["--train-size", 200, "--val-size", 50, "--batch-size", 25, "--epochs", EPOCHS, "--milestones", 1]
STUDENT = ["--warmup", 2, "--lr", 0.002]  # the BN-free student diverges at 0.01 with small batches


def stage_cmd(fw, stage, *args):
    return [sys.executable, os.path.join(ROOT, f"{fw}_", f"{stage}.py"), *map(str, args)]


def run_and_kill(fw, stage, *args):
    """Start a run and SIGKILL it the moment it has printed the end of epoch 1."""
    proc = subprocess.Popen(stage_cmd(fw, stage, *args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if f"] epoch 1/{EPOCHS}" in line:
            proc.send_signal(signal.SIGKILL)
            break
    out.append(proc.stdout.read())
    assert proc.wait(timeout=600) == -signal.SIGKILL, "".join(out)[-4000:]
    return "".join(out)


def plant_stale_temps(name, fw):
    """What a kill inside atomic_write leaves: a temp file beside the checkpoint (and beside a JSON file)."""
    ckpt = ckpt_path(name, fw)
    stale = [os.path.join(os.path.dirname(ckpt), temp_prefix(ckpt) + "killed.tmp"),
             os.path.join(run_dir(name, fw), temp_prefix(result_path(name, fw)) + "killed.tmp")]
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
    assert [k for k in a if isinstance(a[k], dict) and k != "config"] == [k for k in b if isinstance(b[k], dict) and k != "config"]
    for group in [k for k in a if isinstance(a[k], dict) and k != "config"]:  # model, optimizer, the method's modules
        assert list(a[group]) == list(b[group]) and a[group], group
        for key in a[group]:
            assert a[group][key].tobytes() == b[group][key].tobytes(), f"{group} {key} differs"
    assert [without_times(h) for h in a["history"]] == [without_times(h) for h in b["history"]]
    assert a["best_top1"] == b["best_top1"]
    assert len(a["ran_on"]) == 1 and a["ran_on"] == b["ran_on"], "resumed on the same machine: one entry"
    records = [read_result(n, fw) for n in (reference, resumed)]
    assert all(r["finished"] and r["epochs"] == EPOCHS for r in records)
    assert records[0]["final"] == records[1]["final"] and records[0]["best_val_top1"] == records[1]["best_val_top1"]
    curves = [read_scalars(run_dir(n, fw)) for n in (reference, resumed)]
    assert set(curves[0]) == set(curves[1])
    for tag in curves[0]:
        assert [s for s, _ in curves[1][tag]] == list(range(1, EPOCHS + 1)), f"{tag}: every epoch exactly once"
        if not tag.startswith("time/"):
            assert curves[0][tag] == curves[1][tag], tag


def kill_and_resume(fw, stage, name, args):
    """Kill a run of `args` in epoch 2, check that it was cut there, plant stale temps, resume it."""
    run_and_kill(fw, stage, *args)
    cut = load_checkpoint(ckpt_path(name, fw))
    assert cut["epoch"] == 0, "the checkpoint on disk at the kill is not epoch 1's"
    stale = plant_stale_temps(name, fw)
    proc = run_script(fw, stage, *args, "--resume")
    assert f"resuming {ckpt_path(name, fw)} after epoch 1" in proc.stdout
    assert "note:" not in proc.stdout, "the same machine: nothing to say"
    assert not [p for p in stale if os.path.exists(p)], "stale temp files were left"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_killed_mid_epoch_resumes_exactly(fw, tiny_data, tmp_path):
    """The teacher with R-Drop: its dropout draws two masks per step, and both come back after a kill, from
    the epoch's seed (without R-Drop the step is the same one, with one mask)."""
    args = lambda name: ["--data-dir", tiny_data, "--name", name, *RUN, "--rdrop", 5, "--dropout", 0.3]
    assert stage_process(fw, "train_teacher", *args("r/teacher_ref")).returncode == 0  # uninterrupted
    kill_and_resume(fw, "train_teacher", "r/teacher_cut", args("r/teacher_cut"))
    assert_same_run("r/teacher_ref", "r/teacher_cut", fw)
    history = load_checkpoint(ckpt_path("r/teacher_ref", fw))["history"]
    assert all(h["train/loss_rdrop"] > 0 for h in history)  # the two passes did differ
    results = []
    for name in ("r/teacher_ref", "r/teacher_cut"):
        out = tmp_path / f"{name.replace('/', '_')}.json"
        assert stage_process(fw, "test", "--ckpt", ckpt_path(name, fw), "--data-dir", tiny_data, "--json", out).returncode == 0
        results.append(json.loads(out.read_text()))
    for key in ("top1", "top5", "loss", "per_class", "n"):
        assert results[0][key] == results[1][key], key
    # a resume that contradicts the checkpoint is one clear line, not a silent mix
    cut = args("r/teacher_cut")
    line = error_line(stage_process(fw, "train_teacher", *cut, "--resume", "--seed", 1))
    assert "--seed 0" in line and "this run has --seed 1" in line
    line = error_line(stage_process(fw, "train_teacher", *cut[:-4], "--rdrop", 1, "--dropout", 0.3, "--resume"))
    assert "--rdrop 5.0" in line
    milestones = cut.index("--milestones") + 1
    line = error_line(stage_process(fw, "train_teacher", *cut[:milestones], 2, *cut[milestones + 1:], "--resume"))
    assert "--milestones [1]" in line
    # every setting is compared, also those an allow-list of "settings that matter" had missed
    line = error_line(stage_process(fw, "train_teacher", *cut, "--no-sync-bn", "--resume"))
    assert "trained with --sync-bn, this run has --no-sync-bn" in line
    # a refused resume changed nothing: same checkpoint, still the finished run
    assert_same_run("r/teacher_ref", "r/teacher_cut", fw)
    # resumed with other CPU threads (here: one epoch more), the run goes on and says that it is no longer
    # bit-for-bit the uninterrupted one; the checkpoint and the record keep where each epoch ran
    first = read_result("r/teacher_cut", fw)["ran_on"][0]
    assert first["from_epoch"] == 1 and first["processes"] == 1 and first["threads"] >= 1
    more = cut[:cut.index("--epochs") + 1] + [EPOCHS + 1] + cut[cut.index("--epochs") + 2:]
    proc = run_script(fw, "train_teacher", *more, "--resume", env=dict(os.environ, KD_THREADS=str(first["threads"] + 1)))
    assert (f"note: epochs 1-{EPOCHS} ran with {first['device']}, {first['threads']} thread(s) x 1 process(es), "
            f"this run has {first['device']}, {first['threads'] + 1} thread(s)") in proc.stdout
    ran_on = [first, {**first, "from_epoch": EPOCHS + 1, "threads": first["threads"] + 1}]
    assert load_checkpoint(ckpt_path("r/teacher_cut", fw))["ran_on"] == ran_on
    assert read_result("r/teacher_cut", fw)["ran_on"] == ran_on and read_result("r/teacher_cut", fw)["epochs"] == EPOCHS + 1


def test_ran_on_keeps_each_change_of_machine_and_notes_it():
    here = {"device": "cpu", "threads": 1, "processes": 1}
    fresh, note = ran_on_here([], here, 0)
    assert fresh == [{"from_epoch": 1, **here}] and note is None
    assert ran_on_here(fresh, dict(here), 5) == (fresh, None)  # resumed on the same machine
    gpu = {"device": "cuda", "threads": 1, "processes": 2}
    ran_on, note = ran_on_here(fresh, gpu, 5)
    assert ran_on == [*fresh, {"from_epoch": 6, **gpu}]
    assert note.startswith("note: epochs 1-5 ran with cpu, 1 thread(s) x 1 process(es), this run has cuda, 1 thread(s) "
                           "x 2 process(es)") and "KD_THREADS=1" in note
    # a checkpoint written before the machine was kept: this run's is recorded, and there is nothing to compare
    assert ran_on_here([], here, 7) == ([{"from_epoch": 8, **here}], None)


# The threads each framework computes with, read from its own runtime (torch's pool; the OpenMP that Jittor's
# oneDNN and jittor_/kernels.py run on), and the threads its checkpoint would record
THREADS_SEEN = {
    "torch": "import torch; select_device('cpu'); print(torch.get_num_threads(), machine('cpu', 1)['threads'])",
    "jittor": "import jittor as jt; select_device('cpu'); print(jt.code((1,), 'int32', [], cpu_header='#include <omp.h>', "
              "cpu_src='out0_p[0] = omp_get_max_threads();').numpy()[0], machine('cpu', 1)['threads'])",
}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_threads_recorded_are_the_threads_used_whatever_omp_num_threads_says(fw):
    """KD_THREADS sets both frameworks' threads, and ran_on records them: an OMP_NUM_THREADS left in the shell
    changes neither (before, Jittor ran on it while the checkpoint recorded KD_THREADS), and Jittor says so."""
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from common.checkpoint import machine; "
            f"from {fw}_.device import select_device; {THREADS_SEEN[fw]}")
    for omp, note in (("3", fw == "jittor"), ("1", False), (None, False)):
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env.update({"KD_THREADS": "1", **({"OMP_NUM_THREADS": omp} if omp else {})})
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["1", "1"], (omp, proc.stdout)
        said = "note: OMP_NUM_THREADS=3 is replaced by 1 for Jittor, the threads torch uses" in proc.stderr
        assert said == note, (omp, proc.stderr)


# kd, and every own-pair method with modules trained beside the student (FitNet's regressor, VID's, CRD's memory banks
# and sampling stream) but OFD's and ReviewKD's: convolutions and BatchNorms like FitNet's regressor, which
# test_distillers saves and restores through the engine's checkpoint (and test_data_parallel trains on 2 processes)
KILLED = ["kd", *(m for m in methods_with_modules(own_pair=True) if m not in ("ofd", "reviewkd"))]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", KILLED)
def test_student_killed_mid_epoch_resumes_exactly(fw, method, teachers, tiny_data):
    teacher = teachers[fw]  # conftest's shared tiny teacher
    args = lambda name: ["--method", method, "--teacher", teacher, "--data-dir", tiny_data, "--name", name,
                         *RUN, *STUDENT]
    assert stage_process(fw, "train_student", *args(f"r/{method}_ref")).returncode == 0  # uninterrupted
    kill_and_resume(fw, "train_student", f"r/{method}_cut", args(f"r/{method}_cut"))
    assert_same_run(f"r/{method}_ref", f"r/{method}_cut", fw)
    if method != "kd":  # the modules trained: saved, with their momentum (FitNet's regressor, VID's, OFD's, ReviewKD's)
        ckpt = load_checkpoint(ckpt_path(f"r/{method}_cut", fw))
        key = {"fitnet": "regressor"}.get(method, method)  # VID's, OFD's, ReviewKD's: under the method's name
        assert ckpt[key] and not any(k.startswith(key) for k in ckpt["model"])
        assert any(k.startswith(f"{key}.") and np.abs(v).sum() > 0 for k, v in ckpt["optimizer"].items())
        if method == "fitnet":
            assert set(ckpt["regressor"]) >= {"conv.weight", "bn.weight", "bn.running_mean"}
    # another teacher (the other framework's: close, but not the same weights) is refused
    other = teachers[FRAMEWORKS[1 - FRAMEWORKS.index(fw)]]
    wrong = args(f"r/{method}_cut")
    wrong[wrong.index(teacher)] = other
    line = error_line(stage_process(fw, "train_student", *wrong, "--resume"))
    assert "other weights than the teacher" in line
    if method == "kd":  # every setting is compared, the one CE weight too (config.check_resume is one loop for all)
        line = error_line(stage_process(fw, "train_student", *args(f"r/{method}_cut"), "--ce-weight", 0.5, "--resume"))
        assert "--ce-weight 0.1" in line and "this run has --ce-weight 0.5" in line


def test_epoch_seed_depends_on_seed_and_epoch_only():
    seeds = {epoch_seed(s, e) for s in range(3) for e in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2 ** 32 for s in seeds)
    # a resumed run is another process: the seed must come from (seed, epoch) alone, not from process state
    # (hash randomisation, an RNG touched before): a fresh interpreter with another PYTHONHASHSEED agrees
    code = "import sys; sys.path.insert(0, sys.argv[1]); from common.batches import epoch_seed; print(epoch_seed(4, 7))"
    other = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED="123"))
    assert int(other.stdout) == epoch_seed(4, 7) != epoch_seed(4, 8)
