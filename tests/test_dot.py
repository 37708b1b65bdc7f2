"""DOT, the distillation-oriented trainer (--dot DELTA), in both frameworks: mdistiller's update rule against a
float64 reference on the step's own gradients, plain SGD as its DELTA -> 0 limit, the frameworks step for step,
its two momentum buffers saved and restored exactly, and one-line refusals."""
import numpy as np
import pytest
import torch

import jittor as jt
from common.config import build_config, FRAMEWORKS
from common.errors import UserError
from common.checkpoint import load_checkpoint
from jittor_ import device as jd, distillers as jdist, engine as je, models as jm
from torch_ import device as td, distillers as tdist, engine as te, models as tm

FW = {"torch": (tm, te, td, tdist, torch.from_numpy, lambda v: v.detach().numpy()),
      "jittor": (jm, je, jd, jdist, jt.array, lambda v: v.numpy())}


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def run(fw, method, dot, steps=3, lr=0.01):
    """`steps` engine steps of a cifar10simple student (seed 2) under a seeded cifar10quick teacher: the student's
    and its modules' parameters after each step, and the optimizer."""
    models, engine, devices, distillers, array, numpy = FW[fw]
    config = build_config("student", distillers.METHODS, method=method, dot=dot, lr=lr, seed=2)
    device = devices.select_device("cpu")
    teacher = models.build_model("cifar10quick", 1)
    teacher.eval()
    student = engine.build(config, device)
    student.train()
    extra = distillers.METHODS[method].setup(config, student, teacher, device)
    for module in extra.values():
        module.train()
    optimizer = engine.make_optimizer(student, config, extra)
    history = []
    for step in range(steps):
        x, y = batch(16, step)
        engine.train_step(student, teacher, optimizer, array(x), array(y), config, 1.0, extra)
        history.append({name: numpy(p).astype(np.float64) for name, p in engine.named_parameters(student, extra)
                        if "running" not in name})
    return history, optimizer, (student, teacher, extra, config)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["kd", "fitnet"])
def test_dot_is_sgd_when_delta_goes_to_zero(fw, method):
    """With both momenta equal (DELTA 1e-9) the two buffers add up to SGD's one buffer of the summed gradient, weight
    decay counted once: 3 steps agree with plain SGD to float32 rounding. FitNet has parameters only one loss
    reaches (the regressor, the layers after the hint): they must step too, with their weight decay."""
    sgd, _, _ = run(fw, method, 0.0)
    dot, optimizer, _ = run(fw, method, 1e-9)
    assert set(optimizer.state["task"]) and set(optimizer.state["kd"])
    for a, b in zip(sgd, dot):
        for name in a:
            scale = max(np.abs(a[name]).max(), 1e-6)
            assert np.abs(a[name] - b[name]).max() / scale < 2e-5, name


def reference_step(params, grads, buffers, lr, momentum, delta, weight_decay):
    """mdistiller/engine/dot.py in float64 numpy: params {name: array}, grads {"task"|"kd": {name: array or None}}."""
    m = {"task": momentum - delta, "kd": momentum + delta}
    mean = (m["kd"] + m["task"]) / 2.0
    for kind, other in (("task", "kd"), ("kd", "task")):
        for name in params:
            g = grads[kind].get(name)
            if g is None:
                continue
            both = grads[other].get(name) is not None
            d_p = g + weight_decay * params[name] if (kind == "task" or not both) else g
            buf = buffers[kind].get(name)
            buffers[kind][name] = d_p.copy() if buf is None else buf * (m[kind] if both else mean) + d_p
            params[name] = params[name] - lr * buffers[kind][name]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dot_follows_mdistillers_rule_on_the_steps_own_gradients(fw):
    """FitNet under DOT (DELTA 0.075, lr 0.05 so that the momenta matter): before each step the test takes the task and
    the distillation gradients of that very step itself (torch.autograd.grad / jt.grad, per loss) and applies the
    rule in float64; the parameters after 3 steps agree to float32 rounding. Which parameters each loss reaches is
    the test's own reading of the gradients (None or all zero)."""
    models, engine, devices, distillers, array, numpy = FW[fw]
    _, optimizer, (student, teacher, extra, config) = run(fw, "fitnet", 0.075, steps=0, lr=0.05)
    named = [(n, p) for n, p in engine.named_parameters(student, extra) if "running" not in n]
    params = {n: numpy(p).astype(np.float64) for n, p in named}
    buffers = {"task": {}, "kd": {}}
    for step in range(3):
        x, y = batch(16, step)
        out_t = engine.forward(teacher, array(x), True)
        terms = distillers.METHODS["fitnet"].terms(engine.forward(student, array(x), True), out_t, array(y), config,
                                                   1.0, extra)
        grads = {}
        for kind, loss in (("task", terms["ce"]), ("kd", terms["fitnet"])):
            if fw == "torch":
                gs = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
            else:
                gs = jt.grad(loss, [p for _, p in named], retain_graph=True)
            gs = [None if g is None else numpy(g).astype(np.float64) for g in gs]
            grads[kind] = {n: g for (n, _), g in zip(named, gs) if g is not None and np.any(g != 0)}
        assert "regressor.conv.weight" in grads["kd"] and "regressor.conv.weight" not in grads["task"]
        assert "fc2.weight" in grads["task"] and "fc2.weight" not in grads["kd"]  # after the hint layer
        reference_step(params, grads, buffers, config.lr, config.momentum, config.dot, config.weight_decay)
        engine.train_step(student, teacher, optimizer, array(x), array(y), config, 1.0, extra)
    for name, p in named:
        got = numpy(p).astype(np.float64)
        assert np.abs(got - params[name]).max() <= 1e-5 * max(np.abs(params[name]).max(), 1e-3), name
    assert set(optimizer.state["kd"]) == set(buffers["kd"]) and set(optimizer.state["task"]) == set(buffers["task"])


def test_the_frameworks_take_the_same_dot_steps():
    """The same seeded weights and batches: DOT's KD student in torch and in Jittor, 3 steps, to float32 rounding."""
    a, _, _ = run("torch", "kd", 0.075)
    b, _, _ = run("jittor", "kd", 0.075)
    for name in a[-1]:
        assert np.abs(a[-1][name] - b[-1][name]).max() <= 1e-5 * np.abs(a[-1][name]).max(), name


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_both_buffers_are_saved_and_restored_exactly(fw, tmp_path):
    """engine.save_run, then a fresh student and optimizer restored by engine.resume (what --resume runs): both
    momentum buffers of every parameter come back bit for bit, and the next step is the uninterrupted one's."""
    models, engine, devices, distillers, array, numpy = FW[fw]
    history, optimizer, (student, teacher, extra, config) = run(fw, "fitnet", 0.075, steps=2)
    path = str(tmp_path / "dot.ckpt")
    engine.save_run(path, config, student, optimizer, extra, 0, 10.0, [], "digest")
    ckpt = load_checkpoint(path)
    assert any(k.startswith("dot_kd.") for k in ckpt["optimizer"]) and "fc2.weight" in ckpt["optimizer"]
    fresh = engine.build(config, devices.select_device("cpu"))
    fresh_extra = distillers.METHODS["fitnet"].setup(config, fresh, teacher, devices.select_device("cpu"))
    fresh_optimizer = engine.make_optimizer(fresh, config, fresh_extra)
    engine.resume(path, config, fresh, fresh_optimizer, fresh_extra, "digest")
    before = engine.get_optimizer_state(student, optimizer, extra)
    after = engine.get_optimizer_state(fresh, fresh_optimizer, fresh_extra)
    assert set(before) == set(after) and all(np.array_equal(before[k], after[k]) for k in before)
    fresh.train()
    for module in fresh_extra.values():
        module.train()
    x, y = batch(16, 7)
    for model, opt, ex in ((student, optimizer, extra), (fresh, fresh_optimizer, fresh_extra)):
        engine.train_step(model, teacher, opt, array(x), array(y), config, 1.0, ex)
    a, b = models.get_state(student), models.get_state(fresh)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_dot_refusals_are_one_line():
    with pytest.raises(UserError, match="--method ce has no distillation term"):
        build_config("student", tdist.METHODS, method="ce", dot=0.075)
    with pytest.raises(UserError, match=r"must lie in \[0, 1\)"):
        build_config("student", tdist.METHODS, method="kd", dot=0.2)  # momentum 0.9 + 0.2 >= 1
    assert build_config("student", tdist.METHODS, method="kd").dot == 0.0  # off unless asked
    assert build_config("student", tdist.METHODS, method="kd", dot=0.075).dot == 0.075


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dot_under_a_launcher_is_refused_before_training(fw, monkeypatch):
    """engine.fit with 2 ranks (the launchers' world size, faked) stops with one line before it builds anything."""
    models, engine, devices, distillers, array, numpy = FW[fw]
    monkeypatch.setattr(engine.parallel, "world_size", lambda: 2)
    config = build_config("student", distillers.METHODS, method="kd", dot=0.075)
    with pytest.raises(UserError, match="--dot runs on one process"):
        engine.fit(config, "kd", None, devices.select_device("cpu"))
