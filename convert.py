"""Convert weights between torch, Jittor and this repo's checkpoint format, by parameter name.

    python convert.py ckpt/full/teacher_s0_jittor.ckpt teacher.pt     # -> torch state_dict (torch.save)
    python convert.py ckpt/full/teacher_s0_torch.ckpt teacher.pkl     # -> Jittor state dict (jt.save)
    python convert.py teacher.pt teacher.ckpt --arch cifar10quick     # torch state_dict -> repo checkpoint
    python convert.py ckpt_epoch_240.pth resnet32x4.ckpt              # mdistiller-style {"model": state_dict}

(The stages also read mdistiller's .pth teachers directly: train_student.py --teacher X.pth with
--teacher-model or --pair, test.py --ckpt X.pth --model NAME. The reading is shared: numpy_state.)

The repo's own checkpoints (.ckpt) already hold numpy arrays that both frameworks load, so
--init / --teacher / test.py take either framework's .ckpt directly; this tool is for weights
coming from, or going to, plain torch / Jittor code. The architecture is read from a .ckpt,
given with --arch, or found by matching every name and shape against the known models. Any
mismatch is an error naming the first missing or mis-shaped weight.
"""
import argparse
import os


from common import safe_pickle
from common.checkpoint import load_checkpoint, make_checkpoint, safe_pickle_error, save_checkpoint
from common.datasets import DATASETS
from common.env import prepare_jittor
from common.errors import CheckpointError, die, UserError
from common.files import atomic_save, atomic_write
from common.foreign import classifier_of, dataset_of_classes, match_state, numpy_state
import torch  # before jittor: Jittor's advice when both share a process

prepare_jittor()
import jittor as jt  # noqa: E402
from torch_ import models as tm  # noqa: E402

FORMATS = {".ckpt": "repo", ".pt": "torch", ".pth": "torch", ".pkl": "jittor"}


def file_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"{path}: unknown extension {ext!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[ext]


def read(path):
    """(numpy state, arch or None, source framework) from any supported file."""
    fmt = file_format(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if fmt == "repo":
        ckpt = load_checkpoint(path)
        return ckpt["model"], ckpt["arch"], ckpt["framework"]
    try:  # one reader for torch's and Jittor's files, running no code (torch.load and jt.load can)
        obj = safe_pickle.load(path)
    except Exception as e:
        raise safe_pickle_error(path, e, "torch file" if fmt == "torch" else "Jittor file") from None
    return numpy_state(obj, path), None, fmt


def num_classes_of(state):
    """The classes of the dataset the state's classifier fits (CIFAR-10's 10 when none does: then the
    shape check names the classifier)."""
    dataset = dataset_of_classes(classifier_of(state)[1])
    return DATASETS[dataset or "cifar10"]["num_classes"]


def model_shapes(arch, num_classes):
    """{name: shape} of a model, without drawing its initial weights (find_arch tries all of them)."""
    constructor, _ = tm.ARCHS[arch]
    return tm.state_shapes(constructor(num_classes))


def find_arch(state, path):
    """The one known model whose names and shapes all match the state."""
    num_classes = num_classes_of(state)
    for arch in tm.ARCHS:
        shapes = model_shapes(arch, num_classes)
        if set(shapes) == set(state) and all(tuple(state[k].shape) == tuple(s) for k, s in shapes.items()):
            return arch
    raise CheckpointError(f"{path}: matches none of the known models ({', '.join(tm.ARCHS)}); "
                                 f"pass --arch to see the first mismatched weight")


def write(path, state, arch, source):
    fmt = file_format(path)
    if fmt == "repo":
        name = os.path.splitext(os.path.basename(path))[0]
        dataset = dataset_of_classes(num_classes_of(state))
        save_checkpoint(path, make_checkpoint(state, {"name": f"converted/{name}", "dataset": dataset}, source, arch,
                                              dataset))
    elif fmt == "torch":
        model = tm.build_model(arch, num_classes=num_classes_of(state))
        tm.load_state(model, state, path)
        atomic_write(path, lambda f: torch.save(model.state_dict(), f))
    else:  # Jittor writes to a temp file beside the output, renamed when complete: never half a file
        atomic_save(path, lambda tmp: jt.save(state, tmp))


def convert(src, dst, arch=None):
    file_format(dst)  # an unknown output format fails before any work
    state, ckpt_arch, source = read(src)
    arch = arch or ckpt_arch or find_arch(state, src)
    if arch not in tm.ARCHS:
        raise UserError(f"unknown model {arch!r}; choose one of {', '.join(tm.ARCHS)}")
    match_state(state, model_shapes(arch, num_classes_of(state)), src)
    write(dst, state, arch, source)
    return arch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="input: .ckpt (this repo), .pt/.pth (torch), .pkl (Jittor)")
    parser.add_argument("dst", help="output: .ckpt, .pt/.pth or .pkl")
    parser.add_argument("--arch", choices=list(tm.ARCHS), default=None, help="model (default: from the file)")
    args = parser.parse_args(argv)
    try:
        arch = convert(args.src, args.dst, args.arch)
    except UserError as e:
        die(str(e))
    print(f"wrote {args.dst} ({arch}, {file_format(args.dst)} format)")


if __name__ == "__main__":
    main()
