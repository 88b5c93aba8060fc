"""Shared fixtures. `tiny_pipeline` runs the real main DVC pipeline once per test session on a tiny
sample in a temporary git repository; end-to-end, notebook, ablation and server tests reuse it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Small enough to run the whole pipeline in about a minute on 2 cores, big enough that every
# split has clips and every stage does real work.
TINY_OVERRIDES = {
    "sample": {"n_train": 24, "n_val": 8, "n_test": 8, "seconds": 1.4, "fps": 15},
    "preprocess": {"frames": 4, "crop_size": 32, "workers": 2},
    "train": {"epochs": 3, "batch_size": 8, "warmup_epochs": 1, "patience": 0},
    "evaluate": {"bootstrap": 20, "example_clips": 2},
}


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def tiny_params(extra: dict | None = None) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY_OVERRIDES)
    if extra:
        deep_update(params, extra)
    return params


def clean_env() -> dict[str, str]:
    """The environment for subprocesses: no inherited MLflow settings, one thread each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GIT_AUTHOR_NAME": "bigfive test",
                "GIT_AUTHOR_EMAIL": "test@bigfive.local", "GIT_COMMITTER_NAME": "bigfive test",
                "GIT_COMMITTER_EMAIL": "test@bigfive.local"})
    return env


def make_project(dest: Path, params: dict) -> Path:
    """A fresh git + DVC repository holding this project's pipeline files and code."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    if (ROOT / "pipelines").exists():
        shutil.copytree(ROOT / "pipelines", dest / "pipelines")
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = clean_env()
    run = dict(cwd=dest, env=env, check=True, capture_output=True, text=True)
    subprocess.run(["git", "init", "-q"], **run)
    subprocess.run(["dvc", "init", "-q"], **run)
    subprocess.run(["dvc", "config", "core.analytics", "false"], **run)
    subprocess.run(["git", "add", "-A"], **run)
    subprocess.run(["git", "commit", "-qm", "project"], **run)
    return dest


def dvc(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=project, env=clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """Run `dvc repro` of the main pipeline once; return the project directory."""
    project = make_project(tmp_path_factory.mktemp("pipeline") / "project", tiny_params())
    dvc(project, "repro")
    return project


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
