"""Data-parallel runs, the framework-neutral part: who this process is, and which samples are its own.

A stage started by a launcher (torchrun for torch_/, mpirun for jittor_/) is one of N ranks.
Nothing else changes: --batch-size is still the global batch, and every rank walks the same
global batches in the same order with the same augmentation (common.batches), keeping its own
rows of each. The framework's half (process group, all-reduce, DDP) is {torch_,jittor_}/parallel.py.
"""
import ctypes
import os
import shutil
import signal
import sys
import traceback
from dataclasses import dataclass

from common.errors import UserError

LAUNCHERS = {"torch": "torchrun --nproc_per_node N", "jittor": "mpirun -np N python"}


@dataclass(frozen=True)
class Launch:
    launcher: str  # "torchrun", "mpirun" or "" (one process, no launcher)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the rank among the processes of this machine: picks the GPU
    local_world_size: int = 1


def launch():
    """This process's place in the job, from the launchers' environment variables."""
    env = os.environ
    if "OMPI_COMM_WORLD_SIZE" in env:  # Open MPI's mpirun (also what Jittor checks: jt.in_mpi)
        return Launch("mpirun", int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"]),
                      int(env.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)), int(env.get("OMPI_COMM_WORLD_LOCAL_SIZE", 1)))
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env and "MASTER_ADDR" in env):
        return Launch("torchrun", int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                      int(env.get("LOCAL_WORLD_SIZE", 1)))
    return Launch("")


def check_launcher(framework):
    """Each framework has its own engine: torch_/ under torchrun, jittor_/ under mpirun. The other
    launcher would start N independent runs that all write the same files: a one-line error instead."""
    here = launch()
    expected = {"torch": "torchrun", "jittor": "mpirun"}[framework]
    if here.launcher and here.launcher != expected:
        raise UserError(f"{framework}_/ stages run data-parallel under {expected} ({LAUNCHERS[framework]} ...), "
                        f"not under {here.launcher}")
    return here


def die_with_launcher():
    """End this rank when its launcher process dies. torchrun starts every worker in a session of its
    own, so a torchrun killed with SIGKILL (kill -9, the OOM killer) left its ranks training on, rank 0
    still writing the checkpoint that a --resume would then share. Linux: PR_SET_PDEATHSIG."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG: SIGKILL when the parent dies
    if os.getppid() == 1:  # the launcher died before the line above
        os._exit(1)


def is_main():
    """Rank 0: the one process that prints and writes checkpoints, events and JSON."""
    return launch().rank == 0


def silence_other_ranks():
    """Ranks > 0 print nothing (their stdout goes nowhere); errors still reach stderr."""
    if not is_main():
        sys.stdout = open(os.devnull, "w")


def check_batch_size(batch_size, world_size):
    """Every rank takes an equal slice of each global batch, so gradients averaged over ranks are the
    gradient of the global batch's mean loss (unequal slices would weight samples unequally)."""
    if batch_size % world_size:
        raise UserError(f"--batch-size {batch_size} is the global batch: it must be a multiple of the "
                        f"{world_size} processes")


def batch_rows(batch_size, rank, world_size):
    """The rows of a global training batch that one rank takes: a contiguous, equal slice."""
    per_rank = batch_size // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def eval_range(n, rank, world_size):
    """[start, stop) of an evaluation split that one rank takes: contiguous, no padding, no repeats.

    Unlike a DistributedSampler, which pads every shard to ceil(n / N) samples by repeating some
    and then counts them twice, the shards here differ by at most one sample and cover each once.
    """
    return n * rank // world_size, n * (rank + 1) // world_size


def run_rank(main):
    """Run a stage's main as one rank of a launched job (in one process: just main).

    A rank that fails exits at once with its error, skipping the interpreter's shutdown (where
    MPI_Finalize can wait forever for ranks blocked in a collective): the launcher sees the failed
    rank and stops the others, so the job ends instead of hanging. A torchrun rank that succeeded
    also leaves with os._exit(0) once its output is flushed: in the interpreter's shutdown torch's C++
    threads now and then aborted it ("terminate called without an active exception", 1 run in 3 to
    12 of bench_dp.py here), which torchrun reports as a failed job. An mpirun rank that succeeded
    exits normally: it must reach MPI_Finalize.
    """
    if launch().world_size == 1:
        return main()
    try:
        main()
        code = 0
    except SystemExit as e:  # die(): the message is printed already; sys.exit("text"): print it
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    if code == 0 and launch().launcher == "mpirun":
        sys.exit(0)  # Python's normal exit, through MPI_Finalize
    if code:
        print(f"rank {launch().rank}: exiting with status {code}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launcher_command(framework, nproc):
    """The command that starts a stage script on nproc processes with the framework's own launcher
    (run_all.py --nproc, bench.py, the tests): [python] for one process."""
    if nproc == 1:
        return [sys.executable]
    if framework == "torch":  # torchrun; --standalone: a local rendezvous on a free port
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    if not shutil.which("mpirun"):
        raise UserError("mpirun not found: Jittor's data-parallel mode needs Open MPI (`make setup` installs "
                        "openmpi-bin and libopenmpi-dev)")
    # --oversubscribe: more processes than cores is allowed (a small machine); no single-copy shared memory
    # (cross-memory attach, which containers often forbid: then every message fails); Open MPI refuses root
    # without the flag
    return (["mpirun", "-np", str(nproc), "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]
            + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + [sys.executable])
