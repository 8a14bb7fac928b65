"""A mount's counters in Prometheus text, in a file for node_exporter's textfile collector."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tests.conftest import force_unmount, vgfs, wait_for

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

