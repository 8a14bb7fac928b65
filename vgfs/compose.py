"""Files made from entries of the release, byte for byte the same at every build and mount.

- graph.json without scene_graphs.json: the scene_graphs.json layout, composed from what
  attributes.json, objects.json and relationships.json hold (DESIGN §2.4); nothing invented.
- by-id/<id>.json: what the official driver's own preprocessing writes for the image,
  `add_attrs_to_scene_graphs` then `save_scene_graphs_by_id`: the scene graph, with each object
  of the image's attributes.json entry as an attribute record numbered across the whole file,
  written by Python's json module as the driver writes it.

The build stores only their sizes; the mount composes them on demand and caches them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

Buffer = bytes | memoryview
# An image's entry of a kind, or None: what both the build and the mount compose from.
Entries = Callable[[str], "Buffer | None"]


def loads(data: Buffer) -> Any:
    """JSON bytes as Python values; orjson, except for what it refuses that the release may hold
    (a lone surrogate escape such as "\\ud800"), which the standard library keeps exact."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(bytes(data))


def dumps(value: Any, indent: bool = False) -> bytes:
    """Compact (or indented) JSON bytes; ASCII escapes where orjson cannot write a string."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    except TypeError:
        if indent:
            return json.dumps(value, indent=2).encode()
        return json.dumps(value, separators=(",", ":")).encode()


def graph_of(image_id: int, entry: Entries, stored: bool) -> Buffer | None:
    """graph.json: the scene_graphs.json entry when the release has that file (`stored`),
    else composed."""
    if stored:
        return entry("graph")
    return graph(image_id, entry("attributes"), entry("objects"), entry("relationships"))


def graph(image_id: int, attributes: Buffer | None, objects: Buffer | None,
          relationships: Buffer | None) -> bytes | None:
    """The composed graph.json of an image, from its entries' bytes; None if it has none."""
    if attributes is None and objects is None and relationships is None:
        return None
    if attributes is not None:
        objs = loads(attributes)["attributes"]
    elif objects is not None:
        objs = loads(objects)["objects"]
    else:
        objs = []
    flat = []
    for r in loads(relationships).get("relationships", []) if relationships else []:
        rel = {k: r[k] for k in ("relationship_id", "id", "predicate", "synsets") if k in r}
        for end in ("subject", "object"):
            endpoint = r.get(end)
            if isinstance(endpoint, dict):
                oid = endpoint.get("object_id", endpoint.get("id"))
                if oid is not None:
                    rel[end + "_id"] = oid
        flat.append(rel)
    return dumps({"image_id": image_id, "objects": objs, "relationships": flat})


def by_id(scene_graph: Buffer, attributes: Buffer | None, attr_base: int) -> bytes:
    """by-id/<id>.json from the image's scene graph and attributes.json entry, whose first
    attribute gets id `attr_base` (the objects of all earlier entries of the file)."""
    sg: dict[str, Any] = json.loads(bytes(scene_graph))
    if attributes is not None:
        entry = json.loads(bytes(attributes))
        sg["attributes"] = [{**{k: v for k, v in entry.items() if k != "attributes"},
                             "attribute": obj, "attribute_id": attr_base + i}
                            for i, obj in enumerate(entry.get("attributes", []))]
    return json.dumps(sg).encode()
