"""Mount options: the `-o a,b=c` lists of `vgfs mount`, fstab lines and .mount units."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vgfs.errors import VGFSError

log = logging.getLogger("vgfs")

DEFAULT_CACHE = 256 << 20
DEFAULT_METRICS_INTERVAL = 15.0
# Options that mount(8), systemd or the kernel's generic mount flags use, which mean nothing to a
# read-only FUSE mount: accepted and dropped, never passed to FUSE. mount(8) hands a helper
# `rw` unless the fstab line says `ro` (so `defaults` arrives as `rw`), and `user` arrives with
# noexec,nosuid,nodev; x-* and comment= are normally stripped before, but not by `vgfs mount`.
MOUNT8_ONLY = {"_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "owner",
               "group", "defaults", "ro", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
               "noatime", "atime", "relatime", "norelatime", "strictatime", "nostrictatime",
               "lazytime", "nolazytime", "nodiratime", "diratime", "async", "sync", "dirsync",
               "iversion", "noiversion", "mand", "nomand", "silent", "loud",
               "default_permissions"}
# uid_t and gid_t are 32 bits, and the kernel reads the last value, (uid_t)-1, as "no id".
ID_MAX = 2**32 - 2
_SIZE = re.compile(r"(\d+)([KMGT]?)(i?B?)?", re.IGNORECASE)


@dataclass
class MountOptions:
    """What `-o` can set; the defaults are a mount's without options."""

    cache_size: int = DEFAULT_CACHE
    pretty: bool = False
    list_views: bool = False  # the query views are found by name; this lists them at the root
    # The mounting process's ids, taken when the options are parsed (not when imported).
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0
    allow_other: bool = False
    allow_root: bool = False
    threads: int = 16
    readahead_kb: int = 4096  # the mount's readahead window (mount._set_readahead), as root
    metrics_file: str | None = None
    metrics_interval: float = DEFAULT_METRICS_INTERVAL
    log_file: str | None = None


def parse_size(text: str) -> int:
    """`268435456`, `256M`, `2GiB`, ...: a number of bytes, with an optional binary unit."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise VGFSError(f"-o cache_size={text}: not a size (examples: 268435456, 256M, 2G)")
    return int(m[1]) << (10 * " KMGT".index(m[2].upper() or " "))


def _flag(_: str) -> bool:
    return True


def _id(key: str, what: str) -> Callable[[str], int]:
    """The parser of uid= or gid=: a number outside what FUSE can carry is refused here."""
    def parse(value: str) -> int:
        n = int(value)
        if not 0 <= n <= ID_MAX:
            raise VGFSError(f"-o {key}={value}: expected a {what} id from 0 to {ID_MAX}")
        return n
    return parse


def _umask(value: str) -> int:
    if not re.fullmatch(r"[0-7]+", value):
        raise VGFSError(f"-o umask={value}: expected an octal number such as 022")
    return int(value, 8) & 0o777


def _path(value: str, key: str) -> str:
    """Absolute: a background mount serves from /."""
    if not value:
        raise VGFSError(f"-o {key}=: expected a file path")
    return os.path.abspath(value)


def metrics_path(value: str) -> str:
    """`-o metrics_file=` or `--metrics-file`: a path ending in .prom."""
    path = _path(value, "metrics_file")
    if not path.endswith(".prom"):
        raise VGFSError(f"metrics file {value}: the name must end in .prom, the only files"
                        " node_exporter's textfile collector reads")
    return path


# Each option sets the MountOptions field of its name to its value as parsed here; a ValueError
# from a parser means the value is not a number. Flags (_flag) take no value.
OPTIONS: dict[str, Callable[[str], object]] = {
    "cache_size": parse_size,
    "pretty": _flag,
    "list_views": _flag,
    "uid": _id("uid", "user"),
    "gid": _id("gid", "group"),
    "umask": _umask,
    "allow_other": _flag,
    "allow_root": _flag,
    "threads": lambda value: max(1, int(value)),
    "readahead_kb": lambda value: max(4, int(value)),
    "metrics_file": metrics_path,
    "metrics_interval": float,
    "log_file": lambda value: _path(value, "log_file"),
}
KNOWN = ", ".join(key if parse is _flag else f"{key}=" for key, parse in OPTIONS.items())


def parse_options(specs: list[str], sloppy: bool = False) -> MountOptions:
    """Parse `-o a,b=c` lists. mount(8)-only options are dropped; unknown ones are an error, or
    with `sloppy` (mount -s) a warning."""
    opts = MountOptions()
    for spec in specs:
        for item in filter(None, spec.split(",")):
            key, _, value = item.partition("=")
            parse = OPTIONS.get(key)
            if parse is not None:
                try:
                    setattr(opts, key, parse(value))
                except ValueError:
                    raise VGFSError(f"-o {item}: expected a number") from None
            elif key in MOUNT8_ONLY or key == "comment" or key.startswith("x-"):
                continue
            elif key == "rw":
                # Not an error: mount(8) passes rw for every fstab line without `ro`.
                log.info("-o rw: ignored, vgfs mounts are always read-only")
            elif sloppy:
                log.warning("-o %s: unknown option, ignored", item)
            else:
                raise VGFSError(f"-o {item}: unknown option (known: {KNOWN})")
    return opts
