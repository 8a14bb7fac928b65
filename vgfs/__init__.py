"""vgfs: the Visual Genome dataset as a read-only FUSE filesystem."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vgfs.dataset import Dataset

__version__ = "0.1.0"

__all__ = ["__version__", "open_dataset"]


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a dataset folder written by `vgfs build` (see vgfs.dataset.Dataset). The reader is
    imported on first use, so that `import vgfs` (the command line's first step) stays light."""
    from vgfs.dataset import open_dataset as _open

    return _open(path)
