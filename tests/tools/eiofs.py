"""A read-only passthrough FUSE filesystem that fails chosen reads with EIO, for fault tests.

    python -m tests.tools.eiofs SOURCE MOUNTPOINT CONTROL

serves the tree under SOURCE at MOUNTPOINT. While the file CONTROL exists and holds
`NAME START END`, every read of the file called NAME that overlaps bytes [START, END) fails
with EIO; remove CONTROL and the same reads succeed again. NAME's reads bypass the page cache
(direct_io), so each one reaches this process.
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3
import trio


class EIOFS(pyfuse3.Operations):
    def __init__(self, source: str, control: str) -> None:
        super().__init__()
        self.control = control
        self.paths = {pyfuse3.ROOT_INODE: source}
        self.inos = {source: pyfuse3.ROOT_INODE}

    def _ino(self, path: str) -> int:
        if path not in self.inos:
            ino = len(self.paths) + pyfuse3.ROOT_INODE
            self.paths[ino], self.inos[path] = path, ino
        return self.inos[path]

    def _attr(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        attr = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
                     "st_mtime_ns", "st_ctime_ns"):
            setattr(attr, name, getattr(st, name))
        attr.st_ino = self._ino(path)
        attr.st_blksize, attr.st_blocks = 4096, st.st_blocks
        return attr

    async def lookup(self, parent: int, name: bytes, ctx: pyfuse3.RequestContext) -> object:
        return self._attr(os.path.join(self.paths[parent], os.fsdecode(name)))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> object:
        return self._attr(self.paths[inode])

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start: int, token: pyfuse3.ReaddirToken) -> None:
        names = sorted(os.listdir(self.paths[fh]))
        for i, name in enumerate(names[start:], start + 1):
            attr = self._attr(os.path.join(self.paths[fh], name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, i):
                return

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> object:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        path = self.paths[inode]
        fd = os.open(path, os.O_RDONLY)
        info = pyfuse3.FileInfo(fh=fd)
        info.direct_io = os.path.basename(path) == self._rule()[0]
        return info

    def _rule(self) -> tuple[str, int, int]:
        try:
            with open(self.control) as f:
                name, start, end = f.read().split()
        except (OSError, ValueError):
            return "images.sqfs", 0, 0
        return name, int(start), int(end)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        name, start, end = self._rule()
        path = os.readlink(f"/proc/self/fd/{fh}")
        if os.path.basename(path) == name and off < end and off + size > start:
            raise pyfuse3.FUSEError(errno.EIO)
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(fh)


def main() -> None:
    source, mountpoint, control = sys.argv[1:4]
    pyfuse3.init(EIOFS(os.path.abspath(source), control), mountpoint,
                 {"fsname=eiofs", "ro", "allow_other"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
