"""Gender and ethnicity per clip from data/raw/manifest.csv, for the per-group metrics.

The manifest keeps ChaLearn's numeric codes; they are decoded to readable names here, and a
missing or empty value becomes None (the clip is left out of that attribute's groups).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("bigfive.evaluate")

GENDER = {"1": "male", "2": "female"}
ETHNICITY = {"1": "Asian", "2": "Caucasian", "3": "African-American"}
ATTRIBUTES = ("gender", "ethnicity")

Demographics = dict[str, dict[str, str | None]]  # video_id -> attribute -> group name or None


def read_demographics(manifest: str | Path) -> Demographics | None:
    """video_id -> {"gender", "ethnicity"} (readable names, None where unknown) from data/raw/manifest.csv;
    None when the file is missing or records no attribute at all."""
    path = Path(manifest)
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "video_id" not in reader.fieldnames:
            log.warning("%s: no video_id column: per-group metrics left out", path)
            return None
        out: Demographics = {}
        for row in reader:
            out[row["video_id"]] = {"gender": _decode(row.get("gender"), GENDER),
                                    "ethnicity": _decode(row.get("ethnicity"), ETHNICITY)}
    if not any(v for rec in out.values() for v in rec.values()):
        return None
    return out


def _decode(value: str | None, codes: dict[str, str]) -> str | None:
    value = (value or "").strip()
    if not value or value.lower() == "nan":
        return None
    try:
        value = str(int(float(value)))
    except ValueError:
        return value  # already a name
    return codes.get(value, f"code {value}")


def group_labels(demographics: Demographics, clip_ids: Sequence[str]) -> dict[str, list[str | None]]:
    """attribute -> one group name (or None) per clip in ``clip_ids`` order, for the attributes any clip has."""
    groups = {attr: [demographics.get(cid, {}).get(attr) for cid in clip_ids] for attr in ATTRIBUTES}
    return {a: g for a, g in groups.items() if any(v is not None for v in g)}
