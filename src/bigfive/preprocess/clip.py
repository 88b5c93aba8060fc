"""One clip through the whole preprocessing: decode once -> faces -> flow. Shared by the stages and predict.

Public API (``bigfive predict`` must preprocess exactly like training)::

    from bigfive.preprocess.clip import make_detector, preprocess_clip, ClipResult, VideoError
    detector = make_detector(params.preprocess)              # MTCNN, once per process
    res = preprocess_clip("talk.mp4", params.preprocess, detector, seed=params.seed)
    res.status            # "ok" | "excluded" (face missing too often); unreadable files raise VideoError
    res.static            # (T, 3, S, S) uint8 RGB crops   -> model's static input
    res.dynamic           # (T, 2L, S, S) uint8 flow       -> model's dynamic input
    res.quality           # detection_rate, mean_confidence, box_jitter, n_frames, fps, width, height, reason

``extract_faces`` is the faces stage's half (crops + the grayscale crops flow needs); the flow
stage finishes with :class:`bigfive.preprocess.flow.FlowEngine`. Sampling for ``random`` is
seeded from ``(seed, video_id)`` so reruns give identical arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bigfive.config import PreprocessConfig
from bigfive.data.container import check_caps, check_header
from bigfive.data.video import VideoError, count_frames, probe, read_frames, segment_indices
from bigfive.preprocess.detect import (
    FaceDetector,
    crop,
    fill_and_smooth,
    make_detector,
    square_crop_box,
    track_main_subject,
)
from bigfive.preprocess.flow import FlowEngine

__all__ = ["ClipFaces", "ClipResult", "VideoError", "extract_faces", "make_detector", "preprocess_clip",
           "clip_rng"]


@dataclass
class ClipFaces:
    """The faces stage's result for one clip (arrays are None unless status is ok)."""

    status: str  # ok | excluded
    reason: str
    quality: dict[str, Any]
    indices: np.ndarray  # (T,) sampled source frame indices
    boxes: np.ndarray  # (T, 4) final (filled, smoothed) face boxes, x1, y1, x2, y2 in the decoded frame's pixels
    # (the source's, unless frames over preprocess.shrink_pixels were shrunk as read)
    raw_boxes: np.ndarray  # (T, 4) tracked detections, NaN where missing
    confidence: np.ndarray  # (T,) MTCNN probability of the tracked face, 0 where missing
    crops: np.ndarray | None = None  # (T, S, S, 3) uint8 RGB
    flow_frames: np.ndarray | None = None  # (T, L+1, S, S) uint8 gray, frames t..t+L in frame t's box


@dataclass
class ClipResult:
    status: str
    reason: str
    quality: dict[str, Any]
    boxes: np.ndarray
    indices: np.ndarray
    static: np.ndarray | None = None  # (T, 3, S, S) uint8
    dynamic: np.ndarray | None = None  # (T, 2L, S, S) uint8
    extra: dict[str, Any] = field(default_factory=dict)


def clip_rng(seed: int, video_id: str) -> np.random.Generator:
    """A generator fixed by the run seed and the clip id (stable across processes and runs)."""
    h = int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, h])


def _plan(n: int, cfg: PreprocessConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sampled indices (T,) and their follow-up frames (T, L); samples leave room for L successors."""
    stack = cfg.flow.stack
    n_sample = max(1, n - stack)
    idx = segment_indices(n_sample, cfg.frames, cfg.sampling, rng)
    follow = np.minimum(idx[:, None] + np.arange(1, stack + 1)[None, :], n - 1)
    return idx, follow


@dataclass
class DecodedClip:
    """What one in-order decode of a clip gives the face search: the sampled frames and their successors."""

    path: Path
    info: Any  # VideoInfo
    n: int  # frames really decodable (the header's count, repaired when the file ended early)
    idx: np.ndarray  # (T,) sampled source frame indices
    follow: np.ndarray  # (T, L) successor indices
    images: dict[int, np.ndarray]  # sampled index -> BGR frame
    gray: dict[int, np.ndarray]  # successor index -> gray frame
    notes: list[str]


Stop = Callable[[], str | None]  # asked before each decoded frame: a reason ends the clip (cancel, time limit)


def decode_clip(path: str | Path, cfg: PreprocessConfig, *, seed: int = 0, video_id: str | None = None,
                stop: Stop | None = None) -> DecodedClip:
    """Decode ``path`` once, in order, keeping the T sampled frames (shrunk as read) and their successors.

    Raises :class:`VideoError` for files that cannot be decoded (or have fewer than 2 frames), and,
    before decoding anything, for a clip over one of the caps in ``cfg`` (frame size, duration, pixels).
    """
    path = Path(path)
    video_id = video_id or path.stem
    notes: list[str] = []
    check_header(path, cfg)  # decodes nothing: a 16000x16000 clip is refused in ~30 MB
    info = probe(path)
    n = _checked_count(path, info, cfg, notes)
    frames, gray = _read(path, n, cfg, seed, video_id, stop)
    decoded, n_header = frames["decoded"], n
    if frames["missing"]:  # header overestimated the length: re-plan on what was really decoded
        n = decoded
        if n < 2:
            raise VideoError(path, f"only {n} decodable frame(s) (header says {n_header}); need at least 2")
        notes.append(f"header frame count {n_header} but {n} decodable")
        frames, gray = _read(path, n, cfg, seed, video_id, stop)
        if frames["missing"]:
            raise VideoError(path, "frames vanished on a second read (unstable decode)")
    if n < cfg.frames:
        notes.append(f"short clip ({n} frames < T={cfg.frames}; sampled with repeats)")
    return DecodedClip(path, info, n, frames["idx"], frames["follow"], frames["img"], gray, notes)


def _checked_count(path: Path, info: Any, cfg: PreprocessConfig, notes: list[str]) -> int:
    """The frame count to plan on, after OpenCV's header facts pass the caps (for files the probe could not read)."""
    fps = info.fps if info.fps > 0 else None
    duration = info.n_frames / fps if fps and info.n_frames > 0 else None
    over = check_caps(cfg, width=info.width, height=info.height, duration_s=duration, n_frames=info.n_frames or None)
    if over:
        raise VideoError(path, over)
    n = info.n_frames
    if n <= 0:  # header without a count: one extra pass to count (rare), no further than the caps allow
        most = cfg.max_decode_pixels // (info.width * info.height)
        if fps:
            most = min(most, int(cfg.max_duration_s * fps))
        n = count_frames(path, most)
        if n > most:
            raise VideoError(path, check_caps(cfg, width=info.width, height=info.height, n_frames=n,
                                              duration_s=n / fps if fps else None) or "too many frames")
        notes.append("no frame count in header (counted)")
    if n < 2:
        raise VideoError(path, f"only {n} frame(s); need at least 2")
    return n


def extract_faces(path: str | Path, cfg: PreprocessConfig, detector: FaceDetector, *, seed: int = 0,
                  video_id: str | None = None, decoded: DecodedClip | None = None, stop: Stop | None = None
                  ) -> ClipFaces:
    """Decode ``path`` once (or take ``decoded``), detect and track the face in T sampled frames, crop them
    (and their successors).

    Raises :class:`VideoError` for files that cannot be decoded (or have fewer than 2 frames).
    """
    clip = decoded if decoded is not None else decode_clip(path, cfg, seed=seed, video_id=video_id, stop=stop)
    info, n, idx, follow, notes = clip.info, clip.n, clip.idx, clip.follow, list(clip.notes)
    images, gray = clip.images, clip.gray

    t_len = cfg.frames
    det = detector.detect_clip([images[int(i)] for i in idx], bgr=True)
    raw_boxes, conf, max_faces = track_main_subject(det)
    found = ~np.isnan(raw_boxes[:, 0])
    quality: dict[str, Any] = {
        "detection_rate": float(found.mean()),
        "mean_confidence": float(conf[found].mean()) if found.any() else 0.0,
        "box_jitter": float("nan"),
        "n_frames": int(n), "fps": round(info.fps, 3), "width": info.width, "height": info.height,
    }
    if max_faces > 1:
        notes.append(f"several faces (up to {max_faces}); kept the main subject")
    missing = int((~found).sum())
    if missing / t_len > cfg.max_missing_share or not found.any():
        reason = "no face detected" if not found.any() else \
            f"face missing in {missing} of {t_len} detected frames (> max_missing_share {cfg.max_missing_share})"
        quality["reason"] = "; ".join([reason, *notes])
        return ClipFaces("excluded", quality["reason"], quality, idx, raw_boxes.copy(), raw_boxes, conf)
    boxes = fill_and_smooth(raw_boxes, cfg.box_smoothing)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    quality["box_jitter"] = float(np.mean(np.linalg.norm(np.diff(centres, axis=0), axis=1) / sides[:-1])) \
        if t_len > 1 else 0.0
    if missing:
        notes.append(f"face missing in {missing} of {t_len} detected frames (boxes interpolated)")

    s = cfg.crop_size
    crops = np.empty((t_len, s, s, 3), np.uint8)
    flow_frames = np.empty((t_len, cfg.flow.stack + 1, s, s), np.uint8)
    for t, i in enumerate(idx):
        x0, y0, side = square_crop_box(boxes[t], cfg.margin)
        c = crop(images[int(i)], x0, y0, side, s)
        crops[t] = cv2.cvtColor(c, cv2.COLOR_BGR2RGB)
        # gray of the full frame, then crop: exactly the operations applied to the follow frames
        flow_frames[t, 0] = crop(cv2.cvtColor(images[int(i)], cv2.COLOR_BGR2GRAY), x0, y0, side, s)
        for k, j in enumerate(follow[t]):
            flow_frames[t, k + 1] = crop(gray[int(j)], x0, y0, side, s)
    quality["reason"] = "; ".join(notes)
    return ClipFaces("ok", quality["reason"], quality, idx, boxes, raw_boxes, conf, crops, flow_frames)


def _read(path: Path, n: int, cfg: PreprocessConfig, seed: int, video_id: str, stop: Stop | None
          ) -> tuple[dict[str, Any], dict]:
    rng = clip_rng(seed, video_id)
    idx, follow = _plan(n, cfg, rng)
    got, _, decoded = read_frames(path, idx.tolist(), gray=follow.ravel().tolist(), max_pixels=cfg.shrink_pixels,
                                  stop=stop)
    gray = {}
    for j in np.unique(follow):
        j = int(j)
        if j in got:
            im = got[j]
            gray[j] = im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
    wanted = set(idx.tolist()) | set(follow.ravel().tolist())
    missing = [i for i in wanted if i not in got]
    return {"idx": idx, "follow": follow, "decoded": decoded, "img": got, "missing": missing}, gray


def preprocess_clip(path: str | Path, cfg: PreprocessConfig, detector: FaceDetector, seed: int = 0,
                    video_id: str | None = None, flow: FlowEngine | None = None) -> ClipResult:
    """Faces + flow for one video file, exactly as the faces and flow stages do it."""
    faces = extract_faces(path, cfg, detector, seed=seed, video_id=video_id)
    res = ClipResult(faces.status, faces.reason, faces.quality, faces.boxes, faces.indices,
                     extra={"confidence": faces.confidence, "raw_boxes": faces.raw_boxes})
    if faces.status == "ok":
        res.static = np.ascontiguousarray(faces.crops.transpose(0, 3, 1, 2))
        res.dynamic = (flow or FlowEngine(cfg.flow)).clip(faces.flow_frames)
    return res
