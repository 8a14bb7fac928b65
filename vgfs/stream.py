"""Read the release's files as they stream past: each per-image file's entries with their byte
ranges, checked (an array of objects with integer image ids and the kind's lists) and versioned
from their schema; the files the release defines checked for well-formed JSON or text. Memory
stays bounded whatever the release size: nothing here holds a whole file.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

import ijson

from vgfs.errors import VGFSError
from vgfs.release import READ_SIZE, Source
from vgfs.schema import PER_IMAGE, WHOLE_FILES

MAX_DEPTH = 256  # real entries nest about 5 deep
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_KEEP = bytes(c for c in range(256) if c not in b'"[]{}')  # translate() deletes the rest
_STRING = re.compile(rb'"[^"]*"')
_PAIR = re.compile(rb"[\[{][\]}]")


class TooDeep(ValueError):
    """The JSON nests deeper than MAX_DEPTH: ijson's memory grows with the square of the depth,
    so such input is refused before the parser sees it."""


class _DepthGuard:
    """Tracks the nesting depth of a JSON byte stream chunk by chunk, at C speed: escapes are
    dropped, then all but quotes and brackets, then strings, then matched bracket pairs one
    level per pass."""

    def __init__(self) -> None:
        self.depth, self.in_string, self.escape = 0, False, False

    def feed(self, chunk: bytes) -> None:
        if self.escape:  # the previous chunk ended in the middle of an escape
            chunk, self.escape = chunk[1:], False
        chunk = _ESCAPE.sub(b"", chunk)
        if chunk.endswith(b"\\"):
            chunk, self.escape = chunk[:-1], True
        text = chunk.translate(None, _KEEP)
        text = b'"' + text if self.in_string else text
        # Adjacent quotes are an empty string or two strings with nothing between: dropping
        # them first leaves the regex only the few strings that hold brackets.
        text = _STRING.sub(b"", text.replace(b'""', b""))
        quote = text.find(b'"')
        self.in_string = quote >= 0
        if self.in_string:
            text = text[:quote]
        for _ in range(MAX_DEPTH):
            text, n = _PAIR.subn(b"", text)
            if not n:
                break
        else:
            raise TooDeep
        closes = len(text) - len(text.lstrip(b"]}"))
        self.depth += len(text) - 2 * closes
        if self.depth > MAX_DEPTH:
            raise TooDeep


class _CountingReader(io.RawIOBase):
    """Counts and hashes the bytes handed to the parser, so errors can name a byte offset."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], object] | None = None,
                 guard: _DepthGuard | None = None,
                 sink: Callable[[bytes], object] | None = None) -> None:
        self.raw, self.offset, self.on_read, self.guard = raw, 0, on_read, guard
        self.sink = sink  # also gets every byte, in order
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def raw_read(self, n: int) -> bytes:
        """Up to n bytes, counted, hashed and passed on like those of readinto."""
        data = self.raw.read(n)
        self._took(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        self._took(data)
        b[: len(data)] = data
        return len(data)

    def _took(self, data: bytes) -> None:
        self.offset += len(data)  # first: an error in the guard is then placed in this chunk
        if self.guard is not None:
            self.guard.feed(data)
        self.hash.update(data)
        if self.sink:
            self.sink(data)
        if self.on_read:
            self.on_read(len(data))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry_id(src: Source, entry: object, index: int, prev: int | None = None) -> int:
    where = f"entry {index}" if prev is None else f"entry {index} (after image {prev})"
    if not isinstance(entry, dict):
        raise VGFSError(f"{src.label}: {where} is a {type(entry).__name__}, expected an"
                        " object")
    key = "image_id" if "image_id" in entry else "id"
    image_id = entry.get(key)
    if not _is_int(image_id) or image_id < 0:
        raise VGFSError(f"{src.label}: {where} has {key}={image_id!r}, expected a"
                        " non-negative integer image id")
    if key == "id":
        src._features.add("image_key_id")
    return image_id


def _check_lists(src: Source, entry: dict, image_id: int, list_keys: tuple[str, ...],
                 sample: bool) -> None:
    for key in list_keys:
        items = entry.get(key)
        if not isinstance(items, list):
            raise VGFSError(f"{src.label}: image {image_id}: {key!r} is"
                            f" {type(items).__name__}, expected a list")
        kinds = set(map(type, items))  # C speed: this runs for millions of items
        if not kinds <= _DICT:
            bad = next(iter(kinds - _DICT))
            raise VGFSError(f"{src.label}: image {image_id}: an item of {key!r} is a"
                            f" {bad.__name__}, expected an object")
        if sample:
            for item in items:
                _note_item(src, item)


_DICT = {dict}
# Versions differ in their schema from the first entries on; the features are noted there only.
VERSION_SAMPLE = 2000


def _note_item(src: Source, item: dict) -> None:
    """Record the schema features that tell the versions apart (DESIGN §2.4)."""
    f = src._features
    if "merged_object_ids" in item:
        f.add("merged")
    for end in ("subject", "object"):
        endpoint = item.get(end)
        if isinstance(endpoint, dict) and ("names" in endpoint or "merged_object_ids" in endpoint):
            f.add("merged")
    if "id" in item and not any(k in item for k in ("object_id", "relationship_id", "region_id",
                                                    "qa_id")):
        f.add("item_key_id")


def _version(src: Source) -> str:
    f = src._features
    if src.name == "question_answers.json":
        return "1.2"
    if src.name == "scene_graphs.json":
        return "1.2"
    if src.name == "region_descriptions.json":
        return "1.0" if "item_key_id" in f else "1.2"
    if src.name == "image_data.json":
        return "1.0" if "image_key_id" in f else "1.2"
    if "image_key_id" in f or "item_key_id" in f:
        return "1.0"
    if "merged" in f and src.name in ("objects.json", "relationships.json"):
        return "1.4"
    return "1.2"


class Entry(NamedTuple):
    """One entry of a per-image file, and where its bytes sit in the file."""

    image_id: int
    value: dict[str, Any]
    offset: int
    length: int


_SPACE = re.compile(r"[ \t\n\r]*")
# Python's own decoder: its raw_decode says where each entry ends, which neither ijson nor
# orjson tells, and at about 55 MB/s it parses twice as fast as ijson's C backend.
_DECODER = json.JSONDecoder()


class _ArrayScanner:
    """The elements of a top-level JSON array, each with its byte offset and length, decoded
    from a sliding window of text so that memory stays bounded."""

    def __init__(self, src: Source, reader: _CountingReader) -> None:
        self.src, self.reader = src, reader
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos = "", 0  # the window, and the scan position in it
        self.base = 0  # byte offset of text[0]
        self.ascii = True  # the window is ASCII: character offsets are byte offsets
        self.mark = (0, 0)  # a (character, byte) offset pair in the window, to count from
        self.eof = False

    def byte_offset(self, pos: int) -> int:
        """The byte offset in the file of the window's character `pos`."""
        if self.ascii:
            return self.base + pos
        at, byte = self.mark if pos >= self.mark[0] else (0, 0)
        byte += len(self.text[at:pos].encode("utf-8", "surrogatepass"))
        self.mark = (pos, byte)
        return self.base + byte

    def _fill(self) -> bool:
        """Read more into the window, dropping what was scanned; False at the end."""
        if self.eof:
            return False
        chunk = self.reader.raw_read(READ_SIZE)
        self.eof = not chunk
        self.base = self.byte_offset(self.pos)
        try:
            text = self.utf8.decode(chunk, final=self.eof)
        except UnicodeDecodeError as e:  # e.start counts from the chunk (less what is pending)
            at = self.reader.offset - len(chunk) + max(e.start, 0)
            raise VGFSError(f"{self.src.label}: invalid UTF-8 at byte {at}") from None
        self.text = self.text[self.pos:] + text
        self.pos, self.mark = 0, (0, 0)
        self.ascii = self.text.isascii()
        return True

    def _skip_space(self) -> str:
        """The next character that is not white space ('' at the end of the input)."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._fill():
                return ""

    def _malformed(self, pos: int, what: str) -> VGFSError:
        return VGFSError(f"{self.src.label}: malformed JSON at byte {self.byte_offset(pos)}:"
                         f" {what}")

    def _value(self) -> tuple[Any, int, int]:
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                if self._fill():  # the entry may go on past the window
                    continue
                raise self._malformed(e.pos, e.msg) from None
            except RecursionError:
                raise self._malformed(self.pos, "nested too deeply") from None
            if end == len(self.text) and self._fill():
                continue  # a number may go on past the window
            start = self.byte_offset(self.pos)
            length = self.byte_offset(end) - start
            self.pos = end
            return value, start, length

    def __iter__(self) -> Iterator[tuple[Any, int, int]]:
        first = self._skip_space()
        if first != "[":
            if first == "\ufeff":
                raise VGFSError(f"{self.src.label}: starts with a UTF-8 byte order mark (BOM),"
                                " which JSON does not allow; save the file without it")
            raise VGFSError(f"{self.src.label}: expected a JSON array at the top level, found"
                            f" {first or 'an empty file'!r}")
        self.pos += 1
        if self._skip_space() == "]":
            self.pos += 1
        else:
            while True:
                yield self._value()
                after = self._skip_space()
                self.pos += 1
                if after == "]":
                    break
                if after != ",":
                    raise self._malformed(self.pos - 1, "expected ',' or ']' after an entry")
                self._skip_space()
        if self._skip_space():
            raise VGFSError(f"{self.src.label}: unexpected data after the top-level array,"
                            f" at byte {self.byte_offset(self.pos)}")


def stream_entries(src: Source, kind: str, on_read: Callable[[int], object] | None = None,
                   sink: Callable[[bytes], object] | None = None) -> Iterator[Entry]:
    """Yield each entry of a per-image file with its byte range; `sink` gets every byte of
    the file, in order.

    Validates as it goes: the top level must be an array, each entry an object with an integer
    image id and the kind's lists. Afterwards `src.version`, `entries`, `size` and `sha256` are
    set. `on_read(n)` is called as bytes are consumed, for progress.
    """
    list_keys = PER_IMAGE[kind][1]
    with src.open() as raw:
        reader = _CountingReader(raw, on_read, _DepthGuard(), sink)
        index = 0
        image_id: int | None = None  # the previous entry's, to place an entry without one
        try:
            for value, offset, length in _ArrayScanner(src, reader):
                image_id = _entry_id(src, value, index, image_id)
                _check_lists(src, value, image_id, list_keys, index < VERSION_SAMPLE)
                yield Entry(image_id, value, offset, length)
                index += 1
        except UnicodeDecodeError as e:
            raise VGFSError(f"{src.label}: invalid UTF-8 near byte {reader.offset}") from e
        except TooDeep:
            raise VGFSError(f"{src.label}: JSON nested more than {MAX_DEPTH} levels deep near"
                            f" byte {reader.offset}") from None
        except OSError as e:
            raise VGFSError(f"{src.label}: read failed near byte {reader.offset}:"
                            f" {e.strerror or e}") from e
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise VGFSError(f"{src.label}: corrupt zip data near byte {reader.offset}") from e
    src.entries, src.size, src.sha256 = index, reader.offset, reader.hash.hexdigest()
    src.version = _version(src)


def stream_whole(src: Source, sink: Callable[[bytes], object],
                 on_read: Callable[[int], object] | None = None) -> None:
    """Hand the file's bytes to `sink` piece by piece, never holding it whole. A file the
    release defines (WHOLE_FILES) is checked as it passes: well-formed JSON, or UTF-8 text for
    the alias files; any other file a site keeps is carried as it is. Records its size, sha256
    and, for the release's files, entries and version on `src`."""
    with src.open() as raw:
        reader = _CountingReader(raw, on_read, sink=sink)
        try:
            src.entries = _check_whole(src, reader) if src.name in WHOLE_FILES else 0
            while reader.read(READ_SIZE):  # what the check left, or all of an unknown file
                pass
        except ijson.JSONError as e:
            raise VGFSError(f"{src.label}: malformed JSON near byte {reader.offset}:"
                            f" {_first_line(e)}") from e
        except UnicodeDecodeError as e:
            raise VGFSError(f"{src.label}: invalid UTF-8 near byte {reader.offset}") from e
        except OSError as e:
            raise VGFSError(f"{src.label}: read failed near byte {reader.offset}:"
                            f" {e.strerror or e}") from e
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise VGFSError(f"{src.label}: corrupt zip data near byte {reader.offset}") from e
    src.size, src.sha256 = reader.offset, reader.hash.hexdigest()
    if src.name in WHOLE_FILES:
        src.version = "1.4" if src.name.endswith("_alias.txt") else "1.2"


def _check_whole(src: Source, reader: _CountingReader) -> int:
    """Check a release file as it streams past; its number of top-level entries (lines)."""
    if src.name.endswith(".json"):
        return _count_top_level(reader)
    lines = 0
    text = codecs.getincrementaldecoder("utf-8")()
    buf = bytearray(READ_SIZE)
    while n := reader.readinto(buf):
        lines += buf.count(b"\n", 0, n)
        text.decode(bytes(buf[:n]))
    text.decode(b"", final=True)
    return lines


def _count_top_level(reader: _CountingReader) -> int:
    """Parse the JSON as it streams past, counting the entries of its top-level array or
    object."""
    top_level = depth = 0
    top = None
    for event, _ in ijson.basic_parse(io.BufferedReader(reader, READ_SIZE), buf_size=READ_SIZE):
        top = top or event
        if depth == 1 and (event == "map_key" if top == "start_map"
                           else event not in ("end_array",)):
            top_level += 1
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
    return top_level


def read_whole(src: Source) -> bytes:
    """A small file's bytes (the alias files), checked like `stream_whole` checks them."""
    pieces: list[bytes] = []
    stream_whole(src, pieces.append)
    return b"".join(pieces)


def _first_line(e: Exception) -> str:
    # yajl reports some errors (invalid UTF-8) as bytes: decoded, they read like the others.
    arg = e.args[0] if len(e.args) == 1 else None
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(e)
    return re.sub(r"\s+", " ", text).strip()[:200]
