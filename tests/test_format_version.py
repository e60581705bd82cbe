"""Format versions 2 (claim and touch entries in journal records, SPEC.md),
3 (lazy records and the durable mark), 4 (the inode table's header), 5
(a record's crc covers its magic), 9 (the rewrite entry) and 10 (a create
entry names its directory block): an older pool is read as it is and
upgraded by its first writable mount,
an interrupted upgrade is completed (by the mount or by fsck), and a pool
from a newer daxfs is refused with a message that says so."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

import daxfs
from daxfs import layout as L
from daxfs.journal import Journal
from daxfs.pool import read_superblock
from daxfs.region import Region


def superblocks(path: str) -> tuple[L.Superblock | None, L.Superblock | None]:
    region = Region(path, readonly=True)
    try:
        return L.superblock_at(region, 0), L.superblock_at(region, region.size - L.BLOCK)
    finally:
        region.close()


def set_versions(path: str, primary: int | None, replica: int | None) -> None:
    """Rewrite the superblock copies with these version numbers (checksums
    made good): what an older or newer daxfs would have written."""
    region = Region(path)
    try:
        sb, _ = read_superblock(region)
        for off, version in ((0, primary), (sb.replica_off, replica)):
            if version is not None:
                region.store(off, dataclasses.replace(sb, version=version).pack())
                region.persist(off, L.SUPER.size)
        if min(v for v in (primary, replica) if v is not None) < 4:
            # Before version 4 the whole table was written at mkfs and slot 0
            # was zero (this daxfs's mkfs leaves the slots past the header's
            # limit unwritten: zero, in a new file).
            region.zero(sb.itable_off, L.INODE_SIZE)
            region.persist(sb.itable_off, L.INODE_SIZE)
    finally:
        region.close()


def commit_slot_record(
    path: str, name: str, mode: int | None = None, *, sealed=lambda record: record
) -> None:
    """Leave a committed record that writes the file's inode slot (as it is,
    or with its permission bits set to ``mode``) in the journal, as a daxfs
    killed after its commit point would; the next mount must recover it.
    ``sealed``: how the record's bytes are made (as this daxfs does)."""
    with daxfs.mount(path) as fs:
        ino = fs.stat(name).st_ino
        slot = fs.inodes.slot_off(ino)
        image = fs.region.read(slot, L.INODE_SIZE)
    if mode is not None:
        old = L.unpack_inode(image, 0, ino)
        image = L.pack_inode(dataclasses.replace(old, mode=(old.mode & ~0o7777) | mode))
    region = Region(path)
    try:
        sb, _ = read_superblock(region)
        j = Journal(region, sb)
        j.recover()
        record = sealed(L.pack_txn(j.next_seq, [(slot, bytes(image))]))
        region.store(sb.journal_off + j.pos, record)
        region.persist(sb.journal_off + j.pos, len(record))
    finally:
        region.close()


def commit_v1_record(path: str, name: str) -> None:
    """A version-1 record (writes only: the file's inode slot as it is), left
    as a version-1 daxfs killed after its commit point would; the upgrading
    mount must recover it first."""
    commit_slot_record(path, name)


@pytest.fixture
def v1_pool(pool_path: str) -> str:
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/a/b")
        with fs.open("/a/b/f", "wb") as f:
            f.write(b"version one" * 500)
    set_versions(pool_path, 1, 1)
    return pool_path


def test_a_version_1_pool_mounts_read_only_as_it_is(v1_pool):
    with daxfs.mount(v1_pool, readonly=True) as fs:
        assert fs.info()["format_version"] == 1
        with fs.open("/a/b/f", "rb") as f:
            assert f.read() == b"version one" * 500
    primary, replica = superblocks(v1_pool)
    assert primary.version == replica.version == 1


def test_the_first_writable_mount_upgrades_after_recovering_v1_records(v1_pool):
    commit_v1_record(v1_pool, "/a/b/f")  # a v1 record left in the journal
    set_versions(v1_pool, 1, 1)  # (recovery above ran under this daxfs)
    with daxfs.mount(v1_pool) as fs:
        assert fs.info()["format_version"] == L.VERSION
        fs.mkdir("/new")
        with fs.open("/a/b/f", "rb") as f:
            assert f.read() == b"version one" * 500
    primary, replica = superblocks(v1_pool)
    assert primary.version == replica.version == L.VERSION
    report = daxfs.check(v1_pool)
    assert report.ok, report.errors


def test_an_interrupted_upgrade_is_completed_by_the_mount(v1_pool):
    set_versions(v1_pool, 1, L.VERSION)  # replica first: the crash came before the primary
    with daxfs.mount(v1_pool, readonly=True) as fs:
        assert fs.info()["format_version"] == L.VERSION
        assert fs.listdir("/a/b") == ["f"]
    with daxfs.mount(v1_pool) as fs:
        fs.mkdir("/after")
    primary, replica = superblocks(v1_pool)
    assert primary.version == replica.version == L.VERSION


def test_fsck_completes_an_interrupted_upgrade(v1_pool):
    set_versions(v1_pool, 1, L.VERSION)
    report = daxfs.check(v1_pool)
    assert not report.ok and any("upgrade" in e for e in report.errors)
    report = daxfs.check(v1_pool, repair=True)
    assert report.ok, report.remaining
    primary, replica = superblocks(v1_pool)
    assert primary.version == replica.version == L.VERSION


def test_a_version_8_pool_is_read_as_it_is_and_says_rewrites_once_upgraded(pool_path):
    """Version 9 added the rewrite entry: a version 8 pool holds none, so it
    reads alike; its first writable mount upgrades it, and only then does
    a file emptied or rewritten whole get said as a rewrite."""
    with daxfs.mount(pool_path) as fs:
        fs.write_bytes("/f", b"x" * 5000)
        fs.unlink("/f")  # (a said unlink left for the upgrading mount to make again)
        fs.write_bytes("/g", b"g" * 5000)
    set_versions(pool_path, 8, 8)
    with daxfs.mount(pool_path, readonly=True) as fs:
        assert fs.info()["format_version"] == 8 and fs.read_bytes("/g") == b"g" * 5000
    with daxfs.mount(pool_path) as fs:
        assert fs.info()["format_version"] == L.VERSION
        fs.write_bytes("/g", b"h" * 3000)
        assert fs.journal.log_records()[-1][1].rewrites
        assert fs.listdir("/") == ["g"]
    with daxfs.mount(pool_path) as fs:
        assert fs.read_bytes("/g") == b"h" * 3000
    assert daxfs.check(pool_path).ok


SAY_AND_DIE = """
import os, sys, daxfs
fs = daxfs.mount(sys.argv[1])
for i in range(int(sys.argv[2])):
    fs.write_bytes(f"/d/n{i}", b"%d" % i * 100)
os._exit(0)  # (killed, as it were: the creates said, none absorbed)
"""


def as_version_9_writer(path: str) -> int:
    """Seal again every pending create record of the pool's journal naming
    no directory block, as a version 9 writer wrote them; how many."""
    region = Region(path)
    try:
        sb, _ = read_superblock(region)
        journal = Journal(region, sb)
        journal.refresh()
        done = 0
        for seq, off, rec in journal._committed():
            if rec.creates:
                creates = [(*c[:5], -1) for c in rec.creates]
                raw = L.pack_txn(seq, [], rec.revokes, rec.claims, creates=creates)
                assert len(raw) == rec.next_pos - off
                region.store(off, raw)
                done += 1
        return done
    finally:
        region.close()


def test_a_version_9_pools_pending_creates_are_made_again_in_a_block_with_room(pool_path):
    """A version 9 writer's creates name no directory block: the mount that
    makes them again puts each in the first block with room (any_room),
    upgrades the pool, and from then on its creates name their block."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        fs.write_bytes("/d/first", b"1")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", SAY_AND_DIE, pool_path, "30"], check=True, env=env)
    assert as_version_9_writer(pool_path) == 30
    set_versions(pool_path, 9, 9)
    with daxfs.mount(pool_path) as fs:
        assert fs.info()["format_version"] == L.VERSION == 10
        for i in range(30):
            assert fs.read_bytes(f"/d/n{i}") == b"%d" % i * 100
        fs.write_bytes("/d/later", b"L")
        ((*_rest, block),) = fs.journal.log_records()[-1][1].creates
        assert block == fs._dir(fs.stat("/d").st_ino).entries["later"][2]
    assert daxfs.check(pool_path).ok


def test_a_pool_is_not_upgraded_under_another_live_mount(pool_path):
    """A live mount of an older daxfs would misread the new version's
    records: a writable mount that finds another mount's mark
    (pins.MOUNTED_BYTE) leaves the version as it is and writes what that
    version reads (a create names no block); the next mount alone
    upgrades the pool."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        fs.write_bytes("/d/first", b"1")
    set_versions(pool_path, 9, 9)
    with daxfs.mount(pool_path, readonly=True) as other:
        with daxfs.mount(pool_path) as fs:
            assert fs.info()["format_version"] == 9
            fs.write_bytes("/d/new", b"n" * 100)
            ((*_rest, block),) = fs.journal.log_records()[-1][1].creates
            assert block == -1
        assert other.read_bytes("/d/new") == b"n" * 100
    assert [sb.version for sb in superblocks(pool_path)] == [9, 9]
    with daxfs.mount(pool_path) as fs:
        assert fs.info()["format_version"] == L.VERSION
        assert fs.read_bytes("/d/new") == b"n" * 100
    assert daxfs.check(pool_path).ok


def test_a_pool_from_a_newer_daxfs_is_refused_clearly(pool_path):
    set_versions(pool_path, L.VERSION + 1, L.VERSION + 1)
    with pytest.raises(daxfs.CorruptionError, match=f"version {L.VERSION + 1}.*newer daxfs"):
        daxfs.mount(pool_path)
    cli = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "daxfs"), "ls", f"{pool_path}:/"],
        capture_output=True,
        text=True,
    )
    assert cli.returncode != 0
    assert "newer daxfs" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


def test_version_2_records_carry_claims_and_touches(pool_path):
    """What catching up reads: a create names the space it took and the
    directory whose blocks it changed."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        seq, pos = fs.journal.next_seq, fs.journal.pos
        with fs.open("/d/f", "xb") as f:
            f.write(b"z" * 10000)
        d_ino = fs.stat("/d").st_ino
        recs = fs.journal.records_between(seq, pos, fs.journal.next_seq)
        f_extents = fs.iomap("/d/f")
    assert any(d_ino in r.touches for r in recs)
    claimed = sorted(c for r in recs for c in r.claims)
    mapped = sorted((e.device_offset, e.length) for e in f_extents if e.kind == "mapped")
    assert all(any(c <= dev and dev + n <= c + cn for c, cn in claimed) for dev, n in mapped), (
        claimed,
        mapped,
    )


def without_magic_in_crc(record: bytes) -> bytes:
    """The record as versions 3 and 4 sealed it: its crc over the bytes after
    the crc field only."""
    return record[:4] + L.crc32c(record[8:]).to_bytes(4, "little") + record[8:]


def test_a_version_4_record_whose_crc_leaves_the_magic_out_is_recovered(pool_path):
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"four")
        fs.chmod("/f", 0o644)
    commit_slot_record(pool_path, "/f", 0o600, sealed=without_magic_in_crc)
    set_versions(pool_path, 4, 4)  # (the mount above wrote the current version)
    with daxfs.mount(pool_path) as fs:
        assert fs.stat("/f").st_mode & 0o7777 == 0o600
        assert fs.info()["format_version"] == L.VERSION


def test_a_version_5_pool_takes_no_record_whose_crc_leaves_the_magic_out(pool_path):
    """From version 5 the magic is checked with the rest: a record sealed the
    old way is no record (the journal ends before it), as a record whose
    magic a flipped bit turned from DXTX into DXTL is."""
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"five")
        fs.chmod("/f", 0o644)
    commit_slot_record(pool_path, "/f", 0o600, sealed=without_magic_in_crc)
    with daxfs.mount(pool_path) as fs:
        assert fs.stat("/f").st_mode & 0o7777 == 0o644
    commit_slot_record(pool_path, "/f", 0o640)  # sealed as version 5 does: taken
    with daxfs.mount(pool_path) as fs:
        assert fs.stat("/f").st_mode & 0o7777 == 0o640
