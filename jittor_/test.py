"""Stage 4: evaluate a checkpoint on the CIFAR-10 or CIFAR-100 test set (top-1, top-5, loss, per class, images/s).

    python jittor_/test.py                                    # every default run's checkpoint: one table
    python jittor_/test.py --ckpt ckpt/teacher_s0_jittor.ckpt
    python jittor_/test.py --ckpt cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth --model resnet32x4

Checkpoints hold numpy arrays, so this also evaluates one saved by torch_/. A checkpoint is
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
from common.checkpoint import ckpt_dataset  # noqa: E402
from common.config import add_data_dir, add_device, default_checkpoints, EVAL_BATCH_SIZE, MODELS  # noqa: E402
from common.datasets import DATASETS  # noqa: E402
from common.distributed import run_rank, is_main  # noqa: E402
from common.errors import die, UserError  # noqa: E402
from common.files import write_json  # noqa: E402
from common.logs import format_test_report, results_table  # noqa: E402
from common.results import add_test  # noqa: E402
from common.weights import finite_weights_warning  # noqa: E402
from jittor_ import dataset, device as devices, engine, parallel  # noqa: E402

FRAMEWORK = "jittor"


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
    parser.add_argument("--json", default=None,
                        help="also write the metrics to this file (they always go into the run's result record, "
                             "log/<run>/<framework>/result.json)")
    return parser.parse_args(argv)


def test_checkpoint(path, args, device):
    """Evaluate one checkpoint on its test set; print the report, add it to the run's result record."""
    model, ckpt = engine.load_model(path, device, args.model, args.dataset)
    warning = finite_weights_warning(ckpt["model"], path)  # evaluated all the same: it is what was asked
    if warning:
        print(warning, file=sys.stderr)
    dataset_name = args.dataset or ckpt_dataset(ckpt)
    loader, classes = dataset.build_test_loader(args.data_dir, args.batch_size, device, dataset_name)
    start = time.perf_counter()
    metrics = engine.evaluate(model, loader)
    devices.sync(device)
    seconds = time.perf_counter() - start
    metrics.update(images_per_s=metrics["n"] / seconds, seconds=seconds, framework=FRAMEWORK,
                   ckpt=os.path.abspath(path), ckpt_framework=ckpt["framework"], arch=ckpt["arch"],
                   dataset=dataset_name)
    print(format_test_report(metrics, classes))
    if is_main():  # data-parallel: rank 0 writes
        record = add_test(ckpt["config"]["name"], FRAMEWORK, ckpt["framework"], metrics)
        print(f"wrote {os.path.relpath(record, ROOT)}")
        if args.json:
            write_json(args.json, metrics)
    return metrics


def main(argv=None):
    args = parse_args(argv)
    device = devices.select_device(args.device)
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
