"""Slow-storage benchmark: cold JPEG reads when every read of the dataset's storage waits 2 ms.

The dataset folder is served by slowfs (`benchmarks/slowfs.py`), a passthrough that delays every
read by 2 ms without serialising them. vgfs mounts the dataset through it; squashfuse_ll and the
kernel (a loop device over the FUSE file) mount its images.sqfs. Each reads a fixed set of JPEGs,
spread evenly over the image so that readahead cannot serve one file from the last, with 1, 4
and 16 reader processes, cold: fresh mounts (slowfs included), caches dropped. A filesystem that
serialises its backend reads stays at one read per 2 ms however many readers there are; one
that does not scales with them. Systems are interleaved, their order rotating from run to run.

A second table gives the floor under any pyfuse3 filesystem: slowfs with no delay over the same
files extracted onto local disk, a trivial pyfuse3 filesystem, cold and warm, against vgfs and
squashfuse_ll on the local dataset and the extracted files read directly.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import common, slowfs
from benchmarks.common import MODES
from benchmarks.reads import read_pass
from vgfs.metrics import read_stats
from vgfs.squashfs import SquashFSImage

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DELAY_MS = 2.0
SYSTEMS = ("vgfs", "squashfuse_ll", "kernel")
READERS = (1, 4, 16)
SCALING_TARGET = 8.0  # vgfs with 16 readers over vgfs with 1
IMAGES, FILES = 20_000, 2_000  # the real-JPEG dataset, and the JPEGs read from it
QUICK_IMAGES, QUICK_FILES = 2_000, 300
FLOOR_SYSTEMS = ("slowfs", "vgfs", "squashfuse_ll", "local")
FLOOR_READERS = (1, 4)
LABELS = {"slowfs": "slowfs, no delay", "local": "local files (no FUSE)"}
PROFILE_RATE = 250  # py-spy samples per second
TOP_FRAMES = 8


def jpeg_subset(dataset: Path, count: int) -> list[tuple[str, int]]:
    """`count` JPEGs (path inside images.sqfs, size) spread evenly over the image, in the order
    of their bytes in it."""
    with SquashFSImage(dataset / "images.sqfs") as image:
        files = sorted((e.start_block, e.path, e.size) for e in image.walk()
                       if e.path.endswith(".jpg"))
    step = len(files) / min(count, len(files))
    return [files[int(i * step)][1:] for i in range(min(count, len(files)))]


def _paths(system: str, root: Path, files: list[tuple[str, int]]) -> list[str]:
    """Where each system shows the JPEGs: images.sqfs's own paths for squashfuse_ll and the
    kernel; images/<id>/image.jpg on vgfs and in the extracted folder."""
    if system in ("squashfuse_ll", "kernel"):
        return [f"{root}/{path}" for path, _ in files]
    return [f"{root}/images/{os.path.basename(path)[:-4]}/image.jpg" for path, _ in files]


def _machine_cpu() -> float:
    """CPU seconds the machine has spent busy since boot: user, system, interrupts."""
    user, nice, system, _, _, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / common.CLOCK_TICKS


def _clocks(slow: Path, daemon: int | None) -> list[float]:
    """Wall time, and CPU seconds of the machine, of slowfs and of the vgfs daemon if any."""
    return [time.perf_counter(), _machine_cpu(), slowfs.read_stats(slow)["cpu_s"],
            common.process_cpu(daemon) if daemon else 0.0]


def _timed(paths: list[str], readers: int, total: int, what: str) -> float:
    seconds, got = read_pass(paths, readers)
    if got != total:
        raise RuntimeError(f"{what}: read {got:,} bytes, expected {total:,}")
    return seconds


@contextmanager
def _slow_mount(system: str, dataset: Path, tmp: Path) -> Iterator[tuple[Path, Path]]:
    """`system` mounted over the dataset behind a fresh slowfs: (slowfs's root, the mount)."""
    with slowfs.mounted(dataset, tmp / "slowfs", DELAY_MS) as slow, \
            common.mounted(system, slow, tmp / system) as mp:
        yield slow, mp


def bench_slow(dataset: Path, files: list[tuple[str, int]], runs: int, tmp: Path
               ) -> tuple[dict[str, list[float]], dict[str, dict], dict[str, dict]]:
    """Seconds per (readers, system) over interleaved cold runs. From the last run: the
    storage's counters (slowfs) with the CPU seconds of the pass (the machine's, slowfs's and
    the vgfs daemon's), and vgfs's own counters."""
    total = sum(size for _, size in files)
    samples: dict[str, list[float]] = {}
    storage: dict[str, dict] = {}
    counters: dict[str, dict] = {}
    for run in range(runs):
        for readers in READERS:
            for system in common.rotated(SYSTEMS, run):
                with _slow_mount(system, dataset, tmp) as (slow, mp):
                    daemon = read_stats(str(mp))["pid"] if system == "vgfs" else None
                    common.drop_caches()
                    before = _clocks(slow, daemon)
                    seconds = _timed(_paths(system, mp, files), readers, total, system)
                    used = [b - a for a, b in zip(before, _clocks(slow, daemon), strict=True)]
                    stats = slowfs.read_stats(slow)
                    # The window also holds the readers' start and end, outside `seconds`.
                    stats["cpu"] = dict(zip(("window", "machine", "slowfs", "vgfs"), used,
                                            strict=True))
                    storage[f"{readers} {system}"] = stats
                    if system == "vgfs":
                        counters[f"{readers} readers"] = read_stats(str(mp))
                samples.setdefault(f"{readers} {system}", []).append(seconds)
                common.log(f"slow storage, run {run + 1}/{runs}: {system}, {readers} reader(s):"
                           f" {len(files) / seconds:,.0f} files/s")
    return samples, storage, counters


def profile_vgfs(dataset: Path, files: list[tuple[str, int]], tmp: Path) -> dict[str, object]:
    """One more cold pass of vgfs with the most readers, its daemon sampled by py-spy: the top
    frames of the trio loop's thread and of the worker threads, and vgfs's counters."""
    readers = READERS[-1]
    out = tmp / "profile.txt"
    with _slow_mount("vgfs", dataset, tmp) as (_, mp):
        common.drop_caches()
        pid = read_stats(str(mp))["pid"]
        # --nonblocking: py-spy must not stop the daemon to sample it. A stop waits for every
        # thread to leave the kernel, and one waiting on a page of the FUSE-backed image may
        # never do so while the daemon is stopped: a --quick run hung there for minutes.
        try:
            with common.sampling(pid, out, "--rate", str(PROFILE_RATE), "--threads", "--idle",
                                 "--nonblocking"):
                _timed(_paths("vgfs", mp, files), readers, sum(s for _, s in files), "vgfs")
        except common.NoProfile as e:
            return {"error": str(e)}
        counters = read_stats(str(mp))
    return {"readers": readers, **summarize_profile(out.read_text()), "vgfs_stats": counters}


def summarize_profile(raw: str) -> dict[str, object]:
    """py-spy's raw stacks (`thread (TID): NAME;frame;...;frame COUNT`), reduced to the
    most-sampled innermost frames of the main thread (the trio loop) and of the others."""
    def loop(thread: str) -> bool:
        return thread.endswith("MainThread")

    groups = {"loop": common.spy_frames(raw, loop),
              "workers": common.spy_frames(raw, lambda thread: not loop(thread))}
    return {"samples": {group: frames.samples for group, frames in groups.items()},
            "top": {group: [list(row) for row in frames.top(TOP_FRAMES)]
                    for group, frames in groups.items()},
            "stacks": common.spy_frames(raw).stacks.most_common(50)}


@contextmanager
def _floor_mount(system: str, dataset: Path, extracted: Path, tmp: Path) -> Iterator[Path]:
    if system == "slowfs":
        with slowfs.mounted(extracted, tmp / "slowfs", 0) as mp:
            yield mp
    elif system == "local":
        yield extracted
    else:
        with common.mounted(system, dataset, tmp / system) as mp:
            yield mp


def bench_floor(dataset: Path, extracted: Path, files: list[tuple[str, int]], runs: int,
                tmp: Path) -> dict[str, list[float]]:
    """Seconds per (mode, readers, system): a fresh mount with the caches dropped (cold), then a
    second pass on it (warm)."""
    total = sum(size for _, size in files)
    samples: dict[str, list[float]] = {}
    for run in range(runs):
        for readers in FLOOR_READERS:
            for system in common.rotated(FLOOR_SYSTEMS, run):
                with _floor_mount(system, dataset, extracted, tmp) as root:
                    paths = _paths(system, root, files)
                    common.drop_caches()
                    for mode in MODES:
                        seconds = _timed(paths, readers, total, system)
                        samples.setdefault(f"{mode} {readers} {system}", []).append(seconds)
                        common.log(f"floor, run {run + 1}/{runs}: {system}, {readers}"
                                   f" reader(s), {mode}: {len(files) / seconds:,.0f} files/s")
    return samples


def _scaling(slow: dict[str, list[float]]) -> dict[str, tuple[float, float, float]]:
    """Each system's throughput with the most readers over its throughput with 1, run by run:
    the seconds with 1 over the seconds with the most."""
    return {system: common.ratios(slow[f"1 {system}"], slow[f"{READERS[-1]} {system}"])
            for system in SYSTEMS}


def report(files: list[tuple[str, int]], images: int, slow: dict[str, list[float]],
           scaling: dict[str, tuple[float, float, float]], storage: dict[str, dict],
           counters: dict[str, dict], floor: dict[str, list[float]], profile: dict | None,
           runs: int) -> tuple[str, Figure]:
    n, total = len(files), sum(size for _, size in files)
    speed = {k: n / common.median(v) for k, v in slow.items()}
    rows, storage_rows = [], []
    for system in SYSTEMS:
        rows.append([system, *(speed[f"{r} {system}"] for r in READERS),
                     f"{scaling[system][0]:.2f}× ({scaling[system][1]:.2f}–"
                     f"{scaling[system][2]:.2f})",
                     *(f"{common.ratios(slow[f'{r} {system}'], slow[f'{r} vgfs'])[0]:.2f}"
                       for r in READERS)])
        for r in READERS:
            st = storage[f"{r} {system}"]
            storage_rows.append([system, r, st["reads"], st["bytes"] / total,
                                 st["seconds"] / max(1, st["reads"]) * 1e3,
                                 st["peak_in_flight"], st["cpu"]["machine"] / st["cpu"]["window"],
                                 st["cpu"]["machine"] / n * 1e3, st["cpu"]["slowfs"] / n * 1e3,
                                 st["cpu"]["vgfs"] / n * 1e3 if system == "vgfs" else "–"])
    vgfs_rows = []
    for r in READERS:
        ops, backend = counters[f"{r} readers"]["ops"], counters[f"{r} readers"]["backend"]
        vgfs_rows.append([r, *(ops.get(op, {}).get(k, 0) for op in ("lookup", "read")
                               for k in ("count", "mean_us", "max_us")),
                          backend["jpeg_reads_threaded"], backend["jpeg_reads_nowait"]])
    ratio, low, high = scaling["vgfs"]
    targets = [[f"vgfs: {READERS[-1]} readers ≥ {SCALING_TARGET:.0f}× 1 reader",
                f"{ratio:.2f}× ({low:.2f}–{high:.2f})", common.verdict(ratio >= SCALING_TARGET)]]
    floor_speed = {k: n / common.median(v) for k, v in floor.items()}
    columns = [(mode, r) for mode in MODES for r in FLOOR_READERS]
    floor_rows = [[LABELS.get(system, system),
                   *(floor_speed[f"{m} {r} {system}"] for m, r in columns),
                   *(f"{common.ratios(floor[f'{m} {r} {system}'], floor[f'{m} {r} vgfs'])[0]:.2f}"
                     for m, r in columns)] for system in FLOOR_SYSTEMS]
    parts = [
        "# Slow-storage benchmark",
        common.environment(),
        f"Cold reads of {n:,} real-size JPEGs ({total / 1e6:,.0f} MB), spread evenly over the"
        f" images.sqfs of a {images:,}-image synthetic release, from a dataset folder behind"
        f" slowfs, a FUSE passthrough that waits {DELAY_MS:g} ms before every read without"
        " serialising them. vgfs mounts the dataset through it; squashfuse_ll and the kernel"
        " (loop device over the FUSE file) mount its images.sqfs. Each run: fresh mounts,"
        f" caches dropped; medians of {runs} interleaved runs. Scaling: files/s with"
        f" {READERS[-1]} readers over 1, run by run (range in brackets); vgfs ÷ system: vgfs's"
        " files/s over the system's, run by run.",
        common.table(["system", *(f"{r} reader{'s' * (r > 1)} files/s" for r in READERS),
                      f"scaling {READERS[-1]}/1",
                      *(f"vgfs ÷ system, {r}" for r in READERS)], rows),
        "What reached the storage (slowfs's counters, last run): reads, bytes read per byte of"
        " JPEG (readahead and metadata included), the mean time to answer a read (the delay"
        " included), the most reads in flight at once; and the CPU the pass took: cores busy"
        f" (of {os.cpu_count()}), and CPU ms per JPEG of the whole machine, of slowfs and of the"
        " vgfs daemon. Files/s cannot pass cores ÷ CPU per file, whatever the latency:",
        common.table(["system", "readers", "storage reads", "bytes per JPEG byte",
                      "mean read ms", "peak in flight", "cores busy", "CPU ms/file",
                      "slowfs CPU ms/file", "vgfs CPU ms/file"], storage_rows),
        "vgfs's own counters (`vgfs stats`, last run): FUSE lookups and reads (µs), and JPEGs"
        " fetched by a worker thread or served from the page cache without one:",
        common.table(["readers", "lookups", "lookup mean µs", "lookup max µs", "reads",
                      "read mean µs", "read max µs", "JPEGs threaded", "JPEGs no-wait"],
                     vgfs_rows),
        "Targets:",
        common.table(["target", "measured", "verdict"], targets),
    ]
    if profile is not None:
        parts += _profile_section(profile)
    parts += [
        f"**The floor: a trivial pyfuse3 filesystem.** The same {n:,} JPEGs on local storage,"
        f" {FLOOR_READERS[0]} and {FLOOR_READERS[-1]} readers: slowfs with no delay serving the"
        " files extracted onto local disk (a pyfuse3 loop that answers lookups and opens from"
        " memory, with keep_cache and day-long timeouts, and passes reads through), vgfs and"
        " squashfuse_ll on the local dataset, and the extracted files read directly. Cold:"
        " fresh mount, caches dropped; warm: second pass on it. Files/s, medians of"
        f" {runs} interleaved runs; vgfs ÷ system run by run:",
        common.table(["system", *(f"{m} {r} files/s" for m, r in columns),
                      *(f"vgfs ÷ system, {m} {r}" for m, r in columns)], floor_rows),
    ]
    return "\n\n".join(parts) + "\n", _plot(speed, floor_speed)


def _profile_section(profile: dict) -> list[str]:
    if "error" in profile:
        return [f"vgfs missed the target; no profile: {profile['error']}."]
    samples = profile["samples"]
    rows = [[group, frame, count, f"{share:.0%}"] for group in ("loop", "workers")
            for frame, count, share in profile["top"][group]]
    return [
        f"vgfs missed the target, so one more cold pass with {profile['readers']} readers ran"
        f" with py-spy sampling its daemon ({PROFILE_RATE}/s, idle threads included: a thread"
        " waiting in a system call is where its time goes). Most-sampled innermost frames of"
        f" the trio loop's thread ({samples['loop']:,} samples) and of the worker threads"
        f" ({samples['workers']:,}):",
        common.table(["thread", "frame", "samples", "share"], rows),
    ]


def _plot(speed: dict[str, float], floor_speed: dict[str, float]) -> Figure:
    fig, (left, right) = common.subplots(1, 2, figsize=(11, 4))
    for system in SYSTEMS:
        left.plot(READERS, [speed[f"{r} {system}"] for r in READERS], "o-", label=system)
    base = speed["1 vgfs"]
    left.plot(READERS, [base * r for r in READERS], "k:", lw=1, label="vgfs, linear")
    left.plot([READERS[-1]], [base * SCALING_TARGET], "k*", ms=10,
              label=f"target: {SCALING_TARGET:.0f}× vgfs at 1")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xticks(READERS, [str(r) for r in READERS])
    left.set_xlabel("reader processes")
    left.set_ylabel("JPEG files/s (log)")
    left.set_title(f"Cold reads, {DELAY_MS:g} ms per storage read")
    left.legend(fontsize=8)
    groups = [(m, r) for m in MODES for r in FLOOR_READERS]
    common.bars(right, [f"{m}\n{r} reader{'s' * (r > 1)}" for m, r in groups],
                [{system: floor_speed[f"{m} {r} {system}"] for system in FLOOR_SYSTEMS}
                 for m, r in groups], LABELS)
    right.set_ylabel("JPEG files/s (log)")
    right.set_title("The floor: local storage")
    right.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "slow", __doc__, argv, f"{QUICK_FILES:,} JPEGs of a {QUICK_IMAGES:,}-image dataset: a"
        " check in a few minutes", "loop mounts and dropping caches")
    images = QUICK_IMAGES if args.quick else IMAGES
    dataset = common.dataset(images, "real")
    extracted = common.extracted(images, "real")
    files = jpeg_subset(dataset, QUICK_FILES if args.quick else FILES)
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        slow, storage, counters = bench_slow(dataset, files, args.runs, Path(tmp))
        scaling = _scaling(slow)
        profile = (profile_vgfs(dataset, files, Path(tmp))
                   if scaling["vgfs"][0] < SCALING_TARGET else None)
        floor = bench_floor(dataset, extracted, files, args.runs, Path(tmp))
    md, fig = report(files, images, slow, scaling, storage, counters, floor, profile, args.runs)
    raw = {"delay_ms": DELAY_MS, "files": [path for path, _ in files],
           "bytes": sum(size for _, size in files), "seconds": slow, "storage": storage,
           "vgfs_stats": counters, "profile": profile, "floor_seconds": floor}
    common.write_results("slow", md, fig, args.quick, raw)


if __name__ == "__main__":
    main()
