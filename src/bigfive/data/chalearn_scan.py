"""What a downloads folder holds: labels and demographics (loose or inside any zip) and where clips are.

The official release: ``train-1.zip`` ... ``train-6.zip``, ``val-1.zip``, ``val-2.zip``, ``test-1e.zip``,
``test-2e.zip`` holding nested zips of 80 clips (``training80_01.zip`` ...), each clip
``<YouTubeID>.<NNN>.mp4``; labels in ``annotation_{training,validation,test}.pkl`` (loose or inside any
zip); demographics in ``eth_gender_annotations_{dev,test}.csv``. Nothing here depends on archive
*names*: every file and top-level zip member named like labels or demographics is read as such, and
every zip that holds ``*.mp4`` or ``*.zip`` members is listed for :func:`bigfive.data.chalearn.iter_clips`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyzipper

from bigfive.data.chalearn_demographics import Demographic, FileWarnings, parse_demographics
from bigfive.data.chalearn_names import ANNOTATION_RE, DEMOGRAPHICS_RE, IngestError, split_of_annotation
from bigfive.data.chalearn_pickles import load_pickle, parse_annotations
from bigfive.data.chalearn_zip import COPY_BUFFER, hidden_path, member_error, open_member, open_zip
from bigfive.data.limits import (
    DEFAULT_LIMITS,
    BoundedReader,
    InflateBudget,
    IngestLimits,
    LimitError,
    human,
    read_capped,
)


@dataclass
class Downloads:
    """Everything found in a downloads directory except the clips themselves."""

    root: Path
    labels: dict[str, dict[str, float]] = field(default_factory=dict)  # video_id -> label -> value
    split_of: dict[str, str] = field(default_factory=dict)  # video_id -> official split
    label_source: dict[str, str] = field(default_factory=dict)  # video_id -> annotation file
    demographics: dict[str, Demographic] = field(default_factory=dict)
    zips: list[Path] = field(default_factory=list)  # archives that may hold clips
    loose_clips: list[Path] = field(default_factory=list)  # *.mp4 files outside zips
    annotation_files: list[str] = field(default_factory=list)
    demographic_files: list[str] = field(default_factory=list)
    metadata: Path | None = None  # sample_metadata.json (from the sample generator)
    warnings: list[str] = field(default_factory=list)
    limits: IngestLimits = DEFAULT_LIMITS
    budget: InflateBudget = field(default_factory=InflateBudget)  # bytes inflated so far, all archives
    label_files: int = 0  # annotation and demographics files read so far
    csv_rows: int = 0  # demographics rows read so far
    clips_walked: int = 0  # clip members met so far


def scan_downloads(root: str | Path, password: bytes | None, password_hint: str = "",
                   exclude: Path | None = None, limits: IngestLimits = DEFAULT_LIMITS) -> Downloads:
    """Read labels and demographics (loose or in any top-level zip) and list clip sources.

    ``exclude`` (the output directory, should it lie inside ``root``) is not scanned.
    """
    root = Path(root)
    exclude = exclude.resolve() if exclude is not None else None
    if not root.is_dir():
        raise IngestError(root, "directory", "downloads directory not found")
    found = Downloads(root, limits=limits, budget=InflateBudget(limits))
    pickles: dict[str, tuple[str, dict[str, dict[str, float]]]] = {}  # file name -> (where, labels)
    demographics: list[tuple[str, dict[str, Demographic]]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not hidden_path(p.relative_to(root))):
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        rel = str(path.relative_to(root))
        name = path.name
        if ANNOTATION_RE.match(name):
            _count_label_file(found, rel)
            data = _read_file(path, rel, "pickle", limits.max_pickle_bytes, "max_pickle_bytes")
            _add_pickle(pickles, name, rel, data, limits)
        elif DEMOGRAPHICS_RE.match(name):
            _count_label_file(found, rel)
            with _open_file(path, rel, "demographics", limits.max_csv_bytes, "max_csv_bytes") as f:
                demographics.append((rel, _read_demographics(f, rel, found)))
        elif name.lower().endswith(".zip"):
            if _scan_zip(path, rel, password, password_hint, pickles, demographics, found):
                found.zips.append(path)
        elif name.lower().endswith(".mp4"):
            found.clips_walked += 1
            if found.clips_walked > limits.max_clips:
                raise IngestError(rel, "clips", f"more than {limits.max_clips} clips (limit max_clips)")
            found.loose_clips.append(path)
        elif name == "sample_metadata.json" and path.parent == root:
            found.metadata = path

    for name in sorted(pickles):
        where, labels = pickles[name]
        split = split_of_annotation(name)
        found.annotation_files.append(where)
        for vid, values in labels.items():
            if vid in found.labels:
                raise IngestError(where, f"{vid}.mp4", f"duplicate clip id: also labelled in {found.label_source[vid]}")
            found.labels[vid] = values
            found.split_of[vid] = split
            found.label_source[vid] = where
    for where, parsed in demographics:
        found.demographic_files.append(where)
        notes = FileWarnings(where, found.warnings, limits.max_warnings_per_file)
        for vid, demo in parsed.items():
            old = found.demographics.get(vid)
            if old is not None and old != demo:
                notes.add(vid, "demographics differ from an earlier file; keeping the first")
                continue
            found.demographics[vid] = demo
        notes.close()
    return found


def _count_label_file(found: Downloads, where: str) -> None:
    found.label_files += 1
    if found.label_files > found.limits.max_label_files:
        raise IngestError(where, "labels", f"more than {found.limits.max_label_files} annotation and demographics "
                          "files (limit max_label_files)")


def _add_pickle(pickles: dict[str, tuple[str, dict[str, dict[str, float]]]], name: str, where: str,
                data: bytes, limits: IngestLimits = DEFAULT_LIMITS) -> None:
    labels = parse_annotations(load_pickle(data, where, limits), where)
    if sum(len(v[1]) for v in pickles.values()) + len(labels) > limits.max_clips:
        raise IngestError(where, "labels", f"more than {limits.max_clips} labelled clips in all (limit max_clips)")
    key = name.lower()
    if key in pickles:
        # The same file unpacked and inside its annotation zip is fine; two different ones are not.
        if pickles[key][1] != labels:
            raise IngestError(where, name, f"differs from {pickles[key][0]} (two different annotation files "
                              "of the same name; remove one)")
        return
    pickles[key] = (where, labels)


def _open_file(path: Path, where: str, entry: str, cap: int, cap_name: str) -> BoundedReader:
    """A file in the downloads directory, read through a :class:`BoundedReader` of ``cap`` bytes."""
    try:
        return BoundedReader(path.open("rb"), cap, f"larger than {human(cap)} (limit {cap_name})")
    except OSError as err:
        raise IngestError(where, entry, f"cannot read ({err.strerror or err})") from None


def _read_file(path: Path, where: str, entry: str, cap: int, cap_name: str) -> bytes:
    f = _open_file(path, where, entry, cap, cap_name)
    try:
        return read_capped(f, cap, f.why)
    except LimitError as err:
        raise IngestError(where, entry, str(err)) from None
    except OSError as err:
        raise IngestError(where, entry, f"cannot read ({err.strerror or err})") from None


def _read_demographics(stream: BinaryIO, where: str, found: Downloads) -> dict[str, Demographic]:
    """Parse a demographics CSV as it streams in (never whole in memory); a limit breach is an error."""
    text = io.TextIOWrapper(io.BufferedReader(stream, COPY_BUFFER), encoding="utf-8-sig", errors="replace",
                            newline="")
    try:
        parsed = parse_demographics(text, where, found.warnings, found.limits,
                                    max_rows=max(found.limits.max_csv_rows - found.csv_rows, 0))
    except LimitError as err:
        raise IngestError(where, "demographics", str(err)) from None
    found.csv_rows += len(parsed)
    return parsed


def _read_member(zf: pyzipper.AESZipFile, info: zipfile.ZipInfo, where: str, hint: str, cap: int, cap_name: str,
                 found: Downloads) -> bytes:
    f = open_member(zf, info, where, hint, cap, cap_name, found.budget, found.limits)
    try:
        return read_capped(f, f.cap, f.why)
    except LimitError as err:
        raise IngestError(where, info.filename, str(err)) from None
    except Exception as err:
        raise member_error(where, info, err, hint) from None


def _scan_zip(path: Path, where: str, password: bytes | None, hint: str,
              pickles: dict[str, tuple[str, dict[str, dict[str, float]]]],
              demographics: list[tuple[str, dict[str, Demographic]]], found: Downloads) -> bool:
    """Read annotation/demographic members; return whether the zip may hold clips (mp4 or zip members)."""
    limits = found.limits
    with open_zip(path, where, password, limits) as zf:
        may_hold_clips = False
        checked_password = False
        for info in zf.infolist():
            name = info.filename.rsplit("/", 1)[-1]
            if info.filename.endswith("/") or hidden_path(Path(info.filename)):  # is_dir() fails on an empty name
                continue
            lower = name.lower()
            inner = f"{where}!{info.filename}"
            if ANNOTATION_RE.match(name):
                _count_label_file(found, inner)
                data = _read_member(zf, info, where, hint, limits.max_pickle_bytes, "max_pickle_bytes", found)
                _add_pickle(pickles, name, inner, data, limits)
            elif DEMOGRAPHICS_RE.match(name):
                _count_label_file(found, inner)
                with open_member(zf, info, where, hint, limits.max_csv_bytes, "max_csv_bytes", found.budget,
                                  limits) as f:
                    try:
                        demographics.append((inner, _read_demographics(f, inner, found)))
                    except IngestError:
                        raise
                    except Exception as err:
                        raise member_error(where, info, err, hint) from None
            elif lower.endswith((".mp4", ".zip")):
                may_hold_clips = True
                if info.flag_bits & 0x1 and not checked_password:
                    # Opening checks the password: fail now, not after copying the other archives.
                    try:
                        zf.open(info).close()
                    except Exception as err:
                        raise member_error(where, info, err, hint) from None
                    checked_password = True
        return may_hold_clips
