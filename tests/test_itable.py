"""The inode table's in-use limit (format version 4, SPEC.md "Inode table
header"): mkfs writes only the table's first part, mount reads only up to
the limit, the table grows under the exclusive lock as creates need it,
and the header is input like any other byte (checked, repaired by fsck)."""

from __future__ import annotations

import importlib
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daxfs
from conftest import get, new_pool, put
from daxfs import inode as inode_mod
from daxfs import layout as L
from daxfs.pool import read_superblock
from daxfs.region import Region

mkfs_mod = importlib.import_module("daxfs.mkfs")  # (daxfs.mkfs is the function)

SMALL_GROW = 32  # slots per growth in these tests: two pages of the table


@pytest.fixture
def small_steps(monkeypatch):
    """mkfs's first part and each growth: SMALL_GROW slots, so that a test
    crosses the limit many times with a few hundred files."""
    monkeypatch.setattr(inode_mod, "ITABLE_GROW", SMALL_GROW)
    monkeypatch.setattr(mkfs_mod, "ITABLE_GROW", SMALL_GROW)


@pytest.fixture(params=["tmpfs", "disk"])
def grown_pool(request, shm_dir, tmp_path, small_steps) -> str:
    """A pool whose table starts at SMALL_GROW slots and grows by as many,
    on tmpfs and on the disk (page cache: group commit, private homes)."""
    return new_pool(shm_dir if request.param == "tmpfs" else str(tmp_path))


def table_header(path: str) -> bytes:
    region = Region(path, readonly=True)
    try:
        sb, _ = read_superblock(region)
        return region.read(sb.itable_off, L.INODE_SIZE)
    finally:
        region.close()


def write_at_slot(path: str, ino: int, data: bytes) -> None:
    region = Region(path)
    try:
        sb, _ = read_superblock(region)
        region.store(sb.itable_off + ino * L.INODE_SIZE, data)
        region.persist(sb.itable_off + ino * L.INODE_SIZE, len(data))
    finally:
        region.close()


def test_a_terabyte_pool_is_made_and_mounted_without_its_whole_table(tmp_path):
    """An empty 1 TiB pool file: mkfs writes a few MiB (the journal and the
    table's first part), and a mount reads no slot past the limit; lazy
    mode's private map of a pool larger than memory maps (MAP_NORESERVE)."""
    path = str(tmp_path / "big.pool")
    sb = daxfs.mkfs(path, "1T")
    assert sb.inode_count == 1 << 22
    assert os.stat(path).st_blocks * 512 < 64 << 20, "mkfs wrote the whole table"
    with daxfs.mount(path) as fs:
        assert fs.info()["commit"] == "lazy"
        assert fs.inodes.limit == L.ITABLE_GROW
        assert fs.statvfs().f_ffree == sb.inode_count - 2  # the ungrown part counts
        put(fs, "/f", b"x" * 5000)
    with daxfs.mount(path, readonly=True) as fs:
        assert get(fs, "/f") == b"x" * 5000
    assert os.stat(path).st_blocks * 512 < 64 << 20


def test_the_table_grows_as_files_are_made_and_every_file_survives(grown_pool):
    with daxfs.mount(grown_pool) as fs:
        assert fs.inodes.limit == SMALL_GROW
        for i in range(200):
            put(fs, f"/f{i}", str(i).encode())
        limit = fs.inodes.limit
        assert limit > 200 and limit % SMALL_GROW == 0
    assert L.unpack_itable_head(table_header(grown_pool), 0, 1 << 32) == limit
    with daxfs.mount(grown_pool) as fs:
        assert fs.inodes.limit == limit
        assert all(get(fs, f"/f{i}") == str(i).encode() for i in range(200))
    report = daxfs.check(grown_pool)
    assert report.ok, report.errors


def test_another_mount_follows_the_table_growing(grown_pool):
    """A second mount (its own descriptor, locks and caches, as another
    process has) learns the new limit from the record that moved it."""
    with daxfs.mount(grown_pool) as a, daxfs.mount(grown_pool) as b:
        for i in range(100):
            put(a, f"/a{i}", b"a")
        assert sorted(b.listdir("/")) == sorted(f"a{i}" for i in range(100))
        assert b.inodes.limit == a.inodes.limit > SMALL_GROW
        for i in range(100):
            put(b, f"/b{i}", b"b")
        assert get(a, "/b99") == b"b"
    report = daxfs.check(grown_pool)
    assert report.ok, report.errors


def test_bytes_past_the_limit_are_free_space_and_zeroed_when_the_table_grows(grown_pool):
    """mkfs does not write past the limit (a device keeps what it held): a
    valid-looking inode there (a copy of /keep's, owning its blocks) is not
    one, and the table growing over it zeroes it, taken or not."""
    with daxfs.mount(grown_pool) as fs:
        put(fs, "/keep", b"k" * 9000)
        forged = bytearray(fs.region.read(fs.inodes.slot_off(fs.stat("/keep").st_ino), 256))
    taken_ino, left_ino = SMALL_GROW + 5, 3 * SMALL_GROW - 6
    for ino in (taken_ino, left_ino):
        forged[8:16] = ino.to_bytes(8, "little")
        forged[0:4] = L.crc32c(forged[4:]).to_bytes(4, "little")
        write_at_slot(grown_pool, ino, bytes(forged))
    with daxfs.mount(grown_pool) as fs:
        assert fs.statvfs().f_ffree == fs.sb.inode_count - 3
        for i in range(2 * SMALL_GROW):  # numbers up to ~2 * SMALL_GROW + 2
            put(fs, f"/n{i}", b"n")
        assert fs.inodes.limit == 3 * SMALL_GROW > left_ino
    with daxfs.mount(grown_pool) as fs:  # (a live copy of /keep: a block owned twice)
        names = {fs.stat(f"/n{i}").st_ino for i in range(2 * SMALL_GROW)}
        assert taken_ino in names and left_ino not in names
        assert fs.region.read(fs.inodes.slot_off(left_ino), 256) == bytes(256)
        assert get(fs, "/keep") == b"k" * 9000
    assert daxfs.check(grown_pool).ok


def test_an_entry_naming_a_slot_past_the_limit_is_damage(pool_path):
    """Slots past the limit are free whatever they hold, so a name for one
    is a dangling entry: refused at lookup, removed by fsck."""
    with daxfs.mount(pool_path) as fs:
        for i in range(40):
            put(fs, f"/g{i}", b"g")
        near, far = fs.stat("/g0").st_ino, fs.stat("/g39").st_ino
    assert near < L.SLOTS_PER_PAGE <= far
    write_at_slot(pool_path, 0, L.pack_itable_head(L.SLOTS_PER_PAGE))
    with daxfs.mount(pool_path) as fs:
        assert get(fs, "/g0") == b"g"
        with pytest.raises(daxfs.CorruptionError):
            fs.stat("/g39")
    assert not daxfs.check(pool_path).ok
    assert daxfs.check(pool_path, repair=True).ok
    with daxfs.mount(pool_path) as fs:
        assert get(fs, "/g0") == b"g"
        assert "g39" not in fs.listdir("/")
    assert daxfs.check(pool_path).ok


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda h: h[:8] + b"\xff" + h[9:], id="bad-crc"),
        pytest.param(lambda h: L.pack_itable_head(1), id="limit-below-2"),
        pytest.param(lambda h: L.pack_itable_head(L.SLOTS_PER_PAGE + 1), id="not-whole-pages"),
        pytest.param(lambda h: L.pack_itable_head(1 << 40), id="past-the-table"),
    ],
)
def test_a_damaged_header_refuses_the_mount_and_fsck_rebuilds_it(pool_path, damage):
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/d/e")
        put(fs, "/d/e/f", b"data")
    write_at_slot(pool_path, 0, damage(table_header(pool_path)))
    with pytest.raises(daxfs.CorruptionError, match="inode table header"):
        daxfs.mount(pool_path)
    assert not daxfs.check(pool_path).ok
    assert daxfs.check(pool_path, repair=True).ok
    with daxfs.mount(pool_path) as fs:
        assert get(fs, "/d/e/f") == b"data"
    assert daxfs.check(pool_path).ok


def test_a_zero_header_means_the_whole_table(pool_path):
    """What a pool upgraded from version 3 has: every slot is in use."""
    with daxfs.mount(pool_path) as fs:
        put(fs, "/f", b"f")
    write_at_slot(pool_path, 0, bytes(L.INODE_SIZE))
    with daxfs.mount(pool_path) as fs:
        assert fs.inodes.limit == fs.sb.inode_count
        assert get(fs, "/f") == b"f"
        put(fs, "/g", b"g")
    assert daxfs.check(pool_path).ok


def test_out_of_slots_is_enospc_and_loses_nothing(shm_dir, small_steps):
    pool = new_pool(shm_dir, inodes=3 * SMALL_GROW)
    made = []
    with daxfs.mount(pool) as fs:
        with pytest.raises(OSError) as e:
            for i in range(10 * SMALL_GROW):
                put(fs, f"/f{i}", b"x")
                made.append(i)
        assert e.value.errno == 28
        assert fs.inodes.limit == fs.sb.inode_count
        assert fs.statvfs().f_ffree == 0
    with daxfs.mount(pool) as fs:
        assert all(stat.S_ISREG(fs.stat(f"/f{i}").st_mode) for i in made)
    assert daxfs.check(pool).ok


# ---------------------------------------------------------------------------
# free inode numbers: the lowest is taken, whatever came before
# ---------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["take", "return", "take_in", "taken_elsewhere"]), st.integers(0, 5000)
        ),
        max_size=300,
    )
)
def test_take_ino_gives_the_lowest_free_number_against_a_model(fs_for_numbers, steps):
    """take_ino against a set of free numbers, with returns and takes by
    take_in (a process sharing the pool takes in its own range) and by
    others' records (forget: the slot is in use now) in any order: the
    lowest free number is always the one given."""
    table = fs_for_numbers.inodes
    table.scan()  # (a fresh view of the table each example)
    free = {i for i in range(table.limit) if table.is_free(i)}
    for op, k in steps:
        if op == "take":
            if not free:
                continue
            assert table.take_ino() == min(free)
            free.discard(min(free))
        elif op == "return":
            taken = sorted(set(range(1, table.limit)) - free)
            if taken:
                ino = taken[k % len(taken)]
                table.return_ino(ino)
                free.add(ino)
        elif op == "take_in":
            start = (k % (table.limit // 64)) * 64
            got = table.take_in(start, 64)
            inside = sorted(i for i in free if start <= i < start + 64)
            assert got == (inside[0] if inside else None)
            free.discard(got)
        elif free:  # another process's record put an inode in a free slot
            ino = sorted(free)[k % len(free)]
            table._listed[ino] = False
            table.nfree -= 1
            free.discard(ino)
        assert table.nfree == len(free)


def test_free_numbers_another_process_takes_do_not_pile_up(fs_for_numbers):
    """A process sharing the pool takes numbers with take_in, never popping
    the heap of free numbers that returns fill: it must not grow without
    bound (a create and an unlink a file, for as long as the mount lives)."""
    table = fs_for_numbers.inodes
    table.scan()
    with pytest.raises(OSError):
        while True:
            table.take_ino()
    for i in range(5000):
        ino = 1 + i % 1000
        table.return_ino(ino)
        assert table.take_in(ino, 1) == ino
    assert table.nfree == 0
    assert len(table._free_heap) <= 64
    table.return_ino(77)
    assert table.take_ino() == 77


@pytest.fixture(scope="module")
def fs_for_numbers(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("numbers") / "pool")
    daxfs.mkfs(path, "64M", inodes=1024)
    fs = daxfs.mount(path)
    yield fs
    fs.close()
