"""The read side's LMDB environments: one per dataset folder and process, opened only once
data.mdb is known to hold every page LMDB may touch (a file cut short would be SIGBUS, not an
error, at the first touch of a missing page through the map)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import lmdb

from vgfs.errors import VGFSError
from vgfs.layout import DB_NAMES, DUPSORT, MAX_DBS


class Environments:
    """One LMDB environment per folder and process, shared by every Dataset open on it: LMDB
    refuses a second open of the same environment in one process."""

    def __init__(self) -> None:
        self._open: dict[Path, tuple[lmdb.Environment, dict[str, Any], int]] = {}
        self._lock = threading.Lock()

    def acquire(self, path: Path) -> tuple[lmdb.Environment, dict[str, Any]]:
        key = path.resolve()
        with self._lock:
            if key in self._open:
                env, dbs, users = self._open[key]
            else:
                env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=MAX_DBS,
                                subdir=True, readahead=False, max_readers=1024)
                try:
                    check_size(path / "data.mdb", os.stat(path / "data.mdb").st_size,
                                pages_needed(env))  # before any page past the meta is read
                    dbs = {n: env.open_db(n.encode(), create=False, dupsort=n in DUPSORT,
                                          dupfixed=n in DUPSORT) for n in DB_NAMES}
                except (lmdb.Error, VGFSError):
                    env.close()
                    raise
                users = 0
            self._open[key] = (env, dbs, users + 1)
            return env, dbs

    def release(self, env: lmdb.Environment) -> None:
        with self._lock:
            for key, (open_env, dbs, users) in list(self._open.items()):
                if open_env is env:
                    if users > 1:
                        self._open[key] = (env, dbs, users - 1)
                    else:
                        del self._open[key]
                        env.close()
                    return


ENVIRONMENTS = Environments()


def pages_needed(env: lmdb.Environment) -> int:
    """The bytes of data.mdb that LMDB's last committed page ends at (from the meta page)."""
    return (env.info()["last_pgno"] + 1) * env.stat()["psize"]


def check_size(data_mdb: Path, size: int, needs: int) -> None:
    if size < needs:
        raise VGFSError(f"{data_mdb}: cut short, {size:,} bytes where the database needs"
                        f" {needs:,}; restore or rebuild the dataset")
