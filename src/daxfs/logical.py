"""logical: unlinks and small creates said in the journal, homes written later.

A physical record costs a change more than its bytes: the directory block
edited and its header resealed, the inode slot packed, each write staged
and packed into the record, each in a few dozen Python steps.  A process
says instead what it did, and writes no home:

- an unlink of a small file: one entry (REC_UNLINK: the directory, the
  inode, the name, the time) and the blocks it freed (revokes);
- a small file made whole (write_bytes of a new name, _create_with): its
  data stored in new blocks and made durable first, then one entry
  (REC_CREATE: the directory, the name, the time, the new slot's bytes)
  and the blocks it took (claims);
- a new file made empty (open of a new name for writing), as a create
  with no data, and its first data (the write its close flushes): the
  data stored in new blocks and made durable, then one entry (REC_FILL:
  the inode's new slot bytes) and the blocks it took;
- a small file emptied (open of an existing name for writing, a truncate
  to nothing) or given new bytes (write_bytes over it): the new data, if any, stored in new blocks
  and made durable, then one entry (REC_REWRITE: the inode's new slot
  bytes), the blocks it gave up (revokes) and the blocks it took (claims).

The directory block and the inode slot change in memory only and are
*lagging*; an *absorb*, a record of its own, writes every lagging home
whole later:

- before any change that writes (coherence.Change, at its start, so that
  what it absorbs is committed state only): a record that writes homes
  therefore never follows said changes it does not cover, and recovery
  needs to make again only those after the last record that writes;
- when the lag would pass ABSORB_MOST, or the journal would not hold the
  absorb (a checkpoint must wait for one: journal.unabsorbed);
- every ABSORB_SECONDS while lag is left (a thread), so that a follower,
  which waits for homes to catch up, and a mount wait little;
- at unmount.

Until absorbed the homes lag the journal, so whatever loads from them
makes the said changes again, in order, from the entries: a rebuild
(FileSystem._reload), and so a mount after recovery replayed the records
that write (pool.mount_region then absorbs and checkpoints), the checker,
and a reader catching up (coherence._apply_said).  A change made again
checks what it finds (an unlink: the name there, naming a plain file with
one link; a create: the name and the number free, the slot a valid plain
file of that directory, its blocks free); anything else is damage (a
crafted journal).

Changes are said on a pool whose records are durable when written (pmem,
tmpfs: not group commit, whose homes lag already) with no follower in the
follower table (followers never read homes that lag: they wait for the
absorb), unless DAXFS_SAY=0.  DESIGN.md, "Changes said, homes absorbed",
says why and what it costs.

Beside other processes.  Each makes the others' said changes again as it
catches up (coherence.apply_records), in log order, and counts their homes
in its own lag, so that whoever writes homes next absorbs every said
change before it, whichever process said it.  What keeps the copies in
step:
- a create's record names the directory block its name went in (SPEC.md,
  version 10), so every copy puts it in the same block (where inside the
  block may differ: an absorb writes blocks whole);
- the first record that writes after said changes absorbed them all, each
  lagging block written whole: every process lays those blocks over its
  copy (a directory where a create named no block is loaded again), and
  keeps the inodes whose slots it wrote as the process holds them
  (coherence._apply_written);
- a slot that lags keeps the bytes the absorb will write
  (InodeTable.pending), which a load takes rather than the stale home;
- said records that a later record in what a process catches up on
  absorbed are not made again, the homes holding them (their claims and
  revokes count, and what they name is dropped from the caches);
- a said change takes its blocks from this process's windows and its
  inode number from its range (leases.py), and asks the kernel whether
  another process has the file open (pins) before it unlinks or rewrites
  it;
- an optimistic change (coherence.Change) that prepared with homes
  lagging, or met said records at its check that name nothing it read or
  wrote, writes the lagging homes in its own record (Change._absorb_with);
  one that met a record that writes homes runs again the exclusive way,
  which absorbs first.
A process that mounts makes the pending changes again itself and absorbs
before it joins.  Beside others a process keeps the pool lock between
its changes only until another waits (below).

Keeping the lock.  A said change alone needs the exclusive pool lock only
against a process that arrives, so a writer alone keeps it from one said
change to the next, and the next takes no flock and looks at neither the
live word nor the process table (nobody can have committed or joined):
- alone: no other description of the pool marks a mount (a read-only
  mount has no slot in the process table: pins.MOUNTED_BYTE), and nobody
  else is in the process table, looked at when a hold begins;
- for HOLD_SECONDS, then none for HOLD_PAUSE, so that a process waiting
  for the lock gets in; on a version 10 pool, where every process that
  can wait marks its wait (below), until one does, looked for as beside
  others, and for HOLD_ALONE_MOST at most; a call that takes the lock
  the usual way (coherence.Locked) lets it go first; a holder thread
  lets it go when no call has come for about HOLD_IDLE;
- the pins of files opened meanwhile are put off (nobody is there to look
  at them) and taken before the lock is let go.
Calls that take the shared lock for a moment (an open for reading, an
overwrite in place) use the kept one instead, and an open for reading
with none kept begins a hold itself on the same terms (_kept_for_read):
a process reading alone then takes no flock and no pin per file either.
Beside other processes a writer keeps the exclusive lock between its said
changes too (_held_beside), with blocks taken ahead from its own windows
and inode numbers from its range, until a process waits for the lock: a
waiter marks pins.WAITING_BYTE (exclusive) or READER_WAITING_BYTE
(shared), and the holder looks at both every BESIDE_LOOK (the first a
BESIDE_LOOK after the hold began, so that it makes a few changes first;
a read served by the hold, every WAIT_LOOK), its thread every
SHARED_IDLE, and lets the lock go.  It takes the lock again only once
the waiter has it (HANDOFF_MOST).  Two writers then take turns in
slices, not one change each, and each makes the other's records again
while it waits, with no lock.

Keeping the shared lock.  A process reading beside others keeps the
shared pool lock from one open to the next on the same terms, but for
who may be there: others reading keep theirs too, and nobody may commit
meanwhile (a commit takes the exclusive lock), so the caches stay current
and the pins of files opened meanwhile are put off (a process freeing an
inode looks for pins under the exclusive lock) and taken before it is let
go.  A process waiting for the exclusive lock marks pins.WAITING_BYTE
(coherence.lock_pool); a reader's calls look at it every WAIT_LOOK, the
holder thread every SHARED_IDLE, and let the lock go, then keep none for
HOLD_PAUSE.  A waiter that does not mark it (an older daxfs) gets in when
every reader's hold has run its HOLD_SECONDS at once.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time

from .coherence import _forks, catch_up, catch_up_unlocked, forks_seen, lock_pool
from .inode import Inode
from .journal import Transaction
from .layout import (
    BLOCK,
    CHUNK,
    INLINE_EXTENTS,
    INODE_SIZE,
    REC_FILL,
    REC_REWRITE,
    TXN_HEADER,
    TXN_REC,
    UNLINK_TAIL,
    CorruptionError,
    pack_create_record,
    pack_slot,
    pack_slot_record,
    pack_txn,
    pack_unlink_record,
    pad8,
    valid_name,
)
from .path import REG_T, At, Ino
from .pins import (
    MOUNTED_BYTE,
    READER_WAITING_BYTE,
    RangePins,
    anyone_waiting,
    locked_by_others,
    pin_slot,
    pinned_by_others,
    unpin_slot,
    writer_waiting,
)
from .region import flush_ranges

# What an absorb's record holds per lagging home: a directory block whole
# and the touch that names its directory; an inode slot whole.
LAG_BLOCK = 2 * TXN_REC.size + BLOCK
LAG_SLOT = TXN_REC.size + INODE_SIZE
# The log a said create, fill or rewrite needs at most, beside its name
# and the blocks it revokes: its record (every extent inline) and the
# header of the absorb it may owe next (the lag itself counted apart).
CREATE_ROOM = 2 * TXN_HEADER.size + TXN_REC.size * (1 + INLINE_EXTENTS) + UNLINK_TAIL.size
CREATE_ROOM += INODE_SIZE
DATA_ROOM = 2 * TXN_HEADER.size + TXN_REC.size * (1 + INLINE_EXTENTS) + INODE_SIZE
# The most lag kept (and at most a quarter of the journal): an absorb is one
# record, and a rebuild makes every unabsorbed unlink again.
ABSORB_MOST = 4 << 20
ABSORB_SECONDS = 1.0
# The most data a said create holds (more: the usual way, and its policy for
# large files).
SAY_CREATE_MOST = 1 << 20
# Beside other processes, less: a said change copies its data under the
# exclusive lock, where the usual way copies it with none held, so that
# two processes copy at once.  (Two dask workers writing 1 MiB zarr chunks
# made 0.77 - 0.83 of LocalStore's speed either way on 2026-12-07, as the
# code before: within the noise of that bench.)
SAY_SHARED_MOST = 64 << 10
# A said change of one block, in a section that keeps the pool lock, takes
# its block from this many taken ahead (_stashed_block): the allocator's
# lists are edited once for them, where each take edited them (a tenth of
# a create's cost), and those left go back when the lock does.  A batch
# costs about 50 us (its allocation and its pages made present): 16 a
# batch was 3% of a create of 4 KiB.
STASH_BLOCKS = 64
# Said unlinks give their blocks and inode numbers back this many files at
# a time: sorted, a run of files made one after another frees in a few
# calls instead of one each (the allocator's free is most of an unlink).
RELEASE_BATCH = 64
# Keeping the pool lock between said changes (module doc, "Keeping the
# lock"): at most HOLD_SECONDS at a time, then none kept for HOLD_PAUSE,
# in which a process waiting for it gets in as it would otherwise
# (coherence.lock_pool); while another mount is there, looked for again
# every HOLD_RECHECK.  A mount that stops calling lets it go within
# HOLD_SECONDS + HOLD_IDLE (a thread that looks every HOLD_IDLE: each of
# its wakings hands the GIL over, at about 40 us a time here, so it wakes
# seldom and calls end holds themselves).
HOLD_SECONDS = 0.005
HOLD_PAUSE = 0.001
# Alone on a version 10 pool, every process that can wait for the lock marks
# its wait (pins.WAITING_BYTE came before version 10, READER_WAITING_BYTE
# with it; an older daxfs refuses the pool), so a hold there looks for a
# marked waiter as a hold beside others does, and lasts up to
# HOLD_ALONE_MOST while none comes.  Its pauses then hold up a lone writer
# 2% of the time, not a sixth: each change in a pause takes and lets go
# the lock, catches up and gives back the blocks taken ahead (DESIGN.md,
# "Keeping the lock while alone": creates 2 - 11% faster).
HOLD_ALONE_MOST = 0.05
HOLD_RECHECK = 0.05
HOLD_IDLE = 0.05
# Keeping the shared lock between reads (module doc): its calls look for a
# process waiting for the exclusive lock every WAIT_LOOK, and the holder
# thread every SHARED_IDLE, so that one waits about that long for readers.
WAIT_LOOK = 0.0005
SHARED_IDLE = 0.002
# A writer keeping the exclusive lock beside others looks for a waiter every
# BESIDE_LOOK (the first a BESIDE_LOOK after its hold began), and a said
# change waiting for the lock polls for it SAID_SPIN before it sleeps in
# flock (coherence.lock_pool), making the holder's records again with no
# lock meanwhile: longer turns then cost the waiter little, and each
# handing over costs both.  Two processes making 4 KiB files in their own
# directories, 5,000 each (2026-12-07): 11,000 a second together looking
# every 0.5 ms and polling 0.5 ms, 15,000 - 16,600 looking every 2 ms and
# polling 3 ms (four processes: 5,200 and 6,400 - 7,100).
BESIDE_LOOK = 0.002
SAID_SPIN = 0.003
# A process that let a hold go for another that waited takes the lock again
# only once that one has it (its waiting mark gone), or after HANDOFF_MOST:
# flock hands the lock to nobody, and the one letting go, back first, took
# it again for change after change while the waiter, asleep in flock, slept
# on (then made every record of them again under the lock).  Meanwhile it
# makes the other's records again with no lock (catch_up_unlocked).
HANDOFF_MOST = 0.002


class LogicalPath:
    """The FileSystem's changes said in the journal (a mixin: module doc)."""

    def _init_logical(self) -> None:
        # Lagging homes: directory -> its blocks; inode slots (freed or made).
        self._lag_dirs: dict[int, set[int]] = {}
        self._lag_slots: set[int] = set()
        self._lag_bytes = 0  # what absorbing them would log
        self._lag_loose: set[int] = set()  # (see _forget_lag)
        # Files said unlinked whose blocks and numbers are not given back yet
        # (_release_said): committed free, so free to take once released.
        self._said_freed: list[Inode] = []
        self._absorb_most = min(ABSORB_MOST, (self.sb.journal_len // 4) & ~(BLOCK - 1))
        # Durable when written, and writable: where changes may be said;
        # unless DAXFS_SAY=0 (for comparing, and to drive the usual way:
        # bench share measures both).
        self._may_say = not self.readonly and not self._lazy
        self._may_say = self._may_say and os.environ.get("DAXFS_SAY", "1") != "0"
        # Where a reader may keep the shared lock (_shared_for_read): there,
        # and on a read-only mount of a pool whose homes are not held back
        # in a private view (group commit's, which its calls drop and read
        # again as it commits).
        self._may_keep_shared = self._may_say or (self.readonly and not self.journal.lazy_view)
        self._absorber: threading.Thread | None = None
        self._forget_hold()

    def _forget_hold(self) -> None:
        """No pool lock kept (a new mount, or a forked child: its description
        of the pool is its own and holds no lock)."""
        # The exclusive pool lock kept since an earlier said change: nobody
        # else has committed or joined since, and nobody else is mounted.
        self._held = False
        self._held_shared = False  # what is kept is the shared lock (a reader's)
        # What is kept is the exclusive lock, beside other processes: let go
        # as soon as one waits for it (_writer_waits).
        self._held_beside = False
        # The exclusive lock is kept until a process marks a wait for it
        # (beside others, or alone on a version 10 pool: HOLD_ALONE_MOST).
        self._held_watching = False
        self._hold_alone = False  # the hold under way began alone (_may_hold)
        self._shared_after = 0.0  # no new shared hold before then
        self._last_look = 0.0  # when a hold's call last looked for waiters
        self._keeping = False  # this section keeps it (it may defer pins)
        self._hold_until = 0.0  # when a hold must end (monotonic)
        self._hold_after = 0.0  # no new hold before then
        self._read_hold_after = 0.0  # no new hold for reading before then (not alone)
        self._handoff_until = 0.0  # a hold let go for a waiter: see HANDOFF_MOST
        # RangePins.made when the hold under way began with no lock of another
        # description on any byte of the pool (_others_may_pin); else None.
        self._unpinned_as_of: int | None = None
        # Inodes opened here, while the lock was kept, whose pins are not
        # taken: nobody could look at them.  Taken before it is let go.
        self._pins_due: set[int] = set()
        # Single blocks taken ahead while the lock is kept (_stashed_block):
        # used in the allocator, claimed by no record, so free on the media.
        # Given back before the lock goes, which lets another claim them.
        self._stash: list[int] = []
        self._hold_began = threading.Event()
        self._holder: threading.Thread | None = None

    # -- saying unlinks ------------------------------------------------------
    def _unlink_said(self, spath: str) -> bool:
        """Unlink ``spath`` with a logical record if this call can: the
        path in the path cache, a small regular file with
        one name and no user.  False: nothing done, the caller unlinks the
        usual way."""
        return self._in_said_section(self._say_unlink, spath) is not None

    def _unlink_names_said(self, sdir: str, names: list[str]) -> bool:
        """_unlink_names's batch of ``names`` in directory ``sdir``, said in
        one record, if every name is a file _unlink_said would say; False:
        nothing done."""
        return self._in_said_section(self._say_unlinks, sdir, names) is not None

    def _create_said(self, spath: str, data, perms: int, pin: bool = False) -> int | None:
        """Make the new file ``spath`` holding ``data`` (permission bits
        ``perms``) with a logical record if this call can: the
        directory in the path cache with room for the name, the
        name free, the data under SAY_CREATE_MOST.  ``pin``: pinned for a
        handle (an open that made it).  Its inode number, or None: nothing
        done, the caller makes it the usual way."""
        if len(data) > self._say_most():
            return None
        return self._in_said_section(self._say_create, spath, data, perms, pin)

    def _fill_said(self, ino: int, data) -> bool:
        """Write ``data`` at offset 0 of file ``ino``, which has no data yet,
        with a logical record if this call can: the file
        a plain one with one name, the data under SAY_CREATE_MOST.  False:
        nothing done, the caller writes the usual way."""
        if len(data) > self._say_most():
            return False
        return self._in_said_section(self._say_fill, ino, data) is not None

    def _rewrite_said(self, spath: str, data, pin: bool = False) -> int | None:
        """Empty the existing file ``spath`` (``data`` empty: an open for
        writing) or make it hold ``data`` (write_bytes over it) with a
        logical record if this call can: the file a
        small plain one with one name, mapped nowhere, the data under
        SAY_CREATE_MOST.  ``pin``: pinned for a handle.  Its inode number,
        or None: nothing done, the caller does it the usual way."""
        if len(data) > self._say_most():
            return None
        return self._in_said_section(self._say_rewrite, spath, data, pin)

    def _made_or_rewritten_said(
        self, spath: str, data, perms: int, pin: bool, rewrite: bool
    ) -> int | None:
        """The said way of an open for writing or a write_bytes: a new name
        made by a said create (_create_said), or, with ``rewrite``, a file
        there emptied or given ``data`` by a said rewrite; its inode
        number, or None: the caller goes the usual way.  The path cache
        says which to try (a hint: each checks for itself), and is asked
        again after a create that found the name, whose walk may have just
        cached its directory."""
        there = self._name_cached(spath)
        ino = None if there else self._create_said(spath, data, perms, pin=pin)
        if ino is None and rewrite and (there or self._name_cached(spath)):
            ino = self._rewrite_said(spath, data, pin=pin)
        return ino

    def _emptied_said(self, spath: str) -> bool:
        """A truncate to nothing of ``spath`` said, as _rewrite_said with no
        data; an Ino (the FUSE server's setattr names the inode, not a
        path) as _empty_said.  False: nothing done."""
        if type(spath) is Ino:
            return self._empty_said(spath.ino, spath.born)
        return self._rewrite_said(spath, b"") is not None

    def _empty_said(self, ino: int, born: int | None = None) -> bool:
        """Truncate file ``ino`` (born at ``born``, if given) to nothing (an
        open with O_TRUNC through the FUSE server, which holds the inode,
        not a path) with a logical record if this call can, as
        _rewrite_said.  False: nothing done."""
        return self._in_said_section(self._say_empty, ino, born) is not None

    def _say_most(self) -> int:
        """The most data a said change holds: SAY_CREATE_MOST, or
        SAY_SHARED_MOST while the process table shows others."""
        return SAY_SHARED_MOST if self.leases.shared else SAY_CREATE_MOST

    def _give_back_unlinked(self, inodes: list[Inode]) -> None:
        """After a committed said unlink, under the thread lock (the
        allocator is edited under it only): the files ``inodes`` it freed
        given back, their blocks and numbers, once RELEASE_BATCH have
        gathered (_release_said)."""
        self._said_freed += inodes
        if len(self._said_freed) >= RELEASE_BATCH:
            self._release_said()

    def _in_said_section(self, say, *args):
        """``say(*args)`` under the thread lock and the exclusive pool lock,
        if this mount may say changes (writable, durable when written, no
        call of ours under way); its answer, or None.  The pool lock may be
        kept from the last said change, and kept for the next (module doc,
        "Keeping the lock")."""
        if not self._may_say or self.sb.version < 8:
            return None
        tl = self._tlock
        tl.acquire()
        try:
            if self._depth or self.closed or self._forks != _forks[0]:  # (forks_seen())
                return None
            now = time.monotonic()
            if self._followers_due <= now:
                self._look_at_followers()
            if self._unmapped:
                return None
            held = self._held
            if held and (
                self._held_shared
                or now >= self._hold_until
                # (_waiter_seen, its time between looks asked first: every
                # said change of a hold asks, and most are between looks)
                or (now - self._last_look >= BESIDE_LOOK and self._waiter_seen(now))
            ):
                if self._held_watching:
                    self._let_go_for_waiters(now)
                else:
                    self._let_go(pause=not self._held_shared)  # (a reader's: taken anew)
                held = False
            if not held:
                if now < self._handoff_until:
                    self._after_handoff(now)
                lock_pool(self.region.fd, fcntl.LOCK_EX, catch_up_unlocked, self, SAID_SPIN)
            said = None
            try:
                if not held:
                    self._caught_up_here()  # (another's commits: said after them)
                self._keeping = held or self._may_hold(now)
                said = say(*args)
            finally:
                self._keeping, keep = False, self._keeping and said is not None
                if keep and not held:
                    self._hold(now, beside=not self._hold_alone)
                elif not keep:
                    self._let_go(pause=held)
            if said is not None and self._absorber is None:
                self._start_absorber()
            return said
        finally:
            tl.release()

    def _may_say_now(self) -> bool:
        """Caught up, as coherence.catch_up would find it (the same commit at
        the same place: a checkpoint moves the log, not the seq; no commit
        a dead process left unpublished), and no follower (followers read
        homes, which lag a said change).  Other processes may be there:
        they make our said changes again as they catch up (module doc,
        "Beside other processes").  With the pool lock kept, the log holds
        still."""
        if self._held and not self._held_shared:
            return not self.followers.any()
        return self.journal.unmoved(self._seen_seq, self._seen_pos) and not self.followers.any()

    # -- keeping the lock ----------------------------------------------------
    def _may_hold(self, now: float) -> bool:
        """May this section keep the exclusive pool lock it took?  Not in a
        pause, nor with a follower.  Alone (_hold_alone: no other
        description of the pool marks a mount, pins.MOUNTED_BYTE, as a
        reader does, and nobody else is in the process table), for
        HOLD_SECONDS (HOLD_ALONE_MOST on a version 10 pool, while nobody
        waits for it); beside other processes, while nobody waits for it
        (_waiter_seen)."""
        if now < self._hold_after or self.followers.any():
            return False  # (a follower: nothing is said, _may_say_now)
        fd, made = self.region.fd, RangePins.made
        if not locked_by_others(fd):  # (the usual case: one look for both)
            self._unpinned_as_of = made
            self._hold_alone = True
            return True
        self._unpinned_as_of = None
        self._hold_alone = not pinned_by_others(fd, MOUNTED_BYTE, 1) and self._alone()
        return True

    def _may_hold_alone(self, now: float) -> bool:
        """_may_hold, for a hold only a process alone begins (one for
        reading: beside others, readers keep the shared lock)."""
        return self._may_hold(now) and self._hold_alone

    def _let_go_for_waiters(self, now: float) -> None:
        """Let a hold beside others go (its time up, or a process waits).
        If a reader waits, begin none for HOLD_RECHECK: taken again at
        once, the lock kept readers out (two processes reading beside one
        writing made 37,000 reads a second together, against 170,000 before
        such holds).  A writer that waits has the lock now: no pause."""
        readers = pinned_by_others(self.region.fd, READER_WAITING_BYTE, 1)
        self._let_go(pause=readers or now >= self._hold_until)
        self._handoff_until = now + HANDOFF_MOST
        if readers:
            self._hold_after = now + HOLD_RECHECK

    def _after_handoff(self, now: float) -> None:
        """Before taking the pool lock again within HANDOFF_MOST of letting
        a hold go for a waiter: wait until no process waits for it any more
        (the waiter's mark goes once it has the lock), making its records
        again meanwhile with no lock."""
        fd, until = self.region.fd, self._handoff_until
        self._handoff_until = 0.0
        while now < until and anyone_waiting(fd):
            catch_up_unlocked(self)
            os.sched_yield()
            now = time.monotonic()

    def _waiter_seen(self, now: float, every: float = BESIDE_LOOK) -> bool:
        """Does a process wait for the pool lock (either) this one keeps
        exclusively until one does (_held_watching: beside others, or alone
        on a version 10 pool)?  Looked at ``every`` seconds, the first
        that long after the hold began: a said change looks every
        BESIDE_LOOK (the holder makes a few changes before it gives way,
        while the waiter makes them again), a read served by the hold every
        WAIT_LOOK (readers waiting make nothing meanwhile)."""
        return self._held_watching and self._writer_waits(now, anyone_waiting, every)

    def _kept_for_read(self, now: float) -> bool:
        """For a call that takes the shared pool lock for a moment (an open
        for reading): is the exclusive lock kept, so that it takes none?  A
        hold whose time is up is let go first, as a said section lets it
        go; with no hold, one begins here when a said section's could
        (_held_for_read): a process reading alone keeps the lock as one
        writing alone does, and its opens take no flock and put their pins
        off.  Beside others, the shared lock is kept instead (_shared_for_read),
        and let go when a process waits for the exclusive one."""
        if self._held:
            if self._held_shared and self._writer_waits(now):
                self._give_way(now)
                return False
            if now < self._hold_until and not self._waiter_seen(now, WAIT_LOOK):
                return True
            if self._held_watching:
                self._let_go_for_waiters(now)
            else:
                self._let_go(pause=True)
            return False
        if (
            now >= max(self._hold_after, self._read_hold_after)
            and self._may_say
            and self._held_for_read(now)
        ):
            return True
        return now >= self._shared_after and self._may_keep_shared and self._shared_for_read(now)

    def _shared_for_read(self, now: float) -> bool:
        """The shared pool lock taken and kept (module doc, "Keeping the
        shared lock"), caught up under it, if nobody holds the exclusive one
        or waits for it.  False: nothing taken or kept (held exclusively:
        the usual way waits for it)."""
        return self._kept_if(fcntl.LOCK_SH, self._begin_shared_hold, now) is True

    def _begin_shared_hold(self, now: float) -> bool:
        """Under the shared lock just taken: keep it, caught up, unless a
        process waits for the exclusive one (then none for HOLD_PAUSE)."""
        if writer_waiting(self.region.fd):
            self._shared_after = now + HOLD_RECHECK  # (as _give_way)
            return False
        self._caught_up_here(exclusive=False)
        self._hold(now, shared=True)
        return True

    def _kept_if(self, op: int, begin, now: float) -> bool | None:
        """The pool lock taken (``op``, with no waiting), then ``begin(now)``
        under it, which keeps it by beginning a hold: True.  False when it
        did not, or met damage catching up (the usual way meets it too): the
        lock is let go.  None: the lock was held elsewhere."""
        fd = self.region.fd
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            if begin(now):
                return True
        except OSError:
            pass
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def _give_way(self, now: float) -> None:
        """Let a shared hold go for a process waiting for the exclusive lock,
        and begin none for HOLD_RECHECK: a writer that came once may soon
        come again, and each of its changes would wait for a reader's next
        look (a writer beside two busy readers made 40% fewer files a
        second when they held again after HOLD_PAUSE)."""
        self._let_go(pause=True)
        self._shared_after = now + HOLD_RECHECK

    def _writer_waits(self, now: float, look=writer_waiting, every: float = WAIT_LOOK) -> bool:
        """Does a process wait for the exclusive pool lock (WAITING_BYTE;
        ``look``: pins.anyone_waiting, for either lock)?  Looked at
        ``every`` seconds; False between looks."""
        if now - self._last_look < every:
            return False
        self._last_look = now
        return look(self.region.fd)

    def _held_for_read(self, now: float) -> bool:
        """The exclusive pool lock taken and kept, if this mount, caught up
        under it, may say changes (_may_say_now) and, alone, hold it
        (_may_hold_alone).  True: held; False: nothing taken (the lock held
        elsewhere, or not alone: not tried again for HOLD_RECHECK; damage
        met in the process table: the usual way meets it too)."""
        if self.sb.version < 8:
            return False
        if self._kept_if(fcntl.LOCK_EX, self._begin_read_hold, now):
            return True
        self._read_hold_after = now + HOLD_RECHECK  # (not alone: said changes may still hold)
        return False

    def _begin_read_hold(self, now: float) -> bool:
        """Under the exclusive lock just taken: keep it, caught up, if this
        mount is alone and may hold it."""
        self._caught_up_here()  # (a checkpoint moves the log: peek misses it)
        if self._may_say_now() and self._may_hold_alone(now):
            self._hold(now)
            return True
        return False

    def _caught_up_here(self, exclusive: bool = True) -> None:
        """Catch up, if the log moved since this mount last did, under the
        pool lock this section took (``exclusive`` or not), as a call inside
        it (a dead writer's commit finished too, as Locked finishes it)."""
        if self.journal.unmoved(self._seen_seq, self._seen_pos):
            return
        self._depth += 1
        try:
            catch_up(self, exclusive)
        finally:
            self._depth -= 1

    def _others_may_pin(self) -> bool:
        """Might another description of the pool (another process's, or a
        Mapping's of ours) pin a file now?  Not in a section that keeps the
        lock of a hold that began with no lock of another description on
        any byte of the pool, if this process made no description of its
        own since: pins are taken under the pool lock (coherence.Locked
        ends a hold first), so none has come.  An unlink then need not ask
        the kernel about its file's slot (about a fifth of its cost)."""
        return not (self._keeping and self._unpinned_as_of == RangePins.made)

    def _hold(self, now: float, shared: bool = False, beside: bool = False) -> None:
        """Keep the exclusive pool lock (``shared``: the shared one, a
        reader's; ``beside``: beside other processes, until one waits) past
        this section, for HOLD_SECONDS (the next said section lets it go
        then; the holder thread, if no call comes within HOLD_IDLE, or
        SHARED_IDLE for a hold others may wait for).  Alone on a version 10
        pool, for HOLD_ALONE_MOST, until a process marks a wait."""
        watching = beside or (not shared and self.sb.version >= 10)
        self._held = True
        self._held_shared = shared
        self._held_beside = beside
        self._held_watching = watching
        self._hold_until = now + (HOLD_ALONE_MOST if watching and not beside else HOLD_SECONDS)
        if watching:
            self._last_look = now
        self._hold_began.set()
        if self._holder is None:
            t = threading.Thread(target=self._let_go_when_due, name="daxfs-hold", daemon=True)
            self._holder = t
            t.start()

    def _let_go(self, pause: bool) -> None:
        """Release the exclusive pool lock (thread lock held), kept or taken
        by this section, once the pins it deferred are taken (a failure
        leaves it held: nothing unpinned is seen) and the blocks taken
        ahead are given back (another may claim them once it is gone).  ``pause``: no new hold
        for HOLD_PAUSE (a hold that ran its time, so that a waiter gets in)."""
        if self._pins_due:
            self._take_pins_due()
        if self._stash:
            stash, self._stash = self._stash, []
            self._free_merged(sorted((b, 1) for b in stash))
        self._held = self._held_shared = self._held_beside = self._held_watching = False
        self._hold_alone = False
        self._unpinned_as_of = None
        fcntl.flock(self.region.fd, fcntl.LOCK_UN)
        if pause:
            self._hold_after = self._shared_after = time.monotonic() + HOLD_PAUSE

    def _take_pins_due(self) -> None:
        """Take the pins put off while the lock was kept.  A handle the
        collector closes meanwhile (its close may run inside this loop)
        finds its inode no longer due and drops the lock itself, so each
        is looked at again after its lock is taken; on an error, those
        not taken are due again."""
        fd, slot_off = self.region.fd, self.inodes.slot_off
        due = sorted(self._pins_due)
        self._pins_due = set()
        for i, ino in enumerate(due):
            try:
                if self._open.get(ino):
                    pin_slot(fd, slot_off(ino))  # (sorted: touching pins merge, pins.py)
                    if not self._open.get(ino):  # (closed meanwhile)
                        unpin_slot(fd, slot_off(ino))
            except BaseException:
                self._pins_due.update(due[i:])
                raise

    def _let_go_when_due(self) -> None:
        """The holder thread: let a kept pool lock go once its time is up, or
        a reader's when a process waits for the exclusive one, so that a
        process that stopped calling does not keep it."""
        began, stop = self._hold_began, self._stop_committer
        while True:
            began.wait()
            idle = SHARED_IDLE if self._held_shared or self._held_beside else HOLD_IDLE
            if stop.wait(idle) or self.closed or self._forks != forks_seen():
                return
            with self._tlock:
                if self.closed:
                    return
                if self._held:
                    try:
                        now = time.monotonic()
                        fd = self.region.fd
                        if self._held_shared and writer_waiting(fd):
                            self._give_way(now)
                        elif self._held_watching and anyone_waiting(fd):
                            self._let_go_for_waiters(now)
                        elif now >= self._hold_until:
                            self._let_go(pause=True)
                    except OSError:
                        self._holder = None  # (the next hold starts another)
                        return  # (kept: the next call meets the error, Locked)
                if not self._held:
                    began.clear()

    def _said_committed(self) -> None:
        """After a said record: caught up with it.  (The path cache was
        current, as the call's _cached_entry found it; a file's name leads
        no path elsewhere, so it stays current.)"""
        self._seen_seq = self._heads_seq = self.journal.next_seq
        self._seen_pos = self.journal.pos

    def _say_unlink(self, spath: str) -> list[Inode] | None:
        """_say_unlinks of one name, written out (every unlink pays it)."""
        journal = self.journal
        if not self._may_say_now():
            return None
        got = self._entry_to_say(spath)
        inode = None if got is None else got[2]
        if inode is None or not self._sayable(inode):
            return None
        (dir_ino, _links), name, _inode = got
        d, ino = self.dirs[dir_ino], inode.ino
        raw = name.encode("utf-8", "surrogateescape")
        revokes = [(dev, n) for _f, dev, n in inode.extents]
        size = TXN_HEADER.size + TXN_REC.size * (1 + len(revokes)) + UNLINK_TAIL.size
        size += pad8(len(raw))
        lag = self._lag_bytes + self._lag_cost(dir_ino, d.entries[name][2], ino)
        if lag > self._absorb_most or journal.room() < size + lag + TXN_HEADER.size:
            return None  # (the usual way absorbs first)
        if self._others_may_pin() and pinned_by_others(
            self.region.fd, self.inodes.slot_off(ino), 1
        ):
            return None
        now = time.time_ns()
        journal.commit_said(pack_unlink_record(journal.next_seq, dir_ino, ino, raw, now, revokes))
        self._said_committed()
        self._apply_unlink(d, name, inode, now)
        self._lag_bytes = lag
        self._give_back_unlinked([inode])
        return [inode]

    def _say_unlinks(self, sdir: str, names: list[str]) -> list[Inode] | None:
        """Under the exclusive pool lock: the files ``names`` of directory
        ``sdir``, unlinked by one record and in memory, their blocks and
        numbers given back (_give_back_unlinked); their inodes, or None:
        nothing done."""
        journal = self.journal
        if not self._may_say_now():
            return None
        found = self._names_to_say(sdir, names)
        if found is None:
            return None
        d, files = found
        lagging = self._lag_dirs.get(d.ino, ())
        blocks = {d.entries[name][2] for name, _inode in files}.difference(lagging)
        cost = LAG_BLOCK * len(blocks) + LAG_SLOT * len(files)
        raws = [name.encode("utf-8", "surrogateescape") for name, _inode in files]
        revokes = [(dev, n) for _name, inode in files for _f, dev, n in inode.extents]
        size = TXN_HEADER.size + TXN_REC.size * (len(files) + len(revokes))
        size += sum(UNLINK_TAIL.size + pad8(len(raw)) for raw in raws)
        lag = self._lag_bytes + cost
        if lag > self._absorb_most or journal.room() < size + lag + TXN_HEADER.size:
            return None  # (the usual way absorbs first)
        fd, slot_off = self.region.fd, self.inodes.slot_off
        if self._others_may_pin() and any(
            pinned_by_others(fd, slot_off(i.ino), 1) for _n, i in files
        ):
            return None
        seq, now = journal.next_seq, time.time_ns()
        if len(files) == 1:
            record = pack_unlink_record(seq, d.ino, files[0][1].ino, raws[0], now, revokes)
        else:
            pairs = zip(files, raws, strict=True)
            said = [(d.ino, inode.ino, raw, now) for (_n, inode), raw in pairs]
            record = pack_txn(seq, [], revokes, unlinks=said)
        journal.commit_said(record)
        self._said_committed()
        for name, inode in files:
            self._apply_unlink(d, name, inode, now)
        self._lag_bytes += cost
        inodes = [inode for _name, inode in files]
        self._give_back_unlinked(inodes)
        return inodes

    def _say_create(self, spath: str, data, perms: int, pin: bool) -> int | None:
        """Under the exclusive pool lock: the new file made, its data stored
        (and persisted, on pmem) before one record says it; its inode
        number, or None: nothing done."""
        if not self._may_say_now() or not self.inodes.nfree:
            return None
        got = self._entry_to_say(spath)
        if got is None or got[2] is not None:
            return None  # (a name there: the usual way says what to do)
        (dir_ino, _links), name, _none = got
        d, parent = self.dirs.get(dir_ino), self.inodes.cache.get(dir_ino)
        raw = name.encode("utf-8", "surrogateescape")
        room = None if d is None else d.room_for(raw)
        if room is None or parent is None or parent.nlink == 0:
            return None
        lag = self._lag_bytes + LAG_BLOCK + LAG_SLOT
        if lag > self._absorb_most or self.journal.room() < CREATE_ROOM + pad8(len(raw)) + lag:
            return None
        runs = self._said_blocks(len(data)) if data else []
        if runs is None:
            return None
        ino = None
        try:
            ino = self._said_ino()
            inode = self._new_said_file(ino, parent, perms, data, runs)
            slot = inode.slot(0)
            seq, claims = self.journal.next_seq, _claims(inode.extents)
            block = room[0] if self.sb.version >= 10 else -1  # (SPEC.md, "Versions")
            record = pack_create_record(seq, dir_ino, ino, raw, inode.ctime, slot, claims, block)
            self.journal.commit_said(record)
        except BaseException as e:
            if ino is not None:
                self.inodes.return_ino(ino)
            if self._unsaid(e, runs):
                return None
            raise
        self._said_committed()
        self.inodes.pending[ino] = slot
        placed = self._apply_create(d, name, inode, inode.ctime, room)
        assert placed, "a directory with room for a name found none"
        if pin:
            self._pin(ino)  # (inside the section: no process that mounts
            # meanwhile may take the file for unused)
        return ino

    def _say_fill(self, ino: int, data) -> int | None:
        """Under the exclusive pool lock: file ``ino`` given ``data`` at
        offset 0, stored (and persisted, on pmem) before one record says
        it; ``ino``, or None: nothing done."""
        inode = self.inodes.cache.get(ino)
        if inode is None or not self._may_say_now() or not self._fillable(inode):
            return None
        return ino if self._say_data(inode, data, [], REC_FILL) else None

    def _say_rewrite(self, spath: str, data, pin: bool) -> int | None:
        """Under the exclusive pool lock: the file ``spath`` names given
        ``data`` (none: emptied), stored (and persisted, on pmem) in new
        blocks before one record says it, its old blocks free once it is
        committed; its inode number, or None: nothing done."""
        if self.sb.version < 9 or not self._may_say_now():
            return None
        got = self._entry_to_say(spath)
        ino = None if got is None else self._say_rewrite_of(got[2], data)
        if ino is not None and pin:
            self._pin(ino)  # (inside the section, as a said create's)
        return ino

    def _say_empty(self, ino: int, born: int | None) -> int | None:
        """Under the exclusive pool lock: file ``ino`` (born at ``born``, if
        given) emptied by one record (_say_rewrite's, with no data); ``ino``,
        or None: nothing done (the usual way says why)."""
        if self.sb.version < 9 or not self._may_say_now():
            return None
        inode = self.inodes.cache.get(ino)
        if inode is None or (born is not None and inode.btime != born):
            return None
        return self._say_rewrite_of(inode, b"")

    def _say_rewrite_of(self, inode: Inode | None, data) -> int | None:
        """``inode`` (cached, caught up) given ``data`` by a said rewrite if
        it may be (_rewritable, mapped nowhere); its number, or None."""
        if inode is None or not self._rewritable(inode):
            return None
        old = [(dev, n) for _f, dev, n in inode.extents]
        if self._others_may_pin() and self._mapped(old, inode.ino):
            return None  # the usual way refuses (EBUSY)
        return inode.ino if self._say_data(inode, data, old, REC_REWRITE) else None

    def _say_data(self, inode: Inode, data, old: list[tuple[int, int]], kind: int) -> bool:
        """A said fill's or rewrite's record (``kind``) and what follows it:
        ``data`` stored (and persisted, on pmem) in new blocks, then one
        record says the inode's new slot, revokes its ``old`` blocks
        (device runs) and claims the new; the cached inode takes the new
        state, and the old blocks are free.  False: nothing done."""
        ino = inode.ino
        lag = self._lag_bytes + (0 if ino in self._lag_slots else LAG_SLOT)
        need = DATA_ROOM + TXN_REC.size * len(old) + lag
        if lag > self._absorb_most or self.journal.room() < need:
            return False
        runs = self._said_blocks(len(data))
        if runs is None:
            return False
        try:
            extents = self._store_said_data(data, runs)
            now, generation = time.time_ns(), inode.generation + 1
            slot = pack_slot(
                ino, generation, inode.mode, inode.nlink, inode.uid, inode.gid, len(data),
                now, now, now, inode.btime, inode.parent, len(extents), inode.rdev, 0, extents,
            )  # fmt: skip
            seq, claims = self.journal.next_seq, _claims(extents)
            self.journal.commit_said(pack_slot_record(seq, kind, ino, slot, old, claims))
        except BaseException as e:
            if self._unsaid(e, runs):
                return False
            raise
        self._said_committed()
        self.inodes.pending[ino] = slot
        _take_state(inode, len(data), extents, generation, now, now, now)
        self._give_back_said(old)
        self._lag_slots.add(ino)
        self._lag_bytes = lag
        self._dirty_times.discard(ino)  # (the slot as said holds the times)
        return True

    def _give_back_said(self, old: list[tuple[int, int]]) -> None:
        """The device runs ``old`` a committed rewrite freed (nobody maps
        them, nothing else holds them) given back: a single block to the
        blocks taken ahead while the lock is kept, which the next said
        change of one block takes (an overwrite's fill: no allocator edit
        either way; free on the media as those taken ahead are), the rest
        to the allocator."""
        for dev, n in old:
            if n == BLOCK and self._keeping and self._hold_alone:
                self._stash.append(self._block(dev))
            else:
                self.allocator.free(self._block(dev), n // BLOCK)

    def _said_blocks(self, nbytes: int) -> list[tuple[int, int]] | None:
        """Runs of blocks for ``nbytes`` of a said change's data, at most
        INLINE_EXTENTS of them (every extent in the slot); None, nothing
        taken, when the allocator has none (the usual way says ENOSPC,
        after what it frees) or only in more runs."""
        nblocks = -(-nbytes // BLOCK)
        if nblocks == 1 and self._keeping:
            return self._stashed_block()
        try:
            # (beside others, in this process's windows: leases.py)
            runs = self.leases.alloc_blocks(nblocks, None) if nblocks else []
        except OSError:
            return None
        if len(runs) > INLINE_EXTENTS:
            self._unsaid(_Unsaid(), runs)
            return None
        return runs

    def _said_ino(self) -> int:
        """A said create's inode number (some are free): beside other
        processes, from this process's range (leases.py), as any create's."""
        return (
            self.inodes.take_ino() if self._keeping and self._hold_alone else self.leases.take_ino()
        )

    def _stashed_block(self) -> list[tuple[int, int]] | None:
        """_said_blocks of one block in a section that keeps the pool lock:
        the next of the blocks taken ahead, STASH_BLOCKS at a time (see
        _blocks_ahead); None when there are none."""
        stash = self._stash
        if not stash:
            try:
                taken = self._blocks_ahead()
            except OSError:
                return None
            span = taken[-1] + 1 - taken[0]
            if span <= 2 * STASH_BLOCKS:  # (mapped now, not one fault a create)
                self.region.prefault(self._dev(taken[0]), span * BLOCK)
            taken.reverse()  # (popped lowest first, as taken one by one)
            stash += taken
        return [(stash.pop(), 1)]

    def _blocks_ahead(self) -> list[int]:
        """STASH_BLOCKS single blocks (fewer when they run out), ascending:
        alone, placed as single takes would place them (alloc_singles);
        beside others, from this process's windows, as each said change's
        block would be (leases.py: nobody else takes a block there, and
        windows are taken back only under the exclusive lock, which the
        hold keeps until _let_go gives these back)."""
        if self._hold_alone:
            return self.allocator.alloc_singles(STASH_BLOCKS)
        return self.leases.alloc_singles(STASH_BLOCKS)

    def _unsaid(self, e: BaseException, runs) -> bool:
        """A said change failed with ``e`` before its record: its blocks
        given back.  True when the usual way is to make it (ENOSPC
        reserving space, a change that cannot be said), False when ``e``
        is the caller's to raise."""
        for b, n in runs:
            self.allocator.free(b, n)
        return isinstance(e, (_Unsaid, OSError))

    def _new_said_file(self, ino: int, parent: Inode, perms: int, data, runs) -> Inode:
        """Inode ``ino``, a new file in ``parent`` (owned as _new_inode
        owns one) holding ``data`` in the block ``runs`` (_store_said_data)."""
        now = time.time_ns()
        uid, gid, mode = self._new_owner(parent, stat.S_IFREG | perms)
        extents = self._store_said_data(data, runs) if runs else []
        # (every field in one call: a said create pays each line)
        return Inode(
            ino, mode, 1, uid, gid, len(data), now, now, now, now, parent.ino, 1, extents,
            staged_generation=1,
        )  # fmt: skip

    def _store_said_data(self, data, runs) -> list[tuple[int, int, int]]:
        """Store ``data`` in the block ``runs``, the rest of the last block
        zeroed, persisted before the record that names it (ordered data,
        as every allocating write); the extents that map it from offset 0."""
        region, devs, extents, at = self.region, [], [], 0
        for b, n in runs:
            dev, length = self._dev(b), n * BLOCK
            region.reserve(dev, length)  # (ENOSPC here, not SIGBUS at the store)
            piece = data[at : at + length]
            region.store(dev, piece)
            if len(piece) < length:
                region.zero(dev + len(piece), length - len(piece))
            devs.append((dev, length))
            extents.append((at, dev, length))
            at += length
        if devs and not region.volatile and flush_ranges(region, devs):
            region.fence()
        return extents

    def _entry_to_say(self, spath: str):
        """_cached_entry(spath, False), after one walk that fills the caches
        where they lack it (another's absorb made us forget the inodes it
        wrote, say): under the exclusive pool lock, the homes may be read.
        A name in a directory given by number (At: the FUSE server's
        calls) is looked up in that directory.  None if the walk meets an
        error (the usual way reports it)."""
        if type(spath) is At:
            return self._at_entry_to_say(spath)
        got = self._cached_entry(spath, False)
        if got is None:
            try:
                self._resolve(spath, follow=False, entry=True)
            except OSError:
                return None
            got = self._cached_entry(spath, False)
        return got

    def _at_entry_to_say(self, at: At):
        """_entry_to_say of name ``at`` in directory ``at.dir``: a valid name
        and, when there is an entry, a plain file's (anything else, damage
        included, goes the usual way, which says what it is)."""
        name = str(at)
        if not valid_name(name.encode("utf-8", "surrogateescape")):
            return None
        try:
            if not self._is_born(at.dir, at.born) or not self._inode(at.dir).is_dir:
                return None
            entry = self._dir(at.dir).entries.get(name)
            inode = None if entry is None else self._inode(entry[0])
        except OSError:
            return None
        if inode is not None and (entry[1] != REG_T or not stat.S_ISREG(inode.mode)):
            return None
        return (at.dir, 0), name, inode

    def _names_to_say(self, sdir: str, names: list[str]):
        got = self._cached_entry(sdir, True)
        if got is None or got[2] is None or not got[2].is_dir or len(set(names)) < len(names):
            return None
        d = self.dirs.get(got[2].ino)
        if d is None:
            return None
        files = []
        for name in names:
            entry = d.entries.get(name)
            inode = None if entry is None else self.inodes.cache.get(entry[0])
            if inode is None or not self._sayable(inode):
                return None
            files.append((name, inode))
        return d, files

    def _sayable(self, inode: Inode) -> bool:
        """May this file's unlink be said?  A regular file with one name, open
        nowhere here, under a chunk, every extent in its slot, and nothing
        this mount keeps about it (a tail to trim, windows to move)."""
        ino = inode.ino
        return (
            inode.mode & 0o170000 == stat.S_IFREG  # (_unlinkable, written out: all ask)
            and inode.nlink == 1
            and not inode.ext_blocks
            and len(inode.extents) <= INLINE_EXTENTS
            and inode.allocated_bytes < CHUNK
            and not self._open.get(ino)
            and ino not in self._tailed
            and ino not in self._fragmented
            and ino not in self._follower_inos
        )

    def _rewritable(self, inode: Inode) -> bool:
        """May this file be emptied or given new data by a said rewrite?  A
        regular file with one name, under a chunk, every extent in its
        slot, and nothing this mount keeps about it.  (Open here is no
        matter: handles share the cached inode, which takes the new state.)"""
        ino = inode.ino
        return (
            _unlinkable(inode)
            and inode.allocated_bytes < CHUNK
            and ino not in self._tailed
            and ino not in self._fragmented
            and ino not in self._follower_inos
        )

    def _fillable(self, inode: Inode) -> bool:
        """May this file's first data be said?  A regular file with one name,
        no data and no extent block (open, here, as it is being written),
        and nothing this mount keeps about it."""
        ino = inode.ino
        return (
            inode.mode & 0o170000 == stat.S_IFREG
            and inode.nlink == 1
            and not inode.size
            and not inode.extents
            and not inode.ext_blocks
            and ino not in self._tailed
            and ino not in self._fragmented
            and ino not in self._follower_inos
        )

    def _alone(self) -> bool:
        """No other process in the process table and no follower (exclusive
        pool lock held: one that mounts absorbs before it joins)."""
        return self.leases.alone() and not self.followers.any()

    def _lag_cost(self, dir_ino: int, block: int, ino: int) -> int:
        blocks = self._lag_dirs.get(dir_ino)
        cost = 0 if blocks is not None and block in blocks else LAG_BLOCK
        return cost + (0 if ino in self._lag_slots else LAG_SLOT)

    def _apply_unlink(self, d, name: str, inode: Inode, when: int) -> int:
        """Make an unlink in memory: the entry tombstoned, the directory's
        times set to ``when`` (written lazily, as for any unlink), the inode
        dropped (no handle holds it), both homes lagging (the caller counts
        what absorbing them costs, as _lag_cost said; this answers it too).
        Its blocks (its extents) are the caller's to give back once the
        record is committed."""
        cost = self._lagging(d, d.forget(name), inode.ino, when)
        self.inodes.cache.pop(inode.ino, None)
        self.inodes.pending[inode.ino] = bytes(INODE_SIZE)  # (freed, as absorbed)
        self._dirty_times.discard(inode.ino)
        return cost

    def _lagging(self, d, block: int, ino: int, when: int) -> int:
        """Mark block ``block`` of directory ``d`` and slot ``ino`` lagging,
        and set the directory's times to ``when`` (written lazily, as for
        any change of its entries); what absorbing them costs more than it
        did (_lag_cost's answer, asked before)."""
        blocks = self._lag_dirs.get(d.ino)
        if blocks is None:
            blocks = self._lag_dirs[d.ino] = set()
        cost = 0
        if block not in blocks:
            blocks.add(block)
            cost = LAG_BLOCK
        lag_slots = self._lag_slots
        if ino not in lag_slots:
            lag_slots.add(ino)
            cost += LAG_SLOT
        parent = self.inodes.cache.get(d.ino) or self._inode(d.ino)
        parent.mtime = parent.atime = parent.ctime = when
        self._dirty_times.add(d.ino)
        return cost

    # -- making them again ---------------------------------------------------
    def _redo_pending(self) -> None:
        """After the caches were rebuilt from the homes: make the changes no
        record absorbed yet, in order (module doc)."""
        self._forget_lag()
        for rec in self.journal.pending_said():
            self._redo_said(rec)

    def _redo_said(self, rec) -> None:
        """Make the changes one record says (its unlinks, then its creates,
        then its fills, then its rewrites)."""
        for unlink in rec.unlinks:
            self._redo_unlink(*unlink)
        for create in rec.creates:
            self._redo_create(*create)
        for fill in rec.fills:
            self._redo_fill(*fill)
        for rewrite in rec.rewrites:
            self._redo_rewrite(*rewrite)

    def _redo_unlink(self, parent: int, ino: int, raw: bytes, when: int) -> None:
        """Make one said unlink (of this process or another's) in memory,
        checked against what the caches hold: every directory an unlink
        not yet absorbed names is cached from that unlink on (this loads
        it, and only an absorb or a rebuild drops it), so the homes it was
        loaded from lack none that came before."""
        name = raw.decode("utf-8", "surrogateescape")
        d = self._dir(parent) if self._inode(parent).is_dir else None
        entry = None if d is None else d.entries.get(name)
        inode = None if entry is None or entry[0] != ino else self._inode(ino)
        if inode is None or not _unlinkable(inode):
            raise CorruptionError(
                f"journal: an unlink of {name!r} in directory {parent} that does not "
                f"name inode {ino}, a file with one name (run `daxfs fsck --repair`)",
                self.journal.live_off,
            )
        self._lag_bytes += self._apply_unlink(d, name, inode, when)
        for _f, dev, n in inode.extents:
            self._free_space(self._block(dev), n // BLOCK)
        self.inodes.return_ino(ino)

    def _redo_create(
        self, parent: int, ino: int, raw: bytes, when: int, slot: bytes, block: int
    ) -> None:
        """Make one said create in memory, checked: the directory holds no
        such name, the number is free, the slot a plain file of that
        directory with one name, its blocks free, and the name put in the
        directory block the record names (-1: none named, any with room),
        which must have room for it."""
        name = raw.decode("utf-8", "surrogateescape")
        where = self.journal.live_off
        d = self._dir(parent) if self._inode(parent).is_dir else None
        taken = ino in self.inodes.cache or not self.inodes.is_free(ino)
        if d is None or name in d.entries or taken:
            raise CorruptionError(
                f"journal: a create of {name!r} in directory {parent} as inode {ino}, "
                "a name or number taken (run `daxfs fsck --repair`)",
                where,
            )
        inode = self.inodes.from_slot(slot, ino, where)
        if not _unlinkable(inode) or inode.parent != parent:
            raise CorruptionError(f"journal: a create of inode {ino} that is no plain file", where)
        room = d.room_in(block, raw) if block >= 0 else d.any_room(raw)
        if block < 0:
            self._lag_loose.add(parent)
        if room is None:
            raise CorruptionError(
                f"journal: a create of {name!r} in directory {parent} finds no room "
                f"in the block it names ({block})",
                where,
            )
        self._claim_said(inode, "a create", where)
        self.inodes.take(ino)
        self.inodes.pending[ino] = slot
        self._apply_create(d, name, inode, when, room)

    def _redo_fill(self, ino: int, slot: bytes) -> None:
        """Make one said fill in memory, checked: the inode a plain file with
        one name and no data, the slot the same file with data, its blocks
        free.  The cached inode takes the slot's state in place (handles
        of this process count on it)."""
        where = self.journal.live_off
        inode = self._inode(ino) if self.inodes.in_use(ino) else None
        if inode is None or not _unlinkable(inode) or inode.extents or inode.size:
            raise CorruptionError(
                f"journal: a fill of inode {ino}, which is no empty plain file", where
            )
        filled = self.inodes.from_slot(slot, ino, where)
        if not _unlinkable(filled) or not _same_file(filled, inode):
            raise CorruptionError(f"journal: a fill of inode {ino} that is another file", where)
        self._claim_said(filled, "a fill", where)
        self.inodes.pending[ino] = slot
        self._lag_bytes += 0 if ino in self._lag_slots else LAG_SLOT
        self._lag_slots.add(ino)
        f = filled
        _take_state(inode, f.size, f.extents, f.generation, f.atime, f.mtime, f.ctime)

    def _redo_rewrite(self, ino: int, slot: bytes) -> None:
        """Make one said rewrite in memory, checked: the inode a plain file
        with one name and every extent in its slot, the slot the same file
        with the same or other data, its new blocks free while the old
        are still held (new data never goes where the old lies).  The
        cached inode takes the slot's state in place."""
        where = self.journal.live_off
        inode = self._inode(ino) if self.inodes.in_use(ino) else None
        if inode is None or not _unlinkable(inode):
            raise CorruptionError(
                f"journal: a rewrite of inode {ino}, which is no plain file with one name",
                where,
            )
        new = self.inodes.from_slot(slot, ino, where)
        if not _unlinkable(new) or not _same_file(new, inode):
            raise CorruptionError(f"journal: a rewrite of inode {ino} that is another file", where)
        self._claim_said(new, "a rewrite", where)
        self.inodes.pending[ino] = slot
        for _f, dev, n in inode.extents:
            self._free_space(self._block(dev), n // BLOCK)
        self._lag_bytes += 0 if ino in self._lag_slots else LAG_SLOT
        self._lag_slots.add(ino)
        _take_state(inode, new.size, new.extents, new.generation, new.atime, new.mtime, new.ctime)

    def _claim_said(self, inode: Inode, what: str, where: int) -> None:
        """Claim the blocks of ``inode`` that a said change gave it, all free
        (else damage, with none claimed)."""
        claimed = []
        try:
            for _f, dev, n in inode.extents:
                self.allocator.claim(self._block(dev), n // BLOCK)
                claimed.append((dev, n))
        except AssertionError:
            for dev, n in claimed:
                self.allocator.free(self._block(dev), n // BLOCK)
            raise CorruptionError(
                f"journal: {what} of inode {inode.ino} with blocks in use", where
            ) from None

    def _apply_create(self, d, name: str, inode: Inode, when: int, room=None) -> bool:
        """Make a create in memory: the entry placed in a block with room (False,
        nothing done, if none has; ``room``: Directory.room_for's answer,
        asked first), the inode cached, both homes lagging (at most
        LAG_BLOCK + LAG_SLOT more to absorb), the directory's times
        ``when``."""
        block = d.place(name, inode.ino, REG_T, room)
        if block is None:
            return False
        self._lag_bytes += self._lagging(d, block, inode.ino, when)
        self.inodes.cache[inode.ino] = inode
        return True

    def _forget_lag(self) -> None:
        """No home lags any more (absorbed, or the caches rebuilt from the
        homes and the log)."""
        self._lag_dirs, self._lag_slots, self._lag_bytes = {}, set(), 0
        self.inodes.pending.clear()
        # Lagging directories where a create was made again with no block
        # named (a version 9 record): our copy may hold its names in other
        # blocks than the copy an absorb writes, so it is loaded again then.
        self._lag_loose: set[int] = set()

    def _release_said(self) -> None:
        """Give the allocator and the inode table what said unlinks freed
        (committed: free on the media already), the blocks sorted and
        merged into runs.  Under the thread lock."""
        freed, self._said_freed = self._said_freed, []
        if not freed:
            return
        block = self._block
        self._free_merged(
            sorted((block(dev), n // BLOCK) for inode in freed for _f, dev, n in inode.extents)
        )
        self.inodes.return_inos([inode.ino for inode in freed])

    def _free_merged(self, runs: list[tuple[int, int]]) -> None:
        """Free the sorted, disjoint block ``runs``, those that touch merged
        (a run of files made one after another: a few calls, not one each)."""
        free = self.allocator.free
        start = end = runs[0][0] if runs else 0
        for b, n in runs:
            if b != end:
                free(start, end - start)
                start = b
            end = b + n
        if end > start:
            free(start, end - start)

    # -- absorbing ---------------------------------------------------------
    def _absorb(self) -> None:
        """Write every lagging home whole, in one record of its own.  The
        exclusive pool lock is held, caught up, and no change is under way:
        what the caches hold is what is committed."""
        txn = Transaction()
        self._stage_absorb(txn)
        held = self._heads_seq == self._seen_seq
        self.journal.commit(txn)
        self._seen_seq, self._seen_pos = self.journal.next_seq, self.journal.pos
        if held:
            self._heads_seq = self._seen_seq
        self._absorbed()

    def _stage_absorb(self, txn: Transaction, changed=frozenset(), freed=frozenset()) -> None:
        """Stage every lagging home whole in ``txn``, which then absorbs: an
        absorb's record, or an optimistic change's (coherence.Change,
        which prepared with homes lagging and writes them with its own),
        whose edits the caches hold too.  That change stages the slots of
        the inodes it ``changed`` itself, and a directory it ``freed``
        has no home left to write."""
        txn.absorbs = True
        for ino in sorted(self._lag_dirs):
            d = self.dirs.get(ino)
            if d is None:
                if ino in freed:
                    continue
                raise AssertionError(f"directory {ino} lags but is not cached")
            for b in sorted(self._lag_dirs[ino]):
                d.write_whole(b, txn)
        lagging = sorted(ino for ino in self._lag_slots if ino not in changed)
        for first, n in _runs(lagging):  # (files made or freed in a row: a few writes)
            slots = [self._slot_said(ino) for ino in range(first, first + n)]
            txn.write_apart(self.inodes.slot_off(first), b"".join(slots))

    def _slot_said(self, ino: int) -> bytes:
        """The bytes a lagging slot is to hold, as the said changes left it
        (InodeTable.pending: all zero for a file said unlinked), not as the
        cache holds it now: an undone change drops inodes it touched."""
        raw = self.inodes.pending.get(ino)
        if raw is not None:
            return raw
        inode = self.inodes.cache.get(ino)  # (a lag with no bytes kept: none now)
        return bytes(INODE_SIZE) if inode is None else inode.slot(0)

    def _absorbed(self) -> None:
        """After a record that absorbed: no home lags, and what our said
        unlinks freed goes back (their homes show it now)."""
        self._forget_lag()
        self._release_said()

    def _absorb_and_checkpoint(self) -> None:
        """At mount, after the rebuild made the unabsorbed unlinks again."""
        if self._lag_bytes:
            self._absorb()
        self.journal.checkpoint()
        self._seen_seq, self._seen_pos = self.journal.next_seq, self.journal.pos

    def _start_absorber(self) -> None:
        t = threading.Thread(target=self._absorb_while_lagging, name="daxfs-absorb", daemon=True)
        self._absorber = t
        t.start()

    def _absorb_while_lagging(self) -> None:
        """Every ABSORB_SECONDS, absorb what is lagging (module doc)."""
        while not self._stop_committer.wait(ABSORB_SECONDS):
            if self.closed or self._forks != forks_seen():
                return
            if not self._lag_bytes:
                continue
            try:
                with self._locked(exclusive=True):
                    if self._lag_bytes and not self._changing:
                        self._absorb()
            except (OSError, ValueError):
                pass  # unmounted meanwhile, or an I/O error the next change meets


class _Unsaid(Exception):
    """What was being said cannot be (the usual way makes it)."""


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """(first, count) of each run of consecutive ``numbers`` (sorted)."""
    out: list[tuple[int, int]] = []
    for x in numbers:
        if out and out[-1][0] + out[-1][1] == x:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((x, 1))
    return out


def _claims(extents) -> list[tuple[int, int]]:
    """The claims of a said change that gave a file all of ``extents``."""
    return [(dev, n) for _f, dev, n in extents]


def _take_state(
    inode: Inode, size: int, extents, generation: int, atime: int, mtime: int, ctime: int
) -> None:
    """``inode`` (the cached object, which handles and counts here refer to)
    takes what a said fill or rewrite made of it (every extent in the slot)."""
    inode.size, inode.extents = size, list(extents)
    inode.generation = inode.staged_generation = generation
    inode.atime, inode.mtime, inode.ctime = atime, mtime, ctime


def _same_file(a: Inode, b: Inode) -> bool:
    """Do two states of a file agree on what a fill or a rewrite keeps (its
    type and mode, links, owner, directory and birth)?"""
    return (a.mode, a.nlink, a.uid, a.gid, a.parent, a.btime) == (
        b.mode, b.nlink, b.uid, b.gid, b.parent, b.btime
    )  # fmt: skip


def _unlinkable(inode: Inode) -> bool:
    """What a said unlink's inode must be (LogicalPath._sayable's part that
    the media shows)."""
    return (
        stat.S_ISREG(inode.mode)
        and inode.nlink == 1
        and not inode.ext_blocks
        and len(inode.extents) <= INLINE_EXTENTS
    )
