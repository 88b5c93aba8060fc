"""Training: memory-mapped data, the loop (``fit``), callbacks, MLflow tracking and the pyfunc model.

``fit`` and ``load_predictor`` are imported lazily so ``import bigfive.training`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fit", "FitResult", "load_predictor", "Predictor", "load_checkpoint_any", "checkpoint_from_uri"]


def __getattr__(name: str) -> Any:
    if name in ("fit", "FitResult"):
        from bigfive.training import loop

        return getattr(loop, name)
    if name in ("load_predictor", "Predictor"):
        from bigfive.training import pyfunc

        return getattr(pyfunc, name)
    if name in ("load_checkpoint_any", "checkpoint_from_uri"):
        from bigfive.training import tracking

        return getattr(tracking, name)
    raise AttributeError(f"module 'bigfive.training' has no attribute {name!r}")
