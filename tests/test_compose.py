"""Files made from entries of the release (compose.py): by-id/<id>.json is byte for byte what
the official driver's own preprocessing writes, and graph.json without scene_graphs.json is the
scene graph that the sources hold, nothing invented."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import entries_by_id
from vgfs import compose
from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.dataset import Dataset
from vgfs.tree import BY_ID, Tree


@pytest.fixture(scope="module")
def driver_by_id(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Path:
    """The official driver's preprocessing, run on a copy of the real excerpts:
    add_attrs_to_scene_graphs (rewrites scene_graphs.json), then save_scene_graphs_by_id."""
    from visual_genome import local

    data = tmp_path_factory.mktemp("driver") / "data"
    shutil.copytree(release, data, ignore=shutil.ignore_patterns("VG_100K*"))
    local.add_attrs_to_scene_graphs(data_dir=str(data))
    local.save_scene_graphs_by_id(data_dir=str(data), image_data_dir=str(data / "by-id"))
    return data / "by-id"


# The composition graph.json has always had, written out as dicts: the oracle for compose.graph.
def compose_graph(image_id: int, attributes: dict[str, Any] | None,
                  objects: dict[str, Any] | None,
                  relationships: dict[str, Any] | None) -> dict[str, Any] | None:
    """An image's graph.json in the scene_graphs.json format, for a release without that file:
    composed from the image's attributes.json, objects.json and relationships.json entries
    (None where a file has none). None when it has none of them."""
    if attributes is None and objects is None and relationships is None:
        return None
    if attributes is not None:
        nodes = attributes["attributes"]  # the objects again, with their attributes
    elif objects is not None:
        nodes = objects["objects"]
    else:
        nodes = []
    edges = []
    for r in (relationships or {}).get("relationships", []):
        flat = {k: r[k] for k in ("relationship_id", "id", "predicate", "synsets") if k in r}
        for end in ("subject", "object"):
            endpoint = r.get(end)
            if isinstance(endpoint, dict):
                oid = endpoint.get("object_id", endpoint.get("id"))
                if oid is not None:
                    flat[end + "_id"] = oid
        edges.append(flat)
    return {"image_id": image_id, "objects": nodes, "relationships": edges}


def test_by_id_is_what_the_official_driver_writes(driver_by_id: Path, real_ds: Dataset,
                                                  real_tree: Tree) -> None:
    """Byte for byte, for every image: the dataset's bytes, the size recorded at build time,
    and what the mount serves, compact and pretty alike (by-id is the driver's format)."""
    written = sorted(driver_by_id.iterdir())
    assert [p.name for p in written] == sorted(f"{i}.json" for i in range(1, 61))
    compact = Contents(real_ds, LRUCache(16 << 20))
    pretty = Contents(real_ds, LRUCache(16 << 20), pretty=True)
    for path in written:
        image_id = int(path.stem)
        expected = path.read_bytes()
        assert real_ds.by_id_bytes(image_id) == expected, image_id
        node = real_tree.lookup(BY_ID, path.name.encode())
        assert node.size == real_ds.image(image_id).by_id_size == len(expected)
        assert bytes(compact.read(node, 0, len(expected) + 10)) == expected
        assert json.loads(bytes(pretty.read(node, 0, pretty.size(node)))) == json.loads(expected)


def test_attribute_ids_count_across_the_whole_file(real_ds: Dataset, release: Path) -> None:
    """The driver numbers attributes in attributes.json order from 0, across images: each
    image's first attribute id is the number of objects of all entries before it."""
    entries = json.loads((release / "attributes.json").read_bytes())
    base = 0
    for entry in entries:
        image_id = entry["image_id"]
        assert real_ds.image(image_id).attr_base == base, image_id
        attrs = json.loads(real_ds.by_id_bytes(image_id))["attributes"]
        assert [a["attribute_id"] for a in attrs] == list(range(base, base + len(attrs)))
        assert [a["attribute"] for a in attrs] == entry["attributes"]
        assert all(a["image_id"] == image_id and "attributes" not in a for a in attrs)
        base += len(entry["attributes"])
    assert base > 1000


# --- graph.json without scene_graphs.json -----------------------------------------------------


def _b(value: object) -> bytes:
    return json.dumps(value).encode()


def test_graph_takes_objects_from_attributes_then_objects() -> None:
    """attributes.json's objects carry their attributes; objects.json's when it is alone;
    none at all when only relationships.json holds the image."""
    attrs = {"image_id": 3, "attributes": [{"object_id": 1, "names": ["a"],
                                            "attributes": ["red"]}]}
    objs = {"image_id": 3, "objects": [{"object_id": 1, "names": ["a"]},
                                       {"object_id": 2, "names": ["b"]}]}
    rels = {"image_id": 3, "relationships": []}
    both = json.loads(compose.graph(3, _b(attrs), _b(objs), _b(rels)))
    assert both == {"image_id": 3, "objects": attrs["attributes"], "relationships": []}
    alone = json.loads(compose.graph(3, None, _b(objs), None))
    assert alone == {"image_id": 3, "objects": objs["objects"], "relationships": []}
    assert json.loads(compose.graph(3, None, None, _b(rels)))["objects"] == []
    assert compose.graph(3, None, None, None) is None


def test_graph_relationships_are_flat_and_invent_no_ids() -> None:
    """subject_id/object_id from the endpoints' object_id (v1.2+) or id (v1.0); an endpoint
    without one gets no key; only the relationship's own keys are kept."""
    rels = {"image_id": 5, "relationships": [
        {"relationship_id": 10, "predicate": "ON", "synsets": ["along.r.01"],
         "subject": {"object_id": 1, "name": "man"}, "object": {"object_id": 2, "names": ["x"]}},
        {"id": 11, "predicate": "has", "subject": {"id": 3}, "object": {"id": 4}},
        {"relationship_id": 12, "predicate": "near", "subject": {"name": "no id"},
         "object": "not an object", "extra": 1},
    ]}
    got = json.loads(compose.graph(5, None, None, _b(rels)))["relationships"]
    assert got == [
        {"relationship_id": 10, "predicate": "ON", "synsets": ["along.r.01"], "subject_id": 1,
         "object_id": 2},
        {"id": 11, "predicate": "has", "subject_id": 3, "object_id": 4},
        {"relationship_id": 12, "predicate": "near"},
    ]


def test_graph_of_takes_the_stored_entry_as_it_is() -> None:
    """With scene_graphs.json, graph.json is its entry's bytes, not a composition."""
    asked: list[str] = []

    def entry(kind: str) -> bytes | None:
        asked.append(kind)
        return b'{"image_id": 1,  "objects": [], "relationships": []}' if kind == "graph" else None

    assert compose.graph_of(1, entry, True) == entry("graph")
    assert asked == ["graph", "graph"]
    assert json.loads(compose.graph_of(1, lambda k: None if k != "relationships" else _b(
        {"image_id": 1, "relationships": []}), False)) == {"image_id": 1, "objects": [],
                                                           "relationships": []}


def test_by_id_without_an_attributes_entry_is_the_graph() -> None:
    """The driver adds `attributes` only to images that attributes.json holds; an entry
    without the key gives an empty list, numbered from nothing."""
    sg = {"image_id": 2, "objects": [], "relationships": []}
    assert compose.by_id(_b(sg), None, 17) == _b(sg)
    got = json.loads(compose.by_id(_b(sg), _b({"image_id": 2}), 17))
    assert got == {**sg, "attributes": []}


def test_composed_graph_holds_what_the_sources_hold(no_scene_graphs: Dataset,
                                                    release: Path) -> None:
    """Every image's composed graph equals the composition from the release's own entries
    (compose_graph below, the semantics graph.json has always had), its size is recorded
    exactly, and by-id/ adds the attributes to it as the driver would."""
    ds = no_scene_graphs
    kinds = {k: entries_by_id(release / f"{k}.json")
             for k in ("attributes", "objects", "relationships")}
    assert ds.manifest["kinds"]["graph"]["version"] == "composed"
    for image_id in range(1, 61):
        data = ds.graph_bytes(image_id)
        expected = compose_graph(image_id, *(kinds[k].get(image_id) for k in kinds))
        assert json.loads(data) == expected, image_id
        assert ds.entry("graph", image_id) == expected
        record = ds.image(image_id)
        assert record.graph_size == len(data)
        by_id = ds.by_id_bytes(image_id)
        assert record.by_id_size == len(by_id)
        assert json.loads(by_id) == {**expected, "attributes": [
            {"image_id": image_id, "attribute": obj, "attribute_id": record.attr_base + i}
            for i, obj in enumerate(kinds["attributes"][image_id]["attributes"])]}


def test_composed_graph_of_a_lone_surrogate_escape() -> None:
    """`"tr\\ud800ees"` is valid JSON grammar: the composed graph holds the same string."""
    attrs = b'{"image_id": 1, "attributes": [{"object_id": 5, "names": ["tr\\ud800ees"]}]}'
    got = json.loads(compose.graph(1, attrs, None, None))
    assert got["objects"] == [{"object_id": 5, "names": ["tr\ud800ees"]}]
