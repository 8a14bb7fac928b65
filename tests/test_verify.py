"""`vgfs verify` without the command line: everything a dataset stores is read and checked, and
every problem is reported, one damaged frame or JPEG never hiding the next."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lmdb
import pytest

from tests.conftest import damage_frame, damage_leaf_page, flip_byte
from vgfs.build import build
from vgfs.dataset import Dataset, open_dataset
from vgfs.layout import FRAME, ID, KINDS, MAX_DBS, ImageRecord
from vgfs.verify import verify, work


def _verify(dataset: Path) -> tuple[int, list[str], int]:
    """verify's count, its reports and the progress it made, on a fresh open of `dataset`."""
    reports: list[str] = []
    progress: list[int] = []
    with open_dataset(dataset) as ds:
        problems = verify(ds, reports.append, progress.append)
        assert sum(progress) == work(ds), "progress reaches the announced total"
    return problems, reports, sum(progress)


@pytest.fixture
def copy(real_dataset: Path, tmp_path: Path) -> Path:
    return shutil.copytree(real_dataset, tmp_path / "dataset")


def test_a_clean_dataset_has_no_problem(real_dataset: Path, real_ds: Dataset) -> None:
    """Every frame of every stored file, every range and every JPEG is read: progress counts
    them all, and nothing is reported."""
    problems, reports, done = _verify(real_dataset)
    assert (problems, reports) == (0, [])
    frames = sum(-(-size // FRAME) for _, size in real_ds.files.values())
    assert done == frames + 4 > 4


def test_a_clean_synthetic_dataset_has_no_problem(synthetic_dataset: Path) -> None:
    problems, reports, done = _verify(synthetic_dataset)
    assert (problems, reports) == (0, [])
    assert done > 300


def test_damaged_frame_and_damaged_jpeg_are_both_reported(copy: Path) -> None:
    """verify carries on past a damaged frame: the frame after it, the other files and then
    a JPEG damaged too are all read, and each problem is its own sentence naming it."""
    damage_frame(copy, "region_descriptions.json", 2)
    damage_frame(copy, "attributes.json", 0)
    with open_dataset(copy) as ds:
        offset = ds.jpeg_index(4).offset
    flip_byte(copy / "images.sqfs", offset + 1000)
    problems, reports, _ = _verify(copy)
    assert problems == len(reports) == 3, reports
    assert reports[0].startswith("attributes.json: frame 0 is damaged"), reports
    assert reports[1].startswith("region_descriptions.json: frame 2 is damaged"), reports
    assert reports[2] == "image 4: JPEG bytes in images.sqfs do not match their sha256"
    assert all("\n" not in r for r in reports)


def test_a_stored_file_that_differs_from_its_sha256_is_reported(copy: Path) -> None:
    """Frames that decompress cleanly but are not the released bytes (here: the manifest's
    sha256 of the released file no longer matches) are caught by the whole-file digest."""
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["sources"]["synsets.json"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    problems, reports, _ = _verify(copy)
    assert (problems, reports) == (1, ["synsets.json: does not match the manifest's sha256"])


def test_an_entry_range_outside_its_file_is_reported(copy: Path) -> None:
    """An image record whose range runs past its source file's end (a damaged `images`
    database) is reported with the image and the kind; the other images are still checked."""
    env = lmdb.open(str(copy / "annotations.lmdb"), max_dbs=MAX_DBS)
    try:
        db = env.open_db(b"images", create=False)
        with env.begin(write=True) as txn:
            for image_id in (7, 9):
                record = ImageRecord.unpack(txn.get(ID.pack(image_id), db=db))
                ranges = list(record.ranges)
                qa = KINDS.index("qa")
                ranges[qa] = (10 << 20, ranges[qa][1])
                txn.put(ID.pack(image_id), record._replace(ranges=tuple(ranges)).pack(), db=db)
    finally:
        env.close()
    (copy / "annotations.lmdb" / "lock.mdb").unlink(missing_ok=True)
    problems, reports, _ = _verify(copy)
    assert reports == [f"image {i}: its qa entry lies outside its source file" for i in (7, 9)]
    assert problems == 2


def test_a_damaged_stray_is_reported(tmp_path: Path, release_copy: Path) -> None:
    """Other files of the JPEG folders are checked like the JPEGs."""
    (release_copy / "VG_100K" / "Thumbs.db").write_bytes(b"thumbnails " * 100)
    build(release_copy, tmp_path / "dataset", show_progress=False)
    with open_dataset(tmp_path / "dataset") as ds:
        offset = ds.strays["VG_100K/Thumbs.db"].offset
    assert _verify(tmp_path / "dataset")[0] == 0
    flip_byte(tmp_path / "dataset" / "images.sqfs", offset + 50)
    problems, reports, _ = _verify(tmp_path / "dataset")
    assert (problems, reports) == (1, ["VG_100K/Thumbs.db: JPEG bytes in images.sqfs do not"
                                       " match their sha256"])


def test_a_damaged_database_page_is_reported_and_the_rest_checked(synthetic_dataset: Path,
                                                                  tmp_path: Path) -> None:
    """A leaf of the JPEG index with a bad type: verify names the page (no cursor walks it,
    which would abort inside LMDB), then looks up every image's JPEG on its own: those on
    the page are reported, one each, and every other JPEG is still read and checked."""
    copy = Path(shutil.copytree(synthetic_dataset, tmp_path / "dataset"))
    bad = damage_leaf_page(copy, "jpegs", 1)
    reports: list[str] = []
    with open_dataset(copy) as ds:
        assert verify(ds, reports.append) == len(reports) == 1 + len(bad)
    assert "database jpegs: page" in reports[0] and "is damaged" in reports[0]
    assert [r.split(":")[0] for r in reports[1:]] == [f"image {i}" for i in bad]
    assert all("MDB_CORRUPTED" in r for r in reports[1:])
