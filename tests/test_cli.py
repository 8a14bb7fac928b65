"""The command lines' own promises: help for every argument, every mount option in the README,
a --quiet that is quiet, a closed pipe that is not an error, a metrics file named *.prom."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, RELEASE, VGFS, vgfs
from vgfs import cli
from vgfs.mount import mounted_fs
from vgfs.options import OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """`vgfs`, each of its commands, and the mount(8) helper, by command line."""
    top = cli._parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"vgfs": top, **{f"vgfs {name}": p for name, p in sub.choices.items()},
            "mount.fuse.vgfs": cli._helper_parser()}


@pytest.mark.parametrize("command", list(_parsers()))
def test_every_argument_has_help(command: str) -> None:
    """`--help` of each command line shows a line for every argument it takes."""
    parser = _parsers()[command]
    assert [a.dest for a in parser._actions if not a.help or a.help == argparse.SUPPRESS] == []
    program, *sub = command.split()
    argv = [*VGFS, *sub] if program == "vgfs" else [str(BIN / program)]
    out = subprocess.run([*argv, "--help"], capture_output=True, text=True, check=True).stdout
    for action in parser._actions:
        shown = action.option_strings or [action.metavar or action.dest]
        assert shown[-1] in out, (command, shown)


def test_readme_lists_every_mount_option() -> None:
    use = README.read_text().split("\n## Use\n")[1].split("\n## ")[0]
    missing = [key for key in OPTIONS if not re.search(rf"`{key}\b", use)]
    assert missing == []


def test_build_quiet_keeps_only_warnings(tmp_path: Path) -> None:
    """The real excerpts give one warning (images without a JPEG); no progress or other line."""
    r = vgfs("build", str(RELEASE), "-o", str(tmp_path / "dataset"), "--quiet", timeout=120)
    assert "warning: 56 images of image_data.json have no JPEG\n" in r.stderr
    assert [line for line in r.stderr.splitlines() if not line.startswith("warning: ")] == []


def test_mksquashfs_shows_progress_like_the_other_phases(tmp_path: Path) -> None:
    """Into a pipe, the packing phase ends in the same progress line as the others, with the
    count read off mksquashfs's own bar (the excerpts' 4 JPEGs)."""
    r = vgfs("build", str(RELEASE), "-o", str(tmp_path / "dataset"), timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.startswith("packing JPEGs")]
    assert len(lines) == 1 and re.fullmatch(
        r"packing JPEGs into images\.sqfs \(mksquashfs\): 4\.0/4\.0 file \(100%\),"
        r" [\d.]+ file/s, \d+ s", lines[0]), r.stderr
    assert "\r" not in r.stderr and "[====" not in r.stderr  # none of mksquashfs's own bar


@pytest.mark.parametrize("command", ["verify", "sample"])
def test_quiet_is_silent(command: str, real_dataset: Path, tmp_path: Path) -> None:
    """Without --quiet, at least the closing progress line goes to stderr; with it, nothing."""
    def run(*flags: str) -> str:
        target = real_dataset if command == "verify" else tmp_path / f"release{len(flags)}"
        extra = ["--images", "20"] if command == "sample" else []
        return vgfs(command, str(target), *extra, *flags, timeout=120).stderr

    assert run() != ""
    assert run("--quiet") == ""


@pytest.mark.parametrize("args", [["info", "--json"], ["info"]])
def test_closed_pipe_is_not_an_error(args: list[str], real_dataset: Path) -> None:
    """Output into a pipe nobody reads any more: exit 0, and not a word on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run([*VGFS, *args, str(real_dataset)], stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (0, "")
    shell = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | head -1', "-", *VGFS, *args,
                            str(real_dataset)], capture_output=True, text=True, timeout=60)
    assert (shell.returncode, shell.stderr, len(shell.stdout.splitlines())) == (0, "", 1)


def test_metrics_file_must_end_in_prom(real_dataset: Path, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    r = vgfs("mount", str(real_dataset), str(mp), "--metrics-file", "x.txt", check=False)
    assert r.returncode == 1 and mounted_fs(mp) is None
    assert r.stderr == ("vgfs: error: metrics file x.txt: the name must end in .prom, the only"
                        " files node_exporter's textfile collector reads\n")
