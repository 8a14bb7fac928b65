"""Shared fixtures: the real excerpts, built datasets, and real FUSE mounts that always unmount."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from vgfs.build import build
from vgfs.mount import mounted_fs

VG_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "vg-sample"
RELEASE = VG_SAMPLE / "release"
V12 = VG_SAMPLE / "v1.2"
VGFS = [sys.executable, "-m", "vgfs"]
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


@pytest.fixture(scope="session")
def real_mount(tmp_path_factory: pytest.TempPathFactory, real_dataset: Path) -> Iterator[Path]:
    with mounted(real_dataset, tmp_path_factory.mktemp("mnt") / "vg") as mp:
        yield mp


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release of 300 images, built once for the session."""
    from vgfs.sample import write_sample

    root = tmp_path_factory.mktemp("synthetic")
    write_sample(root / "release", images=300, seed=1, show_progress=False)
    build(root / "release", root / "dataset", show_progress=False)
    return root / "dataset"


@pytest.fixture(scope="session")
def synthetic_mount(tmp_path_factory: pytest.TempPathFactory,
                    synthetic_dataset: Path) -> Iterator[Path]:
    with mounted(synthetic_dataset, tmp_path_factory.mktemp("mnt") / "synthetic") as mp:
        yield mp


@pytest.fixture
def release_copy(tmp_path: Path, release: Path) -> Path:
    """A writable copy of the real excerpts, for tests that break or swap files."""
    dst = tmp_path / "release"
    shutil.copytree(release, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    os.chmod(dst, 0o755)
    return dst
