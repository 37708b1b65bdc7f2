"""Data-parallel training on Jittor's own engine: its MPI mode, launched by mpirun.

    mpirun -np 2 python jittor_/train_teacher.py --preset quick

torch_/parallel.py is the same file for PyTorch's DDP (torchrun). Which samples a rank takes is
common.distributed; this file holds the framework's part: the process group, the all-reduces and
the wrapped model, and the BatchNorm and Dropout layers that compute under N processes what one
process computes. In one process (no launcher) every function here leaves things as they were.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.distributed import batch_rows, check_launcher, launch, silence_other_ranks  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
from common.errors import UserError  # noqa: E402
import numpy as np  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402
from jittor_ import kernels  # noqa: E402


def setup(device):
    """Jittor joined mpirun's job when it was imported (MPI_Init); ranks > 0 then print nothing."""
    here = check_launcher("jittor")  # a killed mpirun takes its ranks down itself (torch_/: die_with_launcher)
    if here.world_size > 1 and not jt.in_mpi:
        raise UserError("started by mpirun, but Jittor has no MPI: install openmpi-bin and libopenmpi-dev "
                        "(`make setup` does) so that Jittor finds mpicc")
    silence_other_ranks()
    return here


def world_size():
    return launch().world_size


def wrap(model, device):
    """The model that trains: as it is. Jittor's optimizer all-reduces (averages) the gradients in
    its step when jt.in_mpi, and each rank keeps the BatchNorm statistics of its own rows."""
    return model


def all_reduce_sum(array):
    """Sum a numpy array over the ranks, in float64 (metrics: counts and sums)."""
    if world_size() == 1:
        return array
    return jt.array(np.array(array, dtype=np.float64)).mpi_all_reduce("add").numpy()


def all_reduce_sum_differentiable(var):
    """Sum a Var over the ranks, with the backward pass that sums its gradient over the ranks (--sync-bn)."""
    return var.mpi_all_reduce("add")


def barrier():
    """Wait until every rank is here (a diverged run: rank 0 records it before anyone exits)."""
    if world_size() > 1:
        all_reduce_sum(np.zeros(1))  # an all-reduce returns on a rank only once every rank has joined


def finish():
    """At the end of a successful run: wait for every rank (Jittor's MPI_Finalize runs at exit)."""
    barrier()


# ---------------------------------------------------------------- layers that compute one process's numbers under N
class BatchNorm2d(nn.BatchNorm2d):
    """Jittor's BatchNorm with torch's statistics, plus --sync-bn.

    Jittor updates running_var with the biased batch variance, from E[x^2] - E[x]^2;
    torch normalises with the biased variance but stores the unbiased one (n / (n-1)),
    computed in two passes. Same momentum (0.1, new = 0.9 old + 0.1 batch) and eps (1e-5).

    sync (set by set_sync_bn): in data-parallel training, normalise with the mean and variance of the
    whole global batch, summed over the ranks in two passes, so N processes compute what one does.
    Jittor's own BatchNorm averages E[x] and E[x^2] over MPI ranks by default (sync=True); here it
    is off unless asked for, and means the same as in torch_/models.py.
    """

    def __init__(self, num_features):
        super().__init__(num_features, sync=False)

    def execute(self, x):
        if not self.is_train:
            return super().execute(x)
        dims = [0, 2, 3]
        n = x.shape[0] * x.shape[2] * x.shape[3]
        if self.sync and world_size() > 1:
            n *= world_size()  # equal slices on every rank
            mean = all_reduce_sum_differentiable(x.sum(dims=dims)) / n
            var = all_reduce_sum_differentiable(((x - mean.broadcast(x, dims)) ** 2).sum(dims=dims)) / n
        elif kernels.on_cpu(x):  # one multi-threaded kernel, statistics summed in float64
            y, mean, var = kernels.batch_norm_train(x, self.weight, self.bias, self.eps)
            self.update_statistics(mean, var, n)
            return y
        else:
            mean = x.mean(dims=dims)
            var = ((x - mean.broadcast(x, dims)) ** 2).mean(dims=dims)
        scale = self.weight / jt.sqrt(var + self.eps)
        shift = self.bias - mean * scale
        self.update_statistics(mean, var, n)
        return x * scale.broadcast(x, dims) + shift.broadcast(x, dims)

    def update_statistics(self, mean, var, n):
        """running = 0.9 running + 0.1 batch, the variance unbiased (n / (n - 1)) as torch stores it."""
        self.running_mean.update(self.running_mean + (mean - self.running_mean) * self.momentum)
        self.running_var.update(self.running_var + (var * n / max(n - 1, 1) - self.running_var) * self.momentum)


class Dropout(nn.Dropout):
    """nn.Dropout, with the mask drawn for the whole global batch: in data-parallel training each rank
    draws the same global mask (same seed on every rank) and keeps its own rows, so N processes drop
    exactly the units one process drops. In one process the mask is nn.Dropout's, bit for bit
    (the same jt.random draw of the batch's shape)."""

    def execute(self, x):
        if not self.is_train or self.p == 0:
            return x
        here = launch()
        noise = jt.random((x.shape[0] * here.world_size, *x.shape[1:]))
        noise = (noise[batch_rows(noise.shape[0], here.rank, here.world_size)] > self.p).int()
        return (x * noise / (1.0 - self.p)).to(x.dtype)


def set_sync_bn(model, sync):
    """--sync-bn: in data-parallel training, every BatchNorm uses the statistics of the global batch."""
    for module in model.modules():
        if isinstance(module, BatchNorm2d):
            module.sync = sync
    return model
