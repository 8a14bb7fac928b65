"""Each node's bytes and exact size: ranges of the release's own files, the files composed
from them (compose.py), README.txt, and JPEGs (through backend.py).

`read_now` is what the adapter calls on its event loop: it serves what needs no wait for
storage and says None for the rest, which `read` then serves in a worker thread. Python callers
use the same two calls. What costs work to make (a composed file, pretty JSON) is made once and
kept in the LRU while it stays hot; stored frames are kept there too (dataset.py).
"""

from __future__ import annotations

import textwrap
from typing import Any

from vgfs import compose
from vgfs.backend import Backend, Buffer
from vgfs.cache import LRUCache
from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.frames import WouldBlock
from vgfs.layout import KINDS, JpegIndex
from vgfs.tree import Node, NodeType

_FILES = (NodeType.RELEASE_FILE, NodeType.COUNTS)
_JPEGS = (NodeType.JPEG, NodeType.STRAY)
_PER_IMAGE = (NodeType.RECORD, NodeType.BY_ID_FILE)


class Contents:
    def __init__(self, dataset: Dataset, cache: LRUCache, pretty: bool = False) -> None:
        self.ds, self.cache, self.pretty = dataset, cache, pretty
        self.backend = Backend(dataset, cache)
        self._readme = readme_text(dataset.manifest).encode()

    def size(self, node: Node) -> int | None:
        """Exact st_size of a file or symlink: what a read from 0 to EOF returns; None for a
        pretty file too damaged to make (its reads fail, but its directory still lists)."""
        if node.type is NodeType.README:
            return len(self._readme)
        if self.pretty and node.type in _PER_IMAGE:
            try:
                return len(self._made(node))
            except VGFSError:
                return None
        return node.size

    def read_now(self, node: Node, off: int, size: int) -> Buffer | None:
        """Bytes [off, off+size) of a file, or None if serving them would wait for storage,
        as a read of LMDB's map might until the dataset holds its indexes."""
        if not self.ds.held:
            return None
        if node.type in _JPEGS:
            return self.backend.jpeg_now(node.ino, self._jpeg_index(node), _name(node), off,
                                         size)
        try:
            with self.ds.nowait():
                return self.read(node, off, size)
        except WouldBlock:
            return None

    def read(self, node: Node, off: int, size: int) -> Buffer:
        """The same bytes as `read_now`, waiting for storage if need be. Raises VGFSError
        when the backing data is damaged."""
        if node.type in _JPEGS:
            return self.backend.jpeg(node.ino, self._jpeg_index(node), _name(node), off, size)
        self.backend.counters["lmdb_reads"] += 1
        if node.type in _FILES:
            return self.ds.file_range(node.file, off, size)
        if node.type is NodeType.RECORD and not self.pretty and self.ds.stores(node.kind):
            return self._entry_range(node, off, size)
        data = self._readme if node.type is NodeType.README else self._made(node)
        return memoryview(data)[off:off + size]

    def _jpeg_index(self, node: Node) -> JpegIndex:
        index = (self.ds.strays.get(node.file) if node.type is NodeType.STRAY
                 else self.ds.jpeg_index(node.image_id))
        if index is None:
            raise VGFSError(f"image {node.image_id}: JPEG vanished from the index")
        return index

    def _entry_range(self, node: Node, off: int, size: int) -> Buffer:
        """Part of an image's entry, straight from the frames that hold it."""
        record = self.ds.image(node.image_id)
        if record is None:
            raise VGFSError(f"image {node.image_id}: vanished from the index")
        start, length = record.ranges[KINDS.index(node.kind)]
        size = max(0, min(size, length - off))
        return self.ds.range(self.ds.kind_file(node.kind), start + off, size)

    def _made(self, node: Node) -> bytes:
        """A per-image file that is composed or indented: made once, kept in the LRU."""
        return self.cache.get_or_make(node.ino, lambda: self._make(node))

    def _make(self, node: Node) -> bytes:
        if node.type is NodeType.BY_ID_FILE:
            data = self.ds.by_id_bytes(node.image_id)
        elif node.kind == "graph":
            data = self.ds.graph_bytes(node.image_id)
        else:
            data = self.ds.entry_bytes(node.kind, node.image_id)
        if data is None:
            raise VGFSError(f"image {node.image_id}: {node.kind} entry vanished")
        return _pretty(data, node) if self.pretty else bytes(data)


def _name(node: Node) -> str:
    """What an error calls a JPEG: its image, or a stray file's path."""
    return node.file if node.type is NodeType.STRAY else f"image {node.image_id}"


def _pretty(data: Buffer, node: Node) -> bytes:
    try:
        return compose.dumps(compose.loads(data), indent=True) + b"\n"
    except ValueError as e:
        raise VGFSError(f"image {node.image_id}: {node.kind} entry is corrupt ({e})") from e


def readme_text(manifest: dict[str, Any]) -> str:
    """README.txt at the mount root: what this is, its versions and counts, licence, citation.
    It names only the files and views that this dataset has."""
    counts = manifest.get("counts", {})
    kinds = manifest.get("kinds", {})
    held = ["its JPEG (image.jpg)"] if counts.get("jpegs") else []
    if kinds:
        held.append("its annotations as JSON: " + ", ".join(
            f"{k}.json (scene graph)" if k == "graph" else f"{k}.json" for k in kinds))
    intro = ("This folder is the release folder, byte for byte: every file of the release at"
             " its own path, as released (a *.json.zip shows as its JSON).")
    if counts.get("jpegs"):
        intro += (" VG_100K/ holds every JPEG of both parts (the merged folder), VG_100K_2/ the"
                  " second part as released, with whatever else sat in those folders.")
    intro += " Each image is also a directory images/<image_id>/"
    intro += f" holding {' and '.join(held)}." if held else "."
    if kinds:
        intro += " Each JSON file holds the image's entry of the official release file."
    if "graph" in kinds:
        intro += (" by-id/<image_id>.json is what the official visual_genome driver's own"
                  " preprocessing writes (add_attrs_to_scene_graphs, save_scene_graphs_by_id).")
    lines = ["Visual Genome, mounted by vgfs", "",
             *textwrap.wrap(intro + " The mount is read-only.", 88), "",
             f"Images: {counts.get('images', 0)}, with a JPEG: {counts.get('jpegs', 0)}", "",
             "Sources (file, detected version, entries):"]
    for name, src in sorted(manifest.get("sources", {}).items()):
        version = f"v{src['version']}" if src["version"] != "unknown" else "-"
        lines.append(f"  {name:28} {version:9} {src['entries']}")
    graph = kinds.get("graph")
    if graph and graph.get("version") == "composed":
        lines.append(f"  graph.json is {graph['source']}.")
    views = {v: n for v, n in manifest.get("views", {}).items() if n}
    if views:
        rules = {
            "by-object/": "every name of every object (objects.json), raw, and also under its"
                          " canonical name from object_alias.txt where that differs",
            "by-attribute/": "every attribute of attributes.json, raw",
            "by-predicate/": "every predicate, case-folded, and also under its canonical form"
                             " from relationship_alias.txt where that differs",
            "by-synset/": "every object synset",
            "by-coco/<id>": "a symlink to the image of that COCO id",
            "by-flickr/<id>": "a symlink to the image of that Flickr id",
        }
        described = [line for label, rule in rules.items() if label.split("/")[0] in views
                     for line in textwrap.wrap(rule, 88, initial_indent=f"  {label:15} ",
                                               subsequent_indent=" " * 18)]
        lines += [
            "",
            "Query views, not listed here so that walks of the mount (find, du, updatedb) see",
            "only the dataset, but there by name: ls <view>/<name>, cd <view>, ...",
            "<view>/<name>/<image_id> are symlinks to images/<image_id>; each view's",
            "counts.json maps name -> number of images, most frequent first, and a name",
            "directory's st_size is its number of images. Mount with -o list_views to list",
            "them here.",
            *described,
            "Names are file names by one reversible escaping: % -> %25, / -> %2F, NUL -> %00,",
            "the dots of '.', '..' and 'counts.json' -> %2E, the empty name -> %. Spaces and",
            "quotes stay. Names over 255 bytes are cut and end in %~ and 16 hex digits of their",
            "SHA-256.",
            "Names per view: " + ", ".join(f"{v} {n}" for v, n in views.items()),
        ]
    lines += [
        "",
        f"Built by {manifest.get('tool', 'vgfs')} on {manifest.get('built', '?')}.",
        "",
        "Licence: Visual Genome is distributed under the Creative Commons Attribution 4.0",
        "International licence (CC BY 4.0): https://creativecommons.org/licenses/by/4.0/",
        "",
        "Cite: Ranjay Krishna, Yuke Zhu, Oliver Groth, Justin Johnson, Kenji Hata, Joshua",
        "Kravitz, Stephanie Chen, Yannis Kalantidis, Li-Jia Li, David A. Shamma, Michael S.",
        "Bernstein, Li Fei-Fei. Visual Genome: Connecting Language and Vision Using",
        "Crowdsourced Dense Image Annotations. IJCV 123, 32-73 (2017).",
        "doi:10.1007/s11263-016-0981-7",
        "",
    ]
    return "\n".join(lines)

