"""CIFAR-10 / CIFAR-100 batches as Jittor Vars.

Everything that decides *which* pixels a batch holds (the files, the split, the
shuffle order, the crop and flip) is numpy code in common/ (common.batches), shared with torch:
both frameworks see bit-identical batches in the same order. This file only wraps
those numpy batches into Vars (Jittor places them on the GPU itself when use_cuda is set).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.batches import iterate_batches, num_batches, prefetch  # noqa: E402
from common.config import EVAL_BATCH_SIZE, SPLIT_SEED  # noqa: E402
from common.datasets import DATASETS, load_dataset, split_indices  # noqa: E402
from common.distributed import launch  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402


class Loader:
    """Batches of one split: shuffled + augmented when train=True, in order otherwise."""

    def __init__(self, images, labels, batch_size, train, seed, device, dataset="cifar10"):
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.seed, self.device = batch_size, train, seed, device
        self.dataset, self.num_classes = dataset, DATASETS[dataset]["num_classes"]  # normalisation, outputs
        here = launch()  # data-parallel: this rank's rows of each training batch, its share of an evaluation
        self.rank, self.world_size = here.rank, here.world_size

    def __len__(self):
        return num_batches(len(self.labels), self.batch_size, self.train, self.rank, self.world_size)

    def epoch(self, epoch):
        """Iterate over one epoch: (images, labels, the batch's rows of the split as numpy); numpy work runs one batch
        ahead in a background thread."""
        batches = iterate_batches(self.images, self.labels, self.batch_size, self.train, self.seed, epoch,
                                  self.dataset, self.rank, self.world_size, with_index=True)
        for images, labels, index in prefetch(batches):
            yield to_tensor(images, self.device), to_tensor(labels, self.device), index


def to_tensor(array, device):
    return jt.array(array)


def build_loaders(args, device):
    """Train and validation loaders over the fixed split of the 50,000 training images.

    --val-on-test (mdistiller's way, set by --pair): validation on the 10,000 test images instead.
    """
    data = load_dataset(args.dataset, args.data_dir)
    train_idx, val_idx = split_indices(len(data["train_y"]), args.train_size, args.val_size, SPLIT_SEED)
    train = Loader(data["train_x"][train_idx], data["train_y"][train_idx], args.batch_size, True, args.seed, device,
                   args.dataset)
    if args.val_on_test:
        val_x, val_y = data["test_x"], data["test_y"]
    else:
        val_x, val_y = data["train_x"][val_idx], data["train_y"][val_idx]
    val = Loader(val_x, val_y, EVAL_BATCH_SIZE, False, args.seed, device, args.dataset)
    return train, val


def build_test_loader(data_dir, batch_size, device, dataset="cifar10"):
    """The official 10,000-image test set, in order, no augmentation."""
    data = load_dataset(dataset, data_dir)
    return Loader(data["test_x"], data["test_y"], batch_size, False, 0, device, dataset), data["classes"]
