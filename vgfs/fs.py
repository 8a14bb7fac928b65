"""pyfuse3 operations over tree + contents: the only module that speaks FUSE.

The file handle is the inode number: the mount is read-only and stateless, so `open` does no I/O
and `read` knows what to serve from the handle alone. Contents serves what it can on the trio
loop, and only a read that would block goes to a worker thread (behind a CapacityLimiter), so
one slow backend read never holds up the others. The tree answers from the indexes held in
memory; what reads LMDB's map instead (the query views, whose databases are too big to hold,
and everything in the mount's first second, before it holds them) goes to the threads too.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import pyfuse3
import trio

from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.metrics import Stats
from vgfs.schema import NAME_MAX
from vgfs.tree import DIRS, LINKS, STATS, NameTooLong, Node, NodeType, Tree

log = logging.getLogger("vgfs")

TIMEOUT = 24 * 3600.0  # the data never changes while mounted: let the kernel keep everything
BLKSIZE = 1 << 20  # large st_blksize: cp and friends then read in big chunks
# A directory's st_blksize sizes the buffer of glibc's readdir (up to 1 MiB), hence the size
# of the kernel's readdir requests. An image's directory holds at most 9 files, yet with
# BLKSIZE each listing of it asked for a 1 MiB reply, which the kernel and pyfuse3 each
# allocate (pyfuse3 zeroes it): 4 KiB, as ext4 says, and glibc asks for 32 KiB. The large
# directories (images/, the JPEG folders) keep BLKSIZE: a request fills with 6,000 entries.
IMAGE_DIR_BLKSIZE = 4096
THREAD_BATCH = 256  # entries a worker thread reads from LMDB's map at a time, for a listing
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
        self.stats = Stats(contents.backend.counters)
        self.limiter = trio.CapacityLimiter(threads)
        self.mtime_ns = tree.ds.built_ns
        self._stats_blob = b""
        # Each node type's attributes, built once (and whether it is a directory): an entry
        # sets only its inode and size.
        dir_attr = self._template(self.dir_mode, 2)
        image_dir_attr = self._template(self.dir_mode, 2, IMAGE_DIR_BLKSIZE)
        file_attr = self._template(self.file_mode, 1)
        link_attr = self._template(stat.S_IFLNK | 0o777, 1)
        self._attrs = {t: (image_dir_attr, True) if t is NodeType.IMAGE_DIR
                       else (dir_attr, True) if t in DIRS
                       else (link_attr if t in LINKS else file_attr, False) for t in NodeType}
        # A JPEG is one inode under two or three names: images/<id>/image.jpg, VG_100K/ and,
        # for the second part, VG_100K_2/. Its link count says so, and `du` counts it once.
        self._attrs[NodeType.JPEG] = (self._template(self.file_mode, 2), False)

    # --- attributes ----------------------------------------------------------------------

    def _template(self, mode: int, nlink: int, blksize: int = BLKSIZE) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.generation = 0
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        attr.st_mode, attr.st_nlink = mode, nlink
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_blksize = blksize
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.mtime_ns
        return attr

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        """The node's attributes, filled into its type's reused object: pyfuse3 copies them
        into its reply before any other request runs, and building a fresh object per entry
        was the bulk of a directory listing's cost."""
        attr, is_dir = self._attrs[node.type]
        if is_dir:
            attr.st_ino = node.ino
            attr.st_size = node.count  # a view's name directory: its number of images
            return attr
        size = self.contents.size(node)
        if size is None:  # damaged (its reads fail): not for the kernel to keep, it may mend
            attr = self._template(self.file_mode, 1)
            attr.entry_timeout = attr.attr_timeout = 0
            size = node.size
        if node.type is NodeType.JPEG:
            attr.st_nlink = self.tree.link_count(node)
        attr.st_ino = node.ino
        attr.st_size = size
        attr.st_blocks = (size + 511) // 512
        return attr

    async def _in_tree(self, ino: int, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, in a worker thread if it may read LMDB's map (Tree.reads_map), whose
        pages may have to come from storage: that must not stall the event loop."""
        if self.tree.reads_map(ino):
            return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter,
                                                 abandon_on_cancel=True)
        return fn(*args)

    async def _node(self, ino: int) -> Node:
        node = await self._in_tree(ino, self.tree.node, ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    @_op("lookup")
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        try:
            node = await self._in_tree(parent_inode, self.tree.lookup, parent_inode, name)
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
        return self._attr(await self._node(inode))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        """Inodes are computed, not tracked: nothing to forget."""

    # --- directories ---------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        # The kernel opens only directories it looked up: no check, no I/O, no timing.
        return inode

    @_op("readdir")
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if not self.tree.reads_map(fh):
            self._reply(token, self.tree.readdir(fh, start_id))
            return
        # Entries from LMDB's map: read in a worker thread, a batch at a time (the attributes
        # are filled here, in reused objects that only the loop may touch).
        while True:
            batch = await self._in_tree(fh, self._entries, fh, start_id)
            if not self._reply(token, batch) or len(batch) < THREAD_BATCH:
                return
            start_id = batch[-1][2]

    def _entries(self, fh: int, start_id: int) -> list[tuple[bytes, Node, int]]:
        return list(itertools.islice(self.tree.readdir(fh, start_id), THREAD_BATCH))

    def _reply(self, token: pyfuse3.ReaddirToken,
               entries: Iterable[tuple[bytes, Node, int]]) -> bool:
        """Add entries to the kernel's buffer until it is full; False if it filled."""
        reply, attr = pyfuse3.readdir_reply, self._attr
        return all(reply(token, name, attr(node), next_id) for name, node, next_id in entries)

    async def releasedir(self, fh: int) -> None:
        return None

    # --- files ---------------------------------------------------------------------------

    @_op("open")
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        # A warm read of a file is this request and its release, nothing else: no decoding of
        # the inode here (3 µs, a tenth of the floor's whole cost per file). The kernel opens
        # only what it looked up, and a directory with OPENDIR; `read` decodes the handle.
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        if inode == STATS:  # made afresh on each read: read to EOF, whatever st_size
            return pyfuse3.FileInfo(fh=inode, direct_io=True)
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @_op("read")
    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray | memoryview:
        # pyfuse3 takes any buffer: slices of LMDB's map and of cached bytes are not copied.
        node = await self._node(fh)
        if node.type is NodeType.STATS:
            if off == 0:  # one snapshot per pass, so that a reader in chunks sees one
                self._stats_blob = orjson.dumps(self.stats.snapshot(self.cache))
            return self._stats_blob[off:off + size]
        data = self.contents.read_now(node, off, size)
        if data is None:
            # Abandoned if cancelled (at unmount): a read stuck in storage must not hold it up.
            data = await trio.to_thread.run_sync(self.contents.read, node, off, size,
                                                 limiter=self.limiter, abandon_on_cancel=True)
        return data

    @_op("readlink")
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = await self._node(inode)
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
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = BLKSIZE
        st.f_blocks = (self.tree.ds.stored_bytes + BLKSIZE - 1) // BLKSIZE
        st.f_bfree = st.f_bavail = 0
        st.f_files = self.tree.ds.image_count * 10
        st.f_ffree = st.f_favail = 0
        st.f_namemax = NAME_MAX
        return st

    # getxattr and listxattr are left to pyfuse3's ENOSYS: the kernel then stops asking.

    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        return not mode & os.W_OK

    # Every mutation: the mount is read-only.
    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _erofs  # type: ignore
    create = write = setxattr = removexattr = fsync = fsyncdir = _erofs  # type: ignore
