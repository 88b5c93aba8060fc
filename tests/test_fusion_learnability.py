"""Guards the mechanism the project studies, on synthetic tokens (no video, seconds on CPU).

The label is the share of time steps where a static feature AND a dynamic feature are on at the
same step; each stream has exactly 3 "on" steps out of 8 in every sequence, so anything that pools
a stream over time before fusing sees no signal. A fusion that meets the streams per time step,
aligned, learns it; a pooled fusion, or per-step fusion with the alignment broken, cannot. A bug
that shifts, permutes or mixes time anywhere in the fusion code breaks the aligned cases.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bigfive.config.model import ModelConfig
from bigfive.models.fusion import build_fusion

T, D, ON = 8, 16, 3
STEPS = 300


def batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def events() -> torch.Tensor:  # exactly ON steps set per sequence
        order = torch.rand(n, T, generator=gen).argsort(dim=1)
        return (order < ON).float()

    a, b = events(), events()
    s = torch.randn(n, T, D, generator=gen) * 0.5
    d = torch.randn(n, T, D, generator=gen) * 0.5
    s[..., 0] += 2 * a
    d[..., 0] += 2 * b
    y = (a * b).mean(dim=1, keepdim=True) * (T / ON)  # share of coincidences, 0..1
    return s, d, y


def r2_after_training(fusion_name: str, **overrides) -> float:
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(), fusion=fusion_name, embed_dim=D, heads=2, dropout=0.0, **overrides)
    fusion = build_fusion(cfg, T)
    head = nn.Sequential(nn.Linear(fusion.out_dims[0], 32), nn.GELU(), nn.Linear(32, 1))
    params = [*fusion.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        s, d, y = batch(64, gen)
        (fused,), _ = fusion(s, d)
        loss = nn.functional.mse_loss(head(fused), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    s, d, y = batch(2000, torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = head(fusion(s, d)[0][0])
    return float(1 - ((pred - y) ** 2).mean() / y.var())


@pytest.mark.parametrize(("fusion", "overrides"), [
    ("framewise", {"direction": "static_to_dynamic"}),
    ("framewise", {"direction": "dynamic_to_static"}),
    ("cross_attention", {"direction": "static_to_dynamic", "time_bias": True}),
    ("cross_attention", {"direction": "bidirectional", "time_bias": True}),
])
def test_per_step_aligned_fusion_learns_the_same_time_product(fusion, overrides):
    assert r2_after_training(fusion, **overrides) > 0.6


@pytest.mark.parametrize(("fusion", "overrides"), [
    ("concat", {}),
    ("gated", {}),
    ("framewise_shifted", {"direction": "static_to_dynamic"}),
])
def test_pooled_or_misaligned_fusion_cannot(fusion, overrides):
    assert r2_after_training(fusion, **overrides) < 0.15
