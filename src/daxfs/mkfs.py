"""mkfs: format a region as an empty daxfs pool.

Order matters for a crash during mkfs: everything else is written and
persisted first, the replica superblock next, the primary superblock last,
so a pool is either fully formatted or not recognised at all.
"""

from __future__ import annotations

import os
import stat
import time
import uuid as uuidlib

from .inode import Inode, InodeTable
from .journal import Journal
from .layout import (
    BLOCK,
    INODE_SIZE,
    ITABLE_GROW,
    SUPER_MAGIC,
    VERSION,
    Superblock,
    pack_inode,
    pack_itable_head,
    plan_geometry,
)
from .path import ROOT_INO, to_str
from .region import Region, create_pool_file
from .units import parse_size

ALLOCATOR_CHOICES = ("hugepage", "naive")


def mkfs(
    path,
    size: int | str | None = None,
    *,
    force: bool = False,
    allocator: str = "hugepage",
    inodes: int | None = None,
    emulate_devdax: bool = False,
) -> Superblock:
    """Create an empty pool at ``path`` (a file, created or resized to ``size``,
    or a device-dax device, which keeps its own size).  Refuses to overwrite an
    existing pool unless ``force``."""
    spath = to_str(path)
    if allocator not in ALLOCATOR_CHOICES:
        raise ValueError(f"unknown allocator {allocator!r}; choose one of {ALLOCATOR_CHOICES}")
    is_device = os.path.exists(spath) and stat.S_ISCHR(os.stat(spath).st_mode)
    created = False
    if not is_device:
        if size is None:
            raise ValueError("a size is needed to create a pool file (e.g. '4G')")
        nbytes = parse_size(size)
        plan_geometry(nbytes, inodes)  # too small: refuse before touching the file
        created = not os.path.exists(spath)
        create_pool_file(spath, nbytes, force=force)
    try:
        region = Region(spath, emulate_devdax=emulate_devdax)
        try:
            if is_device and not force and region.read(0, len(SUPER_MAGIC)) == SUPER_MAGIC:
                raise FileExistsError(17, "device holds a daxfs pool (use force=True)", spath)
            return _format(region, allocator, inodes)
        finally:
            region.close()
    except BaseException:
        if created:
            os.unlink(spath)  # leave nothing behind that blocks the next mkfs
        raise


def _format(region: Region, allocator: str, inodes: int | None) -> Superblock:
    geo = plan_geometry(region.size, inodes)
    # The table's first ITABLE_GROW slots are written; the rest is neither
    # written nor read until the table grows into it (InodeTable.grow).
    limit = min(geo["inode_count"], ITABLE_GROW)
    in_use = geo["itable_off"] + limit * INODE_SIZE
    region.reserve(0, in_use)  # a backing too full fails here, cleanly
    region.reserve(geo["replica_off"], BLOCK)
    sb = Superblock(
        version=VERSION,
        features=0,
        allocator=allocator,
        uuid=uuidlib.uuid4().bytes,
        root_ino=ROOT_INO,
        created_ns=time.time_ns(),
        **geo,
    )
    region.zero(0, BLOCK)
    region.zero(sb.replica_off, BLOCK)
    region.persist(0, BLOCK)
    region.persist(sb.replica_off, BLOCK)
    region.zero(sb.itable_off, limit * INODE_SIZE)
    region.store(sb.itable_off, pack_itable_head(limit))
    Journal(region, sb).format()
    _write_root(region, sb)
    region.persist(sb.itable_off, limit * INODE_SIZE)
    raw = sb.pack()
    region.store(sb.replica_off, raw)
    region.persist(sb.replica_off, len(raw))
    region.store(0, raw)
    region.persist(0, len(raw))
    return sb


def _write_root(region: Region, sb: Superblock) -> None:
    now = time.time_ns()
    root = Inode(
        ROOT_INO,
        stat.S_IFDIR | 0o755,
        nlink=2,
        atime=now,
        mtime=now,
        ctime=now,
        btime=now,
        parent=ROOT_INO,
        uid=os.getuid(),
        gid=os.getgid(),
    )
    region.store(InodeTable(region, sb).slot_off(ROOT_INO), pack_inode(root.record(0)))
