"""The size of each image's files, gathered by the phases and written last as the `dirs`
database (layout.DIR_SIZES): listing an image directory is then one small read."""

from __future__ import annotations

from array import array
from bisect import bisect_left

from vgfs.build.writer import Writer
from vgfs.errors import VGFSError
from vgfs.layout import ABSENT, DIR_SIZES, ID, KINDS


class Sizes:
    """Each image of image_data.json with the sizes of its annotation files (KINDS order), in
    two flat arrays at 36 bytes an image: a dict of lists grew the build's memory by ~200 bytes
    an image. Ids arrive in release order; `freeze` sorts them once image_data.json is read."""

    WIDTH = len(KINDS)

    def __init__(self) -> None:
        self.ids = array("Q")
        self.cols = array("I")

    def add(self, image_id: int) -> int:
        """A row for the image, in arrival order; its row number."""
        self.ids.append(image_id)
        self.cols.extend([ABSENT] * self.WIDTH)
        return len(self.ids) - 1

    def freeze(self) -> None:
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        self.ids = array("Q", (self.ids[i] for i in order))
        cols, w = array("I"), self.WIDTH
        for i in order:
            cols.extend(self.cols[i * w:(i + 1) * w])
        self.cols = cols

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, image_id: int) -> int | None:
        i = bisect_left(self.ids, image_id)
        return i if i < len(self.ids) and self.ids[i] == image_id else None

    def set(self, i: int, kind: str, size: int) -> None:
        self.cols[i * self.WIDTH + KINDS.index(kind)] = size_field(self.ids[i], size)

    def row(self, i: int) -> array[int]:
        return self.cols[i * self.WIDTH:(i + 1) * self.WIDTH]


def store_dirs(writer: Writer, sizes: Sizes, jpeg_sizes: array[int]) -> None:
    """Each image's DIR_SIZES record, in FILES order: its annotation files' sizes (KINDS), then
    its JPEG's (`jpeg_sizes`, by row of `sizes`)."""
    with writer.batch() as batch:
        for row, image_id in enumerate(sizes.ids):
            record = DIR_SIZES.pack(*sizes.row(row), jpeg_sizes[row])
            batch.put("dirs", ID.pack(image_id), record, append=True)
            batch.done()


def size_field(image_id: int, size: int) -> int:
    """`size` as a DIR_SIZES field, which holds sizes below 4 GiB (ABSENT is its largest)."""
    if size >= ABSENT:
        raise VGFSError(f"image {image_id}: a file of 4 GiB or more")
    return size
