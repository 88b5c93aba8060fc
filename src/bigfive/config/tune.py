"""``tune`` section: the Optuna search (space declared here as data, not in code)."""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from bigfive.config.base import ConfigError, _coerce, check, positive
from bigfive.config.model import ModelConfig
from bigfive.config.train import TrainConfig

# Sections a search may touch; a searched key is "<section>.<field>" of one of them.
SEARCHABLE: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


def field_hint(key: str) -> Any:
    """The type hint of the params field at dotted ``key`` (``model.heads`` -> int); KeyError if none."""
    section, _, name = key.partition(".")
    cls = SEARCHABLE[section]
    if name not in {f.name for f in dataclasses.fields(cls)}:
        raise KeyError(key)
    return typing.get_type_hints(cls)[name]


@dataclass(frozen=True)
class SearchParam:
    """One searched hyperparameter.

    ``when`` makes it conditional: ``{model.fusion: [cross_attention]}`` suggests it only in trials
    whose ``model.fusion`` (searched or fixed in params) is one of the listed values.
    """

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
            check(self.low is None and self.high is None and self.step is None and not self.log, f"{path}.type",
                  "a categorical parameter takes choices only (no low/high/step/log)")
            return
        check(self.choices is None, f"{path}.choices", f"an {self.type} parameter takes low/high, not choices")
        if self.low is None or self.high is None:
            raise ConfigError(f"{path}.low", f"an {self.type} parameter needs low and high")
        check(self.low < self.high, f"{path}.high", f"must be > low ({self.low}), got {self.high}")
        check(not self.log or self.low > 0, f"{path}.low", "must be > 0 with log: true")
        check(not (self.log and self.step is not None), f"{path}.step", "step and log: true cannot be combined")
        if self.step is not None:
            positive(self.step, f"{path}.step")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                check(value is None or float(value).is_integer(), f"{path}.{name}",
                      f"an int parameter needs an integer {name}, got {value}")


_WITH_ATTENTION = {"model.fusion": ["cross_attention", "framewise"]}
# params.yaml's space (tests/test_config.py checks the two are equal); copied into each TuneConfig.
DEFAULT_SPACE: dict[str, SearchParam] = {
    "model.fusion": SearchParam("categorical", choices=["cross_attention", "framewise", "concat"]),
    "model.direction": SearchParam("categorical", choices=["bidirectional", "static_to_dynamic", "dynamic_to_static"],
                                   when=_WITH_ATTENTION),
    "model.heads": SearchParam("categorical", choices=[1, 2, 4, 8], when={"model.fusion": ["cross_attention"]}),
    "model.layers": SearchParam("int", low=1.0, high=2.0, when=_WITH_ATTENTION),
    "model.embed_dim": SearchParam("categorical", choices=[32, 64, 128]),
    "model.dropout": SearchParam("float", low=0.0, high=0.3),
    "train.lr": SearchParam("float", low=5.0e-4, high=5.0e-3, log=True),
}

Pruner = Literal["hyperband", "successive_halving", "median", "none"]


@dataclass(frozen=True)
class TuneConfig:
    study: str = "bigfive-fusion"  # resumed by name; change it when the space, epochs or data change
    storage: str = "sqlite:///optuna.db"  # RDB URL, or journal:///path.log / path.log for a journal file
    n_trials: int = 24  # `bigfive tune` tops the study up to this many finished (complete + pruned) trials
    # Epochs of a trial that is never pruned (null = train.epochs); the pruner's maximum resource.
    epochs: int | None = 20
    timeout_s: float | None = 780.0  # stop starting new trials after this many seconds (null = no limit)
    sampler_seed: int = 0
    tpe_startup_trials: int = 6  # random trials before TPE starts modelling
    # hyperband (recommended): successive halving over several brackets, so some trials are compared
    # only late; successive_halving: one bracket; median: MedianPruner; none: every trial runs in full.
    pruner: Pruner = "hyperband"
    pruner_min_resource: int = 4  # hyperband / successive_halving: epochs before a trial's first comparison
    pruner_reduction_factor: int = 3  # hyperband / successive_halving: 1 in this many goes on at each rung
    pruner_startup_trials: int = 3  # median: trials that finish before any is pruned
    pruner_warmup_epochs: int = 2  # median: epochs a trial always runs before it may be pruned
    heartbeat_s: int = 60  # RDB storages: a RUNNING trial silent for 2x this long is failed
    experiment: str = "bigfive-tune"  # MLflow experiment: one parent run per worker, one child per trial
    results_dir: str = "results/tune"
    # Keys are dotted paths into params (model.heads, train.lr, ...).
    space: dict[str, SearchParam] = field(default_factory=lambda: copy.deepcopy(DEFAULT_SPACE))

    def validate(self, path: str) -> None:
        check(bool(self.study), f"{path}.study", "must not be empty")
        check(bool(self.storage), f"{path}.storage", "must not be empty")
        positive(self.n_trials, f"{path}.n_trials")
        if self.epochs is not None:
            positive(self.epochs, f"{path}.epochs")
        if self.timeout_s is not None:
            positive(self.timeout_s, f"{path}.timeout_s")
        positive(self.tpe_startup_trials, f"{path}.tpe_startup_trials", allow_zero=True)
        positive(self.pruner_min_resource, f"{path}.pruner_min_resource")
        check(self.pruner_reduction_factor >= 2, f"{path}.pruner_reduction_factor",
              f"must be >= 2, got {self.pruner_reduction_factor}")
        if self.epochs is not None:  # with epochs: null, checked against train.epochs when the search starts
            check(self.pruner_min_resource <= self.epochs, f"{path}.pruner_min_resource",
                  f"must be <= tune.epochs ({self.epochs}), got {self.pruner_min_resource}")
        positive(self.pruner_startup_trials, f"{path}.pruner_startup_trials", allow_zero=True)
        positive(self.pruner_warmup_epochs, f"{path}.pruner_warmup_epochs", allow_zero=True)
        positive(self.heartbeat_s, f"{path}.heartbeat_s")
        check(bool(self.experiment), f"{path}.experiment", "must not be empty")
        for key, param in self.space.items():
            _validate_searched(key, param, self.space, f"{path}.space.{key}")


def _validate_searched(key: str, param: SearchParam, space: dict[str, SearchParam], path: str) -> None:
    """Catch typos at load time: the key must be a params field and every value must fit its type."""
    try:
        hint = field_hint(key)
    except KeyError:
        sections = " or ".join(f"{s}.<field>" for s in SEARCHABLE)
        raise ConfigError(path, f"not a params field (searched keys are {sections})") from None
    if param.type == "categorical":
        for i, choice in enumerate(param.choices or []):
            _coerce(choice, hint, f"{path}.choices[{i}]")
    else:
        # An int parameter may fill a float field; a float one may not fill an int field.
        sample = int(param.low) if param.type == "int" else float(param.low)
        _coerce(sample, hint, f"{path}.low")
    for cond_key, values in (param.when or {}).items():
        try:
            cond_hint = field_hint(cond_key)
        except KeyError:
            raise ConfigError(f"{path}.when.{cond_key}", "not a params field (use model.<field> or train.<field>)") \
                from None
        check(cond_key != key, f"{path}.when.{cond_key}", "a parameter cannot depend on itself")
        check(len(values) > 0, f"{path}.when.{cond_key}", "needs at least one value")
        for i, value in enumerate(values):
            _coerce(value, cond_hint, f"{path}.when.{cond_key}[{i}]")
    _check_no_cycle(key, space, path)


def _check_no_cycle(key: str, space: dict[str, SearchParam], path: str) -> None:
    seen: list[str] = [key]
    frontier = [key]
    while frontier:
        param = space.get(frontier.pop())
        for dep in (param.when or {}) if param else {}:
            if dep == key:
                raise ConfigError(f"{path}.when", f"circular condition: {' -> '.join([*seen, key])}")
            if dep not in seen:
                seen.append(dep)
                frontier.append(dep)
