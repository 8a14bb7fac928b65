"""The build's one LMDB environment, written in small transactions and remapped as it grows.

Every phase writes through a `Writer`: a write transaction's dirty pages sit in memory until it
commits, and pages touched through the map count as the process's memory until the map is
closed, so without both the build's peak RSS would grow with the release.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb

from vgfs.layout import DB_NAMES, DUPSORT, MAX_DBS, WHOLE_CHUNK, WHOLE_SIZE, chunk_key

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

    def whole_file(self, name: str) -> WholeFile:
        return WholeFile(self, name)

    def close(self) -> None:
        """Flush and close; readers open the environment lock-free (it never changes), so the
        lock file is not shipped."""
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


class WholeFile:
    """One whole file written into the `files` database in WHOLE_CHUNK pieces, a transaction
    per piece, so that the build never holds it whole (image_data.json alone is 17 MB)."""

    def __init__(self, writer: Writer, name: str) -> None:
        self.writer, self.name = writer, name
        self.buf = bytearray()
        self.chunks = self.size = 0

    def write(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= WHOLE_CHUNK:
            self._piece(self.buf[:WHOLE_CHUNK])
            del self.buf[:WHOLE_CHUNK]

    def _piece(self, piece: bytes | bytearray) -> None:
        self._store(chunk_key(self.name, self.chunks), piece)
        self.chunks += 1
        self.size += len(piece)

    def _store(self, key: bytes, value: bytes | bytearray) -> None:
        with self.writer.batch() as batch:
            batch.put("files", key, value)

    def __enter__(self) -> WholeFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            if self.buf:
                self._piece(self.buf)
            self._store(self.name.encode(), WHOLE_SIZE.pack(self.size))
