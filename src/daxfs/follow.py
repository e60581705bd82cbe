"""follow: a read-only mount that uses nothing but the pool's bytes.

Hosts that share a CXL memory device share its bytes but not a kernel:
no flock, no OFD locks, no word of a process's death.  A *follower*
(``daxfs.mount(pool, follow=True)``, ``daxfs mount --follow``) is a
read-only mount that never takes a kernel lock and keeps no state outside
the region.  It follows the writer's commits by itself: each call first
tails the journal from the commit it last applied (the records, each
checked whole by its seq and crc, applied as another process's are:
coherence.apply_records), answers, and then checks that the pool did not
move under the answer; if it did, the call runs again.  DESIGN.md,
"Followers", says why that is enough.

The check (``Follower._unmoved``), made after every call that read the
media (calls answered from the caches alone only need the live word the
same before and after, as coherence.without_lock checks):

* the live word still says the commit the call started from, and
* the next commit, if one is under way, writes no inode slot and no
  directory the call read.  Its record goes at the journal position
  after the last commit, or at the start of the area when a checkpoint
  moved the log there.  A writer stores its record whole before its
  homes, and x86 makes stores visible in order, so a call that read any
  byte of a commit's homes finds that commit's record whole when it looks
  afterwards; a record not whole yet means no home of it was stored.

When the check fails the call runs again, keeping what it read that
stands (``_settle``): catching up drops what the records published since
wrote, and what the commit under way writes is dropped too.  So the
caches hold only what stands at the commit they are said to be at, and
a call that keeps meeting commits loads less each time.

What a follower has open or maps it holds by a lease (followers.py): an
entry in its slot of the pool's follower table, kept alive by a
heartbeat thread, which the writer honours as it honours its own
processes' pins.  An open file is named by its inode number and birth
time; a read after the file went (freed before the lease held it, or
after the lease lapsed) fails with ESTALE rather than return bytes the
writer gave to another file, and a mapping reports ``stale``.  A follower
without write access to the pool file holds no lease (and cannot map).

A follower keeps no map of free space (it never allocates): ``statvfs``
counts it from the inode table, as Linux's statfs counts, with no lock.
A page-cache pool is refused: its writer keeps metadata in private
copies until a group commit, so its homes in the file lag its records
(DESIGN.md, "Group commit").
"""

from __future__ import annotations

import errno
import itertools
import os
import time

from .alloc import make_allocator
from .coherence import MISSED, apply_records, slots_written, without_lock
from .data import seek_in
from .followers import Lease
from .fs import FileSystem, StatVFS
from .inode import InodeTable
from .layout import (
    BLOCK,
    CHUNK,
    INODE_SIZE,
    TXN_HEADER,
    TXN_MAGIC,
    TXN_MAGIC_LAZY,
    VERSION,
    CorruptionError,
    parse_txn_record,
    unpack_itable_head,
)
from .mapping import MapPlan
from .path import oserror, to_str
from .pins import RangePins

# A call that keeps meeting commits gives up after this long (EAGAIN):
# each retry loads less (what the last one loaded and no record since
# named stays cached), so only a writer committing faster than a single
# lookup can load a slot starves a follower.
RETRY_SECONDS = 5.0

# A follower's lease period by default: the writer keeps what a follower
# holds this long after its heartbeat (every quarter of it) stops.
LEASE_SECONDS = 10.0


class Moved(Exception):
    """The pool moved under a follower's call: drop what it loaded, run it again."""


class Opened(int):
    """An open file's inode number, with the birth time that tells the file
    from a later one given the same number, and its entry in the
    follower's lease (None: held by no lease)."""

    btime: int
    seq: int
    lease: int | None = None


class FollowedInodes(InodeTable):
    """The inode table as a follower sees it: a cache of slots and nothing
    of the free-number bookkeeping a writer keeps."""

    def __init__(self, region, sb):
        super().__init__(region, sb)
        self.loaded: set[int] = set()  # slots read by the call under way

    def _load(self, ino: int):
        self.loaded.add(ino)
        return super()._load(ino)

    def slot_is_free(self, ino: int) -> bool:
        self.loaded.add(ino)
        return super().slot_is_free(ino)

    def read_limit(self) -> int:
        self.loaded.add(0)
        return super().read_limit()

    def forget(self, ino: int) -> None:
        self.cache.pop(ino, None)  # (the table's limit comes from the records)

    def in_use(self, ino: int) -> bool:
        return self.valid_ino(ino) and not self.slot_is_free(ino)

    def is_free(self, ino: int) -> bool:
        return self.valid_ino(ino) and self.slot_is_free(ino)


class Following:
    """What Locked is to a writer: the thread lock, and for the outermost
    section a catch-up before and the check after (``Moved`` when it fails)."""

    __slots__ = ("fs", "outer", "seq")

    def __init__(self, fs: Follower):
        self.fs = fs

    def __enter__(self) -> None:
        fs = self.fs
        fs._tlock.acquire()
        try:
            if fs.closed:
                raise ValueError("I/O operation on an unmounted pool")
            self.outer = fs._depth == 0
            if self.outer:
                fs._catch_up()
                self.seq = fs._seen_seq
                fs.inodes.loaded.clear()
                fs._dirs_loaded.clear()
            fs._depth += 1
        except BaseException:
            fs._tlock.release()
            raise

    def __exit__(self, etype, value, tb) -> None:
        fs = self.fs
        fs._depth -= 1
        try:
            if self.outer and not fs._unmoved(self.seq):
                fs._settle()
                raise Moved
        finally:
            fs._tlock.release()


class Follower(FileSystem):
    """A read-only mount that takes no kernel lock (module doc)."""

    def __init__(self, region, sb):
        super().__init__(region, sb, readonly=True)
        self.lease: Lease | None = None  # (mount_follower takes one)
        self.inodes = FollowedInodes(region, sb)
        self.allocator = NoSpaceMap()  # type: ignore[assignment]
        self._dirs_loaded: set[int] = set()  # directories loaded by the call under way
        self.coherence["retries"] = 0

    # -- catching up ---------------------------------------------------------
    def _catch_up(self) -> None:
        """Apply the records published since the last call; on a lap (the
        records we need were written over), drop every cache instead and
        read the log from the start of its current generation."""
        journal = self.journal
        deadline, looked = None, None
        for attempt in itertools.count():
            seq = journal.peek()
            if seq == self._seen_seq:
                return
            records = None
            if 0 <= self._seen_seq < seq:
                records = journal.records_unlocked(self._seen_seq, self._seen_pos, seq)
            if records is not None and not _homes_lag(records):
                self._apply(records)
                self._seen_seq, self._seen_pos = seq, records[-1].next_pos - journal.start
                return
            if records is not None:
                # Unlinks said and not absorbed yet (logical.py): the homes
                # lag them, so nothing is read until the writer absorbs them
                # (within ABSORB_SECONDS, or at its next change).
                if deadline is None or looked != (seq, "lag"):
                    deadline, looked = time.monotonic() + RETRY_SECONDS, (seq, "lag")
                elif time.monotonic() > deadline:
                    raise OSError(
                        errno.EAGAIN,
                        "the writer's last unlinks are not in the pool's homes yet "
                        "(a live writer writes them within a second; if it died, "
                        "mount the pool writable once)",
                    )
                self._wait_a_little(attempt)
                continue
            first = self._first_seq()
            if first is not None and first <= seq and not first <= self._seen_seq <= seq:
                if self._seen_seq >= 0:  # lapped (else: the mount's first call)
                    self._reload()
                    self.coherence["full_rebuilds"] += 1
                self._seen_seq, self._seen_pos = first, 0
                continue
            # A checkpoint or a record under way; or records that never
            # check (damage, or a writer that died inside a checkpoint).
            if deadline is None or looked != (seq, first):  # (the pool moved: wait on)
                deadline, looked = time.monotonic() + RETRY_SECONDS, (seq, first)
            elif time.monotonic() > deadline:
                self._refuse_unreadable_log(seq)
            self._wait_a_little(attempt)

    def _refuse_unreadable_log(self, seq: int) -> None:
        """The records up to ``seq`` stayed unreadable for RETRY_SECONDS,
        with nothing moving: the journal is damaged, or its writer died
        inside a checkpoint (either way a writable mount must see to it)."""
        self.journal.records_between(
            self._seen_seq, self._seen_pos, seq
        )  # (raises on a bad record)
        raise CorruptionError(
            f"the journal's records do not reach commit {seq}, which its live word names "
            "(damaged, or its writer died inside a checkpoint: mount it writable to recover)",
            self.journal.live_off,
        )

    def _first_seq(self) -> int | None:
        """The seq of the first record of the log's current generation, or
        None while its header is being written."""
        journal = self.journal
        try:
            return journal._seq_of_header(journal._header_bytes())
        except Exception:  # (torn: a checkpoint is writing it)
            return None

    def _apply(self, records) -> None:
        if any(rec.says() for rec in records):
            # Absorbed since (_homes_lag): the homes hold them now.
            self._reload()
            self.coherence["full_rebuilds"] += 1
        else:
            apply_records(self, records)
            self.coherence["records_applied"] += len(records)
        head = self.sb.itable_off
        for rec in records:  # the table's limit moves only by a record's write to slot 0
            for dst, data in rec.writes:
                if dst <= head and head + INODE_SIZE <= dst + len(data):
                    raw = data[head - dst : head - dst + INODE_SIZE]
                    self.inodes.limit = unpack_itable_head(raw, head, self.sb.inode_count)

    def _reload(self) -> None:
        """Drop every cache: what is needed is loaded again, call by call."""
        self.inodes.cache.clear()
        self.dirs.clear()
        self._heads.clear()
        self._heads_seq = -1
        if self.on_foreign_change is not None:
            self.on_foreign_change(None, None)

    def _unmoved(self, seq: int) -> bool:
        """May the call under way, which caught up to ``seq``, answer?
        Yes if no commit was published since, and the commit under way, if
        any, changes nothing the call read from the media (module doc)."""
        if self.journal.peek() != seq:
            return False
        under_way = self._record_under_way()
        if under_way is None:
            return True
        return not self._read_any_of(under_way)

    def _record_under_way(self):
        """The next commit's record, as far as it is written: None if not
        begun; True if begun but not whole (then none of its homes was
        stored yet, so none was read); else the whole record.  At the
        position after our last commit, or at the start of the area when a
        checkpoint moved the log there."""
        journal, seq = self.journal, self._seen_seq
        for at in (journal.start + self._seen_pos, journal.start):
            if at + TXN_HEADER.size > journal.end:
                continue
            magic, _crc, tseq, _n, _len = TXN_HEADER.unpack_from(self.region.buf, at)
            if tseq == seq and magic in (TXN_MAGIC, TXN_MAGIC_LAZY):
                rec = parse_txn_record(self.region.buf, at, journal.end, seq, journal.old_crc)
                return True if rec is None else rec
        return None

    def _read_any_of(self, rec) -> bool:
        """Did the call under way read a slot or a directory ``rec`` writes?
        (``rec`` True: a record not whole yet, none of whose homes is stored.)"""
        if rec is True:
            return False
        slots, dirs = self._named_by(rec)
        loaded = self.inodes.loaded
        return (
            not loaded.isdisjoint(slots)
            or not self._dirs_loaded.isdisjoint(dirs)
            or not self._dirs_loaded.isdisjoint(slots)
        )

    def _named_by(self, rec) -> tuple[set[int], set[int]]:
        """The inode slots and the directories' blocks a record writes."""
        sb, slots = self.sb, set()
        for dst, data in rec.writes:
            if sb.itable_off <= dst < sb.itable_end:
                slots.update(slots_written(sb, dst, len(data)))
        return slots, set(rec.touches)

    def _settle(self) -> None:
        """The pool moved under a call: keep what it read that stands at the
        commit published now.  Catching up drops what the records published
        since wrote; what the commit under way writes is dropped here.  (What
        the call read before the records it catches up with is named by them;
        a commit whose record is not whole yet stored no home.)"""
        self._catch_up()
        under_way = self._record_under_way()
        if under_way is not None and under_way is not True:
            slots, named = self._named_by(under_way)
            cache, dirs = self.inodes.cache, self.dirs
            for ino in self.inodes.loaded & slots:
                cache.pop(ino, None)
                dirs.pop(ino, None)
            for ino in self._dirs_loaded & (named | slots):
                dirs.pop(ino, None)
            self._heads.clear()
            self._heads_seq = -1
        self.inodes.loaded.clear()
        self._dirs_loaded.clear()

    def _load_dir(self, ino: int):
        self._dirs_loaded.add(ino)
        return super()._load_dir(ino)

    def _wait_a_little(self, attempt: int) -> None:
        if attempt < 100:
            os.sched_yield()
        else:
            time.sleep(min(1e-3, 1e-5 * attempt))

    # -- every call: answer, check, again if the pool moved --------------------
    def _locked(self, exclusive: bool) -> Following:  # type: ignore[override]
        if exclusive:
            raise oserror(errno.EROFS)
        return Following(self)

    def _retrying(self, fn, *args):
        deadline = None
        for attempt in itertools.count():
            try:
                return fn(*args)
            except Moved:
                self.coherence["retries"] += 1
                now = time.monotonic()
                if deadline is None:
                    deadline = now + RETRY_SECONDS
                elif now > deadline:
                    raise OSError(
                        errno.EAGAIN,
                        f"the pool changed under every attempt for {RETRY_SECONDS:g} s",
                    ) from None
                self._wait_a_little(attempt)

    def _answer(self, answer, *args):
        with self._locked(exclusive=False):
            return answer(*args)

    def _query(self, answer, *args):
        got = without_lock(self, answer, *args)
        if got is MISSED:
            return self._retrying(self._answer, answer, *args)
        return got

    def stat(self, path, *, follow_symlinks: bool = True) -> os.stat_result:
        return self._query(self._stat_path, path, follow_symlinks)

    def _read_file_cached(self, spath: str) -> None:
        """A follower reads a whole file through an open one (its lease keeps
        the bytes; FileSystem's pin-free copy leans on a lock it has not)."""
        return None

    def info(self) -> dict[str, object]:
        d = self._retrying(super().info)
        d["follower"] = True
        return d

    def statvfs(self) -> StatVFS:
        """The counts a writer's allocator, built from a scan of the inode
        table, gives (a follower keeps no map of free space).  Like Linux's
        statfs (ext4 sums per-CPU counters with no lock), not of one
        commit: the scan reads each slot whole, checked, while the writer
        may commit, so a count may mix commits.  A scan that met a slot
        half-written, or a block in two files (freed by one commit, taken
        by the next), is made again."""
        deadline = time.monotonic() + RETRY_SECONDS
        for attempt in itertools.count():
            with self._tlock:
                if self.closed:
                    raise ValueError("I/O operation on an unmounted pool")
                self._catch_up()
                seq = self._seen_seq
                try:
                    used, _orphans = self.inodes.scan()
                except CorruptionError:
                    if self.journal.peek() == seq and self._record_under_way() is None:
                        raise  # (nothing moved: the damage is real)
                    if time.monotonic() > deadline:
                        raise OSError(errno.EAGAIN, "the pool changed under every count") from None
                    self._wait_a_little(attempt)
                    continue
                space = make_allocator(self.sb.allocator, self.sb.data_blocks, used)
                nfree = self.inodes.free_count
            return StatVFS(
                BLOCK, BLOCK, self.sb.data_blocks, space.free_blocks, space.free_blocks,
                self.sb.inode_count - 1, nfree, nfree, os.ST_RDONLY, 255,
                space.free_chunks, self.sb.data_blocks // (CHUNK // BLOCK),
            )  # fmt: skip
        raise AssertionError("unreachable")

    # -- open files -----------------------------------------------------------
    def _open_inode(self, spath: str, kind: str) -> int:
        """Resolve, then hold the file in our lease and check it is still
        the file resolved (followers.py: entry, fence, check); a file
        removed in between is resolved again."""
        while True:
            opened = self._query(self._open_to_read, spath)
            if self.lease is not None:
                opened.lease = self.lease.hold(opened)
                if self.journal.peek() == opened.seq:  # (nothing committed since: still it)
                    break
                try:
                    self._retrying(self._answer_opened, opened, _size, 0, None)
                except OSError as e:
                    self.lease.release(opened.lease)
                    if e.errno == errno.ESTALE:
                        continue
                    raise
                except BaseException:
                    self.lease.release(opened.lease)
                    raise
            break
        with self._tlock:
            self._pin(opened)
        return opened

    def _open_to_read(self, spath: str) -> int:
        r = self._existing(spath)
        self._check_openable(r, spath)
        opened = Opened(r.ino)
        opened.btime = self._inode(r.ino).btime  # type: ignore[arg-type]
        opened.seq = self._seen_seq  # (the commit it was resolved at)
        return opened

    def _pin(self, ino: int) -> None:
        self._open[ino] = self._open.get(ino, 0) + 1  # (a count: no kernel lock)

    def _unpin(self, ino: int) -> None:
        n = self._open.get(ino, 0) - 1
        if n > 0:
            self._open[ino] = n
        else:
            self._open.pop(ino, None)

    def _release(self, ino: int) -> None:
        if not self.closed:
            with self._tlock:
                self._unpin(ino)
                if getattr(ino, "lease", None) is not None and self.lease is not None:
                    self.lease.release(ino.lease)  # type: ignore[attr-defined]

    def _the_file(self, ino: Opened):
        """The inode an open file names, or ESTALE if the writer removed it
        (it could, holding no lease on it, or once our lease lapsed)."""
        if ino.lease is not None and self.lease is not None and not self.lease.valid():
            raise OSError(
                errno.ESTALE, "this follower's lease lapsed: the writer may have removed the file"
            )
        if self._live(ino):
            inode = self._inode(ino)
            if inode.btime == ino.btime:
                return inode
        raise OSError(errno.ESTALE, "the pool's writer removed this file")

    def _if_same_file(self, inode, off: int, arg):
        """``copy(inode, off, x)`` for ``arg`` (copy, x, btime) when the
        cached inode is the opened file (the seqlock read's copy step)."""
        copy, x, opened = arg
        if inode.btime != opened.btime or (opened.lease is not None and self.lease.lost):
            raise NotTheOpenedFile
        return copy(inode, off, x)

    def _from_opened(self, ino: Opened, copy, off: int, x):
        """``copy(inode, off, x)`` for the open file ``ino``: with no check
        but the live word's when this mount is caught up and has it cached,
        else the checked way."""
        try:
            got = self._unlocked_read(ino, self._if_same_file, off, (copy, x, ino))
        except NotTheOpenedFile:
            got = None
        if got is None:
            got = self._retrying(self._answer_opened, ino, copy, off, x)
        return got

    def _answer_opened(self, ino: Opened, copy, off: int, x):
        with self._locked(exclusive=False):
            return copy(self._the_file(ino), off, x)

    def _pread_into(self, ino: int, off: int, b) -> int:
        if type(b) is bytearray or (type(b) is memoryview and b.format == "B" and b.ndim == 1):
            return self._from_opened(ino, self._copy_out, off, b)  # type: ignore[arg-type]
        with memoryview(b) as view:
            return self._pread_into(ino, off, view.cast("B"))

    def _pread(self, ino: int, off: int, n: int | None) -> bytes:
        return self._from_opened(ino, self._read_bytes, off, n)  # type: ignore[arg-type]

    def _size_of(self, ino: int) -> int:
        return self._from_opened(ino, _size, 0, None)  # type: ignore[arg-type]

    def _seek_data(self, ino: int, off: int, hole: bool) -> int:
        return self._from_opened(ino, seek_in, off, hole)  # type: ignore[arg-type]

    # -- mappings ---------------------------------------------------------------
    # FileSystem.map serves as it is: modes "r" and "c" (the others are
    # EROFS on a read-only mount), the plan taken in a checked section, a
    # Mapping over it; the pins are this follower's lease (LeasePins): the
    # writer neither frees nor moves a held file's blocks (an unlinked file
    # stays an orphan, a truncate into it is EBUSY), and ``Mapping.stale``
    # turns True when the file changed or the lease lapsed.
    def _map_pins(self, writable: bool) -> LeasePins:
        if self.lease is None:
            raise OSError(
                errno.EOPNOTSUPP,
                "a follower without write access to the pool holds no lease, so it cannot map",
            )
        return LeasePins(self.region.path, self.lease, self.sb)

    def _plan_map(self, spath: str, mode: str, offset: int, length, size, pins) -> MapPlan:
        """The plan, taken again while the file changed before our lease
        held it (the entry is stored as the plan is taken, and the file
        checked once the plan stands: followers.py)."""
        while True:
            plan = self._retrying(super()._plan_map, spath, mode, offset, length, size, pins)
            if not self._map_is_stale(plan):
                return plan

    def _map_is_stale(self, plan: MapPlan) -> bool:
        if self.closed or self.lease is None or not self.lease.valid():
            return True
        return self._retrying(super()._map_is_stale, plan)

    def _orphan_check_later(self, ino: int):
        return _nothing  # (the writer frees orphans; our lease entry goes with the pins)

    def _free_after(self, seq: int, start: int, n: int) -> None:
        pass  # (frees in the records: a follower keeps no map of free space)

    def _mapped_by_followers(self) -> set[int]:
        return set()  # (nothing to hold back: a follower frees nothing)

    def _release_quarantine(self, durable: int | None = None) -> None:
        pass

    def _start_committer(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self._close_handles()
        with self._tlock:
            self.closed = True
            if self.lease is not None:
                self.lease.close()
            self.region.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "follower"
        return f"<daxfs.FileSystem {self.region.path!r} {state}>"


class LeasePins(RangePins):
    """What a Mapping holds on to, for a follower: a descriptor of the pool
    to map the extents through, as pins.RangePins, but no kernel lock: the
    plan's pin of the file's slot byte becomes its lease's entry for the
    file (mapped), which holds it whole."""

    entry: int | None = None

    def __init__(self, path: str, lease: Lease, sb):
        super().__init__(path, writable=False)
        self.lease, self._itable = lease, (sb.itable_off, sb.itable_end)
        self.ino: int | None = None

    def pin(self, start: int, length: int) -> None:
        lo, hi = self._itable
        if not lo <= start < hi:
            return  # (a data range: the file's entry holds it)
        ino = (start - lo) // INODE_SIZE
        if ino != self.ino:  # (a plan taken again may have resolved another file)
            self._let_go()
            self.entry, self.ino = self.lease.hold(ino, mapped=True), ino

    def release(self) -> None:
        try:
            super().release()
        finally:
            self._let_go()

    def _let_go(self) -> None:
        entry, self.entry = self.entry, None
        if entry is not None:
            self.lease.release(entry)


def _nothing() -> None:
    pass


class NotTheOpenedFile(Exception):
    """The cached inode is not the opened file's: read the checked way."""


class NoSpaceMap:
    """A follower's allocator: it never allocates, so the space the records
    it applies claim needs no bookkeeping (statvfs counts from the table)."""

    def claim(self, start: int, n: int) -> None:
        pass


def _size(inode, _off: int, _x) -> int:
    return inode.size


def mount_follower(
    path,
    *,
    emulate_devdax: bool = False,
    lease_seconds: float = LEASE_SECONDS,
    cls: type[Follower] = Follower,
) -> Follower:
    """Mount the pool at ``path`` as a follower (module doc); ``cls``: a
    subclass (bench follow's model of famfs).  ``lease_seconds``: how long
    the writer keeps what this follower holds after its heartbeat stops
    (followers.py).  Without write access to the pool file a follower
    holds no lease: the writer may then free a file it has open (ESTALE)."""
    from .pool import read_superblock
    from .region import Region

    spath = to_str(path)
    region = Region(spath, readonly=True, emulate_devdax=emulate_devdax)
    try:
        if region.lazy_capable:
            raise OSError(
                errno.EOPNOTSUPP,
                "a follower needs a pool in shared memory (device-dax, fs-dax or tmpfs), "
                "not a file in the page cache, whose writer keeps metadata in private "
                "copies until a group commit",
                spath,
            )
        sb, _ = read_superblock(region)
        if sb.version != VERSION:
            raise OSError(
                errno.EOPNOTSUPP,
                f"the pool is format version {sb.version}; a follower reads only "
                f"version {VERSION}: mount it writable once to upgrade it",
                spath,
            )
        fs = cls(region, sb)
        fs.inodes.limit = fs._retrying(fs._answer, fs.inodes.read_limit)
        try:
            fs.lease = Lease(spath, max(BLOCK, region.align), lease_seconds)
        except PermissionError:
            pass  # (read access only: no lease, module doc)
        return fs
    except BaseException:
        region.close()
        raise


def _homes_lag(records) -> bool:
    """Do the last of ``records`` say changes that no record after them
    absorbed (logical.py)?"""
    return bool(records) and records[-1].says()
