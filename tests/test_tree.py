"""The namespace without a mount: names, inode numbers, lookups and resumable listings, on the
real excerpts, a synthetic release and a release folder as sites keep it (nested folders, other
files in the JPEG folders), each call in microseconds."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import JPEGS, RELEASE, V12, walk
from vgfs.build import build
from vgfs.dataset import Dataset, open_dataset
from vgfs.errors import VGFSError
from vgfs.query import VIEWS, escape, unescape
from vgfs.schema import IMAGE_DIRS, NAME_MAX
from vgfs.tree import (
    BY_ID,
    FILES,
    IMAGE_BASE,
    IMAGES,
    MAX_IMAGE_ID,
    NAME_BASE,
    README,
    RELEASE_BASE,
    RESERVED,
    ROOT,
    STATS,
    STATS_NAME,
    STRAY_BASE,
    VG_100K,
    VG_100K_2,
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
                b"README.txt": (4, NodeType.README), STATS_NAME: (5, NodeType.STATS),
                b"VG_100K": (6, NodeType.JPEG_DIR), b"VG_100K_2": (7, NodeType.JPEG_DIR)}
    for name, (ino, kind) in expected.items():
        node = real_tree.lookup(ROOT, name)
        assert (node.ino, node.type) == (ino, kind), name
    files = real_tree.ds.release_files()
    assert len(files) == 15
    for i, (path, size) in enumerate(files):  # the release's own files, in path order
        node = real_tree.lookup(ROOT, path.encode())
        assert (node.ino, node.type, node.file, node.size) == (
            RELEASE_BASE + i, NodeType.RELEASE_FILE, path, size)
    for v, view in enumerate(VIEWS[:4]):
        node = real_tree.lookup(ROOT, view.encode())
        assert (node.ino, node.type, node.view) == (8 + v, NodeType.VIEW, view)
        counts = real_tree.lookup(node.ino, b"counts.json")
        assert (counts.ino, counts.type) == (48 + v, NodeType.COUNTS)


def test_image_inodes_are_a_function_of_the_id(real_tree: Tree) -> None:
    """images/<id>/... is 2**32 + 16*id + code: the directory 0, the JSON kinds 1..7 in FILES
    order, image.jpg 8, by-id/<id>.json 9 and every view's link to the image 10."""
    for image_id in (1, 4, 7, 60):
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
            if kind == "jpeg":  # one inode, so one page cache, for both names
                assert real_tree.lookup(VG_100K, b"%d.jpg" % image_id) == node
        by_id = real_tree.lookup(BY_ID, f"{image_id}.json".encode())
        assert (by_id.ino, by_id.type, by_id.kind) == (d.ino + 9, NodeType.BY_ID_FILE, "graph")
    wall = _find(real_tree, b"by-object/wall")
    assert real_tree.lookup(wall.ino, b"1").ino == image_ino(1, 10)


def test_every_node_decodes_from_its_inode(real_tree: Tree, real_dataset: Path,
                                           tmp_path: Path) -> None:
    """getattr gets only an inode: node(ino) gives back exactly what lookup and readdir gave,
    inodes never collide, and a copy of the dataset (another machine's) numbers alike. The
    walk lists the views, which are otherwise found by name only."""
    nodes = dict(walk(Tree(real_tree.ds, list_views=True)))
    assert len(nodes) > 5000
    links: dict[int, int] = {}
    jpegs: dict[int, int] = {}
    others: dict[int, bytes] = {}
    for path, node in nodes.items():
        assert real_tree.node(node.ino) == node, path
        if node.type is NodeType.VIEW_LINK:  # one inode per image, shared by every view
            assert links.setdefault(node.ino, node.image_id) == node.image_id, path
        elif node.type is NodeType.JPEG:  # images/<id>/image.jpg, also in the JPEG folders
            assert path.endswith((b"/%d/image.jpg" % node.image_id,
                                  b"VG_100K/%d.jpg" % node.image_id,
                                  b"VG_100K_2/%d.jpg" % node.image_id)), path
            jpegs[node.ino] = node.image_id
        else:
            assert others.setdefault(node.ino, path) == path, (path, others[node.ino])
    assert len(jpegs) == len(JPEGS)
    assert not set(links) & set(others) and not set(jpegs) & (set(links) | set(others))
    with open_dataset(shutil.copytree(real_dataset, tmp_path / "copy")) as again:
        second = Tree(again, list_views=True)
        assert {p: n.ino for p, n in walk(second)} == {p: n.ino for p, n in nodes.items()}


def test_inodes_that_name_nothing_decode_to_none(real_tree: Tree) -> None:
    """Stale or invented inode numbers are ENOENT, never a wrong file nor an exception."""
    for ino in (0, 12, 13, 15, 16, 24, 52, RELEASE_BASE - 1, RELEASE_BASE + 15, STRAY_BASE,
                2**32 - 1, image_ino(61, 0), image_ino(0, 0),
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
                 b"README", b"readme.txt", b"image_data", b".", b"..",
                 b"VG_100K/3.jpg", b"VG_100K/02.jpg", b"VG_100K/2.JPG", b"VG_100K/2",
                 b"VG_100K/2.jpg/x", b"VG_100K_2/2.jpg", b"VG_100K_2/4.jpg", b"vg_100k",
                 b"VG_100K/61.jpg", b"images/4/image.jpeg", b"objects.json/1"):
        assert _find(real_tree, path) is None, path


def test_lookup_inside_a_file_finds_nothing(real_tree: Tree) -> None:
    """Files and symlinks are no directories: a name under them is ENOENT, whatever it is."""
    files = [_find(real_tree, p) for p in (b"README.txt", b"synsets.json", b"images/1/meta.json",
                                      b"images/1/image.jpg", b"by-id/1.json",
                                      b"by-object/counts.json", b"by-object/wall/1",
                                      b"VG_100K/2.jpg", b"VG_100K_2/1.jpg",
                                      b"objects.json")]
    files.append(real_tree.lookup(ROOT, STATS_NAME))
    for node in files:
        assert not node.is_dir
        for name in (b"1", b"meta.json", b"counts.json", b"images"):
            assert real_tree.lookup(node.ino, name) is None, (node, name)


def test_names_longer_than_name_max_are_refused_everywhere(real_tree: Tree) -> None:
    """ENAMETOOLONG, not ENOENT, in every directory; NAME_MAX bytes is still a plain miss."""
    wall = _find(real_tree, b"by-object/wall")
    for parent in (ROOT, IMAGES, BY_ID, image_ino(1, 0), _find(real_tree, b"by-object").ino,
                   wall.ino, README, VG_100K, VG_100K_2):
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


def test_root_lists_what_the_dataset_holds(real_tree: Tree, synthetic_tree: Tree,
                                           release: Path) -> None:
    """The release folder's own files and the JPEG folders, with README, images and by-id, in
    one sorted listing, as `ls` shows a folder. The views that have names (by-coco and
    by-flickr only where image_data.json has such ids) are found by name, and listed with
    list_views only."""
    fixed = [b"README.txt", b"images", b"by-id", b"VG_100K", b"VG_100K_2"]
    files = [p.name.encode() for p in release.iterdir() if p.is_file()]
    assert len(files) == 15
    assert _names(real_tree, ROOT) == sorted(fixed + files)
    views = [v.encode() for v in VIEWS[:4]]
    assert all(real_tree.lookup(ROOT, v) is not None for v in views)
    assert _names(Tree(real_tree.ds, list_views=True), ROOT) == sorted(fixed + files + views)
    synthetic = [p.name.encode() for p in (synthetic_tree.ds.path.parent / "release").iterdir()
                 if p.is_file()]
    assert _names(Tree(synthetic_tree.ds, list_views=True), ROOT) == sorted(
        fixed + synthetic + [v.encode() for v in VIEWS])
    for name, node, _ in real_tree.readdir(ROOT, 0):
        assert real_tree.lookup(ROOT, name) == node


def test_images_and_by_id_list_every_image_in_id_order(real_tree: Tree, real_ds: Dataset) -> None:
    ids = list(real_ds.image_ids())
    assert ids == list(range(1, 61))
    assert _names(real_tree, IMAGES) == [str(i).encode() for i in ids]
    assert _names(real_tree, BY_ID) == [f"{i}.json".encode() for i in ids]
    for name, node, _ in real_tree.readdir(BY_ID, 0):
        # The driver's file: the scene graph with the image's attributes added.
        image_id = int(name[:-5])
        graph = _find(real_tree, b"images/%d/graph.json" % image_id)
        assert (node.type, node.kind, node.image_id) == (NodeType.BY_ID_FILE, "graph", image_id)
        assert node.size == real_ds.image(image_id).by_id_size > graph.size


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
    assert _assert_resumes(real_tree, VG_100K) == 4
    assert _assert_resumes(synthetic_tree, VG_100K, 13) == 300
    assert _assert_resumes(synthetic_tree, VG_100K_2) == len(
        list(synthetic_tree.ds.image_ids(db="part2"))) > 0
    assert _assert_resumes(synthetic_tree, IMAGES, 7) == 300
    by_object = synthetic_tree.lookup(ROOT, b"by-object")
    assert _assert_resumes(synthetic_tree, by_object.ino, 11) == 649
    busiest = max(synthetic_tree.readdir(by_object.ino, 0), key=lambda e: e[1].count)[1]
    assert _assert_resumes(synthetic_tree, busiest.ino, 5) == busiest.count > 200


def test_offsets_past_the_end_list_nothing(real_tree: Tree) -> None:
    """seekdir can hand back any 63-bit offset: past the end is an empty listing."""
    view = real_tree.lookup(ROOT, b"by-object").ino
    wall = real_tree.lookup(view, b"wall").ino
    for ino in (ROOT, IMAGES, BY_ID, image_ino(1, 0), view, wall, VG_100K, VG_100K_2):
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
    """image_data.json alone."""
    root = tmp_path_factory.mktemp("sparse")
    (root / "release").mkdir()
    shutil.copy(release / "image_data.json", root / "release")
    build(root / "release", root / "dataset", show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield Tree(ds)


def test_without_graphs_there_is_no_by_id(sparse: Tree) -> None:
    """Nor any JPEG folder, without JPEGs."""
    assert _names(sparse, ROOT) == [b"README.txt", b"image_data.json", b"images"]
    assert sparse.node(VG_100K) is None and sparse.lookup(ROOT, b"VG_100K") is None
    assert sparse.lookup(ROOT, b"by-id") is None and sparse.node(BY_ID) is None
    assert sparse.lookup(BY_ID, b"1.json") is None
    assert _names(sparse, image_ino(1, 0)) == [b"meta.json"]
    assert sparse.lookup(image_ino(1, 0), b"objects.json") is None


def test_an_id_too_large_for_an_inode_is_refused_or_never_shown(tmp_path: Path,
                                                                release: Path) -> None:
    """Its inode would fall among the view names'. Either the build refuses it, naming it,
    or the image is left out everywhere, so that no listed entry has an inode that decodes
    to something else."""
    (tmp_path / "release").mkdir()
    meta = json.loads((release / "image_data.json").read_bytes())
    meta.append({**meta[0], "image_id": BEYOND})
    (tmp_path / "release" / "image_data.json").write_bytes(json.dumps(meta).encode())
    shutil.copy(release / "objects.json", tmp_path / "release")
    try:
        build(tmp_path / "release", tmp_path / "dataset", show_progress=False)
    except VGFSError as e:
        assert str(BEYOND) in str(e)
        return
    with open_dataset(tmp_path / "dataset") as ds:
        tree = Tree(ds)
        assert tree.lookup(IMAGES, str(BEYOND).encode()) is None
        assert _names(tree, IMAGES) == [str(i).encode() for i in range(1, 61)]
        assert _names(tree, BY_ID) == [b"%d.json" % i for i in range(1, 61)]
        assert tree.lookup(BY_ID, b"%d.json" % BEYOND) is None
        for _, node in walk(tree):
            assert tree.node(node.ino) == node


# --- a release folder as sites keep it ---------------------------------------------------------

# Other files of the JPEG folders: an annotated id whose file is empty (no JPEG), GQA's image,
# Windows' thumbnails, an id that image_data.json does not have, a desktop.ini.
STRAYS = {"VG_100K/7.jpg": b"", "VG_100K/Thumbs.db": b"thumbnails" * 50,
          "VG_100K/n166008.jpg": None, "VG_100K_2/99999.jpg": None,
          "VG_100K_2/desktop.ini": b"[.ShellClassInfo]\r\n"}
# What a site keeps beside the release, at its own paths (a zip shows as its JSON).
EXTRA = {"v1.2/objects.json": None, "v1.2/relationships.json": None,
         "splits/sgg/train.txt": b"1\n2\n4\n", "splits/sgg/VG-SGG-dicts.json": b'{"a": 1}',
         "VG-SGG-with-attri.h5": None, "extra/synsets.json": None,
         "donn\u00e9es/\u00e9t\u00e9 2016.txt": "vid\u00e9o\n".encode()}
# Names the mount gives its own meaning at the root: the build does not carry them.
SHADOWED = {"README.txt": b"the site's own readme\n", "by-id/1.json": b"{}",
            "by-object/wall": b"x", ".vgfs-stats": b"{}", "by-coco/1": b"x"}


def write_site_release(dst: Path) -> Path:
    """The real excerpts at `dst`, with what sites keep beside them (EXTRA), other files in
    the JPEG folders (STRAYS) and files whose names the mount takes (SHADOWED)."""
    shutil.copytree(RELEASE, dst)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    os.chmod(dst, 0o755)
    jpeg = (dst / "VG_100K" / "2.jpg").read_bytes()
    blob = bytes(range(256)) * 800  # 200 KiB of binary: several frames
    fill = {"VG_100K/n166008.jpg": jpeg[:20000], "VG_100K_2/99999.jpg": jpeg,
            "v1.2/objects.json": (V12 / "objects.json").read_bytes(),
            "v1.2/relationships.json": (V12 / "relationships.json").read_bytes(),
            "VG-SGG-with-attri.h5": blob}
    for rel, data in {**STRAYS, **EXTRA, **SHADOWED}.items():
        path = dst / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel == "extra/synsets.json":
            with zipfile.ZipFile(dst / "extra" / "synsets.json.zip", "w",
                                 zipfile.ZIP_DEFLATED) as zf:
                zf.write(dst / "synsets.json", "synsets.json")
        else:
            path.write_bytes(fill.get(rel, data))
    return dst


def site_file_bytes(release: Path, rel: str) -> bytes:
    """A carried file's bytes as the mount must serve them (a zip's: its JSON)."""
    if rel == "extra/synsets.json":
        with zipfile.ZipFile(release / "extra" / "synsets.json.zip") as zf:
            return zf.read("synsets.json")
    return (release / rel).read_bytes()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Tree]]:
    root = tmp_path_factory.mktemp("site")
    release = write_site_release(root / "release")
    build(release, root / "dataset", show_progress=False)
    with open_dataset(root / "dataset") as ds:
        yield release, Tree(ds)


def _carried(release: Path) -> dict[str, int]:
    """What the mount must carry, found without vgfs: every file outside the JPEG folders,
    but the shadowed ones, by relative path, with its size."""
    out = {}
    for root, dirs, files in os.walk(release):
        dirs[:] = [d for d in dirs if d not in (*IMAGE_DIRS, "images")]
        for name in files:
            rel = (Path(root) / name).relative_to(release).as_posix()
            if rel.split("/")[0] in RESERVED:
                continue
            rel = rel.removesuffix(".zip") if rel == "extra/synsets.json.zip" else rel
            out[rel] = len(site_file_bytes(release, rel))
    return out


def test_every_release_file_is_at_its_own_path(site: tuple[Path, Tree]) -> None:
    """Nested folders too, found by one lookup per component and listed sorted in folders
    of their own; a *.json.zip shows as the JSON it holds; nothing else is carried."""
    release, tree = site
    carried = _carried(release)
    assert set(EXTRA) <= set(carried) and len(carried) == 15 + len(EXTRA)
    for rel, size in carried.items():
        node = _find(tree, rel.encode())
        assert (node.type, node.file, node.size) == (NodeType.RELEASE_FILE, rel, size), rel
        assert not node.is_dir and tree.node(node.ino) == node
    found = {path.decode(): node for path, node in walk(tree)
             if node.type is NodeType.RELEASE_FILE}
    assert set(found) == set(carried)
    for folder in ("v1.2", "splits", "splits/sgg", "extra", "donn\u00e9es"):
        node = _find(tree, folder.encode())
        assert (node.type, node.file) == (NodeType.RELEASE_DIR, folder) and node.is_dir
        names = _names(tree, node.ino)
        assert names == sorted(names) and names
    assert _names(tree, _find(tree, b"splits/sgg").ino) == [b"VG-SGG-dicts.json", b"train.txt"]
    assert _names(tree, _find(tree, b"extra").ino) == [b"synsets.json"]
    assert _find(tree, b"extra/synsets.json.zip") is None
    assert _find(tree, b"splits/sgg/train.txt/x") is None
    assert _find(tree, b"splits/train.txt") is None


def test_release_inodes_number_the_paths_in_order(site: tuple[Path, Tree]) -> None:
    """2**20 + i for the i-th path of the release's files and folders, in sorted order: the
    same on every mount of the dataset."""
    _, tree = site
    paths = set()
    for path, _ in tree.ds.release_files():
        parts = path.split("/")
        paths.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    for i, path in enumerate(sorted(paths)):
        assert _find(tree, path.encode()).ino == RELEASE_BASE + i, path


def test_shadowed_names_are_the_mount_s_own(site: tuple[Path, Tree]) -> None:
    """README.txt, by-id/, by-object/, by-coco/ and .vgfs-stats in the release do not take
    the mount's names: the build leaves them out, and every name the mount gives meaning to
    at its root is one that the build keeps clear (RESERVED)."""
    _, tree = site
    assert _find(tree, b"README.txt").type is NodeType.README
    assert _find(tree, b"by-id").type is NodeType.BY_ID
    assert _find(tree, b"by-id/1.json").type is NodeType.BY_ID_FILE
    assert _find(tree, b"by-object").type is NodeType.VIEW
    assert _find(tree, b"by-object/wall").type is NodeType.VIEW_NAME
    assert _find(tree, b"by-coco") is None  # no COCO ids in the excerpts: no view at all
    assert tree.lookup(ROOT, STATS_NAME).type is NodeType.STATS
    assert not any(p.split("/")[0] in RESERVED for p, _ in tree.ds.release_files())
    made = {name.decode() for name, node, _ in tree.readdir(ROOT, 0)
            if node.type not in (NodeType.RELEASE_FILE, NodeType.RELEASE_DIR)}
    assert made | {STATS_NAME.decode()} <= RESERVED
    assert {"README.txt", "images", "by-id", ".vgfs-stats", *IMAGE_DIRS, *VIEWS} <= RESERVED


def test_vg_100k_lists_every_jpeg_then_the_other_files(site: tuple[Path, Tree]) -> None:
    """The merged folder: both parts' JPEGs in id order, then the other files of both
    JPEG folders, sorted. VG_100K_2 lists the second part's alone."""
    _, tree = site
    strays_1 = sorted(p.split("/")[1].encode() for p in STRAYS)
    strays_2 = sorted(p.split("/")[1].encode() for p in STRAYS if p.startswith("VG_100K_2/"))
    assert _names(tree, VG_100K) == [b"1.jpg", b"2.jpg", b"4.jpg", b"5.jpg", *strays_1]
    assert _names(tree, VG_100K_2) == [b"1.jpg", *strays_2]
    for folder in (VG_100K, VG_100K_2):
        for name, node, _ in tree.readdir(folder, 0):
            assert tree.lookup(folder, name) == node
            assert tree.node(node.ino) == node and not node.is_dir


def test_other_files_of_the_jpeg_folders_are_served_where_they_were(
        site: tuple[Path, Tree]) -> None:
    """Strays keep their folder and size; VG_100K shows VG_100K_2's too, not the other way
    round; an annotated id whose file is no JPEG is a stray, and its image has no image.jpg;
    an id missing from image_data.json has no images/ directory."""
    release, tree = site
    inos = {}
    for rel in STRAYS:
        folder, name = rel.split("/")
        node = _find(tree, rel.encode())
        assert (node.type, node.file, node.size) == (
            NodeType.STRAY, rel, (release / rel).stat().st_size), rel
        assert tree.lookup(VG_100K, name.encode()) == node  # the merged folder has them all
        inos[rel] = node.ino
    assert sorted(inos.values()) == [STRAY_BASE + i for i in range(len(STRAYS))]
    assert [rel for rel, _ in sorted(inos.items(), key=lambda kv: kv[1])] == sorted(STRAYS)
    assert tree.lookup(VG_100K_2, b"n166008.jpg") is None
    assert tree.lookup(VG_100K_2, b"Thumbs.db") is None
    assert _find(tree, b"VG_100K/7.jpg").size == 0
    assert tree.lookup(image_ino(7, 0), b"image.jpg") is None
    assert tree.node(image_ino(7, 8)) is None
    assert _find(tree, b"images/99999") is None
    assert _find(tree, b"VG_100K/99999.jpg").type is NodeType.STRAY


def test_a_jpeg_has_one_inode_under_every_name(site: tuple[Path, Tree]) -> None:
    """images/<id>/image.jpg, VG_100K/<id>.jpg and VG_100K_2/<id>.jpg are one file: one
    inode, so one page cache, and no symlink."""
    _, tree = site
    for image_id in JPEGS:
        node = _find(tree, b"images/%d/image.jpg" % image_id)
        assert node.type is NodeType.JPEG and node.ino == image_ino(image_id, 8)
        assert _find(tree, b"VG_100K/%d.jpg" % image_id) == node
        in_part2 = _find(tree, b"VG_100K_2/%d.jpg" % image_id)
        assert in_part2 == (node if JPEGS[image_id].startswith("VG_100K_2/") else None)


def test_jpeg_folder_listings_resume_across_jpegs_then_strays(site: tuple[Path, Tree],
                                                              synthetic_tree: Tree) -> None:
    """The kernel may stop a listing anywhere, among the JPEGs or the other files: it goes
    on from the offset it got, neither repeating nor skipping an entry."""
    _, tree = site
    assert _assert_resumes(tree, VG_100K) == 4 + len(STRAYS)
    assert _assert_resumes(tree, VG_100K_2) == 1 + 2
    for folder in (b"splits", b"v1.2", b"splits/sgg"):
        _assert_resumes(tree, _find(tree, folder).ino)
    _assert_resumes(tree, ROOT)
    full = list(tree.readdir(VG_100K, 0))
    jpegs = [entry for entry in full if entry[1].type is NodeType.JPEG]
    assert full[:len(jpegs)] == jpegs  # the JPEGs come first
    assert list(tree.readdir(VG_100K, full[-1][2])) == []
    assert list(tree.readdir(VG_100K, 2**63 - 1)) == []
    # Resuming after the last JPEG by its offset gives exactly the strays.
    assert [n for n, _, _ in tree.readdir(VG_100K, jpegs[-1][2])] == [
        n for n, node, _ in full if node.type is NodeType.STRAY]


def test_every_node_of_the_site_release_decodes_from_its_inode(site: tuple[Path, Tree]) -> None:
    _, tree = site
    seen: dict[int, bytes] = {}
    for path, node in walk(tree):
        assert tree.node(node.ino) == node, path
        if node.type is not NodeType.VIEW_LINK:
            # A JPEG is listed twice (images/<id>/ and VG_100K/), a stray of VG_100K_2 too.
            seen.setdefault(node.ino, path)
            assert node.type in (NodeType.JPEG, NodeType.STRAY) or seen[node.ino] == path, path


def test_no_folder_lists_a_name_twice(tmp_path: Path, release_copy: Path) -> None:
    """Windows leaves a Thumbs.db in every folder it showed: the merged VG_100K shows one,
    its own, and VG_100K_2 keeps its own."""
    (release_copy / "VG_100K" / "Thumbs.db").write_bytes(b"one")
    (release_copy / "VG_100K_2" / "Thumbs.db").write_bytes(b"second")
    build(release_copy, tmp_path / "dataset", show_progress=False)
    with open_dataset(tmp_path / "dataset") as ds:
        tree = Tree(ds)
        assert _find(tree, b"VG_100K_2/Thumbs.db").size == len(b"second")
        assert _find(tree, b"VG_100K/Thumbs.db").size == len(b"one")
        for folder in (VG_100K, VG_100K_2, ROOT):
            names = _names(tree, folder)
            assert len(names) == len(set(names)), names


def test_a_release_with_one_jpeg_folder_shows_its_jpegs(tmp_path: Path, release: Path) -> None:
    """Only VG_100K/, as many sites keep it: its JPEGs are in VG_100K/ and images/<id>/."""
    (tmp_path / "release" / "VG_100K").mkdir(parents=True)
    shutil.copy(release / "image_data.json", tmp_path / "release")
    for name in ("2.jpg", "4.jpg"):
        shutil.copy(release / "VG_100K" / name, tmp_path / "release" / "VG_100K")
    build(tmp_path / "release", tmp_path / "dataset", show_progress=False)
    with open_dataset(tmp_path / "dataset") as ds:
        tree = Tree(ds)
        assert _names(tree, VG_100K) == [b"2.jpg", b"4.jpg"]
        assert _find(tree, b"images/4/image.jpg").size == (release / "VG_100K/4.jpg").stat(
            ).st_size
        assert tree.lookup(ROOT, b"VG_100K_2") is None


def test_what_reads_lmdbs_map(real_dataset: Path, real_tree: Tree) -> None:
    """The nodes whose decoding, lookups or listings may read LMDB's map, which the adapter
    leaves to its worker threads: every one until the dataset holds its indexes; after, only
    the query views' (a view, a name in it, and what the name lists)."""
    with open_dataset(real_dataset) as ds:
        fresh = Tree(ds)
        inodes = [ROOT, IMAGES, BY_ID, VG_100K, image_ino(1, 0), image_ino(1, 1), NAME_BASE]
        assert all(fresh.reads_map(ino) for ino in inodes)
    wall = _find(real_tree, b"by-object/wall")
    views = [_find(real_tree, b"by-object").ino, wall.ino]
    assert all(real_tree.reads_map(ino) for ino in views)
    assert not any(real_tree.reads_map(ino) for ino in inodes[:-1])
    assert not real_tree.reads_map(next(real_tree.readdir(wall.ino, 0))[1].ino)  # a link
