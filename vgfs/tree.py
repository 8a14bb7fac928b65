"""The namespace: paths <-> stable inode numbers, lookups and directory listings. No FUSE here.

Inode numbers are pure functions of what a node is, so they are the same on every mount of the
same dataset, on every node of a cluster, and need no table in memory:

    1                 root                  2  images/        3  by-id/      4  README.txt
    5                 .vgfs-stats: the mount's live counters, found by lookup, never listed
    8 + v             the v-th query view's directory (by-object/...), 48 + v its counts.json
    16 + i            the i-th whole-dataset file at the root (image_data.json, synsets.json...)
    2**32 + 16*id + c image `id`: c = 0 its directory, 1..7 a JSON kind, 8 image.jpg,
                      9 by-id/<id>.json, 10 a view's symlink to it (the same in every view)
    2**60 + 2**40*v + p  the name at position p of view v (query.py)

Every answer about an image costs one read of its size summary (dataset.DIR_SIZES).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, auto
from itertools import takewhile

from vgfs.dataset import Dataset
from vgfs.layout import ABSENT, FILES
from vgfs.query import LINK_VIEWS, POS, VIEWS
from vgfs.schema import CANONICAL_ID, NAME_MAX, WHOLE_FILES

ROOT, IMAGES, BY_ID, README, STATS = 1, 2, 3, 4, 5
# Unlisted, so ls and find never show it; fs.py fills it with the counters of `vgfs stats`.
STATS_NAME = b".vgfs-stats"
VIEW_BASE, COUNTS_BASE = 8, 48
WHOLE_BASE = 16
IMAGE_BASE = 1 << 32
NAME_BASE, NAME_SHIFT = 1 << 60, 40
# Codes of an image's nodes: 0 its directory, 1 + i the i-th of FILES, then by-id/<id>.json.
CODE_DIR = 0
CODE_BY_ID = len(FILES) + 1
CODE_VIEW_LINK = len(FILES) + 2
GRAPH = FILES.index("graph")
# The largest id whose nodes all number below the view names, and the last name position.
MAX_IMAGE_ID = (NAME_BASE - IMAGE_BASE) // 16 - 1
MAX_POSITION = (1 << 8 * POS.size) - 1
_DECIMAL = re.compile(CANONICAL_ID.encode())
FILE_NAMES = [("image.jpg" if f == "jpeg" else f + ".json").encode() for f in FILES]
_INDEX_OF_NAME = {name: i for i, name in enumerate(FILE_NAMES)}
# Listing order inside an image directory: the JPEG first, then the JSON files.
_LISTING = [FILES.index("jpeg")] + [i for i, f in enumerate(FILES) if f != "jpeg"]


class NodeType(Enum):
    """What an inode is."""

    ROOT = auto()
    IMAGES = auto()  # images/
    BY_ID = auto()  # by-id/
    README = auto()  # README.txt
    STATS = auto()  # .vgfs-stats
    WHOLE = auto()  # a whole-dataset file at the root
    IMAGE_DIR = auto()  # images/<id>/
    RECORD = auto()  # images/<id>/<kind>.json
    JPEG = auto()  # images/<id>/image.jpg
    BY_ID_FILE = auto()  # by-id/<id>.json
    VIEW = auto()  # by-object/, ...
    COUNTS = auto()  # a view's counts.json
    VIEW_NAME = auto()  # by-object/<name>/
    ID_LINK = auto()  # by-coco/<id>: a symlink to ../images/<image id>
    VIEW_LINK = auto()  # by-object/<name>/<id>: a symlink to ../../images/<id>


DIRS = frozenset({NodeType.ROOT, NodeType.IMAGES, NodeType.BY_ID, NodeType.IMAGE_DIR,
                  NodeType.VIEW, NodeType.VIEW_NAME})
LINKS = frozenset({NodeType.ID_LINK, NodeType.VIEW_LINK})


@dataclass(frozen=True, slots=True)
class Node:
    """What an inode is, and what finding its bytes needs."""

    ino: int
    type: NodeType
    image_id: int = -1
    kind: str = ""  # RECORD, JPEG, BY_ID_FILE: the annotation kind (FILES)
    file: str = ""  # WHOLE, COUNTS: the stored file's name
    view: str = ""  # VIEW, VIEW_NAME, ID_LINK: the view
    size: int = 0  # bytes as stored (exact for all but pretty JSON)
    count: int = 0  # VIEW_NAME: its number of images, shown as the directory's st_size
    key: bytes = b""  # VIEW_NAME, ID_LINK: the escaped name

    @property
    def is_dir(self) -> bool:
        return self.type in DIRS

    @property
    def is_link(self) -> bool:
        return self.type in LINKS

    @property
    def target(self) -> bytes:
        """A symlink's target: every view entry leads to images/<id>."""
        up = b"../images/" if self.type is NodeType.ID_LINK else b"../../images/"
        return up + str(self.image_id).encode()


def image_ino(image_id: int, code: int) -> int:
    return IMAGE_BASE + 16 * image_id + code


def parse_id(name: bytes) -> int | None:
    """The image id that a canonical decimal name denotes, or None."""
    if _DECIMAL.fullmatch(name) is None:
        return None
    value = int(name)
    return value if value <= MAX_IMAGE_ID else None


def _view_link(image_id: int) -> Node:
    target_len = len(b"../../images/") + len(str(image_id))
    return Node(image_ino(image_id, CODE_VIEW_LINK), NodeType.VIEW_LINK, image_id,
                size=target_len)


def _image_node(image_id: int, code: int, sizes: tuple[int, ...]) -> Node | None:
    if code == CODE_DIR:
        return _image_dir(image_id)
    if code == CODE_VIEW_LINK:
        return _view_link(image_id)
    index = GRAPH if code == CODE_BY_ID else code - 1
    if not 0 <= index < len(FILES) or sizes[index] == ABSENT:
        return None
    kind = FILES[index]
    what = (NodeType.BY_ID_FILE if code == CODE_BY_ID
            else NodeType.JPEG if kind == "jpeg" else NodeType.RECORD)
    return Node(image_ino(image_id, code), what, image_id, kind, size=sizes[index])


def _image_dir(image_id: int) -> Node:
    return Node(image_ino(image_id, CODE_DIR), NodeType.IMAGE_DIR, image_id)


def _numbered(image_ids: Iterator[int]) -> Iterator[int]:
    """The ascending ids that have inodes: a larger one would number as a view name."""
    return takewhile(lambda image_id: image_id <= MAX_IMAGE_ID, image_ids)


class NameTooLong(Exception):
    """A name longer than NAME_MAX bytes: ENAMETOOLONG, not ENOENT."""


class Tree:
    """Lookups and listings over a dataset, each from LMDB in O(log n)."""

    def __init__(self, dataset: Dataset) -> None:
        self.ds = dataset
        root: list[Node] = [Node(README, NodeType.README), Node(IMAGES, NodeType.IMAGES)]
        names = [b"README.txt", b"images"]
        if "graph" in dataset.kinds:
            root.append(Node(BY_ID, NodeType.BY_ID))
            names.append(b"by-id")
        for name in WHOLE_FILES:
            size = dataset.whole_size(name) if name in dataset.whole_files else None
            if size is not None:
                root.append(Node(WHOLE_BASE + WHOLE_FILES.index(name), NodeType.WHOLE,
                                 file=name, size=size))
                names.append(name.encode())
        self._counts: dict[str, Node] = {}
        for v, view in enumerate(VIEWS):
            counts_file = f"{view}/counts.json"
            counts = dataset.whole_size(counts_file)
            if dataset.manifest.get("views", {}).get(view) and counts is not None:
                root.append(Node(VIEW_BASE + v, NodeType.VIEW, view=view))
                names.append(view.encode())
                self._counts[view] = Node(COUNTS_BASE + v, NodeType.COUNTS, file=counts_file,
                                          size=counts)
        self._root = list(zip(names, root, strict=True))
        stats = Node(STATS, NodeType.STATS)
        self._root_by_name = {**dict(self._root), STATS_NAME: stats}
        self._fixed = {n.ino: n for n in [*root, *self._counts.values(), stats]}
        self._fixed[ROOT] = Node(ROOT, NodeType.ROOT)

    def _name_node(self, view: str, position: int, key: bytes, count: int) -> Node:
        ino = NAME_BASE + (VIEWS.index(view) << NAME_SHIFT) + position
        if view not in LINK_VIEWS:
            return Node(ino, NodeType.VIEW_NAME, view=view, count=count, key=key)
        # by-coco/<id>: a symlink to the image (the lowest id, if two share a coco id).
        image_id = next(self.ds.view_images(view, key))
        return Node(ino, NodeType.ID_LINK, image_id, view=view,
                    size=len(b"../images/") + len(str(image_id)), key=key)

    def node(self, ino: int) -> Node | None:
        """Decode an inode number; None if it names nothing in this dataset."""
        if ino < IMAGE_BASE:
            return self._fixed.get(ino)
        if ino >= NAME_BASE:
            v, position = divmod(ino - NAME_BASE, 1 << NAME_SHIFT)
            if v >= len(VIEWS) or VIEWS[v] not in self._counts or position > MAX_POSITION:
                return None
            found = self.ds.view_name(VIEWS[v], position)
            return None if found is None else self._name_node(VIEWS[v], position, *found)
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
            return _image_dir(image_id)
        if parent == BY_ID:
            image_id = parse_id(name[:-5]) if name.endswith(b".json") else None
            return None if image_id is None else self.node(image_ino(image_id, CODE_BY_ID))
        if VIEW_BASE <= parent < VIEW_BASE + len(VIEWS):
            view = VIEWS[parent - VIEW_BASE]
            if name == b"counts.json":
                return self._counts.get(view)
            position = self.ds.view_position(view, name)
            if position is None:
                return None
            found = self.ds.view_name(view, position)
            return None if found is None else self._name_node(view, position, *found)
        if parent >= NAME_BASE:
            node = self.node(parent)
            image_id = parse_id(name)
            if node is None or node.type is not NodeType.VIEW_NAME or image_id is None:
                return None
            return _view_link(image_id) if self.ds.view_has(node.view, node.key,
                                                             image_id) else None
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
            for image_id in _numbered(self.ds.image_ids(after=offset - 1)):
                yield str(image_id).encode(), _image_dir(image_id), image_id + 1
        elif ino == BY_ID:
            for image_id in _numbered(self.ds.image_ids(after=offset - 1)):
                node = self.node(image_ino(image_id, CODE_BY_ID))
                if node is not None:
                    yield f"{image_id}.json".encode(), node, image_id + 1
        elif VIEW_BASE <= ino < VIEW_BASE + len(VIEWS):
            # Offset 0 is counts.json; the name at position p has offset p + 1.
            view = VIEWS[ino - VIEW_BASE]
            if offset == 0 and view in self._counts:
                yield b"counts.json", self._counts[view], 1
            if offset - 1 > MAX_POSITION:  # a seekdir past the last name
                return
            for position, key, count in self.ds.view_names(view, max(offset - 1, 0)):
                yield key, self._name_node(view, position, key, count), position + 2
        elif ino >= NAME_BASE:
            node = self.node(ino)
            if node is None or node.type is not NodeType.VIEW_NAME:
                return
            for image_id in _numbered(self.ds.view_images(node.view, node.key, after=offset - 1)):
                yield str(image_id).encode(), _view_link(image_id), image_id + 1
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
