"""Stage 4: evaluate a checkpoint on the CIFAR-10 or CIFAR-100 test set (top-1, top-5, loss, per class, images/s).

    python torch_/test.py                                    # every default run's checkpoint: one table
    python torch_/test.py --ckpt ckpt/teacher_s0_torch.ckpt
    python torch_/test.py --ckpt cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth --model resnet32x4

Checkpoints hold numpy arrays, so this also evaluates one saved by jittor_/. A checkpoint is
tested on its own dataset (recorded in it); a plain torch file (.pth/.pt, e.g. mdistiller's
teachers) names neither model nor dataset: --model gives the model, and the dataset is the one
with as many classes as its last layer has outputs.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.checkpoint import check_arch, check_dataset, ckpt_dataset, ckpt_num_classes, load_checkpoint  # noqa: E402
from common.config import add_data_dir, add_device, default_checkpoints, EVAL_BATCH_SIZE, MODELS  # noqa: E402
from common.datasets import DATASETS  # noqa: E402
from common.distributed import run_rank, is_main  # noqa: E402
from common.errors import CheckpointError, die, UserError  # noqa: E402
from common.files import write_json  # noqa: E402
from common.foreign import foreign_checkpoint, is_torch_file, numpy_state, torch_load_error, wrong_weights  # noqa: E402
from common.logs import format_test_report, results_table, test_json_path  # noqa: E402
from common.metrics import EvalAccumulator  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_ import dataset, models, parallel  # noqa: E402

FRAMEWORK = "torch"


def evaluate(model, loader):
    """Loss, top-1/top-5 and per-class accuracy over a whole split, sample-weighted."""
    model.eval()
    acc = EvalAccumulator(loader.num_classes)
    with torch.no_grad():
        for images, labels in loader.epoch(0):
            logits = model(images)
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
            acc.add(logits.cpu().numpy(), labels.cpu().numpy(), loss_sum.item())
    return acc.merged(parallel.all_reduce_sum).result()  # data-parallel: every rank's share, once each


def read_torch_file(path):
    """The weights in a torch file (.pth/.pt: mdistiller's teachers, torch.save(state_dict)) as numpy arrays."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain containers only
    except Exception as e:  # weights_only refused a global (the file would run code), or not a torch file
        raise torch_load_error(path, e) from None
    return numpy_state(obj, path, lambda v: v.detach().cpu().numpy())


def read_checkpoint(path, arch=None):
    """A checkpoint of this repo (.ckpt, either framework), or a torch file (.pth/.pt) as one (arch needed)."""
    if not is_torch_file(path):
        return load_checkpoint(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    return foreign_checkpoint(read_torch_file(path), path, arch)


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
    return models.to_device(model, device), ckpt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None,
                        help="checkpoint written by train_teacher.py or train_student.py, or a torch file (.pth/.pt); "
                             "default: the checkpoints of the default runs (teacher, ce, kd, dkd): this framework's, else the other's")
    parser.add_argument("--model", choices=MODELS, default=None,
                        help="architecture of a torch file (.pth/.pt), which does not say; a .ckpt names its own")
    parser.add_argument("--dataset", choices=list(DATASETS), default=None,
                        help="test set (default: the checkpoint's dataset)")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help="evaluation batch size")
    add_data_dir(parser)
    add_device(parser)
    parser.add_argument("--json", default=None, help="where to write the metrics (default: beside the run's events)")
    return parser.parse_args(argv)


def test_checkpoint(path, args, device):
    """Evaluate one checkpoint on its test set; print the report, write test.json, return the metrics."""
    model, ckpt = load_model(path, device, args.model, args.dataset)
    dataset_name = args.dataset or ckpt_dataset(ckpt)
    loader, classes = dataset.build_test_loader(args.data_dir, args.batch_size, device, dataset_name)
    start = time.perf_counter()
    metrics = evaluate(model, loader)
    models.sync(device)
    seconds = time.perf_counter() - start
    metrics.update(images_per_s=metrics["n"] / seconds, seconds=seconds, framework=FRAMEWORK,
                   ckpt=os.path.abspath(path), ckpt_framework=ckpt["framework"], arch=ckpt["arch"],
                   dataset=dataset_name)
    print(format_test_report(metrics, classes))
    json_path = args.json or test_json_path(ckpt, FRAMEWORK)
    if is_main():  # data-parallel: rank 0 writes
        write_json(json_path, metrics)
    print(f"wrote {os.path.relpath(json_path, ROOT)}")
    return metrics


def main(argv=None):
    args = parse_args(argv)
    device = models.select_device(args.device)
    try:
        parallel.setup(device)
        if args.ckpt:
            results = test_checkpoint(args.ckpt, args, device)
        else:  # no --ckpt: the default runs, as one table
            results = {path: test_checkpoint(path, args, device) for path in default_checkpoints(FRAMEWORK)}
            print(results_table(results))
        parallel.finish()  # data-parallel: all ranks done, then the process group goes
        return results
    except UserError as e:
        die(str(e))


if __name__ == "__main__":
    run_rank(main)
