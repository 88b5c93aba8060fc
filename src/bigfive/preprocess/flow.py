"""The ``flow`` stage: dense optical flow inside each sampled frame's face box, quantized to uint8.

For every sampled frame t the faces stage kept grayscale crops of frames t, t+1, ..., t+L, all cut
with frame t's box (head motion stays in the flow). Here flow is computed between consecutive
crops (OpenCV DIS by default; Farneback; TV-L1 only with opencv-contrib) and stored per clip as
``<flow_dir>/<split>/<video_id>.npy`` (T, 2L, S, S) uint8, channels (dx_1, dy_1, ..., dx_L, dy_L).

Quantization (the data contract): ``q = round((clip(v, -b, b) + b) / (2b) * 255)``,
``v = q / 255 * 2b - b`` (step ``2b/255``, error <= ``b/255``). 256 levels are symmetric about
127.5, so dequantized values of ``q`` and ``255 - q`` are exact negatives: flipping a stored dx
channel as ``255 - q`` is an exact negation of what the model sees. On the quantizer side
``quant(-v) == 255 - quant(v)`` holds for every v except exact rounding ties (``x + 0.5`` levels,
e.g. v = 0, which maps to 128 = +b/255 because there is no zero level); a tie is off by one step.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bigfive.config import ConfigError, FlowConfig, Params, PreprocessConfig
from bigfive.preprocess.keys import FLOW, stage_key
from bigfive.preprocess.layout import (
    faces_path,
    flow_key_matches,
    flow_key_path,
    flow_output_ok,
    flow_path,
    load_faces_record,
)
from bigfive.preprocess.pool import default_workers, failure_check, manifest_items, run_pool, settings_of, summary
from bigfive.utils.io import save_npy, write_text

log = logging.getLogger("bigfive.preprocess.flow")


def quantize(v: np.ndarray, bound: float) -> np.ndarray:
    """Clip to +-bound and map to 0..255 (round half to even, as ``np.rint``)."""
    x = (np.clip(v, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(x).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """``q / 255 * 2b - b``, computed as ``(2q - 255) * b / 255`` so that ``255 - q`` gives exactly ``-v``."""
    return (2 * q.astype(np.float32) - 255.0) * np.float32(bound / 255.0)


@dataclass
class FlowEngine:
    """One configured flow algorithm (instances are reused: DIS allocation is not free)."""

    cfg: FlowConfig

    def __post_init__(self) -> None:
        m = self.cfg.method
        if m == "dis":
            presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                       "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
            self._dis = cv2.DISOpticalFlow_create(presets[self.cfg.dis_preset])
        elif m == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise ConfigError("preprocess.flow.method", "tvl1 needs cv2.optflow (opencv-contrib-python), which is "
                                  "not installed; use dis or farneback")
            self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        elif m != "farneback":
            raise ConfigError("preprocess.flow.method", f"unknown method {m!r} (dis | farneback | tvl1)")

    def pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Flow (H, W, 2) float32 from gray uint8 ``a`` to ``b``."""
        m = self.cfg.method
        if m == "dis":
            return self._dis.calc(a, b, None)
        if m == "tvl1":
            return self._tvl1.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    def clip(self, flow_frames: np.ndarray) -> np.ndarray:
        """(T, L+1, S, S) gray crops -> (T, 2L, S, S) uint8 quantized flow."""
        t_len, l1, s, _ = flow_frames.shape
        stack = l1 - 1
        if stack < 1:
            raise ValueError(f"flow frames need at least 2 per sample, got shape {flow_frames.shape}")
        out = np.empty((t_len, 2 * stack, s, s), np.uint8)
        for t in range(t_len):
            for k in range(stack):
                f = self.pair(flow_frames[t, k], flow_frames[t, k + 1])
                out[t, 2 * k:2 * k + 2] = quantize(f, self.cfg.bound).transpose(2, 0, 1)
        return out


def compute_flow(flow_frames: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    """Quantized flow of one clip (convenience wrapper; stages reuse one :class:`FlowEngine`)."""
    return FlowEngine(cfg).clip(flow_frames)


# --------------------------------------------------------------------------- stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: preprocess.workers "
                        "or the CPU count)")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params

    return run_flow_stage(load_params(args.params), workers=args.workers)


def _check_flow_key(params: Params) -> None:
    """Flow files made under another key (other params, other code, other face crops) are stale: remove
    them before anything is skipped as done.

    ``<flow_dir>/settings.json`` records the key of the files present; it is written (after any
    removal) before work starts, so an interrupted run resumes with what it already made.
    """
    cfg = params.preprocess
    key = stage_key(params, FLOW)
    if flow_key_matches(cfg, key):
        return
    stale = list(Path(cfg.flow_dir).glob("*/*.npy"))
    if stale:
        log.info("flow: params or code changed; removing %d stale flow file(s)", len(stale))
    for f in stale:
        f.unlink()
    write_text(flow_key_path(cfg), key)


def _make_engine(cfg: FlowConfig) -> FlowEngine:
    return FlowEngine(cfg)


def _flow_job(engine: FlowEngine, item: Any, *, cfg: PreprocessConfig) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    row: dict[str, Any] = {"video_id": item.video_id, "split": item.split, "status": "ok", "reason": ""}
    try:
        with np.load(faces_path(cfg, item.split, item.video_id), allow_pickle=False) as z:
            frames = z["flow_frames"]
        want = (cfg.frames, cfg.flow.stack + 1, cfg.crop_size, cfg.crop_size)
        if frames.shape != want or frames.dtype != np.uint8:
            raise ValueError(f"flow_frames has shape {frames.shape} {frames.dtype}, expected {want} uint8 "
                             "(rerun the faces stage)")
        save_npy(flow_path(cfg, item.split, item.video_id), engine.clip(frames))
    except Exception as err:  # recorded, never fatal for the batch
        row.update(status="failed", reason=f"{type(err).__name__}: {err}")
    return row, time.perf_counter() - t0


def run_flow_stage(params: Params, *, workers: int | None = None, items: list[Any] | None = None) -> int:
    """Flow for every clip whose faces output is ok; returns the exit code."""
    cfg = params.preprocess
    FlowEngine(cfg.flow)  # a bad method (tvl1 without contrib) stops here, before any work
    items = manifest_items(params.data.raw_dir) if items is None else items
    settings = settings_of(params)
    _check_flow_key(params)
    rows: list[dict[str, Any]] = []
    todo = []
    skipped = 0
    for item in items:
        rec = load_faces_record(faces_path(cfg, item.split, item.video_id), settings)
        if rec is None or rec["status"] != "ok":
            skipped += 1  # accounted for by the faces stage (excluded / failed / not run)
        elif flow_output_ok(flow_path(cfg, item.split, item.video_id), cfg):
            rows.append({"video_id": item.video_id, "split": item.split, "status": "ok", "reason": ""})
        else:
            todo.append(item)
    n_workers = default_workers(workers, cfg.workers)
    log.info("flow: %d clips with faces (%d without, skipped), %d done, %d to process with %d worker(s)",
             len(rows) + len(todo), skipped, len(rows), len(todo), n_workers)
    job = functools.partial(_flow_job, cfg=cfg)
    timings: dict[str, float] = {}
    for row, seconds in run_pool(job, todo, workers=n_workers, desc="flow", init=_make_engine, init_args=(cfg.flow,)):
        rows.append(row)
        timings[f"{row['split']}/{row['video_id']}"] = seconds
    print(summary("flow", rows, timings), file=sys.stderr)
    code, message = failure_check("flow", rows, cfg.max_failed_share)
    if code:
        print(message, file=sys.stderr)
    return code
