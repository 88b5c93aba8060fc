"""The data remote (README "Working as a team"): `dvc push` the tiny pipeline's data and models to a
local-directory remote and to an S3-compatible endpoint (moto on 127.0.0.1), then a fresh `git clone`
gets everything back with `dvc pull`: `dvc status` is clean and `dvc repro` runs no stage.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, clean_env
from lab_services import S3_KEYS, s3_endpoint, s3_keys

BUCKET = "lab-dvc"
# Every cached output of the main pipeline: what a colleague should not have to recompute.
SHARED = ("data/raw", "data/faces", "data/flow", "data/features", "models")
# The main pipeline is the target: the copied pipelines/*/dvc.lock files describe the repository's own
# ablation and tuning outputs, which the tiny project never produced.
MAIN = "dvc.yaml"


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(list(args), cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                            timeout=HANG_S)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_endpoint(tmp_path_factory.mktemp("dvc-s3") / "s3.log", (BUCKET,)) as url:
        yield url


@pytest.fixture(scope="module")
def origin(tiny_pipeline, tmp_path_factory) -> Path:
    """The tiny pipeline's repository with its results committed, as a researcher's checkout would be."""
    project = tmp_path_factory.mktemp("dvc-origin") / "project"
    shutil.copytree(tiny_pipeline, project, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns"))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "pipeline outputs")
    return project


def add_remote(project: Path, name: str, url: str, **options: str) -> None:
    """`dvc remote add` (+ `dvc remote modify`), committed: every clone gets the remote's definition."""
    run(project, "dvc", "remote", "add", name, url)
    for key, value in options.items():
        run(project, "dvc", "remote", "modify", name, key, value)
    run(project, "git", "commit", "-qam", f"DVC remote {name}")


def out_hashes(project: Path) -> dict[str, str]:
    """path -> md5 of every output in the main pipeline's dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def pull_into_clone(origin: Path, dest: Path, remote: str, env: dict[str, str]) -> Path:
    run(dest.parent, "git", "clone", "-q", str(origin), dest.name)
    assert not [path for path in SHARED if (dest / path).exists()]  # git holds none of it
    run(dest, "dvc", "pull", "-r", remote, MAIN, env=env)
    return dest


def assert_restored(clone: Path, env: dict[str, str]) -> None:
    """Everything is back, DVC sees nothing changed and `dvc repro` has nothing to run."""
    for path in SHARED:
        assert any((clone / path).rglob("*")), f"{path} not pulled"
    assert (clone / "models" / "best.pt").is_file()
    status = run(clone, "dvc", "status", MAIN, env=env)
    assert "Data and pipelines are up to date" in status, status
    repro = run(clone, "dvc", "repro", MAIN, env=env)
    assert "Running stage" not in repro, repro
    assert "Data and pipelines are up to date" in repro, repro


def test_local_directory_remote(origin, tmp_path):
    add_remote(origin, "shared", str(tmp_path / "remote"))
    pushed = run(origin, "dvc", "push", "-r", "shared", MAIN)
    assert "pushed" in pushed, pushed
    assert any((tmp_path / "remote" / "files" / "md5").rglob("*")), "nothing in the remote"
    clone = pull_into_clone(origin, tmp_path / "clone", "shared", clean_env())
    assert out_hashes(clone) == out_hashes(origin)
    assert_restored(clone, clean_env())


def test_s3_remote(origin, s3, tmp_path):
    env = {**clean_env(), **S3_KEYS}  # credentials come from the environment, never from .dvc/config
    add_remote(origin, "s3", f"s3://{BUCKET}/bigfive", endpointurl=s3)
    run(origin, "dvc", "push", "-r", "s3", MAIN, env=env)
    keys = s3_keys(s3, BUCKET, "bigfive/files/md5/")
    hashes = out_hashes(origin)
    for path in SHARED:  # (metrics and plots are `cache: false`: git carries them, not the remote)
        md5 = hashes[path]
        key = f"bigfive/files/md5/{md5[:2]}/{md5[2:]}"
        assert key in keys, f"{path} ({md5}) not in the bucket"
    assert "testing" not in (origin / ".dvc" / "config").read_text()
    clone = pull_into_clone(origin, tmp_path / "clone", "s3", env)
    assert_restored(clone, env)
