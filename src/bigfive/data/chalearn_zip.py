"""Reading zip members within bounds, with errors that say what to do.

Archives are read with ``pyzipper`` (ZipCrypto, which the release's val/test archives use, and AES)
and streamed member by member through :class:`~bigfive.data.limits.BoundedReader`: per-member,
compression-ratio and total inflated-size caps, checked against the header before anything inflates.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import pyzipper

from bigfive.data.chalearn_names import IngestError
from bigfive.data.limits import (
    DEFAULT_LIMITS,
    BoundedReader,
    InflateBudget,
    IngestLimits,
    LimitError,
    check_declared,
    human,
    member_cap,
)

COPY_BUFFER = 1 << 20
# zipfile and pyzipper have distinct BadZipFile classes; all of these mean "this archive/member is bad".
_ZIP_ERRORS = (zipfile.BadZipFile, pyzipper.BadZipFile, zlib.error, EOFError, NotImplementedError)


def hidden_path(rel: Path) -> bool:
    """Dot-files and folders (our own temp dirs, macOS "._" forks) and __MACOSX folders are never read."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


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


def member_error(where: str, info: zipfile.ZipInfo, err: Exception, hint: str) -> IngestError:
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


def open_member(zf: pyzipper.AESZipFile, info: zipfile.ZipInfo, where: str, hint: str, cap: int, cap_name: str,
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
        raise member_error(where, info, err, hint) from None
