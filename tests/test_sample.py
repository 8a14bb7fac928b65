"""The synthetic release: deterministic, well-formed, shaped like the real files, traps included."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.test_build import release_entry_bytes
from vgfs import schema
from vgfs.build import build
from vgfs.dataset import open_dataset
from vgfs.errors import VGFSError
from vgfs.sample import write_sample
from vgfs.sample.writer import _write

PER_IMAGE = ("image_data.json", "objects.json", "attributes.json", "relationships.json",
             "scene_graphs.json", "region_descriptions.json", "question_answers.json")
WHOLE = ("synsets.json", "object_synsets.json", "attribute_synsets.json",
         "relationship_synsets.json", "qa_to_region_mapping.json")
ALIASES = ("object_alias.txt", "relationship_alias.txt")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "release"
    write_sample(out, images=300, seed=1, show_progress=False)
    return out


@pytest.fixture(scope="module")
def data(sample: Path) -> dict[str, object]:
    return {name: json.loads((sample / name).read_bytes()) for name in PER_IMAGE + WHOLE}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_sample(tmp_path / name, images=40, seed=seed, show_progress=False)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a["objects.json"] != c["objects.json"]
    assert any(a[k] != c.get(k) for k in a if k.endswith(".jpg"))


def test_worker_processes_do_not_change_the_bytes(tmp_path: Path) -> None:
    _write(tmp_path / "serial", 600, 2, "none", False, workers=1)
    _write(tmp_path / "parallel", 600, 2, "none", False, workers=2)
    assert _files(tmp_path / "serial") == _files(tmp_path / "parallel")


def test_annotations_do_not_depend_on_the_jpeg_mode(tmp_path: Path, sample: Path) -> None:
    write_sample(tmp_path / "none", images=300, seed=1, jpeg="none", show_progress=False)
    none = _files(tmp_path / "none")
    assert not (tmp_path / "none" / "VG_100K").exists()
    assert none == {k: v for k, v in _files(sample).items() if not k.endswith(".jpg")}


def test_every_file_parses_and_has_the_real_shape(sample: Path, data: dict) -> None:
    for name in PER_IMAGE:
        assert isinstance(data[name], list) and len(data[name]) == 300, name
    for name in WHOLE[1:]:
        assert isinstance(data[name], dict) and data[name], name
    assert set(data["synsets.json"][0]) == {"synset_name", "synset_definition"}
    for name in ALIASES:
        lines = (sample / name).read_text(encoding="utf-8").splitlines()
        assert lines and all("," in line for line in lines)
    first = {name: data[name][0] for name in PER_IMAGE}
    assert set(first["image_data.json"]) == {"width", "url", "height", "image_id", "coco_id",
                                             "flickr_id"}
    assert set(first["objects.json"]) == {"image_id", "objects", "image_url"}
    assert set(first["attributes.json"]) == {"image_id", "attributes"}
    assert set(first["relationships.json"]) == {"relationships", "image_id"}
    assert set(first["scene_graphs.json"]) == {"relationships", "image_id", "objects"}
    assert set(first["region_descriptions.json"]) == {"regions", "id"}
    assert set(first["question_answers.json"]) == {"id", "qas"}
    objects = [o for e in data["objects.json"] for o in e["objects"]]
    assert {tuple(sorted(o)) for o in objects} == {
        ("h", "merged_object_ids", "names", "object_id", "synsets", "w", "x", "y")}
    graph_rels = [r for e in data["scene_graphs.json"] for r in e["relationships"]]
    assert {tuple(sorted(r)) for r in graph_rels} == {
        ("object_id", "predicate", "relationship_id", "subject_id", "synsets")}
    regions = [r for e in data["region_descriptions.json"] for r in e["regions"]]
    assert {tuple(sorted(r)) for r in regions} == {
        ("height", "image_id", "phrase", "region_id", "width", "x", "y")}
    qas = [q for e in data["question_answers.json"] for q in e["qas"]]
    assert {tuple(sorted(q)) for q in qas} == {
        ("a_objects", "answer", "image_id", "q_objects", "qa_id", "question")}


def test_per_image_files_follow_image_data(data: dict) -> None:
    ids = [e["image_id"] for e in data["image_data.json"]]
    assert ids[0] == 1 and ids == sorted(set(ids)) and ids[-1] > len(ids)  # gaps, like VG
    for name in PER_IMAGE[1:]:
        key = "id" if name in ("region_descriptions.json", "question_answers.json") else "image_id"
        assert [e[key] for e in data[name]] == ids, name
    for entry in data["region_descriptions.json"]:
        assert all(r["image_id"] == entry["id"] for r in entry["regions"])


def test_jpegs_sit_where_the_url_says_and_match_its_size(sample: Path, data: dict) -> None:
    blobs = set()
    folders = Counter()
    for im in data["image_data.json"]:
        folder = im["url"].split("/")[-2]
        folders[folder] += 1
        path = sample / folder / f"{im['image_id']}.jpg"
        with Image.open(path) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (im["width"], im["height"])
        blobs.add(path.read_bytes())
    assert len(blobs) == 300  # every file differs
    assert set(folders) == {"VG_100K", "VG_100K_2"}


def test_counts_are_in_the_real_ballpark(data: dict) -> None:
    def mean(name: str, key: str, inner: str | None = None) -> float:
        lists = [e[key] for e in data[name]]
        if inner:
            return sum(len(o.get(inner, [])) for items in lists for o in items) / len(lists)
        return sum(map(len, lists)) / len(lists)

    assert 30 <= mean("objects.json", "objects") <= 40
    assert 21 <= mean("attributes.json", "attributes", "attributes") <= 31
    assert 17 <= mean("relationships.json", "relationships") <= 25
    assert 44 <= mean("region_descriptions.json", "regions") <= 56
    assert 13 <= mean("question_answers.json", "qas") <= 19
    per_image = Counter(n for e in data["objects.json"]
                        for n in {o["names"][0] for o in e["objects"]})
    assert per_image.most_common(1)[0][1] > 150  # some names are in most images


def test_real_traps_are_present(data: dict) -> None:
    images = data["image_data.json"]
    assert any(isinstance(im["coco_id"], int) for im in images)
    assert any(im["coco_id"] is None for im in images)
    assert any(isinstance(im["flickr_id"], int) for im in images)
    assert any(not e["objects"] for e in data["objects.json"])
    assert any(not e["qas"] for e in data["question_answers.json"])
    assert any(not e["relationships"] for e in data["relationships.json"])
    v12 = [o for e in data["attributes.json"] for o in e["attributes"]]
    assert any("attributes" not in o for o in v12) and any(o.get("attributes") for o in v12)
    assert len({o["object_id"] for o in v12}) == len(v12)  # unique across the dataset
    names = {n for o in v12 for n in o["names"]}
    assert any(" " in n for n in names) and any("/" in n for n in names)
    predicates = {r["predicate"] for e in data["relationships.json"] for r in e["relationships"]}
    assert {"on", "ON", "On"} <= predicates
    phrases = [r["phrase"] for e in data["region_descriptions.json"] for r in e["regions"]]
    for needle in ('"', "'", "é"):
        assert any(needle in p for p in phrases), needle
    assert any(p.endswith(" ") for p in phrases)


def test_v14_objects_and_relationships_behave_like_the_real_ones(data: dict) -> None:
    styles = Counter()
    missing = 0
    rows = zip(data["objects.json"], data["attributes.json"], data["relationships.json"],
               data["scene_graphs.json"], strict=True)
    for objects, attributes, relationships, graph in rows:
        v14 = {o["object_id"]: o for o in objects["objects"]}
        v12 = {o["object_id"] for o in attributes["attributes"]}
        merged = {m: o["object_id"] for o in v14.values() for m in o["merged_object_ids"]}
        assert set(v14) <= v12 and set(merged) <= v12 - set(v14)
        assert graph["objects"] == attributes["attributes"]
        flat = {r["relationship_id"]: r for r in graph["relationships"]}
        assert [r["relationship_id"] for r in relationships["relationships"]] == list(flat)
        for rel in relationships["relationships"]:
            g = flat[rel["relationship_id"]]
            assert g["predicate"] == rel["predicate"] and g["synsets"] == rel["synsets"]
            for end in ("subject", "object"):
                e, graph_id = rel[end], g[end + "_id"]
                assert graph_id in v12
                if "names" in e:
                    styles["names"] += 1
                    assert merged[graph_id] == e["object_id"]
                    assert e["merged_object_ids"] == v14[e["object_id"]]["merged_object_ids"]
                else:
                    styles["name"] += 1
                    assert e["object_id"] == graph_id
                    missing += graph_id not in v14
    assert styles["name"] and styles["names"] and missing


def test_synsets_cover_everything_the_official_driver_looks_up(data: dict) -> None:
    known = {s["synset_name"] for s in data["synsets.json"]}
    for graph in data["scene_graphs.json"]:
        for item in graph["objects"] + graph["relationships"]:
            assert set(item["synsets"]) <= known
    assert data["object_synsets.json"]["man"] == "man.n.01"


def test_qa_to_region_mapping_points_within_the_image(data: dict) -> None:
    qa_image = {q["qa_id"]: q["image_id"] for e in data["question_answers.json"]
                for q in e["qas"]}
    region_image = {r["region_id"]: r["image_id"] for e in data["region_descriptions.json"]
                    for r in e["regions"]}
    mapping = data["qa_to_region_mapping.json"]
    assert len(mapping) > 1000
    assert all(qa_image[int(qa)] == region_image[region] for qa, region in mapping.items())


def test_sample_builds_as_a_release(sample: Path, data: dict, tmp_path: Path) -> None:
    """`vgfs build` takes the sample as it takes the real release: every file outside the
    JPEG folders kept byte for byte, each entry as its own bytes in its file (the sample's
    phrases hold non-ASCII text, so ranges must count bytes), every JPEG in its part."""
    manifest = build(sample, tmp_path / "ds", show_progress=False)
    assert manifest["counts"] == {"images": 300, "jpegs": 300, "images_without_jpeg": 0,
                                  "unannotated_jpegs": 0, "other_files": 0,
                                  "not_in_a_jpeg_folder": 0}
    files = {name: raw for name, raw in _files(sample).items()
             if name.split("/")[0] not in schema.IMAGE_DIRS}
    assert set(files) == set(PER_IMAGE + WHOLE + ALIASES)
    assert any(b > 0x7F for b in files["region_descriptions.json"])
    with open_dataset(tmp_path / "ds") as ds:
        assert ds.release_files() == sorted((name, len(raw)) for name, raw in files.items())
        for name, raw in files.items():
            assert bytes(ds.file_range(name, 0, len(raw))) == raw, name
        for kind, (stem, _) in schema.PER_IMAGE.items():
            entries = release_entry_bytes(sample / f"{stem}.json")
            assert len(entries) == 300, stem
            for image_id, raw in entries.items():
                assert bytes(ds.entry_bytes(kind, image_id)) == raw, (kind, image_id)
        for im in data["image_data.json"][::15]:
            folder = im["url"].split("/")[-2]
            jpeg = (sample / folder / f"{im['image_id']}.jpg").read_bytes()
            assert ds.jpeg(im["image_id"]) == jpeg
            assert ds.in_part2(im["image_id"]) == (folder == "VG_100K_2")


def test_real_jpegs_are_sized_like_visual_genome(tmp_path: Path) -> None:
    write_sample(tmp_path / "r", images=200, seed=3, jpeg="real", show_progress=False)
    sizes = [p.stat().st_size for p in (tmp_path / "r").glob("VG_100K*/*.jpg")]
    assert len(sizes) == 200
    assert min(sizes) >= 20_000 and max(sizes) <= 300_000
    assert 120_000 <= statistics.mean(sizes) <= 160_000


def test_refuses_a_used_folder_and_unknown_modes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write_sample(tmp_path / "empty", images=3, show_progress=False)
    with pytest.raises(VGFSError, match="not an empty folder"):
        write_sample(tmp_path / "empty", images=3, show_progress=False)
    with pytest.raises(VGFSError, match="JPEG mode"):
        write_sample(tmp_path / "other", jpeg="large", show_progress=False)
    write_sample(tmp_path / "zero", images=0, show_progress=False)
    assert json.loads((tmp_path / "zero" / "objects.json").read_bytes()) == []
    assert json.loads((tmp_path / "zero" / "qa_to_region_mapping.json").read_bytes()) == {}
