"""``bigfive ablate --all --slurm``: one Slurm job per pending run, submitted as one job array with ``sbatch``.

Each array task runs exactly the DVC stage's command (``bigfive ablate --variant V --seed S``), so its outputs
are the ones ``dvc repro`` would write, and logs to the shared MLflow server (``MLFLOW_TRACKING_URI``, which
``sbatch`` passes on with the rest of the environment). The job script is written to ``launcher.slurm.job_dir``
before it is submitted: it is the script a user would otherwise write by hand, and can be read, edited and
submitted again with ``sbatch``.

What is pending comes from the shared store (:mod:`bigfive.ablation.ledger`): runs tagged complete in MLflow
are done; runs of array tasks still queued or running (``squeue``) are in flight. So a second submission
submits only what is neither, and a job killed by the scheduler (time limit, preemption, ``scancel``) is
reported and submitted again by the next submission (``--wait`` does that itself, ``launcher.slurm.retries``
times). ``sbatch`` rather than a Python client such as submitit: each job is a shell command, not a pickled
function, results travel through MLflow rather than back to the submitter, and the script is the documented
one, with nothing between the user and Slurm to install on the nodes.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import time
from pathlib import Path

from bigfive.ablation.execute import RunSpec
from bigfive.ablation.ledger import completed, mark_abandoned, tracked_runs
from bigfive.config import ConfigError, Params, load_params
from bigfive.config.launcher import SlurmConfig

log = logging.getLogger("bigfive.ablation")

JOB_NAME = "bigfive-ablate"
_POLL_S = 2.0  # squeue is cheap; a finished array is noticed within this


def job_script(cfg: SlurmConfig, runs: list[RunSpec], *, params_path: str | Path, epochs: int | None,
               workdir: str | Path) -> str:
    """The sbatch script of one job array: task i runs ``runs[i]``."""
    job_dir = Path(cfg.job_dir).resolve()
    opts = [f"--job-name={JOB_NAME}", f"--array=0-{len(runs) - 1}%{cfg.max_concurrent}", "--ntasks=1",
            f"--cpus-per-task={cfg.cpus}", f"--mem={cfg.mem_gb}G", f"--time={cfg.time}",
            f"--chdir={Path(workdir).resolve()}", f"--output={job_dir}/%x-%A_%a.out"]
    if cfg.partition:
        opts.append(f"--partition={cfg.partition}")
    if cfg.gpus:
        opts.append(f"--gres=gpu:{cfg.gpus}")  # Slurm sets CUDA_VISIBLE_DEVICES to the job's GPUs
    opts += cfg.extra
    table = "\n".join(f"    {shlex.quote(f'{s.name} {s.seed}')}" for s in runs)
    command = ["bigfive", "ablate", "--params", str(Path(params_path).resolve()), "--variant", '"$VARIANT"',
               "--seed", '"$SEED"'] + (["--epochs", str(epochs)] if epochs else [])
    lines = ["#!/bin/bash", *[f"#SBATCH {o}" for o in opts],
             "# one ablation run per array task: the DVC stage's command for (variant, seed)",
             "set -euo pipefail", f"RUNS=(\n{table}\n)",
             'read -r VARIANT SEED <<< "${RUNS[$SLURM_ARRAY_TASK_ID]}"',
             *cfg.setup,
             "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}  # torch would otherwise start a thread per core",
             "exec " + " ".join(command)]
    return "\n".join(lines) + "\n"


def _slurm(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError(f"{cmd[0]}: not found (is this a Slurm login node? --slurm needs sbatch and squeue)")\
            from None
    if done.returncode != 0:  # the last line is Slurm's reason (fatal: ...), the ones above are its attempts
        said = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1][:300]
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {said} (is SLURM_CONF or /etc/slurm/slurm.conf this "
                           "cluster's?)")
    return done.stdout


def live_tasks() -> set[str]:
    """``<array job>_<task>`` of every user's ablation tasks that are queued or running: a colleague's runs
    on the same MLflow server are in flight too, never abandoned (job ids are unique on a cluster)."""
    out = _slurm("squeue", "--noheader", "--array", f"--name={JOB_NAME}", "--format=%F %K %T")
    tasks = set()
    for line in out.splitlines():
        job, task, _state = line.split()
        tasks.add(f"{job}_{task}")
    return tasks


def in_flight_keys(job_dir: Path, live: set[str]) -> set[str]:
    """Run keys of the live tasks, from the run list written beside each submitted script."""
    keys = set()
    for path in job_dir.glob(f"{JOB_NAME}-*.json"):
        job = path.stem.removeprefix(f"{JOB_NAME}-")
        for task, key in enumerate(json.loads(path.read_text())["keys"]):
            if f"{job}_{task}" in live:
                keys.add(key)
    return keys


def submit(params_path: str | Path, *, epochs: int | None = None) -> tuple[str | None, int]:
    """Submit every pending run as one job array; returns (array job id or None, runs submitted)."""
    from bigfive.ablation.parallel import all_runs, duplicates, spec_key

    params = load_params(params_path)
    uri = _shared_uri(params)
    cfg = params.launcher.slurm
    job_dir = Path(cfg.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    live = live_tasks()
    tracked = tracked_runs(uri, params.ablation.experiment)
    mark_abandoned(uri, tracked, live)
    done, flying = set(completed(tracked)), in_flight_keys(job_dir, live)
    dups = duplicates(params, epochs)
    keys = {s: spec_key(params, s) for s in all_runs(params, epochs) if s.name not in dups}
    pending = [s for s, key in keys.items() if key not in done | flying]
    log.info("%d of %d ablation runs done, %d queued or running, %d to submit", len(done & set(keys.values())),
             len(keys), len(flying & set(keys.values())), len(pending))
    if not pending:
        return None, 0
    script = job_dir / f"{JOB_NAME}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}.sh"
    script.write_text(job_script(cfg, pending, params_path=params_path, epochs=epochs, workdir=Path.cwd()))
    job = _slurm("sbatch", "--parsable", str(script)).strip().split(";")[0]
    (job_dir / f"{JOB_NAME}-{job}.json").write_text(json.dumps(
        {"script": script.name, "keys": [keys[s] for s in pending],
         "runs": [[s.name, s.seed] for s in pending]}, indent=1))
    log.info("submitted job array %s: %d runs (%s); logs in %s", job, len(pending), script, job_dir)
    return job, len(pending)


def _shared_uri(params: Params) -> str:
    from bigfive.training.tracking import resolve_tracking_uri

    if not params.tracking.enabled:
        raise ConfigError("tracking.enabled", "--slurm decides what is done from MLflow: tracking must be on")
    uri = resolve_tracking_uri(params.tracking)
    if not uri.startswith(("http://", "https://", "postgresql", "mysql")):
        log.warning("MLflow store %s is not a server: jobs on other nodes cannot log to it unless it is on a "
                    "shared filesystem (export MLFLOW_TRACKING_URI=http://lab-host:5000)", uri)
    return uri


def wait_for(job: str) -> None:
    """Return when no task of array ``job`` is queued or running."""
    while any(t.startswith(f"{job}_") for t in live_tasks()):
        time.sleep(_POLL_S)


def run_slurm(params_path: str | Path, *, epochs: int | None = None, wait: bool = False) -> int:
    """``ablate --all --slurm``: submit; with ``wait``, wait for the array and resubmit what did not finish."""
    job, _ = submit(params_path, epochs=epochs)
    if not wait:
        return 0
    params = load_params(params_path)
    for _ in range(params.launcher.slurm.retries):
        if job is None:
            break
        wait_for(job)
        job, _ = submit(params_path, epochs=epochs)  # reports and resubmits the runs whose job was killed
    if job is not None:
        wait_for(job)
    from bigfive.ablation.parallel import duplicates, pending_runs

    dups = duplicates(params, epochs)
    missing = [f"{s.name} seed {s.seed}" for s in pending_runs(params, epochs) if s.name not in dups]
    if missing:
        log.error("%d ablation runs did not finish after %d retries: %s (job logs in %s)", len(missing),
                  params.launcher.slurm.retries, ", ".join(missing[:5]), params.launcher.slurm.job_dir)
        return 1
    return 0
