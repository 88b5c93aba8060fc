"""``bigfive evaluate``: video-level metrics and figures for a trained checkpoint (DVC stage ``evaluate``).

Every clip is scored once from all T sampled frames (the model sees the whole clip), not from one
random frame as earlier projects did. Outputs, under ``evaluate.results_dir``:

- ``predictions_<split>.csv``: video_id, then ``<trait>_true`` / ``<trait>_pred`` per trait
- ``metrics.json`` (DVC metrics): the test split's summary at the top level, each other split
  under its name, the train-mean baseline beside the model, per-group metrics, bootstrap CIs
- ``plots/`` (DVC plots): the figures of docs/evaluation.md and their CSV tables
- ``model_card.md``, and (tracking on) all of it in the training run in MLflow

This module is the stage: it reads params.yaml and wires the jobs together. Scoring one split is
:mod:`~bigfive.evaluation.scoring` (``evaluate_checkpoint`` is the reusable entry point), the files are
:mod:`~bigfive.evaluation.tables` and :mod:`~bigfive.evaluation.figures`, the MLflow side and the card
:mod:`~bigfive.evaluation.records`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from bigfive.evaluation.result import EvalResult

log = logging.getLogger("bigfive.evaluate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint to evaluate (default: <train.models_dir>/best.pt)")
    parser.add_argument("--results-dir", default=None, help="output folder (default: evaluate.results_dir)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: evaluate.device)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch (default: evaluate.batch_size)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to the training run in MLflow")


def run(args: argparse.Namespace) -> int:
    from bigfive.config import load_params
    from bigfive.evaluation.figures import write_plots
    from bigfive.evaluation.inputs import read_history, read_noise_floor
    from bigfive.evaluation.records import record
    from bigfive.evaluation.scoring import load_model
    from bigfive.evaluation.tables import metrics_document
    from bigfive.training.data import read_meta
    from bigfive.utils.device import resolve_device
    from bigfive.utils.io import atomic_dir, write_json

    params = load_params(args.params)
    cfg = params.evaluate
    checkpoint = Path(args.checkpoint or Path(params.train.models_dir) / "best.pt")
    results_dir = Path(args.results_dir or cfg.results_dir)
    device = resolve_device(args.device or cfg.device)
    batch_size = args.batch_size or cfg.batch_size
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    features_dir = Path(params.preprocess.features_dir)

    net, ckpt, traits = load_model(checkpoint, device)
    log.info("evaluating %s (fusion=%s, %d outputs) on %s, device %s", checkpoint, net.config.fusion, len(traits),
             ", ".join(cfg.splits), device)
    meta = read_meta(features_dir)
    noise_floor, _ = read_noise_floor(params.data.raw_dir)
    results = _evaluate_splits(params, net, ckpt, traits, checkpoint=checkpoint, meta=meta, device=device,
                               batch_size=batch_size, results_dir=results_dir)
    write_json(results_dir / "metrics.json", metrics_document(results, noise_floor))

    plots_dir = results_dir / "plots"
    with atomic_dir(plots_dir) as tmp:
        failed = write_plots(tmp, results, history=read_history(checkpoint.parent / "history.json"),
                             noise_floor=noise_floor, loss=getattr(params.train, "loss", "l1"))
    log.info("metrics: %s; figures: %s", results_dir / "metrics.json", plots_dir)

    record(params, results, tracking=params.tracking.enabled and not args.no_tracking, checkpoint=checkpoint,
           ckpt=ckpt, results_dir=results_dir, plots_dir=plots_dir, noise_floor=noise_floor, meta=meta)
    if failed:
        log.error("figures that failed: %s", ", ".join(failed))
        return 1
    return 0


def _evaluate_splits(params: Any, net: Any, ckpt: dict[str, Any], traits: list[str], *, checkpoint: Path,
                     meta: dict[str, Any] | None, device: Any, batch_size: int,
                     results_dir: Path) -> dict[str, EvalResult]:
    """Each split of ``evaluate.splits`` that holds clips, its predictions CSV written as it is done."""
    from bigfive.evaluation.demographics import read_demographics
    from bigfive.evaluation.inputs import train_label_means
    from bigfive.evaluation.scoring import check_compatible, evaluate_model
    from bigfive.evaluation.tables import predictions_csv
    from bigfive.training.data import load_split
    from bigfive.utils.io import write_text

    cfg, features_dir = params.evaluate, Path(params.preprocess.features_dir)
    baseline = train_label_means(features_dir, len(traits))
    demographics = read_demographics(Path(params.data.raw_dir) / "manifest.csv")
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
    return results
