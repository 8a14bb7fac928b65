"""The mount(8) helper `mount.fuse.vgfs`: mount(8)'s argument interface and exit status."""

from __future__ import annotations

import importlib
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import BIN
from vgfs.cli import mount_helper
from vgfs.mount import mounted_fs

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


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


def test_console_scripts_resolve() -> None:
    """What pip writes into bin/ for each script: a module that imports and a function in it."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts["mount.fuse.vgfs"] == "vgfs.cli:mount_helper"
    for entry in scripts.values():
        module, _, name = entry.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), entry


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "bogus"], "mount.fuse.vgfs: -o bogus: unknown option"),
    (["-s", "-o", "metrics_interval=0"], "metrics interval 0.0: must be a positive number"),
    (["-f", "-o", "cache_size=lots"], "mount.fuse.vgfs: -o cache_size=lots: not a size"),
    (["-f", "-o", "metrics_file=x.txt"], "mount.fuse.vgfs: metrics file x.txt: the name must end"
                                         " in .prom")])
def test_failures_exit_32_with_the_reason(args: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Each fails before the dataset is opened, so none is needed; mount(8) reports 32."""
    assert mount_helper([str(tmp_path / "dataset"), str(tmp_path), *args]) == 32
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mount_helper([str(tmp_path / "nope"), str(tmp_path), "-f"]) == 32
    assert "not found" in capsys.readouterr().err and mounted_fs(tmp_path) is None


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        mount_helper(["only-a-dataset"])
    assert exc.value.code == 2 and "mount.fuse.vgfs" in capsys.readouterr().err
