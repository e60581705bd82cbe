"""layout: the on-media format (VERSION below), where bytes get their meaning.

Every record is a struct format whose size is asserted at import, with a
pack/unpack pair.  Unpacking validates (magic, then checksum, then every
offset and length) and raises CorruptionError carrying the byte offset;
nothing above this module ever sees a raw struct.error.  SPEC.md describes
the same format in prose, byte by byte.

The region, drawn once (offsets in bytes; B = 4 KiB, C = 2 MiB):

    0        4K        8K               itable_off         data_off (C-aligned)   replica_off
    | super  | jheader | journal  ...   | inode table ...  | 2 MiB chunks ...      | super' |
    +--------+---------+----------------+------------------+-----------------------+--------+

Metadata records are little-endian.  crc32c (Castagnoli) protects every
record; the checksum field covers every byte of the record after itself.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import crc32c as _crc32c

BLOCK = 4096
CHUNK = 2 * 1024 * 1024
BLOCKS_PER_CHUNK = CHUNK // BLOCK
MAX_NAME = 255
PATH_MAX = 4096  # bytes, the terminating NUL included: a symlink target is shorter
# Version 2 added the claim and touch entries of transaction records (an
# older reader would take them for the end of the journal and drop commits).
# A version 1 pool is a version 2 pool whose records hold none: it mounts,
# and its first writable mount upgrades the superblocks (pool.upgrade_superblocks).
# Version 3 added lazy records and the durable mark (group commit on
# page-cache pools): an older reader would take a lazy record for the end of
# the journal, and would replay lazy records a power loss left without their
# data.  A version 2 pool is a version 3 pool with neither, upgraded alike.
# Version 4 gave slot 0 of the inode table a header: the table's in-use
# limit, past which mkfs writes nothing and mount reads nothing (an older
# reader would refuse slot 0, or take unwritten slots for damage).  Slot 0
# of an older pool is zero, which version 4 reads as "the whole table".
# Version 5 put a record's magic under its crc.  Version 6 added the check
# entry (REC_CHECK: the crc of data a durable record makes visible, so that
# in sync mode one fdatasync makes data and record durable together); an
# older reader would take a record holding one for the end of the journal.
# A version 5 pool is a version 6 pool with none, upgraded alike.
# Version 7 gave followers (follow.py) a table of leases in block 0, past
# the superblock, which a writer honours as it honours its own processes'
# pins: an older writer would free what a follower holds.  Block 0 past
# the superblock is zero in every older pool: an empty table.
# Version 8 added the unlink, create and fill entries (REC_UNLINK, REC_CREATE,
# REC_FILL): a record that says what a change did instead of the bytes it
# wrote, whose homes a later record writes (logical.py); an older reader
# would take a record holding one for the end of the journal, and read homes
# that lag it.  A version 7 pool is a version 8 pool with none, upgraded alike.
# Version 9 added the rewrite entry (REC_REWRITE: a small file emptied, as
# open "wb" does, or given new bytes, as write_bytes over it does, said as
# a fill is); an older reader would take a record holding one for the end
# of the journal.  A version 8 pool is a version 9 pool with none.
# Version 10 put in a create entry's length word, past the name's length,
# the directory block its writer put the name in (CREATE_BLOCK_SHIFT), so
# that whoever makes the create again puts it in the same block: another
# process catching up, as the writer does, and recovery, which with no
# block named could find no room where the writer found some.  An older
# reader would take the word for a name's length past the payload, and the
# record for the end of the journal.  A version 9 pool's creates name no
# block (the bits are zero), and are made again as before.
VERSION = 10
VERSIONS_READ = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)


class CorruptionError(OSError):
    """Damaged media: a record failed its magic, checksum or range check.

    An OSError with errno EUCLEAN ("Structure needs cleaning", what Linux
    file systems return for detected corruption); ``offset`` is the byte
    offset in the region of the damaged record, ``filename`` the path whose
    resolution or walk met it (when there is one).
    """

    def __init__(self, message: str, offset: int | None = None, *, path: str | None = None):
        where = f" at offset {offset:#x}" if offset is not None else ""
        super().__init__(errno.EUCLEAN, f"{message}{where}")
        self.offset = offset
        if path is not None:  # (set to None, OSError would print "None")
            self.filename = path


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return _crc32c.crc32c(data)


def _checked(fmt: str, size: int) -> struct.Struct:
    s = struct.Struct(fmt)
    assert s.size == size, (fmt, s.size, size)
    return s


# --------------------------------------------------------------------------
# Superblock: at offset 0 and, as a replica, in the last 4 KiB of the region.
# --------------------------------------------------------------------------
SUPER_MAGIC = b"DAXFSv1\x00"
SUPER = _checked("<8sIII16sQIIQQQQQQQQqI", 128)
# magic, version, features, allocator, uuid, region_size, block_size,
# chunk_size, journal_off, journal_len, itable_off, inode_count, data_off,
# data_blocks, replica_off, root_ino, created_ns, crc

ALLOCATORS = {"hugepage": 0, "naive": 1}
ALLOCATOR_NAMES = {v: k for k, v in ALLOCATORS.items()}
FEATURES_KNOWN = 0  # no optional features in v1; unknown bits refuse to mount


@dataclass(frozen=True)
class Superblock:
    version: int
    features: int
    allocator: str
    uuid: bytes
    region_size: int
    journal_off: int
    journal_len: int
    itable_off: int
    inode_count: int
    data_off: int
    data_blocks: int
    replica_off: int
    root_ino: int
    created_ns: int

    @property
    def itable_end(self) -> int:
        return self.itable_off + self.inode_count * INODE_SIZE

    @property
    def data_end(self) -> int:
        return self.data_off + self.data_blocks * BLOCK

    def pack(self) -> bytes:
        body = SUPER.pack(
            SUPER_MAGIC,
            self.version,
            self.features,
            ALLOCATORS[self.allocator],
            self.uuid,
            self.region_size,
            BLOCK,
            CHUNK,
            self.journal_off,
            self.journal_len,
            self.itable_off,
            self.inode_count,
            self.data_off,
            self.data_blocks,
            self.replica_off,
            self.root_ino,
            self.created_ns,
            0,
        )
        return body[:-4] + struct.pack("<I", crc32c(body[:-4]))


def unpack_superblock(raw: bytes, offset: int, region_size: int) -> Superblock:
    """Parse and fully validate a superblock read at ``offset``."""
    if len(raw) < SUPER.size:
        raise CorruptionError("superblock truncated", offset)
    fields = SUPER.unpack_from(raw)
    if fields[0] != SUPER_MAGIC:
        raise CorruptionError("bad superblock magic (not a daxfs pool?)", offset)
    if fields[-1] != crc32c(raw[: SUPER.size - 4]):
        raise CorruptionError("superblock checksum mismatch", offset)
    (
        _,
        version,
        features,
        alloc,
        uuid,
        rsize,
        bsize,
        csize,
        joff,
        jlen,
        ioff,
        icount,
        doff,
        dblocks,
        roff,
        root,
        created,
        _,
    ) = fields
    if version not in VERSIONS_READ:
        raise CorruptionError(
            f"unsupported format version {version} (this daxfs reads versions "
            f"{', '.join(map(str, VERSIONS_READ))}: the pool was made by a newer daxfs)",
            offset,
        )
    if features & ~FEATURES_KNOWN:
        raise CorruptionError(f"unknown feature bits {features:#x}", offset)
    if alloc not in ALLOCATOR_NAMES or bsize != BLOCK or csize != CHUNK:
        raise CorruptionError("bad allocator, block or chunk size", offset)
    sb = Superblock(
        version,
        features,
        ALLOCATOR_NAMES[alloc],
        uuid,
        rsize,
        joff,
        jlen,
        ioff,
        icount,
        doff,
        dblocks,
        roff,
        root,
        created,
    )
    _validate_geometry(sb, offset, region_size)
    return sb


def upgrade_interrupted(primary: Superblock, replica: Superblock) -> bool:
    """An upgrade writes the replica first: a crash before the primary leaves
    copies that differ in their version alone, the replica's the newer."""
    return primary.version < replica.version and (
        dataclasses.replace(primary, version=replica.version) == replica
    )


def superblock_at(region, offset: int) -> Superblock | None:
    """The superblock at ``offset`` of ``region`` (anything with read() and
    size), or None when that copy does not validate."""
    try:
        return unpack_superblock(region.read(offset, BLOCK), offset, region.size)
    except CorruptionError:
        return None


def _validate_geometry(sb: Superblock, offset: int, region_size: int) -> None:
    ok = (
        sb.region_size == region_size
        and sb.journal_off == JOURNAL_HEADER_OFF + BLOCK
        and sb.journal_len >= 16 * BLOCK
        and sb.journal_len % BLOCK == 0
        and sb.itable_off == sb.journal_off + sb.journal_len
        and 2 <= sb.inode_count <= (1 << 32)
        and sb.data_off == _align_up(sb.itable_end, CHUNK)
        and sb.data_blocks > 0
        and sb.replica_off == sb.data_end == region_size - BLOCK
        and 1 <= sb.root_ino < sb.inode_count
    )
    if not ok:
        raise CorruptionError("superblock geometry is inconsistent", offset)


def plan_geometry(region_size: int, inode_count: int | None = None) -> dict[str, int]:
    """Lay out a region of ``region_size`` bytes; raise ValueError if too small."""
    region_size -= region_size % BLOCK
    journal_len = min(16 << 20, max(256 << 10, region_size // 64))
    journal_len -= journal_len % BLOCK
    if inode_count is None:
        inode_count = min(1 << 22, max(256, region_size // (16 << 10)))
    journal_off = JOURNAL_HEADER_OFF + BLOCK
    itable_off = journal_off + journal_len
    data_off = _align_up(itable_off + inode_count * INODE_SIZE, CHUNK)
    replica_off = region_size - BLOCK
    if replica_off - data_off < CHUNK:
        least = _align_up(data_off + CHUNK + BLOCK, 1 << 20) >> 20
        raise ValueError(f"a pool needs at least {least} MiB for {inode_count} inodes")
    return dict(
        region_size=region_size,
        journal_off=journal_off,
        journal_len=journal_len,
        itable_off=itable_off,
        inode_count=inode_count,
        data_off=data_off,
        data_blocks=(replica_off - data_off) // BLOCK,
        replica_off=replica_off,
    )


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# --------------------------------------------------------------------------
# Journal: a header block with two ping-pong slots and a volatile live word,
# followed by the journal area holding transaction records back to back.
# --------------------------------------------------------------------------
JOURNAL_HEADER_OFF = BLOCK
JSLOT_OFFSETS = (0, 512)  # within the header block; one 512-byte sector each
JLIVE_OFF = 2048  # within the header block; never trusted by recovery
JHEADER_MAGIC = 0x4A48_5844  # "DXHJ"
# The follower table (version 7), in block 0 from byte 512: a slot per
# follower, a header and then what it holds, one u64 each (the inode
# number of a file it has open; 0 = none).  Hints between a writer and
# its followers, like the process table: not journaled, never read by
# recovery or the checker.
FOLLOWERS_OFF = 512
FOLLOWER_SLOT_SIZE = 512
FOLLOWER_SLOTS = 7
FOLLOWER_MAGIC = 0x4C46_5844  # "DXFL"
FOLLOWER_HEAD = _checked("<IIQQQ", 32)  # magic, lease_ms, id, heartbeat, reserved
FOLLOWER_ENTRIES = (FOLLOWER_SLOT_SIZE - FOLLOWER_HEAD.size) // 8  # 60
assert FOLLOWERS_OFF + FOLLOWER_SLOTS * FOLLOWER_SLOT_SIZE <= BLOCK

JHEADER = _checked("<IIQ", 16)  # magic, crc, seq: first transaction seq expected
JLIVE = _checked("<QQ", 16)  # next_seq, pos: hints shared by live processes
# Lazy mode (group commit, page-cache pools).  The durable mark: two
# ping-pong slots (one sector each) saying that the records of log
# generation ``gen`` (the header seq they follow) up to ``durable`` - 1 are
# durable with the data they expose.  A mark of another generation is stale.
JMARK_OFFSETS = (1024, 1536)  # within the header block
JMARK_MAGIC = 0x4D4A_5844  # "DXJM"
JMARK = _checked("<IIQQ", 24)  # magic, crc, gen, durable
# Live words beside JLIVE (never trusted by recovery but for JBOOT's rule):
# the boot and pool file of the last lazy writer, and how far the homes of
# the log's records are in the file (written out at a group commit).
JBOOT_OFF = JLIVE_OFF + 16
JBOOT = _checked("<32s", 32)  # Region.boot_identity() of a lazy writer
JHOMES_OFF = JLIVE_OFF + 48
JHOMES = _checked("<QQ", 16)  # seq, pos: records before have their homes in the file
# A header seq this high is damage (2^63 commits never happen): counting on from
# it would overflow the u64 fields, so such a slot is invalid.
JSEQ_LIMIT = 1 << 63

# The largest file size (Linux's MAX_LFS_FILESIZE): file offsets are signed
# 64-bit numbers everywhere above us, so a larger size is damage.
MAX_FILE_SIZE = (1 << 63) - 1

TXN_MAGIC = 0x5854_5844  # "DXTX": durable when written (its data first)
# "DXTL": a lazy record, written with no flush; durable only once a durable
# mark covers it (or, within the boot that wrote it, as the page cache holds it).
TXN_MAGIC_LAZY = 0x4C54_5844
TXN_HEADER = _checked("<IIQII", 24)  # magic, crc, seq, nrec, payload_len
TXN_REC = _checked("<QII", 16)  # dst_off, length, flags; data follows, 8-aligned
# A revoke carries no data: [dst_off, dst_off+length) was freed by this
# transaction, so recovery must not replay earlier writes into it there
# (the space may since hold another file's data, which is never journaled).
REC_REVOKE = 1
# A claim carries no data: [dst_off, dst_off+length) of the data area was
# allocated by this transaction.  A touch carries no data and has length 0:
# inode dst_off changed in a way its slot's bytes do not show (a directory's
# entries).  Recovery ignores both; live processes catch up from them.
REC_CLAIM = 2
REC_TOUCH = 3
# A check (version 6) is followed by 8 bytes, CHECK_TAIL: the crc32c of
# [dst_off, dst_off+length) of the data area as this record's change left it,
# and a reserved zero.  Only in a durable record (DXTX), sorted and disjoint.
# Recovery after a power loss verifies the checks of the last record of the
# log and drops that record if one fails: its data never reached the media
# (journal.py, "Checked records").
REC_CHECK = 4
CHECK_TAIL = _checked("<II", 8)
# An unlink (version 8) is followed by UNLINK_TAIL and the name's bytes, padded
# to 8: name ``length`` bytes long, in directory ``parent``, named inode
# ``dst_off``, which the change freed with every block it had (a regular file
# with one name and no extent block), at time ``when`` (ns: the directory's
# new mtime and ctime).  The record wrote no home: directory block and inode
# slot are written by a later record (an absorb, logical.py), and until then
# whoever loads from the homes makes the change again from the entry.
REC_UNLINK = 5
UNLINK_TAIL = _checked("<Qq", 16)  # parent, when (ns: the directory's new mtime and ctime)
# A create (version 8) is followed by UNLINK_TAIL, the new inode's slot as it
# is to be (INODE_SIZE bytes, its crc included), and the name's bytes,
# padded to 8: inode ``dst_off`` made, a regular file with one name, no
# extent block and its data written, under the name in ``parent`` at time
# ``when``.  As an unlink, it writes no home (logical.py); the record claims
# the file's blocks.
REC_CREATE = 6
# (Version 10) A create entry's length word: the name's length in its low
# 8 bits, and above them the index (in the directory's block order) of the
# block the name went in, plus one; 0 there names none (a directory of
# CREATE_BLOCKS_MOST blocks or more, or a record of an older writer).
CREATE_BLOCK_SHIFT = 8
CREATE_BLOCKS_MOST = (1 << (32 - CREATE_BLOCK_SHIFT)) - 1
_CREATE_NAME_BITS = (1 << CREATE_BLOCK_SHIFT) - 1
assert MAX_NAME <= _CREATE_NAME_BITS


def create_length(name_length: int, block: int) -> int:
    """A create entry's length word: ``name_length`` and ``block`` (its
    index in the directory, -1 or past CREATE_BLOCKS_MOST: none named)."""
    named = block + 1 if 0 <= block < CREATE_BLOCKS_MOST else 0
    return name_length | named << CREATE_BLOCK_SHIFT


# A fill (version 8) is followed by the inode's slot as it is to be
# (INODE_SIZE bytes, its crc included); ``length`` is 0: inode ``dst_off``, a
# regular file with one name, no extent block and no data, given its first
# data (written and durable before the record) and the size and times of
# that write.  As an unlink, it writes no home (logical.py); the record
# claims the new blocks.
REC_FILL = 7
# A rewrite (version 9) is laid out as a fill: inode ``dst_off``, a regular
# file with one name, no extent block and every extent in its slot, given
# the slot's size, extents and times (none: emptied, as open "wb" does; or
# new data, written and durable before the record, in blocks it did not
# have).  The record revokes the blocks it had and claims the new ones.
REC_REWRITE = 8


def pack_jheader(seq: int) -> bytes:
    body = struct.pack("<Q", seq)
    return JHEADER.pack(JHEADER_MAGIC, crc32c(body), seq)


def unpack_jheader(raw: bytes) -> int | None:
    """Return the slot's seq, or None if the slot is invalid (never written or torn)."""
    if len(raw) < JHEADER.size:
        return None
    magic, crc, seq = JHEADER.unpack_from(raw)
    if magic != JHEADER_MAGIC or crc != crc32c(raw[8:16]) or seq >= JSEQ_LIMIT:
        return None
    return seq


def pack_jmark(gen: int, durable: int) -> bytes:
    body = struct.pack("<QQ", gen, durable)
    return JMARK.pack(JMARK_MAGIC, crc32c(body), gen, durable)


def unpack_jmark(raw: bytes) -> tuple[int, int] | None:
    """(gen, durable) of a mark slot, or None if it is invalid."""
    if len(raw) < JMARK.size:
        return None
    magic, crc, gen, durable = JMARK.unpack_from(raw)
    if magic != JMARK_MAGIC or crc != crc32c(raw[8:24]) or not gen <= durable < JSEQ_LIMIT:
        return None
    return gen, durable


def pad8(n: int) -> int:
    return (n + 7) & ~7


def pack_txn(
    seq: int,
    writes: Sequence[tuple[int, bytes | bytearray]],
    revokes: list[tuple[int, int]] = (),  # type: ignore[assignment]
    claims: list[tuple[int, int]] = (),  # type: ignore[assignment]
    touches: list[int] = (),  # type: ignore[assignment]
    lazy: bool = False,
    checks: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    unlinks: list[tuple[int, int, bytes, int]] = (),  # type: ignore[assignment]
    creates: list[tuple[int, int, bytes, int, bytes, int]] = (),  # type: ignore[assignment]
    fills: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    rewrites: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    body = pack_txn_body(
        writes, revokes, claims, touches, checks, unlinks, creates, fills, rewrites
    )
    return seal_txn(seq, body, lazy)


def pack_txn_body(
    writes: Sequence[tuple[int, bytes | bytearray]],
    revokes: list[tuple[int, int]] = (),  # type: ignore[assignment]
    claims: list[tuple[int, int]] = (),  # type: ignore[assignment]
    touches: list[int] = (),  # type: ignore[assignment]
    checks: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    unlinks: list[tuple[int, int, bytes, int]] = (),  # type: ignore[assignment]
    creates: list[tuple[int, int, bytes, int, bytes, int]] = (),  # type: ignore[assignment]
    fills: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
    rewrites: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
) -> tuple[int, bytes]:
    """(entry count, payload) of a record: all of it but the sequence
    number, so that a committer can build it before taking the pool lock
    (seal_txn, under it, is a header and a crc).  ``checks``: (offset,
    length, crc32c) of data the record makes visible (REC_CHECK);
    ``unlinks``: (parent, ino, name, when) of the names the change removed
    without writing their homes (REC_UNLINK); ``creates``: (parent, ino,
    name, when, slot, block) of the files it made so (REC_CREATE; ``block``:
    the directory block the name went in, -1 for none named); ``fills``: (ino,
    slot) of the empty files it gave their first data so (REC_FILL);
    ``rewrites``: (ino, slot) of the files it emptied or gave new data so
    (REC_REWRITE)."""
    parts: list[bytes | bytearray] = []
    for dst, data in writes:
        n = len(data)
        parts.append(TXN_REC.pack(dst, n, 0))
        parts.append(data)  # (join copies it once)
        if n % 8:
            parts.append(bytes(8 - n % 8))
    for dst, length in revokes:
        parts.append(TXN_REC.pack(dst, length, REC_REVOKE))
    for dst, length in claims:
        parts.append(TXN_REC.pack(dst, length, REC_CLAIM))
    for ino in touches:
        parts.append(TXN_REC.pack(ino, 0, REC_TOUCH))
    for dst, length, crc in checks:
        parts.append(TXN_REC.pack(dst, length, REC_CHECK) + CHECK_TAIL.pack(crc, 0))
    for parent, ino, name, when in unlinks:
        n = len(name)
        parts.append(TXN_REC.pack(ino, n, REC_UNLINK) + UNLINK_TAIL.pack(parent, when) + name)
        if n % 8:
            parts.append(bytes(8 - n % 8))
    for parent, ino, name, when, slot, block in creates:
        n = len(name)
        parts.append(
            TXN_REC.pack(ino, create_length(n, block), REC_CREATE) + UNLINK_TAIL.pack(parent, when)
        )
        parts.append(slot + name)
        if n % 8:
            parts.append(bytes(8 - n % 8))
    for ino, slot in fills:
        parts.append(TXN_REC.pack(ino, 0, REC_FILL) + slot)
    for ino, slot in rewrites:
        parts.append(TXN_REC.pack(ino, 0, REC_REWRITE) + slot)
    nrec = len(writes) + len(revokes) + len(claims) + len(touches) + len(checks)
    nrec += len(unlinks) + len(creates) + len(fills) + len(rewrites)
    return nrec, b"".join(parts)


# Records of the said paths' usual shapes, after their magic and crc: the
# header's seq, nrec and payload_len, then the entries' fixed parts.  An
# unlink of a file of one extent: the revoke, the unlink and its tail; a
# create of a file of one block: the claim, the create and its tail (of an
# empty file: the create and its tail); a fill: the claim and the fill; a
# rewrite: the revoke, the claim and the rewrite.  (Each is pack_txn's
# bytes in the fewest steps.)
_UNLINK_ONE = struct.Struct("<QIIQIIQIIQq")
_CREATE_ONE = _UNLINK_ONE
_CREATE_EMPTY = struct.Struct("<QIIQIIQq")
_FILL_ONE = struct.Struct("<QIIQIIQII")
_REWRITE_ONE = struct.Struct("<QIIQIIQIIQII")
_PADS = [bytes(-n % 8) for n in range(8)]


def _sealed(tail: bytes) -> bytes:
    """A durable record of ``tail`` (its bytes past the crc): seal_txn's
    last step."""
    return _MAGIC_CRC.pack(TXN_MAGIC, _crc32c.crc32c(tail, _TXN_MAGIC_CRC[TXN_MAGIC])) + tail


def pack_unlink_record(
    seq: int, parent: int, ino: int, name: bytes, when: int, revokes: list[tuple[int, int]]
) -> bytes:
    """pack_txn(seq, [], revokes, unlinks=[(parent, ino, name, when)]): the same
    bytes, in the fewest steps when the file has one extent (every unlink
    of a small file pays this: logical.py)."""
    if len(revokes) != 1:
        return pack_txn(seq, [], revokes, unlinks=[(parent, ino, name, when)])
    ((dst, length),) = revokes
    n = len(name)
    return _sealed(
        _UNLINK_ONE.pack(
            seq, 2, 48 + n + (-n % 8), dst, length, REC_REVOKE, ino, n, REC_UNLINK, parent, when
        )
        + name
        + _PADS[n % 8]
    )


def pack_create_record(
    seq: int, parent: int, ino: int, name: bytes, when: int, slot: bytes, claims, block: int
) -> bytes:
    """pack_txn(seq, [], claims=claims, creates=[(parent, ino, name, when,
    slot, block)]): the same bytes, in fewer steps (every said create pays it)."""
    n = len(name)
    word = create_length(n, block)
    if not claims:  # (an open that makes the file: no data yet)
        size = 32 + INODE_SIZE + n + (-n % 8)
        head = _CREATE_EMPTY.pack(seq, 1, size, ino, word, REC_CREATE, parent, when)
        return _sealed(head + slot + name + _PADS[n % 8])
    if len(claims) == 1:
        ((dst, length),) = claims
        size = 48 + INODE_SIZE + n + (-n % 8)
        head = _CREATE_ONE.pack(
            seq, 2, size, dst, length, REC_CLAIM, ino, word, REC_CREATE, parent, when
        )
        return _sealed(head + slot + name + _PADS[n % 8])
    parts = [TXN_REC.pack(dst, length, REC_CLAIM) for dst, length in claims]
    parts.append(_CREATE_REC.pack(ino, word, REC_CREATE, parent, when) + slot + name + _PADS[n % 8])
    return seal_txn(seq, (len(parts), b"".join(parts)))


def pack_slot_record(seq: int, kind: int, ino: int, slot: bytes, revokes, claims) -> bytes:
    """pack_txn(seq, [], revokes, claims, fills=[(ino, slot)]) for ``kind``
    REC_FILL (``revokes`` empty), rewrites=[(ino, slot)] for REC_REWRITE:
    the same bytes, in fewer steps (every said fill and rewrite pays it)."""
    if len(claims) == 1 and len(revokes) <= 1:
        ((dst, length),) = claims
        if not revokes:
            head = _FILL_ONE.pack(seq, 2, 32 + INODE_SIZE, dst, length, REC_CLAIM, ino, 0, kind)
            return _sealed(head + slot)
        ((rdst, rlength),) = revokes
        head = _REWRITE_ONE.pack(
            seq, 3, 48 + INODE_SIZE, rdst, rlength, REC_REVOKE, dst, length, REC_CLAIM, ino, 0, kind
        )
        return _sealed(head + slot)
    parts = [TXN_REC.pack(dst, length, REC_REVOKE) for dst, length in revokes]
    parts += [TXN_REC.pack(dst, length, REC_CLAIM) for dst, length in claims]
    parts.append(TXN_REC.pack(ino, 0, kind) + slot)
    return seal_txn(seq, (len(parts), b"".join(parts)))


_CREATE_REC = struct.Struct("<QIIQq")  # a create's entry (TXN_REC) and UNLINK_TAIL


def seal_txn(seq: int, body: tuple[int, bytes], lazy: bool = False) -> bytes:
    """The record of ``body`` (pack_txn_body) committed as number ``seq``;
    ``lazy``: written with no flush (TXN_MAGIC_LAZY)."""
    nrec, payload = body
    tail = struct.pack("<QII", seq, nrec, len(payload)) + payload
    magic = TXN_MAGIC_LAZY if lazy else TXN_MAGIC
    return struct.pack("<II", magic, txn_crc(magic, tail)) + tail


_TXN_MAGIC_CRC = {m: crc32c(struct.pack("<I", m)) for m in (TXN_MAGIC, TXN_MAGIC_LAZY)}
_MAGIC_CRC = struct.Struct("<II")


def txn_crc(magic: int, tail) -> int:
    """A record's crc (version 5): crc32c of its magic and of the bytes after
    the crc field, so that no flipped magic turns a durable record into a
    lazy one or back.  (Versions 3 and 4 left the magic out: old_crc.)"""
    return _crc32c.crc32c(tail, _TXN_MAGIC_CRC[magic])


@dataclass
class TxnRecord:
    writes: list[tuple[int, bytes]]
    revokes: list[tuple[int, int]]
    next_pos: int
    claims: list[tuple[int, int]] = field(default_factory=list)
    touches: list[int] = field(default_factory=list)
    lazy: bool = False  # TXN_MAGIC_LAZY: durable only under a durable mark
    checks: list[tuple[int, int, int]] = field(default_factory=list)  # (off, length, crc)
    # (parent, ino, name, when) of the names a record removed (REC_UNLINK),
    # (parent, ino, name, when, slot, block) of the files it made (REC_CREATE;
    # block: the directory block the name went in, -1 for none named),
    # (ino, slot) of the empty files it gave their first data (REC_FILL),
    # (ino, slot) of the files it emptied or gave new data (REC_REWRITE)
    unlinks: list[tuple[int, int, bytes, int]] = field(default_factory=list)
    creates: list[tuple[int, int, bytes, int, bytes, int]] = field(default_factory=list)
    fills: list[tuple[int, bytes]] = field(default_factory=list)
    rewrites: list[tuple[int, bytes]] = field(default_factory=list)

    def says(self) -> bool:
        """Does the record say changes whose homes it does not write?"""
        return bool(self.unlinks or self.creates or self.fills or self.rewrites)


def parse_txn(
    buf, pos: int, end: int, seq: int, old_crc: bool = False
) -> tuple[list[tuple[int, bytes]], int] | None:
    """(writes, next_pos) of the record at ``pos``, or None; see parse_txn_record."""
    rec = parse_txn_record(buf, pos, end, seq, old_crc)
    return None if rec is None else (rec.writes, rec.next_pos)


def parse_txn_record(buf, pos: int, end: int, seq: int, old_crc: bool = False) -> TxnRecord | None:
    """Parse the transaction at ``pos`` if it is whole, has ``seq`` and checks.
    ``old_crc``: a pool before version 5, whose records' crc may leave the
    magic out (one that includes it is taken too: this daxfs's own records,
    written before the pool's upgrade ends).

    None means an invalid record: the normal end of the journal (a torn or
    never-written commit), not corruption.
    """
    if end - pos < TXN_HEADER.size:
        return None
    magic, crc, tseq, nrec, plen = TXN_HEADER.unpack_from(buf, pos)
    if magic not in (TXN_MAGIC, TXN_MAGIC_LAZY) or tseq != seq:
        return None
    if plen > end - pos - TXN_HEADER.size:
        return None
    start = pos + TXN_HEADER.size
    checked = buf[pos + 8 : start + plen]
    if crc != txn_crc(magic, checked) and not (old_crc and crc == crc32c(checked)):
        return None
    rec = TxnRecord([], [], start + plen, lazy=magic == TXN_MAGIC_LAZY)
    p = start
    for _ in range(nrec):
        if p + TXN_REC.size > start + plen:
            return None
        dst, length, flags = TXN_REC.unpack_from(buf, p)
        p += TXN_REC.size
        if flags == 0:
            if p + length > start + plen:
                return None
            rec.writes.append((dst, bytes(buf[p : p + length])))
            p += pad8(length)
        elif flags == REC_REVOKE:
            rec.revokes.append((dst, length))
        elif flags == REC_CLAIM:
            rec.claims.append((dst, length))
        elif flags == REC_TOUCH and length == 0:
            rec.touches.append(dst)
        elif flags == REC_CHECK and not rec.lazy:
            if p + CHECK_TAIL.size > start + plen:
                return None
            crc, reserved = CHECK_TAIL.unpack_from(buf, p)
            if reserved:
                return None
            rec.checks.append((dst, length, crc))
            p += CHECK_TAIL.size
        elif flags == REC_UNLINK and not rec.lazy:
            if p + UNLINK_TAIL.size + length > start + plen:
                return None
            parent, when = UNLINK_TAIL.unpack_from(buf, p)
            p += UNLINK_TAIL.size
            rec.unlinks.append((parent, dst, bytes(buf[p : p + length]), when))
            p += pad8(length)
        elif flags == REC_CREATE and not rec.lazy:
            n, block = length & _CREATE_NAME_BITS, (length >> CREATE_BLOCK_SHIFT) - 1
            if p + UNLINK_TAIL.size + INODE_SIZE + n > start + plen:
                return None
            parent, when = UNLINK_TAIL.unpack_from(buf, p)
            p += UNLINK_TAIL.size
            slot = bytes(buf[p : p + INODE_SIZE])
            p += INODE_SIZE
            rec.creates.append((parent, dst, bytes(buf[p : p + n]), when, slot, block))
            p += pad8(n)
        elif flags in (REC_FILL, REC_REWRITE) and not rec.lazy and length == 0:
            if p + INODE_SIZE > start + plen:
                return None
            said = rec.fills if flags == REC_FILL else rec.rewrites
            said.append((dst, bytes(buf[p : p + INODE_SIZE])))
            p += INODE_SIZE
        else:
            return None
    if rec.says() and rec.writes:
        return None  # (a record says what it did or writes it, never both)
    return rec


# --------------------------------------------------------------------------
# Inodes: fixed 256-byte slots in the inode table; slot ino lives at
# itable_off + ino * 256.  A free slot is all zeroes.
# --------------------------------------------------------------------------
INODE_SIZE = 256
# Slot 0 (version 4): the table header.  Slots at or past ``limit`` are
# free whatever their bytes; the table grows by ITABLE_GROW slots at a time.
ITABLE_MAGIC = 0x5449_5844  # "DXIT"
ITABLE_HEAD = _checked("<IIQ", 16)  # magic, crc (of bytes 8..255 of the slot), limit
ITABLE_GROW = 16384  # slots (4 MiB of table)
SLOTS_PER_PAGE = BLOCK // 256


def pack_itable_head(limit: int) -> bytes:
    body = struct.pack("<Q", limit) + bytes(256 - 16)
    return struct.pack("<II", ITABLE_MAGIC, crc32c(body)) + body


def unpack_itable_head(raw, offset: int, inode_count: int) -> int:
    """The in-use limit a table header gives: ``inode_count`` (the whole
    table) for a zero slot; CorruptionError for one that does not check or
    a limit outside [2, inode_count] that is not a whole page of slots."""
    raw = bytes(raw[:256])
    if not any(raw):
        return inode_count
    magic, crc, limit = ITABLE_HEAD.unpack_from(raw)
    if magic != ITABLE_MAGIC or crc != crc32c(raw[8:]):
        raise CorruptionError("inode table header damaged (run `daxfs fsck --repair`)", offset)
    whole_pages = limit % SLOTS_PER_PAGE == 0 or limit == inode_count
    if not 2 <= limit <= inode_count or not whole_pages or any(raw[16:]):
        raise CorruptionError(f"inode table header: limit {limit} invalid", offset)
    return limit


INODE_MAGIC = 0x4E49  # "IN"
INLINE_EXTENTS = 6
EXTENT = _checked("<QQQ", 24)  # file_off, dev_off, length
INODE_HEAD = _checked("<IHHQQIIIIQqqqqQIIQ", 104)
_U32 = struct.Struct("<I")
# crc, magic, flags, ino, generation, mode, nlink, uid, gid, size, atime_ns,
# mtime_ns, ctime_ns, btime_ns, parent, nextents, rdev, ext_block.  rdev
# (version 6; reserved, zero, before): a device node's number as Linux's
# new_encode_dev packs it in 32 bits, what os.makedev gives for a major
# below 4096 and a minor below 2**20; zero for every other type.
assert INODE_HEAD.size + INLINE_EXTENTS * EXTENT.size <= INODE_SIZE

# The same inode slot as a numpy dtype, for the vectorised scan at mount.
INODE_DTYPE_FIELDS = [
    ("crc", "<u4"),
    ("magic", "<u2"),
    ("flags", "<u2"),
    ("ino", "<u8"),
    ("generation", "<u8"),
    ("mode", "<u4"),
    ("nlink", "<u4"),
    ("uid", "<u4"),
    ("gid", "<u4"),
    ("size", "<u8"),
    ("atime", "<i8"),
    ("mtime", "<i8"),
    ("ctime", "<i8"),
    ("btime", "<i8"),
    ("parent", "<u8"),
    ("nextents", "<u4"),
    ("rdev", "<u4"),
    ("ext_block", "<u8"),
    ("ext", "<u8", (INLINE_EXTENTS, 3)),
    ("pad", f"V{INODE_SIZE - INODE_HEAD.size - INLINE_EXTENTS * EXTENT.size}"),
]


@dataclass
class InodeRecord:
    ino: int
    generation: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime: int
    mtime: int
    ctime: int
    btime: int
    parent: int
    nextents: int
    ext_block: int
    inline: list[tuple[int, int, int]]
    rdev: int = 0


def pack_inode(r: InodeRecord) -> bytes:
    return pack_slot(
        r.ino, r.generation, r.mode, r.nlink, r.uid, r.gid, r.size, r.atime, r.mtime, r.ctime,
        r.btime, r.parent, r.nextents, r.rdev, r.ext_block, r.inline,
    )  # fmt: skip


def pack_slot(
    ino: int, generation: int, mode: int, nlink: int, uid: int, gid: int, size: int,
    atime: int, mtime: int, ctime: int, btime: int, parent: int, nextents: int, rdev: int,
    ext_block: int, inline: list[tuple[int, int, int]],
) -> bytes:  # fmt: skip
    """An inode slot's bytes, from its fields (pack_inode's, with no record
    to build: every change of an inode and every said create pays it).
    One Struct packs all but the crc for each count of inline extents, and
    the crc goes in front: half the time of packing into a buffer."""
    k = len(inline)
    if k == 1:  # (the usual small file)
        ((foff, dev, length),) = inline
        flat: tuple | list = (foff, dev, length)
    else:
        flat = [v for e in inline for v in e]
    body = _SLOT_PAST_CRC[k].pack(
        INODE_MAGIC, 0, ino, generation, mode, nlink, uid, gid, size, atime, mtime, ctime,
        btime, parent, nextents, rdev, ext_block, *flat,
    ) + _SLOT_PAD[k]  # fmt: skip
    return _U32.pack(_crc32c.crc32c(body)) + body


# A slot past its crc with 0 to INLINE_EXTENTS inline extents (pack_slot),
# and the zeros that follow them to the slot's end.
_SLOT_PAST_CRC = [
    struct.Struct("<" + INODE_HEAD.format[2:] + "QQQ" * k) for k in range(INLINE_EXTENTS + 1)
]
_SLOT_PAD = [bytes(INODE_SIZE - _U32.size - s.size) for s in _SLOT_PAST_CRC]


def _check_slot(raw, offset: int, ino: int, crc: int, magic: int, rino: int, size: int) -> None:
    """The checks every parse of a slot makes (``crc`` .. ``size``: its
    fields as read); CorruptionError if one fails."""
    if magic != INODE_MAGIC:
        raise CorruptionError(f"inode {ino}: bad magic", offset)
    if crc != crc32c(raw[4:INODE_SIZE]):
        raise CorruptionError(f"inode {ino}: checksum mismatch", offset)
    if rino != ino:
        raise CorruptionError(f"inode {ino}: slot claims inode {rino}", offset)
    if size > MAX_FILE_SIZE:
        raise CorruptionError(f"inode {ino}: size {size} past the largest file", offset)


def unpack_inode(raw, offset: int, ino: int) -> InodeRecord:
    """Parse the slot for ``ino``; raises CorruptionError, never returns a free slot."""
    if len(raw) < INODE_SIZE:
        raise CorruptionError(f"inode {ino}: slot truncated", offset)
    f = INODE_HEAD.unpack_from(raw)
    # f: crc, magic, flags, then the record's fields from ino to nextents
    # in its order, rdev, ext_block.
    _check_slot(raw, offset, ino, f[0], f[1], f[3], f[9])
    n_inline = min(f[15], INLINE_EXTENTS)
    inline = [EXTENT.unpack_from(raw, INODE_HEAD.size + i * EXTENT.size) for i in range(n_inline)]
    return InodeRecord(*f[3:16], ext_block=f[17], inline=inline, rdev=f[16])


# Where a slot's nextents lies (the head's fields before it, packed).
_NEXTENTS_AT = struct.calcsize("<" + INODE_HEAD.format[1:16])


def unpack_inline_slot(raw, offset: int, ino: int) -> tuple[tuple, list[tuple[int, int, int]]]:
    """Parse the slot for ``ino`` as unpack_inode does, with the same
    checks, when every extent lies in the slot (a said change's slot:
    logical.py), else CorruptionError.  One struct call, and no
    InodeRecord: catching up parses a slot per said change.  Its fields
    from magic on (magic, flags, ino, generation, mode, nlink, uid, gid,
    size, atime, mtime, ctime, btime, parent, nextents, rdev, ext_block,
    then the extents' words), and its extents."""
    if len(raw) < INODE_SIZE:
        raise CorruptionError(f"inode {ino}: slot truncated", offset)
    k = _U32.unpack_from(raw, _NEXTENTS_AT)[0]
    f = _SLOT_PAST_CRC[k if k <= INLINE_EXTENTS else 0].unpack_from(raw, _U32.size)
    _check_slot(raw, offset, ino, _U32.unpack_from(raw)[0], f[0], f[2], f[8])
    if k > INLINE_EXTENTS or f[16]:
        raise CorruptionError(f"inode {ino}: extents past its slot", offset)
    if k == 1:  # (the usual small file)
        return f, [f[17:20]]
    return f, [f[i : i + 3] for i in range(17, 17 + 3 * k, 3)]


# --------------------------------------------------------------------------
# Extent overflow blocks: a chain of 4 KiB blocks holding extents beyond the
# inline ones.
# --------------------------------------------------------------------------
EXTBLOCK_MAGIC = 0x4245_5844  # "DXEB"
EXTBLOCK_HEAD = _checked("<IIQQII", 32)  # magic, crc, owner ino, next, count, reserved
EXTENTS_PER_BLOCK = (BLOCK - EXTBLOCK_HEAD.size) // EXTENT.size


def pack_extblock(owner: int, next_off: int, extents: list[tuple[int, int, int]]) -> bytes:
    assert len(extents) <= EXTENTS_PER_BLOCK
    body = bytearray(BLOCK)
    EXTBLOCK_HEAD.pack_into(body, 0, EXTBLOCK_MAGIC, 0, owner, next_off, len(extents), 0)
    for i, e in enumerate(extents):
        EXTENT.pack_into(body, EXTBLOCK_HEAD.size + i * EXTENT.size, *e)
    struct.pack_into("<I", body, 4, crc32c(body[8:]))
    return bytes(body)


def unpack_extblock(raw, offset: int, owner: int) -> tuple[int, list[tuple[int, int, int]]]:
    if len(raw) < BLOCK:
        raise CorruptionError(f"inode {owner}: extent block truncated", offset)
    magic, crc, rowner, next_off, count, _ = EXTBLOCK_HEAD.unpack_from(raw)
    if magic != EXTBLOCK_MAGIC:
        raise CorruptionError(f"inode {owner}: bad extent block magic", offset)
    if crc != crc32c(raw[8:BLOCK]):
        raise CorruptionError(f"inode {owner}: extent block checksum mismatch", offset)
    if rowner != owner or count > EXTENTS_PER_BLOCK:
        raise CorruptionError(f"inode {owner}: extent block owner or count wrong", offset)
    exts = [EXTENT.unpack_from(raw, EXTBLOCK_HEAD.size + i * EXTENT.size) for i in range(count)]
    return next_off, exts


# --------------------------------------------------------------------------
# Directory blocks: the data of a directory is a sequence of 4 KiB blocks,
# each a header and packed entries; an entry with ino 0 is a tombstone.
# --------------------------------------------------------------------------
DIRBLOCK_MAGIC = 0x4244_5844  # "DXDB"
DIRBLOCK_HEAD = _checked("<IIQHHI", 24)  # magic, crc, dir ino, used, live, reserved
DIRENT_HEAD = _checked("<QBB", 10)  # ino, name_len, ftype; name bytes follow
MAX_DIRENT = DIRENT_HEAD.size + MAX_NAME


def dirblock_seal(block: bytearray, dir_ino: int, used: int, live: int) -> None:
    """Write the header of a directory block image in place, checksum last."""
    DIRBLOCK_HEAD.pack_into(block, 0, DIRBLOCK_MAGIC, 0, dir_ino, used, live, 0)
    struct.pack_into("<I", block, 4, crc32c(memoryview(block)[8:BLOCK]))


def check_dirblock(raw, offset: int, dir_ino: int) -> tuple[int, int]:
    """(used, live) of a directory block whose header and checksum check."""
    if len(raw) < BLOCK:
        raise CorruptionError(f"directory {dir_ino}: block truncated", offset)
    magic, crc, rino, used, live, _ = DIRBLOCK_HEAD.unpack_from(raw)
    if magic != DIRBLOCK_MAGIC:
        raise CorruptionError(f"directory {dir_ino}: bad block magic", offset)
    if crc != crc32c(raw[8:BLOCK]):
        raise CorruptionError(f"directory {dir_ino}: block checksum mismatch", offset)
    if rino != dir_ino or not DIRBLOCK_HEAD.size <= used <= BLOCK:
        raise CorruptionError(f"directory {dir_ino}: block header inconsistent", offset)
    return used, live


def parse_dirblock(raw, offset: int, dir_ino: int) -> tuple[int, list[tuple[int, int, int, bytes]]]:
    """Return (used, [(pos, ino, ftype, name)]) for live entries; validates fully."""
    used, live = check_dirblock(raw, offset, dir_ino)
    entries, pos = [], DIRBLOCK_HEAD.size
    while pos < used:
        if pos + DIRENT_HEAD.size > used:
            raise CorruptionError(f"directory {dir_ino}: entry overruns block", offset + pos)
        ino, nlen, ftype = DIRENT_HEAD.unpack_from(raw, pos)
        end = pos + DIRENT_HEAD.size + nlen
        if nlen == 0 or end > used:
            raise CorruptionError(f"directory {dir_ino}: bad entry length", offset + pos)
        if ino:
            entries.append((pos, ino, ftype, bytes(raw[pos + DIRENT_HEAD.size : end])))
        pos = end
    if len(entries) != live:
        raise CorruptionError(f"directory {dir_ino}: live count mismatch", offset)
    return used, entries


def ftype_of(mode: int) -> int:
    return (mode >> 12) & 0xF


# The file types a pool holds: regular files, directories, symlinks, and
# (version 6) FIFOs, character and block devices and sockets, which hold no
# bytes (size 0, no extents): a mount serves their names and attributes, the
# kernel their I/O.
FILE_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)
SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK)
DEVICE_TYPES = (stat.S_IFCHR, stat.S_IFBLK)
# The largest device number an inode holds (Linux's new_encode_dev: 12 bits
# of major, 20 of minor, in 32).
MAX_MAJOR, MAX_MINOR = (1 << 12) - 1, (1 << 20) - 1


def valid_name(name: bytes) -> bool:
    return (
        0 < len(name) <= MAX_NAME
        and b"/" not in name
        and b"\0" not in name
        and name not in (b".", b"..")
    )


def is_dir_mode(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("os",)]
del os
