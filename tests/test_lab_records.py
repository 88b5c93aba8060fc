"""What the MLflow UI shows first, on a local sqlite store (the servers' version is tests/test_lab_tracking.py):
training-kind experiments with descriptions, descriptive run names, the features as a dataset input."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from synth_features import write_features

from bigfive.config import Params, replace
from bigfive.training import fit
from bigfive.training.tracking import (
    KIND_TAG,
    NOTE_TAG,
    TRAINING_KIND,
    default_run_name,
    experiment_description,
    experiment_id,
    features_hash,
    ui_url,
)

TINY = {"model.static_width": 8, "model.dynamic_width": 8, "model.embed_dim": 16, "model.heads": 2,
        "model.head_hidden": 16, "train.batch_size": 8, "train.warmup_epochs": 0, "train.epochs": 1,
        "train.seed": 3, "model.direction": "static_to_dynamic", "tracking.system_metrics": False}


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
    mlflow.set_tracking_uri(previous[0])  # fit points mlflow at the store; leave other tests as they were
    mlflow.set_registry_uri(previous[1])


def test_a_training_run_is_named_described_and_has_its_dataset(store, tmp_path):
    features = write_features(tmp_path / "features", n=8, frames=4, size=32, splits=("train", "val", "test"))
    params = replace(Params(), TINY)
    result = fit(params, features_dir=features, output_dir=tmp_path / "out", register=False)
    client = MlflowClient(store)
    run = client.get_run(result.run_id)
    assert run.info.run_name == "train-cross_attention-static_to_dynamic-seed3"
    assert "cross_attention fusion (static_to_dynamic" in run.data.tags[NOTE_TAG]
    (dataset_input,) = run.inputs.dataset_inputs
    digest, source = features_hash(features, sorted(features.rglob("*.npy")), json.loads(
        (features / "meta.json").read_text()))
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == ("sample-features", run.data.tags[
        "features_hash"])
    assert run.data.tags["features_hash_source"] == source == "fingerprint" and len(digest) == 32
    assert json.loads(dataset_input.dataset.profile) == {"train": 8, "val": 8, "test": 8}
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "bigfive" and exp.tags[KIND_TAG] == TRAINING_KIND
    assert exp.tags[NOTE_TAG] == experiment_description("bigfive", params)


def test_existing_experiments_are_marked_but_hand_set_tags_kept(store):
    client = MlflowClient(store)
    old = client.create_experiment("bigfive-tune")  # a store from before the tags
    mine = client.create_experiment("bigfive-ablation", tags={KIND_TAG: "finetuning", NOTE_TAG: "my notes"})
    params = Params()
    for name in ("bigfive-tune", "bigfive-ablation"):
        experiment_id(name, store, experiment_description(name, params))
    assert client.get_experiment(old).tags[KIND_TAG] == TRAINING_KIND
    assert "Optuna" in client.get_experiment(old).tags[NOTE_TAG]
    assert client.get_experiment(mine).tags == {KIND_TAG: "finetuning", NOTE_TAG: "my notes"}
    assert experiment_description("someone-elses", params) is None


def test_run_names_and_links():
    params = replace(Params(), {"model.fusion": "concat", "train.seed": 2})
    assert default_run_name(params) == "train-concat-seed2"  # a pooled fusion has no direction
    assert default_run_name(replace(params, {"model.fusion": "framewise", "model.direction": "dynamic_to_static"})) \
        == "train-framewise-dynamic_to_static-seed2"
    assert ui_url("sqlite:///mlflow.db", "1") is None
    assert ui_url("http://lab-host:5000/", "7") == "http://lab-host:5000/#/experiments/7/runs?workflowType=machine_learning"
