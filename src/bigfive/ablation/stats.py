"""Summary statistics over seeds and significance tests of a variant against the reference (numpy/scipy).

The default test is the seed permutation test (:mod:`bigfive.ablation.seedtest`); this module holds the
shared helpers (mean/sd, Holm, Benjamini-Hochberg) and the alternatives. ``ablation.test: hierarchical``
treats seeds and test clips as sources of variance: a two-level bootstrap that resamples each model's seeds
and then the (paired) test clips (:func:`hierarchical_bootstrap`; it also gives each variant its own CI).
Its false-positive rate depends on which seeds fail to learn the interaction (docs/statistics.md).
``ablation.test: wilcoxon`` keeps the older clip-paired Wilcoxon signed-rank test (:func:`wilcoxon_p`), which
is conditional on the trained seeds (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Differences smaller than this are ties: predictions are stored with 6 decimals, so anything far below
# that is float rounding, not a model difference.
TIE = 1e-9
# resamples per vectorised block of the hierarchical bootstrap (bounds memory: block x clips x columns floats)
_BLOCK = 256


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; the std is NaN for a single seed."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; ties (zeros) are dropped, 1.0 when all are.

    Applied (``ablation.test: wilcoxon``) to the per-clip error averaged over each model's seeds, it
    tests whether the median difference over test clips is zero **for these trained runs**: the
    seeds are held fixed, so seed-to-seed variation never enters the p-value, and a small p says
    "these runs differ on this clip population", not "this training recipe is better".
    """
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    diff = np.where(np.abs(diff) < TIE, 0.0, diff)
    if not diff.any():
        return 1.0
    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass(frozen=True)
class BootstrapResult:
    """Per statistic column: observed difference, 95% percentile CI and two-sided p-value."""

    delta: np.ndarray  # (M,) observed mean(variant) - mean(reference)
    low: np.ndarray  # (M,) 2.5% quantile of the bootstrap differences
    high: np.ndarray  # (M,) 97.5% quantile
    p: np.ndarray  # (M,) two-sided shift-to-null p-value, in [1 / (B + 1), 1]
    resamples: int


def score_arrays(variant: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both models' per-clip scores as float (seeds, clips, columns) arrays (a 2-D pair gets one column)."""
    v = np.asarray(variant, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if v.ndim == 2:
        v, r = v[..., None], r[..., None]
    if v.ndim != 3 or r.ndim != 3 or v.shape[1:] != r.shape[1:]:
        raise ValueError(f"need (seeds, clips, columns) arrays with the same clips and columns, got {v.shape} and "
                         f"{r.shape}")
    return v, r


def _counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """(rows, n) multiplicities of ``n`` draws with replacement from ``range(n)``, one row per resample."""
    idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def hierarchical_bootstrap(variant: np.ndarray, reference: np.ndarray, resamples: int,
                           seed: int = 0) -> BootstrapResult:
    """Two-level bootstrap over seeds and test clips of the difference of means, variant - reference.

    ``variant`` (S_v, N, M) and ``reference`` (S_r, N, M): a per-clip score (accuracy, 1 - |error|)
    for each seed, test clip and statistic column (traits, and their mean); clip ``n`` is the same
    clip in both. The statistic of a column is the mean over seeds and clips of the variant minus
    the same for the reference (with equal clips per seed: the difference of the seed-averaged
    accuracies shown in the table). Each resample, independently:

    1. draws S_v seeds of the variant and S_r seeds of the reference with replacement, separately
       (runs are not paired across seeds: seed k of two models shares nothing but the number);
    2. draws N test clips with replacement, the **same** clip indices for both (clips are paired);
    3. computes the statistic on the drawn seeds x drawn clips (with multiplicities).

    CI: the 2.5% and 97.5% quantiles of the B resampled differences (percentile interval).
    p-value (shift to the null, Hall & Wilson 1991): T* = Δ* - Δ̂ estimates the sampling
    distribution of Δ̂ around the true difference, so under H0 (difference 0) Δ̂ is distributed as
    T*; p = (1 + #{b : |T*_b| >= |Δ̂|}) / (B + 1) (Davison & Hinkley 1997, eq. 4.11: never 0,
    at least 1 / (B + 1)). |Δ̂| < ``TIE`` counts as no difference: p = 1.

    With a single seed on a side, that side contributes no seed variance (only clips); with S
    seeds the seed level's variance is underestimated by the factor (S - 1) / S, the usual
    bootstrap bias, so few seeds make the test somewhat liberal, never seed-blind.
    Vectorised in blocks of resamples: one (block, N) x (N, (S_v + S_r) M) matrix product each.
    """
    v, r = score_arrays(variant, reference)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    sv, n, m = v.shape
    sr = r.shape[0]
    if sv == 0 or sr == 0 or n == 0:
        nan = np.full(m, math.nan)
        return BootstrapResult(nan, nan, nan, nan, resamples)
    observed = v.mean(axis=(0, 1)) - r.mean(axis=(0, 1))
    rng = np.random.default_rng(seed)
    # clips as rows, (seed, column) of both models as columns: one matrix product per block of resamples
    by_clip = np.concatenate([v, r]).transpose(1, 0, 2).reshape(n, (sv + sr) * m)
    deltas = np.empty((resamples, m))
    for start in range(0, resamples, _BLOCK):
        b = min(_BLOCK, resamples - start)
        wv = _counts(rng, b, sv) / sv  # (b, S_v) seed weights of the variant
        wr = _counts(rng, b, sr) / sr  # (b, S_r) of the reference, drawn independently
        wc = _counts(rng, b, n) / n  # (b, N) clip weights, shared by both
        per_seed = (wc @ by_clip).reshape(b, sv + sr, m)  # each seed's mean over the drawn clips
        deltas[start:start + b] = (np.einsum("bs,bsm->bm", wv, per_seed[:, :sv])
                                   - np.einsum("bs,bsm->bm", wr, per_seed[:, sv:]))
    low, high = np.quantile(deltas, [0.025, 0.975], axis=0)
    extreme = np.abs(deltas - observed) >= np.abs(observed) * (1 - 1e-12)  # relative slack: float noise
    p = (1.0 + extreme.sum(axis=0)) / (resamples + 1.0)
    p = np.where(np.abs(observed) < TIE, 1.0, p)
    return BootstrapResult(observed, low, high, p, resamples)


def holm(pvalues: list[float] | np.ndarray) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values (NaN stays NaN and is not counted in the family).

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    i-th smallest is max over j <= i of min(1, (m - j + 1) p_(j)); rejecting where it is below
    alpha controls the family-wise error rate at alpha under any dependence (Holm 1979).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def bh(pvalues: list[float] | np.ndarray) -> list[float]:
    """Benjamini-Hochberg q-values (NaN stays NaN and is not counted): the smallest false discovery rate at which
    each p-value would be called a discovery, q_(i) = min over j >= i of min(1, m p_(j) / j) (BH 1995).

    For the exploratory cells: rejecting where q < alpha controls the expected share of false discoveries among
    them (independent or positively dependent p-values), a weaker promise than Holm's family-wise error.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, min(1.0, m * p[i] / rank))
        out[i] = running
    return out.tolist()


def share_greater(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> float:
    """Share of all (a_i, b_j) pairs with a_i > b_j, ties counting one half (NaN when either is empty).

    Order-free (no pairing by seed number): the Mann-Whitney U of ``a`` against ``b`` over |a| |b|,
    i.e. the probability that a random run of ``a`` beats a random run of ``b``.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return math.nan
    diff = x[:, None] - y[None, :]
    return float(((diff > TIE).sum() + 0.5 * (np.abs(diff) <= TIE).sum()) / diff.size)


__all__ = ["mean_std", "wilcoxon_p", "hierarchical_bootstrap", "BootstrapResult", "holm", "bh", "share_greater",
           "score_arrays", "TIE"]
