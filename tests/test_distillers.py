"""The distillers in both frameworks: the method tables agree, resolve()'s precedence and refusals, --resume's
config check, R-Drop's loss against a float64 reference on the very passes the step ran, the teacher run once
and the student twice, FitNet's and AT's weighted terms on the right features, every method's modules (FitNet's
regressor, VID's) saved and restored exactly, test.py on a FitNet checkpoint, the help made from the table, and
one-line errors for settings that cannot work."""
import json
import os
import runpy
import tempfile

import numpy as np
import pytest
import torch

import jittor as jt
from common.batches import epoch_seed
from common.checkpoint import ckpt_path, load_checkpoint, make_checkpoint, save_checkpoint
from common.config import (build_config, check_resume, flag_name, FRAMEWORKS, OWN_PAIR, OWN_PAIR_WEIGHTS, resolve,
                           weight_fields)
from common.errors import CheckpointError, UserError
from common.results import read_result
from conftest import write_tiny_cifar
from stage_runner import one_line_error, ROOT, stage_process
from jittor_ import device as jd, distillers as jdist, engine as je, features as jf, models as jm
from test_feature_losses import at_ref
from torch_ import device as td, distillers as tdist, engine as te, features as tf, models as tm

METHODS = tdist.METHODS  # configs are framework-neutral records; test_method_tables_agree: jittor's is equal
FW = {"torch": (tm, te, tf, td, tdist, torch.from_numpy, lambda v: v.detach().numpy()),
      "jittor": (jm, je, jf, jd, jdist, jt.array, lambda v: v.numpy())}
# The data the setups below read (CRD's memory bank has a row per training image and draws negatives by label): a
# tiny CIFAR-10 of 300 training images, made at import, for the table-driven tests whose parameters need setups.
TINY = dict(data_dir=write_tiny_cifar(tempfile.mkdtemp(prefix="tiny_cifar_")), train_size=200, val_size=50)


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


# ---------------------------------------------------------------- the method tables and resolve()
def test_method_tables_agree():
    """jittor_/distillers.py mirrors torch_/distillers.py: same methods in the same order, same defaults and flags."""
    assert list(tdist.METHODS) == list(jdist.METHODS) == ["ce", "kd", "dkd", "fitnet", "at", "nst", "pkt", "rkd", "sp",
                                                          "kdsvd", "vid", "ofd", "reviewkd", "crd", "deit",
                                                          "tinybert"]
    for name, t in tdist.METHODS.items():
        j = jdist.METHODS[name]
        assert t.title == j.title and t.title and "\n" not in t.title, name
        assert t.defaults == j.defaults and list(t.defaults) == list(j.defaults), name
        assert (t.teacher, t.features) == (j.teacher, j.features) == (name != "ce", name not in ("ce", "kd", "dkd")), name
        assert callable(t.setup) and callable(j.setup) and t.setup.__name__ == j.setup.__name__, name
        assert t.terms.__name__ == j.terms.__name__ and t.weight.__name__ == j.weight.__name__, name
        assert t.flags == j.flags and list(t.flags) == list(j.flags), name


def test_the_framework_free_method_names_are_the_tables():
    """run_all.py and report.py name the methods without importing a framework: common.config.METHOD_NAMES."""
    from common.config import DEFAULT_METHODS, METHOD_NAMES
    assert list(METHOD_NAMES) == list(tdist.METHODS) == list(jdist.METHODS)
    assert set(DEFAULT_METHODS) <= set(METHOD_NAMES)


def test_every_method_setting_is_a_flag_of_the_stage():
    """Each field a method's defaults hold is a flag (made from Method.flags) and reaches its config field;
    a flag with no default in the table would never be read."""
    parse_flags = runpy.run_path(os.path.join(ROOT, "torch_", "train_student.py"), run_name="flags")["parse_flags"]
    for name, m in METHODS.items():
        own = set(m.defaults) - {"ce_weight", "warmup", "model", "teacher_model"}  # those: the stages' own flags
        assert set(m.flags) == own, name
        for key, (kind, _) in m.flags.items():
            value = [3, 1] if isinstance(kind, list) else kind(3)
            argv = ["--method", name, flag_name(key), *map(str, value if isinstance(value, list) else [value])]
            flags = parse_flags(argv)
            assert flags[key] == value and getattr(resolve("student", flags, METHODS), key) == value, (name, key)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_method_help_and_docstring_are_made_from_the_table(fw, capsys):
    """train_student.py's --method help and its docstring's method list name every method of the table with its
    title: a new method appears in both without an edit there."""
    stage = runpy.run_path(os.path.join(ROOT, f"{fw}_", "train_student.py"), run_name="flags")
    with pytest.raises(SystemExit):
        stage["parse_flags"](["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    doc = stage["__doc__"]
    assert "{methods}" not in doc
    for name, method in FW[fw][4].METHODS.items():
        assert f"{name}, {method.title}" in shown, name
        assert any(line.split(None, 1) == [name, method.title] for line in doc.splitlines()), name


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_method_setup_builds_the_modules_of_fitnet_vid_ofd_reviewkd_crd_and_tinybert_only(fw):
    models, _, _, devices, distillers, _, _ = FW[fw]
    device = devices.select_device("cpu")
    for name, method in distillers.METHODS.items():
        config = build_config("student", distillers.METHODS, method=name, **TINY)
        student, teacher = default_pair(models, config)
        extra = method.setup(config, student, teacher, device)
        if name == "fitnet":  # hint at feature 1: 32 channels at 8 px -> the teacher's 128 at 8 px, a 1x1 conv
            assert list(extra) == ["regressor"] and tuple(extra["regressor"].conv.weight.shape) == (128, 32, 1, 1)
        elif name == "vid":  # a regressor and a log-scale per feature: 32 -> 64, 32 -> 128, 64 -> 256 channels
            assert list(extra) == ["vid"] and [tuple(stage.log_scale.shape) for stage in extra["vid"].stages] == [
                (64,), (128,), (256,)]
        elif name == "ofd":  # a connector per stage: 32 -> 64, 32 -> 128, 64 -> 256 channels, 1x1
            assert list(extra) == ["ofd"] and [tuple(c[0].weight.shape) for c in extra["ofd"].connectors] == [
                (64, 32, 1, 1), (128, 32, 1, 1), (256, 64, 1, 1)]
        elif name == "reviewkd":  # an ABF per stage and for the pooled feature, deepest first: to 1024, 256, 128, 64
            assert list(extra) == ["reviewkd"] and [abf.conv2[0].weight.shape[0] for abf in extra["reviewkd"].abfs] == [
                1024, 256, 128, 64]
        elif name == "crd":  # two embeddings (64 and 1024 wide pooled features to 128), a memory row per image
            assert list(extra) == ["crd"] and tuple(extra["crd"].memory_v1.shape) == (200, 128)
            assert tuple(extra["crd"].embed_t.linear.weight.shape) == (128, 1024)
        elif name == "tinybert":  # one linear map from the ViT student's width to the ViT teacher's
            assert list(extra) == ["fit_dense"] and tuple(extra["fit_dense"].fit_dense.weight.shape) == (192, 96)
        else:
            assert extra == {}, name


def default_pair(models, config):
    """The student and teacher a method's config names (its own default models: DeiT's and TinyBERT's ViTs)."""
    return models.build_model(config.model, 0), models.build_model(config.teacher_model or "cifar10quick", 1)


def methods_with_modules(own_pair=False):
    """The methods whose setup returns modules trained with the student (FitNet's regressor, VID's, TinyBERT's linear
    map), found by running every setup of the table on its default models (torch's; test_method_tables_agree:
    Jittor's are the same). own_pair: only the methods that train the repo's own CNN pair by default."""
    configs = {name: build_config("student", METHODS, method=name, **TINY) for name in METHODS}
    return [name for name, method in METHODS.items() if not (own_pair and configs[name].model != OWN_PAIR["model"])
            and method.setup(configs[name], *default_pair(tm, configs[name]), td.select_device("cpu"))]


def test_the_methods_with_modules_are_found():
    assert methods_with_modules() == ["fitnet", "vid", "ofd", "reviewkd", "crd", "tinybert"]
    assert methods_with_modules(own_pair=True) == ["fitnet", "vid", "ofd", "reviewkd", "crd"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", methods_with_modules())
def test_modules_trained_with_the_student_are_saved_and_restored_exactly(fw, method, tmp_path):
    """Every method whose setup returns modules (driven by the table, so a new one is covered): 2 engine steps, the
    engine's checkpoint (engine.save_run), then a fresh student and a fresh setup restored by engine.resume (what
    --resume runs): the modules' weights, the student's and every momentum buffer equal the trained ones bit for bit,
    and the next step gives the same loss."""
    models, engine, _, devices, distillers, array, _ = FW[fw]
    device = devices.select_device("cpu")
    config = build_config("student", distillers.METHODS, method=method, name=f"modules_{method}", **TINY)
    teacher = default_pair(models, config)[1]
    teacher.eval()

    def fresh():
        student_model = engine.build(config, device)
        extra = distillers.METHODS[method].setup(config, student_model, teacher, device)
        return student_model, extra, engine.make_optimizer(student_model, config, extra)

    def step(run, seed):
        student_model, extra, optimizer = run
        student_model.train()
        for module in extra.values():
            module.train()
        x, y = batch(8, seed)
        engine.set_seed(seed)  # the dropout masks (the ViTs')
        return float(engine.train_step(student_model, teacher, optimizer, array(x), array(y), config, 1.0,
                                       extra, np.arange(8) + 8 * seed)[0].item())  # rows of the split (CRD's)

    trained = fresh()
    for seed in (0, 1):
        step(trained, seed)
    path = str(tmp_path / "run.ckpt")
    engine.save_run(path, config, trained[0], trained[2], trained[1], 0, 12.5, [], "teacher-digest")
    ckpt = load_checkpoint(path)
    assert set(trained[1]) <= set(ckpt) and not any(k.startswith(tuple(trained[1])) for k in ckpt["model"])
    restored = fresh()
    before = {key: models.get_state(module) for key, module in restored[1].items()}
    assert any(not np.array_equal(before[key][k], v) for key, module in trained[1].items()
               for k, v in models.get_state(module).items())  # the steps moved the modules: the test can tell
    assert engine.resume(path, config, restored[0], restored[2], restored[1], "teacher-digest") == (1, 12.5, [], [])
    pairs = [(trained[0], restored[0])] + [(trained[1][key], restored[1][key]) for key in trained[1]]
    for a, b in pairs:
        state_a, state_b = models.get_state(a), models.get_state(b)
        assert list(state_a) == list(state_b) and all(np.array_equal(state_a[k], state_b[k]) for k in state_a)
    momentum_a = engine.get_optimizer_state(trained[0], trained[2], trained[1])
    momentum_b = engine.get_optimizer_state(restored[0], restored[2], restored[1])
    assert set(momentum_a) == set(momentum_b) and all(np.array_equal(momentum_a[k], momentum_b[k]) for k in momentum_a)
    assert any(f"{key}." in k for key in trained[1] for k in momentum_a)  # the modules' own buffers too (AdamW's moments)
    assert step(restored, 2) == pytest.approx(step(trained, 2), rel=1e-6)


def test_unknown_or_missing_method_is_a_one_line_user_error():
    with pytest.raises(UserError) as e:
        resolve("student", {"method": "mgd"}, METHODS)
    assert "unknown method 'mgd'" in str(e.value) and "ce, kd, dkd, fitnet, at, nst, pkt, rkd, sp, kdsvd, vid, ofd" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"^the following arguments are required: --method \(or --pair\)$"):
        resolve("student", {}, METHODS)
    with pytest.raises(UserError, match="cross-entropy only"):
        resolve("teacher", {"method": "kd"}, METHODS)


@pytest.mark.parametrize("method, flags, flag, owner", [
    ("kd", {"at_p": 3.0}, "--at-p", "at"),
    ("ce", {"temperature": 2.0}, "--temperature", "kd / dkd / tinybert"),
    ("dkd", {"hint_layer": 1}, "--hint-layer", "fitnet"),
])
def test_a_setting_of_another_method_is_refused(method, flags, flag, owner):
    with pytest.raises(UserError) as e:
        resolve("student", {"method": method, **flags}, METHODS)
    assert str(e.value) == f"{flag} is a setting of --method {owner}, not of --method {method}"


def student(**flags):
    return build_config("student", METHODS, **flags)


def test_precedence_explicit_pair_preset_method_stage():
    """Each level beats the next, with values that only that level gives (common.config PRESETS, PAIRS, METHODS)."""
    # stage default (warm-up 10) < method default (FitNet: 0) < preset (quick: 3) < explicit
    assert student(method="kd").warmup == 10
    assert student(method="fitnet").warmup == 0
    assert student(method="fitnet", preset="quick").warmup == 3
    assert student(method="fitnet", preset="quick", warmup=5).warmup == 5
    # the method's CE weight over the stage's (none) and the other methods': kd 0.1, the others 1
    assert [student(method=m).ce_weight for m in ("ce", "kd", "dkd", "fitnet", "at")] == [1.0, 0.1, 1.0, 1.0, 1.0]
    assert student(method="kd", ce_weight=0.5).ce_weight == 0.5
    # the preset beats the stage default: quick trains 30 epochs on 250 images in batches of 32
    quick = student(method="kd", preset="quick")
    assert (quick.epochs, quick.train_size, quick.batch_size, quick.milestones) == (30, 250, 32, [24])
    plain = student(method="kd")
    assert (plain.epochs, plain.train_size, plain.batch_size, plain.lr) == (40, 5000, 128, 0.01)
    # the pair beats the preset (and the method): 240 epochs, batch 64, lr 0.05, warm-up 20; explicit beats the pair
    run = student(pair="res32x4_res8x4", preset="quick", epochs=2)
    assert (run.epochs, run.lr, run.batch_size, run.warmup, run.train_size, run.milestones) == (
        2, 0.05, 64, 20, 50000, [150, 180, 210])
    assert (run.method, run.model, run.teacher_model, run.dataset, run.beta) == (
        "dkd", "resnet8x4", "resnet32x4", "cifar100", 8.0)
    assert student(pair="res32x4_res8x4").warmup == 20  # the pair's DKD warm-up over the stage's 10
    assert student(pair="res32x4_res8x4", method="fitnet").warmup == 0  # a DKD pair sets no FitNet weight
    assert student(pair="res56_res20", beta=3.0).beta == 3.0  # explicit over the pair's 2
    # the teacher stage has its own defaults and preset
    assert build_config("teacher", METHODS).epochs == 30
    assert build_config("teacher", METHODS, preset="quick").epochs == 2


def test_a_pair_gives_its_own_methods_weights_only():
    """The pairs are DKD's configs: with --method kd a pair still sets the data and schedule, but not DKD's
    CE weight or warm-up (KD keeps its own 0.1 and the stage's warm-up)."""
    kd = build_config("student", tdist.METHODS, pair="res32x4_res8x4", method="kd")
    assert (kd.ce_weight, kd.warmup, kd.lr, kd.dataset, kd.model) == (0.1, 10, 0.05, "cifar100", "resnet8x4")
    dkd = build_config("student", tdist.METHODS, pair="res32x4_res8x4")
    assert (dkd.method, dkd.ce_weight, dkd.warmup, dkd.beta) == ("dkd", 1.0, 20, 8.0)


def test_per_model_defaults_apply_only_when_no_level_sets_them():
    assert student(method="dkd").beta == 1.0 and student(method="dkd", model="resnet8x4").beta == 8.0
    assert student(pair="res56_res20").beta == 2.0  # the pair's beta, not resnet20's default 8
    assert student(method="fitnet").hint_layer == 1 and student(method="fitnet", model="resnet8x4").hint_layer == 2
    assert student(method="fitnet", hint_layer=0).hint_layer == 0


# ---------------------------------------------------------------- --resume's config check
def saved(config, epoch=0):
    """A checkpoint dict as a stage saves it, as far as check_resume reads it."""
    return {"config": dict(vars(config)), "epoch": epoch}


@pytest.mark.parametrize("flags, flag", [
    ({"sync_bn": False}, "--sync-bn"),  # not in the old RESUME_KEYS allow-list: silently mixed before
    ({"ce_weight": 0.5}, "--ce-weight"),
    ({"dropout": 0.2}, "--dropout"),
    ({"temperature": 2.0}, "--temperature"),
    ({"mdistiller_weights": True}, "--no-mdistiller-weights"),  # trained with the own pair's weights
    ({"preset": "quick"}, "--batch-size"),  # --preset itself is free; what it changes is not (the first, sorted)
])
def test_resume_refuses_a_changed_setting_naming_its_flag(flags, flag):
    ckpt = saved(student(method="kd"))
    with pytest.raises(CheckpointError) as e:
        check_resume(ckpt, student(method="kd", **flags), "run.ckpt")
    assert f"was trained with {flag}" in str(e.value) and "\n" not in str(e.value)


def test_resume_accepts_where_and_how_long():
    ckpt = saved(student(method="kd"), epoch=4)
    check_resume(ckpt, student(method="kd", epochs=50, name="other", data_dir="/elsewhere", device="cpu"), "run.ckpt")
    with pytest.raises(CheckpointError, match="has trained 5 epochs already, more than --epochs 3"):
        check_resume(ckpt, student(method="kd", epochs=3), "run.ckpt")


def test_resume_refuses_a_setting_this_version_lacks_or_a_checkpoint_lacks():
    config = student(method="kd")
    ckpt = saved(config)
    ckpt["config"]["kd_ce_weight"] = 0.1  # the flag before --ce-weight
    with pytest.raises(CheckpointError, match=r"a setting this version does not have \(kd_ce_weight = 0.1\)"):
        check_resume(ckpt, config, "old.ckpt")
    ckpt = saved(config)
    del ckpt["config"]["sync_bn"]  # a checkpoint from before --sync-bn
    with pytest.raises(CheckpointError, match="a version before --sync-bn existed"):
        check_resume(ckpt, config, "old.ckpt")


# ---------------------------------------------------------------- the steps
def with_numpy_dropout(model, fw, seed):
    """The model's dropout drawing its masks from a numpy stream (align.py's), so the test can replay them."""
    import align
    model.dropout = (align.SharedDropoutTorch if fw == "torch" else align.SharedDropoutJittor)(0.3, np.random.default_rng(seed))
    return model


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_rdrop_teacher_step_is_mean_ce_plus_alpha_symmetric_kl_of_its_two_passes(fw):
    models, engine, _, _, _, array, numpy = FW[fw]
    x, y = batch()
    config = build_config("teacher", METHODS, rdrop=5.0)
    model = with_numpy_dropout(models.build_model("cifar10quick", 3), fw, 0)
    model.train()
    loss, logits, terms = engine.train_step(model, None, engine.make_optimizer(model, config), array(x), array(y),
                                            config)
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
    models, engine, _, _, _, array, numpy = FW[fw]
    x, y = batch()
    config = build_config("teacher", METHODS, rdrop=5.0)
    results = []
    for _ in range(2):
        model = models.set_dropout(models.build_model("cifar10quick", 3), 0.3)
        model.train()
        engine.set_seed(epoch_seed(3, 0))
        loss, logits, terms = engine.train_step(model, None, engine.make_optimizer(model, config), array(x), array(y),
                                                config)
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
    models, engine, _, _, _, array, _ = FW[fw]
    x, y = batch()
    teacher, student_model = models.build_model("cifar10quick", 1), models.build_model("cifar10quick", 2)
    teacher.eval()
    student_model.train()
    teacher_calls, student_calls = counting(teacher), counting(student_model)
    config = student(method="kd", rdrop=1.0)
    loss, _, terms = engine.train_step(student_model, teacher, engine.make_optimizer(student_model, config),
                                       array(x), array(y), config)
    assert len(teacher_calls) == 1 and len(student_calls) == 2
    assert set(terms) == {"ce", "kd", "rdrop"} and float(terms["rdrop"].item()) > 0


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["fitnet", "at"])
def test_fitnet_and_at_steps_weigh_the_right_features(fw, method):
    """The step's terms at distillation weight 0.5 (a warm-up epoch): FitNet 100 x MSE(regressor(student feature
    1), teacher feature 1) + CE; AT 1000 x attention loss over the three stages + CE; both against float64 numpy
    on the features of the same forward (cifar10simple has no BN or dropout, the teacher is in eval mode)."""
    models, engine, features, _, _, array, numpy = FW[fw]
    x, y = batch(8)
    teacher, student_model = models.build_model("cifar10quick", 1), models.build_model("cifar10simple", 2)
    teacher.eval()
    student_model.train()
    config = student(method=method, mdistiller_weights=True)  # 100 and 1000 (the own pair's: the next test)
    out_s, out_t = features.forward_features(student_model, array(x)), features.forward_features(teacher, array(x))
    feats_s, feats_t = [numpy(f) for f in out_s[1]["feats"]], [numpy(f) for f in out_t[1]["feats"]]
    extra = {}
    if method == "fitnet":
        assert config.hint_layer == 1  # the second of the three stages
        extra = {"regressor": models.build_regressor((32, 8, 8), (128, 8, 8), 0)}
        extra["regressor"].train()
        hint = numpy(extra["regressor"](out_s[1]["feats"][1])).astype(np.float64)  # before the step moves it
        expected = 0.5 * 100 * ((hint - feats_t[1]) ** 2).mean()
    else:
        assert config.at_stages is None  # every stage of a model without a stem entry: 0, 1, 2
        expected = 0.5 * 1000 * at_ref(feats_s, feats_t, 2)
    ce = ce64(numpy(out_s[0]), y)
    loss, _, terms = engine.train_step(student_model, teacher, engine.make_optimizer(student_model, config, extra),
                                       array(x), array(y), config, 0.5, extra)
    assert set(terms) == {"ce", method}
    assert abs(float(terms[method].item()) - expected) < 1e-4 * expected
    assert abs(float(terms["ce"].item()) - ce) < 1e-5 * ce
    assert float(loss.item()) == pytest.approx(ce + expected, rel=1e-5)


def test_the_own_pair_takes_its_weights_and_mdistillers_are_one_flag_away():
    """OWN_PAIR_WEIGHTS (weights.py's rule) on cifar10quick -> cifar10simple, with or without the quick preset;
    mdistiller's with --mdistiller-weights, on any other pair, and for the methods the rule left alone; an explicit
    weight wins over both."""
    assert OWN_PAIR_WEIGHTS and set(OWN_PAIR_WEIGHTS) < {name for name, m in METHODS.items() if m.teacher}
    for method, weights in OWN_PAIR_WEIGHTS.items():
        assert set(weights) == set(weight_fields(METHODS, method)), method  # all of a method's weights, together
        own, quick = student(method=method), student(method=method, preset="quick")
        mdistiller = [student(method=method, mdistiller_weights=True),
                      student(method=method, model="resnet8x4", teacher_model="resnet32x4"),
                      student(method=method, teacher_model="resnet8x4"),  # another teacher for the own student
                      student(method=method, pair="res32x4_res8x4")]
        for key, value in weights.items():
            assert getattr(own, key) == getattr(quick, key) == value != METHODS[method].defaults[key], (method, key)
            assert all(getattr(c, key) == METHODS[method].defaults[key] for c in mdistiller), (method, key)
            assert getattr(student(method=method, **{key: 7.0}), key) == 7.0
    for method in {name for name, m in METHODS.items() if m.teacher} - set(OWN_PAIR_WEIGHTS):
        assert vars(student(method=method)) == dict(vars(student(method=method, mdistiller_weights=True)),
                                                   mdistiller_weights=False), method


def test_weight_fields_are_the_distillation_weights():
    assert weight_fields(METHODS, "kd") == ["kd_weight"] and weight_fields(METHODS, "dkd") == ["alpha", "beta"]
    assert weight_fields(METHODS, "rkd") == ["rkd_distance_weight", "rkd_angle_weight"]
    assert weight_fields(METHODS, "ce") == [] and weight_fields(METHODS, "vid") == ["vid_weight"]


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A seeded CIFAR10Quick checkpoint (untrained): enough to start a student."""
    path = str(tmp_path_factory.mktemp("t") / "teacher.ckpt")
    save_checkpoint(path, make_checkpoint(tm.get_state(tm.build_model("cifar10quick", 5)),
                                          vars(build_config("teacher", METHODS)), "torch", "cifar10quick", "cifar10"))
    return path


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("flags,message", [
    (["--method", "kd", "--rdrop", 1], "cifar10simple has no dropout"),
    (["--method", "ce", "--dropout", 0.3], "has no dropout layer"),
    (["--method", "fitnet", "--hint-layer", 3], "--hint-layer 3: cifar10simple and its teacher have features 0 to 2"),
    (["--method", "at", "--at-stages", 0, 5], "--at-stages: 5 is not a feature"),
])
def test_impossible_settings_are_one_line_errors(fw, flags, message, teacher_ckpt, tiny_data):
    line = one_line_error(fw, "train_student", *flags, "--teacher", teacher_ckpt, "--data-dir", tiny_data,
                          "--epochs", 1, "--name", "errors")
    assert message in line


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_teacher_rdrop_without_dropout_is_a_one_line_error(fw, tiny_data):
    line = one_line_error(fw, "train_teacher", "--model", "resnet8x4", "--rdrop", 5, "--data-dir", tiny_data,
                          "--epochs", 1, "--name", "errors_t")
    assert "--rdrop: resnet8x4 has no dropout" in line


@pytest.mark.slow  # runs stages
@pytest.mark.slow  # a stage trains and tests (in this process)
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fitnet_checkpoint_holds_the_regressor_and_test_reads_the_student(fw, teacher_ckpt, tiny_data, tmp_path):
    name = f"fitnet_ckpt_{fw}"
    assert stage_process(fw, "train_student", "--method", "fitnet", "--teacher", teacher_ckpt, "--data-dir", tiny_data,
                         "--epochs", 1, "--train-size", 64, "--val-size", 20, "--batch-size", 32, "--lr", 0.002,
                         "--name", name).returncode == 0
    ckpt = load_checkpoint(ckpt_path(name, fw))
    assert ckpt["regressor"]["conv.weight"].shape == (128, 32, 1, 1)  # 1x1 conv, 32@8 -> 128@8
    assert not any(k.startswith("regressor") for k in ckpt["model"])
    assert ckpt["config"]["method"] == "fitnet" and ckpt["config"]["hint_layer"] == 1
    record = read_result(name, fw)  # the run's one result record
    assert record["finished"] and record["epochs"] == 1 and record["config"]["method"] == "fitnet"
    for reader in FRAMEWORKS:  # the checkpoint is shared; the student alone is evaluated
        out = tmp_path / f"{reader}.json"
        assert stage_process(reader, "test", "--ckpt", ckpt_path(name, fw), "--data-dir", tiny_data, "--json", out).returncode == 0
        result = json.loads(out.read_text())
        assert result["n"] == 70 and result["arch"] == "cifar10simple"
        # and into the reader's record of the run: "test" for its own framework's checkpoint, else "test_from"
        record = read_result(name, reader)
        tested = record["test"] if reader == fw else record["test_from"][fw]
        assert tested["n"] == 70 and tested["top1"] == result["top1"]


def test_a_diverged_loss_names_the_methods_own_weights():
    """The divergence line says what to lower: --lr, and the weights of the method that ran (its table entry)."""
    from common.errors import DivergedError
    from common.logs import check_finite
    with pytest.raises(DivergedError) as e:
        check_finite(float("nan"), "student-nst", 4, 5, METHODS["nst"].flags)
    assert str(e.value).endswith("lower --lr (or the distillation weight: --nst-weight)") and e.value.epoch == 5
    with pytest.raises(DivergedError) as e:
        check_finite(float("inf"), "student-dkd", 0, 0, METHODS["dkd"].flags)
    assert "--alpha, --beta)" in str(e.value) and "--temperature" not in str(e.value)
    with pytest.raises(DivergedError) as e:
        check_finite(float("nan"), "teacher", 0, 0, METHODS["ce"].flags)
    assert str(e.value).endswith("training diverged: lower --lr")
    check_finite(1.5, "teacher", 0, 0)  # finite: nothing happens
