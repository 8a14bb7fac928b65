"""Read-only, thread-safe SquashFS 4.0 reader in pure Python.

Only what serving regular files needs: walk the tree, look up a path, read byte ranges.
All I/O goes through ``os.pread`` on one descriptor, so threads never share a seek position.
Every size, count and offset read from the image is checked against the image before it is
used, so a corrupt or hostile image ends in :class:`SquashFSError` instead of a hang, a crash
or an unbounded allocation.
"""

from __future__ import annotations

import errno
import importlib
import lzma
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import NamedTuple

from vgfs.cache import LRUCache

NO_FRAGMENT = 0xFFFFFFFF
_UNCOMPRESSED_BLOCK = 1 << 24  # set in a data block size word when the block is stored as is
_BLOCK_SIZE_MASK = _UNCOMPRESSED_BLOCK - 1
_META_SIZE = 8192  # decompressed size of every metadata block but the last of a table
_META_UNCOMPRESSED = 0x8000
_NO_TABLE = 0xFFFFFFFFFFFFFFFF
_MAGIC = 0x73717368
_MAX_DEPTH = 1024  # deeper than any real tree; bounds work on a crafted one
_MAX_DIR_COUNT = 256  # entries per directory header, as mksquashfs and the kernel use
_MAX_NAME = 256
_LZMA_MEMLIMIT = 64 << 20  # real blocks need about their dictionary, at most 1 MiB

# Inode types; 8..14 are the "extended" variants of 1..7 (3..7 are links and special files).
_DIR, _FILE, _LDIR, _LFILE = 1, 2, 8, 9

_SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")
_INODE_HEADER = struct.Struct("<HHHHII")
_DIR_INODE = struct.Struct("<IIHHI")  # block_index, nlink, size, block_offset, parent
_LDIR_INODE = struct.Struct("<IIIIHHI")  # nlink, size, block_index, parent, indexes, offset, xattr
_FILE_INODE = struct.Struct("<IIII")  # start_block, fragment, fragment_offset, size
_LFILE_INODE = struct.Struct("<QQQIIII")  # start, size, sparse, nlink, frag, frag_offset, xattr
_DIR_INDEX = struct.Struct("<III")  # listing offset, directory block, name length - 1
_DIR_HEADER = struct.Struct("<III")  # count - 1, inode block, inode number
_DIR_ENTRY = struct.Struct("<HhHH")  # inode offset, inode number delta, type, name length - 1
_FRAGMENT = struct.Struct("<QII")  # start, size word, unused
_U16 = struct.Struct("<H")

_COMPRESSORS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}


class _Superblock(NamedTuple):
    """The fields of the 96-byte superblock, in order."""

    magic: int
    inodes: int
    mtime: int
    block_size: int
    fragments: int
    compressor: int
    block_log: int
    flags: int
    ids: int
    major: int
    minor: int
    root: int  # inode reference of the root directory
    bytes_used: int
    id_table: int
    xattr_table: int
    inode_table: int
    dir_table: int
    fragment_table: int
    export_table: int


class SquashFSError(Exception):
    """The image is unreadable: one sentence naming the image file and the problem."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A regular file in the image, with what is needed to read it without the inode."""

    path: str
    size: int
    start_block: int
    block_sizes: tuple[int, ...]
    fragment: int
    fragment_offset: int

    def extent(self) -> tuple[int, int] | None:
        """(offset, size) when the file is one contiguous uncompressed run of the image.

        Lets callers serve the file straight from the image (pread, sendfile) without this
        reader; images built with ``-noD -no-fragments -no-sparse`` give one for every file.
        """
        if self.fragment != NO_FRAGMENT:
            return None
        total = 0
        for word in self.block_sizes:
            if not word & _UNCOMPRESSED_BLOCK or not word & _BLOCK_SIZE_MASK:
                return None
            total += word & _BLOCK_SIZE_MASK
        return (self.start_block, self.size) if total == self.size else None


def _decompressor(name: str) -> Callable[[bytes, int], bytes]:
    """Return f(data, limit) giving at most limit + 1 bytes, so callers can spot oversize output.

    Raises ImportError naming what to install when the compressor's module is missing.
    """
    if name == "gzip":

        def gzip(data: bytes, limit: int) -> bytes:
            d = zlib.decompressobj()
            out = d.decompress(data, limit + 1)
            if not d.eof and len(out) <= limit:
                raise ValueError("truncated zlib stream")
            return out

        return gzip
    if name in ("xz", "lzma"):
        fmt = lzma.FORMAT_XZ if name == "xz" else lzma.FORMAT_ALONE

        def xz(data: bytes, limit: int) -> bytes:
            d = lzma.LZMADecompressor(fmt, memlimit=_LZMA_MEMLIMIT)
            out = d.decompress(data, limit + 1)
            if not d.eof and len(out) <= limit:
                raise ValueError("truncated lzma stream")
            return out

        return xz
    if name == "zstd":
        zstandard = _import("zstandard", "the Python package 'zstandard'")

        def zstd(data: bytes, limit: int) -> bytes:
            # A frame that declares its size is decoded into a buffer of that size, whatever
            # max_output_size says, so refuse oversize declarations before decoding.
            if zstandard.frame_content_size(data) > limit:
                raise ValueError("zstd frame too large")
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=limit + 1)

        return zstd
    if name == "lz4":
        lz4_block = _import("lz4.block", "the Python package 'lz4'")
        return lambda data, limit: lz4_block.decompress(data, uncompressed_size=limit + 1)
    lzo = _import("lzo", "vgfs[lzo] (pip install 'vgfs[lzo]')")  # an extra: see pyproject.toml
    return lambda data, limit: lzo.decompress(data, False, limit + 1)


def _import(module: str, what: str) -> ModuleType:
    """Import a compressor's module, or raise ImportError naming what to install for it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(what) from None


class _Cursor:
    """Sequential reader over a metadata table, crossing block boundaries as needed."""

    __slots__ = ("_image", "_buf", "_pos", "_next", "_end")

    def __init__(self, image: SquashFSImage, block: int, offset: int, end: int) -> None:
        self._image = image
        self._end = end
        self._buf, self._next = image._meta_block(block, end)
        if offset > len(self._buf):
            raise image._corrupt(f"metadata offset {offset} is past its block at byte {block}")
        self._pos = offset

    def read(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos + n <= len(buf):
            self._pos = pos + n
            return buf[pos : pos + n]
        parts = [buf[pos:]]
        need = n - len(parts[0])
        while need:
            if self._next >= self._end:
                raise self._image._corrupt(f"metadata runs past its table's end at {self._end}")
            buf, self._next = self._image._meta_block(self._next, self._end)
            parts.append(buf[:need])
            need -= len(parts[-1])
        self._buf, self._pos = buf, len(parts[-1])
        return b"".join(parts)

    def unpack(self, st: struct.Struct) -> tuple:
        pos = self._pos
        if pos + st.size <= len(self._buf):
            self._pos = pos + st.size
            return st.unpack_from(self._buf, pos)
        return st.unpack(self.read(st.size))


class SquashFSImage:
    """An open SquashFS 4.0 image; walk, lookup and read are safe to call from many threads."""

    def __init__(self, path: str | os.PathLike, cache_bytes: int = 32 << 20) -> None:
        self._path = os.fspath(path)
        self._cache = LRUCache(cache_bytes)
        try:
            self._fd: int | None = os.open(self._path, os.O_RDONLY)
        except OSError as e:
            raise SquashFSError(f"Cannot open SquashFS image {self._path}: {e.strerror}.") from e
        try:
            self._size = self._bytes_used = os.fstat(self._fd).st_size
            self._read_superblock()
        except BaseException:
            self.close()
            raise

    def _read_superblock(self) -> None:
        if self._size < _SUPERBLOCK.size:
            raise self._corrupt(f"the file is only {self._size} bytes, smaller than a superblock")
        sb = _Superblock._make(_SUPERBLOCK.unpack(self._pread(0, _SUPERBLOCK.size)))
        if sb.magic != _MAGIC:
            raise SquashFSError(f"{self._path} is not a SquashFS image: it lacks the magic number.")
        if (sb.major, sb.minor) != (4, 0):
            raise SquashFSError(
                f"SquashFS image {self._path} is version {sb.major}.{sb.minor}, "
                "but only 4.0 is supported."
            )
        if not 12 <= sb.block_log <= 20 or sb.block_size != 1 << sb.block_log:
            raise self._corrupt(f"block size {sb.block_size} and block log {sb.block_log} disagree")
        if sb.compressor not in _COMPRESSORS:
            raise self._corrupt(f"compressor id {sb.compressor} is unknown")
        if not _SUPERBLOCK.size <= sb.bytes_used <= self._size:
            raise self._corrupt(f"it claims {sb.bytes_used} bytes but the file has {self._size}")
        starts = [sb.inode_table, sb.dir_table, sb.id_table]
        optional = (sb.xattr_table, sb.fragment_table, sb.export_table)
        starts += [t for t in optional if t != _NO_TABLE]
        if not all(_SUPERBLOCK.size <= t < sb.bytes_used for t in starts):
            raise self._corrupt("a table starts outside the image")
        # The id table is never read, but its index is the image's last or next-to-last table,
        # so checking that it fits catches most truncated images before any parsing.
        if not sb.ids or sb.id_table + 8 * -(-sb.ids * 4 // _META_SIZE) > sb.bytes_used:
            raise self._corrupt(f"its id table cannot hold {sb.ids} ids")
        if sb.inode_table >= sb.dir_table:
            raise self._corrupt("the inode table does not come before the directory table")
        self.block_size = sb.block_size
        self.compressor = _COMPRESSORS[sb.compressor]
        self._bytes_used = sb.bytes_used
        self._inode_table = sb.inode_table
        self._dir_table = sb.dir_table
        # A metadata table ends where the next table starts, whatever order a writer chose.
        self._inode_end = min([t for t in starts if t > sb.inode_table] + [sb.bytes_used])
        self._dir_end = min([t for t in starts if t > sb.dir_table] + [sb.bytes_used])
        self._root = sb.root
        if (sb.root >> 16) >= self._inode_end - sb.inode_table or sb.root & 0xFFFF >= _META_SIZE:
            raise self._corrupt("the root inode reference is out of range")
        try:
            self._decompress = _decompressor(self.compressor)
        except ImportError as e:
            raise SquashFSError(
                f"SquashFS image {self._path} uses {self.compressor} compression; "
                f"install {e.args[0]} to read it."
            ) from None
        self._fragment_count = sb.fragments
        self._fragment_index = self._read_fragment_index(sb)

    def _read_fragment_index(self, sb: _Superblock) -> tuple[int, ...]:
        """Where each metadata block of the fragment table starts."""
        fragments = sb.fragments
        if not fragments:
            return ()
        n = -(-fragments // (_META_SIZE // _FRAGMENT.size))
        if sb.fragment_table == _NO_TABLE or sb.fragment_table + 8 * n > sb.bytes_used:
            raise self._corrupt(f"its fragment table cannot hold {fragments} fragments")
        return struct.unpack(f"<{n}Q", self._pread(sb.fragment_table, 8 * n))

    # -- errors and raw I/O -------------------------------------------------------------

    def _corrupt(self, problem: str) -> SquashFSError:
        return SquashFSError(f"SquashFS image {self._path} is corrupt: {problem}.")

    def _pread(self, offset: int, size: int) -> bytes:
        if self._fd is None:
            raise SquashFSError(f"SquashFS image {self._path} is closed.")
        if offset < 0 or offset + size > self._bytes_used:
            raise self._corrupt(f"{size} bytes at byte {offset} lie outside the image")
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as e:
            raise SquashFSError(f"Cannot read SquashFS image {self._path}: {e.strerror}.") from e
        if len(data) != size:
            raise self._corrupt(f"the file is truncated at byte {offset + len(data)}")
        return data

    def _inflate(self, data: bytes, limit: int, where: str) -> bytes:
        try:
            out = self._decompress(data, limit)
        except Exception:  # noqa: BLE001 - each compressor has its own error types
            raise self._corrupt(f"{where} is not valid {self.compressor} data") from None
        if len(out) > limit:
            raise self._corrupt(f"{where} decompresses to more than {limit} bytes")
        return out

    # -- blocks ---------------------------------------------------------------------------

    def _meta_block(self, pos: int, end: int) -> tuple[bytes, int]:
        """Decompressed metadata block at absolute byte pos, and where the next one starts."""
        key = ("m", pos)
        hit = self._cache.get(key)
        if hit is None:
            if not 0 <= pos <= end - 2:
                raise self._corrupt(f"metadata block at byte {pos} is outside its table")
            (header,) = _U16.unpack(self._pread(pos, 2))
            size = header & ~_META_UNCOMPRESSED
            if not 0 < size <= _META_SIZE or pos + 2 + size > end:
                raise self._corrupt(f"metadata block at byte {pos} has bad size {size}")
            data = self._pread(pos + 2, size)
            if not header & _META_UNCOMPRESSED:
                data = self._inflate(data, _META_SIZE, f"metadata block at byte {pos}")
                if not data:
                    raise self._corrupt(f"metadata block at byte {pos} is empty")
            hit = (data, pos + 2 + size)
            self._cache.put(key, hit, len(data))
        elif hit[1] > end:
            raise self._corrupt(f"metadata block at byte {pos} is outside its table")
        return hit

    def _compressed_block(self, pos: int, size: int, length: int) -> bytes:
        """Data block of size bytes at pos that must decompress to exactly length bytes."""
        key = ("d", pos, length)
        data = self._cache.get(key)
        if data is None:
            data = self._inflate(self._pread(pos, size), length, f"data block at byte {pos}")
            if len(data) != length:
                raise self._corrupt(f"data block at byte {pos} has {len(data)} bytes, not {length}")
            self._cache.put(key, data)
        return data

    def _fragment(self, index: int) -> bytes:
        """Decompressed fragment block number index, of up to block_size bytes."""
        if not 0 <= index < self._fragment_count:
            raise self._corrupt(f"fragment {index} does not exist")
        key = ("f", index)
        data = self._cache.get(key)
        if data is None:
            per_block = _META_SIZE // _FRAGMENT.size
            table, offset = divmod(index, per_block)
            buf, _ = self._meta_block(self._fragment_index[table], self._bytes_used)
            if (offset + 1) * _FRAGMENT.size > len(buf):
                raise self._corrupt(f"fragment table entry {index} is missing")
            start, word, _ = _FRAGMENT.unpack_from(buf, offset * _FRAGMENT.size)
            size = word & _BLOCK_SIZE_MASK
            if word >> 25 or not 0 < size <= self.block_size or start + size > self._bytes_used:
                raise self._corrupt(f"fragment {index} has bad position or size word {word:#x}")
            data = self._pread(start, size)
            if not word & _UNCOMPRESSED_BLOCK:
                data = self._inflate(data, self.block_size, f"fragment block at byte {start}")
            self._cache.put(key, data)
        return data

    # -- inodes and directories ------------------------------------------------------------

    def _inode(self, ref: int) -> tuple[int, _Cursor]:
        """Inode type at reference ref, and a cursor just past the common inode header."""
        cur = _Cursor(self, self._inode_table + (ref >> 16), ref & 0xFFFF, self._inode_end)
        itype = cur.unpack(_INODE_HEADER)[0]
        if not 1 <= itype <= 14:
            raise self._corrupt(f"inode {ref:#x} has unknown type {itype}")
        return itype, cur

    def _listing(self, itype: int, cur: _Cursor) -> tuple[int, int, int, int]:
        """(block, offset, size, index count) of a directory inode's listing."""
        if itype == _DIR:
            block, _, size, offset, _ = cur.unpack(_DIR_INODE)
            indexes = 0
        else:
            _, size, block, _, indexes, offset, _ = cur.unpack(_LDIR_INODE)
        # The stored size counts the "." and ".." entries the listing leaves out.
        if size < 3 or offset >= _META_SIZE:
            raise self._corrupt(f"directory listing has bad size {size} or offset {offset}")
        return block, offset, size - 3, indexes

    def _entries(self, block: int, offset: int, size: int) -> Iterator[tuple[bytes, int, int]]:
        """(name, basic inode type, inode reference) of each entry in size bytes of listing."""
        cur = _Cursor(self, self._dir_table + block, offset, self._dir_end)
        while size > 0:
            count, inode_block, _ = cur.unpack(_DIR_HEADER)
            size -= _DIR_HEADER.size
            if count >= _MAX_DIR_COUNT or inode_block >= self._inode_end - self._inode_table:
                raise self._corrupt(f"directory header at block {block} is out of range")
            for _ in range(count + 1):
                inode_offset, _, etype, name_size = cur.unpack(_DIR_ENTRY)
                if name_size >= _MAX_NAME or not 1 <= etype <= 7 or inode_offset >= _META_SIZE:
                    raise self._corrupt(f"directory entry in block {block} is out of range")
                name = cur.read(name_size + 1)
                size -= _DIR_ENTRY.size + name_size + 1
                if size < 0:
                    raise self._corrupt(f"directory listing in block {block} overruns its size")
                if b"/" in name or b"\0" in name or name in (b".", b".."):
                    raise self._corrupt(f"directory entry name {name!r} is not a file name")
                yield name, etype, inode_block << 16 | inode_offset

    def _file_entry(self, path: str, itype: int, cur: _Cursor) -> FileEntry:
        if itype == _FILE:
            start, fragment, frag_offset, size = cur.unpack(_FILE_INODE)
        else:
            start, size, _, _, fragment, frag_offset, _ = cur.unpack(_LFILE_INODE)
        bs = self.block_size
        if fragment == NO_FRAGMENT:
            count = -(-size // bs)
        elif fragment >= self._fragment_count or frag_offset + size % bs > bs:
            raise self._corrupt(f"{path} has bad fragment {fragment} at offset {frag_offset}")
        else:
            count = size // bs
        # The block list cannot hold more than its table could (at most 8 KiB per 3 bytes), so
        # an absurd size is refused before reading or allocating anything for it.
        if count * 4 > (self._inode_end - self._inode_table) * (_META_SIZE // 3 + 1):
            raise self._corrupt(f"{path} claims an absurd size of {size} bytes")
        words = struct.unpack(f"<{count}I", cur.read(4 * count)) if count else ()
        if start + sum(w & _BLOCK_SIZE_MASK for w in words) > self._bytes_used:
            raise self._corrupt(f"data blocks of {path} run past the end of the image")
        return FileEntry(path, size, start, words, fragment, frag_offset)

    # -- public API ------------------------------------------------------------------------

    def walk(self) -> Iterator[FileEntry]:
        """Every regular file in the image, depth-first, each directory in stored (sorted) order.

        A hard-linked file appears under each of its names; symlinks and special files are left
        out. Corruption found part-way raises SquashFSError after the entries before it.
        """
        try:
            itype, cur = self._inode(self._root)
            if itype not in (_DIR, _LDIR):
                raise self._corrupt("the root inode is not a directory")
            block, offset, size, _ = self._listing(itype, cur)
            seen = {self._root}
            stack = [("", self._entries(block, offset, size))]
            while stack:
                prefix, entries = stack[-1]
                for raw, etype, ref in entries:
                    if etype not in (_DIR, _FILE):
                        continue
                    name = prefix + raw.decode("utf-8", "surrogateescape")
                    itype, cur = self._inode(ref)
                    if itype != etype and itype != etype + 7:
                        raise self._corrupt(f"{name} is type {etype} but its inode is {itype}")
                    if etype == _FILE:
                        yield self._file_entry(name, itype, cur)
                        continue
                    if ref in seen or len(stack) >= _MAX_DEPTH:
                        raise self._corrupt(f"directory {name} loops back or nests too deeply")
                    seen.add(ref)
                    block, offset, size, _ = self._listing(itype, cur)
                    stack.append((name + "/", self._entries(block, offset, size)))
                    break
                else:
                    stack.pop()
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise self._corrupt(f"parsing failed with {type(e).__name__}") from e

    def lookup(self, path: str) -> FileEntry:
        """The regular file at a "/"-separated path; FileNotFoundError if there is none.

        Symlinks are not followed, and directories and other non-regular files count as absent.
        """
        parts = [p for p in path.split("/") if p]
        try:
            itype, cur = self._inode(self._root)
            for part in parts:
                if itype not in (_DIR, _LDIR):
                    break
                found = self._find(itype, cur, part.encode("utf-8", "surrogateescape"))
                if found is None:
                    break
                etype, ref = found
                itype, cur = self._inode(ref)
                if itype != etype and itype != etype + 7:
                    raise self._corrupt(f"{path} is type {etype} but its inode is {itype}")
            else:
                if itype in (_FILE, _LFILE):
                    return self._file_entry("/".join(parts), itype, cur)
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise self._corrupt(f"parsing failed with {type(e).__name__}") from e
        raise FileNotFoundError(errno.ENOENT, f"No regular file in {self._path}", path)

    def _find(self, itype: int, cur: _Cursor, name: bytes) -> tuple[int, int] | None:
        """(type, inode reference) of name in a directory, or None; uses its index if any."""
        block, offset, size, indexes = self._listing(itype, cur)
        start_block, start_offset, skipped = block, offset, 0
        # Index entries name the first entry of a header at each metadata block boundary of
        # the listing; the last one not after name is where a sorted scan can start.
        for _ in range(indexes):
            position, index_block, name_size = cur.unpack(_DIR_INDEX)
            if name_size >= _MAX_NAME or position > size:
                raise self._corrupt(f"directory index for {name!r} is out of range")
            if cur.read(name_size + 1) > name:
                break
            start_block, start_offset = index_block, (offset + position) % _META_SIZE
            skipped = position
        for entry, etype, ref in self._entries(start_block, start_offset, size - skipped):
            if entry == name:
                return etype, ref
            if entry > name:
                break
        return None

    def read(self, entry: FileEntry, offset: int = 0, size: int = -1) -> bytes:
        """size bytes of a file from offset (all to its end when size < 0); short at its end."""
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        end = entry.size if size < 0 else min(entry.size, offset + size)
        if offset >= end:
            return b""
        extent = entry.extent()
        if extent is not None:
            return self._pread(extent[0] + offset, end - offset)
        try:
            return self._read_blocks(entry, offset, end)
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise self._corrupt(f"reading {entry.path} failed with {type(e).__name__}") from e

    def _read_blocks(self, entry: FileEntry, offset: int, end: int) -> bytes:
        bs = self.block_size
        first = offset // bs
        words = entry.block_sizes
        pos = entry.start_block + sum(w & _BLOCK_SIZE_MASK for w in words[:first])
        parts = []
        for i in range(first, min(len(words), -(-end // bs))):
            word, base = words[i], i * bs
            size = word & _BLOCK_SIZE_MASK
            length = min(bs, entry.size - base)
            lo, hi = max(offset - base, 0), min(end - base, length)
            if word >> 25 or size > bs:
                raise self._corrupt(f"block {i} of {entry.path} has bad size word {word:#x}")
            if not size:
                parts.append(bytes(hi - lo))  # sparse block
            elif not word & _UNCOMPRESSED_BLOCK:
                parts.append(self._compressed_block(pos, size, length)[lo:hi])
            elif size == length:
                parts.append(self._pread(pos + lo, hi - lo))
            else:
                raise self._corrupt(f"stored block {i} of {entry.path} is not {length} bytes")
            pos += size
        tail = len(words) * bs
        if end > tail:
            if entry.fragment == NO_FRAGMENT:
                raise self._corrupt(f"{entry.path} has too few blocks for its size")
            frag = self._fragment(entry.fragment)
            base = entry.fragment_offset - tail
            if entry.fragment_offset < 0 or base + entry.size > len(frag):
                raise self._corrupt(f"fragment of {entry.path} is shorter than its tail")
            parts.append(frag[base + max(offset, tail) : base + end])
        return b"".join(parts)

    def close(self) -> None:
        """Close the descriptor; no other thread may be using the image any more."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> SquashFSImage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
