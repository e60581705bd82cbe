"""layout: every record round-trips, and damaged bytes raise CorruptionError
(EUCLEAN) -- never struct.error, IndexError or ValueError."""

from __future__ import annotations

import dataclasses
import errno
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daxfs import layout as L
from daxfs.layout import (
    BLOCK,
    CHUNK,
    DIRBLOCK_HEAD,
    DIRENT_HEAD,
    EXTENTS_PER_BLOCK,
    INODE_SIZE,
    CorruptionError,
    InodeRecord,
    Superblock,
)

FUZZ = settings(max_examples=300, deadline=None)
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


SUPER_FIELDS = ["8s", "I", "I", "I", "16s", "Q", "I", "I"] + ["Q"] * 8 + ["q", "I"]
assert struct.calcsize("<" + "".join(SUPER_FIELDS)) == L.SUPER.size


def make_sb(
    region_size: int = 64 << 20, inodes: int | None = None, allocator: str = "hugepage"
) -> Superblock:
    geo = L.plan_geometry(region_size, inodes)
    return Superblock(
        version=L.VERSION,
        features=0,
        allocator=allocator,
        uuid=bytes(range(16)),
        root_ino=1,
        created_ns=123456789,
        **geo,
    )


def corrupt_only(fn, *args):
    """Call a parser on damaged bytes: it may return or raise CorruptionError only."""
    try:
        return fn(*args)
    except CorruptionError as e:
        assert e.errno == errno.EUCLEAN
        return None


def flip(raw: bytes, pos: int, value: int) -> bytes:
    b = bytearray(raw)
    b[pos % len(b)] ^= value
    return bytes(b)


# ---------------------------------------------------------------------------
# CorruptionError itself
# ---------------------------------------------------------------------------
def test_corruption_error_is_euclean_oserror_with_offset():
    e = CorruptionError("bad thing", 0x1000)
    assert isinstance(e, OSError) and e.errno == errno.EUCLEAN and e.offset == 0x1000
    assert "0x1000" in str(e)
    assert CorruptionError("x").offset is None


# ---------------------------------------------------------------------------
# Superblock and geometry
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [8 << 20, 64 << 20, (64 << 20) + 12345, 1 << 30, 1 << 40])
def test_superblock_round_trip(size):
    sb = make_sb(size)
    raw = sb.pack()
    assert len(raw) == L.SUPER.size == 128
    back = L.unpack_superblock(raw + bytes(BLOCK - len(raw)), 0, sb.region_size)
    assert back == sb
    assert back.data_off % CHUNK == 0 and back.replica_off == back.region_size - BLOCK
    assert back.itable_end <= back.data_off and back.data_end == back.replica_off


def test_superblock_allocators_round_trip():
    for name in ("hugepage", "naive"):
        sb = make_sb(allocator=name)
        assert L.unpack_superblock(sb.pack(), 0, sb.region_size).allocator == name


def test_superblock_rejections():
    sb = make_sb()
    raw = sb.pack()
    with pytest.raises(CorruptionError, match="truncated"):
        L.unpack_superblock(raw[:100], 0, sb.region_size)
    with pytest.raises(CorruptionError, match="magic"):
        L.unpack_superblock(bytes(BLOCK), 0, sb.region_size)
    with pytest.raises(CorruptionError, match="geometry") as ei:
        L.unpack_superblock(raw, 4096, sb.region_size + BLOCK)  # a pool that was resized
    assert ei.value.offset == 4096
    # Fields with a valid checksum but wrong values.
    for field, bad in [(1, L.VERSION + 1), (1, 0), (2, 1), (3, 7), (6, 8192), (7, 4096)]:
        fields = list(L.SUPER.unpack(raw))
        fields[field] = bad
        body = L.SUPER.pack(*fields)
        body = body[:-4] + struct.pack("<I", L.crc32c(body[:-4]))
        with pytest.raises(CorruptionError):
            L.unpack_superblock(body, 0, sb.region_size)


def test_plan_geometry_too_small_is_value_error():
    with pytest.raises(ValueError, match="at least"):
        L.plan_geometry(4 << 20)
    with pytest.raises(ValueError):
        L.plan_geometry(64 << 20, inode_count=1 << 20)


@given(size=st.integers(1 << 20, 1 << 42), inodes=st.one_of(st.none(), st.integers(2, 1 << 16)))
@settings(max_examples=300, deadline=None)
def test_every_planned_geometry_validates(size, inodes):
    try:
        sb = make_sb(size, inodes)
    except ValueError:
        return
    assert L.unpack_superblock(sb.pack(), 0, sb.region_size) == sb
    assert sb.data_blocks * BLOCK >= CHUNK


@FUZZ
@given(raw=st.binary(min_size=0, max_size=200))
def test_superblock_random_bytes(raw):
    corrupt_only(L.unpack_superblock, raw, 0, 64 << 20)


@FUZZ
@given(pos=st.integers(0, 127), x=st.integers(1, 255))
def test_superblock_any_single_byte_flip_is_detected(pos, x):
    sb = make_sb()
    with pytest.raises(CorruptionError):
        L.unpack_superblock(flip(sb.pack(), pos, x), 0, sb.region_size)


@FUZZ
@given(
    changes=st.dictionaries(st.integers(1, 16), st.integers(0, 2**64 - 1), min_size=1, max_size=4)
)
def test_superblock_checksummed_garbage_fields(changes):
    """Valid checksum, some fields replaced by arbitrary values: validation catches it."""
    sb = make_sb()
    fields = list(L.SUPER.unpack(sb.pack()))
    for i, v in changes.items():
        code = SUPER_FIELDS[i]
        if code == "16s":
            fields[i] = v.to_bytes(16, "little")
        else:
            fields[i] = v % (1 << (8 * struct.calcsize(code)))
            if code == "q":
                fields[i] -= 1 << 63
    body = L.SUPER.pack(*fields)
    body = body[:-4] + struct.pack("<I", L.crc32c(body[:-4]))
    got = corrupt_only(L.unpack_superblock, body, 0, sb.region_size)
    if got is not None:  # accepted: then it is internally consistent
        assert got.data_off % CHUNK == 0 and got.replica_off == sb.region_size - BLOCK


# ---------------------------------------------------------------------------
# Journal header slots and transaction records
# ---------------------------------------------------------------------------
def test_jheader_round_trip_and_invalid_slots():
    raw = L.pack_jheader(42)
    assert len(raw) == L.JHEADER.size and L.unpack_jheader(raw) == 42
    assert L.unpack_jheader(bytes(16)) is None
    assert L.unpack_jheader(raw[:10]) is None  # a truncated slot is just invalid
    for pos in range(16):
        assert L.unpack_jheader(flip(raw, pos, 0x40)) is None


writes_st = st.lists(st.tuples(st.integers(0, 2**40), st.binary(max_size=300)), max_size=6)


@FUZZ
@given(seq=st.integers(0, 2**63), writes=writes_st, pad=st.binary(max_size=40))
def test_txn_round_trip(seq, writes, pad):
    rec = L.pack_txn(seq, writes)
    assert len(rec) % 8 == 0
    buf = pad + rec + b"\xff" * 8
    parsed = L.parse_txn(buf, len(pad), len(buf), seq)
    assert parsed is not None
    got, nxt = parsed
    assert got == [(d, bytes(b)) for d, b in writes] and nxt == len(pad) + len(rec)
    # The wrong sequence number, or a record cut short, is "no record".
    assert L.parse_txn(buf, len(pad), len(buf), seq + 1) is None
    assert L.parse_txn(buf, len(pad), len(pad) + len(rec) - 1, seq) is None


names_st = st.binary(min_size=1, max_size=255)
claims_st = st.lists(st.tuples(st.integers(0, 2**40), st.integers(1, 2**31)), max_size=6)


@FUZZ
@given(
    seq=u64.filter(lambda x: x < 2**63),
    parent=u64,
    ino=u64,
    name=names_st,
    when=i64,
    slot=st.binary(min_size=INODE_SIZE, max_size=INODE_SIZE),
    claims=claims_st,
    block=st.one_of(st.integers(-1, 3), st.integers(-1, L.CREATE_BLOCKS_MOST + 2)),
)
def test_said_records_packed_fast_are_pack_txns_bytes_and_parse_back(
    seq, parent, ino, name, when, slot, claims, block
):
    """The said paths pack their records in fewer steps than pack_txn
    (pack_unlink_record, pack_create_record, pack_slot_record): the same
    bytes, parsed back to the same entries (a create's directory block
    too, when the length word has room for it: else none, -1)."""
    named = block if block < L.CREATE_BLOCKS_MOST else -1
    unlinks, creates, fills = (
        [(parent, ino, name, when)],
        [(parent, ino, name, when, slot, named)],
        [(ino, slot)],
    )
    revokes = claims[:1]
    rewrites = fills
    cases = [
        (L.pack_unlink_record(seq, parent, ino, name, when, revokes),
         L.pack_txn(seq, [], revokes, unlinks=unlinks)),
        (L.pack_create_record(seq, parent, ino, name, when, slot, claims, block),
         L.pack_txn(seq, [], claims=claims, creates=creates)),
        (L.pack_slot_record(seq, L.REC_FILL, ino, slot, [], claims),
         L.pack_txn(seq, [], claims=claims, fills=fills)),
        (L.pack_slot_record(seq, L.REC_REWRITE, ino, slot, revokes, claims),
         L.pack_txn(seq, [], revokes, claims, rewrites=rewrites)),
    ]  # fmt: skip
    for fast, slow in cases:
        assert fast == slow
    parsed = [L.parse_txn_record(fast, 0, len(fast), seq) for fast, _ in cases]
    unlink, create, fill, rewrite = parsed
    assert unlink.unlinks == unlinks and unlink.revokes == revokes and unlink.says()
    assert create.creates == creates and create.claims == claims and not create.writes
    assert fill.fills == fills and fill.claims == claims and fill.says()
    assert rewrite.rewrites == rewrites and rewrite.revokes == revokes and rewrite.says()
    assert rewrite.claims == claims and not rewrite.fills


@pytest.mark.parametrize("kind", ["fills", "rewrites"])
def test_a_fill_or_rewrite_with_a_length_beside_a_write_or_lazy_is_no_record(kind):
    slot = bytes(range(256))
    flags = {"fills": L.REC_FILL, "rewrites": L.REC_REWRITE}[kind]
    body = L.TXN_REC.pack(5, 8, flags) + slot
    assert L.parse_txn_record(L.seal_txn(3, (1, body)), 0, 1 << 20, 3) is None
    nrec, both = L.pack_txn_body([(4096, b"x" * 8)], **{kind: [(5, slot)]})
    assert L.parse_txn_record(L.seal_txn(3, (nrec, both)), 0, 1 << 20, 3) is None
    short = L.seal_txn(3, (1, L.TXN_REC.pack(5, 0, flags) + slot[:100]))
    assert L.parse_txn_record(short, 0, len(short), 3) is None
    lazy = L.seal_txn(3, (1, L.TXN_REC.pack(5, 0, flags) + slot), lazy=True)
    assert L.parse_txn_record(lazy, 0, len(lazy), 3) is None
    good = L.seal_txn(3, (1, L.TXN_REC.pack(5, 0, flags) + slot))
    assert getattr(L.parse_txn_record(good, 0, len(good), 3), kind) == [(5, slot)]


@FUZZ
@given(writes=writes_st.filter(bool), pos=st.integers(0, 10**6), x=st.integers(1, 255))
def test_txn_any_single_byte_flip_is_no_record(writes, pos, x):
    rec = L.pack_txn(7, writes)
    assert L.parse_txn(flip(rec, pos, x), 0, len(rec), 7) is None


@FUZZ
@given(raw=st.binary(max_size=600), pos=st.integers(0, 700), seq=u64)
def test_txn_random_bytes_never_raise(raw, pos, seq):
    res = L.parse_txn(raw, min(pos, len(raw)), len(raw), seq)
    assert res is None or isinstance(res, tuple)


@FUZZ
@given(nrec=u32, payload=st.binary(max_size=200))
def test_txn_checksummed_garbage_payload(nrec, payload):
    """A record whose checksum is right but whose inner lengths lie."""
    payload = payload + bytes(-len(payload) % 8)
    tail = struct.pack("<QII", 5, nrec, len(payload)) + payload
    rec = struct.pack("<II", L.TXN_MAGIC, L.crc32c(tail)) + tail
    res = L.parse_txn(rec, 0, len(rec), 5)
    if res is not None:
        writes, nxt = res
        assert nxt == len(rec) and len(writes) == nrec
        assert sum(len(d) for _, d in writes) <= len(payload)


# ---------------------------------------------------------------------------
# Inodes
# ---------------------------------------------------------------------------
extents_st = st.lists(st.tuples(u64, u64, u64), max_size=L.INLINE_EXTENTS)


@st.composite
def inode_records(draw, ino=None):
    inline = draw(extents_st)
    nextents = (
        draw(st.integers(len(inline), 1000)) if len(inline) == L.INLINE_EXTENTS else len(inline)
    )
    return InodeRecord(
        ino=draw(st.integers(1, 2**32)) if ino is None else ino,
        generation=draw(u64),
        mode=draw(u32),
        nlink=draw(u32),
        uid=draw(u32),
        gid=draw(u32),
        size=draw(st.integers(0, L.MAX_FILE_SIZE)),
        atime=draw(i64),
        mtime=draw(i64),
        ctime=draw(i64),
        btime=draw(i64),
        parent=draw(u64),
        nextents=nextents,
        ext_block=draw(u64),
        inline=inline,
    )


@FUZZ
@given(r=inode_records(), more=extents_st)
def test_an_inodes_slot_is_its_records_bytes(r, more):
    """Inode.slot packs the slot with no record built (every change pays
    it): the bytes pack_inode gives for the inode's record, its extents
    past the slot's six included or not."""
    from daxfs.inode import Inode

    inode = Inode(
        r.ino, r.mode, nlink=r.nlink, uid=r.uid, gid=r.gid, size=r.size, atime=r.atime,
        mtime=r.mtime, ctime=r.ctime, btime=r.btime, parent=r.parent, generation=r.generation,
        rdev=r.rdev,
    )  # fmt: skip
    inode.extents = list(r.inline) + (list(more) if len(r.inline) == L.INLINE_EXTENTS else [])
    assert inode.slot(r.ext_block) == L.pack_inode(inode.record(r.ext_block))


@FUZZ
@given(r=inode_records())
def test_inode_round_trip_and_numpy_view_agree(r):
    raw = L.pack_inode(r)
    assert len(raw) == INODE_SIZE
    back = L.unpack_inode(raw, 0, r.ino)
    assert back == r
    # The vectorised mount scan reads the same slot through a numpy dtype.
    from daxfs.inode import INODE_DTYPE

    row = np.frombuffer(raw, dtype=INODE_DTYPE)[0]
    assert int(row["magic"]) == L.INODE_MAGIC and int(row["ino"]) == r.ino
    assert int(row["nlink"]) == r.nlink and int(row["size"]) == r.size
    assert int(row["nextents"]) == r.nextents and int(row["crc"]) == L.crc32c(raw[4:])
    for i, e in enumerate(r.inline):
        assert tuple(int(v) for v in row["ext"][i]) == e


def test_inode_rejections():
    r = InodeRecord(5, 0, 0o100644, 1, 0, 0, 10, 0, 0, 0, 0, 1, 1, 0, [(0, 1 << 21, 4096)])
    raw = L.pack_inode(r)
    with pytest.raises(CorruptionError, match="magic"):
        L.unpack_inode(bytes(INODE_SIZE), 0, 5)
    with pytest.raises(CorruptionError, match="claims"):
        L.unpack_inode(raw, 0, 6)
    with pytest.raises(CorruptionError, match="checksum") as ei:
        L.unpack_inode(flip(raw, 100, 1), 777, 5)
    assert ei.value.offset == 777
    with pytest.raises(CorruptionError, match="largest file"):
        L.unpack_inode(L.pack_inode(dataclasses.replace(r, size=L.MAX_FILE_SIZE + 1)), 0, 5)
    assert L.unpack_inode(L.pack_inode(dataclasses.replace(r, size=L.MAX_FILE_SIZE)), 0, 5)


@FUZZ
@given(r=inode_records(ino=9), pos=st.integers(0, INODE_SIZE - 1), x=st.integers(1, 255))
def test_inode_any_single_byte_flip_is_detected(r, pos, x):
    with pytest.raises(CorruptionError):
        L.unpack_inode(flip(L.pack_inode(r), pos, x), 0, 9)


@FUZZ
@given(raw=st.binary(min_size=0, max_size=INODE_SIZE), magic=st.booleans(), crc=st.booleans())
def test_inode_random_bytes(raw, magic, crc):
    b = bytearray(raw.ljust(INODE_SIZE, b"\0") if magic or crc else raw)
    if magic:
        struct.pack_into("<H", b, 4, L.INODE_MAGIC)
    if crc:
        struct.pack_into("<I", b, 0, L.crc32c(b[4:INODE_SIZE]))
    corrupt_only(L.unpack_inode, bytes(b), 0, 3)


# ---------------------------------------------------------------------------
# Extent overflow blocks
# ---------------------------------------------------------------------------
@FUZZ
@given(owner=u64, nxt=u64, exts=st.lists(st.tuples(u64, u64, u64), max_size=EXTENTS_PER_BLOCK))
def test_extblock_round_trip(owner, nxt, exts):
    raw = L.pack_extblock(owner, nxt, exts)
    assert len(raw) == BLOCK
    assert L.unpack_extblock(raw, 0, owner) == (nxt, exts)


def test_extblock_rejections():
    raw = L.pack_extblock(4, 0, [(0, CHUNK, BLOCK)])
    with pytest.raises(CorruptionError, match="magic"):
        L.unpack_extblock(bytes(BLOCK), 0, 4)
    with pytest.raises(CorruptionError, match="owner"):
        L.unpack_extblock(raw, 0, 5)
    # A count beyond what fits, with a valid checksum.
    b = bytearray(raw)
    struct.pack_into("<I", b, 24, EXTENTS_PER_BLOCK + 1)
    struct.pack_into("<I", b, 4, L.crc32c(b[8:]))
    with pytest.raises(CorruptionError, match="count"):
        L.unpack_extblock(bytes(b), 0, 4)


@FUZZ
@given(
    exts=st.lists(st.tuples(u64, u64, u64), max_size=12),
    pos=st.integers(0, BLOCK - 1),
    x=st.integers(1, 255),
)
def test_extblock_any_single_byte_flip_is_detected(exts, pos, x):
    with pytest.raises(CorruptionError):
        L.unpack_extblock(flip(L.pack_extblock(3, 0, exts), pos, x), 0, 3)


@FUZZ
@given(raw=st.binary(max_size=BLOCK), fix=st.booleans())
def test_extblock_random_bytes(raw, fix):
    b = bytearray(raw)
    if fix:
        b = bytearray(raw.ljust(BLOCK, b"\0"))
        struct.pack_into("<IIQ", b, 0, L.EXTBLOCK_MAGIC, 0, 3)
        struct.pack_into("<I", b, 4, L.crc32c(b[8:]))
    corrupt_only(L.unpack_extblock, bytes(b), 0, 3)


# ---------------------------------------------------------------------------
# Directory blocks
# ---------------------------------------------------------------------------
def build_dirblock(dir_ino: int, entries: list[tuple[int, int, bytes]]) -> bytes:
    b = bytearray(BLOCK)
    pos = DIRBLOCK_HEAD.size
    live = 0
    for ino, ftype, name in entries:
        DIRENT_HEAD.pack_into(b, pos, ino, len(name), ftype)
        b[pos + DIRENT_HEAD.size : pos + DIRENT_HEAD.size + len(name)] = name
        pos += DIRENT_HEAD.size + len(name)
        live += ino != 0
    L.dirblock_seal(b, dir_ino, pos, live)
    return bytes(b)


names_st = st.binary(min_size=1, max_size=L.MAX_NAME)
dirents_st = st.lists(
    st.tuples(st.integers(0, 2**40), st.integers(0, 15), names_st), max_size=12
).filter(lambda es: sum(DIRENT_HEAD.size + len(n) for _, _, n in es) <= BLOCK - DIRBLOCK_HEAD.size)


@FUZZ
@given(entries=dirents_st)
def test_dirblock_round_trip_skips_tombstones(entries):
    raw = build_dirblock(7, entries)
    used, got = L.parse_dirblock(raw, 0, 7)
    assert used == DIRBLOCK_HEAD.size + sum(DIRENT_HEAD.size + len(n) for _, _, n in entries)
    assert [(ino, ft, name) for _pos, ino, ft, name in got] == [e for e in entries if e[0]]


def test_dirblock_rejections():
    good = build_dirblock(7, [(3, 8, b"x")])
    with pytest.raises(CorruptionError, match="magic"):
        L.parse_dirblock(bytes(BLOCK), 0, 7)
    with pytest.raises(CorruptionError, match="inconsistent"):
        L.parse_dirblock(good, 0, 8)

    def resealed(used: int, live: int, body=None) -> bytes:
        b = bytearray(good if body is None else body)
        L.dirblock_seal(b, 7, used, live)
        return bytes(b)

    with pytest.raises(CorruptionError, match="inconsistent"):
        L.parse_dirblock(resealed(BLOCK + 1, 1), 0, 7)
    with pytest.raises(CorruptionError, match="live count"):
        L.parse_dirblock(resealed(DIRBLOCK_HEAD.size + 11, 2), 0, 7)
    with pytest.raises(CorruptionError, match="overruns|length"):
        L.parse_dirblock(resealed(DIRBLOCK_HEAD.size + 5, 1), 0, 7)
    with pytest.raises(CorruptionError, match="length"):
        L.parse_dirblock(resealed(DIRBLOCK_HEAD.size + 10, 1), 0, 7)


@FUZZ
@given(entries=dirents_st, pos=st.integers(0, BLOCK - 1), x=st.integers(1, 255))
def test_dirblock_any_single_byte_flip_is_detected(entries, pos, x):
    with pytest.raises(CorruptionError):
        L.parse_dirblock(flip(build_dirblock(7, entries), pos, x), 0, 7)


@FUZZ
@given(
    raw=st.binary(max_size=600),
    used=st.integers(0, 70000),
    live=st.integers(0, 70000),
    seal=st.booleans(),
)
def test_dirblock_random_bytes(raw, used, live, seal):
    b = bytearray(raw.ljust(BLOCK, b"\0")) if seal else bytearray(raw)
    if seal:
        L.dirblock_seal(b, 7, used & 0xFFFF, live & 0xFFFF)
    corrupt_only(L.parse_dirblock, bytes(b), 0, 7)


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def test_name_and_mode_helpers():
    assert L.valid_name(b"a") and L.valid_name(b"x" * 255)
    for bad in (b"", b".", b"..", b"a/b", b"a\0", b"x" * 256):
        assert not L.valid_name(bad)
    assert L.ftype_of(0o040755) == 4 and L.ftype_of(0o100644) == 8 and L.ftype_of(0o120777) == 10
    assert L.is_dir_mode(0o040000) and not L.is_dir_mode(0o100644)
    assert L.pad8(0) == 0 and L.pad8(1) == 8 and L.pad8(8) == 8
