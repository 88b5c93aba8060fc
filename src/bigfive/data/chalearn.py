"""ChaLearn First Impressions V2 downloads: safe label reading, archive walking, splits, manifest.

What the official release looks like (see /work/shared/REFERENCE.md): ``train-1.zip`` ...
``train-6.zip``, ``val-1.zip``, ``val-2.zip``, ``test-1e.zip``, ``test-2e.zip`` holding nested zips
of 80 clips (``training80_01.zip`` ...), each clip ``<YouTubeID>.<NNN>.mp4``; labels in
``annotation_{training,validation,test}.pkl`` (loose or inside any zip); demographics in
``eth_gender_annotations_{dev,test}.csv``. Nothing here depends on archive *names*: every zip
(and every zip nested in it) is walked for ``*.mp4`` members, and any member or file named
``annotation_*.pkl`` / ``eth_gender_annotations*.csv`` is read as labels / demographics.
The split of a clip is the pickle it is labelled in (training -> train, validation -> val,
test -> test).

Safety: the annotation pickles are Python-2 pickles of plain dicts, strings and floats, so they
are read with :class:`RestrictedUnpickler`, whose ``find_class`` refuses every global (but numpy
float scalars, rebuilt by stand-ins made fresh for each load). A crafted pickle (``__reduce__`` ->
``os.system``) therefore fails with :class:`IngestError` before any of its code runs. Every input
is bounded (:mod:`bigfive.data.limits`): a pickle's opcodes are scanned for depth, object count
and memo order before the C unpickler sees them, and the result is walked with shared references
expanded against a node budget; archive members (clips, nested zips, pickles, CSVs) are streamed
through per-member, compression-ratio and total inflated-size caps; clip names must be ChaLearn
ids. Error messages escape control characters and print data through a length-capped ``repr``.

Archives are read with ``pyzipper`` (ZipCrypto and AES) and streamed member by member. A nested
zip is copied to a scratch file first: Python 3.11's ``ZipExtFile.seek`` rewinds and re-reads
the member from its start on every backward seek, which ``zipfile`` does for each inner member.

Error policy (module :mod:`bigfive.data.ingest` applies it):
- structural problems stop the ingest with ``IngestError("<file>: <entry>: <what>")``: a corrupt
  or truncated zip, a bad CRC, a missing or wrong password, a refused (crafted) pickle, a pickle
  that is not ``{trait: {clip: float}}``, a missing trait, a value outside [0, 1] or NaN, a clip
  labelled in two pickles, the same clip in two archives, a clip name that is not a ChaLearn id,
  an input past a limit of :class:`~bigfive.data.limits.IngestLimits`;
- dataset mismatches known to occur in the real release (a video with no label, a label with no
  video) are reported (log warning + ``ingest_report.json``) and the clip is skipped, unless
  ``strict`` (``--strict`` / ``data.strict``) turns them into errors too;
- a malformed demographics row only loses that clip's ethnicity/gender (warning).
"""

from __future__ import annotations

import csv
import io
import math
import os
import pickle
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyzipper

from bigfive import ALL_LABELS, SPLITS
from bigfive.data.limits import (
    CLIP_ID_RE,
    DEFAULT_LIMITS,
    YOUTUBE_ID_RE,
    BoundedReader,
    InflateBudget,
    IngestLimits,
    LimitError,
    check_declared,
    check_structure,
    human,
    member_cap,
    read_capped,
    scan_pickle,
)
from bigfive.utils.text import printable, short_repr

MAX_PICKLE_BYTES = DEFAULT_LIMITS.max_pickle_bytes  # the real annotation pickles are < 1 MB
# Written last by `bigfive sample` (the files it wrote and their sizes); never copied by ingest.
SAMPLE_COMPLETE = "sample_complete.json"
MAX_NESTING = 4  # zips inside zips: the release uses 2 levels; more smells of a zip bomb
COPY_BUFFER = 1 << 20

ANNOTATION_RE = re.compile(r"^annotation_(?P<name>[A-Za-z0-9]+)\.pkl$", re.IGNORECASE)
DEMOGRAPHICS_RE = re.compile(r"^eth_gender_annotations.*\.csv$", re.IGNORECASE)
MANIFEST_COLUMNS: tuple[str, ...] = ("video_id", "youtube_id", "split", "path", *ALL_LABELS, "ethnicity", "gender")
# Codes as published (kept as-is in the manifest; these name them for reports and plots).
ETHNICITY = {"1": "asian", "2": "caucasian", "3": "african-american"}
GENDER = {"1": "male", "2": "female"}

# zipfile and pyzipper have distinct BadZipFile classes; all of these mean "this archive/member is bad".
_ZIP_ERRORS = (zipfile.BadZipFile, pyzipper.BadZipFile, zlib.error, EOFError, NotImplementedError)


class IngestError(ValueError):
    """Bad input; the message is ``"<file>: <entry>: <what>"``."""

    def __init__(self, file: str | Path, entry: str, what: str):
        self.file, self.entry, self.what = str(file), entry, what
        # Names come from archives: escaped (no newline or terminal code reaches a log) and length-capped.
        super().__init__(printable(f"{file}: {entry}: {what}"))


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


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


# ---------------------------------------------------------------------------------------------
# Labels and demographics


def video_id_of(name: str) -> str:
    """``"dir/-6otZ7M-Mro.003.mp4"`` -> ``"-6otZ7M-Mro.003"``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".mp4") else base


def youtube_id_of(video_id: str) -> str:
    """``"-6otZ7M-Mro.003"`` -> ``"-6otZ7M-Mro"`` (YouTube ids never contain dots)."""
    return video_id.rsplit(".", 1)[0] if "." in video_id else video_id


def split_of_annotation(file_name: str) -> str:
    """``annotation_training.pkl`` -> ``train`` (also validation -> val, test -> test)."""
    m = ANNOTATION_RE.match(file_name)
    name = m.group("name").lower() if m else ""
    for prefix, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if name.startswith(prefix):
            return split
    raise IngestError(file_name, "file name", "cannot tell the split (expected annotation_training.pkl, "
                      "annotation_validation.pkl or annotation_test.pkl)")


def is_clip_id(video_id: Any) -> bool:
    """Whether ``video_id`` looks like a ChaLearn id: ``[A-Za-z0-9_-]`` (at most 64) then ``.NNN``."""
    return isinstance(video_id, str) and CLIP_ID_RE.fullmatch(video_id) is not None


CLIP_ID_RULE = ("not a ChaLearn clip name (letters, digits, '_' and '-', at most 64, then '.NNN' and '.mp4', "
                "e.g. '-6otZ7M-Mro.003.mp4')")


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


@dataclass(frozen=True)
class Demographic:
    youtube_id: str
    ethnicity: str  # code as published ("1".."3") or "" if unknown
    gender: str  # "1" male, "2" female, or ""


class _FileWarnings:
    """Warnings about one file: the first ``limit`` kept, the rest counted in one closing line."""

    def __init__(self, file: str, warnings: list[str], limit: int):
        self.file, self.warnings, self.limit, self.count = file, warnings, limit, 0

    def add(self, where: str, what: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            self.warnings.append(printable(f"{self.file}: {where}: {what}"))

    def close(self) -> None:
        if self.count > self.limit:
            self.warnings.append(printable(f"{self.file}: {self.count - self.limit} more warning(s) not listed"))


def parse_demographics(text: str | Iterable[str], file: str, warnings: list[str],
                       limits: IngestLimits = DEFAULT_LIMITS, max_rows: int | None = None) -> dict[str, Demographic]:
    """Parse ``VideoName;YouTubeID;Ethnicity;Gender``; bad rows become warnings, never errors.

    ``text`` is the whole file or an iterable of its lines (a stream: it is read row by row). At most
    ``max_rows`` (default ``limits.max_csv_rows``) rows are read and ``limits.max_warnings_per_file``
    bad rows named.
    """
    max_rows = limits.max_csv_rows if max_rows is None else max_rows
    lines = io.StringIO(text) if isinstance(text, str) else text
    reader = csv.reader(lines, delimiter=";")
    notes = _FileWarnings(file, warnings, limits.max_warnings_per_file)
    out: dict[str, Demographic] = {}
    cols: list[int] | None = None
    rows = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # a field over csv's limit, a NUL byte...: lose that row only
            if cols is None:
                notes.add("header", f"unreadable ({err})")
                notes.close()
                return {}
            notes.add(f"line {reader.line_num}", f"unreadable row ({err})")
            continue
        if cols is None:
            header = [h.strip().lower() for h in row]
            try:
                cols = [header.index(c) for c in ("videoname", "youtubeid", "ethnicity", "gender")]
            except ValueError:
                notes.add("header", f"expected VideoName;YouTubeID;Ethnicity;Gender, got {short_repr(';'.join(row))}")
                notes.close()
                return {}
            continue
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        rows += 1
        if rows > max_rows:
            notes.add(f"line {line}", f"more than {limits.max_csv_rows} demographics rows in all (limit "
                      "max_csv_rows); the rest ignored")
            break
        if len(row) <= max(cols):
            notes.add(f"line {line}", f"expected 4 fields, got {len(row)}")
            continue
        video, youtube, eth, gender = (row[c].strip() for c in cols)
        vid = video_id_of(video)
        if not is_clip_id(vid):
            notes.add(f"line {line}", f"VideoName {short_repr(video)} is {CLIP_ID_RULE} (row skipped)")
            continue
        if youtube and not YOUTUBE_ID_RE.fullmatch(youtube):
            notes.add(f"line {line}", f"YouTubeID {short_repr(youtube)} is not a YouTube id (taken from the clip name)")
            youtube = ""
        eth = _code(eth, ETHNICITY, line, "Ethnicity", notes)
        gender = _code(gender, GENDER, line, "Gender", notes)
        out[vid] = Demographic(youtube or youtube_id_of(vid), eth, gender)
    if cols is None:
        notes.add("header", "empty demographics file")
    notes.close()
    return out


def _code(value: str, known: dict[str, str], line: int, column: str, notes: _FileWarnings) -> str:
    if value.endswith(".0"):  # written by a spreadsheet as a float
        value = value[:-2]
    if value and value not in known:
        notes.add(f"line {line}", f"unknown {column} code {short_repr(value)} (left empty)")
        return ""
    return value


# ---------------------------------------------------------------------------------------------
# Scanning the downloads directory


@dataclass
class Downloads:
    """Everything found in a downloads directory except the clips themselves."""

    root: Path
    labels: dict[str, dict[str, float]] = field(default_factory=dict)  # video_id -> label -> value
    split_of: dict[str, str] = field(default_factory=dict)  # video_id -> official split
    label_source: dict[str, str] = field(default_factory=dict)  # video_id -> annotation file
    demographics: dict[str, Demographic] = field(default_factory=dict)
    zips: list[Path] = field(default_factory=list)  # archives that may hold clips
    loose_clips: list[Path] = field(default_factory=list)  # *.mp4 files outside zips
    annotation_files: list[str] = field(default_factory=list)
    demographic_files: list[str] = field(default_factory=list)
    metadata: Path | None = None  # sample_metadata.json (from the sample generator)
    warnings: list[str] = field(default_factory=list)
    limits: IngestLimits = DEFAULT_LIMITS
    budget: InflateBudget = field(default_factory=InflateBudget)  # bytes inflated so far, all archives
    label_files: int = 0  # annotation and demographics files read so far
    csv_rows: int = 0  # demographics rows read so far
    clips_walked: int = 0  # clip members met so far


def scan_downloads(root: str | Path, password: bytes | None, password_hint: str = "",
                   exclude: Path | None = None, limits: IngestLimits = DEFAULT_LIMITS) -> Downloads:
    """Read labels and demographics (loose or in any top-level zip) and list clip sources.

    ``exclude`` (the output directory, should it lie inside ``root``) is not scanned.
    """
    root = Path(root)
    exclude = exclude.resolve() if exclude is not None else None
    if not root.is_dir():
        raise IngestError(root, "directory", "downloads directory not found")
    found = Downloads(root, limits=limits, budget=InflateBudget(limits))
    pickles: dict[str, tuple[str, dict[str, dict[str, float]]]] = {}  # file name -> (where, labels)
    demographics: list[tuple[str, dict[str, Demographic]]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))):
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        rel = str(path.relative_to(root))
        name = path.name
        if ANNOTATION_RE.match(name):
            _count_label_file(found, rel)
            data = _read_file(path, rel, "pickle", limits.max_pickle_bytes, "max_pickle_bytes")
            _add_pickle(pickles, name, rel, data, limits)
        elif DEMOGRAPHICS_RE.match(name):
            _count_label_file(found, rel)
            with _open_file(path, rel, "demographics", limits.max_csv_bytes, "max_csv_bytes") as f:
                demographics.append((rel, _read_demographics(f, rel, found)))
        elif name.lower().endswith(".zip"):
            if _scan_zip(path, rel, password, password_hint, pickles, demographics, found):
                found.zips.append(path)
        elif name.lower().endswith(".mp4"):
            found.clips_walked += 1
            if found.clips_walked > limits.max_clips:
                raise IngestError(rel, "clips", f"more than {limits.max_clips} clips (limit max_clips)")
            found.loose_clips.append(path)
        elif name == "sample_metadata.json" and path.parent == root:
            found.metadata = path

    for name in sorted(pickles):
        where, labels = pickles[name]
        split = split_of_annotation(name)
        found.annotation_files.append(where)
        for vid, values in labels.items():
            if vid in found.labels:
                raise IngestError(where, f"{vid}.mp4", f"duplicate clip id: also labelled in {found.label_source[vid]}")
            found.labels[vid] = values
            found.split_of[vid] = split
            found.label_source[vid] = where
    for where, parsed in demographics:
        found.demographic_files.append(where)
        notes = _FileWarnings(where, found.warnings, limits.max_warnings_per_file)
        for vid, demo in parsed.items():
            old = found.demographics.get(vid)
            if old is not None and old != demo:
                notes.add(vid, "demographics differ from an earlier file; keeping the first")
                continue
            found.demographics[vid] = demo
        notes.close()
    return found


def _hidden(rel: Path) -> bool:
    # Skip dot-files/dirs (our own temp dirs, macOS "._" forks) and __MACOSX folders.
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _count_label_file(found: Downloads, where: str) -> None:
    found.label_files += 1
    if found.label_files > found.limits.max_label_files:
        raise IngestError(where, "labels", f"more than {found.limits.max_label_files} annotation and demographics "
                          "files (limit max_label_files)")


def _add_pickle(pickles: dict[str, tuple[str, dict[str, dict[str, float]]]], name: str, where: str,
                data: bytes, limits: IngestLimits = DEFAULT_LIMITS) -> None:
    labels = parse_annotations(load_pickle(data, where, limits), where)
    if sum(len(v[1]) for v in pickles.values()) + len(labels) > limits.max_clips:
        raise IngestError(where, "labels", f"more than {limits.max_clips} labelled clips in all (limit max_clips)")
    key = name.lower()
    if key in pickles:
        # The same file unpacked and inside its annotation zip is fine; two different ones are not.
        if pickles[key][1] != labels:
            raise IngestError(where, name, f"differs from {pickles[key][0]} (two different annotation files "
                              "of the same name; remove one)")
        return
    pickles[key] = (where, labels)


def _open_file(path: Path, where: str, entry: str, cap: int, cap_name: str) -> BoundedReader:
    """A file in the downloads directory, read through a :class:`BoundedReader` of ``cap`` bytes."""
    try:
        return BoundedReader(path.open("rb"), cap, f"larger than {human(cap)} (limit {cap_name})")
    except OSError as err:
        raise IngestError(where, entry, f"cannot read ({err.strerror or err})") from None


def _read_file(path: Path, where: str, entry: str, cap: int, cap_name: str) -> bytes:
    f = _open_file(path, where, entry, cap, cap_name)
    try:
        return read_capped(f, cap, f.why)
    except LimitError as err:
        raise IngestError(where, entry, str(err)) from None
    except OSError as err:
        raise IngestError(where, entry, f"cannot read ({err.strerror or err})") from None


def _read_demographics(stream: BinaryIO, where: str, found: Downloads) -> dict[str, Demographic]:
    """Parse a demographics CSV as it streams in (never whole in memory); a limit breach is an error."""
    text = io.TextIOWrapper(io.BufferedReader(stream, COPY_BUFFER), encoding="utf-8-sig", errors="replace",
                            newline="")
    try:
        parsed = parse_demographics(text, where, found.warnings, found.limits,
                                    max_rows=max(found.limits.max_csv_rows - found.csv_rows, 0))
    except LimitError as err:
        raise IngestError(where, "demographics", str(err)) from None
    found.csv_rows += len(parsed)
    return parsed


def open_zip(path: str | Path | BinaryIO, where: str, password: bytes | None,
             limits: IngestLimits = DEFAULT_LIMITS) -> pyzipper.AESZipFile:
    try:
        zf = pyzipper.AESZipFile(path)
    except Exception as err:  # a crafted central directory surfaces as many types
        detail = str(err) if isinstance(err, _ZIP_ERRORS) else f"{type(err).__name__}: {err}"
        raise IngestError(where, "archive", f"not a readable zip (corrupt or truncated download?): {detail}") from None
    if len(zf.infolist()) > limits.max_members:
        zf.close()
        raise IngestError(where, "archive", f"more than {limits.max_members} entries (limit max_members)")
    if password:
        zf.setpassword(password)
    return zf


def _member_error(where: str, info: zipfile.ZipInfo, err: Exception, hint: str) -> IngestError:
    """Turn zipfile/pyzipper errors into a message that says what to do."""
    text, member, encrypted = str(err), info.filename, bool(info.flag_bits & 0x1)
    if isinstance(err, RuntimeError) and "password" in text.lower():
        if "bad password" in text.lower():
            return IngestError(where, member, "wrong password for this encrypted archive")
        return IngestError(where, member, f"encrypted; no password given ({hint or 'pass the password'})")
    if encrypted and isinstance(err, (zlib.error, zipfile.BadZipFile, pyzipper.BadZipFile)):
        # ZipCrypto checks only one byte of the key: 1 in 256 wrong passwords get this far.
        return IngestError(where, member, f"cannot decompress ({err}): wrong password or corrupt archive")
    return IngestError(where, member, f"corrupt or truncated member ({type(err).__name__}: {err})")


def _open_member(zf: pyzipper.AESZipFile, info: zipfile.ZipInfo, where: str, hint: str, cap: int, cap_name: str,
                 budget: InflateBudget | None, limits: IngestLimits) -> BoundedReader:
    """``zf.open(info)`` behind the size, ratio and total bounds; refused from the header when it says too much."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # zipfile inflates bzip2 and LZMA a whole read at a time, unbounded: a bomb would pass any cap.
        raise IngestError(where, info.filename, f"compression method {info.compress_type} is not read (only stored "
                          "and deflate, as in the ChaLearn release)")
    most, why = member_cap(limits, info.compress_size, cap)
    if most == cap:
        why = f"{why} (limit {cap_name})"
    try:
        check_declared(limits, info.file_size, info.compress_size, cap, cap_name)
    except LimitError as err:
        raise IngestError(where, info.filename, f"{err} (the zip header says {human(info.file_size)})") from None
    try:
        return BoundedReader(zf.open(info), most, why, budget)
    except Exception as err:
        raise _member_error(where, info, err, hint) from None


def _read_member(zf: pyzipper.AESZipFile, info: zipfile.ZipInfo, where: str, hint: str, cap: int, cap_name: str,
                 found: Downloads) -> bytes:
    f = _open_member(zf, info, where, hint, cap, cap_name, found.budget, found.limits)
    try:
        return read_capped(f, f.cap, f.why)
    except LimitError as err:
        raise IngestError(where, info.filename, str(err)) from None
    except Exception as err:
        raise _member_error(where, info, err, hint) from None


def _scan_zip(path: Path, where: str, password: bytes | None, hint: str,
              pickles: dict[str, tuple[str, dict[str, dict[str, float]]]],
              demographics: list[tuple[str, dict[str, Demographic]]], found: Downloads) -> bool:
    """Read annotation/demographic members; return whether the zip may hold clips (mp4 or zip members)."""
    limits = found.limits
    with open_zip(path, where, password, limits) as zf:
        may_hold_clips = False
        checked_password = False
        for info in zf.infolist():
            name = info.filename.rsplit("/", 1)[-1]
            if info.filename.endswith("/") or _hidden(Path(info.filename)):  # is_dir() fails on an empty name
                continue
            lower = name.lower()
            inner = f"{where}!{info.filename}"
            if ANNOTATION_RE.match(name):
                _count_label_file(found, inner)
                data = _read_member(zf, info, where, hint, limits.max_pickle_bytes, "max_pickle_bytes", found)
                _add_pickle(pickles, name, inner, data, limits)
            elif DEMOGRAPHICS_RE.match(name):
                _count_label_file(found, inner)
                with _open_member(zf, info, where, hint, limits.max_csv_bytes, "max_csv_bytes", found.budget,
                                  limits) as f:
                    try:
                        demographics.append((inner, _read_demographics(f, inner, found)))
                    except IngestError:
                        raise
                    except Exception as err:
                        raise _member_error(where, info, err, hint) from None
            elif lower.endswith((".mp4", ".zip")):
                may_hold_clips = True
                if info.flag_bits & 0x1 and not checked_password:
                    # Opening checks the password: fail now, not after copying the other archives.
                    try:
                        zf.open(info).close()
                    except Exception as err:
                        raise _member_error(where, info, err, hint) from None
                    checked_password = True
        return may_hold_clips


# ---------------------------------------------------------------------------------------------
# Walking archives for clips


@dataclass
class Clip:
    """One ``*.mp4`` found in the downloads; ``copy_to`` streams it out (valid while iterating)."""

    video_id: str
    source: str  # "train-1.zip!training80_01.zip!abc.001.mp4" or a loose file's path
    size: int
    _copy: Callable[[Path], None]

    def copy_to(self, dest: Path) -> None:
        self._copy(dest)


def iter_clips(downloads: Downloads, password: bytes | None, scratch: Path, password_hint: str = "") -> Iterator[Clip]:
    """Every ``*.mp4`` in every zip (nested zips included) and loose in the downloads directory.

    Members are copied through :class:`~bigfive.data.limits.BoundedReader`: ``max_member_bytes``,
    ``max_ratio`` and ``downloads.budget`` (``max_total_bytes``) bound what any archive can inflate to.
    """
    for path in downloads.zips:
        where = str(path.relative_to(downloads.root))
        with open_zip(path, where, password, downloads.limits) as zf:
            yield from _walk_zip(zf, where, password, scratch, password_hint, 1, downloads)
    for path in downloads.loose_clips:
        yield Clip(video_id_of(path.name), str(path.relative_to(downloads.root)), path.stat().st_size,
                   lambda dest, p=path: _copy_stream(p.open("rb"), dest))


def _walk_zip(zf: pyzipper.AESZipFile, where: str, password: bytes | None, scratch: Path, hint: str,
              depth: int, downloads: Downloads) -> Iterator[Clip]:
    for info in zf.infolist():
        if info.filename.endswith("/") or _hidden(Path(info.filename)):  # is_dir() fails on an empty name
            continue
        lower = info.filename.lower()
        if lower.endswith(".mp4"):
            downloads.clips_walked += 1
            if downloads.clips_walked > downloads.limits.max_clips:
                raise IngestError(where, info.filename, f"more than {downloads.limits.max_clips} clips in the "
                                  "archives (limit max_clips)")
            yield Clip(video_id_of(info.filename), f"{where}!{info.filename}", info.file_size,
                       lambda dest, i=info: _copy_member(zf, i, dest, where, hint, downloads))
        elif lower.endswith(".zip"):
            if depth >= MAX_NESTING:
                raise IngestError(where, info.filename, f"zip nested more than {MAX_NESTING} levels deep")
            scratch.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="nested-", suffix=".zip", dir=scratch)
            os.close(fd)
            tmp = Path(name)
            try:
                _copy_member(zf, info, tmp, where, hint, downloads)
                inner = f"{where}!{info.filename}"
                with open_zip(tmp, inner, password, downloads.limits) as nested:
                    yield from _walk_zip(nested, inner, password, scratch, hint, depth + 1, downloads)
            finally:
                tmp.unlink(missing_ok=True)


def _copy_member(zf: pyzipper.AESZipFile, info: zipfile.ZipInfo, dest: Path, where: str, hint: str,
                 downloads: Downloads) -> None:
    limits = downloads.limits
    src = _open_member(zf, info, where, hint, limits.max_member_bytes, "max_member_bytes", downloads.budget, limits)
    try:
        with src, dest.open("wb") as out:
            while True:
                try:
                    chunk = src.read(COPY_BUFFER)  # zipfile verifies the CRC at the end of the read
                except LimitError as err:
                    raise IngestError(where, info.filename, str(err)) from None
                except Exception as err:  # the archive's fault; a write error below is the disk's
                    raise _member_error(where, info, err, hint) from None
                if not chunk:
                    break
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _copy_stream(src: BinaryIO, dest: Path) -> None:
    # Stream (never the whole member in memory); zipfile verifies the CRC at the end of the read.
    with src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, COPY_BUFFER)


# ---------------------------------------------------------------------------------------------
# Splits and manifest


def subject_disjoint_split(youtube_of: dict[str, str], official: dict[str, str], seed: int) -> dict[str, str]:
    """Regroup clips by YouTube id into splits of the official sizes; no id lands in two splits.

    Subjects are shuffled (seeded), then visited largest first (ties in shuffled order), each going
    to the split that is least full relative to its target (official clip count); placing the big
    subjects while there is room keeps every split within one subject's clip count of its target.
    """
    target = {s: c for s, c in Counter(official.values()).items() if c > 0}
    groups: dict[str, list[str]] = defaultdict(list)
    for vid in sorted(youtube_of):
        groups[youtube_of[vid]].append(vid)
    order = sorted(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    order.sort(key=lambda subject: -len(groups[subject]))  # stable: equal sizes keep the shuffled order
    filled = dict.fromkeys(target, 0)
    out: dict[str, str] = {}
    for subject in order:
        # Least-full first; ties go to the larger target, then the pipeline's split order.
        split = min(target, key=lambda s: (filled[s] / target[s], -target[s], SPLITS.index(s)))
        for vid in groups[subject]:
            out[vid] = split
        filled[split] += len(groups[subject])
    return out


def manifest_rows(splits: dict[str, str], downloads: Downloads) -> list[dict[str, Any]]:
    """One row per clip in ``MANIFEST_COLUMNS`` order, sorted by split then video id."""
    rows = []
    for vid in sorted(splits, key=lambda v: (SPLITS.index(splits[v]), v)):
        demo = downloads.demographics.get(vid)
        split = splits[vid]
        row: dict[str, Any] = {
            "video_id": vid,
            "youtube_id": demo.youtube_id if demo else youtube_id_of(vid),
            "split": split,
            "path": f"{split}/{vid}.mp4",
            **{label: downloads.labels[vid][label] for label in ALL_LABELS},
            "ethnicity": demo.ethnicity if demo else "",
            "gender": demo.gender if demo else "",
        }
        rows.append(row)
    return rows


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        # repr keeps every float's exact value (the shortest string that round-trips).
        writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)


def check_video_id(video_id: str, source: str) -> None:
    """A clip name must be a ChaLearn id: a safe file name (no path tricks, no control characters in
    logs, no over-long names) from a crafted archive."""
    if not is_clip_id(video_id):
        raise IngestError(source, short_repr(video_id), CLIP_ID_RULE)
