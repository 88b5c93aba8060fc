"""Writing a zip whose entries are encrypted with traditional PKWARE encryption ("ZipCrypto").

The real ChaLearn val/test archives use it, so the sample's do too; both ``zipfile`` (``pwd=``) and
``pyzipper`` read it. pyzipper only writes AES itself: :func:`write_zipcrypto` plugs
:class:`ZipCryptoEncrypter` into its writer. Entries are stored (mp4 and nested zips do not compress).
ZipCrypto is weak encryption; it is here to reproduce the download format, not to protect anything.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class ZipCryptoEncrypter:
    """The ZipCrypto cipher of one entry, in the encrypter interface pyzipper's writer calls
    (keys from the password, a 12-byte header of salt and check byte, then the data)."""

    def __init__(self, pwd: bytes, check_byte: int, salt: bytes):
        from pyzipper.zipfile import _gen_crc

        self.table = [_gen_crc(i) for i in range(256)]
        self.keys = [305419896, 591751049, 878082192]
        for c in pwd:
            self._update(c)
        self.header = salt[:11] + bytes([check_byte])

    def _update(self, c: int) -> None:
        k0, k1, k2 = self.keys
        table = self.table
        k0 = (k0 >> 8) ^ table[(k0 ^ c) & 0xFF]
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = (k2 >> 8) ^ table[(k2 ^ (k1 >> 24)) & 0xFF]
        self.keys = [k0, k1, k2]

    def update_zipinfo(self, zinfo: Any) -> None:
        pass

    def finalize_zipinfo(self, zinfo: Any) -> None:
        pass

    def encryption_header(self) -> bytes:
        return self.encrypt(self.header)

    def encrypt(self, data: bytes) -> bytes:
        k0, k1, k2 = self.keys
        table = self.table
        out = bytearray(len(data))
        for i, c in enumerate(data):  # tight loop: ~1 us per byte; only val/test are encrypted
            k = k2 | 2
            out[i] = c ^ (((k * (k ^ 1)) >> 8) & 0xFF)
            k0 = (k0 >> 8) ^ table[(k0 ^ c) & 0xFF]
            k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
            k2 = (k2 >> 8) ^ table[(k2 ^ (k1 >> 24)) & 0xFF]
        self.keys = [k0, k1, k2]
        return bytes(out)

    def flush(self) -> bytes:
        return b""


def write_zipcrypto(path: Path, members: Sequence[tuple[str, bytes]], password: str,
                    salt: Callable[[int], bytes], *, date_time: tuple[int, int, int, int, int, int]) -> None:
    """Write ``members`` (name, data) as a stored zip at ``path``, every entry ZipCrypto-encrypted.

    ``salt(11)`` gives each entry's 11 random header bytes (a seeded source makes the archive reproducible).
    """
    import pyzipper

    pending: dict[str, int] = {}

    class ZipCryptoFile(pyzipper.ZipFile):
        def get_encrypter(self) -> ZipCryptoEncrypter:
            crc = pending["crc"]  # the password check byte is the CRC's high byte
            return ZipCryptoEncrypter(password.encode(), (crc >> 24) & 0xFF, salt(11))

    with ZipCryptoFile(path, "w", compression=pyzipper.ZIP_STORED) as zf:
        zf.setpassword(password.encode())
        for name, data in members:
            pending["crc"] = zipfile.crc32(data)
            info = pyzipper.ZipInfo(name, date_time=date_time)
            info.compress_type = pyzipper.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
