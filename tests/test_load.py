"""Load (DESIGN §6): 16 processes read random files of a 1,000-image synthetic mount for 60 s
(VGFS_LOAD_SECONDS to change it; tests/tools/soak.py runs it for hours). Every byte is checked
against the sources, the daemon's private memory stays under cache_size plus a fixed overhead,
and it leaks no file descriptors."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import driver_by_id, mounted, vgfs
from vgfs.build import build

SECONDS = float(os.environ.get("VGFS_LOAD_SECONDS", "60"))
PROCESSES = 16
CACHE_MIB = 8
OVERHEAD_MIB = 150  # interpreter, pyfuse3, trio, worker threads' stacks, LMDB bookkeeping
KIND_SOURCES = {"meta.json": "image_data.json", "objects.json": "objects.json",
                "attributes.json": "attributes.json", "relationships.json": "relationships.json",
                "graph.json": "scene_graphs.json", "regions.json": "region_descriptions.json",
                "qa.json": "question_answers.json"}


def make_sample(root: Path, images: int = 1000) -> tuple[Path, Path]:
    """(release, dataset) of a synthetic sample, written and built under root."""
    from vgfs.sample import write_sample

    write_sample(root / "release", images=images, seed=3, show_progress=False)
    build(root / "release", root / "dataset", show_progress=False)
    return root / "release", root / "dataset"


def _canonical(value: Any) -> str:
    """A digest equal for equal JSON values (json.loads(a) == json.loads(b))."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def expected_files(release: Path) -> dict[str, tuple[str, str]]:
    """Relative path in the mount -> ("jpeg" or "bytes", sha256 of the source file) or ("json",
    canonical digest of the source entry), for every JPEG, release file and per-image file,
    and for every by-id file the digest of what the official driver's preprocessing writes."""
    expected: dict[str, tuple[str, str]] = {}
    for p in release.glob("VG_100K*/*.jpg"):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        expected[f"images/{p.stem}/image.jpg"] = ("jpeg", digest)
    for p in release.iterdir():  # the release's own files, byte for byte
        if p.is_file():
            expected[p.name] = ("bytes", hashlib.sha256(p.read_bytes()).hexdigest())
    for name, source in KIND_SOURCES.items():
        for entry in json.loads((release / source).read_bytes()):
            image_id = entry["image_id"] if "image_id" in entry else entry["id"]
            expected[f"images/{image_id}/{name}"] = ("json", _canonical(entry))
    with tempfile.TemporaryDirectory(prefix="vgfs-driver-") as work:
        for image_id, data in driver_by_id(release, Path(work)).items():
            expected[f"by-id/{image_id}.json"] = ("json", _canonical(json.loads(data)))
    return expected


def _reader(args: tuple[str, list[tuple[str, str, str]], float, int]) -> dict[str, Any]:
    """One process: read random files until the deadline; count files, bytes, failures."""
    mp, files, deadline, seed = args
    rng = random.Random(seed)
    out: dict[str, Any] = {"files": 0, "bytes": 0, "errors": 0, "mismatches": 0, "first": None}
    while time.time() < deadline:
        rel, kind, digest = rng.choice(files)
        try:
            with open(os.path.join(mp, rel), "rb") as f:
                chunk = rng.choice((4096, 65536, 1 << 20))
                data = b"".join(iter(lambda: f.read(chunk), b""))  # noqa: B023
        except OSError as e:
            out["errors"] += 1
            out["first"] = out["first"] or f"{rel}: {e}"
            continue
        got = (_canonical(json.loads(data)) if kind == "json"
               else hashlib.sha256(data).hexdigest())
        if got != digest:
            out["mismatches"] += 1
            out["first"] = out["first"] or f"{rel}: wrong bytes"
        out["files"] += 1
        out["bytes"] += len(data)
    return out


def _rss_anon_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError(f"no RssAnon for {pid}")


def run_load(mp: Path, dataset: Path, expected: dict[str, tuple[str, str]], seconds: float,
             processes: int = PROCESSES) -> dict[str, Any]:
    """Read for `seconds` with `processes` readers, sampling the daemon's RssAnon every second
    and dropping images.sqfs from the page cache, so that JPEGs are also fetched by worker
    threads. Returns the totals, peak RssAnon (KiB) and the daemon's fd count before/after."""
    pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
    fds_before = len(os.listdir(f"/proc/{pid}/fd"))
    files = [(rel, kind, digest) for rel, (kind, digest) in sorted(expected.items())]
    deadline = time.time() + seconds
    peak = _rss_anon_kib(pid)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        result = pool.map_async(_reader, [(str(mp), files, deadline, seed)
                                          for seed in range(processes)])
        sqfs = os.open(dataset / "images.sqfs", os.O_RDONLY)
        try:
            while not result.ready():
                peak = max(peak, _rss_anon_kib(pid))
                os.posix_fadvise(sqfs, 0, 0, os.POSIX_FADV_DONTNEED)
                result.wait(1.0)
        finally:
            os.close(sqfs)
        parts = result.get(timeout=60)
    totals = {k: sum(p[k] for p in parts) for k in ("files", "bytes", "errors", "mismatches")}
    totals["first"] = next((p["first"] for p in parts if p["first"]), None)
    totals["peak_rss_anon_kib"] = max(peak, _rss_anon_kib(pid))
    totals["fds_before"] = fds_before
    totals["fds_after"] = len(os.listdir(f"/proc/{pid}/fd"))
    totals["stats"] = json.loads(vgfs("stats", str(mp), "--json").stdout)
    return totals


@pytest.fixture(scope="module")
def load_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_sample(tmp_path_factory.mktemp("load"))


def test_sixteen_readers_for_a_minute(load_sample: tuple[Path, Path], tmp_path: Path) -> None:
    """16 processes, random JPEG and JSON files (pretty, so every JSON file goes through the
    8 MiB LRU): zero errors, zero mismatches, RssAnon under 8 MiB + 150 MiB, no fd leak."""
    release, dataset = load_sample
    expected = expected_files(release)
    with mounted(dataset, tmp_path / "mp", f"cache_size={CACHE_MIB}M,pretty") as mp:
        r = run_load(mp, dataset, expected, SECONDS)
    print(f"\nload: {r['files']} files, {r['bytes']} bytes, {r['errors']} errors,"
          f" {r['mismatches']} mismatches, peak RssAnon {r['peak_rss_anon_kib'] // 1024} MiB,"
          f" fds {r['fds_before']} -> {r['fds_after']}, daemon errors {r['stats']['errors']},"
          f" cache {r['stats']['cache']}")
    assert r["errors"] == 0 and r["mismatches"] == 0, r["first"]
    assert r["files"] > 1000
    assert r["stats"]["errors"] == {}
    assert r["stats"]["cache"]["evictions"] > 0  # the LRU was under pressure
    assert r["peak_rss_anon_kib"] < (CACHE_MIB + OVERHEAD_MIB) << 10, r["peak_rss_anon_kib"]
    assert r["fds_after"] == r["fds_before"]
