"""Initial weights drawn in numpy by name, so both frameworks start from the same numbers."""
import hashlib
import math

import numpy as np

from common.errors import CheckpointError

INIT_SCHEMES = {
    # torch's defaults (Jittor's own match): conv/linear weights and biases U(+-1/sqrt(fan_in))
    "uniform": "torch default",
    # mdistiller resnet.py / resnetv2.py: kaiming_normal_(mode="fan_out") convs, linear left at the default
    "kaiming_normal": "convs N(0, 2/fan_out), the rest torch default",
    # mdistiller wrn.py: convs normal(0, sqrt(2/n)), n = k*k*out (= fan_out), linear bias zeroed
    "kaiming_normal_zero_bias": "convs N(0, 2/fan_out), biases 0, linear weights torch default",
    # mdistiller vgg.py / mobilenetv2.py: as wrn, and linear weights normal(0, 0.01), all biases zeroed
    "kaiming_normal_small_fc": "convs N(0, 2/fan_out), linear weights N(0, 0.01^2), biases 0",
    # DeiT / timm's VisionTransformer: linear weights, tokens and position embedding trunc_normal_(std=0.02), linear
    # biases 0, LayerNorm 1 and 0; the patch-embedding conv keeps torch's default
    "vit": "linear weights and tokens truncated N(0, 0.02^2), biases 0, the patch conv torch default",
}
TOKENS = ("cls_token", "dist_token", "pos_embed")  # a ViT's learned tokens and position embedding


def trunc_normal(rng, std, shape, bound=2.0):
    """timm's trunc_normal_(std=std): N(0, std^2) with values beyond +-bound drawn again. timm's bounds are absolute
    (a=-2, b=2), so at std 0.02 nothing is cut in practice; kept for the definition's sake."""
    value = rng.normal(0.0, std, size=shape)
    while (np.abs(value) > bound).any():
        out = np.abs(value) > bound
        value[out] = rng.normal(0.0, std, size=int(out.sum()))
    return value


def init_weights(shapes, seed, scheme="uniform"):
    """Initial values for a model's state, given {name: shape} in state-dict order.

    scheme is one of INIT_SCHEMES (the init code of the model's source). Conv weights are
    4-D, linear weights 2-D, 1-D weights are BatchNorm scales (1) with biases 0;
    running_mean 0, running_var 1 (a ViT's LayerNorm the same 1 and 0; its TOKENS 3-D). fan_in / fan_out count
    the weight's own shape, so a grouped conv (out, in/groups, k, k) gets torch's fans. Draws happen in state order,
    one per random entry, so the numbers are the same whichever framework asks.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init_weights: unknown scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    zero_bias = scheme in ("kaiming_normal_zero_bias", "kaiming_normal_small_fc")
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        leaf, owner = name.rsplit(".", 1)[-1], name.rsplit(".", 1)[0]
        weight_shape = shapes.get(owner + ".weight")
        if leaf in TOKENS and scheme == "vit":
            value = trunc_normal(rng, 0.02, shape)
        elif leaf == "running_mean" or (leaf == "bias" and (len(weight_shape) == 1 or zero_bias)):
            value = np.zeros(shape)
        elif leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            value = np.ones(shape)
        elif leaf in ("weight", "bias"):
            fan_in = int(np.prod(weight_shape[1:]))
            if len(weight_shape) == 2 and scheme == "vit":
                value = trunc_normal(rng, 0.02, shape) if leaf == "weight" else np.zeros(shape)
            elif leaf == "weight" and len(shape) == 4 and scheme not in ("uniform", "vit"):
                fan_out = shape[0] * int(np.prod(shape[2:]))
                value = rng.normal(0.0, np.sqrt(2.0 / fan_out), size=shape)
            elif leaf == "weight" and len(shape) == 2 and scheme == "kaiming_normal_small_fc":
                value = rng.normal(0.0, 0.01, size=shape)
            else:
                bound = 1.0 / np.sqrt(fan_in)
                value = rng.uniform(-bound, bound, size=shape)
        else:
            raise KeyError(f"init_weights: no rule for state entry {name!r}")
        out[name] = value.astype(np.float32)
    return out



def no_weight_decay(name, shape):
    """DeiT's parameters without weight decay under AdamW (timm's param_groups_weight_decay): biases, 1-D weights
    (LayerNorm's), the tokens and the position embedding."""
    return name.endswith(".bias") or len(shape) <= 1 or name.rsplit(".", 1)[-1] in TOKENS


BUFFERS = ("running_mean", "running_var",  # BatchNorm's running statistics
           "memory_v1", "memory_v2", "z", "draws")  # CRD's memory banks, normalisation constants, batches drawn


def is_buffer(name):
    """Saved with the weights, but not trained (Jittor lists them as parameters): BUFFERS, by the name's last part."""
    return name.rsplit(".", 1)[-1] in BUFFERS



def state_digest(state):
    """A short fingerprint of a {name: array} state (the teacher a student learns from, for --resume)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]



def nonfinite_weights(state):
    """Names of the arrays of a {name: array} state that hold a NaN or an infinity, in state order.

    Element by element (np.isfinite), not by a sum: large finite weights could sum to inf.
    """
    return [name for name, value in state.items() if not np.isfinite(np.asarray(value)).all()]


def nonfinite_message(state, path, shown=3):
    """'<path>: weights a, b, c and 2 more (5 of 40 arrays) hold NaN or infinite values', or None when all are finite."""
    bad = nonfinite_weights(state)
    if not bad:
        return None
    names = ", ".join(bad[:shown]) + (f" and {len(bad) - shown} more" if len(bad) > shown else "")
    return f"{path}: weights {names} ({len(bad)} of {len(state)} arrays) hold NaN or infinite values"


def check_finite_weights(state, path, what):
    """Refuse weights with NaN or inf for `what` (the flag: "--teacher", "--init"): they would only give NaN."""
    message = nonfinite_message(state, path)
    if message:
        raise CheckpointError(f"{what} {message}; use a checkpoint saved before its run diverged, "
                              f"or train it again")


def finite_weights_warning(state, path):
    """One line 'warning: ...' for weights with NaN or inf (test.py still evaluates them), or None."""
    message = nonfinite_message(state, path)
    return f"warning: {message}; the model's outputs and accuracy will be meaningless" if message else None


def ofd_margins(scale, shift):
    """OFD's margin of each channel of a BatchNorm that precedes a ReLU (Heo et al. 2019; mdistiller's
    init_ofd_modules), from the BN's weight (scale, the std of its output) and bias (shift, its mean): the expected
    value of the negative responses, E[x | x < 0] = m - s phi(m/s) / Phi(-m/s) for x ~ N(m, s^2), where Phi(-m/s) >
    0.001, else -3 s. In float64 numpy, the same for both frameworks (mdistiller: scipy's norm.cdf, Phi(z) =
    erfc(-z / sqrt 2) / 2 here). A scale of 0 is floored at 1e-12, which gives the limits: m for a constant m < 0,
    about 0 for m >= 0."""
    s = np.maximum(np.abs(np.asarray(scale, dtype=np.float64)), 1e-12)
    m = np.asarray(shift, dtype=np.float64)
    z = m / s
    cdf = 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))  # Phi(-z)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = m - s * np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi) / cdf
    return np.where(cdf > 0.001, expected, -3 * s)
