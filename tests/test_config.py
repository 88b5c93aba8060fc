"""params.yaml loads into typed config; bad values fail at start with the key path and reason."""

import shutil
from pathlib import Path

import pytest
import yaml

from bigfive.config import ConfigError, Params, flatten, load_params, replace, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_dataclass_defaults_are_the_values_in_params_yaml():
    """A config built in Python is the documented one: every default equals params.yaml's value."""
    in_file = flatten(to_dict(load_params(ROOT / "params.yaml")))
    built = flatten(to_dict(Params()))
    assert set(built) == set(in_file)
    differ = {key: (built[key], in_file[key]) for key in built if built[key] != in_file[key]}
    assert not differ, differ


def test_direct_train_entry_outside_the_repository_gets_the_documented_config(tmp_path, monkeypatch):
    """`bigfive train --static-features ...` where no params.yaml exists trains the model params.yaml describes."""
    from bigfive.cli import build_parser
    from bigfive.training.train import resolve_params

    monkeypatch.chdir(tmp_path)
    args = build_parser("train").parse_args(["train", "--static-features", "s.npy", "--dynamic-features", "d.npy",
                                             "--labels", "l.npy"])
    assert not (tmp_path / args.params).exists()
    direct = resolve_params(args, direct=True)
    documented = load_params(ROOT / "params.yaml")
    assert direct.model == documented.model
    assert direct.train == documented.train and direct.preprocess == documented.preprocess


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


# --------------------------------------------------------------------------------------------- hostile files


def _write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e999", "9" * 400])
def test_non_finite_numbers_are_refused(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_params(_write(tmp_path, f"train:\n  lr: {value}\n"))
    assert info.value.key == "train.lr"
    assert "finite" in info.value.reason or "NaN" in info.value.reason


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    with pytest.raises(ConfigError, match=r"duplicate key 'lr' \(first on line 2\).*\(line 4, column 3\)"):
        load_params(_write(tmp_path, "train:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n"))
    # merge keys may still be overridden explicitly
    text = "base: &b {lr: 0.1, epochs: 3}\n"
    data = yaml.safe_load(text)
    assert data == {"base": {"lr": 0.1, "epochs": 3}}
    from bigfive.config.base import load_yaml

    assert load_yaml(_write(tmp_path, text + "train:\n  <<: *b\n  lr: 0.5\n"))["train"] == {"lr": 0.5, "epochs": 3}


def test_alias_bomb_is_refused_quickly_in_bounded_memory(tmp_path):
    import tracemalloc

    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = _write(tmp_path, "\n".join(lines) + "\nseed: *a8\n")  # ~450 bytes, 10**9 strings expanded
    assert path.stat().st_size < 500
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"aliases expand to more than 10000 extra nodes") as info:
            load_params(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak >> 20} MB"
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(ConfigError, match="nested deeper|expand"):  # a recursive alias
        load_params(_write(tmp_path, "seed: &r [*r]\n"))


def test_messages_never_expand_or_print_control_characters(tmp_path):
    # a value under the alias budget but long when printed whole
    text = 'train:\n  lr: [&b ["' + 'y' * 5000 + '", "' + 'z' * 5000 + '"], *b, *b, *b, *b]\n'
    with pytest.raises(ConfigError, match="expected a number, got ") as info:
        load_params(_write(tmp_path, text))
    assert len(str(info.value)) < 400 and info.value.key == "train.lr"
    with pytest.raises(ConfigError) as info:
        load_params(_write(tmp_path, 'train:\n  "lr\\x1b[2J\\nforged": 1\n'))
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value) and "\\x1b[2J\\nforged" in str(info.value)
    with pytest.raises(ConfigError, match=r"not valid YAML: .*\(line \d+, column \d+\)$"):
        load_params(_write(tmp_path, "train: [1,\n  2\n"))


def test_tune_apply_refuses_a_duplicated_key_naming_the_file(tmp_path, capsys):
    """`bigfive tune --apply` reads the best-params file like `--params`: a second `lr` is an error, not 0.5."""
    from bigfive.cli import main

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = params.read_text()
    best = tmp_path / "best_params.yaml"

    def refused(content: bytes) -> str:
        best.write_bytes(content)
        assert main(["tune", "--params", str(params), "--apply", str(best)]) != 0
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"bigfive tune: config error: {best}: "), err[:500]
        return err

    assert "duplicate key 'lr'" in refused(b"train:\n  lr: 0.002\n  lr: 0.5\n")
    assert "duplicate key 'train'" in refused(b"train:\n  lr: 0.002\ntrain:\n  lr: 0.5\n")
    assert "not valid YAML" in refused(b"train:\n  lr: \xff\n")
    assert "not valid YAML" in refused(b"train:\n  lr: " + b"1" * 5000 + b"\n")
    assert "nested too deeply" in refused(b"train: " + b"[" * 5000 + b"\n")
    assert "larger than 1024 KB" in refused(b"train:\n  lr: 0.001\n" + b"#" * (2 << 20) + b"\n")
    assert params.read_text() == before
