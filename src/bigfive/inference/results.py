"""What predicting one clip returns: :class:`ClipPrediction` (traits or an error, quality, timings) and
:class:`Explanation` (what the ``--explain`` figure shows).

Plain data, below both ``predictor`` (which fills them) and ``explain`` (which draws them), so neither
has to import the other's module for the types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ClipPrediction:
    """The answer for one clip: traits, or ``status='error'`` with ``error`` saying why."""

    clip: str
    status: str = "ok"  # ok | error
    traits: dict[str, float] = field(default_factory=dict)
    detection_rate: float = math.nan
    mean_confidence: float = math.nan
    warning: str = ""  # non-empty when face quality is below what the model was trained on
    notes: str = ""  # preprocessing remarks (short clip, several faces, interpolated boxes, ...)
    error: str = ""
    figure: str = ""  # the --explain PNG
    timings: dict[str, float] = field(default_factory=dict)  # seconds: faces (decode+detect+crop), flow, model

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def record(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN quality of failed clips becomes null)."""
        def num(x: float) -> float | None:
            return None if x != x else round(float(x), 6)

        out: dict[str, Any] = {"clip": self.clip, "status": self.status}
        if self.ok:
            out["traits"] = {k: round(v, 6) for k, v in self.traits.items()}
        out["quality"] = {"detection_rate": num(self.detection_rate), "mean_confidence": num(self.mean_confidence)}
        out["warning"] = self.warning
        out["notes"] = self.notes
        if not self.ok:
            out["error"] = self.error
        if self.figure:
            out["figure"] = self.figure
        return out


@dataclass
class Explanation:
    """What the --explain figure shows for one clip."""

    static: np.ndarray  # (T, 3, S, S) uint8 face crops
    dynamic: np.ndarray  # (T, C, S, S) uint8 quantized flow
    indices: np.ndarray  # (T,) source frame of each sampled step
    attention: dict[str, np.ndarray]  # direction -> (T_query, T_key), mean over layers and heads
    bound: float  # flow quantization bound (px)
