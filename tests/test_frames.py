"""Stored files as zstd frames (frames.py): any range of a file comes out of the frames that
hold it, each frame decompresses alone, and a damaged frame is an error for the bytes it holds,
never wrong bytes, whenever it is read."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.conftest import damage_frame
from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.dataset import Dataset, open_dataset
from vgfs.errors import VGFSError
from vgfs.frames import NOWAIT_FRAMES, Frames, WouldBlock, compressor
from vgfs.layout import FRAME, FRAME_AT, FRAME_KEY, FRAMES_FILE, frame_key
from vgfs.tree import IMAGES, Tree

# A file of three and a half frames, in no way compressible: every byte counts.
DATA = random.Random(3).randbytes(3 * FRAME + FRAME // 2)


def _frames_of(data: bytes, file_no: int = 0) -> dict[bytes, bytes]:
    """`data` cut into FRAME-sized pieces, each compressed as the build compresses it."""
    cctx = compressor()
    return {frame_key(file_no, i): cctx.compress(data[off:off + FRAME])
            for i, off in enumerate(range(0, len(data), FRAME))}


def _reader(store: dict[bytes, bytes], gets: list[bytes] | None = None,
            cache: LRUCache | None = None) -> Frames:
    """A reader of frames kept in a file of their own, one after the other, as the build
    writes them."""
    places, blob = {}, bytearray()
    for key, frame in store.items():
        places[key] = FRAME_AT.pack(len(blob), len(frame))
        blob += frame
    fd = os.memfd_create("frames")
    os.write(fd, blob)

    def locate(key: bytes) -> bytes | None:
        if gets is not None:
            gets.append(key)
        return places.get(key)

    return Frames(locate, fd, cache or LRUCache(1 << 20), lambda n: f"file{n}.json")


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("off, size", [
    (0, 1), (10, 100), (FRAME - 100, 100), (FRAME, FRAME),  # inside one frame
    (FRAME - 1, 2), (FRAME - 10, FRAME + 20), (100, 3 * FRAME),  # across two, three, four
    (0, len(DATA)),  # the whole file
    (3 * FRAME, FRAME // 2), (len(DATA) - 1, 1), (3 * FRAME - 5, FRAME // 2 + 5),  # the end
])
def test_a_range_is_the_bytes_of_the_file(off: int, size: int) -> None:
    """Inside one frame, across frames, up to the last (short) frame's end."""
    frames = _reader(_frames_of(DATA))
    assert bytes(frames.range(0, off, size)) == DATA[off:off + size]


def test_a_range_inside_one_frame_reads_only_that_frame() -> None:
    """A per-image read decompresses one frame, not the file: the frames it does not touch
    are never fetched, and a range inside a frame is a view of it, not a copy."""
    gets: list[bytes] = []
    frames = _reader(_frames_of(DATA), gets)
    got = frames.range(0, 2 * FRAME + 7, 1000)
    assert isinstance(got, memoryview) and bytes(got) == DATA[2 * FRAME + 7:2 * FRAME + 1007]
    assert gets == [frame_key(0, 2)]
    assert bytes(frames.range(0, FRAME - 3, 6)) == DATA[FRAME - 3:FRAME + 3]
    assert gets == [frame_key(0, 2), frame_key(0, 0), frame_key(0, 1)]
    assert frames.range(0, 5, 0) == b"" and frames.range(0, 5, -1) == b""
    assert len(gets) == 3


def test_the_event_loop_leaves_reads_of_many_frames_to_the_threads() -> None:
    """In nowait mode (the event loop), a range of up to NOWAIT_FRAMES frames is served, a
    longer one (a whole file read a megabyte at a time) raises WouldBlock before any work, even
    with most of its frames in the LRU, for a worker thread to decompress; outside it, the same
    range reads."""
    gets: list[bytes] = []
    frames = _reader(_frames_of(DATA), gets)
    assert bytes(frames.range(0, FRAME - 3, 6)) == DATA[FRAME - 3:FRAME + 3]  # into the LRU
    with frames.nowait():
        assert bytes(frames.range(0, FRAME - 3, 6)) == DATA[FRAME - 3:FRAME + 3]
        with pytest.raises(WouldBlock):
            frames.range(0, 0, NOWAIT_FRAMES * FRAME + 1)
    assert gets == [frame_key(0, 0), frame_key(0, 1)]
    assert bytes(frames.range(0, 0, len(DATA))) == DATA


def test_decompressed_frames_are_kept_in_the_lru() -> None:
    """Neighbouring images share frames: the second read of a frame is an LRU hit, with no
    database read; frames of different files never mix."""
    gets: list[bytes] = []
    other = random.Random(4).randbytes(FRAME + 10)
    store = {**_frames_of(DATA, 0), **_frames_of(other, 1)}
    cache = LRUCache(4 * FRAME)
    frames = _reader(store, gets, cache)
    for _ in range(3):
        assert bytes(frames.range(0, 10, 20)) == DATA[10:30]
        assert bytes(frames.range(1, 10, 20)) == other[10:30]
    assert gets == [frame_key(0, 0), frame_key(1, 0)]
    assert (cache.hits, cache.misses, cache.stats()["items"]) == (4, 2, 2)


def test_every_stored_frame_decompresses_alone_and_carries_a_checksum(
        real_ds: Dataset, release: Path) -> None:
    """Each frame says its content size and has zstd's checksum of its content; every frame
    but a file's last holds FRAME bytes of it; the frames of a file are the file."""
    blob = (real_ds.path / FRAMES_FILE).read_bytes()
    with real_ds.env.begin() as txn:  # the session's dataset holds the environment open
        places = {bytes(k): FRAME_AT.unpack(v) for k, v in txn.cursor(db=real_ds.dbs["frames"])}
    store = {k: blob[off:off + n] for k, (off, n) in places.items()}
    by_file: dict[int, list[bytes]] = {}
    dctx = zstandard.ZstdDecompressor()
    for key, raw in sorted(store.items()):
        file_no, frame = FRAME_KEY.unpack(key)
        params = zstandard.get_frame_parameters(raw)
        assert params.has_checksum, key
        content = dctx.decompress(raw)
        assert params.content_size == len(content) <= FRAME
        by_file.setdefault(file_no, []).append(content)
        assert len(by_file[file_no]) == frame + 1, "frames are numbered from 0, no gap"
    sizes = {file_no: size for file_no, size in real_ds.files.values()}
    assert set(by_file) == set(sizes)
    for file_no, pieces in by_file.items():
        assert all(len(p) == FRAME for p in pieces[:-1])
        assert sum(map(len, pieces)) == sizes[file_no]
    for path, _ in real_ds.release_files():
        assert b"".join(by_file[real_ds.files[path][0]]) == (release / path).read_bytes()
    assert len(by_file[real_ds.files["region_descriptions.json"][0]]) > 10


def test_file_ranges_of_a_real_file_at_frame_boundaries(real_ds: Dataset,
                                                        release: Path) -> None:
    """region_descriptions.json spans 11 frames: ranges at and across every boundary, the
    whole file, and ranges that run past its end come back short, never padded."""
    raw = (release / "region_descriptions.json").read_bytes()
    assert real_ds.file_size("region_descriptions.json") == len(raw) > 10 * FRAME
    for boundary in range(FRAME, len(raw), FRAME):
        for off, size in ((boundary - 1, 2), (boundary, 1), (boundary - 300, 7000)):
            got = real_ds.file_range("region_descriptions.json", off, size)
            assert bytes(got) == raw[off:off + size], (off, size)
    assert bytes(real_ds.file_range("region_descriptions.json", 0, len(raw))) == raw
    assert bytes(real_ds.file_range("region_descriptions.json", len(raw) - 5, 100)) == raw[-5:]
    assert bytes(real_ds.file_range("region_descriptions.json", len(raw), 100)) == b""
    assert bytes(real_ds.file_range("region_descriptions.json", len(raw) + 9, 100)) == b""


# --- damage ----------------------------------------------------------------------------------


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:]


@pytest.mark.parametrize("where", [
    lambda raw: len(raw) // 2,  # in the compressed content
    lambda raw: len(raw) - 1,  # in the checksum of the content
])
def test_a_damaged_frame_is_an_error_naming_the_file(where: Callable[[bytes], int]) -> None:
    """zstd checks each frame whenever it is read: a flipped bit is a VGFSError that names
    the file and the frame, every time (it is never cached), and the other frames still
    read."""
    store = _frames_of(DATA, 5)
    store[frame_key(5, 1)] = _flip(store[frame_key(5, 1)], where(store[frame_key(5, 1)]))
    frames = _reader(store)
    for _ in range(2):
        with pytest.raises(VGFSError, match=r"^file5\.json: frame 1 is damaged"):
            frames.range(5, FRAME + 10, 10)
        with pytest.raises(VGFSError, match=r"^file5\.json: frame 1 is damaged"):
            frames.range(5, FRAME - 10, 20)  # a range that only starts before it
    assert bytes(frames.range(5, 0, FRAME)) == DATA[:FRAME]
    assert bytes(frames.range(5, 2 * FRAME, FRAME)) == DATA[2 * FRAME:3 * FRAME]


def test_a_missing_frame_is_an_error_naming_the_file() -> None:
    store = _frames_of(DATA, 2)
    del store[frame_key(2, 3)]
    with pytest.raises(VGFSError, match=r"^file2\.json: frame 3 is missing"):
        _reader(store).range(2, len(DATA) - 10, 5)


def test_a_damaged_frame_on_disk_is_an_error_only_for_its_bytes(real_dataset: Path,
                                                                tmp_path: Path,
                                                                release: Path) -> None:
    """One bit flipped in data.mdb: the dataset opens, the damaged frame's bytes are a
    VGFSError naming the file, the frames beside it and the other files read as released."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    damage_frame(copy, "region_descriptions.json", 3)
    raw = (release / "region_descriptions.json").read_bytes()
    with open_dataset(copy) as ds:
        for off in (3 * FRAME, 4 * FRAME - 1, 2 * FRAME - 10):
            with pytest.raises(VGFSError, match=r"^region_descriptions\.json: frame 3 is"
                                                r" damaged in the frames file"):
                ds.file_range("region_descriptions.json", off, 2 * FRAME)
        assert bytes(ds.file_range("region_descriptions.json", 2 * FRAME, FRAME)) == raw[
            2 * FRAME:3 * FRAME]
        assert bytes(ds.file_range("region_descriptions.json", 4 * FRAME, 10)) == raw[
            4 * FRAME:4 * FRAME + 10]
        assert bytes(ds.file_range("objects.json", 0, 1 << 20)) == (
            release / "objects.json").read_bytes()


def test_damage_is_caught_on_every_read_not_only_the_first(real_dataset: Path,
                                                           tmp_path: Path,
                                                           release: Path) -> None:
    """A frame read once, evicted, then damaged under the open dataset is caught on its next
    read from storage: the check is not a one-time one."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    released = (release / "relationships.json").read_bytes()
    with open_dataset(copy, LRUCache(FRAME)) as ds:  # room for one frame
        at = 3 * FRAME + 100
        assert bytes(ds.file_range("relationships.json", at, 10)) == released[at:at + 10]
        assert bytes(ds.file_range("relationships.json", 0, 10)) == released[:10]  # evicts 3
        damage_frame(copy, "relationships.json", 3)
        with pytest.raises(VGFSError, match=r"^relationships\.json: frame 3 is damaged"):
            ds.file_range("relationships.json", at, 10)
        assert bytes(ds.file_range("relationships.json", 0, 10)) == released[:10]


def test_the_mount_s_one_cache_holds_frames_and_made_files(real_dataset: Path,
                                                           tmp_path: Path) -> None:
    """As the mount opens it: one LRU for the dataset's frames and Contents' made files; a
    second read of an image's files reads no frame again, and the bound holds."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    cache = LRUCache(1 << 20)
    with open_dataset(copy, cache) as ds:
        tree = Tree(ds)
        contents = Contents(ds, cache, pretty=True)
        node = tree.lookup(tree.lookup(IMAGES, b"9").ino, b"regions.json")
        data = bytes(contents.read(node, 0, contents.size(node)))
        items = cache.stats()["items"]
        assert items >= 2  # the frame(s) of the entry and the indented file
        misses = cache.misses
        assert bytes(contents.read(node, 0, len(data))) == data
        assert cache.misses == misses and cache.stats()["items"] == items
        for image_id in range(1, 61):
            d = tree.lookup(IMAGES, str(image_id).encode()).ino
            for name in (b"regions.json", b"objects.json", b"qa.json"):
                n = tree.lookup(d, name)
                assert len(contents.read(n, 0, contents.size(n))) == contents.size(n)
        assert 0 < cache.bytes <= cache.max_bytes and cache.evictions > 0
