"""LMDB's pages checked before a cursor walks them. A lookup that meets a page of the wrong type
gets MDB_CORRUPTED, an error; a cursor stepping onto one trips an assertion inside LMDB that
aborts the whole process. So each database that a mount walks is checked page by page first:
every page its B-tree reaches must carry its own number and the type its depth calls for.

Read with pread, never through LMDB's map: a missing page is an error here, not SIGBUS. Pages
are read WINDOW bytes at a time, in key order: the build writes each database in key order, so
its pages lie in ascending runs, and a 6,000-image dataset's 2,214 pages cost 111 reads, not
2,214 round trips to networked storage. The layout is LMDB's own (mdb.c): a 16-byte page header
(number, pad, flags, lower, upper, where an overflow page keeps its page count in lower/upper)
and nodes of 8-byte headers (a branch node's lo, hi and flags are its child's page number; a
leaf node's lo and hi its data size).
"""

from __future__ import annotations

import os
import struct

from vgfs.errors import VGFSError

HEADER = struct.Struct("<QHHHH")  # number, pad, flags, lower, upper
NODE = struct.Struct("<HHHH")  # lo, hi, flags, key size
_PAGES = struct.Struct("<I")  # an overflow page's count, at offset 12
DB = struct.Struct("<IHHQQQQQ")  # MDB_db: pad, flags, depth, 4 counters, root
_PGNO = struct.Struct("<Q")
P_BRANCH, P_LEAF, P_OVERFLOW = 0x01, 0x02, 0x04
MDB_DUPSORT = 0x04  # a database's flag
F_BIGDATA, F_SUBDATA = 0x01, 0x02  # a leaf's data: an overflow page; a sub-database
P_INVALID = (1 << 64) - 1  # the root of an empty database


WINDOW = 1 << 20


class Pages:
    """data.mdb's pages, read with pread up to WINDOW bytes at a time (`span`: no more than
    the database being checked holds, so a one-page database costs one page); `reads` counts
    the preads."""

    def __init__(self, fd: int, psize: int) -> None:
        self.fd, self.psize = fd, psize
        self.reads = 0
        self.span = WINDOW
        self._start, self._window = 0, b""

    def page(self, pgno: int, size: int = 0) -> memoryview:
        """The first `size` bytes (a whole page by default) of page `pgno`; shorter past the
        end of the file."""
        size = size or self.psize
        at = pgno * self.psize
        if not self._start <= at <= at + size <= self._start + len(self._window):
            self._window = os.pread(self.fd, max(self.span, size), at)
            self._start = at
            self.reads += 1
        return memoryview(self._window)[at - self._start:at - self._start + size]


def check_db(pages: Pages, record: bytes, what: str) -> int:
    """Check every page of the database whose MDB_db `record` (its value in LMDB's main
    database) is given; raises VGFSError naming `what` and the first bad page. Returns the
    number of pages checked."""
    _, flags, depth, branches, leaves, overflow, _, root = DB.unpack(record)
    pages.span = min(WINDOW, (branches + leaves + overflow) * pages.psize)
    # A leaf's nodes point elsewhere only to overflow pages and sub-databases: without either,
    # its header is all there is to check (and a sub-database holds neither).
    nodes = bool(overflow or flags & MDB_DUPSORT)
    todo = [] if root == P_INVALID else [(root, 1, depth, nodes)]
    checked = 0
    while todo:
        pgno, level, depth, nodes = todo.pop()
        page = pages.page(pgno)
        checked += 1
        if len(page) < pages.psize:
            raise VGFSError(f"{what}: page {pgno} is past the end of data.mdb")
        number, _, flags, lower, _ = HEADER.unpack_from(page)
        want = P_LEAF if level == depth else P_BRANCH
        if number != pgno or not flags & want:
            raise VGFSError(f"{what}: page {pgno} is damaged (it says page {number}, type"
                            f" {flags:#x}, where a {'leaf' if want == P_LEAF else 'branch'}"
                            " belongs)")
        if want == P_LEAF and not nodes:
            continue
        children = []
        for at in struct.unpack_from(f"<{(lower - HEADER.size) // 2}H", page, HEADER.size):
            lo, hi, nflags, ksize = NODE.unpack_from(page, at)
            if want == P_BRANCH:
                children.append((lo | hi << 16 | nflags << 32, level + 1, depth, nodes))
                continue
            data = at + NODE.size + ksize
            if nflags & F_BIGDATA:
                checked += _check_overflow(pages, _PGNO.unpack_from(page, data)[0], what)
            elif nflags & F_SUBDATA:  # sorted duplicates in a B-tree of their own (not inline)
                _, _, sub_depth, _, _, _, _, sub_root = DB.unpack_from(page, data)
                children.append((sub_root, 1, sub_depth, False))
        todo += reversed(children)  # popped in key order, the order of the pages on disk
    return checked


def _check_overflow(pages: Pages, pgno: int, what: str) -> int:
    head = pages.page(pgno, HEADER.size)
    if len(head) < HEADER.size:
        raise VGFSError(f"{what}: overflow page {pgno} is past the end of data.mdb")
    number, _, flags, _, _ = HEADER.unpack_from(head)
    if number != pgno or not flags & P_OVERFLOW:
        raise VGFSError(f"{what}: overflow page {pgno} is damaged (it says page {number}, type"
                        f" {flags:#x})")
    return _PAGES.unpack_from(head, 12)[0]
