"""kd_loss / dkd_loss in both frameworks against a float64 numpy reference, ordinary and extreme inputs."""
import numpy as np
import pytest
import torch

import jittor as jt
from jittor_ import distillers as jt_distillers
from torch_ import distillers as th_distillers


# ------------------------------------------------------------------ float64 reference
def log_softmax64(z):
    z = np.asarray(z, np.float64)
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


def kl64(log_p, log_q):
    p = np.exp(log_p)
    return np.where(p > 0, p * (log_p - log_q), 0.0).sum(1)


def kd_ref(s, t, T):
    return kl64(log_softmax64(np.asarray(t, np.float64) / T), log_softmax64(np.asarray(s, np.float64) / T)).mean() * T * T


def dkd_ref(s, t, y, alpha, beta, T):
    """DKD by its definition, per sample, with exact masking (no -1000 trick)."""
    tck, nck = [], []
    for zs, zt, c in zip(np.asarray(s, np.float64) / T, np.asarray(t, np.float64) / T, y):
        others = np.arange(len(zs)) != c

        def binary(z):
            lse = np.logaddexp.reduce(z)
            return np.array([z[c] - lse, np.logaddexp.reduce(z[others]) - lse])

        tck.append(kl64(binary(zt)[None], binary(zs)[None])[0])
        nck.append(kl64(log_softmax64(zt[others][None]), log_softmax64(zs[others][None]))[0])
    return (alpha * np.mean(tck) + beta * np.mean(nck)) * T * T


# ------------------------------------------------------------------ framework calls
def th_kd(s, t, T):
    return th_distillers.kd_loss(torch.tensor(s), torch.tensor(t), T).item()


def jt_kd(s, t, T):
    return jt_distillers.kd_loss(jt.array(s), jt.array(t), T).item()


def th_dkd(s, t, y, a, b, T):
    return th_distillers.dkd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), a, b, T).item()


def jt_dkd(s, t, y, a, b, T):
    return jt_distillers.dkd_loss(jt.array(s), jt.array(t), jt.array(y), a, b, T).item()


def random_case(seed, n=64, c=10, scale=3.0):
    rng = np.random.default_rng(seed)
    s = (rng.normal(size=(n, c)) * scale).astype(np.float32)
    t = (rng.normal(size=(n, c)) * scale).astype(np.float32)
    return s, t, rng.integers(0, c, size=n).astype(np.int64)


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ordinary_logits_match_float64(seed, T):
    s, t, y = random_case(seed)
    for fn in (th_kd, jt_kd):
        assert fn(s, t, T) == pytest.approx(kd_ref(s, t, T), rel=1e-5)
    for fn in (th_dkd, jt_dkd):
        assert fn(s, t, y, 1.0, 8.0, T) == pytest.approx(dkd_ref(s, t, y, 1.0, 8.0, T), rel=1e-5)


EXTREME = {
    # teacher probabilities exactly 0 in float32 (exp(-998) underflows): the Jittor KLDivLoss NaN case
    "zero-prob teacher": (np.array([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]], np.float32),
                          np.array([[1.0, 1000.0, 2.0], [-1000.0, 5.0, 1000.0]], np.float32), np.array([1, 2])),
    # logits in the thousands, where "- 1000 * gt_mask" no longer removes the target
    # (row 3: the target leads by more than 1000, the case the trick gets wrong)
    "thousands": (np.array([[3000.0, -2000.0, 2500.0, 100.0], [-4000.0, 4000.0, 3999.0, 0.0],
                            [4000.0, -20.0, 20.0, 0.0]], np.float32),
                  np.array([[5000.0, 4990.0, -5000.0, 4995.0], [2000.0, -3000.0, 2010.0, 1990.0],
                            [3000.0, 20.0, -20.0, 0.0]], np.float32),
                  np.array([0, 1, 0])),
}


@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("case", sorted(EXTREME))
def test_extreme_logits_finite_and_correct(case, T):
    s, t, y = EXTREME[case]
    for fn in (th_kd, jt_kd):
        value = fn(s, t, T)
        assert np.isfinite(value) and value == pytest.approx(kd_ref(s, t, T), rel=1e-5, abs=1e-3)
    for fn in (th_dkd, jt_dkd):
        value = fn(s, t, y, 1.0, 8.0, T)
        assert np.isfinite(value) and value == pytest.approx(dkd_ref(s, t, y, 1.0, 8.0, T), rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("case", sorted(EXTREME))
def test_extreme_logits_give_finite_gradients(case):
    s, t, y = EXTREME[case]
    xs = torch.tensor(s, requires_grad=True)
    t_th, y_th = torch.tensor(t), torch.tensor(y)
    (th_distillers.kd_loss(xs, t_th, 4.0) + th_distillers.dkd_loss(xs, t_th, y_th, 1.0, 8.0, 4.0)).backward()
    assert torch.isfinite(xs.grad).all()
    js, t_jt, y_jt = jt.array(s), jt.array(t), jt.array(y)
    loss = jt_distillers.kd_loss(js, t_jt, 4.0) + jt_distillers.dkd_loss(js, t_jt, y_jt, 1.0, 8.0, 4.0)
    grad = jt.grad(loss, js).numpy()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, xs.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_jittor_kldivloss_pitfall_is_real():
    """The trap our losses avoid: Jittor's KLDivLoss gives NaN where the target probability is 0."""
    s, t, _ = EXTREME["zero-prob teacher"]
    log_p_s = jt.nn.log_softmax(jt.array(s), dim=1)
    p_t = jt.nn.softmax(jt.array(t), dim=1)
    assert (p_t.numpy() == 0).any()
    naive = jt.nn.KLDivLoss(reduction="batchmean")(log_p_s, p_t).item()
    assert not np.isfinite(naive)  # if Jittor ever fixes this, the test tells us
    assert np.isfinite(jt_kd(s, t, 1.0))


def test_minus_1000_mask_trick_is_wrong_for_large_logits():
    """mdistiller's NCKD masks the target with "- 1000 * gt_mask"; with logits/T in the thousands that
    leaves the target in the 'non-target' distribution. Our masking matches the definition."""
    s, t, y = EXTREME["thousands"]
    T = 1.0
    gt = torch.nn.functional.one_hot(torch.tensor(y), s.shape[1]).float()
    zs, zt = torch.tensor(s) / T, torch.tensor(t) / T
    p_t2 = torch.softmax(zt - 1000.0 * gt, 1)
    log_p_s2 = torch.log_softmax(zs - 1000.0 * gt, 1)
    trick_nckd = (p_t2 * (torch.log(p_t2.clamp_min(1e-30)) - log_p_s2)).sum(1).mean().item()
    ours = th_distillers.dkd_loss_terms(torch.tensor(s), torch.tensor(t), torch.tensor(y), T)["nckd"].item()
    ref = dkd_ref(s, t, y, 0.0, 1.0, T)
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-3)
    assert abs(trick_nckd - ref) > 1.0


def test_each_dkd_term_matches_its_definition():
    """TCKD and NCKD one by one (what the logs show as train/loss_tckd and loss_nckd), in both frameworks,
    against the per-sample float64 definition; and the weights alpha, beta applied to the right term."""
    s, t, y = random_case(5)
    ref_tckd, ref_nckd = dkd_ref(s, t, y, 1.0, 0.0, 4.0), dkd_ref(s, t, y, 0.0, 1.0, 4.0)
    assert ref_tckd > 0.01 and ref_nckd > 0.01 and abs(ref_tckd - ref_nckd) > 0.01  # a swap would show
    th = th_distillers.dkd_loss_terms(torch.tensor(s), torch.tensor(t), torch.tensor(y), 4.0)
    jt_terms = jt_distillers.dkd_loss_terms(jt.array(s), jt.array(t), jt.array(y), 4.0)
    for terms in (th, jt_terms):
        assert terms["tckd"].item() == pytest.approx(ref_tckd, rel=1e-5)
        assert terms["nckd"].item() == pytest.approx(ref_nckd, rel=1e-5)
    for dkd in (th_dkd, jt_dkd):
        assert dkd(s, t, y, 2.0, 3.0, 4.0) == pytest.approx(2.0 * ref_tckd + 3.0 * ref_nckd, rel=1e-5)


def test_identical_distributions_give_zero_loss():
    s, _, y = random_case(3)
    assert abs(th_kd(s, s, 4.0)) < 1e-5 and abs(jt_kd(s, s, 4.0)) < 1e-5
    assert abs(th_dkd(s, s, y, 1.0, 8.0, 4.0)) < 1e-4 and abs(jt_dkd(s, s, y, 1.0, 8.0, 4.0)) < 1e-4
