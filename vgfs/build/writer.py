"""The build's one LMDB environment, written in small transactions and remapped as it grows.

Every phase writes through a `Writer`: a write transaction's dirty pages sit in memory until it
commits, and pages touched through the map count as the process's memory until the map is
closed, so without both the build's peak RSS would grow with the release.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb

from vgfs.cache import LRUCache
from vgfs.frames import Frames, compressor
from vgfs.layout import (
    DB_NAMES,
    DUPSORT,
    FILE_INFO,
    FRAME,
    FRAME_AT,
    FRAMES_FILE,
    MAX_DBS,
    frame_key,
)

COMMIT_EVERY = 2_000  # entries per LMDB write transaction: its dirty pages sit in memory
# Every this many entries the LMDB map is remapped: pages the writes touched through the map
# count as RSS until it is unmapped.
REMAP_EVERY = 4_000
LMDB_MAP_SIZE = 1 << 40  # address space only; the file grows as data is written


class Writer:
    """The environment and its named databases; `remap` replaces both, so callers name a
    database and never keep a handle."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.numbers: dict[str, int] = {}  # each stored file's number, in the order stored
        self.stored_bytes = 0  # the frames file's size so far
        self._frames_out = open(path.parent / FRAMES_FILE, "wb")  # noqa: SIM115 - closed by close()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="zstd")
        self._local = threading.local()
        self._open()

    def _open(self) -> None:
        self.env = lmdb.open(str(self.path), map_size=LMDB_MAP_SIZE, max_dbs=MAX_DBS,
                             sync=False, metasync=False, writemap=False, readahead=False)
        self.dbs = {n: self.env.open_db(n.encode(), dupsort=n in DUPSORT, dupfixed=n in DUPSORT)
                    for n in DB_NAMES}

    def remap(self) -> None:
        """Close and reopen the environment, dropping the pages touched through its map."""
        self.env.close()
        self._open()

    def batch(self, commit_every: int = COMMIT_EVERY, remap_every: int = REMAP_EVERY) -> Batch:
        """A write transaction that `Batch.done` commits and remaps as the work adds up."""
        return Batch(self, commit_every, remap_every)

    def scan(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        """A database's records in key order, remapping every REMAP_EVERY of them."""
        after = b""
        while True:
            with self.env.begin() as txn:
                cur = txn.cursor(db=self.dbs[name])
                if not (cur.set_range(after + b"\0") if after else cur.first()):
                    return
                batch = [item for item, _ in zip(cur, range(REMAP_EVERY), strict=False)]
            self.remap()
            yield from batch
            if len(batch) < REMAP_EVERY:
                return
            after = batch[-1][0]

    def gets(self, name: str, keys: Iterable[bytes]) -> Iterator[bytes | None]:
        """The values of `keys` in turn, remapping every REMAP_EVERY of them."""
        keys = iter(keys)
        while chunk := list(islice(keys, REMAP_EVERY)):
            with self.env.begin() as txn:
                values = [txn.get(k, db=self.dbs[name]) for k in chunk]
            self.remap()
            yield from values

    def stored_file(self, path: str) -> StoredFile:
        """A new stored file at `path`, numbered in the order files are stored."""
        self.numbers[path] = len(self.numbers)
        return StoredFile(self, path, self.numbers[path])

    def file_no(self, path: str) -> int:
        return self.numbers[path]

    def compress(self, data: bytes) -> Future[bytes]:
        return self._pool.submit(self._compress, data)

    def _compress(self, data: bytes) -> bytes:
        local = self._local
        if not hasattr(local, "cctx"):
            local.cctx = compressor()  # one per thread: a zstd context is not safe to share
        return local.cctx.compress(data)

    def append_frame(self, frame: bytes) -> int:
        """Append a compressed frame to the frames file; its offset there."""
        offset = self.stored_bytes
        self._frames_out.write(frame)
        self.stored_bytes += len(frame)
        return offset

    @contextmanager
    def reading(self, cache_bytes: int = 32 << 20) -> Iterator[Frames]:
        """A reader of the files stored so far, through a read transaction that is renewed
        (and the map remapped) every REMAP_EVERY frames, as `scan` does."""
        txn: list[lmdb.Transaction] = []
        reads = 0

        def get(key: bytes) -> bytes | None:
            nonlocal reads
            reads += 1
            if txn and reads % REMAP_EVERY == 0:
                txn.pop().abort()
                self.remap()
            if not txn:
                txn.append(self.env.begin())
            return txn[0].get(key, db=self.dbs["frames"])

        self._frames_out.flush()
        fd = os.open(self._frames_out.name, os.O_RDONLY)
        try:
            yield Frames(get, fd, LRUCache(cache_bytes), lambda file_no: f"stored file {file_no}")
        finally:
            os.close(fd)
            if txn:
                txn.pop().abort()

    def close(self) -> None:
        """Flush and close; readers open the environment lock-free (it never changes), so the
        lock file is not shipped."""
        self._pool.shutdown()
        self._frames_out.flush()
        os.fsync(self._frames_out.fileno())
        self._frames_out.close()
        self.env.sync(True)
        self.env.close()
        (self.path / "lock.mdb").unlink(missing_ok=True)


class Batch:
    """One write transaction at a time: `done(units)` commits once `commit_every` units have
    been written since the last commit, and remaps once `remap_every` have since the last
    remap. Committed on a clean exit, aborted on an exception."""

    def __init__(self, writer: Writer, commit_every: int, remap_every: int) -> None:
        self.writer, self.commit_every, self.remap_every = writer, commit_every, remap_every
        self.pending = self.since_remap = 0  # units since the last commit, remap
        self.txn = writer.env.begin(write=True)

    def put(self, name: str, key: bytes, value: bytes | bytearray, **kw: Any) -> bool:
        return self.txn.put(key, value, db=self.writer.dbs[name], **kw)

    def get(self, name: str, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.writer.dbs[name])

    def putmulti(self, name: str, items: list[tuple[bytes, bytes]], **kw: Any) -> None:
        self.txn.cursor(db=self.writer.dbs[name]).putmulti(items, **kw)

    def done(self, units: int = 1) -> None:
        self.pending += units
        if self.pending < self.commit_every:
            return
        self.txn.commit()
        self.since_remap += self.pending
        self.pending = 0
        if self.since_remap >= self.remap_every:
            self.writer.remap()
            self.since_remap = 0
        self.txn = self.writer.env.begin(write=True)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.txn.commit()
        else:
            self.txn.abort()


class StoredFile:
    """One file written into `frames` as zstd frames (frames.py), FRAME input bytes each, and
    into `files` with its number and size once closed. Frames are compressed in a worker
    thread (zstd lets go of the GIL), so the release's parsing goes on meanwhile, and stored a
    few at a time in a transaction of their own: no write transaction stays open between
    writes, so other readers and writers of the environment may run in between."""

    IN_FLIGHT = 8  # frames being compressed at once: a fixed amount of memory
    PER_COMMIT = 16  # frames stored per transaction (about 1 MB of dirty pages)
    REMAP_COMMITS = 16  # transactions between remaps, whose touched pages count as RSS

    def __init__(self, writer: Writer, path: str, file_no: int) -> None:
        self.writer, self.path, self.file_no = writer, path, file_no
        self.buf = bytearray()
        self.frames = self.size = self.commits = 0
        self.pending: deque[Future[bytes]] = deque()
        self.ready: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.buf += data
        self.size += len(data)
        while len(self.buf) >= FRAME:
            self._frame(bytes(self.buf[:FRAME]))
            del self.buf[:FRAME]

    def _frame(self, data: bytes) -> None:
        self.pending.append(self.writer.compress(data))
        if len(self.pending) >= self.IN_FLIGHT:
            self.ready.append(self.pending.popleft().result())
            if len(self.ready) >= self.PER_COMMIT:
                self._commit()

    def _commit(self, last: bool = False) -> None:
        with self.writer.env.begin(write=True) as txn:
            db = self.writer.dbs["frames"]
            for frame in self.ready:
                at = FRAME_AT.pack(self.writer.append_frame(frame), len(frame))
                txn.put(frame_key(self.file_no, self.frames), at, db=db, append=True)
                self.frames += 1
            if last:
                txn.put(os.fsencode(self.path), FILE_INFO.pack(self.file_no, self.size),
                        db=self.writer.dbs["files"])
        self.ready.clear()
        self.commits += 1
        if self.commits % self.REMAP_COMMITS == 0:
            self.writer.remap()

    def __enter__(self) -> StoredFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            for future in self.pending:
                future.cancel()
            return
        if self.buf:
            self._frame(bytes(self.buf))
        self.ready += [future.result() for future in self.pending]
        self._commit(last=True)
