"""``tune`` section: the Optuna search (space declared here as data, not in code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bigfive.config.base import ConfigError, check, positive


@dataclass(frozen=True)
class SearchParam:
    """One searched hyperparameter; ``when`` makes it conditional, e.g. {fusion: [cross_attention]}."""

    type: Literal["categorical", "int", "float"]
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    when: dict[str, list[Any]] | None = None

    def validate(self, path: str) -> None:
        if self.type == "categorical":
            check(bool(self.choices), f"{path}.choices", "a categorical parameter needs choices")
        else:
            if self.low is None or self.high is None:
                raise ConfigError(f"{path}.low", f"an {self.type} parameter needs low and high")
            check(self.low < self.high, f"{path}.high", f"must be > low ({self.low}), got {self.high}")
            check(not self.log or self.low > 0, f"{path}.low", "must be > 0 with log: true")


@dataclass(frozen=True)
class TuneConfig:
    study: str = "bigfive-xattn"
    storage: str = "sqlite:///optuna.db"
    n_trials: int = 12
    epochs: int = 8
    timeout_s: float | None = None
    sampler_seed: int = 0
    pruner: Literal["median", "hyperband", "none"] = "median"
    experiment: str = "bigfive-tune"
    results_dir: str = "results/tune"
    # Keys are dotted paths into params (model.heads, train.lr, ...).
    space: dict[str, SearchParam] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        positive(self.n_trials, f"{path}.n_trials")
        positive(self.epochs, f"{path}.epochs")
        for key in self.space:
            check(key.split(".")[0] in ("model", "train"), f"{path}.space.{key}",
                  "searched keys must start with model. or train.")
