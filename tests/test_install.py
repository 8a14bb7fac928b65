"""The README's cluster path: wheels built once, then installed on a node from that folder alone.

A node has the `fuse3` package but no compiler and no headers, while pyfuse3 and python-lzo come
as source from PyPI: the wheel folder must hold everything, so the node's install has no build
step. Building the wheels reuses pip's wheel cache, where `./dev setup` left pyfuse3 and
python-lzo compiled; the other wheels come from the package index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tools.fuzz_squashfs import mksquashfs

ROOT = Path(__file__).resolve().parents[1]
# Reads the file `f` of the image named by argv[1], as the mount's slow path does.
READ_F = ("import sys; from vgfs.squashfs import SquashFSImage;"
          " img = SquashFSImage(sys.argv[1]); print(img.read(img.lookup('f'), 0, 4).decode())")


def run(*cmd: str | Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=600, **kw)  # minutes only when pyfuse3 is not in pip's cache
    if check:
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}{proc.stderr}"
    return proc


def test_wheel_folder_installs_on_a_node_without_an_index(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    # The build node: what `./dev wheels` runs, with this machine's indexes and pip's caches.
    run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", wheels, f"{ROOT}[lzo]")
    names = sorted(p.name for p in wheels.iterdir())
    assert all(n.endswith(".whl") for n in names), names
    assert any(n.startswith("pyfuse3-") for n in names), names

    # The node: no pip configuration (so no index, no find-links but the folder), and
    # --only-binary fails the install rather than build anything. Neither PYTHONPATH nor the
    # working directory may lend it this checkout's vgfs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    node = tmp_path / "node"
    on_node = {"env": env, "cwd": tmp_path}
    run(sys.executable, "-m", "venv", node)
    install = [node / "bin" / "pip", "install", "-q", "--no-index", "--find-links", wheels,
               "--only-binary", ":all:"]
    run(*install, "vgfs", **on_node)
    assert run(node / "bin" / "vgfs", "--version", **on_node).stdout.startswith("vgfs ")
    where = run(node / "bin" / "python", "-c", "import pyfuse3, vgfs.fs; print(vgfs.__file__)",
                **on_node).stdout
    assert where.startswith(str(node)), where

    # Without the extra an LZO image is refused in one sentence; with it, it is read.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data")
    image = tmp_path / "lzo.sqfs"
    mksquashfs(tmp_path / "src", image, "-comp", "lzo")
    proc = run(node / "bin" / "python", "-c", READ_F, image, check=False, **on_node)
    assert proc.returncode == 1
    assert proc.stderr.rstrip().splitlines()[-1] == (
        f"vgfs.squashfs.SquashFSError: SquashFS image {image} uses lzo compression; "
        "install vgfs[lzo] (pip install 'vgfs[lzo]') to read it.")
    run(*install, "vgfs[lzo]", **on_node)
    assert run(node / "bin" / "python", "-c", READ_F, image, **on_node).stdout == "data\n"
