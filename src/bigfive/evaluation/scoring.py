"""Evaluate a model on one split: inference over every clip (all T frames at once), then the metrics.

:func:`evaluate_checkpoint` is the reusable entry point (the ablations call it per variant and seed);
:func:`evaluate_model` scores a network already in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bigfive import ALL_LABELS
from bigfive.evaluation import metrics as M
from bigfive.evaluation.demographics import Demographics, group_labels, read_demographics
from bigfive.evaluation.inputs import train_label_means
from bigfive.evaluation.result import EvalResult

log = logging.getLogger("bigfive.evaluate")


def load_model(checkpoint_path: str | Path, device: Any) -> tuple[Any, dict[str, Any], list[str]]:
    """Rebuild the network from a weights-only checkpoint; returns (net on device, checkpoint, trait names)."""
    from bigfive.models import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint_path)
    net = model_from_checkpoint(ckpt).to(device).eval()
    outputs = int(net.config.outputs)
    labels = ckpt.get("labels")
    if isinstance(labels, (list, tuple)) and len(labels) >= outputs and all(isinstance(x, str) for x in labels):
        traits = list(labels[:outputs])
    else:
        traits = list(ALL_LABELS[:outputs])
    return net, ckpt, traits


def check_compatible(ckpt: dict[str, Any], arrays: Any, checkpoint_path: str | Path,
                     meta: dict[str, Any] | None = None) -> None:
    """The features must be what the model was trained on: frames, flow channels, crop size and, when
    both record it, the flow quantization bound (the same uint8 value means another flow otherwise)."""
    pre = ckpt.get("preprocess") if isinstance(ckpt.get("preprocess"), dict) else {}
    wanted = {"frames": int(ckpt["frames"]), "flow channels": int(ckpt["flow_channels"])}
    got = {"frames": arrays.frames, "flow channels": arrays.flow_channels}
    if isinstance(pre.get("crop_size"), int):
        wanted["crop size"], got["crop size"] = pre["crop_size"], arrays.crop_size
    bound_model = (pre.get("flow") or {}).get("bound") if isinstance(pre.get("flow"), dict) else None
    bound_data = (meta or {}).get("flow", {}).get("bound") if isinstance((meta or {}).get("flow"), dict) else None
    if isinstance(bound_model, (int, float)) and isinstance(bound_data, (int, float)):
        wanted["flow bound"], got["flow bound"] = float(bound_model), float(bound_data)
    bad = [f"{k} {got[k]} (model: {wanted[k]})" for k in wanted if wanted[k] != got[k]]
    if bad:
        raise ValueError(f"{arrays.source}: features do not match checkpoint {checkpoint_path}: {', '.join(bad)}; "
                         "re-run the features stage with the parameters the model was trained with")


def split_metrics(pred: np.ndarray, true: np.ndarray, traits: Sequence[str], clip_ids: Sequence[str], *,
                  split: str, baseline_means: np.ndarray | None = None, bootstrap: int = 0, seed: int = 0,
                  demographics: Demographics | None = None) -> dict[str, Any]:
    """summarize_with_baseline, plus 95% bootstrap CIs (``bootstrap`` > 0) and per-group metrics."""
    summary = M.summarize_with_baseline(pred, true, traits, baseline_means)
    constant = [t for t, c in zip(traits, M.constant_columns(pred)) if c]
    if constant:
        log.warning("%s: constant predictions for %s: Pearson r is undefined there and reported as 0",
                    split, ", ".join(constant))
    if bootstrap > 0:
        summary.update(M.bootstrap_ci(pred, true, bootstrap, seed=seed, baseline_means=baseline_means))
    groups = group_labels(demographics, clip_ids) if demographics else {}
    if groups:
        summary["groups"] = M.group_metrics(pred, true, groups, traits, baseline_means)
    return summary


def evaluate_model(net: Any, arrays: Any, traits: Sequence[str], *, split: str, device: Any, batch_size: int = 32,
                   baseline_means: np.ndarray | None = None, example_clips: int = 0, bootstrap: int = 0,
                   seed: int = 0, demographics: Demographics | None = None) -> EvalResult:
    """Evaluate an in-memory model on one split's :class:`~bigfive.training.data.FeatureArrays`."""
    from bigfive.evaluation.inference import example_rows, infer_split  # torch: only when inferring
    from bigfive.training.data import check_labels

    k = len(traits)
    check_labels(arrays, k)
    rows = example_rows(len(arrays), example_clips)
    out = infer_split(net, arrays.static, arrays.dynamic, device=device, batch_size=batch_size,
                         example_rows=rows, desc=f"evaluate {split}")
    pred = out.predictions
    if pred.shape != (len(arrays), k):
        raise ValueError(f"model returned predictions of shape {pred.shape}, expected ({len(arrays)}, {k}) "
                         f"for traits {list(traits)}")
    true = np.asarray(arrays.labels[:, :k], dtype=np.float64)
    summary = split_metrics(pred, true, traits, arrays.clip_ids, split=split, baseline_means=baseline_means,
                            bootstrap=bootstrap, seed=seed, demographics=demographics)
    rows = rows if out.entropy else []  # example maps exist only for a model with attention
    return EvalResult(
        split=split, traits=list(traits), clip_ids=list(arrays.clip_ids), predictions=pred, labels=true,
        abs_errors=np.abs(pred - true), metrics=summary, baseline_means=baseline_means, example_indices=rows,
        example_attention=[out.examples[r] for r in rows],
        example_crops=np.stack([np.asarray(arrays.static[r]) for r in rows]) if rows else None,
        entropy=out.entropy, key_len=out.key_len)


def evaluate_checkpoint(checkpoint_path: str | Path, features_dir: str | Path, split: str = "test", *,
                        device: str = "auto", batch_size: int = 32, example_clips: int = 0, bootstrap: int = 0,
                        seed: int = 0, baseline_means: np.ndarray | None = None,
                        manifest: str | Path | None = None) -> EvalResult:
    """Video-level evaluation of one checkpoint on ``<features_dir>/<split>``.

    ``baseline_means`` defaults to the training split's label means read from ``features_dir``;
    ``manifest`` (data/raw/manifest.csv) adds per-group metrics; ``bootstrap`` > 0 adds 95% CIs.
    """
    from bigfive.training.data import load_split, read_meta
    from bigfive.utils.device import resolve_device

    dev = resolve_device(device)
    net, ckpt, traits = load_model(checkpoint_path, dev)
    arrays = load_split(features_dir, split)
    check_compatible(ckpt, arrays, checkpoint_path, read_meta(features_dir))
    if baseline_means is None:
        baseline_means = train_label_means(features_dir, len(traits))
    demographics = read_demographics(manifest) if manifest else None
    return evaluate_model(net, arrays, traits, split=split, device=dev, batch_size=batch_size,
                          baseline_means=baseline_means, example_clips=example_clips, bootstrap=bootstrap,
                          seed=seed, demographics=demographics)
