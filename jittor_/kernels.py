"""Multi-threaded CPU kernels for Jittor's BatchNorm, 2x2 max-pool and batched matmul: C++ with OpenMP in jt.code,
each a jt.Function with its own backward. Jittor-only (torch's own ops are multi-threaded already).

Why: on CPU, Jittor runs the kernels it generates itself (BatchNorm's reductions and elementwise
work, ReLU, max-pool) on one thread; only its oneDNN convolutions and matmuls use every core. Its
own parallel code generation (compile_options={"parallel": 1}) hangs with 2 threads or makes the
reductions far slower (a spin-locked atomic per element), so these kernels are written by hand:
every thread owns whole channels (BatchNorm) or whole planes (max-pool), so no atomics are needed,
and a channel's sums run in one order on one thread: the results do not depend on the thread count.
The threads take channels or planes as they come (schedule(dynamic)): a thread that the system
preempts on a busy machine holds up only its current chunk. OpenMP's thread count is
OMP_NUM_THREADS (common.env.prepare_jittor), as for oneDNN. Every generated kernel is compiled with
-fopenmp (and -Ofast, which lets the float64 sums vectorize).

Used only on CPU and for float32 (on_cpu); on a GPU every function here runs Jittor's own ops, as before.
BatchNorm in eval mode keeps Jittor's ops on CPU too: there it is elementwise, and Jittor fuses it with
the ReLU and residual add around it into one pass, which measured faster than a separate 2-thread kernel
(eval forward per 500 images, Jittor's ops against a kernel: cifar10quick 335 against 358 ms,
resnet8x4 1477 against 1561).

    batch_norm_train  BatchNorm2d's training forward: per-channel mean and biased variance (two passes,
                      sums in float64: torch's CPU BatchNorm accumulates in double too), then
                      y = x * scale + shift; backward dx, dweight, dbias (channel sums in float64)
    max_pool2d        max_pool2d(x, 2) (kernel 2, stride 2, no padding, floor: an odd last row or column
                      is dropped, as in torch and Jittor), or max_pool2d(relu(x), 2) in one pass with
                      relu=True; the backward gives each window's gradient to the first maximum in
                      row-major order, the element Jittor's and torch's max_pool2d give it to on ties
                      (for finite inputs; -Ofast makes no promise about NaN, and a run whose loss
                      is not finite stops anyway)
    matmul            a @ b or a @ b^T over leading batch dimensions (the ViT's attention: scores q k^T and their
                      product with v); Jittor runs its own batched matmul as a broadcast and a reduce on one thread,
                      not through oneDNN (bench.py --profile, docs/speed.md)
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.env import prepare_jittor  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402

# the path names these kernels in Jittor's profiler (bench.py --profile groups them by it)
HEADER = "// jittor_/kernels.py\n#include <omp.h>\n#include <algorithm>\n#include <cmath>\n#include <cstdint>"
ENABLED = True  # False: Jittor's own ops everywhere, as on a GPU (the tests compare the two)


def on_cpu(x):
    """The kernels here run: Jittor on the CPU and a float32 input."""
    return ENABLED and not jt.flags.use_cuda and x.dtype == "float32"


BLOCK_FLOATS = 1 << 16  # floats of x in a block of channels (256 KiB): BatchNorm's passes over it find it in L2


def channel_blocks(hw, body):
    """C++ of a loop over blocks of channels of in0 (NCHW), the blocks split among the threads.

    A block is channels c0 .. c0 + nc - 1, as many as keep its N x nc planes within BLOCK_FLOATS (at
    least one channel): the passes `body` makes over a block find it in the cache, and with small
    planes (4 x 4) an image's nc planes are one contiguous run, ROW(n) .. ROW(n) + nc * HW, not N
    scattered 64-byte pieces; and at least one block per thread. The plane size HW is a compile-time
    constant, so that the loops over a plane vectorize whatever its size (with a run-time bound, GCC's
    vectorized loop needs 30 or more iterations); N, C, count (N * HW), c0 and nc are defined for
    `body`. A channel's sums run in one order whatever the blocks (a plane at a time, in image order),
    so the results depend on neither the blocks nor the thread count.
    """
    return f"""
        constexpr int HW = {hw}, MAX_BLOCK = 256;
        const int N = in0_shape0, C = in0_shape1;
        const double count = (double)N * HW;
        const int per_thread = (C + omp_get_max_threads() - 1) / omp_get_max_threads();
        const int block = std::max(1, std::min({{MAX_BLOCK, per_thread, (int)({BLOCK_FLOATS} / ((size_t)N * HW))}}));
        const int blocks = (C + block - 1) / block;
        #define ROW(n) (((size_t)(n) * C + c0) * HW)
        #pragma omp parallel for schedule(dynamic)
        for (int blk = 0; blk < blocks; blk++) {{
            const int c0 = blk * block, nc = std::min(block, C - c0);
            {body}
        }}
        #undef ROW
    """


# ---------------------------------------------------------------- BatchNorm2d
class BatchNormTrain(jt.Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with the batch's per-channel mean and biased
    variance; after the call, self.mean and self.var (float32, no gradient) update the running statistics."""

    def __init__(self, eps):
        self.eps = float(eps)

    def execute(self, x, weight, bias):
        hw = x.shape[2] * x.shape[3]
        y, mean, var, saved = jt.code(
            [x.shape, weight.shape, weight.shape, (2, x.shape[1])], [x.dtype, "float32", "float32", "float64"],
            [x, weight, bias], cpu_header=HEADER, cpu_src=channel_blocks(hw, f"""
            double sum[MAX_BLOCK] = {{0}}, sq[MAX_BLOCK] = {{0}}, mean[MAX_BLOCK];
            float32 a[MAX_BLOCK], b[MAX_BLOCK];
            for (int n = 0; n < N; n++) {{  // pass 1: the means
                const float32* xp = in0_p + ROW(n);
                for (int k = 0; k < nc; k++) {{
                    double s = 0;
                    for (int i = 0; i < HW; i++) s += xp[k * HW + i];
                    sum[k] += s;
                }}
            }}
            for (int k = 0; k < nc; k++) mean[k] = sum[k] / count;
            for (int n = 0; n < N; n++) {{  // pass 2: the variances, around the means
                const float32* xp = in0_p + ROW(n);
                for (int k = 0; k < nc; k++) {{
                    const double m = mean[k];
                    double s = 0;
                    for (int i = 0; i < HW; i++) {{ const double d = xp[k * HW + i] - m; s += d * d; }}
                    sq[k] += s;
                }}
            }}
            for (int k = 0; k < nc; k++) {{
                const int c = c0 + k;
                const double var = sq[k] / count, invstd = 1.0 / std::sqrt(var + {self.eps!r});
                const double scale = in1_p[c] * invstd;
                a[k] = (float32)scale;
                b[k] = (float32)(in2_p[c] - mean[k] * scale);
                out1_p[c] = (float32)mean[k];
                out2_p[c] = (float32)var;
                out3_p[c] = mean[k];
                out3_p[C + c] = invstd;
            }}
            for (int n = 0; n < N; n++) {{  // pass 3: normalise
                const float32* xp = in0_p + ROW(n);
                float32* yp = out0_p + ROW(n);
                for (int k = 0; k < nc; k++)
                    for (int i = 0; i < HW; i++) yp[k * HW + i] = xp[k * HW + i] * a[k] + b[k];
            }}
            """))
        self.x, self.weight, self.saved = x, weight, saved
        self.mean, self.var = mean.stop_grad(), var.stop_grad()
        return y

    def grad(self, dy):
        # dbias = sum dy, dweight = sum dy * xhat, dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        hw = self.x.shape[2] * self.x.shape[3]
        dx, dweight, dbias = jt.code(
            [self.x.shape, self.weight.shape, self.weight.shape], [self.x.dtype, "float32", "float32"],
            [self.x, self.weight, dy, self.saved], cpu_header=HEADER, cpu_src=channel_blocks(hw, """
            double sum_dy[MAX_BLOCK] = {0}, sum_dy_xmu[MAX_BLOCK] = {0};
            float32 mu[MAX_BLOCK], mean_dy[MAX_BLOCK], proj[MAX_BLOCK], scale[MAX_BLOCK];
            for (int n = 0; n < N; n++) {  // pass 1: the sums
                const float32 *xp = in0_p + ROW(n), *gp = in2_p + ROW(n);
                for (int k = 0; k < nc; k++) {
                    const double m = in3_p[c0 + k];
                    double s = 0, t = 0;
                    for (int i = 0; i < HW; i++) {
                        const double g = gp[k * HW + i];
                        s += g;
                        t += g * (xp[k * HW + i] - m);
                    }
                    sum_dy[k] += s;
                    sum_dy_xmu[k] += t;
                }
            }
            for (int k = 0; k < nc; k++) {
                const int c = c0 + k;
                const double invstd = in3_p[C + c];
                mu[k] = (float32)in3_p[c];
                mean_dy[k] = (float32)(sum_dy[k] / count);
                proj[k] = (float32)(sum_dy_xmu[k] / count * invstd * invstd);
                scale[k] = (float32)(in1_p[c] * invstd);
                out1_p[c] = (float32)(sum_dy_xmu[k] * invstd);
                out2_p[c] = (float32)sum_dy[k];
            }
            for (int n = 0; n < N; n++) {  // pass 2: dx
                const float32 *xp = in0_p + ROW(n), *gp = in2_p + ROW(n);
                float32* dxp = out0_p + ROW(n);
                for (int k = 0; k < nc; k++)
                    for (int i = 0; i < HW; i++)
                        dxp[k * HW + i] = (gp[k * HW + i] - mean_dy[k] - (xp[k * HW + i] - mu[k]) * proj[k]) * scale[k];
            }
            """))
        return dx, dweight, dbias


def batch_norm_train(x, weight, bias, eps):
    """(y, mean, var): BatchNorm2d's training forward with the batch's statistics (biased variance)."""
    function = BatchNormTrain(eps)
    y = function(x, weight, bias)
    return y, function.mean, function.var


# ---------------------------------------------------------------- max_pool2d(x, 2)
class MaxPool2x2(jt.Function):
    """y = max_pool2d(x, 2), or max_pool2d(relu(x), 2) = relu(max_pool2d(x, 2)) with relu=True.

    The forward also writes, per window, which of its 4 elements (row-major) gets the gradient: the
    first maximum (4: none, where relu gives 0); the backward scatters dy there, zeros elsewhere.
    """

    def __init__(self, relu):
        self.relu = bool(relu)

    def execute(self, x):
        n, c, h, w = x.shape
        if h < 2 or w < 2:
            raise ValueError(f"max_pool2d(x, 2): a {h} x {w} input has no 2 x 2 window")
        shape = (n, c, h // 2, w // 2)
        # relu: a window whose maximum is not positive gives 0 and routes no gradient (index 4)
        positive = "m > 0" if self.relu else "true"
        y, index = jt.code([shape, shape], [x.dtype, "uint8"], [x], cpu_header=HEADER, cpu_src=f"""
            constexpr int H = {h}, W = {w}, h = H / 2, w = W / 2;  // constants: the loops vectorize
            const int planes = in0_shape0 * in0_shape1;
            #pragma omp parallel for schedule(dynamic, 16)
            for (int p = 0; p < planes; p++) {{
                const float32* __restrict__ xp = in0_p + (size_t)p * H * W;
                float32* __restrict__ yp = out0_p + (size_t)p * h * w;
                uint8* __restrict__ kp = out1_p + (size_t)p * h * w;
                for (int i = 0; i < h; i++) {{
                    const float32* __restrict__ r0 = xp + (size_t)(2 * i) * W;
                    const float32* __restrict__ r1 = r0 + W;
                    for (int j = 0; j < w; j++) {{
                        // the first maximum in row-major order: the maximum of each row pair (the
                        // right one only if larger), then the second row's only if larger; selects
                        // and 0/1 arithmetic, no branches, so that the loop vectorizes
                        const float32 a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
                        const int right0 = b > a, right1 = d > c;
                        const float32 m0 = right0 ? b : a, m1 = right1 ? d : c;
                        const int second = m1 > m0;
                        const float32 m = second ? m1 : m0;
                        const int keep = {positive};
                        yp[i * w + j] = keep ? m : 0.0f;
                        const int k = second * (2 + right1) + (1 - second) * right0;  // 0-3, row-major
                        kp[i * w + j] = (uint8)(keep * k + (1 - keep) * 4);
                    }}
                }}
            }}
            """)
        self.index, self.shape = index.stop_grad(), x.shape
        return y

    def grad(self, dy):
        # dx as 32-bit words: each gets the bits of dy or of +0.0 by a mask (no branches: the loop
        # vectorizes; an inf or nan in dy stays where it is routed, as with a select)
        return jt.code(self.shape, dy.dtype, [self.index, dy], cpu_header=HEADER, cpu_src=f"""
            constexpr int H = {self.shape[2]}, W = {self.shape[3]}, h = H / 2, w = W / 2;
            const int planes = out0_shape0 * out0_shape1;
            #pragma omp parallel for schedule(dynamic, 16)
            for (int p = 0; p < planes; p++) {{
                const uint8* __restrict__ kp = in0_p + (size_t)p * h * w;
                const uint32_t* __restrict__ gp = (const uint32_t*)(in1_p + (size_t)p * h * w);
                uint32_t* __restrict__ dp = (uint32_t*)(out0_p + (size_t)p * H * W);
                for (int i = 0; i < h; i++) {{
                    uint32_t* __restrict__ r0 = dp + (size_t)(2 * i) * W;
                    uint32_t* __restrict__ r1 = r0 + W;
                    for (int j = 0; j < w; j++) {{
                        const uint32_t k = kp[i * w + j], g = gp[i * w + j];
                        r0[2 * j] = g & (0u - (uint32_t)(k == 0));
                        r0[2 * j + 1] = g & (0u - (uint32_t)(k == 1));
                        r1[2 * j] = g & (0u - (uint32_t)(k == 2));
                        r1[2 * j + 1] = g & (0u - (uint32_t)(k == 3));
                    }}
                    if (W > 2 * w) r0[W - 1] = r1[W - 1] = 0;  // an odd last column: in no window
                }}
                for (size_t i = (size_t)2 * h * W; i < (size_t)H * W; i++) dp[i] = 0;  // an odd last row
            }}
            """)


def max_pool2d(x, relu=False):
    """max_pool2d(x, 2), of relu(x) with relu=True: one multi-threaded pass on CPU, Jittor's ops elsewhere."""
    if on_cpu(x):
        return MaxPool2x2(relu)(x)
    return nn.max_pool2d(nn.relu(x) if relu else x, 2)


# ---------------------------------------------------------------- batched matmul
# C = A @ B for every matrix of a batch, each thread owning whole matrices. The loops are written for the three
# layouts the forward and the two gradients need (M x N outputs, K summed); the innermost runs along contiguous rows
# of B and C (explicitly vectorized: GCC's -O2 cost model leaves a loop whose length is no multiple of the vector
# width scalar), and A @ B^T first copies B^T into a thread's buffer so that it can run the same way.
ROWS_TIMES_B = """
                for (int i = 0; i < M; i++) {
                    float32* __restrict__ c = cp + i * N;
                    for (int j = 0; j < N; j++) c[j] = 0;
                    for (int k = 0; k < K; k++) {
                        const float32 s = ap[i * K + k];
                        const float32* __restrict__ r = B + k * N;
                        _Pragma("omp simd") for (int j = 0; j < N; j++) c[j] += s * r[j];
                    }
                }"""  # C = A B with A M x K at ap, B K x N at B
MATMUL_LOOPS = {
    "NN": ROWS_TIMES_B.replace("B + k", "bp + k"),  # a: M x K, b: K x N
    "NT": """  // a: M x K, b: N x K, through t = b^T (K x N)
                for (int j = 0; j < N; j++)
                    for (int k = 0; k < K; k++) t[k * N + j] = bp[j * K + k];""" + ROWS_TIMES_B.replace("B + k", "t + k"),
    "TN": """  // a: K x M, b: K x N
                for (int i = 0; i < M * N; i++) cp[i] = 0;
                for (int k = 0; k < K; k++) {
                    const float32* __restrict__ r = bp + k * N;
                    for (int i = 0; i < M; i++) {
                        const float32 s = ap[k * M + i];
                        float32* __restrict__ c = cp + i * N;
                        _Pragma("omp simd") for (int j = 0; j < N; j++) c[j] += s * r[j];
                    }
                }""",
}


def batched_matmul_code(a, b, layout):
    """The [batch, M, N] products of a and b ([batch, ., .] each) in one of MATMUL_LOOPS' layouts."""
    m, k = (a.shape[2], a.shape[1]) if layout == "TN" else (a.shape[1], a.shape[2])
    n = b.shape[1] if layout == "NT" else b.shape[2]
    return jt.code((a.shape[0], m, n), a.dtype, [a, b], cpu_header=HEADER + "\n// matmul\n#include <vector>", cpu_src=f"""
        constexpr int M = {m}, N = {n}, K = {k};
        const int batch = in0_shape0;
        #pragma omp parallel
        {{
            std::vector<float32> buffer({"K * N" if layout == "NT" else "0"});
            float32* __restrict__ t = buffer.data();
            #pragma omp for schedule(static)
            for (int bi = 0; bi < batch; bi++) {{
                const float32* __restrict__ ap = in0_p + (size_t)bi * M * K;
                const float32* __restrict__ bp = in1_p + (size_t)bi * K * N;
                float32* __restrict__ cp = out0_p + (size_t)bi * M * N;
              {MATMUL_LOOPS[layout]}
            }}
        }}
        """)


class BatchedMatmul(jt.Function):
    """a @ b (trans_b: a @ b^T) over the leading dimensions, float32 sums in index order; the gradients by the same
    kernel: for a @ b, da = dc @ b^T, db = a^T @ dc; for a @ b^T, da = dc @ b, db = dc^T @ a."""

    def __init__(self, trans_b):
        self.trans_b = bool(trans_b)

    def execute(self, a, b):
        self.shapes = a.shape, b.shape
        self.a, self.b = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
        c = batched_matmul_code(self.a, self.b, "NT" if self.trans_b else "NN")
        return c.reshape(*a.shape[:-2], *c.shape[-2:])

    def grad(self, dc):
        dc = dc.reshape(-1, *dc.shape[-2:])
        if self.trans_b:
            da, db = batched_matmul_code(dc, self.b, "NN"), batched_matmul_code(dc, self.a, "TN")
        else:
            da, db = batched_matmul_code(dc, self.b, "NT"), batched_matmul_code(self.a, dc, "TN")
        return da.reshape(self.shapes[0]), db.reshape(self.shapes[1])


def matmul(a, b, trans_b=False):
    """a @ b, or a @ b^T with trans_b, for [..., M, K] by [..., K, N] (or [..., N, K]) with the same leading
    dimensions (the attention's [B, heads, ., .]): one multi-threaded kernel on CPU (Jittor's own batched matmul
    there is a broadcast and a reduce on one thread), Jittor's @ elsewhere."""
    if on_cpu(a) and a.ndim >= 3:
        return BatchedMatmul(trans_b)(a, b)
    return a @ (b.transpose(-2, -1) if trans_b else b)
