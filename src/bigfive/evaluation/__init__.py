"""Video-level evaluation: metrics (pure numpy), figures, and the ``evaluate`` stage.

``evaluate_checkpoint`` is the reusable entry point (see docs/evaluation.md).
"""

from bigfive.evaluation.metrics import accuracy, ccc, mae, pearson, r2, rmse, summarize
from bigfive.evaluation.result import EvalResult
from bigfive.evaluation.scoring import evaluate_checkpoint, evaluate_model

__all__ = ["EvalResult", "evaluate_checkpoint", "evaluate_model", "accuracy", "mae", "rmse", "r2", "pearson", "ccc",
           "summarize"]
