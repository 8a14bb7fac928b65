"""The dataset folder's format, shared by the build (writer) and dataset.py (reader).

    manifest.json       {"format": FORMAT, ...}; see vgfs/build for the fields
    annotations.lmdb/   one LMDB environment with named databases:
        <kind>          8-byte big-endian image id -> the entry as compact JSON (served as is)
        dirs            image id -> DIR_SIZES: the size of each of the image's files
        sums            kind byte + image id -> crc32 of that entry, for `verify`
        files           release file name -> its size (WHOLE_SIZE); name + NUL + chunk
                        number (4-byte big-endian) -> its bytes, as released, in WHOLE_CHUNK
                        pieces: neither the build nor a read ever holds a whole file
        jpegs           image id -> JPEG_INDEX (offset, size, sha256, crc32) [+ path in the image]
        view_*          the query views' inverted indexes (see query.py)
    images.sqfs         SquashFS image of the JPEGs, unless the manifest names another one

Entries are stored uncompressed: the mount serves them with zero copies straight from the LMDB
map, and st_size is the value's length, a 1 µs lookup. Big-endian keys sort numerically, so a
cursor lists images in id order and resumes a directory listing in O(log n).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vgfs.schema import PER_IMAGE

FORMAT = 2  # 2: whole files stored in chunks
KINDS = tuple(PER_IMAGE)  # ("meta", "objects", ...): each a named database and a file kind
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
ID = struct.Struct(">Q")
# offset, size, sha256 of a JPEG; a path follows when it is not one contiguous run in the image.
JPEG_INDEX = struct.Struct("<QQ32sI")


class JpegIndex(NamedTuple):
    """Where an image's JPEG is. sha256 is for `verify`; crc32 is what the mount checks on a
    JPEG's first read: ISA-L computes it in 3 µs for 140 KB, where sha256 takes 80 µs and zlib's
    crc32 35. path is set only off the fast path."""

    offset: int
    size: int
    sha256: bytes
    path: str | None
    crc32: int
# Per image, the sizes of all its files in FILES order (ABSENT where it has none): listing an
# image directory or stat-ing a file is one small read, and `find` walks a compact table
# instead of faulting in a leaf page of every kind's database.
FILES = (*KINDS, "jpeg")
DIR_SIZES = struct.Struct(f"<{len(FILES)}I")
ABSENT = 0xFFFFFFFF
WHOLE_CHUNK = 1 << 20
WHOLE_SIZE = struct.Struct("<Q")
_CHUNK_NO = struct.Struct(">I")

DB_NAMES = (*KINDS, "dirs", "sums", "files", "jpegs", "view_ids", "view_names", "view_pos")
DUPSORT = {"view_ids"}  # many image ids per key, kept sorted by LMDB
MAX_DBS = len(DB_NAMES) + 8


def sum_key(kind: str, image_id: int) -> bytes:
    return bytes([KIND_CODE[kind]]) + ID.pack(image_id)


def chunk_key(name: str, chunk: int) -> bytes:
    """The key of a whole file's `chunk`-th piece."""
    return name.encode() + b"\0" + _CHUNK_NO.pack(chunk)
