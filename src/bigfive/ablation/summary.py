"""The statistics of ``bigfive compare``: one row per variant (means over seeds, its own CI, the test against the
reference) and the exploratory family's Benjamini-Hochberg q-values. The primaries: :mod:`bigfive.ablation.primaries`.

Tests (``ablation.test``, calibrated in docs/statistics.md): ``permutation`` (default,
:func:`bigfive.ablation.seedtest.permutation`) and ``seed_t`` (:func:`bigfive.ablation.seedtest.seed_t`) give the CI
of Δ by inverting the same test, so the CI excludes 0 exactly when p < alpha; ``hierarchical`` keeps the two-level
bootstrap (percentile CI, centred p: they can disagree, and p has the floor 1 / (B + 1)); ``wilcoxon`` is clip-paired
and conditional on the trained seeds.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from bigfive.ablation import seedtest, stats
from bigfive.ablation.runs import KINDS, Runs, SeedRun, clip_errors, clip_scores, common_clips, seed_metrics, traits_of

log = logging.getLogger("bigfive.ablation")

TESTS = {"permutation": "exact permutation of whole seeds between the two models (shift model); CI by inverting the "
                        "same test",
         "seed_t": "Welch t over the per-seed mean accuracies (ablation.clip_term: plus the clip-paired variance); "
                   "CI by inverting the same test",
         "hierarchical": "hierarchical bootstrap over seeds and test clips",
         "wilcoxon": "clip-paired Wilcoxon signed-rank test of the seed-averaged per-clip error"}


def _median_interaction(values: list[float]) -> tuple[float, int, int]:
    """(median epoch over the seeds that reached it, seeds that reached it, seeds that recorded it)."""
    recorded = [v for v in values if not math.isnan(v)]
    reached = [v for v in recorded if math.isfinite(v)]
    return (float(np.median(reached)) if reached else math.nan), len(reached), len(recorded)


def summarize(runs: Runs, reference: str, order: list[str] | None = None, *, test: str = "permutation",
              resamples: int = 10000, seed: int = 0, alpha: float = 0.05,
              clip_term: bool = False) -> list[dict[str, Any]]:
    """One row per variant (``order`` first, then any others found), as written to summary.csv.

    A row also holds ``per_seed`` (key -> values over its seeds, for the figure), which the CSV and
    metrics.json leave out. ``p_floor`` is the smallest p-value the test can return (0: none).
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
    traits = traits_of(runs)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in runs.runs:
            row = _variant_row(sorted(runs.runs[name], key=lambda r: r.seed), ref_runs, name == reference, traits,
                               resamples, seed)
            row.update(_versus_reference(row.pop("_own"), ref_runs, name == reference, traits, test, resamples,
                                         seed, alpha, clip_term))
            rows[name] = row
    # duplicates repeat their twin's numbers so the table has a row for every variant asked for
    for name, twin in runs.same_as.items():
        if twin in rows:
            rows[name] = {**rows[twin], "variant": name, "same_as": twin}
        else:
            runs.problems.append(f"{name}: same as {twin}, which has no usable runs")
    ordered = [rows[n] for n in names if n in rows]
    _adjust(ordered, reference, traits)
    return ordered


def _variant_row(own: list[SeedRun], ref_runs: list[SeedRun] | None, is_reference: bool, traits: list[str],
                 resamples: int, seed: int) -> dict[str, Any]:
    """Means and sds over seeds, validation, interaction epochs, baselines and the variant's own CI."""
    row: dict[str, Any] = {"variant": own[0].variant, "same_as": "", "seeds": len(own),
                           "seed_list": " ".join(str(r.seed) for r in own), "_own": own}
    per_seed = [seed_metrics(r) for r in own]
    keys = ["mean_accuracy", "pcc", "ccc", *(f"{t}_{k}" for t in traits for k in KINDS)]
    for key in keys:
        row[f"{key}_mean"], row[f"{key}_std"] = stats.mean_std([m[key] for m in per_seed if key in m])
    row["per_seed"] = {key: [m.get(key, math.nan) for m in per_seed] for key in keys}
    val = [r.val_mean_accuracy for r in own]
    row["val_mean_accuracy_mean"], row["val_mean_accuracy_std"] = stats.mean_std([v for v in val if math.isfinite(v)])
    ref_val = [r.val_mean_accuracy for r in ref_runs or []]
    row["val_win_share"] = math.nan if is_reference else stats.share_greater(val, ref_val)
    (row["epochs_to_interaction"], row["epochs_to_interaction_reached"],
     row["epochs_to_interaction_seeds"]) = _median_interaction([r.epochs_to_interaction for r in own])
    for key, col in [("mean", "baseline_mean_accuracy"), *((t, f"baseline_{t}_accuracy") for t in traits)]:
        base = [r.baseline[key] for r in own if key in r.baseline]
        row[col] = float(np.mean(base)) if base else math.nan
    row.update(_own_ci(own, traits, resamples, seed))
    return row


def _adjust(rows: list[dict[str, Any]], reference: str, traits: list[str]) -> int:
    """Benjamini-Hochberg q-values over every p-value the table shows (the exploratory family: each tested
    variant's overall and per-trait ones, together); Holm is kept for the declared primaries.

    Duplicates repeat their twin's p-values, so they are not counted twice; they take the twin's q-values.
    Returns the family size (the finite p-values adjusted together).
    """
    keys = ["p_value", *(f"p_value_{t}" for t in traits)]
    tested = [r for r in rows if r["variant"] != reference and not r["same_as"]]
    cells = [(r, k) for r in tested for k in keys]
    for (r, k), adjusted in zip(cells, stats.bh([r.get(k, math.nan) for r, k in cells])):
        r[f"{k}_q"] = adjusted
    by_name = {r["variant"]: r for r in rows}
    for r in rows:
        for k in keys:
            twin = by_name.get(r["same_as"]) if r["same_as"] else None
            r[f"{k}_q"] = twin.get(f"{k}_q", math.nan) if twin is not None else r.get(f"{k}_q", math.nan)
    return sum(1 for r, k in cells if math.isfinite(r.get(k, math.nan)))


def _own_ci(own: list[SeedRun], traits: list[str], resamples: int, seed: int) -> dict[str, float]:
    """95% CI of the variant's own accuracies (per trait and mean), by the same two-level bootstrap."""
    clips = common_clips([own])
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
                      test: str, resamples: int, seed: int, alpha: float, clip_term: bool) -> dict[str, Any]:
    keys = [*(f"{t}_accuracy" for t in traits), "mean_accuracy"]
    out: dict[str, Any] = {"clips": math.nan, "p_floor": 1.0 / (resamples + 1) if test == "hierarchical" else 0.0}
    for k in keys:
        out[f"delta_{k}"] = math.nan
        out[_ci_key(k, "low")] = out[_ci_key(k, "high")] = math.nan
    out.update({"p_value": math.nan, **{f"p_value_{t}": math.nan for t in traits}})
    if ref is None:
        return out
    clips = common_clips([own, ref])
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
    delta, low, high, p, out["p_floor"] = _test(clip_scores(own, clips), clip_scores(ref, clips), test, resamples,
                                                 seed, alpha, clip_term)
    if test == "wilcoxon":  # per-clip error averaged over seeds, variant - reference: one paired difference per clip
        diff = clip_errors(own, clips) - clip_errors(ref, clips)
        cols = np.concatenate([diff, diff.mean(axis=1, keepdims=True)], axis=1)
        p = np.array([stats.wilcoxon_p(cols[:, j]) for j in range(cols.shape[1])])
        out["p_floor"] = 0.0
    for j, k in enumerate(keys):
        out[f"delta_{k}"] = float(delta[j])
        out[_ci_key(k, "low")], out[_ci_key(k, "high")] = float(low[j]), float(high[j])
    out["p_value"] = float(p[-1])
    out.update({f"p_value_{t}": float(p[j]) for j, t in enumerate(traits)})
    return out


def _test(v: np.ndarray, r: np.ndarray, test: str, resamples: int, seed: int, alpha: float,
          clip_term: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(Δ, CI low, CI high, p, p floor) per column: the permutation's or seed_t's inverted CI, else the bootstrap's
    percentile CI and its p."""
    if test in ("permutation", "seed_t"):
        res = seedtest.seed_level(v, r, test, 1 - alpha, clip_term)
        return res.delta, res.low, res.high, res.p, res.floor
    res = stats.hierarchical_bootstrap(v, r, resamples, seed)
    return res.delta, res.low, res.high, res.p, 1.0 / (resamples + 1)



def _ci_key(key: str, side: str) -> str:
    """``delta_ci95_low`` for the mean accuracy (the established name), ``delta_<trait>_ci95_low`` per trait."""
    return f"delta_ci95_{side}" if key == "mean_accuracy" else f"delta_{key.removesuffix('_accuracy')}_ci95_{side}"


