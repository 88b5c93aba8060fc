"""Atomic file output: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the complete file or none at all. Outputs get
the usual permissions (``0666``/``0777`` less the umask), temporary or not. A directory built by
:func:`atomic_dir` is named ``.<name>.<pid>-<random>-<host>.tmp`` while it is being written; the
next :func:`atomic_dir` of the same target removes those whose process is gone (a killed run),
with a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs should be readable like any other
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temp_dir_re(name: str) -> re.Pattern[str]:
    # ours: .<name>.<pid>-<hex8>-<host>.tmp; before them: tempfile.mkdtemp's .<name>.<8 chars>.tmp
    return re.compile(rf"\.{re.escape(name)}\.(?:(?P<pid>[0-9]+)-[0-9a-f]{{8}}-(?P<host>[A-Za-z0-9]{{0,32}})"
                      rf"|[a-z0-9_]{{8}})\.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or a number we cannot check): leave its folder alone
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove what killed runs of :func:`atomic_dir` left beside ``path``; return what was removed.

    A temporary directory is stale when the process that made it (its name says which, on which
    host) no longer runs; one made on another host is left alone. A ``.<name>.old`` left between
    the two renames of a replacement is removed too. Each removal is logged.
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        path = Path(os.path.abspath(path))
    parent, pattern = path.parent, _temp_dir_re(path.name)
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if entry.name == f".{path.name}.old" and entry.is_dir() and not entry.is_symlink():
            why = "the previous output, left by a replacement that was interrupted"
        elif m is None:
            continue
        elif m.group("pid") is None:
            why = "left by an interrupted run"
        elif m.group("host") != _HOST or _pid_alive(int(m.group("pid"))):
            continue
        else:
            why = f"left by process {m.group('pid')}, which no longer runs"
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another run cleaned it first
        log.info("removed stale temporary folder %s (%s)", entry, why)
        removed.append(entry)
    return removed


def _make_temp_dir(path: Path) -> Path:
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}-{_HOST}.tmp"
        try:
            tmp.mkdir(mode=0o777)  # less the umask: the usual permissions once renamed into place
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (old content removed).

    Temporary folders of earlier runs of the same target that were killed are removed first. A
    symlink to a directory is followed: the directory it points to is replaced, the link kept.
    """
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.name in ("", ".", ".."):  # "." has no name to build a sibling from
        path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = _make_temp_dir(path)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
