"""Deployment on a node: systemd units, fstab and mount(8), readiness, access, logs.

These tests change the machine the way an admin following the README would (/etc/fstab,
/etc/fuse.conf, /sbin/mount.fuse.vgfs, /usr/local/bin/vgfs, a user) and undo every change in a
`finally`, even when they fail.
"""

from __future__ import annotations

# _strptime (time.strptime's), pyfuse3, trio and vgfs.* are imported up front for a child
# forked to run as another user, who may not be able to read this checkout, the virtualenv or
# even the Python installation to import them later.
import _strptime  # noqa: F401
import errno
import fcntl
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyfuse3  # noqa: F401
import pytest
import trio  # noqa: F401

import vgfs.cache
import vgfs.contents  # noqa: F401
import vgfs.dataset
import vgfs.fs
import vgfs.tree
from tests.conftest import BIN, force_unmount, gone, mounted, vgfs, wait_for
from vgfs import cli
from vgfs.mount import mounted_fs
from vgfs.options import parse_options

UNITS = Path(__file__).resolve().parents[1] / "systemd"
FSTAB_GENERATOR = Path("/lib/systemd/system-generators/systemd-fstab-generator")


# --- helpers: reversible changes to the machine -------------------------------------------------

@contextmanager
def _installed(link: Path, target: Path) -> Iterator[None]:
    """`ln -s target link`, as the README says; whatever was there before comes back after."""
    backup = link.with_name(link.name + ".vgfs-test-backup")
    if link.exists() or link.is_symlink():
        link.rename(backup)
    link.symlink_to(target)
    try:
        yield
    finally:
        link.unlink()
        if backup.exists() or backup.is_symlink():
            backup.rename(link)


@contextmanager
def _edited(path: Path, edit: Callable[[str], str]) -> Iterator[None]:
    before = path.read_bytes() if path.exists() else None
    path.write_text(edit(before.decode() if before is not None else ""))
    try:
        yield
    finally:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    """vgfs installed as the units and README expect: /usr/local/bin/vgfs and
    /sbin/mount.fuse.vgfs, both this checkout's."""
    with _installed(Path("/usr/local/bin/vgfs"), BIN / "vgfs"), \
            _installed(Path("/sbin/mount.fuse.vgfs"), BIN / "mount.fuse.vgfs"):
        yield


@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's own tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="vgfs-deploy-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for mp in path.iterdir():
            force_unmount(mp)
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    """An unprivileged user that exists for this module only."""
    name = f"vgfs-test-{os.getpid()}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


def _daemon_pid(mp: Path) -> int:
    return int(re.search(r"pid (\d+)", vgfs("stats", str(mp)).stdout)[1])


# --- units ---------------------------------------------------------------------------------------

def test_units_verify(installed: None) -> None:
    units = sorted(UNITS.glob("*.*"))
    assert {u.name for u in units} >= {"vgfs@.service", "mnt-vg.mount", "mnt-vg.automount"}
    for unit in units:
        if unit.suffix in (".service", ".mount", ".automount"):
            r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                               text=True)
            # Nothing about these units (other units on the machine may have their own say).
            assert r.returncode == 0 and not re.search(r"vgfs|mnt-vg", r.stdout + r.stderr), \
                r.stdout + r.stderr


def test_service_keeps_the_mount_visible_and_restarts() -> None:
    """Any of these options would give the service its own mount namespace: the mount would
    exist inside the service only, invisible to the jobs it is for."""
    service = _unit(UNITS / "vgfs@.service")
    namespacing = {"PrivateTmp", "PrivateDevices", "PrivateNetwork", "PrivateMounts",
                   "PrivateIPC", "ProtectSystem", "ProtectHome", "ProtectKernelTunables",
                   "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                   "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths",
                   "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
                   "RootDirectory", "RootImage", "MountFlags"}
    assert not namespacing & set(service), namespacing & set(service)
    assert service["Type"] == ["notify"] and service["Restart"] == ["on-failure"]
    assert "umount" in service["ExecStop"][0] and "-f" in service["ExecStart"][0].split()


def _unit(path: Path) -> dict[str, list[str]]:
    """The [Service] (or [Mount]) settings of a unit file: key -> values in file order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section in ("[Service]", "[Mount]"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


class Service:
    """vgfs@.service's command lines for one mount point, run the way systemd runs them:
    %f, %i and ${VAR} expanded, NOTIFY_SOCKET set for the main process."""

    def __init__(self, mountpoint: Path, conf: dict[str, str], notify: str,
                 log: Path) -> None:
        self.settings = _unit(UNITS / "vgfs@.service")
        instance = subprocess.run(["systemd-escape", "--path", str(mountpoint)], check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.specifiers = {"%f": str(mountpoint), "%i": instance}
        self.env = dict(v.split("=", 1) for v in self.settings.get("Environment", []))
        self.env.update(conf)
        self.notify, self.log = notify, log
        self.main: subprocess.Popen | None = None

    def _argv(self, line: str) -> tuple[list[str], bool]:
        ignore_failure = line.startswith("-")
        argv = []
        for word in shlex.split(line.lstrip("-")):
            m = re.fullmatch(r"\$\{(\w+)\}", word)
            if m:
                argv.append(self.env.get(m[1], ""))  # a whole-word ${VAR} is one argument
            else:
                for spec, value in self.specifiers.items():
                    word = word.replace(spec, value)
                argv.append(word)
        return argv, ignore_failure

    def _run(self, key: str) -> None:
        for line in self.settings.get(key, []):
            argv, ignore_failure = self._argv(line)
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 or ignore_failure, f"{key} failed: {r.stderr}"

    def start(self) -> None:
        self._run("ExecStartPre")
        argv, _ = self._argv(self.settings["ExecStart"][0])
        with open(self.log, "ab") as log:
            self.main = subprocess.Popen(argv, stderr=log,
                                         env={**os.environ, "NOTIFY_SOCKET": self.notify})

    def stop(self) -> int:
        """ExecStop, then what systemd does next: wait for the main process to exit."""
        self._run("ExecStop")
        assert self.main is not None
        return self.main.wait(timeout=30)

    def kill(self) -> None:
        if self.main is not None and self.main.poll() is None:
            self.main.kill()
            self.main.wait()


@contextmanager
def _notify_socket(path: str) -> Iterator[socket.socket]:
    """A datagram socket like systemd's notify socket; '@name' is an abstract address."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + path[1:] if path.startswith("@") else path)
    sock.settimeout(30)
    try:
        yield sock
    finally:
        sock.close()


def _messages(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_service_notifies_ready_once_the_mount_answers_and_stopping_on_sigterm(
        real_dataset: Path, tmp_path: Path, installed: None) -> None:
    mp = tmp_path / "vg"  # ExecStartPre creates it
    service = Service(mp, {"DATASET": str(real_dataset)}, str(tmp_path / "notify"),
                      tmp_path / "journal")
    with _notify_socket(service.notify) as sock:
        try:
            service.start()
            ready = _messages(sock)
            # The first message: by the time it arrives, the mount answers.
            assert ready["READY"] == "1" and str(mp) in ready["STATUS"]
            assert mounted_fs(mp) == "fuse.vgfs" and "images" in os.listdir(mp)
            assert "allow_other" in _mount_options(mp)  # the unit's default OPTIONS
            service.main.send_signal(signal.SIGTERM)
            assert _messages(sock) == {"STOPPING": "1"}
            assert service.main.wait(timeout=30) == 0 and mounted_fs(mp) is None
            log = service.log.read_text()
            assert "signal SIGTERM: unmounting" in log and f"unmounted {mp}" in log

            service.start()  # and ExecStop, what `systemctl stop` runs, unmounts cleanly
            assert _messages(sock)["READY"] == "1"
            assert service.stop() == 0 and mounted_fs(mp) is None
            assert _messages(sock) == {"STOPPING": "1"}
        finally:
            service.kill()
            force_unmount(mp)


def test_service_restarts_after_sigkill(real_dataset: Path, tmp_path: Path,
                                        installed: None) -> None:
    """Restart=on-failure after a crash: ExecStop clears the dead mount, the next start mounts."""
    mp = tmp_path / "vg"
    service = Service(mp, {"DATASET": str(real_dataset), "OPTIONS": "cache_size=8M"},
                      f"@vgfs-test-{os.getpid()}", tmp_path / "journal")
    with _notify_socket(service.notify) as sock:
        try:
            service.start()
            assert _messages(sock)["READY"] == "1"
            service.main.kill()
            service.main.wait()
            with pytest.raises(OSError) as dead:
                os.listdir(mp)
            assert dead.value.errno == errno.ENOTCONN
            service.stop()
            assert mounted_fs(mp) is None
            service.start()
            assert _messages(sock)["READY"] == "1"
            assert "allow_other" not in _mount_options(mp)  # OPTIONS replaced the default
            assert service.stop() == 0 and mounted_fs(mp) is None
        finally:
            service.kill()
            force_unmount(mp)


def _mount_options(mp: Path) -> list[str]:
    return subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(mp)], check=True,
                          capture_output=True, text=True).stdout.strip().split(",")


# --- fstab and mount(8) -------------------------------------------------------------------------

def test_fstab_mount_and_umount(real_dataset: Path, tmp_path: Path, installed: None) -> None:
    """`mount /mnt/vg` for an fstab line goes through /sbin/mount.fuse.vgfs, returns once the
    mount answers; `umount /mnt/vg` ends the daemon. mount(8) passes `rw` for `defaults`."""
    lines = {tmp_path / "a": "ro,allow_other,_netdev,nofail", tmp_path / "b": "defaults"}
    fstab = "".join(f"{real_dataset} {mp} fuse.vgfs {opts} 0 0\n" for mp, opts in lines.items())
    with _edited(Path("/etc/fstab"), lambda text: text + fstab):
        for mp in lines:
            mp.mkdir()
            try:
                subprocess.run(["mount", str(mp)], check=True, capture_output=True, timeout=60)
                assert (mp / "images/1/meta.json").read_bytes().startswith(b"{")
                assert "ro" in _mount_options(mp)
                pid = _daemon_pid(mp)
                subprocess.run(["umount", str(mp)], check=True, capture_output=True)
                assert mounted_fs(mp) is None
                wait_for("the daemon to exit", lambda: gone(pid))  # noqa: B023
            finally:
                force_unmount(mp)


def test_fstab_line_at_boot(real_dataset: Path, tmp_path: Path, installed: None) -> None:
    """At boot systemd-fstab-generator turns the line into a .mount unit, and systemd runs
    `mount WHAT WHERE -t TYPE -o OPTIONS` for it: the same as here."""
    mp = tmp_path / "vg"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{real_dataset} {mp} fuse.vgfs ro,allow_other,_netdev,nofail 0 0\n")
    out = tmp_path / "generated"
    for d in (out, out / "early", out / "late"):
        d.mkdir()
    subprocess.run([str(FSTAB_GENERATOR), out, out / "early", out / "late"], check=True,
                   env={**os.environ, "SYSTEMD_FSTAB": str(fstab)})
    name = subprocess.run(["systemd-escape", "--path", "--suffix=mount", str(mp)], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert (out / "remote-fs.target.wants" / name).exists()  # _netdev: a network mount
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(out / name)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    unit = {k: v[0] for k, v in _unit(out / name).items()}
    try:
        subprocess.run(["mount", unit["What"], unit["Where"], "-t", unit["Type"],
                        "-o", unit["Options"]], check=True, capture_output=True, timeout=60)
        assert "images" in os.listdir(mp)
    finally:
        force_unmount(mp)


def test_automount_point(real_dataset: Path, tmp_path: Path) -> None:
    """What a .automount unit leaves: an autofs mount, and a process blocked on it until the
    mount helper mounts on top. Like systemd and automount(8), this test is the autofs daemon
    (its process group is the autofs pgrp); the helper must not leave that group before its
    mount answers, or the kernel makes it wait for itself."""
    mp = tmp_path / "vg"
    mp.mkdir()
    r, w = os.pipe()
    autofs = subprocess.run(["mount", "-t", "autofs", "-o", f"fd={w},pgrp={os.getpgrp()},"
                             "minproto=5,maxproto=5,direct", "vgfs-test", str(mp)],
                            pass_fds=(w,), capture_output=True, text=True)
    os.close(w)
    if autofs.returncode != 0:
        os.close(r)
        # mount(8) had the kernel load autofs if it can: listed now, or the kernel has none.
        if "autofs" not in Path("/proc/filesystems").read_text().split():
            pytest.skip("this kernel has no autofs")
        raise AssertionError(f"mount -t autofs failed ({autofs.returncode}): {autofs.stderr}")
    autofs_root = os.open(mp, os.O_RDONLY | os.O_DIRECTORY)
    user = None
    try:
        user = subprocess.Popen(["ls", str(mp)], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        assert select.select([r], [], [], 20)[0], "the kernel never asked for the mount"
        packet = os.read(r, 512)
        token = struct.unpack_from("=iiI", packet)[2]
        vgfs("mount", str(real_dataset), str(mp), timeout=20)
        fcntl.ioctl(autofs_root, 0x9360, token)  # AUTOFS_IOC_READY: the waiting user goes on
        assert "images" in user.communicate(timeout=20)[0].split()
        vgfs("umount", str(mp))
        assert mounted_fs(mp) == "autofs"  # vgfs left; the automount point stays
    finally:
        if user is not None and user.poll() is None:
            user.kill()
        if mounted_fs(mp) == "fuse.vgfs":
            vgfs("umount", str(mp), check=False)
        os.close(autofs_root)
        os.close(r)  # the automount point turns catatonic: nothing waits on it any more
        while mounted_fs(mp) is not None:
            subprocess.run(["umount", "-l", str(mp)], check=True)


# --- readiness of a background mount ------------------------------------------------------------

def test_background_mount_reports_the_childs_failure(real_dataset: Path,
                                                     tmp_path: Path) -> None:
    """The metrics file is first written by the serving process, after it has mounted: a path
    it cannot write fails there, the parent says why, and nothing stays mounted."""
    mp = tmp_path / "mp"
    mp.mkdir()
    r = vgfs("mount", str(real_dataset), str(mp), "--metrics-file",
             str(tmp_path / "no-such-dir" / "vgfs.prom"), check=False, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no-such-dir/vgfs.prom" in r.stderr and "No such file or directory" in r.stderr
    assert mounted_fs(mp) is None and os.listdir(mp) == []
    with mounted(real_dataset, mp):  # and the mount point is fine for the next try
        assert "images" in os.listdir(mp)


def test_background_mount_logs_to_the_journal(real_dataset: Path, tmp_path: Path) -> None:
    """A detached mount drops the caller's stderr, unless it is the journal (JOURNAL_STREAM, as
    a systemd .mount unit sets for mount(8)): then its later log lines still get there. Else
    they go to syslog (tests/test_logs.py); `vgfs stats` says which."""
    syslog = "syslog" if os.path.exists("/dev/log") else "none (no /dev/log)"
    for journal in (True, False):
        mp = tmp_path / f"mp-{journal}"
        mp.mkdir()
        log = tmp_path / f"log-{journal}"
        with open(log, "wb") as f:
            st = os.fstat(f.fileno())
            env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal \
                else {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
            subprocess.run([sys.executable, "-m", "vgfs", "mount", str(real_dataset), str(mp)],
                           stderr=f, env=env, check=True, timeout=60)
        try:
            pid = _daemon_pid(mp)
            to = json.loads(vgfs("stats", str(mp), "--json").stdout)["log"]
        finally:
            force_unmount(mp)
        wait_for("the daemon to exit", lambda: gone(pid))  # noqa: B023
        assert (f"unmounted {mp}" in log.read_text()) == journal
        assert to == ("stderr (journal)" if journal else syslog)


# --- access -------------------------------------------------------------------------------------

def _read_as(user: pwd.struct_passwd, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user.pw_name, "--", "cat", str(path)],
                          capture_output=True)


def test_allow_other_uid_gid_umask(real_dataset: Path, public_dir: Path,
                                   other_user: pwd.struct_passwd) -> None:
    """Without allow_other only the mounting user gets in; with it, the kernel checks the mode
    bits (default_permissions), which uid=, gid= and umask= set."""
    mp = public_dir / "mp"
    readme = mp / "README.txt"
    cases = [("ro", False), ("allow_other", True), ("allow_other,umask=0004", False),
             (f"allow_other,umask=0004,uid={other_user.pw_uid}", True),
             (f"allow_other,umask=0044,gid={other_user.pw_gid}", False),
             (f"allow_other,umask=0404,gid={other_user.pw_gid}", True)]
    for options, readable in cases:
        with mounted(real_dataset, mp, options):
            r = _read_as(other_user, readme)
            if readable:
                assert r.returncode == 0 and r.stdout == readme.read_bytes(), options
            else:
                assert r.returncode != 0 and b"Permission denied" in r.stderr, options


def _as_user(user: pwd.struct_passwd, fn: Callable[[], int]) -> tuple[int, str]:
    """fn() in a forked child with the user's ids, and what it wrote to stderr. Forked, not
    run: the user may not be able to read this checkout, so the modules come along imported."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 99
        try:
            os.close(r)
            os.dup2(w, 2)
            os.close(w)
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            code = fn()
        except BaseException:  # noqa: BLE001 - the child reports anything, then exits
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), err


@pytest.fixture(scope="module")
def public_dataset(real_dataset: Path, public_dir: Path) -> Path:
    """A copy of the real dataset that every user can read."""
    dataset = public_dir / "dataset"
    shutil.copytree(real_dataset, dataset)
    for path in [dataset, *dataset.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dataset


def test_allow_other_for_a_user_needs_user_allow_other(public_dataset: Path, public_dir: Path,
                                                       other_user: pwd.struct_passwd) -> None:
    dataset = public_dataset
    mp = public_dir / "user-mp"
    mp.mkdir()
    os.chown(mp, other_user.pw_uid, other_user.pw_gid)
    conf = Path("/etc/fuse.conf")
    without = lambda text: re.sub(r"(?m)^\s*user_allow_other\s*$", "", text)  # noqa: E731
    with _edited(conf, without):
        code, err = _as_user(other_user, lambda: cli.main(["mount", str(dataset), str(mp),
                                                           "-o", "allow_other"]))
        assert code == 1 and "/etc/fuse.conf" in err and "user_allow_other" in err, err
        assert mounted_fs(mp) is None
    with _edited(conf, lambda text: without(text) + "\nuser_allow_other\n"):
        code, err = _as_user(other_user, lambda: cli.mount_helper([str(dataset), str(mp), "-f",
                                                               "-o", "allow_other"]))
        # Past the fuse.conf check; a container may still keep /dev/fuse from other users
        # (udev makes it 0666 on a host, and libfuse needs to open it).
        assert code == 0 or "/dev/fuse: permission denied" in err, err
    # The owner of the files is whoever mounts, as the options are parsed, not root.
    assert _as_user(other_user, lambda: parse_options([]).uid - other_user.pw_uid) == (0, "")


def test_dev_fuse_closed_to_the_user_says_so(public_dataset: Path, public_dir: Path,
                                             other_user: pwd.struct_passwd) -> None:
    """/dev/fuse present but not open to the user (mode 0600, as in many containers): the
    mount says permission denied and what to change, not that the kernel module is missing."""
    mp = public_dir / "denied-mp"
    mp.mkdir()
    os.chown(mp, other_user.pw_uid, other_user.pw_gid)
    dev = Path("/dev/fuse")
    mode = dev.stat().st_mode & 0o7777
    dev.chmod(0o600)
    try:
        code, err = _as_user(other_user, lambda: cli.main(["mount", str(public_dataset),
                                                           str(mp)]))
    finally:
        dev.chmod(mode)
    assert code == 1 and err.startswith("vgfs: error: /dev/fuse: permission denied (mode 0600,"
                                        " owner root") and "module" not in err, err
    assert err.count("\n") == 1 and mounted_fs(mp) is None
