"""The Python API for data loaders: a picklable dataset, names that say what they mean, and the
map-style dataset of vgfs.torch over a dataset folder and over a mount."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import pickle
from pathlib import Path

import pytest

from tests.conftest import RELEASE
from vgfs.dataset import open_dataset
from vgfs.torch import VisualGenome


def _graphs(samples: VisualGenome, indexes: list[int]) -> list[tuple[int, object, int]]:
    """What a worker makes of some samples: id, graph, JPEG size (or -1)."""
    out = []
    for i in indexes:
        s = samples[i]
        out.append((s["image_id"], s["graph"], -1 if s["image"] is None else len(s["image"])))
    return out


def test_dataset_pickles_and_reopens(real_dataset: Path) -> None:
    with open_dataset(real_dataset) as ds:
        copy = pickle.loads(pickle.dumps(ds))
        try:
            assert list(copy.image_ids()) == list(ds.image_ids())
            assert copy.entry("graph", 1) == ds.entry("graph", 1)
        finally:
            copy.close()


def test_names_say_what_they_mean(real_dataset: Path) -> None:
    """Image 3 is in image_data.json but has no JPEG in the excerpts."""
    with open_dataset(real_dataset) as ds:
        assert ds.in_image_data(3) and not ds.has_jpeg(3) and ds.jpeg(3) is None
        assert ds.has_jpeg(1) and not ds.in_image_data(424242)
        with pytest.raises(TypeError, match="an image id is an int, not str '1'"):
            ds.entry("graph", "1")


def test_samples_in_spawned_workers(real_dataset: Path, real_mount: Path) -> None:
    """Workers started by "spawn" (the default on macOS) get the dataset pickled: each reopens
    it, and their samples equal those read in this process, from the folder and the mount."""
    samples = VisualGenome(real_dataset, files=("graph", "objects"))
    assert len(samples) == len(json.loads((RELEASE / "image_data.json").read_bytes()))
    first = samples[0]
    assert first["objects"] == json.loads((real_mount / "images/1/objects.json").read_bytes())
    assert first["image"] == (RELEASE / "VG_100K_2/1.jpg").read_bytes()
    here = _graphs(samples, list(range(len(samples))))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        halves = pool.starmap(_graphs, [(samples, list(range(0, len(samples), 2))),
                                        (samples, list(range(1, len(samples), 2)))])
    assert sorted(halves[0] + halves[1]) == sorted(here)
    assert _graphs(VisualGenome(real_mount), list(range(len(samples)))) == here


def test_pil_images(real_dataset: Path) -> None:
    image = VisualGenome(real_dataset, files=(), image="pil")[0]["image"]
    assert image.size == (800, 600)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is optional (the bench-torch extra); the spawned workers"
                           " above check the same pickling without it")
def test_torch_dataloader_spawn(real_dataset: Path) -> None:
    from torch.utils.data import DataLoader

    samples = VisualGenome(real_dataset, files=("graph",), image=None)
    loader = DataLoader(samples, batch_size=None, num_workers=2,
                        multiprocessing_context="spawn")
    assert [s["image_id"] for s in loader] == samples.ids
