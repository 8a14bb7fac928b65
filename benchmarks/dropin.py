"""Drop-in benchmark: the mount in place of the release folder, against the folder itself.

A site deletes its release folder and mounts vgfs there, so what it gives up is measured against
that folder on the same disk: the bytes the annotations take (the stored frames and the LMDB of
indexes, over the release's own bytes), `json.load` of the whole objects.json, and `cat` of
every release file, beside the pyfuse3 floor (slowfs with no delay over the release folder: a
FUSE file's own cost in the kernel). Per-image files are judged by the CPU the daemon spends on
each, beside the floor over the same files extracted onto local disk: what vgfs adds over the
least any pyfuse3 filesystem costs.

Every pass runs on a fresh mount (vgfs, slowfs) or the plain folder; cold: caches dropped, warm:
a second pass at once. The systems alternate, the first rotating from run to run, and every
ratio is taken within one run. The daemon's CPU comes from /proc/PID/stat before and after a
pass (clock ticks: 10 ms).
"""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from benchmarks import common, slowfs
from benchmarks.common import MODES
from vgfs.metrics import read_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IMAGES, QUICK_IMAGES = 20_000, 2_000  # the real-JPEG dataset the other benchmarks read
EXCERPT = Path(__file__).resolve().parent.parent.parent / "shared" / "vg-sample" / "release"
WHOLE = ("vgfs", "local")  # release files: the mount, and the release folder itself
# cat of the release files also through slowfs with no delay over the release folder: what a
# FUSE file costs the kernel, whose page cache alone serves it warm.
CATS = ("vgfs", "floor", "local")
PER_IMAGE = ("vgfs", "floor", "local")  # per-image files: floor = slowfs over the extracted
LABELS = {"vgfs": "vgfs", "local": "local disk", "floor": "pyfuse3 floor (slowfs)"}
KINDS = ("graph", "objects")
SAMPLE = 1_000  # random images whose per-image files are read
JSON_FILE = "objects.json"
STORED_TARGET = 0.25  # stored annotation bytes over the release's
OLD_STORED = 1.26  # the previous format's ratio, for the table
JSON_TARGET = 1.2  # json.load from the mount over from local disk, seconds
CAT_TARGET = 0.5  # cat from the mount over from local disk, MB/s
LARGE = 1_000_000  # smaller files' MB/s is a cat's start-up, not a transfer: not judged alone
JSON_LOAD = """
import json, sys, time
t0 = time.perf_counter()
with open(sys.argv[1]) as f:
    json.load(f)
print(time.perf_counter() - t0, file=sys.stderr)
"""


# --- storage -------------------------------------------------------------------------------

def stored(dataset: Path) -> dict[str, float]:
    """What the annotations take in `dataset`, against the release files it carries."""
    manifest = orjson.loads((dataset / "manifest.json").read_bytes())
    release = sum(s["size"] for s in manifest["sources"].values())
    if release != manifest["annotations"]["release_bytes"]:
        raise RuntimeError(f"{dataset}: the manifest's sources disagree with its release bytes")
    frames = (dataset / "annotations.zst").stat().st_size
    lmdb = (dataset / "annotations.lmdb" / "data.mdb").stat().st_size
    return {"files": len(manifest["sources"]), "release": release, "frames": frames,
            "lmdb": lmdb, "ratio": (frames + lmdb) / release}


def excerpt_stored(tmp: Path) -> dict[str, float]:
    """`stored` of the real excerpt, built afresh: it is small, and no cache key covers it."""
    out = tmp / "excerpt"
    common.run([*common.VGFS, "build", str(EXCERPT), "-o", str(out), "--quiet"])
    return stored(out)


# --- passes --------------------------------------------------------------------------------

@contextmanager
def _opened(system: str, dataset: Path, folder: Path, tmp: Path
            ) -> Iterator[tuple[Path, int | None]]:
    """Where `system` serves the files, and the pid of the process that serves them (None for
    the plain folder): a fresh vgfs mount of `dataset`, or slowfs with no delay over
    `folder`, or `folder` itself."""
    if system == "vgfs":
        with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
            yield mp, read_stats(str(mp))["pid"]
    elif system == "floor":
        with slowfs.mounted(folder, tmp / "slowfs", 0) as mp:
            yield mp, slowfs.read_stats(mp)["pid"]
    else:
        yield folder, None


def _timed(cmd: list[str], pid: int | None) -> dict[str, float]:
    """Run `cmd`, its output to /dev/null: its wall seconds, or the seconds it wrote to stderr
    if it times itself, and the CPU seconds that process `pid` spent meanwhile."""
    cpu = common.process_cpu(pid) if pid else 0.0
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n"
                           f"{proc.stderr.strip()[-2000:]}")
    return {"seconds": float(proc.stderr) if proc.stderr.strip() else seconds,
            "cpu": common.process_cpu(pid) - cpu if pid else 0.0}


def _passes(systems: tuple[str, ...], dataset: Path, folder: Path, tmp: Path, run: int,
            commands: dict[str, list[str]], samples: dict[str, list[dict[str, float]]]) -> None:
    """One run of `commands` (key: a command whose paths are relative to the root, as `{}/`)
    on each of `systems`, rotated: cold on a fresh root with the caches dropped, then warm.
    Each figure goes to samples["KEY MODE SYSTEM"]."""
    for system in common.rotated(systems, run):
        with _opened(system, dataset, folder, tmp) as (root, pid):
            common.drop_caches()
            for mode in MODES:
                for key, cmd in commands.items():
                    figures = _timed([arg.replace("{}/", f"{root}/") for arg in cmd], pid)
                    samples.setdefault(f"{key} {mode} {system}", []).append(figures)
        common.log(f"run {run + 1}: {system}: {', '.join(commands)[:60]}")


def bench(dataset: Path, release: Path, extracted: Path, files: list[str], ids: list[int],
          runs: int, tmp: Path) -> dict[str, list[dict[str, float]]]:
    """Seconds and serving CPU per "TASK MODE SYSTEM", one record per run."""
    samples: dict[str, list[dict[str, float]]] = {}
    json_load = {"json.load": [sys.executable, "-c", JSON_LOAD, f"{{}}/{JSON_FILE}"]}
    cats = {f"cat {name}": ["cat", f"{{}}/{name}"] for name in files}
    per_image = {f"per-image {kind}": ["cat", *(f"{{}}/images/{i}/{kind}.json" for i in ids)]
                 for kind in KINDS}
    for run in range(runs):
        _passes(WHOLE, dataset, release, tmp, run, json_load, samples)
        _passes(CATS, dataset, release, tmp, run, cats, samples)
        for key, cmd in per_image.items():
            _passes(PER_IMAGE, dataset, extracted, tmp, run, {key: cmd}, samples)
    return samples


def profile_cat(dataset: Path, files: list[str], tmp: Path, seconds: float) -> str:
    """The daemon's top frames over `seconds` of cat passes of every release file, the page
    cache dropped before each (the release is larger than the daemon's cache, so passes in
    order miss it too)."""
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        cmd = ["cat", *(str(mp / name) for name in files)]

        def passes() -> None:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                common.drop_caches()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)

        return common.daemon_profile(mp, passes)


# --- report --------------------------------------------------------------------------------

def _med(samples: dict[str, list[dict[str, float]]], key: str, field: str = "seconds") -> float:
    return common.median([r[field] for r in samples[key]])


def _total(samples: dict[str, list[dict[str, float]]], files: list[str], mode: str,
           system: str) -> list[dict[str, float]]:
    """Per run, the cat passes of every release file added up."""
    runs = zip(*(samples[f"cat {name} {mode} {system}"] for name in files), strict=True)
    return [{k: sum(r[k] for r in run) for k in ("seconds", "cpu")} for run in runs]


def report_storage(sets: list[tuple[str, dict[str, float]]]) -> tuple[str, list[list]]:
    rows = [[label, s["files"], s["release"] / 1e6, s["frames"] / 1e6, s["lmdb"] / 1e6,
             f"{s['ratio']:.3f}"] for label, s in sets]
    targets = [[f"annotations stored over the release's bytes, {label} ≤ {STORED_TARGET}"
                f" (the old format: {OLD_STORED})", f"{s['ratio']:.3f}",
                common.verdict(round(s["ratio"], 3) <= STORED_TARGET)] for label, s in sets]
    md = "\n\n".join([
        "What the annotations take: the dataset's annotations.zst (every release file, in zstd"
        " frames) and annotations.lmdb/data.mdb (the indexes, the query views' postings), over"
        " the bytes of the release files it carries (the manifest's sources):",
        common.table(["data", "release files", "release MB", "annotations.zst MB",
                      "data.mdb MB", "stored / release"], rows)])
    return md, targets


def _cat_row(mode: str, label: str, size: int, runs_of: dict[str, list[dict[str, float]]],
             runs: int) -> tuple[list[object], float]:
    """A row of the cat table, from each system's records of one file (or all), and the
    median of the mount's MB/s over local disk's, run by run."""
    ratio, over_floor = (common.ratios(*([r["seconds"] for r in runs_of[s]] for s in (anchor,
                                                                                     "vgfs")))
                         for anchor in ("local", "floor"))
    speed = {s: size / 1e6 / common.median([r["seconds"] for r in runs_of[s]]) for s in CATS}
    cpu = common.median([r["cpu"] for r in runs_of["vgfs"]])
    return [mode, label, size / 1e6, speed["vgfs"], speed["floor"], speed["local"],
            common.ratio_cell(ratio, runs), common.ratio_cell(over_floor, runs), 1e3 * cpu,
            1e3 * cpu / (size / 1e6)], ratio[0]


def report_whole(samples: dict[str, list[dict[str, float]]], files: list[str],
                 sizes: dict[str, int], runs: int) -> tuple[str, list[list]]:
    json_rows, cat_rows, targets = [], [], []
    mb = sizes[JSON_FILE] / 1e6
    for mode in MODES:
        key = f"json.load {mode}"
        ratio = common.ratios(*([r["seconds"] for r in samples[f"{key} {s}"]] for s in WHOLE))
        for system in WHOLE:
            s = _med(samples, f"{key} {system}")
            vgfs = system == "vgfs"
            json_rows.append([mode, LABELS[system], s, mb / s,
                              1e3 * _med(samples, f"{key} {system}", "cpu") if vgfs else "–",
                              common.ratio_cell(ratio if vgfs else None, runs)])
        targets.append([f"json.load of {JSON_FILE}, {mode}: mount's seconds over local disk's"
                        f" ≤ {JSON_TARGET}", f"{ratio[0]:.2f}×",
                        common.verdict(round(ratio[0], 2) <= JSON_TARGET)])
    for mode in MODES:
        each = {}
        for name in files:
            row, each[name] = _cat_row(mode, name, sizes[name], {
                s: samples[f"cat {name} {mode} {s}"] for s in CATS}, runs)
            cat_rows.append(row)
        row, whole = _cat_row(mode, "all files", sum(sizes[name] for name in files), {
            s: _total(samples, files, mode, s) for s in CATS}, runs)
        cat_rows.append(row)
        large = [name for name in files if sizes[name] >= LARGE]
        least = min(large, key=each.__getitem__)
        targets += [[f"cat of each release file of {LARGE / 1e6:g} MB or more, {mode}: mount's"
                     f" MB/s over local disk's ≥ {CAT_TARGET}",
                     f"{each[least]:.2f}× (least: {least})",
                     common.verdict(round(each[least], 2) >= CAT_TARGET)],
                    [f"cat of all release files, {mode}: mount's MB/s over local disk's ≥"
                     f" {CAT_TARGET}", f"{whole:.2f}×",
                     common.verdict(round(whole, 2) >= CAT_TARGET)]]
    md = "\n\n".join([
        f"`json.load` of the whole {JSON_FILE} ({mb:,.1f} MB) in a fresh Python process, timed"
        " inside it (open, read, parse), from the mount and from the release folder on local"
        " disk; the daemon's CPU over the load beside it. mount ÷ local: the mount's seconds"
        " over local disk's, run by run (range in brackets):",
        common.table(["mode", "from", "median s", "MB/s", "vgfs daemon CPU ms",
                      "mount ÷ local"], json_rows),
        "`cat FILE >/dev/null` of each release file, one process each, the files one after"
        " another (cold: the first pass on a fresh mount, caches dropped), wall time with cat's"
        " start, which is all a small file's MB/s says (each file of under"
        f" {LARGE / 1e6:g} MB is judged only in the sum of all); the pyfuse3 floor: slowfs with"
        " no delay over the release folder, what any FUSE file costs (warm, the kernel's page"
        " cache serves both it and the mount, and neither daemon sees a request); mount ÷ local"
        " and mount ÷ floor: the mount's MB/s over theirs, run by run; the daemon's CPU per"
        " file (in 10 ms ticks, so 0 for a small file) and per MB:",
        common.table(["mode", "file", "MB", "mount MB/s", "floor MB/s", "local MB/s",
                      "mount ÷ local", "mount ÷ floor", "vgfs daemon CPU ms",
                      "vgfs daemon CPU ms/MB"], cat_rows)])
    return md, targets


def report_per_image(samples: dict[str, list[dict[str, float]]], n: int,
                     graph_from: str) -> tuple[str, dict[str, float]]:
    rows, floor_free = [], {}
    for kind in KINDS:
        for mode in MODES:
            key = f"per-image {kind} {mode}"
            cpu = {s: 1e6 * _med(samples, f"{key} {s}", "cpu") / n for s in PER_IMAGE}
            free = common.median([1e6 * (v["cpu"] - f["cpu"]) / n for v, f in zip(
                samples[f"{key} vgfs"], samples[f"{key} floor"], strict=True)])
            floor_free[f"{kind} {mode}"] = free
            for system in PER_IMAGE:
                rows.append([f"{kind}.json", mode, LABELS[system],
                             n / _med(samples, f"{key} {system}"),
                             cpu[system] if system != "local" else "–",
                             free if system == "vgfs" else "—"])
    md = "\n\n".join([
        f"Per-image files: one `cat` of `images/<id>/KIND.json` of {n:,} random images (fixed"
        " seed), from a fresh vgfs mount, from slowfs with no delay over the same files"
        " extracted onto local disk (the pyfuse3 floor: lookups, opens and reads passed"
        " through, the least a pyfuse3 filesystem costs), and from those files directly. The"
        " CPU per file of the process serving them (/proc/PID/stat around the cat); the floor-"
        "free figure is vgfs's less the floor's, run by run: what vgfs itself adds to a file."
        f" graph.json here is {graph_from}.",
        common.table(["file", "mode", "from", "files/s", "serving CPU µs/file",
                      "vgfs less the floor, µs/file"], rows)])
    return md, floor_free


def _plot(samples: dict[str, list[dict[str, float]]], files: list[str], sizes: dict[str, int],
          n: int) -> Figure:
    fig, axes = common.subplots(1, 3, figsize=(15, 4))
    total = sum(sizes[name] for name in files) / 1e6
    loads = [{LABELS[s]: _med(samples, f"json.load {mode} {s}") for s in WHOLE} for mode in MODES]
    common.bars(axes[0], list(MODES), loads)
    axes[0].set_yscale("linear")  # the two are close: a log scale would make them look apart
    axes[0].set_ylim(0, 1.25 * max(v for load in loads for v in load.values()))
    axes[0].set_ylabel("seconds")
    axes[0].set_title(f"json.load of {JSON_FILE}")
    common.bars(axes[1], list(MODES), [
        {LABELS[s]: total / common.median([r["seconds"] for r in _total(samples, files, mode, s)])
         for s in CATS} for mode in MODES])
    axes[1].set_ylabel("MB/s (log)")
    axes[1].set_title("cat of every release file")
    groups = [f"{kind}.json\n{mode}" for kind in KINDS for mode in MODES]
    common.bars(axes[2], groups, [
        {LABELS[s]: 1e6 * _med(samples, f"per-image {kind} {mode} {s}", "cpu") / n
         for s in ("vgfs", "floor")} for kind in KINDS for mode in MODES])
    axes[2].set_ylabel("serving CPU µs per file (log)")
    axes[2].set_title(f"Per-image files ({n:,} random images)")
    for ax, where in zip(axes, ("upper center", "upper left", "upper right"), strict=True):
        ax.legend(fontsize="small", loc=where, ncols=2)
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "dropin", __doc__, argv, f"the {QUICK_IMAGES:,}-image dataset instead of the"
        f" {IMAGES:,}-image one, one run: a check in a minute or two",
        "mounts and dropping caches", quick_runs=1)
    images = QUICK_IMAGES if args.quick else IMAGES
    dataset, release = common.dataset(images, "real"), common.release(images, "real")
    extracted = common.extracted(images, "real")
    manifest = orjson.loads((dataset / "manifest.json").read_bytes())
    sizes = {name: s["size"] for name, s in manifest["sources"].items()}
    files = sorted(sizes)
    graph = manifest["kinds"]["graph"]
    graph_from = (f"the range of {graph['source']}" if graph.get("version") != "composed"
                  else f"composed ({graph['source']})")
    ids = sorted(int(name) for name in os.listdir(extracted / "images"))
    ids = random.Random(common.SEED).sample(ids, min(SAMPLE, len(ids)))
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        sets = [("real excerpt (vg-sample, built afresh)", excerpt_stored(Path(tmp))),
                (f"{images:,}-image synthetic (`--jpeg real`)", stored(dataset))]
        samples = bench(dataset, release, extracted, files, ids, args.runs, Path(tmp))
        storage_md, storage_targets = report_storage(sets)
        whole_md, whole_targets = report_whole(samples, files, sizes, args.runs)
        per_image_md, floor_free = report_per_image(samples, len(ids), graph_from)
        summary = ("Daemon CPU per cold per-image file, less the pyfuse3 floor: " + ", ".join(
            f"{kind}.json {floor_free[f'{kind} cold']:,.0f} µs" for kind in KINDS) + ".")
        md = "\n\n".join([
            f"The mount in place of the release folder: a {images:,}-image synthetic release"
            f" with real-size JPEGs, its dataset, and that release folder on the same local"
            f" disk. Medians of {args.runs} run(s), the systems interleaved; cold: a fresh mount"
            " (or the folder), caches dropped; warm: a second pass at once.",
            storage_md, whole_md, per_image_md, summary])
        raw = {"images": images, "stored": dict(sets), "sizes": sizes, "ids": ids,
               "samples": samples, "floor_free_us": floor_free}
        common.write_judged(
            "dropin", "Drop-in benchmark: the mount in place of the release folder", md,
            storage_targets + whole_targets, _plot(samples, files, sizes, len(ids)), args.quick,
            raw, common.Profiler("dropin", "during cold cat passes of every release file"
                                 " ({seconds:.0f} s)",
                                 functools.partial(profile_cat, dataset, files, Path(tmp))))


if __name__ == "__main__":
    main()
