"""Plain torch files: mdistiller's released teachers, or any torch.save(state_dict).

mdistiller's teachers are cifar_teachers/<model>_vanilla/ckpt_epoch_240.pth, a dict with the
state_dict under "model". Neither framework runs their pickle: torch reads them with
torch.load(weights_only=True); Jittor's side with common.safe_pickle, which needs no torch (not
jt.load, which unpickles anything). Both hand the result here, to become a checkpoint dict.
"""
import os
import re

import numpy as np

from common.checkpoint import ckpt_num_classes
from common.datasets import DATASETS
from common.errors import CheckpointError

TORCH_FILE_EXTENSIONS = (".pth", ".pt")
ARCH_FLAGS = "--model (test.py, align.py), --teacher-model or --pair (train_student.py)"


def is_torch_file(path):
    return str(path).lower().endswith(TORCH_FILE_EXTENSIONS)


def torch_load_error(path, error):
    """An exception of torch.load(weights_only=True) as one line: a refusal naming the global the file
    pickles (torch says it inside a paragraph of advice), or a file that is not a readable torch file."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return CheckpointError(f"{path}: refused: it pickles {found.group(1)}, which is not plain data or weights "
                               f"(loading it would run code)")
    reason = re.search(r"WeightsUnpickler error: ([^\n]*)", text)  # not a pickle, truncated, ...
    reason = (reason.group(1) if reason else (text.strip().splitlines() or [""])[0]).strip() or "damaged or not a pickle"
    return CheckpointError(f"{path} is not a readable torch file ({type(error).__name__}: {reason})")


def numpy_state(obj, path, to_numpy):
    """The weights in a loaded torch file as {name: float32 numpy array}.

    obj is what the framework's reader returned: mdistiller's {"model": state_dict, "epoch": ...}
    (other keys ignored), {"state_dict": ...}, or a bare state_dict. torch's BatchNorm counter
    num_batches_tracked and DataParallel's "module." prefix are dropped. to_numpy converts one tensor.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict "
                              f"with the weights under 'model' (mdistiller's layout)")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return numpy_state(obj[key], path, to_numpy)
    if not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise CheckpointError(f"{path}: no weights found: expected a state dict, or one under 'model' as in "
                              f"mdistiller's checkpoints (keys: {sorted(map(str, obj))[:8]})")
    state = {}
    for name, value in obj.items():
        if name.endswith("num_batches_tracked"):
            continue  # torch-only BatchNorm counter
        name = name[len("module."):] if name.startswith("module.") else name  # DataParallel prefix
        state[name] = np.asarray(to_numpy(value), dtype=np.float32)
    return state


def classifier_of(state):
    """(name, outputs) of the classifier: the last 2-D weight (every model here, as in mdistiller, ends
    with one linear layer; convolutions are 4-D, BatchNorm 1-D); (None, None) without one."""
    names = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return (names[-1], int(state[names[-1]].shape[0])) if names else (None, None)


def dataset_of_classes(n):
    """The dataset with n classes, or None."""
    return next((name for name, spec in DATASETS.items() if spec["num_classes"] == n), None)


def foreign_checkpoint(state, path, arch):
    """A torch file's weights as a checkpoint dict like load_checkpoint's.

    The file names neither architecture nor dataset: arch comes from the command line; the dataset
    is the one with as many classes as the classifier has outputs (mdistiller's teachers: CIFAR-100).
    """
    if arch is None:
        raise CheckpointError(f"{path} is a plain torch file (like mdistiller's teachers), which does not say "
                              f"which model it holds: name it with {ARCH_FLAGS}, e.g. --model resnet32x4")
    name, n = classifier_of(state)
    dataset = dataset_of_classes(n)
    if dataset is None:
        raise CheckpointError(f"{path}: its classifier {name!r} (the last linear layer) has {n} outputs; the datasets "
                              f"here have " + ", ".join(f"{d['num_classes']} ({d['title']})" for d in DATASETS.values()))
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))  # e.g. resnet32x4_vanilla
    return {"model": state, "optimizer": {}, "epoch": -1, "best_top1": None, "dataset": dataset, "arch": arch,
            "framework": "pth", "config": {"name": f"external/{folder}", "dataset": dataset}}


def wrong_weights(error, ckpt, path):
    """The load error of a file whose weights do not fit the model, with what was assumed about it."""
    return CheckpointError(f"{error}\n{path} does not hold a {ckpt['arch']!r} model for {ckpt_num_classes(ckpt)} "
                           f"classes: is the architecture right? For a torch file it comes from {ARCH_FLAGS}.")


def match_state(state, expected_shapes, path):
    """Check a {name: array} state against a model's {name: shape}; name the first mismatch."""
    for name, shape in expected_shapes.items():
        if name not in state:
            raise CheckpointError(f"{path}: missing weight {name!r} (expected shape {tuple(shape)})")
        if tuple(state[name].shape) != tuple(shape):
            raise CheckpointError(f"{path}: weight {name!r} has shape {tuple(state[name].shape)}, "
                                  f"the model expects {tuple(shape)}")
    extra = [k for k in state if k not in expected_shapes]
    if extra:
        raise CheckpointError(f"{path}: unexpected weight {extra[0]!r} (not in the model)")

