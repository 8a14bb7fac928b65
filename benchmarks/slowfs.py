"""A read-only passthrough FUSE filesystem that delays every read: slow storage on demand.

    python -m benchmarks.slowfs SOURCE MOUNTPOINT [--delay-ms N] [--threads N]
                                [--max-background N]

serves the tree under SOURCE at MOUNTPOINT until it is unmounted or gets SIGTERM or SIGINT
(then it unmounts). Every read waits N ms (default 2), then reads SOURCE's file. The wait is a
trio sleep and a read that would block runs in a worker thread, so each read in flight waits its
own N ms: the passthrough never serialises reads, and whatever does is the client's doing.

The kernel reads a FUSE file through its page cache as readahead, and caps such "background"
requests at 12 per mount (fusectl's max_background); slowfs raises the cap (`--max-background`,
64), or the kernel, not the passthrough, would serialise more than 12 readers.

With `--delay-ms 0` it is as lean as a pyfuse3 filesystem gets, the floor of per-request cost
under any pyfuse3 filesystem: day-long timeouts, keep_cache, an open without system calls, reads
served inline when the page cache holds them, and pyfuse3's ENOSYS for FLUSH (the kernel then
stops sending it) and RELEASE. The kernel keeps what it reads (keep_cache): only reads of what
its page cache lacks reach slowfs and pay the delay, so cold runs must drop the caches first.

Its counters (reads, bytes, seconds spent answering them, the most reads in flight at once, its
CPU seconds) are the JSON of the root's extended attribute `user.slowfs.stats`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyfuse3
import trio

from vgfs.mount import mounted_fs

TIMEOUT = 24 * 3600.0  # the source does not change during a benchmark
FUSECTL = Path("/sys/fs/fuse/connections")
STATS_XATTR = "user.slowfs.stats"
FSTYPE = "fuse.slowfs"


class SlowFS(pyfuse3.Operations):
    def __init__(self, source: str, delay: float, threads: int) -> None:
        super().__init__()
        self.delay = delay
        self.limiter = trio.CapacityLimiter(threads)
        self.paths = {pyfuse3.ROOT_INODE: source}
        self.inodes = {source: pyfuse3.ROOT_INODE}
        self.listings: dict[int, tuple[str, list[str]]] = {}  # open directory: path, names
        self.sizes: dict[int, int] = {}  # inode -> file size, to tell EOF from a short read
        self.nowait = True  # cleared if the source's filesystem refuses RWF_NOWAIT
        self.buf = bytearray(1 << 20)
        self.stats = {"pid": os.getpid(), "reads": 0, "bytes": 0, "seconds": 0.0,
                      "threaded": 0, "in_flight": 0, "peak_in_flight": 0}

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
        stats = self.stats
        stats["in_flight"] += 1
        stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        start = time.perf_counter()
        try:
            if self.delay:
                await trio.sleep(self.delay)
            # Only page-cache misses get here: an open and a close per read cost nothing
            # beside them, and keep open() free of system calls.
            fd = os.open(self.paths[fh], os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = self._read_nowait(fd, off, min(size, max(0, self.sizes[fh] - off)))
                if data is None:
                    stats["threaded"] += 1
                    data = await trio.to_thread.run_sync(os.pread, fd, size, off,
                                                         limiter=self.limiter)
            finally:
                os.close(fd)
        finally:
            stats["in_flight"] -= 1
        stats["seconds"] += time.perf_counter() - start
        stats["reads"] += 1
        stats["bytes"] += len(data)
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

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if inode == pyfuse3.ROOT_INODE and name == STATS_XATTR.encode():
            return json.dumps({**self.stats, "cpu_s": time.process_time()}).encode()
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)


async def _serve(mountpoint: str, max_background: int) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_unmount_on_signal)
        nursery.start_soon(_when_answering, mountpoint, max_background)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _when_answering(mountpoint: str, max_background: int) -> None:
    """Once the mount answers (a stat that only the running loop can serve), set the background
    limit, then print "ready": whoever waits for the mount can start from that line."""
    await trio.to_thread.run_sync(os.stat, mountpoint)
    if max_background:
        await trio.to_thread.run_sync(set_background_limit, mountpoint, max_background)
    print("ready", flush=True)


def set_background_limit(mountpoint: str, limit: int) -> None:
    """Let `limit` background requests (readahead) of this mount be in flight at once, through
    fusectl, mounted for the moment if it is not; the congestion threshold keeps the kernel's
    ratio to it (9/12). A warning, not a failure, where that is not allowed."""
    minor = os.minor(os.stat(mountpoint).st_dev)
    ours = mounted_fs(FUSECTL) is None
    try:
        if ours:
            subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)], check=True,
                           capture_output=True)
        (FUSECTL / str(minor) / "max_background").write_text(f"{limit}\n")
        (FUSECTL / str(minor) / "congestion_threshold").write_text(f"{limit * 3 // 4}\n")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"slowfs: kept the kernel's limit of background requests: {e}", file=sys.stderr)
    finally:
        if ours and mounted_fs(FUSECTL) == "fusectl":
            subprocess.run(["umount", str(FUSECTL)], check=False)


async def _unmount_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


def serve(source: str, mountpoint: str, delay_ms: float, threads: int,
          max_background: int) -> None:
    """Mount and serve in the foreground until unmounted or signalled."""
    fs = SlowFS(os.path.abspath(source), delay_ms / 1000, threads)
    pyfuse3.init(fs, mountpoint, {"fsname=slowfs", "subtype=slowfs", "ro",
                                  "default_permissions"})
    try:
        trio.run(_serve, os.path.abspath(mountpoint), max_background)
    finally:
        pyfuse3.close(unmount=True)


@contextmanager
def mounted(source: Path, mountpoint: Path, delay_ms: float = 2.0) -> Iterator[Path]:
    """Serve `source` at `mountpoint` from a slowfs process; stop it (which unmounts) in every
    case. Only a mount made here is ever unmounted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if mounted_fs(mountpoint) is not None:
        raise RuntimeError(f"{mountpoint}: something is already mounted there")
    cmd = [sys.executable, "-m", "benchmarks.slowfs", str(source), str(mountpoint),
           "--delay-ms", str(delay_ms)]
    with tempfile.TemporaryFile() as stderr, subprocess.Popen(
            cmd, cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=stderr) as proc:
        try:
            assert proc.stdout is not None
            answered, _, _ = select.select([proc.stdout], [], [], 30)
            if not answered or proc.stdout.readline() != b"ready\n":
                stderr.seek(0)
                raise RuntimeError(f"slowfs did not mount {mountpoint}:\n"
                                   f"{stderr.read().decode(errors='replace')[-2000:]}")
            yield mountpoint
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if mounted_fs(mountpoint) == FSTYPE:
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def read_stats(mountpoint: Path) -> dict[str, float]:
    """The counters of a running slowfs."""
    return json.loads(os.getxattr(mountpoint, STATS_XATTR))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.slowfs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="the folder to serve")
    p.add_argument("mountpoint")
    p.add_argument("--delay-ms", type=float, default=2.0, help="wait before each read (2)")
    p.add_argument("--threads", type=int, default=64,
                   help="worker threads for reads the page cache cannot serve (64)")
    p.add_argument("--max-background", type=int, default=64,
                   help="the kernel's cap on readahead requests in flight (64; 0: its own 12)")
    args = p.parse_args(argv)
    serve(args.source, args.mountpoint, args.delay_ms, args.threads, args.max_background)


if __name__ == "__main__":
    main()
