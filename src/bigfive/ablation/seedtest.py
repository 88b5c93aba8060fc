"""The ablation's tests of a variant against a reference at the level of seeds, each with its confidence interval
by inverting the same test, so "the CI excludes 0" and "p < α" are the same statement and a bound on 0 means
p ≈ α (docs/statistics.md has the calibration of each).

``ablation.test: permutation`` (the default, :func:`permutation`): whole seeds are relabelled between the two
models; exact over all C(S_v + S_r, S_v) labelings (252 at 5 vs 5: two-sided floor 2 / 252 = 0.008). It is the one
candidate whose false-positive rate on A/A splits of the real runs is within [0.03, 0.07] at α = 0.05 on every
column. Its CI is the set of shifts Δ0 the test does not reject.

``ablation.test: seed_t`` (:func:`seed_t`): Welch t over the per-seed mean accuracies. The difference of mean
accuracies, variant − reference, has

    SE² = s_v² / S_v + s_r² / S_r  [+ var_n(d_n) / N with ``ablation.clip_term``]

with s² the sample variance of the per-seed mean accuracies of each model (seeds are independent, not paired:
seed k of two models shares nothing but the number) and d_n the clip-paired difference of the seed-averaged
per-clip accuracies. t = Δ / SE is referred to a t distribution with Welch–Satterthwaite degrees of freedom; the
CI is Δ ± t_{1−α/2, df} SE. On the real runs it is conservative where a few seeds miss the interaction (the seed
means are then far from normal): 0.7 % false positives on agreeableness at α = 0.05."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

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
    floor: float = 0.0  # the smallest p the test can return: none for the t test

    def p_greater(self, x: float) -> np.ndarray:
        """One-sided p of H0 Δ <= x (H1 Δ > x) from the same t distribution."""
        from scipy import stats as st

        with np.errstate(divide="ignore", invalid="ignore"):
            return st.t.sf((self.delta - x) / self.se, self.df)

    def p_less(self, x: float) -> np.ndarray:
        """One-sided p of H0 Δ >= x (H1 Δ < x)."""
        from scipy import stats as st

        with np.errstate(divide="ignore", invalid="ignore"):
            return st.t.cdf((self.delta - x) / self.se, self.df)


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


def one_sided_p(res: TResult | PermResult, kind: Kind, margin: float = 0.0) -> np.ndarray:
    """p-value of a declared hypothesis from the same test that gave ``res`` (t or permutation).

    ``superiority``: H1 Δ > margin (one-sided). ``equivalence``: two one-sided tests (TOST), H1 |Δ| < margin; p is
    the larger of the two, so p < α ⇔ the (1 − 2α) CI lies inside (−margin, +margin). ``two_sided``: res.p.
    """
    if kind == "two_sided":
        return res.p
    if kind == "superiority":
        return res.p_greater(margin)
    if kind == "equivalence":
        return np.maximum(res.p_greater(-margin), res.p_less(margin))  # H0: Δ <= -margin; H0: Δ >= +margin
    raise ValueError(f"unknown hypothesis kind {kind!r}")


@dataclass(frozen=True)
class PermResult:
    """The seed permutation test of :func:`permutation`, with its CI by inversion (shift model).

    ``bounds`` (G − 1, M), sorted per column, are the shifts Δ0 at which each non-observed labeling's statistic
    crosses the observed one: testing H0 Δ = Δ0 against Δ > Δ0, labeling g counts as at least as extreme exactly
    when Δ0 >= bounds[g]. Every p-value and CI bound of the test is an order statistic of them.
    """

    delta: np.ndarray  # (M,)
    low: np.ndarray  # (M,) CI at ``level``, equal tails
    high: np.ndarray
    level: float
    bounds: np.ndarray
    labelings: int

    @property
    def p(self) -> np.ndarray:
        """(M,) two-sided: twice the smaller one-sided p at 0, capped at 1."""
        return np.minimum(1.0, 2 * np.minimum(self.p_greater(0.0), self.p_less(0.0)))

    @property
    def floor(self) -> float:
        """The smallest two-sided p: 2 / labelings."""
        return min(1.0, 2 / self.labelings)

    def p_greater(self, x: float) -> np.ndarray:
        """One-sided p of H0 Δ <= x (H1 Δ > x): the observed labeling plus those at least as large."""
        return (1 + (self.bounds <= x).sum(axis=0)) / self.labelings

    def p_less(self, x: float) -> np.ndarray:
        """One-sided p of H0 Δ >= x (H1 Δ < x)."""
        return (1 + (self.bounds >= x).sum(axis=0)) / self.labelings


def _labelings(total: int, sv: int, max_exact: int, resamples: int, seed: int) -> np.ndarray:
    """(G, total) masks of the seeds labelled "variant": every labeling when few, else random ones; row 0 observed."""
    if math.comb(total, sv) <= max_exact:
        groups = np.array([g for g in itertools.combinations(range(total), sv) if g != tuple(range(sv))])
    else:
        rng = np.random.default_rng(seed)
        groups = np.argsort(rng.random((resamples, total)), axis=1)[:, :sv]
    groups = np.concatenate([np.arange(sv)[None], groups.reshape(-1, sv)])
    mask = np.zeros((len(groups), total), dtype=bool)
    np.put_along_axis(mask, groups, True, axis=1)
    return mask


def permutation(variant: np.ndarray, reference: np.ndarray, *, level: float = 0.95, max_exact: int = 20000,
                resamples: int = 9999, seed: int = 0) -> PermResult:
    """Permutation test of the difference of mean accuracies over whole seeds, and its CI by inverting it.

    Under H0 Δ = Δ0 (a shift), the variant's per-seed means minus Δ0 and the reference's are exchangeable, so any
    relabeling of whole seeds is as likely as the observed one. Labeling g with k_g of the variant's seeds in the
    "variant" group has the statistic stat_g − Δ0 c_g, with c_g = k_g / S_v − (S_v − k_g) / S_r < 1; it is at least
    the observed Δ − Δ0 when Δ0 >= b_g = (Δ − stat_g) / (1 − c_g). The one-sided p at Δ0 counts the b_g <= Δ0, so
    the CI's bounds are order statistics of the b_g and "the CI excludes Δ0" ⇔ "p < 1 − level" exactly.

    Exact over all C(S_v + S_r, S_v) labelings when there are at most ``max_exact``, else ``resamples`` random ones
    plus the observed one. The clips enter only through each seed's mean (calibrated, docs/statistics.md).
    """
    v, r = stats.score_arrays(variant, reference)
    seeds = np.concatenate([v.mean(axis=1), r.mean(axis=1)])  # (S, M)
    total, sv = seeds.shape[0], v.shape[0]
    mask = _labelings(total, sv, max_exact, resamples, seed)
    stat = mask @ seeds / sv - (~mask) @ seeds / (total - sv)  # (G, M)
    k = mask[:, :sv].sum(axis=1)
    c = k / sv - (sv - k) / (total - sv)
    delta = stat[0]
    bounds = np.sort((delta[None] - stat[1:]) / (1 - c[1:, None]), axis=0)
    g = len(mask)
    # labelings each tail may hold beside the observed one: p_greater(Δ0) < (1 - level) / 2 <=> (1 + count) < that
    tail = math.ceil((1 - level) / 2 * g - 1e-9) - 1
    low = bounds[tail - 1] if tail >= 1 else np.full(delta.shape, -np.inf)
    high = bounds[len(bounds) - tail] if tail >= 1 else np.full(delta.shape, np.inf)
    return PermResult(delta, low, high, level, bounds, g)


def seed_level(variant: np.ndarray, reference: np.ndarray, test: str, level: float,
               clip_term: bool = False) -> TResult | PermResult:
    """The seed-level test ``test`` (permutation | seed_t) at CI ``level``: what the table and the primaries use."""
    if test == "permutation":
        return permutation(variant, reference, level=level)
    return seed_t(variant, reference, level=level, clip_term=clip_term)


def permutation_p(variant: np.ndarray, reference: np.ndarray, **kw: Any) -> tuple[np.ndarray, float]:
    """(two-sided p per column, floor) of :func:`permutation` (the calibration's candidate)."""
    res = permutation(variant, reference, **kw)
    return res.p, res.floor


__all__ = ["TResult", "PermResult", "Kind", "welch", "seed_t", "one_sided_p", "permutation", "permutation_p",
           "seed_level", "variance_terms"]
