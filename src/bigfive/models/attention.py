"""Cross-attention with a learnable relative-time bias, written out so the weights can be returned.

Why the bias: in a prototype on the sample's design, plain cross-attention with learned position
embeddings never learned a trait that depends on the time alignment of the two streams (flashes
coinciding with nods), even with 2,000 clips, because it memorised clips by appearance first.
With a bias initialised to +6 on the same-time diagonal (attend to the same moment first) it
learned that trait from ~240 clips. The bias stays learnable, so it can widen or shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelativeTimeBias(nn.Module):
    """One learnable scalar per head and relative offset -(T-1)..(T-1), added to attention logits."""

    def __init__(self, heads: int, frames: int, init: float):
        super().__init__()
        table = torch.zeros(heads, 2 * frames - 1)
        table[:, frames - 1] = init  # offset 0 = same sampled time in both streams
        self.table = nn.Parameter(table)
        pos = torch.arange(frames)
        self.register_buffer("index", pos[None, :] - pos[:, None] + frames - 1, persistent=False)

    def forward(self) -> torch.Tensor:  # (heads, T_query, T_key)
        return self.table[:, self.index]


class CrossAttention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens (explicit softmax)."""

    def __init__(self, dim: int, heads: int, frames: int, dropout: float, time_bias: bool, bias_init: float):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.time_bias = RelativeTimeBias(heads, frames, bias_init) if time_bias else None

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, tq, d = query.shape
        tk = context.shape[1]
        hd = d // self.heads
        q = self.q(query).view(b, tq, self.heads, hd).transpose(1, 2)
        k, v = self.kv(context).view(b, tk, 2, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        # Logits and softmax in float32 even under bf16 autocast, which would run q @ kT in bf16 and round
        # each logit to 8 significant bits (steps of 1/32 between 4 and 8: softmax weights off by up to
        # 1.6 %). Without autocast (CPU) q and k are float32 already and nothing changes.
        with torch.autocast(query.device.type, enabled=False):
            logits = (q.float() @ k.float().transpose(-2, -1)) * self.scale
            if self.time_bias is not None:
                logits = logits + self.time_bias()
            attn = logits.softmax(dim=-1)
        y = self.drop(attn).to(v.dtype) @ v
        return self.out(y.transpose(1, 2).reshape(b, tq, d)), attn


class SameTimeMix(nn.Module):
    """The ablation's control for learned attention: cross-attention whose weights are fixed, not learned.

    Query step t takes the value of context step ``t + shift`` (cyclic), through the same value and
    output projections as :class:`CrossAttention`, so a block built on it fuses the two streams per
    time step with the same feed-forward capacity but no attention. ``shift=0`` is same-time alignment;
    ``shift=T//2`` pairs every step with a distant one (alignment broken, fusion still per step).
    Returns the fixed (B, 1, T, T) permutation as its "attention", so plots and exports treat it alike.
    """

    def __init__(self, dim: int, frames: int, shift: int = 0):
        super().__init__()
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.shift = shift % frames
        self.register_buffer("weights", torch.eye(frames).roll(self.shift, dims=1), persistent=False)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.out(self.v(context.roll(-self.shift, dims=1) if self.shift else context))
        return y, self.weights.expand(query.shape[0], 1, -1, -1)


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim),
                         nn.Dropout(dropout))


class GatedFeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer 2020): W2 (W1 x * GELU(W3 x)), hidden 2/3 of the plain one's (same size).

    Why it matters here: its output is a product of two projections of the same token, so once a
    token holds both streams (x = s_t + v(d_t)) a static x dynamic cross term is there from the first
    step, and the gradient sees it at first order; a GELU MLP only finds it through its curvature.
    """

    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        hidden = max(1, round(2 * mult * dim / 3))
        self.up = nn.Linear(dim, 2 * hidden)
        self.drop = nn.Dropout(dropout)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.up(x).chunk(2, dim=-1)
        return self.drop(self.down(self.drop(value * F.gelu(gate))))


FEED_FORWARDS = {"gelu": FeedForward, "geglu": GatedFeedForward}


class CrossBlock(nn.Module):
    """Pre-norm residual block: x += mix(LN(x), LN(context)); x += FF(LN(x)).

    ``mix`` is a :class:`CrossAttention` (the model) or a :class:`SameTimeMix` (the framewise controls).
    """

    def __init__(self, dim: int, mix: nn.Module, ff_mult: int, dropout: float, ff: str = "gelu"):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = mix
        self.drop = nn.Dropout(dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FEED_FORWARDS[ff](dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.attn(self.norm_q(x), self.norm_kv(context))
        x = x + self.drop(y)
        return x + self.ff(self.norm_ff(x)), attn
