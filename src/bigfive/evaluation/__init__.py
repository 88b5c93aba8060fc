"""Video-level evaluation: metrics (pure numpy), figures, and the ``evaluate`` stage.

``evaluate_checkpoint`` is the reusable entry point (see docs/evaluation.md).
"""

from bigfive.evaluation.evaluate import EvalResult, evaluate_checkpoint, evaluate_model
from bigfive.evaluation.metrics import accuracy, ccc, mae, pearson, r2, rmse, summarize

__all__ = ["EvalResult", "evaluate_checkpoint", "evaluate_model", "accuracy", "mae", "rmse", "r2", "pearson", "ccc",
           "summarize"]
