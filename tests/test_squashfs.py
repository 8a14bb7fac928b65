"""vgfs.squashfs against real images built by mksquashfs and cross-checked with unsquashfs.

Beyond the standard library (gzip, xz, lzma) the reader needs these PyPI packages for the
other compressors mksquashfs offers: zstandard (zstd), lz4 (lz4), python-lzo (lzo, the vgfs[lzo]
extra that the test extra pulls in; it builds from source against Debian's liblzo2-dev). A
compressor is skipped only when mksquashfs lacks it; when the Python package is missing the test
fails, naming what to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import RELEASE, site_image
from tests.tools.fuzz_squashfs import (
    build_seed_images,
    check,
    exercise,
    mksquashfs,
    mksquashfs_compressors,
)
from vgfs.build import build as build_dataset
from vgfs.dataset import open_dataset
from vgfs.errors import VGFSError
from vgfs.squashfs import NO_FRAGMENT, FileEntry, SquashFSError, SquashFSImage

# A missing tool is a broken setup, not a reason to skip: `./dev` installs squashfs-tools.
assert shutil.which("mksquashfs") and shutil.which("unsquashfs"), \
    "the tests need mksquashfs and unsquashfs (Debian package squashfs-tools)"

# Devices cannot be made without privileges, so they come from pseudo definitions.
DEVICES = ("-p", "special/chardev c 644 0 0 1 3", "-p", "special/blockdev b 640 0 0 8 0")
ALPHABET = bytes(b"abcdefghijklmnop"[i % 16] for i in range(256))


@functools.cache
def available_compressors() -> list[str]:
    return mksquashfs_compressors()


def text(rng: random.Random, n: int) -> bytes:
    """Random bytes that compress to about half, so data blocks get stored compressed."""
    return rng.randbytes(n).translate(ALPHABET)


def make_tree(root: Path, large: bool) -> Path:
    """Every kind of file; large adds files over 1 MiB so that 1M blocks get edge cases too."""
    rng = random.Random(1)
    files = {"empty": b"", "one": b"x", "deep/a/b/c/d/e/f/leaf.txt": b"deep\n"}
    for size in (4096, 131072, 1048576) if large else (4096, 131072):
        for delta in (-1, 0, 1):  # exactly a block, one short, one over
            files[f"edge/{size + delta}"] = text(rng, size + delta)
    for i in range(6):
        files[f"random/r{i}"] = text(rng, rng.randrange(1, 300_000))
    if large:
        files["random/big"] = text(rng, 2_500_000)
    files["random/noise"] = rng.randbytes(300_000)  # incompressible: stored blocks
    files["sparse/zeros"] = bytes(1_200_000 if large else 300_000) + b"tail"
    files["sparse/middle"] = b"head" + bytes(2_200_000 if large else 500_000) + b"tail"
    files["dup/one"] = files["dup/two"] = b"same content\n" * 1000
    files["names/\u00fcn\u00efc\u00f6d\u00e9 \u2713.txt"] = b"unicode name"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.link(root / "one", root / "names" / "hardlink")
    (root / "emptydir").mkdir()
    (root / "links").mkdir()
    os.symlink("../one", root / "links" / "to-file")
    os.symlink("../deep", root / "links" / "to-dir")
    os.symlink("nowhere", root / "links" / "dangling")
    (root / "special").mkdir()
    os.mkfifo(root / "special" / "fifo")
    # A relative name keeps the socket path under the AF_UNIX length limit.
    with socket.socket(socket.AF_UNIX) as sock, contextlib.chdir(root / "special"):
        sock.bind("sock")
    return root


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src"), large=True)


@pytest.fixture(scope="module")
def small_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough for the compressors, without the megabytes that make xz slow."""
    return make_tree(tmp_path_factory.mktemp("small-src"), large=False)


def regular_files(root: Path) -> dict[str, bytes]:
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def stored_order(image: Path) -> list[str]:
    """Regular files in the order unsquashfs lists them: depth first, as stored."""
    proc = subprocess.run(["unsquashfs", "-lls", str(image)], capture_output=True, check=True)
    lines = proc.stdout.decode().splitlines()
    return [line.split(" squashfs-root/", 1)[1] for line in lines if line.startswith("-")]


def check_image(image_path: Path, src: Path, tmp_path: Path, lookup_every: int = 1) -> None:
    """Walk, read and look up everything, comparing with the source and unsquashfs."""
    want = regular_files(src)
    out = tmp_path / "unsquashed"
    subprocess.run(
        ["unsquashfs", "-d", str(out), "-no-progress", str(image_path)],
        capture_output=True,
        check=True,
    )
    assert regular_files(out) == want
    rng = random.Random(2)
    with SquashFSImage(image_path) as image, open(image_path, "rb") as raw:
        entries = list(image.walk())
        assert [e.path for e in entries] == stored_order(image_path)
        assert {e.path for e in entries} == set(want)
        bs = image.block_size
        for entry in entries:
            data = want[entry.path]
            assert entry.size == len(data)
            assert image.read(entry) == data
            ranges = [(0, 1), (entry.size - 1, 10), (bs - 3, 7), (bs, bs + 1)]
            ranges += [(rng.randrange(entry.size + 1), rng.randrange(3 * bs)) for _ in range(3)]
            for offset, size in ranges:
                offset = max(offset, 0)
                assert image.read(entry, offset, size) == data[offset : offset + size]
            extent = entry.extent()
            if extent is not None:
                assert os.pread(raw.fileno(), extent[1], extent[0]) == data
        for entry in entries[::lookup_every]:
            assert image.lookup(entry.path) == entry


def build(src: Path, out: Path, *options: str) -> Path:
    mksquashfs(src, out, *DEVICES, *options)
    return out


@pytest.mark.parametrize("comp", ["gzip", "lzo", "lz4", "xz", "zstd", "lzma"])
def test_compressors(comp: str, small_src: Path, tmp_path: Path) -> None:
    if comp not in available_compressors():
        pytest.skip(f"mksquashfs was built without {comp}")
    image = build(small_src, tmp_path / "img.sqfs", "-comp", comp)
    with SquashFSImage(image) as opened:
        assert opened.compressor == comp
    check_image(image, small_src, tmp_path)


@pytest.mark.parametrize(
    "options",
    [
        ("-comp", "xz", "-Xbcj", "x86,arm", "-Xdict-size", "50%"),
        ("-comp", "lz4", "-Xhc"),
        ("-comp", "lzo", "-Xalgorithm", "lzo1x_999"),
        ("-comp", "gzip", "-Xwindow-size", "8", "-Xstrategy", "filtered,huffman_only"),
    ],
    ids=lambda options: "-".join(options[1:3]),
)
def test_compressor_options(options: tuple[str, ...], small_src: Path, tmp_path: Path) -> None:
    """Options recorded after the superblock change how blocks are packed, not how they unpack."""
    if options[1] not in available_compressors():
        pytest.skip(f"mksquashfs was built without {options[1]}")
    check_image(build(small_src, tmp_path / "img.sqfs", *options), small_src, tmp_path)


@pytest.mark.parametrize("fragments", ["-no-fragments", "default", "-always-use-fragments"])
@pytest.mark.parametrize("block", ["4K", "128K", "1M"])
def test_block_sizes_and_fragments(block: str, fragments: str, src: Path, tmp_path: Path) -> None:
    options = ["-b", block] + ([fragments] if fragments != "default" else [])
    image = build(src, tmp_path / "img.sqfs", *options)
    check_image(image, src, tmp_path)
    with SquashFSImage(image) as opened:
        bs = opened.block_size
        assert bs == {"4K": 4096, "128K": 131072, "1M": 1048576}[block]
        tails = [e for e in opened.walk() if e.size % bs]
        with_fragment = [e.path for e in tails if e.fragment != NO_FRAGMENT]
    if fragments == "-no-fragments":
        assert not with_fragment
    elif fragments == "default":
        assert with_fragment == [e.path for e in tails if e.size < bs]
    else:
        assert with_fragment == [e.path for e in tails]


@pytest.mark.parametrize("block", ["4K", "128K", "1M"])
def test_vgfs_layout_gives_extents(block: str, src: Path, tmp_path: Path) -> None:
    """The options vgfs builds with leave every file one stored run of the image."""
    image = build(src, tmp_path / "img.sqfs", "-b", block, "-noD", "-no-fragments", "-no-sparse")
    check_image(image, src, tmp_path)
    want = regular_files(src)
    with SquashFSImage(image) as opened, open(image, "rb") as raw:
        for entry in opened.walk():
            offset, size = entry.extent()
            assert size == entry.size
            assert os.pread(raw.fileno(), size, offset) == want[entry.path]


def test_nothing_compressed(src: Path, tmp_path: Path) -> None:
    """Stored metadata blocks (header bit 15) and stored fragments."""
    image = build(src, tmp_path / "img.sqfs", "-noI", "-noId", "-noD", "-noF", "-noX", "-b", "4K")
    check_image(image, src, tmp_path)


def test_ten_thousand_files(tmp_path: Path) -> None:
    """A directory whose listing spans many metadata blocks and has a directory index."""
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    (src / "z").mkdir()
    (src / "z" / "after").write_bytes(b"after")
    for i in range(10_000):
        (src / "many" / f"{i:05d}-{'x' * (i % 40)}.jpg").write_bytes(b"%d" % i)
    image = tmp_path / "img.sqfs"
    mksquashfs(src, image)
    check_image(image, src, tmp_path, lookup_every=7)
    with SquashFSImage(image) as opened:
        assert opened.lookup("many/09999-" + "x" * 39 + ".jpg").size == 4
        assert opened.lookup("many/00000-.jpg").size == 1
        for missing in ("many/00000-", "many/5", "many/zzz", "many/00000-.jpgx"):
            with pytest.raises(FileNotFoundError):
                opened.lookup(missing)


@pytest.fixture(scope="module")
def small_image(small_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(small_src, tmp_path_factory.mktemp("small") / "img.sqfs", "-b", "4K")


def test_lookup(small_image: Path) -> None:
    with SquashFSImage(small_image) as image:
        assert image.lookup("/deep//a/b/c/d/e/f/leaf.txt/").path == "deep/a/b/c/d/e/f/leaf.txt"
        hard = image.lookup("names/hardlink")
        assert (hard.size, hard.start_block) == (1, image.lookup("one").start_block)
        for path in (
            "",
            "/",
            "deep",
            "emptydir",
            "links/to-file",
            "links/to-dir/a/b/c/d/e/f",
            "special/fifo",
            "special/chardev",
            "one/x",
            "deep/../one",
            "./one",
            "nope",
        ):
            with pytest.raises(FileNotFoundError):
                image.lookup(path)


def test_read_arguments(small_image: Path) -> None:
    with SquashFSImage(small_image) as image:
        entry = image.lookup("edge/4097")
        whole = image.read(entry)
        assert len(whole) == 4097
        assert image.read(entry, 4097) == image.read(entry, 10_000) == b""
        assert image.read(entry, 5, 0) == b""
        assert image.read(entry, 4000, 10_000) == whole[4000:]
        with pytest.raises(ValueError):
            image.read(entry, -1)
        assert image.read(image.lookup("empty")) == b""
        assert image.lookup("empty").extent() is not None


def test_closed(small_image: Path) -> None:
    image = SquashFSImage(small_image)
    entry = image.lookup("edge/4097")
    image.close()
    image.close()
    with pytest.raises(SquashFSError, match="closed"):
        image.read(entry)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_stale_entries(data: st.DataObject, small_image: Path) -> None:
    """Entries kept from another image (say, in an index) read as bytes or SquashFSError."""
    u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
    with SquashFSImage(small_image) as image:
        entry = data.draw(st.sampled_from(list(image.walk())))
        words = st.sampled_from((*entry.block_sizes, 1 << 24)) | u32
        changes = {
            "size": st.integers(0, 2 * entry.size) | u64,
            "start_block": st.integers(0, 1 << 22) | u64,
            "block_sizes": st.lists(words, max_size=12).map(tuple),
            "fragment": st.integers(0, 40) | st.just(NO_FRAGMENT) | u32,
            "fragment_offset": st.integers(0, 1 << 17) | u32,
        }
        entry = dataclasses.replace(entry, **data.draw(st.fixed_dictionaries({}, optional=changes)))
        offset = data.draw(st.integers(0, 1 << 21))
        size = data.draw(st.integers(0, 1 << 20))  # bounded: a stale size may claim terabytes
        try:
            got = image.read(entry, offset, size)
        except SquashFSError:
            return
        assert len(got) == max(min(entry.size, offset + size) - offset, 0)


def test_entry_extent_rules() -> None:
    stored = 1 << 24
    assert FileEntry("e", 0, 96, (), NO_FRAGMENT, 0).extent() == (96, 0)
    assert FileEntry("f", 5, 96, (stored | 5,), NO_FRAGMENT, 0).extent() == (96, 5)
    assert FileEntry("c", 5, 96, (3,), NO_FRAGMENT, 0).extent() is None
    assert FileEntry("s", 5, 96, (stored,), NO_FRAGMENT, 0).extent() is None
    assert FileEntry("t", 5, 96, (), 0, 0).extent() is None


def test_threads_share_one_image(small_src: Path, small_image: Path) -> None:
    """Concurrent reads with a cache small enough to evict all the time."""
    want = regular_files(small_src)
    errors: list[BaseException] = []
    with SquashFSImage(small_image, cache_bytes=64 << 10) as image:
        entries = [e for e in image.walk() if e.size]

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(150):
                    entry = rng.choice(entries)
                    offset, size = rng.randrange(entry.size), rng.randrange(1, 50_000)
                    assert image.read(entry, offset, size) == want[entry.path][offset:][:size]
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


@pytest.mark.parametrize(
    ("comp", "module", "what"),
    [
        ("zstd", "zstandard", "the Python package 'zstandard'"),
        ("lz4", "lz4.block", "the Python package 'lz4'"),
        ("lzo", "lzo", "vgfs[lzo] (pip install 'vgfs[lzo]')"),
    ],
)
def test_missing_compressor_package(
    comp: str, module: str, what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if comp not in available_compressors():
        pytest.skip(f"mksquashfs was built without {comp}")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data")
    image = tmp_path / "img.sqfs"
    mksquashfs(tmp_path / "src", image, "-comp", comp)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SquashFSError) as err:
        SquashFSImage(image)
    assert str(err.value) == (
        f"SquashFS image {image} uses {comp} compression; install {what} to read it."
    )


def test_lzo_site_image_without_the_extra_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "lzo" not in available_compressors():
        pytest.skip("mksquashfs was built without lzo")
    image = site_image(tmp_path / "site.sqfs", "-comp", "lzo")
    sentence = (f"SquashFS image {image} uses lzo compression; "
                "install vgfs[lzo] (pip install 'vgfs[lzo]') to read it.")
    # The command line where python-lzo is not installed: that sentence, no traceback.
    without_lzo = ("import sys; sys.modules['lzo'] = None;"
                   " from vgfs.cli import main; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", without_lzo, "build", str(RELEASE), "-o",
                           str(tmp_path / "refused"), "--images", str(image), "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (1, f"vgfs: error: {sentence}\n")
    # Built where python-lzo is, served where it is not: the read that the mount turns into EIO
    # and a log line fails with the same sentence.
    build_dataset(RELEASE, tmp_path / "dataset", [str(image)], show_progress=False)
    monkeypatch.setitem(sys.modules, "lzo", None)
    with open_dataset(tmp_path / "dataset") as ds, pytest.raises(VGFSError) as err:
        ds.jpeg(1)
    assert str(err.value) == sentence


# -- hardening ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """[gzip image, image with nothing compressed]."""
    return build_seed_images(tmp_path_factory.mktemp("seeds"))


def patched(tmp_path: Path, image: Path, changes: dict[int, bytes], cut: int | None = None) -> Path:
    data = bytearray(image.read_bytes()[:cut])
    for pos, value in changes.items():
        data[pos : pos + len(value)] = value
    out = tmp_path / "bad.sqfs"
    out.write_bytes(data)
    return out


def superblock(image: Path) -> dict[str, int]:
    data = image.read_bytes()
    fields = {"root": 32, "bytes_used": 40, "inode_table": 64, "dir_table": 72}
    return {name: struct.unpack_from("<Q", data, pos)[0] for name, pos in fields.items()}


def test_not_an_image(tmp_path: Path) -> None:
    for content in (b"", b"hsqs", os.urandom(4096)):
        (tmp_path / "junk").write_bytes(content)
        with pytest.raises(SquashFSError, match="junk"):
            SquashFSImage(tmp_path / "junk")
    with pytest.raises(SquashFSError, match="absent"):
        SquashFSImage(tmp_path / "absent")
    with pytest.raises(SquashFSError, match="Is a directory"):
        SquashFSImage(tmp_path)


def test_truncated(seeds: list[Path], tmp_path: Path) -> None:
    for image in seeds:
        used = superblock(image)["bytes_used"]
        for cut in (0, 50, 95, 96, 200, used // 2, used - 1):
            with pytest.raises(SquashFSError, match="bad.sqfs"):
                SquashFSImage(patched(tmp_path, image, {}, cut))
            if cut > 96:  # a superblock that agrees with the cut: the tables are what is lost
                bad = patched(tmp_path, image, {40: struct.pack("<Q", cut)}, cut)
                with pytest.raises(SquashFSError):
                    exercise(bad)


@pytest.mark.parametrize(
    ("pos", "value", "message"),
    [
        (0, struct.pack("<I", 0x73717367), "magic"),
        (28, struct.pack("<H", 3), "version 3.0"),
        (12, struct.pack("<I", 65536), "block size"),
        (22, struct.pack("<H", 21), "block log"),
        (20, struct.pack("<H", 7), "compressor id 7"),
        (40, struct.pack("<Q", 1 << 40), "claims"),
        (64, struct.pack("<Q", 1 << 40), "table starts outside"),
        (72, struct.pack("<Q", 0), "table starts outside"),
        (32, struct.pack("<Q", 0xFFFF << 16), "root inode"),
        (16, struct.pack("<I", 0xFFFFFFFF), "fragment table"),
    ],
)
def test_corrupt_superblock(
    pos: int, value: bytes, message: str, seeds: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(SquashFSError, match=message) as err:
        SquashFSImage(patched(tmp_path, seeds[0], {pos: value}))
    assert str(tmp_path / "bad.sqfs") in str(err.value)


@pytest.mark.parametrize("table", ["inode_table", "dir_table"])
@pytest.mark.parametrize("seed", range(4))
def test_garbage_metadata(table: str, seed: int, seeds: list[Path], tmp_path: Path) -> None:
    for image in seeds:
        start = superblock(image)[table]
        garbage = random.Random(seed).randbytes(3000) if seed else bytes(3000)
        with pytest.raises(SquashFSError):
            exercise(patched(tmp_path, image, {start: garbage}))


def dir_entry(data: bytes, start: int, name: bytes) -> int:
    """Position of the stored (uncompressed) directory entry for subdirectory name."""
    pos = data.index(struct.pack("<HH", 1, len(name) - 1) + name, start)
    return pos - 4


@pytest.mark.parametrize("target", ["root", "itself"])
def test_directory_loop(target: str, tmp_path: Path) -> None:
    (tmp_path / "src" / "outer" / "inner").mkdir(parents=True)
    (tmp_path / "src" / "outer" / "inner" / "file").write_bytes(b"x")
    image = tmp_path / "img.sqfs"
    mksquashfs(tmp_path / "src", image, "-noI", "-noD", "-noF")
    data, sb = image.read_bytes(), superblock(image)
    assert sb["root"] >> 16 == 0  # one inode block, so an entry's offset alone picks the inode
    inner = dir_entry(data, sb["dir_table"], b"inner")
    outer = dir_entry(data, sb["dir_table"], b"outer")
    outer_inode = data[outer : outer + 2]
    new = struct.pack("<H", sb["root"] & 0xFFFF) if target == "root" else outer_inode
    bad = patched(tmp_path, image, {inner: new})
    with SquashFSImage(bad) as opened, pytest.raises(SquashFSError, match="loops back"):
        list(opened.walk())
    check(bad)


def test_absurd_file_size(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"y" * 5000)
    image = tmp_path / "img.sqfs"
    mksquashfs(tmp_path / "src", image, "-noI", "-b", "4K")
    with SquashFSImage(image) as opened:
        entry = opened.lookup("f")
    data = image.read_bytes()
    fields = struct.pack("<IIII", entry.start_block, entry.fragment, entry.fragment_offset, 5000)
    size_pos = data.index(fields, superblock(image)["inode_table"]) + 12
    for size in (0xFFFFFFFF, 1 << 24, 5000 + 4096 * 600):
        bad = patched(tmp_path, image, {size_pos: struct.pack("<I", size)})
        with pytest.raises(SquashFSError, match="absurd|past"):
            exercise(bad)


@pytest.mark.parametrize("which", [0, 1], ids=["gzip", "stored"])
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(data=st.data())
def test_fuzz(
    which: int, data: st.DataObject, seeds: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    image = seeds[which].read_bytes()
    meta = superblock(seeds[which])["inode_table"]
    anywhere, in_meta = st.integers(0, len(image) - 1), st.integers(meta, len(image) - 1)
    changes = data.draw(
        st.lists(
            st.tuples(in_meta | anywhere, st.binary(min_size=1, max_size=4)), min_size=1, max_size=6
        )
    )
    cut = data.draw(st.none() | st.integers(0, len(image)))
    target = tmp_path_factory.getbasetemp() / f"fuzz-{which}.sqfs"
    mutated = bytearray(image)
    for pos, value in changes:
        mutated[pos : pos + len(value)] = value
    target.write_bytes(mutated[:cut])
    check(target)
