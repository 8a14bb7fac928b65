"""A mount's counters: recording, the `.vgfs-stats` JSON, `vgfs stats`, the Prometheus text
and its file. Only test_metrics_file mounts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import force_unmount, vgfs, wait_for
from vgfs import logs
from vgfs.cache import LRUCache
from vgfs.cli import stats_text
from vgfs.errors import VGFSError
from vgfs.metrics import OpStats, Stats, metrics_text, read_stats, write_metrics
from vgfs.tree import STATS_NAME

_SAMPLE = re.compile(r'([a-z_]+)\{mountpoint="([^"]*)"(?:,op="([a-z]+)")?\} (\S+)')


def _parse_metrics(text: str) -> dict[tuple[str, str | None], float]:
    """Check the text exposition format strictly enough for node_exporter, and return the
    samples by (name, op)."""
    declared: dict[str, str] = {}
    samples: dict[tuple[str, str | None], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in declared and kind in ("counter", "gauge", "summary"), line
            declared[name] = kind
            continue
        m = _SAMPLE.fullmatch(line)
        assert m, line
        name, _, op, value = m.groups()
        family = re.sub(r"_(sum|count)$", "", name)
        assert name in declared or declared.get(family) == "summary", line
        samples[name, op] = float(value)
    return samples


def test_metrics_file(real_dataset: Path, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    prom = tmp_path / "textfile" / "vgfs.prom"
    prom.parent.mkdir()
    vgfs("mount", str(real_dataset), str(mp), "--metrics-file", str(prom),
         "--metrics-interval", "0.2", timeout=60)
    try:
        first = _parse_metrics(prom.read_text())  # there as soon as the mount answers
        assert f'mountpoint="{mp}"' in prom.read_text()
        assert first["vgfs_cache_max_bytes", None] == 256 << 20
        jpeg = (mp / "images/1/image.jpg").read_bytes()
        (mp / "images/2/objects.json").read_bytes()
        done = time.time()
        wait_for("the metrics file to be rewritten", lambda: prom.stat().st_mtime > done)
        now = _parse_metrics(prom.read_text())
        stats = json.loads(vgfs("stats", str(mp), "--json").stdout)
        assert now["vgfs_requests_total", "read"] == stats["ops"]["read"]["count"] >= 2
        assert now["vgfs_backend_jpeg_bytes_total", None] == stats["backend"]["jpeg_bytes"]
        assert stats["backend"]["jpeg_bytes"] >= len(jpeg)
        assert now["vgfs_request_seconds_count", "read"] == now["vgfs_requests_total", "read"]
        assert 0 < now["vgfs_request_seconds_sum", "read"] < 1
        assert now["vgfs_cache_hits_total", None] == stats["cache"]["hits"]
        assert first["vgfs_start_time_seconds", None] <= done
        assert [p.name for p in prom.parent.iterdir()] == ["vgfs.prom"]  # no temp files left
    finally:
        force_unmount(mp)
    wait_for("the metrics file to go with the mount", lambda: not prom.exists())



def _stats() -> tuple[Stats, LRUCache]:
    """Counters as after three reads, a lookup and a failed read: times in powers of two, so
    that their sums are exact."""
    stats, cache = Stats(), LRUCache(1 << 10)
    for seconds in (0.25, 0.5, 0.125):
        stats.record("read", seconds)
    stats.record("lookup", 2 ** -20)
    stats.errors["read"] += 1
    stats.backend["jpeg_bytes"] += 300
    cache.put(1, b"x" * 100)
    cache.get(1)
    return stats, cache


def test_record() -> None:
    stats, _ = _stats()
    assert stats.ops == {"read": OpStats(count=3, total_s=0.875, max_s=0.5),
                         "lookup": OpStats(count=1, total_s=2 ** -20, max_s=2 ** -20)}


def test_snapshot_is_a_copy() -> None:
    stats, cache = _stats()
    snap = stats.sample(cache)
    stats.record("read", 1.0)
    stats.errors["read"] += 1
    stats.backend["jpeg_bytes"] += 1
    assert snap.ops["read"] == OpStats(3, 0.875, 0.5)
    assert snap.errors == {"read": 1} and snap.backend["jpeg_bytes"] == 300
    assert list(snap.ops) == ["lookup", "read"] and snap.started == stats.started


def test_stats_json_shape() -> None:
    """What `.vgfs-stats` holds and `vgfs stats --json` prints: keys, order and rounding."""
    stats, cache = _stats()
    data = json.loads(orjson.dumps(stats.snapshot(cache)))
    assert list(data) == ["uptime_s", "pid", "log", "ops", "cache", "backend", "errors"]
    assert data["log"] == logs.destination()
    assert isinstance(data["uptime_s"], float) and 0 <= data["uptime_s"] < 60
    assert data["ops"] == {"lookup": {"count": 1, "mean_us": 1.0, "max_us": 1.0},
                           "read": {"count": 3, "mean_us": 291666.7, "max_us": 500000.0}}
    assert list(data["ops"]["read"]) == ["count", "mean_us", "max_us"]
    assert data["cache"] == {"hits": 1, "misses": 0, "evictions": 0, "evicted_bytes": 0,
                             "bytes": 100, "items": 1, "max_bytes": 1024}
    assert data["backend"] == {"lmdb_reads": 0, "jpeg_reads_nowait": 0,
                               "jpeg_reads_threaded": 0, "jpeg_bytes": 300}
    assert data["errors"] == {"read": 1}
    assert Stats().snapshot(cache)["ops"] == {}


def test_stats_text() -> None:
    """`vgfs stats`: one line per operation, then the cache, backend and error counters, and
    where the log goes (unknown for a mount of a vgfs before that was said)."""
    stats, cache = _stats()
    lines = stats_text({**stats.snapshot(cache), "log": "syslog"}).splitlines()
    assert lines[3].split() == ["lookup", "1", "1.0", "1.0"]
    assert lines[4].split() == ["read", "3", "291666.7", "500000.0"]
    assert "1 hits, 0 misses" in lines[6] and lines[-2].split() == ["errors", "read", "1"]
    assert lines[-1] == "log          syslog"
    older = {k: v for k, v in Stats().snapshot(cache).items() if k != "log"}
    assert stats_text(older).endswith("errors       none\nlog          unknown")


def test_metrics_text_format() -> None:
    """Each family declared once by HELP then TYPE; one sample per operation in each by-op
    family (two in the summary), with the exact sums rather than the rounded means."""
    stats, cache = _stats()
    text = metrics_text(stats.sample(cache), "/mnt/vg")
    samples = _parse_metrics(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# TYPE "):
            assert lines[i - 1].startswith(f"# HELP {line.split()[2]} "), line
    for family in ("vgfs_requests_total", "vgfs_request_seconds_sum",
                   "vgfs_request_seconds_count", "vgfs_request_max_seconds"):
        assert sorted(op for name, op in samples if name == family) == ["lookup", "read"]
    assert samples["vgfs_requests_total", "read"] == samples["vgfs_request_seconds_count",
                                                             "read"] == 3
    assert samples["vgfs_request_seconds_sum", "read"] == 0.875
    assert samples["vgfs_request_max_seconds", "lookup"] == 2 ** -20
    assert samples["vgfs_errors_total", "read"] == 1
    assert samples["vgfs_start_time_seconds", None] == stats.started
    assert samples["vgfs_cache_max_bytes", None] == 1024
    assert samples["vgfs_cache_hits_total", None] == 1
    assert samples["vgfs_backend_jpeg_bytes_total", None] == 300
    assert all('{mountpoint="/mnt/vg"' in line for line in lines if not line.startswith("#"))


def test_metrics_text_escapes_the_mountpoint() -> None:
    text = metrics_text(Stats().sample(LRUCache(1)), 'a"b\\c\nd')
    assert 'vgfs_cache_items{mountpoint="a\\"b\\\\c\\nd"} 0\n' in text


def test_write_metrics_replaces_the_file(tmp_path: Path) -> None:
    prom = tmp_path / "vgfs.prom"
    write_metrics(str(prom), "a 1\n")
    write_metrics(str(prom), "a 2\n")
    assert prom.read_text() == "a 2\n" and [p.name for p in tmp_path.iterdir()] == ["vgfs.prom"]
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(IsADirectoryError):  # the rename fails: its temporary file goes too
        write_metrics(str(target), "a 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "vgfs.prom"]


def test_read_stats(tmp_path: Path) -> None:
    with pytest.raises(VGFSError, match="not a vgfs mount"):
        read_stats(str(tmp_path))
    (tmp_path / STATS_NAME.decode()).write_text("not JSON")
    with pytest.raises(VGFSError, match="not a vgfs mount"):
        read_stats(str(tmp_path))
    stats, cache = _stats()
    (tmp_path / STATS_NAME.decode()).write_bytes(orjson.dumps(stats.snapshot(cache)))
    assert read_stats(str(tmp_path))["ops"]["read"]["count"] == 3


def test_no_fuse_needed() -> None:
    """Reading counters (`vgfs stats`, the benchmarks) does not load pyfuse3 or trio."""
    code = ("import sys, vgfs.metrics, vgfs.options;"
            " sys.exit(bool({'pyfuse3', 'trio'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
