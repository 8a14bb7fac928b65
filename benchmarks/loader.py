"""DataLoader benchmark: a training input pipeline reading its samples through vgfs, against
the same files extracted onto local disk.

Each sample does what a Visual Genome input pipeline does per image: open
`images/<id>/image.jpg`, decode it with Pillow and resize it to 224×224 (as torchvision's
loader and Resize do), and parse `images/<id>/graph.json`. A `torch.utils.data.DataLoader`
with 8 worker processes draws batches of 32 in one random order (fixed seed), the same for both
systems. torch is used where it is installed (a CPU build is enough, some 700 MB, where the
default wheels bring GBs of CUDA libraries); elsewhere a multiprocessing pool of 8 does the
same, a batch per task with the results in order, and the results say which one ran.

Cold: a fresh mount with the caches dropped (the extracted files: the caches dropped); warm: a
second pass. The two systems alternate, the first rotating from run to run. Each pass also
records CPU seconds, of the loader (its workers included) and of the vgfs daemon, because on a
small machine the daemon's CPU is taken from the decoders. Where vgfs misses its target, one
more pass runs with py-spy sampling the daemon, and its top frames go into the results.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import random
import resource
import tempfile
import time
import warnings
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
from PIL import Image

from benchmarks import common
from benchmarks.common import MODES
from vgfs.metrics import read_stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SYSTEMS = ("vgfs", "extracted")
FULL_IMAGES = 20_000  # the real-JPEG dataset
QUICK_IMAGES = 2_000
QUICK_SAMPLES = 1_000
WORKERS = 8
BATCH = 32
SIZE = (224, 224)
TARGET = 0.9  # least ratio of vgfs samples/s to the extracted files'
TOP_FRAMES = 15


def load_sample(root: str, image_id: int) -> tuple[np.ndarray, int]:
    """One sample: the image's pixels, resized, and the number of objects in its scene graph."""
    folder = f"{root}/images/{image_id}"
    with open(f"{folder}/image.jpg", "rb") as f, Image.open(f) as img:
        pixels = np.array(img.convert("RGB").resize(SIZE, Image.Resampling.BILINEAR))
    with open(f"{folder}/graph.json", "rb") as f:
        graph = orjson.loads(f.read())
    return pixels, len(graph["objects"])


class Samples:
    """A map-style dataset, all a DataLoader asks for: the samples of `order`, by position."""

    def __init__(self, root: str, order: list[int]) -> None:
        self.root, self.order = root, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return load_sample(self.root, self.order[i])


def _load_batch(root: str, ids: list[int]) -> tuple[np.ndarray, int]:
    samples = [load_sample(root, i) for i in ids]
    return np.stack([pixels for pixels, _ in samples]), sum(n for _, n in samples)


def engine() -> str:
    return "torch DataLoader" if importlib.util.find_spec("torch") else "multiprocessing pool"


def _batches(root: str, order: list[int]) -> Iterator[tuple[Sized, int]]:
    """(pixels, objects) per batch, in order, from WORKERS processes started here."""
    if importlib.util.find_spec("torch"):
        import torch.utils.data

        # It warns that 8 workers are more than the cores: deliberate, as loaders are set up.
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        loader = torch.utils.data.DataLoader(Samples(root, order), batch_size=BATCH,
                                             num_workers=WORKERS)
        for pixels, objects in loader:
            yield pixels, int(objects.sum())
        return
    chunks = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        yield from pool.imap(functools.partial(_load_batch, root), chunks)
        pool.close()
        pool.join()  # reaped, so that their CPU time is counted


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the loader's workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def load_pass(root: Path, order: list[int], daemon: int | None) -> dict[str, float]:
    """Load every sample of `order` under `root`: seconds, the loader's CPU seconds, the
    daemon's (if any), and the objects counted, which must agree between systems."""
    cpu, daemon_cpu = _cpu(), common.process_cpu(daemon) if daemon else 0.0
    t0 = time.perf_counter()
    samples = objects = 0
    for pixels, count in _batches(str(root), order):
        samples += len(pixels)
        objects += count
    seconds = time.perf_counter() - t0
    if samples != len(order):
        raise RuntimeError(f"{root}: loaded {samples} samples, expected {len(order)}")
    return {"seconds": seconds, "cpu": _cpu() - cpu, "objects": objects,
            "daemon_cpu": common.process_cpu(daemon) - daemon_cpu if daemon else 0.0}


def _pass_on(system: str, dataset: Path, extracted: Path, tmp: Path, passes: int,
             order: list[int]) -> list[dict[str, float]]:
    """`passes` passes on one fresh mount (or the extracted files), the first one cold."""
    if system == "extracted":
        common.drop_caches()
        return [load_pass(extracted, order, None) for _ in range(passes)]
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        pid = read_stats(str(mp))["pid"]
        common.drop_caches()
        return [load_pass(mp, order, pid) for _ in range(passes)]


def bench(dataset: Path, extracted: Path, order: list[int], runs: int, tmp: Path
          ) -> dict[str, list[dict[str, float]]]:
    """Per "mode system": one pass's figures per run, over `runs` interleaved runs."""
    samples: dict[str, list[dict[str, float]]] = {}
    for run in range(runs):
        for system in common.rotated(SYSTEMS, run):
            for mode, figures in zip(MODES, _pass_on(system, dataset, extracted, tmp,
                                                     len(MODES), order), strict=True):
                samples.setdefault(f"{mode} {system}", []).append(figures)
                common.log(f"run {run + 1}/{runs}: {system}, {mode}:"
                           f" {len(order) / figures['seconds']:,.0f} samples/s")
    objects = {f["objects"] for figures in samples.values() for f in figures}
    if len(objects) != 1:
        raise RuntimeError(f"the passes counted different numbers of objects: {objects}")
    return samples


def profile(dataset: Path, order: list[int], mode: str, tmp: Path) -> list[list[object]]:
    """One more vgfs pass in `mode`, with py-spy sampling the daemon while it runs Python: its
    top frames by own samples, each with its share of own and of inclusive samples."""
    out = tmp / "profile.txt"
    with common.mounted("vgfs", dataset, tmp / "vgfs") as mp:
        pid = read_stats(str(mp))["pid"]
        common.drop_caches()
        if mode == "warm":
            load_pass(mp, order, pid)
        # --gil: only samples that run Python, as py-spy takes a thread waiting in trio's epoll
        # or thread cache for a busy one. --nonblocking: pausing the daemon at each sample
        # would slow the very thing measured.
        with common.sampling(pid, out, "--function", "--gil", "--nonblocking", "--rate", "250"):
            load_pass(mp, order, pid)
    return top_frames(out.read_text())


def top_frames(raw: str) -> list[list[object]]:
    """From py-spy's raw output: the frames with the most samples of their own, with their
    shares of own and of inclusive samples, in %."""
    frames = common.spy_frames(raw)
    total = max(1, frames.samples)
    return [[frame, 100 * n / total, 100 * frames.inclusive[frame] / total]
            for frame, n, _ in frames.top(TOP_FRAMES)]


def _paired(samples: dict[str, list[dict[str, float]]], mode: str) -> tuple[float, float, float]:
    """Median, least and greatest of vgfs's samples/s over the extracted files', run by run."""
    return common.ratios([e["seconds"] for e in samples[f"{mode} extracted"]],
                         [v["seconds"] for v in samples[f"{mode} vgfs"]])


def report(samples: dict[str, list[dict[str, float]]], n: int, images: int, jpeg_mb: float,
           runs: int, profiles: dict[str, list[list[object]]]) -> tuple[str, Figure]:
    rows, ratio_rows, targets, ratios = [], [], [], []
    for mode in MODES:
        for system in SYSTEMS:
            figures = samples[f"{mode} {system}"]
            s = common.median([f["seconds"] for f in figures])
            cpu_ms = {k: 1e3 * common.median([f[k] for f in figures]) / n
                      for k in ("cpu", "daemon_cpu")}
            rows.append([mode, system, s, n / s, jpeg_mb / s, cpu_ms["cpu"],
                         cpu_ms["daemon_cpu"] if system == "vgfs" else "–"])
        ratio, low, high = _paired(samples, mode)
        ratios.append(ratio)
        ratio_rows.append([mode, rows[-2][3], rows[-1][3], f"{ratio:.2f} ({low:.2f}–{high:.2f})"])
        targets.append([f"{mode}: vgfs/extracted ≥ {TARGET}", f"{ratio:.2f}×",
                        common.verdict(ratio >= TARGET)])
    parts = [
        "# DataLoader benchmark",
        common.environment(),
        f"A training input pipeline ({engine()}, {WORKERS} worker processes, batches of"
        f" {BATCH}): {n:,} samples of a {images:,}-image synthetic release with real-size JPEGs"
        f" ({jpeg_mb:,.0f} MB), in one random order; each sample reads `image.jpg`, decodes it"
        f" with Pillow and resizes it to {SIZE[0]}×{SIZE[1]}, and parses `graph.json`. vgfs: a"
        " mount of the dataset; extracted: the same files copied onto local disk. Medians of"
        f" {runs} interleaved runs. Cold: fresh mount, caches dropped. Warm: second pass. CPU:"
        " milliseconds per sample, of the loader (its workers included) and of the vgfs daemon.",
        common.table(["mode", "system", "median s", "samples/s", "JPEG MB/s",
                      "loader CPU ms/sample", "vgfs daemon CPU ms/sample"], rows),
        "Throughput ratio, vgfs over the extracted files: the median of the runs' ratios, each"
        " taken within one run (range in brackets):",
        common.table(["mode", "vgfs samples/s", "extracted samples/s", "vgfs/extracted"],
                      ratio_rows),
        "Targets:",
        common.table(["target", "measured", "verdict"], targets),
    ]
    for mode, frames in profiles.items():
        parts += [f"Profile of the vgfs daemon during one more {mode} pass (py-spy, by"
                  " function, samples holding the GIL): the top frames by samples of their own,"
                  " in % of all:",
                  common.table(["frame", "own %", "inclusive %"], frames)]
    return "\n\n".join(parts) + "\n", _plot(rows, ratios)


def _plot(rows: list[list], ratios: list[float]) -> Figure:
    fig, (left, right) = common.subplots(1, 2, figsize=(10, 4))
    xs = range(len(MODES))
    width = 0.38
    for i, system in enumerate(SYSTEMS):
        mine = [r for r in rows if r[1] == system]
        offsets = [x + (i - 0.5) * width for x in xs]
        bars = left.bar(offsets, [r[3] for r in mine], width, label=system, color=f"C{i}")
        if system == "vgfs":
            left.bar_label(bars, [f"{r:.2f}×" for r in ratios])
        right.bar(offsets, [r[5] for r in mine], width, label=f"{system}: loader", color=f"C{i}")
        if system == "vgfs":
            right.bar(offsets, [r[6] for r in mine], width, bottom=[r[5] for r in mine],
                      label="vgfs: daemon", color="C3")
    for ax in (left, right):
        ax.set_xticks(xs, MODES)
        ax.margins(y=0.35)
        ax.legend(loc="upper left", ncols=2, fontsize="small")
    left.set_ylabel("samples/s")
    left.set_title(f"Input pipeline, {WORKERS} workers (vgfs/extracted over its bars)")
    right.set_ylabel("CPU ms per sample")
    right.set_title("Where the CPU goes")
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "loader", __doc__, argv, f"{QUICK_SAMPLES:,} samples of a {QUICK_IMAGES:,}-image"
        f" dataset instead of all {FULL_IMAGES:,} of one: a check in about a minute",
        "mounts and dropping caches")
    images = QUICK_IMAGES if args.quick else FULL_IMAGES
    dataset, extracted = common.dataset(images, "real"), common.extracted(images, "real")
    ids = sorted(int(name) for name in os.listdir(extracted / "images"))
    order = random.Random(common.SEED).sample(ids, QUICK_SAMPLES if args.quick else len(ids))
    jpeg_mb = sum((extracted / "images" / str(i) / "image.jpg").stat().st_size
                  for i in order) / 1e6
    profiles = {}
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        samples = bench(dataset, extracted, order, args.runs, Path(tmp))
        for mode in MODES:
            if _paired(samples, mode)[0] < TARGET:
                common.log(f"vgfs misses the {mode} target: profiling one more pass")
                profiles[mode] = profile(dataset, order, mode, Path(tmp))
    md, fig = report(samples, len(order), images, jpeg_mb, args.runs, profiles)
    raw = {"engine": engine(), "samples": len(order), "jpeg_mb": jpeg_mb, "runs": samples,
           "profiles": profiles}
    common.write_results("loader", md, fig, args.quick, raw)


if __name__ == "__main__":
    main()
