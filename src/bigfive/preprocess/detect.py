"""Batched MTCNN face detection, main-subject tracking and temporal box smoothing.

Detection runs on frames downscaled to ``detect_width`` (never upscaled): talking-head faces are
large, so a small image plus a ``min_face_size`` that drops the finest pyramid levels is where
nearly all of MTCNN's CPU time goes away. Boxes come back in full-resolution pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from bigfive.config import PreprocessConfig

MTCNN_MIN = 12  # P-Net's window; a smaller min_face_size only upscales the image


@dataclass
class Detections:
    """Per-frame candidates: ``boxes[i]`` is (K_i, 4) x1,y1,x2,y2 full-res pixels, ``probs[i]`` (K_i,)."""

    boxes: list[np.ndarray]
    probs: list[np.ndarray]


def _fast_pools(module: Any) -> int:
    """Swap every ``nn.MaxPool2d`` inside ``module`` for :class:`StridedMaxPool2d` (identical output)."""
    import torch

    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.MaxPool2d) and child.padding == 0 and child.dilation == 1:
            k, st = child.kernel_size, child.stride
            setattr(module, name, StridedMaxPool2d(k if isinstance(k, int) else k[0], st if isinstance(st, int)
                                                   else st[0], child.ceil_mode))
            swapped += 1
        else:
            swapped += _fast_pools(child)
    return swapped


def _strided_max_pool_class() -> type:
    import torch

    class _StridedMaxPool2d(torch.nn.Module):
        """Max pooling as k*k strided slices + ``torch.maximum``.

        MTCNN's pools (2x2/s2 and 3x3/s2, ceil_mode) spend most of P-Net's CPU time in
        ``max_pool2d`` (~5x slower here than this for the same result, bit for bit).
        """

        def __init__(self, kernel: int, stride: int, ceil_mode: bool):
            super().__init__()
            self.k, self.s, self.ceil = kernel, stride, ceil_mode

        def _out(self, n: int) -> int:
            if self.ceil:
                out = -(-(n - self.k) // self.s) + 1
                if (out - 1) * self.s >= n:  # PyTorch: the last window must start inside the input
                    out -= 1
                return out
            return (n - self.k) // self.s + 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._pool(self._pool(x, x.dim() - 2), x.dim() - 1)

        def _pool(self, x: torch.Tensor, dim: int) -> torch.Tensor:
            """1-D max pooling along ``dim``; windows cut by the edge (ceil_mode) just see fewer elements."""
            n = x.shape[dim]
            out_len = self._out(n)
            step = self._step(dim, x.dim())
            out = x.narrow(dim, 0, (out_len - 1) * self.s + 1)[step]  # a view: not written to
            owned = False
            for i in range(1, min(self.k, n)):
                m = min(out_len, -(-(n - i) // self.s))
                sl = x.narrow(dim, i, n - i)[step].narrow(dim, 0, m)
                if m == out_len:
                    out = torch.maximum(out, sl)  # new tensor, ours from here on
                    owned = True
                else:
                    if not owned:
                        out, owned = out.clone(), True
                    out.narrow(dim, 0, m).clamp_(min=sl)
            return out if owned else out.contiguous()

        def _step(self, dim: int, ndim: int) -> tuple:
            return (slice(None),) * dim + (slice(None, None, self.s),)

    return _StridedMaxPool2d


def StridedMaxPool2d(kernel: int, stride: int, ceil_mode: bool = False) -> Any:  # noqa: N802 - a class factory
    """An ``nn.Module`` equal to ``nn.MaxPool2d(kernel, stride, ceil_mode=ceil_mode)`` (no padding/dilation)."""
    global _POOL_CLS
    if _POOL_CLS is None:
        _POOL_CLS = _strided_max_pool_class()
    return _POOL_CLS(kernel, stride, ceil_mode)


_POOL_CLS: type | None = None


class FaceDetector:
    """facenet-pytorch MTCNN (bundled weights), loaded once per process and run in batches."""

    def __init__(self, cfg: PreprocessConfig, *, fast_pools: bool = True):
        import torch
        from facenet_pytorch import MTCNN

        from bigfive.utils.device import resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.mtcnn = MTCNN(keep_all=True, device=self.device, min_face_size=cfg.min_face_size, post_process=False)
        self.mtcnn.eval()
        if fast_pools and self.device.type == "cpu":
            _fast_pools(self.mtcnn)
        self._torch = torch

    def _run(self, images_rgb: list[np.ndarray], min_face: float, pnet_threshold: float = 0.6) -> Detections:
        """MTCNN on equally sized RGB images, ``detect_batch`` at a time; boxes in the images' pixels."""
        self.mtcnn.min_face_size = max(MTCNN_MIN, int(round(min_face)))
        self.mtcnn.thresholds = [pnet_threshold, 0.7, 0.7]  # facenet-pytorch's defaults but P-Net's
        boxes: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        bs = self.cfg.detect_batch
        for start in range(0, len(images_rgb), bs):
            with self._torch.inference_mode():
                b, p = self.mtcnn.detect(np.stack(images_rgb[start:start + bs]))
            for bi, pi in zip(b, p):
                ok = bi is not None
                boxes.append(np.asarray(bi, np.float32).reshape(-1, 4) if ok else np.zeros((0, 4), np.float32))
                probs.append(np.asarray(pi, np.float32).reshape(-1) if ok else np.zeros((0,), np.float32))
        return Detections(boxes, probs)

    def detect(self, frames: list[np.ndarray], *, bgr: bool = False) -> Detections:
        """All faces in whole frames downscaled to ``detect_width``; boxes in full-resolution pixels."""
        if not frames:
            return Detections([], [])
        h, w = frames[0].shape[:2]
        scale = min(1.0, self.cfg.detect_width / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = [f if scale == 1.0 else cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
        if bgr:  # convert after downscaling: a fraction of the pixels
            small = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in small]
        # min_face_size is defined at detect_width; for narrower clips keep it the same share of the frame.
        det = self._run(small, self.cfg.min_face_size * min(1.0, w / self.cfg.detect_width))
        det.boxes = [b / scale for b in det.boxes]
        return det

    def detect_roi(self, frames: list[np.ndarray], roi: tuple[int, int, int, int], face_side: float, *,
                   bgr: bool = False) -> Detections:
        """Faces inside one region ``roi`` = (x0, y0, x1, y1) of every frame, rescaled so the face is ~roi_face_size."""
        x0, y0, x1, y1 = roi
        scale = min(1.0, self.cfg.roi_face_size / max(face_side, 1.0))
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        small = [cv2.resize(f[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA) for f in frames]
        if bgr:
            small = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in small]
        # The face may shrink to half and still be found. A known face fills the region, so P-Net's
        # many weak proposals around it only cost R-Net time: a stricter P-Net threshold drops them.
        det = self._run(small, 0.5 * face_side * scale, self.cfg.roi_pnet_threshold)
        det.boxes = [b / scale + np.array([x0, y0, x0, y0], np.float32) for b in det.boxes]
        return det

    def detect_clip(self, frames: list[np.ndarray], *, bgr: bool = False) -> Detections:
        """Coarse-to-fine detection over a clip's sampled frames (all the same size).

        Whole-frame MTCNN is paid on ``coarse_frames`` evenly spread frames only; they locate the
        main subject. Every frame is then searched inside one region around the subject (its coarse
        boxes plus ``roi_pad`` face sides on each side) rescaled so the face is ~``roi_face_size``
        px: a much smaller image, and the fine pyramid levels are skipped. Frames where the region
        finds nothing fall back to whole-frame detection, so a subject who moves far is not lost.
        ``coarse_frames: 0`` (or no face in the coarse frames) detects every whole frame.
        """
        n = len(frames)
        k = self.cfg.coarse_frames
        if k <= 0 or k >= n:
            return self.detect(frames, bgr=bgr)
        coarse_t = np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))
        coarse = self.detect([frames[t] for t in coarse_t], bgr=bgr)
        main, _, _ = track_main_subject(coarse)
        ok = ~np.isnan(main[:, 0])
        if not ok.any():
            return self.detect(frames, bgr=bgr)
        m = main[ok]
        side = float(np.median(np.maximum(m[:, 2] - m[:, 0], m[:, 3] - m[:, 1])))
        pad = self.cfg.roi_pad * side
        h, w = frames[0].shape[:2]
        roi = (max(0, int(m[:, 0].min() - pad)), max(0, int(m[:, 1].min() - pad)),
               min(w, int(np.ceil(m[:, 2].max() + pad))), min(h, int(np.ceil(m[:, 3].max() + pad))))
        if min(roi[2] - roi[0], roi[3] - roi[1]) * min(1.0, self.cfg.roi_face_size / side) < 2 * MTCNN_MIN:
            return self.detect(frames, bgr=bgr)  # a sliver at the frame edge: not worth a region pass
        # Coarse frames keep their whole-frame candidates (other faces included, for the several-faces note).
        out = Detections([np.zeros((0, 4), np.float32)] * n, [np.zeros((0,), np.float32)] * n)
        for j, t in enumerate(coarse_t):
            out.boxes[t], out.probs[t] = coarse.boxes[j], coarse.probs[j]
        fine_t = [t for t in range(n) if t not in set(coarse_t.tolist())]
        fine = self.detect_roi([frames[t] for t in fine_t], roi, side, bgr=bgr)
        for j, t in enumerate(fine_t):
            out.boxes[t], out.probs[t] = fine.boxes[j], fine.probs[j]
        lost = [t for t in fine_t if not len(out.boxes[t])]
        if lost:
            full = self.detect([frames[t] for t in lost], bgr=bgr)
            for j, t in enumerate(lost):
                out.boxes[t], out.probs[t] = full.boxes[j], full.probs[j]
        return out


def make_detector(cfg: PreprocessConfig) -> FaceDetector:
    """The face detector used by the faces stage and by ``bigfive predict`` (same settings)."""
    return FaceDetector(cfg)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) against boxes ``b`` (K, 4)."""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-6)


def track_main_subject(det: Detections, min_iou: float = 0.1) -> tuple[np.ndarray, np.ndarray, int]:
    """Pick one face per frame: the main subject, consistent over time.

    The anchor is the largest confident face over the whole clip (talking heads fill the frame);
    from there we walk forwards and backwards, taking in each frame the candidate that overlaps
    the last kept box most (or, failing overlap, whose centre is within one box width, or -- when no
    frame ever holds a second face -- any confident detection). Frames
    with no matching candidate are missing (NaN). Returns ``(boxes (T,4), conf (T,), max_faces)``.
    """
    n = len(det.boxes)
    boxes = np.full((n, 4), np.nan, np.float32)
    conf = np.zeros(n, np.float32)
    max_faces = max((len(b) for b in det.boxes), default=0)
    scores = [((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) * p) if len(b) else np.zeros(0) for b, p in
              zip(det.boxes, det.probs)]
    if max_faces == 0:
        return boxes, conf, 0
    anchor = int(np.argmax([s.max() if len(s) else -1.0 for s in scores]))
    k = int(np.argmax(scores[anchor]))
    boxes[anchor], conf[anchor] = det.boxes[anchor][k], det.probs[anchor][k]
    for order in (range(anchor + 1, n), range(anchor - 1, -1, -1)):
        ref = boxes[anchor]
        for i in order:
            cand = det.boxes[i]
            if not len(cand):
                continue
            overlaps = iou(ref, cand)
            j = int(np.argmax(overlaps))
            if overlaps[j] < min_iou:
                centres = (cand[:, :2] + cand[:, 2:]) / 2
                dist = np.linalg.norm(centres - (ref[:2] + ref[2:]) / 2, axis=1)
                j = int(np.argmin(dist))
                # Far from the last box: another person or a false positive -- unless nobody else is ever
                # in the clip and the detector is sure, then it is the subject moving between samples
                # (sampled frames can be a second apart).
                lone_subject = max_faces == 1 and det.probs[i][j] >= 0.9
                if dist[j] > (ref[2] - ref[0]) and not lone_subject:
                    continue
            boxes[i], conf[i] = cand[j], det.probs[i][j]
            ref = boxes[i]
    return boxes, conf, max_faces


def fill_and_smooth(boxes: np.ndarray, window: int) -> np.ndarray:
    """Fill missing boxes (NaN rows) from their neighbours, then median-smooth over time.

    Interior gaps are linearly interpolated between the nearest detections; gaps at the ends take
    the nearest detection. ``window`` is the median window (1 = off; even windows round up).
    """
    out = boxes.astype(np.float64).copy()
    valid = ~np.isnan(out[:, 0])
    if not valid.any():
        raise ValueError("no detections to fill from")
    t = np.arange(len(out))
    for c in range(4):
        out[:, c] = np.interp(t, t[valid], out[valid, c])
    if window > 1 and len(out) > 1:
        half = window // 2
        padded = np.pad(out, ((half, half), (0, 0)), mode="edge")
        out = np.stack([np.median(padded[i:i + 2 * half + 1], axis=0) for i in range(len(out))])
    return out.astype(np.float32)


def square_crop_box(box: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Square crop around a face box: centre, side = longer side * (1 + 2 * margin). Returns (x0, y0, side)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin)
    side = max(int(round(side)), 2)
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop(image: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """Crop ``side``x``side`` at (x0, y0), zero-padding outside the frame, resized to ``size`` (INTER_AREA)."""
    h, w = image.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if xb <= xa or yb <= ya:  # box fully outside the frame: nothing to show
        return np.zeros((size, size) + image.shape[2:], image.dtype)
    roi = image[ya:yb, xa:xb]
    if (xa, ya, xb, yb) != (x0, y0, x0 + side, y0 + side):
        roi = cv2.copyMakeBorder(roi, ya - y0, y0 + side - yb, xa - x0, x0 + side - xb, cv2.BORDER_CONSTANT, value=0)
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(roi, (size, size), interpolation=interp)
