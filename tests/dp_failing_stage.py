"""A training stage in which rank 1 raises at its second step (test_data_parallel: the job must end
with that error, not hang). Run under a launcher:

    torchrun --nproc_per_node 2 tests/dp_failing_stage.py torch  [train_teacher.py flags]
    mpirun -np 2 python tests/dp_failing_stage.py jittor [train_teacher.py flags]

The stage file runs as the program it is (runpy, as `python <fw>_/train_teacher.py` would), not
imported: only the engine's step is replaced, in the engine module the stage then imports.
"""
import importlib
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.distributed import launch  # noqa: E402

framework, flags = sys.argv[1], sys.argv[2:]
engine = importlib.import_module(f"{framework}_.engine")
if launch().rank == 1:
    real_step, steps = engine.train_step, []

    def failing_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise RuntimeError("planted failure on rank 1")
        return real_step(*args, **kwargs)

    engine.train_step = failing_step  # train_one_epoch looks the step up in the engine module at each call
script = os.path.join(ROOT, f"{framework}_", "train_teacher.py")
sys.argv = [script, *flags]
runpy.run_path(script, run_name="__main__")  # the stage's own `if __name__ == "__main__": run_rank(main)`
