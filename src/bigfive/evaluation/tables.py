"""The stage's text outputs from its results: predictions CSVs, metrics.json's document and the long-format
tables ``dvc plots`` draws from. Each returns the text or object; the caller writes it."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from bigfive.evaluation.result import EvalResult, primary_split


def _csv(header: list[str], rows: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def predictions_csv(result: EvalResult) -> str:
    """predictions_<split>.csv: video_id, then ``<trait>_true`` / ``<trait>_pred`` per trait."""
    header = ["video_id", *[f"{t}_{kind}" for t in result.traits for kind in ("true", "pred")]]
    return _csv(header, ([cid, *[f"{v:.6f}" for pair in zip(t_row, p_row) for v in pair]]
                         for cid, t_row, p_row in zip(result.clip_ids, result.labels, result.predictions)))


def metrics_document(results: dict[str, EvalResult], noise_floor: float | None = None) -> dict[str, Any]:
    """metrics.json: the test split (or the last one evaluated) at the top level, the others by name."""
    primary = primary_split(results)
    doc: dict[str, Any] = dict(results[primary].metrics)
    if noise_floor is not None:
        doc["noise_floor_mean_accuracy"] = float(noise_floor)
    for split, res in results.items():
        if split != primary:
            doc[split] = res.metrics
    return doc


def pred_vs_true_table(res: EvalResult) -> str:
    """plots/pred_vs_true.csv: one row per clip and trait (the scatter ``dvc plots`` draws)."""
    return _csv(["video_id", "trait", "true", "predicted"],
                ([cid, trait, f"{t:.6f}", f"{p:.6f}"]
                 for cid, t_row, p_row in zip(res.clip_ids, res.labels, res.predictions)
                 for trait, t, p in zip(res.traits, t_row, p_row)))


def accuracy_table(res: EvalResult) -> str:
    """plots/accuracy.csv: accuracy per trait, model and train-mean baseline (NaN without a baseline)."""
    return _csv(["trait", "model", "baseline"],
                ([trait, f"{res.metrics['traits'][trait]['accuracy']:.6f}",
                  f"{res.metrics['traits'][trait].get('baseline_accuracy', math.nan):.6f}"] for trait in res.traits))
