"""Mount options: parsing `-o` lists. Nothing is mounted."""

from __future__ import annotations

import os
import re

import pytest

from vgfs.errors import VGFSError
from vgfs.options import MOUNT8_ONLY, parse_options


def test_mount8_options_are_filtered() -> None:
    every = ",".join(sorted(MOUNT8_ONLY))
    opts = parse_options([every, "rw,x-systemd.automount,x-systemd.idle-timeout=60,"
                          "comment=anything,nofail,_netdev", "cache_size=64M,umask=027"])
    assert opts.cache_size == 64 << 20 and opts.umask == 0o027 and not opts.allow_other
    assert parse_options(["allow_other,uid=7,gid=8"]).allow_other
    opts = parse_options(["metrics_file=rel/x.prom,metrics_interval=2.5"])
    assert opts.metrics_file == os.path.abspath("rel/x.prom") and opts.metrics_interval == 2.5
    for bad in ("bogus", "fsname=x", "remount", "uid=me", "metrics_file="):
        with pytest.raises(VGFSError, match=re.escape(bad)):
            parse_options([f"ro,{bad}"])
    assert parse_options(["bogus,pretty"], sloppy=True).pretty
