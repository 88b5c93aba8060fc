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


def relative_index(frames: int) -> torch.Tensor:
    """(T_query, T_key) index of the offset j - i into a table over -(T-1)..(T-1)."""
    pos = torch.arange(frames)
    return pos[None, :] - pos[:, None] + frames - 1


class RelativeTimeBias(nn.Module):
    """One learnable scalar per head and relative offset -(T-1)..(T-1), added to attention logits.

    The first ``heads - flat_heads`` heads start at ``init`` on the same-time diagonal; the last
    ``flat_heads`` start flat (all offsets 0), free to find another offset (docs/interaction.md).
    """

    def __init__(self, heads: int, frames: int, init: float, flat_heads: int = 0):
        super().__init__()
        table = torch.zeros(heads, 2 * frames - 1)
        table[:heads - flat_heads, frames - 1] = init  # offset 0 = same sampled time in both streams
        self.table = nn.Parameter(table)
        self.register_buffer("index", relative_index(frames), persistent=False)

    def forward(self) -> torch.Tensor:  # (heads, T_query, T_key)
        return self.table[:, self.index]


class RelativeValues(nn.Module):
    """Relative-position value embeddings (Shaw et al. 2018): key j seen from query i adds e_h[j - i].

    Why: with plain values a query learns *what* it attended to but not *when*; the order of a cue
    and its partner (the cross-time trait) then has to be decoded from absolute positions.
    Zero at initialisation, so a model starts exactly as without them (a random table, std 1, did not
    learn faster on the token test: docs/interaction.md).
    """

    def __init__(self, heads: int, frames: int, head_dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(heads, 2 * frames - 1, head_dim))
        self.register_buffer("index", relative_index(frames), persistent=False)

    def forward(self, attn: torch.Tensor) -> torch.Tensor:  # (B, H, Tq, Tk) -> (B, H, Tq, head_dim)
        return torch.einsum("bhqk,hqkd->bhqd", attn, self.table[:, self.index].to(attn.dtype))


def read_values(mix: nn.Module, attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, H, Tq, Tk) weights x (B, H, Tk, hd) values (+ relative-position values) -> out projection, (B, Tq, D)."""
    weights = mix.drop(attn).to(v.dtype)
    y = weights @ v
    if mix.rel_values is not None:
        y = y + mix.rel_values(weights)
    b, h, tq, hd = y.shape
    return mix.out(y.transpose(1, 2).reshape(b, tq, h * hd))


class CrossAttention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens (explicit softmax)."""

    def __init__(self, dim: int, heads: int, frames: int, dropout: float, time_bias: bool, bias_init: float,
                 flat_heads: int = 0, value_rel_pos: bool = False):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.time_bias = RelativeTimeBias(heads, frames, bias_init, flat_heads) if time_bias else None
        # created only when asked, so the default model's state_dict keys stay as they were
        self.rel_values = RelativeValues(heads, frames, dim // heads) if value_rel_pos else None

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
        return read_values(self, attn, v), attn


class RelativeTimeMix(nn.Module):
    """Content-free control for learned attention: per-head weights that depend only on relative time.

    softmax over keys of a learned per-head offset profile b_h[j - i] (the relative-time bias alone,
    no query-key term), applied to the same value and output projections as :class:`CrossAttention`.
    It can learn any fixed window of offsets per head, but never pick a step by what it shows.
    """

    def __init__(self, dim: int, heads: int, frames: int, dropout: float, bias_init: float, flat_heads: int = 0,
                 value_rel_pos: bool = False):
        super().__init__()
        self.heads = heads
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.time_bias = RelativeTimeBias(heads, frames, bias_init, flat_heads)
        self.rel_values = RelativeValues(heads, frames, dim // heads) if value_rel_pos else None

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, tq, d = query.shape
        v = self.v(context).view(b, context.shape[1], self.heads, d // self.heads).transpose(1, 2)
        attn = self.time_bias().float().softmax(dim=-1).expand(b, -1, -1, -1)
        return read_values(self, attn, v), attn


class TemporalConv(nn.Module):
    """Residual temporal convolution over a fused token sequence: x + Conv1d(LN(x)), 'same' padding.

    Grouped (``groups`` channel groups) so that it adds about as many parameters as cross-attention's
    query and key projections, which the framewise mix it follows does not have.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return x + self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)


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

    def __init__(self, dim: int, mix: nn.Module, ff_mult: int, dropout: float, ff: str = "gelu",
                 temporal: nn.Module | None = None):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = mix
        self.drop = nn.Dropout(dropout)
        self.temporal = temporal  # framewise_conv: mixes time between the fusion and the feed-forward
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = FEED_FORWARDS[ff](dim, ff_mult, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.attn(self.norm_q(x), self.norm_kv(context))
        x = x + self.drop(y)
        if self.temporal is not None:
            x = self.temporal(x)
        return x + self.ff(self.norm_ff(x)), attn
