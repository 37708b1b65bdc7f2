"""The device and the CPU threads, in PyTorch: which device a run uses, how a model gets there, and
waiting for queued work before a clock is read. jittor_/device.py is the same file in Jittor.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.distributed import launch  # noqa: E402
from common.env import num_threads  # noqa: E402
import torch  # noqa: E402


def to_device(model, device):
    """Move the model to the device, in channels-last memory layout (NHWC).

    Same values, different layout: oneDNN's CPU convolutions run faster on it (bench.py measured
    +40-60% evaluation and +5-20% training images/s). Jittor keeps its own layout.
    """
    return model.to(device, memory_format=torch.channels_last)


def select_device(choice):
    """'auto' -> the GPU if torch finds one, else the CPU; asking for a missing GPU is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch finds no CUDA GPU")
    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    torch.set_num_threads(num_threads())
    if not use_cuda:
        return torch.device("cpu")
    device = torch.device("cuda", launch().local_rank % torch.cuda.device_count())  # one GPU per rank
    torch.cuda.set_device(device)
    return device


def sync(device):
    """Wait for queued GPU work, so a clock read after it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize()
