"""The JPEG pipeline: the release's JPEG folders and zips packed into images.sqfs with
mksquashfs, or a site's existing image taken as it is; each image's JPEG indexed in `jpegs`
(and `part2` for those of VG_100K_2), and every other file of the JPEG folders in `strays`, to
be served where it was (DESIGN §2.3).

`survey` runs before the annotation pass, so that a problem with the JPEG folders shows at
once; `store_images` runs after it, when the set of images is known.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import signal
import subprocess
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isal.isal_zlib import crc32

from vgfs.build.table import ImageTable
from vgfs.build.writer import Writer
from vgfs.errors import VGFSError
from vgfs.layout import ID, JPEG_INDEX
from vgfs.progress import progress, warn
from vgfs.release import ImageSources, find_images, folder_files, part_of, zip_files
from vgfs.schema import IMAGE_DIRS, JPEG_NAME
from vgfs.squashfs import FileEntry, SquashFSError, SquashFSImage
from vgfs.tree import MAX_IMAGE_ID

# -no-duplicates: comparing every file with every other costs 4x the packing time and a
# quarter of mksquashfs's memory, to save the odd duplicate JPEG.
MKSQUASHFS_OPTS = ("-noD", "-no-fragments", "-no-sparse", "-no-duplicates", "-noappend",
                   "-no-xattrs", "-all-root", "-mem", "256M")
READ_CHUNK = 1 << 20
_prctl = ctypes.CDLL(None).prctl  # looked up here: the child only calls it
_PR_SET_PDEATHSIG = 1
_JPEG_MAGIC = b"\xff\xd8\xff"  # every JPEG starts with SOI and a marker


@dataclass
class Survey:
    """The JPEG sources, and where each file of theirs will sit in the image."""

    found: ImageSources
    # The image's top-level folders, each with the mount's JPEG folder for its files.
    parts: dict[str, str] = field(default_factory=dict)
    # Each <id>.jpg's source, to find two of one id; a folder's, to check the packed bytes.
    sources: dict[int, str] = field(default_factory=dict)
    files: dict[int, Path] = field(default_factory=dict)


@dataclass
class Images:
    """The images phase's results."""

    record: dict[str, Any]  # the manifest's "images"
    counts: dict[str, int]  # the manifest's "counts"


def survey(release: Path, paths: list[Path], show: bool) -> Survey:
    """Find the JPEG sources (`paths`, by default the release's) and list their files: two
    JPEGs of one image are an error; anything else is reported, and later served as it is."""
    found = find_images(release, paths)
    out = Survey(found)
    skipped: list[str] = []
    for folder in found.folders:
        _add_folder(out, folder.resolve().name, part_of(folder.name))
        names, cannot = folder_files(folder)
        skipped += cannot
        for name in names:
            image_id = _note(out, name, str(folder / name))
            if image_id is not None:
                out.files[image_id] = folder / name
    for zpath in found.zips:
        for part, name, member in zip_files(zpath):
            _note(out, name, f"{zpath}:{member}")
            out.parts.setdefault(_zip_folder(zpath, part), part)
    if skipped:
        warn(f"{len(skipped)} entries of the JPEG folders are folders or symbolic links, which"
             f" are not served (first: {skipped[:3]})")
    return out


def _add_folder(out: Survey, name: str, part: str) -> None:
    """A packed folder, by its name at the image's top, which mksquashfs takes from it."""
    if name in out.parts:
        raise VGFSError(f"two JPEG folders are named {name}; give them with --images under"
                        " different names")
    out.parts[name] = part


def _note(out: Survey, name: str, where: str) -> int | None:
    """Note a file named <id>.jpg; its id, or None for any other file."""
    m = JPEG_NAME.fullmatch(name)
    if m is None:
        return None
    image_id = int(m[1])
    if image_id > MAX_IMAGE_ID:
        raise VGFSError(f"{where}: image id {image_id} is larger than vgfs can number"
                        f" ({MAX_IMAGE_ID})")
    if image_id in out.sources:
        raise VGFSError(f"{where}: image {image_id} also at {out.sources[image_id]}")
    out.sources[image_id] = where
    return image_id


def _zip_folder(zpath: Path, part: str) -> str:
    """The staging folder of a zip's files of one part: its name says the part."""
    return f"{part}.{zpath.stem}"


def store_images(writer: Writer, survey: Survey, table: ImageTable, tmp: Path,
                 show: bool) -> Images:
    """Pack the surveyed JPEGs into `tmp`/images.sqfs, or take the existing image, and index
    every file for the images of image_data.json (`table`)."""
    found = survey.found
    if found.sqfs is None:
        image = _pack(survey, tmp / "staging", tmp / "images.sqfs", show)
        how: dict[str, Any] = {"built_with": "mksquashfs " + " ".join(MKSQUASHFS_OPTS)}
    else:
        image = found.sqfs.absolute()  # referenced in place, never copied
        how = {"built_with": "existing image, indexed in place"}
    counts = {"images": len(table), "jpegs": 0, "images_without_jpeg": len(table),
              "unannotated_jpegs": 0, "other_files": 0}
    if image is None:
        if not found.sqfs:
            warn("found no JPEG at all: the mount shows annotations only (give the JPEG"
                 " folders, zips or a SquashFS image with --images)")
        return Images({"path": None, "jpegs": 0}, counts)
    counts |= _index(writer, image, survey, table, show)
    if found.sqfs is None:
        shutil.rmtree(tmp / "staging", ignore_errors=True)
    path = image.name if found.sqfs is None else str(image)  # ours sits in the dataset folder
    record = {"path": path, "jpegs": counts["jpegs"], "size": image.stat().st_size, **how}
    return Images(record, counts)


def _pack(survey: Survey, stage: Path, image: Path, show: bool) -> Path | None:
    """Pack the folders and the zips' files (extracted into `stage`) into `image`; None, and no
    image, if there is nothing to pack."""
    # Resolved: given a symlink to a folder, mksquashfs would pack the link itself.
    folders = [f.resolve() for f in survey.found.folders]
    for zpath in survey.found.zips:
        folders += _extract_zip(zpath, stage, show)
    if not any(os.scandir(f) for f in folders):
        return None
    _mksquashfs(folders, image, show)
    return image


def _extract_zip(zpath: Path, stage: Path, show: bool) -> list[Path]:
    """Unpack a zip's files under names we choose (the member's file name, in a folder per
    part), so no member path is ever trusted; the folders made."""
    members = list(zip_files(zpath))
    made: dict[str, Path] = {}
    with progress(f"extracting {zpath.name}", len(members), "file", show) as bar, \
            zipfile.ZipFile(zpath) as zf:
        for part, name, member in members:
            folder = made.setdefault(part, stage / _zip_folder(zpath, part))
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / name).exists():  # a stray name twice: the first is kept
                try:
                    with zf.open(member) as src, open(folder / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, READ_CHUNK)
                except (zipfile.BadZipFile, zlib.error) as e:
                    raise VGFSError(f"{zpath}:{member}: corrupt zip data ({e})") from None
            bar.update()
    return list(made.values())


# mksquashfs's own bar, which it draws even into a pipe: "\r[===   /] 1234/5678  21%".
_MKSQUASHFS_BAR = re.compile(rb"\] +(\d+)/(\d+) +\d+%")


def _mksquashfs(folders: list[Path], image: Path, show: bool) -> None:
    """Run mksquashfs, its progress shown the way the build's other phases show theirs (read
    off the bar it draws), and its last other line given if it fails."""
    if shutil.which("mksquashfs") is None:
        raise VGFSError("mksquashfs: not found; install squashfs-tools")
    # One source folder would have its files at the image's top: keep it a folder, so that the
    # top-level names always say each file's JPEG folder.
    keep = ["-keep-as-directory"] if len(folders) == 1 else []
    cmd = ["mksquashfs", *map(str, folders), str(image), *MKSQUASHFS_OPTS, *keep]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=functools.partial(_die_with, os.getpid()))
    said = pending = b""  # its last line that is not the bar, and a line not yet ended
    try:
        with progress(f"packing JPEGs into {image.name} (mksquashfs)", None, "file",
                      show) as bar:
            while chunk := proc.stdout.read1(65536):
                *lines, pending = re.split(rb"[\r\n]", pending + chunk)
                for line in lines:
                    match = _MKSQUASHFS_BAR.search(line)
                    if match is None:
                        said = line.strip() or said
                        continue
                    done, bar.total = int(match[1]), int(match[2])
                    bar.update(done - bar.n)
    except BaseException:  # the build is failing (a signal, an interrupt): so does mksquashfs
        proc.kill()
        proc.wait()
        raise
    if proc.wait() != 0:
        last = said.decode(errors="replace") or f"exit status {proc.returncode}"
        raise VGFSError(f"{image}: mksquashfs failed: {last}")


def _die_with(parent: int) -> None:
    """In mksquashfs's process, before it starts: have the kernel kill it when the build dies,
    even by SIGKILL, rather than let it fill a temporary folder that no one will remove.
    Only a system call or two, as the child of a process with threads may do."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the build died before the prctl
        os._exit(1)


def _index(writer: Writer, image: Path, survey: Survey, table: ImageTable,
           show: bool) -> dict[str, int]:
    """Record where each file of the image is and its checksums: an image's JPEG in `jpegs`
    (checked against its source file when we packed it), anything else of a JPEG folder in
    `strays`. Returns the counts for the manifest."""
    try:
        sq = SquashFSImage(image)
    except SquashFSError as e:
        raise VGFSError(str(e)) from e
    counts = {"jpegs": 0, "unannotated_jpegs": 0, "other_files": 0, "not_in_a_jpeg_folder": 0}
    examples: dict[str, list[str]] = {key: [] for key in counts}  # the first few, to report
    fd = os.open(image, os.O_RDONLY)
    buf = bytearray(READ_CHUNK)  # reused: a fresh buffer per JPEG fragments the heap
    try:
        with sq, writer.batch() as batch, progress("indexing JPEGs", None, "file", show) as bar:
            for entry in sq.walk():  # streamed: nothing per file is kept but a few names
                key = _index_one(batch, sq, fd, buf, image, entry, survey, table)
                counts[key] += 1
                if len(examples[key]) < 3:
                    examples[key].append(entry.path)
                bar.update()
                batch.done()
    except SquashFSError as e:
        raise VGFSError(str(e)) from e
    finally:
        os.close(fd)
    counts["images_without_jpeg"] = len(table) - counts["jpegs"]
    _report(counts, examples)
    return counts


def _index_one(batch: Any, sq: SquashFSImage, fd: int, buf: bytearray, image: Path,
               entry: FileEntry, survey: Survey, table: ImageTable) -> str:
    """Index one file of the image; the count it adds to."""
    folder, _, name = entry.path.rpartition("/")
    part = _part(survey, folder)
    if part is None:
        return "not_in_a_jpeg_folder"
    value, sha, head = _index_record(sq, fd, buf, image, entry)
    m = JPEG_NAME.fullmatch(name)
    image_id = int(m[1]) if m else None
    row = None if image_id is None else table.index(image_id)
    if row is not None and head.startswith(_JPEG_MAGIC):
        if image_id in survey.files:
            _check_source(survey.files[image_id], sha, f"{image}: bytes at {entry.path}")
        batch.put("jpegs", ID.pack(image_id), value)
        if part == IMAGE_DIRS[1]:
            batch.put("part2", ID.pack(image_id), b"")
        table.set(row, "jpeg_size", entry.size)
        return "jpegs"
    if row is not None:
        warn(f"{image}: {entry.path} is empty or not a JPEG; served as a plain file in {part}/")
    if not batch.put("strays", f"{part}/{name}".encode(), value, overwrite=False):
        warn(f"{image}: {entry.path}: another file of {part}/ has its name; the first is served")
    return "other_files" if image_id is None or row is not None else "unannotated_jpegs"


def _part(survey: Survey, folder: str) -> str | None:
    """The mount's JPEG folder for the files of a folder of the image; None for a folder that
    is no JPEG folder (a site image's `backup/`, a folder inside a JPEG folder)."""
    if survey.found.sqfs is None:
        return survey.parts.get(folder)
    if folder == "":  # a flat site image
        return IMAGE_DIRS[0]
    return part_of(folder) if folder in (*IMAGE_DIRS, "images") else None


def _check_source(source: Path, sha256: bytes, what: str) -> None:
    """The packed bytes must be the source JPEG's."""
    with open(source, "rb") as f:
        if hashlib.file_digest(f, "sha256").digest() != sha256:
            raise VGFSError(f"{what} differ from {source}")


def _report(counts: dict[str, int], examples: dict[str, list[str]]) -> None:
    if not counts["jpegs"]:
        warn("found no JPEG of an image of image_data.json: the mount shows annotations only"
             " (give the JPEG folders, zips or a SquashFS image with --images)")
    elif counts["images_without_jpeg"]:
        warn(f"{counts['images_without_jpeg']} images of image_data.json have no JPEG")
    said = {"unannotated_jpegs": "JPEGs have no entry in image_data.json; served in the JPEG"
                                 " folders, without an images/ directory",
            "other_files": "other files sit in the JPEG folders; served where they were",
            "not_in_a_jpeg_folder": "files of the image are in no JPEG folder (VG_100K,"
                                    " VG_100K_2, images or the top); not served"}
    for key, what in said.items():
        if counts[key]:
            warn(f"{counts[key]} {what} (first: {', '.join(examples[key])})")


def _index_record(sq: SquashFSImage, fd: int, buf: bytearray, image: Path,
                  entry: FileEntry) -> tuple[bytes, bytes, bytes]:
    """A file's JPEG_INDEX record, its SHA-256 and its first bytes. One run of the image is
    read straight from `fd`; any other file is read through the image, and its record ends in
    its path."""
    extent = entry.extent()
    if extent is None:
        data = sq.read(entry)
        sha, crc, head = hashlib.sha256(data).digest(), crc32(data), data[:3]
        offset, path = 0, entry.path.encode()
    else:
        digests = _digest_range(fd, *extent, buf)
        if digests is None:
            raise VGFSError(f"{image}: truncated at {entry.path}")
        (sha, crc, head), offset, path = digests, extent[0], b""
    return JPEG_INDEX.pack(offset, entry.size, sha, crc) + path, sha, head


def _digest_range(fd: int, offset: int, size: int,
                  buf: bytearray) -> tuple[bytes, int, bytes] | None:
    """SHA-256, CRC-32 and first bytes of `size` bytes at `offset`, read into `buf`; None if
    the file ends first."""
    h, crc, view, head = hashlib.sha256(), 0, memoryview(buf), b""
    while size:
        n = os.preadv(fd, [view[:min(size, len(buf))]], offset)
        if n == 0:
            return None
        head = head or bytes(view[:3])
        h.update(view[:n])
        crc = crc32(view[:n], crc)
        offset, size = offset + n, size - n
    return h.digest(), crc, head
