"""``launcher`` section: how ``bigfive ablate --all --slurm`` asks a Slurm cluster for its jobs (docs/cluster.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bigfive.config.base import check, positive

# Slurm's --time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


@dataclass(frozen=True)
class SlurmConfig:
    """One job per ablation run, submitted as one job array; every value becomes an ``#SBATCH`` line."""

    partition: str | None = None  # None: the cluster's default partition
    gpus: int = 0  # GPUs per job (--gres=gpu:N); Slurm then sets CUDA_VISIBLE_DEVICES for the job
    cpus: int = 4  # --cpus-per-task; also the job's torch threads (OMP_NUM_THREADS)
    mem_gb: int = 16  # --mem
    time: str = "04:00:00"  # --time: a job past it is killed, never recorded as done, and resubmitted next time
    max_concurrent: int = 8  # the array's %N: at most this many runs at once
    job_dir: str = "slurm"  # job scripts, their run lists and logs: must be on a filesystem the nodes see
    setup: list[str] = field(default_factory=list)  # shell lines run before the command (module load, venv)
    extra: list[str] = field(default_factory=list)  # further sbatch options, e.g. --account=lab, --qos=normal
    retries: int = 1  # --wait: how many times runs that did not finish are submitted again

    def validate(self, path: str) -> None:
        for key in ("cpus", "mem_gb", "max_concurrent"):
            positive(getattr(self, key), f"{path}.{key}")
        check(self.gpus >= 0, f"{path}.gpus", f"must be >= 0, got {self.gpus}")
        check(self.retries >= 0, f"{path}.retries", f"must be >= 0, got {self.retries}")
        check(bool(_TIME.match(self.time)), f"{path}.time",
              f"{self.time[:40]!r} is not a Slurm time limit (e.g. 90, 04:00:00, 1-12:00:00)")
        check(bool(self.job_dir), f"{path}.job_dir", "must not be empty")
        for i, opt in enumerate(self.extra):
            check(opt.startswith("--"), f"{path}.extra[{i}]", f"{opt[:40]!r} is not an sbatch option (--name=value)")


@dataclass(frozen=True)
class LauncherConfig:
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
