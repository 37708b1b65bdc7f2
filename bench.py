"""Speed benchmark: torch vs Jittor on this machine, for every model of the repo.

    python bench.py                                  # the four CIFAR-10 models, both frameworks (< 10 min on 2 quiet cores)
    python bench.py --models cifar10simple --quick   # a smoke run (what tests/test_bench.py does)
    python bench.py --plot                           # also draw img/bench.png
    python bench.py --zoo                            # inference speed of every model of common.config.MODELS (the zoo)
    python bench.py --readme                         # also write the table into README.md (between markers)
    python bench.py --threads 1 --json log/bench_t1.json           # compare thread counts
    python bench.py --nchw --inference-mode                       # try torch settings (NCHW: what channels-last buys)
    python bench.py --jt-flag lazy_execution=0                    # try a Jittor flag

What is measured, per model and framework (images/s unless stated):
  train CE         forward + backward + SGD step at batch 128, over pre-made tensors (a bare loop)
  train KD / DKD   the same with the teacher's forward (eval mode, no grad) and the repo's loss_terms
  teacher fwd      the teacher's forward alone (eval mode, no grad, batch 128), so that
                   KD step time / (CE step time + teacher fwd time) shows the cost of the loss itself
  repo loop        train_one_epoch of the stage file over a small real-data Loader; divided by
                   train CE it says how much the repo's loop (prefetch, .item(), accuracy) costs
  eval             forward at EVAL_BATCH_SIZE, eval mode, no grad, logits fetched to numpy
  first call       seconds of the first call of each of the above (Jittor compiles kernels there)
  peak RSS         resource.getrusage ru_maxrss of the process that measured that model
plus, framework-neutral: loading CIFAR-10 (s), the numpy augmentation pipeline (images/s), and a
large numpy float32 matmul (GFLOP/s) next to a nominal peak FLOP/s read from /proc/cpuinfo.
The default run measures DEFAULT_MODELS, the four CIFAR-10 models; --models takes any model.

--zoo measures inference alone, for every model of common.config.MODELS (the CIFAR-10 models with 10
classes, mdistiller's CIFAR-100 zoo with 100): eval-mode forward at EVAL_BATCH_SIZE over a
fixed random batch (speed does not depend on the pixel values, and no dataset is needed), logits
fetched to numpy, first call apart, with parameters (M) and forward MFLOPs per image. A slow model
(ResNet50: seconds per batch on 2 cores) gets 1 step per repeat, only --min-repeats repeats and no
untimed warm-up call. Sized for about 10 minutes for all 17 models on 2 quiet cores with Jittor's
kernel cache warm; the very first run compiles Jittor's kernels for every model (minutes more).

--readme [PATH] writes the table, with a line saying where, when and how it was measured, between
the markers <!-- report:bench-default:start --> ... <!-- report:bench-default:end --> of README.md
(report:bench-zoo with --zoo), with report.py's marker code; it stops before measuring if the
markers are missing.

Every framework runs in its own subprocess (one per model): torch and Jittor never share a
process, and each model's memory peak is its own. Each figure is the median over repeats,
with the min-max spread; a repeat is a few steps, every step waits for its work to finish
(jt.sync_all() for lazy Jittor) before the clock is read.

Threads: both frameworks get --threads (default num_threads(): KD_THREADS or all cores).
torch takes torch.set_num_threads. Jittor has no thread flag: on CPU only oneDNN (convolutions,
matmuls) runs in parallel, with OpenMP (libgomp), so OMP_NUM_THREADS, read when the library
loads, sets it (ONEDNN_VERBOSE=1 prints "nthr:N"); Jittor's own generated kernels (BatchNorm,
pooling, losses, the SGD update) are single-threaded. Run on a quiet machine: with another job
on the same cores, OpenMP threads wait for each other and the figures mean little.
"""
import argparse
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from common.batches import iterate_batches, normalise, num_batches
from common.config import EVAL_BATCH_SIZE, MODELS, STUDENT_DEFAULTS, dkd_beta
from common.paths import DATA_DIR, IMG_DIR, LOG_DIR, ROOT
from common.datasets import load_cifar10
from common.env import num_threads, prepare_jittor
from common.errors import die, UserError
from common.files import write_json

FRAMEWORKS = ["torch", "jittor"]
DEFAULT_MODELS = ["cifar10quick", "cifar10simple", "resnet32x4", "resnet8x4"]  # the CIFAR-10 models; --zoo: all
BATCH_SIZE = STUDENT_DEFAULTS["batch_size"]  # 128, the same in both stages
TEACHER_OF = {"cifar10simple": "cifar10quick", "resnet8x4": "resnet32x4"}  # students -> their teacher
README_KEY = {"default": "bench-default", "zoo": "bench-zoo"}  # report.py's <!-- report:<key>:start --> markers
MEASUREMENTS = ["train_ce", "loop", "teacher_forward", "train_kd", "train_dkd", "eval"]
LABELS = {  # measurement -> how the table names it
    "train_ce": "train step CE (b128)",
    "train_kd": "train step KD (+teacher fwd)",
    "train_dkd": "train step DKD (+teacher fwd)",
    "teacher_forward": "teacher fwd {teacher} (eval, b128)",
    "loop": "repo loop train_one_epoch (b128)",
    "eval": f"eval fwd (b{EVAL_BATCH_SIZE}, no grad)",
}
POOL = 4  # pre-made batches cycled by the bare loops (different images, no conversion inside the timing)
LOOP_SECONDS = 4.0  # the repo loop's timed epoch lasts about this long (fewer batches for very slow models)
SUBSET = 16 * BATCH_SIZE  # real training images handed to the workers (the loop's Loader, the batches)
MATMUL_N = 2048  # numpy matmul size for the measured peak (2 * 2048^3 = 17 GFLOP)
ZOO_WARMUP_BELOW_S = 2.0  # --zoo: no untimed warm-up after a first call this slow (ResNet50: ~15 s a batch)


def num_classes(model):
    """Outputs of a model: 10 for the CIFAR-10 models, 100 for mdistiller's zoo (made for CIFAR-100)."""
    return 10 if model in DEFAULT_MODELS else 100


# ============================================================================ timing
class Plan:
    """How many repeats and steps a measurement gets.

    steps=None: enough steps per repeat that a repeat lasts at least min_repeat_s (so timer and
    Python noise are small), judged from the warm-up call. Repeats: `repeats`, fewer when one
    repeat is slow (a ResNet-32x4 step takes seconds on 2 cores), but never below min_repeats.
    """

    def __init__(self, repeats, steps, min_repeats, min_repeat_s, max_seconds):
        self.repeats, self.steps, self.min_repeats = repeats, steps, min_repeats
        self.min_repeat_s, self.max_seconds = min_repeat_s, max_seconds

    def steps_for(self, call_s):
        return self.steps or max(1, math.ceil(self.min_repeat_s / max(call_s, 1e-9)))

    def repeats_for(self, repeat_s):
        fit = int(self.max_seconds // max(repeat_s, 1e-9))
        return min(self.repeats, max(self.min_repeats, fit))


def summarize(samples):
    """Median and spread (min-max) of per-repeat figures."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": [float(s) for s in samples]}


def time_calls(call, images_per_call, plan, warmup=1, steps=None, sync=lambda: None, warmup_below=None):
    """Time `call` (one step that has finished when it returns): first call, then steady state.

    The first call is reported on its own: it includes Jittor's kernel compilation (or loading
    them from the disk cache) and torch's one-off allocations. `warmup` more calls are not timed
    at all; the last one estimates the step time used to choose steps and repeats. warmup_below:
    no warm-up when the first call took that long (--zoo: a slow model gets one step per repeat
    anyway, and the median over the repeats discounts a slow first one; it saves a call of seconds).
    """
    sync()
    start = time.perf_counter()
    call()
    first = estimate = time.perf_counter() - start
    if warmup_below is not None and first >= warmup_below:
        warmup = 0
    for _ in range(warmup):
        start = time.perf_counter()
        call()
        estimate = time.perf_counter() - start
    steps = steps or plan.steps_for(estimate)
    repeats = plan.repeats_for(steps * estimate)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            call()
        samples.append(steps * images_per_call / (time.perf_counter() - start))
    return {"first_call_s": first, "warmup_calls": warmup, "steps": steps, "repeats": repeats,
            "images_per_s": summarize(samples)}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def tile(array, n):
    """The first n entries of array, repeated if it is shorter (the tests' tiny dataset)."""
    reps = -(-n // len(array))
    return np.concatenate([array] * reps)[:n] if reps > 1 else array[:n]


# ============================================================================ the machine
def cpu_info(threads):
    """CPU model, cores, clock and SIMD flags from /proc/cpuinfo, and a nominal peak float32 FLOP/s.

    Nominal peak = cores used x clock x float32 FLOP per cycle per core, where FLOP/cycle assumes
    two FMA units per core (true of Intel since Haswell and AMD since Zen 2):
    AVX-512 (16 lanes x 2 FMA x 2) = 64, AVX2+FMA (8 x 2 x 2) = 32, AVX = 16, SSE = 8.
    The clock is /proc/cpuinfo's "cpu MHz" (the current, often the nominal, clock; turbo can exceed it).
    """
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, value = (s.strip() for s in line.split(":", 1))
                    fields.setdefault(key, value)  # the first processor's values
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    mhz = float(fields.get("cpu MHz", "nan"))
    if "avx512f" in flags:
        simd, per_cycle = "AVX-512", 64
    elif {"avx2", "fma"} <= flags:
        simd, per_cycle = "AVX2+FMA", 32
    elif "avx" in flags:
        simd, per_cycle = "AVX", 16
    else:
        simd, per_cycle = "SSE", 8
    used = min(threads, cores)
    return {"cpu_model": fields.get("model name", platform.processor() or "unknown"),
            "cpu_family_model": f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}",
            "cores": cores, "clock_mhz": mhz, "simd": simd, "flop_per_cycle_per_core": per_cycle,
            "peak_gflops_nominal": used * mhz * 1e6 * per_cycle / 1e9,
            "peak_method": f"{used} cores x {mhz:.0f} MHz x {per_cycle} float32 FLOP/cycle ({simd}, 2 FMA units "
                           f"assumed), from /proc/cpuinfo"}


def thread_env(threads, extra):
    """Environment of every worker: each thread pool reads its variable when its library loads.

    OMP_NUM_THREADS: torch's OpenMP and Jittor's (libgomp: oneDNN convolutions/matmuls, the only
    multi-threaded part of Jittor on CPU); MKL/OPENBLAS: numpy's BLAS; KD_THREADS: num_threads(),
    which torch_/models.select_device passes to torch.set_num_threads.
    """
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KD_THREADS"):
        env[key] = str(threads)
    env.update(extra)
    return env


# ============================================================================ worker: data (no framework)
def data_worker(cfg):
    """Load CIFAR-10, time the augmentation and a numpy matmul, hand a small real subset to the others."""
    plan = Plan(**cfg["plan"])
    loads, data = [], None
    for _ in range(max(1, min(plan.repeats, 3))):  # a few loads: the first may come from a cold disk cache
        data = None  # free the previous copy first, so the peak memory is one copy
        start = time.perf_counter()
        data = load_cifar10(cfg["data_dir"], download=False)  # never download inside a benchmark
        loads.append(time.perf_counter() - start)
    images, labels = data["train_x"][:cfg["augment_images"]], data["train_y"][:cfg["augment_images"]]
    epoch = iter(range(10 ** 6))

    def augment_pass():  # the pipeline alone: shuffle, crop, flip, normalise; no framework, no prefetch
        for _ in iterate_batches(images, labels, BATCH_SIZE, True, seed=0, epoch=next(epoch)):
            pass

    n_aug = num_batches(len(labels), BATCH_SIZE, True) * min(BATCH_SIZE, len(labels))
    augment = time_calls(augment_pass, n_aug, Plan(plan.repeats, 1, plan.min_repeats, 0, plan.max_seconds), warmup=0)
    np.savez(cfg["subset"], x=tile(data["train_x"], SUBSET), y=tile(data["train_y"], SUBSET))
    return {"load_s": summarize(loads), "load_first_s": loads[0], "train_images": int(len(data["train_y"])),
            "augment": augment, "augment_images": n_aug, "matmul_gflops": measure_matmul(plan),
            "numpy": np.__version__, "peak_rss_mib": peak_rss_mib()}


def measure_matmul(plan, n=MATMUL_N):
    """Best GFLOP/s of an n x n float32 matmul (numpy's BLAS): a practical peak of this machine."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm-up: BLAS threads start, buffers allocated
    runs = []
    for _ in range(max(plan.repeats, 2)):
        start = time.perf_counter()
        a @ a
        runs.append(2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return {"best": max(runs), **summarize(runs), "n": n}


# ============================================================================ framework adapters
# The two classes below are the only framework-specific code: the same names, the same steps,
# written with the stage files' own functions (make_optimizer, loss_terms, train_one_epoch, Loader).
class TorchBackend:
    name = "torch"

    def __init__(self, cfg):
        import torch
        from torch_ import dataset, models, train_student, train_teacher
        self.torch, self.models, self.dataset = torch, models, dataset
        self.student, self.teacher_stage = train_student, train_teacher
        self.device = models.select_device("cpu")  # also torch.set_num_threads(num_threads())
        self.layer_types = (torch.nn.Conv2d, torch.nn.Linear)  # the layers count_flops counts
        torch.manual_seed(0)  # dropout masks
        self.channels_last, self.inference_mode = cfg["channels_last"], cfg["inference_mode"]

    def info(self):
        torch = self.torch
        return {"version": torch.__version__, "threads": torch.get_num_threads(),
                "backend": "oneDNN (mkldnn) available" if torch.backends.mkldnn.is_available() else "no oneDNN",
                "mkldnn": bool(torch.backends.mkldnn.is_available()),
                "options": {"channels_last": self.channels_last, "inference_mode": self.inference_mode}}

    def build(self, arch):
        model = self.models.build_model(arch, num_classes=num_classes(arch))
        model = self.models.to_device(model, self.device)  # channels-last, as the stages
        if not self.channels_last:  # --nchw: torch's default layout, to see what channels-last buys
            model = model.to(memory_format=self.torch.contiguous_format)
        return model

    def count_params(self, model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def freeze(self, model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def tensor(self, array):
        t = self.dataset.to_tensor(array, self.device)  # channels-last images, as the stages
        if not self.channels_last and t.dim() == 4:
            t = t.contiguous()
        return t

    def sync(self):
        self.models.sync(self.device)

    def train_step(self, model, optimizer, images, labels, method, teacher, args):
        logits_teacher = None
        if teacher is not None:  # the teacher first, as the student stage
            with self.torch.no_grad():
                logits_teacher = teacher(images)
        logits = model(images)
        loss = sum(self.student.loss_terms(method, logits, logits_teacher, labels, 1.0, args).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        self.sync()

    def forward(self, model, images, fetch):
        context = self.torch.inference_mode() if self.inference_mode else self.torch.no_grad()
        with context:
            logits = model(images)
            if fetch:
                logits.cpu().numpy()
        self.sync()

    def compiled_kernels(self):
        return None  # torch compiles nothing (eager mode)


class JittorBackend:
    name = "jittor"

    def __init__(self, cfg):
        prepare_jittor()  # before the import: no CUDA probing on a CPU machine, a fixed cache name
        import jittor
        from jittor_ import dataset, models, train_student, train_teacher
        self.jt, self.models, self.dataset = jittor, models, dataset
        self.student, self.teacher_stage = train_student, train_teacher
        self.device = models.select_device("cpu")  # jt.flags.use_cuda = 0
        self.layer_types = (jittor.nn.Conv2d, jittor.nn.Linear)  # the layers count_flops counts
        for key, value in cfg["jt_flags"].items():  # exploration: e.g. lazy_execution=0
            setattr(jittor.flags, key, type(getattr(jittor.flags, key))(value))
        jittor.set_global_seed(0)

    def info(self):
        jt = self.jt
        return {"version": jt.__version__, "threads": openmp_threads(),
                "backend": "oneDNN (mkl_ops)" if jt.compile_extern.mkl_ops is not None else "no oneDNN",
                "mkldnn": jt.compile_extern.mkl_ops is not None,
                "options": {"flags": {k: getattr(jt.flags, k) for k in ("lazy_execution", "use_cuda")}},
                "cache_path": jt.flags.cache_path}

    def compiled_kernels(self):
        """How many kernels the disk cache holds: a rise during a first call means it compiled."""
        folder = os.path.join(self.jt.flags.cache_path, "jit")
        return sum(name.endswith(".so") for name in os.listdir(folder)) if os.path.isdir(folder) else 0

    def build(self, arch):
        return self.models.build_model(arch, num_classes=num_classes(arch))

    def count_params(self, model):
        # Jittor's parameters() also lists BatchNorm's running statistics (stop_grad): not parameters
        return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.is_stop_grad())

    def freeze(self, model):
        model.eval()
        for p in model.parameters():
            p.stop_grad()
        return model

    def tensor(self, array):
        return self.dataset.to_tensor(array, self.device)

    def sync(self):
        self.jt.sync_all()  # Jittor is lazy: without this the clock would stop before the work is done

    def train_step(self, model, optimizer, images, labels, method, teacher, args):
        logits_teacher = None
        if teacher is not None:  # the teacher first, as the student stage
            with self.jt.no_grad():
                logits_teacher = teacher(images)
        logits = model(images)
        loss = sum(self.student.loss_terms(method, logits, logits_teacher, labels, 1.0, args).values())
        optimizer.zero_grad()
        optimizer.backward(loss)
        optimizer.step()
        loss.sync()
        self.sync()

    def forward(self, model, images, fetch):
        with self.jt.no_grad():
            logits = model(images)
            if fetch:
                logits.numpy()
            else:
                logits.sync()
        self.sync()


def openmp_threads():
    """OpenMP's thread count as libgomp sees it (Jittor loads libgomp globally; oneDNN uses it)."""
    import ctypes
    try:
        return int(ctypes.CDLL("libgomp.so.1").omp_get_max_threads())
    except (OSError, AttributeError):
        return None


def count_flops(backend, arch):
    """Forward FLOPs per image of conv and linear layers: 2 x multiply-adds, from the layer shapes.

    A conv or linear output element costs prod(weight.shape[1:]) multiply-adds (in_channels/groups
    x kh x kw, or in_features); BN, ReLU, pooling and the loss are left out. Done with forward
    hooks on a throw-away model, after all timing (Jittor's hooks patch the layer class).
    """
    model = backend.freeze(backend.build(arch))
    macs = []
    for module in model.modules():
        if isinstance(module, backend.layer_types):
            def hook(mod, inputs, output):
                macs.append(int(np.prod(output.shape[1:])) * int(np.prod(mod.weight.shape[1:])))
            module.register_forward_hook(hook)
    backend.forward(model, backend.tensor(np.zeros((2, 3, 32, 32), np.float32)), fetch=True)
    return 2 * sum(macs)


# ============================================================================ worker: one framework, one model
class ModelBench:
    """Every measurement of one model in one framework, inside one worker process.

    The bare loops cycle over POOL pre-made batches (real augmented images, already tensors),
    so they time the framework alone; the repo loop times train_one_epoch with its Loader.
    """

    def __init__(self, backend, cfg):
        self.backend, self.arch, self.plan = backend, cfg["model"], Plan(**cfg["plan"])
        self.teacher_arch = TEACHER_OF.get(self.arch)
        # lr, momentum, weight decay, T, loss weights; DKD's beta as the student stage picks it (students only)
        self.args = argparse.Namespace(**dict(STUDENT_DEFAULTS, beta=dkd_beta(self.arch)))
        self.subset = np.load(cfg["subset"])
        augmented = iterate_batches(self.subset["x"], self.subset["y"], BATCH_SIZE, True)
        self.pool = [(backend.tensor(x), backend.tensor(y)) for (x, y), _ in zip(augmented, range(POOL))]
        self.model = backend.build(self.arch)
        self.optimizer = backend.teacher_stage.make_optimizer(self.model, self.args)  # the stages' SGD
        self.results, self.calls = {}, iter(range(10 ** 9))

    def next_batch(self):
        return self.pool[next(self.calls) % len(self.pool)]

    def record(self, name, call, images, **kw):
        kernels = self.backend.compiled_kernels()
        r = self.results[name] = time_calls(call, images, self.plan, sync=self.backend.sync, **kw)
        if kernels is not None:
            r["new_kernels"] = self.backend.compiled_kernels() - kernels
        print(f"[bench {self.backend.name} {self.arch}] {name}: {r['images_per_s']['median']:.1f} images/s "
              f"({r['repeats']} repeats of {r['steps'] * images} images), first call {r['first_call_s']:.2f}s",
              flush=True)

    def train_call(self, method, teacher=None):
        def call():
            images, labels = self.next_batch()
            self.backend.train_step(self.model, self.optimizer, images, labels, method, teacher, self.args)
        return call

    def measure_train(self):
        self.model.train()
        self.record("train_ce", self.train_call("ce"), BATCH_SIZE)

    def measure_loop(self):
        """train_one_epoch of the model's own stage file, over an epoch of LOOP_SECONDS (at most SUBSET images).

        A real epoch has ~200 batches; an epoch of one or two batches would weigh the per-epoch costs
        (the prefetch thread's start, the first batch prepared before anything overlaps) far too much.
        """
        b = self.backend
        step_s = BATCH_SIZE / self.results["train_ce"]["images_per_s"]["median"]
        wanted = self.plan.steps or max(self.results["train_ce"]["steps"], math.floor(LOOP_SECONDS / step_s))
        batches = max(1, min(wanted, SUBSET // BATCH_SIZE))
        n = batches * BATCH_SIZE
        loader = b.dataset.Loader(self.subset["x"][:n], self.subset["y"][:n], BATCH_SIZE, True, 0, b.device)
        epochs = iter(range(10 ** 6))
        if self.teacher_arch:  # a student: the student stage's loop, CE (its overhead does not depend on the loss)
            args = argparse.Namespace(**vars(self.args), method="ce")
            loop = lambda: b.student.train_one_epoch(self.model, None, loader, self.optimizer, next(epochs), args, b.device)
        else:
            loop = lambda: b.teacher_stage.train_one_epoch(self.model, loader, self.optimizer, next(epochs), b.device)
        # model and optimizer are warm already (measure_train): no untimed warm-up; one call = one epoch
        self.record("loop", loop, n, warmup=0, steps=1)
        self.results["loop"]["batches_per_epoch"] = batches

    def measure_distillation(self, wanted):
        """The teacher's forward alone, then the KD and DKD steps (student step + teacher forward + loss)."""
        teacher = self.backend.freeze(self.backend.build(self.teacher_arch))  # random weights: same speed
        if "teacher_forward" in wanted:
            self.record("teacher_forward", lambda: self.backend.forward(teacher, self.next_batch()[0], fetch=False),
                        BATCH_SIZE)
        for method in ("kd", "dkd"):
            if f"train_{method}" in wanted:
                self.model.train()
                self.record(f"train_{method}", self.train_call(method, teacher), BATCH_SIZE)

    def measure_eval(self):
        """Forward of one EVAL_BATCH_SIZE batch, logits fetched as test.evaluate needs them."""
        self.model.eval()
        x = self.backend.tensor(normalise(tile(self.subset["x"], EVAL_BATCH_SIZE)))
        self.record("eval", lambda: self.backend.forward(self.model, x, fetch=True), EVAL_BATCH_SIZE)

    def run(self, wanted):
        if "train_ce" in wanted or "loop" in wanted:  # the loop's ratio needs the bare CE step
            self.measure_train()
        if "loop" in wanted:
            self.measure_loop()
        if self.teacher_arch and {"teacher_forward", "train_kd", "train_dkd"} & set(wanted):
            self.measure_distillation(wanted)
        if "eval" in wanted:
            self.measure_eval()
        return self.results


def model_worker(cfg):
    start = time.perf_counter()
    backend = (TorchBackend if cfg["framework"] == "torch" else JittorBackend)(cfg)
    import_s, rss_import = time.perf_counter() - start, peak_rss_mib()
    bench = ModelBench(backend, cfg)
    results = bench.run(cfg["measure"])
    peak = peak_rss_mib()  # before count_flops builds more models
    flops = {arch: count_flops(backend, arch) for arch in filter(None, (bench.arch, bench.teacher_arch))}
    return {"framework": backend.name, "model": bench.arch, "info": backend.info(), "import_s": import_s,
            "rss_after_import_mib": rss_import, "peak_rss_mib": peak, "measurements": results,
            "forward_flops_per_image": flops}


def zoo_worker(cfg):
    """--zoo: inference alone, eval-mode forward of one EVAL_BATCH_SIZE batch, logits fetched to numpy.

    The batch is fixed random numbers (the speed of these layers does not depend on the values), so
    no dataset is needed. backend.forward waits for the work (jt.sync_all()) before the clock is read.
    """
    start = time.perf_counter()
    backend = (TorchBackend if cfg["framework"] == "torch" else JittorBackend)(cfg)
    import_s = time.perf_counter() - start
    arch, plan = cfg["model"], Plan(**cfg["plan"])
    model = backend.build(arch)
    params = backend.count_params(model)  # before freeze: Jittor tells parameters by their gradient flag
    backend.freeze(model)
    images = np.random.default_rng(0).standard_normal((EVAL_BATCH_SIZE, 3, 32, 32), dtype=np.float32)
    x = backend.tensor(images)
    kernels = backend.compiled_kernels()
    r = time_calls(lambda: backend.forward(model, x, fetch=True), EVAL_BATCH_SIZE, plan, sync=backend.sync,
                   warmup_below=ZOO_WARMUP_BELOW_S)
    if kernels is not None:
        r["new_kernels"] = backend.compiled_kernels() - kernels
    print(f"[bench {backend.name} {arch}] forward: {r['images_per_s']['median']:.1f} images/s ({r['repeats']} "
          f"repeats of {r['steps'] * EVAL_BATCH_SIZE} images), first call {r['first_call_s']:.2f}s", flush=True)
    peak = peak_rss_mib()  # before count_flops builds another model
    return {"framework": backend.name, "model": arch, "info": backend.info(), "import_s": import_s,
            "num_classes": num_classes(arch), "params": params, "peak_rss_mib": peak, "measurements": {"eval": r},
            "forward_flops_per_image": {arch: count_flops(backend, arch)}}


WORKERS = {"data": data_worker, "model": model_worker, "zoo": zoo_worker}


def worker_main(config_path):
    with open(config_path) as f:
        cfg = json.load(f)
    try:
        out = WORKERS[cfg["kind"]](cfg)
    except UserError as e:
        die(str(e))
    with open(cfg["out"], "w") as f:
        json.dump(out, f)


# ============================================================================ parent: run the workers
def run_worker(cfg, workdir, env, label):
    """Run one worker process; its output goes straight to the terminal. None if it failed."""
    path = os.path.join(workdir, f"{label}.json")
    cfg = {**cfg, "out": path + ".out"}
    with open(path, "w") as f:
        json.dump(cfg, f)
    print(f"\n=== {label}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, os.path.abspath(__file__), "--worker", path], cwd=ROOT, env=env)
    if code != 0 or not os.path.isfile(cfg["out"]):
        print(f"!!! {label} failed (exit code {code})", file=sys.stderr, flush=True)
        return None
    with open(cfg["out"]) as f:
        result = json.load(f)
    result["wall_s"] = time.perf_counter() - start
    return result


def median_of(record, name):
    m = (record or {}).get("measurements", {}).get(name)
    return m["images_per_s"]["median"] if m else None


def derive(record, model, flops, peaks):
    """Ratios and FLOP utilisation from one framework's measurements of one model."""
    if not record:
        return {}
    out = {}
    ce, loop = median_of(record, "train_ce"), median_of(record, "loop")
    if ce and loop:
        out["loop_ratio"] = loop / ce
    teacher = TEACHER_OF.get(model)
    fwd = median_of(record, "teacher_forward")
    for method in ("kd", "dkd"):
        step = median_of(record, f"train_{method}")
        if step and ce and fwd:  # seconds per batch: distillation step vs student step + teacher forward
            out[f"{method}_overhead"] = (1 / step) / (1 / ce + 1 / fwd)
    f_model, f_teacher = flops.get(model), flops.get(teacher)
    # training ~ 3 x forward (backward = gradients of inputs and of weights, each ~ one forward)
    work = {"train_ce": 3 * f_model if f_model else None, "eval": f_model,
            "train_kd": 3 * f_model + f_teacher if f_model and f_teacher else None}
    work["train_dkd"] = work["train_kd"]
    for name, per_image in work.items():
        speed = median_of(record, name)
        if speed and per_image:
            gflops = per_image * speed / 1e9
            out[f"{name}_gflops"] = gflops
            out[f"{name}_pct_peak"] = 100 * gflops / peaks["nominal"]
            if peaks.get("matmul"):
                out[f"{name}_pct_matmul"] = 100 * gflops / peaks["matmul"]
    return out


# ============================================================================ parent: the table
def fmt_speed(m):
    if not m:
        return "-"
    s = m["images_per_s"]
    return f"{s['median']:.4g} [{s['min']:.4g}-{s['max']:.4g}]"


TABLE_HEADER = ("model", "measurement", "unit", "torch median [min-max]", "jittor median [min-max]", "jittor/torch")
TABLE_KEYS = ("model", "measurement", "unit", "torch", "jittor", "jittor_over_torch")  # of the JSON's "table"


def table_rows(result, each_first_call=True):
    """[(model, measurement, unit, torch, jittor, jittor/torch)] for printing and the JSON.

    each_first_call=False (the README): one row of first-call seconds summed over the measurements.
    """
    rows = []
    data = result.get("data")
    if data:
        load = data["load_s"]
        rows.append(("-", "load CIFAR-10 into memory", "s", f"{load['median']:.3g} [{load['min']:.3g}-{load['max']:.3g}]",
                     "(same)", ""))
        rows.append(("-", f"augmentation only ({data['augment_images']} images)", "img/s",
                     fmt_speed(data["augment"]), "(same)", ""))
        mm = data["matmul_gflops"]
        rows.append(("-", f"numpy float32 matmul {mm['n']}^2 (best)", "GFLOP/s", f"{mm['best']:.4g}", "(same)", ""))
    for model, entry in result["models"].items():
        recs = [entry.get(fw) for fw in FRAMEWORKS]
        der = [entry.get("derived", {}).get(fw, {}) for fw in FRAMEWORKS]

        def add(label, unit, values, ratio=True, fmt="{:.3g}"):
            cells = [v if isinstance(v, str) else "-" if v is None else fmt.format(v) for v in values]
            nums = [v if isinstance(v, (int, float)) else None for v in values]
            r = f"{nums[1] / nums[0]:.2f}" if ratio and all(nums) else ""
            rows.append((model, label, unit, *cells, r))

        for name in MEASUREMENTS:
            ms = [(r or {}).get("measurements", {}).get(name) for r in recs]
            if any(ms):
                speeds = [m["images_per_s"]["median"] if m else None for m in ms]
                label = LABELS[name].format(teacher=TEACHER_OF.get(model, ""))
                rows.append((model, label, "img/s", fmt_speed(ms[0]), fmt_speed(ms[1]),
                             f"{speeds[1] / speeds[0]:.2f}" if all(speeds) else ""))
        for key, label in (("kd_overhead", "KD step / (CE step + teacher fwd)"),
                           ("dkd_overhead", "DKD step / (CE step + teacher fwd)"),
                           ("loop_ratio", "repo loop / bare loop (target >= 0.9)")):
            if any(key in d for d in der):
                add(label, "x", [d.get(key) for d in der], fmt="{:.2f}")
        for name in ("train_ce", "train_kd", "eval"):
            if any(f"{name}_gflops" in d for d in der):
                add(f"{name}: GFLOP/s (% nominal peak)", "GFLOP/s",
                    [f"{d[name + '_gflops']:.3g} ({d[name + '_pct_peak']:.0f}%)" if name + "_gflops" in d else None
                     for d in der], ratio=False)
        if not each_first_call:
            ms = [(r or {}).get("measurements", {}).values() for r in recs]
            firsts = [sum(m["first_call_s"] for m in fw_ms) or None for fw_ms in ms]
            kernels = sum(m.get("new_kernels") or 0 for m in ms[1])
            cells = ["-" if f is None else f"{f:.3g}" for f in firsts]
            if kernels and firsts[1]:
                cells[1] += f" ({kernels} compiled)"
            rows.append((model, "first calls, all measurements summed", "s", *cells,
                         f"{firsts[1] / firsts[0]:.2f}" if all(firsts) else ""))
        for name in MEASUREMENTS if each_first_call else []:
            firsts = [(r or {}).get("measurements", {}).get(name, {}).get("first_call_s") for r in recs]
            if any(firsts):
                kernels = ((recs[1] or {}).get("measurements", {}).get(name, {}) or {}).get("new_kernels")
                cells = [None if f is None else f"{f:.3g}" for f in firsts]
                if kernels and cells[1]:
                    cells[1] += f" ({kernels} compiled)"
                r = f"{firsts[1] / firsts[0]:.2f}" if all(firsts) else ""
                rows.append((model, f"first call: {name}", "s", *[c or "-" for c in cells], r))
        add("framework import", "s", [(r or {}).get("import_s") for r in recs])
        add("peak RSS of the process", "MiB", [(r or {}).get("peak_rss_mib") for r in recs], fmt="{:.0f}")
        for fw, r in zip(FRAMEWORKS, recs):
            if fw in entry and r is None:
                rows.append((model, f"{fw} worker FAILED", "", "", "", ""))
    return rows


def zoo_rows(result):
    """--zoo: one row per model, in ZOO_HEADER's columns."""
    rows = []
    for model, entry in result["models"].items():
        recs = [entry.get(fw) for fw in FRAMEWORKS]
        ms = [(r or {}).get("measurements", {}).get("eval") for r in recs]
        speeds = [median_of(r, "eval") for r in recs]
        flops, params = entry.get("forward_flops_per_image", {}).get(model), entry.get("params")
        rows.append((model, str(entry["num_classes"]), "-" if params is None else f"{params / 1e6:.2f}",
                     "-" if flops is None else f"{flops / 1e6:.1f}", fmt_speed(ms[0]), fmt_speed(ms[1]),
                     f"{speeds[1] / speeds[0]:.2f}" if all(speeds) else "",
                     " / ".join("-" if not (v and flops) else f"{flops * v / 1e9:.3g}" for v in speeds),
                     " / ".join("-" if not m else f"{m['first_call_s']:.2g}" for m in ms)))
    return rows


ZOO_HEADER = ("model", "classes", "params (M)", "MFLOPs/image", "torch img/s median [min-max]",
              "jittor img/s median [min-max]", "jittor/torch", "GFLOP/s torch / jittor", "first call s torch / jittor")
ZOO_KEYS = ("model", "classes", "params_m", "mflops_per_image", "torch", "jittor", "jittor_over_torch",
            "gflops_torch_jittor", "first_call_s_torch_jittor")


def print_table(rows, header=TABLE_HEADER, left=3, gap=True):
    """A plain-text table, the first `left` columns left-aligned; gap: a blank line between models."""
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("-" * len(line(header)))
    last = None
    for r in rows:
        if gap and last is not None and r[0] != last:
            print()
        print(line(r))
        last = r[0]


def markdown_table(rows, header, left):
    """The same table in markdown; a model's name only on its first row."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    last = None
    for r in rows:
        cells = ["" if i == 0 and r[0] == last else str(c) for i, c in enumerate(r)]
        out.append("| " + " | ".join(cells) + " |")
        last = r[0]
    return "\n".join(out)


def print_header(result):
    m, s = result["machine"], result["settings"]
    print(f"\nCPU: {m['cpu_model']} ({m['cpu_family_model']}), {m['cores']} cores, {m['clock_mhz']:.0f} MHz, {m['simd']}")
    print(f"threads: {s['threads']} for both frameworks (torch.set_num_threads; Jittor: OMP_NUM_THREADS for "
          f"libgomp, used by oneDNN; Jittor's own fused CPU kernels are single-threaded)")
    for fw in FRAMEWORKS:
        info = result.get("frameworks", {}).get(fw)
        if info:
            print(f"{fw} {info['version']}: {info['backend']}, {info['threads']} threads, options {info['options']}")
    print(f"python {m['python']}, numpy {m['numpy']}; load average {m['load_average_start']:.2f} at the start, "
          f"{m['load_average_end']:.2f} at the end (a quiet machine: about 0)")
    matmul = f"; measured numpy matmul {m['matmul_gflops']:.4g} GFLOP/s" if "matmul_gflops" in m else ""
    print(f"peak float32: nominal {m['peak_gflops_nominal']:.4g} GFLOP/s = {m['peak_method']}{matmul}. "
          f"FLOPs: conv+linear only, 2 x multiply-adds, training = 3 x forward, KD adds the teacher's forward.")
    print(f"each figure: median [min-max] over {s['repeats']} repeats (at least {s['min_repeats']} when a repeat is "
          f"slow), steps per repeat: {s['steps'] or 'auto'}; jittor/torch > 1: Jittor is faster for img/s, "
          f"slower for seconds, bigger for MiB\n")


def plot(result, path):
    """Bars of images/s per measurement, torch vs Jittor, one panel per model (min-max as error bars)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(result["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        entry = result["models"][model]
        names = [n for n in MEASUREMENTS if any(n in (entry.get(fw) or {}).get("measurements", {}) for fw in FRAMEWORKS)]
        for i, fw in enumerate(FRAMEWORKS):
            ms = [((entry.get(fw) or {}).get("measurements", {}).get(n) or {}).get("images_per_s") for n in names]
            med = [m["median"] if m else 0 for m in ms]
            err = [[m["median"] - m["min"] if m else 0 for m in ms], [m["max"] - m["median"] if m else 0 for m in ms]]
            ax.bar(np.arange(len(names)) + (i - 0.5) * 0.4, med, 0.4, yerr=err, capsize=3, label=fw)
        ax.set_xticks(np.arange(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
        ax.set_title(model)
        ax.set_ylabel("images/s")
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['machine']['cpu_model']}, {result['settings']['threads']} threads (median, min-max)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# ============================================================================ main
def parse_env_pairs(pairs, what):
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: {what} expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = value
    return out


# ============================================================================ parent: the README block
def read_readme(path, key):
    """The README's text, checked to hold the report:<key> markers (before minutes of measuring)."""
    import report  # its marker code; imported only here (it loads matplotlib)
    if not os.path.isfile(path):
        die(f"--readme {path}: no such file")
    with open(path, encoding="utf-8", newline="") as f:  # newline="": keep the file's line ends
        text = f.read()
    if report.replace_block(text, key, "") is None:
        die(f"--readme {path}: markers missing; put <!-- report:{key}:start --> and "
                   f"<!-- report:{key}:end --> where the table should go")
    return text


def readme_block(result, rows, header, left, command):
    """One line on where, when and how it was measured, then the table."""
    m, s = result["machine"], result["settings"]
    versions = ", ".join(f"{fw} {result['frameworks'][fw]['version']}" for fw in FRAMEWORKS if fw in result["frameworks"])
    threads = f"{s['threads']} thread{'s' if s['threads'] > 1 else ''}"
    line = (f"Measured {time.strftime('%Y-%m-%d')} with `{command}`: {m['cpu_model']}, {m['cores']} cores, "
            f"{threads} in each framework, {versions}; load average {m['load_average_start']:.2f} at the start, "
            f"{m['load_average_end']:.2f} at the end; {result['seconds']:.0f} s in all. Median [min-max] "
            f"over {s['repeats']} repeats ({s['min_repeats']} when a repeat is slow).")
    return line + "\n\n" + markdown_table(rows, header, left)


def write_readme(path, key, block):
    import report
    text = report.replace_block(read_readme(path, key), key, block)  # read again: others may have edited it
    report.write_text(path, text)  # atomic, keeps the file's permissions
    print(f"updated {path} between the report:{key} markers")


# ============================================================================ main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None,
                        help="models to measure (default: the four CIFAR-10 models; with --zoo: all of them)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=FRAMEWORKS, help="frameworks to measure")
    parser.add_argument("--measure", nargs="+", choices=MEASUREMENTS, default=None,
                        help="measurements to make (default all; the teacher ones only apply to students; not with --zoo)")
    parser.add_argument("--zoo", action="store_true",
                        help="inference speed alone (eval forward, batch EVAL_BATCH_SIZE) of every model, or of --models")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per figure (median and spread over them)")
    parser.add_argument("--min-repeats", type=int, default=3,
                        help="repeats never drop below this when a step is slow (see --max-seconds)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per repeat (default: auto, enough for --min-repeat-s)")
    parser.add_argument("--min-repeat-s", type=float, default=0.5, help="auto steps: a repeat lasts at least this long")
    parser.add_argument("--max-seconds", type=float, default=12.0,
                        help="timed seconds per figure beyond which repeats are cut down to --min-repeats")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 repeats of 1 step, augmentation over 2,000 images (for the tests)")
    parser.add_argument("--threads", type=int, default=num_threads(),
                        help="CPU threads of both frameworks (default KD_THREADS or all cores)")
    parser.add_argument("--data-dir", default=DATA_DIR, help="folder holding cifar-10-batches-py/ (not with --zoo)")
    parser.add_argument("--json", default=None, help="where to write the results (default log/bench.json, "
                                                     "log/bench_zoo.json with --zoo)")
    parser.add_argument("--plot", nargs="?", const=os.path.join(IMG_DIR, "bench.png"), default=None,
                        metavar="PNG", help="also draw a bar figure (default path img/bench.png; not with --zoo)")
    parser.add_argument("--readme", nargs="?", const=os.path.join(ROOT, "README.md"), default=None,
                        metavar="MD", help="also write the table between the report:bench-default markers of this "
                                           "file (report:bench-zoo with --zoo; default README.md)")
    # settings to explore; the defaults are what the stage files do
    parser.add_argument("--nchw", dest="channels_last", action="store_false",
                        help="torch: plain NCHW layout instead of the stages' channels-last (to measure what it buys)")
    parser.add_argument("--inference-mode", action="store_true", help="torch: eval under torch.inference_mode, not no_grad")
    parser.add_argument("--jt-flag", action="append", default=[], metavar="NAME=VALUE",
                        help="Jittor: set jt.flags.NAME after import (repeatable), e.g. lazy_execution=0")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the workers (repeatable), e.g. use_mkl=0")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one worker from a config
    args = parser.parse_args(argv)
    if args.zoo and (args.measure or args.plot):
        parser.error("--measure and --plot are for the default run, not --zoo")
    args.models = args.models or (MODELS if args.zoo else DEFAULT_MODELS)
    args.measure = args.measure or MEASUREMENTS
    args.json = args.json or os.path.join(LOG_DIR, "bench_zoo.json" if args.zoo else "bench.json")
    if args.quick:
        args.repeats, args.min_repeats, args.steps = 2, 2, args.steps or 1
    if args.repeats < 1 or args.min_repeats < 1 or (args.steps is not None and args.steps < 1) or args.threads < 1:
        parser.error("--repeats, --min-repeats, --steps and --threads must be >= 1")
    return args


def measure_default(args, result, plan, env, jt_flags, workdir):
    """The data worker, then one worker per model and framework; False if the data worker failed."""
    machine = result["machine"]
    subset = os.path.join(workdir, "subset.npz")
    data = run_worker({"kind": "data", "plan": plan, "data_dir": args.data_dir, "subset": subset,
                       "augment_images": 2000 if args.quick else 50000}, workdir, env, "data (no framework)")
    if data is None:
        return False
    result["data"] = data
    machine["matmul_gflops"] = data["matmul_gflops"]["best"]
    peaks = {"nominal": machine["peak_gflops_nominal"], "matmul": machine["matmul_gflops"]}
    for model in args.models:
        entry = result["models"].setdefault(model, {"teacher": TEACHER_OF.get(model)})
        for fw in args.frameworks:
            cfg = {"kind": "model", "framework": fw, "model": model, "plan": plan, "subset": subset,
                   "measure": args.measure, "channels_last": args.channels_last,
                   "inference_mode": args.inference_mode, "jt_flags": jt_flags}
            record = entry[fw] = run_worker(cfg, workdir, env, f"{fw} {model}")
            if record:
                result["frameworks"][fw] = record["info"]
                flops = entry.setdefault("forward_flops_per_image", record["forward_flops_per_image"])
                if flops != record["forward_flops_per_image"]:  # the two models.py files must agree
                    print(f"warning: {fw} counts other FLOPs for {model}: {record['forward_flops_per_image']}")
    for model, entry in result["models"].items():
        flops = entry.get("forward_flops_per_image", {})
        entry["derived"] = {fw: derive(entry.get(fw), model, flops, peaks) for fw in args.frameworks}
    return True


def measure_zoo(args, result, plan, env, jt_flags, workdir, started):
    """--zoo: one inference worker per model and framework, a progress line per model."""
    for i, model in enumerate(args.models, 1):
        entry = result["models"][model] = {"num_classes": num_classes(model)}
        for fw in args.frameworks:
            cfg = {"kind": "zoo", "framework": fw, "model": model, "plan": plan, "channels_last": args.channels_last,
                   "inference_mode": args.inference_mode, "jt_flags": jt_flags}
            record = entry[fw] = run_worker(cfg, workdir, env, f"{fw} {model}")
            if record:
                result["frameworks"][fw] = record["info"]
                for key in ("params", "forward_flops_per_image"):  # the two models.py files must agree
                    if entry.setdefault(key, record[key]) != record[key]:
                        print(f"warning: {fw} counts another {key} for {model}: {record[key]} (not {entry[key]})")
        speeds = {fw: median_of(entry.get(fw), "eval") for fw in args.frameworks}
        both = all(speeds.get(fw) for fw in FRAMEWORKS)
        ratio = f", jittor/torch {speeds['jittor'] / speeds['torch']:.2f}" if both else ""
        print(f"\n[zoo {i}/{len(args.models)}] {model}: " + ", ".join(
            f"{fw} {'FAILED' if v is None else f'{v:.4g} images/s'}" for fw, v in speeds.items())
            + f"{ratio}; {time.perf_counter() - started:.0f}s so far", flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    key = README_KEY["zoo" if args.zoo else "default"]
    if args.readme:
        read_readme(args.readme, key)  # missing markers: stop now, not after the measurements
    started = time.perf_counter()
    plan = dict(repeats=args.repeats, steps=args.steps, min_repeats=args.min_repeats,
                min_repeat_s=args.min_repeat_s, max_seconds=args.max_seconds)
    env = thread_env(args.threads, parse_env_pairs(args.env, "--env"))
    jt_flags = parse_env_pairs(args.jt_flag, "--jt-flag")
    machine = {**cpu_info(args.threads), "python": platform.python_version(), "numpy": np.__version__,
               "load_average_start": os.getloadavg()[0]}  # other work on the CPU makes every figure noisy
    if machine["load_average_start"] > 0.5:
        print(f"warning: the CPU is busy (load average {machine['load_average_start']:.1f}): figures will be noisy "
              f"and slow; benchmark on a quiet machine", file=sys.stderr)
    result = {"machine": machine, "models": {}, "frameworks": {},
              "settings": {**plan, "threads": args.threads, "quick": args.quick, "zoo": args.zoo,
                           "batch_size": BATCH_SIZE, "eval_batch_size": EVAL_BATCH_SIZE,
                           "data_dir": None if args.zoo else os.path.abspath(args.data_dir),
                           "channels_last": args.channels_last, "inference_mode": args.inference_mode,
                           "jt_flags": jt_flags, "env": parse_env_pairs(args.env, "--env")}}
    workdir = tempfile.mkdtemp(prefix="kd-bench-")
    try:
        if args.zoo:
            measure_zoo(args, result, plan, env, jt_flags, workdir, started)
        elif not measure_default(args, result, plan, env, jt_flags, workdir):
            return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["seconds"] = time.perf_counter() - started
    machine["load_average_end"] = os.getloadavg()[0]
    if args.zoo:
        rows, header, keys, left = zoo_rows(result), ZOO_HEADER, ZOO_KEYS, 1
    else:
        rows, header, keys, left = table_rows(result), TABLE_HEADER, TABLE_KEYS, 3
    result["table"] = [dict(zip(keys, r)) for r in rows]
    print_header(result)
    print_table(rows, header, left, gap=not args.zoo)
    if not args.zoo:
        flops = {m: e["forward_flops_per_image"][m] for m, e in result["models"].items() if "forward_flops_per_image" in e}
        print("\nforward MFLOP per image (conv + linear): " + ", ".join(f"{m} {f / 1e6:.1f}" for m, f in flops.items()))
    print(f"total {result['seconds']:.0f}s")
    write_json(args.json, result)
    print(f"wrote {args.json}")
    if args.plot:
        plot(result, args.plot)
    failed = [f"{fw} {m}" for m, e in result["models"].items() for fw in args.frameworks if e.get(fw) is None]
    if args.readme and failed:
        print(f"{args.readme} not updated: {', '.join(failed)} failed", file=sys.stderr)
    elif args.readme:
        readme_rows = rows if args.zoo else table_rows(result, each_first_call=False)
        command = "python bench.py" + "".join(" " + shlex.quote(a) for a in argv)
        write_readme(args.readme, key, readme_block(result, readme_rows, header, left, command))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
