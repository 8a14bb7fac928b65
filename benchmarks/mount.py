"""Mount benchmark: reading every JPEG, and walking the namespace (find, ls -l, du), through
vgfs against what a user would do otherwise.

JPEG reads compare vgfs with squashfuse_ll, the kernel's squashfs and ratarmount, all four on
the same images.sqfs, and with the same files extracted onto local disk. Walks compare vgfs
with the three mounts of the full-scale images.sqfs. All systems run in one run, interleaved
(the order rotates from run to run), so that a drift of the machine hits each of them alike.
Cold: a fresh mount with the caches dropped (for the extracted files, the caches dropped).
Warm: a second pass on that mount. Files are read in the order their bytes sit in the image,
and split into contiguous slices among the reader processes.

Where vgfs misses a target, a py-spy profile of its daemon during a warm 1-reader pass, and
during a cold find, is kept beside the tables.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.queues import SimpleQueue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import common
from vgfs.metrics import read_stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SYSTEMS = ("vgfs", "squashfuse_ll", "kernel", "ratarmount", "extracted")
WALK_SYSTEMS = SYSTEMS[:4]  # extracted files on disk are no image: nothing to compare there
READERS = (1, 4, 16)
MODES = ("cold", "warm")
WALKS = ("find", "ls -l", "du")
JPEG_IMAGES = 20_000  # the real-JPEG dataset
FULL_IMAGES = 108_077  # the full-scale dataset, for the walks
QUICK_IMAGES = 2_000  # --quick: both parts on one small real-JPEG dataset
RUNS = 3
PROFILE_SECONDS = 20.0  # 5 with --quick
CHUNK = 1 << 20
TARGETS = {  # (mode, readers, anchor): least ratio of vgfs throughput to the anchor's
    **{("cold", r, "squashfuse_ll"): 1.0 for r in READERS},
    ("cold", 4, "kernel"): 0.7,
    **{("cold", r, "ratarmount"): 3.0 for r in READERS},
    **{("warm", r, "squashfuse_ll"): 1.2 for r in READERS},
}
FIND_TARGET = 200_000  # entries/s
FIND_RATARMOUNT = 2.0  # vgfs's find over ratarmount's


# --- JPEG reads --------------------------------------------------------------------------

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


# --- namespace walks ---------------------------------------------------------------------

def _walk_command(walk: str, system: str, mp: Path) -> list[str]:
    """`find MP`, `ls -l` of the directories that hold one entry per image (vgfs: images/;
    the images.sqfs mounts: the VG_100K* folders of JPEGs), `du -s MP`.

    find runs as `find MP -printf %y`: it makes the very calls `find MP -type f` makes (the
    type comes from readdir, no stat), and prints each entry's type letter, so that one pass
    counts both the files that `-type f` prints and every entry walked."""
    if walk == "find":
        return ["find", str(mp), "-printf", "%y"]
    if walk == "du":
        return ["du", "-s", str(mp)]
    dirs = [mp / "images"] if system == "vgfs" else sorted(p for p in mp.iterdir() if p.is_dir())
    return ["ls", "-l", *map(str, dirs)]


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = common.run(cmd).stdout
    return time.perf_counter() - t0, out


def _entries(walk: str, out: str) -> list[int]:
    """[entries printed, entries walked] from the output of find or ls -l."""
    if walk == "find":
        return [out.count("f"), len(out)]
    n = sum(line[:1] in ("-", "d", "l") for line in out.splitlines())
    return [n, n]


def bench_walks(dataset: Path, runs: int, tmp: Path
                ) -> tuple[dict[str, list[float]], dict[str, list[int]], dict[str, object]]:
    """Seconds per (walk, mode, system), each run on a fresh mount with caches dropped (cold)
    then again on that mount (warm); (entries printed, entries walked) per (walk, system),
    du's taken from find's walk; vgfs's own counters after each walk."""
    samples: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    counters: dict[str, object] = {}
    for run in range(runs):
        for walk in WALKS:
            for system in common.rotated(WALK_SYSTEMS, run):
                key = f"{walk} {system}"
                with common.mounted(system, dataset, tmp / system) as mp:
                    cmd = _walk_command(walk, system, mp)
                    common.drop_caches()
                    for mode in MODES:
                        seconds, out = _timed(cmd)
                        samples.setdefault(f"{walk} {mode} {system}", []).append(seconds)
                        # du prints a sum: it walks what find walks
                        counts[key] = ([counts[f"find {system}"][1]] * 2 if walk == "du"
                                       else _entries(walk, out))
                        common.log(f"run {run + 1}/{runs}: {key} {mode}: {counts[key][0]:,}"
                                   f" entries in {seconds:.2f} s")
                    if system == "vgfs":
                        counters[walk] = read_stats(str(mp))
    return samples, counts, counters


# --- profiles ----------------------------------------------------------------------------

def profile(mp: Path, workload: Callable[[], None]) -> str:
    """Top frames of the vgfs daemon serving `mp` while `workload` runs, sampled by py-spy:
    the lines most samples were in, and the functions most samples were in or below."""
    pid = read_stats(str(mp))["pid"]
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as raw:
        # --native: the time pyfuse3 and libfuse spend in C (system calls on /dev/fuse, the
        # copies of replies) shows, not only the Python frames above it.
        with common.sampling(pid, raw.name, "--native", "-r", "200"):
            workload()
        stacks = raw.read()
    own: Counter[str] = Counter()  # by line
    below: Counter[str] = Counter()  # by function
    for stack, n in common.spy_stacks(stacks):
        frames = stack.split(";")
        own[frames[-1]] += n
        below.update(dict.fromkeys((re.sub(r":\d+\)$", ")", f) for f in frames), n))
    total = sum(own.values())
    if not total:
        raise RuntimeError("py-spy recorded no samples")

    def top(counter: Counter[str]) -> str:
        return "\n".join(f"{n / total:6.1%}  {frame}" for frame, n in counter.most_common(25))

    return (f"{total:,} samples of the vgfs daemon (pid {pid}), py-spy --native at 200 Hz, idle"
            " threads left out. py-spy counts trio's EpollIOManager.get_events as busy: it is the"
            " event loop waiting for the next request.\n\nTop lines by own samples:\n"
            f"{top(own)}\n\nTop functions by samples in the function or below it:\n"
            f"{top(below)}\n")


def profile_reads(dataset: Path, files: list[str], tmp: Path, seconds: float) -> str:
    """Profile warm 1-reader passes for `seconds`, after one pass that warms the mount."""
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        paths = _paths("vgfs", mp, files)
        read_pass(paths, 1)

        def passes() -> None:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                read_pass(paths, 1)

        return profile(mp, passes)


def profile_find(dataset: Path, tmp: Path, seconds: float) -> str:
    """Profile a cold `find MP -type f` for at most `seconds` (then it is stopped)."""
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        common.drop_caches()

        def find() -> None:
            with suppress(subprocess.TimeoutExpired):
                subprocess.run(["find", str(mp), "-type", "f"], stdout=subprocess.DEVNULL,
                               check=True, timeout=seconds)

        return profile(mp, find)


# --- report ------------------------------------------------------------------------------

def _paired(samples: dict[str, list[float]], workload: str, system: str,
            work: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float, float]:
    """vgfs's throughput over the system's, run by run: median, least, greatest; `work` is
    (vgfs's, the system's) amount done per run."""
    return common.ratios([work[0] / s for s in samples[f"{workload} vgfs"]],
                         [work[1] / s for s in samples[f"{workload} {system}"]])


def _cell(ratio: tuple[float, float, float] | None, runs: int) -> str:
    """A ratio as the tables show it: the median, with the range in brackets if there were
    several runs; none for vgfs itself."""
    if ratio is None:
        return "—"
    med, low, high = ratio
    return f"{med:.2f}" if runs == 1 else f"{med:.2f} ({low:.2f}–{high:.2f})"


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
                    paired[readers, system] = _paired(reads, f"{mode} {readers}", system)
                rows.append([readers, system, s, files / s, total / s / 1e6,
                             _cell(paired.get((readers, system)), runs)])
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


def report_walks(walks: dict[str, list[float]], counts: dict[str, list[int]], runs: int,
                 images: int) -> tuple[str, dict[tuple[str, str], dict[str, float]], list]:
    """The markdown, entries/s per (mode, walk) and system, and the targets' rows."""
    tables, speeds, targets = [], {}, []
    for mode in MODES:
        rows = []
        for walk in WALKS:
            speeds[mode, walk] = {}
            key = f"{walk} {mode}"
            for system in WALK_SYSTEMS:
                printed, walked = counts[f"{walk} {system}"]
                seconds = walks[f"{key} {system}"]
                s = common.median(seconds)
                speeds[mode, walk][system] = printed / s
                ratio = None if system == "vgfs" else _paired(
                    walks, key, system, (counts[f"{walk} vgfs"][0], printed))
                rows.append([walk, system, len(seconds), printed, walked, s, printed / s,
                             walked / s, _cell(ratio, runs)])
                if walk == "find" and system == "vgfs":
                    targets.append([f"find, {mode}: ≥ {FIND_TARGET:,} entries/s",
                                    f"{printed / s:,.0f}/s",
                                    common.verdict(printed / s >= FIND_TARGET)])
                if walk == "find" and system == "ratarmount":
                    shown = round(ratio[0], 2)  # judged as the table shows it
                    targets.append([f"find, {mode}: vgfs ÷ ratarmount ≥ {FIND_RATARMOUNT}",
                                    f"{shown:.2f}×", common.verdict(shown >= FIND_RATARMOUNT)])
        tables += [f"{mode.capitalize()}:",
                   common.table(["walk", "system", "runs", "entries", "entries walked",
                                 "median s", "entries/s", "walked/s", "vgfs ÷ system"], rows)]
    md = "\n\n".join([
        f"Namespace walks over a {images:,}-image dataset: vgfs on its mount; ratarmount,"
        " squashfuse_ll and the kernel on the same images.sqfs, which holds only the JPEGs."
        " find: `find MP -type f` (entries: files printed; walked: every entry, vgfs's query"
        " views' symlinks included). ls -l: `ls -l MP/images/` on vgfs, `ls -l MP/VG_100K*`"
        " (the JPEGs) on the others: entries listed. du: `du -s MP`: entries are all it walks."
        f" Medians of {runs} run(s)."
        " vgfs ÷ system: ratio of entries/s within each run.",
        *tables])
    return md, speeds, targets


def _bars(ax: Axes, groups: list[str], speeds: list[dict[str, float]]) -> None:
    """One group of bars per entry of `groups`, one bar per system."""
    systems = list(speeds[0])
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(xs, [s[system] for s in speeds], width, label=system)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yscale("log")


def _plot(speeds: dict, groups: list, labels: list[str], ylabel: str, title: str,
          find_target: bool = False) -> Figure:
    """Cold beside warm; with `find_target`, the find target across the find bars."""
    fig, axes = common.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, mode in zip(axes, MODES, strict=True):
        _bars(ax, labels, [speeds[mode, g] for g in groups])
        ax.set_title(f"{title}, {mode}")
        if find_target:
            x = groups.index("find")
            ax.hlines(FIND_TARGET, x - 0.45, x + 0.45, colors="k", linestyles="--",
                      label=f"find target {FIND_TARGET:,}/s")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize="small")
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "mount", __doc__, argv, f"reads and walks on a {QUICK_IMAGES:,}-image real-JPEG"
        " dataset, one run: a check in a minute or two", "loop mounts and dropping caches",
        runs=RUNS, quick_runs=1)
    runs = args.runs
    seconds = 5.0 if args.quick else PROFILE_SECONDS
    read_images = QUICK_IMAGES if args.quick else JPEG_IMAGES
    walk_images = QUICK_IMAGES if args.quick else FULL_IMAGES
    jpeg_ds = common.dataset(read_images, "real")
    extracted = common.extracted(read_images, "real")
    walk_ds = jpeg_ds if args.quick else common.dataset(FULL_IMAGES, "small")
    profiles = {}
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        files, total = jpeg_files(jpeg_ds, Path(tmp) / "list")
        reads, counters = bench_reads(jpeg_ds, extracted, files, total, runs, Path(tmp))
        walks, counts, walk_counters = bench_walks(walk_ds, runs, Path(tmp))
        reads_md, read_speeds, read_targets = report_reads(len(files), total, reads, runs,
                                                           read_images)
        walks_md, walk_speeds, walk_targets = report_walks(walks, counts, runs, walk_images)
        if any(t[-1] == "FAIL" for t in read_targets):
            profiles["reads"] = profile_reads(jpeg_ds, files, Path(tmp), seconds)
        if any(t[-1] == "FAIL" for t in walk_targets):
            profiles["find"] = profile_find(walk_ds, Path(tmp), seconds)
    env = common.environment()
    profiled = {"reads": f"during warm 1-reader passes ({seconds:.0f} s)",
                "find": f"during a cold find (its first {seconds:.0f} s at most)"}
    raw = {"reads": {"files": len(files), "bytes": total, "seconds": reads,
                     "vgfs_stats": counters},
           "walks": {"seconds": walks, "entries printed, walked": counts,
                     "vgfs_stats": walk_counters}}
    parts = {  # name: title, markdown, targets, profile, plot
        "mount": ("Mount benchmark: JPEG reads", reads_md, read_targets, "reads",
                  _plot(read_speeds, list(READERS), [f"{r} reader(s)" for r in READERS],
                        "JPEG files/s (log)", "Reading every JPEG")),
        "metadata": ("Metadata benchmark", walks_md, walk_targets, "find",
                     _plot(walk_speeds, list(WALKS), list(WALKS), "entries/s (log)",
                           "Walking the namespace", find_target=True)),
    }
    for name, (title, md, targets, prof, fig) in parts.items():
        note = (f"vgfs misses a target: `profile-{prof}.txt` beside this file holds the top"
                f" frames of its daemon, sampled by py-spy {profiled[prof]}."
                if prof in profiles else "")
        out = common.write_results(name, "\n\n".join(filter(None, [
            f"# {title}", env, md, "Targets:",
            common.table(["target", "measured", "verdict"], targets), note])) + "\n", fig,
            args.quick, raw if name == "mount" else None)  # mount.json: both parts
    for prof in profiled:  # a profile of an earlier run would be stale
        (out / f"profile-{prof}.txt").unlink(missing_ok=True)
    for prof, text in profiles.items():
        (out / f"profile-{prof}.txt").write_text(text)


if __name__ == "__main__":
    main()
