"""The dataset folder's format, shared by the build (writer) and dataset.py (reader).

    manifest.json       {"format": FORMAT, ...}; see vgfs/build for the fields
    annotations.lmdb/   one LMDB environment with named databases:
        files           path of a stored file -> FILE_INFO (its number, its size). Release files
                        have their relative path; files vgfs makes (a view's counts.json) start
                        with NUL, which no path can
        frames          file number + frame number -> FRAME_AT: where in annotations.zst the
                        frame of the file's FRAME bytes from there (the last one shorter) is
        images          image id -> IMAGE: per kind, where its entry sits in the kind's source
                        file (offset, length), and the sizes of the files made for the image
        jpegs           image id -> JPEG_INDEX (offset, size, sha256, crc32) [+ path in the image]
        part2           image id -> empty: the JPEGs that sat in a VG_100K_2 folder
        strays          folder + "/" + name -> JPEG_INDEX [+ path]: other files of the JPEG
                        folders (GQA's n*.jpg, unannotated ids, Thumbs.db), served where they were
        view_*          the query views' inverted indexes (see query.py)
    annotations.zst     the frames, one after the other: each a zstd frame with zstd's checksum
                        of its content, so that it decompresses alone and damage is caught
                        whenever it is read. A plain file, read with one pread per frame: no
                        page of LMDB's map is wasted on them, and a read that would wait for
                        storage can be told apart and sent to a thread, as JPEG reads are
    images.sqfs         SquashFS image of the JPEGs, unless the manifest names another one

The annotations are stored once, as the release's own bytes: a per-image file is a range of its
source file, a whole file all of it. Big-endian keys sort numerically, so a cursor lists images
in id order and resumes a directory listing in O(log n).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vgfs.schema import PER_IMAGE

FORMAT = 3  # 3: the release's bytes in zstd frames, per-image files as ranges of them
KINDS = tuple(PER_IMAGE)  # ("meta", "objects", ...): the per-image files' kinds
ID = struct.Struct(">Q")
# Input bytes per frame: small enough that a per-image read decompresses little (~40 µs),
# large enough that zstd compresses the release's JSON to about an eighth.
FRAME = 1 << 16
ZSTD_LEVEL = 9
FILE_INFO = struct.Struct("<IQ")  # file number, size
FRAME_KEY = struct.Struct(">II")  # file number, frame number
FRAME_AT = struct.Struct("<QI")  # offset in FRAMES_FILE, compressed length
FRAMES_FILE = "annotations.zst"
# Per image: (offset, length) of its entry in each kind's source file, then the sizes of the
# files composed for it (graph.json without scene_graphs.json, by-id/<id>.json), the first
# attribute id that the official driver's preprocessing gives its attributes, and the size of
# its JPEG. One read answers every question about an image.
IMAGE = struct.Struct("<" + "QI" * len(KINDS) + "IIII")
ABSENT = 0xFFFFFFFF  # a length or size: no such file
# offset, size, sha256 of a JPEG; a path follows when it is not one contiguous run in the image.
JPEG_INDEX = struct.Struct("<QQ32sI")
VIEW_FILE_PREFIX = "\0"  # the start of a stored file that vgfs made, not the release

DB_NAMES = ("files", "frames", "images", "jpegs", "part2", "strays", "view_ids", "view_names",
            "view_pos")
DUPSORT = {"view_ids"}  # many image ids per key, kept sorted by LMDB
MAX_DBS = len(DB_NAMES) + 8


class JpegIndex(NamedTuple):
    """Where a JPEG is. sha256 is for `verify`; crc32 is what the mount checks when it reads
    the bytes from storage: ISA-L computes it in 3 µs for 140 KB, where sha256 takes 80 µs
    and zlib's crc32 35. path is set only off the fast path."""

    offset: int
    size: int
    sha256: bytes
    path: str | None
    crc32: int


class ImageRecord(NamedTuple):
    """What the dataset knows of one image (IMAGE, decoded)."""

    ranges: tuple[tuple[int, int], ...]  # per kind (KINDS order): (offset, length or ABSENT)
    graph_size: int  # graph.json: its entry's length, or the composed file's size
    by_id_size: int
    attr_base: int
    jpeg_size: int

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> ImageRecord:
        values = IMAGE.unpack(raw)
        n = 2 * len(KINDS)
        ranges = tuple(zip(values[0:n:2], values[1:n:2], strict=True))
        return cls(ranges, *values[n:])

    def pack(self) -> bytes:
        return IMAGE.pack(*(v for r in self.ranges for v in r), self.graph_size,
                          self.by_id_size, self.attr_base, self.jpeg_size)


def frame_key(file_no: int, frame: int) -> bytes:
    return FRAME_KEY.pack(file_no, frame)
