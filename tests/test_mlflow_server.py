"""A real `mlflow server` over the ablation's tracking store: the runs and their metrics are served
through the REST API researchers' tools (and the UI) use."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import HANG_S, clean_env, serve
from test_ablation import TINY_SEEDS, TINY_VARIANTS, ablation_project

# Only bounds on a server that hangs (conftest.HANG_S): the first request after /health opens the
# tracking store (SQLAlchemy, schema check), which can take many seconds on a loaded 2-core machine.
STARTUP_S = REQUEST_S = HANG_S


@pytest.fixture(scope="module")
def ablated(tiny_pipeline, tmp_path_factory) -> Path:
    return ablation_project(tiny_pipeline, tmp_path_factory.getbasetemp())


def _get(url: str, timeout: float = REQUEST_S) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, body: dict, timeout: float = REQUEST_S) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture
def server(ablated, tmp_path):
    db = ablated / "mlflow.db"
    assert db.is_file(), "the ablation wrote no MLflow store"

    def command(port: int) -> list[str]:
        return ["mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1"]

    with serve(command, "/health", tmp_path / "server.log", env=clean_env(), cwd=tmp_path,
               startup_s=STARTUP_S) as (base, proc):
        yield base
    assert proc.returncode is not None, "mlflow server still running"


def test_server_lists_ablation_runs_with_metrics(server, ablated):
    exp = _get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=bigfive-ablation")["experiment"]
    found = _post(f"{server}/api/2.0/mlflow/runs/search",
                  {"experiment_ids": [exp["experiment_id"]], "max_results": 100,
                   "filter": "attributes.status = 'FINISHED'"})
    runs = found.get("runs", [])
    by_key = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        by_key[(tags.get("variant"), tags.get("seed"))] = (metrics, params, run["info"]["run_id"])
    want = {(v, str(s)) for v in TINY_VARIANTS for s in TINY_SEEDS}
    assert want <= set(by_key), f"runs served: {sorted(by_key)}"
    for (variant, seed), (metrics, params, run_id) in by_key.items():
        if (variant, seed) not in want:
            continue
        record = json.loads((ablated / "results" / "ablation" / "runs" / variant / f"seed{seed}" / "metrics.json")
                            .read_text())
        assert record["run_id"] == run_id
        # the served metric is the evaluation the run folder holds, not a training-time estimate
        assert metrics["test_mean_accuracy"] == pytest.approx(record["test"]["mean_accuracy"], abs=1e-9)
        assert metrics["test_agreeableness_accuracy"] == pytest.approx(
            record["test"]["traits"]["agreeableness"]["accuracy"], abs=1e-9)
        assert "val_mean_accuracy" in metrics
        assert params["model.fusion"] == ("concat" if variant == "concat" else "cross_attention")
        assert params["train.seed"] == seed
