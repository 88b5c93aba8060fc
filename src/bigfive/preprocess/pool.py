"""Worker pool for per-clip stages: a progress bar, the manifest, resumability helpers, failure accounting.

Each worker process loads its heavy state once (``init``: e.g. MTCNN) and runs with one torch and
one OpenCV thread: clips are the unit of parallelism, nested threads only fight over cores.
Workers use the ``spawn`` context (no forked torch/OpenMP state). ``workers=1`` runs in-process.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigfive.config import Params
from bigfive.preprocess.keys import FACES, stage_key
from bigfive.utils.io import write_text
from bigfive.utils.progress import progress

log = logging.getLogger("bigfive.preprocess")

QUALITY_COLUMNS = ("video_id", "split", "status", "reason", "detection_rate", "mean_confidence", "box_jitter",
                   "n_frames", "fps", "width", "height")

_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class ClipItem:
    video_id: str
    split: str
    path: Path  # the raw clip


def settings_of(params: Params) -> str:
    """The faces stage's key (:mod:`bigfive.preprocess.keys`): a faces output made under another is redone."""
    return stage_key(params, FACES)


def read_manifest(raw_dir: str | Path) -> list[dict[str, str]]:
    """``<raw_dir>/manifest.csv`` rows as strings (ids such as ``-6otZ7M-Mro.003`` stay verbatim)."""
    path = Path(raw_dir) / "manifest.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: manifest not found (run `bigfive raw` first)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"video_id", "split", "path"}
    missing = need - set(rows[0] if rows else need)
    if not rows:
        raise ValueError(f"{path}: manifest has no rows")
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    seen: set[str] = set()
    for i, r in enumerate(rows, start=2):
        if not r["video_id"] or not r["split"]:
            raise ValueError(f"{path}: line {i}: empty video_id or split")
        if r["video_id"] in seen:
            raise ValueError(f"{path}: line {i}: duplicate video_id {r['video_id']!r}")
        seen.add(r["video_id"])
    return rows


def manifest_items(raw_dir: str | Path) -> list[ClipItem]:
    raw_dir = Path(raw_dir)
    return [ClipItem(r["video_id"], r["split"], raw_dir / r["path"]) for r in read_manifest(raw_dir)]


def default_workers(requested: int | None, configured: int) -> int:
    n = requested or configured or os.cpu_count() or 1
    return max(1, int(n))


def _init(init: Callable[..., Any] | None, init_args: tuple, decode_threads: int | None = 1) -> None:
    import cv2
    import torch

    from bigfive.data.video import set_decode_threads

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    set_decode_threads(decode_threads)
    _STATE["ctx"] = init(*init_args) if init is not None else None


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_STATE["ctx"], item)


def run_pool(fn: Callable[[Any, Any], Any], items: Sequence[Any], *, workers: int, desc: str,
             init: Callable[..., Any] | None = None, init_args: tuple = (), unit: str = "clip",
             chunksize: int = 1) -> Iterator[Any]:
    """Yield ``fn(ctx, item)`` for each item (any order), ``ctx = init(*init_args)`` once per worker.

    ``fn`` must catch per-item errors itself (return a failure record) so one bad clip never
    stops the batch; ``fn`` and ``init`` must be module-level (picklable) for ``workers > 1``.
    With ``chunksize`` k a worker receives k consecutive items at a time and runs them in order
    (results arrive per chunk); with one worker every item runs in order, in this process.
    """
    if not items:
        return
    workers = min(workers, len(items))
    bar = progress(total=len(items), desc=desc, unit=unit)
    try:
        if workers <= 1:
            import cv2
            import torch

            from bigfive.data.video import set_decode_threads

            threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
            try:
                _init(init, init_args, decode_threads=None)  # one process: FFmpeg may use the idle cores
                for item in items:
                    yield _call(fn, item)
                    bar.update()
            finally:
                torch.set_num_threads(threads)
                cv2.setNumThreads(cv_threads)
                set_decode_threads(None)
                _STATE.clear()
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init, initargs=(init, init_args)) as pool:
            for res in pool.imap_unordered(functools.partial(_call, fn), items, chunksize=max(1, chunksize)):
                yield res
                bar.update()
    finally:
        bar.close()


def write_quality(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """The per-clip quality report (CSV, atomic), sorted by split then video id."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=QUALITY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: (r["split"], r["video_id"])):
        w.writerow({k: _fmt(r.get(k, "")) for k in QUALITY_COLUMNS})
    write_text(path, buf.getvalue())


def read_quality(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4f}"
    return v


def failure_check(stage: str, rows: list[dict[str, Any]], max_failed_share: float) -> tuple[int, str]:
    """Exit code and message: non-zero when more than ``max_failed_share`` of the clips failed."""
    failed = [r for r in rows if r["status"] == "failed"]
    if not rows or len(failed) / len(rows) <= max_failed_share:
        return 0, ""
    lines = [f"{stage}: {len(failed)} of {len(rows)} clips failed ({len(failed) / len(rows):.0%} > "
             f"max_failed_share {max_failed_share:.0%}):"]
    lines += [f"  {r['split']}/{r['video_id']}: {r['reason']}" for r in failed[:50]]
    if len(failed) > 50:
        lines.append(f"  ... and {len(failed) - 50} more (see the quality report)")
    return 1, "\n".join(lines)


def summary(stage: str, rows: list[dict[str, Any]], timings: dict[str, float] | None = None) -> str:
    """Counts by status, mean detection quality of ok clips, the commonest reasons, the slowest clips."""
    counts = Counter(r["status"] for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"{stage}: {len(rows)} clips: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("ok", "excluded",
                                                                                             "failed"))]
    if ok and "detection_rate" in ok[0]:
        dr = sum(float(r["detection_rate"]) for r in ok) / len(ok)
        mc = sum(float(r["mean_confidence"]) for r in ok) / len(ok)
        lines.append(f"  ok clips: mean detection rate {dr:.3f}, mean confidence {mc:.4f}")
    reasons = Counter(r["reason"].split(";")[0].split("(")[0].strip() for r in rows if r.get("reason"))
    for reason, n in reasons.most_common(5):
        lines.append(f"  {n:5d} x {reason}")
    if timings:
        slow = sorted(timings.items(), key=lambda kv: -kv[1])[:3]
        lines.append("  slowest this run: " + ", ".join(f"{k} {v:.2f}s" for k, v in slow))
    return "\n".join(lines)
