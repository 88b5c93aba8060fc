"""The clips' splits (official, or regrouped so no YouTube id is in two splits) and ``manifest.csv``."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bigfive import ALL_LABELS, SPLITS
from bigfive.data.chalearn_names import youtube_id_of
from bigfive.data.chalearn_scan import Downloads

MANIFEST_COLUMNS: tuple[str, ...] = ("video_id", "youtube_id", "split", "path", *ALL_LABELS, "ethnicity", "gender")


def subject_disjoint_split(youtube_of: dict[str, str], official: dict[str, str], seed: int) -> dict[str, str]:
    """Regroup clips by YouTube id into splits of the official sizes; no id lands in two splits.

    Subjects are shuffled (seeded), then visited largest first (ties in shuffled order), each going
    to the split that is least full relative to its target (official clip count); placing the big
    subjects while there is room keeps every split within one subject's clip count of its target.
    """
    target = {s: c for s, c in Counter(official.values()).items() if c > 0}
    groups: dict[str, list[str]] = defaultdict(list)
    for vid in sorted(youtube_of):
        groups[youtube_of[vid]].append(vid)
    order = sorted(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    order.sort(key=lambda subject: -len(groups[subject]))  # stable: equal sizes keep the shuffled order
    filled = dict.fromkeys(target, 0)
    out: dict[str, str] = {}
    for subject in order:
        # Least-full first; ties go to the larger target, then the pipeline's split order.
        split = min(target, key=lambda s: (filled[s] / target[s], -target[s], SPLITS.index(s)))
        for vid in groups[subject]:
            out[vid] = split
        filled[split] += len(groups[subject])
    return out


def manifest_rows(splits: dict[str, str], downloads: Downloads) -> list[dict[str, Any]]:
    """One row per clip in ``MANIFEST_COLUMNS`` order, sorted by split then video id."""
    rows = []
    for vid in sorted(splits, key=lambda v: (SPLITS.index(splits[v]), v)):
        demo = downloads.demographics.get(vid)
        split = splits[vid]
        row: dict[str, Any] = {
            "video_id": vid,
            "youtube_id": demo.youtube_id if demo else youtube_id_of(vid),
            "split": split,
            "path": f"{split}/{vid}.mp4",
            **{label: downloads.labels[vid][label] for label in ALL_LABELS},
            "ethnicity": demo.ethnicity if demo else "",
            "gender": demo.gender if demo else "",
        }
        rows.append(row)
    return rows


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        # repr keeps every float's exact value (the shortest string that round-trips).
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
