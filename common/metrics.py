"""Accuracy and loss, sample-weighted: right with a smaller last batch, unlike a mean of batch means."""
import numpy as np

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

    def result(self):
        n = max(self.n, 1)
        per_class = 100.0 * self.class_correct / np.maximum(self.class_count, 1)
        return {"loss": self.loss_sum / n, "top1": 100.0 * self.top1 / n, "top5": 100.0 * self.top5 / n,
                "per_class": per_class.tolist(), "n": self.n}

