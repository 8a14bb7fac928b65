"""The JPEG pipeline: the release's JPEGs packed into images.sqfs with mksquashfs, or a site's
existing image taken as it is, and each JPEG's extent and checksums indexed in `jpegs`."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from isal.isal_zlib import crc32

from vgfs.build.sizes import Sizes, size_field
from vgfs.build.writer import Writer
from vgfs.errors import VGFSError
from vgfs.layout import ABSENT, ID, JPEG_INDEX
from vgfs.progress import progress, warn
from vgfs.release import ImageSources, find_images, folder_jpegs, zip_jpegs
from vgfs.schema import JPEG_NAME
from vgfs.squashfs import FileEntry, SquashFSError, SquashFSImage

# -no-duplicates: comparing every file with every other costs 4x the packing time and a
# quarter of mksquashfs's memory, to save the odd duplicate JPEG.
MKSQUASHFS_OPTS = ("-noD", "-no-fragments", "-no-sparse", "-no-duplicates", "-noappend",
                   "-no-xattrs", "-all-root", "-mem", "256M")
READ_CHUNK = 1 << 20


@dataclass
class Images:
    """The images phase's results."""

    record: dict[str, Any]  # the manifest's "images"
    counts: dict[str, int]  # the manifest's "counts"
    digest: str | None  # the index's checksum; None when there was no image to index
    sizes: array[int]  # each image's JPEG size (ABSENT where it has none), by row of Sizes


def store_images(writer: Writer, release: Path, paths: list[Path], table: Sizes, tmp: Path,
                 show: bool) -> Images:
    """Find the JPEGs (`paths`, by default the release's), pack them into `tmp`/images.sqfs or
    take an existing image, and index them for the images of image_data.json (`table`)."""
    found = find_images(release, paths)
    if found.sqfs is None:
        image = _pack(writer, found, tmp / "staging", tmp / "images.sqfs", show)
        how: dict[str, Any] = {"built_with": "mksquashfs " + " ".join(MKSQUASHFS_OPTS)}
    else:
        image = found.sqfs.absolute()  # referenced in place, never copied
        slow = _index_image(writer, image, None, show)
        how = {"built_with": "existing image, indexed in place", "slow_path": slow}
    counts, digest, sizes = _count(writer, table)
    if image is None:
        return Images({"path": None, "jpegs": 0}, counts, None, sizes)
    path = image.name if found.sqfs is None else str(image)  # ours sits in the dataset folder
    record = {"path": path, "jpegs": counts["jpegs"], "size": image.stat().st_size, **how}
    return Images(record, counts, digest, sizes)


def _pack(writer: Writer, found: ImageSources, stage: Path, image: Path,
          show: bool) -> Path | None:
    """Pack the folders' and the zips' JPEGs (these extracted into `stage`) into `image` and
    index it; None, and no image, if there are no JPEGs."""
    jpegs = _SourceJpegs()
    for folder in found.folders:
        jpegs.add(folder, folder_jpegs(folder))
    for zpath in found.zips:
        _extract_zip(zpath, jpegs, stage / f"zip{len(jpegs.folders)}", show)
    if not len(jpegs):
        return None
    _mksquashfs([folder for folder, _ in jpegs.folders], image, show)
    # The check reads the extracted JPEGs, so the staging folder goes only after it.
    _index_image(writer, image, jpegs, show)
    shutil.rmtree(stage, ignore_errors=True)
    return image


class _SourceJpegs:
    """Where each source JPEG is, at 8 bytes an image: each folder with the sorted ids of its
    <id>.jpg files. A dict of paths grew the build by ~200 bytes an image."""

    def __init__(self) -> None:
        self.folders: list[tuple[Path, array[int]]] = []

    def __len__(self) -> int:
        return sum(len(ids) for _, ids in self.folders)

    def path(self, image_id: int) -> str | None:
        for folder, ids in self.folders:
            i = bisect_left(ids, image_id)
            if i < len(ids) and ids[i] == image_id:
                return os.path.join(folder, f"{image_id}.jpg")
        return None

    def add(self, folder: Path, ids: array[int],
            source: Callable[[int], str] | None = None) -> None:
        """Add a folder's sorted ids; an id already in another folder is an error, which names
        the JPEG by `source(id)` (a zip's member, before it is extracted into `folder`)."""
        for image_id in ids:
            other = self.path(image_id)
            if other is not None:
                where = source(image_id) if source else folder / f"{image_id}.jpg"
                raise VGFSError(f"{where}: image {image_id} also at {other}")
        self.folders.append((folder, ids))

    def check(self, image_id: int, sha256: bytes, what: str) -> None:
        """`what` (bytes of the image) must be the source JPEG of `image_id`."""
        source = self.path(image_id)
        if source is None or _sha256_file(source) != sha256:
            raise VGFSError(f"{what} differ from {source or 'every source JPEG'}")


def _extract_zip(zpath: Path, jpegs: _SourceJpegs, dest: Path, show: bool) -> None:
    """Unpack a zip's JPEGs under names we choose, so no member path is ever trusted."""
    members = list(zip_jpegs(zpath))
    ids = array("Q", sorted(image_id for image_id, _ in members))
    for a, b in pairwise(ids):
        if a == b:
            twice = [m for i, m in members if i == a]
            raise VGFSError(f"{zpath}:{twice[1]}: image {a} also at {zpath}:{twice[0]}")
    member_of = dict(members)
    jpegs.add(dest, ids, lambda image_id: f"{zpath}:{member_of[image_id]}")
    dest.mkdir(parents=True)
    with progress(f"extracting {zpath.name}", len(members), "img", show) as bar, \
            zipfile.ZipFile(zpath) as zf:
        for image_id, member in members:
            with zf.open(member) as src, open(dest / f"{image_id}.jpg", "wb") as dst:
                shutil.copyfileobj(src, dst, READ_CHUNK)
            bar.update()


def _mksquashfs(folders: list[Path], image: Path, show: bool) -> None:
    if shutil.which("mksquashfs") is None:
        raise VGFSError("mksquashfs: not found; install squashfs-tools")
    tty = show and sys.stderr.isatty()
    # Resolved: given a symlink to a folder, mksquashfs would pack the link itself.
    cmd = ["mksquashfs", *(str(f.resolve()) for f in folders), str(image), *MKSQUASHFS_OPTS]
    if not tty:
        cmd.append("-no-progress")
    print(f"packing JPEGs into {image.name} with mksquashfs", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=sys.stderr if tty else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise VGFSError(f"{image}: mksquashfs failed: {lines[-1]}")


def _index_image(writer: Writer, image: Path, jpegs: _SourceJpegs | None, show: bool) -> int:
    """Record each JPEG's extent in the image, checking that those bytes are that JPEG: the
    source file's when `jpegs` names the sources, else what the image holds. Returns how many
    JPEGs are off the fast path (not one run of the image)."""
    try:
        sq = SquashFSImage(image)
    except SquashFSError as e:
        raise VGFSError(str(e)) from e
    slow = indexed = 0
    fd = os.open(image, os.O_RDONLY)
    buf = bytearray(READ_CHUNK)  # reused: a fresh buffer per JPEG fragments the heap
    total = len(jpegs) if jpegs is not None else None
    try:
        with sq, writer.batch() as batch, progress("indexing JPEGs", total, "img", show) as bar:
            for entry in sq.walk():  # streamed: nothing per image is kept but its id
                image_id = _jpeg_id(image, entry)
                if image_id is None:
                    continue  # other files a site keeps beside the JPEGs
                value, sha = _index_record(sq, fd, buf, image, entry)
                if jpegs is not None:
                    jpegs.check(image_id, sha, f"{image}: bytes at {entry.path}")
                if not batch.put("jpegs", ID.pack(image_id), value, overwrite=False):
                    raise VGFSError(f"{image}: image {image_id} is there twice")
                indexed += 1
                slow += len(value) > JPEG_INDEX.size  # a path follows: off the fast path
                bar.update()
                batch.done()
    except SquashFSError as e:
        raise VGFSError(str(e)) from e
    finally:
        os.close(fd)
    if jpegs is not None and indexed != len(jpegs):
        raise VGFSError(f"{image}: holds {indexed} JPEGs, expected {len(jpegs)}")
    return slow


def _jpeg_id(image: Path, entry: FileEntry) -> int | None:
    """The image id a file of the image is the JPEG of; None for a file that is no JPEG."""
    base = entry.path.rsplit("/", 1)[-1]
    m = JPEG_NAME.fullmatch(base)
    if m is None and base.lower().endswith(".jpg"):
        raise VGFSError(f"{image}: {entry.path} is not named <image_id>.jpg")
    return None if m is None else int(m[1])


def _index_record(sq: SquashFSImage, fd: int, buf: bytearray, image: Path,
                  entry: FileEntry) -> tuple[bytes, bytes]:
    """A JPEG's JPEG_INDEX record and its SHA-256. One run of the image is read straight from
    `fd`; any other JPEG is read through the image, and its record ends in its path."""
    extent = entry.extent()
    if extent is None:
        data = sq.read(entry)
        sha, crc = hashlib.sha256(data).digest(), crc32(data)
        offset, path = 0, entry.path.encode()
    else:
        digests = _digest_range(fd, *extent, buf)
        if digests is None:
            raise VGFSError(f"{image}: truncated at {entry.path}")
        (sha, crc), offset, path = digests, extent[0], b""
    return JPEG_INDEX.pack(offset, entry.size, sha, crc) + path, sha


def _count(writer: Writer, table: Sizes) -> tuple[dict[str, int], str, array[int]]:
    """Images without a JPEG and JPEGs without an image, from the index in id order; each
    image's JPEG size; and the index's digest, in id order whatever order the image stores the
    files in."""
    digest = hashlib.sha256()
    sizes = array("I", [ABSENT]) * len(table)
    have = orphans = 0
    first_orphans: list[int] = []
    for key, value in writer.scan("jpegs"):
        digest.update(key + value)
        image_id = ID.unpack(key)[0]
        have += 1
        row = table.index(image_id)
        if row is not None:
            sizes[row] = size_field(image_id, JPEG_INDEX.unpack_from(value)[1])
        else:
            orphans += 1
            if len(first_orphans) < 5:
                first_orphans.append(image_id)
    without = len(table) - (have - orphans)
    if without and have:
        warn(f"{without} images of image_data.json have no JPEG")
    if orphans:
        warn(f"{orphans} JPEGs have no entry in image_data.json (first: {first_orphans});"
             " stored, but not shown in the mount")
    counts = {"images": len(table), "jpegs": have, "images_without_jpeg": without,
              "jpegs_without_annotations": orphans}
    return counts, digest.hexdigest(), sizes


def _sha256_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _digest_range(fd: int, offset: int, size: int, buf: bytearray) -> tuple[bytes, int] | None:
    """SHA-256 and CRC-32 of `size` bytes at `offset`, read into `buf`; None if the file ends
    first."""
    h, crc, view = hashlib.sha256(), 0, memoryview(buf)
    while size:
        n = os.preadv(fd, [view[:min(size, len(buf))]], offset)
        if n == 0:
            return None
        h.update(view[:n])
        crc = crc32(view[:n], crc)
        offset, size = offset + n, size - n
    return h.digest(), crc
