"""``model`` section: the two-stream cross-attention network and its fusion variants."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bigfive.config.base import check, positive

Fusion = Literal["cross_attention", "framewise", "framewise_shifted", "concat", "sum", "gated", "late", "static_only",
                 "dynamic_only"]
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
        if self.static_weights_sha256 is not None:
            check(re.fullmatch(r"[0-9a-fA-F]{64}", self.static_weights_sha256) is not None,
                  f"{path}.static_weights_sha256",
                  f"must be 64 hex digits (what `sha256sum FILE` prints), got {self.static_weights_sha256!r}")
        if self.static_backbone == "compact":
            check(self.static_weights is None, f"{path}.static_weights", "the compact CNN has no pretrained weights")
