"""Training: memory-mapped data, the loop (``fit``), callbacks, MLflow tracking and the pyfunc model.

``fit`` and ``load_predictor`` are imported lazily so ``import bigfive.training`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fit", "FitResult", "load_predictor", "LoadedModel"]


def __getattr__(name: str) -> Any:
    if name in ("fit", "FitResult"):
        from bigfive.training import loop

        return getattr(loop, name)
    if name in ("load_predictor", "LoadedModel"):
        from bigfive.training import pyfunc

        return getattr(pyfunc, name)
    raise AttributeError(f"module 'bigfive.training' has no attribute {name!r}")
