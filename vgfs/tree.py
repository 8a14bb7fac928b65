"""The namespace: paths <-> stable inode numbers, lookups and directory listings. No FUSE here.

The mount is the release folder plus views of it (DESIGN §2.3). Inode numbers are pure
functions of what a node is, so they are the same on every mount of the same dataset, on every
node of a cluster, and need no table in memory:

    1  root   2  images/   3  by-id/   4  README.txt   6  VG_100K/   7  VG_100K_2/
    5                 .vgfs-stats: the mount's live counters, found by lookup, never listed
    8 + v             the v-th query view's directory (by-object/...), 48 + v its counts.json
    2**20 + i         the i-th path of the release's own files and folders, in sorted order
    2**31 + i         the i-th other file of the JPEG folders (dataset.strays), sorted
    2**32 + 16*id + c image `id`: c = 0 its directory, 1..7 a JSON kind, 8 image.jpg (also
                      VG_100K/<id>.jpg), 9 by-id/<id>.json, 10 a view's symlink to it
    2**60 + 2**40*v + p  the name at position p of view v (query.py)

Every answer about an image costs one read of its record (layout.IMAGE).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from enum import Enum, auto
from typing import TYPE_CHECKING, NamedTuple

from vgfs.layout import ABSENT, KINDS, VIEW_FILE_PREFIX, ImageRecord
from vgfs.query import LINK_VIEWS, POS, VIEWS
from vgfs.schema import CANONICAL_ID, IMAGE_DIRS, NAME_MAX

if TYPE_CHECKING:
    from vgfs.dataset import Dataset

ROOT, IMAGES, BY_ID, README, STATS, VG_100K, VG_100K_2 = 1, 2, 3, 4, 5, 6, 7
# Unlisted, so ls and find never show it; fs.py fills it with the counters of `vgfs stats`.
STATS_NAME = b".vgfs-stats"
VIEW_BASE, COUNTS_BASE = 8, 48
RELEASE_BASE = 1 << 20
STRAY_BASE = 1 << 31
IMAGE_BASE = 1 << 32
NAME_BASE, NAME_SHIFT = 1 << 60, 40
# The largest image id whose inodes stay below the views' names: the build refuses larger ones.
MAX_IMAGE_ID = (NAME_BASE - IMAGE_BASE) // 16 - 1
# The files of an image directory, by kind: the JSON kinds, then its JPEG.
FILES = (*KINDS, "jpeg")
# Codes of an image's nodes: 0 its directory, 1 + i the i-th of FILES, then by-id/<id>.json.
CODE_DIR = 0
CODE_JPEG = len(FILES)
CODE_BY_ID = len(FILES) + 1
CODE_VIEW_LINK = len(FILES) + 2
GRAPH = KINDS.index("graph")
MAX_POSITION = (1 << 8 * POS.size) - 1  # the last name position of a view
_DECIMAL = re.compile(CANONICAL_ID.encode())
FILE_NAMES = [("image.jpg" if f == "jpeg" else f + ".json").encode() for f in FILES]
_INDEX_OF_NAME = {name: i for i, name in enumerate(FILE_NAMES)}
# Listing order inside an image directory: the JPEG first, then the JSON files.
_LISTING = [FILES.index("jpeg")] + [i for i, f in enumerate(FILES) if f != "jpeg"]
# Where a JPEG folder's listing goes on from its JPEGs to its other files.
_STRAYS_OFFSET = 1 << 62
# Names the mount gives meaning to: the build keeps release files off them.
RESERVED = frozenset({"README.txt", "images", "by-id", *IMAGE_DIRS, *VIEWS,
                      STATS_NAME.decode()})


class NodeType(Enum):
    """What an inode is."""

    ROOT = auto()
    IMAGES = auto()  # images/
    BY_ID = auto()  # by-id/
    README = auto()  # README.txt
    STATS = auto()  # .vgfs-stats
    RELEASE_FILE = auto()  # a file of the release folder, at its own path
    RELEASE_DIR = auto()  # a folder of the release folder
    JPEG_DIR = auto()  # VG_100K/, VG_100K_2/
    STRAY = auto()  # a file of a JPEG folder that is no annotated image's JPEG
    IMAGE_DIR = auto()  # images/<id>/
    RECORD = auto()  # images/<id>/<kind>.json
    JPEG = auto()  # images/<id>/image.jpg, VG_100K/<id>.jpg
    BY_ID_FILE = auto()  # by-id/<id>.json
    VIEW = auto()  # by-object/, ...
    COUNTS = auto()  # a view's counts.json
    VIEW_NAME = auto()  # by-object/<name>/
    ID_LINK = auto()  # by-coco/<id>: a symlink to ../images/<image id>
    VIEW_LINK = auto()  # by-object/<name>/<id>: a symlink to ../../images/<id>

    # Members are singletons, equal only to themselves: hashed by identity, in C, rather than
    # by Enum's own __hash__ (a Python call), which listings would pay per entry.
    __hash__ = object.__hash__


DIRS = frozenset({NodeType.ROOT, NodeType.IMAGES, NodeType.BY_ID, NodeType.RELEASE_DIR,
                  NodeType.JPEG_DIR, NodeType.IMAGE_DIR, NodeType.VIEW, NodeType.VIEW_NAME})
LINKS = frozenset({NodeType.ID_LINK, NodeType.VIEW_LINK})


class Node(NamedTuple):
    """What an inode is, and what finding its bytes needs. A named tuple, because listings
    make one per entry: it is made five times faster than a frozen dataclass."""

    ino: int
    type: NodeType
    image_id: int = -1
    kind: str = ""  # RECORD, JPEG, BY_ID_FILE: the annotation kind (FILES)
    file: str = ""  # RELEASE_*, STRAY, COUNTS, JPEG_DIR: the stored path
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


def _jpeg_id(name: bytes) -> int | None:
    """The image id of a `<id>.jpg` name, or None."""
    return parse_id(name[:-4]) if name.endswith(b".jpg") else None


def _view_link(image_id: int) -> Node:
    target_len = len(b"../../images/") + len(str(image_id))
    return Node(image_ino(image_id, CODE_VIEW_LINK), NodeType.VIEW_LINK, image_id,
                size=target_len)


def _image_dir(image_id: int) -> Node:
    return Node(image_ino(image_id, CODE_DIR), NodeType.IMAGE_DIR, image_id)


def _image_node(image_id: int, code: int, record: ImageRecord) -> Node | None:
    if code == CODE_DIR:
        return _image_dir(image_id)
    if code == CODE_VIEW_LINK:
        return _view_link(image_id)
    if code == CODE_BY_ID:
        size, what, kind = record.by_id_size, NodeType.BY_ID_FILE, "graph"
    elif code == CODE_JPEG:
        size, what, kind = record.jpeg_size, NodeType.JPEG, "jpeg"
    elif 1 <= code <= len(KINDS):
        kind = KINDS[code - 1]
        size = record.graph_size if kind == "graph" else record.ranges[code - 1][1]
        what = NodeType.RECORD
    else:
        return None
    if size == ABSENT:
        return None
    return Node(image_ino(image_id, code), what, image_id, kind, size=size)


class NameTooLong(Exception):
    """A name longer than NAME_MAX bytes: ENAMETOOLONG, not ENOENT."""


Listing = list[tuple[bytes, Node]]


class Tree:
    """Lookups and listings over a dataset, each from LMDB in O(log n)."""

    def __init__(self, dataset: Dataset, list_views: bool = False) -> None:
        """The query views are found by name, and listed at the root only with `list_views`:
        a walk of the mount (find, du, rsync, updatedb) then sees the dataset, not its index,
        which holds nine in ten of its entries (like ZFS's hidden .zfs)."""
        self.ds = dataset
        self._fixed: dict[int, Node] = {ROOT: Node(ROOT, NodeType.ROOT)}
        self._dirs: dict[int, Listing] = {}  # the listings held in memory, by inode
        root: Listing = [(b"README.txt", Node(README, NodeType.README)),
                         (b"images", Node(IMAGES, NodeType.IMAGES))]
        if "graph" in dataset.kinds:
            root.append((b"by-id", Node(BY_ID, NodeType.BY_ID)))
        self._strays = self._stray_nodes()
        for ino, folder in ((VG_100K, IMAGE_DIRS[0]), (VG_100K_2, IMAGE_DIRS[1])):
            if self._jpeg_dir_has_files(folder):
                root.append((folder.encode(), Node(ino, NodeType.JPEG_DIR, file=folder)))
        root += self._release_nodes()
        self._counts: dict[str, Node] = {}
        views: Listing = []
        for v, view in enumerate(VIEWS):
            counts_file = f"{VIEW_FILE_PREFIX}{view}/counts.json"
            counts = dataset.file_size(counts_file)
            if dataset.manifest.get("views", {}).get(view) and counts is not None:
                views.append((view.encode(), Node(VIEW_BASE + v, NodeType.VIEW, view=view)))
                self._counts[view] = Node(COUNTS_BASE + v, NodeType.COUNTS, file=counts_file,
                                          size=counts)
        self._dirs[ROOT] = sorted(root + views if list_views else root,
                                  key=lambda entry: entry[0])
        stats = Node(STATS, NodeType.STATS)
        self._fixed.update((node.ino, node) for _, node in views)
        for listing in self._dirs.values():
            self._fixed.update((node.ino, node) for _, node in listing)
        self._fixed.update((n.ino, n) for n in [*self._counts.values(), stats])
        self._by_name = {ino: dict(listing) for ino, listing in self._dirs.items()}
        # Found by name, listed or not: the views, and the mount's live counters.
        self._by_name[ROOT] = {**dict(root + views), STATS_NAME: stats}

    def _release_nodes(self) -> Listing:
        """The release's own files, with a node for each folder on their paths; returns the
        root's entries and keeps the folders' listings."""
        paths = dict(self.ds.release_files())
        for path in list(paths):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                paths.setdefault("/".join(parts[:depth]), -1)  # -1: a folder
        ino_of = {path: RELEASE_BASE + i for i, path in enumerate(sorted(paths))}
        root: Listing = []
        for path, size in paths.items():
            parent, _, name = path.rpartition("/")
            if size < 0:
                node = Node(ino_of[path], NodeType.RELEASE_DIR, file=path)
                self._dirs.setdefault(node.ino, [])
            else:
                node = Node(ino_of[path], NodeType.RELEASE_FILE, file=path, size=size)
            listing = self._dirs.setdefault(ino_of[parent], []) if parent else root
            listing.append((os.fsencode(name), node))
        for ino, listing in self._dirs.items():
            self._dirs[ino] = sorted(listing, key=lambda entry: entry[0])
        return root

    def _stray_nodes(self) -> dict[str, list[tuple[bytes, Node]]]:
        """Per JPEG folder, its other files: VG_100K/ also shows those of VG_100K_2/, as the
        merged folder that holds everything."""
        out: dict[str, list[tuple[bytes, Node]]] = {folder: [] for folder in IMAGE_DIRS}
        for i, (path, index) in enumerate(sorted(self.ds.strays.items())):
            folder, _, name = path.partition("/")
            node = Node(STRAY_BASE + i, NodeType.STRAY, file=path, size=index.size)
            out[folder].append((name.encode(), node))
            # The second part's files show in the merged folder too, unless it has its own.
            if folder == IMAGE_DIRS[1] and f"{IMAGE_DIRS[0]}/{name}" not in self.ds.strays:
                out[IMAGE_DIRS[0]].append((name.encode(), node))
            self._fixed[node.ino] = node
        for listing in out.values():
            listing.sort(key=lambda entry: entry[0])
        self._stray_by_name = {folder: dict(listing) for folder, listing in out.items()}
        return out

    def _jpeg_dir_has_files(self, folder: str) -> bool:
        db = "jpegs" if folder == IMAGE_DIRS[0] else "part2"
        return bool(self._strays[folder]) or self.ds.count(db) > 0

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
        record = self.ds.image(image_id)
        return None if record is None else _image_node(image_id, code, record)

    def reads_map(self, ino: int) -> bool:
        """Whether decoding `ino`, or a lookup or listing in it, may read LMDB's map, whose
        pages may have to come from storage: a view's (its databases are too big to hold in
        memory), and every one until the dataset holds its indexes (Dataset.hold)."""
        return ino >= NAME_BASE or VIEW_BASE <= ino < VIEW_BASE + len(VIEWS) or not self.ds.held

    def link_count(self, node: Node) -> int:
        """How many names a file has: a JPEG is images/<id>/image.jpg and VG_100K/<id>.jpg,
        and VG_100K_2/<id>.jpg too in the second part (lookup's rules)."""
        return 2 + self.ds.in_part2(node.image_id) if node.type is NodeType.JPEG else 1

    def lookup(self, parent: int, name: bytes) -> Node | None:
        """The node called `name` in directory `parent`, or None. Only canonical names exist."""
        if len(name) > NAME_MAX:
            raise NameTooLong
        if parent in self._by_name:  # the root and the release's folders
            return self._by_name[parent].get(name)
        if parent >= NAME_BASE:
            return self._lookup_view_name(parent, name)
        if parent >= IMAGE_BASE:
            image_id, code = divmod(parent - IMAGE_BASE, 16)
            index = _INDEX_OF_NAME.get(name)
            if code != CODE_DIR or index is None:
                return None
            return self.node(image_ino(image_id, index + 1))
        if VIEW_BASE <= parent < VIEW_BASE + len(VIEWS):
            return self._lookup_view(VIEWS[parent - VIEW_BASE], name)
        if parent == IMAGES:
            image_id = parse_id(name)
            exists = image_id is not None and self.ds.in_image_data(image_id)
            return _image_dir(image_id) if exists else None
        if parent == BY_ID:
            image_id = parse_id(name[:-5]) if name.endswith(b".json") else None
            return None if image_id is None else self.node(image_ino(image_id, CODE_BY_ID))
        if parent in (VG_100K, VG_100K_2):
            return self._lookup_jpeg(parent, name)
        return None

    def _lookup_view_name(self, parent: int, name: bytes) -> Node | None:
        node = self.node(parent)
        image_id = parse_id(name)
        if node is None or node.type is not NodeType.VIEW_NAME or image_id is None:
            return None
        return _view_link(image_id) if self.ds.view_has(node.view, node.key, image_id) else None

    def _lookup_jpeg(self, folder_ino: int, name: bytes) -> Node | None:
        image_id = _jpeg_id(name)
        if image_id is not None and (folder_ino == VG_100K or self.ds.in_part2(image_id)):
            node = self.node(image_ino(image_id, CODE_JPEG))
            if node is not None:
                return node
        return self._stray_by_name[IMAGE_DIRS[folder_ino - VG_100K]].get(name)

    def _lookup_view(self, view: str, name: bytes) -> Node | None:
        if name == b"counts.json":
            return self._counts.get(view)
        position = self.ds.view_position(view, name)
        if position is None:
            return None
        found = self.ds.view_name(view, position)
        return None if found is None else self._name_node(view, position, *found)

    def readdir(self, ino: int, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        """(name, node, next offset) for the entries after `offset`; resumes in O(log n)."""
        if ino in self._dirs:
            listing = self._dirs[ino]
            for i in range(offset, len(listing)):
                yield *listing[i], i + 1
        elif ino >= NAME_BASE:
            yield from self._readdir_view_name(ino, offset)
        elif ino >= IMAGE_BASE:
            yield from self._readdir_image(ino, offset)
        elif VIEW_BASE <= ino < VIEW_BASE + len(VIEWS):
            yield from self._readdir_view(VIEWS[ino - VIEW_BASE], offset)
        elif ino == IMAGES:
            # The offset is the last listed image id + 1, so resuming is one cursor seek.
            for image_id in self.ds.image_ids(after=offset - 1):
                yield b"%d" % image_id, _image_dir(image_id), image_id + 1
        elif ino == BY_ID:
            yield from self._readdir_images(offset, CODE_BY_ID, "images", b".json")
        elif ino in (VG_100K, VG_100K_2):
            yield from self._readdir_jpegs(ino, offset)

    def _readdir_view(self, view: str, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        """Offset 0 is counts.json; the name at position p has offset p + 1."""
        if offset == 0 and view in self._counts:
            yield b"counts.json", self._counts[view], 1
        if offset - 1 > MAX_POSITION:  # a seekdir past the last name
            return
        for position, key, count in self.ds.view_names(view, max(offset - 1, 0)):
            yield key, self._name_node(view, position, key, count), position + 2

    def _readdir_view_name(self, ino: int, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        node = self.node(ino)
        if node is None or node.type is not NodeType.VIEW_NAME:
            return
        for image_id in self.ds.view_images(node.view, node.key, after=offset - 1):
            yield str(image_id).encode(), _view_link(image_id), image_id + 1

    def _readdir_image(self, ino: int, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        if offset >= len(_LISTING):  # the call that finds the end: no record to read
            return
        image_id = (ino - IMAGE_BASE) // 16
        record = self.ds.image(image_id)
        if record is None:
            return
        for position in range(offset, len(_LISTING)):
            index = _LISTING[position]
            node = _image_node(image_id, index + 1, record)
            if node is not None:
                yield FILE_NAMES[index], node, position + 1

    def _readdir_images(self, offset: int, code: int, db: str,
                        suffix: bytes) -> Iterator[tuple[bytes, Node, int]]:
        """One file per image, named `<id><suffix>`, in id order from `offset` on."""
        for image_id in self.ds.image_ids(after=offset - 1, db=db):
            record = self.ds.image(image_id)
            node = None if record is None else _image_node(image_id, code, record)
            if node is not None:
                yield b"%d%s" % (image_id, suffix), node, image_id + 1

    def _readdir_jpegs(self, ino: int, offset: int) -> Iterator[tuple[bytes, Node, int]]:
        """A JPEG folder: its images' JPEGs in id order, then its other files."""
        if offset < _STRAYS_OFFSET:
            db = "jpegs" if ino == VG_100K else "part2"
            yield from self._readdir_images(offset, CODE_JPEG, db, b".jpg")
            offset = _STRAYS_OFFSET
        strays = self._strays[IMAGE_DIRS[ino - VG_100K]]
        for i in range(offset - _STRAYS_OFFSET, len(strays)):
            yield *strays[i], _STRAYS_OFFSET + i + 1
