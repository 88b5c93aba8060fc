"""Evaluation figures: one function per figure, returning its :class:`~matplotlib.figure.Figure`;
:func:`save` writes one as a PNG (150 dpi) atomically.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, Agg backend),
so they can be drawn from any thread and are freed once unreferenced. Every function takes plain
numpy arrays and dicts, so the figures can be tested on their data (axes, series, labels) and
regenerated without a model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bigfive.utils.io import atomic_path  # noqa: E402

DPI = 150
STYLE: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "legend.frameon": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False, "figure.titlesize": 11, "image.cmap": "viridis",
}
MODEL_COLOR, BASELINE_COLOR, FLOOR_COLOR = "#1f77b4", "#9e9e9e", "#d62728"
SCORE = "score (0–1)"  # the traits' unit: annotators' mean rating rescaled to [0, 1]

F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Draw under the shared style so every figure looks alike."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at 150 dpi (pixel size = figsize × 150, no tight cropping)."""
    path = Path(path)
    # under the shared style too: layout and text are finished at draw time, which is here
    with matplotlib.rc_context(STYLE), atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _pretty(trait: str) -> str:
    return trait.replace("_", " ").capitalize()


@styled
def pred_vs_true(pred: np.ndarray, true: np.ndarray, traits: Sequence[str], *,
                 baseline_means: np.ndarray | None = None, split: str = "test") -> Figure:
    """One panel per trait: predicted vs true score, identity line, train-mean line, r / CCC / accuracy."""
    from bigfive.evaluation.metrics import accuracy, ccc, pearson

    k = len(traits)
    fig = new_figure(2.9 * k, 3.3)
    axes = fig.subplots(1, k, squeeze=False)[0]
    for j, (ax, trait) in enumerate(zip(axes, traits)):
        t, p = true[:, j], pred[:, j]
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color="k", alpha=0.6, label="identity")
        if baseline_means is not None:
            ax.axhline(baseline_means[j], ls=":", lw=1.2, color=BASELINE_COLOR, label="train mean")
        ax.scatter(t, p, s=10, alpha=0.6, color=MODEL_COLOR, edgecolors="none", label="clip")
        ax.text(0.04, 0.96, f"r = {pearson(p, t):.2f}\nCCC = {ccc(p, t):.2f}\nacc = {accuracy(p, t):.3f}",
                transform=ax.transAxes, va="top", fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.8", "alpha": 0.9})
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", title=_pretty(trait),
               xlabel=f"true {SCORE}", ylabel=f"predicted {SCORE}" if j == 0 else "")
        if j == 0:
            ax.legend(loc="lower right")
    fig.suptitle(f"Predicted vs true trait scores ({split} split, {len(true)} clips)")
    return fig


@styled
def residuals(pred: np.ndarray, true: np.ndarray, traits: Sequence[str], *, split: str = "test") -> Figure:
    """Per trait: residual histogram (bias) and residual vs true (a negative slope = shrinkage to the mean)."""
    k = len(traits)
    res = pred - true
    lim = max(float(np.abs(res).max()), 1e-3) * 1.05
    fig = new_figure(2.9 * k, 5.6)
    axes = fig.subplots(2, k, squeeze=False)
    for j, trait in enumerate(traits):
        top, bottom = axes[0, j], axes[1, j]
        top.hist(res[:, j], bins=min(30, max(5, len(res) // 4)), range=(-lim, lim), color=MODEL_COLOR, alpha=0.8)
        top.axvline(0, color="k", lw=1, alpha=0.6)
        top.axvline(res[:, j].mean(), color=FLOOR_COLOR, lw=1.2, ls="--", label=f"mean {res[:, j].mean():+.3f}")
        top.set(title=_pretty(trait), xlabel="residual, predicted − true (score)", ylabel="clips" if j == 0 else "")
        top.legend(loc="upper right")
        bottom.scatter(true[:, j], res[:, j], s=10, alpha=0.6, color=MODEL_COLOR, edgecolors="none")
        bottom.axhline(0, color="k", lw=1, alpha=0.6)
        if np.ptp(true[:, j]) > 1e-9 and len(true) > 1:
            slope, icpt = np.polyfit(true[:, j], res[:, j], 1)
            xs = np.array([true[:, j].min(), true[:, j].max()])
            bottom.plot(xs, icpt + slope * xs, color=FLOOR_COLOR, lw=1.2, label=f"fit slope {slope:+.2f}")
            bottom.legend(loc="upper right")
        bottom.set(ylim=(-lim, lim), xlabel=f"true {SCORE}", ylabel="residual (score)" if j == 0 else "")
    fig.suptitle(f"Residuals per trait ({split} split): bias (top) and shrinkage toward the mean (bottom)")
    return fig


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(h.get("epoch", i + 1), h[key]) for i, h in enumerate(history)
           if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts)
    return np.asarray(x, float), np.asarray(y, float)


def _trait_key(entry: Mapping[str, Any], trait: str) -> str | None:
    """Find the per-trait validation accuracy key whatever its exact spelling (val_acc_<t>, val_<t>_accuracy)."""
    for key in entry:
        if key.startswith("val") and trait in key and "acc" in key:
            return key
    return None


@styled
def training_curves(history: Sequence[Mapping[str, Any]], *, traits: Sequence[str] = (),
                    baseline_mean_accuracy: float | None = None, loss: str = "l1") -> Figure:
    """Losses, validation mean accuracy (per trait thin) and learning rate per epoch from history.json."""
    fig = new_figure(12, 3.6)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    for key, label, ls in (("train_loss", "train", "-"), ("val_loss", "validation", "--")):
        x, y = _series(history, key)
        if len(x):
            ax_loss.plot(x, y, ls=ls, marker="o" if len(x) < 30 else None, ms=3, label=label)
    unit = {"l1": "mean |error|, score", "mse": "mean squared error, score²"}.get(loss, loss)
    ax_loss.set(title=f"Loss ({loss.upper()})", xlabel="epoch", ylabel=f"loss ({unit})")
    if ax_loss.lines:
        ax_loss.legend()

    x, y = _series(history, "val_mean_accuracy")
    if len(x):
        ax_acc.plot(x, y, color=MODEL_COLOR, lw=2, label="mean")
        best = int(np.argmax(y))
        ax_acc.scatter([x[best]], [y[best]], color=FLOOR_COLOR, zorder=5,
                       label=f"best {y[best]:.4f} (epoch {x[best]:g})")
    for trait in traits:
        key = _trait_key(history[0], trait) if history else None
        if key:
            tx, ty = _series(history, key)
            ax_acc.plot(tx, ty, lw=0.8, alpha=0.6, label=_pretty(trait))
    if baseline_mean_accuracy is not None:
        ax_acc.axhline(baseline_mean_accuracy, ls=":", color=BASELINE_COLOR, label="train-mean baseline")
    ax_acc.set(title="Validation accuracy (1 − MAE)", xlabel="epoch", ylabel="accuracy (1 − MAE)")
    if ax_acc.lines or ax_acc.collections:
        ax_acc.legend(loc="best", ncol=2, fontsize=7)

    x, y = _series(history, "lr")
    if len(x):
        ax_lr.plot(x, y, color="#2ca02c")
        if (y > 0).all() and y.max() / y.min() > 20:
            ax_lr.set_yscale("log")
    ax_lr.set(title="Learning rate", xlabel="epoch", ylabel="learning rate (per step)")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", color="0.5")
    fig.suptitle(f"Training history ({len(history)} epochs)")
    return fig


@styled
def accuracy_bars(summary: Mapping[str, Any], traits: Sequence[str], *, noise_floor: float | None = None,
                  split: str = "test") -> Figure:
    """Left: accuracy per trait, model vs train-mean baseline (+ noise floor, bootstrap CI on the mean).
    Right: Pearson r and CCC per trait, where the constant baseline scores 0 by definition."""
    names = [*traits, "mean"]
    model = [summary["traits"][t]["accuracy"] for t in traits] + [summary["mean_accuracy"]]
    has_base = "baseline_mean_accuracy" in summary
    base = ([summary["traits"][t]["baseline_accuracy"] for t in traits] + [summary["baseline_mean_accuracy"]]
            if has_base else None)
    fig = new_figure(11, 3.9)
    ax_acc, ax_r = fig.subplots(1, 2)
    x = np.arange(len(names))
    w = 0.38 if has_base else 0.6
    ax_acc.bar(x - (w / 2 if has_base else 0), model, w, color=MODEL_COLOR, label="model")
    if base is not None:
        ax_acc.bar(x + w / 2, base, w, color=BASELINE_COLOR, label="train-mean baseline")
    if "mean_accuracy_ci95_low" in summary:
        m = summary["mean_accuracy"]
        err = [[m - summary["mean_accuracy_ci95_low"]], [summary["mean_accuracy_ci95_high"] - m]]
        ax_acc.errorbar([x[-1] - (w / 2 if has_base else 0)], [m], yerr=err, color="k", capsize=4, lw=1.2,
                        label="95% bootstrap CI")
    values = model + (base or [])
    if noise_floor is not None:
        ax_acc.axhline(noise_floor, ls="--", color=FLOOR_COLOR, lw=1.2, label=f"noise floor {noise_floor:.3f}")
        values.append(noise_floor)
    lo = max(0.0, math.floor((min(values) - 0.03) * 20) / 20)
    hi = min(1.0, max(values) + 0.02)
    ax_acc.set(ylim=(lo, hi), xticks=x, xticklabels=[_pretty(n) for n in names],
               ylabel=f"accuracy, 1 − MAE (axis from {lo:.2f})", title=f"Accuracy per trait ({split})")
    ax_acc.tick_params(axis="x", rotation=25)

    r = [summary["traits"][t]["pcc"] for t in traits] + [summary["pcc"]]
    c = [summary["traits"][t]["ccc"] for t in traits] + [summary["ccc"]]
    ax_r.bar(x - 0.2, r, 0.4, color=MODEL_COLOR, label="Pearson r")
    ax_r.bar(x + 0.2, c, 0.4, color="#ff7f0e", label="CCC (Lin)")
    ax_r.axhline(0, color="k", lw=0.8)
    ax_r.set(ylim=(min(0.0, *r, *c) - 0.05, 1.0), xticks=x, xticklabels=[_pretty(n) for n in names],
             ylabel="correlation (unitless)", title="Agreement beyond the mean (baseline = 0)")
    ax_r.tick_params(axis="x", rotation=25)
    handles = [h for ax in (ax_acc, ax_r) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    return fig


def _streams(direction: str) -> tuple[str, str]:
    """'static_to_dynamic' -> ('static', 'dynamic'): query stream, key stream."""
    if "_to_" in direction:
        q, k = direction.split("_to_", 1)
        return q, k
    return "query", "key"


@styled
def attention_heads(attention: Mapping[str, Sequence[np.ndarray]], *, clip_id: str = "") -> Figure:
    """Heatmaps for one clip: rows = direction × layer, columns = heads; each row of a map sums to 1."""
    rows = [(d, layer, np.asarray(w)) for d, ws in attention.items() for layer, w in enumerate(ws)]
    heads = max(w.shape[0] for _, _, w in rows)
    fig = new_figure(2.4 * heads + 0.9, 2.5 * len(rows) + 0.5)
    axes = fig.subplots(len(rows), heads, squeeze=False)
    vmax = max(float(w.max()) for _, _, w in rows)
    image = None
    for i, (direction, layer, w) in enumerate(rows):
        q, k = _streams(direction)
        for h in range(heads):
            ax = axes[i, h]
            ax.grid(False)
            if h >= w.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(w[h], vmin=0, vmax=vmax, origin="upper", interpolation="nearest")
            tq, tk = w[h].shape
            ax.set_xticks(range(tk) if tk <= 16 else range(0, tk, max(1, tk // 8)))
            ax.set_yticks(range(tq) if tq <= 16 else range(0, tq, max(1, tq // 8)))
            ax.set_xlabel(f"{k} token (frame t)")
            ax.set_ylabel(f"{q} token (frame t)" if h == 0 else "")
            ax.set_title(f"{q}→{k}, layer {layer + 1}, head {h + 1}", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (row sums to 1)")
    fig.suptitle(f"Cross-attention per head, clip {clip_id}: queries (rows) attend to keys (columns)")
    return fig


@styled
def attention_entropy(entropy: Mapping[str, np.ndarray], key_len: Mapping[str, int]) -> Figure:
    """Mean attention entropy per head (nats) against the uniform-attention maximum ln T."""
    labels, values, colors = [], [], []
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for i, (direction, ent) in enumerate(entropy.items()):
        q, k = _streams(direction)
        ent = np.atleast_2d(np.asarray(ent))  # (layers, heads)
        for layer in range(ent.shape[0]):
            for h in range(ent.shape[1]):
                labels.append(f"{q}→{k}\nL{layer + 1} H{h + 1}")
                values.append(float(ent[layer, h]))
                colors.append(palette[i % len(palette)])
    fig = new_figure(max(5.0, 0.75 * len(values) + 1.5), 3.8)
    ax = fig.subplots()
    ax.bar(range(len(values)), values, color=colors)
    lens = sorted(set(key_len.values()))
    for t in lens:
        ax.axhline(math.log(t), ls="--", color=FLOOR_COLOR, lw=1.2,
                   label=f"uniform attention: ln {t} = {math.log(t):.2f} nats")
    ax.axhline(0, color="k", lw=0.8)
    top = max([math.log(t) for t in lens] + values + [0.1]) * 1.15
    ax.set(ylim=(0, top), xticks=range(len(values)), ylabel="mean attention entropy (nats)",
           title="Attention entropy per head (0 = one frame, ln T = spread evenly), averaged over clips and queries")
    ax.set_xticklabels(labels, fontsize=7)
    ax.legend(loc="upper right")
    return fig


@styled
def attention_strip(crops: Sequence[np.ndarray], received: Sequence[Mapping[str, np.ndarray]],
                    clip_ids: Sequence[str]) -> Figure:
    """Per example clip: its face crops in a row, faded by the attention each frame receives, bars below.

    ``crops[i]`` is (T, 3, S, S) uint8; ``received[i]`` maps a direction to the (T,) attention its
    key frames receive (mean over layers, heads and queries; sums to 1).
    """
    n = len(crops)
    t_len, _, size, _ = crops[0].shape
    pad = max(1, size // 10)  # white gap between crops
    fig = new_figure(max(7.5, 1.05 * t_len + 1.2), 2.6 * n + 0.7)
    grid = fig.add_gridspec(2 * n, 1, height_ratios=[1.15, 0.9] * n)
    for i in range(n):
        shares = np.mean([np.asarray(v, float) for v in received[i].values()], axis=0)
        alpha = 0.2 + 0.8 * shares / max(float(shares.max()), 1e-12)
        # one image per clip (one axes, not T): crops faded toward white, each centred on its frame index
        row = np.full((size, t_len * (size + 2 * pad), 3), 255.0)
        for t in range(t_len):
            img = np.transpose(crops[i][t], (1, 2, 0)).astype(float)
            x0 = t * (size + 2 * pad) + pad
            row[:, x0:x0 + size] = img * alpha[t] + 255.0 * (1 - alpha[t])
        ax = fig.add_subplot(grid[2 * i])
        ax.imshow(row.astype(np.uint8), interpolation="nearest",
                  extent=(-0.5, t_len - 0.5, size / (size + 2 * pad), 0))
        ax.grid(False)
        ax.set_xticks(range(t_len), [f"t={t}" for t in range(t_len)], fontsize=7)
        ax.set_yticks([])
        ax.set_ylabel(clip_ids[i], fontsize=7)
        ax.spines[["left", "bottom"]].set_visible(False)
        ax.tick_params(length=0)
        ax = fig.add_subplot(grid[2 * i + 1])
        dirs = list(received[i])
        width = 0.8 / max(1, len(dirs))
        for j, direction in enumerate(dirs):
            q, k = _streams(direction)
            ax.bar(np.arange(t_len) + (j - (len(dirs) - 1) / 2) * width, received[i][direction], width,
                   label=f"{k} token t, queried by {q}")
        ax.axhline(1.0 / t_len, ls="--", color=FLOOR_COLOR, lw=1, label=f"uniform 1/T = {1 / t_len:.3f}")
        top = max(float(np.max(v)) for v in received[i].values())
        ax.set(xlim=(-0.5, t_len - 0.5), ylim=(0, max(top, 1.0 / t_len) * 1.45), xticks=range(t_len),
               xlabel="frame t", ylabel="received attention (share)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=7)
    fig.suptitle("Attention each frame receives (crops faded where it is low)")
    return fig


@styled
def group_accuracy(groups: Mapping[str, Any], *, split: str = "test") -> Figure:
    """Mean accuracy per demographic group (n in the labels) against the train-mean baseline."""
    attrs = list(groups)
    fig = new_figure(4.2 * len(attrs), 3.6)
    axes = fig.subplots(1, len(attrs), squeeze=False)[0]
    for ax, attr in zip(axes, attrs):
        per = groups[attr]["groups"]
        names = list(per)
        x = np.arange(len(names))
        model = [per[g]["mean_accuracy"] for g in names]
        ax.bar(x - 0.2, model, 0.4, color=MODEL_COLOR, label="model")
        values = list(model)
        if all("baseline_mean_accuracy" in per[g] for g in names):
            base = [per[g]["baseline_mean_accuracy"] for g in names]
            ax.bar(x + 0.2, base, 0.4, color=BASELINE_COLOR, label="train-mean baseline")
            values += base
        lo = max(0.0, math.floor((min(values) - 0.03) * 20) / 20)
        ax.set(ylim=(lo, min(1.0, max(values) + 0.02)), xticks=x,
               xticklabels=[f"{g}\n(n={per[g]['n']})" for g in names], ylabel=f"accuracy, 1 − MAE (axis from {lo:.2f})",
               title=f"{_pretty(attr)} (gap {groups[attr]['accuracy_gap']:.3f})")
    fig.legend(handles=axes[0].get_legend_handles_labels()[0], loc="outside lower center", ncol=2)
    fig.suptitle(f"Mean accuracy per demographic group ({split} split)")
    return fig

