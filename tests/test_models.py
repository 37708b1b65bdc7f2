"""Models: same names, shapes, initial values and outputs in both frameworks; BatchNorm statistics agree."""
import numpy as np
import pytest
import torch

from common.config import MODELS
from common.errors import CheckpointError, UserError
import jittor as jt
from jittor_ import models as jm, parallel as jp
from torch_ import device as td, models as tm

ARCHS = list(tm.ARCHS)


def num_classes(arch):
    """The original experiment's models are CIFAR-10 ones; mdistiller's zoo is tested at CIFAR-100's 100 classes."""
    return 10 if arch in ("cifar10quick", "cifar10simple") else 100


def test_same_architectures_listed():
    assert list(tm.ARCHS) == list(jm.ARCHS) == MODELS


@pytest.mark.parametrize("arch", ARCHS)
def test_same_state_names_shapes_and_initial_values(arch):
    n = num_classes(arch)
    t, j = tm.build_model(arch, seed=3, num_classes=n), jm.build_model(arch, seed=3, num_classes=n)
    ts, js = tm.get_state(t), jm.get_state(j)
    assert list(ts) == list(js)  # same names, same order
    for name in ts:
        assert ts[name].shape == js[name].shape, name
        np.testing.assert_array_equal(ts[name], js[name], err_msg=name)
    other = tm.get_state(tm.build_model(arch, seed=4, num_classes=n))
    assert any(not np.array_equal(ts[k], other[k]) for k in ts)  # the seed matters


def test_parameter_counts_of_the_original_models():
    count = lambda m: sum(p.numel() for p in m.parameters())
    # teacher: convs 1,792 + 73,856 + 295,168, BN 896, fc 4,195,328 + 10,250; student: convs 2.4k+25.6k+51.3k, fc 65.6k + 650
    assert count(tm.build_model("cifar10quick")) == 4_577_290
    assert count(tm.build_model("cifar10simple")) == 145_578


def calibrated_state(arch, n, rng):
    """Initial weights with the BN running statistics of a real batch (torch, momentum None: a plain average).

    Shifting the initial 0/1 statistics by hand instead zeroes most ReLUs of a freshly
    initialised deep net, leaving logits that do not depend on the input at all.
    """
    model = tm.build_model(arch, seed=1, num_classes=n)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model(torch.from_numpy(rng.normal(size=(4, 3, 32, 32)).astype(np.float32)))
    return tm.get_state(model)


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_logits_agree(arch):
    rng = np.random.default_rng(0)
    n = num_classes(arch)
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    # torch in channels-last, as the stages run it
    t = td.to_device(tm.build_model(arch, seed=1, num_classes=n), torch.device("cpu"))
    j = jm.build_model(arch, seed=1, num_classes=n)
    state = calibrated_state(arch, n, rng)  # non-trivial BN statistics, the same in both
    tm.load_state(t, state, "test")
    jm.load_state(j, state, "test")
    t.eval()
    j.eval()
    with torch.no_grad():
        out_t = t(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
    out_j = j(jt.array(x)).numpy()
    assert out_t.shape == (2, n)
    assert np.abs(out_t[0] - out_t[1]).max() > 0.01 * np.abs(out_t).max()  # the logits depend on the input
    np.testing.assert_allclose(out_j, out_t, rtol=1e-4, atol=1e-4 * np.abs(out_t).max())


def test_batchnorm_running_statistics_agree():
    """Jittor's stock BatchNorm stores the biased variance; our subclass stores torch's unbiased one."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 5, 5)) * 3 + 1).astype(np.float32)
    tb, jb = torch.nn.BatchNorm2d(3), jp.BatchNorm2d(3)
    tb.train()
    jb.train()
    for _ in range(3):
        yt = tb(torch.from_numpy(x)).detach().numpy()
        yj = jb(jt.array(x)).numpy()
    np.testing.assert_allclose(yj, yt, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jb.running_mean.numpy(), tb.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(jb.running_var.numpy(), tb.running_var.numpy(), rtol=1e-5)
    stock = jt.nn.BatchNorm2d(3)
    stock(jt.array(x))
    assert not np.allclose(stock.running_var.numpy(), tb.running_var.numpy(), rtol=1e-4)  # the pitfall is real
    assert jb.momentum == tb.momentum == 0.1 and jb.eps == tb.eps == 1e-5


def test_load_state_names_first_mismatch():
    model = tm.build_model("cifar10simple")
    state = tm.get_state(model)
    state["fc1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(CheckpointError, match="fc1.weight"):
        tm.load_state(model, state, "bad")
    del state["fc1.weight"]
    with pytest.raises(CheckpointError, match="missing weight 'fc1.weight'"):
        jm.load_state(jm.build_model("cifar10simple"), state, "bad")


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="unknown model 'resnet9000'"):
        tm.build_model("resnet9000")
    with pytest.raises(UserError, match="unknown model"):
        jm.build_model("resnet9000")
