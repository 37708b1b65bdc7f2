"""The shared numpy data pipeline: reader, errors, split, augmentation, identical batches in both frameworks."""
import os
import pickle
import shutil

import numpy as np
import pytest

from common.batches import augment, iterate_batches, normalise, prefetch
from common.config import SPLIT_SEED
from common.datasets import CIFAR10_FOLDER, CIFAR10_MEAN, CIFAR10_STD, load_cifar10, split_indices
from common.errors import DataError, UserError
from common.files import atomic_write
from common.metrics import batch_accuracy, EvalAccumulator
from common.schedules import lr_at, warmup_factor
import jittor as jt  # noqa: F401
from jittor_ import dataset as jt_dataset
from torch_ import dataset as th_dataset


def test_reader_uses_official_layout(tiny_data):
    data = load_cifar10(tiny_data)
    assert data["train_x"].shape == (300, 3, 32, 32) and data["train_x"].dtype == np.uint8
    assert data["test_x"].shape == (70, 3, 32, 32) and data["train_y"].dtype == np.int64
    assert data["classes"][0] == "airplane" and len(data["classes"]) == 10
    # channel-major rows: the first 1024 bytes of a row are the red plane
    with open(os.path.join(tiny_data, CIFAR10_FOLDER, "data_batch_1"), "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"]
    assert np.array_equal(data["train_x"][0, 0].ravel(), raw[0, :1024])


def test_reader_accepts_bytes_keys(tmp_path, tiny_data):
    """The official archive pickles with bytes keys under encoding='bytes'; both spellings are read."""
    folder = tmp_path / CIFAR10_FOLDER
    shutil.copytree(os.path.join(tiny_data, CIFAR10_FOLDER), folder)
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({k.encode(): v for k, v in batch.items()}, f)
    assert load_cifar10(str(tmp_path))["train_x"].shape[0] == 300


def test_missing_data_says_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path))  # KD_NO_DOWNLOAD=1 in conftest: offline behaviour
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and str(tmp_path) in msg and "cifar-10-python.tar.gz" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "bad_label", "missing_file"])
def test_corrupt_files_give_clear_errors(tmp_path, tiny_data, damage):
    folder = tmp_path / CIFAR10_FOLDER
    shutil.copytree(os.path.join(tiny_data, CIFAR10_FOLDER), folder)
    path = folder / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif damage == "missing_file":
        path.unlink()
    else:
        with open(path, "rb") as f:
            batch = pickle.load(f)
        if damage == "wrong_shape":
            batch["data"] = batch["data"][:, :100]
        else:
            batch["labels"][0] = 10
        with open(path, "wb") as f:
            pickle.dump(batch, f)
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path))
    assert "data_batch_3" in str(e.value)


def test_split_is_fixed_disjoint_and_nested():
    train, val = split_indices(50000, 25000, 5000, SPLIT_SEED)
    train2, val2 = split_indices(50000, 25000, 5000, SPLIT_SEED)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    assert len(train) == 25000 and len(val) == 5000 and not set(train) & set(val)
    s_train, s_val = split_indices(50000, 5000, 1000, SPLIT_SEED)
    assert set(s_val) <= set(val)  # a student's validation images were never in the teacher's training set
    with pytest.raises(UserError):
        split_indices(50000, 49000, 2000, 0)


def naive_augment(images, rng, pad=4):
    """Per-image reference: pad, crop at a random offset, flip with p=0.5, normalise (same draws)."""
    n = len(images)
    top, left, flip = rng.integers(0, 9, size=n), rng.integers(0, 9, size=n), rng.random(n) < 0.5
    out = []
    for img, t, l, f in zip(images, top, left, flip):
        p = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))[:, t:t + 32, l:l + 32]
        out.append(p[:, :, ::-1] if f else p)
    x = np.stack(out).astype(np.float32) / 255.0
    return (x - CIFAR10_MEAN[None, :, None, None]) / CIFAR10_STD[None, :, None, None]


def test_augment_is_pad_crop_flip_normalise(tiny_data):
    images = load_cifar10(tiny_data)["train_x"][:50]
    got = augment(images, np.random.default_rng(7))
    want = naive_augment(images, np.random.default_rng(7))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # some crops reach into the zero padding, which normalises to -mean/std
    assert np.isclose(got, -CIFAR10_MEAN[0] / CIFAR10_STD[0]).any()


def test_validation_is_neither_augmented_nor_shuffled(tiny_data):
    data = load_cifar10(tiny_data)
    x, y = data["train_x"][:70], data["train_y"][:70]
    batches = list(iterate_batches(x, y, 32, train=False, seed=3, epoch=5))
    assert [len(b[1]) for b in batches] == [32, 32, 6]  # every image, the last batch smaller
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), normalise(x))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_training_batches_depend_on_seed_and_epoch_only(tiny_data):
    data = load_cifar10(tiny_data)
    x, y = data["train_x"], data["train_y"]
    a = list(iterate_batches(x, y, 64, True, seed=1, epoch=2))
    b = list(iterate_batches(x, y, 64, True, seed=1, epoch=2))
    c = list(iterate_batches(x, y, 64, True, seed=1, epoch=3))
    assert len(a) == 300 // 64  # the incomplete last batch is dropped in training
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1])


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(20)))) == list(range(20))

    def broken():
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetch(broken()))


def reference_epoch(x, y, batch_size, train, seed, epoch):
    """An epoch's batches by the pipeline's specification, image by image: the (seed, epoch) RNG draws
    the order, then per batch the crops and flips (naive_augment); full batches only in training;
    in order and unaugmented otherwise. Written without common.batches."""
    if not train:
        return [(naive_normalise(x[i:i + batch_size]), y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(y))
    batches = [order[i:i + batch_size] for i in range(0, len(y) - batch_size + 1, batch_size)]
    return [(naive_augment(x[idx], rng), y[idx]) for idx in batches]


def naive_normalise(images):
    return (images.astype(np.float32) / 255.0 - CIFAR10_MEAN[None, :, None, None]) / CIFAR10_STD[None, :, None, None]


@pytest.mark.parametrize("loader", [th_dataset.Loader, jt_dataset.Loader], ids=["torch", "jittor"])
def test_each_frameworks_loader_yields_the_reference_batches(loader, tiny_data):
    """Each framework's Loader (prefetch thread, tensor conversion, channels-last) against the
    per-image reference: so both give the same batches, and the right ones."""
    data = load_cifar10(tiny_data)
    x, y = data["train_x"], data["train_y"]
    for train, seed, epoch in ((True, 0, 1), (True, 3, 0), (False, 0, 1)):
        batches = [(bx.numpy(), by.numpy(), index)
                   for bx, by, index in loader(x, y, 64, train, seed=seed, device="cpu").epoch(epoch)]
        want = reference_epoch(x, y, 64, train, seed, epoch)
        assert len(batches) == len(want) == (300 // 64 if train else -(-300 // 64))
        for (bx, by, index), (wx, wy) in zip(batches, want):
            np.testing.assert_array_equal(by, wy)
            np.testing.assert_allclose(bx, wx, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(y[index], by)  # each batch's rows of the split (CRD's memory rows)
        rows = np.concatenate([index for _, _, index in batches])
        assert len(set(rows)) == len(rows) and (train or np.array_equal(rows, np.arange(300)))


def test_crop_and_flip_match_pillow(tiny_data):
    """Pillow as an independent reference for the crop and the flip (torchvision is not importable on the CPU
    torch of this repo: README): ImageOps.expand by 4 black pixels, crop at the offsets the pipeline drew,
    ImageOps.mirror; then the normalisation written out here."""
    from PIL import Image, ImageOps
    images = load_cifar10(tiny_data)["train_x"][:40]
    rng = np.random.default_rng(11)
    got = augment(images, np.random.default_rng(11))
    top, left, flip = rng.integers(0, 9, size=40), rng.integers(0, 9, size=40), rng.random(40) < 0.5
    assert 0 < flip.sum() < 40 and len(set(top.tolist())) > 3  # the draws vary: the test can tell them apart
    for i, img in enumerate(images):
        ref = ImageOps.expand(Image.fromarray(img.transpose(1, 2, 0)), border=4, fill=(0, 0, 0))
        ref = ref.crop((int(left[i]), int(top[i]), int(left[i]) + 32, int(top[i]) + 32))
        ref = ImageOps.mirror(ref) if flip[i] else ref
        ref = np.asarray(ref, np.float32).transpose(2, 0, 1) / 255.0
        ref = (ref - np.asarray(CIFAR10_MEAN, np.float32)[:, None, None]) / np.asarray(CIFAR10_STD, np.float32)[:, None, None]
        np.testing.assert_allclose(got[i], ref, rtol=1e-5, atol=1e-5)


def test_schedules():
    lrs = [lr_at(e, 0.01, [15, 30]) for e in range(40)]
    assert lrs[0] == lrs[14] == 0.01
    assert lrs[15] == pytest.approx(0.001) and lrs[29] == pytest.approx(0.001)
    assert lrs[30] == pytest.approx(0.0001) and lrs[39] == pytest.approx(0.0001)
    w = [warmup_factor(e, 10) for e in range(12)]
    assert w[0] == pytest.approx(0.1) and w[4] == pytest.approx(0.5) and w[9] == w[11] == 1.0


def test_accuracy_is_sample_weighted_with_a_partial_last_batch():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(130, 10)), rng.integers(0, 10, size=130)
    logits[:100][np.arange(100), labels[:100]] += 10  # the first 100 are right, the last 30 mostly wrong
    acc = EvalAccumulator(10)
    per_batch = []
    for start in range(0, 130, 64):  # batches of 64, 64, 2
        sl = slice(start, start + 64)
        acc.add(logits[sl], labels[sl], loss_sum=0.0)
        per_batch.append(batch_accuracy(logits[sl], labels[sl])["top1"])
    exact = 100.0 * (logits.argmax(1) == labels).mean()
    assert acc.result()["top1"] == pytest.approx(exact)
    assert abs(np.mean(per_batch) - exact) > 1.0  # the mean of batch means would be wrong here
    per_class = acc.result()["per_class"]
    for c in range(10):
        mask = labels == c
        assert per_class[c] == pytest.approx(100.0 * (logits[mask].argmax(1) == c).mean())


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    path = tmp_path / "x.ckpt"
    atomic_write(str(path), lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), crash)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.ckpt"]
