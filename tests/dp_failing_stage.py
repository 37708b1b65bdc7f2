"""A training stage in which rank 1 raises at its second step (test_data_parallel: the job must end
with that error, not hang). Run under a launcher:

    torchrun --nproc_per_node 2 tests/dp_failing_stage.py torch  [train_teacher.py flags]
    mpirun -np 2 python tests/dp_failing_stage.py jittor [train_teacher.py flags]
"""
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common.distributed import run_rank, launch  # noqa: E402

stage = importlib.import_module(f"{sys.argv[1]}_.train_teacher")
if launch().rank == 1:
    real_step, steps = stage.train_step, []

    def failing_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise RuntimeError("planted failure on rank 1")
        return real_step(*args, **kwargs)

    stage.train_step = failing_step
run_rank(lambda: stage.main(sys.argv[2:]))  # as the stage's own `if __name__ == "__main__"`
