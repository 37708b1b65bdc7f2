"""The checkpoint file: one safetensors file, readable by either framework and unable to run code.

The arrays (weights, momentum buffers) are safetensors tensors "model/<name>" and
"optimizer/<name>" (and "regressor/<name>": FitNet's, beside the student); everything else (epoch, config, history, ...) is JSON in its header.
Nothing is unpickled: a checkpoint from anywhere can be opened without running its code.
Also here: what --resume checks against the checkpoint, and what a model/dataset must match.
"""
import json
import os

import numpy as np
import safetensors
import safetensors.numpy

from common import safe_pickle
from common.paths import CKPT_DIR
from common.datasets import DATASETS, dataset_spec
from common.errors import CheckpointError
from common.files import atomic_write

CKPT_KEYS = ("model", "optimizer", "epoch", "best_top1", "config", "framework", "arch")
CKPT_FORMAT = "kd-distill-ckpt/2"  # /1 was a pickle (read only through safe_pickle, see load_checkpoint)
ARRAY_GROUPS = ("model", "optimizer", "regressor")  # regressor: FitNet's, trained with the student; optional


def ckpt_path(name, framework):
    return os.path.join(CKPT_DIR, f"{name}_{framework}.ckpt")



def _plain(value):
    """numpy scalars (a metric, say) as Python numbers, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a checkpoint holds arrays and plain data only, not {type(value).__name__}")


def checkpoint_bytes(ckpt):
    """The checkpoint dict as safetensors bytes: arrays as tensors, the rest as JSON in the header."""
    missing = [k for k in CKPT_KEYS if k not in ckpt]
    assert not missing, f"checkpoint lacks {missing}"
    tensors, order = {}, {}
    for group in [g for g in ARRAY_GROUPS if g in ckpt]:
        order[group] = list(ckpt[group])  # safetensors sorts its tensors; the state's order matters (classifier_of)
        for name, value in ckpt[group].items():
            tensors[f"{group}/{name}"] = np.ascontiguousarray(value)
    rest = {k: v for k, v in ckpt.items() if k not in ARRAY_GROUPS}
    header = {"format": CKPT_FORMAT, "order": json.dumps(order), "meta": json.dumps(rest, default=_plain)}
    return safetensors.numpy.save(tensors, metadata=header)


def save_checkpoint(path, ckpt):
    data = checkpoint_bytes(ckpt)  # fails before the old file is touched
    atomic_write(path, lambda f: f.write(data))



def is_safetensors(path):
    """safetensors starts with the header's length (8 bytes, little-endian) and then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors_checkpoint(path):
    try:
        with safetensors.safe_open(path, framework="np") as f:
            header, arrays = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
        if header.get("format") != CKPT_FORMAT:
            raise ValueError(f"its header names format {header.get('format')!r}, not {CKPT_FORMAT!r}")
        order, ckpt = json.loads(header["order"]), json.loads(header["meta"])
        for group in [g for g in ARRAY_GROUPS if g in order]:
            ckpt[group] = {name: arrays[f"{group}/{name}"] for name in order[group]}
    except Exception as e:  # a damaged or foreign safetensors file
        raise CheckpointError(f"{path} is not a readable checkpoint of this repo ({type(e).__name__}: {e})") from None
    return ckpt


def safe_pickle_error(path, error, what="torch file"):
    """A safe_pickle error as a CheckpointError: a refusal as it is, an unreadable file as such."""
    if isinstance(error, safe_pickle.UnreadableError):
        return CheckpointError(f"{path} is not a readable {what} ({error})")
    return CheckpointError(str(error))


def read_legacy_checkpoint(path):
    """A checkpoint of the old pickle format, through safe_pickle: numpy arrays and plain data, nothing that runs."""
    try:
        return safe_pickle.load(path)
    except safe_pickle.RefusedError as e:
        raise safe_pickle_error(path, e, "checkpoint of this repo") from None


def load_checkpoint(path):
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = read_safetensors_checkpoint(path) if is_safetensors(path) else read_legacy_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "arch" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this repo (expected a dict with "
                              f"{', '.join(CKPT_KEYS)})")
    return ckpt


# What a resumed run must share with its checkpoint: everything that changes the maths. --epochs
# may grow (nothing depends on it: the LR steps at --milestones, the warm-up has its own length),
# so a finished run can be trained on; --init, --name, --data-dir, --device do not change results.
RESUME_KEYS = ("model", "dataset", "seed", "batch_size", "lr", "milestones", "momentum", "weight_decay",
               "train_size", "val_size", "val_on_test",
               # students
               "method", "teacher_model", "teacher_digest", "temperature", "warmup", "alpha", "beta",
               "kd_ce_weight", "kd_weight", "dkd_ce_weight", "hint_layer", "fitnet_ce_weight", "fitnet_weight",
               "at_ce_weight", "at_weight", "at_p", "at_stages", "rdrop", "dropout")


def check_resume(ckpt, args, path):
    """--resume: one clear error when a flag contradicts the checkpoint's config, not a silent mix."""
    saved = ckpt.get("config") or {}
    for key in RESUME_KEYS:
        if key in saved and saved[key] != getattr(args, key, None):
            if key == "teacher_digest":
                raise CheckpointError(f"--resume: the teacher {args.teacher} holds other weights than the teacher "
                                      f"{path} was trained with ({saved.get('teacher')}); start afresh without --resume")
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(f"--resume: {path} was trained with {flag} {saved[key]!r}, this run has "
                                  f"{getattr(args, key, None)!r}; give the checkpoint's {flag} (and --preset), "
                                  f"or start afresh without --resume")
    if ckpt["epoch"] + 1 > args.epochs:
        raise CheckpointError(f"--resume: {path} has trained {ckpt['epoch'] + 1} epochs already, more than "
                              f"--epochs {args.epochs}")



def check_arch(ckpt, expected_arch, path, flag="--model"):
    if ckpt["arch"] != expected_arch:
        raise CheckpointError(f"checkpoint {path} holds a {ckpt['arch']!r} model, "
                              f"but this run builds {expected_arch!r} (see {flag})")


def ckpt_dataset(ckpt):
    """The dataset a checkpoint's model was trained for (checkpoints from before --dataset: CIFAR-10)."""
    return ckpt.get("dataset") or (ckpt.get("config") or {}).get("dataset") or "cifar10"


def ckpt_num_classes(ckpt):
    return DATASETS[ckpt_dataset(ckpt)]["num_classes"]


def check_dataset(ckpt, dataset, path):
    """A model for N classes cannot be evaluated on, or teach, a dataset with another number of classes."""
    have, want = DATASETS[ckpt_dataset(ckpt)], dataset_spec(dataset)
    if have["num_classes"] != want["num_classes"]:
        raise CheckpointError(f"{path} holds a model for {have['num_classes']} classes ({have['title']}), "
                              f"but this run uses {want['title']} ({want['num_classes']} classes); "
                              f"use a checkpoint trained on {want['title']} (see --dataset)")


def describe_checkpoint(ckpt):
    """'torch checkpoint, CIFAR-10, best val top-1 70.27%' (or 'pth checkpoint, CIFAR-100, weights only')."""
    best = ckpt.get("best_top1")
    return (f"{ckpt['framework']} checkpoint, {DATASETS[ckpt_dataset(ckpt)]['title']}, "
            + (f"best val top-1 {best:.2f}%" if best is not None else "weights only"))

