"""Writing the synthetic release: chunks generated in order, by worker processes for large
samples, and appended to the streamed files as they arrive, so memory stays bounded at the
full 108,077 images.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from vgfs.errors import VGFSError
from vgfs.progress import progress
from vgfs.sample.annotations import CHUNK, FOLDERS, STREAMED_FILES, Plan, annotate, plan_chunks
from vgfs.sample.jpegs import JPEG_MODES, Pool, jpeg_pool, write_jpegs
from vgfs.sample.vocab import write_whole_files

# Below this, starting worker processes costs more than it saves.
PARALLEL_MIN_IMAGES = 4 * CHUNK

# Each chunk's entries for a streamed file, by file name.
Parts = dict[str, bytes]


def write_sample(out: Path, images: int = 100, seed: int = 0, jpeg: str = "small",
                 show_progress: bool = True) -> None:
    """Write a synthetic release folder at `out` (created; must not exist or be empty)."""
    workers = len(os.sched_getaffinity(0)) if images >= PARALLEL_MIN_IMAGES else 1
    _write(Path(out), images, seed, jpeg, show_progress, workers)


def _write(out: Path, images: int, seed: int, jpeg: str, show_progress: bool,
           workers: int) -> None:
    if jpeg not in JPEG_MODES:
        raise VGFSError(f"unknown JPEG mode {jpeg!r}; choose one of {', '.join(JPEG_MODES)}")
    if images < 0:
        raise VGFSError(f"cannot write {images} images; give a count of 0 or more")
    _prepare(out, jpeg)
    pool = jpeg_pool(jpeg, seed, images, show_progress)
    with ExitStack() as stack:
        streams = _Streams({name: stack.enter_context(open(out / name, "wb", buffering=1 << 20))
                            for name in STREAMED_FILES})
        bar = stack.enter_context(progress("sample", images, "img", enabled=show_progress))
        for n, parts in _chunks(seed, images, pool, out, workers):
            streams.write(parts)
            bar.update(n)
        streams.finish()
    write_whole_files(out)


def _prepare(out: Path, jpeg: str) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise VGFSError(f"{out}: already exists and is not an empty folder; choose a new path")
    out.mkdir(parents=True, exist_ok=True)
    if jpeg != "none":
        for folder in FOLDERS:
            (out / folder).mkdir()


def _chunk(seed: int, index: int, plans: list[Plan], pool: Pool | None, out: Path) -> Parts:
    """Generate chunk `index`: its JPEGs are written here, its annotations returned."""
    if pool is not None:
        write_jpegs(seed, index, plans, pool, out)
    return annotate(seed, index, plans)


# Worker processes get the pool once, at start-up, rather than with every chunk.
_worker_pool: Pool | None = None


def _init_worker(pool: Pool | None) -> None:
    global _worker_pool
    _worker_pool = pool


def _chunk_in_worker(seed: int, index: int, plans: list[Plan], out: Path) -> Parts:
    return _chunk(seed, index, plans, _worker_pool, out)


def _chunks(seed: int, images: int, pool: Pool | None, out: Path, workers: int
            ) -> Iterator[tuple[int, Parts]]:
    """Yield (images, parts) chunk by chunk, in order. With workers, a bounded number of
    chunks is in flight, so memory stays bounded."""
    chunks = plan_chunks(seed, images)
    if workers <= 1:
        for index, plans in enumerate(chunks):
            yield len(plans), _chunk(seed, index, plans, pool, out)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pool,)) as ex:
        pending: deque[tuple[int, Future[Parts]]] = deque()
        for index, plans in enumerate(chunks):
            pending.append((len(plans), ex.submit(_chunk_in_worker, seed, index, plans, out)))
            if len(pending) >= 2 * workers:
                n, future = pending.popleft()
                yield n, future.result()
        while pending:
            n, future = pending.popleft()
            yield n, future.result()


class _Streams:
    """The streamed files, each open from its first entry to its closing bracket."""

    def __init__(self, files: dict[str, IO[bytes]]) -> None:
        self.files = files
        self.unwritten = set(files)  # no entry yet, so the next one needs no comma
        for name, f in files.items():
            f.write(STREAMED_FILES[name][:1])

    def write(self, parts: Parts) -> None:
        for name, data in parts.items():
            if data:
                f = self.files[name]
                if name not in self.unwritten:
                    f.write(b",")
                f.write(data)
                self.unwritten.discard(name)

    def finish(self) -> None:
        for name, f in self.files.items():
            f.write(STREAMED_FILES[name][1:])
