"""Augmentation and batches: one numpy pipeline, so both frameworks get bit-identical batches.

Which pixels a batch holds (the shuffle order, the crop, the flip) is decided here, from a
per-epoch seed, and the batches are handed to the framework's dataset.py as numpy arrays.
"""
import queue
import threading

import numpy as np

from common.datasets import DATASETS
from common.distributed import batch_rows, eval_range

# per dataset, a lookup table uint8 value -> normalised float32, per channel: (v / 255 - mean) / std
_NORM_LUTS = {name: ((np.arange(256, dtype=np.float32)[None, :] / 255.0 - np.array(spec["mean"], np.float32)[:, None])
                     / np.array(spec["std"], np.float32)[:, None]).astype(np.float32)
              for name, spec in DATASETS.items()}
_CHANNEL = np.arange(3)[None, :, None, None]


def normalise(images, dataset="cifar10"):
    """uint8 N x 3 x H x W -> float32, per-channel (x/255 - mean) / std with the dataset's mean and std."""
    return _NORM_LUTS[dataset][_CHANNEL, images]


def augment(images, rng, pad=4, dataset="cifar10"):
    """Pad with zeros, take a random 32x32 crop, flip half of the images, normalise.

    Same maths as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip()
    + Normalize, done for the whole batch in one gather.
    """
    return crop_and_flip(images, *draw_crops(len(images), rng, pad), pad, dataset)


def draw_crops(n, rng, pad=4):
    """The random part of augment for n images: crop offsets (top, left) and flips."""
    top = rng.integers(0, 2 * pad + 1, size=n)
    left = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    return top, left, flip


def crop_and_flip(images, top, left, flip, pad=4, dataset="cifar10"):
    """The deterministic part of augment: pad, crop at (top, left), flip where asked, normalise."""
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = top[:, None] + np.arange(h)[None, :]
    cols = left[:, None] + np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))[None, :][0]
    cropped = padded[np.arange(n)[:, None, None, None], _CHANNEL,
                     rows[:, None, :, None], cols[:, None, None, :]]
    return normalise(cropped, dataset)


def epoch_rng(seed, epoch):
    """The one RNG for an epoch's shuffle and augmentation, seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch])


def epoch_seed(seed, epoch):
    """The framework's seed for an epoch (dropout masks), derived from (seed, epoch).

    Every random source is re-seeded from (seed, epoch) when the epoch starts, so an epoch
    draws the same numbers whether the process ran from epoch 0 or resumed at this epoch:
    a resumed run is the uninterrupted run, with no RNG state to save. (The 2 keeps this
    stream apart from epoch_rng's.) A 32-bit value, which every seeding function accepts.
    """
    return int(np.random.SeedSequence([seed, epoch, 2]).generate_state(1)[0])


def iterate_batches(images, labels, batch_size, train, seed=0, epoch=0, dataset="cifar10", rank=0, world_size=1,
                    with_index=False):
    """Yield (float32 N x 3 x 32 x 32, int64 N) numpy batches, normalised with the dataset's mean/std; with_index:
    (images, labels, the batch's rows of the split) (CRD's memory bank has a row per training sample).

    train=True: shuffled and augmented from epoch_rng(seed, epoch), the last incomplete
    batch dropped (a constant batch shape: no recompilation in Jittor, no BatchNorm
    over a single image). train=False: in order, normalised only, every image kept.

    Data-parallel (world_size N > 1): train=True yields this rank's rows of every global batch,
    with the crops drawn for the whole global batch, so the N ranks together see exactly the
    batches of one process; train=False yields batches of this rank's contiguous share of the split.
    """
    n = len(labels)
    if train:
        rng = epoch_rng(seed, epoch)
        order = rng.permutation(n)
        stop = n - n % batch_size if n >= batch_size else n
        rows = batch_rows(min(batch_size, n), rank, world_size)
    else:
        order = np.arange(*eval_range(n, rank, world_size))
        stop = len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        if train:
            crops = draw_crops(len(idx), rng)  # for the whole global batch: the same numbers on every rank
            idx = idx[rows]
            x = crop_and_flip(images[idx], *(c[rows] for c in crops), dataset=dataset)
        else:
            x = normalise(images[idx], dataset)
        yield (x, labels[idx], idx) if with_index else (x, labels[idx])


def prefetch(iterator, depth=2):
    """Run a batch iterator in a background thread, `depth` batches ahead.

    numpy's gathers release the GIL, so augmentation overlaps the framework's compute.
    The order of batches is unchanged, so prefetching cannot change results.
    """
    q = queue.Queue(maxsize=depth)
    done = object()

    def worker():
        try:
            for item in iterator:
                q.put(item)
            q.put(done)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)

    threading.Thread(target=worker, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def num_batches(n, batch_size, train, rank=0, world_size=1):
    """Batches per epoch: of the whole split in training (every rank steps through each global batch),
    of this rank's share in evaluation."""
    if train and n >= batch_size:
        return n // batch_size
    if not train:
        start, stop = eval_range(n, rank, world_size)
        n = stop - start
    return -(-n // batch_size)
