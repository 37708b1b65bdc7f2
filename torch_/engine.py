"""The engine, in PyTorch: the optimizer and its saved state, the one training step, an epoch, the loop
(fit), evaluation, and loading models from checkpoints. jittor_/engine.py is the same file in Jittor,
line for line.

Every stage trains through train_step: a teacher is "no teacher, method ce"; a student has a teacher
(frozen, eval mode, no gradients) and a method of distillers.METHODS. align.py compares this step
between the frameworks and bench.py times it.
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.batches import epoch_seed  # noqa: E402
from common.checkpoint import (check_arch, check_dataset, ckpt_num_classes, ckpt_path, describe_checkpoint,  # noqa: E402
                               load_checkpoint, machine, make_checkpoint, ran_on_here, read_checkpoint, save_checkpoint,
                               wrong_weights)
from common.config import ADAMW, check_resume  # noqa: E402
from common.datasets import DATASETS  # noqa: E402
from common.distributed import check_batch_size, is_main  # noqa: E402
from common.errors import CheckpointError, DivergedError, UserError  # noqa: E402
from common.files import remove_stale_temps  # noqa: E402
from common.logs import check_finite, epoch_line, EventWriter, progress  # noqa: E402
from common.metrics import batch_accuracy, EvalAccumulator, merge_batch, Meter  # noqa: E402
from common.results import run_dir, training_result, write_result  # noqa: E402
from common.schedules import epoch_lr  # noqa: E402
from common.weights import check_finite_weights, is_buffer, no_weight_decay, state_digest  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_ import dataset, device as devices, features, models, parallel  # noqa: E402
from torch_.distillers import mean_terms, METHODS, rdrop_loss, TASK_TERMS  # noqa: E402

FRAMEWORK = "torch"


# ---------------------------------------------------------------- the optimizer and its saved state
def named_parameters(model, extra=None):
    """(name, parameter) of the model, then of the modules trained with it (FitNet's regressor, VID's), their names
    prefixed with their key ("regressor.conv.weight"): what the optimizer trains and its state is saved under."""
    return list(model.named_parameters()) + [(f"{key}.{name}", p) for key, module in (extra or {}).items()
                                             for name, p in module.named_parameters()]


def make_optimizer(model, config, extra=None):
    """SGD (the CNNs), DOT (--dot) or AdamW (the ViTs: DeiT's settings, every one given explicitly)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(adamw_groups(named_parameters(model, extra), config.weight_decay), lr=config.lr,
                                 betas=ADAMW["betas"], eps=ADAMW["eps"], weight_decay=config.weight_decay)
    if config.dot:
        return DistillationOrientedTrainer(named_parameters(model, extra), config.lr, config.momentum, config.dot,
                                           config.weight_decay)
    return torch.optim.SGD([p for _, p in named_parameters(model, extra)], lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def adamw_groups(named, weight_decay):
    """DeiT's two groups: the weights with decay, the biases, norms and tokens without (no_weight_decay)."""
    groups = [{"params": [p for name, p in named if not is_buffer(name) and no_weight_decay(name, p.shape) == skip],
               "weight_decay": 0.0 if skip else weight_decay} for skip in (False, True)]
    return [group for group in groups if group["params"]]


class DistillationOrientedTrainer:
    """DOT (Zhao et al. 2023; mdistiller/engine/dot.py), --dot DELTA: SGD in which the task loss (CE) and the
    distillation loss keep momentum buffers of their own, the task's at momentum - DELTA, the distillation's at
    momentum + DELTA. A parameter that only one of the two reaches (FitNet's regressor; the layers after its hint)
    keeps their mean. Weight decay goes with the task gradient (with the distillation gradient where CE does not
    reach). Each step: every task update, then every distillation update, as mdistiller orders them."""

    def __init__(self, named, lr, momentum, delta, weight_decay):
        self.named = [(name, p) for name, p in named if not is_buffer(name)]
        self.param_groups = [{"lr": lr}]  # set_lr
        self.momentum = {"task": momentum - delta, "kd": momentum + delta}
        self.weight_decay = weight_decay
        self.state = {"task": {}, "kd": {}}  # {kind: {parameter name: momentum buffer}}

    def step(self, loss_task, loss_kd):
        params = [p for _, p in self.named]
        grads = {"kd": torch.autograd.grad(loss_kd, params, retain_graph=True, allow_unused=True),
                 "task": torch.autograd.grad(loss_task, params, allow_unused=True)}
        # reached: a gradient not None (mdistiller's test) and not all zero (Jittor gives zeros where torch gives None)
        reached = {kind: [g is not None and bool(g.count_nonzero()) for g in gs] for kind, gs in grads.items()}
        self.update(grads, reached)

    @torch.no_grad()
    def update(self, grads, reached):
        mean = (self.momentum["kd"] + self.momentum["task"]) / 2.0
        lr = self.param_groups[0]["lr"]
        for kind, other in (("task", "kd"), ("kd", "task")):
            for i, (name, p) in enumerate(self.named):
                if not reached[kind][i]:
                    continue
                d_p = grads[kind][i]
                if self.weight_decay and (kind == "task" or not reached[other][i]):
                    d_p = d_p.add(p, alpha=self.weight_decay)
                buf = self.state[kind].get(name)
                if buf is None:
                    buf = self.state[kind][name] = d_p.clone()
                else:
                    buf.mul_(self.momentum[kind] if reached[other][i] else mean).add_(d_p)
                p.add_(buf, alpha=-lr)


def set_seed(seed):
    """Seed the framework's own RNG, which draws the dropout masks (the data's RNG is common.batches.epoch_rng)."""
    torch.manual_seed(seed)


def set_lr(optimizer, lr):
    """The schedule is common.schedules.lr_at, set by hand each epoch (no framework scheduler)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def get_optimizer_state(model, optimizer, extra=None):
    """SGD momentum buffers as {parameter name: numpy array}, the same format in both frameworks; DOT's distillation
    buffers under "dot_kd.<name>"; AdamW's moments under "exp_avg.<name>" and "exp_avg_sq.<name>", its step "step"."""
    if isinstance(optimizer, torch.optim.AdamW):  # in parameter order, whatever order the state was made in
        states = {name: optimizer.state[p] for name, p in named_parameters(model, extra) if p in optimizer.state}
        step = max((int(s["step"]) for s in states.values()), default=0)  # the same for every parameter
        return {**{f"{key}.{name}": s[key].cpu().numpy() for key in ("exp_avg", "exp_avg_sq")
                   for name, s in states.items()}, "step": np.array([step], dtype=np.int64)}
    if isinstance(optimizer, DistillationOrientedTrainer):
        return {("dot_kd." if kind == "kd" else "") + name: buf.cpu().numpy()
                for kind, bufs in optimizer.state.items() for name, buf in bufs.items()}
    names = {id(p): name for name, p in named_parameters(model, extra)}
    return {names[id(p)]: s["momentum_buffer"].cpu().numpy() for p, s in optimizer.state.items()
            if s.get("momentum_buffer") is not None}


def load_optimizer_state(model, optimizer, state, extra=None):
    if isinstance(optimizer, torch.optim.AdamW):
        for name, p in named_parameters(model, extra):
            if f"exp_avg.{name}" in state:
                optimizer.state[p] = {"step": torch.tensor(float(state["step"][0])),
                                      **{key: torch.from_numpy(state[f"{key}.{name}"]).to(p.device)
                                         for key in ("exp_avg", "exp_avg_sq")}}
        return
    if isinstance(optimizer, DistillationOrientedTrainer):
        for name, p in named_parameters(model, extra):
            for kind, key in (("task", name), ("kd", "dot_kd." + name)):
                if key in state:
                    optimizer.state[kind][name] = torch.from_numpy(state[key]).to(p.device)
        return
    for name, p in named_parameters(model, extra):
        if name in state:
            optimizer.state[p]["momentum_buffer"] = torch.from_numpy(state[name]).to(p.device)


# ---------------------------------------------------------------- one step, one epoch
def forward(model, images, read_features):
    """(logits, features): the features only for the methods that read them, so that the others run the
    plain forward, without hooks."""
    if read_features:
        return features.forward_features(model, images)
    return model(images), None


def train_step(model, teacher, optimizer, images, labels, config, distill_weight=1.0, extra=None, index=None):
    """One SGD step, returning (loss, logits, terms): the step of every stage, the one align.py compares and
    bench.py times. The teacher (frozen; None for a teacher or a ce student) sees this very batch, once.

    The loss is the sum of the method's named terms (distillers.METHODS); with --rdrop the model runs twice
    (two dropout masks): every term is the mean over the two passes, plus rdrop x the symmetric KL between
    them. extra: the modules trained with the model (FitNet's regressor, VID's regressors and variances). index: the
    batch's rows of the training split (numpy), which the terms read as extra["index"] (CRD's memory bank).
    """
    method = METHODS[config.method]
    out_teacher = None
    if teacher is not None:  # first: after the student's forward it ran ~30% slower in torch (bench.py)
        with torch.no_grad():
            out_teacher = forward(teacher, images, method.features)
    passes = [forward(model, images, method.features) for _ in range(2 if config.rdrop else 1)]
    inputs = dict(extra or {}, index=index)
    terms = mean_terms([method.terms(out, out_teacher, labels, config, distill_weight, inputs) for out in passes])
    if config.rdrop:
        terms["rdrop"] = config.rdrop * rdrop_loss(passes[0][0], passes[1][0])
    loss = sum(terms.values())
    if config.dot:  # the task terms (CE, R-Drop's) and the distillation terms, each with momentum of its own
        optimizer.step(sum(v for k, v in terms.items() if k in TASK_TERMS),
                       sum(v for k, v in terms.items() if k not in TASK_TERMS))
        return loss, passes[0][0], terms
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss, passes[0][0], terms


def train_one_epoch(model, teacher, loader, optimizer, epoch, config, device, extra, label):
    """One pass over the training set; the teacher sees exactly the model's batch. Sample-weighted means
    (over every process, data-parallel) and honest timings."""
    model.train()
    for module in extra.values():
        module.train()  # FitNet's regressor: its BN normalises with the batch's statistics, as mdistiller's
    if teacher is not None:
        teacher.eval()  # frozen BN statistics and no dropout, every epoch (mdistiller forces this too)
    distill_weight = METHODS[config.method].weight(epoch, config) if teacher is not None else 1.0  # warm-up
    meter = Meter()
    t_data = t_train = 0.0
    end = time.perf_counter()
    for step, (images, labels, index) in enumerate(progress(loader.epoch(epoch), len(loader), f"{FRAMEWORK} {label}")):
        start = time.perf_counter()
        t_data += start - end  # waiting for the next batch (prefetched in the background)
        loss, logits, terms = train_step(model, teacher, optimizer, images, labels, config, distill_weight, extra,
                                         index)
        devices.sync(device)
        values = {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()},
                  **batch_accuracy(logits.detach().cpu().numpy(), labels.cpu().numpy())}
        values, n = merge_batch(values, len(labels), parallel.all_reduce_sum)  # the global batch's, N ranks or 1
        check_finite(values["loss"], label, epoch, step, METHODS[config.method].flags)
        meter.update(values, n)
        end = time.perf_counter()
        t_train += end - start
    metrics = {f"train/{k}": v for k, v in meter.means().items()}
    if teacher is not None:
        metrics["distill_weight"] = distill_weight
    return {**metrics, "time/data": t_data, "time/train": t_train}


def evaluate(model, loader):
    """Loss, top-1/top-5 and per-class accuracy over a whole split, sample-weighted. A distilled ViT (DeiT's) predicts
    with the mean of its two heads; "heads" gives each head's own metrics too (test.py reports all three)."""
    model.eval()
    heads = getattr(getattr(model, "module", model), "HEADS", [])
    acc = {name: EvalAccumulator(loader.num_classes) for name in [None, *heads]}
    with torch.no_grad():
        for images, labels, _ in loader.epoch(0):
            logits, feats = forward(model, images, bool(heads))
            for name, out in [(None, logits), *((name, feats["heads"][name]) for name in heads)]:
                loss_sum = F.cross_entropy(out, labels, reduction="sum")
                acc[name].add(out.cpu().numpy(), labels.cpu().numpy(), loss_sum.item())
    result = {name: a.merged(parallel.all_reduce_sum).result() for name, a in acc.items()}  # every rank's share, once
    return {**result.pop(None), **({"heads": result} if heads else {})}


# ---------------------------------------------------------------- the loop
def parallel_note(config):
    """The data-parallel part of the run's first line (nothing in one process)."""
    n = parallel.world_size()
    if n == 1:
        return ""
    return (f", data-parallel on {n} processes ({config.batch_size // n} images of each batch per process, "
            f"BatchNorm statistics {'of the global batch' if config.sync_bn else 'per process'})")


def save_run(path, config, model, optimizer, extra, epoch, best_top1, history, teacher_digest, ran_on=()):
    """The run's checkpoint after an epoch: the model's weights, the optimizer's state (momentum buffers by name, the
    extra modules' included), every module of extra under its key, the history; resume() reads all of it back."""
    save_checkpoint(path, make_checkpoint(
        models.get_state(model), vars(config), FRAMEWORK, config.model, config.dataset,
        optimizer=get_optimizer_state(model, optimizer, extra),
        extra={key: models.get_state(module) for key, module in extra.items()},
        epoch=epoch, best_top1=best_top1, history=history, teacher_digest=teacher_digest, ran_on=ran_on))


def resume(path, config, model, optimizer, extra, teacher_digest):
    """--resume: the checkpoint's weights, optimizer state and history, after checking that it was trained
    with this very config (common.config.check_resume) and teacher. Returns (start epoch, best, history, where the
    epochs ran)."""
    ckpt = load_checkpoint(path)
    check_arch(ckpt, config.model, path)
    check_dataset(ckpt, config.dataset, path)
    check_resume(ckpt, config, path)
    if ckpt.get("teacher_digest") != teacher_digest:
        raise CheckpointError(f"--resume: the teacher {config.teacher} holds other weights than the teacher "
                              f"{path} was trained with ({ckpt['config'].get('teacher')}); start afresh without --resume")
    models.load_state(model, ckpt["model"], path)
    for key, module in extra.items():
        if key not in ckpt:
            raise CheckpointError(f"--resume: {path} holds no {key} (it was not trained with one); start afresh "
                                  f"without --resume")
        models.load_state(module, ckpt[key], f"{path} ({key})")
    load_optimizer_state(model, optimizer, ckpt["optimizer"], extra)
    return ckpt["epoch"] + 1, ckpt["best_top1"], ckpt["history"], ckpt.get("ran_on") or []


def fit(config, label, model, device, teacher=None, extra=None, teacher_digest=None):
    """Resume or start, then per epoch: set lr, train, evaluate, checkpoint, log; the result record at the end.

    extra: {key: module} trained with the model but not part of it (a method's setup: FitNet's regressor, VID's):
    in the optimizer, saved in the checkpoint under key (save_run), restored by --resume, never evaluated.

    Data-parallel (torchrun / mpirun): every rank runs this loop on its rows of each global batch;
    rank 0 alone writes the checkpoint, the events and the result (the others print nothing).
    """
    check_batch_size(min(config.batch_size, config.train_size), parallel.world_size())
    if config.dot and parallel.world_size() > 1:
        raise UserError("--dot runs on one process: DOT takes two gradients a step, and the launchers' all-reduce "
                        "(DDP's, Jittor's optimizer) is wired to one; run it without torchrun / mpirun")
    train_loader, val_loader = dataset.build_loaders(config, device)
    extra = extra or {}
    optimizer = make_optimizer(model, config, extra)
    path = ckpt_path(config.name, FRAMEWORK)
    if is_main():
        remove_stale_temps(path)  # left by a run killed while it wrote its checkpoint
    start_epoch, best_top1, history, ran_on = 0, 0.0, [], []
    if config.resume:
        start_epoch, best_top1, history, ran_on = resume(path, config, model, optimizer, extra, teacher_digest)
        print(f"[{FRAMEWORK} {label}] resuming {path} after epoch {start_epoch}")
    ran_on, note = ran_on_here(ran_on, machine(device, parallel.world_size()), start_epoch)
    if note and is_main():
        print(f"[{FRAMEWORK} {label}] {note}")
    parallel.set_sync_bn(model, config.sync_bn)
    train_model = parallel.wrap(model, device)  # after loading: every rank starts from the same weights
    train_extra = {key: parallel.wrap(parallel.set_sync_bn(module, config.sync_bn), device)
                   for key, module in extra.items()}
    writer = EventWriter(run_dir(config.name, FRAMEWORK), history) if is_main() else None  # the curves so far, once
    val_source = "the test set" if config.val_on_test else "held out"
    print(f"[{FRAMEWORK} {label}] {config.model} on {device}, {DATASETS[config.dataset]['title']}: "
          f"{config.train_size} train / {len(val_loader.labels)} val images ({val_source}), "
          f"{len(train_loader)} batches of {config.batch_size}, {config.epochs} epochs" + parallel_note(config))
    for epoch in range(start_epoch, config.epochs):
        lr = epoch_lr(epoch, config)
        set_lr(optimizer, lr)
        set_seed(epoch_seed(config.seed, epoch))  # this epoch's dropout masks, resumed or not
        try:
            metrics = train_one_epoch(train_model, teacher, train_loader, optimizer, epoch, config, device,
                                      train_extra, label)
        except DivergedError as e:  # a result, not a crash: run_all.py and report.py show it
            if is_main():
                writer.close()
                write_result(training_result(vars(config), FRAMEWORK, label, history, best_top1,
                                             diverged={"epoch": e.epoch, "error": str(e)}, ran_on=ran_on))
            parallel.barrier()  # every rank saw the same loss: none exits before rank 0 recorded it
            raise
        start = time.perf_counter()
        val = evaluate(model, val_loader)
        devices.sync(device)
        metrics.update({"val/loss": val["loss"], "val/top1": val["top1"], "val/top5": val["top5"],
                        "time/eval": time.perf_counter() - start, "lr": lr})
        best_top1 = max(best_top1, val["top1"])
        history.append(metrics)
        if not is_main():
            continue
        save_run(path, config, model, optimizer, extra, epoch, best_top1, history, teacher_digest, ran_on)
        writer.scalars(metrics, epoch + 1)
        writer.flush()
        print(epoch_line(FRAMEWORK, label, epoch, config.epochs, metrics), flush=True)
    record = training_result(vars(config), FRAMEWORK, label, history, best_top1, ran_on=ran_on)
    if is_main():
        writer.close()
        write_result(record)
    print(f"[{FRAMEWORK} {label}] done: best val top-1 {best_top1:.2f}%, checkpoint {os.path.relpath(path, ROOT)}")
    return record


# ---------------------------------------------------------------- models from checkpoints
def load_model(path, device, arch=None, dataset=None, arch_flag="--model"):
    """Build the checkpoint's architecture for its number of classes and load its weights.

    arch: the model of a torch file (which does not say), checked against a .ckpt's; dataset:
    checked against the checkpoint's number of classes (a CIFAR-10 model cannot do CIFAR-100).
    """
    ckpt = read_checkpoint(path, arch)
    if arch:
        check_arch(ckpt, arch, path, arch_flag)
    if dataset:
        check_dataset(ckpt, dataset, path)
    model = models.build_model(ckpt["arch"], num_classes=ckpt_num_classes(ckpt))
    try:
        models.load_state(model, ckpt["model"], path)
    except CheckpointError as e:
        raise wrong_weights(e, ckpt, path) from None
    return devices.to_device(model, device), ckpt


def load_teacher(path, device, arch=None, dataset=None):
    """The frozen teacher: eval mode, no gradients, from a checkpoint of either framework or a .pth file.

    arch: the teacher's model (needed for a .pth, checked for a .ckpt); dataset: the student's, whose
    number of classes the teacher must have. Returns the teacher and a fingerprint of its weights
    (saved in the student's checkpoint: --resume refuses another teacher).
    """
    teacher, ckpt = load_model(path, device, arch, dataset, arch_flag="--teacher-model or --pair")
    check_finite_weights(ckpt["model"], path, "--teacher")  # a diverged run's weights teach nothing
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    print(f"[{FRAMEWORK}] teacher {ckpt['arch']} from {path} ({describe_checkpoint(ckpt)})")
    return teacher, state_digest(ckpt["model"])


def load_init(model, path, arch, dataset):
    """--init: start from the weights of a checkpoint (either framework, or a .pth), same architecture and classes."""
    ckpt = read_checkpoint(path, arch)
    check_arch(ckpt, arch, path)
    check_dataset(ckpt, dataset, path)
    check_finite_weights(ckpt["model"], path, "--init")
    models.load_state(model, ckpt["model"], path)
    print(f"[{FRAMEWORK}] initial weights from {path} ({ckpt['framework']} checkpoint)")


def build(config, device):
    """The model a stage trains: built with its seed's initial weights, --init, --dropout, and the --rdrop check."""
    model = devices.to_device(models.build_model(config.model, config.seed, DATASETS[config.dataset]["num_classes"]),
                              device)
    if config.init and not config.resume:
        load_init(model, config.init, config.model, config.dataset)
    if config.dropout is not None:
        models.set_dropout(model, config.dropout)
    if hasattr(model, "HEADS") and config.method != "deit":  # its distillation head would never learn
        raise UserError(f"{config.model} has a distillation token, which only --method deit trains; "
                        f"use --model {config.model.replace('deit', 'vit')}")
    if config.rdrop and not models.has_dropout(model):  # the two passes would be identical, the KL 0
        raise UserError(f"--rdrop: {config.model} has no dropout, so its two passes would be identical "
                        f"(R-Drop regularises dropout; cifar10quick and the ViTs have it)")
    return model
