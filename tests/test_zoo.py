"""mdistiller's CIFAR model zoo: its sizes and weight names, and training steps that agree across frameworks.

tests/test_models.py already runs every model (zoo included) through the same-state and
eval-logits checks; this file holds what is specific to the zoo.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import build_config, MODELS
from common.errors import UserError
from common.weights import is_buffer
import jittor as jt
from jittor_ import engine as je, models as jm
from torch_ import dataset as tds, device as td, engine as te, models as tm
from torch_.distillers import METHODS

# Parameters (BN running statistics not counted) at 100 classes, measured from mdistiller's own
# models: mdistiller/models/cifar/*.py at commit e8c5bb3, each built by its cifar_model_dict entry
# with num_classes=100 and counted with sum(p.numel() for p in model.parameters()).
MDISTILLER_PARAMS = {
    "resnet32x4": 7_433_860, "resnet8x4": 1_233_540, "resnet20": 278_324, "resnet32": 472_756,
    "resnet56": 861_620, "resnet110": 1_736_564, "wrn_16_2": 703_284, "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156, "vgg8": 3_965_028, "vgg13": 9_462_180, "MobileNetV2": 812_836,
    "ShuffleV1": 949_258, "ShuffleV2": 1_355_528, "ResNet50": 23_705_252,
}

# A few of mdistiller's weight names (and shapes where grouping shows) per family, as its checkpoints hold them.
MDISTILLER_NAMES = {
    "resnet20": {"conv1.weight": (16, 3, 3, 3), "layer1.2.bn2.running_var": (16,),
                 "layer2.0.downsample.0.weight": (32, 16, 1, 1), "layer3.0.downsample.1.bias": (64,),
                 "fc.weight": (100, 64)},
    "ResNet50": {"layer1.0.shortcut.0.weight": (256, 64, 1, 1), "layer4.2.bn3.running_mean": (2048,),
                 "linear.weight": (100, 2048)},
    "wrn_40_2": {"block1.layer.0.bn1.weight": (16,), "block1.layer.0.convShortcut.weight": (32, 16, 1, 1),
                 "block3.layer.5.conv2.weight": (128, 128, 3, 3), "bn1.running_var": (128,), "fc.bias": (100,)},
    "vgg13": {"block0.0.weight": (64, 3, 3, 3), "block0.0.bias": (64,), "block0.1.running_mean": (64,),
              "block0.3.weight": (64, 64, 3, 3), "block4.4.bias": (512,), "classifier.weight": (100, 512)},
    "MobileNetV2": {"conv1.0.weight": (16, 3, 3, 3), "conv1.1.running_var": (16,),
                    "blocks.1.0.conv.3.weight": (48, 1, 3, 3), "blocks.6.0.conv.7.bias": (160,),
                    "conv2.0.weight": (1280, 160, 1, 1), "classifier.0.weight": (100, 1280)},
    "ShuffleV1": {"layer1.0.conv1.weight": (54, 24, 1, 1), "layer2.0.conv1.weight": (60, 80, 1, 1),
                  "layer2.0.conv2.weight": (60, 1, 3, 3), "layer3.3.bn3.running_var": (960,),
                  "linear.weight": (100, 960)},
    "ShuffleV2": {"layer1.0.conv1.weight": (24, 1, 3, 3), "layer1.0.conv5.weight": (58, 58, 1, 1),
                  "layer2.7.bn3.running_mean": (116,), "conv2.weight": (1024, 464, 1, 1), "linear.bias": (100,)},
}
ABSENT = {"wrn_40_1": "block1.layer.0.convShortcut.weight",  # 16 -> 16 channels: identity shortcut
          "vgg8": "block0.3.weight",  # one conv per block
          "resnet20": "layer1.0.downsample.0.weight"}  # 16 -> 16 channels, stride 1: identity shortcut


def test_zoo_is_listed_under_mdistillers_names():
    assert set(MDISTILLER_PARAMS) <= set(MODELS)
    assert MODELS[:4] == ["cifar10quick", "cifar10simple", "resnet32x4", "resnet8x4"]


@pytest.mark.parametrize("arch", list(MDISTILLER_PARAMS))
def test_parameter_counts_match_mdistiller(arch):
    model = tm.build_model(arch, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == MDISTILLER_PARAMS[arch]


@pytest.mark.parametrize("arch", sorted(set(MDISTILLER_NAMES) | set(ABSENT)))
def test_mdistiller_weight_names(arch):
    shapes = tm.state_shapes(tm.build_model(arch, num_classes=100))
    for name, shape in MDISTILLER_NAMES.get(arch, {}).items():
        assert shapes.get(name) == shape, name
    if arch in ABSENT:
        assert ABSENT[arch] not in shapes


def test_mdistiller_init_schemes():
    """vgg/mobilenet: zero biases and N(0, 0.01) linear weights; wrn: zero linear bias; resnet: torch's default linear."""
    vgg = tm.get_state(tm.build_model("vgg8", seed=0, num_classes=100))
    assert not vgg["block0.0.bias"].any() and not vgg["classifier.bias"].any()
    assert abs(vgg["classifier.weight"].std() - 0.01) < 0.001
    conv = vgg["block3.0.weight"]  # N(0, 2 / fan_out), fan_out = 512 * 3 * 3
    assert abs(conv.std() / np.sqrt(2 / (512 * 9)) - 1) < 0.02
    wrn = tm.get_state(tm.build_model("wrn_16_2", seed=0, num_classes=100))
    assert not wrn["fc.bias"].any() and np.abs(wrn["fc.weight"]).max() <= 1 / np.sqrt(128)
    res = tm.get_state(tm.build_model("resnet20", seed=0, num_classes=100))
    assert res["fc.bias"].any() and np.abs(res["fc.bias"]).max() <= 1 / np.sqrt(64)


@pytest.mark.parametrize("arch", ["ShuffleV1", "MobileNetV2"])  # grouped 1x1 + channel shuffle; depthwise 3x3
def test_train_step_agrees(arch):
    """One SGD step of the stages (engine.train_step) in train mode: the same updated weights and BN running
    statistics in both frameworks."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 100, size=4)
    t = td.to_device(tm.build_model(arch, seed=2, num_classes=100), torch.device("cpu"))
    j = jm.build_model(arch, seed=2, num_classes=100)
    before = tm.get_state(t)
    t.train()
    j.train()
    # the stages' own step (engine.train_step) with a teacher run's config at lr 0.1 (the record is
    # framework-neutral; tests/test_distillers.py checks both METHODS tables agree)
    config = build_config("teacher", METHODS, model=arch, dataset="cifar100", lr=0.1)
    assert (config.method, config.momentum, config.weight_decay, config.rdrop) == ("ce", 0.9, 5e-4, 0.0)
    loss_t, logits_t, _ = te.train_step(t, None, te.make_optimizer(t, config), tds.to_tensor(x, "cpu"),
                                        torch.from_numpy(y), config)
    loss_j, _, _ = je.train_step(j, None, je.make_optimizer(j, config), jt.array(x), jt.array(y), config)
    # the step's loss is the plain cross-entropy of the logits it returns (CE weight 1 for a teacher)
    assert loss_t.item() == pytest.approx(F.cross_entropy(logits_t.detach(), torch.from_numpy(y)).item(), rel=1e-6)
    np.testing.assert_allclose(loss_j.item(), loss_t.item(), rtol=1e-5)
    ts, js = tm.get_state(t), jm.get_state(j)
    for k in ts:  # every weight and running statistic moved, in both
        assert not np.array_equal(ts[k], before[k]) and not np.array_equal(js[k], before[k]), k
    for k in filter(is_buffer, ts):  # BN statistics: the forward pass, well conditioned
        np.testing.assert_allclose(js[k], ts[k], rtol=1e-4, atol=1e-5, err_msg=k)
    # Weight updates: at initialisation, on 4 images, a BN followed by per-channel layers and another BN
    # makes some gradients near-cancelling sums, where float32 rounding shows (torch's own float32 gradients
    # differ from its float64 ones by up to 0.5% per tensor here). So: each update within 5% (or 1% of the
    # largest update), and the whole update vector within 2% (measured: 0.4% ShuffleV1, 0.003% MobileNetV2).
    weights = [k for k in ts if not is_buffer(k)]
    change_t = {k: ts[k] - before[k] for k in weights}
    change_j = {k: js[k] - before[k] for k in weights}
    scale = max(np.abs(c).max() for c in change_t.values())
    for k in weights:
        np.testing.assert_allclose(change_j[k], change_t[k], rtol=0.05, atol=0.01 * scale, err_msg=k)
    all_t, all_j = (np.concatenate([c[k].ravel() for k in weights]) for c in (change_t, change_j))
    assert np.linalg.norm(all_j - all_t) < 0.02 * np.linalg.norm(all_t)


def test_unknown_model_is_a_clear_user_error():
    for models in (tm, jm):
        with pytest.raises(UserError, match="unknown model 'resnet9000'; choose one of .*ShuffleV2"):
            models.build_model("resnet9000", num_classes=100)


def test_wrn_updates_three_bn_statistics_twice_in_training_like_mdistiller():
    """mdistiller's WRN normalises f1, f2, f3 again for its features: those BNs move 0.19 of the way, not 0.1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    t, j = tm.build_model("wrn_16_2", seed=0, num_classes=100), jm.build_model("wrn_16_2", seed=0, num_classes=100)
    calls = {}
    for name in ("bn1", "block3.layer.0.bn1", "block3.layer.1.bn1"):
        t.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    t.train()
    j.train()
    t(torch.from_numpy(x))
    j(jt.array(x))
    jt.sync_all()
    assert calls == {"bn1": 2, "block3.layer.0.bn1": 2, "block3.layer.1.bn1": 1}
    ts, js = tm.get_state(t), jm.get_state(j)
    for name in ts:
        if "running" in name:
            np.testing.assert_allclose(js[name], ts[name], rtol=1e-4, atol=1e-6, err_msg=name)
    calls.clear()
    t.eval()
    t(torch.from_numpy(x))
    assert calls == {"bn1": 1, "block3.layer.0.bn1": 1, "block3.layer.1.bn1": 1}  # eval: no extra calls
