"""Schema versions: a v1.0-shaped release (the real excerpts with v1.0 key names) is detected
as such, stored as released (each entry in the release's own bytes, which here have Python's
`", "` spacing), and composes a graph from what its files hold."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_v10_release
from tests.test_build import release_entry_bytes
from vgfs.build import build
from vgfs.dataset import open_dataset

NAMES = {"meta": "image_data.json", "objects": "objects.json", "attributes": "attributes.json",
         "relationships": "relationships.json", "regions": "region_descriptions.json"}


def test_v10_release(tmp_path: Path) -> None:
    rel = write_v10_release(tmp_path)
    manifest = build(rel, tmp_path / "ds", show_progress=False)
    versions = {name: s["version"] for name, s in manifest["sources"].items()}
    assert versions == {n: "1.0" for n in NAMES.values()}
    with open_dataset(tmp_path / "ds") as ds:
        assert len(list(ds.image_ids())) == 60
        sources = {kind: {e["id"]: e for e in json.loads((rel / name).read_bytes())}
                   for kind, name in NAMES.items()}
        for kind, entries in sources.items():
            raw = release_entry_bytes(rel / NAMES[kind])
            for image_id, entry in entries.items():
                assert ds.entry(kind, image_id) == entry, (kind, image_id)
                assert bytes(ds.entry_bytes(kind, image_id)) == raw[image_id], (kind, image_id)
        for name in NAMES.values():
            data = (rel / name).read_bytes()
            assert bytes(ds.file_range(name, 0, len(data))) == data, name
        graph = ds.entry("graph", 1)
        attrs = sources["attributes"][1]
        rels = sources["relationships"][1]["relationships"]
        assert graph["objects"] == attrs["attributes"]
        assert graph["relationships"] == [
            {"id": r["id"], "predicate": r["predicate"], "subject_id": r["subject"]["id"],
             "object_id": r["object"]["id"]} for r in rels]
        assert manifest["kinds"]["graph"]["version"] == "composed"
