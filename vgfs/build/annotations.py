"""The release's files into the dataset, once each, in their own bytes: every per-image file is
stored whole while each entry's range is noted for its image; then the sizes of the files
composed from those ranges (graph.json without scene_graphs.json, by-id/); then every other
file of the release folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vgfs import compose
from vgfs.build.table import ImageTable
from vgfs.build.writer import Writer
from vgfs.errors import VGFSError
from vgfs.layout import ABSENT, KINDS
from vgfs.progress import progress, warn
from vgfs.release import Source
from vgfs.schema import PER_IMAGE
from vgfs.stream import stream_entries, stream_whole
from vgfs.tree import MAX_IMAGE_ID

# Called with (kind, image id, entry) for each entry of an image of image_data.json.
Index = Callable[[str, int, dict[str, Any]], object]


def store_annotations(writer: Writer, sources: dict[str, Source], index: Index,
                      show: bool) -> tuple[dict[str, dict[str, Any]], ImageTable]:
    """Store every per-image file of the release; return each kind's manifest record and the
    images' table with their entries' ranges."""
    table = ImageTable()
    kinds: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        src = sources.get(PER_IMAGE[kind][0] + ".json")
        if src is not None:
            kinds[kind] = _store_kind(writer, kind, src, table, index, show)
    return kinds, table


def _store_kind(writer: Writer, kind: str, src: Source, table: ImageTable, index: Index,
                show: bool) -> dict[str, Any]:
    """One per-image file; image_data.json (the first) makes the rows of `table`."""
    unknown: set[int] = set()
    known = attributes = 0
    with writer.stored_file(src.name) as out, \
            progress(src.name, src.size_hint(), "B", show) as bar:
        for entry in stream_entries(src, kind, bar.update, out.write):
            if kind == "meta" and entry.image_id > MAX_IMAGE_ID:
                raise VGFSError(f"{src.label}: image id {entry.image_id} is larger than vgfs"
                                f" can number ({MAX_IMAGE_ID})")
            row = table.add(entry.image_id) if kind == "meta" else table.index(entry.image_id)
            if row is None:
                if entry.image_id in unknown:
                    raise VGFSError(f"{src.label}: image id {entry.image_id} appears twice")
                unknown.add(entry.image_id)
            else:
                if table.length(row, kind) != ABSENT:
                    raise VGFSError(f"{src.label}: image id {entry.image_id} appears twice")
                known += 1
                table.set_range(row, kind, entry.offset, entry.length)
                index(kind, entry.image_id, entry.value)
            if kind == "attributes":  # the driver numbers attributes across the whole file
                if row is not None:
                    table.set(row, "attr_base", attributes)
                attributes += len(entry.value.get("attributes") or ())
    if kind == "meta":
        table.freeze()
        twice = next((a for a, b in zip(table.ids, table.ids[1:], strict=False) if a == b), None)
        if twice is not None:
            raise VGFSError(f"{src.label}: image id {twice} appears twice")
    missing = len(table) - known
    if unknown:
        warn(f"{src.label}: {len(unknown)} entries for image ids not in image_data.json"
             f" (first: {sorted(unknown)[:5]}); kept in the file, but no image shows them")
    if missing:
        warn(f"{src.label}: no entry for {missing} images of image_data.json")
    return {"source": src.name, "version": src.version, "entries": known + len(unknown),
            "unknown_ids": len(unknown), "missing_images": missing}


def store_composed(writer: Writer, kinds: dict[str, dict[str, Any]], table: ImageTable,
                   show: bool) -> dict[str, Any] | None:
    """The size of each image's graph.json (composed when the release has no
    scene_graphs.json) and by-id/<id>.json, made here exactly as the mount makes them; returns
    the composed graph's manifest record, None when the release has scene_graphs.json."""
    stored = "graph" in kinds
    file_of = {kind: writer.file_no(kinds[kind]["source"]) for kind in kinds}
    used = [k for k in ("attributes", "objects", "relationships") if k in kinds]
    if not stored and not used:
        return None
    graphs = 0
    with writer.reading() as frames, progress("graph.json, by-id", len(table), "img",
                                              show) as bar:
        for row, image_id in enumerate(table.ids):
            record = table.record(row)

            def entry(kind: str, record: Any = record) -> compose.Buffer | None:
                offset, length = record.ranges[KINDS.index(kind)]
                if kind not in file_of or length == ABSENT:
                    return None
                return frames.range(file_of[kind], offset, length)

            graph = compose.graph_of(image_id, entry, stored)
            if graph is not None:
                graphs += 1
                table.set(row, "graph_size", len(graph))
                by_id = compose.by_id(graph, entry("attributes"), record.attr_base)
                table.set(row, "by_id_size", len(by_id))
            bar.update()
    if stored:
        return None
    return {"source": "composed from " + ", ".join(used), "version": "composed",
            "entries": graphs, "unknown_ids": 0, "missing_images": len(table) - graphs}


def store_files(writer: Writer, files: list[Source], show: bool) -> None:
    """Every other file of the release folder, as it is; the known ones are checked as they
    pass (well-formed JSON, UTF-8 alias files)."""
    with progress("other files", sum(src.size_hint() for src in files), "B", show) as bar:
        for src in files:
            with writer.stored_file(src.name) as out:
                stream_whole(src, out.write, bar.update)
