"""Data-parallel training on PyTorch's own engine: DistributedDataParallel, launched by torchrun.

    torchrun --nproc_per_node 2 torch_/train_teacher.py --preset quick

jittor_/parallel.py is the same file for Jittor's MPI mode (mpirun). Which samples a rank takes is
common.distributed; this file holds the framework's part: the process group, the all-reduces and
the wrapped model, and the BatchNorm and Dropout layers that compute under N processes what one
process computes. In one process (no launcher) every function here leaves things as they were.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.distributed import batch_rows, check_launcher, die_with_launcher, launch, silence_other_ranks  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402


def setup(device):
    """Join torchrun's process group (gloo on CPU, nccl on GPUs); ranks > 0 then print nothing."""
    here = check_launcher("torch")
    if here.world_size > 1 and not dist.is_initialized():
        die_with_launcher()  # torchrun's workers outlive a torchrun killed with SIGKILL otherwise
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    silence_other_ranks()
    return here


def world_size():
    return launch().world_size


def wrap(model, device):
    """The model that trains: DDP all-reduces (averages) the gradients during backward.

    forward_sync_buffers=False: each rank keeps the BatchNorm statistics of its own rows, as Jittor's
    MPI mode does (torch's default copies rank 0's over the others at every forward); with --sync-bn
    they are the global batch's on every rank anyway. The checkpoint holds rank 0's.
    """
    if world_size() == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)


def all_reduce_sum(array):
    """Sum a numpy array over the ranks, in float64 (metrics: counts and sums)."""
    if world_size() == 1:
        return array
    tensor = torch.from_numpy(np.array(array, dtype=np.float64))
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


class AllReduceSum(torch.autograd.Function):
    """y = the sum of x over the ranks; its backward sums the gradient over the ranks, as Jittor's
    mpi_all_reduce does (torch.distributed.nn.functional.all_reduce did this; it is deprecated)."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_differentiable(tensor):
    """Sum a tensor over the ranks, with the backward pass that sums its gradient over the ranks (--sync-bn)."""
    return AllReduceSum.apply(tensor)


def barrier():
    """Wait until every rank is here (a diverged run: rank 0 records it before anyone exits)."""
    if world_size() > 1:
        dist.barrier()


def finish():
    """At the end of a successful run: wait for every rank, then tear the process group down (a rank
    that left first could make gloo abort the others mid-teardown; a failing rank skips this)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------- layers that compute one process's numbers under N
class BatchNorm2d(nn.BatchNorm2d):
    """torch's BatchNorm, whose statistics are the ones we want (running_var updated with the unbiased
    batch variance, momentum 0.1, eps 1e-5; Jittor's needs its own code for that), plus --sync-bn.

    sync (set by set_sync_bn): in data-parallel training, normalise with the mean and variance of the
    whole global batch, summed over the ranks in two passes, so N processes compute what one does.
    torch's own SyncBatchNorm refuses CPU tensors; this one runs wherever the all-reduce does.
    """

    sync = False

    def forward(self, x):
        if not (self.training and self.sync and world_size() > 1):
            return super().forward(x)
        dims = [0, 2, 3]
        n = x.shape[0] * x.shape[2] * x.shape[3] * world_size()  # equal slices on every rank
        mean = all_reduce_sum_differentiable(x.sum(dim=dims)) / n
        var = all_reduce_sum_differentiable(((x - mean[None, :, None, None]) ** 2).sum(dim=dims)) / n
        with torch.no_grad():
            self.running_mean += (mean - self.running_mean) * self.momentum
            self.running_var += (var * n / max(n - 1, 1) - self.running_var) * self.momentum
        scale = self.weight / torch.sqrt(var + self.eps)
        shift = self.bias - mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class Dropout(nn.Dropout):
    """nn.Dropout, with the mask drawn for the whole global batch: in data-parallel training each rank
    draws the same global mask (same seed on every rank) and keeps its own rows, so N processes drop
    exactly the units one process drops. In one process the mask is nn.Dropout's on CPU, bit for bit
    (the same bernoulli_ draw on a tensor of the batch's shape)."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        here = launch()
        noise = torch.empty((x.shape[0] * here.world_size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        noise = noise.bernoulli_(1 - self.p)[batch_rows(len(noise), here.rank, here.world_size)]
        return x * noise.div_(1 - self.p)


def set_sync_bn(model, sync):
    """--sync-bn: in data-parallel training, every BatchNorm uses the statistics of the global batch."""
    for module in model.modules():
        if isinstance(module, BatchNorm2d):
            module.sync = sync
    return model
