"""Mount lifecycle: options, checks before mounting, readiness, signals, daemonizing, unmount."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vgfs.errors import VGFSError

log = logging.getLogger("vgfs")

DEFAULT_CACHE = 256 << 20
# Options that only mount(8) or systemd understand: accepted and dropped, never passed to FUSE.
MOUNT8_ONLY = {"_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "defaults",
               "ro", "nosuid", "nodev", "noexec", "suid", "dev", "exec", "noatime", "atime",
               "relatime", "nodiratime", "async", "sync", "owner", "group", "n",
               "default_permissions"}
_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B?)?", re.IGNORECASE)


@dataclass
class MountOptions:
    cache_size: int = DEFAULT_CACHE
    pretty: bool = False
    uid: int = os.getuid()
    gid: int = os.getgid()
    umask: int = 0
    allow_other: bool = False
    allow_root: bool = False
    threads: int = 16


def parse_size(text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise VGFSError(f"-o cache_size={text}: not a size (examples: 268435456, 256M, 2G)")
    return int(m[1]) << (10 * " KMGT".index(m[2].upper() or " "))


def parse_options(specs: list[str]) -> MountOptions:
    """Parse `-o a,b=c` lists. mount(8)-only options are dropped; unknown ones are an error."""
    opts = MountOptions()
    for spec in specs:
        for item in filter(None, spec.split(",")):
            key, _, value = item.partition("=")
            if key in MOUNT8_ONLY or key.startswith(("x-", "comment")):
                continue
            try:
                if key == "cache_size":
                    opts.cache_size = parse_size(value)
                elif key == "pretty":
                    opts.pretty = True
                elif key in ("uid", "gid"):
                    setattr(opts, key, int(value))
                elif key == "umask":
                    opts.umask = int(value, 8) & 0o777
                elif key == "allow_other":
                    opts.allow_other = True
                elif key == "allow_root":
                    opts.allow_root = True
                elif key == "threads":
                    opts.threads = max(1, int(value))
                elif key == "rw":
                    raise VGFSError("-o rw: vgfs mounts are always read-only")
                else:
                    raise VGFSError(f"-o {item}: unknown option (known: cache_size=, pretty,"
                                    " uid=, gid=, umask=, allow_other, allow_root, threads=)")
            except ValueError:
                raise VGFSError(f"-o {item}: expected a number") from None
    return opts


def mounted_fs(mountpoint: str | os.PathLike) -> str | None:
    """The filesystem type mounted at `mountpoint` (even a dead FUSE mount), or None."""
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            point = re.sub(r"\\(\d{3})", lambda m: chr(int(m[1], 8)), fields[4])
            if point == target:
                return fields[sep + 1]
    return None


def check_mountpoint(mountpoint: Path) -> None:
    try:
        st = os.stat(mountpoint)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise VGFSError(f"{mountpoint}: a dead FUSE mount is still there; run"
                            f" `vgfs umount {mountpoint}` first") from None
        raise VGFSError(f"{mountpoint}: mount point not usable: {e.strerror}") from None
    if not os.path.isdir(mountpoint) or not st:
        raise VGFSError(f"{mountpoint}: mount point is not a directory")
    if mounted_fs(mountpoint) is not None:
        raise VGFSError(f"{mountpoint}: something is already mounted there")
    if any(os.scandir(mountpoint)):
        raise VGFSError(f"{mountpoint}: mount point is not empty")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise VGFSError("/dev/fuse: not available; load the fuse kernel module (modprobe fuse),"
                        " or give the container the device")


def _check_allow_other(opts: MountOptions) -> None:
    if not (opts.allow_other or opts.allow_root) or os.getuid() == 0:
        return
    try:
        conf = Path("/etc/fuse.conf").read_text()
    except OSError:
        conf = ""
    if not re.search(r"^\s*user_allow_other\s*$", conf, re.MULTILINE):
        name = "allow_other" if opts.allow_other else "allow_root"
        raise VGFSError(f"-o {name}: not permitted for non-root users unless /etc/fuse.conf"
                        " has a line `user_allow_other`")


def mount(dataset: str, mountpoint: str, opts: MountOptions, foreground: bool) -> None:
    """Mount and serve. In the background, return once the mount answers, or raise its reason."""
    from vgfs.dataset import open_dataset

    mp = Path(mountpoint).absolute()
    open_dataset(dataset).close()  # fail here, with the reason, before anything is mounted
    check_mountpoint(mp)
    _check_allow_other(opts)
    if foreground:
        _serve(dataset, mp, opts, on_ready=_notify_systemd)
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read().decode(errors="replace")
        if answer != "ok":
            os.waitpid(pid, 0)
            raise VGFSError(answer or f"{mp}: the mount process exited before the mount answered")
        return
    os.close(read_end)
    os.setsid()
    code = 0
    try:
        def ready() -> None:
            os.write(write_end, b"ok")
            os.close(write_end)
            _detach_stdio()

        _serve(dataset, mp, opts, on_ready=ready)
    except VGFSError as e:
        _tell(write_end, str(e))
        code = 1
    except BaseException as e:  # noqa: BLE001 - report anything to the waiting parent
        _tell(write_end, f"{mp}: mount failed: {type(e).__name__}: {e}")
        code = 1
    os._exit(code)


def _tell(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode())
        os.close(fd)
    except OSError:
        pass


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _serve(dataset: str, mp: Path, opts: MountOptions, on_ready: Any) -> None:
    """Mount with pyfuse3 and run the trio loop until unmounted or signalled."""
    import pyfuse3
    import trio

    from vgfs.cache import LRUCache
    from vgfs.dataset import open_dataset
    from vgfs.fs import Operations
    from vgfs.tree import Tree
    from vgfs.views import Views

    ds = open_dataset(dataset)
    cache = LRUCache(opts.cache_size)
    ops = Operations(Tree(ds), Views(ds, cache, opts.pretty), cache, opts.uid, opts.gid,
                     opts.umask, opts.threads)
    fsname = str(Path(dataset).absolute())
    fuse_opts = {"fsname=" + (fsname if re.fullmatch(r"[^,\s\\]+", fsname) else "vgfs"),
                 "subtype=vgfs", "ro", "default_permissions", "noatime"}
    if opts.allow_other:
        fuse_opts.add("allow_other")
    elif opts.allow_root:
        fuse_opts.add("allow_root")
    try:
        pyfuse3.init(ops, str(mp), fuse_opts)
    except RuntimeError as e:
        ds.close()
        raise VGFSError(f"{mp}: mounting failed ({e}); see the message above") from None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, pyfuse3)
            nursery.start_soon(_when_answering, mp, on_ready)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    log.info("mounted %s at %s", dataset, mp)
    try:
        trio.run(main)
    finally:
        _notify_systemd("STOPPING=1")
        pyfuse3.close(unmount=True)
        ds.close()
        log.info("unmounted %s", mp)


async def _on_signals(pyfuse3: Any) -> None:
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def _when_answering(mp: Path, on_ready: Any) -> None:
    """Call on_ready once the mount answers a stat, i.e. once it is usable."""
    import trio

    await trio.to_thread.run_sync(os.stat, mp)
    on_ready()


def _notify_systemd(state: str = "READY=1\nSTATUS=serving") -> None:
    """Tell systemd (Type=notify) about readiness or shutdown; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(addr)
            s.sendall(state.encode())
        except OSError as e:
            log.warning("NOTIFY_SOCKET %s: %s", addr, e)


def umount(mountpoint: str, timeout: float = 10.0) -> None:
    """Unmount cleanly; a dead mount left by a killed process is detached as well."""
    mp = os.path.abspath(mountpoint)
    if mounted_fs(mp) is None:
        raise VGFSError(f"{mp}: nothing is mounted there")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    attempts = [[tool, "-u", mp], [tool, "-u", "-z", mp]] if tool else []
    if os.getuid() == 0:
        attempts.append(["umount", "-l", mp])
    last = ""
    for cmd in attempts:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            break
        last = proc.stderr.strip()
    deadline = time.monotonic() + timeout
    while mounted_fs(mp) is not None:
        if time.monotonic() > deadline:
            raise VGFSError(f"{mp}: could not unmount ({last or 'still mounted'})")
        time.sleep(0.05)


def read_stats(mountpoint: str) -> dict[str, Any]:
    """The live counters of a running mount, from the extended attribute on its root."""
    from vgfs.fs import STATS_XATTR

    try:
        return orjson.loads(os.getxattr(mountpoint, STATS_XATTR.decode()))
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            raise VGFSError(f"{mountpoint}: not a vgfs mount") from None
        raise VGFSError(f"{mountpoint}: cannot read stats: {e.strerror}") from None


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="vgfs %(levelname)s %(message)s")
