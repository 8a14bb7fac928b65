"""`vgfs build`, `verify` and `info`, for real: real LMDB, real mksquashfs, the real excerpts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

import vgfs
from tests.conftest import JPEGS, V12, VGFS, entries_by_id, flip_byte, mounted
from tests.conftest import vgfs as run_vgfs
from vgfs.errors import VGFSError
from vgfs.layout import FORMAT, WHOLE_CHUNK
from vgfs.schema import WHOLE_FILES

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


def _assert_entries_equal(dataset: Path, files: dict[str, Path]) -> None:
    """Every stored entry of each kind equals the source file's entry, and there are no others."""
    with vgfs.open_dataset(dataset) as ds:
        assert list(ds.image_ids()) == IDS
        for kind, path in files.items():
            source = entries_by_id(path)
            assert sorted(source) == IDS, path
            for image_id, entry in source.items():
                assert ds.entry(kind, image_id) == entry, (kind, image_id)
            assert ds.manifest["kinds"][kind]["entries"] == len(source)


def _assert_jpegs_equal(dataset: Path, release: Path) -> None:
    """The four real JPEGs come back byte for byte; the other images have none."""
    with vgfs.open_dataset(dataset) as ds:
        for image_id in IDS:
            if image_id in JPEGS:
                data = (release / JPEGS[image_id]).read_bytes()
                assert ds.jpeg(image_id) == data, image_id
                assert ds.jpeg_index(image_id)[2] == hashlib.sha256(data).digest()
            else:
                assert ds.jpeg(image_id) is None, image_id


def _build(release: Path, out: Path, *args: str, check: bool = True
           ) -> subprocess.CompletedProcess:
    """`vgfs build RELEASE -o OUT`, through the real command line."""
    return run_vgfs("build", str(release), "-o", str(out), "--quiet", *args, check=check,
                    timeout=120)


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


# --- the real release, stored as released --------------------------------------------------


def test_every_entry_equals_its_source(real_dataset: Path, release: Path) -> None:
    """Each of the seven per-image kinds holds exactly the release's entry for every image."""
    _assert_entries_equal(real_dataset, {k: release / n for k, n in KIND_SOURCES.items()})


def test_every_jpeg_is_byte_identical(real_dataset: Path, release: Path) -> None:
    """JPEGs from VG_100K and VG_100K_2 are stored byte for byte, indexed with their sha256."""
    _assert_jpegs_equal(real_dataset, release)


def test_whole_files_are_stored_as_released(real_dataset: Path, release: Path) -> None:
    """synsets, aliases, image_data.json etc. are served with the release's exact bytes."""
    with vgfs.open_dataset(real_dataset) as ds:
        assert set(ds.whole_files) == set(WHOLE_FILES)
        for name in WHOLE_FILES:
            assert bytes(ds.whole_file(name)) == (release / name).read_bytes(), name


def test_manifest_records_versions_sources_and_counts(real_dataset: Path, release: Path) -> None:
    """The manifest names format and tool, and each source's version, size, sha256, entries."""
    m = json.loads((real_dataset / "manifest.json").read_bytes())
    assert m["format"] == FORMAT == 2
    assert m["tool"] == f"vgfs {vgfs.__version__}"
    expected = set(KIND_SOURCES.values()) | set(WHOLE_FILES)
    assert set(m["sources"]) == expected
    for name in expected:
        data = (release / name).read_bytes()
        s = m["sources"][name]
        if name in ("objects.json", "relationships.json"):
            version = "1.4"
        elif name.endswith("_alias.txt"):
            version = "1.4"  # the alias files were first released with v1.4
        else:
            version = "1.2"
        entries = data.count(b"\n") if name.endswith(".txt") else len(json.loads(data))
        assert s == {"file": str(release / name), "version": version, "size": len(data),
                     "sha256": hashlib.sha256(data).hexdigest(), "entries": entries}, name
    assert m["counts"] == {"images": 60, "jpegs": 4, "images_without_jpeg": 56,
                           "jpegs_without_annotations": 0}
    for kind, k in m["kinds"].items():
        assert (k["source"], k["entries"], k["unknown_ids"], k["missing_images"]) == (
            KIND_SOURCES[kind], 60, 0, 0)
    assert m["images"]["path"] == "images.sqfs"
    assert m["images"]["jpegs"] == 4


def test_cli_build_reports_what_it_cannot_show(release_copy: Path, tmp_path: Path) -> None:
    """Entries for unknown ids, images without JPEG and JPEGs without annotations are counted
    in the manifest and reported on stderr, never dropped silently."""
    objects = json.loads((release_copy / "objects.json").read_bytes())
    objects.append({"image_id": 9999, "objects": []})
    (release_copy / "objects.json").write_bytes(json.dumps(objects).encode())
    shutil.copy(release_copy / "VG_100K" / "2.jpg", release_copy / "VG_100K" / "777.jpg")
    out = tmp_path / "out"
    proc = _build(release_copy, out)
    assert "Traceback" not in proc.stderr
    assert "objects.json" in proc.stderr and "9999" in proc.stderr
    assert "56 images" in proc.stderr and "777" in proc.stderr
    m = json.loads((out / "manifest.json").read_bytes())
    assert m["kinds"]["objects"]["unknown_ids"] == 1
    assert m["counts"] == {"images": 60, "jpegs": 5, "images_without_jpeg": 56,
                           "jpegs_without_annotations": 1}
    with vgfs.open_dataset(out) as ds:
        assert ds.entry("objects", 9999) == {"image_id": 9999, "objects": []}
        assert ds.jpeg(777) == (release_copy / "VG_100K" / "2.jpg").read_bytes()


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
    relationships.json (flat relationships); on the v1.2 data it equals the released graph."""
    (v12_release / "scene_graphs.json").unlink()
    out = tmp_path / "out"
    _build(v12_release, out)
    attributes = entries_by_id(release / "attributes.json")
    relationships = entries_by_id(V12 / "relationships.json")
    scene_graphs = entries_by_id(release / "scene_graphs.json")
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["kinds"]["graph"]["version"] == "composed"
        assert "scene_graphs.json" not in ds.manifest["sources"]
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


# --- zipped inputs -----------------------------------------------------------------------


def test_zipped_release_gives_the_same_dataset(release_copy: Path, tmp_path: Path,
                                               release: Path, real_dataset: Path) -> None:
    """NAME.json.zip files (member at the top or in a subfolder) and images.zip/images2.zip
    give the same entries, JPEG bytes, whole files and source checksums as the plain files."""
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
        for name in WHOLE_FILES:
            assert bytes(ds.whole_file(name)) == (release / name).read_bytes(), name
        for name, s in plain.manifest["sources"].items():
            z = ds.manifest["sources"][name]
            assert {k: z[k] for k in ("version", "size", "sha256", "entries")} == {
                k: s[k] for k in ("version", "size", "sha256", "entries")}, name
        assert ds.manifest["counts"] == plain.manifest["counts"]


def test_whole_file_of_several_chunks(release_copy: Path, tmp_path: Path) -> None:
    """A whole-dataset file bigger than a stored chunk reads back byte for byte, through the
    API and through a mount, also in reads that straddle chunk boundaries."""
    synsets = {f"word{i}.n.01": f"a gloss with a quote \" and unicode \u00e9 {i}"
               for i in range(60_000)}
    data = json.dumps(synsets).encode()
    assert len(data) > 2 * WHOLE_CHUNK + 1
    (release_copy / "synsets.json").write_bytes(data)
    out = tmp_path / "out"
    _build(release_copy, out)
    with vgfs.open_dataset(out) as ds:
        assert ds.whole_size("synsets.json") == len(data)
        assert bytes(ds.whole_file("synsets.json")) == data
        for off in (0, WHOLE_CHUNK - 3, 2 * WHOLE_CHUNK - 1, len(data) - 5, len(data)):
            assert bytes(ds.whole_range("synsets.json", off, 10)) == data[off:off + 10]
    with mounted(out, tmp_path / "mnt") as mp:
        assert (mp / "synsets.json").stat().st_size == len(data)
        assert (mp / "synsets.json").read_bytes() == data
        with open(mp / "synsets.json", "rb", buffering=0) as f:
            f.seek(WHOLE_CHUNK - 7)
            assert f.read(20) == data[WHOLE_CHUNK - 7:WHOLE_CHUNK + 13]


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
    "jpeg-name": (lambda rel: shutil.copy(rel / "VG_100K" / "2.jpg", rel / "VG_100K" / "abc.jpg"),
                  "VG_100K/abc.jpg", ["<image_id>.jpg"]),
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


def test_existing_output_needs_force(tmp_path: Path, release: Path) -> None:
    """An existing output folder is refused without --force and untouched; --force replaces
    it in one step and leaves no temporary or old folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    proc = _build(release, out, check=False)
    assert proc.returncode != 0
    line = _error_line(proc.stderr)
    assert str(out) in line and "--force" in line, line
    assert os.listdir(out) == ["keep"]
    _build(release, out, "--force")
    assert not (out / "keep").exists()
    assert _leftovers(out) == ["out"]
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["counts"]["images"] == 60


# --- interrupted builds --------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release of 3000 images: its build takes a few seconds, time to kill it."""
    from vgfs.sample import write_sample

    out = tmp_path_factory.mktemp("big") / "release"
    write_sample(out, images=3000, seed=0, jpeg="small", show_progress=False)
    return out


def _start_build(release: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """Start `vgfs build` and wait until its temporary folder holds a growing LMDB."""
    proc = subprocess.Popen([*VGFS, "build", str(release), "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tmp = out.parent / f".{out.name}.building-{proc.pid}"
    deadline = time.monotonic() + 30
    while not (tmp / "annotations.lmdb" / "data.mdb").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the build never started writing"
        time.sleep(0.02)
    time.sleep(0.5)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    return proc, tmp


def test_killed_build_leaves_no_dataset(big_release: Path, tmp_path: Path) -> None:
    """SIGKILL mid-build leaves no dataset (only a hidden temporary folder); the next build
    of the same output succeeds and removes that stale folder."""
    out = tmp_path / "out"
    proc, tmp = _start_build(big_release, out)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert _leftovers(out) == [tmp.name]
    _build(big_release, out)
    assert _leftovers(out) == ["out"]
    with vgfs.open_dataset(out) as ds:
        assert ds.manifest["counts"]["images"] == 3000


def test_terminated_build_cleans_up(big_release: Path, tmp_path: Path) -> None:
    """SIGTERM mid-build exits non-zero without a traceback and removes its temporary folder."""
    out = tmp_path / "out"
    proc, _ = _start_build(big_release, out)
    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr
    assert _leftovers(out) == []


# --- verify --------------------------------------------------------------------------------


@pytest.fixture
def dataset_copy(real_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of the session's dataset, to damage."""
    return Path(shutil.copytree(real_dataset, tmp_path / "dataset"))


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


def test_verify_catches_a_flipped_lmdb_byte(dataset_copy: Path) -> None:
    """One flipped bit inside a stored entry in data.mdb is caught and named by image and kind."""
    data_mdb = dataset_copy / "annotations.lmdb" / "data.mdb"
    with vgfs.open_dataset(dataset_copy) as ds:
        record = bytes(ds.record("regions", 30))
    raw = data_mdb.read_bytes()
    middle = len(record) // 2
    needle = record[middle: middle + 48]
    assert raw.count(needle) == 1, "pick a substring stored once"
    flip_byte(data_mdb, raw.index(needle) + 24)
    proc = run_vgfs("verify", str(dataset_copy), "--quiet", check=False, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "image 30: regions record does not match its checksum" in proc.stderr, proc.stderr
    assert "vgfs: verify: " in proc.stderr


# --- info and the format version -----------------------------------------------------------


def test_info_prints_version_counts_and_sources(real_dataset: Path) -> None:
    """`vgfs info` shows the format and tool version, the counts and every source's version."""
    out = run_vgfs("info", str(real_dataset)).stdout
    assert f"format       {FORMAT} (built by vgfs {vgfs.__version__}" in out
    assert "60 (4 JPEGs, 56 without a JPEG, 0 JPEGs without annotations)" in out
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


def test_older_format_says_rebuild(dataset_copy: Path) -> None:
    """A dataset from an older vgfs (format 1 stored whole files unchunked) says to rebuild."""
    manifest = dataset_copy / "manifest.json"
    m = json.loads(manifest.read_bytes())
    m["format"] = FORMAT - 1
    manifest.write_text(json.dumps(m))
    with pytest.raises(VGFSError, match="rebuild it with `vgfs build`"):
        vgfs.open_dataset(dataset_copy)
