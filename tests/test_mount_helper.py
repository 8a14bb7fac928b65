"""The mount(8) helper `mount.fuse.vgfs`: mount(8)'s argument interface and exit status."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import BIN
from vgfs.mount import mounted_fs


def test_mount_helper_arguments(real_dataset: Path, tmp_path: Path) -> None:
    """mount(8)'s helper interface: SOURCE MOUNTPOINT [-sfnv] [-o OPTS]; exit 32 on failure."""
    helper = str(BIN / "mount.fuse.vgfs")
    mp = tmp_path / "mp"
    mp.mkdir()
    run = lambda *a: subprocess.run([helper, *a], capture_output=True, text=True)  # noqa: E731
    r = run(str(real_dataset), str(mp), "-f", "-n", "-v", "-o", "rw,_netdev,nofail")
    assert r.returncode == 0 and mounted_fs(mp) is None  # -f: checks only
    r = run(str(real_dataset), str(mp), "-f", "-o", "bogus")
    assert r.returncode == 32 and "bogus" in r.stderr
    r = run(str(real_dataset), str(mp), "-sfn", "-o", "bogus")
    assert r.returncode == 0 and "bogus" in r.stderr  # -s: a warning
    r = run(str(tmp_path / "nope"), str(mp), "-o", "ro")
    assert r.returncode == 32 and "not found" in r.stderr and "Traceback" not in r.stderr
