"""The ablation's test of a variant against a reference: a seed-level Welch t test with the clip-paired variance
folded in, whose confidence interval is the inversion of the same test (``ablation.test: seed_t``).

Why this construction (docs/statistics.md has the calibration): the unit of replication of a training recipe is
the seed, and the test clips are a sample too. The difference of mean accuracies, variant − reference, has

    SE² = s_v² / S_v + s_r² / S_r + var_n(d_n) / N

with s² the sample variance of the per-seed mean accuracies of each model (seeds are independent, not paired:
seed k of two models shares nothing but the number) and d_n the clip-paired difference of the seed-averaged
per-clip accuracies (clips are paired: the same clip in both). The statistic t = Δ / SE is referred to a t
distribution with Welch–Satterthwaite degrees of freedom over the three variance terms. The CI is
Δ ± t_{1−α/2, df} SE: the set of differences the same test would not reject, so "the CI excludes 0" and
"p < α" are the same statement, and a bound on 0 means p = α.

The clip term partly double-counts the seed × clip noise already in s² (it is conservative when the two models
differ only by seed noise); it is what keeps the test honest when a variant is better on some clips and worse
on others. The seed-level permutation test (:func:`permutation_p`) is the distribution-free check used by the
calibration; it has no clip term and a floor of 1 / C(S_v + S_r, S_v).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bigfive.ablation import stats

Kind = Literal["two_sided", "superiority", "equivalence"]


@dataclass(frozen=True)
class TResult:
    """Per statistic column: difference, standard error, degrees of freedom, CI by test inversion, p-value."""

    delta: np.ndarray  # (M,) mean(variant) - mean(reference)
    se: np.ndarray  # (M,)
    df: np.ndarray  # (M,) Welch-Satterthwaite over the terms used
    low: np.ndarray  # (M,) CI at ``level`` (two-sided, equal tails)
    high: np.ndarray
    p: np.ndarray  # (M,) two-sided
    level: float


def variance_terms(variant: np.ndarray, reference: np.ndarray, clip_term: bool = True
                   ) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """(Δ, [(variance term, its degrees of freedom), ...]) of the difference of means, per column."""
    v, r = stats.score_arrays(variant, reference)
    sv, n, _ = v.shape
    sr = r.shape[0]
    a, b = v.mean(axis=1), r.mean(axis=1)  # (S, M) per-seed mean accuracy
    delta = a.mean(axis=0) - b.mean(axis=0)
    terms = [(a.var(axis=0, ddof=1) / sv if sv > 1 else np.full(delta.shape, math.nan), sv - 1),
             (b.var(axis=0, ddof=1) / sr if sr > 1 else np.full(delta.shape, math.nan), sr - 1)]
    if clip_term and n > 1:
        d = v.mean(axis=0) - r.mean(axis=0)  # (N, M) clip-paired difference of the seed averages
        terms.append((d.var(axis=0, ddof=1) / n, n - 1))
    return delta, terms


def welch(terms: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(variance, Welch-Satterthwaite df) of a sum of independent variance terms, each with its own df.

    A term that is 0 adds nothing to either; with no variance at all the df is infinite."""
    var = sum(t for t, _ in terms)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = sum(np.where(np.asarray(t) > 0, np.asarray(t) ** 2 / k, 0.0) for t, k in terms)
        return var, np.where(var > 0, var ** 2 / spread, np.inf)


def seed_t(variant: np.ndarray, reference: np.ndarray, *, level: float = 0.95, clip_term: bool = True) -> TResult:
    """Welch t test of the difference of mean accuracies over seeds (and clips), with its inverted CI.

    ``variant`` (S_v, N, M) and ``reference`` (S_r, N, M) hold a per-clip score for each seed, test clip and
    column. Needs at least 2 seeds on each side (NaN otherwise: one seed says nothing about seed variance).
    """
    from scipy import stats as st

    delta, terms = variance_terms(variant, reference, clip_term)
    var, df = welch(terms)
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(se > 0, delta / se, np.where(np.abs(delta) > 0, np.inf, 0.0))
        p = 2 * st.t.sf(np.abs(tstat), df)
        crit = st.t.ppf(0.5 + level / 2, df)
    unknown = np.isnan(var)  # a side with one seed: its seed variance is unknown, so is everything after it
    p, df = np.where(unknown, np.nan, p), np.where(unknown, np.nan, df)
    return TResult(delta, se, df, delta - crit * se, delta + crit * se, p, level)


def one_sided_p(res: TResult, kind: Kind, margin: float = 0.0) -> np.ndarray:
    """p-value of a declared hypothesis from the same t distribution.

    ``superiority``: H1 Δ > margin (one-sided). ``equivalence``: two one-sided tests (TOST), H1 |Δ| < margin; p is
    the larger of the two, so p < α ⇔ the (1 − 2α) CI lies inside (−margin, +margin). ``two_sided``: res.p.
    """
    from scipy import stats as st

    if kind == "two_sided":
        return res.p
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "superiority":
            return st.t.sf((res.delta - margin) / res.se, res.df)
        if kind == "equivalence":
            lower = st.t.sf((res.delta + margin) / res.se, res.df)  # H0: Δ <= -margin
            upper = st.t.cdf((res.delta - margin) / res.se, res.df)  # H0: Δ >= +margin
            return np.maximum(lower, upper)
    raise ValueError(f"unknown hypothesis kind {kind!r}")


def permutation_p(variant: np.ndarray, reference: np.ndarray, *, max_exact: int = 20000,
                  resamples: int = 9999, seed: int = 0) -> tuple[np.ndarray, float]:
    """(two-sided p per column, floor): relabel whole seeds between the two models (exchangeable under H0).

    Exact over all C(S_v + S_r, S_v) labelings when there are at most ``max_exact`` (the observed one included,
    so p >= floor = 1 / count), else ``resamples`` random ones plus the observed one.
    """
    v, r = stats.score_arrays(variant, reference)
    seeds = np.concatenate([v.mean(axis=1), r.mean(axis=1)])  # (S, M)
    total, sv = seeds.shape[0], v.shape[0]
    observed = seeds[:sv].mean(axis=0) - seeds[sv:].mean(axis=0)
    if math.comb(total, sv) <= max_exact:
        groups = np.array(list(itertools.combinations(range(total), sv)))
    else:
        rng = np.random.default_rng(seed)
        groups = np.concatenate([np.arange(sv)[None],
                                 np.argsort(rng.random((resamples, total)), axis=1)[:, :sv]])
    mask = np.zeros((len(groups), total), dtype=bool)
    np.put_along_axis(mask, groups, True, axis=1)
    first = mask @ seeds / sv
    rest = (~mask) @ seeds / (total - sv)
    stat = first - rest
    extreme = np.abs(stat) >= np.abs(observed) * (1 - 1e-12)
    return extreme.mean(axis=0), 1.0 / len(groups)


__all__ = ["TResult", "Kind", "welch", "seed_t", "one_sided_p", "permutation_p", "variance_terms"]
