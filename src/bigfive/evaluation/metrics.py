"""Video-level regression metrics as small pure numpy functions.

Every function takes ``pred`` and ``true`` of the same shape, (N,) or (N, K), and reduces over
clips (axis 0): a float for 1-D input, a (K,) array for 2-D input.

Conventions where a formula is undefined (documented in docs/evaluation.md):
- Pearson r of a constant prediction (or constant truth) is 0, not NaN: a constant carries no
  linear information, and a NaN would poison the means over traits and the DVC metrics diff.
- R² with constant truth is 1 for a perfect prediction and 0 otherwise (scikit-learn's choice).
- CCC with both series constant is 1 when they are equal and 0 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Below this a standard deviation counts as zero (scores live in [0, 1]; float32 noise is ~1e-7).
_EPS = 1e-12


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"predictions {pred.shape} and labels {true.shape} differ in shape")
    if pred.ndim not in (1, 2) or pred.shape[0] == 0:
        raise ValueError(f"expected (N,) or (N, K) arrays with N >= 1, got {pred.shape}")
    return pred, true


def _out(x: np.ndarray) -> float | np.ndarray:
    return float(x) if np.ndim(x) == 0 else x


def mae(pred: np.ndarray, true: np.ndarray) -> float | np.ndarray:
    """Mean absolute error."""
    pred, true = _pair(pred, true)
    return _out(np.abs(pred - true).mean(axis=0))


def accuracy(pred: np.ndarray, true: np.ndarray) -> float | np.ndarray:
    """ChaLearn First Impressions accuracy: 1 − MAE (labels and predictions in [0, 1])."""
    return _out(1.0 - np.asarray(mae(pred, true)))


def rmse(pred: np.ndarray, true: np.ndarray) -> float | np.ndarray:
    """Root mean squared error."""
    pred, true = _pair(pred, true)
    return _out(np.sqrt(((pred - true) ** 2).mean(axis=0)))


def r2(pred: np.ndarray, true: np.ndarray) -> float | np.ndarray:
    """Coefficient of determination 1 − SS_res / SS_tot (can be negative)."""
    pred, true = _pair(pred, true)
    ss_res = ((true - pred) ** 2).sum(axis=0)
    ss_tot = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    safe = np.where(ss_tot > _EPS, ss_tot, 1.0)
    out = np.where(ss_tot > _EPS, 1.0 - ss_res / safe, np.where(ss_res <= _EPS, 1.0, 0.0))
    return _out(out)


def pearson(pred: np.ndarray, true: np.ndarray) -> float | np.ndarray:
    """Pearson correlation; 0 (not NaN) when either series is constant."""
    pred, true = _pair(pred, true)
    dp = pred - pred.mean(axis=0)
    dt = true - true.mean(axis=0)
    norm = np.sqrt((dp**2).sum(axis=0) * (dt**2).sum(axis=0))
    ok = norm > _EPS
    out = np.where(ok, (dp * dt).sum(axis=0) / np.where(ok, norm, 1.0), 0.0)
    return _out(np.clip(out, -1.0, 1.0))


def ccc(pred: np.ndarray, true: np.ndarray) -> float | np.ndarray:
    """Lin's concordance correlation 2·cov / (var_p + var_t + (mean_p − mean_t)²), population moments.

    Unlike Pearson r it penalises shifts and scale changes: only points on the identity line score 1.
    """
    pred, true = _pair(pred, true)
    mp, mt = pred.mean(axis=0), true.mean(axis=0)
    cov = ((pred - mp) * (true - mt)).mean(axis=0)
    denom = pred.var(axis=0) + true.var(axis=0) + (mp - mt) ** 2
    ok = denom > _EPS
    out = np.where(ok, 2.0 * cov / np.where(ok, denom, 1.0), 1.0)
    return _out(out)


def constant_columns(pred: np.ndarray) -> np.ndarray:
    """Boolean (K,) mask of prediction columns with (numerically) zero spread, where r is set to 0."""
    pred = np.asarray(pred, dtype=np.float64)
    return pred.reshape(pred.shape[0], -1).std(axis=0) <= 1e-9


METRICS = {"accuracy": accuracy, "mae": mae, "rmse": rmse, "r2": r2, "pcc": pearson, "ccc": ccc}


def summarize(pred: np.ndarray, true: np.ndarray, trait_names: Sequence[str]) -> dict[str, Any]:
    """Per-trait metrics and their means over traits.

    Returns ``{"n", "mean_accuracy", "mae", "rmse", "r2", "pcc", "ccc", "traits": {name: {...}}}``
    where the top-level figures are unweighted means over the traits.
    """
    pred, true = _pair(pred, true)
    if pred.ndim != 2 or pred.shape[1] != len(trait_names):
        raise ValueError(f"expected (N, {len(trait_names)}) arrays for traits {list(trait_names)}, got {pred.shape}")
    per = {name: np.atleast_1d(fn(pred, true)) for name, fn in METRICS.items()}
    traits = {t: {name: float(per[name][k]) for name in METRICS} for k, t in enumerate(trait_names)}
    out: dict[str, Any] = {"n": int(pred.shape[0]), "mean_accuracy": float(per["accuracy"].mean())}
    for name in ("mae", "rmse", "r2", "pcc", "ccc"):
        out[name] = float(per[name].mean())
    out["traits"] = traits
    return out


def summarize_with_baseline(pred: np.ndarray, true: np.ndarray, trait_names: Sequence[str],
                            baseline_means: np.ndarray | None) -> dict[str, Any]:
    """:func:`summarize` plus the train-mean baseline's figures side by side (``baseline_*`` keys)."""
    out = summarize(pred, true, trait_names)
    if baseline_means is None:
        return out
    base = summarize(np.broadcast_to(np.asarray(baseline_means, np.float64), np.shape(true)), true, trait_names)
    out["baseline_mean_accuracy"] = base["mean_accuracy"]
    out["baseline_mae"] = base["mae"]
    out["baseline_rmse"] = base["rmse"]
    out["baseline_r2"] = base["r2"]
    for t in trait_names:
        out["traits"][t]["baseline_accuracy"] = base["traits"][t]["accuracy"]
        out["traits"][t]["baseline_r2"] = base["traits"][t]["r2"]
    return out


def bootstrap_ci(pred: np.ndarray, true: np.ndarray, resamples: int, *, seed: int = 0,
                 baseline_means: np.ndarray | None = None, level: float = 0.95) -> dict[str, float]:
    """BCa bootstrap CI (``scipy.stats.bootstrap``) over clips for the mean accuracy and its gain over the baseline.

    The mean accuracy is the mean over clips of each clip's accuracy averaged over traits, so resampling
    per-clip values is resampling clips. The gain is paired: one per-clip difference of errors, so its
    interval reflects how reliably the model beats the baseline on this split. BCa corrects the bias and
    skew a percentile interval keeps on small splits (accuracy is bounded above by 1).
    """
    pred, true = _pair(pred, true)
    err = np.abs(pred - true).reshape(pred.shape[0], -1).mean(axis=1)  # per-clip mean error over traits
    low, high = _bca(1.0 - err, resamples, seed, level)
    out = {"mean_accuracy_ci95_low": low, "mean_accuracy_ci95_high": high}
    if baseline_means is not None:
        base_err = np.abs(np.asarray(baseline_means, np.float64) - true).reshape(pred.shape[0], -1).mean(axis=1)
        low, high = _bca(base_err - err, resamples, seed, level)
        out["gain_vs_baseline_ci95_low"], out["gain_vs_baseline_ci95_high"] = low, high
    return out


def _bca(values: np.ndarray, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """The BCa interval of the mean of ``values``; a point interval where every resample has the same mean
    (one clip, or identical values: BCa's acceleration is then 0/0)."""
    from scipy import stats

    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) <= _EPS:
        return mean, mean
    res = stats.bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=level, method="BCa",
                          vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def group_metrics(pred: np.ndarray, true: np.ndarray, groups: Mapping[str, Sequence[str | None]],
                  trait_names: Sequence[str], baseline_means: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics per demographic group: ``{attribute: {group: {n, mean_accuracy, pcc, ccc, ...}}}``.

    ``groups`` maps an attribute (gender, ethnicity) to one label per clip, None where unknown;
    unknown clips are left out of that attribute. ``accuracy_gap`` is the spread of mean accuracy
    between the best and the worst served group.
    """
    pred, true = _pair(pred, true)
    out: dict[str, Any] = {}
    for attribute, labels in groups.items():
        labels = list(labels)
        if len(labels) != len(pred):
            raise ValueError(f"{attribute}: {len(labels)} labels for {len(pred)} clips")
        known = sorted({g for g in labels if g is not None})
        if not known:
            continue
        per: dict[str, Any] = {}
        for g in known:
            mask = np.array([lab == g for lab in labels])
            s = summarize_with_baseline(pred[mask], true[mask], trait_names, baseline_means)
            per[g] = {k: s[k] for k in ("n", "mean_accuracy", "mae", "pcc", "ccc", "baseline_mean_accuracy") if k in s}
            per[g]["traits"] = {t: s["traits"][t]["accuracy"] for t in trait_names}
        accs = [v["mean_accuracy"] for v in per.values()]
        out[attribute] = {"accuracy_gap": float(max(accs) - min(accs)), "groups": per}
    return out


def attention_entropy(weights: np.ndarray) -> np.ndarray:
    """Mean entropy (nats) of attention rows per head: (B, heads, Tq, Tk) -> (heads,).

    A row spread evenly over Tk keys has the maximum ln Tk; one that looks at a single key has 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4:
        raise ValueError(f"expected (B, heads, Tq, Tk) attention weights, got {w.shape}")
    ent = -(w * np.log(np.clip(w, 1e-12, None))).sum(axis=-1)  # (B, heads, Tq)
    return ent.mean(axis=(0, 2))


def received_attention(layers: Sequence[np.ndarray]) -> np.ndarray:
    """Attention each key frame receives, averaged over layers, heads and queries: (Tk,), sums to 1.

    ``layers`` holds one (heads, Tq, Tk) array per layer for a single clip.
    """
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in layers])  # (L, heads, Tq, Tk)
    return stacked.mean(axis=(0, 1, 2))
