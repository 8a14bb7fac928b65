"""Each image's record (layout.IMAGE), gathered by the phases and written last as the `images`
database: any question about an image is then one small read."""

from __future__ import annotations

from array import array
from bisect import bisect_left

from vgfs.build.writer import Writer
from vgfs.errors import VGFSError
from vgfs.layout import ABSENT, ID, KINDS, ImageRecord

# The record's fields after the kinds' ranges, in layout.IMAGE order.
EXTRA = ("graph_size", "by_id_size", "attr_base", "jpeg_size")


class ImageTable:
    """Each image of image_data.json with its record, in flat arrays at about 100 bytes an
    image: a dict of lists grew the build's memory by ~200 bytes an image. Ids arrive in
    release order; `freeze` sorts them once image_data.json is read."""

    WIDTH = len(KINDS) + len(EXTRA)  # the lengths and sizes of a row

    def __init__(self) -> None:
        self.ids = array("Q")
        self.offsets = array("Q")  # a row's kinds' entry offsets
        self.sizes = array("I")  # a row's kinds' entry lengths, then its EXTRA fields

    def add(self, image_id: int) -> int:
        """A row for the image, in arrival order; its row number."""
        self.ids.append(image_id)
        self.offsets.extend([0] * len(KINDS))
        self.sizes.extend([ABSENT] * self.WIDTH)
        return len(self.ids) - 1

    def freeze(self) -> None:
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        self.ids = array("Q", (self.ids[i] for i in order))
        self.offsets = _reorder(self.offsets, order, len(KINDS))
        self.sizes = _reorder(self.sizes, order, self.WIDTH)

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, image_id: int) -> int | None:
        i = bisect_left(self.ids, image_id)
        return i if i < len(self.ids) and self.ids[i] == image_id else None

    def set_range(self, row: int, kind: str, offset: int, length: int) -> None:
        column = KINDS.index(kind)
        self.offsets[row * len(KINDS) + column] = offset
        self.sizes[row * self.WIDTH + column] = size_field(self.ids[row], length)

    def length(self, row: int, kind: str) -> int:
        """The length of the image's entry of `kind` (ABSENT while it has none)."""
        return self.sizes[row * self.WIDTH + KINDS.index(kind)]

    def set(self, row: int, field: str, value: int) -> None:
        self.sizes[row * self.WIDTH + len(KINDS) + EXTRA.index(field)] = size_field(
            self.ids[row], value)

    def record(self, row: int) -> ImageRecord:
        offsets = self.offsets[row * len(KINDS):(row + 1) * len(KINDS)]
        sizes = self.sizes[row * self.WIDTH:(row + 1) * self.WIDTH]
        ranges = tuple(zip(offsets, sizes[:len(KINDS)], strict=True))
        return ImageRecord(ranges, *sizes[len(KINDS):])


def store_table(writer: Writer, table: ImageTable) -> None:
    """Each image's record, in id order."""
    with writer.batch() as batch:
        for row, image_id in enumerate(table.ids):
            batch.put("images", ID.pack(image_id), table.record(row).pack(), append=True)
            batch.done()


def size_field(image_id: int, size: int) -> int:
    """`size` as a record field, which holds sizes below 4 GiB (ABSENT is its largest)."""
    if size >= ABSENT:
        raise VGFSError(f"image {image_id}: a file of 4 GiB or more")
    return size


def _reorder(values: array, order: list[int], width: int) -> array:
    out = array(values.typecode)
    for i in order:
        out.extend(values[i * width:(i + 1) * width])
    return out
