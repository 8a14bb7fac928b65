"""Where log lines go: stderr while someone waits on the command; then, once a background mount
lets go of the caller's stderr, the journal if stderr is the journal, else syslog (/dev/log).
A file named with `--log-file` or `-o log_file=` takes every line instead. `destination()` says
which, for `vgfs stats`."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from vgfs.errors import VGFSError

SYSLOG = "/dev/log"
_STDERR_FORMAT = "vgfs %(levelname)s %(message)s"
# No journal adds the time and the process to a file's lines.
_FILE_FORMAT = "%(asctime)s vgfs[%(process)d] %(levelname)s %(message)s"
_SYSLOG_FORMAT = "%(levelname)s %(message)s"  # the ident says vgfs[pid]

# The root logger's handler installed here (pyfuse3 logs too), and what it writes to.
_handler: logging.Handler | None = None
_where = "stderr"  # before setup(), logging's last resort prints warnings to stderr


def destination() -> str:
    """Where log lines go now: "stderr", "stderr (journal)", "syslog", "file PATH", or
    "none (no /dev/log)"."""
    return _where


def setup(level: str) -> None:
    """Log events of `level` ("debug", "info", "warning", "error") and above to stderr."""
    _use(logging.StreamHandler(sys.stderr), _STDERR_FORMAT, "stderr")
    logging.getLogger().setLevel(level.upper())


def to_file(path: str) -> None:
    """Append every later line to `path`, reopened if it is rotated away. Opened now, so that
    a path that cannot be written fails the command at once."""
    try:
        handler = logging.handlers.WatchedFileHandler(path)
    except OSError as e:
        raise VGFSError(f"log file {path}: cannot open it: {e.strerror}") from None
    _use(handler, _FILE_FORMAT, f"file {path}")


def detach() -> bool:
    """For a background mount about to drop the caller's stderr: True if stderr is the journal
    and must stay (libfuse writes there too). Otherwise lines logged to stderr go to syslog
    from now on, or nowhere on a machine without /dev/log. A log file stays as it is."""
    global _where
    journal = stderr_is_journal()
    if _where == "stderr":
        if journal:
            _where = "stderr (journal)"
        else:
            _to_syslog()
    return journal


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it gave as stderr."""
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def _to_syslog() -> None:
    if not os.path.exists(SYSLOG):
        _use(logging.NullHandler(), "", f"none (no {SYSLOG})")
        return
    # Like openlog(3), it connects again at each line until syslog listens.
    handler = logging.handlers.SysLogHandler(SYSLOG, logging.handlers.SysLogHandler.LOG_DAEMON)
    handler.ident = f"vgfs[{os.getpid()}]: "
    _use(handler, _SYSLOG_FORMAT, "syslog")


def _use(handler: logging.Handler, fmt: str, where: str) -> None:
    """Put `handler` in place of the one installed before (never another's, such as pytest's)."""
    global _handler, _where
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    _handler, _where = handler, where
