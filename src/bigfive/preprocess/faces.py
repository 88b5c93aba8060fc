"""The ``faces`` stage: every clip in the manifest -> ``<faces_dir>/<split>/<video_id>.npz`` + ``quality.csv``.

Per clip (see :func:`bigfive.preprocess.clip.extract_faces`): one in-order decode, T segment-sampled
frames, batched MTCNN at ``detect_width``, main-subject tracking, box fill + median smoothing,
square crops with ``margin`` (RGB, S x S) and, for the flow stage, gray crops of frames t..t+L in
frame t's box. The npz holds ``crops, flow_frames, boxes, raw_boxes, confidence, indices`` and
``quality`` / ``settings`` (JSON strings); excluded clips get an npz without images so a rerun
does not decode them again. Failed clips (unreadable) get no npz and are retried on a rerun.

Resumable: outputs are atomic, so a clip whose npz exists (and loads, with the current settings)
is done; an interrupted run redoes only the rest. The stage exits 1 when more than
``max_failed_share`` of the clips failed, listing them with their reasons.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.config import Params, PreprocessConfig, load_params
from bigfive.data.video import VideoError
from bigfive.preprocess.clip import extract_faces, make_detector
from bigfive.preprocess.layout import faces_path, load_faces_record
from bigfive.preprocess.pool import (
    ClipItem,
    default_workers,
    failure_check,
    manifest_items,
    run_pool,
    settings_of,
    summary,
    write_quality,
)
from bigfive.preprocess.readahead import ReadAhead, with_successors
from bigfive.utils.io import save_npz

log = logging.getLogger("bigfive.preprocess.faces")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: preprocess.workers, 0 there = the CPU count)")


def run(args: argparse.Namespace) -> int:
    return run_faces_stage(load_params(args.params), workers=args.workers)


# Tasks go to a worker in chunks of this many consecutive clips, so it can decode the next one while
# it searches faces in this one (bigfive.preprocess.readahead).
READ_AHEAD_CHUNK = 4


def _worker_state(cfg: PreprocessConfig, seed: int) -> dict[str, Any]:
    return {"detector": make_detector(cfg), "reader": ReadAhead(cfg, seed)}


def _faces_job(state: dict[str, Any], task: tuple[ClipItem, ClipItem | None], *, cfg: PreprocessConfig, seed: int,
               settings: str) -> tuple[dict[str, Any], float]:
    item, successor = task
    t0 = time.perf_counter()
    row: dict[str, Any] = {"video_id": item.video_id, "split": item.split}
    try:
        try:
            decoded = state["reader"].get(item.path, item.video_id)
        finally:  # the next clip decodes while this one is searched, also when this one failed
            if successor is not None:
                state["reader"].prefetch(successor.path, successor.video_id)
        res = extract_faces(item.path, cfg, state["detector"], seed=seed, video_id=item.video_id, decoded=decoded)
    except VideoError as err:
        row.update(status="failed", reason=err.reason)
        return row, time.perf_counter() - t0
    except Exception as err:  # one bad clip must never stop the batch: record it with the cause
        log.debug("faces failed on %s", item.path, exc_info=True)
        row.update(status="failed", reason=f"{type(err).__name__}: {err}")
        return row, time.perf_counter() - t0
    row.update(res.quality, status=res.status, reason=res.reason)
    arrays: dict[str, np.ndarray] = {
        "boxes": res.boxes, "raw_boxes": res.raw_boxes, "confidence": res.confidence, "indices": res.indices,
        "quality": np.array(json.dumps(row)), "settings": np.array(settings),
    }
    if res.status == "ok":
        arrays.update(crops=res.crops, flow_frames=res.flow_frames)
    save_npz(faces_path(cfg, item.split, item.video_id), **arrays)
    return row, time.perf_counter() - t0


def run_faces_stage(params: Params, *, workers: int | None = None, items: list[ClipItem] | None = None) -> int:
    """Run the faces stage over the manifest (or ``items``); returns the exit code."""
    cfg = params.preprocess
    items = manifest_items(params.data.raw_dir) if items is None else items
    settings = settings_of(params)
    rows: list[dict[str, Any]] = []
    todo: list[ClipItem] = []
    for item in items:
        rec = load_faces_record(faces_path(cfg, item.split, item.video_id), settings)
        if rec is None:
            todo.append(item)
        else:
            rows.append(rec)
    n_workers = default_workers(workers, cfg.workers)
    log.info("faces: %d clips, %d already done, %d to process with %d worker(s)", len(items), len(rows), len(todo),
             n_workers)
    job = functools.partial(_faces_job, cfg=cfg, seed=params.seed, settings=settings)
    timings: dict[str, float] = {}
    tasks = with_successors(todo, READ_AHEAD_CHUNK if n_workers > 1 else 0)
    for row, seconds in run_pool(job, tasks, workers=n_workers, desc="faces", init=_worker_state,
                                 init_args=(cfg, params.seed), chunksize=READ_AHEAD_CHUNK):
        rows.append(row)
        timings[f"{row['split']}/{row['video_id']}"] = seconds
    write_quality(Path(cfg.faces_dir) / "quality.csv", rows)
    print(summary("faces", rows, timings), file=sys.stderr)
    code, message = failure_check("faces", rows, cfg.max_failed_share)
    if code:
        print(message, file=sys.stderr)
    return code
