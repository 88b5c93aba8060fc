"""The ``--explain`` figure for one clip: what the model saw and where its attention went.

Rows: (1) the T sampled face crops, each titled with its source frame and labelled with the
cross-attention it receives (mean over queries, heads and layers; uniform would be 1/T); (2) the
optical-flow magnitude at each sampled step (px, one shared colour scale), labelled likewise;
(3) the (query step x key step) attention map of each direction, and the predicted traits on the
0-1 scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bigfive.inference.results import ClipPrediction, Explanation
from bigfive.preprocess.flow import dequantize
from bigfive.utils.io import atomic_path

# Which stream's tokens are the keys of each attention direction (keys are what "receives" attention).
KEY_STREAM = {"dynamic_to_static": "face", "static_to_dynamic": "flow"}


def flow_magnitude(dynamic: np.ndarray, bound: float) -> np.ndarray:
    """(T, 2L, S, S) uint8 -> (T, S, S) float32 px: the mean magnitude over the L stacked flows."""
    v = dequantize(dynamic, bound)
    t, c, s, _ = v.shape
    v = v.reshape(t, c // 2, 2, s, s)
    return np.sqrt((v ** 2).sum(axis=2)).mean(axis=1)


def received_attention(attention: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """Stream ("face" / "flow") -> the (T,) attention each of its steps receives, or None without one.

    A key step receives the mean over the query steps of its (T_query, T_key) map column; keys are the
    stream named by :data:`KEY_STREAM`.
    """
    received = {d: a.mean(axis=0) for d, a in attention.items()}
    return {stream: next((a for d, a in received.items() if KEY_STREAM.get(d) == stream), None)
            for stream in ("face", "flow")}


def build_figure(pred: ClipPrediction, exp: Explanation):
    """The matplotlib Figure for one clip; the caller saves and closes it (``write_figure``)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the CLI and the app's workers only write files
    import matplotlib.pyplot as plt

    t_len = exp.static.shape[0]
    # ~1.25 in per step keeps the thumbnails readable; 10 in is what the bottom row needs
    fig = plt.figure(figsize=(max(10.0, 1.25 * t_len + 1.5), 8.0), layout="constrained")
    _draw(fig, pred, exp)
    return fig


def write_figure(path: str | Path, pred: ClipPrediction, exp: Explanation) -> None:
    """Write the labelled PNG for one clip (atomically)."""
    import matplotlib.pyplot as plt

    fig = build_figure(pred, exp)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _draw(fig, pred: ClipPrediction, exp: Explanation) -> None:
    """Lay out the three rows and draw every panel."""
    t_len = exp.static.shape[0]
    n_maps = max(len(exp.attention), 1)  # the "no cross-attention" note takes a map's place
    rows = fig.add_gridspec(3, 1, height_ratios=[1, 1, 1.6])
    # one column per step plus a thin last one (the flow colour bar; left empty above it so the
    # face crops line up with their flow)
    top = rows[0].subgridspec(1, t_len + 1, width_ratios=[1] * t_len + [0.08])
    mid = rows[1].subgridspec(1, t_len + 1, width_ratios=[1] * t_len + [0.08])
    bottom = rows[2].subgridspec(1, n_maps + 1, width_ratios=[1] * n_maps + [1.3])
    _suptitle(fig, pred)
    received = received_attention(exp.attention)
    _face_row(fig, top, exp, received["face"])
    _flow_row(fig, mid, exp, received["flow"])
    _attention_maps(fig, bottom, exp.attention)
    _traits_panel(fig.add_subplot(bottom[0, n_maps]), pred.traits)


def _suptitle(fig, pred: ClipPrediction) -> None:
    """Clip name and face quality; a quality warning turns the title red so it is not missed."""
    title = f"{Path(pred.clip).name}: face detection rate {pred.detection_rate:.2f}, " \
            f"mean confidence {pred.mean_confidence:.3f}"
    fig.suptitle(title + (f"\nWARNING: {pred.warning}" if pred.warning else ""), fontsize=11,
                 color="firebrick" if pred.warning else "black")


def _face_row(fig, top, exp: Explanation, att: np.ndarray | None) -> None:
    """Row 1: each step's face crop, titled with its source frame, labelled with the attention it receives."""
    for t in range(exp.static.shape[0]):
        ax = fig.add_subplot(top[0, t])
        ax.imshow(exp.static[t].transpose(1, 2, 0))  # (3, S, S) CHW -> HWC for imshow
        _bare(ax)
        ax.set_title(f"t={t} (frame {int(exp.indices[t])})", fontsize=8)
        if att is not None:
            ax.set_xlabel(f"attn {att[t]:.3f}", fontsize=8)
        if t == 0:
            ax.set_ylabel("face crop", fontsize=9)


def _flow_row(fig, mid, exp: Explanation, att: np.ndarray | None) -> None:
    """Row 2: each step's flow magnitude on one shared colour scale, then that scale's colour bar."""
    t_len = exp.static.shape[0]
    mag = flow_magnitude(exp.dynamic, exp.bound)
    # one scale so steps compare; the percentile keeps a few outlier pixels from washing the rest out,
    # the floor keeps a still clip's noise from filling the scale
    vmax = max(float(np.percentile(mag, 99.5)), 0.5)
    im = None
    for t in range(t_len):
        ax = fig.add_subplot(mid[0, t])
        im = ax.imshow(mag[t], cmap="magma", vmin=0.0, vmax=vmax)
        _bare(ax)
        if att is not None:
            ax.set_xlabel(f"attn {att[t]:.3f}", fontsize=8)
        if t == 0:
            ax.set_ylabel("flow magnitude", fontsize=9)
    fig.colorbar(im, cax=fig.add_subplot(mid[0, t_len])).set_label("flow magnitude (px)", fontsize=8)


def _attention_maps(fig, bottom, attention: dict[str, np.ndarray]) -> None:
    """Row 3 left: one (query step x key step) map per direction, or a note for a model without any."""
    if not attention:
        ax = fig.add_subplot(bottom[0, 0])
        ax.axis("off")
        ax.text(0.5, 0.5, "this model's fusion has no cross-attention", ha="center", va="center",
                transform=ax.transAxes)
        return
    for k, (direction, amap) in enumerate(attention.items()):
        ax = fig.add_subplot(bottom[0, k])
        # each map on its own scale (its max; the floor avoids a zero-width range)
        shown = ax.imshow(amap, cmap="viridis", vmin=0.0, vmax=max(float(amap.max()), 1e-6))
        queries, keys = ("face", "flow") if KEY_STREAM.get(direction) == "flow" else ("flow", "face")
        ax.set_title(f"{direction.replace('_', ' ')} attention", fontsize=10)
        ax.set_xlabel(f"key step ({keys})")
        ax.set_ylabel(f"query step ({queries})")
        fig.colorbar(shown, ax=ax, shrink=0.85).set_label("weight (mean over heads, layers)", fontsize=8)


def _traits_panel(ax, traits: dict[str, float]) -> None:
    """Row 3 right: the predicted traits as labelled bars on the fixed 0-1 scale, first trait on top."""
    names = list(traits)
    values = [traits[n] for n in names]
    y = np.arange(len(names))
    ax.barh(y, values, color="steelblue")
    for yi, v in zip(y, values):
        ax.text(min(v + 0.02, 0.88), yi, f"{v:.3f}", va="center", fontsize=8)  # kept inside the axes
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted score (0-1)")
    ax.set_title("predicted traits", fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def _bare(ax) -> None:
    """An image panel: no ticks (pixel indices say nothing)."""
    ax.set_xticks([])
    ax.set_yticks([])
