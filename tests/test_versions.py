"""Schema versions: a v1.0-shaped release (the real excerpts with v1.0 key names) is detected
as such, stored as released, and composes a graph from what its files hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RELEASE
from vgfs.build import build
from vgfs.dataset import open_dataset


def _rename(obj: dict, old: str, new: str) -> dict:
    return {new if k == old else k: v for k, v in obj.items()}


def _v10_release(tmp_path: Path) -> Path:
    """The excerpts in v1.0 shape: `id` for image and item ids, `object_names`, no synsets."""
    rel = tmp_path / "v1.0"
    rel.mkdir()

    def load(name: str) -> list:
        return json.loads((RELEASE / name).read_bytes())

    def obj10(o: dict) -> dict:
        o = _rename(o, "object_id", "id")
        o.pop("synsets", None)
        o.pop("merged_object_ids", None)
        return o

    files = {
        "image_data.json": [_rename(e, "image_id", "id") for e in load("image_data.json")],
        "objects.json": [{"id": e["image_id"], "objects": [obj10(o) for o in e["objects"]]}
                         for e in load("objects.json")],
        "attributes.json": [{"id": e["image_id"], "attributes": [
            _rename(obj10(o), "names", "object_names") for o in e["attributes"]]}
            for e in load("attributes.json")],
        "relationships.json": [{"id": e["image_id"], "relationships": [
            {**_rename({k: v for k, v in r.items() if k != "synsets"}, "relationship_id", "id"),
             "subject": obj10({k: v for k, v in r["subject"].items() if k != "names"}),
             "object": obj10({k: v for k, v in r["object"].items() if k != "names"})}
            for r in e["relationships"]]} for e in load("relationships.json")],
        "region_descriptions.json": [{"id": e["id"], "regions": [
            _rename(r, "region_id", "id") for r in e["regions"]]}
            for e in load("region_descriptions.json")],
    }
    for name, data in files.items():
        (rel / name).write_text(json.dumps(data))
    return rel


def test_v10_release(tmp_path: Path) -> None:
    rel = _v10_release(tmp_path)
    manifest = build(rel, tmp_path / "ds", show_progress=False)
    versions = {name: s["version"] for name, s in manifest["sources"].items()}
    assert versions == {n: "1.0" for n in ("image_data.json", "objects.json", "attributes.json",
                                           "relationships.json", "region_descriptions.json")}
    with open_dataset(tmp_path / "ds") as ds:
        assert len(list(ds.image_ids())) == 60
        sources = {kind: {e["id"]: e for e in json.loads((rel / name).read_bytes())}
                   for kind, name in (("meta", "image_data.json"), ("objects", "objects.json"),
                                      ("attributes", "attributes.json"),
                                      ("relationships", "relationships.json"),
                                      ("regions", "region_descriptions.json"))}
        for kind, entries in sources.items():
            for image_id, entry in entries.items():
                assert ds.entry(kind, image_id) == entry, (kind, image_id)
        graph = ds.entry("graph", 1)
        attrs = sources["attributes"][1]
        rels = sources["relationships"][1]["relationships"]
        assert graph["objects"] == attrs["attributes"]
        assert graph["relationships"] == [
            {"id": r["id"], "predicate": r["predicate"], "subject_id": r["subject"]["id"],
             "object_id": r["object"]["id"]} for r in rels]
        assert manifest["kinds"]["graph"]["version"] == "composed"
