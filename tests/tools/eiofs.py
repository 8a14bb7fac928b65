"""A read-only passthrough FUSE filesystem that fails chosen reads with EIO, for fault tests.

    python -m tests.tools.eiofs SOURCE MOUNTPOINT CONTROL

serves the tree under SOURCE at MOUNTPOINT. While the file CONTROL exists and holds
`NAME START END`, every read of the file called NAME that overlaps bytes [START, END) fails
with EIO; remove CONTROL and the same reads succeed again. NAME's reads (images.sqfs's while
there is no CONTROL) bypass the page cache (direct_io), so each one reaches this process.
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3

from tests.tools.passthrough import Passthrough


class EIOFS(Passthrough):
    name = "eiofs"
    options = frozenset({"allow_other"})

    def __init__(self, source: str, control: str) -> None:
        super().__init__(source)
        self.control = control

    def _rule(self) -> tuple[str, int, int]:
        try:
            with open(self.control) as f:
                name, start, end = f.read().split()
        except (OSError, ValueError):
            return "images.sqfs", 0, 0
        return name, int(start), int(end)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        info = await super().open(inode, flags, ctx)
        info.direct_io = os.path.basename(self.paths[inode]) == self._rule()[0]
        return info

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        name, start, end = self._rule()
        if os.path.basename(self.paths[fh]) == name and off < end and off + size > start:
            raise pyfuse3.FUSEError(errno.EIO)
        return await super().read(fh, off, size)


def main() -> None:
    source, mountpoint, control = sys.argv[1:4]
    EIOFS(os.path.abspath(source), control).serve(mountpoint)


if __name__ == "__main__":
    main()
