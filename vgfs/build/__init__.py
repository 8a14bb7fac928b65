"""`vgfs build`: the official release and its JPEGs -> a dataset folder (see vgfs/layout.py).

    orchestrate  the phases in order, the manifest, interruption and errors
    output       the output folder: what may be replaced, the claim on it, the final rename
    annotations  the per-image and whole-dataset files into LMDB
    postings     the query views' inverted indexes
    jpegs        images.sqfs (mksquashfs, or a site's image) and its JPEG index
    sizes        each image's file sizes, the `dirs` database
    writer       the LMDB environment every phase writes through
"""

from vgfs.build.orchestrate import build

__all__ = ["build"]
