"""The models, in PyTorch. jittor_/models.py is the same file in Jittor, line for line.

Teacher CIFAR10Quick and student CIFAR10Simple reproduce the original experiment;
the rest is mdistiller's CIFAR model zoo (mdistiller/models/cifar/), under its
--model names and with its parameter names, so its released checkpoints load by name.
Parameter names and shapes are identical in both frameworks,
and the initial values come from common.weights.init_weights (numpy), so a seed gives the
same starting weights in torch and in Jittor.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.errors import UserError  # noqa: E402
from common.foreign import match_state  # noqa: E402
from common.weights import init_weights  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch_.parallel import BatchNorm2d, Dropout  # noqa: E402  (the layers that are exact under data-parallel)


def max_pool2d(x, relu=False):
    """The models' 2x2 max-pool (kernel 2, stride 2), of relu(x) with relu=True: F.max_pool2d, F.relu. In
    jittor_/models.py one multi-threaded kernel on CPU (jittor_/kernels.py)."""
    return F.max_pool2d(F.relu(x) if relu else x, 2)


def matmul(a, b, trans_b=False):
    """a @ b, or a @ b^T with trans_b, over the leading dimensions (the attention's [B, heads, ., .]). In
    jittor_/models.py one multi-threaded kernel on CPU (jittor_/kernels.py)."""
    return a @ (b.transpose(-2, -1) if trans_b else b)


class CIFAR10Quick(nn.Module):
    """Teacher: 3 x [conv3x3 + BN + ReLU + maxpool2] (64, 128, 256), FC 4096-1024, ReLU, dropout, FC."""

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("bn1", "relu_pool"), ("bn2", "relu_pool"), ("bn3", "relu_pool")]  # 64@16, 128@8, 256@4
    # mdistiller's `preact_feats` (OFD, ReviewKD): the same stages before the ReLU (max-pool commutes with it, so the
    # ReLU of each is the feature above), and the BatchNorm whose output reaches that ReLU (OFD's margins), per stage
    PREACT = [("bn1", "pool"), ("bn2", "pool"), ("bn3", "pool")]
    BN_BEFORE_RELU = ["bn1", "bn2", "bn3"]
    CLASSIFIER = "fc2"  # its input is `pooled_feat`

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1)
        self.bn1 = BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn2 = BatchNorm2d(128)
        self.conv3 = nn.Conv2d(128, 256, 3, padding=1)
        self.bn3 = BatchNorm2d(256)
        self.fc1 = nn.Linear(256 * 4 * 4, 1024)
        self.dropout = Dropout(0.5)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = max_pool2d(self.bn1(self.conv1(x)), relu=True)  # 64 x 16 x 16
        x = max_pool2d(self.bn2(self.conv2(x)), relu=True)  # 128 x 8 x 8
        x = max_pool2d(self.bn3(self.conv3(x)), relu=True)  # 256 x 4 x 4
        x = x.reshape(x.shape[0], -1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


class CIFAR10Simple(nn.Module):
    """Student: 3 x [conv5x5 pad 2 + maxpool2] (32, 32, 64), FC 1024-64, FC (no BN, no activations)."""

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("conv1", "pool"), ("conv2", "pool"), ("conv3", "pool")]  # 32@16, 32@8, 64@4
    PREACT = FEATURES  # no activations: the pre-activation features are the features (no BatchNorm either)
    CLASSIFIER = "fc2"

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = max_pool2d(self.conv1(x))  # 32 x 16 x 16
        x = max_pool2d(self.conv2(x))  # 32 x 8 x 8
        x = max_pool2d(self.conv3(x))  # 64 x 4 x 4
        x = x.reshape(x.shape[0], -1)
        return self.fc2(self.fc1(x))


# ----------------------------------------------------------------------------
# mdistiller's CIFAR model zoo (mdistiller/models/cifar/). Parameter names are
# mdistiller's, so its released checkpoints load as they are; each forward does the
# same layers in the same order. The one difference: every model returns the logits
# only (mdistiller returns (logits, features)); forward_features gives mdistiller's features.
# ----------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """resnet.py's BasicBlock: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.downsample = downsample
        self.preact = nn.Identity()  # its output is the sum before the last ReLU, for a hook to read (preact_feats)

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.preact(out + residual))


class ResNet(nn.Module):
    """mdistiller's resnet.py ResNet (depth 6n+2, basic blocks). Returns the logits only (mdistiller: (logits, feats)).

    resnet20/32/56/110 have widths 16, 16, 32, 64 (the stem's first); resnet8x4/32x4 4x wider ones.
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("bn1", "relu"), ("layer1", None), ("layer2", None), ("layer3", None)]
    CLASSIFIER = "fc"

    def __init__(self, depth, num_filters, num_classes=10):
        super().__init__()
        assert (depth - 2) % 6 == 0, "ResNet depth is 6n+2"
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(num_filters[0])
        self.layer1 = self._make_layer(num_filters[1], n, stride=1)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.fc = nn.Linear(num_filters[3], num_classes)
        # mdistiller's `preact_feats` (OFD, ReviewKD): the stem as in feats (mdistiller's f0, after its ReLU), then each
        # stage's last block before its last ReLU; the stages' BatchNorms mdistiller's get_bn_before_relu names (OFD)
        self.PREACT = [("bn1", "relu")] + [(f"layer{i}.{n - 1}.preact", None) for i in (1, 2, 3)]
        self.BN_BEFORE_RELU = [f"layer{i}.{n - 1}.bn2" for i in (1, 2, 3)]

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


class Bottleneck(nn.Module):
    """resnetv2.py's Bottleneck: 1x1 (planes), 3x3 (stride), 1x1 (4 x planes), BN after each, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, 1, bias=False)
        self.bn3 = BatchNorm2d(self.expansion * planes)
        self.shortcut = None  # identity (mdistiller: an empty nn.Sequential, no weights)
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, self.expansion * planes, 1, stride=stride, bias=False),
                                          BatchNorm2d(self.expansion * planes))
        self.preact = nn.Identity()  # its output is the sum before the last ReLU, for a hook to read (preact_feats)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(self.preact(out + (x if self.shortcut is None else self.shortcut(x))))


class ResNetV2(nn.Module):
    """mdistiller's resnetv2.py ResNet (ResNet50): ImageNet-style widths 64-512 on a 3x3 stride-1 stem.

    Returns the logits only (mdistiller: (logits, feats)).
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("bn1", "relu"), ("layer1", None), ("layer2", None), ("layer3", None), ("layer4", None)]
    CLASSIFIER = "linear"

    def __init__(self, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)
        # mdistiller's preact_feats and get_bn_before_relu: the stem as in feats, then each stage's last block before
        # its last ReLU; the stages' last bn3
        self.PREACT = [("bn1", "relu")] + [(f"layer{i}.{n - 1}.preact", None) for i, n in enumerate(num_blocks, 1)]
        self.BN_BEFORE_RELU = [f"layer{i}.{n - 1}.bn3" for i, n in enumerate(num_blocks, 1)]

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(Bottleneck(self.in_planes, planes, s))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # 32 x 32
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # 4 x 4
        return self.linear(x.mean(dim=[2, 3]))  # mdistiller: AdaptiveAvgPool2d((1, 1))


class WideBlock(nn.Module):
    """wrn.py's BasicBlock, pre-activation: BN-ReLU-conv3x3-BN-ReLU-conv3x3, + shortcut (no ReLU after).

    When the width changes, a 1x1 convShortcut takes the pre-activated input; otherwise the
    raw input is added. (mdistiller's dropout is off: dropRate is 0 for every zoo model.)
    """

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.convShortcut = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return shortcut + out


class NetworkBlock(nn.Module):
    """wrn.py's NetworkBlock: n WideBlocks under .layer (the name is part of mdistiller's weight names)."""

    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """mdistiller's wrn.py WideResNet (depth 6n+4, widths 16, 16k, 32k, 64k): wrn_16_2, wrn_40_1, wrn_40_2.

    Returns the logits only (mdistiller: (logits, feats)). For its pre-activation features
    mdistiller runs block2's and block3's first bn1 and the final bn1 a second time on the same
    input, so in train mode those three update their running statistics twice per step
    (0.81 old + 0.19 batch). We repeat those calls in train mode, so that a WRN trained here ends
    with the running statistics mdistiller's would have; in eval mode they change nothing.
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("conv1", None), ("block1", None), ("block2", None), ("block3", None)]  # raw residual stream
    CLASSIFIER = "fc"
    # mdistiller's preact_feats: each stage's output through the BatchNorm that opens the next (the final bn1 for the
    # last), the ones its get_bn_before_relu names; the first call's output (the same numbers as the repeat's)
    PREACT = [("conv1", None), ("block2.layer.0.bn1", None), ("block3.layer.0.bn1", None), ("bn1", None)]
    BN_BEFORE_RELU = ["block2.layer.0.bn1", "block3.layer.0.bn1", "bn1"]

    def __init__(self, depth, widen_factor, num_classes=10):
        super().__init__()
        assert (depth - 4) % 6 == 0, "WRN depth is 6n+4"
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = BatchNorm2d(channels[3])
        self.fc = nn.Linear(channels[3], num_classes)

    def forward(self, x):
        f1 = self.block1(self.conv1(x))
        f2 = self.block2(f1)
        f3 = self.block3(f2)  # 8 x 8
        logits = self.fc(F.relu(self.bn1(f3)).mean(dim=[2, 3]))  # mdistiller: avg_pool2d(8)
        if self.training:  # mdistiller's pre-activation features: a second BN statistics update (see above)
            self.block2.layer[0].bn1(f1), self.block3.layer[0].bn1(f2), self.bn1(f3)
        return logits


def vgg_block(widths, in_channels):
    """vgg.py's _make_layers with BN: [conv3x3 (with bias), BN, ReLU] per width, the last ReLU left to forward.

    So the weight names are blockK.{3i}.weight/bias (conv) and blockK.{3i+1}.* (BN), as mdistiller's.
    """
    layers = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), BatchNorm2d(w), nn.ReLU()]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """mdistiller's vgg.py VGG with BatchNorm (vgg8_bn, vgg13_bn): five conv blocks, max-pools between, one FC.

    Returns the logits only (mdistiller: (logits, feats)).
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("block0", "relu"), ("block1", "relu"), ("block2", "relu"), ("block3", "relu"), ("block4", "relu")]
    CLASSIFIER = "classifier"

    def __init__(self, widths, num_classes=10):
        super().__init__()
        self.block0 = vgg_block(widths[0], 3)
        self.block1 = vgg_block(widths[1], widths[0][-1])
        self.block2 = vgg_block(widths[2], widths[1][-1])
        self.block3 = vgg_block(widths[3], widths[2][-1])
        self.block4 = vgg_block(widths[4], widths[3][-1])
        self.classifier = nn.Linear(512, num_classes)
        # mdistiller's preact_feats: block0 as in feats, then blocks 1-4 before their ReLU, each ending in the BatchNorm
        # its get_bn_before_relu names
        self.PREACT = [("block0", "relu")] + [(f"block{k}", None) for k in (1, 2, 3, 4)]
        self.BN_BEFORE_RELU = [f"block{k}.{len(getattr(self, f'block{k}')) - 1}" for k in (1, 2, 3, 4)]

    def forward(self, x):
        h = x.shape[2]
        x = max_pool2d(self.block0(x), relu=True)  # 16 x 16
        x = max_pool2d(self.block1(x), relu=True)  # 8 x 8
        x = max_pool2d(self.block2(x), relu=True)  # 4 x 4
        x = F.relu(self.block3(x))
        if h == 64:  # mdistiller pools here only for 64 x 64 inputs (Tiny-ImageNet)
            x = max_pool2d(x)
        x = F.relu(self.block4(x))
        return self.classifier(x.mean(dim=[2, 3]))  # mdistiller: AdaptiveAvgPool2d((1, 1))


def conv_bn_relu(inp, oup, kernel, stride):
    """mobilenetv2.py's conv_bn (3x3) / conv_1x1_bn: conv (no bias), BN, ReLU as one Sequential."""
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), BatchNorm2d(oup), nn.ReLU())


class InvertedResidual(nn.Module):
    """mobilenetv2.py's block: 1x1 expand, 3x3 depthwise (stride), 1x1 project (linear), + input if same shape.

    The ReLU modules sit inside .conv as in mdistiller, so the weight indices (conv.0, 1, 3, 4, 6, 7) match.
    """

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), BatchNorm2d(hidden), nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, bias=False), BatchNorm2d(oup))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """mdistiller's mobilenetv2.py MobileNetV2; --model MobileNetV2 is its mobile_half (expansion 6, width 0.5).

    Returns the logits only (mdistiller: (logits, feats)).
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("conv1", None), ("blocks.1", None), ("blocks.2", None), ("blocks.4", None), ("blocks.6", None)]
    CLASSIFIER = "classifier"

    def __init__(self, expansion=6, width_mult=0.5, num_classes=10):
        super().__init__()
        settings = [  # expansion, channels, blocks, stride of the first block
            [1, 16, 1, 1], [expansion, 24, 2, 1], [expansion, 32, 3, 2], [expansion, 64, 4, 2],
            [expansion, 96, 3, 1], [expansion, 160, 3, 2], [expansion, 320, 1, 1]]
        input_channel = int(32 * width_mult)
        self.conv1 = conv_bn_relu(3, input_channel, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in settings:
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_bn_relu(input_channel, last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last_channel, num_classes))

    def forward(self, x):
        x = self.conv1(x)  # 16 x 16
        for block in self.blocks:
            x = block(x)  # 2 x 2 after the last
        x = self.conv2(x)
        return self.classifier(x.mean(dim=[2, 3]))  # mdistiller: AvgPool2d(2, ceil_mode=True) on the 2 x 2 map


def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: [N, g*c, H, W] -> [N, g, c, H, W] -> [N, c, g, H, W] -> [N, c*g, H, W]."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    """ShuffleNetv1.py's Bottleneck: grouped 1x1, shuffle, depthwise 3x3 (stride), grouped 1x1.

    A stride-2 block concatenates the 3x3/2 average-pooled input (so it only makes out_planes -
    in_planes channels); a stride-1 block adds the input. The first 1x1 after the 24-channel stem is not grouped.
    """

    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid_planes = int(out_planes / 4)
        g = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=g, bias=False)
        self.bn1 = BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False)
        self.bn2 = BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, 1, groups=groups, bias=False)
        self.bn3 = BatchNorm2d(out_planes)
        self.preact = nn.Identity()  # its output is the block's output before the last ReLU (preact_feats)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.conv1.groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(self.preact(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)))
        return F.relu(self.preact(out + x))


class ShuffleNetV1(nn.Module):
    """mdistiller's ShuffleNetv1.py ShuffleNet, ShuffleV1 config: widths 240, 480, 960, 4/8/4 blocks, 3 groups.

    Returns the logits only (mdistiller: (logits, feats)).
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("bn1", "relu"), ("layer1", None), ("layer2", None), ("layer3", None)]
    CLASSIFIER = "linear"

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups=3, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)
        # mdistiller's preact_feats: the stem as in feats, then each stage's last block before its last ReLU. It names
        # no BatchNorms before ReLUs (its get_bn_before_relu: not supported as an OFD teacher)
        self.PREACT = [("bn1", "relu")] + [(f"layer{i}.{n - 1}.preact", None) for i, n in enumerate(num_blocks, 1)]

    def _make_layer(self, out_planes, blocks, groups):
        layers = []
        for i in range(blocks):
            cat_planes = self.in_planes if i == 0 else 0  # the first block concatenates its pooled input
            layers.append(ShuffleV1Block(self.in_planes, out_planes - cat_planes, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # 32 x 32
        x = self.layer3(self.layer2(self.layer1(x)))  # 4 x 4
        return self.linear(x.mean(dim=[2, 3]))  # mdistiller: avg_pool2d(4)


class ShuffleV2Block(nn.Module):
    """ShuffleNetv2.py's BasicBlock: split the channels in half; 1x1, dw 3x3, 1x1 on the second; concat, shuffle."""

    def __init__(self, in_channels):
        super().__init__()
        c = in_channels // 2  # mdistiller: int(in_channels * split_ratio), split_ratio 0.5
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn2 = BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = BatchNorm2d(c)
        self.preact = nn.Identity()  # its output is mdistiller's preact: the concat before the ReLU and the shuffle

    def forward(self, x):
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = self.preact(torch.cat([x1, self.bn3(self.conv3(out))], 1))
        return channel_shuffle(F.relu(out), 2)  # x1 is a ReLU's output (shuffled): the ReLU leaves it as it is


class ShuffleV2DownBlock(nn.Module):
    """ShuffleNetv2.py's DownBlock: two stride-2 branches (dw3x3-1x1 | 1x1-dw3x3-1x1), concat, shuffle."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid_channels = out_channels // 2
        # left
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn2 = BatchNorm2d(mid_channels)
        # right
        self.conv3 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn3 = BatchNorm2d(mid_channels)
        self.conv4 = nn.Conv2d(mid_channels, mid_channels, 3, stride=2, padding=1, groups=mid_channels, bias=False)
        self.bn4 = BatchNorm2d(mid_channels)
        self.conv5 = nn.Conv2d(mid_channels, mid_channels, 1, bias=False)
        self.bn5 = BatchNorm2d(mid_channels)

    def forward(self, x):
        out1 = self.bn1(self.conv1(x))
        out1 = F.relu(self.bn2(self.conv2(out1)))
        out2 = F.relu(self.bn3(self.conv3(x)))
        out2 = self.bn4(self.conv4(out2))
        out2 = F.relu(self.bn5(self.conv5(out2)))
        return channel_shuffle(torch.cat([out1, out2], 1), 2)


class ShuffleNetV2(nn.Module):
    """mdistiller's ShuffleNetv2.py ShuffleNetV2, net_size 1 (ShuffleV2): widths 116, 232, 464, 1024, 3/7/3 blocks.

    Returns the logits only (mdistiller: (logits, feats)).
    """

    # mdistiller's `feats`: the module whose output each is, and what follows it there (forward_features)
    FEATURES = [("bn1", "relu"), ("layer1", None), ("layer2", None), ("layer3", None)]
    CLASSIFIER = "linear"

    def __init__(self, out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, bias=False)
        self.bn2 = BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        # mdistiller's preact_feats: the stem as in feats, then each stage's last block's concat before its ReLU and
        # shuffle (so feats = shuffle(ReLU(preact_feats))). No BatchNorms before ReLUs (not an OFD teacher there)
        self.PREACT = [("bn1", "relu")] + [(f"layer{i}.{n}.preact", None) for i, n in enumerate(num_blocks, 1)]

    def _make_layer(self, out_channels, blocks):
        layers = [ShuffleV2DownBlock(self.in_channels, out_channels)]
        layers += [ShuffleV2Block(out_channels) for _ in range(blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # 32 x 32
        x = self.layer3(self.layer2(self.layer1(x)))  # 4 x 4
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(x.mean(dim=[2, 3]))  # mdistiller: avg_pool2d(4)


# ----------------------------------------------------------------------------
# The transformer track: a small ViT for 32x32 images, written out by hand (neither framework's attention module
# returns the per-head scores that TinyBERT compares, and Jittor's skips attention dropout). Pre-norm blocks as
# DeiT's (timm's VisionTransformer), with its parameter names; DeiT's distillation token and head as an option.
# ----------------------------------------------------------------------------
LN_EPS = 1e-6  # DeiT's LayerNorm eps (timm: partial(nn.LayerNorm, eps=1e-6)); both frameworks default to 1e-5


class Attention(nn.Module):
    """Multi-head self-attention. `scores` is an identity on the pre-softmax scores [B, heads, L, L], for a hook to
    read (features.forward_features, TinyBERT); attention dropout on the probabilities, as timm."""

    def __init__(self, dim, heads, dropout):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.scores = nn.Identity()
        self.attn_drop = Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = Dropout(dropout)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, heads, L, C / heads]
        scores = self.scores(matmul(q * self.scale, k, trans_b=True))
        attn = self.attn_drop(F.softmax(scores, dim=-1))
        x = matmul(attn, v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """The block's MLP: Linear, exact GELU (erf: Jittor has no tanh form), dropout, Linear, dropout."""

    def __init__(self, dim, hidden, dropout):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.drop1 = Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = Dropout(dropout)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim, heads, mlp_ratio, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, dim * mlp_ratio, dropout)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A ViT on 32x32 images: 4x4 patches (64 tokens) embedded by a conv, a class token (and with distilled=True
    DeiT's distillation token), learned position embeddings, depth pre-norm blocks, a final LayerNorm, a head on the
    class token (and head_dist on the distillation token).

    Features (features.forward_features): `feats` are the hidden states, [0] the embedding output and [i] block i's
    output (the residual stream, not normalised); `attention` block i's pre-softmax scores [B, heads, L, L].
    A distilled model returns the class head's logits in training and the mean of its two heads in evaluation
    (DeiT's switch); both heads' logits are the feature `heads`.
    """

    CLASSIFIER = "head"

    def __init__(self, depth, dim, heads, mlp_ratio, num_classes=10, distilled=False, dropout=0.1, patch=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)  # timm: patch_embed.proj
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, (32 // patch) ** 2 + 1 + distilled, dim))
        self.pos_drop = Dropout(dropout)
        self.embed = nn.Identity()  # its output is hidden state 0, for a hook to read
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if distilled else None
        self.FEATURES = [("embed", None)] + [(f"blocks.{i}", None) for i in range(depth)]
        self.ATTENTION = [f"blocks.{i}.attn.scores" for i in range(depth)]
        if distilled:
            self.HEADS = ["head", "head_dist"]  # the class head and the distillation head: both read by DeiT and test.py

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, 64, dim]
        tokens = [self.cls_token] + ([self.dist_token] if self.dist_token is not None else [])
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in tokens] + [x], dim=1) + self.pos_embed
        x = self.blocks(self.embed(self.pos_drop(x)))
        x = self.norm(x)
        logits = self.head(x[:, 0])
        if self.head_dist is None:
            return logits
        logits_dist = self.head_dist(x[:, 1])
        return logits if self.training else (logits + logits_dist) / 2


# name -> (constructor(num_classes), init scheme of common.weights.init_weights: the init code of the model's source)
ARCHS = {
    "cifar10quick": (lambda num_classes: CIFAR10Quick(num_classes), "uniform"),
    "cifar10simple": (lambda num_classes: CIFAR10Simple(num_classes), "uniform"),
    "resnet32x4": (lambda num_classes: ResNet(32, [32, 64, 128, 256], num_classes), "kaiming_normal"),
    "resnet8x4": (lambda num_classes: ResNet(8, [32, 64, 128, 256], num_classes), "kaiming_normal"),
    # mdistiller's zoo, its cifar_model_dict names. Init: resnet.py and resnetv2.py kaiming_normal (fan_out)
    # convs, linear left at torch's default; wrn.py the same normal convs and a zeroed linear bias; vgg.py and
    # mobilenetv2.py the same convs, zeroed biases and N(0, 0.01) linear weights; the ShuffleNets set none.
    "resnet20": (lambda num_classes: ResNet(20, [16, 16, 32, 64], num_classes), "kaiming_normal"),
    "resnet32": (lambda num_classes: ResNet(32, [16, 16, 32, 64], num_classes), "kaiming_normal"),
    "resnet56": (lambda num_classes: ResNet(56, [16, 16, 32, 64], num_classes), "kaiming_normal"),
    "resnet110": (lambda num_classes: ResNet(110, [16, 16, 32, 64], num_classes), "kaiming_normal"),
    "wrn_16_2": (lambda num_classes: WideResNet(16, 2, num_classes), "kaiming_normal_zero_bias"),
    "wrn_40_1": (lambda num_classes: WideResNet(40, 1, num_classes), "kaiming_normal_zero_bias"),
    "wrn_40_2": (lambda num_classes: WideResNet(40, 2, num_classes), "kaiming_normal_zero_bias"),
    "vgg8": (lambda num_classes: VGG([[64], [128], [256], [512], [512]], num_classes),  # vgg8_bn
             "kaiming_normal_small_fc"),
    "vgg13": (lambda num_classes: VGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], num_classes),
              "kaiming_normal_small_fc"),  # vgg13_bn
    "MobileNetV2": (lambda num_classes: MobileNetV2(6, 0.5, num_classes), "kaiming_normal_small_fc"),  # mobile_half
    "ShuffleV1": (lambda num_classes: ShuffleNetV1(num_classes=num_classes), "uniform"),
    "ShuffleV2": (lambda num_classes: ShuffleNetV2(num_classes=num_classes), "uniform"),
    "ResNet50": (lambda num_classes: ResNetV2([3, 4, 6, 3], num_classes), "kaiming_normal"),
    # the transformer track (DeiT's init: linear weights and tokens trunc-normal 0.02, biases 0, LayerNorm 1 and 0)
    "vit6x192": (lambda num_classes: ViT(6, 192, 3, 2, num_classes), "vit"),
    "vit2x96": (lambda num_classes: ViT(2, 96, 3, 2, num_classes), "vit"),
    "deit2x96": (lambda num_classes: ViT(2, 96, 3, 2, num_classes, distilled=True), "vit"),
}


def build_model(name, seed=0, num_classes=10):
    """A model with its seeded initial weights (the same numbers as in the other framework)."""
    if name not in ARCHS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(ARCHS)}")
    constructor, scheme = ARCHS[name]
    model = constructor(num_classes)
    load_state(model, init_weights(state_shapes(model), seed, scheme), f"init(seed={seed})")
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
    match_state(state, state_shapes(model), source)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in state.items()},
                          strict=False)


# ---------------------------------------------------------------- the hint regressor (FitNet)
class ConvReg(nn.Module):
    """mdistiller's ConvReg, FitNet's hint regressor: the student's feature to the teacher's channels and size.

    A 3x3 stride-2 conv when the student's map is twice the teacher's, a 4x4 stride-2 transposed conv when
    it is half, else a (1 + sH - tH) x (1 + sW - tW) conv (1x1 for equal sizes); then BN and ReLU. Trained
    with the student (same optimizer), saved in its checkpoint, not part of the student at test time.
    """

    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = student_shape, teacher_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif s_h * 2 == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise UserError(f"FitNet: no regressor maps a {s_c}x{s_h}x{s_w} student feature to a {t_c}x{t_h}x{t_w} "
                            f"teacher feature (mdistiller's ConvReg neither); choose another --hint-layer")
        self.bn = BatchNorm2d(t_c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def build_regressor(student_shape, teacher_shape, seed):
    """A ConvReg with seeded initial weights (torch's default init, drawn in numpy: the same in both
    frameworks), from a stream of its own ([seed, 1]) so that it does not repeat the student's numbers."""
    regressor = ConvReg(student_shape, teacher_shape)
    load_state(regressor, init_weights(state_shapes(regressor), [seed, 1], "uniform"), f"init(regressor, seed={seed})")
    return regressor


def has_dropout(model):
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


def set_dropout(model, p):
    """--dropout P: the probability of every dropout layer; a one-line error for a model without one."""
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not layers:
        raise UserError(f"--dropout: {type(model).__name__} has no dropout layer (cifar10quick and the ViTs have)")
    for layer in layers:
        layer.p = p
    return model
