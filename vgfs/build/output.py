"""The build's output folder: what it may replace, and the claim that keeps two builds of it
from clobbering each other.

A build claims its output by creating the folder `.NAME.building` beside it with mkdir, which
is atomic on every file system, a Ceph shared by several nodes included. It builds into that
folder, whose `claim.json` says which build it is, and renames it into place at the end; a
second build that finds the folder refuses. The claim is taken for stale, and removed, only
when it is of this host, boot and PID namespace and its process is gone: a pid from another
node or namespace says nothing about whether that build still runs.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from vgfs.errors import VGFSError
from vgfs.progress import warn

_CLAIM = "claim.json"
_CLAIM_KEYS = ("token", "host", "boot", "pidns", "pid", "start", "since")
_SAME_SYSTEM = ("host", "boot", "pidns")  # pids mean the same only where these match


class Output:
    """The output folder `out` of a build that reads `sources` (the release and --images)."""

    def __init__(self, out: Path, force: bool, sources: list[Path]) -> None:
        if not out.parent.is_dir():
            raise VGFSError(f"{out.parent}: output's parent folder does not exist")
        _check_apart(out, sources)
        _check_replaceable(out, force)
        self.out, self.force = out, force
        self.tmp = out.parent / f".{out.name}.building"
        self.me = _identity()

    @contextmanager
    def claimed(self) -> Iterator[Path]:
        """Claim the output and yield the temporary folder to build into; it is removed if
        the build fails, and renamed into place by `replace`."""
        self._claim()
        try:
            (self.tmp / _CLAIM).write_bytes(orjson.dumps(self.me))
            _warn_leftovers(self.out)
            yield self.tmp
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def replace(self) -> None:
        """Rename the finished build into place; an existing dataset goes only after that
        worked. Checked again here: something that does not claim the output (a person, an
        older vgfs) may have made it since the start."""
        (self.tmp / _CLAIM).unlink()
        _check_replaceable(self.out, self.force)
        if os.path.lexists(self.out):
            trash = self.out.parent / f".{self.out.name}.old-{self.me['token']}"
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

    def _claim(self) -> None:
        """Create the temporary folder; a stale claim is removed once, any other refused."""
        for attempt in range(2):
            try:
                os.mkdir(self.tmp)
                return
            except FileExistsError:
                holder = _holder(self.tmp)
                if attempt or not self._stale(holder) or not self._remove_stale(holder):
                    raise VGFSError(self._refusal(holder)) from None

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        """Whether the claim is of a build of this system whose process is gone (its pid is
        free, or now another process's)."""
        return (holder is not None and all(holder[k] == self.me[k] for k in _SAME_SYSTEM)
                and _start_time(holder["pid"]) != holder["start"])

    def _remove_stale(self, holder: dict[str, Any]) -> bool:
        """Remove the stale claim's folder, under a lock on the parent folder: two builds that
        both found it stale must not remove the claim that one of them made since. False if
        the file system cannot lock."""
        fd = os.open(self.out.parent, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system that cannot lock a folder (NFS): leave it be
                return False
            if _holder(self.tmp) == holder:
                shutil.rmtree(self.tmp)
            return True
        finally:
            os.close(fd)

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        who = ("a build whose claim cannot be read" if holder is None else
               f"another build (host {holder['host']}, pid {holder['pid']},"
               f" since {holder['since']})")
        return (f"{self.out}: being built by {who}; if that build is no longer running,"
                f" remove its folder with `rm -r {self.tmp}` and build again")


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


def _identity() -> dict[str, Any]:
    """This build, as its claim names it: where it runs, its pid there, and a random token
    that no other build shares."""
    pid = os.getpid()
    return {"token": secrets.token_hex(8), "host": socket.gethostname(),
            "boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "pidns": os.readlink("/proc/self/ns/pid"), "pid": pid, "start": _start_time(pid),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _holder(tmp: Path) -> dict[str, Any] | None:
    """The claim of the build of the folder `tmp`; None if it cannot be read (being written,
    or left by a build killed just then)."""
    try:
        claim = orjson.loads((tmp / _CLAIM).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(claim, dict) or any(k not in claim for k in _CLAIM_KEYS) \
            or not isinstance(claim["pid"], int):
        return None
    return claim


def _start_time(pid: int) -> int | None:
    """When the process `pid` of this namespace started, in clock ticks since boot; None if
    there is none. With the pid it names one process, even once the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold ") "


def _warn_leftovers(out: Path) -> None:
    """Folders no claim covers, which no build removes: a replaced dataset whose removal was
    interrupted, or the temporary folder of a build by an older vgfs."""
    prefixes = (f".{out.name}.old-", f".{out.name}.building-")
    for left in sorted(out.parent / name for name in os.listdir(out.parent)
                       if name.startswith(prefixes)):
        warn(f"{left}: left by an interrupted build of {out.name}; remove it with `rm -r {left}`"
             " if no build of it is running")
