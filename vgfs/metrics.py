"""A mount's counters: recorded by fs.py, served as `.vgfs-stats` (what `vgfs stats` reads), and
written as Prometheus text for node_exporter's textfile collector. No FUSE and no trio here."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import orjson

from vgfs import logs
from vgfs.errors import VGFSError

if TYPE_CHECKING:
    from vgfs.cache import LRUCache


@dataclass(slots=True)
class OpStats:
    """One operation's running totals. Exact sums, so that Prometheus counters never go back."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0


class OpJson(TypedDict):
    count: int
    mean_us: float
    max_us: float


class StatsJson(TypedDict):
    """`.vgfs-stats` as JSON: what `vgfs stats` reads and shows."""

    uptime_s: float
    pid: int
    log: str  # where the mount's log lines go (logs.destination)
    ops: dict[str, OpJson]
    cache: dict[str, int]
    backend: dict[str, int]
    errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A mount's counters at one moment: the one source of both `.vgfs-stats` and the
    Prometheus text, so that the two always agree."""

    started: float  # Unix time
    uptime_s: float
    pid: int
    log: str
    ops: dict[str, OpStats]  # by name, sorted
    cache: dict[str, int]
    backend: dict[str, int]
    errors: dict[str, int]

    def json(self) -> StatsJson:
        """Rounded for people: means and maxima in µs to 0.1, the uptime to 0.1 s."""
        return {
            "uptime_s": round(self.uptime_s, 1),
            "pid": self.pid,
            "log": self.log,
            "ops": {op: {"count": o.count,
                         "mean_us": round(o.total_s / o.count * 1e6, 1) if o.count else 0,
                         "max_us": round(o.max_s * 1e6, 1)}
                    for op, o in self.ops.items()},
            "cache": self.cache,
            "backend": self.backend,
            "errors": self.errors,
        }


# What the read path counts (backend.py).
BACKEND_COUNTERS = ("lmdb_reads", "jpeg_reads_nowait", "jpeg_reads_threaded", "jpeg_bytes")


class Stats:
    """Live counters, read by `vgfs stats` from the unlisted `.vgfs-stats` at the root (tree.py).
    Not an extended attribute: answering getxattr at all makes the kernel ask for every file's
    security and ACL attributes, three round trips an entry of `ls -l`."""

    def __init__(self, backend: dict[str, int] | None = None) -> None:
        self.ops: defaultdict[str, OpStats] = defaultdict(OpStats)
        self.errors: defaultdict[str, int] = defaultdict(int)
        # The read path's own counters (backend.py), shown live.
        self.backend = dict.fromkeys(BACKEND_COUNTERS, 0) if backend is None else backend
        self.started = time.time()

    def record(self, op: str, seconds: float) -> None:
        entry = self.ops[op]
        entry.count += 1
        entry.total_s += seconds
        entry.max_s = max(entry.max_s, seconds)

    def sample(self, cache: LRUCache) -> Snapshot:
        """A copy of every counter, so that later requests do not change it."""
        return Snapshot(started=self.started, uptime_s=time.time() - self.started,
                        pid=os.getpid(), log=logs.destination(),
                        ops={op: dataclasses.replace(o) for op, o in sorted(self.ops.items())},
                        cache=cache.stats(), backend=dict(self.backend), errors=dict(self.errors))

    def snapshot(self, cache: LRUCache) -> StatsJson:
        """What `.vgfs-stats` holds."""
        return self.sample(cache).json()


def read_stats(mountpoint: str) -> StatsJson:
    """The live counters of a running mount, from the unlisted file at its root."""
    from vgfs.tree import STATS_NAME

    try:
        return orjson.loads((Path(mountpoint) / STATS_NAME.decode()).read_bytes())
    except FileNotFoundError:
        raise VGFSError(f"{mountpoint}: not a vgfs mount") from None
    except OSError as e:
        raise VGFSError(f"{mountpoint}: cannot read stats: {e.strerror}") from None
    except orjson.JSONDecodeError:
        raise VGFSError(f"{mountpoint}: not a vgfs mount") from None


# --- Prometheus' text exposition format ---------------------------------------------------------

_CACHE_GAUGES = {"bytes": "Bytes of generated files held in the LRU cache.",
                 "items": "Files held in the LRU cache.",
                 "max_bytes": "Configured size of the LRU cache (cache_size), in bytes."}
_HELP = {"hits": "Reads served from the LRU cache.",
         "misses": "Reads that missed the LRU cache.",
         "evictions": "Files evicted from the LRU cache.",
         "evicted_bytes": "Bytes evicted from the LRU cache.",
         "lmdb_reads": "Reads served from the LMDB map.",
         "jpeg_reads_nowait": "JPEG reads served inline from the page cache.",
         "jpeg_reads_threaded": "JPEG reads that went to a worker thread.",
         "jpeg_bytes": "JPEG bytes read from the SquashFS image."}


def metrics_text(snap: Snapshot, mountpoint: str | os.PathLike) -> str:
    """The counters of a mount in Prometheus' text exposition format, every sample labelled
    with the mount point."""
    point = str(mountpoint).replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    lines: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[tuple[str, str, float]]) -> None:
        lines.extend((f"# HELP {name} {help_}", f"# TYPE {name} {kind}"))
        for suffix, labels, value in samples:
            lines.append(f'{name}{suffix}{{mountpoint="{point}"{labels}}} {value!r}')

    by_op = [(f',op="{op}"', o) for op, o in snap.ops.items()]
    family("vgfs_start_time_seconds", "gauge", "When the mount started, in Unix time.",
           [("", "", float(snap.started))])
    family("vgfs_requests_total", "counter", "FUSE requests served, by operation.",
           [("", lab, o.count) for lab, o in by_op])
    family("vgfs_request_seconds", "summary", "Time spent serving FUSE requests, by operation.",
           [s for lab, o in by_op for s in (("_sum", lab, float(o.total_s)),
                                            ("_count", lab, o.count))])
    family("vgfs_request_max_seconds", "gauge", "Slowest FUSE request so far, by operation.",
           [("", lab, float(o.max_s)) for lab, o in by_op])
    family("vgfs_errors_total", "counter", "Requests that failed with EIO, by operation.",
           [("", f',op="{op}"', n) for op, n in sorted(snap.errors.items())])
    for key, value in snap.cache.items():
        if key in _CACHE_GAUGES:
            family(f"vgfs_cache_{key}", "gauge", _CACHE_GAUGES[key], [("", "", value)])
        else:
            family(f"vgfs_cache_{key}_total", "counter", _HELP.get(key, f"Cache {key}."),
                   [("", "", value)])
    for key, value in snap.backend.items():
        family(f"vgfs_backend_{key}_total", "counter", _HELP.get(key, f"Backend {key}."),
               [("", "", value)])
    return "\n".join(lines) + "\n"


def write_metrics(path: str, text: str) -> None:
    """Replace `path` in one rename, so that a scrape never reads half a file. The temporary
    name does not end in .prom, so the textfile collector never reads it either."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
