"""Query views on real mounts: members equal a straight scan of the release, names are safe."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import RELEASE, lookups_for
from vgfs.query import (
    NAME_MAX,
    VIEWS,
    escape,
    extract,
    key,
    load_aliases,
    pos_key,
    unescape,
)


def _load(name: str) -> list:
    return json.loads((RELEASE / name).read_bytes())


def _aliases(name: str, fold: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (RELEASE / name).read_text().splitlines():
        names = [n.casefold() if fold else n for n in line.split(",")]
        for alias in names[1:]:
            if alias and alias != names[0] and names[0]:
                out.setdefault(alias, names[0])
    return out


def _scan_release() -> dict[str, dict[str, set[int]]]:
    """The views, computed the obvious way from the release files (the README.txt rules)."""
    views: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    object_alias = _aliases("object_alias.txt", False)
    predicate_alias = _aliases("relationship_alias.txt", True)
    for entry in _load("objects.json"):
        for obj in entry["objects"]:
            for name in obj["names"]:
                views["by-object"][name].add(entry["image_id"])
                views["by-object"][object_alias.get(name, name)].add(entry["image_id"])
            for synset in obj["synsets"]:
                views["by-synset"][synset].add(entry["image_id"])
    for entry in _load("attributes.json"):
        for obj in entry["attributes"]:
            for attr in obj.get("attributes", []):
                views["by-attribute"][attr].add(entry["image_id"])
    for entry in _load("relationships.json"):
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
    missing = real_mount / "by-object" / "unicorn"
    assert not missing.exists()

    def look() -> None:
        for _ in range(10):
            assert not missing.exists()

    assert lookups_for(real_mount, look) == 0


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


# --- the pure functions, without a mount ------------------------------------------------------


def test_extract_over_the_release_gives_the_scan(release_entries: dict) -> None:
    """What the build indexes, entry by entry, equals the obvious scan of the release; each
    (view, name) comes once per entry."""
    object_alias = load_aliases((RELEASE / "object_alias.txt").read_text())
    predicate_alias = load_aliases((RELEASE / "relationship_alias.txt").read_text(), fold=True)
    views: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for kind, entries in release_entries.items():
        for image_id, entry in entries.items():
            pairs = list(extract(kind, entry, object_alias, predicate_alias, "objects"))
            assert len(pairs) == len(set(pairs)), (kind, image_id)
            for view, name in pairs:
                views[view][name].add(image_id)
    assert views == _scan_release()


def test_load_aliases_reads_the_release_files() -> None:
    """alias -> canonical, the first line naming an alias winning; predicates case-folded."""
    for name, fold in (("object_alias.txt", False), ("relationship_alias.txt", True)):
        got = load_aliases((RELEASE / name).read_text(), fold)
        assert got == _aliases(name, fold) and len(got) > 1000, name
    assert load_aliases("dog,doggy,dog\nhound,doggy\n,orphan\ncat\n") == {"doggy": "dog"}
    assert load_aliases("On Top Of,ON,on top\n", fold=True) == {"on": "on top of",
                                                              "on top": "on top of"}


def test_extract_ids_and_old_object_names() -> None:
    """by-coco and by-flickr take integer ids only; v1.0 objects have one `name`; attributes
    stand in for objects when there is no objects.json."""
    meta = {"image_id": 1, "coco_id": 42, "flickr_id": True}
    assert list(extract("meta", meta, {}, {}, "objects")) == [("by-coco", "42")]
    assert list(extract("meta", {"image_id": 1, "coco_id": None}, {}, {}, "objects")) == []
    v10 = {"id": 1, "objects": [{"id": 5, "name": "dog"}, {"id": 6, "names": ["cat", 3]}]}
    assert set(extract("objects", v10, {"doggy": "x"}, {}, "objects")) == {
        ("by-object", "dog"), ("by-object", "cat")}
    attrs = {"image_id": 1, "attributes": [{"names": ["dog"], "synsets": ["dog.n.01"],
                                            "attributes": ["brown", "brown", ["x"]]}]}
    assert set(extract("attributes", attrs, {"dog": "canine"}, {}, "attributes")) == {
        ("by-object", "dog"), ("by-object", "canine"), ("by-synset", "dog.n.01"),
        ("by-attribute", "brown")}
    assert set(extract("attributes", attrs, {}, {}, "objects")) == {("by-attribute", "brown")}


@pytest.mark.parametrize("name, escaped", [
    (".", b"%2E"), ("..", b"%2E%2E"), ("counts.json", b"counts%2Ejson"), ("", b"%"),
    ("t/v", b"t%2Fv"), ("50%", b"50%25"), ("a\0b", b"a%00b"), ("%2F", b"%252F"),
    ("dog ", b"dog "), ("ON", b"ON"), ("a.b", b"a.b"), ("...", b"..."), ("\u00e9", b"\xc3\xa9"),
])
def test_escape_examples(name: str, escaped: bytes) -> None:
    """The README's rules, one case each: trailing spaces and case stay, only the listed
    characters and names change."""
    assert escape(name) == escaped
    assert unescape(escaped) == name


def test_unescape_leaves_other_percent_signs() -> None:
    for name in (b"%41", b"%2e", b"100%", b"%%", b"%2"):
        assert unescape(name) == name.decode()


def test_long_names_are_cut_with_a_digest() -> None:
    """Over 255 bytes: cut at a character boundary, then %~ and 16 hex digits of the SHA-256
    of the whole escaped name, so two long names sharing a prefix still differ."""
    for name in ("x" * 300, "\u00e9" * 200, "/" * 100):
        escaped = escape(name)
        full = name.translate({ord("/"): "%2F"}).encode()
        assert len(escaped) <= NAME_MAX and escaped.decode()  # still valid UTF-8
        assert escaped.endswith(b"%~" + hashlib.sha256(full).hexdigest()[:16].encode())
        assert full.startswith(escaped[:-18])
    assert len(escape("x" * 300)) == NAME_MAX
    assert escape("x" * 255) == b"x" * 255
    assert escape("x" * 300) != escape("x" * 301)


def test_index_keys_sort_by_view_then_position() -> None:
    """LMDB sorts keys bytewise: a view's names list in position order, views never mix."""
    keys = [pos_key(view, p) for view in VIEWS for p in (0, 1, 255, 256, 70000, 2**32 - 1)]
    assert sorted(keys) == keys and len(set(keys)) == len(keys)
    assert key("by-object", b"dog") == bytes([VIEWS.index("by-object")]) + b"dog"
    assert key("by-object", b"dog") != key("by-attribute", b"dog")
