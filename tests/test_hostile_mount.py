"""Hostile names and corrupted records against a real mount: answers are ENOENT, ENAMETOOLONG,
EINVAL or a valid file, never a crash; fallocate is refused like every other write."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import mounted, vgfs

PARENTS = ["", "images", "images/1", "by-id", "by-object", "by-object/wall", "by-predicate"]
ALLOWED = {errno.ENOENT, errno.ENAMETOOLONG, errno.EINVAL, errno.ENOTDIR}


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
            assert len(f.read()) == st_.st_size


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


@pytest.mark.parametrize("seed", range(3))
def test_corrupted_records_give_eio_or_data(real_dataset: Path, tmp_path: Path,
                                            seed: int) -> None:
    """Random bits flipped inside stored records (LMDB's own pages are its business: it trusts
    them): every file of the mount reads or gives EIO, and the mount stays up (pretty mode
    decodes every record, so damage is noticed)."""
    import random
    import re

    copy = tmp_path / "dataset"
    shutil.copytree(real_dataset, copy)
    data = copy / "annotations.lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    rng = random.Random(seed)
    inside = [m.end() for m in re.finditer(rb'"(phrase|predicate|question|answer)":"', raw)]
    for pos in rng.sample(inside, 200):
        raw[pos + rng.randrange(3)] ^= 1 << rng.randrange(8)
    data.write_bytes(bytes(raw))
    try:
        ctx = mounted(copy, tmp_path / "mp", "pretty")
        mp = ctx.__enter__()
    except AssertionError:
        return  # refused at mount time with a message: also a clean outcome
    try:
        for root, dirs, files in os.walk(mp):
            dirs[:] = [d for d in dirs if not d.startswith("by-")]
            for name in files:
                try:
                    Path(root, name).read_bytes()
                except OSError as e:
                    assert e.errno in (errno.EIO, errno.ENOENT), (root, name, e)
        assert os.listdir(mp)  # still up
    finally:
        ctx.__exit__(None, None, None)


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
