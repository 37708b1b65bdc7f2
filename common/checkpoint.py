"""The checkpoint file: one safetensors file, readable by either framework and unable to run code.

The arrays (weights, momentum buffers) are safetensors tensors "model/<name>" and
"optimizer/<name>" (and "regressor/<name>": FitNet's, beside the student); everything else (epoch, config, history, ...) is JSON in its header.
Nothing is unpickled: a checkpoint from anywhere can be opened without running its code.
Also here: what --resume checks against the checkpoint, where a run's epochs ran, and what a model/dataset must
match.
"""
import json
import os

import numpy as np
import safetensors
import safetensors.numpy

from common import safe_pickle
from common.paths import CKPT_DIR
from common.datasets import DATASETS, dataset_spec
from common.env import num_threads
from common.errors import CheckpointError
from common.files import atomic_write
from common.foreign import ARCH_FLAGS, is_torch_file, numpy_state, torch_file_dataset

CKPT_KEYS = ("model", "optimizer", "epoch", "best_top1", "config", "framework", "arch")
CKPT_FORMAT = "kd-distill-ckpt/2"  # /1 was a pickle (read only through safe_pickle, see load_checkpoint)


def array_groups(ckpt):
    """The entries saved as tensors: the model, the optimizer state, and the state of every module trained
    with the student (FitNet's "regressor", ...): each a {name: numpy array}."""
    return [k for k, v in ckpt.items() if k in ("model", "optimizer") or
            (isinstance(v, dict) and v and all(isinstance(a, np.ndarray) for a in v.values()))]


def make_checkpoint(model, config, framework, arch, dataset, optimizer=None, extra=None, epoch=-1, best_top1=None,
                    history=(), teacher_digest=None, ran_on=()):
    """The one checkpoint dict of this repo, whoever writes it (a stage after an epoch, convert.py) or reads a
    foreign file into one: arrays ({name: numpy array}) and plain data only.

    extra: {key: state} of the modules trained with the student (FitNet's regressor), saved under key.
    teacher_digest: a student's teacher weights' fingerprint (--resume refuses another teacher).
    ran_on: where the epochs ran (ran_on_here).
    """
    return {"model": model, "optimizer": optimizer or {}, **(extra or {}), "epoch": epoch, "best_top1": best_top1,
            "config": config, "framework": framework, "arch": arch, "dataset": dataset, "history": list(history),
            "teacher_digest": teacher_digest, "ran_on": list(ran_on)}


def machine(device, processes):
    """What a run's floats depend on beyond its flags and seed: the device kind, the CPU threads per process
    (KD_THREADS) and the data-parallel processes, which order the sums of every reduction."""
    return {"device": str(device).split(":")[0], "threads": num_threads(), "processes": processes}


def ran_on_here(ran_on, here, start_epoch):
    """Where the run's epochs ran ([{"from_epoch", **machine}], from the checkpoint when resuming; empty for a fresh
    run or a checkpoint written before it was kept), this process's machine appended if it differs from the last.
    Returns (ran_on, a note when it differs): the run goes on, but equals an uninterrupted run bit for bit only
    on the same machine (docs/checkpoints.md)."""
    last = {k: v for k, v in ran_on[-1].items() if k != "from_epoch"} if ran_on else None
    if last == here:
        return list(ran_on), None
    ran_on = [*ran_on, {"from_epoch": start_epoch + 1, **here}]
    if last is None:
        return ran_on, None  # a fresh run, or epochs whose machine was not recorded
    return ran_on, (f"note: epochs 1-{start_epoch} ran with {describe_machine(last)}, this run has "
                    f"{describe_machine(here)}: it goes on, but no longer equals the uninterrupted run bit for bit "
                    f"(KD_THREADS={last['threads']} gives the checkpoint's threads)")


def describe_machine(m):
    return f"{m['device']}, {m['threads']} thread(s) x {m['processes']} process(es)"


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
    for group in array_groups(ckpt):
        order[group] = list(ckpt[group])  # safetensors sorts its tensors; the state's order matters (classifier_of)
        for name, value in ckpt[group].items():
            tensors[f"{group}/{name}"] = np.ascontiguousarray(value)
    rest = {k: v for k, v in ckpt.items() if k not in order}
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
        for group in order:
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


def read_checkpoint(path, arch=None):
    """A checkpoint of this repo (.ckpt, either framework), or a torch file (.pth/.pt: mdistiller's teachers)
    as one: the same reader in both frameworks, running no code (arch: the model a torch file holds)."""
    if not is_torch_file(path):
        return load_checkpoint(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = safe_pickle.load(path)  # tensors as numpy arrays and plain containers only; no torch needed
    except Exception as e:  # a refusal (the file would run code), or not a torch file
        raise safe_pickle_error(path, e) from None
    state = numpy_state(obj, path)
    dataset = torch_file_dataset(state, path, arch)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))  # e.g. resnet32x4_vanilla
    return make_checkpoint(state, {"name": f"external/{folder}", "dataset": dataset}, "pth", arch, dataset)


def wrong_weights(error, ckpt, path):
    """The load error of a file whose weights do not fit the model, with what was assumed about it."""
    return CheckpointError(f"{error}\n{path} does not hold a {ckpt['arch']!r} model for {ckpt_num_classes(ckpt)} "
                           f"classes: is the architecture right? For a torch file it comes from {ARCH_FLAGS}.")


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

