"""region: the mapped memory and the single seam where bytes become durable.

A Region is one backing (plain file, tmpfs file, fs-dax file, device-dax
character device, or a file emulating device-dax alignment) mapped once,
whole, at a 2 MiB-aligned virtual address.  Everything above reads through
``buf`` and changes bytes only through the calls below, so a wrapper around
a Region sees every store, flush and fence (the crash tester's seam):

    store(off, data) / zero(off, n)     change bytes (not yet durable)
    flush(off, n)                       start write-back of a range
    fence()                             wait until flushed ranges are durable
    persist(off, n) = flush + fence

Durability backends, chosen automatically and overridable:

    pmem    libpmem's pmem_flush / pmem_drain (CLWB + SFENCE) through ctypes:
            device-dax and fs-dax mapped with MAP_SYNC (without libpmem,
            fs-dax falls back to msync and device-dax refuses writes)
    msync   msync(MS_SYNC) of the page range: page-cache files
    none    nothing to do: tmpfs is volatile by nature

Lazy mode (group commit) on page-cache files: the kernel writes a dirty
page back whenever it likes, so a journal's home locations must not be
dirty in the file before their record is durable.  There, ``buf`` is a
private copy-on-write map of the file: ``store_home`` changes only this
process's copy, ``store``/``zero`` go through a second, shared map into the
page cache (file data, records, headers, live words), and the pages that a
home store copied read the file again after ``drop_homes`` (the journal
wrote those homes to the file once their records were durable).  Pages
never stored to as homes read the page cache through the private map.

Device-dax refuses mappings whose offset or length is not a multiple of its
alignment; ``align`` carries it and ``check_map_alignment`` enforces it (the
emulated backend enforces a 2 MiB alignment on an ordinary file, for tests).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import errno
import mmap
import os
import stat
import sys
import weakref
from dataclasses import dataclass

from .layout import BLOCK, CHUNK, SUPER_MAGIC

PROT_READ, PROT_WRITE = mmap.PROT_READ, mmap.PROT_WRITE
MAP_SHARED, MAP_PRIVATE, MAP_FIXED = mmap.MAP_SHARED, mmap.MAP_PRIVATE, 0x10
MAP_ANONYMOUS, MAP_NORESERVE = mmap.MAP_ANONYMOUS, 0x4000
MAP_SHARED_VALIDATE, MAP_SYNC = 0x03, 0x80000
MS_SYNC = 4
CACHE_LINE = 64  # the unit of a pmem flush (CLWB) and of x86 store atomicity limits
MADV_HUGEPAGE = 14
MADV_DONTNEED = 4
MADV_POPULATE_WRITE = 23  # (Linux 5.14)
BOOT_ID = "/proc/sys/kernel/random/boot_id"
# On tmpfs a store of this many bytes or more is written with pwrite(2), not
# copied into the mapping.  A page a store first touches through the
# mapping is zeroed by the kernel and then overwritten; pwrite fills a page
# fallocate reserved without zeroing it (shmem clears only what a write
# leaves out), one pass over the memory instead of two.  Measured here:
# 256 MiB into fresh pool space, fallocate then pwrite 70 ms; fallocate,
# madvise(MADV_POPULATE_WRITE) (what reserve() did) and copy 100 ms; zarr
# chunks of 1 MiB through DaxStore 0.76 ms each instead of 0.86.  Small
# stores (metadata, 4 KiB files) gain nothing from a system call.
PWRITE_MIN = 16 * 1024
MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def _oserror(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def sys_mmap(addr: int | None, length: int, prot: int, flags: int, fd: int, off: int) -> int:
    res = _libc.mmap(addr, length, prot, flags, fd, off)
    if res in (None, MAP_FAILED):
        raise _oserror("mmap")
    return res


def sys_munmap(addr: int, length: int) -> None:
    if _libc.munmap(addr, length) != 0:
        raise _oserror("munmap")


def reserve_aligned(length: int, align: int = CHUNK) -> int:
    """Reserve ``length`` bytes of address space starting on an ``align`` boundary."""
    base = sys_mmap(None, length + align, 0, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    start = (base + align - 1) // align * align
    if start > base:
        sys_munmap(base, start - base)
    tail = base + length + align - (start + length)
    if tail:
        sys_munmap(start + length, tail)
    return start


# --------------------------------------------------------------------------
# What the backing is: read from the kernel, never guessed from the name.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class MountInfo:
    mountpoint: str
    fstype: str
    options: frozenset[str]

    def option(self, key: str) -> str | None:
        for o in self.options:
            if o.startswith(key + "="):
                return o.split("=", 1)[1]
        return None


def mount_of(path: str) -> MountInfo:
    """The mount holding ``path``, from /proc/self/mountinfo (longest prefix wins)."""
    real = os.path.realpath(path)
    best = MountInfo("/", "unknown", frozenset())
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            mp = fields[4].replace("\\040", " ")
            inside = real == mp or real.startswith(mp.rstrip("/") + "/")
            if inside and len(mp) >= len(best.mountpoint):
                opts = set(fields[5].split(",")) | set(
                    rfields[2].split(",") if len(rfields) > 2 else []
                )
                best = MountInfo(mp, rfields[0], frozenset(opts))
    return best


def devdax_attrs(st: os.stat_result) -> tuple[int, int]:
    """(size, align) of a device-dax character device, from sysfs."""
    sysdir = os.path.realpath(f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    with open(os.path.join(sysdir, "size")) as f:
        size = int(f.read())
    try:
        with open(os.path.join(sysdir, "align")) as f:
            align = int(f.read())
    except FileNotFoundError:
        align = CHUNK
    return size, align


# --------------------------------------------------------------------------
# Durability backends.
# --------------------------------------------------------------------------
class NoDurability:
    """tmpfs: stores are as durable as they will ever be (volatile memory)."""

    name = "none"
    volatile = True

    def flush(self, addr: int, n: int) -> None:
        pass

    def fence(self) -> None:
        pass


class MsyncDurability:
    """Page-cache files: msync(MS_SYNC) writes the range back; fence is implied."""

    name = "msync"
    volatile = False

    def flush(self, addr: int, n: int) -> None:
        start = addr & ~(mmap.PAGESIZE - 1)
        if _libc.msync(start, addr + n - start, MS_SYNC) != 0:
            raise _oserror("msync")

    def fence(self) -> None:
        pass


class PmemDurability:
    """libpmem through ctypes: pmem_flush (CLWB) per range, pmem_drain (SFENCE)."""

    name = "pmem"
    volatile = False

    def __init__(self) -> None:
        lib = load_libpmem()
        if lib is None:
            raise OSError(errno.ENOSYS, "libpmem is not installed (Debian package libpmem1)")
        self._flush, self._drain = lib.pmem_flush, lib.pmem_drain

    def flush(self, addr: int, n: int) -> None:
        self._flush(addr, n)

    def fence(self) -> None:
        self._drain()


_libpmem: ctypes.CDLL | None | bool = False


def load_libpmem() -> ctypes.CDLL | None:
    global _libpmem
    if _libpmem is False:
        # DAXFS_LIBPMEM names a libpmem outside the loader's search path.
        name = os.environ.get("DAXFS_LIBPMEM") or ctypes.util.find_library("pmem") or "libpmem.so.1"
        try:
            lib = ctypes.CDLL(name)
            for fn in (lib.pmem_flush, lib.pmem_persist):
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t], None
            lib.pmem_drain.argtypes, lib.pmem_drain.restype = [], None
            _libpmem = lib
        except OSError:
            _libpmem = None
    return _libpmem  # type: ignore[return-value]


DURABILITY = {"none": NoDurability, "msync": MsyncDurability, "pmem": PmemDurability}


def default_durability(
    kind: str, *, map_sync: bool, on_tmpfs: bool, have_libpmem: bool, writable: bool, path: str
) -> str:
    """The backend a backing gets when none is asked for.

    Persistent memory wants libpmem's cache-line flushes.  Without libpmem,
    fs-dax still has msync, which on a DAX file writes the CPU caches back;
    device-dax has no msync, so a writable open is refused rather than
    silently left with no durability at all."""
    if kind == "devdax" or map_sync:
        if have_libpmem:
            return "pmem"
        if map_sync:
            return "msync"
        if writable:
            raise OSError(
                errno.ENOSYS,
                "device-dax needs libpmem to make stores durable: install the Debian "
                "package libpmem1 (or point DAXFS_LIBPMEM at it), or open with "
                "durability='none' to accept volatile stores",
                path,
            )
        return "none"  # nothing is ever flushed through a read-only open
    if kind == "tmpfs" or on_tmpfs:
        return "none"
    return "msync"


# --------------------------------------------------------------------------
# The region.
# --------------------------------------------------------------------------
class Region:
    """One backing mapped whole at a 2 MiB-aligned address."""

    def __init__(
        self,
        path: str,
        *,
        readonly: bool = False,
        durability: str | None = None,
        emulate_devdax: bool = False,
        private: bool = False,
    ):
        """``private`` maps copy-on-write: stores stay in this process and never
        reach the pool (the checker uses it to recover a journal read-only)."""
        self.path = path
        self.readonly = readonly and not private
        self.private = private
        flags = os.O_RDONLY if readonly or private else os.O_RDWR
        self.fd = os.open(path, flags | os.O_CLOEXEC)
        try:
            self._probe(emulate_devdax)
            self._map()
            self.durability = self._choose_durability(durability)
        except BaseException:
            os.close(self.fd)
            raise
        self.closed = False
        # Lazy mode: homes in a private copy-on-write map (see the module doc).
        self.lazy_capable = (
            self.kind == "file" and not self.map_sync and not private
            and self.durability.name == "msync"
        )  # fmt: skip
        self._home_pages: set[int] = set()  # pages of buf a home store copied
        if self.lazy_capable:
            self._map_homes_privately()
        # Chunks of a file backing known to have storage behind them (reserve).
        self._reserved: set[int] = set()
        self._can_reserve = self.kind != "devdax" and not (self.readonly or self.private)
        # On tmpfs, large stores (file data) go through pwrite(2), see store().
        self._pwrite_stores = self.kind == "tmpfs" and not self.private

    # -- discovery ---------------------------------------------------------
    def _probe(self, emulate_devdax: bool) -> None:
        st = os.fstat(self.fd)
        self.mount = mount_of(self.path)
        if stat.S_ISCHR(st.st_mode):
            self.kind = "devdax"
            self.size, self.align = devdax_attrs(st)
        elif stat.S_ISREG(st.st_mode):
            self.size, self.align = st.st_size, BLOCK
            if emulate_devdax:
                self.kind, self.align = "devdax-emulated", CHUNK
            elif self.mount.fstype == "tmpfs":
                self.kind = "tmpfs"
            elif "dax" in self.mount.options or "dax=always" in self.mount.options:
                self.kind = "fsdax"
            else:
                self.kind = "file"
        else:
            raise OSError(errno.EINVAL, "not a regular file or dax device", self.path)
        if self.size < 2 * CHUNK:
            raise OSError(errno.EINVAL, f"too small for a pool ({self.size} bytes)", self.path)
        self.size -= self.size % self.align

    @property
    def huge_capable(self) -> bool:
        """Can this backing give 2 MiB page mappings at all?"""
        if self.kind in ("devdax", "devdax-emulated") and self.align >= CHUNK:
            return self.kind == "devdax" or self._tmpfs_huge()
        if self.kind == "tmpfs":
            return self._tmpfs_huge()
        return self.kind in ("fsdax",) or self.map_sync

    def _tmpfs_huge(self) -> bool:
        return self.mount.fstype == "tmpfs" and self.mount.option("huge") in (
            "always",
            "advise",
            "within_size",
        )

    def _map(self) -> None:
        prot = PROT_READ | (0 if self.readonly else PROT_WRITE)
        self.addr = reserve_aligned(self.size, max(CHUNK, self.align))
        self.map_sync = False
        if self.kind in ("fsdax", "file") and not self.readonly and not self.private:
            try:
                sys_mmap(
                    self.addr,
                    self.size,
                    prot,
                    MAP_SHARED_VALIDATE | MAP_SYNC | MAP_FIXED,
                    self.fd,
                    0,
                )
                self.map_sync = True
            except OSError:
                pass  # not DAX: fall back to an ordinary shared mapping
        if not self.map_sync:
            # (A writable private map is charged in full against the commit
            # limit without MAP_NORESERVE: see _map_homes_privately.)
            share = MAP_PRIVATE | MAP_NORESERVE if self.private else MAP_SHARED
            sys_mmap(self.addr, self.size, prot, share | MAP_FIXED, self.fd, 0)
        if self.kind != "file" or self.map_sync:
            # Not on a page-cache file: a 2 MiB folio there is written back
            # whole, so every 4 KiB msync would write 2 MiB (measured on
            # ext4: 2,048 KiB and 417 us per msync, against 4 KiB and 97 us
            # with the kernel's small folios).  huge_capable says no anyway.
            _libc.madvise(self.addr, self.size, MADV_HUGEPAGE)
        view = self._view_of(self.addr)
        self.buf = view.toreadonly() if self.readonly else view
        # Where store() and zero() write: the same map but in lazy mode.
        self._shared_addr, self._shared_buf = self.addr, self.buf

    def _view_of(self, addr: int) -> memoryview:
        arr = (ctypes.c_char * self.size).from_address(addr)
        # Every view of a map hangs from one array: once the last is gone
        # (after close), the address range is given back.  Not at exit:
        # other exit handlers (the mount registry's unmounts) still use it.
        weakref.finalize(arr, sys_munmap, addr, self.size).atexit = False
        return memoryview(arr).cast("B")

    def _map_homes_privately(self) -> None:
        """Lazy mode: ``buf`` becomes a private copy-on-write map of the file
        (writable even on a read-only open: a follower applies the records
        it catches up on there), the shared map stays for store().  No huge
        pages: a page-cache file gives none, and a private map must stay 4 KiB
        so that drop_homes gives back exactly the pages it names.
        MAP_NORESERVE: a writable private map is otherwise charged in full
        against the commit limit, and the kernel refuses one of a pool
        larger than memory (a 1 TiB pool here); only the pages a process
        writes are copied, and drop_homes gives them back."""
        priv = reserve_aligned(self.size, CHUNK)
        flags = MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE
        sys_mmap(priv, self.size, PROT_READ | PROT_WRITE, flags, self.fd, 0)
        self.addr, self._home_buf = priv, self._view_of(priv)
        self.buf = self._home_buf.toreadonly() if self.readonly else self._home_buf

    def _choose_durability(self, requested: str | None) -> object:
        if self.private:
            requested = "none"  # nothing a private map holds can become durable
        if requested is None:
            requested = default_durability(
                self.kind,
                map_sync=self.map_sync,
                on_tmpfs=self.mount.fstype == "tmpfs",
                have_libpmem=load_libpmem() is not None,
                writable=not self.readonly,
                path=self.path,
            )
        if requested not in DURABILITY:
            raise ValueError(
                f"unknown durability backend {requested!r}; choose one of {sorted(DURABILITY)}"
            )
        return DURABILITY[requested]()

    def word(self, off: int) -> memoryview | None:
        """The 8 bytes at ``off`` of the shared map as one native unsigned
        integer (``view[0]``), for a word other processes store that is read
        on every call; None on a big-endian host, whose native order is not
        the format's.  After close it reads 0 (the map is replaced)."""
        return word_view(self._shared_buf, off)

    # -- the seam ----------------------------------------------------------
    def read(self, off: int, n: int) -> bytes:
        return bytes(self.buf[off : off + n])

    def store(self, off: int, data) -> None:
        n = len(data)
        if n >= PWRITE_MIN and self._pwrite_stores:
            done = os.pwrite(self.fd, data, off)
            while done < n:  # (tmpfs writes whole; a signal may cut it short)
                done += os.pwrite(self.fd, data[done:], off + done)
        else:
            self._shared_buf[off : off + n] = data

    def zero(self, off: int, n: int) -> None:
        ctypes.memset(self._shared_addr + off, 0, n)

    def prefault(self, off: int, n: int) -> None:
        """Map [off, off+n) writable now, for stores to come: one system call
        for pages that those stores would each fault in (on tmpfs about
        3.5 us a 4 KiB page, where the copy itself is 2).  Changes no byte.
        A kernel without MADV_POPULATE_WRITE, or a full backing, says so
        and the stores fault as before (reserve() reports ENOSPC then)."""
        _libc.madvise(self._shared_addr + off, n, MADV_POPULATE_WRITE)

    def store_home(self, off: int, data) -> None:
        """Store a journal record's write at its home location: in lazy mode
        into this process's private copy only (the journal writes it to the
        file once the record is durable), else as store()."""
        if not self.lazy_capable:
            self.store(off, data)
            return
        n = len(data)
        self._home_buf[off : off + n] = data
        self._home_pages.update(range(off // mmap.PAGESIZE, (off + n - 1) // mmap.PAGESIZE + 1))

    def drop_homes(self, ranges=None) -> None:
        """Let private copies go, so those pages read the file again: all of
        them (the file holds every home now), or those in the (offset,
        length) ``ranges`` (freed space, which may hold file data next)."""
        if not self._home_pages:
            return
        page = mmap.PAGESIZE
        if ranges is None:
            pages, self._home_pages = sorted(self._home_pages), set()
        else:
            # The pages we hold that the ranges cover, in O(held log ranges):
            # a range may be a freed file of many GiB.
            spans = merge_ranges((off // page, -(-(off + n) // page)) for off, n in ranges)
            starts = [first for first, _end in spans]
            pages = sorted(
                p for p in self._home_pages
                if (i := bisect.bisect_right(starts, p) - 1) >= 0 and p < spans[i][1]
            )  # fmt: skip
            self._home_pages.difference_update(pages)
        for first, last in _runs(pages):
            if _libc.madvise(self.addr + first * page, (last + 1 - first) * page, MADV_DONTNEED):
                raise _oserror("madvise")

    def forget_stores(self, off: int = 0, n: int | None = None) -> None:
        """A private region: let what this process stored in ``n`` bytes at
        ``off`` (all of it by default) go, so those pages read the file again."""
        assert self.private
        page = mmap.PAGESIZE
        lo = off - off % page
        hi = self.size if n is None else min(self.size, -(-(off + n) // page) * page)
        if _libc.madvise(self.addr + lo, hi - lo, MADV_DONTNEED):
            raise _oserror("madvise")

    @property
    def holds_homes(self) -> bool:
        """Does this process hold homes the file does not (lazy mode)?"""
        return bool(self._home_pages)

    def sync_file(self) -> None:
        """Make every store() so far durable (fdatasync): the group commit's
        one flush, whatever the kernel had written back already."""
        os.fdatasync(self.fd)

    def boot_identity(self) -> bytes:
        """32 bytes naming this boot and this pool file: the same in every
        process that maps the file until the machine restarts (a page cache
        that outlives a killed process is then still there), different for
        a copy of the file and after a power loss."""
        with open(BOOT_ID, "rb") as f:
            boot = bytes.fromhex(f.read().strip().decode().replace("-", ""))
        st = os.fstat(self.fd)
        return (
            boot[:16].ljust(16, b"\0")
            + st.st_dev.to_bytes(8, "little")
            + st.st_ino.to_bytes(8, "little")
        )

    def flush(self, off: int, n: int) -> None:
        if n > 0:
            self.durability.flush(self._shared_addr + off, n)

    def fence(self) -> None:
        self.durability.fence()

    def persist(self, off: int, n: int) -> None:
        self.flush(off, n)
        self.fence()

    def reserve(self, off: int, n: int) -> None:
        """Give [off, off+n) storage now, in whole 2 MiB chunks of a file backing.

        A pool file may be sparse, and a store into a hole whose file system is
        full kills the process with SIGBUS.  So space is reserved (fallocate)
        where the pool allocates it: a full backing is an ENOSPC raised here,
        inside a transaction that then aborts, and a store never meets a hole.
        Device-dax is backed whole; a file system without fallocate is left
        sparse (glibc's write-zeroes emulation would race live stores)."""
        if not self._can_reserve or n <= 0:
            return
        for chunk in range(off // CHUNK, (off + n - 1) // CHUNK + 1):
            if chunk in self._reserved:
                continue
            start = chunk * CHUNK
            if _libc.fallocate(self.fd, 0, start, min(CHUNK, self.size - start)) != 0:
                code = ctypes.get_errno()
                if code == errno.EOPNOTSUPP:
                    self._can_reserve = False
                    return
                why = "no space for the pool in its backing file system"
                raise OSError(code, why if code == errno.ENOSPC else os.strerror(code), self.path)
            self._reserved.add(chunk)

    @property
    def map_unit(self) -> int:
        """The least a mapping of the pool maps, aligned to it: the
        device's unit on device-dax (a mapping of one block there reaches
        its whole unit), a page elsewhere."""
        return max(self.align, mmap.PAGESIZE)

    def check_map_alignment(self, off: int, length: int) -> None:
        """Refuse, as device-dax does, a mapping not aligned to the device."""
        if off % self.align or length % self.align:
            raise OSError(
                errno.EINVAL,
                f"device-dax mappings must be multiples of "
                f"{self.align} bytes (offset {off}, length {length})",
            )

    @property
    def volatile(self) -> bool:
        return self.durability.volatile

    def describe(self) -> dict[str, object]:
        return {
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "align": self.align,
            "fstype": self.mount.fstype,
            "durability": self.durability.name,
            "volatile": self.volatile,
            "map_sync": self.map_sync,
            "huge_pages": self.huge_capable,
        }

    def close(self) -> None:
        """Unmap the pool.  Views still held elsewhere keep working memory (now
        anonymous zero pages, detached from the pool) instead of faulting; the
        address range itself is unmapped when the last view is gone (at once
        when none is left), so mounting again and again does not pile up
        mappings until mmap fails with ENOMEM (vm.max_map_count)."""
        if self.closed:
            return
        self.closed = True
        for addr in {self.addr, self._shared_addr}:
            sys_mmap(
                addr,
                self.size,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                -1,
                0,
            )
        for view in (self.buf, self._shared_buf):
            try:
                view.release()
            except BufferError:
                pass
        os.close(self.fd)


def word_view(buf: memoryview, off: int) -> memoryview | None:
    """Region.word for any buffer."""
    return buf[off : off + 8].cast("Q") if sys.byteorder == "little" else None


def holds_a_pool(path: str) -> bool:
    """Does the file at ``path`` start with a daxfs superblock's magic?"""
    try:
        with open(path, "rb") as f:
            return f.read(len(SUPER_MAGIC)) == SUPER_MAGIC
    except OSError:
        return False


def create_pool_file(path: str, size: int, *, force: bool) -> None:
    """Create (or, with force, reuse) a backing of ``size`` bytes.  Device files
    keep their own size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISCHR(st.st_mode):
        return
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a pool file", path)
    if st is not None and not force and st.st_size > 0:
        what = "a pool" if holds_a_pool(path) else "data (not a pool)"
        raise FileExistsError(errno.EEXIST, f"holds {what}; use force to overwrite", path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _runs(sorted_ints: list[int]):
    """(first, last) of each run of consecutive integers."""
    start = prev = None
    for i in sorted_ints:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            yield start, prev
        start = prev = i
    if start is not None:
        yield start, prev


def merge_ranges(ranges) -> list[tuple[int, int]]:
    """(start, end) byte ranges sorted, with overlapping or touching ones merged."""
    out: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def flush_ranges(region, ranges) -> bool:
    """Flush (offset, length) ranges of ``region``, each cache line once even
    where ranges share a line; True if anything was flushed (then a fence
    has something to order).  A function, not a Region method, so that a
    wrapper such as the crash recorder sees each flush."""
    if region.volatile:
        return False  # (tmpfs: nothing to flush, so nothing for a fence to order)
    lines = ((off // CACHE_LINE * CACHE_LINE, -(-(off + n) // CACHE_LINE) * CACHE_LINE)
             for off, n in ranges)  # fmt: skip
    spans = merge_ranges(lines)
    for lo, hi in spans:
        region.flush(lo, hi - lo)
    return bool(spans)
