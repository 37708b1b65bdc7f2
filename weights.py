"""The distillation weights of the repo's own pair (CIFAR10Quick -> CIFAR10Simple), by one rule for every method.

    python weights.py                      # step 1: each method's push at step 1 and the capped weights
    python weights.py --grid               # step 2 too: 3 quick-preset students per capped method, on validation
    python weights.py --dot-grid           # DOT's delta: 3 full-preset KD students, on validation

mdistiller's weights are set for ResNets with BatchNorm on CIFAR-100; on the BN-free, activation-free
CIFAR10Simple several of them blow the student up within a few epochs (docs/distillers.md). The rule, the
same for every method with a teacher:
1. The push at step 1: rho = |grad of the distillation terms| / |grad of the CE term| over the student's
   parameters, with the method's mdistiller weights, the student at its seed-0 initial weights in training
   mode, the trained teacher (make run's, seed 0) in eval mode, on the first 64 images of the student's
   training split (normalised, not augmented). KD under mdistiller's weights (0.9 KD against 0.1 CE, T 4)
   is the yardstick: it trains stably on this pair and on mdistiller's. A method that pushes harder than KD
   is scaled down to KD's push, s = rho_KD / rho; one that pushes less keeps mdistiller's weights (s = 1).
2. For each method the cap scaled: a 3-point grid s/3, s, 3s, the quick preset's student (torch, seed 0)
   at each, and the one with the best validation top-1 (the held-out training images, never the test set)
   among those that did not diverge. Every distillation weight of the method is multiplied by the chosen
   factor (RKD's two keep their ratio) and rounded to 2 significant digits.
common/config.py's OWN_PAIR_WEIGHTS holds the result; --mdistiller-weights brings mdistiller's back.

DOT's delta, the same way (step 2 only: DOT adds no loss term to push): mdistiller's 0.075 and its thirds,
0.025 / 0.05 / 0.075, a KD student (torch, seed 0) at each, and the one with the best validation top-1 among
those that did not diverge, a tie going to the larger delta. The grid runs at the full preset's length with its
teacher (seed 0), because that is where 0.075 diverges (epoch 12, just after the KD warm-up): the quick preset's
student (250 images, 240 steps) trains at 0.075 and never reaches that point. common/config.py's OWN_PAIR_DOT_DELTA holds it.
"""
import argparse
import math
import os
import subprocess
import sys

import numpy as np

from common.batches import normalise
from common.config import (add_data_dir, build_config, flag_name, MDISTILLER_DOT_DELTA, own_pair_methods, SPLIT_SEED,
                           weight_fields)
from common.datasets import load_dataset, split_indices
from common.errors import die, UserError
from common.results import read_result
import torch

from torch_ import device as td, engine
from torch_.distillers import METHODS

GRID = (1 / 3, 1.0, 3.0)
DOT_GRID = tuple(round(MDISTILLER_DOT_DELTA * k / 3, 4) for k in (1, 2, 3))  # 0.025, 0.05, 0.075
BATCH = 64
YARDSTICK = "kd"


def first_batch(data_dir):
    """The first 64 images of the quick preset's student training split, normalised, and their labels."""
    preset = build_config("student", METHODS, method=YARDSTICK, preset="quick")
    data = load_dataset("cifar10", data_dir)
    train, _ = split_indices(len(data["train_y"]), preset.train_size, preset.val_size, SPLIT_SEED)
    index = train[:BATCH]
    return (torch.from_numpy(normalise(data["train_x"][index], "cifar10")),
            torch.from_numpy(data["train_y"][index].astype(np.int64)))


def step_one_push(method, teacher, images, labels, **settings):
    """rho: |grad of the distillation terms| / |grad of the weighted CE term| over the student's parameters. settings:
    config fields (the data a setup reads: CRD's split, for its memory rows)."""
    config = build_config("student", METHODS, method=method, mdistiller_weights=True, **settings)
    device = td.select_device("cpu")
    student = engine.build(config, device)
    student.train()
    extra = METHODS[method].setup(config, student, teacher, device)
    with torch.no_grad():
        out_teacher = engine.forward(teacher, images, METHODS[method].features)
    out = engine.forward(student, images, METHODS[method].features)
    terms = METHODS[method].terms(out, out_teacher, labels, config, 1.0, dict(extra, index=np.arange(len(labels))))
    params = list(student.parameters())

    def norm(loss):
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))

    return norm(sum(v for k, v in terms.items() if k != "ce")) / norm(terms["ce"])


def scaled(method, scale):
    """The method's distillation weights (mdistiller's, resolved for the own pair) times scale, 2 significant digits."""
    config = build_config("student", METHODS, method=method, mdistiller_weights=True)
    return {key: float(f"{getattr(config, key) * scale:.2g}") for key in weight_fields(METHODS, method)}


def grid_run(method, weights, args, tag, preset="quick", teacher=None):
    """A student of `method` with these settings ({config field: value}; torch, seed 0, the quick preset and
    --teacher unless given): its best validation top-1, or None if it diverged."""
    name = f"weights/{method}_{tag}"
    record = read_result(name, "torch")
    flags = [f"{flag_name(k)}={v}" for k, v in weights.items()]
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_", "train_student.py"),
           "--method", method, "--preset", preset, "--teacher", teacher or args.teacher, "--data-dir", args.data_dir,
           "--name", name, *flags] + (["--resume"] if args.resume and record else [])
    if not (args.resume and record and (record["finished"] or record["diverged"])):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode not in (0, 3):
            raise UserError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        record = read_result(name, "torch")
    return None if record["diverged"] else record["best_val_top1"]


def dot_grid(args):
    """DOT's delta on the own pair: {delta: best validation top-1 or None}, and the chosen delta (None: all diverged)."""
    grid = {}
    for delta in DOT_GRID:
        grid[delta] = grid_run(YARDSTICK, dict(dot=delta), args, f"dot{delta:g}", "full", args.dot_teacher)
        print(f"dot {delta:g}: best val top-1 {grid[delta]}", flush=True)
    trained = {d: top1 for d, top1 in grid.items() if top1 is not None}
    chosen = max(trained, key=lambda d: (trained[d], d)) if trained else None
    print(f"OWN_PAIR_DOT_DELTA = {chosen}")
    return grid, chosen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=own_pair_methods(METHODS),
                        help="methods to weigh (default: every method with a teacher that trains the own pair)")
    parser.add_argument("--grid", action="store_true", help="step 2: train the 3-point grid on the validation split")
    parser.add_argument("--teacher", default="ckpt/quick/teacher_s0_torch.ckpt",
                        help="the grid's teacher (default: make run's, seed 0)")
    parser.add_argument("--dot-grid", action="store_true",
                        help=f"instead: DOT's delta, KD students with --dot {' / '.join(f'{d:g}' for d in DOT_GRID)} "
                             "at the full preset's length, on the validation split")
    parser.add_argument("--dot-teacher", default="ckpt/full/teacher_s0_torch.ckpt",
                        help="the DOT grid's teacher (default: the full run's, seed 0)")
    parser.add_argument("--resume", action="store_true", help="the grid keeps the runs it has finished")
    add_data_dir(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.dot_grid:
        if not os.path.isfile(args.dot_teacher):
            raise UserError(f"--dot-teacher {args.dot_teacher}: no such checkpoint; `python run_all.py --preset full` "
                            "trains it (ckpt/full/teacher_s0_*)")
        return dot_grid(args)
    if not os.path.isfile(args.teacher):
        raise UserError(f"--teacher {args.teacher}: no such checkpoint; make run trains it (ckpt/quick/teacher_s0_*)")
    images, labels = first_batch(args.data_dir)
    teacher, _ = engine.load_teacher(args.teacher, td.select_device("cpu"), dataset="cifar10")
    push = {method: step_one_push(method, teacher, images, labels, data_dir=args.data_dir)
            for method in [YARDSTICK, *args.methods]}
    rows = {}
    for method in args.methods:
        scale = min(1.0, push[YARDSTICK] / push[method])
        row = rows[method] = dict(rho=push[method], scale=scale, weights=scaled(method, scale), grid={})
        print(f"{method:7s} rho {push[method]:9.4g}  scale {scale:9.4g}  {row['weights']}", flush=True)
        if args.grid and scale < 1.0:
            for factor in GRID:
                weights = scaled(method, scale * factor)
                row["grid"][factor] = (weights, grid_run(method, weights, args, f"x{scale * factor:.3g}"))
                print(f"        x{factor:.3g} {weights}: best val top-1 {row['grid'][factor][1]}", flush=True)
            trained = {f: top1 for f, (_, top1) in row["grid"].items() if top1 is not None}
            if trained:
                row["chosen"] = max(trained, key=lambda f: (trained[f], f == 1.0))
                row["weights"] = row["grid"][row["chosen"]][0]
    print("OWN_PAIR_WEIGHTS = {" + ", ".join(f'"{m}": {r["weights"]}' for m, r in rows.items() if r["scale"] < 1) + "}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        die(e)
