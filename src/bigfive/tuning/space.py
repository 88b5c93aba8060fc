"""The search space from ``tune.space`` in params.yaml -> Optuna suggestions -> a trial's params.

Parameters are suggested under their dotted params key (``model.heads``), so a trial's
``params`` map straight onto :func:`bigfive.config.replace` and read the same in the dashboard.
A conditional parameter (``when: {model.fusion: [cross_attention]}``) is suggested only when its
condition holds for the trial, judged on the values suggested so far or, for keys not searched,
on the base params: a ``concat`` trial has no heads, direction or layers at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna

from bigfive.config import ConfigError, Params, SearchParam, flatten, replace, to_dict


class InvalidTrialParams(ValueError):
    """A combination the config rejects (e.g. heads not dividing embed_dim); the trial is pruned."""

    def __init__(self, overrides: Mapping[str, Any], error: ConfigError):
        self.overrides = dict(overrides)
        self.error = error
        super().__init__(f"invalid combination {self.overrides}: {error}")


def ordered(space: Mapping[str, SearchParam]) -> list[str]:
    """Keys in an order where every condition's key comes before the parameters depending on it."""
    done: list[str] = []

    def visit(key: str) -> None:
        if key in done or key not in space:
            return
        for dep in space[key].when or {}:
            visit(dep)  # acyclic: TuneConfig.validate refuses cycles
        done.append(key)

    for key in space:
        visit(key)
    return done


def applies(param: SearchParam, values: Mapping[str, Any]) -> bool:
    """Whether ``param``'s ``when`` condition holds for the (flattened) trial ``values``.

    A key missing from ``values`` (a searched parameter that did not apply itself) fails the condition.
    """
    return all(key in values and values[key] in allowed for key, allowed in (param.when or {}).items())


def suggest(trial: optuna.Trial, space: Mapping[str, SearchParam], base: Params) -> dict[str, Any]:
    """Ask ``trial`` for every applicable parameter; returns ``{dotted key: value}``."""
    values = flatten({"model": to_dict(base.model), "train": to_dict(base.train)})
    chosen: dict[str, Any] = {}
    for key in ordered(space):
        param = space[key]
        if not applies(param, values):
            values.pop(key, None)  # parameters conditional on this one do not apply either
            continue
        chosen[key] = values[key] = _suggest_one(trial, key, param)
    return chosen


def _suggest_one(trial: optuna.Trial, key: str, param: SearchParam) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(key, list(param.choices or []))
    assert param.low is not None and param.high is not None  # SearchParam.validate
    if param.type == "int":
        step = int(param.step) if param.step is not None else 1
        return trial.suggest_int(key, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(key, float(param.low), float(param.high), step=param.step, log=param.log)


def trial_params(base: Params, overrides: Mapping[str, Any]) -> Params:
    """The validated params of one trial; an invalid combination raises :class:`InvalidTrialParams`."""
    try:
        return replace(base, dict(overrides))
    except ConfigError as err:
        raise InvalidTrialParams(overrides, err) from None


def fingerprint(space: Mapping[str, SearchParam], epochs: int) -> str:
    """A stable text of what makes trial values comparable; stored on the study to refuse mixing."""
    data = {"epochs": epochs, "space": {k: to_dict(v) for k, v in sorted(space.items())}}
    return json.dumps(data, sort_keys=True)
