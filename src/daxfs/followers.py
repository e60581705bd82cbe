"""followers: the lease table through which followers hold what they use.

A follower (follow.py) shares no kernel with the writer, so it cannot pin
an inode with an OFD lock as a process on the writer's host does
(pins.py).  It leases instead: in a slot of its own in the pool's
follower table (SPEC.md, "Follower table") it writes the inode numbers
of the files it has open, and bumps a heartbeat counter while it lives.
The writer honours a held inode exactly as it honours one open in
another of its processes (``FileSystem._open_elsewhere``): unlinked, it
becomes an orphan, freed once nobody holds it.

Expiry is judged by the writer's clock alone: a slot whose heartbeat has
not moved for the lease period the follower asked for, as the writer
measures it, is cleared, and what it held let go.  Clocks of different
hosts need not agree; only their rates matter.  A follower whose
heartbeat finds its slot cleared or taken knows its leases are gone
(``Lease.lost``).

Order: a follower stores an entry, makes a full fence, and only then
checks that the file it holds is still there; the writer decides whether
an inode it unlinks is held before it commits.  If the writer looked
first, the follower's check finds the file gone (freed: ESTALE) or not
(held from then on) and never reads freed bytes.  A full fence from
Python: acquiring a lock is an atomic read-modify-write, a full barrier
on x86.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import threading
import time

from .layout import (
    FOLLOWER_ENTRIES,
    FOLLOWER_HEAD,
    FOLLOWER_MAGIC,
    FOLLOWER_SLOT_SIZE,
    FOLLOWER_SLOTS,
    FOLLOWERS_OFF,
)

_FENCE = threading.Lock()

# Offsets in a slot (FOLLOWER_HEAD: magic u32, lease_ms u32, id, heartbeat, reserved).
_LEASE_MS, _ID, _BEAT = 4, 8, 16


def full_fence() -> None:
    """A full memory barrier (module doc)."""
    _FENCE.acquire()
    _FENCE.release()


def slot_off(i: int) -> int:
    return FOLLOWERS_OFF + i * FOLLOWER_SLOT_SIZE


def _words(buf, i: int) -> memoryview:
    """Slot ``i`` as native u64 words: an entry is stored and read whole."""
    off = slot_off(i)
    return memoryview(buf)[off : off + FOLLOWER_SLOT_SIZE].cast("Q")


_FIRST_ENTRY = FOLLOWER_HEAD.size // 8

# An entry's top bit: the follower maps the file (else it has it open).
MAPPED = 1 << 63

# The longest lease a writer honours, whatever a slot asks for: a slot is
# input like any byte of a pool, and one that asked for 49 days (a u32 of
# milliseconds) and never beat would keep what it names that long.
MAX_LEASE_MS = 3_600_000


class FollowerTable:
    """The table as a writer reads it, with its memory of heartbeats."""

    def __init__(self, buf, store) -> None:
        self.buf, self._store = buf, store
        # The slots' magics as native u32s, one per slot: asked on every
        # unlink and every commit that frees, so read with no copy.
        end = FOLLOWERS_OFF + FOLLOWER_SLOTS * FOLLOWER_SLOT_SIZE
        self._magics = memoryview(buf)[FOLLOWERS_OFF:end].cast("I")[:: FOLLOWER_SLOT_SIZE // 4]
        # slot -> (id, heartbeat, when (our clock) we first saw that heartbeat)
        self._beats: dict[int, tuple[int, int, float]] = {}

    def any(self) -> bool:
        """Does some slot hold a follower's magic?"""
        return FOLLOWER_MAGIC in self._magics

    def occupied(self) -> list[int]:
        """The slots that hold a follower's magic."""
        magics = self._magics
        if FOLLOWER_MAGIC not in magics:
            return []
        return [i for i, magic in enumerate(magics) if magic == FOLLOWER_MAGIC]

    def live(self, now: float | None = None) -> list[int]:
        """The occupied slots whose lease stands: a heartbeat that moved
        within the lease period, by this process's clock (a slot first seen
        now counts as moving now)."""
        return self._judged(now)[1]

    def _judged(self, now: float | None = None) -> tuple[list[int], list[int]]:
        """The occupied slots, and those of them whose lease stands."""
        occupied = self.occupied()
        if not occupied:
            return occupied, occupied
        now = time.monotonic() if now is None else now
        alive = []
        for i in occupied:
            words = _words(self.buf, i)
            ident, beat = words[_ID // 8], words[_BEAT // 8]
            lease = int.from_bytes(self.buf[slot_off(i) + _LEASE_MS : slot_off(i) + 8], "little")
            seen = self._beats.get(i)
            if seen is None or seen[:2] != (ident, beat):
                self._beats[i] = (ident, beat, now)
                alive.append(i)
            elif now - seen[2] <= min(lease, MAX_LEASE_MS) / 1000:
                alive.append(i)
        return occupied, alive

    def standing(self) -> list[int]:
        """The slots whose lease stands, clearing those whose lease lapsed.
        Whenever the writer disregards a slot's holds it clears the slot
        then, so that the follower, resumed, finds its lease gone
        (``Lease.lost``) and says so, rather than find its slot its own and
        the file it held gone."""
        occupied, alive = self._judged()
        if len(alive) < len(occupied):
            for i in set(occupied).difference(alive):
                self._clear(i)
        return alive

    def _clear(self, i: int) -> None:
        off = slot_off(i)
        seen = self._beats.pop(i, None)
        # (Only the follower we judged: another writer process may have
        # cleared the slot meanwhile, and a new follower taken it.)
        if seen is None or _words(self.buf, i)[_ID // 8] == seen[0]:
            self._store(off, bytes(4))  # (magic 0: the slot is free)

    def entries(self) -> set[int]:
        """The entries of the followers whose lease stands (clearing the
        slots of those whose lease lapsed: ``standing``)."""
        out: set[int] = set()
        for i in self.standing():
            out.update(_words(self.buf, i)[_FIRST_ENTRY:])
        out.discard(0)
        return out

    def held(self) -> set[int]:
        """The inode numbers a follower whose lease stands has open or mapped,
        as written (the caller keeps those inside its inode table)."""
        return {e & ~MAPPED for e in self.entries()}

    def mapped(self) -> set[int]:
        """The inode numbers a follower whose lease stands maps."""
        return {e & ~MAPPED for e in self.entries() if e & MAPPED}

    def holds(self, ino: int) -> bool:
        entries = self.entries()
        return ino in entries or ino | MAPPED in entries

    def maps(self, ino: int) -> bool:
        return ino | MAPPED in self.entries()


class _Block0:
    """The first ``length`` bytes of the pool, mapped shared and writable on
    their own: a follower's region stays read-only, and only its lease
    slot is ever stored into (``length``: the region's alignment, which a
    device-dax mapping needs)."""

    def __init__(self, path: str, length: int):
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.buf = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def store(self, off: int, data: bytes) -> None:
        self.buf[off : off + len(data)] = data

    def close(self) -> None:
        self.buf.close()


class Lease:
    """A follower's slot: what it holds, and the heartbeat that keeps it."""

    def __init__(self, path: str, length: int, seconds: float):
        if not 0.05 <= seconds <= MAX_LEASE_MS / 1000:
            raise ValueError(f"lease_seconds must be between 0.05 and 3600, not {seconds!r}")
        self.seconds = seconds
        self.block0 = _Block0(path, length)
        self.id = int.from_bytes(os.urandom(8), "little") | 1
        try:
            self.slot = self._claim()
        except BaseException:
            self.block0.close()
            raise
        self.words = _words(self.block0.buf, self.slot)
        self.lost = False
        self._lock = threading.Lock()  # (entries taken by several threads)
        self._hint = _FIRST_ENTRY  # where to look for a free entry first
        self._count = 0  # entries held
        self._closing = self.closed = False
        self._stop = threading.Event()
        self._beat_thread = threading.Thread(target=self._beating, name="daxfs-lease", daemon=True)
        self._beat_thread.start()

    def _claim(self) -> int:
        """Take a free slot: write ours, wait, and check nobody wrote over it
        (two followers may pick one slot at one moment; the later keeps it
        and the earlier looks on)."""
        b0 = self.block0
        first = self.id % FOLLOWER_SLOTS
        for i in [*range(first, FOLLOWER_SLOTS), *range(first)]:
            off = slot_off(i)
            if any(b0.buf[off : off + 4]):
                continue
            b0.store(off + FOLLOWER_HEAD.size, bytes(FOLLOWER_SLOT_SIZE - FOLLOWER_HEAD.size))
            head = FOLLOWER_HEAD.pack(FOLLOWER_MAGIC, int(self.seconds * 1000), self.id, 1, 0)
            b0.store(off, head)
            full_fence()
            time.sleep(0.002)
            if FOLLOWER_HEAD.unpack_from(b0.buf, off)[2] == self.id:
                return i
        raise OSError(
            errno.EUSERS, f"the pool's follower table is full ({FOLLOWER_SLOTS} followers)"
        )

    def _beating(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            with self._lock:
                if self.closed or not self._mine():
                    self.lost = True
                    return
                self.words[_BEAT // 8] += 1

    def _mine(self) -> bool:
        off = slot_off(self.slot)
        magic, _ms, ident, _beat, _r = FOLLOWER_HEAD.unpack_from(self.block0.buf, off)
        return magic == FOLLOWER_MAGIC and ident == self.id

    def valid(self) -> bool:
        """Does this follower's lease still stand (its slot still its own)?"""
        with self._lock:
            if not self.lost and (self.closed or not self._mine()):
                self.lost = True
        return not self.lost

    def hold(self, ino: int, mapped: bool = False) -> int:
        """Hold inode ``ino``, open or ``mapped`` (an entry, then a full
        fence): its entry's index, for ``release``.  The caller then checks
        the file is still what it resolved."""
        # (Releasing the lock, an atomic read-modify-write, is the full
        # fence after the store.)
        with self._lock:
            words, end = self.words, _FIRST_ENTRY + FOLLOWER_ENTRIES
            for k in itertools.chain(range(self._hint, end), range(_FIRST_ENTRY, self._hint)):
                if words[k] == 0:
                    words[k] = ino | MAPPED if mapped else ino
                    self._hint = k + 1 if k + 1 < end else _FIRST_ENTRY
                    self._count += 1
                    break
            else:
                k = 0
        if k:
            return k
        raise OSError(
            errno.ENOSPC,
            f"a follower holds at most {FOLLOWER_ENTRIES} files open or mapped at once",
        )

    def release(self, k: int) -> None:
        with self._lock:
            if self.closed:
                return
            if not self.lost and self._mine():
                self.words[k] = 0
            self._count -= 1
            last = self._closing and self._count == 0
        if last:
            self._end()

    def close(self) -> None:
        """Give the slot back, once nothing is held: a mapping may outlive
        its mount, and its lease must go on beating until it goes."""
        with self._lock:
            self._closing = True
            last = self._count == 0 and not self.closed
        if last:
            self._end()

    def _end(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._beat_thread:
            self._beat_thread.join()
        with self._lock:
            self.closed = True
            if self._mine():
                self.block0.store(slot_off(self.slot), bytes(4))
            self.words.release()
            self.block0.close()
