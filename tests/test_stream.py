"""Reading the release's files as they stream past (stream.py): each per-image file's entries
with the byte range that holds each of them, each file's version from its schema, and one
sentence naming the file and the real byte offset for bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import V12, image_id_of, write_v10_release
from vgfs.build import build
from vgfs.cache import LRUCache
from vgfs.contents import Contents
from vgfs.dataset import open_dataset
from vgfs.errors import VGFSError
from vgfs.release import READ_SIZE, Source, find_sources
from vgfs.schema import PER_IMAGE, WHOLE_FILES
from vgfs.stream import MAX_DEPTH, Entry, read_whole, stream_entries, stream_whole
from vgfs.tree import IMAGES, Tree

KIND_OF = {stem + ".json": kind for kind, (stem, _) in PER_IMAGE.items()}


def _stream(src: Source) -> list[Entry]:
    """All of a per-image file's entries, as the build streams them."""
    return list(stream_entries(src, KIND_OF[src.name]))


def _source(folder: Path, name: str, data: bytes) -> Source:
    """A release file written as given, found the way the build finds it."""
    folder.mkdir(exist_ok=True)
    if not (folder / "image_data.json").exists():  # without it, no release at all
        (folder / "image_data.json").write_bytes(b"[]")
    (folder / name).write_bytes(data)
    return find_sources(folder)[name]


def _assert_ranges_cut_the_file(raw: bytes, entries: list[Entry]) -> None:
    """Each entry's range is exactly its entry: it parses to the entry's value, starts with
    `{` and ends with `}`, and between the ranges there is nothing but the array's own
    brackets, commas and white space."""
    end = 0
    for i, e in enumerate(entries):
        piece = raw[e.offset:e.offset + e.length]
        assert piece[:1] == b"{" and piece[-1:] == b"}", i
        assert json.loads(piece) == e.value, i
        between = raw[end:e.offset].strip()
        assert between == (b"[" if i == 0 else b","), (i, between[:40])
        end = e.offset + e.length
    assert raw[end:].strip() == (b"]" if entries else b"[]")


# --- entries and their ranges ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KIND_OF))
def test_entries_stream_in_file_order_with_their_ranges(name: str, release: Path) -> None:
    """Each entry comes with its image id (`image_id`, or `id` in regions and QAs), its value
    and the range of the file that holds it; the sink gets every byte of the file in order;
    afterwards the source knows its entries, size and sha256."""
    raw = (release / name).read_bytes()
    expected = json.loads(raw)
    src = find_sources(release)[name]
    progress: list[int] = []
    sunk: list[bytes] = []
    got = list(stream_entries(src, KIND_OF[name], progress.append, sunk.append))
    assert [e.image_id for e in got] == [image_id_of(e) for e in expected]
    assert [e.value for e in got] == expected
    _assert_ranges_cut_the_file(raw, got)
    assert b"".join(sunk) == raw
    assert (src.entries, src.size, src.sha256) == (
        len(expected), len(raw), hashlib.sha256(raw).hexdigest())
    assert sum(progress) == len(raw)


def test_ranges_are_byte_offsets_in_non_ascii_text(tmp_path: Path) -> None:
    """Names with 2-, 3- and 4-byte UTF-8 characters before an entry: its offset counts
    bytes, not characters, and the range holds exactly the entry."""
    entries = [{"image_id": i, "objects": [{"names": ["caf\u00e9 \u4e2d\u6587 \U0001f600" * i]}]}
               for i in range(1, 30)]
    raw = json.dumps(entries, ensure_ascii=False, indent=1).encode()
    assert len(raw) > len(raw.decode()) + 1000
    got = _stream(_source(tmp_path / "rel", "objects.json", raw))
    assert [e.value for e in got] == entries
    _assert_ranges_cut_the_file(raw, got)


def test_entries_spanning_the_read_window(tmp_path: Path) -> None:
    """The file is read 1 MiB at a time: entries that start in one window and end in the
    next (or the one after), in indented non-ASCII JSON, still come with their exact range."""
    entries = [{"image_id": i, "objects": [{"object_id": j, "names": [f"\u00e9t\u00e9 {j}"],
                                            "synsets": ["summer.n.01"]}
                                           for j in range(8000 if i == 8 else 700 * (i % 3))]}
               for i in range(1, 16)]  # one entry larger than the window, some empty
    raw = json.dumps(entries, ensure_ascii=False, indent=2).encode()
    assert len(raw) > 2 * READ_SIZE
    got = _stream(_source(tmp_path / "rel", "objects.json", raw))
    assert [e.image_id for e in got] == list(range(1, 16))
    _assert_ranges_cut_the_file(raw, got)
    spanning = [e for e in got if e.offset // READ_SIZE != (e.offset + e.length) // READ_SIZE]
    assert len(spanning) >= 2
    assert any(e.length > READ_SIZE for e in got)


def test_a_lone_surrogate_escape_stays_as_released(tmp_path: Path, release: Path) -> None:
    """`"tr\\ud800ees"` is valid JSON grammar that decodes to a lone surrogate: the stream
    gives that value, and the range, the stored bytes and the mount's per-image file hold
    the release's 6-character escape itself, not a re-encoding of it."""
    rel = tmp_path / "release"
    rel.mkdir()
    for name in ("image_data.json", "scene_graphs.json"):
        shutil.copy(release / name, rel)
    raw = (release / "objects.json").read_bytes()
    assert raw.count(b'"trees"') > 1
    raw = raw.replace(b'"trees"', b'"tr\\ud800ees"', 1)
    (rel / "objects.json").write_bytes(raw)
    got = _stream(find_sources(rel)["objects.json"])
    first = got[0]
    assert first.value["objects"][0]["names"] == ["tr\ud800ees"]
    assert b'"tr\\ud800ees"' in raw[first.offset:first.offset + first.length]
    _assert_ranges_cut_the_file(raw, got)
    build(rel, tmp_path / "dataset", show_progress=False)
    with open_dataset(tmp_path / "dataset") as ds:
        stored = bytes(ds.entry_bytes("objects", 1))
        assert stored == raw[first.offset:first.offset + first.length]
        tree = Tree(ds)
        node = tree.lookup(tree.lookup(IMAGES, b"1").ino, b"objects.json")
        served = bytes(Contents(ds, LRUCache(1 << 20)).read(node, 0, node.size))
        assert served == stored and b'"tr\\ud800ees"' in served
        assert bytes(ds.file_range("objects.json", 0, len(raw))) == raw


# --- versions -------------------------------------------------------------------------------


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


# --- whole files ----------------------------------------------------------------------------


def test_whole_files_stream_as_released(release: Path) -> None:
    """synsets and aliases pass through unchanged; JSON ones count their top-level entries,
    alias files their lines (v1.4, where they first appeared)."""
    found = find_sources(release)
    for name in WHOLE_FILES:
        src, raw = found[name], (release / name).read_bytes()
        pieces: list[bytes] = []
        progress: list[int] = []
        stream_whole(src, pieces.append, progress.append)
        assert b"".join(pieces) == raw, name
        assert sum(progress) == len(raw)
        assert (src.size, src.sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
        if name.endswith(".txt"):
            assert (src.version, src.entries) == ("1.4", raw.count(b"\n"))
        elif name != "image_data.json":
            assert (src.version, src.entries) == ("1.2", len(json.loads(raw)))
    assert read_whole(find_sources(release)["object_alias.txt"]) == (
        release / "object_alias.txt").read_bytes()


def test_other_files_are_carried_unchecked(tmp_path: Path) -> None:
    """A file the release does not define (a site's .h5, a split file, an older objects.json
    in a folder) passes through byte for byte, whatever it holds: nothing parses it."""
    rel = tmp_path / "rel"
    (rel / "v1.2").mkdir(parents=True)
    (rel / "image_data.json").write_bytes(b"[]")
    blob = bytes(range(256)) * 5000  # not UTF-8, not JSON
    (rel / "VG-SGG-with-attri.h5").write_bytes(blob)
    (rel / "v1.2" / "objects.json").write_bytes(b'{"not": an array')
    found = find_sources(rel)
    for name, data in (("VG-SGG-with-attri.h5", blob), ("v1.2/objects.json",
                                                        b'{"not": an array')):
        pieces: list[bytes] = []
        stream_whole(found[name], pieces.append)
        assert b"".join(pieces) == data
        assert (found[name].size, found[name].entries, found[name].version) == (
            len(data), 0, "unknown")
        assert found[name].sha256 == hashlib.sha256(data).hexdigest()


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


def _at_end(o: list[dict]) -> str:
    return f"at byte {len(json.dumps(o)) - 2000}"


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
    # Cut in the middle of the last entry: the error is where the file ends.
    "truncated": (lambda o: json.dumps(o).encode()[:-2000], 9, None),
    "trailing-data": (lambda o: json.dumps(o).encode() + b" []", 10, None),
    "top-level-object": (lambda o: json.dumps({"entries": o}).encode(), 0,
                         "expected a JSON array at the top level, found '{'"),
    "empty-file": (lambda o: b"", 0, "found 'an empty file'"),
    "too-deep": (lambda o: json.dumps(o).encode()[:-1] + b", " + b"[" * (MAX_DEPTH + 10), None,
                 f"nested more than {MAX_DEPTH} levels deep"),
    "invalid-utf8": (lambda o: json.dumps(o, ensure_ascii=False).encode()[:-1]
                     + b', {"image_id": 99, "objects": [{"names": ["\xff"]}]}]', None,
                     "invalid UTF-8 at byte"),
}


@pytest.mark.parametrize("case", BAD_ENTRIES)
def test_bad_entries_stop_with_one_sentence_naming_the_file(case: str, objects: list,
                                                            tmp_path: Path) -> None:
    make, streamed, words = BAD_ENTRIES[case]
    data = make(objects)
    if case == "truncated":
        words = f"malformed JSON at byte {len(data)}: "
    elif case == "trailing-data":
        words = f"unexpected data after the top-level array, at byte {len(data) - 2}"
    src = _source(tmp_path / "rel", "objects.json", data)
    got: list[int] = []
    with pytest.raises(VGFSError) as exc:
        got.extend(e.image_id for e in stream_entries(src, "objects"))
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'rel' / 'objects.json'}: "), message
    assert words in message and "\n" not in message and "b'" not in message, message
    if streamed is not None:  # streamed: what came before the fault was handed on
        assert got == [image_id_of(e) for e in objects[:streamed]]


def test_malformed_json_reports_the_byte_of_the_error(tmp_path: Path) -> None:
    """Not how far the reader got (the whole file, in one 1 MiB read), but where the JSON
    goes wrong: `@@` at byte 130 is reported as byte 130, inside an entry or between two."""
    head = b'[{"image_id": 1, "objects": []}, {"image_id": 2, "objects": [{"names": ["'
    inside = head + b"x" * 50 + b'"]}]}, @@]'
    assert inside.index(b"@@") == 130
    between = head + b"x" * 51 + b'"]}]} @@]'
    assert between.index(b"@@") == 130
    for data, what in ((inside, "Expecting value"),
                       (between, "expected ',' or ']' after an entry")):
        src = _source(tmp_path / "rel", "objects.json", data + b" " * 5000)
        with pytest.raises(VGFSError, match=f"objects.json: malformed JSON at byte 130: {what}"):
            _stream(src)


def test_malformed_json_after_non_ascii_text_and_past_the_first_window(tmp_path: Path) -> None:
    """The offset counts bytes, not characters, and from the start of the file, not of the
    read window that holds the error."""
    entries = [{"image_id": i, "objects": [{"names": ["\u00e9\u4e2d\U0001f600" * 4000]}]}
               for i in range(1, 80)]
    raw = json.dumps(entries, ensure_ascii=False).encode()
    assert len(raw) > 2 * READ_SIZE
    cut = raw.rindex(b'{"image_id": 79')
    data = raw[:cut] + b'{"image_id": 79, "objects": [@]}]'
    src = _source(tmp_path / "rel", "objects.json", data)
    with pytest.raises(VGFSError, match=f"malformed JSON at byte {data.index(b'@')}:"
                                        " Expecting value"):
        _stream(src)
    small = '[{"image_id": 1, "objects": [{"names": ["\u00e9\u4e2d\U0001f600"]}]}, @]'.encode()
    with pytest.raises(VGFSError, match=f"malformed JSON at byte {small.index(b'@')}:"):
        _stream(_source(tmp_path / "rel", "objects.json", small))


def test_invalid_utf8_is_reported_near_its_byte(objects: list, tmp_path: Path) -> None:
    """At most one read window after the bad byte, never before it."""
    data = BAD_ENTRIES["invalid-utf8"][0](objects)
    src = _source(tmp_path / "rel", "objects.json", data)
    with pytest.raises(VGFSError, match=r"invalid UTF-8 at byte (\d+)") as exc:
        _stream(src)
    near = int(str(exc.value).rsplit(" ", 1)[1])
    assert data.index(b"\xff") <= near <= data.index(b"\xff") + READ_SIZE


def test_a_byte_order_mark_is_named(objects: list, tmp_path: Path) -> None:
    """Windows editors save JSON with a UTF-8 BOM, which JSON does not allow: the sentence
    says it is a BOM, not that something else was expected."""
    src = _source(tmp_path / "rel", "objects.json", b"\xef\xbb\xbf" + json.dumps(objects).encode())
    with pytest.raises(VGFSError, match=r"objects\.json: starts with a UTF-8 byte order mark"
                                        r" \(BOM\)"):
        _stream(src)


def test_duplicates_are_passed_on_for_the_store_to_refuse(objects: list,
                                                          tmp_path: Path) -> None:
    """The stream checks each entry alone; the build refuses an id seen twice when it stores
    it (test_build), so the stream hands both on, in order."""
    data = _broken(objects, 7, objects[6])
    ids = [e.image_id for e in _stream(_source(tmp_path / "rel", "objects.json", data))]
    assert ids == [1, 2, 3, 4, 5, 6, 7, 7, 9, 10]


def test_an_empty_array_has_no_entries(tmp_path: Path) -> None:
    for data in (b"[]", b"  [ \n ]\n"):
        src = _source(tmp_path / "rel", "objects.json", data)
        assert _stream(src) == [] and (src.entries, src.size) == (0, len(data))
