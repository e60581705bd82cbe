"""aging_stats: how well a file system's layout has aged, measured the same
way for daxfs and for a kernel file system.

Every side is first reduced to the same two things:

  * FileMap: for each regular file, its size and its mapped extents as
    (logical, physical, length) in bytes, contiguous neighbours merged.
    daxfs answers with iomap (physical = offset in the pool, whose data
    chunks are 2 MiB-aligned); a kernel file system with the FIEMAP ioctl
    (physical = offset on its block device; for a loop-mounted image, the
    offset in the image file).
  * BlockMap: one byte per 4 KiB block of the whole device or pool: free,
    large-file data, small-file data or metadata (everything else used).
    daxfs: the allocator's used map plus the file maps; ext4: the free
    ranges dumpe2fs lists plus the file maps.

and the figures are then computed by one set of functions:

  * 2 MiB eligibility: a 2 MiB window of a file [k*2M, (k+1)*2M) is
    eligible when one extent covers it whole, inside the file size, with
    physical - logical a multiple of 2 MiB (so the window lands on one
    aligned device chunk: what a PMD mapping needs).  The aim's fraction is
    eligible bytes over the bytes of large files (>= 2 MiB) that lie in
    whole windows (a 5 MiB file has 4 MiB that any layout could map with
    2 MiB pages; its last MiB can never be); the fraction over all their
    bytes is reported too.
  * free space in whole free aligned 2 MiB chunks, as a fraction of free space;
  * extents per large file (after merging);
  * space lost to small files: allocated minus size, over size.  For
    comparison, what famfs's 2 MiB-per-file allocation would lose.

``touch_sample`` maps a sample of large daxfs files, touches every 4 KiB
and reads the kernel's own pmd_bytes/pte_bytes from /proc/self/smaps.
"""

from __future__ import annotations

import fcntl
import os
import random
import re
import stat
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

BLOCK = 4096
CHUNK = 2 << 20
BLOCKS_PER_CHUNK = CHUNK // BLOCK

# Block kinds of a BlockMap (also the legend order of the pictures).
FREE, LARGE, SMALL, META = 0, 1, 2, 3
KIND_NAMES = ("free", "large-file", "small-file", "metadata")


# --------------------------------------------------------------------------
# file maps
# --------------------------------------------------------------------------
@dataclass
class FileMap:
    path: str
    size: int
    extents: list[tuple[int, int, int]]  # (logical, physical, length), merged

    @property
    def large(self) -> bool:
        return self.size >= CHUNK

    @property
    def allocated(self) -> int:
        return sum(n for _, _, n in self.extents)


def merge_extents(extents: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Sorted by logical offset, neighbours contiguous in the file and on the
    device joined (FIEMAP splits extents at its own limits; iomap never does)."""
    out: list[tuple[int, int, int]] = []
    for lo, ph, n in sorted(extents):
        if out and out[-1][0] + out[-1][2] == lo and out[-1][1] + out[-1][2] == ph:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + n)
        else:
            out.append((lo, ph, n))
    return out


def dax_file_maps(fs, root: str = "/") -> list[FileMap]:
    """Every regular file under ``root`` of a mounted daxfs pool, from iomap."""
    out = []
    for top, _dirs, files in fs.walk(root):
        for name in files:
            path = f"{top.rstrip('/')}/{name}"
            st = fs.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            # Past the end of file too: a large file's last chunk is allocated whole.
            ext = [
                (e.file_offset, e.device_offset, e.length)
                for e in fs.iomap(path, 0, _align_up(st.st_size, CHUNK) + CHUNK)
                if e.kind == "mapped"
            ]
            out.append(FileMap(path, st.st_size, merge_extents(ext)))
    return out


def dir_file_maps(root: str, skip: tuple[str, ...] = ("lost+found",)) -> list[FileMap]:
    """Every regular file under a host directory, from FIEMAP (synced first)."""
    out = []
    for top, dirs, files in os.walk(root):
        if top == root:
            dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            ext = [(lo, ph, n) for lo, ph, n, _flags in fiemap(path)]
            out.append(FileMap(path, st.st_size, merge_extents(ext)))
    return out


# --------------------------------------------------------------------------
# FIEMAP (linux/fiemap.h), by hand: a 32-byte header and 56-byte extents
# --------------------------------------------------------------------------
FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2  # no physical location yet (e.g. delayed allocation)
FIEMAP_MAX_OFFSET = (1 << 64) - 1
# struct fiemap: start, length, flags, mapped_extents, extent_count, reserved
_FIEMAP = struct.Struct("=QQIIII")
# struct fiemap_extent: logical, physical, length, reserved64[2], flags, reserved[3]
_EXTENT = struct.Struct("=QQQQQIIII")
assert _FIEMAP.size == 32 and _EXTENT.size == 56


def fiemap(path: str, *, sync: bool = True, batch: int = 256) -> list[tuple[int, int, int, int]]:
    """(logical, physical, length, flags) of every extent of ``path``, by the
    FIEMAP ioctl; ``sync`` makes the kernel write delayed allocations first so
    that every extent has its physical place.  Raises OSError (EOPNOTSUPP on
    file systems without FIEMAP, such as tmpfs)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out: list[tuple[int, int, int, int]] = []
        start = 0
        while True:
            got = _fiemap_batch(fd, start, batch, FIEMAP_FLAG_SYNC if sync else 0)
            out += [e for e in got if not e[3] & FIEMAP_EXTENT_UNKNOWN]
            if not got or got[-1][3] & FIEMAP_EXTENT_LAST:
                return out
            start = got[-1][0] + got[-1][2]
    finally:
        os.close(fd)


def _fiemap_batch(fd: int, start: int, count: int, flags: int) -> list[tuple[int, int, int, int]]:
    buf = bytearray(_FIEMAP.size + count * _EXTENT.size)
    _FIEMAP.pack_into(buf, 0, start, FIEMAP_MAX_OFFSET - start, flags, 0, count, 0)
    fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
    mapped = _FIEMAP.unpack_from(buf, 0)[3]
    out = []
    for i in range(mapped):
        lo, ph, n, _r0, _r1, fl, *_ = _EXTENT.unpack_from(buf, _FIEMAP.size + i * _EXTENT.size)
        out.append((lo, ph, n, fl))
    return out


# --------------------------------------------------------------------------
# 2 MiB eligibility
# --------------------------------------------------------------------------
def eligible_bytes(fm: FileMap) -> int:
    """Bytes of ``fm`` in 2 MiB windows that one aligned extent covers whole."""
    total = 0
    for lo, ph, n in fm.extents:
        if (ph - lo) % CHUNK:
            continue
        start = _align_up(lo, CHUNK)
        end = _align_down(min(lo + n, fm.size), CHUNK)
        total += max(0, end - start)
    return total


def window_bytes(size: int) -> int:
    """Bytes of a file in whole 2 MiB windows: what any layout could map with 2 MiB pages."""
    return _align_down(size, CHUNK)


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _align_down(n: int, a: int) -> int:
    return n - n % a


# --------------------------------------------------------------------------
# block maps
# --------------------------------------------------------------------------
@dataclass
class BlockMap:
    """One kind (FREE, LARGE, SMALL, META) per 4 KiB block of a device or pool."""

    kinds: np.ndarray  # uint8, one per block from offset 0
    label: str = ""

    @property
    def nblocks(self) -> int:
        return len(self.kinds)

    def chunk_kinds(self) -> np.ndarray:
        """(chunks, 4) block counts of each kind per 2 MiB chunk; a partial last
        chunk is padded with metadata (it can never be a whole free chunk)."""
        n = _align_up(self.nblocks, BLOCKS_PER_CHUNK)
        padded = np.full(n, META, dtype=np.uint8)
        padded[: self.nblocks] = self.kinds
        per = padded.reshape(-1, BLOCKS_PER_CHUNK)
        return np.stack([(per == k).sum(axis=1) for k in range(len(KIND_NAMES))], axis=1)

    def free_whole_fraction(self) -> float:
        """Free blocks lying in wholly free aligned chunks, over all free blocks."""
        counts = self.chunk_kinds()
        free = int(counts[:, FREE].sum())
        whole = int(counts[counts[:, FREE] == BLOCKS_PER_CHUNK, FREE].sum())
        return whole / free if free else 1.0


def _mark_files(kinds: np.ndarray, files: Iterable[FileMap]) -> None:
    for fm in files:
        kind = LARGE if fm.large else SMALL
        for _lo, ph, n in fm.extents:
            kinds[ph // BLOCK : _align_up(ph + n, BLOCK) // BLOCK] = kind


def dax_block_map(fs, files: list[FileMap]) -> BlockMap:
    """The pool's map: headers, journal and inode table are metadata; in the
    data area, the allocator's free blocks are free, file data is large or
    small, and the rest (directory and extent blocks) metadata."""
    sb = fs.sb
    with fs._locked(exclusive=False):
        used = fs.allocator.used_map()[: sb.data_blocks]
    kinds = np.full(fs.region.size // BLOCK, META, dtype=np.uint8)
    first = sb.data_off // BLOCK
    kinds[first : first + sb.data_blocks][~used] = FREE
    _mark_files(kinds, files)
    return BlockMap(kinds, f"daxfs ({sb.allocator})")


def device_block_map(nbytes: int, free_ranges: list[tuple[int, int]], files, label="") -> BlockMap:
    """A kernel file system's map from its free block ranges (in 4 KiB blocks,
    inclusive) and its files; whatever is used and no file's is metadata."""
    kinds = np.full(nbytes // BLOCK, META, dtype=np.uint8)
    for a, b in free_ranges:
        kinds[a : b + 1] = FREE
    _mark_files(kinds, files)
    return BlockMap(kinds, label)


_FREE_BLOCKS = re.compile(r"^\s+Free blocks: (.*)$")


def ext4_free_ranges(image: str) -> list[tuple[int, int]]:
    """Free block ranges (first, last) of an ext4 image, from dumpe2fs; the
    image should be unmounted (or at least synced) for the bitmaps to be current."""
    res = subprocess.run(["dumpe2fs", image], capture_output=True, text=True, check=True)
    bs = re.search(r"^Block size:\s+(\d+)", res.stdout, re.M)
    if not bs or int(bs.group(1)) != BLOCK:
        raise ValueError(f"{image}: expected an ext4 block size of {BLOCK}")
    out = []
    for line in res.stdout.splitlines():
        m = _FREE_BLOCKS.match(line)
        if not m:
            continue
        for part in m.group(1).split(","):
            part = part.strip()
            if part:
                a, _, b = part.partition("-")
                out.append((int(a), int(b or a)))
    return out


# --------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------
@dataclass
class AgingStats:
    large_files: int = 0
    large_bytes: int = 0
    large_window_bytes: int = 0  # in whole 2 MiB windows
    large_eligible_bytes: int = 0
    large_extents: int = 0
    large_allocated: int = 0
    small_files: int = 0
    small_bytes: int = 0
    small_allocated: int = 0
    small_famfs: int = 0  # what 2 MiB per file would take
    free_whole_fraction: float | None = None
    pages: dict[str, int] = field(default_factory=dict)  # touch_sample's figures

    @property
    def eligible_fraction(self) -> float:
        """The aim's figure: eligible bytes over bytes in whole 2 MiB windows."""
        return _ratio(self.large_eligible_bytes, self.large_window_bytes, 1.0)

    @property
    def eligible_of_all(self) -> float:
        return _ratio(self.large_eligible_bytes, self.large_bytes, 1.0)

    @property
    def extents_per_large_file(self) -> float:
        return _ratio(self.large_extents, self.large_files, 0.0)

    @property
    def small_waste(self) -> float:
        """Space lost to small files (allocated - size), over their size."""
        return _ratio(self.small_allocated - self.small_bytes, self.small_bytes, 0.0)

    @property
    def small_waste_famfs(self) -> float:
        return _ratio(self.small_famfs - self.small_bytes, self.small_bytes, 0.0)

    @property
    def large_slack(self) -> float:
        """Allocated past the end of large files (whole tail chunks), over their size."""
        return _ratio(self.large_allocated - self.large_bytes, self.large_bytes, 0.0)

    def as_dict(self) -> dict[str, object]:
        d = {k: v for k, v in self.__dict__.items()}
        for name in (
            "eligible_fraction",
            "eligible_of_all",
            "extents_per_large_file",
            "small_waste",
            "small_waste_famfs",
            "large_slack",
        ):
            d[name] = getattr(self, name)
        return d


def _ratio(a: int, b: int, empty: float) -> float:
    return a / b if b else empty


def file_stats(files: Iterable[FileMap], blocks: BlockMap | None = None) -> AgingStats:
    s = AgingStats()
    for fm in files:
        if fm.large:
            s.large_files += 1
            s.large_bytes += fm.size
            s.large_window_bytes += window_bytes(fm.size)
            s.large_eligible_bytes += eligible_bytes(fm)
            s.large_extents += len(fm.extents)
            s.large_allocated += fm.allocated
        else:
            s.small_files += 1
            s.small_bytes += fm.size
            s.small_allocated += fm.allocated
            s.small_famfs += _align_up(fm.size, CHUNK)
    if blocks is not None:
        s.free_whole_fraction = blocks.free_whole_fraction()
    return s


def eligible_fraction(files: Iterable[FileMap]) -> float:
    """Just the aim's figure (cheap enough to sample during a run)."""
    return file_stats(files).eligible_fraction


# --------------------------------------------------------------------------
# the kernel's own accounting for a sample of large daxfs files
# --------------------------------------------------------------------------
def touch_sample(fs, files: list[FileMap], count: int = 16, seed: int = 1) -> dict[str, int]:
    """Map ``count`` large files (a seeded sample), read one byte of every
    4 KiB, and sum what /proc/self/smaps says the kernel mapped:
    pmd_bytes, pte_bytes, plus the sample's eligible and window bytes."""
    large = sorted((fm for fm in files if fm.large), key=lambda fm: fm.path)
    sample = random.Random(seed).sample(large, min(count, len(large)))
    totals = {"files": len(sample), "pmd_bytes": 0, "pte_bytes": 0, "eligible_bytes": 0}
    totals["window_bytes"] = 0
    for fm in sample:
        with fs.map(fm.path, "r") as m:
            view = m.buffer
            try:
                bytes(view[::BLOCK])  # one read per 4 KiB page, in C
            finally:
                view.release()
            pages = m.page_sizes()
        totals["pmd_bytes"] += pages["pmd_bytes"]
        totals["pte_bytes"] += pages["pte_bytes"]
        totals["eligible_bytes"] += eligible_bytes(fm)
        totals["window_bytes"] += window_bytes(fm.size)
    return totals
