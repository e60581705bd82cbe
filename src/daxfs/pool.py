"""pool: mounting a pool, from its superblocks to a FileSystem.

mount() is the public entry: it recovers the journal (read-only mounts
recover through a temporary writable map when they must and may), upgrades
an older pool's superblocks at a writable mount, and builds the
FileSystem's caches under the exclusive pool lock.  open_pool and
mount_region are the same path for the checker (which decides about
orphans itself) and the crash tester (which brings its own region).

A read-only mount of a live pool.  Recovery makes the homes of the
records in the log whole: after a power loss some may not have reached
the media, and a writer that died inside a commit may have stored only
some.  A read-only mount cannot recover in place, so when the log holds
a record that writes homes it recovers through a writable mount first,
which a user without write permission on the pool file cannot (below).
But while a writable mount is live (pins.WRITER_BYTE, an OFD lock the
kernel drops with its process and at every restart) nothing of that can
be pending: that mount recovered the journal when it began, under the
exclusive lock, and every record since was written in this boot, its
homes stored in the shared pages before it was published.  Two
exceptions are looked for, under the shared pool lock (no commit is
being made): a record committed and not published (its writer died
inside commit: the next writer's call finishes it), and lazy records
(group commit), whose homes stay in their writer's private view until
written out, when this mount does not apply records to a private view
of its own.  Either sends the mount the recovering way.  So a reader
mounts a pool a writer is using without writing to it, whoever owns the
file.

Recovered in private.  A read-only mount that must recover and may not
write the file (another user's pool, a file system mounted read-only)
recovers in a private copy-on-write map of the pool instead, as the
checker does: the records' homes are stored in pages of this process
only, and the file is left as it is.  It shows what a writable mount's
recovery would.  Its journal header page is let go after the recovery,
so it reads the file's live word; while that word stays as it was, the
private view stands.  Once it moves, a writable mount has recovered the
file (every writer recovers before anything else), or a live writer has
finished the commit the recovery was for: the mount lets its private
pages go, recovers in private again if the pool still needs it, and
rebuilds its caches (coherence.recover_privately).  Device-dax cannot be
mapped privately: there the mount says EROFS and why.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os

from .coherence import lock_pool, reader_must_recover, recover_privately
from .follow import mount_follower
from .fs import COMMIT_INTERVAL, DEFAULT_TAILS, FileSystem
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
from .path import to_str
from .pins import MOUNTED_BYTE, mark_mounted, mark_writer, pinned_by_others
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
    when the file allows it, else in a private copy of the pool: see the
    module doc).  ``commit`` ("lazy", the
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
    opts = {"commit": commit, "commit_interval": commit_interval, "tails": tails}
    if readonly:
        try:
            return open_pool(
                spath,
                readonly=True,
                durability=durability,
                emulate_devdax=emulate_devdax,
                reclaim_orphans=False,
                refuse_unrecovered=True,
                **opts,
            )
        except Unrecovered:
            if not os.access(spath, os.W_OK, effective_ids=True):  # (as the open will be)
                return _mount_recovered_in_private(spath, emulate_devdax, opts)
            mount(spath, durability=durability, emulate_devdax=emulate_devdax).close()
    return open_pool(
        spath,
        readonly=readonly,
        durability=durability,
        emulate_devdax=emulate_devdax,
        reclaim_orphans=not readonly,
        **opts,
    )


class Unrecovered(Exception):
    """A read-only mount met a journal only a recovery makes whole (see
    "A read-only mount of a live pool"); mount() recovers and mounts again."""


def _mount_recovered_in_private(spath: str, emulate_devdax: bool, opts) -> FileSystem:
    """A read-only mount that recovers the journal in a private copy of the
    pool ("Recovered in private"), for a reader who may not write it; EROFS
    where the backing cannot be mapped privately (device-dax)."""
    try:
        region = Region(spath, private=True, emulate_devdax=emulate_devdax)
    except OSError as e:
        raise OSError(
            errno.EROFS,
            "the pool's journal needs recovery (its last writer stopped without "
            "unmounting), which this backing cannot do in private: mount it "
            "writable once, as a user who may write it",
            spath,
        ) from e
    return mount_region(
        region, readonly=True, reclaim_orphans=False, recover_in_private=True, **opts
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
    refuse_unrecovered: bool = False,
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
        refuse_unrecovered=refuse_unrecovered,
    )


def mount_region(
    region,
    *,
    readonly: bool = False,
    reclaim_orphans: bool = True,
    commit: str | None = None,
    commit_interval: float = COMMIT_INTERVAL,
    tails: str = DEFAULT_TAILS,
    refuse_unrecovered: bool = False,
    recover_in_private: bool = False,
) -> FileSystem:
    """Mount a pool on a region object already made (a Region, or a wrapper with
    the same interface, such as the crash tester's); closes it on failure.
    ``refuse_unrecovered`` (read-only): raise Unrecovered rather than mount
    a journal that needs recovery first.  ``recover_in_private`` (read-only,
    on a private region): recover it in the private view ("Recovered in
    private")."""
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
            lock_pool(region.fd, fcntl.LOCK_SH if readonly else fcntl.LOCK_EX)
            try:
                mark_mounted(region.fd)  # (under the pool lock: logical.py, _may_hold)
                if readonly and refuse_unrecovered and reader_must_recover(fs.journal, region):
                    raise Unrecovered
                if not readonly:
                    _reserve_metadata(region, sb)
                    fs.journal.recover()
                    if not pinned_by_others(region.fd, MOUNTED_BYTE, 1):
                        # (Not under another live mount: one of an older
                        # daxfs would misread what the new version writes.)
                        fs.sb = sb = upgrade_superblocks(region, sb)
                    _reserve_metadata(region, sb)  # (records may have grown the table)
                    if fs._lazy:
                        fs.journal.mark_boot()  # after recovery read the last one
                    mark_writer(region.fd)
                if readonly and recover_in_private:
                    recover_privately(fs)
                else:
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
