"""pyfuse3 operations over tree + views + cache: the only module that speaks FUSE.

The file handle is the inode number: the mount is read-only and stateless, so `open` does no I/O
and `read` knows what to serve from the handle alone. LMDB reads and cache hits are served on the
trio loop (about 1 µs); JPEG bytes come from one `preadv(RWF_NOWAIT)`, and only a read that would
block goes to a worker thread (behind a CapacityLimiter), so one slow backend read never holds up
the others.
"""

from __future__ import annotations

import calendar
import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pyfuse3
import trio

from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.layout import JpegIndex
from vgfs.metrics import Stats
from vgfs.tree import NameTooLong, Node, Tree

log = logging.getLogger("vgfs")

TIMEOUT = 24 * 3600.0  # the data never changes while mounted: let the kernel keep everything
BLKSIZE = 1 << 20  # large st_blksize: cp and friends then read in big chunks
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


def _op(name: str) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Time an operation, and turn any unexpected failure into EIO plus a log line and a count,
    so bad backing data never takes the mount down."""
    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def timed(self: Operations, *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(self, *args)
            except pyfuse3.FUSEError:
                raise
            except Exception as e:  # noqa: BLE001 - the mount must stay up whatever happens
                self.stats.errors[name] += 1
                log.error("%s%r failed: %s: %s", name, args[:2], type(e).__name__, e)
                raise pyfuse3.FUSEError(errno.EIO) from None
            finally:
                self.stats.record(name, time.perf_counter() - start)
        return timed
    return wrap


async def _erofs(self: Any, *_: Any) -> Any:
    raise pyfuse3.FUSEError(errno.EROFS)


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, tree: Tree, contents: Contents, cache: LRUCache, uid: int, gid: int,
                 umask: int = 0, threads: int = 16) -> None:
        super().__init__()
        self.tree, self.contents, self.cache = tree, contents, cache
        self.uid, self.gid = uid, gid
        self.file_mode = stat.S_IFREG | (0o444 & ~umask)
        self.dir_mode = stat.S_IFDIR | (0o555 & ~umask)
        self.stats = Stats()
        self.limiter = trio.CapacityLimiter(threads)
        self.fd = tree.ds.image_fd
        self.nowait = True  # cleared if the backing filesystem refuses RWF_NOWAIT
        self.verified: set[int] = set()  # JPEG inodes whose bytes matched their sha256
        mtime = tree.ds.manifest.get("built", "")
        try:
            built = time.strptime(mtime, "%Y-%m-%dT%H:%M:%SZ")
            self.mtime_ns = calendar.timegm(built) * 10**9
        except ValueError:
            self.mtime_ns = 0
        self._buf = bytearray(1 << 17)
        self._stats_blob = b""
        self._dir_attr = self._template(self.dir_mode, 2)
        self._file_attr = self._template(self.file_mode, 1)
        self._link_attr = self._template(stat.S_IFLNK | 0o777, 1)

    # --- attributes ----------------------------------------------------------------------

    def _template(self, mode: int, nlink: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.generation = 0
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        attr.st_mode, attr.st_nlink = mode, nlink
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_blksize = BLKSIZE
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.mtime_ns
        return attr

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        """The node's attributes, filled into one of two reused objects: pyfuse3 copies them
        into its reply before any other request runs, and building a fresh object per entry
        was the bulk of a directory listing's cost."""
        if node.is_dir:
            attr = self._dir_attr
            attr.st_ino = node.ino
            attr.st_size = node.size  # a view's name directory: its number of images
            return attr
        attr = self._link_attr if node.is_link else self._file_attr
        attr.st_ino = node.ino
        attr.st_size = size = self.contents.size(node)
        attr.st_blocks = (size + 511) // 512
        return attr

    def _node(self, ino: int) -> Node:
        node = self.tree.node(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    @_op("lookup")
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        try:
            node = self.tree.lookup(parent_inode, name)
        except NameTooLong:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG) from None
        if node is None:
            # st_ino 0 with a timeout: the kernel caches the miss, the next one costs nothing.
            miss = pyfuse3.EntryAttributes()
            miss.st_ino = 0
            miss.entry_timeout = TIMEOUT
            return miss
        return self._attr(node)

    @_op("getattr")
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self._node(inode))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        """Inodes are computed, not tracked: nothing to forget."""

    # --- directories ---------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        # The kernel opens only directories it looked up: no check, no I/O, no timing.
        return inode

    @_op("readdir")
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        for name, node, next_id in self.tree.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, name, self._attr(node), next_id):
                return

    async def releasedir(self, fh: int) -> None:
        return None

    # --- files ---------------------------------------------------------------------------

    @_op("open")
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if node.what == "stats":  # made afresh on each read: read to EOF whatever st_size says
            return pyfuse3.FileInfo(fh=inode, direct_io=True)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @_op("read")
    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray | memoryview:
        # pyfuse3 takes any buffer: slices of LMDB's map and of cached bytes are not copied.
        node = self._node(fh)
        if node.what == "stats":
            if off == 0:  # one snapshot per pass, so that a reader in chunks sees one
                self._stats_blob = orjson.dumps(self.stats.snapshot(self.cache))
            return self._stats_blob[off:off + size]
        if node.what != "jpeg":
            self.stats.backend["lmdb_reads"] += 1
            return self.contents.read(node, off, size)
        data = self.cache.get(node.ino)
        if data is None:
            extent = self.contents.jpeg_extent(node)
            chunk = self._read_cached(node, extent, off, size) if extent else None
            if chunk is not None:
                return chunk
            # Not in the page cache (or compressed): fetch the whole file once in a worker
            # thread; the LRU then serves the kernel's next chunk reads inline.
            self.stats.backend["jpeg_reads_threaded"] += 1
            data = await trio.to_thread.run_sync(self.contents.load_jpeg, node,
                                                 limiter=self.limiter)
            self.verified.add(node.ino)
            self.stats.backend["jpeg_bytes"] += len(data)
        return memoryview(data)[off:off + size]

    def _read_cached(self, node: Node, extent: JpegIndex, off: int,
                     size: int) -> memoryview | None:
        """The chunk, if the page cache holds it. Damaged bytes never reach a reader: a JPEG's
        first read takes the whole file and checks its CRC-32 (3 µs for 140 KB), keeping it in
        the LRU for the kernel's next chunk reads; later reads take just the chunk."""
        if node.ino in self.verified:
            return self._read_nowait(extent.offset, extent.size, off, size)
        whole = self._read_nowait(extent.offset, extent.size, 0, extent.size)
        if whole is None:
            return None
        self.contents.check_jpeg(node, whole, extent.crc32)
        self.verified.add(node.ino)
        if off + size < extent.size:
            self.cache.put(node.ino, bytes(whole))
        return whole[off:off + size]

    def _read_nowait(self, start: int, length: int, off: int, size: int) -> memoryview | None:
        """Bytes [off, off+size) of the run at `start`, if one preadv can serve them from the
        page cache without blocking."""
        n = max(0, min(size, length - off))
        if n == 0:
            return memoryview(b"")
        if not self.nowait:
            return None
        if len(self._buf) < n:
            self._buf = bytearray(n)
        # One reused buffer: pyfuse3 copies the reply out before any other request runs.
        buf = memoryview(self._buf)[:n]
        try:
            got = os.preadv(self.fd, [buf], start + off, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self.nowait = False  # this filesystem cannot tell: always use the thread
            return None
        if got != n:
            return None
        self.stats.backend["jpeg_reads_nowait"] += 1
        self.stats.backend["jpeg_bytes"] += n
        return buf

    @_op("readlink")
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if not node.is_link:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    async def flush(self, fh: int) -> None:
        # ENOSYS once, and the kernel stops sending FLUSH for every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        return None

    # --- the rest ------------------------------------------------------------------------

    @_op("statfs")
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        ds = self.tree.ds
        total = ds.manifest.get("images", {}).get("size", 0) or 0
        total += sum(s.get("size", 0) for s in ds.manifest.get("sources", {}).values())
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = BLKSIZE
        st.f_blocks = (total + BLKSIZE - 1) // BLKSIZE
        st.f_bfree = st.f_bavail = 0
        st.f_files = ds.manifest.get("counts", {}).get("images", 0) * 10
        st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st

    # getxattr and listxattr are left to pyfuse3's ENOSYS: the kernel then stops asking.

    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        return not mode & os.W_OK

    # Every mutation: the mount is read-only.
    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _erofs  # type: ignore
    create = write = setxattr = removexattr = fsync = fsyncdir = _erofs  # type: ignore
