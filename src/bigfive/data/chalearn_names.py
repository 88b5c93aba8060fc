"""What the ChaLearn First Impressions V2 release names things, and the error every ingest step raises.

A clip is ``<YouTubeID>.<NNN>.mp4``; labels are ``annotation_{training,validation,test}.pkl`` (the
file a clip is labelled in gives its split); demographics are ``eth_gender_annotations_{dev,test}.csv``.
Clip names come from archives, so they must match the id rule before they name a file or reach a log.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bigfive.data.limits import CLIP_ID_RE
from bigfive.utils.text import printable, short_repr

# Written last by `bigfive sample` (the files it wrote and their sizes); never copied by ingest.
SAMPLE_COMPLETE = "sample_complete.json"
ANNOTATION_RE = re.compile(r"^annotation_(?P<name>[A-Za-z0-9]+)\.pkl$", re.IGNORECASE)
DEMOGRAPHICS_RE = re.compile(r"^eth_gender_annotations.*\.csv$", re.IGNORECASE)


class IngestError(ValueError):
    """Bad input; the message is ``"<file>: <entry>: <what>"``."""

    def __init__(self, file: str | Path, entry: str, what: str):
        self.file, self.entry, self.what = str(file), entry, what
        # Names come from archives: escaped (no newline or terminal code reaches a log) and length-capped.
        super().__init__(printable(f"{file}: {entry}: {what}"))


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


def check_video_id(video_id: str, source: str) -> None:
    """A clip name must be a ChaLearn id: a safe file name (no path tricks, no control characters in
    logs, no over-long names) from a crafted archive."""
    if not is_clip_id(video_id):
        raise IngestError(source, short_repr(video_id), CLIP_ID_RULE)
