"""Shared fixtures and helpers: the real excerpts, built datasets, ways to damage them, and
real FUSE mounts that always unmount."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import lmdb
import pytest
import zstandard

from vgfs.build import build
from vgfs.dataset import Dataset, open_dataset
from vgfs.layout import FRAME, FRAME_AT, FRAMES_FILE, ID, KINDS, MAX_DBS, frame_key
from vgfs.mount import mounted_fs
from vgfs.pages import DB, HEADER, NODE, P_BRANCH, P_LEAF
from vgfs.schema import PER_IMAGE
from vgfs.tree import ROOT, Node, Tree

VG_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "vg-sample"
RELEASE = VG_SAMPLE / "release"
V12 = VG_SAMPLE / "v1.2"
VGFS = [sys.executable, "-m", "vgfs"]
# The real excerpts' four JPEGs, by image id, under the release folder.
JPEGS = {1: "VG_100K_2/1.jpg", 2: "VG_100K/2.jpg", 4: "VG_100K/4.jpg", 5: "VG_100K/5.jpg"}
BIN = Path(sys.executable).parent  # this checkout's console scripts


def vgfs(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the real command line, as users do."""
    proc = subprocess.run([*VGFS, *args], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"vgfs {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def mounted(dataset: Path, mountpoint: Path, *options: str) -> Iterator[Path]:
    """Mount with `vgfs mount` and unmount in every case, even when the test fails."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    args = ["mount", str(dataset), str(mountpoint)]
    for opt in options:
        args += ["-o", opt]
    try:
        vgfs(*args, timeout=60)
        yield mountpoint
    finally:
        force_unmount(mountpoint)


def force_unmount(mountpoint: Path) -> None:
    if mounted_fs(mountpoint) is None:
        return
    if vgfs("umount", str(mountpoint), check=False, timeout=30).returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
    assert mounted_fs(mountpoint) is None, f"{mountpoint} is still mounted"


def image_id_of(entry: dict) -> int:
    """An entry's image id: `image_id` in most release files, `id` in regions and QAs."""
    return entry["image_id"] if "image_id" in entry else entry["id"]


def entries_by_id(path: Path) -> dict[int, dict]:
    """A per-image release file's entries by image id, loaded with the standard library."""
    entries = json.loads(path.read_bytes())
    by_id = {image_id_of(e): e for e in entries}
    assert len(by_id) == len(entries)
    return by_id


def walk(tree: Tree) -> Iterator[tuple[bytes, Node]]:
    """Every node under the root as (path, node), found by readdir, symlinks not followed."""
    todo = [(b"", ROOT)]
    while todo:
        path, ino = todo.pop()
        for name, node, _ in tree.readdir(ino, 0):
            yield path + name, node
            if node.is_dir:
                todo.append((path + name + b"/", node.ino))


def flip_byte(path: Path, offset: int) -> None:
    """Flip the lowest bit of one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def stored_frame(dataset: Path, path: str, frame: int) -> tuple[int, bytes, tuple[int, int]]:
    """Where one stored zstd frame of the release file `path` sits in the frames file, its
    compressed bytes, and the byte range [start, end) of the file that it holds."""
    with open_dataset(dataset) as ds:
        file_no, size = ds.files[path]
        with ds.env.begin() as txn:
            at = txn.get(frame_key(file_no, frame), db=ds.dbs["frames"])
    assert at is not None and frame * FRAME < size, f"{path} has no frame {frame}"
    offset, length = FRAME_AT.unpack(at)
    with open(dataset / FRAMES_FILE, "rb") as f:
        f.seek(offset)
        raw = f.read(length)
    return offset, raw, (frame * FRAME, min((frame + 1) * FRAME, size))


def damage_frame(dataset: Path, path: str, frame: int) -> tuple[int, int]:
    """Flip one bit in the middle of one stored zstd frame of the release file `path`, in the
    frames file itself, as a bad sector would; returns the byte range [start, end) of `path`
    that the frame holds, whose reads must now fail. The damaged frame is checked to fail
    zstd's decompression (its content checksum) before it is written."""
    offset, raw, span = stored_frame(dataset, path, frame)
    for at in range(len(raw) // 2, len(raw)):
        damaged = bytearray(raw)
        damaged[at] ^= 0x01
        try:
            zstandard.ZstdDecompressor().decompress(bytes(damaged))
        except zstandard.ZstdError:
            break
    else:
        raise AssertionError(f"no single bit flip breaks frame {frame} of {path}")
    with open(dataset / FRAMES_FILE, "r+b") as f:
        f.seek(offset + at)
        f.write(bytes([damaged[at]]))
    return span


def damage_record(dataset: Path, kind: str, image_id: int) -> tuple[int, int]:
    """Damage the stored frame that holds the middle of an image's entry of `kind` (in the
    kind's source file); returns that frame's byte range of the source file."""
    with open_dataset(dataset) as ds:
        record = ds.image(image_id)
        assert record is not None, f"no image {image_id}"
        offset, length = record.ranges[KINDS.index(kind)]
        source = ds.manifest["kinds"][kind]["source"]
    return damage_frame(dataset, source, (offset + length // 2) // FRAME)


def damage_leaf_page(dataset: Path, db: str, which: int) -> list[int]:
    """Clear the type flags of leaf page `which` (in key order) of the image-keyed database
    `db`, as a bad sector or a stray write would; returns the image ids whose records it holds.
    LMDB then gives MDB_CORRUPTED for the reads that reach that page. The page layout is
    pages.py's; the walk to the page is this helper's own, not the code under test."""
    path = dataset / "annotations.lmdb"
    env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=MAX_DBS)
    with env.begin() as txn:
        root = DB.unpack(txn.get(db.encode()))[-1]
    psize = env.stat()["psize"]
    env.close()
    data = (path / "data.mdb").read_bytes()
    leaves, todo = [], [root]
    while todo:
        pgno = todo.pop(0)
        page = data[pgno * psize:(pgno + 1) * psize]
        _, _, flags, lower, _ = HEADER.unpack_from(page)
        nodes = [NODE.unpack_from(page, o) + (o,)
                 for o in struct.unpack_from(f"<{(lower - HEADER.size) // 2}H", page, HEADER.size)]
        if flags & P_BRANCH:  # a branch node's lo, hi and flags are its child's page number
            todo += [lo | hi << 16 | nflags << 32 for lo, hi, nflags, _, _ in nodes]
        else:
            assert flags & P_LEAF, f"page {pgno} of {db} is neither a branch nor a leaf"
            ids = [ID.unpack_from(page, o + NODE.size)[0] for _, _, _, _, o in nodes]
            leaves.append((pgno, ids))
    pgno, ids = leaves[which]
    with open(path / "data.mdb", "r+b") as f:
        f.seek(pgno * psize + 10)
        f.write(b"\0\0")
    return ids


_SPACE = re.compile(r"[ \t\n\r]*")


def entry_spans(path: Path) -> dict[int, tuple[int, int]]:
    """Where each entry of a per-image release file sits in it: image id -> (byte offset,
    length) of the entry's own bytes, from its first to its last character, as
    json.JSONDecoder().raw_decode finds them."""
    text = path.read_bytes().decode()
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text).end()
    assert text[pos] == "[", f"{path}: not a JSON array"
    pos, byte, spans = pos + 1, pos + 1, {}
    while True:
        start = _SPACE.match(text, pos).end()
        byte += start - pos  # JSON's whitespace and punctuation are ASCII
        if text[start] == "]":
            return spans
        entry, end = decoder.raw_decode(text, start)
        length = len(text[start:end].encode())
        image_id = image_id_of(entry)
        assert image_id not in spans, f"{path}: image {image_id} twice"
        spans[image_id] = (byte, length)
        pos = _SPACE.match(text, end).end()
        byte += length + pos - end
        if text[pos] == ",":
            pos, byte = pos + 1, byte + 1
        else:
            assert text[pos] == "]", f"{path}: malformed at character {pos}"


def entry_bytes(path: Path) -> dict[int, bytes]:
    """The release's own bytes of each entry of a per-image file, by image id: slices of the
    file (entry_spans)."""
    data = path.read_bytes()
    return {i: data[off:off + length] for i, (off, length) in entry_spans(path).items()}


def driver_by_id(release: Path, work: Path) -> dict[int, bytes]:
    """by-id/<id>.json as the official driver's own preprocessing writes it from the release's
    attributes.json and scene_graphs.json (add_attrs_to_scene_graphs, which rewrites
    scene_graphs.json, so it runs on copies in `work`; then save_scene_graphs_by_id)."""
    from visual_genome import local

    work.mkdir(parents=True, exist_ok=True)
    for name in ("attributes.json", "scene_graphs.json"):
        shutil.copyfile(release / name, work / name)
    # Its progress bars go nowhere, to a stream that stays open: progressbar keeps it.
    with redirect_stderr(io.StringIO()):
        local.add_attrs_to_scene_graphs(f"{work}/")
        local.save_scene_graphs_by_id(f"{work}/", f"{work}/by-id/")
    return {int(p.stem): p.read_bytes() for p in (work / "by-id").iterdir()}


def drop_cache(path: Path) -> None:
    """Write back and drop a file's pages, so that the next read comes from the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def site_image(out: Path, *options: str) -> Path:
    """A site's own SquashFS image of the excerpts' JPEGs, made by mksquashfs with `options`."""
    subprocess.run(["mksquashfs", str(RELEASE / "VG_100K"), str(RELEASE / "VG_100K_2"),
                    str(out), "-noappend", "-quiet", "-no-progress", *options], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def _rename(obj: dict, old: str, new: str) -> dict:
    return {new if k == old else k: v for k, v in obj.items()}


def write_v10_release(tmp_path: Path) -> Path:
    """The excerpts in v1.0 shape: `id` for image and item ids, `object_names`, no synsets."""
    rel = tmp_path / "v1.0"
    rel.mkdir()

    def load(name: str) -> list:
        return json.loads((RELEASE / name).read_bytes())

    def obj10(o: dict) -> dict:
        o = _rename(o, "object_id", "id")
        o.pop("synsets", None)
        o.pop("merged_object_ids", None)
        return o

    files = {
        "image_data.json": [_rename(e, "image_id", "id") for e in load("image_data.json")],
        "objects.json": [{"id": e["image_id"], "objects": [obj10(o) for o in e["objects"]]}
                         for e in load("objects.json")],
        "attributes.json": [{"id": e["image_id"], "attributes": [
            _rename(obj10(o), "names", "object_names") for o in e["attributes"]]}
            for e in load("attributes.json")],
        "relationships.json": [{"id": e["image_id"], "relationships": [
            {**_rename({k: v for k, v in r.items() if k != "synsets"}, "relationship_id", "id"),
             "subject": obj10({k: v for k, v in r["subject"].items() if k != "names"}),
             "object": obj10({k: v for k, v in r["object"].items() if k != "names"})}
            for r in e["relationships"]]} for e in load("relationships.json")],
        "region_descriptions.json": [{"id": e["id"], "regions": [
            _rename(r, "region_id", "id") for r in e["regions"]]}
            for e in load("region_descriptions.json")],
    }
    for name, data in files.items():
        (rel / name).write_text(json.dumps(data))
    return rel


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps yet counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def lookups_for(mountpoint: Path, action: Callable[[], object], tries: int = 3) -> int:
    """The fewest lookup requests the mount got while `action` ran, over `tries` runs: another
    process on the machine dropping the kernel's caches (a cold benchmark) makes it forget
    cached entries, and one run may see that; a cache that does not work shows in every run."""
    def lookups() -> int:
        stats = json.loads(vgfs("stats", str(mountpoint), "--json").stdout)
        return stats["ops"].get("lookup", {"count": 0})["count"]

    fewest = None
    for _ in range(tries):
        before = lookups()
        action()
        got = lookups() - before
        fewest = got if fewest is None else min(fewest, got)
        if fewest == 0:
            break
    return fewest


def wait_for(what: str, condition: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def release() -> Path:
    assert RELEASE.is_dir(), f"the real excerpts are missing: {RELEASE}"
    return RELEASE


@pytest.fixture(scope="session")
def real_dataset(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Path:
    """The real excerpts, built once for the session."""
    out = tmp_path_factory.mktemp("real") / "dataset"
    build(release, out, show_progress=False)
    return out


@pytest.fixture
def dataset_copy(real_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the session's dataset, to damage or replace."""
    return Path(shutil.copytree(real_dataset, tmp_path / "dataset"))


@pytest.fixture(scope="session")
def release_entries(release: Path) -> dict[str, dict[int, dict]]:
    """Each kind's entries in the real excerpts by image id, straight from the release files."""
    return {kind: entries_by_id(release / f"{stem}.json") for kind, (stem, _) in PER_IMAGE.items()}


@pytest.fixture(scope="session")
def real_ds(real_dataset: Path) -> Iterator[Dataset]:
    """The session's real dataset, opened once for the in-process tests of the core, with its
    indexes held in memory as a mount holds them."""
    with open_dataset(real_dataset) as ds:
        yield held(ds)


def held(ds: Dataset) -> Dataset:
    """`ds` with its indexes held in memory, as a mount holds them: only then does the read path
    serve on the event loop what needs no storage."""
    ds.hold(threading.Event())
    return ds


@pytest.fixture(scope="session")
def real_tree(real_ds: Dataset) -> Tree:
    return Tree(real_ds)


@pytest.fixture(scope="session")
def real_mount(tmp_path_factory: pytest.TempPathFactory, real_dataset: Path) -> Iterator[Path]:
    with mounted(real_dataset, tmp_path_factory.mktemp("mnt") / "vg") as mp:
        yield mp


@pytest.fixture(scope="session")
def no_scene_graphs(tmp_path_factory: pytest.TempPathFactory, release: Path
                    ) -> Iterator[Dataset]:
    """The excerpts' annotation files without scene_graphs.json (nor JPEGs), built and opened
    once: its graph.json files are composed."""
    root = tmp_path_factory.mktemp("composed")
    (root / "release").mkdir()
    for path in release.glob("*.json"):
        if path.name != "scene_graphs.json":
            shutil.copy(path, root / "release")
    build(root / "release", root / "dataset", show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield ds


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release of 300 images, built once for the session."""
    from vgfs.sample import write_sample

    root = tmp_path_factory.mktemp("synthetic")
    write_sample(root / "release", images=300, seed=1, show_progress=False)
    build(root / "release", root / "dataset", show_progress=False)
    return root / "dataset"


@pytest.fixture(scope="session")
def synthetic_ds(synthetic_dataset: Path) -> Iterator[Dataset]:
    """The session's synthetic dataset, opened once; its release is at ../release."""
    with open_dataset(synthetic_dataset) as ds:
        yield ds


@pytest.fixture(scope="session")
def synthetic_tree(synthetic_ds: Dataset) -> Tree:
    return Tree(synthetic_ds)


@pytest.fixture(scope="session")
def synthetic_mount(tmp_path_factory: pytest.TempPathFactory,
                    synthetic_dataset: Path) -> Iterator[Path]:
    with mounted(synthetic_dataset, tmp_path_factory.mktemp("mnt") / "synthetic") as mp:
        yield mp


def writable_copy(src: Path, dst: Path) -> Path:
    """A copy of `src` at `dst` that tests may change (the excerpts may be read-only)."""
    shutil.copytree(src, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    os.chmod(dst, 0o755)
    return dst


@pytest.fixture
def release_copy(tmp_path: Path, release: Path) -> Path:
    """A writable copy of the real excerpts, for tests that break or swap files."""
    return writable_copy(release, tmp_path / "release")
