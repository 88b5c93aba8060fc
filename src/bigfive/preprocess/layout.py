"""Where the faces and flow stages put each clip's output, and how a finished output is recognised.

The layer under the stages: the flow stage reads the faces stage's files, and the features stage
both, without importing each other (or :mod:`bigfive.preprocess.clip`, which the faces stage runs).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.config import PreprocessConfig


def faces_path(cfg: PreprocessConfig, split: str, video_id: str) -> Path:
    return Path(cfg.faces_dir) / split / f"{video_id}.npz"


def load_faces_record(path: Path, settings: str | None = None) -> dict[str, Any] | None:
    """The quality row stored in a faces npz, or None when missing, unreadable or made with other settings."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if settings is not None and str(z["settings"]) != settings:
                return None
            return json.loads(str(z["quality"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None


def flow_path(cfg: PreprocessConfig, split: str, video_id: str) -> Path:
    return Path(cfg.flow_dir) / split / f"{video_id}.npy"


def flow_key_path(cfg: PreprocessConfig) -> Path:
    """The flow stage's key (:mod:`bigfive.preprocess.keys`) for every flow file present."""
    return Path(cfg.flow_dir) / "settings.json"


def flow_key_matches(cfg: PreprocessConfig, key: str) -> bool:
    path = flow_key_path(cfg)
    try:
        return path.read_text() == key
    except (OSError, UnicodeDecodeError):
        return False


def _expected_shape(cfg: PreprocessConfig) -> tuple[int, int, int, int]:
    return (cfg.frames, 2 * cfg.flow.stack, cfg.crop_size, cfg.crop_size)


def flow_output_ok(path: Path, cfg: PreprocessConfig) -> bool:
    """A complete flow file of the configured shape exists (temp files never sit at the final name)."""
    if not path.exists():
        return False
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return False
    return arr.shape == _expected_shape(cfg) and arr.dtype == np.uint8
