"""Every loss in both frameworks, and its float64 test reference, against values computed once and committed
(tests/golden/losses.json, written by tests/make_golden.py): a loss and its reference cannot drift together."""
import json

import numpy as np
import pytest
import torch

import jittor as jt
from jittor_ import distillers as jt_distillers, models as jt_models
from make_golden import GOLDEN, reference
from torch_ import distillers as th_distillers, models as th_models

with open(GOLDEN) as f:
    CASES = json.load(f)
FRAMEWORKS = {"torch": (th_distillers, torch.tensor), "jittor": (jt_distillers, jt.array)}


def arrays(inputs):
    """JSON lists back to the float32 (or int64 labels) arrays they were made from."""
    def one(x):
        a = np.asarray(x)
        return a.astype(np.int64) if a.dtype.kind == "i" else a.astype(np.float32)
    return [[one(v) for v in x] if isinstance(x, list) and np.asarray(x[0]).ndim == 4 else one(x) for x in inputs]


def framework_value(fw, loss, inputs, settings):
    module, tensor = FRAMEWORKS[fw]
    t = lambda x: [tensor(v) for v in x] if isinstance(x, list) else tensor(x)
    args = [t(x) for x in inputs]
    if loss == "kd":
        out = module.kd_loss(*args, settings["T"])
    elif loss == "dkd":
        out = module.dkd_loss(*args, settings["alpha"], settings["beta"], settings["T"])
    elif loss == "fitnet":
        out = module.fitnet_loss(*args)
    elif loss == "at":
        out = module.at_loss(*args, settings["p"])
    elif loss == "nst":
        out = module.nst_loss(*args)
    elif loss == "pkt":
        out = module.pkt_loss(*args)
    elif loss == "rkd":
        out = module.rkd_loss(*args, settings["squared"], settings["eps"], settings["distance_weight"],
                              settings["angle_weight"])
    elif loss == "sp":
        out = module.sp_loss(*args)
    elif loss == "kdsvd":
        out = module.kdsvd_loss(*args, settings["k"])
    elif loss == "vid":  # f_s, f_t, then the regressor's three kernels and the log-scales into a VIDStage
        stage = module.VIDStage(inputs[2].shape[1], inputs[2].shape[0])
        models = {th_distillers: th_models, jt_distillers: jt_models}[module]
        models.load_state(stage, {"regressor.0.weight": inputs[2], "regressor.2.weight": inputs[3],
                                  "regressor.4.weight": inputs[4], "log_scale": inputs[5]}, "golden")
        out = module.vid_loss(stage.regressor, stage.log_scale, args[0], args[1], settings["eps"])
    else:
        out = module.rdrop_loss(*args)
    return float(out.item())


def test_the_golden_file_covers_every_loss():
    assert {c["loss"] for c in CASES} == {"kd", "dkd", "fitnet", "at", "rdrop", "nst", "pkt", "rkd", "sp", "kdsvd", "vid"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_reference_still_gives_the_golden_value(case):
    assert reference(case["loss"], arrays(case["inputs"]), case["settings"]) == pytest.approx(case["value"], rel=1e-12)


@pytest.mark.parametrize("fw", sorted(FRAMEWORKS))
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_loss_gives_the_golden_value(fw, case):
    value = framework_value(fw, case["loss"], arrays(case["inputs"]), case["settings"])
    assert np.isfinite(value) and value == pytest.approx(case["value"], rel=1e-5, abs=1e-6)
