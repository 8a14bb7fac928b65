"""`vgfs verify`: read everything a dataset stores and check it against its checksums."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import lmdb
from isal.isal_zlib import crc32

from vgfs.dataset import Dataset
from vgfs.errors import VGFSError
from vgfs.layout import ID, sum_key
from vgfs.squashfs import SquashFSError


def verify(ds: Dataset, report: Callable[[str], None],
           on_progress: Callable[[int], object] | None = None) -> int:
    """Read every record, whole file and JPEG and check them against the stored checksums and
    the manifest's digests. Calls `report` once per mismatch; returns how many there were."""
    bad = 0

    def fail(msg: str) -> None:
        nonlocal bad
        bad += 1
        report(msg)

    txn, sums = ds._txn(), ds.dbs["sums"]
    digests = ds.manifest.get("checksums", {})
    try:
        for kind in ds.kinds:
            digest = hashlib.sha256()
            for key, value in txn.cursor(db=ds.dbs[kind]):
                image_id = ID.unpack(key)[0]
                want = txn.get(sum_key(kind, image_id), db=sums)
                if want is None or crc32(value).to_bytes(4, "big") != bytes(want):
                    fail(f"image {image_id}: {kind} record does not match its checksum")
                digest.update(bytes(key) + bytes(value))
                if on_progress:
                    on_progress(1)
            if digests.get(kind) != digest.hexdigest():
                fail(f"{kind}: records differ from the manifest's digest")
        for name in ds.whole_files:
            digest = hashlib.sha256()
            try:
                for data in ds.whole_chunks(name):
                    digest.update(data)
            except VGFSError as e:
                fail(str(e))
                continue
            if ds.whole_size(name) is None or digest.hexdigest() != digests.get("file:" + name):
                fail(f"{name}: does not match the manifest's sha256")
        digest = hashlib.sha256()
        for key, value in txn.cursor(db=ds.dbs["jpegs"]):
            image_id = ID.unpack(key)[0]
            digest.update(bytes(key) + bytes(value))
            sha = ds.jpeg_index(image_id).sha256
            try:
                data = ds.jpeg(image_id)
            except (OSError, VGFSError, SquashFSError) as e:
                fail(f"image {image_id}: JPEG unreadable: {e}")
                continue
            if hashlib.sha256(data).digest() != bytes(sha):
                fail(f"image {image_id}: JPEG bytes in {ds.images_path.name} do not match their"
                     " sha256")
            if on_progress:
                on_progress(1)
        if "jpegs" in digests and digests["jpegs"] != digest.hexdigest():
            fail("JPEG index differs from the manifest's digest")
    except lmdb.Error as e:
        fail(f"{ds.path / 'annotations.lmdb'}: database damaged: {e}")
    return bad
