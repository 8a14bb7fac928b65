"""The mount, for real: FUSE, real tools, the official driver, on the real excerpts."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    JPEGS,
    RELEASE,
    force_unmount,
    gone,
    image_id_of,
    mounted,
    vgfs,
    wait_for,
)
from vgfs.dataset import open_dataset
from vgfs.layout import FORMAT
from vgfs.mount import mounted_fs

KIND_SOURCES = {
    "meta.json": "image_data.json",
    "objects.json": "objects.json",
    "attributes.json": "attributes.json",
    "relationships.json": "relationships.json",
    "graph.json": "scene_graphs.json",
    "regions.json": "region_descriptions.json",
    "qa.json": "question_answers.json",
}


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[int, object]]:
    """Each release file's entries by image id, straight from the release."""
    return {name: {image_id_of(e): e for e in json.loads((RELEASE / name).read_bytes())}
            for name in set(KIND_SOURCES.values())}


def test_every_file_equals_its_source(real_mount: Path, sources: dict) -> None:
    """Every JSON file holds the release's entry, every JPEG its bytes, and nothing extra."""
    ids = sorted(sources["image_data.json"])
    assert sorted(int(n) for n in os.listdir(real_mount / "images")) == ids
    for image_id in ids:
        d = real_mount / "images" / str(image_id)
        expected = set(KIND_SOURCES) | ({"image.jpg"} if image_id in JPEGS else set())
        assert set(os.listdir(d)) == expected
        for name, src in KIND_SOURCES.items():
            data = (d / name).read_bytes()
            assert json.loads(data) == sources[src][image_id], (image_id, name)
            assert (d / name).stat().st_size == len(data)
        if image_id in JPEGS:
            assert (d / "image.jpg").read_bytes() == (RELEASE / JPEGS[image_id]).read_bytes()
        by_id = json.loads((real_mount / "by-id" / f"{image_id}.json").read_bytes())
        assert by_id == sources["scene_graphs.json"][image_id]
    for name in ("image_data.json", "synsets.json", "object_alias.txt"):
        assert (real_mount / name).read_bytes() == (RELEASE / name).read_bytes()
    readme = (real_mount / "README.txt").read_text()
    assert "CC BY 4.0" in readme and "Images: 60" in readme


def test_sizes_modes_and_stable_inodes(real_mount: Path, real_dataset: Path,
                                       tmp_path: Path) -> None:
    """st_size and st_blocks are exact, modes 0444/0555, and inode numbers repeat on a second
    mount of the same dataset, which runs at the same time as the first."""
    files = [p for p in real_mount.rglob("*") if p.is_file()]
    assert len(files) > 400
    for p in files:
        st = p.stat()
        assert st.st_size == len(p.read_bytes())
        assert st.st_blocks == (st.st_size + 511) // 512
        assert st.st_mode & 0o7777 == 0o444
        assert st.st_blksize >= 128 * 1024
    assert (real_mount / "images" / "1").stat().st_mode & 0o7777 == 0o555
    inodes = {p.relative_to(real_mount): p.stat().st_ino for p in files}
    with mounted(real_dataset, tmp_path / "second") as second:
        assert {p: (second / p).stat().st_ino for p in inodes} == inodes
        assert len(set(inodes.values())) == len(inodes)


def test_real_tools(real_mount: Path, tmp_path: Path, sources: dict) -> None:
    """ls, cat, find, jq, du, tar, cp -r and sha256sum see what the sources hold."""
    run = lambda cmd: subprocess.run(cmd, shell=True, check=True, capture_output=True,  # noqa: E731
                                     text=True, cwd=real_mount).stdout
    assert run("ls images | wc -l").strip() == "60"
    assert json.loads(run("cat images/1/objects.json")) == sources["objects.json"][1]
    assert int(run("find . -type f | wc -l")) == len(
        [p for p in real_mount.rglob("*") if p.is_file()])
    assert run("jq -r '.objects | length' images/1/objects.json").strip() == str(
        len(sources["objects.json"][1]["objects"]))
    du = int(run("du -s --block-size=1 images/1").split()[0])
    assert du >= sum(p.stat().st_size for p in (real_mount / "images/1").iterdir())
    # tar of one image directory: every member equals the source.
    run(f"tar -cf {tmp_path}/one.tar -C images 2")
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    assert members["2/image.jpg"] == (RELEASE / "VG_100K/2.jpg").read_bytes()
    assert json.loads(members["2/graph.json"]) == sources["scene_graphs.json"][2]
    assert len(members) == 8
    run(f"cp -r images/4 {tmp_path}/copy")
    assert (tmp_path / "copy/image.jpg").read_bytes() == (RELEASE / "VG_100K/4.jpg").read_bytes()
    digest = run("sha256sum images/5/image.jpg").split()[0]
    assert digest == hashlib.sha256((RELEASE / "VG_100K/5.jpg").read_bytes()).hexdigest()


def test_mmap_and_pillow(real_mount: Path, sources: dict) -> None:
    from PIL import Image

    with open(real_mount / "images/3/regions.json", "rb") as f, \
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert json.loads(m[:]) == sources["region_descriptions.json"][3]
    with Image.open(real_mount / "images/1/image.jpg") as im:
        assert im.size == (800, 600)
        im.load()


def test_official_driver(real_mount: Path, synthetic_mount: Path) -> None:
    """visual_genome.local works unchanged with the mount as its data folder. The excerpts'
    synsets.json is cut short, so the driver's synset step runs on the synthetic sample."""
    from visual_genome import local

    images = local.get_all_image_data(str(real_mount))
    assert len(images) == 60 and images[0].id == 1
    by_image = {im.id: im for im in images}
    for image_id in (1, 46, 60):
        data = json.loads((real_mount / f"by-id/{image_id}.json").read_bytes())
        graph = local.parse_graph_local(data, by_image[image_id])
        assert len(graph.objects) == len(data["objects"])
    first = min(int(n) for n in os.listdir(synthetic_mount / "images"))
    graph = local.get_scene_graph(first, images=str(synthetic_mount),
                                  image_data_dir=f"{synthetic_mount}/by-id/",
                                  synset_file=str(synthetic_mount / "synsets.json"))
    assert graph.image.id == first
    assert len(graph.objects) == len(json.loads(
        (synthetic_mount / f"images/{first}/graph.json").read_bytes())["objects"])


@pytest.mark.parametrize("target", ["images/1/objects.json", "images/1", ".", "by-id/1.json",
                                    "README.txt"])
def test_every_mutation_is_erofs(real_mount: Path, target: str) -> None:
    p = real_mount / target
    before = p.read_bytes() if p.is_file() else None
    inside = p if p.is_dir() else p.parent  # new names go inside the mount, never beside it
    attempts = {
        "open O_WRONLY": lambda: os.open(p, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(p, os.O_RDWR),
        "open O_CREAT": lambda: os.open(inside / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        "open O_TRUNC": lambda: os.open(p, os.O_RDONLY | os.O_TRUNC),
        "truncate": lambda: os.truncate(p, 0),
        "unlink/rmdir": lambda: os.unlink(p) if p.is_file() else os.rmdir(p),
        "rename": lambda: os.rename(p, inside / "renamed"),
        "mkdir": lambda: os.mkdir(inside / "d"),
        "symlink": lambda: os.symlink("x", inside / "link"),
        "link": lambda: os.link(p, inside / "hard"),
        "mknod": lambda: os.mknod(inside / "node"),
        "chmod": lambda: os.chmod(p, 0o777),
        "chown": lambda: os.chown(p, 1, 1),
        "utime": lambda: os.utime(p, (0, 0)),
        "setxattr": lambda: os.setxattr(p, "user.x", b"1"),
        "removexattr": lambda: os.removexattr(p, "user.x"),
    }
    # The root is also a mount point: the kernel answers EBUSY or EXDEV before asking us.
    allowed = {errno.EROFS, errno.EBUSY, errno.EXDEV} if target == "." else {errno.EROFS}
    for what, attempt in attempts.items():
        if p.is_dir() and what in ("open O_WRONLY", "open O_RDWR", "open O_TRUNC", "link",
                                      "truncate"):
            allowed_here = allowed | {errno.EISDIR, errno.EPERM}
        else:
            allowed_here = allowed
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno in allowed_here, (what, exc.value)
    if before is not None:
        assert p.read_bytes() == before


@pytest.mark.parametrize("name", ["007", "-1", "1.0", "../x", "+1", " 1", "1 ", "x" * 10_000,
                                  "01", "99999999999999999999999"])
def test_non_canonical_names_do_not_exist(real_mount: Path, name: str) -> None:
    with pytest.raises(OSError) as exc:
        os.stat(real_mount / "images" / name)
    assert exc.value.errno in (errno.ENOENT, errno.ENAMETOOLONG)
    assert (real_mount / "images/1/meta.json").stat().st_size > 0  # still up


def test_negative_lookups_are_cached(real_mount: Path) -> None:
    def lookups() -> int:
        return json.loads(vgfs("stats", str(real_mount), "--json").stdout)["ops"].get(
            "lookup", {"count": 0})["count"]

    missing = real_mount / "images" / "424242"
    assert not missing.exists()
    before = lookups()
    for _ in range(20):
        assert not missing.exists()
    assert lookups() == before


def test_warm_reads_every_lookup_record(real_dataset: Path) -> None:
    """The mount's warm-up pass reads each image's sizes and JPEG index once."""
    with open_dataset(real_dataset) as ds:
        counts = ds.manifest["counts"]
        assert ds.warm(threading.Event()) == counts["images"] + counts["jpegs"]


def test_stats(real_mount: Path) -> None:
    (real_mount / "images/2/image.jpg").read_bytes()
    out = vgfs("stats", str(real_mount)).stdout
    for word in ("read", "cache", "backend", "errors"):
        assert word in out
    stats = json.loads(vgfs("stats", str(real_mount), "--json").stdout)
    assert stats["backend"]["jpeg_bytes"] >= (RELEASE / "VG_100K/2.jpg").stat().st_size
    # Read from a file that lookup finds and no listing shows: invisible to ls and find.
    assert ".vgfs-stats" not in os.listdir(real_mount)
    assert "ops" in json.loads((real_mount / ".vgfs-stats").read_bytes())
    # No extended attributes at all, so the kernel stops asking for them (ls -l asks for
    # three on every file).
    with pytest.raises(OSError) as exc:
        os.getxattr(real_mount / "images/2/meta.json", "security.selinux")
    assert exc.value.errno == errno.EOPNOTSUPP


def _digest_tree(root: str) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_eight_concurrent_readers_get_identical_bytes(real_mount: Path) -> None:
    with ProcessPoolExecutor(8) as pool:
        results = list(pool.map(_digest_tree, [str(real_mount)] * 8))
    assert all(r == results[0] for r in results)
    assert len(results[0]) > 400


def test_pretty_and_owner_options(real_dataset: Path, tmp_path: Path, sources: dict) -> None:
    with mounted(real_dataset, tmp_path / "mp", "pretty,uid=1234,gid=4321") as mp:
        p = mp / "images/1/graph.json"
        data = p.read_bytes()
        assert data.startswith(b"{\n  ")
        assert json.loads(data) == sources["scene_graphs.json"][1]
        st = p.stat()
        assert st.st_size == len(data)
        assert (st.st_uid, st.st_gid) == (1234, 4321)


def test_sigterm_unmounts_and_umount_cleans_up_after_sigkill(real_dataset: Path,
                                                             tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-m", "vgfs", "mount", "-f", str(real_dataset),
                                 str(mp)], stderr=subprocess.PIPE)
        reader = None
        try:
            deadline = time.monotonic() + 30
            while not (mp / "images").exists():
                assert time.monotonic() < deadline and proc.poll() is None, "mount never came up"
                time.sleep(0.05)
            # A reader in flight: it must finish or get an error, never hang.
            reader = subprocess.Popen(
                [sys.executable, "-c", "import pathlib, sys\n"
                 "while True:\n"
                 "    for p in pathlib.Path(sys.argv[1]).glob('images/*/*.json'):\n"
                 "        p.read_bytes()", str(mp)], stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            proc.send_signal(sig)
            proc.wait(timeout=30)
            if sig == signal.SIGTERM:
                assert reader.wait(timeout=30) != 0  # it got an error, and did not hang
                assert mounted_fs(mp) is None
            else:
                reader.kill()
                reader.wait(timeout=30)
                assert mounted_fs(mp) is not None  # a dead mount: ENOTCONN
                with pytest.raises(OSError) as exc:
                    os.listdir(mp)
                assert exc.value.errno == errno.ENOTCONN
                vgfs("umount", str(mp))
                assert mounted_fs(mp) is None and os.listdir(mp) == []
        finally:
            for p in (reader, proc):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
            force_unmount(mp)


def test_mounting_over_a_dead_mount_says_how_to_clear_it(real_dataset: Path,
                                                        tmp_path: Path) -> None:
    """A daemon killed with SIGKILL leaves a dead mount, whose root the kernel may still stat
    from its cache: mounting there, or below it, names the dead mount and how to clear it."""
    with mounted(real_dataset, tmp_path / "mp") as mp:
        pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for("the daemon to die", lambda: gone(pid))
        for target in (mp, mp / "images"):
            r = vgfs("mount", str(real_dataset), str(target), check=False)
            assert (r.returncode, r.stderr) == (1, f"vgfs: error: {mp}: a dead FUSE mount is"
                                                   " there (its process is gone); run `vgfs"
                                                   f" umount {mp}` first\n"), target


def test_umount_refuses_what_is_not_vgfs(real_dataset: Path, tmp_path: Path) -> None:
    """Another FUSE filesystem (squashfuse of the dataset's own image) is not vgfs's to
    unmount: refused in one sentence, and it stays mounted."""
    mp = tmp_path / "squashfuse"
    mp.mkdir()
    subprocess.run(["squashfuse", str(real_dataset / "images.sqfs"), str(mp)], check=True)
    try:
        assert mounted_fs(mp) == "fuse.squashfuse"
        r = vgfs("umount", str(mp), check=False)
        assert r.returncode == 1
        assert r.stderr == f"vgfs: error: {mp}: fuse.squashfuse is mounted there, not vgfs\n"
        assert mounted_fs(mp) == "fuse.squashfuse"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False)
        assert mounted_fs(mp) is None


def test_mount_failures_name_the_reason(real_dataset: Path, tmp_path: Path) -> None:
    mp = tmp_path / "mp"
    mp.mkdir()
    r = vgfs("mount", str(tmp_path / "nope"), str(mp), check=False)
    assert r.returncode != 0 and "not found" in r.stderr and "Traceback" not in r.stderr
    (mp / "file").write_text("x")
    r = vgfs("mount", str(real_dataset), str(mp), check=False)
    assert r.returncode != 0 and "not empty" in r.stderr
    (mp / "file").unlink()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"format": 99}')
    r = vgfs("mount", str(bad), str(mp), check=False)
    assert r.returncode != 0 and "99" in r.stderr and f"format {FORMAT}" in r.stderr
    with mounted(real_dataset, mp):
        r = vgfs("mount", str(real_dataset), str(mp), check=False)
        assert r.returncode != 0 and "already mounted" in r.stderr
    r = vgfs("mount", str(real_dataset), str(mp), "-o", "bogus", check=False)
    assert r.returncode != 0 and "bogus" in r.stderr
    assert mounted_fs(mp) is None


@pytest.mark.parametrize("key", ["tool", "built", "sources", "kinds", "annotations", "images",
                                 "counts"])
def test_manifest_without_a_key_is_named(real_dataset: Path, tmp_path: Path, key: str) -> None:
    """A manifest that lacks a key the code reads: `vgfs mount` and `vgfs info` name the file
    and the key in one sentence, and say to rebuild; no traceback."""
    dataset = Path(shutil.copytree(real_dataset, tmp_path / "dataset"))
    manifest = json.loads((dataset / "manifest.json").read_bytes())
    del manifest[key]
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    mp = tmp_path / "mp"
    mp.mkdir()
    try:
        for args in (["info", str(dataset)], ["mount", str(dataset), str(mp)]):
            r = vgfs(*args, check=False)
            assert (r.returncode, r.stderr) == (1, f"vgfs: error: {dataset}/manifest.json: no"
                                                   f" `{key}`, so it is incomplete or damaged;"
                                                   " rebuild the dataset with `vgfs build`\n")
        assert mounted_fs(mp) is None
    finally:
        force_unmount(mp)


def _rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields


def test_listing_resumes_and_memory_stays_bounded(synthetic_dataset: Path,
                                                  tmp_path: Path) -> None:
    """images/ lists every image once, in id order, across many readdir calls; and reading every
    file keeps the daemon's private memory under cache_size plus a fixed overhead. (The LMDB
    map's pages are page cache, shared and reclaimable: RssFile, reported but not bounded.)"""
    cache_mib, overhead_mib = 1, 120
    # pretty: every JSON file is generated and goes through the LRU.
    with mounted(synthetic_dataset, tmp_path / "mp", f"cache_size={cache_mib}M,pretty") as mp:
        ids = [e["image_id"] for e in json.loads((mp / "image_data.json").read_bytes())]
        listed = os.listdir(mp / "images")
        assert listed == [str(i) for i in sorted(ids)]
        pid = json.loads(vgfs("stats", str(mp), "--json").stdout)["pid"]
        peak = _rss_kib(pid)
        total = 0
        for p in sorted(mp.rglob("*")):
            if p.is_file():
                total += len(p.read_bytes())
                sample = _rss_kib(pid)
                peak = {k: max(v, sample[k]) for k, v in peak.items()}
        assert total > 10 * cache_mib << 20  # far more than the cache went through it
        stats = json.loads(vgfs("stats", str(mp), "--json").stdout)
        assert stats["cache"]["bytes"] <= cache_mib << 20
        assert stats["cache"]["evictions"] > 0
        assert peak["RssAnon"] < (cache_mib + overhead_mib) << 10, peak


@pytest.mark.parametrize("launcher", ["python -m vgfs", "the vgfs script"])
def test_demo(tmp_path: Path, launcher: str) -> None:
    """The README's first command: sample, build, mount and a tour that ends mounted, with an
    unmount command that works as printed, even when no vgfs is on PATH."""
    mp = tmp_path / "demo"
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "vgfs").exists()]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    run = [sys.executable, "-m", "vgfs"] if launcher.startswith("python") else [str(BIN / "vgfs")]
    try:
        out = subprocess.run([*run, "demo", str(mp), "--images", "20"], env=env, check=True,
                             capture_output=True, text=True, timeout=300).stdout
        assert "graph.json" in out
        assert len(os.listdir(mp / "images")) == 20
        umount = out.splitlines()[-2].strip()  # then: "The demo's release and dataset ..."
        assert umount == f"{' '.join(run)} umount {mp}"
        subprocess.run(umount, shell=True, env=env, check=True, timeout=60)
        assert mounted_fs(mp) is None
    finally:
        force_unmount(mp)
