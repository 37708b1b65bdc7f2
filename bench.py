"""Speed benchmark: torch vs Jittor on this CPU, side by side in one run, timing the stages' own code.

    python bench.py                     # the four CIFAR-10 models (< 10 min on 2 quiet cores)
    python bench.py --models resnet8x4  # any models of common.config.MODELS, the same way
    python bench.py --zoo               # eval forward alone, for every model of MODELS
    python bench.py --quick             # a smoke run: 2 repeats of 1 step (tests/test_bench.py)
    python bench.py --write-docs        # also put the tables into docs/speed.md, between its markers
    python bench.py --profile           # Jittor's training step of the teacher, by kernel group
    python bench.py --data-parallel     # 1 process x 2 threads against 2 processes x 1 thread (bench_dp.py)

Timed per model, in img/s (--zoo: eval alone):
  train        the stages' own step, engine.train_step, as train_one_epoch calls it (then device.sync and
               loss.item()): method ce, no teacher (a teacher's step, or a CE student's)
  loop         engine.train_one_epoch over a Loader (an epoch of about LOOP_SECONDS)
  teacher_fwd  the student's teacher alone (eval mode, no grad; teachers from common.config.PAIRS)
  kd, dkd      engine.train_step with that teacher and method
  eval         forward at EVAL_BATCH_SIZE (eval mode, no grad), logits fetched to numpy
Batches come from common.batches over CIFAR-10's training images, or random uint8 images when
--data-dir has none (the header says which); models, optimizers and tensors as the stages make them.

Fairness: each framework runs in a process of its own with --threads threads (torch.set_num_threads;
Jittor's CPU parallelism, the OpenMP of oneDNN and of jittor_/kernels.py, through OMP_NUM_THREADS). A
model's two processes stay alive but never run at once: each makes its first call (Jittor compiles or
loads its kernels: reported apart), then their timed repeats alternate (torch-jittor, jittor-torch,
...), so a change of load hits both alike. Each figure: median [min-max] over the repeats. The peak
is a numpy float32 matmul timed in the same run on the same threads; a nominal peak only where the
CPU model names the part.
"""
import argparse
import collections
import ctypes
import importlib
import itertools
import math
import multiprocessing
import os
import re
import resource
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from common.batches import iterate_batches, normalise
from common.config import (EVAL_BATCH_SIZE, FRAMEWORKS, MODELS, PAIRS, STUDENT_DEFAULTS, TEACHER_DEFAULTS,
                           add_data_dir, build_config)
from common.datasets import CIFAR10_FOLDER, DATASETS, load_cifar10
from common.env import num_threads, prepare_jittor
from common.errors import UserError, die
from common.files import write_json
from common.paths import LOG_DIR, ROOT
from common.tables import table

DEFAULT_MODELS = MODELS[:4]  # the original experiment's CIFAR-10 models (10 classes); the rest: CIFAR-100
BATCH_SIZE = STUDENT_DEFAULTS["batch_size"]  # 128, the same in both stages
TEACHER_OF = {STUDENT_DEFAULTS["model"]: TEACHER_DEFAULTS["model"]}  # student -> teacher, then the pairs'
for _pair in PAIRS.values():
    TEACHER_OF.setdefault(_pair["model"], _pair["teacher_model"])
DOCS = os.path.join(ROOT, "docs", "speed.md")
DOCS_KEY = {False: "bench-default", True: "bench-zoo", "dp": "bench-dp"}  # <!-- report:<key>:start/end -->
LABELS = {"train": "train_step (b{b})", "loop": "train_one_epoch (b{b})", "teacher_fwd": "teacher fwd {t} (b{b})",
          "kd": "train_step KD (+teacher fwd)", "dkd": "train_step DKD (+teacher fwd)", "eval": "eval fwd (b{e})"}
POOL = 4  # pre-made batches the timed steps cycle through
SUBSET = 16 * BATCH_SIZE  # training images handed to the workers
LOOP_SECONDS = 4.0  # the timed epoch of train_one_epoch: shorter ones weigh the prefetch thread's start too much
MIN_REPEAT_S = 0.5  # steps per repeat: enough for a repeat of at least this long
MAX_SECONDS, MIN_REPEATS = 12.0, 3  # timed seconds per figure above which the repeats drop to MIN_REPEATS
PROFILE_STEPS = 10
SLOW_S = 2.0  # --zoo: no warm-up call after a first call this slow (ResNet50: seconds per batch)
MATMUL_N = 2048  # the peak: an n x n float32 matmul, 2 n^3 FLOP
# (pattern of the kernel's name, group): the first that matches; jittor_/kernels.py names itself in its kernels' header
# --profile's kernel groups, the same rows in both frameworks: (pattern of a profiled name, group), first match wins.
# Jittor's profiler names its kernels (oneDNN's mkl_* ops, the repo's jt.code kernels by their header, its own fused
# kernels; the batched matmul of jittor_/kernels.py counts as a matmul); torch's names its aten ops and autograd
# nodes, each counted by its self time.
CONV, MATMUL, NORM_POOL = "convolutions (fwd, bwd data, bwd weights)", "matmuls", "BatchNorm, max-pool"
KERNEL_GROUPS = {"jittor": (("^mkl_conv", CONV), ("^mkl_|// matmul", MATMUL), ("jittor_/kernels.py", NORM_POOL)),
                 "torch": (("onvolution", CONV), ("addmm|aten::mm$|bmm|matmul|AddmmBackward|MmBackward", MATMUL),
                           ("batch_norm|BatchNorm|max_pool|MaxPool", NORM_POOL))}
OTHER, REST = "other ops (Jittor: its own fused kernels, 1 thread)", "the rest: Python, graph building, scheduling"


def num_classes(arch):
    return DATASETS["cifar10" if arch in DEFAULT_MODELS else "cifar100"]["num_classes"]


def tile(array, n):
    """The first n entries of array, repeated if it is shorter (the tests' tiny dataset)."""
    return np.concatenate([array] * -(-n // len(array)))[:n]


def summarize(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": [float(s) for s in samples]}


def training_images(data_dir):
    """(uint8 N x 3 x 32 x 32, labels, where from): CIFAR-10's training images, or random ones without it."""
    if os.path.isdir(os.path.join(data_dir, CIFAR10_FOLDER)):
        data = load_cifar10(data_dir, download=False)  # never a download inside a benchmark
        return data["train_x"], data["train_y"], f"CIFAR-10 training images ({os.path.abspath(data_dir)})"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (SUBSET, 3, 32, 32), dtype=np.uint8), rng.integers(0, num_classes(MODELS[0]), SUBSET),
            f"random uint8 images (no {CIFAR10_FOLDER} in {os.path.abspath(data_dir)})")


def seconds(fn, times=1):
    start = time.perf_counter()
    for _ in range(times):
        fn()
    return time.perf_counter() - start


# ============================================================================ in processes of their own
def measure_data(data_dir, repeats, quick):
    """numpy alone: CIFAR-10's load time, the augmentation pipeline, the matmul peak; the workers' images."""
    got = []  # the first load may come from a cold disk cache
    loads = [seconds(lambda: got.append(training_images(data_dir))) for _ in range(1 if quick else 3)]
    images, labels, source = got[-1]
    n = 2000 if quick else 50000
    x, y = tile(images, n), tile(labels, n)
    augment = lambda epoch: collections.deque(iterate_batches(x, y, BATCH_SIZE, True, epoch=epoch), 0)
    speeds = [n // BATCH_SIZE * BATCH_SIZE / seconds(lambda: augment(e)) for e in range(repeats)]
    a = np.random.default_rng(0).standard_normal((MATMUL_N, MATMUL_N), dtype=np.float32)
    a @ a  # BLAS threads start, buffers allocated
    runs = [2 * MATMUL_N ** 3 / seconds(lambda: a @ a) / 1e9 for _ in range(max(repeats, 2))]
    return {"source": source, "load_s": summarize(loads) if source.startswith("CIFAR") else None,
            "augment": summarize(speeds), "augment_images": n, "matmul_gflops": {"best": max(runs), **summarize(runs)},
            "images": tile(images, SUBSET), "labels": tile(labels, SUBSET)}


class Worker:
    """One model in one framework, in that framework's own process: the calls to time, made of the
    stages' own functions (build_model, engine.make_optimizer, engine.train_step, engine.train_one_epoch,
    Loader, to_tensor), with the config records the stages would build (common.config.build_config)."""

    def __init__(self, framework, arch, images, labels, settings):
        start = time.perf_counter()
        # fork, as in a stage (a spawned process inherits spawn): Jittor's import starts its compiler's pool
        multiprocessing.set_start_method("fork", force=True)
        if framework == "jittor":
            prepare_jittor()  # before the import: no CUDA probing on a CPU machine, a fixed cache name
        self.fw = importlib.import_module(framework)
        load = lambda name: importlib.import_module(f"{framework}_.{name}")
        self.models, self.dataset, self.devices = load("models"), load("dataset"), load("device")
        self.engine, methods = load("engine"), load("distillers").METHODS
        self.import_s = time.perf_counter() - start
        self.framework, self.arch, self.settings = framework, arch, settings
        self.device = self.devices.select_device("cpu")  # torch: set_num_threads(num_threads())
        self.engine.set_seed(0)  # dropout masks
        self.teacher_arch = None if settings["zoo"] else TEACHER_OF.get(arch)
        if self.teacher_arch:  # a student: its ce, kd and dkd records (lr, momentum, weight decay, T, beta, ...)
            self.configs = {m: build_config("student", methods, method=m, model=arch) for m in ("ce", "kd", "dkd")}
        else:
            self.configs = {"ce": build_config("teacher", methods, model=arch)}
        self.model = self.build(arch)
        self.params = sum(int(np.prod(p.shape)) for p in self.model.parameters() if p.requires_grad)
        self.optimizer = self.engine.make_optimizer(self.model, self.configs["ce"])  # every method's step uses it
        self.teacher = self.build(self.teacher_arch).eval() if self.teacher_arch else None
        batches = iterate_batches(images, labels, BATCH_SIZE, True)
        self.batches = itertools.cycle([(self.tensor(x), self.tensor(y)) for (x, y), _ in zip(batches, range(POOL))])
        self.eval_x = self.tensor(normalise(tile(images, EVAL_BATCH_SIZE)))
        self.images, self.labels, self.epochs = images, labels, itertools.count()
        self.per_call, self.steps, self.estimate = {}, {}, {}

    def build(self, arch):
        return self.devices.to_device(self.models.build_model(arch, 0, num_classes(arch)), self.device)

    def tensor(self, array):
        return self.dataset.to_tensor(array, self.device)

    def info(self):
        if self.framework == "torch":
            threads, onednn = self.fw.get_num_threads(), self.fw.backends.mkldnn.is_available()
        else:  # Jittor's OpenMP (libgomp, loaded with oneDNN) as the library itself reads it
            threads = int(ctypes.CDLL("libgomp.so.1").omp_get_max_threads())
            onednn = self.fw.compile_extern.mkl_ops is not None
        measurements = ["eval"] if self.settings["zoo"] else (
            ["train", "loop"] + (["teacher_fwd", "kd", "dkd"] if self.teacher else []) + ["eval"])
        return {"version": self.fw.__version__, "threads": threads, "onednn": bool(onednn), "import_s": self.import_s,
                "params": self.params, "teacher": self.teacher_arch, "measurements": measurements}

    def forward(self, model, images):
        with self.fw.no_grad():
            model(images).numpy()  # the logits fetched, as engine.evaluate needs them
        self.devices.sync(self.device)

    def call(self, name):
        """One call of a measurement, finished when it returns."""
        if name == "eval":
            return self.forward(self.model, self.eval_x)
        if name == "teacher_fwd":
            return self.forward(self.teacher, next(self.batches)[0])
        method = "ce" if name in ("train", "loop") else name
        if name == "loop":  # the stages' epoch, without a teacher
            return self.engine.train_one_epoch(self.model, None, self.loader, self.optimizer, next(self.epochs),
                                               self.configs[method], self.device, {}, "bench")
        images, labels = next(self.batches)
        teacher = None if method == "ce" else self.teacher  # kd and dkd: a student's step with its teacher
        loss, _, _ = self.engine.train_step(self.model, teacher, self.optimizer, images, labels, self.configs[method])
        self.devices.sync(self.device)
        loss.item()  # one fetch per step, as train_one_epoch

    def run(self, name, steps):
        return seconds(lambda: self.call(name), steps)

    def first(self, name):
        """The first call, timed on its own; a warm-up call; then the steps per repeat."""
        self.model.eval() if name == "eval" else self.model.train()
        self.per_call[name] = EVAL_BATCH_SIZE if name == "eval" else BATCH_SIZE
        if name == "loop":  # an epoch of about LOOP_SECONDS
            batches = 1 if self.settings["steps"] else int(min(SUBSET // BATCH_SIZE,
                                                               max(1, LOOP_SECONDS // self.estimate["train"])))
            n = self.per_call[name] = batches * BATCH_SIZE
            self.loader = self.dataset.Loader(self.images[:n], self.labels[:n], BATCH_SIZE, True, 0, self.device)
        first = estimate = self.run(name, 1)
        if name != "loop" and not (self.settings["zoo"] and first >= SLOW_S):
            estimate = self.run(name, 1)
        self.estimate[name] = estimate
        self.steps[name] = 1 if name == "loop" else self.settings["steps"] or math.ceil(MIN_REPEAT_S / estimate)
        return {"first_call_s": first, "repeat_s": self.steps[name] * estimate, "steps": self.steps[name]}

    def repeat(self, name):
        """One timed repeat: images per second."""
        return self.steps[name] * self.per_call[name] / self.run(name, self.steps[name])

    def count_flops(self, arch):
        """Forward FLOPs per image of conv and linear layers (2 x multiply-adds), by forward hooks on a
        throw-away model, after all timing (Jittor's hooks patch the layer class)."""
        model, macs = self.build(arch).eval(), []
        for module in model.modules():
            if isinstance(module, (self.fw.nn.Conv2d, self.fw.nn.Linear)):
                module.register_forward_hook(lambda mod, inputs, output: macs.append(
                    int(np.prod(output.shape[1:])) * int(np.prod(mod.weight.shape[1:]))))
        self.forward(model, self.tensor(np.zeros((2, 3, 32, 32), np.float32)))
        return 2 * sum(macs)

    def end(self):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; before count_flops
        return {"peak_rss_mib": rss, "flops": {a: self.count_flops(a) for a in (self.arch, self.teacher_arch) if a}}

    def profiled(self, steps):
        """(wall seconds, [(name, ns)]) of `steps` training steps under the framework's profiler: Jittor's
        (jt.profile_scope: each kernel's total time), torch's (torch.profiler: each op's self CPU time)."""
        if self.framework == "torch":
            profiler = importlib.import_module("torch.profiler")
            with profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
                wall = self.run("train", steps)
            return wall, [(e.key, e.self_cpu_time_total * 1e3) for e in prof.key_averages()]  # us -> ns
        with self.fw.profile_scope() as report:
            wall = self.run("train", steps)
        rows = [dict(zip(report[0], row)) for row in report[1:]]
        # a relayed op's time is counted in its replacement
        return wall, [(r["Name"], float(r["TotalTime"])) for r in rows if "relay" not in r["Name"]]

    def profile(self, steps):
        """ms per training step by kernel group (KERNEL_GROUPS, then OTHER), and the rest of the wall time."""
        self.first("train")
        wall = self.run("train", steps)
        wall_profiled, times = self.profiled(steps)
        groups = KERNEL_GROUPS[self.framework]
        ms = dict.fromkeys([g for _, g in groups] + [OTHER], 0.0)
        for name, ns in times:
            group = next((g for pattern, g in groups if re.search(pattern, name)), OTHER)
            ms[group] += ns / steps / 1e6  # ns in all -> ms per step
        ms[REST] = max(wall_profiled * 1e3 / steps - sum(ms.values()), 0.0)
        return {"wall_ms": wall * 1e3 / steps, "profiled_wall_ms": wall_profiled * 1e3 / steps, "ms": ms}


WORKER = None  # the one Worker of a worker process


def remote(method, *args):
    """Runs in a worker process: "init" builds its Worker; any other method is called on it."""
    global WORKER
    if method == "init":
        WORKER = Worker(*args)
        return WORKER.info()
    return getattr(WORKER, method)(*args)


# ============================================================================ the parent
def spawn():
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))  # a fresh interpreter


def measure_model(arch, data, args, tag, started):
    """Both frameworks' processes for one model: first calls, then alternating timed repeats."""
    pools = {fw: spawn() for fw in FRAMEWORKS}
    call = lambda fw, *a: pools[fw].submit(remote, *a).result()
    entry = {"classes": num_classes(arch), "frameworks": {}, "measurements": {}}
    settings = {"zoo": args.zoo, "steps": args.steps}
    try:
        for fw in FRAMEWORKS:  # one after the other: imports and first calls never overlap
            entry["frameworks"][fw] = call(fw, "init", fw, arch, data["images"], data["labels"], settings)
        for name in entry["frameworks"]["torch"]["measurements"]:
            print(f"{tag} {name}: first calls ...", flush=True)
            firsts = {fw: call(fw, "first", name) for fw in FRAMEWORKS}
            fit = int(MAX_SECONDS // max(f["repeat_s"] for f in firsts.values()))
            samples = {fw: [] for fw in FRAMEWORKS}
            for r in range(min(args.repeats, max(args.min_repeats, fit))):
                for fw in FRAMEWORKS[::1 if r % 2 == 0 else -1]:  # alternate who goes first
                    samples[fw].append(call(fw, "repeat", name))
            m = entry["measurements"][name] = {fw: {**firsts[fw], **summarize(samples[fw])} for fw in FRAMEWORKS}
            t, j = (m[fw]["median"] for fw in FRAMEWORKS)
            print(f"{tag} {name}: torch {t:.4g} img/s, jittor {j:.4g} img/s, jittor/torch {j / t:.2f}; first call "
                  f"{m['torch']['first_call_s']:.2f} s / {m['jittor']['first_call_s']:.2f} s; "
                  f"{time.perf_counter() - started:.0f} s so far", flush=True)
        for fw in FRAMEWORKS:
            entry["frameworks"][fw].update(call(fw, "end"))
        flops = [entry["frameworks"][fw]["flops"] for fw in FRAMEWORKS]
        if flops[0] != flops[1]:  # the two models.py files must describe the same network
            print(f"warning: {arch}: torch counts {flops[0]} FLOPs, jittor {flops[1]}", file=sys.stderr)
        entry["flops"] = flops[0]
    except Exception as e:  # a worker raised or died: report it, go on with the next model
        entry["failed"] = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"!!! {tag} failed: {entry['failed']}{getattr(e.__cause__, 'tb', '')}", file=sys.stderr, flush=True)
    finally:
        for pool in pools.values():
            pool.shutdown(cancel_futures=True)
    return entry


def nominal_peak(cpu, threads):
    """GFLOP/s only where the model string names the part: Xeon Platinum 8xxx and Gold 6xxx have two
    AVX-512 FMA units per core (64 float32 FLOP/cycle) and state their base clock; else None."""
    clock = re.search(r"Xeon\(R\) (?:Platinum 8|Gold 6)\d{3}\w* CPU @ ([\d.]+)GHz", cpu)
    return threads * float(clock[1]) * 64 if clock else None


def machine(threads):
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown CPU")
    cores = len(os.sched_getaffinity(0))
    return {"cpu": cpu, "cores": cores, "load_start": os.getloadavg()[0],
            "nominal_gflops": nominal_peak(cpu, min(threads, cores))}


def speed(m):
    return f"{m['median']:.4g} [{m['min']:.4g}-{m['max']:.4g}]"


def tables(result, fmt):
    """The speed table (one row per measurement, then the derived ratios) and the models table."""
    peak, rows, info = result["data"]["matmul_gflops"]["best"], [], []
    for arch, entry in result["models"].items():
        fws, ms, flops = entry["frameworks"], entry["measurements"], entry.get("flops", {})
        if entry.get("failed"):
            rows.append([arch, f"FAILED: {entry['failed']}"] + [""] * 7)
            continue
        teacher = fws["torch"]["teacher"]
        f, ft = flops.get(arch, 0), flops.get(teacher, 0)
        work = {"train": 3 * f, "loop": 3 * f, "teacher_fwd": ft, "kd": 3 * f + ft, "dkd": 3 * f + ft, "eval": f}
        for name in fws["torch"]["measurements"]:  # training ~ 3 x forward (gradients of inputs and weights)
            t, j = ms[name]["torch"], ms[name]["jittor"]
            gflops = [work[name] * m["median"] / 1e9 for m in (t, j)]
            firsts = [f"{t['first_call_s']:.3g}", f"{j['first_call_s']:.3g}",
                      f"{j['first_call_s'] / t['first_call_s']:.2f}"]
            rows.append([arch, LABELS[name].format(b=BATCH_SIZE, e=EVAL_BATCH_SIZE, t=teacher), speed(t), speed(j),
                         f"{j['median'] / t['median']:.2f}", *(["", "", ""] if name == "loop" else firsts),  # runs warm
                         "{:.3g} / {:.3g} ({:.0f}% / {:.0f}%)".format(*gflops, *(100 * g / peak for g in gflops))])
        median = lambda name, fw: ms[name][fw]["median"]
        derived = {"train_one_epoch / train_step (target >= 0.9)": lambda fw: median("loop", fw) / median("train", fw)}
        for method in ("kd", "dkd") if teacher and "kd" in ms else ():  # seconds per batch
            derived[f"{method.upper()} step / (CE step + teacher fwd)"] = lambda fw, m=method: (
                (1 / median(m, fw)) / (1 / median("train", fw) + 1 / median("teacher_fwd", fw)))
        for label, value in derived.items() if "loop" in ms else ():
            v = [value(fw) for fw in FRAMEWORKS]
            rows.append([arch, label, f"{v[0]:.3g}", f"{v[1]:.3g}", f"{v[1] / v[0]:.2f}", "", "", "", ""])
        info.append([arch, str(entry["classes"]), f"{fws['torch']['params'] / 1e6:.2f}", f"{f / 1e6:.1f}",
                     " / ".join(f"{fws[fw]['import_s']:.3g}" for fw in FRAMEWORKS),
                     " / ".join(f"{fws[fw]['peak_rss_mib']:.0f}" for fw in FRAMEWORKS)])
    for i in range(len(rows) - 1, 0, -1):  # a model's name on its first row only
        rows[i][0] = "" if rows[i][0] == rows[i - 1][0] else rows[i][0]
    speed_headers = ["model", "measurement", "torch img/s", "jittor img/s", "jittor/torch", "torch first call s",
                     "jittor first call s", "jittor/torch", "GFLOP/s torch / jittor (% of matmul peak)"]
    models_headers = ["model", "classes", "params (M)", "MFLOP/image", "import s torch / jittor",
                      "peak RSS MiB torch / jittor"]
    return table(speed_headers, rows, fmt) + "\n\n" + table(models_headers, info, fmt)


def header(result):
    m, d, s = result["machine"], result["data"], result["settings"]
    versions = ", ".join(f"{fw} {m['versions'][fw]}" for fw in FRAMEWORKS if fw in m["versions"])
    load = f"CIFAR-10 load {speed(d['load_s'])} s, " if d["load_s"] else ""
    nominal = f" (nominal {m['nominal_gflops']:.4g})" if m["nominal_gflops"] else ""
    return (f"{m['cpu']}, {m['cores']} cores, {s['threads']} threads in each framework, {versions}; "
            f"load average {m['load_start']:.2f} at the start, {m['load_end']:.2f} at the end; "
            f"{result['seconds']:.0f} s in all. Images: {d['source']}; {load}augmentation alone "
            f"{speed(d['augment'])} img/s. Peak: numpy float32 matmul {MATMUL_N}^2 "
            f"{d['matmul_gflops']['best']:.4g} GFLOP/s{nominal}. Median [min-max] over {s['repeats']} repeats "
            f"({s['min_repeats']} when a repeat is slow), torch and Jittor alternating.")


def read_docs(path, key):
    """The docs file's text, checked for the report:<key> markers (before minutes of measuring)."""
    from report import read_text, replace_block  # the repo's one marker code (report.py loads matplotlib)
    if not os.path.isfile(path):
        die(f"--write-docs {path}: no such file")
    text = read_text(path)
    if replace_block(text, key, "") is None:
        die(f"--write-docs {path}: markers missing; put <!-- report:{key}:start --> and "
            f"<!-- report:{key}:end --> where the table should go")
    return text


def ratio(a, b):
    """a / b to 2 decimals, or "-" where b is 0 (a group with no kernel in one framework)."""
    return f"{a / b:.2f}" if b else "-"


def profile(args):
    """--profile: both frameworks' training step of the teacher (or the first of --models), by kernel group, each in
    a process of its own, one after the other; the matmul peak of the same machine measured before them."""
    arch = args.models[0] if args.models else TEACHER_DEFAULTS["model"]
    images, labels, source = training_images(args.data_dir)
    with spawn() as pool:
        peak = pool.submit(measure_data, args.data_dir, 2 if args.quick else 3, True).result()["matmul_gflops"]["best"]
    info, p = {}, {}
    for fw in FRAMEWORKS:
        with spawn() as pool:
            info[fw] = pool.submit(remote, "init", fw, arch, tile(images, SUBSET), tile(labels, SUBSET),
                                   {"zoo": False, "steps": 1}).result()
            p[fw] = pool.submit(remote, "profile", args.profile_steps).result()
    t, j = (p[fw] for fw in FRAMEWORKS)
    share = lambda fw, ms: f"{100 * ms / p[fw]['profiled_wall_ms']:.0f}%"
    rows = [[group, f"{t['ms'][group]:.1f}", share("torch", t["ms"][group]), f"{j['ms'][group]:.1f}",
             share("jittor", j["ms"][group]), ratio(j["ms"][group], t["ms"][group])] for group in t["ms"]]
    rows.append(["wall time, profiler on", f"{t['profiled_wall_ms']:.1f}", "100%", f"{j['profiled_wall_ms']:.1f}",
                 "100%", ratio(j["profiled_wall_ms"], t["profiled_wall_ms"])])
    print(f"\n{arch}'s train_step over {args.profile_steps} steps of {BATCH_SIZE} {source}, "
          f"{info['torch']['threads']} threads each; torch {info['torch']['version']}, jittor "
          f"{info['jittor']['version']} (oneDNN {'on' if info['jittor']['onednn'] else 'OFF'}); without the profiler: "
          + ", ".join(f"{fw} {p[fw]['wall_ms']:.1f} ms/step ({BATCH_SIZE / p[fw]['wall_ms'] * 1e3:.4g} img/s)"
                      for fw in FRAMEWORKS)
          + f"; numpy float32 matmul peak {peak:.0f} GFLOP/s\n")
    print(table(["kernel group", "torch ms/step", "share", "jittor ms/step", "share", "jittor/torch"], rows, "simple"))
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="models of common.config.MODELS (default: the four CIFAR-10 models; with --zoo: all)")
    parser.add_argument("--zoo", action="store_true", help="eval forward alone (batch EVAL_BATCH_SIZE)")
    parser.add_argument("--repeats", type=int, default=5, help=f"timed repeats per figure, alternating frameworks "
                        f"({MIN_REPEATS} when a figure would take over {MAX_SECONDS:g} s per framework)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repeats of 1 step, small data figures")
    parser.add_argument("--threads", type=int, default=num_threads(),
                        help="CPU threads of both frameworks (default KD_THREADS or all cores)")
    add_data_dir(parser)
    parser.add_argument("--json", default=None, help="results (default log/bench.json; log/bench_zoo.json)")
    parser.add_argument("--write-docs", nargs="?", const=DOCS, default=None, metavar="MD",
                        help="also write the tables between the report:bench-default markers (report:bench-zoo "
                             "with --zoo) of this file (default docs/speed.md)")
    parser.add_argument("--data-parallel", action="store_true",
                        help="images/s of the teacher stage's loop on 1 process against 2 processes sharing the "
                             "threads (torchrun, mpirun), and the gradient all-reduce per step (bench_dp.py)")
    parser.add_argument("--profile", action="store_true", help=f"profile {PROFILE_STEPS} of Jittor's training steps "
                        f"of the teacher (or of the first of --models) by kernel group")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models or () if m not in MODELS]
    if unknown:
        die(f"unknown model {unknown[0]!r}; the models are: {', '.join(MODELS)}")
    if min(args.repeats, args.threads) < 1:
        die("--repeats and --threads must be at least 1")
    args.repeats, args.min_repeats = (2, 2) if args.quick else (args.repeats, min(MIN_REPEATS, args.repeats))
    args.steps, args.profile_steps = (1, 2) if args.quick else (None, PROFILE_STEPS)
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KD_THREADS"):
        os.environ[key] = str(args.threads)  # read by each library as it loads in the worker processes
    # A model's two workers stay alive side by side. OpenMP's threads spin after each parallel region
    # by default, so the idle worker's spinning stole the CPU from the timed one (cifar10quick step:
    # torch 112 img/s here against 500 with passive waiting, which is also its speed in the stage).
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    if args.profile:
        return profile(args)
    key = "dp" if args.data_parallel else args.zoo
    if args.write_docs:
        read_docs(args.write_docs, DOCS_KEY[key])  # no file or no markers: stop now, not after minutes of measuring
    if args.data_parallel:
        return data_parallel(args, argv)
    models = args.models or (MODELS if args.zoo else DEFAULT_MODELS)
    started, cpu = time.perf_counter(), machine(args.threads)
    if cpu["load_start"] > 0.5:
        print(f"warning: the CPU is busy (load average {cpu['load_start']:.1f}): the figures will be noisy; "
              f"benchmark on a quiet machine", file=sys.stderr)
    print("[data] numpy alone: loading, augmentation, matmul peak ...", flush=True)
    with spawn() as pool:
        try:
            data = pool.submit(measure_data, args.data_dir, args.repeats, args.quick).result()
        except UserError as e:
            die(str(e))
    images = {"images": data.pop("images"), "labels": data.pop("labels")}
    print(f"[data] {data['source']}; matmul {data['matmul_gflops']['best']:.4g} GFLOP/s", flush=True)
    result = {"machine": cpu, "data": data, "models": {},
              "settings": {k: getattr(args, k) for k in ("threads", "repeats", "min_repeats", "steps", "quick", "zoo")}}
    for i, arch in enumerate(models, 1):
        result["models"][arch] = measure_model(arch, images, args, f"[{i}/{len(models)} {arch}]", started)
    ok = [e for e in result["models"].values() if not e.get("failed")]
    cpu["versions"] = {fw: ok[0]["frameworks"][fw]["version"] for fw in FRAMEWORKS} if ok else {}
    cpu["load_end"], result["seconds"] = os.getloadavg()[0], time.perf_counter() - started
    for fw, info in (ok[0]["frameworks"].items() if ok else ()):
        if info["threads"] != args.threads or not info["onednn"]:
            print(f"warning: {fw} ran with {info['threads']} threads (not {args.threads}), oneDNN "
                  f"{'on' if info['onednn'] else 'OFF'}", file=sys.stderr)
    print(f"\n{header(result)}\n\n{tables(result, 'simple')}")
    json_path = args.json or os.path.join(LOG_DIR, "bench_zoo.json" if args.zoo else "bench.json")
    write_json(json_path, result)
    print(f"wrote {json_path}")
    failed = len(ok) < len(models)
    if args.write_docs and failed:
        print(f"{args.write_docs} not updated: a model failed", file=sys.stderr)
    elif args.write_docs:
        write_docs(args.write_docs, DOCS_KEY[key], argv, header(result), tables(result, "github"))
    return 1 if failed else 0


def data_parallel(args, argv):
    """--data-parallel: bench_dp.py under the launchers, the frameworks one after the other."""
    from bench_dp import rows, STEPS
    models = args.models or ["cifar10quick", "cifar10simple"]
    started, cpu = time.perf_counter(), machine(args.threads)
    headers, body = rows(FRAMEWORKS, models, 2, args.threads, steps=2 if args.quick else STEPS)
    note = (f"{cpu['cpu']}, {args.threads} threads in all; {time.perf_counter() - started:.0f} s; load average "
            f"{cpu['load_start']:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"\n{note}\n\n{table(headers, body, 'simple')}")
    if args.write_docs:
        write_docs(args.write_docs, DOCS_KEY["dp"], argv, note, table(headers, body, "github"))
    return 0


def write_docs(path, key, argv, note, tables_md):
    """The block between the report:<key> markers of path: the date, the command, its note, the tables."""
    from report import replace_block, write_text  # write_text: common.files.atomic_write, same permissions
    command = " ".join(["python bench.py", *map(shlex.quote, argv)])
    block = f"Measured {time.strftime('%Y-%m-%d')} with `{command}`: {note}\n\n{tables_md}"
    write_text(path, replace_block(read_docs(path, key), key, block))  # read again: others may have edited it
    print(f"updated {path} between the report:{key} markers")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:  # a full disk while writing the JSON record or the docs (common.files.DiskFullError)
        die(str(e))
