"""check(): clean pools check clean; damage is detected, never crashes, and repairs.

The corruption tests flip single bytes of every kind of metadata record
(superblock, inode slot, extent block, directory block) in a pristine
image and demand: mounting and reading either works correctly or raises
CorruptionError (never another exception type); check() reports the
damage; check(repair=True) leaves a pool that checks clean and takes new
writes.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import shutil
import stat

import pytest

import daxfs
from daxfs.layout import BLOCK, INODE_SIZE, unpack_superblock

POOL_SIZE = "8M"


def build_pristine(path: str) -> dict[str, int]:
    """A small pool with a tree, a hard link, a symlink, and one file
    fragmented past the inline extents (so it has an extent block); returns
    where each kind of record lies.  test_fuzzy builds the same image."""
    daxfs.mkfs(path, POOL_SIZE, allocator="naive")
    with daxfs.mount(path) as fs:
        fs.makedirs("/d/e")
        for i in range(6):
            with fs.open(f"/d/f{i}", "wb") as f:
                f.write(bytes([i]) * (100 + 1000 * i))
        fs.link("/d/f1", "/d/e/hard")
        fs.symlink("/d/f2", "/d/e/soft")
        with fs.open("/frag", "wb") as a, fs.open("/other", "wb") as b:
            for i in range(10):  # interleaved allocations fragment both files
                a.write(bytes([65 + i]) * BLOCK)
                a.flush()
                b.write(bytes([97 + i]) * BLOCK)
                b.flush()
        frag = fs._inode(fs.stat("/frag").st_ino)
        assert frag.ext_blocks, "the fragmented file should need an extent block"
        dir_dev = fs.iomap("/d")[0].device_offset
        return {
            "sb": 0,
            "inode": fs.sb.itable_off + fs.stat("/d/f3").st_ino * INODE_SIZE,
            "free_inode": fs.sb.itable_off + (fs.sb.inode_count - 1) * INODE_SIZE,
            "extblock": frag.ext_blocks[0],
            "dirblock": dir_dev,
        }


def _snapshot(fs, top: str = "/") -> dict[str, object]:
    """Every path's content; unlike walk(), errors propagate."""
    out: dict[str, object] = {}
    for name in fs.listdir(top):
        p = top.rstrip("/") + "/" + name
        st = fs.lstat(p)
        if stat.S_ISREG(st.st_mode):
            with fs.open(p, "rb") as f:
                out[p] = f.read()
        elif stat.S_ISLNK(st.st_mode):
            out[p] = "->" + fs.readlink(p)
        else:
            out[p] = "dir"
            out.update(_snapshot(fs, p))
    return out


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("pristine", numbered=True)
    shm = f"/dev/shm/daxfs-check-{os.getpid()}-{base.name}"
    os.makedirs(shm)
    path = os.path.join(shm, "pristine.pool")
    where = build_pristine(path)
    with daxfs.mount(path, readonly=True) as fs:
        expected = _snapshot(fs)
    yield path, where, expected
    shutil.rmtree(shm)


def test_clean_pool_checks_clean(pristine):
    path, _where, _expected = pristine
    report = daxfs.check(path)
    assert report.ok and not report.errors and not report.remaining
    assert report.stats["used_blocks"] > 0


def _flip_and_verify(pristine, offset: int) -> None:
    path, _where, expected = pristine
    victim = path + f".{offset}"
    shutil.copyfile(path, victim)
    try:
        with open(victim, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0xFF]))
        _mount_reads_correctly_or_corruption(victim, expected, offset)
        report = daxfs.check(victim)
        assert not report.ok and report.errors, f"flip at {offset:#x} went unnoticed"
        fixed = daxfs.check(victim, repair=True)
        assert fixed.ok, (offset, fixed.remaining)
        again = daxfs.check(victim)
        assert again.ok and not again.errors, (offset, again.errors)
        with daxfs.mount(victim) as fs:
            with fs.open("/after-repair", "wb") as f:
                f.write(b"x" * 10000)
        with daxfs.mount(victim) as fs:
            assert fs.open("/after-repair", "rb").read() == b"x" * 10000
        assert daxfs.check(victim).ok
    finally:
        os.unlink(victim)


def _mount_reads_correctly_or_corruption(path: str, expected, offset: int) -> None:
    try:
        with daxfs.mount(path, readonly=True) as fs:
            got = _snapshot(fs)
    except daxfs.CorruptionError:
        return
    # Damage that mount did not need to see must not change what it shows,
    # except that a damaged directory's entries can't be listed at all (caught above).
    assert got == expected, f"flip at {offset:#x} changed content silently"


def _positions(start: int, length: int, sampled: int | None, seed: int) -> list[int]:
    if sampled is None:
        return list(range(start, start + length))
    rng = random.Random(seed)
    head = list(range(start, start + 32))
    return head + rng.sample(range(start + 32, start + length), sampled)


@pytest.mark.parametrize(
    "region,length,sampled",
    [
        ("sb", 128, None),
        ("inode", INODE_SIZE, None),
        ("free_inode", INODE_SIZE, 16),
        ("extblock", BLOCK, 200),
        ("dirblock", BLOCK, 200),
    ],
)
def test_single_byte_flips_are_caught_and_repaired(pristine, region, length, sampled):
    _path, where, _expected = pristine
    for offset in _positions(where[region], length, sampled, seed=length):
        _flip_and_verify(pristine, offset)


def test_replica_superblock_serves_when_primary_is_gone(pristine):
    path, _where, expected = pristine
    victim = path + ".nosb"
    shutil.copyfile(path, victim)
    try:
        with open(victim, "r+b") as f:
            f.write(bytes(BLOCK))
        with daxfs.mount(victim, readonly=True) as fs:
            assert _snapshot(fs) == expected
        assert not daxfs.check(victim).ok
        assert daxfs.check(victim, repair=True).ok
        with open(victim, "rb") as f:
            assert f.read(8) == b"DAXFSv1\0"
    finally:
        os.unlink(victim)


@pytest.mark.parametrize("damaged", ["primary", "replica"])
def test_two_valid_superblocks_that_differ_refuse_to_mount_until_repaired(pristine, damaged):
    # A change the checksum cannot see (here: fixed up after the damage).
    # The mount cannot tell which copy is right; the checker decides.
    path, _where, expected = pristine
    victim = path + ".twosb"
    shutil.copyfile(path, victim)
    try:
        with open(victim, "r+b") as f:
            sb = unpack_superblock(f.read(BLOCK), 0, os.path.getsize(victim))
            off = 0 if damaged == "primary" else sb.replica_off
            f.seek(off)
            f.write(dataclasses.replace(sb, created_ns=sb.created_ns + 1).pack())
        for readonly in (False, True):
            with pytest.raises(daxfs.CorruptionError, match="fsck --repair") as e:
                daxfs.mount(victim, readonly=readonly)
            assert e.value.errno == errno.EUCLEAN
        assert not daxfs.check(victim).ok
        assert daxfs.check(victim, repair=True).ok
        with daxfs.mount(victim, readonly=True) as fs:
            assert _snapshot(fs) == expected
    finally:
        os.unlink(victim)


def test_unreachable_subtree_goes_to_lost_and_found(tmp_path):
    path = str(tmp_path / "lf.pool")
    daxfs.mkfs(path, POOL_SIZE)
    with daxfs.mount(path) as fs:
        fs.makedirs("/a/b")
        with fs.open("/a/b/file", "wb") as f:
            f.write(b"keep me")
        a_ino, parent_dev = fs.stat("/a").st_ino, fs.iomap("/")[0].device_offset
    # Tombstone the root's entry for /a by hand, with a valid checksum: a
    # logically broken but well-formed pool.
    from daxfs.layout import dirblock_seal, parse_dirblock

    with open(path, "r+b") as f:
        f.seek(parent_dev)
        image = bytearray(f.read(BLOCK))
        used, entries = parse_dirblock(image, parent_dev, 1)
        pos = next(p for p, ino, _t, _n in entries if ino == a_ino)
        image[pos : pos + 8] = bytes(8)
        dirblock_seal(image, 1, used, len(entries) - 1)
        f.seek(parent_dev)
        f.write(image)
    report = daxfs.check(path)
    assert any("not reachable" in e for e in report.errors)
    assert daxfs.check(path, repair=True).ok
    with daxfs.mount(path) as fs:
        assert fs.open(f"/lost+found/#{a_ino}/b/file", "rb").read() == b"keep me"
        assert fs.stat("/lost+found").st_nlink == 3
    assert daxfs.check(path).ok


def test_a_mount_live_during_a_repair_sees_the_repaired_pool(tmp_path):
    """A repair's changes are not all records a live mount can catch up
    from (a dangling entry's removal names no directory): a repair that
    fixed anything makes every live mount rebuild its caches, so it shows
    what a fresh mount shows.  Without that, the live mount kept listing
    the removed name."""
    path = str(tmp_path / "live.pool")
    daxfs.mkfs(path, POOL_SIZE)
    with daxfs.mount(path) as fs:  # (closed: no record left to replay over the damage)
        fs.makedirs("/d")
        for i in range(3):
            with fs.open(f"/d/f{i}", "wb") as f:
                f.write(b"x")
    with daxfs.mount(path) as live:
        assert live.listdir("/d") == ["f0", "f1", "f2"]  # cached
        slot = live.sb.itable_off + live.stat("/d/f1").st_ino * 256
        with open(path, "r+b") as f:  # f1's inode slot wiped by hand: its entry dangles
            f.seek(slot)
            f.write(bytes(256))
        rebuilds = live.coherence["full_rebuilds"]
        assert daxfs.check(path, repair=True).ok
        assert sorted(live.listdir("/d")) == ["f0", "f2"]
        assert live.coherence["full_rebuilds"] == rebuilds + 1
        with daxfs.mount(path, readonly=True) as fresh:
            assert _snapshot(live) == _snapshot(fresh)
        nothing = daxfs.check(path, repair=True)  # nothing to repair: no rebuild
        assert nothing.ok and not nothing.repaired
        live.listdir("/")
        assert live.coherence["full_rebuilds"] == rebuilds + 1
    assert daxfs.check(path).ok


def test_directories_claiming_the_same_blocks_are_read_once(shm_dir):
    # Nearly every inode slot a directory mapping the same half of the data area.
    # The first owner keeps the blocks; the others' claims are set aside in
    # memory even by a check that does not repair, so each block is parsed
    # once, not once per claimant (4,094 x 8,000 parses: minutes).
    import signal

    from daxfs.layout import InodeRecord, pack_inode, superblock_at
    from daxfs.region import Region

    path = os.path.join(shm_dir, "claims.pool")
    daxfs.mkfs(path, "64M")
    region = Region(path, readonly=True)
    sb = superblock_at(region, 0)
    region.close()
    half = sb.data_blocks // 2 * BLOCK
    with open(path, "r+b") as f:
        for ino in range(2, sb.inode_count - 1):  # one left for lost+found
            record = InodeRecord(
                ino, 0, stat.S_IFDIR | 0o755, 2, 0, 0, half, 0, 0, 0, 0, 1, 1, 0,
                [(0, sb.data_off, half)],
            )  # fmt: skip
            f.seek(sb.itable_off + ino * INODE_SIZE)
            f.write(pack_inode(record))

    def hang(_sig, _frame):
        raise TimeoutError("the check hangs")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)  # under a second here; the per-claimant reading took minutes
    try:
        assert not daxfs.check(path).ok
        assert daxfs.check(path, repair=True).ok
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    with daxfs.mount(path) as fs:
        assert len(fs.listdir("/lost+found")) == sb.inode_count - 3


def test_a_special_file_holding_bytes_is_damage_and_repair_drops_them(shm_dir):
    """A FIFO, device or socket has no bytes (format version 6): a slot that
    gives one a size and an extent is damage; repair keeps the name and the
    type and frees the block.  In a version 5 pool the type itself is."""
    from daxfs.layout import InodeRecord, pack_inode, superblock_at, unpack_inode
    from daxfs.region import Region

    path = os.path.join(shm_dir, "special.pool")
    daxfs.mkfs(path, "64M")
    with daxfs.mount(path) as fs:
        fs.mknod("/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        ino = fs.lstat("/null").st_ino
    region = Region(path, readonly=True)
    sb = superblock_at(region, 0)
    off = sb.itable_off + ino * INODE_SIZE
    r = unpack_inode(region.buf[off : off + INODE_SIZE], off, ino)
    region.close()
    assert r.rdev == os.makedev(1, 3)
    damaged = InodeRecord(**{**r.__dict__, "size": 5000, "nextents": 1,
                             "inline": [(0, sb.data_off + 64 * BLOCK, 2 * BLOCK)]})  # fmt: skip
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(pack_inode(damaged))
    report = daxfs.check(path)
    assert any("character device holding 5000 bytes" in e for e in report.errors), report
    assert daxfs.check(path, repair=True).ok
    assert daxfs.check(path).ok
    with daxfs.mount(path) as fs:
        st = fs.lstat("/null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        assert (st.st_size, st.st_blocks) == (0, 0)
    region = Region(path)
    try:
        for sb_off in (0, sb.replica_off):
            region.store(sb_off, dataclasses.replace(sb, version=5).pack())
    finally:
        region.close()
    report = daxfs.check(path)
    assert any("unknown file type" in e for e in report.errors), report
