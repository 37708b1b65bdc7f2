"""The device and the CPU threads, in Jittor: which device a run uses, how a model gets there, and
waiting for queued work before a clock is read. torch_/device.py is the same file in PyTorch.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.env import prepare_jittor  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402


def to_device(model, device):
    """Jittor places Vars on the device itself (jt.flags.use_cuda); its layout is fixed NCHW."""
    return model


def select_device(choice):
    """'auto' -> the GPU if Jittor finds one, else the CPU; asking for a missing GPU is an error."""
    if choice == "cuda" and not jt.has_cuda:
        raise SystemExit("error: --device cuda, but Jittor finds no CUDA GPU")
    use_cuda = choice == "cuda" or (choice == "auto" and jt.has_cuda)
    jt.flags.use_cuda = int(use_cuda)
    return "cuda" if use_cuda else "cpu"


def sync(device):
    """Jittor is lazy on every device: run everything queued, so a clock read after it measures the work."""
    jt.sync_all()
