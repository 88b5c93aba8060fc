"""MLflow tracking of training runs with a real sqlite store in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from synth_features import write_features

from bigfive import TRAITS
from bigfive.config import Params, replace
from bigfive.inference.loader import ModelLoadError, load_model_checkpoint
from bigfive.models import load_checkpoint, model_from_checkpoint
from bigfive.models.infer import predict_arrays
from bigfive.training import fit
from bigfive.training.data import load_split
from bigfive.training.loop import warm_start
from bigfive.training.pyfunc import load_predictor
from bigfive.training.registry import FINGERPRINT_TAG, NOT_PROMOTED_TAG, promote_champion
from bigfive.training.tracking import (
    absolute_sqlite,
    artifact_location,
    dvc_lock_hash,
    git_commit,
    params_for_mlflow,
)

NAME = "bigfive-test"
TINY = {"model.static_width": 8, "model.dynamic_width": 8, "model.embed_dim": 16, "model.heads": 2,
        "model.head_hidden": 16, "train.batch_size": 8, "train.warmup_epochs": 1, "train.lr": 3e-3,
        "train.epochs": 3, "tracking.registered_model": NAME, "tracking.experiment": "bigfive-test",
        "tracking.system_metrics_interval": 0.5}


def tiny_params(**overrides) -> Params:
    return replace(Params(), {**TINY, **overrides})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        yield root
    mlflow.set_tracking_uri(previous[0])  # fit points mlflow at the store; leave other tests as they were
    mlflow.set_registry_uri(previous[1])


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("features"), n=24, frames=4, size=32, channels=2)


@pytest.fixture(scope="module")
def run(store, features, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    return fit(tiny_params(), features_dir=features, output_dir=out, run_name="first", tags={"purpose": "test"})


def test_run_logs_params_metrics_tags_and_artifacts(run, store):
    client = MlflowClient()
    r = client.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert client.get_experiment(r.info.experiment_id).name == "bigfive-test"
    # artifacts land in mlruns/ beside the database, wherever the process runs from
    assert client.get_experiment(r.info.experiment_id).artifact_location == (store / "mlruns").as_uri()
    assert r.data.params["train.lr"] == "0.003" and r.data.params["model.heads"] == "2"
    assert r.data.params["evaluate.splits"] == '["val", "test"]'
    tags = r.data.tags
    assert tags["purpose"] == "test" and tags["mlflow.runName"] == "first"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)  # the test's cwd
    assert tags["git_commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    assert tags["features_hash_source"] == "fingerprint" and len(tags["features_hash"]) == 32
    for key in ("train_loss", "val_loss", "val_mean_accuracy", "val_acc_openness", "lr", "epoch_time_s",
                "data_wait_share"):
        steps = [m.step for m in client.get_metric_history(run.run_id, key)]
        assert steps == [1, 2, 3], key
    accs = [m.value for m in client.get_metric_history(run.run_id, "val_mean_accuracy")]
    assert accs == pytest.approx([h["val_mean_accuracy"] for h in run.history])
    files = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"training_analysis.md", "training_analysis.json", "history.json"} <= files
    local = mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="training_analysis.md")
    assert "Recommendations" in Path(local).read_text()
    info = json.loads((run.output_dir / "run.json").read_text())
    assert info["run_id"] == run.run_id and info["experiment"] == "bigfive-test"


def test_model_is_registered_and_becomes_champion(run):
    client = MlflowClient()
    assert run.model_version == "1" and run.champion_moved
    champ = client.get_model_version_by_alias(NAME, "champion")
    assert str(champ.version) == "1"
    assert float(champ.tags["val_mean_accuracy"]) == pytest.approx(run.best_val_mean_accuracy)
    info = json.loads((run.output_dir / "run.json").read_text())
    assert info["model_version"] == "1" and info["champion_moved"] and info["champion_version"] == "1"


def test_champion_moves_only_to_a_better_version(run):
    client = MlflowClient()
    source = client.get_model_version(NAME, "1").source
    same = client.get_model_version(NAME, "1").tags[FINGERPRINT_TAG]
    worse = client.create_model_version(NAME, source, run_id=run.run_id)
    moved, holder = promote_champion(NAME, worse.version, run.best_val_mean_accuracy - 0.01, fingerprint=same,
                                     client=client)
    assert not moved and holder == "1"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    equal = client.create_model_version(NAME, source, run_id=run.run_id)
    assert promote_champion(NAME, equal.version, run.best_val_mean_accuracy, fingerprint=same,
                            client=client) == (False, "1")
    better = client.create_model_version(NAME, source, run_id=run.run_id)
    moved, holder = promote_champion(NAME, better.version, run.best_val_mean_accuracy + 0.01, fingerprint=same,
                                     client=client)
    assert moved and holder == str(better.version)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == str(better.version)
    assert NOT_PROMOTED_TAG not in client.get_model_version(NAME, better.version).tags
    client.set_registered_model_alias(NAME, "champion", "1")  # leave v1 as champion for the other tests


def test_champion_guard_keeps_the_alias_on_other_features(run, store, tmp_path):
    """A better validation number on other data (here: other clips, and other T) never takes the alias."""
    client = MlflowClient()
    v1 = client.get_model_version(NAME, "1").tags
    assert v1[FINGERPRINT_TAG].startswith(run_features_hash(run)) and " T=4 S=32 flow=" in v1[FINGERPRINT_TAG]
    other = write_features(tmp_path / "other", n=24, frames=6, size=32, channels=2, seed=7)
    second = fit(tiny_params(), features_dir=other, output_dir=tmp_path / "models", run_name="other-data")
    assert second.model_version is not None and not second.champion_moved
    tags = client.get_model_version(NAME, second.model_version).tags
    assert tags[FINGERPRINT_TAG] != v1[FINGERPRINT_TAG] and " T=6 " in tags[FINGERPRINT_TAG]
    assert "trained on other features than @champion v1" in tags[NOT_PROMOTED_TAG]
    # the guard does not look at the numbers: even a perfect score on other data does not move the alias
    assert promote_champion(NAME, second.model_version, 1.0, fingerprint=tags[FINGERPRINT_TAG],
                            client=client) == (False, "1")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    info = json.loads((tmp_path / "models" / "run.json").read_text())
    assert info["champion_version"] == "1" and not info["champion_moved"]


def test_champion_guard_refuses_a_holder_without_fingerprint(run, store):
    """A holder registered before the guard has unknown data: the alias stays until a person moves it."""
    client = MlflowClient()
    source = client.get_model_version(NAME, "1").source
    legacy = client.create_model_version(NAME, source, run_id=run.run_id)
    client.set_registered_model_alias(NAME, "champion", legacy.version)  # no fingerprint tag on it
    try:
        newer = client.create_model_version(NAME, source, run_id=run.run_id)
        fp = client.get_model_version(NAME, "1").tags[FINGERPRINT_TAG]
        assert promote_champion(NAME, newer.version, 1.0, fingerprint=fp, client=client) == (False, str(legacy.version))
        assert "has no features_fingerprint tag" in client.get_model_version(NAME, newer.version).tags[NOT_PROMOTED_TAG]
    finally:
        client.set_registered_model_alias(NAME, "champion", "1")


def run_features_hash(run) -> str:
    return MlflowClient().get_run(run.run_id).data.tags["features_hash"]


def test_pyfunc_predicts_like_the_checkpoint(run, features):
    val = load_split(features, "val")
    static, dynamic = np.array(val.static[:5]), np.array(val.dynamic[:5])
    ckpt = load_checkpoint(run.best_checkpoint)
    expected = predict_arrays(model_from_checkpoint(ckpt).eval(), static, dynamic, torch.device("cpu"))

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict({"static": static, "dynamic": dynamic})
    assert list(out.columns) == list(TRAITS)
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=0, atol=1e-6)
    # the REST server's DataFrame form: one clip of nested lists per row
    frame = pd.DataFrame({"static": [c.tolist() for c in static], "dynamic": [c.tolist() for c in dynamic]})
    np.testing.assert_allclose(model.unwrap_python_model().predict(None, frame).to_numpy(), expected, atol=1e-6)

    for source in (f"models:/{NAME}@champion", str(run.best_checkpoint)):
        predictor = load_predictor(source)
        np.testing.assert_allclose(predictor.predict(static, dynamic), expected, atol=1e-6)
        assert predictor.labels == list(TRAITS) and predictor.preprocess["crop_size"] == 32

    meta = json.loads((features / "meta.json").read_text())
    assert load_model_checkpoint(f"models:/{NAME}@champion")["preprocess"] == meta
    with pytest.raises(ModelLoadError, match=f"models:/{NAME}@nobody: cannot load this MLflow model"):
        load_model_checkpoint(f"models:/{NAME}@nobody")
    with pytest.raises(ValueError, match="'dynamic'"):
        model.unwrap_python_model().predict(None, {"static": static})


def test_warm_start_from_a_registered_model(run):
    ckpt = load_checkpoint(run.best_checkpoint)
    from bigfive.models import build_model

    net = build_model(tiny_params().model, 4, 2)
    report = warm_start(net, f"models:/{NAME}@champion")
    assert report["loaded"] == len(ckpt["model"]) and report["skipped"] == 0
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in net.state_dict().items())


def test_pruned_nested_run_is_killed_and_the_parent_goes_on(store, features, tmp_path):
    import optuna

    def prune(epoch, metrics):
        assert "val_mean_accuracy" in metrics
        raise optuna.TrialPruned()

    mlflow.set_tracking_uri(absolute_sqlite(f"sqlite:///{store}/mlflow.db"))
    with mlflow.start_run(experiment_id=mlflow.set_experiment("bigfive-test").experiment_id) as parent:
        with pytest.raises(optuna.TrialPruned):
            fit(tiny_params(), features_dir=features, output_dir=tmp_path, nested=True, register=False,
                on_epoch=prune, run_name="trial-0")
        assert mlflow.active_run().info.run_id == parent.info.run_id
    client = MlflowClient()
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 1
    child = children[0]
    assert child.info.status == "KILLED" and child.info.run_name == "trial-0"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_mean_accuracy")] == [1]
    assert (tmp_path / "last.pt").is_file()  # written before on_epoch ran


def test_helpers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert absolute_sqlite("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_sqlite("http://host:5000") == "http://host:5000"
    assert artifact_location("sqlite:////abs/x.db") == "file:///abs/mlruns"
    assert artifact_location("http://host:5000") is None
    (tmp_path / "data" / "features").mkdir(parents=True)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  features:\n    cmd: bigfive features\n    outs:\n"
        "    - path: data/features\n      hash: md5\n      md5: 0123abcd.dir\n      size: 10\n      nfiles: 3\n")
    assert dvc_lock_hash("data/features") == "0123abcd.dir"
    assert dvc_lock_hash(tmp_path / "data" / "features") == "0123abcd.dir"
    assert dvc_lock_hash("data/other") is None
    values = params_for_mlflow(tiny_params(**{"ablation.seeds": list(range(3000)),
                                               "ablation.reuse_selection_seeds": True}))
    assert all(len(v) <= 6000 for v in values.values()) and values["ablation.seeds"].endswith("...")


def test_second_configure_with_other_params_uses_its_own_store(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; our own earlier choice must not win later."""
    from bigfive.config import TrackingConfig
    from bigfive.training import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = tracking.configure(TrackingConfig(uri=f"sqlite:///{tmp_path / 'a.db'}"))
    second = tracking.configure(TrackingConfig(uri=f"sqlite:///{tmp_path / 'b.db'}"))
    assert first.endswith("a.db") and second.endswith("b.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'user.db'}")  # the user's choice wins
    assert tracking.configure(TrackingConfig(uri=f"sqlite:///{tmp_path / 'b.db'}")).endswith("user.db")


def test_git_commit_is_head_or_unknown_outside_git(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for cmd in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "one"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert len(head.stdout.strip()) == 40 and git_commit(tmp_path) == head.stdout.strip()
