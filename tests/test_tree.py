"""The namespace without a mount: names, inode numbers, lookups and resumable listings, on the
real excerpts and a synthetic release, each call in microseconds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import JPEGS, walk
from vgfs.build import build
from vgfs.dataset import Dataset, open_dataset
from vgfs.layout import FILES
from vgfs.query import VIEWS, escape, unescape
from vgfs.schema import NAME_MAX, WHOLE_FILES
from vgfs.tree import (
    BY_ID,
    IMAGE_BASE,
    IMAGES,
    MAX_IMAGE_ID,
    NAME_BASE,
    README,
    ROOT,
    STATS,
    STATS_NAME,
    NameTooLong,
    Node,
    NodeType,
    Tree,
    image_ino,
    parse_id,
)

IMAGE_FILES = [b"image.jpg", b"meta.json", b"objects.json", b"attributes.json",
               b"relationships.json", b"graph.json", b"regions.json", b"qa.json"]
# The first image id whose directory's inode would be the first view name's.
BEYOND = (NAME_BASE - IMAGE_BASE) // 16


def _names(tree: Tree, ino: int, offset: int = 0) -> list[bytes]:
    return [name for name, _, _ in tree.readdir(ino, offset)]


def _find(tree: Tree, path: bytes) -> Node | None:
    """The node at a slash-separated path, by one lookup per component, as the kernel does."""
    ino, node = ROOT, None
    for part in path.split(b"/"):
        node = tree.lookup(ino, part)
        if node is None:
            return None
        ino = node.ino
    return node


# --- inode numbers ---------------------------------------------------------------------------


def test_fixed_nodes_have_the_documented_inodes(real_tree: Tree) -> None:
    """The inode table in tree.py's docstring is a promise: every mount numbers alike."""
    assert real_tree.node(ROOT).type is NodeType.ROOT and ROOT == 1
    expected = {b"images": (2, NodeType.IMAGES), b"by-id": (3, NodeType.BY_ID),
                b"README.txt": (4, NodeType.README), STATS_NAME: (5, NodeType.STATS)}
    for name, (ino, kind) in expected.items():
        node = real_tree.lookup(ROOT, name)
        assert (node.ino, node.type) == (ino, kind), name
    for i, name in enumerate(WHOLE_FILES):
        node = real_tree.lookup(ROOT, name.encode())
        assert (node.ino, node.type, node.file) == (16 + i, NodeType.WHOLE, name)
    for v, view in enumerate(VIEWS[:4]):
        node = real_tree.lookup(ROOT, view.encode())
        assert (node.ino, node.type, node.view) == (8 + v, NodeType.VIEW, view)
        counts = real_tree.lookup(node.ino, b"counts.json")
        assert (counts.ino, counts.type) == (48 + v, NodeType.COUNTS)


def test_image_inodes_are_a_function_of_the_id(real_tree: Tree) -> None:
    """images/<id>/... is 2**32 + 16*id + code: the directory 0, the JSON kinds 1..7 in FILES
    order, image.jpg 8, by-id/<id>.json 9 and every view's link to the image 10."""
    for image_id in (1, 7, 60):
        d = real_tree.lookup(IMAGES, str(image_id).encode())
        assert (d.ino, d.type, d.image_id) == (2**32 + 16 * image_id, NodeType.IMAGE_DIR,
                                               image_id)
        assert d.ino == image_ino(image_id, 0)
        for code, kind in enumerate(FILES, 1):
            name = b"image.jpg" if kind == "jpeg" else kind.encode() + b".json"
            node = real_tree.lookup(d.ino, name)
            if kind == "jpeg" and image_id not in JPEGS:
                assert node is None
                continue
            assert (node.ino, node.kind, node.image_id) == (d.ino + code, kind, image_id)
        by_id = real_tree.lookup(BY_ID, f"{image_id}.json".encode())
        assert (by_id.ino, by_id.type, by_id.kind) == (d.ino + 9, NodeType.BY_ID_FILE, "graph")
    wall = _find(real_tree, b"by-object/wall")
    assert real_tree.lookup(wall.ino, b"1").ino == image_ino(1, 10)


def test_every_node_decodes_from_its_inode(real_tree: Tree, real_dataset: Path,
                                           tmp_path: Path) -> None:
    """getattr gets only an inode: node(ino) gives back exactly what lookup and readdir gave,
    inodes never collide, and a copy of the dataset (another machine's) numbers alike."""
    nodes = dict(walk(real_tree))
    assert len(nodes) > 5000
    links: dict[int, int] = {}
    others: dict[int, bytes] = {}
    for path, node in nodes.items():
        assert real_tree.node(node.ino) == node, path
        if node.type is NodeType.VIEW_LINK:  # one inode per image, shared by every view
            assert links.setdefault(node.ino, node.image_id) == node.image_id, path
        else:
            assert others.setdefault(node.ino, path) == path, (path, others[node.ino])
    assert not set(links) & set(others)
    with open_dataset(shutil.copytree(real_dataset, tmp_path / "copy")) as again:
        second = Tree(again)
        assert {p: n.ino for p, n in walk(second)} == {p: n.ino for p, n in nodes.items()}


def test_inodes_that_name_nothing_decode_to_none(real_tree: Tree) -> None:
    """Stale or invented inode numbers are ENOENT, never a wrong file nor an exception."""
    for ino in (0, 6, 7, 12, 13, 15, 24, 52, 2**32 - 1, image_ino(61, 0), image_ino(0, 0),
                image_ino(3, 8), image_ino(1, 11), image_ino(1, 15),
                NAME_BASE + (4 << 40),  # by-coco: no coco ids in the excerpts
                NAME_BASE + (len(VIEWS) << 40), NAME_BASE + 10**6,
                NAME_BASE + (1 << 32), NAME_BASE + (1 << 40) - 1, 2**63 - 1):
        assert real_tree.node(ino) is None, ino


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    (b"0", 0), (b"7", 7), (b"2417997", 2417997), (b"1" + b"0" * 16, 10**16),
    (str(MAX_IMAGE_ID).encode(), MAX_IMAGE_ID),
    (b"007", None), (b"00", None), (b"-1", None), (b"+1", None), (b" 1", None), (b"1 ", None),
    (b"1\n", None), (b"1.0", None), (b"1e3", None), (b"0x1", None), (b"", None),
    (b"1_000", None), ("\u0661".encode(), None), (b"9" * 18, None), (b"1" * 19, None),
    (str(MAX_IMAGE_ID + 1).encode(), None),
])
def test_parse_id_accepts_canonical_decimals_only(name: bytes, value: int | None) -> None:
    """One spelling per image: `007`, `+7` or ` 7` would be a second name for images/7."""
    assert parse_id(name) == value


def test_image_inodes_stay_below_the_view_names() -> None:
    """The largest id that parses still numbers its nodes below the view names' range, so an
    image's inode can never decode as a view name."""
    assert image_ino(MAX_IMAGE_ID, 15) < NAME_BASE == image_ino(BEYOND, 0)
    assert parse_id(str(BEYOND).encode()) is None


def test_only_canonical_names_exist(real_tree: Tree) -> None:
    assert _find(real_tree, b"images/7").image_id == 7
    for path in (b"images/007", b"images/07", b"images/+7", b"images/7 ", b"images/7.0",
                 b"images/61", b"images/0", b"images/7/OBJECTS.json", b"images/7/objects",
                 b"images/7/objects.json ", b"images/3/image.jpg", b"images/7/7",
                 b"by-id/007.json", b"by-id/7", b"by-id/7.JSON", b"by-id/.json",
                 b"by-object/wall/01", b"by-object/wall/2", b"by-object/Wall",
                 b"by-predicate/ON", b"by-object/no such thing", b"by-coco", b"by-flickr",
                 b"README", b"readme.txt", b"image_data", b".", b".."):
        assert _find(real_tree, path) is None, path


def test_lookup_inside_a_file_finds_nothing(real_tree: Tree) -> None:
    """Files and symlinks are no directories: a name under them is ENOENT, whatever it is."""
    files = [_find(real_tree, p) for p in (b"README.txt", b"synsets.json", b"images/1/meta.json",
                                      b"images/1/image.jpg", b"by-id/1.json",
                                      b"by-object/counts.json", b"by-object/wall/1")]
    files.append(real_tree.lookup(ROOT, STATS_NAME))
    for node in files:
        assert not node.is_dir
        for name in (b"1", b"meta.json", b"counts.json", b"images"):
            assert real_tree.lookup(node.ino, name) is None, (node, name)


def test_names_longer_than_name_max_are_refused_everywhere(real_tree: Tree) -> None:
    """ENAMETOOLONG, not ENOENT, in every directory; NAME_MAX bytes is still a plain miss."""
    wall = _find(real_tree, b"by-object/wall")
    for parent in (ROOT, IMAGES, BY_ID, image_ino(1, 0), _find(real_tree, b"by-object").ino,
                   wall.ino, README):
        with pytest.raises(NameTooLong):
            real_tree.lookup(parent, b"1" * (NAME_MAX + 1))
        assert real_tree.lookup(parent, b"1" * NAME_MAX) is None


def test_stats_node_is_found_but_never_listed(real_tree: Tree) -> None:
    """`vgfs stats` reads .vgfs-stats by name; ls -a and find never see it."""
    stats = real_tree.lookup(ROOT, STATS_NAME)
    assert (stats.ino, stats.type) == (STATS, NodeType.STATS)
    assert real_tree.node(STATS) == stats and not stats.is_dir
    assert all(STATS_NAME not in path and node.ino != STATS for path, node in walk(real_tree))


# --- listings --------------------------------------------------------------------------------


def test_root_lists_what_the_dataset_holds(real_tree: Tree, synthetic_tree: Tree) -> None:
    """README, images, by-id, the whole files in release order, then the views that have
    names: by-coco and by-flickr only where image_data.json has such ids."""
    fixed = [b"README.txt", b"images", b"by-id", *(n.encode() for n in WHOLE_FILES)]
    assert _names(real_tree, ROOT) == fixed + [v.encode() for v in VIEWS[:4]]
    assert _names(synthetic_tree, ROOT) == fixed + [v.encode() for v in VIEWS]
    for name, node, _ in real_tree.readdir(ROOT, 0):
        assert real_tree.lookup(ROOT, name) == node


def test_images_and_by_id_list_every_image_in_id_order(real_tree: Tree, real_ds: Dataset) -> None:
    ids = list(real_ds.image_ids())
    assert ids == list(range(1, 61))
    assert _names(real_tree, IMAGES) == [str(i).encode() for i in ids]
    assert _names(real_tree, BY_ID) == [f"{i}.json".encode() for i in ids]
    for name, node, _ in real_tree.readdir(BY_ID, 0):
        graph = _find(real_tree, b"images/" + name[:-5] + b"/graph.json")
        assert (node.type, node.kind, node.size) == (NodeType.BY_ID_FILE, "graph", graph.size)


def test_image_directory_lists_the_jpeg_first_then_its_json(real_tree: Tree) -> None:
    """image.jpg only where the release has the JPEG (4 of the 60 real images)."""
    with_jpeg = [image_id for image_id in range(1, 61)
                 if _names(real_tree, image_ino(image_id, 0)) == IMAGE_FILES]
    assert with_jpeg == sorted(JPEGS)
    assert _names(real_tree, image_ino(3, 0)) == IMAGE_FILES[1:]
    for name, node, _ in real_tree.readdir(image_ino(1, 0), 0):
        assert real_tree.lookup(image_ino(1, 0), name) == node
        assert node.type is (NodeType.JPEG if name == b"image.jpg" else NodeType.RECORD)
        assert node.size > 0


def _assert_resumes(tree: Tree, ino: int, step: int = 1) -> int:
    """Listing from the offset that came with any entry gives exactly the entries after it,
    as the kernel resumes a listing that filled its buffer; offsets only grow."""
    full = list(tree.readdir(ino, 0))
    offsets = [off for _, _, off in full]
    assert offsets == sorted(set(offsets)) and offsets[0] > 0
    for i in [*range(0, len(full), step), len(full) - 1]:
        assert list(tree.readdir(ino, full[i][2])) == full[i + 1:], (ino, i)
    return len(full)


def test_every_listing_resumes_where_it_stopped(real_tree: Tree, synthetic_tree: Tree) -> None:
    _assert_resumes(real_tree, ROOT)
    _assert_resumes(real_tree, BY_ID)
    _assert_resumes(real_tree, image_ino(1, 0))
    _assert_resumes(real_tree, image_ino(3, 0))
    assert _assert_resumes(synthetic_tree, IMAGES, 7) == 300
    by_object = synthetic_tree.lookup(ROOT, b"by-object")
    assert _assert_resumes(synthetic_tree, by_object.ino, 11) == 649
    busiest = max(synthetic_tree.readdir(by_object.ino, 0), key=lambda e: e[1].count)[1]
    assert _assert_resumes(synthetic_tree, busiest.ino, 5) == busiest.count > 200


def test_offsets_past_the_end_list_nothing(real_tree: Tree) -> None:
    """seekdir can hand back any 63-bit offset: past the end is an empty listing."""
    view = real_tree.lookup(ROOT, b"by-object").ino
    wall = real_tree.lookup(view, b"wall").ino
    for ino in (ROOT, IMAGES, BY_ID, image_ino(1, 0), view, wall):
        for offset in (10**6, 1 << 33, 2**63 - 1):
            assert list(real_tree.readdir(ino, offset)) == [], (ino, offset)


def test_image_offsets_are_ids_so_resuming_skips_gaps(synthetic_tree: Tree,
                                                      synthetic_ds: Dataset) -> None:
    """The synthetic_tree ids have gaps: an offset is the next id to list, present or not."""
    ids = list(synthetic_ds.image_ids())
    assert ids[-1] > len(ids)
    gap = next(i for i in range(1, ids[-1]) if i not in set(ids))
    assert _names(synthetic_tree, IMAGES, gap) == [str(i).encode() for i in ids if i > gap]
    assert _names(synthetic_tree, IMAGES, ids[-1] + 1) == []
    assert _names(synthetic_tree, BY_ID, ids[-1]) == [f"{ids[-1]}.json".encode()]


# --- query views -----------------------------------------------------------------------------


def test_view_lists_counts_then_names_each_a_directory_of_links(real_tree: Tree,
                                                                release: Path) -> None:
    """by-object/<name>/ holds one symlink per image with an object of that name, its
    st_size (count) is their number, and each link leads to ../../images/<id>."""
    view = real_tree.lookup(ROOT, b"by-object")
    listing = list(real_tree.readdir(view.ino, 0))
    assert listing[0][0] == b"counts.json" and listing[0][1].type is NodeType.COUNTS
    names = [name for name, _, _ in listing[1:]]
    assert names == sorted(names) and len(names) == 677
    wall = real_tree.lookup(view.ino, b"wall")
    assert wall.type is NodeType.VIEW_NAME and wall.is_dir and wall.key == b"wall"
    members = list(real_tree.readdir(wall.ino, 0))
    assert wall.count == len(members)
    with_wall = {e["image_id"] for e in json.loads((release / "objects.json").read_bytes())
                 if any("wall" in o["names"] for o in e["objects"])}
    ids = {node.image_id for _, node, _ in members}
    assert with_wall <= ids and 1 in ids
    for name, link, _ in members:
        assert link.type is NodeType.VIEW_LINK and link.is_link and not link.is_dir
        assert link.target == b"../../images/" + name == b"../../images/%d" % link.image_id
        assert link.size == len(link.target)
        assert real_tree.lookup(wall.ino, name) == link
    for missing in set(range(1, 61)) - ids:
        assert real_tree.lookup(wall.ino, str(missing).encode()) is None


def test_predicates_are_listed_case_folded(real_tree: Tree) -> None:
    """The release mixes `ON` and `on`: one directory, under the folded name."""
    view = real_tree.lookup(ROOT, b"by-predicate")
    names = _names(real_tree, view.ino)[1:]
    assert b"on" in names and all(n == n.decode().casefold().encode() for n in names)


def test_view_names_are_escaped_file_names(synthetic_tree: Tree, synthetic_ds: Dataset) -> None:
    """A name holding `/` is listed and found escaped, and leads to the images that hold it."""
    view = synthetic_tree.lookup(ROOT, b"by-object")
    names = _names(synthetic_tree, view.ino)[1:]
    assert all(escape(unescape(n)) == n for n in names)
    assert b"t%2Fv" in names and b"t/v" not in names
    node = synthetic_tree.lookup(view.ino, escape("t/v"))
    assert node.key == b"t%2Fv"
    for name in _names(synthetic_tree, node.ino):
        objects = synthetic_ds.entry("objects", int(name))["objects"]
        assert any("t/v" in o["names"] for o in objects), name


def test_id_views_are_symlinks_to_the_image(synthetic_tree: Tree, synthetic_ds: Dataset) -> None:
    """by-coco/<coco id> is one symlink to ../images/<image id>: never a directory."""
    for view, field in (("by-coco", "coco_id"), ("by-flickr", "flickr_id")):
        parent = synthetic_tree.lookup(ROOT, view.encode())
        listing = list(synthetic_tree.readdir(parent.ino, 0))[1:]
        metas = [synthetic_ds.entry("meta", i) for i in synthetic_ds.image_ids()]
        expected = {str(m[field]).encode(): m["image_id"] for m in metas
                    if m.get(field) is not None}
        assert {name: node.image_id for name, node, _ in listing} == expected
        for name, node, _ in listing:
            assert node.type is NodeType.ID_LINK and node.is_link
            assert node.target == b"../images/%d" % node.image_id
            assert synthetic_tree.lookup(parent.ino, name) == node
            assert synthetic_tree.lookup(node.ino, b"meta.json") is None
            assert list(synthetic_tree.readdir(node.ino, 0)) == []


# --- datasets that hold less ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory, release: Path) -> Iterator[Tree]:
    """image_data.json alone, plus one image whose id is past what inodes can number."""
    root = tmp_path_factory.mktemp("sparse")
    (root / "release").mkdir()
    meta = json.loads((release / "image_data.json").read_bytes())
    meta.append({**meta[0], "image_id": BEYOND})
    (root / "release" / "image_data.json").write_bytes(json.dumps(meta).encode())
    build(root / "release", root / "dataset", show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield Tree(ds)


def test_without_graphs_there_is_no_by_id(sparse: Tree) -> None:
    assert _names(sparse, ROOT) == [b"README.txt", b"images", b"image_data.json"]
    assert sparse.lookup(ROOT, b"by-id") is None and sparse.node(BY_ID) is None
    assert sparse.lookup(BY_ID, b"1.json") is None
    assert _names(sparse, image_ino(1, 0)) == [b"meta.json"]
    assert sparse.lookup(image_ino(1, 0), b"objects.json") is None


def test_an_id_too_large_for_an_inode_is_neither_found_nor_listed(sparse: Tree) -> None:
    """Its inode would fall among the view names': the image is left out everywhere, so that
    no listed entry has an inode that decodes to something else."""
    assert sparse.ds.has_image(BEYOND)
    assert sparse.lookup(IMAGES, str(BEYOND).encode()) is None
    assert _names(sparse, IMAGES) == [str(i).encode() for i in range(1, 61)]
    for _, node in walk(sparse):
        assert sparse.node(node.ino) == node
