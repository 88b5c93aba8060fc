"""Random feature arrays whose labels are a learnable function of the inputs: a test fixture (``synth_features``).

Each clip gets six levels in [0.1, 0.9]: static RGB channel k carries label k's level as its
brightness (k = 0..2), flow dx / dy carry labels 3 / 4, on top of uniform noise. The layout is the
features stage's (``<root>/<split>/*.npy``, ``clip_ids.txt``, ``<root>/meta.json``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bigfive import ALL_LABELS
from bigfive.utils.io import save_npy, write_json, write_text


def make_clips(n: int, frames: int, size: int, channels: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    levels = rng.uniform(0.1, 0.9, size=(n, len(ALL_LABELS))).astype(np.float32)
    static = rng.integers(0, 48, size=(n, frames, 3, size, size)).astype(np.float32)
    static += levels[:, None, :3, None, None] * 200
    dynamic = rng.integers(0, 48, size=(n, frames, channels, size, size)).astype(np.float32)
    dynamic[:, :, 0::2] += levels[:, None, 3, None, None, None] * 200
    dynamic[:, :, 1::2] += levels[:, None, 4, None, None, None] * 200
    return static.astype(np.uint8), dynamic.astype(np.uint8), levels


def write_features(root: str | Path, n: int = 24, frames: int = 4, size: int = 32, channels: int = 2,
                   seed: int = 0, splits: tuple[str, ...] = ("train", "val")) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = {}
    for split in splits:
        static, dynamic, labels = make_clips(n, frames, size, channels, rng)
        d = root / split
        save_npy(d / "static_features.npy", static)
        save_npy(d / "dynamic_features.npy", dynamic)
        save_npy(d / "labels.npy", labels)
        write_text(d / "clip_ids.txt", "".join(f"{split}-{i:04d}\n" for i in range(n)))
        counts[split] = n
    write_json(root / "meta.json", {"frames": frames, "crop_size": size, "channels": channels,
                                    "flow": {"method": "synthetic", "bound": 8.0, "stack": channels // 2},
                                    "labels": list(ALL_LABELS), "sampling": "center", "counts": counts})
    return root
