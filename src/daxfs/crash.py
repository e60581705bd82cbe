"""crash: record what an operation stores, flushes and fences; rebuild the
states a power failure could leave; check each one.

The crash tester is a wrapper around the region, not a fork of it:

    RecordingRegion(region)   passes every call through to the real region
                              and logs store / flush / fence events, with the
                              durability promises of persistent memory (so the
                              file system issues every flush it would there)
    MemoryRegion(image)       a pool held in a bytearray (no mapping), to mount
                              and check crash images quickly
    crash_images(base, log)   at every fence (and at the end), the persisted
                              image plus subsets of the stores still in flight

The persistence model (as Chipmunk's): a store reaches the media when a
flush covering it, issued after it, is followed by a fence; before that it
may or may not have reached it.  A crash image is the persisted image plus
any subset of in-flight units.  Stores of up to 512 bytes are split into
64-byte cache lines (units); larger stores (file data) are one unit each,
also tried torn (first, last or a middle cache line missing).  With at most
``EXHAUSTIVE`` units in flight every subset is tried; otherwise every
subset of at most two units plus ``random_subsets`` random ones.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from .region import NoDurability

LINE = 64
SPLIT_LIMIT = 512
EXHAUSTIVE = 12


# --------------------------------------------------------------------------
# Recording.
# --------------------------------------------------------------------------
class _RecordedDurability:
    name = "pmem"
    volatile = False

    def __init__(self, rec: RecordingRegion):
        self.rec = rec

    def flush(self, addr: int, n: int) -> None:
        self.rec.flush(addr - self.rec.addr, n)

    def fence(self) -> None:
        self.rec.fence()


class RecordingRegion:
    """Every call goes to ``inner``; stores, flushes and fences are logged."""

    def __init__(self, inner):
        self.inner = inner
        self.log: list[tuple] = []
        self.durability = _RecordedDurability(self)
        self.volatile = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def store(self, off: int, data) -> None:
        self.log.append(("store", off, bytes(data)))
        self.inner.store(off, data)

    def zero(self, off: int, n: int) -> None:
        self.log.append(("store", off, bytes(n)))
        self.inner.zero(off, n)

    def flush(self, off: int, n: int) -> None:
        if n > 0:
            self.log.append(("flush", off, n))

    def fence(self) -> None:
        self.log.append(("fence",))

    def persist(self, off: int, n: int) -> None:
        self.flush(off, n)
        self.fence()


class MemoryRegion:
    """A pool image in memory, with the Region interface the file system uses.
    Locks are taken on a small scratch file (flock and OFD locks need one)."""

    kind, align = "memory", 4096
    map_sync = huge_capable = readonly = private = False

    def __init__(self, image: bytearray, lock_path: str):
        self.image = image
        self.buf = memoryview(image)
        self.size = len(image)
        self.path = lock_path
        self.fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self.durability = NoDurability()
        self.volatile = True
        self.addr = 0
        self.closed = False

    def read(self, off: int, n: int) -> bytes:
        return bytes(self.buf[off : off + n])

    def store(self, off: int, data) -> None:
        self.buf[off : off + len(data)] = data

    def zero(self, off: int, n: int) -> None:
        self.buf[off : off + n] = bytes(n)

    def flush(self, off: int, n: int) -> None:
        pass

    def fence(self) -> None:
        pass

    def persist(self, off: int, n: int) -> None:
        pass

    def check_map_alignment(self, off: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "an in-memory pool cannot be mapped")

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "size": self.size, "durability": "none", "volatile": True}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.buf.release()
            os.close(self.fd)


# --------------------------------------------------------------------------
# Crash images.
# --------------------------------------------------------------------------
@dataclass
class _Unit:
    off: int
    data: bytes
    flushed: bool = False
    torn: bool = False  # a large store: also try it with lines missing


@dataclass
class CrashPoint:
    """The persisted image at a crash point and the units still in flight."""

    index: int  # events before the crash
    persisted: bytes
    inflight: list[_Unit] = field(default_factory=list)


def crash_points(base: bytes, log: list[tuple]) -> Iterator[CrashPoint]:
    """Each fence's crash point (just before the fence) and the final one."""
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
        else:
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


def crash_images(point: CrashPoint, rng: random.Random, random_subsets: int = 200
                 ) -> Iterator[bytearray]:  # fmt: skip
    """The images a crash at ``point`` can leave."""
    units = point.inflight
    n = len(units)
    if n <= EXHAUSTIVE:
        subsets: Iterator[tuple[int, ...]] = itertools.chain.from_iterable(
            itertools.combinations(range(n), k) for k in range(n + 1)
        )
    else:
        small = itertools.chain.from_iterable(itertools.combinations(range(n), k) for k in range(3))
        rand = (tuple(i for i in range(n) if rng.random() < 0.5) for _ in range(random_subsets))
        subsets = itertools.chain(small, rand, [tuple(range(n))])
    for subset in subsets:
        yield _apply(point.persisted, [units[i] for i in subset])
        big = [units[i] for i in subset if units[i].torn]
        for victim in big:
            for drop in ("first", "last", "middle"):
                yield _apply(point.persisted, [units[i] for i in subset], torn=(victim, drop))


def _apply(persisted: bytes, units: list[_Unit], torn: tuple[_Unit, str] | None = None
           ) -> bytearray:  # fmt: skip
    img = bytearray(persisted)
    for u in units:
        img[u.off : u.off + len(u.data)] = u.data
    if torn is not None:
        u, drop = torn
        nlines = -(-len(u.data) // LINE)
        line = {"first": 0, "last": nlines - 1, "middle": nlines // 2}[drop]
        lo, hi = u.off + line * LINE, min(u.off + len(u.data), u.off + (line + 1) * LINE)
        img[lo:hi] = persisted[lo:hi]
    return img
