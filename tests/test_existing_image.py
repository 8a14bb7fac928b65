"""A site's existing SquashFS image of the JPEGs: indexed in place, served through the mount
whatever options it was built with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import JPEGS, RELEASE, mounted, site_image, vgfs
from vgfs.dataset import open_dataset


@pytest.mark.parametrize("options, slow", [
    (("-comp", "gzip"), 4),                                   # compressed blocks, fragments
    (("-comp", "xz", "-b", "4K", "-always-use-fragments"), 4),
    (("-comp", "zstd", "-no-fragments"), None),  # blocks that don't shrink stay stored
    (("-noD", "-no-fragments", "-no-sparse"), 0),            # what vgfs builds: one pread each
])
def test_existing_image_is_indexed_in_place_and_served(tmp_path: Path, options: tuple,
                                                       slow: int | None) -> None:
    image = site_image(tmp_path / "site.sqfs", *options)
    dataset = tmp_path / "dataset"
    # The release's own JPEG folders are ignored when --images names an image.
    vgfs("build", str(RELEASE), "-o", str(dataset), "--images", str(image), "--quiet")
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["images"]["path"] == str(image)
    assert manifest["counts"]["jpegs"] == manifest["images"]["jpegs"] == len(JPEGS)
    assert not (dataset / "images.sqfs").exists(), "an existing image is never copied"
    with open_dataset(dataset) as ds:
        # Format 3's manifest no longer counts them ("slow_path"): the index says it per JPEG.
        off_fast_path = sum(ds.jpeg_index(i).path is not None for i in JPEGS)
        if slow is not None:
            assert off_fast_path == slow
        for image_id, rel in JPEGS.items():
            assert ds.jpeg(image_id) == (RELEASE / rel).read_bytes()
    with mounted(dataset, tmp_path / "mp") as mp:
        for image_id, rel in JPEGS.items():
            data = (mp / "images" / str(image_id) / "image.jpg").read_bytes()
            assert data == (RELEASE / rel).read_bytes()
        assert vgfs("verify", str(dataset), "--quiet").returncode == 0


def test_damaged_existing_image_gives_eio_not_a_crash(tmp_path: Path) -> None:
    image = site_image(tmp_path / "site.sqfs", "-comp", "gzip")
    dataset = tmp_path / "dataset"
    vgfs("build", str(RELEASE), "-o", str(dataset), "--images", str(image), "--quiet")
    with open_dataset(dataset) as ds:
        offset = ds.jpeg_index(4)[0]
        entry_path = ds.jpeg_index(4)[3]
    assert entry_path is not None
    with mounted(dataset, tmp_path / "mp") as mp:
        size = image.stat().st_size
        with open(image, "r+b") as f:  # garbage over the data blocks, metadata left intact
            f.seek(96)
            f.write(b"\xa5" * min(size // 2, size - 96 - 8192))
        errors = 0
        for image_id in JPEGS:
            try:
                (mp / "images" / str(image_id) / "image.jpg").read_bytes()
            except OSError as e:
                assert e.errno == 5  # EIO
                errors += 1
        assert errors >= 1
        # Everything else still answers.
        assert json.loads((mp / "images/4/graph.json").read_bytes())["image_id"] == 4
        stats = json.loads(vgfs("stats", str(mp), "--json").stdout)
        assert stats["errors"].get("read", 0) >= 1
    assert offset >= 0
