"""journal: commit, recovery (idempotent, torn records discarded), checkpoints."""

from __future__ import annotations

import errno
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daxfs
from daxfs import layout as L
from daxfs.journal import Journal, Transaction
from daxfs.region import Region


@pytest.fixture
def region(pool_path):
    r = Region(pool_path)
    try:
        yield r
    finally:
        r.close()


def superblock(region: Region) -> L.Superblock:
    return L.unpack_superblock(region.read(0, L.BLOCK), 0, region.size)


def home(sb: L.Superblock, k: int = 0) -> int:
    """A metadata home: block k of the data area (these tests never mount the
    pool, so any data block will do)."""
    return sb.data_off + k * L.BLOCK


def txn_of(*writes: tuple[int, bytes]) -> Transaction:
    t = Transaction()
    for off, data in writes:
        t.write(off, data)
    return t


# ---------------------------------------------------------------------------
# Transaction staging
# ---------------------------------------------------------------------------
def test_transaction_patches_contained_writes_and_appends_others():
    t = Transaction()
    assert not t
    t.write(100, b"aaaa")
    t.write(101, b"b")  # inside the first: patched in place
    assert [(o, bytes(d)) for o, d in t.writes] == [(100, b"abaa")]
    t.write(102, b"cccc")  # overlaps past its end: appended
    t.write(50, b"zz")  # disjoint: appended
    t.write(103, b"d")  # inside the newest overlapping write: patches that one
    assert [(o, bytes(d)) for o, d in t.writes] == [(100, b"abaa"), (102, b"cdcc"), (50, b"zz")]
    t.write(101, b"xy")  # inside the first, but a later write overlaps it
    assert [(o, bytes(d)) for o, d in t.writes][-1] == (101, b"xy")
    assert t
    # Applying the staged writes in order gives what the caller wrote, in order.
    buf = bytearray(120)
    for o, d in t.writes:
        buf[o : o + len(d)] = d
    assert bytes(buf[100:106]) == b"axydcc" and bytes(buf[50:52]) == b"zz"


# ---------------------------------------------------------------------------
# Commit and recovery
# ---------------------------------------------------------------------------
def test_commit_stores_homes_and_publishes_live_word(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    seq0 = j.next_seq
    j.commit(txn_of((home(sb), b"hello"), (home(sb, 1) + 7, b"world")))
    assert region.read(home(sb), 5) == b"hello" and region.read(home(sb, 1) + 7, 5) == b"world"
    assert j.next_seq == seq0 + 1 and j.pos > 0
    other = Journal(region, sb)  # another process's view
    assert other.refresh() == seq0 + 1 and other.pos == j.pos
    j.commit(Transaction())  # empty: nothing written
    assert j.next_seq == seq0 + 1


def test_recover_replays_lost_homes_and_is_idempotent(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    writes = [(home(sb, k), bytes([65 + k]) * (100 + k)) for k in range(3)]
    for w in writes:
        j.commit(txn_of(w))
    # A crash: the records are durable, the home stores never reached the media.
    for off, data in writes:
        region.zero(off, len(data))
    before_recovery = region.read(0, region.size)

    assert Journal(region, sb).recover() == 3
    for off, data in writes:
        assert region.read(off, len(data)) == data
    after_first = region.read(0, region.size)

    # Recovering again changes nothing at all.
    assert Journal(region, sb).recover() == 0
    assert region.read(0, region.size) == after_first

    # A crash during recovery (after replay, before the checkpoint reached the
    # media): the journal header is as it was, the homes already replayed.
    hdr = L.JOURNAL_HEADER_OFF
    region.store(hdr, before_recovery[hdr : hdr + L.BLOCK])
    assert Journal(region, sb).recover() == 3
    assert region.read(0, region.size) == after_first


def test_records_replay_in_order_later_writes_win(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    h = home(sb)
    model = bytearray(64)
    steps = [[(0, b"A" * 40)], [(10, b"B" * 40)], [(5, b"C" * 10), (7, b"D" * 2)], [(0, b"E")]]
    for writes in steps:
        j.commit(txn_of(*[(h + o, d) for o, d in writes]))
        for o, d in writes:
            model[o : o + len(d)] = d
    region.zero(h, 64)
    assert Journal(region, sb).recover() == len(steps)
    assert region.read(h, 64) == bytes(model)


@pytest.mark.parametrize("damage", ["garble", "truncate", "header"])
def test_torn_last_record_is_discarded(region, damage):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    a, b = home(sb), home(sb, 1)
    j.commit(txn_of((a, b"first record")))
    start_of_last = j.start + j.pos
    j.commit(txn_of((b, b"second record, torn")))
    end_of_last = j.start + j.pos
    region.zero(a, 64)
    region.zero(b, 64)
    if damage == "garble":  # a byte of the payload never made it
        mid = (start_of_last + end_of_last) // 2
        region.store(mid, bytes([region.read(mid, 1)[0] ^ 0x5A]))
    elif damage == "truncate":  # only a prefix of the record reached the media
        cut = start_of_last + L.TXN_HEADER.size + 4
        region.zero(cut, end_of_last - cut)
    else:  # the header itself is torn
        region.zero(start_of_last, 8)

    j2 = Journal(region, sb)
    assert j2.recover() == 1
    assert region.read(a, 12) == b"first record"
    assert region.read(b, 64) == bytes(64), "a torn record must not be replayed"
    # The journal carries on: the next commit reuses the torn record's sequence
    # number and is itself recoverable.
    seq = j2.next_seq
    j2.commit(txn_of((b, b"after")))
    region.zero(b, 5)
    j3 = Journal(region, sb)
    assert j3.recover() == 1 and region.read(b, 5) == b"after"
    assert j3.next_seq == seq + 1


def test_checkpoint_when_full_and_recovery_after_wrap(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    jlen = j.end - j.start
    payload = 3000
    checkpoints, since_cp = 0, []
    slot = j.header_slot
    k = 0
    while checkpoints < 2:
        pos_before = j.pos
        off = home(sb, k % 40)
        data = bytes([k % 251]) * payload
        j.commit(txn_of((off, data)))
        if j.pos < pos_before:
            checkpoints += 1
            assert j.header_slot != slot, "a checkpoint writes the other header slot"
            slot = j.header_slot
            since_cp = []
        since_cp.append((off, data))
        assert j.pos <= jlen
        k += 1
    assert k > jlen // payload
    # The header now names the first record after the checkpoint; recovery
    # replays exactly the records written since.
    last = {}
    for off, data in since_cp:
        last[off] = data
        region.zero(off, len(data))
    assert Journal(region, sb).recover() == len(since_cp)
    for off, data in last.items():
        assert region.read(off, len(data)) == data


def test_transaction_larger_than_the_journal_is_enospc(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    big = txn_of(*[(home(sb, k), bytes(4096)) for k in range(sb.journal_len // 4096 + 1)])
    with pytest.raises(OSError) as ei:
        j.commit(big)
    assert ei.value.errno == errno.ENOSPC


def test_commit_outside_metadata_homes_is_refused(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    with pytest.raises(AssertionError):
        j.commit(txn_of((0, b"superblock!")))


def test_recovery_refuses_a_record_aimed_outside_the_pool(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    rec = L.pack_txn(j.next_seq, [(0, b"overwrite the superblock")])
    region.store(j.start + j.pos, rec)
    with pytest.raises(daxfs.CorruptionError):
        Journal(region, sb).recover()


def test_both_header_slots_invalid_is_corruption(region):
    sb = superblock(region)
    region.zero(L.JOURNAL_HEADER_OFF, 1024)
    with pytest.raises(daxfs.CorruptionError):
        Journal(region, sb).recover()


def test_one_torn_header_slot_falls_back_to_the_other(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    j.commit(txn_of((home(sb), b"x" * 10)))
    j.checkpoint()  # slot 1 now newest
    newest = j.header_slot
    seq = j.next_seq
    region.zero(L.JOURNAL_HEADER_OFF + L.JSLOT_OFFSETS[newest], 16)  # torn
    region.zero(home(sb), 10)
    j2 = Journal(region, sb)
    # The older slot names the record the lost checkpoint covered: replayed
    # again (harmless, idempotent), then checkpointed afresh.
    assert j2.recover() == 1
    assert region.read(home(sb), 10) == b"x" * 10
    assert j2.next_seq == seq
    assert Journal(region, sb).recover() == 0


# ---------------------------------------------------------------------------
# Property: any sequence of transactions, any torn tail, recovers to the model.
# ---------------------------------------------------------------------------
_shared: dict[str, object] = {}


def shared_region() -> tuple[Region, L.Superblock]:
    if "region" not in _shared:
        d = tempfile.mkdtemp(prefix="daxfs-journal-", dir="/dev/shm")
        path = os.path.join(d, "pool")
        daxfs.mkfs(path, "16M")
        r = Region(path)
        _shared.update(region=r, dir=d, path=path)
    r = _shared["region"]
    return r, superblock(r)  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def _cleanup_shared():
    yield
    if "region" in _shared:
        _shared["region"].close()  # type: ignore[union-attr]
        os.unlink(_shared["path"])  # type: ignore[arg-type]
        os.rmdir(_shared["dir"])  # type: ignore[arg-type]
        _shared.clear()


AREA = 3 * L.BLOCK
txns_st = st.lists(
    st.lists(
        st.tuples(st.integers(0, AREA - 1), st.binary(min_size=1, max_size=600)),
        min_size=1,
        max_size=5,
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(txns=txns_st, tear=st.one_of(st.none(), st.integers(0, 10**6)))
def test_any_history_recovers_to_the_sequential_model(txns, tear):
    """Commit random overlapping transactions, lose every home store (and maybe
    tear the last record), recover: the homes equal the transactions applied
    in order, without the torn one."""
    region, sb = shared_region()
    j = Journal(region, sb)
    j.format()
    h = home(sb)
    span = AREA + 600
    region.zero(h, span)
    bounds = []
    for writes in txns:
        start = j.start + j.pos
        j.commit(txn_of(*[(h + o, d) for o, d in writes]))
        assert j.start + j.pos > start, "no checkpoint expected in this small history"
        bounds.append((start, j.start + j.pos))
    keep = len(txns)
    if tear is not None:
        s, e = bounds[-1]
        p = s + tear % (e - s)
        region.store(p, bytes([region.read(p, 1)[0] ^ 0xFF]))
        keep -= 1
    model = bytearray(span)
    for writes in txns[:keep]:
        for o, d in writes:
            model[o : o + len(d)] = d
    region.zero(h, span)  # the crash: no home store reached the media
    assert Journal(region, sb).recover() == keep
    assert region.read(h, span) == bytes(model)
    assert Journal(region, sb).recover() == 0
    assert region.read(h, span) == bytes(model)


def test_recovery_does_not_replay_into_revoked_space(tmp_path):
    """A metadata block written by an early record, freed (revoked) by a later
    one and reused for file data must keep the data after recovery."""
    import daxfs
    from daxfs.journal import Journal, Transaction
    from daxfs.pool import read_superblock
    from daxfs.region import Region

    path = str(tmp_path / "revoke.pool")
    daxfs.mkfs(path, "8M")
    region = Region(path)
    try:
        sb, _ = read_superblock(region)
        j = Journal(region, sb)
        j.recover()
        block = sb.data_off + 5 * 4096
        t1 = Transaction()
        t1.write(block, b"M" * 4096)  # a metadata block's image
        j.commit(t1)
        t2 = Transaction()
        t2.revoke(block, 4096)  # freed
        t2.write(sb.itable_off + 2 * 256, bytes(256))  # with some metadata change
        j.commit(t2)
        region.store(block, b"D" * 4096)  # reused for file data (never journaled)
        assert Journal(region, sb).recover() == 2
        assert region.read(block, 4096) == b"D" * 4096
        # A write after the revoke (the block reused as metadata) is replayed.
        t3 = Transaction()
        t3.write(block, b"N" * 4096)
        j2 = Journal(region, sb)
        j2.recover()
        j2.commit(t3)
        region.store(block, b"?" * 4096)
        Journal(region, sb).recover()
        assert region.read(block, 4096) == b"N" * 4096
    finally:
        region.close()


# ---------------------------------------------------------------------------
# Checked records (version 6): sync mode's data named by crc in its record
# ---------------------------------------------------------------------------
def checked_txn(sb: L.Superblock, k: int, data: bytes, region: Region) -> Transaction:
    """A change that stored ``data`` into data block k (new space) and names
    it by a check, with a metadata write in block 0 to show it replayed."""
    region.store(home(sb, k), data)
    t = txn_of((home(sb), b"replayed %d" % k))
    t.checks = [(home(sb, k), len(data))]
    return t


def fresh_recovery(region: Region, sb: L.Superblock) -> Journal:
    region.zero(home(sb), L.BLOCK)  # homes lost: only replay brings them back
    j = Journal(region, sb)
    j.recover()
    return j


def test_the_last_record_is_dropped_when_its_checked_data_did_not_reach_the_media(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    at = j.start + j.pos
    j.commit(checked_txn(sb, 5, b"\x11" * 3000, region))
    seq = j.next_seq - 1
    assert j.pending_checks == (seq, [(home(sb, 5), home(sb, 5) + 3000)])
    snapshot = region.read(L.JOURNAL_HEADER_OFF, j.end - L.JOURNAL_HEADER_OFF)
    region.store(home(sb, 5) + 2999, b"\x00")  # the data as a power loss left it
    fresh_recovery(region, sb)
    assert region.read(home(sb), 10) == bytes(10)  # dropped: never replayed
    assert region.read(at, L.TXN_HEADER.size) == bytes(L.TXN_HEADER.size)  # erased
    region.store(home(sb, 5) + 2999, b"\x11")
    fresh_recovery(region, sb)
    assert region.read(home(sb), 10) == bytes(10)  # ... for good
    # The same log with the data whole: replayed.
    region.store(L.JOURNAL_HEADER_OFF, snapshot)
    fresh_recovery(region, sb)
    assert region.read(home(sb), 10) == b"replayed 5"


def test_only_the_last_record_s_checks_are_verified(region):
    """A record after it was written once its data was durable: its data may
    since have been overwritten in place, and it still replays."""
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    j.commit(checked_txn(sb, 5, b"\x22" * 100, region))
    j.commit(txn_of((home(sb, 1), b"later")))
    assert j.pending_checks is None  # a durable record covers it
    region.store(home(sb, 5), b"\x33" * 100)
    fresh_recovery(region, sb)
    assert region.read(home(sb), 10) == b"replayed 5"


def test_a_store_over_checked_bytes_waits_for_a_durable_mark(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    pos = j.pos
    j.commit(checked_txn(sb, 7, b"\x44" * 4096, region))
    at = home(sb, 7)
    assert j.unconfirmed([(at + 4000, 200)]) and not j.unconfirmed([(at + 4096, 10)])
    # Another process learns of the pending checks by catching up.
    other = Journal(region, sb)
    other.refresh()
    other.records_between(j.next_seq - 1, pos, j.next_seq)
    assert other.unconfirmed([(at, 1)])
    j.confirm()
    assert j.durable_limit() == j.next_seq and not j.unconfirmed([(at, 4096)])
    assert not other.unconfirmed([(at, 1)])  # the mark is in the pool: it sees it too
    region.store(at, b"\x55" * 4096)  # now harmless
    fresh_recovery(region, sb)
    assert region.read(home(sb), 10) == b"replayed 7"


@pytest.mark.parametrize("checks", [
    [(0, 4096)],  # the superblock: outside the data area
    [("data", 8192), ("data+4096", 4096)],  # the same bytes twice
    [("data+4096", 4096), ("data", 4096)],  # out of order
    [("data", 0)],
    [("end-4096", 8192)],  # past the data area
])  # fmt: skip
def test_checks_outside_the_data_or_not_sorted_and_disjoint_are_corruption(region, checks):
    """Each byte a recovery reads to verify checks is read once: a record
    cannot make it read the pool over and over."""
    sb = superblock(region)
    names = {"data": sb.data_off, "data+4096": sb.data_off + 4096, "end-4096": sb.data_end - 4096}
    j = Journal(region, sb)
    j.recover()
    crafted = [(names.get(off, off), n, 0) for off, n in checks]
    rec = L.pack_txn(j.next_seq, [(home(sb), b"x")], checks=crafted)
    region.store(j.start + j.pos, rec)
    with pytest.raises(daxfs.CorruptionError, match="checks"):
        Journal(region, sb).recover()


def test_a_check_with_its_reserved_word_set_or_in_a_lazy_record_is_no_record(region):
    sb = superblock(region)
    j = Journal(region, sb)
    j.recover()
    rec = bytearray(L.pack_txn(j.next_seq, [], checks=[(sb.data_off, 4096, 0)]))
    rec[-4:] = b"\x01\x00\x00\x00"  # the reserved word, then sealed again
    tail = bytes(rec[8:])
    rec[4:8] = L.txn_crc(L.TXN_MAGIC, tail).to_bytes(4, "little")
    assert L.parse_txn_record(bytes(rec), 0, len(rec), j.next_seq) is None
    lazy = L.pack_txn(j.next_seq, [], checks=[(sb.data_off, 4096, 0)], lazy=True)
    assert L.parse_txn_record(lazy, 0, len(lazy), j.next_seq) is None
    whole = L.pack_txn(j.next_seq, [], checks=[(sb.data_off, 4096, 7)])
    assert L.parse_txn_record(whole, 0, len(whole), j.next_seq).checks == [(sb.data_off, 4096, 7)]
