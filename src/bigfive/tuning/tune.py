"""``bigfive tune``: one Optuna worker over the search space in params.yaml (docs/tuning.md).

Without ``--n-trials`` the worker tops the study up to ``tune.n_trials`` finished trials, so the
DVC stage resumes a cut-short search instead of starting over; with ``--n-trials N`` it adds N
trials, which is how extra workers join a shared study (``--storage``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import socket
from pathlib import Path

from bigfive.config import ConfigError, Params, TuneConfig, load_params, to_dict

log = logging.getLogger("bigfive.tuning")

FINISHED = ("COMPLETE", "PRUNED")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: sqlite:///optuna.db, postgresql://..., mysql://..., or a journal file "
                             "(journal:///optuna.journal, or a path ending in .log/.journal) (default: tune.storage)")
    parser.add_argument("--study", default=None, help="study name (default: tune.study)")
    parser.add_argument("--n-trials", type=int, default=None,
                        help="run this many more trials in this worker (default: top the study up to tune.n_trials)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which no new trial starts "
                                                                      "(default: tune.timeout_s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/OpenMP threads for this worker; use 1 when several workers share a machine")
    parser.add_argument("--features", default=None, help="features directory (default: preprocess.features_dir)")
    parser.add_argument("--results", default=None, help="output directory (default: tune.results_dir)")
    parser.add_argument("--no-report", action="store_true", help="do not write trials.csv, best_params.yaml, plots")
    parser.add_argument("--report-only", action="store_true", help="only write the report of the stored study")
    parser.add_argument("--apply", metavar="BEST_PARAMS", default=None,
                        help="merge a best_params.yaml into the --params file (comments kept) and exit")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads", f"must be >= 1, got {args.threads}")
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)  # before torch loads
    params = load_params(args.params)
    if args.apply:
        return _apply(Path(args.apply), Path(args.params))
    cfg = dataclasses.replace(params.tune, storage=args.storage or params.tune.storage,
                              study=args.study or params.tune.study,
                              timeout_s=args.timeout if args.timeout is not None else params.tune.timeout_s,
                              # the tasks of a Slurm array are workers of one study: TPE workers seeded alike
                              # propose the same startup trials (measured: two tasks, identical trial params)
                              sampler_seed=params.tune.sampler_seed + int(os.environ.get("SLURM_ARRAY_TASK_ID", 0)))
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError("--n-trials", f"must be >= 1, got {args.n_trials}")
    if not cfg.space:
        raise ConfigError("tune.space", "is empty: declare the searched parameters in params.yaml (docs/tuning.md)")

    import optuna

    from bigfive.tuning.objective import trial_epochs
    from bigfive.tuning.report import summary_line, write_report
    from bigfive.tuning.space import fingerprint
    from bigfive.tuning.study import fail_stale_trials, open_storage, open_study, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from our callback
    epochs = trial_epochs(cfg, params)  # tune.epochs, or train.epochs when null
    storage = open_storage(cfg.storage, heartbeat_s=cfg.heartbeat_s)
    study = open_study(cfg, storage, fingerprint(cfg.space, epochs), epochs=epochs)
    fail_stale_trials(study)
    results_dir = Path(args.results or cfg.results_dir)
    finished = sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
    log.info("study %r in %s: %d trials stored (%d finished); up to %d epochs a trial, pruner %s", cfg.study,
             redact(cfg.storage), len(study.trials), finished, epochs, _pruner_text(cfg))

    interrupted = False
    if not args.report_only:
        n = args.n_trials if args.n_trials is not None else cfg.n_trials - finished
        if n <= 0:
            log.info("the study already has %d finished trials (tune.n_trials = %d): nothing to run; pass "
                     "--n-trials N to add more", finished, cfg.n_trials)
        else:
            features_dir = Path(args.features or params.preprocess.features_dir)
            if not (features_dir / "train").is_dir() or not (features_dir / "val").is_dir():
                raise FileNotFoundError(f"{features_dir}: no train/ and val/ features (run `dvc repro features`)")
            from bigfive.utils.gpus import pin_gpu

            # workers sharing a multi-GPU node take one GPU each, round-robin, before CUDA starts
            pin_gpu(params.train.device)
            if args.threads is not None:
                import torch

                torch.set_num_threads(args.threads)
            try:
                _optimize(study, params, cfg, features_dir, n, top_up=args.n_trials is None)
            except KeyboardInterrupt:
                interrupted = True  # the trial is already marked FAIL; still write what the study holds

    if args.no_report:
        return 130 if interrupted else 0
    report = write_report(study, results_dir, cfg.space,
                          interaction_trait=getattr(params.train, "interaction_trait", None))
    log.info("%s; wrote %s", summary_line(report), ", ".join(str(p) for p in report.files[:2]))
    if interrupted:
        raise KeyboardInterrupt
    if report.complete == 0:
        log.error("no trial of study %r has completed; trials.csv has each trial's fail_reason/prune_reason",
                  cfg.study)
        return 1
    return 0


def _optimize(study, params: Params, cfg: TuneConfig, features_dir: Path, n: int, *, top_up: bool) -> None:
    import optuna

    from bigfive.training import fit
    from bigfive.tuning.objective import Objective, trial_epochs
    from bigfive.tuning.study import redact
    from bigfive.utils.progress import progress

    objective = Objective(params, cfg, features_dir, fit, tracking=params.tracking.enabled)
    bar = progress(total=n, desc=f"tune {cfg.study}", unit="trial")

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        reason = trial.user_attrs.get("prune_reason") or trial.user_attrs.get("fail_reason") or ""
        log.info("trial %d %s value %s %s %s", trial.number, trial.state.name, value, trial.params, reason)

    callbacks = [on_trial]
    if top_up:  # parallel workers sharing tune.n_trials stop together
        callbacks.append(optuna.study.MaxTrialsCallback(cfg.n_trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                              optuna.trial.TrialState.PRUNED)))
    run = dict(n_trials=n, timeout=cfg.timeout_s, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    try:
        if not params.tracking.enabled:
            study.optimize(objective, **run)
            return
        import mlflow

        from bigfive.training import tracking

        uri = tracking.configure(params.tracking)
        with _init_lock(tracking.sqlite_file(uri)):
            exp_id = _retry(lambda: tracking.experiment_id(cfg.experiment, uri,
                                                           tracking.experiment_description(cfg.experiment, params)),
                            "create the MLflow experiment")
        tags = {"optuna.study": cfg.study, "optuna.storage": redact(cfg.storage), "tune.worker": objective.worker,
                "tune.role": "worker",
                tracking.NOTE_TAG: f"Optuna worker {objective.worker}: {n} trial(s) of study `{cfg.study}` in "
                                   f"{redact(cfg.storage)}; each trial is a nested run below."}
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{cfg.study}-worker-{socket.gethostname()}-{os.getpid()}",
                              tags=tags):
            mlflow.log_params({"tune.study": cfg.study, "tune.storage": redact(cfg.storage), "tune.worker_trials": n,
                               "tune.epochs": trial_epochs(cfg, params), "tune.pruner": _pruner_text(cfg),
                               "tune.sampler_seed": cfg.sampler_seed,
                               "tune.space": json.dumps(to_dict(cfg.space), sort_keys=True)[:6000]})
            study.optimize(objective, **run)
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == objective.worker]
            done = [t.value for t in mine if t.value is not None and t.state.name == "COMPLETE"]
            mlflow.log_metrics({"trials": len(mine), "trials_complete": len(done),
                                "trials_pruned": sum(t.state.name == "PRUNED" for t in mine)}
                               | ({"best_val_mean_accuracy": max(done)} if done else {}))
    finally:
        bar.close()


def _pruner_text(cfg: TuneConfig) -> str:
    if cfg.pruner in ("hyperband", "successive_halving"):
        return (f"{cfg.pruner} (min_resource {cfg.pruner_min_resource}, "
                f"reduction_factor {cfg.pruner_reduction_factor})")
    if cfg.pruner == "median":
        return f"median (startup {cfg.pruner_startup_trials} trials, warm-up {cfg.pruner_warmup_epochs} epochs)"
    return cfg.pruner


def _init_lock(db: Path | None):
    """Workers started together on a new MLflow sqlite file would run its schema migration at once and
    corrupt it; a lock file beside it lets the first create the tables while the others wait."""
    import contextlib

    if db is None:
        return contextlib.nullcontext()
    import hashlib
    import tempfile

    from filelock import FileLock

    key = hashlib.md5(str(db.resolve()).encode()).hexdigest()[:16]  # in the temp dir: no clutter beside the db
    return FileLock(str(Path(tempfile.gettempdir()) / f"bigfive-mlflow-init-{key}.lock"), timeout=600)


def _retry(fn, what: str, tries: int = 5):
    """Creating the experiment can still race (two workers, one name); the loser retries."""
    import time

    for attempt in range(tries):
        try:
            return fn()
        except Exception as err:
            if attempt == tries - 1:
                raise
            log.warning("could not %s (%s); retrying", what, str(err).splitlines()[0][:200])
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _apply(best_file: Path, params_file: Path) -> int:
    from bigfive.tuning.apply import apply_best

    changes = apply_best(best_file, params_file)
    if not changes:
        log.info("%s already holds the values in %s", params_file, best_file)
    for key, (old, new) in changes.items():
        log.info("%s: %s: %r -> %r", params_file, key, old, new)
    print(f"applied {len(changes)} change(s) from {best_file} to {params_file}; run `dvc repro` to train with them")
    return 0
