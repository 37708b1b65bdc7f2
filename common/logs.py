"""Logs: TensorBoard events (same tags in both frameworks), run folders, progress lines, results."""
import os
import sys
import time

import numpy as np

from common.distributed import is_main
from common.errors import DivergedError
from common.results import RESULT_FILE
from common.tables import table



class EventWriter:
    """Scalars to a TensorBoard event file, in tensorboard's own record format (no torch needed).

    The run folder's old event files and results are removed first, and `history` (the
    checkpoint's per-epoch metrics, when resuming) is written again: the curves hold every
    epoch exactly once, whether the earlier process wrote an epoch's events before it was
    killed or not.

    The records are written here, in the caller's thread, not by tensorboard's EventFileWriter: that
    one writes from a background thread, which on a full disk prints its own traceback and leaves
    the error to whichever later call looks. Here a full disk is a DiskFullError naming the run
    folder, from the call that wrote, and the file is cut back to its last flush (whole records only).
    """

    def __init__(self, logdir, history=()):
        import socket
        from tensorboard.summary.writer.record_writer import RecordWriter
        from tensorboard.compat.proto import event_pb2
        self.logdir, self._file, self._error, self._flushed = logdir, None, None, 0  # _flushed: length at the last flush
        # tensorboard's file name: events.out.tfevents.<seconds>.<host>.<pid>.<writer number>
        self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                         f"{os.getpid()}.0")
        self._guarded(self._start)
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))  # what readers expect first
        for epoch, metrics in enumerate(history):
            self.scalars(metrics, epoch + 1)
        self.flush()

    def _start(self):
        os.makedirs(self.logdir, exist_ok=True)
        for f in os.listdir(self.logdir):
            if f.startswith("events.out.tfevents") or f == RESULT_FILE:  # the outcome of the run this replaces
                os.remove(os.path.join(self.logdir, f))
        self._file = open(self.path, "wb")

    def scalar(self, tag, value, step):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _write(self, event):
        self._guarded(lambda: self._records.write(event.SerializeToString()))

    def scalars(self, values, step):
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def flush(self):
        """To disk now: a killed run keeps its finished epochs' curves."""
        self._guarded(self._flush)

    def _flush(self):
        self._file.flush()
        self._flushed = self._file.tell()

    def close(self):
        if self._file is not None or self._error is not None:  # a second close does nothing; a failed writer re-raises
            self._guarded(self._close)

    def _close(self):
        self._flush()
        self._file.close()
        self._file = None

    def _guarded(self, action):
        """action(); a full disk raises DiskFullError, now and on every later call (the file is cut back)."""
        from common.files import disk_full_error, is_disk_full
        if self._error is not None:
            raise self._error
        try:
            action()
        except OSError as e:
            if not is_disk_full(e):
                raise
            self._cut_back()
            self._error = disk_full_error(self.logdir, e, "the event file keeps the epochs before this one",
                                          "writing its TensorBoard events")
            raise self._error from None

    def _cut_back(self):
        """Close the file and drop what came after the last flush: a record may be half on disk."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()  # flushes the buffer again, fails again on a full disk, and closes the file all the same
        except OSError:
            pass
        try:
            os.truncate(self.path, self._flushed)
        except OSError:
            pass  # best effort: tensorboard's reader stops at a torn last record anyway


def read_scalars(logdir):
    """{tag: [(step, value), ...]} from the event files of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}



def epoch_line(framework, stage, epoch, epochs, metrics):
    """One progress line per epoch, identical in format for both frameworks."""
    parts = [f"[{framework} {stage}] epoch {epoch + 1}/{epochs}"]
    for key in ("lr", "train/loss", "train/top1", "val/loss", "val/top1", "time/data", "time/train", "time/eval"):
        if key in metrics:
            v = metrics[key]
            parts.append(f"{key} {v:.4g}" if key == "lr" else f"{key} {v:.3f}" if "loss" in key
                         else f"{key} {v:.2f}" if "top" in key else f"{key} {v:.1f}s")
    return "  ".join(parts)



def check_finite(loss, stage, epoch, step, settings=()):
    """Stop at the first non-finite loss instead of training on NaN for the remaining epochs. settings: the
    method's own fields (Method.flags); those that weigh a term are named as what else to lower."""
    if not np.isfinite(loss):
        weights = [f"--{key.replace('_', '-')}" for key in settings if "weight" in key or key in ("alpha", "beta")]
        also = f" (or the distillation weight: {', '.join(weights)})" if weights else ""
        raise DivergedError(f"{stage}: the training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                            f"training diverged: lower --lr{also}", epoch + 1)



def format_test_report(metrics, classes):
    lines = [f"[{metrics['framework']}] {metrics['arch']} ({metrics['ckpt_framework']} checkpoint) on {metrics['n']} test images: "
             f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  "
             f"{metrics['images_per_s']:.0f} images/s"]
    if "heads" in metrics:  # DeiT: the prediction above is the mean of the two heads
        titles = {"head": "the class token's head", "head_dist": "the distillation token's head"}
        lines.append("  (the mean of two heads) alone: " + ", ".join(
            f"{titles.get(name, name)} top-1 {m['top1']:.2f}%" for name, m in metrics["heads"].items()))
    if len(classes) <= 10:
        lines += [f"  {name:>10s} {acc:6.2f}%" for name, acc in zip(classes, metrics["per_class"])]
    else:  # CIFAR-100: five classes per line
        cells = [f"  {name:>13s} {acc:6.2f}%" for name, acc in zip(classes, metrics["per_class"])]
        lines += ["".join(cells[i:i + 5]) for i in range(0, len(cells), 5)]
    return "\n".join(lines)



def results_table(results):
    """test.py over several checkpoints: one row per {path: metrics}, for the terminal."""
    rows = [[os.path.basename(path), m["arch"], m["dataset"], f"{m['top1']:.2f}", f"{m['top5']:.2f}",
             f"{m['loss']:.4f}", f"{m['images_per_s']:.0f}"] for path, m in results.items()]
    return "\n" + table(["checkpoint", "model", "dataset", "top-1 %", "top-5 %", "loss", "images/s"], rows, "simple")



def progress(batches, total, label):
    """A tqdm bar over one epoch's batches when stderr is a terminal; the batches as they are
    otherwise, so logs and CI keep just the per-epoch lines (epoch_line). One bar per job: rank 0's."""
    if not sys.stderr.isatty() or not is_main():
        return batches
    from tqdm import tqdm
    return tqdm(batches, total=total, desc=label, unit="batch", leave=False, dynamic_ncols=True)
