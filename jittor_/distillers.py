"""The distillers, in Jittor: every loss as a pure function, and the method table. torch_/distillers.py
is the same file in PyTorch, line for line.

A method is one entry of METHODS (mdistiller's one distiller per entry): the function that makes its
named loss terms from one forward pass, whether it reads features, the modules it trains with the
student (FitNet's regressor), and its default weights (common.config.resolve applies them). Adding a
method is one entry plus its loss function. The losses are pure functions, importable without side
effects: tests check them against float64 references written from the papers' definitions.
"""
import collections
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.config import run_at_stages  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402
from jittor_ import device as devices, features, models  # noqa: E402


# ---------------------------------------------------------------- losses (pure functions)
def logsumexp(x):
    """log(sum(exp(x))) per row, shifted by the row max: stable for logits in the thousands.

    (torch.logsumexp does the same; Jittor's built-in does not shift and overflows, so both files use this.)
    Entries equal to -inf contribute exp(-inf) = 0: that is how classes are masked out.
    """
    m = x.max(dim=1, keepdims=True).detach()  # any constant works; the gradient through it cancels
    return m + (x - m).exp().sum(dim=1, keepdims=True).log()



def log_softmax(z):
    """log-softmax per row, as (z - max) - log(sum(exp(z - max))): exact for logits in the thousands.

    Jittor compiles fused kernels with fast-math, which may rewrite this as z - (max + log(sum))
    and lose ~1e-4 when |z| ~ 5000; Jittor's file stops fusion at z - max (stop_fuse).
    """
    shifted = (z - z.max(dim=1, keepdims=True).detach()).stop_fuse()
    return shifted - shifted.exp().sum(dim=1, keepdims=True).log()

def kl_from_log_probs(log_p, log_q):
    """KL(p || q) per row, sum_i p_i (log p_i - log q_i), from log-probabilities.

    p = exp(log p) with log p from log_softmax: a probability that underflows to exactly 0
    contributes 0 * (finite) = 0. kl_div(log q, p) computes p * log(p) instead, which is
    0 * log(0) = NaN in Jittor's KLDivLoss.
    """
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kd_loss(logits_student, logits_teacher, temperature):
    """Hinton KD: KL(teacher || student) of the softened distributions, times T^2, batch mean."""
    log_p_student = log_softmax(logits_student / temperature)
    log_p_teacher = log_softmax(logits_teacher / temperature)
    return kl_from_log_probs(log_p_teacher, log_p_student).mean() * temperature ** 2


def binary_log_probs(z, gt_mask):
    """log [p_target, p_rest] of softmax(z), in log space (exact even when p_target ~ 1).

    Built from log_softmax (which subtracts the row max first), never from z - logsumexp(z):
    with z in the thousands, logsumexp(z) rounds to ~5e-4 in float32 and so would every
    log-probability.
    """
    log_p = log_softmax(z)
    log_p_target = (log_p * gt_mask).sum(dim=1, keepdims=True)
    log_p_rest = logsumexp(log_p.masked_fill(gt_mask, float("-inf")))
    return jt.concat([log_p_target, log_p_rest], dim=1)


def non_target_log_probs(z, gt_mask):
    """log-softmax over the non-target classes only; 0 at the target so it adds exp(0)*(0-0) = 0 to a KL.

    The target is removed with -inf, not with the usual "z - 1000 * gt_mask": once |z| is
    in the thousands, 1000 no longer removes it and NCKD silently includes the target.
    """
    log_q = log_softmax(z.masked_fill(gt_mask, float("-inf")))
    return log_q.masked_fill(gt_mask, 0.0)


def dkd_loss_terms(logits_student, logits_teacher, target, temperature):
    """DKD's two parts (Zhao et al. 2022), each times T^2 and averaged over the batch.

    TCKD: KL between the binary (target, non-target) distributions.
    NCKD: KL between the distributions over the non-target classes.
    """
    gt_mask = nn.one_hot(target, logits_student.shape[1]).bool()
    z_student, z_teacher = logits_student / temperature, logits_teacher / temperature
    tckd = kl_from_log_probs(binary_log_probs(z_teacher, gt_mask), binary_log_probs(z_student, gt_mask))
    nckd = kl_from_log_probs(non_target_log_probs(z_teacher, gt_mask), non_target_log_probs(z_student, gt_mask))
    return {"tckd": tckd.mean() * temperature ** 2, "nckd": nckd.mean() * temperature ** 2}


def dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    """alpha * TCKD + beta * NCKD."""
    terms = dkd_loss_terms(logits_student, logits_teacher, target, temperature)
    return alpha * terms["tckd"] + beta * terms["nckd"]


def fitnet_loss(feat_student, feat_teacher):
    """FitNets' hint loss (mdistiller's FitNet): mean squared error between the student's feature,
    already projected to the teacher's shape by the learned regressor, and the teacher's feature.

    Averaged over space, then channels, then the batch: Jittor sums a float32 reduction in one run, so
    one mean over the 131,072 values of an 8 x 64 x 16 x 16 feature was 2e-5 off (in stages: 2e-8)."""
    return ((feat_student - feat_teacher) ** 2).mean(dims=[2, 3]).mean(dim=1).mean()


def attention_map(feat, p=2):
    """Attention transfer's map of an N x C x H x W feature: mean over channels of |f|^p, flattened
    and L2-normalised per sample (zero stays zero).

    The map does not change when f is scaled, so f is first divided by its largest |value| per
    sample: |f|^p cannot overflow float32 for huge activations (mdistiller's f.pow(p) does at 1e20).
    """
    scale = feat.abs().reshape(feat.shape[0], -1).max(dim=1).maximum(1e-30).detach()
    a = (feat / scale.reshape(-1, 1, 1, 1)).abs().pow(p).mean(dim=1).reshape(feat.shape[0], -1)
    return a / a.sqr().sum(dim=1, keepdims=True).sqrt().maximum(1e-12)


def pool_to(feat, size):
    """Average-pool an N x C x H x W feature to size x size (mdistiller's adaptive pooling, for sizes it divides)."""
    n, c, h, w = feat.shape
    if h % size or w % size:
        raise ValueError(f"attention transfer: a {h}x{w} feature does not pool to {size}x{size}")
    return feat.reshape(n, c, size, h // size, size, w // size).mean(dims=(3, 5))


def at_loss(feats_student, feats_teacher, p=2):
    """Attention transfer (mdistiller's AT): per stage the mean squared difference of the two attention
    maps, summed over stages; the larger feature is pooled to the smaller's size first."""
    loss = 0
    for fs, ft in zip(feats_student, feats_teacher):
        size = min(fs.shape[2], ft.shape[2])
        loss = loss + ((attention_map(pool_to(fs, size), p) - attention_map(pool_to(ft, size), p)) ** 2).mean()
    return loss


def rdrop_loss(logits_a, logits_b):
    """R-Drop's regulariser: the symmetric KL between two passes' predictions, (KL(a||b) + KL(b||a)) / 2,
    batch mean (alpha multiplies it); zero when the two passes agree."""
    log_a, log_b = log_softmax(logits_a), log_softmax(logits_b)
    # KL(a||b) + KL(b||a) = sum (p_a - p_b)(log p_a - log p_b): every term >= 0, and exactly 0 where they agree
    return 0.5 * ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(dim=1).mean()


def mean_terms(passes):
    """The loss terms of R-Drop's two passes, averaged term by term (one pass: its own terms)."""
    if len(passes) == 1:
        return passes[0]
    return {k: sum(p[k] for p in passes) / len(passes) for k in passes[0]}


# ---------------------------------------------------------------- each method's terms from one pass
# out, out_teacher: (logits, features); features (features.forward_features) only for methods that read them.
# w: the distillation weight of this epoch (the warm-up), which scales every term but the cross-entropy.
def ce_terms(out, out_teacher, labels, config, w, extra):
    return {"ce": config.ce_weight * nn.cross_entropy_loss(out[0], labels)}


def kd_terms(out, out_teacher, labels, config, w, extra):
    kd = kd_loss(out[0], out_teacher[0], config.temperature)
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "kd": w * config.kd_weight * kd}


def dkd_terms(out, out_teacher, labels, config, w, extra):
    terms = dkd_loss_terms(out[0], out_teacher[0], labels, config.temperature)
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "tckd": w * config.alpha * terms["tckd"],
            "nckd": w * config.beta * terms["nckd"]}


def fitnet_terms(out, out_teacher, labels, config, w, extra):
    hint = extra["regressor"](out[1]["feats"][config.hint_layer])
    feat = fitnet_loss(hint, out_teacher[1]["feats"][config.hint_layer])
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "fitnet": w * config.fitnet_weight * feat}


def at_terms(out, out_teacher, labels, config, w, extra):
    feats, feats_teacher = out[1]["feats"], out_teacher[1]["feats"]
    stages = run_at_stages(config, min(len(feats), len(feats_teacher)))
    at = at_loss([feats[i] for i in stages], [feats_teacher[i] for i in stages], config.at_p)
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "at": w * config.at_weight * at}


# ---------------------------------------------------------------- what a method builds or checks before training
def no_setup(config, student, teacher, device):
    return {}


def feature_counts(config, student, teacher):
    """The two models' feature shapes, and how many indices both have."""
    shapes_s, shapes_t = features.feature_shapes(student), features.feature_shapes(teacher)
    return shapes_s, shapes_t, min(len(shapes_s), len(shapes_t))


def fitnet_setup(config, student, teacher, device):
    """Check --hint-layer against both models' features; FitNet's regressor (mdistiller's ConvReg), seeded."""
    shapes_s, shapes_t, count = feature_counts(config, student, teacher)
    i = config.hint_layer
    if not 0 <= i < count:
        raise UserError(f"--hint-layer {i}: {config.model} and its teacher have features 0 to {count - 1}")
    regressor = models.build_regressor(shapes_s[i], shapes_t[i], config.seed)
    print(f"FitNet hint at feature {i}: student {shapes_s[i]} -> teacher {shapes_t[i]} "
          f"through {type(regressor.conv).__name__}")
    return {"regressor": devices.to_device(regressor, device)}


def at_setup(config, student, teacher, device):
    """Check --at-stages against both models' features (attention transfer pools by whole factors only)."""
    shapes_s, shapes_t, count = feature_counts(config, student, teacher)
    for i in run_at_stages(config, count):
        if not 0 <= i < count:
            raise UserError(f"--at-stages: {i} is not a feature of both {config.model} and its teacher (0 to {count - 1})")
        small, large = sorted([shapes_s[i][1], shapes_t[i][1]])
        if large % small:
            raise UserError(f"--at-stages: feature {i} is {shapes_s[i][1]} px in the student and {shapes_t[i][1]} px "
                            f"in the teacher; attention transfer pools by whole factors only")
    return {}


# ---------------------------------------------------------------- the method table
# terms: (out, out_teacher, labels, config, w, extra) -> {name: weighted term}, summed into the loss.
# teacher: needs a teacher. features: reads features, not only logits (the others run the plain forward).
# setup: (config, student, teacher, device) -> {key: module trained with the student}, after its checks.
# defaults: the method's own weights, the CE weight and any stage default it changes (common.config.resolve);
# None: per student model (common.config.PER_MODEL_DEFAULTS) or, for at_stages, every stage after the stem.
Method = collections.namedtuple("Method", "terms teacher features setup defaults")
METHODS = {
    "ce": Method(ce_terms, False, False, no_setup, dict(ce_weight=1.0)),
    # mdistiller's CIFAR weights: KD = 0.1 CE + 0.9 KD at T 4
    "kd": Method(kd_terms, True, False, no_setup, dict(ce_weight=0.1, kd_weight=0.9, temperature=4.0)),
    # DKD = 1.0 CE + alpha TCKD + beta NCKD at T 4; beta per student model (common.config.DKD_BETA)
    "dkd": Method(dkd_terms, True, False, no_setup, dict(ce_weight=1.0, alpha=1.0, beta=None, temperature=4.0)),
    # mdistiller/engine/cfg.py: FitNet CE 1 + 100 x hint at the second stage, AT CE 1 + 1000 x attention (p 2) on
    # feats[1:]; neither warms its distillation weight up
    "fitnet": Method(fitnet_terms, True, True, fitnet_setup,
                     dict(ce_weight=1.0, fitnet_weight=100.0, hint_layer=None, warmup=0)),
    "at": Method(at_terms, True, True, at_setup, dict(ce_weight=1.0, at_weight=1000.0, at_p=2.0, at_stages=None, warmup=0)),
}
