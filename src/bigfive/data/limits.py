"""Bounds on untrusted input read by ``bigfive ingest``: pickles, archive members, CSV, names.

Everything a download can make the ingest do is bounded here, so that a small crafted file ends
in a one-line error within seconds and in bounded memory:

- pickles: a byte cap, then an opcode scan (:func:`scan_pickle`, pure Python, before the C
  unpickler runs) that refuses nesting deeper than ``max_pickle_depth``, more than
  ``max_pickle_nodes`` objects, memo indices out of order and dict keys / set items that are not
  strings (hash-collision floods, deep-tuple keys); after loading, :func:`check_structure` walks
  the result *with shared references expanded* and stops at the same node budget;
- archive members: :class:`BoundedReader` streams each member and stops at a per-member cap, a
  compression-ratio cap and a total inflated-size budget (:class:`InflateBudget`), whatever the
  zip's headers claim (members are refused from their headers first when these already say too
  much; only stored and deflate members are read: ``zipfile`` inflates bzip2 and LZMA a whole
  read at a time, with no bound on the output);
- counts: entries per zip, clips, annotation/demographics files, demographics rows, warnings;
- clip names: :data:`CLIP_ID_RE`, the characters ChaLearn ids use.

Each limit is a field of :class:`IngestLimits` (``bigfive ingest --limit NAME=VALUE``); a breach
raises :class:`LimitError`, which the caller turns into ``IngestError("<file>: <entry>: <what>")``.
"""

from __future__ import annotations

import dataclasses
import io
import pickletools
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from bigfive.utils.walk import first_past_bounds

MiB = 1 << 20
GiB = 1 << 30

# A ChaLearn clip id: an 11-character YouTube id (letters, digits, '_', '-') and the clip number.
CLIP_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}(?:\.[0-9]{3})?")
YOUTUBE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class IngestLimits:
    """Safe defaults, far above what the real release needs (its pickles are < 1 MB, its CSVs
    < 1 MB, its clips a few MB, a nested zip of 80 clips a few hundred MB)."""

    max_pickle_bytes: int = 64 * MiB     # an annotation pickle, as stored
    max_pickle_depth: int = 32           # nesting of containers inside a pickle (the labels need 2)
    max_pickle_nodes: int = 1_000_000    # objects in a pickle, shared references counted each time
    max_csv_bytes: int = 16 * MiB        # a demographics CSV, inflated
    max_csv_rows: int = 200_000          # demographics rows kept, all files together
    max_label_files: int = 64            # annotation pickles and demographics CSVs (the release has 5)
    max_clips: int = 200_000             # labelled clips, and clip members walked (the release has 10,000)
    max_member_bytes: int = 8 * GiB      # any one archive member (clip or nested zip), inflated
    max_total_bytes: int = 1024 * GiB    # everything inflated from archives in one ingest
    max_ratio: float = 100.0             # inflated / compressed size of a member ...
    ratio_floor_bytes: int = 1 * MiB     # ... once it is past this size (small text compresses well)
    max_members: int = 20_000            # entries in one zip (the release's hold 80 or fewer)
    max_warnings_per_file: int = 20      # bad demographics rows named per file (the rest counted)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"ingest limit {f.name} must be > 0, got {value!r}")

    def replace(self, assignments: list[str] | tuple[str, ...]) -> IngestLimits:
        """A copy with ``NAME=VALUE`` assignments applied (sizes accept K, M, G suffixes)."""
        names = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for item in assignments:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in names:
                raise ValueError(f"--limit {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
            try:
                changes[name] = _parse_number(text.strip(), float if name == "max_ratio" else int)
            except ValueError:
                raise ValueError(f"--limit {item!r}: {text.strip()!r} is not a number") from None
        out = dataclasses.replace(self, **changes)
        out.validate()
        return out


def _parse_number(text: str, kind: type) -> float | int:
    scale = {"k": 1 << 10, "m": MiB, "g": GiB, "t": 1 << 40}.get(text[-1:].lower(), 1) if text else 1
    if scale != 1:
        text = text[:-1]
    value = kind(float(text) * scale) if kind is int and scale != 1 else kind(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


DEFAULT_LIMITS = IngestLimits()


class LimitError(ValueError):
    """Input refused by a bound; ``str()`` says what, and which limit to raise if it is legitimate."""


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


# ---------------------------------------------------------------------------------------------
# Archive members


class InflateBudget:
    """Bytes inflated from archives so far in one ingest, against ``max_total_bytes``."""

    def __init__(self, limits: IngestLimits = DEFAULT_LIMITS):
        self.limits = limits
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limits.max_total_bytes:
            raise LimitError(f"archives inflate to more than {human(self.limits.max_total_bytes)} in all "
                             "(limit max_total_bytes; zip bomb?)")


def member_cap(limits: IngestLimits, compressed: int, cap: int) -> tuple[int, str]:
    """The most bytes a member of ``compressed`` stored bytes may inflate to, and the limit that says so."""
    by_ratio = max(int(limits.max_ratio * max(compressed, 1)), limits.ratio_floor_bytes)
    if by_ratio < cap:
        return by_ratio, (f"inflates more than {limits.max_ratio:g} times its compressed size "
                          f"({human(compressed)}; limit max_ratio; zip bomb?)")
    return cap, f"larger than {human(cap)} inflated"


def check_declared(limits: IngestLimits, file_size: int, compress_size: int, cap: int, cap_name: str) -> None:
    """Refuse a member from its header alone, before reading it (the reader checks the real bytes)."""
    most, why = member_cap(limits, compress_size, cap)
    if file_size > most:
        raise LimitError(why if most < cap else f"{why} (limit {cap_name})")


class BoundedReader(io.RawIOBase):
    """A read-only stream over ``raw`` that raises :class:`LimitError` past ``cap`` bytes.

    ``cap``/``why`` come from :func:`member_cap`; every byte is also charged to ``budget``.
    """

    def __init__(self, raw: BinaryIO, cap: int, why: str, budget: InflateBudget | None = None):
        super().__init__()
        self.raw, self.cap, self.why, self.budget = raw, cap, why, budget
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        # Never ask for more than one byte past the cap: a bomb is stopped there, not after inflating.
        want = min(len(view), self.cap + 1 - self.count)
        if want <= 0:
            raise LimitError(self.why)
        data = self.raw.read(want)
        n = len(data)
        view[:n] = data
        self.count += n
        if self.count > self.cap:
            raise LimitError(self.why)
        if self.budget is not None:
            self.budget.take(n)
        return n

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


def read_capped(raw: BinaryIO, cap: int, why: str, budget: InflateBudget | None = None) -> bytes:
    """All of ``raw`` (closed afterwards), or :class:`LimitError` once past ``cap`` bytes."""
    with BoundedReader(raw, cap, why, budget) as f:
        chunks = []
        while True:
            chunk = f.read(MiB)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


# ---------------------------------------------------------------------------------------------
# Pickles

_STRINGS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
                      "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})
_ATOMS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "NONE", "NEWTRUE",
                    "NEWFALSE", "FLOAT", "BINFLOAT", "BYTEARRAY8", "NEXT_BUFFER", "GLOBAL", "EXT1", "EXT2",
                    "EXT4", "PERSID"})
_EMPTY = frozenset({"EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "EMPTY_SET"})
_FROM_MARK = frozenset({"LIST", "TUPLE", "DICT", "FROZENSET", "INST", "OBJ"})
_FIXED = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "STACK_GLOBAL": 2,
          "READONLY_BUFFER": 1, "BINPERSID": 1}
_INTO_TOP = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}  # pop n, fold into the object below
_INTO_TOP_FROM_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NOOP = frozenset({"PROTO", "FRAME", "STOP"})
MEMO_SLACK = 1024  # picklers number memo entries 0, 1, 2...; a far-off index only makes the C memo huge


class _Underflow(Exception):
    pass


def scan_pickle(data: bytes, limits: IngestLimits = DEFAULT_LIMITS) -> None:
    """Walk ``data``'s opcodes (never building anything) and refuse what would hurt the C unpickler.

    Raises :class:`LimitError` for a breached bound, ``ValueError`` (from ``pickletools``) for a
    malformed stream. See :class:`_PickleScan` for what is tracked.
    """
    scan = _PickleScan(limits.max_pickle_depth, limits.max_pickle_nodes)
    try:
        for op, arg, _pos in pickletools.genops(data):
            scan.step(op.name, arg)
    except _Underflow:
        raise ValueError("stack underflow (truncated or crafted pickle)") from None


class _PickleScan:
    """The unpickler's stack, abstracted: one small int per object instead of the object.

    The int is the object's nesting depth times two, plus one if it is a string (only strings may
    be dict keys or set items: hashing a deep tuple key recurses in C without a limit, and int or
    float keys can be made to collide). Marks, memo entries and objects all count as nodes.
    """

    def __init__(self, max_depth: int, max_nodes: int):
        self.max_depth, self.max_nodes = max_depth, max_nodes
        self.stack: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[int, int] = {}
        self.nodes = self.puts = 0

    def step(self, name: str, arg) -> None:
        if name in _STRINGS:
            self.push(1)
        elif name in _ATOMS:
            self.push(0)
        elif name in _EMPTY:
            self.push(2)
        elif name == "MARK":
            self.tick()
            self.marks.append(len(self.stack))
        elif name in _FROM_MARK:
            self.build_from_mark(name)
        elif name in _FIXED:
            self.push(_nest(self.pop(_FIXED[name])))
        elif name in _INTO_TOP or name in _INTO_TOP_FROM_MARK:
            self.fold_into_top(name)
        elif name in _PUT or name == "MEMOIZE":
            self.put(len(self.memo) if name == "MEMOIZE" else int(arg))
        elif name in _GET:
            if arg not in self.memo:
                raise ValueError(f"memo key {arg} was never stored")
            self.push(self.memo[arg])
        elif name == "DUP":
            self.push(self.top())
        elif name == "POP":
            if self.marks and self.marks[-1] == len(self.stack):  # POP of a bare mark, as the C unpickler allows
                self.marks.pop()
            else:
                self.pop(1)
        elif name == "POP_MARK":
            self.pop_mark()
        elif name not in _NOOP:  # pragma: no cover - an opcode added to a future pickle protocol
            raise LimitError(f"unsupported pickle opcode {name}")

    def tick(self) -> None:  # every object, mark and memo entry costs the C unpickler memory
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise LimitError(f"more than {self.max_nodes} objects (limit max_pickle_nodes)")

    def check_depth(self, entry: int) -> None:
        if entry >> 1 > self.max_depth:
            raise LimitError(f"nested deeper than {self.max_depth} levels (limit max_pickle_depth; crafted pickle?)")

    def push(self, entry: int) -> None:
        self.tick()
        self.check_depth(entry)
        self.stack.append(entry)

    def top(self) -> int:
        if not self.stack:
            raise _Underflow
        return self.stack[-1]

    def pop(self, n: int) -> list[int]:
        floor = self.marks[-1] if self.marks else 0
        if len(self.stack) - n < floor:
            raise _Underflow
        if n == 0:
            return []
        items = self.stack[-n:]
        del self.stack[-n:]
        return items

    def pop_mark(self) -> list[int]:
        if not self.marks:
            raise _Underflow
        at = self.marks.pop()
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def build_from_mark(self, name: str) -> None:
        """LIST, TUPLE, DICT, FROZENSET, INST, OBJ: a new object from the items above the mark."""
        items = self.pop_mark()
        if name == "DICT":
            _keys_are_strings(items[0::2])
        elif name == "FROZENSET":
            _keys_are_strings(items)
        self.push(_nest(items) if items else 2)

    def fold_into_top(self, name: str) -> None:
        """APPEND(S), SETITEM(S), ADDITEMS, BUILD: items folded into the object below them."""
        if name in _INTO_TOP:
            items = self.pop(_INTO_TOP[name])
            if name == "SETITEM":
                _keys_are_strings(items[:1])
        else:
            items = self.pop_mark()
            if name == "SETITEMS":
                _keys_are_strings(items[0::2])
            elif name == "ADDITEMS":
                _keys_are_strings(items)
        top = _nest(items, self.top() & ~1)
        self.check_depth(top)
        self.stack[-1] = top

    def put(self, index: int) -> None:
        self.top()  # a memo entry needs an object to name
        if index > self.puts + MEMO_SLACK or index < 0:
            raise LimitError(f"memo index {index} out of order (crafted pickle?)")
        self.tick()
        self.puts += 1
        self.memo[index] = self.stack[-1]


def _nest(items: list[int], base: int = 0) -> int:
    """The entry of an object holding ``items`` (on top of a container entry ``base``): one level deeper."""
    return max([base >> 1, *((e >> 1) + 1 for e in items)]) << 1


def _keys_are_strings(items: list[int]) -> None:
    if not all(e & 1 for e in items):
        raise LimitError("a dict key or set item is not a string (an annotation pickle is keyed by trait "
                         "and clip names; crafted pickle?)")


_CONTAINERS = (dict, list, tuple, set, frozenset)


def check_structure(obj: Any, limits: IngestLimits = DEFAULT_LIMITS) -> None:
    """Refuse a loaded object with more than ``max_pickle_nodes`` nodes or ``max_pickle_depth`` levels,
    counting a shared (memo) reference every time it occurs: what a naive walk, ``repr`` or
    ``json.dumps`` would expand. Iterative, and stops at the budget (cycles included)."""
    max_nodes, max_depth = limits.max_pickle_nodes, limits.max_pickle_depth
    past = first_past_bounds(obj, _children, max_nodes, max_depth)
    if past is None:
        return
    if past[0] == "nodes":
        raise LimitError(f"more than {max_nodes} values, shared references expanded (limit "
                         "max_pickle_nodes; crafted pickle?)")
    raise LimitError(f"nested deeper than {max_depth} levels (limit max_pickle_depth; crafted pickle?)")


def _children(obj: Any) -> Any:
    if type(obj) not in _CONTAINERS:
        return None
    if type(obj) is dict:
        return (x for kv in obj.items() for x in kv)
    return iter(obj)
