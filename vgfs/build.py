"""Official release + JPEGs -> dataset folder (LMDB + SquashFS + manifest), atomically.

The build writes everything into a hidden folder beside the target and renames it into place
only when it is complete, so a failed or killed build never leaves a half dataset behind.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from operator import itemgetter
from pathlib import Path
from typing import Any

import lmdb
import orjson
from isal.isal_zlib import crc32

from vgfs import __version__, query
from vgfs.errors import VGFSError
from vgfs.layout import (
    ABSENT,
    DB_NAMES,
    DIR_SIZES,
    DUPSORT,
    FILES,
    FORMAT,
    ID,
    JPEG_INDEX,
    KINDS,
    MAX_DBS,
    WHOLE_CHUNK,
    WHOLE_SIZE,
    chunk_key,
    sum_key,
)
from vgfs.progress import progress
from vgfs.release import (
    MAX_ZIP_RATIO,
    Source,
    find_sources,
    read_whole,
    stream_entries,
    stream_whole,
)
from vgfs.schema import IMAGE_DIRS, IMAGE_ZIPS, JPEG_NAME, PER_IMAGE, WHOLE_FILES
from vgfs.squashfs import SquashFSError, SquashFSImage

# -no-duplicates: comparing every file with every other costs 4x the packing time and a
# quarter of mksquashfs's memory, to save the odd duplicate JPEG.
MKSQUASHFS_OPTS = ("-noD", "-no-fragments", "-no-sparse", "-no-duplicates", "-noappend",
                   "-no-xattrs", "-all-root", "-mem", "256M")
COMMIT_EVERY = 2_000  # entries per LMDB write transaction: its dirty pages sit in memory
# Every this many entries the LMDB map is remapped: pages the writes touched through the map
# count as RSS until it is unmapped.
REMAP_EVERY = 4_000
# Buffered query-view postings are spilled to a sorted run file once they take about this
# much memory (8 bytes an image id, ~200 a name): a fixed buffer, whatever the release size,
# and few runs to merge. by-coco and by-flickr have a name per image.
SPILL_BYTES = 4 << 20
_RUN_HEAD = struct.Struct("<HI")  # a postings run's record: key length, number of ids
LMDB_MAP_SIZE = 1 << 40  # address space only; the file grows as data is written
READ_CHUNK = 1 << 20


@dataclass
class ImageSources:
    folders: list[Path] = field(default_factory=list)
    zips: list[Path] = field(default_factory=list)
    sqfs: Path | None = None


def build(release: str | os.PathLike, out: str | os.PathLike, images: list[str] | None = None,
          force: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Build the dataset folder `out` from the release folder; return its manifest."""
    release, out = Path(release), Path(out).absolute()
    if out.exists() and not force:
        raise VGFSError(f"{out}: already exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise VGFSError(f"{out.parent}: output's parent folder does not exist")
    _remove_stale_temps(out)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    with _cleanup_on_failure(tmp):
        tmp.mkdir()
        manifest = _Builder(release, tmp, images, show_progress).run()
        _replace(tmp, out)
    return manifest


@contextmanager
def _cleanup_on_failure(tmp: Path) -> Iterator[None]:
    """Remove the temporary folder on any failure, SIGTERM and Ctrl-C included."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        where = e.filename or tmp
        raise VGFSError(f"{where}: {e.strerror or e}") from e
    except lmdb.MapFullError as e:  # pragma: no cover - map size is 1 TiB
        shutil.rmtree(tmp, ignore_errors=True)
        raise VGFSError(f"{tmp}: annotation database is full") from e
    except lmdb.Error as e:
        full = _full_hint(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        raise VGFSError(f"{tmp / 'annotations.lmdb'}: {e}{full}") from e
    except VGFSError as e:
        full = _full_hint(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        raise VGFSError(f"{e}{full}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, old)


def _full_hint(tmp: Path) -> str:
    """LMDB and mksquashfs report a full device as EIO or a failed write: say what it was."""
    try:
        st = os.statvfs(tmp)
    except OSError:
        return ""
    return "; no space left on the device" if st.f_bavail * st.f_frsize < (1 << 20) else ""


def _remove_stale_temps(out: Path) -> None:
    """Delete temporary folders left by builds of `out` that were killed (their pid is gone)."""
    for old in out.parent.glob(f".{out.name}.building-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished build into place; an existing dataset goes only after that worked."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, trash)
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Sizes:
    """Each image of image_data.json with its file sizes (dataset.DIR_SIZES), in two flat
    arrays at 40 bytes an image: a dict of lists grew the build's memory by ~200 bytes an
    image. Ids arrive in release order; `freeze` sorts them once image_data.json is read."""

    WIDTH = len(FILES)

    def __init__(self) -> None:
        self.ids = array("Q")
        self.cols = array("I")

    def add(self, image_id: int) -> None:
        self.ids.append(image_id)
        self.cols.extend([ABSENT] * self.WIDTH)

    def freeze(self) -> None:
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        self.ids = array("Q", (self.ids[i] for i in order))
        cols, w = array("I"), self.WIDTH
        for i in order:
            cols.extend(self.cols[i * w:(i + 1) * w])
        self.cols = cols

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, image_id: int) -> int | None:
        i = bisect_left(self.ids, image_id)
        return i if i < len(self.ids) and self.ids[i] == image_id else None

    def set(self, i: int, column: int, size: int) -> None:
        if size >= ABSENT:
            raise VGFSError(f"image {self.ids[i]}: a file of 4 GiB or more")
        self.cols[i * self.WIDTH + column] = size

    def row(self, i: int) -> array[int]:
        return self.cols[i * self.WIDTH:(i + 1) * self.WIDTH]


class _WholeFile:
    """One whole file written into the `files` database in WHOLE_CHUNK pieces, a transaction
    per piece, so that the build never holds it whole (image_data.json alone is 17 MB)."""

    def __init__(self, builder: _Builder, name: str) -> None:
        self.builder, self.name = builder, name  # its env, which a remap replaces
        self.buf = bytearray()
        self.chunks = self.size = 0

    def write(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= WHOLE_CHUNK:
            self._put(self.buf[:WHOLE_CHUNK])
            del self.buf[:WHOLE_CHUNK]

    def _put(self, piece: bytes | bytearray) -> None:
        b = self.builder
        with b.env.begin(write=True) as txn:
            txn.put(chunk_key(self.name, self.chunks), piece, db=b.dbs["files"])
        self.chunks += 1
        self.size += len(piece)

    def __enter__(self) -> _WholeFile:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            if self.buf:
                self._put(self.buf)
            b = self.builder
            with b.env.begin(write=True) as txn:
                txn.put(self.name.encode(), WHOLE_SIZE.pack(self.size), db=b.dbs["files"])


class _Builder:
    def __init__(self, release: Path, tmp: Path, images: list[str] | None,
                 show_progress: bool) -> None:
        self.release, self.tmp, self.show = release, tmp, show_progress
        self.image_args = [Path(p) for p in images or []]
        self.sources = find_sources(release)
        self._open_env()
        # image id -> the sizes of its files (dataset.DIR_SIZES), for the ids of image_data.json
        self.sizes = _Sizes()
        # Query-view postings not yet written: (view, name) key -> image ids.
        self.postings: dict[bytes, array[int]] = {}
        self.buffered = 0  # image ids in `postings`
        self.runs: list[Path] = []  # the postings spilled so far, each sorted by key
        self.view_keys: dict[tuple[str, str], bytes] = {}
        self.view_seconds = 0.0
        self.counts: dict[str, Any] = {}
        self.phases: list[dict[str, Any]] = []
        self.digests: dict[str, str] = {}

    def _open_env(self) -> None:
        self.env = lmdb.open(str(self.tmp / "annotations.lmdb"), map_size=LMDB_MAP_SIZE,
                             max_dbs=MAX_DBS, sync=False, metasync=False, writemap=False,
                             readahead=False)
        self.dbs = {n: self.env.open_db(n.encode(), dupsort=n in DUPSORT, dupfixed=n in DUPSORT)
                    for n in DB_NAMES}

    def _remap(self) -> None:
        """Close and reopen the environment. Pages touched through its map count as this
        process's memory until unmapped, so long passes remap every so often (REMAP_EVERY)
        to keep peak RSS independent of the release size."""
        self.env.close()
        self._open_env()

    def _scan(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        """A database's records in key order, remapping every REMAP_EVERY of them."""
        after = b""
        while True:
            with self.env.begin() as txn:
                cur = txn.cursor(db=self.dbs[name])
                if not (cur.set_range(after + b"\0") if after else cur.first()):
                    return
                batch = [item for item, _ in zip(cur, range(REMAP_EVERY), strict=False)]
            self._remap()
            yield from batch
            if len(batch) < REMAP_EVERY:
                return
            after = batch[-1][0]

    def run(self) -> dict[str, Any]:
        with self._phase("annotations"):
            kinds = self._store_annotations()
        with self._phase("query views"):
            views = self._store_view_names()
        # Indexing runs inside the annotation pass: report its share there too.
        self.phases[-1]["indexing_during_annotations_s"] = round(self.view_seconds, 2)
        with self._phase("whole files"):
            whole = self._store_whole_files()
        with self._phase("images"):
            images = self._store_images()
        with self._phase("directories"):
            self._store_dirs()
        self.env.sync(True)
        self.env.close()
        # Readers open the environment lock-free (it never changes): no lock file to ship.
        (self.tmp / "annotations.lmdb" / "lock.mdb").unlink(missing_ok=True)
        manifest = {
            "format": FORMAT,
            "tool": f"vgfs {__version__}",
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "release": str(self.release.absolute()),
            "sources": {s.name: {"file": s.label, "version": s.version, "size": s.size,
                                 "sha256": s.sha256, "entries": s.entries}
                        for s in self.sources.values()},
            "kinds": kinds,
            "whole_files": whole,
            "views": views,
            "images": images,
            "counts": self.counts,
            "checksums": self.digests,
            "phases": self.phases,
        }
        data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
        with open(self.tmp / "manifest.json", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return manifest

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time a phase and record the peak RSS reached by its end."""
        start = time.monotonic()
        yield
        self._remap()  # drop the map's pages the phase touched
        self.phases.append({"phase": name, "seconds": round(time.monotonic() - start, 2),
                            "peak_rss_mb": round(_peak_rss_mb(), 1)})

    # --- annotations ---------------------------------------------------------------------

    def _store_annotations(self) -> dict[str, dict[str, Any]]:
        aliases = {}
        for name, fold in (("object_alias.txt", False), ("relationship_alias.txt", True)):
            src = self.sources.get(name)
            aliases[name] = query.load_aliases(read_whole(src).decode(), fold) if src else {}
        self.object_aliases = aliases["object_alias.txt"]
        self.predicate_aliases = aliases["relationship_alias.txt"]
        self.objects_from = "objects" if "objects.json" in self.sources else "attributes"
        kinds: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            src = self.sources.get(PER_IMAGE[kind][0] + ".json")
            if src is not None:
                kinds[kind] = self._store_kind(kind, src)
        if "graph" not in kinds and {"objects", "attributes", "relationships"} & kinds.keys():
            kinds["graph"] = self._compose_graphs(kinds)
        return kinds

    def _store_kind(self, kind: str, src: Source) -> dict[str, Any]:
        db, sums, column = self.dbs[kind], self.dbs["sums"], FILES.index(kind)
        unknown: list[int] = []
        known = 0
        digest = hashlib.sha256()
        txn = self.env.begin(write=True)
        try:
            with progress(f"{src.name}", src.size_hint(), "B", self.show) as bar:
                entries = stream_entries(src, kind, bar.update)
                for n, (image_id, entry, data) in enumerate(entries, 1):
                    key = ID.pack(image_id)
                    if not txn.put(key, data, db=db, overwrite=False):
                        raise VGFSError(f"{src.label}: image id {image_id} appears twice")
                    if kind == "meta":
                        self.sizes.add(image_id)
                        row = len(self.sizes) - 1
                    else:
                        row = self.sizes.index(image_id)
                    if row is None:
                        unknown.append(image_id)
                    else:
                        known += 1
                        self.sizes.set(row, column, len(data))
                        self._index_views(kind, image_id, entry)
                    txn.put(sum_key(kind, image_id), _crc(data), db=sums)
                    digest.update(key)
                    digest.update(data)
                    if n % COMMIT_EVERY == 0:
                        txn.commit()
                        if n % REMAP_EVERY == 0:
                            if self.buffered * 8 + len(self.postings) * 200 >= SPILL_BYTES:
                                start = time.perf_counter()
                                self._spill_postings()
                                self.view_seconds += time.perf_counter() - start
                            self._remap()
                            db, sums = self.dbs[kind], self.dbs["sums"]
                        txn = self.env.begin(write=True)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        if kind == "meta":
            self.sizes.freeze()
        missing = len(self.sizes) - known
        if unknown:
            _warn(f"{src.label}: {len(unknown)} entries for image ids not in image_data.json"
                  f" (first: {unknown[:5]}); stored, but not shown in the mount")
        if missing:
            _warn(f"{src.label}: no entry for {missing} images of image_data.json")
        self.digests[kind] = digest.hexdigest()
        return {"source": src.name, "version": src.version, "entries": known + len(unknown),
                "unknown_ids": len(unknown), "missing_images": missing}

    def _index_views(self, kind: str, image_id: int, entry: dict[str, Any]) -> None:
        """Note the image under each query-view name its entry holds (see query.py)."""
        start = time.perf_counter()
        keys = self.view_keys
        for pair in query.extract(kind, entry, self.object_aliases, self.predicate_aliases,
                                  self.objects_from):
            key = keys.get(pair)
            if key is None:
                key = query.key(pair[0], query.escape(pair[1]))
                if pair[0] not in query.LINK_VIEWS:  # names repeat: escape each once
                    keys[pair] = key
            ids = self.postings.get(key)
            if ids is None:
                ids = self.postings[key] = array("Q")
            ids.append(image_id)
            self.buffered += 1
        self.view_seconds += time.perf_counter() - start

    def _spill_postings(self) -> None:
        """Write the buffered postings to a run file, sorted by key, and empty the buffer. The
        runs are merged at the end, so the DUPSORT database is written by appends in key order:
        inserting into it as the pass goes touched more of its pages the bigger it grew, and
        the build's memory with them."""
        if not self.postings:
            return
        path = self.tmp / "postings" / f"{len(self.runs):05}"
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            for key in sorted(self.postings):
                ids = self.postings[key]
                f.write(_RUN_HEAD.pack(len(key), len(ids)) + key)
                ids.tofile(f)
        self.runs.append(path)
        self.postings.clear()
        self.buffered = 0

    def _store_view_names(self) -> dict[str, int]:
        """Merge the postings' runs into the views' databases, in key order: each name's image
        ids, its position in its view (names are numbered in sorted order), and each view's
        counts.json. Transactions stay small: their dirty pages sit in memory."""
        self._spill_postings()
        counts = [array("I") for _ in query.VIEWS]  # per view, each name's count by position
        merged = heapq.merge(*map(_read_run, self.runs), key=itemgetter(0))
        txn = self.env.begin(write=True)
        pending = 0
        try:
            for key, runs in groupby(merged, key=itemgetter(0)):
                ids = sorted({i for _, part in runs for i in part})
                view, name = query.VIEWS[key[0]], key[1:]
                position = len(counts[key[0]])
                dbs = self.dbs  # a remap replaces them
                txn.cursor(db=dbs["view_ids"]).putmulti([(key, ID.pack(i)) for i in ids],
                                                        dupdata=True, append=True)
                txn.put(query.pos_key(view, position), query.COUNT.pack(len(ids)) + name,
                        db=dbs["view_names"], append=True)
                txn.put(key, query.POS.pack(position), db=dbs["view_pos"], append=True)
                counts[key[0]].append(len(ids))
                pending += len(ids) + 16  # ~8 bytes an id, ~128 a name
                if pending >= COMMIT_EVERY * 50:  # a few MB of dirty pages
                    txn.commit()
                    self._remap()
                    txn = self.env.begin(write=True)
                    pending = 0
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        shutil.rmtree(self.tmp / "postings", ignore_errors=True)
        for view, view_counts in zip(query.VIEWS, counts, strict=True):
            self._store_counts(view, view_counts)
        return {view: len(c) for view, c in zip(query.VIEWS, counts, strict=True)}

    def _store_counts(self, view: str, counts: array[int]) -> None:
        """A view's counts.json, name -> count, most frequent first, then by name: positions
        are in name order and the sort is stable. Written as it is read from the view's names,
        never held whole: by-coco has a name per image."""
        order = sorted(range(len(counts)), key=counts.__getitem__, reverse=True)
        with _WholeFile(self, f"{view}/counts.json") as out:
            out.write(b"{")
            for start in range(0, len(order), REMAP_EVERY):
                with self.env.begin() as txn:
                    pieces = []
                    for position in order[start:start + REMAP_EVERY]:
                        raw = txn.get(query.pos_key(view, position), db=self.dbs["view_names"])
                        name = raw[query.COUNT.size:].decode("utf-8", "surrogatepass")
                        pieces.append(orjson.dumps(name) + b":%d" % counts[position])
                out.write((b"," if start else b"") + b",".join(pieces))
                self._remap()
            out.write(b"}")

    def _compose_graphs(self, kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """scene_graphs.json is absent: compose each image's graph from the other sources."""
        digest = hashlib.sha256()
        column = FILES.index("graph")
        ids = self.sizes.ids
        n = 0
        with progress("graph.json (composed)", len(ids), "img", self.show) as bar:
            for start in range(0, len(ids), COMMIT_EVERY):
                with self.env.begin(write=True) as txn:
                    for row in range(start, min(start + COMMIT_EVERY, len(ids))):
                        image_id = ids[row]
                        key = ID.pack(image_id)
                        graph = _compose(txn, self.dbs, key)
                        bar.update()
                        if graph is None:
                            continue
                        data = orjson.dumps(graph)
                        txn.put(key, data, db=self.dbs["graph"])
                        txn.put(sum_key("graph", image_id), _crc(data), db=self.dbs["sums"])
                        digest.update(key + data)
                        self.sizes.set(row, column, len(data))
                        n += 1
                self._remap()
        self.digests["graph"] = digest.hexdigest()
        used = [k for k in ("attributes", "objects", "relationships") if k in kinds]
        return {"source": "composed from " + ", ".join(used), "version": "composed",
                "entries": n, "unknown_ids": 0, "missing_images": len(ids) - n}

    def _store_dirs(self) -> None:
        """Each image's file sizes in one small record (see dataset.DIR_SIZES)."""
        with self.env.begin(write=True) as txn:
            for row, image_id in enumerate(self.sizes.ids):
                txn.put(ID.pack(image_id), DIR_SIZES.pack(*self.sizes.row(row)),
                        db=self.dbs["dirs"], append=True)

    # --- whole-dataset files -------------------------------------------------------------

    def _store_whole_files(self) -> list[str]:
        stored = []
        for name in WHOLE_FILES:
            src = self.sources.get(name)
            if src is None:
                continue
            with _WholeFile(self, name) as out:
                stream_whole(src, out.write)
            self.digests["file:" + name] = src.sha256
            stored.append(name)
        return stored

    # --- JPEGs ---------------------------------------------------------------------------

    def _store_images(self) -> dict[str, Any]:
        found = self._find_image_sources()
        if found.sqfs is not None:
            if found.folders or found.zips:
                raise VGFSError(f"{found.sqfs}: an existing SquashFS image cannot be combined"
                                " with image folders or zips; give one or the other")
            return self._index_existing(found.sqfs)
        jpegs = _SourceJpegs()
        for folder in found.folders:
            jpegs.add(folder, _folder_jpegs(folder))
        stage = self.tmp / "staging"
        for zpath in found.zips:
            self._extract_zip(zpath, jpegs, stage / f"zip{len(jpegs.folders)}")
        if not len(jpegs):
            self._count_images()
            return {"path": None, "jpegs": 0}
        image = self.tmp / "images.sqfs"
        self._mksquashfs([folder for folder, _ in jpegs.folders], image)
        # The check reads the extracted JPEGs, so the staging folder goes only after it.
        self._index_image(image, jpegs)
        shutil.rmtree(stage, ignore_errors=True)
        return {"path": "images.sqfs", "jpegs": len(jpegs), "size": image.stat().st_size,
                "built_with": "mksquashfs " + " ".join(MKSQUASHFS_OPTS)}

    def _find_image_sources(self) -> ImageSources:
        found = ImageSources()
        candidates = self.image_args or self._default_image_paths()
        for p in candidates:
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
        return found

    def _default_image_paths(self) -> list[Path]:
        """VG_100K and VG_100K_2 wherever they sit under the release, and the image zips."""
        paths: list[Path] = []
        for root, dirs, _ in os.walk(self.release):
            depth = Path(root).relative_to(self.release).parts
            for d in sorted(dirs):
                if d in IMAGE_DIRS:
                    paths.append(Path(root) / d)
            dirs[:] = [d for d in sorted(dirs) if d not in IMAGE_DIRS and len(depth) < 2]
        paths += [self.release / z for z in IMAGE_ZIPS if (self.release / z).is_file()]
        sqfs = sorted(self.release.glob("*.sqfs"))
        return paths + sqfs

    def _extract_zip(self, zpath: Path, jpegs: _SourceJpegs, dest: Path) -> None:
        """Unpack a zip's JPEGs under names we choose, so no member path is ever trusted."""
        members = list(_zip_jpegs(zpath))
        ids = array("Q", sorted(image_id for image_id, _ in members))
        for a, b in pairwise(ids):
            if a == b:
                twice = [m for i, m in members if i == a]
                raise VGFSError(f"{zpath}:{twice[1]}: image {a} also at {zpath}:{twice[0]}")
        member_of = dict(members)
        jpegs.add(dest, ids, lambda image_id: f"{zpath}:{member_of[image_id]}")
        dest.mkdir(parents=True)
        with progress(f"extracting {zpath.name}", len(members), "img", self.show) as bar, \
                zipfile.ZipFile(zpath) as zf:
            for image_id, member in members:
                with zf.open(member) as src, open(dest / f"{image_id}.jpg", "wb") as dst:
                    shutil.copyfileobj(src, dst, READ_CHUNK)
                bar.update()

    def _mksquashfs(self, folders: list[Path], image: Path) -> None:
        if shutil.which("mksquashfs") is None:
            raise VGFSError("mksquashfs: not found; install squashfs-tools")
        tty = self.show and sys.stderr.isatty()
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

    def _index_image(self, image: Path, jpegs: _SourceJpegs | None) -> dict[str, int]:
        """Record each JPEG's extent in the image, checking that those bytes are that JPEG:
        the source file's when `jpegs` names the sources, else what the image holds."""
        try:
            sq = SquashFSImage(image)
        except SquashFSError as e:
            raise VGFSError(str(e)) from e
        db = self.dbs["jpegs"]
        digest = hashlib.sha256()
        slow = indexed = 0
        fd = os.open(image, os.O_RDONLY)
        buf = bytearray(READ_CHUNK)  # reused: a fresh buffer per JPEG fragments the heap
        txn = self.env.begin(write=True)
        try:
            total = len(jpegs) if jpegs is not None else None
            with sq, progress("indexing JPEGs", total, "img", self.show) as bar:
                for entry in sq.walk():  # streamed: nothing per image is kept but its id
                    base = entry.path.rsplit("/", 1)[-1]
                    m = JPEG_NAME.fullmatch(base)
                    if m is None:
                        if base.lower().endswith(".jpg"):
                            raise VGFSError(f"{image}: {entry.path} is not named"
                                            " <image_id>.jpg")
                        continue  # other files a site keeps beside the JPEGs
                    image_id = int(m[1])
                    extent = entry.extent()
                    if extent is None:
                        data = sq.read(entry)
                        sha, crc = hashlib.sha256(data).digest(), crc32(data)
                        path = entry.path.encode()
                        slow += 1
                    else:
                        digests, path = _digest_range(fd, *extent, buf), b""
                        if digests is None:
                            raise VGFSError(f"{image}: truncated at {entry.path}")
                        sha, crc = digests
                    if jpegs is not None:
                        source = jpegs.path(image_id)
                        if source is None or _sha256_file(source) != sha:
                            raise VGFSError(f"{image}: bytes at {entry.path} differ from"
                                            f" {source or 'every source JPEG'}")
                    offset = extent[0] if extent else 0
                    value = JPEG_INDEX.pack(offset, entry.size, sha, crc) + path
                    if not txn.put(ID.pack(image_id), value, db=db, overwrite=False):
                        raise VGFSError(f"{image}: image {image_id} is there twice")
                    indexed += 1
                    row = self.sizes.index(image_id)
                    if row is not None:
                        self.sizes.set(row, len(FILES) - 1, entry.size)
                    bar.update()
                    if indexed % COMMIT_EVERY == 0:
                        txn.commit()
                        if indexed % REMAP_EVERY == 0:
                            self._remap()
                            db = self.dbs["jpegs"]
                        txn = self.env.begin(write=True)
            txn.commit()
        except SquashFSError as e:
            txn.abort()
            raise VGFSError(str(e)) from e
        except BaseException:
            txn.abort()
            raise
        finally:
            os.close(fd)
        if jpegs is not None and indexed != len(jpegs):
            raise VGFSError(f"{image}: holds {indexed} JPEGs, expected {len(jpegs)}")
        self._count_images(digest)
        self.digests["jpegs"] = digest.hexdigest()
        return {"slow_path": slow}

    def _index_existing(self, image: Path) -> dict[str, Any]:
        """Index a site's existing image in place: it is referenced, never copied."""
        image = image.absolute()
        info = self._index_image(image, None)
        return {"path": str(image), "jpegs": self.counts["jpegs"], "size": image.stat().st_size,
                "built_with": "existing image, indexed in place", **info}

    def _count_images(self, digest: Any = None) -> None:
        """Images without a JPEG and JPEGs without an image, from the index in id order; and
        the index's digest, in id order whatever order the image stores the files in."""
        have = orphans = 0
        first_orphans: list[int] = []
        for key, value in self._scan("jpegs"):
            if digest is not None:
                digest.update(key + value)
            image_id = ID.unpack(key)[0]
            have += 1
            if self.sizes.index(image_id) is None:
                orphans += 1
                if len(first_orphans) < 5:
                    first_orphans.append(image_id)
        without = len(self.sizes) - (have - orphans)
        self.counts.update(images=len(self.sizes), jpegs=have,
                           images_without_jpeg=without, jpegs_without_annotations=orphans)
        if without and have:
            _warn(f"{without} images of image_data.json have no JPEG")
        if orphans:
            _warn(f"{orphans} JPEGs have no entry in image_data.json (first:"
                  f" {first_orphans}); stored, but not shown in the mount")


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


def _folder_jpegs(folder: Path) -> array[int]:
    """The sorted ids of an images folder, which must hold only files named <id>.jpg."""
    ids = array("Q")
    with os.scandir(folder) as it:
        for e in it:
            label = os.path.join(folder, e.name)
            if e.is_symlink():
                raise VGFSError(f"{label}: is a symbolic link; the images folder must hold the"
                                " JPEG files themselves")
            if not e.is_file(follow_symlinks=False):
                raise VGFSError(f"{label}: unexpected entry in the images folder; it must hold"
                                " only files named <image_id>.jpg")
            m = JPEG_NAME.fullmatch(e.name)
            if m is None:
                raise VGFSError(f"{label}: not named <image_id>.jpg; every file in an images"
                                " folder must be a JPEG named by its image id")
            ids.append(int(m[1]))
    return array("Q", sorted(ids))


def _read_run(path: Path) -> Iterator[tuple[bytes, array[int]]]:
    """A postings run's (key, image ids) in key order."""
    with open(path, "rb", buffering=1 << 16) as f:
        while head := f.read(_RUN_HEAD.size):
            size, count = _RUN_HEAD.unpack(head)
            key, ids = f.read(size), array("Q")
            ids.fromfile(f, count)
            yield key, ids


def _zip_jpegs(zpath: Path) -> Iterator[tuple[int, str]]:
    """The JPEGs of an images zip: members named <id>.jpg, under any folder."""
    try:
        with zipfile.ZipFile(zpath) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile) as e:
        raise VGFSError(f"{zpath}: not a readable zip file ({e})") from e
    for info in infos:
        if info.is_dir():
            continue
        base = info.filename.rsplit("/", 1)[-1]
        if not base.lower().endswith(".jpg") or info.filename.startswith("__MACOSX/"):
            continue
        m = JPEG_NAME.fullmatch(base)
        if m is None:
            raise VGFSError(f"{zpath}:{info.filename}: not named <image_id>.jpg")
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO:
            raise VGFSError(f"{zpath}:{info.filename}: expands"
                            f" {info.file_size // info.compress_size} times, refusing a likely"
                            " zip bomb")
        yield int(m[1]), info.filename


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


def _crc(data: bytes) -> bytes:
    return crc32(data).to_bytes(4, "big")


def _compose(txn: lmdb.Transaction, dbs: dict[str, Any], key: bytes) -> dict[str, Any] | None:
    """One image's graph in the scene_graphs.json format, from what the sources hold."""
    def get(kind: str) -> Any:
        raw = txn.get(key, db=dbs[kind])
        return None if raw is None else orjson.loads(raw)

    attrs, objs, rels = get("attributes"), get("objects"), get("relationships")
    if attrs is None and objs is None and rels is None:
        return None
    if attrs is not None:
        objects = attrs["attributes"]
    elif objs is not None:
        objects = objs["objects"]
    else:
        objects = []
    relationships = []
    for r in (rels or {}).get("relationships", []):
        flat = {k: r[k] for k in ("relationship_id", "id", "predicate", "synsets") if k in r}
        for end in ("subject", "object"):
            endpoint = r.get(end)
            if isinstance(endpoint, dict):
                oid = endpoint.get("object_id", endpoint.get("id"))
                if oid is not None:
                    flat[end + "_id"] = oid
        relationships.append(flat)
    return {"image_id": ID.unpack(key)[0], "objects": objects, "relationships": relationships}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)
