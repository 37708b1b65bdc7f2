"""The transformer track: the ViT (forward, features, init), AdamW with DeiT's groups and its cosine schedule, DeiT's
and TinyBERT's losses, in both frameworks against float64 numpy references written here from the definitions
(the ViT's pre-norm blocks, DeiT's losses.py, TinyBERT's task_distill.py), and the one-line refusals."""
import argparse
import math
import os

import numpy as np
import pytest
import torch

import jittor as jt
from common.config import build_config, default_name, FRAMEWORKS, resolve, VIT_STUDENTS, VIT_TRAINING
from common.errors import UserError
from common.schedules import cosine_lr_at, MIN_LR, WARMUP_LR
from common.weights import no_weight_decay
from jittor_ import device as jd, distillers as jdist, engine as je, features as jf, models as jm
from torch_ import device as td, distillers as tdist, engine as te, features as tf, models as tm

FW = {"torch": (tm, te, tf, td, tdist, torch.from_numpy, lambda v: v.detach().numpy()),
      "jittor": (jm, je, jf, jd, jdist, jt.array, lambda v: v.numpy())}


def batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


# ------------------------------------------------------------------ float64 references
def layer_norm64(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased, as both frameworks' LayerNorm
    return (x - mean) / np.sqrt(var + eps) * w + b


def log_softmax64(z, axis=-1):
    z = np.asarray(z, np.float64)
    return z - np.logaddexp.reduce(z, axis=axis, keepdims=True)


def gelu64(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))  # the exact (erf) GELU


def vit_forward64(state, x, depth, heads, eps=1e-6):
    """A pre-norm ViT written from the definition: (logits in eval mode, hidden states, pre-softmax scores)."""
    w = {k: np.asarray(v, np.float64) for k, v in state.items()}
    n, dim = len(x), w["cls_token"].shape[-1]
    patches = np.asarray(x, np.float64).reshape(n, 3, 8, 4, 8, 4).transpose(0, 2, 4, 1, 3, 5).reshape(n, 64, 48)
    h = patches @ w["patch_embed.weight"].reshape(dim, -1).T + w["patch_embed.bias"]
    tokens = [np.broadcast_to(w[k], (n, 1, dim)) for k in ("cls_token", "dist_token") if k in w]
    h = np.concatenate(tokens + [h], axis=1) + w["pos_embed"]
    states, scores, d = [h], [], dim // heads
    for i in range(depth):
        p = f"blocks.{i}."
        a = layer_norm64(h, w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        q, k, v = (a @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]).reshape(
            n, -1, 3, heads, d).transpose(2, 0, 3, 1, 4)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
        scores.append(s)
        o = (np.exp(log_softmax64(s)) @ v).transpose(0, 2, 1, 3).reshape(n, -1, dim)
        h = h + o @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        m = layer_norm64(h, w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        m = gelu64(m @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        h = h + m @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        states.append(h)
    out = layer_norm64(h, w["norm.weight"], w["norm.bias"], eps)
    logits = out[:, 0] @ w["head.weight"].T + w["head.bias"]
    if "head_dist.weight" in w:  # DeiT's evaluation: the mean of the two heads
        logits = (logits + out[:, 1] @ w["head_dist.weight"].T + w["head_dist.bias"]) / 2
    return logits, states, scores


def deit_ref(s, t, kind, tau):
    if kind == "hard":
        return -log_softmax64(s)[np.arange(len(s)), np.argmax(t, 1)].mean()
    lt, ls = log_softmax64(np.asarray(t) / tau), log_softmax64(np.asarray(s) / tau)
    return (np.exp(lt) * (lt - ls)).sum() * tau * tau / s.size  # summed, / (batch x classes)


def unmask64(s):
    s = np.asarray(s, np.float64)
    return np.where(s <= -1e2, 0.0, s)


def tinybert_att_ref(att_s, att_t):
    return sum(((unmask64(s) - unmask64(t)) ** 2).mean() for s, t in zip(att_s, att_t))


def soft_ce_ref(s, t):
    return (-np.exp(log_softmax64(t)) * log_softmax64(s)).mean()  # over batch and classes


def adamw_ref(p, g, m, v, step, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """torch's AdamW (decoupled decay, bias-corrected), float64: (p, m, v) after one step."""
    p = p * (1 - lr * wd)
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - betas[1] ** step) + eps
    return p - lr / (1 - betas[0] ** step) * m / denom, m, v


# ------------------------------------------------------------------ the ViT
def random_state(model_module, name, seed):
    """A model's state with every entry drawn at random (LayerNorm's affine too): checks more than the init."""
    rng = np.random.default_rng(seed)
    shapes = model_module.state_shapes(model_module.build_model(name))
    return {k: (rng.standard_normal(s) * (0.5 if len(s) == 1 else 0.2)).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name, small", [("vit2x96", False), ("vit2x96", True), ("deit2x96", False)])
def test_vit_forward_matches_float64(fw, name, small):
    """Logits (eval: DeiT's mean of heads), every hidden state and every block's pre-softmax scores, against a
    float64 ViT written from the definition (LayerNorm eps 1e-6, exact GELU, scores scaled by 1/sqrt(head dim)).
    small: an embedding 1000x smaller, whose variance (~1e-6) is of eps's size, so that eps 1e-5 would show."""
    models, _, features, _, _, array, numpy = FW[fw]
    state = random_state(tm, name, 1)
    for key in ("patch_embed.weight", "patch_embed.bias", "cls_token", "pos_embed") if small else ():
        state[key] = state[key] * 1e-3
    model = models.build_model(name)
    models.load_state(model, state, "random")
    model.eval()
    x, _ = batch(3)
    logits, out = features.forward_features(model, array(x))
    ref_logits, ref_states, ref_scores = vit_forward64(state, x, depth=2, heads=3)
    np.testing.assert_allclose(numpy(logits), ref_logits, rtol=1e-4, atol=1e-4)
    assert len(out["feats"]) == 3 and len(out["attention"]) == 2
    for got, ref in zip(out["feats"] + out["attention"], ref_states + ref_scores):
        assert got.shape == ref.shape
        np.testing.assert_allclose(numpy(got), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    if name == "deit2x96":  # both heads are features, their mean the prediction
        heads = {k: numpy(v) for k, v in out["heads"].items()}
        np.testing.assert_allclose((heads["head"] + heads["head_dist"]) / 2, numpy(logits), rtol=1e-6, atol=1e-6)
        model.train()  # in training the forward gives the class head alone (DeiT's switch)
        models.set_dropout(model, 0.0)
        logits, out = features.forward_features(model, array(x))
        np.testing.assert_allclose(numpy(logits), numpy(out["heads"]["head"]), rtol=0, atol=0)


def test_vit_init_is_deits_and_the_same_in_both_frameworks():
    t, j = tm.get_state(tm.build_model("deit2x96", 3)), jm.get_state(jm.build_model("deit2x96", 3))
    assert list(t) == list(j) and all(np.array_equal(t[k], j[k]) for k in t)
    for key in ("cls_token", "dist_token", "pos_embed", "blocks.0.attn.qkv.weight", "head.weight"):
        assert 0.015 < t[key].std() < 0.025 and np.abs(t[key]).max() < 2.0, key  # trunc-normal 0.02
    assert not t["blocks.1.mlp.fc1.bias"].any() and (t["blocks.1.norm1.weight"] == 1).all()
    assert not t["norm.bias"].any()
    bound = 1 / math.sqrt(3 * 4 * 4)  # the patch conv keeps torch's default U(+-1/sqrt(fan_in))
    assert np.abs(t["patch_embed.weight"]).max() <= bound and t["patch_embed.weight"].std() > bound / 3


# ------------------------------------------------------------------ AdamW and the schedule
def test_adamw_decays_the_weights_only():
    """DeiT's groups: decay on linear and conv weights, none on biases, LayerNorm, tokens, position embedding."""
    state = tm.state_shapes(tm.build_model("deit2x96"))
    decayed = {k for k, s in state.items() if not no_weight_decay(k, s)}
    assert decayed == {k for k, s in state.items() if k.endswith(".weight") and len(s) >= 2}
    assert {"cls_token", "dist_token", "pos_embed", "norm.weight", "head.bias"}.isdisjoint(decayed)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_adamw_steps_match_float64(fw):
    """Three engine steps of a ViT with AdamW (dropout off): the weights follow a float64 AdamW fed with the framework's
    own gradients, with weight decay 0.05 on the decayed group only (Jittor's default would be 0)."""
    models, engine, _, devices, distillers, array, numpy = FW[fw]
    config = build_config("teacher", distillers.METHODS, model="vit2x96", dropout=0.0, name="adamw")
    assert (config.optimizer, config.weight_decay) == ("adamw", VIT_TRAINING["weight_decay"])
    model = engine.build(config, devices.select_device("cpu"))
    optimizer = engine.make_optimizer(model, config)
    named = dict(model.named_parameters())
    p64 = {k: numpy(v).astype(np.float64) for k, v in named.items()}
    m64 = {k: np.zeros_like(v) for k, v in p64.items()}
    v64 = {k: np.zeros_like(v) for k, v in p64.items()}
    model.train()
    for step in (1, 2, 3):
        x, y = batch(8, step)
        engine.train_step(model, None, optimizer, array(x), array(y.astype(np.int64 if fw == "torch" else np.int32)),
                          config)
        grads = ({k: v.grad.numpy() for k, v in named.items()} if fw == "torch" else
                 {k: g.numpy() for group in optimizer.param_groups for p, g in zip(group["params"], group["grads"])
                  for k in [next(n for n, q in named.items() if q is p)]})
        for k in p64:
            wd = 0.0 if no_weight_decay(k, p64[k].shape) else config.weight_decay
            p64[k], m64[k], v64[k] = adamw_ref(p64[k], grads[k].astype(np.float64), m64[k], v64[k], step, config.lr, wd)
    for k, v in named.items():
        np.testing.assert_allclose(numpy(v), p64[k], rtol=1e-5, atol=1e-7, err_msg=k)
    state = engine.get_optimizer_state(model, optimizer)
    assert int(state["step"][0]) == 3 and np.allclose(state["exp_avg.head.weight"], m64["head.weight"], atol=1e-7)


def test_cosine_schedule_is_deits():
    """timm's CosineLRScheduler as DeiT steps it per epoch: linear from WARMUP_LR, then cosine in the epoch (not in
    the epochs after the warm-up) towards MIN_LR."""
    assert cosine_lr_at(0, 5e-4, 20, 5) == WARMUP_LR
    assert cosine_lr_at(4, 5e-4, 20, 5) == pytest.approx(WARMUP_LR + 4 * (5e-4 - WARMUP_LR) / 5)
    assert cosine_lr_at(5, 5e-4, 20, 5) == pytest.approx(MIN_LR + 0.5 * (5e-4 - MIN_LR) * (1 + math.cos(math.pi / 4)))
    assert cosine_lr_at(0, 5e-4, 20, 0) == 5e-4 and cosine_lr_at(19, 5e-4, 20, 0) > MIN_LR
    lrs = [cosine_lr_at(e, 5e-4, 20, 2) for e in range(20)]
    assert lrs[1] < lrs[2] and all(a > b for a, b in zip(lrs[2:], lrs[3:]))


# ------------------------------------------------------------------ DeiT's and TinyBERT's losses
CALLS = {"torch": (tdist, torch.tensor), "jittor": (jdist, jt.array)}


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("kind", ["soft", "hard"])
@pytest.mark.parametrize("scale", [1.0, 1e3])  # ordinary logits, and logits in the thousands (exp overflows)
def test_deit_loss_matches_float64(fw, kind, scale):
    module, array = CALLS[fw]
    rng = np.random.default_rng(0)
    s, t = (scale * rng.standard_normal((6, 10))).astype(np.float32), (scale * rng.standard_normal((6, 10))).astype(np.float32)
    for tau in (1.0, 3.0):
        got = float(module.deit_loss(array(s), array(t), kind, tau).item())
        assert got == pytest.approx(deit_ref(s, t, kind, tau), rel=1e-4), tau
    if kind == "soft":  # DeiT's reduction: the batchmean KL divided by the classes, x tau^2
        kl_mean = float(module.kd_loss(array(s), array(t), 3.0).item())  # KD: batchmean x T^2
        assert float(module.deit_loss(array(s), array(t), "soft", 3.0).item()) == pytest.approx(kl_mean / 10, rel=1e-4)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_tinybert_losses_match_float64_with_masked_and_infinite_scores(fw):
    """Scores [B, heads, L, L] with -inf entries (in one model, in both) and -10000 (BERT's mask): unmasked to 0 in
    both, so the loss is finite and equals the reference; the hidden-state and soft-CE losses likewise."""
    module, array = CALLS[fw]
    rng = np.random.default_rng(1)
    att_s = [rng.standard_normal((2, 3, 5, 5)).astype(np.float32) * 4 for _ in range(2)]
    att_t = [rng.standard_normal((2, 3, 5, 5)).astype(np.float32) * 4 for _ in range(2)]
    att_s[0][0, 0, :, 4] = -np.inf
    att_t[0][0, 0, :, 4] = -np.inf  # the same entry masked in both
    att_t[1][1, 2, 3, :2] = -np.inf  # only in the teacher
    att_s[1][0, 1, 0, 0] = -1e4
    got = float(module.tinybert_att_loss([array(a) for a in att_s], [array(a) for a in att_t]).item())
    assert np.isfinite(got) and got == pytest.approx(tinybert_att_ref(att_s, att_t), rel=1e-5)
    states_s = [rng.standard_normal((2, 5, 8)).astype(np.float32) for _ in range(3)]
    states_t = [rng.standard_normal((2, 5, 8)).astype(np.float32) for _ in range(3)]
    ref = sum(((a.astype(np.float64) - b) ** 2).mean() for a, b in zip(states_s, states_t))
    got = float(module.tinybert_rep_loss([array(a) for a in states_s], [array(a) for a in states_t]).item())
    assert got == pytest.approx(ref, rel=1e-5)
    for scale in (1.0, 1e3):
        s, t = (scale * rng.standard_normal((4, 10))).astype(np.float32), (scale * rng.standard_normal((4, 10))).astype(np.float32)
        got = float(module.soft_cross_entropy(array(s), array(t)).item())
        assert got == pytest.approx(soft_ce_ref(s, t), rel=1e-5), scale


# ------------------------------------------------------------------ config and refusals
def test_vits_train_with_deits_recipe_and_flags_win():
    config = build_config("teacher", tdist.METHODS, model="vit6x192")
    assert {k: getattr(config, k) for k in VIT_TRAINING} == VIT_TRAINING
    assert build_config("teacher", tdist.METHODS).optimizer == "sgd"  # the CNNs keep SGD and step LR
    config = build_config("teacher", tdist.METHODS, model="vit6x192", lr=1e-3, optimizer="sgd")
    assert (config.lr, config.optimizer, config.schedule) == (1e-3, "sgd", "cosine")
    deit = build_config("student", tdist.METHODS, method="deit", preset="vit-quick")
    assert (deit.model, deit.teacher_model, deit.optimizer, deit.deit_alpha) == ("deit2x96", "vit6x192", "adamw", 0.5)
    tinybert = build_config("student", tdist.METHODS, method="tinybert")
    assert (tinybert.model, tinybert.teacher_model, tinybert.temperature) == ("vit2x96", "vit6x192", 1.0)
    # run names: a ViT teacher never overwrites the CNN teacher's checkpoint
    assert build_config("teacher", tdist.METHODS).name == "teacher_s0"
    assert build_config("teacher", tdist.METHODS, model="vit6x192").name == "teacher_vit6x192_s0"
    with pytest.raises(UserError, match="DOT is SGD"):
        resolve("student", {"method": "kd", "model": "vit2x96", "dot": 0.075}, tdist.METHODS)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_deit_and_tinybert_refuse_models_they_cannot_train(fw):
    models, engine, _, devices, distillers, _, _ = FW[fw]
    device = devices.select_device("cpu")
    vit2, vit6, cnn = models.build_model("vit2x96"), models.build_model("vit6x192"), models.build_model("cifar10quick")
    deit = build_config("student", distillers.METHODS, method="deit", model="vit2x96")
    with pytest.raises(UserError, match="vit2x96 has none: use --model deit2x96"):
        distillers.METHODS["deit"].setup(deit, vit2, cnn, device)
    with pytest.raises(UserError, match="distillation token, which only --method deit trains"):
        engine.build(build_config("student", distillers.METHODS, method="kd", model="deit2x96"), device)
    tiny = build_config("student", distillers.METHODS, method="tinybert")
    with pytest.raises(UserError, match="must both be ViTs"):
        distillers.METHODS["tinybert"].setup(tiny, vit2, cnn, device)
    with pytest.raises(UserError, match="not a multiple"):
        distillers.METHODS["tinybert"].setup(tiny, models.ViT(4, 96, 3, 2), vit6, device)
    with pytest.raises(UserError, match="head by head"):
        distillers.METHODS["tinybert"].setup(tiny, models.ViT(2, 96, 2, 2), vit6, device)
    assert list(distillers.METHODS["tinybert"].setup(tiny, vit2, vit6, device)) == ["fit_dense"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_tinybert_stages_switch_terms(fw):
    """Stage 1 (w 0): attention and hidden-state losses, the prediction term 0; stage 2 (w 1) the reverse."""
    models, engine, _, devices, distillers, array, _ = FW[fw]
    config = build_config("student", distillers.METHODS, method="tinybert", tinybert_layer_epochs=2)
    assert [distillers.METHODS["tinybert"].weight(e, config) for e in range(4)] == [0.0, 0.0, 1.0, 1.0]
    student, teacher = models.build_model("vit2x96", 0), models.build_model("vit6x192", 1)
    extra = distillers.METHODS["tinybert"].setup(config, student, teacher, devices.select_device("cpu"))
    x, y = batch(2)
    out, out_t = engine.forward(student, array(x), True), engine.forward(teacher, array(x), True)
    for w in (0.0, 1.0):
        terms = distillers.tinybert_terms(out, out_t, array(y), config, w, extra)
        terms = {k: float(v.item()) for k, v in terms.items()}
        assert set(terms) == {"att", "rep", "pred"}
        assert (terms["att"] > 0 and terms["rep"] > 0) == (w == 0) and (terms["pred"] > 0) == (w == 1), terms


def test_default_names_keep_the_original_runs():
    args = lambda **kw: type("A", (), dict(dict(dataset="cifar10", seed=0, pair=None, model="cifar10quick"), **kw))
    assert default_name(args(), "teacher") == "teacher_s0"
    assert default_name(args(model="cifar10simple"), "student_kd") == "student_kd_s0"
    assert default_name(args(model="deit2x96"), "student_deit") == "student_deit_deit2x96_s0"


def test_run_all_runs_the_transformer_tracks_students(tmp_path, monkeypatch):
    """run_all.py --preset vit-*: the ViT teacher, then VIT_STUDENTS, each with its teacher (the CNN one from the
    quick / full tag, told by --teacher-model); --methods is refused there; report.py knows every run name."""
    import report
    import run_all
    args = run_all.parse_args(["--preset", "vit-quick"])
    assert (args.cnn_teacher_from, args.seeds, args.tag) == ("quick", 1, "vit-quick")
    missing = argparse.Namespace(**{**vars(args), "cnn_teacher_from": "no-such-tag", "frameworks": ["torch"],
                                    "teacher_from": "vit-teacher-tag"})  # no teacher stage: straight to the students
    ran = []
    monkeypatch.setattr(run_all, "train_and_test", lambda fw, name, *a: ran.append(name) or (
        1.0, {"test": {"top1": 1.0, "top5": 1.0, "images_per_s": 1.0}, "seconds": 1.0, "diverged": None}))
    monkeypatch.setattr(run_all.os.path, "exists", lambda path: "no-such-tag" not in path)
    with pytest.raises(run_all.StageFailed, match=r"needs the teacher .*no-such-tag.teacher_s0_torch.ckpt.*--preset "
                                                  r"no-such-tag --seeds 1 --methods ce"):
        run_all.run_framework("torch", missing, 0)
    assert [name.split("/")[1] for name in ran] == [f"{n}_s0" for n in list(VIT_STUDENTS)[:5]]  # the ViT teacher's
    monkeypatch.setattr(run_all.os.path, "exists", lambda path: True)
    students = {name: (method, flags, teacher) for _, name, method, flags, teacher in
                run_all.vit_students("jittor", args, 2, "vit.ckpt")}
    assert students["student_ce"] == ("ce", [], None) and students["student_tinybert"] == ("tinybert", [], "vit.ckpt")
    method, flags, teacher = students["student_deit_hard_cnn"]
    assert flags == ["--deit-type", "hard", "--teacher-model", "cifar10quick"]
    assert teacher.endswith(os.path.join("quick", "teacher_s2_jittor.ckpt"))
    assert students["student_rdrop"][1] == ["--rdrop", str(0.3 * 128)]  # R-Drop's summed alpha 0.3 at batch 128
    assert all(report.STAGE_RUN.match(f"{name}_s0") for name in students)
    with pytest.raises(SystemExit):
        run_all.parse_args(["--preset", "vit-full", "--methods", "kd"])


def test_align_shares_every_dropout_layer_of_the_vit():
    """align.py --stage vit-rdrop: all 9 dropout layers of vit2x96 (position, and per block attention, projection
    and MLP x 2) draw from one numpy stream in each framework, so the two R-Drop passes differ, and alike in both."""
    import align
    t, j = align.model_pair("vit2x96", 0, "cifar10")
    align.share_dropout(t, align.SharedDropoutTorch, 0.1, np.random.default_rng(0))
    align.share_dropout(j, align.SharedDropoutJittor, 0.1, np.random.default_rng(0))
    assert sum(isinstance(m, align.SharedDropoutTorch) for m in t.modules()) == 9
    assert sum(isinstance(m, align.SharedDropoutJittor) for m in j.modules()) == 9
    assert not any(isinstance(m, (torch.nn.Dropout, jt.nn.Dropout)) for m in [*t.modules(), *j.modules()])
    x, _ = batch(2)
    t.train()
    j.train()
    passes_t = [t(torch.from_numpy(x)).detach().numpy() for _ in range(2)]
    passes_j = [j(jt.array(x)).numpy() for _ in range(2)]
    assert np.abs(passes_t[0] - passes_t[1]).max() > 1e-3  # two masks
    for a, b in zip(passes_t, passes_j):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # the same masks in both frameworks
