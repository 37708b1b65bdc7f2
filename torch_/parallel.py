"""Data-parallel training on PyTorch's own engine: DistributedDataParallel, launched by torchrun.

    torchrun --nproc_per_node 2 torch_/train_teacher.py --preset quick

jittor_/parallel.py is the same file for Jittor's MPI mode (mpirun). Which samples a rank takes is
common.distributed; this file holds the framework's part: the process group, the all-reduces and
the wrapped model. In one process (no launcher) every function here leaves things as they were.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.distributed import check_launcher, die_with_launcher, launch, silence_other_ranks  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


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
