"""Stored files as zstd frames: each FRAME bytes of a file compressed alone, with zstd's checksum
of its content, so that any range decompresses by itself and damage is caught on every read.

The build writes them (build/writer.py); the dataset and the build's own second pass read them
through `Frames`, which keeps decompressed frames in an LRU: neighbouring images share frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import zstandard

from vgfs.cache import LRUCache
from vgfs.errors import VGFSError
from vgfs.layout import FRAME, ZSTD_LEVEL, frame_key

Buffer = bytes | memoryview


def compressor() -> zstandard.ZstdCompressor:
    """What every frame is written with: its content size and checksum in its header."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                    write_content_size=True)


class Frames:
    """Ranges of stored files. `get(key)` returns a stored frame (layout.frame_key) or None;
    `name(file_no)` names a file in errors. Safe to share between threads."""

    def __init__(self, get: Callable[[bytes], Buffer | None], cache: LRUCache,
                 name: Callable[[int], str]) -> None:
        self._get, self._cache, self._name = get, cache, name
        self._local = threading.local()

    def range(self, file_no: int, off: int, size: int) -> Buffer:
        """`size` bytes of file `file_no` from `off`: zero-copy inside one frame."""
        if size <= 0:
            return b""
        first, last = off // FRAME, (off + size - 1) // FRAME
        start = off - first * FRAME
        if first == last:
            return memoryview(self._frame(file_no, first))[start:start + size]
        data = b"".join(self._frame(file_no, f) for f in range(first, last + 1))
        return memoryview(data)[start:start + size]

    def _frame(self, file_no: int, frame: int) -> bytes:
        key = (file_no, frame)
        data = self._cache.get(key)
        if data is None:
            raw = self._get(frame_key(file_no, frame))
            if raw is None:
                raise VGFSError(f"{self._name(file_no)}: frame {frame} is missing from the"
                                " annotation database")
            try:
                data = self._decompressor().decompress(raw)
            except zstandard.ZstdError as e:
                raise VGFSError(f"{self._name(file_no)}: frame {frame} is damaged in the"
                                f" annotation database ({e})") from None
            self._cache.put(key, data)
        return data

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        """One per thread: a zstd context is not safe to share."""
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx
