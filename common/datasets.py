"""CIFAR-10 and CIFAR-100 in their official python layouts: specs, download, reading, the split.

The official files are pickles; they are read like checkpoints (common.safe_pickle: numpy arrays
and plain data only), checked, and held in memory as uint8 images and int64 labels.
"""
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request

import numpy as np

from common import safe_pickle
from common.errors import DataError, UserError
from common.paths import DATA_DIR


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

