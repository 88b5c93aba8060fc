"""Resolve ``--model`` (a checkpoint path or an MLflow model URI) to a loaded network plus the
preprocessing it was trained with.

Prediction repeats the training preprocessing exactly, so every preprocessing parameter comes
from the checkpoint's ``preprocess`` record (the features ``meta.json``), never from the current
``params.yaml``; only the sampling mode is forced to ``center`` (the evaluation sampling).

MLflow URIs (``models:/bigfive-xattn@champion``, ``runs:/<id>/model``, a local model directory)
are resolved once to a local checkpoint file, so worker processes each load a plain file with
the weights-only unpickler.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigfive import ALL_LABELS
from bigfive.config import FlowConfig, PreprocessConfig
from bigfive.config.base import ConfigError, from_dict

log = logging.getLogger("bigfive.inference")

# Quality flags: a clip is flagged when its detection rate falls below both the training split's mean
# minus DETECTION_MARGIN and the training 5th percentile (likewise for the mean MTCNN confidence).
DETECTION_MARGIN = 0.10
CONFIDENCE_MARGIN = 0.05
# Used when the checkpoint carries no training quality statistics.
DEFAULT_MIN_DETECTION_RATE = 0.90
DEFAULT_MIN_CONFIDENCE = 0.90


class ModelLoadError(RuntimeError):
    """``--model`` could not be resolved or loaded; the message names the model and the reason."""


@dataclass(frozen=True)
class QualityFloor:
    """Face-detection quality below which a clip is flagged (outside what the model was trained on)."""

    min_detection_rate: float
    min_confidence: float
    source: str  # where the thresholds came from (for the docs and the JSON output)

    def check(self, detection_rate: float, mean_confidence: float) -> str:
        """An empty string, or a short warning naming what is low."""
        notes = []
        if detection_rate < self.min_detection_rate:
            notes.append(f"low detection rate {detection_rate:.2f} < {self.min_detection_rate:.2f}")
        if mean_confidence < self.min_confidence:
            notes.append(f"low face confidence {mean_confidence:.3f} < {self.min_confidence:.3f}")
        return "; ".join(notes)


def is_checkpoint_path(model: str) -> bool:
    """A local file is a checkpoint; anything else (URI, MLflow model directory) goes to MLflow."""
    return Path(model).is_file()


def default_model_uri(params: Any) -> str:
    return f"models:/{params.tracking.registered_model}@{params.tracking.champion_alias}"


def resolve_checkpoint(model: str, *, tracking: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A local checkpoint file for ``model``: the path itself, or the one inside an MLflow model."""
    if is_checkpoint_path(model):
        return Path(model)
    if (Path(model) / "MLmodel").is_file():  # a local MLflow model directory
        return find_checkpoint_file(Path(model), model)
    if Path(model).suffix in (".pt", ".pth", ".ckpt") and "://" not in model and not model.startswith("models:"):
        raise ModelLoadError(f"{model}: checkpoint not found")
    return _checkpoint_from_mlflow(model, tracking, cache_dir)


def _checkpoint_from_mlflow(uri: str, tracking: str | None, cache_dir: str | Path | None) -> Path:
    try:
        from mlflow.artifacts import download_artifacts
    except ImportError as err:  # pragma: no cover - mlflow is a dependency
        raise ModelLoadError(f"{uri}: MLflow is not installed ({err})") from None
    from bigfive.training.tracking import sqlite_file, use_store

    db = sqlite_file(tracking) if tracking else None
    if db is not None and not db.is_file():  # connecting would create an empty store as a side effect
        raise ModelLoadError(f"{uri}: the MLflow tracking store {tracking} does not exist (train a model first, "
                             "set MLFLOW_TRACKING_URI, or pass --model models/best.pt)")
    if tracking:
        use_store(tracking)
    dst = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="bigfive-model-"))
    try:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = f" (tracking URI {tracking})" if tracking else ""
        raise ModelLoadError(f"{uri}: cannot load this MLflow model{where}: {first}") from None
    return find_checkpoint_file(local, uri)


def find_checkpoint_file(model_dir: Path, name: str) -> Path:
    """The ``checkpoint`` artifact of a bigfive pyfunc model directory (named in its MLmodel file)."""
    import yaml

    if model_dir.is_file():
        return model_dir
    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise ModelLoadError(f"{name}: no MLmodel file in {model_dir}; not an MLflow model")
    conf = yaml.safe_load(mlmodel.read_text()) or {}
    artifacts = ((conf.get("flavors") or {}).get("python_function") or {}).get("artifacts") or {}
    entry = artifacts.get("checkpoint")
    path = model_dir / entry["path"] if isinstance(entry, dict) and "path" in entry else None
    if path is None or not path.is_file():
        raise ModelLoadError(f"{name}: the MLflow model has no 'checkpoint' artifact (not a bigfive pyfunc model)")
    return path


def load_model_checkpoint(model: str | Path, *, tracking: str | None = None) -> dict[str, Any]:
    """The checkpoint dict of a ``.pt`` path or an MLflow model URI (downloaded to a temporary folder,
    removed once loaded)."""
    from bigfive.models import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="bigfive-model-") as tmp:
        return load_checkpoint(resolve_checkpoint(str(model), tracking=tracking, cache_dir=tmp))


REGISTRY_SCHEME = "models:/"


def registered_version(uri: str, tracking: str | None) -> Any:
    """The registry's ModelVersion behind ``models:/<name>@<alias>`` or ``models:/<name>/<version>``;
    None for any other model reference. MLflow errors (no such alias, store unreachable) propagate."""
    if not uri.startswith(REGISTRY_SCHEME):
        return None
    from mlflow.tracking import MlflowClient

    name, _, alias = uri[len(REGISTRY_SCHEME):].partition("@")
    # registry_uri too: without it the client uses a registry set process-wide earlier
    client = MlflowClient(tracking, registry_uri=tracking)
    if alias:
        return client.get_model_version_by_alias(name, alias)
    name, _, version = name.partition("/")
    return client.get_model_version(name, version)


def preprocess_from_checkpoint(ckpt: dict[str, Any], *, device: str = "cpu") -> PreprocessConfig:
    """The training preprocessing as a PreprocessConfig, with centre (evaluation) sampling."""
    meta = ckpt.get("preprocess")
    if not isinstance(meta, dict) or not meta:
        raise ModelLoadError("the checkpoint has no 'preprocess' record, so the training preprocessing cannot "
                             "be repeated (retrain with a current bigfive, which stores it)")
    known = {f.name for f in dataclasses.fields(PreprocessConfig)} - {"flow", "sampling", "device", "workers"}
    values = {k: v for k, v in meta.items() if k in known}
    flow_meta = dict(meta.get("flow") or {})
    if "preset" in flow_meta and "dis_preset" not in flow_meta:
        flow_meta["dis_preset"] = flow_meta.pop("preset")
    flow_known = {f.name for f in dataclasses.fields(FlowConfig)}
    try:
        flow = from_dict(FlowConfig, {k: v for k, v in flow_meta.items() if k in flow_known}, "preprocess.flow")
        cfg = from_dict(PreprocessConfig, values, "preprocess")
    except ConfigError as err:
        raise ModelLoadError(f"the checkpoint's preprocess record is invalid: {err}") from None
    cfg = dataclasses.replace(cfg, flow=flow, sampling="center", device=device, workers=1)
    frames, channels = int(ckpt["frames"]), int(ckpt["flow_channels"])
    if cfg.frames != frames or 2 * cfg.flow.stack != channels:
        raise ModelLoadError(f"the checkpoint's preprocess record (frames={cfg.frames}, flow stack={cfg.flow.stack}) "
                             f"does not match its model (frames={frames}, flow channels={channels})")
    return cfg


def output_labels(ckpt: dict[str, Any], outputs: int) -> tuple[str, ...]:
    labels = ckpt.get("labels")
    if isinstance(labels, (list, tuple)) and len(labels) >= outputs and all(isinstance(x, str) for x in labels):
        return tuple(labels[:outputs])
    return ALL_LABELS[:outputs]


def quality_floor(ckpt: dict[str, Any]) -> QualityFloor:
    """Thresholds from the training split's face-detection statistics (meta.json ``train_quality``).

    A clip is below what the model was trained on when its value is under both the training mean
    minus a margin and the training 5th percentile (the floor is the lower of the two).
    """
    meta = ckpt.get("preprocess") or {}
    stats = meta.get("train_quality") if isinstance(meta, dict) else None
    stats = stats if isinstance(stats, dict) else {}

    def floor(mean_key: str, p05_key: str, margin: float) -> float | None:
        mean, p05 = _number(stats.get(mean_key)), _number(stats.get(p05_key))
        if mean is None:
            return None if p05 is None else max(0.0, p05)
        return max(0.0, min(mean - margin, p05 if p05 is not None else mean - margin))

    rate = floor("mean_detection_rate", "p05_detection_rate", DETECTION_MARGIN)
    conf = floor("mean_confidence", "p05_confidence", CONFIDENCE_MARGIN)
    if rate is None and conf is None:
        return QualityFloor(DEFAULT_MIN_DETECTION_RATE, DEFAULT_MIN_CONFIDENCE, "defaults (no training statistics)")
    return QualityFloor(DEFAULT_MIN_DETECTION_RATE if rate is None else rate,
                        DEFAULT_MIN_CONFIDENCE if conf is None else conf,
                        f"training split ({stats.get('clips', '?')} clips): min(mean - margin, 5th percentile)")


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else None
