"""vgfs: the Visual Genome dataset as a read-only FUSE filesystem."""

__version__ = "0.1.0"

__all__ = ["__version__", "open_dataset"]


def open_dataset(path):  # noqa: ANN001, ANN201 - thin re-export, documented in dataset.py
    """Open a dataset folder written by `vgfs build` (see vgfs.dataset.Dataset)."""
    from vgfs.dataset import open_dataset as _open

    return _open(path)
