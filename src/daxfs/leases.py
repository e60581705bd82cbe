"""leases: each process's own allocation windows, in the pool's process table.

When several processes write one pool, each places its small blocks (files
under 2 MiB, directory and extent blocks) in chunks of its own, its
*windows* (and a large write's whole chunks in windows leased for it
just before: ``lease_chunks``), and takes new inode numbers from a range
of its own, like ext4's per-group preallocation and OCFS2's per-node
local allocation.
Their files then do not interleave in chunks (a process's chunks empty
when its files go, and return whole) nor in the inode table, and a
process never needs another's free space to create a file.  A process
alone on a pool keeps the single-process policy (alloc.py): windows are
taken only while another live process is in the table.

The space a process uses is what its journal records claim
(coherence.py): a lease that is stale, damaged or crafted can cost
placement, never what is committed, and the table is neither journaled
nor persisted.  Between live processes a window is more than a hint: an
optimistic change stores a new file's bytes into blocks it took from its
windows *before* its check and commit (so that two processes copy data
at once, not one at a time under the pool lock), so nobody else may
allocate in a live process's window.  Allocations that may land anywhere
hide the free blocks of others' windows (``fenced``); a process that
finds no room elsewhere takes the windows back (``_reclaim_windows``):
it clears them from their owners' slots, then waits on each owner's
*store lock* (an OFD lock on the slot's second byte, held shared while
the owner stores), and an owner checks under that lock that the windows
it stores into are still in its slot (``hold_for_stores``), and again
under the exclusive lock before it commits (``still_ours``): the taker
waited for its stores, not its commit, and counts the blocks it took as
free until that commit.

The table (SPEC.md, "Process table") lives in the journal header block:
a 64-byte header whose first word is a generation number, bumped by every
change, then 15 slots of 64 bytes.  A slot: magic, pid, the inode range
(start, count), and up to 12 window chunks (chunk number + 1; 0 = none).
A writable mount takes a free slot and holds an OFD write lock on its
first byte for as long as it is mounted; the kernel drops the lock when
the process dies, so a slot whose lock nobody holds belongs to nobody and
is cleared by the next process that looks.  All of this runs under the
exclusive pool lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

import numpy as np

from .alloc import enospc, free_runs
from .layout import BLOCKS_PER_CHUNK, JOURNAL_HEADER_OFF
from .pins import pinned_by_others, set_lock

TABLE_OFF = JOURNAL_HEADER_OFF + 3072
TABLE_HEAD = struct.Struct("<Q56x")  # generation
SLOT = struct.Struct("<IIII12I")  # magic, pid, ino_start, ino_count, windows (chunk + 1)
NSLOTS = 15
SLOT_MAGIC = 0x5250_5844  # "DXPR"
MAX_WINDOWS = 12
# Spare windows (_new_window): with the window it needs, a process takes
# more while its windows' room is under ROOM_WRITES times the request that
# asked, between ROOM_MIN and ROOM_MAX blocks.  Each new window is a change
# run the exclusive way (and, for a first write, its data copied under the
# lock); a writer of 1 MiB files filled a window every two files.  Two
# processes writing 256 zarr chunks of 1 MiB: room for 2 chunks 177 ms,
# 4 chunks 162 ms, 6 chunks 152 ms (one process alone: 206 ms).
ROOM_WRITES = 12
ROOM_MIN, ROOM_MAX = 2 * BLOCKS_PER_CHUNK, 8 * BLOCKS_PER_CHUNK
INO_RANGE = 256  # inode numbers leased at a time
# Whole chunks leased at most for one optimistic large write (a piece of
# LEASED_CHUNKS chunks: data.DataPath.SHARED_PIECE), within MAX_WINDOWS.
LEASED_CHUNKS = 8

TABLE_BYTES = TABLE_HEAD.size + NSLOTS * SLOT.size

assert TABLE_HEAD.size == SLOT.size == 64
assert TABLE_OFF + TABLE_BYTES == JOURNAL_HEADER_OFF + 4096


def slot_off(i: int) -> int:
    return TABLE_OFF + TABLE_HEAD.size + i * SLOT.size


def read_slot(buf, i: int) -> tuple[int, int, int, int, list[int]]:
    magic, pid, ino_start, ino_count, *windows = SLOT.unpack_from(buf, slot_off(i))
    return magic, pid, ino_start, ino_count, [w - 1 for w in windows if w]


class Leases:
    """One mount's slot in the process table and the windows it holds."""

    def __init__(self, fs) -> None:
        self.fs = fs
        self.slot: int | None = None
        self.windows: list[int] = []  # chunk numbers
        self.ino_range: tuple[int, int] | None = None
        self.gen = -1  # the table generation our view of the others is from
        self.others_chunks: set[int] = set()
        self.others_inos: list[tuple[int, int]] = []
        self.shared = False  # another live process is in the table

    # -- the table ---------------------------------------------------------
    @property
    def _buf(self) -> memoryview:
        return self.fs.region.buf

    def _bump(self) -> None:
        bump_generation(self.fs.region)

    def join(self) -> None:
        """Take a free slot (clearing those of processes that are gone) and
        lock it.  Without a free slot the mount works, with no windows."""
        self._scan()
        for i in range(NSLOTS):
            if read_slot(self._buf, i)[0] == 0:
                set_lock(self.fs.region.fd, fcntl.F_WRLCK, slot_off(i), 1)
                self.slot = i
                self._write_slot()
                return

    def leave(self) -> None:
        """Clear our slot and unlock it (at unmount)."""
        if self.slot is not None:
            self.fs.region.store(slot_off(self.slot), bytes(SLOT.size))
            self._bump()
            set_lock(self.fs.region.fd, fcntl.F_UNLCK, slot_off(self.slot), 1)
            self.slot = None

    # -- stores before the check -------------------------------------------
    def hold_for_stores(self, blocks) -> bool:
        """Before an optimistic change stores into the ``blocks`` (runs) it
        took from our windows: take our store lock, and check that their
        chunks are still our windows in the table (a process short of
        room may have taken them back).  False (lock released): they are
        not, and the change must not store."""
        if self.slot is None:  # (no windows: nothing was taken from them)
            return False
        fd, off = self.fs.region.fd, slot_off(self.slot) + 1
        set_lock(fd, fcntl.F_RDLCK, off, 1, wait=True)
        if not self.still_ours(blocks):
            self.release_stores()
            return False
        return True

    def still_ours(self, blocks) -> bool:
        """Are the chunks of ``blocks`` (runs an optimistic change took from
        our windows) still our windows in the table?  Asked before the
        change stores (hold_for_stores) and again under the exclusive lock
        before it commits (coherence.Change._exclusive_and_checked): a
        process that took the windows back after our stores counts their
        blocks free, since we have not committed them, and may list them
        as windows of its own and store there."""
        if self.slot is None:
            return False
        listed = set(read_slot(self._buf, self.slot)[4])
        per = BLOCKS_PER_CHUNK
        return all(c in listed for b, n in blocks for c in range(b // per, (b + n - 1) // per + 1))

    def release_stores(self) -> None:
        set_lock(self.fs.region.fd, fcntl.F_UNLCK, slot_off(self.slot) + 1, 1)

    def fenced(self, alloc, *args):
        """``alloc(*args)`` (an allocator call that may place anywhere),
        with the free blocks of other live processes' windows hidden from
        it; if that finds no room, the windows are taken back and it runs
        plain.  Under the exclusive pool lock."""
        if not self._current_others():
            return alloc(*args)
        a, hidden = self.fs.allocator, []
        try:
            for c in sorted(self.others_chunks):
                base = c * BLOCKS_PER_CHUNK
                for start, n in free_runs(a.used_in_chunk(c)):
                    a.claim(base + start, n)
                    hidden.append((base + start, n))
            return alloc(*args)
        except OSError as e:
            if e.errno != errno.ENOSPC or not hidden:
                raise
        finally:
            for start, n in hidden:
                a.free(start, n)
        self._reclaim_windows()
        return alloc(*args)

    def _current_others(self) -> bool:
        """Do other live processes hold windows (our view brought up to date)?"""
        if TABLE_HEAD.unpack_from(self._buf, TABLE_OFF)[0] != self.gen:
            self._scan()
        return bool(self.others_chunks)

    def _reclaim_windows(self) -> None:
        """Take every other live process's windows back (no room is left
        outside them): clear them from their slots, then wait until no
        owner is storing into them (its store lock).  An owner that stores
        later finds them gone from its slot (hold_for_stores).  Under the
        exclusive pool lock, which no owner waits for while storing."""
        fs, buf = self.fs, self._buf
        for i in range(NSLOTS):
            if i == self.slot:
                continue
            magic, pid, start, count, windows = read_slot(buf, i)
            if magic != SLOT_MAGIC or not windows:
                continue
            raw = SLOT.pack(magic, pid, start, count, *([0] * MAX_WINDOWS))
            fs.region.store(slot_off(i), raw)
            self._bump()
            set_lock(fs.region.fd, fcntl.F_WRLCK, slot_off(i) + 1, 1, wait=True)
            set_lock(fs.region.fd, fcntl.F_UNLCK, slot_off(i) + 1, 1)
        fs.coherence["windows_reclaimed"] += 1
        self._scan()

    def forget_after_fork(self) -> None:
        """In a forked child: the slot's lock is the parent's; the child joins
        with a slot of its own at its first allocation."""
        self.slot, self.windows, self.ino_range, self.gen = None, [], None, -1

    def _write_slot(self) -> None:
        start, count = self.ino_range or (0, 0)
        chunks = [c + 1 for c in self.windows] + [0] * (MAX_WINDOWS - len(self.windows))
        raw = SLOT.pack(SLOT_MAGIC, os.getpid() & 0xFFFFFFFF, start, count, *chunks)
        self.fs.region.store(slot_off(self.slot), raw)
        self._bump()

    def _scan(self) -> None:
        """Learn the other live processes' windows and ranges; clear the slots
        of processes that are gone.  Slot contents are checked as input:
        what does not fit the pool is ignored."""
        fs, buf = self.fs, self._buf
        nchunks = fs.allocator.nchunks
        chunks: set[int] = set()
        inos: list[tuple[int, int]] = []
        others = 0  # slots of other processes left in the table
        for i in range(NSLOTS):
            if i == self.slot:
                continue
            magic, _pid, start, count, windows = read_slot(buf, i)
            if magic == 0:
                continue
            if magic != SLOT_MAGIC or not pinned_by_others(fs.region.fd, slot_off(i), 1):
                # Nobody's, or not a slot: cleared, but only with the exclusive
                # pool lock (a process may be joining into it right now); a
                # dead slot left meanwhile still counts as someone.
                if fs._reads is None:
                    clear_slot(fs.region, i)
                elif magic == SLOT_MAGIC:
                    others += 1
                continue
            others += 1
            chunks.update(c for c in windows if 0 <= c < nchunks)
            if 0 < count <= INO_RANGE and start + count <= fs.sb.inode_count:
                inos.append((start, start + count))
        self.others_chunks, self.others_inos = chunks, inos
        self.shared = others > 0
        if self.slot is not None and self.windows:
            # Another process may have taken our windows back (_reclaim_windows).
            ours = set(read_slot(buf, self.slot)[4])
            self.windows = [c for c in self.windows if c in ours]
        (self.gen,) = TABLE_HEAD.unpack_from(buf, TABLE_OFF)

    def alone(self) -> bool:
        """Is this process the only live one in the table?  (Exclusive pool
        lock held; our view rescanned if the table moved since.)  Without a
        slot of our own, never."""
        if TABLE_HEAD.unpack_from(self._buf, TABLE_OFF)[0] != self.gen:
            self._scan()
        return self.slot is not None and not self.shared

    def _current(self) -> bool:
        """Windows apply now: another process is live (our view is rescanned
        whenever the table's generation moved).  Joins first if needed."""
        gen = TABLE_HEAD.unpack_from(self._buf, TABLE_OFF)[0]
        if self.slot is None and gen != self.gen:  # (a full table: again when it moves)
            if self.fs.readonly:
                return False
            self.fs._need_exclusive()  # slots are taken under the exclusive lock
            self.join()
        elif gen != self.gen:
            self._scan()
        return self.shared and self.slot is not None

    # -- blocks ------------------------------------------------------------
    def alloc_blocks(self, n: int, hint: int | None):
        """n small blocks: from the hinted block if it is not in another's
        window, then from our windows, taking new windows as they fill."""
        a, fs = self.fs.allocator, self.fs
        if not self._windows_apply():
            if self.shared:
                # Shared without windows (the naive allocator): space free in
                # our view may be taken by another process preparing a change.
                fs._need_exclusive()
                return self.fenced(a.alloc_blocks, n, hint)
            return a.alloc_blocks(n, hint)
        if n > a.free_blocks:
            raise enospc()
        out: list[tuple[int, int]] = []
        try:
            return self._take_blocks(a, n, hint, out)
        except BaseException:
            for b, k in out:  # taken before a new window had to wait for the
                a.free(b, k)  # exclusive lock: give them back, or they leak
            raise

    def _windows_apply(self) -> bool:
        """Do small blocks come from our windows now (_current, and the
        huge-page allocator, whose chunks windows are)?"""
        return self._current() and self.fs.allocator.name == "hugepage"

    def alloc_singles(self, k: int) -> list[int]:
        """Up to k single blocks, ascending (at least one; ENOSPC when none
        is free): where windows apply, from ours, as k calls of
        alloc_blocks(1) would take them; elsewhere as the allocator places
        single blocks (alloc_singles)."""
        if not self._windows_apply() and not self.shared:
            return self.fs.allocator.alloc_singles(k)
        try:
            runs = self.alloc_blocks(k, None)
        except OSError:
            runs = self.alloc_blocks(1, None)  # (the last few free)
        return sorted(b for start, n in runs for b in range(start, start + n))

    def _take_blocks(self, a, n: int, hint: int | None, out: list[tuple[int, int]]):
        fs = self.fs
        # Preparing without the lock (an optimistic change), only from our own
        # windows, so that changes of two processes rarely claim one block
        # (their stores wait for the check anyway); with the exclusive lock,
        # any chunk that is not another's window.
        optimistic = fs._reads is not None
        asked = n
        if hint is not None and 0 <= hint < a.nblocks:
            c = hint // BLOCKS_PER_CHUNK
            if c in self.windows if optimistic else c not in self.others_chunks:
                got = a.take_at_hint(hint, n)
                if got:
                    out.append((hint, got))
                    n -= got
        while n:
            for c in self._open_windows():
                n -= a.take_from(c, n, out)
                if not n:
                    break
            else:
                if not self._new_window(asked):
                    out += self.fenced(a.alloc_blocks, n, None)  # no window to be had
                    break
        return out

    def _open_windows(self) -> list[int]:
        """Our windows with room, fullest first; full ones are given up."""
        free = self.fs.allocator.chunk_free
        room = [c for c in self.windows if free[c] > 0]
        if len(room) != len(self.windows) and self.fs._reads is None:
            # Only holding the exclusive lock: an optimistic change may yet
            # store into the blocks it just took from a window now full.
            self.windows = room
            self._write_slot()
        return sorted(room, key=lambda c: free[c])

    def _new_window(self, n: int) -> bool:
        """A window for a request of ``n`` blocks, and spares (ROOM_WRITES).
        Under the exclusive lock, so that two processes never pick one chunk."""
        self.fs._need_exclusive()
        self._scan()  # others may have taken windows since
        if not self._add_window():
            return False
        free = self.fs.allocator.chunk_free
        want = min(ROOM_MAX, max(ROOM_MIN, ROOM_WRITES * n))
        while len(self.windows) < MAX_WINDOWS:
            if sum(int(free[c]) for c in self.windows) >= want or not self._add_window():
                break
        self._write_slot()
        return True

    def _add_window(self) -> bool:
        """Take the chunk the allocator picks as one more window."""
        c = self.fs.allocator.pick_window(self.others_chunks | set(self.windows))
        if c is None:
            return False
        if len(self.windows) == MAX_WINDOWS:
            self.windows.pop(0)
        self.windows.append(c)
        return True

    # -- whole chunks for large files ----------------------------------------
    def lease_chunks(self, n: int, hint: int | None) -> None:
        """Have ``n`` wholly free chunks among our windows (the hinted block's
        chunk and those after it first) before an optimistic write places
        a large file's data in them (take_chunks); fewer if the pool has
        fewer whole chunks outside others' windows.  Under the exclusive
        lock, as any new window."""
        if not self._windows_apply():
            return
        a = self.fs.allocator
        self._scan()
        # One more: the write's extent blocks come from our windows too, and
        # split a whole one when no other has room.
        n = min(n, LEASED_CHUNKS) + 1
        have = self._whole_windows()
        if len(have) >= n:
            return
        try:
            runs = self.fenced(a.alloc_chunks, n - len(have), hint)
        except OSError:
            return
        for b, k in runs:  # found where they would go: leased, not taken
            a.free(b, k)
        picked = [
            c
            for b, k in runs
            if b % BLOCKS_PER_CHUNK == 0 and k % BLOCKS_PER_CHUNK == 0
            for c in range(b // BLOCKS_PER_CHUNK, (b + k) // BLOCKS_PER_CHUNK)
        ]
        # Small windows make room (the oldest first); the chunks stay ours.
        keep = [c for c in self.windows if c not in picked]
        self.windows = keep[max(0, len(keep) + len(picked) - MAX_WINDOWS) :] + picked
        self._write_slot()

    def whole_windows(self) -> int:
        """How many of our windows are wholly free (room for a large write)."""
        return len(self._whole_windows())

    def _whole_windows(self) -> list[int]:
        free = self.fs.allocator.chunk_free
        return [c for c in self.windows if free[c] == BLOCKS_PER_CHUNK]

    def take_chunks(self, n: int, hint: int | None):
        """``n`` whole chunks from our windows for an optimistic change (the
        hinted block's chunk first), as allocator runs; None if our
        windows do not hold that many wholly free chunks."""
        a, per = self.fs.allocator, BLOCKS_PER_CHUNK
        if a.name != "hugepage":
            return None
        whole = self._whole_windows()
        if hint is not None and hint // per in whole:
            whole.remove(hint // per)
            whole.insert(0, hint // per)
        if len(whole) < n:
            return None
        runs = []
        for c in whole[:n]:
            if not a.take_whole(c):
                for b, k in runs:
                    a.free(b, k)
                return None
            runs.append((c * per, per))
        return runs

    # -- inode numbers -----------------------------------------------------
    def take_ino(self) -> int:
        inodes = self.fs.inodes
        if not self._current():
            return inodes.take_ino()
        if self.ino_range is not None:
            ino = inodes.take_in(*self.ino_range)
            if ino is not None:
                return ino
        rng = self._new_ino_range()
        if rng is None:
            return inodes.take_ino()
        self.ino_range = rng
        self._write_slot()
        ino = inodes.take_in(*rng)
        return ino if ino is not None else inodes.take_ino()

    def _new_ino_range(self) -> tuple[int, int] | None:
        """The lowest INO_RANGE-aligned range with a free number that no other
        live process holds; (start, count)."""
        self.fs._need_exclusive()
        self._scan()
        listed = self.fs.inodes.free_map()
        groups = len(listed) // INO_RANGE
        has_free = listed[: groups * INO_RANGE].reshape(groups, INO_RANGE).any(axis=1)
        for start, end in self.others_inos:
            has_free[start // INO_RANGE : -(-end // INO_RANGE)] = False
        found = np.flatnonzero(has_free)
        if len(found) == 0:
            return None
        return int(found[0]) * INO_RANGE, INO_RANGE


# -- for the checker -------------------------------------------------------
def stale_slots(region) -> list[tuple[int, str]]:
    """Slots that no live process holds, as (slot, why): what a process
    that died (or crashed with the machine) left, or bytes that are not a
    slot at all.  Hints only: the checker notes them and clears them."""
    found = []
    for i in range(NSLOTS):
        raw = region.read(slot_off(i), SLOT.size)
        magic = SLOT.unpack_from(raw)[0]
        if magic == 0 and not any(raw):
            continue
        if magic not in (0, SLOT_MAGIC):
            found.append((i, "not a process slot"))
        elif magic == 0:
            found.append((i, "free, but not zero"))
        elif not pinned_by_others(region.fd, slot_off(i), 1):
            found.append((i, "left by a process that is gone"))
    return found


def clear_slot(region, i: int) -> None:
    region.store(slot_off(i), bytes(SLOT.size))
    bump_generation(region)


def bump_generation(region) -> None:
    """Tell the other processes that the table changed."""
    (gen,) = TABLE_HEAD.unpack_from(region.read(TABLE_OFF, TABLE_HEAD.size))
    region.store(TABLE_OFF, TABLE_HEAD.pack((gen + 1) & (2**64 - 1)))
