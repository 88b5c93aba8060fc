"""Progress bars with rate and ETA (tqdm), quiet when stderr is not a terminal unless asked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "clip",
             **kwargs: Any) -> tqdm:
    """A tqdm bar showing ``unit``/s and ETA; ``mininterval`` keeps logs short in CI."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=1.0,
                smoothing=0.1, **kwargs)
