"""Rendering the sample's clips: a face sprite moving over a plain background, frame by frame, encoded to mp4.

Every pixel is a function of the clip's :class:`~bigfive.data.sample_plan.ClipSpec` and the config: the
factors of the label model become colour grading, sway speed, tremor, nods and flashes here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from bigfive.config import SampleConfig
from bigfive.data.faces_source import Sprite, load_face_sources, make_sprite
from bigfive.data.sample_plan import ClipSpec, clip_size, n_frames, segment_centers

# Renderer constants; lengths are in face heights (fh) so that they survive crop normalisation.
TINT = 30.0                      # max chroma offset (0-255 levels) of each colour-grading axis
SWAY_AMPLITUDE = 0.15            # fh, fixed: the sway's extent must not depend on extraversion
SPEED_RANGE = (0.01, 0.07)       # fh per frame, extraversion 0 -> 1
TREMOR_RANGE = (0.0, 0.025)      # fh, neuroticism 0 -> 1; alternates sign every frame
NOD_DEPTH = 0.20                 # fh at the bottom of a nod
NOD_PROFILE = {-1: 0.0, 0: 0.5, 1: 1.0, 2: 0.5}      # frame offset from the event centre -> depth share
FLASH_GAIN = 0.35                # share of the way to white at a flash's peak
FLASH_PROFILE = {-2: 0.5, -1: 1.0, 0: 1.0, 1: 1.0, 2: 1.0, 3: 0.5}

# Cross-time trait (sample.cross_time). A motion is a quick zoom of the head about the face centre: kind 0
# looms (scale up), kind 1 recedes. Log-scale in ZOOM_STEP units per frame offset: the sampled frame c is at
# the neutral scale (and the face crop normalises scale anyway), so one frame shows nothing; the flow pairs
# starting at c-1, c and c+1 all show the same divergence, the return (c+2..c+4) the opposite.
ZOOM_STEP = 0.08
ZOOM_PROFILE = {-1: -1.0, 0: 0.0, 1: 1.0, 2: 2.0, 3: 1.0, 4: 0.0}
# A cue is a soft ellipse drawn over the face, moving with it; shaped in time like a flash (same on both
# frames of the flow pair, so no flow). (centre dx, dy; half-axes; in face heights from the face centre),
# RGB, opacity. Kind 0: a dark band over the mouth (a hand-like occluder); kind 1: a bright forehead bar.
CUE_SHAPES = (((0.0, 0.30), (0.24, 0.10), (45.0, 35.0, 35.0), 0.9),
              ((0.0, -0.48), (0.30, 0.10), (250.0, 250.0, 235.0), 0.9))
CUE_PROFILE = FLASH_PROFILE

# x264 as YouTube-like H.264 (GOP 250, B-frames); veryfast keeps generation short. One thread: x264's
# output depends on its thread count, and the sample must not depend on the machine.
X264_ARGS = ["-preset", "veryfast", "-crf", "23", "-threads", "1"]


def _background(seed: int, width: int, height: int) -> np.ndarray:
    """A grey (chroma-free) smooth background: gradients plus soft blobs, fixed per subject."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.uniform(60, 200, size=2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = top + (bottom - top) * yy / height + rng.uniform(-20, 20) * (xx / width - 0.5)
    blobs = cv2.resize(rng.uniform(-25, 25, size=(3, 4)).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    grey = np.clip(grey + blobs, 0, 255)
    return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)


@lru_cache(maxsize=64)
def _sprite(source: int, flip: bool, face_height: float) -> tuple[Sprite, np.ndarray]:
    """The sprite and its RGBA stack (one warp per frame moves colour and alpha together)."""
    sprite = make_sprite(load_face_sources()[source], face_height, flip=flip)
    return sprite, np.ascontiguousarray(np.dstack([sprite.rgb, sprite.alpha]), dtype=np.float32)


def _profile(n: int, centers: Sequence[int], shape: dict[int, float]) -> np.ndarray:
    """Per-frame event strength: ``shape`` placed at each centre, overlaps take the maximum."""
    out = np.zeros(n, dtype=np.float64)
    for c in centers:
        for offset, value in shape.items():
            if 0 <= c + offset < n:
                out[c + offset] = max(out[c + offset], value)
    return out


def face_track(spec: ClipSpec, cfg: SampleConfig) -> tuple[np.ndarray, np.ndarray]:
    """Face-centre x and y (px) of every frame: sway + tremor + nods."""
    n = n_frames(cfg)
    fh = round(spec.face_height, 3)
    centers = segment_centers(n, cfg.segments)
    nod = _profile(n, [centers[k] for k in spec.nod_slots], NOD_PROFILE)
    t = np.arange(n, dtype=np.float64)
    speed = SPEED_RANGE[0] + (SPEED_RANGE[1] - SPEED_RANGE[0]) * spec.extraversion
    # Triangle wave of fixed amplitude: constant speed, so position (what one frame shows) is
    # uniform over the same range whatever the speed.
    s = spec.sway_phase + t * speed / (4 * SWAY_AMPLITUDE)
    sway = SWAY_AMPLITUDE * (4 * np.abs(s - np.floor(s + 0.5)) - 1)
    tremor_amp = TREMOR_RANGE[0] + (TREMOR_RANGE[1] - TREMOR_RANGE[0]) * spec.neuroticism
    tremor = tremor_amp * np.where(t % 2 == 0, 1.0, -1.0)
    return spec.center[0] + fh * sway, spec.center[1] + fh * (tremor + NOD_DEPTH * nod)


def zoom_track(spec: ClipSpec, cfg: SampleConfig) -> np.ndarray | None:
    """Head scale of every frame (1 = as drawn) from the cross-time motions; None without them."""
    if not spec.motion_slots:
        return None
    n = n_frames(cfg)
    centers = segment_centers(n, cfg.segments)
    log_scale = np.zeros(n, dtype=np.float64)
    for kind, step in enumerate(spec.motion_slots):
        sign = 1.0 if kind == 0 else -1.0
        for offset, value in ZOOM_PROFILE.items():
            if 0 <= centers[step] + offset < n:
                log_scale[centers[step] + offset] += sign * ZOOM_STEP * value
    return np.exp(log_scale)


def draw_cue(img: np.ndarray, kind: int, strength: float, center: tuple[float, float], fh: float) -> None:
    """Blend cue ``kind`` into ``img`` (H, W, 3 float32) in place, on the face at ``center`` of height ``fh``."""
    (dx, dy), (ax, ay), rgb, opacity = CUE_SHAPES[kind]
    cx, cy, rx, ry = center[0] + dx * fh, center[1] + dy * fh, ax * fh, ay * fh
    h, w = img.shape[:2]
    x0, x1 = max(0, int(cx - rx) - 1), min(w, int(cx + rx) + 2)
    y0, y1 = max(0, int(cy - ry) - 1), min(h, int(cy + ry) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    a = np.clip((1.0 - r) / 0.3, 0.0, 1.0)
    a = (a * a * (3 - 2 * a) * np.float32(opacity * strength))[..., None]  # soft edge, like the sprite's
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1.0 - a) + np.asarray(rgb, dtype=np.float32) * a


def render_frames(spec: ClipSpec, cfg: SampleConfig) -> np.ndarray:
    """The clip as (n, H, W, 3) uint8 RGB frames."""
    width, height = clip_size(spec, cfg)
    frames = np.empty((n_frames(cfg), height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(iter_frames(spec, cfg)):
        frames[i] = frame
    return frames


def iter_frames(spec: ClipSpec, cfg: SampleConfig) -> Iterator[np.ndarray]:
    """The clip's (H, W, 3) uint8 RGB frames one by one (a real-size clip is ~1.2 GB as one array)."""
    n = n_frames(cfg)
    width, height = clip_size(spec, cfg)
    sprite, rgba = _sprite(spec.source, spec.flip, round(spec.face_height, 3))
    bg = _background(spec.background_seed, width, height)
    centers = segment_centers(n, cfg.segments)
    flash = _profile(n, [centers[k] for k in spec.flash_slots], FLASH_PROFILE)
    xs, ys = face_track(spec, cfg)

    cues = [_profile(n, [centers[c]], CUE_PROFILE) for c in spec.cue_slots]
    zoom = zoom_track(spec, cfg)

    warm = TINT * (2 * spec.openness - 1)
    # cross-time takes conscientiousness's slot: no green-magenta grading then
    green = 0.0 if spec.cue_slots else TINT * (2 * spec.conscientiousness - 1)
    tint = np.array([warm - green / 2, green, -warm - green / 2], dtype=np.float32)

    size = (width, height)
    for i in range(n):
        if zoom is None:
            m = np.array([[1, 0, xs[i] - sprite.face_center[0]], [0, 1, ys[i] - sprite.face_center[1]]])
        else:
            k = zoom[i]
            m = np.array([[k, 0, xs[i] - k * sprite.face_center[0]], [0, k, ys[i] - k * sprite.face_center[1]]])
        moved = cv2.warpAffine(rgba, m, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
        img = bg * (1.0 - moved[..., 3:]) + moved[..., :3]  # float32 throughout: this loop is the hot path
        for kind, cue in enumerate(cues):
            if cue[i] > 0:
                draw_cue(img, kind, cue[i], (xs[i], ys[i]), sprite.face_height * (1.0 if zoom is None else zoom[i]))
        if flash[i] > 0:
            gain = np.float32(FLASH_GAIN * flash[i])
            img += gain * (255.0 - img)
        img += tint
        np.clip(img, 0, 255, out=img)
        yield np.rint(img).astype(np.uint8)


def write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int, size: tuple[int, int]) -> None:
    """Write RGB frames of ``size`` (w, h) with OpenCV's MPEG-4 Part 2 encoder ('mp4v'); check they read back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open an 'mp4v' VideoWriter (no MPEG-4 encoder in this build?)")
    n = 0
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            n += 1
    finally:
        writer.release()
    _check_frames(path, n)


def write_h264(path: Path, frames: Iterable[np.ndarray], fps: int, size: tuple[int, int]) -> None:
    """Write RGB frames as H.264 (libx264 in imageio-ffmpeg's bundled ffmpeg: OpenCV's wheel has no H.264
    encoder), streamed through a pipe; check they read back."""
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
                                         ffmpeg_log_level="error", output_params=X264_ARGS)
    writer.send(None)  # start ffmpeg
    n = 0
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
            n += 1
    finally:
        writer.close()
    _check_frames(path, n)


def _check_frames(path: Path, n: int) -> None:
    cap = cv2.VideoCapture(str(path))
    read = 0
    while cap.grab():
        read += 1
    cap.release()
    if read != n:
        raise OSError(f"{path}: wrote {n} frames but OpenCV decodes {read}")


def render_clip(args: tuple[ClipSpec, SampleConfig, str]) -> tuple[str, bytes]:
    spec, cfg, tmp_dir = args
    path = Path(tmp_dir) / f"{spec.video_id}.mp4"
    write = write_h264 if cfg.codec == "h264" else write_mp4
    try:
        write(path, iter_frames(spec, cfg), cfg.fps, clip_size(spec, cfg))
        return spec.video_id, path.read_bytes()
    except Exception as err:
        raise RuntimeError(f"sample clip {spec.video_id}.mp4 ({spec.split}): {err}") from err
    finally:
        path.unlink(missing_ok=True)


def init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe
