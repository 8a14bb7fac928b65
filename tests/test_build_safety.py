"""What `vgfs build` may write over (DESIGN §2.2, §6): `--force` replaces a dataset folder and
nothing else, and an interrupted build leaves nothing running and, unless SIGKILLed, nothing
behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

import vgfs
from tests.conftest import VGFS
from tests.test_build import _build, _error_line, _leftovers


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root`, the root included: a file's bytes, None for a folder."""
    out: dict[str, bytes | None] = {".": None}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return out


def _assert_refused(proc: subprocess.CompletedProcess, path: Path) -> str:
    """Exit status 1 and one sentence that names `path`; the sentence."""
    assert proc.returncode == 1, proc.stderr
    line = _error_line(proc.stderr)
    assert str(path) in line, line
    return line


# --- --force replaces a dataset, and nothing else -----------------------------------------


def _is_release(rel: Path) -> tuple[Path, Path, list[str]]:
    return rel, rel, ["--force"]


def _holds_release(rel: Path) -> tuple[Path, Path, list[str]]:
    parent = rel.parent / "project"
    parent.mkdir()
    (parent / "notes.txt").write_text("mine")
    moved = Path(shutil.move(rel, parent / "release"))
    return moved, parent, ["--force"]


def _inside_release(rel: Path) -> tuple[Path, Path, list[str]]:
    return rel, rel / "dataset", []


def _holds_jpeg_source(rel: Path) -> tuple[Path, Path, list[str]]:
    """--images names a folder inside the output: replacing the output would delete it."""
    out = rel.parent / "out"
    shutil.copytree(rel / "VG_100K", out / "VG_100K")
    (out / "manifest.json").write_bytes(orjson.dumps({"format": 3, "tool": "vgfs 0.1.0"}))
    return rel, out, ["--force", "--images", str(out / "VG_100K"), str(rel / "VG_100K_2")]


@pytest.mark.parametrize("layout", [_is_release, _holds_release, _inside_release,
                                    _holds_jpeg_source])
def test_force_never_replaces_the_release(layout, release_copy: Path, tmp_path: Path) -> None:
    """An output that is the release folder, holds it or is inside it is refused in one
    sentence, with or without --force, and nothing under the folder changes."""
    rel, out, args = layout(release_copy)
    root = max(rel, out, key=lambda p: len(p.parts)).parent  # holds both
    before = _snapshot(root)
    line = _assert_refused(_build(rel, out, *args, check=False), out)
    print(line)
    assert _snapshot(root) == before


def test_force_replaces_only_a_dataset(dataset_copy: Path, release: Path,
                                       tmp_path: Path) -> None:
    """An existing output is refused without --force; with it, a folder that is no vgfs
    dataset (none, or another program's manifest.json) stays untouched, and a vgfs dataset
    of any format is replaced in one step that leaves no temporary or old folder."""
    for name, manifest in [("plain", None), ("other", {"format": 1, "tool": "labelme 5"})]:
        out = tmp_path / name
        out.mkdir()
        (out / "keep").write_text("mine")
        if manifest is not None:
            (out / "manifest.json").write_bytes(orjson.dumps(manifest))
        before = _snapshot(out)
        line = _assert_refused(_build(release, out, "--force", check=False), out)
        assert "dataset" in line, line
        assert _snapshot(out) == before
    line = _assert_refused(_build(release, dataset_copy, check=False), dataset_copy)
    assert "--force" in line, line
    manifest = orjson.loads((dataset_copy / "manifest.json").read_bytes())
    (dataset_copy / "manifest.json").write_bytes(orjson.dumps({**manifest, "format": 2}))
    _build(release, dataset_copy, "--force")
    assert _leftovers(dataset_copy) == ["dataset"]
    with vgfs.open_dataset(dataset_copy) as ds:
        assert ds.manifest["counts"]["images"] == 60


# --- interrupted builds --------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release of 3000 images: its build takes a few seconds, time to kill it."""
    from vgfs.sample import write_sample

    out = tmp_path_factory.mktemp("big") / "release"
    write_sample(out, images=3000, seed=0, jpeg="small", show_progress=False)
    return out


def _wait_until_writing(proc: subprocess.Popen, out: Path) -> Path:
    """Wait until the build's temporary folder holds a growing LMDB, and 0.5 s more; the
    folder."""
    deadline = time.monotonic() + 60
    while not (found := list(out.parent.glob(f".{out.name}.building*/annotations.lmdb"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the build never started writing"
        time.sleep(0.02)
    time.sleep(0.5)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    return found[0].parent


def _start_build(release: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """Start `vgfs build` and wait until it is writing; the process and its temporary folder."""
    proc = subprocess.Popen([*VGFS, "build", str(release), "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, _wait_until_writing(proc, out)


def test_killed_build_leaves_no_dataset(big_release: Path, tmp_path: Path) -> None:
    """SIGKILL mid-build leaves no dataset (only a hidden temporary folder); the next build
    of the same output succeeds and removes that stale folder."""
    out = tmp_path / "out"
    proc, tmp = _start_build(big_release, out)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert _leftovers(out) == [tmp.name]
    _build(big_release, out)
    assert _leftovers(out) == ["out"]
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["counts"]["images"] == 3000


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_terminated_build_cleans_up(signum: signal.Signals, big_release: Path,
                                    tmp_path: Path) -> None:
    """SIGTERM, or SIGHUP (the ssh session dropped), mid-build exits non-zero without a
    traceback and leaves no temporary folder and no dataset."""
    out = tmp_path / "out"
    proc, _ = _start_build(big_release, out)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    print(proc.returncode, stderr.strip())
    assert proc.returncode > 0, stderr
    assert "Traceback" not in stderr, stderr
    assert _leftovers(out) == []


@pytest.fixture(scope="module")
def real_jpeg_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 images with JPEGs of the real size: enough for mksquashfs to be caught running."""
    from vgfs.sample import write_sample

    out = tmp_path_factory.mktemp("real-jpegs") / "release"
    write_sample(out, images=300, seed=0, jpeg="real", show_progress=False)
    return out


def _child_named(pid: int, name: str, proc: subprocess.Popen) -> int:
    """Wait for a child of `pid` running `name`; its pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            for child in children:
                if Path(f"/proc/{child}/comm").read_text().strip() == name:
                    return int(child)
        except FileNotFoundError:  # a child that ended meanwhile
            pass
        time.sleep(0.002)
    raise AssertionError(f"{name} never ran under pid {pid}: {proc.communicate()}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_mksquashfs_dies_with_a_killed_build(real_jpeg_release: Path, tmp_path: Path) -> None:
    """SIGKILL of a build kills its mksquashfs too, which would otherwise go on writing into
    the temporary folder."""
    out = tmp_path / "out"
    proc = subprocess.Popen([*VGFS, "build", str(real_jpeg_release), "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = _child_named(proc.pid, "mksquashfs", proc)
    try:
        # Stopped, it cannot finish on its own before the check: only a kill ends it.
        os.kill(child, signal.SIGSTOP)
        proc.kill()
        proc.communicate(timeout=30)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), f"mksquashfs (pid {child}) outlived its killed build"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
