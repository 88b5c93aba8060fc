"""The ablation's summary figure: one row per variant; Δ vs the reference with its CI, then each accuracy with one
point per seed and the mean over seeds with its CI."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the figure's types; matplotlib itself is imported only when a figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

ALPHA = 0.05  # what the figure marks as significant (BH q below it)
REFERENCE_SHADE = "#fff3c4"  # the figure's background of the reference's row (and its duplicates')


def plot_summary(rows: list[dict[str, Any]], traits: list[str], path: str | Path, reference: str) -> Path:
    """Write :func:`summary_figure` as PNG to ``path``."""
    from bigfive.evaluation.plots import save

    return save(summary_figure(rows, traits, reference), path)


def summary_figure(rows: list[dict[str, Any]], traits: list[str], reference: str) -> Figure:
    """One row per variant, shared by every panel. Left: Δ mean accuracy vs the reference with its 95% CI
    (filled: BH q < 0.05). Then the mean accuracy and each trait's: one point per seed, the mean
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
    ax.set_xlabel("difference, CI (accuracy)")
    ax.set_yticks(y, [_row_label(r) for r in rows])
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r["variant"] == reference:
            tick.set_fontweight("bold")


def _draw_delta(ax: Axes, yi: float, r: dict[str, Any]) -> None:
    """One variant's Δ: the CI as a bar, the point filled when the BH q-value is below ALPHA."""
    d, lo, hi = r["delta_mean_accuracy"], r["delta_ci95_low"], r["delta_ci95_high"]
    if not math.isfinite(d):
        return
    if math.isfinite(lo):
        ax.plot([lo, hi], [yi, yi], color="k", lw=1.2, solid_capstyle="butt")
    significant = math.isfinite(r["p_value_q"]) and r["p_value_q"] < ALPHA
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
            Line2D([], [], ls="none", marker="o", mec="k", mfc="k", ms=4.5, label=f"Δ, BH q < {ALPHA:g}"),
            Line2D([], [], ls="none", marker="o", mec="k", mfc="white", ms=4.5, label="Δ, not significant"),
            Line2D([], [], color=BASELINE_COLOR, ls="--", label="train-mean baseline")]


