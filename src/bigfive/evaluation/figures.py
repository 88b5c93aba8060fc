"""``results/plots/`` (DVC plots): which figure is drawn from which evaluated split, and its CSV tables.

A figure that fails is logged and named in the return value; it does not cost the others or the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bigfive.evaluation import metrics as M
from bigfive.evaluation import plots as P
from bigfive.evaluation.result import EvalResult, primary_split
from bigfive.evaluation.tables import accuracy_table, pred_vs_true_table
from bigfive.utils.io import write_text

log = logging.getLogger("bigfive.evaluate")


def write_plots(plots_dir: Path, results: dict[str, EvalResult], *, history: list[dict[str, Any]] | None,
                noise_floor: float | None, loss: str = "l1") -> list[str]:
    """Every figure (and its CSV table) into ``plots_dir``; returns the names of figures that failed."""
    primary = primary_split(results)
    res = results[primary]
    failed: list[str] = []

    def attempt(name: str, draw: Callable[[], Any]) -> None:
        try:
            P.save(draw(), plots_dir / f"{name}.png")
        except Exception:  # one broken figure must not cost the others (or the metrics)
            log.exception("figure %s failed", name)
            failed.append(name)

    attempt("pred_vs_true", lambda: P.pred_vs_true(res.predictions, res.labels, res.traits,
                                                   baseline_means=res.baseline_means, split=primary))
    attempt("residuals", lambda: P.residuals(res.predictions, res.labels, res.traits, split=primary))
    attempt("accuracy", lambda: P.accuracy_bars(res.metrics, res.traits, noise_floor=noise_floor, split=primary))
    if history:
        val = results.get("val")
        base = val.metrics.get("baseline_mean_accuracy") if val else None
        attempt("training_curves", lambda: P.training_curves(history, traits=res.traits,
                                                             baseline_mean_accuracy=base, loss=loss))
    else:
        log.warning("no training history found: training_curves.png skipped")
    if "groups" in res.metrics:
        attempt("groups", lambda: P.group_accuracy(res.metrics["groups"], split=primary))
    if res.has_attention:
        _attention_figures(res, attempt)
    else:
        log.info("the model has no attention (fusion without cross-attention): attention figures skipped")
    write_text(plots_dir / "pred_vs_true.csv", pred_vs_true_table(res))
    write_text(plots_dir / "accuracy.csv", accuracy_table(res))
    return failed


def _attention_figures(res: EvalResult, attempt: Callable[[str, Callable[[], Any]], None]) -> None:
    """The example clips' maps (one figure each), the entropy per head, and the example clips' crops strip."""
    for i, (row, att) in enumerate(zip(res.example_indices, res.example_attention)):
        attempt(f"attention_heads_{i + 1}", lambda att=att, row=row: P.attention_heads(att, clip_id=res.clip_ids[row]))
    attempt("attention_entropy", lambda: P.attention_entropy(res.entropy, res.key_len))
    if res.example_crops is not None and len(res.example_crops):
        received = [{d: M.received_attention(ws) for d, ws in att.items()} for att in res.example_attention]
        attempt("attention_strip", lambda: P.attention_strip(list(res.example_crops), received,
                                                             [res.clip_ids[r] for r in res.example_indices]))
