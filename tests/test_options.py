"""Mount options: parsing `-o` lists, sizes, defaults and errors. Nothing is mounted."""

from __future__ import annotations

import logging
import os
import re

import pytest

from vgfs.errors import VGFSError
from vgfs.options import (
    DEFAULT_CACHE,
    MOUNT8_ONLY,
    OPTIONS,
    MountOptions,
    parse_options,
    parse_size,
)


def test_mount8_options_are_filtered() -> None:
    every = ",".join(sorted(MOUNT8_ONLY))
    opts = parse_options([every, "rw,x-systemd.automount,x-systemd.idle-timeout=60,"
                          "comment=anything,nofail,_netdev", "cache_size=64M,umask=027"])
    assert opts.cache_size == 64 << 20 and opts.umask == 0o027 and not opts.allow_other
    assert parse_options(["allow_other,uid=7,gid=8"]).allow_other
    opts = parse_options(["metrics_file=rel/x.prom,metrics_interval=2.5,log_file=rel/vgfs.log"])
    assert opts.metrics_file == os.path.abspath("rel/x.prom") and opts.metrics_interval == 2.5
    assert opts.log_file == os.path.abspath("rel/vgfs.log")
    for bad in ("bogus", "fsname=x", "remount", "uid=me", "metrics_file="):
        with pytest.raises(VGFSError, match=re.escape(bad)):
            parse_options([f"ro,{bad}"])
    assert parse_options(["bogus,pretty"], sloppy=True).pretty


def test_defaults() -> None:
    """No options (or empty lists) are the defaults; the owner is whoever parses them."""
    for specs in ([], [""], [",,", "ro"]):
        opts = parse_options(specs)
        assert opts == MountOptions()
        assert (opts.cache_size, opts.threads, opts.metrics_interval) == (DEFAULT_CACHE, 16, 15.0)
        assert (opts.uid, opts.gid, opts.umask) == (os.getuid(), os.getgid(), 0)
        assert not (opts.pretty or opts.allow_other or opts.allow_root or opts.metrics_file
                    or opts.log_file)


def test_values() -> None:
    opts = parse_options(["uid=7,gid=8,umask=1777,threads=0,pretty=no", "allow_root"])
    assert (opts.uid, opts.gid, opts.umask, opts.threads) == (7, 8, 0o777, 1)
    assert opts.pretty and opts.allow_root  # a flag's value means nothing
    assert parse_options(["cache_size=1M", "cache_size=2M"]).cache_size == 2 << 20  # last wins


@pytest.mark.parametrize(("text", "size"), [
    ("268435456", 268435456), ("256M", 256 << 20), ("256m", 256 << 20), ("2G", 2 << 30),
    ("2GiB", 2 << 30), ("2GB", 2 << 30), ("64K", 64 << 10), ("1T", 1 << 40), (" 8M ", 8 << 20),
    ("0", 0)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "2X", "-1", "1.5G", "2 G", "2MiBs"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(VGFSError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(("item", "message"), [
    ("threads=many", "-o threads=many: expected a number"),
    ("metrics_interval=soon", "-o metrics_interval=soon: expected a number"),
    ("umask=999", "-o umask=999: expected an octal number such as 022"),
    ("umask=-22", "-o umask=-22: expected an octal number such as 022"),
    ("gid=", "-o gid=: expected a number"),
    ("uid=-1", "-o uid=-1: expected a user id from 0 to 4294967294"),
    ("gid=4294967295", "-o gid=4294967295: expected a group id from 0 to 4294967294"),
    ("cache_size=big", "-o cache_size=big: not a size"),
    ("metrics_file=", "-o metrics_file=: expected a file path"),
    ("log_file=", "-o log_file=: expected a file path"),
    # node_exporter's textfile collector reads *.prom and nothing else.
    ("metrics_file=x.txt", "metrics file x.txt: the name must end in .prom, the only files"
                           " node_exporter's textfile collector reads"),
    ("metrics_file=vgfs.prom.tmp", "metrics file vgfs.prom.tmp: the name must end in .prom")])
def test_bad_values(item: str, message: str) -> None:
    with pytest.raises(VGFSError, match=re.escape(message)):
        parse_options([item])


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(VGFSError) as exc:
        parse_options(["ro,fsname=x"])
    assert str(exc.value) == ("-o fsname=x: unknown option (known: cache_size=, pretty,"
                              " list_views, uid=, gid=, umask=, allow_other, allow_root,"
                              " threads=, readahead_kb=, metrics_file=, metrics_interval=,"
                              " log_file=)")
    assert set(OPTIONS) <= set(vars(MountOptions()))  # every option sets a field of its name


def test_rw_and_sloppy_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vgfs")
    assert parse_options(["rw,bogus=1"], sloppy=True) == MountOptions()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "-o rw: ignored, vgfs mounts are always read-only"),
        ("WARNING", "-o bogus=1: unknown option, ignored")]
