"""Dynamic stream: a 3D CNN over the optical-flow stacks, one embed_dim token per sampled step.

Input (B, T, C, S, S) with C = 2L quantized flow channels (q = 0..255); ``q / 127.5 - 1`` maps
them back to [-1, 1] (a fixed multiple of the flow in pixels, so no statistics are needed).
"""

from __future__ import annotations

import torch
from torch import nn


def conv2d_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv3d_bn_relu(cin: int, cout: int, temporal_kernel: int = 3) -> nn.Sequential:
    # temporal stride 1 with 'same' padding keeps one token per sampled step; space halves every block
    return nn.Sequential(nn.Conv3d(cin, cout, (temporal_kernel, 3, 3), (1, 2, 2), (temporal_kernel // 2, 1, 1),
                                   bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class C3D(nn.Module):
    """Compact C3D-style CNN: a per-frame spatial stem, then Conv3d(3x3x3) blocks; spatial pooling only.

    The stem and block1 are spatial-only (a Conv3d with a 1x3x3 kernel, run as Conv2d on every
    frame) because Conv3d's backward pass is slow on CPU at 56-112 px; the 3x3x3 blocks run at
    1/4 and 1/8 resolution, giving each token a receptive field of five sampled steps (+-2).
    ``temporal_kernel=1`` (``model.dynamic_temporal_kernel``) makes those two blocks 1x3x3: token t
    then sees only flow stack t, so any cross-time reading is the fusion's (docs/model.md).
    """

    def __init__(self, channels: int, width: int = 32, temporal_kernel: int = 3):
        super().__init__()
        self.stem = conv2d_bn_relu(channels, width)
        self.block1 = conv2d_bn_relu(width, width)
        self.block2 = conv3d_bn_relu(width, 2 * width, temporal_kernel)
        self.block3 = conv3d_bn_relu(2 * width, 4 * width, temporal_kernel)
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, S, S) -> (B, T, out_dim)
        b, _, t = x.shape[:3]
        y = self.block1(self.stem(x.transpose(1, 2).flatten(0, 1)))  # (B*T, w, S/4, S/4)
        y = y.view(b, t, *y.shape[1:]).transpose(1, 2)
        y = self.block3(self.block2(y))
        return y.mean(dim=(3, 4)).transpose(1, 2)


class R2Plus1D(nn.Module):
    """torchvision r2plus1d_18 with its stem adapted to C flow channels and time never strided.

    torchvision's layers 2-4 halve time as well as space (T -> ceil(T/8)): at T = 8 one token was
    left, interpolated back to eight identical ones, and the relative-time bias had nothing to align.
    Here every temporal stride is 1 (the (3, 1, 1) convolutions of the first blocks of layers 2-4 and
    their 1x1x1 shortcuts), so the network gives one token per sampled step. Space still halves, and
    the weights keep their shapes (a Kinetics state dict would still load).
    """

    def __init__(self, channels: int, frames: int):
        super().__init__()
        from torchvision.models.video import r2plus1d_18

        self.net = r2plus1d_18(weights=None)
        old = self.net.stem[0]
        self.net.stem[0] = nn.Conv3d(channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                     bias=False)
        self.net.fc = nn.Identity()
        for m in self.net.modules():
            if isinstance(m, nn.Conv3d) and m.stride[0] != 1:
                m.stride = (1, *m.stride[1:])
        self.frames = frames
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, S, S) -> (B, T, 512)
        n = self.net
        x = n.layer4(n.layer3(n.layer2(n.layer1(n.stem(x)))))
        return x.mean(dim=(3, 4)).transpose(1, 2)


class DynamicStream(nn.Module):
    """(B, T, C, S, S) uint8 or 0..255 float flow -> (B, T, embed_dim) tokens."""

    def __init__(self, backbone: str, channels: int, frames: int, width: int, embed_dim: int,
                 temporal_kernel: int = 3):
        super().__init__()
        self.backbone = C3D(channels, width, temporal_kernel) if backbone == "c3d" else R2Plus1D(channels, frames)
        self.proj = nn.Linear(self.backbone.out_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 127.5 - 1.0
        return self.proj(self.backbone(x.transpose(1, 2)))
