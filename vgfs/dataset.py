"""The read side of a dataset folder: open and validate it; per-image ranges, stored files,
the JPEG index and the query views' listings. The format is defined in layout.py.

Stored bytes come out of zstd frames that each decompress alone, checked by zstd's checksum
of their content whenever they are read: a damaged frame is an error for the files it holds,
never wrong bytes. A cache (cache.py) may keep decompressed frames.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import lmdb
import orjson

from vgfs import compose, query
from vgfs.cache import LRUCache
from vgfs.environment import ENVIRONMENTS, check_size, pages_needed
from vgfs.errors import VGFSError
from vgfs.frames import Frames
from vgfs.layout import (
    ABSENT,
    DB_NAMES,
    FILE_INFO,
    FORMAT,
    FRAMES_FILE,
    ID,
    JPEG_INDEX,
    KINDS,
    VIEW_FILE_PREFIX,
    ImageRecord,
    JpegIndex,
)
from vgfs.pages import Pages, check_db
from vgfs.squashfs import SquashFSError, SquashFSImage

Buffer = bytes | memoryview


# The databases that `Dataset.hold` keeps in memory; those read whole when a dataset opens.
_HELD = ("images", "jpegs", "part2", "frames")
_AT_OPEN = ("files", "strays")


class _Held(NamedTuple):
    values: dict[bytes, bytes]  # the database, key -> value
    ids: array | None  # its keys as image ids, ascending (LMDB's order)


class Dataset:
    """An open dataset folder. Safe to share between threads; reads never block on each other."""

    def __init__(self, path: str | os.PathLike, cache: LRUCache | None = None) -> None:
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        self.cache = cache if cache is not None else LRUCache(16 << 20)
        lmdb_path = self.path / "annotations.lmdb"
        self._local = threading.local()
        # LMDB maps data.mdb: a file shorter than its pages (an in-place copy, a cut transfer)
        # would be SIGBUS at the first touch of a missing page, so its size is checked first.
        self._data_fd = _open_file(lmdb_path / "data.mdb", "the annotation database")
        try:
            self.env, self.dbs = ENVIRONMENTS.acquire(lmdb_path)
            self._needs = pages_needed(self.env)
            # Each database check_pages has read: None where whole, else what is damaged.
            self._pages: dict[str, str | None] = {}
            self._psize = self.env.stat()["psize"]
            for damage in self.check_pages(_AT_OPEN).values():
                raise VGFSError(damage)
            # Small and asked for by every listing of the root: held in memory.
            self.files = {os.fsdecode(bytes(k)): FILE_INFO.unpack(v)
                          for k, v in self._txn().cursor(db=self.dbs["files"])}
            self.strays = {os.fsdecode(bytes(k)): _jpeg_index(v)
                           for k, v in self._txn().cursor(db=self.dbs["strays"])}
        except lmdb.Error as e:
            raise VGFSError(f"{lmdb_path}: cannot open the annotation database: {e}") from e
        self._frames_fd = _open_file(self.path / FRAMES_FILE, "the annotations' frames")
        self._held: dict[str, _Held] = {}  # the indexes held in memory (hold)
        self._frames = Frames(self._frame_at, self._frames_fd, self.cache, self._file_name)
        kinds = self.manifest["kinds"]
        self.kinds = tuple(k for k in KINDS if k in kinds)
        # Each stored kind's source file, by number: a kind's ranges are offsets into it.
        self._kind_file = {k: self.files[kinds[k]["source"]][0] for k in self.kinds
                           if kinds[k]["source"] in self.files}
        self._image_path = self.manifest["images"].get("path")
        self._image: SquashFSImage | None = None
        self._image_fd = -1
        if self._image_path:
            self._image_fd = _open_file(self.images_path, "the JPEG image")

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
        return total + sum(size for _, size in self.files.values())

    @property
    def image_count(self) -> int:
        return self.manifest.get("counts", {}).get("images", 0)

    @property
    def image_fd(self) -> int:
        """The SquashFS image's file descriptor, for pread at indexed offsets (-1: no JPEGs)."""
        return self._image_fd

    def close(self) -> None:
        ENVIRONMENTS.release(self.env)
        os.close(self._frames_fd)
        os.close(self._data_fd)
        if self._image_fd >= 0:
            os.close(self._image_fd)
            self._image_fd = -1
        if self._image is not None:
            self._image.close()

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process needs to open the dataset again (a DataLoader with the
        "spawn" start method pickles its dataset): the folder and the cache's size."""
        return {"path": self.path, "cache_bytes": self.cache.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], LRUCache(state["cache_bytes"]))  # type: ignore[misc]

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _txn(self) -> lmdb.Transaction:
        """One long-lived read transaction per thread: the data never changes while open. A
        transaction that saw an error (a damaged page) is renewed, so that the error stays
        with the records on that page."""
        self._check_size()
        txn = getattr(self._local, "txn", None)
        if txn is None or getattr(self._local, "failed", False):
            if txn is not None:
                txn.abort()
            txn = self._local.txn = self.env.begin(buffers=True)
            self._local.failed = False
        return txn

    def _check_size(self) -> None:
        """data.mdb must still hold every page LMDB may touch (one fstat, under 1 µs)."""
        size = os.fstat(self._data_fd).st_size
        if size < self._needs:
            check_size(self.path / "annotations.lmdb" / "data.mdb", size, self._needs)

    def check_pages(self, names: tuple[str, ...] = DB_NAMES) -> dict[str, str]:
        """Check every page of these databases, each once per open (pages.py); returns the
        damaged ones, each with a sentence. A damaged database is never walked by a cursor
        again, which would abort the process inside LMDB; lookups still reach its whole pages."""
        todo = [name for name in names if name not in self._pages]
        if todo:
            pages = Pages(self._data_fd, self._psize)  # one window, for neighbouring databases
            for name in todo:
                self._pages[name] = self._damage(name, pages)
        return {n: damage for n in names if (damage := self._pages[n]) is not None}

    def _damage(self, name: str, pages: Pages) -> str | None:
        """What check_db finds wrong in database `name`, as a sentence, or None."""
        with self._lmdb(f"reading the root of {name}"):
            record = bytes(self._txn().get(name.encode()))
        try:
            check_db(pages, record, f"{self.path / 'annotations.lmdb'}: database {name}")
        except VGFSError as e:
            return f"{e}; restore or rebuild the dataset"
        return None

    @contextlib.contextmanager
    def _walk(self, name: str, what: str) -> Iterator[lmdb.Cursor]:
        """A cursor over database `name`, in a transaction of its own: a lookup that fails
        meanwhile renews the thread's transaction, which must not end the walk. The database's
        pages are checked first if no check has yet (a listing before the mount's background
        check got to it), and a damaged database is refused."""
        damage = self.check_pages((name,)).get(name)
        if damage is not None:
            raise VGFSError(damage)
        self._check_size()
        txn = self.env.begin(buffers=True)
        try:
            with self._lmdb(what):
                yield txn.cursor(db=self.dbs[name])
        finally:
            txn.abort()

    @contextlib.contextmanager
    def _lmdb(self, what: str) -> Iterator[None]:
        """LMDB's errors as one sentence; the thread's transaction is renewed after one."""
        try:
            yield
        except lmdb.Error as e:
            self._local.failed = True
            detail = str(e)
            if isinstance(e, lmdb.CorruptedError | lmdb.PageNotFoundError):
                detail = (f"the database is damaged ({e}); `vgfs verify` reports all the damage;"
                          " restore or rebuild the dataset")
            raise VGFSError(f"{self.path / 'annotations.lmdb'}: {what}: {detail}") from None

    # --- stored files ----------------------------------------------------------------------

    def release_files(self) -> list[tuple[str, int]]:
        """(relative path, size) of every file of the release kept here, sorted by path."""
        return sorted((p, size) for p, (_, size) in self.files.items()
                      if not p.startswith(VIEW_FILE_PREFIX))

    def file_size(self, path: str) -> int | None:
        info = self.files.get(path)
        return None if info is None else info[1]

    def file_range(self, path: str, off: int, size: int) -> Buffer:
        """Bytes [off, off+size) of a stored file (short at its end)."""
        file_no, total = self.files[path]
        return self.range(file_no, off, min(size, total - off))

    def range(self, file_no: int, off: int, size: int) -> Buffer:
        """`size` bytes of file `file_no` from `off` (frames.Frames.range)."""
        return self._frames.range(file_no, off, size)

    def _file_name(self, file_no: int) -> str:
        return next((p.lstrip(VIEW_FILE_PREFIX) for p, (n, _) in self.files.items()
                     if n == file_no), f"file {file_no}")

    # --- images ----------------------------------------------------------------------------

    def image(self, image_id: int) -> ImageRecord | None:
        """What the dataset knows of an image, or None when image_data.json has no such
        image."""
        raw = self._get("images", image_id)
        return None if raw is None else ImageRecord.unpack(raw)

    def in_image_data(self, image_id: int) -> bool:
        """image_data.json has this image (it may still have no JPEG: see has_jpeg)."""
        return self._get("images", image_id) is not None

    def has_jpeg(self, image_id: int) -> bool:
        return self._get("jpegs", image_id) is not None

    def count(self, db: str) -> int:
        """The number of records in database `db`, from its root record: no page is read, so
        a mount starting on a damaged index still starts (a walk would check it first)."""
        with self._lmdb(f"counting {db}"):
            return self._txn().stat(self.dbs[db])["entries"]

    def image_ids(self, after: int = -1, db: str = "images") -> Iterator[int]:
        """Image ids in ascending order, starting after `after`; O(log n) to start anywhere.
        `db` "jpegs" lists the images with a JPEG, "part2" those of VG_100K_2."""
        held = self._held.get(db)
        if held is not None:
            ids = held.ids
            yield from ids[bisect_right(ids, after):]
            return
        with self._walk(db, f"listing {db}") as cur:
            if not cur.set_range(ID.pack(after + 1)):
                return
            for key in cur.iternext(keys=True, values=False):
                yield ID.unpack(key)[0]

    def stores(self, kind: str) -> bool:
        """The kind's entries are ranges of a stored file (graph.json may be composed)."""
        return kind in self._kind_file

    def kind_file(self, kind: str) -> int:
        """The number of the file that holds a stored kind's entries."""
        return self._kind_file[kind]

    def hold(self, stop: threading.Event) -> None:
        """Copy the indexes every request reads (images, jpegs, part2 and the frames' places)
        into memory, about 250 bytes an image: from then on no lookup, listing or read of the
        mount touches LMDB's map, whose pages may have to come from slow storage, on the
        event loop. The mount calls it in a thread at start; until it is done, requests read
        LMDB. Each database's pages are checked first (check_pages): a damaged one is not
        held, its whole pages still answer lookups. Stops early, holding nothing, when `stop`
        is set."""
        self.check_pages(_HELD)
        txn = self.env.begin(buffers=True)
        held: dict[str, _Held] = {}
        try:
            for name in _HELD:
                if self._pages.get(name) is not None:
                    continue
                values: dict[bytes, bytes] = {}
                for n, (key, value) in enumerate(txn.cursor(db=self.dbs[name])):
                    values[bytes(key)] = bytes(value)
                    if n % 4096 == 0 and stop.is_set():
                        return
                ids = array("Q", (ID.unpack(k)[0] for k in values)) if name != "frames" else None
                held[name] = _Held(values, ids)
        finally:
            txn.abort()
        self._held = held  # one assignment: a request sees all or nothing

    def nowait(self) -> contextlib.AbstractContextManager[None]:
        """Within: a stored range that would wait for storage raises frames.WouldBlock."""
        return self._frames.nowait()

    @property
    def held(self) -> bool:
        """The indexes are in memory (hold): a lookup or listing touches no storage."""
        return bool(self._held)

    def _get(self, db: str, image_id: int) -> Buffer | None:
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise TypeError(f"an image id is an int, not {type(image_id).__name__}"
                            f" {image_id!r}")
        held = self._held.get(db)
        key = ID.pack(image_id)
        if held is not None:
            return held.values.get(key)
        with self._lmdb(f"reading {db}"):
            return self._txn().get(key, db=self.dbs[db])

    def _frame_at(self, key: bytes) -> Buffer | None:
        held = self._held.get("frames")
        if held is not None:
            return held.values.get(key)
        with self._lmdb("reading the frames' index"):
            return self._txn().get(key, db=self.dbs["frames"])

    def in_part2(self, image_id: int) -> bool:
        return self._get("part2", image_id) is not None

    def entry_bytes(self, kind: str, image_id: int) -> Buffer | None:
        """The release's own bytes of an image's entry in a stored kind, or None."""
        record = self.image(image_id)
        if record is None or kind not in self._kind_file:
            return None
        offset, length = record.ranges[KINDS.index(kind)]
        if length == ABSENT:
            return None
        return self.range(self._kind_file[kind], offset, length)

    def entry(self, kind: str, image_id: int) -> Any:
        """The entry as a Python value, equal to the release's entry; "graph" is composed
        when the release has no scene_graphs.json."""
        data = self.graph_bytes(image_id) if kind == "graph" else self.entry_bytes(kind, image_id)
        return None if data is None else compose.loads(data)

    def graph_bytes(self, image_id: int) -> Buffer | None:
        """graph.json's bytes: the scene_graphs.json entry, or composed without that file."""
        return compose.graph_of(image_id, lambda kind: self.entry_bytes(kind, image_id),
                                self.stores("graph"))

    def by_id_bytes(self, image_id: int) -> bytes | None:
        """by-id/<id>.json's bytes (compose.by_id)."""
        record, sg = self.image(image_id), self.graph_bytes(image_id)
        if record is None or sg is None:
            return None
        return compose.by_id(sg, self.entry_bytes("attributes", image_id), record.attr_base)

    # --- query views (query.py) ------------------------------------------------------------

    def view_name(self, view: str, position: int) -> tuple[bytes, int] | None:
        """(escaped name, image count) of a view's name at a position, or None."""
        with self._lmdb(f"reading {view}"):
            raw = self._txn().get(query.pos_key(view, position), db=self.dbs["view_names"])
            return None if raw is None else (bytes(raw[4:]), query.COUNT.unpack_from(raw)[0])

    def view_names(self, view: str, start: int = 0) -> Iterator[tuple[int, bytes, int]]:
        """(position, escaped name, count) from a position on, in name order."""
        with self._walk("view_names", f"listing {view}") as cur:
            first = query.pos_key(view, start)
            if not cur.set_range(first):
                return
            for key, raw in cur:
                if key[0] != first[0]:
                    return
                yield (query.POS.unpack_from(key, 1)[0], bytes(raw[4:]),
                       query.COUNT.unpack_from(raw)[0])

    def view_position(self, view: str, name: bytes) -> int | None:
        with self._lmdb(f"reading {view}"):
            raw = self._txn().get(query.key(view, name), db=self.dbs["view_pos"])
            return None if raw is None else query.POS.unpack(raw)[0]

    def view_images(self, view: str, name: bytes, after: int = -1) -> Iterator[int]:
        """Image ids under a view's name, ascending, after `after`; O(log n) to start."""
        with self._walk("view_ids", f"listing {view}") as cur:
            if not cur.set_key(query.key(view, name)):
                return
            if not cur.set_range_dup(query.key(view, name), ID.pack(after + 1)):
                return
            for value in cur.iternext_dup(keys=False):
                yield ID.unpack(value)[0]

    def view_has(self, view: str, name: bytes, image_id: int) -> bool:
        with self._lmdb(f"reading {view}"):
            cur = self._txn().cursor(db=self.dbs["view_ids"])
            return cur.set_key_dup(query.key(view, name), ID.pack(image_id))

    # --- JPEGs -----------------------------------------------------------------------------

    def jpeg_index(self, image_id: int) -> JpegIndex | None:
        """Where the image's JPEG is, or None when it has none."""
        raw = self._get("jpegs", image_id)
        return None if raw is None else _jpeg_index(raw)

    def jpeg(self, image_id: int) -> bytes | None:
        """The JPEG bytes, exactly as released, or None when the image has none."""
        index = self.jpeg_index(image_id)
        return None if index is None else self.image_bytes(index, f"image {image_id}")

    def image_bytes(self, index: JpegIndex, what: str) -> bytes:
        """The bytes of a file of the image (a JPEG or a stray), read blocking."""
        if index.path is None:
            data = os.pread(self._image_fd, index.size, index.offset)
            if len(data) != index.size:
                raise VGFSError(f"{self.images_path}: truncated at the JPEG of {what}")
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


def _open_file(path: Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise VGFSError(f"{path}: cannot open {what}: {e.strerror}") from e


def _jpeg_index(raw: Buffer) -> JpegIndex:
    offset, size, digest, crc = JPEG_INDEX.unpack_from(raw)
    path = bytes(raw[JPEG_INDEX.size:]).decode() if len(raw) > JPEG_INDEX.size else None
    return JpegIndex(offset, size, digest, path, crc)


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
    for key in ("tool", "built", "sources", "kinds", "annotations", "images", "counts"):
        if key not in manifest:
            raise VGFSError(f"{mpath}: no `{key}`, so it is incomplete or damaged; rebuild the"
                            " dataset with `vgfs build`")
    return manifest


def open_dataset(path: str | os.PathLike, cache: LRUCache | None = None) -> Dataset:
    """Open a dataset folder written by `vgfs build`; `cache` keeps decompressed frames."""
    return Dataset(path, cache)
