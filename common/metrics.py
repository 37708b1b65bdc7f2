"""Accuracy and loss, sample-weighted: right with a smaller last batch, unlike a mean of batch means."""
import numpy as np

from common.distributed import launch


class Meter:
    """Sample-weighted running sums: sum(value * n) / sum(n), never a mean of batch means."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def update(self, values, n):
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self):
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def topk_hits(logits, labels, k):
    """Boolean N x k: is the label among the k highest logits? (numpy; ties broken by index)"""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return order == labels[:, None]


def batch_accuracy(logits, labels):
    """Top-1 and top-5 accuracy (percent) of one batch."""
    hits = topk_hits(logits, labels, 5)
    return {"top1": 100.0 * hits[:, 0].mean(), "top5": 100.0 * hits.any(1).mean()}


class EvalAccumulator:
    """Loss, top-1, top-5 and per-class accuracy over a whole split.

    Counts correct samples and sums losses over samples, then divides once by the number
    of samples: right with a smaller last batch, unlike a mean of per-batch accuracies.
    """

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.n = self.loss_sum = self.top1 = self.top5 = 0
        self.class_correct = np.zeros(num_classes, dtype=np.int64)
        self.class_count = np.zeros(num_classes, dtype=np.int64)

    def add(self, logits, labels, loss_sum):
        hits = topk_hits(logits, labels, min(5, logits.shape[1]))
        self.n += len(labels)
        self.loss_sum += float(loss_sum)
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(1).sum())
        np.add.at(self.class_correct, labels, hits[:, 0])
        np.add.at(self.class_count, labels, 1)

    def merged(self, all_reduce_sum):
        """Data-parallel: the whole split's accumulator from every rank's share, with one all-reduce of
        the counts and sums (exact: no sample padded or repeated). In one process: this one."""
        if launch().world_size == 1:
            return self
        k = self.num_classes
        sums = all_reduce_sum(np.concatenate([[self.n, self.loss_sum, self.top1, self.top5],
                                              self.class_correct, self.class_count]).astype(np.float64))
        counts = np.rint(sums).astype(np.int64)  # whole numbers, exact in float64 below 2**53
        merged = EvalAccumulator(k)
        merged.n, merged.loss_sum, merged.top1, merged.top5 = int(counts[0]), float(sums[1]), int(counts[2]), int(counts[3])
        merged.class_correct, merged.class_count = counts[4:4 + k], counts[4 + k:]
        return merged

    def result(self):
        n = max(self.n, 1)
        per_class = 100.0 * self.class_correct / np.maximum(self.class_count, 1)
        return {"loss": self.loss_sum / n, "top1": 100.0 * self.top1 / n, "top5": 100.0 * self.top5 / n,
                "per_class": per_class.tolist(), "n": self.n}



def merge_batch(values, n, all_reduce_sum):
    """Data-parallel: one training batch's sample-weighted values (loss, top-1, ...) over all ranks, with
    one all-reduce: what one process computes for the global batch. In one process: as they are."""
    if launch().world_size == 1:
        return values, n
    keys = sorted(values)
    sums = all_reduce_sum(np.array([values[k] * n for k in keys] + [n], dtype=np.float64))
    return {k: s / sums[-1] for k, s in zip(keys, sums)}, int(round(sums[-1]))
