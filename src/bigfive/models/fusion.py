"""Fusion variants: (static tokens, dynamic tokens, padding mask) -> pooled vector(s) for the head.

Every variant sees the same stream tokens and feeds the same MLP head type, so an ablation
compares fusion alone. ``late`` returns one vector per stream (each gets its own head).

Three ingredients separate the fusions (docs/ablation.md):
- *when* the streams meet: per time step, before temporal pooling (cross_attention, framewise*)
  or after it (concat, sum, gated, late);
- *alignment*: step t meets step t (framewise; cross-attention with the relative-time bias starts
  there) or a distant step (framewise_shifted);
- *learned attention*: the mixing weights are learned (cross_attention) or fixed (framewise*).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bigfive.models.attention import CrossAttention, CrossBlock, SameTimeMix

STATIC_TO_DYNAMIC = "static_to_dynamic"  # static tokens query dynamic ones
DYNAMIC_TO_STATIC = "dynamic_to_static"


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of (B, T, D) tokens, ignoring steps where ``mask`` (B, T) is True."""
    if mask is None:
        return tokens.mean(dim=1)
    keep = (~mask).to(tokens.dtype).unsqueeze(-1)
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)


class CrossAttentionFusion(nn.Module):
    """Learned temporal positions, then ``layers`` co-attention layers in the chosen direction(s).

    Bidirectional layers update both streams from the previous layer's tokens (co-attention);
    the pooled tokens of both streams are concatenated. ``make_mix()`` builds each block's mixing
    layer: learned cross-attention for the model, a fixed same-time (or shifted) map for the
    framewise controls, which are otherwise this exact module.
    """

    def __init__(self, dim: int, frames: int, layers: int, ff_mult: int, dropout: float, direction: str,
                 make_mix: Callable[[], nn.Module], ff: str = "gelu"):
        super().__init__()
        self.directions = [d for d in (STATIC_TO_DYNAMIC, DYNAMIC_TO_STATIC) if direction in (d, "bidirectional")]
        self.layers = layers
        self.pos_static = nn.Parameter(torch.randn(1, frames, dim) * 0.02)
        self.pos_dynamic = nn.Parameter(torch.randn(1, frames, dim) * 0.02)

        def stack() -> nn.ModuleList:
            return nn.ModuleList(CrossBlock(dim, make_mix(), ff_mult, dropout, ff) for _ in range(layers))

        self.blocks = nn.ModuleDict({d: stack() for d in self.directions})
        self.norm = nn.LayerNorm(dim)
        self.out_dim = 2 * dim

    def forward(self, s: torch.Tensor, d: torch.Tensor, mask: torch.Tensor | None):
        s, d = s + self.pos_static, d + self.pos_dynamic
        attention: dict[str, list[torch.Tensor]] = {name: [] for name in self.directions}
        for i in range(self.layers):
            s_new, d_new = s, d
            if STATIC_TO_DYNAMIC in self.blocks:
                s_new, a = self.blocks[STATIC_TO_DYNAMIC][i](s, d, mask)
                attention[STATIC_TO_DYNAMIC].append(a)
            if DYNAMIC_TO_STATIC in self.blocks:
                d_new, a = self.blocks[DYNAMIC_TO_STATIC][i](d, s, mask)
                attention[DYNAMIC_TO_STATIC].append(a)
            s, d = s_new, d_new
        fused = torch.cat([masked_mean(self.norm(s), mask), masked_mean(self.norm(d), mask)], dim=-1)
        return fused, attention


class PooledFusion(nn.Module):
    """concat | sum | gated | late | static_only | dynamic_only over masked-mean pooled tokens."""

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        self.gate = nn.Linear(2 * dim, dim) if kind == "gated" else None
        self.out_dim = 2 * dim if kind == "concat" else dim

    def forward(self, s: torch.Tensor | None, d: torch.Tensor | None, mask: torch.Tensor | None):
        ps = masked_mean(s, mask) if s is not None else None
        pd = masked_mean(d, mask) if d is not None else None
        if self.kind == "concat":
            return torch.cat([ps, pd], dim=-1), {}
        if self.kind == "sum":
            return ps + pd, {}
        if self.kind == "gated":  # per-feature convex mix, conditioned on both streams
            g = torch.sigmoid(self.gate(torch.cat([ps, pd], dim=-1)))
            return g * ps + (1 - g) * pd, {}
        if self.kind == "late":
            return (ps, pd), {}
        return (ps if self.kind == "static_only" else pd), {}


# Per-time-step fusions: name -> the mixing layer of each block, from (model config, T).
MIXERS: dict[str, Callable[[Any, int], nn.Module]] = {
    "cross_attention": lambda cfg, t: CrossAttention(cfg.embed_dim, cfg.heads, t, cfg.dropout, cfg.time_bias,
                                                     cfg.time_bias_init),
    "framewise": lambda cfg, t: SameTimeMix(cfg.embed_dim, t, shift=0),
    "framewise_shifted": lambda cfg, t: SameTimeMix(cfg.embed_dim, t, shift=t // 2),
}


def build_fusion(cfg, frames: int) -> nn.Module:
    if cfg.fusion in MIXERS:
        mixer = MIXERS[cfg.fusion]
        return CrossAttentionFusion(cfg.embed_dim, frames, cfg.layers, cfg.ff_mult, cfg.dropout, cfg.direction,
                                    lambda: mixer(cfg, frames), cfg.ff)
    return PooledFusion(cfg.fusion, cfg.embed_dim)
