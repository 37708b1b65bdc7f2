"""Plain torch files: mdistiller's released teachers, or any torch.save(state_dict).

mdistiller's teachers are cifar_teachers/<model>_vanilla/ckpt_epoch_240.pth, a dict with the
state_dict under "model". Both frameworks read them with one reader, common.safe_pickle, which runs
no code and needs no torch (not torch.load, whose weights_only check words its refusals in
paragraphs that change between versions, and not jt.load, which unpickles anything); what it
returns comes here to become weights (common.checkpoint.read_checkpoint makes the checkpoint dict).
"""
import numpy as np

from common.datasets import DATASETS
from common.errors import CheckpointError

TORCH_FILE_EXTENSIONS = (".pth", ".pt")
ARCH_FLAGS = "--model (test.py, align.py), --teacher-model or --pair (train_student.py)"


def is_torch_file(path):
    return str(path).lower().endswith(TORCH_FILE_EXTENSIONS)


def numpy_state(obj, path):
    """The weights in a loaded torch file as {name: float32 numpy array}.

    obj is what the framework's reader returned: mdistiller's {"model": state_dict, "epoch": ...}
    (other keys ignored), {"state_dict": ...}, or a bare state_dict. torch's BatchNorm counter
    num_batches_tracked and DataParallel's "module." prefix are dropped.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or a checkpoint dict "
                              f"with the weights under 'model' (mdistiller's layout)")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            return numpy_state(obj[key], path)
    if not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise CheckpointError(f"{path}: no weights found: expected a state dict, or one under 'model' as in "
                              f"mdistiller's checkpoints (keys: {sorted(map(str, obj))[:8]})")
    state = {}
    for name, value in obj.items():
        if name.endswith("num_batches_tracked"):
            continue  # torch-only BatchNorm counter
        name = name[len("module."):] if name.startswith("module.") else name  # DataParallel prefix
        state[name] = np.asarray(value, dtype=np.float32)
    return state


def classifier_of(state):
    """(name, outputs) of the classifier: the last 2-D weight (every model here, as in mdistiller, ends
    with one linear layer; convolutions are 4-D, BatchNorm 1-D); (None, None) without one."""
    names = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return (names[-1], int(state[names[-1]].shape[0])) if names else (None, None)


def dataset_of_classes(n):
    """The dataset with n classes, or None."""
    return next((name for name, spec in DATASETS.items() if spec["num_classes"] == n), None)


def torch_file_dataset(state, path, arch):
    """The dataset of a torch file's weights, which name neither architecture nor dataset: arch must come
    from the command line; the dataset is the one with as many classes as the classifier has outputs
    (mdistiller's teachers: CIFAR-100)."""
    if arch is None:
        raise CheckpointError(f"{path} is a plain torch file (like mdistiller's teachers), which does not say "
                              f"which model it holds: name it with {ARCH_FLAGS}, e.g. --model resnet32x4")
    name, n = classifier_of(state)
    dataset = dataset_of_classes(n)
    if dataset is None:
        raise CheckpointError(f"{path}: its classifier {name!r} (the last linear layer) has {n} outputs; the datasets "
                              f"here have " + ", ".join(f"{d['num_classes']} ({d['title']})" for d in DATASETS.values()))
    return dataset


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

