"""The official release's files and their variants: names, entry keys, canonical ids. Data only.

Both sides read this: release.py and the build to find and check the release's files, the
dataset and the tree to name what the mount shows.
"""

from __future__ import annotations

import re

# kind -> (release file stem, key of the entry's list(s)). The kinds are the mount's file names.
PER_IMAGE: dict[str, tuple[str, tuple[str, ...]]] = {
    "meta": ("image_data", ()),
    "objects": ("objects", ("objects",)),
    "attributes": ("attributes", ("attributes",)),
    "relationships": ("relationships", ("relationships",)),
    "graph": ("scene_graphs", ("objects", "relationships")),
    "regions": ("region_descriptions", ("regions",)),
    "qa": ("question_answers", ("qas",)),
}
# Whole-dataset files, stored and served as released.
WHOLE_FILES = (
    "image_data.json",
    "synsets.json",
    "object_synsets.json",
    "attribute_synsets.json",
    "relationship_synsets.json",
    "qa_to_region_mapping.json",
    "object_alias.txt",
    "relationship_alias.txt",
)
# The release's JPEG folders and zips.
IMAGE_DIRS = ("VG_100K", "VG_100K_2")
IMAGE_ZIPS = ("images.zip", "images2.zip")
# Folder names the build takes for JPEG folders: the two parts, and DenseCap's flat folder.
JPEG_FOLDERS = (*IMAGE_DIRS, "images")
# A canonical image id: decimal, no sign, no leading zeros, no spaces, at most 18 digits.
CANONICAL_ID = "0|[1-9][0-9]{0,17}"
JPEG_NAME = re.compile(rf"({CANONICAL_ID})\.jpg")
# The longest file name Linux allows: longer names are cut (query.py) or refused (tree.py).
NAME_MAX = 255
