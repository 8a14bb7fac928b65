"""A read-only passthrough FUSE filesystem that delays every read: slow storage on demand.

    python -m benchmarks.slowfs SOURCE MOUNTPOINT [--delay-ms N] [--meta-delay-ms N]
                                [--threads N] [--max-background N]

serves the tree under SOURCE at MOUNTPOINT until it is unmounted or gets SIGTERM or SIGINT
(then it unmounts). Every read waits N ms (default 2), then reads SOURCE's file. With
`--meta-delay-ms N`, every lookup, getattr, open, opendir and readdir first waits N ms (default
0): the round trip to a networked filesystem's metadata server. The waits are trio sleeps and a read
that would block runs in a worker thread, so each request in flight waits its own N ms: the
passthrough never serialises requests, and whatever does is the client's doing (the kernel
sends the lookups of one directory one at a time).

The kernel reads a FUSE file through its page cache as readahead, and caps such "background"
requests at 12 per mount (fusectl's max_background); slowfs raises the cap (`--max-background`,
64), or the kernel, not the passthrough, would serialise more than 12 readers.

With no delays it is the floor of per-request cost under any pyfuse3 filesystem: the lean
passthrough of `tests/tools/passthrough.py`. The kernel keeps what it reads (keep_cache): only
reads of what its page cache lacks reach slowfs and pay the delay, so cold runs must drop the
caches first.

Its counters (reads, bytes, seconds spent answering them, reads that needed a worker thread, the
most reads in flight at once, metadata requests, its CPU seconds) are the JSON of the root's
extended attribute `user.slowfs.stats`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pyfuse3
import trio

from tests.tools.passthrough import Passthrough
from vgfs.mount import mounted_fs

T = TypeVar("T")
FUSECTL = Path("/sys/fs/fuse/connections")
STATS_XATTR = "user.slowfs.stats"
FSTYPE = "fuse.slowfs"


def _after_meta_delay(request: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """`request`, counted, and answered once the metadata delay has passed."""
    @functools.wraps(request)
    async def delayed(self: SlowFS, *args: object) -> T:
        self.stats["meta"] += 1
        if self.meta_delay:
            await trio.sleep(self.meta_delay)
        return await request(self, *args)
    return delayed


class SlowFS(Passthrough):
    """The passthrough, its reads `delay` seconds late and its metadata requests `meta_delay`
    seconds late, counting what reaches it; `max_background` readahead requests in flight."""

    name = "slowfs"

    def __init__(self, source: str, delay: float, threads: int, meta_delay: float,
                 max_background: int) -> None:
        super().__init__(source, threads)
        self.delay, self.meta_delay, self.max_background = delay, meta_delay, max_background
        self.stats = {"pid": os.getpid(), "reads": 0, "bytes": 0, "seconds": 0.0,
                      "in_flight": 0, "peak_in_flight": 0, "meta": 0}

    lookup = _after_meta_delay(Passthrough.lookup)
    getattr = _after_meta_delay(Passthrough.getattr)
    open = _after_meta_delay(Passthrough.open)
    opendir = _after_meta_delay(Passthrough.opendir)
    readdir = _after_meta_delay(Passthrough.readdir)

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        stats = self.stats
        stats["in_flight"] += 1
        stats["peak_in_flight"] = max(stats["peak_in_flight"], stats["in_flight"])
        start = time.perf_counter()
        try:
            if self.delay:
                await trio.sleep(self.delay)
            data = await super().read(fh, off, size)
        finally:
            stats["in_flight"] -= 1
        stats["seconds"] += time.perf_counter() - start
        stats["reads"] += 1
        stats["bytes"] += len(data)
        return data

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if inode == pyfuse3.ROOT_INODE and name == STATS_XATTR.encode():
            return json.dumps({**self.stats, "threaded": self.threaded,
                               "cpu_s": time.process_time()}).encode()
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def answering(self, mountpoint: str) -> None:
        if self.max_background:
            await trio.to_thread.run_sync(set_background_limit, mountpoint, self.max_background)


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


@contextmanager
def mounted(source: Path, mountpoint: Path, delay_ms: float = 2.0,
            meta_delay_ms: float = 0.0) -> Iterator[Path]:
    """Serve `source` at `mountpoint` from a slowfs process; stop it (which unmounts) in every
    case. Only a mount made here is ever unmounted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if mounted_fs(mountpoint) is not None:
        raise RuntimeError(f"{mountpoint}: something is already mounted there")
    cmd = [sys.executable, "-m", "benchmarks.slowfs", str(source), str(mountpoint),
           "--delay-ms", str(delay_ms), "--meta-delay-ms", str(meta_delay_ms)]
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
    p.add_argument("--meta-delay-ms", type=float, default=0.0,
                   help="wait before each lookup, getattr, open, opendir and readdir (0)")
    p.add_argument("--threads", type=int, default=64,
                   help="worker threads for reads the page cache cannot serve (64)")
    p.add_argument("--max-background", type=int, default=64,
                   help="the kernel's cap on readahead requests in flight (64; 0: its own 12)")
    args = p.parse_args(argv)
    SlowFS(os.path.abspath(args.source), args.delay_ms / 1000, args.threads,
           args.meta_delay_ms / 1000, args.max_background).serve(args.mountpoint)


if __name__ == "__main__":
    main()
