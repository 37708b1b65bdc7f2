"""Write tests/golden/losses.json: inputs and float64 values of every loss, from the references of
test_losses.py, test_feature_losses.py and test_more_distillers.py, computed once and committed.

    python tests/make_golden.py      # only when a loss's definition changes on purpose; say why in the commit

test_golden.py checks both frameworks' losses and the references themselves against the file, so a
change to a loss and the same change to its test reference cannot pass together unnoticed.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
GOLDEN = os.path.join(HERE, "golden", "losses.json")


def cases():
    """(name, loss, inputs, settings): small inputs, ordinary and extreme, float32 as the frameworks see them."""
    rng = np.random.default_rng(20261205)
    logits = lambda *shape, scale=3.0: (rng.normal(size=shape) * scale).astype(np.float32)
    s, t, y = logits(6, 10), logits(6, 10), rng.integers(0, 10, 6)
    big_s = np.array([[3000.0, -2000.0, 2500.0, 100.0], [4000.0, -20.0, 20.0, 0.0]], np.float32)
    big_t = np.array([[5000.0, 4990.0, -5000.0, 4995.0], [3000.0, 20.0, -20.0, 0.0]], np.float32)
    zero_t = np.array([[1.0, 1000.0, 2.0], [-1000.0, 5.0, 1000.0]], np.float32)  # teacher probabilities 0 in float32
    zero_s = np.array([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]], np.float32)
    fs = [logits(2, 4, 8, 8, scale=1.0), logits(2, 4, 4, 4, scale=1.0)]
    ft = [logits(2, 6, 4, 4, scale=1.0), logits(2, 8, 4, 4, scale=1.0)]
    yield "kd ordinary T4", "kd", [s, t], {"T": 4.0}
    yield "kd teacher zero probabilities T1", "kd", [zero_s, zero_t], {"T": 1.0}
    yield "dkd ordinary T4", "dkd", [s, t, y], {"alpha": 1.0, "beta": 8.0, "T": 4.0}
    yield "dkd logits in the thousands T1", "dkd", [big_s, big_t, np.array([0, 0])], {"alpha": 1.0, "beta": 8.0, "T": 1.0}
    yield "fitnet ordinary", "fitnet", [fs[1], logits(2, 4, 4, 4, scale=1.0)], {}
    yield "at two stages, pooled", "at", [fs, ft], {"p": 2.0}
    yield "at all-zero student feature", "at", [[np.zeros((2, 4, 4, 4), np.float32)], [ft[0]]], {"p": 2.0}
    yield "rdrop ordinary", "rdrop", [s, t], {}
    # drawn after the cases above, whose inputs stay as they were
    pooled_s, pooled_t = logits(4, 8, scale=1.0) + 0.3, logits(4, 12, scale=1.0) + 0.3
    # KDSVD: singular values falling over the width, so that the top vectors are well defined in float32
    spread = lambda *shape: (rng.normal(size=shape) * 0.6 ** np.arange(shape[-1]) + 0.5).astype(np.float32)
    svd_s, svd_t = [spread(2, 3, 4, 4), spread(2, 4, 2, 2)], [spread(2, 5, 4, 4), spread(2, 6, 2, 2)]
    yield "nst two stages, pooled", "nst", [fs, ft], {}
    yield "nst all-zero student feature", "nst", [[np.zeros((2, 4, 4, 4), np.float32)], [ft[0]]], {}
    yield "pkt ordinary", "pkt", [pooled_s, pooled_t], {}
    yield "rkd ordinary", "rkd", [pooled_s, pooled_t], {"squared": False, "eps": 1e-12, "distance_weight": 25.0,
                                                        "angle_weight": 50.0}
    yield "sp last stage", "sp", [[fs[1]], [ft[0]]], {}
    yield "kdsvd two stages k1", "kdsvd", [svd_s, svd_t], {"k": 1}
    # VID, drawn after the cases above: one stage's features, its regressor's three 1x1 kernels (fixed numbers, stored
    # with the case) and log-scales; the student pooled 8 -> 4 px, then the teacher pooled 4 -> 2 px with log-scales
    # at +-100 (the variance 100 + eps, and eps alone)
    kernels = lambda c_s, c_t: [(rng.normal(size=(c_t, c_in, 1, 1)) / np.sqrt(c_in)).astype(np.float32)
                                for c_in in (c_s, c_t, c_t)]
    vid_s, vid_t, vid_w = logits(2, 4, 8, 8, scale=1.0), logits(2, 6, 4, 4, scale=1.0), kernels(4, 6)
    yield "vid student pooled", "vid", [vid_s, vid_t, *vid_w, logits(6, scale=1.0) + 1.0], {"eps": 1e-5}
    vid_s, vid_w, vid_scale = logits(3, 5, 2, 2, scale=1.0), kernels(5, 4), logits(4, scale=1.0) + 1.0
    vid_scale[:2] = [100.0, -100.0]
    yield "vid teacher pooled, log-scales +-100", "vid", [vid_s, logits(3, 4, 4, 4, scale=1.0), *vid_w, vid_scale], {"eps": 1e-5}


def reference(loss, inputs, settings):
    """The float64 value by the test references (written from the papers' definitions)."""
    import torch  # noqa: F401  (the reference modules import both frameworks: torch first, as Jittor advises)
    from common.env import prepare_jittor
    prepare_jittor()
    from test_feature_losses import at_ref, rdrop_ref
    from test_losses import dkd_ref, kd_ref
    from test_more_distillers import kdsvd_ref, nst_ref, pkt_ref, rkd_ref, sp_ref, vid_ref
    if loss == "kd":
        return kd_ref(*inputs, settings["T"])
    if loss == "dkd":
        return dkd_ref(*inputs, settings["alpha"], settings["beta"], settings["T"])
    if loss == "fitnet":
        return float(((np.float64(inputs[0]) - np.float64(inputs[1])) ** 2).mean())
    if loss == "at":
        return at_ref(*inputs, settings["p"])
    if loss == "nst":
        return nst_ref(*inputs)
    if loss == "pkt":
        return pkt_ref(*inputs)
    if loss == "rkd":
        return rkd_ref(*inputs, settings["squared"], settings["eps"], settings["distance_weight"], settings["angle_weight"])
    if loss == "sp":
        return sp_ref(*inputs)
    if loss == "kdsvd":
        return kdsvd_ref(*inputs, settings["k"])
    if loss == "vid":  # f_s, f_t, the regressor's three kernels, the log-scales
        return vid_ref(inputs[2:5], inputs[5], inputs[0], inputs[1], settings["eps"])
    return rdrop_ref(*inputs)


def as_lists(x):
    return [as_lists(v) for v in x] if isinstance(x, list) else np.asarray(x).tolist()


def main():
    rows = [{"name": name, "loss": loss, "inputs": as_lists(inputs), "settings": settings,
             "value": float(reference(loss, inputs, settings))} for name, loss, inputs, settings in cases()]
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    with open(GOLDEN, "w") as f:  # one case per line: a diff shows which value moved
        f.write("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n")
    print(f"wrote {GOLDEN}: {len(rows)} cases")


if __name__ == "__main__":
    main()
