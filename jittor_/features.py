"""mdistiller's features of a model, in Jittor, read by forward hooks: what FitNet and AT compare.
torch_/features.py is the same file in PyTorch, line for line. Each model class names its feature
modules in FEATURES and its classifier in CLASSIFIER (models.py); the plain forward stays untouched.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.env import prepare_jittor  # noqa: E402
prepare_jittor()  # before importing jittor: no CUDA probing on a machine without a GPU
import jittor as jt  # noqa: E402
from jittor import nn  # noqa: E402
from jittor_.models import max_pool2d  # noqa: E402  (the models' own pool: the same numbers as their forward)


FEATURE_OPS = {None: lambda x: x, "relu": nn.relu, "pool": max_pool2d,
               "relu_pool": lambda x: max_pool2d(x, relu=True)}  # what follows the hooked module in forward


def submodule(net, name):
    """The module at a dotted name ("blocks.1"), the same way in both frameworks."""
    for part in name.split("."):
        net = net[int(part)] if part.isdigit() else getattr(net, part)
    return net


def forward_features(model, images):
    """The logits and mdistiller's features of one forward: (logits, {"feats": [...], "pooled_feat": ...}); a model
    with PREACT also "preact_feats" (mdistiller's: each feature before its ReLU); a ViT's also "attention" (each
    block's pre-softmax scores, net.ATTENTION) and a distilled ViT's "heads" ({name: logits}).

    Forward hooks on the modules the class names in FEATURES (and on the input of its CLASSIFIER) read
    them; they exist for this call only, so the plain forward is untouched. A hook keeps the first call's
    output (a WRN calls some BNs twice). (torch: under DDP, on the wrapped model.)
    """
    net = getattr(model, "module", model)
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output)
        return hook

    def keep_input(module, inputs):
        seen.setdefault("pooled_feat", inputs[0])

    extra = list(getattr(net, "ATTENTION", [])) + list(getattr(net, "HEADS", []))  # a ViT's scores, DeiT's heads
    preact = [n for n, _ in getattr(net, "PREACT", [])]  # OFD's and ReviewKD's pre-activation features
    names = list(dict.fromkeys([n for n, _ in net.FEATURES] + preact + extra))  # a module once (Jittor: one hook each)
    hooked = [submodule(net, name) for name in names]
    for module, name in zip(hooked, names):
        module.register_forward_hook(keep(name))  # Jittor: one hook per module, removed by name
    classifier = submodule(net, net.CLASSIFIER)
    classifier.register_pre_forward_hook(keep_input)
    try:
        logits = model(images)
    finally:
        for module in hooked:
            module.remove_forward_hook()
        classifier.remove_pre_forward_hook()
    feats = [FEATURE_OPS[op](seen[name]) for name, op in net.FEATURES]
    out = {"feats": feats, "pooled_feat": seen["pooled_feat"]}
    if hasattr(net, "PREACT"):  # the same list as FEATURES (no activations): the same tensors
        out["preact_feats"] = feats if net.PREACT == net.FEATURES else [FEATURE_OPS[op](seen[n]) for n, op in net.PREACT]
    if hasattr(net, "ATTENTION"):
        out["attention"] = [seen[name] for name in net.ATTENTION]
    if hasattr(net, "HEADS"):
        out["heads"] = {name: seen[name] for name in net.HEADS}
    return logits, out


def feature_shapes(model, image_shape=(3, 32, 32)):
    """(C, H, W) of each of the model's feats (probe_shapes)."""
    return probe_shapes(model, image_shape)["feats"]


def probe_shapes(model, image_shape=(3, 32, 32)):
    """{key: [shape of each]} of the model's listed features, a sample's shape each: "feats" (C, H, W), and a ViT's
    "attention" [heads, L, L], "preact_feats" (C, H, W), and "pooled_feat" (C,) itself; from one zero image in eval mode (changes no statistics)."""
    was_training = model.is_training()
    model.eval()
    with jt.no_grad():
        _, features = forward_features(model, jt.zeros((1, *image_shape)))
    if was_training:
        model.train()
    return {key: [tuple(f.shape[1:]) for f in value] if isinstance(value, list) else tuple(value.shape[1:])
            for key, value in features.items() if key != "heads"}
