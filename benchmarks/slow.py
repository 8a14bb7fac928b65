"""Slow-storage benchmark: vgfs against the extracted files it replaces, on the same slow storage.

The storage is slowfs (`benchmarks/slowfs.py`), a passthrough that waits 2 ms before every read
and 1 ms before every metadata request (lookup, getattr, open, opendir, readdir), as a networked
filesystem's data and metadata servers do, without serialising them; a second table waits on
reads only. slowfs serves copies in tmpfs, so that its waits are the storage's only ones (the
local disk is shared with other work). Over it, in the same run: vgfs mounting the dataset
folder; the release folder extracted (`common.extracted_release`: `VG_100K/<id>.jpg`, the
driver's `by-id/<id>.json`), read straight from slowfs; squashfuse_ll and the kernel (a loop
device over the FUSE file) mounting its images.sqfs. Workloads over a fixed set of images,
spread evenly over the image: their JPEGs, their scene graphs (vgfs's graph.json against the
driver's by-id file, the per-image scene-graph file a site keeps today), their objects.json
(vgfs only: its scaling) and a stat of each image (vgfs's images/<id> against the extracted
JPEG). 1, 4 and 16 reader processes, cold: fresh mounts (slowfs included), vgfs holding its
indexes in memory, caches dropped. Cells are interleaved, their order rotating from run to run;
ratios are taken run by run.

The pyfuse3 floor, on local disk: slowfs with no delay over the same folder (its `images/<id>/`
is the mount's tree), a trivial pyfuse3 filesystem, against vgfs on the local dataset and the
folder read directly; cold, then warm, 1 and 4 readers, with the daemons' CPU per file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from benchmarks import common, slowfs
from benchmarks.common import MODES
from benchmarks.reads import read_files, read_pass, stat_files
from vgfs.metrics import read_stats
from vgfs.squashfs import SquashFSImage

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Storage(NamedTuple):
    name: str
    delay_ms: float  # before each read
    meta_delay_ms: float  # before each metadata request


STORAGES = (Storage("reads and metadata", 2.0, 1.0), Storage("reads only", 2.0, 0.0))
JUDGED = STORAGES[0]  # the storage the targets are judged on
# Each workload's systems on slow storage; "extracted" reads the release folder extracted.
WORKLOADS = {
    "image.jpg": ("vgfs", "extracted", "squashfuse_ll", "kernel"),
    "graph.json": ("vgfs", "extracted"),
    "objects.json": ("vgfs",),
    "stat": ("vgfs", "extracted"),
}
# Where each workload's file of image {id} is: on the mount (and in the extracted folder's
# images/<id>/, which the floor walks), and in the release folder.
MOUNT_PATHS = {"image.jpg": "images/{id}/image.jpg", "graph.json": "images/{id}/graph.json",
               "objects.json": "images/{id}/objects.json", "stat": "images/{id}"}
RELEASE_PATHS = {"image.jpg": "VG_100K/{id}.jpg", "graph.json": "by-id/{id}.json",
                 "stat": "VG_100K/{id}.jpg"}
PAIRED = {"image.jpg": "image.jpg / VG_100K/<id>.jpg", "graph.json": "graph.json / by-id/<id>.json",
          "objects.json": "objects.json", "stat": "stat images/<id> / VG_100K/<id>.jpg"}
READERS = (1, 4, 16)
FLOOR_SYSTEMS = ("vgfs", "floor", "local")
FLOOR_READERS = (1, 4)
FLOOR_READS = ("image.jpg", "graph.json", "objects.json")  # judged warm
LABELS = {"floor": "pyfuse3 floor", "local": "local files (no FUSE)"}
IMAGES, FILES = 20_000, 2_000  # the real-JPEG dataset, and the images read from it
REDUCED_IMAGES, REDUCED_FILES = 6_000, 600  # --reduced: where the full size takes too long
QUICK_IMAGES, QUICK_FILES = 2_000, 300
WARM_PASSES = 5  # warm passes of each system, taking turns: the median counts
WARM_TRIES = 4  # rounds of them, until one ran with no drop of the caches (by anyone)
# A warm pass reads its files this many times over, and counts per read of them: a pass of
# 600 warm files lasts some 60 ms, where one stall of the machine moved its ratio by a third.
WARM_REPEAT = 10
_PER_READ = ("wall", "machine", "readers", "daemon", "seconds", "bytes")  # what the repeat adds up
# Targets.
LEAD_16 = {"image.jpg": 1.5, "graph.json": 1.5}  # vgfs ÷ extracted with 16 readers
SCALING = 4.0  # vgfs with 16 readers over vgfs with 1, every workload
CORES = os.cpu_count() or 1  # what scaling can reach: these over the cores 1 reader keeps busy
LEAD_1 = 1.0  # vgfs ÷ extracted with 1 reader, every paired workload
FLOOR_CPU = 1.3  # vgfs's daemon CPU per cold file over the floor's, at most
FLOOR_WARM = 0.95  # vgfs's warm files/s over the floor's, at least
PROFILE_RATE = 250  # py-spy samples per second
WARM_PROFILE_SECONDS = 10.0
TOP_FRAMES = 8


def jpeg_subset(dataset: Path, count: int) -> list[tuple[str, int]]:
    """`count` JPEGs (path inside images.sqfs, size) spread evenly over the image, in the order
    of their bytes in it."""
    with SquashFSImage(dataset / "images.sqfs") as image:
        files = sorted((e.start_block, e.path, e.size) for e in image.walk()
                       if e.path.endswith(".jpg"))
    step = len(files) / min(count, len(files))
    return [files[int(i * step)][1:] for i in range(min(count, len(files)))]


def _paths(workload: str, system: str, root: Path, files: list[tuple[str, int]]) -> list[str]:
    """Where `system` shows each image's file of `workload`: images.sqfs's own paths on
    squashfuse_ll and the kernel, the release folder's on the extracted files, the mount's
    tree elsewhere."""
    if system in ("squashfuse_ll", "kernel"):
        return [f"{root}/{path}" for path, _ in files]
    pattern = (RELEASE_PATHS if system == "extracted" else MOUNT_PATHS)[workload]
    return [f"{root}/{pattern.format(id=os.path.basename(path)[:-4])}" for path, _ in files]


def _machine_cpu() -> float:
    """CPU seconds the machine has spent busy since boot: user, system, interrupts."""
    user, nice, system, _, _, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / common.CLOCK_TICKS


def _readers_cpu() -> float:
    """CPU seconds of the reaped children: the reader processes, once a pass has joined them."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Served(NamedTuple):
    """A root to read, the slowfs under it (its counters; None on local disk) and the daemon
    serving it, if any, whose CPU is counted."""

    root: Path
    slow: Path | None
    daemon: int | None


def _clocks(served: Served) -> dict[str, float]:
    clocks = {"wall": time.perf_counter(), "machine": _machine_cpu(), "readers": _readers_cpu(),
              "daemon": common.process_cpu(served.daemon) if served.daemon else 0.0,
              "drops": common.drops()}
    if served.slow is not None:
        st = slowfs.read_stats(served.slow)
        clocks |= {"slowfs": st["cpu_s"], "reads": st["reads"], "meta": st["meta"],
                   "read_s": st["seconds"], "storage_bytes": st["bytes"]}
    return clocks


def measure(served: Served, workload: str, paths: list[str], readers: int,
            expect: int) -> dict[str, float]:
    """One pass of `workload` over `paths`: its seconds, and what it cost (the counters'
    differences over the pass; the window also holds the readers' start and end); and the
    count of page-cache drops (any process's) at its start and end."""
    work: Callable[[list[str]], int] = stat_files if workload == "stat" else read_files
    before = _clocks(served)
    seconds, got = read_pass(paths, readers, work)
    after = _clocks(served)
    if got != expect:
        raise RuntimeError(f"{workload} on {served.root}: got {got:,}, expected {expect:,}")
    out = {k: after[k] - before[k] for k in after}
    out |= {"seconds": seconds, "bytes": got if workload != "stat" else 0,
            "drops_from": before["drops"], "drops_to": after["drops"]}
    if served.slow is not None:
        out["peak_in_flight"] = slowfs.read_stats(served.slow)["peak_in_flight"]
    return out


def expected(folder: Path, files: list[tuple[str, int]]) -> dict[tuple[str, str], int]:
    """What a pass must count, by (workload, system): files for a stat, bytes for reads,
    taken once from the extracted folder, which holds the mount's bytes at both its paths."""
    out = {}
    for workload, systems in WORKLOADS.items():
        for system in {*systems, *FLOOR_SYSTEMS}:
            paths = _paths(workload, system, folder, files)
            out[workload, system] = (len(paths) if workload == "stat" else
                                     sum(size for _, size in files) if workload == "image.jpg"
                                     else sum(os.stat(p).st_size for p in paths))
    return out


# --- slow storage ----------------------------------------------------------------------

SHM = Path("/dev/shm")


@contextmanager
def in_memory(dataset: Path, folder: Path) -> Iterator[tuple[Path, Path]]:
    """Copies of the dataset folder and of the extracted release folder's VG_100K/ and by-id/
    in tmpfs, for slowfs to serve: then the storage's only wait is slowfs's own, not that of
    a local disk that other work on the machine shares. Removed in every case."""
    with tempfile.TemporaryDirectory(dir=SHM, prefix="vgfs-slow-") as tmp:
        copies = Path(tmp) / "dataset", Path(tmp) / "extracted"
        common.log(f"copying the dataset and the extracted files into {tmp}")
        common.run(["cp", "-a", str(dataset), str(copies[0])])
        copies[1].mkdir()
        common.run(["cp", "-a", *(str(folder / name) for name in ("VG_100K", "by-id")),
                    str(copies[1])])
        yield copies


@contextmanager
def _slow(system: str, storage: Storage, dataset: Path, folder: Path, tmp: Path
          ) -> Iterator[Served]:
    """`system` served over a fresh slowfs of `storage`: vgfs (holding its indexes),
    squashfuse_ll and the kernel over the dataset folder, or the extracted release folder."""
    source = folder if system == "extracted" else dataset
    with slowfs.mounted(source, tmp / "slowfs", storage.delay_ms, storage.meta_delay_ms) as slow:
        if system == "extracted":
            yield Served(slow, slow, None)
            return
        with common.mounted(system, slow, tmp / system, held=True) as mp:
            daemon = (read_stats(str(mp))["pid"] if system == "vgfs"
                      else common.serving(mp, system) if system == "squashfuse_ll" else None)
            yield Served(mp, slow, daemon)


def _cells() -> list[tuple[str, str]]:
    return [(workload, system) for workload, systems in WORKLOADS.items() for system in systems]


def bench_slow(dataset: Path, folder: Path, files: list[tuple[str, int]],
               totals: dict[tuple[str, str], int], runs: int,
               tmp: Path) -> dict[str, list[dict[str, float]]]:
    """Every cold pass on slow storage, by "STORAGE|WORKLOAD|READERS|SYSTEM", run by run."""
    samples: dict[str, list[dict[str, float]]] = {}
    cells = _cells()
    for run in range(runs):
        for storage in STORAGES:
            for readers in READERS:
                for k in range(len(cells)):
                    workload, system = cells[(k + run) % len(cells)]
                    with _slow(system, storage, dataset, folder, tmp) as served:
                        paths = _paths(workload, system, served.root, files)
                        common.drop_caches()
                        got = measure(served, workload, paths, readers,
                                      totals[workload, system])
                        if system == "vgfs":  # a fresh mount: its counters are the pass's
                            counters = read_stats(str(served.root))
                            got["vgfs"] = {"ops": counters["ops"],
                                           "backend": counters["backend"]}
                    samples.setdefault(f"{storage.name}|{workload}|{readers}|{system}",
                                       []).append(got)
                    common.log(f"run {run + 1}/{runs}, {storage.name}: {workload}, {system},"
                               f" {readers} reader(s): {len(files) / got['seconds']:,.0f}"
                               " files/s")
    return samples


# --- the floor -------------------------------------------------------------------------

@contextmanager
def _local(system: str, dataset: Path, folder: Path, tmp: Path) -> Iterator[Served]:
    """On local disk: vgfs over the dataset, slowfs with no delay over the extracted folder
    (the floor), or the folder itself."""
    if system == "local":
        yield Served(folder, None, None)
    elif system == "floor":
        with slowfs.mounted(folder, tmp / "slowfs", 0) as mp:
            yield Served(mp, None, slowfs.read_stats(mp)["pid"])
    else:
        with common.mounted("vgfs", dataset, tmp / "vgfs", held=True) as mp:
            yield Served(mp, None, read_stats(str(mp))["pid"])


def bench_floor(dataset: Path, folder: Path, files: list[tuple[str, int]],
                totals: dict[tuple[str, str], int], runs: int,
                tmp: Path) -> dict[str, list[dict[str, float]]]:
    """Passes on local disk by "MODE|WORKLOAD|READERS|SYSTEM", run by run. The systems are
    mounted together: each is read once cold (caches dropped just before), then warm, every
    system again in turn, WARM_PASSES times; its warm figure is its median pass. Interleaved,
    a warm ratio compares passes moments apart, not the machine's load minutes apart."""
    samples: dict[str, list[dict[str, float]]] = {}
    for run in range(runs):
        for readers in FLOOR_READERS:
            for workload in WORKLOADS:
                order = common.rotated(FLOOR_SYSTEMS, run)
                with contextlib.ExitStack() as stack:
                    served = {system: stack.enter_context(_local(system, dataset, folder, tmp))
                              for system in order}
                    passes = {system: (served[system], workload,
                                       _paths(workload, system, served[system].root, files),
                                       readers, totals[workload, system]) for system in order}
                    for system in order:
                        common.drop_caches()
                        samples.setdefault(f"cold|{workload}|{readers}|{system}", []).append(
                            measure(*passes[system]))
                    for system, got in _warm(passes).items():
                        samples.setdefault(f"warm|{workload}|{readers}|{system}",
                                           []).append(got)
                speeds = [f"{system} {mode} {len(files) / last['seconds']:,.0f}"
                          for mode in MODES for system in order
                          for last in samples[f"{mode}|{workload}|{readers}|{system}"][-1:]]
                common.log(f"floor, run {run + 1}/{runs}: {workload}, {readers} reader(s),"
                           f" files/s: {', '.join(speeds)}")
    return samples


def _warm(passes: dict[str, tuple]) -> dict[str, dict[str, float]]:
    """Each system's median warm pass of WARM_PASSES, the systems taking turns, after one pass
    each that fills the caches again. Other processes drop the caches (other benchmarks on
    the machine do): passes that a drop came between are thrown away and the round begins
    again, WARM_TRIES times at most; `clean` says whether the passes kept had none."""
    for tries in range(1, WARM_TRIES + 1):
        since = common.drops()
        for args in passes.values():
            measure(*args)
        got: dict[str, list[dict[str, float]]] = {system: [] for system in passes}
        for _ in range(WARM_PASSES):
            for system, args in passes.items():
                got[system].append(_warm_pass(*args))
        clean = common.drops() == since
        if clean or tries == WARM_TRIES:
            break
    return {system: sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]
            | {"tries": tries, "clean": float(clean)} for system, runs in got.items()}


def _warm_pass(served: Served, workload: str, paths: list[str], readers: int,
               expect: int) -> dict[str, float]:
    """One warm pass: the files read WARM_REPEAT times over, its figures per read of them."""
    got = measure(served, workload, paths * WARM_REPEAT, readers, expect * WARM_REPEAT)
    return got | {k: got[k] / WARM_REPEAT for k in _PER_READ if k in got}


# --- judging ---------------------------------------------------------------------------

def _seconds(samples: dict[str, list[dict[str, float]]], key: str) -> list[float]:
    return [s["seconds"] for s in samples[key]]


def _lead(samples: dict, storage: str, workload: str, readers: int) -> tuple[float, ...]:
    """vgfs's files/s over the extracted files', run by run."""
    key = f"{storage}|{workload}|{readers}"
    return common.ratios(_seconds(samples, f"{key}|extracted"), _seconds(samples, f"{key}|vgfs"))


def _scaling(samples: dict, storage: str, workload: str, system: str) -> tuple[float, ...]:
    """Files/s with the most readers over files/s with 1, run by run."""
    key = f"{storage}|{workload}"
    return common.ratios(_seconds(samples, f"{key}|1|{system}"),
                         _seconds(samples, f"{key}|{READERS[-1]}|{system}"))


def _cpu_ratio(floor: dict, workload: str, readers: int) -> tuple[float, ...]:
    """vgfs's daemon CPU per cold file over the floor's, run by run."""
    key = f"cold|{workload}|{readers}"
    return common.ratios([s["daemon"] for s in floor[f"{key}|vgfs"]],
                         [s["daemon"] for s in floor[f"{key}|floor"]])


def _warm_ratio(floor: dict, workload: str, readers: int) -> tuple[float, ...]:
    key = f"warm|{workload}|{readers}"
    return common.ratios(_seconds(floor, f"{key}|floor"), _seconds(floor, f"{key}|vgfs"))


def _x(ratio: tuple[float, ...]) -> str:
    return f"{ratio[0]:.2f}× ({ratio[1]:.2f}–{ratio[2]:.2f})"


class Missed(NamedTuple):
    """A target vgfs missed, as a profile is taken of it: where (slow storage, or the floor
    cold or warm), which workload, how many readers."""

    where: str
    workload: str
    readers: int


def judge(slow: dict, floor: dict) -> tuple[list[list[object]], list[Missed]]:
    """The targets' rows (target, measured, verdict), and what to profile where vgfs missed."""
    rows: list[list[object]] = []
    missed: list[Missed] = []

    def row(target: str, ratio: tuple[float, ...], ok: bool, miss: Missed,
            note: str = "") -> None:
        rows.append([target, _x(ratio) + note, common.verdict(ok)])
        if not ok and miss not in missed:
            missed.append(miss)

    top = READERS[-1]
    for workload, want in LEAD_16.items():
        r = _lead(slow, JUDGED.name, workload, top)
        row(f"{workload}, {top} readers: vgfs ÷ extracted ≥ {want}×", r, r[0] >= want,
            Missed("slow", workload, top))
    for workload in WORKLOADS:
        r = _scaling(slow, JUDGED.name, workload, "vgfs")
        busy = _cores_busy(slow[f"{JUDGED.name}|{workload}|1|vgfs"])
        row(f"{workload}: vgfs {top} readers ÷ 1 reader ≥ {SCALING:g}×", r, r[0] >= SCALING,
            Missed("slow", workload, top), f"; the cores allow ≤ {CORES / busy:.1f}× (1 reader"
            f" keeps {busy:.2f} of {CORES} busy)")
    for workload, systems in WORKLOADS.items():
        if "extracted" in systems:
            r = _lead(slow, JUDGED.name, workload, 1)
            row(f"{workload}, 1 reader: vgfs ÷ extracted ≥ {LEAD_1}×", r, r[0] >= LEAD_1,
                Missed("slow", workload, 1))
    for workload in WORKLOADS:
        for readers in FLOOR_READERS:
            r = _cpu_ratio(floor, workload, readers)
            row(f"{workload}, cold, {readers} reader(s): vgfs daemon CPU/file ÷ floor's ≤"
                f" {FLOOR_CPU}×", r, r[0] <= FLOOR_CPU, Missed("cold", workload, readers))
    for workload in FLOOR_READS:
        for readers in FLOOR_READERS:
            r = _warm_ratio(floor, workload, readers)
            row(f"{workload}, warm, {readers} reader(s): vgfs ÷ floor ≥ {FLOOR_WARM}×", r,
                r[0] >= FLOOR_WARM, Missed("warm", workload, readers))
    return rows, missed


# --- profiles --------------------------------------------------------------------------

def profile(miss: Missed, local: tuple[Path, Path], memory: tuple[Path, Path],
            files: list[tuple[str, int]], totals: dict[tuple[str, str], int],
            tmp: Path) -> dict[str, object]:
    """One more pass where vgfs missed, its daemon sampled by py-spy, with what the pass cost.

    On slow storage: a cold pass, idle threads included (a thread waiting in a system call is
    where its time goes), non-blocking (a stop waits for every thread to leave the kernel, and
    one waiting on a page of the FUSE-backed dataset may never do so while stopped). On local
    disk: a cold pass, or warm passes for WARM_PROFILE_SECONDS, the busy samples only."""
    out = tmp / "profile.txt"
    flags = (["--rate", str(PROFILE_RATE), "--threads", "--idle", "--nonblocking"]
             if miss.where == "slow" else ["--rate", str(PROFILE_RATE), "--threads"])
    opened = (_slow("vgfs", JUDGED, *memory, tmp) if miss.where == "slow"
              else _local("vgfs", *local, tmp))
    with opened as served:
        paths = _paths(miss.workload, "vgfs", served.root, files)
        expect = totals[miss.workload, "vgfs"]
        if miss.where == "warm":
            measure(served, miss.workload, paths, miss.readers, expect)
        else:
            common.drop_caches()
        passes: list[dict[str, float]] = []
        try:
            with common.sampling(served.daemon, out, *flags):
                deadline = time.perf_counter() + WARM_PROFILE_SECONDS
                while not passes or (miss.where == "warm" and time.perf_counter() < deadline):
                    passes.append(measure(served, miss.workload, paths, miss.readers, expect))
        except common.NoProfile as e:
            return {"error": str(e)}
    cost = {k: sum(p[k] for p in passes) for k, v in passes[0].items()
            if isinstance(v, int | float)}
    return {**miss._asdict(), "cost": cost, "files": len(files) * len(passes),
            **summarize_profile(out.read_text())}


def summarize_profile(raw: str) -> dict[str, object]:
    """py-spy's raw stacks (`thread (TID): NAME;frame;...;frame COUNT`), reduced to the
    most-sampled innermost frames of the main thread (the trio loop) and of the others, and
    the functions most samples were in or below, all threads."""
    def loop(thread: str) -> bool:
        return thread.endswith("MainThread")

    groups = {"loop": common.spy_frames(raw, loop),
              "workers": common.spy_frames(raw, lambda thread: not loop(thread))}
    every = common.spy_frames(raw, by_function=True)
    return {"samples": {group: frames.samples for group, frames in groups.items()},
            "top": {group: [list(row) for row in frames.top(TOP_FRAMES)]
                    for group, frames in groups.items()},
            "inclusive": [list(row) for row in every.top(25, every.inclusive)],
            "stacks": every.stacks.most_common(30)}


# --- the report ------------------------------------------------------------------------

def _median(samples: list[dict[str, float]], field: str) -> float:
    return common.median([s[field] for s in samples])


def _cores_busy(samples: list[dict[str, float]]) -> float:
    """Cores kept busy by the daemon, slowfs and the readers over a pass, median of the runs."""
    return common.median([(s["daemon"] + s.get("slowfs", 0.0) + s["readers"]) / s["wall"]
                          for s in samples])


def _cost_cells(samples: list[dict[str, float]], n: int) -> list[object]:
    """What a pass cost, medians of the runs: CPU ms per file of the daemon, slowfs and the
    readers; cores busy (those three, and the whole machine, others' work included)."""
    def per_file(field: str) -> float:
        return _median(samples, field) / n * 1e3

    ours = _cores_busy(samples)
    return [per_file("daemon"), per_file("slowfs") if "slowfs" in samples[0] else "–",
            per_file("readers"), ours, common.median([s["machine"] / s["wall"]
                                                      for s in samples])]


def _slow_tables(slow: dict, storage: Storage, n: int, runs: int) -> list[str]:
    speed_rows, cost_rows = [], []
    for workload, system in _cells():
        key = f"{storage.name}|{workload}"
        speeds = [n / common.median(_seconds(slow, f"{key}|{r}|{system}")) for r in READERS]
        leads = [_x(_lead(slow, storage.name, workload, r)) if system == "extracted" else "—"
                 for r in READERS]
        speed_rows.append([PAIRED[workload] if system == "vgfs" else workload, system,
                           *speeds, _x(_scaling(slow, storage.name, workload, system)), *leads])
        for r in READERS:
            s = slow[f"{key}|{r}|{system}"]
            cost_rows.append([workload, system, r, n / common.median(_seconds(slow,
                              f"{key}|{r}|{system}")), _median(s, "bytes") / n / 1e3,
                              _median(s, "storage_bytes") / n / 1e3,
                              _median(s, "reads") / n, _median(s, "meta") / n,
                              common.median([x["read_s"] / x["seconds"] for x in s]),
                              max(x["peak_in_flight"] for x in s), *_cost_cells(s, n)])
    delays = (f"{storage.delay_ms:g} ms a read and {storage.meta_delay_ms:g} ms a metadata"
              " request" if storage.meta_delay_ms else f"{storage.delay_ms:g} ms a read,"
              " metadata requests at once")
    return [
        f"**Slow storage, {storage.name}** ({delays}). Files/s, medians of {runs} runs;"
        f" scaling: {READERS[-1]} readers over 1; vgfs ÷ extracted: vgfs's files/s over the"
        " extracted files', shown on the extracted row; each ratio is the median of the"
        " runs' own (range in brackets):",
        common.table(["workload (vgfs / extracted)", "system",
                      *(f"{r} reader{'s' * (r > 1)} files/s" for r in READERS),
                      f"scaling {READERS[-1]}/1",
                      *(f"vgfs ÷ extracted, {r}" for r in READERS)], speed_rows),
        f"What each pass asked of the storage and of the {os.cpu_count()} cores, medians of"
        " the runs, per file: KB read by the readers and from the storage, storage reads and"
        " metadata requests (slowfs's counters), the mean reads in flight (the storage's busy"
        " time over the pass: Little's law) and the most at once (over the runs, since the"
        " mount); CPU ms of the daemon (vgfs, or squashfuse_ll), of slowfs and of the readers;"
        " cores busy of those three, and of the whole machine, other work on it included:",
        common.table(["workload", "system", "readers", "files/s", "KB/file", "storage KB/file",
                      "reads/file", "metadata/file", "mean in flight", "peak in flight",
                      "daemon CPU ms/file", "slowfs CPU ms/file", "readers CPU ms/file",
                      "cores busy", "machine cores busy"], cost_rows),
    ]


def _vgfs_table(slow: dict, storage: Storage, n: int) -> list[str]:
    """vgfs's own counters over its cold passes on `storage`: requests per file and the mean
    time it took to answer them (worker threads and storage included), medians of the runs."""
    rows = []
    for workload in WORKLOADS:
        for r in READERS:
            runs = [x["vgfs"] for x in slow[f"{storage.name}|{workload}|{r}|vgfs"]]

            def op(name: str, field: str, runs: list[dict] = runs) -> float:
                return common.median([x["ops"].get(name, {}).get(field, 0) for x in runs])

            rows.append([workload, r, *(v for name in ("lookup", "open", "read")
                                        for v in (op(name, "count") / n, op(name, "mean_us"))),
                         max(x["ops"].get("read", {}).get("max_us", 0) for x in runs),
                         common.median([x["backend"]["jpeg_reads_threaded"] for x in runs]) / n])
    return [
        f"vgfs's own counters over those passes ({storage.name}; `vgfs stats` of each fresh"
        " mount): requests per file and the mean µs to answer each, a read's worker thread and"
        " storage wait included; the slowest read of the runs; JPEGs fetched by a worker thread"
        " per file. Medians of the runs:",
        common.table(["workload", "readers", "lookups/file", "lookup µs", "opens/file",
                      "open µs", "reads/file", "read µs", "read max µs", "JPEGs threaded/file"],
                     rows),
    ]


def _floor_table(floor: dict, n: int, runs: int) -> list[str]:
    rows = []
    for mode in MODES:
        for workload in WORKLOADS:
            for readers in FLOOR_READERS:
                for system in FLOOR_SYSTEMS:
                    s = floor[f"{mode}|{workload}|{readers}|{system}"]
                    key = f"{mode}|{workload}|{readers}"
                    ratio = ("—" if system == "vgfs" else _x(common.ratios(
                        _seconds(floor, f"{key}|{system}"), _seconds(floor, f"{key}|vgfs"))))
                    cost = _cost_cells(s, n)
                    rows.append([mode, workload, readers, LABELS.get(system, system),
                                 n / common.median(_seconds(floor, f"{key}|{system}")), ratio,
                                 "–" if system == "local" else cost[0], *cost[2:]])
    return [
        f"**The pyfuse3 floor, local disk.** The same {n:,} images' files: vgfs on the local"
        " dataset; the floor, slowfs with no delay over the extracted folder (a pyfuse3 loop"
        " that answers lookups and opens from memory, keep_cache and day-long timeouts,"
        " reads passed through), at the mount's own paths (`images/<id>/...`); the folder"
        " read directly. The three are mounted afresh together for each workload. Cold: each"
        " read once, just after the caches were dropped; warm: then the median of"
        f" {WARM_PASSES} passes each, the systems taking turns, each pass reading the files"
        f" {WARM_REPEAT} times over (counted per read of them). Files/s and costs, medians of"
        f" {runs} runs; vgfs ÷ system run by run:",
        common.table(["mode", "workload", "readers", "system", "files/s", "vgfs ÷ system",
                      "daemon CPU ms/file", "readers CPU ms/file", "cores busy",
                      "machine cores busy"], rows),
    ]


def _drops_note(slow: dict, floor: dict) -> str:
    """How often other processes dropped the caches during the passes."""
    cold = [x for k, v in {**slow, **floor}.items() if not k.startswith("warm|") for x in v]
    warm = [x for k, v in floor.items() if k.startswith("warm|") for x in v]
    hit = sum(x["drops_to"] != x["drops_from"] for x in cold)
    again = sum(x["tries"] > 1 for x in warm)
    never = sum(not x["clean"] for x in warm)
    return (f"Other processes on the machine dropped the caches (`drop_caches`) during {hit} of"
            f" {len(cold)} cold passes, which were kept (the vgfs daemon's indexes stay in its"
            " memory; what was read may have to be read again, for every system alike); warm"
            f" rounds that a drop came between were run again: {again} of {len(warm)} warm"
            f" figures needed that, {never} never got a clean round in {WARM_TRIES}.")


def _profile_section(profiles: list[dict]) -> list[str]:
    if not profiles:
        return []
    parts = ["**Profiles where vgfs missed a target** (py-spy on its daemon; `profile-slow.txt`"
             " beside this file has the functions most samples were in or below). Slow: one"
             f" cold pass on the judged slow storage, {PROFILE_RATE}/s, idle threads included;"
             " cold: one cold pass on local disk; warm: warm passes on local disk for"
             f" {WARM_PROFILE_SECONDS:.0f} s; both busy samples only. Cores busy (daemon,"
             " slowfs and readers) and the daemon's own share of a core say whether the pass"
             " was CPU-bound:"]
    for p in profiles:
        if "error" in p:
            parts.append(f"{p['where']} {p['workload']}: no profile: {p['error']}.")
            continue
        cost, files = p["cost"], p["files"]
        rows = [[group, frame, count, f"{share:.0%}"] for group in ("loop", "workers")
                for frame, count, share in p["top"][group]]
        parts += [
            f"*{p['where']}, {p['workload']}, {p['readers']} reader(s)*: {files:,} files at"
            f" {files / cost['seconds']:,.0f}/s; daemon {cost['daemon'] / files * 1e3:.3f} ms"
            f" CPU/file, {cost['daemon'] / cost['wall']:.2f} of a core; cores busy"
            f" {(cost['daemon'] + cost.get('slowfs', 0) + cost['readers']) / cost['wall']:.2f}"
            f" (machine {cost['machine'] / cost['wall']:.2f}); samples: loop"
            f" {p['samples']['loop']:,}, workers {p['samples']['workers']:,}.",
            common.table(["thread", "innermost frame", "samples", "share"], rows),
        ]
    return parts


def profile_text(profiles: list[dict]) -> str:
    """profile-slow.txt: per profile, the functions most samples were in or below."""
    out = []
    for p in profiles:
        if "error" in p:
            continue
        out.append(f"{p['where']}, {p['workload']}, {p['readers']} reader(s): the functions"
                   " most samples were in or below, all threads\n" + "\n".join(
                       f"{share:6.1%}  {frame}" for frame, _, share in p["inclusive"]))
    return "\n\n".join(out) + "\n"


def report(files: list[tuple[str, int]], images: int, slow: dict, floor: dict,
           targets: list[list[object]], profiles: list[dict], runs: int,
           load: list[float]) -> tuple[str, Figure]:
    n, total = len(files), sum(size for _, size in files)
    size = (f"Reduced size (`--reduced`): {n:,} images of {images:,}, not the full {FILES:,} of"
            f" {IMAGES:,}, which would not fit its time on this machine. "
            if (images, n) == (REDUCED_IMAGES, REDUCED_FILES) else "")
    parts = [
        "# Slow-storage benchmark",
        f"{common.environment()}; load average {load[0]:.1f} at the start, {load[1]:.1f} at"
        " the end: other work shares the cores (machine cores busy, below)",
        f"{size}{n:,} images of a {images:,}-image synthetic release with real-size JPEGs"
        f" ({total / 1e6:,.0f} MB of them), spread evenly over its images.sqfs. The storage"
        " is slowfs, a FUSE passthrough that waits before each request without serialising"
        " them, serving copies in tmpfs (its waits are then the only ones: the local disk is"
        " shared with other work). On it, in the same run: vgfs mounting the dataset folder"
        " (holding its indexes in memory before each pass); the release folder extracted,"
        " read straight from slowfs: every JPEG as `VG_100K/<id>.jpg` in one folder, and"
        " `by-id/<id>.json`, the per-image scene-graph file the official driver writes (what"
        " a site keeps today, copied once from a vgfs mount); squashfuse_ll and the kernel"
        " (loop device over the FUSE file) mounting its images.sqfs. Workloads: each image's"
        " JPEG; its scene graph, vgfs's `images/<id>/graph.json` against the extracted"
        " `by-id/<id>.json` (not the same bytes: the driver's file also holds the"
        " attributes, see KB/file); vgfs's `images/<id>/objects.json` (no extracted"
        " counterpart: vgfs's own scaling); a stat of vgfs's `images/<id>` against a stat of"
        f" the extracted JPEG. 1, 4 and {READERS[-1]} reader processes share the files; every"
        " pass is cold: fresh mounts, slowfs included, caches dropped. The cells alternate,"
        " their order rotating from run to run. The kernel sends a pyfuse3 filesystem the"
        " lookups of one directory one at a time (`benchmarks/README.md`): the extracted"
        " `VG_100K/` and vgfs's `images/` alike.",
    ]
    for storage in STORAGES:
        parts += _slow_tables(slow, storage, n, runs)
    parts += _vgfs_table(slow, JUDGED, n)
    parts += _floor_table(floor, n, runs)
    parts.append(_drops_note(slow, floor))
    parts += [f"Targets (slow storage: {JUDGED.name}):",
              common.table(["target", "measured", "verdict"], targets)]
    parts += _profile_section(profiles)
    return "\n\n".join(parts) + "\n", _plot(slow, floor, n)


def _plot(slow: dict, floor: dict, n: int) -> Figure:
    fig, axes = common.subplots(1, len(STORAGES) + 1, figsize=(16, 4.5))
    for ax, storage in zip(axes, STORAGES, strict=False):
        for workload, system in _cells():
            key = f"{storage.name}|{workload}"
            ax.plot(READERS, [n / common.median(_seconds(slow, f"{key}|{r}|{system}"))
                              for r in READERS],
                    "o-" if system == "vgfs" else "s--", label=f"{workload}, {system}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(READERS, [str(r) for r in READERS])
        ax.set_xlabel("reader processes")
        ax.set_ylabel("files/s, cold (log)")
        ax.set_title(f"Slow storage: {storage.name}")
    axes[0].legend(fontsize=7, ncol=2)
    groups = [(w, r) for w in FLOOR_READS for r in FLOOR_READERS]
    common.bars(axes[-1], [f"{w}\n{r} reader{'s' * (r > 1)}" for w, r in groups],
                [{system: n / common.median(_seconds(floor, f"warm|{w}|{r}|{system}"))
                  for system in FLOOR_SYSTEMS} for w, r in groups], LABELS)
    axes[-1].set_ylabel("files/s, warm (log)")
    axes[-1].set_title("The pyfuse3 floor: local disk, warm")
    axes[-1].legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "slow", __doc__, argv, f"{QUICK_FILES:,} images of a {QUICK_IMAGES:,}-image dataset:"
        " a check in a few minutes", "loop mounts and dropping caches",
        flags={"--reduced": f"{REDUCED_FILES:,} images of a {REDUCED_IMAGES:,}-image dataset,"
                            f" not {FILES:,} of {IMAGES:,}: a third of the time"})
    images, count = ((QUICK_IMAGES, QUICK_FILES) if args.quick else
                     (REDUCED_IMAGES, REDUCED_FILES) if args.reduced else (IMAGES, FILES))
    dataset = common.dataset(images, "real")
    folder = common.extracted_release(images, "real")
    files = jpeg_subset(dataset, count)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp, \
            in_memory(dataset, folder) as memory:
        totals = expected(folder, files)
        slow = bench_slow(*memory, files, totals, args.runs, Path(tmp))
        floor = bench_floor(dataset, folder, files, totals, args.runs, Path(tmp))
        targets, missed = judge(slow, floor)
        profiles = [profile(miss, (dataset, folder), memory, files, totals, Path(tmp))
                    for miss in missed]
    md, fig = report(files, images, slow, floor, targets, profiles, args.runs,
                     [load, os.getloadavg()[0]])
    raw = {"storages": [s._asdict() for s in STORAGES], "files": [p for p, _ in files],
           "bytes": sum(size for _, size in files), "slow": slow, "floor": floor,
           "targets": targets, "profiles": profiles, "load": [load, os.getloadavg()[0]]}
    out = common.write_results("slow", md, fig, args.quick, raw)
    (out / "profile-slow.txt").write_text(profile_text(profiles))


if __name__ == "__main__":
    main()
