"""What the benchmarks share: the data cache, mounts that always unmount, figures of processes
(CPU, memory, py-spy profiles), and result files.

Generating and building a full-scale release takes minutes, so releases and datasets are built
once into `benchmarks/.data/` and reused. Each is keyed by (images, jpeg, seed, vgfs version).
The version is the package's plus a digest of the modules that write the data, because the
package version does not change while the format does: a stale dataset would fail to mount or,
worse, measure old code. An entry is only ever renamed into place when complete.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from vgfs import __version__
from vgfs.metrics import read_stats
from vgfs.mount import mounted_fs

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
RESULTS = HERE / "results"
QUICK_RESULTS = DATA / "quick-results"  # --quick never overwrites the committed results
# -P: the frozen copy below, never the working tree in the current directory.
VGFS = [sys.executable, "-P", "-m", "vgfs"]
SEED = 0
CODE = DATA / f"code-{os.getpid()}"  # this run's copy of the vgfs package
SOURCE = CODE / "vgfs"
_frozen: list[str] = []  # the commit the copy was taken at
# What a synthetic release's bytes depend on.
RELEASE_CODE = tuple(f"sample/{name}.py" for name in ("__init__", "vocab", "annotations",
                                                       "jpegs", "writer"))
# What a dataset's bytes depend on: the build package and the modules it imports (tree.py:
# the names the build leaves out; squashfs.py: the JPEG index).
DATASET_CODE = (*RELEASE_CODE, "build", "schema.py", "layout.py", "query.py", "release.py",
                "contents.py", "dataset.py", "compose.py", "frames.py", "stream.py",
                "squashfs.py", "tree.py")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MODES = ("cold", "warm")  # a fresh mount with the caches dropped, then a second pass on it
PROFILE_SECONDS = 20.0  # how long py-spy samples a daemon that misses a target


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its stderr, which says why."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                           f"{proc.stderr.strip()[-2000:]}")
    return proc


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the data cache ----------------------------------------------------------------------

def freeze_vgfs() -> None:
    """Copy the vgfs package now, and run every vgfs command of this run from the copy.

    Others edit the tree while a full run takes half an hour, and each mount imports the code
    afresh: without a copy one run would compare several versions, or mount a dataset with
    code that reads another format."""
    if SOURCE.exists():
        return
    DATA.mkdir(exist_ok=True)
    for old in DATA.glob("code-*"):
        if not Path(f"/proc/{old.name.removeprefix('code-')}").exists():
            shutil.rmtree(old, ignore_errors=True)
    git = ["git", "-C", str(HERE.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    if subprocess.run([*git, "status", "--porcelain", "vgfs"], capture_output=True,
                      text=True).stdout.strip():
        commit += " with uncommitted changes"
    shutil.copytree(HERE.parent / "vgfs", SOURCE, ignore=shutil.ignore_patterns("__pycache__"))
    atexit.register(shutil.rmtree, CODE, ignore_errors=True)
    os.environ["PYTHONPATH"] = str(CODE)
    _frozen.append(commit)


def _version(modules: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in modules:
        path = SOURCE / name  # a module, or a package's modules
        for module in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(module.read_bytes())
    return f"{__version__}-{digest.hexdigest()[:10]}"


def _cached(kind: str, images: int, jpeg: str, seed: int) -> Path:
    """The cache entry's path; entries of the same data for other vgfs versions are removed."""
    freeze_vgfs()
    prefix = f"{kind}-{images}-{jpeg}-seed{seed}-vgfs"
    path = DATA / f"{prefix}{_version(RELEASE_CODE if kind == 'release' else DATASET_CODE)}"
    for old in DATA.glob(f"{prefix}*"):
        if old != path:
            log(f"removing stale {old.name}")
            shutil.rmtree(old)
    return path


def release(images: int, jpeg: str, seed: int = SEED) -> Path:
    """A synthetic release in the official format, generated once."""
    path = _cached("release", images, jpeg, seed)
    if not path.exists():
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"generating a release of {images} images (--jpeg {jpeg}); done once, then cached")
        run([*VGFS, "sample", str(tmp), "--images", str(images), "--jpeg", jpeg,
             "--seed", str(seed), "--quiet"])
        os.rename(tmp, path)
    return path


def dataset_path(images: int, jpeg: str, seed: int = SEED) -> Path:
    return _cached("dataset", images, jpeg, seed)


def dataset(images: int, jpeg: str, seed: int = SEED) -> Path:
    """The dataset folder built from `release(images, jpeg, seed)`, built once."""
    path = dataset_path(images, jpeg, seed)
    if not path.exists():
        src = release(images, jpeg, seed)
        log(f"building the dataset of {images} images; done once, then cached")
        run([*VGFS, "build", str(src), "-o", str(path), "--quiet"])
    return path


def _copied(kind: str, images: int, jpeg: str, seed: int,
            copy: Callable[[Path, Path], None]) -> Path:
    """A cache entry that `copy(mount, folder)` fills from a vgfs mount of the dataset, once,
    so that the mount and the copy serve the same bytes."""
    path = _cached(kind, images, jpeg, seed)
    if not path.exists():
        src = dataset(images, jpeg, seed)
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        log(f"copying {kind} of the {images} images onto local disk; done once, then cached")
        with tempfile.TemporaryDirectory(dir=DATA, prefix="mnt-") as mnt, \
                mounted("vgfs", src, Path(mnt)) as mp:
            copy(mp, tmp)
        os.rename(tmp, path)
    return path


def _cp(*sources: Path, to: Path) -> None:
    run(["cp", "-R", "--preserve=mode,timestamps", *map(str, sources), str(to)])


def extracted(images: int, jpeg: str, seed: int = SEED) -> Path:
    """The anchor "files extracted onto local disk": a folder whose `images/<id>/` holds what
    the vgfs mount of `dataset(images, jpeg, seed)` shows there."""
    return _copied("extracted", images, jpeg, seed, lambda mp, out: _cp(mp / "images", to=out))


EXTRACTED_KINDS = ("graph.json", "objects.json")  # beside image.jpg in extracted_release


def extracted_release(images: int, jpeg: str, seed: int = SEED) -> Path:
    """The anchor "the release folder, extracted", as a site keeps it today: every JPEG as
    `VG_100K/<id>.jpg` (one folder, both parts) and the official driver's per-image files as
    `by-id/<id>.json`, copied from the vgfs mount of `dataset(images, jpeg, seed)`. Beside them
    `images/<id>/` holds what the mount shows there, image.jpg a hard link to the JPEG, so that
    a passthrough of the folder walks the mount's own paths (the pyfuse3 floor)."""
    def copy(mp: Path, out: Path) -> None:
        _cp(mp / "VG_100K", mp / "by-id", to=out)
        for name in os.listdir(out / "VG_100K"):
            image = name.removesuffix(".jpg")
            if not (mp / "images" / image).is_dir():
                continue  # not an annotated image's JPEG
            folder = out / "images" / image
            folder.mkdir(parents=True)
            os.link(out / "VG_100K" / name, folder / "image.jpg")
            for kind in EXTRACTED_KINDS:
                shutil.copy2(mp / "images" / image / kind, folder / kind)

    return _copied("extracted-release", images, jpeg, seed, copy)


def arguments(module: str, doc: str | None, argv: list[str] | None, quick: str, root: str,
              runs: int | None = 3, quick_runs: int | None = None,
              flags: dict[str, str] | None = None) -> argparse.Namespace:
    """The command line every benchmark takes: --quick (`quick` says what it shrinks to) and,
    unless `runs` is None, --runs (default `runs`, or `quick_runs` with --quick); `flags` are
    a benchmark's own switches, with their help. All of them need root (`root` says for
    what); --help does not."""
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick)
    for flag, text in (flags or {}).items():
        p.add_argument(flag, action="store_true", help=text)
    if runs is not None:
        p.add_argument("--runs", type=int, help=f"runs of each (default {runs}"
                       + (f", {quick_runs} with --quick)" if quick_runs else ")"))
    args = p.parse_args(argv)
    if runs is not None and args.runs is None:
        args.runs = quick_runs if args.quick and quick_runs else runs
    if os.geteuid() != 0:
        raise SystemExit(f"the {module} benchmark needs root: {root}")
    return args


def drop_caches() -> None:
    """Empty the page, dentry and inode caches, so that the next read comes from the disk."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def drops() -> int:
    """How often any process has dropped the page cache since boot: a warm pass during which
    this changed was not warm."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == "drop_pagecache":
            return int(value)
    return 0


# --- mounts ------------------------------------------------------------------------------

HELD = "indexes held in memory"  # what vgfs logs once no request needs its LMDB's pages
HOLD_FAILED = "holding the indexes in memory failed"


def wait_logged(log_file: Path, line: str, failed: str, timeout: float = 300) -> None:
    """Wait until `log_file` holds `line`; raise if it holds `failed` or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        if line in text:
            return
        if failed in text or time.monotonic() > deadline:
            raise RuntimeError(f"{log_file}: no {line!r} in {timeout:.0f} s:\n{text[-2000:]}")
        time.sleep(0.05)


@contextmanager
def mounted(system: str, dataset: Path, mountpoint: Path, held: bool = False
            ) -> Iterator[Path]:
    """Mount `dataset` (vgfs) or its images.sqfs (squashfuse_ll, kernel, ratarmount), and
    unmount it in every case. Only a mount made here is ever unmounted. With `held`, vgfs is
    only handed out once it holds its indexes in memory (its log says so, in a file beside
    the mountpoint): from then on it serves as it will for as long as it is mounted.

    ratarmount keeps its index of the image in a file beside the mountpoint, made by the first
    mount of that dataset and reused by the next, as a user's would be (the index is
    ratarmount's counterpart of `vgfs build`)."""
    freeze_vgfs()
    mountpoint.mkdir(parents=True, exist_ok=True)
    if mounted_fs(mountpoint) is not None:
        raise RuntimeError(f"{mountpoint}: something is already mounted there")
    image = str(dataset / "images.sqfs")
    mp = str(mountpoint)
    log_file = mountpoint.parent / f"{mountpoint.name}.log"
    if system == "vgfs":
        cmd, umount = [*VGFS, "mount", str(dataset), mp], [*VGFS, "umount", mp]
        if held:
            log_file.unlink(missing_ok=True)
            cmd += ["--log-file", str(log_file)]
    elif system == "squashfuse_ll":
        cmd, umount = ["squashfuse_ll", image, mp], ["fusermount3", "-u", mp]
    elif system == "kernel":
        cmd, umount = ["mount", "-t", "squashfs", "-o", "loop,ro", image, mp], ["umount", mp]
    elif system == "ratarmount":
        index = mountpoint.parent / f"{mountpoint.name}-{dataset.name}.index.sqlite"
        cmd = [sys.executable, "-m", "ratarmount", "--index-file", str(index), image, mp]
        umount = ["fusermount3", "-u", mp]
    else:
        raise ValueError(system)
    try:
        run(cmd, timeout=120)
        if mounted_fs(mountpoint) is None:
            raise RuntimeError(f"{' '.join(cmd)} returned, but nothing is mounted")
        if held and system == "vgfs":
            wait_logged(log_file, HELD, HOLD_FAILED)
        yield mountpoint
    finally:
        if mounted_fs(mountpoint) is not None:
            proc = subprocess.run(umount, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0 or mounted_fs(mountpoint) is not None:
                log(f"{' '.join(umount)} failed ({proc.stderr.strip()}); detaching lazily")
                lazy = ["umount", "-l", mp] if system == "kernel" else [
                    "fusermount3", "-u", "-z", mp]
                subprocess.run(lazy, check=False)


# --- processes and profiles --------------------------------------------------------------

def serving(mountpoint: Path, program: str) -> int | None:
    """The pid of the `program` process whose command line names `mountpoint` (a FUSE daemon
    such as squashfuse_ll, which says nothing of its pid), or None."""
    want = os.fsencode(mountpoint)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if want in argv and os.path.basename(argv[0]) == os.fsencode(program):
            return int(entry.name)
    return None


def process_cpu(pid: int) -> float:
    """CPU seconds of another process, all its threads (utime and stime in /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status by field; empty once the process has ended."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f)
    except OSError:
        return {}


def kib(status: dict[str, str], field: str) -> int:
    """A size of `proc_status` (VmRSS, VmHWM...) in KiB; 0 where it is absent, as in a zombie."""
    return int(status.get(field, "0 kB").split()[0])


class NoProfile(RuntimeError):
    """py-spy is missing or did not start: a benchmark may go on without its profile."""


def py_spy() -> str:
    """py-spy's path: it is installed into the venv (`.[bench]`), whose bin dir root's PATH
    often lacks."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}"
                       f"{os.environ.get('PATH', '')}")
    if spy is None:
        raise NoProfile("py-spy is not installed: pip install -e '.[bench]'")
    return spy


@contextmanager
def sampling(pid: int, out: str | Path, *flags: str) -> Iterator[None]:
    """py-spy recording the stacks of `pid` into `out` (raw) while the body runs.

    py-spy prints a "Sampling" line once it samples, and what runs before goes unseen: the body
    waits for that line. SIGINT makes py-spy write its samples out and exit."""
    cmd = [py_spy(), "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
           *flags]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            line = proc.stdout.readline() if ready else b"no output in 30 s"
            if b"Sampling" not in line:
                raise NoProfile(f"py-spy did not start ({line.decode(errors='replace').strip()})")
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)  # read to the end: a full pipe would stall py-spy


@dataclass
class Frames:
    """py-spy's samples of some threads, by frame (`function (file:line)`)."""

    own: Counter[str] = field(default_factory=Counter)  # samples it was the innermost frame of
    inclusive: Counter[str] = field(default_factory=Counter)  # samples with it on the stack
    stacks: Counter[str] = field(default_factory=Counter)  # samples by whole stack

    @property
    def samples(self) -> int:
        return sum(self.own.values())

    def top(self, n: int, counter: Counter[str] | None = None) -> list[tuple[str, int, float]]:
        """The `n` most-sampled frames of `counter` (default: `own`): frame, samples, their
        share of all the samples."""
        total = max(1, self.samples)
        counter = self.own if counter is None else counter
        return [(frame, k, k / total) for frame, k in counter.most_common(n)]


def spy_frames(raw: str, thread: Callable[[str], bool] = lambda first: True,
               by_function: bool = False) -> Frames:
    """py-spy's raw output (a stack per line, `frame;...;frame COUNT`; with --threads the first
    frame names the thread), reduced to frames: of the stacks whose first frame `thread` takes.
    `by_function` counts `inclusive` by function, line numbers dropped, so that a function
    counts once in a sample whatever lines of it are on the stack."""
    out = Frames()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not stack or not thread(frames[0]):
            continue
        n = int(count)
        out.own[frames[-1]] += n
        out.stacks[stack] += n
        out.inclusive.update(dict.fromkeys(
            (re.sub(r":\d+\)$", ")", f) if by_function else f for f in frames), n))
    return out


def process_profile(pid: int, workload: Callable[[], None], what: str, note: str = "") -> str:
    """Top frames of process `pid` (`what`, as the text names it) while `workload` runs,
    sampled by py-spy: the lines most samples were in, and the functions most samples were in
    or below; `note` says how to read them."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as raw:
        # --native: the time spent in C (system calls, the copies of replies, zstd) shows, not
        # only the Python frames above it.
        with sampling(pid, raw.name, "--native", "-r", "200"):
            workload()
        frames = spy_frames(raw.read(), by_function=True)
    if not frames.samples:
        raise RuntimeError("py-spy recorded no samples")

    def top(counter: Counter[str]) -> str:
        return "\n".join(f"{share:6.1%}  {frame}" for frame, _, share in frames.top(25, counter))

    return (f"{frames.samples:,} samples of {what} (pid {pid}), py-spy --native at 200 Hz, idle"
            f" threads left out.{note}\n\nTop lines by own samples:\n{top(frames.own)}\n\n"
            f"Top functions by samples in the function or below it:\n{top(frames.inclusive)}\n")


def daemon_profile(mp: Path, workload: Callable[[], None]) -> str:
    """`process_profile` of the vgfs daemon serving `mp`."""
    return process_profile(read_stats(str(mp))["pid"], workload, "the vgfs daemon",
                           " py-spy counts trio's EpollIOManager.get_events as busy: it is the"
                           " event loop waiting for the next request.")


# --- results -----------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def ratios(over: list[float], under: list[float]) -> tuple[float, float, float]:
    """Median, least and greatest of over[i] / under[i]: ratios taken within each run, so that
    a drift of the machine between runs cancels out."""
    each = [o / u for o, u in zip(over, under, strict=True)]
    return median(each), min(each), max(each)


def rotated(systems: tuple[str, ...], run: int) -> tuple[str, ...]:
    """The order of `systems` in run `run`: each run starts with the next one, so that a drift
    of the machine hits each of them alike."""
    k = run % len(systems)
    return systems[k:] + systems[:k]


def vgfs_ratio(samples: dict[str, list[float]], key: str, system: str,
               work: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float, float]:
    """vgfs's throughput over the system's, run by run, from the seconds of `KEY vgfs` and
    `KEY SYSTEM`: median, least, greatest; `work` is (vgfs's, the system's) amount done per run."""
    return ratios([work[0] / s for s in samples[f"{key} vgfs"]],
                  [work[1] / s for s in samples[f"{key} {system}"]])


def ratio_cell(ratio: tuple[float, float, float] | None, runs: int) -> str:
    """A ratio as the tables show it: the median, with the range in brackets if there were
    several runs; none for vgfs itself."""
    if ratio is None:
        return "—"
    med, low, high = ratio
    return f"{med:.2f}" if runs == 1 else f"{med:.2f} ({low:.2f}–{high:.2f})"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _tool_version(package: str) -> str:
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                          capture_output=True, text=True)
    return proc.stdout.strip() or "?"


def environment() -> str:
    """One line that says what ran where, so that results can be compared across runs."""
    freeze_vgfs()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{time.strftime('%Y-%m-%d')}, vgfs {__version__} at {_frozen[0]}; {os.cpu_count()}"
            f" cores, {mem:.0f} GiB RAM, Linux {platform.release()}, Python"
            f" {platform.python_version()}; squashfuse {_tool_version('squashfuse')},"
            f" squashfs-tools {_tool_version('squashfs-tools')}, fuse3 {_tool_version('fuse3')}")


def table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; numbers right-aligned."""
    align = ["---:" if rows and isinstance(rows[0][i], int | float) else "---"
             for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def subplots(*args: Any, **kw: Any) -> tuple[Figure, Any]:
    """plt.subplots, on the Agg backend: the benchmarks run headless, and need matplotlib only
    once they plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kw)


def bars(ax: Axes, groups: list[str], speeds: list[dict[str, float]],
         labels: dict[str, str] | None = None) -> None:
    """One group of bars per entry of `groups`, one bar per system of `speeds` (a dict per
    group, system: value), on a log scale; `labels` names systems otherwise than by key."""
    systems = list(speeds[0])
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(groups))]
        ax.bar(xs, [s[system] for s in speeds], width, label=(labels or {}).get(system, system))
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yscale("log")


def cold_warm_bars(speeds: dict[tuple[str, Any], dict[str, float]], groups: list[Any],
                   labels: list[str], ylabel: str, title: str,
                   target: tuple[Any, float, str] | None = None) -> Figure:
    """`bars` of `speeds[mode, group]`, cold beside warm; `target` (a group, its value, a
    label) is drawn across that group's bars."""
    fig, axes = subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, mode in zip(axes, MODES, strict=True):
        bars(ax, labels, [speeds[mode, g] for g in groups])
        ax.set_title(f"{title}, {mode}")
        if target is not None:
            group, value, label = target
            x = groups.index(group)
            ax.hlines(value, x - 0.45, x + 0.45, colors="k", linestyles="--", label=label)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize="small")
    return fig


class Profiler(NamedTuple):
    """How a benchmark profiles the vgfs daemon where vgfs misses a target."""

    name: str  # the profile goes beside the results as profile-NAME.txt
    sampled: str  # when, as the results say it: "during ... ({seconds:.0f} s)"
    run: Callable[[float], str]  # the process's top frames over that many seconds of sampling
    of: str = "its daemon"  # the process sampled, as the results name it


def write_judged(name: str, title: str, markdown: str, targets: list[list[object]],
                 figure: Figure, quick: bool, raw: object, profiler: Profiler) -> None:
    """`write_results` of a benchmark with targets: the title, the environment, `markdown` and
    the targets. Where vgfs missed one, `profiler` samples it (PROFILE_SECONDS, 5 with
    --quick) and its top frames go beside the results, which name them; a profile of an
    earlier run goes away, as it would be stale."""
    seconds = 5.0 if quick else PROFILE_SECONDS
    top_frames = profiler.run(seconds) if any(row[-1] == "FAIL" for row in targets) else None
    path = f"profile-{profiler.name}.txt"
    note = (f"vgfs misses a target: `{path}` beside this file holds the top frames of"
            f" {profiler.of}, sampled by py-spy {profiler.sampled.format(seconds=seconds)}."
            if top_frames else "")
    out = write_results(name, "\n\n".join(filter(None, [
        f"# {title}", environment(), markdown, "Targets:",
        table(["target", "measured", "verdict"], targets), note])) + "\n", figure, quick, raw)
    if top_frames:
        (out / path).write_text(top_frames)
    else:
        (out / path).unlink(missing_ok=True)


def write_results(name: str, markdown: str, figure: Figure, quick: bool,
                  raw: object = None) -> Path:
    """Print the table and write it with its plot as NAME.md/NAME.png, and `raw` (the figures
    behind them) if given as NAME.json; a full run also puts the table into README.md, so the
    README always shows the latest results."""
    out = QUICK_RESULTS if quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    print(markdown)
    (out / f"{name}.md").write_text(markdown)
    figure.tight_layout()
    figure.savefig(out / f"{name}.png", dpi=80)
    if raw is not None:
        (out / f"{name}.json").write_text(json.dumps(raw, indent=1) + "\n")
    log(f"wrote {name}.md and {name}.png to {out.relative_to(HERE.parent)}")
    if not quick:
        update_readme(name, markdown)
    return out


def update_readme(name: str, markdown: str) -> None:
    """Replace the README's section between the `results:NAME` markers."""
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = f"<!-- results:{name} -->\n", f"<!-- /results:{name} -->"
    if start not in text or end not in text:
        return
    body = markdown.replace("\n# ", "\n### ").removeprefix("# ").strip()
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    section = f"### {body}\n\n![{name}](results/{name}.png)\n\n"
    readme.write_text(head + start + section + end + tail)
