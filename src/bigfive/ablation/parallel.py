"""``bigfive ablate --all --jobs N``: every model-ablation run not done yet, N at a time.

DVC runs a pipeline's stages one after another, and one run of the small default model uses two
cores poorly (measured here: one process with two threads trains 115 clips/s, two processes with
one thread each 2 x 86). So on a machine with more cores than one run can use, run the variants
in parallel and let DVC record them::

    bigfive ablate --all --jobs 2                  # the runs, 2 processes x 1 thread each
    dvc commit -f pipelines/ablation/dvc.yaml:ablate   # dvc.lock: exactly these stages' outputs
    dvc repro pipelines/ablation/dvc.yaml          # only `compare` is left to run

Each run is the stage's own command (``execute`` with the stage's spec), so the folders are the
ones ``dvc repro`` would write; a failed run is reported and the others go on. A run is done when it has a
folder here or is complete in the MLflow store (:mod:`bigfive.ablation.ledger`): machines logging to one
server split the work between them instead of each running everything. On a node with several GPUs each
worker takes one (:mod:`bigfive.utils.gpus`: round-robin over ``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from bigfive.ablation.execute import METRICS_FILE, RunSpec, execute, model_spec
from bigfive.ablation.ledger import run_key
from bigfive.config import Params, load_params

log = logging.getLogger("bigfive.ablation")


def all_runs(params: Params, epochs: int | None = None) -> list[RunSpec]:
    """Every variant x seed run of ``params.ablation``, in table order."""
    cfg = params.ablation
    return [model_spec(params, v, s, epochs=epochs) for v in cfg.variants for s in cfg.seeds]


def spec_key(params: Params, spec: RunSpec) -> str:
    """:func:`bigfive.ablation.ledger.run_key` of the settings ``spec`` trains with."""
    from bigfive.ablation.variants import run_params

    overrides = params.ablation.variants[spec.model_variant]
    return run_key(run_params(params, overrides, seed=spec.seed, epochs=spec.epochs))


def duplicates(params: Params, epochs: int | None = None) -> set[str]:
    """Variants that train exactly what an earlier one trains (recorded, never trained: see execute)."""
    from bigfive.ablation.variants import aliases

    return set(aliases(params, params.ablation.variants, epochs or params.ablation.epochs))


def done_keys(params: Params) -> set[str]:
    """Keys of the runs complete in the MLflow store (shared when MLFLOW_TRACKING_URI names a server)."""
    from bigfive.ablation.ledger import completed, tracked_runs
    from bigfive.training.tracking import resolve_tracking_uri

    return set(completed(tracked_runs(resolve_tracking_uri(params.tracking), params.ablation.experiment)))


def pending_runs(params: Params, epochs: int | None = None, *, tracking: bool = True) -> list[RunSpec]:
    """The runs not done yet: neither complete in MLflow (any machine's) nor with a run folder here."""
    done = done_keys(params) if tracking and params.tracking.enabled else set()
    return [s for s in all_runs(params, epochs)
            if not (s.out_dir / METRICS_FILE).is_file() and (not done or spec_key(params, s) not in done)]


def _run_one(ctx: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    try:
        record = execute(ctx["params"], spec, tracking=ctx["tracking"])
        return {"run": f"{spec.name} seed {spec.seed}", "ok": True,
                "mean_accuracy": (record.get("test") or {}).get("mean_accuracy")}
    except Exception as err:  # one failed run never stops the others
        log.exception("%s seed %d failed", spec.name, spec.seed)
        return {"run": f"{spec.name} seed {spec.seed}", "ok": False, "error": f"{type(err).__name__}: {err}"}


def _context(params_path: str, tracking: bool, log_level: int | None = None) -> dict[str, Any]:
    if log_level is not None:  # a spawned worker starts without the CLI's logging set-up
        from bigfive.utils.gpus import pin_gpu
        from bigfive.utils.logs import setup_logging

        setup_logging(level=logging.getLevelName(log_level))
        params = load_params(params_path)
        pin_gpu(params.train.device)  # one GPU per worker, round-robin over the visible ones, before CUDA starts
        return {"params": params, "tracking": tracking}
    return {"params": load_params(params_path), "tracking": tracking}


def run_all(params_path: str | Path, *, jobs: int, tracking: bool = True, epochs: int | None = None) -> int:
    """Run every pending model-ablation run, ``jobs`` processes at a time; 1 when any run failed."""
    from bigfive.preprocess.pool import run_pool

    params = load_params(params_path)
    specs = pending_runs(params, epochs, tracking=tracking)
    total = len(params.ablation.variants) * len(params.ablation.seeds)
    log.info("%d of %d ablation runs to do, %d at a time", len(specs), total, jobs)
    if not specs:
        return 0
    if not specs[0].features_dir.is_dir():
        raise FileNotFoundError(f"{specs[0].features_dir}: features not found (run the features stage first: "
                                "dvc repro)")
    if tracking and params.tracking.enabled:
        # create the store and the experiment once, here: workers racing to create a fresh SQLite
        # store's tables fail ("table ... already exists")
        from bigfive.training import tracking as tr

        tr.experiment_id(params.ablation.experiment, tr.configure(params.tracking))
    if jobs <= 1:  # in this process, with every core
        results = [_run_one(_context(str(params_path), tracking), s) for s in specs]
    else:  # one thread per process: the pool sets it, and OMP reads it before torch loads
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        results = list(run_pool(_run_one, specs, workers=jobs, desc="ablation", unit="run",
                                init=_context, init_args=(str(params_path), tracking,
                                                             logging.getLogger("bigfive").getEffectiveLevel())))
    failed = [r for r in results if not r["ok"]]
    for r in failed:
        log.error("%s failed: %s", r["run"], r["error"])
    log.info("%d runs done, %d failed; next: dvc commit -f pipelines/ablation/dvc.yaml:ablate && "
             "dvc repro pipelines/ablation/dvc.yaml", len(results) - len(failed), len(failed))
    return 1 if failed else 0
