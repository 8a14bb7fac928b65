"""What `vgfs build` may write over (DESIGN §2.2, §6): `--force` replaces a dataset folder and
nothing else, two builds of one output cannot clobber each other (on one node, in two PID
namespaces, on two nodes of a shared file system), and an interrupted build leaves nothing
running and, unless SIGKILLed, nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import vgfs
from tests.conftest import VGFS
from tests.test_build import _build, _error_line, _leftovers, _warnings


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


# --- builds of one output at once ---------------------------------------------------------


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


def _assert_built(proc: subprocess.Popen, out: Path, images: int) -> None:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert _leftovers(out) == [out.name]
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["counts"]["images"] == images


def test_a_second_build_of_one_output_refuses(big_release: Path, tmp_path: Path) -> None:
    """A build started 0.5 s after another of the same output refuses, naming the other
    build; the first one finishes its dataset."""
    out = tmp_path / "out"
    first, _ = _start_build(big_release, out)
    line = _assert_refused(_build(big_release, out, check=False), out)
    print(line)
    assert f"host {socket.gethostname()}" in line and f"pid {first.pid}" in line, line
    assert "since" in line, line
    _assert_built(first, out, 3000)


def test_an_output_made_during_the_build_is_not_replaced(big_release: Path,
                                                         tmp_path: Path) -> None:
    """An output that appears while the build runs (made by something that did not claim
    it) is refused at the final rename, not replaced; the build leaves nothing else."""
    out = tmp_path / "out"
    proc, _ = _start_build(big_release, out)
    out.mkdir()
    (out / "mine").write_text("mine")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    print(_error_line(stderr))
    assert str(out) in _error_line(stderr)
    assert os.listdir(out) == ["mine"]
    assert _leftovers(out) == ["out"]


def _free_pid_run() -> int:
    """A pid after which the next few are used by no process of this PID namespace."""
    return next(n for n in range(20000, 30000, 100)
                if not any(Path(f"/proc/{n + d}").exists() for d in range(1, 50)))


def test_a_build_in_another_pid_namespace_is_not_taken_for_dead(big_release: Path,
                                                                tmp_path: Path) -> None:
    """A build in its own PID namespace has a pid that is no process here (as on another
    node of a shared file system): a build here must not take its folder for stale, but
    refuse, naming it."""
    out = tmp_path / "out"
    last = _free_pid_run()
    cmd = [*VGFS, "build", str(big_release), "-o", str(out), "--quiet"]
    # The namespace's init makes the build's pid last + 1, which no process here has.
    init = (f"open('/proc/sys/kernel/ns_last_pid', 'w').write('{last}'); import subprocess,"
            f" sys; sys.exit(subprocess.call({cmd!r}))")
    other = subprocess.Popen(["unshare", "--pid", "--mount-proc", "--kill-child",
                              sys.executable, "-c", init],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_writing(other, out)
        assert not Path(f"/proc/{last + 1}").exists()
        line = _assert_refused(_build(big_release, out, check=False), out)
        print(line)
        assert f"pid {last + 1}" in line, line
        _assert_built(other, out, 3000)
    finally:
        other.kill()
        other.communicate()


def _claim_here(pid: int) -> dict[str, object]:
    """A claim as a build of this host, boot and PID namespace writes it."""
    return {"token": "0123456789abcdef", "host": socket.gethostname(),
            "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "pidns": os.readlink("/proc/self/ns/pid"), "pid": pid,
            "start": int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]),
            "since": "2025-01-01T00:00:00Z"}


@pytest.mark.parametrize("case", ["another node", "another namespace", "pid reused"])
def test_a_claim_is_stale_only_when_its_process_is_seen_gone(case: str, release: Path,
                                                             tmp_path: Path) -> None:
    """A claim from another node (boot id) or PID namespace is left and named, whatever its
    pid; one of this namespace whose pid now is another process is removed."""
    out = tmp_path / "out"
    claim = _claim_here(os.getpid())
    if case == "another node":
        claim |= {"host": "node-b", "boot": "0" * 8, "pid": 999999}
    elif case == "another namespace":
        claim |= {"pidns": "pid:[1]", "pid": 999999}
    else:
        claim |= {"start": claim["start"] - 1}  # this pid, started at another time
    folder = tmp_path / ".out.building"
    folder.mkdir()
    (folder / "claim.json").write_bytes(orjson.dumps(claim))
    proc = _build(release, out, check=False)
    if case == "pid reused":
        assert proc.returncode == 0, proc.stderr
        assert _leftovers(out) == ["out"]
        return
    line = _assert_refused(proc, out)
    print(line)
    assert f"host {claim['host']}" in line and f"pid {claim['pid']}" in line, line
    assert str(folder) in line, line  # what to remove, if that build is gone
    assert _leftovers(out) == [folder.name]


def test_folders_no_claim_covers_are_named_not_removed(release: Path, tmp_path: Path) -> None:
    """A replaced dataset whose removal was interrupted, and the temporary folder of an older
    vgfs's build, are left where they are and named in a warning that says how to remove
    them."""
    out = tmp_path / "out"
    left = [tmp_path / ".out.building-4242", tmp_path / ".out.old-0123456789abcdef"]
    for folder in left:
        folder.mkdir()
    proc = _build(release, out)
    named = [w for w in _warnings(proc.stderr) if "rm -r" in w]
    print(named)
    assert len(named) == 2, proc.stderr
    assert all(str(f) in w for f, w in zip(left, named, strict=True)), named
    assert all(folder.is_dir() for folder in left)


# --- interrupted builds --------------------------------------------------------------------


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
