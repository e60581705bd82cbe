"""mapping: a file's extents composed into one virtual range of the process.

The mapping side asks the file system only for the block map (iomap) and
maps those device ranges; it never decides where bytes live.  Recipe:

  1. under the pool lock, take the block map (allocating holes first for
     writable modes) and pin every extent and the inode (pins.py), so that
     nothing can free them from then on;
  2. reserve an anonymous range (a Python mmap object, which is what makes
     views safe: it refuses to close while views are exported) large
     enough to place the file at an address congruent to its file offset
     modulo 2 MiB;
  3. map each extent over the reservation with MAP_FIXED from the pool, at
     its file offset; holes stay anonymous zero pages; madvise HUGEPAGE.

Where the device offset of an extent agrees with its file offset modulo
2 MiB and covers whole 2 MiB windows, the kernel can use a PMD (2 MiB)
mapping if the backing supports it; elsewhere it uses 4 KiB pages.  What it
actually did is read back from /proc/self/smaps (page_sizes()).

Views (buffer, ndarray, to_arrow) are zero-copy and stay valid until the
Mapping is closed; close() raises BufferError while any view is alive, as
mmap does, and then the memory stays mapped.  A Mapping outlives the
FileSystem that made it (unmounting does not unmap it) and keeps its pins
until it is closed or its last view is gone.  A mapping that is never
closed lets go when the garbage collector takes its last view; an unlinked
file whose last user it was is then freed by the mount's next call.
"""

from __future__ import annotations

import errno
import mmap
import re
from dataclasses import dataclass
from typing import Any, Protocol

from .inode import Extent
from .layout import BLOCK, CHUNK
from .path import oserror
from .pins import RangePins
from .region import MADV_HUGEPAGE, MAP_FIXED, _libc, sys_mmap


class MapHost(Protocol):
    """What a Mapping asks of the file system that made it (fs.py's
    FileSystem), named here so that this module does not import fs.py."""

    region: Any

    def _orphan_check_later(self, ino: int) -> Any: ...
    def _map_is_stale(self, plan: MapPlan) -> bool: ...
    def _huge_pages_note(self, plan: MapPlan) -> str | None: ...
    def _mapping_closed(self, ino: int) -> None: ...
    def _trim_after_unmap(self, ino: int) -> None: ...


MODES = ("r", "r+", "w+", "c")
PAGE = mmap.PAGESIZE


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


class _PinnedMmap(mmap.mmap):
    """The reservation: an anonymous mmap whose pages we replace.  It carries
    the pins, so they live exactly as long as the memory can be reached."""

    pins: RangePins | None = None


def _address(m: mmap.mmap) -> int:
    import ctypes

    probe = ctypes.c_char.from_buffer(m)
    try:
        return ctypes.addressof(probe)
    finally:
        del probe


@dataclass(frozen=True)
class MapPlan:
    """What the file system hands the mapping side (taken under its lock)."""

    ino: int
    generation: int
    file_size: int
    btime: int
    offset: int
    length: int
    extents: list[Extent]


class Mapping:
    """A file of the pool mapped into this process; see the module docstring."""

    def __init__(self, fs: MapHost, path: str, mode: str, plan: MapPlan, pins: RangePins):
        self._fs, self.path, self.mode = fs, path, mode
        self.offset, self.length = plan.offset, plan.length
        self.extents, self._plan = plan.extents, plan
        self._region = fs.region
        self._mm, self._base, self._start = self._build(plan, pins)
        # Never closed (dropped with its views): the pins go with the
        # reservation's finalizer, which only queues the inode; the file system
        # checks it for an orphan to free at its next call.
        pins.on_release = fs._orphan_check_later(plan.ino)
        view = memoryview(self._mm)[self._start : self._start + self.length]
        self._view = view.toreadonly() if mode == "r" else view

    # -- construction ------------------------------------------------------
    def _build(self, plan: MapPlan, pins: RangePins) -> tuple[_PinnedMmap, int, int]:
        span = _align_up(max(plan.length, 1), PAGE)
        mm = _PinnedMmap(-1, span + 4 * CHUNK, flags=mmap.MAP_PRIVATE)
        mm.pins = pins
        start_addr = _address(mm)
        # Place file offset F at an address congruent to F modulo 2 MiB.
        base = _align_up(start_addr + CHUNK, CHUNK) + plan.offset % CHUNK
        placed: list[tuple[int, int]] = []
        try:
            for e in plan.extents:
                if e.kind == "mapped":
                    placed.append(self._map_extent(base, e, pins.fd, placed))
        except BaseException:
            # Unmap now: extents already mapped hold the pins' open description
            # (so its locks) for as long as the reservation lives.
            mm.close()
            raise
        _libc.madvise(base - plan.offset % CHUNK, _align_up(span, CHUNK), MADV_HUGEPAGE)
        return mm, base, base - start_addr

    def _map_extent(
        self, base: int, e: Extent, fd: int, placed: list[tuple[int, int]]
    ) -> tuple[int, int]:
        prot = mmap.PROT_READ | (0 if self.mode == "r" else mmap.PROT_WRITE)
        flags = (mmap.MAP_PRIVATE if self.mode == "c" else mmap.MAP_SHARED) | MAP_FIXED
        dev, va = e.device_offset, base + (e.file_offset - self.offset)
        assert dev is not None
        # mmap takes whole pages (device-dax: whole aligned units): start at the
        # unit holding the extent's first byte (an unaligned map offset).
        align = self._region.map_unit
        lead = dev % align
        dev, va, length = dev - lead, va - lead, _align_up(e.length + lead, align)
        if align > PAGE:
            self._region.check_map_alignment(dev, length)
            if any(va < end and start < va + length for start, end in placed):
                raise OSError(
                    errno.EINVAL,
                    f"its extents are not aligned to the device ({align} bytes), "
                    "so they cannot share one view",
                    self.path,
                )
        sys_mmap(va, length, prot, flags, fd, dev)
        return va, va + length

    # -- views -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._mm.closed

    def _check_open(self) -> None:
        if self._mm.closed:
            raise ValueError("mapping is closed")

    @property
    def buffer(self) -> memoryview:
        """A zero-copy memoryview of the mapped range (read-only in mode "r")."""
        self._check_open()
        return self._view[:]

    @property
    def address(self) -> int:
        """Virtual address of the first mapped byte."""
        self._check_open()
        return self._base

    def ndarray(self, dtype: Any = "uint8", shape: Any = None, offset: int = 0, order: str = "C"):
        """A numpy array over the mapping (zero-copy), like numpy.memmap's."""
        import numpy as np

        self._check_open()
        dt = np.dtype(dtype)
        if shape is None:
            shape = ((self.length - offset) // dt.itemsize,)
        elif isinstance(shape, int):
            shape = (shape,)
        count = 1
        for dim in shape:
            count *= dim
        if offset < 0 or offset + count * dt.itemsize > self.length:
            raise ValueError("ndarray exceeds the mapping")
        # frombuffer holds a buffer export (np.ndarray(buffer=...) does not), so
        # close() raises BufferError while the array lives instead of unmapping it.
        flat = np.frombuffer(self._view, dtype=dt, count=count, offset=offset)
        return flat.reshape(shape, order=order)  # type: ignore[call-overload]

    def to_arrow(self):
        """A pyarrow Buffer over the mapping (zero-copy; keeps the memory alive)."""
        import pyarrow as pa

        self._check_open()
        return pa.py_buffer(self._view)

    # -- durability and state ----------------------------------------------
    def persist(self, offset: int = 0, length: int | None = None) -> None:
        """Make stores in [offset, offset+length) durable through the pool's
        durability backend (libpmem flush + fence, or msync; tmpfs: nothing)."""
        self._check_open()
        length = self.length - offset if length is None else length
        if offset < 0 or length < 0 or offset + length > self.length:
            raise oserror(errno.EINVAL, self.path)
        if self.mode == "c" or length == 0:
            return  # private copies never reach the pool
        runs = self._mapped_runs(self.offset + offset, length)
        if self._region.closed:
            # The FileSystem is gone, the mapping is not: flush the same
            # memory (or file pages) through this mapping's own addresses.
            durability = self._region.durability
            for file_off, _dev, n in runs:
                durability.flush(self._base + file_off - self.offset, n)
            durability.fence()
            return
        # Flush the pool's own device ranges rather than this mapping's
        # addresses: the same memory (pmem flushes by cache line, msync by
        # file page), and the region (or a crash recorder wrapping it) sees
        # exactly which bytes became durable.
        for _file_off, dev, n in runs:
            self._region.flush(dev, n)
        self._region.fence()

    def _mapped_runs(self, file_off: int, length: int) -> list[tuple[int, int, int]]:
        """(file offset, device offset, length) of the mapped parts of a range."""
        out, end = [], file_off + length
        for e in self.extents:
            lo, hi = max(file_off, e.file_offset), min(end, e.file_offset + e.length)
            if e.kind == "mapped" and lo < hi:
                assert e.device_offset is not None
                out.append((lo, e.device_offset + lo - e.file_offset, hi - lo))
        return out

    @property
    def stale(self) -> bool:
        """True once the file's block map or size changed since this mapping was
        made (map it again to see the new layout); its own memory stays valid."""
        return self._fs._map_is_stale(self._plan)

    def page_sizes(self) -> dict[str, int]:
        """What the kernel mapped, from /proc/self/smaps, for this range only:
        pmd_bytes (2 MiB pages), pte_bytes (4 KiB pages), resident_bytes."""
        self._check_open()
        lo = self._base - self._base % PAGE
        return smaps_usage(lo, _align_up(self._base + self.length, PAGE))

    @property
    def huge_pages_note(self) -> str | None:
        """Why this mapping cannot use 2 MiB pages, or None if it can."""
        return self._fs._huge_pages_note(self._plan)

    # -- lifetime ----------------------------------------------------------
    def close(self) -> None:
        """Unmap and release the pins.  Raises BufferError while views exist."""
        if self._mm.closed:
            return
        self._view.release()
        try:
            self._mm.close()
        except BufferError:
            view = memoryview(self._mm)[self._start : self._start + self.length]
            self._view = view.toreadonly() if self.mode == "r" else view
            raise
        pins, self._mm.pins = self._mm.pins, None
        if pins is not None:
            pins.on_release = None  # closed here: the orphan check runs now, not later
            pins.release()
        self._fs._mapping_closed(self._plan.ino)
        self._fs._trim_after_unmap(self._plan.ino)  # the tail it kept, if any

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.length} bytes at {self._base:#x}"
        return f"<daxfs.Mapping {self.path!r} mode={self.mode!r} {state}>"


_SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")


def smaps_usage(lo: int, hi: int) -> dict[str, int]:
    """Sum /proc/self/smaps counters over the mappings that overlap [lo, hi)
    (an extent mapped in whole device-dax units may reach past either end)."""
    totals = {"Rss": 0, "ShmemPmdMapped": 0, "FilePmdMapped": 0, "AnonHugePages": 0}
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            m = _SMAPS_HEADER.match(line)
            if m:
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                inside = start < hi and lo < end
                continue
            if inside:
                key, _, rest = line.partition(":")
                if key in totals:
                    totals[key] += int(rest.split()[0]) * 1024
    pmd = totals["ShmemPmdMapped"] + totals["FilePmdMapped"] + totals["AnonHugePages"]
    return {"pmd_bytes": pmd, "pte_bytes": totals["Rss"] - pmd,
            "resident_bytes": totals["Rss"]}  # fmt: skip


def device_span(extents: list[Extent]) -> list[tuple[int, int]]:
    """The device ranges (whole blocks) a set of extents covers."""
    return [
        (e.device_offset, _align_up(e.length, BLOCK))
        for e in extents
        if e.kind == "mapped" and e.device_offset is not None
    ]
