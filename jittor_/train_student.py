"""Stage 2/3: train a student with cross-entropy only (ce), Hinton KD (kd), Decoupled KD (dkd), FitNets'
feature hint (fitnet) or attention transfer (at); any of them with R-Drop (--rdrop) where the student has dropout.

    python jittor_/train_student.py --method ce
    python jittor_/train_student.py --method kd  --teacher ckpt/teacher_s0_jittor.ckpt
    python jittor_/train_student.py --method dkd --teacher ckpt/teacher_s0_jittor.ckpt --beta 8
    python jittor_/train_student.py --method fitnet --hint-layer 1   # hint at the second stage, as mdistiller's
    python jittor_/train_student.py --method at                      # attention transfer, every stage
    python jittor_/train_student.py --pair res32x4_res8x4 --teacher cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth

--pair NAME runs one of the DKD paper's CIFAR-100 pairs with mdistiller's settings (common.config.PAIRS);
flags given explicitly override it (e.g. --epochs 2 for a smoke run).

The teacher is frozen (eval mode, no gradients) and its logits (and features, for fitnet and at)
are computed online, once per step, on the very batch (same images, same augmentation) the student
sees. kd_loss, dkd_loss, fitnet_loss, at_loss and rdrop_loss are pure functions, importable without
side effects. FitNet's regressor (models.ConvReg) is trained with the student, saved in its
checkpoint and restored by --resume; test.py reads the student alone.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.checkpoint import describe_checkpoint  # noqa: E402
from common.config import DKD_BETA, DKD_BETA_DEFAULT, FEATURE_METHODS, MODELS, PAIRS, STUDENT_DEFAULTS, add_common_args, apply_pair, apply_preset, at_stages, default_name, default_teacher, dkd_beta, hint_layer  # noqa: E402
from common.datasets import DATASETS  # noqa: E402
from common.distributed import run_rank  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
from common.errors import die, UserError  # noqa: E402
from common.logs import check_finite, progress  # noqa: E402
from common.metrics import batch_accuracy, merge_batch, Meter  # noqa: E402
from common.schedules import warmup_factor  # noqa: E402
from common.weights import state_digest  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402
from jittor_ import models, parallel, test  # noqa: E402
from jittor_.train_teacher import check_rdrop, fit, load_init, mean_terms  # noqa: E402

FRAMEWORK = "jittor"


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


def loss_terms(method, out, out_teacher, labels, distill_weight, args, regressor=None):
    """The named, weighted loss terms of one pass; the training loss is their sum.

    out, out_teacher: (logits, features), the features (models.forward_features) for fitnet and at only.
    """
    (logits, features), (logits_teacher, features_teacher) = out, out_teacher or (None, None)
    ce = nn.cross_entropy_loss(logits, labels)
    if method == "ce":
        return {"ce": ce}
    if method == "fitnet":
        hint = regressor(features["feats"][args.hint_layer])
        feat = fitnet_loss(hint, features_teacher["feats"][args.hint_layer])
        return {"ce": args.fitnet_ce_weight * ce, "fitnet": distill_weight * args.fitnet_weight * feat}
    if method == "at":
        pick = lambda feats: [feats[i] for i in args.at_stages]
        at = at_loss(pick(features["feats"]), pick(features_teacher["feats"]), args.at_p)
        return {"ce": args.at_ce_weight * ce, "at": distill_weight * args.at_weight * at}
    if method == "kd":
        kd = kd_loss(logits, logits_teacher, args.temperature)
        return {"ce": args.kd_ce_weight * ce, "kd": distill_weight * args.kd_weight * kd}
    terms = dkd_loss_terms(logits, logits_teacher, labels, args.temperature)
    return {"ce": args.dkd_ce_weight * ce, "tckd": distill_weight * args.alpha * terms["tckd"],
            "nckd": distill_weight * args.beta * terms["nckd"]}


# ---------------------------------------------------------------- one step, one epoch
def forward(model, images, method):
    """(logits, features): the features only for the methods that read them, so that the others run the
    plain forward, without hooks."""
    if method in FEATURE_METHODS:
        return models.forward_features(model, images)
    return model(images), None


def train_step(student, teacher, optimizer, images, labels, distill_weight, args, regressor=None):
    """One SGD step of the student, returning (loss, logits, terms). The step align.py compares and
    bench.py times is this one. The teacher (frozen, or None for ce) sees this very batch, once.

    With --rdrop the student runs twice (two dropout masks): every term is the mean over the two passes,
    plus rdrop x the symmetric KL between them. regressor: FitNet's, trained with the student.
    """
    out_teacher = None
    if teacher is not None:  # first: after the student's forward it ran ~30% slower in torch (bench.py)
        with jt.no_grad():
            out_teacher = forward(teacher, images, args.method)
    passes = [forward(student, images, args.method) for _ in range(2 if args.rdrop else 1)]
    terms = mean_terms([loss_terms(args.method, out, out_teacher, labels, distill_weight, args, regressor)
                        for out in passes])
    if args.rdrop:
        terms["rdrop"] = args.rdrop * rdrop_loss(passes[0][0], passes[1][0])
    loss = sum(terms.values())
    optimizer.zero_grad()
    optimizer.backward(loss)
    optimizer.step()
    return loss, passes[0][0], terms


def train_one_epoch(student, teacher, loader, optimizer, epoch, args, device, extra=None):
    """One pass of distillation; the teacher sees exactly the student's batch. extra: {"regressor": ...} for fitnet."""
    student.train()
    regressor = (extra or {}).get("regressor")
    if regressor is not None:
        regressor.train()  # its BN normalises with the batch's statistics, as mdistiller's
    if teacher is not None:
        teacher.eval()  # frozen BN statistics and no dropout, every epoch (mdistiller forces this too)
    distill_weight = warmup_factor(epoch, args.warmup)
    meter = Meter()
    t_data = t_train = 0.0
    end = time.perf_counter()
    batches = progress(loader.epoch(epoch), len(loader), f"{FRAMEWORK} student-{args.method}")
    for step, (images, labels) in enumerate(batches):
        start = time.perf_counter()
        t_data += start - end
        loss, logits, terms = train_step(student, teacher, optimizer, images, labels, distill_weight, args, regressor)
        models.sync(device)
        values = {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()},
                  **batch_accuracy(logits.numpy(), labels.numpy())}
        values, n = merge_batch(values, len(labels), parallel.all_reduce_sum)  # the global batch's, N ranks or 1
        check_finite(values["loss"], f"student-{args.method}", epoch, step)
        meter.update(values, n)
        end = time.perf_counter()
        t_train += end - start
    metrics = {f"train/{k}": v for k, v in meter.means().items()}
    return {**metrics, "distill_weight": distill_weight, "time/data": t_data, "time/train": t_train}


def load_teacher(path, device, arch=None, dataset=None):
    """The frozen teacher: eval mode, no gradients, from a checkpoint of either framework or a .pth file.

    arch: the teacher's model (needed for a .pth, checked for a .ckpt); dataset: the student's, whose
    number of classes the teacher must have. Returns the teacher and a fingerprint of its weights
    (saved in the student's config: --resume refuses another teacher).
    """
    teacher, ckpt = test.load_model(path, device, arch, dataset, arch_flag="--teacher-model or --pair")
    teacher.eval()
    for p in teacher.parameters():
        p.stop_grad()
    print(f"[{FRAMEWORK}] teacher {ckpt['arch']} from {path} ({describe_checkpoint(ckpt)})")
    return teacher, state_digest(ckpt["model"])


def feature_setup(args, student, teacher, device):
    """fitnet and at: check --hint-layer / --at-stages against the two models' features (mdistiller's
    defaults where not given) and build FitNet's regressor; returns the modules trained with the student."""
    if args.method not in FEATURE_METHODS:
        return {}
    shapes_s, shapes_t = models.feature_shapes(student), models.feature_shapes(teacher)
    count = min(len(shapes_s), len(shapes_t))
    if args.method == "fitnet":
        if not 0 <= args.hint_layer < count:
            raise UserError(f"--hint-layer {args.hint_layer}: {args.model} and its teacher have features 0 to {count - 1}")
        regressor = models.build_regressor(shapes_s[args.hint_layer], shapes_t[args.hint_layer], args.seed)
        print(f"[{FRAMEWORK}] FitNet hint at feature {args.hint_layer}: student {shapes_s[args.hint_layer]} -> "
              f"teacher {shapes_t[args.hint_layer]} through {type(regressor.conv).__name__}")
        return {"regressor": models.to_device(regressor, device)}
    args.at_stages = at_stages(args.model, count) if args.at_stages is None else args.at_stages
    for i in args.at_stages:
        if not 0 <= i < count:
            raise UserError(f"--at-stages: {i} is not a feature of both {args.model} and its teacher (0 to {count - 1})")
        small, large = sorted([shapes_s[i][1], shapes_t[i][1]])
        if large % small:
            raise UserError(f"--at-stages: feature {i} is {shapes_s[i][1]} px in the student and {shapes_t[i][1]} px "
                            f"in the teacher; attention transfer pools by whole factors only")
    return {}


def parse_args(argv=None):
    d = STUDENT_DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["ce", "kd", "dkd", *FEATURE_METHODS], default=None,
                        help="ce only, Hinton KD, DKD, FitNets' hint or attention transfer (required unless --pair sets it)")
    parser.add_argument("--teacher", default=None,
                        help="teacher checkpoint for kd and dkd: a .ckpt of this repo or a .pth (mdistiller's); default: "
                             "this framework's checkpoint of train_teacher.py with the same --seed (and --dataset)")
    parser.add_argument("--teacher-model", choices=MODELS, default=None,
                        help="the teacher's architecture: needed for a .pth (which does not say), checked for a .ckpt")
    parser.add_argument("--pair", choices=list(PAIRS), default=None,
                        help="a CIFAR-100 pair of the DKD paper with mdistiller's settings (explicit flags override)")
    add_common_args(parser, d)
    parser.add_argument("--temperature", type=float, default=None, help=f"T for KD and DKD (default {d['temperature']})")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"epochs of linear warm-up of the distillation weight (default {d['warmup']})")
    parser.add_argument("--alpha", type=float, default=None, help=f"DKD weight of TCKD (default {d['alpha']})")
    parser.add_argument("--beta", type=float, default=None,
                        help=f"DKD weight of NCKD (default per student model: {DKD_BETA}, "
                             f"else {DKD_BETA_DEFAULT:g})")
    parser.add_argument("--kd-ce-weight", type=float, default=None, help=f"KD: weight of CE (default {d['kd_ce_weight']})")
    parser.add_argument("--kd-weight", type=float, default=None, help=f"KD: weight of the KD term (default {d['kd_weight']})")
    parser.add_argument("--dkd-ce-weight", type=float, default=None, help=f"DKD: weight of CE (default {d['dkd_ce_weight']})")
    parser.add_argument("--hint-layer", type=int, default=None,
                        help="FitNet: index of the student's and teacher's feature the hint compares (default: 2 as "
                             "mdistiller, the second stage; 1 for cifar10simple/cifar10quick, whose feats have no stem)")
    parser.add_argument("--fitnet-ce-weight", type=float, default=None,
                        help=f"FitNet: weight of CE (default {d['fitnet_ce_weight']:g})")
    parser.add_argument("--fitnet-weight", type=float, default=None,
                        help=f"FitNet: weight of the hint loss (default {d['fitnet_weight']:g})")
    parser.add_argument("--at-ce-weight", type=float, default=None, help=f"AT: weight of CE (default {d['at_ce_weight']:g})")
    parser.add_argument("--at-weight", type=float, default=None,
                        help=f"AT: weight of the attention loss (default {d['at_weight']:g})")
    parser.add_argument("--at-p", type=float, default=None, help=f"AT: the power p of |f|^p (default {d['at_p']:g})")
    parser.add_argument("--at-stages", type=int, nargs="+", default=None,
                        help="AT: the features compared (default: all after the stem, as mdistiller's feats[1:]; "
                             "all three for cifar10simple/cifar10quick)")
    args = parser.parse_args(argv)
    if args.pair:
        apply_pair(args)  # explicit flags > the pair > the preset > the defaults
    if args.method is None:
        parser.error("the following arguments are required: --method (or --pair)")
    if args.method in FEATURE_METHODS and args.warmup is None:
        args.warmup = 0  # mdistiller's FitNet and AT have no warm-up of the distillation weight
    apply_preset(args, "student", d)
    args.beta = dkd_beta(args.model) if args.beta is None else args.beta
    args.hint_layer = hint_layer(args.model) if args.hint_layer is None else args.hint_layer
    if args.method != "ce" and not args.teacher and args.pair:
        parser.error(f"--pair needs --teacher CKPT: mdistiller's cifar_teachers/{args.teacher_model}_vanilla/"
                     f"ckpt_epoch_240.pth or a checkpoint of train_teacher.py --dataset cifar100 --model {args.teacher_model}")
    if args.method != "ce" and not args.teacher:
        try:
            args.teacher = default_teacher(args, FRAMEWORK)
        except UserError as e:
            die(str(e))
    args.name = args.name or default_name(args, f"student_{args.method}")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = models.select_device(args.device)
    try:
        parallel.setup(device)
        teacher = None
        if args.method != "ce":
            teacher, args.teacher_digest = load_teacher(args.teacher, device, args.teacher_model, args.dataset)
        student = models.to_device(models.build_model(args.model, args.seed, DATASETS[args.dataset]["num_classes"]),
                                   device)
        if args.init and not args.resume:
            load_init(student, args.init, args.model, args.dataset)
        if args.dropout is not None:
            models.set_dropout(student, args.dropout)
        check_rdrop(student, args)
        extra = feature_setup(args, student, teacher, device)
        train_epoch = lambda model, loader, optimizer, epoch, extra: train_one_epoch(
            model, teacher, loader, optimizer, epoch, args, device, extra)
        summary = fit(args, f"student-{args.method}", student, train_epoch, device, extra)
        parallel.finish()  # data-parallel: all ranks done, then the process group goes
        return summary
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    run_rank(main)
