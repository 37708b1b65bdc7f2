"""Framework-neutral code shared by torch_/ and jittor_/.

Everything here is plain Python + numpy, written once, so that the two frameworks
cannot drift apart on it: reading the CIFAR-10 files, the split index lists, the
seeded augmentation and batch order, the LR and warm-up schedules, the default
hyperparameters and presets, checkpoint files, TensorBoard event and JSON writing.
The framework folders only turn these numpy batches into tensors and do the maths.
"""
import argparse
import hashlib
import json
import os
import queue
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

import numpy as np
import safetensors
import safetensors.numpy

import safe_pickle

ROOT = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(ROOT, "data")
# KD_LOG_DIR / KD_CKPT_DIR / KD_IMG_DIR move outputs elsewhere (the tests write to a temp folder)
LOG_DIR = os.environ.get("KD_LOG_DIR", os.path.join(ROOT, "log"))
CKPT_DIR = os.environ.get("KD_CKPT_DIR", os.path.join(ROOT, "ckpt"))
IMG_DIR = os.environ.get("KD_IMG_DIR", os.path.join(ROOT, "img"))

# ----------------------------------------------------------------------------
# Hyperparameters. Defaults reproduce the original experiment (CIFAR-10, batch 128,
# teacher CIFAR10Quick, student CIFAR10Simple); presets override some of them.
# ----------------------------------------------------------------------------
TEACHER_DEFAULTS = dict(model="cifar10quick", epochs=30, lr=0.01, milestones=[15, 25],
                        batch_size=128, train_size=25000, val_size=5000,
                        momentum=0.9, weight_decay=5e-4, seed=0, dataset="cifar10", val_on_test=False)
STUDENT_DEFAULTS = dict(model="cifar10simple", epochs=40, lr=0.01, milestones=[15, 30],
                        batch_size=128, train_size=5000, val_size=1000,
                        momentum=0.9, weight_decay=5e-4, seed=0, dataset="cifar10", val_on_test=False,
                        warmup=10, temperature=4.0,
                        # mdistiller's CIFAR weights: KD = 0.1 CE + 0.9 KD; DKD = 1.0 CE + DKD
                        kd_ce_weight=0.1, kd_weight=0.9, dkd_ce_weight=1.0,
                        alpha=1.0, beta=None)  # None: DKD_BETA of the student model
# DKD's NCKD weight. mdistiller's CIFAR setting is 8, for ResNet students with BatchNorm. The
# original BN-free, activation-free CIFAR10Simple student diverges with large betas at lr 0.01 as
# the distillation weight warms up (measured on CIFAR-10, torch, seed 0): with an 8-epoch teacher
# beta 8 -> NaN in epoch 6 and beta 4 -> NaN in epoch 10 while beta 2 trained; with the full
# 30-epoch teacher (78.4% top-1) beta 2 -> NaN in epoch 13 too, while beta 1 trains stably (test
# top-1 65.6%, above KD's 64.7%). So 1, the middle of the original experiment's sweep (0 ... 2).
DKD_BETA = {"cifar10simple": 1.0, "cifar10quick": 2.0, "resnet8x4": 8.0, "resnet32x4": 8.0}
DKD_BETA_DEFAULT = 8.0  # any other student: mdistiller's default (mdistiller/engine/cfg.py, CFG.DKD.BETA)


def dkd_beta(model):
    """DKD's beta for a student model when --beta is not given."""
    return DKD_BETA.get(model, DKD_BETA_DEFAULT)
PRESETS = {
    # about a minute per stage on 2 CPU cores (Jittor's first-run compilation included)
    "quick": dict(teacher=dict(epochs=2, milestones=[1], train_size=4000, val_size=1000),
                  student=dict(epochs=3, milestones=[2], warmup=1, train_size=2000, val_size=500)),
    "full": dict(teacher={}, student={}),
}
PRESET_SEEDS = {"quick": 1, "full": 3}  # run_all.py's default number of seeds per preset (mean ± std)
EVAL_BATCH_SIZE = 500
SPLIT_SEED = 0  # the train/val split is fixed; --seed changes init, shuffling and augmentation only
# the original experiment's four, then mdistiller's CIFAR model zoo (its cifar_model_dict names)
MODELS = ["cifar10quick", "cifar10simple", "resnet32x4", "resnet8x4",
          "resnet20", "resnet32", "resnet56", "resnet110", "wrn_16_2", "wrn_40_1", "wrn_40_2",
          "vgg8", "vgg13", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50"]

# The DKD paper's 11 CIFAR-100 teacher/student pairs, named and set as mdistiller's
# configs/cifar100/dkd/<name>.yaml (on top of mdistiller/engine/cfg.py's defaults): 240 epochs,
# batch 64, SGD lr 0.05 (0.01 for ShuffleNet and MobileNet students), momentum 0.9, weight decay
# 5e-4, lr x0.1 from epochs 150, 180 and 210 (0-based here; mdistiller counts from 1 and decays when
# epoch > 150: the same epochs), DKD alpha 1, T 4, CE weight 1, distillation weight warmed up over
# 20 epochs, beta 8 unless the config sets it. Like mdistiller, a pair trains on all 50,000
# training images and validates on the 10,000 test images (val_on_test), so its best val top-1
# is mdistiller's best_acc, the number the paper reports. train_student.py --pair NAME applies one;
# any flag given explicitly wins.
DKD_CIFAR100 = dict(dataset="cifar100", method="dkd", epochs=240, batch_size=64, lr=0.05,
                    milestones=[150, 180, 210], momentum=0.9, weight_decay=5e-4,
                    alpha=1.0, beta=8.0, temperature=4.0, dkd_ce_weight=1.0, warmup=20,
                    train_size=50000, val_size=0, val_on_test=True)
PAIRS = {
    "res56_res20": dict(DKD_CIFAR100, teacher_model="resnet56", model="resnet20", beta=2.0),
    "res110_res32": dict(DKD_CIFAR100, teacher_model="resnet110", model="resnet32", beta=2.0),
    "res32x4_res8x4": dict(DKD_CIFAR100, teacher_model="resnet32x4", model="resnet8x4"),
    "wrn40_2_wrn_16_2": dict(DKD_CIFAR100, teacher_model="wrn_40_2", model="wrn_16_2", beta=6.0),
    "wrn40_2_wrn_40_1": dict(DKD_CIFAR100, teacher_model="wrn_40_2", model="wrn_40_1", beta=6.0),
    "vgg13_vgg8": dict(DKD_CIFAR100, teacher_model="vgg13", model="vgg8", beta=6.0),
    "res32x4_shuv1": dict(DKD_CIFAR100, teacher_model="resnet32x4", model="ShuffleV1", lr=0.01),
    "wrn40_2_shuv1": dict(DKD_CIFAR100, teacher_model="wrn_40_2", model="ShuffleV1", lr=0.01),
    "vgg13_mv2": dict(DKD_CIFAR100, teacher_model="vgg13", model="MobileNetV2", lr=0.01, beta=6.0),
    "res50_mv2": dict(DKD_CIFAR100, teacher_model="ResNet50", model="MobileNetV2", lr=0.01),
    "res32x4_shuv2": dict(DKD_CIFAR100, teacher_model="resnet32x4", model="ShuffleV2", lr=0.01),
}


def apply_pair(args):
    """--pair NAME: fill every flag left unset (None) from the pair's settings; explicit flags win."""
    if args.pair not in PAIRS:
        raise UserError(f"unknown pair {args.pair!r}; the pairs are: {', '.join(PAIRS)}")
    for key, value in PAIRS[args.pair].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def default_name(args, stage):
    """Run name when --name is not given: the original names on CIFAR-10; dataset, pair or model otherwise."""
    if getattr(args, "pair", None):
        return f"{args.dataset}/{args.pair}_s{args.seed}"
    if args.dataset == "cifar10":
        return f"{stage}_s{args.seed}"
    return f"{args.dataset}/{stage}_{args.model}_s{args.seed}"


def apply_preset(args, stage, defaults):
    """Fill every argparse value left at None from the preset, then the defaults."""
    preset = PRESETS[args.preset][stage] if args.preset else {}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, preset.get(key, value))
    return args


def add_common_args(parser, defaults):
    """Flags every training stage shares (same names in both frameworks)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named set of settings (quick: about a minute per stage on CPU)")
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help=f"dataset; sets the model's number of classes (default {defaults['dataset']})")
    parser.add_argument("--model", choices=MODELS, default=None,
                        help=f"architecture (default {defaults['model']})")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs (default {defaults['epochs']})")
    parser.add_argument("--lr", type=float, default=None, help=f"initial learning rate (default {defaults['lr']})")
    parser.add_argument("--milestones", type=int, nargs="*", default=None,
                        help=f"epochs (0-based) at which lr is multiplied by 0.1 (default {defaults['milestones']})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"training batch size (default {defaults['batch_size']})")
    parser.add_argument("--train-size", type=int, default=None,
                        help=f"training images taken from the 50,000 (default {defaults['train_size']})")
    parser.add_argument("--val-size", type=int, default=None,
                        help=f"validation images held out from the 50,000 (default {defaults['val_size']})")
    parser.add_argument("--val-on-test", action=argparse.BooleanOptionalAction, default=None,
                        help="validate on the test set, as mdistiller (then --val-size images are just left out; "
                             "default: no, a held-out part of the training images)")
    parser.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=None, help="SGD weight decay (default 5e-4)")
    parser.add_argument("--seed", type=int, default=None, help="seed for split, init, shuffling and augmentation (default 0)")
    parser.add_argument("--init", default=None, help="checkpoint to start the model from (weights only)")
    parser.add_argument("--resume", action="store_true", help="continue from this run's last checkpoint")
    parser.add_argument("--name", default=None, help="run name: log/<name>/<framework>, ckpt/<name>_<framework>.ckpt")
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="folder holding cifar-10-batches-py/ (CIFAR-10) or cifar-100-python/ (CIFAR-100)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto uses the GPU when the framework finds one")
    return parser


# ----------------------------------------------------------------------------
# Datasets: CIFAR-10 and CIFAR-100 in their official python layouts (--dataset)
# ----------------------------------------------------------------------------
DATASETS = {
    "cifar10": dict(title="CIFAR-10", folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    md5="c58f30108f718f92721af3b95e74349a",
                    train_files=[f"data_batch_{i}" for i in range(1, 6)], test_files=["test_batch"],
                    meta_file="batches.meta", label_key="labels", names_key="label_names", num_classes=10,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    # one "train" and one "test" file; 100 fine labels (the 20 coarse ones are not used).
    # mean/std are mdistiller's (mdistiller/dataset/cifar100.py), so its teachers see the inputs they were trained on
    "cifar100": dict(title="CIFAR-100", folder="cifar-100-python", archive="cifar-100-python.tar.gz",
                     url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     md5="eb9058c3a382ffc7106e4002c42a8d85",
                     train_files=["train"], test_files=["test"],
                     meta_file="meta", label_key="fine_labels", names_key="fine_label_names", num_classes=100,
                     mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761)),
}
# CIFAR-10 under its old names (the default dataset; the tests use them)
CIFAR10_FOLDER = DATASETS["cifar10"]["folder"]
CIFAR10_TRAIN_FILES = DATASETS["cifar10"]["train_files"]
CIFAR10_TEST_FILES = DATASETS["cifar10"]["test_files"]
NUM_CLASSES = DATASETS["cifar10"]["num_classes"]
CIFAR10_MEAN = np.array(DATASETS["cifar10"]["mean"], dtype=np.float32)
CIFAR10_STD = np.array(DATASETS["cifar10"]["std"], dtype=np.float32)


class UserError(RuntimeError):
    """Bad input from the user (missing data, wrong checkpoint, bad sizes): reported without a traceback."""


class DataError(UserError):
    """The dataset is missing or unreadable; the message says what to do."""


def dataset_spec(name):
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _missing_message(folder, spec):
    files = ", ".join(spec["train_files"] + spec["test_files"] + [spec["meta_file"]])
    parent = os.path.dirname(folder)
    return (f"{spec['title']} not found: expected {folder}/ with {files}.\n"
            f"Download {spec['url']} (md5 {spec['md5']}) and unpack it into {parent}/, e.g.\n"
            f"  mkdir -p {parent} && tar -xzf {spec['archive']} -C {parent}")


def md5sum(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_dataset(data_dir, name="cifar10"):
    """Download the official archive, verify its md5, unpack it. Raises DataError offline."""
    spec = dataset_spec(name)
    os.makedirs(data_dir, exist_ok=True)
    folder = os.path.join(data_dir, spec["folder"])
    partial = f".{spec['archive']}."  # the prefix of this function's temp file and staging folder
    for leftover in os.listdir(data_dir):  # of an earlier download that was killed
        path = os.path.join(data_dir, leftover)
        if leftover.startswith(partial):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=partial, suffix=".part")
    os.close(fd)
    staging = None
    try:
        print(f"downloading {spec['url']} ...", flush=True)
        try:
            urllib.request.urlretrieve(spec["url"], tmp)
        except OSError as e:  # URLError is an OSError: no network, DNS, refused
            raise DataError(f"could not download {spec['title']} ({e}).\n" + _missing_message(folder, spec)) from None
        if md5sum(tmp) != spec["md5"]:
            raise DataError(f"downloaded archive has the wrong md5 (expected {spec['md5']}); try again.\n"
                            + _missing_message(folder, spec))
        # unpack next to the final folder, then rename: never a half-unpacked folder
        staging = tempfile.mkdtemp(dir=data_dir, prefix=partial)
        with tarfile.open(tmp, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        os.replace(os.path.join(staging, spec["folder"]), folder)
    finally:  # whatever failed (network, md5, a bad archive), nothing half-done stays behind
        if os.path.exists(tmp):
            os.remove(tmp)
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _read_pickle(path, spec):
    try:  # the official files are pickles: read them like checkpoints, allowing numpy arrays and plain data only
        return safe_pickle.load(path, encoding="latin1")
    except FileNotFoundError:
        raise DataError(f"missing file {path}.\n" + _missing_message(os.path.dirname(path), spec)) from None
    except safe_pickle.RefusedError as e:
        raise DataError(str(e)) from None
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); "
                        f"delete {os.path.dirname(path)}/ and download it again.") from None


def _get(d, key):
    """d[key] for str or bytes keys (the official files are Python 2 pickles: bytes keys under encoding='bytes')."""
    return d.get(key, d.get(key.encode()))


def read_batch_file(path, dataset="cifar10"):
    """One official batch file -> (images uint8 N x 3 x 32 x 32, labels int64 N), checked."""
    spec = dataset_spec(dataset)
    batch = _read_pickle(path, spec)
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a {spec['title']} batch (a pickled dict); found {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, spec["label_key"])
    if data is None or labels is None:
        raise DataError(f"{path} is not a {spec['title']} batch: no 'data'/{spec['label_key']!r} keys "
                        f"(found {sorted(map(str, batch))})")
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, "
                        f"got {data.dtype} {data.shape} and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec["num_classes"]):
        raise DataError(f"{path}: labels outside 0..{spec['num_classes'] - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_dataset(name="cifar10", data_dir=DATA_DIR, download=True):
    """A whole dataset in memory: dict of train_x, train_y, test_x, test_y, classes (names)."""
    spec = dataset_spec(name)
    folder = os.path.join(data_dir, spec["folder"])
    if not os.path.isdir(folder):
        if not download or os.environ.get("KD_NO_DOWNLOAD") == "1":
            raise DataError(_missing_message(folder, spec))
        download_dataset(data_dir, name)
    parts = [read_batch_file(os.path.join(folder, f), name) for f in spec["train_files"]]
    tests = [read_batch_file(os.path.join(folder, f), name) for f in spec["test_files"]]
    meta = _read_pickle(os.path.join(folder, spec["meta_file"]), spec)
    classes = _get(meta, spec["names_key"]) if isinstance(meta, dict) else None
    if not classes or len(classes) != spec["num_classes"]:
        raise DataError(f"{folder}/{spec['meta_file']} has no list of {spec['num_classes']} {spec['names_key']}")
    return dict(train_x=np.concatenate([p[0] for p in parts]), train_y=np.concatenate([p[1] for p in parts]),
                test_x=np.concatenate([t[0] for t in tests]), test_y=np.concatenate([t[1] for t in tests]),
                classes=[c.decode() if isinstance(c, bytes) else str(c) for c in classes])


def load_cifar10(data_dir=DATA_DIR, download=True):
    """Whole CIFAR-10 in memory: dict of train_x, train_y, test_x, test_y, classes."""
    return load_dataset("cifar10", data_dir, download)


def split_indices(n_total, train_size, val_size, seed):
    """Fixed, seeded train/val index lists over the 50,000 training images.

    Validation comes first in one permutation, so with the same seed a smaller split
    (the students' 5,000/1,000) takes its validation images from inside the teacher's
    validation set: the teacher has never trained on a student's validation image.
    """
    if train_size < 1 or val_size < 0 or train_size + val_size > n_total:
        raise UserError(f"train_size + val_size must be between 1 and {n_total}, got {train_size} + {val_size}")
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[val_size:val_size + train_size]), np.sort(perm[:val_size])


# ----------------------------------------------------------------------------
# Augmentation and batches: one numpy pipeline, so both frameworks get identical batches
# ----------------------------------------------------------------------------
# per dataset, a lookup table uint8 value -> normalised float32, per channel: (v / 255 - mean) / std
_NORM_LUTS = {name: ((np.arange(256, dtype=np.float32)[None, :] / 255.0 - np.array(spec["mean"], np.float32)[:, None])
                     / np.array(spec["std"], np.float32)[:, None]).astype(np.float32)
              for name, spec in DATASETS.items()}
_CHANNEL = np.arange(3)[None, :, None, None]


def normalise(images, dataset="cifar10"):
    """uint8 N x 3 x H x W -> float32, per-channel (x/255 - mean) / std with the dataset's mean and std."""
    return _NORM_LUTS[dataset][_CHANNEL, images]


def augment(images, rng, pad=4, dataset="cifar10"):
    """Pad with zeros, take a random 32x32 crop, flip half of the images, normalise.

    Same maths as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip()
    + Normalize, done for the whole batch in one gather.
    """
    n, _, h, w = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    top = rng.integers(0, 2 * pad + 1, size=n)
    left = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    rows = top[:, None] + np.arange(h)[None, :]
    cols = left[:, None] + np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))[None, :][0]
    cropped = padded[np.arange(n)[:, None, None, None], _CHANNEL,
                     rows[:, None, :, None], cols[:, None, None, :]]
    return normalise(cropped, dataset)


def epoch_rng(seed, epoch):
    """The one RNG for an epoch's shuffle and augmentation, seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch])


def epoch_seed(seed, epoch):
    """The framework's seed for an epoch (dropout masks), derived from (seed, epoch).

    Every random source is re-seeded from (seed, epoch) when the epoch starts, so an epoch
    draws the same numbers whether the process ran from epoch 0 or resumed at this epoch:
    a resumed run is the uninterrupted run, with no RNG state to save. (The 2 keeps this
    stream apart from epoch_rng's.) A 32-bit value, which every seeding function accepts.
    """
    return int(np.random.SeedSequence([seed, epoch, 2]).generate_state(1)[0])


def iterate_batches(images, labels, batch_size, train, seed=0, epoch=0, dataset="cifar10"):
    """Yield (float32 N x 3 x 32 x 32, int64 N) numpy batches, normalised with the dataset's mean/std.

    train=True: shuffled and augmented from epoch_rng(seed, epoch), the last incomplete
    batch dropped (a constant batch shape: no recompilation in Jittor, no BatchNorm
    over a single image). train=False: in order, normalised only, every image kept.
    """
    n = len(labels)
    if train:
        rng = epoch_rng(seed, epoch)
        order = rng.permutation(n)
        stop = n - n % batch_size if n >= batch_size else n
    else:
        order, stop = np.arange(n), n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = augment(images[idx], rng, dataset=dataset) if train else normalise(images[idx], dataset)
        yield x, labels[idx]


def prefetch(iterator, depth=2):
    """Run a batch iterator in a background thread, `depth` batches ahead.

    numpy's gathers release the GIL, so augmentation overlaps the framework's compute.
    The order of batches is unchanged, so prefetching cannot change results.
    """
    q = queue.Queue(maxsize=depth)
    done = object()

    def worker():
        try:
            for item in iterator:
                q.put(item)
            q.put(done)
        except BaseException as e:  # re-raised in the consumer
            q.put(e)

    threading.Thread(target=worker, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def num_batches(n, batch_size, train):
    if train and n >= batch_size:
        return n // batch_size
    return -(-n // batch_size)


# ----------------------------------------------------------------------------
# Schedules: computed here, per epoch, and set by hand in both frameworks
# (Jittor's MultiStepLR decays one epoch later than torch's; we use neither).
# ----------------------------------------------------------------------------
def lr_at(epoch, base_lr, milestones, gamma=0.1):
    """Step LR: base_lr * gamma^(number of milestones <= epoch), epochs 0-based."""
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def warmup_factor(epoch, warmup_epochs):
    """Linear warm-up of the distillation weight, as mdistiller: min((epoch+1)/warmup, 1)."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)


# ----------------------------------------------------------------------------
# Initial weights: drawn in numpy by name, so both frameworks start from the same numbers
# ----------------------------------------------------------------------------
INIT_SCHEMES = {
    # torch's defaults (Jittor's own match): conv/linear weights and biases U(+-1/sqrt(fan_in))
    "uniform": "torch default",
    # mdistiller resnet.py / resnetv2.py: kaiming_normal_(mode="fan_out") convs, linear left at the default
    "kaiming_normal": "convs N(0, 2/fan_out), the rest torch default",
    # mdistiller wrn.py: convs normal(0, sqrt(2/n)), n = k*k*out (= fan_out), linear bias zeroed
    "kaiming_normal_zero_bias": "convs N(0, 2/fan_out), biases 0, linear weights torch default",
    # mdistiller vgg.py / mobilenetv2.py: as wrn, and linear weights normal(0, 0.01), all biases zeroed
    "kaiming_normal_small_fc": "convs N(0, 2/fan_out), linear weights N(0, 0.01^2), biases 0",
}


def init_weights(shapes, seed, scheme="uniform"):
    """Initial values for a model's state, given {name: shape} in state-dict order.

    scheme is one of INIT_SCHEMES (the init code of the model's source). Conv weights are
    4-D, linear weights 2-D, 1-D weights are BatchNorm scales (1) with biases 0;
    running_mean 0, running_var 1. fan_in / fan_out count the weight's own shape, so a
    grouped conv (out, in/groups, k, k) gets torch's fans. Draws happen in state order,
    one per random entry, so the numbers are the same whichever framework asks.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init_weights: unknown scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    zero_bias = scheme in ("kaiming_normal_zero_bias", "kaiming_normal_small_fc")
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        leaf, owner = name.rsplit(".", 1)[-1], name.rsplit(".", 1)[0]
        weight_shape = shapes.get(owner + ".weight")
        if leaf == "running_mean" or (leaf == "bias" and (len(weight_shape) == 1 or zero_bias)):
            value = np.zeros(shape)
        elif leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            value = np.ones(shape)
        elif leaf in ("weight", "bias"):
            fan_in = int(np.prod(weight_shape[1:]))
            if leaf == "weight" and len(shape) == 4 and scheme != "uniform":
                fan_out = shape[0] * int(np.prod(shape[2:]))
                value = rng.normal(0.0, np.sqrt(2.0 / fan_out), size=shape)
            elif leaf == "weight" and len(shape) == 2 and scheme == "kaiming_normal_small_fc":
                value = rng.normal(0.0, 0.01, size=shape)
            else:
                bound = 1.0 / np.sqrt(fan_in)
                value = rng.uniform(-bound, bound, size=shape)
        else:
            raise KeyError(f"init_weights: no rule for state entry {name!r}")
        out[name] = value.astype(np.float32)
    return out


# ----------------------------------------------------------------------------
# Checkpoints: one safetensors file, readable by either framework and unable to run code.
# The arrays (weights, momentum buffers) are safetensors tensors "model/<name>" and
# "optimizer/<name>"; everything else (epoch, config, history, ...) is JSON in its header.
# Nothing is unpickled: a checkpoint from anywhere can be opened without running its code.
# ----------------------------------------------------------------------------
CKPT_KEYS = ("model", "optimizer", "epoch", "best_top1", "config", "framework", "arch")
CKPT_FORMAT = "kd-distill-ckpt/2"  # /1 was a pickle (read only through safe_pickle, see load_checkpoint)
ARRAY_GROUPS = ("model", "optimizer")


def is_buffer(name):
    """BatchNorm running statistics: saved with the weights, but not trained (Jittor lists them as parameters)."""
    return name.endswith(("running_mean", "running_var"))


def ckpt_path(name, framework):
    return os.path.join(CKPT_DIR, f"{name}_{framework}.ckpt")


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import: os.umask is process-wide, not thread-safe


def temp_prefix(path):
    return "." + os.path.basename(path)


def remove_stale_temps(path):
    """Delete the temp files that a killed atomic_write of `path` left behind (one writer per path)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            if f.startswith(temp_prefix(path)) and f.endswith(".tmp"):
                os.remove(os.path.join(folder, f))


def atomic_save(path, save_to):
    """save_to(temp path) writes the file, which is then renamed to `path`: a crash leaves the old file.

    The temp file sits beside `path` (a rename within one folder is atomic); temp files of earlier,
    killed writes of the same path are removed first; the file gets the usual permissions (0666
    less the umask; mkstemp alone gives 0600).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        save_to(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path, write_fn, mode="wb"):
    """atomic_save for a writer of an open file: write_fn(f), flushed to disk before the rename."""
    def save_to(tmp):
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
    atomic_save(path, save_to)


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
    for group in ARRAY_GROUPS:
        order[group] = list(ckpt[group])  # safetensors sorts its tensors; the state's order matters (classifier_of)
        for name, value in ckpt[group].items():
            tensors[f"{group}/{name}"] = np.ascontiguousarray(value)
    rest = {k: v for k, v in ckpt.items() if k not in ARRAY_GROUPS}
    header = {"format": CKPT_FORMAT, "order": json.dumps(order), "meta": json.dumps(rest, default=_plain)}
    return safetensors.numpy.save(tensors, metadata=header)


def save_checkpoint(path, ckpt):
    data = checkpoint_bytes(ckpt)  # fails before the old file is touched
    atomic_write(path, lambda f: f.write(data))


class CheckpointError(UserError):
    """A checkpoint that cannot be used for what was asked; the message says why."""


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
        for group in ARRAY_GROUPS:
            ckpt[group] = {name: arrays[f"{group}/{name}"] for name in order[group]}
    except Exception as e:  # a damaged or foreign safetensors file
        raise CheckpointError(f"{path} is not a readable checkpoint of this repo ({type(e).__name__}: {e})") from None
    return ckpt


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
               "kd_ce_weight", "kd_weight", "dkd_ce_weight")


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


def state_digest(state):
    """A short fingerprint of a {name: array} state (the teacher a student learns from, for --resume)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


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


# Plain torch files: mdistiller's released teachers (cifar_teachers/<model>_vanilla/ckpt_epoch_240.pth,
# a dict with the state_dict under "model") or any torch.save(state_dict). Neither framework runs their
# pickle: torch reads them with torch.load(weights_only=True); Jittor's side with safe_pickle, which
# needs no torch (not jt.load, which unpickles anything). Both hand the result here.
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


def safe_pickle_error(path, error, what="torch file"):
    """A safe_pickle error as a CheckpointError: a refusal as it is, an unreadable file as such."""
    if isinstance(error, safe_pickle.UnreadableError):
        return CheckpointError(f"{path} is not a readable {what} ({error})")
    return CheckpointError(str(error))


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


# ----------------------------------------------------------------------------
# Logging: TensorBoard events (same tags in both frameworks), JSON, progress lines
# ----------------------------------------------------------------------------
DIVERGED_FILE = "diverged.json"
RESULT_FILES = ("metrics.json", "test.json", DIVERGED_FILE)  # a run's outcome, next to its event files


class EventWriter:
    """Scalars to a TensorBoard event file, with tensorboard's own writer (no torch needed).

    The run folder's old event files and results are removed first, and `history` (the
    checkpoint's per-epoch metrics, when resuming) is written again: the curves hold every
    epoch exactly once, whether the earlier process wrote an epoch's events before it was
    killed or not.
    """

    def __init__(self, logdir, history=()):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        os.makedirs(logdir, exist_ok=True)
        for f in os.listdir(logdir):
            if f.startswith("events.out.tfevents") or f in RESULT_FILES:
                os.remove(os.path.join(logdir, f))
        self._writer = EventFileWriter(logdir)
        for epoch, metrics in enumerate(history):
            self.scalars(metrics, epoch + 1)
        self.flush()

    def scalar(self, tag, value, step):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalars(self, values, step):
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def flush(self):
        """To disk now (the writer would wait up to 2 minutes): a killed run keeps its finished epochs' curves."""
        self._writer.flush()

    def close(self):
        self._writer.flush()
        self._writer.close()


def read_scalars(logdir):
    """{tag: [(step, value), ...]} from the event files of one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), mode="w")


def run_dir(name, framework):
    return os.path.join(LOG_DIR, name, framework)


def epoch_line(framework, stage, epoch, epochs, metrics):
    """One progress line per epoch, identical in format for both frameworks."""
    parts = [f"[{framework} {stage}] epoch {epoch + 1}/{epochs}"]
    for key in ("lr", "train/loss", "train/top1", "val/loss", "val/top1", "time/data", "time/train", "time/eval"):
        if key in metrics:
            v = metrics[key]
            parts.append(f"{key} {v:.4g}" if key == "lr" else f"{key} {v:.3f}" if "loss" in key
                         else f"{key} {v:.2f}" if "top" in key else f"{key} {v:.1f}s")
    return "  ".join(parts)


class DivergedError(UserError):
    """The training loss became NaN or infinite (epoch: 1-based)."""

    def __init__(self, message, epoch):
        super().__init__(message)
        self.epoch = epoch


def check_finite(loss, stage, epoch, step):
    """Stop at the first non-finite loss instead of training on NaN for the remaining epochs."""
    if not np.isfinite(loss):
        raise DivergedError(f"{stage}: the training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                            f"training diverged: lower --lr (or --beta / --kd-weight for a student)", epoch + 1)


def record_divergence(name, framework, error):
    """diverged.json in the run folder, so that run_all.py and report.py show a diverged run as a
    result ("diverged at epoch N": a point of a beta sweep, say) rather than as a crash."""
    write_json(os.path.join(run_dir(name, framework), DIVERGED_FILE), {"epoch": error.epoch, "error": str(error)})


class Meter:
    """Sample-weighted running sums: sum(value * n) / sum(n), never a mean of batch means."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def update(self, values, n):
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self):
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


def topk_hits(logits, labels, k):
    """Boolean N x k: is the label among the k highest logits? (numpy; ties broken by index)"""
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return order == labels[:, None]


def batch_accuracy(logits, labels):
    """Top-1 and top-5 accuracy (percent) of one batch."""
    hits = topk_hits(logits, labels, 5)
    return {"top1": 100.0 * hits[:, 0].mean(), "top5": 100.0 * hits.any(1).mean()}


class EvalAccumulator:
    """Loss, top-1, top-5 and per-class accuracy over a whole split.

    Counts correct samples and sums losses over samples, then divides once by the number
    of samples: right with a smaller last batch, unlike a mean of per-batch accuracies.
    """

    def __init__(self, num_classes=NUM_CLASSES):
        self.num_classes = num_classes
        self.n = self.loss_sum = self.top1 = self.top5 = 0
        self.class_correct = np.zeros(num_classes, dtype=np.int64)
        self.class_count = np.zeros(num_classes, dtype=np.int64)

    def add(self, logits, labels, loss_sum):
        hits = topk_hits(logits, labels, min(5, logits.shape[1]))
        self.n += len(labels)
        self.loss_sum += float(loss_sum)
        self.top1 += int(hits[:, 0].sum())
        self.top5 += int(hits.any(1).sum())
        np.add.at(self.class_correct, labels, hits[:, 0])
        np.add.at(self.class_count, labels, 1)

    def result(self):
        n = max(self.n, 1)
        per_class = 100.0 * self.class_correct / np.maximum(self.class_count, 1)
        return {"loss": self.loss_sum / n, "top1": 100.0 * self.top1 / n, "top5": 100.0 * self.top5 / n,
                "per_class": per_class.tolist(), "n": self.n}


def format_test_report(metrics, classes):
    lines = [f"[{metrics['framework']}] {metrics['arch']} ({metrics['ckpt_framework']} checkpoint) on {metrics['n']} test images: "
             f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}  "
             f"{metrics['images_per_s']:.0f} images/s"]
    if len(classes) <= 10:
        lines += [f"  {name:>10s} {acc:6.2f}%" for name, acc in zip(classes, metrics["per_class"])]
    else:  # CIFAR-100: five classes per line
        cells = [f"  {name:>13s} {acc:6.2f}%" for name, acc in zip(classes, metrics["per_class"])]
        lines += ["".join(cells[i:i + 5]) for i in range(0, len(cells), 5)]
    return "\n".join(lines)


def test_json_path(ckpt, framework):
    """log/<run>/<framework>/test.json; test_from_<other>.json for the other framework's checkpoint."""
    name = "test.json" if ckpt["framework"] == framework else f"test_from_{ckpt['framework']}.json"
    return os.path.join(run_dir(ckpt["config"]["name"], framework), name)


def num_threads():
    """CPU threads for both frameworks (equal, for a fair comparison): KD_THREADS or all cores."""
    return int(os.environ.get("KD_THREADS", os.cpu_count() or 1))


def run_summary(args, framework, stage, history, best_top1):
    """The small JSON written at the end of a training run: final metrics and time per stage."""
    last = history[-1] if history else {}
    return {"framework": framework, "stage": stage, "name": args.name, "epochs": len(history),
            "final": {k: last[k] for k in last if k.startswith(("val/", "train/"))},
            "best_val_top1": best_top1,
            "seconds": {part: sum(h[f"time/{part}"] for h in history) for part in ("data", "train", "eval")},
            "config": vars(args)}


def has_nvidia_gpu():
    return os.path.exists("/dev/nvidia0") or bool(os.path.isdir("/proc/driver/nvidia/gpus")
                                                  and os.listdir("/proc/driver/nvidia/gpus"))


def jittor_dnnl_dir():
    """Where Jittor looks for oneDNN before downloading it (setup_jittor.py fills it)."""
    return os.path.join(os.path.expanduser("~"), ".cache", "jittor", "mkl", "dnnl_lnx_2.2.0_cpu_gomp")


def prepare_jittor():
    """Environment Jittor reads when it is imported; call before `import jittor`.

    Without a GPU, nvcc_path="" stops Jittor from finding an installed nvcc and then
    dying on a missing libcudart. A GPU machine keeps Jittor's own CUDA detection.
    Without the oneDNN folder Jittor would try to download it (and fail offline):
    then it runs without oneDNN, and says so.
    """
    if "nvcc_path" not in os.environ and not has_nvidia_gpu():
        os.environ["nvcc_path"] = ""
    os.environ.setdefault("log_silent", "1")  # no info lines at import; compile progress still shows
    # Jittor's CPU parallelism is oneDNN's OpenMP (its own kernels are single-threaded): same
    # thread count as torch.set_num_threads(common.num_threads()) for a fair comparison
    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads()))
    # Jittor names its compile cache after the git branch around its install folder: with the venv
    # inside this repo, every branch switch would recompile everything. One fixed name instead.
    os.environ.setdefault("cache_name", "default")
    # Compile ops one at a time. Jittor's parallel op compiler runs oneDNN's conv tuner
    # (ConvTuner::forwardTune) in worker threads, and the tuner edits the shared graph: a race that
    # segfaults now and then, after which Jittor's segfault handler deadlocks (README, "Pitfalls").
    # Jittor reads every flag from an environment variable of its name when it is imported.
    os.environ.setdefault("use_parallel_op_compiler", "0")
    if "use_mkl" not in os.environ and not os.path.isfile(os.path.join(jittor_dnnl_dir(), "lib", "libmkldnn.so")):
        os.environ["use_mkl"] = "0"
        print("warning: oneDNN is not set up for Jittor (run `make setup`): "
              "Jittor uses its slow convolution path", file=sys.stderr)


def die(message, code=2):
    """Clean exit for a user error: one clear message, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
