"""``preprocess`` section: face crops, optical flow and feature packing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bigfive.config.base import check, fraction, positive


@dataclass(frozen=True)
class FlowConfig:
    method: Literal["dis", "farneback", "tvl1"] = "dis"
    dis_preset: Literal["ultrafast", "fast", "medium"] = "fast"
    # Flow is clipped to +-bound pixels and quantized to uint8 (step = 2*bound/255).
    bound: float = 8.0
    # L: stacked flows per sampled frame (frame t -> t+1, ..., t+L-1 -> t+L); channels = 2*L.
    stack: int = 1

    def validate(self, path: str) -> None:
        positive(self.bound, f"{path}.bound")
        check(1 <= self.stack <= 10, f"{path}.stack", f"must be in 1..10, got {self.stack}")


@dataclass(frozen=True)
class PreprocessConfig:
    frames: int = 8  # T: sampled frames per clip (segment-based sampling)
    sampling: Literal["center", "random"] = "center"  # random = jittered frame per segment
    crop_size: int = 32  # S: crops are S x S
    margin: float = 0.25  # crop box = face box enlarged by this share on each side
    detect_width: int = 320  # frames are downscaled to this width for MTCNN
    min_face_size: int = 20  # MTCNN minimum face size, in detect_width pixels
    detect_batch: int = 32
    # Coarse-to-fine detection: whole-frame MTCNN on this many of the T frames (0 = on all T), then
    # every frame inside a region around the subject, rescaled so the face is ~roi_face_size px.
    coarse_frames: int = 3
    roi_face_size: int = 40
    roi_pad: float = 0.5  # region = the subject's coarse boxes + this many face sides on each side
    roi_pnet_threshold: float = 0.8  # MTCNN first-stage threshold in the region pass (whole frames: 0.6)
    box_smoothing: int = 3  # temporal median window over boxes (1 = off)
    max_missing_share: float = 0.5  # clip excluded when more frames than this lack a face
    max_failed_share: float = 0.2  # stage fails when more clips than this fail
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 0  # 0 = CPU count
    faces_dir: str = "data/faces"
    flow_dir: str = "data/flow"
    features_dir: str = "data/features"
    # Caps read from the container before any frame is decoded (a careless or hostile file must not take
    # the machine's memory or the only worker for an hour); a clip over one is refused with one line.
    max_frame_pixels: int = 16_777_216  # width x height (4096 x 4096)
    max_duration_s: float = 60.0  # 4x ChaLearn's 15 s clips
    max_decode_pixels: int = 15_000_000_000  # frames x width x height (60 s of 3840x2160 at 30 fps)
    # Frames with more pixels are shrunk (INTER_AREA) to about this many as they are read, so at most
    # one full-size frame is held at a time (1920 x 1080; ChaLearn's 1280 x 720 is never shrunk).
    shrink_pixels: int = 2_073_600
    flow: FlowConfig = field(default_factory=FlowConfig)

    def validate(self, path: str) -> None:
        check(self.frames >= 2, f"{path}.frames", f"must be >= 2, got {self.frames}")
        check(self.crop_size >= 16, f"{path}.crop_size", f"must be >= 16, got {self.crop_size}")
        positive(self.margin, f"{path}.margin", allow_zero=True)
        check(self.detect_width >= 64, f"{path}.detect_width", f"must be >= 64, got {self.detect_width}")
        positive(self.detect_batch, f"{path}.detect_batch")
        positive(self.coarse_frames, f"{path}.coarse_frames", allow_zero=True)
        check(self.roi_face_size >= 24, f"{path}.roi_face_size", f"must be >= 24, got {self.roi_face_size}")
        positive(self.roi_pad, f"{path}.roi_pad", allow_zero=True)
        fraction(self.roi_pnet_threshold, f"{path}.roi_pnet_threshold")
        positive(self.box_smoothing, f"{path}.box_smoothing")
        fraction(self.max_missing_share, f"{path}.max_missing_share")
        fraction(self.max_failed_share, f"{path}.max_failed_share")
        positive(self.workers, f"{path}.workers", allow_zero=True)
        positive(self.max_frame_pixels, f"{path}.max_frame_pixels")
        positive(self.max_duration_s, f"{path}.max_duration_s")
        positive(self.max_decode_pixels, f"{path}.max_decode_pixels")
        check(self.shrink_pixels >= 64 * 64, f"{path}.shrink_pixels", f"must be >= 4096, got {self.shrink_pixels}")
