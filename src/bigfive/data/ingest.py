"""``bigfive ingest DOWNLOADS_DIR``: ChaLearn First Impressions V2 downloads -> ``data/raw``.

Output: ``{train,val,test}/<video_id>.mp4``, ``manifest.csv`` (columns
:data:`bigfive.data.chalearn.MANIFEST_COLUMNS`), ``ingest_report.json`` (counts, skipped clips,
warnings) and, from the sample generator, ``sample_metadata.json``. The directory is built beside
the target and renamed into place at the end, so a failed run leaves an existing one untouched;
the temporary folder of a run that was killed is removed by the next run (with a log line).

Incomplete downloads are refused unless ``--partial`` asks for them: a folder written by ``bigfive
sample`` without its completion marker (:data:`bigfive.data.chalearn.SAMPLE_COMPLETE`) or with a
listed file missing or truncated, and any official split with no labelled clip found.
Untrusted input is bounded (:class:`bigfive.data.limits.IngestLimits`, ``--limit NAME=VALUE``).

The val/test password comes from ``--password-file FILE`` or the environment variable named by
``--password-env`` (default: ``data.password_env``); it is never logged or written anywhere.
Error policy: see :mod:`bigfive.data.chalearn` (``--strict`` makes dataset mismatches fatal too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from bigfive import SPLITS
from bigfive.data import chalearn
from bigfive.data.chalearn import SAMPLE_COMPLETE, IngestError
from bigfive.data.limits import DEFAULT_LIMITS, IngestLimits
from bigfive.utils.io import atomic_dir, write_json
from bigfive.utils.progress import progress
from bigfive.utils.text import printable, short_repr

log = logging.getLogger(__name__)
MAX_LOGGED = 5  # mismatches named in the log; the report lists them all
MAX_JSON_BYTES = 1 << 20  # sample_metadata.json / sample_complete.json are a few KB
PARTIAL_HINT = "pass --partial to ingest what is there"


def resolve_password(env_name: str | None, password_file: str | Path | None = None) -> bytes | None:
    """The archive password from a file (first line) or an environment variable; None if neither."""
    if password_file:
        path = Path(password_file)
        if not path.is_file():
            raise IngestError(path, "password file", "not found")
        with path.open("rb") as f:
            lines = f.read(1 << 16).splitlines()  # a password file, not a download: 64 KB is plenty
        return lines[0] if lines and lines[0] else None
    value = os.environ.get(env_name) if env_name else None
    return value.encode("utf-8") if value else None


def ingest_downloads(downloads_dir: str | Path, out_dir: str | Path, *, split: str = "official", seed: int = 0,
                     password: bytes | None = None, password_hint: str = "", strict: bool = False,
                     show_progress: bool = True, partial: bool = False,
                     limits: IngestLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Ingest a downloads directory into ``out_dir`` atomically; returns the ingest report.

    ``partial`` accepts an incomplete download (see the module doc) with warnings instead of an error.
    """
    if split not in ("official", "subject_disjoint"):
        raise ValueError(f"split must be 'official' or 'subject_disjoint', got {split!r}")
    limits.validate()
    downloads_dir, out_dir = Path(downloads_dir), Path(out_dir)
    incomplete = _sample_incomplete(downloads_dir)  # before reading archives a killed run may have cut short
    if incomplete is not None and not partial:
        raise IngestError(downloads_dir, incomplete[0], f"{incomplete[1]}; {PARTIAL_HINT}")
    found = _scan(downloads_dir, out_dir, password, password_hint, limits)
    warnings = list(found.warnings)
    incomplete = incomplete or _unlabelled_split(downloads_dir, found, partial)
    if incomplete is not None:
        warnings.append(f"{downloads_dir}: {incomplete[0]}: {incomplete[1]} (--partial: ingested anyway)")
    with atomic_dir(out_dir) as tmp:
        staging, scratch = tmp / ".staging", tmp / ".scratch"
        staging.mkdir()
        seen, unlabelled = _copy_labelled(found, password, password_hint, staging, scratch, strict, show_progress)
        missing = sorted(vid for vid in found.labels if vid not in seen)
        if missing and strict:
            vid = missing[0]
            raise IngestError(found.label_source[vid], f"{vid}.mp4", "labelled but no video found in the downloads")
        _report_mismatches(unlabelled, missing, found, warnings)
        ingested = sorted(vid for vid in seen if vid in found.labels)
        if not ingested:
            raise IngestError(downloads_dir, "*.mp4", "no labelled clips found in the archives")
        official = {vid: found.split_of[vid] for vid in ingested}
        _check_splits_found(downloads_dir, found, official, partial)
        youtube = {vid: found.demographics[vid].youtube_id if vid in found.demographics
                   else chalearn.youtube_id_of(vid) for vid in ingested}
        splits = chalearn.subject_disjoint_split(youtube, official, seed) if split == "subject_disjoint" else official
        _place(tmp, staging, splits, downloads_dir, warnings)
        shutil.rmtree(scratch, ignore_errors=True)
        chalearn.write_manifest(tmp / "manifest.csv", chalearn.manifest_rows(splits, found))
        if found.metadata is not None:
            shutil.copyfile(found.metadata, tmp / "sample_metadata.json")
        report = _report(found, splits, official, youtube, split, seed, strict, unlabelled, missing, warnings)
        if partial:  # only then: the report of a complete ingest stays byte-identical
            report["partial"] = True
        write_json(tmp / "ingest_report.json", report)
    for w in warnings:
        log.warning("%s", printable(w))
    counts = report["counts"]
    log.info("ingested %d clips into %s (train %d, val %d, test %d; %s split)", len(splits), printable(out_dir),
             counts["train"], counts["val"], counts["test"], split)
    return report


def _scan(downloads_dir: Path, out_dir: Path, password: bytes | None, password_hint: str,
          limits: IngestLimits) -> chalearn.Downloads:
    """The downloads' labels and archives; an error when either is missing."""
    found = chalearn.scan_downloads(downloads_dir, password, password_hint, exclude=out_dir, limits=limits)
    if not found.labels:
        raise IngestError(downloads_dir, "annotation_*.pkl", "no annotation pickles found (loose or in a zip)")
    if not found.zips and not found.loose_clips:
        raise IngestError(downloads_dir, "*.zip", "no archives holding clips found")
    log.info("labels: %d clips from %s; %d archive(s) to walk", len(found.labels),
             printable(", ".join(found.annotation_files)), len(found.zips))
    return found


def _unlabelled_split(downloads_dir: Path, found: chalearn.Downloads, partial: bool) -> tuple[str, str] | None:
    """``(splits, problem)`` when an official split has no labelled clip (an error unless ``partial``)."""
    labelled = set(found.split_of.values())
    missing_splits = [s for s in SPLITS if s not in labelled]
    if not missing_splits:
        return None
    incomplete = (", ".join(missing_splits), "no annotation pickle labels any clip of this split "
                  "(annotation file not downloaded, or an interrupted download?)")
    if not partial:
        raise IngestError(downloads_dir, incomplete[0], f"{incomplete[1]}; {PARTIAL_HINT}")
    return incomplete


def _copy_labelled(found: chalearn.Downloads, password: bytes | None, password_hint: str, staging: Path,
                   scratch: Path, strict: bool, show_progress: bool) -> tuple[dict[str, str], list[str]]:
    """Copy every labelled clip into ``staging``; returns (video_id -> where found, unlabelled sources)."""
    seen: dict[str, str] = {}
    unlabelled: list[str] = []
    bar = progress(total=len(found.labels), desc="ingest", disable=not show_progress)
    for clip in chalearn.iter_clips(found, password, scratch, password_hint):
        chalearn.check_video_id(clip.video_id, clip.source)
        if clip.video_id in seen:
            raise IngestError(clip.source, clip.video_id, f"duplicate clip: also in {seen[clip.video_id]}")
        seen[clip.video_id] = clip.source
        if clip.video_id not in found.labels:
            if strict:
                raise IngestError(clip.source, clip.video_id, "video has no label in any annotation pickle")
            unlabelled.append(clip.source)
            continue
        clip.copy_to(staging / f"{clip.video_id}.mp4")
        bar.update()
    bar.close()
    return seen, unlabelled


def _check_splits_found(downloads_dir: Path, found: chalearn.Downloads, official: dict[str, str],
                        partial: bool) -> None:
    """Every official split must have clips in the archives (unless ``partial``)."""
    for name in SPLITS:
        if name not in official.values() and not partial:
            n = sum(1 for s in found.split_of.values() if s == name)
            raise IngestError(downloads_dir, name, f"split is empty: none of its {n} labelled clips was found in "
                              f"the archives (archive missing, or an interrupted download?); {PARTIAL_HINT}")


def _place(tmp: Path, staging: Path, splits: dict[str, str], downloads_dir: Path, warnings: list[str]) -> None:
    """Move the staged clips into their split folders (all three exist, empty or not)."""
    for name in SPLITS:
        (tmp / name).mkdir()
    for vid, name in splits.items():
        (staging / f"{vid}.mp4").rename(tmp / name / f"{vid}.mp4")
    for name in SPLITS:
        if not any(s == name for s in splits.values()):
            warnings.append(f"{downloads_dir}: {name}: split is empty")
    shutil.rmtree(staging)


def _read_json(path: Path) -> Any:
    """A small JSON file from the downloads; None when absent, unreadable, too big or not JSON."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            return None
        return json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None


def _sample_incomplete(root: Path) -> tuple[str, str] | None:
    """``(entry, problem)`` when the downloads were written by ``bigfive sample`` and it did not finish;
    ``None`` when they are complete or not the sample's (no ``sample_metadata.json`` naming the generator)."""
    metadata = root / "sample_metadata.json"
    meta = _read_json(metadata) if metadata.is_file() else None
    if not isinstance(meta, dict) or meta.get("generator") != "bigfive.data.sample":
        return None
    marker = root / SAMPLE_COMPLETE
    done = _read_json(marker) if marker.is_file() else None
    files = done.get("files") if isinstance(done, dict) else None
    if not isinstance(files, dict) or not files:
        return (SAMPLE_COMPLETE, "missing or unreadable: `bigfive sample` did not finish writing this folder "
                "(killed?); run it again")
    for name, size in files.items():
        if not isinstance(name, str) or len(name) > 255 or Path(name).name != name or name in (".", ".."):
            return (SAMPLE_COMPLETE, f"lists {short_repr(name)}, not a file name")
        path = root / name
        if not path.is_file():
            return (name, f"missing, though {SAMPLE_COMPLETE} lists it (deleted, or an interrupted copy?)")
        if path.stat().st_size != size:
            return (name, f"{path.stat().st_size} bytes, {SAMPLE_COMPLETE} says {short_repr(size)} (truncated?)")
    return None


def _report_mismatches(unlabelled: list[str], missing: list[str], found: chalearn.Downloads,
                       warnings: list[str]) -> None:
    # One summary line per kind: a partial download can leave thousands of labels without video.
    if unlabelled:
        shown = ", ".join(unlabelled[:MAX_LOGGED]) + (" ..." if len(unlabelled) > MAX_LOGGED else "")
        warnings.append(f"{len(unlabelled)} video(s) with no label skipped: {shown}")
    if missing:
        by_split = Counter(found.split_of[v] for v in missing)
        shown = ", ".join(f"{found.label_source[v]}: {v}.mp4" for v in missing[:MAX_LOGGED])
        more = " ..." if len(missing) > MAX_LOGGED else ""
        warnings.append(f"{len(missing)} labelled clip(s) with no video skipped "
                        f"({', '.join(f'{s} {n}' for s, n in sorted(by_split.items()))}): {shown}{more}")


def _report(found: chalearn.Downloads, splits: dict[str, str], official: dict[str, str], youtube: dict[str, str],
            split: str, seed: int, strict: bool, unlabelled: list[str], missing: list[str],
            warnings: list[str]) -> dict[str, Any]:
    subjects = {s: {youtube[v] for v, sp in splits.items() if sp == s} for s in SPLITS}
    shared = set.union(*(subjects[a] & subjects[b] for a, b in (("train", "val"), ("train", "test"), ("val", "test"))))
    return {
        "downloads_dir": str(found.root),
        "split": split,
        "seed": seed,
        "strict": strict,
        "counts": {s: sum(1 for sp in splits.values() if sp == s) for s in SPLITS},
        "official_counts": {s: sum(1 for sp in official.values() if sp == s) for s in SPLITS},
        "subjects": {s: len(subjects[s]) for s in SPLITS},
        "subjects_in_several_splits": len(shared),
        "labelled_clips": len(found.labels),
        "with_demographics": sum(1 for v in splits if v in found.demographics),
        "archives": [str(p.relative_to(found.root)) for p in found.zips],
        "annotation_files": found.annotation_files,
        "demographic_files": found.demographic_files,
        "videos_without_label": unlabelled,
        "labels_without_video": [f"{found.label_source[v]}: {v}.mp4" for v in missing],
        "warnings": warnings,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("downloads_dir", help="directory holding the official downloads (zips, annotation pickles)")
    parser.add_argument("--out", default=None, help="output directory (default: data.raw_dir)")
    parser.add_argument("--split", choices=["official", "subject_disjoint"], default=None,
                        help="official splits or a subject-disjoint re-split (default: data.split)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the subject-disjoint split (default: seed)")
    parser.add_argument("--password-env", default=None, metavar="VAR",
                        help="environment variable holding the val/test password (default: data.password_env)")
    parser.add_argument("--password-file", default=None, metavar="FILE", help="file whose first line is the password")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="treat videos without labels and labels without videos as errors")
    parser.add_argument("--partial", action="store_true",
                        help="ingest an incomplete download (a split with no clips, a sample folder whose generator "
                             "did not finish) with warnings instead of refusing it")
    limits = ", ".join(f"{f.name} ({getattr(DEFAULT_LIMITS, f.name)})" for f in DEFAULT_LIMITS.__dataclass_fields__
                       .values())
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help=f"raise or lower a bound on untrusted input (sizes take K, M, G); defaults: {limits}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import Params, load_params

    # params.yaml gives the defaults when present, so `bigfive ingest` also works outside the repo.
    params = load_params(args.params) if Path(args.params).exists() else Params()
    data = params.data
    env = args.password_env or data.password_env
    hint = (f"check --password-file {args.password_file}" if args.password_file
            else f"set the environment variable {env} or pass --password-file")
    ingest_downloads(
        args.downloads_dir, args.out or data.raw_dir,
        split=args.split or data.split,
        seed=params.seed if args.seed is None else args.seed,
        password=resolve_password(env, args.password_file),
        password_hint=hint,
        strict=data.strict if args.strict is None else args.strict,
        show_progress=not args.no_progress,
        partial=args.partial,
        limits=DEFAULT_LIMITS.replace(args.limit),
    )
    return 0
