"""Step-by-step parity (a short align.py run per stage) and evaluation parity of one checkpoint."""
import pytest

import align
from common.checkpoint import make_checkpoint, save_checkpoint
from torch_ import models as tm

pytestmark = pytest.mark.slow  # every test here runs stages, launchers or a benchmark


@pytest.mark.parametrize("stage", [*align.STAGES, "deit --deit-type hard"])  # every method of the table with a
def test_step_parity(stage, tiny_data):  # teacher, teacher, rdrop; DeiT's soft (its default) and hard
    """One short align.py run per stage (its tiny noise removes max-pool ties, as align.py --jitter does), judged
    as align.py judges it (align.verdict: step 1 below STEP1_TOL, then below LATE_TOL or within
    YARDSTICK_FACTOR x torch's own float32-vs-float64 drift)."""
    args = align.parse_args(["--stage", *stage.split(), "--batch-size", "32", "--train-size", "200",
                             "--data-dir", tiny_data, "--steps", "4", "--jitter", "1e-3"])
    assert "hard" not in stage or align.stage_config(args).deit_type == "hard"  # the flag reaches the step
    rows = align.run_parity(args)
    assert rows[0]["rel_loss"] < align.STEP1_TOL and rows[0]["logits"] < 1e-4  # same weights, batch and maths
    ok, message = align.verdict(rows)
    assert ok and f"{align.YARDSTICK_FACTOR:g} x torch's own drift" in message, message


def test_verdict_reports_first_crossing():
    rows = [{"step": i + 1, "rel_loss": v, "loss_torch": 1.0, "loss_jittor": 1.0}
            for i, v in enumerate([1e-7, 2e-6, 3e-5, 2e-3])]
    ok, message = align.verdict(rows)
    assert not ok and "over 1e-5: 3" in message and "over 1e-3: 4" in message


def test_verdict_judges_late_drift_against_torchs_own():
    rows = [{"step": i + 1, "rel_loss": v, "rel_loss_f32_vs_f64": w, "loss_torch": 1.0, "loss_jittor": 1.0}
            for i, (v, w) in enumerate([(1e-7, 1e-7), (2e-3, 1.5e-3), (3e-3, 2e-3)])]
    assert align.verdict(rows)[0]  # 3e-3 <= 2 x 2e-3: the frameworks part no faster than float32 rounding
    rows[2]["rel_loss"] = 5e-3
    assert not align.verdict(rows)[0]
    rows[2].update(rel_loss=float("nan"), loss_jittor=float("nan"))
    ok, message = align.verdict(rows)
    assert not ok and "not finite from step 3" in message


def test_rdrop_masks_are_shared_and_differ_between_passes(tiny_data):
    """--stage rdrop: the two passes of a step draw other masks, and torch and Jittor draw the same ones."""
    import numpy as np
    import torch
    t = align.SharedDropoutTorch(0.3, np.random.default_rng(0))
    j = align.SharedDropoutJittor(0.3, np.random.default_rng(0))
    x = np.ones((4, 50), np.float32)
    a, b = t(torch.from_numpy(x)).numpy(), t(torch.from_numpy(x)).numpy()
    assert not np.array_equal(a == 0, b == 0) and 0.15 < (a == 0).mean() < 0.45
    j.train()
    np.testing.assert_array_equal(j(align.jt.array(x)).numpy(), a)
    np.testing.assert_array_equal(j(align.jt.array(x)).numpy(), b)


def test_a_setting_of_another_method_is_refused():
    with pytest.raises(align.UserError, match="--deit-type is a setting of --method deit, not of --method kd"):
        align.stage_config(align.parse_args(["--stage", "kd", "--deit-type", "hard"]))


def test_rdrop_stage_refuses_a_pair_without_dropout():
    with pytest.raises(align.UserError, match="dropout"):
        align.run_parity(align.parse_args(["--stage", "rdrop", "--pair", "res56_res20", "--steps", "1"]))


def test_same_checkpoint_same_predictions(tiny_data, tmp_path):
    path = str(tmp_path / "s.ckpt")
    save_checkpoint(path, make_checkpoint(tm.get_state(tm.build_model("cifar10quick", seed=2)), {"name": "s"},
                                          "torch", "cifar10quick", "cifar10"))
    result = align.main(["--compare-ckpt", path, "--data-dir", tiny_data])
    assert result["n"] == 70 and result["same_predictions"] >= 99.9 and result["max_rel_logit_diff"] < 1e-4
