"""The namespace: paths <-> stable inode numbers, lookups and directory listings. No FUSE here.

Inode numbers are pure functions of what a node is, so they are the same on every mount of the
same dataset, on every node of a cluster, and need no table in memory:

    1                 root                  2  images/        3  by-id/      4  README.txt
    16 + i            the i-th whole-dataset file at the root (image_data.json, synsets.json...)
    2**32 + 16*id + c image `id`: c = 0 its directory, 1..7 a JSON kind, 8 image.jpg,
                      9 by-id/<id>.json
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from vgfs.dataset import KINDS, Dataset
from vgfs.release import WHOLE_FILES

ROOT, IMAGES, BY_ID, README = 1, 2, 3, 4
WHOLE_BASE = 16
IMAGE_BASE = 1 << 32
CODE_DIR, CODE_JPEG, CODE_BY_ID = 0, len(KINDS) + 1, len(KINDS) + 2
KIND_OF_CODE = {i + 1: k for i, k in enumerate(KINDS)}
CODE_OF_KIND = {k: c for c, k in KIND_OF_CODE.items()}
MAX_IMAGE_ID = (2**63 - IMAGE_BASE) // 16 - 1
NAME_MAX = 255
# Canonical decimal: no sign, no leading zeros, no spaces; anything else does not exist.
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,17}")
FILE_NAMES = {k: f"{k}.json" for k in KINDS} | {"jpeg": "image.jpg"}
_CODE_OF_NAME = {FILE_NAMES[k].encode(): c for k, c in CODE_OF_KIND.items()}
_CODE_OF_NAME[b"image.jpg"] = CODE_JPEG


@dataclass(frozen=True, slots=True)
class Node:
    """What an inode is. `what` is one of: root, images, by-id, readme, whole, dir, record,
    jpeg, by-id-file."""

    ino: int
    what: str
    image_id: int = -1
    name: str = ""  # the record kind, or the whole file's name

    @property
    def is_dir(self) -> bool:
        return self.what in ("root", "images", "by-id", "dir")


def image_ino(image_id: int, code: int) -> int:
    return IMAGE_BASE + 16 * image_id + code


def parse_id(name: bytes) -> int | None:
    """The image id that a canonical decimal name denotes, or None."""
    if _DECIMAL.fullmatch(name) is None:
        return None
    value = int(name)
    return value if value <= MAX_IMAGE_ID else None


class Tree:
    """Lookups and listings over a dataset. Every answer comes from LMDB in O(log n)."""

    def __init__(self, dataset: Dataset) -> None:
        self.ds = dataset
        self.whole = [n for n in WHOLE_FILES if n in dataset.whole_files]
        self._root_entries: list[tuple[bytes, int]] = [
            (b"README.txt", README), (b"images", IMAGES)]
        if "graph" in dataset.kinds:
            self._root_entries.append((b"by-id", BY_ID))
        self._root_entries += [(n.encode(), WHOLE_BASE + WHOLE_FILES.index(n))
                               for n in self.whole]
        self._root_names = dict(self._root_entries)

    def node(self, ino: int) -> Node | None:
        """Decode an inode number; None if it names nothing in this dataset."""
        if ino >= IMAGE_BASE:
            image_id, code = divmod(ino - IMAGE_BASE, 16)
            if not self.ds.has_image(image_id):
                return None
            if code == CODE_DIR:
                return Node(ino, "dir", image_id)
            if code == CODE_JPEG:
                return Node(ino, "jpeg", image_id) if self._has_jpeg(image_id) else None
            if code == CODE_BY_ID:
                return (Node(ino, "by-id-file", image_id, "graph")
                        if self.ds.record("graph", image_id) is not None else None)
            kind = KIND_OF_CODE.get(code)
            if kind is None or self.ds.record(kind, image_id) is None:
                return None
            return Node(ino, "record", image_id, kind)
        if ino == ROOT:
            return Node(ino, "root")
        if ino == IMAGES:
            return Node(ino, "images")
        if ino == BY_ID and "graph" in self.ds.kinds:
            return Node(ino, "by-id")
        if ino == README:
            return Node(ino, "readme")
        i = ino - WHOLE_BASE
        if 0 <= i < len(WHOLE_FILES) and WHOLE_FILES[i] in self.whole:
            return Node(ino, "whole", name=WHOLE_FILES[i])
        return None

    def _has_jpeg(self, image_id: int) -> bool:
        return self.ds.jpeg_index(image_id) is not None

    def lookup(self, parent: int, name: bytes) -> int | None:
        """The inode of `name` in directory `parent`, or None. Only canonical names exist."""
        if len(name) > NAME_MAX:
            raise NameTooLong
        if parent == ROOT:
            return self._root_names.get(name)
        if parent == IMAGES:
            image_id = parse_id(name)
            if image_id is None or not self.ds.has_image(image_id):
                return None
            return image_ino(image_id, CODE_DIR)
        if parent == BY_ID:
            if not name.endswith(b".json"):
                return None
            image_id = parse_id(name[:-5])
            if image_id is None or self.ds.record("graph", image_id) is None:
                return None
            if not self.ds.has_image(image_id):
                return None
            return image_ino(image_id, CODE_BY_ID)
        if parent >= IMAGE_BASE:
            image_id, code = divmod(parent - IMAGE_BASE, 16)
            child = _CODE_OF_NAME.get(name)
            if code != CODE_DIR or child is None:
                return None
            ino = image_ino(image_id, child)
            return ino if self.node(ino) is not None else None
        return None

    def readdir(self, ino: int, offset: int) -> Iterator[tuple[bytes, int, int]]:
        """(name, inode, next offset) for entries after `offset`; resumes in O(log n)."""
        if ino == ROOT:
            for i in range(offset, len(self._root_entries)):
                name, child = self._root_entries[i]
                yield name, child, i + 1
        elif ino == IMAGES:
            # The offset is the last listed image id + 1, so resuming is one cursor seek.
            for image_id in self.ds.image_ids(after=offset - 1):
                yield str(image_id).encode(), image_ino(image_id, CODE_DIR), image_id + 1
        elif ino == BY_ID:
            for image_id in self.ds.image_ids(after=offset - 1):
                if self.ds.record("graph", image_id) is not None:
                    yield (f"{image_id}.json".encode(), image_ino(image_id, CODE_BY_ID),
                           image_id + 1)
        elif ino >= IMAGE_BASE:
            image_id = (ino - IMAGE_BASE) // 16
            entries = []
            if self._has_jpeg(image_id):
                entries.append((b"image.jpg", image_ino(image_id, CODE_JPEG)))
            entries += [(FILE_NAMES[k].encode(), image_ino(image_id, CODE_OF_KIND[k]))
                        for k in self.ds.kinds_of(image_id)]
            for i in range(offset, len(entries)):
                yield entries[i][0], entries[i][1], i + 1


class NameTooLong(Exception):
    """A name longer than NAME_MAX bytes: ENAMETOOLONG, not ENOENT."""
