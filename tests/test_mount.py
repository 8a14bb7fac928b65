"""The mount, for real: FUSE, real tools, the official driver, on the real excerpts."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    JPEGS,
    RELEASE,
    driver_by_id,
    entry_bytes,
    force_unmount,
    gone,
    image_id_of,
    lookups_for,
    mounted,
    vgfs,
    wait_for,
)
from vgfs.dataset import open_dataset
from vgfs.layout import FORMAT
from vgfs.mount import mounted_fs

KIND_SOURCES = {
    "meta.json": "image_data.json",
    "objects.json": "objects.json",
    "attributes.json": "attributes.json",
    "relationships.json": "relationships.json",
    "graph.json": "scene_graphs.json",
    "regions.json": "region_descriptions.json",
    "qa.json": "question_answers.json",
}


# The folders of the release that hold its JPEGs: everything else in it is a release file.
JPEG_FOLDERS = ("VG_100K", "VG_100K_2")


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[int, object]]:
    """Each release file's entries by image id, straight from the release."""
    return {name: {image_id_of(e): e for e in json.loads((RELEASE / name).read_bytes())}
            for name in set(KIND_SOURCES.values())}


@pytest.fixture(scope="module")
def own_bytes() -> dict[str, dict[int, bytes]]:
    """Each release file's own bytes of every entry, by image id: slices of the file."""
    return {name: entry_bytes(RELEASE / name) for name in set(KIND_SOURCES.values())}


@pytest.fixture(scope="module")
def driver_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """by-id/<id>.json as the official driver's preprocessing writes it from the release."""
    return driver_by_id(RELEASE, tmp_path_factory.mktemp("driver"))


def release_files() -> dict[str, Path]:
    """Every file of the release folder outside its JPEG folders, by relative path."""
    return {str(p.relative_to(RELEASE)): p for p in sorted(RELEASE.rglob("*"))
            if p.is_file() and p.relative_to(RELEASE).parts[0] not in JPEG_FOLDERS}


def test_every_file_equals_its_source(real_mount: Path, sources: dict, own_bytes: dict,
                                      driver_files: dict) -> None:
    """Every JSON file holds the release's entry in the release's own bytes, every JPEG its
    bytes, by-id/ what the official driver's preprocessing writes, and nothing extra."""
    ids = sorted(sources["image_data.json"])
    assert sorted(int(n) for n in os.listdir(real_mount / "images")) == ids
    for image_id in ids:
        d = real_mount / "images" / str(image_id)
        expected = set(KIND_SOURCES) | ({"image.jpg"} if image_id in JPEGS else set())
        assert set(os.listdir(d)) == expected
        for name, src in KIND_SOURCES.items():
            data = (d / name).read_bytes()
            assert json.loads(data) == sources[src][image_id], (image_id, name)
            assert data == own_bytes[src][image_id], (image_id, name)
            assert (d / name).stat().st_size == len(data)
        if image_id in JPEGS:
            assert (d / "image.jpg").read_bytes() == (RELEASE / JPEGS[image_id]).read_bytes()
        by_id = (real_mount / "by-id" / f"{image_id}.json").read_bytes()
        assert by_id == driver_files[image_id], image_id
        assert {k: v for k, v in json.loads(by_id).items() if k != "attributes"} == sources[
            "scene_graphs.json"][image_id]
    assert sorted(os.listdir(real_mount / "by-id")) == sorted(f"{i}.json" for i in ids)
    for name in ("image_data.json", "synsets.json", "object_alias.txt"):
        assert (real_mount / name).read_bytes() == (RELEASE / name).read_bytes()
    readme = (real_mount / "README.txt").read_text()
    assert "CC BY 4.0" in readme and "Images: 60" in readme


def test_root_is_the_release_folder(real_mount: Path) -> None:
    """`ls` of the root shows every release file, VG_100K and VG_100K_2 beside the views; each
    release file has the release's size and bytes."""
    listed = set(subprocess.run(["ls", "-A", str(real_mount)], check=True, capture_output=True,
                                text=True).stdout.split())
    files = release_files()
    top = {rel.split("/")[0] for rel in files}
    assert top | {*JPEG_FOLDERS, "README.txt", "images", "by-id"} <= listed
    assert all(name.startswith("by-") for name in listed - top - {
        *JPEG_FOLDERS, "README.txt", "images", "by-id"}), listed
    for rel, src in files.items():
        st = (real_mount / rel).stat()
        assert st.st_size == src.stat().st_size, rel
        assert hashlib.sha256((real_mount / rel).read_bytes()).digest() == hashlib.sha256(
            src.read_bytes()).digest(), rel


def test_jpeg_folders(real_mount: Path) -> None:
    """VG_100K/ holds every JPEG of both parts, VG_100K_2/ the second part only (the excerpts:
    1.jpg); each JPEG is one inode under all its names, images/<id>/image.jpg included, and
    its link count is the number of those names: `du` counts it once."""
    assert sorted(os.listdir(real_mount / "VG_100K"), key=lambda n: int(n[:-4])) == [
        f"{i}.jpg" for i in sorted(JPEGS)]
    assert os.listdir(real_mount / "VG_100K_2") == ["1.jpg"]
    for image_id, rel in JPEGS.items():
        names = [real_mount / "images" / str(image_id) / "image.jpg",
                 real_mount / "VG_100K" / f"{image_id}.jpg"]
        if rel.startswith("VG_100K_2/"):
            names.append(real_mount / rel)
        inodes = {p.stat().st_ino for p in names}
        assert len(inodes) == 1, (image_id, names)
        assert {p.stat().st_nlink for p in names} == {len(names)}, (image_id, names)
        release_jpeg = (RELEASE / rel).read_bytes()
        for p in names:
            assert p.stat().st_size == len(release_jpeg)
            assert p.read_bytes() == release_jpeg
    for missing in ("VG_100K/3.jpg", "VG_100K_2/2.jpg", "VG_100K/01.jpg", "VG_100K_2/3.jpg"):
        assert not (real_mount / missing).exists(), missing
    du = subprocess.run(["du", "-a", "VG_100K", "VG_100K_2", "images"], cwd=real_mount,
                        capture_output=True, text=True, check=True).stdout
    counted = [line.split("\t")[1] for line in du.splitlines() if line.endswith(".jpg")]
    assert len(counted) == len(JPEGS), counted  # each JPEG once, under the first name met


def _extra_files(release: Path) -> dict[str, bytes]:
    """Files a site's release folder holds beside the official ones, by the path at which the
    mount must show them: GQA's JPEGs, an unannotated id and Windows' Thumbs.db in the JPEG
    folders, a split file in nested folders; question_answers.json becomes its zip."""
    extra = {"VG_100K/n166008.jpg": (release / "VG_100K/4.jpg").read_bytes(),
             "VG_100K/999.jpg": (release / "VG_100K/5.jpg").read_bytes(),
             "VG_100K_2/Thumbs.db": b"thumbs of part 2",
             "splits/deep/train.txt": b"1 2 3\n"}
    for rel, data in extra.items():
        (release / rel).parent.mkdir(parents=True, exist_ok=True)
        (release / rel).write_bytes(data)
    qa = release / "question_answers.json"
    with zipfile.ZipFile(release / "question_answers.json.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(qa, qa.name)
    qa.unlink()
    return extra


def test_other_files_are_served_where_they_were(release_copy: Path, tmp_path: Path) -> None:
    """What else sits in a release folder is carried: other files of the JPEG folders (reported
    and counted by the build, never stopping it) in their folder (and those of VG_100K_2 in the
    merged VG_100K), nested folders at their paths, a zipped JSON file as the JSON it holds."""
    extra = _extra_files(release_copy)
    dataset = tmp_path / "dataset"
    err = vgfs("build", str(release_copy), "-o", str(dataset)).stderr
    assert "no entry in image_data.json" in err and "other files sit in the JPEG folders" in err
    counts = json.loads((dataset / "manifest.json").read_bytes())["counts"]
    assert (counts["unannotated_jpegs"], counts["other_files"]) == (1, 2)
    with mounted(dataset, tmp_path / "mp") as mp:
        assert sorted(os.listdir(mp / "VG_100K")) == sorted(
            [f"{i}.jpg" for i in JPEGS] + ["999.jpg", "n166008.jpg", "Thumbs.db"])
        assert sorted(os.listdir(mp / "VG_100K_2")) == ["1.jpg", "Thumbs.db"]
        assert os.listdir(mp / "splits") == ["deep"]
        for rel, data in extra.items():
            assert (mp / rel).stat().st_size == len(data), rel
            assert (mp / rel).read_bytes() == data, rel
        assert (mp / "VG_100K/Thumbs.db").stat().st_ino == (
            mp / "VG_100K_2/Thumbs.db").stat().st_ino
        assert not (mp / "images/999").exists()
        qa = (RELEASE / "question_answers.json").read_bytes()
        assert (mp / "question_answers.json").read_bytes() == qa
        assert not (mp / "question_answers.json.zip").exists()
        own = entry_bytes(RELEASE / "question_answers.json")
        assert (mp / "images/7/qa.json").read_bytes() == own[7]


def test_a_name_in_both_jpeg_folders(release_copy: Path, tmp_path: Path) -> None:
    """A Thumbs.db in each JPEG folder (Windows writes one in every folder it shows): each
    folder serves its own, and the merged VG_100K lists the name once."""
    (release_copy / "VG_100K/Thumbs.db").write_bytes(b"thumbs of part 1, longer")
    (release_copy / "VG_100K_2/Thumbs.db").write_bytes(b"thumbs of part 2")
    dataset = tmp_path / "dataset"
    vgfs("build", str(release_copy), "-o", str(dataset))
    with mounted(dataset, tmp_path / "mp") as mp:
        for folder in ("VG_100K", "VG_100K_2"):
            assert (mp / folder / "Thumbs.db").read_bytes() == (
                release_copy / folder / "Thumbs.db").read_bytes(), folder
        listed = os.listdir(mp / "VG_100K")
        assert len(listed) == len(set(listed)), listed


def test_sizes_modes_and_stable_inodes(real_mount: Path, real_dataset: Path,
                                       tmp_path: Path) -> None:
    """st_size and st_blocks are exact, modes 0444/0555, and inode numbers repeat on a second
    mount of the same dataset, which runs at the same time as the first."""
    files = [p for p in real_mount.rglob("*") if p.is_file()]
    assert len(files) > 400
    for p in files:
        st = p.stat()
        assert st.st_size == len(p.read_bytes())
        assert st.st_blocks == (st.st_size + 511) // 512
        assert st.st_mode & 0o7777 == 0o444
        assert st.st_blksize >= 128 * 1024
    assert (real_mount / "images" / "1").stat().st_mode & 0o7777 == 0o555
    inodes = {p.relative_to(real_mount): p.stat().st_ino for p in files}
    with mounted(real_dataset, tmp_path / "second") as second:
        assert {p: (second / p).stat().st_ino for p in inodes} == inodes
    # One inode per file, but a JPEG's: images/<id>/image.jpg is VG_100K/<id>.jpg (and
    # VG_100K_2/<id>.jpg for the second part).
    names: dict[int, set[str]] = {}
    for p, ino in inodes.items():
        names.setdefault(ino, set()).add(str(p))
    shared = sorted(sorted(group) for group in names.values() if len(group) > 1)
    expected = sorted(sorted({f"images/{i}/image.jpg", f"VG_100K/{i}.jpg", *(
        [rel] if rel.startswith("VG_100K_2/") else [])}) for i, rel in JPEGS.items())
    assert shared == expected


def test_real_tools(real_mount: Path, tmp_path: Path, sources: dict) -> None:
    """ls, cat, find, jq, du, tar, cp -r and sha256sum see what the sources hold."""
    run = lambda cmd: subprocess.run(cmd, shell=True, check=True, capture_output=True,  # noqa: E731
                                     text=True, cwd=real_mount).stdout
    assert run("ls images | wc -l").strip() == "60"
    assert json.loads(run("cat images/1/objects.json")) == sources["objects.json"][1]
    assert int(run("find . -type f | wc -l")) == len(
        [p for p in real_mount.rglob("*") if p.is_file()])
    assert run("jq -r '.objects | length' images/1/objects.json").strip() == str(
        len(sources["objects.json"][1]["objects"]))
    du = int(run("du -s --block-size=1 images/1").split()[0])
    assert du >= sum(p.stat().st_size for p in (real_mount / "images/1").iterdir())
    # tar of one image directory: every member equals the source.
    run(f"tar -cf {tmp_path}/one.tar -C images 2")
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert members["2/image.jpg"] == (RELEASE / "VG_100K/2.jpg").read_bytes()
    assert json.loads(members["2/graph.json"]) == sources["scene_graphs.json"][2]
    assert len(members) == 8
    run(f"cp -r images/4 {tmp_path}/copy")
    assert (tmp_path / "copy/image.jpg").read_bytes() == (RELEASE / "VG_100K/4.jpg").read_bytes()
    digest = run("sha256sum images/5/image.jpg").split()[0]
    assert digest == hashlib.sha256((RELEASE / "VG_100K/5.jpg").read_bytes()).hexdigest()


def test_mmap_and_pillow(real_mount: Path, sources: dict) -> None:
    from PIL import Image

    with open(real_mount / "images/3/regions.json", "rb") as f, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert json.loads(m[:]) == sources["region_descriptions.json"][3]
    with Image.open(real_mount / "images/1/image.jpg") as im:
        assert im.size == (800, 600)
        im.load()


def _parsed(parse: Callable[[], object]) -> object:
    """What the driver makes of a graph: its objects' and attributes' ids, or its error."""
    try:
        graph = parse()
    except KeyError as e:
        return ("KeyError", e.args)
    return ([o.id for o in graph.objects], [a.id for a in graph.attributes])


def test_official_driver(real_mount: Path, synthetic_mount: Path, driver_files: dict) -> None:
    """visual_genome.local works unchanged with the mount as its data folder: with by-id/ it
    does what it does with the files its own preprocessing writes (on the real excerpts that
    includes failing where attributes.json leaves out an empty `attributes` list, which the
    driver's parser expects). The excerpts' synsets.json is cut short, so the driver's synset
    step runs on the synthetic sample."""
    from visual_genome import local

    images = local.get_all_image_data(str(real_mount))
    assert len(images) == 60 and images[0].id == 1
    by_image = {im.id: im for im in images}
    for image_id in (1, 46, 60):
        data = (real_mount / f"by-id/{image_id}.json").read_bytes()
        image = by_image[image_id]
        # parse_graph_local changes the dicts it is given: each parse gets a fresh copy.
        assert _parsed(lambda: local.parse_graph_local(json.loads(data), image)) == _parsed(  # noqa: B023
            lambda: local.parse_graph_local(json.loads(driver_files[image_id]), image))  # noqa: B023
        scene_graph = {k: v for k, v in json.loads(data).items() if k != "attributes"}
        graph = local.parse_graph_local(scene_graph, image)
        assert len(graph.objects) == len(scene_graph["objects"])
    # The first image whose attributes.json objects all carry `attributes`, which the driver's
    # parser needs once its preprocessing has added them to the scene graph.
    first = min(e["image_id"] for e in json.loads(
        (synthetic_mount / "attributes.json").read_bytes())
        if all("attributes" in o for o in e["attributes"]))
    graph = local.get_scene_graph(first, images=str(synthetic_mount),
                                  image_data_dir=f"{synthetic_mount}/by-id/",
                                  synset_file=str(synthetic_mount / "synsets.json"))
    assert graph.image.id == first
    assert len(graph.objects) == len(json.loads(
        (synthetic_mount / f"images/{first}/graph.json").read_bytes())["objects"])
    assert len(graph.attributes) == len(json.loads(
        (synthetic_mount / f"images/{first}/attributes.json").read_bytes())["attributes"])


@pytest.mark.parametrize("target", ["images/1/objects.json", "images/1", ".", "by-id/1.json",
                                    "README.txt"])
def test_every_mutation_is_erofs(real_mount: Path, target: str) -> None:
    p = real_mount / target
    before = p.read_bytes() if p.is_file() else None
    inside = p if p.is_dir() else p.parent  # new names go inside the mount, never beside it
    attempts = {
        "open O_WRONLY": lambda: os.open(p, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(p, os.O_RDWR),
        "open O_CREAT": lambda: os.open(inside / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        "open O_TRUNC": lambda: os.open(p, os.O_RDONLY | os.O_TRUNC),
        "truncate": lambda: os.truncate(p, 0),
        "unlink/rmdir": lambda: os.unlink(p) if p.is_file() else os.rmdir(p),
        "rename": lambda: os.rename(p, inside / "renamed"),
        "mkdir": lambda: os.mkdir(inside / "d"),
        "symlink": lambda: os.symlink("x", inside / "link"),
        "link": lambda: os.link(p, inside / "hard"),
        "mknod": lambda: os.mknod(inside / "node"),
        "chmod": lambda: os.chmod(p, 0o777),
        "chown": lambda: os.chown(p, 1, 1),
        "utime": lambda: os.utime(p, (0, 0)),
        "setxattr": lambda: os.setxattr(p, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(p, "user.x"),
    }
    # The root is also a mount point: the kernel answers EBUSY or EXDEV before asking us.
    allowed = {errno.EROFS, errno.EBUSY, errno.EXDEV} if target == "." else {errno.EROFS}
    for what, attempt in attempts.items():
        if p.is_dir() and what in ("open O_WRONLY", "open O_RDWR", "open O_TRUNC", "link",
                                      "truncate"):
            allowed_here = allowed | {errno.EISDIR, errno.EPERM}
        else:
            allowed_here = allowed
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno in allowed_here, (what, exc.value)
    if before is not None:
        assert p.read_bytes() == before


@pytest.mark.parametrize("name", ["007", "-1", "1.0", "../x", "+1", " 1", "1 ", "x" * 10_000,
                                  "01", "99999999999999999999999"])
def test_non_canonical_names_do_not_exist(real_mount: Path, name: str) -> None:
    with pytest.raises(OSError) as exc:
        os.stat(real_mount / "images" / name)
    assert exc.value.errno in (errno.ENOENT, errno.ENAMETOOLONG)
    assert (real_mount / "images/1/meta.json").stat().st_size > 0  # still up


def test_negative_lookups_are_cached(real_mount: Path) -> None:
    missing = real_mount / "images" / "424242"
    assert not missing.exists()

    def look() -> None:
        for _ in range(20):
            assert not missing.exists()

    assert lookups_for(real_mount, look) == 0


def test_held_indexes_answer_without_lmdb(real_dataset: Path) -> None:
    """The mount holds the indexes every request reads in memory: afterwards lookups and
    listings give the same answers with LMDB's environment never read again."""
    with open_dataset(real_dataset) as ds:
        before = [(i, ds.image(i), ds.jpeg_index(i), ds.in_part2(i)) for i in ds.image_ids()]
        listings = [list(ds.image_ids(db=db)) for db in ("images", "jpegs", "part2")]
        assert not ds.held
        ds.hold(threading.Event())
        assert ds.held
        ds._txn = None  # any LMDB read from here on would fail
        assert [(i, ds.image(i), ds.jpeg_index(i), ds.in_part2(i))
                for i in ds.image_ids()] == before
        assert [list(ds.image_ids(db=db)) for db in ("images", "jpegs", "part2")] == listings
        assert bytes(ds.file_range("objects.json", 0, 100)) == (
            RELEASE / "objects.json").read_bytes()[:100]


def test_stats(real_mount: Path) -> None:
    (real_mount / "images/2/image.jpg").read_bytes()
    out = vgfs("stats", str(real_mount)).stdout
    for word in ("read", "cache", "backend", "errors"):
        assert word in out
    stats = json.loads(vgfs("stats", str(real_mount), "--json").stdout)
    assert stats["backend"]["jpeg_bytes"] >= (RELEASE / "VG_100K/2.jpg").stat().st_size
    # Read from a file that lookup finds and no listing shows: invisible to ls and find.
    assert ".vgfs-stats" not in os.listdir(real_mount)
    assert "ops" in json.loads((real_mount / ".vgfs-stats").read_bytes())
    # No extended attributes at all, so the kernel stops asking for them (ls -l asks for
    # three on every file).
    with pytest.raises(OSError) as exc:
        os.getxattr(real_mount / "images/2/meta.json", "security.selinux")
    assert exc.value.errno == errno.EOPNOTSUPP


def _digest_tree(root: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_eight_concurrent_readers_get_identical_bytes(real_mount: Path) -> None:
    with ProcessPoolExecutor(8) as pool:
        results = list(pool.map(_digest_tree, [str(real_mount)] * 8))
    assert all(r == results[0] for r in results)
    assert len(results[0]) > 400


def test_pretty_and_owner_options(real_dataset: Path, tmp_path: Path, sources: dict,
                                  driver_files: dict) -> None:
    """-o pretty indents the per-image files, with exact sizes: st_size given before any read
    is what `wc -c` then counts, and the bytes parse whole to the release's entry. The release's
    own files stay byte for byte; uid= and gid= own everything."""
    with mounted(real_dataset, tmp_path / "mp", "pretty,uid=1234,gid=4321") as mp:
        files = {f: KIND_SOURCES.get(f.name)  # None: image.jpg
                 for i in (1, 2, 46, 60) for f in (mp / "images" / str(i)).iterdir()}
        files.update((mp / f"by-id/{i}.json", "by-id") for i in (1, 46))
        sizes = {str(f): f.stat().st_size for f in files}  # before the kernel has read any
        out = subprocess.run(["wc", "-c", *sizes], check=True, capture_output=True,
                             text=True).stdout.splitlines()[:-1]  # the last line: the total
        assert {path: int(n) for n, path in (line.split() for line in out)} == sizes
        for f, src in files.items():
            data = f.read_bytes()
            assert len(data) == sizes[str(f)], f
            if src is None:  # image.jpg
                continue
            assert data.startswith(b"{\n  ") and data.endswith(b"}\n"), f
            image_id = int(f.stem if src == "by-id" else f.parent.name)
            want = json.loads(driver_files[image_id]) if src == "by-id" else sources[src][
                image_id]
            assert json.loads(data) == want, f
        st = (mp / "images/1/graph.json").stat()
        assert (st.st_uid, st.st_gid) == (1234, 4321)
        assert (mp / "objects.json").read_bytes() == (RELEASE / "objects.json").read_bytes()


@pytest.mark.parametrize("option, kb", [("", 4096), ("readahead_kb=512", 512)])
def test_readahead_window(real_dataset: Path, tmp_path: Path, option: str, kb: int) -> None:
    """As root, the mount's own readahead window (its bdi in sysfs) is set once it answers,
    before it reports ready: the kernel's 128 KiB would cost a request per 128 KiB of a whole
    file."""
    assert os.geteuid() == 0, "the suite runs as root (CI does)"
    with mounted(real_dataset, tmp_path / "mp", *filter(None, [option])) as mp:
        device = f"{os.major(mp.stat().st_dev)}:{os.minor(mp.stat().st_dev)}"
        assert Path(f"/sys/class/bdi/{device}/read_ahead_kb").read_text() == f"{kb}\n"
        assert (mp / "objects.json").read_bytes() == (RELEASE / "objects.json").read_bytes()


def test_sigterm_unmounts_and_umount_cleans_up_after_sigkill(real_dataset: Path,
                                                             tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-m", "vgfs", "mount", "-f", str(real_dataset),
                                 str(mp)], stderr=subprocess.PIPE)
        reader = None
        try:
            deadline = time.monotonic() + 30
            while not (mp / "images").exists():
                assert time.monotonic() < deadline and proc.poll() is None, "mount never came up"
                time.sleep(0.05)
            # A reader in flight: it must finish or get an error, never hang.
            reader = subprocess.Popen(
                [sys.executable, "-c", "import pathlib, sys\n"
                 "while True:\n"
                 "    for p in pathlib.Path(sys.argv[1]).glob('images/*/*.json'):\n"
                 "        p.read_bytes()", str(mp)], stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            proc.send_signal(sig)
            proc.wait(timeout=30)
            if sig == signal.SIGTERM:
                assert reader.wait(timeout=30) != 0  # it got an error, and did not hang
                assert mounted_fs(mp) is None
            else:
                reader.kill()
                reader.wait(timeout=30)
                assert mounted_fs(mp) is not None  # a dead mount: ENOTCONN
                with pytest.raises(OSError) as exc:
                    os.listdir(mp)
                assert exc.value.errno == errno.ENOTCONN
                vgfs("umount", str(mp))
                assert mounted_fs(mp) is None and os.listdir(mp) == []
        finally:
            for p in (reader, proc):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            force_unmount(mp)


def test_mounting_over_a_dead_mount_says_how_to_clear_it(real_dataset: Path,
                                                        tmp_path: Path) -> None:
    """A daemon killed with SIGKILL leaves a dead mount, whose root the kernel may still stat
    from its cache: mounting there, or below it, names the dead mount and how to clear it."""
    with mounted(real_dataset, tmp_path / "mp") as mp:
        pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for("the daemon to die", lambda: gone(pid))
        for target in (mp, mp / "images"):
            r = vgfs("mount", str(real_dataset), str(target), check=False)
            assert (r.returncode, r.stderr) == (1, f"vgfs: error: {mp}: a dead FUSE mount is"
                                                   " there (its process is gone); run `vgfs"
                                                   f" umount {mp}` first\n"), target


def test_umount_refuses_what_is_not_vgfs(real_dataset: Path, tmp_path: Path) -> None:
    """Another FUSE filesystem (squashfuse of the dataset's own image) is not vgfs's to
    unmount: refused in one sentence, and it stays mounted."""
    mp = tmp_path / "squashfuse"
    mp.mkdir()
    subprocess.run(["squashfuse", str(real_dataset / "images.sqfs"), str(mp)], check=True)
    try:
        assert mounted_fs(mp) == "fuse.squashfuse"
        r = vgfs("umount", str(mp), check=False)
        assert r.returncode == 1
        assert r.stderr == f"vgfs: error: {mp}: fuse.squashfuse is mounted there, not vgfs\n"
        assert mounted_fs(mp) == "fuse.squashfuse"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)
        assert mounted_fs(mp) is None


def test_mount_failures_name_the_reason(real_dataset: Path, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    r = vgfs("mount", str(tmp_path / "nope"), str(mp), check=False)
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr
    (mp / "file").write_text("x")
    r = vgfs("mount", str(real_dataset), str(mp), check=False)
    assert r.returncode != 0 and "not empty" in r.stderr
    (mp / "file").unlink()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"format": 99}')
    r = vgfs("mount", str(bad), str(mp), check=False)
    assert r.returncode != 0 and "99" in r.stderr and f"format {FORMAT}" in r.stderr
    with mounted(real_dataset, mp):
        r = vgfs("mount", str(real_dataset), str(mp), check=False)
        assert r.returncode != 0 and "already mounted" in r.stderr
    r = vgfs("mount", str(real_dataset), str(mp), "-o", "bogus", check=False)
    assert r.returncode != 0 and "bogus" in r.stderr
    assert mounted_fs(mp) is None


@pytest.mark.parametrize("key", ["tool", "built", "sources", "kinds", "annotations", "images",
                                 "counts"])
def test_manifest_without_a_key_is_named(real_dataset: Path, tmp_path: Path, key: str) -> None:
    """A manifest that lacks a key the code reads: `vgfs mount` and `vgfs info` name the file
    and the key in one sentence, and say to rebuild; no traceback."""
    dataset = Path(shutil.copytree(real_dataset, tmp_path / "dataset"))
    manifest = json.loads((dataset / "manifest.json").read_bytes())
    del manifest[key]
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    mp = tmp_path / "mp"
    mp.mkdir()
    try:
        for args in (["info", str(dataset)], ["mount", str(dataset), str(mp)]):
            r = vgfs(*args, check=False)
            assert (r.returncode, r.stderr) == (1, f"vgfs: error: {dataset}/manifest.json: no"
                                                   f" `{key}`, so it is incomplete or damaged;"
                                                   " rebuild the dataset with `vgfs build`\n")
        assert mounted_fs(mp) is None
    finally:
        force_unmount(mp)


def _rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields


def test_listing_resumes_and_memory_stays_bounded(synthetic_dataset: Path,
                                                  tmp_path: Path) -> None:
    """images/ lists every image once, in id order, across many readdir calls; and reading every
    file keeps the daemon's private memory under cache_size plus a fixed overhead. (The LMDB
    map's pages are page cache, shared and reclaimable: RssFile, reported but not bounded.)"""
    cache_mib, overhead_mib = 1, 120
    # pretty: every JSON file is generated and goes through the LRU.
    with mounted(synthetic_dataset, tmp_path / "mp", f"cache_size={cache_mib}M,pretty") as mp:
        ids = [e["image_id"] for e in json.loads((mp / "image_data.json").read_bytes())]
        listed = os.listdir(mp / "images")
        assert listed == [str(i) for i in sorted(ids)]
        pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
        peak = _rss_kib(pid)
        total = 0
        for p in sorted(mp.rglob("*")):
            if p.is_file():
                total += len(p.read_bytes())
                sample = _rss_kib(pid)
                peak = {k: max(v, sample[k]) for k, v in peak.items()}
        assert total > 10 * cache_mib << 20  # far more than the cache went through it
        stats = json.loads(vgfs("stats", str(mp), "--json").stdout)
        assert stats["cache"]["bytes"] <= cache_mib << 20
        assert stats["cache"]["evictions"] > 0
        assert peak["RssAnon"] < (cache_mib + overhead_mib) << 10, peak


@pytest.mark.parametrize("launcher", ["python -m vgfs", "the vgfs script"])
def test_demo(tmp_path: Path, launcher: str) -> None:
    """The README's first command: sample, build, mount and a tour that ends mounted, with an
    unmount command that works as printed, even when no vgfs is on PATH."""
    mp = tmp_path / "demo"
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "vgfs").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    run = [sys.executable, "-m", "vgfs"] if launcher.startswith("python") else [str(BIN / "vgfs")]
    try:
        out = subprocess.run([*run, "demo", str(mp), "--images", "20"], env=env, check=True,
                             capture_output=True, text=True, timeout=300).stdout
        assert "graph.json" in out
        assert len(os.listdir(mp / "images")) == 20
        umount = out.splitlines()[-2].strip()  # then: "The demo's release and dataset ..."
        assert umount == f"{' '.join(run)} umount {mp}"
        subprocess.run(umount, shell=True, env=env, check=True, timeout=60)
        assert mounted_fs(mp) is None
    finally:
        force_unmount(mp)
