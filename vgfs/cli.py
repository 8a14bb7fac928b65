"""Command lines, `vgfs` and the mount(8) helper `mount.fuse.vgfs`: argument parsing only; the
work is done by the modules they call."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vgfs import __version__, logs
from vgfs.errors import VGFSError

if TYPE_CHECKING:
    from vgfs.metrics import StatsJson


_QUIET = "no progress bars or informational lines; warnings and errors still go to stderr"


def _parser() -> argparse.ArgumentParser:
    from vgfs.options import KNOWN

    p = argparse.ArgumentParser(prog="vgfs", description="Visual Genome as a read-only"
                                " filesystem: build a dataset folder, then mount it.")
    p.add_argument("--version", action="version", version=f"vgfs {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do; `vgfs COMMAND --help` tells more")

    b = sub.add_parser("build", help="official release files -> dataset folder")
    b.add_argument("release", type=Path, help="folder of the official release files")
    b.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    b.add_argument("--images", nargs="+", action="extend", metavar="PATH",
                   help="JPEG folders, images.zip files, or one existing SquashFS image"
                        " (default: found under RELEASE); may be given more than once")
    b.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    b.add_argument("--quiet", action="store_true", help=_QUIET)

    m = sub.add_parser("mount", help="mount a dataset folder")
    m.add_argument("dataset", help="dataset folder written by `vgfs build`")
    m.add_argument("mountpoint", help="empty directory to mount it on")
    m.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    m.add_argument("-o", dest="options", action="append", default=[], metavar="OPT,...",
                   help=f"mount options, comma-separated: {KNOWN}")
    m.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log events of this level and above (default: info)")
    m.add_argument("--log-file", metavar="PATH", help="append the log there (default: stderr;"
                   " once a background mount answers, syslog unless stderr is the journal)")
    m.add_argument("--metrics-file", metavar="PATH.prom", help="write the counters there in"
                   " Prometheus text format, for node_exporter's textfile collector")
    m.add_argument("--metrics-interval", type=float, metavar="S",
                   help="seconds between metrics file updates (default 15)")

    u = sub.add_parser("umount", help="unmount a vgfs mount (also cleans up after a killed one)")
    u.add_argument("mountpoint", help="where the dataset is mounted")

    i = sub.add_parser("info", help="version, counts, sources, sizes of a dataset folder")
    i.add_argument("dataset", help="dataset folder written by `vgfs build`")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")

    v = sub.add_parser("verify", help="check every record and JPEG against the checksums")
    v.add_argument("dataset", help="dataset folder written by `vgfs build`")
    v.add_argument("--quiet", action="store_true", help=_QUIET)

    s = sub.add_parser("stats", help="live counters of a running mount")
    s.add_argument("mountpoint", help="where the dataset is mounted")
    s.add_argument("--json", action="store_true", help="print the counters as JSON")

    sa = sub.add_parser("sample", help="write a synthetic release in the official format")
    sa.add_argument("out", type=Path, help="folder to write the release files to")
    sa.add_argument("--images", type=int, default=100, metavar="N",
                    help="number of images (default 100)")
    sa.add_argument("--seed", type=int, default=0, metavar="S",
                    help="random seed: the same seed and options write the same bytes (default 0)")
    sa.add_argument("--jpeg", choices=["small", "real", "none"], default="small",
                    help="tiny JPEGs, JPEGs sized like the real ones, or none")
    sa.add_argument("--quiet", action="store_true", help=_QUIET)

    d = sub.add_parser("demo", help="sample -> build -> mount, with a short tour")
    d.add_argument("mountpoint", nargs="?", default="vg-demo",
                   help="where to mount (default: ./vg-demo)")
    d.add_argument("--images", type=int, default=200, metavar="N",
                   help="number of images of the synthetic release (default 200)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _run(args) or 0
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return code
    except BrokenPipeError:
        # Whoever read the output stopped (`vgfs info --json | head -1`): not an error. Point
        # stdout at /dev/null, so that the interpreter's last flush at exit does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("vgfs: interrupted", file=sys.stderr)
        return 130
    except (VGFSError, OSError) as e:
        if args.debug:
            raise
        message = e if isinstance(e, VGFSError) else _os_error(e)
        print(f"vgfs: error: {message}", file=sys.stderr)
        return 1


def mount_helper(argv: list[str] | None = None) -> int:
    """`mount.fuse.vgfs DATASET MOUNTPOINT [-sfnv] [-o OPTS]`: what mount(8) runs for an fstab
    line or a systemd .mount unit of type fuse.vgfs, once linked as /sbin/mount.fuse.vgfs.
    Exit status as mount(8) documents it: 32 when the mount fails."""
    from vgfs.mount import mount, preflight
    from vgfs.options import parse_options

    args = _helper_parser().parse_args(argv)
    logs.setup("info" if args.verbose else "warning")
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


def _helper_parser() -> argparse.ArgumentParser:
    from vgfs.options import KNOWN

    p = argparse.ArgumentParser(prog="mount.fuse.vgfs", description="mount(8) helper for vgfs:"
                                " mounts DATASET at MOUNTPOINT in the background, and returns"
                                " once the mount answers.")
    p.add_argument("dataset", help="dataset folder written by `vgfs build`")
    p.add_argument("mountpoint", help="empty directory to mount it on")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT,...",
                   help=f"vgfs's options ({KNOWN}); mount(8)'s own are dropped")
    p.add_argument("-s", dest="sloppy", action="store_true", help="ignore unknown options")
    p.add_argument("-f", dest="fake", action="store_true", help="check everything, mount nothing")
    p.add_argument("-n", dest="no_mtab", action="store_true", help="accepted; there is no mtab")
    p.add_argument("-v", dest="verbose", action="store_true", help="log each event")
    return p


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


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
    from vgfs.options import metrics_path, parse_options

    logs.setup(args.log_level)
    opts = parse_options(args.options)
    if args.metrics_file is not None:
        opts.metrics_file = metrics_path(args.metrics_file)
    if args.log_file is not None:
        opts.log_file = os.path.abspath(args.log_file)
    if args.metrics_interval is not None:
        opts.metrics_interval = args.metrics_interval
    mount(args.dataset, args.mountpoint, opts, args.foreground)


def info_text(path: Path, m: dict[str, Any]) -> str:
    c = m["counts"]
    lines = [f"dataset      {path}", f"format       {m['format']} (built by {m['tool']},"
             f" {m['built']})",
             f"images       {c['images']} ({c['jpegs']} JPEGs, {c['images_without_jpeg']}"
             f" without a JPEG; {c['unannotated_jpegs']} JPEGs and {c['other_files']} other"
             " files of the JPEG folders without annotations)",
             "", f"{'file':30} {'version':9} {'entries':>9} {'unknown ids':>11} {'size':>12}"]
    for name, s in sorted(m["sources"].items()):
        unknown = next((k["unknown_ids"] for k in m["kinds"].values()
                        if k.get("source") == name), 0)
        lines.append(f"{name:30} {s['version']:9} {s['entries']:>9} {unknown:>11}"
                     f" {s['size']:>12,}")
    graph = m["kinds"].get("graph")
    if graph and graph["version"] == "composed":
        lines.append(f"graph.json is {graph['source']} ({graph['entries']} images)")
    stored = m["annotations"]
    lines.append(f"annotations  {stored['compressed_bytes']:,} bytes stored for"
                 f" {stored['release_bytes']:,} of the release's"
                 f" ({stored['compressed_bytes'] / max(stored['release_bytes'], 1):.0%})")
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
    lines.append(f"log          {s.get('log', 'unknown')}")  # a mount of an older vgfs has none
    return "\n".join(lines)
