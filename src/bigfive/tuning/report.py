"""What a study leaves behind: trials.csv, best_params.yaml and figures (all written atomically).

``best_params.yaml`` has the shape of params.yaml's ``model``/``train`` sections and holds only the
tuned keys of the best trial, so ``bigfive tune --apply results/tune/best_params.yaml`` can merge it
into params.yaml before ``dvc repro`` trains with it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from bigfive.config import SearchParam
from bigfive.tuning.study import (
    BEST_EPOCH_ATTR,
    FAIL_ATTR,
    INTERACTION_ATTR,
    PRUNE_ATTR,
    RUN_ATTR,
    TRAIT_ATTR_PREFIX,
    WORKER_ATTR,
)
from bigfive.utils.io import atomic_dir, atomic_path, write_text

log = logging.getLogger(__name__)

METRIC_LABEL = "validation mean accuracy (1 − MAE)"
FIGURES = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


@dataclass(frozen=True)
class Report:
    trials: int
    complete: int
    pruned: int
    failed: int
    best_value: float | None
    best_trial: int | None
    files: list[Path]
    # the best trial's validation accuracy per trait at its best epoch, and when it read the interaction
    best_traits: dict[str, float] = field(default_factory=dict)
    best_epochs_to_interaction: int | None = None  # None: never reached, or not recorded (see the next field)
    interaction_recorded: bool = False
    interaction_trait: str | None = None


def trait_keys(study: optuna.Study) -> list[str]:
    """The ``val_acc_<trait>`` user attributes the trials recorded, in the order training reports them."""
    keys: list[str] = []
    for t in study.get_trials(deepcopy=False):
        keys += [k for k in t.user_attrs if k.startswith(TRAIT_ATTR_PREFIX) and k not in keys]
    return keys


def trials_table(study: optuna.Study, space: Mapping[str, SearchParam] | None = None) -> pd.DataFrame:
    """One row per trial: number, state, value, the searched params, the best epoch's per-trait validation
    accuracies and epochs_to_interaction, timing, epochs, MLflow run, reasons."""
    keys = list(space or {})
    for trial in study.get_trials(deepcopy=False):
        keys += [k for k in trial.params if k not in keys]
    traits = trait_keys(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            **{k: t.params.get(k) for k in keys},
            BEST_EPOCH_ATTR: t.user_attrs.get(BEST_EPOCH_ATTR),
            **{k: t.user_attrs.get(k) for k in traits},
            INTERACTION_ATTR: t.user_attrs.get(INTERACTION_ATTR),
            "epochs_reported": len(t.intermediate_values),
            "duration_s": round(duration, 2) if duration is not None else None,
            "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "mlflow_run_id": t.user_attrs.get(RUN_ATTR),
            "worker": t.user_attrs.get(WORKER_ATTR),
            "prune_reason": t.user_attrs.get(PRUNE_ATTR),
            "fail_reason": t.user_attrs.get(FAIL_ATTR) or (
                "no reason recorded (its worker stopped sending heartbeats)" if t.state == TrialState.FAIL else None),
        })
    columns = ["number", "state", "value", *keys, BEST_EPOCH_ATTR, *traits, INTERACTION_ATTR, "epochs_reported",
               "duration_s", "datetime_start", "mlflow_run_id", "worker", "prune_reason", "fail_reason"]
    table = pd.DataFrame(rows, columns=columns)
    # integer columns with gaps (pruned trials have no epochs_to_interaction) stay integers, not 12.0
    for col in (BEST_EPOCH_ATTR, INTERACTION_ATTR):
        table[col] = table[col].astype("Int64")
    return table


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def best_params(trial: FrozenTrial) -> dict[str, dict[str, Any]]:
    """``{"model": {...}, "train": {...}}`` of the tuned keys (conditional ones only where they applied)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in sorted(trial.params.items()):
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def best_params_text(study: optuna.Study, trial: FrozenTrial | None, path: str | Path = "results/tune/best_params.yaml"
                     ) -> str:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    if trial is None:
        return (f"# study: {study.study_name}\n# written: {now}\n# no trial has completed yet "
                f"({n_done} finished); see trials.csv for the reasons\n{{}}\n")
    header = (
        f"# Best trial of Optuna study {study.study_name!r}: trial {trial.number}, "
        f"{METRIC_LABEL} = {trial.value:.4f}\n"
        f"{_traits_comment(trial)}"
        f"# ({n_done} finished trials; written {now}). Only the tuned keys; apply them with\n"
        f"#   bigfive tune --apply {path}   # merges into params.yaml; then dvc repro\n"
    )
    return header + yaml.safe_dump(best_params(trial), sort_keys=False, default_flow_style=False)


def _traits_comment(trial: FrozenTrial) -> str:
    """``# at epoch 37: openness 0.967, ...; epochs_to_interaction 29`` (empty when nothing was recorded)."""
    traits = {k.removeprefix(TRAIT_ATTR_PREFIX): v for k, v in trial.user_attrs.items()
              if k.startswith(TRAIT_ATTR_PREFIX)}
    if not traits:
        return ""
    epoch = trial.user_attrs.get(BEST_EPOCH_ATTR)
    text = f"# validation accuracy per trait{f' at epoch {epoch}' if epoch is not None else ''}: " + \
        ", ".join(f"{k} {v:.3f}" for k, v in traits.items())
    if INTERACTION_ATTR in trial.user_attrs:
        value = trial.user_attrs[INTERACTION_ATTR]
        text += f"; {INTERACTION_ATTR} {value if value is not None else 'never'}"
    return text + "\n"


def write_report(study: optuna.Study, results_dir: str | Path, space: Mapping[str, SearchParam] | None = None,
                 figures: bool = True, interaction_trait: str | None = None) -> Report:
    """Write trials.csv, best_params.yaml and plots/ under ``results_dir``.

    ``interaction_trait`` (``train.interaction_trait``) only picks the trait the summary line names.
    """
    results_dir = Path(results_dir)
    table = trials_table(study, space)
    with atomic_path(results_dir / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    best = best_trial(study)
    write_text(results_dir / "best_params.yaml", best_params_text(study, best, results_dir / "best_params.yaml"))
    files = [results_dir / "trials.csv", results_dir / "best_params.yaml"]
    if figures:
        files += write_figures(study, results_dir / "plots")
    states = table["state"].value_counts()
    traits = {k.removeprefix(TRAIT_ATTR_PREFIX): float(v) for k, v in (best.user_attrs if best else {}).items()
              if k.startswith(TRAIT_ATTR_PREFIX)}
    return Report(trials=len(table), complete=int(states.get("COMPLETE", 0)), pruned=int(states.get("PRUNED", 0)),
                  failed=int(states.get("FAIL", 0)), best_value=best.value if best else None,
                  best_trial=best.number if best else None, files=files, best_traits=traits,
                  best_epochs_to_interaction=best.user_attrs.get(INTERACTION_ATTR) if best else None,
                  interaction_recorded=best is not None and INTERACTION_ATTR in best.user_attrs,
                  interaction_trait=interaction_trait)


def write_figures(study: optuna.Study, plots_dir: Path) -> list[Path]:
    """PNG figures; one that cannot be drawn yet (too few trials) becomes a figure saying why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    makers: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": _history, "param_importances": _importances,
        "parallel_coordinate": _parallel, "intermediate_values": _intermediate,
    }
    written = []
    with atomic_dir(plots_dir) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are "experimental"
        for name, make in makers.items():
            try:
                fig = make(study)
            except Exception as err:  # e.g. importance with < 2 complete trials or no shared parameter
                log.warning("figure %s not drawn: %s", name, err)
                fig = _message(name, str(err))
            fig.savefig(tmp / f"{name}.png", dpi=150, bbox_inches="tight")
            plt.close(fig)
            written.append(plots_dir / f"{name}.png")
    return written


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _need(study: optuna.Study, n: int, what: str) -> None:
    if len(_complete(study)) < n:
        raise ValueError(f"{what} needs at least {n} completed trial{'s' if n > 1 else ''}, "
                         f"the study has {len(_complete(study))}")


def _history(study: optuna.Study) -> Any:
    _need(study, 1, "the optimization history")
    ax = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=METRIC_LABEL)
    _title(ax, f"Optimization history: {study.study_name}")
    ax.set_xlabel("trial number")
    ax.set_ylabel(METRIC_LABEL)
    return ax.figure


def _importances(study: optuna.Study) -> Any:
    _need(study, 2, "parameter importance")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    ax = optuna.visualization.matplotlib.plot_param_importances(study, evaluator=evaluator, target_name=METRIC_LABEL)
    _title(ax, "Hyperparameter importance (fANOVA; parameters present in every completed trial)")
    ax.set_xlabel(f"importance for {METRIC_LABEL} (share of variance)")
    ax.set_ylabel("hyperparameter")
    return ax.figure


def _parallel(study: optuna.Study) -> Any:
    _need(study, 1, "the parallel-coordinate plot")
    ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target_name=METRIC_LABEL)
    _title(ax, "Completed trials: hyperparameters and validation accuracy")
    ax.figure.set_size_inches(max(8.0, 1.6 * (len(study.best_trial.params) + 1)), 5.0)
    return ax.figure


def _intermediate(study: optuna.Study) -> Any:
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    if not trials:
        raise ValueError("no trial has reported a validation epoch yet")
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {TrialState.COMPLETE: ("-", 1.0), TrialState.PRUNED: (":", 0.8), TrialState.FAIL: ("--", 0.6),
              TrialState.RUNNING: ("-.", 0.6)}
    cmap = plt.get_cmap("viridis")
    for i, t in enumerate(trials):
        style, alpha = styles.get(t.state, ("-", 0.5))
        steps = sorted(t.intermediate_values)
        ax.plot(steps, [t.intermediate_values[s] for s in steps], style, marker="o", ms=3, alpha=alpha,
                color=cmap(i / max(1, len(trials) - 1)), label=f"#{t.number} {t.state.name.lower()}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(METRIC_LABEL)
    ax.set_title("Per-epoch validation accuracy (dotted: pruned, dashed: failed)")
    ax.grid(alpha=0.3)
    if len(trials) <= 20:
        ax.legend(fontsize=7, ncol=2, loc="lower right")
    return fig


def _title(ax: Any, text: str) -> None:
    for loc in ("left", "right"):  # optuna puts its own title on the left
        ax.set_title("", loc=loc)
    ax.set_title(text)


def _message(name: str, reason: str) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name.replace('_', ' ')}: not drawn yet\n{reason}", ha="center", va="center", wrap=True)
    return fig


def summary_line(report: Report) -> str:
    best = f"best trial {report.best_trial}: {report.best_value:.4f}" if report.best_value is not None \
        and not math.isnan(report.best_value) else "no completed trial"
    trait = report.interaction_trait
    if report.best_value is not None and trait and trait in report.best_traits:
        reached = report.best_epochs_to_interaction
        when = "" if not report.interaction_recorded else \
            f", threshold reached at epoch {reached}" if reached is not None else ", threshold never reached"
        best += f" ({trait} {report.best_traits[trait]:.3f}{when})"
    return (f"{report.trials} trials ({report.complete} complete, {report.pruned} pruned, {report.failed} failed); "
            f"{best}")
