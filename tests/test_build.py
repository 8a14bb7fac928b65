"""`vgfs build`, `verify` and `info`, for real: real LMDB, real mksquashfs, the real excerpts.

Format 3 keeps every file of the release outside its JPEG folders once, byte for byte, in zstd
frames; a per-image file is the byte range of its entry in the release file. So the checks
here compare whole files by their bytes and sha256, and each entry both as a value and as the
release's own bytes of it, found independently of vgfs's parser (`release_entry_bytes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

import vgfs
from tests.conftest import (
    JPEGS,
    RELEASE,
    V12,
    damage_frame,
    entries_by_id,
    flip_byte,
    force_unmount,
    image_id_of,
    mounted,
)
from tests.conftest import vgfs as run_vgfs
from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.layout import (
    FILE_INFO,
    FORMAT,
    FRAME,
    FRAME_AT,
    FRAME_KEY,
    FRAMES_FILE,
    KINDS,
    VIEW_FILE_PREFIX,
)
from vgfs.mount import mounted_fs
from vgfs.tree import MAX_IMAGE_ID

KIND_SOURCES = {
    "meta": "image_data.json",
    "objects": "objects.json",
    "attributes": "attributes.json",
    "relationships": "relationships.json",
    "graph": "scene_graphs.json",
    "regions": "region_descriptions.json",
    "qa": "question_answers.json",
}
IDS = list(range(1, 61))
# What a dataset of the real excerpts counts: four JPEGs, nothing else in the JPEG folders.
REAL_COUNTS = {"images": 60, "jpegs": 4, "images_without_jpeg": 56, "unannotated_jpegs": 0,
               "other_files": 0, "not_in_a_jpeg_folder": 0}
_WS = re.compile(r"[ \t\n\r]*")


def release_entry_bytes(path: Path) -> dict[int, bytes]:
    """Each top-level entry of a per-image release file as its own bytes in the file, by image
    id: cut with the standard library's decoder, independently of vgfs's streaming parser."""
    text = path.read_bytes().decode()
    decoder = json.JSONDecoder()
    pos = _WS.match(text).end()
    assert text[pos] == "[", path
    pos = _WS.match(text, pos + 1).end()
    out: dict[int, bytes] = {}
    while text[pos] != "]":
        value, end = decoder.raw_decode(text, pos)
        out[image_id_of(value)] = text[pos:end].encode()
        pos = _WS.match(text, end).end()
        if text[pos] == ",":
            pos = _WS.match(text, pos + 1).end()
    return out


def release_files(release: Path) -> dict[str, bytes]:
    """Every file of a release folder outside its top-level JPEG folders, by relative path."""
    return {p.relative_to(release).as_posix(): p.read_bytes() for p in release.rglob("*")
            if p.is_file() and p.relative_to(release).parts[0] not in ("VG_100K", "VG_100K_2")}


def _assert_entries_equal(dataset: Path, files: dict[str, Path]) -> None:
    """Every stored entry of each kind equals the source file's entry, as a value and as the
    release's own bytes of it, and there are no others."""
    with vgfs.open_dataset(dataset) as ds:
        assert list(ds.image_ids()) == IDS
        for kind, path in files.items():
            source = entries_by_id(path)
            raw = release_entry_bytes(path)
            assert sorted(source) == sorted(raw) == IDS, path
            for image_id, entry in source.items():
                assert ds.entry(kind, image_id) == entry, (kind, image_id)
                assert bytes(ds.entry_bytes(kind, image_id)) == raw[image_id], (kind, image_id)
            assert ds.manifest["kinds"][kind]["entries"] == len(source)


def _assert_jpegs_equal(dataset: Path, release: Path) -> None:
    """The four real JPEGs come back byte for byte; the other images have none."""
    with vgfs.open_dataset(dataset) as ds:
        for image_id in IDS:
            if image_id in JPEGS:
                data = (release / JPEGS[image_id]).read_bytes()
                assert ds.jpeg(image_id) == data, image_id
                assert ds.jpeg_index(image_id).sha256 == hashlib.sha256(data).digest()
                assert ds.in_part2(image_id) == JPEGS[image_id].startswith("VG_100K_2/")
            else:
                assert ds.jpeg(image_id) is None, image_id


def _assert_files_stored(ds: Dataset, files: dict[str, bytes]) -> None:
    """The dataset keeps exactly these release files, each byte for byte with its sha256."""
    assert ds.release_files() == sorted((name, len(data)) for name, data in files.items())
    for name, data in files.items():
        assert bytes(ds.file_range(name, 0, len(data) + 10)) == data, name
        assert ds.manifest["sources"][name]["sha256"] == hashlib.sha256(data).hexdigest(), name


def _build(release: Path, out: Path, *args: str, check: bool = True, quiet: bool = True
           ) -> subprocess.CompletedProcess:
    """`vgfs build RELEASE -o OUT`, through the real command line."""
    return run_vgfs("build", str(release), "-o", str(out), *(["--quiet"] if quiet else []),
                    *args, check=check, timeout=120)


def _leftovers(out: Path) -> list[str]:
    """The output and any hidden temporary folder of a build of it."""
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name == out.name or p.name.startswith(f".{out.name}."))


def _error_line(stderr: str) -> str:
    """The single error sentence of a failed command; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("vgfs: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _warnings(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def _stored_frames(ds: Dataset) -> tuple[dict[str, tuple[int, int]], dict[int, list[bytes]]]:
    """The `files` database, and each file number's stored frames in frame order, read
    straight from LMDB's index and the frames file, which they tile without a gap."""
    blob = (ds.path / FRAMES_FILE).read_bytes()
    txn = ds.env.begin(buffers=False)
    try:
        files = {k.decode(): FILE_INFO.unpack(v) for k, v in txn.cursor(db=ds.dbs["files"])}
        frames: dict[int, list[bytes]] = {}
        places = []
        for key, value in txn.cursor(db=ds.dbs["frames"]):
            file_no, frame = FRAME_KEY.unpack(key)
            got = frames.setdefault(file_no, [])
            assert frame == len(got), (file_no, frame)  # no frame missing, none twice
            offset, length = FRAME_AT.unpack(value)
            got.append(blob[offset:offset + length])
            places.append((offset, length))
    finally:
        txn.abort()
    places.sort()
    assert all(a + n == b for (a, n), (b, _) in zip(places, places[1:], strict=False))
    assert places[-1][0] + places[-1][1] == len(blob)
    return files, frames


# --- the real release, stored as released --------------------------------------------------


def test_every_entry_equals_its_source(real_dataset: Path, release: Path) -> None:
    """Each of the seven per-image kinds holds exactly the release's entry for every image,
    in the release's own bytes."""
    _assert_entries_equal(real_dataset, {k: release / n for k, n in KIND_SOURCES.items()})


def test_every_jpeg_is_byte_identical(real_dataset: Path, release: Path) -> None:
    """JPEGs from VG_100K and VG_100K_2 are stored byte for byte, indexed with their sha256."""
    _assert_jpegs_equal(real_dataset, release)


def test_every_release_file_is_stored_as_released(real_dataset: Path, release: Path) -> None:
    """Every file of the release outside its JPEG folders (the per-image files, synsets,
    aliases, the readme) is kept with its exact bytes, also in ranges that end past it."""
    files = release_files(release)
    assert "readme_v1_4.txt" in files and "objects.json" in files
    with vgfs.open_dataset(real_dataset) as ds:
        _assert_files_stored(ds, files)
        data = files["objects.json"]
        for off in (0, 1, FRAME - 5, FRAME, 3 * FRAME - 1, len(data) - 3):
            assert bytes(ds.file_range("objects.json", off, 17)) == data[off:off + 17], off
        assert ds.file_size("objects.json") == len(data)
        assert ds.file_size("VG_100K/2.jpg") is None


def test_every_file_decompresses_frame_by_frame_to_the_release(real_dataset: Path,
                                                               release: Path) -> None:
    """Each carried file is stored as zstd frames of FRAME input bytes (the last shorter),
    each decompressing alone, that join to the release file: its sha256 is the manifest's."""
    files = release_files(release)
    dctx = zstandard.ZstdDecompressor()
    with vgfs.open_dataset(real_dataset) as ds:
        stored, frames = _stored_frames(ds)
        sources = ds.manifest["sources"]
    carried = {p: v for p, v in stored.items() if not p.startswith(VIEW_FILE_PREFIX)}
    assert set(carried) == set(files) == set(sources)
    assert len({no for no, _ in stored.values()}) == len(stored)  # one number a file
    for name, (file_no, size) in carried.items():
        parts = [dctx.decompress(f) for f in frames.get(file_no, [])]
        assert len(parts) == -(-size // FRAME), name
        assert all(len(p) == FRAME for p in parts[:-1]), name
        data = b"".join(parts)
        assert len(data) == size == len(files[name]), name
        assert hashlib.sha256(data).hexdigest() == sources[name]["sha256"] == hashlib.sha256(
            files[name]).hexdigest(), name
    assert set(frames) <= {no for no, _ in stored.values()}  # no frames of no file


def test_annotations_take_at_most_a_quarter_of_the_release(real_dataset: Path) -> None:
    """DESIGN §2.2's goal, on the real excerpts: the stored frames of the release's files take
    at most a quarter of those files' bytes (and still do with the views' own files)."""
    with vgfs.open_dataset(real_dataset) as ds:
        stored, frames = _stored_frames(ds)
    release_nos = {no for p, (no, _) in stored.items() if not p.startswith(VIEW_FILE_PREFIX)}
    carried = sum(size for p, (_, size) in stored.items() if not p.startswith(VIEW_FILE_PREFIX))
    of_release = sum(len(f) for no in release_nos for f in frames[no])
    of_all = sum(len(f) for fs in frames.values() for f in fs)
    print(f"\nframes: {of_release:,} of {carried:,} release bytes ({of_release / carried:.1%});"
          f" with the views' files {of_all:,} ({of_all / carried:.1%})")
    assert carried > 2_000_000
    assert of_release <= carried / 4
    assert of_all <= carried / 4


def test_manifest_records_versions_sources_and_counts(real_dataset: Path, release: Path) -> None:
    """The manifest names format and tool, and each carried file's version, size, sha256 and
    entries; its counts say what the JPEG folders held."""
    m = json.loads((real_dataset / "manifest.json").read_bytes())
    assert m["format"] == FORMAT == 3
    assert m["tool"] == f"vgfs {vgfs.__version__}"
    files = release_files(release)
    assert set(m["sources"]) == set(files)
    for name, data in files.items():
        s = m["sources"][name]
        if name == "readme_v1_4.txt":
            version, entries = "unknown", 0  # no schema to know it by
        elif name in ("objects.json", "relationships.json") or name.endswith("_alias.txt"):
            version = "1.4"  # the alias files were first released with v1.4
            entries = data.count(b"\n") if name.endswith(".txt") else len(json.loads(data))
        else:
            version, entries = "1.2", len(json.loads(data))
        assert s == {"file": str(release / name), "version": version, "size": len(data),
                     "sha256": hashlib.sha256(data).hexdigest(), "entries": entries}, name
    assert m["counts"] == REAL_COUNTS
    assert set(m["kinds"]) == set(KIND_SOURCES)
    for kind, k in m["kinds"].items():
        assert k == {"source": KIND_SOURCES[kind], "version": m["sources"][k["source"]][
            "version"], "entries": 60, "unknown_ids": 0, "missing_images": 0}, kind
    assert m["images"]["path"] == "images.sqfs"
    assert m["images"]["jpegs"] == 4
    assert "whole_files" not in m and "checksums" not in m


def test_cli_build_reports_what_it_cannot_show(release_copy: Path, tmp_path: Path) -> None:
    """Entries for unknown ids, images without JPEG and JPEGs without annotations are counted
    in the manifest and reported on stderr, never dropped silently: the entry stays in its
    file, the JPEG is served where it was (format 3: as a stray, with no images/ directory)."""
    objects = json.loads((release_copy / "objects.json").read_bytes())
    objects.append({"image_id": 9999, "objects": []})
    (release_copy / "objects.json").write_bytes(json.dumps(objects).encode())
    shutil.copy(release_copy / "VG_100K" / "2.jpg", release_copy / "VG_100K" / "777.jpg")
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    warnings = "\n".join(_warnings(proc.stderr))
    assert "objects.json" in warnings and "9999" in warnings
    assert "56 images" in warnings
    assert "1 JPEGs have no entry in image_data.json" in warnings
    m = json.loads((out / "manifest.json").read_bytes())
    assert m["kinds"]["objects"]["unknown_ids"] == 1
    assert m["counts"] == {**REAL_COUNTS, "jpegs": 4, "unannotated_jpegs": 1}
    with vgfs.open_dataset(out) as ds:
        assert ds.entry("objects", 9999) is None and not ds.in_image_data(9999)
        data = (release_copy / "objects.json").read_bytes()
        assert bytes(ds.file_range("objects.json", 0, len(data))) == data
        assert data.endswith(b'{"image_id": 9999, "objects": []}]')
        assert ds.jpeg(777) is None
        index = ds.strays["VG_100K/777.jpg"]
        assert ds.image_bytes(index, "777") == (release_copy / "VG_100K" / "2.jpg").read_bytes()


def test_stray_warning_names_the_files(release_copy: Path, tmp_path: Path) -> None:
    """A JPEG without annotations is named on stderr, as it was before format 3."""
    shutil.copy(release_copy / "VG_100K" / "2.jpg", release_copy / "VG_100K" / "777.jpg")
    proc = _build(release_copy, tmp_path / "out")
    assert "777" in "\n".join(_warnings(proc.stderr))


# --- v1.2 files, and a graph composed without scene_graphs.json --------------------------


@pytest.fixture
def v12_release(release_copy: Path) -> Path:
    """The real excerpts with objects.json and relationships.json in their v1.2 format."""
    for name in ("objects.json", "relationships.json"):
        shutil.copy(V12 / name, release_copy / name)
    return release_copy


def test_v12_files_are_detected_and_stored_as_released(v12_release: Path, tmp_path: Path,
                                                       release: Path) -> None:
    """v1.2 objects/relationships are detected as 1.2, and their entries stored unchanged."""
    out = tmp_path / "out"
    _build(v12_release, out)
    m = json.loads((out / "manifest.json").read_bytes())
    for name in ("objects.json", "relationships.json"):
        assert m["sources"][name]["version"] == "1.2"
        assert m["sources"][name]["sha256"] == hashlib.sha256(
            (V12 / name).read_bytes()).hexdigest()
    assert m["kinds"]["objects"]["version"] == m["kinds"]["relationships"]["version"] == "1.2"
    files = {k: release / n for k, n in KIND_SOURCES.items()}
    files.update(objects=V12 / "objects.json", relationships=V12 / "relationships.json")
    _assert_entries_equal(out, files)


def test_graph_is_composed_without_scene_graphs(v12_release: Path, tmp_path: Path,
                                                release: Path) -> None:
    """Without scene_graphs.json each graph is composed from attributes.json (objects) and
    relationships.json (flat relationships); on the v1.2 data it equals the released graph,
    and its stored size is that of the bytes served."""
    (v12_release / "scene_graphs.json").unlink()
    out = tmp_path / "out"
    _build(v12_release, out)
    attributes = entries_by_id(release / "attributes.json")
    relationships = entries_by_id(V12 / "relationships.json")
    scene_graphs = entries_by_id(release / "scene_graphs.json")
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["kinds"]["graph"]["version"] == "composed"
        assert "scene_graphs.json" not in ds.manifest["sources"]
        assert ds.file_size("scene_graphs.json") is None
        assert ds.entry_bytes("graph", 1) is None  # no source file to take a range of
        for image_id in IDS:
            graph = ds.entry("graph", image_id)
            assert set(graph) == {"image_id", "objects", "relationships"}
            assert graph["image_id"] == image_id
            assert graph["objects"] == attributes[image_id]["attributes"]
            flat = [{"relationship_id": r["relationship_id"], "predicate": r["predicate"],
                     "synsets": r["synsets"], "subject_id": r["subject"]["object_id"],
                     "object_id": r["object"]["object_id"]}
                    for r in relationships[image_id]["relationships"]]
            assert graph["relationships"] == flat, image_id
            assert graph == scene_graphs[image_id], image_id
            assert ds.image(image_id).graph_size == len(ds.graph_bytes(image_id)), image_id


# --- zipped inputs -----------------------------------------------------------------------


def test_zipped_release_gives_the_same_dataset(release_copy: Path, tmp_path: Path,
                                               release: Path, real_dataset: Path) -> None:
    """NAME.json.zip files (member at the top or in a subfolder) and images.zip/images2.zip
    give the same entries, JPEG bytes, stored files and source checksums as the plain files:
    a zipped JSON file is kept as the JSON it holds."""
    for i, path in enumerate(sorted(release_copy.glob("*.json"))):
        member = f"vg/{path.name}" if i % 2 else path.name
        with zipfile.ZipFile(f"{path}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(path, member)
        path.unlink()
    for zname, folder in (("images.zip", "VG_100K"), ("images2.zip", "VG_100K_2")):
        with zipfile.ZipFile(release_copy / zname, "w", zipfile.ZIP_DEFLATED) as zf:
            for jpeg in sorted((release_copy / folder).iterdir()):
                zf.write(jpeg, f"{folder}/{jpeg.name}")
        shutil.rmtree(release_copy / folder)
    assert not list(release_copy.glob("*.json")) and not list(release_copy.glob("VG_100K*"))
    out = tmp_path / "out"
    _build(release_copy, out)
    _assert_entries_equal(out, {k: release / n for k, n in KIND_SOURCES.items()})
    _assert_jpegs_equal(out, release)
    with vgfs.open_dataset(out) as ds, vgfs.open_dataset(real_dataset) as plain:
        _assert_files_stored(ds, release_files(release))
        assert ds.release_files() == plain.release_files()
        for name, s in plain.manifest["sources"].items():
            z = ds.manifest["sources"][name]
            assert {k: z[k] for k in ("version", "size", "sha256", "entries")} == {
                k: s[k] for k in ("version", "size", "sha256", "entries")}, name
        assert ds.manifest["counts"] == plain.manifest["counts"]


def test_file_of_several_frames(release_copy: Path, tmp_path: Path) -> None:
    """A file bigger than a frame reads back byte for byte, through the API and through a
    mount, also in reads that straddle frame boundaries."""
    synsets = {f"word{i}.n.01": f"a gloss with a quote \" and unicode \u00e9 {i}"
               for i in range(60_000)}
    data = json.dumps(synsets).encode()
    assert len(data) > 2 * FRAME + 1
    (release_copy / "synsets.json").write_bytes(data)
    out = tmp_path / "out"
    _build(release_copy, out)
    with vgfs.open_dataset(out) as ds:
        assert ds.file_size("synsets.json") == len(data)
        assert bytes(ds.file_range("synsets.json", 0, len(data))) == data
        for off in (0, FRAME - 3, 2 * FRAME - 1, len(data) - 5, len(data)):
            assert bytes(ds.file_range("synsets.json", off, 10)) == data[off:off + 10]
        assert bytes(ds.file_range("synsets.json", FRAME - 1, 2 * FRAME + 2)) == data[
            FRAME - 1:3 * FRAME + 1]  # three frames in one read
    with mounted(out, tmp_path / "mnt") as mp:
        assert (mp / "synsets.json").stat().st_size == len(data)
        assert (mp / "synsets.json").read_bytes() == data
        with open(mp / "synsets.json", "rb", buffering=0) as f:
            f.seek(FRAME - 7)
            assert f.read(20) == data[FRAME - 7:FRAME + 13]


def test_entries_keep_the_release_spacing(release_copy: Path, tmp_path: Path) -> None:
    """An indented release's per-image entries come back with their indentation, key order
    and raw UTF-8 (offsets count bytes, not characters): the release's bytes, not a
    re-serialisation."""
    for name in ("objects.json", "region_descriptions.json"):
        entries = json.loads((release_copy / name).read_bytes())
        for entry in entries:
            for region in entry.get("regions", ()):
                region["phrase"] = "café 日本 " + region["phrase"]
        (release_copy / name).write_text(json.dumps(entries, indent=3, ensure_ascii=False),
                                         encoding="utf-8")
    out = tmp_path / "out"
    _build(release_copy, out)
    with vgfs.open_dataset(out) as ds:
        for kind, name in (("objects", "objects.json"), ("regions", "region_descriptions.json")):
            raw = release_entry_bytes(release_copy / name)
            for image_id in IDS:
                got = bytes(ds.entry_bytes(kind, image_id))
                assert got == raw[image_id], (kind, image_id)
                assert b"\n   " in got, (kind, image_id)
                if kind == "regions" and ds.entry(kind, image_id)["regions"]:
                    assert "café 日本".encode() in got, image_id


def test_other_files_are_carried_and_mount_names_are_not(release_copy: Path,
                                                         tmp_path: Path) -> None:
    """What a site keeps in the release folder (nested folders too) is carried byte for byte;
    a file whose first path component is a name the mount makes is not, and that is said."""
    extra = {"VG-SGG-with-attri.h5": os.urandom(3000), "splits/train.txt": b"1\n2\n",
             "splits/deep/er/val.txt": b"4\n", "notes.json.txt": b"\xff\xfe not utf-8"}
    # `images` as a file: a folder of that name would be taken as a flat JPEG folder.
    reserved = ["README.txt", "images", "by-id/1.json", "by-object/tree/1", ".vgfs-stats"]
    for name, data in extra.items():
        (release_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (release_copy / name).write_bytes(data)
    for name in reserved:
        (release_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (release_copy / name).write_text("mine")
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    warned = [w for w in _warnings(proc.stderr) if "not kept" in w]
    assert len(warned) == 1, proc.stderr
    assert warned[0].endswith(": .vgfs-stats, README.txt, by-id, by-object, images"), warned
    with vgfs.open_dataset(out) as ds:
        _assert_files_stored(ds, release_files(RELEASE) | extra)
        assert ds.manifest["counts"] == REAL_COUNTS


# --- the JPEG folders: strays, duplicates, layouts --------------------------------------------


def _add_strays(folder: Path, folder2: Path) -> dict[str, bytes]:
    """GQA's n*.jpg, a Thumbs.db, an id without annotations, an empty <id>.jpg of an
    annotated image, and a desktop.ini in the second part: every one served where it was,
    by its mount path."""
    files = {"VG_100K/n166008.jpg": (RELEASE / "VG_100K/4.jpg").read_bytes(),
             "VG_100K/Thumbs.db": b"\xd0\xcf\x11\xe0 thumbnails of part 1",
             "VG_100K/999999.jpg": (RELEASE / "VG_100K/5.jpg").read_bytes(),
             "VG_100K/7.jpg": b"",
             "VG_100K_2/desktop.ini": b"[.ShellClassInfo]\r\n"}
    for name, data in files.items():
        part, _, base = name.partition("/")
        ((folder if part == "VG_100K" else folder2) / base).write_bytes(data)
    return files


STRAY_COUNTS = {**REAL_COUNTS, "unannotated_jpegs": 1, "other_files": 4}


def _assert_strays(dataset: Path, strays: dict[str, bytes]) -> None:
    """The strays are indexed under their folder and name with their bytes and sha256; none
    of them is an image's JPEG, and the real JPEGs still are."""
    with vgfs.open_dataset(dataset) as ds:
        assert set(ds.strays) == set(strays)
        for name, data in strays.items():
            index = ds.strays[name]
            assert ds.image_bytes(index, name) == data, name
            assert index.sha256 == hashlib.sha256(data).digest(), name
        assert ds.jpeg(7) is None and ds.in_image_data(7)
        assert ds.jpeg(999999) is None and not ds.in_image_data(999999)
        assert sorted(ds.image_ids(db="jpegs")) == sorted(JPEGS)
    _assert_jpegs_equal(dataset, RELEASE)


def test_strays_in_the_jpeg_folders_are_served_not_fatal(release_copy: Path,
                                                         tmp_path: Path) -> None:
    """Files of the JPEG folders that are no annotated image's JPEG never stop the build
    (format 3; they used to): they are reported, counted, and served where they were."""
    strays = _add_strays(release_copy / "VG_100K", release_copy / "VG_100K_2")
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    warnings = "\n".join(_warnings(proc.stderr))
    assert "VG_100K/7.jpg is empty or not a JPEG" in warnings
    assert "1 JPEGs have no entry in image_data.json" in warnings
    assert "4 other files sit in the JPEG folders" in warnings
    m = json.loads((out / "manifest.json").read_bytes())
    assert m["counts"] == STRAY_COUNTS
    assert not any("/" in name and name.startswith("VG_100K") for name in m["sources"])
    _assert_strays(out, strays)
    assert "matches" in run_vgfs("verify", str(out), "--quiet", timeout=120).stdout
    with mounted(out, tmp_path / "mnt") as mp:
        for name, data in strays.items():
            assert (mp / name).stat().st_size == len(data), name
            assert (mp / name).read_bytes() == data, name
        assert "7" in os.listdir(mp / "images")
        assert "image.jpg" not in os.listdir(mp / "images" / "7")
        assert not (mp / "images" / "999999").exists()
        assert "n166008.jpg" not in os.listdir(mp / "VG_100K_2")


def test_strays_in_the_image_zips(release_copy: Path, tmp_path: Path) -> None:
    """The same rules for images.zip and images2.zip: their strays are served where the zip
    had them (by the part of their folder), counted, and do not stop the build."""
    strays = _add_strays(release_copy / "VG_100K", release_copy / "VG_100K_2")
    for zname, folder in (("images.zip", "VG_100K"), ("images2.zip", "VG_100K_2")):
        with zipfile.ZipFile(release_copy / zname, "w") as zf:
            for path in sorted((release_copy / folder).iterdir()):
                zf.write(path, f"{folder}/{path.name}")
        shutil.rmtree(release_copy / folder)
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    assert "4 other files sit in the JPEG folders" in "\n".join(_warnings(proc.stderr))
    assert json.loads((out / "manifest.json").read_bytes())["counts"] == STRAY_COUNTS
    _assert_strays(out, strays)


def test_a_stray_name_in_both_parts(release_copy: Path, tmp_path: Path) -> None:
    """A Thumbs.db in each part (Windows leaves one in every folder it shows): each part's
    own is served in its folder, and no listing names a file twice."""
    ones = {"VG_100K": b"thumbnails of part 1", "VG_100K_2": b"thumbnails of part 2"}
    for part, data in ones.items():
        (release_copy / part / "Thumbs.db").write_bytes(data)
    out = tmp_path / "out"
    _build(release_copy, out)
    with mounted(out, tmp_path / "mnt") as mp:
        for part, data in ones.items():
            names = os.listdir(mp / part)
            assert len(names) == len(set(names)), (part, sorted(names))
            assert (mp / part / "Thumbs.db").read_bytes() == data, part


def _site_folders(root: Path) -> tuple[Path, dict[str, bytes]]:
    """A site's JPEG folders with strays, and a backup/ folder beside them holding a JPEG
    named as image 9, which is no JPEG folder."""
    for part in ("VG_100K", "VG_100K_2", "backup"):
        (root / part).mkdir(parents=True)
    for rel in JPEGS.values():
        shutil.copy(RELEASE / rel, root / rel)
    shutil.copy(RELEASE / "VG_100K/2.jpg", root / "backup/9.jpg")
    return root, _add_strays(root / "VG_100K", root / "VG_100K_2")


@pytest.mark.parametrize("options", [("-comp", "gzip"),  # fragments: read through the image
                                     ("-noD", "-no-fragments", "-no-sparse")],  # one pread each
                         ids=["gzip", "vgfs-layout"])
def test_strays_in_a_site_image(tmp_path: Path, options: tuple[str, ...]) -> None:
    """A site's SquashFS image given with --images follows the same rules: strays served
    where they were, and a JPEG outside the JPEG folders (backup/9.jpg) is not image 9."""
    site, strays = _site_folders(tmp_path / "site")
    image = tmp_path / "site.sqfs"
    subprocess.run(["mksquashfs", *(str(site / p) for p in ("VG_100K", "VG_100K_2", "backup")),
                    str(image), "-noappend", "-quiet", "-no-progress", *options], check=True,
                   stdout=subprocess.DEVNULL)
    out = tmp_path / "out"
    proc = _build(RELEASE, out, "--images", str(image))
    warnings = "\n".join(_warnings(proc.stderr))
    assert "VG_100K/7.jpg is empty or not a JPEG" in warnings
    assert "1 files of the image are in no JPEG folder" in warnings
    m = json.loads((out / "manifest.json").read_bytes())
    assert m["counts"] == {**STRAY_COUNTS, "not_in_a_jpeg_folder": 1}
    assert m["images"]["path"] == str(image)
    _assert_strays(out, strays)
    with vgfs.open_dataset(out) as ds:
        assert ds.jpeg(9) is None
        assert not any(name.startswith("backup") or name.endswith("/9.jpg")
                       for name in ds.strays)
    assert "matches" in run_vgfs("verify", str(out), "--quiet", timeout=120).stdout


def test_release_jpegs_are_not_carried_when_images_names_others(release_copy: Path,
                                                                 tmp_path: Path) -> None:
    """--images replaces the release's own JPEG folders as the JPEG source: they are no
    annotation files to carry, wherever they sit, and nothing warns about them."""
    (release_copy / "vg").mkdir()
    shutil.move(release_copy / "VG_100K", release_copy / "vg" / "VG_100K")
    site, _ = _site_folders(tmp_path / "site")
    out = tmp_path / "out"
    proc = _build(release_copy, out, "--images", str(site / "VG_100K"), str(site / "VG_100K_2"))
    with vgfs.open_dataset(out) as ds:
        assert [p for p, _ in ds.release_files() if p.endswith(".jpg")] == []
    assert not [w for w in _warnings(proc.stderr) if "not kept" in w], proc.stderr


def test_two_jpegs_of_one_image_fail_before_the_annotations(release_copy: Path,
                                                            tmp_path: Path) -> None:
    """<id>.jpg in both VG_100K and VG_100K_2 stops the build with one sentence naming both,
    before the annotation pass has printed a line of progress, and leaves nothing behind."""
    control = _build(release_copy, tmp_path / "control", quiet=False)
    assert re.search(r"^objects\.json: ", control.stderr, re.M), control.stderr
    shutil.copy(release_copy / "VG_100K" / "2.jpg", release_copy / "VG_100K_2" / "2.jpg")
    out = tmp_path / "out"
    proc = _build(release_copy, out, check=False, quiet=False)
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "image 2" in line and "VG_100K/2.jpg" in line and "VG_100K_2/2.jpg" in line, line
    for name in KIND_SOURCES.values():
        assert not re.search(rf"^{re.escape(name)}: ", proc.stderr, re.M), proc.stderr
    assert "packing JPEGs" not in proc.stderr
    assert _leftovers(out) == []


def _flat_images(rel: Path) -> list[str]:
    """DenseCap's layout: one flat `images/` folder of every <id>.jpg."""
    (rel / "images").mkdir()
    for jpeg in rel.glob("VG_100K*/*.jpg"):
        shutil.move(jpeg, rel / "images" / jpeg.name)
    shutil.rmtree(rel / "VG_100K")
    shutil.rmtree(rel / "VG_100K_2")
    return []


def _only_part1(rel: Path) -> list[str]:
    shutil.rmtree(rel / "VG_100K_2")
    return []


def _only_images_zip(rel: Path) -> list[str]:
    with zipfile.ZipFile(rel / "images.zip", "w") as zf:
        for jpeg in sorted((rel / "VG_100K").iterdir()):
            zf.write(jpeg, f"VG_100K/{jpeg.name}")
    shutil.rmtree(rel / "VG_100K")
    shutil.rmtree(rel / "VG_100K_2")
    return []


def _images_option(rel: Path) -> list[str]:
    return ["--images", str(rel / "VG_100K")]


SINGLE_SOURCES = {"flat-images": (_flat_images, set(JPEGS)),
                  "only-VG_100K": (_only_part1, {2, 4, 5}),
                  "only-images.zip": (_only_images_zip, {2, 4, 5}),
                  "images-option": (_images_option, {2, 4, 5})}


def test_flat_images_folder_is_a_jpeg_folder(release_copy: Path, tmp_path: Path) -> None:
    """DenseCap's flat `images/` folder of <id>.jpg is found by default as a JPEG folder: it is
    packed, not carried as release files, and not warned about as a name the mount makes."""
    _flat_images(release_copy)
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    assert not [w for w in _warnings(proc.stderr) if "not kept" in w], proc.stderr
    with vgfs.open_dataset(out) as ds:
        assert not [p for p, _ in ds.release_files() if p.startswith("images")]
        assert ds.manifest["images"]["path"] == "images.sqfs"
        _assert_files_stored(ds, release_files(RELEASE))


@pytest.mark.parametrize("case", SINGLE_SOURCES)
def test_a_single_jpeg_source_is_found(case: str, release_copy: Path, tmp_path: Path) -> None:
    """One JPEG source (a flat images/ folder, VG_100K alone, images.zip alone, one folder
    given with --images): its JPEGs are the images' JPEGs, all in the merged part."""
    layout, ids = SINGLE_SOURCES[case]
    args = layout(release_copy)
    out = tmp_path / "out"
    _build(release_copy, out, *args)
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["counts"] == {**REAL_COUNTS, "jpegs": len(ids),
                                         "images_without_jpeg": 60 - len(ids)}
        for image_id in ids:
            assert ds.jpeg(image_id) == (RELEASE / JPEGS[image_id]).read_bytes(), image_id
            assert not ds.in_part2(image_id)
        assert not ds.strays


def test_jpeg_folders_under_images_are_found(release_copy: Path, tmp_path: Path) -> None:
    """RELEASE/images/VG_100K and RELEASE/images/VG_100K_2, as DESIGN §2.4 names them."""
    (release_copy / "images").mkdir()
    for part in ("VG_100K", "VG_100K_2"):
        shutil.move(release_copy / part, release_copy / "images" / part)
    out = tmp_path / "out"
    _build(release_copy, out)
    _assert_jpegs_equal(out, RELEASE)


def _no_jpeg_folders(rel: Path) -> None:
    shutil.rmtree(rel / "VG_100K")
    shutil.rmtree(rel / "VG_100K_2")


def _only_strays(rel: Path) -> None:
    for jpeg in rel.glob("VG_100K*/*.jpg"):
        jpeg.unlink()
    (rel / "VG_100K" / "Thumbs.db").write_bytes(b"thumbs")


@pytest.mark.parametrize("breaker", [
    _no_jpeg_folders,
    _only_strays,
], ids=["no-folders", "only-strays"])
def test_a_build_without_jpegs_says_so(breaker: Callable[[Path], None], release_copy: Path,
                                       tmp_path: Path) -> None:
    """A release whose JPEG folders give no JPEG builds an annotations-only dataset, and
    the build says it found no JPEG."""
    breaker(release_copy)
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    assert any("found no JPEG" in w for w in _warnings(proc.stderr)), proc.stderr
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["counts"]["jpegs"] == 0
        assert ds.manifest["counts"]["images_without_jpeg"] == 60
        assert list(ds.image_ids(db="jpegs")) == []
        assert all(ds.jpeg(i) is None for i in IDS)
        _assert_files_stored(ds, release_files(release_copy))


def _huge_in_image_data(rel: Path) -> None:
    entries = json.loads((rel / "image_data.json").read_bytes())
    entries[2]["image_id"] = MAX_IMAGE_ID + 1
    (rel / "image_data.json").write_text(json.dumps(entries))


def _huge_jpeg_name(rel: Path) -> None:
    shutil.copy(rel / "VG_100K" / "2.jpg", rel / "VG_100K" / f"{MAX_IMAGE_ID + 1}.jpg")


@pytest.mark.parametrize("breaker, file", [
    (_huge_in_image_data, "image_data.json"),
    (_huge_jpeg_name, f"VG_100K/{MAX_IMAGE_ID + 1}.jpg"),
], ids=["image-data", "jpeg-name"])
def test_image_id_above_the_limit_is_refused(breaker: Callable[[Path], None], file: str,
                                             release_copy: Path, tmp_path: Path) -> None:
    """An image id the mount cannot number stops the build with one sentence naming the file
    and the limit, and leaves nothing behind; the limit itself is still an image id."""
    breaker(release_copy)
    out = tmp_path / "out"
    proc = _build(release_copy, out, check=False)
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert file in line and str(MAX_IMAGE_ID + 1) in line and str(MAX_IMAGE_ID) in line, line
    assert _leftovers(out) == []


def test_the_largest_image_id_is_accepted(release_copy: Path, tmp_path: Path) -> None:
    """tree.MAX_IMAGE_ID itself (above 2**53, where floats lose integers) is an image id like
    any other, with its entries and its JPEG."""
    for kind, name in KIND_SOURCES.items():
        key = "id" if kind in ("regions", "qa") else "image_id"
        _edit_json(name, lambda entries, key=key: entries[-1].update({key: MAX_IMAGE_ID}))(
            release_copy)
    shutil.copy(release_copy / "VG_100K/2.jpg", release_copy / f"VG_100K/{MAX_IMAGE_ID}.jpg")
    out = tmp_path / "out"
    _build(release_copy, out)
    raw = release_entry_bytes(release_copy / "objects.json")
    with vgfs.open_dataset(out) as ds:
        assert list(ds.image_ids())[-2:] == [59, MAX_IMAGE_ID]
        assert ds.entry("meta", MAX_IMAGE_ID)["image_id"] == MAX_IMAGE_ID
        assert bytes(ds.entry_bytes("objects", MAX_IMAGE_ID)) == raw[MAX_IMAGE_ID]
        assert ds.jpeg(MAX_IMAGE_ID) == (RELEASE / "VG_100K/2.jpg").read_bytes()


# --- bad inputs: one sentence, non-zero exit, nothing left behind ------------------------


def _edit_json(name: str, change: Callable[[list], object]) -> Callable[[Path], None]:
    def edit(rel: Path) -> None:
        entries = json.loads((rel / name).read_bytes())
        change(entries)
        (rel / name).write_bytes(json.dumps(entries).encode())
    return edit


def _truncate(rel: Path) -> None:
    data = (rel / "objects.json").read_bytes()
    (rel / "objects.json").write_bytes(data[: len(data) // 2])


def _string_id(entries: list) -> None:
    entries[3]["image_id"] = "4"


def _list_entry(entries: list) -> None:
    entries[5] = [entries[5]]


def _list_item(entries: list) -> None:
    entries[5]["objects"][0] = [1, 2]


def _duplicate(entries: list) -> None:
    entries[7] = entries[6]


def _unreadable(rel: Path) -> None:
    """Reading /proc/self/mem at offset 0 fails with EIO: a real read error, even for root."""
    (rel / "objects.json").unlink()
    (rel / "objects.json").symlink_to("/proc/self/mem")


BAD_INPUTS = {
    # case: (break the release, file the message names, what else it must say)
    "truncated": (_truncate, "objects.json", ["malformed JSON", "byte"]),
    "string-id": (_edit_json("attributes.json", _string_id), "attributes.json",
                  ["entry 3 (after image 3)", "image_id='4'", "integer"]),
    "list-entry": (_edit_json("region_descriptions.json", _list_entry),
                   "region_descriptions.json", ["entry 5 (after image 5) is a list"]),
    "list-item": (_edit_json("objects.json", _list_item), "objects.json",
                  ["image 6", "list"]),
    "duplicate": (_edit_json("question_answers.json", _duplicate), "question_answers.json",
                  ["image id 7", "twice"]),
    "no-image-data": (lambda rel: (rel / "image_data.json").unlink(), "image_data.json",
                      ["no image_data.json"]),
    "unreadable": (_unreadable, "objects.json", ["Input/output error"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_sentence_and_leaves_nothing(case: str, release_copy: Path,
                                                      tmp_path: Path) -> None:
    """Each bad input stops `vgfs build` with a non-zero exit and one sentence naming the file
    and the problem, and leaves neither the output nor a temporary folder behind."""
    breaker, file, words = BAD_INPUTS[case]
    breaker(release_copy)
    out = tmp_path / "out"
    proc = _build(release_copy, out, check=False)
    assert proc.returncode != 0
    line = _error_line(proc.stderr)
    assert file in line, line
    for word in words:
        assert word in line, line
    assert _leftovers(out) == []


def test_full_device_is_reported_and_leaves_nothing(tmp_path: Path, release: Path,
                                                    real_dataset: Path) -> None:
    """A build onto a full device fails with 'no space left', whether LMDB or mksquashfs
    hits the limit, and leaves the device empty."""
    lmdb_bytes = (real_dataset / "annotations.lmdb" / "data.mdb").stat().st_blocks * 512
    sizes = {"annotations.lmdb": lmdb_bytes // 2, "images.sqfs": lmdb_bytes + (64 << 10)}
    for phase, size in sizes.items():
        small = tmp_path / f"small-{phase}"
        small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)],
                       check=True)
        try:
            proc = _build(release, small / "out", check=False)
            assert proc.returncode != 0, phase
            line = _error_line(proc.stderr)
            assert phase in line and "no space left" in line.lower(), line
            assert os.listdir(small) == [], phase
        finally:
            subprocess.run(["umount", str(small)], check=True)


# --- verify --------------------------------------------------------------------------------


def test_verify_passes_on_a_good_dataset(real_dataset: Path) -> None:
    """`vgfs verify` reads everything back and exits 0 on an intact dataset."""
    proc = run_vgfs("verify", str(real_dataset), "--quiet", timeout=120)
    assert "matches" in proc.stdout


def test_verify_catches_a_flipped_jpeg_byte(dataset_copy: Path) -> None:
    """One flipped bit inside a JPEG's extent in images.sqfs is caught and named."""
    with vgfs.open_dataset(dataset_copy) as ds:
        offset, size, _, path = ds.jpeg_index(4)[:4]
    assert path is None  # one contiguous run: the fast path
    flip_byte(dataset_copy / "images.sqfs", offset + size // 2)
    proc = run_vgfs("verify", str(dataset_copy), "--quiet", check=False, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    mismatches = [line for line in proc.stderr.splitlines() if line.startswith("mismatch:")]
    assert len(mismatches) == 1 and "image 4" in mismatches[0] and "JPEG" in mismatches[0], (
        proc.stderr)


def test_verify_catches_a_flipped_frame_byte(dataset_copy: Path) -> None:
    """One flipped bit inside a stored frame of the frames file is caught and named by file and
    frame (format 3 stores frames, not records); only the entries on that frame fail, the
    others still read."""
    with vgfs.open_dataset(dataset_copy) as ds:
        offset, length = ds.image(30).ranges[KINDS.index("regions")]
        frame = offset // FRAME
        on_frame = {i for i in IDS if frame in _frames_of(ds, "regions", i)}
    assert 30 in on_frame and len(on_frame) < len(IDS)
    damage_frame(dataset_copy, "region_descriptions.json", frame)
    proc = run_vgfs("verify", str(dataset_copy), "--quiet", check=False, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    mismatches = [line for line in proc.stderr.splitlines() if line.startswith("mismatch:")]
    assert len(mismatches) == 1, proc.stderr
    assert f"region_descriptions.json: frame {frame} is damaged" in mismatches[0], proc.stderr
    assert "vgfs: verify: 1 mismatches" in proc.stderr
    regions = entries_by_id(RELEASE / "region_descriptions.json")
    with vgfs.open_dataset(dataset_copy) as ds:
        for image_id in IDS:
            if image_id in on_frame:
                with pytest.raises(VGFSError, match="damaged"):
                    ds.entry("regions", image_id)
            else:
                assert ds.entry("regions", image_id) == regions[image_id], image_id


def _frames_of(ds: Dataset, kind: str, image_id: int) -> range:
    offset, length = ds.image(image_id).ranges[KINDS.index(kind)]
    return range(offset // FRAME, (offset + length - 1) // FRAME + 1)


# --- info and the format version -----------------------------------------------------------


def test_info_prints_version_counts_and_sources(real_dataset: Path) -> None:
    """`vgfs info` shows the format and tool version, the counts and every source's version."""
    out = run_vgfs("info", str(real_dataset)).stdout
    assert f"format       {FORMAT} (built by vgfs {vgfs.__version__}" in out
    assert ("60 (4 JPEGs, 56 without a JPEG; 0 JPEGs and 0 other files of the JPEG folders"
            " without annotations)") in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    m = json.loads((real_dataset / "manifest.json").read_bytes())
    for name, s in m["sources"].items():
        assert lines[name][1:3] == [s["version"], str(s["entries"])], name
    assert lines["objects.json"][1] == lines["relationships.json"][1] == "1.4"
    assert "images.sqfs" in out


def test_unknown_format_is_refused(dataset_copy: Path) -> None:
    """A manifest of another format version is refused, naming the found and supported ones."""
    manifest = dataset_copy / "manifest.json"
    m = json.loads(manifest.read_bytes())
    m["format"] = 99
    manifest.write_text(json.dumps(m))
    with pytest.raises(VGFSError) as e:
        vgfs.open_dataset(dataset_copy)
    assert "99" in str(e.value) and f"format {FORMAT}" in str(e.value)
    proc = run_vgfs("info", str(dataset_copy), check=False)
    assert proc.returncode != 0
    line = _error_line(proc.stderr)
    assert "manifest.json" in line and "99" in line and f"format {FORMAT}" in line, line
    assert "upgrade vgfs" in line, line


def test_format_2_dataset_says_rebuild(dataset_copy: Path, tmp_path: Path) -> None:
    """A dataset of format 2 (records per kind, whole files in chunks) is refused by the API,
    `info`, `verify` and `mount`, each saying to rebuild it."""
    manifest = dataset_copy / "manifest.json"
    m = json.loads(manifest.read_bytes())
    assert m["format"] == 3
    m["format"] = 2
    manifest.write_text(json.dumps(m))
    message = ("dataset format 2 is not supported; this vgfs reads format 3: rebuild it with"
               " `vgfs build`")
    with pytest.raises(VGFSError) as e:
        vgfs.open_dataset(dataset_copy)
    assert str(e.value) == f"{manifest}: {message}"
    for command in ("info", "verify"):
        proc = run_vgfs(command, str(dataset_copy), check=False, timeout=60)
        assert proc.returncode == 1, command
        assert _error_line(proc.stderr).endswith(message), proc.stderr
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        proc = run_vgfs("mount", str(dataset_copy), str(mountpoint), check=False, timeout=60)
        assert proc.returncode != 0
        assert message in proc.stderr, proc.stderr
        assert mounted_fs(mountpoint) is None
    finally:
        force_unmount(mountpoint)
