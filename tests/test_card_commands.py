"""The commands the repo is known by, run as the README types them, in its order, on a tiny dataset.

    source .venv/bin/activate
    python jittor_/train_teacher.py
    python jittor_/train_student.py --method dkd     (the teacher: this framework's default teacher run)
    python torch_/test.py                           (no --ckpt: the default runs' checkpoints, one table)
    tensorboard --logdir log

Only what a tiny dataset needs is added: sizes and one epoch (SIZES), and the data, checkpoint and
log folders in temp folders (KD_DATA_DIR, KD_CKPT_DIR, KD_LOG_DIR: the same code paths as data/,
ckpt/, log/). Everything else (run names, the default teacher, test.py's default) is the default.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, write_tiny_cifar

pytestmark = pytest.mark.slow  # every test here launches stages (make test-fast leaves them out)

SIZES = "--epochs 1 --train-size 200 --val-size 50 --batch-size 32"
ACTIVATE = os.path.join(ROOT, ".venv", "bin", "activate")


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """A shell runner with the README's environment: the venv activated (or, when the suite runs
    outside the venv, this interpreter's folder first on PATH), empty data/ckpt/log folders."""
    tmp = tmp_path_factory.mktemp("card")
    env = dict(os.environ, KD_DATA_DIR=write_tiny_cifar(str(tmp / "data")), KD_CKPT_DIR=str(tmp / "ckpt"),
               KD_LOG_DIR=str(tmp / "log"))
    activate = f"source {ACTIVATE}" if os.path.isfile(ACTIVATE) else f"export PATH={os.path.dirname(sys.executable)}:$PATH"

    def sh(command, check=True):
        proc = subprocess.run(["bash", "-c", f"{activate} && {command}"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        if check and proc.returncode != 0:
            raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc
    sh.env, sh.activate = env, activate
    return sh


def test_before_any_run_the_defaults_say_what_to_run(card):
    proc = card("python torch_/test.py", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no default run has a checkpoint yet" in proc.stderr and "`python torch_/train_teacher.py`" in proc.stderr
    proc = card(f"python jittor_/train_student.py --method dkd {SIZES} --warmup 1", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "needs a teacher" in proc.stderr and "`python jittor_/train_teacher.py`" in proc.stderr


def test_the_card_sequence(card):
    assert card("python -c 'import torch, jittor'").returncode == 0  # `python` is the venv's: both frameworks

    card(f"python jittor_/train_teacher.py {SIZES}")
    teacher = os.path.join(card.env["KD_CKPT_DIR"], "teacher_s0_jittor.ckpt")
    assert os.path.isfile(teacher)

    proc = card(f"python jittor_/train_student.py --method dkd {SIZES} --warmup 1")
    assert f"teacher cifar10quick from {teacher}" in proc.stdout  # found without --teacher
    assert os.path.isfile(os.path.join(card.env["KD_CKPT_DIR"], "student_dkd_s0_jittor.ckpt"))

    # torch has no default run of its own here: it tests Jittor's checkpoints (they hold plain arrays)
    proc = card("python torch_/test.py")
    rows = [line.split() for line in proc.stdout.splitlines() if line.endswith(tuple("0123456789"))
            and line.split()[0].endswith(".ckpt")]
    assert [r[0] for r in rows] == ["teacher_s0_jittor.ckpt", "student_dkd_s0_jittor.ckpt"]
    assert [r[1] for r in rows] == ["cifar10quick", "cifar10simple"]
    for r in rows:  # top-1 of the table = what test.py added to that run's record (test_from: Jittor's checkpoint)
        run = r[0].rsplit("_", 1)[0]
        with open(os.path.join(card.env["KD_LOG_DIR"], run, "torch", "result.json")) as f:
            record = json.load(f)
        assert record["test"] is None and f"{record['test_from']['jittor']['top1']:.2f}" == r[3]

    runs = tensorboard_runs(card)
    assert {"teacher_s0/jittor", "student_dkd_s0/jittor"} <= set(runs)


def tensorboard_runs(card):
    """`tensorboard --logdir log` (the test's log folder), asked over HTTP for the runs it found; the
    card's environment (without a .venv, tensorboard is found beside this interpreter, as `python` is)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["bash", "-c", f"{card.activate} && exec tensorboard --logdir \"$KD_LOG_DIR\" --port {port}"],
                              cwd=ROOT, env=card.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=5) as r:
                    runs = json.load(r)
                if len(runs) >= 2:
                    return runs
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError("tensorboard did not list the runs within 120 s")
    finally:
        server.terminate()
        server.wait(timeout=30)
