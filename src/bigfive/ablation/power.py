"""Power of the ablation's seed-level t test (:mod:`bigfive.ablation.seedtest`) from measured variance components.

From the reference model trained with S fresh seeds (the calibration runs), per column (trait or mean): the
seed-to-seed standard deviation of the mean accuracy and the seed x clip interaction variance (what the clip-paired
term carries for one seed). The standard error of a difference at n seeds per arm is then

    SE(n)² = (σ_a² + σ_b²) / n + (τ_a² + τ_b²) / (n N)

and the power at a true difference δ is that of the Welch t with Satterthwaite df (noncentral t). "Reads the
interaction" is a rate, compared with Fisher's exact test: its power is summed over every binomial outcome.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.ablation.seedtest import welch

POWER = 0.8


def components(scores: np.ndarray) -> dict[str, np.ndarray]:
    """Per column of ``scores`` (S seeds, N clips, M): seed sd of the mean accuracy and seed x clip variance τ²."""
    s, n, _ = scores.shape
    per_seed = scores.mean(axis=1)  # (S, M)
    resid = scores - per_seed[:, None] - scores.mean(axis=0)[None] + scores.mean(axis=(0, 1))[None, None]
    tau2 = (resid ** 2).sum(axis=(0, 1)) / ((s - 1) * (n - 1))
    return {"seed_sd": per_seed.std(axis=0, ddof=1), "interaction_var": tau2, "seeds": np.full(per_seed.shape[1], s),
            "clips": np.full(per_seed.shape[1], n)}


def se_df(n: int, sd_a: float, sd_b: float, tau2_a: float, tau2_b: float, clips: int) -> tuple[float, float]:
    """SE of the difference at ``n`` seeds per arm and its Welch-Satterthwaite df."""
    terms = [(sd_a ** 2 / n, n - 1), (sd_b ** 2 / n, n - 1), ((tau2_a + tau2_b) / (n * clips), clips - 1)]
    var, df = welch(terms)
    return math.sqrt(var), float(df)


def power_t(delta: float, se: float, df: float, alpha: float) -> float:
    """Two-sided power of the t test at true difference ``delta``."""
    from scipy import stats as st

    crit = st.t.ppf(1 - alpha / 2, df)
    ncp = abs(delta) / se
    return float(st.nct.sf(crit, df, ncp) + st.nct.cdf(-crit, df, ncp))


def mdd(n: int, sd_a: float, sd_b: float, tau2_a: float, tau2_b: float, clips: int, alpha: float,
        power: float = POWER) -> float:
    """Smallest true difference detected with ``power`` at ``n`` seeds per arm (bisection on the noncentral t)."""
    se, df = se_df(n, sd_a, sd_b, tau2_a, tau2_b, clips)
    lo, hi = 0.0, 20 * se
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_t(mid, se, df, alpha) < power else (lo, mid)
    return hi


def seeds_needed(delta: float, sd_a: float, sd_b: float, tau2_a: float, tau2_b: float, clips: int, alpha: float,
                 power: float = POWER, most: int = 500) -> int | None:
    """Seeds per arm for ``power`` at ``delta`` (None: more than ``most``)."""
    for n in range(2, most + 1):
        se, df = se_df(n, sd_a, sd_b, tau2_a, tau2_b, clips)
        if power_t(delta, se, df, alpha) >= power:
            return n
    return None


@functools.lru_cache(maxsize=256)
def fisher_rejects(n: int, alpha: float) -> np.ndarray:
    """(n + 1, n + 1) bool: does the two-sided Fisher exact test reject i / n vs j / n successes at ``alpha``?

    Vectorised over the tables of each margin k = i + j: conditional on k, i is hypergeometric, and the two-sided p
    sums the probabilities of every table no more likely than the observed one (scipy's definition).
    """
    from scipy.stats import hypergeom

    out = np.zeros((n + 1, n + 1), dtype=bool)
    for k in range(2 * n + 1):
        i = np.arange(max(0, k - n), min(n, k) + 1)
        pmf = hypergeom.pmf(i, 2 * n, k, n)
        p = (pmf[None, :] * (pmf[None, :] <= pmf[:, None] * (1 + 1e-7))).sum(axis=1)
        out[i, k - i] = p < alpha
    return out


def fisher_power(p_a: float, p_b: float, n: int, alpha: float) -> float:
    """Power of the two-sided Fisher exact test of two rates with ``n`` seeds per arm (exact enumeration)."""
    from scipy.stats import binom

    k = np.arange(n + 1)
    return float(binom.pmf(k, n, p_a) @ fisher_rejects(n, alpha) @ binom.pmf(k, n, p_b))


def rate_mdd(n: int, p_ref: float, alpha: float, power: float = POWER) -> float | None:
    """Largest rate below ``p_ref`` that a variant must fall to for ``power`` at ``n`` seeds (None: not even 0)."""
    grid = np.round(np.arange(p_ref, -0.001, -0.01), 2)
    for p in grid:
        if fisher_power(float(p), p_ref, n, alpha) >= power:
            return float(p)
    return None


def rate_seeds_needed(p_a: float, p_b: float, alpha: float, power: float = POWER, most: int = 200) -> int | None:
    for n in range(2, most + 1):
        if fisher_power(p_a, p_b, n, alpha) >= power:
            return n
    return None


def power_table(comp: dict[str, np.ndarray], columns: list[str], seed_counts: list[int], alpha: float,
                p_ref: float = 1.0) -> list[dict[str, Any]]:
    """Per seed count: MDD of each column (both arms with the reference's variance) and of the interaction rate."""
    rows = []
    for n in seed_counts:
        row: dict[str, Any] = {"seeds": n}
        for j, col in enumerate(columns):
            sd, tau2, clips = float(comp["seed_sd"][j]), float(comp["interaction_var"][j]), int(comp["clips"][j])
            row[f"mdd_{col}"] = mdd(n, sd, sd, tau2, tau2, clips, alpha)
        row["mdd_interaction_rate"] = rate_mdd(n, p_ref, alpha)
        rows.append(row)
    return rows


SEED_COUNTS = [3, 4, 5, 6, 8, 10, 15, 20, 30, 40]


def report(scores: np.ndarray, columns: list[str], own: list[Any], cfg: Any, out_dir: Path) -> tuple[dict, str]:
    """The power record (calibration.json's ``power``) and power.md, from the calibration runs' ``scores``."""
    comp = components(scores)
    recorded = [r.epochs_to_interaction for r in own if not math.isnan(r.epochs_to_interaction)]
    p_ref = sum(math.isfinite(v) for v in recorded) / len(recorded) if recorded else 1.0
    alphas = {"exploratory": cfg.alpha, "primary (Holm, first step)": cfg.alpha / max(1, len(cfg.primaries))}
    n_variants = len(cfg.variants)
    affordable = int(cfg.calibration.budget_minutes * 60 // (cfg.calibration.run_seconds * n_variants))
    record: dict[str, Any] = {
        "components": {c: {"seed_sd": float(comp["seed_sd"][j]), "interaction_var": float(comp["interaction_var"][j])}
                       for j, c in enumerate(columns)},
        "interaction_rate_reference": p_ref, "power": POWER, "affordable_seeds": affordable,
        "tables": {name: power_table(comp, columns, SEED_COUNTS, a, p_ref) for name, a in alphas.items()},
        "observed": observed_needs(out_dir / "summary.csv", comp, columns, cfg.reference, cfg.alpha)}
    return record, power_markdown(record, columns, cfg, n_variants)


def observed_needs(summary: Path, comp: dict[str, np.ndarray], columns: list[str], reference: str,
                   alpha: float) -> list[dict[str, Any]]:
    """Seeds per arm needed for the differences of an existing summary.csv (its Δ and seed sds; the clip term
    from the calibration runs)."""
    import csv

    if not summary.is_file():
        return []
    with summary.open(newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    ref = rows.get(reference)
    out: list[dict[str, Any]] = []
    for name, r in rows.items():
        if ref is None or name == reference or r.get("same_as"):
            continue
        for col in ("mean", "agreeableness"):
            key = "mean_accuracy" if col == "mean" else f"{col}_accuracy"
            delta = _float(r.get("delta_mean_accuracy" if col == "mean" else f"delta_{key}"))
            if col not in columns or not math.isfinite(delta) or delta == 0:
                continue
            j = columns.index(col)
            tau2, clips = float(comp["interaction_var"][j]), int(comp["clips"][j])
            n = seeds_needed(delta, _float(r.get(f"{key}_std")), _float(ref.get(f"{key}_std")), tau2, tau2, clips,
                             alpha)
            out.append({"variant": name, "column": col, "delta": delta, "seeds_needed": n})
        k, m = _float(r.get("epochs_to_interaction_reached")), _float(r.get("epochs_to_interaction_seeds"))
        kr, mr = _float(ref.get("epochs_to_interaction_reached")), _float(ref.get("epochs_to_interaction_seeds"))
        if m > 0 and mr > 0 and 0 < k / m != kr / mr and k > 0:
            out.append({"variant": name, "column": "interaction rate", "delta": k / m - kr / mr,
                        "seeds_needed": rate_seeds_needed(k / m, kr / mr, alpha)})
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def power_markdown(record: dict[str, Any], columns: list[str], cfg: Any, n_variants: int) -> str:
    lines = ["# Power of the ablation's seed-level t test", "",
             f"80 % power, two-sided; variance from {cfg.reference}'s calibration runs (seed sd per column: " +
             ", ".join(f"{c} {v['seed_sd']:.4f}" for c, v in record["components"].items()) +
             f"; reads the interaction on {record['interaction_rate_reference']:.0%} of them). Cost: "
             f"{n_variants} variants x n seeds x {cfg.calibration.run_seconds:g} s; "
             f"{cfg.calibration.budget_minutes:g} min affords {record['affordable_seeds']} seeds.", ""]
    for name, rows in record["tables"].items():
        alpha = cfg.alpha if name == "exploratory" else cfg.alpha / max(1, len(cfg.primaries))
        lines += [f"## Minimum detectable difference, {name} (alpha = {alpha:.3g})", "",
                  "| seeds per arm | wall (min) | " + " | ".join(f"Δ {c}" for c in columns) +
                  " | interaction rate falls to |", "|" + "---|" * (len(columns) + 3)]
        for r in rows:
            wall = r["seeds"] * n_variants * cfg.calibration.run_seconds / 60
            rate = r["mdd_interaction_rate"]
            lines.append(f"| {r['seeds']} | {wall:.0f} | " + " | ".join(f"{r[f'mdd_{c}']:.4f}" for c in columns) +
                         f" | {'–' if rate is None else f'{rate:.2f}'} |")
        lines.append("")
    if record["observed"]:
        lines += ["## Seeds per arm needed for the differences of the last summary.csv (exploratory alpha)", "",
                  "| variant | column | Δ | seeds needed |", "|---|---|---|---|"]
        lines += [f"| {o['variant']} | {o['column']} | {o['delta']:+.4f} | "
                  f"{'> 500' if o['seeds_needed'] is None else o['seeds_needed']} |" for o in record["observed"]]
    return "\n".join(lines) + "\n"


__all__ = ["report", "observed_needs", "power_markdown", "components", "se_df", "power_t", "mdd", "seeds_needed",
           "fisher_power", "rate_mdd", "rate_seeds_needed", "power_table", "POWER", "SEED_COUNTS"]
