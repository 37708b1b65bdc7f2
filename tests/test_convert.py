"""Weights across frameworks: convert both ways by name, with clear errors."""
import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.errors import CheckpointError, UserError
import convert
import jittor as jt
from jittor_ import models as jm
from torch_ import models as tm


def test_torch_state_dict_to_repo_ckpt_to_jittor_and_back(tmp_path):
    model = tm.build_model("cifar10quick", seed=5)
    torch.save(model.state_dict(), tmp_path / "t.pt")
    assert convert.convert(str(tmp_path / "t.pt"), str(tmp_path / "t.ckpt")) == "cifar10quick"  # arch found by shapes
    ckpt = load_checkpoint(str(tmp_path / "t.ckpt"))
    assert ckpt["framework"] == "torch" and ckpt["arch"] == "cifar10quick"
    j = jm.build_model("cifar10quick")
    jm.load_state(j, ckpt["model"], "t.ckpt")
    convert.convert(str(tmp_path / "t.ckpt"), str(tmp_path / "j.pkl"))
    j2 = jm.build_model("cifar10quick")
    j2.load_state_dict(jt.load(str(tmp_path / "j.pkl")))  # plain Jittor code loads it
    convert.convert(str(tmp_path / "j.pkl"), str(tmp_path / "back.pt"), arch="cifar10quick")
    back = torch.load(tmp_path / "back.pt")
    for name, value in model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[name].numpy(), value.numpy(), err_msg=name)
            np.testing.assert_array_equal(jm.get_state(j2)[name], value.numpy(), err_msg=name)


def test_mdistiller_style_checkpoint(tmp_path):
    model = tm.build_model("resnet8x4")
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 240}, tmp_path / "m.pth")
    assert convert.convert(str(tmp_path / "m.pth"), str(tmp_path / "m.ckpt")) == "resnet8x4"


def test_mismatch_names_the_first_bad_weight(tmp_path):
    state = tm.build_model("cifar10simple").state_dict()
    state["fc2.weight"] = torch.zeros(3, 64)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="fc2.weight"):
        convert.convert(str(tmp_path / "bad.pt"), str(tmp_path / "bad.ckpt"), arch="cifar10simple")
    with pytest.raises(CheckpointError, match="matches none of the known models"):
        convert.convert(str(tmp_path / "bad.pt"), str(tmp_path / "bad.ckpt"))
    with pytest.raises(UserError, match="unknown extension"):
        convert.convert(str(tmp_path / "bad.pt"), str(tmp_path / "bad.h5"))
    assert not (tmp_path / "bad.ckpt").exists()
