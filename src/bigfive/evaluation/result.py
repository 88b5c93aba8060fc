"""What evaluating one split yields (:class:`EvalResult`), shared by the stage's outputs and the ablations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EvalResult:
    """One split's video-level evaluation; arrays are (N, K) in ``traits`` order, rows in ``clip_ids`` order."""

    split: str
    traits: list[str]
    clip_ids: list[str]
    predictions: np.ndarray  # (N, K) float64 in [0, 1]
    labels: np.ndarray  # (N, K) float64
    abs_errors: np.ndarray  # (N, K) |pred - true| per clip: the input of paired significance tests
    metrics: dict[str, Any]  # summarize_with_baseline (+ bootstrap CIs, + "groups")
    baseline_means: np.ndarray | None = None  # (K,) training split's label means
    # attention (cross-attention variants only): per example clip, direction -> one (heads, Tq, Tk) per layer
    example_indices: list[int] = field(default_factory=list)
    example_attention: list[dict[str, list[np.ndarray]]] = field(default_factory=list)
    example_crops: np.ndarray | None = None  # (n_examples, T, 3, S, S) uint8 face crops
    entropy: dict[str, np.ndarray] = field(default_factory=dict)  # direction -> (layers, heads) mean nats
    key_len: dict[str, int] = field(default_factory=dict)  # direction -> T_key

    @property
    def has_attention(self) -> bool:
        return bool(self.entropy)


def primary_split(results: dict[str, Any]) -> str:
    """The split the stage reports first (metrics.json's top level, the figures, the card): test, else the
    last one evaluated."""
    return "test" if "test" in results else list(results)[-1]
