"""The JPEGs of the synthetic release: a small pool of encoded blobs per image size, and per
image a pool blob with a comment naming the image, so every file differs while encoding stays
cheap.
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from vgfs.progress import progress
from vgfs.sample.annotations import FOLDERS, SIZES, Plan

JPEG_MODES = ("small", "real", "none")

# Blobs per image size, each split where a comment segment goes.
Pool = dict[tuple[int, int], list[tuple[bytes, bytes]]]


def jpeg_pool(mode: str, seed: int, images: int, show_progress: bool) -> Pool | None:
    """The pool for one of JPEG_MODES, or None when the release has no JPEGs."""
    if mode == "small":
        return _small_pool(seed)
    if mode == "real":
        return _real_pool(seed, images, show_progress)
    return None


def _split(jpeg: bytes) -> tuple[bytes, bytes]:
    """Split after SOI and the JFIF APP0 segment, where each image gets its own comment."""
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:at], jpeg[at:]


def _encode(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _small_pool(seed: int) -> Pool:
    """A few flat two-tone pictures per size: real dimensions, about 3 KB each, so boxes stay
    in range while every file still fits one 4 KiB disk block."""
    rng = random.Random(f"vgfs-sample:{seed}:small")
    pool: Pool = {}
    for (width, height), _ in SIZES:
        blobs = pool[width, height] = []
        for _ in range(4):
            image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in "rgb"))
            ImageDraw.Draw(image).rectangle(
                (0, int(height * (0.4 + 0.3 * rng.random())), width, height),
                fill=tuple(rng.randrange(256) for _ in "rgb"))
            blobs.append(_split(_encode(image, 75)))
    return pool


def _real_pool(seed: int, images: int, show_progress: bool) -> Pool:
    """Blobs sized like real VG JPEGs (20-300 KB, mean about 140 KB): noise at a lower
    resolution, scaled up, then encoded at the quality that comes closest to a sampled size."""
    rng = random.Random(f"vgfs-sample:{seed}:real")
    total_weight = sum(weight for _, weight in SIZES)
    blobs_wanted = max(16, min(256, images // 4))
    counts = [((w, h), max(1, round(blobs_wanted * weight / total_weight)))
              for (w, h), weight in SIZES]
    pool: Pool = {}
    with progress("JPEG pool", sum(n for _, n in counts), "jpeg", enabled=show_progress) as bar:
        for (width, height), n in counts:
            pool[width, height] = []
            for _ in range(n):
                target = 20_000 + 280_000 * rng.betavariate(3, 4)
                pool[width, height].append(_split(_sized_jpeg(rng, width, height, target)))
                bar.update()
    return pool


def _sized_jpeg(rng: random.Random, width: int, height: int, target: float) -> bytes:
    # Coarser noise compresses better: pick the scale whose quality range holds the target.
    per_800x600 = target * 480_000 / (width * height)
    scale = next((k for k, limit in ((32, 50e3), (16, 75e3), (8, 115e3), (4, 180e3),
                                     (2, 250e3)) if per_800x600 <= limit), 1)
    size = (math.ceil(width / scale), math.ceil(height / scale))
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    if scale > 1:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    low, high, best = 5, 95, b""
    while low <= high:  # size grows with quality: binary search
        quality = (low + high) // 2
        data = _encode(image, quality)
        if abs(len(data) - target) < abs(len(best) - target):
            best = data
        if abs(len(data) - target) < 0.03 * target:
            break
        low, high = (quality + 1, high) if len(data) < target else (low, quality - 1)
    return best


def write_jpegs(seed: int, index: int, plans: list[Plan], pool: Pool, out: Path) -> None:
    """Each image reuses a pool blob plus a comment naming it, so every file differs."""
    rng = random.Random(f"vgfs-sample:{seed}:jpeg:{index}")
    for im in plans:
        blobs = pool[im.width, im.height]
        head, tail = blobs[int(rng.random() * len(blobs))]
        comment = b"vgfs synthetic Visual Genome image %d" % im.image_id
        with open(out / FOLDERS[im.folder] / f"{im.image_id}.jpg", "wb") as f:
            f.write(b"".join((head, b"\xff\xfe", (len(comment) + 2).to_bytes(2, "big"),
                              comment, tail)))
