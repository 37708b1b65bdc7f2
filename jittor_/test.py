"""Stage 4: evaluate a checkpoint on the CIFAR-10 test set (top-1, top-5, loss, per class, images/s).

    python jittor_/test.py --ckpt ckpt/teacher_s0_jittor.ckpt

Checkpoints hold numpy arrays, so this also evaluates one saved by torch_/.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
common.prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402
from jittor_ import dataset, models  # noqa: E402

FRAMEWORK = "jittor"


def evaluate(model, loader):
    """Loss, top-1/top-5 and per-class accuracy over a whole split, sample-weighted."""
    model.eval()
    acc = common.EvalAccumulator()
    with jt.no_grad():
        for images, labels in loader.epoch(0):
            logits = model(images)
            loss_sum = nn.cross_entropy_loss(logits, labels, reduction="sum")
            acc.add(logits.numpy(), labels.numpy(), loss_sum.item())
    return acc.result()


def load_model(path, device):
    """Build the checkpoint's architecture and load its weights (from either framework)."""
    ckpt = common.load_checkpoint(path)
    model = models.build_model(ckpt["arch"])
    models.load_state(model, ckpt["model"], path)
    return models.to_device(model, device), ckpt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by train_teacher.py or train_student.py")
    parser.add_argument("--batch-size", type=int, default=common.EVAL_BATCH_SIZE, help="evaluation batch size")
    parser.add_argument("--data-dir", default=common.DATA_DIR, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto uses the GPU when the framework finds one")
    parser.add_argument("--json", default=None, help="where to write the metrics (default: beside the run's events)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = models.select_device(args.device)
    try:
        model, ckpt = load_model(args.ckpt, device)
        loader, classes = dataset.build_test_loader(args.data_dir, args.batch_size, device)
    except common.UserError as e:
        common.die(str(e))
    start = time.perf_counter()
    metrics = evaluate(model, loader)
    models.sync(device)
    seconds = time.perf_counter() - start
    metrics.update(images_per_s=metrics["n"] / seconds, seconds=seconds, framework=FRAMEWORK,
                   ckpt=os.path.abspath(args.ckpt), ckpt_framework=ckpt["framework"], arch=ckpt["arch"])
    print(common.format_test_report(metrics, classes))
    json_path = args.json or common.test_json_path(ckpt, FRAMEWORK)
    common.write_json(json_path, metrics)
    print(f"wrote {os.path.relpath(json_path, ROOT)}")
    return metrics


if __name__ == "__main__":
    main()
