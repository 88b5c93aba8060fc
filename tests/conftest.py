"""Shared fixtures. `tiny_pipeline` runs the real main DVC pipeline once per test session on a tiny
sample in a temporary git repository; end-to-end, notebook, ablation and server tests reuse it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The bound on a subprocess, server or request that hangs -- never an expectation of speed: a test must
# not fail because the machine is busy (a 2-core box running other work can be 10x slower or more).
# Generous by default; BIGFIVE_TEST_HANG_S overrides it (e.g. lower in CI, to fail a hang sooner).
HANG_S = float(os.environ.get("BIGFIVE_TEST_HANG_S", "3600"))

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


def dvc(project: Path, *args: str, timeout: float = HANG_S) -> subprocess.CompletedProcess:
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


# ------------------------------------------------------------------------------------------- servers
# What a server prints when the port it was given is taken (uvicorn, gunicorn, wsgiref, werkzeug).
PORT_TAKEN = ("address already in use", "errno 98", "connection in use")


def listens_on(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` or one of its children holds a listening TCP socket on ``port``."""
    import psutil

    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for p in family:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in p.net_connections(kind="tcp")):
                return True
        except psutil.Error:
            continue
    return False


def stop_server(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers; the process is reaped either way."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve(command: Callable[[int], list[str]], ready_path: str, log: Path, *, env: dict[str, str] | None = None,
          cwd: Path | None = None, startup_s: float = HANG_S, tries: int = 3) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``command(port)`` (a server) until the block ends; yields its base URL and process once it is up.

    Up means: this process (or a child) listens on the port *and* ``GET ready_path`` answers 200, so the
    test never talks to another program that happens to hold the port. ``free_port`` can only say that a
    port was free a moment ago; when another process binds it first, the server exits saying so, and it
    is started again on a new port instead of failing the test. ``startup_s`` only bounds a server that
    hangs; the time it takes to start is not asserted.
    """
    for _ in range(tries):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("w") as out:
            proc = subprocess.Popen(command(port), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            if _wait_until_up(proc, port, base + ready_path, log, startup_s):
                yield base, proc
                return
        finally:
            stop_server(proc)
    raise AssertionError(f"the ports were taken {tries} times in a row:\n{log.read_text()[-3000:]}")


def _wait_until_up(proc: subprocess.Popen, port: int, url: str, log: Path, startup_s: float) -> bool:
    """True once the server is up; False when it exited because the port was taken; AssertionError otherwise."""
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text()
            if any(s in text.lower() for s in PORT_TAKEN):
                return False
            raise AssertionError(f"{proc.args[0]} exited with {proc.returncode}:\n{text[-3000:]}")
        if listens_on(proc, port):
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.5)
    raise AssertionError(f"{proc.args[0]} did not come up within {startup_s:.0f} s:\n{log.read_text()[-3000:]}")


# ------------------------------------------------------------------------------------------- browser
CHROMIUM = os.environ.get("BIGFIVE_CHROMIUM", "/usr/bin/chromium")  # Debian's package; `.ci/run` installs it
# The flags keep a headless Chromium on this closed network quiet: no sandbox (tests run as root), no
# update checks or background connections (they fail, many at a time, and slow every page down).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium driven by Playwright (nothing downloads a browser); closed at the end."""
    if not Path(CHROMIUM).is_file():
        raise AssertionError(f"{CHROMIUM} not found: install Debian's `chromium` package (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
