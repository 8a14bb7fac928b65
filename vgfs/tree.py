"""The namespace: paths <-> stable inode numbers, lookups and directory listings. No FUSE here.

Inode numbers are pure functions of what a node is, so they are the same on every mount of the
same dataset, on every node of a cluster, and need no table in memory:

    1                 root                  2  images/        3  by-id/      4  README.txt
    16 + i            the i-th whole-dataset file at the root (image_data.json, synsets.json...)
    2**32 + 16*id + c image `id`: c = 0 its directory, 1..7 a JSON kind, 8 image.jpg,
                      9 by-id/<id>.json

Every answer about an image costs one read of its size summary (dataset.DIR_SIZES).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from vgfs.dataset import ABSENT, FILES, Dataset
from vgfs.release import WHOLE_FILES

ROOT, IMAGES, BY_ID, README = 1, 2, 3, 4
WHOLE_BASE = 16
IMAGE_BASE = 1 << 32
# Codes of an image's nodes: 0 its directory, 1 + i the i-th of FILES, then by-id/<id>.json.
CODE_DIR = 0
CODE_BY_ID = len(FILES) + 1
GRAPH = FILES.index("graph")
MAX_IMAGE_ID = (2**63 - IMAGE_BASE) // 16 - 1
NAME_MAX = 255
# Canonical decimal: no sign, no leading zeros, no spaces; anything else does not exist.
_DECIMAL = re.compile(rb"0|[1-9][0-9]{0,17}")
FILE_NAMES = [("image.jpg" if f == "jpeg" else f + ".json").encode() for f in FILES]
_INDEX_OF_NAME = {name: i for i, name in enumerate(FILE_NAMES)}
# Listing order inside an image directory: the JPEG first, then the JSON files.
_LISTING = [FILES.index("jpeg")] + [i for i, f in enumerate(FILES) if f != "jpeg"]


@dataclass(frozen=True, slots=True)
class Node:
    """What an inode is. `what`: root, images, by-id, readme, whole (a whole-dataset file),
    dir (an image), record (a JSON kind of an image), jpeg, by-id-file."""

    ino: int
    what: str
    image_id: int = -1
    name: str = ""  # the record kind, or the whole file's name
    size: int = 0  # the stored size: exact for everything but pretty-printed JSON

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


def _image_node(image_id: int, code: int, sizes: tuple[int, ...]) -> Node | None:
    if code == CODE_DIR:
        return Node(image_ino(image_id, code), "dir", image_id)
    index = GRAPH if code == CODE_BY_ID else code - 1
    if not 0 <= index < len(FILES) or sizes[index] == ABSENT:
        return None
    kind = FILES[index]
    what = "by-id-file" if code == CODE_BY_ID else "jpeg" if kind == "jpeg" else "record"
    return Node(image_ino(image_id, code), what, image_id, kind, sizes[index])


class NameTooLong(Exception):
    """A name longer than NAME_MAX bytes: ENAMETOOLONG, not ENOENT."""


class Tree:
    """Lookups and listings over a dataset, each from LMDB in O(log n)."""

    def __init__(self, dataset: Dataset) -> None:
        self.ds = dataset
        root: list[Node] = [Node(README, "readme"), Node(IMAGES, "images")]
        names = [b"README.txt", b"images"]
        if "graph" in dataset.kinds:
            root.append(Node(BY_ID, "by-id"))
            names.append(b"by-id")
        for name in WHOLE_FILES:
            data = dataset.whole_file(name) if name in dataset.whole_files else None
            if data is not None:
                root.append(Node(WHOLE_BASE + WHOLE_FILES.index(name), "whole", name=name,
                                 size=len(data)))
                names.append(name.encode())
        self._root = list(zip(names, root, strict=True))
        self._root_by_name = dict(self._root)
        self._fixed = {n.ino: n for n in root} | {ROOT: Node(ROOT, "root")}

    def node(self, ino: int) -> Node | None:
        """Decode an inode number; None if it names nothing in this dataset."""
        if ino < IMAGE_BASE:
            return self._fixed.get(ino)
        image_id, code = divmod(ino - IMAGE_BASE, 16)
        sizes = self.ds.dir_sizes(image_id)
        return None if sizes is None else _image_node(image_id, code, sizes)

    def lookup(self, parent: int, name: bytes) -> Node | None:
        """The node called `name` in directory `parent`, or None. Only canonical names exist."""
        if len(name) > NAME_MAX:
            raise NameTooLong
        if parent == ROOT:
            return self._root_by_name.get(name)
        if parent == IMAGES:
            image_id = parse_id(name)
            if image_id is None or not self.ds.has_image(image_id):
                return None
            return Node(image_ino(image_id, CODE_DIR), "dir", image_id)
        if parent == BY_ID:
            image_id = parse_id(name[:-5]) if name.endswith(b".json") else None
            return None if image_id is None else self.node(image_ino(image_id, CODE_BY_ID))
        if parent >= IMAGE_BASE:
            image_id, code = divmod(parent - IMAGE_BASE, 16)
            index = _INDEX_OF_NAME.get(name)
            if code != CODE_DIR or index is None:
                return None
            return self.node(image_ino(image_id, index + 1))
        return None

    def readdir(self, ino: int, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        """(name, node, next offset) for the entries after `offset`; resumes in O(log n)."""
        if ino == ROOT:
            for i in range(offset, len(self._root)):
                yield *self._root[i], i + 1
        elif ino == IMAGES:
            # The offset is the last listed image id + 1, so resuming is one cursor seek.
            for image_id in self.ds.image_ids(after=offset - 1):
                yield (str(image_id).encode(), Node(image_ino(image_id, CODE_DIR), "dir",
                                                   image_id), image_id + 1)
        elif ino == BY_ID:
            for image_id in self.ds.image_ids(after=offset - 1):
                node = self.node(image_ino(image_id, CODE_BY_ID))
                if node is not None:
                    yield f"{image_id}.json".encode(), node, image_id + 1
        elif ino >= IMAGE_BASE:
            image_id = (ino - IMAGE_BASE) // 16
            sizes = self.ds.dir_sizes(image_id)
            if sizes is None:
                return
            for position in range(offset, len(_LISTING)):
                index = _LISTING[position]
                node = _image_node(image_id, index + 1, sizes)
                if node is not None:
                    yield FILE_NAMES[index], node, position + 1
