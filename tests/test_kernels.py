"""jittor_/kernels.py, Jittor's multi-threaded CPU kernels: BatchNorm2d in training mode, the 2x2 max-pool
(with and without a fused ReLU) and the batched matmul of the ViT's attention, forward and gradients, against float64 numpy references, against Jittor's
own ops (kernels.ENABLED = False, what a GPU runs) and against torch; ties in the max-pool go to the element
Jittor's and torch's max_pool2d give them to. BatchNorm's eval mode (Jittor's ops) against its reference."""
import ctypes

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jittor as jt
from jittor import nn
from jittor_ import kernels, models as jm, parallel as jp

EPS = 1e-5
SHAPES = [(3, 5, 6, 6), (1, 5, 6, 6), (2, 4, 7, 5)]  # odd sizes, a batch of 1, an odd spatial size
# BatchNorm's blocks of channels (kernels.channel_blocks): all channels in one block above; here blocks of 4
# channels and a last block of 1, and one channel a block (N x H x W over kernels.BLOCK_FLOATS)
BN_SHAPES = SHAPES + [(4, 5, 64, 64), (2, 3, 190, 190)]


def data(shape, seed=0, offset=3.0):
    """Float32 input off zero mean (a shifted mean makes one-pass variances lose digits), weights, bias, dy."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.normal(size=shape) * rng.uniform(0.5, 2, size=(1, c, 1, 1)) + offset).astype(np.float32)
    w, b = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)
    return x, w, b, rng.normal(size=shape).astype(np.float32)


def grads(fn, arrays, dy):
    """y = fn(*Vars) and the gradients of sum(y * dy) for each input, as numpy."""
    vars_ = [jt.array(a) for a in arrays]
    y = fn(*vars_)
    return [y.numpy()] + [g.numpy() for g in jt.grad((y * jt.array(dy)).sum(), vars_)]


# ---------------------------------------------------------------- BatchNorm2d: float64 references
def bn_train_reference(x, w, b, dy):
    """y, mean, biased var, dx, dw, db of training-mode BatchNorm2d, all in float64."""
    x, w, b, dy = (a.astype(np.float64) for a in (x, w, b, dy))
    dims, n = (0, 2, 3), x.size // x.shape[1]
    c = lambda v: v[None, :, None, None]
    mean, var = x.mean(dims), x.var(dims)
    invstd = 1 / np.sqrt(var + EPS)
    xhat = (x - c(mean)) * c(invstd)
    db, dw = dy.sum(dims), (dy * xhat).sum(dims)
    dx = c(w * invstd) * (dy - c(db / n) - xhat * c(dw / n))
    return xhat * c(w) + c(b), mean, var, dx, dw, db


def bn_eval_reference(x, w, b, rm, rv, dy):
    """y and dx of eval-mode BatchNorm2d (the running statistics), in float64."""
    x, w, b, rm, rv, dy = (a.astype(np.float64) for a in (x, w, b, rm, rv, dy))
    c = lambda v: v[None, :, None, None]
    return (x - c(rm)) / np.sqrt(c(rv) + EPS) * c(w) + c(b), c(w / np.sqrt(rv + EPS)) * dy


def close(actual, expected, name, rtol=2e-5):
    """Equal within float32 rounding, relative to the size of the expected array."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max(), err_msg=name)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_train_forward_and_gradients(shape):
    x, w, b, dy = data(shape)
    stats = []

    def fn(xv, wv, bv):
        y, mean, var = kernels.batch_norm_train(xv, wv, bv, EPS)
        stats.extend([mean.numpy(), var.numpy()])
        return y

    y, dx, dw, db = grads(fn, [x, w, b], dy)
    ref = bn_train_reference(x, w, b, dy)
    for name, got, want in zip(["y", "mean", "var", "dx", "dw", "db"], [y, *stats, dx, dw, db], ref):
        close(got, want, name)
        assert got.dtype == np.float32, name


def test_batch_norm_blocks_of_the_test_shapes():
    """BN_SHAPES cover the three kinds of blocks on one thread (the kernel's arithmetic), and the kernel's
    results do not depend on its blocks or threads: the same bits as with a block per channel, as on 5 threads."""
    block = lambda n, c, h, w: max(1, min(256, c, kernels.BLOCK_FLOATS // (n * h * w)))
    assert [block(*shape) for shape in BN_SHAPES] == [5, 5, 4, 4, 1]
    gomp = ctypes.CDLL("libgomp.so.1")
    threads = gomp.omp_get_max_threads()
    x, w, b, dy = data((4, 5, 64, 64))  # blocks of 4 channels on one thread, of 1 on 5 threads
    runs = []
    try:
        for n in (1, 5):
            gomp.omp_set_num_threads(n)
            assert jt.code((1,), "int32", [], cpu_header="#include <omp.h>",
                           cpu_src="out0_p[0] = omp_get_max_threads();").numpy()[0] == n
            runs.append(grads(lambda *v: kernels.batch_norm_train(*v, EPS)[0], [x, w, b], dy))
    finally:
        gomp.omp_set_num_threads(threads)
    for one, five in zip(*runs):
        np.testing.assert_array_equal(one, five)


def test_batch_norm_train_statistics_are_float64_exact():
    """A large mean and a small spread: the float64 sums give the variance to float32 precision."""
    rng = np.random.default_rng(1)
    x = (1000 + rng.normal(size=(8, 2, 16, 16)) * 0.01).astype(np.float32)
    _, mean, var = kernels.batch_norm_train(jt.array(x), jt.ones(2), jt.zeros(2), EPS)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), x64.mean((0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(var.numpy(), x64.var((0, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_module_eval_mode(shape):
    """Eval mode keeps Jittor's ops (see kernels.py): the running statistics, forward and gradients."""
    x, w, b, dy = data(shape)
    rng = np.random.default_rng(2)
    rm = (rng.normal(size=shape[1]) + 3).astype(np.float32)
    rv = rng.uniform(0.5, 2, size=shape[1]).astype(np.float32)
    m = jp.BatchNorm2d(shape[1])
    for var, value in ((m.weight, w), (m.bias, b), (m.running_mean, rm), (m.running_var, rv)):
        var.update(jt.array(value))
    m.eval()  # Jittor's eval() also stops the parameters' gradients: dx is the eval backward
    xv = jt.array(x)
    y = m(xv)
    got = [y.numpy(), jt.grad((y * jt.array(dy)).sum(), xv).numpy()]
    for name, g, want in zip(["y", "dx"], got, bn_eval_reference(x, w, b, rm, rv, dy)):
        close(g, want, name, rtol=1e-4)
    np.testing.assert_array_equal(m.running_mean.numpy(), rm)  # eval leaves the statistics alone
    np.testing.assert_array_equal(m.running_var.numpy(), rv)


def module_run(x, w, b, dy, enabled, monkeypatch, steps=2):
    """The repo's BatchNorm2d (jittor_/parallel.py) training on CPU, with the kernel or with Jittor's ops:
    y, dx, dw, db of the last step and the running statistics after `steps` steps."""
    monkeypatch.setattr(kernels, "ENABLED", enabled)
    m = jp.BatchNorm2d(x.shape[1])
    m.weight.update(jt.array(w))
    m.bias.update(jt.array(b))
    m.train()
    for _ in range(steps):
        xv = jt.array(x)
        y = m(xv)
        out = [y.numpy()] + [g.numpy() for g in jt.grad((y * jt.array(dy)).sum(), [xv, m.weight, m.bias])]
    return out + [m.running_mean.numpy(), m.running_var.numpy()]


@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (1, 3, 7, 7)])
def test_batch_norm_module_matches_jittor_ops(shape, monkeypatch):
    """Training mode: the module with the kernel computes what it computes with Jittor's ops (a GPU's path)."""
    x, w, b, dy = data(shape)
    fast = module_run(x, w, b, dy, True, monkeypatch)
    ops = module_run(x, w, b, dy, False, monkeypatch)
    for name, got, want in zip(["y", "dx", "dw", "db", "running_mean", "running_var"], fast, ops):
        close(got, want, name, rtol=1e-4)


def test_batch_norm_module_matches_torch():
    """y, gradients and running statistics of three training steps against torch.nn.BatchNorm2d."""
    x, w, b, dy = data((3, 5, 6, 6))
    tb, jb = torch.nn.BatchNorm2d(5), jp.BatchNorm2d(5)
    with torch.no_grad():
        tb.weight.copy_(torch.from_numpy(w))
        tb.bias.copy_(torch.from_numpy(b))
    jb.weight.update(jt.array(w))
    jb.bias.update(jt.array(b))
    for _ in range(3):
        xt = torch.from_numpy(x).requires_grad_()
        yt = tb(xt)
        (yt * torch.from_numpy(dy)).sum().backward()
        xj = jt.array(x)
        yj = jb(xj)
        dxj, dwj, dbj = jt.grad((yj * jt.array(dy)).sum(), [xj, jb.weight, jb.bias])
        for name, got, want in [("y", yj, yt), ("dx", dxj, xt.grad), ("dw", dwj, tb.weight.grad),
                                ("db", dbj, tb.bias.grad)]:
            close(got.numpy(), want.detach().numpy(), name, rtol=1e-4)
        tb.weight.grad = tb.bias.grad = None
    close(jb.running_mean.numpy(), tb.running_mean.numpy(), "running_mean", rtol=1e-5)
    close(jb.running_var.numpy(), tb.running_var.numpy(), "running_var", rtol=1e-5)


# ---------------------------------------------------------------- max_pool2d(x, 2)
def pool_reference(x, dy, relu):
    """max_pool2d(relu(x) if relu else x, 2) and its gradient in float64; each window's gradient goes to its
    first maximum in row-major order (after ReLU: none where the maximum is not positive)."""
    n, c, h, w = x.shape
    windows = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(n, c, h // 2, w // 2, 4).astype(np.float64)
    first = windows.argmax(-1)  # numpy's argmax: the first maximum
    y = windows.max(-1)
    routed = dy.astype(np.float64) * (y > 0) if relu else dy.astype(np.float64)
    dx = np.zeros((n, c, h // 2, w // 2, 4))
    np.put_along_axis(dx, first[..., None], routed[..., None], -1)
    dx = dx.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2 * 2, w // 2 * 2)
    full = np.zeros(x.shape)
    full[:, :, :h // 2 * 2, :w // 2 * 2] = dx
    return (np.maximum(y, 0) if relu else y), full


def pool_inputs(shape, ties, seed=0):
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: most windows hold their maximum twice or more, some all four times
        x = rng.integers(-2, 3, size=shape).astype(np.float32)
    else:
        x = rng.normal(size=shape).astype(np.float32)
    return x, rng.normal(size=(shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(np.float32)


POOL_SHAPES = [(3, 5, 6, 6), (2, 3, 7, 7), (1, 2, 7, 6), (2, 2, 2, 2)]


@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu_pool"])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_max_pool_forward_and_gradient(shape, ties, relu):
    x, dy = pool_inputs(shape, ties)
    y, dx = grads(lambda v: kernels.max_pool2d(v, relu), [x], dy)
    y_ref, dx_ref = pool_reference(x, dy, relu)
    assert y.shape == y_ref.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)  # floor: an odd row dropped
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))
    np.testing.assert_array_equal(dx, dx_ref.astype(np.float32))


@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu_pool"])
@pytest.mark.parametrize("shape", [s for s in POOL_SHAPES if min(s[2:]) > 2])  # Jittor's pool needs more than 2
def test_max_pool_ties_go_where_jittor_and_torch_send_them(shape, relu):
    """With exact ties, the gradient lands on the same element as with nn.max_pool2d and F.max_pool2d."""
    x, dy = pool_inputs(shape, ties=True, seed=3)
    y, dx = grads(lambda v: kernels.max_pool2d(v, relu), [x], dy)
    y_jt, dx_jt = grads(lambda v: nn.max_pool2d(nn.relu(v) if relu else v, 2), [x], dy)
    xt = torch.from_numpy(x).requires_grad_()
    yt = F.max_pool2d(F.relu(xt) if relu else xt, 2)
    (yt * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_array_equal(y, y_jt)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, dx_jt)
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def test_max_pool_falls_back_to_jittor_ops(monkeypatch):
    """kernels.ENABLED off (or a GPU): Jittor's own max_pool2d, the same numbers."""
    x, dy = pool_inputs((2, 3, 6, 6), ties=False)
    fast = grads(lambda v: kernels.max_pool2d(v, True), [x], dy)
    monkeypatch.setattr(kernels, "ENABLED", False)
    ops = grads(lambda v: kernels.max_pool2d(v, True), [x], dy)
    for got, want in zip(fast, ops):
        np.testing.assert_array_equal(got, want)


def test_max_pool_refuses_a_map_without_a_window():
    with pytest.raises(ValueError, match="no 2 x 2 window"):
        kernels.max_pool2d(jt.zeros((1, 1, 1, 4)))


def test_cifar10quick_runs_the_kernels_and_matches_jittor_ops(monkeypatch):
    """The model's BatchNorms and pools run the kernels on CPU (3 of each), and a training forward and
    backward gives what Jittor's own ops give: logits, every gradient, the running statistics."""
    calls = {"bn": 0, "pool": 0}
    for cls, key in ((kernels.BatchNormTrain, "bn"), (kernels.MaxPool2x2, "pool")):
        def counted(self, *args, _execute=cls.execute, _key=key):
            calls[_key] += 1
            return _execute(self, *args)
        monkeypatch.setattr(cls, "execute", counted)
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)

    def run(enabled):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        model = jm.set_dropout(jm.build_model("cifar10quick", seed=0), 0.0)
        model.train()
        logits = model(jt.array(x))
        names = [name for name, _ in model.named_parameters()]
        grads = jt.grad((logits * logits).sum(), [p for _, p in model.named_parameters()])
        stats = {k: v.numpy() for k, v in model.state_dict().items() if "running" in k}
        return logits.numpy(), dict(zip(names, [g.numpy() for g in grads])), stats

    fast = run(True)
    assert calls == {"bn": 3, "pool": 3}
    ops = run(False)
    assert calls == {"bn": 3, "pool": 3}  # Jittor's ops: the kernels are not called
    close(fast[0], ops[0], "logits", rtol=1e-4)
    for name in fast[1]:
        if name in ("conv1.bias", "conv2.bias", "conv3.bias"):  # before a BatchNorm: 0 up to rounding, in both
            scale = np.abs(ops[1][name.replace("bias", "weight")]).max()
            assert max(np.abs(fast[1][name]).max(), np.abs(ops[1][name]).max()) < 1e-4 * scale, name
        else:
            close(fast[1][name], ops[1][name], name, rtol=1e-3)
    for name in fast[2]:
        close(fast[2][name], ops[2][name], name, rtol=1e-4)


# ---------------------------------------------------------------- the batched matmul
MATMUL_SHAPES = [((2, 3, 65, 32), (2, 3, 32, 65)),  # the attention's scores at batch 2 (vit2x96: 65 tokens, 32 wide)
                 ((2, 3, 65, 65), (2, 3, 65, 32)),  # the scores times v
                 ((1, 1, 1, 5), (1, 1, 5, 7)),  # a batch of one, one row
                 ((4, 7, 3), (4, 3, 9))]  # one leading dimension, odd sizes


@pytest.mark.parametrize("shapes", MATMUL_SHAPES)
@pytest.mark.parametrize("trans_b", [False, True])
def test_batched_matmul_forward_and_gradients(shapes, trans_b, monkeypatch):
    """a @ b and a @ b^T against float64 numpy, and both gradients against Jittor's own @ (kernels.ENABLED off)."""
    rng = np.random.default_rng(len(shapes[0]))
    a, b = (rng.normal(size=s).astype(np.float32) for s in shapes)
    if trans_b:
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2))
    expected = a.astype(np.float64) @ (np.swapaxes(b, -1, -2) if trans_b else b)
    dy = rng.normal(size=expected.shape).astype(np.float32)
    fast = grads(lambda x, y: kernels.matmul(x, y, trans_b), [a, b], dy)
    close(fast[0], expected, "a @ b")
    monkeypatch.setattr(kernels, "ENABLED", False)
    ops = grads(lambda x, y: kernels.matmul(x, y, trans_b), [a, b], dy)
    for got, want, name in zip(fast, ops, ("y", "da", "db")):
        close(got, want, name)


def test_vit_attention_runs_the_kernel_and_matches_jittor_ops(monkeypatch):
    """A ViT's attention calls the kernel twice a block on CPU (q k^T, then the scores times v); a training forward
    and backward of vit2x96 (dropout off) gives Jittor's own ops' logits and gradients."""
    calls = []
    execute = kernels.BatchedMatmul.execute
    monkeypatch.setattr(kernels.BatchedMatmul, "execute", lambda self, *a: calls.append(1) or execute(self, *a))
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)

    def run(enabled):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        model = jm.set_dropout(jm.build_model("vit2x96", seed=0), 0.0)
        model.train()
        logits = model(jt.array(x))
        params = [p for _, p in model.named_parameters()]
        return logits.numpy(), [g.numpy() for g in jt.grad((logits * logits).sum(), params)]

    fast = run(True)
    assert len(calls) == 4  # 2 blocks x 2 products
    ops = run(False)
    assert len(calls) == 4
    close(fast[0], ops[0], "logits", rtol=1e-4)
    for i, (g, h) in enumerate(zip(fast[1], ops[1])):
        assert np.abs(g - h).max() <= 1e-4 * max(np.abs(h).max(), 1e-6), i
