"""Build benchmark: time and peak memory of `vgfs build` at full scale and at 10,000 images.

A site builds the dataset once, on whatever machine it has, so the build's memory must not grow
with the release. Each build runs as its own `vgfs build` process, after the caches are dropped.
Its memory is measured three ways: the phases' peak RSS that the build writes into its manifest
(the Python process alone), mksquashfs's own peak (its VmHWM), and the whole process tree sampled
every 50 ms (Python and mksquashfs at once: what the machine needs). The phases are the
manifest's own (annotations, composed files, query views, other files, images, image records),
so the tables follow the build as it changes. Where a target is missed, py-spy samples the first
seconds of one more build of the smaller release (the annotation pass) and its top frames go
beside the results.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from benchmarks import common

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FULL_SIZES = (10_000, 108_077)
QUICK_SIZES = (2_000, 10_000)
JPEG = "small"
VIEWS_TARGET = 0.30
ANNOTATIONS_TARGET = 300.0  # seconds, at 108,077 images
RSS_TARGET = 1536.0  # MiB (1.5 GiB)
ALIKE_TARGET = 1.25  # the build process's peak, largest release over the smallest
SAMPLE_EVERY = 0.05


def _tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    pids, i = [pid], 0
    while i < len(pids):
        try:
            for task in os.listdir(f"/proc/{pids[i]}/task"):
                with open(f"/proc/{pids[i]}/task/{task}/children") as f:
                    pids += map(int, f.read().split())
        except OSError:
            pass
        i += 1
    return pids


class TreeSampler(threading.Thread):
    """The peak summed RSS of a process tree, which no single rusage figure gives, and
    mksquashfs's own peak (VmHWM, which exec resets: rusage would count mksquashfs's forked
    Python before its exec), in MiB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.peak_rss = self.peak_anon = self.mksquashfs = 0.0

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            rss = anon = 0
            for status in map(common.proc_status, _tree(self.pid)):
                rss += common.kib(status, "VmRSS")
                anon += common.kib(status, "RssAnon")
                if status.get("Name", "").strip() == "mksquashfs":
                    self.mksquashfs = max(self.mksquashfs, common.kib(status, "VmHWM") / 1024)
            self.peak_rss = max(self.peak_rss, rss / 1024)
            self.peak_anon = max(self.peak_anon, anon / 1024)


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def build_once(images: int) -> dict:
    """Build the release of `images` images from cold caches; the result becomes the cached
    dataset, so the mount benchmark reuses it."""
    src = common.release(images, JPEG)
    final = common.dataset_path(images, JPEG)
    out = final.with_name(final.name + ".bench")
    shutil.rmtree(out, ignore_errors=True)
    common.drop_caches()
    common.log(f"building {images:,} images")
    with open(common.DATA / "build.log", "w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*common.VGFS, "build", str(src), "-o", str(out), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=err)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status = os.waitpid(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop.set()
        sampler.join()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"vgfs build of {images} images failed:\n{err.read()[-2000:]}")
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    result = {"images": images, "wall_s": wall, "phases": manifest["phases"],
              "build_process_mib": max(ph["peak_rss_mb"] for ph in manifest["phases"]),
              "mksquashfs_mib": sampler.mksquashfs,
              "tree_peak_mib": sampler.peak_rss, "tree_anon_peak_mib": sampler.peak_anon,
              "lmdb_mb": _size_mb(out / "annotations.lmdb"),
              "frames_mb": _size_mb(out / "annotations.zst"),
              "release_mb": manifest["annotations"]["release_bytes"] / 1e6,
              "sqfs_mb": _size_mb(out / "images.sqfs")}
    shutil.rmtree(final, ignore_errors=True)
    os.rename(out, final)
    common.log(f"built {images:,} images in {wall:.0f} s, tree peak {sampler.peak_rss:.0f} MiB")
    return result


def profile_build(images: int, seconds: float) -> str:
    """The build process's top frames over the first `seconds` of a build of `images` images
    (the annotation pass, after the quick survey of the JPEGs), into a folder thrown away."""
    src = common.release(images, JPEG)
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="profile-") as tmp:
        common.drop_caches()
        with subprocess.Popen([*common.VGFS, "build", str(src), "-o", f"{tmp}/out", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            try:
                return common.process_profile(
                    proc.pid, functools.partial(_wait, proc, seconds), f"vgfs build of"
                    f" {images:,} images, its first {seconds:.0f} s")
            finally:
                proc.kill()


def _wait(proc: subprocess.Popen, seconds: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


def report(results: list[dict]) -> tuple[str, list[list], Figure]:
    phase_rows, rows, targets = [], [], []
    for r in results:
        for ph in r["phases"]:
            phase_rows.append([r["images"], ph["phase"], float(ph["seconds"]),
                               float(ph["peak_rss_mb"])])
        rows.append([r["images"], r["wall_s"], r["build_process_mib"], r["mksquashfs_mib"],
                     r["tree_peak_mib"], r["tree_anon_peak_mib"], r["release_mb"],
                     r["frames_mb"], r["lmdb_mb"],
                     f"{(r['frames_mb'] + r['lmdb_mb']) / r['release_mb']:.3f}", r["sqfs_mb"]])
    full = next((r for r in results if r["images"] == FULL_SIZES[-1]), None)
    if full:
        ann = next(ph["seconds"] for ph in full["phases"] if ph["phase"] == "annotations")
        targets.append([f"annotations phase at {full['images']:,} images ≤"
                        f" {ANNOTATIONS_TARGET:.0f} s", f"{ann:.0f} s",
                        common.verdict(ann <= ANNOTATIONS_TARGET)])
        # The query views are indexed inside the annotation pass; the build times that share.
        views = next((ph for ph in full["phases"] if ph["phase"] == "query views"), None)
        if views is not None:
            added = views["seconds"] + views.get("indexing_during_annotations_s", 0)
            share = added / (ann - views.get("indexing_during_annotations_s", 0))
            targets.append([f"query views add ≤ {VIEWS_TARGET:.0%} to the annotation phase",
                            f"{share:.1%} ({added:.1f} s)",
                            common.verdict(share <= VIEWS_TARGET)])
    for r in results:
        targets.append([f"peak RSS of the whole build at {r['images']:,} images ≤"
                        f" {RSS_TARGET:,.0f} MiB", f"{r['tree_peak_mib']:,.0f} MiB",
                        common.verdict(r["tree_peak_mib"] <= RSS_TARGET)])
    small, large = results[0], results[-1]
    growth = large["build_process_mib"] / small["build_process_mib"]
    targets.append([f"peak RSS of the build process alike: {large['images']:,} over"
                    f" {small['images']:,} images ≤ {ALIKE_TARGET}×", f"{growth:.2f}×",
                    common.verdict(growth <= ALIKE_TARGET)])
    md = "\n\n".join([
        f"`vgfs build` of synthetic releases (`vgfs sample --jpeg {JPEG}`), page cache dropped"
        " before each build. Per phase, from the manifest: seconds and the Python process's"
        " peak RSS by the phase's end.",
        common.table(["images", "phase", "seconds", "peak RSS MiB"], phase_rows),
        "Whole build: the peak RSS of the build process (vgfs, from its manifest) and of"
        " mksquashfs (its VmHWM), and the whole process tree's summed RSS, sampled every 50 ms,"
        " which is what the machine must have. vgfs streams every input, so its"
        " peak is flat; mksquashfs keeps its whole directory tree in memory, about 0.5 KB a"
        " file, so its peak grows with the number of JPEGs and the tree's with it. The"
        " annotations as stored: annotations.zst (the release's files in zstd frames) and the"
        " LMDB of indexes, over the release's annotation bytes.",
        common.table(["images", "wall s", "vgfs build MiB", "mksquashfs MiB", "tree peak MiB",
                      "tree peak anon MiB", "release annotations MB", "annotations.zst MB",
                      "LMDB MB", "stored / release", "images.sqfs MB"], rows),
    ])
    return md, targets, _plot(results)


def _plot(results: list[dict]) -> Figure:
    fig, (left, right) = common.subplots(1, 2, figsize=(11, 3.5))
    labels = [f"{r['images']:,}" for r in results]
    phases = [ph["phase"] for ph in results[0]["phases"]]
    base = [0.0] * len(results)
    for i, name in enumerate(phases):
        secs = [next(ph["seconds"] for ph in r["phases"] if ph["phase"] == name)
                for r in results]
        left.barh(labels, secs, left=base, label=name, color=f"C{i}")
        base = [b + s for b, s in zip(base, secs, strict=True)]
    left.axvline(ANNOTATIONS_TARGET, color="k", ls="--", lw=1, label="annotations target")
    left.set_xlabel("seconds")
    left.set_ylabel("images")
    left.set_title("Build time by phase")
    left.legend(fontsize=8)
    width = 0.35
    xs = range(len(results))
    right.bar([x - width / 2 for x in xs], [r["build_process_mib"] for r in results], width,
              label="vgfs process")
    right.bar([x + width / 2 for x in xs], [r["tree_peak_mib"] for r in results], width,
              label="whole tree (with mksquashfs)")
    right.axhline(RSS_TARGET, color="k", ls="--", lw=1, label="target 1.5 GiB")
    right.set_xticks(list(xs), labels)
    right.set_xlabel("images")
    right.set_ylabel("peak RSS MiB")
    right.set_title("Build peak RSS")
    right.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "build", __doc__, argv, f"build {QUICK_SIZES[0]:,} and {QUICK_SIZES[1]:,} images"
        f" instead of {FULL_SIZES[0]:,} and {FULL_SIZES[1]:,}", "to drop the page cache",
        runs=None)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    results = [build_once(n) for n in sizes]
    md, targets, fig = report(results)
    common.write_judged("build", "Build benchmark", md, targets, fig, args.quick, results,
                        common.Profiler("build", "over the first {seconds:.0f} s of one more"
                                        f" build of {sizes[0]:,} images",
                                        functools.partial(profile_build, sizes[0]),
                                        "the build process"))


if __name__ == "__main__":
    main()
