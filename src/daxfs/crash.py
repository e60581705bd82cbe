"""crash: record what operations store, flush and fence; rebuild the states a
power failure could leave; check the flush discipline.

The crash tester is a wrapper around the region, not a fork of it:

    RecordingRegion(region, model)  passes every call through to the real
                              region and logs store / flush / fence events
                              (and, lazy, home / sync) and the start and
                              end of each operation; it claims the
                              durability of ``model`` ("pmem", "msync" or
                              "lazy"), so the file system issues exactly
                              the flushes it would issue on that backend
    MemoryRegion(image)       a pool held in a bytearray (no mapping), to mount
                              and check crash states quickly
    ScratchImage(size)        one buffer crash images are built in by undoing
                              the previous image's stores, not copying a pool
    crash_points(base, log)   pmem: at every fence (and at the end), the
                              persisted image and the stores still in flight
    model_points(model, ...)  crash_points or page_cache_points, by model
    crash_states(point, rng)  the images a crash at that point can leave,
                              each with a cheap identity key (no image is
                              built twice)
    page_cache_points(...)    the msync and lazy models: 4 KiB pages, each
                              dirty page written, dropped or torn at
                              512-byte sectors
    group_commits(log)        lazy: where each group commit completed and
                              how many operations it made durable
    check_discipline(log)     pmemcheck's questions: did an operation return
                              with stores not yet flushed and fenced; which
                              flushes and fences did nothing
    recovery_log(image)       what mounting (recovery) stores, so crashes
                              during recovery can be rebuilt the same way

The pmem model (as Chipmunk's): a store reaches the media when a flush
covering it, issued after it, is followed by a fence; before that it may or
may not have.  Stores of up to 512 bytes are split into 64-byte cache
lines (units) that reach the media whole or not at all; tearing inside a
line at 8-byte boundaries is not generated, because every multi-word
record daxfs writes in place is either checksummed (journal records,
header slots) or redone by recovery (home locations).  Larger stores (file
data) are one unit each, also tried torn (first, last or a middle cache
line missing).  With at most ``EXHAUSTIVE`` units in flight every
subset is tried; otherwise every subset of at most two units plus
``random_subsets`` random ones and the full set.

The page-cache model (as SQLite's crash VFS): between two msyncs the kernel
may write any dirty page back at any time, so at a crash each dirty 4 KiB
page is written, dropped, or torn (some of its eight 512-byte sectors
written).  msync(MS_SYNC) of a range makes its pages durable.  A page is
taken with its content at the crash (writeback of an earlier version of a
page that was later stored to again is not modelled).

The lazy model (group commit on a page-cache pool, ``lazy_capable``):
file data, journal records, the durable mark and live words are stored to
the file with no flush; home locations (what a record's writes say) are
stored in the process's private view (``store_home``, logged as "home"),
which never reaches the file: a home reaches a crash image only when a
group commit stores it again, as an ordinary store, after its record is
durable.  ``sync_file`` (fdatasync, logged as "sync") makes every dirty
page durable; a flush (msync of a range) keeps its meaning.  A crash may
come before any flush or sync, and after any operation returned ("end"),
each dirty page then written, dropped or torn as above: an operation that
returned may be lost whole until a group commit covers it (group_commits:
the fdatasync, then the durable mark's msync).  Not modelled: a page
written back in a version older than its content at the crash (the msync
model's caveat, wider here, since pages stay dirty across operations);
the pool file's own metadata (its size never changes); recovery within
the same boot, which trusts the page cache (a crash image is recovered
on a MemoryRegion, whose boot identity is never a real one, so only
records under the durable mark are replayed); and group commits at other
moments than those of the recorded run (the commit_interval thread).

Stores made through a mapping (Mapping.ndarray) never pass through the
region; the recorder keeps a shadow of the image and turns any difference
it finds at a flush into a logged store, so map + store + persist workloads
are covered.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .region import CACHE_LINE as LINE
from .region import NoDurability, merge_ranges, word_view

PAGE = 4096
SECTOR = 512
SPLIT_LIMIT = 512
# A logged store the recorder found rather than saw: made through a mapping
# by the user, who alone decides when it must be durable (Mapping.persist).
MAPPED = "mapped"
EXHAUSTIVE = 12
EXHAUSTIVE_PAGES = 6  # 3**6 = 729 page-cache states
STRUCTURED_PAGES = 32  # pages varied one at a time when more are dirty
MODELS = ("pmem", "msync", "lazy")
CRASH_IMAGE_BOOT = b"crash-image".ljust(32, b"\0")  # MemoryRegion.boot_identity()
# The boot a recovery that recovery_log records runs in: a crash inside it
# is a power loss too, so the image's next recovery (CRASH_IMAGE_BOOT) must
# not take the lazy records that run left for page-cache ones of its boot.
RECOVERY_RUN_BOOT = b"crash-recovery-run".ljust(32, b"\0")


# --------------------------------------------------------------------------
# Recording.
# --------------------------------------------------------------------------
class _RecordedDurability:
    volatile = False

    def __init__(self, rec: RecordingRegion, name: str):
        self.rec, self.name = rec, name

    def flush(self, addr: int, n: int) -> None:
        self.rec.flush(addr - self.rec.addr, n)

    def fence(self) -> None:
        self.rec.fence()


class RecordingRegion:
    """Every call goes to ``inner``; stores, flushes, fences and operation
    boundaries are logged in ``log``."""

    def __init__(self, inner, model: str = "pmem"):
        if model not in MODELS:
            raise ValueError(f"unknown persistence model {model!r}")
        self.inner, self.model = inner, model
        self.log: list[tuple] = []
        # A lazy pool is a page-cache pool: its flush is msync's.
        self.durability = _RecordedDurability(self, "msync" if model == "lazy" else model)
        self.volatile = False
        self.lazy_capable = model == "lazy"
        self.shadow = bytearray(inner.buf)
        self._home_pages: set[int] = set()  # pages holding private homes

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def reset(self) -> None:
        """Forget the log so far (the image as it is now is the new start)."""
        self.log.clear()
        self.shadow[:] = self.inner.buf

    def store(self, off: int, data) -> None:
        data = bytes(data)
        self.log.append(("store", off, data))
        self.shadow[off : off + len(data)] = data
        self.inner.store(off, data)

    def zero(self, off: int, n: int) -> None:
        self.log.append(("store", off, bytes(n)))
        self.shadow[off : off + n] = bytes(n)
        self.inner.zero(off, n)

    def store_home(self, off: int, data) -> None:
        """A home location written after its journal record: in lazy mode a
        store private to the process (never the file's until stored again);
        otherwise an ordinary store."""
        if not self.lazy_capable:
            self.store(off, data)
            return
        data = bytes(data)
        self.log.append(("home", off, data))
        self.shadow[off : off + len(data)] = data  # not a store through a mapping
        self._home_pages.update(_pages(off, len(data)))
        getattr(self.inner, "store_home", self.inner.store)(off, data)

    def drop_homes(self, ranges=None) -> None:
        """Forget the private copies of home locations, all of them or the
        pages of the (offset, length) ``ranges`` (no media effect)."""
        drop = getattr(self.inner, "drop_homes", None)
        if drop is not None:
            drop(ranges)
        if ranges is None:
            pages, self._home_pages = self._home_pages, set()
        else:
            pages = {p for off, n in ranges for p in _pages(off, n)} & self._home_pages
            self._home_pages -= pages
        # The process now sees the file where it saw its copies: the shadow
        # must too, or catch_untracked would log any difference as a store.
        for p in pages:
            self.shadow[p * PAGE : (p + 1) * PAGE] = self.inner.buf[p * PAGE : (p + 1) * PAGE]

    @property
    def holds_homes(self) -> bool:
        """Does the process hold homes the file does not (as Region's)?"""
        return bool(self._home_pages)

    def sync_file(self) -> None:
        """fdatasync of the pool file: every store so far becomes durable,
        stores through a mapping included (caught first, so they are logged
        before the sync that made them durable)."""
        self.catch_untracked()
        self.log.append(("sync",))
        sync = getattr(self.inner, "sync_file", None)
        if sync is not None:
            sync()

    def boot_identity(self) -> bytes:
        ident = getattr(self.inner, "boot_identity", None)
        return ident() if ident is not None else bytes(32)

    def flush(self, off: int, n: int) -> None:
        if n > 0:
            self.catch_untracked(off, n)
            self.log.append(("flush", off, n))

    def fence(self) -> None:
        self.log.append(("fence",))

    def persist(self, off: int, n: int) -> None:
        self.flush(off, n)
        self.fence()

    @contextmanager
    def operation(self, name: str):
        """Mark one public operation's start and end in the log."""
        self.log.append(("begin", name))
        try:
            yield
        finally:
            self.catch_untracked()
            self.log.append(("end", name))

    def catch_untracked(self, off: int = 0, n: int | None = None) -> None:
        """Log, as stores, bytes that changed without a store() (stores made
        through a mapping of the pool), one run of cache lines at a time."""
        import numpy as np

        n = len(self.shadow) - off if n is None else n
        lo, hi = off // LINE * LINE, min(len(self.shadow), -(-(off + n) // LINE) * LINE)
        now = np.frombuffer(self.inner.buf, np.uint8, hi - lo, lo)
        was = np.frombuffer(self.shadow, np.uint8, hi - lo, lo)
        differs = now != was
        if not differs.any():
            return
        lines = np.flatnonzero(np.add.reduceat(differs, np.arange(0, hi - lo, LINE)))
        for first, last in _runs(lines.tolist()):
            a, b = lo + first * LINE, min(hi, lo + (last + 1) * LINE)
            data = bytes(self.inner.buf[a:b])
            self.log.append(("store", a, data, MAPPED))
            self.shadow[a:b] = data


def _pages(off: int, n: int) -> range:
    return range(off // PAGE, -(-(off + n) // PAGE))


def _runs(sorted_ints: list[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive integers."""
    for _, group in itertools.groupby(enumerate(sorted_ints), lambda t: t[1] - t[0]):
        run = [v for _, v in group]
        yield run[0], run[-1]


class MemoryRegion:
    """A pool image in memory, with the Region interface the file system uses.
    Locks are taken on a small scratch file (flock and OFD locks need one).
    With ``undo`` (a list), each store first appends (offset, old bytes) to
    it, and ``changed`` counts the stores that changed a byte."""

    kind, align, map_unit = "memory", 4096, 4096
    map_sync = huge_capable = readonly = private = lazy_capable = holds_homes = False

    def __init__(
        self,
        image: bytearray,
        lock_path: str,
        undo: list | None = None,
        boot: bytes = CRASH_IMAGE_BOOT,
    ):
        self.image, self.boot = image, boot
        self.buf = memoryview(image)
        self.size = len(image)
        self.path = lock_path
        self.fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self.durability = NoDurability()
        self.volatile = True
        self.addr = 0
        self.closed = False
        self.undo, self.changed = undo, 0
        self._undo_from = 0 if undo is None else len(undo)  # (what this region stored)

    def read(self, off: int, n: int) -> bytes:
        return bytes(self.buf[off : off + n])

    def forget_stores(self, off: int = 0, n: int | None = None) -> None:
        """Put back what this region stored in ``n`` bytes at ``off`` (all of
        it by default), as a private Region's pages read the file again
        (a read-only mount recovered in private: pool.py).  Needs ``undo``."""
        hi = self.size if n is None else off + n
        for at, old in reversed(self.undo[self._undo_from :]):
            lo, top = max(at, off), min(at + len(old), hi)
            if lo < top:
                self.buf[lo:top] = old[lo - at : top - at]

    def word(self, off: int) -> memoryview | None:
        return word_view(self.buf, off)

    def store(self, off: int, data) -> None:
        if self.undo is not None:
            old = bytes(self.buf[off : off + len(data)])
            self.undo.append((off, old))
            self.changed += old != data
        self.buf[off : off + len(data)] = data

    def zero(self, off: int, n: int) -> None:
        self.store(off, bytes(n))

    def prefault(self, off: int, n: int) -> None:
        pass  # (memory: nothing to map)

    def store_home(self, off: int, data) -> None:
        self.store(off, data)  # not lazy: a home is an ordinary store

    def drop_homes(self, ranges=None) -> None:
        pass

    def sync_file(self) -> None:
        pass

    def boot_identity(self) -> bytes:
        # Never a real boot's: recovering a crash image is always recovery
        # after a power loss, never after a mere process kill.
        return self.boot

    def flush(self, off: int, n: int) -> None:
        pass

    def fence(self) -> None:
        pass

    def persist(self, off: int, n: int) -> None:
        pass

    def reserve(self, off: int, n: int) -> None:
        pass  # memory is all there

    def check_map_alignment(self, off: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "an in-memory pool cannot be mapped")

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "size": self.size, "durability": "none", "volatile": True}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.buf.release()
            os.close(self.fd)


def recovery_log(image: bytes | bytearray, lock_path: str, model: str = "pmem") -> list[tuple]:
    """The events of mounting ``image`` (journal recovery, orphan reclaim),
    recorded under ``model``; the image itself is left as it was."""
    from .pool import mount_region

    rec = RecordingRegion(MemoryRegion(bytearray(image), lock_path, boot=RECOVERY_RUN_BOOT), model)
    mount_region(rec).close()
    return rec.log


# --------------------------------------------------------------------------
# Crash points and states.
# --------------------------------------------------------------------------
@dataclass
class _Unit:
    off: int
    data: bytes
    flushed: bool = False
    torn: bool = False  # a large store: also try it with lines missing


@dataclass
class CrashPoint:
    """The persisted image at a crash point and what is still in flight:
    cache-line units (pmem) or dirty pages (page cache)."""

    index: int  # events before the crash
    persisted: bytes
    inflight: list[_Unit] = field(default_factory=list)
    pages: bool = False
    _key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = hashlib.blake2b(self.persisted, digest_size=16).digest()
        return self._key


class CrashState:
    """One image a crash can leave: the persisted image with some overlays.
    ``key`` identifies the image without building it: equal keys, equal
    images (the bytes of every overlaid range that differ from the persisted
    image, after the overlays are applied in order)."""

    __slots__ = ("point", "overlays", "_key")

    def __init__(self, point: CrashPoint, overlays: list[tuple[int, bytes]]):
        self.point, self.overlays, self._key = point, overlays, None

    @property
    def key(self) -> bytes:
        if self._key is None:
            h = hashlib.blake2b(self.point.key, digest_size=16)
            for lo, hi in merge_ranges((o, o + len(d)) for o, d in self.overlays):
                final = self._final(lo, hi)
                if final != self.point.persisted[lo:hi]:
                    h.update(lo.to_bytes(8, "little"))
                    h.update(final)
            self._key = h.digest()
        return self._key

    def _final(self, lo: int, hi: int) -> bytes:
        buf = bytearray(self.point.persisted[lo:hi])
        for off, data in self.overlays:
            if lo <= off < hi:
                buf[off - lo : off - lo + len(data)] = data
        return bytes(buf)

    def image(self) -> bytearray:
        img = bytearray(self.point.persisted)
        for off, data in self.overlays:
            img[off : off + len(data)] = data
        return img


class ScratchImage:
    """One pool-sized buffer that crash images are built in, one after another.
    Between two images of the same crash point it is put back by undoing the
    overlays and whatever the mounts stored (regions from ``region()`` log
    their stores), so an image costs what recovery touches rather than a
    copy of the whole pool; a new crash point costs one copy.  With
    ``verify`` (True, or n: one in every n) restores are compared with the
    persisted image: a store that bypassed the region would show there.
    The comparison reads the whole pool, about as long as the rest of a
    small pool's image, so a long run samples it."""

    def __init__(self, size: int, verify: bool | int = False):
        self.buf = bytearray(size)
        self.undo: list[tuple[int, bytes]] = []
        self.persisted: bytes | None = None
        self.verify = int(verify)
        self._restores = 0

    def build(self, state: CrashState) -> bytearray:
        """The image of ``state``, in the buffer (valid until the next build)."""
        persisted = state.point.persisted
        if self.persisted is persisted:
            for off, old in reversed(self.undo):
                self.buf[off : off + len(old)] = old
            self._restores += 1
            if self.verify and self._restores % self.verify == 0:
                assert self.buf == persisted, "a store bypassed the undo log"
        else:
            self.buf[:] = persisted
            self.persisted = persisted
        self.undo.clear()
        for off, data in state.overlays:
            self.undo.append((off, bytes(self.buf[off : off + len(data)])))
            self.buf[off : off + len(data)] = data
        return self.buf

    def region(self, lock_path: str) -> MemoryRegion:
        """A region over the current image whose stores can be undone."""
        return MemoryRegion(self.buf, lock_path, self.undo)


def model_points(model: str, base: bytes, log: list[tuple]) -> Iterator[CrashPoint]:
    """The crash points of ``log`` (recorded under ``model``) from ``base``."""
    if model == "pmem":
        return crash_points(base, log)
    return page_cache_points(base, log, lazy=model == "lazy")


def crash_points(base: bytes, log: list[tuple]) -> Iterator[CrashPoint]:
    """pmem: each fence's crash point (just before the fence) and the final one."""
    persisted = bytearray(base)
    inflight: list[_Unit] = []
    for i, ev in enumerate(log):
        if ev[0] == "store":
            inflight.extend(_units(ev[1], ev[2]))
        elif ev[0] == "flush":
            lo, hi = ev[1], ev[1] + ev[2]
            for u in inflight:
                if u.off < hi and lo < u.off + len(u.data):
                    u.flushed = u.flushed or _covers(lo, hi, u)
        elif ev[0] == "fence":
            yield CrashPoint(i, bytes(persisted), list(inflight))
            for u in inflight:
                if u.flushed:
                    persisted[u.off : u.off + len(u.data)] = u.data
            inflight = [u for u in inflight if not u.flushed]
    yield CrashPoint(len(log), bytes(persisted), list(inflight))


def _covers(lo: int, hi: int, u: _Unit) -> bool:
    # A flush works on whole cache lines: it covers a unit whose lines it touches.
    return lo // LINE * LINE <= u.off and u.off + len(u.data) <= -(-hi // LINE) * LINE


def _units(off: int, data: bytes) -> list[_Unit]:
    if len(data) > SPLIT_LIMIT:
        return [_Unit(off, data, torn=True)]
    out, pos = [], 0
    while pos < len(data):
        stop = min(len(data), (off + pos) // LINE * LINE + LINE - off)
        out.append(_Unit(off + pos, data[pos:stop]))
        pos = stop
    return out


def crash_states(point: CrashPoint, rng: random.Random, random_subsets: int = 200,
                 exhaustive: int = EXHAUSTIVE) -> Iterator[CrashState]:  # fmt: skip
    """The states a crash at ``point`` can leave (some may repeat: use .key).
    Every subset of the units in flight when there are at most
    ``exhaustive`` of them; else the small subsets and random ones."""
    if point.pages:
        yield from _page_cache_states(point, rng, random_subsets)
        return
    units = point.inflight
    for subset in _subsets(len(units), rng, random_subsets, exhaustive):
        chosen = [units[i] for i in subset]
        overlays = [(u.off, u.data) for u in chosen]
        yield CrashState(point, overlays)
        for k, victim in enumerate(chosen):
            if victim.torn:
                for drop in ("first", "last", "middle"):
                    torn = _torn_overlays(victim, drop)
                    yield CrashState(point, overlays[:k] + torn + overlays[k + 1 :])


def _subsets(n: int, rng: random.Random, random_subsets: int, exhaustive: int
             ) -> Iterator[tuple[int, ...]]:  # fmt: skip
    if n <= exhaustive:
        return itertools.chain.from_iterable(
            itertools.combinations(range(n), k) for k in range(n + 1)
        )
    small = itertools.chain.from_iterable(itertools.combinations(range(n), k) for k in range(3))
    rand = (tuple(i for i in range(n) if rng.random() < 0.5) for _ in range(random_subsets))
    return itertools.chain(small, rand, [tuple(range(n))])


def _torn_overlays(u: _Unit, drop: str) -> list[tuple[int, bytes]]:
    """``u`` with one cache line (first, last or middle) not written."""
    nlines = -(-len(u.data) // LINE)
    line = {"first": 0, "last": nlines - 1, "middle": nlines // 2}[drop]
    lo, hi = line * LINE, min(len(u.data), (line + 1) * LINE)
    return [(u.off, u.data[:lo]), (u.off + hi, u.data[hi:])]


# --------------------------------------------------------------------------
# The page-cache models (msync, lazy).
# --------------------------------------------------------------------------
def page_cache_points(base: bytes, log: list[tuple], lazy: bool = False) -> Iterator[CrashPoint]:
    """The page-cache models: a crash point before every msync (flush) and
    every fdatasync (sync), and at the end; with ``lazy``, also after every
    operation's end.  The units in flight are the dirty pages with their
    content at that moment; a home (private to the process) is none."""
    cache = _PageCache(base)
    last = -1  # index of the last point yielded: two at one index are one
    for i, ev in enumerate(log):
        kind = ev[0]
        if kind in ("flush", "sync") and last != i:
            yield cache.point(i)
            last = i
        if kind == "store":
            cache.store(ev[1], ev[2])
        elif kind == "flush":
            cache.write_back(_pages(ev[1], ev[2]))
        elif kind == "sync":
            cache.write_back(list(cache.dirty))
        elif kind == "end" and lazy:
            yield cache.point(i + 1)  # the operation has returned
            last = i + 1
    if last != len(log):
        yield cache.point(len(log))


class _PageCache:
    """The pool file's pages: as the process stored them (``current``), as
    on the media (``persisted``), and which differ or may (``dirty``)."""

    def __init__(self, base: bytes):
        self.current, self.persisted = bytearray(base), bytearray(base)
        self.dirty: set[int] = set()

    def store(self, off: int, data: bytes) -> None:
        self.current[off : off + len(data)] = data
        self.dirty.update(_pages(off, len(data)))

    def write_back(self, pages) -> None:
        """Make ``pages`` durable, with their content now (clean ones stay)."""
        for p in self.dirty.intersection(pages):
            self.persisted[p * PAGE : (p + 1) * PAGE] = self.current[p * PAGE : (p + 1) * PAGE]
        self.dirty.difference_update(pages)

    def point(self, i: int) -> CrashPoint:
        cur = self.current
        pages = [_Unit(p * PAGE, bytes(cur[p * PAGE : (p + 1) * PAGE])) for p in sorted(self.dirty)]
        return CrashPoint(i, bytes(self.persisted), pages, pages=True)


def group_commits(log: list[tuple]) -> list[tuple[int, int]]:
    """Lazy model: (event, steps covered) of each completed group commit.
    One completes at the durable mark's msync, the first flush after an
    fdatasync: until then a power loss takes back the records that the
    fdatasync made durable, as recovery replays only those under the mark.
    It covers the steps (operations) that had ended by its fdatasync."""
    commits: list[tuple[int, int]] = []
    ended, synced = 0, None
    for i, ev in enumerate(log):
        if ev[0] == "end":
            ended += 1
        elif ev[0] == "sync":
            synced = ended
        elif ev[0] == "flush" and synced is not None:
            commits.append((i, synced))
            synced = None
    return commits


def steps_covered(commits: list[tuple[int, int]], index: int) -> int:
    """Steps that the group commits completed before event ``index`` cover:
    a crash there must not take them back."""
    return max((steps for at, steps in commits if at < index), default=0)


WRITTEN, DROPPED, TORN = "written", "dropped", "torn"


def _page_cache_states(point: CrashPoint, rng: random.Random, random_subsets: int
                       ) -> Iterator[CrashState]:  # fmt: skip
    pages = point.inflight
    for fates in _page_fates(len(pages), rng, random_subsets):
        overlays: list[tuple[int, bytes]] = []
        for page, fate in zip(pages, fates, strict=True):
            if fate == WRITTEN:
                overlays.append((page.off, page.data))
            elif fate == TORN:
                overlays.extend(_torn_sectors(page, rng.randrange(1, 255)))
        yield CrashState(point, overlays)


def _page_fates(n: int, rng: random.Random, random_subsets: int) -> Iterator[tuple[str, ...]]:
    """Every combination of fates for up to EXHAUSTIVE_PAGES dirty pages;
    beyond that all-dropped, all-written, single pages (up to
    STRUCTURED_PAGES of them, spread evenly, first and last included)
    changing fate against each uniform background, and random combinations."""
    choices = (WRITTEN, DROPPED, TORN)
    if n <= EXHAUSTIVE_PAGES:
        yield from itertools.product(choices, repeat=n)
        return
    singles = sorted({round(k * (n - 1) / (STRUCTURED_PAGES - 1)) for k in range(STRUCTURED_PAGES)})
    for background in (DROPPED, WRITTEN):
        yield (background,) * n
        for i in singles:
            for fate in choices:
                if fate != background:
                    yield tuple(fate if j == i else background for j in range(n))
    for _ in range(random_subsets):
        yield tuple(rng.choice(choices) for _ in range(n))


def _torn_sectors(page: _Unit, mask: int) -> list[tuple[int, bytes]]:
    """The sectors of ``page`` whose bit is set in ``mask`` (8 bits) written."""
    return [
        (page.off + s * SECTOR, page.data[s * SECTOR : (s + 1) * SECTOR])
        for s in range(PAGE // SECTOR)
        if mask >> s & 1
    ]


# --------------------------------------------------------------------------
# Flush discipline (pmemcheck's questions, knowing the journal's contract).
# --------------------------------------------------------------------------
@dataclass
class Discipline:
    """What check_discipline found.  ``unflushed``: (operation, offset,
    length) of stores neither durable nor covered by a durable journal
    record when the operation returned; ``misordered``: (operation, what)
    for a home location written before its record was durable, or a
    checkpoint header written before the homes it retires were;
    ``redundant_flushes``: (operation, offset, length) of flushes that
    covered no pending store; ``redundant_fences``: operations that fenced
    with no flush since the previous fence."""

    unflushed: list[tuple[str, int, int]] = field(default_factory=list)
    misordered: list[tuple[str, str]] = field(default_factory=list)
    redundant_flushes: list[tuple[str, int, int]] = field(default_factory=list)
    redundant_fences: list[str] = field(default_factory=list)
    flushes: int = 0
    fences: int = 0

    @property
    def ok(self) -> bool:
        return not self.unflushed and not self.misordered


class _DisciplineWalk:
    """State of check_discipline's walk, one cache line at a time."""

    def __init__(self, journal: tuple[int, int] | None):
        from .layout import JHEADER, JLIVE, JLIVE_OFF, JOURNAL_HEADER_OFF, JSLOT_OFFSETS
        from .leases import TABLE_BYTES, TABLE_OFF

        self.out = Discipline()
        self.pending: set[int] = set()  # stored, not flushed
        self.flushed: set[int] = set()  # flushed, not yet fenced
        self.covered: set[int] = set()  # home lines whose record is durable
        self.user: set[int] = set()  # lines last stored through a mapping
        self.journaled: dict[tuple[int, bytes], range] = {}  # home write -> record lines
        self.flushes_since_fence = 0
        self.op = "(outside any operation)"
        self.journal = journal
        # The live word and the process table (leases.py) are hints for
        # other processes that recovery never reads; header slots are the
        # checkpoint's commit points.
        self.volatile = set(_lines(JOURNAL_HEADER_OFF + JLIVE_OFF, JLIVE.size))
        self.volatile.update(_lines(TABLE_OFF, TABLE_BYTES))
        self.slots = {JOURNAL_HEADER_OFF + s for s in JSLOT_OFFSETS}
        self.slot_size = JHEADER.size

    def store(self, off: int, data: bytes, mapped: bool = False) -> None:
        lines = _lines(off, len(data))
        if mapped:
            self.user.update(lines)
        else:
            self.user.difference_update(lines)
        if (off, data) in self.journaled:
            record = self.journaled[(off, data)]
            if self.pending.intersection(record) or self.flushed.intersection(record):
                self.out.misordered.append((self.op, f"home {off}+{len(data)} before its record"))
            # A line already holding a loose store stays loose.
            self.covered.update(x for x in lines if x not in self.pending or x in self.covered)
        else:
            self.covered.difference_update(lines)
        if off in self.slots and len(data) == self.slot_size:
            self._checkpoint_header(off)
        self._note_record(off, data)
        self.pending.update(lines)
        self.flushed.difference_update(lines)

    def _note_record(self, off: int, data: bytes) -> None:
        from .layout import TXN_HEADER, TXN_MAGIC, parse_txn_record

        if self.journal is None or not self.journal[0] <= off < self.journal[1]:
            return
        if len(data) < TXN_HEADER.size or TXN_HEADER.unpack_from(data)[0] != TXN_MAGIC:
            return
        rec = parse_txn_record(data, 0, len(data), TXN_HEADER.unpack_from(data)[2])
        if rec is not None:
            for dst, wdata in rec.writes:
                self.journaled[(dst, wdata)] = _lines(off, len(data))

    def _checkpoint_header(self, off: int) -> None:
        # The new header retires every record: their homes must be durable first.
        undurable = self.covered & (self.pending | self.flushed)
        if undurable:
            self.out.misordered.append(
                (self.op, f"checkpoint header at {off} before {len(undurable)} home lines")
            )
        self.covered.clear()
        self.journaled.clear()

    def flush(self, off: int, n: int) -> None:
        self.out.flushes += 1
        self.flushes_since_fence += 1
        lines = _lines(off, n)
        hit = self.pending.intersection(lines)
        # Lines last stored through a mapping are the user's to flush
        # (Mapping.persist): a store of the bytes already there is invisible
        # to the recorder, so nothing pending there is no sign of waste.
        if not hit and not self.user.issuperset(lines):
            self.out.redundant_flushes.append((self.op, off, n))
        self.pending -= hit
        self.flushed |= hit

    def fence(self) -> None:
        self.out.fences += 1
        if not self.flushes_since_fence:
            self.out.redundant_fences.append(self.op)
        self.flushes_since_fence = 0
        self.flushed.clear()

    def end(self) -> None:
        # A user's stores through a mapping are durable when the user asks
        # (persist), not when some operation returns.
        loose = (self.pending | self.flushed) - self.covered - self.volatile - self.user
        for first, last in _runs(sorted(loose)):
            self.out.unflushed.append((self.op, first * LINE, (last + 1 - first) * LINE))
        self.op = "(outside any operation)"


def check_discipline(log: list[tuple], journal: tuple[int, int] | None = None) -> Discipline:
    """Walk a pmem-model log.  ``journal`` is the (start, end) of the journal
    area: stores of home locations that repeat a write of a durable record
    there are covered by the log (the journal's contract) rather than loose."""
    walk = _DisciplineWalk(journal)
    for ev in log:
        kind = ev[0]
        if kind == "store":
            walk.store(ev[1], ev[2], mapped=len(ev) > 3 and ev[3] == MAPPED)
        elif kind == "flush":
            walk.flush(ev[1], ev[2])
        elif kind == "fence":
            walk.fence()
        elif kind == "begin":
            walk.op = ev[1]
        elif kind == "end":
            walk.end()
    return walk.out


def _lines(off: int, n: int) -> range:
    return range(off // LINE, -(-(off + n) // LINE))
