"""Which ablation runs are done comes from the shared MLflow store, not from one machine's folders: a second
machine given `bigfive ablate --all --jobs N` runs nothing that the first completed (bigfive.ablation.ledger)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import HANG_S, ROOT, clean_env, tiny_params
from synth_features import write_features

from bigfive.ablation.ledger import COMPLETE_TAG, KEY_TAG
from bigfive.config import load_params


def _ablate(cwd: Path, env: dict[str, str], params: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bigfive", "ablate", "--all", "--params", str(params), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_a_second_machine_runs_nothing_the_shared_store_has_complete(tmp_path, monkeypatch):
    features = write_features(tmp_path / "features", n=16, splits=("train", "val", "test"))
    params = tiny_params({
        "preprocess": {"features_dir": str(features)},
        "tracking": {"system_metrics": False},
        "ablation": {"epochs": 1, "seeds": [0, 1], "reuse_selection_seeds": True,
                     "reference": "concat", "flow": {"variant": "concat"}},
    })
    params["ablation"]["variants"] = {"concat": {"model.fusion": "concat"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    uri = f"sqlite:///{tmp_path}/shared.db"  # the team's server in real life; one store both "machines" see
    env = {**clean_env(), "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT / "src")}
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    assert "2 of 2 ablation runs to do" in _ablate(first, env, path)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("bigfive-ablation").experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs if r.data.tags.get(COMPLETE_TAG) == "true") == ["0", "1"]
    assert {"metrics.json", "predictions_test.csv", "abs_errors_test.npy"} == \
        {Path(a.path).name for a in client.list_artifacts(runs[0].info.run_id, "ablation")}

    # the second machine has no run folders, and runs nothing
    assert "0 of 2 ablation runs to do" in _ablate(second, env, path)
    assert not (second / "results").exists()
    # other settings are other runs: with 2 epochs both are pending again
    monkeypatch.chdir(second)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from bigfive.ablation.parallel import pending_runs

    assert len(pending_runs(load_params(path))) == 0
    assert [s.seed for s in pending_runs(load_params(path), epochs=2)] == [0, 1]
    assert len({r.data.tags[KEY_TAG] for r in runs}) == 2
