"""Batched inference over a split's clip arrays, through the project's one inference path
(:func:`bigfive.models.infer.infer`), collecting what the attention figures need on the way:
the mean attention entropy per head and the full maps of a few example clips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bigfive.evaluation.metrics import attention_entropy
from bigfive.models.infer import Attention, batches, infer
from bigfive.utils.progress import progress


@dataclass
class Inference:
    """A split's predictions and attention statistics (the attention fields stay empty without attention)."""

    predictions: np.ndarray  # (N, K) float64
    entropy: dict[str, np.ndarray] = field(default_factory=dict)  # direction -> (layers, heads) mean over clips
    key_len: dict[str, int] = field(default_factory=dict)  # direction -> T_key
    examples: dict[int, dict[str, list[np.ndarray]]] = field(default_factory=dict)  # row -> direction -> layers


def example_rows(n: int, count: int) -> list[int]:
    """Evenly spread rows (deterministic, not cherry-picked)."""
    if count <= 0 or n == 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))})


class _AttentionStats:
    """Running entropy sums per direction, and the maps of the wanted rows, batch by batch."""

    def __init__(self, wanted: Sequence[int]):
        self.wanted = set(wanted)
        self.ent_sum: dict[str, np.ndarray] = {}
        self.key_len: dict[str, int] = {}
        self.examples: dict[int, dict[str, list[np.ndarray]]] = {}

    def add(self, attention: Attention, rows: slice) -> None:
        for direction, layers in attention.items():
            ws = [w.float().cpu().numpy() for w in layers]  # one (B, heads, Tq, Tk) per layer
            # weighted by the batch size, so the mean over clips does not depend on the batching
            ent = np.stack([attention_entropy(w) for w in ws]) * (rows.stop - rows.start)  # (layers, heads)
            self.ent_sum[direction] = self.ent_sum.get(direction, 0.0) + ent
            self.key_len[direction] = int(ws[0].shape[-1])
            for row in self.wanted.intersection(range(rows.start, rows.stop)):
                self.examples.setdefault(row, {})[direction] = [w[row - rows.start] for w in ws]

    def mean_entropy(self, n: int) -> dict[str, np.ndarray]:
        return {k: v / max(n, 1) for k, v in self.ent_sum.items()}


def infer_split(net: Any, static: np.ndarray, dynamic: np.ndarray, *, device: Any, batch_size: int = 32,
                   example_rows: Sequence[int] = (), desc: str = "evaluate") -> Inference:
    """No-grad inference over memory-mapped (N, T, C, S, S) uint8 arrays, ``batch_size`` clips at a time;
    ``example_rows`` are the rows whose attention maps are kept whole."""
    n = int(static.shape[0])
    stats = _AttentionStats(example_rows)
    preds: list[np.ndarray] = []
    net.eval()
    with progress(total=n, desc=desc) as bar:
        for rows in batches(n, batch_size):
            traits, attention = infer(net, static[rows], dynamic[rows], device, return_attention=True)
            preds.append(traits.cpu().numpy())
            stats.add(attention, rows)
            bar.update(rows.stop - rows.start)
    pred = np.concatenate(preds).astype(np.float64) if preds else np.zeros((0, 0))
    return Inference(predictions=pred, entropy=stats.mean_entropy(n), key_len=stats.key_len,
                     examples=stats.examples)
