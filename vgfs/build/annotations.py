"""The release's annotation files into LMDB: each per-image file's entries under their image id,
a graph composed where there is no scene_graphs.json, and the whole-dataset files as released."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
from isal.isal_zlib import crc32

from vgfs.build.sizes import Sizes
from vgfs.build.writer import COMMIT_EVERY, Writer
from vgfs.contents import compose_graph
from vgfs.errors import VGFSError
from vgfs.layout import ID, KINDS, sum_key
from vgfs.progress import progress, warn
from vgfs.release import Source, stream_entries, stream_whole
from vgfs.schema import PER_IMAGE, WHOLE_FILES

# Called with (kind, image id, entry) for each entry of an image of image_data.json.
Index = Callable[[str, int, dict[str, Any]], object]


def store_annotations(writer: Writer, sources: dict[str, Source], index: Index,
                      show: bool) -> tuple[dict[str, dict[str, Any]], Sizes, dict[str, str]]:
    """Store every per-image file of the release; return each kind's manifest record, the
    images with their files' sizes, and each kind's checksum."""
    sizes = Sizes()
    kinds: dict[str, dict[str, Any]] = {}
    digests: dict[str, str] = {}
    for kind in KINDS:
        src = sources.get(PER_IMAGE[kind][0] + ".json")
        if src is not None:
            kinds[kind], digests[kind] = _store_kind(writer, kind, src, sizes, index, show)
    if "graph" not in kinds and {"objects", "attributes", "relationships"} & kinds.keys():
        kinds["graph"], digests["graph"] = _compose_graphs(writer, kinds, sizes, show)
    return kinds, sizes, digests


def _store_kind(writer: Writer, kind: str, src: Source, sizes: Sizes, index: Index,
                show: bool) -> tuple[dict[str, Any], str]:
    """One per-image file; image_data.json (the first) makes the rows of `sizes`."""
    unknown: list[int] = []
    known = 0
    digest = hashlib.sha256()
    with writer.batch() as batch, progress(src.name, src.size_hint(), "B", show) as bar:
        for image_id, entry, data in stream_entries(src, kind, bar.update):
            key = ID.pack(image_id)
            if not batch.put(kind, key, data, overwrite=False):
                raise VGFSError(f"{src.label}: image id {image_id} appears twice")
            row = sizes.add(image_id) if kind == "meta" else sizes.index(image_id)
            if row is None:
                unknown.append(image_id)
            else:
                known += 1
                sizes.set(row, kind, len(data))
                index(kind, image_id, entry)
            batch.put("sums", sum_key(kind, image_id), _crc(data))
            digest.update(key)
            digest.update(data)
            batch.done()
    if kind == "meta":
        sizes.freeze()
    missing = len(sizes) - known
    if unknown:
        warn(f"{src.label}: {len(unknown)} entries for image ids not in image_data.json"
             f" (first: {unknown[:5]}); stored, but not shown in the mount")
    if missing:
        warn(f"{src.label}: no entry for {missing} images of image_data.json")
    return {"source": src.name, "version": src.version, "entries": known + len(unknown),
            "unknown_ids": len(unknown), "missing_images": missing}, digest.hexdigest()


def _compose_graphs(writer: Writer, kinds: dict[str, dict[str, Any]], sizes: Sizes,
                    show: bool) -> tuple[dict[str, Any], str]:
    """scene_graphs.json is absent: compose each image's graph from the other sources."""
    digest = hashlib.sha256()
    used = ("attributes", "objects", "relationships")
    n = 0
    with writer.batch(COMMIT_EVERY, COMMIT_EVERY) as batch, \
            progress("graph.json (composed)", len(sizes), "img", show) as bar:
        for row, image_id in enumerate(sizes.ids):
            key = ID.pack(image_id)
            graph = compose_graph(image_id, *(_load(batch.get(k, key)) for k in used))
            if graph is not None:
                data = orjson.dumps(graph)
                batch.put("graph", key, data)
                batch.put("sums", sum_key("graph", image_id), _crc(data))
                digest.update(key + data)
                sizes.set(row, "graph", len(data))
                n += 1
            bar.update()
            batch.done()
    source = "composed from " + ", ".join(k for k in used if k in kinds)
    return {"source": source, "version": "composed", "entries": n, "unknown_ids": 0,
            "missing_images": len(sizes) - n}, digest.hexdigest()


def store_whole_files(writer: Writer, sources: dict[str, Source]) -> list[str]:
    """Store the release's whole-dataset files as released; return their names."""
    stored = []
    for name in WHOLE_FILES:
        src = sources.get(name)
        if src is not None:
            with writer.whole_file(name) as out:
                stream_whole(src, out.write)
            stored.append(name)
    return stored


def _load(raw: bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _crc(data: bytes) -> bytes:
    return crc32(data).to_bytes(4, "big")
