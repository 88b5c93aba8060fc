"""The primary comparisons declared in ``params.yaml`` (``ablation.primaries``), tested with the table's seed-level
test (``ablation.test``: permutation or seed_t, :mod:`bigfive.ablation.seedtest`; the bootstrap and Wilcoxon have no
one-sided inversion here, so they fall back to the calibrated permutation) and adjusted with Holm over the
primaries only.

Each primary states its direction or margin before the run: ``superiority`` (H1: variant − versus > margin,
one-sided), ``equivalence`` (H1: |variant − versus| < margin, two one-sided tests) or ``two_sided``. Its CI is
the inversion of the same test: 1 − 2α for the one-sided and equivalence kinds (superiority ⇔ the lower bound is
above the margin; equivalence ⇔ the interval lies inside ±margin), 1 − α for two-sided.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bigfive.ablation import seedtest, stats
from bigfive.ablation.runs import Runs, clip_scores, common_clips, traits_of
from bigfive.config import ConfigError
from bigfive.config.ablation import PrimaryConfig


def _column(traits: list[str], trait: str, name: str) -> int:
    """Index of ``trait`` in clip_scores' columns (traits, then their mean last)."""
    if trait == "mean":
        return len(traits)
    if trait not in traits:
        raise ConfigError(f"ablation.primaries.{name}.trait",
                          f"{trait!r} is not a trait of these runs ({', '.join(traits)}, or 'mean')")
    return traits.index(trait)


def evaluate(runs: Runs, primaries: dict[str, PrimaryConfig], alpha: float = 0.05,
             clip_term: bool = False, test: str = "permutation") -> list[dict[str, Any]]:
    """One row per primary: Δ, CI, one-sided/TOST p, Holm-adjusted p over the primaries and the decision."""
    traits = traits_of(runs)
    test = test if test in ("permutation", "seed_t") else "permutation"
    rows = [_one(runs, name, spec, traits, alpha, clip_term, test) for name, spec in primaries.items()]
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows])):
        row["p_value_holm"] = adjusted
        row["decision"] = _decision(row, alpha)
    return rows


def _one(runs: Runs, name: str, spec: PrimaryConfig, traits: list[str], alpha: float, clip_term: bool,
         test: str) -> dict[str, Any]:
    row: dict[str, Any] = {"primary": name, "variant": spec.variant, "versus": spec.versus, "trait": spec.trait,
                           "kind": spec.kind, "margin": spec.margin, "seeds": "", "delta": math.nan,
                           "ci_low": math.nan, "ci_high": math.nan, "ci_level": math.nan, "p_value": math.nan}
    a, b = runs.runs.get(runs.same_as.get(spec.variant, spec.variant)), runs.runs.get(
        runs.same_as.get(spec.versus, spec.versus))
    if not a or not b:
        row["decision"] = "not run"
        return row
    j = _column(traits, spec.trait, name)
    clips = common_clips([a, b])
    level = 1 - alpha if spec.kind == "two_sided" else 1 - 2 * alpha
    res = seedtest.seed_level(clip_scores(a, clips)[..., j], clip_scores(b, clips)[..., j], test, level, clip_term)
    p = seedtest.one_sided_p(res, spec.kind, spec.margin)
    row.update(seeds=f"{len(a)} / {len(b)}", delta=float(res.delta[0]), ci_low=float(res.low[0]),
               ci_high=float(res.high[0]), ci_level=level, p_value=float(np.asarray(p)[0]), test=test,
               p_floor=res.floor / (1 if spec.kind == "two_sided" else 2))
    return row


def _decision(row: dict[str, Any], alpha: float) -> str:
    p = row.get("p_value_holm", math.nan)
    if not math.isfinite(p):
        return row.get("decision", "not tested")
    held = p < alpha
    if row["kind"] == "equivalence":
        return f"equivalent within ±{row['margin']:g}" if held else "equivalence not shown"
    if row["kind"] == "superiority":
        return f"{row['variant']} better" if held else "superiority not shown"
    return "different" if held else "no difference shown"


__all__ = ["evaluate"]
