"""The model registry: register a run's best checkpoint and move the champion alias, on evidence only.

Each registered version carries two tags: ``val_mean_accuracy`` (full precision) and
``features_fingerprint`` (the features' hash with T, S and the flow settings). The alias
(``tracking.champion_alias``) moves to a new version only when the holder was trained on the same
fingerprint and the new version's validation accuracy is strictly higher: accuracies measured on
different data do not rank models, so a sample-trained model never displaces a ChaLearn one (or
the reverse) by having an easier validation split. A version that is not promoted for that reason
gets a ``not_promoted`` tag saying so.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("bigfive.training")

METRIC_TAG = "val_mean_accuracy"
FINGERPRINT_TAG = "features_fingerprint"
NOT_PROMOTED_TAG = "not_promoted"
MAX_TAG_CHARS = 500  # enough for the reason; MLflow's limit is 5000


def features_fingerprint(features_hash: str, meta: dict[str, Any] | None) -> str:
    """The data a validation number is measured on: the features' hash, T, S and the flow settings."""
    meta = meta or {}
    flow = json.dumps(meta.get("flow") or {}, sort_keys=True, separators=(",", ":"))
    return f"{features_hash} T={meta.get('frames')} S={meta.get('crop_size')} flow={flow}"


def version_metric(client: Any, name: str, version: str) -> float | None:
    value = (client.get_model_version(name, version).tags or {}).get(METRIC_TAG)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def promote_champion(name: str, version: str | int, value: float, alias: str = "champion", *,
                     fingerprint: str, client: Any | None = None) -> tuple[bool, str]:
    """Tag ``version`` with its val mean accuracy and fingerprint; move ``alias`` to it if it beats the
    holder on the same features. Returns (moved, the version holding the alias afterwards)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = client or mlflow.MlflowClient()
    version = str(version)
    client.set_model_version_tag(name, version, METRIC_TAG, repr(float(value)))  # full precision
    client.set_model_version_tag(name, version, FINGERPRINT_TAG, fingerprint)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None and str(current.version) != version:
        held = str(current.version)
        why = _not_comparable(fingerprint, (current.tags or {}).get(FINGERPRINT_TAG), alias, held)
        if why:
            client.set_model_version_tag(name, version, NOT_PROMOTED_TAG, why[:MAX_TAG_CHARS])
            log.warning("%s v%s not promoted: %s", name, version, why)
            return False, held
        best = version_metric(client, name, held)
        if best is not None and value <= best:
            log.info("%s v%s (%s %.4f) does not beat @%s v%s (%.4f): alias unchanged", name, version,
                     METRIC_TAG, value, alias, held, best)
            return False, held
    client.set_registered_model_alias(name, alias, version)
    log.info("%s@%s -> v%s (%s %.4f)", name, alias, version, METRIC_TAG, value)
    return True, version


def _not_comparable(new: str, held: str | None, alias: str, version: str) -> str:
    """Why the new version cannot be ranked against the holder ('' when it can)."""
    if held is None:
        return (f"@{alias} v{version} has no {FINGERPRINT_TAG} tag (registered before the guard), so its "
                f"validation data is unknown; move the alias by hand if the data is the same")
    if held != new:
        return (f"trained on other features than @{alias} v{version} ({new[:120]} vs {held[:120]}): "
                f"validation accuracies on different data do not rank models")
    return ""


def register_best(checkpoint: dict[str, Any], example: tuple[Any, Any], *, name: str, alias: str,
                  value: float, fingerprint: str) -> dict[str, Any]:
    """Log ``checkpoint`` as the active run's pyfunc ``model``, register it, then try the alias."""
    import mlflow

    from bigfive.training.pyfunc import log_pyfunc

    info = log_pyfunc(checkpoint, example, registered_model_name=name)
    version = str(info.registered_model_version)
    moved, holder = promote_champion(name, version, value, alias, fingerprint=fingerprint)
    mlflow.set_tags({"registered_model": name, "model_version": version, "champion": str(moved)})
    return {"registered_model": name, "model_version": version, "champion_moved": moved,
            "champion_version": holder, "model_uri": info.model_uri}
