"""The ``features`` stage: per-clip faces + flow -> memory-mappable arrays per split (docs/architecture.md).

``<features_dir>/<split>/``: ``static_features.npy`` (N, T, 3, S, S) uint8, ``dynamic_features.npy``
(N, T, 2L, S, S) uint8, ``labels.npy`` (N, 6) float32 in ``ALL_LABELS`` order, ``clip_ids.txt``;
and ``<features_dir>/meta.json``. Only manifest clips whose faces status is ok and whose faces and
flow outputs both exist are packed (the dropped ones are logged). Arrays are filled clip by clip
through ``np.lib.format.open_memmap`` into a temporary file that is renamed at the end, so memory
stays at one clip whatever N is and a reader never sees a half-written array.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bigfive import ALL_LABELS, SPLITS
from bigfive.config import Params, PreprocessConfig, load_params
from bigfive.preprocess.keys import FEATURES, FLOW, param_values, stage_key
from bigfive.preprocess.layout import faces_path, flow_key_matches, flow_output_ok, flow_path, load_faces_record
from bigfive.preprocess.pool import read_manifest, settings_of
from bigfive.utils.io import atomic_path, write_json, write_text
from bigfive.utils.progress import progress

log = logging.getLogger("bigfive.preprocess.features")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options beyond --params: packing is I/O bound and single-process


def run(args: argparse.Namespace) -> int:
    return run_features_stage(load_params(args.params))


def _label(row: dict[str, str], name: str, where: str) -> float:
    value = row.get(name, "")
    if value in ("", None):
        return math.nan  # e.g. interview absent: NaN, which training can mask
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: label {name}={value!r} is not a number") from None


def _pack(path: Path, shape: tuple[int, ...], fill: Any) -> None:
    """Write an (N, ...) uint8 .npy row by row through a memmap at a temporary name, then rename."""
    if shape[0] == 0:  # an empty split: mmap cannot map zero bytes
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.save(f, np.zeros(shape, np.uint8))
        return
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i in range(shape[0]):
            arr[i] = fill(i)
        arr.flush()
        del arr


def run_features_stage(params: Params) -> int:
    cfg = params.preprocess
    settings = settings_of(params)
    flow_current = flow_key_matches(cfg, stage_key(params, FLOW))
    if not flow_current:
        log.warning("features: %s was made under other params or code (rerun `bigfive flow`)", cfg.flow_dir)
    rows = read_manifest(params.data.raw_dir)
    out_dir = Path(cfg.features_dir)
    counts: dict[str, int] = {}
    train_quality: list[dict[str, Any]] = []
    splits = [sp for sp in SPLITS if any(r["split"] == sp for r in rows)]
    unknown = sorted({r["split"] for r in rows} - set(SPLITS))
    if unknown:
        log.warning("features: ignoring manifest split(s) %s (expected %s)", unknown, list(SPLITS))
    for split in splits:
        kept, quality = _usable_clips(cfg, settings, flow_current, split, [r for r in rows if r["split"] == split])
        if split == "train":
            train_quality = quality
        counts[split] = len(kept)
        _pack_split(cfg, split, kept, out_dir / split)
    write_json(out_dir / "meta.json", _meta(params, counts, train_quality))
    print(f"features: packed {counts} into {out_dir}", file=sys.stderr)
    if not any(counts.values()):
        print("features: no clip had both faces and flow outputs (run `bigfive faces` and `bigfive flow`)",
              file=sys.stderr)
        return 1
    return 0


def _usable_clips(cfg: PreprocessConfig, settings: str, flow_current: bool, split: str, rows: list[dict[str, str]]
                  ) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The manifest rows of ``split`` with an ok faces output (same key) and a flow output (same key), and
    their faces records; the others are counted by reason and logged."""
    kept: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    for r in rows:
        rec = load_faces_record(faces_path(cfg, split, r["video_id"]), settings)
        if rec is None:
            why = "no faces output"
        elif rec["status"] != "ok":
            why = f"faces {rec['status']}"
        elif not flow_current or not flow_output_ok(flow_path(cfg, split, r["video_id"]), cfg):
            why = "no flow output"
        else:
            kept.append(r)
            records.append(rec)
            continue
        dropped[why] = dropped.get(why, 0) + 1
    if dropped:
        log.warning("features: %s: dropped %d clip(s): %s", split, sum(dropped.values()),
                    ", ".join(f"{k} {v}" for k, v in dropped.items()))
    return kept, records


def _pack_split(cfg: PreprocessConfig, split: str, kept: list[dict[str, str]], d: Path) -> None:
    """The split's static and dynamic arrays, labels and clip ids, in manifest order."""
    n, t_len, s, c = len(kept), cfg.frames, cfg.crop_size, 2 * cfg.flow.stack
    labels = np.array([[_label(r, name, f"manifest {split}/{r['video_id']}") for name in ALL_LABELS]
                       for r in kept], np.float32).reshape(n, len(ALL_LABELS))
    bar = progress(total=2 * n, desc=f"features {split}", unit="clip")

    def static(i: int) -> np.ndarray:
        with np.load(faces_path(cfg, split, kept[i]["video_id"]), allow_pickle=False) as z:
            crops = z["crops"]
        bar.update()
        return crops.transpose(0, 3, 1, 2)

    def dynamic(i: int) -> np.ndarray:
        bar.update()
        return np.load(flow_path(cfg, split, kept[i]["video_id"]), allow_pickle=False)

    _pack(d / "static_features.npy", (n, t_len, 3, s, s), static)
    _pack(d / "dynamic_features.npy", (n, t_len, c, s, s), dynamic)
    bar.close()
    with atomic_path(d / "labels.npy") as tmp, tmp.open("wb") as f:
        np.save(f, labels)
    write_text(d / "clip_ids.txt", "".join(f"{r['video_id']}\n" for r in kept))


def _meta(params: Params, counts: dict[str, int], train_quality: list[dict[str, Any]]) -> dict[str, Any]:
    """meta.json: the preprocessing that made the arrays (checkpoints carry it), counts, training-face quality.

    The preprocessing is every ``preprocess`` param the faces and flow stages declare (folders aside).
    """
    cfg = params.preprocess
    made_by = {key.removeprefix("preprocess."): value for key, value in param_values(params, FEATURES).items()
               if key.startswith("preprocess.") and not key.endswith("_dir")}
    # "preset": the name earlier meta files used for dis_preset (inference/loader.py reads both)
    made_by["flow"] = {**made_by["flow"], "preset": cfg.flow.dis_preset}
    return {**made_by, "channels": 2 * cfg.flow.stack, "labels": list(ALL_LABELS), "counts": counts,
            "train_quality": _quality_stats(train_quality)}


def _quality_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Detection quality of the training clips; ``predict`` flags clips well below it."""
    if not recs:
        return {"clips": 0}
    dr = np.array([r["detection_rate"] for r in recs], np.float64)
    mc = np.array([r["mean_confidence"] for r in recs], np.float64)
    jit = np.array([r["box_jitter"] for r in recs], np.float64)
    return {
        "clips": len(recs),
        "mean_detection_rate": float(dr.mean()), "p05_detection_rate": float(np.percentile(dr, 5)),
        "mean_confidence": float(mc.mean()), "p05_confidence": float(np.percentile(mc, 5)),
        "mean_box_jitter": float(np.nanmean(jit)) if np.isfinite(jit).any() else None,
    }
