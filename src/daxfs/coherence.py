"""coherence: several processes (and threads) on one pool.

Every public call runs under the FileSystem's thread lock and the pool lock
(flock on the pool file: shared for reads, exclusive for changes): Locked.
A change is one journal transaction under the exclusive lock: Change.

Catching up.  Each process caches inodes, directories and its allocator's
view of free space.  The journal's live word says how far the pool's
commits have gone; a mount remembers the commit its caches reflect
(``_seen_seq``, and ``_seen_pos`` where the next record starts).  On taking
the pool lock, a call that finds newer commits reads just those records
and applies them (catch_up): the inode slots they write and the
directories they touch are dropped from the caches (and reloaded from the
media when next used), the space they claim and revoke is taken from and
given back to the allocator, and freed inode slots become free inode
numbers.  This costs O(what the records hold), never a scan.

Only when the records are gone does a process rebuild everything from the
inode table (counted as ``full_rebuilds``): the log has lapped it (a
checkpoint reused the area), or its view of the space disagrees with them
(which would mean a bug, so it is counted too).  PostgreSQL's shared
invalidation queue works the same way (sinvaladt.c: read from your own
position, reset when you fall too far behind).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from .dir import path_drops
from .inode import NotCached
from .journal import RangeSet, Transaction
from .layout import (
    BLOCK,
    INODE_SIZE,
    JOURNAL_HEADER_OFF,
    TXN_HEADER,
    CorruptionError,
    TxnRecord,
    unpack_extblock,
    unpack_inode,
)
from .path import oserror
from .pins import READER_WAITING_BYTE, WAITING_BYTE, set_lock, writer_mounted

# Forks seen by this process: bumped in every child, so a FileSystem can tell
# it was inherited without a getpid() system call on every operation.
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


def forks_seen() -> int:
    return _forks[0]


# How long a process asking for a pool lock that another holds polls for it
# before sleeping in flock.  Waking a sleeper on another CPU costs about
# 40 us here (a pipe round trip between two CPUs takes 80 us, on one CPU
# 3 us), about as long as a pool-lock section, and flock hands the lock to
# nobody: the holder, back first, takes it again and the woken one sleeps
# anew.  Sleeping on each contended lock made two processes slower than
# one; polling (with the CPU yielded between polls to processes that need
# it, and lock-free catching up done meanwhile) keeps the lock moving.
# Measured with two processes creating in one directory: 0.65x of one
# process sleeping at once, 0.7x polling 100 us, 0.83x 300 us, 0.9x 1 ms.
# Past the limit a process sleeps, so a slow holder costs a bounded spin.
# (A said change waiting for another's turn to end polls longer:
# logical.SAID_SPIN.)
SPIN_SECONDS = 500e-6


def lock_pool(fd: int, op: int, meanwhile=None, arg=None, spin: float = SPIN_SECONDS) -> None:
    """flock(fd, op), polling ``spin`` seconds before sleeping (see SPIN_SECONDS);
    ``meanwhile(arg)``, if given, is called between polls (work that needs
    no lock and shortens what the lock will be held for).  A function and
    its argument, not a closure: nothing is built on the uncontended path.
    Waiting marks pins.WAITING_BYTE (for the exclusive lock) or
    READER_WAITING_BYTE (for the shared one) meanwhile."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    # (A reader keeping the shared lock lets it go for a writer that waits;
    # a writer keeping the exclusive one beside others, for anyone.)
    waiting = WAITING_BYTE if op == fcntl.LOCK_EX else READER_WAITING_BYTE
    set_lock(fd, fcntl.F_RDLCK, waiting, 1)
    try:
        deadline = time.perf_counter() + spin
        while time.perf_counter() < deadline:
            if meanwhile is not None:
                meanwhile(arg)
            os.sched_yield()
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
        fcntl.flock(fd, op)
    finally:
        set_lock(fd, fcntl.F_UNLCK, waiting, 1)


# What without_lock returns when it could not answer.
MISSED = object()


def without_lock(fs, answer, *args):
    """``answer(*args)`` with no pool lock and no system call, when
    nothing was committed since this mount last caught up: a seqlock on
    the journal's live word, read before and after.  MISSED when the word
    moved (or may have), or the answer needed a slot or a directory not
    cached here; the caller then asks under the lock.

    Why it is safe: this mount's caches hold the pool as of ``_seen_seq``
    and change only under the thread lock, taken here; if the live word
    equals it, they are a committed state, the latest when the word was
    read.  Slots and directory blocks are homes, which a committer stores
    before it publishes, so they are never read here (cache_only).  What
    is read from the media besides (a symlink's target, a file's bytes)
    lies in space that only a commit frees, before anyone reuses it: a
    read of space freed meanwhile sees the word move.  An answer that is
    an error is checked the same way.  The loads are ordered on x86;
    DESIGN.md, "Reads and queries with no lock"."""
    if fs._forks != _forks[0] or fs._unmapped:
        return MISSED
    lock = fs._tlock
    lock.acquire()  # (not ``with``: this is on every query's path)
    try:
        peek = fs.journal.peek
        seq = peek()
        if (
            fs._depth
            or fs.closed
            or seq != fs._seen_seq
            or (fs.journal.lazy_view and fs.journal.drop_due())
        ):
            return MISSED
        inodes = fs.inodes
        inodes.cache_only = True
        try:
            got = answer(*args)
        except NotCached:
            return MISSED
        except Exception:
            if peek() != seq:
                return MISSED
            raise
        finally:
            inodes.cache_only = False
        return got if peek() == seq else MISSED
    finally:
        lock.release()


def cached_under_shared_lock(fs, answer, *args):
    """``answer(*args)`` under the shared pool lock, for an answer that must
    not meet a change half-way (an open's pin: a process freeing the inode
    checks for pins under the exclusive lock), when this mount is caught up:
    then with no catching up at all, and from the caches only, as
    without_lock answers (so a dead writer's record, which only a reader
    of the media must finish first, is not looked for).  MISSED when it
    cannot; the caller then takes the lock the usual way (Locked)."""
    if fs._forks != _forks[0] or fs._unmapped:
        return MISSED
    lock = fs._tlock
    lock.acquire()
    try:
        if fs._depth or fs.closed or (fs.journal.lazy_view and fs.journal.drop_due()):
            return MISSED
        fd, held = fs.region.fd, fs._held  # (kept exclusively: logical.py)
        if not held:
            lock_pool(fd, fcntl.LOCK_SH, catch_up_unlocked, fs)
        inodes = fs.inodes
        try:
            if fs.journal.peek() != fs._seen_seq:
                return MISSED
            fs._depth += 1  # (calls it makes are inside this section)
            inodes.cache_only = True
            try:
                return answer(*args)
            except NotCached:
                return MISSED
            finally:
                inodes.cache_only = False
                fs._depth -= 1
        finally:
            if not held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        lock.release()


def catch_up(fs, exclusive: bool = True) -> None:
    """Bring this mount's caches up to the pool's last commit (pool lock held,
    exclusive or not)."""
    journal = fs.journal
    seq = journal.refresh()
    if fs._private_baseline is not None:
        if (seq, journal.pos) != fs._private_baseline:
            recover_privately(fs)  # (again, or the file's own now: see there)
        return  # (else nobody moved the pool: what we recovered stands)
    if journal.unpublished() is None:
        fs.inodes.stalled = False
    elif fs.readonly:
        fs.inodes.stalled = True  # (it cannot finish it: loads wait for a writer)
    else:
        seq = finish_dead_commit(fs, exclusive)
    if seq == fs._seen_seq:
        fs._seen_pos = journal.pos  # (a checkpoint moves the log, not the seq)
        journal.drop_homes_written_out(seq)
        return
    records = None
    if 0 <= fs._seen_seq < seq:
        records = journal.records_between(fs._seen_seq, fs._seen_pos, seq)
    if records is not None and apply_records(fs, records, locked=True):
        fs.coherence["records_applied"] += len(records)
    else:
        fs._reload()
        fs.coherence["full_rebuilds"] += 1
    fs._seen_seq, fs._seen_pos = seq, journal.pos
    journal.drop_homes_written_out(seq)


# Backings every process opens as the same kind, and none of them as a
# page-cache file: no writer on them commits lazily (Region.lazy_capable).
NEVER_LAZY = frozenset({"tmpfs", "devdax", "fsdax"})


def reader_must_recover(journal, region) -> bool:
    """Must the journal be recovered before a read-only mount reads it?
    Under the shared pool lock (pool.py, "A read-only mount of a live pool")."""
    journal.refresh()
    if journal.unpublished() is not None:
        return True  # (a said one too: recovery keeps it, the live word does not)
    if not writer_mounted(region.fd):
        return any(True for _ in journal._records())  # any record that writes homes
    # Lazy records: only a writer on a page-cache file writes them, so the
    # log (up to 16 MiB of records) is walked only where one may have.
    if journal.lazy_view or getattr(region, "kind", "file") in NEVER_LAZY:
        return False
    return any(rec.lazy for _seq, rec in journal.log_records())


def recover_privately(fs) -> None:
    """A read-only mount on a private region (pool.py, "Recovered in
    private"), under the shared pool lock: let every store it made go,
    and if the pool still needs recovery, recover it in the private view
    again; then rebuild the caches.  The journal's header block is let go
    after the recovery, so the live word read is the file's: the baseline
    a later catch_up compares it with.  Once nobody needs recovery (a
    writer mounted and recovered the file), the mount reads the file as
    any other."""
    region, journal = fs.region, fs.journal
    region.forget_stores()
    fs._private_baseline = None
    fs.inodes.stalled = False
    must = reader_must_recover(journal, region)  # (the live word adopted)
    if must:
        journal.recover()  # (stores go to the private view only)
        region.forget_stores(JOURNAL_HEADER_OFF, BLOCK)
    fs._reload()  # (said changes made again as far as the recovery went)
    fs._heads.clear()  # (the path cache too: it was of the view let go)
    fs._heads_seq = -1
    fs._seen_seq, fs._seen_pos = journal.next_seq, journal.pos
    if must:  # the file's live word, as catch_up will read it
        fs._private_baseline = fs._seen_seq, fs._seen_pos = journal.refresh(), journal.pos


def catch_up_unlocked(fs) -> bool:
    """Catch up with no pool lock held, as an optimistic change does: apply
    the records published since our position when they can be read safely
    (Journal.records_unlocked).  False when the locked way must do it: the
    records are not all readable so, or our allocator disagrees with them
    (then the next locked catch-up rebuilds).  A commit whose writer died
    before publishing is left for the locked way too."""
    journal = fs.journal
    seq = journal.peek()
    if seq == fs._seen_seq:
        return True
    if not 0 <= fs._seen_seq < seq:
        return False
    records = journal.records_unlocked(fs._seen_seq, fs._seen_pos, seq)
    if records is None:
        return False
    applied = apply_records(fs, records)
    if applied is None:
        return False  # (nothing applied: the locked way applies them)
    if not applied:
        fs._seen_seq = -1  # applied in part: rebuild under the lock
        return False
    fs.coherence["records_applied"] += len(records)
    fs._seen_seq, fs._seen_pos = seq, records[-1].next_pos - journal.start
    return True


def slots_written(sb, dst: int, n: int) -> range:
    """The inode numbers whose slots a write of n bytes at ``dst`` (inside
    the inode table) covers."""
    first = (dst - sb.itable_off) // INODE_SIZE
    return range(first, (dst + n - 1 - sb.itable_off) // INODE_SIZE + 1)


def finish_dead_commit(fs, exclusive: bool) -> int:
    """A process died inside commit, after its commit point and before
    publishing: finish its commit (its record is committed: recovery would
    replay it), or the next commit would be written over it and its half
    stored homes would stay.  Needs the exclusive lock; a shared one is
    converted and back (flock converts by release and retake, so check
    again: someone else may have finished it meanwhile)."""
    journal = fs.journal
    if not exclusive:
        lock_pool(fs.region.fd, fcntl.LOCK_EX)
    try:
        journal.refresh()
        rec = journal.unpublished()
        if rec is not None:
            journal.roll_forward(rec)
            fs.coherence["dead_commits_finished"] += 1
    finally:
        if not exclusive:
            lock_pool(fs.region.fd, fcntl.LOCK_SH)
    return journal.refresh()


def apply_records(
    fs, records, refreshed: frozenset[int] = frozenset(), locked: bool = False
) -> bool | None:
    """Apply other processes' committed records to our caches (but for the
    directories in ``refreshed``: refresh_dirs took them in already).
    Those up to the last that writes homes are applied as written
    (_apply_written): the homes hold what they did, said changes among
    them included (the record that writes after them absorbed them).
    Those after it say changes, made again (_apply_said) on the homes,
    which they lag.  True: applied.  False: our allocator's view
    disagrees with them, perhaps after some were applied (the caller
    rebuilds).  None: said changes that cannot be made again without the
    pool lock (_said_unlocked_ok), nothing applied (the locked way does
    it).  ``locked``: the pool lock is held (catch_up), so that homes may
    be read."""
    last = len(records)
    while last and not records[last - 1].writes:
        last -= 1
    written, said = records[:last], records[last:]
    if said and not locked and (written or not _said_unlocked_ok(fs, said)):
        return None  # (loads of homes an absorb may be storing: the lock first)
    try:
        # What our said unlinks freed goes back first: another's change after
        # them may have taken it (it freed them as it made them again).
        fs._release_said()
        if written and not _apply_written(fs, written, refreshed):
            return False
        return _apply_said(fs, said) if said else True
    except BaseException:
        fs._seen_seq = -1  # (applied in part, then damage met: never again on top)
        raise


def _apply_written(fs, records, refreshed: frozenset[int]) -> bool:
    """apply_records of records up to one that writes homes: any that say
    changes were absorbed by a later one, so they count as written (their
    claims and revokes taken in, what they name dropped from the caches,
    loaded again from the homes)."""
    sb, allocator = fs.sb, fs.allocator
    lagging = fs._lag_slots  # (whole slots written as we hold them: kept, below)
    if fs._lag_bytes:
        # The first record that writes after said changes absorbed them all,
        # ours too, each lagging block written whole as its writer holds it.
        # Ours holds the same names (a create's record names its block),
        # perhaps at other places in it (compacted or not): the absorb's
        # blocks are laid over ours below, as any record's writes.  Where a
        # create was made again with no block named, the directory is
        # loaded again from the homes, now current.
        for ino in fs._lag_loose:
            fs.dirs.pop(ino, None)
        fs._forget_lag()
        fs._release_said()
    # Lazy mode: space their commits free waits for a durable mark; what
    # waited may be free now, and their claims may be of it.
    fs._release_quarantine()
    freed_before = fs.journal.peek()
    slots: set[int] = set()  # inodes whose slots were written
    whole_slots: dict[int, bytes] = {}  # of those, the last bytes of slots written whole
    touched: set[int] = set()  # directories whose blocks were written
    # The data-area writes, by block (device offsets).
    written: dict[int, list[tuple[int, bytes]]] = {}
    said_dirs: set[int] = set()  # directories said changes edited
    # Frees of files a follower maps wait (FileSystem._free_committed).
    mapped = fs._mapped_by_followers()
    try:
        for rec in records:
            rec_slots: set[int] = set()
            if rec.says():
                rec_slots.update(_said_inos(rec))
                slots.update(rec_slots)
                said_dirs.update(_said_dirs(rec))
            for dst, data in rec.writes:
                if sb.itable_off <= dst < sb.itable_end:
                    inos = slots_written(sb, dst, len(data))
                    slots.update(inos)
                    rec_slots.update(inos)
                    if rec.lazy and fs._batching:
                        fs._shrunk.update(inos)  # (maybe shrunk: DataPath._before_regrowing)
                    if not (fs.dirs.keys().isdisjoint(inos) and lagging.isdisjoint(inos)):
                        note_slot_bytes(whole_slots, sb, inos, dst, data)
                else:
                    add_written(written, dst, data)
            touched.update(rec.touches)
            # A record never frees what it claims (freed space is reusable
            # only after its commit), so claims then revokes is its order.
            for dev, n in rec.claims:
                allocator.claim((dev - sb.data_off) // BLOCK, n // BLOCK)
            runs = [((dev - sb.data_off) // BLOCK, n // BLOCK) for dev, n in rec.revokes]
            if runs and not mapped.isdisjoint(rec_slots):
                fs._held_back.append((frozenset(mapped & rec_slots), runs))
                continue
            for start, n in runs:
                # A lazy record's frees wait for a durable mark; one durable
                # when written (sync mode, pmem) was durable with all before it.
                fs._free_after(freed_before if rec.lazy else 0, start, n)
    except AssertionError:
        return False
    # Directories said changes edited, not made again here: the record that
    # writes after them wrote every block they changed whole (an absorb, or
    # a change absorbing with its own, touching the directory), and every
    # copy holds the same names in the same blocks (a create's record names
    # its block), so those blocks are laid over ours with the rest below.
    # (Where the records did not write a block they edited, the homes still
    # hold it as our copy does: neither made those changes.)  One they did
    # not touch is loaded again.
    dropped = {ino for ino in said_dirs - touched if fs.dirs.pop(ino, None) is not None}
    if lagging:
        slots -= _slots_as_cached(fs, lagging, whole_slots)
    for ino in slots:
        cached = fs.inodes.cache.get(ino)
        fs.inodes.forget(ino)
        d = fs.dirs.get(ino)
        if d is not None and not kept_blocks(fs, d, cached, whole_slots.get(ino), written):
            del fs.dirs[ino]
            dropped.add(ino)
    # A directory whose blocks are the same keeps them: the records' writes
    # in them are laid over our copy (one shared directory, where others
    # create files and directories, stays cheap to follow).
    refresh_cached_dirs(fs, touched - dropped - refreshed, written)
    if fs.on_foreign_change is not None:
        fs.on_foreign_change(slots, touched)
    return True


def _slots_as_cached(fs, lagging: set[int], whole_slots: dict[int, bytes]) -> set[int]:
    """Of the slots that lagged for us (said changes made again here), those
    the records wrote whole, last, with the very bytes our cached inode
    packs to: an absorb's writes of what every process holds alike.  They
    stay cached (an absorb would otherwise send every file said since the
    last one to be loaded again, in every process)."""
    cache, same = fs.inodes.cache, set()
    for ino in lagging:
        raw, inode = whole_slots.get(ino), cache.get(ino)
        if raw is not None and inode is not None and not inode.ext_blocks:
            if inode.slot(0) == raw:
                same.add(ino)
    return same


def _claims_overlap(fs, records, mine_space) -> bool:
    """Do ``records`` claim any block of ``mine_space`` (block runs)?"""
    sb = fs.sb
    claims = [
        ((dev - sb.data_off) // BLOCK, n // BLOCK) for rec in records for dev, n in rec.claims
    ]
    if len(claims) * len(mine_space) <= 64:  # the usual few: compare each pair
        return any(b < s + k and s < b + n for b, n in claims for s, k in mine_space)
    taken = RangeSet()  # many: O((claims + ours) log ours)
    for s, k in mine_space:
        taken.add(s, s + k)
    return any(taken.overlaps(b, b + n) for b, n in claims)


def _said_inos(rec) -> set[int]:
    """The inodes a record that says changes names (their slots lag it)."""
    inos = {entry[1] for entry in rec.unlinks + rec.creates}
    inos.update(ino for ino, _slot in rec.fills + rec.rewrites)
    return inos


def _said_dirs(rec) -> set[int]:
    """The directories a record that says changes names (their blocks lag it)."""
    return {entry[0] for entry in rec.unlinks + rec.creates}


def _said_unlocked_ok(fs, records) -> bool:
    """May ``records`` be applied with no pool lock held (catch_up_unlocked,
    an optimistic change's check)?  Only if each says changes (none writes
    homes: an absorb is stored over the blocks we would read) and every
    directory and inode they name is cached when its record comes to be
    made again: a load from the homes then could meet an absorb being
    stored.  Followed in order, as a number an unlink freed may be made
    again by a create after it (and one made before it is cached by then)."""
    if not all(rec.says() for rec in records):
        return False
    cached, dirs = fs.inodes.cache, fs.dirs
    made: set[int] = set()  # numbers made by the records so far: cached then
    gone: set[int] = set()  # numbers unlinked by them so far: dropped then

    def held(ino: int) -> bool:
        return ino in made or (ino in cached and ino not in gone)

    for rec in records:
        for entry in rec.unlinks:
            if not (entry[0] in dirs and entry[0] in cached) or not held(entry[1]):
                return False
            made.discard(entry[1])
            gone.add(entry[1])
        for entry in rec.creates:
            if not (entry[0] in dirs and entry[0] in cached):
                return False
            made.add(entry[1])
        if not all(held(ino) for ino, _slot in rec.fills + rec.rewrites):
            return False
    return True


def _apply_said(fs, records) -> bool:
    """Records that say changes (logical.py), made again in our caches one by
    one, as the writer made them (their homes lag: every process that
    catches up counts them in its lag, and whoever writes homes next
    absorbs them)."""
    for rec in records:
        fs._redo_said(rec)
    if fs.on_foreign_change is not None:
        inos = set().union(*map(_said_inos, records))
        fs.on_foreign_change(inos, set().union(*map(_said_dirs, records)))
    return True


def note_slot_bytes(whole_slots: dict[int, bytes], sb, inos: range, dst: int, data) -> None:
    """Keep the bytes a record wrote to slots ``inos`` (a write at ``dst``)
    where it wrote a slot whole, as an inode is staged; forget them where
    it wrote part of one."""
    for ino in inos:
        off = sb.itable_off + ino * INODE_SIZE
        if dst <= off and off + INODE_SIZE <= dst + len(data):
            whole_slots[ino] = bytes(data[off - dst : off - dst + INODE_SIZE])
        else:
            whole_slots.pop(ino, None)


def kept_blocks(fs, d, cached, slot: bytes | None, written) -> bool:
    """Does directory ``d`` keep its blocks by the slot the records wrote
    whole (``slot``; ``cached``: its inode before), or only gain blocks at
    its end, each written whole by them (a name added where no block had
    room)?  Gained blocks are added to our copy from the records' writes
    (taken out of ``written``).  New times, links, owner or permissions
    leave the blocks.
    False, nothing changed, when they differ otherwise, the number has a
    new owner (another type or birth), or we cannot tell from the records
    and our copy alone: the caller loads the directory again.  Before, a
    directory was loaded again whenever it grew, and whenever its slot was
    written once its extents passed the slot (past 32 blocks, about 8,000
    names): in every process, a parse of every name, at every such write."""
    if cached is None or slot is None or d.ops is not None:
        return False  # (d.ops: an optimistic change tracks it, and rebases on it)
    try:
        r = unpack_inode(slot, fs.inodes.slot_off(d.ino), d.ino)
        if stat.S_IFMT(r.mode) != stat.S_IFMT(cached.mode) or r.btime != cached.btime:
            return False  # (a new owner of the number)
        extents = [*r.inline, *_chain_extents(r, cached, written)]
        fs.inodes.validate_extents(d.ino, extents, r.size, 0)  # (as a load does)
        devs = _blocks_of(extents, r.size) if len(extents) == r.nextents else None
    except CorruptionError:
        return False
    have = len(d.devs)
    if devs is None or len(devs) < have or devs[:have] != d.devs:
        return False
    blocks = []
    for dev in devs[have:]:
        image = _as_written(written, dev, None)
        if image is None:
            return False  # (bytes we would have to read from the homes)
        blocks.append((dev, image))
    try:
        d.take_blocks(blocks)
    except CorruptionError:
        return False  # (the caller drops the directory, half taken or not)
    for dev, _image in blocks:
        del written[dev]
    return True


def _chain_extents(r, cached, written) -> list[tuple[int, int, int]]:
    """The extents past the slot ``r`` (an InodeRecord), read from its
    chain's blocks as the records wrote them over our copy (``cached``'s
    chain), or that copy where they wrote none; CorruptionError where a
    block is neither, or does not check, or the chain repeats a block."""
    ours = {}
    if cached.staged_generation == cached.generation:  # (else the images lag it)
        ours = dict(zip(cached.ext_blocks, cached.ext_images, strict=True))
    extents: list[tuple[int, int, int]] = []
    nxt, seen = r.ext_block, set()
    while len(r.inline) + len(extents) < r.nextents:
        image = None if nxt in seen else _as_written(written, nxt, ours.get(nxt))
        if image is None:
            raise CorruptionError(f"directory {r.ino}: a chain block we cannot tell")
        seen.add(nxt)
        nxt, more = unpack_extblock(image, nxt, r.ino)
        if not more:
            raise CorruptionError(f"directory {r.ino}: an empty chain block")
        extents += more
    return extents


def _blocks_of(extents: list[tuple[int, int, int]], size: int) -> list[int] | None:
    """The device offsets of a directory's blocks, in order, from its
    ``extents`` (checked: whole blocks, in order); None unless they cover
    its ``size`` with no hole and no more."""
    devs, at = [], 0
    for foff, dev, n in extents:
        if foff != at:
            return None
        devs.extend(range(dev, dev + n, BLOCK))
        at += n
    return devs if at == size else None


def _as_written(written, dev: int, base) -> bytearray | None:
    """Block ``dev`` as the records' writes left it over ``base`` (our copy
    of it), or over nothing where their first write there is whole; None
    if neither (its bytes would have to come from the homes)."""
    writes = written.get(dev)
    if not writes:
        return None if base is None else bytearray(base)
    if writes[0][0] == dev and len(writes[0][1]) == BLOCK:
        base = bytes(BLOCK)
    elif base is None:
        return None
    image = bytearray(base)
    for off, data in writes:
        image[off - dev : off - dev + len(data)] = data
    return image


def refresh_dirs(fs, records, inos: frozenset[int]) -> None:
    """Take into directories ``inos`` what ``records`` wrote in their blocks
    (their slots unwritten), and nothing else: the rest of the records is
    applied later (apply_records with ``refreshed=inos``).  A directory
    whose refresh is not enough is dropped, to be loaded again."""
    sb = fs.sb
    written: dict[int, list[tuple[int, bytes]]] = {}
    for rec in records:
        if not inos.isdisjoint(rec.touches):
            for dst, data in rec.writes:
                if not sb.itable_off <= dst < sb.itable_end:
                    add_written(written, dst, data)
    refresh_cached_dirs(fs, inos, written)


def refresh_cached_dirs(fs, inos, written: dict[int, list[tuple[int, bytes]]]) -> None:
    """Lay ``written`` over those of directories ``inos`` we hold; drop any
    whose refresh is not enough (loaded again whole at next use)."""
    for ino in inos:
        d = fs.dirs.get(ino)
        if d is not None and not d.refresh(written):
            del fs.dirs[ino]


def add_written(written: dict[int, list[tuple[int, bytes]]], dst: int, data) -> None:
    """Note the write of ``data`` at ``dst`` under each block it falls in."""
    pos, n = 0, len(data)
    while pos < n:
        at = dst + pos
        stop = min(n, pos + BLOCK - at % BLOCK)
        written.setdefault(at - at % BLOCK, []).append((at, data[pos:stop]))
        pos = stop


class Locked:
    """The thread lock plus the pool lock (flock, shared or exclusive) for one
    call; the outermost section also catches up with other processes' commits,
    and first frees what mappings dropped without close() left behind.
    ``unlocked``: an optimistic change's start, which takes the thread lock
    only and catches up without the pool lock when it can (with the shared
    lock for just the catching up otherwise).
    A class rather than a @contextmanager: this is on every call's path."""

    __slots__ = ("fs", "exclusive", "outer", "unlocked", "released")

    def __init__(self, fs, exclusive: bool, unlocked: bool = False):
        self.fs, self.exclusive, self.outer, self.unlocked = fs, exclusive, False, unlocked
        self.released = False

    def __enter__(self) -> None:
        fs = self.fs
        if fs._forks != _forks[0]:
            fs._after_fork()
        fs._tlock.acquire()
        try:
            if fs.closed:
                raise ValueError("I/O operation on an unmounted pool")
            self.outer = fs._depth == 0
            if self.outer:
                if fs._held:  # (kept from said changes: logical.py; taken anew here)
                    fs._let_go(pause=False)
                if fs._followers_due <= time.monotonic():
                    fs._look_at_followers()
                if fs._unmapped:  # the one check the hot path pays for it
                    fs._free_unmapped_orphans()
                if not self.unlocked:
                    # Waiting, catch up with no lock: what the holder commits
                    # is then applied outside the lock, not in it.
                    lock_pool(
                        fs.region.fd,
                        fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH,
                        catch_up_unlocked,
                        fs,
                    )
            fs._depth += 1
        except BaseException:
            fs._tlock.release()
            raise
        if self.outer:
            try:
                if not self.unlocked:
                    catch_up(fs, self.exclusive)
                elif not catch_up_unlocked(fs):
                    lock_pool(fs.region.fd, fcntl.LOCK_SH)
                    try:
                        catch_up(fs, exclusive=False)
                    finally:
                        fcntl.flock(fs.region.fd, fcntl.LOCK_UN)
            except BaseException:
                self.__exit__(None, None, None)
                raise

    def __exit__(self, *exc) -> None:
        fs = self.fs
        fs._depth -= 1
        if self.outer and not self.released:
            fcntl.flock(fs.region.fd, fcntl.LOCK_UN)
        fs._tlock.release()

    def release_pool(self) -> None:
        """Let other processes commit now, keeping the thread lock: what is
        left is this process's own bookkeeping (only the outermost section
        holds the pool lock)."""
        if self.outer and not self.released:
            self.released = True
            fcntl.flock(self.fs.region.fd, fcntl.LOCK_UN)


class Conflict(Exception):
    """An optimistic change met another process's commit that touched what it
    read or wrote (or asked for the exclusive lock itself): it was undone,
    and ``optimistically`` runs it again holding the exclusive lock.
    ``on``: the directories the commits and the change both touched, the
    contended ones (empty when what met was not a directory)."""

    def __init__(self, on: frozenset[int] = frozenset()):
        super().__init__()
        self.on = on


class Exclusive(Conflict):
    """An optimistic change reached work that must not run before its check
    (fs._need_exclusive: a migration into a chunk, a new window): it
    runs again the old way.  No sign of contention, so no back-off."""


class Contended(Exclusive):
    """Raised before an optimistic change does any work in a directory that
    recent conflicts showed busy (``on``): it runs the old way at once."""


def optimistically(fs, fn, *args):
    """Run ``fn(*args)``, whose change may be prepared without the pool lock
    (see Change) when optimism is on and another process shares the pool;
    on a Conflict, run it again the old way.  After a conflict the next few
    changes in that directory (in any directory, if the conflict was not
    over one) go the old way straight off (Backoff), so that a contended
    directory does not pay for two attempts each time while changes
    elsewhere stay optimistic."""
    with fs._thread_lock():
        backoff = fs._backoff
        # Alone on the pool (leases.py knows) there is nobody to overlap with.
        # (Lagging homes, logical.py, the change's record writes with its
        # own: Change._absorb_with.)
        if fs._depth == 0 and fs.optimism and fs.leases.shared and not backoff.everywhere():
            fs._optimistic = True
            try:
                return fn(*args)
            except Contended as c:
                fs.coherence["contended"] += 1
                backoff.spend(c.on)
            except Exclusive:
                fs.coherence["exclusive_asked"] += 1
            except Conflict as c:
                fs.coherence["conflicts"] += 1
                backoff.conflict(c.on)
            finally:
                fs._optimistic = False
        return fn(*args)


class Backoff:
    """Where optimism keeps failing, go the old way for a while: a number of
    changes that starts at MIN_BACKOFF and doubles with each conflict there
    (up to MAX_BACKOFF), halving back with each optimistic commit.  Kept
    per contended directory (its changes are counted as they reach it),
    and for conflicts over anything else (all changes)."""

    ANY = 0  # the key for conflicts not over a directory (no inode is 0)

    def __init__(self) -> None:
        self.left: dict[int, int] = {}  # changes to make the old way
        self.step: dict[int, int] = {}  # what the next conflict sets ``left`` to

    def everywhere(self) -> bool:
        """Must this change go the old way whatever it touches?  (Counted.)"""
        if self.ANY not in self.left:
            return False
        self.spend((self.ANY,))
        return True

    def busy(self, ino: int) -> bool:
        """Must a change that reaches directory ``ino`` go the old way?  It
        is counted once it has (``spend``), however often it looked."""
        return ino in self.left

    def spend(self, keys) -> None:
        for key in keys:
            left = self.left.pop(key, 0) - 1
            if left > 0:
                self.left[key] = left

    def conflict(self, on: frozenset[int]) -> None:
        for key in on or (self.ANY,):
            step = self.step.get(key, MIN_BACKOFF)
            self.left[key] = step
            self.step[key] = min(step * 2, MAX_BACKOFF)

    def committed(self, touched) -> None:
        for key in (self.ANY, *touched):
            step = self.step.get(key)
            if step is not None:
                if step <= MIN_BACKOFF:
                    del self.step[key]
                else:
                    self.step[key] = step // 2


# Changes made the old way after a conflict before trying optimism again:
# from 8, doubling with each conflict up to MAX_BACKOFF, halving back with
# each optimistic commit.
MIN_BACKOFF = 8
MAX_BACKOFF = 1024


# What Change._overlaps finds.
OVERLAP = "overlap"
REBASE = "rebase"


class Change:
    """One atomic change: yields a Transaction; on normal exit stages every
    dirty inode and commits; on an exception (or a failed commit) drops the
    caches, which the media never stopped agreeing with.

    Optimistic changes (inside ``optimistically``) catch up with no pool
    lock (catch_up_unlocked; under the shared lock if the records cannot be
    read so) and run their body with no pool lock: resolving, checking,
    building the new inodes and directory entries, allocating (from this
    process's own windows), while other processes do the same and commit;
    stores into the new blocks wait (fs._txn_deferred) until the body is
    done, and are made before the check, still without the lock
    (_store_new_blocks).  At exit the inodes are staged and the records
    others committed since the catching up are checked against what the
    body read and wrote: the inodes and
    directories it looked at or changed, the inode numbers it took or
    freed, the space it took.  That check runs without the lock first,
    then while waiting for the exclusive lock, and last, for what came in
    between, holding it.  Disjoint: ours commits after them (the ones found
    under the lock are applied after it is released).  Otherwise ours is
    undone and Conflict raised.  What the body read from the caches is the
    caught-up state; what it loaded from the media while someone committed
    may be newer or torn, but then the committer's record names it, and
    the check fails.  An error the body raises is checked the same way
    before it is let out.  Stores over bytes files have wait for the
    shared lock and a check first (_store_over_existing).  Work that must
    not happen before the check (a migration into a chunk, a new window)
    calls fs._need_exclusive() first, which raises Exclusive in an
    optimistic change."""

    __slots__ = (
        "fs",
        "lock",
        "txn",
        "optimistic",
        "exclusive",
        "verdict",
        "late",
        "late_refreshed",
        "rebase_in",
        "conflict_on",
        "met_said",
        "prepared",
        "paths_held",
    )

    def __init__(self, fs):
        self.fs = fs

    def __enter__(self) -> Transaction:
        fs = self.fs
        if fs.readonly:
            raise oserror(errno.EROFS)
        self.optimistic = fs._optimistic and fs._depth == 0
        self.exclusive = not self.optimistic  # holding the exclusive pool lock
        # An optimistic change prepares without the pool lock, so that another
        # process's commit need not wait for this preparation (only for our
        # commit).
        self.lock = Locked(fs, exclusive=not self.optimistic, unlocked=self.optimistic)
        self.lock.__enter__()  # (caught up with every commit)
        if fs._lag_bytes and not fs._changing and self.exclusive:
            # Homes that said changes left lagging are written first, in a
            # record of their own, while the caches hold committed state
            # only.  (An optimistic change writes them with its own record:
            # _absorb_with.)
            try:
                fs._absorb()
            except BaseException:
                self.lock.__exit__(None, None, None)
                raise
        self.txn = Transaction()
        # Others' records checked under the lock, applied after it.
        self.late: list[TxnRecord] | None = None
        self.late_refreshed: frozenset[int] = frozenset()  # directories of ``late`` taken in
        self.rebase_in: frozenset[int] = frozenset()  # see _overlaps
        self.conflict_on: frozenset[int] = frozenset()  # see _overlaps
        self.met_said = False  # others' said changes met: see _caught_up_disjoint
        fs._txn_dirty = set()
        fs._unfenced = False  # (what an abandoned change flushed needs no fence)
        fs._ordered = []  # (what an abandoned change stored needs no ordering)
        fs._txn_freed_inos = []
        fs._txn_took = []
        fs._txn_pins = []
        fs._txn_deferred = []
        fs._txn_over_existing = False
        if self.optimistic:
            fs._reads, fs._slot_reads, fs._names_read, fs._edited = set(), set(), {}, set()
            fs._nlink_deltas = {}
        # Whether the path cache holds for this change (FileSystem._cached_entry),
        # and is carried past its commit: a change with the exclusive lock,
        # caught up (the cache emptied if it was of an older commit), while
        # it drops no directory or symlink name.
        outermost = not fs._changing
        self.paths_held = not self.optimistic and outermost and fs._heads_now() is not None
        if outermost:  # (the count the outermost change is held to)
            fs._drops_at_change = path_drops()
        fs._changing += 1  # (the path cache as _heads_now says)
        return self.txn

    def __exit__(self, etype, value, tb) -> None:
        fs, txn = self.fs, self.txn
        try:
            if etype is not None:
                if self.optimistic and issubclass(etype, Conflict):
                    self._undo()
                    return
                if self.optimistic and self._error_stands_unlocked(etype):
                    return
                if self.optimistic:
                    # An error met without the lock stands only if nobody
                    # changed what the change read meanwhile (a torn read
                    # of a slot being written looks like damage).
                    lock_pool(fs.region.fd, fcntl.LOCK_EX)
                    self.exclusive = True
                    # A checksum failure may be a read torn by a commit in
                    # progress: then not even a rebase lets it out.
                    torn = issubclass(etype, CorruptionError)
                    if not self._caught_up_disjoint(rebase=not torn):
                        self._undo()
                        catch_up(fs)
                        raise self._conflict() from value
                self._abort()
                return
            try:
                for ino in sorted(fs._txn_dirty):
                    fs._stage_inode(txn, ino)
                self.prepared = None
                if self.optimistic:
                    if fs._txn_over_existing:
                        self._store_over_existing()
                    else:
                        self._store_new_blocks()
                    fs._settle_ordered(txn)  # (its stores are made now)
                    if fs._txn_over_existing and not (txn or fs._txn_dirty):
                        return  # an overwrite in place: its check was the one
                    # The record is packed before the lock (a rebase drops it).
                    self.prepared = fs.journal.prepare(txn)
                    self._exclusive_and_checked()
                    self._forget_reads()  # checked: from here on as any change
                fs._settle_ordered(txn)
                if fs._unfenced:  # data flushed, not yet fenced (DataPath._flush_data)
                    fs.region.fence()
                    fs._unfenced = False
                if fs._lag_bytes:
                    self._absorb_with(txn)
                fs.journal.commit(txn, self.prepared)
                if fs._lazy:  # (sync mode: homes to write out)
                    fs._unsynced = True
                if fs._lazy and not fs._batching:  # sync mode: durable, with all before
                    fs._durable_seen = fs.journal.next_seq
            except Conflict:
                self._undo()
                raise
            except BaseException:
                self._abort()
                raise
            fs._seen_seq, fs._seen_pos = fs.journal.next_seq, fs.journal.pos
            if txn.absorbs:
                fs._absorbed()
            if self.paths_held and path_drops() == fs._drops_at_change:
                fs._heads_seq = fs._seen_seq  # (every path leads where it did)
                self.paths_held = False  # (carried)
            # Published: the rest is our own caches' business (under the
            # thread lock), so other processes need not wait for it.
            self.lock.release_pool()
            if self.optimistic:
                fs.coherence["optimistic_commits"] += 1
                fs._backoff.committed(txn.touched)
            fs._free_committed(txn.to_free, fs._txn_dirty, fs._txn_freed_inos)
            for ino in fs._txn_freed_inos:
                fs.inodes.return_ino(ino)
            fs._dirty_times.difference_update(fs._txn_dirty)
            if self.late is not None:
                # Checked disjoint from ours under the lock; applied after it
                # (a change with a thread lock only, as catch_up_unlocked).
                self._apply_late()
        finally:
            fs._changing -= 1
            if self.paths_held and (txn or fs._txn_dirty or fs._txn_took):
                # Not carried past a commit, and edited: what its walks kept
                # may name what it did not commit.  (One that failed before
                # any edit kept only what the pool holds.)
                fs._heads.clear()
                fs._heads_seq = -1
            if self.optimistic:
                self._forget_reads()
            self.lock.__exit__(None, None, None)

    def _absorb_with(self, txn: Transaction) -> None:
        """An optimistic change that prepared with homes lagging (said changes
        made before it or met at its check, logical.py), under the exclusive
        lock and checked: its record writes every lagging home too, as the
        rule says a record that writes must (the caches hold committed
        state and this change's edits, which its record commits with
        them)."""
        fs = self.fs
        freed = frozenset(fs._txn_freed_inos)  # (their slots the change zeroes)
        fs._stage_absorb(txn, fs._txn_dirty.union(fs._txn_took, freed), freed)
        self.prepared = fs.journal.prepare(txn)  # (packed again, with the homes)
        room = fs.journal.room()
        if self.optimistic and self.prepared and TXN_HEADER.size + len(self.prepared[1]) > room:
            # It would need a checkpoint first, which must not retire the
            # said changes before it: the exclusive way absorbs them alone.
            self.met_said = True
            raise self._conflict()

    def _error_stands_unlocked(self, etype) -> bool:
        """An error the body met before changing anything (a name missing
        or taken: ENOENT, EEXIST) stands if the records published since
        our catching up, read with no lock, are disjoint from what it read:
        it is then the answer as of the last of them.  (A read that met a
        commit being stored, unpublished, saw it past its commit point.)
        False when that cannot be told so: damage met (maybe a torn read),
        the body changed something, or records overlap or cannot be read
        without the lock; then the exclusive lock decides, as before.
        Spares a process that probes for names (zarr's first chunk in a
        new directory) a wait for the exclusive lock."""
        fs = self.fs
        changed = self.txn or fs._txn_dirty or fs._txn_took or fs._txn_pins
        if issubclass(etype, CorruptionError) or changed:
            return False
        return self._caught_up_disjoint(locked=False, rebase=False) is True

    def _store_new_blocks(self) -> None:
        """Make the stores the body deferred (a new file's bytes, into blocks
        it took from our windows), before the check and without the pool
        lock: nobody else allocates in our windows (leases.py), so two
        processes copy their data at once.  If one of them took our
        windows back meanwhile, the change runs again."""
        fs = self.fs
        if not fs._txn_deferred:
            return
        taken = self.txn.allocated  # (none: an overwrite, under the shared lock)
        if taken and not fs.leases.hold_for_stores(taken):
            raise Conflict
        try:
            for store in fs._txn_deferred:
                store()
        finally:
            fs._txn_deferred = []
            if taken:
                fs.leases.release_stores()

    def _store_over_existing(self) -> None:
        """Make the deferred stores when some go over bytes files have (an
        overwrite, an append into a file's last block): under the shared
        pool lock, so that nobody frees those blocks meanwhile, and only
        once the records committed since our catching up are found
        disjoint from the change (a truncate, say, would have freed them).
        Two processes overwriting their own files copy at once; only
        their commits (a new size, new blocks) take turns."""
        fs = self.fs
        lock_pool(fs.region.fd, fcntl.LOCK_SH)
        try:
            if self._caught_up_disjoint(locked=False) is not True:
                raise self._conflict()
            self._store_new_blocks()
        finally:
            fcntl.flock(fs.region.fd, fcntl.LOCK_UN)

    def _forget_reads(self) -> None:
        fs = self.fs
        for ino in fs._edited or ():
            d = fs.dirs.get(ino)
            if d is not None:
                d.untrack()
        fs._reads = fs._slot_reads = fs._names_read = fs._edited = None
        fs._nlink_deltas = None

    def _exclusive_and_checked(self) -> None:
        """Take the exclusive lock, having checked what others committed
        meanwhile against this change; undo and raise Conflict if it is not
        disjoint."""
        fs = self.fs
        # What others committed meanwhile is checked and applied with no lock
        # where it can be, before and while waiting for the lock, so that the
        # exclusive section is short: it finds little newer.
        self.verdict = self._caught_up_disjoint(locked=False)
        lock_pool(fs.region.fd, fcntl.LOCK_EX, Change._check_while_waiting, self)
        self.exclusive = True
        if self.verdict is False or not self._caught_up_disjoint():
            self._undo()
            catch_up(fs)
            raise self._conflict()
        # An inode this change frees must still be open nowhere: another
        # process may have opened it while we held only the shared lock.
        if any(fs._open_elsewhere(ino) for ino in fs._txn_freed_inos):
            self._undo()
            raise Conflict
        # The space it took must still lie in our windows.  A process short
        # of room that took them back waited for our stores, not for this
        # commit: it found their blocks free (uncommitted) and may have
        # listed them as its own windows, to store into from a view older
        # than this commit.  Slots are cleared only under the exclusive
        # lock, so what is listed now stays listed through the commit.
        if self.txn.allocated and not fs.leases.still_ours(self.txn.allocated):
            fs.coherence["windows_lost"] += 1
            self._undo()
            raise Conflict

    def _apply_late(self) -> None:
        """Apply ``late``, the records the check under the lock found (our
        position is past them already)."""
        fs, late = self.fs, self.late
        self.late = None
        if apply_records(fs, late, self.late_refreshed):
            fs.coherence["records_applied"] += len(late)
        else:
            fs._seen_seq = -1  # applied in part: the next call rebuilds

    def _check_while_waiting(self) -> None:
        if self.verdict is not False:  # a conflict stays one
            self.verdict = self._caught_up_disjoint(locked=False)

    def _caught_up_disjoint(self, locked: bool = True, rebase: bool = True) -> bool | None:
        """Are the records committed since this change began disjoint from it?
        With the exclusive lock this is the answer, and the records are kept
        in ``late`` to be applied after the commit, outside the lock; without
        (``locked=False``) they are applied now, and None means they cannot
        be read safely so (the locked check then reads them).  ``rebase``
        false (checking damage the body met): records the change could be
        rebased on overlap it, since the damage may be a slot or block read
        while one of them was being written."""
        fs, journal = self.fs, self.fs.journal
        if locked:
            seq = journal.refresh()
            if journal.unpublished() is not None:  # a writer died since we caught up
                seq = finish_dead_commit(fs, exclusive=True)
        else:
            seq = journal.peek()
        if seq == fs._seen_seq:
            return True
        if locked:
            records = journal.records_between(fs._seen_seq, fs._seen_pos, seq)
        elif fs._seen_seq < 0:
            return None
        else:
            records = journal.records_unlocked(fs._seen_seq, fs._seen_pos, seq)
            if records is None:
                return None
        if records is None:
            return False
        if any(rec.says() for rec in records) or (fs._lag_bytes and records):
            return self._take_said(records, seq, locked)
        overlap = self._overlaps(records)
        if overlap is OVERLAP or (overlap is REBASE and not rebase):
            return False
        if overlap is REBASE:
            return self._rebase(records, seq, locked)
        if locked:
            self.late, self.late_refreshed = records, frozenset()
            fs._seen_seq, fs._seen_pos = seq, records[-1].next_pos - journal.start
            return True
        if not apply_records(fs, records):
            return False
        fs.coherence["records_applied"] += len(records)
        fs._seen_seq, fs._seen_pos = seq, records[-1].next_pos - journal.start
        return True

    def _take_said(self, records, seq: int, locked: bool) -> bool | None:
        """Records since this change began, with homes lagging (said changes,
        logical.py: theirs or ours).  If they all say changes and name
        nothing this change read or wrote, they are made again in our
        caches now, before our commit, which then absorbs them with the
        rest (_absorb_with): True.  Anything else (a record that writes
        homes absorbed what lags under our edits, or they overlap) is a
        conflict, and the change runs again the exclusive way, which
        absorbs first: False.  None: they cannot be made again without
        the lock (the locked check does it)."""
        fs, journal = self.fs, self.fs.journal
        if not all(rec.says() for rec in records):
            self.met_said = True  # (no sign of contention: see _conflict)
            return False
        if self._said_overlap(records):
            return False
        if not locked and not _said_unlocked_ok(fs, records):
            return None
        fs._release_said()
        reads = fs._reads
        fs._reads = None  # (made again as their writer made them: no read of this change's)
        try:
            _apply_said(fs, records)
        except BaseException:
            fs._seen_seq = -1  # applied in part: the next catching up rebuilds
            raise
        finally:
            fs._reads = reads
        fs.coherence["records_applied"] += len(records)
        fs._seen_seq, fs._seen_pos = seq, records[-1].next_pos - journal.start
        return True

    def _said_overlap(self, records) -> bool:
        """Do records that say changes name a directory or an inode this
        change read, looked names up in or changed, or claim space it took?
        (The directories both name are kept in ``conflict_on``.)"""
        fs, txn = self.fs, self.txn
        mine = fs._reads | fs._txn_dirty | txn.touched | fs._edited | fs._slot_reads
        mine = mine.union(fs._names_read, fs._txn_freed_inos, fs._txn_took)
        for rec in records:
            dirs = _said_dirs(rec)
            if not mine.isdisjoint(dirs):
                self.conflict_on = frozenset(mine.intersection(dirs))
                return True
            if not mine.isdisjoint(_said_inos(rec)):
                return True
        return _claims_overlap(fs, records, txn.allocated)

    def _conflict(self) -> Conflict:
        """What a change that cannot commit as prepared raises: Exclusive if
        it met said changes (no sign of contention: no back-off), else a
        Conflict over the directories both touched."""
        return Exclusive() if self.met_said else Conflict(self.conflict_on)

    def _overlaps(self, records) -> str | None:
        """Do ``records`` touch what this change read or wrote?  OVERLAP if
        so, and the directories both touched are kept in ``conflict_on``;
        REBASE if they touch only directories whose names it looked up,
        added or removed (and their slots, when it did not read those);
        None if they are disjoint from it."""
        fs, txn, sb = self.fs, self.txn, self.fs.sb
        edited = fs._edited
        # A parent whose link count alone we changed is a soft slot: the
        # count is rebased as a delta.
        mine = fs._reads | (fs._txn_dirty - fs._nlink_deltas.keys()) | (txn.touched - edited)
        mine.update(fs._txn_freed_inos)
        mine.update(fs._txn_took)
        names = edited.union(fs._names_read)
        soft_slots = names | fs._slot_reads  # written: rebase, checked again
        overlap = None
        rebase_in: set[int] = set()  # directories to rebase on; slots: -1
        for rec in records:
            if not mine.isdisjoint(rec.touches):
                self.conflict_on = frozenset(mine.intersection(rec.touches))
                return OVERLAP
            if not names.isdisjoint(rec.touches):
                overlap = REBASE
                rebase_in.update(names.intersection(rec.touches))
            for dst, data in rec.writes:
                if sb.itable_off <= dst < sb.itable_end:
                    slots = slots_written(sb, dst, len(data))
                    if not mine.isdisjoint(slots):
                        return OVERLAP
                    if not soft_slots.isdisjoint(slots):
                        overlap = REBASE
                        rebase_in.update(names.intersection(slots))
                        rebase_in.add(-1)
        self.rebase_in = frozenset(rebase_in)
        return OVERLAP if _claims_overlap(fs, records, txn.allocated) else overlap

    def _rebase(self, records, seq: int, locked: bool) -> bool:
        """``records`` (others' commits since this change began) touch only
        directories it looked names up in or added and removed names in:
        put its edits after theirs instead of running it again.  Its edits
        are rolled back in our copies (they were staged, not committed),
        the records applied, every name it looked up checked to give what
        it gave, and its edits made again on the directories as they now
        are.  Then it commits after them, as any disjoint change.  False
        when that cannot be done (a name looked up changed, an edit that
        compacted a block or needs a new one): a conflict.  The records are
        applied either way (and our position moved past them).  Holding the
        lock, only the directories are brought up to date before our
        commit; the rest of the records waits in ``late``, as for a
        disjoint change, unless a directory's slot was written."""
        fs, txn = self.fs, self.txn
        # Our edits in directories the records did not touch stand as made.
        dirs = [fs.dirs.get(ino) for ino in fs._edited if ino in self.rebase_in]
        if not all(d is not None and d.rebasable for d in dirs):
            self.conflict_on = frozenset(fs._edited.intersection(self.rebase_in))
            return False
        edits = []
        self.prepared = None  # the transaction changes: packed again at commit
        for d in dirs:
            ops, blocks = d.rollback()
            txn.drop_writes(blocks)
            edits.append((d.ino, ops))
        fs._seen_seq, fs._seen_pos = seq, records[-1].next_pos - fs.journal.start
        fs.coherence["rebases"] += 1
        if locked and -1 not in self.rebase_in:
            refresh_dirs(fs, records, self.rebase_in)
            self.late, self.late_refreshed = records, self.rebase_in
        elif apply_records(fs, records):
            fs.coherence["records_applied"] += len(records)
        else:
            fs._seen_seq = -1  # applied in part: the next catching up rebuilds
            return False
        # Parents whose slots the records wrote (apply_records forgot them):
        # told now, before a lookup below reloads one (from the media,
        # without our link count change).
        lost = [ino for ino in fs._nlink_deltas if ino not in fs.inodes.cache]
        try:
            for ino, names in fs._names_read.items():
                if ino not in self.rebase_in:
                    continue  # untouched (and our edits there stand)
                d = fs._cached_dir(ino)
                if any(d.lookup(name) != found for name, found in names.items()):
                    self.conflict_on = frozenset((ino,))
                    return False
            if -1 in self.rebase_in:  # slots written: what the lookups relied on
                if not self._slots_still_hold():
                    return False
                for ino in lost:  # our link count change, on the count they left
                    fs.inodes.get(ino).nlink += fs._nlink_deltas[ino]
                    fs._stage_inode(txn, ino)
            for ino, ops in edits:
                if not fs._cached_dir(ino).replay(ops, txn):
                    self.conflict_on = frozenset((ino,))
                    return False
        except (CorruptionError, OSError):
            return False  # (loaded with no lock: torn by a commit in progress)
        return True

    def _slots_still_hold(self) -> bool:
        """After records that wrote slots this change read only in part:
        every entry it looked up still names an inode of its type (a
        directory, whose parent is that directory), and every directory it
        edits is still linked (then gets its times again: the copy it set
        them in was dropped).  (CorruptionError: the caller's conflict.)"""
        fs = self.fs
        for dir_ino, names in fs._names_read.items():
            for name, found in names.items():
                if found is not None:
                    fs._check_entry(dir_ino, name, *found)
        for ino in fs._edited:
            parent = fs.inodes.get(ino)
            if parent.nlink == 0:
                return False
            fs._touch_dir(parent)
        return True

    def _undo(self) -> None:
        """Forget an optimistic change: its space and inode numbers go back,
        everything it touched is dropped from the caches (reloaded from the
        media when next used), its pins are released."""
        fs, txn = self.fs, self.txn
        for b, n in txn.allocated:
            fs.allocator.free(b, n)
        for ino in fs._txn_took:
            fs.inodes.forget(ino)
        # Directories whose edits can be rolled back are put back as they
        # were before them (the caught-up state) at no cost.
        rolled = set()
        for ino in fs._edited or ():
            d = fs.dirs.get(ino)
            if d is not None and d.ops is not None and d.rebasable:
                txn.drop_writes(d.rollback()[1])
                rolled.add(ino)
        changed = fs._txn_dirty | set(fs._txn_freed_inos)
        kept = rolled.intersection(fs._lag_dirs)  # (as committed: they stay)
        lag_dirs = fs._lag_dirs.keys() - kept
        if not lag_dirs.isdisjoint(changed | txn.touched):
            # A directory dropped or read again below lags its homes (said
            # changes, logical.py): rebuilt instead, the pending ones made
            # again (the next catching up sees no position).  (An inode
            # that lags loads again from what is pending: Inodes.pending.)
            fs._seen_seq = -1
        for ino in changed:
            fs.inodes.cache.pop(ino, None)
            if ino not in kept:
                fs.dirs.pop(ino, None)
        # A directory whose inode did not change re-reads just the blocks
        # this change wrote (what the media has is what was committed): a
        # big shared directory is not loaded again whole after a conflict.
        sb, buf = fs.sb, fs.region.buf
        # Our copy holds this change's entries, not on the media: each block
        # it wrote is read again whole.
        whole = {
            block: [(block, bytes(buf[block : block + BLOCK]))]
            for block in {dst - dst % BLOCK for dst, _d in txn.writes}
            if sb.data_off <= block < sb.data_end
        }
        refresh_cached_dirs(fs, txn.touched - changed, whole)
        for ino in fs._txn_pins:
            fs._unpin(ino)
        # Once: the conflict path undoes before catching up, then unwinds here.
        txn.allocated.clear()
        fs._txn_took, fs._txn_pins = [], []
        fs._txn_dirty, fs._txn_freed_inos = set(), []
        txn.touched.clear()
        if self.late is not None:
            self._apply_late()

    def _abort(self) -> None:
        # Rebuilding from the media also undoes allocations and inode numbers
        # taken.  It runs under the exclusive lock, after the journal was
        # refreshed (catching up, or the optimistic check): the media is the
        # pool as of the live word, records kept for later included.
        fs = self.fs
        if self.txn or fs._txn_dirty or fs._txn_took:
            if self.optimistic and not self.exclusive:
                # Failed before its check (interrupted waiting for the lock,
                # say): the table is read whole, so nobody may be writing it.
                lock_pool(fs.region.fd, fcntl.LOCK_EX)
                self.exclusive = True
            fs._reload()
            fs._seen_seq, fs._seen_pos = fs.journal.next_seq, fs.journal.pos
            self.late = None
        elif self.late is not None:
            self._apply_late()
