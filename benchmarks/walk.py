"""Namespace walk benchmark: find, ls -l and du through vgfs against the other mounts of the
same images.sqfs (squashfuse_ll, the kernel's squashfs, ratarmount), at full scale.

All systems run in one run, interleaved (the order rotates from run to run), so that a drift of
the machine hits each of them alike. Cold: a fresh mount with the caches dropped. Warm: a second
walk on that mount. Where vgfs misses a target, a py-spy profile of its daemon during a cold find
is kept beside the table. Its results keep the name `metadata` (metadata.md, metadata.png,
metadata.json).
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from benchmarks import common
from benchmarks.common import MODES
from vgfs.metrics import read_stats

SYSTEMS = ("vgfs", "squashfuse_ll", "kernel", "ratarmount")
WALKS = ("find", "ls -l", "du")
IMAGES = 108_077  # the full-scale dataset
QUICK_IMAGES = 2_000  # --quick: the small real-JPEG dataset the reads benchmark uses too
FIND_TARGET = 200_000  # entries/s
FIND_RATARMOUNT = 2.0  # vgfs's find over ratarmount's


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
            for system in common.rotated(SYSTEMS, run):
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


def profile_find(dataset: Path, tmp: Path, seconds: float) -> str:
    """Profile a cold `find MP -type f` for at most `seconds` (then it is stopped)."""
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        common.drop_caches()

        def find() -> None:
            with suppress(subprocess.TimeoutExpired):
                subprocess.run(["find", str(mp), "-type", "f"], stdout=subprocess.DEVNULL,
                               check=True, timeout=seconds)

        return common.daemon_profile(mp, find)


def report_walks(walks: dict[str, list[float]], counts: dict[str, list[int]], runs: int,
                 images: int) -> tuple[str, dict[tuple[str, str], dict[str, float]], list]:
    """The markdown, entries/s per (mode, walk) and system, and the targets' rows."""
    tables, speeds, targets = [], {}, []
    for mode in MODES:
        rows = []
        for walk in WALKS:
            speeds[mode, walk] = {}
            key = f"{walk} {mode}"
            for system in SYSTEMS:
                printed, walked = counts[f"{walk} {system}"]
                seconds = walks[f"{key} {system}"]
                s = common.median(seconds)
                speeds[mode, walk][system] = printed / s
                ratio = None if system == "vgfs" else common.vgfs_ratio(
                    walks, key, system, (counts[f"{walk} vgfs"][0], printed))
                rows.append([walk, system, len(seconds), printed, walked, s, printed / s,
                             walked / s, common.ratio_cell(ratio, runs)])
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
        " find: `find MP -type f` (entries: files printed; walked: every entry; vgfs's query"
        " views are not listed, so not walked). ls -l: `ls -l MP/images/` on vgfs,"
        " `ls -l MP/VG_100K*` (the JPEGs) on the others: entries listed. du: `du -s MP`:"
        f" entries are all it walks. Medians of {runs} run(s)."
        " vgfs ÷ system: ratio of entries/s within each run.",
        *tables])
    return md, speeds, targets


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "walk", __doc__, argv, f"walks of a {QUICK_IMAGES:,}-image real-JPEG dataset, one run:"
        " a check in a minute", "loop mounts and dropping caches", quick_runs=1)
    images = QUICK_IMAGES if args.quick else IMAGES
    dataset = common.dataset(images, "real" if args.quick else "small")
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        walks, counts, counters = bench_walks(dataset, args.runs, Path(tmp))
        md, speeds, targets = report_walks(walks, counts, args.runs, images)
        fig = common.cold_warm_bars(speeds, list(WALKS), list(WALKS), "entries/s (log)",
                                    "Walking the namespace",
                                    ("find", FIND_TARGET, f"find target {FIND_TARGET:,}/s"))
        raw = {"walks": {"seconds": walks, "entries printed, walked": counts,
                         "vgfs_stats": counters}}
        common.write_judged(
            "metadata", "Metadata benchmark", md, targets, fig, args.quick, raw,
            common.Profiler("find", "during a cold find (its first {seconds:.0f} s at most)",
                            functools.partial(profile_find, dataset, Path(tmp))))


if __name__ == "__main__":
    main()
