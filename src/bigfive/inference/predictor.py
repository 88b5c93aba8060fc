"""One loaded model + its preprocessing, applied to one raw video at a time.

:class:`Predictor` holds everything that is expensive to set up (the network, MTCNN, the DIS flow
engine), so a process builds it once and reuses it for every clip. Each clip goes through the
same two halves as the training stages (``extract_faces`` = faces stage, ``FlowEngine.clip`` =
flow stage) with the checkpoint's preprocessing parameters, then through the network.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bigfive.config import PreprocessConfig
from bigfive.data.video import VideoError
from bigfive.inference.explain import write_figure
from bigfive.inference.loader import output_labels, preprocess_from_checkpoint, quality_floor
from bigfive.inference.results import ClipPrediction, Explanation
from bigfive.models import load_checkpoint, model_from_checkpoint
from bigfive.models.infer import infer
from bigfive.preprocess.clip import Stop, extract_faces, make_detector
from bigfive.preprocess.flow import FlowEngine
from bigfive.utils.device import resolve_device

# The input caps come from this run's ``preprocess`` section, not the checkpoint: they are the lab's
# machine limits (how large a clip it will decode), not part of what the model was trained on.
# ``shrink_pixels`` is not one of them: it changes the boxes and crops, so it is the checkpoint's.
CAPS = ("max_frame_pixels", "max_duration_s", "max_decode_pixels")


def with_caps(cfg: PreprocessConfig, caps: PreprocessConfig | None) -> PreprocessConfig:
    """``cfg`` with the input caps of ``caps`` (default: the ``preprocess`` section's defaults)."""
    caps = caps or PreprocessConfig()
    return dataclasses.replace(cfg, **{k: getattr(caps, k) for k in CAPS})


class Predictor:
    """``Predictor(checkpoint_path).predict("talk.mp4")`` -> :class:`ClipPrediction`.

    ``caps``: the ``preprocess`` section whose input caps (``max_frame_pixels``, ``max_duration_s``,
    ``max_decode_pixels``) apply; the rest of the preprocessing (``shrink_pixels`` too) is the checkpoint's.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", caps: PreprocessConfig | None = None):
        ckpt = load_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.net = model_from_checkpoint(ckpt).eval().to(self.device)
        self.labels = output_labels(ckpt, self.net.config.outputs)
        self.cfg = with_caps(preprocess_from_checkpoint(ckpt, device=str(self.device)), caps)
        self.floor = quality_floor(ckpt)
        self.detector = make_detector(self.cfg)
        self.flow = FlowEngine(self.cfg.flow)
        self.checkpoint = str(checkpoint)

    @classmethod
    def from_model(cls, model: str | Path, *, tracking: str | None = None, device: str = "auto",
                   caps: PreprocessConfig | None = None) -> Predictor:
        """From a checkpoint path or an MLflow model URI (downloaded to a temporary directory, then removed)."""
        import tempfile

        from bigfive.inference.loader import resolve_checkpoint

        with tempfile.TemporaryDirectory(prefix="bigfive-model-") as tmp:
            return cls(resolve_checkpoint(str(model), tracking=tracking, cache_dir=tmp), device=device, caps=caps)

    def arrays(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """The model inputs of one clip, (T, 3, S, S) and (T, C, S, S) uint8, exactly as ``predict`` makes
        them: what the served model takes. Raises :class:`VideoError` for unreadable or faceless clips."""
        path = Path(path)
        faces = extract_faces(path, self.cfg, self.detector, video_id=path.stem)
        if faces.status != "ok":
            raise VideoError(path, faces.reason or "no usable face")
        return np.ascontiguousarray(faces.crops.transpose(0, 3, 1, 2)), self.flow.clip(faces.flow_frames)

    def run_model(self, static: np.ndarray, dynamic: np.ndarray, *, attention: bool = False
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Traits (outputs,) for one clip's uint8 arrays, and per direction the (T_query, T_key) attention
        averaged over layers and heads. Through :func:`bigfive.models.infer.infer`, the one inference path,
        so a clip's traits here equal its row in ``bigfive evaluate``'s predictions."""
        traits, att = infer(self.net, static[None], dynamic[None], self.device, return_attention=attention)
        maps = {name: torch.stack([a[0].float() for a in layers]).mean(dim=(0, 1)).cpu().numpy()
                for name, layers in att.items() if layers}
        return traits[0].cpu().numpy(), maps

    def predict(self, path: str | Path, *, explain_to: str | Path | None = None,
                stage: Callable[[str], None] | None = None, stop: Stop | None = None, label: str | None = None
                ) -> ClipPrediction:
        """Predict one clip; failures come back as ``status='error'`` (never raised).

        ``stage`` is called with ``faces``, ``flow``, ``model`` and ``figure`` as each step starts (the
        web page's progress); it does not change what is computed. ``stop`` is asked before each decoded
        frame and each step: a reason it returns (cancelled, out of time) ends the clip as an error.
        ``label`` names the clip in the result and the figure instead of ``path`` (the app stores uploads
        under names of its own, and shows the name the user gave).
        """
        pred = ClipPrediction(clip=label or str(path))

        def step(name: str) -> None:
            why = stop() if stop is not None else None
            if why:
                raise VideoError(path, why)
            (stage or _no_stage)(name)

        try:
            self._predict(Path(path), pred, explain_to, step, stop)
        except VideoError as err:
            pred.status, pred.error = "error", err.reason
        except Exception as err:  # a decoder or detector crash on one file must not stop a batch
            first = (str(err).strip().splitlines() or [""])[0]
            pred.status, pred.error = "error", f"{type(err).__name__}: {first}".rstrip(": ")
        return pred

    def _predict(self, path: Path, pred: ClipPrediction, explain_to: str | Path | None,
                 stage: Callable[[str], None], stop: Stop | None) -> None:
        if not path.exists():
            raise VideoError(path, "file not found")
        if path.is_dir():
            raise VideoError(path, "is a directory")
        stage("faces")
        t0 = time.perf_counter()
        faces = extract_faces(path, self.cfg, self.detector, video_id=path.stem, stop=stop)
        t1 = time.perf_counter()
        pred.detection_rate = float(faces.quality.get("detection_rate", math.nan))
        pred.mean_confidence = float(faces.quality.get("mean_confidence", math.nan))
        pred.notes = str(faces.quality.get("reason", "") if faces.status == "ok" else "")
        if faces.status != "ok":
            pred.status, pred.error = "error", faces.reason or "no usable face"
            pred.timings = {"faces": t1 - t0}
            return
        static = np.ascontiguousarray(faces.crops.transpose(0, 3, 1, 2))
        stage("flow")
        dynamic = self.flow.clip(faces.flow_frames)
        t2 = time.perf_counter()
        stage("model")
        traits, attention = self.run_model(static, dynamic, attention=explain_to is not None)
        t3 = time.perf_counter()
        pred.traits = {name: float(v) for name, v in zip(self.labels, traits)}
        pred.warning = self.floor.check(pred.detection_rate, pred.mean_confidence)
        pred.timings = {"faces": t1 - t0, "flow": t2 - t1, "model": t3 - t2}
        if explain_to is not None:
            stage("figure")
            exp = Explanation(static, dynamic, np.asarray(faces.indices), attention, self.cfg.flow.bound)
            write_figure(explain_to, pred, exp)
            pred.figure = str(explain_to)


def _no_stage(name: str) -> None:
    """The default ``stage`` callback: no progress to report."""
