"""region: what the backing is, how it is mapped, and which durability backend
it gets; device-dax alignment emulation; huge pages on a huge tmpfs; libpmem."""

from __future__ import annotations

import errno
import gc
import os
import re
import subprocess
import sys

import pytest

import daxfs
from daxfs.layout import BLOCK, CHUNK
from daxfs.region import (
    Region,
    create_pool_file,
    default_durability,
    load_libpmem,
    mount_of,
    reserve_aligned,
    sys_munmap,
)

MiB = 1 << 20


def smaps_kib(path: str, fields: str) -> int:
    """The sum of the smaps ``fields`` (a regex of their names) over this
    process's mappings of ``path``, in KiB: the kernel's own accounting."""
    with open("/proc/self/smaps") as f:
        text = f.read()
    total = 0
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        if block.splitlines()[0].endswith(" " + path):
            for line in block.splitlines():
                m = re.match(rf"(?:{fields}):\s+(\d+) kB", line)
                if m:
                    total += int(m.group(1))
    return total


def pmd_mapped_kib(path: str) -> int:
    """ShmemPmdMapped + FilePmdMapped of this process's mappings of ``path``."""
    return smaps_kib(path, "ShmemPmdMapped|FilePmdMapped")


def rss_kib(path: str) -> int:
    """Rss of this process's mappings of ``path`` (pages mapped there)."""
    return smaps_kib(path, "Rss")


def touch_every_chunk(r: Region) -> None:
    for off in range(0, r.size - CHUNK, CHUNK):
        r.store(off + CHUNK - 1, b"\1")


# ---------------------------------------------------------------------------
# Backing discovery and durability choice
# ---------------------------------------------------------------------------
def test_tmpfs_backing_gets_no_durability(pool_path):
    r = Region(pool_path)
    try:
        assert r.kind == "tmpfs" and r.mount.fstype == "tmpfs"
        assert r.durability.name == "none" and r.volatile
        assert not r.map_sync and r.align == BLOCK
        assert r.addr % CHUNK == 0
        assert r.size == 64 * MiB and len(r.buf) == r.size
        d = r.describe()
        assert d["kind"] == "tmpfs" and d["durability"] == "none" and d["huge_pages"] is False
    finally:
        r.close()


def test_plain_file_on_disk_gets_msync(disk_pool):
    r = Region(disk_pool)
    try:
        assert mount_of(disk_pool).fstype != "tmpfs"
        assert r.kind == "file" and not r.map_sync  # no DAX here: MAP_SYNC refused
        assert r.durability.name == "msync" and not r.volatile
        assert r.addr % CHUNK == 0
        r.store(r.size - 2 * BLOCK, b"persist me")
        r.persist(r.size - 2 * BLOCK - 5, 20)  # unaligned range: msync rounds the page down
        r.fence()
    finally:
        r.close()
    with open(disk_pool, "rb") as f:
        f.seek(os.path.getsize(disk_pool) - 2 * BLOCK)
        assert f.read(10) == b"persist me"


def test_region_start_is_2mib_aligned_for_every_backing(pool_path, disk_pool):
    regions = [
        Region(pool_path),
        Region(disk_pool),
        Region(pool_path, readonly=True),
        Region(pool_path, emulate_devdax=True),
    ]
    try:
        for r in regions:
            assert r.addr % CHUNK == 0, r.describe()
    finally:
        for r in regions:
            r.close()


def test_durability_can_be_requested(pool_path):
    r = Region(pool_path, durability="msync")
    try:
        assert r.durability.name == "msync"
        r.store(0, r.read(0, 16))
        r.persist(0, 16)
    finally:
        r.close()
    with pytest.raises(ValueError, match="unknown durability"):
        Region(pool_path, durability="fast")


def test_mount_of_reads_the_kernel_table(tmp_path):
    assert mount_of("/dev/shm").fstype == "tmpfs"
    assert mount_of(str(tmp_path)).fstype not in ("tmpfs", "unknown")
    assert mount_of("/").mountpoint == "/"


def test_unsuitable_backings_are_refused(shm_dir):
    small = os.path.join(shm_dir, "small")
    with open(small, "wb") as f:
        f.truncate(CHUNK)
    with pytest.raises(OSError) as ei:
        Region(small)
    assert ei.value.errno == errno.EINVAL
    fifo = os.path.join(shm_dir, "fifo")
    os.mkfifo(fifo)
    with pytest.raises(OSError) as ei:
        Region(fifo)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        Region(os.path.join(shm_dir, "missing"))


def test_readonly_region_cannot_be_written(pool_path):
    r = Region(pool_path, readonly=True)
    try:
        assert r.buf.readonly
        with pytest.raises(TypeError):
            r.store(0, b"x")
        assert r.read(0, 7) == b"DAXFSv1"
    finally:
        r.close()


def test_close_leaves_outstanding_views_harmless(pool_path):
    r = Region(pool_path)
    r.store(100, b"abc")
    view = r.buf[100:103]
    assert bytes(view) == b"abc"
    r.close()
    r.close()  # idempotent
    assert bytes(view) == b"\0\0\0"  # detached from the pool: zero pages, no fault
    with open(pool_path, "rb") as f:
        f.seek(100)
        assert f.read(3) == b"abc"


def _pool_mapped(path: str) -> bool:
    # The kernel's own list of this process's mappings, by address range.
    return any(line.rstrip().endswith(path) for line in open("/proc/self/maps"))


def _range_mapped(addr: int, size: int) -> bool:
    # Whole: a small mapping (a malloc arena) may reuse part of a freed range.
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= addr and addr + size <= hi:
            return True
    return False


def test_close_gives_the_address_range_back_once_no_view_is_left(pool_path):
    # Found by make crash-full: every mount left its range behind as anonymous
    # pages, and after some 65,000 mounts in one process mmap failed (ENOMEM,
    # vm.max_map_count).
    r = Region(pool_path)
    addr, size = r.addr, r.size
    assert _pool_mapped(pool_path) and _range_mapped(addr, size)
    r.close()
    assert not _range_mapped(addr, size)
    r = Region(pool_path)
    addr, view = r.addr, r.buf[0:8]
    r.close()
    assert not _pool_mapped(pool_path) and _range_mapped(addr, size)  # zeros, for the view
    assert bytes(view) == bytes(8)
    del view
    assert not _range_mapped(addr, size)


def test_mounting_again_and_again_leaves_no_mapping_behind(pool_path):
    # A closed mount's range goes when its last view does; a view held by
    # a reference cycle goes when the collector runs, so count after it
    # (else the count depends on what earlier tests left to collect).
    gc.collect()
    before = sum(1 for _ in open("/proc/self/maps"))
    for _ in range(200):
        daxfs.mount(pool_path).close()
        daxfs.check(pool_path)
    gc.collect()
    assert sum(1 for _ in open("/proc/self/maps")) <= before + 4  # the allocator's arenas


def test_reserve_aligned():
    for align in (BLOCK, CHUNK, 1 << 30):
        addr = reserve_aligned(3 * CHUNK, align)
        assert addr % align == 0
        sys_munmap(addr, 3 * CHUNK)


def test_create_pool_file(shm_dir):
    p = os.path.join(shm_dir, "p")
    create_pool_file(p, 8 * MiB, force=False)
    assert os.path.getsize(p) == 8 * MiB
    with pytest.raises(FileExistsError):
        create_pool_file(p, 8 * MiB, force=False)
    with open(p, "r+b") as f:
        f.write(b"old")
    create_pool_file(p, 4 * MiB, force=True)
    with open(p, "rb") as f:
        assert f.read(3) == b"\0\0\0" and os.path.getsize(p) == 4 * MiB


# ---------------------------------------------------------------------------
# Device-dax emulation
# ---------------------------------------------------------------------------
def test_emulated_devdax_enforces_2mib_alignment(shm_dir):
    path = os.path.join(shm_dir, "devdax")
    with open(path, "wb") as f:
        f.truncate(64 * MiB + 3 * BLOCK)  # not a multiple of the device alignment
    r = Region(path, emulate_devdax=True)
    try:
        assert r.kind == "devdax-emulated" and r.align == CHUNK
        assert r.size == 64 * MiB, "size is rounded down to the alignment"
        r.check_map_alignment(0, CHUNK)
        r.check_map_alignment(4 * CHUNK, 10 * CHUNK)
        for off, length in ((BLOCK, CHUNK), (0, BLOCK), (CHUNK, CHUNK + BLOCK)):
            with pytest.raises(OSError) as ei:
                r.check_map_alignment(off, length)
            assert ei.value.errno == errno.EINVAL
        assert r.describe()["align"] == CHUNK
    finally:
        r.close()
    plain = Region(path)
    try:
        assert plain.align == BLOCK
        plain.check_map_alignment(BLOCK, BLOCK)  # ordinary files take any page
    finally:
        plain.close()


def test_pool_on_emulated_devdax(shm_dir):
    path = os.path.join(shm_dir, "devdax")
    with open(path, "wb") as f:
        f.truncate(64 * MiB + 3 * BLOCK)
    daxfs.mkfs(path, 64 * MiB + 3 * BLOCK, force=True, emulate_devdax=True)
    with daxfs.mount(path, emulate_devdax=True) as fs:
        assert fs.info()["kind"] == "devdax-emulated" and fs.info()["size"] == 64 * MiB
        with fs.open("/f", "wb") as f:
            f.write(os.urandom(3 * MiB))
        for e in fs.iomap("/f"):
            assert (e.device_offset - e.file_offset) % CHUNK == 0


# ---------------------------------------------------------------------------
# Huge pages: a real tmpfs mounted with huge=always
# ---------------------------------------------------------------------------
def test_huge_tmpfs_is_huge_capable_and_dev_shm_is_not(huge_dir, pool_path):
    huge_pool = os.path.join(huge_dir, f"region-{os.getpid()}")
    daxfs.mkfs(huge_pool, "64M")
    rh, rs = Region(huge_pool), Region(pool_path)
    try:
        assert rh.mount.fstype == "tmpfs" and rh.mount.option("huge") == "always"
        assert rh.kind == "tmpfs" and rh.huge_capable is True
        assert rh.describe()["huge_pages"] is True
        shm_huge = mount_of("/dev/shm").option("huge")
        if shm_huge not in (None, "never"):
            pytest.skip(f"/dev/shm is mounted huge={shm_huge} on this machine")
        assert rs.huge_capable is False
        # And the kernel really maps the aligned region with 2 MiB pages there
        # (PMD mappings), and never on /dev/shm.
        touch_every_chunk(rh)
        touch_every_chunk(rs)
        assert pmd_mapped_kib(huge_pool) > 0, "no PMD mappings on a huge=always tmpfs"
        assert pmd_mapped_kib(pool_path) == 0
    finally:
        rh.close()
        rs.close()
        os.unlink(huge_pool)


def test_emulated_devdax_on_huge_tmpfs_is_huge_capable(huge_dir):
    path = os.path.join(huge_dir, f"devdax-{os.getpid()}")
    daxfs.mkfs(path, "16M")
    r = Region(path, emulate_devdax=True)
    try:
        assert r.huge_capable
    finally:
        r.close()
        os.unlink(path)


# ---------------------------------------------------------------------------
# libpmem
# ---------------------------------------------------------------------------
needs_libpmem = pytest.mark.skipif(
    load_libpmem() is None,
    reason="libpmem is not installed (Debian package libpmem1; `make deps` installs it)",
)


@needs_libpmem
def test_pmem_durability_through_libpmem(pool_path):
    r = Region(pool_path, durability="pmem")
    try:
        assert r.durability.name == "pmem" and not r.volatile
        r.store(r.size - 2 * BLOCK, b"flushed by CLWB")
        r.flush(r.size - 2 * BLOCK, 15)
        r.fence()
        r.persist(0, BLOCK)
        r.flush(0, 0)  # an empty range is a no-op
    finally:
        r.close()
    with daxfs.mount(pool_path, durability="pmem") as fs:
        assert fs.info()["durability"] == "pmem"
        with fs.open("/f", "wb") as f:
            f.write(b"x" * 10_000)
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "rb") as f:
            assert f.read() == b"x" * 10_000


def test_pmem_unavailable_is_enosys_when_libpmem_missing(pool_path):
    # A fresh interpreter pointed at a libpmem that does not exist: the pmem
    # backend must refuse with ENOSYS, and the automatic choice must not pick it.
    code = (
        "import errno, sys\n"
        "from daxfs.region import Region\n"
        f"path = {pool_path!r}\n"
        "try:\n"
        "    Region(path, durability='pmem')\n"
        "except OSError as e:\n"
        "    assert e.errno == errno.ENOSYS, e\n"
        "else:\n"
        "    sys.exit('pmem backend opened without libpmem')\n"
        "r = Region(path)\n"
        "assert r.durability.name != 'pmem', r.durability.name\n"
        "r.close()\n"
    )
    env = dict(os.environ, DAXFS_LIBPMEM="/nonexistent/libpmem.so.1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# Real device-dax and fs-dax are not on this machine, so the choice for them
# is checked as the decision it is: every backing, with and without libpmem.
@pytest.mark.parametrize(
    "kind,map_sync,on_tmpfs,have_libpmem,writable,expected",
    [
        ("devdax", False, False, True, True, "pmem"),
        ("fsdax", True, False, True, True, "pmem"),
        ("fsdax", True, False, False, True, "msync"),  # msync writes DAX caches back
        ("devdax", False, False, False, False, "none"),  # read-only: nothing to flush
        ("tmpfs", False, True, True, True, "none"),
        ("devdax-emulated", False, True, False, True, "none"),
        ("devdax-emulated", False, False, False, True, "msync"),
        ("file", False, False, True, True, "msync"),
        ("fsdax", False, False, True, True, "msync"),  # dax mount, MAP_SYNC refused
    ],
)
def test_default_durability_for_each_backing(
    kind, map_sync, on_tmpfs, have_libpmem, writable, expected
):
    got = default_durability(
        kind,
        map_sync=map_sync,
        on_tmpfs=on_tmpfs,
        have_libpmem=have_libpmem,
        writable=writable,
        path="/dev/dax0.0",
    )
    assert got == expected


def test_writable_devdax_without_libpmem_is_refused_not_made_volatile():
    # Device-dax has no msync: without libpmem no store could ever be made
    # durable, so the open fails and says what to install.
    with pytest.raises(OSError) as e:
        default_durability(
            "devdax",
            map_sync=False,
            on_tmpfs=False,
            have_libpmem=False,
            writable=True,
            path="/dev/dax0.0",
        )
    assert e.value.errno == errno.ENOSYS
    assert "libpmem1" in str(e.value) and e.value.filename == "/dev/dax0.0"


def test_prefault_maps_pages_and_changes_no_byte(shm_dir):
    """prefault maps a range of a fresh pool file writable in one call (the
    kernel's Rss of the mapping grows by it) and leaves its bytes as they
    were; stores there then fault nothing in."""
    path = os.path.join(shm_dir, "pool")
    create_pool_file(path, 8 * MiB, force=False)
    with open(path, "r+b") as f:
        f.seek(3 * MiB)
        f.write(b"kept" * 1024)
    r = Region(path)
    try:
        before = rss_kib(path)
        r.prefault(3 * MiB, 16 * BLOCK)
        assert rss_kib(path) - before == 16 * BLOCK // 1024
        assert r.read(3 * MiB, 4096) == b"kept" * 1024
        assert r.read(3 * MiB + 4096, 15 * BLOCK) == bytes(15 * BLOCK)
        r.store(3 * MiB + 4096, b"x" * BLOCK)
        assert rss_kib(path) - before == 16 * BLOCK // 1024
    finally:
        r.close()
