"""``bigfive evaluate``: video-level metrics and figures for a trained checkpoint (DVC stage ``evaluate``).

Every clip is scored once from all T sampled frames (the model sees the whole clip), not from one
random frame as earlier projects did. Outputs, under ``evaluate.results_dir``:

- ``predictions_<split>.csv``: video_id, then ``<trait>_true`` / ``<trait>_pred`` per trait
- ``metrics.json`` (DVC metrics): the test split's summary at the top level, each other split
  under its name, the train-mean baseline beside the model, per-group metrics, bootstrap CIs
- ``plots/`` (DVC plots): the figures of docs/evaluation.md and their CSV tables

:func:`evaluate_checkpoint` is the reusable entry point (ablations call it per variant and seed).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bigfive import ALL_LABELS
from bigfive.evaluation import metrics as M

log = logging.getLogger("bigfive.evaluate")

GENDER = {"1": "male", "2": "female"}
ETHNICITY = {"1": "Asian", "2": "Caucasian", "3": "African-American"}


@dataclass
class EvalResult:
    """One split's video-level evaluation; arrays are (N, K) in ``traits`` order, rows in ``clip_ids`` order."""

    split: str
    traits: list[str]
    clip_ids: list[str]
    predictions: np.ndarray  # (N, K) float64 in [0, 1]
    labels: np.ndarray  # (N, K) float64
    abs_errors: np.ndarray  # (N, K) |pred - true| per clip: the input of paired significance tests
    metrics: dict[str, Any]  # summarize_with_baseline (+ bootstrap CIs, + "groups")
    baseline_means: np.ndarray | None = None  # (K,) training split's label means
    # attention (cross-attention variants only): per example clip, direction -> one (heads, Tq, Tk) per layer
    example_indices: list[int] = field(default_factory=list)
    example_attention: list[dict[str, list[np.ndarray]]] = field(default_factory=list)
    example_crops: np.ndarray | None = None  # (n_examples, T, 3, S, S) uint8 face crops
    entropy: dict[str, np.ndarray] = field(default_factory=dict)  # direction -> (layers, heads) mean nats
    key_len: dict[str, int] = field(default_factory=dict)  # direction -> T_key

    @property
    def has_attention(self) -> bool:
        return bool(self.entropy)


# ---------------------------------------------------------------- inference


def _example_rows(n: int, count: int) -> list[int]:
    """Evenly spread rows (deterministic, not cherry-picked)."""
    if count <= 0 or n == 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))})


def predict_arrays(net: Any, static: np.ndarray, dynamic: np.ndarray, *, device: Any, batch_size: int = 32,
                   example_rows: Sequence[int] = (), desc: str = "evaluate") -> dict[str, Any]:
    """Batched, no-grad inference over memory-mapped (N, T, C, S, S) uint8 arrays.

    Returns ``predictions`` (N, K), ``entropy`` (direction -> (layers, heads) mean over all clips),
    ``key_len`` and ``examples`` (row -> direction -> per-layer (heads, Tq, Tk)).
    """
    import torch

    from bigfive.utils.device import autocast
    from bigfive.utils.progress import progress

    n = int(static.shape[0])
    wanted = set(example_rows)
    preds: list[np.ndarray] = []
    ent_sum: dict[str, np.ndarray] = {}
    key_len: dict[str, int] = {}
    examples: dict[int, dict[str, list[np.ndarray]]] = {}
    net.eval()
    with torch.inference_mode(), progress(total=n, desc=desc) as bar:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            s = torch.from_numpy(np.array(static[start:stop])).to(device, non_blocking=True)
            d = torch.from_numpy(np.array(dynamic[start:stop])).to(device, non_blocking=True)
            with autocast(device):
                traits, attention = net(s, d, return_attention=True)
            preds.append(traits.float().cpu().numpy())
            for direction, layers in (attention or {}).items():
                ws = [w.float().cpu().numpy() for w in layers]
                ent = np.stack([M.attention_entropy(w) for w in ws]) * (stop - start)  # (layers, heads)
                ent_sum[direction] = ent_sum.get(direction, 0.0) + ent
                key_len[direction] = int(ws[0].shape[-1])
                for row in wanted.intersection(range(start, stop)):
                    examples.setdefault(row, {})[direction] = [w[row - start] for w in ws]
            bar.update(stop - start)
    pred = np.concatenate(preds).astype(np.float64) if preds else np.zeros((0, 0))
    return {"predictions": pred, "entropy": {k: v / max(n, 1) for k, v in ent_sum.items()},
            "key_len": key_len, "examples": examples}


def evaluate_model(net: Any, arrays: Any, traits: Sequence[str], *, split: str, device: Any, batch_size: int = 32,
                   baseline_means: np.ndarray | None = None, example_clips: int = 0, bootstrap: int = 0,
                   seed: int = 0, demographics: dict[str, dict[str, str | None]] | None = None) -> EvalResult:
    """Evaluate an in-memory model on one split's :class:`~bigfive.training.data.FeatureArrays`."""
    from bigfive.training.data import check_labels

    k = len(traits)
    check_labels(arrays, k)
    rows = _example_rows(len(arrays), example_clips)
    out = predict_arrays(net, arrays.static, arrays.dynamic, device=device, batch_size=batch_size,
                         example_rows=rows, desc=f"evaluate {split}")
    pred = out["predictions"]
    if pred.shape != (len(arrays), k):
        raise ValueError(f"model returned predictions of shape {pred.shape}, expected ({len(arrays)}, {k}) "
                         f"for traits {list(traits)}")
    true = np.asarray(arrays.labels[:, :k], dtype=np.float64)
    summary = M.summarize_with_baseline(pred, true, traits, baseline_means)
    constant = [t for t, c in zip(traits, M.constant_columns(pred)) if c]
    if constant:
        log.warning("%s: constant predictions for %s: Pearson r is undefined there and reported as 0",
                    split, ", ".join(constant))
    if bootstrap > 0:
        summary.update(M.bootstrap_ci(pred, true, bootstrap, seed=seed, baseline_means=baseline_means))
    if demographics:
        groups = {attr: [demographics.get(cid, {}).get(attr) for cid in arrays.clip_ids]
                  for attr in ("gender", "ethnicity")}
        groups = {a: g for a, g in groups.items() if any(v is not None for v in g)}
        if groups:
            summary["groups"] = M.group_metrics(pred, true, groups, traits, baseline_means)
    crops = np.stack([np.asarray(arrays.static[r]) for r in rows]) if rows and out["entropy"] else None
    return EvalResult(
        split=split, traits=list(traits), clip_ids=list(arrays.clip_ids), predictions=pred, labels=true,
        abs_errors=np.abs(pred - true), metrics=summary, baseline_means=baseline_means,
        example_indices=rows if out["entropy"] else [],
        example_attention=[out["examples"][r] for r in rows] if out["entropy"] else [],
        example_crops=crops, entropy=out["entropy"], key_len=out["key_len"])


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


def train_label_means(features_dir: str | Path, k: int) -> np.ndarray | None:
    """The train-mean baseline's constant prediction, from ``<features_dir>/train/labels.npy``."""
    path = Path(features_dir) / "train" / "labels.npy"
    if not path.is_file():
        log.warning("%s not found: the train-mean baseline is left out", path)
        return None
    labels = np.load(path, mmap_mode="r", allow_pickle=False)
    if labels.ndim != 2 or labels.shape[1] < k or labels.shape[0] == 0:
        log.warning("%s: shape %s has no %d label columns: the train-mean baseline is left out", path, labels.shape, k)
        return None
    return np.asarray(labels[:, :k], dtype=np.float64).mean(axis=0)


def read_demographics(manifest: str | Path) -> dict[str, dict[str, str | None]] | None:
    """video_id -> {"gender", "ethnicity"} (readable names, None where unknown) from data/raw/manifest.csv."""
    path = Path(manifest)
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "video_id" not in reader.fieldnames:
            log.warning("%s: no video_id column: per-group metrics left out", path)
            return None
        out: dict[str, dict[str, str | None]] = {}
        for row in reader:
            out[row["video_id"]] = {"gender": _decode(row.get("gender"), GENDER),
                                    "ethnicity": _decode(row.get("ethnicity"), ETHNICITY)}
    if not any(v for rec in out.values() for v in rec.values()):
        return None
    return out


def _decode(value: str | None, codes: dict[str, str]) -> str | None:
    value = (value or "").strip()
    if not value or value.lower() == "nan":
        return None
    try:
        value = str(int(float(value)))
    except ValueError:
        return value  # already a name
    return codes.get(value, f"code {value}")


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


# ---------------------------------------------------------------- outputs


def predictions_csv(result: EvalResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video_id", *[f"{t}_{kind}" for t in result.traits for kind in ("true", "pred")]])
    for cid, t_row, p_row in zip(result.clip_ids, result.labels, result.predictions):
        w.writerow([cid, *[f"{v:.6f}" for pair in zip(t_row, p_row) for v in pair]])
    return buf.getvalue()


def metrics_document(results: dict[str, EvalResult], noise_floor: float | None = None) -> dict[str, Any]:
    """metrics.json: the test split (or the last one evaluated) at the top level, the others by name."""
    primary = "test" if "test" in results else list(results)[-1]
    doc: dict[str, Any] = dict(results[primary].metrics)
    if noise_floor is not None:
        doc["noise_floor_mean_accuracy"] = float(noise_floor)
    for split, res in results.items():
        if split != primary:
            doc[split] = res.metrics
    return doc


def read_noise_floor(raw_dir: str | Path) -> tuple[float | None, dict[str, float]]:
    """The sample's best reachable accuracy (mean, per trait) from sample_metadata.json, if present."""
    path = Path(raw_dir) / "sample_metadata.json"
    if not path.is_file():
        return None, {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("%s: not valid JSON (%s): noise floor left out", path, err)
        return None, {}
    mean = meta.get("noise_floor_mean_accuracy")
    per = meta.get("noise_floor") if isinstance(meta.get("noise_floor"), dict) else {}
    return (float(mean) if isinstance(mean, (int, float)) else None), {k: float(v) for k, v in per.items()}


def write_plots(plots_dir: Path, results: dict[str, EvalResult], *, history: list[dict[str, Any]] | None,
                noise_floor: float | None, loss: str = "l1") -> list[str]:
    """Every figure (and its CSV table) into ``plots_dir``; returns the names of figures that failed."""
    from bigfive.evaluation import plots as P

    primary = "test" if "test" in results else list(results)[-1]
    res = results[primary]
    failed: list[str] = []

    def attempt(name: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # one broken figure must not cost the others (or the metrics)
            log.exception("figure %s failed", name)
            failed.append(name)

    attempt("pred_vs_true", P.pred_vs_true, res.predictions, res.labels, res.traits, plots_dir / "pred_vs_true.png",
            baseline_means=res.baseline_means, split=primary)
    attempt("residuals", P.residuals, res.predictions, res.labels, res.traits, plots_dir / "residuals.png",
            split=primary)
    attempt("accuracy", P.accuracy_bars, res.metrics, res.traits, plots_dir / "accuracy.png",
            noise_floor=noise_floor, split=primary)
    if history:
        val = results.get("val")
        attempt("training_curves", P.training_curves, history, plots_dir / "training_curves.png", traits=res.traits,
                baseline_mean_accuracy=val.metrics.get("baseline_mean_accuracy") if val else None, loss=loss)
    else:
        log.warning("no training history found: training_curves.png skipped")
    if "groups" in res.metrics:
        attempt("groups", P.group_accuracy, res.metrics["groups"], plots_dir / "groups.png", split=primary)
    if res.has_attention:
        for i, (row, att) in enumerate(zip(res.example_indices, res.example_attention)):
            attempt(f"attention_heads_{i + 1}", P.attention_heads, att, plots_dir / f"attention_heads_{i + 1}.png",
                    clip_id=res.clip_ids[row])
        attempt("attention_entropy", P.attention_entropy, res.entropy, res.key_len, plots_dir / "attention_entropy.png")
        if res.example_crops is not None and len(res.example_crops):
            received = [{d: M.received_attention(ws) for d, ws in att.items()} for att in res.example_attention]
            attempt("attention_strip", P.attention_strip, list(res.example_crops), received,
                    [res.clip_ids[r] for r in res.example_indices], plots_dir / "attention_strip.png")
    else:
        log.info("the model has no attention (fusion without cross-attention): attention figures skipped")
    _write_tables(plots_dir, res)
    return failed


def _write_tables(plots_dir: Path, res: EvalResult) -> None:
    """Long-format CSVs for ``dvc plots`` (scatter of predicted vs true, bars of accuracy)."""
    from bigfive.utils.io import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video_id", "trait", "true", "predicted"])
    for cid, t_row, p_row in zip(res.clip_ids, res.labels, res.predictions):
        for trait, t, p in zip(res.traits, t_row, p_row):
            w.writerow([cid, trait, f"{t:.6f}", f"{p:.6f}"])
    write_text(plots_dir / "pred_vs_true.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["trait", "model", "baseline"])
    for trait in res.traits:
        t = res.metrics["traits"][trait]
        w.writerow([trait, f"{t['accuracy']:.6f}", f"{t.get('baseline_accuracy', math.nan):.6f}"])
    write_text(plots_dir / "accuracy.csv", buf.getvalue())


def mlflow_metrics(results: dict[str, EvalResult], noise_floor: float | None) -> dict[str, float]:
    """Flat metric names for the training run. Validation figures get an ``eval_`` prefix so they do not
    extend the per-epoch ``val_*`` series the trainer logged."""
    out: dict[str, float] = {}
    for split, res in results.items():
        prefix = "test" if split == "test" else f"eval_{split}"
        m = res.metrics
        for key in ("mean_accuracy", "mae", "rmse", "r2", "pcc", "ccc", "mean_accuracy_ci95_low",
                    "mean_accuracy_ci95_high"):
            if key in m:
                out[f"{prefix}_{key}"] = m[key]
        for trait, tm in m["traits"].items():
            for key in ("accuracy", "pcc", "ccc"):
                out[f"{prefix}_{trait}_{key}"] = tm[key]
        if "baseline_mean_accuracy" in m:
            name = "baseline_mean_accuracy" if split == "test" else f"{prefix}_baseline_mean_accuracy"
            out[name] = m["baseline_mean_accuracy"]
    if noise_floor is not None:
        out["noise_floor_mean_accuracy"] = noise_floor
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def find_run(uri: str, run_id: str) -> Any | None:
    """The training run (an ``mlflow.entities.Run``), or None with a warning when it cannot be found."""
    from bigfive.training.tracking import sqlite_file

    db = sqlite_file(uri)
    if db is not None and not db.is_file():  # connecting would create an empty store as a side effect
        log.warning("MLflow store %s does not exist: evaluation not logged to run %s", uri, run_id)
        return None
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(uri).get_run(run_id)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("MLflow run %s not found in %s (%s): evaluation not logged", run_id, uri, first)
        return None


def log_to_mlflow(uri: str, run_id: str, metrics: dict[str, float], artifacts: Sequence[Path],
                  plots_dir: Path) -> bool:
    """Add the evaluation to the training run; warn and skip when that run cannot be found."""
    if find_run(uri, run_id) is None:
        return False
    _log_evaluation(uri, run_id, metrics, artifacts, plots_dir)
    return True


def _log_evaluation(uri: str, run_id: str, metrics: dict[str, float], artifacts: Sequence[Path],
                    plots_dir: Path) -> None:
    """Metrics, files and figures into run ``run_id``, which the caller has found."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        mlflow.log_metrics(metrics)
        if plots_dir.is_dir():
            mlflow.log_artifacts(str(plots_dir), artifact_path="plots")
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    log.info("logged %d metrics and the figures to MLflow run %s", len(metrics), run_id)


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to evaluate (default: <train.models_dir>/best.pt)")
    parser.add_argument("--results-dir", default=None, help="output folder (default: evaluate.results_dir)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: evaluate.device)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch (default: evaluate.batch_size)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to the training run in MLflow")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params
    from bigfive.training.data import load_split, read_meta
    from bigfive.utils.device import resolve_device
    from bigfive.utils.io import atomic_dir, write_json, write_text

    params = load_params(args.params)
    cfg = params.evaluate
    checkpoint = Path(args.checkpoint or Path(params.train.models_dir) / "best.pt")
    results_dir = Path(args.results_dir or cfg.results_dir)
    device = resolve_device(args.device or cfg.device)
    batch_size = args.batch_size or cfg.batch_size
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    features_dir = Path(params.preprocess.features_dir)
    raw_dir = Path(params.data.raw_dir)

    net, ckpt, traits = load_model(checkpoint, device)
    log.info("evaluating %s (fusion=%s, %d outputs) on %s, device %s", checkpoint, net.config.fusion, len(traits),
             ", ".join(cfg.splits), device)
    baseline = train_label_means(features_dir, len(traits))
    demographics = read_demographics(raw_dir / "manifest.csv")
    noise_floor, _ = read_noise_floor(raw_dir)
    meta = read_meta(features_dir)

    results: dict[str, EvalResult] = {}
    for split in cfg.splits:
        arrays = load_split(features_dir, split)
        if len(arrays) == 0:
            log.warning("%s/%s holds no clips: split skipped", features_dir, split)
            continue
        check_compatible(ckpt, arrays, checkpoint, meta)
        res = evaluate_model(net, arrays, traits, split=split, device=device, batch_size=batch_size,
                             baseline_means=baseline, example_clips=cfg.example_clips if split == "test" else 0,
                             bootstrap=cfg.bootstrap, seed=params.seed, demographics=demographics)
        results[split] = res
        write_text(results_dir / f"predictions_{split}.csv", predictions_csv(res))
        m = res.metrics
        log.info("%s: %d clips, mean accuracy %.4f (train-mean baseline %s), r %.3f, CCC %.3f", split, m["n"],
                 m["mean_accuracy"], f"{m['baseline_mean_accuracy']:.4f}" if "baseline_mean_accuracy" in m else "n/a",
                 m["pcc"], m["ccc"])
    if not results:
        raise ValueError(f"no clips to evaluate in {features_dir} for splits {cfg.splits}")
    if "test" not in results:
        log.warning("evaluate.splits has no test split: metrics.json's top level holds %s", list(results)[-1])
    write_json(results_dir / "metrics.json", metrics_document(results, noise_floor))

    history = _read_history(checkpoint.parent / "history.json")
    plots_dir = results_dir / "plots"
    with atomic_dir(plots_dir) as tmp:
        failed = write_plots(tmp, results, history=history, noise_floor=noise_floor,
                             loss=getattr(params.train, "loss", "l1"))
    log.info("metrics: %s; figures: %s", results_dir / "metrics.json", plots_dir)

    _record(args, params, results, checkpoint=checkpoint, ckpt=ckpt, results_dir=results_dir, plots_dir=plots_dir,
            noise_floor=noise_floor, meta=meta)
    if failed:
        log.error("figures that failed: %s", ", ".join(failed))
        return 1
    return 0


def _record(args: argparse.Namespace, params: Any, results: dict[str, EvalResult], *, checkpoint: Path,
            ckpt: dict[str, Any], results_dir: Path, plots_dir: Path, noise_floor: float | None,
            meta: dict[str, Any] | None) -> None:
    """The model card, then (tracking on) the metrics, figures and card in the training run and the card as
    the registered version's description."""
    run_info = _read_run_info(checkpoint.parent / "run.json")
    run_id = run_info.get("run_id") or ckpt.get("run_id") or None  # run.json, else the checkpoint's record
    run = uri = None
    if args.no_tracking or not params.tracking.enabled:
        log.info("MLflow logging off")
    elif not isinstance(run_id, str):
        log.warning("neither %s nor the checkpoint names an MLflow run: evaluation not logged to MLflow",
                    checkpoint.parent / "run.json")
    else:
        from bigfive.training.tracking import resolve_tracking_uri

        uri = run_info.get("tracking_uri") or resolve_tracking_uri(params.tracking)  # where the trainer logged the run
        run = find_run(uri, run_id)
    card = _write_card(results_dir, params, results, noise_floor=noise_floor, meta=meta, checkpoint=checkpoint,
                       run_info={**run_info, "run_id": run_id if isinstance(run_id, str) else None},
                       tags=dict(run.data.tags) if run else {})
    if run is None or uri is None:
        return
    artifacts = [results_dir / "metrics.json", results_dir / CARD_FILE,
                 *(results_dir / f"predictions_{s}.csv" for s in results)]
    _log_evaluation(uri, run_id, mlflow_metrics(results, noise_floor), artifacts, plots_dir)  # run found above
    _publish_card(uri, run_id, run_info, card)


def _read_history(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    try:
        history = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("%s: not valid JSON (%s): training curves skipped", path, err)
        return None
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        log.warning("%s: expected a list of per-epoch objects: training curves skipped", path)
        return None
    return history


def _read_run_info(path: Path) -> dict[str, Any]:
    """models/run.json (run_id, tracking_uri, ...) or {} when absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("%s: not valid JSON (%s)", path, err)
        return {}
    if not isinstance(info, dict):
        log.warning("%s: expected an object", path)
        return {}
    keys = ("run_id", "tracking_uri", "registered_model", "model_version")
    return {k: v for k, v in info.items() if k in keys and isinstance(v, str) and v}


CARD_FILE = "model_card.md"


def _write_card(results_dir: Path, params: Any, results: dict[str, EvalResult], **facts: Any) -> str:
    """results/model_card.md from the measured values; returns its text."""
    from bigfive.evaluation import model_card
    from bigfive.utils.io import write_text

    card = model_card.render(model_card.card_facts(params, results, **facts))
    write_text(results_dir / CARD_FILE, card)
    log.info("model card: %s", results_dir / CARD_FILE)
    return card


def _publish_card(uri: str, run_id: str, run_info: dict[str, Any], card: str) -> None:
    """The card as the registered version's description: what the MLflow registry page shows."""
    from mlflow.tracking import MlflowClient

    from bigfive.evaluation import model_card

    # registry_uri too: without it the client uses a registry set process-wide earlier (mlflow.set_registry_uri)
    client = MlflowClient(uri, registry_uri=uri)
    model_card.publish(client, run_id, run_info, card, f"evaluation/{CARD_FILE}")
