"""Read-ahead: decode the next clip in a background thread while this one's faces are searched.

FFmpeg's decoding and MTCNN's convolutions both run with the GIL released, so one worker decoding
clip k+1 while it detects faces in clip k costs about max(decode, detection) per clip instead of
their sum. The arrays are those of :func:`bigfive.preprocess.clip.extract_faces` bit for bit: the
same decode and the same detection, only at other times. At most one decoded clip waits (the T
sampled frames and their successors), so memory stays bounded whatever the batch.

    reader = ReadAhead(cfg, seed=0)
    for path, next_path in zip(paths, [*paths[1:], None]):
        clip = reader.get(path)            # decoded in the background if it was prefetched
        if next_path: reader.prefetch(next_path)
        faces = extract_faces(path, cfg, detector, decoded=clip)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bigfive.config import PreprocessConfig
from bigfive.preprocess.clip import DecodedClip, decode_clip

T = TypeVar("T")


class ReadAhead:
    """One background decoder; ``get`` returns a prefetched clip (or decodes it now), raising its errors."""

    def __init__(self, cfg: PreprocessConfig, seed: int = 0):
        self.cfg, self.seed = cfg, seed
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="bigfive-decode")
        self._pending: tuple[tuple[str, str], Future] | None = None

    @staticmethod
    def _key(path: str | Path, video_id: str | None) -> tuple[str, str]:
        return str(path), video_id or Path(path).stem

    def prefetch(self, path: str | Path, video_id: str | None = None) -> None:
        """Start decoding ``path``; a prefetch that was never collected is dropped."""
        key = self._key(path, video_id)
        if self._pending is not None:
            if self._pending[0] == key:
                return
            self._pending[1].cancel()
        self._pending = (key, self._executor.submit(decode_clip, path, self.cfg, seed=self.seed, video_id=key[1]))

    def get(self, path: str | Path, video_id: str | None = None) -> DecodedClip:
        """The decoded clip (raises :class:`~bigfive.data.video.VideoError` as ``decode_clip`` does)."""
        key = self._key(path, video_id)
        if self._pending is not None and self._pending[0] == key:
            future, self._pending = self._pending[1], None
            return future.result()
        return decode_clip(path, self.cfg, seed=self.seed, video_id=key[1])

    def close(self) -> None:
        if self._pending is not None:
            self._pending[1].cancel()
            self._pending = None
        self._executor.shutdown(wait=True)

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def with_successors(items: Sequence[T], chunk: int) -> list[tuple[T, T | None]]:
    """``(item, next item of its chunk or None)`` for each item: what a worker that receives chunks of
    ``chunk`` consecutive tasks can read ahead (``chunk`` <= 0: one chunk, everything in order)."""
    out: list[tuple[T, T | None]] = []
    for i, item in enumerate(items):
        last_of_chunk = i + 1 >= len(items) or (chunk > 0 and (i + 1) % chunk == 0)
        out.append((item, None if last_of_chunk else items[i + 1]))
    return out


def iter_decoded(reader: ReadAhead, paths: Sequence[str | Path]) -> Iterator[tuple[Path, DecodedClip | Exception]]:
    """``(path, decoded clip or the error that stopped its decode)`` in order, always one clip ahead."""
    for path, nxt in with_successors(list(paths), 0):
        try:
            clip: DecodedClip | Exception = reader.get(path)
        except Exception as err:  # the caller records it; the batch goes on
            clip = err
        if nxt is not None:
            reader.prefetch(nxt)
        yield Path(path), clip
