"""Bytes of a file without stalling the caller: serve now, or say that it would block.

The adapter calls `read_now` on its event loop. LMDB records and cache hits are served inline
(about 1 µs), and so are JPEG bytes that one `preadv(RWF_NOWAIT)` finds in the page cache.
What would wait for storage (a page-cache miss, a JPEG compressed in a site's image) is
answered with None, and the caller runs `read` in a worker thread: one slow read never holds
up the others. Python callers use the same two calls.

Damaged bytes never reach a reader: a JPEG's first read takes the whole file and checks its
CRC-32 (3 µs for 140 KB with ISA-L), keeping it in the LRU for the kernel's next chunk reads.
"""

from __future__ import annotations

import errno
import os

from isal.isal_zlib import crc32

from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.layout import JpegIndex
from vgfs.metrics import BACKEND_COUNTERS
from vgfs.tree import Node, NodeType

Buffer = bytes | bytearray | memoryview


class Backend:
    """The read path below the adapter. `read_now` belongs to one thread (it reuses one
    buffer, valid until its next call); `read` may run in many threads at once."""

    def __init__(self, dataset: Dataset, contents: Contents, cache: LRUCache) -> None:
        self.ds, self.contents, self.cache = dataset, contents, cache
        self.counters = dict.fromkeys(BACKEND_COUNTERS, 0)
        self._fd = dataset.image_fd
        self._nowait = True  # cleared if the image's filesystem refuses RWF_NOWAIT
        self._verified: set[int] = set()  # JPEG inodes whose bytes matched their CRC-32
        self._buf = bytearray(1 << 17)

    def read_now(self, node: Node, off: int, size: int) -> Buffer | None:
        """Bytes [off, off+size) of a file, or None if serving them would wait for storage."""
        if node.type is not NodeType.JPEG:
            self.counters["lmdb_reads"] += 1
            return self.contents.read(node, off, size)
        data = self.cache.get(node.ino)
        if data is not None:
            return memoryview(data)[off:off + size]
        extent = self._extent(node)
        if extent.path is not None:  # compressed or fragmented in a site's image
            return None
        if node.ino in self._verified:
            return self._pread_nowait(extent.offset, extent.size, off, size)
        whole = self._pread_nowait(extent.offset, extent.size, 0, extent.size)
        if whole is None:
            return None
        self._check(node, whole, extent.crc32)
        if off + size < extent.size:  # the kernel will ask for the next chunk
            self.cache.put(node.ino, bytes(whole))
        return whole[off:off + size]

    def read(self, node: Node, off: int, size: int) -> Buffer:
        """The same bytes as `read_now`, waiting for storage if need be. A JPEG is fetched
        whole, checked and kept in the LRU, which then serves the kernel's next chunk reads."""
        if node.type is not NodeType.JPEG:
            self.counters["lmdb_reads"] += 1
            return self.contents.read(node, off, size)
        data = self.cache.get(node.ino)
        if data is None:
            extent = self._extent(node)
            data = self.ds.jpeg(node.image_id)
            if data is None:
                raise VGFSError(f"image {node.image_id}: JPEG vanished from the index")
            self._check(node, data, extent.crc32)
            self.cache.put(node.ino, data)
            self.counters["jpeg_reads_threaded"] += 1
            self.counters["jpeg_bytes"] += len(data)
        return memoryview(data)[off:off + size]

    def _extent(self, node: Node) -> JpegIndex:
        extent = self.ds.jpeg_index(node.image_id)
        if extent is None:
            raise VGFSError(f"image {node.image_id}: JPEG vanished from the index")
        return extent

    def _check(self, node: Node, data: Buffer, expected: int) -> None:
        """Damaged bytes become EIO: compare with the CRC-32 recorded at build time."""
        if crc32(data) != expected:
            raise VGFSError(f"image {node.image_id}: JPEG bytes in {self.ds.images_path.name}"
                            " do not match their checksum")
        self._verified.add(node.ino)

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
            self._nowait = False  # this filesystem cannot tell: always use the thread
            return None
        if got != n:
            return None
        self.counters["jpeg_reads_nowait"] += 1
        self.counters["jpeg_bytes"] += n
        return buf
