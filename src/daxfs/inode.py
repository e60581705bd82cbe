"""inode: inodes, their extent maps, and iomap().

An Inode is the in-memory form of a 256-byte slot: attributes plus a sorted
list of extents (file_off, dev_off, length), all multiples of 4 KiB, never
overlapping, and merged whenever two neighbours are contiguous both in the
file and on the device, so that iomap() answers with maximal extents.  The
first six extents live in the slot; the rest in a chain of checksummed
4 KiB extent blocks.

iomap(off, len) is the single source of truth for where a file's bytes
are: read, write, getmap and map() are loops over its answer.  Every change
to the extent list bumps ``generation``, so a holder of an old answer can
tell it is stale.

InodeTable owns the slots: loading and caching inodes, staging their bytes
into a transaction, the free-slot list, and the vectorised scan at mount
that validates every live inode and recounts which blocks they own (the
allocator is rebuilt from that; no allocation bitmap is stored).
"""

from __future__ import annotations

import bisect
import errno
import heapq
import operator
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from crc32c import crc32c as crc32c_of

from .journal import Transaction
from .layout import (
    BLOCK,
    CHUNK,
    DEVICE_TYPES,
    EXTENTS_PER_BLOCK,
    INLINE_EXTENTS,
    INODE_DTYPE_FIELDS,
    INODE_HEAD,
    INODE_MAGIC,
    INODE_SIZE,
    ITABLE_GROW,
    PATH_MAX,
    CorruptionError,
    InodeRecord,
    Superblock,
    is_dir_mode,
    pack_extblock,
    pack_itable_head,
    pack_slot,
    unpack_extblock,
    unpack_inline_slot,
    unpack_inode,
    unpack_itable_head,
)

INODE_DTYPE = np.dtype(INODE_DTYPE_FIELDS)
assert INODE_DTYPE.itemsize == INODE_SIZE


_file_offset = operator.itemgetter(0)  # an extent's (file offset, device offset, length)
_length = operator.itemgetter(2)


class NotCached(Exception):
    """A query running with no pool lock needed a slot or a directory this
    mount has not cached: it runs again under the lock."""


def dead_commit_error() -> OSError:
    """What a read-only mount says when it must read homes a dead writer's
    commit left half stored (InodeTable.stalled)."""
    return OSError(
        errno.EAGAIN,
        "a process died inside a commit to this pool: what it was changing "
        "cannot be read until a writer finishes that commit (the next call of "
        "a writable mount, or a new writable mount)",
    )


@dataclass(frozen=True)
class Extent:
    """One answer of iomap: file range -> device range (or a hole)."""

    file_offset: int
    device_offset: int | None
    length: int
    kind: Literal["mapped", "hole"]


def data_runs(extents: list[Extent]) -> list[tuple[int, int]]:
    """The file ranges [start, end) of an iomap answer that hold data: mapped
    extents that touch in the file merged (they may lie apart on the device),
    holes left out, so that a copy writes each run at once and leaves the
    holes unallocated."""
    runs: list[list[int]] = []
    for e in extents:
        if e.kind != "mapped":
            continue
        if runs and runs[-1][1] == e.file_offset:
            runs[-1][1] += e.length
        else:
            runs.append([e.file_offset, e.file_offset + e.length])
    return [(s, e) for s, e in runs]


@dataclass
class Inode:
    ino: int
    mode: int
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    size: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    btime: int = 0
    parent: int = 0
    generation: int = 0
    extents: list[tuple[int, int, int]] = field(default_factory=list)
    ext_blocks: list[int] = field(default_factory=list)  # device offsets of the chain
    ext_images: list[bytes] = field(default_factory=list)  # their current bytes
    staged_generation: int = -1  # extent blocks match this
    open_count: int = 0  # handles in this process
    rdev: int = 0  # a device node's number (layout: rdev); 0 for other types

    @property
    def is_dir(self) -> bool:
        return is_dir_mode(self.mode)

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the data area the inode owns: its extents and the blocks
        of its extent chain (st_blocks counts them, as ext4 counts its tree
        blocks, so that a tree's st_blocks and statvfs's free add up)."""
        ex = self.extents
        if len(ex) == 1:  # (most files; every stat asks: a third of the time)
            return ex[0][2]
        return sum(map(_length, ex)) + len(self.ext_blocks) * BLOCK

    # -- extent map --------------------------------------------------------
    def device_at(self, off: int, length: int) -> int | None:
        """Where file offset ``off`` lies on the device, when one extent maps
        all of [off, off+length); else None (a hole, or several extents).
        The read path's common case, without building an iomap."""
        ex = self.extents
        if len(ex) == 1:  # (most files: no search, a twentieth of a 4 KiB read)
            foff, doff, n = ex[0]
        else:
            i = bisect.bisect_right(ex, off, key=_file_offset) - 1
            if i < 0:
                return None
            foff, doff, n = ex[i]
        if foff <= off and off + length <= foff + n:
            return doff + (off - foff)
        return None

    def maps_whole_chunk(self, w0: int) -> bool:
        """Does one extent map window [w0, w0 + 2 MiB) onto one aligned chunk?"""
        ex = self.extents
        i = bisect.bisect_right(ex, w0, key=_file_offset) - 1
        if i < 0:
            return False
        foff, doff, n = ex[i]
        return foff + n >= w0 + CHUNK and (doff + w0 - foff) % CHUNK == 0

    def iomap(self, off: int, length: int) -> list[Extent]:
        """Maximal extents covering [off, off+length), holes included."""
        out: list[Extent] = []
        end = off + length
        i = max(0, bisect.bisect_right(self.extents, off, key=_file_offset) - 1)
        pos = off
        for foff, doff, n in self.extents[i:]:
            if foff >= end:
                break
            if foff + n <= pos:
                continue
            if foff > pos:
                out.append(Extent(pos, None, foff - pos, "hole"))
                pos = foff
            stop = min(end, foff + n)
            out.append(Extent(pos, doff + (pos - foff), stop - pos, "mapped"))
            pos = stop
        if pos < end:
            out.append(Extent(pos, None, end - pos, "hole"))
        return out

    def holes(self, off: int, length: int) -> list[tuple[int, int]]:
        return [(e.file_offset, e.length) for e in self.iomap(off, length) if e.kind == "hole"]

    def next_data(self, off: int) -> int | None:
        """The first file offset at or after ``off`` inside an extent, or None.
        A bisection: a loop of SEEK_DATA calls over a file of many extents
        stays linear (iomap would list every extent to the end each time)."""
        ex = self.extents
        i = max(0, bisect.bisect_right(ex, off, key=_file_offset) - 1)
        for foff, _doff, n in ex[i : i + 2]:
            if foff + n > off:
                return max(off, foff)
        return None

    def next_hole(self, off: int) -> int:
        """The first file offset at or after ``off`` in no extent (past the
        last one, if the extents run on); costs the extents it passes."""
        ex = self.extents
        i = max(0, bisect.bisect_right(ex, off, key=_file_offset) - 1)
        pos = off
        while i < len(ex):
            foff, _doff, n = ex[i]
            if foff > pos:
                break
            pos = max(pos, foff + n)
            i += 1
        return pos

    def device_before(self, off: int) -> int | None:
        """Device offset just past the extent ending at or before file offset ``off``."""
        i = bisect.bisect_right(self.extents, off, key=_file_offset) - 1
        if i < 0:
            return None
        foff, doff, n = self.extents[i]
        if foff + n == off:
            return doff + n
        return None

    def add_extent(self, foff: int, doff: int, n: int) -> None:
        """Map a hole [foff, foff+n) to device [doff, doff+n), merging neighbours."""
        ex = self.extents
        i = bisect.bisect_left(ex, foff, key=_file_offset)
        if i > 0:
            pf, pd, pn = ex[i - 1]
            assert pf + pn <= foff, "extent overlaps its predecessor"
            if pf + pn == foff and pd + pn == doff:
                i -= 1
                foff, doff, n = pf, pd, pn + n
                del ex[i]
        if i < len(ex):
            nf, nd, nn = ex[i]
            assert foff + n <= nf, "extent overlaps its successor"
            if foff + n == nf and doff + n == nd:
                n += nn
                del ex[i]
        ex.insert(i, (foff, doff, n))
        self.generation += 1

    def tail_ranges(self, off: int) -> list[tuple[int, int]]:
        """Device ranges mapped at or after block-aligned file offset ``off``."""
        assert off % BLOCK == 0
        out = []
        for foff, doff, n in self.extents:
            if foff + n > off:
                skip = max(0, off - foff)
                out.append((doff + skip, n - skip))
        return out

    def unmap(self, off: int, length: int) -> list[tuple[int, int]]:
        """Unmap block-aligned [off, off+length), splitting extents that cross
        its edges; return the device ranges (offset, length) it held."""
        assert off % BLOCK == 0 and length % BLOCK == 0
        end = off + length
        keep: list[tuple[int, int, int]] = []
        freed: list[tuple[int, int]] = []
        for f, d, n in self.extents:
            if f + n <= off or f >= end:
                keep.append((f, d, n))
                continue
            if f < off:
                keep.append((f, d, off - f))
            s, e = max(f, off), min(f + n, end)
            freed.append((d + s - f, e - s))
            if f + n > end:
                keep.append((end, d + end - f, f + n - end))
        if freed:
            self.extents = keep
            self.generation += 1
        return freed

    def cut_from(self, off: int) -> list[tuple[int, int]]:
        """Unmap everything at or after block-aligned ``off``; return device ranges."""
        freed = self.tail_ranges(off)
        if freed:
            self.extents = [(f, d, min(n, off - f)) for f, d, n in self.extents if f < off]
            self.generation += 1
        return freed

    # -- records -----------------------------------------------------------
    def slot(self, ext_block: int) -> bytes:
        """pack_inode(self.record(ext_block)), with no record built."""
        ex = self.extents
        return pack_slot(
            self.ino, self.generation, self.mode, self.nlink, self.uid, self.gid, self.size,
            self.atime, self.mtime, self.ctime, self.btime, self.parent, len(ex), self.rdev,
            ext_block, ex[:INLINE_EXTENTS],
        )  # fmt: skip

    def record(self, ext_block: int) -> InodeRecord:
        return InodeRecord(
            self.ino,
            self.generation,
            self.mode,
            self.nlink,
            self.uid,
            self.gid,
            self.size,
            self.atime,
            self.mtime,
            self.ctime,
            self.btime,
            self.parent,
            len(self.extents),
            ext_block,
            self.extents[:INLINE_EXTENTS],
            self.rdev,
        )


def symlink_target(inode: Inode, buf) -> bytes:
    """A symlink's target bytes.  Raises CorruptionError unless the inode is a
    symlink whose target is 1..4095 bytes (Linux's limit), lies wholly in its blocks (symlink()
    writes it so; a hole would read as NULs) and contains no NUL byte -- so
    a damaged size can neither fake a target nor ask for terabytes."""
    if not stat.S_ISLNK(inode.mode) or not 0 < inode.size < PATH_MAX:
        raise CorruptionError(f"inode {inode.ino}: not a symlink with a target of 1..4095 bytes")
    if inode.holes(0, inode.size):
        raise CorruptionError(f"inode {inode.ino}: not a symlink with its target in its blocks")
    raw = b"".join(
        bytes(buf[e.device_offset : e.device_offset + e.length]) for e in inode.iomap(0, inode.size)
    )
    if b"\0" in raw:
        raise CorruptionError(f"inode {inode.ino}: symlink target contains NUL")
    return raw


BlockAlloc = Callable[[Transaction], int]
BlockFree = Callable[[Transaction, int], None]


def _inode(
    ino, mode, nlink, uid, gid, size, atime, mtime, ctime, btime, parent, generation, rdev,
    extents, blocks, images,
) -> Inode:  # fmt: skip
    """The Inode a slot's fields make (its extent chain's ``blocks`` and
    their ``images`` beside), as every load builds it."""
    return Inode(
        ino, mode, nlink, uid, gid, size, atime, mtime, ctime, btime, parent, generation,
        extents, blocks, images, staged_generation=generation,
        # (another type's non-zero word is damage: the checker's to zero)
        rdev=rdev if stat.S_IFMT(mode) in DEVICE_TYPES else 0,
    )  # fmt: skip


class InodeTable:
    """The inode slots: load, cache, stage, allocate, and scan at mount."""

    def __init__(self, region, sb: Superblock):
        self.region = region
        self.sb = sb
        self.cache: dict[int, Inode] = {}
        # Slots whose homes lag said changes (logical.py): the bytes the
        # absorb will write (all zero for a file said unlinked).  A load, or
        # a look at whether the number is free, takes these, not the home.
        self.pending: dict[int, bytes] = {}
        # Free inode numbers: a map of which are free now, and a cursor no
        # free number lies below, so that the lowest is found without a list
        # of millions of numbers (a byte per slot, not an int object).
        self._listed = np.zeros(0, dtype=bool)
        self._scanned_to = 0  # see _lowest_free
        self._free_heap: list[int] = []
        self.nfree = 0
        self.tail_chunks: dict[int, int] = {}  # (scan) chunk -> inode
        # Slots from ``limit`` on are not in use yet (version 4: the header in
        # slot 0 says where; grow() takes more).  Free numbers below it are
        # ``nfree``; the scan reads nothing past it.
        self.limit = sb.inode_count
        # Set while a query runs with no pool lock (coherence.without_lock):
        # slots are homes, which a committing process stores before it
        # publishes, so such a query may read only what is cached.
        self.cache_only = False
        # Set (by coherence.catch_up) while a read-only mount finds a commit a
        # dead writer left unpublished, its homes perhaps half stored: only a
        # writer can finish it, so until then no slot or directory block is
        # loaded (dead_commit_error); what is cached, as of the last
        # published commit, is still answered.
        self.stalled = False

    def slot_off(self, ino: int) -> int:
        return self.sb.itable_off + ino * INODE_SIZE

    def valid_ino(self, ino: int) -> bool:
        """A slot in use: a number at or past the limit names a free slot,
        whatever its bytes (an entry naming one is damage)."""
        return 1 <= ino < self.limit

    @property
    def free_count(self) -> int:
        """Free inode numbers, those the table has yet to grow into included."""
        return self.nfree + self.sb.inode_count - self.limit

    # -- the table's in-use limit (slot 0) ---------------------------------
    def read_limit(self) -> int:
        off = self.sb.itable_off
        raw = self.region.buf[off : off + INODE_SIZE]
        if self.sb.version < 4:
            if any(raw):
                raise CorruptionError("inode slot 0 is reserved", off)
            return self.sb.inode_count
        return unpack_itable_head(raw, off, self.sb.inode_count)

    def grow(self, txn: Transaction) -> tuple[int, int]:
        """Take up to ITABLE_GROW more slots into use, in ``txn``.  They may
        hold anything (mkfs writes none past the limit; a device keeps old
        bytes), so they are zeroed here; the caller makes the zeros durable
        before the record that moves the limit over them (as file data),
        and holds the exclusive pool lock, under which no other process's
        record can name them.  Returns the zeroed (offset, length)."""
        old, new = self.limit, min(self.sb.inode_count, self.limit + ITABLE_GROW)
        if new == old:
            raise OSError(errno.ENOSPC, "no free inodes")
        off, n = self.slot_off(old), (new - old) * INODE_SIZE
        self.region.reserve(off, n)
        self.region.zero(off, n)
        self.region.drop_homes([(off, n)])  # (a private copy would hide the zeros)
        txn.write(self.slot_off(0), pack_itable_head(new))
        self._extend(new)
        return off, n

    def _extend(self, new: int) -> None:
        if new > self.limit:
            self._listed = np.concatenate((self._listed, np.ones(new - self.limit, dtype=bool)))
            self.nfree += new - self.limit
            self._scanned_to = min(self._scanned_to, self.limit)
            self.limit = new

    # -- load --------------------------------------------------------------
    def get(self, ino: int) -> Inode:
        inode = self.cache.get(ino)
        if inode is None:
            if self.cache_only:
                raise NotCached(ino)
            if self.stalled:
                raise dead_commit_error()
            inode = self.cache[ino] = self._load(ino)
        return inode

    def from_slot(self, raw: bytes, ino: int, offset: int) -> Inode:
        """The inode a slot's bytes ``raw`` say, every extent in the slot (a
        said create's, logical.py): checked as a load from the table is
        (``offset``: where the bytes are, for the error)."""
        if not self.valid_ino(ino):
            raise CorruptionError(f"reference to inode {ino}, outside the inode table")
        f, extents = unpack_inline_slot(raw, offset, ino)
        _m, _f, _i, gen, mode, nlink, uid, gid, size, atime, mtime, ctime, btime, parent = f[:14]
        self.validate_extents(ino, extents, size, offset)
        return _inode(
            ino, mode, nlink, uid, gid, size, atime, mtime, ctime, btime, parent, gen, f[15],
            extents, [], [],
        )  # fmt: skip

    def _load(self, ino: int) -> Inode:
        if not self.valid_ino(ino):
            raise CorruptionError(f"reference to inode {ino}, outside the inode table")
        off = self.slot_off(ino)
        pending = self.pending.get(ino)
        if pending is not None:
            return self.from_slot(pending, ino, off)
        r = unpack_inode(self.region.buf[off : off + INODE_SIZE], off, ino)
        extents, blocks, images = list(r.inline), [], []
        seen: set[int] = set()  # the chain's blocks: a chain that repeats one is damage
        nxt = r.ext_block
        while len(extents) < r.nextents:
            if not self._is_data_block(nxt) or nxt in seen:
                raise CorruptionError(f"inode {ino}: bad extent block pointer {nxt:#x}", off)
            raw = self.region.buf[nxt : nxt + BLOCK]
            following, more = unpack_extblock(raw, nxt, ino)
            # Every block but the last is full, so a chain is never longer
            # than its extents need (a chain of one-extent blocks through
            # the whole pool is damage, not a legal file).
            if len(more) != min(r.nextents - len(extents), EXTENTS_PER_BLOCK):
                raise CorruptionError(f"inode {ino}: extent count mismatch", nxt)
            seen.add(nxt)
            blocks.append(nxt)
            images.append(bytes(raw))
            extents += more
            nxt = following
        self.validate_extents(ino, extents, r.size, off)
        return self._inode_of(r, extents, blocks, images)

    @staticmethod
    def _inode_of(r, extents, blocks, images) -> Inode:
        return _inode(
            r.ino, r.mode, r.nlink, r.uid, r.gid, r.size, r.atime, r.mtime, r.ctime,
            r.btime, r.parent, r.generation, r.rdev, extents, blocks, images,
        )  # fmt: skip

    def _is_data_block(self, off: int) -> bool:
        return self.sb.data_off <= off < self.sb.data_end and off % BLOCK == 0

    def validate_extents(self, ino: int, extents, size: int, off: int) -> None:
        prev_end = 0
        for foff, doff, n in extents:
            ok = (
                foff % BLOCK == 0
                and doff % BLOCK == 0
                and n % BLOCK == 0
                and n > 0
                and foff >= prev_end
                and self.sb.data_off <= doff
                and doff + n <= self.sb.data_end
            )
            if not ok:
                raise CorruptionError(f"inode {ino}: extent ({foff}, {doff}, {n}) invalid", off)
            prev_end = foff + n

    # -- stage -------------------------------------------------------------
    def stage(self, inode: Inode, txn: Transaction, alloc: BlockAlloc, free: BlockFree) -> None:
        """Put the inode's slot and any changed extent blocks into ``txn``."""
        if inode.staged_generation != inode.generation:
            self._stage_extent_blocks(inode, txn, alloc, free)
            inode.staged_generation = inode.generation
        head = inode.ext_blocks[0] if inode.ext_blocks else 0
        txn.write(self.slot_off(inode.ino), inode.slot(head))

    def _stage_extent_blocks(
        self, inode: Inode, txn: Transaction, alloc: BlockAlloc, free: BlockFree
    ) -> None:
        if len(inode.extents) <= INLINE_EXTENTS and not inode.ext_blocks:
            return  # (the usual file: every extent inline, no block to write or free)
        overflow = inode.extents[INLINE_EXTENTS:]
        groups = [
            overflow[i : i + EXTENTS_PER_BLOCK] for i in range(0, len(overflow), EXTENTS_PER_BLOCK)
        ]
        while len(inode.ext_blocks) < len(groups):
            inode.ext_blocks.append(alloc(txn))
            inode.ext_images.append(b"")
        while len(inode.ext_blocks) > len(groups):
            free(txn, inode.ext_blocks.pop())
            inode.ext_images.pop()
        for i, group in enumerate(groups):
            nxt = inode.ext_blocks[i + 1] if i + 1 < len(groups) else 0
            image = pack_extblock(inode.ino, nxt, group)
            if image != inode.ext_images[i]:
                txn.write(inode.ext_blocks[i], image)
                inode.ext_images[i] = image

    def stage_free(self, inode: Inode, txn: Transaction, free: BlockFree) -> None:
        """Zero the slot and release extent blocks (the data extents are the caller's)."""
        for blk in inode.ext_blocks:
            free(txn, blk)
        txn.write(self.slot_off(inode.ino), bytes(INODE_SIZE))

    # -- inode numbers -----------------------------------------------------
    def take_ino(self) -> int:
        """The lowest free inode number, taken."""
        ino = self._lowest_free()
        if ino is None:
            raise OSError(28, "no free inodes")
        self._listed[ino] = False
        self.nfree -= 1
        return ino

    def _lowest_free(self) -> int | None:
        # Every free number below _scanned_to is in _free_heap (return_ino
        # puts it there), with some since taken (take_in, forget: skipped
        # here).  Past it, windows that double: the scan only moves past
        # numbers seen taken, so the search is amortised linear in the
        # table, and a run of creates pops a heap instead of scanning.
        heap, listed = self._free_heap, self._listed
        while heap:
            ino = heapq.heappop(heap)
            if listed[ino]:
                return ino
        i, step = self._scanned_to, 4096
        while i < len(listed):
            window = listed[i : i + step]
            found = np.flatnonzero(window)
            if len(found):
                self._scanned_to = i + len(window)
                self._free_heap = heap = (found + i).tolist()  # (ascending: a heap)
                return heapq.heappop(heap)
            i += len(window)
            step = min(step * 2, 1 << 20)
        self._scanned_to = len(listed)
        return None

    def return_ino(self, ino: int) -> None:
        if not self._listed[ino]:
            self._listed[ino] = True
            self.nfree += 1
            if ino < self._scanned_to:
                heap = self._free_heap
                heapq.heappush(heap, ino)
                if len(heap) > 2 * self.nfree + 64:
                    # Numbers taken by take_in (another process sharing the
                    # pool, leases.py) are never popped: drop them.
                    self._free_heap = sorted({i for i in heap if self._listed[i]})

    def return_inos(self, inos: list[int]) -> None:
        """return_ino of each of ``inos`` (distinct), the table's flags set
        at once (said unlinks give theirs back in batches: logical.py)."""
        listed = self._listed
        new = [ino for ino in inos if not listed[ino]]
        if not new:
            return
        listed[new] = True
        self.nfree += len(new)
        heap, scanned = self._free_heap, self._scanned_to
        for ino in new:
            if ino < scanned:
                heapq.heappush(heap, ino)
        if len(heap) > 2 * self.nfree + 64:
            self._free_heap = sorted({i for i in heap if listed[i]})

    def take(self, ino: int) -> bool:
        """Take number ``ino`` if it is free (a said create made again)."""
        if not self.is_free(ino):
            return False
        self._listed[ino] = False
        self.nfree -= 1
        return True

    def take_in(self, start: int, count: int) -> int | None:
        """The lowest free number in [start, start+count), taken; None if none."""
        listed = self._listed[start : start + count]
        if not len(listed):
            return None
        first = int(listed.argmax())  # (the method: np.argmax's dispatch costs more)
        if not listed[first]:
            return None
        ino = start + first
        self._listed[ino] = False
        self.nfree -= 1
        return ino

    def free_map(self) -> np.ndarray:
        """Which inode numbers are free (index = number); do not change it."""
        return self._listed

    def slot_is_free(self, ino: int) -> bool:
        """Slot ``ino`` on the media has magic 0, as the mount-time scan counts
        free slots."""
        return INODE_HEAD.unpack_from(self.region.buf, self.slot_off(ino))[1] == 0

    def slot_free_now(self, ino: int) -> bool:
        """Is slot ``ino`` free as committed: as said changes left it (a
        file said unlinked: all zero in ``pending``, its home not written
        yet), else as the media holds it?"""
        pending = self.pending.get(ino)
        return self.slot_is_free(ino) if pending is None else not any(pending)

    def is_free(self, ino: int) -> bool:
        return self.valid_ino(ino) and bool(self._listed[ino])

    def in_use(self, ino: int) -> bool:
        """A number that names an inode now: inside the table, not free, and
        not said free (a file said unlinked keeps its number until the
        batch that gives numbers back, its slot all zero in ``pending``
        meanwhile: a call by its number, as the FUSE server makes, found a
        damaged slot there)."""
        if not self.valid_ino(ino) or self._listed[ino]:
            return False
        pending = self.pending.get(ino)
        return pending is None or any(pending)

    def forget(self, ino: int) -> None:
        """Another process changed slot ``ino``: drop what we cached of it and
        learn from the media whether the number is free now."""
        self.cache.pop(ino, None)
        if ino == 0:  # the header: the table grew
            self._extend(self.read_limit())
            return
        if not self.valid_ino(ino):
            return
        if self.slot_free_now(ino):
            self.return_ino(ino)
        elif self._listed[ino]:
            self._listed[ino] = False
            self.nfree -= 1

    # -- scan at mount -----------------------------------------------------
    def scan(self) -> tuple[tuple[np.ndarray, np.ndarray], list[int]]:
        """Validate every live slot; return (used block runs, orphan inos).

        A block owned twice, an extent outside the data area or a bad
        checksum raises CorruptionError: the allocator must not be built on
        a map it cannot trust.
        """
        if self.stalled:
            raise dead_commit_error()
        sb = self.sb
        self.limit = self.read_limit()
        table = np.frombuffer(
            self.region.buf, dtype=INODE_DTYPE, count=self.limit, offset=sb.itable_off
        )
        magic = table["magic"].copy()
        magic[0] = 0  # the header
        live = np.flatnonzero(magic == INODE_MAGIC)
        stray = np.flatnonzero((magic != INODE_MAGIC) & (magic != 0))
        if len(stray):
            raise CorruptionError(f"inode {int(stray[0])}: bad magic", self.slot_off(int(stray[0])))
        self._check_slots(table, live)
        starts, lengths = self._inline_extents(table, live)
        extra_s, extra_n = self._overflow_extents(table, live)
        starts = np.concatenate([starts, np.array(extra_s, dtype=np.uint64)])
        lengths = np.concatenate([lengths, np.array(extra_n, dtype=np.uint64)])
        used = self._used_runs(starts, lengths)
        self.tail_chunks = self._tail_chunks(table, live)
        self._listed = magic == 0
        self._listed[0] = False
        self._scanned_to, self._free_heap = 1, []
        self.nfree = int(np.count_nonzero(self._listed))
        orphans = live[table["nlink"][live] == 0].tolist()
        del table
        return used, orphans

    def _check_slots(self, table, live: np.ndarray) -> None:
        """Every live slot's checksum, and its number naming its own slot."""
        base = self.sb.itable_off
        claims = np.flatnonzero(table["ino"][live] != live)
        if len(claims):
            ino = int(live[claims[0]])
            raise CorruptionError(f"inode {ino}: slot claims another inode", self.slot_off(ino))
        # One C call per slot over a view of the table (100,000 slots: ~40 ms).
        slots = self.region.buf[base : base + len(table) * INODE_SIZE]
        crc = crc32c_of
        bad = [
            ino
            for ino, want in zip(live.tolist(), table["crc"][live].tolist(), strict=True)
            if crc(slots[ino * INODE_SIZE + 4 : (ino + 1) * INODE_SIZE]) != want
        ]
        if bad:
            raise CorruptionError(f"inode {bad[0]}: checksum mismatch", self.slot_off(bad[0]))

    def _inline_extents(self, table, live) -> tuple[np.ndarray, np.ndarray]:
        # Extent by extent over the slots that have it (most have one): no
        # copy of every live slot's six extents.
        n = table["nextents"][live]
        ext = table["ext"]
        starts, lengths = [], []
        for k in range(INLINE_EXTENTS):
            having = live[n > k]
            if not len(having):
                break
            starts.append(ext[having, k, 1])
            lengths.append(ext[having, k, 2])
        empty = np.zeros(0, dtype=np.uint64)
        return np.concatenate(starts or [empty]), np.concatenate(lengths or [empty])

    def _tail_chunks(self, table, live) -> dict[int, int]:
        """The chunks (numbered from the data area's start) that hold the last
        window of a file of 2 MiB or more cut short of a chunk, each with
        that file's inode number: a trimmed tail, whose free part the
        allocator keeps for last (alloc.hold_tail), found again at every
        mount.  Inline extents only (a file with more is fragmented anyway).
        Runs after _used_runs checked the extents."""
        big = live[table["size"][live] >= CHUNK]
        size = table["size"][big].astype(np.int64)
        nextents = table["nextents"][big]
        ext = table["ext"]
        chunks, owners = [], []
        for k in range(INLINE_EXTENTS):
            having = nextents > k
            if not having.any():
                break
            window = (size[having] - 1) // CHUNK * CHUNK  # the last window's offset
            fo, dev, n = (ext[big[having], k, i].astype(np.int64) for i in range(3))
            at = dev - self.sb.data_off + (window - fo)  # where that window lies
            reaches = (fo <= window) & (window < fo + n)
            tail = reaches & (fo + n < window + CHUNK) & (at % CHUNK == 0)  # cut short
            chunks.append(at[tail] // CHUNK)
            owners.append(big[having][tail])
        if not chunks:
            return {}
        return dict(
            zip(np.concatenate(chunks).tolist(), np.concatenate(owners).tolist(), strict=True)
        )

    def _overflow_extents(self, table, live) -> tuple[list[int], list[int]]:
        starts: list[int] = []
        lengths: list[int] = []
        for ino in live[table["nextents"][live] > INLINE_EXTENTS].tolist():
            inode = self._load(ino)
            for _f, d, n in inode.extents[INLINE_EXTENTS:]:
                starts.append(d)
                lengths.append(n)
            for blk in inode.ext_blocks:
                starts.append(blk)
                lengths.append(BLOCK)
        return starts, lengths

    def _used_runs(self, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The extents as sorted block runs (first block, count) of the data
        area, checked to lie inside it and never to share a block: n log n
        in the number of extents, whatever the pool's size."""
        sb = self.sb
        starts = starts.astype(np.int64)
        lengths = lengths.astype(np.int64)
        bad = (
            (starts < sb.data_off)
            | (starts + lengths > sb.data_end)
            | (lengths <= 0)
            | (starts % BLOCK != 0)
            | (lengths % BLOCK != 0)
        )
        if bad.any():
            raise CorruptionError("an extent lies outside the data area", int(starts[bad][0]))
        order = np.argsort(starts, kind="stable")
        first = (starts[order] - sb.data_off) // BLOCK
        count = lengths[order] // BLOCK
        shared = np.flatnonzero(first[1:] < first[:-1] + count[:-1])
        if len(shared):
            raise CorruptionError(
                "a block is owned twice", sb.data_off + int(first[shared[0] + 1]) * BLOCK
            )
        return first, count
