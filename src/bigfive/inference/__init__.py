"""Inference on raw videos (``bigfive predict``), per-clip explanation figures, and ONNX export.

``predict_videos`` and ``Predictor`` are imported lazily so that ``import bigfive.inference`` stays
cheap (no torch) for the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["predict_videos", "Predictor", "ClipPrediction", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "predict_videos":
        from bigfive.inference.predict import predict_videos

        return predict_videos
    if name == "Predictor":
        from bigfive.inference.predictor import Predictor

        return Predictor
    if name == "ClipPrediction":
        from bigfive.inference.results import ClipPrediction

        return ClipPrediction
    if name == "export_onnx":
        from bigfive.inference.export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'bigfive.inference' has no attribute {name!r}")
