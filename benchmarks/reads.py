"""JPEG reads benchmark: reading every JPEG through vgfs against what a user would do otherwise.

vgfs is compared with squashfuse_ll, the kernel's squashfs and ratarmount, all four on the same
images.sqfs, and with the same files extracted onto local disk. All systems run in one run,
interleaved (the order rotates from run to run), so that a drift of the machine hits each of
them alike. Cold: a fresh mount with the caches dropped (for the extracted files, the caches
dropped). Warm: a second pass on that mount. Files are read in the order their bytes sit in the
image, and split into contiguous slices among the reader processes.

Where vgfs misses a target, a py-spy profile of its daemon during warm 1-reader passes is kept
beside the table. Its results keep the name `mount` (mount.md, mount.png, mount.json).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.queues import SimpleQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from benchmarks import common
from benchmarks.common import MODES
from vgfs.metrics import read_stats

SYSTEMS = ("vgfs", "squashfuse_ll", "kernel", "ratarmount", "extracted")
READERS = (1, 4, 16)
IMAGES = 20_000  # the real-JPEG dataset
QUICK_IMAGES = 2_000
CHUNK = 1 << 20
TARGETS = {  # (mode, readers, anchor): least ratio of vgfs throughput to the anchor's
    **{("cold", r, "squashfuse_ll"): 1.0 for r in READERS},
    ("cold", 4, "kernel"): 0.7,
    **{("cold", r, "ratarmount"): 3.0 for r in READERS},
    **{("warm", r, "squashfuse_ll"): 1.2 for r in READERS},
}


def read_files(paths: list[str]) -> int:
    """Read each file whole, as a loader does: open, read 1 MiB chunks to EOF, close."""
    buf = bytearray(CHUNK)
    total = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                while got := os.readv(fd, [buf]):
                    total += got
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"{path}: {e.strerror}") from None
    return total


def stat_files(paths: list[str]) -> int:
    """Stat each path, as `ls -l` or a loader's size check does: the number of paths."""
    for path in paths:
        os.stat(path)
    return len(paths)


def _reader(paths: list[str], work: Callable[[list[str]], int], start: Barrier,
            done: SimpleQueue) -> None:
    try:
        start.wait()
        done.put((work(paths), None))
    except BaseException as e:  # noqa: BLE001 - reported by the parent, which stops the run
        done.put((0, f"{type(e).__name__}: {e}"))


def read_pass(paths: list[str], readers: int,
              work: Callable[[list[str]], int] = read_files) -> tuple[float, int]:
    """Wall time for `readers` processes to read all of `paths` between them (or to do `work`
    on them: `stat_files`), and the bytes (what `work` counts). The processes are started
    before the clock and released together."""
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(readers + 1), ctx.SimpleQueue()
    share = -(-len(paths) // readers)
    procs = [ctx.Process(target=_reader, args=(paths[i * share:(i + 1) * share], work, start,
                                               done))
             for i in range(readers)]
    for p in procs:
        p.start()
    try:
        # The clock starts before the release: a reader let go first may be done before this
        # process runs again, which a short warm pass would not count.
        t0 = time.perf_counter()
        start.wait()
        results = [done.get() for _ in procs]
        seconds = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=600)
            if p.is_alive():
                p.kill()
    errors = [err for _, err in results if err]
    if errors:
        raise RuntimeError(f"a reader failed: {errors[0]}")
    return seconds, sum(n for n, _ in results)


def jpeg_files(dataset: Path, mountpoint: Path) -> tuple[list[str], int]:
    """The JPEGs' paths inside the image, in the order of their bytes in it (mksquashfs sorts
    each directory by name), and their total size."""
    files, total = [], 0
    with common.mounted("kernel", dataset, mountpoint) as mp:
        for root, dirs, names in os.walk(mp):
            dirs.sort()
            for name in sorted(names):
                if name.endswith(".jpg"):
                    path = os.path.join(root, name)
                    files.append(os.path.relpath(path, mp))
                    total += os.path.getsize(path)
    return files, total


@contextmanager
def _opened(system: str, dataset: Path, extracted: Path, mountpoint: Path) -> Iterator[Path]:
    """The root to read `system` at: a fresh mount, or the folder of extracted files."""
    if system == "extracted":
        yield extracted
    else:
        with common.mounted(system, dataset, mountpoint) as mp:
            yield mp


def _paths(system: str, root: Path, files: list[str]) -> list[str]:
    if system in ("vgfs", "extracted"):
        return [f"{root}/images/{os.path.basename(f)[:-4]}/image.jpg" for f in files]
    return [f"{root}/{f}" for f in files]


def bench_reads(dataset: Path, extracted: Path, files: list[str], total: int, runs: int,
                tmp: Path) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per (mode, readers, system) over `runs` interleaved runs; vgfs's own counters."""
    samples: dict[str, list[float]] = {}
    counters: dict[str, object] = {}
    for run in range(runs):
        for readers in READERS:
            for system in common.rotated(SYSTEMS, run):
                with _opened(system, dataset, extracted, tmp / system) as root:
                    paths = _paths(system, root, files)
                    common.drop_caches()
                    for mode in MODES:
                        seconds, got = read_pass(paths, readers)
                        if got != total:
                            raise RuntimeError(f"{system}: read {got} bytes, expected {total}")
                        samples.setdefault(f"{mode} {readers} {system}", []).append(seconds)
                        common.log(f"run {run + 1}/{runs}: {system}, {readers} reader(s),"
                                   f" {mode}: {len(files) / seconds:,.0f} files/s")
                    if system == "vgfs":
                        counters[f"{readers} readers"] = read_stats(str(root))
    return samples, counters


def profile_reads(dataset: Path, files: list[str], tmp: Path, seconds: float) -> str:
    """Profile warm 1-reader passes for `seconds`, after one pass that warms the mount."""
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        paths = _paths("vgfs", mp, files)
        read_pass(paths, 1)

        def passes() -> None:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                read_pass(paths, 1)

        return common.daemon_profile(mp, passes)


def report_reads(files: int, total: int, reads: dict[str, list[float]], runs: int,
                 images: int) -> tuple[str, dict[tuple[str, int], dict[str, float]], list]:
    """The markdown, files/s per (mode, readers) and system, and the targets' rows."""
    tables, speeds, targets = [], {}, []
    for mode in MODES:
        rows, paired = [], {}
        for readers in READERS:
            speeds[mode, readers] = {}
            for system in SYSTEMS:
                s = common.median(reads[f"{mode} {readers} {system}"])
                speeds[mode, readers][system] = files / s
                if system != "vgfs":
                    paired[readers, system] = common.vgfs_ratio(reads, f"{mode} {readers}", system)
                rows.append([readers, system, s, files / s, total / s / 1e6,
                             common.ratio_cell(paired.get((readers, system)), runs)])
        tables += [f"{mode.capitalize()}:",
                   common.table(["readers", "system", "median s", "files/s", "MB/s",
                                 "vgfs ÷ system"], rows)]
        for (m, readers, anchor), want in TARGETS.items():
            if m != mode:
                continue
            ratio = round(paired[readers, anchor][0], 2)  # judged as the table shows it
            beside = "" if mode == "cold" else f" (kernel: {paired[readers, 'kernel'][0]:.2f}×)"
            targets.append([f"JPEG reads, {mode}, {readers} reader(s): vgfs ÷ {anchor} ≥"
                            f" {want}", f"{ratio:.2f}×{beside}", common.verdict(ratio >= want)])
    md = "\n\n".join([
        f"JPEG reads: every one of the {files:,} real-size JPEGs ({total / 1e6:,.0f} MB) of a"
        f" {images:,}-image synthetic release, read whole by 1, 4 and 16 processes; vgfs reads"
        " `MP/images/<id>/image.jpg`, squashfuse_ll, the kernel and ratarmount the same"
        " images.sqfs's `MP/VG_100K*/<id>.jpg`, extracted the files on local disk. Medians of"
        f" {runs} interleaved run(s). vgfs ÷ system: throughput ratio, the median of the ratios"
        " taken within each run (range in brackets), so that a drift of the machine between"
        " runs cancels out.",
        *tables])
    return md, speeds, targets


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "reads", __doc__, argv, f"every JPEG of a {QUICK_IMAGES:,}-image real-JPEG dataset, one"
        " run: a check in a minute or two", "loop mounts and dropping caches", quick_runs=1)
    images = QUICK_IMAGES if args.quick else IMAGES
    dataset = common.dataset(images, "real")
    extracted = common.extracted(images, "real")
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        files, total = jpeg_files(dataset, Path(tmp) / "list")
        reads, counters = bench_reads(dataset, extracted, files, total, args.runs, Path(tmp))
        md, speeds, targets = report_reads(len(files), total, reads, args.runs, images)
        fig = common.cold_warm_bars(speeds, list(READERS), [f"{r} reader(s)" for r in READERS],
                                    "JPEG files/s (log)", "Reading every JPEG")
        raw = {"reads": {"files": len(files), "bytes": total, "seconds": reads,
                         "vgfs_stats": counters}}
        common.write_judged(
            "mount", "Mount benchmark: JPEG reads", md, targets, fig, args.quick, raw,
            common.Profiler("reads", "during warm 1-reader passes ({seconds:.0f} s)",
                            functools.partial(profile_reads, dataset, files, Path(tmp))))


if __name__ == "__main__":
    main()
