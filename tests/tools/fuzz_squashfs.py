"""Long-running mutation fuzzer for vgfs.squashfs; the test suite runs a short bounded version.

Usage: python tests/tools/fuzz_squashfs.py --seconds 600 [--seed N] [--out DIR]

Builds small seed images with mksquashfs, then repeatedly flips bytes, overwrites runs and
truncates them. Every operation on a mutated image must succeed or raise SquashFSError within
a time limit; anything else is saved to --out and reported, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from vgfs.squashfs import SquashFSError, SquashFSImage

TIME_LIMIT = 5.0  # seconds for all operations on one image; a hang or blow-up exceeds it
READ_LIMIT = 1 << 20  # bytes read per file, since a corrupt size may claim terabytes
SUPERBLOCK_POINTERS = (32, 48, 56, 64, 72, 80, 88)  # root inode reference and table starts


class Timeout(Exception):
    """An operation ran past TIME_LIMIT: the reader is stuck or doing unbounded work."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the main thread with Timeout after seconds (SIGALRM, so POSIX only)."""

    def expire(signum: int, frame: object) -> None:
        raise Timeout(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def exercise(path: Path) -> None:
    """Use every public operation once per file; raises SquashFSError on a corrupt image."""
    with SquashFSImage(path, cache_bytes=1 << 20) as image:
        for i, entry in enumerate(image.walk()):
            image.read(entry, 0, READ_LIMIT)
            image.read(entry, max(entry.size - 5000, 0), 3000)
            entry.extent()
            if i % 8:  # each lookup scans part of a directory, so a sample keeps runs fast
                continue
            # A corrupt directory index may hide a name the full scan found.
            with contextlib.suppress(FileNotFoundError):
                image.lookup(entry.path)
        with contextlib.suppress(FileNotFoundError):
            image.lookup("a/b/missing")


def mksquashfs(*args: str | Path) -> None:
    """Run mksquashfs quietly; raises CalledProcessError with its output on failure."""
    cmd = ["mksquashfs", *map(str, args), "-noappend", "-quiet", "-no-progress"]
    subprocess.run(cmd, check=True, capture_output=True)


def mksquashfs_compressors() -> list[str]:
    """Compressors this mksquashfs was built with, from its help text."""
    proc = subprocess.run(["mksquashfs", "-help"], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    start = next(i for i, line in enumerate(lines) if "Compressors available" in line) + 1
    found = []
    for line in lines[start:]:
        name = line.split()[0] if line.split() else ""
        if name not in ("gzip", "lzma", "lzo", "lz4", "xz", "zstd"):
            break
        found.append(name)
    return found


def check(path: Path) -> bool:
    """Exercise an image within TIME_LIMIT; True when it was rejected with SquashFSError.

    Anything else escapes: another exception, Timeout, or AssertionError for a SquashFSError
    whose message is not one sentence naming the image.
    """
    try:
        with time_limit(TIME_LIMIT):
            exercise(path)
    except SquashFSError as e:
        message = str(e)
        if str(path) not in message or not message.endswith(".") or ". " in message:
            raise AssertionError(f"badly formed error message: {message!r}") from e
        return True
    return False


def make_seed_tree(root: Path) -> None:
    """Files covering blocks, tails, empty files, nesting, links, a sparse run and a directory
    big enough (a listing over one metadata block) to get a directory index."""
    rng = random.Random(7)
    (root / "a" / "b").mkdir(parents=True)
    (root / "wide").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "a" / "text.txt").write_bytes(b"hello squashfs\n" * 700)
    (root / "a" / "b" / "noise.bin").write_bytes(rng.randbytes(9000))
    (root / "a" / "b" / "zeros.bin").write_bytes(bytes(12288) + b"end")
    for i in range(300):
        (root / "wide" / f"entry-with-a-long-name-{i:03d}").write_bytes(b"%d\n" % i * (i % 50))
    os.link(root / "a" / "text.txt", root / "a" / "b" / "hard")  # gets an extended inode
    os.symlink("a/text.txt", root / "link")


def build_seed_images(directory: Path, compressors: tuple[str, ...] = ("gzip",)) -> list[Path]:
    """Small 4K-block images: one per compressor, plus one with nothing compressed so that
    mutations reach the parsers rather than stop at the decompressor."""
    src = directory / "seed-src"
    make_seed_tree(src)
    images = []
    for comp in compressors:
        images.append(directory / f"{comp}.sqfs")
        mksquashfs(src, images[-1], "-b", "4K", "-comp", comp)
    images.append(directory / "stored.sqfs")
    mksquashfs(src, images[-1], "-b", "4K", "-noI", "-noId", "-noD", "-noF", "-noX")
    return images


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random byte changes, biased towards the metadata tables at the image's end, and
    sometimes a superblock pointer nudged so that a table is parsed from the wrong place."""
    buf = bytearray(data)
    if rng.random() < 0.15:
        pos = rng.choice(SUPERBLOCK_POINTERS)
        value = int.from_bytes(buf[pos : pos + 8], "little") + rng.randint(-64, 64)
        buf[pos : pos + 8] = (value % 2**64).to_bytes(8, "little")
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(len(buf) // 2 if rng.random() < 0.7 else 0, len(buf))
        kind = rng.random()
        if kind < 0.6:
            buf[pos] = rng.randrange(256)
        elif kind < 0.8:
            buf[pos] ^= 1 << rng.randrange(8)
        else:
            run = rng.choice((b"\x00", b"\xff", b"\x7f")) * rng.randint(1, 16)
            buf[pos : pos + len(run)] = run
    if rng.random() < 0.1:
        del buf[rng.randrange(len(buf)) :]
    return bytes(buf)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    print(f"seed {seed}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = []
        for image in build_seed_images(Path(tmp), tuple(mksquashfs_compressors())):
            try:
                exercise(image)
            except SquashFSError as e:  # e.g. the compressor's Python package is missing
                print(f"skipping seed: {e}", file=sys.stderr)
                continue
            seeds.append(image.read_bytes())
        target = Path(tmp) / "mutated.sqfs"
        deadline = time.monotonic() + args.seconds
        runs = errors = failures = 0
        while time.monotonic() < deadline:
            data = mutate(rng.choice(seeds), rng)
            target.write_bytes(data)
            runs += 1
            try:
                errors += check(target)
            except Exception:  # noqa: BLE001 - a fuzzer counts every crash, whatever its type
                failures += 1
                args.out.mkdir(parents=True, exist_ok=True)
                saved = args.out / f"failure-{seed}-{runs}.sqfs"
                saved.write_bytes(data)
                print(f"unexpected error, image saved to {saved}:", file=sys.stderr)
                traceback.print_exc()
    print(f"{runs} images, {errors} rejected with SquashFSError, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
