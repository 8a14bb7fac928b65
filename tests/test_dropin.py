"""Drop-in: the mount is the release folder, byte for byte, plus its views (DESIGN §2.3, §2.4).

A site's release folder holds more than the official files: derived files beside them, split
files in a folder, binary files, and whatever sat in the JPEG folders. Every program that read
that folder must read the mount unchanged. One build and mount per variant, shared by the
module: the site's folder as it is (the real excerpts plus such files), the same with every
JSON file and both JPEG folders zipped, the same with its JPEGs in the site's own SquashFS
image, and a small synthetic release on which the official driver runs to the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from visual_genome import local

from tests import programs
from tests.conftest import RELEASE, mounted, vgfs, writable_copy

JPEG_DIRS = ("VG_100K", "VG_100K_2")
FRAME = 64 << 10  # input bytes of one stored frame (DESIGN §2.2): reads across them matter
# What a site keeps beside the official files.
SGG_DICTS = {"label_to_idx": {"man": 1, "tree": 2, "clock": 3},
             "idx_to_label": {"1": "man", "2": "tree", "3": "clock"},
             "predicate_to_idx": {"on": 1, "has": 2}, "idx_to_predicate": {"1": "on", "2": "has"},
             "attribute_to_idx": {"green": 1}, "idx_to_attribute": {"1": "green"},
             "object_count": {"man": 12, "tree": 40, "clock": 3}}
H5_SIZE = 5 * FRAME + 12345  # incompressible, over several frames, ending inside one
THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)  # an OLE compound file's header
SPLIT_IDS = (1, 2, 4, 5)  # the excerpts' images that have a JPEG


def is_mount_made(name: str) -> bool:
    """A top-level name that the mount adds to the release folder (DESIGN §2.3)."""
    return name in ("README.txt", "images", "by-id", ".vgfs-stats") or name.startswith("by-")


def make_site_release(dst: Path) -> Path:
    """A writable copy of the real excerpts, with the files that sites keep there."""
    writable_copy(RELEASE, dst)
    (dst / "VG-SGG-dicts.json").write_text(json.dumps(SGG_DICTS))
    (dst / "splits").mkdir()
    (dst / "splits" / "train.txt").write_text("".join(f"{i}\n" for i in SPLIT_IDS))
    rng = random.Random(7)
    (dst / "VG-SGG-with-attri.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + rng.randbytes(H5_SIZE - 8))
    shutil.copyfile(dst / "VG_100K" / "2.jpg", dst / "VG_100K" / "n166008.jpg")  # GQA's extra
    (dst / "VG_100K" / "Thumbs.db").write_bytes(THUMBS_DB)
    return dst


def release_files(release: Path) -> list[str]:
    """Every file of the release folder outside its JPEG folders, by relative path."""
    out = []
    for root, dirs, files in os.walk(release):
        if Path(root) == release:
            dirs[:] = [d for d in dirs if d not in JPEG_DIRS]
        out += [(Path(root) / f).relative_to(release).as_posix() for f in files]
    return sorted(out)


def jpeg_folder_files(release: Path) -> list[str]:
    """Every file of the release's JPEG folders, JPEGs and strays."""
    return sorted(f"{d}/{n}" for d in JPEG_DIRS if (release / d).is_dir()
                  for n in os.listdir(release / d))


def merged_names(release: Path) -> list[str]:
    """The second part's files as the merged VG_100K/ of the mount shows them too."""
    return sorted(f"VG_100K/{n}" for n in os.listdir(release / "VG_100K_2"))


def release_path(release: Path, path: str) -> Path:
    """The release file that a path of the mount's release part shows."""
    if (release / path).is_file():
        return release / path
    folder, _, name = path.partition("/")
    assert folder == "VG_100K" and (release / "VG_100K_2" / name).is_file(), path
    return release / "VG_100K_2" / name


def release_jpeg(release: Path, image_id: int) -> Path | None:
    for d in JPEG_DIRS:
        if (release / d / f"{image_id}.jpg").is_file():
            return release / d / f"{image_id}.jpg"
    return None


def sha256sum(root: Path, paths: list[str]) -> dict[str, str]:
    """The real `sha256sum` over paths relative to `root`: path -> digest."""
    proc = subprocess.run(["sha256sum", "--", *paths], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        digest, _, path = line.partition("  ")
        out[path] = digest
    assert sorted(out) == sorted(paths)
    return out


def tree_of(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (symlinks not followed): a folder, a link and its target, or a
    file with its size and sha256. README.txt without the line that says when it was built."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                data = p.read_bytes()
                assert len(data) == st.st_size, rel
                if rel == "README.txt":
                    data = re.sub(rb"\nBuilt by [^\n]*\n", b"\n", data)
                out[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return out


def differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


class Built(NamedTuple):
    dataset: Path
    stderr: str


def build(release: Path, out: Path, *args: str) -> Built:
    """`vgfs build`, the real command line."""
    proc = vgfs("build", str(release), "-o", str(out), *args, timeout=300)
    return Built(out, proc.stderr)


@contextmanager
def build_and_mount(release: Path, mountpoint: Path, *args: str) -> Iterator[Path]:
    """`vgfs build` into a dataset beside `release`, mounted at `mountpoint` until the end."""
    with mounted(build(release, release.parent / "dataset", *args).dataset, mountpoint) as mp:
        yield mp


# --- the site's release folder, as it is ------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_site_release(tmp_path_factory.mktemp("site") / "release")


@pytest.fixture(scope="module")
def site_built(site: Path) -> Built:
    return build(site, site.parent / "dataset")


@pytest.fixture(scope="module")
def site_mount(tmp_path_factory: pytest.TempPathFactory, site_built: Built) -> Iterator[Path]:
    with mounted(site_built.dataset, tmp_path_factory.mktemp("mnt") / "site") as mp:
        yield mp


@pytest.fixture(scope="module")
def site_tree(site_mount: Path) -> dict[str, tuple]:
    return tree_of(site_mount)


def test_build_carries_and_reports_the_site_files(site: Path, site_built: Built) -> None:
    """Every file is kept with its own sha256; the strays are reported and counted, and stop
    nothing."""
    manifest = json.loads((site_built.dataset / "manifest.json").read_bytes())
    files = release_files(site)
    assert {"VG-SGG-dicts.json", "VG-SGG-with-attri.h5", "splits/train.txt"} <= set(files)
    assert sorted(manifest["sources"]) == files
    for path in files:
        data = (site / path).read_bytes()
        assert manifest["sources"][path]["size"] == len(data), path
        assert manifest["sources"][path]["sha256"] == hashlib.sha256(data).hexdigest(), path
    assert manifest["counts"]["other_files"] == 2
    assert manifest["counts"]["jpegs"] == len(SPLIT_IDS)
    assert re.search(r"\b2 other files\b", site_built.stderr), site_built.stderr
    assert "not kept" not in site_built.stderr


def test_listings_are_the_release_folder_plus_views(site: Path, site_mount: Path) -> None:
    """The root holds the release's names plus the mount's own; VG_100K/ is the merged folder
    (both parts and the strays); VG_100K_2/ the second part; image.jpg is VG_100K/<id>.jpg."""
    root = os.listdir(site_mount)
    assert len(root) == len(set(root))
    assert {n for n in root if not is_mount_made(n)} == set(os.listdir(site))
    assert sorted(os.listdir(site_mount / "splits")) == sorted(os.listdir(site / "splits"))
    merged = os.listdir(site_mount / "VG_100K")
    assert len(merged) == len(set(merged))
    assert set(merged) == set(os.listdir(site / "VG_100K")) | set(os.listdir(site / "VG_100K_2"))
    assert sorted(os.listdir(site_mount / "VG_100K_2")) == sorted(os.listdir(site / "VG_100K_2"))
    for path in release_files(site) + jpeg_folder_files(site) + merged_names(site):
        st = os.stat(site_mount / path)
        assert st.st_size == release_path(site, path).stat().st_size, path
        assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o444, path
    for image_id in SPLIT_IDS:
        assert (os.stat(site_mount / f"images/{image_id}/image.jpg").st_ino
                == os.stat(site_mount / f"VG_100K/{image_id}.jpg").st_ino)
    assert (os.stat(site_mount / "VG_100K_2/1.jpg").st_ino
            == os.stat(site_mount / "VG_100K/1.jpg").st_ino)


def test_sha256sum_of_every_release_file(site: Path, site_mount: Path) -> None:
    """sha256sum on the mount gives the release's digests: every file outside the JPEG folders
    (the site's own files too) and every file of the JPEG folders, also in the merged folder."""
    paths = release_files(site) + jpeg_folder_files(site)
    assert sha256sum(site_mount, paths) == sha256sum(site, paths)
    second = [f"VG_100K_2/{n}" for n in os.listdir(site / "VG_100K_2")]
    assert (list(sha256sum(site_mount, merged_names(site)).values())
            == list(sha256sum(site, sorted(second)).values()))


def test_random_reads_equal_the_release(site: Path, site_mount: Path) -> None:
    """pread at random offsets and sizes (fixed seed), across frame boundaries and past the end,
    returns the release file's bytes."""
    rng = random.Random(20240611)
    sizes = (1, 7, 100, 4096, 4097, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME + 5)
    reads = 0
    for path in release_files(site) + jpeg_folder_files(site):
        data = (site / path).read_bytes()
        spots = [(rng.randrange(len(data) + 64), rng.choice(sizes)) for _ in range(20)]
        spots += [(k * FRAME - 3, 7) for k in range(1, len(data) // FRAME + 1)]
        spots += [(len(data) - 1, 10), (len(data), 10), (0, len(data) + 1)]
        fd = os.open(site_mount / path, os.O_RDONLY)
        try:
            for offset, size in spots:
                assert os.pread(fd, size, offset) == data[offset:offset + size], (path, offset)
                reads += 1
        finally:
            os.close(fd)
    assert reads > 500


def test_find_and_tar_copy_the_release_folder(site: Path, site_mount: Path,
                                              tmp_path: Path) -> None:
    """`find -type f` walks the mount without an error; tar of its release part, extracted,
    is the release folder's files (the merged VG_100K/ holding the second part too)."""
    proc = subprocess.run(["find", str(site_mount), "-type", "f"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    found = {Path(line).relative_to(site_mount).as_posix() for line in proc.stdout.splitlines()}
    part = sorted(p for p in found if not is_mount_made(p.split("/")[0]))
    assert part == sorted(release_files(site) + jpeg_folder_files(site) + merged_names(site))
    assert {f"images/{i}/image.jpg" for i in SPLIT_IDS} <= found
    listing = tmp_path / "files.txt"
    listing.write_text("".join(p + "\n" for p in part))
    archive = tmp_path / "release.tar"
    tar = subprocess.run(["tar", "-C", str(site_mount), "-cf", str(archive), "-T", str(listing)],
                         capture_output=True, text=True, timeout=120)
    assert tar.returncode == 0 and tar.stderr == "", tar.stderr  # e.g. "file shrank"
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xf", str(archive)], check=True, timeout=120)
    extracted = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert extracted == part
    for path in part:
        assert (out / path).read_bytes() == release_path(site, path).read_bytes(), path


# --- the official driver --------------------------------------------------------------------

def describe(x: Any) -> Any:
    """A driver result as plain data: each model object by its class, its str() where the
    class defines one, and its fields."""
    if isinstance(x, list | tuple):
        return [describe(v) for v in x]
    if isinstance(x, dict):
        return {k: describe(v) for k, v in x.items()}
    if hasattr(x, "__dict__"):
        shown = str(x) if type(x).__str__ is not object.__str__ else None
        return (type(x).__name__, shown, describe(vars(x)))
    return x


def prepare_like_the_driver(release: Path, dst: Path) -> Path:
    """A copy of the release's JSON files, prepared by the driver's own preprocessing, as its
    README says: add_attrs_to_scene_graphs, then save_scene_graphs_by_id."""
    dst.mkdir()
    for path in release.glob("*.json"):
        shutil.copyfile(path, dst / path.name)
    local.add_attrs_to_scene_graphs(data_dir=f"{dst}/")
    local.save_scene_graphs_by_id(data_dir=f"{dst}/", image_data_dir=f"{dst}/by-id/")
    return dst


def scene_graphs_one_by_one(root: Path) -> dict[int, tuple]:
    """get_scene_graph for every image of image_data.json: its graph, or how it failed."""
    images = {im.id: im for im in local.get_all_image_data(str(root))}
    out = {}
    for image_id in images:
        try:
            graph = local.get_scene_graph(image_id, images, f"{root}/by-id/",
                                          f"{root}/synsets.json")
        except Exception as e:  # noqa: BLE001 - the driver's own failure is what is compared
            out[image_id] = ("raises", type(e).__name__, str(e))
        else:
            out[image_id] = ("graph", describe(graph))
    return out


def scene_graphs_at_once(root: Path) -> tuple:
    """get_scene_graphs over the folder: the graphs in image id order (it lists by-id/ in the
    folder's own order), or how it failed."""
    try:
        graphs = local.get_scene_graphs(data_dir=f"{root}/", image_data_dir=f"{root}/by-id/")
    except Exception as e:  # noqa: BLE001 - the driver's own failure is what is compared
        return ("raises", type(e).__name__, str(e))
    return ("graphs", describe(sorted(graphs, key=lambda g: g.image.id)))


@pytest.fixture(scope="module")
def site_prepared(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Path:
    return prepare_like_the_driver(site, tmp_path_factory.mktemp("prepared") / "site")


@pytest.fixture(scope="module")
def sample_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release whose attributes.json gives every object an `attributes` list (an
    empty one where the sample leaves the key out, as the real files do): the driver's
    parse_graph_local reads that key unguarded, and so then runs to the end."""
    from vgfs.sample import write_sample

    rel = tmp_path_factory.mktemp("sample") / "release"
    write_sample(rel, images=30, seed=5, jpeg="small", show_progress=False)
    path = rel / "attributes.json"
    entries = json.loads(path.read_bytes())
    missing = 0
    for entry in entries:
        for obj in entry["attributes"]:
            missing += "attributes" not in obj
            obj.setdefault("attributes", [])
    assert missing  # the sample has the real files' trap; the copy here fills it
    path.write_text(json.dumps(entries))
    return rel


@pytest.fixture(scope="module")
def sample_mount(tmp_path_factory: pytest.TempPathFactory, sample_release: Path) -> Iterator[Path]:
    with build_and_mount(sample_release, tmp_path_factory.mktemp("mnt") / "sample") as mp:
        yield mp


@pytest.fixture(scope="module")
def sample_prepared(tmp_path_factory: pytest.TempPathFactory, sample_release: Path) -> Path:
    return prepare_like_the_driver(sample_release, tmp_path_factory.mktemp("prepared") / "sample")


class DriverCase(NamedTuple):
    mount: Path
    prepared: Path
    outcome: str  # what the driver itself does on this release, per image


@pytest.fixture(params=["site", "sample"])
def driver_case(request: pytest.FixtureRequest) -> DriverCase:
    # On the real excerpts the driver itself fails on every image: some objects of
    # attributes.json have no `attributes` key. What counts is that it fails alike.
    outcome = "raises" if request.param == "site" else "graph"
    return DriverCase(request.getfixturevalue(f"{request.param}_mount"),
                      request.getfixturevalue(f"{request.param}_prepared"), outcome)


def test_driver_reads_the_mount_as_the_release(site: Path, site_mount: Path) -> None:
    """get_all_image_data, get_all_region_descriptions and get_all_qas give on the mount what
    they give on the release folder."""
    for call in (local.get_all_image_data, local.get_all_region_descriptions,
                 local.get_all_qas):
        on_mount = describe(call(str(site_mount)))
        assert len(on_mount) == 60, call.__name__
        assert on_mount == describe(call(str(site))), call.__name__


def test_driver_get_scene_graph_as_on_a_folder_it_prepared(driver_case: DriverCase) -> None:
    """get_scene_graph of every image: the same graph, or the same exception and message, as
    on a folder the driver prepared itself."""
    on_mount = scene_graphs_one_by_one(driver_case.mount)
    on_prepared = scene_graphs_one_by_one(driver_case.prepared)
    assert sorted(on_mount) == sorted(on_prepared)
    assert {o[0] for o in on_prepared.values()} == {driver_case.outcome}
    assert [i for i in on_prepared if on_mount[i] != on_prepared[i]] == []


def test_driver_get_scene_graphs_as_on_a_folder_it_prepared(driver_case: DriverCase) -> None:
    on_mount = scene_graphs_at_once(driver_case.mount)
    on_prepared = scene_graphs_at_once(driver_case.prepared)
    assert on_prepared[0] == ("graphs" if driver_case.outcome == "graph" else "raises")
    assert on_mount == on_prepared


def test_by_id_is_what_the_driver_wrote(driver_case: DriverCase) -> None:
    """by-id/<id>.json is byte for byte the file that save_scene_graphs_by_id wrote, after
    add_attrs_to_scene_graphs, for every image."""
    names = sorted(os.listdir(driver_case.prepared / "by-id"))
    assert sorted(os.listdir(driver_case.mount / "by-id")) == names
    assert names
    for name in names:
        ours = driver_case.mount / "by-id" / name
        data = ours.read_bytes()
        assert data == (driver_case.prepared / "by-id" / name).read_bytes(), name
        assert ours.stat().st_size == len(data), name


# --- the field's programs -------------------------------------------------------------------

def test_scene_graph_benchmark_and_neural_motifs(site: Path, site_mount: Path) -> None:
    """One merged VG_100K/ for every image of image_data.json that has a JPEG, in release
    order; the site's VG-SGG files beside it."""
    img_dir = str(site_mount / "VG_100K")
    fns, img_info = programs.sgb_image_filenames(img_dir, str(site_mount / "image_data.json"))
    entries = json.loads((site / "image_data.json").read_bytes())
    with_jpeg = [e for e in entries if release_jpeg(site, e["image_id"]) is not None]
    assert [e["image_id"] for e in with_jpeg] == list(SPLIT_IDS)
    assert img_info == with_jpeg
    assert fns == [os.path.join(img_dir, f"{e['image_id']}.jpg") for e in with_jpeg]
    for fn, e in zip(fns, with_jpeg, strict=True):
        assert Path(fn).read_bytes() == release_jpeg(site, e["image_id"]).read_bytes(), fn
    info = programs.sgb_load_info(str(site_mount / "VG-SGG-dicts.json"))
    assert info == programs.sgb_load_info(str(site / "VG-SGG-dicts.json"))
    assert info[0] == ["__background__", "man", "tree", "clock"]
    roidb = "VG-SGG-with-attri.h5"
    assert (site_mount / roidb).read_bytes() == (site / roidb).read_bytes()


def test_llava_sharegpt4v_and_the_hf_script(site: Path, site_mount: Path,
                                            tmp_path: Path) -> None:
    """vg/VG_100K/<id>.jpg and vg/VG_100K_2/<id>.jpg as the image's url names them: every image
    found on the mount exactly where it is found in the release, with the same bytes."""
    entries = json.loads((site_mount / "image_data.json").read_bytes())
    data = {}
    for name, target in (("mount", site_mount), ("release", site)):
        data[name] = tmp_path / name / "playground" / "data"  # LLaVA's --image_folder
        data[name].mkdir(parents=True)
        (data[name] / "vg").symlink_to(target)
    hf_folders = {name: {d: str(root / d) for d in JPEG_DIRS}
                  for name, root in (("mount", site_mount), ("release", site))}
    found = 0
    for e in entries:
        image_file = programs.llava_image_file(e["url"])
        paths = [(Path(programs.llava_image_path(str(data["mount"]), image_file)),
                  Path(programs.llava_image_path(str(data["release"]), image_file))),
                 (Path(programs.hf_local_image_path(e["url"], hf_folders["mount"])),
                  Path(programs.hf_local_image_path(e["url"], hf_folders["release"])))]
        for on_mount, on_release in paths:
            assert on_mount.is_file() == on_release.is_file(), e
            if on_release.is_file():
                assert on_mount.read_bytes() == on_release.read_bytes(), e
                found += 1
    assert found == 2 * len(SPLIT_IDS)


def test_densecap_preprocessing(site: Path, site_mount: Path) -> None:
    """Whole region_descriptions.json and image_data.json, the site's split file, and
    <image_dir>/<id>.jpg for the split's images."""
    for name in ("region_descriptions.json", "image_data.json"):
        assert programs.load_json(site_mount / name) == programs.load_json(site / name), name
    split = (site_mount / "splits" / "train.txt").read_text()
    assert split == (site / "splits" / "train.txt").read_text()
    split_ids = {int(line) for line in split.split()}
    paths = programs.densecap_image_paths(str(site_mount / "region_descriptions.json"),
                                          split_ids, str(site_mount / "VG_100K"))
    assert sorted(int(Path(p).stem) for p in paths) == sorted(split_ids)
    for p in paths:
        assert Path(p).read_bytes() == release_jpeg(site, int(Path(p).stem)).read_bytes(), p


def test_sg2im_preprocessing(site: Path, site_mount: Path) -> None:
    """Whole objects, attributes, relationships and image_data files, both alias files, and the
    images as <VG_100K or VG_100K_2>/<id>.jpg under the folder that holds both."""
    on_mount = programs.sg2im_inputs(str(site_mount))
    assert on_mount == programs.sg2im_inputs(str(site))
    assert len(on_mount["object_aliases"]) > 1000
    image_id_to_image = {i["image_id"]: i for i in on_mount["images_json"]}
    ids = [i for i in image_id_to_image if release_jpeg(site, i) is not None]
    paths = programs.sg2im_image_paths(image_id_to_image, ids)
    assert len(paths) == len(SPLIT_IDS)
    for rel in paths:
        assert (site_mount / rel).read_bytes() == (site / rel).read_bytes(), rel


# --- the same release, packed otherwise -----------------------------------------------------

def zip_release(site: Path, dst: Path) -> Path:
    """The site's release with every JSON file as NAME.json.zip, and the JPEG folders as
    images.zip (VG_100K/...) and images2.zip (VG_100K_2/...), as they are downloaded."""
    dst.mkdir()
    for path in release_files(site):
        target = dst / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".json"):
            with zipfile.ZipFile(f"{target}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(site / path, target.name)
        else:
            shutil.copyfile(site / path, target)
    for folder, zip_name in zip(JPEG_DIRS, ("images.zip", "images2.zip"), strict=True):
        with zipfile.ZipFile(dst / zip_name, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(os.listdir(site / folder)):
                zf.write(site / folder / name, f"{folder}/{name}")
    return dst


@pytest.fixture(scope="module")
def zipped(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Path:
    return zip_release(site, tmp_path_factory.mktemp("zipped") / "release")


@pytest.fixture(scope="module")
def zipped_mount(tmp_path_factory: pytest.TempPathFactory, zipped: Path) -> Iterator[Path]:
    with build_and_mount(zipped, tmp_path_factory.mktemp("mnt") / "zipped") as mp:
        yield mp


@pytest.fixture(scope="module")
def sqfs_mount(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Iterator[Path]:
    """The site's release without its JPEG folders, and its own SquashFS image of them, made
    by mksquashfs with its defaults (compressed blocks, fragments), given with --images."""
    root = tmp_path_factory.mktemp("sqfs")
    rel = root / "release"
    shutil.copytree(site, rel, ignore=lambda d, names: JPEG_DIRS if Path(d) == site else ())
    image = root / "site-images.sqfs"
    subprocess.run(["mksquashfs", *(str(site / d) for d in JPEG_DIRS), str(image), "-noappend",
                    "-quiet", "-no-progress"], check=True, stdout=subprocess.DEVNULL, timeout=120)
    with build_and_mount(rel, tmp_path_factory.mktemp("mnt") / "sqfs", "--images",
                         str(image)) as mp:
        yield mp


def test_zipped_release_mounts_to_the_same_tree(site_tree: dict, zipped: Path,
                                                zipped_mount: Path) -> None:
    """Same names, sizes and sha256 of every file; the zips themselves do not show."""
    zips = [p for p in os.listdir(zipped) if p.endswith(".zip")]
    assert {"objects.json.zip", "VG-SGG-dicts.json.zip", "images.zip", "images2.zip"} <= set(zips)
    tree = tree_of(zipped_mount)
    assert [p for p in tree if p.endswith(".zip")] == []
    assert differences(tree, site_tree) == []


def test_site_squashfs_image_mounts_to_the_same_tree(site_tree: dict, sqfs_mount: Path) -> None:
    assert differences(tree_of(sqfs_mount), site_tree) == []


# --- a name in both JPEG folders --------------------------------------------------------------

@pytest.fixture(scope="module")
def two_thumbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The real excerpts with a Thumbs.db in each JPEG folder, as Windows leaves them."""
    root = tmp_path_factory.mktemp("thumbs")
    rel = writable_copy(RELEASE, root / "release")
    for folder in JPEG_DIRS:
        (rel / folder / "Thumbs.db").write_bytes(THUMBS_DB + folder.encode())
    with build_and_mount(rel, tmp_path_factory.mktemp("mnt") / "thumbs") as mp:
        yield rel, mp


def test_a_name_in_both_jpeg_folders(two_thumbs: tuple[Path, Path]) -> None:
    """Each folder's own file stays where it was: VG_100K/Thumbs.db is the release's
    VG_100K/Thumbs.db, listed once."""
    rel, mp = two_thumbs
    assert (mp / "VG_100K_2" / "Thumbs.db").read_bytes() == (rel / "VG_100K_2/Thumbs.db"
                                                              ).read_bytes()
    assert os.listdir(mp / "VG_100K").count("Thumbs.db") == 1
    assert (mp / "VG_100K" / "Thumbs.db").read_bytes() == (rel / "VG_100K/Thumbs.db").read_bytes()
