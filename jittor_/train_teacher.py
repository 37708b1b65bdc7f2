"""Stage 1: train the teacher with cross-entropy (SGD, momentum, weight decay, step LR).

    python jittor_/train_teacher.py                  # the original setting (25,000 / 5,000 images)
    python jittor_/train_teacher.py --preset quick   # about a minute on 2 CPU cores
    python jittor_/train_teacher.py --resume         # continue an interrupted run
    python jittor_/train_teacher.py --dataset cifar100 --model resnet32x4   # a CIFAR-100 teacher
    python jittor_/train_teacher.py --rdrop 5 --dropout 0.3 --name teacher_rdrop   # with R-Drop

Writes ckpt/<name>_jittor.ckpt after every epoch (atomically), TensorBoard events and the run's
result record (result.json) under log/<name>/jittor/. The teacher is engine.fit's "no teacher,
method ce" run: the same step, epoch and loop as a student's.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.config import add_common_args, resolve, TEACHER_DEFAULTS  # noqa: E402
from common.distributed import run_rank  # noqa: E402
from common.errors import die, DIVERGED_EXIT, DivergedError, UserError  # noqa: E402
from jittor_ import device as devices, engine, parallel  # noqa: E402
from jittor_.distillers import METHODS  # noqa: E402

FRAMEWORK = "jittor"


def parse_flags(argv=None):
    """The flags given on the command line ({dest: value}); common.config.resolve fills in the rest."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, TEACHER_DEFAULTS)
    return vars(parser.parse_args(argv))


def main(argv=None):
    flags = parse_flags(argv)
    try:
        config = resolve("teacher", flags, METHODS, FRAMEWORK)
        device = devices.select_device(config.device)
        parallel.setup(device)
        model = engine.build(config, device)
        result = engine.fit(config, "teacher", model, device)
        parallel.finish()  # data-parallel: all ranks done, then the process group goes
        return result
    except DivergedError as e:
        die(str(e), DIVERGED_EXIT)
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    run_rank(main)
