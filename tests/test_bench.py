"""bench.py end to end in --quick mode on the tiny dataset: the JSON has every figure, for both frameworks.

No timing is asserted (the machine may be busy); only that each figure exists, is finite and positive,
that the counts (repeats, parameters) are right, and that --readme writes between its markers only.
"""
import json
import math
import os
import subprocess
import sys
import time

from conftest import ROOT

import bench
from common.config import MODELS

MODEL = "cifar10simple"  # a student: exercises the teacher forward and the KD / DKD steps too
SPEEDS = ["train_ce", "loop", "teacher_forward", "train_kd", "train_dkd", "eval"]
ZOO_MODELS = ["cifar10simple", "resnet20"]  # --zoo: a CIFAR-10 model (10 classes), a small CIFAR-100 one (100)
README = """# Title

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


def check_speed(m):
    for key in ("median", "min", "max"):
        assert positive(m["images_per_s"][key]), key
    assert m["images_per_s"]["min"] <= m["images_per_s"]["median"] <= m["images_per_s"]["max"]
    assert positive(m["first_call_s"])


def block(text, key):
    start, end = f"<!-- report:{key}:start -->\n", f"\n<!-- report:{key}:end -->"
    return text[text.index(start) + len(start):text.index(end)]


def check_header(line, command):
    assert line.startswith("Measured ") and f"`python bench.py {command}" in line, line
    for word in ("cores", " in each framework", f"torch {torch_version()}", "jittor 1.", "load average"):
        assert word in line, (word, line)


def torch_version():
    import torch
    return torch.__version__


def test_bench_quick_json(tiny_data, tmp_path):
    out, readme = tmp_path / "bench.json", tmp_path / "README.md"
    readme.write_text(README)
    proc = run_bench("--quick", "--models", MODEL, "--data-dir", tiny_data, "--json", out,
                     "--plot", tmp_path / "bench.png", "--readme", readme)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())

    assert positive(result["data"]["load_s"]["median"])
    assert positive(result["data"]["augment"]["images_per_s"]["median"])
    assert positive(result["data"]["matmul_gflops"]["best"])
    assert positive(result["machine"]["peak_gflops_nominal"])

    entry = result["models"][MODEL]
    assert entry["teacher"] == "cifar10quick"
    assert positive(entry["forward_flops_per_image"][MODEL]) and positive(entry["forward_flops_per_image"]["cifar10quick"])
    for fw in ("torch", "jittor"):
        record = entry[fw]
        assert record["framework"] == fw and record["info"]["threads"] == result["settings"]["threads"]
        for name in SPEEDS:
            check_speed(record["measurements"][name])
            assert record["measurements"][name]["repeats"] == 2, name  # --quick: tiny repeats
        assert positive(record["peak_rss_mib"]) and positive(record["import_s"])
        derived = entry["derived"][fw]
        for key in ("loop_ratio", "kd_overhead", "dkd_overhead", "train_ce_gflops", "train_ce_pct_peak"):
            assert positive(derived[key]), (fw, key)
    assert any(row["measurement"].startswith("train step CE") for row in result["table"])
    assert (tmp_path / "bench.png").stat().st_size > 0

    # --readme: the default block is replaced, everything else is left as it was
    text = readme.read_text()
    assert text.replace(block(text, "bench-default"), "old default table") == README
    header, _, table = block(text, "bench-default").partition("\n\n")
    check_header(header, "--quick --models cifar10simple")
    lines = table.splitlines()
    assert lines[0].startswith("| model | measurement |") and lines[1].startswith("|---|")
    assert any(line.startswith(f"| {MODEL} | train step CE") for line in lines)
    assert any("first calls, all measurements summed" in line for line in lines)
    assert not any("first call: " in line for line in lines)  # summed in the README, one row each in the JSON
    assert any(row["measurement"] == "first call: train_ce" for row in result["table"])


def test_bench_zoo_quick(tmp_path):
    """--zoo needs no dataset: a forward per model and framework, parameters and FLOPs, the zoo block."""
    out, readme = tmp_path / "zoo.json", tmp_path / "README.md"
    readme.write_text(README)
    proc = run_bench("--zoo", "--quick", "--models", *ZOO_MODELS, "--json", out, "--readme", readme)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    for i, model in enumerate(ZOO_MODELS, 1):  # a progress line per model
        assert f"[zoo {i}/{len(ZOO_MODELS)}] {model}: torch " in proc.stdout
    result = json.loads(out.read_text())
    assert result["settings"]["zoo"] and list(result["models"]) == ZOO_MODELS

    from torch_ import models
    for model in ZOO_MODELS:
        entry = result["models"][model]
        classes = 10 if model in bench.DEFAULT_MODELS else 100
        expected = sum(p.numel() for p in models.build_model(model, num_classes=classes).parameters())
        assert entry["num_classes"] == classes and entry["params"] == expected
        flops = entry["forward_flops_per_image"][model]
        assert positive(flops)
        for fw in ("torch", "jittor"):
            record = entry[fw]
            assert record["params"] == expected, fw  # Jittor's count leaves BatchNorm's running statistics out
            assert record["forward_flops_per_image"][model] == flops, fw
            assert set(record["measurements"]) == {"eval"}
            m = record["measurements"]["eval"]
            check_speed(m)
            assert (m["repeats"], m["steps"]) == (2, 1)  # --quick: tiny repeats
            assert record["info"]["threads"] == result["settings"]["threads"]
        speeds = [entry[fw]["measurements"]["eval"]["images_per_s"]["median"] for fw in ("torch", "jittor")]
        row = next(r for r in result["table"] if r["model"] == model)
        assert row["classes"] == str(classes) and row["jittor_over_torch"] == f"{speeds[1] / speeds[0]:.2f}"
        assert row["mflops_per_image"] == f"{flops / 1e6:.1f}" and row["params_m"] == f"{expected / 1e6:.2f}"

    text = readme.read_text()
    assert text.replace(block(text, "bench-zoo"), "old zoo table") == README
    header, _, table = block(text, "bench-zoo").partition("\n\n")
    check_header(header, "--zoo --quick --models")
    lines = table.splitlines()
    assert lines[0].startswith("| model | classes | params (M) | MFLOPs/image |")
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {m}" for m in ZOO_MODELS]


def test_bench_readme_markers_missing(tmp_path):
    """No markers (or no file): a clear error before any measurement, the file untouched."""
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("<!-- report:bench-zoo:end -->", ""))
    proc = run_bench("--zoo", "--quick", "--models", "cifar10simple", "--json", tmp_path / "zoo.json",
                     "--readme", readme)
    assert proc.returncode != 0
    assert "markers missing" in proc.stderr and "<!-- report:bench-zoo:end -->" in proc.stderr, proc.stderr
    assert "===" not in proc.stdout and not (tmp_path / "zoo.json").exists()  # nothing was measured
    assert readme.read_text() == README.replace("<!-- report:bench-zoo:end -->", "")

    proc = run_bench("--quick", "--readme", tmp_path / "nothing.md", "--json", tmp_path / "bench.json")
    assert proc.returncode != 0 and "no such file" in proc.stderr, proc.stderr
    assert not (tmp_path / "bench.json").exists()


def test_default_models_and_plan():
    """The default run keeps to the four CIFAR-10 models however MODELS grows; --zoo takes all."""
    assert bench.parse_args([]).models == ["cifar10quick", "cifar10simple", "resnet32x4", "resnet8x4"]
    assert bench.parse_args(["--zoo"]).models == MODELS
    assert bench.parse_args(["--zoo"]).json.endswith("bench_zoo.json")
    # a slow model (ResNet50 on 2 cores: seconds per batch of 500): one step per repeat, --min-repeats repeats
    plan = bench.Plan(repeats=5, steps=None, min_repeats=3, min_repeat_s=0.5, max_seconds=12.0)
    assert plan.steps_for(6.0) == 1 and plan.repeats_for(6.0) == 3
    assert plan.steps_for(0.1) == 5 and plan.repeats_for(0.5) == 5  # a fast one: all repeats, several steps

    calls = []
    slow = lambda: (calls.append(1), time.sleep(0.01))
    plan = bench.Plan(repeats=2, steps=1, min_repeats=2, min_repeat_s=0.0, max_seconds=100.0)
    r = bench.time_calls(slow, 1, plan)
    assert (len(calls), r["warmup_calls"], r["repeats"]) == (4, 1, 2)  # first call, warm-up, 2 timed
    calls.clear()
    r = bench.time_calls(slow, 1, plan, warmup_below=0.005)  # --zoo: a slow first call, no warm-up
    assert (len(calls), r["warmup_calls"], r["repeats"]) == (3, 0, 2)
