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
from common.config import DKD_BETA, DKD_BETA_DEFAULT, at_stages, run_at_stages  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.schedules import warmup_factor  # noqa: E402
from common.weights import init_weights  # noqa: E402
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
    order = sorted((k for k in shapes if not k.endswith(".log_scale")),
                   key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])  # the same in both frameworks
    state = init_weights({k: shapes[k] for k in order}, [seed, 2], "uniform")
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
