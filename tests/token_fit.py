"""Train a fusion module and a small head on synthetic token batches (the learnability tests' shared loop)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Batch = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def fit_tokens(fusion: nn.Module, batch: Batch, steps: int, loss_fn: Callable, lr: float = 1e-2) -> nn.Module:
    """Adam on batches of 64 from ``batch(n, generator)``; returns the head (the fusion is trained in place)."""
    head = nn.Sequential(nn.Linear(fusion.out_dims[0], 32), nn.GELU(), nn.Linear(32, 1))
    opt = torch.optim.Adam([*fusion.parameters(), *head.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        s, d, y = batch(64, gen)
        loss = loss_fn(head(fusion(s, d)[0][0]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head
