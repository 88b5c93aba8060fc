"""Typed ``params.yaml``: :func:`load_params` returns a validated :class:`Params`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigfive.config.ablation import AblationConfig
from bigfive.config.base import ConfigError, flatten, from_dict, load_yaml, to_dict
from bigfive.config.data import DataConfig, SampleConfig
from bigfive.config.launcher import LauncherConfig, SlurmConfig
from bigfive.config.model import ModelConfig
from bigfive.config.preprocess import FlowConfig, PreprocessConfig
from bigfive.config.train import EvaluateConfig, TrackingConfig, TrainConfig
from bigfive.config.tune import SearchParam, TuneConfig


@dataclass(frozen=True)
class Params:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)

    def validate(self, path: str) -> None:
        want = 6 if self.data.predict_interview else 5
        if self.model.outputs != want:
            raise ConfigError("model.outputs", f"is {self.model.outputs} but data.predict_interview="
                              f"{self.data.predict_interview} needs {want}")


DEFAULT_PARAMS = Path("params.yaml")


def params_from_dict(data: dict[str, Any]) -> Params:
    return from_dict(Params, data)


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate ``params.yaml``; ``overrides`` maps dotted keys to values."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: params file not found (run from the repository root or pass --params)")
    # Size-capped, no duplicate keys, no alias bombs, one-line errors: params files come from colleagues.
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of sections at the top, got {type(data).__name__}")
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return params_from_dict(data)
    except ConfigError as err:
        raise ConfigError(err.key, f"{err.reason} (in {path})") from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key overrides (``model.heads: 8``) applied."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(dotted, f"{key} is not a section")
        node[leaf] = value
    return out


def replace(params: Params, overrides: dict[str, Any]) -> Params:
    """A validated copy of ``params`` with dotted-key overrides applied."""
    return params_from_dict(apply_overrides(to_dict(params), overrides))


__all__ = [
    "Params", "DataConfig", "SampleConfig", "PreprocessConfig", "FlowConfig", "ModelConfig", "TrainConfig",
    "TrackingConfig", "EvaluateConfig", "TuneConfig", "SearchParam", "AblationConfig", "LauncherConfig",
    "SlurmConfig", "ConfigError",
    "load_params", "params_from_dict", "apply_overrides", "replace", "to_dict", "flatten", "dataclasses",
]
