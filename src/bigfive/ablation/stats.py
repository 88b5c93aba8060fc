"""Summary statistics over seeds and paired significance tests over test clips (pure numpy/scipy).

The paired test compares a variant with the reference on the same test clips. Per clip the error
is the absolute error averaged over traits (the ChaLearn metric is 1 minus its mean) and then
averaged over seeds, so each clip contributes one paired difference whatever the seed count, and
seed-to-seed noise is averaged out rather than counted as independent clips.
"""

from __future__ import annotations

import math

import numpy as np

# Differences smaller than this are ties: predictions are stored with 6 decimals, so anything far below
# that is float rounding, not a model difference.
TIE = 1e-9


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; the std is NaN for a single seed."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; ties (zeros) are dropped, 1.0 when all are."""
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    diff = np.where(np.abs(diff) < TIE, 0.0, diff)
    if not diff.any():
        return 1.0
    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def bootstrap_diff(diff: np.ndarray, resamples: int, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap over clips of the mean difference: (95% CI low, high, two-sided p-value).

    The p-value is twice the smaller share of resampled means on either side of zero (at least
    1 / resamples, so it never reads as exactly 0).
    """
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[idx].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    if np.all(np.abs(diff) < TIE):
        return float(low), float(high), 1.0
    tail = min((means <= 0).mean(), (means >= 0).mean())
    return float(low), float(high), float(min(1.0, max(2 * tail, 1.0 / resamples)))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


__all__ = ["mean_std", "wilcoxon_p", "bootstrap_diff", "holm"]
