"""The models, in PyTorch. jittor_/models.py is the same file in Jittor, line for line.

Teacher CIFAR10Quick and student CIFAR10Simple reproduce the original experiment;
resnet32x4 / resnet8x4 are mdistiller's CIFAR ResNets (same layer names, so its
weights load by name). Parameter names and shapes are identical in both frameworks,
and the initial values come from common.init_weights (numpy), so a seed gives the
same starting weights in torch and in Jittor.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# torch's BatchNorm already matches the statistics we want (running_var updated with
# the unbiased batch variance, momentum 0.1, eps 1e-5); Jittor's needs a subclass.
BatchNorm2d = nn.BatchNorm2d


class CIFAR10Quick(nn.Module):
    """Teacher: 3 x [conv3x3 + BN + ReLU + maxpool2] (64, 128, 256), FC 4096-1024, ReLU, dropout, FC."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn1 = BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn2 = BatchNorm2d(128)
        self.conv3 = nn.Conv2d(128, 256, 3, padding=1)
        self.bn3 = BatchNorm2d(256)
        self.fc1 = nn.Linear(256 * 4 * 4, 1024)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # 64 x 16 x 16
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # 128 x 8 x 8
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)  # 256 x 4 x 4
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


class CIFAR10Simple(nn.Module):
    """Student: 3 x [conv5x5 pad 2 + maxpool2] (32, 32, 64), FC 1024-64, FC (no BN, no activations)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)  # 32 x 16 x 16
        x = F.max_pool2d(self.conv2(x), 2)  # 32 x 8 x 8
        x = F.max_pool2d(self.conv3(x), 2)  # 64 x 4 x 4
        x = x.reshape(x.shape[0], -1)
        return self.fc2(self.fc1(x))


class BasicBlock(nn.Module):
    """mdistiller's CIFAR ResNet block: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + residual)


class ResNet(nn.Module):
    """mdistiller's CIFAR ResNet (depth 6n+2, basic blocks); resnet8x4/32x4 use 4x wider filters."""

    def __init__(self, depth, num_filters, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(num_filters[0])
        self.layer1 = self._make_layer(num_filters[1], n, stride=1)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.fc = nn.Linear(num_filters[3], num_classes)

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # 32 x 32
        x = self.layer3(self.layer2(self.layer1(x)))  # 8 x 8
        x = x.mean(dim=[2, 3])  # global 8x8 average pool (Jittor's avg_pool2d refuses kernel == input size)
        return self.fc(x)


# name -> (constructor, conv init scheme of common.init_weights)
ARCHS = {
    "cifar10quick": (lambda: CIFAR10Quick(), "uniform"),
    "cifar10simple": (lambda: CIFAR10Simple(), "uniform"),
    "resnet32x4": (lambda: ResNet(32, [32, 64, 128, 256]), "kaiming_normal"),
    "resnet8x4": (lambda: ResNet(8, [32, 64, 128, 256]), "kaiming_normal"),
}


def build_model(name, seed=0):
    """A model with its seeded initial weights (the same numbers as in the other framework)."""
    if name not in ARCHS:
        raise common.UserError(f"unknown model {name!r}; choose one of {', '.join(ARCHS)}")
    constructor, conv_init = ARCHS[name]
    model = constructor()
    load_state(model, common.init_weights(state_shapes(model), seed, conv_init), f"init(seed={seed})")
    return model


def state_shapes(model):
    """{name: shape} of the weights we save: parameters and BN running statistics.

    torch's BN also counts batches (num_batches_tracked); it only matters when
    momentum=None, so it is left out to keep the state identical to Jittor's.
    """
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def get_state(model):
    """Model weights as {name: float32 numpy array}: the checkpoint format of both frameworks."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_state(model, state, source):
    """Copy {name: numpy array} into the model; a clear error names the first mismatch."""
    common.match_state(state, state_shapes(model), source)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in state.items()},
                          strict=False)


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
    torch.set_num_threads(common.num_threads())
    return torch.device("cuda" if use_cuda else "cpu")


def sync(device):
    """Wait for queued GPU work, so a clock read after it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize()
