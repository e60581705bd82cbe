"""mapping: fs.map / fs.ndarray against the real kernel.

What the kernel actually did is read back from /proc/self/smaps (both through
Mapping.page_sizes() and by an independent parser here): 2 MiB (PMD) pages
where a file's extents cover whole aligned windows on a huge tmpfs, 4 KiB
pages elsewhere.  Then the contract around it: zero-copy views, modes, the
lifetime of a mapping against close/unmount/unlink/fork, staleness, pins
(unlink defers freeing, truncate refuses EBUSY, a dead process drops its
pins), sharing between processes, device-dax alignment, and persist.

Sequences that could crash the interpreter run in a child Python so that a
segfault fails the test instead of killing pytest.  The huge tmpfs is mounted
once per session (needs root; skipped with the reason otherwise).
"""

from __future__ import annotations

import errno
import gc
import hashlib
import mmap
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import warnings
import weakref

import numpy as np
import pytest

import daxfs
from daxfs.hugemap import eligible_total
from daxfs.layout import BLOCK, CHUNK
from daxfs.region import load_libpmem, mount_of

MiB = 1 << 20
PAGE = mmap.PAGESIZE


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def touch(m: daxfs.Mapping) -> int:
    """Read one byte of every 4 KiB page of the mapping (faults it all in)."""
    a = m.ndarray("uint8")
    try:
        return int(a[::PAGE].sum())
    finally:
        del a


def smaps_vmas(lo: int, hi: int) -> list[tuple[int, int, str, dict[str, int]]]:
    """(start, end, pathname, counters in bytes) of this process's VMAs lying
    inside [lo, hi), parsed from /proc/self/smaps independently of daxfs."""
    with open("/proc/self/smaps") as f:
        text = f.read()
    out = []
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text.strip()):
        head = block.split("\n", 1)[0].split(None, 5)
        start, end = (int(x, 16) for x in head[0].split("-"))
        if lo <= start and end <= hi:
            counters = {k: int(v) * 1024 for k, v in re.findall(r"^(\w+):\s+(\d+) kB", block, re.M)}
            out.append((start, end, head[5].strip() if len(head) > 5 else "", counters))
    return out


def write_file(fs: daxfs.FileSystem, path: str, data: bytes) -> None:
    with fs.open(path, "wb") as f:
        f.write(data)


def read_file(fs: daxfs.FileSystem, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def fill_until_enospc(fs: daxfs.FileSystem, prefix: str) -> list[str]:
    """Write files (1 MiB, then 4 KiB appends) until the pool is full."""
    names: list[str] = []
    try:
        while True:
            name = f"/{prefix}{len(names)}"
            names.append(name)
            write_file(fs, name, b"\xee" * MiB)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    name = f"/{prefix}-tail"
    names.append(name)
    try:
        with fs.open(name, "wb") as f:
            while True:
                f.write(b"\xdd" * BLOCK)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    return [n for n in names if fs.exists(n)]


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; a crash (signal) fails the caller."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"child exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done


CHILD = textwrap.dedent(r"""
    import hashlib, sys
    import daxfs

    pool, path, mode = sys.argv[1:4]
    fs = daxfs.mount(pool)
    m = fs.map(path, mode)
    print("ready", len(m), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "sha":
            print(hashlib.sha256(m.buffer).hexdigest(), flush=True)
        elif cmd == "read":
            off, n = int(args[0]), int(args[1])
            print(bytes(m.buffer[off : off + n]).hex() or "-", flush=True)
        elif cmd == "write":
            off, data = int(args[0]), bytes.fromhex(args[1])
            m.buffer[off : off + len(data)] = data
            print("ok", flush=True)
        elif cmd == "persist":
            m.persist()
            print("ok", flush=True)
""")


class Child:
    """A separate Python process holding a mapping, driven line by line."""

    def __init__(self, pool: str, path: str, mode: str):
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, pool, path, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.length = int(self._line().split()[1])

    def _line(self) -> str:
        ready, _, _ = select.select([self.p.stdout], [], [], 30)
        line = self.p.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line:
            self.p.kill()
            _, err = self.p.communicate()
            pytest.fail(f"child gave no answer (exit {self.p.returncode}):\n{err}")
        return line.strip()

    def ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]
        return self._line()

    def kill(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.communicate()
        assert self.p.returncode == -signal.SIGKILL


@pytest.fixture
def children():
    """Factory for Child processes; any left alive are killed afterwards."""
    made: list[Child] = []

    def spawn(pool: str, path: str, mode: str) -> Child:
        c = Child(pool, path, mode)
        made.append(c)
        return c

    yield spawn
    for c in made:
        if c.p.poll() is None:
            c.p.kill()
        c.p.communicate()


# ---------------------------------------------------------------------------
# pools on a huge tmpfs (mounted once per session)
# ---------------------------------------------------------------------------
@pytest.fixture
def huge_pool(huge_dir):
    """Factory: a fresh pool on the huge tmpfs, removed afterwards."""
    made: list[str] = []

    def make(size: int = 128 * MiB, allocator: str = "hugepage") -> str:
        path = os.path.join(huge_dir, f"pool{len(made)}-{os.getpid()}")
        daxfs.mkfs(path, size, allocator=allocator, force=True)
        made.append(path)
        return path

    yield make
    for p in made:
        os.unlink(p)


# ---------------------------------------------------------------------------
# 1-3. What the kernel maps: 2 MiB pages, 4 KiB pages, both
# ---------------------------------------------------------------------------
def test_64mib_file_on_huge_tmpfs_is_mapped_with_2mib_pages_only(huge_pool):
    pool = huge_pool()
    with daxfs.mount(pool) as fs:
        data = os.urandom(64 * MiB)
        write_file(fs, "/big", data)
        assert eligible_total(fs.iomap("/big"), 64 * MiB) == 64 * MiB
        with fs.map("/big") as m:
            assert len(m) == 64 * MiB and m.address % CHUNK == 0
            assert m.huge_pages_note is None
            assert touch(m) == sum(data[::PAGE])
            sizes = m.page_sizes()
            assert sizes == {"pmd_bytes": 64 * MiB, "pte_bytes": 0, "resident_bytes": 64 * MiB}
            # The same, read independently from smaps: the VMAs inside the
            # mapping tile it, are the pool file, and are PMD-mapped whole.
            vmas = smaps_vmas(m.address, m.address + 64 * MiB)
            assert sum(e - s for s, e, _, _ in vmas) == 64 * MiB
            assert all(path == os.path.realpath(pool) for _, _, path, _ in vmas), vmas
            pmd = sum(c.get("ShmemPmdMapped", 0) + c.get("FilePmdMapped", 0) for *_, c in vmas)
            assert pmd == 64 * MiB
            assert bytes(m.buffer[-PAGE:]) == data[-PAGE:]


def test_fragmented_and_small_files_fall_back_to_4kib_pages(huge_pool):
    pool = huge_pool(64 * MiB, allocator="naive")
    with daxfs.mount(pool) as fs:
        # Interleaved 4 KiB appends to two files: first-fit alternates blocks.
        with fs.open("/a", "wb") as a, fs.open("/b", "wb") as b:
            for i in range(768):
                a.write(bytes([i % 251]) * BLOCK)
                a.flush()
                b.write(b"b" * BLOCK)
                b.flush()
        write_file(fs, "/small", b"s" * (MiB + 5))
        # A contiguous 8 MiB file that starts off the 2 MiB grid on the device.
        write_file(fs, "/shifted", os.urandom(8 * MiB))
        ext = fs.iomap("/shifted")
        assert len(ext) == 1 and ext[0].device_offset % CHUNK != 0, ext
        for path in ("/a", "/small", "/shifted"):
            size = fs.stat(path).st_size
            assert eligible_total(fs.iomap(path), size) == 0
            with fs.map(path) as m:
                touch(m)
                sizes = m.page_sizes()
                assert sizes["pmd_bytes"] == 0, (path, sizes)
                assert sizes["pte_bytes"] > 0 and sizes["resident_bytes"] == sizes["pte_bytes"]
                assert sizes["resident_bytes"] >= size - PAGE
                note = m.huge_pages_note
                assert note and "4 KiB" in note and "small or fragmented" in note, note
                vmas = smaps_vmas(m.address, m.address + len(m))
                assert sum(c.get("ShmemPmdMapped", 0) for *_, c in vmas) == 0
        assert len(fs.iomap("/a")) > 100  # really fragmented
        with fs.map("/a") as m:
            a = m.ndarray("uint8", shape=(768, BLOCK))
            assert (a[:, 0] == np.arange(768) % 251).all() and (a == a[:, :1]).all()
            del a


def test_file_with_both_small_blocks_and_whole_chunks_gets_both_page_sizes(huge_pool):
    pool = huge_pool()
    with daxfs.mount(pool) as fs:
        with fs.open("/grow", "wb") as f:
            for _ in range(MiB // BLOCK):  # starts small: its first window is blocks
                f.write(b"\x11" * BLOCK)
                f.flush()
            with fs.map("/grow", offset=0, length=BLOCK):  # pinned, so window 0 stays blocks
                f.write(b"\x22" * (7 * MiB))  # then its later windows are whole chunks
        size = 8 * MiB
        eligible = eligible_total(fs.iomap("/grow"), size)
        assert 0 < eligible < size
        with fs.map("/grow") as m:
            assert m.huge_pages_note is None
            assert touch(m) == 0x11 * 256 + 0x22 * (7 * 256)
            sizes = m.page_sizes()
            assert sizes["pmd_bytes"] == eligible, sizes
            assert sizes["pte_bytes"] > 0
            assert sizes["resident_bytes"] == size
            vmas = smaps_vmas(m.address, m.address + size)
            assert sum(c.get("ShmemPmdMapped", 0) for *_, c in vmas) == eligible


def test_subrange_at_unaligned_offset_keeps_2mib_pages_for_whole_windows(huge_pool):
    pool = huge_pool()
    with daxfs.mount(pool) as fs:
        data = os.urandom(16 * MiB)
        write_file(fs, "/f", data)
        off, length = 3 * MiB + 123, 8 * MiB  # whole file windows [4, 6), [6, 8), [8, 10)
        assert eligible_total(fs.iomap("/f", off, length), 16 * MiB) == 6 * MiB
        with fs.map("/f", offset=off, length=length) as m:
            assert m.address % CHUNK == off % CHUNK
            assert bytes(m.buffer) == data[off : off + length]
            sizes = m.page_sizes()
            assert sizes["pmd_bytes"] == 6 * MiB, sizes
            assert sizes["resident_bytes"] == length + PAGE  # pages [3 MiB, 11 MiB + 4 KiB)


def test_pool_on_dev_shm_maps_with_4kib_pages_only(fs):
    shm_huge = mount_of("/dev/shm").option("huge")
    if shm_huge not in (None, "never"):
        pytest.skip(f"/dev/shm is mounted huge={shm_huge} on this machine")
    write_file(fs, "/big", os.urandom(8 * MiB))
    assert eligible_total(fs.iomap("/big"), 8 * MiB) == 8 * MiB  # layout would allow it
    with fs.map("/big") as m:
        assert m.address % CHUNK == 0
        touch(m)
        sizes = m.page_sizes()
        assert sizes == {"pmd_bytes": 0, "pte_bytes": 8 * MiB, "resident_bytes": 8 * MiB}
        note = m.huge_pages_note
        assert note is not None and "huge tmpfs" in note and "/dev/shm" in note, note


# ---------------------------------------------------------------------------
# 4. Zero-copy views, modes, sub-ranges
# ---------------------------------------------------------------------------
def test_views_are_zero_copy_inside_the_mapping(fs):
    pa = pytest.importorskip("pyarrow")
    data = os.urandom(3 * MiB + 100)
    write_file(fs, "/f", data)
    with fs.map("/f", "r+") as m:
        lo, hi = m.address, m.address + len(m)
        arr = m.ndarray("uint8")
        words = m.ndarray("<u4", shape=(4, 8), offset=16, order="F")
        buf = m.buffer
        ab = m.to_arrow()
        for a in (arr, words, np.frombuffer(buf, np.uint8)):
            addr = a.__array_interface__["data"][0]
            assert lo <= addr < hi and addr + a.nbytes <= hi
        assert arr.__array_interface__["data"][0] == lo
        assert words.__array_interface__["data"][0] == lo + 16
        assert ab.address == lo and ab.size == len(m) == len(data)
        expect = np.frombuffer(data, "<u4", count=32, offset=16).reshape((4, 8), order="F")
        assert (words == expect).all()
        # A store through one view is seen by every other view and by read().
        arr[5] = data[5] ^ 0xFF
        assert buf[5] == data[5] ^ 0xFF and ab.to_pybytes()[5] == data[5] ^ 0xFF
        assert read_file(fs, "/f")[:8] == data[:5] + bytes([data[5] ^ 0xFF]) + data[6:8]
        # And a write() through the file system is seen by the mapping at once.
        with fs.open("/f", "r+b") as f:
            f.seek(2 * MiB)
            f.write(b"written")
        assert bytes(buf[2 * MiB : 2 * MiB + 7]) == b"written"
        assert arr[2 * MiB : 2 * MiB + 7].tobytes() == b"written"
        with pytest.raises(ValueError):
            m.ndarray("uint8", shape=len(m) + 1)
        with pytest.raises(ValueError):
            m.ndarray("uint8", offset=-1)
        assert isinstance(ab, pa.Buffer)
        del arr, words, buf, ab, a


def test_read_only_mapping_views_are_read_only(fs):
    write_file(fs, "/f", b"abc" * 1000)
    with fs.map("/f") as m:
        assert m.buffer.readonly
        a = m.ndarray()
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 1
        with pytest.raises(TypeError):
            m.buffer[0] = 1
        del a
    a = fs.ndarray("/f", "uint8", (1000, 3))
    assert not a.flags.writeable and (a[:, 1] == ord("b")).all()
    del a


def test_copy_on_write_mode_never_reaches_the_pool(fs, pool_path):
    data = os.urandom(3 * MiB)
    write_file(fs, "/f", data)
    with fs.map("/f", "c") as c, fs.map("/f", "r") as r:
        a = c.ndarray()
        a[:] = 7
        c.buffer[:4] = b"priv"
        c.persist()  # a no-op: private copies never reach the pool
        assert bytes(c.buffer[:5]) == b"priv\x07"
        assert bytes(r.buffer) == data
        del a
    assert read_file(fs, "/f") == data
    fs.close()
    with daxfs.mount(pool_path) as again:
        assert read_file(again, "/f") == data


def test_w_plus_creates_resizes_and_allocates_everything(fs):
    with fs.map("/new", "w+", size=5 * MiB + 3) as m:
        assert len(m) == 5 * MiB + 3 and not m.buffer.readonly
        assert not any(m.buffer)
        m.buffer[-3:] = b"end"
    assert fs.stat("/new").st_size == 5 * MiB + 3
    assert all(e.kind == "mapped" for e in fs.iomap("/new"))
    assert read_file(fs, "/new")[-4:] == b"\0end"
    # A sparse file: w+ to a larger size allocates the holes and the new tail.
    write_file(fs, "/sparse", b"head")
    fs.truncate("/sparse", 3 * MiB)
    assert any(e.kind == "hole" for e in fs.iomap("/sparse"))
    with fs.map("/sparse", "w+", size=6 * MiB) as m:
        assert bytes(m.buffer[:4]) == b"head" and not any(m.buffer[4:])
    assert all(e.kind == "mapped" for e in fs.iomap("/sparse"))
    assert fs.stat("/sparse").st_size == 6 * MiB
    # Shrinking through w+.
    with fs.map("/sparse", "w+", size=10) as m:
        assert bytes(m.buffer) == b"head" + bytes(6)
    assert fs.stat("/sparse").st_size == 10
    arr = fs.ndarray("/arr", "float64", (3, 4), mode="w+")
    arr[:] = np.arange(12).reshape(3, 4)
    assert fs.stat("/arr").st_size == 96
    del arr
    back = fs.ndarray("/arr", "float64", (3, 4))
    assert (back == np.arange(12).reshape(3, 4)).all()
    del back


def test_holes_read_as_zeros_and_r_plus_fills_them(fs):
    with fs.open("/holes", "wb") as f:
        f.write(b"A" * BLOCK)
        f.seek(5 * MiB)
        f.write(b"Z" * BLOCK)
    assert [e.kind for e in fs.iomap("/holes")].count("hole") >= 1
    with fs.map("/holes") as m:
        assert bytes(m.buffer[:BLOCK]) == b"A" * BLOCK
        assert bytes(m.buffer[-BLOCK:]) == b"Z" * BLOCK
        a = m.ndarray()
        assert not a[BLOCK : 5 * MiB].any()
        del a
    assert any(e.kind == "hole" for e in fs.iomap("/holes")), "r must not allocate"
    with fs.map("/holes", "r+") as m:
        m.buffer[3 * MiB : 3 * MiB + 4] = b"fill"
    assert all(e.kind == "mapped" for e in fs.iomap("/holes"))
    data = read_file(fs, "/holes")
    assert data[3 * MiB : 3 * MiB + 4] == b"fill" and not any(data[BLOCK : 3 * MiB])


def test_offset_and_length_submappings(fs):
    data = os.urandom(7 * MiB + 321)
    write_file(fs, "/f", data)
    for off, length in (
        (0, None),
        (BLOCK, 10_000),
        (123, 1000),  # unaligned offset
        (3 * MiB + 5, MiB),
        (2 * MiB, None),
        (len(data) - 1, 1),
        (len(data), None),  # empty
        (17, 0),
    ):
        with fs.map("/f", offset=off, length=length) as m:
            want = data[off:] if length is None else data[off : off + length]
            assert len(m) == len(want) and bytes(m.buffer) == want, (off, length)
            if want:
                assert m.address % CHUNK == off % CHUNK
                assert m.ndarray()[0] == want[0]
    with fs.map("/f", "r+", offset=MiB + 7, length=100) as m:
        m.buffer[:] = b"\x01" * 100
    got = read_file(fs, "/f")
    assert got[MiB + 7 : MiB + 107] == b"\x01" * 100
    assert got[: MiB + 7] == data[: MiB + 7] and got[MiB + 107 :] == data[MiB + 107 :]


def test_bad_map_requests_are_refused(fs, pool_path):
    write_file(fs, "/f", b"x" * 100)
    fs.mkdir("/d")
    with pytest.raises(ValueError):
        fs.map("/f", "rw")
    with pytest.raises(ValueError):
        fs.map("/f", "w+")  # needs a size
    with pytest.raises(ValueError):
        fs.map("/f", offset=50, length=51)  # beyond the end
    for kwargs in ({"offset": -1}, {"length": -1}):
        with pytest.raises(OSError) as ei:
            fs.map("/f", **kwargs)
        assert ei.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        fs.map("/missing")
    with pytest.raises(IsADirectoryError):
        fs.map("/d")
    fs.close()
    with daxfs.mount(pool_path, readonly=True) as ro:
        with pytest.raises(OSError) as ei:
            ro.map("/f", "r+")
        assert ei.value.errno == errno.EROFS
        with ro.map("/f") as m:
            assert bytes(m.buffer) == b"x" * 100
        with ro.map("/f", "c") as m:
            m.buffer[:1] = b"y"
            assert bytes(m.buffer[:2]) == b"yx"
    with daxfs.mount(pool_path) as again:
        # No leftover pins from the failed attempts: truncate may free everything.
        again.truncate("/f", 0)


# ---------------------------------------------------------------------------
# 5. Lifetime: close, unmount, unlink, fork (in child interpreters)
# ---------------------------------------------------------------------------
def test_close_with_live_views_raises_and_keeps_the_data(pool_path):
    run_python(
        """
        import gc, sys
        import daxfs
        import pyarrow

        MiB = 1 << 20
        data = bytes(range(256)) * (3 * MiB // 256)
        fs = daxfs.mount(sys.argv[1])
        with fs.open("/f", "wb") as f:
            f.write(data)
        m = fs.map("/f", "r+")
        views = (
            (lambda: m.ndarray(), data[:5]),
            (lambda: m.buffer, data[:5]),
            (lambda: m.buffer[10:20], data[10:15]),
            (lambda: m.to_arrow(), data[:5]),
            (lambda: memoryview(m.ndarray("<u2")), data[:5]),
            (lambda: m.ndarray()[7:], data[7:12]),
        )
        for make, head in views:
            view = make()
            try:
                m.close()
            except BufferError:
                pass
            else:
                raise AssertionError("close() succeeded while a view was alive")
            assert not m.closed
            assert bytes(memoryview(view).cast("B")[:5]) == head
            assert bytes(m.buffer[:4]) == data[:4]
            m.buffer[0] = data[0]  # still writable
            del view
        m.close()
        m.close()  # idempotent
        assert m.closed and m.stale is False
        for use in (lambda: m.buffer, lambda: m.ndarray(), lambda: m.to_arrow(),
                    lambda: m.address, lambda: m.persist(), lambda: m.page_sizes()):
            try:
                use()
            except ValueError:
                pass
            else:
                raise AssertionError("a closed mapping was usable")
        assert "closed" in repr(m)

        # A view taken with fs.ndarray outlives its Mapping object.
        a = fs.ndarray("/f", "uint8")
        b = fs.map("/f").to_arrow()
        gc.collect()
        assert a[:5].tobytes() == data[:5] and b.to_pybytes()[-5:] == data[-5:]
        try:
            fs.truncate("/f", 0)
        except OSError as e:
            assert e.errno == 16, e  # EBUSY: the views still pin the extents
        else:
            raise AssertionError("truncate freed blocks that a live array maps")
        del a, b
        gc.collect()
        fs.truncate("/f", 0)  # the last view gone: the pins went with it
        fs.close()
        print("ok")
        """,
        pool_path,
    )


def test_unmount_and_unlink_under_a_live_mapping(pool_path):
    run_python(
        """
        import sys
        import daxfs

        MiB = 1 << 20
        pool = sys.argv[1]
        data = bytes(range(256)) * (4 * MiB // 256)
        fs = daxfs.mount(pool)
        fs.open("/seed", "wb").close()  # the root directory's first block
        free0 = fs.statvfs().f_bfree
        with fs.open("/f", "wb") as f:
            f.write(data)
        with fs.open("/g", "wb") as f:
            f.write(data)
        free_with_files = fs.statvfs().f_bfree

        # unlink, then use: the bytes stay, the space stays taken until close.
        m = fs.map("/f", "r+")
        a = m.ndarray()
        fs.unlink("/f")
        assert not fs.exists("/f")
        assert bytes(m.buffer) == data and a[-1] == data[-1]
        a[:4] = [1, 2, 3, 4]
        assert bytes(m.buffer[:4]) == bytes([1, 2, 3, 4])
        assert fs.statvfs().f_bfree == free_with_files
        del a
        m.close()
        assert fs.statvfs().f_bfree == free_with_files + 4 * MiB // 4096

        # unmount with a live mapping: it still reads and writes the pool.
        m = fs.map("/g", "r+")
        u = fs.map("/g")  # and one more, whose file goes away before unmount
        fs.unlink("/g")
        fs.close()
        assert m.stale is True and u.stale is True
        assert bytes(m.buffer) == data and bytes(u.buffer[:3]) == data[:3]
        m.buffer[:3] = b"new"
        m.persist()
        assert bytes(u.buffer[:3]) == b"new"  # same pool memory
        assert isinstance(m.huge_pages_note, str)
        assert m.page_sizes()["resident_bytes"] > 0
        # Another mount sees the pins of this process's mappings.
        fs2 = daxfs.mount(pool)  # cannot reclaim /g: still pinned here
        assert fs2.statvfs().f_bfree == free0 - 4 * MiB // 4096
        assert not fs2.exists("/g")
        m.close()
        u.close()  # closing after the unmount is fine
        fs2.close()
        fs3 = daxfs.mount(pool)  # a mount reclaims the orphan now that nobody maps it
        assert fs3.statvfs().f_bfree == free0, (fs3.statvfs().f_bfree, free0)
        fs3.close()
        r = daxfs.check(pool)
        assert r.ok, r.errors
        print("ok")
        """,
        pool_path,
    )


def test_fork_child_shares_the_mapping(pool_path):
    run_python(
        """
        import os, sys
        import daxfs

        MiB = 1 << 20
        data = bytes(range(256)) * (3 * MiB // 256)
        fs = daxfs.mount(sys.argv[1])
        with fs.open("/f", "wb") as f:
            f.write(data)
        shared = fs.map("/f", "r+")
        private = fs.map("/f", "c")
        ro = fs.map("/f")
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                assert bytes(ro.buffer[:100]) == data[:100]
                assert bytes(shared.buffer[-100:]) == data[-100:]
                shared.buffer[MiB : MiB + 5] = b"child"
                a = shared.ndarray()
                a[-1] = 7
                del a
                private.buffer[:5] = b"PRIVC"
                assert bytes(ro.buffer[MiB : MiB + 5]) == b"child"
                shared.close()
                private.close()
                # The child's file system still works after the fork.
                with fs.open("/f", "rb") as f:
                    assert f.read(5) == data[:5]
                    f.seek(MiB)
                    assert f.read(5) == b"child"
                fs.close()
            except BaseException as e:
                print("child:", repr(e), flush=True)
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert bytes(shared.buffer[MiB : MiB + 5]) == b"child"
        assert shared.buffer[-1] == 7 and ro.buffer[-1] == 7
        assert bytes(private.buffer[:5]) == data[:5]  # the child's private stores stay its own
        with fs.open("/f", "rb") as f:
            got = f.read()
        assert got[MiB : MiB + 5] == b"child" and got[:5] == data[:5]
        # The child closing its copies released nothing of the parent's pins.
        try:
            fs.truncate("/f", 0)
        except OSError as e:
            assert e.errno == 16
        else:
            raise AssertionError("truncate under the parent's mappings")
        for m in (shared, private, ro):
            m.close()
        fs.truncate("/f", 0)
        fs.close()
        print("ok")
        """,
        pool_path,
    )


@pytest.mark.parametrize("first", ["fs.sync()", "mapping.close()", "handle.close()"])
def test_a_child_forked_while_a_thread_held_the_mount_can_still_close_and_sync(pool_path, first):
    # The child inherits the thread lock as it was at the fork: held, by a
    # thread the child does not have.  Closing a file or mapping and sync
    # must take a lock of the child's own, not wait for that thread forever.
    run_python(
        """
        import os, sys, threading, time
        import daxfs

        fs = daxfs.mount(sys.argv[1])
        with fs.open("/f", "wb") as f:
            f.write(b"x" * 8192)
        handle = fs.open("/f", "r+b")
        mapping = fs.map("/f")
        held, release = threading.Event(), threading.Event()

        def hold():
            with fs._tlock:
                held.set()
                release.wait()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        held.wait()
        pid = os.fork()
        if pid == 0:  # each of these first, before any call that re-arms
            {first}
            handle.close()
            mapping.close()
            fs.sync()
            with fs.open("/f", "r+b") as f:
                f.write(b"child")
            os._exit(0)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung on the inherited thread lock")
        assert os.waitstatus_to_exitcode(done[1]) == 0, done
        release.set()
        holder.join()
        mapping.close()
        handle.close()
        with fs.open("/f", "rb") as f:
            assert f.read(5) == b"child"
        fs.close()
        print("ok")
        """.replace("{first}", first),
        pool_path,
    )


# ---------------------------------------------------------------------------
# 6. Stale mappings and truncate against pins
# ---------------------------------------------------------------------------
def test_growth_by_another_handle_makes_the_mapping_stale(fs):
    data = os.urandom(3 * MiB)
    write_file(fs, "/f", data)
    m = fs.map("/f")
    assert m.stale is False
    with fs.open("/f", "rb") as f:  # reading changes nothing
        f.read()
    assert m.stale is False
    with fs.open("/f", "ab") as f:
        f.write(b"more")
    assert m.stale is True
    assert len(m) == 3 * MiB and bytes(m.buffer) == data  # its own memory stays valid
    with fs.map("/f") as again:
        assert again.stale is False and len(again) == 3 * MiB + 4
        assert bytes(again.buffer[-4:]) == b"more"
    fs.truncate("/f", 4 * MiB)  # truncate up: stale too, and allowed
    with fs.map("/f") as again:
        assert len(again) == 4 * MiB and not any(again.buffer[3 * MiB + 4 :])
    m.close()


def test_growth_by_another_process_makes_the_mapping_stale(fs, pool_path):
    write_file(fs, "/f", b"x" * 5000)
    with fs.map("/f") as m:
        assert not m.stale
        run_python(
            """
            import sys, daxfs
            with daxfs.mount(sys.argv[1]) as fs:
                fs.truncate("/f", 3 << 20)
            """,
            pool_path,
        )
        assert m.stale
        assert bytes(m.buffer) == b"x" * 5000
    with fs.map("/f") as m:
        assert len(m) == 3 * MiB and not m.stale


def test_truncate_into_a_mapped_range_is_ebusy(fs):
    data = os.urandom(8 * MiB)
    write_file(fs, "/f", data)
    with fs.map("/f") as m:
        for size in (0, 100, 5 * MiB, 6 * MiB - 1):
            with pytest.raises(OSError) as ei:
                fs.truncate("/f", size)
            assert ei.value.errno == errno.EBUSY
            with pytest.raises(OSError) as ei:
                fs.map("/f", "w+", size=size)
            assert ei.value.errno == errno.EBUSY
        assert fs.stat("/f").st_size == 8 * MiB and not m.stale
        assert bytes(m.buffer) == data and read_file(fs, "/f") == data
        # Shrinking inside the last 2 MiB window frees no block: allowed.
        fs.truncate("/f", 8 * MiB - 1)
        assert m.stale and bytes(m.buffer) == data
    fs.truncate("/f", 0)


def test_truncate_beyond_a_mapped_subrange_only_if_it_frees_nothing_pinned(fs):
    data = os.urandom(12 * MiB)
    write_file(fs, "/f", data)
    assert all(e.device_offset % CHUNK == 0 for e in fs.iomap("/f"))
    with fs.map("/f", offset=4 * MiB, length=2 * MiB) as m:  # file window [4, 6)
        fs.truncate("/f", 8 * MiB)  # frees [8, 12): not pinned
        assert m.stale
        fs.truncate("/f", 6 * MiB)  # frees [6, 8)
        fs.truncate("/f", 5 * MiB)  # keeps the whole window [4, 6): frees nothing
        fs.truncate("/f", 4 * MiB + 1)  # still keeps it
        for size in (4 * MiB, 3 * MiB, 0):  # would free pinned blocks
            with pytest.raises(OSError) as ei:
                fs.truncate("/f", size)
            assert ei.value.errno == errno.EBUSY, size
        assert fs.stat("/f").st_size == 4 * MiB + 1
        assert bytes(m.buffer) == data[4 * MiB : 6 * MiB]
    with fs.map("/f", length=MiB) as m:  # pins the blocks of [0, 1 MiB)
        fs.truncate("/f", 2 * MiB)  # frees [2, 6)
        fs.truncate("/f", MiB)  # below 2 MiB the window is cut to blocks: frees [1, 2)
        fs.truncate("/f", MiB - 1)  # keeps the block holding the new last byte
        with pytest.raises(OSError) as ei:
            fs.truncate("/f", MiB - BLOCK)  # would free the mapped last block
        assert ei.value.errno == errno.EBUSY
        assert fs.stat("/f").st_size == MiB - 1
        assert bytes(m.buffer) == data[:MiB]
    fs.truncate("/f", 0)
    assert fs.stat("/f").st_size == 0


# ---------------------------------------------------------------------------
# 7. Pins: unlinked mapped files survive a full pool; space comes back
# ---------------------------------------------------------------------------
def test_unlinked_mapped_file_survives_a_full_pool_then_frees(fs):
    write_file(fs, "/seed", b"")  # the root directory's first block
    free0 = fs.statvfs().f_bfree
    data = os.urandom(8 * MiB)
    write_file(fs, "/victim", data)
    nblocks = 8 * MiB // BLOCK
    assert fs.statvfs().f_bfree == free0 - nblocks
    m = fs.map("/victim")
    fs.unlink("/victim")
    assert fs.statvfs().f_bfree == free0 - nblocks  # deferred
    fill = fill_until_enospc(fs, "fill")
    assert fs.statvfs().f_bfree == 0
    assert hashlib.sha256(m.buffer).digest() == hashlib.sha256(data).digest()
    for name in fill:
        fs.unlink(name)
    before_close = fs.statvfs().f_bfree
    assert free0 - nblocks - 4 <= before_close <= free0 - nblocks
    assert bytes(m.buffer) == data
    m.close()
    free_end = fs.statvfs().f_bfree
    assert free_end == before_close + nblocks
    assert free0 - 4 <= free_end <= free0  # modulo directory blocks grown by the fill


def test_unlinked_file_mapped_by_a_killed_child_frees_at_remount(fs, pool_path, children):
    write_file(fs, "/seed", b"")  # the root directory's first block
    free0 = fs.statvfs().f_bfree
    data = os.urandom(6 * MiB + 5)
    write_file(fs, "/victim", data)
    child = children(pool_path, "/victim", "r")
    assert child.length == len(data)
    sha = hashlib.sha256(data).hexdigest()
    assert child.ask("sha") == sha
    # The child's pins are seen here: truncate refuses, unlink defers.
    with pytest.raises(OSError) as ei:
        fs.truncate("/victim", 0)
    assert ei.value.errno == errno.EBUSY
    fs.unlink("/victim")
    fill = fill_until_enospc(fs, "fill")
    assert fs.statvfs().f_bfree == 0
    assert child.ask("sha") == sha  # no byte of the mapped file was reused
    for name in fill:
        fs.unlink(name)
    assert fs.statvfs().f_bfree < free0 - 6 * MiB // BLOCK  # still taken
    child.kill()
    fs.close()
    with daxfs.mount(pool_path) as again:  # mount reclaims orphans nobody pins
        free_end = again.statvfs().f_bfree
        assert free0 - 4 <= free_end <= free0, (free_end, free0)
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


def test_killed_child_drops_its_pins(fs, pool_path, children):
    write_file(fs, "/f", os.urandom(4 * MiB))
    child = children(pool_path, "/f", "r")
    with pytest.raises(OSError) as ei:
        fs.truncate("/f", 0)
    assert ei.value.errno == errno.EBUSY
    child.kill()
    fs.truncate("/f", 0)  # the kernel dropped the dead process's OFD locks
    assert fs.stat("/f").st_size == 0


# ---------------------------------------------------------------------------
# 8. Two processes, one file
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("pool_fixture", ["pool_path", "disk_pool"])
def test_two_processes_share_stores_and_persist_survives_sigkill(pool_fixture, request, children):
    pool = request.getfixturevalue(pool_fixture)  # tmpfs ("none") or disk ("msync")
    with daxfs.mount(pool) as fs:
        write_file(fs, "/f", bytes(3 * MiB))
        child = children(pool, "/f", "r+")
        with fs.map("/f", "r+") as m:
            # Parent -> child and child -> parent, immediately, no persist.
            m.buffer[100:105] = b"hello"
            assert child.ask("read 100 5") == b"hello".hex()
            assert child.ask(f"write {2 * MiB} {b'world'.hex()}") == "ok"
            assert bytes(m.buffer[2 * MiB : 2 * MiB + 5]) == b"world"
            a = m.ndarray("<u8")
            a[-1] = 0x0123456789ABCDEF
            assert (
                child.ask(f"read {3 * MiB - 8} 8")
                == (0x0123456789ABCDEF).to_bytes(8, "little").hex()
            )
            del a
        assert child.ask(f"write {MiB} {b'durable'.hex()}") == "ok"
        assert child.ask("persist") == "ok"
        child.kill()
        with fs.open("/f", "rb") as f:
            got = f.read()
    assert got[MiB : MiB + 7] == b"durable"
    with daxfs.mount(pool) as again:
        got = read_file(again, "/f")
    assert got[100:105] == b"hello" and got[2 * MiB : 2 * MiB + 5] == b"world"
    assert got[MiB : MiB + 7] == b"durable"
    report = daxfs.check(pool)
    assert report.ok, report.errors


# ---------------------------------------------------------------------------
# 9. Device-dax emulation: whole aligned units only
# ---------------------------------------------------------------------------
@pytest.fixture
def devdax_pool(shm_dir):
    path = os.path.join(shm_dir, "devdax")
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    daxfs.mkfs(path, 64 * MiB, force=True, emulate_devdax=True)
    return path


def test_emulated_devdax_maps_large_and_small_files_in_whole_chunks(devdax_pool):
    with daxfs.mount(devdax_pool, emulate_devdax=True) as fs:
        r = fs.region
        assert r.kind == "devdax-emulated" and r.align == CHUNK
        with pytest.raises(OSError) as ei:
            r.check_map_alignment(BLOCK, CHUNK)
        assert ei.value.errno == errno.EINVAL
        with pytest.raises(OSError) as ei:
            r.check_map_alignment(0, CHUNK + BLOCK)
        assert ei.value.errno == errno.EINVAL
        # Record what the mapping code asks the device for (the check still runs).
        asked: list[tuple[int, int]] = []
        real_check = r.check_map_alignment

        def spy(off: int, length: int) -> None:
            asked.append((off, length))
            real_check(off, length)

        r.check_map_alignment = spy  # type: ignore[method-assign]
        big = os.urandom(6 * MiB + 100)
        small = os.urandom(10_000)
        neighbour = b"n" * 5000
        write_file(fs, "/big", big)
        write_file(fs, "/small", small)
        write_file(fs, "/neighbour", neighbour)
        (ext,) = fs.iomap("/small")
        assert ext.device_offset % CHUNK != 0  # inside a chunk: needs an offset view
        with fs.map("/big") as m:
            assert bytes(m.buffer) == big and m.address % CHUNK == 0
            touch(m)
            assert m.page_sizes()["resident_bytes"] >= 6 * MiB
        with fs.map("/small", "r+") as m:
            assert bytes(m.buffer) == small and len(m) == len(small)
            assert m.address % CHUNK == 0  # congruent to the file offset
            assert m.page_sizes()["resident_bytes"] >= len(small)
            m.buffer[:5] = b"SMALL"
            m.buffer[-5:] = b"TAIL!"
        with fs.map("/small", offset=4000, length=100) as m:
            assert bytes(m.buffer) == small[4000:4100]
        assert asked and all(off % CHUNK == 0 and n % CHUNK == 0 for off, n in asked)
        assert read_file(fs, "/small") == b"SMALL" + small[5:-5] + b"TAIL!"
        assert read_file(fs, "/neighbour") == neighbour


def test_emulated_devdax_refuses_extents_that_cannot_share_one_view(devdax_pool):
    with daxfs.mount(devdax_pool, emulate_devdax=True) as fs:
        with fs.open("/x", "wb") as x, fs.open("/y", "wb") as y:
            for _ in range(4):  # interleaved: /x's blocks lie 8 KiB apart in one chunk
                x.write(b"x" * BLOCK)
                x.flush()
                y.write(b"y" * BLOCK)
                y.flush()
        assert len(fs.iomap("/x")) == 4
        with pytest.raises(OSError) as ei:
            fs.map("/x")
        assert ei.value.errno == errno.EINVAL and "aligned" in str(ei.value)
        with fs.map("/x", length=BLOCK) as m:  # a single extent maps fine
            assert bytes(m.buffer) == b"x" * BLOCK
        fs.truncate("/x", 0)  # the failed map left no pins behind


# ---------------------------------------------------------------------------
# 10. persist on the msync and libpmem backends
# ---------------------------------------------------------------------------
def _dirty_bytes(lo: int, hi: int) -> int:
    with open("/proc/self/smaps") as f:
        text = f.read()
    total = 0
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text.strip()):
        start, end = (int(x, 16) for x in block.split(None, 1)[0].split("-"))
        if start < hi and lo < end:
            for kb in re.findall(r"^(?:Shared_Dirty|Private_Dirty):\s+(\d+) kB", block, re.M):
                total += int(kb) * 1024
    return total


def test_persist_on_msync_backend_writes_back_and_survives_remount(disk_pool):
    with daxfs.mount(disk_pool) as fs:
        assert fs.info()["durability"] == "msync"
        write_file(fs, "/f", bytes(3 * MiB))
        fs.sync()
        with fs.map("/f", "r+") as m:
            m.buffer[5 : 5 + MiB] = b"\x5a" * MiB
            m.buffer[-3:] = b"end"
            assert _dirty_bytes(m.address, m.address + len(m)) > 0
            m.persist()
            assert _dirty_bytes(m.address, m.address + len(m)) == 0  # msync wrote it back
            m.buffer[2 * MiB + 1] = 1
            m.persist(2 * MiB + 1, 1)  # an unaligned sub-range
            m.persist(len(m), 0)
            for off, n in ((-1, 1), (0, len(m) + 1), (len(m), 1)):
                with pytest.raises(OSError) as ei:
                    m.persist(off, n)
                assert ei.value.errno == errno.EINVAL
        with fs.map("/f", "r+", offset=MiB + 5, length=7) as m:
            m.buffer[:] = b"offset!"
            m.persist()
    with daxfs.mount(disk_pool) as fs:
        got = read_file(fs, "/f")
    assert got[:5] == bytes(5) and got[5 : MiB + 5] == b"\x5a" * MiB
    assert got[MiB + 5 : MiB + 12] == b"offset!"
    assert got[2 * MiB + 1] == 1 and got[-3:] == b"end"


def test_persist_after_the_filesystem_closed_flushes_through_the_mapping(disk_pool):
    # A mapping outlives its FileSystem; persist() then flushes its own
    # addresses (the pool's mapping is gone), here with msync.
    with daxfs.mount(disk_pool) as fs:
        write_file(fs, "/f", bytes(3 * MiB))
        fs.sync()
        m = fs.map("/f", "r+", offset=MiB + 4096, length=MiB)
    m.buffer[7:14] = b"after!!"
    assert _dirty_bytes(m.address, m.address + len(m)) > 0
    m.persist(7, 7)
    assert _dirty_bytes(m.address, m.address + len(m)) == 0
    m.close()
    with daxfs.mount(disk_pool) as fs:
        got = read_file(fs, "/f")
    assert got[MiB + 4096 + 7 : MiB + 4096 + 14] == b"after!!"
    assert got.count(0) == len(got) - 7


@pytest.mark.skipif(load_libpmem() is None, reason="libpmem is not installed (libpmem1)")
def test_persist_on_pmem_backend_survives_remount(pool_path):
    with daxfs.mount(pool_path, durability="pmem") as fs:
        assert fs.info()["durability"] == "pmem"
        with fs.map("/f", "w+", size=3 * MiB + 10) as m:
            a = m.ndarray("uint8")
            a[:] = np.arange(len(a)) % 253
            del a
            m.persist()
            m.persist(MiB + 3, 77)
    with daxfs.mount(pool_path) as fs:
        got = np.frombuffer(read_file(fs, "/f"), np.uint8)
    assert (got == np.arange(3 * MiB + 10) % 253).all()


def test_mapping_many_times_leaks_no_descriptors_or_pins(fs):
    write_file(fs, "/f", os.urandom(3 * MiB))
    fds = len(os.listdir("/proc/self/fd"))
    for mode in ("r", "r+", "c") * 20:
        with fs.map("/f", mode) as m:
            m.ndarray()[0]
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds
    fs.truncate("/f", 0)


# ---------------------------------------------------------------------------
# A mapping dropped without close(): its orphan is freed by the next call
# ---------------------------------------------------------------------------
def _map_then_lose_the_name(fs: daxfs.FileSystem, how: str) -> list[object]:
    """Write /victim, map it with views, then unlink it or rename a file over
    it; returns the mapping and its views (the only users of the orphan)."""
    write_file(fs, "/victim", os.urandom(3 * MiB + 5))
    m = fs.map("/victim", "r+")
    users: list[object] = [m, m.buffer, m.ndarray("<u4", offset=4), m.to_arrow()]
    if how == "unlink":
        fs.unlink("/victim")
    else:
        fs.open("/replacement", "wb").close()  # empty: it takes no blocks
        fs.rename("/replacement", "/victim")
    return users


@pytest.mark.parametrize("how", ["unlink", "rename"])
def test_a_dropped_mapping_frees_its_orphan_at_the_next_call(pool_path, how):
    fs = daxfs.mount(pool_path)
    fs.open("/seed", "wb").close()  # the root directory's first block
    free = fs.statvfs().f_bfree
    users = _map_then_lose_the_name(fs, how)
    assert fs.statvfs().f_bfree < free  # the orphan is kept while mapped
    users.clear()  # no close(): the garbage collector takes the mapping and its views
    gc.collect()
    assert fs.exists("/seed")  # any call
    assert fs.statvfs().f_bfree == free
    fs.close()
    report = daxfs.check(pool_path)
    assert report.ok and not report.notes, report


def test_a_mapping_dropped_inside_a_call_is_only_noted_then(pool_path):
    """The collector may finalize a mapping in the middle of a call of the
    same FileSystem on this thread (its lock is re-entrant): the orphan is
    freed after that call, not from inside it."""
    with daxfs.mount(pool_path) as fs:
        fs.open("/seed", "wb").close()
        free = fs.statvfs().f_bfree
        users = _map_then_lose_the_name(fs, "unlink")
        kept = fs.statvfs().f_bfree
        with fs._locked(exclusive=False):  # as if inside another call
            users.clear()
            gc.collect()
            assert fs.statvfs().f_bfree == kept  # a nested call: nothing freed yet
        assert fs.statvfs().f_bfree == free
    assert daxfs.check(pool_path).ok


def test_dropped_mappings_never_raise_from_their_finalizers(pool_path):
    unraisable: list[object] = []
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        fs = daxfs.mount(pool_path)
        fs.open("/seed", "wb").close()
        free = fs.statvfs().f_bfree
        after_unmount = _map_then_lose_the_name(fs, "unlink")
        views_only = _map_then_lose_the_name(fs, "rename")[1:]  # not the Mapping
        fs.close()
        after_unmount.clear()  # the FileSystem is closed
        gc.collect()
        gone = weakref.ref(fs)
        del fs
        gc.collect()
        assert gone() is None
        views_only.clear()  # the FileSystem object is gone too
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == []
    with daxfs.mount(pool_path) as fs:  # the mount reclaims both orphans
        assert fs.statvfs().f_bfree == free

        # A queued check that fails (here: an inode number past the table)
        # is reported, never raised into the unrelated call that runs it,
        # even with warnings turned into errors.
        fs._orphan_check_later(1 << 40)()
        with pytest.warns(RuntimeWarning, match="freeing orphan inode"):
            assert sorted(fs.listdir("/")) == ["seed", "victim"]
        fs._orphan_check_later(1 << 40)()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert sorted(fs.listdir("/")) == ["seed", "victim"]
    assert daxfs.check(pool_path).ok
