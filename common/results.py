"""One result record per run: log/<name>/<framework>/result.json, what run_all.py and report.py read.

A training stage writes it when it ends (finished, or diverged at some epoch); test.py adds the test
metrics to it. The record of a run:

    {"name", "framework", "stage", "epochs" (trained), "finished": bool,
     "diverged": null | {"epoch": N (1-based), "error": "..."},
     "final": {"val/top1": ..., "train/loss": ...}, "best_val_top1", "seconds": {"data", "train", "eval"},
     "config": {...} (the resolved config, common.config.resolve),
     "test": null | test.py's metrics of this framework's checkpoint,
     "test_from": {"<other framework>": test.py's metrics of the other framework's checkpoint}}

The curves (per-epoch values) are in the TensorBoard event files beside it, not here.
"""
import json
import os

from common.files import write_json
from common.paths import LOG_DIR

RESULT_FILE = "result.json"


def run_dir(name, framework):
    return os.path.join(LOG_DIR, name, framework)


def result_path(name, framework):
    return os.path.join(run_dir(name, framework), RESULT_FILE)


def read_result(name, framework):
    """The run's record, or None when it has none (never trained to the end, never tested)."""
    return read_result_file(result_path(name, framework))


def read_result_file(path):
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def empty_result(name, framework):
    return {"name": name, "framework": framework, "stage": None, "epochs": 0, "finished": False, "diverged": None,
            "final": {}, "best_val_top1": None, "seconds": {}, "config": {}, "test": None, "test_from": {}}


def training_result(config, framework, stage, history, best_top1, diverged=None, ran_on=()):
    """The record a training stage writes at its end: finished, or diverged ({"epoch", "error"}); ran_on: where its
    epochs ran (common.checkpoint.ran_on_here)."""
    last = history[-1] if history else {}
    return dict(empty_result(config["name"], framework), stage=stage, epochs=len(history), finished=diverged is None,
                diverged=diverged, final={k: last[k] for k in last if k.startswith(("val/", "train/"))},
                best_val_top1=best_top1, config=config, ran_on=list(ran_on),
                seconds={part: sum(h[f"time/{part}"] for h in history) for part in ("data", "train", "eval")})


def write_result(record):
    """Replace the run's record (a new training result: any test of the earlier weights goes with it)."""
    path = result_path(record["name"], record["framework"])
    write_json(path, record)
    return path


def add_test(name, framework, ckpt_framework, metrics):
    """test.py: the metrics of a checkpoint, into the record of its run in this framework's folder
    ("test" for this framework's checkpoint, "test_from"[other] for the other's). Returns the path."""
    record = read_result(name, framework) or empty_result(name, framework)
    if ckpt_framework == framework:
        record["test"] = metrics
    else:
        record["test_from"][ckpt_framework] = metrics
    return write_result(record)
