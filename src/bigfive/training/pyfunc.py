"""The model as an MLflow pyfunc, and :class:`LoadedModel` for array input from checkpoints and MLflow model URIs.

The pyfunc carries a slim checkpoint (weights, model config, preprocess meta, labels; no optimizer
state) as its ``checkpoint`` artifact, read back with ``torch.load(weights_only=True)``. The
wrapper class is pickled by reference, so a process that loads or serves it needs ``bigfive``
installed (``mlflow models serve -m models:/bigfive-xattn@champion --env-manager local``); the
pinned ``pip_requirements`` list the rest. Input: ``{"static": (B, T, 3, S, S) uint8, "dynamic":
(B, T, C, S, S) uint8}`` or a DataFrame with those two columns holding one clip (nested lists)
per row, which is what the REST server hands over for ``{"inputs": {...}}``/``{"dataframe_records":
...}`` JSON. Output: a DataFrame with one column per label, values in [0, 1].
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from bigfive.models import load_checkpoint, model_from_checkpoint
from bigfive.models.infer import predict_arrays
from bigfive.utils.device import resolve_device

SLIM_KEYS = ("model", "model_config", "frames", "flow_channels", "preprocess", "labels", "epoch",
             "best_metric", "params")


def _as_clips(value: Any, name: str) -> np.ndarray:
    """One input stream as (B, T, C, S, S) uint8; JSON numbers are accepted when they are bytes."""
    if isinstance(value, pd.Series):
        value = np.stack([np.asarray(v) for v in value.tolist()]) if len(value) else np.zeros((0,))
    arr = np.asarray(value)
    if arr.dtype == object:
        try:
            arr = np.stack([np.asarray(v) for v in arr])
        except ValueError as err:
            raise ValueError(f"input {name!r}: clips of different shapes ({err})") from None
    if arr.ndim == 4:  # one clip without the batch axis
        arr = arr[None]
    if arr.ndim != 5:
        raise ValueError(f"input {name!r}: expected (B, T, C, S, S), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.number) and np.all((arr >= 0) & (arr <= 255)) and np.all(arr % 1 == 0)):
            raise ValueError(f"input {name!r}: expected uint8 values 0..255, got {arr.dtype}")
        arr = arr.astype(np.uint8)
    return arr


def parse_input(model_input: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(static, dynamic)`` from a dict of arrays or a DataFrame with ``static``/``dynamic`` columns."""
    if isinstance(model_input, pd.DataFrame):
        columns = {c: model_input[c] for c in model_input.columns}
    elif isinstance(model_input, Mapping):
        columns = dict(model_input)
    else:
        raise TypeError(f"expected a dict or DataFrame with 'static' and 'dynamic', got {type(model_input).__name__}")
    missing = [k for k in ("static", "dynamic") if k not in columns]
    if missing:
        raise ValueError(f"input lacks {missing} (got {sorted(columns)})")
    static, dynamic = _as_clips(columns["static"], "static"), _as_clips(columns["dynamic"], "dynamic")
    if static.shape[:2] != dynamic.shape[:2]:
        raise ValueError(f"static {static.shape} and dynamic {dynamic.shape} differ in batch or frame count")
    return static, dynamic


class BigFivePyfunc(mlflow.pyfunc.PythonModel):
    """``predict(context, {"static": ..., "dynamic": ...})`` -> DataFrame, one column per trait.

    Batches go through :func:`bigfive.models.infer.predict_arrays`, the project's one inference path, so
    the served model answers like ``bigfive predict`` and ``bigfive evaluate``.
    """

    def load_context(self, context) -> None:
        self.checkpoint = load_checkpoint(context.artifacts["checkpoint"])
        self.labels = list(self.checkpoint.get("labels") or [])
        self.device = resolve_device("auto")
        self.net = model_from_checkpoint(self.checkpoint).to(self.device).eval()

    # the hint only quiets MLflow's type-hint nag: a DataFrame hint leaves validation to the signature,
    # which hands over a dict of uint8 arrays (tensor inputs); both forms are accepted
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        static, dynamic = parse_input(model_input)
        preds = predict_arrays(self.net, static, dynamic, self.device)
        return pd.DataFrame(preds, columns=self.labels[:preds.shape[1]])


def slim_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What serving needs: no optimizer, scheduler or RNG state."""
    return {k: ckpt[k] for k in SLIM_KEYS if k in ckpt}


def signature(frames: int, flow_channels: int, crop_size: int, labels: list[str]):
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, frames, 3, crop_size, crop_size), "static"),
                     TensorSpec(np.dtype(np.uint8), (-1, frames, flow_channels, crop_size, crop_size), "dynamic")])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("float", name) for name in labels]))


def pip_requirements() -> list[str]:
    import mlflow

    def version(mod: Any) -> str:
        return str(mod.__version__).split("+")[0]

    return [f"mlflow=={version(mlflow)}", f"torch=={version(torch)}", f"numpy=={version(np)}",
            f"pandas=={version(pd)}"]


def log_pyfunc(ckpt: dict[str, Any], example: tuple[np.ndarray, np.ndarray], registered_model_name: str | None):
    """Log the slim checkpoint as pyfunc ``model`` in the active run (registering it if a name is given)."""
    import mlflow

    slim = slim_checkpoint(ckpt)
    labels = list(slim["labels"])
    static, dynamic = example
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(slim, path)
        return mlflow.pyfunc.log_model(
            name="model", python_model=BigFivePyfunc(), artifacts={"checkpoint": str(path)},
            signature=signature(int(slim["frames"]), int(slim["flow_channels"]), int(static.shape[-1]), labels),
            input_example={"static": static[:1], "dynamic": dynamic[:1]},
            pip_requirements=pip_requirements(), registered_model_name=registered_model_name,
        )


@dataclass
class LoadedModel:
    """A network and its checkpoint for array input: ``predict(static, dynamic) -> (B, outputs)`` float32.
    (:class:`bigfive.inference.predictor.Predictor` is the one for raw videos.)"""

    net: torch.nn.Module
    checkpoint: dict[str, Any]
    device: torch.device
    source: str

    @property
    def labels(self) -> list[str]:
        return list(self.checkpoint.get("labels") or [])

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(self.checkpoint.get("preprocess") or {})

    def predict(self, static: np.ndarray, dynamic: np.ndarray, batch_size: int = 32) -> np.ndarray:
        static, dynamic = parse_input({"static": static, "dynamic": dynamic})
        return predict_arrays(self.net, static, dynamic, self.device, batch_size)


def load_predictor(uri_or_path: str | Path, device: str = "auto") -> LoadedModel:
    """From ``models:/name@alias``, ``runs:/<id>/model``, a local MLflow model dir, or a checkpoint path
    (resolved by :func:`bigfive.inference.loader.load_model_checkpoint`, as every command resolves --model)."""
    from bigfive.inference.loader import load_model_checkpoint

    dev = resolve_device(device)
    ckpt = load_model_checkpoint(uri_or_path)
    return LoadedModel(model_from_checkpoint(ckpt).to(dev).eval(), ckpt, dev, str(uri_or_path))
