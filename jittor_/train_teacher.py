"""Stage 1: train the teacher with cross-entropy (SGD, momentum, weight decay, step LR).

    python jittor_/train_teacher.py                  # the original setting (25,000 / 5,000 images)
    python jittor_/train_teacher.py --preset quick   # about a minute on 2 CPU cores
    python jittor_/train_teacher.py --resume         # continue an interrupted run
    python jittor_/train_teacher.py --dataset cifar100 --model resnet32x4   # a CIFAR-100 teacher
    python jittor_/train_teacher.py --rdrop 5 --dropout 0.3 --name teacher_rdrop   # with R-Drop

Writes ckpt/<name>_jittor.ckpt after every epoch (atomically), TensorBoard events and
metrics.json under log/<name>/jittor/. The loop (fit) is shared with train_student.py.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.batches import epoch_seed  # noqa: E402
from common.checkpoint import check_arch, check_dataset, check_resume, ckpt_path, load_checkpoint, save_checkpoint  # noqa: E402
from common.config import TEACHER_DEFAULTS, add_common_args, apply_preset, default_name  # noqa: E402
from common.datasets import DATASETS  # noqa: E402
from common.distributed import check_batch_size, run_rank, is_main  # noqa: E402
from common.env import prepare_jittor  # noqa: E402
from common.errors import CheckpointError, die, DivergedError, UserError  # noqa: E402
from common.files import remove_stale_temps, write_json  # noqa: E402
from common.logs import check_finite, epoch_line, EventWriter, progress, record_divergence, run_dir, run_summary  # noqa: E402
from common.metrics import batch_accuracy, merge_batch, Meter  # noqa: E402
from common.schedules import lr_at  # noqa: E402
from common.weights import is_buffer  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402
from jittor_ import dataset, models, parallel, test  # noqa: E402

FRAMEWORK = "jittor"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, TEACHER_DEFAULTS)
    args = parser.parse_args(argv)
    apply_preset(args, "teacher", TEACHER_DEFAULTS)
    args.name = args.name or default_name(args, "teacher")
    return args


# ---------------------------------------------------------------- optimizer helpers
def named_parameters(model, extra=None):
    """(name, parameter) of the model, then of the modules trained with it (FitNet's regressor), their names
    prefixed with their key ("regressor.conv.weight"): what the optimizer trains and its state is saved under."""
    return list(model.named_parameters()) + [(f"{key}.{name}", p) for key, module in (extra or {}).items()
                                             for name, p in module.named_parameters()]


def make_optimizer(model, args, extra=None):
    return jt.optim.SGD([p for _, p in named_parameters(model, extra)], lr=args.lr, momentum=args.momentum,
                        weight_decay=args.weight_decay)


def set_seed(seed):
    """Seed the framework's own RNG, which draws the dropout masks (the data's RNG is common.batches.epoch_rng)."""
    jt.set_global_seed(seed, different_seed_for_mpi=False)  # Jittor's default adds 2591 * rank under mpirun


def set_lr(optimizer, lr):
    """The schedule is common.schedules.lr_at, set by hand each epoch (no framework scheduler)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def get_optimizer_state(model, optimizer, extra=None):
    """SGD momentum buffers as {parameter name: numpy array}, the same format in both frameworks."""
    names = {id(p): name for name, p in named_parameters(model, extra)}
    # not p.is_stop_grad(): Jittor's model.eval() marks every parameter stop_grad until train()
    return {names[id(p)]: v.numpy() for group in optimizer.param_groups
            for p, v in zip(group["params"], group["values"]) if not is_buffer(names[id(p)])}


def load_optimizer_state(model, optimizer, state, extra=None):
    names = {id(p): name for name, p in named_parameters(model, extra)}
    for group in optimizer.param_groups:
        for p, v in zip(group["params"], group["values"]):
            if names[id(p)] in state:
                v.update(jt.array(state[names[id(p)]]))


def load_init(model, path, arch, dataset):
    """--init: start from the weights of a checkpoint (either framework, or a .pth), same architecture and classes."""
    ckpt = test.read_checkpoint(path, arch)
    check_arch(ckpt, arch, path)
    check_dataset(ckpt, dataset, path)
    models.load_state(model, ckpt["model"], path)
    print(f"[{FRAMEWORK}] initial weights from {path} ({ckpt['framework']} checkpoint)")


def check_rdrop(model, args):
    """--rdrop needs dropout: without it the two passes are the same and the KL is 0 (a one-line error)."""
    if args.rdrop and not models.has_dropout(model):
        raise UserError(f"--rdrop: {args.model} has no dropout, so its two passes would be identical "
                        f"(R-Drop regularises dropout; cifar10quick has it)")


def checkpoint_part(ckpt, key, path):
    """One of the arrays groups a run saved besides its model (the regressor), or a one-line error."""
    if key not in ckpt:
        raise CheckpointError(f"--resume: {path} holds no {key} (it was not trained with one); start afresh without --resume")
    return ckpt[key]


# ---------------------------------------------------------------- one step, one epoch
def mean_terms(passes):
    """The loss terms of R-Drop's two passes, averaged term by term (one pass: its own terms)."""
    if len(passes) == 1:
        return passes[0]
    return {k: sum(p[k] for p in passes) / len(passes) for k in passes[0]}


def train_step(model, optimizer, images, labels, rdrop=0.0):
    """One SGD step of cross-entropy, returning (loss, logits, terms). The step align.py compares and bench.py
    times is this one. With rdrop (R-Drop's alpha): a second pass of the same batch, other dropout masks; the
    mean of the two cross-entropies plus rdrop x the symmetric KL between the two predictions."""
    passes = [model(images) for _ in range(2 if rdrop else 1)]
    terms = mean_terms([{"ce": nn.cross_entropy_loss(logits, labels)} for logits in passes])
    if rdrop:
        from jittor_.train_student import rdrop_loss  # the losses live together there (it imports this file)
        terms["rdrop"] = rdrop * rdrop_loss(passes[0], passes[1])
    loss = sum(terms.values())
    optimizer.zero_grad()
    optimizer.backward(loss)
    optimizer.step()
    return loss, passes[0], terms


def train_one_epoch(model, loader, optimizer, epoch, args, device):
    """One pass of cross-entropy training; sample-weighted means and honest timings."""
    model.train()
    meter = Meter()
    t_data = t_train = 0.0
    end = time.perf_counter()
    for step, (images, labels) in enumerate(progress(loader.epoch(epoch), len(loader), f"{FRAMEWORK} teacher")):
        start = time.perf_counter()
        t_data += start - end  # waiting for the next batch (prefetched in the background)
        loss, logits, terms = train_step(model, optimizer, images, labels, args.rdrop)
        models.sync(device)
        values = {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items() if len(terms) > 1},
                  **batch_accuracy(logits.numpy(), labels.numpy())}
        values, n = merge_batch(values, len(labels), parallel.all_reduce_sum)  # the global batch's, N ranks or 1
        check_finite(values["loss"], "teacher", epoch, step)
        meter.update(values, n)
        end = time.perf_counter()
        t_train += end - start
    return {**{f"train/{k}": v for k, v in meter.means().items()}, "time/data": t_data, "time/train": t_train}


# ---------------------------------------------------------------- the loop both stages share
def parallel_note(args):
    """The data-parallel part of the run's first line (nothing in one process)."""
    n = parallel.world_size()
    if n == 1:
        return ""
    return (f", data-parallel on {n} processes ({args.batch_size // n} images of each batch per process, "
            f"BatchNorm statistics {'of the global batch' if args.sync_bn else 'per process'})")


def fit(args, stage, model, train_epoch, device, extra=None):
    """Resume or start, then per epoch: set lr, train, evaluate, checkpoint, log.

    extra: {key: module} trained with the model but not part of it (FitNet's regressor): in the optimizer,
    saved in the checkpoint under key, restored by --resume, handed to train_epoch, never evaluated.

    Data-parallel (torchrun / mpirun): every rank runs this loop on its rows of each global batch;
    rank 0 alone writes the checkpoint, the events and the JSON (the others print nothing).
    """
    check_batch_size(min(args.batch_size, args.train_size), parallel.world_size())
    train_loader, val_loader = dataset.build_loaders(args, device)
    extra = extra or {}
    optimizer = make_optimizer(model, args, extra)
    path = ckpt_path(args.name, FRAMEWORK)
    if is_main():
        remove_stale_temps(path)  # left by a run killed while it wrote its checkpoint
    start_epoch, best_top1, history = 0, 0.0, []
    if args.resume:
        ckpt = load_checkpoint(path)
        check_arch(ckpt, args.model, path)
        check_dataset(ckpt, args.dataset, path)
        check_resume(ckpt, args, path)
        models.load_state(model, ckpt["model"], path)
        for key, module in extra.items():
            models.load_state(module, checkpoint_part(ckpt, key, path), f"{path} ({key})")
        load_optimizer_state(model, optimizer, ckpt["optimizer"], extra)
        start_epoch, best_top1, history = ckpt["epoch"] + 1, ckpt["best_top1"], ckpt["history"]
        print(f"[{FRAMEWORK} {stage}] resuming {path} after epoch {start_epoch}")
    models.set_sync_bn(model, args.sync_bn)
    train_model = parallel.wrap(model, device)  # after loading: every rank starts from the same weights
    train_extra = {key: parallel.wrap(models.set_sync_bn(module, args.sync_bn), device) for key, module in extra.items()}
    writer = EventWriter(run_dir(args.name, FRAMEWORK), history) if is_main() else None  # the curves so far, once
    val_source = "the test set" if args.val_on_test else "held out"
    print(f"[{FRAMEWORK} {stage}] {args.model} on {device}, {DATASETS[args.dataset]['title']}: "
          f"{args.train_size} train / {len(val_loader.labels)} val images ({val_source}), "
          f"{len(train_loader)} batches of {args.batch_size}, {args.epochs} epochs" + parallel_note(args))
    for epoch in range(start_epoch, args.epochs):
        lr = lr_at(epoch, args.lr, args.milestones)
        set_lr(optimizer, lr)
        set_seed(epoch_seed(args.seed, epoch))  # this epoch's dropout masks, resumed or not
        try:
            metrics = train_epoch(train_model, train_loader, optimizer, epoch, train_extra)
        except DivergedError as e:  # a result, not a crash: run_all.py and report.py show it
            if is_main():
                writer.close()
                record_divergence(args.name, FRAMEWORK, e)
            parallel.barrier()  # every rank saw the same loss: none exits before rank 0 recorded it
            raise
        start = time.perf_counter()
        val = test.evaluate(model, val_loader)
        models.sync(device)
        metrics.update({"val/loss": val["loss"], "val/top1": val["top1"], "val/top5": val["top5"],
                        "time/eval": time.perf_counter() - start, "lr": lr})
        best_top1 = max(best_top1, val["top1"])
        history.append(metrics)
        if not is_main():
            continue
        save_checkpoint(path, {"model": models.get_state(model), "optimizer": get_optimizer_state(model, optimizer, extra),
                               **{key: models.get_state(module) for key, module in extra.items()},
                                      "epoch": epoch, "best_top1": best_top1, "config": vars(args),
                                      "framework": FRAMEWORK, "arch": args.model, "dataset": args.dataset,
                                      "history": history})
        writer.scalars(metrics, epoch + 1)
        writer.flush()
        print(epoch_line(FRAMEWORK, stage, epoch, args.epochs, metrics), flush=True)
    summary = run_summary(args, FRAMEWORK, stage, history, best_top1)
    if is_main():
        writer.close()
        write_json(os.path.join(run_dir(args.name, FRAMEWORK), "metrics.json"), summary)
    print(f"[{FRAMEWORK} {stage}] done: best val top-1 {best_top1:.2f}%, checkpoint {os.path.relpath(path, ROOT)}")
    return summary


def main(argv=None):
    args = parse_args(argv)
    device = models.select_device(args.device)
    try:
        parallel.setup(device)
        model = models.to_device(models.build_model(args.model, args.seed, DATASETS[args.dataset]["num_classes"]),
                                 device)
        if args.init and not args.resume:
            load_init(model, args.init, args.model, args.dataset)
        if args.dropout is not None:
            models.set_dropout(model, args.dropout)
        check_rdrop(model, args)
        train_epoch = lambda model, loader, optimizer, epoch, extra: train_one_epoch(model, loader, optimizer, epoch,
                                                                                       args, device)
        summary = fit(args, "teacher", model, train_epoch, device)
        parallel.finish()  # data-parallel: all ranks done, then the process group goes
        return summary
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    run_rank(main)
