"""Ablation run folders read back: ``<runs_dir>/<variant>/seed<N>/`` (written by ``bigfive ablate``) as
:class:`SeedRun` objects, and the per-seed x per-clip arrays the statistics work on.

A run folder that cannot be read is reported (:attr:`Runs.problems`, log) and left out; it never stops a comparison.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.ablation.execute import METRICS_FILE, PREDICTIONS_FILE

log = logging.getLogger("bigfive.ablation")

KINDS = ("accuracy", "pcc", "ccc")  # the per-trait metrics a summary row carries

@dataclass
class SeedRun:
    variant: str
    seed: int
    clip_ids: list[str]
    traits: list[str]
    true: np.ndarray  # (N, K)
    pred: np.ndarray  # (N, K)
    baseline: dict[str, float] = field(default_factory=dict)  # "mean" and per trait, from metrics.json
    val_mean_accuracy: float = math.nan  # best validation mean accuracy (metrics.json), NaN if not recorded
    # first epoch at the interaction threshold: NaN = not recorded, inf = never reached
    epochs_to_interaction: float = math.nan

    @property
    def abs_errors(self) -> np.ndarray:
        return np.abs(self.pred - self.true)


@dataclass
class Runs:
    runs: dict[str, list[SeedRun]]  # variant -> its seeds' runs
    same_as: dict[str, str]  # duplicate variant -> the variant whose runs stand for it
    problems: list[str]  # one line per run folder that could not be used, with the reason


def read_predictions(path: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``predictions_test.csv`` (video_id, <trait>_true, <trait>_pred, ...) -> ids, traits, true, pred."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0] != "video_id":
            raise ValueError(f"{path}: expected a header starting with video_id")
        traits = [h[: -len("_true")] for h in header[1:] if h.endswith("_true")]
        cols = {h: i for i, h in enumerate(header)}
        missing = [f"{t}_pred" for t in traits if f"{t}_pred" not in cols]
        if not traits or missing:
            raise ValueError(f"{path}: needs <trait>_true and <trait>_pred columns (missing: {missing or 'all'})")
        ids, true, pred = [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                true.append([float(row[cols[f"{t}_true"]]) for t in traits])
                pred.append([float(row[cols[f"{t}_pred"]]) for t in traits])
            except (ValueError, IndexError) as err:
                raise ValueError(f"{path}:{line}: unreadable row ({err})") from None
            ids.append(row[0])
    if not ids:
        raise ValueError(f"{path}: no clips")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: a video_id appears twice")
    t, p = np.asarray(true), np.asarray(pred)
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError(f"{path}: non-finite values")
    return ids, traits, t, p


def _baseline(record: dict[str, Any]) -> dict[str, float]:
    test = record.get("test") if isinstance(record.get("test"), dict) else {}
    out = {}
    if isinstance(test.get("baseline_mean_accuracy"), (int, float)):
        out["mean"] = float(test["baseline_mean_accuracy"])
    for trait, m in (test.get("traits") or {}).items():
        if isinstance(m, dict) and isinstance(m.get("baseline_accuracy"), (int, float)):
            out[trait] = float(m["baseline_accuracy"])
    return out


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _interaction(record: dict[str, Any]) -> float:
    """metrics.json's ``epochs_to_interaction``: absent -> NaN (not recorded), null -> inf (never reached)."""
    if "epochs_to_interaction" not in record:
        return math.nan
    value = record["epochs_to_interaction"]
    return math.inf if value is None else _number(value)


def load_runs(runs_dir: str | Path, variants: list[str] | None = None, seeds: list[int] | None = None) -> Runs:
    """Every ``<variant>/seed<N>`` folder under ``runs_dir`` (or only ``variants`` x ``seeds``)."""
    runs_dir = Path(runs_dir)
    found = sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    names = list(variants) if variants is not None else found
    out = Runs(runs={}, same_as={}, problems=[])
    for name in names:
        vdir = runs_dir / name
        seed_dirs = ([vdir / f"seed{s}" for s in seeds] if seeds is not None
                     else sorted((p for p in vdir.glob("seed*") if p.is_dir()), key=lambda p: p.name))
        for sdir in seed_dirs:
            try:
                run = _load_one(sdir, name)
            except (OSError, ValueError, KeyError, TypeError) as err:
                out.problems.append(f"{sdir}: {err}")
                log.warning("%s: left out of the comparison: %s", sdir, err)
                continue
            if isinstance(run, str):
                out.same_as[name] = run
            else:
                out.runs.setdefault(name, []).append(run)
    return out


def _load_one(sdir: Path, name: str) -> SeedRun | str:
    if not sdir.is_dir():
        raise FileNotFoundError("no such run folder (has `bigfive ablate` run for it?)")
    try:
        seed = int(sdir.name.removeprefix("seed"))
    except ValueError:
        raise ValueError(f"folder name {sdir.name!r} is not seed<N>") from None
    record: dict[str, Any] = {}
    mpath = sdir / METRICS_FILE
    if mpath.is_file():
        try:
            record = json.loads(mpath.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{mpath.name} is not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{mpath.name} does not hold an object")
    if record.get("same_as"):
        return str(record["same_as"])
    ids, traits, true, pred = read_predictions(sdir / PREDICTIONS_FILE)
    return SeedRun(variant=name, seed=seed, clip_ids=ids, traits=traits, true=true, pred=pred,
                   baseline=_baseline(record), val_mean_accuracy=_number(record.get("best_val_mean_accuracy")),
                   epochs_to_interaction=_interaction(record))


def seed_metrics(run: SeedRun) -> dict[str, float]:
    """The evaluator's metrics of one run: mean accuracy, mean PCC/CCC over traits, and per trait."""
    from bigfive.evaluation import metrics as M

    acc = np.atleast_1d(M.accuracy(run.pred, run.true))
    pcc = np.atleast_1d(M.pearson(run.pred, run.true))
    cc = np.atleast_1d(M.ccc(run.pred, run.true))
    out = {"mean_accuracy": float(acc.mean()), "pcc": float(pcc.mean()), "ccc": float(cc.mean())}
    for i, t in enumerate(run.traits):
        out[f"{t}_accuracy"], out[f"{t}_pcc"], out[f"{t}_ccc"] = float(acc[i]), float(pcc[i]), float(cc[i])
    return out


def seed_errors(runs: list[SeedRun], clips: list[str]) -> np.ndarray:
    """(seeds, N clips, K traits) absolute errors, clips in ``clips`` order."""
    per_seed = []
    for r in runs:
        index = {c: i for i, c in enumerate(r.clip_ids)}
        per_seed.append(r.abs_errors[[index[c] for c in clips]])
    return np.stack(per_seed)


def clip_errors(runs: list[SeedRun], clips: list[str]) -> np.ndarray:
    """(N clips, K traits) absolute error averaged over seeds, rows in ``clips`` order."""
    return seed_errors(runs, clips).mean(axis=0)


def clip_scores(runs: list[SeedRun], clips: list[str]) -> np.ndarray:
    """(seeds, N, K + 1) per-clip accuracy 1 - |error| per trait, and its mean over traits as the last column.

    The mean over clips of a column is the run's accuracy on that trait (last column: the mean accuracy).
    """
    acc = 1.0 - seed_errors(runs, clips)
    return np.concatenate([acc, acc.mean(axis=2, keepdims=True)], axis=2)


def common_clips(groups: list[list[SeedRun]]) -> list[str]:
    sets = [set(r.clip_ids) for runs in groups for r in runs]
    common = set.intersection(*sets) if sets else set()
    return sorted(common)


def traits_of(runs: Runs) -> list[str]:
    for group in runs.runs.values():
        for r in group:
            return list(r.traits)
    return []


