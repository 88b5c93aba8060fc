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
are read with :class:`RestrictedUnpickler`, whose ``find_class`` refuses every global. A crafted
pickle (``__reduce__`` -> ``os.system``) therefore fails with :class:`IngestError` before any of
its code runs. Pickles bigger than :data:`MAX_PICKLE_BYTES` are refused unread.

Archives are read with ``pyzipper`` (ZipCrypto and AES) and streamed member by member. A nested
zip is copied to a scratch file first: Python 3.11's ``ZipExtFile.seek`` rewinds and re-reads
the member from its start on every backward seek, which ``zipfile`` does for each inner member.

Error policy (module :mod:`bigfive.data.ingest` applies it):
- structural problems stop the ingest with ``IngestError("<file>: <entry>: <what>")``: a corrupt
  or truncated zip, a bad CRC, a missing or wrong password, a refused (crafted) pickle, a pickle
  that is not ``{trait: {clip: float}}``, a missing trait, a value outside [0, 1] or NaN, a clip
  labelled in two pickles, the same clip in two archives;
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyzipper

from bigfive import ALL_LABELS, SPLITS

MAX_PICKLE_BYTES = 64 << 20  # the real annotation pickles are < 1 MB
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
        super().__init__(f"{file}: {entry}: {what}")


# ---------------------------------------------------------------------------------------------
# Restricted unpickling


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asked for something an annotation file never needs (a global, a persistent id)."""


class _SafeDtype:
    """Stand-in for ``numpy.dtype`` inside a pickle: records a plain numeric type code, nothing more."""

    _CODES = frozenset(f"{k}{n}" for k in "fiu" for n in (1, 2, 4, 8)) | {"b1"}

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if not isinstance(code, str) or code not in self._CODES:
            raise RefusedPickle(f"refused numpy dtype {code!r}: only plain numeric scalars are allowed")
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


# The only globals an annotation pickle may name: numpy float scalars (as some pickles of the labels
# hold them), rebuilt by the safe stand-ins above. Everything else is refused, so nothing in a crafted
# pickle runs.
_ALLOWED_GLOBALS = {
    ("numpy", "dtype"): _SafeDtype,
    ("numpy.core.multiarray", "scalar"): _safe_numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_numpy_scalar,
    ("_codecs", "encode"): _safe_latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only builtin containers and scalars (and numeric numpy scalars, as plain numbers)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        raise RefusedPickle(f"refused global {module}.{name}: an annotation pickle may hold only "
                            "dicts, lists, strings and numbers (crafted or unexpected pickle?)")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle("refused persistent id")


def load_pickle(data: bytes, file: str) -> Any:
    """Unpickle ``data`` (a Python-2 or -3 pickle) without running anything in it."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedPickle as err:
        raise IngestError(file, "pickle", str(err)) from None
    except Exception as err:  # truncated or garbage data surfaces as many types
        raise IngestError(file, "pickle", f"not a readable pickle ({type(err).__name__}: {err})") from None


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


def parse_annotations(obj: Any, file: str) -> dict[str, dict[str, float]]:
    """Validate ``{trait: {"<id>.mp4": float}}`` and return ``{video_id: {label: value}}``."""
    if not isinstance(obj, dict):
        raise IngestError(file, "pickle", f"expected a dict of traits, got {type(obj).__name__}")
    out: dict[str, dict[str, float]] = {}
    for label in ALL_LABELS:
        if label not in obj:
            have = ", ".join(sorted(map(str, obj))) or "none"
            raise IngestError(file, label, f"missing trait (traits present: {have})")
        values = obj[label]
        if not isinstance(values, dict):
            raise IngestError(file, label, f"expected a dict of clip -> value, got {type(values).__name__}")
        for clip, value in values.items():
            if not isinstance(clip, str) or not clip:
                raise IngestError(file, f"{label}[{clip!r}]", "clip names must be non-empty strings")
            vid = video_id_of(clip)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IngestError(file, f"{clip} ({label})", f"value {value!r} is not a number")
            value = float(value)
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


def parse_demographics(text: str, file: str, warnings: list[str]) -> dict[str, Demographic]:
    """Parse ``VideoName;YouTubeID;Ethnicity;Gender``; bad rows become warnings, never errors."""
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    if not rows:
        warnings.append(f"{file}: header: empty demographics file")
        return {}
    header = [h.strip().lower() for h in rows[0]]
    try:
        cols = [header.index(c) for c in ("videoname", "youtubeid", "ethnicity", "gender")]
    except ValueError:
        warnings.append(f"{file}: header: expected VideoName;YouTubeID;Ethnicity;Gender, got {';'.join(rows[0])}")
        return {}
    out: dict[str, Demographic] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(cols):
            warnings.append(f"{file}: line {line}: expected 4 fields, got {len(row)}")
            continue
        video, youtube, eth, gender = (row[c].strip() for c in cols)
        eth = _code(eth, ETHNICITY, file, line, "Ethnicity", warnings)
        gender = _code(gender, GENDER, file, line, "Gender", warnings)
        out[video_id_of(video)] = Demographic(youtube or youtube_id_of(video_id_of(video)), eth, gender)
    return out


def _code(value: str, known: dict[str, str], file: str, line: int, column: str, warnings: list[str]) -> str:
    if value.endswith(".0"):  # written by a spreadsheet as a float
        value = value[:-2]
    if value and value not in known:
        warnings.append(f"{file}: line {line}: unknown {column} code {value!r} (left empty)")
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


def scan_downloads(root: str | Path, password: bytes | None, password_hint: str = "",
                   exclude: Path | None = None) -> Downloads:
    """Read labels and demographics (loose or in any top-level zip) and list clip sources.

    ``exclude`` (the output directory, should it lie inside ``root``) is not scanned.
    """
    root = Path(root)
    exclude = exclude.resolve() if exclude is not None else None
    if not root.is_dir():
        raise IngestError(root, "directory", "downloads directory not found")
    found = Downloads(root)
    pickles: dict[str, tuple[str, dict[str, dict[str, float]]]] = {}  # file name -> (where, labels)
    demo_texts: list[tuple[str, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))):
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        rel = str(path.relative_to(root))
        name = path.name
        if ANNOTATION_RE.match(name):
            _add_pickle(pickles, name, rel, _read_limited(path.open("rb"), rel, "pickle"))
        elif DEMOGRAPHICS_RE.match(name):
            demo_texts.append((rel, path.read_text(encoding="utf-8-sig", errors="replace")))
        elif name.lower().endswith(".zip"):
            if _scan_zip(path, rel, password, password_hint, pickles, demo_texts):
                found.zips.append(path)
        elif name.lower().endswith(".mp4"):
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
    for where, text in demo_texts:
        found.demographic_files.append(where)
        for vid, demo in parse_demographics(text, where, found.warnings).items():
            old = found.demographics.get(vid)
            if old is not None and old != demo:
                found.warnings.append(f"{where}: {vid}: demographics differ from an earlier file; keeping the first")
                continue
            found.demographics[vid] = demo
    return found


def _hidden(rel: Path) -> bool:
    # Skip dot-files/dirs (our own temp dirs, macOS "._" forks) and __MACOSX folders.
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _add_pickle(pickles: dict[str, tuple[str, dict[str, dict[str, float]]]], name: str, where: str,
                data: bytes) -> None:
    labels = parse_annotations(load_pickle(data, where), where)
    key = name.lower()
    if key in pickles:
        # The same file unpacked and inside its annotation zip is fine; two different ones are not.
        if pickles[key][1] != labels:
            raise IngestError(where, name, f"differs from {pickles[key][0]} (two different annotation files "
                              "of the same name; remove one)")
        return
    pickles[key] = (where, labels)


def _read_limited(f: BinaryIO, where: str, entry: str) -> bytes:
    with f:
        data = f.read(MAX_PICKLE_BYTES + 1)
    if len(data) > MAX_PICKLE_BYTES:
        raise IngestError(where, entry, f"larger than {MAX_PICKLE_BYTES >> 20} MB; not an annotation file")
    return data


def open_zip(path: str | Path | BinaryIO, where: str, password: bytes | None) -> pyzipper.AESZipFile:
    try:
        zf = pyzipper.AESZipFile(path)
    except _ZIP_ERRORS as err:
        raise IngestError(where, "archive", f"not a readable zip (corrupt or truncated download?): {err}") from None
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


def _scan_zip(path: Path, where: str, password: bytes | None, hint: str,
              pickles: dict[str, tuple[str, dict[str, dict[str, float]]]], demo_texts: list[tuple[str, str]]) -> bool:
    """Read annotation/demographic members; return whether the zip may hold clips (mp4 or zip members)."""
    with open_zip(path, where, password) as zf:
        may_hold_clips = False
        checked_password = False
        for info in zf.infolist():
            name = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or _hidden(Path(info.filename)):
                continue
            lower = name.lower()
            try:
                if ANNOTATION_RE.match(name):
                    _add_pickle(pickles, name, f"{where}!{info.filename}",
                                _read_limited(zf.open(info), f"{where}!{info.filename}", "pickle"))
                elif DEMOGRAPHICS_RE.match(name):
                    with zf.open(info) as f:
                        demo_texts.append((f"{where}!{info.filename}", f.read().decode("utf-8-sig", "replace")))
                elif lower.endswith((".mp4", ".zip")):
                    may_hold_clips = True
                    if info.flag_bits & 0x1 and not checked_password:
                        # Opening checks the password: fail now, not after copying the other archives.
                        zf.open(info).close()
                        checked_password = True
            except (RuntimeError, *_ZIP_ERRORS) as err:
                raise _member_error(where, info, err, hint) from None
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
    """Every ``*.mp4`` in every zip (nested zips included) and loose in the downloads directory."""
    for path in downloads.zips:
        where = str(path.relative_to(downloads.root))
        with open_zip(path, where, password) as zf:
            yield from _walk_zip(zf, where, password, scratch, password_hint, depth=1)
    for path in downloads.loose_clips:
        yield Clip(video_id_of(path.name), str(path.relative_to(downloads.root)), path.stat().st_size,
                   lambda dest, p=path: _copy_stream(p.open("rb"), dest))


def _walk_zip(zf: pyzipper.AESZipFile, where: str, password: bytes | None, scratch: Path, hint: str,
              depth: int) -> Iterator[Clip]:
    for info in zf.infolist():
        if info.is_dir() or _hidden(Path(info.filename)):
            continue
        lower = info.filename.lower()
        if lower.endswith(".mp4"):
            yield Clip(video_id_of(info.filename), f"{where}!{info.filename}", info.file_size,
                       lambda dest, i=info: _copy_member(zf, i, dest, where, hint))
        elif lower.endswith(".zip"):
            if depth >= MAX_NESTING:
                raise IngestError(where, info.filename, f"zip nested more than {MAX_NESTING} levels deep")
            scratch.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="nested-", suffix=".zip", dir=scratch)
            os.close(fd)
            tmp = Path(name)
            try:
                _copy_member(zf, info, tmp, where, hint)
                inner = f"{where}!{info.filename}"
                with open_zip(tmp, inner, password) as nested:
                    yield from _walk_zip(nested, inner, password, scratch, hint, depth + 1)
            finally:
                tmp.unlink(missing_ok=True)


def _copy_member(zf: pyzipper.AESZipFile, info: zipfile.ZipInfo, dest: Path, where: str, hint: str) -> None:
    try:
        _copy_stream(zf.open(info), dest)
    except (RuntimeError, *_ZIP_ERRORS) as err:
        dest.unlink(missing_ok=True)
        raise _member_error(where, info, err, hint) from None


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
    """A clip name must be usable as a file name (no path tricks from a crafted archive)."""
    if not video_id or video_id in (".", "..") or "/" in video_id or "\\" in video_id or "\x00" in video_id:
        raise IngestError(source, repr(video_id), "not a valid clip file name")
