"""The files' bytes without a mount: every size is what a read returns, every record is the
release's entry, every whole file is the release's bytes, compact or pretty."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import damage_record, walk
from vgfs.build import build
from vgfs.cache import LRUCache
from vgfs.contents import Contents, readme_text
from vgfs.dataset import Dataset, open_dataset
from vgfs.errors import VGFSError
from vgfs.query import unescape
from vgfs.schema import WHOLE_FILES
from vgfs.tree import BY_ID, IMAGES, ROOT, Node, NodeType, Tree

SERVED = {NodeType.README, NodeType.WHOLE, NodeType.COUNTS, NodeType.RECORD,
          NodeType.BY_ID_FILE}


@pytest.fixture(scope="module")
def compact(real_ds: Dataset) -> Contents:
    return Contents(real_ds, LRUCache(64 << 20))


@pytest.fixture(scope="module")
def pretty(real_ds: Dataset) -> Contents:
    return Contents(real_ds, LRUCache(64 << 20), pretty=True)


@pytest.fixture(scope="module")
def files(real_tree: Tree) -> dict[bytes, Node]:
    """Every file that Contents serves, by path (JPEGs are the backend's)."""
    found = {path: node for path, node in walk(real_tree) if node.type in SERVED}
    # README, the whole files, four views' counts.json, 7 kinds and by-id for 60 images.
    assert len(found) == 1 + len(WHOLE_FILES) + 4 + 60 * 8
    return found


def _whole(contents: Contents, node: Node) -> bytes:
    """A file read from 0 past its end in one call, as `cat` would."""
    return bytes(contents.read(node, 0, contents.size(node) + 4096))


@pytest.mark.parametrize("mode", ["compact", "pretty"])
def test_every_size_is_exactly_what_a_read_returns(mode: str, files: dict,
                                                   request: pytest.FixtureRequest) -> None:
    """st_size is exact for every file, pretty JSON included: readers that trust it (mmap,
    Python's read()) get the whole file and nothing after it."""
    contents: Contents = request.getfixturevalue(mode)
    for path, node in files.items():
        data = _whole(contents, node)
        assert contents.size(node) == len(data), path
        assert bytes(contents.read(node, len(data), 100)) == b"", path


def test_symlink_sizes_are_their_targets(real_tree: Tree, compact: Contents) -> None:
    links = [node for _, node in walk(real_tree) if node.is_link]
    assert links
    for node in links:
        assert compact.size(node) == len(node.target)


def test_records_equal_the_release_entries(real_tree: Tree, compact: Contents, pretty: Contents,
                                           release_entries: dict) -> None:
    """Each images/<id>/<kind>.json parses to that image's entry of the release file, compact
    and pretty alike; by-id/<id>.json is the scene graph again."""
    for kind, entries in release_entries.items():
        assert sorted(entries) == list(range(1, 61))
        for image_id, entry in entries.items():
            d = real_tree.lookup(IMAGES, str(image_id).encode())
            node = real_tree.lookup(d.ino, f"{kind}.json".encode())
            assert json.loads(_whole(compact, node)) == entry, (kind, image_id)
            assert json.loads(_whole(pretty, node)) == entry, (kind, image_id)
    for image_id, graph in release_entries["graph"].items():
        node = real_tree.lookup(BY_ID, f"{image_id}.json".encode())
        assert json.loads(_whole(compact, node)) == graph


def test_compact_is_one_line_and_pretty_is_indented(real_tree: Tree, compact: Contents,
                                                    pretty: Contents) -> None:
    node = real_tree.lookup(real_tree.lookup(IMAGES, b"1").ino, b"objects.json")
    small, big = _whole(compact, node), _whole(pretty, node)
    assert b"\n" not in small
    assert big.endswith(b"}\n") and b'\n  "objects": [\n    {\n' in big
    assert pretty.size(node) == len(big) > compact.size(node) == len(small)


@pytest.mark.parametrize("mode", ["compact", "pretty"])
def test_any_range_is_a_slice_of_the_whole(mode: str, files: dict,
                                           request: pytest.FixtureRequest) -> None:
    """The kernel reads in chunks at any offset: each is the matching slice of the file."""
    contents: Contents = request.getfixturevalue(mode)
    for path in (b"README.txt", b"images/1/regions.json", b"by-id/7.json", b"synsets.json",
                 b"object_alias.txt", b"by-object/counts.json", b"images/60/qa.json"):
        node = files[path]
        whole = _whole(contents, node)
        for off in {0, 1, len(whole) // 3, len(whole) - 1, len(whole), len(whole) + 7}:
            for size in (0, 1, 100, 4096, 1 << 20):
                assert bytes(contents.read(node, off, size)) == whole[off:off + size], (
                    path, off, size)


def test_whole_files_are_the_release_bytes(files: dict, compact: Contents, pretty: Contents,
                                           release: Path) -> None:
    """image_data.json, the synsets, the aliases: as released, also with -o pretty."""
    for name in WHOLE_FILES:
        node = files[name.encode()]
        data = (release / name).read_bytes()
        assert node.type is NodeType.WHOLE
        assert compact.size(node) == pretty.size(node) == len(data)
        assert _whole(compact, node) == _whole(pretty, node) == data, name


def test_counts_json_maps_each_listed_name_to_its_images(real_tree: Tree,
                                                         compact: Contents) -> None:
    """Every view's counts.json holds its listed names, most frequent first, each with the
    number of images its directory lists."""
    for view in (b"by-object", b"by-attribute", b"by-predicate", b"by-synset"):
        parent = real_tree.lookup(ROOT, view)
        listing = list(real_tree.readdir(parent.ino, 0))
        counts = json.loads(_whole(compact, listing[0][1]))
        names = {name.decode(): node.count for name, node, _ in listing[1:]}
        assert counts == names, view
        assert list(counts.values()) == sorted(counts.values(), reverse=True)
        for name, count in list(counts.items())[:3]:
            node = real_tree.lookup(parent.ino, name.encode())
            assert count == len(list(real_tree.readdir(node.ino, 0))) > 0
            assert unescape(name.encode()) == name  # the excerpts need no escaping


def test_readme_names_the_dataset(files: dict, compact: Contents, real_ds: Dataset) -> None:
    """README.txt says what is mounted: counts, each source with its detected version and
    entries, the views, the licence and the citation."""
    text = _whole(compact, files[b"README.txt"]).decode()
    assert text == readme_text(real_ds.manifest)
    assert "Images: 60, with a JPEG: 4" in text
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()
             if line.startswith("  ") and len(line.split()) == 3}
    for name, src in real_ds.manifest["sources"].items():
        assert lines[name] == [f"v{src['version']}", str(src["entries"])], name
    assert lines["objects.json"][0] == "v1.4" and lines["question_answers.json"][0] == "v1.2"
    assert ("Names per view: by-object 677, by-attribute 491, by-predicate 216, by-synset 424"
            in text)
    assert "CC BY 4.0" in text and "doi:10.1007/s11263-016-0981-7" in text
    assert "graph.json is" not in text  # scene_graphs.json is there: nothing composed
    for view in ("by-object", "by-attribute", "by-predicate", "by-synset"):
        assert f"\n  {view}/ " in text, view


def test_readme_names_only_what_the_dataset_has(release_copy: Path, tmp_path: Path) -> None:
    """A release without relationships.json and scene_graphs.json: no by-predicate/ in the mount,
    and none in its README.txt, nor a relationships.json per image; the graph is composed."""
    (release_copy / "relationships.json").unlink()
    (release_copy / "scene_graphs.json").unlink()
    build(release_copy, tmp_path / "dataset", show_progress=False)
    with open_dataset(tmp_path / "dataset") as ds:
        tree = Tree(ds)
        root = {name: node for name, node, _ in tree.readdir(ROOT, 0)}
        text = bytes(Contents(ds, LRUCache(1 << 20)).content(root[b"README.txt"])).decode()
        image = {name for name, _, _ in tree.readdir(tree.lookup(IMAGES, b"1").ino, 0)}
    assert b"by-predicate" not in root and "by-predicate" not in text
    assert b"relationships.json" not in image and "relationships.json" not in text
    for view in ("by-object", "by-attribute", "by-synset"):
        assert view.encode() in root and f"\n  {view}/ " in text, view
    assert "graph.json (scene graph)" in text and b"graph.json" in image
    assert "by-coco" not in text and b"by-coco" not in root  # the excerpts have no COCO ids


def test_readme_follows_the_manifest() -> None:
    """Views only when some have names; the composed graph said when there is one; and a bare
    manifest still gives a README."""
    bare = readme_text({})
    assert "Images: 0, with a JPEG: 0" in bare and "Query views" not in bare
    assert "Query views" not in readme_text({"views": {"by-object": 0}})
    composed = readme_text({"kinds": {"graph": {"version": "composed",
                                                "source": "composed from attributes.json"}},
                            "views": {"by-coco": 3}})
    assert "graph.json is composed from attributes.json." in composed
    assert "Names per view: by-coco 3" in composed
    assert "  by-coco/<id>    a symlink to the image of that COCO id" in composed
    assert "by-object" not in composed and "by-flickr" not in composed


def test_pretty_json_is_made_once_while_cached(real_tree: Tree, real_ds: Dataset) -> None:
    """Re-indenting costs work: a second read of the file is an LRU hit. A cache too small
    to keep it still serves the right bytes, remaking them each time."""
    node = real_tree.lookup(real_tree.lookup(IMAGES, b"1").ino, b"regions.json")
    cache = LRUCache(64 << 20)
    contents = Contents(real_ds, cache, pretty=True)
    first = _whole(contents, node)  # its size, then its bytes
    assert (cache.misses, cache.hits, cache.stats()["items"]) == (1, 1, 1)
    assert _whole(contents, node) == first
    assert (cache.misses, cache.hits) == (1, 3)
    tiny = LRUCache(len(first) - 1)
    contents = Contents(real_ds, tiny, pretty=True)
    assert _whole(contents, node) == _whole(contents, node) == first
    assert tiny.hits == 0 and tiny.bytes == 0


def test_damaged_record_is_an_error_only_where_it_is_parsed(real_dataset: Path,
                                                            tmp_path: Path) -> None:
    """Compact JSON is served as stored, unchecked (`vgfs verify` checks it); pretty JSON
    must parse it, and a damaged one is a VGFSError naming the image and the kind."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    damage_record(copy, "regions", 30)
    with open_dataset(copy) as ds:
        tree = Tree(ds)
        node = tree.lookup(tree.lookup(IMAGES, b"30").ino, b"regions.json")
        assert b"\xff" in _whole(Contents(ds, LRUCache(1 << 20)), node)
        with pytest.raises(VGFSError, match="image 30: regions record is corrupt"):
            _whole(Contents(ds, LRUCache(1 << 20), pretty=True), node)
        other = tree.lookup(tree.lookup(IMAGES, b"31").ino, b"regions.json")
        assert json.loads(_whole(Contents(ds, LRUCache(1 << 20), pretty=True), other))


def test_a_record_missing_under_a_stale_node_is_an_error(synthetic_tree: Tree,
                                                         compact: Contents) -> None:
    """A node whose record is not in this dataset (one swapped under a stale inode) is an
    error that names it, never an empty or a wrong file."""
    last = max(synthetic_tree.ds.image_ids())
    assert last > 60
    node = synthetic_tree.lookup(synthetic_tree.lookup(IMAGES, b"%d" % last).ino, b"objects.json")
    with pytest.raises(VGFSError, match=f"image {last}: objects record vanished"):
        compact.read(node, 0, 10)
