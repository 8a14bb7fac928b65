"""Walks of the whole mount (find, du, tar, cp -a, rsync -a: what updatedb, backup agents and
curious users run) see the dataset, not the query index: the views are found by name only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import RELEASE, mounted
from vgfs.query import VIEWS

# What a walk of the real excerpts' mount meets at the top.
TOP = {"README.txt", "VG_100K", "VG_100K_2", "images", "by-id",
       *(p.name for p in RELEASE.iterdir() if p.is_file())}


def _tops(paths: list[str], root: Path) -> set[str]:
    return {Path(p).relative_to(root).parts[0] for p in paths if Path(p) != root}


def test_find_du_tar_cp_rsync_walk_the_dataset_only(real_mount: Path, tmp_path: Path) -> None:
    found = subprocess.run(["find", str(real_mount)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert _tops(found, real_mount) == TOP
    assert not any(f"/{view}" in line for line in found for view in VIEWS)
    # One JPEG folder entry per release JPEG, one directory of 8 or 9 files per image.
    assert len([p for p in found if "/images/" in p]) > 60 * 8
    du = subprocess.run(["du", "-a", str(real_mount)], capture_output=True, text=True,
                        check=True).stdout.splitlines()
    assert _tops([line.split("\t", 1)[1] for line in du], real_mount) == TOP
    listing = subprocess.run(["tar", "-cf", "-", "-C", str(real_mount), "."],
                             capture_output=True, check=True).stdout
    names = subprocess.run(["tar", "-tf", "-"], input=listing, capture_output=True,
                           check=True).stdout.decode().splitlines()
    assert {n.removeprefix("./").split("/")[0] for n in names} - {""} == TOP
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(real_mount), str(copy)], check=True)
    assert set(os.listdir(copy)) == TOP
    synced = tmp_path / "synced"
    subprocess.run(["rsync", "-a", f"{real_mount}/", str(synced)], check=True)
    assert set(os.listdir(synced)) == TOP
    assert (synced / "objects.json").read_bytes() == (RELEASE / "objects.json").read_bytes()


def test_views_are_found_by_name(real_mount: Path) -> None:
    """Hidden from listings, not from lookups: `ls by-object/` and what is under it work."""
    assert "by-object" not in os.listdir(real_mount)
    names = os.listdir(real_mount / "by-object")
    assert "counts.json" in names and len(names) > 100
    dog = real_mount / "by-object" / "dog"
    if dog.exists():
        assert all((dog / i / "meta.json").is_file() for i in os.listdir(dog))


def test_list_views_lists_them(real_dataset: Path, tmp_path: Path) -> None:
    with mounted(real_dataset, tmp_path / "mp", "list_views") as mp:
        assert {"by-object", "by-attribute", "by-predicate", "by-synset"} <= set(os.listdir(mp))
