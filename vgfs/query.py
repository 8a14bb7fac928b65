"""Query views: which images hold an object, attribute, predicate or synset of a given name.

The build streams every annotation anyway, so it also writes inverted indexes to LMDB; the
mount shows them as directories of symlinks (`by-object/dog/<id> -> ../../images/<id>`).

Rules (also in the mount's README.txt):
- by-object: every name of every object in objects.json (attributes.json when there is no
  objects.json), raw, and also under its canonical name from object_alias.txt where that
  differs.
- by-attribute: every attribute string of attributes.json, raw.
- by-predicate: every predicate of relationships.json, case-folded, and also under its
  canonical form from relationship_alias.txt where that differs.
- by-synset: every object synset (objects.json, else attributes.json).
- by-coco, by-flickr: one symlink per coco_id / flickr_id of image_data.json.

Names become file names by one reversible escaping (`escape`): `%` -> `%25`, `/` -> `%2F`,
NUL -> `%00`; the names `.`, `..` and `counts.json` have their dots written `%2E`, and the
empty name is `%`. Spaces, quotes and the rest stay as they are. Escaped names longer than
255 bytes are cut and end in `%~` plus 16 hex digits of their SHA-256, so that two names never
collide.

LMDB layout (databases opened by dataset.py):
    view_ids    view byte + escaped name -> image ids (DUPSORT, 8-byte big-endian, sorted)
    view_names  view byte + position (4-byte big-endian) -> count (4 bytes) + escaped name
    view_pos    view byte + escaped name -> position (4-byte big-endian)
A name's position is its rank in sorted order: stable for a dataset, so inode numbers are too.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from vgfs.schema import NAME_MAX

VIEWS = ("by-object", "by-attribute", "by-predicate", "by-synset", "by-coco", "by-flickr")
# by-coco and by-flickr map a name to exactly one image: a symlink, not a directory.
LINK_VIEWS = ("by-coco", "by-flickr")
POS = struct.Struct(">I")
COUNT = struct.Struct("<I")
_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "\0": "%00"})


def escape(name: str) -> bytes:
    """The file name that stands for `name`: reversible, never `/`, NUL, `.` or `..`."""
    if name in (".", "..", "counts.json"):  # the last is the view's own counts file
        return name.replace(".", "%2E").encode()
    if name == "":
        return b"%"
    out = name.translate(_ESCAPES).encode("utf-8", "surrogatepass")
    if len(out) > NAME_MAX:
        digest = hashlib.sha256(out).hexdigest()[:16]
        cut = out[:NAME_MAX - 18].decode("utf-8", "ignore").encode()
        out = cut + b"%~" + digest.encode()
    return out


def unescape(name: bytes) -> str:
    """The name that `escape` turned into `name` (names cut for length stay cut)."""
    text = name.decode("utf-8", "surrogatepass")
    if text == "%":
        return ""
    out, i = [], 0
    while i < len(text):
        if text[i] == "%" and text[i + 1:i + 3] in ("25", "2F", "00", "2E"):
            out.append({"25": "%", "2F": "/", "00": "\0", "2E": "."}[text[i + 1:i + 3]])
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def load_aliases(text: str, fold: bool = False) -> dict[str, str]:
    """alias -> canonical, from the release's alias files: `canonical,alias,alias...` lines."""
    aliases: dict[str, str] = {}
    for line in text.splitlines():
        names = [n.casefold() if fold else n for n in line.split(",")]
        if len(names) > 1 and names[0]:
            for alias in names[1:]:
                if alias and alias != names[0]:
                    aliases.setdefault(alias, names[0])
    return aliases


def _with_canonical(names: Iterable[str], aliases: dict[str, str]) -> set[str]:
    out = set(names)
    out.update(aliases[n] for n in list(out) if n in aliases)
    return out


def _add_strings(into: set[str], items: list[Any]) -> None:
    try:
        into.update(items)  # the common case, at C speed
    except TypeError:  # an unhashable item: keep the strings only
        into.update(i for i in items if isinstance(i, str))


def _object_names(objects: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    names: set[str] = set()
    synsets: set[str] = set()
    for obj in objects:
        raw = obj.get("names")
        if raw is None:
            raw = [obj["name"]] if "name" in obj else []  # v1.0 objects
        if isinstance(raw, list):
            _add_strings(names, raw)
        raw = obj.get("synsets")
        if isinstance(raw, list):
            _add_strings(synsets, raw)
    # Only strings name files; the build checks nothing deeper than the item level.
    return ({n for n in names if isinstance(n, str)},
            {s for s in synsets if isinstance(s, str)})


def extract(kind: str, entry: dict[str, Any], object_aliases: dict[str, str],
            predicate_aliases: dict[str, str], objects_from: str) -> Iterator[tuple[str, str]]:
    """(view, name) pairs that one release entry contributes, each once."""
    if kind == objects_from:
        names, synsets = _object_names(entry.get("objects" if kind == "objects" else
                                                 "attributes") or [])
        for name in _with_canonical(names, object_aliases):
            yield "by-object", name
        for name in synsets:
            yield "by-synset", name
    if kind == "attributes":
        attrs = {a for obj in entry.get("attributes") or [] for a in obj.get("attributes") or ()
                 if isinstance(a, str)}
        for name in attrs:
            yield "by-attribute", name
    elif kind == "relationships":
        preds = {r["predicate"].casefold() for r in entry.get("relationships") or []
                 if isinstance(r.get("predicate"), str)}
        for name in _with_canonical(preds, predicate_aliases):
            yield "by-predicate", name
    elif kind == "meta":
        for view, key in (("by-coco", "coco_id"), ("by-flickr", "flickr_id")):
            value = entry.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                yield view, str(value)


def key(view: str, name: bytes) -> bytes:
    return bytes([VIEWS.index(view)]) + name


def pos_key(view: str, position: int) -> bytes:
    return bytes([VIEWS.index(view)]) + POS.pack(position)
