"""The side files evaluation reads besides the checkpoint and the features: the training labels (for the
train-mean baseline), the sample's noise floor and the training history. Each is optional: a missing or
unreadable file is a warning and leaves its part out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bigfive.evaluate")


def train_label_means(features_dir: str | Path, k: int) -> np.ndarray | None:
    """The train-mean baseline's constant prediction, from ``<features_dir>/train/labels.npy``."""
    path = Path(features_dir) / "train" / "labels.npy"
    if not path.is_file():
        log.warning("%s not found: the train-mean baseline is left out", path)
        return None
    labels = np.load(path, mmap_mode="r", allow_pickle=False)
    if labels.ndim != 2 or labels.shape[1] < k or labels.shape[0] == 0:
        log.warning("%s: shape %s has no %d label columns: the train-mean baseline is left out", path, labels.shape, k)
        return None
    return np.asarray(labels[:, :k], dtype=np.float64).mean(axis=0)


def read_noise_floor(raw_dir: str | Path) -> tuple[float | None, dict[str, float]]:
    """The sample's best reachable accuracy (mean, per trait) from sample_metadata.json, if present."""
    path = Path(raw_dir) / "sample_metadata.json"
    if not path.is_file():
        return None, {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("%s: not valid JSON (%s): noise floor left out", path, err)
        return None, {}
    mean = meta.get("noise_floor_mean_accuracy")
    per = meta.get("noise_floor") if isinstance(meta.get("noise_floor"), dict) else {}
    return (float(mean) if isinstance(mean, (int, float)) else None), {k: float(v) for k, v in per.items()}


def read_history(path: Path) -> list[dict[str, Any]] | None:
    """models/history.json (one object per epoch), or None when absent or malformed."""
    if not path.is_file():
        return None
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("%s: not valid JSON (%s): training curves skipped", path, err)
        return None
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        log.warning("%s: expected a list of per-epoch objects: training curves skipped", path)
        return None
    return history
