"""forward_features (mdistiller's feats and pooled_feat, read by forward hooks) and FitNet's ConvReg,
in both frameworks: shapes as mdistiller's models give them, the same numbers in torch and Jittor,
the original pair's stages rebuilt by hand, the plain forward untouched."""
import numpy as np
import pytest
import torch

import jittor as jt
from jittor_ import features as jf, models as jm
from torch_ import features as tf, models as tm

# (C, H) of each entry of mdistiller's feats for a 32x32 input, from mdistiller's own forwards (run against
# ours when this was written, every zoo model matching to 1e-5), and CIFAR10Quick/Simple's stages
EXPECTED = {
    "cifar10quick": [(64, 16), (128, 8), (256, 4)],
    "cifar10simple": [(32, 16), (32, 8), (64, 4)],
    "resnet20": [(16, 32), (16, 32), (32, 16), (64, 8)],
    "resnet8x4": [(32, 32), (64, 32), (128, 16), (256, 8)],
    "wrn_40_1": [(16, 32), (16, 32), (32, 16), (64, 8)],
    "wrn_16_2": [(16, 32), (32, 32), (64, 16), (128, 8)],
    "vgg8": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)],
    "MobileNetV2": [(16, 16), (12, 16), (16, 8), (48, 4), (160, 2)],
    "ShuffleV1": [(24, 32), (240, 16), (480, 8), (960, 4)],
    "ShuffleV2": [(24, 32), (116, 16), (232, 8), (464, 4)],
    "ResNet50": [(64, 32), (256, 32), (512, 16), (1024, 8), (2048, 4)],
}
POOLED = {"cifar10quick": 1024, "cifar10simple": 64, "resnet20": 64, "resnet8x4": 256, "wrn_40_1": 64,
          "wrn_16_2": 128, "vgg8": 512, "MobileNetV2": 1280, "ShuffleV1": 960, "ShuffleV2": 1024, "ResNet50": 2048}


def images(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def pair(arch, seed=0):
    """The model in both frameworks with the same weights, BN statistics made non-trivial, eval mode."""
    t = tm.build_model(arch, seed)
    rng = np.random.default_rng(seed + 7)
    state = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) if "running_mean" in k
             else (v * rng.uniform(0.5, 1.5, v.shape)).astype(np.float32) if "running_var" in k else v
             for k, v in tm.get_state(t).items()}
    tm.load_state(t, state, "test")
    j = jm.build_model(arch, seed)
    jm.load_state(j, state, "test")
    t.eval()
    j.eval()
    return t, j


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_features_shapes_and_frameworks_agree(arch):
    t, j = pair(arch)
    x = images()
    with torch.no_grad():
        logits_t, ft = tf.forward_features(t, torch.from_numpy(x))
        plain_t = t(torch.from_numpy(x))
    logits_j, fj = jf.forward_features(j, jt.array(x))
    assert [(f.shape[1], f.shape[2]) for f in ft["feats"]] == EXPECTED[arch]
    assert [(f.shape[1], f.shape[2]) for f in fj["feats"]] == EXPECTED[arch]
    assert tuple(ft["pooled_feat"].shape) == tuple(fj["pooled_feat"].shape) == (2, POOLED[arch])
    # the hooks change nothing: the logits are the plain forward's
    assert torch.equal(logits_t, plain_t)
    for a, b in zip(ft["feats"] + [ft["pooled_feat"], logits_t], fj["feats"] + [fj["pooled_feat"], logits_j]):
        a, b = a.numpy(), b.numpy()
        assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max()), arch
    # hooks are gone after the call: a later forward records nothing
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in t.modules())
    assert all(not hasattr(m, "__fhook__") and not hasattr(m, "__fhook2__") for m in j.modules())


@pytest.mark.parametrize("arch", ["resnet20", "vgg8", "ShuffleV2", "MobileNetV2"])
def test_pooled_feat_is_what_the_classifier_reads(arch):
    t, _ = pair(arch)
    with torch.no_grad():
        logits, f = tf.forward_features(t, torch.from_numpy(images()))
        assert torch.allclose(tf.submodule(t, t.CLASSIFIER)(f["pooled_feat"]), logits, atol=1e-5)


def test_original_pair_stages_rebuilt_by_hand():
    """CIFAR10Quick's and CIFAR10Simple's three stages, written out here from their definitions."""
    x = torch.from_numpy(images(3, 1))
    q, _ = pair("cifar10quick")
    s, _ = pair("cifar10simple")
    with torch.no_grad():
        _, fq = tf.forward_features(q, x)
        _, fs = tf.forward_features(s, x)
        h = x
        for conv, bn, f in zip([q.conv1, q.conv2, q.conv3], [q.bn1, q.bn2, q.bn3], fq["feats"]):
            h = torch.nn.functional.max_pool2d(torch.relu(bn(conv(h))), 2)
            assert torch.equal(h, f)
        h = x
        for conv, f in zip([s.conv1, s.conv2, s.conv3], fs["feats"]):
            h = torch.nn.functional.max_pool2d(conv(h), 2)
            assert torch.equal(h, f)
        assert torch.allclose(s.fc2(s.fc1(fs["feats"][2].reshape(3, -1))), s(x), atol=1e-6)


def test_features_in_training_mode_carry_gradients():
    """The features are the forward's own tensors: a loss on them reaches the weights that made them."""
    s = tm.build_model("cifar10simple", 0)
    s.train()
    _, f = tf.forward_features(s, torch.from_numpy(images()))
    f["feats"][1].pow(2).mean().backward()
    assert s.conv2.weight.grad is not None and s.conv2.weight.grad.abs().sum() > 0
    assert s.conv3.weight.grad is None  # after the hint: untouched
    j = jm.build_model("cifar10simple", 0)
    j.train()
    _, f = jf.forward_features(j, jt.array(images()))
    grads = jt.grad(f["feats"][1].sqr().mean(), [j.conv2.weight, j.conv3.weight])
    assert np.abs(grads[0].numpy()).sum() > 0 and np.abs(grads[1].numpy()).sum() == 0


@pytest.mark.parametrize("s_shape,t_shape,kind,kernel", [
    ((32, 8, 8), (128, 8, 8), "Conv2d", (1, 1)),  # equal sizes: 1x1 (the original pair, hint at stage 2)
    ((480, 8, 8), (128, 16, 16), "ConvTranspose2d", (4, 4)),  # res32x4 -> ShuffleV1: half the teacher's size
    ((64, 32, 32), (64, 16, 16), "Conv2d", (3, 3)),  # twice: 3x3 stride 2
    ((16, 10, 10), (32, 8, 8), "Conv2d", (3, 3)),  # larger by 2: a (1 + 2) x (1 + 2) conv
])
def test_conv_reg_maps_student_to_teacher_shape_in_both_frameworks(s_shape, t_shape, kind, kernel):
    rt, rj = tm.build_regressor(s_shape, t_shape, 3), jm.build_regressor(s_shape, t_shape, 3)
    assert type(rt.conv).__name__ == kind and tuple(rt.conv.weight.shape[2:]) == kernel
    state = tm.get_state(rt)
    assert all(np.array_equal(state[k], v) for k, v in jm.get_state(rj).items())  # same seeded init
    # its own stream: not the numbers of a model seeded alike
    assert not np.allclose(state["conv.weight"].ravel()[:10], tm.get_state(tm.build_model("cifar10simple", 3))["conv1.weight"].ravel()[:10])
    x = np.random.default_rng(0).standard_normal((4, *s_shape)).astype(np.float32)
    yt = rt(torch.from_numpy(x)).detach().numpy()
    yj = rj(jt.array(x)).numpy()
    assert yt.shape == (4, *t_shape) and yt.min() >= 0  # ReLU(BN(.))
    assert np.abs(yt - yj).max() < 1e-4


def test_conv_reg_refuses_what_mdistiller_cannot_map():
    from common.errors import UserError
    with pytest.raises(UserError, match="hint-layer"):
        tm.ConvReg((32, 4, 4), (64, 16, 16))
    with pytest.raises(UserError, match="hint-layer"):
        jm.ConvReg((32, 4, 4), (64, 16, 16))


def test_feature_shapes_leaves_training_mode_and_statistics_alone():
    t = tm.build_model("resnet8x4", 0)
    t.train()
    before = tm.get_state(t)
    assert tf.feature_shapes(t)[2] == (128, 16, 16)
    assert t.training and all(np.array_equal(before[k], v) for k, v in tm.get_state(t).items())
    j = jm.build_model("resnet8x4", 0)
    j.train()
    assert jf.feature_shapes(j)[2] == (128, 16, 16)
    assert j.is_training() and all(np.array_equal(before[k], v) for k, v in jm.get_state(j).items())


@pytest.mark.parametrize("models", [tm, jm], ids=["torch", "jittor"])
def test_set_dropout(models):
    q = models.set_dropout(models.build_model("cifar10quick", 0), 0.3)
    assert q.dropout.p == 0.3
    from common.errors import UserError
    with pytest.raises(UserError, match="no dropout layer"):
        models.set_dropout(models.build_model("cifar10simple", 0), 0.3)
