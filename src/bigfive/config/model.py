"""``model`` section: the two-stream cross-attention network and its fusion variants."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bigfive.config.base import check, positive

Fusion = Literal["cross_attention", "framewise", "framewise_shifted", "framewise_conv", "relative_time", "concat",
                 "sum", "gated", "late", "static_only", "dynamic_only"]
Direction = Literal["static_to_dynamic", "dynamic_to_static", "bidirectional"]


@dataclass(frozen=True)
class ModelConfig:
    static_backbone: Literal["compact", "resnet18", "inception_resnet_v1"] = "compact"
    static_weights: str | None = None  # local file with pretrained weights (never downloaded)
    # SHA-256 (64 hex digits) the weights file must have; checked when the file is loaded (docs/real_data.md)
    static_weights_sha256: str | None = None
    freeze_until: str | None = None  # freeze the static backbone up to and including this stage
    static_width: int = 32  # channel width of the compact CNN
    dynamic_backbone: Literal["c3d", "r2plus1d_18"] = "c3d"
    dynamic_width: int = 32  # channel width of the compact 3D CNN
    # temporal kernel of the C3D's two 3D blocks: 3 (token t sees steps t-2..t+2) or 1 (time-local tokens)
    dynamic_temporal_kernel: int = 3
    embed_dim: int = 64  # token size shared by both streams
    fusion: Fusion = "cross_attention"
    # static_to_dynamic: static tokens query dynamic ones; dynamic_to_static: the reverse.
    direction: Direction = "static_to_dynamic"
    heads: int = 4
    layers: int = 1
    ff_mult: int = 4
    ff: Literal["gelu", "geglu"] = "geglu"  # feed-forward of each fusion block (geglu: gated, same size)
    dropout: float = 0.1
    time_bias: bool = True  # learnable relative-time bias on attention logits
    time_bias_init: float = 6.0  # initial bias on the same-time diagonal
    time_bias_flat_heads: int = 0  # the last n heads start flat (no same-time prior), free to find other offsets
    value_rel_pos: bool = False  # relative-position value embeddings: an attended value carries its offset j - i
    # learned absolute time positions added to both streams before per-step fusion. "none": a step carries only what
    # it shows (attention keeps its relative-time bias), so a pooled fixed-alignment control cannot decode a
    # cross-time order from where events sit (docs/interaction.md, "The position leak")
    positions: Literal["absolute", "none"] = "absolute"
    conv_kernel: int = 7  # framewise_conv: temporal kernel over the fused sequence (spans offsets +-3)
    head_hidden: int = 64
    outputs: int = 5  # 5 traits, or 6 with interview (set from data.predict_interview)

    def validate(self, path: str) -> None:
        positive(self.embed_dim, f"{path}.embed_dim")
        positive(self.heads, f"{path}.heads")
        check(
            self.embed_dim % self.heads == 0,
            f"{path}.heads",
            f"{self.heads} heads do not divide {path}.embed_dim={self.embed_dim}",
        )
        positive(self.layers, f"{path}.layers")
        positive(self.ff_mult, f"{path}.ff_mult")
        positive(self.static_width, f"{path}.static_width")
        positive(self.dynamic_width, f"{path}.dynamic_width")
        positive(self.head_hidden, f"{path}.head_hidden")
        check(0.0 <= self.dropout < 1.0, f"{path}.dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.outputs in (5, 6), f"{path}.outputs", f"must be 5 or 6, got {self.outputs}")
        check(self.dynamic_temporal_kernel in (1, 3), f"{path}.dynamic_temporal_kernel",
              f"must be 1 or 3, got {self.dynamic_temporal_kernel!r}")
        check(self.dynamic_temporal_kernel == 3 or self.dynamic_backbone == "c3d", f"{path}.dynamic_temporal_kernel",
              f"only the c3d backbone has the option, got {self.dynamic_backbone}")
        check(0 <= self.time_bias_flat_heads <= self.heads, f"{path}.time_bias_flat_heads",
              f"must be in 0..heads={self.heads}, got {self.time_bias_flat_heads!r}")
        check(self.conv_kernel >= 1 and self.conv_kernel % 2 == 1, f"{path}.conv_kernel",
              f"must be a positive odd number (same-length output), got {self.conv_kernel!r}")
        if self.static_weights_sha256 is not None:
            check(re.fullmatch(r"[0-9a-fA-F]{64}", self.static_weights_sha256) is not None,
                  f"{path}.static_weights_sha256",
                  f"must be 64 hex digits (what `sha256sum FILE` prints), got {self.static_weights_sha256!r}")
        if self.static_backbone == "compact":
            check(self.static_weights is None, f"{path}.static_weights", "the compact CNN has no pretrained weights")
