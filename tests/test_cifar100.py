"""CIFAR-100, the DKD paper's pairs and mdistiller's teacher files, in both frameworks.

Runs on the tiny CIFAR-100 of conftest (official layout, 200 train / 50 test images, 100 classes)
with the small ResNet8x4 everywhere (the pair flag overridden to tiny sizes), so each run takes seconds.
"""
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import align
from common.batches import augment, iterate_batches, normalise
from common.checkpoint import ckpt_path, load_checkpoint, save_checkpoint
from common.config import FRAMEWORKS, MODELS, PAIRS, resolve
from common.datasets import DATASETS, load_dataset
from common.errors import CheckpointError, DataError, UserError
from common.results import read_result
from common.schedules import lr_at, warmup_factor
import convert
from conftest import ROOT, TINY100, error_line, run_script
from stage_runner import stage_process
from jittor_ import distillers as jt_distillers, engine as jt_engine
from torch_ import distillers as th_distillers, engine as th_engine, models as tm

METHODS = {"torch": th_distillers.METHODS, "jittor": jt_distillers.METHODS}

TINY = ["--train-size", 64, "--batch-size", 32, "--epochs", 1]


def error_of(proc):
    """A user error: exit 2 and an "error: " message, no traceback (error_line: when it must be one line)."""
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr


# ------------------------------------------------------------------ reading the files
def test_reader_reads_the_official_layout(tiny_data100):
    data = load_dataset("cifar100", tiny_data100)
    assert data["train_x"].shape == (TINY100["train"], 3, 32, 32) and data["train_x"].dtype == np.uint8
    assert data["test_x"].shape == (TINY100["test"], 3, 32, 32) and data["test_y"].dtype == np.int64
    assert data["classes"][:2] == ["fine_00", "fine_01"] and len(data["classes"]) == 100
    with open(os.path.join(tiny_data100, "cifar-100-python", "train"), "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    np.testing.assert_array_equal(data["train_y"], raw["fine_labels"])  # fine labels, not the coarse ones
    assert set(data["train_y"]) == set(range(100)) and not np.array_equal(raw["fine_labels"], raw["coarse_labels"])
    assert np.array_equal(data["train_x"][0, 0].ravel(), raw["data"][0, :1024])  # channel-major rows


def test_reader_accepts_bytes_keys(tmp_path, tiny_data100):
    """Under encoding='bytes' the official (Python 2) pickles have bytes keys; both spellings are read."""
    folder = tmp_path / "cifar-100-python"
    shutil.copytree(os.path.join(tiny_data100, "cifar-100-python"), folder)
    for name in ("train", "meta"):
        with open(folder / name, "rb") as f:
            obj = pickle.load(f)
        if name == "meta":
            obj = {k: [c.encode() for c in v] for k, v in obj.items()}  # bytes class names too
        with open(folder / name, "wb") as f:
            pickle.dump({k.encode(): v for k, v in obj.items()}, f)
    data = load_dataset("cifar100", str(tmp_path))
    assert data["train_x"].shape[0] == TINY100["train"] and data["classes"][99] == "fine_99"


def test_missing_folder_offline_says_what_to_download(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", str(tmp_path))  # KD_NO_DOWNLOAD=1 in conftest
    msg = str(e.value)
    assert "CIFAR-100 not found" in msg and str(tmp_path / "cifar-100-python") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in msg
    assert "eb9058c3a382ffc7106e4002c42a8d85" in msg and "train, test, meta" in msg


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_missing_folder_is_a_clear_error_in_the_stages(fw, tmp_path):
    err = error_of(stage_process(fw, "train_teacher", "--dataset", "cifar100", "--data-dir", tmp_path, *TINY))
    assert "CIFAR-100 not found" in err and "cifar-100-python.tar.gz" in err


def test_corrupt_labels_are_a_clear_error(tmp_path, tiny_data100):
    folder = tmp_path / "cifar-100-python"
    shutil.copytree(os.path.join(tiny_data100, "cifar-100-python"), folder)
    with open(folder / "test", "rb") as f:
        batch = pickle.load(f)
    batch["fine_labels"][0] = 100
    with open(folder / "test", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(DataError, match="labels outside 0..99"):
        load_dataset("cifar100", str(tmp_path))


def test_normalisation_numbers():
    # mdistiller/dataset/cifar100.py: Normalize((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert DATASETS["cifar100"]["mean"] == (0.5071, 0.4867, 0.4408)
    assert DATASETS["cifar100"]["std"] == (0.2675, 0.2565, 0.2761)
    assert DATASETS["cifar10"]["mean"] == (0.4914, 0.4822, 0.4465)  # CIFAR-10 unchanged
    assert DATASETS["cifar10"]["std"] == (0.2470, 0.2435, 0.2616)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 3, 32, 32)).astype(np.uint8)
    for name, (mean, std) in {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                              "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))}.items():
        expected = (images / 255.0 - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
        np.testing.assert_allclose(normalise(images, name), expected, atol=1e-5)
    np.testing.assert_array_equal(normalise(images), normalise(images, "cifar10"))  # the default
    # the same crop and flip for both datasets, only the normalisation differs
    a = augment(images, np.random.default_rng(3), dataset="cifar100")
    b = augment(images, np.random.default_rng(3), dataset="cifar10")
    std10, std100 = np.array(DATASETS["cifar10"]["std"]), np.array(DATASETS["cifar100"]["std"])
    mean10, mean100 = np.array(DATASETS["cifar10"]["mean"]), np.array(DATASETS["cifar100"]["mean"])
    pixels_a = a * std100[None, :, None, None] + mean100[None, :, None, None]
    pixels_b = b * std10[None, :, None, None] + mean10[None, :, None, None]
    np.testing.assert_allclose(pixels_a, pixels_b, atol=1e-5)
    batches = list(iterate_batches(images, np.arange(4), 2, train=False, dataset="cifar100"))
    np.testing.assert_array_equal(batches[0][0], normalise(images[:2], "cifar100"))


# ------------------------------------------------------------------ the pairs
# name: (teacher, student, lr, beta), typed from mdistiller's configs/cifar100/dkd/<name>.yaml
EXPECTED_PAIRS = {
    "res56_res20": ("resnet56", "resnet20", 0.05, 2.0),
    "res110_res32": ("resnet110", "resnet32", 0.05, 2.0),
    "res32x4_res8x4": ("resnet32x4", "resnet8x4", 0.05, 8.0),
    "wrn40_2_wrn_16_2": ("wrn_40_2", "wrn_16_2", 0.05, 6.0),
    "wrn40_2_wrn_40_1": ("wrn_40_2", "wrn_40_1", 0.05, 6.0),
    "vgg13_vgg8": ("vgg13", "vgg8", 0.05, 6.0),
    "res32x4_shuv1": ("resnet32x4", "ShuffleV1", 0.01, 8.0),
    "wrn40_2_shuv1": ("wrn_40_2", "ShuffleV1", 0.01, 8.0),
    "vgg13_mv2": ("vgg13", "MobileNetV2", 0.01, 6.0),
    "res50_mv2": ("ResNet50", "MobileNetV2", 0.01, 8.0),
    "res32x4_shuv2": ("resnet32x4", "ShuffleV2", 0.01, 8.0),
}


def test_pair_table_matches_mdistiller():
    assert list(PAIRS) == list(EXPECTED_PAIRS)
    for name, (teacher, student, lr, beta) in EXPECTED_PAIRS.items():
        pair = PAIRS[name]
        assert (pair["teacher_model"], pair["model"], pair["lr"], pair["beta"]) == (teacher, student, lr, beta), name
        assert teacher in MODELS and student in MODELS, name
        assert dict(pair, teacher_model=None, model=None, lr=None, beta=None) == dict(
            teacher_model=None, model=None, lr=None, beta=None, dataset="cifar100", method="dkd", epochs=240,
            batch_size=64, milestones=[150, 180, 210], momentum=0.9, weight_decay=5e-4, alpha=1.0, temperature=4.0,
            ce_weight=1.0, warmup=20, train_size=50000, val_size=0, val_on_test=True), name


def test_pair_schedule_is_mdistillers():
    """mdistiller counts epochs from 1: lr x0.1^(#stages < epoch), DKD weight min(epoch / 20, 1)."""
    pair = PAIRS["res32x4_res8x4"]
    for epoch in range(pair["epochs"]):  # ours: 0-based
        mdistiller_epoch = epoch + 1
        expected_lr = 0.05 * 0.1 ** sum(mdistiller_epoch > s for s in (150, 180, 210))
        assert lr_at(epoch, pair["lr"], pair["milestones"]) == pytest.approx(expected_lr), epoch
        assert warmup_factor(epoch, pair["warmup"]) == pytest.approx(min(mdistiller_epoch / 20, 1.0))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pair_flag_sets_everything_and_explicit_flags_win(fw):
    """common.config.resolve, the one place of precedence, with each framework's method table."""
    student = lambda **flags: resolve("student", flags, METHODS[fw], fw)
    args = student(pair="vgg13_mv2", teacher="t.pth")
    assert (args.method, args.dataset, args.model, args.teacher_model) == ("dkd", "cifar100", "MobileNetV2", "vgg13")
    assert (args.epochs, args.batch_size, args.lr, args.milestones) == (240, 64, 0.01, [150, 180, 210])
    assert (args.beta, args.alpha, args.temperature, args.warmup, args.weight_decay) == (6.0, 1.0, 4.0, 20, 5e-4)
    assert (args.train_size, args.val_size, args.val_on_test, args.ce_weight) == (50000, 0, True, 1.0)
    assert args.name == "cifar100/vgg13_mv2_s0"
    args = student(pair="vgg13_mv2", teacher="t.pth", epochs=2, beta=1.0, val_on_test=False, val_size=100,
                   teacher_model="resnet8x4")
    assert (args.epochs, args.beta, args.val_on_test, args.val_size, args.teacher_model) == (2, 1.0, False, 100, "resnet8x4")
    assert args.lr == 0.01  # the rest still from the pair
    with pytest.raises(UserError, match="res99_res1.*" + ", ".join(EXPECTED_PAIRS)):
        student(pair="res99_res1", teacher="t.pth")
    with pytest.raises(UserError, match="needs --teacher.*resnet32x4_vanilla/ckpt_epoch_240.pth"):
        student(pair="res32x4_res8x4")  # no teacher: say where one comes from
    with pytest.raises(UserError, match=r"required: --method \(or --pair\)"):
        student()
    # without --pair nothing changes: CIFAR-10, the original names
    args = student(method="ce")
    assert (args.dataset, args.val_on_test, args.name, args.model) == ("cifar10", False, "student_ce_s0", "cifar10simple")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_pair_command_line_errors(fw):
    """The same refusals from the command line: one line, exit 2, nothing trained."""
    proc = stage_process(fw, "train_student", "--pair", "res99_res1", "--teacher", "t.pth")
    assert proc.returncode == 2 and "res99_res1" in proc.stderr and all(name in proc.stderr for name in EXPECTED_PAIRS)
    proc = stage_process(fw, "train_student")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: the following arguments are required: --method (or --pair)"


# ------------------------------------------------------------------ end to end, both frameworks
@pytest.fixture(scope="module")
def teachers100(tiny_data100):
    """A ResNet8x4 CIFAR-100 teacher per framework, one epoch, validated on the test set."""
    for fw in FRAMEWORKS:
        proc = run_script(fw, "train_teacher", "--dataset", "cifar100", "--model", "resnet8x4", "--val-size", 0,
                          "--val-on-test", "--data-dir", tiny_data100, "--name", "c100/teacher", *TINY)
        assert "CIFAR-100: 64 train / 50 val images (the test set)" in proc.stdout
    return {fw: ckpt_path("c100/teacher", fw) for fw in FRAMEWORKS}


@pytest.fixture(scope="module")
def mdistiller_teacher(teachers100, tmp_path_factory):
    """The torch teacher's weights saved the way mdistiller's teachers are: cifar_teachers/<model>_vanilla/
    ckpt_epoch_240.pth, {"model": state_dict, "epoch", "accuracy", "optimizer"}; torch's zip and legacy formats."""
    ckpt = load_checkpoint(teachers100["torch"])
    model = tm.build_model("resnet8x4", num_classes=100)
    tm.load_state(model, ckpt["model"], "teacher")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    folder = tmp_path_factory.mktemp("cifar_teachers") / "resnet8x4_vanilla"
    folder.mkdir()
    paths = {}
    for fmt, zipped in (("zip", True), ("legacy", False)):
        paths[fmt] = str(folder / f"ckpt_epoch_240_{fmt}.pth")
        torch.save({"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor(12.5),
                    "optimizer": optimizer.state_dict()}, paths[fmt], _use_new_zipfile_serialization=zipped)
    return paths


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_then_pair_student_then_test(fw, teachers100, tiny_data100, tmp_path):
    teacher = load_checkpoint(teachers100[fw])
    assert teacher["dataset"] == "cifar100" and teacher["model"]["fc.weight"].shape == (100, 256)
    # the pair's settings on a tiny scale: its teacher model overridden to the small ResNet8x4
    proc = run_script(fw, "train_student", "--pair", "res32x4_res8x4", "--teacher", teachers100[fw],
                      "--teacher-model", "resnet8x4", "--data-dir", tiny_data100, "--name", "c100/pair", *TINY)
    assert f"teacher resnet8x4 from {teachers100[fw]} ({fw} checkpoint, CIFAR-100" in proc.stdout
    student = load_checkpoint(ckpt_path("c100/pair", fw))
    assert student["dataset"] == "cifar100" and student["arch"] == "resnet8x4"
    cfg = student["config"]
    assert (cfg["method"], cfg["lr"], cfg["beta"], cfg["warmup"], cfg["batch_size"], cfg["epochs"]) == ("dkd", 0.05, 8.0, 20, 32, 1)
    history = student["history"][0]
    assert history["distill_weight"] == pytest.approx(1 / 20) and "train/loss_nckd" in history
    out = tmp_path / "test.json"
    proc = stage_process(fw, "test", "--ckpt", ckpt_path("c100/pair", fw), "--data-dir", tiny_data100, "--json", out)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert read_result("c100/pair", fw)["test"] == metrics  # the run's record holds what --json copied
    assert metrics["dataset"] == "cifar100" and metrics["n"] == TINY100["test"] and len(metrics["per_class"]) == 100
    assert metrics["top1"] == pytest.approx(history["val/top1"])  # the pair validates on the test set
    assert "fine_99" in proc.stdout


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mdistiller_teacher_file_teaches_a_pair_student(fw, mdistiller_teacher, tiny_data100):
    proc = stage_process(fw, "train_student", "--pair", "res32x4_res8x4", "--teacher", mdistiller_teacher["legacy"],
                         "--teacher-model", "resnet8x4", "--data-dir", tiny_data100, "--name", "c100/from_pth", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "(pth checkpoint, CIFAR-100, weights only)" in proc.stdout


def test_mdistiller_teacher_file_same_top1_in_both_frameworks(mdistiller_teacher, teachers100, tiny_data100, tmp_path):
    results = {}
    for fw in FRAMEWORKS:
        for fmt, path in mdistiller_teacher.items():
            out = tmp_path / f"{fw}_{fmt}.json"
            proc = stage_process(fw, "test", "--ckpt", path, "--model", "resnet8x4", "--data-dir", tiny_data100,
                                 "--json", out)
            assert proc.returncode == 0, proc.stderr
            assert f"[{fw}] resnet8x4 (pth checkpoint) on 50 test images: top-1" in proc.stdout
            results[fw, fmt] = json.loads(out.read_text())
    # the repo checkpoint holding the same weights, for reference
    assert stage_process("torch", "test", "--ckpt", teachers100["torch"], "--data-dir", tiny_data100,
                         "--json", tmp_path / "ref.json").returncode == 0
    ref = json.loads((tmp_path / "ref.json").read_text())
    for (fw, fmt), m in results.items():
        assert m["dataset"] == "cifar100" and m["n"] == 50, (fw, fmt)
        assert m["top1"] == ref["top1"] and m["top5"] == ref["top5"], (fw, fmt)
        assert m["loss"] == pytest.approx(ref["loss"], rel=1e-4), (fw, fmt)


def test_jittor_reads_mdistiller_files_without_torch(mdistiller_teacher, tiny_data100, tmp_path):
    """jittor_/test.py on a .pth in a process where `import torch` fails: Jittor's own reader does the work."""
    for fmt, path in mdistiller_teacher.items():
        out = tmp_path / f"{fmt}.json"
        code = ("import runpy, sys; sys.modules['torch'] = None; "  # any `import torch` now raises ImportError
                f"sys.argv = ['test.py', '--ckpt', {path!r}, '--model', 'resnet8x4', '--data-dir', {tiny_data100!r}, "
                f"'--json', {str(out)!r}]; runpy.run_path('jittor_/test.py', run_name='__main__'); "
                "assert sys.modules['torch'] is None")
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(out.read_text())["n"] == 50


# ------------------------------------------------------------------ wrong files: clear errors
@pytest.mark.parametrize("engine", [th_engine, jt_engine], ids=FRAMEWORKS)
def test_wrong_files_are_clear_errors(engine, mdistiller_teacher, teachers100, tmp_path):
    load = lambda path, arch="resnet8x4", dataset="cifar100": engine.load_model(str(path), "cpu", arch, dataset)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a torch file")
    with pytest.raises(CheckpointError, match="is not a readable torch file"):
        load(garbage)
    torch.save({"epoch": 240, "accuracy": 71.0}, tmp_path / "no_model.pth")  # no "model", no weights
    with pytest.raises(CheckpointError, match="no weights found.*'model'"):
        load(tmp_path / "no_model.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        load(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not say which model.*--teacher-model or --pair"):
        load(mdistiller_teacher["zip"], arch=None)
    # wrong architecture: the first missing weight is named, and what was assumed
    with pytest.raises(CheckpointError, match=r"(?s)missing weight 'layer1\.1\.conv1\.weight'.*'resnet32x4' model for 100"):
        load(mdistiller_teacher["zip"], arch="resnet32x4")
    state = {k: v.clone() for k, v in tm.build_model("resnet8x4", num_classes=100).state_dict().items()}
    state["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save({"model": state}, tmp_path / "bad_shape.pth")
    with pytest.raises(CheckpointError, match=r"'layer2\.0\.conv1\.weight' has shape \(3, 3, 3, 3\)"):
        load(tmp_path / "bad_shape.pth")
    state = {k: v.clone() for k, v in tm.build_model("resnet8x4", num_classes=100).state_dict().items()}
    state["fc.weight"] = torch.zeros(3, 256)
    torch.save({"model": state}, tmp_path / "three_classes.pth")
    with pytest.raises(CheckpointError, match=r"classifier 'fc\.weight' \(the last linear layer\) has 3 outputs"):
        load(tmp_path / "three_classes.pth")
    # a repo checkpoint's architecture is checked against the one asked for
    with pytest.raises(CheckpointError, match="holds a 'resnet8x4' model, but this run builds 'vgg8'"):
        load(teachers100["torch"], arch="vgg8")


@pytest.mark.parametrize("engine", [th_engine, jt_engine], ids=FRAMEWORKS)
def test_class_mismatch_is_a_clear_error(engine, tmp_path):
    state10 = tm.build_model("resnet8x4", num_classes=10).state_dict()
    torch.save({"model": state10, "epoch": 240}, tmp_path / "cifar10_teacher.pth")
    with pytest.raises(CheckpointError, match=r"10 classes \(CIFAR-10\), but this run uses CIFAR-100 \(100"):
        engine.load_model(str(tmp_path / "cifar10_teacher.pth"), "cpu", "resnet8x4", "cifar100")
    save_checkpoint(str(tmp_path / "c10.ckpt"), {  # a checkpoint from before --dataset: CIFAR-10
        "model": tm.get_state(tm.build_model("resnet8x4")), "optimizer": {}, "epoch": 0, "best_top1": 0.0,
        "config": {"name": "x"}, "framework": "torch", "arch": "resnet8x4"})
    with pytest.raises(CheckpointError, match=r"10 classes \(CIFAR-10\), but this run uses CIFAR-100"):
        engine.load_model(str(tmp_path / "c10.ckpt"), "cpu", "resnet8x4", "cifar100")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_cifar10_teacher_for_a_cifar100_pair_fails_cleanly(fw, tiny_data100, tmp_path):
    torch.save({"model": tm.build_model("resnet8x4", num_classes=10).state_dict()}, tmp_path / "t10.pth")
    err = error_line(stage_process(fw, "train_student", "--pair", "res32x4_res8x4", "--teacher", tmp_path / "t10.pth",
                                "--teacher-model", "resnet8x4", "--data-dir", tiny_data100, *TINY))
    assert "10 classes (CIFAR-10), but this run uses CIFAR-100" in err
    err = error_line(stage_process(fw, "test", "--ckpt", tmp_path / "t10.pth", "--data-dir", tiny_data100))
    assert "does not say which model it holds" in err and "--model" in err


# ------------------------------------------------------------------ align.py and convert.py
def test_align_knows_every_pair():
    for name, (teacher, student, lr, beta) in EXPECTED_PAIRS.items():
        args = align.parse_args(["--pair", name])
        assert (args.stage, args.dataset, args.lr) == ("dkd", "cifar100", lr), name
        assert align.archs(args) == (student, teacher), name
        hp = align.stage_config(args)
        assert (hp.method, hp.beta, hp.temperature, hp.alpha, hp.ce_weight) == ("dkd", beta, 4.0, 1.0, 1.0), name
    args = align.parse_args(["--pair", "vgg13_vgg8", "--stage", "teacher", "--lr", "0.1", "--dataset", "cifar10"])
    assert align.archs(args) == ("vgg13", None) and (args.lr, args.dataset) == (0.1, "cifar10")


def test_align_runs_a_pair(tiny_data100, mdistiller_teacher):
    # the pair's student and DKD settings; its teacher swapped for the small ResNet8x4 (an mdistiller-format file)
    args = align.parse_args(["--pair", "res32x4_res8x4", "--teacher-model", "resnet8x4", "--teacher",
                             mdistiller_teacher["legacy"], "--steps", "2", "--batch-size", "32", "--train-size", "64",
                             "--data-dir", tiny_data100, "--no-float64"])
    assert align.archs(args) == ("resnet8x4", "resnet8x4")
    rows = align.run_parity(args)
    assert len(rows) == 2 and rows[0]["rel_loss"] < 1e-5 and rows[0]["logits"] < 1e-3


def test_align_existing_stage_on_cifar100(tiny_data100, tmp_path, mdistiller_teacher):
    args = align.parse_args(["--stage", "kd", "--dataset", "cifar100", "--steps", "2", "--batch-size", "16",
                             "--train-size", "64", "--data-dir", tiny_data100, "--no-float64"])
    rows = align.run_parity(args)
    assert rows[0]["rel_loss"] < 1e-5
    result = align.main(["--compare-ckpt", mdistiller_teacher["zip"], "--model", "resnet8x4", "--data-dir", tiny_data100])
    assert result["n"] == 50 and result["same_predictions"] >= 99.9


def test_convert_reads_a_cifar100_mdistiller_file(mdistiller_teacher, tmp_path):
    out = str(tmp_path / "t.ckpt")
    assert convert.convert(mdistiller_teacher["legacy"], out) == "resnet8x4"
    ckpt = load_checkpoint(out)
    assert ckpt["dataset"] == "cifar100" and ckpt["model"]["fc.weight"].shape == (100, 256)
