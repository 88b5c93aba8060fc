"""A bounded depth-first walk of a graph whose shared nodes count every time they occur.

Both loaders that take hostile input use it: YAML aliases (``config/base.py``) and pickle memo
references (``data/limits.py``) make a small file describe a huge tree once expanded, which is
what constructing, ``repr`` or ``json.dumps`` of it would walk. Iterative, so depth costs no
Python stack, and it stops at the first bound (cycles included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

_END = object()


def first_past_bounds(root: Any, children: Callable[[Any], Iterable[Any] | None], max_nodes: int,
                      max_depth: int) -> tuple[Literal["nodes", "depth"], Any] | None:
    """The first node past a bound, and which one, or None when the expanded tree fits.

    ``children(node)`` is None for a leaf; an empty iterable is a container (it counts for depth).
    The root is node 1 and depth 0.
    """
    top = children(root)
    if top is None:
        return None
    count = 1
    stack = [iter(top)]
    while stack:
        node = next(stack[-1], _END)
        if node is _END:
            stack.pop()
            continue
        count += 1
        if count > max_nodes:
            return "nodes", node
        below = children(node)
        if below is not None:
            if len(stack) >= max_depth:
                return "depth", node
            stack.append(iter(below))
    return None
