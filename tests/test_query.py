"""Query views on real mounts: members equal a straight scan of the release, names are safe."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import RELEASE, vgfs
from vgfs.query import NAME_MAX, escape, unescape


def _scan_release() -> dict[str, dict[str, set[int]]]:
    """The views, computed the obvious way from the release files (the README.txt rules)."""
    def load(name: str) -> list:
        return json.loads((RELEASE / name).read_bytes())

    def aliases(name: str, fold: bool) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in (RELEASE / name).read_text().splitlines():
            names = [n.casefold() if fold else n for n in line.split(",")]
            for alias in names[1:]:
                if alias and alias != names[0] and names[0]:
                    out.setdefault(alias, names[0])
        return out

    views: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    object_alias = aliases("object_alias.txt", False)
    predicate_alias = aliases("relationship_alias.txt", True)
    for entry in load("objects.json"):
        for obj in entry["objects"]:
            for name in obj["names"]:
                views["by-object"][name].add(entry["image_id"])
                views["by-object"][object_alias.get(name, name)].add(entry["image_id"])
            for synset in obj["synsets"]:
                views["by-synset"][synset].add(entry["image_id"])
    for entry in load("attributes.json"):
        for obj in entry["attributes"]:
            for attr in obj.get("attributes", []):
                views["by-attribute"][attr].add(entry["image_id"])
    for entry in load("relationships.json"):
        for rel in entry["relationships"]:
            pred = rel["predicate"].casefold()
            views["by-predicate"][pred].add(entry["image_id"])
            views["by-predicate"][predicate_alias.get(pred, pred)].add(entry["image_id"])
    return views


def test_views_equal_a_scan_of_the_release(real_mount: Path) -> None:
    expected = _scan_release()
    assert set(expected) == {"by-object", "by-synset", "by-attribute", "by-predicate"}
    for view, names in expected.items():
        root = real_mount / view
        listed = {unescape(n.encode()) for n in os.listdir(root)} - {"counts.json"}
        assert listed == set(names), view
        counts = json.loads((root / "counts.json").read_bytes())
        assert list(counts.values()) == sorted(counts.values(), reverse=True)
        for name, ids in names.items():
            d = root / escape(name).decode()
            members = os.listdir(d)
            assert members == [str(i) for i in sorted(ids)], (view, name)
            assert d.stat().st_size == len(ids) == counts[escape(name).decode()]
    # No coco or flickr ids in the excerpts: those views are absent, not empty.
    assert not (real_mount / "by-coco").exists()


def test_views_lead_into_images(real_mount: Path) -> None:
    link = real_mount / "by-object/wall/1"
    assert os.readlink(link) == "../../images/1"
    assert os.path.realpath(link) == str(real_mount / "images/1")
    out = subprocess.run(["find", "-L", str(real_mount / "by-predicate/on"), "-name",
                          "graph.json"], capture_output=True, text=True, check=True).stdout
    found = out.split()
    assert len(found) == len(os.listdir(real_mount / "by-predicate/on"))
    assert json.loads(Path(found[0]).read_bytes())["image_id"] == int(Path(found[0]).parent.name)
    for missing in ("by-object/no such thing", "by-object/wall/2", "by-object/wall/01"):
        with pytest.raises(OSError) as exc:
            os.stat(real_mount / missing)
        assert exc.value.errno == errno.ENOENT


def test_large_view_listing_resumes_in_order(synthetic_mount: Path) -> None:
    """The most frequent name spans many readdir calls; the listing is whole and sorted."""
    counts = json.loads((synthetic_mount / "by-object/counts.json").read_bytes())
    name, count = next(iter(counts.items()))
    assert count > 100
    listed = os.listdir(synthetic_mount / "by-object" / name)
    assert listed == sorted(listed, key=int) and len(listed) == count
    coco = sorted(set(os.listdir(synthetic_mount / "by-coco")) - {"counts.json"})
    assert coco, "the synthetic sample has coco ids"
    target = os.readlink(synthetic_mount / "by-coco" / coco[0])
    meta = json.loads((synthetic_mount / "by-coco" / coco[0] / "meta.json").read_bytes())
    assert target == f"../images/{meta['image_id']}" and str(meta["coco_id"]) == coco[0]


def test_negative_view_lookups_are_cached(real_mount: Path) -> None:
    def lookups() -> int:
        stats = json.loads(vgfs("stats", str(real_mount), "--json").stdout)
        return stats["ops"]["lookup"]["count"]

    missing = real_mount / "by-object" / "unicorn"
    assert not missing.exists()
    before = lookups()
    for _ in range(10):
        assert not missing.exists()
    assert lookups() == before


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_escaping_round_trips_and_is_safe(name: str) -> None:
    escaped = escape(name)
    assert b"/" not in escaped and b"\0" not in escaped
    assert escaped not in (b"", b".", b"..", b"counts.json")
    assert len(escaped) <= NAME_MAX
    if b"%~" not in escaped:
        assert unescape(escaped) == name


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=300), min_size=2,
                max_size=20, unique=True))
def test_escaping_never_collides(names: list[str]) -> None:
    assert len({escape(n) for n in names}) == len(names)
