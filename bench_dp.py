"""bench.py's data-parallel line: one process with all the threads against N processes sharing them.

    python bench.py --data-parallel                                   # the table (runs this file, below)
    torchrun --nproc_per_node 2 bench_dp.py torch cifar10quick        # one measurement: rank 0 prints it
    mpirun -np 2 python bench_dp.py jittor cifar10quick

Timed, per framework and model: train_one_epoch of the teacher stage (its own loop: train_step,
the per-step all-reduce of the metrics, the Loader with this rank's rows, --sync-bn) over STEPS
global batches of BATCH_SIZE random images, after one untimed epoch (Jittor compiles). Then the
gradient's size in float32 all-reduced alone, ALL_REDUCES times in the same processes: the part of
a step that only data parallelism adds (with --sync-bn, BatchNorm's moments add a little more).
"""
import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from common.config import build_config
from common.distributed import launcher_command, run_rank
from common.env import num_threads, prepare_jittor
from common.paths import ROOT
from common.weights import is_buffer

BATCH_SIZE, STEPS, ALL_REDUCES = 128, 24, 20
TAG = "BENCH_DP "


def worker(framework, arch, steps):
    """In each process of the job: the timed epoch and the all-reduce; rank 0 prints one JSON line."""
    if framework == "jittor":
        prepare_jittor()
    load = lambda name: importlib.import_module(f"{framework}_.{name}")
    models, parallel, dataset, devices, engine = load("models"), load("parallel"), load("dataset"), load("device"), load("engine")
    device = devices.select_device("cpu")
    here = parallel.setup(device)
    model = parallel.set_sync_bn(devices.to_device(models.build_model(arch), device), True)
    train_model = parallel.wrap(model, device)
    config = build_config("teacher", load("distillers").METHODS, model=arch)  # lr 0.01, momentum 0.9, wd 5e-4
    optimizer = engine.make_optimizer(model, config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (steps * BATCH_SIZE, 3, 32, 32), dtype=np.uint8)
    loader = dataset.Loader(images, rng.integers(0, 10, steps * BATCH_SIZE), BATCH_SIZE, True, 0, device)
    engine.train_one_epoch(train_model, None, loader, optimizer, 0, config, device, {}, "bench")  # untimed: compiles
    metrics = engine.train_one_epoch(train_model, None, loader, optimizer, 1, config, device, {}, "bench")
    epoch_s = metrics["time/train"] + metrics["time/data"]
    size = sum(v.size for k, v in models.get_state(model).items() if not is_buffer(k))
    reduce_s = time_all_reduce(framework, size) if here.world_size > 1 else 0.0
    print(TAG + json.dumps({"images_per_s": steps * BATCH_SIZE / epoch_s, "step_ms": 1000 * epoch_s / steps,
                            "all_reduce_ms": 1000 * reduce_s, "gradient_mb": 4 * size / 1e6}), flush=True)
    parallel.finish()


def time_all_reduce(framework, size):
    """Seconds per all-reduce of `size` float32 values (the gradient), the median of ALL_REDUCES."""
    times = []
    if framework == "torch":
        import torch
        import torch.distributed as dist
        buffer = torch.zeros(size)
        for _ in range(ALL_REDUCES + 2):
            start = time.perf_counter()
            dist.all_reduce(buffer)
            times.append(time.perf_counter() - start)
    else:
        import jittor as jt
        buffer = jt.zeros(size)
        for _ in range(ALL_REDUCES + 2):  # the first compiles the op
            start = time.perf_counter()
            buffer.mpi_all_reduce("add").sync()
            times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def measure(framework, arch, nproc, threads, steps=STEPS):
    """One launch: nproc processes with threads // nproc threads each; rank 0's JSON line."""
    per_process = str(max(1, threads // nproc))
    env = dict(os.environ, KD_THREADS=per_process, OMP_NUM_THREADS=per_process)
    cmd = launcher_command(framework, nproc) + [os.path.join(ROOT, "bench_dp.py"), framework, arch, str(steps)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    line = next((l for l in out.stdout.splitlines() if l.startswith(TAG)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(line[len(TAG):])


def rows(frameworks, archs, nproc=2, threads=None, steps=STEPS):
    """The table's rows: per framework and model, 1 x T threads against nproc x T/nproc threads."""
    threads = threads or num_threads()
    result = []
    for arch in archs:
        for framework in frameworks:
            one = measure(framework, arch, 1, threads, steps)
            many = measure(framework, arch, nproc, threads, steps)
            result.append([framework, arch, f"{one['images_per_s']:.0f}", f"{many['images_per_s']:.0f}",
                           f"{many['images_per_s'] / one['images_per_s']:.2f}", f"{many['gradient_mb']:.1f}",
                           f"{many['all_reduce_ms']:.2f}", f"{100 * many['all_reduce_ms'] / many['step_ms']:.0f}%"])
            print(f"[data-parallel] {framework} {arch}: {result[-1][2]} -> {result[-1][3]} img/s", flush=True)
    headers = ["framework", "model", f"1 x {threads} threads img/s", f"{nproc} x {max(1, threads // nproc)} "
               f"thread(s) img/s", "ratio", "gradient MB", "all-reduce ms", "of the step"]
    return headers, result


if __name__ == "__main__":
    run_rank(lambda: worker(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else STEPS))
