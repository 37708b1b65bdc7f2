"""The transformer track's stages end to end: a TinyBERT student killed with SIGKILL between its two stages resumes
bit for bit (its linear map, AdamW's moments and step, the cosine warm-up), and test.py reports DeiT's two heads."""
import json

import numpy as np
import pytest

from common.checkpoint import ckpt_path, load_checkpoint
from common.config import FRAMEWORKS
from stage_runner import stage_process
from test_resume import assert_same_run, EPOCHS, kill_and_resume, RUN

pytestmark = pytest.mark.slow  # stage runs


@pytest.fixture(scope="module")
def vit_teacher(tiny_data):
    """A ViT teacher (vit6x192) trained one epoch on the tiny data: the checkpoint serves both frameworks."""
    name = "v/vit_teacher"
    proc = stage_process("torch", "train_teacher", "--model", "vit6x192", "--data-dir", tiny_data, "--name", name,
                         "--train-size", 200, "--val-size", 50, "--batch-size", 25, "--epochs", 1)
    assert proc.returncode == 0, proc.stderr
    assert "vit6x192" in proc.stdout
    return ckpt_path(name, "torch")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_tinybert_killed_between_its_stages_resumes_exactly(fw, vit_teacher, tiny_data):
    """Stage 1 in epoch 1, the kill in epoch 2 (stage 2), then --resume: the same run as the uninterrupted one."""
    args = lambda name: ["--method", "tinybert", "--teacher", vit_teacher, "--data-dir", tiny_data, "--name", name,
                         *RUN, "--train-size", 100, "--tinybert-layer-epochs", 1, "--lr-warmup", 1]  # 4 steps an epoch
    assert stage_process(fw, "train_student", *args("v/tinybert_ref")).returncode == 0
    kill_and_resume(fw, "train_student", "v/tinybert_cut", args("v/tinybert_cut"))
    assert_same_run("v/tinybert_ref", "v/tinybert_cut", fw)
    ckpt = load_checkpoint(ckpt_path("v/tinybert_cut", fw))
    assert set(ckpt["fit_dense"]) == {"fit_dense.weight", "fit_dense.bias"}
    assert int(ckpt["optimizer"]["step"][0]) == EPOCHS * 4  # 100 images in batches of 25
    assert np.abs(ckpt["optimizer"]["exp_avg_sq.fit_dense.fit_dense.weight"]).sum() > 0
    history = ckpt["history"]
    assert history[0]["train/loss_att"] > 0 and history[0]["train/loss_rep"] > 0 and history[0]["train/loss_pred"] == 0
    assert history[1]["train/loss_att"] == 0 and history[1]["train/loss_pred"] > 0
    assert history[0]["lr"] < history[1]["lr"] > history[2]["lr"]  # one epoch of warm-up, then cosine


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_deit_trains_with_the_cnn_teacher_and_test_reports_both_heads(fw, teachers, tiny_data, tmp_path):
    name = "v/deit_hard"
    proc = stage_process(fw, "train_student", "--method", "deit", "--deit-type", "hard", "--teacher", teachers[fw],
                         "--data-dir", tiny_data, "--name", name, "--train-size", 100, "--val-size", 50,
                         "--batch-size", 25, "--epochs", 1)
    assert proc.returncode == 0, proc.stderr
    assert "deit2x96" in proc.stdout and "loss_deit" in json.dumps(load_checkpoint(ckpt_path(name, fw))["history"])
    out = tmp_path / "test.json"
    proc = stage_process(fw, "test", "--ckpt", ckpt_path(name, fw), "--data-dir", tiny_data, "--json", out)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())
    assert set(metrics["heads"]) == {"head", "head_dist"} and metrics["n"] == 70
    assert "the class token's head top-1" in proc.stdout and "the distillation token's head top-1" in proc.stdout
