"""Stage 2/3: train a student with one of the methods of the table (distillers.METHODS), any of them with R-Drop
(--rdrop) where the student has dropout:

{methods}

    python torch_/train_student.py --method ce
    python torch_/train_student.py --method kd  --teacher ckpt/teacher_s0_torch.ckpt
    python torch_/train_student.py --method dkd --teacher ckpt/teacher_s0_torch.ckpt --beta 8
    python torch_/train_student.py --method fitnet --hint-layer 1   # hint at the second stage, as mdistiller's
    python torch_/train_student.py --method at                      # attention transfer, every stage
    python torch_/train_student.py --method vid                     # VID: a regressor and variances per stage
    python torch_/train_student.py --pair res32x4_res8x4 --teacher cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth

--pair NAME runs one of the DKD paper's CIFAR-100 pairs with mdistiller's settings (common.config.PAIRS);
flags given explicitly override it (e.g. --epochs 2 for a smoke run).

The teacher is frozen (eval mode, no gradients) and its logits (and features, for the methods that
read them) are computed online, once per step, on the very batch (same images, same augmentation) the
student sees (engine.train_step). The losses and the method table are distillers.py's; the modules a
method trains with the student (FitNet's regressor, VID's regressors and variances) are saved in its
checkpoint and restored by --resume; test.py reads the student alone.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.config import (MODELS, PAIRS, STUDENT_DEFAULTS, add_common_args, add_method_args, method_help,  # noqa: E402
                           method_list, resolve)
from common.distributed import run_rank  # noqa: E402
from common.errors import die, DIVERGED_EXIT, DivergedError, UserError  # noqa: E402
from torch_ import device as devices, engine, parallel  # noqa: E402
from torch_.distillers import METHODS  # noqa: E402

if __doc__:  # the method list above, made from the table (not under python -OO, which drops docstrings)
    __doc__ = __doc__.replace("{methods}", method_list(METHODS))
FRAMEWORK = "torch"


def parse_flags(argv=None):
    """The flags given on the command line ({dest: value}); common.config.resolve fills in the rest."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=list(METHODS), default=None, help=method_help(METHODS))
    parser.add_argument("--teacher", default=None,
                        help="teacher checkpoint: a .ckpt of this repo or a .pth (mdistiller's); default: this "
                             "framework's checkpoint of train_teacher.py with the same --seed (and --dataset)")
    parser.add_argument("--teacher-model", choices=MODELS, default=None,
                        help="the teacher's architecture: needed for a .pth (which does not say), checked for a .ckpt")
    parser.add_argument("--pair", choices=list(PAIRS), default=None,
                        help="a CIFAR-100 pair of the DKD paper with mdistiller's settings (explicit flags override)")
    add_common_args(parser, STUDENT_DEFAULTS)
    add_method_args(parser, METHODS)
    return vars(parser.parse_args(argv))


def main(argv=None):
    flags = parse_flags(argv)
    try:
        config = resolve("student", flags, METHODS, FRAMEWORK)
        device = devices.select_device(config.device)
        parallel.setup(device)
        method = METHODS[config.method]
        teacher = digest = None
        if method.teacher:
            teacher, digest = engine.load_teacher(config.teacher, device, config.teacher_model, config.dataset)
        student = engine.build(config, device)
        extra = method.setup(config, student, teacher, device)  # FitNet's regressor, VID's, after the checks
        result = engine.fit(config, f"student-{config.method}", student, device, teacher, extra, digest)
        parallel.finish()  # data-parallel: all ranks done, then the process group goes
        return result
    except DivergedError as e:
        die(str(e), DIVERGED_EXIT)
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    run_rank(main)
