"""Storage, sampler and pruner factories; opening (resuming) the study; failing dead workers' trials.

Storage URLs:
- ``sqlite:///optuna.db`` (default; relative to the working directory, ``sqlite:////abs.db`` for an
  absolute path), ``postgresql://...``, ``mysql+pymysql://...``: :class:`optuna.storages.RDBStorage`
  with a heartbeat, so a worker that dies leaves no trial RUNNING forever.
- ``journal:///optuna.journal`` (same relative/absolute rule as sqlite) or any path ending in
  ``.log`` / ``.journal``: a journal file (:class:`optuna.storages.JournalStorage`), the
  recommended way for several workers on one machine (file locks, no database server).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, ProgrammingError

from bigfive.config import ConfigError, TuneConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

JOURNAL_PREFIX = "journal:///"
JOURNAL_SUFFIXES = (".log", ".journal")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

# The objective: a trial's best validation mean accuracy; also the name of its per-epoch intermediate
# values, and the study's metric name (optuna-dashboard labels its plots with it, not "Objective 0").
METRIC = "val_mean_accuracy"

# Trial user attributes (also columns of trials.csv).
WORKER_ATTR = "worker"  # "host:pid:start_time" of the process that ran the trial
FAIL_ATTR = "fail_reason"
PRUNE_ATTR = "prune_reason"
RUN_ATTR = "mlflow_run_id"
FINGERPRINT_ATTR = "space_fingerprint"
BEST_EPOCH_ATTR = "best_epoch"  # the epoch the value comes from (the one best.pt would keep)
TRAIT_ATTR_PREFIX = "val_acc_"  # + trait: validation accuracy per trait at best_epoch
INTERACTION_ATTR = "epochs_to_interaction"  # first epoch at train.interaction_threshold (null: never)


def journal_path(url: str) -> Path | None:
    """The journal file a storage URL names, or None for a database URL."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):])
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url)
    return None


def open_storage(url: str, *, heartbeat_s: int = 60) -> BaseStorage:
    """A storage object for ``url`` (see the module docstring); bad URLs name ``tune.storage``."""
    path = journal_path(url)
    if path is not None:
        if path.is_dir():
            raise ConfigError("tune.storage", f"{path} is a directory, not a journal file")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise ConfigError("tune.storage", f"{url!r} is neither a database URL ({', '.join(RDB_SCHEMES[:4])}, ...) "
                                          f"nor a journal file (journal:///path.log or a path ending in .log/.journal)")
    def connect() -> RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=2 * heartbeat_s,
                              failed_trial_callback=_log_heartbeat_failure)

    return retry_race(connect, "creating the study tables")


def retry_race(attempt: Callable[[], T], what: str, tries: int = 6) -> T:
    """``attempt()``, again after a pause when another worker won a race to create the same rows.

    Workers started together on a fresh database all create Optuna's schema (PostgreSQL then refuses
    the second ``CREATE TYPE``) and the study's attributes; the loser's retry finds them created.
    Other database errors, and a race lost ``tries`` times in a row, are raised.
    """
    for i in range(tries):
        try:
            return attempt()
        except (IntegrityError, ProgrammingError, optuna.exceptions.StorageInternalError) as err:
            if i == tries - 1 or not _is_race(err):
                raise
            log.info("another worker was %s at the same time; trying again", what)
            time.sleep(0.25 * 2**i)
    raise AssertionError("unreachable")


def _is_race(err: Exception) -> bool:
    """A duplicate-object error: what losing a create race looks like (not a bad URL or permissions)."""
    text = f"{err} {err.__cause__}".lower()  # Optuna's StorageInternalError wraps the database's error
    return any(s in text for s in ("already exists", "duplicate", "unique"))


def _log_heartbeat_failure(study: optuna.Study, trial: FrozenTrial) -> None:
    log.warning("trial %d of study %s failed: its worker (%s) stopped sending heartbeats", trial.number,
                study.study_name, trial.user_attrs.get(WORKER_ATTR, "unknown"))


def redact(url: str) -> str:
    """The URL without a password, for logs and MLflow tags."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def make_sampler(cfg: TuneConfig) -> optuna.samplers.BaseSampler:
    # multivariate + group model the conditional space jointly (heads only exist with cross-attention);
    # constant_liar keeps parallel workers from proposing the same point.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=cfg.sampler_seed, n_startup_trials=cfg.tpe_startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


def make_pruner(cfg: TuneConfig, epochs: int | None = None) -> optuna.pruners.BasePruner:
    """The pruner ``tune.pruner`` names; ``epochs`` is a trial's full budget (default ``tune.epochs``)."""
    cls, kwargs = pruner_spec(cfg, epochs)
    return cls(**kwargs)


def pruner_spec(cfg: TuneConfig, epochs: int | None = None) -> tuple[type[optuna.pruners.BasePruner], dict[str, Any]]:
    """The Optuna pruner class and the arguments :func:`make_pruner` builds it with.

    Trials report one step per epoch (1-based), so the resources are epochs: the first comparison
    comes after ``pruner_min_resource`` epochs, the next ones ``pruner_reduction_factor`` times later.
    """
    epochs = cfg.epochs if epochs is None else epochs
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner, {"n_startup_trials": cfg.pruner_startup_trials,
                                             "n_warmup_steps": cfg.pruner_warmup_epochs}
    if cfg.pruner in ("hyperband", "successive_halving"):
        if epochs is None:
            raise ValueError("make_pruner needs the trial's epochs when tune.epochs is null (train.epochs)")
        if cfg.pruner_min_resource > epochs:
            raise ConfigError("tune.pruner_min_resource", f"must be <= the epochs of a trial ({epochs}), "
                                                          f"got {cfg.pruner_min_resource}")
        if cfg.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner, {"min_resource": cfg.pruner_min_resource, "max_resource": epochs,
                                                    "reduction_factor": cfg.pruner_reduction_factor}
        return optuna.pruners.SuccessiveHalvingPruner, {"min_resource": cfg.pruner_min_resource,
                                                        "reduction_factor": cfg.pruner_reduction_factor,
                                                        "min_early_stopping_rate": 0}
    return optuna.pruners.NopPruner, {}


def open_study(cfg: TuneConfig, storage: BaseStorage, fingerprint: str, *, epochs: int | None = None
               ) -> optuna.Study:
    """Create the study or resume it by name; refuse to mix trials from a different space or epochs.

    ``epochs`` is a trial's budget (``tune.epochs``, or ``train.epochs`` when that is null).
    """
    return retry_race(lambda: _open_study(cfg, storage, fingerprint, epochs), "creating the study")


def _open_study(cfg: TuneConfig, storage: BaseStorage, fingerprint: str, epochs: int | None) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=cfg.study, direction="maximize",
                                sampler=make_sampler(cfg), pruner=make_pruner(cfg, epochs), load_if_exists=True)
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    if stored is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif stored != fingerprint:
        raise ConfigError("tune.study", f"study {cfg.study!r} in {redact(cfg.storage)} was created with a "
                                        f"different tune.space or tune.epochs (train.epochs when tune.epochs is "
                                        f"null), so its trial "
                                        f"values are not comparable; choose a new tune.study name (or delete the "
                                        f"study) to search this space")
    if study.metric_names != [METRIC]:  # written once; every worker would write the same
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])
    return study


def worker_id() -> str:
    """``host:pid:create_time``: identifies this process even after its pid is reused."""
    import psutil

    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.0f}"


def _alive(worker: str) -> bool | None:
    """Whether the worker process is alive; None when it ran on another host (cannot tell)."""
    import psutil

    try:
        host, pid, started = worker.rsplit(":", 2)
        pid_i, started_f = int(pid), float(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        return abs(psutil.Process(pid_i).create_time() - started_f) < 2
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead workers FAIL, with a ``fail_reason``; returns their numbers.

    Same-host workers are checked by process id (any storage); workers on other hosts are caught by
    the RDB heartbeat (``tune.heartbeat_s``), which Optuna checks before every trial.
    """
    storage = study._storage  # noqa: SLF001 - Optuna exposes no public per-trial write API
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if worker is None or _alive(worker) is not False:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, FAIL_ATTR,  # noqa: SLF001
                                        f"worker {worker} ended without finishing the trial (crashed or killed)")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(trial.number)
        log.warning("trial %d was left RUNNING by dead worker %s: marked FAIL", trial.number, worker)
    return failed
