"""ChaLearn First Impressions V2 downloads: the clips streamed out of their archives, and the ingest's
error policy. The other jobs live in their own modules, re-exported here:

- :mod:`~bigfive.data.chalearn_names`: clip ids, label file names, :class:`IngestError`;
- :mod:`~bigfive.data.chalearn_pickles`: the annotation pickles, read without running them;
- :mod:`~bigfive.data.chalearn_demographics`: the demographics CSVs;
- :mod:`~bigfive.data.chalearn_zip`: zip members read within bounds (ZipCrypto and AES);
- :mod:`~bigfive.data.chalearn_scan`: what a downloads folder holds (:func:`scan_downloads`);
- :mod:`~bigfive.data.chalearn_manifest`: splits and ``manifest.csv``.

A nested zip is copied to a scratch file before it is walked: Python 3.11's ``ZipExtFile.seek``
rewinds and re-reads the member from its start on every backward seek, which ``zipfile`` does for
each inner member. Every input is bounded (:mod:`bigfive.data.limits`); error messages escape
control characters and print data through a length-capped ``repr``.

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

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyzipper

from bigfive.data.chalearn_demographics import ETHNICITY, GENDER, Demographic, parse_demographics
from bigfive.data.chalearn_manifest import MANIFEST_COLUMNS, manifest_rows, subject_disjoint_split, write_manifest
from bigfive.data.chalearn_names import (
    ANNOTATION_RE,
    CLIP_ID_RULE,
    DEMOGRAPHICS_RE,
    SAMPLE_COMPLETE,
    IngestError,
    check_video_id,
    is_clip_id,
    split_of_annotation,
    video_id_of,
    youtube_id_of,
)
from bigfive.data.chalearn_pickles import (
    MAX_PICKLE_BYTES,
    RefusedPickle,
    RestrictedUnpickler,
    _safe_latin1_encode,
    _safe_numpy_scalar,
    load_pickle,
    parse_annotations,
)
from bigfive.data.chalearn_scan import Downloads, scan_downloads
from bigfive.data.chalearn_zip import COPY_BUFFER, hidden_path, member_error, open_member, open_zip
from bigfive.data.limits import LimitError

MAX_NESTING = 4  # zips inside zips: the release uses 2 levels; more smells of a zip bomb

__all__ = [
    "ANNOTATION_RE", "CLIP_ID_RULE", "DEMOGRAPHICS_RE", "ETHNICITY", "GENDER", "MANIFEST_COLUMNS", "MAX_NESTING",
    "MAX_PICKLE_BYTES", "SAMPLE_COMPLETE", "Clip", "Demographic", "Downloads", "IngestError", "RefusedPickle",
    "RestrictedUnpickler", "_safe_latin1_encode", "_safe_numpy_scalar", "check_video_id", "is_clip_id", "iter_clips",
    "load_pickle", "manifest_rows", "open_zip", "parse_annotations", "parse_demographics", "scan_downloads",
    "split_of_annotation", "subject_disjoint_split", "video_id_of", "write_manifest", "youtube_id_of",
]


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
        if info.filename.endswith("/") or hidden_path(Path(info.filename)):  # is_dir() fails on an empty name
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
    src = open_member(zf, info, where, hint, limits.max_member_bytes, "max_member_bytes", downloads.budget, limits)
    try:
        with src, dest.open("wb") as out:
            while True:
                try:
                    chunk = src.read(COPY_BUFFER)  # zipfile verifies the CRC at the end of the read
                except LimitError as err:
                    raise IngestError(where, info.filename, str(err)) from None
                except Exception as err:  # the archive's fault; a write error below is the disk's
                    raise member_error(where, info, err, hint) from None
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
