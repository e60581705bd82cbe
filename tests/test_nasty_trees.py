"""Nasty trees and hostile structures at the core: lookups, walks, replay,
extent chains.  Every structure here is written with the file system's own
staging machinery (valid checksums, committed through the journal), so the
checks under test are the structural ones, not the checksums.

Each attack must end quickly with CorruptionError (damage) or work (a legal
tree), never recurse, loop or take time quadratic in what it reads.
"""

from __future__ import annotations

import errno
import stat
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import daxfs
from daxfs import layout as L
from daxfs.dir import DIR_FTYPE
from daxfs.inode import Inode
from daxfs.journal import Journal, RangeSet, Transaction, _unrevoked
from daxfs.layout import TxnRecord
from daxfs.pool import read_superblock
from daxfs.region import Region

DEPTH = 1500  # deeper than Python's recursion limit (1,000)
REG_FTYPE = stat.S_IFREG >> 12


def add_entry(fs: daxfs.FileSystem, dir_path: str, name: str, ino: int, ftype: int) -> None:
    """Write a directory entry naming ``ino``, whatever it is: the way a crafted
    pool would hold it, with valid checksums, through the journal."""
    with fs._change() as txn:
        d = fs._existing(dir_path).ino
        fs._dir(d).add(name, ino, ftype, txn, fs._dir_block_adder(fs._inode(d)))


def set_parent(fs: daxfs.FileSystem, path: str, parent: int) -> None:
    with fs._change():
        inode = fs._inode(fs._existing(path, follow=False).ino)
        inode.parent = parent
        fs._txn_dirty.add(inode.ino)


def ino(fs: daxfs.FileSystem, path: str) -> int:
    return fs.lstat(path).st_ino


def remount(pool: str) -> daxfs.FileSystem:
    """A fresh mount: nothing cached from the crafting."""
    return daxfs.mount(pool)


# ---------------------------------------------------------------------------
# directories named twice: refused at the lookup or the load, with the path
# ---------------------------------------------------------------------------
def test_a_directory_holding_itself_is_damage(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        add_entry(fs, "/d", "self", ino(fs, "/d"), DIR_FTYPE)
    with remount(pool_path) as fs:
        with pytest.raises(daxfs.CorruptionError, match="parent") as e:
            fs.stat("/d/self")
        assert e.value.filename == "/d/self"  # the path that met the damage
        with pytest.raises(daxfs.CorruptionError) as e:
            list(fs.walk("/"))
        assert e.value.filename == "/d/self"
        assert fs.listdir("/d") == ["self"]  # the listing itself is readable


def test_a_directory_holding_an_ancestor_is_damage(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/a/b/c")
        add_entry(fs, "/a/b/c", "up", ino(fs, "/a"), DIR_FTYPE)
    with remount(pool_path) as fs:
        with pytest.raises(daxfs.CorruptionError):
            fs.listdir("/a/b/c/up")
        with pytest.raises(daxfs.CorruptionError):
            fs.open("/a/b/c/up/b/x", "w")
        with pytest.raises(daxfs.CorruptionError):
            list(fs.walk("/a"))


def test_an_entry_naming_the_root_is_damage(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        add_entry(fs, "/", "again", 1, DIR_FTYPE)  # root's parent is itself
        add_entry(fs, "/d", "top", 1, DIR_FTYPE)
    with remount(pool_path) as fs:
        for path in ("/again", "/d/top", "/again/d"):
            with pytest.raises(daxfs.CorruptionError, match="root"):
                fs.stat(path)


def test_two_names_for_one_directory_in_one_directory_are_refused_at_load(pool_path):
    """Forty such directories would hold 2^40 paths: the load refuses the first."""
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/p/next")
        add_entry(fs, "/p", "twin", ino(fs, "/p/next"), DIR_FTYPE)  # same parent field
    with remount(pool_path) as fs:
        with pytest.raises(daxfs.CorruptionError, match="two names"):
            fs.listdir("/p")
        assert fs.listdir("/") == ["p"]


def test_an_entry_of_the_wrong_type_is_damage(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        fs.open("/f", "w").close()
        add_entry(fs, "/", "d-as-file", ino(fs, "/d"), REG_FTYPE)
        add_entry(fs, "/", "f-as-dir", ino(fs, "/f"), DIR_FTYPE)
    with remount(pool_path) as fs:
        for path in ("/d-as-file", "/f-as-dir", "/f-as-dir/x"):
            with pytest.raises(daxfs.CorruptionError, match="another type"):
                fs.stat(path)


def test_parent_fields_in_a_cycle_end_rename_with_damage(pool_path):
    """rename's "not into itself" walk follows parent fields: a cycle of them
    that never reaches the root must end it, not spin."""
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/a/b")
        fs.mkdir("/x")
        a, b = ino(fs, "/a"), ino(fs, "/a/b")
        with fs._change():  # b stays reachable as /a/b for the rename below
            fs._inode(a).parent = b
            fs._txn_dirty.add(a)
        with pytest.raises(daxfs.CorruptionError, match="never reach the root"):
            fs._check_not_inside(ino(fs, "/x"), b, "/x", "/a/b/x")


# ---------------------------------------------------------------------------
# legal but deep: no recursion anywhere
# ---------------------------------------------------------------------------
def test_a_1500_level_tree_is_made_walked_and_removed(pool_path):
    deep = "/" + "/".join(["d"] * DEPTH)
    with daxfs.mount(pool_path) as fs:
        fs.makedirs(deep)
        fs.makedirs(deep, exist_ok=True)
        with pytest.raises(FileExistsError):
            fs.makedirs(deep)
        fs.open(deep + "/leaf", "w").close()
        walked = list(fs.walk("/"))
        assert len(walked) == DEPTH + 1
        assert walked[-1] == (deep, [], ["leaf"])
        bottom_up = list(fs.walk("/", topdown=False))
        assert bottom_up[0] == (deep, [], ["leaf"]) and bottom_up[-1][0] == "/"
    assert daxfs.check(pool_path).ok


def test_makedirs_creates_only_what_is_missing(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/a/b")
        fs.open("/a/b/file", "w").close()
        fs.makedirs("/a/b/c/d", mode=0o700)
        assert stat.S_IMODE(fs.stat("/a/b/c").st_mode) == 0o700 & ~fs.umask
        with pytest.raises(NotADirectoryError):
            fs.makedirs("/a/b/file/x")
        with pytest.raises(FileExistsError):
            fs.makedirs("/a/b/file", exist_ok=True)  # exists, but not a directory


def test_walk_prunes_in_place_and_cuts_symlink_loops(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/a/b")
        fs.makedirs("/skip/me")
        fs.symlink("/", "/a/b/root")  # a loop through the root
        fs.symlink("../..", "/a/b/up")  # a loop through ".."
        fs.symlink("/skip", "/a/other")  # a second way to /skip: walked again

        def pruned():
            for top, dirs, _files in fs.walk("/"):
                yield top
                if top == "/":
                    dirs.remove("skip")

        assert list(pruned()) == ["/", "/a", "/a/b"]
        followed = [top for top, _d, _f in fs.walk("/", followlinks=True)]
        assert followed == ["/", "/a", "/a/b", "/a/other", "/a/other/me", "/skip", "/skip/me"]


# ---------------------------------------------------------------------------
# symlinks: a target is shorter than PATH_MAX
# ---------------------------------------------------------------------------
def test_a_symlink_target_of_path_max_bytes_is_damage(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.symlink("x" * 4095, "/longest")
        assert fs.readlink("/longest") == "x" * 4095
        fs.symlink("y", "/grown")
        with fs._change() as txn:  # stretch the target to 4096 bytes (a crafted size)
            inode = fs._inode(ino(fs, "/grown"))
            fs._write_piece(txn, inode, 1, memoryview(b"y" * 4095))
            inode.size = 4096
            fs._txn_dirty.add(inode.ino)
    with remount(pool_path) as fs:
        with pytest.raises(daxfs.CorruptionError, match="4095"):
            fs.readlink("/grown")
        with pytest.raises(daxfs.CorruptionError):
            fs.stat("/grown")


# ---------------------------------------------------------------------------
# extent chains: linear, and never longer than the extents need
# ---------------------------------------------------------------------------
def fragmented_file(fs: daxfs.FileSystem, path: str, extents: int) -> None:
    """A file of ``extents`` one-block extents, every other file block a hole
    (so no two extents merge), in blocks the allocator gave."""
    fs.open(path, "wb").close()
    with fs._change() as txn:
        inode = fs._inode(ino(fs, path))
        runs = fs._alloc_blocks(txn, extents, None)
        blocks = [d + k * L.BLOCK for d, n in runs for k in range(n // L.BLOCK)]
        inode.extents = [(2 * k * L.BLOCK, dev, L.BLOCK) for k, dev in enumerate(blocks)]
        inode.size = 2 * extents * L.BLOCK
        inode.generation += 1
        fs._txn_dirty.add(inode.ino)


def test_an_extent_chain_of_part_full_blocks_is_damage(pool_path):
    with daxfs.mount(pool_path) as fs:
        fragmented_file(fs, "/frag", L.INLINE_EXTENTS + 2 * L.EXTENTS_PER_BLOCK + 3)
        inode = fs._inode(ino(fs, "/frag"))
        first, second = inode.ext_blocks[:2]
        # Rewrite the chain as one extent in the first block, the rest after:
        # every extent still there, but the first block is not full.
        overflow = inode.extents[L.INLINE_EXTENTS :]
        with fs._change() as txn:
            txn.write(first, L.pack_extblock(inode.ino, second, overflow[:1]))
            txn.write(second, L.pack_extblock(inode.ino, 0, overflow[1 : 1 + 169]))
    with pytest.raises(daxfs.CorruptionError, match="extent count"):
        remount(pool_path)


def test_a_long_legal_extent_chain_mounts_and_checks(pool_path):
    n = L.INLINE_EXTENTS + 20 * L.EXTENTS_PER_BLOCK
    with daxfs.mount(pool_path) as fs:
        fragmented_file(fs, "/frag", n)
        assert len(fs._inode(ino(fs, "/frag")).ext_blocks) == 20
    with remount(pool_path) as fs:
        assert sum(1 for e in fs.iomap("/frag") if e.kind == "mapped") == n
    assert daxfs.check(pool_path).ok


# ---------------------------------------------------------------------------
# replay: revokes in a range set, O(n log n)
# ---------------------------------------------------------------------------
def naive_unrevoked(records) -> list[list[bool]]:
    """The rule as SPEC.md states it, compared pair by pair."""
    out = []
    for i, rec in enumerate(records):
        later = [(d, d + n) for r in records[i:] for d, n in r.revokes]
        out.append(
            [
                not any(s < dst + len(data) and dst < e and len(data) for s, e in later)
                for dst, data in rec.writes
            ]
        )
    return out


ranges = st.tuples(st.integers(0, 64), st.integers(0, 16)).map(lambda t: (t[0], t[1]))
records = st.lists(
    st.tuples(st.lists(ranges, max_size=6), st.lists(ranges, max_size=4)), max_size=6
).map(
    lambda rs: [
        TxnRecord([(d, b"w" * n) for d, n in writes], [(d, n) for d, n in revokes if n], 0)
        for writes, revokes in rs
    ]
)


@given(records)
def test_replay_skips_exactly_the_writes_a_later_revoke_covers(recs):
    assert _unrevoked(recs) == naive_unrevoked(recs)


@given(st.lists(ranges, max_size=30), ranges)
def test_range_set_answers_as_a_list_of_ranges(added, probe):
    rs = RangeSet()
    for s, n in added:
        rs.add(s, s + n)
    a, n = probe
    want = any(s < a + n and a < s + m for s, m in added if m) and n > 0
    assert rs.overlaps(a, a + n) == want
    starts = sorted(rs._end_of.items())
    assert all(e0 < s1 for (_s0, e0), (s1, _e1) in zip(starts, starts[1:], strict=False))


def quadratic_record(region: Region, sb: L.Superblock, fill: float = 0.9) -> int:
    """Commit one record of many zero-length writes and many revokes that
    fills most of the journal (what a crafted pool holds); return entries."""
    j = Journal(region, sb)
    j.recover()
    t = Transaction()
    entries = int((j.end - j.start) * fill) // (2 * L.TXN_REC.size)
    for k in range(entries):
        t.writes.append((sb.itable_off + (k % 64) * 8, bytearray()))
        t.revoke(sb.data_off + (k % sb.data_blocks) * L.BLOCK, L.BLOCK)
    j.commit(t)
    return 2 * entries


@pytest.mark.parametrize("size", ["8M", "64M"])
def test_a_journal_of_writes_and_revokes_replays_in_n_log_n(tmp_path, size):
    """The audit's record: 1.9 s at 8 MiB and 27.7 s at 64 MiB with the
    pairwise rule (hours at 1 GiB); the range set makes it a fraction of a
    second.  The limit is a hang guard, 20x what the quadratic rule took."""
    path = str(tmp_path / "q.pool")
    daxfs.mkfs(path, size)
    region = Region(path)
    try:
        sb, _ = read_superblock(region)
        assert quadratic_record(region, sb) > 10_000
    finally:
        region.close()
    t0 = time.monotonic()
    with daxfs.mount(path, readonly=True) as fs:
        assert fs.listdir("/") == []
    assert time.monotonic() - t0 < 20


# ---------------------------------------------------------------------------
# orphans: a table full of them still mounts (reclaimed in batches)
# ---------------------------------------------------------------------------
def test_a_table_full_of_orphans_mounts_and_frees_them(make_pool):
    pool = make_pool(size=64 << 20)
    with daxfs.mount(pool) as fs:
        free = fs.inodes.nfree
        while fs.inodes.nfree:  # nameless inodes, as a crash could leave
            with fs._change():
                for _ in range(min(500, fs.inodes.nfree)):
                    n = fs.inodes.take_ino()
                    fs._txn_took_ino = True
                    fs.inodes.cache[n] = Inode(n, stat.S_IFREG | 0o644, nlink=0)
                    fs._txn_dirty.add(n)
        assert free > 4000
    with daxfs.mount(pool) as fs:
        assert fs.inodes.nfree == free
        fs.open("/after", "w").close()
    assert daxfs.check(pool).ok


def test_path_max_is_linux_s(pool_path):
    with daxfs.mount(pool_path) as fs:
        with pytest.raises(OSError) as e:
            fs.symlink("x" * 4096, "/l")
        assert e.value.errno == errno.ENAMETOOLONG
