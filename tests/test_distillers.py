"""The steps of issue 14's distillers in both frameworks: R-Drop's loss against a float64 reference on the
very passes the step ran, the teacher run once and the student twice, FitNet's and AT's weighted terms on the
right features, test.py on a FitNet checkpoint, and one-line errors for settings that cannot work."""
import argparse
import json

import numpy as np
import pytest
import torch

import jittor as jt
from common.batches import epoch_seed
from common.checkpoint import ckpt_path, load_checkpoint, save_checkpoint
from common.config import FRAMEWORKS, STUDENT_DEFAULTS, TEACHER_DEFAULTS
from conftest import error_line, run_script
from jittor_ import models as jm, train_student as js, train_teacher as jtt
from test_feature_losses import at_ref
from torch_ import models as tm, train_student as ts, train_teacher as tt

STAGES = {"torch": (tm, tt, ts, torch.from_numpy, lambda v: v.detach().numpy()),
          "jittor": (jm, jtt, js, jt.array, lambda v: v.numpy())}


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def log_softmax64(z):
    z = np.asarray(z, np.float64)
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)


def ce64(z, y):
    return -log_softmax64(z)[np.arange(len(y)), y].mean()


def sym_kl64(a, b):
    la, lb = log_softmax64(a), log_softmax64(b)
    return (0.5 * ((np.exp(la) * (la - lb)).sum(1) + (np.exp(lb) * (lb - la)).sum(1))).mean()


def args_for(method="ce", **kw):
    """The stages' hyperparameters for one method (the original pair's feature choices)."""
    d = dict(STUDENT_DEFAULTS if method != "teacher" else TEACHER_DEFAULTS, method=method, beta=1.0, hint_layer=1,
             at_stages=[0, 1, 2])
    d.update(kw)
    return argparse.Namespace(**d)


def with_numpy_dropout(model, fw, seed):
    """The model's dropout drawing its masks from a numpy stream (align.py's), so the test can replay them."""
    import align
    model.dropout = (align.SharedDropoutTorch if fw == "torch" else align.SharedDropoutJittor)(0.3, np.random.default_rng(seed))
    return model


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_rdrop_teacher_step_is_mean_ce_plus_alpha_symmetric_kl_of_its_two_passes(fw):
    models, teacher_stage, _, array, numpy = STAGES[fw]
    x, y = batch()
    model = with_numpy_dropout(models.build_model("cifar10quick", 3), fw, 0)
    model.train()
    loss, logits, terms = teacher_stage.train_step(model, teacher_stage.make_optimizer(model, args_for("teacher")),
                                                   array(x), array(y), 5.0)
    # the same two passes again, by hand: same weights, the same two masks
    again = with_numpy_dropout(models.build_model("cifar10quick", 3), fw, 0)
    again.train()
    a, b = numpy(again(array(x))), numpy(again(array(x)))
    assert np.abs(a - b).max() > 1e-3  # two masks, two predictions
    np.testing.assert_allclose(numpy(logits), a, rtol=1e-5, atol=1e-5)  # the step returns the first pass
    expected = 0.5 * (ce64(a, y) + ce64(b, y)) + 5.0 * sym_kl64(a, b)
    assert abs(float(loss.item()) - expected) < 1e-5 * expected
    assert abs(float(terms["rdrop"].item()) - 5.0 * sym_kl64(a, b)) < 1e-4 * 5.0 * sym_kl64(a, b)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_rdrop_passes_draw_different_masks_from_the_framework_rng(fw):
    """With the model's own dropout, the two passes of a step differ, and the step is a function of the seed."""
    models, teacher_stage, _, array, numpy = STAGES[fw]
    x, y = batch()
    results = []
    for _ in range(2):
        model = models.set_dropout(models.build_model("cifar10quick", 3), 0.3)
        model.train()
        teacher_stage.set_seed(epoch_seed(3, 0))
        loss, logits, terms = teacher_stage.train_step(model, teacher_stage.make_optimizer(model, args_for("teacher")),
                                                       array(x), array(y), 5.0)
        results.append((float(loss.item()), float(terms["rdrop"].item()), numpy(logits)))
    assert results[0][1] > 1e-4  # two masks: the KL is not 0
    assert results[0][0] == results[1][0] and np.array_equal(results[0][2], results[1][2])


def counting(model):
    """Count the forward calls of a model (a forward hook: torch, or Jittor's single hook slot)."""
    calls = []
    hook = lambda *_: calls.append(1)
    model.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_student_rdrop_runs_the_teacher_once_and_the_student_twice(fw):
    models, teacher_stage, student_stage, array, _ = STAGES[fw]
    x, y = batch()
    teacher, student = models.build_model("cifar10quick", 1), models.build_model("cifar10quick", 2)
    teacher.eval()
    student.train()
    teacher_calls, student_calls = counting(teacher), counting(student)
    hp = args_for("kd", rdrop=1.0)
    loss, _, terms = student_stage.train_step(student, teacher, teacher_stage.make_optimizer(student, hp),
                                              array(x), array(y), 1.0, hp)
    assert len(teacher_calls) == 1 and len(student_calls) == 2
    assert set(terms) == {"ce", "kd", "rdrop"} and float(terms["rdrop"].item()) > 0


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fitnet_and_at_terms_weigh_the_right_features(fw):
    """FitNet: 100 x MSE(regressor(student feature 1), teacher feature 1) + CE; AT: 1000 x attention loss over
    the three stages + CE; both checked against float64 numpy on the features the forward gave."""
    models, _, student_stage, array, numpy = STAGES[fw]
    x, y = batch(8)
    teacher, student = models.build_model("cifar10quick", 1), models.build_model("cifar10simple", 2)
    teacher.eval()
    student.train()
    out_s, out_t = models.forward_features(student, array(x)), models.forward_features(teacher, array(x))
    regressor = models.build_regressor((32, 8, 8), (128, 8, 8), 0)
    regressor.train()
    ce = ce64(numpy(out_s[0]), y)
    fitnet = student_stage.loss_terms("fitnet", out_s, out_t, array(y), 1.0, args_for("fitnet"), regressor)
    hint = numpy(regressor(out_s[1]["feats"][1])).astype(np.float64)
    mse = ((hint - numpy(out_t[1]["feats"][1])) ** 2).mean()
    assert abs(float(fitnet["fitnet"].item()) - 100 * mse) < 1e-5 * 100 * mse
    assert abs(float(fitnet["ce"].item()) - ce) < 1e-5 * ce
    at = student_stage.loss_terms("at", out_s, out_t, array(y), 0.5, args_for("at"))
    expected = 0.5 * 1000 * at_ref([numpy(f) for f in out_s[1]["feats"]], [numpy(f) for f in out_t[1]["feats"]], 2)
    assert abs(float(at["at"].item()) - expected) < 1e-4 * expected


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A seeded CIFAR10Quick checkpoint (untrained): enough to start a student."""
    path = str(tmp_path_factory.mktemp("t") / "teacher.ckpt")
    save_checkpoint(path, {"model": tm.get_state(tm.build_model("cifar10quick", 5)), "optimizer": {}, "epoch": 0,
                           "best_top1": 0.0, "config": {}, "framework": "torch", "arch": "cifar10quick"})
    return path


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("flags,message", [
    (["--method", "kd", "--rdrop", 1], "cifar10simple has no dropout"),
    (["--method", "ce", "--dropout", 0.3], "has no dropout layer"),
    (["--method", "fitnet", "--hint-layer", 3], "--hint-layer 3: cifar10simple and its teacher have features 0 to 2"),
    (["--method", "at", "--at-stages", 0, 5], "--at-stages: 5 is not a feature"),
])
def test_impossible_settings_are_one_line_errors(fw, flags, message, teacher_ckpt, tiny_data):
    proc = run_script(fw, "train_student", *flags, "--teacher", teacher_ckpt, "--data-dir", tiny_data,
                      "--epochs", 1, "--name", "errors", check=False)
    assert message in error_line(proc)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_rdrop_without_dropout_is_a_one_line_error(fw, tiny_data):
    proc = run_script(fw, "train_teacher", "--model", "resnet8x4", "--rdrop", 5, "--data-dir", tiny_data,
                      "--epochs", 1, "--name", "errors_t", check=False)
    assert "--rdrop: resnet8x4 has no dropout" in error_line(proc)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fitnet_checkpoint_holds_the_regressor_and_test_reads_the_student(fw, teacher_ckpt, tiny_data, tmp_path):
    name = f"fitnet_ckpt_{fw}"
    run_script(fw, "train_student", "--method", "fitnet", "--teacher", teacher_ckpt, "--data-dir", tiny_data,
               "--epochs", 1, "--train-size", 64, "--val-size", 20, "--batch-size", 32, "--lr", 0.002, "--name", name)
    ckpt = load_checkpoint(ckpt_path(name, fw))
    assert ckpt["regressor"]["conv.weight"].shape == (128, 32, 1, 1)  # 1x1 conv, 32@8 -> 128@8
    assert not any(k.startswith("regressor") for k in ckpt["model"])
    for reader in FRAMEWORKS:  # the checkpoint is shared; the student alone is evaluated
        out = tmp_path / f"{reader}.json"
        run_script(reader, "test", "--ckpt", ckpt_path(name, fw), "--data-dir", tiny_data, "--json", out)
        result = json.loads(out.read_text())
        assert result["n"] == 70 and result["arch"] == "cifar10simple"
