"""The lab's three services, real and on 127.0.0.1, for tests/test_lab_*.py (README "Working as a team"):

- a PostgreSQL 15 cluster (``initdb`` + ``postgres``) in a temporary directory: the MLflow backend store
  and the Optuna study;
- an S3-compatible endpoint (``moto_server``): MLflow's artifact store and a DVC remote;
- ``mlflow server`` over both, proxying artifacts (``--artifacts-destination``).

Each context manager picks a free port, waits until the service answers, and stops it by PID when the
block ends, also when the block raises.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import HANG_S, PORT_TAKEN, clean_env, free_port, listens_on, serve, stop_server

PG_USER = "bigfive"  # the cluster's superuser; trust auth, and the cluster only listens on 127.0.0.1
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# ---------------------------------------------------------------------------------------- PostgreSQL
def cluster_owner() -> pwd.struct_passwd | None:
    """The account that runs the cluster: ``initdb`` and ``postgres`` refuse to run as root (CI and this
    machine run tests as root), so root hands them to ``postgres`` (Debian's package creates it) or
    ``nobody``; any other user runs them itself (None)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise AssertionError("running as root and neither a `postgres` nor a `nobody` account exists to run PostgreSQL")


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else from Debian's versioned directory (the package leaves it off PATH)."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        raise AssertionError(f"{name} not found: install PostgreSQL 15 (Debian: apt-get install postgresql-15)")
    return str(found)


def _as_owner(owner: pwd.struct_passwd | None) -> dict:
    """Popen arguments that run the child as ``owner``, with a HOME it can read."""
    if owner is None:
        return {"env": clean_env()}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [],
            "env": {**clean_env(), "HOME": "/tmp", "USER": owner.pw_name, "LOGNAME": owner.pw_name}}


def _pg_ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", connect_timeout=10):
            return True
    except psycopg.OperationalError:
        return False


def _stop_postgres(proc: subprocess.Popen) -> None:
    """SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave); then the group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    stop_server(proc)


def _start_postgres(data: Path, log: Path, owner, tries: int = 3) -> tuple[int, subprocess.Popen]:
    """``postgres`` on a free port of 127.0.0.1 (no Unix socket); a port taken meanwhile is retried."""
    for _ in range(tries):
        port = free_port()
        with log.open("w") as out:
            proc = subprocess.Popen([pg_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                                     "-c", "unix_socket_directories=", "-c", "fsync=off"],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **_as_owner(owner))
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if listens_on(proc, port) and _pg_ready(port):
                return port, proc
            time.sleep(0.5)
        _stop_postgres(proc)
        text = log.read_text()
        if not any(s in text.lower() for s in PORT_TAKEN):
            raise AssertionError(f"postgres did not start (exit {proc.returncode}):\n{text[-3000:]}")
    raise AssertionError(f"the ports were taken {tries} times in a row:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def postgres(log: Path, databases: tuple[str, ...] = ("mlflow", "optuna")) -> Iterator[str]:
    """A fresh cluster with ``databases``; yields the server's URL, ``postgresql+psycopg://bigfive@127.0.0.1:PORT``."""
    import psycopg

    owner = cluster_owner()
    # its own directory under /tmp: pytest's are private to root, and the cluster's owner must reach its data
    base = Path(tempfile.mkdtemp(prefix="bigfive-pg-"))
    try:
        if owner is not None:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        data = base / "data"
        init = subprocess.run([pg_bin("initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                               "--locale=C", "--no-sync"], capture_output=True, text=True, timeout=HANG_S,
                              **_as_owner(owner))
        if init.returncode != 0:
            raise AssertionError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        port, proc = _start_postgres(data, log, owner)
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres",
                                 autocommit=True) as conn:
                for name in databases:
                    conn.execute(f"CREATE DATABASE {name}")
            yield f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}"
        finally:
            _stop_postgres(proc)
            assert proc.returncode is not None, "postgres still running"
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- S3
def s3_env(endpoint: str) -> dict[str, str]:
    """Client settings for the endpoint: test keys, and where MLflow's S3 artifact client connects."""
    return {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": endpoint}


@contextlib.contextmanager
def s3_endpoint(log: Path, buckets: tuple[str, ...]) -> Iterator[str]:
    """moto in server mode on 127.0.0.1 with ``buckets`` created; yields its URL."""
    import boto3

    def command(port: int) -> list[str]:
        return ["moto_server", "-H", "127.0.0.1", "-p", str(port)]

    with serve(command, "/moto-api/", log, env={**clean_env(), **S3_KEYS}) as (url, _proc):
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                              region_name="us-east-1")
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield url


def s3_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under ``prefix`` in ``bucket``."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


# ------------------------------------------------------------------------------------------- MLflow
@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: str, log: Path, env: dict[str, str]) -> Iterator[str]:
    """``mlflow server`` with ``backend`` as store and proxied artifacts in ``artifacts``; yields its URL."""

    def command(port: int) -> list[str]:
        return ["mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination", artifacts,
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]

    # no GenAI job runner (three processes, fifteen threads): nothing here schedules judges or scorers
    env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with serve(command, "/health", log, env=env, cwd=log.parent) as (url, proc):
        yield url
    assert proc.returncode is not None, "mlflow server still running"
