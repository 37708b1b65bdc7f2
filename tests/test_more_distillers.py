"""NST, PKT, RKD, SP, KDSVD and VID (mdistiller's distillers) in both frameworks: each loss against a float64 numpy
reference written here from the papers' and mdistiller's definitions, on ordinary inputs, a batch of 2 (VID: of 1),
different sizes between student and teacher, all-zero features and huge or tiny activations; gradients of
torch and Jittor on the same inputs (and KDSVD's hand-written SVD backward against finite differences); the
setup checks (VID's modules seeded alike in both frameworks); and one training step of each method through the
engine in both frameworks."""
import numpy as np
import pytest
import torch

import jittor as jt
from common.config import at_stages, build_config, FRAMEWORKS
from common.errors import UserError
from jittor_ import device as jd, distillers as jdist, engine as je, features as jf, models as jm
from torch_ import device as td, distillers as tdist, engine as te, features as tf, models as tm

NEW = ["nst", "pkt", "rkd", "sp", "kdsvd"]


# ------------------------------------------------------------------ float64 references
def f64(x):
    return np.asarray(x, np.float64)


def normalise64(x, axis):
    """x / ||x|| along axis, exactly; an all-zero row stays zero (F.normalize's floor only guards zero)."""
    norm = np.sqrt((x ** 2).sum(axis, keepdims=True))
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def block_mean64(f, size):
    n, c, h, w = f.shape
    return f64(f).reshape(n, c, size, h // size, size, w // size).mean((3, 5))


def nst_ref(g_s, g_t):
    """Huang & Wang's NST: per stage, pool the larger feature to the smaller size, L2-normalise each channel's
    map, and take the squared MMD with the kernel k(a, b) = (a . b)^2 between the channels of the two models,
    each kernel term a mean over the batch and the channel pairs; summed over stages."""
    total = 0.0
    for fs, ft in zip(g_s, g_t):
        size = min(fs.shape[2], ft.shape[2])
        s = normalise64(block_mean64(fs, size).reshape(len(fs), fs.shape[1], -1), 2)
        t = normalise64(block_mean64(ft, size).reshape(len(ft), ft.shape[1], -1), 2)
        k = lambda a, b: (np.einsum("nid,njd->nij", a, b) ** 2).mean()
        total += k(t, t) + k(s, s) - 2 * k(s, t)
    return total


def pkt_ref(f_s, f_t, eps=1e-7):
    """Passalis & Tefas' PKT as mdistiller's cosine_similarity_loss: rows divided by ||f|| + eps, cosine
    similarities (c + 1) / 2 normalised per row, mean over the N x N entries of t log((t + eps) / (s + eps))."""
    def probabilities(f):
        f = f64(f).reshape(len(f), -1)
        f = f / (np.sqrt((f ** 2).sum(1, keepdims=True)) + eps)
        c = (f @ f.T + 1.0) / 2.0
        return c / c.sum(1, keepdims=True)
    s, t = probabilities(f_s), probabilities(f_t)
    return (t * np.log((t + eps) / (s + eps))).mean()


def smooth_l1_64(a, b):
    x = np.abs(a - b)
    return np.where(x < 1, 0.5 * x ** 2, x - 0.5)


def rkd_ref(f_s, f_t, squared=False, eps=1e-12, distance_weight=25.0, angle_weight=50.0):
    """Park et al.'s RKD as mdistiller's: pairwise distances floored at eps (squared), square-rooted unless
    squared, diagonal 0, divided by their mean over the off-diagonal pairs; cosines of the angles at each
    sample between the differences to two others (unit vectors, zero for a zero difference); smooth-L1,
    means over all N x N pairs and N x N x N triples."""
    def relations(e):
        e = f64(e).reshape(len(e), -1)
        n = len(e)
        diff = e[None, :, :] - e[:, None, :]  # [i, j] = e_j - e_i
        d = np.maximum((diff ** 2).sum(2), eps)
        d = d if squared else np.sqrt(d)
        d[np.arange(n), np.arange(n)] = 0
        d = d / d[d > 0].mean()
        u = normalise64(diff, 2)
        return d, np.einsum("ijd,ikd->ijk", u, u)
    d_s, a_s = relations(f_s)
    d_t, a_t = relations(f_t)
    return distance_weight * smooth_l1_64(d_s, d_t).mean() + angle_weight * smooth_l1_64(a_s, a_t).mean()


def sp_ref(g_s, g_t):
    """Tung & Mori's SP: per stage the N x N Gram matrices of the flattened features, rows L2-normalised,
    squared Frobenius distance / N^2; summed over stages."""
    total = 0.0
    for fs, ft in zip(g_s, g_t):
        n = len(fs)
        gs, gt = (normalise64(f64(f).reshape(n, -1) @ f64(f).reshape(n, -1).T, 1) for f in (fs, ft))
        total += ((gt - gs) ** 2).sum() / n ** 2
    return total


def canonical_v64(x):
    """Right singular vectors (columns, falling singular value) of each N x M x W matrix, each column's sign
    such that its largest |entry| is positive, and the singular values."""
    _, s, vh = np.linalg.svd(x, full_matrices=False)
    v = vh.swapaxes(1, 2)
    pick = np.take_along_axis(v, np.abs(v).argmax(1)[:, None], 1)
    return s, v * np.sign(pick)


def kdsvd_ref(g_s, g_t, k, flip_student=None, flip_teacher=None):
    """Lee et al.'s KD-SVD as mdistiller's kdsvd_loss: per stage each feature viewed as N x (C H) x W; the
    teacher's top k right singular vectors and normalised singular values, the student's top k + 3 vectors;
    for each teacher vector the student vector of largest |cosine| times the cosine's sign; both sets times
    the teacher's singular values; between consecutive stages the squared differences of the RBF kernels
    exp(-(a - b)^2 / 8) over every pair of rows and every vector, summed, / N; summed over stage pairs.
    flip_student, flip_teacher: per stage, signs to multiply the raw vectors by (instead of the canonical signs)."""
    total, previous = 0.0, None
    for i, (fs, ft) in enumerate(zip(g_s, g_t)):
        n, c, h, w = fs.shape
        s_t, v_t = canonical_v64(f64(ft).reshape(n, ft.shape[1] * ft.shape[2], ft.shape[3]))
        s_t = normalise64(s_t[:, :k], 1)
        v_t = v_t[:, :, :k] if flip_teacher is None else v_t[:, :, :k] * flip_teacher[i][:, None, :k]
        _, v_s = canonical_v64(f64(fs).reshape(n, c * h, w))
        v_s = v_s[:, :, :k + 3]
        if flip_student is not None:
            v_s = v_s * flip_student[i][:, None, :v_s.shape[2]]
        cosine = v_s.swapaxes(1, 2) @ v_t
        mask = np.where(np.abs(cosine) == np.abs(cosine).max(1, keepdims=True), np.sign(cosine), 0.0)
        v_s = (v_s @ mask) * s_t[:, None, :]
        v_t = v_t * s_t[:, None, :]
        if previous is not None:
            rbf = lambda a, b: np.exp(-(a[:, :, None, :] - b[:, None, :, :]) ** 2 / 8)
            total += ((rbf(v_s, previous[0]) - rbf(v_t, previous[1])) ** 2).sum() / n
        previous = v_s, v_t
    return total


def vid_ref(weights, log_scale, f_s, f_t, eps=1e-5):
    """Ahn et al.'s VID at one stage as mdistiller's vid_loss: the larger feature average-pooled to the smaller's
    size; the regressor conv1x1-ReLU-conv1x1-ReLU-conv1x1 (weights: its three C_out x C_in x 1 x 1 kernels, no
    biases) predicts the teacher's feature from the student's as a Gaussian mean with the variance
    log(1 + exp(log_scale)) + eps per teacher channel; the mean over batch, channels and positions of
    0.5 ((mean - f_t)^2 / variance + log variance)."""
    size = min(f_s.shape[2], f_t.shape[2])
    h, t = block_mean64(f_s, size), block_mean64(f_t, size)
    for i, w in enumerate(weights):
        h = np.einsum("oi,nihw->nohw", f64(w)[:, :, 0, 0], h)
        h = np.maximum(h, 0.0) if i < len(weights) - 1 else h
    variance = (np.logaddexp(0.0, f64(log_scale)) + eps)[None, :, None, None]
    return (0.5 * ((h - t) ** 2 / variance + np.log(variance))).mean()


# ------------------------------------------------------------------ framework calls
MODULES = {"torch": (tdist, torch.tensor), "jittor": (jdist, jt.array)}


def call(fw, loss, inputs, **settings):
    """The framework's loss on float32 copies of the numpy inputs (lists of features for the staged losses)."""
    module, tensor = MODULES[fw]
    t = lambda x: [tensor(np.float32(v)) for v in x] if isinstance(x, list) else tensor(np.float32(x))
    args = [t(x) for x in inputs]
    if loss == "rkd":
        return module.rkd_loss(*args, False, 1e-12, settings.get("distance_weight", 25.0),
                               settings.get("angle_weight", 50.0))
    if loss == "kdsvd":
        return module.kdsvd_loss(*args, settings.get("k", 1))
    return getattr(module, f"{loss}_loss")(*args)


def value(fw, loss, inputs, **settings):
    return float(call(fw, loss, inputs, **settings).item())


def reference(loss, inputs, **settings):
    if loss == "rkd":
        return rkd_ref(*inputs, False, 1e-12, settings.get("distance_weight", 25.0), settings.get("angle_weight", 50.0))
    if loss == "kdsvd":
        return kdsvd_ref(*inputs, settings.get("k", 1))
    return {"nst": nst_ref, "pkt": pkt_ref, "sp": sp_ref}[loss](*inputs)


def spread(shape, rng, decay=0.6):
    """A feature whose (C H) x W views have well separated singular values (KDSVD's vectors are then well
    defined in float32): random, times a falling profile over the width, plus a mean."""
    f = rng.standard_normal(shape) * decay ** np.arange(shape[-1]) + 0.5
    return f.astype(np.float32)


def inputs_for(loss, seed, n=8, scale=1.0):
    """Ordinary inputs of each loss: CIFAR10Simple-like student and CIFAR10Quick-like teacher shapes (different
    channels; NST also different spatial sizes), pooled features of different widths."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: (scale * rng.standard_normal(shape)).astype(np.float32)
    if loss == "nst":
        return [[r(n, 16, 8, 8), r(n, 32, 4, 4)], [r(n, 32, 4, 4), r(n, 64, 4, 4)]]
    if loss in ("pkt", "rkd"):
        return [r(n, 64) + np.float32(scale * 0.3), r(n, 256) + np.float32(scale * 0.3)]
    if loss == "sp":
        return [[r(n, 16, 4, 4)], [r(n, 64, 4, 4)]]
    shapes_s, shapes_t = [(n, 8, 8, 8), (n, 16, 4, 4), (n, 32, 2, 2)], [(n, 16, 8, 8), (n, 32, 4, 4), (n, 64, 2, 2)]
    return [[scale * spread(s, rng) for s in shapes_s], [scale * spread(s, rng) for s in shapes_t]]


def zeros_like_inputs(inputs):
    return [[np.zeros_like(f) for f in x] if isinstance(x, list) else np.zeros_like(x) for x in inputs]


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


# (relative, absolute) tolerance against float64, above the largest differences measured on these inputs in
# either framework (relative: NST 5e-7, PKT 8e-4 at its smallest values, RKD 6e-7, SP 8e-6, KDSVD 4e-6).
# PKT is a KL between two nearly uniform distributions of cosines: the float32 rounding of the cosines
# bounds it to about 2e-8 absolute, as in mdistiller's float32. RKD is 0 for a batch of 2 (one distance, one
# angle per sample) and comes out ~1e-12.
TOL = {"nst": (1e-5, 1e-9), "pkt": (1e-5, 5e-8), "rkd": (1e-5, 1e-10), "sp": (3e-5, 1e-9), "kdsvd": (3e-5, 1e-9),
       "vid": (1e-5, 1e-9)}


def close(loss, got, expected):
    rel_tol, abs_tol = TOL[loss]
    return np.isfinite(got) and abs(got - expected) <= rel_tol * abs(expected) + abs_tol


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("loss", NEW)
@pytest.mark.parametrize("n", [8, 2])  # an ordinary batch and a batch of two
def test_loss_matches_float64(fw, loss, n):
    inputs = inputs_for(loss, 10 + n, n)
    got, expected = value(fw, loss, inputs), reference(loss, inputs)
    assert close(loss, got, expected) and (expected > 0 or loss == "rkd" and n == 2), (got, expected)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("loss", NEW)
@pytest.mark.parametrize("scale", [1e20, 1e-20])  # the squares overflow, or underflow, float32
def test_loss_is_free_of_scale(fw, loss, scale):
    """Every one of the five is invariant to the scale of the features (mdistiller's in float32 is not: its
    squares overflow at 1e20); RKD's floor eps on the squared distance makes tiny features all equidistant."""
    inputs = inputs_for(loss, 20, 8, scale)
    got, expected = value(fw, loss, inputs), reference(loss, inputs)
    assert close(loss, got, expected), (got, expected)
    if not (loss in ("rkd", "pkt") and scale < 1):  # RKD's floor eps, PKT's eps in ||f|| + eps: below them all is equal
        assert close(loss, got, reference(loss, inputs_for(loss, 20, 8)))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("loss", NEW)
def test_all_zero_features_give_finite_losses(fw, loss):
    inputs = inputs_for(loss, 30, 4)
    zero = zeros_like_inputs(inputs)
    for case in ([zero[0], inputs[1]], zero):  # a zero student, then both zero
        got, expected = value(fw, loss, case), reference(loss, case)
        assert close(loss, got, expected), (case is zero, got, expected)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("loss", NEW)
def test_identical_student_and_teacher_give_zero(fw, loss):
    teacher = inputs_for(loss, 40, 4)[1]
    assert abs(value(fw, loss, [teacher, teacher])) < 1e-6


def test_kdsvd_ignores_the_students_signs_but_not_the_teachers():
    """The student's signs cancel in align_rsv; flipping one teacher stage's vector changes mdistiller's value
    (flipping every stage's does not): hence the fixed sign rule instead of whatever LAPACK returns."""
    inputs = inputs_for("kdsvd", 50, 4)
    rng = np.random.default_rng(0)
    flips = [rng.choice([-1.0, 1.0], size=(4, f.shape[3])) for f in inputs[0]]
    base = kdsvd_ref(*inputs, 1)
    assert kdsvd_ref(*inputs, 1, flip_student=flips) == pytest.approx(base, rel=1e-12)
    ones = [np.ones((4, 1)) for _ in inputs[1]]
    assert kdsvd_ref(*inputs, 1, flip_teacher=[-o for o in ones]) == pytest.approx(base, rel=1e-12)
    assert rel(kdsvd_ref(*inputs, 1, flip_teacher=[-ones[0], *ones[1:]]), base) > 0.1


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_kdsvd_students_vectors_stop_at_the_width(fw):
    inputs = inputs_for("kdsvd", 50, 4)  # the last stage is 2 px wide: k = 2, and the student's k + 3 = 5 stop at 2
    assert close("kdsvd", value(fw, "kdsvd", inputs, k=2), kdsvd_ref(*inputs, 2))


def test_svd_conventions_agree_between_the_frameworks():
    """Both give the right singular vectors by falling singular value, each column's largest entry positive."""
    x = spread((3, 24, 6), np.random.default_rng(1))
    v_t = tdist.RightSingularVectors.apply(torch.tensor(x)).numpy()
    v_j = jdist.RightSingularVectors.apply(jt.array(x)).numpy()
    _, v_ref = canonical_v64(f64(x))
    assert np.abs(v_t - v_ref).max() < 1e-4 and np.abs(v_j - v_ref).max() < 1e-4


# ------------------------------------------------------------------ gradients
def grad(fw, loss, inputs, **settings):
    """The gradient of the loss with respect to the student's features (the first input)."""
    module, tensor = MODULES[fw]
    student = [np.float32(v) for v in inputs[0]] if isinstance(inputs[0], list) else [np.float32(inputs[0])]
    teacher = inputs[1]
    if fw == "torch":
        xs = [torch.tensor(v, requires_grad=True) for v in student]
        out = call_with(fw, loss, xs if isinstance(inputs[0], list) else xs[0], teacher, **settings)
        out.backward()
        return [x.grad.numpy() for x in xs]
    xs = [jt.array(v) for v in student]
    out = call_with(fw, loss, xs if isinstance(inputs[0], list) else xs[0], teacher, **settings)
    return [g.numpy() for g in jt.grad(out, xs)]


def call_with(fw, loss, student, teacher, **settings):
    module, tensor = MODULES[fw]
    teacher = [tensor(np.float32(v)) for v in teacher] if isinstance(teacher, list) else tensor(np.float32(teacher))
    if loss == "rkd":
        return module.rkd_loss(student, teacher, False, 1e-12, 25.0, 50.0)
    if loss == "kdsvd":
        return module.kdsvd_loss(student, teacher, settings.get("k", 1))
    return getattr(module, f"{loss}_loss")(student, teacher)


@pytest.mark.parametrize("loss", NEW)
@pytest.mark.parametrize("case", ["ordinary", "huge", "zero"])
def test_gradients_agree_between_the_frameworks(loss, case):
    inputs = inputs_for(loss, 60, 4, 1e20 if case == "huge" else 1.0)
    if case == "zero":
        inputs = [zeros_like_inputs(inputs)[0], inputs[1]]
    g_t, g_j = grad("torch", loss, inputs), grad("jittor", loss, inputs)
    for a, b in zip(g_t, g_j):
        assert np.isfinite(a).all() and np.isfinite(b).all()
        top = np.abs(a).max()
        assert case == "zero" or top > 0
        assert np.abs(a - b).max() <= 1e-4 * top, (np.abs(a - b).max(), top)


def test_kdsvd_backward_matches_finite_differences():
    """The hand-written SVD backward (svd_backward) in float64 against central differences of the loss."""
    rng = np.random.default_rng(3)
    g_s = [torch.tensor(f64(spread(s, rng)), requires_grad=True) for s in [(2, 3, 4, 4), (2, 4, 2, 2)]]
    g_t = [torch.tensor(f64(spread(s, rng))) for s in [(2, 5, 4, 4), (2, 6, 2, 2)]]
    assert torch.autograd.gradcheck(lambda *g: tdist.kdsvd_loss(list(g), g_t, 1), g_s, eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ VID: a loss with learned modules
VID_FW = {"torch": (tdist, tm, torch.tensor), "jittor": (jdist, jm, jt.array)}


def vid_inputs(seed, n=8, size_s=4, size_t=4, c_s=8, c_t=12):
    """A student and a teacher feature, the regressor's three 1x1 kernels (about unit gain) and log-scales of
    assorted variances (softplus of 1 +- 1)."""
    rng = np.random.default_rng(seed)
    f_s = rng.standard_normal((n, c_s, size_s, size_s)).astype(np.float32)
    f_t = rng.standard_normal((n, c_t, size_t, size_t)).astype(np.float32)
    weights = [(rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
               for shape in [(c_t, c_s, 1, 1), (c_t, c_t, 1, 1), (c_t, c_t, 1, 1)]]
    return weights, (rng.standard_normal(c_t) + 1.0).astype(np.float32), f_s, f_t


def vid_stage(fw, weights, log_scale):
    """The framework's VIDStage (one stage's regressor and log-scale) holding the given values."""
    distillers, models, _ = VID_FW[fw]
    stage = distillers.VIDStage(weights[0].shape[1], weights[0].shape[0])
    models.load_state(stage, {"regressor.0.weight": weights[0], "regressor.2.weight": weights[1],
                              "regressor.4.weight": weights[2], "log_scale": log_scale}, "test values")
    return stage


def vid_value(fw, weights, log_scale, f_s, f_t, eps=1e-5):
    distillers, _, tensor = VID_FW[fw]
    stage = vid_stage(fw, weights, log_scale)
    return float(distillers.vid_loss(stage.regressor, stage.log_scale, tensor(f_s), tensor(f_t), eps).item())


def vid_case(case):
    """(weights, log_scale, f_s, f_t) of each case of test_vid_matches_float64."""
    sizes = {"student larger": (8, 4), "teacher larger": (2, 8)}.get(case, (4, 4))
    weights, log_scale, f_s, f_t = vid_inputs(70, 1 if case == "batch of one" else 8, *sizes)
    if case in ("zero student", "both zero"):
        f_s = np.zeros_like(f_s)
    if case == "both zero":
        f_t = np.zeros_like(f_t)
    if case == "extreme log-scales":  # softplus(100) = 100 (mdistiller's log(1 + exp(100)) is inf in float32);
        log_scale[:2] = [100.0, -100.0]  # softplus(-100) ~ 4e-44: the variance is eps
    return weights, log_scale, f_s, f_t


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("case", ["ordinary", "batch of one", "student larger", "teacher larger", "zero student",
                                  "both zero", "extreme log-scales"])
def test_vid_matches_float64(fw, case):
    """vid_loss against vid_ref given the same regressor weights and log-scales: ordinary, a batch of one, the
    student's or the teacher's feature pooled (8 -> 4 px, 8 -> 2 px), all-zero features (the bias-free regressor
    predicts 0) and log-scales at +-100."""
    weights, log_scale, f_s, f_t = vid_case(case)
    got, expected = vid_value(fw, weights, log_scale, f_s, f_t), vid_ref(weights, log_scale, f_s, f_t)
    assert close("vid", got, expected) and expected > 0, (got, expected)


def test_vid_eps_is_the_variances_floor():
    weights, log_scale, f_s, f_t = vid_inputs(71)
    for fw in FRAMEWORKS:
        assert close("vid", vid_value(fw, weights, log_scale, f_s, f_t, 0.5), vid_ref(weights, log_scale, f_s, f_t, 0.5))


def vid_grads(fw, weights, log_scale, f_s, f_t):
    """The gradients of vid_loss with respect to the student's feature, then the stage's weights by name."""
    distillers, _, tensor = VID_FW[fw]
    stage = vid_stage(fw, weights, log_scale)
    params = [p for _, p in sorted(stage.named_parameters(), key=lambda item: item[0])]
    if fw == "torch":
        x = torch.tensor(f_s, requires_grad=True)
        distillers.vid_loss(stage.regressor, stage.log_scale, x, tensor(f_t)).backward()
        return [x.grad.numpy()] + [p.grad.numpy() for p in params]
    x = jt.array(f_s)
    loss = distillers.vid_loss(stage.regressor, stage.log_scale, x, tensor(f_t))
    return [g.numpy() for g in jt.grad(loss, [x] + params)]


@pytest.mark.parametrize("case", ["ordinary", "student larger", "teacher larger", "zero student",
                                  "extreme log-scales"])
def test_vid_gradients_agree_between_the_frameworks(case):
    """Gradients for the student's feature, the regressor's three kernels and the log-scales, torch against Jittor."""
    inputs = vid_case(case)
    g_t, g_j = vid_grads("torch", *inputs), vid_grads("jittor", *inputs)
    assert len(g_t) == len(g_j) == 5
    for a, b in zip(g_t, g_j):
        assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()
        top = np.abs(a).max()
        assert np.abs(a - b).max() <= 1e-4 * top + 1e-12, (np.abs(a - b).max(), top)
    assert np.abs(g_t[1]).max() > 0  # the log-scales learn (named "log_scale", first of the stage's weights)


def test_vid_backward_matches_finite_differences():
    """torch's gradient of vid_loss in float64 (feature, log-scales and kernels) against central differences."""
    weights, log_scale, f_s, f_t = vid_inputs(72, 2, 4, 2, 3, 5)
    target = torch.tensor(f64(f_t))

    def loss(f, scale, w0, w2, w4):
        conv = torch.nn.functional.conv2d
        regressor = lambda x: conv(torch.relu(conv(torch.relu(conv(x, w0)), w2)), w4)
        return tdist.vid_loss(regressor, scale, f, target, 1e-5)

    inputs = [torch.tensor(f64(a), requires_grad=True) for a in (f_s, log_scale, *weights)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------ setup checks and steps
FW = {"torch": (tm, te, td, tdist, torch.from_numpy), "jittor": (jm, je, jd, jdist, jt.array)}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_setups_refuse_what_cannot_work(fw):
    models, _, devices, distillers, _ = FW[fw]
    device = devices.select_device("cpu")
    student, teacher = models.build_model("cifar10simple", 0), models.build_model("cifar10quick", 1)
    setup = lambda method, **flags: distillers.METHODS[method].setup(
        build_config("student", distillers.METHODS, method=method, **flags), student, teacher, device)
    for method in NEW:
        assert setup(method) == {}
    for method in ("pkt", "rkd", "sp"):
        with pytest.raises(UserError, match=f"--method {method} relates the samples of a batch .* --batch-size 1 is too"):
            setup(method, batch_size=1)
    with pytest.raises(UserError, match=r"^--kdsvd-k 5: feature 2 has only 4 singular vectors"):
        setup("kdsvd", kdsvd_k=5)
    with pytest.raises(UserError, match="at least one"):
        setup("kdsvd", kdsvd_k=0)
    wide = models.build_model("resnet8x4", 0)  # its stages 32, 16, 8 px wide against the teacher's 16, 8, 4
    with pytest.raises(UserError, match="--method kdsvd: feature 1 is 32 px wide in the student and 8 px in the teacher"):
        distillers.METHODS["kdsvd"].setup(build_config("student", distillers.METHODS, method="kdsvd", model="resnet8x4"),
                                          wide, teacher, device)


def test_vid_setup_builds_its_modules_seeded_alike_in_both_frameworks():
    """cifar10quick teacher -> cifar10simple student: one regressor and log-scale per feature (no stem entry: all
    three), conv1x1 student -> teacher channels, then teacher -> teacher twice; every weight the same number in torch
    and Jittor (drawn in numpy, not by the frameworks' own initialisers), convs U(+-1/sqrt(fan_in)), initial
    variance softplus(log_scale) + eps = 5 (mdistiller's INIT_PRED_VAR); another seed, other convs."""
    states = {}
    for fw in FRAMEWORKS:
        models, _, devices, distillers, _ = FW[fw]
        student, teacher = models.build_model("cifar10simple", 0), models.build_model("cifar10quick", 1)
        setup = lambda **flags: distillers.METHODS["vid"].setup(
            build_config("student", distillers.METHODS, method="vid", **flags), student, teacher,
            devices.select_device("cpu"))
        extra = setup()
        assert list(extra) == ["vid"]
        states[fw] = models.get_state(extra["vid"])
        other = models.get_state(setup(seed=1)["vid"])
        assert not np.array_equal(other["stages.0.regressor.0.weight"], states[fw]["stages.0.regressor.0.weight"])
    state = states["torch"]
    assert set(state) == set(states["jittor"]) and all(np.array_equal(state[k], states["jittor"][k]) for k in state)
    for i, (c_s, c_t) in enumerate([(32, 64), (32, 128), (64, 256)]):
        shapes = [state[f"stages.{i}.regressor.{j}.weight"].shape for j in (0, 2, 4)]
        assert shapes == [(c_t, c_s, 1, 1), (c_t, c_t, 1, 1), (c_t, c_t, 1, 1)]
        for j, fan_in in zip((0, 2, 4), (c_s, c_t, c_t)):
            w = state[f"stages.{i}.regressor.{j}.weight"]
            assert np.abs(w).max() <= 1 / np.sqrt(fan_in) and w.std() > 0.5 / np.sqrt(3 * fan_in)
        variance = np.logaddexp(0.0, f64(state[f"stages.{i}.log_scale"])) + 1e-5
        assert state[f"stages.{i}.log_scale"].shape == (c_t,) and np.abs(variance - 5.0).max() < 1e-6
    assert len(state) == 12  # nothing else: 3 stages x (3 kernels + log-scale), no biases


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_vid_setup_refuses_what_cannot_work(fw):
    models, _, devices, distillers, _ = FW[fw]
    student, teacher = models.build_model("cifar10simple", 0), models.build_model("cifar10quick", 1)
    setup = lambda **flags: distillers.METHODS["vid"].setup(
        build_config("student", distillers.METHODS, method="vid", **flags), student, teacher, devices.select_device("cpu"))
    with pytest.raises(UserError, match=r"^--vid-init-pred-var 1e-06 --vid-eps 1e-05: VID's initial variance must"):
        setup(vid_init_pred_var=1e-6)
    with pytest.raises(UserError, match="eps be positive"):
        setup(vid_eps=0.0)
    with pytest.raises(UserError, match="^--method vid: feature 0 is 6 px in the student and 4 px in the teacher; VID "
                                        "pools by whole factors only$"):
        distillers.check_whole_factors("VID", [(8, 6, 6)], [(8, 4, 4)], [0])


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def one_step(fw, method, student_model, teacher_model, n):
    """One engine step at distillation weight 1: (loss, {term: value}, the float64 reference of the method's
    unweighted loss on the features of the same forward)."""
    models, engine, devices, distillers, array = FW[fw]
    features = jf if fw == "jittor" else tf
    x, y = batch(n)
    teacher, student = models.build_model(teacher_model, 1), models.build_model(student_model, 2)
    teacher.eval()
    student.train()
    config = build_config("student", distillers.METHODS, method=method, model=student_model, teacher_model=teacher_model,
                          mdistiller_weights=True)  # WEIGHT below, also on the own pair
    extra = distillers.METHODS[method].setup(config, student, teacher, devices.select_device("cpu"))
    numpy = lambda v: v.detach().numpy() if fw == "torch" else v.numpy()
    out_s, out_t = features.forward_features(student, array(x)), features.forward_features(teacher, array(x))
    feats = [[numpy(f) for f in out[1]["feats"]] for out in (out_s, out_t)]
    pooled = [numpy(out[1]["pooled_feat"]) for out in (out_s, out_t)]
    stages = at_stages(student_model, len(feats[0]))  # mdistiller's feats[1:]
    after_stem = [[f[i] for i in stages] for f in feats]
    state = models.get_state(extra["vid"]) if method == "vid" else None  # the initial weights the step uses
    vid = lambda: sum(vid_ref([state[f"stages.{k}.regressor.{j}.weight"] for j in (0, 2, 4)],
                              state[f"stages.{k}.log_scale"], fs, ft, config.vid_eps)
                      for k, (fs, ft) in enumerate(zip(*after_stem)))
    expected = {"nst": lambda: nst_ref(*after_stem), "pkt": lambda: pkt_ref(*pooled), "rkd": lambda: rkd_ref(*pooled),
                "sp": lambda: sp_ref([feats[0][-1]], [feats[1][-1]]),
                "kdsvd": lambda: kdsvd_ref(*after_stem, config.kdsvd_k), "vid": vid}[method]()
    loss, _, terms = engine.train_step(student, teacher, engine.make_optimizer(student, config, extra),
                                       array(x), array(y), config, 1.0, extra)
    return float(loss.item()), {k: float(v.item()) for k, v in terms.items()}, expected


WEIGHT = {"nst": 50.0, "pkt": 30000.0, "rkd": 1.0, "sp": 3000.0, "kdsvd": 1.0, "vid": 1.0}  # mdistiller's CIFAR weights


@pytest.mark.parametrize("method", NEW + ["vid"])
def test_one_step_of_each_method_in_both_frameworks(method):
    """cifar10quick teacher -> cifar10simple student (no stem entry: NST, KDSVD and VID take all three features):
    the step's term is mdistiller's weight x the float64 loss on the features of the same forward, finite in
    both frameworks."""
    for fw in FRAMEWORKS:
        loss, terms, expected = one_step(fw, method, "cifar10simple", "cifar10quick", 8)
        assert set(terms) == {"ce", method} and np.isfinite(loss) and terms[method] > 0, (fw, terms)
        assert close(method, terms[method] / WEIGHT[method], expected), (fw, terms[method] / WEIGHT[method], expected)
        assert loss == pytest.approx(terms["ce"] + terms[method], rel=1e-6)


@pytest.mark.slow  # a ResNet pair in both frameworks
@pytest.mark.parametrize("method", NEW + ["vid"])
def test_one_step_with_zoo_models(method):
    """resnet32x4 teacher -> resnet8x4 student (mdistiller's CIFAR-100 pair): feats[1:] after the stem."""
    for fw in FRAMEWORKS:
        loss, terms, expected = one_step(fw, method, "resnet8x4", "resnet32x4", 4)
        assert np.isfinite(loss) and close(method, terms[method] / WEIGHT[method], expected), (fw, terms, expected)
