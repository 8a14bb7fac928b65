"""A read-only passthrough pyfuse3 filesystem: the base of the filesystems that serve a real
folder with one twist, for the fault tests (`tests/tools/eiofs.py`: reads that fail) and the
benchmarks (`benchmarks/slowfs.py`: requests that wait).

It is as lean as a pyfuse3 filesystem gets, so that the twist is all it adds: day-long timeouts
and keep_cache (the source does not change while it is served), an open without system calls,
reads served inline when the source's page cache holds them and in a worker thread otherwise
(so reads are never serialised), and pyfuse3's ENOSYS for FLUSH (the kernel then stops sending
it) and RELEASE. `serve` prints "ready" once the mount answers, and unmounts when it gets SIGTERM
or SIGINT.
"""

from __future__ import annotations

import errno
import os
import signal

import pyfuse3
import trio

TIMEOUT = 24 * 3600.0  # the source does not change while it is served


class Passthrough(pyfuse3.Operations):
    """The tree under `source`, read-only; reads the page cache cannot serve run in up to
    `threads` worker threads."""

    name = "passthrough"  # its fsname and subtype: it mounts as fuse.NAME
    options: frozenset[str] = frozenset()  # mount options beside ro and default_permissions

    def __init__(self, source: str, threads: int = 64) -> None:
        super().__init__()
        self.limiter = trio.CapacityLimiter(threads)
        self.paths = {pyfuse3.ROOT_INODE: source}
        self.inodes = {source: pyfuse3.ROOT_INODE}
        self.listings: dict[int, tuple[str, list[str]]] = {}  # open directory: path, names
        self.sizes: dict[int, int] = {}  # inode -> file size, to tell EOF from a short read
        self.nowait = True  # cleared if the source's filesystem refuses RWF_NOWAIT
        self.buf = bytearray(1 << 20)
        self.threaded = 0  # reads that needed a worker thread

    def _attr(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        ino = self.inodes.setdefault(path, len(self.paths) + pyfuse3.ROOT_INODE)
        self.paths[ino], self.sizes[ino] = path, st.st_size
        attr = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blksize",
                     "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
            setattr(attr, name, getattr(st, name))
        attr.st_ino = ino
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        return attr

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(os.path.join(self.paths[parent_inode], os.fsdecode(name)))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(self.paths[inode])

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(os.readlink(self.paths[inode]))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        # The listing is taken once per open, so that offsets stay valid across readdir calls.
        fh = max(self.listings, default=0) + 1
        folder = self.paths[inode]
        self.listings[fh] = folder, sorted(os.listdir(folder))
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        folder, names = self.listings[fh]
        for i, name in enumerate(names[start_id:], start_id + 1):
            attr = self._attr(os.path.join(folder, name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, i):
                return

    async def releasedir(self, fh: int) -> None:
        del self.listings[fh]

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        # No system call: an open served from the page cache costs only the FUSE round trip.
        # The mount is read-only, so the kernel refuses to open for writing before asking us.
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        # Only page-cache misses get here: an open and a close per read cost nothing beside
        # them, and keep open() free of system calls.
        fd = os.open(self.paths[fh], os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = self._read_nowait(fd, off, min(size, max(0, self.sizes[fh] - off)))
            if data is None:
                self.threaded += 1
                data = await trio.to_thread.run_sync(os.pread, fd, size, off,
                                                     limiter=self.limiter)
        finally:
            os.close(fd)
        return data

    def _read_nowait(self, fd: int, off: int, size: int) -> memoryview | None:
        """The bytes, if the page cache holds all of them: then a worker thread would cost more
        than the read. One reused buffer: pyfuse3 sends the reply before the next request runs."""
        if not self.nowait:
            return None
        if len(self.buf) < size:
            self.buf = bytearray(size)
        view = memoryview(self.buf)[:size]
        try:
            got = os.preadv(fd, [view], off, os.RWF_NOWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self.nowait = False
            return None
        return view if got == size else None

    def serve(self, mountpoint: str) -> None:
        """Mount and serve in the foreground until unmounted or signalled; the mount goes away
        with the process in every case."""
        pyfuse3.init(self, mountpoint, {f"fsname={self.name}", f"subtype={self.name}", "ro",
                                        "default_permissions", *self.options})
        try:
            trio.run(self._serve, os.path.abspath(mountpoint))
        finally:
            pyfuse3.close(unmount=True)

    async def _serve(self, mountpoint: str) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal)
            nursery.start_soon(self._when_answering, mountpoint)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    async def _when_answering(self, mountpoint: str) -> None:
        """Once the mount answers (a stat that only the running loop can serve), run
        `answering`, then print "ready": whoever waits for the mount can start from that line."""
        await trio.to_thread.run_sync(os.stat, mountpoint)
        await self.answering(mountpoint)
        print("ready", flush=True)

    async def answering(self, mountpoint: str) -> None:
        """What a subclass does to its mount before it is announced ready: nothing here."""


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return
