"""Learning-rate schedule: linear warm-up, then cosine decay to zero, updated every optimizer step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """Multiplier on the base LR at ``step``; a class (not a lambda) so the schedule is inspectable."""

    def __init__(self, warmup_steps: int, total_steps: int):
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
