"""OFD and ReviewKD (mdistiller's) in both frameworks: OFD's partial L2 and margins, ReviewKD's hierarchical context
loss and its fusion modules, each against a float64 reference written here from the papers' definitions (the margin
by numerical integration, the modules with torch's own interpolation and pooling in float64, as mdistiller calls
them); the setups (pre-activation features, the same seeded modules in both frameworks, mdistiller's shapes for its
resnet32x4 -> resnet8x4 pair) and their one-line refusals. Both frameworks' training steps: tests/test_align.py."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jittor as jt
from common.config import build_config, FRAMEWORKS
from common.errors import UserError
from common.weights import ofd_margins
from jittor_ import device as jd, distillers as jdist, features as jf, models as jm
from torch_ import device as td, distillers as tdist, features as tf, models as tm

FW = {"torch": (tdist, tm, td, tf, torch.tensor), "jittor": (jdist, jm, jd, jf, jt.array)}
REL = 1e-5  # float32 against float64, relative


def f64(x):
    return np.asarray(x, np.float64)


def close(got, expected, rel=REL, floor=1e-9):
    return np.isfinite(got) and abs(got - expected) <= rel * abs(expected) + floor


def value(v):
    return float(v.item())


# ------------------------------------------------------------------ float64 references
def feat_loss_ref(source, target, margin):
    """Heo et al.'s distillation loss from the paper's definition: the teacher's response through the margin ReLU,
    t' = max(t, m); the partial L2 d(t', s) = 0 where s <= t' <= 0, else (t' - s)^2; the mean over the batch of the
    sum over channels and positions."""
    s, t = f64(source), f64(target)
    t = np.maximum(t, f64(margin).reshape(1, -1, 1, 1))
    d = np.where((s <= t) & (t <= 0), 0.0, (t - s) ** 2)
    return d.reshape(len(d), -1).sum(1).mean()


def margin_ref(scale, shift):
    """E[x | x < 0] for x ~ N(shift, scale^2) by the trapezoid rule over [shift - 12 scale, 0], or -3 |scale| where
    P(x < 0) <= 0.001 (mdistiller's cut)."""
    s, m = abs(scale), shift
    x = np.linspace(min(m - 12 * s, -1e-9), 0.0, 400001)
    density = np.exp(-((x - m) / s) ** 2 / 2) / (s * math.sqrt(2 * math.pi))
    trapezoid = lambda y: ((y[1:] + y[:-1]) / 2 * np.diff(x)).sum()
    mass = trapezoid(density)
    return trapezoid(x * density) / mass if mass > 0.001 else -3 * s


def block_mean64(f, size):
    n, c, h, w = f.shape
    return f64(f).reshape(n, c, size, h // size, size, w // size).mean((3, 5))


def hcl_ref(fstudent, fteacher):
    """Chen et al.'s hierarchical context loss: per pair the MSE at full size and at 4, 2 and 1 px (the sizes below the
    feature's), weighted 1, 1/2, 1/4, 1/8 and averaged by the weights; summed over the pairs."""
    total = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        levels = [(1.0, f64(fs), f64(ft))]
        for k, size in enumerate(s for s in (4, 2, 1) if s < h):
            levels.append((0.5 ** (k + 1), block_mean64(fs, size), block_mean64(ft, size)))
        total += sum(w * ((a - b) ** 2).mean() for w, a, b in levels) / sum(w for w, _, _ in levels)
    return total


def t64(x):
    return torch.tensor(f64(x))


def conv_bn_ref(state, prefix, x, padding):
    """mdistiller's conv (no bias) + BatchNorm in training mode (the batch's mean and biased variance, eps 1e-5) with
    the module's state, in float64."""
    x = F.conv2d(x, t64(state[f"{prefix}.0.weight"]), padding=padding)
    return F.batch_norm(x, None, None, t64(state[f"{prefix}.1.weight"]), t64(state[f"{prefix}.1.bias"]),
                        training=True, eps=1e-5)


def reviewkd_ref(state, feats_s, feats_t, shapes, out_shapes):
    """mdistiller's ReviewKD.forward_train from its source, in float64 torch: the ABFs deepest first (abfs.0 takes the
    pooled feature), F.interpolate(mode="nearest"), torch.cat, sigmoid attention; then hcl_loss's F.mse_loss and
    F.adaptive_avg_pool2d."""
    x, results, res = [t64(f) for f in feats_s][::-1], [], None
    shapes, out_shapes = shapes[::-1], out_shapes[::-1]
    for i, feat in enumerate(x):
        n, _, h, w = feat.shape
        y = conv_bn_ref(state, f"abfs.{i}.conv1", feat, 0)
        if i > 0:
            res = F.interpolate(res, (shapes[i], shapes[i]), mode="nearest")
            z = torch.sigmoid(F.conv2d(torch.cat([y, res], dim=1), t64(state[f"abfs.{i}.att_conv.0.weight"]),
                                       t64(state[f"abfs.{i}.att_conv.0.bias"])))
            y = y * z[:, 0].view(n, 1, h, w) + res * z[:, 1].view(n, 1, h, w)
        if y.shape[-1] != out_shapes[i]:
            y = F.interpolate(y, (out_shapes[i], out_shapes[i]), mode="nearest")
        res = y
        results.insert(0, conv_bn_ref(state, f"abfs.{i}.conv2", y, 1))
    loss = 0.0
    for fs, ft in zip(results, [t64(f) for f in feats_t]):
        h, cnt, tot = fs.shape[2], 1.0, 1.0
        part = F.mse_loss(fs, ft)
        for size in (4, 2, 1):
            if size >= h:
                continue
            cnt /= 2.0
            part = part + F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)) * cnt
            tot += cnt
        loss = loss + part / tot
    return float(loss)


def ofd_ref(state, margins, feats_s, feats_t):
    """mdistiller's OFD.ofd_loss in float64: each connector (conv + BN) on the student's feature, the teacher's
    adaptive-average-pooled to its size, feat_loss_ref, stage i of n divided by 2^(n - 1 - i)."""
    n, total = len(feats_s), 0.0
    for i, (fs, ft) in enumerate(zip(feats_s, feats_t)):
        s = conv_bn_ref(state, f"connectors.{i}", t64(fs), 0)
        t = F.adaptive_avg_pool2d(t64(ft), s.shape[-2:])
        total += feat_loss_ref(s.numpy(), t.numpy(), margins[i]) / 2 ** (n - 1 - i)
    return total


# ------------------------------------------------------------------ OFD
def ofd_case(case, seed=0, shape=(8, 16, 4, 4)):
    """(source, target, margin): assorted responses around margins in [-2, -0.1]."""
    rng = np.random.default_rng(seed)
    n = 1 if case == "batch of one" else shape[0]
    source = rng.standard_normal((n, *shape[1:])).astype(np.float32)
    target = (1.5 * rng.standard_normal((n, *shape[1:]))).astype(np.float32)
    margin = -rng.uniform(0.1, 2.0, shape[1]).astype(np.float32)
    if case == "zero student":
        source = np.zeros_like(source)
    if case == "teacher at its margins":  # t == m exactly: the margin's side (t <= m) in both
        target[:, :, 0, 0] = margin[None, :]
    if case == "teacher all below its margins":  # only the student's excess over the margin counts
        target = margin[None, :, None, None] - 1.0 - np.abs(target)
    if case == "huge":
        source, target, margin = 1e3 * source, 1e3 * target, 1e3 * margin
    return source, target, margin


OFD_CASES = ["ordinary", "batch of one", "zero student", "teacher at its margins", "teacher all below its margins",
             "huge"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", OFD_CASES)
def test_feat_loss_matches_the_papers_partial_l2(fw, case):
    distillers, _, _, _, tensor = FW[fw]
    source, target, margin = ofd_case(case)
    got, expected = value(distillers.feat_loss(tensor(source), tensor(target), margin)), feat_loss_ref(source, target,
                                                                                                      margin)
    assert close(got, expected) and expected > 0, (got, expected)


def test_feat_loss_is_zero_where_the_student_is_below_a_negative_teacher():
    source, target, margin = ofd_case("ordinary")
    target = -np.abs(target) - 0.05  # every teacher response negative
    source = np.minimum(source, np.maximum(target, margin[None, :, None, None]))  # the student at or below it
    for fw in FRAMEWORKS:
        distillers, _, _, _, tensor = FW[fw]
        assert value(distillers.feat_loss(tensor(source), tensor(target), margin)) == 0.0


@pytest.mark.parametrize("case", OFD_CASES)
def test_feat_loss_gradients_agree_between_the_frameworks(case):
    source, target, margin = ofd_case(case)
    x = torch.tensor(source, requires_grad=True)
    tdist.feat_loss(x, torch.tensor(target), margin).backward()
    xj = jt.array(source)
    gj = jt.grad(jdist.feat_loss(xj, jt.array(target), margin), xj).numpy()
    g = x.grad.numpy()
    assert np.abs(g - gj).max() <= 1e-6 * np.abs(g).max() + 1e-12


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (1.0, 2.0), (0.5, -1.0), (2.0, 3.0), (-1.5, 0.7), (0.3, 0.9),
                                          (1.0, 3.2), (1.0, -4.0)])
def test_ofd_margins_are_the_expected_negative_response(scale, shift):
    """Including a negative BN weight (its std is |weight|), P(x < 0) just below mdistiller's 0.001 (-3 std) and a
    channel almost always negative (E[x | x < 0] close to its mean)."""
    got = float(ofd_margins(np.array([scale]), np.array([shift]))[0])
    assert abs(got - margin_ref(scale, shift)) <= 1e-6 * abs(margin_ref(scale, shift)), (got, margin_ref(scale, shift))


def test_ofd_margin_of_a_zero_scale_is_its_limit():
    got = ofd_margins(np.array([0.0, 0.0]), np.array([-0.7, 0.7]))
    assert abs(got[0] + 0.7) < 1e-9 and abs(got[1]) < 1e-9


def own_pair(fw, method, **flags):
    """A method's config, the own pair's models (seeds 0 and 1) and its setup's modules, in one framework."""
    distillers, models, devices, _, _ = FW[fw]
    config = build_config("student", distillers.METHODS, method=method, **flags)
    student = models.build_model(config.model, 0, 100 if config.dataset == "cifar100" else 10)
    teacher = models.build_model(config.teacher_model or "cifar10quick", 1, 100 if config.dataset == "cifar100" else 10)
    teacher.eval()
    return config, student, teacher, distillers.METHODS[method].setup(config, student, teacher,
                                                                      devices.select_device("cpu"))


def stage_feats(seed, n, shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, *s)).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_ofd_modules_match_mdistillers_ofd_loss(fw):
    """The setup's connectors (seeded) and margins on features of the own pair's shapes against ofd_ref."""
    _, _, _, _, tensor = FW[fw]
    _, _, teacher, extra = own_pair(fw, "ofd")
    ofd = extra["ofd"]
    state = FW[fw][1].get_state(ofd)
    feats_s = stage_feats(1, 8, [(32, 16, 16), (32, 8, 8), (64, 4, 4)])
    feats_t = stage_feats(2, 8, [(64, 16, 16), (128, 8, 8), (256, 4, 4)])
    got = value(ofd([tensor(f) for f in feats_s], [tensor(f) for f in feats_t]))
    expected = ofd_ref(state, ofd.margins, feats_s, feats_t)
    assert close(got, expected) and expected > 0, (got, expected)


def test_ofd_setup_takes_margins_from_the_teachers_batchnorms_and_seeds_alike():
    """Margins: ofd_margins of the BN before each of the teacher's ReLUs (CIFAR10Quick's bn1-3, after training has
    moved them off 1 and 0); connectors: mdistiller's N(0, 2 / (k k out)) convs, the same numbers in both frameworks."""
    states = {}
    for fw in FRAMEWORKS:
        distillers, models, devices, _, _ = FW[fw]
        config = build_config("student", distillers.METHODS, method="ofd")
        student, teacher = models.build_model("cifar10simple", 0), models.build_model("cifar10quick", 1)
        rng = np.random.default_rng(5)
        bn = {f"bn{i}.{k}": rng.normal(0.5 if k == "weight" else 0.0, 0.5, c).astype(np.float32)
              for i, c in ((1, 64), (2, 128), (3, 256)) for k in ("weight", "bias")}
        models.load_state(teacher, {**models.get_state(teacher), **bn}, "test BNs")
        ofd = distillers.METHODS["ofd"].setup(config, student, teacher, devices.select_device("cpu"))["ofd"]
        for i, margin in enumerate(ofd.margins):
            assert np.allclose(margin, ofd_margins(bn[f"bn{i + 1}.weight"], bn[f"bn{i + 1}.bias"]), rtol=1e-6)
        states[fw] = models.get_state(ofd)
    assert sorted(states["torch"]) == sorted(states["jittor"])
    assert all(np.array_equal(states["torch"][k], states["jittor"][k]) for k in states["torch"])
    w = states["torch"]["connectors.2.0.weight"]  # 64 -> 256 channels, 1x1: std sqrt(2 / 256)
    assert w.shape == (256, 64, 1, 1) and abs(w.std() / math.sqrt(2 / 256) - 1) < 0.05


# ------------------------------------------------------------------ ReviewKD
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", ["ordinary", "batch of one", "zero student", "huge"])
def test_hcl_loss_matches_float64(fw, case):
    """Sizes 16, 8, 4, 2 and 1 px: every pooling level, some, and none."""
    distillers, _, _, _, tensor = FW[fw]
    n = 1 if case == "batch of one" else 4
    shapes = [(6, 16, 16), (5, 8, 8), (4, 4, 4), (3, 2, 2), (7, 1, 1)]
    fs, ft = stage_feats(3, n, shapes), stage_feats(4, n, shapes)
    if case == "zero student":
        fs = [np.zeros_like(f) for f in fs]
    if case == "huge":
        fs, ft = [1e15 * f for f in fs], [1e15 * f for f in ft]  # squares beyond float32's 3e38
    got = value(distillers.hcl_loss([tensor(f) for f in fs], [tensor(f) for f in ft]))
    expected = hcl_ref(fs, ft)
    assert close(got, expected) and expected > 0, (got, expected)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("size, to", [(1, 4), (4, 8), (2, 16), (8, 4), (16, 4), (4, 4)])
def test_resize_nearest_is_torchs_nearest_interpolation(fw, size, to):
    distillers, _, _, _, tensor = FW[fw]
    x = stage_feats(5, 2, [(3, size, size)])[0]
    expected = F.interpolate(torch.tensor(x), (to, to), mode="nearest").numpy()
    assert np.array_equal(distillers.resize_nearest(tensor(x), to).numpy(), expected)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_reviewkd_modules_match_mdistillers_forward(fw):
    """The setup's ABFs (seeded) on features of the own pair's shapes against reviewkd_ref: the student's three
    stages and pooled feature, the teacher's three pre-activation stages and pooled feature."""
    _, _, _, _, tensor = FW[fw]
    _, _, _, extra = own_pair(fw, "reviewkd")
    modules = extra["reviewkd"]
    state = FW[fw][1].get_state(modules)
    feats_s = stage_feats(6, 8, [(32, 16, 16), (32, 8, 8), (64, 4, 4), (64, 1, 1)])
    feats_t = stage_feats(7, 8, [(64, 16, 16), (128, 8, 8), (256, 4, 4), (1024, 1, 1)])
    got = value(modules([tensor(f) for f in feats_s], [tensor(f) for f in feats_t]))
    expected = reviewkd_ref(state, feats_s, feats_t, [16, 8, 4, 1], [16, 8, 4, 1])
    assert close(got, expected) and expected > 0, (got, expected)


def test_reviewkd_on_mdistillers_pair_has_its_shapes_and_init():
    """resnet32x4 -> resnet8x4: mdistiller's REVIEWKD IN_CHANNELS / OUT_CHANNELS [64, 128, 256, 256], SHAPES /
    OUT_SHAPES [1, 8, 16, 32] (deepest first), middle width 256; its convs kaiming_uniform_(a=1), bound sqrt(3 /
    fan_in); the same numbers in both frameworks; and the loss runs on the models' own features."""
    states = {}
    for fw in FRAMEWORKS:
        config, student, teacher, extra = own_pair(fw, "reviewkd", model="resnet8x4", teacher_model="resnet32x4",
                                                   dataset="cifar100")
        modules = extra["reviewkd"]
        assert modules.shapes == modules.out_shapes == [1, 8, 16, 32]
        assert [abf.conv1[0].weight.shape[1] for abf in modules.abfs][::-1] == [64, 128, 256, 256]
        assert [abf.conv2[0].weight.shape[0] for abf in modules.abfs][::-1] == [64, 128, 256, 256]
        assert {abf.conv1[0].weight.shape[0] for abf in modules.abfs} == {256}
        assert [abf.att_conv is None for abf in modules.abfs] == [True, False, False, False]
        states[fw] = FW[fw][1].get_state(modules)
        distillers, _, _, features, tensor = FW[fw]
        images = tensor(stage_feats(8, 2, [(3, 32, 32)])[0])
        out, out_teacher = features.forward_features(student, images), features.forward_features(teacher, images)
        assert np.isfinite(value(modules(*distillers.reviewkd_pairs(config, out, out_teacher))))
    assert all(np.array_equal(states["torch"][k], states["jittor"][k]) for k in states["torch"])
    w = states["torch"]["abfs.1.conv1.0.weight"]  # 256 -> 256, 1x1: bound sqrt(3 / 256)
    assert np.abs(w).max() <= math.sqrt(3 / 256) and np.abs(w).max() > 0.99 * math.sqrt(3 / 256)


# ------------------------------------------------------------------ pre-activation features and refusals
def with_random_batchnorms(models, net, seed):
    """net with every BatchNorm's running statistics and affine parameters drawn at random (eval mode then
    normalises by them: a BN's output is no longer its input rescaled, and some outputs are negative)."""
    rng = np.random.default_rng(seed)
    state = models.get_state(net)
    for key in [k[:-len(".running_var")] for k in state if k.endswith(".running_var")]:
        c = state[f"{key}.running_var"].shape
        state[f"{key}.running_mean"] = rng.normal(0.0, 0.5, c).astype(np.float32)
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{key}.bias"] = rng.normal(0.0, 0.5, c).astype(np.float32)
    models.load_state(net, state, "test BNs")
    net.eval()
    return state


def shuffle64(x, groups=2):
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)


# what each model's feats are of its pre-activation features after the stem entry (mdistiller's definitions)
PREACT_MODELS = {"cifar10quick": "relu", "resnet8x4": "relu", "ResNet50": "relu", "vgg8": "relu", "ShuffleV1": "relu",
                 "ShuffleV2": "shuffled relu", "wrn_16_2": "the next batchnorm"}


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("model", sorted(PREACT_MODELS))
def test_preact_feats_are_mdistillers_pre_activations(fw, model):
    """Stage by stage after the stem entry (which is the feature itself, and must be): relu(preact_feats) == feats
    (ShuffleV2: shuffled, as its block shuffles after the ReLU); a WRN's preact is its feature through the BatchNorm
    that opens the next stage (the final bn1), computed here in float64 from that BN's random statistics. Some
    entries after the stem are negative: read before the ReLU."""
    _, models, _, features, tensor = FW[fw]
    net = models.build_model(model, 0)
    state = with_random_batchnorms(models, net, 3)
    _, out = features.forward_features(net, tensor(stage_feats(9, 2, [(3, 32, 32)])[0]))
    pres, feats = [f.detach().numpy() for f in out["preact_feats"]], [f.detach().numpy() for f in out["feats"]]
    assert len(pres) == len(feats)
    first = 0 if model == "cifar10quick" else 1  # CIFAR10Quick has no stem entry
    if first:
        assert np.array_equal(pres[0], feats[0])
    for i in range(first, len(pres)):
        pre, feat = pres[i], feats[i]
        if PREACT_MODELS[model] == "the next batchnorm":
            bn = ["block2.layer.0.bn1", "block3.layer.0.bn1", "bn1"][i - 1]
            expected = ((f64(feat) - state[f"{bn}.running_mean"][None, :, None, None])
                        / np.sqrt(f64(state[f"{bn}.running_var"])[None, :, None, None] + 1e-5)
                        * state[f"{bn}.weight"][None, :, None, None] + state[f"{bn}.bias"][None, :, None, None])
            assert np.allclose(pre, expected, rtol=1e-4, atol=1e-4), i
        else:
            post = np.maximum(pre, 0)
            assert np.allclose(shuffle64(post) if PREACT_MODELS[model] == "shuffled relu" else post, feat,
                               atol=1e-6), i
        assert (pre < 0).any(), i


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("model", ["cifar10quick", "resnet8x4", "ResNet50", "vgg8", "wrn_16_2"])
def test_bn_before_relu_names_a_batchnorm_per_stage_after_the_stem(fw, model):
    """OFD's margins come from BN_BEFORE_RELU (mdistiller's get_bn_before_relu): one BatchNorm per pre-activation
    stage after the stem, with that stage's channels; for VGG and a WRN the BN's output is the preact itself."""
    distillers, models, _, features, tensor = FW[fw]
    net = models.build_model(model, 0)
    with_random_batchnorms(models, net, 4)
    _, out = features.forward_features(net, tensor(stage_feats(9, 2, [(3, 32, 32)])[0]))
    pres = distillers.after_stem_of(model, out["preact_feats"])
    bns = [features.submodule(net, name) for name in net.BN_BEFORE_RELU]
    assert len(bns) == len(pres)
    for bn, pre in zip(bns, pres):
        assert isinstance(bn, models.BatchNorm2d) and bn.weight.shape[0] == pre.shape[1]
    if model in ("vgg8", "wrn_16_2"):  # the BN is the last op before the ReLU: its output is the preact
        for name, pre in zip(net.BN_BEFORE_RELU, pres):
            seen, module = {}, features.submodule(net, name)
            handle = module.register_forward_hook(lambda m, inputs, output: seen.setdefault("out", output))
            net(tensor(stage_feats(9, 2, [(3, 32, 32)])[0]))
            handle.remove() if fw == "torch" else module.remove_forward_hook()  # Jittor: removed by module
            assert np.array_equal(seen["out"].detach().numpy(), pre.detach().numpy()), name


# mdistiller's pairs among the zoo's models that OFD and ReviewKD now take (its configs list resnet32x4 -> resnet8x4
# only; the channels and sizes are read from the models). MobileNetV2 lists no preact_feats: as a ReviewKD student it
# is read at its feats, mdistiller's STU_PREACT False.
ZOO_PAIRS = [("ofd", "wrn_40_2", "wrn_16_2", 3), ("ofd", "vgg13", "vgg8", 4), ("ofd", "ResNet50", "ShuffleV1", 3),
             ("reviewkd", "wrn_40_2", "ShuffleV1", 4), ("reviewkd", "vgg13", "MobileNetV2", 5),
             ("reviewkd", "ResNet50", "MobileNetV2", 5)]


@pytest.mark.parametrize("method, teacher_model, model, count", ZOO_PAIRS)
def test_ofd_and_reviewkd_take_the_zoo_pairs_alike_in_both_frameworks(method, teacher_model, model, count):
    """OFD's connectors and margins, ReviewKD's ABFs: as many as the pair's stages, the same numbers in both frameworks,
    a finite loss of the same value on the models' own features (cifar100, untrained: the teacher's random BNs)."""
    states, losses = {}, {}
    for fw in FRAMEWORKS:
        distillers, models, _, features, tensor = FW[fw]
        config, student, teacher, extra = own_pair(fw, method, model=model, teacher_model=teacher_model,
                                                   dataset="cifar100")
        modules = extra[method]
        assert len(modules.connectors if method == "ofd" else modules.abfs) == count
        states[fw] = models.get_state(modules)
        images = tensor(stage_feats(8, 4, [(3, 32, 32)])[0])
        out, out_teacher = features.forward_features(student, images), features.forward_features(teacher, images)
        pairs = getattr(distillers, f"{method}_pairs")(config, out, out_teacher)
        losses[fw] = value(modules(*pairs))
    assert all(np.array_equal(states["torch"][k], states["jittor"][k]) for k in states["torch"])
    assert np.isfinite(losses["torch"]) and losses["torch"] > 0
    assert abs(losses["jittor"] - losses["torch"]) <= 1e-4 * losses["torch"], losses


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method, flags, message", [
    ("ofd", dict(model="MobileNetV2", teacher_model="resnet32x4"), "student MobileNetV2 does not list"),
    ("ofd", dict(teacher_model="cifar10simple"), "BatchNorms before its ReLUs, which teacher cifar10simple does not"),
    ("ofd", dict(model="resnet8x4", teacher_model="ShuffleV2"), "BatchNorms before its ReLUs, which teacher ShuffleV2"),
    ("reviewkd", dict(teacher_model="MobileNetV2", model="resnet8x4"), "teacher MobileNetV2 does not list"),
])
def test_a_pair_without_what_the_method_reads_is_refused_in_one_line(fw, method, flags, message):
    with pytest.raises(UserError) as e:
        own_pair(fw, method, **flags)
    assert message in str(e.value) and "\n" not in str(e.value)
