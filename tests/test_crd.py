"""CRD (mdistiller's) in both frameworks: the NCE loss and one whole forward of the modules (embeddings, scores
against the memory banks, the normalisation constants, the memory update) against float64 references written here
from mdistiller's ContrastMemory and ContrastLoss; the sampling of negatives (mdistiller's "exact" mode) and its
stream; the setup (seeded alike in both frameworks, a memory row per training image) and its one-line refusals.
The kill-and-resume run (memory banks and sampling stream): tests/test_resume.py; both frameworks' steps:
tests/test_align.py."""
import types

import numpy as np
import pytest
import torch

import jittor as jt
from common.config import build_config, FRAMEWORKS
from common.contrast import contrast_rng, default_k, draw_contrast, negatives_by_class
from common.errors import UserError
from jittor_ import device as jd, distillers as jdist, models as jm
from torch_ import device as td, distillers as tdist, models as tm

FW = {"torch": (tdist, tm, td, torch.tensor), "jittor": (jdist, jm, jd, jt.array)}


def f64(x):
    return np.asarray(x, np.float64)


def nce_ref(x, num_data, eps=1e-7):
    """Tian et al.'s NCE loss as mdistiller's ContrastLoss: log D1 of each positive, log D0 of each negative, against
    noise m / num_data; their sum, negated, over the batch."""
    x, m = f64(x), x.shape[1] - 1
    noise = m / num_data
    d1 = np.log(x[:, 0] / (x[:, 0] + noise + eps))
    d0 = np.log(noise / (x[:, 1:] + noise + eps))
    return -(d1.sum() + d0.sum()) / len(x)


def embed_ref(state, prefix, f):
    """mdistiller's Embed in float64: linear, then L2-normalised."""
    x = f64(f).reshape(len(f), -1) @ f64(state[f"{prefix}.linear.weight"]).T + f64(state[f"{prefix}.linear.bias"])
    return x / np.sqrt((x ** 2).sum(1, keepdims=True))


def scores_ref(state, f_s, f_t, rows, temperature):
    """ContrastMemory's scores exp(memory[rows] . v / T) of each view against the other's memory: (out_v1, out_v2),
    and the two embeddings."""
    v1, v2 = embed_ref(state, "embed_s", f_s), embed_ref(state, "embed_t", f_t)
    out_v2 = np.exp(np.einsum("bkd,bd->bk", f64(state["memory_v1"])[rows], v2) / temperature)
    out_v1 = np.exp(np.einsum("bkd,bd->bk", f64(state["memory_v2"])[rows], v1) / temperature)
    return out_v1, out_v2, v1, v2


def crd_ref(state, f_s, f_t, index, rows, z=None, temperature=0.07, momentum=0.5):
    """mdistiller's CRD.crd_loss in float64: the two views' scores, Z = the mean score x num_data where z is not given
    (the first batch), the two NCE losses; then the memory rows of the batch moved by the momentum and normalised.
    Returns (loss, memory_v1, memory_v2, z)."""
    out_v1, out_v2, v1, v2 = scores_ref(state, f_s, f_t, rows, temperature)
    n = len(state["memory_v1"])
    z = (out_v1.mean() * n, out_v2.mean() * n) if z is None else tuple(f64(z))
    loss = nce_ref(out_v1 / z[0], n) + nce_ref(out_v2 / z[1], n)
    memory_v1, memory_v2 = f64(state["memory_v1"]), f64(state["memory_v2"])
    for memory, v in ((memory_v1, v1), (memory_v2, v2)):
        moved = memory[index] * momentum + v * (1 - momentum)
        memory[index] = moved / np.sqrt((moved ** 2).sum(1, keepdims=True))
    return loss, memory_v1, memory_v2, z


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", ["ordinary", "batch of one", "tiny scores", "large scores"])
def test_contrast_loss_matches_float64(fw, case):
    distillers, _, _, tensor = FW[fw]
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 3.0, (1 if case == "batch of one" else 8, 65)).astype(np.float32) / 300
    x = x * {"tiny scores": 1e-6, "large scores": 1e6}.get(case, 1.0)
    got, expected = float(distillers.contrast_loss(tensor(x), 300).item()), nce_ref(x, 300)
    assert abs(got - expected) <= 1e-5 * abs(expected), (got, expected)


def crd_modules(fw, data, **flags):
    """The framework's CRD modules from its setup on the own pair, on the tiny data (200 training rows)."""
    distillers, models, devices, _ = FW[fw]
    config = build_config("student", distillers.METHODS, method="crd", data_dir=data, train_size=200, val_size=50,
                          **flags)
    student, teacher = models.build_model("cifar10simple", 0), models.build_model("cifar10quick", 1)
    teacher.eval()
    return config, distillers.METHODS["crd"].setup(config, student, teacher, devices.select_device("cpu"))["crd"]


def test_crd_setup_is_seeded_alike_with_a_row_per_training_image(tiny_data):
    states = {fw: FW[fw][1].get_state(crd_modules(fw, tiny_data)[1]) for fw in FRAMEWORKS}
    assert sorted(states["torch"]) == sorted(states["jittor"])
    assert all(np.array_equal(states["torch"][k], states["jittor"][k]) for k in states["torch"])
    state = states["torch"]
    assert state["memory_v1"].shape == state["memory_v2"].shape == (200, 128)
    bound = 1 / np.sqrt(128 / 3)  # mdistiller's stdv
    assert np.abs(state["memory_v1"]).max() <= bound and np.abs(state["memory_v1"]).max() > 0.99 * bound
    assert not np.array_equal(state["memory_v1"], state["memory_v2"])
    assert list(state["z"]) == [-1, -1] and list(state["draws"]) == [0]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_crd_forward_matches_mdistillers_contrast_memory(fw, tiny_data):
    """Two batches: the first sets Z from its scores, the second keeps it; each draws its own negatives from the
    stream of its position; loss and updated memories against crd_ref, in float64."""
    _, models, _, tensor = FW[fw]
    config, crd = crd_modules(fw, tiny_data)
    rng = np.random.default_rng(2)
    negatives = negatives_by_class(crd.labels, 10)
    drawn = []
    for draw, index in enumerate((np.arange(8), np.arange(8, 24, 2))):
        state = models.get_state(crd)
        f_s, f_t = rng.standard_normal((8, 64)).astype(np.float32), rng.standard_normal((8, 1024)).astype(np.float32)
        rows = draw_contrast(index, crd.labels[index], negatives, crd.k, contrast_rng(config.seed, draw))
        drawn.append(rows)
        # Z: set by the first batch, then kept
        loss, memory_v1, memory_v2, z = crd_ref(state, f_s, f_t, index, rows, None if draw == 0 else state["z"])
        got = float(crd(tensor(f_s), tensor(f_t), index).item())
        after = models.get_state(crd)
        assert abs(got - loss) <= 1e-5 * abs(loss), (draw, got, loss)
        assert np.abs(after["memory_v1"] - memory_v1).max() < 1e-6 and np.abs(after["memory_v2"] - memory_v2).max() < 1e-6
        untouched = np.setdiff1d(np.arange(200), index)
        assert np.array_equal(after["memory_v1"][untouched], state["memory_v1"][untouched])
        if draw == 0:
            assert np.allclose(after["z"], z, rtol=1e-6)
        else:
            assert np.array_equal(after["z"], state["z"])
        assert after["draws"][0] == draw + 1
    assert not np.array_equal(drawn[0][:, 1:], drawn[1][:, 1:])


def test_negatives_are_other_classes_drawn_as_mdistiller_draws():
    labels = np.repeat(np.arange(10), 20)  # 200 rows, 180 negatives per class
    negatives = negatives_by_class(labels, 10)
    index = np.array([0, 25, 199])
    few = draw_contrast(index, labels[index], negatives, 50, contrast_rng(0, 0))
    assert few.shape == (3, 51) and list(few[:, 0]) == list(index)
    for b, i in enumerate(index):
        assert (labels[few[b, 1:]] != labels[i]).all()
        assert len(set(few[b, 1:])) == 50  # K <= 180: without replacement
    many = draw_contrast(index, labels[index], negatives, 500, contrast_rng(0, 0))
    assert len(set(many[0, 1:])) <= 180 and (labels[many[0, 1:]] != 0).all()  # K > 180: with replacement
    assert np.array_equal(few, draw_contrast(index, labels[index], negatives, 50, contrast_rng(0, 0)))
    assert not np.array_equal(few, draw_contrast(index, labels[index], negatives, 50, contrast_rng(0, 1)))


def test_default_k_is_mdistillers_share_of_the_training_split():
    assert default_k(50000) == 16384 and default_k(5000) == 1638 and default_k(250) == 82 and default_k(1) == 1


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_crd_refuses_what_its_memory_bank_cannot_do(fw, tiny_data, monkeypatch):
    distillers = FW[fw][0]
    with pytest.raises(UserError, match="R-Drop's two passes would update it twice"):
        crd_modules(fw, tiny_data, rdrop=5.0)
    with pytest.raises(UserError, match="--crd-k 0"):
        crd_modules(fw, tiny_data, crd_k=0)
    monkeypatch.setattr(distillers, "launch", lambda: types.SimpleNamespace(world_size=2))
    with pytest.raises(UserError) as e:
        crd_modules(fw, tiny_data)
    assert "runs on one process" in str(e.value) and "\n" not in str(e.value)
