"""What the page shows beside a prediction: the training labels' distribution, the sample's test clips
and the model card.

The distribution is read from the features stage's ``train/labels.npy`` (columns in ``ALL_LABELS``
order), the same file the evaluation's train-mean baseline comes from, so a bar can be read against
where the training scores lie.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from bigfive import ALL_LABELS
from bigfive.preprocess.pool import manifest_items

log = logging.getLogger("bigfive.app")

QUANTILES = (5, 25, 50, 75, 95)


def label_distribution(labels_path: Path, traits: list[str]) -> dict[str, Any] | None:
    """``{"source", "clips", "traits": {trait: {"p5".."p95", "mean"}}}``, or None when the file is unusable."""
    if not labels_path.is_file():
        log.warning("%s not found: the page shows the traits without the training distribution", labels_path)
        return None
    try:
        labels = np.load(labels_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        log.warning("%s: not a readable .npy file (%s): training distribution left out", labels_path, err)
        return None
    if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] < len(traits):
        log.warning("%s: shape %s has no column per trait: training distribution left out", labels_path, labels.shape)
        return None
    out: dict[str, Any] = {}
    for trait in traits:
        col = np.asarray(labels[:, ALL_LABELS.index(trait)], dtype=np.float64)
        stats = {f"p{q}": float(v) for q, v in zip(QUANTILES, np.percentile(col, QUANTILES))}
        out[trait] = {**stats, "mean": float(col.mean())}
    return {"source": str(labels_path), "clips": int(labels.shape[0]), "traits": out}


def sample_clips(raw_dir: Path, split: str = "test") -> dict[str, Path]:
    """video_id -> file of the raw stage's clips in ``split`` (from manifest.csv), in manifest order."""
    if not (raw_dir / "manifest.csv").is_file():
        return {}
    try:
        items = manifest_items(raw_dir)
    except ValueError as err:  # the page still works without the picker
        log.warning("no sample clips to pick: %s", err)
        return {}
    return {c.video_id: c.path for c in items if c.split == split and c.path.is_file()}


def model_card(model: str, tracking: str | None, fallback: Path) -> tuple[str, str] | None:
    """(card text, where it came from): the registered version's description for a ``models:/`` URI,
    else the evaluation's ``results/model_card.md``."""
    text = _registry_description(model, tracking)
    if text:
        return text, f"MLflow registry, {model}"
    if fallback.is_file():
        return fallback.read_text(encoding="utf-8"), str(fallback)
    return None


def _registry_description(uri: str, tracking: str | None) -> str | None:
    from bigfive.inference.loader import registered_version

    try:
        mv = registered_version(uri, tracking)
    except Exception as err:  # the model itself loaded, so this only costs the card
        log.warning("%s: cannot read the registered version's description (%s)", uri, type(err).__name__)
        return None
    return mv.description if mv is not None and mv.description else None
