"""``bigfive ablate --collect DIR``: the run folders of the model ablation, rebuilt from the MLflow server.

Runs trained elsewhere (other machines, Slurm nodes) log their run folder's files to their MLflow run
(:func:`bigfive.ablation.ledger.mark_complete`). This writes them back into the layout ``bigfive ablate``
writes (``DIR/<variant>/seed<N>/{metrics.json, predictions_test.csv, abs_errors_test.npy}``), so the machine
that compares need not be the one that trained::

    bigfive ablate --collect results/ablation/runs && bigfive compare
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from bigfive.ablation.execute import execute
from bigfive.ablation.ledger import ARTIFACT_DIR, completed, tracked_runs
from bigfive.ablation.parallel import all_runs, duplicates, spec_key
from bigfive.config import Params

log = logging.getLogger("bigfive.ablation")


def collect(params: Params, out_dir: str | Path, *, epochs: int | None = None) -> list[str]:
    """Write every complete run's folder under ``out_dir``; returns the runs not complete in MLflow."""
    from bigfive.training.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(params.tracking)
    done = completed(tracked_runs(uri, params.ablation.experiment))
    dups, missing, written = duplicates(params, epochs), [], 0
    for spec in all_runs(params, epochs):
        folder = Path(out_dir) / spec.name / f"seed{spec.seed}"
        if spec.name in dups:  # its record names the variant it duplicates; nothing was trained for it
            execute(params, dataclasses.replace(spec, out_dir=folder), tracking=False)
            continue
        run = done.get(spec_key(params, spec))
        if run is None:
            missing.append(f"{spec.name} seed {spec.seed}")
            continue
        _download(uri, run.run_id, folder)
        written += 1
    log.info("%d run folders written to %s from %s%s", written, out_dir, uri,
             f"; not complete there: {', '.join(missing)}" if missing else "")
    return missing


def _download(uri: str, run_id: str, folder: Path) -> None:
    import mlflow.artifacts

    from bigfive.utils.io import atomic_dir

    with atomic_dir(folder) as tmp:
        got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT_DIR, dst_path=str(tmp),
                                                       tracking_uri=uri))
        for f in got.iterdir():
            shutil.move(str(f), tmp / f.name)
        got.rmdir()
