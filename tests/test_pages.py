"""pages.py without a mount: every page that a database's B-tree reaches is checked, through
branches, overflow pages and sorted-duplicate sub-databases, and a bad one is named."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import lmdb
import pytest

from vgfs.errors import VGFSError
from vgfs.pages import DB, WINDOW, Pages, check_db


@pytest.fixture
def env_path(tmp_path: Path) -> Path:
    """An LMDB with a database of many small records (branches), one of big values (overflow
    pages), one of many duplicates under a key (a sub-database) and an empty one."""
    env = lmdb.open(str(tmp_path), max_dbs=4, map_size=64 << 20)
    small, big = env.open_db(b"small"), env.open_db(b"big")
    dups = env.open_db(b"dups", dupsort=True, dupfixed=True)
    env.open_db(b"empty")
    with env.begin(write=True) as txn:
        for i in range(5000):
            txn.put(struct.pack(">Q", i), b"v" * 40, db=small)
        for i in range(5):
            txn.put(struct.pack(">Q", i), os.urandom(20000), db=big)
        for i in range(3000):
            txn.put(b"key", struct.pack(">Q", i), db=dups)
    env.close()
    return tmp_path


def _check(path: Path, name: bytes, pages: list[Pages] | None = None) -> int:
    """The pages check_db finds in database `name`; `pages`, if given, receives its reader."""
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=4)
    with env.begin() as txn:
        record = txn.get(name)
    psize = env.stat()["psize"]
    env.close()
    fd = os.open(path / "data.mdb", os.O_RDONLY)
    try:
        reader = Pages(fd, psize)
        if pages is not None:
            pages.append(reader)
        return check_db(reader, record, name.decode())
    finally:
        os.close(fd)


def test_every_page_is_reached(env_path: Path) -> None:
    env = lmdb.open(str(env_path), readonly=True, lock=False, max_dbs=4)
    with env.begin() as txn:
        stats = {n: txn.stat(env.open_db(n, txn=txn, create=False)) for n in (b"small", b"big")}
    env.close()
    s = stats[b"small"]
    assert _check(env_path, b"small") == s["branch_pages"] + s["leaf_pages"] > 10
    b = stats[b"big"]
    assert _check(env_path, b"big") == b["leaf_pages"] + b["overflow_pages"] > 20
    assert _check(env_path, b"dups") > 3  # the key's leaf and its sub-database's pages
    assert _check(env_path, b"empty") == 0


@pytest.mark.parametrize("name", [b"small", b"big", b"dups"])
def test_a_page_of_the_wrong_type_is_named(env_path: Path, name: bytes) -> None:
    """The database's root page is given a bad type flag."""
    env = lmdb.open(str(env_path), readonly=True, lock=False, max_dbs=4)
    psize = env.stat()["psize"]
    with env.begin() as txn:
        root = DB.unpack(txn.get(name))[-1]
    env.close()
    with open(env_path / "data.mdb", "r+b") as f:
        f.seek(root * psize + 10)
        f.write(b"\x00\x00")
    with pytest.raises(VGFSError, match=rf"^{name.decode()}: page {root} is damaged \(it says"
                                        rf" page {root}, type 0x0, where a"):
        _check(env_path, name)


def test_pages_are_read_a_window_at_a_time_in_order(tmp_path: Path) -> None:
    """A database of some 900 pages, over several windows, costs a read a window, not a read
    a page: checked in key order, which is the order of its pages in the file."""
    env = lmdb.open(str(tmp_path), max_dbs=1, map_size=64 << 20)
    db = env.open_db(b"many")
    with env.begin(write=True) as txn:
        for i in range(60_000):
            txn.put(struct.pack(">Q", i), b"v" * 40, db=db)
    with env.begin() as txn:
        stat = txn.stat(db)
    env.close()
    readers: list[Pages] = []
    checked = _check(tmp_path, b"many", readers)
    assert checked == stat["branch_pages"] + stat["leaf_pages"] > 800
    windows = -(-(tmp_path / "data.mdb").stat().st_size // WINDOW)
    assert windows > 2
    assert readers[0].reads <= windows + 2
