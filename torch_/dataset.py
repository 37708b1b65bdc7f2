"""CIFAR-10 batches as torch tensors.

Everything that decides *which* pixels a batch holds (the files, the split, the
shuffle order, the crop and flip) is numpy code in common.py, shared with Jittor:
both frameworks see bit-identical batches in the same order. This file only wraps
those numpy batches into tensors on the right device.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import torch  # noqa: E402


class Loader:
    """Batches of one split: shuffled + augmented when train=True, in order otherwise."""

    def __init__(self, images, labels, batch_size, train, seed, device):
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.seed, self.device = batch_size, train, seed, device

    def __len__(self):
        return common.num_batches(len(self.labels), self.batch_size, self.train)

    def epoch(self, epoch):
        """Iterate over one epoch; numpy work runs one batch ahead in a background thread."""
        batches = common.iterate_batches(self.images, self.labels, self.batch_size, self.train, self.seed, epoch)
        for images, labels in common.prefetch(batches):
            yield to_tensor(images, self.device), to_tensor(labels, self.device)


def to_tensor(array, device):
    tensor = torch.from_numpy(array).to(device)
    # images in channels-last layout, like the model's weights (see models.to_device)
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def build_loaders(args, device):
    """Train and validation loaders over the fixed split of the 50,000 training images."""
    data = common.load_cifar10(args.data_dir)
    train_idx, val_idx = common.split_indices(len(data["train_y"]), args.train_size, args.val_size, common.SPLIT_SEED)
    train = Loader(data["train_x"][train_idx], data["train_y"][train_idx], args.batch_size, True, args.seed, device)
    val = Loader(data["train_x"][val_idx], data["train_y"][val_idx], common.EVAL_BATCH_SIZE, False, args.seed, device)
    return train, val


def build_test_loader(data_dir, batch_size, device):
    """The official 10,000-image test batch, in order, no augmentation."""
    data = common.load_cifar10(data_dir)
    return Loader(data["test_x"], data["test_y"], batch_size, False, 0, device), data["classes"]
