"""The embedded sample dataset (``bigfive sample``), written in the ChaLearn download layout.

Real face photos (``faces_source``) are animated on a plain background; every label is a known
function of latent factors that the renderer controls, plus Gaussian noise. The factors are
chosen so that each model family can learn exactly what it should (docs/sample.md):

- openness, conscientiousness: static colour grading (two chroma axes), constant over a clip;
- extraversion: head-sway *speed* at a fixed amplitude (frame-to-frame motion only);
- neuroticism: amplitude of a fast vertical tremor (alternates every frame: flow only);
- agreeableness: how many of 3 brightness flashes coincide with 3 quick nods (needs both
  streams, aligned in time);
- interview: a fixed mix of the others.

Events are placed on the centre frames of ``segments`` equal segments (segment-based sampling)
and last a few frames, so the sampler sees them even one frame off.

``--preset chalearn`` (:data:`PRESETS`) gives the clips ChaLearn's geometry -- 15 s at 30 fps,
1280x720 H.264, a few clips of other sizes and a portrait one -- with the same label model, for
the real-size rehearsal (pipelines/rehearsal, docs/real_data.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bigfive import ALL_LABELS, SPLITS, TRAITS
from bigfive.config import SampleConfig, load_params
from bigfive.data.chalearn import SAMPLE_COMPLETE
from bigfive.data.faces_source import Sprite, load_face_sources, make_sprite
from bigfive.utils.io import atomic_dir, atomic_path, write_json, write_text
from bigfive.utils.progress import progress
from bigfive.utils.text import printable

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"

# ChaLearn's own names: outer archive, nested-zip prefix, annotation pickle.
ARCHIVES = {"train": "train-1.zip", "val": "val-1.zip", "test": "test-1e.zip"}
NESTED_PREFIX = {"train": "training80_", "val": "validation80_", "test": "test80_"}
ANNOTATIONS = {"train": "annotation_training.pkl", "val": "annotation_validation.pkl", "test": "annotation_test.pkl"}
DEMOGRAPHICS = {"dev": "eth_gender_annotations_dev.csv", "test": "eth_gender_annotations_test.csv"}
METADATA = "sample_metadata.json"
CLIPS_PER_NESTED_ZIP = 80
# Key order of the real annotation pickles.
PICKLE_TRAITS = ("extraversion", "neuroticism", "agreeableness", "conscientiousness", "interview", "openness")
YOUTUBE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: same config -> same archive bytes

# Label model: trait = clip(LABEL_LOW + LABEL_SPAN * factor + N(0, label_noise), 0, 1), factor in [0, 1].
LABEL_LOW, LABEL_SPAN = 0.1, 0.8
INTERVIEW_MIX = {"extraversion": 0.30, "conscientiousness": 0.25, "agreeableness": 0.20, "openness": 0.15,
                 "neuroticism": -0.10}

# Renderer constants; lengths are in face heights (fh) so that they survive crop normalisation.
TINT = 30.0                      # max chroma offset (0-255 levels) of each colour-grading axis
SWAY_AMPLITUDE = 0.15            # fh, fixed: the sway's extent must not depend on extraversion
SPEED_RANGE = (0.01, 0.07)       # fh per frame, extraversion 0 -> 1
TREMOR_RANGE = (0.0, 0.025)      # fh, neuroticism 0 -> 1; alternates sign every frame
NOD_DEPTH = 0.20                 # fh at the bottom of a nod
NOD_PROFILE = {-1: 0.0, 0: 0.5, 1: 1.0, 2: 0.5}      # frame offset from the event centre -> depth share
FLASH_GAIN = 0.35                # share of the way to white at a flash's peak
FLASH_PROFILE = {-2: 0.5, -1: 1.0, 0: 1.0, 1: 1.0, 2: 1.0, 3: 0.5}
EVENTS = 3                       # nods and flashes per clip
FACE_HEIGHT = (50.0, 70.0)       # px, face-box height range (nuisance: crops normalise it)

# Named sets of `sample` values. chalearn: ChaLearn First Impressions V2's geometry (15 s, 30 fps, mostly
# 1280x720 H.264 from YouTube; some clips of other sizes, a few portrait); segments = the real data's T.
PRESETS: dict[str, dict[str, Any]] = {
    "chalearn": {"seconds": 15.0, "fps": 30, "width": 1280, "height": 720, "codec": "h264", "segments": 16,
                 "other_sizes": [[640, 360], [854, 480], [720, 1280]]},
}
# x264 as YouTube-like H.264 (GOP 250, B-frames); veryfast keeps generation short. One thread: x264's
# output depends on its thread count, and the sample must not depend on the machine.
X264_ARGS = ["-preset", "veryfast", "-crf", "23", "-threads", "1"]


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip and compute its labels; drawn up front from the seed,
    so rendering is a pure function of this record (any worker count gives the same clips)."""

    video_id: str              # "<youtube_id>.<nnn>"
    youtube_id: str
    split: str
    source: int                # index into faces_source.load_face_sources()
    flip: bool
    face_height: float
    center: tuple[float, float]
    background_seed: int
    openness: float            # latent factors, each in [0, 1]
    conscientiousness: float
    extraversion: float
    neuroticism: float
    nod_slots: tuple[int, ...]
    flash_slots: tuple[int, ...]
    sway_phase: float
    noise: tuple[float, ...]   # label noise per ALL_LABELS entry
    size: tuple[int, int] | None = None  # (width, height) when not the config's (sample.other_sizes)

    @property
    def matches(self) -> int:
        return len(set(self.nod_slots) & set(self.flash_slots))


def n_frames(cfg: SampleConfig) -> int:
    return int(round(cfg.seconds * cfg.fps))


def clip_size(spec: ClipSpec, cfg: SampleConfig) -> tuple[int, int]:
    """(width, height) of one clip's frames."""
    return spec.size or (cfg.width, cfg.height)


def other_size_slots(total: int, sizes: Sequence[Sequence[int]]) -> dict[int, tuple[int, int]]:
    """Clip position -> its size, for ``sample.other_sizes``: evenly spread, one clip per size, no random
    draw (so the rest of the plan is the same with or without them)."""
    return {min(total - 1, int((k + 0.5) * total / len(sizes))): (int(w), int(h))
            for k, (w, h) in enumerate(sizes)}


def segment_centers(n: int, segments: int) -> list[int]:
    """Centre frame of each of ``segments`` equal segments of ``n`` frames (segment-based sampling)."""
    return [min(n - 1, int((k + 0.5) * n / segments)) for k in range(segments)]


# ---------------------------------------------------------------- plan: subjects, factors, labels


def _youtube_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        chars = rng.choice(list(YOUTUBE_ALPHABET), size=11)
        if rng.random() < 0.1:  # real ids may start with '-', which trips naive CLI parsing
            chars[0] = "-"
        yid = "".join(chars)
        if yid not in seen:
            seen.add(yid)
            ids.append(yid)
    return ids


def plan_clips(cfg: SampleConfig) -> list[ClipSpec]:
    """Draw subjects, their clips, the split of each clip and every latent factor from ``cfg.seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5A3B1E]))
    counts = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    total = sum(counts.values())
    n_sources = len(load_face_sources_meta())

    # Subjects (YouTube ids) with 1-6 clips each; clips are then shuffled across splits, so like
    # in ChaLearn many subjects appear in more than one split.
    clip_counts: list[int] = []
    while sum(clip_counts) < total:
        clip_counts.append(int(rng.integers(1, 7)))
    clip_counts[-1] -= sum(clip_counts) - total
    yids = _youtube_ids(rng, len(clip_counts))
    subjects = []
    for yid in yids:
        subjects.append({
            "youtube_id": yid,
            "source": int(rng.integers(n_sources)),
            "flip": bool(rng.random() < 0.5),
            "face_height": float(rng.uniform(*FACE_HEIGHT)),
            "center": (float(rng.uniform(-8, 8)), float(rng.uniform(-4, 4))),
            "background_seed": int(rng.integers(2**31)),
        })
    clips = [(s, nnn) for s, c in zip(subjects, clip_counts) for nnn in range(c)]
    order = rng.permutation(len(clips))
    splits = [name for name in SPLITS for _ in range(counts[name])]

    odd = other_size_slots(total, cfg.other_sizes) if cfg.other_sizes else {}
    specs = []
    for pos, (split, idx) in enumerate(zip(splits, order)):
        subject, nnn = clips[idx]
        width, height = odd.get(pos, (cfg.width, cfg.height))
        nods = tuple(sorted(int(v) for v in rng.choice(cfg.segments, size=EVENTS, replace=False)))
        matches = int(rng.integers(0, EVENTS + 1))  # uniform over 0..3 coincidences
        others = [k for k in range(cfg.segments) if k not in nods]
        flashes = (list(rng.choice(nods, size=matches, replace=False))
                   + list(rng.choice(others, size=EVENTS - matches, replace=False)))
        face_height = subject["face_height"] * float(rng.uniform(0.95, 1.05))
        cx = width / 2 + subject["center"][0] * width / 160
        cy = height / 2 + subject["center"][1] * height / 120
        # The face scales with the frame's shorter side: the height for landscape (the default sample), the
        # width for a portrait clip, so a face fits either way.
        specs.append(ClipSpec(
            video_id=f"{subject['youtube_id']}.{nnn:03d}", youtube_id=subject["youtube_id"], split=split,
            source=subject["source"], flip=subject["flip"], face_height=face_height * min(width, height) / 120,
            center=(cx, cy), background_seed=subject["background_seed"],
            openness=float(rng.random()), conscientiousness=float(rng.random()),
            extraversion=float(rng.random()), neuroticism=float(rng.random()),
            nod_slots=nods, flash_slots=tuple(sorted(int(v) for v in flashes)),
            sway_phase=float(rng.random()),
            noise=tuple(float(v) for v in rng.normal(0.0, cfg.label_noise, size=len(ALL_LABELS))),
            size=(width, height) if pos in odd else None,
        ))
    return specs


@lru_cache(maxsize=1)
def load_face_sources_meta() -> tuple[str, ...]:
    return tuple(s.name for s in load_face_sources())


def clean_labels(spec: ClipSpec) -> dict[str, float]:
    """Noise-free labels: the known function of the latent factors (before noise and clipping)."""
    factors = {
        "openness": spec.openness,
        "conscientiousness": spec.conscientiousness,
        "extraversion": spec.extraversion,
        "neuroticism": spec.neuroticism,
        "agreeableness": spec.matches / EVENTS,
    }
    mix = sum(w * (factors[t] if w > 0 else 1.0 - factors[t]) for t, w in INTERVIEW_MIX.items())
    factors["interview"] = mix / sum(abs(w) for w in INTERVIEW_MIX.values())
    return {t: LABEL_LOW + LABEL_SPAN * factors[t] for t in ALL_LABELS}


def noisy_labels(spec: ClipSpec) -> dict[str, float]:
    clean = clean_labels(spec)
    return {t: float(min(1.0, max(0.0, clean[t] + spec.noise[i]))) for i, t in enumerate(ALL_LABELS)}


def expected_abs_error(mu: float, sigma: float) -> float:
    """E|clip(mu + e, 0, 1) - mu| for e ~ N(0, sigma^2): the least expected error of any predictor
    that knows mu exactly (mu is the median of the label, so it is the optimal point prediction)."""
    if sigma == 0:
        return 0.0

    def side(b: float) -> float:  # E[min(e, b); e > 0]
        return (sigma / math.sqrt(2 * math.pi) * (1 - math.exp(-b * b / (2 * sigma * sigma)))
                + b * 0.5 * math.erfc(b / (sigma * math.sqrt(2))))

    return side(1.0 - mu) + side(mu)


def noise_floor(specs: Sequence[ClipSpec], sigma: float) -> dict[str, float]:
    """Best reachable accuracy (1 - expected |error|) per label, averaged over ``specs``."""
    out = {}
    for t in ALL_LABELS:
        errs = [expected_abs_error(clean_labels(s)[t], sigma) for s in specs]
        out[t] = 1.0 - float(np.mean(errs))
    return out


# ---------------------------------------------------------------- rendering


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

    warm = TINT * (2 * spec.openness - 1)
    green = TINT * (2 * spec.conscientiousness - 1)
    tint = np.array([warm - green / 2, green, -warm - green / 2], dtype=np.float32)

    size = (width, height)
    for i in range(n):
        m = np.array([[1, 0, xs[i] - sprite.face_center[0]], [0, 1, ys[i] - sprite.face_center[1]]])
        moved = cv2.warpAffine(rgba, m, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
        img = bg * (1.0 - moved[..., 3:]) + moved[..., :3]  # float32 throughout: this loop is the hot path
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


def _render_clip(args: tuple[ClipSpec, SampleConfig, str]) -> tuple[str, bytes]:
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


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


# ---------------------------------------------------------------- archives


class _ZipCryptoEncrypter:
    """Traditional PKWARE ("ZipCrypto") encryption, the scheme the real val/test archives use,
    so both ``zipfile`` (``pwd=``) and ``pyzipper`` read them. pyzipper only writes AES itself."""

    def __init__(self, pwd: bytes, check_byte: int, salt: bytes):
        from pyzipper.zipfile import _gen_crc

        self.table = [_gen_crc(i) for i in range(256)]
        self.keys = [305419896, 591751049, 878082192]
        for c in pwd:
            self._update(c)
        self.header = salt[:11] + bytes([check_byte])

    def _update(self, c: int) -> None:
        k0, k1, k2 = self.keys
        table = self.table
        k0 = (k0 >> 8) ^ table[(k0 ^ c) & 0xFF]
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = (k2 >> 8) ^ table[(k2 ^ (k1 >> 24)) & 0xFF]
        self.keys = [k0, k1, k2]

    def update_zipinfo(self, zinfo: Any) -> None:
        pass

    def finalize_zipinfo(self, zinfo: Any) -> None:
        pass

    def encryption_header(self) -> bytes:
        return self.encrypt(self.header)

    def encrypt(self, data: bytes) -> bytes:
        k0, k1, k2 = self.keys
        table = self.table
        out = bytearray(len(data))
        for i, c in enumerate(data):  # tight loop: ~1 us per byte; only val/test are encrypted
            k = k2 | 2
            out[i] = c ^ (((k * (k ^ 1)) >> 8) & 0xFF)
            k0 = (k0 >> 8) ^ table[(k0 ^ c) & 0xFF]
            k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
            k2 = (k2 >> 8) ^ table[(k2 ^ (k1 >> 24)) & 0xFF]
        self.keys = [k0, k1, k2]
        return bytes(out)

    def flush(self) -> bytes:
        return b""


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # mp4 and nested zips do not compress further
    info.external_attr = 0o644 << 16
    return info


def _nested_zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(_zip_info(name), data)
    return buf.getvalue()


def write_archive(path: Path, members: Sequence[tuple[str, bytes]], password: str | None, salt_seed: int) -> None:
    """Write a stored zip atomically; with ``password`` every entry is ZipCrypto-encrypted."""
    with atomic_path(path) as tmp:
        if password is None:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                for name, data in members:
                    zf.writestr(_zip_info(name), data)
            return
        import pyzipper

        rng = np.random.default_rng(salt_seed)
        pending: dict[str, int] = {}

        class ZipCryptoFile(pyzipper.ZipFile):
            def get_encrypter(self) -> _ZipCryptoEncrypter:
                crc = pending["crc"]  # the password check byte is the CRC's high byte
                return _ZipCryptoEncrypter(password.encode(), (crc >> 24) & 0xFF, rng.bytes(11))

        with ZipCryptoFile(tmp, "w", compression=pyzipper.ZIP_STORED) as zf:
            zf.setpassword(password.encode())
            for name, data in members:
                pending["crc"] = zipfile.crc32(data)
                info = pyzipper.ZipInfo(name, date_time=ZIP_DATE)
                info.compress_type = pyzipper.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)


def write_split_archive(out_dir: Path, split: str, clips: Sequence[tuple[str, bytes]], password: str | None,
                        seed: int) -> list[str]:
    """``train-1.zip`` etc.: nested zips of 80 clips each (the last one partial)."""
    nested = []
    for i in range(0, len(clips), CLIPS_PER_NESTED_ZIP):
        name = f"{NESTED_PREFIX[split]}{i // CLIPS_PER_NESTED_ZIP + 1:02d}.zip"
        nested.append((name, _nested_zip(clips[i:i + CLIPS_PER_NESTED_ZIP])))
    write_archive(out_dir / ARCHIVES[split], nested, password if split != "train" else None,
                  salt_seed=seed * 7 + SPLITS.index(split))
    return [name for name, _ in nested]


def write_annotations(out_dir: Path, split: str, specs: Sequence[ClipSpec]) -> None:
    """Protocol-2 pickle of ``{trait: {"<id>.mp4": float}}`` with builtins only, like ChaLearn's."""
    labels = {s.video_id: noisy_labels(s) for s in specs}
    data = {t: {f"{vid}.mp4": float(v[t]) for vid, v in labels.items()} for t in PICKLE_TRAITS}
    with atomic_path(out_dir / ANNOTATIONS[split]) as tmp, tmp.open("wb") as f:
        pickle.dump(data, f, protocol=2)


def demographics(youtube_id: str, seed: int) -> tuple[int, int]:
    """Deterministic pseudo-random (ethnicity, gender) codes of a subject."""
    digest = np.frombuffer(youtube_id.encode(), dtype=np.uint8).astype(np.uint32)
    rng = np.random.default_rng([seed, *digest.tolist()])
    ethnicity = int(rng.choice([1, 2, 3], p=[0.15, 0.75, 0.10]))  # 1 Asian, 2 Caucasian, 3 African-American
    gender = int(rng.integers(1, 3))  # 1 male, 2 female
    return ethnicity, gender


def write_demographics(out_dir: Path, specs: Sequence[ClipSpec], seed: int) -> None:
    for name, splits in (("dev", ("train", "val")), ("test", ("test",))):
        lines = ["VideoName;YouTubeID;Ethnicity;Gender"]
        for s in specs:
            if s.split in splits:
                eth, gender = demographics(s.youtube_id, seed)
                lines.append(f"{s.video_id}.mp4;{s.youtube_id};{eth};{gender}")
        write_text(out_dir / DEMOGRAPHICS[name], "\n".join(lines) + "\n")


# ---------------------------------------------------------------- metadata and entry points


def label_model() -> dict[str, Any]:
    ranges = f"label = clip({LABEL_LOW} + {LABEL_SPAN} * factor + N(0, label_noise), 0, 1)"
    return {
        "formula": ranges,
        "openness": f"warm-cool colour grading of the whole frame, +-{TINT} levels (R up, B down); static",
        "conscientiousness": f"green-magenta colour grading, +-{TINT} levels; static",
        "extraversion": (f"head-sway speed {SPEED_RANGE[0]}-{SPEED_RANGE[1]} face heights/frame, triangle wave of "
                         f"fixed amplitude {SWAY_AMPLITUDE} face heights; dynamic"),
        "neuroticism": (f"vertical tremor alternating every frame, amplitude {TREMOR_RANGE[0]}-{TREMOR_RANGE[1]} "
                        "face heights; dynamic"),
        "agreeableness": (f"factor = (flashes coinciding with nods) / {EVENTS}; {EVENTS} nods (depth {NOD_DEPTH} "
                          f"face heights) and {EVENTS} brightness flashes (gain {FLASH_GAIN}) on segment centres; "
                          "needs time-aligned fusion"),
        "interview": f"factor = weighted mean {INTERVIEW_MIX} (negative weight: 1 - factor)",
        "event_frames": "nod: centre-1..centre+2; flash: centre-1..centre+2 at full, centre-2 and centre+3 half",
    }


# Keys added after generator version 1, recorded only when they differ from their defaults: the default
# sample's metadata (copied into data/raw by ingest) stays byte for byte what it was.
LATER_KEYS = {"codec": "mp4v", "other_sizes": []}


def _config_record(cfg: SampleConfig) -> dict[str, Any]:
    record = dataclasses.asdict(cfg)
    return {k: v for k, v in record.items() if k not in LATER_KEYS or v != LATER_KEYS[k]}


def build_metadata(cfg: SampleConfig, specs: Sequence[ClipSpec], archives: dict[str, list[str]]) -> dict[str, Any]:
    floor = noise_floor(specs, cfg.label_noise)
    by_split = {sp: [s for s in specs if s.split == sp] for sp in SPLITS}
    subjects = {sp: {s.youtube_id for s in v} for sp, v in by_split.items()}
    train_mean = {t: float(np.mean([noisy_labels(s)[t] for s in by_split["train"]])) for t in ALL_LABELS}
    baseline, realised = {}, {}
    for sp in ("val", "test"):
        labels = [noisy_labels(s) for s in by_split[sp]]
        baseline[sp] = {t: 1.0 - float(np.mean([abs(lab[t] - train_mean[t]) for lab in labels])) for t in ALL_LABELS}
        baseline[sp]["mean"] = float(np.mean([baseline[sp][t] for t in TRAITS]))
        clean = [clean_labels(s) for s in by_split[sp]]
        realised[sp] = {t: 1.0 - float(np.mean([abs(lab[t] - c[t]) for lab, c in zip(labels, clean)]))
                        for t in ALL_LABELS}
        realised[sp]["mean"] = float(np.mean([realised[sp][t] for t in TRAITS]))
    n = n_frames(cfg)
    return {
        "generator": "bigfive.data.sample",
        "generator_version": GENERATOR_VERSION,
        "config": _config_record(cfg),
        "frames_per_clip": n,
        "segment_centers": segment_centers(n, cfg.segments),
        "face_sources": list(load_face_sources_meta()),
        "label_model": label_model(),
        "noise_floor": floor,
        "noise_floor_mean_accuracy": float(np.mean([floor[t] for t in TRAITS])),
        "noise_floor_realised": realised,
        "train_mean_baseline": baseline,
        "counts": {
            "clips": {sp: len(v) for sp, v in by_split.items()},
            "subjects": {sp: len(v) for sp, v in subjects.items()},
            "subjects_in_several_splits": sum(1 for y in set.union(*subjects.values())
                                              if sum(y in v for v in subjects.values()) > 1),
            "agreeableness_matches": {str(m): sum(1 for s in specs if s.matches == m) for m in range(EVENTS + 1)},
        },
        "archives": {ARCHIVES[sp]: names for sp, names in archives.items()},
    }


def generate(cfg: SampleConfig, out_dir: str | Path, *, password: str | None = None, workers: int = 1,
             progress: bool = True) -> dict:
    """Write the sample in the ChaLearn download layout into ``out_dir``; return the metadata.

    Everything is built in a temporary folder beside ``out_dir`` and renamed into place at the end,
    with :data:`SAMPLE_COMPLETE` (the files and their sizes) written last: a run that is killed
    leaves ``out_dir`` as it was (the next run removes its temporary folder), and ``bigfive ingest``
    refuses a sample folder without that marker. An existing ``out_dir`` is replaced only if it is
    empty or holds nothing but what this generator writes.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    specs = plan_clips(cfg)
    workers = max(1, workers if workers > 0 else (os.cpu_count() or 1))
    with atomic_dir(out_dir) as build:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".sample-clips.", dir=build))
        clips: dict[str, bytes] = {}
        try:
            jobs = [(s, cfg, str(tmp_dir)) for s in specs]
            bar = _progress_bar(len(jobs), progress)
            if workers == 1:
                _init_worker()
                for job in jobs:
                    vid, data = _render_clip(job)
                    clips[vid] = data
                    bar.update()
            else:
                ctx = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
                with ctx.Pool(workers, initializer=_init_worker) as pool:
                    for vid, data in pool.imap(_render_clip, jobs, chunksize=4):
                        clips[vid] = data
                        bar.update()
            bar.close()
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

        archives: dict[str, list[str]] = {}
        for split in SPLITS:
            split_specs = [s for s in specs if s.split == split]
            members = [(f"{s.video_id}.mp4", clips[s.video_id]) for s in split_specs]
            archives[split] = write_split_archive(build, split, members, password, cfg.seed)
            write_annotations(build, split, split_specs)
        write_demographics(build, specs, cfg.seed)
        meta = build_metadata(cfg, specs, archives)
        meta["encrypted"] = [ARCHIVES["val"], ARCHIVES["test"]] if password is not None else []
        write_json(build / METADATA, meta)
        write_completion_marker(build)
    log.info("sample: %d clips (%s) in %s; noise floor %.3f, train-mean baseline (test) %.3f", len(specs),
             meta["counts"]["clips"], out_dir, meta["noise_floor_mean_accuracy"],
             meta["train_mean_baseline"]["test"]["mean"])
    return meta


def write_completion_marker(folder: Path) -> None:
    """:data:`SAMPLE_COMPLETE`: every file of the finished folder and its size (checked by ingest)."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    write_json(folder / SAMPLE_COMPLETE, {"generator": "bigfive.data.sample", "generator_version": GENERATOR_VERSION,
                                          "files": files})


def _generator_files() -> set[str]:
    return {*ARCHIVES.values(), *ANNOTATIONS.values(), *DEMOGRAPHICS.values(), METADATA, SAMPLE_COMPLETE}


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a folder that holds anything this generator does not write (someone's data)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder; choose another --out")
    ours = _generator_files()
    for entry in out_dir.iterdir():
        name = entry.name
        if name in ours or name.startswith((".sample-clips.", *(f".{f}." for f in ours))):
            continue  # its own files, and the temporary files of an earlier version's interrupted run
        raise FileExistsError(f"{out_dir}: holds {printable(name, 80)}, which `bigfive sample` does not write; "
                              "refusing to replace the folder (choose another --out, or empty it)")


def _progress_bar(total: int, enabled: bool) -> Any:
    return progress(total=total, desc="sample", unit="clip", disable=not enabled)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="output directory (default: params sample.downloads_dir)")
    parser.add_argument("--n-train", type=int, default=None, help="training clips (default: params sample.n_train)")
    parser.add_argument("--n-val", type=int, default=None, help="validation clips (default: params sample.n_val)")
    parser.add_argument("--n-test", type=int, default=None, help="test clips (default: params sample.n_test)")
    parser.add_argument("--seed", type=int, default=None, help="generator seed (default: params sample.seed)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="a named set of sample values over the params' (chalearn: 15 s, 30 fps, 1280x720 "
                             "H.264, a few other sizes and a portrait clip)")
    parser.add_argument("--workers", type=int, default=1, help="render processes; 0 = all cores (default: 1)")
    parser.add_argument("--password-env", default=None, metavar="VAR",
                        help="encrypt val/test archives with the password in environment variable VAR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def sample_config(base: SampleConfig, preset: str | None = None, **overrides: Any) -> SampleConfig:
    """``base`` with a preset's values, then ``overrides`` (None values ignored) on top; validated."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"--preset {preset}: unknown preset (known: {', '.join(sorted(PRESETS))})")
    values = {**(PRESETS[preset] if preset else {}), **{k: v for k, v in overrides.items() if v is not None}}
    cfg = dataclasses.replace(base, **values)
    cfg.validate("sample")
    return cfg


def run(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    cfg = sample_config(params.sample, args.preset, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                        seed=args.seed)
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise ValueError(f"--password-env {args.password_env}: environment variable is unset or empty")
    out = args.out or cfg.downloads_dir
    meta = generate(cfg, out, password=password, workers=args.workers, progress=not args.no_progress)
    print(f"wrote {sum(meta['counts']['clips'].values())} clips {meta['counts']['clips']} to {out}; "
          f"noise floor (mean accuracy) {meta['noise_floor_mean_accuracy']:.3f}, "
          f"train-mean baseline on test {meta['train_mean_baseline']['test']['mean']:.3f}")
    return 0
