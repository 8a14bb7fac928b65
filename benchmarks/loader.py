"""DataLoader benchmark: a training input pipeline reading its samples through vgfs, against
the same files extracted onto local disk.

Each sample does what a Visual Genome input pipeline does per image: open
`images/<id>/image.jpg`, decode it with Pillow and resize it to 224×224 (as torchvision's
loader and Resize do), and parse `images/<id>/graph.json`. Four systems: a vgfs mount; the
dataset folder read without a mount by `vgfs.torch.VisualGenome` (the JPEG's bytes and
graph.json, decoded and parsed the same way); the extracted files; and the pyfuse3 floor over
them (slowfs with no delay: the least any pyfuse3 filesystem costs these reads). A
`torch.utils.data.DataLoader` with 8 worker processes draws batches of 32 in one random order
(fixed seed), the same for every system. torch is used where it is installed (a CPU build is
enough, some 700 MB, where the default wheels bring GBs of CUDA libraries); elsewhere a
multiprocessing pool of 8 does the same, a batch per task with the results in order, and the
results say which one ran.

Cold: a fresh mount with the caches dropped (the others: the caches dropped); warm: a second
pass. The systems alternate, the first rotating from run to run. Each pass also records CPU
seconds, of the loader (its workers included) and of the daemon (vgfs's, the floor's), because
on a small machine the daemon's CPU is taken from the decoders. Where vgfs misses its target,
one more pass runs with py-spy sampling the daemon, and its top frames go into the results.
"""

from __future__ import annotations

import importlib.util
import io
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

from benchmarks import common, slowfs
from benchmarks.common import MODES
from vgfs.metrics import read_stats
from vgfs.torch import VisualGenome

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SYSTEMS = ("vgfs", "vgfs.torch", "extracted", "floor")
DAEMONS = ("vgfs", "floor")  # the systems with a FUSE daemon
FULL_IMAGES = 20_000  # the real-JPEG dataset
QUICK_IMAGES = 2_000
QUICK_SAMPLES = 1_000
WORKERS = 8
BATCH = 32
SIZE = (224, 224)
TARGET = 0.9  # least ratio of vgfs samples/s to the extracted files'
TORCH_TARGET = 1.0  # vgfs.torch over the mount: "as fast as the mount"
TOP_FRAMES = 15


def _pixels(jpeg: io.BufferedIOBase | io.BytesIO) -> np.ndarray:
    with Image.open(jpeg) as img:
        return np.array(img.convert("RGB").resize(SIZE, Image.Resampling.BILINEAR))


def load_sample(root: str, image_id: int) -> tuple[np.ndarray, int]:
    """One sample: the image's pixels, resized, and the number of objects in its scene graph."""
    folder = f"{root}/images/{image_id}"
    with open(f"{folder}/image.jpg", "rb") as f:
        pixels = _pixels(f)
    with open(f"{folder}/graph.json", "rb") as f:
        graph = orjson.loads(f.read())
    return pixels, len(graph["objects"])


class Samples:
    """A map-style dataset, all a DataLoader asks for: the samples of `order`, by position,
    from a folder of files (a mount or the extracted files)."""

    def __init__(self, root: str, order: list[int]) -> None:
        self.root, self.order = root, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return load_sample(self.root, self.order[i])


class TorchSamples(Samples):
    """The same samples from a dataset folder through vgfs.torch, without a mount: each worker
    opens the dataset once."""

    def __init__(self, root: str, order: list[int]) -> None:
        super().__init__(root, order)
        self.vg = VisualGenome(root, files=("graph",), image="bytes", ids=order)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        sample = self.vg[i]
        return _pixels(io.BytesIO(sample["image"])), len(sample["graph"]["objects"])


_worker_samples: Samples | None = None  # the pool's: set once in each worker


def _set_samples(samples: Samples) -> None:
    global _worker_samples
    _worker_samples = samples


def _load_batch(positions: range) -> tuple[np.ndarray, int]:
    assert _worker_samples is not None
    samples = [_worker_samples[i] for i in positions]
    return np.stack([pixels for pixels, _ in samples]), sum(n for _, n in samples)


def engine() -> str:
    return "torch DataLoader" if importlib.util.find_spec("torch") else "multiprocessing pool"


def _batches(samples: Samples) -> Iterator[tuple[Sized, int]]:
    """(pixels, objects) per batch, in order, from WORKERS processes started here."""
    if importlib.util.find_spec("torch"):
        import torch.utils.data

        # It warns that 8 workers are more than the cores: deliberate, as loaders are set up.
        warnings.filterwarnings("ignore", "This DataLoader will create", UserWarning)
        loader = torch.utils.data.DataLoader(samples, batch_size=BATCH, num_workers=WORKERS)
        for pixels, objects in loader:
            yield pixels, int(objects.sum())
        return
    chunks = [range(i, min(i + BATCH, len(samples))) for i in range(0, len(samples), BATCH)]
    with multiprocessing.get_context("fork").Pool(WORKERS, _set_samples, (samples,)) as pool:
        yield from pool.imap(_load_batch, chunks)
        pool.close()
        pool.join()  # reaped, so that their CPU time is counted


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the loader's workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def load_pass(samples: Samples, daemon: int | None) -> dict[str, float]:
    """Load every sample: seconds, the loader's CPU seconds, the daemon's (if any), and the
    objects counted, which must agree between systems."""
    cpu, daemon_cpu = _cpu(), common.process_cpu(daemon) if daemon else 0.0
    t0 = time.perf_counter()
    loaded = objects = 0
    for pixels, count in _batches(samples):
        loaded += len(pixels)
        objects += count
    seconds = time.perf_counter() - t0
    if loaded != len(samples):
        raise RuntimeError(f"{samples.root}: loaded {loaded} samples, expected {len(samples)}")
    return {"seconds": seconds, "cpu": _cpu() - cpu, "objects": objects,
            "daemon_cpu": common.process_cpu(daemon) - daemon_cpu if daemon else 0.0}


def _pass_on(system: str, dataset: Path, extracted: Path, tmp: Path, passes: int,
             order: list[int]) -> list[dict[str, float]]:
    """`passes` passes on one fresh mount (or the dataset folder, or the extracted files), the
    first one cold."""
    if system not in DAEMONS:
        samples = (TorchSamples(str(dataset), order) if system == "vgfs.torch"
                   else Samples(str(extracted), order))
        common.drop_caches()
        return [load_pass(samples, None) for _ in range(passes)]
    if system == "floor":
        mount, daemon = slowfs.mounted(extracted, tmp / "floor", 0), slowfs.read_stats
    else:
        mount, daemon = common.mounted("vgfs", dataset, tmp / "vgfs"), read_stats
    with mount as mp:
        pid = daemon(mp)["pid"]
        common.drop_caches()
        return [load_pass(Samples(str(mp), order), pid) for _ in range(passes)]


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
        samples = Samples(str(mp), order)
        if mode == "warm":
            load_pass(samples, pid)
        # --gil: only samples that run Python, as py-spy takes a thread waiting in trio's epoll
        # or thread cache for a busy one. --nonblocking: pausing the daemon at each sample
        # would slow the very thing measured.
        with common.sampling(pid, out, "--function", "--gil", "--nonblocking", "--rate", "250"):
            load_pass(samples, pid)
    return top_frames(out.read_text())


def top_frames(raw: str) -> list[list[object]]:
    """From py-spy's raw output: the frames with the most samples of their own, with their
    shares of own and of inclusive samples, in %."""
    frames = common.spy_frames(raw)
    total = max(1, frames.samples)
    return [[frame, 100 * n / total, 100 * frames.inclusive[frame] / total]
            for frame, n, _ in frames.top(TOP_FRAMES)]


def _paired(samples: dict[str, list[dict[str, float]]], mode: str, system: str,
            anchor: str = "extracted") -> tuple[float, float, float]:
    """Median, least and greatest of `system`'s samples/s over `anchor`'s, run by run."""
    return common.ratios([a["seconds"] for a in samples[f"{mode} {anchor}"]],
                         [v["seconds"] for v in samples[f"{mode} {system}"]])


# The ratios reported, each with its target, or None for a reference: (system, anchor, target).
# floor/extracted is the most that any pyfuse3 filesystem reaches here; vgfs/floor, how near
# vgfs comes to it.
RATIOS = (("vgfs", "extracted", TARGET), ("vgfs.torch", "extracted", TARGET),
          ("vgfs.torch", "vgfs", TORCH_TARGET), ("floor", "extracted", None),
          ("vgfs", "floor", None))


def report(samples: dict[str, list[dict[str, float]]], n: int, images: int, jpeg_mb: float,
           runs: int, profiles: dict[str, list[list[object]]]) -> tuple[str, Figure]:
    rows, ratio_rows, targets = [], [], []
    over_extracted: dict[str, list[float]] = {}
    for mode in MODES:
        for system in SYSTEMS:
            figures = samples[f"{mode} {system}"]
            s = common.median([f["seconds"] for f in figures])
            cpu_ms = {k: 1e3 * common.median([f[k] for f in figures]) / n
                      for k in ("cpu", "daemon_cpu")}
            rows.append([mode, system, s, n / s, jpeg_mb / s, cpu_ms["cpu"],
                         cpu_ms["daemon_cpu"] if system in DAEMONS else "–"])
        cells = [mode]
        for system, anchor, target in RATIOS:
            ratio, low, high = _paired(samples, mode, system, anchor)
            if anchor == "extracted":
                over_extracted.setdefault(system, []).append(ratio)
            cells.append(f"{ratio:.2f} ({low:.2f}–{high:.2f})")
            if target is not None:
                targets.append([f"{mode}: {system}/{anchor} ≥ {target}", f"{ratio:.2f}×",
                                common.verdict(ratio >= target)])
        ratio_rows.append(cells)
    parts = [
        "# DataLoader benchmark",
        common.environment(),
        f"A training input pipeline ({engine()}, {WORKERS} worker processes, batches of"
        f" {BATCH}): {n:,} samples of a {images:,}-image synthetic release with real-size JPEGs"
        f" ({jpeg_mb:,.0f} MB), in one random order; each sample reads the image's JPEG,"
        f" decodes it with Pillow and resizes it to {SIZE[0]}×{SIZE[1]}, and parses its"
        " `graph.json`. vgfs: a mount of the dataset; vgfs.torch: `vgfs.torch.VisualGenome` over"
        " the dataset folder, without a mount; extracted: the same files copied onto local"
        " disk; floor: the pyfuse3 floor over those files (slowfs with no delay, a pyfuse3"
        " loop answering lookups and opens from memory, reads passed through: the least any"
        " pyfuse3 filesystem costs a sample). Medians of"
        f" {runs} interleaved runs. Cold: fresh mount, caches dropped. Warm: second pass. CPU:"
        " milliseconds per sample, of the loader (its workers included) and of the daemon.",
        common.table(["mode", "system", "median s", "samples/s", "JPEG MB/s",
                      "loader CPU ms/sample", "daemon CPU ms/sample"], rows),
        "Throughput ratios: the median of the runs' ratios, each taken within one run (range in"
        " brackets):",
        common.table(["mode"] + [f"{system}/{anchor}" for system, anchor, _ in RATIOS],
                     ratio_rows),
        "Targets:",
        common.table(["target", "measured", "verdict"], targets),
    ]
    for mode, frames in profiles.items():
        parts += [f"Profile of the vgfs daemon during one more {mode} pass (py-spy, by"
                  " function, samples holding the GIL): the top frames by samples of their own,"
                  " in % of all:",
                  common.table(["frame", "own %", "inclusive %"], frames)]
    return "\n\n".join(parts) + "\n", _plot(rows, over_extracted)


def _plot(rows: list[list], over_extracted: dict[str, list[float]]) -> Figure:
    fig, (left, right) = common.subplots(1, 2, figsize=(11, 4))
    xs = range(len(MODES))
    width = 0.8 / len(SYSTEMS)
    for i, system in enumerate(SYSTEMS):
        mine = [r for r in rows if r[1] == system]
        offsets = [x + (i - (len(SYSTEMS) - 1) / 2) * width for x in xs]
        bars = left.bar(offsets, [r[3] for r in mine], width, label=system, color=f"C{i}")
        if system in over_extracted:
            left.bar_label(bars, [f"{r:.2f}×" for r in over_extracted[system]])
        right.bar(offsets, [r[5] for r in mine], width, label=f"{system}: loader", color=f"C{i}")
        if system in DAEMONS:
            right.bar(offsets, [r[6] for r in mine], width, bottom=[r[5] for r in mine],
                      label=f"{system}: daemon", color=f"C{len(SYSTEMS) + i}")
    for ax in (left, right):
        ax.set_xticks(xs, MODES)
        ax.margins(y=0.35)
        ax.legend(loc="upper left", ncols=2, fontsize="small")
    left.set_ylabel("samples/s")
    left.set_title(f"Input pipeline, {WORKERS} workers (÷ extracted over the bars)")
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
            if _paired(samples, mode, "vgfs")[0] < TARGET:
                common.log(f"vgfs misses the {mode} target: profiling one more pass")
                profiles[mode] = profile(dataset, order, mode, Path(tmp))
    md, fig = report(samples, len(order), images, jpeg_mb, args.runs, profiles)
    raw = {"engine": engine(), "samples": len(order), "jpeg_mb": jpeg_mb, "runs": samples,
           "profiles": profiles}
    common.write_results("loader", md, fig, args.quick, raw)


if __name__ == "__main__":
    main()
