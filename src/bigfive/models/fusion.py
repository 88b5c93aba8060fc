"""Fusion variants: static tokens s (B, T, D) and dynamic tokens d (B, T, D) -> pooled vectors for the head(s).

One class per ``model.fusion`` name (``FUSIONS``), built as ``cls(cfg, frames)`` from the model
config, and every one returns the same thing, ``(pooled, attention)``: ``pooled`` is a tuple of one
(B, out_dim) vector per prediction head (``out_dims``: one head, or two for ``late``, one per stream),
``attention`` maps a direction to one (B, heads, T, T) map per layer (empty when nothing attends).
Every variant sees the same stream tokens and feeds the same MLP head type, so an ablation compares
fusion alone.

Three ingredients separate the fusions (docs/ablation.md):
- *when* the streams meet: per time step, before temporal pooling (cross_attention, framewise*)
  or after it (concat, sum, gated, late);
- *alignment*: step t meets step t (framewise; cross-attention with the relative-time bias starts
  there) or a distant step (framewise_shifted);
- *learned attention*: the mixing weights are learned (cross_attention) or fixed (framewise*).
The content-free cross-time controls (docs/interaction.md) reach other time steps without looking at
what they show: ``framewise_conv`` (a temporal convolution over the framewise-fused sequence) and
``relative_time`` (attention weights from a learned per-head offset profile only).
"""

from __future__ import annotations

import torch
from torch import nn

from bigfive.config.base import ConfigError
from bigfive.config.model import ModelConfig
from bigfive.models.attention import CrossAttention, CrossBlock, RelativeTimeMix, SameTimeMix, TemporalConv

STATIC_TO_DYNAMIC = "static_to_dynamic"  # static tokens query dynamic ones
DYNAMIC_TO_STATIC = "dynamic_to_static"

Attention = dict[str, list[torch.Tensor]]  # direction -> one (B, heads, T_query, T_key) map per layer
Pooled = tuple[torch.Tensor, ...]  # one (B, out_dims[i]) vector per prediction head


class BaseFusion(nn.Module):
    """``fusion(s, d) -> (pooled, attention)``; ``s`` or ``d`` is None for the single-stream variants."""

    out_dims: tuple[int, ...]  # width of each pooled vector, one per head


class PerStepFusion(BaseFusion):
    """Learned temporal positions (unless ``cfg.positions`` is none), then ``cfg.layers`` blocks per direction that
    mix the streams per time step.

    Bidirectional layers update both streams from the previous layer's tokens (co-attention); the
    normalised tokens of both streams are mean-pooled over time and concatenated. The subclasses
    differ only in each block's mixing layer (``make_mix``).
    """

    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        dim = cfg.embed_dim
        self.directions = [d for d in (STATIC_TO_DYNAMIC, DYNAMIC_TO_STATIC) if cfg.direction in (d, "bidirectional")]
        self.layers = cfg.layers
        # learned absolute positions (model.positions). With them, per-step features pooled over time can still tell
        # *where* events were (e.g. a cue's mean step minus its partner's), which lets a fixed-alignment control read
        # a cross-time order; "none" leaves relative time to attention's bias alone
        self.pos_static = self.pos_dynamic = None
        if cfg.positions == "absolute":
            self.pos_static = nn.Parameter(torch.randn(1, frames, dim) * 0.02)
            self.pos_dynamic = nn.Parameter(torch.randn(1, frames, dim) * 0.02)

        def block() -> CrossBlock:  # mix, then temporal, then the block's layers: the order weights are drawn in
            mix = self.make_mix(cfg, frames)
            return CrossBlock(dim, mix, cfg.ff_mult, cfg.dropout, cfg.ff, self.make_temporal(cfg))

        def stack() -> nn.ModuleList:
            return nn.ModuleList(block() for _ in range(cfg.layers))

        self.blocks = nn.ModuleDict({d: stack() for d in self.directions})
        self.norm = nn.LayerNorm(dim)
        self.out_dims = (2 * dim,)

    @staticmethod
    def make_mix(cfg: ModelConfig, frames: int) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def make_temporal(cfg: ModelConfig) -> nn.Module | None:
        """A module mixing time after the fusion, before the feed-forward (none but in framewise_conv)."""
        return None

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[Pooled, Attention]:
        if self.pos_static is not None:
            s, d = s + self.pos_static, d + self.pos_dynamic
        attention: Attention = {name: [] for name in self.directions}
        for i in range(self.layers):
            s_new, d_new = s, d
            if STATIC_TO_DYNAMIC in self.blocks:
                s_new, a = self.blocks[STATIC_TO_DYNAMIC][i](s, d)
                attention[STATIC_TO_DYNAMIC].append(a)
            if DYNAMIC_TO_STATIC in self.blocks:
                d_new, a = self.blocks[DYNAMIC_TO_STATIC][i](d, s)
                attention[DYNAMIC_TO_STATIC].append(a)
            s, d = s_new, d_new
        return (torch.cat([self.norm(s).mean(dim=1), self.norm(d).mean(dim=1)], dim=-1),), attention


class CrossAttentionFusion(PerStepFusion):
    """The model: learned multi-head cross-attention, with the relative-time bias when ``cfg.time_bias``."""

    @staticmethod
    def make_mix(cfg: ModelConfig, frames: int) -> nn.Module:
        return CrossAttention(cfg.embed_dim, cfg.heads, frames, cfg.dropout, cfg.time_bias, cfg.time_bias_init,
                              cfg.time_bias_flat_heads, cfg.value_rel_pos)


class FramewiseFusion(PerStepFusion):
    """Control for learned attention: step t takes the other stream's step t through fixed weights."""

    @staticmethod
    def make_mix(cfg: ModelConfig, frames: int) -> nn.Module:
        return SameTimeMix(cfg.embed_dim, frames, shift=0)


class FramewiseShiftedFusion(PerStepFusion):
    """Control for alignment: step t takes the other stream's step t + T/2 (cyclic) through fixed weights."""

    @staticmethod
    def make_mix(cfg: ModelConfig, frames: int) -> nn.Module:
        return SameTimeMix(cfg.embed_dim, frames, shift=frames // 2)


class FramewiseConvFusion(FramewiseFusion):
    """Content-free cross-time control: framewise fusion, then a temporal convolution of ``cfg.conv_kernel`` steps.

    The convolution (``cfg.heads`` channel groups: about the parameters of attention's query and key
    projections) runs over the fused sequence before the feed-forward, so step t's feed-forward sees
    both streams at t +- conv_kernel // 2 through fixed, learned weights per offset.
    """

    @staticmethod
    def make_temporal(cfg: ModelConfig) -> nn.Module:
        return TemporalConv(cfg.embed_dim, cfg.conv_kernel, cfg.heads)


class RelativeTimeFusion(PerStepFusion):
    """Content-free cross-time control: attention weights from the learned per-head offset profile only."""

    @staticmethod
    def make_mix(cfg: ModelConfig, frames: int) -> nn.Module:
        return RelativeTimeMix(cfg.embed_dim, cfg.heads, frames, cfg.dropout, cfg.time_bias_init,
                               cfg.time_bias_flat_heads, cfg.value_rel_pos)


# The pooled fusions meet the streams after a mean over time (the ``frames`` argument is unused).

class ConcatFusion(BaseFusion):
    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        self.out_dims = (2 * cfg.embed_dim,)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[Pooled, Attention]:
        return (torch.cat([s.mean(dim=1), d.mean(dim=1)], dim=-1),), {}


class SumFusion(BaseFusion):
    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        self.out_dims = (cfg.embed_dim,)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[Pooled, Attention]:
        return (s.mean(dim=1) + d.mean(dim=1),), {}


class GatedFusion(BaseFusion):
    """Per-feature convex mix of the pooled streams, the gate conditioned on both."""

    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        self.gate = nn.Linear(2 * cfg.embed_dim, cfg.embed_dim)
        self.out_dims = (cfg.embed_dim,)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[Pooled, Attention]:
        ps, pd = s.mean(dim=1), d.mean(dim=1)
        g = torch.sigmoid(self.gate(torch.cat([ps, pd], dim=-1)))
        return (g * ps + (1 - g) * pd,), {}


class LateFusion(BaseFusion):
    """No fusion inside the network: one vector per stream, each for its own head (the predictions are averaged)."""

    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        self.out_dims = (cfg.embed_dim, cfg.embed_dim)

    def forward(self, s: torch.Tensor, d: torch.Tensor) -> tuple[Pooled, Attention]:
        return (s.mean(dim=1), d.mean(dim=1)), {}


class StaticOnlyFusion(BaseFusion):
    """Ablation: the static stream alone (the network builds no dynamic stream, ``d`` is None)."""

    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        self.out_dims = (cfg.embed_dim,)

    def forward(self, s: torch.Tensor, d: None) -> tuple[Pooled, Attention]:
        return (s.mean(dim=1),), {}


class DynamicOnlyFusion(BaseFusion):
    """Ablation: the dynamic stream alone (the network builds no static stream, ``s`` is None)."""

    def __init__(self, cfg: ModelConfig, frames: int):
        super().__init__()
        self.out_dims = (cfg.embed_dim,)

    def forward(self, s: None, d: torch.Tensor) -> tuple[Pooled, Attention]:
        return (d.mean(dim=1),), {}


FUSIONS: dict[str, type[BaseFusion]] = {
    "cross_attention": CrossAttentionFusion, "framewise": FramewiseFusion, "framewise_shifted": FramewiseShiftedFusion,
    "framewise_conv": FramewiseConvFusion, "relative_time": RelativeTimeFusion,
    "concat": ConcatFusion, "sum": SumFusion, "gated": GatedFusion, "late": LateFusion,
    "static_only": StaticOnlyFusion, "dynamic_only": DynamicOnlyFusion,
}
# The fusions that meet the streams per time step: the only ones where model.direction means something.
PER_STEP = frozenset(name for name, cls in FUSIONS.items() if issubclass(cls, PerStepFusion))


def build_fusion(cfg: ModelConfig, frames: int) -> BaseFusion:
    """The ``cfg.fusion`` variant for T=``frames`` tokens per stream."""
    if cfg.fusion not in FUSIONS:
        raise ConfigError("model.fusion", f"unknown fusion {cfg.fusion!r}; one of {', '.join(FUSIONS)}")
    return FUSIONS[cfg.fusion](cfg, frames)
