"""fitnet_loss, at_loss and rdrop_loss (issue 14's distillers) in both frameworks against float64 numpy
references written here from the papers' definitions, on ordinary and extreme inputs."""
import numpy as np
import pytest
import torch

import jittor as jt
from jittor_ import distillers as jt_distillers
from torch_ import distillers as th_distillers


# ------------------------------------------------------------------ float64 references
def at_map64(f, p):
    """|f|^p averaged over channels, flattened, divided by its L2 norm (0 for an all-zero map)."""
    a = (np.abs(np.asarray(f, np.float64)) ** p).mean(1).reshape(len(f), -1)
    norm = np.sqrt((a ** 2).sum(1, keepdims=True))
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)


def block_mean64(f, size):
    n, c, h, w = f.shape
    return np.asarray(f, np.float64).reshape(n, c, size, h // size, size, w // size).mean((3, 5))


def at_ref(fs_list, ft_list, p):
    total = 0.0
    for fs, ft in zip(fs_list, ft_list):
        size = min(fs.shape[2], ft.shape[2])
        total += ((at_map64(block_mean64(fs, size), p) - at_map64(block_mean64(ft, size), p)) ** 2).mean()
    return total


def rdrop_ref(a, b):
    def log_softmax(z):
        z = np.asarray(z, np.float64)
        return z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    la, lb = log_softmax(a), log_softmax(b)
    kl = lambda lp, lq: (np.exp(lp) * (lp - lq)).sum(1)
    return (0.5 * (kl(la, lb) + kl(lb, la))).mean()


# ------------------------------------------------------------------ framework calls
CALLS = {
    "torch": (th_distillers, torch.tensor, lambda v: float(v.item() if hasattr(v, "item") else v)),
    "jittor": (jt_distillers, jt.array, lambda v: float(v.item() if hasattr(v, "item") else v)),
}
FEATS_T = [(8, 64, 16, 16), (8, 128, 8, 8), (8, 256, 4, 4)]  # CIFAR10Quick's three stages
FEATS_S = [(8, 32, 16, 16), (8, 32, 8, 8), (8, 64, 4, 4)]  # CIFAR10Simple's


def feats(shapes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("fw", ["torch", "jittor"])
@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e20])  # ordinary, tiny, huge (|f|^2 overflows float32 at 1e20)
def test_at_loss_matches_float64(fw, scale):
    module, array, value = CALLS[fw]
    fs, ft = feats(FEATS_S, 1, scale), feats(FEATS_T, 2, scale)
    got = value(module.at_loss([array(f) for f in fs], [array(f) for f in ft], 2))
    assert np.isfinite(got) and got == pytest.approx(at_ref(fs, ft, 2), rel=1e-5)


@pytest.mark.parametrize("fw", ["torch", "jittor"])
def test_at_loss_pools_the_larger_feature_and_handles_zero_features(fw):
    module, array, value = CALLS[fw]
    fs, ft = feats([(4, 16, 8, 8)], 3), feats([(4, 32, 4, 4)], 4)  # student 8x8 against teacher 4x4
    got = value(module.at_loss([array(f) for f in fs], [array(f) for f in ft], 2))
    assert got == pytest.approx(at_ref(fs, ft, 2), rel=1e-5)
    zero = [np.zeros((4, 16, 4, 4), np.float32)]  # the zero map against a unit map: 1 / (H W) per sample
    got = value(module.at_loss([array(f) for f in zero], [array(f) for f in ft], 2))
    assert np.isfinite(got) and got == pytest.approx(at_ref(zero, ft, 2), rel=1e-5)
    assert value(module.at_loss([array(f) for f in ft], [array(f) for f in ft], 2)) == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("fw", ["torch", "jittor"])
def test_fitnet_loss_matches_float64(fw):
    module, array, value = CALLS[fw]
    fs, ft = feats([(8, 64, 16, 16)], 5)[0], feats([(8, 64, 16, 16)], 6)[0]
    expected = ((fs.astype(np.float64) - ft) ** 2).mean()
    assert value(module.fitnet_loss(array(fs), array(ft))) == pytest.approx(expected, rel=1e-6)
    zero = np.zeros_like(ft)
    assert value(module.fitnet_loss(array(zero), array(zero))) == 0.0


@pytest.mark.parametrize("fw", ["torch", "jittor"])
@pytest.mark.parametrize("scale", [3.0, 3000.0])  # ordinary logits, and logits in the thousands
def test_rdrop_loss_matches_float64_and_is_zero_for_identical_passes(fw, scale):
    module, array, value = CALLS[fw]
    rng = np.random.default_rng(7)
    a, b = (scale * rng.standard_normal((2, 16, 10))).astype(np.float32)
    got = value(module.rdrop_loss(array(a), array(b)))
    assert np.isfinite(got) and got == pytest.approx(rdrop_ref(a, b), rel=1e-5)
    assert value(module.rdrop_loss(array(a), array(a))) == 0.0


def test_at_loss_gradients_are_finite_and_agree_for_huge_activations():
    """At 1e20, |f|^2 overflows float32; the scaled map keeps the gradient finite, the same in both."""
    fs, ft = feats(FEATS_S[:1], 8, 1e20), feats(FEATS_T[:1], 9, 1e20)
    xs = torch.tensor(fs[0], requires_grad=True)
    th_distillers.at_loss([xs], [torch.tensor(ft[0])], 2).backward()
    js = jt.array(fs[0])
    grad_jt = jt.grad(jt_distillers.at_loss([js], [jt.array(ft[0])], 2), js).numpy()
    grad_th = xs.grad.numpy()
    assert np.isfinite(grad_th).all() and np.isfinite(grad_jt).all() and np.abs(grad_th).max() > 0
    assert np.allclose(grad_jt, grad_th, rtol=1e-3, atol=1e-6 * np.abs(grad_th).max())
