"""Shared fixtures. Outputs (log/, ckpt/, img/) go to a temp folder; no download is ever tried."""
import inspect
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from filelock import FileLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = tempfile.mkdtemp(prefix="kd-tests-")
os.environ.update(KD_LOG_DIR=os.path.join(OUT, "log"), KD_CKPT_DIR=os.path.join(OUT, "ckpt"),
                  KD_IMG_DIR=os.path.join(OUT, "img"),
                  KD_NO_DOWNLOAD="1", log_silent="1")
sys.path.insert(0, ROOT)

from common.checkpoint import ckpt_path  # noqa: E402
from common.config import FRAMEWORKS  # noqa: E402
from common.datasets import CIFAR10_FOLDER, CIFAR10_TEST_FILES, CIFAR10_TRAIN_FILES, DATASETS  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
import torch  # noqa: E402,F401  (torch before jittor: Jittor's own advice when both share a process)

prepare_jittor()
import jittor  # noqa: E402,F401

# Jittor's import installs a SIGCHLD handler that ends this whole process ("Caught SIGCHLD ... quick
# exit") when any child dies of a signal other than SIGTERM; the resume tests SIGKILL their stages.
signal.signal(signal.SIGCHLD, signal.SIG_DFL)

TINY = dict(train_per_batch=60, test=70)  # 300 training images, 70 test images (not a multiple of any batch)


def write_tiny_cifar(data_dir, seed=0, test_size=TINY["test"]):
    """A small CIFAR-10 in the official python layout, so the real reader is used.

    Images are class-dependent colour blobs + noise, so a few epochs learn something.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(data_dir, CIFAR10_FOLDER)
    os.makedirs(folder, exist_ok=True)
    palette = rng.integers(0, 256, size=(10, 3))

    def make(n):
        labels = rng.integers(0, 10, size=n)
        base = palette[labels][:, :, None, None] * np.ones((1, 1, 32, 32))
        images = np.clip(base + rng.normal(0, 40, size=(n, 3, 32, 32)), 0, 255).astype(np.uint8)
        return images.reshape(n, 3072), labels

    for i, name in enumerate(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES):
        data, labels = make(test_size if name == "test_batch" else TINY["train_per_batch"])
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name,
                         "filenames": [f"{name}_{j}.png" for j in range(len(labels))]}, f)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": 60, "num_vis": 3072}, f)
    return data_dir


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_tiny_cifar(str(tmp_path_factory.mktemp("data")))


TINY100 = dict(train=200, test=50)  # 200 training images over 100 classes, 50 test images


def write_tiny_cifar100(data_dir, seed=0):
    """A small CIFAR-100 in the official python layout: files train, test, meta; fine and coarse labels.

    The coarse labels differ from the fine ones, so a reader that takes the wrong key is caught.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(data_dir, DATASETS["cifar100"]["folder"])
    os.makedirs(folder, exist_ok=True)
    palette = rng.integers(0, 256, size=(100, 3))
    for name in ("train", "test"):
        n = TINY100[name]
        fine = np.arange(n) % 100  # every class in the training file
        rng.shuffle(fine)
        base = palette[fine][:, :, None, None] * np.ones((1, 1, 32, 32))
        images = np.clip(base + rng.normal(0, 40, size=(n, 3, 32, 32)), 0, 255).astype(np.uint8)
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": images.reshape(n, 3072), "fine_labels": fine.tolist(),
                         "coarse_labels": (fine // 5).tolist(), "batch_label": f"tiny {name}",
                         "filenames": [f"{name}_{j}.png" for j in range(n)]}, f)
    with open(os.path.join(folder, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": [f"fine_{c:02d}" for c in range(100)],
                     "coarse_label_names": [f"coarse_{c:02d}" for c in range(20)]}, f)
    return data_dir


@pytest.fixture(scope="session")
def tiny_data100(tmp_path_factory):
    return write_tiny_cifar100(str(tmp_path_factory.mktemp("data100")))


def run_script(framework, stage, *args, check=True, env=None):
    """Run a stage script as a user would; returns the CompletedProcess."""
    cmd = [sys.executable, os.path.join(ROOT, f"{framework}_", f"{stage}.py"), *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def error_line(proc, code=2):
    """The one line a stage prints for a user error (exit 2; a diverged run: 3), no traceback."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# The tiny teacher run that many modules need (a student's teacher, a checkpoint to test or damage):
# trained once per framework for the whole test run, not once per module. test_stages checks the run
# itself (its lines, events, checkpoint and record); other modules only read its checkpoint, so none
# may train or resume under its name.
SHARED_TEACHER_NAME = "shared/teacher_s0"  # the name run_all gives seed 0's teacher: run_all --teacher-from shared
SHARED_TEACHER_ARGS = ["--train-size", 200, "--val-size", 50, "--batch-size", 32, "--epochs", 2, "--milestones", 1]


def shared_folder():
    """Where the shared teacher lives: this process's OUT, or, on pytest-xdist's workers, one folder of this
    test run (PYTEST_XDIST_TESTRUNUID is the same in every worker of a run and new in each run)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return os.path.join(tempfile.gettempdir(), f"kd-tests-shared-{run}") if run else os.path.join(OUT, "shared")


@pytest.fixture(scope="session")
def shared_teacher():
    """{framework: (checkpoint path, the run's stdout)} of the shared tiny teacher.

    Trained once per test run: the first worker to ask trains it under a file lock, in its own folder, on
    its own copy of the tiny data (the same bytes in every worker: write_tiny_cifar is seeded); the others
    wait for the lock and read it. Each worker sees it at its usual place: its log/shared and ckpt/shared
    are links to that folder.
    """
    folder = shared_folder()
    os.makedirs(folder, exist_ok=True)
    with FileLock(os.path.join(folder, ".lock")):
        if not os.path.isfile(os.path.join(folder, "stdout.json")):
            data = write_tiny_cifar(os.path.join(folder, "data"))
            env = dict(os.environ, KD_LOG_DIR=os.path.join(folder, "log"), KD_CKPT_DIR=os.path.join(folder, "ckpt"))
            stdout = {}
            for fw in FRAMEWORKS:
                stdout[fw] = run_script(fw, "train_teacher", "--data-dir", data, "--name", SHARED_TEACHER_NAME,
                                        *SHARED_TEACHER_ARGS, env=env).stdout
            with open(os.path.join(folder, "stdout.json"), "w") as f:
                json.dump(stdout, f)
        with open(os.path.join(folder, "stdout.json")) as f:
            stdout = json.load(f)
    for kind in ("log", "ckpt"):  # this worker's log/shared -> the folder's log/shared
        link = os.path.join(OUT, kind, os.path.dirname(SHARED_TEACHER_NAME))
        if not os.path.islink(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.join(folder, kind, os.path.dirname(SHARED_TEACHER_NAME)), link)
    return {fw: (ckpt_path(SHARED_TEACHER_NAME, fw), stdout[fw]) for fw in FRAMEWORKS}


@pytest.fixture(scope="session")
def teachers(shared_teacher):
    """{framework: checkpoint path} of the shared tiny teacher."""
    return {fw: path for fw, (path, _) in shared_teacher.items()}


SLOW_FIXTURES = {"shared_teacher", "teachers", "teachers100"}  # they train a teacher in a stage process


def pytest_collection_modifyitems(items):
    """Marks. make test-fast (-m "not slow") leaves out what launches a stage process: the modules marked slow, and
    any test that calls run_script or needs a trained teacher (the one-line contract keeps its subprocess
    check there; the edit loop checks the maths, formats and in-process error paths)."""
    for item in items:
        source = inspect.getsource(item.function) if hasattr(item, "function") else ""
        if "run_script(" in source or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # the slow tests first (a stable sort: a module's order stays), so that two workers end together
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# make test runs the suite on two workers (pytest-xdist). Each test is a unit of work of its own, except in the
# modules with a module-scoped fixture (a trained run that its tests share): such a module is one unit, so its
# fixture is made once. (pytest-xdist's own --dist loadgroup marks do not reach its scheduler under pytest 9.)
SHARING_MODULES = {f"tests/{name}" for name in os.listdir(os.path.dirname(__file__)) if name.endswith(".py")
                   and 'fixture(scope="module")' in open(os.path.join(os.path.dirname(__file__), name)).read()}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByTestOrSharingModule(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if module in SHARING_MODULES else nodeid

    return ByTestOrSharingModule(config, log)

