"""Logs: TensorBoard events (same tags in both frameworks), run folders, progress lines, results."""
import os
import sys
import time

import numpy as np

from common.paths import LOG_DIR
from common.distributed import is_main
from common.errors import DivergedError
from common.files import write_json
from common.tables import table

DIVERGED_FILE = "diverged.json"
RESULT_FILES = ("metrics.json", "test.json", DIVERGED_FILE)  # a run's outcome, next to its event files


class EventWriter:
    """Scalars to a TensorBoard event file, with tensorboard's own writer (no torch needed).

    The run folder's old event files and results are removed first, and `history` (the
    checkpoint's per-epoch metrics, when resuming) is written again: the curves hold every
    epoch exactly once, whether the earlier process wrote an epoch's events before it was
    killed or not.
    """

    def __init__(self, logdir, history=()):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        os.makedirs(logdir, exist_ok=True)
        for f in os.listdir(logdir):
            if f.startswith("events.out.tfevents") or f in RESULT_FILES:
                os.remove(os.path.join(logdir, f))
        self._writer = EventFileWriter(logdir)
        for epoch, metrics in enumerate(history):
            self.scalars(metrics, epoch + 1)
        self.flush()

    def scalar(self, tag, value, step):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalars(self, values, step):
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def flush(self):
        """To disk now (the writer would wait up to 2 minutes): a killed run keeps its finished epochs' curves."""
        self._writer.flush()

    def close(self):
        self._writer.flush()
        self._writer.close()


def read_scalars(logdir):
    """{tag: [(step, value), ...]} from the event files of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}



def run_dir(name, framework):
    return os.path.join(LOG_DIR, name, framework)


def epoch_line(framework, stage, epoch, epochs, metrics):
    """One progress line per epoch, identical in format for both frameworks."""
    parts = [f"[{framework} {stage}] epoch {epoch + 1}/{epochs}"]
    for key in ("lr", "train/loss", "train/top1", "val/loss", "val/top1", "time/data", "time/train", "time/eval"):
        if key in metrics:
            v = metrics[key]
            parts.append(f"{key} {v:.4g}" if key == "lr" else f"{key} {v:.3f}" if "loss" in key
                         else f"{key} {v:.2f}" if "top" in key else f"{key} {v:.1f}s")
    return "  ".join(parts)



def check_finite(loss, stage, epoch, step):
    """Stop at the first non-finite loss instead of training on NaN for the remaining epochs."""
    if not np.isfinite(loss):
        raise DivergedError(f"{stage}: the training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                            f"training diverged: lower --lr (or a student's distillation weight: --beta, --kd-weight, "
                            f"--fitnet-weight, --at-weight)", epoch + 1)


def record_divergence(name, framework, error):
    """diverged.json in the run folder, so that run_all.py and report.py show a diverged run as a
    result ("diverged at epoch N": a point of a beta sweep, say) rather than as a crash."""
    write_json(os.path.join(run_dir(name, framework), DIVERGED_FILE), {"epoch": error.epoch, "error": str(error)})



def format_test_report(metrics, classes):
    lines = [f"[{metrics['framework']}] {metrics['arch']} ({metrics['ckpt_framework']} checkpoint) on {metrics['n']} test images: "
             f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  "
             f"{metrics['images_per_s']:.0f} images/s"]
    if len(classes) <= 10:
        lines += [f"  {name:>10s} {acc:6.2f}%" for name, acc in zip(classes, metrics["per_class"])]
    else:  # CIFAR-100: five classes per line
        cells = [f"  {name:>13s} {acc:6.2f}%" for name, acc in zip(classes, metrics["per_class"])]
        lines += ["".join(cells[i:i + 5]) for i in range(0, len(cells), 5)]
    return "\n".join(lines)


def test_json_path(ckpt, framework):
    """log/<run>/<framework>/test.json; test_from_<other>.json for the other framework's checkpoint."""
    name = "test.json" if ckpt["framework"] == framework else f"test_from_{ckpt['framework']}.json"
    return os.path.join(run_dir(ckpt["config"]["name"], framework), name)


def results_table(results):
    """test.py over several checkpoints: one row per {path: metrics}, for the terminal."""
    rows = [[os.path.basename(path), m["arch"], m["dataset"], f"{m['top1']:.2f}", f"{m['top5']:.2f}",
             f"{m['loss']:.4f}", f"{m['images_per_s']:.0f}"] for path, m in results.items()]
    return "\n" + table(["checkpoint", "model", "dataset", "top-1 %", "top-5 %", "loss", "images/s"], rows, "simple")


def run_summary(args, framework, stage, history, best_top1):
    """The small JSON written at the end of a training run: final metrics and time per stage."""
    last = history[-1] if history else {}
    return {"framework": framework, "stage": stage, "name": args.name, "epochs": len(history),
            "final": {k: last[k] for k in last if k.startswith(("val/", "train/"))},
            "best_val_top1": best_top1,
            "seconds": {part: sum(h[f"time/{part}"] for h in history) for part in ("data", "train", "eval")},
            "config": vars(args)}



def progress(batches, total, label):
    """A tqdm bar over one epoch's batches when stderr is a terminal; the batches as they are
    otherwise, so logs and CI keep just the per-epoch lines (epoch_line). One bar per job: rank 0's."""
    if not sys.stderr.isatty() or not is_main():
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=total, desc=label, unit="batch", leave=False, dynamic_ncols=True)
