"""Command lines, `vgfs` and the mount(8) helper `mount.fuse.vgfs`: argument parsing only; the
work is done by the modules they call."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vgfs import __version__
from vgfs.errors import VGFSError

if TYPE_CHECKING:
    from vgfs.metrics import StatsJson


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vgfs", description="Visual Genome as a read-only"
                                " filesystem: build a dataset folder, then mount it.")
    p.add_argument("--version", action="version", version=f"vgfs {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="official release files -> dataset folder")
    b.add_argument("release", type=Path, help="folder of the official release files")
    b.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    b.add_argument("--images", nargs="+", metavar="PATH", help="JPEG folders, images.zip"
                   " files, or one existing SquashFS image (default: found under RELEASE)")
    b.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    b.add_argument("--quiet", action="store_true", help="no progress output")

    m = sub.add_parser("mount", help="mount a dataset folder")
    m.add_argument("dataset")
    m.add_argument("mountpoint")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("-o", dest="options", action="append", default=[], metavar="OPT,...",
                   help="cache_size=SIZE, pretty, uid=, gid=, umask=, allow_other,"
                   " allow_root, threads=N, metrics_file=PATH, metrics_interval=S")
    m.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    m.add_argument("--metrics-file", metavar="PATH", help="write the counters there in"
                   " Prometheus text format, for node_exporter's textfile collector")
    m.add_argument("--metrics-interval", type=float, metavar="S",
                   help="seconds between metrics file updates (default 15)")

    u = sub.add_parser("umount", help="unmount (also cleans up after a killed mount)")
    u.add_argument("mountpoint")

    i = sub.add_parser("info", help="version, counts, sources, sizes of a dataset folder")
    i.add_argument("dataset")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")

    v = sub.add_parser("verify", help="check every record and JPEG against the checksums")
    v.add_argument("dataset")
    v.add_argument("--quiet", action="store_true", help="no progress output")

    s = sub.add_parser("stats", help="live counters of a running mount")
    s.add_argument("mountpoint")
    s.add_argument("--json", action="store_true")

    sa = sub.add_parser("sample", help="write a synthetic release in the official format")
    sa.add_argument("out", type=Path)
    sa.add_argument("--images", type=int, default=100)
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--jpeg", choices=["small", "real", "none"], default="small",
                    help="tiny JPEGs, JPEGs sized like the real ones, or none")
    sa.add_argument("--quiet", action="store_true", help="no progress output")

    d = sub.add_parser("demo", help="sample -> build -> mount, with a short tour")
    d.add_argument("mountpoint", nargs="?", default="vg-demo",
                   help="where to mount (default: ./vg-demo)")
    d.add_argument("--images", type=int, default=200)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args) or 0
    except VGFSError as e:
        if args.debug:
            raise
        print(f"vgfs: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vgfs: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.debug:
            raise
        print(f"vgfs: error: {_os_error(e)}", file=sys.stderr)
        return 1


def mount_helper(argv: list[str] | None = None) -> int:
    """`mount.fuse.vgfs DATASET MOUNTPOINT [-sfnv] [-o OPTS]`: what mount(8) runs for an fstab
    line or a systemd .mount unit of type fuse.vgfs, once linked as /sbin/mount.fuse.vgfs.
    Exit status as mount(8) documents it: 32 when the mount fails."""
    from vgfs.mount import mount, preflight
    from vgfs.options import parse_options

    p = argparse.ArgumentParser(prog="mount.fuse.vgfs", description="mount(8) helper for vgfs:"
                                " mounts DATASET at MOUNTPOINT in the background, and returns"
                                " once the mount answers.")
    p.add_argument("dataset")
    p.add_argument("mountpoint")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT,...")
    p.add_argument("-s", dest="sloppy", action="store_true", help="ignore unknown options")
    p.add_argument("-f", dest="fake", action="store_true", help="check everything, mount nothing")
    p.add_argument("-n", dest="no_mtab", action="store_true", help="accepted; there is no mtab")
    p.add_argument("-v", dest="verbose", action="store_true", help="log each event")
    args = p.parse_args(argv)
    _setup_logging("info" if args.verbose else "warning")
    try:
        opts = parse_options(args.options, sloppy=args.sloppy)
        if args.fake:
            preflight(os.path.abspath(args.dataset), Path(args.mountpoint).absolute(), opts)
        else:
            mount(args.dataset, args.mountpoint, opts, foreground=False)
    except VGFSError as e:
        print(f"mount.fuse.vgfs: {e}", file=sys.stderr)
        return 32
    except OSError as e:
        print(f"mount.fuse.vgfs: {_os_error(e)}", file=sys.stderr)
        return 32
    return 0


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="vgfs %(levelname)s %(message)s")


def _run(args: argparse.Namespace) -> int | None:
    cmd = args.command
    if cmd == "build":
        from vgfs.build import build

        manifest = build(args.release, args.output, args.images, args.force, not args.quiet)
        c = manifest["counts"]
        print(f"built {args.output}: {c['images']} images, {c['jpegs']} JPEGs")
    elif cmd == "mount":
        _mount(args)
    elif cmd == "umount":
        from vgfs.mount import umount

        umount(args.mountpoint)
    elif cmd == "info":
        from vgfs.dataset import open_dataset

        with open_dataset(args.dataset) as ds:
            if args.json:
                print(orjson.dumps(ds.manifest, option=orjson.OPT_INDENT_2).decode())
            else:
                print(info_text(ds.path, ds.manifest))
    elif cmd == "verify":
        from vgfs.dataset import open_dataset
        from vgfs.progress import progress
        from vgfs.verify import verify, work

        with open_dataset(args.dataset) as ds, \
                progress("verifying", work(ds), "", not args.quiet) as bar:
            bad = verify(ds, lambda msg: print(f"mismatch: {msg}", file=sys.stderr), bar.update)
        if bad:
            print(f"vgfs: verify: {bad} mismatches in {args.dataset}", file=sys.stderr)
            return 1
        print(f"{args.dataset}: every record and JPEG matches")
    elif cmd == "stats":
        from vgfs.metrics import read_stats

        stats = read_stats(args.mountpoint)
        print(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode() if args.json
              else stats_text(stats))
    elif cmd == "sample":
        from vgfs.sample import write_sample

        write_sample(args.out, images=args.images, seed=args.seed, jpeg=args.jpeg,
                     show_progress=not args.quiet)
        print(f"wrote a synthetic release of {args.images} images to {args.out}")
    elif cmd == "demo":
        from vgfs.demo import demo

        demo(Path(args.mountpoint), args.images)
    return None


def _mount(args: argparse.Namespace) -> None:
    from vgfs.mount import mount
    from vgfs.options import parse_options

    _setup_logging(args.log_level)
    opts = parse_options(args.options)
    if args.metrics_file:
        opts.metrics_file = os.path.abspath(args.metrics_file)
    if args.metrics_interval is not None:
        opts.metrics_interval = args.metrics_interval
    mount(args.dataset, args.mountpoint, opts, args.foreground)


def info_text(path: Path, m: dict[str, Any]) -> str:
    c = m["counts"]
    lines = [f"dataset      {path}", f"format       {m['format']} (built by {m['tool']},"
             f" {m['built']})",
             f"images       {c['images']} ({c['jpegs']} JPEGs, {c['images_without_jpeg']}"
             f" without a JPEG, {c['unannotated_jpegs']} JPEGs without annotations)",
             "", f"{'file':30} {'version':9} {'entries':>9} {'unknown ids':>11} {'size':>12}"]
    for name, s in sorted(m["sources"].items()):
        unknown = next((k["unknown_ids"] for k in m["kinds"].values()
                        if k.get("source") == name), 0)
        lines.append(f"{name:30} {s['version']:9} {s['entries']:>9} {unknown:>11}"
                     f" {s['size']:>12,}")
    graph = m["kinds"].get("graph")
    if graph and graph["version"] == "composed":
        lines.append(f"graph.json is {graph['source']} ({graph['entries']} images)")
    views = {v: n for v, n in m.get("views", {}).items() if n}
    if views:
        lines.append("query views  " + ", ".join(f"{v} {n:,} names" for v, n in views.items()))
    img = m["images"]
    if img.get("path"):
        lines.append(f"\nJPEGs        {img['path']} ({img.get('size', 0):,} bytes,"
                     f" {img.get('built_with', '')})")
    return "\n".join(lines)


def stats_text(s: StatsJson) -> str:
    lines = [f"pid {s['pid']}, up {s['uptime_s']} s", "",
             f"{'operation':12} {'count':>10} {'mean µs':>10} {'max µs':>10}"]
    for op, o in s["ops"].items():
        lines.append(f"{op:12} {o['count']:>10} {o['mean_us']:>10} {o['max_us']:>10}")
    c = s["cache"]
    lines += ["", f"cache        {c['hits']} hits, {c['misses']} misses, {c['evictions']}"
              f" evictions ({c['evicted_bytes']} bytes), {c['bytes']} of {c['max_bytes']}"
              " bytes used"]
    lines.append("backend      " + ", ".join(f"{k} {v}" for k, v in s["backend"].items()))
    lines.append("errors       " + (", ".join(f"{k} {v}" for k, v in s["errors"].items())
                                    or "none"))
    return "\n".join(lines)
