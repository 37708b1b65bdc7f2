"""Stage 1: train the teacher with cross-entropy (SGD, momentum, weight decay, step LR).

    python torch_/train_teacher.py                  # the original setting (25,000 / 5,000 images)
    python torch_/train_teacher.py --preset quick   # about a minute on 2 CPU cores
    python torch_/train_teacher.py --resume         # continue an interrupted run
    python torch_/train_teacher.py --dataset cifar100 --model resnet32x4   # a CIFAR-100 teacher

Writes ckpt/<name>_torch.ckpt after every epoch (atomically), TensorBoard events and
metrics.json under log/<name>/torch/. The loop (fit) is shared with train_student.py.
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
from common.errors import die, DivergedError, UserError  # noqa: E402
from common.files import remove_stale_temps, write_json  # noqa: E402
from common.logs import check_finite, epoch_line, EventWriter, progress, record_divergence, run_dir, run_summary  # noqa: E402
from common.metrics import batch_accuracy, merge_batch, Meter  # noqa: E402
from common.schedules import lr_at  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_ import dataset, models, parallel, test  # noqa: E402

FRAMEWORK = "torch"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, TEACHER_DEFAULTS)
    args = parser.parse_args(argv)
    apply_preset(args, "teacher", TEACHER_DEFAULTS)
    args.name = args.name or default_name(args, "teacher")
    return args


# ---------------------------------------------------------------- optimizer helpers
def make_optimizer(model, args):
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def set_seed(seed):
    """Seed the framework's own RNG, which draws the dropout masks (the data's RNG is common.batches.epoch_rng)."""
    torch.manual_seed(seed)


def set_lr(optimizer, lr):
    """The schedule is common.schedules.lr_at, set by hand each epoch (no framework scheduler)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def get_optimizer_state(model, optimizer):
    """SGD momentum buffers as {parameter name: numpy array}, the same format in both frameworks."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)]: s["momentum_buffer"].cpu().numpy() for p, s in optimizer.state.items()
            if s.get("momentum_buffer") is not None}


def load_optimizer_state(model, optimizer, state):
    for name, p in model.named_parameters():
        if name in state:
            optimizer.state[p]["momentum_buffer"] = torch.from_numpy(state[name]).to(p.device)


def load_init(model, path, arch, dataset):
    """--init: start from the weights of a checkpoint (either framework, or a .pth), same architecture and classes."""
    ckpt = test.read_checkpoint(path, arch)
    check_arch(ckpt, arch, path)
    check_dataset(ckpt, dataset, path)
    models.load_state(model, ckpt["model"], path)
    print(f"[{FRAMEWORK}] initial weights from {path} ({ckpt['framework']} checkpoint)")


# ---------------------------------------------------------------- one step, one epoch
def train_step(model, optimizer, images, labels):
    """One SGD step of cross-entropy. The step align.py compares and bench.py times is this one."""
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss, logits


def train_one_epoch(model, loader, optimizer, epoch, device):
    """One pass of cross-entropy training; sample-weighted means and honest timings."""
    model.train()
    meter = Meter()
    t_data = t_train = 0.0
    end = time.perf_counter()
    for step, (images, labels) in enumerate(progress(loader.epoch(epoch), len(loader), f"{FRAMEWORK} teacher")):
        start = time.perf_counter()
        t_data += start - end  # waiting for the next batch (prefetched in the background)
        loss, logits = train_step(model, optimizer, images, labels)
        models.sync(device)
        values = {"loss": loss.item(), **batch_accuracy(logits.detach().cpu().numpy(), labels.cpu().numpy())}
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


def fit(args, stage, model, train_epoch, device):
    """Resume or start, then per epoch: set lr, train, evaluate, checkpoint, log.

    Data-parallel (torchrun / mpirun): every rank runs this loop on its rows of each global batch;
    rank 0 alone writes the checkpoint, the events and the JSON (the others print nothing).
    """
    check_batch_size(min(args.batch_size, args.train_size), parallel.world_size())
    train_loader, val_loader = dataset.build_loaders(args, device)
    optimizer = make_optimizer(model, args)
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
        load_optimizer_state(model, optimizer, ckpt["optimizer"])
        start_epoch, best_top1, history = ckpt["epoch"] + 1, ckpt["best_top1"], ckpt["history"]
        print(f"[{FRAMEWORK} {stage}] resuming {path} after epoch {start_epoch}")
    models.set_sync_bn(model, args.sync_bn)
    train_model = parallel.wrap(model, device)  # after loading: every rank starts from the same weights
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
            metrics = train_epoch(train_model, train_loader, optimizer, epoch)
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
        save_checkpoint(path, {"model": models.get_state(model), "optimizer": get_optimizer_state(model, optimizer),
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
        train_epoch = lambda model, loader, optimizer, epoch: train_one_epoch(model, loader, optimizer, epoch, device)
        summary = fit(args, "teacher", model, train_epoch, device)
        parallel.finish()  # data-parallel: all ranks done, then the process group goes
        return summary
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    run_rank(main)
