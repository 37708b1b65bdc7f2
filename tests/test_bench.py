"""bench.py end to end in --quick mode on the tiny dataset: the JSON has every figure, for both frameworks.

No timing is asserted (the machine may be busy); only that each figure exists, is finite and positive.
"""
import json
import math
import os
import subprocess
import sys

from conftest import ROOT

MODEL = "cifar10simple"  # a student: exercises the teacher forward and the KD / DKD steps too
SPEEDS = ["train_ce", "loop", "teacher_forward", "train_kd", "train_dkd", "eval"]


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_quick_json(tiny_data, tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(ROOT, "bench.py"), "--quick", "--models", MODEL,
           "--data-dir", tiny_data, "--json", str(out), "--plot", str(tmp_path / "bench.png")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
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
            m = record["measurements"][name]
            for key in ("median", "min", "max"):
                assert positive(m["images_per_s"][key]), (fw, name, key)
            assert m["images_per_s"]["min"] <= m["images_per_s"]["median"] <= m["images_per_s"]["max"]
            assert positive(m["first_call_s"]), (fw, name)
        assert positive(record["peak_rss_mib"]) and positive(record["import_s"])
        derived = entry["derived"][fw]
        for key in ("loop_ratio", "kd_overhead", "dkd_overhead", "train_ce_gflops", "train_ce_pct_peak"):
            assert positive(derived[key]), (fw, key)
    assert any(row["measurement"].startswith("train step CE") for row in result["table"])
    assert (tmp_path / "bench.png").stat().st_size > 0
