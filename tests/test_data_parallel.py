"""Data-parallel training on the engines' own launchers changes nothing but the speed.

torch_/ runs under torchrun (DDP, gloo on CPU), jittor_/ under mpirun (Jittor's MPI mode), the
same stage files as one process. Everything here runs on CPU with 2 processes:
- pure numpy: the shards cover every sample once (unlike a DistributedSampler); 2 ranks' training
  batches are the one-process batches cut in rows; models.Dropout is the framework's own dropout in
  one process, and its 2-rank masks are rows of the one-process mask (dropout stays ON in the
  equivalence runs below: masks are drawn per global sample);
- the BN-free student (CIFAR10Simple, DKD), 2 processes against 1: loss and parameters within
  1e-5 relative, also when a run is resumed on another number of processes;
- the BN teacher (CIFAR10Quick): with --sync-bn as close to 1 process as 1 process is to itself on
  another thread count; with --no-sync-bn clearly apart;
- evaluation on 999 and on 1 test image: the same counts exactly, the same loss to 1e-6;
- rank 0 alone prints and writes; a rank that raises ends the job with its error.
"""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from common.batches import iterate_batches
from common.checkpoint import ckpt_path, load_checkpoint
from common.config import FRAMEWORKS
from common.distributed import batch_rows, eval_range, launcher_command
from common.results import read_result, run_dir
from conftest import ROOT, write_tiny_cifar
from stage_runner import stage_process

pytestmark = pytest.mark.slow  # every test here launches stages (make test-fast leaves them out)

SMALL = ["--train-size", 256, "--val-size", 44, "--batch-size", 64]  # 4 steps per epoch, 32 images per rank


def launched(fw, nproc, script, *args, timeout=600):
    """Run a script under the framework's launcher (python for nproc=1); the whole process group is
    killed if it outlives the timeout, which is then a test failure (a hang), not a stuck suite."""
    cmd = launcher_command(fw, nproc) + [script, *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} still running after {timeout} s (a hang):\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def stage(fw, nproc, name, *args, check=True):
    """A stage on `nproc` processes under the launcher; on one process, in this process (no launcher, and no
    interpreter to start)."""
    if nproc == 1:
        proc = stage_process(fw, name, *args)
    else:
        proc = launched(fw, nproc, os.path.join(ROOT, f"{fw}_", f"{name}.py"), *args)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def rel_diff(a, b):
    """max |a - b| / max |a| over one tensor."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def state_diff(one, other):
    """||other - one|| / ||one|| over all parameters (float32 sums in another order: ~1e-7 per step, and
    DKD's epoch 2 in Jittor amplifies it to ~5e-6 even between 1 and 2 threads of one process)."""
    keys = [k for k in one if "running" not in k]
    return float(np.sqrt(sum(((one[k] - other[k]).astype(np.float64) ** 2).sum() for k in keys)
                         / sum((one[k].astype(np.float64) ** 2).sum() for k in keys)))


def weights(name, fw):
    return load_checkpoint(ckpt_path(name, fw))["model"]


def final(name, fw):
    """The last epoch's metrics in the run's record (which must have finished)."""
    record = read_result(name, fw)
    assert record["finished"], record
    return record["final"]


# ---------------------------------------------------------------- the shards (numpy, no launcher)
def test_evaluation_shards_cover_each_sample_once_unlike_a_distributed_sampler():
    from torch.utils.data import DistributedSampler
    for n in (0, 1, 2, 999, 1000, 10000):
        for world in (1, 2, 3, 8):
            ranges = [eval_range(n, r, world) for r in range(world)]
            covered = np.concatenate([np.arange(a, b) for a, b in ranges])
            assert covered.tolist() == list(range(n)), (n, world)
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1
    # torch's DistributedSampler pads 999 to 1000: one test image would be counted twice
    padded = [i for r in range(2) for i in DistributedSampler(range(999), num_replicas=2, rank=r, shuffle=False)]
    assert len(padded) == 1000 and len(set(padded)) == 999


def test_two_ranks_see_the_one_process_batches_cut_in_rows():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(150, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=150)
    for epoch in (0, 1):
        one = list(iterate_batches(images, labels, 32, True, seed=5, epoch=epoch))
        ranks = [list(iterate_batches(images, labels, 32, True, seed=5, epoch=epoch, rank=r, world_size=2))
                 for r in range(2)]
        assert len(one) == len(ranks[0]) == len(ranks[1]) == 4  # 150 // 32, the last partial batch dropped
        for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks):
            assert len(y0) == len(y1) == 16
            assert np.array_equal(np.concatenate([x0, x1]), x) and np.array_equal(np.concatenate([y0, y1]), y)
    # evaluation: each rank its contiguous share, in batches of its own; together every image once
    one = np.concatenate([x for x, _ in iterate_batches(images, labels, 64, False)])
    shares = [np.concatenate([x for x, _ in iterate_batches(images, labels, 64, False, rank=r, world_size=2)])
              for r in range(2)]
    assert np.array_equal(np.concatenate(shares), one)
    assert [batch_rows(64, r, 2) for r in range(2)] == [slice(0, 32), slice(32, 64)]


def as_rank(monkeypatch, launcher, rank, world):
    """The environment a launcher gives rank `rank` of `world` (common.distributed reads it at each call)."""
    for key in ("OMPI_COMM_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    if launcher == "mpirun":
        monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", str(world))
        monkeypatch.setenv("OMPI_COMM_WORLD_RANK", str(rank))
    elif launcher == "torchrun":
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))


def test_torch_dropout_is_nn_dropout_in_one_process_and_its_rows_on_two(monkeypatch):
    import torch
    from torch_ import parallel
    x = torch.randn(8, 100)
    drop = parallel.Dropout(0.5).train()
    torch.manual_seed(4)
    ours = drop(x)
    torch.manual_seed(4)
    assert torch.equal(ours, torch.nn.functional.dropout(x, 0.5, training=True))  # bit for bit
    for rank in range(2):
        as_rank(monkeypatch, "torchrun", rank, 2)
        torch.manual_seed(4)
        assert torch.equal(drop(x[rank * 4:(rank + 1) * 4]), ours[rank * 4:(rank + 1) * 4])
    assert 0.3 < (ours == 0).float().mean().item() < 0.7


def test_jittor_dropout_is_nn_dropout_in_one_process_and_its_rows_on_two(monkeypatch):
    import jittor as jt
    from jittor_ import parallel
    x = jt.array(np.random.default_rng(0).normal(size=(8, 100)).astype(np.float32))
    drop = parallel.Dropout(0.5)
    drop.train()
    jt.set_global_seed(4, different_seed_for_mpi=False)
    ours = drop(x).numpy()
    jt.set_global_seed(4, different_seed_for_mpi=False)
    reference = jt.nn.Dropout(0.5)
    reference.train()
    assert np.array_equal(ours, reference(x).numpy())  # bit for bit
    for rank in range(2):
        as_rank(monkeypatch, "mpirun", rank, 2)
        jt.set_global_seed(4, different_seed_for_mpi=False)
        assert np.array_equal(drop(x[rank * 4:(rank + 1) * 4]).numpy(), ours[rank * 4:(rank + 1) * 4])
    assert 0.3 < (ours == 0).mean() < 0.7


# ---------------------------------------------------------------- the launched runs
@pytest.fixture(scope="module")
def dp_runs(tiny_data, teachers):
    """Per framework: the DKD student of conftest's shared one-process teacher on 1 and 2 processes,
    and two runs that change the number of processes at --resume (2 -> 1 and 1 -> 2)."""
    runs = {}
    for fw in FRAMEWORKS:
        teacher = teachers[fw]
        student = ["--method", "dkd", "--teacher", teacher, "--data-dir", tiny_data, *SMALL, "--warmup", 1]
        out = {n: stage(fw, n, "train_student", *student, "--name", f"dp/student{n}_{fw}", "--epochs", 2).stdout
               for n in (1, 2)}
        for first, second in ((2, 1), (1, 2)):
            name = f"dp/student{first}to{second}_{fw}"
            stage(fw, first, "train_student", *student, "--name", name, "--epochs", 1)
            stage(fw, second, "train_student", *student, "--name", name, "--epochs", 2, "--resume")
        runs[fw] = dict(teacher=teacher, stdout=out)
    return runs


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bn_free_student_on_two_processes_is_the_one_process_run(dp_runs, fw):
    one, two = weights(f"dp/student1_{fw}", fw), weights(f"dp/student2_{fw}", fw)
    assert state_diff(one, two) < 1e-5, f"parameters differ by {state_diff(one, two):.2e} (relative)"
    a, b = final(f"dp/student1_{fw}", fw), final(f"dp/student2_{fw}", fw)
    for key in ("train/loss", "val/loss"):
        assert abs(a[key] - b[key]) <= 1e-5 * abs(a[key]), key
    for key in ("train/loss_ce", "train/loss_tckd", "train/loss_nckd"):  # Jittor's NCKD: 1.2e-5, as on 1 thread
        assert abs(a[key] - b[key]) <= 1e-4 * abs(a[key]), key
    assert a["val/top1"] == b["val/top1"] and a["train/top1"] == b["train/top1"]
    assert one["fc2.weight"].shape == (10, 64)  # the student, not the teacher


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method, key", [("fitnet", "regressor"), ("ofd", "ofd"), ("reviewkd", "reviewkd")])
def test_modules_with_batchnorm_on_two_processes_are_the_one_process_run(dp_runs, fw, tiny_data, method, key):
    """The modules a method trains beside the student, each with BatchNorm (FitNet's regressor, OFD's connectors,
    ReviewKD's fusion modules), train on 2 processes as on one: their gradients are all-reduced (torch: their own DDP
    wrapper; Jittor: the optimizer) and their BatchNorms normalise with the global batch (--sync-bn)."""
    args = ["--method", method, "--teacher", dp_runs[fw]["teacher"], "--data-dir", tiny_data,
            *SMALL, "--epochs", 1, "--lr", 0.002]
    for n in (1, 2):
        stage(fw, n, "train_student", *args, "--name", f"dp/{method}{n}_{fw}")
    one, two = (load_checkpoint(ckpt_path(f"dp/{method}{n}_{fw}", fw)) for n in (1, 2))
    # the student's gradient now passes through the module's BatchNorm: float32 noise as in the BN teacher
    # (FitNet: measured 1.7e-5 on torch); with the regressor left out of DDP (its gradient not averaged): 4e-4 and 4e-3
    assert state_diff(one["model"], two["model"]) < 1e-4, state_diff(one["model"], two["model"])
    assert state_diff(one[key], two[key]) < 1e-4, state_diff(one[key], two[key])
    stats = [k for k in one[key] if "running" in k]
    # relative to the statistic's size, floored at 1e-3: a BN after a bias-free conv of BN-normalised features
    # (ReviewKD's conv2 on the pooled 1 x 1 feature) has batch means of 0 up to rounding (~1e-6 on both counts)
    scaled = lambda a, b: float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-3))
    assert stats and max(scaled(one[key][k], two[key][k]) for k in stats) < 2e-3
    a, b = final(f"dp/{method}1_{fw}", fw), final(f"dp/{method}2_{fw}", fw)
    assert abs(a[f"train/loss_{method}"] - b[f"train/loss_{method}"]) <= 1e-4 * a[f"train/loss_{method}"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_vit_tinybert_student_on_two_processes_is_the_one_process_run(tiny_data, fw):
    """The transformer track under the launchers: a TinyBERT student (a ViT with AdamW and dropout in attention and
    MLP, whose masks are drawn for the global batch; its linear map trained beside it: DDP-wrapped in torch,
    all-reduced by Jittor's optimizer), stage 1 then stage 2, on 2 processes as on one."""
    args = ["--data-dir", tiny_data, *SMALL, "--train-size", 128]  # 2 steps of 64 an epoch, 32 images per rank
    teacher = f"dp/vit_teacher_{fw}"
    stage(fw, 1, "train_teacher", *args, "--model", "vit6x192", "--epochs", 1, "--name", teacher)
    for n in (1, 2):
        stage(fw, n, "train_student", "--method", "tinybert", "--teacher", ckpt_path(teacher, fw), *args,
              "--epochs", 2, "--tinybert-layer-epochs", 1, "--name", f"dp/tinybert{n}_{fw}")
    one, two = (load_checkpoint(ckpt_path(f"dp/tinybert{n}_{fw}", fw)) for n in (1, 2))
    for group in ("model", "fit_dense"):
        assert state_diff(one[group], two[group]) < 1e-4, (group, state_diff(one[group], two[group]))
    assert int(one["optimizer"]["step"][0]) == int(two["optimizer"]["step"][0]) == 4  # 2 epochs of 2 global steps
    a, b = final(f"dp/tinybert1_{fw}", fw), final(f"dp/tinybert2_{fw}", fw)
    for key in ("train/loss", "val/loss"):
        assert abs(a[key] - b[key]) <= 1e-4 * abs(a[key]), (key, a[key], b[key])
    first = [load_checkpoint(ckpt_path(f"dp/tinybert{n}_{fw}", fw))["history"][0] for n in (1, 2)]
    assert abs(first[0]["train/loss_att"] - first[1]["train/loss_att"]) <= 1e-4 * first[0]["train/loss_att"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resume_on_another_number_of_processes(dp_runs, fw):
    one = weights(f"dp/student1_{fw}", fw)
    for first, second in ((2, 1), (1, 2)):
        name = f"dp/student{first}to{second}_{fw}"
        resumed = weights(name, fw)
        assert state_diff(one, resumed) < 1e-5, f"{first} -> {second} processes: {state_diff(one, resumed):.2e}"
        assert load_checkpoint(ckpt_path(name, fw))["epoch"] == 1


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_rank_zero_alone_prints_and_writes(dp_runs, fw):
    out = dp_runs[fw]["stdout"][2]
    assert out.count("epoch 1/2") == 1 and out.count("epoch 2/2") == 1, out
    assert "data-parallel on 2 processes (32 images of each batch per process" in out
    logdir = run_dir(f"dp/student2_{fw}", fw)
    assert len([f for f in os.listdir(logdir) if f.startswith("events.out.tfevents")]) == 1
    ckpt_dir = os.path.dirname(ckpt_path(f"dp/student2_{fw}", fw))
    assert not [f for f in os.listdir(ckpt_dir) if f.startswith(".")]  # no temp file of a second writer


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_sync_bn_teacher_on_two_processes_is_the_one_process_run(tiny_data, fw):
    """CIFAR10Quick (BatchNorm, dropout 0.5 on), 4 steps. The yardstick for "equal" is the one-process
    run against itself on 1 thread instead of 2: float32 sums in another order (measured on torch:
    parameters 1.4e-4 apart globally, BN statistics up to 5e-4)."""
    args = ["--data-dir", tiny_data, *SMALL, "--epochs", 1]
    names = {"one": f"dp/bn1_{fw}", "sync": f"dp/bn2sync_{fw}", "nosync": f"dp/bn2nosync_{fw}"}
    stage(fw, 1, "train_teacher", *args, "--name", names["one"])
    stage(fw, 2, "train_teacher", *args, "--name", names["sync"])
    stage(fw, 2, "train_teacher", *args, "--name", names["nosync"], "--no-sync-bn")
    one = weights(names["one"], fw)
    stats = [k for k in one if "running" in k]
    loss = final(names["one"], fw)["train/loss"]
    sync, nosync = weights(names["sync"], fw), weights(names["nosync"], fw)
    assert max(rel_diff(one[k], sync[k]) for k in stats) < 2e-3
    assert abs(final(names["sync"], fw)["train/loss"] - loss) < 1e-4 * loss
    # per-process statistics: each rank normalises with its own 32 images, and rank 0's are saved
    assert max(rel_diff(one[k], nosync[k]) for k in stats) > 1e-2
    assert abs(final(names["nosync"], fw)["train/loss"] - loss) > 1e-3 * loss


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_evaluation_on_two_processes_counts_every_image_once(dp_runs, fw, tmp_path):
    ckpt = dp_runs[fw]["teacher"]
    for n_test in (999, 1):
        data = write_tiny_cifar(str(tmp_path / f"data{n_test}"), seed=1, test_size=n_test)
        results = []
        for nproc in (1, 2):
            out = tmp_path / f"test{n_test}_{nproc}.json"
            stage(fw, nproc, "test", "--ckpt", ckpt, "--data-dir", data, "--batch-size", 128, "--json", out)
            with open(out) as f:
                results.append(json.load(f))
        one, two = results
        assert one["n"] == two["n"] == n_test
        for key in ("top1", "top5", "per_class"):
            assert one[key] == two[key], (n_test, key)
        assert abs(one["loss"] - two["loss"]) <= 1e-6 * abs(one["loss"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_failing_rank_ends_the_job_with_its_error(tiny_data, fw):
    """Rank 1 raises at its second step while rank 0 waits in the gradient all-reduce. Without
    common.distributed.run_rank, Jittor's rank 1 never exits (MPI_Finalize waits for rank 0)
    and mpirun waits for ever; with it, the launcher sees the failure and stops the job."""
    start = time.perf_counter()
    proc = launched(fw, 2, os.path.join(ROOT, "tests", "dp_failing_stage.py"), fw, "--data-dir", tiny_data,
                    *SMALL, "--epochs", 1, "--name", f"dp/failing_{fw}", timeout=240)
    assert proc.returncode != 0
    assert "planted failure on rank 1" in proc.stderr + proc.stdout
    assert time.perf_counter() - start < 240


def test_wrong_launcher_or_batch_is_a_one_line_error(tiny_data):
    args = ["--data-dir", tiny_data, *SMALL, "--epochs", 1, "--name", "dp/refused"]
    proc = launched("jittor", 2, os.path.join(ROOT, "torch_", "train_teacher.py"), *args)  # torch under mpirun
    assert proc.returncode != 0 and "torch_/ stages run data-parallel under torchrun" in proc.stderr
    proc = launched("torch", 2, os.path.join(ROOT, "jittor_", "train_teacher.py"), *args)  # Jittor under torchrun
    assert proc.returncode != 0 and "jittor_/ stages run data-parallel under mpirun" in proc.stderr
    proc = launched("torch", 2, os.path.join(ROOT, "torch_", "train_teacher.py"), *args[:-4], "--batch-size", 63,
                    "--epochs", 1, "--name", "dp/refused")
    assert proc.returncode != 0 and "--batch-size 63 is the global batch: it must be a multiple of the 2" in proc.stderr
    assert not os.path.exists(ckpt_path("dp/refused", "torch"))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_launcher_killed_takes_its_ranks_down_and_resume_continues_exactly(tiny_data, fw):
    """kill -9 of torchrun / mpirun during epoch 2: no rank trains on (torchrun starts its workers in
    sessions of their own: before die_with_launcher they kept training and writing the checkpoint),
    and --resume on the launcher ends bit-identical to the uninterrupted run."""
    args = ["--data-dir", tiny_data, "--train-size", 256, "--val-size", 44, "--batch-size", 32, "--epochs", 4]
    script = os.path.join(ROOT, f"{fw}_", "train_teacher.py")
    stage(fw, 2, "train_teacher", *args, "--name", f"dp/whole_{fw}")
    name = f"dp/killed_{fw}"
    proc = subprocess.Popen(launcher_command(fw, 2) + [script, *map(str, args), "--name", name], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    for line in proc.stdout:
        if "epoch 1/4" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group: torchrun's workers are not in it
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and subprocess.run(["pgrep", "-f", f"name {name}"], capture_output=True).stdout:
        time.sleep(0.2)
    assert not subprocess.run(["pgrep", "-f", f"name {name}"], capture_output=True).stdout, "ranks outlived the launcher"
    assert load_checkpoint(ckpt_path(name, fw))["epoch"] < 3  # stopped before the end
    stage(fw, 2, "train_teacher", *args, "--name", name, "--resume")
    whole, resumed = weights(f"dp/whole_{fw}", fw), weights(name, fw)
    assert all(np.array_equal(whole[k], resumed[k]) for k in whole)
    assert final(name, fw) == final(f"dp/whole_{fw}", fw)
