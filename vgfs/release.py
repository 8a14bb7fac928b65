"""Find the release's files: every file of the release folder, plain or as `*.json.zip`, and
its JPEGs (folders, zips, or an existing SquashFS image). Reading them is stream.py's job.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vgfs.errors import VGFSError
from vgfs.progress import warn
from vgfs.schema import IMAGE_DIRS, IMAGE_ZIPS, JPEG_FOLDERS

READ_SIZE = 1 << 20
# A zip member may expand at most this many times its compressed size (JSON: about 10x).
MAX_ZIP_RATIO = 200


@dataclass
class Source:
    """One release file: where it is, and what streaming it found."""

    name: str  # its path in the release folder (and the mount), e.g. "objects.json"
    path: Path  # the plain file, or the zip that holds it
    member: str | None = None  # name inside the zip
    version: str = "unknown"
    entries: int = 0
    size: int = 0  # bytes of content (decompressed for a zip member)
    sha256: str = ""  # of the content
    _features: set[str] = field(default_factory=set, repr=False)

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def size_hint(self) -> int:
        """Content size before reading it, for progress."""
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.member).file_size

    def open(self) -> IO[bytes]:
        """A binary stream of the file's bytes, decompressed on the fly for a zip member."""
        try:
            if self.member is None:
                return open(self.path, "rb")
            zf = zipfile.ZipFile(self.path)
            info = zf.getinfo(self.member)
            if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
                raise VGFSError(f"{self.label}: expands {info.file_size // info.compress_size}"
                                f" times its compressed size, refusing a likely zip bomb")
            return zf.open(info)
        except OSError as e:
            raise VGFSError(f"{self.label}: cannot read: {e.strerror or e}") from e
        except zipfile.BadZipFile as e:
            raise VGFSError(f"{self.path}: not a valid zip file ({e})") from e


def find_sources(release: Path, skip: set[Path] = frozenset()) -> dict[str, Source]:
    """Every file of the release folder but those in `skip` (its JPEG folders and image
    files), by relative path: a `NAME.json.zip` stands for NAME.json, unless NAME.json is
    there too. Needs image_data.json at the top, which defines the set of images."""
    if not release.is_dir():
        raise VGFSError(f"{release}: release folder not found")
    found: dict[str, Source] = {}
    zipped: list[Path] = []
    unnamed: list[str] = []
    for root, dirs, files in os.walk(release):
        dirs[:] = sorted(d for d in dirs if Path(root, d) not in skip)
        for name in sorted(files):
            path = Path(root, name)
            if path in skip or not path.is_file():
                continue
            rel = path.relative_to(release).as_posix()
            if not _utf8(rel):  # the manifest, JSON, could not name it
                unnamed.append(str(path))
            elif name.endswith(".json.zip"):
                zipped.append(path)
            else:
                found[rel] = Source(rel, path)
    for path in zipped:
        rel = path.relative_to(release).as_posix()
        inner = rel.removesuffix(".zip")
        if inner in found:  # both: the plain file is the one users read
            found[rel] = Source(rel, path)
        else:
            found[inner] = Source(inner, path, _zip_member(path, inner.rsplit("/", 1)[-1]))
    if "image_data.json" not in found:
        raise VGFSError(f"{release}: no image_data.json (or image_data.json.zip); it defines the"
                        " set of images, so the build cannot start")
    if unnamed:
        warn(f"{len(unnamed)} files of the release have names that are not UTF-8, and are not"
             f" kept (first: {unnamed[0]!r})")
    return dict(sorted(found.items()))


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _zip_member(path: Path, name: str) -> str:
    """The member of a release zip that holds `name`, wherever it sits inside."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == name]
    except (OSError, zipfile.BadZipFile) as e:
        raise VGFSError(f"{path}: not a readable zip file ({e})") from e
    if len(members) != 1:
        raise VGFSError(f"{path}: expected one member named {name}, found {len(members)}")
    return members[0]


# --- the release's JPEGs ---------------------------------------------------------------------

@dataclass
class ImageSources:
    """Where the JPEGs are: folders and zips of <image_id>.jpg files, or one existing SquashFS
    image, which is indexed in place and so cannot be combined with them."""

    folders: list[Path] = field(default_factory=list)
    zips: list[Path] = field(default_factory=list)
    sqfs: Path | None = None


def find_images(release: Path, paths: list[Path]) -> ImageSources:
    """Sort the given image paths, by default the release's own, into folders, zips and an
    existing image."""
    found = ImageSources()
    for p in paths or default_image_paths(release):
        if p.is_dir():
            found.folders.append(p)
        elif p.is_file() and p.suffix == ".zip":
            found.zips.append(p)
        elif p.is_file() and p.suffix in (".sqfs", ".squashfs", ".img"):
            if found.sqfs is not None:
                raise VGFSError(f"{p}: only one existing SquashFS image can be indexed")
            found.sqfs = p
        else:
            raise VGFSError(f"{p}: not an image folder, zip or SquashFS image")
    if found.sqfs is not None and (found.folders or found.zips):
        raise VGFSError(f"{found.sqfs}: an existing SquashFS image cannot be combined with"
                        " image folders or zips; give one or the other")
    return found


def default_image_paths(release: Path) -> list[Path]:
    """The JPEG folders in the release or up to two folders below it (VG_100K, VG_100K_2, or a
    flat `images` folder as DenseCap lays it out), the image zips and any SquashFS image beside
    the JSON files."""
    paths: list[Path] = []
    for root, dirs, _ in os.walk(release):
        depth = Path(root).relative_to(release).parts
        found = [d for d in sorted(dirs) if _is_jpeg_folder(Path(root) / d)]
        paths += [Path(root) / d for d in found]
        dirs[:] = [d for d in sorted(dirs) if d not in found and len(depth) < 2]
    paths += [release / z for z in IMAGE_ZIPS if (release / z).is_file()]
    return paths + sorted(release.glob("*.sqfs"))


def _is_jpeg_folder(path: Path) -> bool:
    """VG_100K or VG_100K_2; or `images`, unless it only holds those (RELEASE/images/VG_100K)."""
    if path.name in IMAGE_DIRS:
        return True
    return path.name in JPEG_FOLDERS and not any((path / d).is_dir() for d in IMAGE_DIRS)


def part_of(folder: str) -> str:
    """The mount's JPEG folder that shows a release folder's files: VG_100K_2 for the second
    part, VG_100K (the merged folder) for the rest."""
    return IMAGE_DIRS[1] if folder == IMAGE_DIRS[1] else IMAGE_DIRS[0]


def folder_files(folder: Path) -> tuple[list[str], list[str]]:
    """The names of a JPEG folder's files, and what it holds that cannot be served (folders,
    symbolic links), each as a path, to report."""
    files, skipped = [], []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file(follow_symlinks=False):
                files.append(e.name)
            else:
                skipped.append(os.path.join(folder, e.name))
    return sorted(files), sorted(skipped)


def zip_files(zpath: Path) -> Iterator[tuple[str, str, str]]:
    """(part, file name, member) of an images zip's files, under any folder; macOS's resource
    forks are passed over. The part is that of the member's folder (part_of)."""
    try:
        with zipfile.ZipFile(zpath) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile) as e:
        raise VGFSError(f"{zpath}: not a readable zip file ({e})") from e
    for info in infos:
        folder, _, base = info.filename.rstrip("/").rpartition("/")
        if info.is_dir() or info.filename.startswith("__MACOSX/") or base in ("", ".", ".."):
            continue
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
            raise VGFSError(f"{zpath}:{info.filename}: expands"
                            f" {info.file_size // info.compress_size} times, refusing a likely"
                            " zip bomb")
        yield part_of(folder.rpartition("/")[2]), base, info.filename
