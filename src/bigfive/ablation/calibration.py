"""The ablation tests' false-positive rate, measured on null datasets with the ablation's own seed x clip structure.

Null datasets (A/A): the reference model trained with S fresh seeds (``ablation.calibration.seeds``) is split at
random into two disjoint arms of n seeds (n = the ablation's seed count), and the test clips are resampled with
replacement (the same clips for both arms). Both arms are the same recipe, so every rejection is a false
positive. Each candidate test is run on every null dataset; the share of p < alpha is its rejection rate, with a
Clopper-Pearson interval over the datasets. The datasets share seeds (C(S, n) / 2 distinct splits), so that
interval is the Monte Carlo uncertainty of these S seeds, not of the seed population: more reference seeds narrow
what the interval cannot show.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from bigfive.ablation import seedtest, stats

log = logging.getLogger("bigfive.ablation")

# name -> what it is (docs/statistics.md); ``seed_t`` is what ``ablation.test: seed_t`` uses
CANDIDATES = {
    "seed_t": "Welch t over seeds with the clip-paired variance folded in (Satterthwaite df)",
    "seed_t_no_clip": "Welch t over the per-seed mean accuracies only",
    "permutation": "exact permutation of whole seeds between the arms",
    "hierarchical": "hierarchical bootstrap over seeds and clips, centred p (the previous default)",
}
ALPHAS = (0.05, 0.01)
TARGET = (0.03, 0.07)  # acceptable rejection rate at alpha = 0.05


def aa_datasets(scores: np.ndarray, per_arm: int, datasets: int, seed: int = 0):  # noqa: ANN201 - generator
    """Yield ``datasets`` A/A pairs (a, b) from ``scores`` (S seeds, N clips, M): two disjoint random arms of
    ``per_arm`` seeds over the same clips resampled with replacement."""
    s, n, _ = scores.shape
    if 2 * per_arm > s:
        raise ValueError(f"{s} reference seeds cannot make two disjoint arms of {per_arm}")
    rng = np.random.default_rng(seed)
    for _ in range(datasets):
        order = rng.permutation(s)
        clips = rng.integers(0, n, n)
        yield scores[order[:per_arm]][:, clips], scores[order[per_arm:2 * per_arm]][:, clips]


def null_pvalues(scores: np.ndarray, per_arm: int, datasets: int, *, resamples: int = 999,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """candidate -> (datasets, M) p-values on A/A splits of ``scores`` (S seeds, N clips, M columns)."""
    out = {name: np.empty((datasets, scores.shape[2])) for name in CANDIDATES}
    for k, (a, b) in enumerate(aa_datasets(scores, per_arm, datasets, seed)):
        out["seed_t"][k] = seedtest.seed_t(a, b).p
        out["seed_t_no_clip"][k] = seedtest.seed_t(a, b, clip_term=False).p
        out["permutation"][k] = seedtest.permutation_p(a, b)[0]
        out["hierarchical"][k] = stats.hierarchical_bootstrap(a, b, resamples, seed=k).p
    return out


def shifted_power(scores: np.ndarray, per_arm: int, shifts: np.ndarray, datasets: int, *, alpha: float = 0.05,
                  seed: int = 0) -> np.ndarray:
    """(M,) rejection rate of the seed permutation test when one arm of each A/A dataset is moved by ``shifts``.

    The power table is computed for the t test (closed form); this measures the permutation test, which the
    summary uses, at the same differences on the real seed distribution (bimodal where seeds miss the interaction).
    """
    hits = np.zeros(scores.shape[2])
    for a, b in aa_datasets(scores, per_arm, datasets, seed):
        hits += seedtest.permutation(a + shifts[None, None, :], b).p < alpha
    return hits / datasets


def rejection(p: np.ndarray, alpha: float, level: float = 0.95) -> dict[str, Any]:
    """Share of p < alpha with its Clopper-Pearson interval."""
    from scipy.stats import binomtest

    p = np.asarray(p, dtype=float)
    p = p[np.isfinite(p)]
    k, n = int((p < alpha).sum()), int(p.size)
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact") if n else None
    return {"rate": k / n if n else math.nan, "rejected": k, "datasets": n,
            "ci95": [ci.low, ci.high] if ci else [math.nan, math.nan]}


def calibrate(scores: np.ndarray, columns: list[str], per_arm: int, datasets: int, *, resamples: int = 999,
              seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The calibration record (per candidate, alpha and column) and the raw null p-values."""
    pvals = null_pvalues(scores, per_arm, datasets, resamples=resamples, seed=seed)
    record: dict[str, Any] = {}
    for name, p in pvals.items():
        record[name] = {"what": CANDIDATES[name], **{
            f"alpha={a:g}": {col: rejection(p[:, j], a) for j, col in enumerate(columns)} for a in ALPHAS}}
        worst = max(record[name]["alpha=0.05"].values(), key=lambda r: abs(r["rate"] - 0.05))
        record[name]["calibrated"] = bool(TARGET[0] <= worst["rate"] <= TARGET[1])
    return record, pvals


def calibration_figure(pvals: dict[str, np.ndarray], columns: list[str], title: str):  # noqa: ANN201 - Figure
    """Histogram of the null p-values of each candidate (all columns pooled; uniform = calibrated)."""
    from bigfive.evaluation.plots import new_figure, styled

    def draw():  # noqa: ANN202
        fig = new_figure(3.2 * len(pvals), 3.4)
        axes = np.atleast_1d(fig.subplots(1, len(pvals), sharey=True))
        bins = np.linspace(0, 1, 21)
        for ax, (name, p) in zip(axes, pvals.items()):
            flat = p[np.isfinite(p)].ravel()
            ax.hist(flat, bins=bins, density=True, color="#4477aa", alpha=0.8)
            ax.axhline(1.0, color="k", ls="--", lw=0.9)
            rate = float((flat < 0.05).mean()) if flat.size else math.nan
            ax.set_title(f"{name}\nP(p < 0.05) = {rate:.3f}")
            ax.set_xlabel("null p-value")
        axes[0].set_ylabel("density (uniform = 1)")
        fig.suptitle(title)
        return fig

    return styled(draw)()




def _summary_candidate(cfg: Any) -> str:
    """The candidate that is what ``ablation.test`` (and ``ablation.clip_term``) make the summary use."""
    if cfg.test == "seed_t":
        return "seed_t" if cfg.clip_term else "seed_t_no_clip"
    return cfg.test


def run_calibration(params: Any, runs_dir: str | Path | None = None, out_dir: str | Path | None = None) -> dict:
    """``bigfive compare --calibrate``: calibration.json, calibration.png and power.md from the reference's
    calibration runs (``<runs_dir>/<reference>/seed<N>``, N in ablation.calibration.seeds)."""
    from bigfive.ablation.runs import clip_scores, common_clips, load_runs, traits_of
    from bigfive.config import ConfigError
    from bigfive.evaluation.plots import save
    from bigfive.utils.io import write_json, write_text

    cfg, cal = params.ablation, params.ablation.calibration
    runs_dir = Path(runs_dir or cal.runs_dir)
    out_dir = Path(out_dir or cfg.results_dir)
    runs = load_runs(runs_dir, [cfg.reference], list(cal.seeds))
    own = sorted(runs.runs.get(cfg.reference, []), key=lambda r: r.seed)
    per_arm = len(cfg.seeds)
    if per_arm < 2:
        raise ConfigError("ablation.seeds", f"has {per_arm} seed: a seed-level test needs 2 or more per arm")
    if len(own) < 2 * per_arm:
        raise FileNotFoundError(f"{runs_dir}: {len(own)} usable calibration runs of {cfg.reference}, need "
                                f"2 x {per_arm} (ablation.calibration.seeds; run `bigfive ablate --variant "
                                f"{cfg.reference} --seed N --out {runs_dir}/{cfg.reference}/seedN`)")
    traits = traits_of(runs)
    columns = [*traits, "mean"]
    scores = clip_scores(own, common_clips([own]))
    record: dict[str, Any] = {
        "runs": {"dir": str(runs_dir), "variant": cfg.reference, "seeds": [r.seed for r in own],
                 "clips": int(scores.shape[1]), "epochs": cfg.epochs},
        "design": f"A/A: {per_arm} vs {per_arm} disjoint seeds drawn from {len(own)}, test clips resampled with "
                  "replacement (paired); every rejection is a false positive",
        "per_arm": per_arm, "datasets": cal.datasets, "bootstrap": cal.bootstrap, "target_at_0.05": list(TARGET),
        "summary_test": _summary_candidate(cfg), "by_seed_count": {}}
    pvals_main = None
    for n in sorted({3, per_arm} & set(range(2, len(own) // 2 + 1))):
        rec, pvals = calibrate(scores, columns, n, cal.datasets, resamples=cal.bootstrap, seed=params.seed)
        record["by_seed_count"][str(n)] = rec
        if n == per_arm:
            pvals_main = pvals
    record["calibrated"] = record["by_seed_count"][str(per_arm)].get(record["summary_test"], {}).get("calibrated")
    from bigfive.ablation.power import report as power_report

    record["power"], power_md = power_report(scores, columns, own, cfg, out_dir)
    at_mdd = next(r for r in record["power"]["tables"]["exploratory"] if r["seeds"] == per_arm)
    shifts = np.array([at_mdd[f"mdd_{c}"] for c in columns])
    measured = shifted_power(scores, per_arm, shifts, cal.datasets, alpha=cfg.alpha, seed=params.seed)
    record["power"]["permutation_at_t_mdd"] = {c: float(v) for c, v in zip(columns, measured)}
    power_md += ("\n## The permutation test at these differences (measured)\n\nThe tables are the t test's (closed "
                 "form). The summary's test is the seed permutation test: its rejection rate when one arm of each A/A "
                 f"dataset ({cal.datasets}) is moved by the exploratory {per_arm}-seed difference above "
                 f"(alpha = {cfg.alpha:g}): " + ", ".join(f"{c} {v:.2f}" for c, v in zip(columns, measured)) + ".\n")
    paths = {"json": out_dir / "calibration.json", "png": out_dir / "calibration.png", "md": out_dir / "power.md"}
    write_json(paths["json"], record)
    write_text(paths["md"], power_md)
    save(calibration_figure(pvals_main, columns, f"Null p-values, {per_arm} vs {per_arm} seeds of {cfg.reference} "
                                                 f"({cal.datasets} A/A datasets, all columns)"), paths["png"])
    for name, rec in record["by_seed_count"][str(per_arm)].items():
        r = rec["alpha=0.05"]["mean"]
        log.info("%-15s rejects %.3f [%.3f, %.3f] of nulls at alpha 0.05 (mean accuracy, %d vs %d seeds)", name,
                 r["rate"], *r["ci95"], per_arm, per_arm)
    return record


__all__ = ["CANDIDATES", "ALPHAS", "TARGET", "null_pvalues", "rejection", "calibrate", "calibration_figure",
           "run_calibration"]
