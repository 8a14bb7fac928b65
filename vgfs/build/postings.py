"""The query views' postings (see query.py): noted during the annotation pass, spilled to sorted
run files as they grow, then merged into the views' databases and counts.json files."""

from __future__ import annotations

import heapq
import json
import shutil
import struct
import time
from array import array
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from vgfs import query
from vgfs.build.writer import COMMIT_EVERY, Writer
from vgfs.layout import ID, VIEW_FILE_PREFIX
from vgfs.release import Source
from vgfs.stream import read_whole

# Buffered postings are spilled to a sorted run file once they take about this much memory
# (8 bytes an image id, ~200 a name): a fixed buffer, whatever the release size, and few runs
# to merge. by-coco and by-flickr have a name per image.
SPILL_BYTES = 4 << 20
# The merge commits (and remaps) once this much is written, counting an id 1 and a name 16
# (~8 bytes and ~128): a few MB of dirty pages.
MERGE_COMMIT = COMMIT_EVERY * 50
_RUN_HEAD = struct.Struct("<HI")  # a run's record: key length, number of ids


class Postings:
    """(view, name) key -> image ids, for every name the annotation entries hold."""

    def __init__(self, folder: Path, sources: dict[str, Source]) -> None:
        self.folder = folder  # the run files, removed once merged
        self.object_aliases = _aliases(sources.get("object_alias.txt"), False)
        self.predicate_aliases = _aliases(sources.get("relationship_alias.txt"), True)
        self.objects_from = "objects" if "objects.json" in sources else "attributes"
        self.buffer: dict[bytes, array[int]] = {}  # not yet spilled
        self.buffered = 0  # image ids in `buffer`
        self.runs: list[Path] = []  # spilled so far, each sorted by key
        self.keys: dict[tuple[str, str], bytes] = {}  # (view, name) -> its escaped key
        self.seconds = 0.0  # spent noting and spilling, for the manifest

    def add(self, kind: str, image_id: int, entry: dict[str, Any]) -> None:
        """Note the image under each query-view name its entry holds."""
        start = time.perf_counter()
        keys = self.keys
        for pair in query.extract(kind, entry, self.object_aliases, self.predicate_aliases,
                                  self.objects_from):
            key = keys.get(pair)
            if key is None:
                key = query.key(pair[0], query.escape(pair[1]))
                if pair[0] not in query.LINK_VIEWS:  # names repeat: escape each once
                    keys[pair] = key
            ids = self.buffer.get(key)
            if ids is None:
                ids = self.buffer[key] = array("Q")
            ids.append(image_id)
            self.buffered += 1
        if self.buffered * 8 + len(self.buffer) * 200 >= SPILL_BYTES:
            self._spill()
        self.seconds += time.perf_counter() - start

    def _spill(self) -> None:
        """Write the buffer to a run file, sorted by key, and empty it. The runs are merged at
        the end, so the DUPSORT database is written by appends in key order: inserting into it
        as the pass goes touched more of its pages the bigger it grew, and the build's memory
        with them."""
        if not self.buffer:
            return
        path = self.folder / f"{len(self.runs):05}"
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            for key in sorted(self.buffer):
                ids = self.buffer[key]
                f.write(_RUN_HEAD.pack(len(key), len(ids)) + key)
                ids.tofile(f)
        self.runs.append(path)
        self.buffer.clear()
        self.buffered = 0

    def store(self, writer: Writer) -> dict[str, int]:
        """Merge the runs into the views' databases, in key order: each name's image ids, its
        position in its view (names are numbered in sorted order), and each view's
        counts.json. Returns each view's number of names."""
        self._spill()
        counts = [array("I") for _ in query.VIEWS]  # per view, each name's count by position
        merged = heapq.merge(*map(_read_run, self.runs), key=itemgetter(0))
        with writer.batch(MERGE_COMMIT, MERGE_COMMIT) as batch:
            for key, runs in groupby(merged, key=itemgetter(0)):
                ids = sorted({i for _, part in runs for i in part})
                view, name = query.VIEWS[key[0]], key[1:]
                position = len(counts[key[0]])
                batch.putmulti("view_ids", [(key, ID.pack(i)) for i in ids], dupdata=True,
                               append=True)
                batch.put("view_names", query.pos_key(view, position),
                          query.COUNT.pack(len(ids)) + name, append=True)
                batch.put("view_pos", key, query.POS.pack(position), append=True)
                counts[key[0]].append(len(ids))
                batch.done(len(ids) + 16)
        shutil.rmtree(self.folder, ignore_errors=True)
        for view, view_counts in zip(query.VIEWS, counts, strict=True):
            _store_counts(writer, view, view_counts)
        return {view: len(c) for view, c in zip(query.VIEWS, counts, strict=True)}


def _store_counts(writer: Writer, view: str, counts: array[int]) -> None:
    """A view's counts.json, name -> count, most frequent first, then by name: positions are in
    name order and the sort is stable. Written as it is read from the view's names, never held
    whole: by-coco has a name per image."""
    order = sorted(range(len(counts)), key=counts.__getitem__, reverse=True)
    names = writer.gets("view_names", (query.pos_key(view, p) for p in order))
    with writer.stored_file(f"{VIEW_FILE_PREFIX}{view}/counts.json") as out:
        out.write(b"{")
        for i, (position, raw) in enumerate(zip(order, names, strict=True)):
            name = raw[query.COUNT.size:].decode("utf-8", "surrogatepass")
            try:
                text = orjson.dumps(name)
            except TypeError:  # a lone surrogate, as a release's \ud800 escape gives
                text = json.dumps(name).encode()
            out.write((b"," if i else b"") + text + b":%d" % counts[position])
        out.write(b"}")


def _aliases(src: Source | None, fold: bool) -> dict[str, str]:
    return query.load_aliases(read_whole(src).decode(), fold) if src else {}


def _read_run(path: Path) -> Iterator[tuple[bytes, array[int]]]:
    """A run's (key, image ids) in key order."""
    with open(path, "rb", buffering=1 << 16) as f:
        while head := f.read(_RUN_HEAD.size):
            size, count = _RUN_HEAD.unpack(head)
            key, ids = f.read(size), array("Q")
            ids.fromfile(f, count)
            yield key, ids
