"""Official release + JPEGs -> dataset folder (LMDB + SquashFS + manifest), atomically.

The build writes everything into a hidden folder beside the target, which claims it (see
output.py), and renames it into place only when it is complete, so a failed or killed build
never leaves a half dataset behind.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
import orjson

from vgfs import __version__
from vgfs.build.annotations import store_annotations, store_composed, store_files
from vgfs.build.jpegs import Survey, store_images, survey
from vgfs.build.output import Output
from vgfs.build.postings import Postings
from vgfs.build.table import store_table
from vgfs.build.writer import Writer
from vgfs.errors import VGFSError
from vgfs.layout import FORMAT, FRAME, ZSTD_LEVEL
from vgfs.progress import warn
from vgfs.release import Source, default_image_paths, find_sources
from vgfs.tree import RESERVED


def build(release: str | os.PathLike, out: str | os.PathLike, images: list[str] | None = None,
          force: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Build the dataset folder `out` from the release folder; return its manifest."""
    release, image_paths = Path(release), [Path(p) for p in images or []]
    output = Output(Path(out).absolute(), force, [release, *image_paths])
    with _interrupts(), output.claimed() as tmp, _reported(tmp):
        manifest = _build_into(release, tmp, image_paths, show_progress)
        output.replace()
    return manifest


def _build_into(release: Path, tmp: Path, image_paths: list[Path],
                show: bool) -> dict[str, Any]:
    """Run the phases into the folder `tmp`, each fed the results of those before it, and
    write the manifest."""
    jpegs = survey(release, image_paths, show)  # before the long pass: its problems show now
    sources = _carried(release, jpegs)
    writer = Writer(tmp / "annotations.lmdb")
    phases = _Phases(writer, show)
    if show:
        _estimate(sources, jpegs)
    with phases.timed("annotations"):
        postings = Postings(tmp / "postings", sources)
        kinds, table = store_annotations(writer, sources, postings.add, show)
    # Indexing runs inside the annotation pass: report its share there too.
    phases.records[-1]["indexing_during_annotations_s"] = round(postings.seconds, 2)
    with phases.timed("composed files"):
        composed = store_composed(writer, kinds, table, show)
    if composed is not None:
        kinds["graph"] = composed
    with phases.timed("query views"):
        views = postings.store(writer)
    with phases.timed("other files"):
        store_files(writer, [s for s in sources.values() if s.name not in writer.numbers], show)
    with phases.timed("images"):
        images = store_images(writer, jpegs, table, tmp, show)
    with phases.timed("image records"):
        store_table(writer, table)
    writer.close()
    manifest = {
        "format": FORMAT,
        "tool": f"vgfs {__version__}",
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "release": str(release.absolute()),
        "sources": {s.name: {"file": s.label, "version": s.version, "size": s.size,
                             "sha256": s.sha256, "entries": s.entries}
                    for s in sources.values()},
        "kinds": kinds,
        "annotations": {"release_bytes": sum(s.size for s in sources.values()),
                        "compressed_bytes": writer.stored_bytes, "frame_size": FRAME,
                        "zstd_level": ZSTD_LEVEL},
        "views": views,
        "images": images.record,
        "counts": images.counts,
        "phases": phases.records,
    }
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    with open(tmp / "manifest.json", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return manifest


def _carried(release: Path, jpegs: Survey) -> dict[str, Source]:
    """The release's files to keep: all but its JPEG sources, and but those whose names the
    mount gives its own meaning (reported: a by-id/ that the driver wrote is made anew)."""
    # The release's own JPEG folders are never release files, even when --images names others.
    own = default_image_paths(release)
    skip = {p.absolute() for p in [*jpegs.found.folders, *jpegs.found.zips, *own]}
    if jpegs.found.sqfs is not None:
        skip.add(jpegs.found.sqfs.absolute())
    found = find_sources(release.absolute(), skip)
    kept = {name: src for name, src in found.items() if name.split("/")[0] not in RESERVED}
    if len(kept) < len(found):
        dropped = sorted({name.split("/")[0] for name in found.keys() - kept.keys()})
        warn(f"{release}: not kept, as the mount makes its own: {', '.join(dropped)}")
    return kept


PHASES = ("annotations", "composed files", "query views", "other files", "images",
          "image records")
# Rates measured on a 2-core machine (benchmarks/results/build.md), for a first estimate.
ANNOTATION_BYTES_PER_S = 20e6
JPEGS_PER_S = 2_000


def _estimate(sources: dict[str, Source], jpegs: Survey) -> None:
    """How long the build should take, from the inputs' sizes, before it starts."""
    size = sum(src.size_hint() for src in sources.values())
    seconds = size / ANNOTATION_BYTES_PER_S + len(jpegs.sources) / JPEGS_PER_S
    print(f"{len(PHASES)} phases: {size / 1e6:,.0f} MB of release files, {len(jpegs.sources):,}"
          f" JPEGs; about {seconds / 60:.0f} min in all ({seconds:.0f} s)", file=sys.stderr,
          flush=True)


class _Phases:
    """Each phase's seconds and the peak RSS reached by its end, for the manifest; on the
    way, where the build is (`phase 3/7: query views`) unless quiet."""

    def __init__(self, writer: Writer, show: bool) -> None:
        self.writer, self.show = writer, show
        self.records: list[dict[str, Any]] = []

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        if self.show:
            print(f"phase {len(self.records) + 1}/{len(PHASES)}: {name}", file=sys.stderr,
                  flush=True)
        start = time.monotonic()
        yield
        self.writer.remap()  # drop the map's pages the phase touched
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.records.append({"phase": name, "seconds": round(time.monotonic() - start, 2),
                             "peak_rss_mb": round(peak_mb, 1)})


@contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal or ssh session) end the build as Ctrl-C does,
    so that it removes its temporary folder on the way out."""
    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


@contextmanager
def _reported(tmp: Path) -> Iterator[None]:
    """A failure of the build as one sentence naming the file, and whether the device is full
    (asked before the temporary folder is removed and frees its space)."""
    try:
        yield
    except OSError as e:
        raise VGFSError(f"{e.filename or tmp}: {e.strerror or e}") from e
    except lmdb.MapFullError as e:  # pragma: no cover - map size is 1 TiB
        raise VGFSError(f"{tmp}: annotation database is full") from e
    except lmdb.Error as e:
        raise VGFSError(f"{tmp / 'annotations.lmdb'}: {e}{_full_hint(tmp)}") from e
    except VGFSError as e:
        full = _full_hint(tmp)
        if not full:
            raise
        raise VGFSError(f"{e}{full}") from e


def _full_hint(tmp: Path) -> str:
    """LMDB and mksquashfs report a full device as EIO or a failed write: say what it was."""
    try:
        st = os.statvfs(tmp)
    except OSError:
        return ""
    return "; no space left on the device" if st.f_bavail * st.f_frsize < (1 << 20) else ""
