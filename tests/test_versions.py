"""Schema versions: a v1.0-shaped release (the real excerpts with v1.0 key names) is detected
as such, stored as released, and composes a graph from what its files hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_v10_release
from vgfs.build import build
from vgfs.dataset import open_dataset


def test_v10_release(tmp_path: Path) -> None:
    rel = write_v10_release(tmp_path)
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
