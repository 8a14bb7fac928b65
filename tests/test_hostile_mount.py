"""Hostile names and corrupted frames against a real mount: answers are ENOENT, ENAMETOOLONG,
EINVAL or a valid file, never a crash; fallocate is refused like every other write."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RELEASE, driver_by_id, entry_bytes, entry_spans, mounted, vgfs
from vgfs.dataset import open_dataset
from vgfs.layout import FRAME, FRAME_AT, FRAMES_FILE, frame_key
from vgfs.tree import STATS_NAME

PARENTS = ["", "images", "images/1", "by-id", "by-object", "by-object/wall", "by-predicate"]
ALLOWED = {errno.ENOENT, errno.ENAMETOOLONG, errno.EINVAL, errno.ENOTDIR}
# The per-image files and the release file whose entries they are.
SOURCES = {"meta.json": "image_data.json", "objects.json": "objects.json",
           "attributes.json": "attributes.json", "relationships.json": "relationships.json",
           "graph.json": "scene_graphs.json", "regions.json": "region_descriptions.json",
           "qa.json": "question_answers.json"}


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parent=st.sampled_from(PARENTS),
       name=st.binary(min_size=1, max_size=300).filter(lambda b: b"/" not in b))
def test_any_name_is_an_error_or_a_file(real_mount: Path, parent: str, name: bytes) -> None:
    path = os.path.join(bytes(real_mount / parent), name)
    try:
        st_ = os.lstat(path)
    except ValueError:  # NUL: refused before the kernel is asked
        assert b"\0" in name
        return
    except OSError as e:
        assert e.errno in ALLOWED, (path, e)
        return
    if st_.st_mode & 0o170000 == 0o100000:
        with open(path, "rb") as f:
            data = f.read()
        if parent == "" and name == STATS_NAME:  # made afresh on each read: no fixed size
            assert json.loads(data)["pid"] > 0
        else:
            assert len(data) == st_.st_size


def test_mount_survives_the_fuzz(real_mount: Path) -> None:
    assert (real_mount / "images/1/meta.json").read_bytes()
    stats = vgfs("stats", str(real_mount), "--json").stdout
    assert '"errors":{}' in stats.replace(" ", "").replace("\n", "")


def test_fallocate_and_writes_on_view_nodes_are_refused(real_mount: Path) -> None:
    for target in ("images/1/objects.json", "by-object/wall/1", "by-object/wall"):
        p = real_mount / target
        with pytest.raises(OSError) as exc:
            fd = os.open(p, os.O_RDWR)  # read-write open is refused before fallocate
            try:
                os.posix_fallocate(fd, 0, 1)
            finally:
                os.close(fd)
        assert exc.value.errno in (errno.EROFS, errno.EISDIR)
        with pytest.raises(OSError) as exc:
            os.unlink(p) if not p.is_dir() or p.is_symlink() else os.rmdir(p)
        assert exc.value.errno == errno.EROFS
    with open(real_mount / "images/1/objects.json", "rb") as f:
        with pytest.raises(OSError) as exc:
            os.posix_fallocate(f.fileno(), 0, 1)
        assert exc.value.errno in (errno.EBADF, errno.EROFS)


def _flip_bits(raw: bytes, rng: random.Random) -> bytes:
    """`raw` with one to three random bits flipped."""
    out = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _damage_frames(dataset: Path, seed: int) -> dict[str, set[int]]:
    """Random bits flipped inside six random stored frames of the release's files, in data.mdb
    itself (LMDB's own pages are its business: it trusts them). Returns, per file, the frames
    whose content zstd can no longer give back: every one, but a flip that leaves the content
    intact is allowed (and never a different content: zstd checks it)."""
    with open_dataset(dataset) as ds:
        frames = [(path, ds.files[path][0], f) for path, size in ds.release_files()
                  for f in range(-(-size // FRAME))]
        with ds.env.begin() as txn:
            places = {(path, f): FRAME_AT.unpack(txn.get(frame_key(no, f), db=ds.dbs["frames"]))
                      for path, no, f in frames}
    frames_file = dataset / FRAMES_FILE
    image = bytearray(frames_file.read_bytes())
    rng = random.Random(seed)
    damaged: dict[str, set[int]] = {}
    for path, f in rng.sample(sorted(places), 6):
        at, length = places[path, f]
        raw = bytes(image[at:at + length])
        bad = _flip_bits(raw, rng)
        image[at:at + len(raw)] = bad
        try:
            content = zstandard.ZstdDecompressor().decompress(bad)
        except zstandard.ZstdError:
            damaged.setdefault(path, set()).add(f)
            continue
        assert content == zstandard.ZstdDecompressor().decompress(raw), (path, f)
    frames_file.write_bytes(bytes(image))
    return damaged


def _hit(span: tuple[int, int], frames: set[int]) -> bool:
    """Whether the byte range (offset, length) of a file touches any of its `frames`."""
    off, length = span
    return any(off // FRAME <= f <= (off + length - 1) // FRAME for f in frames)


@pytest.mark.parametrize("seed", range(3))
def test_corrupted_frames_give_eio_or_data(real_dataset: Path, tmp_path: Path, seed: int) -> None:
    """Random bits flipped inside stored frames: exactly the files whose bytes sit in a
    damaged frame give EIO (the release file, the per-image files of the entries it holds,
    by-id/ files composed from them); every other file reads as released, and the mount stays
    up. The last seed mounts with -o pretty, where every per-image file is decoded."""
    copy = tmp_path / "dataset"
    shutil.copytree(real_dataset, copy)
    damaged = _damage_frames(copy, seed)
    assert damaged, "no frame was damaged"
    spans = {src: entry_spans(RELEASE / src) for src in SOURCES.values()}
    own = {src: entry_bytes(RELEASE / src) for src in SOURCES.values()}
    by_id = driver_by_id(RELEASE, tmp_path / "driver")
    pretty = seed == 2
    with mounted(copy, tmp_path / "mp", *(["pretty"] if pretty else [])) as mp:
        for path in sorted(RELEASE.glob("*.*")):
            got = _read(mp / path.name)
            assert got == (errno.EIO if path.name in damaged else path.read_bytes()), path.name
        for image_id in spans["image_data.json"]:
            d = mp / "images" / str(image_id)
            files = [(d / name, (src,)) for name, src in SOURCES.items()]
            files.append((mp / "by-id" / f"{image_id}.json", ("scene_graphs.json",
                                                            "attributes.json")))
            for path, srcs in files:
                got = _read(path)
                if any(_hit(spans[src][image_id], damaged.get(src, set())) for src in srcs):
                    assert got == errno.EIO, path
                    continue
                want = by_id[image_id] if len(srcs) > 1 else own[srcs[0]][image_id]
                assert (json.loads(got) == json.loads(want)) if pretty else (got == want), path
        for root, dirs, files in os.walk(mp):  # and the rest reads, or gives EIO
            dirs[:] = [d for d in dirs if not d.startswith("by-")]
            for name in files:
                _read(Path(root, name))
        assert os.listdir(mp)  # still up
        errors = json.loads(vgfs("stats", str(mp), "--json").stdout)["errors"]
        assert sum(errors.values()) >= len(damaged)


def _read(path: Path) -> bytes | int:
    """The file's bytes, or the errno of a failure; only EIO is expected."""
    try:
        return path.read_bytes()
    except OSError as e:
        assert e.errno == errno.EIO, (path, e)
        return e.errno


def test_no_setuid_or_device_files_can_exist(real_mount: Path) -> None:
    """The kernel mount carries nosuid and nodev, and no node has a setuid, setgid or device
    mode."""
    target = str(real_mount)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            assert {"nosuid", "nodev", "ro"} <= set(fields[5].split(",")), fields[5]
            break
    else:
        raise AssertionError(f"{target} is not in /proc/self/mountinfo")
    for root, dirs, files in os.walk(real_mount):
        for name in dirs + files:
            mode = os.lstat(os.path.join(root, name)).st_mode
            assert not mode & 0o6000
            assert mode & 0o170000 in (0o040000, 0o100000, 0o120000)
