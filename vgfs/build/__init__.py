"""`vgfs build`: the official release and its JPEGs -> a dataset folder (see vgfs/layout.py).

    orchestrate  the phases in order, the manifest, interruption and errors
    output       the output folder: what may be replaced, the claim on it, the final rename
    annotations  the release's files, once, as frames; each entry's range; composed files' sizes
    postings     the query views' inverted indexes
    jpegs        images.sqfs (mksquashfs, or a site's image), its JPEG index and the strays
    table        each image's record, the `images` database
    writer       the LMDB environment and the frames file every phase writes through
"""

from vgfs.build.orchestrate import build

__all__ = ["build"]
