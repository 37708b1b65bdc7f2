"""Data-parallel training on Jittor's own engine: its MPI mode, launched by mpirun.

    mpirun -np 2 python jittor_/train_teacher.py --preset quick

torch_/parallel.py is the same file for PyTorch's DDP (torchrun). Which samples a rank takes is
common.distributed; this file holds the framework's part: the process group, the all-reduces and
the wrapped model. In one process (no launcher) every function here leaves things as they were.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.distributed import check_launcher, launch, silence_other_ranks  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
from common.errors import UserError  # noqa: E402
import numpy as np  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402


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
