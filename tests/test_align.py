"""Step-by-step parity (a short align.py run per stage) and evaluation parity of one checkpoint."""
import pytest

import align
from common.checkpoint import save_checkpoint
from torch_ import models as tm


@pytest.mark.parametrize("stage", ["teacher", "kd", "dkd"])
def test_step_parity(stage, tiny_data):
    base = ["--stage", stage, "--steps", "6", "--batch-size", "32", "--train-size", "200", "--data-dir", tiny_data]
    rows = align.run_parity(align.parse_args(base))
    assert rows[0]["rel_loss"] < 1e-5  # step 1: same weights, same batch, same maths
    assert rows[0]["logits"] < 1e-4
    # later steps: torch vs Jittor may drift no more than float32 rounding alone moves torch
    # (torch float32 vs float64), with 10x slack and a floor for the first steps
    rows = align.run_parity(align.parse_args(base + ["--jitter", "1e-3"]))
    drift = max(r["rel_loss"] for r in rows)
    float32_noise = max(r["rel_loss_f32_vs_f64"] for r in rows)
    assert drift < 10 * float32_noise + 1e-5, ([r["rel_loss"] for r in rows], [r["rel_loss_f32_vs_f64"] for r in rows])


def test_verdict_reports_first_crossing():
    rows = [{"step": i + 1, "rel_loss": v} for i, v in enumerate([1e-7, 2e-6, 3e-5, 2e-3])]
    ok, message = align.verdict(rows)
    assert not ok and "over 1e-5: 3" in message and "over 1e-3: 4" in message


def test_same_checkpoint_same_predictions(tiny_data, tmp_path):
    path = str(tmp_path / "s.ckpt")
    save_checkpoint(path, {"model": tm.get_state(tm.build_model("cifar10quick", seed=2)), "optimizer": {},
                                  "epoch": 0, "best_top1": 0.0, "config": {"name": "s"}, "framework": "torch",
                                  "arch": "cifar10quick"})
    result = align.main(["--compare-ckpt", path, "--data-dir", tiny_data])
    assert result["n"] == 70 and result["same_predictions"] >= 99.9 and result["max_rel_logit_diff"] < 1e-4
