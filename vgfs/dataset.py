"""The read side of a dataset folder: open and validate it; records, JPEGs and listings by image id.

The format is defined in layout.py, which the build writes.
"""

from __future__ import annotations

import calendar
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import orjson

from vgfs import query
from vgfs.errors import VGFSError
from vgfs.layout import (
    DB_NAMES,
    DIR_SIZES,
    DUPSORT,
    FORMAT,
    ID,
    JPEG_INDEX,
    KINDS,
    MAX_DBS,
    WHOLE_CHUNK,
    WHOLE_SIZE,
    JpegIndex,
    chunk_key,
)
from vgfs.squashfs import SquashFSError, SquashFSImage


class _Environments:
    """One LMDB environment per folder and process, shared by every Dataset open on it: LMDB
    refuses a second open of the same environment in one process."""

    def __init__(self) -> None:
        self._open: dict[Path, tuple[lmdb.Environment, dict[str, Any], int]] = {}
        self._lock = threading.Lock()

    def acquire(self, path: Path) -> tuple[lmdb.Environment, dict[str, Any]]:
        key = path.resolve()
        with self._lock:
            if key in self._open:
                env, dbs, users = self._open[key]
            else:
                env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=MAX_DBS,
                                subdir=True, readahead=False, max_readers=1024)
                try:
                    dbs = {n: env.open_db(n.encode(), create=False, dupsort=n in DUPSORT,
                                          dupfixed=n in DUPSORT) for n in DB_NAMES}
                except lmdb.Error:
                    env.close()
                    raise
                users = 0
            self._open[key] = (env, dbs, users + 1)
            return env, dbs

    def release(self, env: lmdb.Environment) -> None:
        with self._lock:
            for key, (open_env, dbs, users) in list(self._open.items()):
                if open_env is env:
                    if users > 1:
                        self._open[key] = (env, dbs, users - 1)
                    else:
                        del self._open[key]
                        env.close()
                    return


_ENVS = _Environments()


class Dataset:
    """An open dataset folder. Safe to share between threads; reads never block on each other."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        lmdb_path = self.path / "annotations.lmdb"
        try:
            self.env, self.dbs = _ENVS.acquire(lmdb_path)
        except lmdb.Error as e:
            raise VGFSError(f"{lmdb_path}: cannot open the annotation database: {e}") from e
        self.kinds = tuple(k for k in KINDS if k in self.manifest["kinds"])
        self.whole_files = tuple(self.manifest["whole_files"])
        self._image_path = self.manifest["images"].get("path")
        self._local = threading.local()
        self._image: SquashFSImage | None = None
        self._image_fd = -1
        if self._image_path:
            p = self.images_path
            try:
                self._image_fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise VGFSError(f"{p}: cannot open the JPEG image: {e.strerror}") from e

    @property
    def images_path(self) -> Path:
        return self.path / self._image_path if self._image_path else Path()

    @property
    def built_ns(self) -> int:
        """When the dataset was built, in ns since the epoch (0 if unknown): every file's
        mtime, the same on every mount."""
        try:
            built = time.strptime(self.manifest.get("built", ""), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return 0
        return calendar.timegm(built) * 10**9

    @property
    def stored_bytes(self) -> int:
        """The bytes of the release that this dataset holds: JPEGs and source files."""
        total = self.manifest.get("images", {}).get("size", 0) or 0
        return total + sum(s.get("size", 0) for s in self.manifest.get("sources", {}).values())

    @property
    def image_count(self) -> int:
        return self.manifest.get("counts", {}).get("images", 0)

    @property
    def image_fd(self) -> int:
        """The SquashFS image's file descriptor, for pread at indexed offsets (-1: no JPEGs)."""
        return self._image_fd

    def close(self) -> None:
        _ENVS.release(self.env)
        if self._image_fd >= 0:
            os.close(self._image_fd)
            self._image_fd = -1
        if self._image is not None:
            self._image.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _txn(self) -> lmdb.Transaction:
        """One long-lived read transaction per thread: the data never changes while open."""
        txn = getattr(self._local, "txn", None)
        if txn is None:
            txn = self._local.txn = self.env.begin(buffers=True)
        return txn

    # --- records ---------------------------------------------------------------------------

    def record(self, kind: str, image_id: int) -> memoryview | None:
        """The stored entry of `kind` for one image as compact JSON (a zero-copy view), or None."""
        return self._txn().get(ID.pack(image_id), db=self.dbs[kind])

    def entry(self, kind: str, image_id: int) -> Any:
        """The entry as a Python value, equal to the release's entry."""
        data = self.record(kind, image_id)
        return None if data is None else orjson.loads(data)

    def warm(self, stop: threading.Event) -> int:
        """Read every page of the databases each lookup touches (dirs, jpegs) once, so that
        the page cache holds them: the mount reads LMDB on its event loop, where a page fetched
        from slow storage would hold up every request. Returns the records read; stops early
        when `stop` is set."""
        n = 0
        txn = self.env.begin(buffers=True)
        try:
            for name in ("dirs", "jpegs"):
                for _ in txn.cursor(db=self.dbs[name]).iternext(keys=False, values=True):
                    n += 1
                    if n % 1024 == 0 and stop.is_set():
                        return n
        finally:
            txn.abort()
        return n

    def whole_size(self, name: str) -> int | None:
        """The size of a whole-dataset file (or a view's counts.json), None when absent."""
        raw = self._txn().get(name.encode(), db=self.dbs["files"])
        return None if raw is None else WHOLE_SIZE.unpack(raw)[0]

    def whole_range(self, name: str, off: int, size: int) -> bytes | memoryview:
        """Bytes [off, off+size) of a whole file: zero-copy unless they span two chunks."""
        end = min(off + size, self.whole_size(name) or 0)
        pieces = []
        while off < end:
            chunk, start = divmod(off, WHOLE_CHUNK)
            piece = self._chunk(name, chunk)[start:start + end - off]
            if not piece:
                raise VGFSError(f"{name}: piece {chunk} is shorter than the file's size says")
            pieces.append(piece)
            off += len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def whole_chunks(self, name: str) -> Iterator[memoryview]:
        """A whole file's pieces in order."""
        for chunk in range(-(-(self.whole_size(name) or 0) // WHOLE_CHUNK)):
            yield self._chunk(name, chunk)

    def _chunk(self, name: str, chunk: int) -> memoryview:
        data = self._txn().get(chunk_key(name, chunk), db=self.dbs["files"])
        if data is None:
            raise VGFSError(f"{name}: piece {chunk} is missing from the annotation database")
        return data

    def whole_file(self, name: str) -> bytes | None:
        """A whole file's bytes (for small files and tests: the mount reads ranges)."""
        if self.whole_size(name) is None:
            return None
        return b"".join(self.whole_chunks(name))

    def dir_sizes(self, image_id: int) -> tuple[int, ...] | None:
        """Sizes of the image's files in FILES order (ABSENT: no such file), or None when
        image_data.json has no such image."""
        raw = self._txn().get(ID.pack(image_id), db=self.dbs["dirs"])
        return None if raw is None else DIR_SIZES.unpack(raw)

    def has_image(self, image_id: int) -> bool:
        return self.dir_sizes(image_id) is not None

    def image_ids(self, after: int = -1) -> Iterator[int]:
        """Image ids in ascending order, starting after `after`; O(log n) to start anywhere."""
        cur = self._txn().cursor(db=self.dbs["dirs"])
        if not cur.set_range(ID.pack(after + 1)):
            return
        for key in cur.iternext(keys=True, values=False):
            yield ID.unpack(key)[0]

    # --- query views (query.py) ------------------------------------------------------------

    def view_name(self, view: str, position: int) -> tuple[bytes, int] | None:
        """(escaped name, image count) of a view's name at a position, or None."""
        raw = self._txn().get(query.pos_key(view, position), db=self.dbs["view_names"])
        return None if raw is None else (bytes(raw[4:]), query.COUNT.unpack_from(raw)[0])

    def view_names(self, view: str, start: int = 0) -> Iterator[tuple[int, bytes, int]]:
        """(position, escaped name, count) from a position on, in name order."""
        cur = self._txn().cursor(db=self.dbs["view_names"])
        first = query.pos_key(view, start)
        if not cur.set_range(first):
            return
        for key, raw in cur:
            if key[0] != first[0]:
                return
            yield query.POS.unpack_from(key, 1)[0], bytes(raw[4:]), query.COUNT.unpack_from(raw)[0]

    def view_position(self, view: str, name: bytes) -> int | None:
        raw = self._txn().get(query.key(view, name), db=self.dbs["view_pos"])
        return None if raw is None else query.POS.unpack(raw)[0]

    def view_images(self, view: str, name: bytes, after: int = -1) -> Iterator[int]:
        """Image ids under a view's name, ascending, after `after`; O(log n) to start."""
        cur = self._txn().cursor(db=self.dbs["view_ids"])
        if not cur.set_key(query.key(view, name)):
            return
        if not cur.set_range_dup(query.key(view, name), ID.pack(after + 1)):
            return
        for value in cur.iternext_dup(keys=False):
            yield ID.unpack(value)[0]

    def view_has(self, view: str, name: bytes, image_id: int) -> bool:
        cur = self._txn().cursor(db=self.dbs["view_ids"])
        return cur.set_key_dup(query.key(view, name), ID.pack(image_id))

    # --- JPEGs -----------------------------------------------------------------------------

    def jpeg_index(self, image_id: int) -> JpegIndex | None:
        """Where the image's JPEG is, or None when it has none."""
        raw = self._txn().get(ID.pack(image_id), db=self.dbs["jpegs"])
        if raw is None:
            return None
        offset, size, digest, crc = JPEG_INDEX.unpack_from(raw)
        path = bytes(raw[JPEG_INDEX.size:]).decode() if len(raw) > JPEG_INDEX.size else None
        return JpegIndex(offset, size, digest, path, crc)

    def jpeg(self, image_id: int) -> bytes | None:
        """The JPEG bytes, exactly as released, or None when the image has none."""
        index = self.jpeg_index(image_id)
        if index is None:
            return None
        if index.path is None:
            data = os.pread(self._image_fd, index.size, index.offset)
            if len(data) != index.size:
                raise VGFSError(f"{self.images_path}: truncated at the JPEG of image {image_id}")
            return data
        return self.read_slow(index.path, 0, index.size)

    def read_slow(self, path: str, offset: int, size: int) -> bytes:
        """Bytes of a file that is compressed or fragmented in the image (general reader)."""
        if self._image is None:
            try:
                self._image = SquashFSImage(self.images_path)
            except SquashFSError as e:
                raise VGFSError(str(e)) from e
        img = self._image
        return img.read(img.lookup(path), offset, size)


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise VGFSError(f"{path}: dataset folder not found")
    try:
        manifest = orjson.loads(mpath.read_bytes())
    except FileNotFoundError as e:
        raise VGFSError(f"{mpath}: not found; is {path} a dataset folder written by"
                        " `vgfs build`?") from e
    except OSError as e:
        raise VGFSError(f"{mpath}: cannot read: {e.strerror}") from e
    except orjson.JSONDecodeError as e:
        raise VGFSError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or "format" not in manifest:
        raise VGFSError(f"{mpath}: not a vgfs manifest (no format version)")
    if manifest["format"] != FORMAT:
        older = isinstance(manifest["format"], int) and manifest["format"] < FORMAT
        raise VGFSError(f"{mpath}: dataset format {manifest['format']!r} is not supported;"
                        f" this vgfs reads format {FORMAT}: "
                        + ("rebuild it with `vgfs build`" if older
                           else "it was written by a newer vgfs, so upgrade vgfs"))
    # The keys that opening, mounting and `vgfs info` read without a default.
    for key in ("tool", "built", "sources", "kinds", "whole_files", "images", "counts"):
        if key not in manifest:
            raise VGFSError(f"{mpath}: no `{key}`, so it is incomplete or damaged; rebuild the"
                            " dataset with `vgfs build`")
    return manifest


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a dataset folder written by `vgfs build`."""
    return Dataset(path)
