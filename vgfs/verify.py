"""`vgfs verify`: read everything a dataset stores and check it against its checksums,
reporting every mismatch: one damaged frame or JPEG never hides the next."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.layout import ABSENT, FRAME, KINDS, JpegIndex
from vgfs.squashfs import SquashFSError


def verify(ds: Dataset, report: Callable[[str], None],
           on_progress: Callable[[int], object] | None = None) -> int:
    """Decompress every stored frame (zstd checks each against its checksum), compare every
    stored file with the manifest's sha256, check every image's ranges, and read every JPEG
    against its sha256. Calls `report` once per mismatch; returns how many there were.
    `on_progress(n)` counts frames and JPEGs."""
    problems = 0
    for problem in _problems(ds, on_progress or (lambda n: None)):
        problems += 1
        report(problem)
    return problems


def work(ds: Dataset) -> int:
    """How many units `verify` reports progress in: frames and JPEGs."""
    frames = sum(-(-size // FRAME) for _, size in ds.files.values())
    return frames + ds.manifest.get("counts", {}).get("jpegs", 0) + len(ds.strays)


def _problems(ds: Dataset, progress: Callable[[int], object]) -> Iterator[str]:
    sources = ds.manifest.get("sources", {})
    for path, (file_no, size) in sorted(ds.files.items()):
        digest, whole = hashlib.sha256(), True
        for off in range(0, size, FRAME):  # on past a damaged frame, to report the others
            try:
                digest.update(ds.range(file_no, off, min(FRAME, size - off)))
            except VGFSError as e:
                yield str(e)
                whole = False
            progress(1)
        want = sources.get(path, {}).get("sha256")
        if whole and want is not None and digest.hexdigest() != want:
            yield f"{path}: does not match the manifest's sha256"
    damaged = ds.check_pages()  # before any cursor walks them
    yield from damaged.values()
    if "images" not in damaged:
        yield from _bad_ranges(ds)
    yield from _bad_jpegs(ds, damaged, progress)
    for path, index in sorted(ds.strays.items()):
        yield from _bad_jpeg(ds, path, index)
        progress(1)


def _bad_ranges(ds: Dataset) -> Iterator[str]:
    """Every image's entries lie inside their source files."""
    sources = {kind: ds.manifest["kinds"][kind]["source"] for kind in ds.kinds}
    sizes = {kind: ds.files[path][1] for kind, path in sources.items() if path in ds.files}
    for image_id in ds.image_ids():
        record = ds.image(image_id)
        for kind, (offset, length) in zip(KINDS, record.ranges, strict=True):
            if length != ABSENT and (kind not in sizes or offset + length > sizes[kind]):
                yield f"image {image_id}: its {kind} entry lies outside its source file"


def _bad_jpegs(ds: Dataset, damaged: dict[str, str], progress: Callable[[int], object]
               ) -> Iterator[str]:
    """Every JPEG against its sha256. Where the JPEG index is damaged, each image's JPEG is
    looked up on its own: the lookups that reach a whole page still find theirs."""
    if "jpegs" not in damaged:
        ids = ds.image_ids(db="jpegs")
    elif "images" not in damaged:
        ids = ds.image_ids()
    else:
        return
    for image_id in ids:
        progress(1)
        try:
            index = ds.jpeg_index(image_id)
        except VGFSError as e:
            yield f"image {image_id}: {e}"
            continue
        if index is not None or "jpegs" not in damaged:
            yield from _bad_jpeg(ds, f"image {image_id}", index)


def _bad_jpeg(ds: Dataset, what: str, index: JpegIndex | None) -> Iterator[str]:
    if index is None:
        yield f"{what}: JPEG vanished from the index"
        return
    try:
        data = ds.image_bytes(index, what)
    except (OSError, VGFSError, SquashFSError) as e:
        yield f"{what}: JPEG unreadable: {e}"
        return
    if hashlib.sha256(data).digest() != index.sha256:
        yield f"{what}: JPEG bytes in {ds.images_path.name} do not match their sha256"
