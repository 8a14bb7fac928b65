"""Finding the release's files without building: every file of the release folder by its
relative path, plain or zipped, and its JPEGs (folders wherever they sit, zips, a SquashFS
image), with one sentence naming the file for bad input. Reading them is test_stream's."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.test_stream import _stream
from vgfs.errors import VGFSError
from vgfs.release import (
    MAX_ZIP_RATIO,
    find_images,
    find_sources,
    folder_files,
    part_of,
    zip_files,
)
from vgfs.schema import PER_IMAGE, WHOLE_FILES

KIND_FILES = {stem + ".json" for stem, _ in PER_IMAGE.values()}
JPEG_FILES = {"VG_100K/2.jpg", "VG_100K/4.jpg", "VG_100K/5.jpg", "VG_100K_2/1.jpg"}


def _files_under(folder: Path) -> set[str]:
    return {Path(root, name).relative_to(folder).as_posix()
            for root, _, names in os.walk(folder) for name in names}


# --- finding the files ----------------------------------------------------------------------


def test_finds_every_file_of_the_release_folder(release: Path) -> None:
    """Every file, the readme and the JPEG folders' too when nothing is skipped; each named
    by its relative path, not yet read."""
    found = find_sources(release)
    assert set(found) == _files_under(release)
    assert set(found) == KIND_FILES | set(WHOLE_FILES) | JPEG_FILES | {"readme_v1_4.txt"}
    assert list(found) == sorted(found)
    for name, src in found.items():
        assert (src.name, src.path, src.member) == (name, release / name, None)
        assert src.label == str(release / name)
        assert src.size_hint() == (release / name).stat().st_size
        assert src.version == "unknown" and src.entries == 0  # nothing read yet


def test_skipped_folders_and_files_are_left_out(release: Path) -> None:
    """The build skips the JPEG sources it found: what remains is what the mount carries."""
    skip = {release / "VG_100K", release / "VG_100K_2"}
    found = find_sources(release, skip)
    assert set(found) == KIND_FILES | set(WHOLE_FILES) | {"readme_v1_4.txt"}
    assert set(find_sources(release, {release / "synsets.json"})) == (
        _files_under(release) - {"synsets.json"})


def test_nested_folders_are_found_by_their_relative_path(release_copy: Path) -> None:
    """A site keeps more than the release: older versions in a folder, split files, an .h5.
    Each is found at its own path; only the top-level files are the release's kinds."""
    (release_copy / "v1.2").mkdir()
    shutil.copy(release_copy / "objects.json", release_copy / "v1.2" / "objects.json")
    (release_copy / "splits" / "sgg").mkdir(parents=True)
    (release_copy / "splits" / "sgg" / "train.txt").write_text("1\n2\n")
    (release_copy / "VG-SGG-with-attri.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    found = find_sources(release_copy, {release_copy / "VG_100K", release_copy / "VG_100K_2"})
    for rel in ("v1.2/objects.json", "splits/sgg/train.txt", "VG-SGG-with-attri.h5"):
        assert found[rel].path == release_copy / rel and found[rel].name == rel
    assert found["objects.json"].path == release_copy / "objects.json"


def test_finds_zipped_files_wherever_the_member_sits(release: Path, tmp_path: Path) -> None:
    """NAME.zip with NAME at the top or in a folder of the zip, also in a folder of the
    release; the stream of a zip member is the plain file's, entry for entry, byte for byte.
    A zip beside its plain file is a file of its own: both are carried."""
    rel = tmp_path / "rel"
    (rel / "extra").mkdir(parents=True)
    for name, member in (("image_data.json", "image_data.json"),
                         ("objects.json", "vg/1.4/objects.json")):
        with zipfile.ZipFile(rel / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(release / name, member)
    with zipfile.ZipFile(rel / "extra" / "synsets.json.zip", "w") as zf:
        zf.write(release / "synsets.json", "synsets.json")
    shutil.copy(release / "synsets.json", rel)
    with zipfile.ZipFile(rel / "synsets.json.zip", "w") as zf:
        zf.writestr("synsets.json", b"{}")
    found = find_sources(rel)
    assert set(found) == {"image_data.json", "objects.json", "synsets.json",
                          "synsets.json.zip", "extra/synsets.json"}
    assert found["objects.json"].member == "vg/1.4/objects.json"
    assert found["objects.json"].label == f"{rel / 'objects.json.zip'}:vg/1.4/objects.json"
    assert found["objects.json"].size_hint() == (release / "objects.json").stat().st_size
    assert found["synsets.json"].member is None
    assert found["synsets.json.zip"].member is None  # carried as the zip it is
    assert found["extra/synsets.json"].member == "synsets.json"
    plain = find_sources(release)
    for name in ("image_data.json", "objects.json"):
        zipped, direct = found[name], plain[name]
        assert _stream(zipped) == _stream(direct)
        assert (zipped.version, zipped.entries, zipped.size, zipped.sha256) == (
            direct.version, direct.entries, direct.size, direct.sha256)


def test_release_folder_problems_are_one_sentence(release: Path, tmp_path: Path) -> None:
    with pytest.raises(VGFSError, match="release folder not found"):
        find_sources(tmp_path / "nowhere")
    shutil.copy(release / "objects.json", tmp_path)
    with pytest.raises(VGFSError, match="no image_data.json"):
        find_sources(tmp_path)
    with zipfile.ZipFile(tmp_path / "image_data.json.zip", "w") as zf:
        zf.writestr("a/image_data.json", b"[]")
        zf.writestr("b/image_data.json", b"[]")
    with pytest.raises(VGFSError, match=r"image_data\.json\.zip: expected one member named"
                                        r" image_data\.json, found 2"):
        find_sources(tmp_path)
    (tmp_path / "image_data.json.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(VGFSError, match=r"image_data\.json\.zip: not a readable zip file"):
        find_sources(tmp_path)


def test_a_zip_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "image_data.json.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("image_data.json", b"[" + b" " * (4 << 20) + b"]")
    src = find_sources(tmp_path)["image_data.json"]
    with pytest.raises(VGFSError, match=r"image_data\.json\.zip:image_data\.json: expands"
                                        r" \d+ times .* zip bomb"):
        _stream(src)


# --- the JPEGs ------------------------------------------------------------------------------


def test_finds_the_jpeg_folders_of_the_release(release: Path) -> None:
    found = find_images(release, [])
    assert found.folders == [release / "VG_100K", release / "VG_100K_2"]
    assert (found.zips, found.sqfs) == ([], None)


def test_finds_jpeg_folders_wherever_they_sit(tmp_path: Path) -> None:
    """VG_100K and VG_100K_2 at the top or up to two folders down, DenseCap's flat `images`
    folder, the two official zips, or an image beside the JSON files; nothing deeper, and
    nothing inside a JPEG folder."""
    rel = tmp_path / "rel"
    for folder in ("VG_100K", "data/VG_100K_2", "a/b/images", "a/b/c/VG_100K",
                   "VG_100K/VG_100K_2", "other"):
        (rel / folder).mkdir(parents=True)
    for name in ("images.zip", "images2.zip", "other.zip"):
        (rel / name).write_bytes(b"")
    found = find_images(rel, [])
    assert found.folders == [rel / "VG_100K", rel / "a/b/images", rel / "data/VG_100K_2"]
    assert (found.zips, found.sqfs) == ([rel / "images.zip", rel / "images2.zip"], None)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "vg.sqfs").write_bytes(b"")
    assert find_images(alone, []).sqfs == alone / "vg.sqfs"


def test_given_image_paths_replace_the_release_s_own(release: Path, tmp_path: Path) -> None:
    (tmp_path / "jpegs").mkdir()
    (tmp_path / "a.zip").write_bytes(b"")
    found = find_images(release, [tmp_path / "jpegs", tmp_path / "a.zip"])
    assert (found.folders, found.zips, found.sqfs) == ([tmp_path / "jpegs"],
                                                       [tmp_path / "a.zip"], None)
    for name in ("one.sqfs", "two.img"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(VGFSError, match=r"two\.img: only one existing SquashFS image"):
        find_images(release, [tmp_path / "one.sqfs", tmp_path / "two.img"])
    with pytest.raises(VGFSError, match=r"one\.sqfs: an existing SquashFS image cannot be"
                                        " combined"):
        find_images(release, [tmp_path / "jpegs", tmp_path / "one.sqfs"])
    with pytest.raises(VGFSError, match=r"nowhere: not an image folder, zip or SquashFS"):
        find_images(release, [tmp_path / "nowhere"])


def test_part_of_a_folder() -> None:
    """Only VG_100K_2 is the second part; every other JPEG folder shows in VG_100K."""
    assert part_of("VG_100K_2") == "VG_100K_2"
    for folder in ("VG_100K", "images", "jpegs", "", "vg_100k_2"):
        assert part_of(folder) == "VG_100K"


def test_folder_files_lists_files_and_what_cannot_be_served(tmp_path: Path) -> None:
    """Files by name, strays included (the build sorts them out); folders and symbolic
    links inside are set apart, to be reported."""
    folder = tmp_path / "VG_100K"
    (folder / "sub").mkdir(parents=True)
    for name in ("2.jpg", "10.jpg", "Thumbs.db", "n166008.jpg"):
        (folder / name).write_bytes(b"x")
    (folder / "link.jpg").symlink_to(folder / "2.jpg")
    files, skipped = folder_files(folder)
    assert files == ["10.jpg", "2.jpg", "Thumbs.db", "n166008.jpg"]
    assert skipped == [str(folder / "link.jpg"), str(folder / "sub")]


def test_zip_files_gives_each_file_with_its_part(tmp_path: Path) -> None:
    """(part, name, member) for every file under any folder of the zip; the part is that of
    the member's folder; folders and macOS's resource forks are passed over."""
    zpath = tmp_path / "images.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("VG_100K/", b"")
        zf.writestr("VG_100K/2.jpg", b"a")
        zf.writestr("vg/VG_100K_2/1.jpg", b"b")
        zf.writestr("3.jpg", b"c")
        zf.writestr("VG_100K/Thumbs.db", b"d")
        zf.writestr("__MACOSX/VG_100K/._2.jpg", b"e")
    assert list(zip_files(zpath)) == [
        ("VG_100K", "2.jpg", "VG_100K/2.jpg"), ("VG_100K_2", "1.jpg", "vg/VG_100K_2/1.jpg"),
        ("VG_100K", "3.jpg", "3.jpg"), ("VG_100K", "Thumbs.db", "VG_100K/Thumbs.db")]


def test_bad_image_zips_are_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "images.zip"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(VGFSError, match=r"images\.zip: not a readable zip file"):
        list(zip_files(bad))
    bomb = tmp_path / "images2.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("VG_100K_2/1.jpg", bytes(MAX_ZIP_RATIO * 4096))
    with pytest.raises(VGFSError, match=r"images2\.zip:VG_100K_2/1\.jpg: expands \d+ times"):
        list(zip_files(bomb))
