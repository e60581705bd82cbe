"""Migration: a file that becomes large moves each whole 2 MiB window it holds
in small blocks into one aligned chunk (data.DataPath._migrate), so that a
file grown by appends ends 2 MiB-mappable everywhere.  Never under a
Mapping, never when no whole chunk is free, never at the cost of a write."""

from __future__ import annotations

import os

import pytest

import daxfs
from conftest import new_pool
from daxfs.hugemap import eligible_total
from daxfs.layout import BLOCK, CHUNK

MiB = 1 << 20
STEP = 64 * 1024


def append(fs, path: str, data: bytes, model: bytearray, step: int = STEP) -> None:
    with fs.open(path, "ab") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()  # each piece its own write (the io buffer would merge them)
    model += data


def read(fs, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def window_devs(fs, path: str, w: int) -> list[tuple[int, int]]:
    return [(e.device_offset, e.length) for e in fs.iomap(path, w * CHUNK, CHUNK)]


def block_devs(fs, path: str, off: int, n: int) -> list[int | None]:
    """The device offset of each 4 KiB block of [off, off+n) (None in a hole)."""
    out: list[int | None] = []
    for e in fs.iomap(path, off, n):
        for k in range(0, e.length, BLOCK):
            out.append(None if e.device_offset is None else e.device_offset + k)
    return out


def is_chunk(fs, path: str, w: int) -> bool:
    ext = fs.iomap(path, w * CHUNK, CHUNK)
    return len(ext) == 1 and ext[0].kind == "mapped" and ext[0].device_offset % CHUNK == 0


def whole_windows(size: int) -> int:
    return size // CHUNK * CHUNK


def check_clean(path: str) -> None:
    report = daxfs.check(path)
    assert report.ok, report.errors


# ---------------------------------------------------------------------------
# appends: every whole window ends in one chunk
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["tmpfs", "disk"])
def test_file_appended_64k_at_a_time_ends_2mib_eligible(where, shm_dir, tmp_path):
    pool = new_pool(shm_dir if where == "tmpfs" else str(tmp_path))
    model = bytearray()
    with daxfs.mount(pool) as fs:
        assert fs.info()["durability"] == ("none" if where == "tmpfs" else "msync")
        with fs.open("/f", "wb") as f:
            f.write(os.urandom(100))  # starts small: 4 KiB blocks
        model += read(fs, "/f")
        append(fs, "/f", os.urandom(8 * MiB - 100), model)
        assert read(fs, "/f") == model
        assert eligible_total(fs.iomap("/f"), len(model)) == 8 * MiB
        assert all(is_chunk(fs, "/f", w) for w in range(4))
        free_after = fs.statvfs().f_bfree  # (freed space a group commit holds included)
    check_clean(pool)
    with daxfs.mount(pool) as fs:  # durable, and no block leaked or owned twice
        assert read(fs, "/f") == model
        assert fs.statvfs().f_bfree == free_after


def test_crossing_by_one_write_migrates_window_0_and_keeps_the_rest_contiguous(fs):
    model = bytearray()
    append(fs, "/f", os.urandom(MiB + 4000), model, step=BLOCK)
    assert not is_chunk(fs, "/f", 0)
    append(fs, "/f", os.urandom(3 * MiB), model, step=3 * MiB)  # one write across
    assert read(fs, "/f") == model
    assert is_chunk(fs, "/f", 0) and is_chunk(fs, "/f", 1)
    (d0, _), (d1, _) = window_devs(fs, "/f", 0)[0], window_devs(fs, "/f", 1)[0]
    assert d1 == d0 + CHUNK  # window 1 asked for the chunk after window 0's
    assert eligible_total(fs.iomap("/f"), len(model)) == 4 * MiB


def test_holes_in_a_migrated_window_read_as_zeroes(fs):
    with fs.open("/f", "wb") as f:
        f.write(b"a" * 5000)
        f.seek(MiB)
        f.write(b"b" * 3000)  # a hole between
    model = bytearray(b"a" * 5000 + bytes(MiB - 5000) + b"b" * 3000)
    assert read(fs, "/f") == model
    append(fs, "/f", os.urandom(2 * MiB), model)
    assert is_chunk(fs, "/f", 0)
    assert read(fs, "/f") == model


def test_truncate_up_across_2mib_migrates_window_0(fs, pool_path):
    model = bytearray()
    append(fs, "/f", os.urandom(MiB + 123), model, step=BLOCK)
    fs.truncate("/f", 3 * MiB)
    model += bytes(3 * MiB - len(model))
    assert is_chunk(fs, "/f", 0)
    assert read(fs, "/f") == model
    assert eligible_total(fs.iomap("/f"), 3 * MiB) == 2 * MiB


def test_fallocate_across_2mib_migrates_window_0(fs):
    model = bytearray()
    append(fs, "/f", os.urandom(700_000), model, step=BLOCK)
    fs.fallocate("/f", 0, 4 * MiB)
    model += bytes(4 * MiB - len(model))
    assert is_chunk(fs, "/f", 0) and is_chunk(fs, "/f", 1)
    assert read(fs, "/f") == model


def test_a_write_touching_an_old_small_window_migrates_it(fs):
    """A large window left in blocks (here: by a mapping) moves at the next
    write into it, once."""
    model = bytearray()
    append(fs, "/f", os.urandom(MiB), model, step=BLOCK)
    with fs.map("/f", offset=0, length=BLOCK):
        append(fs, "/f", os.urandom(3 * MiB), model)
    assert not is_chunk(fs, "/f", 0)
    append(fs, "/f", os.urandom(MiB), model)  # touches window 2 only
    assert not is_chunk(fs, "/f", 0)
    with fs.open("/f", "r+b") as f:
        f.seek(77)
        f.write(b"xyz")
    model[77:80] = b"xyz"
    assert is_chunk(fs, "/f", 0)
    assert read(fs, "/f") == model
    devs = window_devs(fs, "/f", 0)
    with fs.open("/f", "r+b") as f:
        f.write(b"q")
    model[0:1] = b"q"
    assert window_devs(fs, "/f", 0) == devs  # once
    assert read(fs, "/f") == model


# ---------------------------------------------------------------------------
# mappings: a pinned window is never moved
# ---------------------------------------------------------------------------
def test_mapped_window_is_not_migrated_and_its_bytes_never_change(fs, pool_path):
    model = bytearray()
    append(fs, "/f", os.urandom(MiB + 5 * BLOCK), model, step=BLOCK)
    before = block_devs(fs, "/f", 0, len(model))
    with fs.map("/f") as m:
        seen = bytes(m.buffer)
        assert seen == model
        append(fs, "/f", os.urandom(3 * MiB), model)  # crosses 2 MiB while mapped
        fs.fallocate("/f", 0, 5 * MiB)
        model += bytes(5 * MiB - len(model))
        with fs.open("/f", "r+b") as f:  # and a write into the mapped window
            f.seek(10)
            f.write(b"new")
        model[10:13] = b"new"
        assert block_devs(fs, "/f", 0, len(before) * BLOCK) == before
        assert not is_chunk(fs, "/f", 0)
        expected = bytearray(seen)
        expected[10:13] = b"new"  # the write went to the same memory
        assert bytes(m.buffer) == expected
        assert read(fs, "/f") == model
        assert is_chunk(fs, "/f", 1)  # the windows after it are chunks as ever
    # Unpinned: the next write into window 0 moves it.
    with fs.open("/f", "r+b") as f:
        f.write(b"!")
    model[0:1] = b"!"
    assert is_chunk(fs, "/f", 0)
    assert read(fs, "/f") == model
    fs.close()
    check_clean(pool_path)


def test_mapping_of_another_window_does_not_stop_migration(fs):
    model = bytearray()
    append(fs, "/f", os.urandom(MiB), model, step=BLOCK)
    with fs.map("/f", offset=0, length=BLOCK):
        append(fs, "/f", os.urandom(3 * MiB), model)  # window 0 stays: pinned
    with fs.map("/f", offset=3 * MiB, length=MiB) as m:
        tail = bytes(m.buffer)
        with fs.open("/f", "r+b") as f:
            f.write(b"z")  # window 0 is free to move; window 1 is mapped
        model[0:1] = b"z"
        assert is_chunk(fs, "/f", 0)
        assert bytes(m.buffer) == tail == model[3 * MiB : 4 * MiB]
    assert read(fs, "/f") == model


# ---------------------------------------------------------------------------
# no whole chunk free: nothing moves, nothing fails
# ---------------------------------------------------------------------------
def test_no_whole_chunk_free_keeps_the_blocks_and_writes_succeed(make_pool):
    pool = make_pool(size=32 * MiB)
    model = bytearray()
    with daxfs.mount(pool) as fs:
        append(fs, "/f", os.urandom(MiB), model, step=BLOCK)
        fills = []
        fs.mkdir("/fill")
        while fs.allocator.free_chunks:  # 16 KiB files: chunks fill one by one
            name = f"/fill/{len(fills)}"
            with fs.open(name, "wb") as g:
                g.write(os.urandom(4 * BLOCK))
            fills.append(name)
        for name in fills[::2]:  # every chunk about half empty, none whole
            fs.unlink(name)
        assert fs.allocator.free_chunks == 0
        assert fs.allocator.free_blocks >= 3 * MiB // BLOCK
        before = block_devs(fs, "/f", 0, MiB)
        append(fs, "/f", os.urandom(2 * MiB), model)  # crosses 2 MiB
        assert read(fs, "/f") == model
        assert block_devs(fs, "/f", 0, MiB) == before
        assert not is_chunk(fs, "/f", 0)
        assert fs.allocator.free_chunks == 0
    check_clean(pool)


def test_migration_never_takes_the_last_chunk_a_write_needs(make_pool):
    """With one whole chunk free, a write that crosses 2 MiB into an entirely
    unmapped window gives that chunk to the new window; window 0 waits."""
    pool = make_pool(size=32 * MiB)
    model = bytearray()
    with daxfs.mount(pool) as fs:
        append(fs, "/f", os.urandom(MiB), model, step=BLOCK)
        n = 0
        while fs.allocator.free_chunks > 1:
            fs.open(f"/big{n}", "xb").close()
            fs.fallocate(f"/big{n}", 0, CHUNK)
            n += 1
        tail = os.urandom(2 * MiB)
        with fs.open("/f", "r+b") as f:  # window 0 is now whole (a hole after 1 MiB)
            f.seek(2 * MiB)
            f.write(tail)
        model += bytes(MiB) + tail
        assert read(fs, "/f") == model
        assert is_chunk(fs, "/f", 1) and not is_chunk(fs, "/f", 0)
        fs.unlink("/big0")  # a chunk comes back: the next write into window 0 moves it
        with fs.open("/f", "r+b") as f:
            f.write(b"w")
        model[0:1] = b"w"
        assert is_chunk(fs, "/f", 0)
        assert read(fs, "/f") == model
    check_clean(pool)


def test_naive_allocator_does_not_migrate(naive_pool):
    model = bytearray()
    with daxfs.mount(naive_pool) as fs:
        append(fs, "/f", os.urandom(MiB), model, step=BLOCK)
        before = block_devs(fs, "/f", 0, MiB)
        append(fs, "/f", os.urandom(2 * MiB), model)
        assert block_devs(fs, "/f", 0, MiB) == before
        assert read(fs, "/f") == model
    check_clean(naive_pool)


# ---------------------------------------------------------------------------
# what the kernel maps
# ---------------------------------------------------------------------------
def test_appended_file_on_huge_tmpfs_maps_with_2mib_pages_everywhere(huge_dir):
    pool = os.path.join(huge_dir, f"migrate-{os.getpid()}")
    daxfs.mkfs(pool, 64 * MiB, force=True)
    try:
        model = bytearray()
        size = 8 * MiB + 100
        with daxfs.mount(pool) as fs:
            append(fs, "/f", os.urandom(size), model)
            assert read(fs, "/f") == model
            with fs.map("/f") as m:
                assert m.huge_pages_note is None
                a = m.ndarray("uint8")
                assert int(a[::4096].sum()) == sum(model[::4096])  # fault every page in
                del a
                sizes = m.page_sizes()
                assert sizes["pmd_bytes"] == whole_windows(size), sizes
                assert sizes["pte_bytes"] == sizes["resident_bytes"] - whole_windows(size)
        check_clean(pool)
    finally:
        os.unlink(pool)
