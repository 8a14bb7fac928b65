"""The read path without a mount: what `read_now` serves on the event loop, when it says it
would block, that `read` gives the same bytes, and that damaged JPEG bytes never get out; the
backend's own calls (`jpeg_now`, `jpeg`) and the counters that `vgfs stats` shows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import JPEGS, drop_cache, flip_byte, held, site_image, walk
from vgfs.backend import Backend
from vgfs.build import build
from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.dataset import Dataset, open_dataset
from vgfs.errors import VGFSError
from vgfs.frames import NOWAIT_FRAMES
from vgfs.layout import FRAME
from vgfs.tree import IMAGES, VG_100K, Node, NodeType, Tree

CHUNK = 128 << 10  # what the kernel asks for at a time


def _contents(ds: Dataset, max_bytes: int = 64 << 20) -> Contents:
    """What the mount reads through: Contents, whose backend serves the JPEGs."""
    return Contents(ds, LRUCache(max_bytes))


def _jpeg(tree: Tree, image_id: int) -> Node:
    return tree.lookup(tree.lookup(IMAGES, str(image_id).encode()).ino, b"image.jpg")


def _now(contents: Contents, node: Node, off: int, size: int) -> bytes | None:
    """read_now's answer, copied: its buffer is reused by the next call."""
    data = contents.read_now(node, off, size)
    return None if data is None else bytes(data)


def _warm(path: Path) -> None:
    """Read a file once, so that its pages are in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


@pytest.fixture
def real(real_ds: Dataset, real_dataset: Path) -> Contents:
    _warm(real_dataset / "images.sqfs")
    return _contents(real_ds)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Iterator[Dataset]:
    """The excerpts with a site's own image, compressed and with fragments: every JPEG
    needs the general SquashFS reader, off the fast path."""
    root = tmp_path_factory.mktemp("compressed")
    image = site_image(root / "site.sqfs", "-comp", "gzip")
    build(release, root / "dataset", images=[str(image)], show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield held(ds)


def test_files_other_than_jpegs_are_served_inline(real: Contents, real_tree: Tree) -> None:
    """Per-image files, release files and README (a walk sees no view) come without blocking:
    read_now answers every read of up to NOWAIT_FRAMES frames, with the bytes `read` gives;
    a longer one (a release file read a megabyte at a time) is left to a worker thread. Each
    read counts as an LMDB read."""
    nodes = [n for _, n in walk(real_tree) if not n.is_dir and not n.is_link
             and n.type is not NodeType.JPEG]
    assert len(nodes) == 1 + 15 + 60 * 8
    inline = NOWAIT_FRAMES * FRAME
    long = [n for n in nodes if real.size(n) > inline]
    assert long and all(_now(real, n, 0, real.size(n)) is None for n in long)
    for node in nodes:
        want = min(real.size(node) + 10, inline)
        now = _now(real, node, 0, want)
        assert now is not None and len(now) == min(real.size(node), want)
        assert now == bytes(real.read(node, 0, want))
        size = len(now)
        assert _now(real, node, size // 2, 7) == now[size // 2:size // 2 + 7]
    counters = real.backend.counters
    assert counters["lmdb_reads"] == 3 * len(nodes) + len(long)
    assert counters["jpeg_bytes"] == counters["jpeg_reads_nowait"] == 0


def test_jpeg_in_the_page_cache_is_served_now_then_from_the_lru(real: Contents, real_tree: Tree,
                                                                release: Path) -> None:
    """The first chunk takes the whole JPEG in one non-blocking pread, checks it and keeps it,
    so the kernel's next chunks are LRU hits; `read` then gives the same bytes."""
    node = _jpeg(real_tree, 1)
    expected = (release / JPEGS[1]).read_bytes()
    counters = real.backend.counters
    assert len(expected) > 2 * CHUNK // 3 and node.size == len(expected)
    assert _now(real, node, 0, CHUNK // 2) == expected[:CHUNK // 2]
    assert counters["jpeg_reads_nowait"] == 1
    assert counters["jpeg_bytes"] == len(expected)
    assert real.cache.stats()["bytes"] == len(expected)
    offsets = range(CHUNK // 2, len(expected) + CHUNK, CHUNK // 2)
    for off in offsets:
        assert _now(real, node, off, CHUNK // 2) == expected[off:off + CHUNK // 2]
    assert counters["jpeg_reads_nowait"] == 1, "later chunks come from the LRU"
    assert bytes(real.read(node, 0, len(expected))) == expected
    assert counters["jpeg_reads_threaded"] == 0
    assert real.cache.hits == len(offsets) + 1
    assert counters["lmdb_reads"] == 0  # a JPEG's bytes are the image's, not LMDB's


def test_a_jpeg_has_the_same_bytes_under_every_name(real: Contents, real_tree: Tree,
                                                    release: Path) -> None:
    """VG_100K/<id>.jpg is the node of images/<id>/image.jpg: one cache entry serves both."""
    for image_id, rel in JPEGS.items():
        node = real_tree.lookup(VG_100K, b"%d.jpg" % image_id)
        assert node == _jpeg(real_tree, image_id)
        expected = (release / rel).read_bytes()
        assert _now(real, node, 0, CHUNK) == expected[:CHUNK]
        assert _now(real, _jpeg(real_tree, image_id), CHUNK, CHUNK) == expected[
            CHUNK:2 * CHUNK]
    assert real.backend.counters["jpeg_reads_nowait"] == len(JPEGS)


def test_jpeg_read_whole_at_once_is_not_kept(real: Contents, real_tree: Tree,
                                             release: Path) -> None:
    """Nobody asks again for a file read whole in one call: it is checked, not cached. A
    later read of a part takes the whole JPEG from storage again and checks it (every read
    from storage is checked), keeping it for the kernel's next chunks."""
    for image_id, rel in JPEGS.items():
        node = _jpeg(real_tree, image_id)
        expected = (release / rel).read_bytes()
        assert _now(real, node, 0, len(expected)) == expected
        assert _now(real, node, 100, 50) == expected[100:150]
        assert _now(real, node, len(expected), 10) == b""
    counters = real.backend.counters
    assert real.cache.stats()["items"] == len(JPEGS)
    assert counters["jpeg_reads_nowait"] == 2 * len(JPEGS)
    assert counters["jpeg_bytes"] == sum(
        2 * (release / rel).stat().st_size for rel in JPEGS.values())


def test_page_cache_miss_answers_none_and_read_waits(real: Contents, real_tree: Tree,
                                                     real_dataset: Path, release: Path) -> None:
    """Bytes that would come from the device are not read on the event loop: read_now says
    None, and `read` (in a worker thread) fetches, checks and keeps them."""
    node = _jpeg(real_tree, 4)
    extent = real.ds.jpeg_index(4)
    drop_cache(real_dataset / "images.sqfs")
    probe = bytearray(extent.size)
    try:
        os.preadv(real.ds.image_fd, [probe], extent.offset, os.RWF_NOWAIT)
        pytest.skip("this filesystem keeps the image's pages whatever we ask")
    except BlockingIOError:
        pass
    # The probe may start the kernel's readahead, and a busy machine may read the image too:
    # drop the pages again, a few times if need be, until a read finds them gone.
    for _ in range(5):
        drop_cache(real_dataset / "images.sqfs")
        real = _contents(real.ds)
        if real.read_now(node, 0, CHUNK) is None:
            break
    else:
        pytest.fail("read_now served the JPEG each time, though its pages had been dropped")
    counters = real.backend.counters
    assert counters["jpeg_reads_nowait"] == 0
    expected = (release / JPEGS[4]).read_bytes()
    assert bytes(real.read(node, 0, CHUNK)) == expected[:CHUNK]
    assert counters["jpeg_reads_threaded"] == 1
    assert counters["jpeg_bytes"] == len(expected)
    assert _now(real, node, 0, CHUNK) == expected[:CHUNK]  # now an LRU hit


def test_compressed_site_image_is_never_read_on_the_loop(compressed: Dataset,
                                                         release: Path) -> None:
    """A JPEG compressed or fragmented in a site's image needs the general reader: read_now
    says None even when the image is in the page cache; `read` decodes the same bytes."""
    tree = Tree(compressed)
    _warm(compressed.images_path)
    contents = _contents(compressed)
    for image_id, rel in JPEGS.items():
        node = _jpeg(tree, image_id)
        assert compressed.jpeg_index(image_id).path is not None
        assert contents.read_now(node, 0, CHUNK) is None
        expected = (release / rel).read_bytes()
        assert bytes(contents.read(node, 0, CHUNK)) == expected[:CHUNK]
        assert _now(contents, node, CHUNK, CHUNK) == expected[CHUNK:2 * CHUNK]  # the LRU's
    counters = contents.backend.counters
    assert counters["jpeg_reads_threaded"] == len(JPEGS)
    assert counters["jpeg_reads_nowait"] == 0
    assert counters["jpeg_bytes"] == sum(
        (release / rel).stat().st_size for rel in JPEGS.values())


def test_a_jpeg_too_large_for_the_cache_is_fetched_each_time(compressed: Dataset,
                                                             release: Path) -> None:
    node = _jpeg(Tree(compressed), 1)
    expected = (release / JPEGS[1]).read_bytes()
    contents = _contents(compressed, max_bytes=len(expected) - 1)
    for off in (0, CHUNK // 2):
        assert contents.read_now(node, off, CHUNK) is None
        assert bytes(contents.read(node, off, CHUNK)) == expected[off:off + CHUNK]
    assert contents.backend.counters["jpeg_reads_threaded"] == 2
    assert contents.backend.counters["jpeg_bytes"] == 2 * len(expected)


# --- the backend's own calls -------------------------------------------------------------------


def test_backend_serves_jpeg_bytes_by_key_and_index(real_ds: Dataset, real_dataset: Path,
                                                    release: Path) -> None:
    """jpeg_now and jpeg take a cache key and an index entry: the bytes at any offset, the
    same from both, short at the end; the counters say which path served them."""
    _warm(real_dataset / "images.sqfs")
    cache = LRUCache(64 << 20)
    backend = Backend(real_ds, cache)
    for image_id, rel in JPEGS.items():
        index, expected = real_ds.jpeg_index(image_id), (release / rel).read_bytes()
        assert real_ds.jpeg(image_id) == expected
        key = 1000 + image_id
        got = backend.jpeg_now(key, index, "image", 10, 1000)
        assert got is not None and bytes(got) == expected[10:1010]
        assert bytes(backend.jpeg(key, index, "image", len(expected) - 5, 100)) == expected[-5:]
        assert bytes(backend.jpeg_now(key, index, "image", len(expected) + 3, 10)) == b""
    assert backend.counters == {"lmdb_reads": 0, "jpeg_reads_nowait": len(JPEGS),
                                "jpeg_reads_threaded": 0,
                                "jpeg_bytes": sum(real_ds.jpeg_index(i).size for i in JPEGS)}
    assert cache.stats()["items"] == len(JPEGS)  # kept: the kernel will ask for more
    fresh_cache = LRUCache(64 << 20)
    fresh = Backend(real_ds, fresh_cache)  # nothing cached: the threaded path
    assert bytes(fresh.jpeg(1, real_ds.jpeg_index(4), "image 4", 0, 1 << 20)) == (
        release / JPEGS[4]).read_bytes()
    assert (fresh.counters["jpeg_reads_threaded"], fresh.counters["jpeg_reads_nowait"]) == (1, 0)
    assert fresh_cache.stats()["items"] == 0  # read whole at once: the kernel keeps it
    assert bytes(fresh.jpeg(2, real_ds.jpeg_index(4), "image 4", 0, 100)) == (
        release / JPEGS[4]).read_bytes()[:100]
    assert fresh_cache.stats()["items"] == 1  # a first chunk: the next comes from the LRU


def test_damaged_jpeg_bytes_are_an_error_on_both_paths(real_dataset: Path, tmp_path: Path,
                                                       release: Path) -> None:
    """One flipped bit at the JPEG's indexed offset: read and read_now raise VGFSError (EIO
    in the mount) every time, nothing is kept, and the other JPEGs still read."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    with open_dataset(copy) as ds:
        held(ds)
        offset = ds.jpeg_index(4).offset
        flip_byte(copy / "images.sqfs", offset)
        _warm(copy / "images.sqfs")
        tree, contents = Tree(ds), _contents(ds)
        node = _jpeg(tree, 4)
        words = r"image 4: JPEG bytes in images\.sqfs do not match their checksum"
        for _ in range(2):
            with pytest.raises(VGFSError, match=words):
                contents.read(node, 0, CHUNK)
            with pytest.raises(VGFSError, match=words):
                contents.read_now(node, 0, CHUNK)
            with pytest.raises(VGFSError, match=words):
                contents.backend.jpeg(node.ino, ds.jpeg_index(4), "image 4", 100, 10)
        assert contents.cache.stats()["items"] == 0
        assert contents.backend.counters["jpeg_reads_threaded"] == 0
        other = _jpeg(tree, 5)
        assert bytes(contents.read(other, 0, 1 << 20)) == (release / JPEGS[5]).read_bytes()


def test_a_jpeg_missing_from_the_index_is_an_error(real: Contents,
                                                   synthetic_tree: Tree) -> None:
    """A node whose JPEG this dataset does not index (a stale inode) is an error naming the
    image, not someone else's bytes."""
    last = max(synthetic_tree.ds.image_ids())
    node = _jpeg(synthetic_tree, last)
    assert node is not None and last not in JPEGS
    for call in (real.read_now, real.read):
        with pytest.raises(VGFSError, match=f"image {last}: JPEG vanished from the index"):
            call(node, 0, CHUNK)


def test_nothing_is_served_on_the_loop_before_the_hold(real_dataset: Path,
                                                       release: Path) -> None:
    """Until the dataset holds its indexes, a read would look its record up in LMDB's map,
    whose pages may have to come from storage: read_now leaves every file, JPEGs included,
    to a worker thread, even with everything in the page cache; once held, it serves them."""
    _warm(real_dataset / "images.sqfs")
    with open_dataset(real_dataset) as ds:
        tree, contents = Tree(ds), _contents(ds)
        jpeg = _jpeg(tree, 1)
        meta = tree.lookup(tree.lookup(IMAGES, b"1").ino, b"meta.json")
        assert contents.read(meta, 0, CHUNK)  # its frames are in the LRU now
        assert contents.read_now(jpeg, 0, CHUNK) is None
        assert contents.read_now(meta, 0, CHUNK) is None
        held(ds)
        assert _now(contents, jpeg, 0, CHUNK) == (release / JPEGS[1]).read_bytes()[:CHUNK]
        assert _now(contents, meta, 0, CHUNK) == bytes(contents.read(meta, 0, CHUNK))
