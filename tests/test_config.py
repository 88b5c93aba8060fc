"""params.yaml loads into typed config; bad values fail at start with the key path and reason."""

from pathlib import Path

import pytest
import yaml

from bigfive.config import ConfigError, Params, load_params, replace, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_load():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.model.embed_dim % params.model.heads == 0


def test_round_trip_through_dict():
    params = load_params(ROOT / "params.yaml")
    assert replace(params, {}) == params
    assert to_dict(params)["model"]["fusion"] == params.model.fusion


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"model.heads": 3}, "model.heads", "do not divide model.embed_dim=64"),
        ({"train.lr": -0.1}, "train.lr", "must be > 0"),
        ({"evaluate.splits": ["val", "dev"]}, "evaluate.splits[1]", "'dev' is not one of"),
        ({"model.fusion": "attention"}, "model.fusion", "is not one of"),
        ({"train.lrr": 0.1}, "train.lrr", "unknown key"),
        ({"train.epochs": "ten"}, "train.epochs", "expected an integer"),
        ({"train.hflip": 1.5}, "train.hflip", "must be in [0, 1]"),
        ({"data.split": "random"}, "data.split", "is not one of"),
        ({"model.outputs": 6}, "model.outputs", "predict_interview"),
        ({"preprocess.flow.bound": 0}, "preprocess.flow.bound", "must be > 0"),
    ],
)
def test_bad_values_name_key_and_reason(overrides, key, reason):
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ConfigError) as info:
        replace(params, overrides)
    assert info.value.key == key
    assert reason in info.value.reason


def test_load_params_names_file(tmp_path):
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["model"]["heads"] = 5
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model\.heads: .*in .*params\.yaml"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
