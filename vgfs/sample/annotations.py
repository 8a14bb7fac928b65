"""The per-image annotation files of the synthetic release, in the official latest format.

They copy the shapes of the real files, traps included: v1.4 `merged_object_ids`, relationship
endpoints in both the `name` and the `names` style, endpoints missing from v1.4 objects.json,
missing `attributes` keys, empty lists, predicates in mixed case, free text with quotes,
unicode and trailing spaces.

Images are planned in one cheap pass and generated in fixed chunks, each from its own seeded
random stream, so the bytes depend only on the seed and the parameters, never on how many
processes did the work.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Iterator
from typing import NamedTuple

import orjson

from vgfs.sample.vocab import ATTR, COLOURS, NUMBERS, OBJ, PRED, SIGN_WORDS, TIMES, Rand, pick

URL = "https://cs.stanford.edu/people/rak248/{}/{}.jpg"
FOLDERS = ("VG_100K", "VG_100K_2")
CHUNK = 256  # images per unit of work; part of the output's definition, like the seed

# The files written chunk by chunk, with the brackets that open and close each: one JSON array
# entry per image, and qa_to_region_mapping.json, a JSON object from qa id to region id.
PER_IMAGE_FILES = ("image_data.json", "objects.json", "attributes.json", "relationships.json",
                   "scene_graphs.json", "region_descriptions.json", "question_answers.json")
MAPPING_FILE = "qa_to_region_mapping.json"
STREAMED_FILES = {**dict.fromkeys(PER_IMAGE_FILES, b"[]"), MAPPING_FILE: b"{}"}

# Image sizes as in VG (longest side mostly 800), with weights.
SIZES = (((800, 600), 40), ((800, 533), 14), ((600, 800), 8), ((800, 534), 6),
         ((640, 480), 6), ((533, 800), 5), ((800, 450), 4), ((800, 800), 3),
         ((500, 375), 4), ((500, 333), 4), ((800, 640), 2), ((782, 800), 1))


class Plan(NamedTuple):
    """What the plan pass fixes for one image: identity, size, counts and first ids."""

    image_id: int
    folder: int  # index into FOLDERS
    width: int
    height: int
    coco_id: int | None
    flickr_id: int | None
    objects: int  # v1.2 objects; v1.4 keeps some, merges some and drops the rest
    object_id: int
    relationships: int
    relationship_id: int
    regions: int
    region_id: int
    qas: int
    qa_id: int


def plan_chunks(seed: int, images: int) -> Iterator[list[Plan]]:
    """Yield the plans of CHUNK images at a time. Counts are fixed here, in one cheap pass, so
    every chunk knows its first ids and chunks can be generated independently."""
    rng = random.Random(f"vgfs-sample:{seed}:plan")
    r = rng.random
    sizes = [size for size, _ in SIZES]
    size_weights = list(itertools.accumulate(weight for _, weight in SIZES))
    image_id, folder = 0, 1
    next_ids = [1, 1, 1, 1]  # object, relationship, region, qa
    chunk: list[Plan] = []
    for i in range(images):
        image_id += 1 if r() > 0.03 else 2 + int(r() * 20)  # the real ids have gaps too
        if r() < 0.04:  # both folders hold runs of consecutive ids, about 40% in VG_100K_2
            folder = int(r() < 0.4)
        width, height = rng.choices(sizes, cum_weights=size_weights)[0]
        source = r()  # COCO images also have a Flickr id; some others have one too
        coco_id = (i * 7919 + 17) % 600_000 + 1 if source < 0.45 else None  # distinct
        flickr_id = rng.randrange(10**8, 10**10) if source < 0.6 else None
        objects = 0 if r() < 0.005 else min(300, int(rng.gammavariate(2.2, 21.5)))
        relationships = (0 if objects < 2 or r() < 0.03
                         else int(objects * (0.16 + 0.63 * r())))
        regions = 0 if r() < 0.005 else min(300, 1 + int(rng.gammavariate(3.0, 16.7)))
        qas = 0 if r() < 0.1 else int(rng.gammavariate(2.5, 7.35))
        chunk.append(Plan(image_id, folder, width, height, coco_id, flickr_id, objects,
                          next_ids[0], relationships, next_ids[1], regions, next_ids[2],
                          qas, next_ids[3]))
        for k, n in enumerate((objects, relationships, regions, qas)):
            next_ids[k] += n + (int(r() * 5) if r() < 0.2 else 0)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def annotate(seed: int, index: int, plans: list[Plan]) -> dict[str, bytes]:
    """The annotations of chunk `index`: for each of STREAMED_FILES, the chunk's entries joined
    by commas (empty when it has none)."""
    r = random.Random(f"vgfs-sample:{seed}:chunk:{index}").random
    entries: dict[str, list[bytes]] = {name: [] for name in STREAMED_FILES}
    for im in plans:
        iid = im.image_id
        entries["image_data.json"].append(orjson.dumps({
            "width": im.width, "url": URL.format(FOLDERS[im.folder], iid),
            "height": im.height, "image_id": iid, "coco_id": im.coco_id,
            "flickr_id": im.flickr_id}))
        raw, names, kept, merged_into = _objects_of(r, im)
        rels, graph_rels = _relationships_of(r, im, raw, names, merged_into)
        entries["objects.json"].append(orjson.dumps({
            "image_id": iid, "objects": kept,
            # sic: the real files name VG_100K_2 for every image
            "image_url": URL.format(FOLDERS[1], iid)}))
        entries["attributes.json"].append(orjson.dumps({"image_id": iid, "attributes": raw}))
        entries["relationships.json"].append(orjson.dumps({"relationships": rels,
                                                           "image_id": iid}))
        entries["scene_graphs.json"].append(orjson.dumps({"relationships": graph_rels,
                                                          "image_id": iid, "objects": raw}))
        # Text needs some names; an image without objects borrows from the vocabulary.
        names = names or [OBJ.names[pick(r, OBJ)] for _ in range(3)]
        regions = [{"region_id": im.region_id + j, "width": w, "height": h, "image_id": iid,
                    "phrase": _phrase(r, names), "y": y, "x": x}
                   for j, (x, y, w, h) in enumerate(
                       _box(r, im.width, im.height, 0.05, 0.9) for _ in range(im.regions))]
        entries["region_descriptions.json"].append(orjson.dumps({"regions": regions, "id": iid}))
        qas = []
        for j in range(im.qas):
            question, answer = _qa(r, names)
            qa_id = im.qa_id + j
            qas.append({"a_objects": [], "question": question, "image_id": iid,
                        "qa_id": qa_id, "answer": answer, "q_objects": []})
            if regions and r() < 0.5:
                region = regions[int(r() * len(regions))]["region_id"]
                entries[MAPPING_FILE].append(b'"%d":%d' % (qa_id, region))
        entries["question_answers.json"].append(orjson.dumps({"id": iid, "qas": qas}))
    return {name: b",".join(parts) for name, parts in entries.items()}


def _box(r: Rand, width: int, height: int, low: float, span: float) -> tuple[int, int, int, int]:
    """x, y, w, h inside the image, small boxes more likely; a few overflow it by 1-4 px,
    as about 0.6% of real boxes do."""
    w = max(1, int(width * (low + span * r() ** 2)))
    h = max(1, int(height * (low + span * r() ** 2)))
    x, y = int(r() * (width - w + 1)), int(r() * (height - h + 1))
    if r() < 0.006:
        x = width - w + 1 + int(r() * 4)
    return x, y, w, h


def _style(r: Rand, text: str) -> str:
    """Free text as annotators typed it: capitals or not, stray spaces, a final period."""
    u = r()
    if u < 0.35:
        text = text[0].upper() + text[1:]
    u = r()
    if u < 0.06:
        return text + " "
    if u < 0.07:
        return " " + text
    return text + "." if u < 0.15 else text


# Region phrases, each taken while r() is below its bound; above the last, a sign's words.
_PHRASES = ((0.25, "{a} {n1}"), (0.5, "{n1} {p} {n2}"), (0.65, "the {n1} is {a}"),
            (0.8, "a {a} {n1} {p} the {n2}"), (0.9, "{n1} in the picture"),
            (0.96, "the man's {n2}"))


def _phrase(r: Rand, names: list[str]) -> str:
    """A region description about objects of the image."""
    n1, n2 = names[int(r() * len(names))], names[int(r() * len(names))]
    a, p = ATTR.names[pick(r, ATTR)], PRED.names[pick(r, PRED)]
    t = r()
    template = next((form for upto, form in _PHRASES if t < upto), None)
    if template is None:
        text = f'sign that says "{SIGN_WORDS[int(r() * len(SIGN_WORDS))]}"'
    else:
        text = template.format(a=a, p=p, n1=n1, n2=n2)
    return _style(r, text)


def _qa(r: Rand, names: list[str]) -> tuple[str, str]:
    """A question and its answer about objects of the image."""
    n1, n2 = names[int(r() * len(names))], names[int(r() * len(names))]
    t = r()
    if t < 0.3:
        return f"What color is the {n1}?", ATTR.names[int(r() * COLOURS)].capitalize() + "."
    if t < 0.45:
        return (f"How many {n1} are there?", NUMBERS[int(r() * len(NUMBERS))] + ".")
    if t < 0.65:
        return f"Where is the {n1}?", f"{PRED.names[pick(r, PRED)].capitalize()} the {n2}."
    if t < 0.8:
        return f"What is the {n1} {PRED.names[pick(r, PRED)]}?", f"The {n2}."
    if t < 0.9:
        return "When was the photo taken?", TIMES[int(r() * len(TIMES))]
    if t < 0.95:
        return "What does the sign say?", f'"{SIGN_WORDS[int(r() * len(SIGN_WORDS))]}".'
    return f"Why is the {n1} here?", f"It's the {n2}'s."


def _objects_of(r: Rand, im: Plan) -> tuple[list[dict], list[str], list[dict], dict[int, dict]]:
    """The v1.2 objects (with attributes), their first names, the v1.4 objects, and for each
    v1.2 object that v1.4 merged away (by index), the v1.4 object that absorbed it.

    v1.4 keeps about 76% of the v1.2 objects, merges 11% into a kept one and drops 13%."""
    obj_cw, obj_total = OBJ.cum_weights, OBJ.cum_weights[-1]
    raw: list[dict] = []
    names: list[str] = []
    kept: list[dict] = []
    merged_into: dict[int, dict] = {}
    v14_empty = r() < 0.02  # like real images 46 and 60: no v1.4 objects at all
    for k in range(im.objects):
        idx = bisect_right(obj_cw, r() * obj_total)
        name = OBJ.names[idx]
        if r() < 0.01:
            name += " " if r() < 0.5 else "."
        obj_names = [name] if r() > 0.1 else [name, OBJ.names[pick(r, OBJ)]]
        u = r()
        synsets = ([] if u < 0.05 else [OBJ.synsets[idx]] if u > 0.07
                   else [OBJ.synsets[idx], OBJ.synsets[pick(r, OBJ)]])
        x, y, w, h = _box(r, im.width, im.height, 0.02, 0.9)
        oid = im.object_id + k
        u = r()
        if u < 0.41:
            attrs = [ATTR.names[pick(r, ATTR)]
                     for _ in range(1 if u < 0.287 else 2 if u < 0.377 else 3)]
            obj = {"synsets": synsets, "h": h, "object_id": oid, "names": obj_names,
                   "w": w, "attributes": attrs, "y": y, "x": x}
        else:  # no `attributes` key at all, as in the real files
            obj = {"synsets": synsets, "h": h, "object_id": oid, "names": obj_names,
                   "w": w, "y": y, "x": x}
        raw.append(obj)
        names.append(name)
        u = r()
        if v14_empty or (kept and u > 0.87):
            continue  # dropped: relationships still point at it
        if kept and u > 0.76:
            survivor = kept[int(r() * len(kept))]
            survivor["merged_object_ids"].append(oid)
            merged_into[k] = survivor
            continue
        if r() < 0.3:  # v1.4 redrew some boxes
            x, y = max(0, x + int(r() * 9) - 4), max(0, y + int(r() * 9) - 4)
        kept.append({"synsets": synsets, "h": h, "object_id": oid, "merged_object_ids": [],
                     "names": [name], "w": w, "y": y, "x": x})
    return raw, names, kept, merged_into


def _relationships_of(r: Rand, im: Plan, raw: list[dict], names: list[str],
                      merged_into: dict[int, dict]) -> tuple[list[dict], list[dict]]:
    """v1.4 relationships and the scene graph's flat ones. The graph keeps the v1.2 ids;
    a v1.4 endpoint names the merging object when v1.4 merged the v1.2 one away."""
    endpoints: dict[int, dict] = {}
    rels: list[dict] = []
    graph_rels: list[dict] = []
    for j in range(im.relationships):
        s = int(r() * im.objects)
        o = int(r() * (im.objects - 1))
        if o >= s:
            o += 1
        p = pick(r, PRED)
        predicate = PRED.names[p]
        u = r()
        if u < 0.25:
            predicate = predicate.upper()
        elif u < 0.28:
            predicate = predicate.capitalize()
        synsets = [PRED.synsets[p]] if PRED.synsets[p] else []
        for e in (s, o):
            if e not in endpoints:
                endpoints[e] = _endpoint(raw[e], names[e], merged_into.get(e))
        rid = im.relationship_id + j
        rels.append({"predicate": predicate, "object": endpoints[o], "relationship_id": rid,
                     "synsets": synsets, "subject": endpoints[s]})
        graph_rels.append({"synsets": synsets, "predicate": predicate, "relationship_id": rid,
                           "object_id": raw[o]["object_id"], "subject_id": raw[s]["object_id"]})
    return rels, graph_rels


def _endpoint(obj: dict, name: str, survivor: dict | None) -> dict:
    """A v1.4 relationship endpoint: the v1.2 object in the `name` style, or, when v1.4 merged
    it away, the merging object in the `names` style with its `merged_object_ids`."""
    if survivor is None:
        return {"name": name, "h": obj["h"], "synsets": obj["synsets"],
                "object_id": obj["object_id"], "w": obj["w"], "y": obj["y"], "x": obj["x"]}
    s = survivor
    return {"h": s["h"], "object_id": s["object_id"], "merged_object_ids": s["merged_object_ids"],
            "synsets": s["synsets"], "w": s["w"], "y": s["y"], "x": s["x"], "names": s["names"]}
