"""Reading the official files without building: finding them plain or zipped, streaming their
entries, detecting each file's version, and one sentence naming the file for bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import orjson
import pytest

from tests.conftest import V12, image_id_of, write_v10_release
from vgfs.errors import VGFSError
from vgfs.release import MAX_DEPTH, Source, find_sources, read_whole, stream_entries, stream_whole
from vgfs.schema import PER_IMAGE, WHOLE_FILES

KIND_OF = {stem + ".json": kind for kind, (stem, _) in PER_IMAGE.items()}
ALL_FILES = set(KIND_OF) | set(WHOLE_FILES)


def _stream(src: Source) -> list[tuple[int, dict, bytes]]:
    """All of a per-image file's entries, as the build streams them."""
    return list(stream_entries(src, KIND_OF[src.name]))


def _source(folder: Path, name: str, data: bytes) -> Source:
    """A release file written as given, found the way the build finds it."""
    folder.mkdir(exist_ok=True)
    if not (folder / "image_data.json").exists():  # without it, no release at all
        (folder / "image_data.json").write_bytes(b"[]")
    (folder / name).write_bytes(data)
    return find_sources(folder)[name]


# --- finding the files ----------------------------------------------------------------------


def test_finds_every_plain_release_file(release: Path) -> None:
    found = find_sources(release)
    assert set(found) == ALL_FILES
    for name, src in found.items():
        assert (src.name, src.path, src.member) == (name, release / name, None)
        assert src.label == str(release / name)
        assert src.size_hint() == (release / name).stat().st_size
        assert src.version == "unknown" and src.entries == 0  # nothing read yet


def test_finds_zipped_files_wherever_the_member_sits(release: Path, tmp_path: Path) -> None:
    """NAME.zip with NAME at the top or in a folder; a plain file wins over its zip; the
    stream of a zip member is the plain file's, entry for entry, byte for byte."""
    rel = tmp_path / "rel"
    rel.mkdir()
    for name, member in (("image_data.json", "image_data.json"),
                         ("objects.json", "vg/1.4/objects.json")):
        with zipfile.ZipFile(rel / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(release / name, member)
    shutil.copy(release / "synsets.json", rel)
    with zipfile.ZipFile(rel / "synsets.json.zip", "w") as zf:
        zf.writestr("synsets.json", b"{}")
    found = find_sources(rel)
    assert set(found) == {"image_data.json", "objects.json", "synsets.json"}
    assert found["objects.json"].member == "vg/1.4/objects.json"
    assert found["objects.json"].label == f"{rel / 'objects.json.zip'}:vg/1.4/objects.json"
    assert found["objects.json"].size_hint() == (release / "objects.json").stat().st_size
    assert found["synsets.json"].member is None
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


# --- streaming entries ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KIND_OF))
def test_entries_stream_in_file_order_as_released(name: str, release: Path) -> None:
    """Each entry comes with its image id (`image_id`, or `id` in regions and QAs) and its
    compact JSON; afterwards the source knows its entries, size and sha256."""
    raw = (release / name).read_bytes()
    expected = json.loads(raw)
    src = find_sources(release)[name]
    progress: list[int] = []
    got = list(stream_entries(src, KIND_OF[name], progress.append))
    assert [image_id for image_id, _, _ in got] == [image_id_of(e) for e in expected]
    assert [entry for _, entry, _ in got] == expected
    assert all(orjson.loads(data) == entry and b"\n" not in data for _, entry, data in got)
    assert (src.entries, src.size, src.sha256) == (
        len(expected), len(raw), hashlib.sha256(raw).hexdigest())
    assert sum(progress) == len(raw)


@pytest.fixture(scope="module")
def v10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The excerpts rewritten with v1.0 keys."""
    return write_v10_release(tmp_path_factory.mktemp("v10"))


def _versions(folder: Path, names: list[str] | None = None) -> dict[str, str]:
    """The version detected for each per-image file of a folder, once it has streamed."""
    found = find_sources(folder)
    out = {}
    for name in names or sorted(set(found) & set(KIND_OF)):
        _stream(found[name])
        out[name] = found[name].version
    return out


def test_each_file_gets_its_own_version(release: Path, tmp_path: Path, v10: Path) -> None:
    """The release mixes versions: v1.4 objects and relationships (merged ids), v1.2 for the
    rest; the v1.2 files have no merged ids; v1.0 uses `id` for images and items."""
    assert _versions(release) == {
        "image_data.json": "1.2", "objects.json": "1.4", "attributes.json": "1.2",
        "relationships.json": "1.4", "scene_graphs.json": "1.2",
        "region_descriptions.json": "1.2", "question_answers.json": "1.2"}
    v12 = tmp_path / "v1.2"
    v12.mkdir()
    for path in (release / "image_data.json", V12 / "objects.json", V12 / "relationships.json"):
        shutil.copy(path, v12)
    assert _versions(v12, ["objects.json", "relationships.json"]) == {
        "objects.json": "1.2", "relationships.json": "1.2"}
    assert _versions(v10) == {name: "1.0" for name in (
        "image_data.json", "objects.json", "attributes.json", "relationships.json",
        "region_descriptions.json")}


def test_whole_files_stream_as_released(release: Path) -> None:
    """synsets and aliases pass through unchanged; JSON ones count their top-level entries,
    alias files their lines (v1.4, where they first appeared)."""
    found = find_sources(release)
    for name in WHOLE_FILES:
        src, raw = found[name], (release / name).read_bytes()
        pieces: list[bytes] = []
        stream_whole(src, pieces.append)
        assert b"".join(pieces) == raw, name
        assert (src.size, src.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
        if name.endswith(".txt"):
            assert (src.version, src.entries) == ("1.4", raw.count(b"\n"))
        elif name != "image_data.json":
            assert (src.version, src.entries) == ("1.2", len(json.loads(raw)))
    assert read_whole(find_sources(release)["object_alias.txt"]) == (
        release / "object_alias.txt").read_bytes()


def test_bad_whole_files_name_the_file(release: Path, tmp_path: Path) -> None:
    shutil.copy(release / "image_data.json", tmp_path)
    (tmp_path / "synsets.json").write_bytes(b'{"dog.n.01": "a dog", ')
    (tmp_path / "object_alias.txt").write_bytes(b"dog,doggy\n\xff\xfe\n")
    found = find_sources(tmp_path)
    with pytest.raises(VGFSError, match=r"synsets\.json: malformed JSON near byte"):
        stream_whole(found["synsets.json"], lambda _: None)
    with pytest.raises(VGFSError, match=r"object_alias\.txt: invalid UTF-8"):
        read_whole(found["object_alias.txt"])


# --- bad entries: the file named, the entries before it streamed ----------------------------


@pytest.fixture(scope="module")
def objects(release: Path) -> list[dict]:
    """The first ten real objects.json entries, to break in one place each."""
    return json.loads((release / "objects.json").read_bytes())[:10]


def _broken(entries: list[dict], i: int, value: object) -> bytes:
    """The entries as a file, with entry `i` replaced by `value`."""
    entries = list(entries)
    entries[i] = value
    return json.dumps(entries).encode()


def _dict(entries: list[dict], i: int, /, **change: object) -> bytes:
    """The entries as a file, with keys of entry `i` changed."""
    return _broken(entries, i, {**entries[i], **change})


BAD_ENTRIES = {
    # case: (the file's bytes from the real entries, entries streamed first, the message)
    "entry-is-a-list": (lambda o: _broken(o, 5, [o[5]]), 5,
                        "entry 5 (after image 5) is a list, expected an object"),
    "first-entry-a-string": (lambda o: _broken(o, 0, "1"), 0,
                             "entry 0 is a str, expected an object"),
    "string-id": (lambda o: _dict(o, 3, image_id="4"), 3,
                  "entry 3 (after image 3) has image_id='4', expected a non-negative integer"),
    "negative-id": (lambda o: _dict(o, 2, image_id=-3), 2, "has image_id=-3"),
    "boolean-id": (lambda o: _dict(o, 2, image_id=True), 2, "has image_id=True"),
    "float-id": (lambda o: _dict(o, 2, image_id=3.5), 2, "has image_id=3.5"),
    "no-id": (lambda o: _broken(o, 4, {"objects": []}), 4, "entry 4 (after image 4) has id=None"),
    "list-is-a-dict": (lambda o: _dict(o, 6, objects={}), 6,
                       "image 7: 'objects' is dict, expected a list"),
    "list-missing": (lambda o: _broken(o, 6, {"image_id": 7}), 6,
                     "image 7: 'objects' is NoneType, expected a list"),
    "item-is-a-list": (lambda o: _dict(o, 1, objects=[o[1]["objects"][0], [1, 2]]), 1,
                       "image 2: an item of 'objects' is a list, expected an object"),
    "truncated": (lambda o: json.dumps(o).encode()[:-2000], None, "parse error"),
    "trailing-data": (lambda o: json.dumps(o).encode() + b" []", 10,
                      "parse error: trailing garbage"),
    "top-level-object": (lambda o: json.dumps({"entries": o}).encode(), 0,
                         "expected a JSON array at the top level, found '{'"),
    "empty-file": (lambda o: b"", 0, "found 'an empty file'"),
    "too-deep": (lambda o: json.dumps(o).encode()[:-1] + b", " + b"[" * (MAX_DEPTH + 10), None,
                 f"nested more than {MAX_DEPTH} levels deep"),
    "invalid-utf8": (lambda o: json.dumps(o, ensure_ascii=False).encode()[:-1]
                     + b', {"image_id": 99, "objects": [{"names": ["\xff"]}]}]', 10,
                     "lexical error: invalid bytes in UTF8 string."),
}


@pytest.mark.parametrize("case", BAD_ENTRIES)
def test_bad_entries_stop_with_one_sentence_naming_the_file(case: str, objects: list,
                                                            tmp_path: Path) -> None:
    make, streamed, words = BAD_ENTRIES[case]
    src = _source(tmp_path / "rel", "objects.json", make(objects))
    got: list[int] = []
    with pytest.raises(VGFSError) as exc:
        got.extend(image_id for image_id, _, _ in stream_entries(src, "objects"))
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'rel' / 'objects.json'}: "), message
    assert words in message and "\n" not in message and "b'" not in message, message
    if case in ("truncated", "trailing-data", "invalid-utf8"):
        assert "malformed JSON near byte" in message
    if streamed is not None:  # streamed: what came before the fault was handed on
        assert got == [image_id_of(e) for e in objects[:streamed]]


def test_duplicates_are_passed_on_for_the_store_to_refuse(objects: list,
                                                          tmp_path: Path) -> None:
    """The stream checks each entry alone; the build refuses an id seen twice when it stores
    it (test_build), so the stream hands both on, in order."""
    data = _broken(objects, 7, objects[6])
    ids = [image_id for image_id, _, _ in _stream(_source(tmp_path / "rel", "objects.json",
                                                          data))]
    assert ids == [1, 2, 3, 4, 5, 6, 7, 7, 9, 10]
