"""The whole main pipeline, end to end: real `dvc repro` in a fresh git repository on a tiny sample,
checked through its outputs and through the MLflow client (runs, metrics, registry, alias, model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import dvc

from bigfive import ALL_LABELS, TRAITS

pytestmark = pytest.mark.slow


def test_stages_write_their_outputs(tiny_pipeline):
    project = tiny_pipeline
    manifest = pd.read_csv(project / "data/raw/manifest.csv", dtype={"video_id": str})
    assert set(manifest["split"]) == {"train", "val", "test"}
    for row in manifest.itertuples():
        assert (project / "data/raw" / row.path).is_file()

    meta = json.loads((project / "data/features/meta.json").read_text())
    assert meta["labels"] == list(ALL_LABELS)
    for split in ("train", "val", "test"):
        static = np.load(project / f"data/features/{split}/static_features.npy", mmap_mode="r")
        dynamic = np.load(project / f"data/features/{split}/dynamic_features.npy", mmap_mode="r")
        labels = np.load(project / f"data/features/{split}/labels.npy")
        ids = (project / f"data/features/{split}/clip_ids.txt").read_text().split()
        assert static.dtype == np.uint8 and dynamic.dtype == np.uint8 and labels.dtype == np.float32
        assert static.shape[1:] == (4, 3, 32, 32)
        assert dynamic.shape[:2] == static.shape[:2] and dynamic.shape[2] == meta["channels"]
        assert len(ids) == static.shape[0] == labels.shape[0] > 0

    assert (project / "models/best.pt").is_file() and (project / "models/last.pt").is_file()
    metrics = json.loads((project / "results/metrics.json").read_text())
    for key in ("mean_accuracy", "baseline_mean_accuracy", "pcc", "ccc", "noise_floor_mean_accuracy"):
        assert key in metrics
    assert set(TRAITS) <= set(metrics["traits"])
    # the summary is the traits' mean, and the traits' accuracies are 1 - MAE of the predictions written beside it
    assert metrics["mean_accuracy"] == pytest.approx(np.mean([metrics["traits"][t]["accuracy"] for t in TRAITS]))
    preds = pd.read_csv(project / "results/predictions_test.csv", dtype={"video_id": str})
    assert len(preds) == metrics["n"]
    for t in TRAITS:  # the csv has 6 decimals
        mae = np.mean(np.abs(preds[f"{t}_pred"] - preds[f"{t}_true"]))
        assert metrics["traits"][t]["accuracy"] == pytest.approx(1 - mae, abs=1e-5), t
    assert any((project / "results/plots").glob("*.png"))


def test_dvc_lock_is_complete_and_up_to_date(tiny_pipeline):
    lock = (tiny_pipeline / "dvc.lock").read_text()
    for stage in ("raw", "faces", "flow", "features", "train", "evaluate"):
        assert f"  {stage}:" in lock
    status = dvc(tiny_pipeline, "status", "dvc.yaml")  # the main pipeline (ablations are not run here)
    assert "changed" not in status.stdout, status.stdout


def test_mlflow_run_registry_and_model(tiny_pipeline, monkeypatch):
    import os

    import mlflow
    from mlflow.tracking import MlflowClient

    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:  # e.g. left by an in-process fit
        monkeypatch.delenv(key)
    monkeypatch.chdir(tiny_pipeline)
    uri = f"sqlite:///{tiny_pipeline / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # the registry too: an earlier test may have pointed it elsewhere
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("bigfive")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs, "no MLflow run was logged"
    run = runs[0]
    assert "val_mean_accuracy" in run.data.metrics
    assert "test_mean_accuracy" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "val_mean_accuracy")
    assert len(history) == 3  # one per epoch
    assert run.data.params["model.fusion"] == "cross_attention"

    version = client.get_model_version_by_alias("bigfive-xattn", "champion")
    assert version.run_id == run.info.run_id
    model = mlflow.pyfunc.load_model("models:/bigfive-xattn@champion")
    static = np.load(tiny_pipeline / "data/features/test/static_features.npy")[:2]
    dynamic = np.load(tiny_pipeline / "data/features/test/dynamic_features.npy")[:2]
    out = model.predict({"static": static, "dynamic": dynamic})
    values = np.asarray(pd.DataFrame(out)[list(TRAITS)], dtype=float)
    assert values.shape == (2, 5)
    # the registered model predicts what the evaluate stage wrote for the same clips (csv: 6 decimals)
    ids = (tiny_pipeline / "data/features/test/clip_ids.txt").read_text().split()[:2]
    preds = pd.read_csv(tiny_pipeline / "results/predictions_test.csv", dtype={"video_id": str}).set_index("video_id")
    expected = preds.loc[ids, [f"{t}_pred" for t in TRAITS]].to_numpy(dtype=float)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])
