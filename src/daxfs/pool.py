"""pool: mounting a pool, from its superblocks to a FileSystem.

mount() is the public entry: it recovers the journal (read-only mounts
recover through a temporary writable map when they may), upgrades an older
pool's superblocks at a writable mount, and builds the FileSystem's caches
under the exclusive pool lock.  open_pool and mount_region are the same
path for the checker (which decides about orphans itself) and the crash
tester (which brings its own region).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os

from .follow import mount_follower
from .fs import COMMIT_INTERVAL, DEFAULT_TAILS, FileSystem
from .journal import Journal
from .layout import (
    BLOCK,
    INODE_SIZE,
    SUPER,
    VERSION,
    CorruptionError,
    Superblock,
    superblock_at,
    unpack_itable_head,
    unpack_superblock,
    upgrade_interrupted,
)
from .path import oserror, to_str
from .pins import mark_mounted
from .region import Region


def read_superblock(region: Region) -> tuple[Superblock, bool]:
    """The primary superblock, or the replica if the primary is damaged.
    Returns (superblock, primary_ok).  Two valid copies that differ mean one
    was damaged in a way its checksum missed; which one is a judgement the
    checker makes (fsck --repair), not the mount."""
    off = region.size - BLOCK
    replica = superblock_at(region, off)
    try:
        primary = unpack_superblock(region.read(0, BLOCK), 0, region.size)
    except CorruptionError:
        if replica is None:
            raise
        return replica, False
    if replica is not None and region.read(0, SUPER.size) != region.read(off, SUPER.size):
        if upgrade_interrupted(primary, replica):
            return replica, False
        raise CorruptionError(
            "the primary and replica superblocks are both valid but differ "
            "(run `daxfs fsck --repair`)",
            off,
        )
    return primary, True


def upgrade_superblocks(region, sb: Superblock) -> Superblock:
    """Bring an older pool's superblocks to this format version, the replica
    first.  Run at a writable mount, after recovery, under the exclusive pool
    lock.  From version 1: its journal records hold only writes and revokes,
    which version 2 reads alike, so only the version field changes."""
    if sb.version == VERSION and unpack_superblock_version(region, 0) in (None, VERSION):
        return sb  # current (a damaged primary is the checker's to repair)
    new = dataclasses.replace(sb, version=VERSION)
    raw = new.pack()
    for off in (sb.replica_off, 0):
        if region.read(off, SUPER.size) != raw:
            region.store(off, raw)
            region.persist(off, len(raw))
    return new


def unpack_superblock_version(region, off: int) -> int | None:
    """The version of the superblock copy at ``off``, if that copy is valid."""
    copy = superblock_at(region, off)
    return None if copy is None else copy.version


def mount(
    path,
    *,
    readonly: bool = False,
    durability: str | None = None,
    emulate_devdax: bool = False,
    commit: str | None = None,
    commit_interval: float = COMMIT_INTERVAL,
    tails: str = DEFAULT_TAILS,
    follow: bool = False,
    lease_seconds: float | None = None,
) -> FileSystem:
    """Mount the pool at ``path``.  Recovers the journal first (read-only mounts
    of a pool that needs recovery recover through a temporary writable map
    when the file allows it, else raise EROFS).  ``commit`` ("lazy", the
    default, or "sync") and ``commit_interval`` (seconds) choose when changes
    to a pool on a page-cache file become durable (DESIGN.md, "Group commit").
    ``tails``: "trim" (the default) gives back what lies past a large
    file's end in the chunk of its last 2 MiB window (to 4 KiB) at its last
    close, fsync and unmount; "keep" leaves it the whole chunk (DESIGN.md,
    "Tails").  ``follow``: a read-only mount that takes no kernel lock and
    follows a writer from the pool's bytes alone, as a host that shares a
    CXL device with the writer's host must (follow.py); ``lease_seconds``:
    how long the writer keeps what it holds open after it stops (10)."""
    spath = to_str(path)
    if follow:
        kw = {} if lease_seconds is None else {"lease_seconds": lease_seconds}
        return mount_follower(spath, emulate_devdax=emulate_devdax, **kw)
    if lease_seconds is not None:
        raise ValueError("lease_seconds is for followers (follow=True)")
    if readonly and _needs_recovery(spath):
        if not os.access(spath, os.W_OK):
            raise oserror(errno.EROFS, spath)
        mount(spath, durability=durability, emulate_devdax=emulate_devdax).close()
    return open_pool(
        spath,
        readonly=readonly,
        durability=durability,
        emulate_devdax=emulate_devdax,
        reclaim_orphans=not readonly,
        commit=commit,
        commit_interval=commit_interval,
        tails=tails,
    )


def open_pool(
    spath: str,
    *,
    readonly: bool,
    durability: str | None,
    emulate_devdax: bool,
    reclaim_orphans: bool,
    commit: str | None = None,
    commit_interval: float = COMMIT_INTERVAL,
    tails: str = DEFAULT_TAILS,
) -> FileSystem:
    """mount() without the read-only recovery detour; the checker mounts with
    reclaim_orphans=False so that it decides about nameless inodes itself."""
    region = Region(spath, readonly=readonly, durability=durability, emulate_devdax=emulate_devdax)
    return mount_region(
        region,
        readonly=readonly,
        reclaim_orphans=reclaim_orphans,
        commit=commit,
        commit_interval=commit_interval,
        tails=tails,
    )


def mount_region(
    region,
    *,
    readonly: bool = False,
    reclaim_orphans: bool = True,
    commit: str | None = None,
    commit_interval: float = COMMIT_INTERVAL,
    tails: str = DEFAULT_TAILS,
) -> FileSystem:
    """Mount a pool on a region object already made (a Region, or a wrapper with
    the same interface, such as the crash tester's); closes it on failure."""
    try:
        sb, _primary_ok = read_superblock(region)
        fs = FileSystem(
            region,
            sb,
            readonly=readonly,
            commit=commit,
            commit_interval=commit_interval,
            tails=tails,
        )
        with fs._tlock:
            fcntl.flock(region.fd, fcntl.LOCK_SH if readonly else fcntl.LOCK_EX)
            try:
                mark_mounted(region.fd)  # (under the pool lock: logical.py, _may_hold)
                if not readonly:
                    _reserve_metadata(region, sb)
                    fs.journal.recover()
                    fs.sb = sb = upgrade_superblocks(region, sb)
                    _reserve_metadata(region, sb)  # (records may have grown the table)
                    if fs._lazy:
                        fs.journal.mark_boot()  # after recovery read the last one
                fs._seen_seq, fs._seen_pos = fs.journal.refresh(), fs.journal.pos
                fs._reload()  # (changes said and not absorbed are made again)
                if not readonly and fs._lag_bytes:
                    fs._absorb_and_checkpoint()
                if not readonly:
                    fs.leases.join()
                if reclaim_orphans:
                    fs._reclaim_orphans()
            finally:
                fcntl.flock(region.fd, fcntl.LOCK_UN)
        fs._start_committer()
        return fs
    except BaseException:
        region.close()
        raise


def absorb_said(region, sb: Superblock) -> None:
    """Make again the said changes of a recovered journal that no record absorbed,
    absorb them and checkpoint, as a mount does (logical.py), for the
    checker, which holds the pool lock on ``region`` and reads the homes
    itself.  CorruptionError if the pool does not let them be made."""
    fs = FileSystem(region, sb, readonly=False)
    fs._seen_seq, fs._seen_pos = fs.journal.refresh(), fs.journal.pos
    fs._reload()
    fs._absorb_and_checkpoint()


def _reserve_metadata(region, sb: Superblock) -> None:
    # Superblocks, journal and the inode table's part in use get storage
    # before any store (a pool made sparse by an older daxfs, or copied
    # sparse, included).  The rest of the table gets it as the table grows.
    region.reserve(0, _table_in_use_end(region, sb))
    region.reserve(sb.replica_off, BLOCK)


def _table_in_use_end(region, sb: Superblock) -> int:
    if sb.version < 4:
        return sb.data_off
    try:
        limit = unpack_itable_head(region.read(sb.itable_off, INODE_SIZE), 0, sb.inode_count)
    except CorruptionError:
        return sb.data_off  # (the scan says what is wrong)
    return sb.itable_off + limit * INODE_SIZE


def _needs_recovery(path: str) -> bool:
    region = Region(path, readonly=True)
    try:
        sb, _ = read_superblock(region)
        j = Journal(region, sb)
        return any(True for _ in j._records())
    finally:
        region.close()
