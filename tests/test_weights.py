"""weights.py: the rule that sets the own pair's distillation weights (docs/distillers.md)."""
import math

import numpy as np
import pytest
import torch

import weights
from common.config import build_config, own_pair_methods
from torch_.distillers import METHODS


def test_the_cap_scales_what_pushes_harder_than_kd_and_the_grid_picks_on_validation(monkeypatch, capsys):
    """Step 1 with pushes given: FitNet 10x KD's is scaled by 0.1, VID below KD's keeps mdistiller's weight and is
    not searched. Step 2: the best validation top-1 among the runs that did not diverge (None), its weights."""
    push = {"kd": 10.0, "fitnet": 100.0, "rkd": 40.0, "vid": 0.01}
    monkeypatch.setattr(weights, "first_batch", lambda data_dir: (None, None))
    monkeypatch.setattr(weights.engine, "load_teacher", lambda *a, **k: (None, None))
    monkeypatch.setattr(weights, "step_one_push", lambda method, *a, **settings: push[method])
    top1 = {"fitnet": {"x0.0333": 40.0, "x0.1": 41.0, "x0.3": None}, "rkd": {"x0.0833": 39.0, "x0.25": 39.0, "x0.75": 38.0}}
    runs = []

    def grid_run(method, w, args, tag):
        runs.append((method, w))
        return top1[method][tag]

    monkeypatch.setattr(weights, "grid_run", grid_run)
    rows = weights.main(["--methods", "fitnet", "rkd", "vid", "--grid", "--teacher", __file__])
    assert rows["fitnet"]["scale"] == pytest.approx(0.1) and rows["vid"]["scale"] == 1.0
    assert [m for m, _ in runs] == ["fitnet"] * 3 + ["rkd"] * 3  # VID: no grid
    assert [w for m, w in runs if m == "fitnet"] == [{"fitnet_weight": 3.3}, {"fitnet_weight": 10.0},
                                                     {"fitnet_weight": 30.0}]  # mdistiller's 100 x s/3, s, 3s
    assert rows["fitnet"]["chosen"] == 1.0 and rows["fitnet"]["weights"] == {"fitnet_weight": 10.0}
    # a tie keeps the rule's point; RKD's two weights keep their ratio (mdistiller's 25 and 50, x 0.25)
    assert rows["rkd"]["chosen"] == 1.0
    assert rows["rkd"]["weights"] == {"rkd_distance_weight": 6.2, "rkd_angle_weight": 12.0}
    assert rows["vid"]["weights"] == {"vid_weight": 1.0} and "chosen" not in rows["vid"]
    assert 'OWN_PAIR_WEIGHTS = {"fitnet": {\'fitnet_weight\': 10.0}' in capsys.readouterr().out


def test_a_step_one_push_is_the_ratio_of_the_gradient_norms(teachers, tiny_data):
    """On the shared tiny teacher: KD's push computed by hand (one backward per term) equals step_one_push's,
    and every method's push is a finite positive number."""
    from common.batches import normalise
    from common.datasets import load_dataset
    from torch_ import device as td, engine
    data = load_dataset("cifar10", tiny_data)
    images = torch.from_numpy(normalise(data["train_x"][:16], "cifar10"))
    labels = torch.from_numpy(data["train_y"][:16].astype(np.int64))
    teacher, _ = engine.load_teacher(teachers["torch"], td.select_device("cpu"))
    tiny = dict(data_dir=tiny_data, train_size=200, val_size=50)  # the data CRD's setup reads
    pushes = {m: weights.step_one_push(m, teacher, images, labels, **tiny) for m in own_pair_methods(METHODS)}
    assert len(pushes) == 13 and "deit" not in pushes  # the ViT methods train other models
    assert all(math.isfinite(p) and p > 0 for p in pushes.values()), pushes

    config = build_config("student", METHODS, method="kd", mdistiller_weights=True)
    norms = []
    for term in ("ce", "kd"):
        student = engine.build(config, td.select_device("cpu"))
        student.train()
        with torch.no_grad():
            logits_t = teacher(images)
        terms = METHODS["kd"].terms((student(images), None), (logits_t, None), labels, config, 1.0, {})
        terms[term].backward()
        norms.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in student.parameters())))
    assert pushes["kd"] == pytest.approx(norms[1] / norms[0], rel=1e-6)


def test_the_dot_grid_takes_mdistillers_delta_and_its_thirds_and_picks_on_validation(monkeypatch, capsys):
    """weights.py --dot-grid: KD students at 0.025, 0.05 and 0.075, full preset, the full run's teacher; the best
    validation top-1 among those that did not diverge (None), a tie to the larger delta; all diverged: none."""
    runs = []
    top1 = {"dot0.025": 60.0, "dot0.05": 61.5, "dot0.075": None}
    monkeypatch.setattr(weights, "grid_run", lambda method, w, args, tag, preset, teacher:
                        runs.append((method, w, preset, teacher)) or top1[tag])
    grid, chosen = weights.main(["--dot-grid", "--dot-teacher", __file__])
    assert runs == [("kd", {"dot": d}, "full", __file__) for d in (0.025, 0.05, 0.075)]
    assert chosen == pytest.approx(0.05) and grid[chosen] == 61.5
    assert "OWN_PAIR_DOT_DELTA = 0.05" in capsys.readouterr().out
    top1.update({"dot0.025": 61.5})
    assert weights.main(["--dot-grid", "--dot-teacher", __file__])[1] == pytest.approx(0.05)  # the tie
    top1.update({"dot0.025": None, "dot0.05": None})
    assert weights.main(["--dot-grid", "--dot-teacher", __file__])[1] is None
    with pytest.raises(weights.UserError, match="--dot-teacher"):
        weights.main(["--dot-grid", "--dot-teacher", "no/such.ckpt"])
