"""A map-style dataset for PyTorch's DataLoader: one sample per image, over a dataset folder or
a mount. torch is not needed to import or use it (a DataLoader asks only for `__len__` and
`__getitem__`), and PIL only for `image="pil"`.

    from torch.utils.data import DataLoader
    from vgfs.torch import VisualGenome
    samples = VisualGenome("/ceph/vg-dataset", files=("graph", "regions"), image="pil")
    loader = DataLoader(samples, batch_size=None, num_workers=16,
                        multiprocessing_context="spawn")  # picklable: each worker reopens it

A sample is a dict: "image_id", "image" (the JPEG's bytes, a PIL image, or absent), and each of
`files` as its parsed JSON (None where the image has none).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.layout import KINDS

IMAGE_MODES = ("bytes", "pil", None)


class VisualGenome:
    """The images of `root` (a dataset folder written by `vgfs build`, or a vgfs mount), in
    ascending id order, or those of `ids`."""

    def __init__(self, root: str | os.PathLike, files: Sequence[str] = ("graph",),
                 image: str | None = "bytes", ids: Sequence[int] | None = None) -> None:
        unknown = [f for f in files if f not in KINDS]
        if unknown:
            raise VGFSError(f"no such per-image file {unknown[0]!r}; the files are"
                            f" {', '.join(KINDS)}")
        if image not in IMAGE_MODES:
            raise VGFSError(f"image={image!r}: expected 'bytes', 'pil' or None")
        self.root, self.files, self.image = Path(root), tuple(files), image
        self._mount = not (self.root / "manifest.json").is_file()
        if self._mount and not (self.root / "images").is_dir():
            raise VGFSError(f"{self.root}: neither a dataset folder nor a vgfs mount")
        self._ds: Dataset | None = None  # opened in each process on first use
        self.ids = list(ids) if ids is not None else self._all_ids()

    def _all_ids(self) -> list[int]:
        if self._mount:
            return sorted(int(name) for name in os.listdir(self.root / "images"))
        return list(self._dataset().image_ids())

    def _dataset(self) -> Dataset:
        if self._ds is None:
            self._ds = Dataset(self.root)
        return self._ds

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}  # a worker opens its own

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        sample: dict[str, Any] = {"image_id": image_id}
        for kind in self.files:
            data = self._read(image_id, kind)
            sample[kind] = None if data is None else orjson.loads(data)
        if self.image is not None:
            jpeg = self._read(image_id, "jpeg")
            if jpeg is not None and self.image == "pil":
                from PIL import Image

                jpeg = Image.open(io.BytesIO(jpeg))
            sample["image"] = jpeg
        return sample

    def _read(self, image_id: int, kind: str) -> bytes | memoryview | None:
        if self._mount:
            name = "image.jpg" if kind == "jpeg" else f"{kind}.json"
            try:
                return (self.root / "images" / str(image_id) / name).read_bytes()
            except FileNotFoundError:
                return None
        ds = self._dataset()
        if kind == "jpeg":
            return ds.jpeg(image_id)
        return ds.graph_bytes(image_id) if kind == "graph" else ds.entry_bytes(kind, image_id)
