"""Mount lifecycle: checks before mounting, daemonizing, readiness, signals, systemd
notifications, unmount. Options are parsed in options.py, counters kept in metrics.py."""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vgfs import logs
from vgfs.errors import VGFSError
from vgfs.metrics import metrics_text, write_metrics

if TYPE_CHECKING:
    import trio

    from vgfs.dataset import Dataset
    from vgfs.options import MountOptions

log = logging.getLogger("vgfs")

# After a signal, requests in flight get this long to finish; then they fail, so that a read
# stuck in storage cannot hold up the unmount (and every request queued behind it).
SHUTDOWN_GRACE = 2.0
FSTYPE = "fuse.vgfs"  # a vgfs mount's type in /proc/self/mountinfo, dead or alive


def _mount_entry(mountpoint: str | os.PathLike) -> tuple[str, str] | None:
    """(type, device as major:minor) of the topmost filesystem mounted at `mountpoint`, from
    /proc/self/mountinfo, which asks nothing of the filesystem itself. Topmost, because an
    automount point is an autofs mount with the real one on top."""
    target = os.path.abspath(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:  # in mount order: a later entry for the same point is on top
            fields = line.split()
            sep = fields.index("-")
            point = re.sub(r"\\(\d{3})", lambda m: chr(int(m[1], 8)), fields[4])
            if point == target:
                found = (fields[sep + 1], fields[2])
    return found


def mounted_fs(mountpoint: str | os.PathLike) -> str | None:
    """The type of the topmost filesystem mounted at `mountpoint` (even a dead FUSE mount), or
    None."""
    entry = _mount_entry(mountpoint)
    return None if entry is None else entry[0]


def _set_readahead(mp: Path, kb: int) -> None:
    """The kernel reads a FUSE file ahead 128 KiB at a time, a request each; a file of the
    release is read whole far more often than not. A bigger window for this mount (its own
    bdi, gone with it) means a megabyte a request, requests in flight together for the worker
    threads to decompress at once, and larger pages in the page cache, which copy out faster.
    Only root may set it: elsewhere the kernel's default stays."""
    entry = _mount_entry(mp)
    if entry is None:
        return
    try:
        Path(f"/sys/class/bdi/{entry[1]}/read_ahead_kb").write_text(f"{kb}\n")
    except OSError as e:
        log.debug("readahead of %s left at the kernel's default: %s", mp, e)


def check_mountpoint(mountpoint: Path) -> None:
    try:
        st = os.stat(mountpoint)
        if not stat.S_ISDIR(st.st_mode):
            raise VGFSError(f"{mountpoint}: mount point is not a directory")
        # autofs is what a systemd .automount (or automount(8)) leaves there for us to mount
        # over. Anything else: is it alive? The kernel may answer stat from its cache even for
        # a dead FUSE mount, never statfs.
        if mounted_fs(mountpoint) not in (None, "autofs"):
            os.statvfs(mountpoint)
            raise VGFSError(f"{mountpoint}: something is already mounted there")
        if any(os.scandir(mountpoint)):
            raise VGFSError(f"{mountpoint}: mount point is not empty")
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise VGFSError(_dead_mount(mountpoint)) from None
        raise VGFSError(f"{mountpoint}: mount point not usable: {e.strerror}") from None
    _check_dev_fuse()


def _check_dev_fuse(dev: str = "/dev/fuse") -> None:
    """Open the device as libfuse will, read-write (no side effect until a mount uses it), and
    say what stands in the way: a missing module, a container's device rules or the mode."""
    try:
        os.close(os.open(dev, os.O_RDWR | os.O_CLOEXEC))
        return
    except FileNotFoundError:
        why = ("not found; load the fuse kernel module (modprobe fuse), or give the container"
               " the device")
    except PermissionError as e:
        if e.errno == errno.EACCES:
            why = _mode_denies(dev)
        else:  # EPERM: the mode allows it, a device cgroup (a container's) does not
            why = "not permitted here; give the container the device"
    except OSError as e:  # ENODEV or ENXIO: the device node without its driver
        why = f"{e.strerror}; load the fuse kernel module (modprobe fuse)"
    raise VGFSError(f"{dev}: {why}")


def _mode_denies(dev: str) -> str:
    st = os.stat(dev)
    try:
        owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    except KeyError:
        owner = f"{st.st_uid}:{st.st_gid}"
    return (f"permission denied (mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}); this"
            " user needs to read and write it: make it 0666 (udev's default), or add the user"
            " to its group and make it 0660")


def _dead_mount(path: Path) -> str:
    """What to say of the dead FUSE mount (its process gone: ENOTCONN) at or above `path`."""
    for dead in (path, *path.parents):  # / is always mounted: the loop always breaks
        fs = mounted_fs(dead)
        if fs is not None:
            break
    fix = f"vgfs umount {dead}" if fs == FSTYPE else f"fusermount3 -u -z {dead}"
    return f"{dead}: a dead FUSE mount is there (its process is gone); run `{fix}` first"


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


def preflight(dataset: str, mountpoint: Path, opts: MountOptions) -> None:
    """Every check that can fail before anything is mounted, cheapest first."""
    from vgfs.dataset import open_dataset

    _check_allow_other(opts)
    if not opts.metrics_interval > 0:
        raise VGFSError(f"metrics interval {opts.metrics_interval}: must be a positive number"
                        " of seconds")
    open_dataset(dataset).close()
    check_mountpoint(mountpoint)


def mount(dataset: str, mountpoint: str, opts: MountOptions, foreground: bool) -> None:
    """Mount and serve. In the background, return once the mount answers, or raise its reason."""
    dataset = os.path.abspath(dataset)  # the background process serves from /
    mp = Path(mountpoint).absolute()
    preflight(dataset, mp, opts)
    if opts.log_file:
        logs.to_file(opts.log_file)
    if foreground:
        _serve(dataset, mp, opts, on_ready=lambda: _notify_systemd(
            f"READY=1\nSTATUS=serving {dataset} at {mp}"))
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
    os.chdir("/")
    # Only a foreground mount is the service manager's main process; this one must not speak
    # for whoever started `vgfs mount`.
    os.environ.pop("NOTIFY_SOCKET", None)
    code = 0
    try:
        def ready() -> None:
            # Leave the caller's session only now. Under an automount, the kernel lets only the
            # process group that runs the mount helper reach the mount point while the mount is
            # pending; mounting or stat-ing it from a new session would wait forever.
            os.setsid()
            _detach_stdio(keep_stderr=logs.detach())
            os.write(write_end, b"ok")
            os.close(write_end)

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


def _detach_stdio(keep_stderr: bool) -> None:
    """Let go of the caller's terminal or pipes; stderr stays when it is the journal (a systemd
    .mount unit runs mount(8) with its output there), so that log lines still reach it."""
    keep = {2} if keep_stderr else set()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in {0, 1, 2} - keep:
        os.dup2(devnull, fd)
    os.close(devnull)


# Holding the indexes takes the GIL for a few tenths of a second at full scale: a mount's first
# answer (often its only one, for a script) comes first, from LMDB.
HOLD_AFTER_S = 1.0


def _hold(ds: Dataset, stop: threading.Event) -> None:
    if stop.wait(HOLD_AFTER_S):
        return
    start = time.monotonic()
    try:
        ds.hold(stop)
        if stop.is_set():
            return
        log.info("indexes held in memory after %.2f s", time.monotonic() - start)
        damaged = ds.check_pages()  # the rest: the views' databases, walked by their listings
    except Exception as e:  # noqa: BLE001 - the mount serves from LMDB without them
        log.warning("holding the indexes in memory failed: %s", e)
        return
    for sentence in damaged.values():
        log.error("%s", sentence)


UPDATEDB_CONF = Path("/etc/updatedb.conf")


def _warn_if_indexed(conf: Path) -> None:
    """plocate's and mlocate's nightly updatedb walks every mount whose type PRUNEFS does not
    name: say so once, rather than let it walk the dataset on every node."""
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        return
    prunefs = re.findall(r'^\s*PRUNEFS\s*=\s*"([^"]*)"', text, re.MULTILINE)
    if not any("fuse.vgfs" in line.split() for line in prunefs):
        log.warning("%s: PRUNEFS does not name fuse.vgfs, so updatedb will walk this mount"
                    ' every night; add it: PRUNEFS="... fuse.vgfs"', conf)


def _serve(dataset: str, mp: Path, opts: MountOptions, on_ready: Callable[[], None]) -> None:
    """Mount with pyfuse3 and run the trio loop until unmounted or signalled."""
    import pyfuse3
    import trio

    from vgfs.cache import LRUCache
    from vgfs.contents import Contents
    from vgfs.dataset import open_dataset
    from vgfs.fs import Operations
    from vgfs.tree import Tree

    cache = LRUCache(opts.cache_size)  # decompressed frames and made files share it
    ds = open_dataset(dataset, cache)
    ops = Operations(Tree(ds, opts.list_views), Contents(ds, cache, opts.pretty), cache,
                     opts.uid, opts.gid, opts.umask, opts.threads)
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

    def metrics() -> str:
        return metrics_text(ops.stats.sample(ops.cache), mp)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, pyfuse3, nursery.cancel_scope)
            nursery.start_soon(_when_answering, mp, opts.readahead_kb, on_ready)
            if opts.metrics_file:
                nursery.start_soon(_write_metrics_every, opts.metrics_file,
                                   opts.metrics_interval, metrics)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    # Lookups read LMDB on the loop: fetch the pages they need now, off the loop.
    stop_holding = threading.Event()
    holding = threading.Thread(target=_hold, args=(ds, stop_holding), name="vgfs-hold",
                               daemon=True)
    holding.start()
    try:
        if opts.metrics_file:
            # Written once before the mount is reported ready: a path that cannot be written
            # fails the mount with the reason, rather than a mount that never reports.
            try:
                write_metrics(opts.metrics_file, metrics())
            except OSError as e:
                raise VGFSError(f"metrics file {opts.metrics_file}: cannot write it:"
                                f" {e.strerror}") from None
        log.info("mounted %s at %s", dataset, mp)
        _warn_if_indexed(UPDATEDB_CONF)
        trio.run(main)
    except BaseExceptionGroup as group:  # a failed task: report its own error, not the group
        raise _first_leaf(group) from None
    finally:
        _notify_systemd("STOPPING=1")
        # Closing the FUSE fd first fails whatever the kernel still waits for; the unmount is
        # lazy (MNT_DETACH, or fusermount3 -z) if the mount point is busy.
        pyfuse3.close(unmount=True)
        stop_holding.set()
        holding.join(SHUTDOWN_GRACE)
        # An abandoned read keeps its limiter token until it returns (trio documents it).
        stuck = ops.limiter.borrowed_tokens + holding.is_alive()
        if stuck:
            # They still use the dataset's map and fds: the exit frees those, not close().
            log.warning("%d storage reads still hang; leaving them to the exit", stuck)
        else:
            ds.close()
        if opts.metrics_file:
            # Gone with the mount: frozen counters in the file would look like a live mount.
            with contextlib.suppress(OSError):
                os.unlink(opts.metrics_file)
        log.info("unmounted %s", mp)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _on_signals(pyfuse3: Any, serving: trio.CancelScope) -> None:
    """On SIGTERM, SIGINT or SIGHUP take no more requests; cancel those still in flight after
    SHUTDOWN_GRACE seconds, or at a second signal. Their worker threads are abandoned on
    cancel, so that pyfuse3.main returns and the mount goes even while a read hangs."""
    import trio

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        signum = await anext(signals)
        log.info("signal %s: unmounting", signal.Signals(signum).name)
        pyfuse3.terminate()
        with trio.move_on_after(SHUTDOWN_GRACE):
            await anext(signals)
    log.warning("requests still in flight: failing them")
    serving.cancel()


async def _when_answering(mp: Path, readahead_kb: int, on_ready: Callable[[], None]) -> None:
    """Call on_ready once the mount answers a stat, i.e. once it is usable: the stat is a FUSE
    request that only the running loop can answer. The readahead window is set first: the
    kernel sets its own when the loop answers its INIT."""
    import trio

    await trio.to_thread.run_sync(os.stat, mp, abandon_on_cancel=True)
    _set_readahead(mp, readahead_kb)
    on_ready()


def _notify_systemd(state: str) -> None:
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


async def _write_metrics_every(path: str, interval: float, text: Callable[[], str]) -> None:
    import trio

    while True:
        await trio.sleep(interval)
        try:
            # The snapshot is taken here, in the loop; only the file write goes to a thread.
            await trio.to_thread.run_sync(write_metrics, path, text(), abandon_on_cancel=True)
        except OSError as e:
            log.warning("metrics file %s: %s", path, e.strerror)


def umount(mountpoint: str, timeout: float = 10.0) -> None:
    """Unmount cleanly; a dead mount left by a killed process is detached as well."""
    mp = os.path.abspath(mountpoint)
    fs = mounted_fs(mp)
    if fs is None:
        raise VGFSError(f"{mp}: nothing is mounted there")
    if fs != FSTYPE:  # another FUSE filesystem included: not ours to unmount
        raise VGFSError(f"{mp}: {fs} is mounted there, not vgfs")
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
    while mounted_fs(mp) == FSTYPE:  # what is left below may be autofs
        if time.monotonic() > deadline:
            raise VGFSError(f"{mp}: could not unmount ({last or 'still mounted'})")
        time.sleep(0.05)
