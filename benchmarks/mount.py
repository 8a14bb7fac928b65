"""Mount benchmark: reading JPEGs through vgfs against squashfuse_ll and the kernel's squashfs,
and walking the namespace with find and ls.

All three read the same images.sqfs, in one run, interleaved (the order of the systems rotates
from run to run), so that a drift of the machine hits each of them alike. Cold runs drop the
caches on a fresh mount; the warm run is a second pass on that mount. Files are read in the
order their bytes sit in the image, and split into contiguous slices among the reader processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import tempfile
import time
from multiprocessing.queues import SimpleQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from benchmarks import common
from vgfs.mount import read_stats

SYSTEMS = ("vgfs", "squashfuse_ll", "kernel")
READERS = (1, 4)
MODES = ("cold", "warm")
JPEG_IMAGES = 20_000  # the real-JPEG dataset
FULL_IMAGES = 108_077  # the full-scale dataset, for find and ls
QUICK_FILES = 3_000
WALK_RUNS = 3  # a full-scale find takes minutes
CHUNK = 1 << 20
TARGETS = {  # (mode, readers, anchor): least ratio of vgfs throughput to the anchor's
    ("cold", 1, "squashfuse_ll"): 1.0,
    ("cold", 4, "squashfuse_ll"): 1.0,
    ("cold", 4, "kernel"): 0.7,
    ("warm", 1, "squashfuse_ll"): 1.2,
    ("warm", 4, "squashfuse_ll"): 1.2,
}
FIND_TARGET = 200_000  # entries/s
LS_TARGET = 1.0  # seconds


def _read_files(paths: list[str]) -> int:
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


def _reader(paths: list[str], start: Barrier, done: SimpleQueue) -> None:
    try:
        start.wait()
        done.put((_read_files(paths), None))
    except BaseException as e:  # noqa: BLE001 - reported by the parent, which stops the run
        done.put((0, f"{type(e).__name__}: {e}"))


def read_pass(paths: list[str], readers: int) -> tuple[float, int]:
    """Wall time for `readers` processes to read all of `paths` between them, and the bytes.
    The processes are started before the clock and released together."""
    ctx = multiprocessing.get_context("fork")
    start, done = ctx.Barrier(readers + 1), ctx.SimpleQueue()
    share = -(-len(paths) // readers)
    procs = [ctx.Process(target=_reader, args=(paths[i * share:(i + 1) * share], start, done))
             for i in range(readers)]
    for p in procs:
        p.start()
    try:
        start.wait()
        t0 = time.perf_counter()
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


def jpeg_files(dataset: Path, mountpoint: Path, limit: int | None) -> tuple[list[str], int]:
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
                    if limit and len(files) == limit:
                        return files, total
    return files, total


def _paths(system: str, mp: Path, files: list[str]) -> list[str]:
    if system == "vgfs":
        return [f"{mp}/images/{os.path.basename(f)[:-4]}/image.jpg" for f in files]
    return [f"{mp}/{f}" for f in files]


def bench_reads(dataset: Path, files: list[str], total: int, runs: int, tmp: Path
                ) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per (mode, readers, system) over `runs` interleaved runs; vgfs's own counters."""
    samples: dict[str, list[float]] = {}
    counters: dict[str, object] = {}
    for run in range(runs):
        order = SYSTEMS[run % 3:] + SYSTEMS[:run % 3]
        for readers in READERS:
            for system in order:
                with common.mounted(system, dataset, tmp / system) as mp:
                    paths = _paths(system, mp, files)
                    common.drop_caches()
                    for mode in MODES:
                        seconds, got = read_pass(paths, readers)
                        if got != total:
                            raise RuntimeError(f"{system}: read {got} bytes, expected {total}")
                        samples.setdefault(f"{mode} {readers} {system}", []).append(seconds)
                        common.log(f"run {run + 1}/{runs}: {system}, {readers} reader(s),"
                                   f" {mode}: {len(files) / seconds:,.0f} files/s")
                    if system == "vgfs":
                        counters[f"{readers} readers"] = read_stats(str(mp))
    return samples, counters


def _timed_shell(command: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True,
                         text=True, check=True).stdout
    return time.perf_counter() - t0, int(out)


def bench_walks(dataset: Path, runs: int, tmp: Path) -> dict[str, list[float]]:
    """`ls images | wc -l` and `find -type f | wc -l`, each on a fresh mount with caches
    dropped (cold), then again on that mount (warm). Values: seconds, then entries. find also
    lists the query views' symlinks, which it does not print: their number is counted once,
    untimed, so that the rate of entries walked can be told from the rate of files printed."""
    samples: dict[str, list[float]] = {}
    commands = {"ls": "ls {mp}/images | wc -l", "find": "find {mp} -type f | wc -l"}
    for run in range(runs):
        for name, command in commands.items():
            with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
                common.drop_caches()
                for mode in MODES:
                    seconds, entries = _timed_shell(command.format(mp=mp))
                    samples.setdefault(f"{name} {mode}", []).append(seconds)
                    samples[f"{name} entries"] = [entries]
                    common.log(f"run {run + 1}/{runs}: {name} {mode}: {entries:,} entries in"
                               f" {seconds:.2f} s")
                if name == "find" and run == 0:
                    samples["find walked"] = [_timed_shell(f"find {mp} | wc -l")[1] - 1]
    return samples


def _paired(reads: dict[str, list[float]], workload: str, anchor: str
            ) -> tuple[float, float, float]:
    """Median, least and greatest of vgfs's throughput over the anchor's, run by run."""
    ratios = [a / v for v, a in zip(reads[f"{workload} vgfs"], reads[f"{workload} {anchor}"],
                                    strict=True)]
    return common.median(ratios), min(ratios), max(ratios)


def report(files: int, total: int, reads: dict[str, list[float]], walks: dict[str, list[float]],
           walk_images: int, runs: int) -> tuple[str, object]:
    med = {k: common.median(v) for k, v in reads.items()}
    rows, ratio_rows, targets = [], [], []
    for mode in MODES:
        for readers in READERS:
            speed = {}
            for system in SYSTEMS:
                s = med[f"{mode} {readers} {system}"]
                speed[system] = files / s
                rows.append([mode, readers, system, s, files / s, total / s / 1e6])
            row: list[object] = [mode, readers, *speed.values()]
            for anchor in SYSTEMS[1:]:
                ratio, low, high = _paired(reads, f"{mode} {readers}", anchor)
                row.append(f"{ratio:.2f} ({low:.2f}–{high:.2f})")
                want = TARGETS.get((mode, readers, anchor))
                if want is not None:
                    targets.append([f"{mode}, {readers} reader(s): vgfs/{anchor} ≥ {want}",
                                    f"{ratio:.2f}×", common.verdict(ratio >= want)])
            ratio_rows.append(row)
    walk_rows = []
    for name in ("ls", "find"):
        entries = int(walks[f"{name} entries"][0])
        for mode in MODES:
            s = common.median(walks[f"{name} {mode}"])
            walked = walks["find walked"][0] if name == "find" else entries
            walk_rows.append([name, mode, entries, s, entries / s, walked / s])
            if name == "find":
                rate = entries / s
                targets.append([f"find, {mode}: ≥ {FIND_TARGET:,} entries/s", f"{rate:,.0f}/s",
                                common.verdict(rate >= FIND_TARGET)])
            else:
                targets.append([f"ls images, {mode}: < {LS_TARGET:.0f} s", f"{s:.2f} s",
                                common.verdict(s < LS_TARGET)])
    md = "\n\n".join([
        "# Mount benchmark",
        common.environment(),
        f"JPEG reads: {files:,} real-size JPEGs ({total / 1e6:,.0f} MB) of a {JPEG_IMAGES:,}-image"
        f" synthetic release, the same images.sqfs for all three; medians of {runs} interleaved"
        " runs. Cold: fresh mount, caches dropped. Warm: second pass on that mount.",
        common.table(["mode", "readers", "system", "median s", "files/s", "MB/s"], rows),
        "Throughput ratios, vgfs over the anchor: the median of the runs' ratios, each taken"
        " within one run so that a drift of the machine between runs cancels out (range in"
        " brackets):",
        common.table(["mode", "readers", "vgfs files/s", "squashfuse_ll files/s",
                      "kernel files/s", "vgfs/squashfuse_ll", "vgfs/kernel"], ratio_rows),
        f"Namespace walks on the vgfs mount of a {walk_images:,}-image dataset (medians of"
        f" {WALK_RUNS}; cold: fresh mount, caches dropped). Entries: lines printed; walked:"
        " every entry find lists, the query views' symlinks included:",
        common.table(["command", "mode", "entries", "median s", "entries/s",
                      "entries walked/s"], walk_rows),
        "Targets:",
        common.table(["target", "measured", "verdict"], targets),
    ]) + "\n"
    return md, _plot(ratio_rows, walk_rows)


def _plot(ratio_rows: list[list], walk_rows: list[list]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[3, 2])
    labels = [f"{r[0]}\n{r[1]} reader{'s' if r[1] > 1 else ''}" for r in ratio_rows]
    width = 0.27
    for i, system in enumerate(SYSTEMS):
        xs = [x + (i - 1) * width for x in range(len(ratio_rows))]
        left.bar(xs, [r[2 + i] for r in ratio_rows], width, label=system)
    left.set_xticks(range(len(ratio_rows)), labels)
    left.set_yscale("log")
    left.set_ylabel("JPEG files/s (log)")
    left.set_title("Reading every JPEG")
    left.legend()
    right.bar([f"{r[0]}\n{r[1]}" for r in walk_rows], [r[4] for r in walk_rows],
              color=["C3", "C3", "C4", "C4"])
    right.axhline(FIND_TARGET, color="k", ls="--", lw=1, label=f"find target {FIND_TARGET:,}/s")
    right.set_yscale("log")
    right.set_ylabel("entries/s (log)")
    right.set_title("ls images / find, vgfs")
    right.legend()
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mount", description=__doc__)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_FILES:,} JPEGs, the walks on"
                   f" the {JPEG_IMAGES:,}-image dataset, 3 runs: a check in a few minutes")
    p.add_argument("--runs", type=int, help="runs of the JPEG reads (default 5, 3 with --quick)")
    args = p.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    if os.geteuid() != 0:
        raise SystemExit("the mount benchmark needs root: loop mounts and dropping caches")
    jpeg_ds = common.dataset(JPEG_IMAGES, "real")
    walk_images = JPEG_IMAGES if args.quick else FULL_IMAGES
    walk_ds = jpeg_ds if args.quick else common.dataset(FULL_IMAGES, "small")
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        files, total = jpeg_files(jpeg_ds, Path(tmp) / "list",
                                  QUICK_FILES if args.quick else None)
        reads, counters = bench_reads(jpeg_ds, files, total, runs, Path(tmp))
        walks = bench_walks(walk_ds, WALK_RUNS, Path(tmp))
    md, fig = report(len(files), total, reads, walks, walk_images, runs)
    out = common.write_results("mount", md, fig, args.quick)
    raw = {"files": len(files), "bytes": total, "seconds": reads, "walks": walks,
           "vgfs_stats": counters}
    (out / "mount.json").write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
