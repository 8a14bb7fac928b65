"""JPEG bytes from the SquashFS image without stalling the caller: serve now, or say it would
block.

`jpeg_now` is called on the adapter's event loop: bytes that one `preadv(RWF_NOWAIT)` finds in
the page cache, and LRU hits, are served inline. What would wait for storage (a page-cache miss,
a JPEG compressed in a site's image) is answered with None, and the caller runs `jpeg` in a
worker thread: one slow read never holds up the others.

Damaged bytes never reach a reader: every read from storage takes the whole JPEG and checks
its CRC-32 (3 µs for 140 KB with ISA-L), keeping it in the LRU for the kernel's next chunk
reads when there will be any, so bytes that change after a first good read are caught too
(DESIGN §6).
"""

from __future__ import annotations

import errno
import os

from isal.isal_zlib import crc32

from vgfs.cache import LRUCache
from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.layout import JpegIndex
from vgfs.metrics import BACKEND_COUNTERS

Buffer = bytes | bytearray | memoryview


class Backend:
    """The JPEG read path. `jpeg_now` belongs to one thread (it reuses one buffer, valid until
    its next call); `jpeg` may run in many threads at once. A JPEG is named by a cache key
    (its inode), its index entry and what to call it in errors ("image 7")."""

    def __init__(self, dataset: Dataset, cache: LRUCache) -> None:
        self.ds, self.cache = dataset, cache
        self.counters = dict.fromkeys(BACKEND_COUNTERS, 0)
        self._fd = dataset.image_fd
        self._nowait = True  # cleared if the image's filesystem refuses RWF_NOWAIT
        self._buf = bytearray(1 << 17)

    def jpeg_now(self, key: int, index: JpegIndex, what: str, off: int,
                 size: int) -> Buffer | None:
        """Bytes [off, off+size) of a JPEG, or None if serving them would wait for storage."""
        data = self.cache.get(key)
        if data is not None:
            return memoryview(data)[off:off + size]
        if off >= index.size:  # at the end: no storage to read
            return memoryview(b"")
        if index.path is not None:  # compressed or fragmented in a site's image
            return None
        whole = self._pread_nowait(index.offset, index.size, 0, index.size)
        if whole is None:
            return None
        self._check(whole, index, what)
        if off + size < index.size:  # the kernel will ask for the next chunk
            self.cache.put(key, bytes(whole))
        return whole[off:off + size]

    def jpeg(self, key: int, index: JpegIndex, what: str, off: int, size: int) -> Buffer:
        """The same bytes as `jpeg_now`, waiting for storage if need be: the JPEG is fetched
        whole and checked, and kept in the LRU if the kernel will ask for a next chunk. A JPEG
        read in one request is not kept: the kernel's page cache has it from then on, and in
        the LRU it would only push out the annotation frames that neighbours share."""
        data = self.cache.get(key)
        if data is None:
            data = self.ds.image_bytes(index, what)
            self._check(data, index, what)
            if off + size < index.size:
                self.cache.put(key, data)
            self.counters["jpeg_reads_threaded"] += 1
            self.counters["jpeg_bytes"] += len(data)
        return memoryview(data)[off:off + size]

    def _check(self, data: Buffer, index: JpegIndex, what: str) -> None:
        """Damaged bytes become EIO: compare with the CRC-32 recorded at build time."""
        if crc32(data) != index.crc32:
            raise VGFSError(f"{what}: JPEG bytes in {self.ds.images_path.name} do not match"
                            " their checksum")

    def _pread_nowait(self, start: int, length: int, off: int, size: int) -> memoryview | None:
        """Bytes [off, off+size) of the run at `start`, if one preadv can serve them from the
        page cache without blocking."""
        n = max(0, min(size, length - off))
        if n == 0:
            return memoryview(b"")
        if not self._nowait:
            return None
        if len(self._buf) < n:
            self._buf = bytearray(n)
        # One reused buffer: pyfuse3 copies the reply out before any other request runs.
        buf = memoryview(self._buf)[:n]
        try:
            got = os.preadv(self._fd, [buf], start + off, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # A filesystem that cannot tell is a network's or a FUSE one: always the thread,
            # and no readahead, which there costs a round trip for a random neighbour's bytes
            # (1.8x each JPEG's, in 2.1 reads where 1.5 do).
            self._nowait = False
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
            return None
        if got != n:
            return None
        self.counters["jpeg_reads_nowait"] += 1
        self.counters["jpeg_bytes"] += n
        return buf
