"""Static stream: a 2D CNN applied to every face crop, one embed_dim token per sampled frame.

Backbones: ``compact`` (a small CNN sized for CPU training), torchvision ``resnet18`` and
facenet-pytorch ``InceptionResnetV1``. Pretrained weights only ever come from a local file
(``model.static_weights``); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bigfive.config.base import ConfigError

# ImageNet statistics for the compact CNN and resnet18; facenet's fixed standardisation is (x - 127.5) / 128.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FACENET_MEAN = (0.5, 0.5, 0.5)
FACENET_STD = (128 / 255, 128 / 255, 128 / 255)
INCEPTION_MIN_SIZE = 80  # smaller crops leave a feature map below InceptionResnetV1's last 3x3 kernel


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CompactCNN(nn.Module):
    """Stride-2 stem then three conv-BN-ReLU blocks; works from 32 px (sample) to 112 px (ChaLearn).

    Every block halves the resolution first: on CPU most of a CNN's time goes to the large early
    feature maps (convolutions and the memory-bound BatchNorm/ReLU on them), so the early strides
    are what makes it ~3x faster to train than resnet18.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = conv_bn_relu(3, width, 2)
        self.block1 = conv_bn_relu(width, 2 * width, 2)
        self.block2 = nn.Sequential(conv_bn_relu(2 * width, 4 * width, 2), conv_bn_relu(4 * width, 4 * width, 1))
        self.block3 = conv_bn_relu(4 * width, 4 * width, 2)
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return x.mean(dim=(2, 3))


class ResNet18(nn.Module):
    """torchvision resnet18 without its classifier; ``conv1`` names the stem (conv1 + bn1)."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(weights=None)
        self.net.fc = nn.Identity()
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class InceptionResnet(nn.Module):
    """facenet-pytorch InceptionResnetV1 up to its 512-d bottleneck (no L2 normalisation, no 0.6 dropout)."""

    def __init__(self):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        self.net = InceptionResnetV1(pretrained=None, classify=False)
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < INCEPTION_MIN_SIZE:  # shape-only branch: fine for tracing and compile
            x = F.interpolate(x, size=(INCEPTION_MIN_SIZE, INCEPTION_MIN_SIZE), mode="bilinear", align_corners=False)
        n = self.net
        for stage in (n.conv2d_1a, n.conv2d_2a, n.conv2d_2b, n.maxpool_3a, n.conv2d_3b, n.conv2d_4a, n.conv2d_4b,
                      n.repeat_1, n.mixed_6a, n.repeat_2, n.mixed_7a, n.repeat_3, n.block8, n.avgpool_1a):
            x = stage(x)
        return n.last_bn(n.last_linear(x.flatten(1)))


# Ordered stages per backbone (for freeze_until): name -> module attribute paths inside the backbone.
STAGES: dict[str, OrderedDict[str, tuple[str, ...]]] = {
    "compact": OrderedDict((s, (s,)) for s in ("stem", "block1", "block2", "block3")),
    "resnet18": OrderedDict([("conv1", ("net.conv1", "net.bn1"))]
                            + [(f"layer{i}", (f"net.layer{i}",)) for i in range(1, 5)]),
    "inception_resnet_v1": OrderedDict((s, (f"net.{s}",)) for s in (
        "conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a", "conv2d_4b", "repeat_1", "mixed_6a",
        "repeat_2", "mixed_7a", "repeat_3", "block8", "last_linear", "last_bn")),
}
BACKBONES = {"compact": CompactCNN, "resnet18": ResNet18, "inception_resnet_v1": InceptionResnet}
# Keys a pretrained file may carry that the backbone drops on purpose (classifier heads).
IGNORED_PREFIXES = {"resnet18": ("fc.",), "inception_resnet_v1": ("logits.",), "compact": ()}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_backbone_weights(backbone: nn.Module, name: str, path: str, sha256: str | None = None) -> None:
    """Load a local state dict into ``backbone``; errors name the file and every mismatching key.

    With ``sha256`` the file's bytes are checked first (before torch reads them): a truncated or
    swapped download stops with both hashes instead of training on the wrong weights.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError("model.static_weights", f"{file}: weights file not found (weights are never downloaded)")
    if sha256 is not None:
        actual = file_sha256(file)
        if actual != sha256.lower():
            raise ConfigError("model.static_weights_sha256", f"{file}: SHA-256 is {actual}, expected {sha256.lower()} "
                                                            "(a different or damaged file)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError("model.static_weights", f"{file}: not a readable torch state dict ({err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("model.static_weights", f"{file}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES[name])}
    target = backbone.net.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
                    if k in state and state[k].shape != v.shape)
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", shapes)) if keys]
        raise ConfigError("model.static_weights", f"{file} does not fit {name}: " + "; ".join(parts))
    backbone.net.load_state_dict(state)


class StaticStream(nn.Module):
    """(B, T, 3, S, S) uint8 or 0..255 float crops -> (B, T, embed_dim) tokens."""

    def __init__(self, backbone: str, width: int, embed_dim: int, weights: str | None = None,
                 freeze_until: str | None = None, weights_sha256: str | None = None):
        super().__init__()
        self.backbone_name = backbone
        self.backbone = CompactCNN(width) if backbone == "compact" else BACKBONES[backbone]()
        if weights is not None:
            load_backbone_weights(self.backbone, backbone, weights, weights_sha256)
        mean, std = (FACENET_MEAN, FACENET_STD) if backbone == "inception_resnet_v1" else (IMAGENET_MEAN, IMAGENET_STD)
        # /255 and per-channel standardisation folded into one affine map: x * scale + shift.
        scale = torch.tensor([1 / (255 * s) for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.proj = nn.Linear(self.backbone.out_dim, embed_dim)
        self.frozen: tuple[str, ...] = ()
        if freeze_until is not None:
            self.freeze(freeze_until)

    def freeze(self, until: str) -> None:
        """Freeze stages up to and including ``until``; their BatchNorm statistics stay fixed too."""
        stages = STAGES[self.backbone_name]
        if until not in stages:
            raise ConfigError("model.freeze_until", f"unknown stage {until!r} for {self.backbone_name}; "
                                                    f"valid stages: {', '.join(stages)}")
        names = list(stages)
        self.frozen = tuple(names[: names.index(until) + 1])
        for stage in self.frozen:
            for path in stages[stage]:
                self.backbone.get_submodule(path).requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> StaticStream:
        super().train(mode)
        for stage in self.frozen:  # frozen BatchNorm layers keep their (pretrained) running statistics
            for path in STAGES[self.backbone_name][stage]:
                self.backbone.get_submodule(path).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        x = x.flatten(0, 1).float() * self.scale + self.shift
        return self.proj(self.backbone(x)).view(b, t, -1)
