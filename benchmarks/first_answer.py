"""First-answer benchmark: from nothing to one image's scene graph, and to 1,000 of them.

vgfs: `vgfs mount` of the dataset, then `cat images/ID/graph.json`. Against it, the official
`visual-genome` driver's ways on the release it was built from: `json.load` of
`scene_graphs.json` then a lookup, and `local.get_scene_graph` on the per-image files of its
one-time `local.save_scene_graphs_by_id` (made once, timed, and cached). Every way runs in
fresh processes, so that both its time (interpreter start-up included) and its peak RSS are its
own; cold runs drop the page cache first, warm runs repeat at once without dropping it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import common
from vgfs.metrics import read_stats
from vgfs.mount import mounted_fs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FULL_IMAGES = 108_077
QUICK_IMAGES = 2_000
MANY = 1_000  # images of the second task
TASKS = ("1 image", f"{MANY:,} images")
WAYS = ("vgfs", "json.load", "get_scene_graph")
LABELS = {"vgfs": "vgfs: mount + cat graph.json",
          "json.load": "json.load(scene_graphs.json) + lookup",
          "get_scene_graph": "driver: local.get_scene_graph"}
# json.load is bound by parsing, of which reading the file is a small part, and at full scale
# each takes about a minute: it is measured cold only.
WARM = ("vgfs", "get_scene_graph")
TIME_TARGET = 1000  # json.load's seconds over vgfs's, one image, cold
RSS_TARGET = 50  # json.load's peak RSS over vgfs's
MIB = 2**20

# Each way is a script of its own in a fresh interpreter; each prints the number of objects in
# the graphs it got, which must agree between the ways.
JSON_LOAD = """
import json, sys
path, *ids = sys.argv[1:]
with open(path) as f:
    graphs = json.load(f)
by_id = {g["image_id"]: g for g in graphs}
print(sum(len(by_id[int(i)]["objects"]) for i in ids))
"""
# For one image a user passes the release folder, from which the driver loads image_data.json;
# for many, the dict of images built once, as its own get_scene_graphs does.
GET_SCENE_GRAPH = """
import sys
from visual_genome import local
release, by_id, *ids = sys.argv[1:]
images = release if len(ids) == 1 else {im.id: im for im in local.get_all_image_data(release)}
graphs = [local.get_scene_graph(int(i), images=images, image_data_dir=by_id + "/",
                                synset_file=release + "/synsets.json") for i in ids]
print(sum(len(g.objects) for g in graphs))
"""
# Runs a command for `child`: argv is the file descriptor to report on, then the command.
LAUNCH = """
import os, sys, time
fd = int(sys.argv[1])
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
os.write(fd, f"{seconds} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""
PREPARE = """
import sys
from visual_genome import local
local.save_scene_graphs_by_id(data_dir=sys.argv[1], image_data_dir=sys.argv[2])
"""


def child(cmd: list[str]) -> tuple[float, int, str, str]:
    """Run `cmd` to its end: its wall seconds, its peak RSS in bytes (that process alone, not
    the ones it leaves running), its stdout and its stderr.

    A process's peak RSS (ru_maxrss) keeps what it held before exec: a child forked from this
    process would start at this process's size. So a bare interpreter (`LAUNCH`) forks it and
    reports its wait4 figures; only a command smaller than that interpreter (cat: a few MiB) is
    overstated. Output goes through files, so that a process left running with them (the vgfs
    daemon) cannot hold anything up."""
    with (tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err,
          tempfile.TemporaryFile() as report):
        fd = report.fileno()
        subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCH, str(fd), *cmd],
                       stdin=subprocess.DEVNULL, stdout=out, stderr=err, pass_fds=(fd,),
                       check=False)
        for f in (out, err, report):
            f.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
        seconds, maxrss_kib, code = report.read().decode().split()
    if int(code):
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({code}):\n{stderr.strip()[-2000:]}")
    return float(seconds), int(maxrss_kib) * 1024, stdout, stderr


def count_objects(text: str) -> int:
    """Objects in the graph.json documents that cat printed one after another."""
    decoder, space, pos, n = json.JSONDecoder(), re.compile(r"\s*"), 0, 0
    while (pos := space.match(text, pos).end()) < len(text):
        graph, pos = decoder.raw_decode(text, pos)
        n += len(graph["objects"])
    return n


def run_vgfs(dataset: Path, mountpoint: Path, ids: list[int], cmd_prefix: list[str] | None = None
             ) -> dict:
    """Mount, cat the graphs, read the daemon's peak RSS and counters, unmount. Peak RSS: the
    front's, the daemon's and cat's added up, an upper bound: the daemon shares the pages it had
    when forked. `cmd_prefix` replaces how vgfs is run (for a profile)."""
    mountpoint.mkdir(exist_ok=True)
    paths = [str(mountpoint / "images" / str(i) / "graph.json") for i in ids]
    try:
        mount_s, front, _, stderr = child([*(cmd_prefix or common.VGFS), "mount", str(dataset),
                                           str(mountpoint)])
        cat_s, cat, out, _ = child(["cat", *paths])
        stats = read_stats(str(mountpoint))
        daemon = common.kib(common.proc_status(stats["pid"]), "VmHWM") * 1024
    finally:
        if mounted_fs(mountpoint) is not None:
            common.run([*common.VGFS, "umount", str(mountpoint)], timeout=60)
    return {"seconds": mount_s + cat_s, "rss": front + daemon + cat, "mount_s": mount_s,
            "cat_s": cat_s, "front_rss": front, "daemon_rss": daemon, "cat_rss": cat,
            "objects": count_objects(out), "ops": stats["ops"], "stderr": stderr}


def run_python(script: str, *args: object) -> dict:
    seconds, rss, out, _ = child([sys.executable, "-c", script, *map(str, args)])
    return {"seconds": seconds, "rss": rss, "objects": int(out)}


def driver_by_id(release: Path) -> tuple[Path, dict]:
    """The driver's one-time preparation, `save_scene_graphs_by_id`: its per-image files and the
    seconds and peak RSS it took (page cache dropped first), made once and kept in the cache
    beside the release, keyed like it, renamed into place when complete."""
    path = release.with_name(release.name.replace("release-", "driver-by-id-", 1))
    for old in common.DATA.glob(path.name.split("-vgfs")[0] + "-vgfs*"):
        if old != path:
            common.log(f"removing stale {old.name}")
            shutil.rmtree(old)
    if not path.exists():
        tmp = path.with_name(path.name + ".partial")
        tmp.mkdir()
        common.log(f"the driver's save_scene_graphs_by_id on {release.name}; done once, then"
                   " cached")
        common.drop_caches()
        seconds, rss, _, _ = child([sys.executable, "-c", PREPARE, str(release),
                                    str(tmp / "by-id")])
        (tmp / "prepare.json").write_text(json.dumps({"seconds": seconds, "rss": rss}) + "\n")
        os.rename(tmp, path)
    return path / "by-id", json.loads((path / "prepare.json").read_text())


def bench(release: Path, dataset: Path, by_id: Path, ids: dict[str, list[int]], runs: int,
          mountpoint: Path) -> dict[str, list[dict]]:
    """Records per (task, way, mode) over `runs` runs, the order of the ways rotating from run
    to run; and the bare interpreter's start-up, the floor of any way run by Python."""
    samples: dict[str, list[dict]] = {}
    for run in range(runs):
        for mode in ("cold", "warm"):
            if mode == "cold":
                common.drop_caches()
            seconds, rss, _, _ = child([sys.executable, "-c", "pass"])
            samples.setdefault(f"start-up {mode}", []).append({"seconds": seconds, "rss": rss})
        for task in TASKS:
            for way in common.rotated(WAYS, run):
                common.drop_caches()
                for mode in ("cold", "warm") if way in WARM else ("cold",):
                    if way == "vgfs":
                        rec = run_vgfs(dataset, mountpoint, ids[task])
                        del rec["stderr"]
                    elif way == "json.load":
                        rec = run_python(JSON_LOAD, release / "scene_graphs.json", *ids[task])
                    else:
                        rec = run_python(GET_SCENE_GRAPH, release, by_id, *ids[task])
                    samples.setdefault(f"{task} {way} {mode}", []).append(rec)
                    common.log(f"run {run + 1}/{runs}: {task}, {way}, {mode}: {rec['seconds']:.3f}"
                               f" s, {rec['rss'] / MIB:,.0f} MiB")
        for task in TASKS:
            got = {r["objects"] for k, v in samples.items() if k.startswith(task + " ")
                   for r in v}
            if len(got) != 1:
                raise RuntimeError(f"{task}: the ways disagree on the objects: {got}")
    return samples


def import_profile(dataset: Path, mountpoint: Path, ids: list[int]
                   ) -> tuple[float, float, list[list]]:
    """One warm mount under `python -X importtime`: its seconds (to the mount answering), the
    seconds spent importing, and the top-level imports that took longest. The daemon imports
    the FUSE side after the fork, before the mount answers, so both processes' imports count."""
    rec = run_vgfs(dataset, mountpoint, ids, [sys.executable, "-X", "importtime",
                                             *common.VGFS[1:]])
    top = []
    for line in rec["stderr"].splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m:  # a nested import's name is indented
            top.append([m[2], int(m[1]) / 1e6])
    top.sort(key=lambda r: -r[1])
    return rec["mount_s"], sum(s for _, s in top), top[:8]


def _ratio(samples: dict[str, list[dict]], key: str, base: str, field: str) -> float:
    """The median, over the runs, of the way's figure over vgfs's in the same run."""
    return common.ratios([r[field] for r in samples[key]], [b[field] for b in samples[base]])[0]


def _times(ratio: float) -> str:
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:,.0f}×"


def report(images: int, samples: dict[str, list[dict]], prepare: dict, by_id_mb: float,
           profile: tuple[float, float, list[list]], runs: int) -> tuple[str, Figure]:
    def med(key: str, field: str = "seconds") -> float:
        return common.median([r[field] for r in samples[key]])

    rows, plot_rows = [], []
    for task in TASKS:
        for mode in ("cold", "warm"):
            base = f"{task} vgfs {mode}"
            for way in WAYS:
                key = f"{task} {way} {mode}"
                if key not in samples:
                    continue
                t_ratio = _ratio(samples, key, base, "seconds")
                r_ratio = _ratio(samples, key, base, "rss")
                rows.append([task, mode, LABELS[way], med(key), med(key, "rss") / MIB,
                             _times(t_ratio), _times(r_ratio)])
                plot_rows.append((f"{task}\n{mode}", way, med(key), med(key, "rss") / MIB))
    breakdown = []
    for task in TASKS:
        for mode in ("cold", "warm"):
            key = f"{task} vgfs {mode}"
            breakdown.append([task, mode, med(key, "mount_s"), med(key, "cat_s"),
                              med(f"start-up {mode}"), med(key, "front_rss") / MIB,
                              med(key, "daemon_rss") / MIB, med(key, "cat_rss") / MIB])
    ops = samples[f"{TASKS[1]} vgfs cold"][-1]["ops"]
    op_rows = [[op, o["count"], o["mean_us"], o["count"] * o["mean_us"] / 1e3]
               for op, o in sorted(ops.items(), key=lambda kv: -kv[1]["count"] * kv[1]["mean_us"])]
    one = f"{TASKS[0]} json.load cold", f"{TASKS[0]} vgfs cold"
    speed, memory = (_ratio(samples, *one, field) for field in ("seconds", "rss"))
    targets = [
        [f"1 image, cold: json.load's seconds over vgfs's ≥ {TIME_TARGET:,}", _times(speed),
         common.verdict(speed >= TIME_TARGET)],
        [f"1 image, cold: json.load's peak RSS over vgfs's ≥ {RSS_TARGET}", _times(memory),
         common.verdict(memory >= RSS_TARGET)],
    ]
    mount_s, import_s, top = profile
    md = "\n\n".join([
        "# First-answer benchmark",
        common.environment() + f"; visual-genome {version('visual-genome')}",
        f"From nothing to scene graphs of a {images:,}-image synthetic release (`--jpeg small`):"
        f" one image, and {MANY:,} random ones (fixed seed). vgfs: `vgfs mount` of the dataset"
        " then one `cat` of the images' `graph.json`. The official driver: `json.load` of"
        " `scene_graphs.json` then lookups; `local.get_scene_graph` per image, on the files of"
        " its one-time `save_scene_graphs_by_id` (given the release folder for one image, the"
        " dict of images built once for many). Each in fresh processes, interpreter start-up"
        " included; medians of"
        f" {runs} runs with the order of the ways rotating. Cold: page cache dropped (and a"
        " fresh mount); warm: repeated at once (json.load: cold only). Peak RSS: the process's"
        " (wait4); for vgfs the mount front's, the daemon's (VmHWM) and cat's added up. Ratios:"
        " the way's figure over vgfs's, the median of the runs' ratios:",
        common.table(["task", "mode", "way", "median s", "peak RSS MiB", "time / vgfs",
                      "RSS / vgfs"], rows),
        "Where vgfs's time and memory go: `vgfs mount` (to the mount answering) and `cat`,"
        " beside a bare `python -c` start-up; peak RSS of each process:",
        common.table(["task", "mode", "mount s", "cat s", "python start-up s", "front MiB",
                      "daemon MiB", "cat MiB"], breakdown),
        f"What the daemon did for the cat of {MANY:,} graph.json, cold (its own counters, last"
        " run): the time it spent answering each kind of request, beside cat's wall time above:",
        common.table(["request", "count", "mean µs", "total ms"], op_rows),
        f"One-time preparation for `get_scene_graph`, `save_scene_graphs_by_id` (cold, when the"
        f" cache was made): {prepare['seconds']:,.1f} s, peak RSS"
        f" {prepare['rss'] / MIB:,.0f} MiB, {by_id_mb:,.0f} MB of per-image files.",
        f"Profile of the mount's start: one warm `vgfs mount` under `python -X importtime` took"
        f" {mount_s:.3f} s to answer, {import_s:.3f} s of it importing modules (front and"
        " daemon); the top-level imports that took longest:",
        common.table(["module", "cumulative ms"], [[m, s * 1e3] for m, s in top]),
        "Targets:",
        common.table(["target", "measured", "verdict"], targets),
    ]) + "\n"
    return md, _plot(plot_rows)


def _plot(rows: list[tuple[str, str, float, float]]) -> Figure:
    groups = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = common.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    for ax, column, label in ((axes[0], 2, "seconds (log)"), (axes[1], 3, "peak RSS MiB (log)")):
        for i, way in enumerate(WAYS):
            xs = [groups.index(r[0]) + (i - 1) * width for r in rows if r[1] == way]
            ax.bar(xs, [r[column] for r in rows if r[1] == way], width, label=LABELS[way])
        ax.set_xticks(range(len(groups)), groups)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    axes[0].set_title("From nothing to the scene graphs")
    axes[1].set_title("Peak memory")
    axes[0].legend(fontsize="small")
    return fig


def main(argv: list[str] | None = None) -> None:
    args = common.arguments(
        "first_answer", __doc__, argv, f"a {QUICK_IMAGES:,}-image release: a check in about a"
        " minute", "it drops the page cache")
    images = QUICK_IMAGES if args.quick else FULL_IMAGES
    release = common.release(images, "small")
    dataset = common.dataset(images, "small")
    by_id, prepare = driver_by_id(release)
    all_ids = [im["image_id"] for im in json.loads((release / "image_data.json").read_bytes())]
    rng = random.Random(common.SEED)
    ids = {TASKS[0]: [rng.choice(all_ids)], TASKS[1]: rng.sample(all_ids, MANY)}
    by_id_mb = sum(f.stat().st_size for f in by_id.iterdir()) / 1e6
    with tempfile.TemporaryDirectory(dir=common.DATA, prefix="mnt-") as tmp:
        mountpoint = Path(tmp) / "vgfs"
        samples = bench(release, dataset, by_id, ids, args.runs, mountpoint)
        profile = import_profile(dataset, mountpoint, ids[TASKS[0]])
    md, fig = report(images, samples, prepare, by_id_mb, profile, args.runs)
    raw = {"images": images, "ids": ids, "prepare": prepare, "by_id_mb": by_id_mb,
           "samples": samples, "import_profile": profile}
    common.write_results("first_answer", md, fig, args.quick, raw)


if __name__ == "__main__":
    main()
