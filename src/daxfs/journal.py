"""journal: atomic multi-record metadata updates and their recovery.

A physical redo log.  A Transaction gathers byte-range writes to metadata
home locations (inode slots, extent blocks, directory blocks).  Commit, in
order:

  1. append the record (header, writes, crc32c over all of it) at the log
     position and persist it: the crc makes the record the commit point, a
     torn record fails its check and is ignored by recovery;
  2. only now store the writes at their home locations, which therefore may
     reach the media in any order and at any time (page-cache write-back,
     cache-line eviction): recovery can always redo them;
  3. publish the new (next_seq, pos) in the live word for other processes.

A record also names what changed beyond its writes, for the other live
processes that catch up from it (coherence.py): the data-area space it
allocated (claims) and the inodes whose directory blocks it changed
(touches).  Recovery checks those entries and otherwise ignores them.

A checkpoint, when the log is full and after recovery, persists the home
locations of every record in the log, then writes the header slot not in
use with the next sequence number (ping-pong, one 512-byte sector each, so
a torn header write leaves the other slot valid) and persists it.  Records
left in the log area carry older sequence numbers and are never replayed.

Recovery reads the newest valid header slot, replays records with
consecutive sequence numbers from the start of the area until the first
that does not check, then checkpoints.  Replaying is idempotent, so a crash
during recovery is recovered by recovering again, and a second recovery
changes nothing.

Lazy mode (``lazy``, page-cache pools, see DESIGN.md "Group commit"): a
commit stores its record (marked lazy) with no flush, and its homes only in
the process's private view (Region.store_home); the kernel may write the
record back at any time, never a home.  A group commit makes everything
stored so far durable with one fdatasync, then writes the durable mark
(the seq below which records are durable, with their data) and persists
it; only then are the homes of those records stored in the file (write
out).  Processes catching up apply the records' homes to their private
views as they read them.  Recovery replays a lazy record only below the
mark, or when the pool was last written in this boot (then the page cache
holds the records and their data, whatever reached the disk).

Checked records (commit="sync" on a page-cache pool, version 6): a change
whose data went into space it allocated names that data in its record with
a crc (REC_CHECK) instead of flushing it first, and one fdatasync makes data
and record durable together.  Only the last record of the log can have
reached the media without its data (every record is stored after the one
before it, and that one's data, was durable), so recovery after a power
loss verifies the checks of the last record alone, unless a durable mark or
checkpoint covers it, and drops it if one fails.  What would make a check
fail later, a store over the bytes it covers, must therefore wait until a
later durable record, a mark or a checkpoint covers it: Journal.unconfirmed
tells a writer so, and Journal.confirm writes the mark (DataPath's
_confirm_in_place).

Said records (version 8, logical.py) write no home: they say an unlink or
a create whose homes a later record, an absorb, writes whole.  Every record
that writes absorbs the said ones before it, so recovery replays the
records that write and leaves the said ones after the last of them
(``unabsorbed``) for the mount to make again; no checkpoint retires them
first.

The caller holds the pool's exclusive lock around commit, checkpoint,
group commit and recovery; this module does no locking of its own.
"""

from __future__ import annotations

import bisect
import errno
import itertools

from sortedcontainers import SortedDict

from .layout import (
    BLOCK,
    JBOOT,
    JBOOT_OFF,
    JHEADER,
    JHOMES,
    JHOMES_OFF,
    JLIVE,
    JLIVE_OFF,
    JMARK,
    JMARK_OFFSETS,
    JOURNAL_HEADER_OFF,
    JSLOT_OFFSETS,
    TXN_HEADER,
    TXN_MAGIC,
    TXN_MAGIC_LAZY,
    CorruptionError,
    Superblock,
    TxnRecord,
    crc32c,
    pack_jheader,
    pack_jmark,
    pack_txn_body,
    parse_txn_record,
    seal_txn,
    unpack_jheader,
    unpack_jmark,
    valid_name,
)
from .region import Region, flush_ranges, merge_ranges

# How many of the latest staged writes a new write may patch in place: the
# repeats worth merging (a directory block header, an inode slot restaged)
# come close together.
PATCH_WINDOW = 64


class Transaction:
    """Byte-range writes to metadata homes, in order, plus allocation bookkeeping."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, bytearray]] = []
        self.allocated: list[tuple[int, int]] = []  # undone if the transaction aborts
        self.to_free: list[tuple[int, int]] = []  # released only after commit
        self.revokes: list[tuple[int, int]] = []  # device ranges this change frees
        self.touched: set[int] = set()  # inodes changed beyond their slots (directories)
        # Device ranges of data stored into space this change allocated, to
        # name with a crc in its record (sync mode, see "Checked records").
        self.checks: list[tuple[int, int]] = []
        # Writes every home that said changes before it left lagging: an
        # absorb (logical.py; said records themselves go by commit_said).
        self.absorbs = False

    def revoke(self, off: int, n: int) -> None:
        """Record that [off, off+n) is freed: recovery will not replay earlier
        writes there (the space may hold unjournaled file data by then)."""
        self.revokes.append((off, n))

    def touch(self, ino: int) -> None:
        """Record that inode ``ino`` changed where its slot does not show it
        (its directory blocks), so other processes drop what they cached."""
        self.touched.add(ino)

    def write(self, off: int, data) -> None:
        """Stage a write.  One that falls inside a recent staged write (with no
        overlapping write after it) patches that one, keeping the record small;
        otherwise it is appended, and replay in order gives it precedence.
        Only the last PATCH_WINDOW writes are searched, so a transaction
        that frees or adopts thousands of inodes stays linear."""
        n = len(data)
        for woff, buf in itertools.islice(reversed(self.writes), PATCH_WINDOW):
            if woff <= off and off + n <= woff + len(buf):
                buf[off - woff : off - woff + n] = data
                return
            if off < woff + len(buf) and woff < off + n:
                break
        self.writes.append((off, bytearray(data)))

    def write_apart(self, off: int, data) -> None:
        """Stage a write that overlaps no write staged before it (an absorb's
        whole homes, each written once): appended, with none searched."""
        self.writes.append((off, bytearray(data)))

    def drop_writes(self, blocks: set[int]) -> None:
        """Forget the staged writes into the 4 KiB blocks at device offsets
        ``blocks`` (a directory's edits rolled back to be made again)."""
        self.writes = [(off, data) for off, data in self.writes if off - off % BLOCK not in blocks]

    def __bool__(self) -> bool:
        return bool(self.writes) or bool(self.allocated) or bool(self.to_free)


class Journal:
    def __init__(self, region: Region, sb: Superblock):
        self.region = region
        self.start = sb.journal_off
        self.end = sb.journal_off + sb.journal_len
        self.header_off = JOURNAL_HEADER_OFF
        self.live_off = JOURNAL_HEADER_OFF + JLIVE_OFF
        # The live word's next_seq (its first field), read by a subscript:
        # every call reads it, and a read with no lock twice.
        self.live_seq = region.word(self.live_off)
        # The seq of the homes-written-out word (JHOMES), and what it was
        # when drop_homes_written_out last looked (lazy mode).
        self._homes_seq_word = region.word(JOURNAL_HEADER_OFF + JHOMES_OFF)
        self._homes_seen: int | None = None
        # Does this process read homes through a private copy (lazy mode)?
        # Fixed when the region is made.
        self.lazy_view = bool(getattr(region, "lazy_capable", False))
        self.next_seq = 1
        self.pos = 0
        self.header_slot = 0
        # Metadata homes a record may name: the inode table and the data area.
        self._homes = ((sb.itable_off, sb.itable_end), (sb.data_off, sb.data_end))
        self._data_area = (sb.data_off, sb.data_end)
        self._inode_count = sb.inode_count
        # A pool before version 5: records whose crc leaves the magic out
        # are read too (layout.parse_txn_record).
        self.old_crc = sb.version < 5
        self._header_seen: tuple[bytes, int] = (b"", 0)  # see _seq_of_header
        self.lazy = False  # group commit (set by the mount, see the module doc)
        # Lazy mode, commit="sync": records durable when written, as without
        # lazy mode, but homes still through the private view, written out
        # at the group commits of the commit interval as in lazy mode (not
        # after each record: the next record's fdatasync would write them).
        self.sync_records = False
        self.last_lazy_seq = -1  # the newest lazy record seen (committed or read)
        # (seq, [(start, end)]) of the newest durable record seen, committed or
        # read, when it has checks: what a store in place must not overwrite
        # until something durable covers it (see "Checked records").
        self.pending_checks: tuple[int, list[tuple[int, int]]] | None = None
        # How many records at the end of the log say changes whose homes no
        # record wrote yet (logical.py): a checkpoint must wait for an
        # absorb, and a record that writes must be one.
        self.unabsorbed = 0

    # -- format ------------------------------------------------------------
    def format(self) -> None:
        """Write a fresh header (seq 1) in slot 0 and clear slot 1."""
        r = self.region
        r.zero(self.header_off, 4096)
        r.store(self.header_off + JSLOT_OFFSETS[0], pack_jheader(1))
        r.zero(self.start, 4096)
        r.persist(self.header_off, 4096)
        r.persist(self.start, 4096)
        self.next_seq, self.pos, self.header_slot = 1, 0, 0
        self._publish()

    # -- live word shared by processes ---------------------------------------
    def _publish(self) -> None:
        self.region.store(self.live_off, JLIVE.pack(self.next_seq, self.pos))

    def peek(self) -> int:
        """The next_seq other processes have published (no state change)."""
        if self.live_seq is None:
            return JLIVE.unpack_from(self.region.buf, self.live_off)[0]
        return self.live_seq[0]

    def refresh(self) -> int:
        """Adopt (next_seq, pos) published by whichever process committed last."""
        seq, pos = JLIVE.unpack_from(self.region.buf, self.live_off)
        if self.start + pos <= self.end:
            self.next_seq, self.pos = seq, pos
        return self.next_seq

    # -- a writer that died inside commit -------------------------------------
    def unpublished(self) -> TxnRecord | None:
        """A committed record at the live position: its writer died between
        its commit point and publishing (step 3), its homes perhaps partly
        stored.  Recovery would replay it; live processes must finish it
        (roll_forward) before anyone commits over it.  Meaningful only under
        the pool lock, when no live writer is inside commit."""
        if self.start + self.pos >= self.end:
            return None
        return parse_txn_record(
            self.region.buf, self.start + self.pos, self.end, self.next_seq, self.old_crc
        )

    def roll_forward(self, rec: TxnRecord) -> None:
        """Finish a dead writer's commit as recovery would: store its homes
        (step 2) and publish (step 3).  Under the exclusive pool lock."""
        at = self.start + self.pos
        self._check_record_homes(rec, at)
        if not rec.lazy and not self.region.volatile:
            # It may have died before its flush: later records count on it
            # being durable (and, if it has checks, its data too).
            if rec.checks:
                self.region.sync_file()
            else:
                self.region.persist(at, rec.next_pos - at)
        self._store_homes([rec], self.region.store_home if self.lazy else self.region.store)
        self._note_record(self.next_seq, rec)
        self.next_seq += 1
        self.pos = rec.next_pos - self.start
        self._publish()

    # -- commit ------------------------------------------------------------
    def prepare(self, txn: Transaction) -> tuple[int, bytes] | None:
        """What commit(txn) will log, but for its sequence number: built
        with no lock held (see layout.pack_txn_body); None for an empty
        transaction.  The transaction must not change before its commit."""
        writes = txn.writes
        if not writes and not txn.revokes and not txn.allocated:
            return None
        for dst, data in writes:
            self._check_home(dst, len(data), None)
        data_off = self._data_area[0]
        claims = [(data_off + b * BLOCK, n * BLOCK) for b, n in txn.allocated]
        return pack_txn_body(
            writes, txn.revokes, claims, sorted(txn.touched), self._checks_of(txn.checks)
        )

    def _checks_of(self, ranges) -> list[tuple[int, int, int]]:
        """(offset, length, crc32c) of the data now in ``ranges``, merged."""
        if not ranges:
            return []
        buf = self.region.buf
        return [(lo, hi - lo, crc32c(buf[lo:hi])) for lo, hi in _check_spans(ranges)]

    def commit(self, txn: Transaction, prepared: tuple[int, bytes] | None = None) -> None:
        """Log ``txn`` (``prepared``: its body from prepare, if made since
        it last changed), store its homes and publish."""
        body = self.prepare(txn) if prepared is None else prepared
        if body is None:
            return
        writes = txn.writes
        if self.unabsorbed and not txn.absorbs:
            raise AssertionError("a record that writes homes after said changes it does not absorb")
        lazy = self.lazy and not self.sync_records  # durable at the next group commit
        if self.sync_records and self.lazy_pending():
            # A record durable when written counts only after every record
            # before it: other processes' lazy ones first.
            self.group_commit()
        record = seal_txn(self.next_seq, body, lazy)
        if len(record) > self.end - self.start:
            raise OSError(errno.ENOSPC, "operation too large for the journal")
        if self.start + self.pos + len(record) > self.end:
            self.checkpoint()  # (refused while said changes are unabsorbed: room is kept)
        r, at = self.region, self.start + self.pos
        r.store(at, record)
        if not lazy:
            try:
                if txn.checks:  # step 1: the commit point, with its data
                    r.sync_file()
                else:
                    r.persist(at, len(record))  # step 1: the commit point
            except OSError:
                r.zero(at, TXN_HEADER.size)  # never let a failed commit replay
                raise
            self.pending_checks = (self.next_seq, _check_spans(txn.checks)) if txn.checks else None
        else:
            self.last_lazy_seq = self.next_seq
        store = r.store_home if self.lazy else r.store
        for dst, data in writes:  # step 2: homes, in any order
            store(dst, data)
        if txn.revokes and self.lazy:
            r.drop_homes(txn.revokes)  # freed: may hold file data next
        self.unabsorbed = 0  # (it wrote homes: an absorb, or nothing was said)
        self.next_seq += 1
        self.pos += len(record)
        self._publish()  # step 3

    def commit_said(self, record: bytes) -> None:
        """Log a record that writes no home (said changes, sealed by the caller
        with next_seq): commit's steps 1 and 3, durable when written.  The
        caller has made sure it fits (room())."""
        r, at = self.region, self.start + self.pos
        assert not self.lazy and at + len(record) <= self.end
        r.store(at, record)
        if not r.volatile:
            try:
                r.persist(at, len(record))
            except OSError:
                r.zero(at, TXN_HEADER.size)  # never let a failed commit replay
                raise
        self.pending_checks = None
        self.unabsorbed += 1
        self.next_seq += 1
        self.pos += len(record)
        self._publish()  # (step 3 of every commit goes through here: tests pause it)

    def unmoved(self, seq: int, pos: int) -> bool:
        """Is this mount caught up, as catch_up would find it, with the fewest
        reads: the live word still says (``seq``, ``pos``), ours too (a
        checkpoint moves the log, not the seq), and no record of ``seq``
        begins there (one whose writer died before publishing: unpublished
        says)."""
        if self.next_seq != seq or self.pos != pos:
            return False
        buf, at = self.region.buf, self.start + pos
        if JLIVE.unpack_from(buf, self.live_off) != (seq, pos):
            return False
        if at + TXN_HEADER.size > self.end:
            return True
        magic, _crc, tseq, _n, _len = TXN_HEADER.unpack_from(buf, at)
        return tseq != seq or magic not in (TXN_MAGIC, TXN_MAGIC_LAZY)

    def room(self) -> int:
        """Bytes left in the log area before a checkpoint is needed."""
        return self.end - self.start - self.pos

    def _note_record(self, seq: int, rec: TxnRecord) -> None:
        """Keep track of the newest lazy record, of pending checks and of
        unabsorbed said changes, for a record committed by another process and
        read here."""
        self.unabsorbed = self.unabsorbed + 1 if rec.says() else 0
        if rec.lazy:
            self.last_lazy_seq = max(self.last_lazy_seq, seq)
        elif rec.checks:
            self.pending_checks = (seq, [(off, off + n) for off, n, _crc in rec.checks])
        else:
            self.pending_checks = None  # durable: the checks before it are covered

    def unconfirmed(self, ranges) -> bool:
        """Would a store into device ``ranges`` ((offset, length) pairs) go over
        data that the newest durable record checks, with nothing durable
        after it yet?  A power loss could then find that record last and its
        check failed by the store: it must be confirmed first (confirm)."""
        pending = self.pending_checks
        if pending is None:
            return False
        seq, spans = pending
        if not any(_overlaps_any(spans, off, off + n) for off, n in ranges):
            return False
        if seq < self.durable_limit():
            self.pending_checks = None
            return False
        return True

    def confirm(self) -> None:
        """Make the records so far count without their checks: a durable mark
        past them (a group commit first if a lazy record is not durable yet,
        for the mark says every record below it is).  Exclusive lock held."""
        if self.lazy_pending():
            self.group_commit()
        else:
            self._mark_durable(self._header_seq(), self.next_seq)
        self.pending_checks = None

    def lazy_pending(self) -> bool:
        """Is a lazy record we know of not yet under the durable mark?"""
        return self.last_lazy_seq >= 0 and self.last_lazy_seq >= self.durable_limit()

    # -- group commit (lazy mode) ----------------------------------------------
    def group_commit(self) -> None:
        """Make every record and every file store so far durable, mark it so,
        and write the records' homes to the file (module doc)."""
        r = self.region
        r.sync_file()  # records and the data they expose, in one flush
        gen = self._header_seq()
        self._mark_durable(gen, self.next_seq)
        self.write_out_homes(gen)

    def _mark_durable(self, gen: int, durable: int) -> None:
        """Write and persist a durable mark: records of generation ``gen``
        below ``durable`` are durable (the caller made them so)."""
        if durable > self.durable_limit():
            slot_off = self.header_off + JMARK_OFFSETS[self._older_mark_slot(gen)]
            self.region.store(slot_off, pack_jmark(gen, durable))
            self.region.persist(slot_off, JMARK.size)

    def durable_limit(self) -> int:
        """Records below this seq are durable with their data (on the media,
        whatever becomes of this boot): the checkpoint's seq, or a durable
        mark of the same log generation past it."""
        gen = self._header_seq()
        return max([gen] + [d for g, d in self._marks() if g == gen])

    def _marks(self) -> list[tuple[int, int]]:
        buf, out = self.region.buf, []
        for o in JMARK_OFFSETS:
            off = self.header_off + o
            mark = unpack_jmark(bytes(buf[off : off + JMARK.size]))
            if mark is not None:
                out.append(mark)
        return out

    def _older_mark_slot(self, gen: int) -> int:
        """The mark slot to write next: one not holding the newest mark of
        this generation, so that a torn write leaves that one whole."""
        best = None
        for i, o in enumerate(JMARK_OFFSETS):
            off = self.header_off + o
            mark = unpack_jmark(bytes(self.region.buf[off : off + JMARK.size]))
            if mark is not None and mark[0] == gen and (best is None or mark[1] > best[1]):
                best = (i, mark[1])
        return 0 if best is None else 1 - best[0]

    def homes_from(self, gen: int) -> tuple[int, int]:
        """(seq, area offset) of the first record of the log whose homes may
        not be in the file: a live word, so checked against the log."""
        seq, pos = JHOMES.unpack_from(self.region.buf, self.header_off + JHOMES_OFF)
        if gen <= seq <= self.next_seq and 0 <= pos <= self.pos:
            return seq, pos
        return gen, 0

    def write_out_homes(self, gen: int) -> None:
        """Store in the file the homes of the records not yet written out (all
        durable by now) and let this process's private copies go."""
        first, pos = self.homes_from(gen)
        records: list[TxnRecord] | None = []
        if first < self.next_seq:
            records = self._read_records(first, pos, self.next_seq, [], apply=False)
            if records is None:  # a live word gone wrong: the whole log, then
                records = [rec for _s, _o, rec in self._committed_from(gen)]
            self._store_homes(records, self.region.store)
        done = JHOMES.pack(self.next_seq, self.pos)
        self.region.store(self.header_off + JHOMES_OFF, done)
        self.region.drop_homes()

    def drop_homes_written_out(self, seen: int) -> None:
        """Lazy mode, pool lock held (so no write out is under way): once
        another process has written out the homes of every record up to
        ``seen`` (our position), our private copies say what the file says
        (or less, for pages it has changed since): let them go, or a
        follower that never writes out would keep a copy of every metadata
        page it ever caught up on."""
        self._homes_seen = self._homes_written_seq()
        if self.lazy_view and self.region.holds_homes:
            if self.homes_from(self._header_seq())[0] >= seen:
                self.region.drop_homes()

    def drop_due(self) -> bool:
        """Might drop_homes_written_out let copies go now?  Only if this
        process holds copies and someone wrote homes out since it last
        looked (every write out, checkpoints' too, stores the word): a call
        that takes no lock (coherence.without_lock) takes it then."""
        return (
            self.lazy_view
            and self.region.holds_homes
            and self._homes_written_seq() != self._homes_seen
        )

    def _homes_written_seq(self) -> int:
        if self._homes_seq_word is None:
            return JHOMES.unpack_from(self.region.buf, self.header_off + JHOMES_OFF)[0]
        return self._homes_seq_word[0]

    def mark_boot(self) -> None:
        """Name this boot and pool file in the live area, before any lazy
        record: recovery within the same boot may then trust the page cache."""
        ident, off = self.region.boot_identity(), self.header_off + JBOOT_OFF
        if bytes(self.region.buf[off : off + JBOOT.size]) != ident:
            self.region.store(off, JBOOT.pack(ident))
            # Durable: a power loss must find it if it finds a lazy record
            # (recovery then looks for stale records to erase).
            self.region.persist(off, JBOOT.size)

    def _same_boot(self) -> bool:
        """Was the pool last written lazily in this boot, this very file?"""
        off = self.header_off + JBOOT_OFF
        try:
            ident = self.region.boot_identity()
        except (AttributeError, OSError):
            return False
        return bytes(self.region.buf[off : off + JBOOT.size]) == ident

    def _store_homes(self, records, store) -> None:
        """Store the records' writes with ``store``, but for writes into space
        that the same or a later record revokes (see recover)."""
        for rec, keep in zip(records, _unrevoked(records), strict=True):
            for (dst, data), wanted in zip(rec.writes, keep, strict=True):
                if wanted:
                    store(dst, data)

    def apply_homes(self, records) -> None:
        """Lazy mode: bring this process's private view up to ``records``
        (other processes' commits, read to catch up): each one's freed space
        first let go, then its writes."""
        if not self.lazy_view or not records:
            return
        r = self.region
        for rec, keep in zip(records, _unrevoked(records), strict=True):
            if rec.revokes:
                r.drop_homes(rec.revokes)
            for (dst, data), wanted in zip(rec.writes, keep, strict=True):
                if wanted:
                    r.store_home(dst, data)

    def reapply_homes(self) -> None:
        """Lazy mode, before a full rebuild: the private view made again from
        the file and every record of the log (applying a record twice, or
        over homes already written out, leaves the same bytes)."""
        if not self.lazy_view:
            return
        self.region.drop_homes()
        records = self.log_records()
        lazy = [seq for seq, rec in records if rec.lazy]
        if lazy:
            self.last_lazy_seq = max(self.last_lazy_seq, lazy[-1])
        self.apply_homes([rec for _seq, rec in records])

    def log_records(self) -> list[tuple[int, TxnRecord]]:
        """(seq, record) of every record of the log, checked."""
        out = []
        for seq, off, rec in self._committed_from(self._header_seq()):
            self._check_record_homes(rec, off)
            out.append((seq, rec))
        return out

    # -- checkpoint --------------------------------------------------------
    def checkpoint(self) -> None:
        if self.unabsorbed:
            # Their homes are not written: retiring them would lose them.
            raise AssertionError("a checkpoint over said changes not absorbed")
        r = self.region
        seq = self._header_seq()  # also learns which slot is current now
        if self.lazy:
            # Records and data durable first, then their homes in the file,
            # durable too, before the header retires the records.
            r.sync_file()
            self.write_out_homes(seq)
            r.sync_file()
        elif not r.volatile:  # on tmpfs there is nothing to flush
            if flush_ranges(r, ((dst, len(data)) for dst, data in self._records(seq))):
                r.fence()
        slot = 1 - self.header_slot
        off = self.header_off + JSLOT_OFFSETS[slot]
        r.store(off, pack_jheader(self.next_seq))
        r.persist(off, JHEADER.size)
        self.header_slot, self.pos = slot, 0
        r.store(self.header_off + JHOMES_OFF, JHOMES.pack(self.next_seq, 0))
        self.pending_checks = None  # every record before it is retired
        self._publish()

    def _records(self, seq: int | None = None):
        """The writes of every committed record in the log, in order."""
        for _seq, _off, rec in self._committed_from(seq):
            yield from rec.writes

    # -- recovery ----------------------------------------------------------
    def _header_seq(self) -> int:
        seq, self.header_slot = self._newest_header()
        return seq

    def _newest_header(self, raw: bytes | None = None) -> tuple[int, int]:
        """(seq, slot) of the newest valid header slot (of the slots' bytes
        ``raw`` read by _header_bytes, or read now)."""
        raw = self._header_bytes() if raw is None else raw
        n = JHEADER.size
        seqs = [unpack_jheader(raw[i * n : i * n + n]) for i in range(len(JSLOT_OFFSETS))]
        valid = [(s, i) for i, s in enumerate(seqs) if s is not None]
        if not valid:
            raise CorruptionError("journal header: both slots invalid", self.header_off)
        return max(valid)

    def recover(self) -> int:
        """Replay committed records and checkpoint; return how many were replayed.

        A write is skipped when the same or a later record revokes its range:
        that space was freed and may now hold file data, which the journal
        never carries (the jbd "revoke" rule).  Deciding that costs
        O(n log n) in the records' entries (see _unrevoked), never a
        comparison of every write with every revoke: a record is input."""
        same_boot = self._same_boot()
        committed = self._replayable(same_boot)
        for _seq, off, rec in committed:
            self._check_record_homes(rec, off)
        records = [rec for _seq, _off, rec in committed]
        if same_boot and any(rec.lazy for rec in records):
            # Records taken from the page cache: durable, with their data,
            # and marked so, before any home of theirs may reach the file
            # (a power loss during this recovery must find them again).
            self.region.sync_file()
            self._mark_durable(self._header_seq(), committed[-1][0] + 1)
        self._store_homes(records, self.region.store)
        if committed:
            last_seq, _off, last = committed[-1]
            self.next_seq, self.pos = last_seq + 1, last.next_pos - self.start
        else:
            self.next_seq, self.pos = self._header_seq(), 0
        self.unabsorbed = len(records) - _last_writing(records)
        erased = not same_boot and self._lazily_written() and self._erase_stale_records()
        if (committed or erased) and not self.unabsorbed:
            self.checkpoint()
        else:
            # The live word may be stale after a crash.  Unabsorbed said changes
            # stay in the log: the mount makes them again in its caches and
            # absorbs them (FileSystem._reload, pool.mount_region).
            self._publish()
        return len(committed)

    def pending_said(self) -> list[TxnRecord]:
        """The records at the end of the log that say changes no record after
        them absorbed, in order: what the homes lag (logical.py)."""
        records = [rec for seq, rec in self.log_records() if seq < self.next_seq]
        tail = records[_last_writing(records) :]
        self.unabsorbed = len(tail)
        return tail

    def _lazily_written(self) -> bool:
        """Has a lazy writer ever named its boot here (mark_boot)?"""
        off = self.header_off + JBOOT_OFF
        return any(self.region.buf[off : off + JBOOT.size])

    def _erase_stale_records(self) -> bool:
        """After a power loss, lazy records past the ones replayed may be
        whole on the media, even after one that is not (the kernel writes
        pages back in any order): their magic is erased before anything new
        is logged, or a later recovery that trusts the page cache, or a
        later generation whose records happened to end where one of them
        starts (or that starts at the same seq), would take it for its own.
        The durable marks stay: until the checkpoint that follows is
        durable, a crash must find the records they cover replayable again
        (and a mark never counts past what was replayed: the records below
        it are durable).  True if anything was erased (durably)."""
        import numpy as np

        r, lo = self.region, self.start + self.pos
        words = np.frombuffer(r.buf, np.uint32, (self.end - lo) // 4, lo)[::2]
        stale = np.flatnonzero((words == TXN_MAGIC) | (words == TXN_MAGIC_LAZY))
        ranges = [(lo + 8 * int(i), 4) for i in stale]
        for off, n in ranges:
            r.store(off, bytes(n))
        if ranges and not r.volatile:
            if flush_ranges(r, ranges):
                r.fence()
        return bool(ranges)

    def _replayable(self, same_boot: bool) -> list[tuple[int, int, TxnRecord]]:
        """The committed records recovery replays: consecutive valid ones,
        each durable when written or under the durable mark.  A lazy record
        past the mark may have reached the media without the data it
        exposes, so it and all after it are dropped, unless the pool was
        last written in this boot: then the page cache, which every process
        reads and writes through, holds the records and their data."""
        committed = list(self._committed())
        if same_boot:
            return committed
        limit = self.durable_limit()
        if committed and self._checks_failed(committed[-1], limit):
            _seq, dropped_off, _rec = committed.pop()
            self.region.zero(dropped_off, TXN_HEADER.size)  # never replayed again
            self.region.persist(dropped_off, TXN_HEADER.size)
        for i, (seq, _off, rec) in enumerate(committed):
            if rec.lazy and seq >= limit:
                return committed[:i]
        return committed

    def _checks_failed(self, last: tuple[int, int, TxnRecord], limit: int) -> bool:
        """Did the last record of the log reach the media without the data its
        checks name?  (Only the last can: see "Checked records".)  Each byte
        is read once: the checks are disjoint and inside the data area."""
        seq, off, rec = last
        if not rec.checks or seq < limit:
            return False
        self._check_record_homes(rec, off)
        buf = self.region.buf
        return any(crc32c(buf[dst : dst + n]) != crc for dst, n, crc in rec.checks)

    def _check_record_homes(self, rec, record_off: int) -> None:
        """Every committed record is checked before anything is stored."""
        for dst, data in rec.writes:
            self._check_home(dst, len(data), record_off)
        for dst, n in rec.revokes:
            self._check_home(dst, n, record_off)
        lo, hi = self._data_area
        for dst, n in rec.claims:
            if not (lo <= dst and dst + n <= hi and dst % BLOCK == 0 and n % BLOCK == 0 and n):
                raise CorruptionError("journal record claims space outside the data", record_off)
        for ino in rec.touches + [ino for ino, _slot in rec.fills + rec.rewrites]:
            if not 1 <= ino < self._inode_count:
                raise CorruptionError("journal record touches no inode", record_off)
        for parent, ino, name, *_rest in rec.unlinks + rec.creates:
            if not (1 <= parent < self._inode_count and 1 <= ino < self._inode_count):
                raise CorruptionError("journal record names no inode", record_off)
            if not valid_name(name):
                raise CorruptionError("journal record names a name that is none", record_off)
        end = lo
        for dst, n, _crc in rec.checks:  # sorted and disjoint: read once each
            if not (end <= dst and n and dst + n <= hi):
                raise CorruptionError(
                    "journal record checks data outside the data area, or the same bytes twice",
                    record_off,
                )
            end = dst + n

    # -- catching up (other processes' commits) ------------------------------
    def records_between(self, seq: int, pos: int, upto: int) -> list[TxnRecord] | None:
        """The committed records ``seq`` .. ``upto``-1, the first at area offset
        ``pos``, each checked as recovery checks it; None when they are not
        all in the log any more (the caller was lapped).  The caller holds
        the pool lock.

        Records a checkpoint has retired since stay readable until the new
        records reach them, so a caller only a little behind a checkpoint
        reads the old ones from where it stopped, then the new ones from the
        start of the area.  A record is taken only whole with its expected
        seq and crc, so an overwritten one is never mistaken for it."""
        first = self._header_seq()
        out: list[TxnRecord] = []
        if seq > first:
            return self._read_records(seq, pos, upto, out)
        if seq < first and self._read_records(seq, pos, first, out) is None:
            return None
        return self._read_records(first, 0, upto, out)

    def records_unlocked(self, seq: int, pos: int, upto: int) -> list[TxnRecord] | None:
        """records_between for a caller holding no pool lock (an optimistic
        change, coherence.py), changing no state of this Journal.  Only
        records of the current log generation are taken: those before the
        published position are never written again until a checkpoint, and a
        checkpoint writes the header slot before any record over them (x86
        stores are seen in order), so a header seq the same after the reads
        as before means nothing read was being overwritten.  The seq and crc
        each record must carry guard the same again.  None whenever in doubt:
        the caller then reads them under the lock."""
        try:
            raw = self._header_bytes()
            first = self._seq_of_header(raw)
            if seq < first:
                return None
            out: list[TxnRecord] = []
            if self._read_records(seq, pos, upto, out) is None:
                return None
            if self._header_bytes() != raw:
                return None
        except CorruptionError:  # a torn read; under the lock it is real or gone
            return None
        return out

    def _header_bytes(self) -> bytes:
        buf, off = self.region.buf, self.header_off
        return b"".join(bytes(buf[off + o : off + o + JHEADER.size]) for o in JSLOT_OFFSETS)

    def _seq_of_header(self, raw: bytes) -> int:
        """The newest seq of the header slots whose bytes are ``raw``, decoded
        once per header (catching up reads it on every call)."""
        if raw != self._header_seen[0]:
            self._header_seen = (raw, self._newest_header(raw)[0])
        return self._header_seen[1]

    def _read_records(
        self, seq: int, pos: int, upto: int, out: list[TxnRecord], apply: bool = True
    ) -> list[TxnRecord] | None:
        first = len(out)
        while seq < upto:
            at = self.start + pos
            rec = parse_txn_record(self.region.buf, at, self.end, seq, self.old_crc)
            if rec is None:
                return None
            self._check_record_homes(rec, at)
            out.append(rec)
            self._note_record(seq, rec)
            seq, pos = seq + 1, rec.next_pos - self.start
        if apply:  # lazy mode: committed, so in our view from now on
            self.apply_homes(out[first:])
        return out

    def _committed(self):
        """(seq, offset, TxnRecord) of each committed record, in order."""
        return self._committed_from(None)

    def _committed_from(self, seq: int | None):
        seq, pos = (self._header_seq() if seq is None else seq), 0
        while True:
            rec = parse_txn_record(self.region.buf, self.start + pos, self.end, seq, self.old_crc)
            if rec is None:
                return
            yield seq, self.start + pos, rec
            seq, pos = seq + 1, rec.next_pos - self.start

    def _check_home(self, dst: int, n: int, record_off: int | None) -> None:
        for lo, hi in self._homes:
            if lo <= dst and dst + n <= hi:
                return
        if record_off is None:
            raise AssertionError(f"write outside metadata homes: {dst:#x}+{n}")
        raise CorruptionError("journal record names a write outside the pool", record_off)

    def describe(self) -> dict[str, int]:
        return {
            "journal_bytes": self.end - self.start,
            "journal_used": self.pos,
            "next_seq": self.next_seq,
        }


def _last_writing(records) -> int:
    """The index after the last of ``records`` that says nothing (it wrote
    homes: it absorbed every said change before it), or 0."""
    for i in range(len(records) - 1, -1, -1):
        if not records[i].says():
            return i + 1
    return 0


def _unrevoked(records) -> list[list[bool]]:
    """For each record, which of its writes recovery stores: those that share
    no byte with a revoke of the same or a later record.  The records are
    visited newest first, adding each one's revokes to a set of merged
    ranges before testing its writes, so each entry costs O(log n)."""
    if not any(rec.revokes for rec in records):  # (most batches: every write kept)
        return [[True] * len(rec.writes) for rec in records]
    revoked = RangeSet()
    keep: list[list[bool]] = []
    for rec in reversed(records):
        for dst, n in rec.revokes:
            revoked.add(dst, dst + n)
        keep.append([not revoked.overlaps(dst, dst + len(data)) for dst, data in rec.writes])
    keep.reverse()
    return keep


class RangeSet:
    """Disjoint byte ranges [start, end), merged as they are added; whether a
    range shares a byte with any of them is one O(log n) search."""

    def __init__(self) -> None:
        self._end_of = SortedDict()  # start -> end, the ranges never touch

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        ranges = self._end_of
        i = ranges.bisect_right(start)
        if i:
            s, e = ranges.peekitem(i - 1)
            if e >= start:  # the range before reaches this one: grow it
                start, end = s, max(end, e)
                del ranges[s]
                i -= 1
        while i < len(ranges):
            s, e = ranges.peekitem(i)
            if s > end:
                break
            end = max(end, e)
            del ranges[s]
        ranges[start] = end

    def overlaps(self, start: int, end: int) -> bool:
        if end <= start:
            return False
        i = self._end_of.bisect_left(end)  # ranges starting before ``end``
        return bool(i) and self._end_of.peekitem(i - 1)[1] > start


def _overlaps_any(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Does [start, end) share a byte with one of the sorted, disjoint
    (start, end) ``spans``?  A bisection: a large write's extents times a
    record's checks would be quadratic."""
    i = bisect.bisect_right(spans, (start, 2**64))  # the first span starting after start
    if i and spans[i - 1][1] > start:
        return True
    return i < len(spans) and spans[i][0] < end


def _check_spans(ranges) -> list[tuple[int, int]]:
    """(offset, length) ranges as the sorted, disjoint (start, end) spans a
    record's checks name."""
    return merge_ranges((off, off + n) for off, n in ranges)
