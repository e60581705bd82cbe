"""hugemap: which parts of a file can be mapped with 2 MiB pages.

A 2 MiB page maps a file-aligned 2 MiB window of a file onto a 2 MiB-aligned
run of the device.  That is possible for a window when one mapped extent
covers it whole, the extent's device offset and file offset agree modulo
2 MiB (so an aligned file window lands on an aligned device chunk), and the
window lies entirely inside the file size (a page past end of file would
expose bytes that are not the file's).  Pure functions over iomap's
Extent, shared by ``daxfs getmap`` and the mapping code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .inode import Extent
from .layout import CHUNK


def _align_up(n: int) -> int:
    return -(-n // CHUNK) * CHUNK


def _align_down(n: int) -> int:
    return n - n % CHUNK


def eligible_range(extent: Extent, file_size: int) -> tuple[int, int] | None:
    """The file range [start, end) of ``extent`` that 2 MiB pages can map, or None."""
    if extent.kind != "mapped" or extent.device_offset is None:
        return None
    if (extent.device_offset - extent.file_offset) % CHUNK:
        return None
    start = _align_up(extent.file_offset)
    end = _align_down(min(extent.file_offset + extent.length, file_size))
    return (start, end) if end > start else None


def eligible_bytes(extent: Extent, file_size: int) -> int:
    """How many bytes of ``extent`` 2 MiB pages can map (a multiple of 2 MiB)."""
    r = eligible_range(extent, file_size)
    return r[1] - r[0] if r else 0


def eligible_total(extents: Iterable[Extent], file_size: int) -> int:
    """The 2 MiB-mappable bytes of a whole file, from its iomap."""
    return sum(eligible_bytes(e, file_size) for e in extents)


def huge_windows(extent: Extent, file_size: int) -> Iterator[tuple[int, int]]:
    """(file_offset, device_offset) of each 2 MiB window of ``extent`` that a
    2 MiB page can map."""
    r = eligible_range(extent, file_size)
    if r is None:
        return
    shift = extent.device_offset - extent.file_offset  # type: ignore[operator]
    for foff in range(r[0], r[1], CHUNK):
        yield foff, foff + shift
