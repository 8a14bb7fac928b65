"""Faults under a running mount (DESIGN §6): a damaged, vanished or failing backing file turns
into EIO for the files it touches, a log line and an error counter; every other file still
reads correctly, the mount stays up, and once the fault is gone the files read again."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb
import pytest

from tests.conftest import (
    damage_frame,
    damage_leaf_page,
    drop_cache,
    entry_bytes,
    entry_spans,
    flip_byte,
    force_unmount,
    gone,
    mounted,
    vgfs,
    wait_for,
)
from vgfs.build import build
from vgfs.dataset import open_dataset
from vgfs.errors import VGFSError
from vgfs.layout import FRAME, FRAMES_FILE, MAX_DBS
from vgfs.mount import mounted_fs


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release of 120 images and its dataset, built once for this module."""
    from vgfs.sample import write_sample

    root = tmp_path_factory.mktemp("faults")
    write_sample(root / "release", images=120, seed=5, show_progress=False)
    build(root / "release", root / "dataset", show_progress=False)
    return root


@pytest.fixture
def dataset(sample: Path, tmp_path: Path) -> Path:
    """A private copy of the dataset, to damage."""
    return Path(shutil.copytree(sample / "dataset", tmp_path / "data" / "dataset"))


@pytest.fixture(scope="module")
def jpeg_sums(sample: Path) -> dict[int, str]:
    """sha256 of every source JPEG, by image id."""
    return {int(p.stem): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (sample / "release").glob("VG_100K*/*.jpg")}


@pytest.fixture(scope="module")
def graphs(sample: Path) -> dict[int, object]:
    return {e["image_id"]: e
            for e in json.loads((sample / "release" / "scene_graphs.json").read_bytes())}


@contextmanager
def foreground(dataset: Path, mp: Path, *options: str) -> Iterator[Path]:
    """`vgfs mount -f` with its log in a file (returned), unmounted in every case."""
    mp.mkdir(parents=True, exist_ok=True)
    log = mp.parent / f"{mp.name}.log"
    args = [sys.executable, "-m", "vgfs", "mount", "-f", str(dataset), str(mp)]
    for opt in options:
        args += ["-o", opt]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stderr=out, stdout=out)
    try:
        deadline = time.monotonic() + 30
        while not (mp / "README.txt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield log
    finally:
        if proc.poll() is None:
            _stop(proc, 20)
        force_unmount(mp)


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def errors(mp: Path) -> int:
    return sum(json.loads(vgfs("stats", str(mp), "--json").stdout)["errors"].values())


def read(path: Path) -> bytes | int:
    """The file's bytes, or the errno of the failed read."""
    try:
        return path.read_bytes()
    except OSError as e:
        return e.errno


def jpeg_extents(dataset: Path) -> dict[int, tuple[int, int]]:
    """(offset, size) of every JPEG in images.sqfs, by image id, in offset order."""
    with open_dataset(dataset) as ds:
        extents = {i: ds.jpeg_index(i)[:2] for i in ds.image_ids() if ds.jpeg_index(i)}
    return dict(sorted(extents.items(), key=lambda kv: kv[1][0]))


def check_others(mp: Path, jpeg_sums: dict[int, str], graphs: dict, skip: set[int]) -> None:
    """Every JPEG but those in `skip` has its source bytes; a sample of JSON files parses."""
    for image_id, digest in jpeg_sums.items():
        if image_id not in skip:
            data = read(mp / "images" / str(image_id) / "image.jpg")
            assert isinstance(data, bytes), (image_id, data)
            assert hashlib.sha256(data).hexdigest() == digest, image_id
    for image_id in list(graphs)[::10]:
        if image_id not in skip:
            got = json.loads((mp / "images" / str(image_id) / "graph.json").read_bytes())
            assert got == graphs[image_id]


def test_truncated_image(dataset: Path, jpeg_sums: dict, graphs: dict, tmp_path: Path) -> None:
    """images.sqfs cut in half while mounted: JPEGs past the cut give EIO (logged, counted),
    those before it and every JSON file still read; restored, the lost JPEGs read again."""
    sqfs = dataset / "images.sqfs"
    original = sqfs.read_bytes()
    extents = jpeg_extents(dataset)
    cut = list(extents.values())[len(extents) // 2][0]
    lost = {i for i, (off, size) in extents.items() if off + size > cut}
    with foreground(dataset, tmp_path / "mp") as log:
        mp = tmp_path / "mp"
        os.truncate(sqfs, cut)
        for image_id in sorted(lost)[:5]:
            assert read(mp / "images" / str(image_id) / "image.jpg") == errno.EIO
        assert 5 <= errors(mp) <= 10  # the kernel may retry a failed read once
        assert "truncated" in log.read_text()
        check_others(mp, jpeg_sums, graphs, skip=lost)
        with open(sqfs, "r+b") as f:  # the same file, whole again
            f.write(original)
        check_others(mp, jpeg_sums, graphs, skip=set())
        assert mounted_fs(mp) is not None


def test_garbage_in_one_region(dataset: Path, jpeg_sums: dict, graphs: dict,
                               tmp_path: Path) -> None:
    """Garbage over one JPEG's bytes, as read from the device: that JPEG gives EIO (its CRC-32
    is checked when fetched), the others are intact; put right, it reads again."""
    sqfs = dataset / "images.sqfs"
    extents = jpeg_extents(dataset)
    victim = list(extents)[3]
    off, size = extents[victim]
    with foreground(dataset, tmp_path / "mp") as log:
        mp = tmp_path / "mp"
        with open(sqfs, "r+b") as f:
            f.seek(off)
            good = f.read(size)
            f.seek(off)
            f.write(bytes(b ^ 0x5A for b in good))
        drop_cache(sqfs)
        assert read(mp / "images" / str(victim) / "image.jpg") == errno.EIO
        assert 1 <= errors(mp) <= 2
        assert "do not match their checksum" in log.read_text()
        check_others(mp, jpeg_sums, graphs, skip={victim})
        with open(sqfs, "r+b") as f:
            f.seek(off)
            f.write(good)
        drop_cache(sqfs)
        check_others(mp, jpeg_sums, graphs, skip=set())


def test_a_jpeg_damaged_after_its_first_read_is_caught(dataset: Path, jpeg_sums: dict,
                                                       tmp_path: Path) -> None:
    """With no cache (cache_size=0), a JPEG read good once, then changed on the device, is EIO
    at every later read from storage, never its new bytes: the CRC-32 is checked on every
    fetch, not only the first."""
    sqfs = dataset / "images.sqfs"
    victim, (off, size) = list(jpeg_extents(dataset).items())[2]
    path = tmp_path / "mp" / "images" / str(victim) / "image.jpg"
    with foreground(dataset, tmp_path / "mp", "cache_size=0"):
        assert hashlib.sha256(read(path)).hexdigest() == jpeg_sums[victim]
        flip_byte(sqfs, off + size // 2)
        for _ in range(3):
            # Both page caches: images.sqfs's, and the mount's own of the file (keep_cache).
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            assert read(path) == errno.EIO


def test_unlinked_or_replaced_image_keeps_serving(dataset: Path, jpeg_sums: dict, graphs: dict,
                                                 tmp_path: Path) -> None:
    """The mount holds images.sqfs open: unlinking it, or renaming another file over it, changes
    nothing for the running mount (every byte still correct, no error); a new mount then sees
    the new file."""
    sqfs = dataset / "images.sqfs"
    with mounted(dataset, tmp_path / "mp") as mp:
        sqfs.unlink()
        check_others(mp, jpeg_sums, graphs, skip=set())
        junk = dataset / "junk"
        junk.write_bytes(os.urandom(1 << 20))
        junk.rename(sqfs)
        check_others(mp, jpeg_sums, graphs, skip=set())
        assert errors(mp) == 0


def test_damaged_frame(dataset: Path, sample: Path, graphs: dict, jpeg_sums: dict,
                       tmp_path: Path) -> None:
    """One stored zstd frame of region_descriptions.json damaged in the frames file: the files whose
    bytes sit in it (that file, the regions.json of the images whose entries it holds) give
    EIO, a log line and a counted error, compact or pretty (zstd's checksum is checked on every
    read); the other images' regions.json, the file's other frames and every other file read
    as released. Put right, the files read again."""
    source = sample / "release" / "region_descriptions.json"
    spans = entry_spans(source)
    own = entry_bytes(source)
    frames_file = dataset / FRAMES_FILE
    original = frames_file.read_bytes()
    frames = -(-source.stat().st_size // FRAME)
    assert frames >= 5, "the sample's region_descriptions.json is too small for this test"
    start, end = damage_frame(dataset, "region_descriptions.json", frames // 2)
    hit = {i for i, (off, length) in spans.items() if off < end and off + length > start}
    assert 0 < len(hit) < len(spans)
    for options in ((), ("pretty",)):
        mp = tmp_path / f"mp{len(options)}"
        with foreground(dataset, mp, *options) as log:
            for image_id in sorted(hit):
                assert read(mp / "images" / str(image_id) / "regions.json") == errno.EIO
                assert json.loads((mp / "images" / str(image_id) / "meta.json").read_bytes())[
                    "image_id"] == image_id
                if not options:  # pretty: test_damaged_entry_in_pretty_mode_keeps_its_listing
                    assert "regions.json" in os.listdir(mp / "images" / str(image_id))
            assert read(mp / "region_descriptions.json") == errno.EIO
            assert errors(mp) >= len(hit) + 1
            assert f"region_descriptions.json: frame {frames // 2} is damaged" in log.read_text()
            for image_id in sorted(set(spans) - hit):
                data = (mp / "images" / str(image_id) / "regions.json").read_bytes()
                assert json.loads(data) == json.loads(own[image_id])
                assert options or data == own[image_id]
            with open(mp / "region_descriptions.json", "rb") as f:  # far from the damage
                assert os.pread(f.fileno(), 4096, 0) == source.read_bytes()[:4096]
                tail = source.stat().st_size - 4096
                assert os.pread(f.fileno(), 4096, tail) == source.read_bytes()[tail:]
            assert (mp / "objects.json").read_bytes() == (
                sample / "release" / "objects.json").read_bytes()
            check_others(mp, jpeg_sums, graphs, skip=set())
            assert mounted_fs(mp) is not None
            if options:  # the pretty mount: the same bytes again put it right
                with open(frames_file, "r+b") as f:
                    f.write(original)
                for image_id in sorted(hit):
                    data = (mp / "images" / str(image_id) / "regions.json").read_bytes()
                    assert json.loads(data) == json.loads(own[image_id])
                assert (mp / "region_descriptions.json").read_bytes() == source.read_bytes()


def test_damaged_entry_in_pretty_mode_keeps_its_listing(dataset: Path, sample: Path,
                                                         tmp_path: Path) -> None:
    """With -o pretty, a damaged entry gives EIO for its own file only: its image directory
    still lists (find, tar and rsync walk through it), and its other files read."""
    spans = entry_spans(sample / "release" / "region_descriptions.json")
    start, end = damage_frame(dataset, "region_descriptions.json", 2)
    victim = next(i for i, (off, length) in spans.items() if off < end and off + length > start)
    with foreground(dataset, tmp_path / "mp", "pretty"):
        d = tmp_path / "mp" / "images" / str(victim)
        assert read(d / "regions.json") == errno.EIO
        assert json.loads((d / "meta.json").read_bytes())["image_id"] == victim
        assert "meta.json" in os.listdir(d)


@pytest.fixture
def eio_layer(dataset: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The dataset folder seen through tests/tools/eiofs.py: (its path in the layer, control)."""
    layer, control = tmp_path / "layer", tmp_path / "control"
    layer.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "tests.tools.eiofs", str(dataset.parent),
                             str(layer), str(control)], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 20
        while not (layer / dataset.name / "manifest.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "eiofs never came up"
            time.sleep(0.05)
        yield layer / dataset.name, control
    finally:
        control.unlink(missing_ok=True)  # held reads go on: nothing waits on the layer
        subprocess.run(["fusermount3", "-u", "-z", str(layer)], check=False,
                       capture_output=True)
        _stop(proc, 10)
        assert mounted_fs(layer) is None


def test_device_read_errors(eio_layer: tuple[Path, Path], jpeg_sums: dict, graphs: dict,
                            tmp_path: Path) -> None:
    """The dataset on a filesystem that fails reads of one JPEG's byte range with EIO: that
    JPEG gives EIO (logged, counted), the rest read; once the device heals, it reads again."""
    layered, control = eio_layer
    extents = jpeg_extents(layered)
    victim = list(extents)[5]
    off, size = extents[victim]
    with foreground(layered, tmp_path / "mp") as log:
        mp = tmp_path / "mp"
        control.write_text(f"images.sqfs {off} {off + size}")
        assert read(mp / "images" / str(victim) / "image.jpg") == errno.EIO
        failed = errors(mp)
        assert 1 <= failed <= 2
        assert "Input/output error" in log.read_text()
        check_others(mp, jpeg_sums, graphs, skip={victim})
        control.unlink()
        check_others(mp, jpeg_sums, graphs, skip=set())
        assert errors(mp) == failed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda s: s.name)
def test_signal_unmounts_while_a_storage_read_hangs(eio_layer: tuple[Path, Path],
                                                    tmp_path: Path,
                                                    signum: signal.Signals) -> None:
    """Storage that stops answering one read of images.sqfs: the JPEG's reader waits, the rest
    of the mount answers; a signal then unmounts within seconds, the waiting reader gets an
    error instead of waiting forever, and the daemon exits."""
    layered, control = eio_layer
    victim = next(iter(jpeg_extents(layered)))
    mp = tmp_path / "mp"
    with foreground(layered, mp) as log:
        pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
        control.write_text("images.sqfs hang")
        reader = subprocess.Popen(["cat", str(mp / "images" / str(victim) / "image.jpg")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                reader.wait(timeout=1)  # held by storage
            assert "images" in subprocess.run(["ls", str(mp)], capture_output=True, text=True,
                                              timeout=5).stdout.split()
            os.kill(pid, signum)
            assert reader.wait(timeout=5) != 0
            wait_for("the mount to go", lambda: mounted_fs(mp) is None, timeout=5)
            wait_for("the daemon to exit", lambda: gone(pid), timeout=5)
            assert f"unmounted {mp}" in log.read_text()
        finally:
            control.unlink(missing_ok=True)
            reader.kill()
            reader.wait()


@contextmanager
def _held_by_storage(control: Path, name: str, argv: list[str]) -> Iterator[subprocess.Popen]:
    """`argv`, started while the layer holds every read of the file `name` (its page cache
    dropped, the layer's too), and seen to wait; storage answers again when done."""
    control.write_text(f"{name} hang")
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)  # held by storage
        yield proc
    finally:
        control.unlink(missing_ok=True)
        proc.kill()
        proc.wait()


def _images_listed(mp: Path) -> list[str]:
    return subprocess.run(["ls", str(mp / "images")], capture_output=True, text=True,
                          timeout=5).stdout.split()


def test_stalled_storage_holds_only_what_needs_it(eio_layer: tuple[Path, Path],
                                                  graphs: dict, tmp_path: Path) -> None:
    """Storage that stops answering reads of the annotations' frames: a graph.json that must
    be read from it waits, while what needs no storage answers at once (lookups and listings
    from the indexes held in memory, a file whose frame is in the cache, JPEGs); released,
    the waiting read completes with the right bytes. Nothing stalls the event loop."""
    layered, control = eio_layer
    ids = sorted(graphs)
    warm, cold = ids[0], ids[-1]  # far apart: their entries sit in different frames
    mp = tmp_path / "mp"
    with foreground(layered, mp) as log:
        wait_for("the indexes held in memory", lambda: "indexes held" in log.read_text())
        warm_bytes = (mp / "images" / str(warm) / "graph.json").read_bytes()
        with _held_by_storage(control, "annotations.zst",
                              ["cat", str(mp / "images" / str(cold) / "graph.json")]) as reader:
            start = time.monotonic()
            assert _images_listed(mp) == [str(i) for i in sorted(ids, key=str)]
            assert (mp / "images" / str(ids[1])).stat().st_nlink == 2
            assert (mp / "images" / str(warm) / "graph.json").read_bytes() == warm_bytes
            assert len((mp / "images" / str(ids[2]) / "image.jpg").read_bytes()) > 0
            assert time.monotonic() - start < 3, "requests that need no storage waited"
            assert reader.poll() is None  # still held
            control.unlink()
            out, _ = reader.communicate(timeout=10)
            assert reader.returncode == 0 and json.loads(out) == graphs[cold]


def test_stalled_database_holds_only_the_views(eio_layer: tuple[Path, Path], graphs: dict,
                                               tmp_path: Path) -> None:
    """Storage that stops answering reads of data.mdb: a query view, whose database is read
    through LMDB's map, waits in a worker thread, while the images' lookups, listings and
    files (their indexes held in memory) answer at once; released, the view lists its
    images."""
    layered, control = eio_layer
    ids = sorted(graphs)
    mp = tmp_path / "mp"
    with foreground(layered, mp) as log:
        wait_for("the indexes held in memory", lambda: "indexes held" in log.read_text())
        counts = json.loads((mp / "by-object" / "counts.json").read_bytes())
        name = max(counts, key=lambda n: (counts[n], n))
        with _held_by_storage(control, "data.mdb", ["ls", str(mp / "by-object" / name)]) as lister:
            start = time.monotonic()
            assert _images_listed(mp) == [str(i) for i in sorted(ids, key=str)]
            assert json.loads((mp / "images" / str(ids[1]) / "graph.json").read_bytes()) == (
                graphs[ids[1]])
            assert time.monotonic() - start < 3, "requests that need no storage waited"
            assert lister.poll() is None  # still held
            control.unlink()
            out, _ = lister.communicate(timeout=10)
            assert lister.returncode == 0 and len(out.split()) == counts[name] > 0


@pytest.mark.parametrize("command", ["info", "verify", "mount"])
def test_a_cut_short_database_is_one_sentence(dataset: Path, tmp_path: Path,
                                              command: str) -> None:
    """An in-place copy cut short (`truncate -s 65536 data.mdb`): no SIGBUS, one sentence
    naming the file, exit 1, for every command and the Python API."""
    data_mdb = dataset / "annotations.lmdb" / "data.mdb"
    env = lmdb.open(str(data_mdb.parent), readonly=True, lock=False, max_dbs=MAX_DBS)
    needs = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    env.close()
    os.truncate(data_mdb, 65536)
    mp = tmp_path / "mp"
    mp.mkdir()
    args = [command, str(dataset)] + ([str(mp)] if command == "mount" else [])
    proc = vgfs(*args, check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (f"vgfs: error: {data_mdb}: cut short, 65,536 bytes where the"
                                   f" database needs {needs:,}; restore or rebuild the dataset")
    assert mounted_fs(mp) is None
    with pytest.raises(VGFSError, match="cut short"):
        open_dataset(dataset)


def test_a_database_cut_short_under_the_mount(dataset: Path, tmp_path: Path) -> None:
    """Cut short while mounted: the daemon stays up (no SIGBUS); what the indexes held in
    memory answer still reads, what needs the database (a query view) is EIO, logged."""
    mp = tmp_path / "mp"
    with foreground(dataset, mp) as log:
        wait_for("the indexes held in memory", lambda: "indexes held" in log.read_text())
        os.truncate(dataset / "annotations.lmdb" / "data.mdb", 65536)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        assert json.loads((mp / "images" / "1" / "meta.json").read_bytes())["image_id"] == 1
        assert isinstance(read(mp / "objects.json"), bytes)  # frames: not in the database
        with pytest.raises(OSError) as listing:
            os.listdir(mp / "by-object")  # the views' names are read from the database
        assert listing.value.errno == errno.EIO
        assert mounted_fs(mp) is not None
        assert (mp / "README.txt").read_bytes()
        assert "cut short" in log.read_text() and errors(mp) >= 1


def test_reader_killed_mid_read(dataset: Path, jpeg_sums: dict, graphs: dict,
                                tmp_path: Path) -> None:
    """Readers SIGKILLed while reading leave the mount up, without errors or leaked fds."""
    with mounted(dataset, tmp_path / "mp") as mp:
        pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        script = ("import pathlib, sys\n"
                  "while True:\n"
                  "    for p in sorted(pathlib.Path(sys.argv[1]).rglob('*')):\n"
                  "        if p.is_file():\n"
                  "            with open(p, 'rb') as f:\n"
                  "                while f.read(4096): pass\n")
        for delay in (0.2, 0.5, 0.9):
            readers = [subprocess.Popen([sys.executable, "-c", script, str(mp / "images")])
                       for _ in range(4)]
            time.sleep(delay)
            for r in readers:
                r.send_signal(signal.SIGKILL)
                r.wait()
        check_others(mp, jpeg_sums, graphs, skip=set())
        assert errors(mp) == 0
        assert len(os.listdir(f"/proc/{pid}/fd")) == fds


@pytest.fixture
def damaged_page(dataset: Path, jpeg_sums: dict) -> tuple[list[int], list[int]]:
    """The second leaf page of the JPEG index given a bad type flag: (the image ids it holds,
    an order of reads that goes from whole records to damaged ones and back)."""
    bad = damage_leaf_page(dataset, "jpegs", 1)
    good = [i for i in sorted(jpeg_sums) if i not in bad]
    return bad, [good[0], bad[0], good[-1], bad[-1], good[1]]


def test_a_damaged_database_page_fails_only_its_records(dataset: Path, jpeg_sums: dict,
                                                        damaged_page: tuple) -> None:
    """One leaf page of the JPEG index with a bad type flag (MDB_CORRUPTED): the reads that
    reach it fail with one sentence, and every other record still reads, before and after:
    the transaction that saw the error is renewed, not left failing with MDB_BAD_TXN."""
    bad, order = damaged_page
    with open_dataset(dataset) as ds:
        for image_id in order:
            if image_id in bad:
                with pytest.raises(VGFSError, match=r"annotations.lmdb: reading jpegs: the"
                                   r" database is damaged \(mdb_get: MDB_CORRUPTED"):
                    ds.jpeg(image_id)
            else:
                assert hashlib.sha256(ds.jpeg(image_id)).hexdigest() == jpeg_sums[image_id]
        assert sorted(ds.image_ids()) == sorted(jpeg_sums)  # the images database is whole


def test_a_listing_before_any_check_checks_first(dataset: Path, damaged_page: tuple) -> None:
    """A walk of a database that no check has reached yet (a listing in a mount's first
    seconds, before its background check) checks the pages first: one sentence, where the
    cursor would have aborted the process inside LMDB. In a child process, so that an abort
    fails this test and not the whole run."""
    code = ("import sys\nfrom vgfs.dataset import open_dataset\nfrom vgfs.errors import VGFSError\n"
            f"with open_dataset({str(dataset)!r}) as ds:\n"
            "    try:\n        list(ds.image_ids(db='jpegs'))\n"
            "    except VGFSError as e:\n        sys.exit(str(e))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert re.fullmatch(r".*annotations.lmdb: database jpegs: page \d+ is damaged \(it says"
                        r" page \d+, type 0x0, where a leaf belongs\); restore or rebuild the"
                        r" dataset\n", done.stderr)


def test_a_damaged_database_page_under_the_mount(dataset: Path, jpeg_sums: dict,
                                                 damaged_page: tuple, tmp_path: Path) -> None:
    """The same page under a mount: the check before the indexes are held finds it (logged),
    no cursor walks it, which would abort the daemon inside LMDB; the JPEG index is read from
    the database, and only the JPEGs indexed on that page are EIO; everything else reads and
    lists, before and after them."""
    bad, order = damaged_page
    mp = tmp_path / "mp"
    with foreground(dataset, mp) as log:
        wait_for("the damage found", lambda: "database jpegs: page" in log.read_text())
        for image_id in order:
            data = read(mp / "images" / str(image_id) / "image.jpg")
            if image_id in bad:
                assert data == errno.EIO
            else:
                assert hashlib.sha256(data).hexdigest() == jpeg_sums[image_id]
        assert sorted(int(n) for n in os.listdir(mp / "images")) == sorted(jpeg_sums)
        assert json.loads((mp / "images" / str(bad[0]) / "meta.json").read_bytes())
        assert mounted_fs(mp) is not None and errors(mp) >= 2  # the kernel may retry a read
