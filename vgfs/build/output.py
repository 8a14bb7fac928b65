"""The build's output folder: what it may replace, the temporary folder beside it that the
build writes into, and the rename that puts the finished build in its place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from vgfs.errors import VGFSError


class Output:
    """The output folder `out` of a build that reads `sources` (the release and --images)."""

    def __init__(self, out: Path, force: bool, sources: list[Path]) -> None:
        if not out.parent.is_dir():
            raise VGFSError(f"{out.parent}: output's parent folder does not exist")
        _check_apart(out, sources)
        _check_replaceable(out, force)
        self.out = out
        self.tmp = out.parent / f".{out.name}.building-{os.getpid()}"

    @contextmanager
    def temporary(self) -> Iterator[Path]:
        """Yield the temporary folder to build into; it is removed if the build fails, and
        renamed into place by `replace`."""
        _remove_stale_temps(self.out)
        self.tmp.mkdir()
        try:
            yield self.tmp
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def replace(self) -> None:
        """Rename the finished build into place; an existing dataset goes only after that
        worked."""
        if self.out.exists():
            trash = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.rename(self.out, trash)
            os.rename(self.tmp, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(self.tmp, self.out)
        fd = os.open(self.out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_apart(out: Path, sources: list[Path]) -> None:
    """The output must not be what the build reads, nor hold it, nor sit inside it: replacing
    it would delete the release, and building inside it would read the build's own files."""
    o = out.resolve()
    for src in sources:
        s = src.resolve()
        how = ("is" if o == s else "holds" if o in s.parents
               else "is inside" if s in o.parents else None)
        if how is not None:
            raise VGFSError(f"{out}: the output {how} {src}, which the build reads; choose an"
                            " output folder apart from it")


def _check_replaceable(out: Path, force: bool) -> None:
    """An existing output may be replaced only with --force, and only if it is a dataset."""
    if not os.path.lexists(out):
        return
    if not _is_dataset(out):
        raise VGFSError(f"{out}: already exists and is not a vgfs dataset folder (no vgfs"
                        " manifest.json), so the build does not replace it, even with --force")
    if not force:
        raise VGFSError(f"{out}: already exists; pass --force to replace it")


def _is_dataset(path: Path) -> bool:
    """Whether `vgfs build` wrote the folder, in any format: what --force may replace."""
    try:
        manifest = orjson.loads((path / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    if not isinstance(manifest, dict):
        return False
    tool = manifest.get("tool")
    return "format" in manifest and isinstance(tool, str) and tool.startswith("vgfs")


def _remove_stale_temps(out: Path) -> None:
    """Delete temporary folders left by builds of `out` that were killed (their pid is gone)."""
    for old in out.parent.glob(f".{out.name}.building-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
