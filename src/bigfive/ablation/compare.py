"""``bigfive compare``: summarise ablation runs into a table, a figure and significance tests that count seeds.

Reads ``<runs_dir>/<variant>/seed<seed>/`` (written by ``bigfive ablate``) and writes, under the
results folder (``ablation.results_dir``, or ``ablation.flow.results_dir`` with ``--flow``):

- ``summary.csv``: one row per variant (``variant`` column):
  - mean and sample standard deviation over seeds of the test mean accuracy (``mean_accuracy_mean``,
    ``mean_accuracy_std``), of mean PCC and CCC, and of each trait's accuracy, PCC and CCC
    (``agreeableness_accuracy_mean``, ...); the hierarchical-bootstrap 95% CI of each accuracy
    (``mean_accuracy_ci95_low|high``, ``<trait>_accuracy_ci95_low|high``);
  - validation: ``val_mean_accuracy_mean|std`` (each seed's best validation mean accuracy) and
    ``val_win_share``, the share of (variant seed, reference seed) pairs whose best validation mean
    accuracy is higher for the variant (ties count one half);
  - ``epochs_to_interaction`` (median over the seeds that reached it), ``epochs_to_interaction_reached``
    (how many seeds did) and ``epochs_to_interaction_seeds`` (how many recorded it);
  - the difference to the reference in mean accuracy, ``delta_mean_accuracy`` with ``delta_ci95_low|high``,
    and per trait ``delta_<trait>_accuracy`` with ``delta_<trait>_ci95_low|high``;
  - p-values, overall (``p_value``) and per trait (``p_value_<trait>``), and their Holm adjustment over
    every p-value of the table together (``p_value_holm``, ``p_value_<trait>_holm``).
  A duplicate variant repeats its twin's numbers and names it in ``same_as``.
- ``summary.md``: the same as markdown tables; ``summary.png``: seeds as points, means with 95% CIs.
- ``metrics.json`` (DVC metrics): per variant, so ``dvc metrics show`` lists every one.

The tests (:mod:`bigfive.ablation.stats`): ``ablation.test: hierarchical`` (default) is a two-level
bootstrap over each model's seeds (independently) and the paired test clips; ``wilcoxon`` is the
clip-paired signed-rank test of the seed-averaged per-clip error, conditional on the trained seeds.
A run folder that cannot be read is reported (``summary.md``, log) and left out; it never stops the
comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bigfive.ablation import stats
from bigfive.ablation.execute import METRICS_FILE, PREDICTIONS_FILE

if TYPE_CHECKING:  # the figure's types; matplotlib itself is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

log = logging.getLogger("bigfive.ablation")

KINDS = ("accuracy", "pcc", "ccc")
TESTS = {"hierarchical": "hierarchical bootstrap over seeds and test clips",
         "wilcoxon": "clip-paired Wilcoxon signed-rank test of the seed-averaged per-clip error"}
ALPHA = 0.05  # what the figure marks as significant (Holm-adjusted p below it)
REFERENCE_SHADE = "#fff3c4"  # the figure's background of the reference's row (and its duplicates')


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


# ---------------------------------------------------------------------------------------------- reading
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


# ------------------------------------------------------------------------------------------- statistics
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


def _common_clips(groups: list[list[SeedRun]]) -> list[str]:
    sets = [set(r.clip_ids) for runs in groups for r in runs]
    common = set.intersection(*sets) if sets else set()
    return sorted(common)


def _median_interaction(values: list[float]) -> tuple[float, int, int]:
    """(median epoch over the seeds that reached it, seeds that reached it, seeds that recorded it)."""
    recorded = [v for v in values if not math.isnan(v)]
    reached = [v for v in recorded if math.isfinite(v)]
    return (float(np.median(reached)) if reached else math.nan), len(reached), len(recorded)


def summarize(runs: Runs, reference: str, order: list[str] | None = None, *, test: str = "hierarchical",
              resamples: int = 10000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per variant (``order`` first, then any others found), as written to summary.csv.

    A row also holds ``per_seed`` (key -> values over its seeds, for the figure), which the CSV and
    metrics.json leave out.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r} (one of {', '.join(TESTS)})")
    names = [n for n in (order or []) if n in runs.runs or n in runs.same_as]
    names += sorted(n for n in (*runs.runs, *runs.same_as) if n not in names)
    ref_runs = runs.runs.get(reference)
    if ref_runs is None:
        log.warning("the reference %r has no usable runs: no significance tests", reference)
    elif len(ref_runs) < 2:
        log.warning("the reference %r has one seed: the tests cannot count its seed-to-seed variation", reference)
    traits = _traits(runs)
    ref_val = [r.val_mean_accuracy for r in ref_runs or []]
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in runs.runs:
            continue
        own = sorted(runs.runs[name], key=lambda r: r.seed)
        row: dict[str, Any] = {"variant": name, "same_as": "", "seeds": len(own),
                               "seed_list": " ".join(str(r.seed) for r in own)}
        per_seed = [seed_metrics(r) for r in own]
        keys = ["mean_accuracy", "pcc", "ccc", *(f"{t}_{k}" for t in traits for k in KINDS)]
        for key in keys:
            row[f"{key}_mean"], row[f"{key}_std"] = stats.mean_std([m[key] for m in per_seed if key in m])
        row["per_seed"] = {key: [m.get(key, math.nan) for m in per_seed] for key in keys}
        val = [r.val_mean_accuracy for r in own]
        row["val_mean_accuracy_mean"], row["val_mean_accuracy_std"] = stats.mean_std([v for v in val
                                                                                      if math.isfinite(v)])
        row["val_win_share"] = math.nan if name == reference else stats.share_greater(val, ref_val)
        (row["epochs_to_interaction"], row["epochs_to_interaction_reached"],
         row["epochs_to_interaction_seeds"]) = _median_interaction([r.epochs_to_interaction for r in own])
        for key, col in [("mean", "baseline_mean_accuracy"), *((t, f"baseline_{t}_accuracy") for t in traits)]:
            base = [r.baseline[key] for r in own if key in r.baseline]
            row[col] = float(np.mean(base)) if base else math.nan
        row.update(_own_ci(own, traits, resamples, seed))
        row.update(_versus_reference(own, ref_runs, name == reference, traits, test, resamples, seed))
        rows[name] = row
    # duplicates repeat their twin's numbers so the table has a row for every variant asked for
    for name, twin in runs.same_as.items():
        if twin in rows:
            rows[name] = {**rows[twin], "variant": name, "same_as": twin}
        else:
            runs.problems.append(f"{name}: same as {twin}, which has no usable runs")
    ordered = [rows[n] for n in names if n in rows]
    family = _adjust(ordered, reference, traits)
    if test == "hierarchical" and family and family / (resamples + 1) >= ALPHA:
        log.warning("%d p-values, %d bootstrap resamples: no Holm-adjusted p-value can go below %d / %d = %.3f; "
                    "raise ablation.bootstrap (>= %d)", family, resamples, family, resamples + 1,
                    family / (resamples + 1), math.ceil(10 * family / ALPHA))
    return ordered


def _adjust(rows: list[dict[str, Any]], reference: str, traits: list[str]) -> int:
    """Holm over every p-value the table shows: each tested variant's overall and per-trait ones, together.

    Duplicates repeat their twin's p-values, so they are not counted twice; they take the twin's adjusted values.
    Returns the family size (the finite p-values adjusted together).
    """
    keys = ["p_value", *(f"p_value_{t}" for t in traits)]
    tested = [r for r in rows if r["variant"] != reference and not r["same_as"]]
    cells = [(r, k) for r in tested for k in keys]
    for (r, k), adjusted in zip(cells, stats.holm([r.get(k, math.nan) for r, k in cells])):
        r[f"{k}_holm"] = adjusted
    by_name = {r["variant"]: r for r in rows}
    for r in rows:
        for k in keys:
            twin = by_name.get(r["same_as"]) if r["same_as"] else None
            r[f"{k}_holm"] = twin.get(f"{k}_holm", math.nan) if twin is not None else r.get(f"{k}_holm", math.nan)
    return sum(1 for r, k in cells if math.isfinite(r.get(k, math.nan)))


def _traits(runs: Runs) -> list[str]:
    for group in runs.runs.values():
        for r in group:
            return list(r.traits)
    return []


def _own_ci(own: list[SeedRun], traits: list[str], resamples: int, seed: int) -> dict[str, float]:
    """95% CI of the variant's own accuracies (per trait and mean), by the same two-level bootstrap."""
    clips = _common_clips([own])
    keys = [*(f"{t}_accuracy" for t in traits), "mean_accuracy"]
    out = {f"{k}_ci95_{side}": math.nan for k in keys for side in ("low", "high")}
    if not clips:
        return out
    scores = clip_scores(own, clips)
    res = stats.hierarchical_bootstrap(scores, np.zeros((1, *scores.shape[1:])), resamples, seed)
    for j, k in enumerate(keys):
        out[f"{k}_ci95_low"], out[f"{k}_ci95_high"] = float(res.low[j]), float(res.high[j])
    return out


def _versus_reference(own: list[SeedRun], ref: list[SeedRun] | None, is_reference: bool, traits: list[str],
                      test: str, resamples: int, seed: int) -> dict[str, Any]:
    keys = [*(f"{t}_accuracy" for t in traits), "mean_accuracy"]
    out: dict[str, Any] = {"clips": math.nan}
    for k in keys:
        out[f"delta_{k}"] = math.nan
        out[_ci_key(k, "low")] = out[_ci_key(k, "high")] = math.nan
    out.update({"p_value": math.nan, **{f"p_value_{t}": math.nan for t in traits}})
    if ref is None:
        return out
    clips = _common_clips([own, ref])
    n_own, n_ref = len(set(own[0].clip_ids)), len(set(ref[0].clip_ids))
    if len(clips) < max(n_own, n_ref):
        log.warning("%s vs reference: %d common test clips (of %d / %d): the comparison uses the common ones",
                    own[0].variant, len(clips), n_own, n_ref)
    out["clips"] = len(clips)
    if not clips or is_reference:
        if is_reference:
            out.update({f"delta_{k}": 0.0 for k in keys})
        return out
    if len(own) < 2:
        log.warning("%s has one seed: its test cannot count seed-to-seed variation", own[0].variant)
    res = stats.hierarchical_bootstrap(clip_scores(own, clips), clip_scores(ref, clips), resamples, seed)
    for j, k in enumerate(keys):
        out[f"delta_{k}"] = float(res.delta[j])
        out[_ci_key(k, "low")], out[_ci_key(k, "high")] = float(res.low[j]), float(res.high[j])
    if test == "hierarchical":
        p = res.p
    else:  # the per-clip error averaged over seeds, variant - reference: one paired difference per clip
        diff = clip_errors(own, clips) - clip_errors(ref, clips)
        cols = np.concatenate([diff, diff.mean(axis=1, keepdims=True)], axis=1)
        p = np.array([stats.wilcoxon_p(cols[:, j]) for j in range(cols.shape[1])])
    out["p_value"] = float(p[-1])
    out.update({f"p_value_{t}": float(p[j]) for j, t in enumerate(traits)})
    return out


def _ci_key(key: str, side: str) -> str:
    """``delta_ci95_low`` for the mean accuracy (the established name), ``delta_<trait>_ci95_low`` per trait."""
    return f"delta_ci95_{side}" if key == "mean_accuracy" else f"delta_{key.removesuffix('_accuracy')}_ci95_{side}"


# --------------------------------------------------------------------------------------------- outputs
def columns(traits: list[str]) -> list[str]:
    cols = ["variant", "same_as", "seeds", "seed_list", "clips"]
    for key in ("mean_accuracy", "pcc", "ccc", *(f"{t}_{k}" for t in traits for k in KINDS)):
        cols += [f"{key}_mean", f"{key}_std"]
        if key.endswith("accuracy"):
            cols += [f"{key}_ci95_low", f"{key}_ci95_high"]
    cols += ["val_mean_accuracy_mean", "val_mean_accuracy_std", "val_win_share",
             "epochs_to_interaction", "epochs_to_interaction_reached", "epochs_to_interaction_seeds"]
    cols += ["baseline_mean_accuracy", *(f"baseline_{t}_accuracy" for t in traits)]
    cols += ["delta_mean_accuracy", "delta_ci95_low", "delta_ci95_high", "p_value", "p_value_holm"]
    for t in traits:
        cols += [f"delta_{t}_accuracy", f"delta_{t}_ci95_low", f"delta_{t}_ci95_high", f"p_value_{t}",
                 f"p_value_{t}_holm"]
    return cols


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value + 0.0:.6g}"  # + 0.0: no "-0"
    return str(value)


def summary_csv(rows: list[dict[str, Any]], traits: list[str]) -> str:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = columns(traits)
    w.writerow(cols)
    for r in rows:
        w.writerow([_cell(r.get(c, "")) for c in cols])
    return buf.getvalue()


def metrics_json(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per variant, every finite number of its row (DVC metrics)."""
    out = {}
    for r in rows:
        out[r["variant"]] = {k: float(v) for k, v in r.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    return out


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _delta(r: dict[str, Any], key: str) -> str:
    delta, low, high = r[f"delta_{key}"], r[_ci_key(key, "low")], r[_ci_key(key, "high")]
    if not math.isfinite(delta):
        return "–"
    return f"{delta:+.4f}" + (f" [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else "")


def _interaction_cell(r: dict[str, Any]) -> str:
    n = r["epochs_to_interaction_seeds"]
    if not n:
        return "–"
    k = r["epochs_to_interaction_reached"]
    return f"{r['epochs_to_interaction']:g} ({k}/{n})" if k else f"never (0/{n})"


def _share(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}"


def summary_markdown(rows: list[dict[str, Any]], traits: list[str], reference: str, test: str,
                     problems: list[str], resamples: int = 10000) -> str:
    seeds = sorted({r["seeds"] for r in rows})
    m = sum(1 for r in rows if r["variant"] != reference and not r["same_as"]
            for k in ["p_value", *(f"p_value_{t}" for t in traits)] if math.isfinite(r.get(k, math.nan)))
    test_text = ("a two-level bootstrap: each resample draws the variant's seeds and the reference's seeds with "
                 "replacement, independently, then the test clips with replacement (the same clips for both), and "
                 "takes the difference of mean accuracies; p is two-sided, shifted to the null "
                 "((1 + #{|Δ* − Δ| ≥ |Δ|}) / (B + 1))" if test == "hierarchical" else
                 "the clip-paired Wilcoxon signed-rank test of the per-clip error averaged over each model's seeds "
                 "(conditional on these trained seeds: seed-to-seed variation does not enter it)")
    lines = ["# Ablation summary", "",
             f"Test split, mean ± standard deviation over seeds ({'/'.join(map(str, seeds))} per variant); "
             f"accuracy = 1 − MAE. Δ: mean accuracy minus the reference's (`{reference}`) with its 95% CI from a "
             f"hierarchical bootstrap over seeds and test clips ({resamples} resamples). p: {test_text}. "
             f"Holm: adjusted over all {m} p-values of both tables together (overall and per trait). "
             "val wins: share of (variant seed, reference seed) pairs where the variant's best validation mean "
             "accuracy is higher (ties ½). Interaction: median epoch at which validation accuracy on the "
             "interaction trait first reached the threshold, over the seeds that reached it (reached / seeds).", ""]
    head = ["variant", "mean accuracy", *traits, "Δ vs reference [95% CI]", "p", "p (Holm)", "val wins",
            "interaction epoch"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"**{r['variant']}**" if r["variant"] == reference else r["variant"]
        if r["same_as"]:
            name += f" (= {r['same_as']})"
        cells = [name, _pm(r["mean_accuracy_mean"], r["mean_accuracy_std"]),
                 *(_pm(r[f"{t}_accuracy_mean"], r[f"{t}_accuracy_std"]) for t in traits),
                 _delta(r, "mean_accuracy"), _p(r["p_value"]), _p(r["p_value_holm"]), _share(r["val_win_share"]),
                 _interaction_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    if any(math.isfinite(r["baseline_mean_accuracy"]) for r in rows):
        base = next(r["baseline_mean_accuracy"] for r in rows if math.isfinite(r["baseline_mean_accuracy"]))
        lines += ["", f"Train-mean baseline (predict the training split's mean): mean accuracy {base:.3f}."]
    lines += ["", "## Per trait: Δ accuracy vs reference [95% CI], p (Holm)", ""]
    head = ["variant", *traits]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], *(f"{_delta(r, f'{t}_accuracy')}, {_p(r[f'p_value_{t}_holm'])}" for t in traits)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Correlation (PCC / CCC, mean over seeds)", ""]
    head = ["variant", "PCC", "CCC", *(f"{t} PCC / CCC" for t in traits)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], f"{r['pcc_mean']:.3f}", f"{r['ccc_mean']:.3f}",
                 *(f"{r[f'{t}_pcc_mean']:.3f} / {r[f'{t}_ccc_mean']:.3f}" for t in traits)]
        lines.append("| " + " | ".join(cells) + " |")
    if problems:
        lines += ["", "## Runs left out", "", *(f"- {p}" for p in problems)]
    return "\n".join(lines) + "\n"


def plot_summary(rows: list[dict[str, Any]], traits: list[str], path: str | Path, reference: str) -> Path:
    """Write :func:`summary_figure` as PNG to ``path``."""
    from bigfive.evaluation.plots import save

    return save(summary_figure(rows, traits, reference), path)


def summary_figure(rows: list[dict[str, Any]], traits: list[str], reference: str) -> Figure:
    """One row per variant, shared by every panel. Left: Δ mean accuracy vs the reference with its 95% CI
    (filled: Holm-adjusted p < 0.05). Then the mean accuracy and each trait's: one point per seed, the mean
    over seeds with its 95% CI (hierarchical bootstrap), dashed = train-mean baseline."""
    # imported when drawing, not at the top: reading and summarising runs does not need matplotlib
    from bigfive.evaluation.plots import styled

    # under the shared style: artists take their defaults (sizes, widths) when they are created
    return styled(_summary_figure)(rows, traits, reference)


def _summary_figure(rows: list[dict[str, Any]], traits: list[str], reference: str) -> Figure:
    """Lays out the panels (Δ, then one per accuracy) on shared variant rows, then the title and legend."""
    from bigfive.evaluation.plots import new_figure

    n = len(rows)
    keys = ["mean_accuracy", *(f"{t}_accuracy" for t in traits)]
    titles = ["mean accuracy", *(t.replace("_", " ") for t in traits)]
    fig = new_figure(2.6 + 2.0 * len(keys) + 2.4, 1.3 + 0.26 * max(n, 2))
    axes = fig.subplots(1, len(keys) + 1, sharey=True, gridspec_kw={"width_ratios": [1.3] + [1.0] * len(keys)})
    y = np.arange(n)[::-1].astype(float)  # first row on top
    for ax in axes:
        _shade_reference(ax, y, rows, reference)
    _draw_delta_panel(axes[0], y, rows, reference)
    # one stream for every panel, drawn in panel order: the seeds' jitter (and the PNG) is the same every run
    jitter = np.random.default_rng(0)
    for ax, key, title in zip(axes[1:], keys, titles):
        _draw_accuracy_panel(ax, y, rows, key, title, jitter)
    axes[0].set_ylim(-0.6, n - 0.4)  # shared y: half a row of margin above the first and below the last
    seeds = "/".join(str(s) for s in sorted({r["seeds"] for r in rows}))
    fig.suptitle(f"Ablation on the test split ({seeds} seeds per variant; reference {reference}, highlighted)")
    handles = _legend_handles()
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    return fig


def _shade_reference(ax: Axes, y: np.ndarray, rows: list[dict[str, Any]], reference: str) -> None:
    """A band behind the reference's row and its duplicates', so the eye finds what Δ is measured from."""
    for yi, r in zip(y, rows):
        if r["variant"] == reference or r["same_as"] == reference:
            ax.axhspan(yi - 0.5, yi + 0.5, color=REFERENCE_SHADE, zorder=0, lw=0)


def _row_label(r: dict[str, Any]) -> str:
    return r["variant"] + (f" (= {r['same_as']})" if r["same_as"] else "")


def _draw_delta_panel(ax: Axes, y: np.ndarray, rows: list[dict[str, Any]], reference: str) -> None:
    """Δ mean accuracy vs the reference with its 95% CI; the panel also carries the (shared) variant labels."""
    ax.axvline(0.0, color="k", lw=0.8)
    for yi, r in zip(y, rows):
        _draw_delta(ax, yi, r)
    ax.set_title("Δ mean accuracy vs reference")
    ax.set_xlabel("difference, 95% CI (accuracy)")
    ax.set_yticks(y, [_row_label(r) for r in rows])
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r["variant"] == reference:
            tick.set_fontweight("bold")


def _draw_delta(ax: Axes, yi: float, r: dict[str, Any]) -> None:
    """One variant's Δ: the CI as a bar, the point filled when the Holm-adjusted p is below ALPHA."""
    d, lo, hi = r["delta_mean_accuracy"], r["delta_ci95_low"], r["delta_ci95_high"]
    if not math.isfinite(d):
        return
    if math.isfinite(lo):
        ax.plot([lo, hi], [yi, yi], color="k", lw=1.2, solid_capstyle="butt")
    significant = math.isfinite(r["p_value_holm"]) and r["p_value_holm"] < ALPHA
    ax.plot([d], [yi], "o", ms=4.5, mec="k", mfc="k" if significant else "white", zorder=3)


def _draw_accuracy_panel(ax: Axes, y: np.ndarray, rows: list[dict[str, Any]], key: str, title: str,
                         jitter: np.random.Generator) -> None:
    """One accuracy (``key``): each variant's seeds, mean and CI, x limits around them, and the baseline."""
    base = _panel_baseline(rows, key)
    values = [v for yi, r in zip(y, rows) for v in _draw_seeds(ax, yi, r, key, jitter)]
    xlim = _accuracy_xlim(values, base)
    if xlim is not None:
        ax.set_xlim(*xlim)
    xlabel = _draw_baseline(ax, base)  # after the x limits: where the baseline goes depends on them
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def _panel_baseline(rows: list[dict[str, Any]], key: str) -> float:
    """The train-mean baseline of ``key``: every run has the same one, so the first recorded; NaN if none is."""
    return next((r[f"baseline_{key}"] for r in rows if math.isfinite(r.get(f"baseline_{key}", math.nan))),
                math.nan)


def _draw_seeds(ax: Axes, yi: float, r: dict[str, Any], key: str, jitter: np.random.Generator) -> list[float]:
    """One variant's row: every seed as a point (jittered in y so equal values stay visible), the mean over
    seeds as a tick and its 95% CI as a bar. Returns the values drawn (NaN included) for the x limits."""
    from bigfive.evaluation.plots import MODEL_COLOR

    pts = np.asarray(r.get("per_seed", {}).get(key, []), dtype=float)
    pts = pts[np.isfinite(pts)]
    ax.scatter(pts, yi + jitter.uniform(-0.18, 0.18, pts.size), s=12, color=MODEL_COLOR, alpha=0.65,
               edgecolors="none", zorder=2)
    lo, hi, mean = r.get(f"{key}_ci95_low", math.nan), r.get(f"{key}_ci95_high", math.nan), r[f"{key}_mean"]
    if math.isfinite(lo):
        ax.plot([lo, hi], [yi, yi], color="k", lw=1.2, zorder=3)
    if math.isfinite(mean):
        ax.plot([mean], [yi], "|", color="k", ms=9, mew=1.6, zorder=4)
    return [*pts, lo, hi, mean]


def _accuracy_xlim(values: list[float], base: float) -> tuple[float, float] | None:
    """x limits around the drawn values with 6% margins, within [0, 1]; None (autoscale) when none is finite.
    The baseline is included only where it does not squash the runs into a corner."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    if math.isfinite(base) and base >= lo - 0.5 * max(hi - lo, 0.01):
        lo = min(lo, base)
    span = max(hi - lo, 0.01)
    return max(0.0, lo - 0.06 * span), min(1.0, hi + 0.06 * span)


def _draw_baseline(ax: Axes, base: float) -> str:
    """The baseline as a dashed line when it is inside the x limits, else named with an arrow in the x label.
    Returns the x label."""
    from bigfive.evaluation.plots import BASELINE_COLOR

    xlabel = "accuracy (1 − MAE)"
    if math.isfinite(base):
        if base >= ax.get_xlim()[0]:
            ax.axvline(base, color=BASELINE_COLOR, ls="--", lw=1.0, zorder=1)
        else:
            xlabel += f"\n(← baseline {base:.3f})"
    return xlabel


def _legend_handles() -> list[Line2D]:
    from matplotlib.lines import Line2D

    from bigfive.evaluation.plots import BASELINE_COLOR, MODEL_COLOR

    return [Line2D([], [], ls="none", marker="o", color=MODEL_COLOR, alpha=0.65, ms=4, label="one seed"),
            Line2D([], [], color="k", marker="|", ms=9, mew=1.6, lw=1.2, label="mean over seeds, 95% CI"),
            Line2D([], [], ls="none", marker="o", mec="k", mfc="k", ms=4.5, label=f"Δ, Holm-adjusted p < {ALPHA:g}"),
            Line2D([], [], ls="none", marker="o", mec="k", mfc="white", ms=4.5, label="Δ, not significant"),
            Line2D([], [], color=BASELINE_COLOR, ls="--", label="train-mean baseline")]


def write_outputs(rows: list[dict[str, Any]], traits: list[str], out_dir: str | Path, reference: str, test: str,
                  problems: list[str], resamples: int = 10000) -> dict[str, Path]:
    from bigfive.utils.io import write_json, write_text

    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "summary.csv", "md": out_dir / "summary.md", "png": out_dir / "summary.png",
             "metrics": out_dir / "metrics.json"}
    write_text(paths["csv"], summary_csv(rows, traits))
    write_text(paths["md"], summary_markdown(rows, traits, reference, test, problems, resamples))
    write_json(paths["metrics"], metrics_json(rows))
    plot_summary(rows, traits, paths["png"], reference)
    return paths


def compare(runs_dir: str | Path, out_dir: str | Path, *, reference: str, variants: list[str] | None = None,
            seeds: list[int] | None = None, test: str = "hierarchical", resamples: int = 10000,
            seed: int = 0) -> list[dict[str, Any]]:
    """Load, summarise and write everything; returns the summary rows."""
    runs = load_runs(runs_dir, variants, seeds)
    if not runs.runs:
        raise FileNotFoundError(f"{runs_dir}: no usable ablation runs ({len(runs.problems)} left out: "
                                f"{'; '.join(runs.problems[:3])})")
    rows = summarize(runs, reference, variants, test=test, resamples=resamples, seed=seed)
    traits = _traits(runs)
    paths = write_outputs(rows, traits, out_dir, reference, test, runs.problems, resamples)
    log.info("compared %d variants (%d runs, %d left out): %s", len(rows), sum(len(v) for v in runs.runs.values()),
             len(runs.problems), ", ".join(str(p) for p in paths.values()))
    for r in rows:
        log.info("%-45s mean accuracy %s  Δ %s  p %s (Holm %s)", r["variant"], _pm(r["mean_accuracy_mean"],
                 r["mean_accuracy_std"]), _cell(r["delta_mean_accuracy"]), _p(r["p_value"]), _p(r["p_value_holm"]))
    return rows


# ----------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flow", action="store_true",
                        help="compare the preprocessing ablation (ablation.flow) instead of the model ablation")
    parser.add_argument("--runs-dir", type=Path, help="default: <results_dir>/runs")
    parser.add_argument("--results-dir", type=Path, help="output folder (default: ablation.results_dir)")
    parser.add_argument("--reference", help="variant every other one is tested against (default: ablation.reference)")
    parser.add_argument("--all-found", action="store_true",
                        help="every run folder found, not only the configured variants x seeds")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params

    params = load_params(args.params)
    cfg = params.ablation
    if args.flow:
        results, reference = Path(cfg.flow.results_dir), cfg.flow.reference
        variants, seeds = cfg.flow.names, list(cfg.flow.seeds)
    else:
        results, reference = Path(cfg.results_dir), cfg.reference
        variants, seeds = list(cfg.variants), list(cfg.seeds)
    if args.all_found:
        variants, seeds = None, None
    out = args.results_dir or results
    compare(args.runs_dir or results / "runs", out, reference=args.reference or reference, variants=variants,
            seeds=seeds, test=cfg.test, resamples=cfg.bootstrap, seed=params.seed)
    return 0
