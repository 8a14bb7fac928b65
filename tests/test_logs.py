"""Where a mount's log goes (DESIGN §6: an error is never only a counter): a file the user
names, syslog once a background mount lets go of the caller's stderr, the journal when stderr
is the journal, stderr otherwise; and `vgfs stats` says which."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, VGFS, flip_byte, force_unmount, vgfs
from vgfs import logs
from vgfs.dataset import open_dataset
from vgfs.errors import VGFSError
from vgfs.mount import mounted_fs

# What the mount logs for a JPEG whose bytes fail their CRC (fs.py's line for an EIO).
EIO_LINE = (r"ERROR read\(\d+, 0\) failed: VGFSError: image 1: JPEG bytes in images.sqfs do not"
            r" match their checksum")


@pytest.fixture
def damaged(real_dataset: Path, tmp_path: Path) -> Path:
    """A copy of the real dataset with one bit of image 1's JPEG flipped in images.sqfs."""
    dataset = Path(shutil.copytree(real_dataset, tmp_path / "dataset"))
    with open_dataset(dataset) as ds:
        offset, size = ds.jpeg_index(1)[:2]
        sqfs = ds.images_path
    flip_byte(sqfs, offset + size // 2)
    return dataset


def _read_fails_with_eio(mp: Path) -> None:
    with pytest.raises(OSError) as exc:
        (mp / "images/1/image.jpg").read_bytes()
    assert exc.value.errno == errno.EIO


def _stats(mp: Path) -> dict:
    return json.loads(vgfs("stats", str(mp), "--json").stdout)


def _mount_options(mp: Path) -> str:
    """Both option fields of the mount's /proc/self/mountinfo line: what the kernel was given."""
    line = next(line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4] == str(mp))
    fields = line.split()
    return f"{fields[5]} {fields[fields.index('-') + 3]}"


@pytest.mark.parametrize("how", ["vgfs mount --log-file", "mount.fuse.vgfs -o log_file="])
def test_log_file_keeps_a_background_mounts_eio(damaged: Path, tmp_path: Path,
                                               how: str) -> None:
    mp, log = tmp_path / "mp", tmp_path / "logs" / "vgfs.log"
    mp.mkdir()
    log.parent.mkdir()
    cmd = ([*VGFS, "mount", str(damaged), str(mp), "--log-file", str(log)] if how.startswith("vgfs")
           else [str(BIN / "mount.fuse.vgfs"), str(damaged), str(mp), "-o", f"ro,log_file={log}"])
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        _read_fails_with_eio(mp)
        stats = _stats(mp)
        assert stats["log"] == f"file {log}" and stats["errors"]["read"] >= 1
        assert f"\nlog          file {log}" in vgfs("stats", str(mp)).stdout
        assert "log_file" not in _mount_options(mp)  # vgfs's option, not the kernel's
    finally:
        force_unmount(mp)
    # Each line with its time and process: the file has no journal to add them.
    assert re.search(rf"^\d{{4}}-\d\d-\d\d [\d:,]+ vgfs\[{stats['pid']}\] {EIO_LINE}$",
                     log.read_text(), re.MULTILINE), log.read_text()


def test_unwritable_log_file_fails_the_mount(real_dataset: Path, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    r = vgfs("mount", str(real_dataset), str(mp), "--log-file", str(tmp_path / "no" / "x.log"),
             check=False, timeout=60)
    assert r.returncode == 1 and mounted_fs(mp) is None
    assert r.stderr == (f"vgfs: error: log file {tmp_path}/no/x.log: cannot open it:"
                        " No such file or directory\n")


@pytest.fixture
def dev_log() -> Iterator[socket.socket]:
    """A stand-in for syslog: a datagram socket bound at /dev/log for the test, then removed.
    On a machine whose syslog owns /dev/log, its lines cannot be read back here."""
    if os.path.exists(logs.SYSLOG):
        pytest.skip(f"{logs.SYSLOG} belongs to this machine's syslog")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(logs.SYSLOG)
    try:
        sock.settimeout(20)
        yield sock
    finally:
        sock.close()
        os.unlink(logs.SYSLOG)


def test_background_mount_logs_to_syslog(damaged: Path, tmp_path: Path,
                                         dev_log: socket.socket) -> None:
    """Without a log file, and with a stderr that is not the journal, a background mount's
    lines go to syslog with the ident vgfs[pid], at the daemon facility."""
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    try:
        subprocess.run([*VGFS, "mount", str(damaged), str(mp)], env=env, check=True,
                       capture_output=True, timeout=60)
        stats = _stats(mp)
        assert stats["log"] == "syslog"
        _read_fails_with_eio(mp)
        while b" ERROR " not in (message := dev_log.recv(4096)):
            pass
    finally:
        force_unmount(mp)
    # <27>: facility daemon (3) * 8 + severity err (3); logging ends a message with NUL.
    assert re.fullmatch(rf"<27>vgfs\[{stats['pid']}\]: {EIO_LINE}\x00", message.decode())


@pytest.fixture
def own_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """logs.py's state for this test alone; the handler it installs goes afterwards."""
    monkeypatch.setattr(logs, "_handler", None)
    monkeypatch.setattr(logs, "_where", "stderr")
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    level = root.level
    yield
    if logs._handler is not None:
        root.removeHandler(logs._handler)
        logs._handler.close()
    root.setLevel(level)


def test_destinations(own_logs: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Foreground: stderr. Detached: the journal kept if stderr is the journal, else syslog, or
    nothing without /dev/log; a log file stays whatever stderr is."""
    logs.setup("info")
    assert logs.destination() == "stderr" and logging.getLogger().level == logging.INFO
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.detach() is True and logs.destination() == "stderr (journal)"

    monkeypatch.delenv("JOURNAL_STREAM")
    monkeypatch.setattr(logs, "SYSLOG", str(tmp_path / "no-syslog"))
    logs.setup("info")
    assert logs.detach() is False and logs.destination() == f"none (no {logs.SYSLOG})"
    logging.getLogger("vgfs").error("lost, quietly")

    log = tmp_path / "vgfs.log"
    logs.to_file(str(log))
    assert logs.detach() is False and logs.destination() == f"file {log}"
    logging.getLogger("vgfs").warning("kept")
    assert log.read_text().endswith(" WARNING kept\n")
    log.rename(tmp_path / "vgfs.log.1")  # rotated away: the next line starts a new file
    logging.getLogger("vgfs").warning("after rotation")
    assert log.read_text().endswith(" WARNING after rotation\n")

    with pytest.raises(VGFSError, match=f"^log file {tmp_path}: cannot open it: Is a directory$"):
        logs.to_file(str(tmp_path))
