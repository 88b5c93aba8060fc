"""MLflow helpers: where runs go, what identifies a run's inputs, and the champion alias.

- Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``tracking.uri`` (``sqlite:///mlflow.db``);
  a relative sqlite path is resolved against the current directory, and a new experiment stores
  its artifacts in ``mlruns/`` beside the database file, so runs from any directory land in one
  predictable place.
- Tags: ``git_commit`` (``git rev-parse HEAD``, ``unknown`` outside git) and ``features_hash``
  (the md5 DVC recorded for the features output in ``dvc.lock``, else a fingerprint of meta.json
  and the arrays' sizes and leading bytes; ``features_hash_source`` says which).
- Champion: see :mod:`bigfive.training.registry` (the alias moves only between versions trained on
  the same features).
- What the MLflow UI shows first: experiments are tagged ``mlflow.experimentKind`` =
  ``custom_model_development`` (a training experiment; MLflow 3.17's UI still opens on its browser-wide
  GenAI / Model training switch, so :func:`ui_url` links to the training view)
  and carry a description (``mlflow.note.content``); runs get descriptive names
  (:func:`default_run_name`), a description, and the features as a dataset input (name, the DVC hash
  as digest, split sizes as profile) so the run table's Dataset column says which data a run used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from bigfive.config import Params, flatten, to_dict
from bigfive.config.train import TrackingConfig

log = logging.getLogger("bigfive.training")

MAX_PARAM_CHARS = 6000
# MLflow 3 records an experiment's kind in this tag; the values are those of the UI's ExperimentKind enum
# (mlflow/server/js, 3.17). "custom_model_development" marks a training experiment, but 3.17's UI picks
# its view from a per-browser switch, not from the tag (README "Working as a team"): see ui_url.
KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description the UI shows for an experiment or a run


# mlflow.set_tracking_uri() also writes MLFLOW_TRACKING_URI into os.environ. Remember what we wrote, and
# whether it was the user's own variable, so that a later configure() with other params is overridden only
# by the user's choice, never by our own earlier one.
_uri_we_set: str | None = None
_we_set_users_uri = False


def _users_env_uri() -> str | None:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if not env or (env == _uri_we_set and not _we_set_users_uri):
        return None
    return env


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    return absolute_sqlite(_users_env_uri() or cfg.uri)


def absolute_sqlite(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/cwd/mlflow.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((Path.cwd() / uri[len(prefix):]).resolve())
    return uri


def sqlite_file(uri: str) -> Path | None:
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix):].split("?")[0])


def artifact_location(uri: str) -> str | None:
    """``mlruns/`` beside a sqlite database; None (the server's default) for other stores."""
    db = sqlite_file(uri)
    return (db.parent / "mlruns").resolve().as_uri() if db is not None else None


def configure(cfg: TrackingConfig) -> str:
    """Point mlflow at the tracking store (and the registry at the same store); returns the URI."""

    uri = resolve_tracking_uri(cfg)
    db = sqlite_file(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    use_store(uri)
    return uri


def use_store(uri: str) -> None:
    """Point mlflow's tracking and registry at ``uri``: the one place bigfive sets them, so the bookkeeping
    of what it wrote into MLFLOW_TRACKING_URI (see above) is kept whoever calls."""
    import mlflow

    global _uri_we_set, _we_set_users_uri
    from_user = _users_env_uri() is not None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _uri_we_set, _we_set_users_uri = os.environ.get("MLFLOW_TRACKING_URI"), from_user


def experiment_id(name: str, uri: str, description: str | None = None) -> str:
    """The id of experiment ``name``, created with a deterministic artifact location if missing.

    The experiment is marked as a model-training experiment and described (:func:`mark_experiment`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise RuntimeError(f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
                               "or choose another tracking.experiment")
        mark_experiment(client, exp, description)
        return exp.experiment_id
    try:
        exp_id = client.create_experiment(name, artifact_location=artifact_location(uri),
                                          tags=experiment_tags(description))
    except MlflowException:  # another process created it between our two calls
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        mark_experiment(client, exp, description)
        return exp.experiment_id
    return exp_id


def experiment_tags(description: str | None) -> dict[str, str]:
    return {KIND_TAG: TRAINING_KIND, **({NOTE_TAG: description} if description else {})}


def mark_experiment(client: Any, exp: Any, description: str | None) -> None:
    """Add the training kind and the description to an experiment that lacks them (stores made before
    these tags existed); a kind or description someone set by hand is left as it is."""
    for key, value in experiment_tags(description).items():
        if key not in (exp.tags or {}):
            client.set_experiment_tag(exp.experiment_id, key, value)


def experiment_description(name: str, params: Params) -> str | None:
    """What each of the project's experiments holds (README, "The main runs in the MLflow UI")."""
    abl = params.ablation
    known = {
        params.tracking.experiment: "Main pipeline (`dvc repro`): one run per `bigfive train`, with the metrics "
                                    "`bigfive evaluate` adds; registered as the model "
                                    f"`{params.tracking.registered_model}`.",
        params.tune.experiment: f"Optuna search (`bigfive tune`, study `{params.tune.study}`): one parent run per "
                                "worker, one nested `trial-<n>` run per trial.",
        abl.experiment: "Model ablation (pipelines/ablation): one `<variant>-seed<k>` run per variant and seed, "
                        "with its test metrics.",
        abl.flow.experiment: "Preprocessing ablation (pipelines/ablation_flow): optical-flow method x frames, "
                             "one `<variant>-seed<k>` run each.",
    }
    return known.get(name)


def ui_url(uri: str, exp_id: str) -> str | None:
    """The MLflow UI's run table of an experiment on a tracking server (None for a local store).

    MLflow 3.17's UI opens every experiment in its GenAI view unless the page is asked for the
    "Model training" one (its ``workflowType`` switch, default ``genai``), so the link asks for it.
    """
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs?workflowType=machine_learning"


def default_run_name(params: Params) -> str:
    """``train-<fusion>-<direction>-seed<k>``; the direction only for the fusions that have one."""
    from bigfive.models.fusion import PER_STEP

    m = params.model
    parts = [m.fusion, m.direction] if m.fusion in PER_STEP else [m.fusion]
    return "-".join(["train", *parts, f"seed{params.train.seed}"])


def run_description(params: Params, train_clips: int, val_clips: int, data_hash: str) -> str:
    m, tc = params.model, params.train
    return (f"{m.fusion} fusion ({m.direction}, {m.heads} heads, {m.layers} layer(s), embed {m.embed_dim}) trained "
            f"up to {tc.epochs} epochs with seed {tc.seed} on {train_clips} train / {val_clips} val clips of the "
            f"{params.data.source} features {data_hash[:12]}.")


def split_sizes(features_dir: Path | None, train_clips: int, val_clips: int) -> dict[str, int]:
    """Clips per split: what fit uses, plus the test split stored beside them (not read by training)."""
    sizes = {"train": train_clips, "val": val_clips}
    labels = Path(features_dir) / "test" / "labels.npy" if features_dir is not None else None
    if labels is not None and labels.is_file():
        import numpy as np

        sizes["test"] = int(np.load(labels, mmap_mode="r").shape[0])
    return sizes


def log_dataset(name: str, source: str, digest: str, sizes: dict[str, int]) -> None:
    """Log the features as the active run's training dataset input (the UI's Dataset column)."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class FeaturesDataset(MetaDataset):
        """Metadata only: the arrays are DVC's to store; the profile carries the split sizes."""

        @property
        def profile(self) -> dict[str, int]:
            return sizes

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(sizes)}

    with warnings.catch_warnings():  # a local path matches two registered source kinds; either is right
        warnings.simplefilter("ignore", UserWarning)
        src = resolve_dataset_source(source)
    mlflow.log_input(FeaturesDataset(src, name=name, digest=digest), context="training")


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def dvc_lock_hash(features_dir: str | Path, lock_file: str | Path = "dvc.lock") -> str | None:
    """The md5 DVC recorded for the output at ``features_dir`` (relative to the lock file's directory)."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return None
    import yaml

    try:
        lock = yaml.safe_load(lock_file.read_text()) or {}
    except yaml.YAMLError:
        log.warning("%s: not valid YAML; falling back to a fingerprint of the features", lock_file)
        return None
    try:
        target = Path(os.path.relpath(Path(features_dir).resolve(), lock_file.parent.resolve())).as_posix()
    except ValueError:  # different drive
        return None
    for stage in (lock.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            if Path(str(out.get("path", ""))).as_posix().rstrip("/") == target and out.get("md5"):
                return str(out["md5"])
    return None


def fingerprint(files: list[Path], meta: dict[str, Any] | None = None) -> str:
    """sha256 over meta.json's content and each file's name, size and first MiB (cheap for large memmaps)."""
    h = hashlib.sha256(json.dumps(meta or {}, sort_keys=True).encode())
    for path in sorted(files):
        h.update(path.name.encode())
        h.update(str(path.stat().st_size).encode())
        with path.open("rb") as f:
            h.update(f.read(1 << 20))
    return h.hexdigest()[:32]


def features_hash(features_dir: str | Path | None, files: list[Path], meta: dict[str, Any] | None) -> tuple[str, str]:
    """(hash, source): DVC's md5 from dvc.lock when it tracks ``features_dir``, else a fingerprint."""
    if features_dir is not None:
        md5 = dvc_lock_hash(features_dir)
        if md5:
            return md5, "dvc.lock"
    return fingerprint(files, meta), "fingerprint"


def params_for_mlflow(params: Params) -> dict[str, str]:
    """Flattened ``section.key`` params as strings within MLflow's 6000-character value limit."""
    out = {}
    for key, value in flatten(to_dict(params)).items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        out[key] = text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."
    return out


def log_params(params: Params) -> None:
    import mlflow

    items = list(params_for_mlflow(params).items())
    for i in range(0, len(items), 100):  # log_params takes at most 100 per call
        mlflow.log_params(dict(items[i:i + 100]))
