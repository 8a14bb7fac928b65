"""How the field's programs find the Visual Genome files, written out from their sources so
that the drop-in tests can run that logic against a mount and against the release it came from.

Only the path logic and the whole-file reads are kept: each function names the project and the
file it follows, and says what was left out (the model code, HDF5 writing, resizing).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


# --- Scene-Graph-Benchmark.pytorch, neural-motifs ---------------------------------------------
# KaihuaTang/Scene-Graph-Benchmark.pytorch, maskrcnn_benchmark/data/datasets/visual_genome.py,
# load_image_filenames and load_info; rowanz/neural-motifs, dataloaders/visual_genome.py, has
# the same load_image_filenames (both "match the preprocessing in scene-graph-TF-release").
# Left out: the `assert len(fns) == 108073`, true of the full release only.
SGB_CORRUPTED = ("1592.jpg", "1722.jpg", "4616.jpg", "4617.jpg")


def sgb_image_filenames(img_dir: str, image_file: str) -> tuple[list[str], list[dict]]:
    """Every image of image_data.json, in its order, whose JPEG is in the one merged folder."""
    im_data = load_json(image_file)
    fns, img_info = [], []
    for img in im_data:
        basename = "{}.jpg".format(img["image_id"])
        if basename in SGB_CORRUPTED:
            continue
        filename = os.path.join(img_dir, basename)
        if os.path.exists(filename):
            fns.append(filename)
            img_info.append(img)
    return fns, img_info


def sgb_load_info(dict_file: str) -> tuple[list[str], ...]:
    """The label meanings of VG-SGG-dicts.json, each list with `__background__` at index 0."""
    info = load_json(dict_file)
    out = []
    for key in ("label_to_idx", "predicate_to_idx", "attribute_to_idx"):
        to_idx = info[key]
        to_idx["__background__"] = 0
        out.append(sorted(to_idx, key=to_idx.__getitem__))
    return tuple(out)


# --- LLaVA, ShareGPT4V --------------------------------------------------------------------------
# haotian-liu/LLaVA, llava/train/train.py, LazySupervisedDataset.__getitem__:
#     image = Image.open(os.path.join(image_folder, image_file))
# with `image_file` from the data mix (llava_v1_5_mix665k.json; ShareGPT4V's mixes likewise),
# e.g. "vg/VG_100K_2/1.jpg", and the Visual Genome folders under <image_folder>/vg/.
def llava_image_file(url: str) -> str:
    """The data mix's `image` for a Visual Genome image: vg/ and the url's last two parts."""
    return "vg/" + "/".join(url.split("/")[-2:])


def llava_image_path(image_folder: str, image_file: str) -> str:
    return os.path.join(image_folder, image_file)


# --- the Hugging Face `visual_genome` loading script --------------------------------------------
# visual_genome.py of the `visual_genome` dataset, _get_local_image_path; the folders are
# {"VG_100K": <images.zip extracted>/VG_100K, "VG_100K_2": <images2.zip extracted>/VG_100K_2}.
def hf_local_image_path(img_url: str, folder_local_paths: dict[str, str]) -> str:
    matches = re.fullmatch(r"^https://cs.stanford.edu/people/rak248/(VG_100K(?:_2)?)/([0-9]+\.jpg)$",
                           img_url)
    assert matches is not None, f"Got img_url: {img_url}, matched: {matches}"
    folder, filename = matches.group(1), matches.group(2)
    return os.path.join(folder_local_paths[folder], filename)


# --- DenseCap -------------------------------------------------------------------------------
# jcjohnson/densecap, preprocess.py, main/filter_images/add_images: the whole
# region_descriptions.json, only the images of a split, and `<image_dir>/<id>.jpg` for each.
# Left out: tokenising, resizing into HDF5.
def densecap_image_paths(region_data: str, split_ids: set[int], image_dir: str) -> list[str]:
    data = load_json(region_data)
    data = [img for img in data if img["id"] in split_ids]
    return [os.path.join(image_dir, f"{img['id']}.jpg") for img in data]


# --- sg2im ----------------------------------------------------------------------------------
# google/sg2im, scripts/preprocess_vg.py: whole image_data.json, objects.json,
# attributes.json, relationships.json, load_aliases of both alias files, and get_image_paths,
# paths relative to the folder that holds VG_100K/ and VG_100K_2/ (sg2im/data/vg.py joins them
# to its image_dir).
def sg2im_load_aliases(alias_path: str) -> dict[str, str]:
    aliases = {}
    with open(alias_path) as f:
        for line in f:
            names = [s.strip() for s in line.split(",")]
            for s in names:
                aliases[s] = names[0]
    return aliases


def sg2im_image_paths(image_id_to_image: dict[int, dict], image_ids: list[int]) -> list[str]:
    paths = []
    for image_id in image_ids:
        image = image_id_to_image[image_id]
        base, filename = os.path.split(image["url"])
        paths.append(os.path.join(os.path.basename(base), filename))
    return paths


def sg2im_inputs(vg_dir: str) -> dict[str, Any]:
    """What preprocess_vg.py loads whole, by its argument's name."""
    return {
        "images_json": load_json(os.path.join(vg_dir, "image_data.json")),
        "objects_json": load_json(os.path.join(vg_dir, "objects.json")),
        "attributes_json": load_json(os.path.join(vg_dir, "attributes.json")),
        "relationships_json": load_json(os.path.join(vg_dir, "relationships.json")),
        "object_aliases": sg2im_load_aliases(os.path.join(vg_dir, "object_alias.txt")),
        "relationship_aliases": sg2im_load_aliases(os.path.join(vg_dir,
                                                                "relationship_alias.txt")),
    }
