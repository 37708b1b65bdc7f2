"""Settings shared by both frameworks: defaults, presets, the CIFAR-100 pairs, the command line, and
resolve(), the one place that turns a command line into a run's config record.

Defaults reproduce the original experiment (CIFAR-10, batch 128, teacher CIFAR10Quick, student
CIFAR10Simple). Precedence, applied once in resolve(): a flag given explicitly > the pair (--pair)
> the preset (--preset) > the model's training settings (MODEL_TRAINING: the ViTs') > the own pair's weights >
the method's default (its entry in METHODS) > the stage's default.
"""
import argparse
import os

from common.checkpoint import ckpt_path
from common.datasets import DATASETS
from common.errors import CheckpointError, UserError
from common.paths import DATA_DIR, ROOT

FRAMEWORKS = ("torch", "jittor")  # the two mirrored folders: torch_/ and jittor_/

# The method table's names (METHODS in <framework>_/distillers.py, the same keys in both), for the framework-free
# scripts (run_all.py, report.py) that cannot import a framework; tests/test_distillers.py checks it against both.
METHOD_NAMES = ("ce", "kd", "dkd", "fitnet", "at", "nst", "pkt", "rkd", "sp", "kdsvd", "vid", "ofd", "reviewkd", "crd",
                "deit", "tinybert")
DEFAULT_METHODS = ("ce", "kd", "dkd", "fitnet", "at", "rkd", "vid")  # run_all.py's students unless --methods says otherwise

# Stage defaults: the settings every run of a stage has, whatever its method. A method's own weights
# (and the CE weight) are its defaults in the method table (METHODS in <framework>_/distillers.py).
TEACHER_DEFAULTS = dict(model="cifar10quick", epochs=30, lr=0.01, milestones=[15, 25],
                        batch_size=128, train_size=25000, val_size=5000,
                        momentum=0.9, weight_decay=5e-4, seed=0, dataset="cifar10", val_on_test=False,
                        rdrop=0.0, dropout=None,  # R-Drop off; the model's own dropout (CIFAR10Quick: 0.5)
                        sync_bn=True, dot=0.0,  # dot: DOT, a student's trainer; a teacher has no distillation term
                        optimizer="sgd", schedule="step", lr_warmup=0)  # the CNNs' SGD and step LR (ViTs: VIT_TRAINING)
STUDENT_DEFAULTS = dict(model="cifar10simple", epochs=40, lr=0.01, milestones=[15, 30],
                        batch_size=128, train_size=5000, val_size=1000,
                        momentum=0.9, weight_decay=5e-4, seed=0, dataset="cifar10", val_on_test=False,
                        warmup=10,  # epochs of linear warm-up of the distillation weight (DKD's 20 over 240)
                        rdrop=0.0, dropout=None, sync_bn=True, teacher_model=None,
                        mdistiller_weights=False,  # True: mdistiller's weights on the own pair too (OWN_PAIR_WEIGHTS)
                        dot=0.0,  # DOT's delta (0: plain SGD; mdistiller's: MDISTILLER_DOT_DELTA)
                        optimizer="sgd", schedule="step", lr_warmup=0)
STAGE_DEFAULTS = {"teacher": TEACHER_DEFAULTS, "student": STUDENT_DEFAULTS}
MDISTILLER_DOT_DELTA = 0.075  # mdistiller's SOLVER.DOT.DELTA; on the own pair KD diverges with it (full preset)
OWN_PAIR_DOT_DELTA = 0.05  # `python weights.py --dot-grid`: the own pair's, run_all.py --dot-methods trains with it
DOT_METHODS = tuple(m for m in METHOD_NAMES if m != "ce")  # DOT needs a distillation term: run_all.py --dot-methods
# How the ViTs train (DeiT's recipe: main.py's defaults): AdamW, weight decay 0.05 but on biases, LayerNorm, tokens
# and position embedding (common.weights.no_weight_decay), a linear lr warm-up then cosine decay (common.schedules).
# A level of resolve() below the preset: a model's own training settings. lr: DeiT's 5e-4 is for batch 512 (its
# rule scales it by batch / 512); a ViT this small, trained this briefly from scratch, keeps 5e-4 at batch 128.
VIT_MODELS = ("vit6x192", "vit2x96", "deit2x96")
VIT_TRAINING = dict(optimizer="adamw", schedule="cosine", lr=5e-4, weight_decay=0.05, lr_warmup=5)
MODEL_TRAINING = {name: VIT_TRAINING for name in VIT_MODELS}
ADAMW = dict(betas=(0.9, 0.999), eps=1e-8)  # given in both frameworks (Jittor's AdamW defaults weight decay to 0)
# Fields of every record that say where and how a run happens, not what it computes: --resume may change them.
RUN_FIELDS = dict(name=None, preset=None, pair=None, init=None, resume=False, data_dir=DATA_DIR, device="auto",
                  teacher=None)
FREE_ON_RESUME = ("name", "preset", "pair", "init", "resume", "data_dir", "device", "teacher", "epochs")
# DKD's NCKD weight. mdistiller's CIFAR setting is 8, for ResNet students with BatchNorm. The
# original BN-free, activation-free CIFAR10Simple student diverges with large betas at lr 0.01 as
# the distillation weight warms up (measured on CIFAR-10, torch, seed 0): with an 8-epoch teacher
# beta 8 -> NaN in epoch 6 and beta 4 -> NaN in epoch 10 while beta 2 trained; with the full
# 30-epoch teacher (78.4% top-1) beta 2 -> NaN in epoch 13 too, while beta 1 trains stably (test
# top-1 65.6%, above KD's 64.7%). So 1, the middle of the original experiment's sweep (0 ... 2).
DKD_BETA = {"cifar10simple": 1.0, "cifar10quick": 2.0, "resnet8x4": 8.0, "resnet32x4": 8.0}
DKD_BETA_DEFAULT = 8.0  # any other student: mdistiller's default (mdistiller/engine/cfg.py, CFG.DKD.BETA)


def dkd_beta(model):
    """DKD's beta for a student model when --beta is not given."""
    return DKD_BETA.get(model, DKD_BETA_DEFAULT)


# Indices into a model's feats (features.forward_features). mdistiller's zoo models have the stem as feats[0], then
# one entry per stage: FitNet's hint is feats[2] (the second stage) and AT takes feats[1:]. CIFAR10Quick and
# CIFAR10Simple have three stages and no stem entry, so the same choices are index 1 and all of 0, 1, 2.
NO_STEM = ("cifar10quick", "cifar10simple")


def hint_layer(model):
    """FitNet's hint layer for a student model when --hint-layer is not given."""
    return 1 if model in NO_STEM else 2


def at_stages(model, count):
    """AT's stages when --at-stages is not given, for a student whose feats have count entries."""
    return list(range(0 if model in NO_STEM else 1, count))


def run_at_stages(config, count):
    """The stages a run's AT compares: --at-stages, else at_stages (it needs the feature count, known once the
    models are built, so resolve() leaves the field None)."""
    return config.at_stages or at_stages(config.model, count)


PRESETS = {
    # make run: about 4 minutes on 2 CPU cores for both frameworks. A teacher on 8,000 images (~46%
    # top-1) and students on only 250 labelled images, trained longer: with so few labels the teacher's
    # soft targets carry what the labels cannot, so KD and DKD beat the CE student (seeds 0, 1, 2 in both
    # frameworks: KD +1.8 to +4.9 points, DKD +3.5 to +5.5; README, "What make run prints").
    "quick": dict(teacher=dict(epochs=2, milestones=[1], train_size=8000, val_size=500),
                  student=dict(epochs=30, milestones=[24], warmup=3, train_size=250, val_size=500, batch_size=32)),
    "full": dict(teacher={}, student={}),
    # The transformer track (docs/transformers.md): the ViT teacher, ViT students (DeiT's with its distillation token),
    # the ViT teacher by default (--teacher-model cifar10quick: the CNN one). Sized from images/s measured on 2 CPU
    # cores: vit-quick about 2 minutes per framework; vit-full, 3 seeds of everything, about 10 hours with both
    # frameworks at once on one thread each (about 3 hours per seed and framework).
    "vit-quick": dict(teacher=dict(model="vit6x192", epochs=2, train_size=1500, val_size=500, lr_warmup=0),
                      student=dict(model="vit2x96", teacher_model="vit6x192", epochs=3, train_size=800, val_size=500,
                                   lr_warmup=0),
                      methods=dict(deit=dict(model="deit2x96"))),
    "vit-full": dict(teacher=dict(model="vit6x192", epochs=10, train_size=25000, val_size=5000, lr_warmup=2),
                     student=dict(model="vit2x96", teacher_model="vit6x192", epochs=20, train_size=10000, val_size=1000,
                                  lr_warmup=2),
                     methods=dict(deit=dict(model="deit2x96"))),
}
PRESET_SEEDS = {"quick": 1, "full": 3, "vit-quick": 1, "vit-full": 3}  # run_all.py's default seeds (mean ± std)
# The transformer track's students (run_all.py --preset vit-quick / vit-full): run name -> (method, flags, teacher),
# teacher "vit": the track's ViT teacher, "cnn": the CNN teacher of the tag CNN_TEACHER_FROM names (make run's for
# vit-quick, the full run's for vit-full). R-Drop's ViT code sums its KL over the batch with alpha 0.3: --rdrop 0.3 x
# the batch of 128 here, which averages (docs/transformers.md).
VIT_STUDENTS = {"student_ce": ("ce", [], None), "student_rdrop": ("ce", ["--rdrop", "38.4"], None),
                "student_deit_hard_vit": ("deit", ["--deit-type", "hard"], "vit"),
                "student_deit_soft_vit": ("deit", ["--deit-type", "soft"], "vit"),
                "student_tinybert": ("tinybert", [], "vit"),
                "student_deit_hard_cnn": ("deit", ["--deit-type", "hard"], "cnn"),  # last: their teacher is another
                "student_deit_soft_cnn": ("deit", ["--deit-type", "soft"], "cnn")}  # run's (run_all.py checks it)
CNN_TEACHER_FROM = {"vit-quick": "quick", "vit-full": "full"}
EVAL_BATCH_SIZE = 500
SPLIT_SEED = 0  # the train/val split is fixed; --seed changes init, shuffling and augmentation only
# the original experiment's four, then mdistiller's CIFAR model zoo (its cifar_model_dict names)
MODELS = ["cifar10quick", "cifar10simple", "resnet32x4", "resnet8x4",
          "resnet20", "resnet32", "resnet56", "resnet110", "wrn_16_2", "wrn_40_1", "wrn_40_2",
          "vgg8", "vgg13", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50", *VIT_MODELS]

# The DKD paper's 11 CIFAR-100 teacher/student pairs, named and set as mdistiller's
# configs/cifar100/dkd/<name>.yaml (on top of mdistiller/engine/cfg.py's defaults): 240 epochs,
# batch 64, SGD lr 0.05 (0.01 for ShuffleNet and MobileNet students), momentum 0.9, weight decay
# 5e-4, lr x0.1 from epochs 150, 180 and 210 (0-based here; mdistiller counts from 1 and decays when
# epoch > 150: the same epochs), DKD alpha 1, T 4, CE weight 1, distillation weight warmed up over
# 20 epochs, beta 8 unless the config sets it. Like mdistiller, a pair trains on all 50,000
# training images and validates on the 10,000 test images (val_on_test), so its best val top-1
# is mdistiller's best_acc, the number the paper reports. train_student.py --pair NAME applies one;
# any flag given explicitly wins.
DKD_CIFAR100 = dict(dataset="cifar100", method="dkd", epochs=240, batch_size=64, lr=0.05,
                    milestones=[150, 180, 210], momentum=0.9, weight_decay=5e-4,
                    alpha=1.0, beta=8.0, temperature=4.0, ce_weight=1.0, warmup=20,
                    train_size=50000, val_size=0, val_on_test=True)
PAIRS = {
    "res56_res20": dict(DKD_CIFAR100, teacher_model="resnet56", model="resnet20", beta=2.0),
    "res110_res32": dict(DKD_CIFAR100, teacher_model="resnet110", model="resnet32", beta=2.0),
    "res32x4_res8x4": dict(DKD_CIFAR100, teacher_model="resnet32x4", model="resnet8x4"),
    "wrn40_2_wrn_16_2": dict(DKD_CIFAR100, teacher_model="wrn_40_2", model="wrn_16_2", beta=6.0),
    "wrn40_2_wrn_40_1": dict(DKD_CIFAR100, teacher_model="wrn_40_2", model="wrn_40_1", beta=6.0),
    "vgg13_vgg8": dict(DKD_CIFAR100, teacher_model="vgg13", model="vgg8", beta=6.0),
    "res32x4_shuv1": dict(DKD_CIFAR100, teacher_model="resnet32x4", model="ShuffleV1", lr=0.01),
    "wrn40_2_shuv1": dict(DKD_CIFAR100, teacher_model="wrn_40_2", model="ShuffleV1", lr=0.01),
    "vgg13_mv2": dict(DKD_CIFAR100, teacher_model="vgg13", model="MobileNetV2", lr=0.01, beta=6.0),
    "res50_mv2": dict(DKD_CIFAR100, teacher_model="ResNet50", model="MobileNetV2", lr=0.01),
    "res32x4_shuv2": dict(DKD_CIFAR100, teacher_model="resnet32x4", model="ShuffleV2", lr=0.01),
}

# The repo's own pair, and its distillation weights: mdistiller's scaled by the rule of weights.py (each method's
# step-1 gradient push against CE capped at KD's, then a 3-point grid on the validation split; docs/distillers.md).
# A level of resolve() between the preset and the method's defaults, for the own pair only
# (a student cifar10simple on CIFAR-10 whose teacher is cifar10quick, the default); --mdistiller-weights skips it.
# `python weights.py --grid` prints it; KD, DKD, KDSVD, VID, ReviewKD and CRD keep mdistiller's.
OWN_PAIR = dict(model="cifar10simple", teacher_model="cifar10quick", dataset="cifar10")
OWN_PAIR_WEIGHTS = {"fitnet": dict(fitnet_weight=8.5), "at": dict(at_weight=110.0), "nst": dict(nst_weight=12.0),
                    "pkt": dict(pkt_weight=840.0), "rkd": dict(rkd_distance_weight=2.9, rkd_angle_weight=5.9),
                    "sp": dict(sp_weight=160.0), "ofd": dict(ofd_weight=0.0005)}


def own_pair_methods(methods):
    """The methods with a teacher that train the own pair by default (not DeiT's or TinyBERT's ViTs)."""
    return [name for name, m in methods.items() if m.teacher and "model" not in m.defaults]


def weight_fields(methods, method):
    """The distillation weights of a method: its *_weight fields but the CE weight, and DKD's alpha and beta."""
    return [key for key in methods[method].defaults
            if (key.endswith("_weight") and key != "ce_weight") or (method == "dkd" and key in ("alpha", "beta"))]


def default_name(args, stage):
    """Run name when --name is not given: the original names for the original models on CIFAR-10; with the dataset,
    pair or model otherwise (a ViT teacher must not overwrite the CNN teacher's checkpoint)."""
    if getattr(args, "pair", None):
        return f"{args.dataset}/{args.pair}_s{args.seed}"
    if args.dataset == "cifar10" and args.model in ("cifar10quick", "cifar10simple"):
        return f"{stage}_s{args.seed}"
    if args.dataset == "cifar10":
        return f"{stage}_{args.model}_s{args.seed}"
    return f"{args.dataset}/{stage}_{args.model}_s{args.seed}"


def default_teacher(args, framework):
    """--teacher when it is not given: this framework's checkpoint of the teacher run that
    train_teacher.py makes for the student's dataset and seed (--teacher-model: its model).
    A one-line error naming the command that makes it when there is none."""
    teacher = argparse.Namespace(dataset=args.dataset, seed=args.seed, pair=None,
                                 model=args.teacher_model or TEACHER_DEFAULTS["model"])
    path = ckpt_path(default_name(teacher, "teacher"), framework)
    if not os.path.isfile(path):
        flags = "".join(f" --{key} {getattr(teacher, key)}" for key in ("dataset", "model", "seed")
                        if getattr(teacher, key) != TEACHER_DEFAULTS[key])
        raise UserError(f"--method {args.method} needs a teacher and {os.path.relpath(path, ROOT)} does not exist: "
                        f"train it with `python {framework}_/train_teacher.py{flags}`, or give --teacher CKPT")
    return path


def resolve(stage, flags, methods, framework=None):
    """The run's config record from the flags given explicitly ({flag: value}, argparse's dest names).

    stage: "teacher" (method ce, no teacher) or "student"; methods: the method table (METHODS of
    <framework>_/distillers.py), whose defaults hold each method's own weights. Every precedence rule
    lives here (explicit > pair > preset > the model's training (a ViT's AdamW) > the own pair's weights > method >
    stage; then per-model defaults:
    DKD's beta, FitNet's hint layer), and nothing is written into the record after it: stages, align.py, bench.py and the
    tests all build their record with this, and the checkpoint stores it (--resume compares it).
    framework: fills the default --teacher path (this framework's teacher run); None leaves it None.
    """
    flags = {k: v for k, v in flags.items() if v is not None}
    if flags.get("pair") and flags["pair"] not in PAIRS:
        raise UserError(f"unknown pair {flags['pair']!r}; the pairs are: {', '.join(PAIRS)}")
    pair = PAIRS[flags["pair"]] if flags.get("pair") else {}
    method = flags.get("method", pair.get("method", "ce" if stage == "teacher" else None))
    if method is None:
        raise UserError("the following arguments are required: --method (or --pair)")
    if method not in methods:
        raise UserError(f"unknown method {method!r}; the methods are: {', '.join(methods)}")
    if stage == "teacher" and method != "ce":
        raise UserError(f"a teacher trains with cross-entropy only (method ce), not {method!r}")
    if pair and method != pair.get("method"):  # a pair's weights are its method's (DKD's): not another method's
        pair = {k: v for k, v in pair.items()
                if k in ("model", "teacher_model") or not any(k in m.defaults for m in methods.values())}
    own = dict(STAGE_DEFAULTS[stage], **methods[method].defaults)
    check_method_flags(flags, method, methods, own)
    preset = PRESETS[flags["preset"]] if flags.get("preset") else {}
    preset = {**preset.get(stage, {}), **preset.get("methods", {}).get(method, {})}  # a method's own: DeiT's model
    given = (flags, pair, preset, own)  # the levels that pick the models (own: the method's, then the stage's)
    model_training = MODEL_TRAINING.get(first_set("model", given), {})
    own_pair = {}
    if stage == "student" and not first_set("mdistiller_weights", given) and all(
            (first_set(key, given) or OWN_PAIR[key]) == value for key, value in OWN_PAIR.items()):
        own_pair = OWN_PAIR_WEIGHTS.get(method, {})
    levels = (flags, pair, preset, model_training, own_pair, methods[method].defaults, STAGE_DEFAULTS[stage], RUN_FIELDS)
    record = {"stage": stage, "method": method, **{key: first_set(key, levels) for key in [*own, *RUN_FIELDS]}}
    for key, per_model in PER_MODEL_DEFAULTS.items():
        if key in own and record[key] is None:
            record[key] = per_model(record["model"])
    if record["dot"] and not methods[method].teacher:
        raise UserError(f"--dot {record['dot']:g}: DOT splits the distillation gradient from the CE one, and --method "
                        f"{method} has no distillation term")
    if record["dot"] and record["optimizer"] != "sgd":
        raise UserError(f"--dot {record['dot']:g}: DOT is SGD with two momentum buffers, not --optimizer "
                        f"{record['optimizer']}")
    if record["dot"] and not 0 <= record["momentum"] - record["dot"] < record["momentum"] + record["dot"] < 1:
        raise UserError(f"--dot {record['dot']:g}: the momenta --momentum -/+ DELTA must lie in [0, 1) "
                        f"(--momentum {record['momentum']:g})")
    config = argparse.Namespace(**{k: list(v) if isinstance(v, tuple) else v for k, v in record.items()})
    config.name = config.name or default_name(config, "teacher" if stage == "teacher" else f"student_{method}")
    if method != "ce" and config.teacher is None and config.pair and framework is not None:
        raise UserError(f"--pair needs --teacher CKPT: mdistiller's cifar_teachers/{config.teacher_model}_vanilla/"
                        f"ckpt_epoch_240.pth or a checkpoint of train_teacher.py --dataset {config.dataset} "
                        f"--model {config.teacher_model}")
    if method != "ce" and config.teacher is None and framework is not None:
        config.teacher = default_teacher(config, framework)
    return config


def first_set(key, levels):
    """The value of the first level ({field: value}) that sets key (not None), else None."""
    return next((level[key] for level in levels if level.get(key) is not None), None)


PER_MODEL_DEFAULTS = {"beta": dkd_beta, "hint_layer": hint_layer}  # when no level sets them: by the student model


def check_method_flags(flags, method, methods, own):
    """A weight of another method given explicitly (--at-p with --method kd) is a one-line error, not ignored."""
    for key in flags:
        if key in own or key in RUN_FIELDS or key == "method":
            continue
        owners = [name for name, m in methods.items() if key in m.defaults]
        if owners:
            raise UserError(f"{flag_name(key)} is a setting of --method {' / '.join(owners)}, "
                            f"not of --method {method}")


def flag_name(key):
    return "--" + key.replace("_", "-")


def flag_text(key, value):
    """A field as the flag that sets it: "--lr 0.01", "--sync-bn" / "--no-sync-bn" for a yes/no setting."""
    flag = flag_name(key)
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value!r}"


def build_config(stage, methods, **flags):
    """resolve() for code that builds a run without a command line (align.py, bench.py, the tests)."""
    return resolve(stage, flags, methods)


def check_resume(ckpt, config, path):
    """--resume: one clear error when the run's config differs from the checkpoint's in any field that can
    change the maths: every field but FREE_ON_RESUME, so a new flag is checked from the day it exists."""
    saved, now = ckpt.get("config") or {}, vars(config)
    for key in sorted((set(saved) | set(now)) - set(FREE_ON_RESUME)):
        if key not in now:
            raise CheckpointError(f"--resume: {path} was trained with a setting this version does not have "
                                  f"({key} = {saved[key]!r}); start afresh without --resume")
        if key not in saved or saved[key] != now[key]:
            had = flag_text(key, saved[key]) if key in saved else f"a version before {flag_name(key)} existed"
            raise CheckpointError(f"--resume: {path} was trained with {had}, this run has {flag_text(key, now[key])}; "
                                  f"give the checkpoint's setting (and --preset), or start afresh without --resume")
    if ckpt["epoch"] + 1 > config.epochs:
        raise CheckpointError(f"--resume: {path} has trained {ckpt['epoch'] + 1} epochs already, more than "
                              f"--epochs {config.epochs}")


DEFAULT_RUNS = ("teacher", "student_ce", "student_kd", "student_dkd")  # what the stage files make with no flags


def default_checkpoints(framework):
    """test.py without --ckpt: the checkpoints of the default runs (seed 0, CIFAR-10) that exist, teacher
    first: this framework's, or where it has none the other framework's (checkpoints are shared);
    a one-line error saying what to run when there is none at all."""
    def runs(stage):
        model = STAGE_DEFAULTS["teacher" if stage == "teacher" else "student"]["model"]
        return argparse.Namespace(dataset=TEACHER_DEFAULTS["dataset"], seed=TEACHER_DEFAULTS["seed"], pair=None,
                                  model=model)

    for fw in sorted(FRAMEWORKS, key=lambda fw: fw != framework):
        paths = [ckpt_path(default_name(runs(stage), stage), fw) for stage in DEFAULT_RUNS]
        if any(os.path.isfile(p) for p in paths):
            return [p for p in paths if os.path.isfile(p)]
    raise UserError(f"no --ckpt given and no default run has a checkpoint yet "
                    f"({os.path.relpath(ckpt_path(default_name(runs('teacher'), 'teacher'), framework), ROOT)}, ...): "
                    f"train one with `python {framework}_/train_teacher.py`, or give --ckpt FILE")


def add_common_args(parser, defaults):
    """Flags every training stage shares (same names in both frameworks). Their defaults are None, so that
    resolve() can tell a flag given explicitly from one left out (and apply pair, preset, method, stage)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named set of settings (quick: about a minute per stage on CPU)")
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help=f"dataset; sets the model's number of classes (default {defaults['dataset']})")
    parser.add_argument("--model", choices=MODELS, default=None,
                        help=f"architecture (default {defaults['model']})")
    parser.add_argument("--epochs", type=int, default=None, help=f"epochs (default {defaults['epochs']})")
    parser.add_argument("--lr", type=float, default=None, help=f"initial learning rate (default {defaults['lr']})")
    parser.add_argument("--milestones", type=int, nargs="*", default=None,
                        help=f"epochs (0-based) at which lr is multiplied by 0.1 (default {defaults['milestones']})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"training batch size (default {defaults['batch_size']})")
    parser.add_argument("--train-size", type=int, default=None,
                        help=f"training images taken from the 50,000 (default {defaults['train_size']})")
    parser.add_argument("--val-size", type=int, default=None,
                        help=f"validation images held out from the 50,000 (default {defaults['val_size']})")
    parser.add_argument("--val-on-test", action=argparse.BooleanOptionalAction, default=None,
                        help="validate on the test set, as mdistiller (then --val-size images are just left out; "
                             "default: no, a held-out part of the training images)")
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                        help=f"sgd (default) or adamw (DeiT's: betas {ADAMW['betas']}, eps {ADAMW['eps']:g}, no weight "
                             f"decay on biases, norms and tokens; the default for {', '.join(VIT_MODELS)})")
    parser.add_argument("--schedule", choices=["step", "cosine"], default=None,
                        help="lr schedule: step (x0.1 at --milestones, default) or cosine (DeiT's: --lr-warmup epochs "
                             "of linear warm-up, then cosine decay over --epochs; the default for the ViTs)")
    parser.add_argument("--lr-warmup", type=int, default=None,
                        help=f"--schedule cosine: epochs of linear lr warm-up (ViTs: {VIT_TRAINING['lr_warmup']})")
    parser.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"weight decay (default 5e-4; ViTs with AdamW {VIT_TRAINING['weight_decay']:g})")
    parser.add_argument("--seed", type=int, default=None, help="seed for split, init, shuffling and augmentation (default 0)")
    parser.add_argument("--init", default=None, help="checkpoint to start the model from (weights only)")
    parser.add_argument("--resume", action="store_true", help="continue from this run's last checkpoint")
    parser.add_argument("--name", default=None, help="run name: log/<name>/<framework>, ckpt/<name>_<framework>.ckpt")
    parser.add_argument("--rdrop", type=float, default=None, metavar="ALPHA",
                        help="R-Drop: two passes of each batch with different dropout masks, the mean of their losses "
                             "+ ALPHA x the symmetric KL of their predictions (R-Drop: 5 with --dropout 0.3; default 0: "
                             "off). Needs a model with dropout")
    parser.add_argument("--dropout", type=float, default=None, metavar="P",
                        help="dropout probability of the model's dropout layers (cifar10quick: 0.5, the ViTs: 0.1 unless given)")
    parser.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                        help="data-parallel runs (torchrun / mpirun): BatchNorm uses the mean and variance of the whole "
                             "global batch, as one process does (default); --no-sync-bn: of each process's rows")
    add_data_dir(parser)
    add_device(parser)
    return parser


def method_list(methods, indent=4):
    """The method table as text, one line per method, its name and title (train_student.py's docstring)."""
    width = max(map(len, methods))
    return "\n".join(f"{' ' * indent}{name:<{width}}  {m.title}" for name, m in methods.items())


def method_help(methods):
    """--method's help, made from the method table: every method's name and title."""
    return "the distillation method (required unless --pair sets it): " + "; ".join(
        f"{name}, {m.title}" for name, m in methods.items())


def per_method(methods, key):
    """'kd 4, dkd 4': each method's own default of a setting, for a flag's help."""
    values = {name: m.defaults[key] for name, m in methods.items() if m.defaults.get(key) is not None}
    return ", ".join(f"{name} {value:g}" for name, value in values.items())


def add_method_args(parser, methods):
    """The distillation flags, made from the method table: --warmup and --ce-weight (every method), then each
    method's own settings (add_method_settings). Defaults are None here too; resolve() takes each method's own
    from the table."""
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"epochs of linear warm-up of the distillation weight (default "
                             f"{STUDENT_DEFAULTS['warmup']}; per method: {per_method(methods, 'warmup')})")
    parser.add_argument("--ce-weight", type=float, default=None,
                        help=f"weight of the cross-entropy term (default per method: {per_method(methods, 'ce_weight')})")
    parser.add_argument("--mdistiller-weights", action=argparse.BooleanOptionalAction, default=None,
                        help="on cifar10quick -> cifar10simple too, mdistiller's distillation weights instead of the "
                             "repo's own (scaled by the rule of weights.py: docs/distillers.md)")
    parser.add_argument("--dot", type=float, default=None, metavar="DELTA",
                        help="DOT, the distillation-oriented trainer (Zhao et al. 2023): the CE and the distillation "
                             "gradients keep momentum buffers of their own, at momentum - DELTA and momentum + DELTA "
                             f"(mdistiller: {MDISTILLER_DOT_DELTA}; default 0: plain SGD). One process only")
    add_method_settings(parser, methods)


def add_method_settings(parser, methods):
    """Each method's own settings (Method.flags) as --field-name, a setting that several methods share (the
    temperature) once; default None (resolve() refuses one given to a method that does not have it)."""
    settings = {}  # field -> (type, help, [methods])
    for name, m in methods.items():
        for key, (kind, text) in m.flags.items():
            settings.setdefault(key, (kind, text, []))[2].append(name)
    for key, (kind, text, owners) in settings.items():
        defaults = {methods[name].defaults.get(key) for name in owners}
        default = defaults.pop() if len(defaults) == 1 else per_method(methods, key)
        shown = "" if default is None else f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
        on_own_pair = {name: OWN_PAIR_WEIGHTS[name][key] for name in owners if key in OWN_PAIR_WEIGHTS.get(name, {})}
        if on_own_pair:
            shown += "; on cifar10quick -> cifar10simple: " + ", ".join(f"{v:g}" if len(owners) == 1 else f"{n} {v:g}"
                                                                       for n, v in on_own_pair.items())
        parser.add_argument(flag_name(key), type=kind[0] if isinstance(kind, list) else kind,
                            nargs="+" if isinstance(kind, list) else None, default=None,
                            help=f"{', '.join(owners)}: {text}{shown}")


def add_data_dir(parser):
    """--data-dir, the same flag in every script."""
    parser.add_argument("--data-dir", default=DATA_DIR,
                        help="folder holding cifar-10-batches-py/ (CIFAR-10) or cifar-100-python/ (CIFAR-100)")


def add_device(parser):
    """--device, the same flag in every stage."""
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto uses the GPU when the framework finds one")

