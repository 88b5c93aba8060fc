"""The annotation pickles, read without running anything in them.

The release's labels are Python-2 pickles of plain dicts, strings and floats, so they are read with
:class:`RestrictedUnpickler`, whose ``find_class`` refuses every global (but numpy float scalars,
rebuilt by stand-ins made fresh for each load). A crafted pickle (``__reduce__`` -> ``os.system``)
therefore fails with :class:`~bigfive.data.chalearn_names.IngestError` before any of its code runs.
The opcodes are scanned for depth, object count and memo order before the C unpickler sees them, and
the result is walked with shared references expanded against a node budget
(:mod:`bigfive.data.limits`).
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import numpy as np

from bigfive import ALL_LABELS
from bigfive.data.chalearn_names import CLIP_ID_RULE, IngestError, is_clip_id, video_id_of
from bigfive.data.limits import DEFAULT_LIMITS, IngestLimits, LimitError, check_structure, human, scan_pickle
from bigfive.utils.text import printable, short_repr

MAX_PICKLE_BYTES = DEFAULT_LIMITS.max_pickle_bytes  # the real annotation pickles are < 1 MB


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asked for something an annotation file never needs (a global, a persistent id)."""


_DTYPE_CODES = frozenset(f"{k}{n}" for k in "fiu" for n in (1, 2, 4, 8)) | {"b1"}


class _SafeDtype:
    """Stand-in for ``numpy.dtype`` inside a pickle: records a plain numeric type code, nothing more."""

    __slots__ = ("code", "byteorder")

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if not isinstance(code, str) or code not in _DTYPE_CODES:
            raise RefusedPickle(f"refused numpy dtype {short_repr(code)}: only plain numeric scalars are allowed")
        self.code = code
        self.byteorder = "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]


def _safe_numpy_scalar(dtype: Any, data: Any = b"") -> float | int | bool:
    """``numpy.core.multiarray.scalar`` rebuilt from its raw bytes as a Python number."""
    if not isinstance(dtype, _SafeDtype):
        raise RefusedPickle("refused numpy scalar without a plain numeric dtype")
    raw = data.encode("latin1") if isinstance(data, str) else data
    if not isinstance(raw, bytes):
        raise RefusedPickle("refused numpy scalar with non-bytes payload")
    order = ">" if dtype.byteorder == ">" else "<"
    value = np.frombuffer(raw, dtype=np.dtype(order + dtype.code), count=1)[0]
    return value.item()


def _safe_latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode``, as protocol-2 pickles written by Python 3 spell bytes; latin-1 text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle("refused _codecs.encode other than str to latin-1 bytes")
    return text.encode("latin1")


class _StandIn:
    """What ``find_class`` hands a pickle for an allowed global: a new callable per lookup, with no
    attributes to set (``__slots__ = ()``). A BUILD opcode aimed at it fails, and nothing one pickle
    does to its stand-ins can reach the module's functions or the next load."""

    __slots__ = ()


class _DtypeStandIn(_StandIn):
    __slots__ = ()

    def __call__(self, code: Any = None, align: Any = False, copy: Any = True) -> _SafeDtype:
        return _SafeDtype(code, align, copy)


class _ScalarStandIn(_StandIn):
    __slots__ = ()

    def __call__(self, dtype: Any = None, data: Any = b"") -> float | int | bool:
        return _safe_numpy_scalar(dtype, data)


class _EncodeStandIn(_StandIn):
    __slots__ = ()

    def __call__(self, text: Any = None, encoding: Any = "latin1") -> bytes:
        return _safe_latin1_encode(text, encoding)


# The only globals an annotation pickle may name: numpy float scalars (as some pickles of the labels
# hold them), rebuilt by the safe stand-ins above. Everything else is refused, so nothing in a crafted
# pickle runs.
_ALLOWED_GLOBALS: dict[tuple[str, str], type[_StandIn]] = {
    ("numpy", "dtype"): _DtypeStandIn,
    ("numpy.core.multiarray", "scalar"): _ScalarStandIn,
    ("numpy._core.multiarray", "scalar"): _ScalarStandIn,
    ("_codecs", "encode"): _EncodeStandIn,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only builtin containers and scalars (and numeric numpy scalars, as plain numbers)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed()  # fresh each time: see _StandIn
        raise RefusedPickle(f"refused global {printable(module, 60)}.{printable(name, 60)}: an annotation "
                            "pickle may hold only dicts, lists, strings and numbers (crafted or unexpected pickle?)")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refused persistent id")


def load_pickle(data: bytes, file: str, limits: IngestLimits = DEFAULT_LIMITS) -> Any:
    """Unpickle ``data`` (a Python-2 or -3 pickle) without running anything in it, in bounded memory.

    The opcode stream is scanned first (:func:`bigfive.data.limits.scan_pickle`: depth, object count,
    memo order, string keys), so the C unpickler never sees a pickle that could crash it or make it
    allocate without bound; the result is then walked with shared references expanded
    (:func:`~bigfive.data.limits.check_structure`), so no later step can be made to expand it.
    """
    if len(data) > limits.max_pickle_bytes:
        raise IngestError(file, "pickle", f"larger than {human(limits.max_pickle_bytes)} (limit max_pickle_bytes); "
                          "not an annotation file")
    try:
        scan_pickle(data, limits)
    except LimitError as err:
        raise IngestError(file, "pickle", f"refused: {err}") from None
    except Exception as err:  # malformed opcode stream: pickletools raises ValueError and friends
        raise IngestError(file, "pickle", f"not a readable pickle ({type(err).__name__}: {err})") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedPickle as err:
        raise IngestError(file, "pickle", str(err)) from None
    except Exception as err:  # truncated or garbage data surfaces as many types
        raise IngestError(file, "pickle", f"not a readable pickle ({type(err).__name__}: {err})") from None
    try:
        check_structure(obj, limits)
    except LimitError as err:
        raise IngestError(file, "pickle", f"refused: {err}") from None
    return obj


def parse_annotations(obj: Any, file: str) -> dict[str, dict[str, float]]:
    """Validate ``{trait: {"<id>.mp4": float}}`` and return ``{video_id: {label: value}}``."""
    if not isinstance(obj, dict):
        raise IngestError(file, "pickle", f"expected a dict of traits, got {type(obj).__name__}")
    out: dict[str, dict[str, float]] = {}
    for label in ALL_LABELS:
        if label not in obj:
            keys = sorted((k for k, _ in zip(obj, range(12))), key=str)
            have = ", ".join(short_repr(k, 40) for k in keys) + (" ..." if len(obj) > len(keys) else "") or "none"
            raise IngestError(file, label, f"missing trait (traits present: {have})")
        values = obj[label]
        if not isinstance(values, dict):
            raise IngestError(file, label, f"expected a dict of clip -> value, got {type(values).__name__}")
        for clip, value in values.items():
            if not isinstance(clip, str) or not clip:
                raise IngestError(file, f"{label}[{short_repr(clip)}]", "clip names must be non-empty strings")
            vid = video_id_of(clip)
            if not is_clip_id(vid):
                raise IngestError(file, f"{label}[{short_repr(clip)}]", CLIP_ID_RULE)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IngestError(file, f"{clip} ({label})", f"value {short_repr(value)} is not a number")
            try:
                value = float(value)
            except OverflowError:  # an int too large for a float
                raise IngestError(file, f"{clip} ({label})", f"value {short_repr(value)} is outside [0, 1]") from None
            if math.isnan(value) or not 0.0 <= value <= 1.0:
                raise IngestError(file, f"{clip} ({label})", f"value {value!r} is outside [0, 1]")
            if label in out.setdefault(vid, {}):
                raise IngestError(file, f"{clip} ({label})", "clip listed twice")
            out[vid][label] = value
    for vid, labels in out.items():
        missing = [lb for lb in ALL_LABELS if lb not in labels]
        if missing:
            raise IngestError(file, f"{vid}.mp4", f"no {', '.join(missing)} label (present for other traits)")
    return out
