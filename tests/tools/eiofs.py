"""A read-only passthrough FUSE filesystem that fails or holds chosen reads, for fault tests.

    python -m tests.tools.eiofs SOURCE MOUNTPOINT CONTROL

serves the tree under SOURCE at MOUNTPOINT. While the file CONTROL exists and holds
`NAME START END`, every read of the file called NAME that overlaps bytes [START, END) fails
with EIO; while it holds `NAME hang`, every read of NAME waits (storage that stopped
answering; the wait is a trio sleep, so every other request is still answered). Remove CONTROL
and the same reads succeed again, held ones included. NAME's reads (images.sqfs's while there
is no CONTROL) bypass the page cache (direct_io), so each one reaches this process.
"""

from __future__ import annotations

import errno
import os
import sys

import pyfuse3
import trio

from tests.tools.passthrough import Passthrough


class EIOFS(Passthrough):
    name = "eiofs"
    options = frozenset({"allow_other"})

    def __init__(self, source: str, control: str) -> None:
        super().__init__(source)
        self.control = control

    def _rule(self) -> list[str]:
        """CONTROL's words: [NAME, START, END] or [NAME, "hang"]; without CONTROL (or while it
        is empty, being written), the name whose reads bypass the page cache."""
        try:
            with open(self.control) as f:
                words = f.read().split()
        except OSError:
            words = []
        return words or ["images.sqfs"]

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        info = await super().open(inode, flags, ctx)
        info.direct_io = os.path.basename(self.paths[inode]) == self._rule()[0]
        return info

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        name = os.path.basename(self.paths[fh])
        while (rule := self._rule()) == [name, "hang"]:
            await trio.sleep(0.05)
        if rule[0] == name and len(rule) == 3 and off < int(rule[2]) and off + size > int(rule[1]):
            raise pyfuse3.FUSEError(errno.EIO)
        return await super().read(fh, off, size)


def main() -> None:
    source, mountpoint, control = sys.argv[1:4]
    EIOFS(os.path.abspath(source), control).serve(mountpoint)


if __name__ == "__main__":
    main()
