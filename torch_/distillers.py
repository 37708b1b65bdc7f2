"""The distillers, in PyTorch: every loss as a pure function, and the method table. jittor_/distillers.py
is the same file in Jittor, line for line.

A method is one entry of METHODS (mdistiller's one distiller per entry): a one-line title, the function
that makes its named loss terms from one forward pass, whether it reads features, the modules it trains
with the student (FitNet's regressor, VID's regressors and variances), and its default weights
(common.config.resolve applies them). Adding a method is one entry plus its loss function. The losses are pure functions, importable without side
effects: tests check them against float64 references written from the papers' definitions.
"""
import collections
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.config import (DKD_BETA, DKD_BETA_DEFAULT, SPLIT_SEED, TEACHER_DEFAULTS, at_stages,  # noqa: E402
                           run_at_stages)
from common.contrast import contrast_rng, default_k, draw_contrast, negatives_by_class  # noqa: E402
from common.datasets import DATASETS, load_dataset, split_indices  # noqa: E402
from common.distributed import launch  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.schedules import warmup_factor  # noqa: E402
from common.weights import init_weights, ofd_margins  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_ import device as devices, features, models  # noqa: E402


# ---------------------------------------------------------------- losses (pure functions)
def logsumexp(x):
    """log(sum(exp(x))) per row, shifted by the row max: stable for logits in the thousands.

    (torch.logsumexp does the same; Jittor's built-in does not shift, so both files use this.)
    Entries equal to -inf contribute exp(-inf) = 0: that is how classes are masked out.
    """
    m = x.max(dim=1, keepdim=True).values.detach()  # any constant works; the gradient through it cancels
    return m + (x - m).exp().sum(dim=1, keepdim=True).log()



def log_softmax(z):
    """log-softmax per row, as (z - max) - log(sum(exp(z - max))): exact for logits in the thousands.

    Jittor compiles fused kernels with fast-math, which may rewrite this as z - (max + log(sum))
    and lose ~1e-4 when |z| ~ 5000; Jittor's file stops fusion at z - max (stop_fuse).
    """
    shifted = (z - z.max(dim=1, keepdim=True).values.detach())
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()

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
    log_p_target = (log_p * gt_mask).sum(dim=1, keepdim=True)
    log_p_rest = logsumexp(log_p.masked_fill(gt_mask, float("-inf")))
    return torch.cat([log_p_target, log_p_rest], dim=1)


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
    gt_mask = F.one_hot(target, logits_student.shape[1]).bool()
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
    return ((feat_student - feat_teacher) ** 2).mean(dim=[2, 3]).mean(dim=1).mean()


def attention_map(feat, p=2):
    """Attention transfer's map of an N x C x H x W feature: mean over channels of |f|^p, flattened
    and L2-normalised per sample (zero stays zero).

    The map does not change when f is scaled, so f is first divided by its largest |value| per
    sample: |f|^p cannot overflow float32 for huge activations (mdistiller's f.pow(p) does at 1e20).
    """
    scale = feat.abs().reshape(feat.shape[0], -1).max(dim=1).values.clamp(min=1e-30).detach()
    a = (feat / scale.reshape(-1, 1, 1, 1)).abs().pow(p).mean(dim=1).reshape(feat.shape[0], -1)
    return a / a.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=1e-12)


def pool_to(feat, size):
    """Average-pool an N x C x H x W feature to size x size (mdistiller's adaptive pooling, for sizes it divides)."""
    n, c, h, w = feat.shape
    if h % size or w % size:
        raise ValueError(f"attention transfer: a {h}x{w} feature does not pool to {size}x{size}")
    return feat.reshape(n, c, size, h // size, size, w // size).mean(dim=(3, 5))


def at_loss(feats_student, feats_teacher, p=2):
    """Attention transfer (mdistiller's AT): per stage the mean squared difference of the two attention
    maps, summed over stages; the larger feature is pooled to the smaller's size first."""
    loss = 0
    for fs, ft in zip(feats_student, feats_teacher):
        size = min(fs.shape[2], ft.shape[2])
        loss = loss + ((attention_map(pool_to(fs, size), p) - attention_map(pool_to(ft, size), p)) ** 2).mean()
    return loss


def unit_rows(x, dim):
    """x / ||x|| along dim: mdistiller's F.normalize, zero staying zero.

    x is first divided by its largest |value| along dim (the quotient does not change): the sum of squares
    cannot overflow float32 (at 1e20) or underflow (at 1e-20, where F.normalize's floor of 1e-12 on the
    norm would shrink the row instead of normalising it), and an all-zero row gets the gradient 0, not the
    NaN of sqrt's at 0. The floors, 1e-15 on that divisor and 1e-24 on the sum of squares (only a zero row
    reaches it), keep their product a normal float32: Jittor's fast-math kernels fuse x / m / sqrt(c) into
    x / (m sqrt(c)), and with a floor of 1e-30 a zero row came out 0 / 0 = NaN there.
    """
    x = x / x.abs().max(dim=dim, keepdim=True).values.clamp(min=1e-15).detach()
    return x / x.pow(2).sum(dim=dim, keepdim=True).clamp(min=1e-24).sqrt()


def poly_kernel(a, b):
    """NST's kernel (a_i . b_j)^2 between the rows of a and b (N x C x HW each), averaged over the C_a x C_b
    pairs, then over the batch (mdistiller's poly_kernel(a, b).mean())."""
    return (a @ b.transpose(1, 2)).pow(2).mean(dim=2).mean(dim=1).mean()


def single_stage_nst_loss(f_s, f_t):
    """NST at one stage: the squared MMD, with the kernel (a . b)^2, between the student's and the teacher's
    channels, each channel's H x W map L2-normalised; the larger feature is pooled to the smaller's size
    first (mdistiller's adaptive pooling, for sizes it divides). Any channel counts."""
    size = min(f_s.shape[2], f_t.shape[2])
    s = unit_rows(pool_to(f_s, size).reshape(f_s.shape[0], f_s.shape[1], -1), 2)
    t = unit_rows(pool_to(f_t, size).reshape(f_t.shape[0], f_t.shape[1], -1), 2).detach()
    return poly_kernel(t, t) + poly_kernel(s, s) - 2 * poly_kernel(s, t)


def nst_loss(g_s, g_t):
    """Neuron selectivity transfer (Huang & Wang 2017; mdistiller's NST): single_stage_nst_loss summed over
    the stages given, mdistiller's feats[1:] (every feature after the stem). Each of the three kernel terms is
    a mean over the batch and the channel pairs; the teacher's own term is a constant (detached)."""
    loss = 0
    for f_s, f_t in zip(g_s, g_t):
        loss = loss + single_stage_nst_loss(f_s, f_t)
    return loss


def pkt_loss(f_s, f_t, eps=1e-7):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018; mdistiller's PKT, its cosine_similarity_loss)
    on the pooled features (N x D, any D each): per model the cosine similarities between the samples of the
    batch, mapped to [0, 1] by (c + 1) / 2 and normalised per row into a distribution; the loss is the mean
    over the N x N entries of t log((t + eps) / (s + eps)), i.e. KL(teacher || student) per row, divided by N.

    A row is divided by ||f|| + eps as mdistiller's, computed as (f / m) / (||f / m|| + eps / m) with m its
    largest |value|: the same quotient, but ||f||^2 cannot overflow float32 (at 1e20). An all-zero row stays
    zero (similarity 1/2 to every sample), so mdistiller's step that sets NaN to zero has nothing to do. The
    value, a KL between two nearly uniform distributions, is float32-exact to about 2e-8 only (as mdistiller's).
    """
    def probabilities(f):
        f = f.reshape(f.shape[0], -1)
        m = f.abs().max(dim=1, keepdim=True).values.clamp(min=1e-15).detach()
        f = f / m
        f = f / (f.pow(2).sum(dim=1, keepdim=True).clamp(min=1e-24).sqrt() + eps / m)
        similarity = (f @ f.transpose(0, 1) + 1.0) / 2.0
        return similarity / similarity.sum(dim=1, keepdim=True)

    s, t = probabilities(f_s), probabilities(f_t).detach()
    return (t * ((t + eps) / (s + eps)).log()).mean(dim=1).mean()


RKD_SQUARED, RKD_EPS = False, 1e-12  # mdistiller's CFG.RKD.PDIST: plain (not squared) distances, and their floor


def smooth_l1(a, b):
    """F.smooth_l1_loss's term per element (beta 1): (a - b)^2 / 2 where |a - b| < 1, else |a - b| - 1/2."""
    x = (a - b).abs()
    return torch.where(x < 1, 0.5 * x.pow(2), x - 0.5)


def rkd_relations(e, squared, eps):
    """RKD's relations among the N rows of e (N x D): the pairwise distances (squared: their squares), the
    diagonal 0, divided by their mean over the N (N - 1) pairs (mdistiller's _pdist, then d / d[d > 0].mean():
    its floor keeps every pair > 0); and the cosines of the angles between e_j - e_i and e_k - e_i (N x N x N).

    Both come from the differences e_j - e_i, not from |a|^2 + |b|^2 - 2 a.b as mdistiller's _pdist, which
    cancels in float32 for nearby rows, and from e / m, m its largest |value| (at least sqrt(eps)): both
    relations are free of scale, and the squares overflow float32 at 1e20. The floor eps of the squared
    distance is scaled alike (eps / m^2, at least 1e-30: sqrt's gradient stays finite on the diagonal). A
    batch of one has no pair: distances 0 (mdistiller's mean of no pair is NaN). The angles' unit vectors are
    unit_rows': e_j = e_i gives the zero vector, as mdistiller's F.normalize.
    """
    n = e.shape[0]
    m = e.abs().max().clamp(min=eps ** 0.5).detach()
    diff = (e / m).unsqueeze(0) - (e / m).unsqueeze(1)  # [i, j] = e_j - e_i, mdistiller's sd
    d = torch.maximum(diff.pow(2).sum(dim=2), ((eps ** 0.5 / m) ** 2).clamp(min=1e-30))
    if not squared:
        d = d.sqrt()
    d = d * (1 - torch.eye(n, dtype=d.dtype, device=d.device))
    d = d / (d.sum(dim=1).sum() / max(n * (n - 1), 1)).clamp(min=1e-30)
    u = unit_rows(diff, 2)
    return d, u @ u.transpose(1, 2)


def rkd_loss(f_s, f_t, squared=False, eps=1e-12, distance_weight=25, angle_weight=50):
    """Relational knowledge distillation (Park et al. 2019; mdistiller's RKD) on the pooled features (N x D,
    any D each): distance_weight x the smooth-L1 loss between the two models' normalised pairwise distances,
    a mean over the N x N pairs (the diagonal's zeros included), + angle_weight x the smooth-L1 loss between
    their angles' cosines, a mean over the N x N x N triples (rkd_relations), as mdistiller's
    F.smooth_l1_loss. eps > 0."""
    d_s, a_s = rkd_relations(f_s.reshape(f_s.shape[0], -1), squared, eps)
    d_t, a_t = rkd_relations(f_t.reshape(f_t.shape[0], -1).detach(), squared, eps)
    loss_d = smooth_l1(d_s, d_t).mean(dim=1).mean()
    loss_a = smooth_l1(a_s, a_t).mean(dim=2).mean(dim=1).mean()
    return distance_weight * loss_d + angle_weight * loss_a


def similarity_loss(f_s, f_t):
    """SP at one stage (mdistiller's similarity_loss): the batch's N x N Gram matrices of the flattened features
    (any shapes, the same N), each row L2-normalised, and the squared Frobenius distance between the two,
    divided by N^2. Each feature is first divided by its largest |value| in the batch (the row-normalised
    Gram matrix does not change; f f^T overflows float32 at 1e20)."""
    def gram(f):
        f = f.reshape(f.shape[0], -1)
        f = f / f.abs().max().clamp(min=1e-15).detach()
        return unit_rows(f @ f.transpose(0, 1), 1)

    n = f_s.shape[0]
    return (gram(f_t).detach() - gram(f_s)).pow(2).sum(dim=1).sum() / (n * n)


def sp_loss(g_s, g_t):
    """Similarity-preserving distillation (Tung & Mori 2019; mdistiller's SP): similarity_loss summed over the
    stages given, mdistiller's [feats[-1]] (the last stage only)."""
    loss = 0
    for f_s, f_t in zip(g_s, g_t):
        loss = loss + similarity_loss(f_s, f_t)
    return loss


def svd_backward(x, v, grad_v):
    """The gradient of a loss through V alone, x = U S V^T (N x M x W, M >= W, V square): U S (F o (V^T G -
    G^T V)) V^T with G its gradient at V and F_ij = 1 / (s_j^2 - s_i^2), 0 on the diagonal (Townsend 2016,
    "Differentiating the singular value decomposition"); U S = x V. F is 0 where two singular values agree to
    1e-6 of the largest s^2: there V is not unique and the exact gradient infinite (torch's own backward
    gives NaN for an all-zero feature)."""
    xv = x @ v
    s2 = xv.pow(2).sum(dim=1)  # s_j^2, N x W
    gap = s2.unsqueeze(1) - s2.unsqueeze(2)  # [i, j] = s_j^2 - s_i^2
    close = gap.abs() <= 1e-6 * s2.max(dim=1, keepdim=True).values.unsqueeze(2)
    f = torch.where(close, torch.zeros_like(gap), 1 / torch.where(close, torch.ones_like(gap), gap))
    k = v.transpose(1, 2) @ grad_v
    return xv @ (f * (k - k.transpose(1, 2))) @ v.transpose(1, 2)


class RightSingularVectors(torch.autograd.Function):
    """V of x = U S V^T (N x M x W, M >= W): the right singular vectors as columns, by falling singular value,
    each column's sign such that its largest |entry| is positive. LAPACK's (torch.linalg.svd's, numpy's) signs
    are arbitrary and differ between the two frameworks, and KDSVD's value depends on the teacher's; the
    backward is svd_backward, the same in both frameworks."""
    @staticmethod
    def forward(ctx, x):
        v = torch.linalg.svd(x, full_matrices=False)[2].transpose(1, 2)
        v = v * v.gather(1, v.abs().argmax(dim=1, keepdim=True)).sign()
        ctx.save_for_backward(x, v)
        return v

    @staticmethod
    def backward(ctx, grad_v):
        return svd_backward(*ctx.saved_tensors, grad_v)


def svd(feat, n):
    """mdistiller's svd(feat, n) of KDSVD: an N x C x H x W feature, each sample viewed as a (C H) x W matrix
    (mdistiller's view; the original TensorFlow code's NHWC view takes H W x C), its top n right singular
    vectors (W x n; mdistiller normalises them again, a no-op) and its top n singular values, L2-normalised.

    The matrix is divided by its largest |value| first: neither output changes, and the SVD is then of
    ordinary numbers at 1e20 or 1e-20. An all-zero feature has singular values 0 (normalised: 0).
    """
    x = feat.reshape(feat.shape[0], feat.shape[1] * feat.shape[2], feat.shape[3])
    x = x / x.abs().reshape(x.shape[0], -1).max(dim=1).values.clamp(min=1e-15).reshape(-1, 1, 1).detach()
    v = RightSingularVectors.apply(x)[:, :, :n]
    s = (x @ v).pow(2).sum(dim=1).sqrt()  # |x v_i| = s_i; no gradient is taken through it (the teacher's only)
    return unit_rows(s, 1), v


def align_rsv(a, b):
    """mdistiller's align_rsv: for each of b's columns (the teacher's singular vectors, N x W x k), the column
    of a (the student's, N x W x k') of largest |cosine|, times the cosine's sign: N x W x k. The choice is a
    constant (no gradient), as mdistiller's where/sign."""
    cosine = a.transpose(1, 2) @ b
    best = cosine.abs().max(dim=1, keepdim=True).values
    mask = torch.where(cosine.abs() == best, (cosine > 0).float() - (cosine < 0).float(), torch.zeros_like(cosine))
    return a @ mask.detach()


def kdsvd_loss(g_s, g_t, k):
    """Self-supervised KD with SVD (Lee et al. 2018; mdistiller's KDSVD) over the stages given, mdistiller's
    feats[1:]: per stage the teacher's top k right singular vectors and the student's top k + 3 (at most W),
    the student's aligned to the teacher's (align_rsv), both scaled by the teacher's normalised singular
    values; between consecutive stages the RBF exp(-(v_i - v'_j)^2 / 8) of every pair of entries (rows i, j,
    per vector), and the loss is the squared difference of the student's and the teacher's RBFs, summed over
    all of them and averaged over the batch, summed over the stage pairs. Student and teacher need the same
    W at each stage. mdistiller also sets non-finite SVD outputs and loss entries to 0; here none arise.

    The singular vectors' signs (RightSingularVectors): the student's cancel in align_rsv, the teacher's do
    not (negating one stage's teacher vector changes the value), so they follow a fixed rule (largest |entry|
    positive) instead of LAPACK's arbitrary choice. The two frameworks' own SVDs: torch.linalg.svd and
    jt.linalg.svd (numpy.linalg.svd inside a numpy_code op) both return U, S and V^T (not torch.svd's V),
    singular values falling, but on the same float32 input their vectors' signs differed (two of five in one
    sample); jt.linalg.svd's gradient through V^T is wrong (off by 1.5 against finite differences where the
    gradient is about 1) and on a GPU it needs CuPy. So both files take V from RightSingularVectors: LAPACK
    (torch's on the tensor's device; numpy's on the host in Jittor), the sign rule, and one hand-written
    backward (svd_backward), checked against finite differences in float64.
    """
    loss, previous = 0, None
    for f_s, f_t in zip(g_s, g_t):
        s_t, v_t = svd(f_t.detach(), k)
        _, v_s = svd(f_s, min(k + 3, f_s.shape[3]))
        v_s = align_rsv(v_s, v_t) * s_t.unsqueeze(1)
        v_t = v_t * s_t.unsqueeze(1)
        if previous is not None:
            rbf_s = (-(v_s.unsqueeze(2) - previous[0].unsqueeze(1)).pow(2) / 8).exp()
            rbf_t = (-(v_t.unsqueeze(2) - previous[1].unsqueeze(1)).pow(2) / 8).exp()
            loss = loss + (rbf_s - rbf_t).pow(2).sum(dim=3).sum(dim=2).sum(dim=1).mean()
        previous = v_s, v_t
    return loss


def softplus(x):
    """log(1 + exp(x)), as max(x, 0) + log(1 + exp(-|x|)): exp(x) overflows float32 above 88, exp(-|x|) never
    (mdistiller's torch.log(1.0 + torch.exp(log_scale)) is inf there). The two where()s give the gradient
    sigmoid(x) everywhere, 1/2 at 0 too (clamp and abs would give 1 there). Float32-exact to about 6e-8 absolute
    (the rounding of 1 + exp(-|x|)), as mdistiller's: the variance has the floor eps above it anyway."""
    positive = x > 0
    return torch.where(positive, x, torch.zeros_like(x)) + (1 + torch.where(positive, -x, x).exp()).log()


def vid_loss(regressor, log_scale, f_s, f_t, eps=1e-5):
    """Variational information distillation at one stage (Ahn et al. 2019; mdistiller's vid_loss): the larger
    feature pooled to the smaller's size (mdistiller's adaptive pooling, for sizes it divides); the regressor's
    output from the student's feature is the mean of a Gaussian over the teacher's, with one variance per
    teacher channel, softplus(log_scale) + eps; the loss is its negative log-likelihood less the constant,
    0.5 ((mean - f_t)^2 / variance + log variance), averaged over space, then channels, then the batch (as
    fitnet_loss: one float32 mean over all of it is less exact in Jittor). Any batch size, a batch of one too; an
    all-zero student feature gives the bias-free regressor's output 0."""
    size = min(f_s.shape[2], f_t.shape[2])
    mean = regressor(pool_to(f_s, size))
    variance = (softplus(log_scale) + eps).reshape(1, -1, 1, 1)
    nll = 0.5 * ((mean - pool_to(f_t, size)) ** 2 / variance + variance.log())
    return nll.mean(dim=[2, 3]).mean(dim=1).mean()


def feat_loss(source, target, margin):
    """OFD's distillation loss (Heo et al. 2019; mdistiller's feat_loss): a partial L2 between the student's connected
    pre-activation feature (source) and the teacher's (target), with the teacher's negative responses replaced by
    its channel's margin: no loss where both lie at or below the margin, (source - margin)^2 where only the
    teacher does, (source - target)^2 where the teacher is positive or where it lies in (margin, 0] and the student
    above it. Mean over the batch, summed over channels and positions (axis by axis)."""
    margin = torch.as_tensor(margin, dtype=source.dtype, device=source.device).reshape(1, -1, 1, 1)
    loss = ((source - margin) ** 2 * ((source > margin) & (target <= margin)).to(source.dtype)
            + (source - target) ** 2 * ((source > target) & (target > margin) & (target <= 0)).to(source.dtype)
            + (source - target) ** 2 * (target > 0).to(source.dtype))
    return loss.abs().mean(dim=0).sum(dim=2).sum(dim=1).sum()


def hcl_loss(fstudent, fteacher):
    """ReviewKD's hierarchical context loss (Chen et al. 2021; mdistiller's hcl_loss): per pair of features the MSE,
    plus the MSEs of both average-pooled to 4x4, 2x2 and 1x1 (the sizes below the feature's), weighted 1/2, 1/4,
    1/8 and the sum divided by the weights' sum; summed over the pairs."""
    loss_all = 0.0
    for fs, ft in zip(fstudent, fteacher):
        h = fs.shape[2]
        loss, cnt, tot = mse(fs, ft), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= h:
                continue
            cnt /= 2.0
            loss = loss + mse(pool_to(fs, size), pool_to(ft, size)) * cnt
            tot += cnt
        loss_all = loss_all + loss / tot
    return loss_all


def contrast_loss(x, num_data, eps=1e-7):
    """CRD's NCE loss of one view (Tian et al. 2020; mdistiller's ContrastLoss): x [B, K + 1] the normalised scores,
    each row's positive first, against noise of probability 1 / num_data, m = K: -(sum over rows of
    log(P_pos / (P_pos + m Pn + eps)) + sum over the negatives of log(m Pn / (P_neg + m Pn + eps))) / B, summed row
    by row (mdistiller's sums run over B x K at once)."""
    bsz, m = x.shape[0], x.shape[1] - 1
    noise = m / num_data
    log_d1 = (x[:, 0] / (x[:, 0] + noise + eps)).log()
    log_d0 = (noise / (x[:, 1:] + noise + eps)).log()
    return -(log_d1.sum() + log_d0.sum(dim=1).sum()) / bsz


def contrast_scores(memory, v, rows, temperature):
    """exp(memory[rows] . v / T) [B, K + 1]: one embedding per sample against its rows of the other view's memory bank
    (mdistiller's ContrastMemory: index_select, bmm, exp); the memory is a constant here (detached)."""
    bsz, k1 = rows.shape
    weight = memory[rows.reshape(-1)].reshape(bsz, k1, -1).detach()
    return ((weight @ v.reshape(bsz, -1, 1)).reshape(bsz, k1) / temperature).exp()


def deit_loss(outputs_kd, teacher_logits, distillation_type, tau):
    """DeiT's distillation loss on the distillation head (Touvron et al. 2021; deit/losses.py DistillationLoss).
    soft: KL(teacher || student) at temperature tau, summed over the batch, x tau^2, divided by batch x classes
    (DeiT's reduction: kl_div(reduction='sum') / outputs_kd.numel(), not batchmean: 1 / classes of KD's mean);
    hard: cross-entropy against the teacher's argmax."""
    if distillation_type == "hard":
        return F.cross_entropy(outputs_kd, teacher_logits.argmax(dim=1))
    kl = kl_from_log_probs(log_softmax(teacher_logits / tau), log_softmax(outputs_kd / tau))
    return kl.sum() * (tau * tau) / outputs_kd.numel()


def mse(a, b):
    """Mean squared error over every entry, reduced axis by axis (Jittor's float32 sums run in one pass)."""
    d = (a - b) ** 2
    while d.dim() > 1:
        d = d.mean(dim=-1)
    return d.mean()


def unmask(scores):
    """TinyBERT's guard: attention scores <= -1e2 (a masked entry: -10000 or -inf) count as 0, so that a masked
    entry of either model adds nothing and -inf never meets -inf (inf - inf is NaN)."""
    return torch.where(scores <= -1e2, torch.zeros_like(scores), scores)


def tinybert_att_loss(att_s, att_t):
    """TinyBERT's attention loss (Jiao et al. 2020; its task_distill.py): the MSE of the pre-softmax scores of all
    heads, [B, heads, L, L], of each student block against its teacher block (unmask first), summed over blocks."""
    return sum(mse(unmask(s), unmask(t)) for s, t in zip(att_s, att_t))


def tinybert_rep_loss(states_s, states_t):
    """TinyBERT's hidden-state loss: the MSE of each student state, already mapped to the teacher's width by the
    learned linear map (fit_dense), against its teacher state, summed over states (the embedding output included)."""
    return sum(mse(s, t) for s, t in zip(states_s, states_t))


def soft_cross_entropy(predicts, targets):
    """TinyBERT's prediction loss: -softmax(targets) . log_softmax(predicts), averaged over the batch *and* the
    classes (its .mean() of the product), with no T^2 and no label term: call it with logits / T."""
    return (-(log_softmax(targets).exp() * log_softmax(predicts))).mean(dim=1).mean()


def rdrop_loss(logits_a, logits_b):
    """R-Drop's regulariser: the symmetric KL between two passes' predictions, (KL(a||b) + KL(b||a)) / 2,
    batch mean (alpha multiplies it); zero when the two passes agree."""
    log_a, log_b = log_softmax(logits_a), log_softmax(logits_b)
    # KL(a||b) + KL(b||a) = sum (p_a - p_b)(log p_a - log p_b): every term >= 0, and exactly 0 where they agree
    return 0.5 * ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(dim=1).mean()


OFD_KERNEL = 1  # mdistiller's OFD.CONNECTOR.KERNEL_SIZE
REVIEWKD_MAX_MID = 512  # mdistiller's ABF middle width: min(512, the student's pooled width)
TASK_TERMS = ("ce", "rdrop")  # the terms of the task loss; the others are distillation (DOT keeps them apart)


def mean_terms(passes):
    """The loss terms of R-Drop's two passes, averaged term by term (one pass: its own terms)."""
    if len(passes) == 1:
        return passes[0]
    return {k: sum(p[k] for p in passes) / len(passes) for k in passes[0]}


# ---------------------------------------------------------------- each method's terms from one pass
# out, out_teacher: (logits, features); features (features.forward_features) only for methods that read them.
# w: the distillation weight of this epoch (the warm-up), which scales every term but the cross-entropy.
def ce_terms(out, out_teacher, labels, config, w, extra):
    return {"ce": config.ce_weight * F.cross_entropy(out[0], labels)}


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


def after_stem(config, out, out_teacher):
    """mdistiller's feats[1:] of the student and the teacher, every feature after the stem: all of them for the
    models without a stem entry (common.config.NO_STEM), as AT's default stages."""
    feats, feats_teacher = out[1]["feats"], out_teacher[1]["feats"]
    stages = at_stages(config.model, min(len(feats), len(feats_teacher)))
    return [feats[i] for i in stages], [feats_teacher[i] for i in stages]


def nst_terms(out, out_teacher, labels, config, w, extra):
    nst = nst_loss(*after_stem(config, out, out_teacher))
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "nst": w * config.nst_weight * nst}


def pkt_terms(out, out_teacher, labels, config, w, extra):
    pkt = pkt_loss(out[1]["pooled_feat"], out_teacher[1]["pooled_feat"])
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "pkt": w * config.pkt_weight * pkt}


def rkd_terms(out, out_teacher, labels, config, w, extra):
    rkd = rkd_loss(out[1]["pooled_feat"], out_teacher[1]["pooled_feat"], RKD_SQUARED, RKD_EPS,
                   config.rkd_distance_weight, config.rkd_angle_weight)
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "rkd": w * rkd}


def sp_terms(out, out_teacher, labels, config, w, extra):
    sp = sp_loss([out[1]["feats"][-1]], [out_teacher[1]["feats"][-1]])  # mdistiller's feats[-1]: the last stage
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "sp": w * config.sp_weight * sp}


def kdsvd_terms(out, out_teacher, labels, config, w, extra):
    kdsvd = kdsvd_loss(*after_stem(config, out, out_teacher), config.kdsvd_k)
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "kdsvd": w * config.kdsvd_weight * kdsvd}


def vid_terms(out, out_teacher, labels, config, w, extra):
    vid = extra["vid"](*after_stem(config, out, out_teacher))  # VIDModules: vid_loss summed over the stages
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "vid": w * config.vid_weight * vid}


def ofd_terms(out, out_teacher, labels, config, w, extra):
    ofd = extra["ofd"](*ofd_pairs(config, out, out_teacher))  # OFDConnectors: feat_loss summed over the stages
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "ofd": w * config.ofd_weight * ofd}


def reviewkd_terms(out, out_teacher, labels, config, w, extra):
    reviewkd = extra["reviewkd"](*reviewkd_pairs(config, out, out_teacher))  # ReviewKDModules: the ABFs, hcl_loss
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "reviewkd": w * config.reviewkd_weight * reviewkd}


def crd_terms(out, out_teacher, labels, config, w, extra):
    crd = extra["crd"](out[1]["pooled_feat"], out_teacher[1]["pooled_feat"], extra["index"])  # CRDModules
    return {**ce_terms(out, out_teacher, labels, config, w, extra), "crd": w * config.crd_weight * crd}


def deit_terms(out, out_teacher, labels, config, w, extra):
    """(1 - alpha) x the label loss on the class head + alpha x DeiT's loss on the distillation head."""
    heads = out[1]["heads"]
    distill = deit_loss(heads["head_dist"], out_teacher[0], config.deit_type, config.deit_tau)
    return {"ce": (1 - config.deit_alpha) * F.cross_entropy(heads["head"], labels),
            "deit": w * config.deit_alpha * distill}


def tinybert_pairs(out, out_teacher):
    """TinyBERT's layer map, k = teacher blocks / student blocks: student block i's scores against teacher block
    i k + k - 1's; student state j (0: the embedding output) against teacher state j k."""
    att_s, states_s = out[1]["attention"], out[1]["feats"]
    att_t, states_t = out_teacher[1]["attention"], out_teacher[1]["feats"]
    k = len(att_t) // len(att_s)
    att_t = [att_t[i * k + k - 1] for i in range(len(att_s))]
    states_t = [states_t[j * k] for j in range(len(states_s))]
    return att_s, att_t, states_s, states_t


def tinybert_terms(out, out_teacher, labels, config, w, extra):
    """w is TinyBERT's stage (tinybert_stage): 0 while the attention and hidden-state losses train (stage 1), 1 once
    the prediction loss does (stage 2). Every term is computed in both stages, the idle ones weighted 0, so that
    both frameworks hand the optimizer the same (zero) gradients for the linear map in stage 2."""
    att_s, att_t, states_s, states_t = tinybert_pairs(out, out_teacher)
    mapped = extra["fit_dense"](states_s)
    T = config.temperature
    return {"att": (1 - w) * tinybert_att_loss(att_s, att_t), "rep": (1 - w) * tinybert_rep_loss(mapped, states_t),
            "pred": w * soft_cross_entropy(out[0] / T, out_teacher[0] / T)}


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


def check_whole_factors(name, shapes_s, shapes_t, stages):
    """NST and VID pool the larger of each pair of features to the smaller's size, by whole factors only."""
    for i in stages:
        small, large = sorted([shapes_s[i][1], shapes_t[i][1]])
        if large % small:
            raise UserError(f"--method {name.lower()}: feature {i} is {shapes_s[i][1]} px in the student and "
                            f"{shapes_t[i][1]} px in the teacher; {name} pools by whole factors only")


def nst_setup(config, student, teacher, device):
    """NST compares every feature after the stem, pooling the larger to the smaller by whole factors only."""
    shapes_s, shapes_t, count = feature_counts(config, student, teacher)
    check_whole_factors("NST", shapes_s, shapes_t, at_stages(config.model, count))
    return {}


def batch_setup(config, student, teacher, device):
    """PKT, RKD and SP relate the samples of a batch to each other: a batch of one has nothing to relate."""
    if config.batch_size < 2:
        raise UserError(f"--method {config.method} relates the samples of a batch to each other: "
                        f"--batch-size {config.batch_size} is too small (2 or more)")
    return {}


def kdsvd_setup(config, student, teacher, device):
    """KDSVD takes the top k right singular vectors (over the width) of every feature after the stem, the
    student's aligned to the teacher's: both need the same width there, and k at most that width."""
    shapes_s, shapes_t, count = feature_counts(config, student, teacher)
    if config.kdsvd_k < 1:
        raise UserError(f"--kdsvd-k {config.kdsvd_k}: KDSVD compares at least one singular vector")
    for i in at_stages(config.model, count):
        (c_s, h_s, w_s), (c_t, h_t, w_t) = shapes_s[i], shapes_t[i]
        if w_s != w_t:
            raise UserError(f"--method kdsvd: feature {i} is {w_s} px wide in the student and {w_t} px in the teacher; "
                            f"KDSVD aligns singular vectors over the width, which must agree")
        if config.kdsvd_k > min(c_s * h_s, c_t * h_t, w_t):
            raise UserError(f"--kdsvd-k {config.kdsvd_k}: feature {i} has only {min(c_s * h_s, c_t * h_t, w_t)} "
                            f"singular vectors (a {c_t} x {h_t} x {w_t} feature is a {c_t * h_t} x {w_t} matrix)")
    return {}


def conv1x1(in_channels, out_channels):
    """mdistiller's conv1x1 of VID: a 1x1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class VIDStage(nn.Module):
    """VID's module of one stage (mdistiller's VID.init_vid_modules): the regressor conv1x1-ReLU-conv1x1-ReLU-conv1x1
    (no biases; the teacher's channels in the middle, as mdistiller's) from the student's channels to the teacher's,
    and the log-scale of its variance, one per teacher channel."""

    def __init__(self, channels_s, channels_t):
        super().__init__()
        self.regressor = nn.Sequential(conv1x1(channels_s, channels_t), nn.ReLU(), conv1x1(channels_t, channels_t),
                                       nn.ReLU(), conv1x1(channels_t, channels_t))
        self.log_scale = nn.Parameter(torch.zeros(channels_t))


class VIDModules(nn.Module):
    """VID's modules trained with the student, a VIDStage per stage compared. mdistiller keeps its log-scales in a
    plain list, outside the optimizer, so they never train there; here they do, as in the paper and its authors'
    code. The forward is the VID loss summed over the stages (vid_loss): the engine calls the modules it trains
    with the student, so that a data-parallel wrapper sees the call."""

    def __init__(self, channels_s, channels_t, eps):
        super().__init__()
        self.eps = eps
        self.stages = nn.ModuleList([VIDStage(s, t) for s, t in zip(channels_s, channels_t)])

    def forward(self, g_s, g_t):
        loss = 0
        for stage, f_s, f_t in zip(self.stages, g_s, g_t):
            loss = loss + vid_loss(stage.regressor, stage.log_scale, f_s, f_t, self.eps)
        return loss


def build_vid(shapes_s, shapes_t, init_pred_var, eps, seed):
    """VIDModules for the (C, H, W) shapes of the features compared, with every initial value set here, the same
    in both frameworks (their default initialisers differ): the convs torch's default U(+-1/sqrt(fan_in)) drawn in
    numpy, stage by stage, from a stream of their own ([seed, 2]; FitNet's regressor draws from [seed, 1]), and every
    log-scale the inverse softplus of init_pred_var - eps, so that the initial variance softplus(log_scale) + eps is
    init_pred_var (mdistiller's INIT_PRED_VAR): mdistiller's log(exp(v) - 1), written v + log(1 - exp(-v)) (exp(v)
    overflows float64 above v = 709)."""
    vid = VIDModules([s[0] for s in shapes_s], [t[0] for t in shapes_t], eps)
    shapes = models.state_shapes(vid)
    state = seeded({k: v for k, v in shapes.items() if not k.endswith(".log_scale")}, [seed, 2], "uniform")
    v = init_pred_var - eps
    state.update({k: np.full(shape, v + np.log(-np.expm1(-v))) for k, shape in shapes.items() if k.endswith(".log_scale")})
    models.load_state(vid, state, f"init(vid, seed={seed})")
    return vid


def vid_setup(config, student, teacher, device):
    """VID's regressors and log-scales (build_vid, seeded) on every feature after the stem, mdistiller's feats[1:];
    the larger feature of each pair is pooled to the smaller's size by whole factors only."""
    if not config.vid_init_pred_var > config.vid_eps > 0:
        raise UserError(f"--vid-init-pred-var {config.vid_init_pred_var:g} --vid-eps {config.vid_eps:g}: VID's "
                        f"initial variance must exceed its floor eps, and eps be positive")
    shapes_s, shapes_t, count = feature_counts(config, student, teacher)
    stages = at_stages(config.model, count)
    check_whole_factors("VID", shapes_s, shapes_t, stages)
    vid = build_vid([shapes_s[i] for i in stages], [shapes_t[i] for i in stages], config.vid_init_pred_var,
                    config.vid_eps, config.seed)
    print(f"VID on features {stages}: {len(stages)} regressors, {sum(p.numel() for p in vid.parameters())} weights")
    return {"vid": devices.to_device(vid, device)}


def teacher_model(config):
    """The teacher's model name (None in a config: the stage default's, CIFAR10Quick)."""
    return config.teacher_model or TEACHER_DEFAULTS["model"]


def after_stem_of(model, items):
    """A model's features after its stem (every one for the models without a stem entry, common.config.NO_STEM)."""
    return [items[i] for i in at_stages(model, len(items))]


def last_common(*lists):
    """mdistiller's _align_list: the last entries of each list, as many as the shortest has."""
    count = min(len(items) for items in lists)
    return [items[len(items) - count:] for items in lists]


def ofd_pairs(config, out, out_teacher):
    """OFD's features: the student's and the teacher's pre-activation features after the stem, the last of each
    as many as both have (mdistiller's preact_feats[1:], aligned)."""
    return last_common(after_stem_of(config.model, out[1]["preact_feats"]),
                       after_stem_of(teacher_model(config), out_teacher[1]["preact_feats"]))


def reviewkd_pairs(config, out, out_teacher):
    """ReviewKD's features, shallow to deep: the student's features after the stem and its pooled feature (mdistiller's
    STU_PREACT False), the teacher's pre-activation features after the stem and its pooled feature."""
    pooled_s, pooled_t = out[1]["pooled_feat"], out_teacher[1]["pooled_feat"]
    return (after_stem_of(config.model, out[1]["feats"]) + [pooled_s.reshape(*pooled_s.shape, 1, 1)],
            after_stem_of(teacher_model(config), out_teacher[1]["preact_feats"])
            + [pooled_t.reshape(*pooled_t.shape, 1, 1)])


def preact_shapes(config, student, teacher, method, readers=("student", "teacher")):
    """The shapes of both models' features (features.probe_shapes); a one-line refusal where a model of readers, the
    ones whose pre-activation features the method reads, does not list them (PREACT)."""
    shapes = {}
    for role, name, model in (("student", config.model, student), ("teacher", teacher_model(config), teacher)):
        if role in readers and not hasattr(getattr(model, "module", model), "PREACT"):
            raise UserError(f"--method {method} reads pre-activation features, which {role} {name} does not list "
                            f"(every CNN here but MobileNetV2 lists them; mdistiller's MobileNetV2 has none)")
        shapes[role] = features.probe_shapes(model)
    return shapes["student"], shapes["teacher"]


class OFDConnectors(nn.Module):
    """OFD's connectors (mdistiller's ConnectorConvBN), trained with the student: per stage a conv from the student's
    channels to the teacher's (no bias) and a BatchNorm. The forward is mdistiller's ofd_loss: stage i of n gives
    feat_loss(connected student feature, the teacher's average-pooled to its size, margin) / 2^(n - 1 - i). The
    margins are constants of the teacher (float64 numpy, common.weights.ofd_margins), not state."""

    def __init__(self, channels_s, channels_t, margins, kernel_size=1):
        super().__init__()
        self.connectors = nn.ModuleList([
            nn.Sequential(nn.Conv2d(s, t, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
                          models.BatchNorm2d(t)) for s, t in zip(channels_s, channels_t)])
        self.margins = [np.asarray(m, dtype=np.float32) for m in margins]

    def forward(self, g_s, g_t):
        loss, n = 0, len(g_s)
        for i, (connector, f_s, f_t, margin) in enumerate(zip(self.connectors, g_s, g_t, self.margins)):
            f_s = connector(f_s)
            loss = loss + feat_loss(f_s, pool_to(f_t, f_s.shape[2]).detach(), margin) / 2 ** (n - 1 - i)
        return loss


def seeded(shapes, seed, scheme):
    """Initial values for the {name: shape} entries of a method's module, drawn in numpy (common.weights.init_weights)
    from a stream of its own, in one name order for both frameworks (their state orders may differ)."""
    order = sorted(shapes, key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
    return init_weights({k: shapes[k] for k in order}, seed, scheme)


def ofd_setup(config, student, teacher, device):
    """OFD's connectors and the teacher's margins (mdistiller's init_ofd_modules) on the stages ofd_pairs takes: the
    teacher must list the BatchNorm before each stage's ReLU, and the student's feature size divide the teacher's
    (its feature is average-pooled to the student's). Connectors: mdistiller's init, conv N(0, 2 / (k k out)) and BN
    1 and 0, drawn from a stream of their own ([seed, 4])."""
    shapes_s, shapes_t = preact_shapes(config, student, teacher, "ofd")
    bns = getattr(getattr(teacher, "module", teacher), "BN_BEFORE_RELU", None)
    if not bns:
        raise UserError(f"--method ofd takes its margins from the teacher's BatchNorms before its ReLUs, which teacher "
                        f"{teacher_model(config)} does not have")
    pre_s, pre_t = last_common(after_stem_of(config.model, shapes_s["preact_feats"]),
                               after_stem_of(teacher_model(config), shapes_t["preact_feats"]))
    bns = bns[len(bns) - len(pre_t):]
    for (c_s, h_s, _), (c_t, h_t, _) in zip(pre_s, pre_t):
        if h_t % h_s:
            raise UserError(f"--method ofd: a {h_s} px student feature against a {h_t} px teacher feature; OFD pools "
                            f"the teacher's to the student's size by whole factors only")
    state_t = models.get_state(getattr(teacher, "module", teacher))
    margins = [ofd_margins(state_t[f"{bn}.weight"], state_t[f"{bn}.bias"]) for bn in bns]
    ofd = OFDConnectors([s[0] for s in pre_s], [t[0] for t in pre_t], margins, OFD_KERNEL)
    models.load_state(ofd, seeded(models.state_shapes(ofd), [config.seed, 4], "kaiming_normal"),
                      f"init(ofd, seed={config.seed})")
    print(f"OFD on {len(pre_s)} stages: connectors {[s[0] for s in pre_s]} -> {[t[0] for t in pre_t]} channels, "
          f"margins from {bns}")
    return {"ofd": devices.to_device(ofd, device)}


def resize_nearest(x, size):
    """F.interpolate(x, (size, size), mode="nearest") between sizes a whole factor apart, up or down, written out
    (repeat each pixel, or take every f-th), so that both frameworks index the same pixels."""
    n, c, h, w = x.shape
    if size >= h:
        f = size // h
        return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, f, w, f).reshape(n, c, size, size)
    return x[:, :, ::h // size, ::w // size]


class ABF(nn.Module):
    """ReviewKD's attention-based fusion (mdistiller's ABF): a 1x1 conv + BN to the middle width; then, but on the
    deepest feature, a fusion with the deeper ABF's output (resized to this feature's size) by two sigmoid attention
    maps; resized to the teacher's size; a 3x3 conv + BN to the teacher's channels. Returns (output, what the next
    shallower ABF fuses with)."""

    def __init__(self, in_channel, mid_channel, out_channel, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, 1, bias=False), models.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channel, out_channel, 3, padding=1, bias=False),
                                   models.BatchNorm2d(out_channel))
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channel * 2, 2, 1), nn.Sigmoid()) if fuse else None

    def forward(self, x, y, shape, out_shape):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = resize_nearest(y, shape)
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].reshape(n, 1, h, w) + y * z[:, 1].reshape(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = resize_nearest(x, out_shape)
        return self.conv2(x), x


class ReviewKDModules(nn.Module):
    """ReviewKD's ABFs (mdistiller's ReviewKD.abfs), trained with the student, deepest first. The forward runs them
    from the student's pooled feature up to its shallowest stage and returns hcl_loss of their outputs against the
    teacher's features (both lists shallow to deep, as reviewkd_pairs gives them)."""

    def __init__(self, in_channels, out_channels, shapes, out_shapes):
        super().__init__()
        mid = min(REVIEWKD_MAX_MID, in_channels[-1])
        last = len(in_channels) - 1
        self.abfs = nn.ModuleList([ABF(c, mid, out_channels[i], i < last) for i, c in enumerate(in_channels)][::-1])
        self.shapes, self.out_shapes = shapes[::-1], out_shapes[::-1]

    def forward(self, feats_s, feats_t):
        x = feats_s[::-1]
        out, residual = self.abfs[0](x[0], None, self.shapes[0], self.out_shapes[0])
        results = [out]
        for f, abf, shape, out_shape in zip(x[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:]):
            out, residual = abf(f, residual, shape, out_shape)
            results.insert(0, out)
        return hcl_loss(results, feats_t)


def reviewkd_setup(config, student, teacher, device):
    """ReviewKD's ABFs (mdistiller's ReviewKD.__init__) for the features reviewkd_pairs takes, their channels and sizes
    read from the models (mdistiller's REVIEWKD.IN_CHANNELS, OUT_CHANNELS, SHAPES, OUT_SHAPES for its pair). Sizes
    must be whole factors apart (resize_nearest), and each teacher size divisible by hcl_loss's 4, 2 and 1 where
    smaller. Init as mdistiller's: the 1x1 and 3x3 convs kaiming_uniform_(a=1), U(+-sqrt(3 / fan_in)), the attention
    convs torch's default, BN 1 and 0, from a stream of their own ([seed, 5])."""
    shapes_s, shapes_t = preact_shapes(config, student, teacher, "reviewkd", readers=("teacher",))
    feats_s = after_stem_of(config.model, shapes_s["feats"]) + [(*shapes_s["pooled_feat"], 1, 1)]
    feats_t = after_stem_of(teacher_model(config), shapes_t["preact_feats"]) + [
        (*shapes_t["pooled_feat"], 1, 1)]
    if len(feats_s) != len(feats_t):
        raise UserError(f"--method reviewkd pairs the student's {len(feats_s) - 1} stages after the stem with the "
                        f"teacher's {len(feats_t) - 1}: they must be as many")
    sizes_s, sizes_t = [s[1] for s in feats_s], [t[1] for t in feats_t]
    steps = list(zip(sizes_t[1:], sizes_s[:-1])) + list(zip(sizes_s, sizes_t))  # residual to shape; shape to out_shape
    for a, b in steps:
        if max(a, b) % min(a, b):
            raise UserError(f"--method reviewkd resizes {a} px features to {b} px: by whole factors only")
    for h in sizes_t:
        if any(h % size for size in (4, 2, 1) if size < h):
            raise UserError(f"--method reviewkd: a {h} px teacher feature does not pool to 4, 2 and 1 px by whole factors")
    reviewkd = ReviewKDModules([s[0] for s in feats_s], [t[0] for t in feats_t], sizes_s, sizes_t)
    state = seeded(models.state_shapes(reviewkd), [config.seed, 5], "uniform")
    for key in state:
        if key.endswith(("conv1.0.weight", "conv2.0.weight")):
            state[key] = state[key] * np.float32(np.sqrt(3.0))  # U(+-1/sqrt(fan_in)) -> kaiming_uniform_(a=1)
    models.load_state(reviewkd, state, f"init(reviewkd, seed={config.seed})")
    print(f"ReviewKD: {len(feats_s)} ABFs, student {[s[0] for s in feats_s]} -> teacher {[t[0] for t in feats_t]} "
          f"channels at {sizes_t} px")
    return {"reviewkd": devices.to_device(reviewkd, device)}


class Embed(nn.Module):
    """CRD's embedding (mdistiller's Embed): a linear map of the flattened feature, then L2-normalised (the norm
    floored at 1e-12: mdistiller's divides an all-zero row by 0)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = self.linear(x.reshape(x.shape[0], -1))
        return x / (x ** 2).sum(dim=1, keepdim=True).sqrt().clamp(min=1e-12)


class CRDModules(nn.Module):
    """CRD's modules (mdistiller's CRD.init_crd_modules): the student's and the teacher's embeddings, trained with the
    student, and the two memory banks of ContrastMemory, one row per training sample (memory_v1 holds the student's
    embeddings, memory_v2 the teacher's), with its normalisation constants z (-1 until the first batch sets them to
    the mean score x num_data) and `draws`, the batches whose negatives have been drawn (the sampling stream's
    position). All four are buffers: saved in the checkpoint, not trained. The forward draws the batch's negatives
    (common.contrast), scores each view's embedding against the other view's memory, updates both memories with the
    batch's embeddings (momentum, then L2-normalised) and returns the two NCE losses' sum (mdistiller's crd_loss)."""

    def __init__(self, dim_s, dim_t, labels, num_classes, config):
        super().__init__()
        self.embed_s, self.embed_t = Embed(dim_s, config.crd_dim), Embed(dim_t, config.crd_dim)
        self.register_buffer("memory_v1", torch.zeros(len(labels), config.crd_dim))
        self.register_buffer("memory_v2", torch.zeros(len(labels), config.crd_dim))
        self.register_buffer("z", torch.full((2,), -1.0))
        self.register_buffer("draws", torch.zeros(1))
        self.labels, self.negatives = labels, negatives_by_class(labels, num_classes)
        self.k, self.seed = config.crd_k or default_k(len(labels)), config.seed
        self.temperature, self.momentum = config.crd_temperature, config.crd_momentum

    def forward(self, f_s, f_t, index):
        draws = int(self.draws.item())
        rows = draw_contrast(index, self.labels[index], self.negatives, self.k, contrast_rng(self.seed, draws))
        v1, v2 = self.embed_s(f_s), self.embed_t(f_t)
        rows = torch.from_numpy(rows).to(v1.device)
        out_v2 = contrast_scores(self.memory_v1, v2, rows, self.temperature)
        out_v1 = contrast_scores(self.memory_v2, v1, rows, self.temperature)
        with torch.no_grad():
            z = self.z.tolist()
            z = [s if s > 0 else float(out.mean(dim=1).mean()) * len(self.labels) for s, out in zip(z, (out_v1, out_v2))]
            self.z.copy_(torch.tensor(z))
            z = self.z.tolist()  # float32, as a resumed run reads them
            self.draws.fill_(draws + 1)
            index = torch.from_numpy(index).to(v1.device)
            for memory, v in ((self.memory_v1, v1), (self.memory_v2, v2)):
                rows_new = memory[index] * self.momentum + v.detach() * (1 - self.momentum)
                memory[index] = rows_new / (rows_new ** 2).sum(dim=1, keepdim=True).sqrt()
        return contrast_loss(out_v1 / z[0], len(self.labels)) + contrast_loss(out_v2 / z[1], len(self.labels))


def crd_setup(config, student, teacher, device):
    """CRD's embeddings and memory banks (mdistiller's init_crd_modules) for the pooled features of the pair (its
    FEAT.STUDENT_DIM and TEACHER_DIM, read from the models), one memory row per image of the training split, whose
    labels it reads from the data (the negatives of each class). Initial values in numpy: the embeddings torch's
    default ([seed, 6]), the memories U(+-1 / sqrt(dim / 3)) as mdistiller's ([seed, 7]). One process only, and no
    R-Drop: the bank is indexed by sample and updated once a step."""
    if launch().world_size > 1:
        raise UserError("--method crd runs on one process: its memory bank has a row per training sample, updated by "
                        "the batch's own rows, and the launchers split the batch between ranks")
    if config.rdrop:
        raise UserError("--rdrop: CRD updates its memory bank with the student's embedding once a step; R-Drop's two "
                        "passes would update it twice")
    if config.crd_k is not None and config.crd_k < 1:
        raise UserError(f"--crd-k {config.crd_k}: CRD contrasts each sample with at least one negative")
    data = load_dataset(config.dataset, config.data_dir)
    train, _ = split_indices(len(data["train_y"]), config.train_size, config.val_size, SPLIT_SEED)
    labels = data["train_y"][train].astype(np.int64)
    shapes_s, shapes_t = features.probe_shapes(student), features.probe_shapes(teacher)
    crd = CRDModules(shapes_s["pooled_feat"][0], shapes_t["pooled_feat"][0], labels, DATASETS[config.dataset][
        "num_classes"], config)
    shapes = models.state_shapes(crd)
    state = seeded({k: v for k, v in shapes.items() if k.startswith("embed")}, [config.seed, 6], "uniform")
    rng, bound = np.random.default_rng([config.seed, 7]), 1 / np.sqrt(config.crd_dim / 3)
    for key in ("memory_v1", "memory_v2"):
        state[key] = rng.uniform(-bound, bound, shapes[key]).astype(np.float32)
    state["z"], state["draws"] = np.full(2, -1.0, np.float32), np.zeros(1, np.float32)
    models.load_state(crd, state, f"init(crd, seed={config.seed})")
    print(f"CRD: embeddings {shapes_s['pooled_feat'][0]} and {shapes_t['pooled_feat'][0]} -> {config.crd_dim}, "
          f"memory banks of {len(labels)} rows, {crd.k} negatives a sample")
    return {"crd": devices.to_device(crd, device)}


def deit_setup(config, student, teacher, device):
    """DeiT trains a distillation token and its head: the student must have them; soft or hard only."""
    if config.deit_type not in ("soft", "hard"):
        raise UserError(f"--deit-type {config.deit_type}: DeiT's distillation is soft or hard")
    if not hasattr(student, "HEADS"):
        raise UserError(f"--method deit trains a distillation token, and {config.model} has none: use --model deit2x96")
    return {}


class FitDense(nn.Module):
    """TinyBERT's fit_dense: one linear map from the student's width to the teacher's, applied to every hidden
    state (in one call, so that a data-parallel wrapper sees one forward a step)."""

    def __init__(self, width_s, width_t):
        super().__init__()
        self.fit_dense = nn.Linear(width_s, width_t)

    def forward(self, states):
        return [self.fit_dense(s) for s in states]


def tinybert_setup(config, student, teacher, device):
    """Check that the pair is two ViTs whose blocks divide and whose scores have one shape (heads, tokens); TinyBERT's
    linear map, seeded from a stream of its own ([seed, 3]) with the ViTs' init (BERT's: N(0, 0.02^2), bias 0)."""
    shapes_s, shapes_t = features.probe_shapes(student), features.probe_shapes(teacher)  # one forward each
    att_s, att_t = shapes_s.get("attention"), shapes_t.get("attention")
    if not att_s or not att_t:
        raise UserError(f"--method tinybert compares attention scores and hidden states: student {config.model} and "
                        f"teacher {config.teacher_model} must both be ViTs")
    if len(att_t) % len(att_s):
        raise UserError(f"--method tinybert: the teacher's {len(att_t)} blocks are not a multiple of the student's "
                        f"{len(att_s)}")
    if att_s[0] != att_t[0]:
        raise UserError(f"--method tinybert compares scores head by head: the student's [heads, L, L] {att_s[0]} "
                        f"differ from the teacher's {att_t[0]}")
    if config.dot:
        raise UserError("--dot: TinyBERT has no task (label) loss to keep apart")
    fit = FitDense(shapes_s["feats"][0][-1], shapes_t["feats"][0][-1])  # [L, width] of the embedding output
    models.load_state(fit, init_weights(models.state_shapes(fit), [config.seed, 3], "vit"), "init(fit_dense)")
    print(f"TinyBERT: {len(att_s)} student blocks against teacher blocks {len(att_t) // len(att_s)} apart; stage 1 "
          f"(attention, hidden states) for {config.tinybert_layer_epochs} epochs, then stage 2 (predictions)")
    return {"fit_dense": devices.to_device(fit, device)}


def tinybert_stage(epoch, config):
    """TinyBERT's two stages in one run: 0 for the first --tinybert-layer-epochs epochs, then 1 (tinybert_terms)."""
    return 0.0 if epoch < config.tinybert_layer_epochs else 1.0


def warmup_weight(epoch, config):
    """The distillation weight of an epoch, for every method but TinyBERT: mdistiller's linear warm-up (--warmup)."""
    return warmup_factor(epoch, config.warmup)


# ---------------------------------------------------------------- the method table
# terms: (out, out_teacher, labels, config, w, extra) -> {name: weighted term}, summed into the loss.
# teacher: needs a teacher. features: reads features, not only logits (the others run the plain forward).
# setup: (config, student, teacher, device) -> {key: module trained with the student}, after its checks.
# defaults: the method's own weights, the CE weight and any stage default it changes (common.config.resolve);
# None: per student model (common.config.PER_MODEL_DEFAULTS) or, for at_stages, every stage after the stem.
# flags: the method's own settings as command-line flags, {field: (type, help)} ([int]: one or more ints);
# common.config.add_method_args makes --field-name from each, so a new method's flags need no stage edit.
# title: one line saying what the method is (the --method help and train_student.py's list are made from it).
# weight: (epoch, config) -> the epoch's w (default warmup_weight; TinyBERT's: its stage).
Method = collections.namedtuple("Method", "title terms teacher features setup defaults flags weight",
                                defaults=(warmup_weight,))
METHODS = {
    "ce": Method("cross-entropy with the labels only, no teacher",
                 ce_terms, False, False, no_setup, dict(ce_weight=1.0), {}),
    # mdistiller's CIFAR weights: KD = 0.1 CE + 0.9 KD at T 4
    "kd": Method("Hinton KD: KL of the temperature-softened predictions (Hinton et al. 2015)",
                 kd_terms, True, False, no_setup, dict(ce_weight=0.1, kd_weight=0.9, temperature=4.0),
                 dict(kd_weight=(float, "weight of the KD term"), temperature=(float, "the temperature T"))),
    # DKD = 1.0 CE + alpha TCKD + beta NCKD at T 4; beta per student model (common.config.DKD_BETA)
    "dkd": Method("Decoupled KD: target-class and non-target-class KL, weighted apart (Zhao et al. 2022)",
                  dkd_terms, True, False, no_setup, dict(ce_weight=1.0, alpha=1.0, beta=None, temperature=4.0),
                  dict(alpha=(float, "weight of TCKD"),
                       beta=(float, f"weight of NCKD (default per student model: {DKD_BETA}, else {DKD_BETA_DEFAULT:g})"),
                       temperature=(float, "the temperature T"))),
    # mdistiller/engine/cfg.py: FitNet CE 1 + 100 x hint at the second stage, AT CE 1 + 1000 x attention (p 2) on
    # feats[1:]; neither warms its distillation weight up
    "fitnet": Method("FitNets' hint: MSE of a regressed student feature against the teacher's (Romero et al. 2015)",
                     fitnet_terms, True, True, fitnet_setup,
                     dict(ce_weight=1.0, fitnet_weight=100.0, hint_layer=None, warmup=0),
                     dict(fitnet_weight=(float, "weight of the hint loss"),
                          hint_layer=(int, "index of the student's and teacher's feature the hint compares (default: 2 "
                                           "as mdistiller, the second stage; 1 for cifar10simple/cifar10quick, whose "
                                           "feats have no stem)"))),
    "at": Method("attention transfer: the stages' spatial attention maps (Zagoruyko & Komodakis 2017)",
                 at_terms, True, True, at_setup, dict(ce_weight=1.0, at_weight=1000.0, at_p=2.0, at_stages=None, warmup=0),
                 dict(at_weight=(float, "weight of the attention loss"), at_p=(float, "the power p of |f|^p"),
                      at_stages=([int], "the features compared (default: all after the stem, as mdistiller's "
                                        "feats[1:]; all three for cifar10simple/cifar10quick)"))),
    # mdistiller/engine/cfg.py (CIFAR), CE 1 each, no warm-up: NST 50 x NST on feats[1:] (NST.LOSS.FEAT_WEIGHT);
    # PKT 30000 x PKT on the pooled feature (PKT.LOSS.FEAT_WEIGHT); RKD 1 x (25 x distance + 50 x angle) on the
    # pooled feature (RKD.LOSS.FEAT_WEIGHT, RKD.DISTANCE_WEIGHT, RKD.ANGLE_WEIGHT; RKD.PDIST: RKD_SQUARED, RKD_EPS);
    # SP 3000 x SP on feats[-1] (SP.LOSS.FEAT_WEIGHT); KDSVD 1 x KDSVD with k 1 on feats[1:] (KDSVD.LOSS.FEAT_WEIGHT,
    # KDSVD.K)
    "nst": Method("neuron selectivity transfer: MMD of the channels' activation maps (Huang & Wang 2017)",
                  nst_terms, True, True, nst_setup, dict(ce_weight=1.0, nst_weight=50.0, warmup=0),
                  dict(nst_weight=(float, "weight of the NST loss (the squared MMD of the channels' maps)"))),
    "pkt": Method("probabilistic knowledge transfer: KL of the batch's cosine similarities (Passalis & Tefas 2018)",
                  pkt_terms, True, True, batch_setup, dict(ce_weight=1.0, pkt_weight=30000.0, warmup=0),
                  dict(pkt_weight=(float, "weight of the PKT loss (KL of the batch's cosine similarities)"))),
    "rkd": Method("relational KD: distances and angles among the batch's samples (Park et al. 2019)",
                  rkd_terms, True, True, batch_setup,
                  dict(ce_weight=1.0, rkd_distance_weight=25.0, rkd_angle_weight=50.0, warmup=0),
                  dict(rkd_distance_weight=(float, "weight of RKD's distance loss"),
                       rkd_angle_weight=(float, "weight of RKD's angle loss"))),
    "sp": Method("similarity-preserving KD: the batch's normalised Gram matrices (Tung & Mori 2019)",
                 sp_terms, True, True, batch_setup, dict(ce_weight=1.0, sp_weight=3000.0, warmup=0),
                 dict(sp_weight=(float, "weight of the SP loss (the batch's normalised Gram matrices)"))),
    "kdsvd": Method("KD with SVD: RBF relations of consecutive stages' singular vectors (Lee et al. 2018)",
                    kdsvd_terms, True, True, kdsvd_setup, dict(ce_weight=1.0, kdsvd_weight=1.0, kdsvd_k=1, warmup=0),
                    dict(kdsvd_weight=(float, "weight of the KDSVD loss"),
                         kdsvd_k=(int, "the teacher's singular vectors compared per feature (the student's: k + 3)"))),
    # mdistiller/engine/cfg.py: VID CE 1 (VID.LOSS.CE_WEIGHT) + 1 x VID (VID.LOSS.FEAT_WEIGHT) on feats[1:], initial
    # variance 5 (VID.INIT_PRED_VAR) over a floor of 1e-5 (VID.EPS), no warm-up
    "vid": Method("variational information distillation: Gaussian likelihood of the teacher's features (Ahn et al. 2019)",
                  vid_terms, True, True, vid_setup,
                  dict(ce_weight=1.0, vid_weight=1.0, vid_init_pred_var=5.0, vid_eps=1e-5, warmup=0),
                  dict(vid_weight=(float, "weight of the VID loss (the negative log-likelihood)"),
                       vid_init_pred_var=(float, "the initial variance of the regressors' Gaussians"),
                       vid_eps=(float, "the floor added to each variance"))),
    # mdistiller/engine/cfg.py: OFD CE 1 + 0.001 x OFD (OFD.LOSS.FEAT_WEIGHT) on preact_feats[1:], 1x1 connectors, no
    # warm-up; ReviewKD CE 1 + 1 x hcl (REVIEWKD.REVIEWKD_WEIGHT), warmed up over 20 of 240 epochs as DKD: the stage's
    # --warmup here
    "ofd": Method("overhaul of feature distillation: partial L2 of pre-ReLU features beyond a margin (Heo et al. 2019)",
                  ofd_terms, True, True, ofd_setup, dict(ce_weight=1.0, ofd_weight=0.001, warmup=0),
                  dict(ofd_weight=(float, "weight of the OFD loss (the margin's partial L2)"))),
    "reviewkd": Method("knowledge review: fused student stages against the teacher's, hierarchical context loss "
                       "(Chen et al. 2021)",
                       reviewkd_terms, True, True, reviewkd_setup, dict(ce_weight=1.0, reviewkd_weight=1.0),
                       dict(reviewkd_weight=(float, "weight of ReviewKD's hierarchical context loss"))),
    # mdistiller/engine/cfg.py: CRD CE 1 + 0.8 x CRD (CRD.LOSS.FEAT_WEIGHT) on pooled_feat, embeddings of 128
    # (CRD.FEAT.DIM), NCE momentum 0.5 and temperature 0.07 (CRD.NCE.*), mode "exact" (CRD.MODE), no warm-up; K
    # (CRD.NCE.K, 16384 of CIFAR-100's 50,000 images) is that share of the training split (common.contrast.default_k)
    "crd": Method("contrastive representation distillation: NCE of embeddings against memory banks (Tian et al. 2020)",
                  crd_terms, True, True, crd_setup,
                  dict(ce_weight=1.0, crd_weight=0.8, crd_k=None, crd_dim=128, crd_temperature=0.07, crd_momentum=0.5,
                       warmup=0),
                  dict(crd_weight=(float, "weight of the CRD loss (the two views' NCE losses)"),
                       crd_k=(int, "negatives per sample (default: mdistiller's 16384 of 50,000 images as a share of "
                                   "the training split)"),
                       crd_dim=(int, "the embeddings' width"),
                       crd_temperature=(float, "the NCE temperature"),
                       crd_momentum=(float, "the memory banks' momentum"))),
    # the transformer track (docs/transformers.md). DeiT's main.py defaults: --distillation-alpha 0.5,
    # --distillation-tau 1.0; its students here have the distillation token (deit2x96). TinyBERT's task distillation
    # (task_distill.py): temperature 1, the stages' lengths are a setting of the run here.
    "deit": Method("DeiT: a distillation token whose head learns from the teacher (Touvron et al. 2021)",
                   deit_terms, True, True, deit_setup,
                   dict(model="deit2x96", deit_type="soft", deit_alpha=0.5, deit_tau=1.0, warmup=0),
                   dict(deit_type=(str, "soft (KL at --deit-tau, DeiT's reduction) or hard (CE against the teacher's "
                                        "argmax)"),
                        deit_alpha=(float, "weight of the distillation head's loss; the class head's label loss has "
                                           "1 - alpha"),
                        deit_tau=(float, "the soft loss's temperature"))),
    "tinybert": Method("TinyBERT: attention scores and hidden states, then soft predictions (Jiao et al. 2020)",
                       tinybert_terms, True, True, tinybert_setup,
                       dict(model="vit2x96", teacher_model="vit6x192", temperature=1.0, tinybert_layer_epochs=10,
                            warmup=0),
                       dict(temperature=(float, "the temperature T"),
                            tinybert_layer_epochs=(int, "epochs of stage 1 (attention and hidden states); stage 2 "
                                                        "(predictions) trains the rest")),
                       tinybert_stage),
}
