"""logical: unlinks said in the journal, their homes written later.

A physical record costs a change more than its bytes: the directory block
edited and its header resealed, the inode slot packed, each write staged
and packed into the record, each in a few dozen Python steps.  An unlink
of a small file by a process alone on its pool says instead what it did:
one entry (REC_UNLINK: the directory, the inode, the name) and the blocks
it freed (revokes), and writes no home.  The directory block and the inode
slot change in memory only and are *lagging*; an *absorb*, a record of its
own, writes every lagging home whole later:

- before any change that writes (coherence.Change, at its start, so that
  what it absorbs is committed state only): a record that writes homes
  therefore never follows unlinks it does not cover, and recovery needs
  to make again only the unlinks after the last record that writes;
- when the lag would pass ABSORB_MOST, or the journal would not hold the
  absorb (a checkpoint must wait for one: journal.unabsorbed);
- every ABSORB_SECONDS while lag is left (a thread), so that a follower,
  which waits for homes to catch up, and a mount waits little;
- at unmount.

Until absorbed the homes lag the journal, so whatever loads from them
makes the unlinks again, in order, from the entries: a rebuild
(FileSystem._reload: every process that meets an unlink in another's
records rebuilds), and so a mount after recovery replayed the records that
write (pool.mount_region then absorbs and checkpoints).  An unlink made
again checks what it finds: the name must be there and name the inode,
the inode a regular file with one link and no extent block; anything else
is damage (a crafted journal).

Alone means no other process in the process table (leases.py: one that
mounts makes the unlinks again itself and absorbs before it joins) and no
follower in the follower table (followers never read homes that lag: they
wait for the absorb), on a pool whose records are durable when written
(pmem, tmpfs: not group commit, whose homes lag already).  DESIGN.md,
"Logical records", says why and what it costs.
"""

from __future__ import annotations

import fcntl
import stat
import threading
import time

from .coherence import forks_seen
from .inode import Inode
from .journal import Transaction
from .layout import (
    BLOCK,
    CHUNK,
    INLINE_EXTENTS,
    INODE_SIZE,
    TXN_HEADER,
    TXN_REC,
    UNLINK_TAIL,
    CorruptionError,
    pack_txn,
    pack_unlink_record,
    pad8,
)
from .pins import pinned_by_others

# What an absorb's record holds per lagging home: a directory block whole
# and the touch that names its directory; an inode slot whole.
LAG_BLOCK = 2 * TXN_REC.size + BLOCK
LAG_SLOT = TXN_REC.size + INODE_SIZE
# The most lag kept (and at most a quarter of the journal): an absorb is one
# record, and a rebuild makes every unabsorbed unlink again.
ABSORB_MOST = 4 << 20
ABSORB_SECONDS = 1.0
# Said unlinks give their blocks and inode numbers back this many files at
# a time: sorted, a run of files made one after another frees in a few
# calls instead of one each (the allocator's free is most of an unlink).
RELEASE_BATCH = 64


class LogicalPath:
    """The FileSystem's unlinks said in the journal (a mixin: module doc)."""

    def _init_logical(self) -> None:
        # Lagging homes: directory -> its blocks; inode slots (freed).
        self._lag_dirs: dict[int, set[int]] = {}
        self._lag_slots: set[int] = set()
        self._lag_bytes = 0  # what absorbing them would log
        # Files said unlinked whose blocks and numbers are not given back yet
        # (_release_said): committed free, so free to take once released.
        self._said_freed: list[Inode] = []
        self._absorb_most = min(ABSORB_MOST, (self.sb.journal_len // 4) & ~(BLOCK - 1))
        # Durable when written, and writable: where an unlink may be said.
        self._may_say = not self.readonly and not self._lazy
        self._absorber: threading.Thread | None = None

    # -- saying unlinks ------------------------------------------------------
    def _unlink_said(self, spath: str) -> bool:
        """Unlink ``spath`` with a logical record if this call can: alone
        on the pool, the path in the path cache, a small regular file with
        one name and no user.  False: nothing done, the caller unlinks the
        usual way."""
        return self._said(self._one_to_say, spath)

    def _unlink_names_said(self, sdir: str, names: list[str]) -> bool:
        """_unlink_names's batch of ``names`` in directory ``sdir``, said in
        one record, if every name is a file _unlink_said would say; False:
        nothing done."""
        return self._said(self._names_to_say, sdir, names)

    def _said(self, find, *args) -> bool:
        if not self._may_say or self.sb.version < 8:
            return False
        tl = self._tlock
        tl.acquire()
        try:
            if self._depth or self.closed or self._forks != forks_seen():
                return False
            if self._followers_due <= time.monotonic():
                self._look_at_followers()
            if self._unmapped:
                return False
            fd = self.region.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                said = self._say(find, args)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if said is None:
                return False
            self._said_freed += said
            if len(self._said_freed) >= RELEASE_BATCH:
                self._release_said()
            if self._absorber is None:
                self._start_absorber()
            return True
        finally:
            tl.release()

    def _say(self, find, args) -> list[Inode] | None:
        """Under the exclusive pool lock: the files ``find(*args)`` names,
        unlinked by one record and in memory; their inodes (their blocks
        to free), or None: nothing done."""
        journal = self.journal
        # Caught up, as coherence.catch_up would find it: the same commit at
        # the same place (a checkpoint moves the log, not the seq), and no
        # commit that a dead process left unpublished.
        if not journal.unmoved(self._seen_seq, self._seen_pos) or not self._alone():
            return None
        found = find(*args)
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
        fd = self.region.fd
        if any(pinned_by_others(fd, self.inodes.slot_off(i.ino), 1) for _n, i in files):
            return None
        seq, now = journal.next_seq, time.time_ns()
        if len(files) == 1:
            record = pack_unlink_record(seq, d.ino, files[0][1].ino, raws[0], now, revokes)
        else:
            pairs = zip(files, raws, strict=True)
            said = [(d.ino, inode.ino, raw, now) for (_n, inode), raw in pairs]
            record = pack_txn(seq, [], revokes, unlinks=said)
        journal.commit_said(record)
        # (The path cache was current, as the caller's _cached_entry found
        # it; a file's name leads no path elsewhere, so it stays current.)
        self._seen_seq = self._heads_seq = journal.next_seq
        self._seen_pos = journal.pos
        for name, inode in files:
            self._apply_unlink(d, name, inode, now)
        self._lag_bytes += cost
        return [inode for _name, inode in files]

    def _one_to_say(self, spath: str):
        got = self._cached_entry(spath, False)
        if got is None or got[2] is None or not self._sayable(got[2]):
            return None
        (dir_ino, _links), name, inode = got
        return self.dirs[dir_ino], [(name, inode)]

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

    def _alone(self) -> bool:
        """No other process in the process table and no follower (exclusive
        pool lock held: one that mounts absorbs before it joins)."""
        return self.leases.alone() and not self.followers.any()

    def _lag_cost(self, dir_ino: int, block: int, ino: int) -> int:
        blocks = self._lag_dirs.get(dir_ino)
        cost = 0 if blocks is not None and block in blocks else LAG_BLOCK
        return cost + (0 if ino in self._lag_slots else LAG_SLOT)

    def _apply_unlink(self, d, name: str, inode: Inode, when: int) -> None:
        """Make an unlink in memory: the entry tombstoned, the directory's
        times set to ``when`` (written lazily, as for any unlink), the inode
        dropped (no handle holds it), both homes lagging (the caller counts
        what absorbing them costs).  Its blocks (its extents) are the
        caller's to give back once the record is committed."""
        block = d.forget(name)
        blocks = self._lag_dirs.get(d.ino)
        if blocks is None:
            blocks = self._lag_dirs[d.ino] = set()
        blocks.add(block)
        self._lag_slots.add(inode.ino)
        parent = self.inodes.cache.get(d.ino) or self._inode(d.ino)
        parent.mtime = parent.atime = parent.ctime = when
        self._dirty_times.add(d.ino)
        self.inodes.cache.pop(inode.ino, None)
        self._dirty_times.discard(inode.ino)

    # -- making them again ---------------------------------------------------
    def _redo_unlinks(self) -> None:
        """After the caches were rebuilt from the homes: make the unlinks no
        record absorbed yet, in order (module doc)."""
        self._forget_lag()
        for unlink in self.journal.pending_unlinks():
            self._redo_unlink(*unlink)

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
        self._lag_bytes += self._lag_cost(parent, entry[2], ino)
        self._apply_unlink(d, name, inode, when)
        for _f, dev, n in inode.extents:
            self._free_space(self._block(dev), n // BLOCK)
        self.inodes.return_ino(ino)

    def _forget_lag(self) -> None:
        """No home lags any more (absorbed, or the caches rebuilt from the
        homes and the log)."""
        self._lag_dirs, self._lag_slots, self._lag_bytes = {}, set(), 0

    def _release_said(self) -> None:
        """Give the allocator and the inode table what said unlinks freed
        (committed: free on the media already), the blocks sorted and
        merged into runs.  Under the thread lock."""
        freed, self._said_freed = self._said_freed, []
        if not freed:
            return
        runs = sorted(((dev, n) for inode in freed for _f, dev, n in inode.extents))
        data_off, free = self.sb.data_off, self.allocator.free
        start = end = runs[0][0] if runs else 0
        for dev, n in runs:
            if dev != end:
                free((start - data_off) // BLOCK, (end - start) // BLOCK)
                start = dev
            end = dev + n
        if end > start:
            free((start - data_off) // BLOCK, (end - start) // BLOCK)
        self.inodes.return_inos([inode.ino for inode in freed])

    # -- absorbing ---------------------------------------------------------
    def _absorb(self) -> None:
        """Write every lagging home whole, in one record of its own.  The
        exclusive pool lock is held, caught up, and no change is under way:
        what the caches hold is what is committed."""
        txn = Transaction()
        txn.absorbs = True
        for ino in sorted(self._lag_dirs):
            d = self.dirs.get(ino)
            if d is None:  # (a directory is freed only by a change, which absorbs first)
                raise AssertionError(f"directory {ino} lags but is not cached")
            for b in sorted(self._lag_dirs[ino]):
                d.write_whole(b, txn)
        for first, n in _runs(sorted(self._lag_slots)):  # (files made in a row: a few writes)
            if not self.inodes.cache.keys().isdisjoint(range(first, first + n)):
                raise AssertionError("an inode lags freed but is cached")  # (only frees lag)
            txn.write(self.inodes.slot_off(first), bytes(n * INODE_SIZE))
        held = self._heads_seq == self._seen_seq
        self.journal.commit(txn)
        self._seen_seq, self._seen_pos = self.journal.next_seq, self.journal.pos
        if held:
            self._heads_seq = self._seen_seq
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


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """(first, count) of each run of consecutive ``numbers`` (sorted)."""
    out: list[tuple[int, int]] = []
    for x in numbers:
        if out and out[-1][0] + out[-1][1] == x:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((x, 1))
    return out


def _unlinkable(inode: Inode) -> bool:
    """What a said unlink's inode must be (LogicalPath._sayable's part that
    the media shows)."""
    return (
        stat.S_ISREG(inode.mode)
        and inode.nlink == 1
        and not inode.ext_blocks
        and len(inode.extents) <= INLINE_EXTENTS
    )
