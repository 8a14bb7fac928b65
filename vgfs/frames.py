"""Stored files as zstd frames: each FRAME bytes of a file compressed alone, with zstd's checksum
of its content, so that any range decompresses by itself and damage is caught on every read.

The build writes them (build/writer.py) into the frames file (layout.FRAMES_FILE), and indexes
each in LMDB; the dataset and the build's own second pass read them through `Frames`, which
keeps decompressed frames in an LRU: neighbouring images share frames.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import zstandard

from vgfs.cache import LRUCache
from vgfs.errors import VGFSError
from vgfs.layout import FRAME, FRAME_AT, ZSTD_LEVEL, frame_key

Buffer = bytes | memoryview


def compressor() -> zstandard.ZstdCompressor:
    """What every frame is written with: its content size and checksum in its header."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True,
                                    write_content_size=True)


class WouldBlock(Exception):
    """A read in `Frames.nowait` mode needs storage, or more decompression than the event loop
    should do: serve it again from a worker thread."""


NOWAIT_FRAMES = 2  # a per-image entry spans at most 2; a whole file's megabyte, 16


class Frames:
    """Ranges of stored files. `locate(key)` returns where a frame (layout.frame_key) sits in
    the frames file open as `fd`, or None; `name(file_no)` names a file in errors. Safe to
    share between threads. Inside `nowait()`, a frame that is in neither the cache nor the
    page cache raises WouldBlock instead of waiting for storage."""

    def __init__(self, locate: Callable[[bytes], Buffer | None], fd: int, cache: LRUCache,
                 name: Callable[[int], str]) -> None:
        self._locate, self._fd, self._cache, self._name = locate, fd, cache, name
        self._local = threading.local()
        self._can_nowait = True  # cleared if the frames file's filesystem refuses RWF_NOWAIT

    def range(self, file_no: int, off: int, size: int) -> Buffer:
        """`size` bytes of file `file_no` from `off`: zero-copy inside one frame."""
        if size <= 0:
            return b""
        first, last = off // FRAME, (off + size - 1) // FRAME
        if last - first >= NOWAIT_FRAMES and getattr(self._local, "nowait", False):
            raise WouldBlock
        start = off - first * FRAME
        if first == last:
            return memoryview(self._frame(file_no, first))[start:start + size]
        data = b"".join(self._frame(file_no, f) for f in range(first, last + 1))
        return memoryview(data)[start:start + size]

    def _frame(self, file_no: int, frame: int) -> bytes:
        key = (file_no, frame)
        data = self._cache.get(key)
        if data is None:
            at = self._locate(frame_key(file_no, frame))
            if at is None:
                raise VGFSError(f"{self._name(file_no)}: frame {frame} is missing from the"
                                " annotation database")
            offset, length = FRAME_AT.unpack(at)
            raw = self._pread(offset, length)
            if len(raw) != length:
                raise VGFSError(f"{self._name(file_no)}: frame {frame} is cut short: the"
                                f" frames file ends at byte {offset + len(raw)}")
            try:
                data = self._decompressor().decompress(raw)
            except zstandard.ZstdError as e:
                raise VGFSError(f"{self._name(file_no)}: frame {frame} is damaged in the"
                                f" frames file ({e})") from None
            self._cache.put(key, data)
        return data

    @contextmanager
    def nowait(self) -> Iterator[None]:
        """Within: no read waits for storage, nor spans more than NOWAIT_FRAMES frames (this
        thread only). The event loop serves a per-image file inline; a read of a whole file's
        megabyte goes to the worker threads, which decompress on every core at once (zstd lets
        go of the GIL)."""
        self._local.nowait = True
        try:
            yield
        finally:
            self._local.nowait = False

    def _pread(self, offset: int, length: int) -> bytes:
        if not getattr(self._local, "nowait", False):
            return os.pread(self._fd, length, offset)
        if not self._can_nowait:
            raise WouldBlock
        buf = bytearray(length)
        try:
            got = os.preadv(self._fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            raise WouldBlock from None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._can_nowait = False  # this filesystem cannot tell: always a thread
            raise WouldBlock from None
        if got != length:  # partly cached, or cut short: the blocking read tells which
            raise WouldBlock
        return bytes(buf)

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        """One per thread: a zstd context is not safe to share."""
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx
