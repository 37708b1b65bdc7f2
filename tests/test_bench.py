"""bench.py: the stages' own steps are what it times, both frameworks side by side, ratios that are
jittor/torch of the printed figures, the docs block written between its markers only, clear errors.

No speed is asserted (the machine may be busy): only that every figure exists, is finite and positive,
that the counts are right, and that the numbers printed agree with one another.
"""
import importlib
import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

import bench
from common.config import EVAL_BATCH_SIZE, FRAMEWORKS, MODELS

pytestmark = pytest.mark.slow  # every test here runs stages, launchers or a benchmark

STUDENT, TEACHER = "cifar10simple", "cifar10quick"  # a student runs the teacher forward and the KD / DKD steps
DEFAULT_MEASUREMENTS = ["train", "loop", "teacher_fwd", "kd", "dkd", "eval"]
ZOO_MODELS = ["cifar10simple", "resnet20"]  # a CIFAR-10 model (10 classes), a small CIFAR-100 one (100)
DOCS = """# Speed

Text before.

<!-- report:bench-default:start -->
old default table
<!-- report:bench-default:end -->

Text between.

<!-- report:bench-zoo:start -->
old zoo table
<!-- report:bench-zoo:end -->

Text after.
"""


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def run_bench(*args):
    cmd = [sys.executable, os.path.join(ROOT, "bench.py"), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def block(text, key):
    start, end = f"<!-- report:{key}:start -->\n", f"\n<!-- report:{key}:end -->"
    return text[text.index(start) + len(start):text.index(end)]


def markdown_rows(text):
    """The data rows of the Markdown tables in text, as lists of cells."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|--") and not line.startswith("| model ")]


def median_of(cell):
    return cell.split(" [")[0]


def interval(printed):
    """The values a printed number stands for: +- half a unit of its last digit ("1.048e+04" too)."""
    mantissa, _, exponent = printed.partition("e")
    half = 0.5 * 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))
    return float(printed) - half, float(printed) + half


def check_ratio(ratio, torch_printed, jittor_printed):
    """ratio (2 decimals) is jittor/torch of the two figures as printed, to their precision."""
    (t_lo, t_hi), (j_lo, j_hi) = interval(torch_printed), interval(jittor_printed)
    assert j_lo / t_hi - 0.005 <= float(ratio) <= j_hi / t_lo + 0.005, (ratio, torch_printed, jittor_printed)


def check_figure(m, repeats):
    assert positive(m["first_call_s"]) and len(m["samples"]) == repeats
    assert all(positive(s) for s in m["samples"]) and m["min"] <= m["median"] <= m["max"]


def test_quick_default_run(tiny_data, tmp_path):
    out, docs = tmp_path / "bench.json", tmp_path / "speed.md"
    docs.write_text(DOCS)
    proc = run_bench("--quick", "--models", STUDENT, "--data-dir", tiny_data, "--json", out, "--write-docs", docs)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert positive(result["data"]["matmul_gflops"]["best"]) and positive(result["data"]["augment"]["median"])
    assert positive(result["data"]["load_s"]["median"]) and result["data"]["source"].startswith("CIFAR-10")

    entry = result["models"][STUDENT]
    for fw in FRAMEWORKS:
        assert entry["frameworks"][fw]["measurements"] == DEFAULT_MEASUREMENTS
    assert set(entry["measurements"]) == set(DEFAULT_MEASUREMENTS)  # (the JSON's keys are sorted)
    assert positive(entry["flops"][STUDENT]) and positive(entry["flops"][TEACHER])
    for fw in FRAMEWORKS:
        info = entry["frameworks"][fw]
        assert info["threads"] == result["settings"]["threads"] and info["teacher"] == TEACHER
        assert positive(info["peak_rss_mib"]) and positive(info["import_s"]) and info["flops"] == entry["flops"]
    for name, m in entry["measurements"].items():
        assert set(m) == set(FRAMEWORKS), name  # both frameworks, every measurement
        for fw in FRAMEWORKS:
            check_figure(m[fw], repeats=2)  # --quick: 2 repeats
        line = re.search(rf"\] {name}: torch (\S+) img/s, jittor (\S+) img/s, jittor/torch (\S+);", proc.stdout)
        assert line, f"no progress line for {name}"  # a progress line per measurement, with the ratio
        check_ratio(line[3], line[1], line[2])

    # --write-docs: the default block is replaced, everything else is left as it was
    text = docs.read_text()
    assert text.replace(block(text, "bench-default"), "old default table") == DOCS
    header, _, tables = block(text, "bench-default").partition("\n\n")
    assert header.startswith("Measured ") and f"`python bench.py --quick --models {STUDENT}" in header
    for word in ("threads in each framework", "torch 2.", "jittor 1.", "load average", "numpy float32 matmul"):
        assert word in header, word
    rows = markdown_rows(tables)
    speeds = [r for r in rows if len(r) == 9]
    assert speeds[0][0] == STUDENT and all(r[0] == "" for r in speeds[1:])  # the model's name once
    for row, name in zip(speeds, DEFAULT_MEASUREMENTS):  # jittor/torch of the figures printed beside them
        m = entry["measurements"][name]
        assert row[1] == bench.LABELS[name].format(b=bench.BATCH_SIZE, e=EVAL_BATCH_SIZE, t=TEACHER)
        assert row[4] == f"{m['jittor']['median'] / m['torch']['median']:.2f}", name
        check_ratio(row[4], median_of(row[2]), median_of(row[3]))
        if name != "loop":  # the first calls, apart from the steady state (train_one_epoch runs warm)
            check_ratio(row[7], row[5], row[6])
    derived = {r[1]: r for r in speeds[len(DEFAULT_MEASUREMENTS):]}
    assert set(derived) == {"train_one_epoch / train_step (target >= 0.9)", "KD step / (CE step + teacher fwd)",
                            "DKD step / (CE step + teacher fwd)"}
    for r in derived.values():
        check_ratio(r[4], r[2], r[3])
    ms = {name: {fw: m[fw]["median"] for fw in FRAMEWORKS} for name, m in entry["measurements"].items()}
    kd = (1 / ms["kd"]["torch"]) / (1 / ms["train"]["torch"] + 1 / ms["teacher_fwd"]["torch"])
    assert derived["KD step / (CE step + teacher fwd)"][2] == f"{kd:.3g}"
    model_row = next(r for r in rows if len(r) == 6)
    assert model_row[:4] == [STUDENT, "10", "0.15", f"{entry['flops'][STUDENT] / 1e6:.1f}"]


def test_quick_zoo_on_random_images(tmp_path):
    """--zoo: the same path, eval alone; no dataset needed (random images, said so); the zoo block."""
    out, docs = tmp_path / "zoo.json", tmp_path / "speed.md"
    docs.write_text(DOCS)
    proc = run_bench("--zoo", "--quick", "--models", *ZOO_MODELS, "--data-dir", tmp_path, "--json", out,
                     "--write-docs", docs)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    for i, model in enumerate(ZOO_MODELS, 1):  # progress lines per model
        assert f"[{i}/{len(ZOO_MODELS)} {model}] eval: torch " in proc.stdout
    result = json.loads(out.read_text())
    assert result["settings"]["zoo"] and set(result["models"]) == set(ZOO_MODELS)
    assert result["data"]["source"].startswith("random uint8 images") and result["data"]["load_s"] is None

    from torch_ import models
    for model in ZOO_MODELS:
        entry = result["models"][model]
        classes = 10 if model in bench.DEFAULT_MODELS else 100
        expected = sum(p.numel() for p in models.build_model(model, num_classes=classes).parameters())
        assert entry["classes"] == classes and list(entry["measurements"]) == ["eval"]
        for fw in FRAMEWORKS:  # Jittor's count leaves BatchNorm's running statistics out, as torch's
            assert entry["frameworks"][fw]["params"] == expected and entry["frameworks"][fw]["teacher"] is None
            m = entry["measurements"]["eval"][fw]
            assert (m["steps"], len(m["samples"])) == (1, 2)  # --quick: 2 repeats of 1 step

    text = docs.read_text()
    assert text.replace(block(text, "bench-zoo"), "old zoo table") == DOCS
    header, _, tables = block(text, "bench-zoo").partition("\n\n")
    assert "random uint8 images" in header and "`python bench.py --zoo --quick" in header
    rows = markdown_rows(tables)
    assert [r[0] for r in rows if len(r) == 9] == ZOO_MODELS  # one row per model
    assert [r[:2] for r in rows if len(r) == 6] == [[m, str(result["models"][m]["classes"])] for m in ZOO_MODELS]


def test_docs_markers_missing(tmp_path):
    """No markers, or no file: a one-line error before any measurement, the file untouched."""
    docs = tmp_path / "speed.md"
    broken = DOCS.replace("<!-- report:bench-zoo:end -->", "")
    docs.write_text(broken)
    proc = run_bench("--zoo", "--quick", "--models", STUDENT, "--json", tmp_path / "zoo.json", "--write-docs", docs)
    assert proc.returncode != 0 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "markers missing" in proc.stderr and "<!-- report:bench-zoo:end -->" in proc.stderr
    assert "[data]" not in proc.stdout and not (tmp_path / "zoo.json").exists()  # nothing was measured
    assert docs.read_text() == broken

    proc = run_bench("--quick", "--write-docs", tmp_path / "nothing.md", "--json", tmp_path / "bench.json")
    assert proc.returncode != 0 and "no such file" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize("args, message", [(["--models", "resnet9000"], "unknown model 'resnet9000'"),
                                           (["--repeats", "0"], "must be at least 1")])
def test_bad_input(args, message):
    proc = run_bench(*args)
    assert proc.returncode != 0 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "[data]" not in proc.stdout


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_times_the_stages_own_steps(framework, monkeypatch):
    """The Worker calls the engine's train_step (counted here), with the engine's optimizer and the config
    records the stages build (common.config.build_config)."""
    engine = importlib.import_module(f"{framework}_.engine")
    calls = []
    real_step, real_optimizer = engine.train_step, engine.make_optimizer
    # train_one_epoch looks train_step up in the engine module too, so the loop's steps are counted as well
    monkeypatch.setattr(engine, "train_step", lambda *a: calls.append(("step", a)) or real_step(*a))
    monkeypatch.setattr(engine, "make_optimizer", lambda *a: calls.append(("optimizer", a)) or real_optimizer(*a))
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (512, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 512)

    worker = bench.Worker(framework, TEACHER, images, labels, {"zoo": False, "steps": 1})
    config = worker.configs["ce"]
    assert calls == [("optimizer", (worker.model, config))]
    assert (config.stage, config.method, config.lr, config.momentum) == ("teacher", "ce", 0.01, 0.9)
    assert worker.info()["measurements"] == ["train", "loop", "eval"]
    calls.clear()
    assert worker.first("train")["steps"] == 1 and positive(worker.repeat("train"))
    assert [c[0] for c in calls] == ["step"] * 3  # the first call, a warm-up, one timed step
    assert all(a[0] is worker.model and a[1] is None and a[2] is worker.optimizer for _, a in calls)
    calls.clear()
    worker.first("loop")  # the engine's train_one_epoch, which calls the same train_step
    assert [c[0] for c in calls] == ["step"]  # --quick: an epoch of one batch

    worker = bench.Worker(framework, STUDENT, images, labels, {"zoo": False, "steps": 1})
    assert worker.info()["measurements"] == DEFAULT_MEASUREMENTS and worker.teacher_arch == TEACHER
    for method in ("train", "kd", "dkd"):
        calls.clear()
        worker.first(method)
        worker.repeat(method)
        assert [c[0] for c in calls] == ["step"] * 3, method
        for _, (student, teacher, optimizer, _, _, config) in calls:
            assert student is worker.model and optimizer is worker.optimizer
            assert (teacher is None, config.method, config.stage) == (
                (True, "ce", "student") if method == "train" else (False, method, "student"))
            assert teacher is None or teacher is worker.teacher


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_timed_step_is_the_engines_step(framework):
    """One 'train' call, then one 'kd' call, of the Worker moves the student's weights exactly as the engine's
    train_step does on a fresh copy with the same batch: bench times the real step, not a copy of its own."""
    load = lambda name: importlib.import_module(f"{framework}_.{name}")
    engine, models = load("engine"), load("models")
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (512, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 512)
    worker = bench.Worker(framework, STUDENT, images, labels, {"zoo": False, "steps": 1})
    x, y = next(worker.batches)
    worker.batches = itertools.repeat((x, y))  # every call steps on this one batch
    model, teacher = worker.build(STUDENT), worker.build(TEACHER).eval()  # seed 0, as the Worker's
    optimizer = engine.make_optimizer(model, worker.configs["ce"])
    before = models.get_state(worker.model)
    assert all(np.array_equal(v, models.get_state(model)[k]) for k, v in before.items())
    worker.model.train()
    model.train()
    for name, method, step_teacher in (("train", "ce", None), ("kd", "kd", teacher)):
        worker.call(name)
        engine.train_step(model, step_teacher, optimizer, x, y, worker.configs[method])
        after, expected = models.get_state(worker.model), models.get_state(model)
        assert any(not np.array_equal(after[k], before[k]) for k in before), name  # the step trained the model
        for k in expected:
            np.testing.assert_allclose(after[k], expected[k], rtol=1e-6, atol=1e-7, err_msg=f"{name}: {k}")
        before = after


def test_models_and_their_teachers():
    assert bench.DEFAULT_MODELS == ["cifar10quick", "cifar10simple", "resnet32x4", "resnet8x4"] == MODELS[:4]
    assert bench.TEACHER_OF[STUDENT] == TEACHER and bench.TEACHER_OF["resnet8x4"] == "resnet32x4"
    assert TEACHER not in bench.TEACHER_OF  # a teacher times the teacher stage's step
    # a nominal peak only where the CPU model names the part; CPU flags alone say nothing of the FMA units
    assert bench.nominal_peak("AMD EPYC", 2) is None
    assert bench.nominal_peak("Intel(R) Xeon(R) CPU @ 2.20GHz", 2) is None  # which Xeon is not said
    assert bench.nominal_peak("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", 2) == pytest.approx(2 * 2.9 * 64)


def test_first_calls_then_alternating_repeats(monkeypatch):
    """measure_model: every first call before the timed repeats, then repeats in alternating order
    (torch-jittor, jittor-torch, ...), fewer (MIN_REPEATS) when a repeat is slow; medians per framework."""
    log = []

    class FakeWorkerProcess:  # stands for a worker process: answers remote(method, ...) calls
        def submit(self, fn, method, *args):
            self.fw = args[0] if method == "init" else self.fw
            log.append((self.fw, method, args[0] if method in ("first", "repeat") else None))
            slow = args[0] == "eval" if args else False
            value = {"init": {"measurements": ["train", "eval"]},
                     "first": {"first_call_s": 1.0, "repeat_s": 5.0 if slow else 0.1, "steps": 1},
                     "repeat": {"torch": 100.0, "jittor": 50.0}.get(self.fw),
                     "end": {"flops": {STUDENT: 7}, "peak_rss_mib": 1.0}}[method]
            return type("Done", (), {"result": lambda self: value})()

        def shutdown(self, **kw):
            pass

    monkeypatch.setattr(bench, "spawn", FakeWorkerProcess)
    args = type("Args", (), dict(zoo=False, steps=None, repeats=4, min_repeats=3))
    entry = bench.measure_model(STUDENT, {"images": None, "labels": None}, args, "[test]", 0.0)
    assert [(fw, method) for fw, method, _ in log[:2]] == [("torch", "init"), ("jittor", "init")]
    t, j = FRAMEWORKS
    for name, repeats in (("train", 4), ("eval", 3)):  # eval: 5 s a repeat, 12 s at most -> 3 repeats
        calls = [(fw, method) for fw, method, n in log if n == name]
        pairs = [(t, "repeat"), (j, "repeat"), (j, "repeat"), (t, "repeat")] * (repeats // 2)
        assert calls == [(t, "first"), (j, "first")] + pairs + [(t, "repeat"), (j, "repeat")] * (repeats % 2)
        m = entry["measurements"][name]
        assert (m[t]["median"], m[j]["median"], len(m[j]["samples"])) == (100.0, 50.0, repeats)
    assert entry["flops"] == {STUDENT: 7} and "failed" not in entry


def test_profile_quick():
    """--profile: both frameworks' step of the teacher, in ms per step by kernel group (the same rows for both),
    through common.tables; each framework's groups add up to its profiled wall time."""
    proc = run_bench("--profile", "--quick")
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert f"{TEACHER}'s train_step over 2 steps" in proc.stdout and "torch " in proc.stdout
    number = r"([\d.]+)\s+(\d+)%"
    rows = {m[1]: (float(m[2]), float(m[4])) for m in
            re.finditer(rf"^(\S.*?)\s{{2,}}{number}\s+{number}\s+\S+$", proc.stdout, re.M)}
    groups = [bench.CONV, bench.MATMUL, bench.NORM_POOL, bench.OTHER, bench.REST]
    assert set(groups) <= set(rows), rows
    for i, fw in enumerate(("torch", "jittor")):  # the groups found their kernels: convolutions, BN and pool, the rest
        assert rows[bench.CONV][i] > 0 and rows[bench.NORM_POOL][i] > 0 and rows[bench.OTHER][i] > 0, fw
        assert abs(sum(rows[g][i] for g in groups) - rows["wall time, profiler on"][i]) <= 0.1 * len(groups), fw


def test_quick_data_parallel(tmp_path):
    """--data-parallel: per framework, the stage's loop on 1 process and on 2 (torchrun, mpirun), the
    ratio of the two as printed, the gradient's size, and the block between its own markers."""
    docs = tmp_path / "speed.md"
    docs.write_text(DOCS + "\n<!-- report:bench-dp:start -->\nold dp table\n<!-- report:bench-dp:end -->\n")
    proc = run_bench("--data-parallel", "--quick", "--models", STUDENT, "--threads", 2, "--write-docs", docs)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    text = docs.read_text()
    assert block(text, "bench-default") == "old default table"  # only its own block changed
    header, _, body = block(text, "bench-dp").partition("\n\n")
    assert "`python bench.py --data-parallel --quick" in header
    rows = [r for r in markdown_rows(body) if r[0] != "framework"]
    assert [r[:2] for r in rows] == [[fw, STUDENT] for fw in FRAMEWORKS]
    from torch_ import models
    gradient_mb = 4 * sum(p.numel() for p in models.build_model(STUDENT).parameters()) / 1e6
    for fw, arch, one, two, ratio, mb, reduce_ms, share in rows:
        assert positive(float(one)) and positive(float(two)) and positive(float(reduce_ms))
        (o_lo, o_hi), (t_lo, t_hi) = interval(one), interval(two)
        assert t_lo / o_hi - 0.005 <= float(ratio) <= t_hi / o_lo + 0.005
        assert float(mb) == round(gradient_mb, 1) and share.endswith("%")
