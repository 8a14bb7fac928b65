"""The files' bytes without a mount: every size is what a read returns, every release file is
the release's bytes at any offset, every per-image file is the release's own bytes of the
image's entry (or, with -o pretty, that entry indented), and damage is an error, not bytes."""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import JPEGS, damage_frame, entries_by_id, image_id_of, walk
from tests.test_compose import compose_graph
from tests.test_tree import site_file_bytes, write_site_release
from vgfs.build import build
from vgfs.cache import LRUCache
from vgfs.contents import Contents, readme_text
from vgfs.dataset import Dataset, open_dataset
from vgfs.errors import VGFSError
from vgfs.layout import FRAME, KINDS
from vgfs.query import unescape
from vgfs.schema import PER_IMAGE
from vgfs.tree import BY_ID, IMAGES, ROOT, Node, NodeType, Tree

SERVED = {NodeType.README, NodeType.RELEASE_FILE, NodeType.COUNTS, NodeType.RECORD,
          NodeType.BY_ID_FILE}
SOURCE = {kind: stem + ".json" for kind, (stem, _) in PER_IMAGE.items()}
_BETWEEN = re.compile(r"[\s,]*")


def release_entries(raw: bytes) -> dict[int, bytes]:
    """A per-image release file's entries by image id, each as its own bytes in the file,
    found with the standard library's decoder (not vgfs's windowed scanner)."""
    text, decoder, out = raw.decode(), json.JSONDecoder(), {}
    pos = text.index("[") + 1
    while True:
        pos = _BETWEEN.match(text, pos).end()
        if text[pos] == "]":
            return out
        value, end = decoder.raw_decode(text, pos)
        out[image_id_of(value)] = text[pos:end].encode()
        pos = end


@pytest.fixture(scope="module")
def compact(real_ds: Dataset) -> Contents:
    return Contents(real_ds, LRUCache(64 << 20))


@pytest.fixture(scope="module")
def pretty(real_ds: Dataset) -> Contents:
    return Contents(real_ds, LRUCache(64 << 20), pretty=True)


@pytest.fixture(scope="module")
def files(real_tree: Tree) -> dict[bytes, Node]:
    """Every file that Contents serves but the JPEGs, by path."""
    found = {path: node for path, node in walk(real_tree) if node.type in SERVED}
    # README, the 15 release files, four views' counts.json, 7 kinds and by-id for 60 images.
    assert len(found) == 1 + 15 + 60 * 8
    return found


def _whole(contents: Contents, node: Node) -> bytes:
    """A file read from 0 past its end in one call, as `cat` would."""
    return bytes(contents.read(node, 0, (contents.size(node) or node.size) + 4096))


def _record(tree: Tree, image_id: int, kind: str) -> Node:
    return tree.lookup(tree.lookup(IMAGES, str(image_id).encode()).ino, f"{kind}.json".encode())


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
    links = [node for _, node in walk(Tree(real_tree.ds, list_views=True)) if node.is_link]
    assert links
    for node in links:
        assert compact.size(node) == len(node.target)


def test_records_equal_the_release_entries(real_tree: Tree, compact: Contents, pretty: Contents,
                                           release_entries: dict) -> None:
    """Each images/<id>/<kind>.json parses to that image's entry of the release file, compact
    and pretty alike; by-id/<id>.json holds the scene graph again, with its attributes."""
    for kind, entries in release_entries.items():
        assert sorted(entries) == list(range(1, 61))
        for image_id, entry in entries.items():
            node = _record(real_tree, image_id, kind)
            assert json.loads(_whole(compact, node)) == entry, (kind, image_id)
            assert json.loads(_whole(pretty, node)) == entry, (kind, image_id)
    for image_id, graph in release_entries["graph"].items():
        node = real_tree.lookup(BY_ID, f"{image_id}.json".encode())
        by_id = json.loads(_whole(compact, node))
        assert by_id.pop("attributes") and by_id == graph


def test_per_image_files_are_the_release_s_own_bytes(real_tree: Tree, compact: Contents,
                                                     release: Path) -> None:
    """Format 3 serves the release's bytes of each entry, its own spacing and key order, not
    a re-serialisation: images/<id>/<kind>.json is a slice of <kind>'s source file."""
    for kind, name in SOURCE.items():
        raw = (release / name).read_bytes()
        entries = release_entries(raw)
        assert sorted(entries) == list(range(1, 61))
        for image_id, expected in entries.items():
            node = _record(real_tree, image_id, kind)
            assert node.size == len(expected)
            assert _whole(compact, node) == expected, (kind, image_id)


def test_compact_is_the_release_s_spacing_and_pretty_is_indented(real_tree: Tree,
                                                                 compact: Contents,
                                                                 pretty: Contents) -> None:
    """The excerpts are written with `, ` and `: ` on one line: so is the per-image file."""
    node = _record(real_tree, 1, "objects")
    small, big = _whole(compact, node), _whole(pretty, node)
    assert small.startswith(b'{"image_id": 1, "objects": [{"synsets": ["tree.n.01"], "h": 557,')
    assert b"\n" not in small
    assert big.endswith(b"}\n") and b'\n  "objects": [\n    {\n' in big
    assert pretty.size(node) == len(big) != compact.size(node) == len(small)


@pytest.mark.parametrize("mode", ["compact", "pretty"])
def test_any_range_is_a_slice_of_the_whole(mode: str, files: dict,
                                           request: pytest.FixtureRequest) -> None:
    """The kernel reads in chunks at any offset: each is the matching slice of the file."""
    contents: Contents = request.getfixturevalue(mode)
    for path in (b"README.txt", b"images/1/regions.json", b"by-id/7.json", b"synsets.json",
                 b"object_alias.txt", b"images/60/qa.json",
                 b"images/33/graph.json", b"region_descriptions.json"):
        node = files[path]
        whole = _whole(contents, node)
        for off in {0, 1, len(whole) // 3, len(whole) - 1, len(whole), len(whole) + 7}:
            for size in (0, 1, 100, 4096, 1 << 20):
                assert bytes(contents.read(node, off, size)) == whole[off:off + size], (
                    path, off, size)


def _assert_release_bytes(contents: Contents, node: Node, expected: bytes,
                          rng: random.Random) -> None:
    """The whole file, then random ranges, and ranges at and across every frame boundary."""
    assert contents.size(node) == len(expected), node.file
    assert _whole(contents, node) == expected, node.file
    ranges = [(rng.randrange(len(expected) + 1), rng.choice((1, 17, 4096, 131072)))
              for _ in range(40)]
    ranges += [(b - d, 2 * d) for b in range(FRAME, len(expected), FRAME) for d in (1, 500)]
    for off, size in ranges:
        assert bytes(contents.read(node, off, size)) == expected[off:off + size], (
            node.file, off, size)


def test_release_files_are_the_release_bytes_at_any_offset(files: dict, compact: Contents,
                                                           pretty: Contents,
                                                           release: Path) -> None:
    """Every file of the release, as released, also with -o pretty (which indents only the
    per-image files): its sha256 is the published one."""
    rng = random.Random(11)
    release_files = {p: n for p, n in files.items() if n.type is NodeType.RELEASE_FILE}
    assert {p.decode() for p in release_files} == {
        p.name for p in release.iterdir() if p.is_file()}
    for path, node in release_files.items():
        expected = (release / path.decode()).read_bytes()
        _assert_release_bytes(compact, node, expected, rng)
        _assert_release_bytes(pretty, node, expected, rng)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Tree, Contents]]:
    """A release folder as sites keep it (test_tree.write_site_release), built and opened."""
    root = tmp_path_factory.mktemp("site")
    release = write_site_release(root / "release")
    build(release, root / "dataset", show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield release, Tree(ds), Contents(ds, LRUCache(64 << 20))


def test_nested_and_zipped_release_files_are_their_bytes(site: tuple) -> None:
    """A site's own files at any depth, binary ones too, and the JSON that a *.json.zip
    holds: byte for byte at any offset, with exact sizes."""
    release, tree, contents = site
    rng = random.Random(12)
    nodes = [node for _, node in walk(tree) if node.type is NodeType.RELEASE_FILE]
    assert {n.file for n in nodes} >= {"v1.2/objects.json", "splits/sgg/train.txt",
                                       "VG-SGG-with-attri.h5", "extra/synsets.json"}
    for node in nodes:
        _assert_release_bytes(contents, node, site_file_bytes(release, node.file), rng)


def test_jpegs_and_other_files_of_the_jpeg_folders_are_their_bytes(site: tuple) -> None:
    """Every file of the JPEG folders, under every name it has, with an exact size: the
    JPEGs and what else sat there (an empty file included)."""
    release, tree, contents = site
    served = [(path, node) for path, node in walk(tree)
              if node.type in (NodeType.JPEG, NodeType.STRAY)]
    assert len(served) == 2 * len(JPEGS) + 1 + 5 + 2  # images/ and the folders, VG_100K_2
    for path, node in served:
        if node.type is NodeType.JPEG:
            expected = (release / JPEGS[node.image_id]).read_bytes()
        else:
            expected = (release / node.file).read_bytes()
        assert contents.size(node) == len(expected), path
        assert _whole(contents, node) == expected, path
        assert bytes(contents.read(node, 100, 50)) == expected[100:150], path


@pytest.fixture(scope="module")
def indented(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Iterator[Path]:
    """The excerpts' per-image files written indented, with non-ASCII names, as a release
    prepared by other tools may be."""
    root = tmp_path_factory.mktemp("indented")
    (root / "release").mkdir()
    for name in SOURCE.values():
        entries = json.loads((release / name).read_bytes())
        text = json.dumps(entries, indent=2, ensure_ascii=False)
        text = text.replace('"trees"', '"\u00e1rboles \u6a39"')
        (root / "release" / name).write_text(text, encoding="utf-8")
    build(root / "release", root / "dataset", show_progress=False)
    return root


def test_indented_non_ascii_entries_are_served_as_released(indented: Path) -> None:
    """The per-image file keeps the release's newlines and indentation; its size is exact
    in bytes, compact and pretty."""
    with open_dataset(indented / "dataset") as ds:
        tree = Tree(ds)
        compact = Contents(ds, LRUCache(16 << 20))
        pretty = Contents(ds, LRUCache(16 << 20), pretty=True)
        for kind, name in SOURCE.items():
            raw = (indented / "release" / name).read_bytes()
            for image_id, expected in release_entries(raw).items():
                node = _record(tree, image_id, kind)
                assert _whole(compact, node) == expected, (kind, image_id)
                assert compact.size(node) == len(expected)
                indent = _whole(pretty, node)
                assert pretty.size(node) == len(indent)
                assert json.loads(indent) == json.loads(expected)
        objects = _whole(compact, _record(tree, 1, "objects"))
        assert b'\n    "objects": [' in objects
        assert "\u00e1rboles \u6a39".encode() in objects


# --- graph.json without scene_graphs.json ------------------------------------------------------


@pytest.fixture(scope="module")
def composed(no_scene_graphs: Dataset) -> tuple[Dataset, Tree]:
    """The excerpts' annotation files without scene_graphs.json, and their tree."""
    return no_scene_graphs, Tree(no_scene_graphs)


@pytest.fixture(scope="module")
def composition(release: Path) -> dict[int, dict]:
    """What graph.json has always been without scene_graphs.json (tests.test_compose.compose_graph),
    from the release's entries, by image id."""
    kinds = [entries_by_id(release / f"{k}.json") for k in ("attributes", "objects",
                                                             "relationships")]
    return {i: compose_graph(i, *(k.get(i) for k in kinds)) for i in range(1, 61)}


def test_composed_graph_sizes_and_pretty_bytes(composed: tuple, composition: dict) -> None:
    """graph.json is composed for every image, with the same semantics as before: its size
    is exact, and its pretty bytes parse to the composition."""
    ds, tree = composed
    pretty = Contents(ds, LRUCache(16 << 20), pretty=True)
    for image_id in range(1, 61):
        node = _record(tree, image_id, "graph")
        assert node.size == len(ds.graph_bytes(image_id)), image_id
        data = _whole(pretty, node)
        assert pretty.size(node) == len(data)
        assert json.loads(data) == composition[image_id], image_id


def test_composed_graph_reads_compact(composed: tuple, composition: dict) -> None:
    ds, tree = composed
    compact = Contents(ds, LRUCache(16 << 20))
    for image_id in (1, 46, 60):
        node = _record(tree, image_id, "graph")
        data = _whole(compact, node)
        assert compact.size(node) == len(data) == node.size
        assert data == ds.graph_bytes(image_id)
        assert json.loads(data) == composition[image_id]


# --- README and counts ------------------------------------------------------------------------


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
        version = f"v{src['version']}" if src["version"] != "unknown" else "-"
        assert lines[name] == [version, str(src["entries"])], name
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
        tree = Tree(ds, list_views=True)
        root = {name: node for name, node, _ in tree.readdir(ROOT, 0)}
        text = bytes(Contents(ds, LRUCache(1 << 20)).read(root[b"README.txt"], 0,
                                                          1 << 20)).decode()
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


# --- caching and damage -----------------------------------------------------------------------


def test_pretty_json_is_made_once_while_cached(real_tree: Tree, real_ds: Dataset) -> None:
    """Re-indenting costs work: a second read of the file is an LRU hit. A cache too small
    to keep it still serves the right bytes, remaking them each time."""
    node = _record(real_tree, 1, "regions")
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


def _frame_of(ds: Dataset, kind: str, image_id: int) -> tuple[int, int]:
    """The frames that hold an image's entry of a kind."""
    offset, length = ds.image(image_id).ranges[KINDS.index(kind)]
    return offset // FRAME, (offset + length - 1) // FRAME


def test_a_damaged_frame_is_an_error_for_the_files_it_holds(real_dataset: Path,
                                                            tmp_path: Path) -> None:
    """Every stored frame is checked by its checksum when read (format 3: compact reads
    too, not only those that parse): a damaged one is a VGFSError naming the file, for the
    per-image files and the release file it holds, and never for those on other frames."""
    copy = shutil.copytree(real_dataset, tmp_path / "dataset")
    with open_dataset(copy) as ds:
        first, last = _frame_of(ds, "regions", 30)
        far = next(i for i in range(1, 61) if _frame_of(ds, "regions", i)[1] < first)
    damage_frame(copy, "region_descriptions.json", last)
    with open_dataset(copy) as ds:
        tree = Tree(ds)
        node = _record(tree, 30, "regions")
        whole = tree.lookup(ROOT, b"region_descriptions.json")
        for contents in (Contents(ds, LRUCache(1 << 20)),
                         Contents(ds, LRUCache(1 << 20), pretty=True)):
            for target in (node, whole):
                with pytest.raises(VGFSError, match=rf"^region_descriptions\.json: frame {last}"
                                                    " is damaged"):
                    _whole(contents, target)
            other = _whole(contents, _record(tree, far, "regions"))
            assert json.loads(other)["id"] == far
            assert json.loads(_whole(contents, _record(tree, 30, "objects")))["image_id"] == 30


def test_a_record_missing_under_a_stale_node_is_an_error(synthetic_tree: Tree,
                                                         compact: Contents) -> None:
    """A node whose record is not in this dataset (one swapped under a stale inode) is an
    error that names it, never an empty or a wrong file."""
    last = max(synthetic_tree.ds.image_ids())
    assert last > 60
    node = _record(synthetic_tree, last, "objects")
    with pytest.raises(VGFSError, match=f"image {last}: .*vanished"):
        compact.read(node, 0, 10)
    pretty = Contents(compact.ds, LRUCache(1 << 20), pretty=True)
    with pytest.raises(VGFSError, match=f"image {last}: .*vanished"):
        pretty.read(node, 0, 10)


def test_pretty_json_of_a_lone_surrogate_escape(tmp_path: Path, release: Path) -> None:
    """`\\ud800` is valid JSON grammar, and the release's bytes hold it: -o pretty serves
    that entry indented, not EIO."""
    rel = tmp_path / "release"
    rel.mkdir()
    for name in ("image_data.json", "scene_graphs.json"):
        shutil.copy(release / name, rel)
    raw = (release / "objects.json").read_bytes().replace(b'"trees"', b'"tr\\ud800ees"', 1)
    (rel / "objects.json").write_bytes(raw)
    build(rel, tmp_path / "dataset", show_progress=False)
    with open_dataset(tmp_path / "dataset") as ds:
        tree = Tree(ds)
        pretty = Contents(ds, LRUCache(1 << 20), pretty=True)
        node = _record(tree, 1, "objects")
        data = _whole(pretty, node)
        assert json.loads(data) == json.loads(raw)[0] and pretty.size(node) == len(data)
