"""The read path without a mount: what `read_now` serves on the event loop, when it says it
would block, that `read` gives the same bytes, and that damaged JPEG bytes never get out."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import JPEGS, drop_cache, flip_byte, site_image, walk
from vgfs.backend import Backend
from vgfs.build import build
from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.dataset import Dataset, open_dataset
from vgfs.errors import VGFSError
from vgfs.tree import IMAGES, Node, NodeType, Tree

CHUNK = 128 << 10  # what the kernel asks for at a time


def _backend(ds: Dataset, max_bytes: int = 64 << 20) -> Backend:
    cache = LRUCache(max_bytes)
    return Backend(ds, Contents(ds, cache), cache)


def _jpeg(tree: Tree, image_id: int) -> Node:
    return tree.lookup(tree.lookup(IMAGES, str(image_id).encode()).ino, b"image.jpg")


def _now(backend: Backend, node: Node, off: int, size: int) -> bytes | None:
    """read_now's answer, copied: its buffer is reused by the next call."""
    data = backend.read_now(node, off, size)
    return None if data is None else bytes(data)


def _warm(path: Path) -> None:
    """Read a file once, so that its pages are in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


@pytest.fixture
def real(real_ds: Dataset, real_dataset: Path) -> Backend:
    _warm(real_dataset / "images.sqfs")
    return _backend(real_ds)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Iterator[Dataset]:
    """The excerpts with a site's own image, compressed and with fragments: every JPEG
    needs the general SquashFS reader, off the fast path."""
    root = tmp_path_factory.mktemp("compressed")
    image = site_image(root / "site.sqfs", "-comp", "gzip")
    build(release, root / "dataset", images=[str(image)], show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield ds


def test_files_other_than_jpegs_are_served_inline(real: Backend, real_tree: Tree) -> None:
    """Records, whole files, counts and README come from LMDB without blocking: read_now
    always answers, with the bytes Contents has and `read` gives."""
    nodes = [n for _, n in walk(real_tree) if not n.is_dir and not n.is_link
             and n.type is not NodeType.JPEG]
    assert len(nodes) == 493
    for node in nodes:
        size = real.contents.size(node)
        now = _now(real, node, 0, size + 10)
        assert now is not None and len(now) == size
        assert now == bytes(real.read(node, 0, size + 10)) == bytes(
            real.contents.read(node, 0, size + 10))
        assert _now(real, node, size // 2, 7) == now[size // 2:size // 2 + 7]
    assert real.counters["lmdb_reads"] == 3 * len(nodes)
    assert real.counters["jpeg_bytes"] == 0


def test_jpeg_in_the_page_cache_is_served_now_then_from_the_lru(real: Backend, real_tree: Tree,
                                                                release: Path) -> None:
    """The first chunk takes the whole JPEG in one non-blocking pread, checks it and keeps it,
    so the kernel's next chunks are LRU hits; `read` then gives the same bytes."""
    node = _jpeg(real_tree, 1)
    expected = (release / JPEGS[1]).read_bytes()
    assert len(expected) > 2 * CHUNK // 3 and node.size == len(expected)
    assert _now(real, node, 0, CHUNK // 2) == expected[:CHUNK // 2]
    assert real.counters["jpeg_reads_nowait"] == 1
    assert real.counters["jpeg_bytes"] == len(expected)
    assert real.cache.stats()["bytes"] == len(expected)
    offsets = range(CHUNK // 2, len(expected) + CHUNK, CHUNK // 2)
    for off in offsets:
        assert _now(real, node, off, CHUNK // 2) == expected[off:off + CHUNK // 2]
    assert real.counters["jpeg_reads_nowait"] == 1, "later chunks come from the LRU"
    assert bytes(real.read(node, 0, len(expected))) == expected
    assert real.counters["jpeg_reads_threaded"] == 0
    assert real.cache.hits == len(offsets) + 1


def test_jpeg_read_whole_at_once_is_not_kept(real: Backend, real_tree: Tree,
                                             release: Path) -> None:
    """Nobody asks again for a file read whole in one call: it is checked, not cached, and
    later reads pread just the range asked for."""
    for image_id, rel in JPEGS.items():
        node = _jpeg(real_tree, image_id)
        expected = (release / rel).read_bytes()
        assert _now(real, node, 0, len(expected)) == expected
        assert _now(real, node, 100, 50) == expected[100:150]
        assert _now(real, node, len(expected), 10) == b""
    assert real.cache.stats()["items"] == 0
    assert real.counters["jpeg_reads_nowait"] == 2 * len(JPEGS)
    assert real.counters["jpeg_bytes"] == sum(
        (release / rel).stat().st_size + 50 for rel in JPEGS.values())


def test_page_cache_miss_answers_none_and_read_waits(real: Backend, real_tree: Tree,
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
    assert real.read_now(node, 0, CHUNK) is None
    assert real.counters["jpeg_reads_nowait"] == 0
    expected = (release / JPEGS[4]).read_bytes()
    assert bytes(real.read(node, 0, CHUNK)) == expected[:CHUNK]
    assert real.counters["jpeg_reads_threaded"] == 1
    assert _now(real, node, 0, CHUNK) == expected[:CHUNK]  # now an LRU hit


def test_compressed_site_image_is_never_read_on_the_loop(compressed: Dataset,
                                                         release: Path) -> None:
    """A JPEG compressed or fragmented in a site's image needs the general reader: read_now
    says None even when the image is in the page cache; `read` decodes the same bytes."""
    tree = Tree(compressed)
    _warm(compressed.images_path)
    backend = _backend(compressed)
    for image_id, rel in JPEGS.items():
        node = _jpeg(tree, image_id)
        assert compressed.jpeg_index(image_id).path is not None
        assert backend.read_now(node, 0, CHUNK) is None
        expected = (release / rel).read_bytes()
        assert bytes(backend.read(node, 0, CHUNK)) == expected[:CHUNK]
        assert _now(backend, node, CHUNK, CHUNK) == expected[CHUNK:2 * CHUNK]  # from the LRU
    assert backend.counters["jpeg_reads_threaded"] == len(JPEGS)
    assert backend.counters["jpeg_reads_nowait"] == 0
    assert backend.counters["jpeg_bytes"] == sum(
        (release / rel).stat().st_size for rel in JPEGS.values())


def test_a_jpeg_too_large_for_the_cache_is_fetched_each_time(compressed: Dataset,
                                                             release: Path) -> None:
    node = _jpeg(Tree(compressed), 1)
    expected = (release / JPEGS[1]).read_bytes()
    backend = _backend(compressed, max_bytes=len(expected) - 1)
    for off in (0, CHUNK):
        assert backend.read_now(node, off, CHUNK) is None
        assert bytes(backend.read(node, off, CHUNK)) == expected[off:off + CHUNK]
    assert backend.counters["jpeg_reads_threaded"] == 2
    assert backend.counters["jpeg_bytes"] == 2 * len(expected)


def test_damaged_jpeg_bytes_are_an_error_on_both_paths(real_dataset: Path, tmp_path: Path,
                                                       release: Path) -> None:
    """One flipped bit at the JPEG's indexed offset: read and read_now raise VGFSError (EIO
    in the mount) every time, nothing is kept, and the other JPEGs still read."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    with open_dataset(copy) as ds:
        flip_byte(copy / "images.sqfs", ds.jpeg_index(4).offset)
        _warm(copy / "images.sqfs")
        tree, backend = Tree(ds), _backend(ds)
        node = _jpeg(tree, 4)
        for _ in range(2):
            with pytest.raises(VGFSError, match="image 4: JPEG bytes in images.sqfs do not"
                                                " match their checksum"):
                backend.read(node, 0, CHUNK)
            with pytest.raises(VGFSError, match="image 4: JPEG bytes"):
                backend.read_now(node, 0, CHUNK)
        assert backend.cache.stats()["items"] == 0
        assert backend.counters["jpeg_reads_threaded"] == 0
        other = _jpeg(tree, 5)
        assert bytes(backend.read(other, 0, 1 << 20)) == (release / JPEGS[5]).read_bytes()


def test_a_jpeg_missing_from_the_index_is_an_error(real: Backend,
                                                   synthetic_tree: Tree) -> None:
    """A node whose JPEG this dataset does not index (a stale inode) is an error naming the
    image, not someone else's bytes."""
    last = max(synthetic_tree.ds.image_ids())
    node = _jpeg(synthetic_tree, last)
    assert node is not None and last not in JPEGS
    for call in (real.read_now, real.read):
        with pytest.raises(VGFSError, match=f"image {last}: JPEG vanished from the index"):
            call(node, 0, CHUNK)
