"""The demographics CSVs (``VideoName;YouTubeID;Ethnicity;Gender``): a bad row only loses that clip's
ethnicity and gender, with a warning, never the ingest."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from bigfive.data.chalearn_names import CLIP_ID_RULE, is_clip_id, video_id_of, youtube_id_of
from bigfive.data.limits import DEFAULT_LIMITS, YOUTUBE_ID_RE, IngestLimits
from bigfive.utils.text import printable, short_repr

# Codes as published (kept as-is in the manifest; these name them for reports and plots).
ETHNICITY = {"1": "asian", "2": "caucasian", "3": "african-american"}
GENDER = {"1": "male", "2": "female"}


@dataclass(frozen=True)
class Demographic:
    youtube_id: str
    ethnicity: str  # code as published ("1".."3") or "" if unknown
    gender: str  # "1" male, "2" female, or ""


class FileWarnings:
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
    notes = FileWarnings(file, warnings, limits.max_warnings_per_file)
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


def _code(value: str, known: dict[str, str], line: int, column: str, notes: FileWarnings) -> str:
    if value.endswith(".0"):  # written by a spreadsheet as a float
        value = value[:-2]
    if value and value not in known:
        notes.add(f"line {line}", f"unknown {column} code {short_repr(value)} (left empty)")
        return ""
    return value
