"""check: fsck as a library; the CLI's fsck command is a thin wrapper.

check(path, repair=False) -> Report verifies, in order (each step trusts
only what the previous ones verified):

  1. superblocks   primary and replica parse, check and agree
  2. journal       a valid header slot; committed records replay cleanly
  3. inodes        every slot is zero or a valid inode (magic, checksum,
                   self-number, type, extents inside the data area, extent
                   block chains), and no block is owned twice
  4. directories   every block of every directory parses and checks
  5. namespace     entries name live inodes of the right type with valid,
                   unique names; every directory has one parent and the
                   right parent field; everything is reachable from the
                   root; link counts equal references
  6. space         free space is a recount of what the inodes own (daxfs
                   stores no allocation bitmap, so it cannot leak)

Without repair the pool is mapped copy-on-write, so even journal recovery
happens in private memory and nothing reaches the media.  With repair,
fixes go through the journal where the journal is usable (atomic), damaged
inodes and directory blocks are cleared, and unreachable inodes are linked
into /lost+found; the pool is then checked again, and ``remaining`` lists
what that second check still found.

Namespace repair converges in one pass, whatever the entries say:

  * a directory keeps one name: the first (in directory, block, position
    order) in the directory its parent field names, else its first; the
    others are removed, and the parent field is then set to match (so an
    adoption, which sets the parent to lost+found, sticks);
  * what the root does not reach is adopted: each inode named by no entry,
    and one member of each cycle of directories naming each other (its name
    inside the cycle is removed); everything else unreachable hangs below
    an adopted inode, so its link counts and parent fields are fixed in
    the same pass, counting the name lost+found is about to give;
  * adopted inodes are named #INO in the first of lost+found, lost+found.1,
    ... that is a directory (a symlink is never followed) or absent, or
    #INO.1, #INO.2, ... when that name is taken.

Every step is linear or n log n in what it reads (entries sorted once,
walks are loops, kept extents in a sorted map): a pool is input, and may be
built to make a checker hang.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import stat
import struct
from dataclasses import dataclass, field

import numpy as np
from sortedcontainers import SortedDict

from .coherence import lock_pool
from .inode import INODE_DTYPE, Inode, InodeTable, symlink_target
from .journal import Journal, Transaction
from .layout import (
    BLOCK,
    DIRBLOCK_HEAD,
    EXTENTS_PER_BLOCK,
    FILE_TYPES,
    INLINE_EXTENTS,
    INODE_MAGIC,
    INODE_SIZE,
    JHEADER,
    JSLOT_OFFSETS,
    SLOTS_PER_PAGE,
    SPECIAL_TYPES,
    SUPER,
    CorruptionError,
    Superblock,
    dirblock_seal,
    ftype_of,
    pack_extblock,
    pack_inode,
    pack_itable_head,
    pack_jheader,
    parse_dirblock,
    superblock_at,
    unpack_jheader,
    upgrade_interrupted,
    valid_name,
)
from .leases import clear_slot, stale_slots
from .path import ROOT_INO, to_str
from .region import Region

VALID_TYPES = FILE_TYPES + SPECIAL_TYPES  # (special ones from version 6)
LOST_FOUND = "lost+found"


@dataclass
class Report:
    """What a check found.  ``ok``: no error is left in the pool."""

    ok: bool = True
    errors: list[str] = field(default_factory=list)  # problems found
    repaired: list[str] = field(default_factory=list)  # fixes applied
    remaining: list[str] = field(default_factory=list)  # problems still there afterwards
    notes: list[str] = field(default_factory=list)  # worth knowing, not errors
    stats: dict[str, int] = field(default_factory=dict)


REPAIR_PASSES = 3  # a repair can expose more to fix (an inode cleared leaves a name dangling)
ADOPT_BATCH = 64  # adoptions per transaction: any number of them fits any journal


def check(
    path, repair: bool = False, *, durability: str | None = None, emulate_devdax: bool = False
) -> Report:
    """Check the pool at ``path``; with ``repair``, fix what can be fixed.

    ``errors`` lists what the (first) pass found, ``repaired`` the fixes made,
    ``remaining`` what a final read-only check still finds; ``ok`` is True
    when nothing remains."""
    args = (to_str(path), durability, emulate_devdax)
    report = _Checker(args[0], repair, *args[1:]).run()
    report.remaining = list(report.errors)
    if repair and report.errors:
        for _ in range(REPAIR_PASSES - 1):
            if not _Checker(args[0], False, *args[1:]).run().errors:
                break
            report.repaired += _Checker(args[0], True, *args[1:]).run().repaired
        report.remaining = _Checker(args[0], False, *args[1:]).run().errors
    report.ok = not report.remaining
    return report


def check_region(region) -> Report:
    """Check, without repairing, a pool held by a region object (the crash
    tester's in-memory images).  The region's journal is recovered in place."""
    try:
        report = _Checker(region.path, False, None, False).run(region)
    finally:
        region.close()  # also drops the lock the checker took on its descriptor
    report.remaining = list(report.errors)
    report.ok = not report.remaining
    return report


@dataclass
class _Entry:
    dir_ino: int
    dev: int  # device offset of the directory block
    pos: int  # position of the entry in the block
    ino: int
    ftype: int
    raw: bytes


class _Checker:
    def __init__(self, path: str, repair: bool, durability: str | None, emulate_devdax: bool):
        self.path, self.repair = path, repair
        self.durability, self.emulate_devdax = durability, emulate_devdax
        self.report = Report()
        self.inodes: dict[int, Inode] = {}
        self.entries: list[_Entry] = []
        self.images: dict[int, bytearray] = {}  # directory block images being changed
        self._dirty: dict[int, int] = {}  # device offset of a changed block -> its directory
        self.journal: Journal | None = None
        self._lost: list[int] = []
        self._orphans: list[int] = []  # nameless inodes (unlinked while open or mapped)

    # -- driver ------------------------------------------------------------
    def run(self, region=None) -> Report:
        """Check (and repair) the pool; ``region``: check that region object
        instead of opening the path (its journal is recovered in place)."""
        own = region is None
        if own:
            region = Region(
                self.path,
                private=not self.repair,
                durability=self.durability,
                emulate_devdax=self.emulate_devdax,
            )
        self.region = region
        try:
            lock_pool(region.fd, fcntl.LOCK_EX if self.repair else fcntl.LOCK_SH)
            sb = self._superblocks()
            if sb is not None:
                self.sb, self.table = sb, InodeTable(region, sb)
                self._journal()
                self._process_table()
                self._inode_slots()
                self._ownership()
                self._directories()
                self._namespace()
            if self.repair and self.journal is not None:
                if self.report.repaired:
                    # Some repairs store in place, with no record that a live
                    # mount could catch up from (coherence.py): skip a
                    # sequence number, which no record will ever carry, so
                    # every live mount finds its next record missing and
                    # rebuilds its caches from the repaired pool.
                    self.journal.next_seq += 1
                self.journal.checkpoint()  # leave no repair transaction to replay
        finally:
            if own:
                region.close()
        if self.repair and self._lost:
            self._link_lost()
        if self.repair and self._orphans:
            self._reclaim_orphans()
        return self.report

    def error(self, msg: str) -> None:
        self.report.errors.append(msg)

    def fixed(self, msg: str) -> None:
        self.report.repaired.append(msg)

    # -- 1. superblocks ----------------------------------------------------
    def _superblocks(self) -> Superblock | None:
        r, replica_off = self.region, self.region.size - BLOCK
        primary = superblock_at(r, 0)
        replica = superblock_at(r, replica_off)
        if primary is None and replica is None:
            self.error("both superblocks are damaged: not repairable")
            return None
        if primary is None:
            self.error("primary superblock damaged (replica is intact)")
            self._copy(replica_off, 0, "primary superblock restored from the replica")
            return replica
        same = r.read(0, SUPER.size) == r.read(replica_off, SUPER.size)
        if replica is not None and not same and upgrade_interrupted(primary, replica):
            self.error(f"format upgrade to version {replica.version} interrupted")
            self._copy(replica_off, 0, "primary superblock upgraded as the replica was")
            return replica
        if replica is not None and not same and self._fit(replica) > self._fit(primary):
            # Both check but disagree: one is damaged in a way its crc missed.
            # Trust the one under which the inode table holds more live inodes
            # (a wrong inode_count or journal_len hides or shifts the table).
            self.error("primary superblock differs from the replica and fits the pool worse")
            self._copy(replica_off, 0, "primary superblock restored from the replica")
            return replica
        if replica is None or not same:
            self.error("replica superblock damaged or different from the primary")
            self._copy(0, replica_off, "replica superblock rewritten from the primary")
        return primary

    def _fit(self, sb: Superblock) -> int:
        """How many slots of the inode table ``sb`` describes hold an inode
        that names its own slot."""
        table = np.frombuffer(
            self.region.buf, dtype=INODE_DTYPE, count=sb.inode_count, offset=sb.itable_off
        )
        slots = np.arange(sb.inode_count, dtype=np.uint64)
        n = int(((table["magic"] == INODE_MAGIC) & (table["ino"] == slots)).sum())
        del table
        return n

    def _copy(self, src: int, dst: int, msg: str) -> None:
        if self.repair:
            self.region.store(dst, self.region.read(src, SUPER.size))
            self.region.persist(dst, SUPER.size)
            self.fixed(msg)

    # -- 2. journal --------------------------------------------------------
    def _journal(self) -> None:
        j = Journal(self.region, self.sb)
        self._header_slots(j)  # before recovery, whose checkpoint may rewrite one
        try:
            replayed = j.recover()
        except CorruptionError as e:
            self.error(f"journal: {e.strerror}")
            if self.repair:
                self._reset_journal(j)
                replayed = 0
            else:
                return
        if replayed:
            self.report.notes.append(f"journal: {replayed} committed transaction(s) replayed")
        if j.unabsorbed:
            j = self._absorb_said(j)
        self.journal = j

    def _absorb_said(self, j: Journal) -> Journal:
        """Changes the journal says and no record absorbed (logical.py): the
        homes lag them, so they are made again and absorbed as a mount
        would, and the pool checked as committed.  A pool too damaged for
        that is checked as of before them; repair then drops them (the
        files they unlinked stay, those they made go: nothing else touched
        their blocks, since nothing that writes came after)."""
        from .pool import absorb_said

        n = j.unabsorbed
        try:
            absorb_said(self.region, self.sb)
        except CorruptionError as e:
            self.error(f"journal: {n} record(s) of said changes cannot be made again: {e.strerror}")
            if self.repair:
                j.unabsorbed = 0
                j.checkpoint()
                self.fixed(f"journal: {n} record(s) of said changes dropped")
            return j
        self.report.notes.append(f"journal: {n} record(s) of said changes made again and absorbed")
        j = Journal(self.region, self.sb)
        j.recover()
        return j

    def _header_slots(self, j: Journal) -> None:
        """A written slot that does not check is what a torn checkpoint leaves
        (the other slot serves, so the pool is consistent): a note, and with
        repair the closing checkpoint rewrites it (it writes the slot not in use)."""
        for i, o in enumerate(JSLOT_OFFSETS):
            raw = self.region.read(j.header_off + o, JHEADER.size)
            if any(raw) and unpack_jheader(raw) is None:
                self.report.notes.append(
                    f"journal header slot {i} damaged (a torn checkpoint?); slot {1 - i} in use"
                )
                if self.repair:
                    self.fixed(f"journal header slot {i} rewritten")

    def _process_table(self) -> None:
        """Slots of the process table (leases.py) that no live process holds.
        They are hints, never errors: a crash leaves every slot so."""
        for i, why in stale_slots(self.region):
            self.report.notes.append(f"process table slot {i}: {why}")
            if self.repair:
                clear_slot(self.region, i)
                self.fixed(f"process table slot {i} cleared")

    def _reset_journal(self, j: Journal) -> None:
        """Start the journal afresh, past any sequence number left in its area."""
        seq = 1 << 40
        r = self.region
        r.store(j.header_off, pack_jheader(seq))
        r.zero(j.header_off + 512, 512)
        r.zero(j.start, BLOCK)
        r.persist(j.header_off, BLOCK)
        r.persist(j.start, BLOCK)
        j.recover()
        self.fixed("journal reset")

    # -- 3. inode slots ----------------------------------------------------
    def _table_limit(self) -> int:
        """The table's in-use limit (version 4: slot 0's header).  A damaged
        header is rebuilt to cover every slot that is not zero: the table is
        then read whole, once."""
        try:
            self.table.limit = self.table.read_limit()
            return self.table.limit
        except CorruptionError as e:
            self.error(str(e.strerror))
        if self.sb.version < 4:
            self._clear_slot(0)  # (slot 0 of an older pool is zero)
            return self.sb.inode_count
        limit = self._limit_covering_slots()
        if self.repair:
            txn = Transaction()
            txn.write(self.table.slot_off(0), pack_itable_head(limit))
            self._commit(txn)
            self.fixed(f"inode table header rewritten (limit {limit})")
        self.table.limit = limit
        return limit

    def _limit_covering_slots(self) -> int:
        sb = self.sb
        table = np.frombuffer(
            self.region.buf, dtype=np.uint8, count=sb.inode_count * INODE_SIZE, offset=sb.itable_off
        ).reshape(-1, INODE_SIZE)
        nonzero = np.flatnonzero(table[1:].any(axis=1))
        del table
        last = int(nonzero[-1]) + 2 if len(nonzero) else 2
        return min(sb.inode_count, -(-last // SLOTS_PER_PAGE) * SLOTS_PER_PAGE)

    def _inode_slots(self) -> None:
        limit = self._table_limit()
        table = np.frombuffer(
            self.region.buf, dtype=INODE_DTYPE, count=limit, offset=self.sb.itable_off
        )
        nonzero = np.flatnonzero(table[1:].view(np.uint8).reshape(-1, INODE_SIZE).any(axis=1)) + 1
        magic = table["magic"][nonzero]
        del table
        for ino, m in zip(nonzero.tolist(), magic.tolist(), strict=True):
            if m != INODE_MAGIC:
                self.error(f"inode slot {ino}: not a valid inode and not free")
                self._clear_slot(ino)
                continue
            self._load_inode(ino)
        root = self.inodes.get(ROOT_INO)
        if root is None or not root.is_dir:
            self.error("root directory missing or not a directory")
            if self.repair:
                self._new_root()

    def _load_inode(self, ino: int) -> None:
        try:
            inode = self.table._load(ino)
        except CorruptionError as e:
            self.error(str(e.strerror))
            self._clear_slot(ino)
            return
        kind = stat.S_IFMT(inode.mode)
        if kind not in VALID_TYPES or (kind in SPECIAL_TYPES and self.sb.version < 6):
            self.error(f"inode {ino}: unknown file type {inode.mode:o}")
            self._clear_slot(ino)
            return
        if kind in SPECIAL_TYPES and (inode.size or inode.extents or inode.ext_blocks):
            self.error(f"inode {ino}: a {_special_name(kind)} holding {inode.size} bytes")
            inode.size, inode.extents, inode.ext_blocks, inode.ext_images = 0, [], [], []
            inode.generation += 1
            inode.staged_generation = -1
            self._fix_inode(inode, f"inode {ino}: the {_special_name(kind)}'s bytes dropped")
        if stat.S_ISLNK(inode.mode):
            try:
                symlink_target(inode, self.region.buf)
            except CorruptionError as e:
                self.error(str(e.strerror))
                self._clear_slot(ino)
                return
        if inode.mode >> 16:
            self.error(f"inode {ino}: mode {inode.mode:#x} has bits outside st_mode")
            inode.mode &= 0o177777
            self._fix_inode(inode, f"inode {ino}: mode bits outside st_mode cleared")
        elif not self._canonical(inode):
            self.error(f"inode {ino}: bytes the format defines as zero are not zero")
            inode.staged_generation = -1  # rewrite the extent blocks too
            self._fix_inode(inode, f"inode {ino}: unused fields zeroed")
        self.inodes[ino] = inode

    def _canonical(self, inode: Inode) -> bool:
        """The slot and extent blocks are exactly what daxfs writes for this
        inode: flags, reserved words, unused inline extents, ext_block without
        a chain, the last block's next pointer and all unused bytes are zero."""
        blocks = inode.ext_blocks
        if pack_inode(inode.record(blocks[0] if blocks else 0)) != self.region.read(
            self.table.slot_off(inode.ino), INODE_SIZE
        ):
            return False
        for i in range(len(blocks)):
            start = INLINE_EXTENTS + i * EXTENTS_PER_BLOCK
            group = inode.extents[start : start + EXTENTS_PER_BLOCK]  # not [start:]: quadratic
            nxt = blocks[i + 1] if i + 1 < len(blocks) else 0
            if pack_extblock(inode.ino, nxt, group) != inode.ext_images[i]:
                return False
        return True

    def _clear_slot(self, ino: int) -> None:
        if self.repair:
            txn = Transaction()
            txn.write(self.table.slot_off(ino), bytes(INODE_SIZE))
            self._commit(txn)
            self.fixed(f"inode slot {ino} cleared")

    def _new_root(self) -> None:
        root = Inode(ROOT_INO, stat.S_IFDIR | 0o755, nlink=2, parent=ROOT_INO)
        self.inodes[ROOT_INO] = root
        self._save_inode(root)
        self.fixed("empty root directory recreated")

    def _commit(self, txn: Transaction) -> None:
        if self.journal is not None:
            try:
                self.journal.commit(txn)
                return
            except OSError as e:
                # Too large for the journal (an inode's whole extent chain
                # rewritten): written in place like the journal-less case,
                # after a checkpoint, so no older record replays over it.
                if e.errno != errno.ENOSPC:
                    raise
                self.journal.checkpoint()
        for off, data in txn.writes:
            self.region.store(off, data)
            self.region.persist(off, len(data))

    def _save_inode(self, inode: Inode) -> None:
        txn = Transaction()

        def no_alloc(_txn: Transaction) -> int:
            raise AssertionError("repairs never add extent blocks")

        self.table.stage(inode, txn, no_alloc, lambda _t, _d: None)
        self._commit(txn)

    # -- ownership ---------------------------------------------------------
    def _ownership(self) -> None:
        """Each block has one owner: an extent over blocks already owned is
        dropped (lowest inode number first; in memory even without repair, so
        no later step reads a block twice)."""
        sb = self.sb
        owned = SortedDict()  # first block -> end block of every owned run; disjoint
        # Extent blocks first: each names its owner, so no two inodes load the
        # same one, and an extent over any of them (its own inode's included)
        # is the overlap, dropped below.
        for ino in sorted(self.inodes):
            for blk in self.inodes[ino].ext_blocks:
                first = (blk - sb.data_off) // BLOCK
                owned[first] = first + 1
        for ino in sorted(self.inodes):
            inode = self.inodes[ino]
            keep = []
            for ext in inode.extents:
                first = (ext[1] - sb.data_off) // BLOCK
                if _overlaps(owned, first, first + ext[2] // BLOCK):
                    self.error(f"inode {ino}: extent at {ext[1]:#x} overlaps another owner")
                    continue
                owned[first] = first + ext[2] // BLOCK
                keep.append(ext)
            if len(keep) < len(inode.extents):
                inode.extents = keep
                inode.generation += 1
                self._fix_inode(inode, f"inode {ino}: overlapping extents removed")
        used = sum(end - first for first, end in owned.items())
        self.report.stats.update(
            data_blocks=sb.data_blocks,
            used_blocks=used,
            free_blocks=sb.data_blocks - used,
            inodes=len(self.inodes),
        )

    # -- 4. directory blocks -----------------------------------------------
    def _directories(self) -> None:
        for ino in sorted(self.inodes):
            inode = self.inodes[ino]
            if inode.is_dir:
                self._directory(inode)

    def _directory(self, inode: Inode) -> None:
        devs = self._dir_blocks(inode)
        for dev in devs:
            raw = self.region.buf[dev : dev + BLOCK]
            try:
                used, entries = parse_dirblock(raw, dev, inode.ino)
            except CorruptionError as e:
                self.error(str(e.strerror))  # it names the directory
                if self.repair:
                    self._write_block(dev, _empty_dirblock(inode.ino))
                    self.fixed(f"directory {inode.ino}: damaged block emptied")
                continue
            if raw[20:24] != bytes(4) or raw[used:] != bytes(BLOCK - used):
                self.error(f"directory {inode.ino}: reserved or unused bytes of a block not zero")
                if self.repair:
                    image = self._image(dev, inode.ino)  # sealing zeroes the reserved word
                    image[used:] = bytes(BLOCK - used)
                    self.fixed(f"directory {inode.ino}: unused bytes of a block zeroed")
            for pos, eino, ftype, name in entries:
                self.entries.append(_Entry(inode.ino, dev, pos, eino, ftype, name))

    def _dir_blocks(self, inode: Inode) -> list[int]:
        devs = []
        for e in inode.iomap(0, inode.size):
            if e.kind != "mapped":
                break
            devs.extend(range(e.device_offset, e.device_offset + e.length, BLOCK))
        whole = len(devs) * BLOCK
        if whole != inode.size:
            self.error(f"directory {inode.ino}: size {inode.size} is not its mapped blocks")
            if self.repair:
                inode.size = whole
                self._save_inode(inode)
                self.fixed(f"directory {inode.ino}: size set to {whole}")
        return devs

    def _write_block(self, dev: int, image: bytes) -> None:
        txn = Transaction()
        txn.write(dev, image)
        self._commit(txn)

    def _image(self, dev: int, dir_ino: int) -> bytearray:
        """The image of a directory block being changed; written, sealed
        once, by _write_images (a block with hundreds of bad entries costs
        one write, not one per entry)."""
        image = self.images.get(dev)
        if image is None:
            image = self.images[dev] = bytearray(self.region.buf[dev : dev + BLOCK])
        self._dirty[dev] = dir_ino
        return image

    def _write_images(self) -> None:
        for dev, dir_ino in self._dirty.items():
            image = self.images[dev]
            used, live = struct.unpack_from("<HH", image, 16)
            dirblock_seal(image, dir_ino, used, live)
            self._write_block(dev, bytes(image))
        self._dirty.clear()

    # -- 5. namespace ------------------------------------------------------
    def _namespace(self) -> None:
        live = self._valid_entries()
        children: dict[int, list[_Entry]] = {}
        refs: dict[int, int] = {}
        for e in live:
            children.setdefault(e.dir_ino, []).append(e)
            refs[e.ino] = refs.get(e.ino, 0) + 1
        tops = [ROOT_INO] if ROOT_INO in self.inodes else []
        reachable = self._walk(children, tops)
        lost = self._unreachable(reachable, refs, children)
        lost += self._break_cycles(reachable, live, children, refs)
        for ino in lost:
            refs[ino] = refs.get(ino, 0) + 1  # the name lost+found will give it
        adopted = self._walk(children, lost)
        self._link_counts(children, refs, reachable | adopted)
        self._lost = lost
        if self.repair:
            self._write_images()

    def _valid_entries(self) -> list[_Entry]:
        """Drop entries that cannot stand: bad names, duplicates, dangling,
        names of the root, extra names of a directory; fix wrong types.
        Returns the rest."""
        named: list[_Entry] = []
        seen: set[tuple[int, bytes]] = set()
        for e in sorted(self.entries, key=lambda x: (x.dir_ino, x.dev, x.pos)):
            problem = self._entry_problem(e, seen)
            if problem:
                self._drop(e, problem)
                continue
            seen.add((e.dir_ino, e.raw))
            named.append(e)
        kept = self._kept_names(named)
        live = []
        for e in named:
            target = self.inodes[e.ino]
            if target.is_dir and kept[e.ino] is not e:
                self._drop(e, f"is an extra name of directory {e.ino}")
                continue
            if e.ftype != ftype_of(target.mode):
                self.error(
                    f"directory {e.dir_ino}: entry {e.raw!r}: type {e.ftype} "
                    f"but inode {e.ino} is {ftype_of(target.mode)}"
                )
                e.ftype = ftype_of(target.mode)
                self._edit_entry(e, drop=False)
            live.append(e)
        return live

    def _entry_problem(self, e: _Entry, seen: set[tuple[int, bytes]]) -> str | None:
        if not valid_name(e.raw) or (e.dir_ino, e.raw) in seen:
            return "invalid or duplicate name"
        if e.ino not in self.inodes:
            return f"names missing inode {e.ino}"
        if e.ino == ROOT_INO:
            return f"is an extra name of directory {e.ino}"
        return None

    def _kept_names(self, named: list[_Entry]) -> dict[int, _Entry]:
        """The one name each named directory keeps: the first in the directory
        its parent field names, else its first (``named`` is in order)."""
        kept: dict[int, _Entry] = {}
        for e in named:
            target = self.inodes[e.ino]
            if not target.is_dir:
                continue
            first = kept.get(e.ino)
            if first is None or (e.dir_ino == target.parent != first.dir_ino):
                kept[e.ino] = e
        return kept

    def _drop(self, e: _Entry, problem: str) -> None:
        self.error(f"directory {e.dir_ino}: entry {e.raw!r} {problem}")
        self._edit_entry(e, drop=True)

    def _edit_entry(self, e: _Entry, *, drop: bool) -> None:
        if not self.repair:
            return
        image = self._image(e.dev, e.dir_ino)
        if drop:
            struct.pack_into("<Q", image, e.pos, 0)
            live = struct.unpack_from("<H", image, 18)[0]
            struct.pack_into("<H", image, 18, live - 1)
        else:
            image[e.pos + 9] = e.ftype
        self.fixed(f"directory {e.dir_ino}: entry {e.raw!r} {'removed' if drop else 'retyped'}")

    def _walk(self, children: dict[int, list[_Entry]], tops: list[int]) -> set[int]:
        """Every inode below ``tops`` (and they), by a loop; a directory's parent
        field is set to the directory it is found in."""
        seen, todo = set(tops), list(tops)
        while todo:
            d = todo.pop()
            for e in children.get(d, []):
                child = self.inodes[e.ino]
                if child.is_dir and child.parent != d:
                    self.error(f"directory {e.ino}: parent field {child.parent}, expected {d}")
                    child.parent = d
                    self._fix_inode(child, f"directory {e.ino}: parent set to {d}")
                if e.ino not in seen:
                    seen.add(e.ino)
                    if child.is_dir:
                        todo.append(e.ino)
        return seen

    def _link_counts(self, children, refs, reachable: set[int]) -> None:
        for ino in sorted(reachable):
            inode = self.inodes[ino]
            if inode.is_dir:
                subdirs = sum(1 for e in children.get(ino, []) if self.inodes[e.ino].is_dir)
                want = 2 + subdirs
            else:
                want = refs.get(ino, 0)
            if inode.nlink != want:
                self.error(f"inode {ino}: link count {inode.nlink}, expected {want}")
                inode.nlink = want
                self._fix_inode(inode, f"inode {ino}: link count set to {want}")

    def _fix_inode(self, inode: Inode, msg: str) -> None:
        if self.repair:
            self._save_inode(inode)
            self.fixed(msg)

    def _unreachable(self, reachable: set[int], refs: dict[int, int], children) -> list[int]:
        """Unreachable inodes with links are errors; those named by no entry
        at all go to lost+found and bring what they hold along.  A nameless
        inode with no links is an orphan (unlinked while open), unless it is
        a directory still holding entries: that is damage, adopted too."""
        lost = []
        for ino in sorted(set(self.inodes) - reachable):
            if not refs.get(ino) and self.inodes[ino].nlink == 0 and not children.get(ino):
                self.report.notes.append(f"inode {ino}: orphan (no name), freed at next mount")
                self._orphans.append(ino)
                continue
            self.error(f"inode {ino}: not reachable from the root")
            if not refs.get(ino):
                lost.append(ino)
        return lost

    def _break_cycles(self, reachable: set[int], live: list[_Entry], children, refs) -> list[int]:
        """Directories that name each other in a ring, none reachable: adopt
        one member of each ring (the lowest inode number) and remove its name
        inside the ring.  Returns the members."""
        named_in = {  # every named unreachable directory -> its one (kept) name
            e.ino: e for e in live if e.ino not in reachable and self.inodes[e.ino].is_dir
        }
        members = []
        for e in _cycle_closers(named_in):
            self.error(f"directory {e.ino}: in a cycle of directories the root does not reach")
            self._edit_entry(e, drop=True)
            children[e.dir_ino] = [c for c in children[e.dir_ino] if c is not e]
            refs[e.ino] -= 1
            members.append(e.ino)
        return members

    # -- lost+found --------------------------------------------------------
    def _link_lost(self) -> None:
        """Give each unreachable inode a name in lost+found (through a mount,
        which knows how to grow directories), a batch per transaction.  With
        no space for that, what is left stays unreachable, and says so."""
        from .pool import open_pool  # late: fs builds on everything check uses

        fs = open_pool(
            self.path,
            readonly=False,
            durability=self.durability,
            emulate_devdax=self.emulate_devdax,
            reclaim_orphans=False,
        )
        try:
            name = self._lost_found(fs)
            for i in range(0, len(self._lost), ADOPT_BATCH):
                try:
                    with fs._change() as txn:
                        found = fs._dir(ROOT_INO).lookup(name) if name else None
                        lf = fs._inode(found[0] if found else ROOT_INO)
                        for ino in self._lost[i : i + ADOPT_BATCH]:
                            self._adopt(fs, txn, name, lf, ino)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    left = len(self._lost) - i
                    self.report.notes.append(f"no space to link {left} unreachable inode(s)")
                    break
        finally:
            fs.close()

    def _lost_found(self, fs) -> str:
        """The name in the root of the directory adoptees go to: the first of
        lost+found, lost+found.1, ... that names a directory (looked up by
        inode: a symlink is never followed) or nothing (then it is made).
        "" (the root itself) when no inode is left to make one, as e2fsck
        offers."""
        with fs._locked(exclusive=False):
            root = fs._dir(ROOT_INO)
            for name in _numbered(LOST_FOUND):
                found = root.lookup(name)
                if found is None:
                    break
                if fs._inode(found[0]).is_dir:
                    return name
        try:
            fs.mkdir("/" + name, 0o700)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            self.report.notes.append(f"no free inode for /{name}: lost inodes go to the root")
            return ""
        return name

    def _reclaim_orphans(self) -> None:
        """Free orphans no live process pins (a crash left them behind); those
        still open or mapped somewhere stay until their last user is gone."""
        from .pool import open_pool

        fs = open_pool(
            self.path,
            readonly=False,
            durability=self.durability,
            emulate_devdax=self.emulate_devdax,
            reclaim_orphans=True,
        )
        try:
            freed = [
                ino
                for ino in self._orphans
                if ino not in fs.inodes.cache and fs.inodes.is_free(ino)
            ]
        finally:
            fs.close()
        for ino in freed:
            self.fixed(f"orphan inode {ino} freed")

    def _adopt(self, fs, txn: Transaction, lf_name: str, lf: Inode, ino: int) -> None:
        """Name ``ino`` #INO in ``lf`` (or #INO.1, ... if that is taken)."""
        inode = fs._inode(ino)
        lf_dir = fs._dir(lf.ino)
        name = next(n for n in _numbered(f"#{ino}") if lf_dir.lookup(n) is None)
        lf_dir.add(name, ino, ftype_of(inode.mode), txn, fs._dir_block_adder(lf))
        if inode.is_dir:
            inode.parent = lf.ino
            lf.nlink += 1
        else:
            inode.nlink = 1
        fs._txn_dirty.update((ino, lf.ino))
        where = f"/{lf_name}/" if lf_name else "/"
        self.fixed(f"inode {ino} linked as {where}{name}")


def _numbered(base: str):
    """base, base.1, base.2, ...: the names tried until one is free."""
    yield base
    for k in itertools.count(1):
        yield f"{base}.{k}"


def _overlaps(owned: SortedDict, first: int, end: int) -> bool:
    """Whether [first, end) meets a run of ``owned``.  The runs are disjoint,
    so only the last one starting before ``end`` can reach past ``first``."""
    i = owned.bisect_left(end) - 1
    return i >= 0 and owned.peekitem(i)[1] > first


def _cycle_closers(named_in: dict[int, _Entry]) -> list[_Entry]:
    """One entry per cycle of directories in ``named_in`` (directory -> the
    entry naming it): the one naming the cycle's lowest inode.  Each
    directory has one name, so following names upwards from any directory
    ends at a nameless one, at a directory already done, or back on the
    walk itself: a cycle.  Colouring (on the walk / done) keeps it linear."""
    done: set[int] = set()
    closers = []
    for start in sorted(named_in):
        walk: dict[int, int] = {}  # directory -> its step on this walk
        d = start
        while d in named_in and d not in done and d not in walk:
            walk[d] = len(walk)
            d = named_in[d].dir_ino
        if d in walk:
            cycle = list(walk)[walk[d] :]
            closers.append(named_in[min(cycle)])
        done.update(walk)
    return closers


def _empty_dirblock(dir_ino: int) -> bytes:
    image = bytearray(BLOCK)
    dirblock_seal(image, dir_ino, DIRBLOCK_HEAD.size, 0)
    return bytes(image)


def _special_name(kind: int) -> str:
    return {
        stat.S_IFIFO: "FIFO",
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
        stat.S_IFSOCK: "socket",
    }[kind]
