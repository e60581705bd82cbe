"""fs: the public FileSystem, with os-like calls and open().

Call protocol.  Every public call runs under the FileSystem's thread lock
and the pool lock (flock on the pool: shared for reads, exclusive for
changes), so it is thread-safe and several processes may mount one pool.
On taking the pool lock a call first checks the journal's live word: if
another process committed since, it applies those commits' records to its
caches (coherence.py), so every call sees all changes completed before it.
While another process shares the pool, creates, a file's first write,
unlinks and renames are prepared without the pool lock and checked
against others' commits at the end (coherence.Change; DAXFS_OPTIMISM=0
turns that off).

A change runs as one transaction: validate, then mutate the cached objects
while staging their bytes; commit (journal.commit) makes it atomic.  If
anything fails before the commit point, the caches are dropped and the
allocations undone: the media never saw the change.

The FileSystem class is built of rooms, mixed in here: data placement and
ordering are data.py's (DataPath), the calls that change names
namespace.py's (NamespacePath), mapping files mapfiles.py's (MapPath),
reading directories listing.py's (ListingPath); locks, catching up and
optimistic changes are coherence.py's; mounting a pool is pool.py's.

Durability: every namespace change and every write that allocates or
changes the size is durable when the call returns, on every backend.
Overwrites in place are durable on return on pmem and tmpfs; on page-cache
files (msync) at f.flush(), close, fs.fsync(path) or fs.sync().  Times
(atime is not kept apart from mtime) are written lazily, like Linux's
lazytime: on close, flush, fsync, sync or with the next change to the inode.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import functools
import io
import operator
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .alloc import Allocator, make_allocator
from .coherence import (
    MISSED,
    Backoff,
    Change,
    Contended,
    Exclusive,
    Locked,
    _forks,
    catch_up,
    forks_seen,
    optimistically,
    without_lock,
)
from .data import DataPath, refuse_past_largest_file, tail_of
from .dir import Directory, path_drops
from .fileio import DEFAULT_BUFFER, WRITE_BUFFER, DaxRawFile, MappedReader, parse_mode
from .followers import FollowerTable, full_fence
from .inode import Extent, Inode, InodeTable, NotCached, dead_commit_error, symlink_target
from .journal import Journal, Transaction
from .layout import (
    BLOCK,
    BLOCKS_PER_CHUNK,
    CHUNK,
    MAX_NAME,
    PATH_MAX,
    CorruptionError,
    Superblock,
    ftype_of,
)
from .leases import Leases
from .listing import ListingPath
from .logical import LogicalPath
from .mapfiles import MapPath
from .namespace import NamespacePath
from .path import (
    DIR_T,
    LNK_T,
    REG_T,
    ROOT_INO,
    SPECIAL_T,
    At,
    Ino,
    Resolved,
    oserror,
    resolve,
    to_str,
)
from .pins import mark_mounted, mark_writer, pin_slot, pinned_by_others, unpin_slot
from .region import Region, flush_ranges

S_IFREG = stat.S_IFREG
T = TypeVar("T")


def _now() -> int:
    return time.time_ns()


def _umask() -> int:
    """The process umask (read from /proc: os.umask can only be read by
    changing it, which races other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@dataclass(frozen=True)
class StatVFS:
    """statvfs plus what a huge-page pool cares about: free whole 2 MiB chunks."""

    f_bsize: int
    f_frsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_favail: int
    f_flag: int
    f_namemax: int
    free_chunks: int
    total_chunks: int

    @property
    def total_bytes(self) -> int:
        return self.f_blocks * self.f_frsize

    @property
    def free_bytes(self) -> int:
        return self.f_bfree * self.f_frsize


# Lazy mode's longest wait between group commits, in seconds (ext4's commit=).
COMMIT_INTERVAL = 5.0
# The mount option tails= (DESIGN.md, "Tails"): "trim" gives a large file's
# last chunk back past its end at its last close; "keep" leaves it whole.
TAILS = ("trim", "keep")
DEFAULT_TAILS = "trim"

# How often a writable mount looks at the follower table (at the start of
# a call, when due): what followers stopped holding is freed within this
# much of the next call.
FOLLOWER_LOOK_SECONDS = 0.1
# The path cache (FileSystem._heads_now) keeps directory parts of paths (a
# walk keeps its place) until it holds this many, or this many characters
# of them: then it starts again, empty.  By count alone (1024), a call on
# paths spread over 5,000 directories missed most of the time and walked
# from the root (10.5 us a stat, against 3.3 over 500); by characters, a
# pool's long paths (4 KiB at most) still keep it to a few MiB.
HEADS_KEPT = 16384
HEADS_CHARS = 1 << 21


class Heads(dict):
    """The path cache's map, head -> (directory, symlinks followed on the
    way), counting the characters of the heads it was given."""

    __slots__ = ("chars",)

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def clear(self) -> None:
        super().clear()
        self.chars = 0


NO_ID = 2**32 - 1  # (uid_t)-1: no user; ids are below it
# Paths and names too short for any count of their bytes to pass PATH_MAX
# or MAX_NAME (UTF-8, surrogateescape: at most 4 bytes a character).
SHORT_PATH = PATH_MAX // 4
SHORT_NAME = MAX_NAME // 4
# Last names the path cache's walk leaves to path.resolve: none (a trailing
# "/"), "." and "..".
_NOT_PLAIN = frozenset(("", ".", ".."))
# What the directory part of "/name" leads to: the root, no symlink followed.
_AT_ROOT = (ROOT_INO, 0)
# A Resolved made from all its fields with no Python frame: NamedTuple's own
# __new__ costs about 0.1 us more, and every call on a path makes one.
_resolved = tuple.__new__


def process_owner() -> tuple[int, int]:
    """The (uid, gid) a new file of this process gets: its effective ids."""
    return os.geteuid(), os.getegid()


class FileSystem(DataPath, NamespacePath, MapPath, ListingPath, LogicalPath):
    """A mounted pool.  Use as a context manager or call close()."""

    def __init__(
        self,
        region: Region,
        sb: Superblock,
        *,
        readonly: bool,
        commit: str | None = None,
        commit_interval: float = COMMIT_INTERVAL,
        tails: str = DEFAULT_TAILS,
    ):
        self.region, self.sb, self.readonly = region, sb, readonly
        self.journal = Journal(region, sb)
        # Group commit (journal.py, DESIGN.md): on a page-cache file, changes
        # are durable at fsync/sync/close and every commit_interval seconds
        # ("lazy"), or each on return ("sync").  Other backends are durable
        # on return (or volatile) either way.
        if commit not in (None, "lazy", "sync"):
            raise ValueError(f"commit must be 'lazy' or 'sync', not {commit!r}")
        if not commit_interval > 0:
            raise ValueError(f"commit_interval must be positive, not {commit_interval!r}")
        # A large file's last chunk past its end (its tail): kept, or given
        # back at close, fsync and unmount (DataPath._trim_tails; DESIGN.md).
        if tails not in TAILS:
            raise ValueError(f"tails must be 'trim' or 'keep', not {tails!r}")
        self.tails = tails
        self._lazy = bool(getattr(region, "lazy_capable", False)) and not readonly
        self.commit_mode = (commit or "lazy") if self._lazy else "sync"
        self.commit_interval = commit_interval
        self.journal.lazy = self._lazy
        # Sync mode on a page-cache pool: each record durable when written
        # (data flushed first, as on pmem), homes written out right after.
        self.journal.sync_records = self._lazy and self.commit_mode == "sync"
        # Lazy mode proper: data and records wait for a group commit.
        self._batching = self._lazy and self.commit_mode == "lazy"
        self._unsynced = False  # stored or committed since the last group commit
        # Lazy: space freed by commits not yet durable, as (seq, block,
        # count): reused only once a durable mark passes seq, or a power
        # loss could show one file's new bytes in another's old blocks.
        self._quarantine: collections.deque[tuple[int, int, int]] = collections.deque()
        # Commits below this seq are known durable (always, but in lazy mode).
        self._durable_seen = 0 if self._lazy else 1 << 63
        # Lazy: files that shrank since the last group commit (or that
        # another process changed lazily): see DataPath._before_regrowing.
        self._shrunk: set[int] = set()
        # tails="trim": files whose last chunk may reach past their end,
        # trimmed at their last close, fsync or at unmount (_trim_tails).
        self._tailed: set[int] = set()
        # Windows of large files that got small blocks for want of a whole
        # chunk, {ino: {window offsets}}: moved into chunks once deletes
        # free some (DataPath._consolidate).
        self._fragmented: dict[int, set[int]] = {}
        # Tail chunks whose tail could not move, with their free count then.
        self._unmovable: dict[int, int] = {}
        self._committer: threading.Thread | None = None
        self._stop_committer = threading.Event()
        self._init_logical()  # unlinks said, their homes lagging (logical.py)
        self.inodes = InodeTable(region, sb)
        self.dirs: dict[int, Directory] = {}
        self.allocator: Allocator
        self._tlock = threading.RLock()
        self._depth = 0
        # The last commit this mount's caches reflect: its sequence number
        # and where the next record starts in the journal area.
        self._seen_seq, self._seen_pos = -1, 0
        # A read-only mount that recovered the journal in its private view
        # (pool.py, "Recovered in private"): the live word it found in the
        # file then; None otherwise, and once the file moved from it.
        self._private_baseline: tuple[int, int] | None = None
        # The path cache (_heads_now): a path's directory part -> what it led
        # to, valid at commit _heads_seq; without it, each call on a file
        # 1,500 levels down walked 1,500 names (FUSE: O(depth^2) per tree).
        self._heads = Heads()
        self._heads_seq = -1
        self._changing = 0  # changes under way (coherence.Change)
        self._drops_at_change = 0  # dir.path_drops() when the last one began
        # The longest path a call takes (path.resolve); None: no limit.
        self.path_max: int | None = PATH_MAX
        # Who owns a new file: (uid, gid) of this process; a FUSE server's
        # is the request's (fuse.py).
        self.creator: Callable[[], tuple[int, int]] = process_owner
        self._open: dict[int, int] = {}
        self._dirty_data: list[tuple[int, int]] = []  # msync backend: overwrites to persist
        self._ordered: list[tuple[int, int]] = []  # sync mode: data the change orders
        self._unfenced = False  # data flushed by the change under way, not yet fenced
        self._dirty_times: set[int] = set()
        self._handles: weakref.WeakSet = weakref.WeakSet()
        # Inodes of mappings whose pins the garbage collector dropped (never
        # closed): checked for orphans to free by the next call (_Locked).
        self._unmapped: collections.deque[int] = collections.deque()
        self._forks = forks_seen()
        self.closed = False
        self.st_dev = int.from_bytes(sb.uuid[:4], "little")
        self.umask = _umask()  # the process umask at mount, applied to new inodes
        # What catching up with other processes' commits cost this mount:
        # records_applied counts their journal records applied to the caches,
        # full_rebuilds the times the caches were dropped and the inode table
        # rescanned instead (python -m daxfs.bench share reports both).
        self.coherence: collections.Counter[str] = collections.Counter()
        self.leases = Leases(self)  # this mount's slot in the process table
        # Followers' leases (followers.py): what they hold open counts as
        # open elsewhere.  The inodes they held at our last look, and when
        # to look again (a writer lets go what they stopped holding).
        self.followers = FollowerTable(region.buf, region.store)
        self._follower_inos: set[int] = set()
        # Blocks a commit freed from files a follower turned out to map
        # (_free_committed): (those inodes, block runs), freed once no
        # follower maps any of them.
        self._held_back: list[tuple[frozenset[int], list[tuple[int, int]]]] = []
        self._followers_due = float("inf") if readonly else 0.0
        # Optimistic changes (coherence.Change): allowed at all, in progress,
        # where to make changes the old way after conflicts (coherence.Backoff),
        # and what the change in progress has read (None outside one).
        # On unless DAXFS_OPTIMISM=0 (for comparing: bench share measures
        # both ways; DESIGN.md, "Several processes").
        self.optimism = os.environ.get("DAXFS_OPTIMISM", "1") != "0"
        self._optimistic = False
        self._backoff = Backoff()
        self._reads: set[int] | None = None
        # Also kept by an optimistic change, which may rebase on others'
        # commits to these (coherence.Change._rebase): inodes it read just
        # the type, parent or link count of (an entry looked up, a parent
        # whose entries it edits), per directory the names it looked up and
        # what it found, the directories it edited.
        self._slot_reads: set[int] | None = None
        self._names_read: dict[int, dict[str, tuple[int, int] | None]] | None = None
        self._edited: set[int] | None = None
        # Link counts of parents it changed (a mkdir's +1), by inode: taken
        # as deltas, so that a mkdir beside it rebases it (_rebase) instead
        # of conflicting.
        self._nlink_deltas: dict[int, int] | None = None
        self._txn_pins: list[int] = []
        self._txn_deferred: list[Callable[[], None]] = []  # an optimistic change's stores
        self._txn_over_existing = False  # some of them over bytes files have
        # Told what other processes' commits changed as this mount catches up
        # (coherence.apply_records): the inodes whose slots they wrote and the
        # directories whose entries they wrote, or (None, None) after a full
        # rebuild, which may have changed anything.  A FUSE server drops the
        # kernel's cached attributes and names with it (fuse.py).
        self.on_foreign_change: Callable[[set[int] | None, set[int] | None], None] | None = None

    # ======================================================================
    # locking and cache coherence
    # ======================================================================
    def _locked(self, exclusive: bool) -> Locked:
        return Locked(self, exclusive)

    def _query(self, answer: Callable, *args):
        """``answer(*args)``, which only reads: with no lock at all when it
        can (coherence.without_lock), else under the shared pool lock."""
        got = without_lock(self, answer, *args)
        if got is MISSED:
            with self._locked(exclusive=False):
                return answer(*args)
        return got

    def _thread_lock(self) -> threading.RLock:
        """The thread lock, re-armed first in a forked child: the copy a child
        inherits stays held forever if another of the parent's threads held
        it at the fork."""
        if self._forks != forks_seen():
            self._after_fork()
        return self._tlock

    def _after_fork(self) -> None:
        """In a forked child: flock and OFD locks belong to an open file
        description, which the child shares with its parent, so take a
        description of its own; the parent's pins stay the parent's."""
        self._forks = forks_seen()
        self._tlock = threading.RLock()
        self._depth = 0
        self._open = {}
        self._forget_hold()  # (the parent's, kept on the parent's description)
        fd = os.open(self.region.path, os.O_RDONLY if self.readonly else os.O_RDWR)
        os.dup2(fd, self.region.fd)
        os.close(fd)
        mark_mounted(self.region.fd)
        if not self.readonly:  # (the parent's mount recovered the journal, this boot)
            mark_writer(self.region.fd)
        self._seen_seq = -1
        if self._private_baseline is not None:
            self._private_baseline = (-1, -1)  # (rebuilt as the rest: recovered again)
        self._changing = 0
        self.leases.forget_after_fork()
        self._committer = None  # threads do not cross a fork
        self._absorber = None
        self._forget_lag()  # (made again from the log by the rebuild)
        self._start_committer()

    def _reload(self) -> None:
        """Drop every cache and rebuild the allocator from the inode table
        (in lazy mode, as our private view shows it with every record of the
        log applied, and with the space those not yet durable freed held)."""
        self.inodes.cache.clear()
        self.inodes.pending.clear()  # (the scan reads the homes; _redo_pending fills it again)
        self.dirs.clear()
        self._said_freed = []  # (free in the allocator rebuilt below)
        self._stash = []  # (likewise)
        self.journal.reapply_homes()
        used, self._orphans = self.inodes.scan()
        self._quarantine.clear()
        self._unmovable.clear()
        self.allocator = make_allocator(self.sb.allocator, self.sb.data_blocks, used)
        for c, ino in self.inodes.tail_chunks.items():
            self.allocator.hold_tail(c, ino)
        if self._lazy:
            self._hold_undurable_frees()
        self._redo_pending()  # (the homes lag what records said: logical.py)
        if self.on_foreign_change is not None:
            self.on_foreign_change(None, None)

    # ======================================================================
    # group commit (lazy mode)
    # ======================================================================
    def _group_commit(self) -> None:
        """Make every change so far durable (exclusive pool lock held)."""
        self.journal.group_commit()
        self._unsynced = False
        self._shrunk.clear()
        self._durable_seen = self.journal.next_seq
        self._release_quarantine(self.journal.next_seq)

    def _free_space(self, start: int, n: int) -> None:
        """Give blocks a commit freed back to the allocator; in lazy mode only
        once that commit is durable (see _quarantine)."""
        self._free_after(self.journal.next_seq, start, n)

    def _free_after(self, seq: int, start: int, n: int) -> None:
        """Free blocks once commits below ``seq`` are durable."""
        if seq > self._durable_seen:
            self._quarantine.append((seq, start, n))
        else:
            self.allocator.free(start, n)

    def _release_quarantine(self, durable: int | None = None) -> None:
        """Free what commits below ``durable`` (read from the marks when not
        given) freed."""
        q = self._quarantine
        if not q:
            return
        if durable is None:
            durable = self.journal.durable_limit()
        self._durable_seen = max(self._durable_seen, durable)
        while q and q[0][0] <= durable:
            _seq, start, n = q.popleft()
            self.allocator.free(start, n)

    def _held_whole_chunks(self) -> int:
        """Chunks that the held space (quarantine) will leave wholly free."""
        per_chunk: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
        for _seq, start, n in self._quarantine:
            for c in range(start // BLOCKS_PER_CHUNK, (start + n - 1) // BLOCKS_PER_CHUNK + 1):
                per_chunk[c].append((start, n))
        whole = 0
        for c, ranges in per_chunk.items():
            lo = c * BLOCKS_PER_CHUNK
            used = self.allocator.used_in_chunk(c).copy()
            for start, n in ranges:
                used[max(start, lo) - lo : min(start + n, lo + BLOCKS_PER_CHUNK) - lo] = False
            whole += not used.any()
        return whole

    def _hold_undurable_frees(self) -> None:
        """A rebuild sees space freed by records not yet durable as free: hold
        it (taken from the allocator, quarantined) until a durable mark
        passes them."""
        limit, upto = self.journal.durable_limit(), self.journal.next_seq
        data_off, a = self.sb.data_off, self.allocator
        for seq, rec in self.journal.log_records():
            if seq < limit or not rec.lazy:  # (durable when written: freed for good)
                continue
            for dev, length in rec.revokes:
                for s, k in a.free_runs_in((dev - data_off) // BLOCK, length // BLOCK):
                    a.claim(s, k)
                    self._quarantine.append((upto, s, k))

    def _start_committer(self) -> None:
        """Page-cache pools: a thread that group-commits every commit_interval
        seconds while something is left to commit (ext4's commit=); in sync
        mode, where records are durable already, what is left is writing
        their homes out."""
        if not self._lazy or self._committer is not None:
            return
        self._stop_committer.clear()
        t = threading.Thread(target=self._commit_every_interval, name="daxfs-commit", daemon=True)
        self._committer = t
        t.start()

    def _commit_every_interval(self) -> None:
        while not self._stop_committer.wait(self.commit_interval):
            if not self._unsynced or self.closed:
                continue
            try:
                with self._locked(exclusive=True):
                    self._group_commit()
            except (OSError, ValueError):
                # Unmounted meanwhile, or an I/O error: the next fsync, sync
                # or close meets it again and reports it.
                pass

    def _change(self) -> Change:
        """An atomic change: ``with fs._change() as txn``; see coherence.Change."""
        return Change(self)

    def _stage_inode(self, txn: Transaction, ino: int) -> None:
        inode = self.inodes.cache.get(ino)
        if inode is not None:
            self.inodes.stage(inode, txn, self._alloc_meta_block, self._free_meta_block)

    def _touch(self, inode: Inode, *, data: bool = True) -> None:
        """Mark times changed (mtime and ctime, or ctime only) and the inode dirty."""
        now = _now()
        if data:
            inode.mtime = inode.atime = now
        inode.ctime = now
        self._txn_dirty.add(inode.ino)

    def _touch_dir(self, d: Inode) -> None:
        """A directory's entries changed: new times, written lazily (lazytime)
        unless the change stages the directory anyway (nlink, new blocks)."""
        d.mtime = d.atime = d.ctime = _now()
        self._dirty_times.add(d.ino)

    # ======================================================================
    # lookups
    # ======================================================================
    def _inode(self, ino: int) -> Inode:
        if self._reads is not None:  # an optimistic change: remember what it read
            self._reads.add(ino)
        return self.inodes.get(ino)

    def _need_exclusive(self) -> None:
        """Called before work that must not run in an optimistic change, which
        holds no pool lock (coherence.Change): such a change is run again
        with the exclusive lock."""
        if self._reads is not None:
            raise Exclusive

    def _dir(self, ino: int, whole: bool = True) -> Directory:
        """Directory ``ino``, loaded on first use.  An optimistic change that
        uses it for named entries only (``whole`` false: lookups, adds,
        removes) records those names instead of the directory, unless it
        loads it here (what it read from the media must not change under
        it).  A change that reads it whole goes the old way at once where
        conflicts showed it busy (Backoff); one that passes through it does
        not (_edit_dir checks for the one that edits it)."""
        if self._reads is not None:
            if whole and self._backoff.busy(ino):
                raise Contended(frozenset((ino,)))
            if whole or ino not in self.dirs:
                self._reads.add(ino)
        return self._cached_dir(ino)

    def _cached_dir(self, ino: int) -> Directory:
        """Directory ``ino``, with no read recorded (coherence.Change._rebase
        checks names with it)."""
        d = self.dirs.get(ino)
        return self._load_dir(ino) if d is None else d

    def _load_dir(self, ino: int) -> Directory:
        if self.inodes.cache_only:
            raise NotCached(ino)
        if self.inodes.stalled:
            raise dead_commit_error()
        inode = self._inode(ino)
        if not inode.is_dir:
            raise oserror(errno.ENOTDIR)
        devs = []
        for e in inode.iomap(0, inode.size):
            if e.kind != "mapped":
                raise CorruptionError(f"directory {ino}: hole in its blocks")
            devs.extend(range(e.device_offset, e.device_offset + e.length, BLOCK))
        d = self.dirs[ino] = Directory.load(ino, self.region.buf, devs)
        return d

    def _edit_dir(self, ino: int) -> Directory:
        """Directory ``ino``, to add or remove names: an optimistic change
        tracks its edits (Directory.track) so that it can rebase them."""
        if self._reads is not None and self._backoff.busy(ino):
            raise Contended(frozenset((ino,)))
        d = self._dir(ino, whole=False)
        if self._edited is not None and d.ops is None:
            d.track()
            self._edited.add(ino)
        return d

    def _parent_inode(self, ino: int) -> Inode:
        """The inode of a directory whose entries the change edits: an
        optimistic change that another's write of its slot meets is rebased
        (checked to be still linked, its times set again), as for another's
        edits of its entries."""
        if self._slot_reads is None or ino not in self.inodes.cache:
            return self._inode(ino)  # (read from the media: a read like any)
        self._slot_reads.add(ino)
        return self.inodes.cache[ino]

    def _add_links(self, parent: Inode, delta: int) -> None:
        """Change a directory's link count by ``delta`` (a subdirectory made
        or removed in it) and stage it.  An optimistic change keeps it as a
        delta: another process's change of the same count is then taken in
        (coherence.Change._rebase adds the delta to the count it left)."""
        parent.nlink += delta
        self._txn_dirty.add(parent.ino)
        if self._nlink_deltas is not None:
            self._nlink_deltas[parent.ino] = self._nlink_deltas.get(parent.ino, 0) + delta

    def _lookup(self, dir_ino: int, name: str) -> tuple[int, int] | None:
        """The entry ``name`` of a directory as (ino, type), checked: an entry
        must name an inode of its own type, never the root, and a directory
        only from the directory its parent field names.  Then every path
        resolves through a tree: no directory holds itself or an ancestor,
        and none is reached twice (Directory.load refuses two names for one
        directory in one directory), so no walk can cycle.  Every path
        component pays this, so the test is written out here."""
        found = self._dir(dir_ino, whole=False).lookup(name)
        if self._names_read is not None:
            names = self._names_read.get(dir_ino)
            if names is None:
                names = self._names_read[dir_ino] = {}
            names.setdefault(name, found)  # the first answer: before our own edits
        if found is not None:
            ino, ftype = found
            if self._slot_reads is not None:
                self._slot_reads.add(ino)
            self._check_entry(dir_ino, name, ino, ftype)
        return found

    def _check_entry(self, dir_ino: int, name: str, ino: int, ftype: int) -> None:
        inode = self.inodes.cache.get(ino) or self._inode(ino)
        if not _entry_fits(dir_ino, ino, ftype, inode):
            raise _bad_entry(dir_ino, name, inode, ftype)

    def _readlink_ino(self, ino: int) -> str:
        return symlink_target(self._inode(ino), self.region.buf).decode("utf-8", "surrogateescape")

    def _parent_of(self, ino: int) -> int:
        return self._inode(ino).parent if ino != ROOT_INO else ROOT_INO

    def _resolve(self, path: object, follow: bool = True, entry: bool = False) -> Resolved:
        if type(path) is str:
            try:
                r = self._resolve_cached(path, follow)
            except CorruptionError as e:
                if e.filename is None:  # damage met on the way: say which path met it
                    e.filename = path
                raise
            if r is not None:
                return r
        kind = type(path)
        if kind is At or kind is Ino:
            return self._resolve_by_inode(path, follow, entry)  # type: ignore[arg-type]
        spath = to_str(path)
        heads = self._heads_now()
        cut = spath.rfind("/")
        head = spath[:cut] if 0 < cut < len(spath) - 1 and heads is not None else None
        known = None if head is None else heads.get(head)  # type: ignore[union-attr]
        try:
            r = resolve(
                spath,
                self._lookup,
                self._readlink_ino,
                self._parent_of,
                follow,
                entry,
                known,
                self.path_max,
            )
        except CorruptionError as e:
            if e.filename is None:  # damage met on the way: say which path met it
                e.filename = spath
            raise
        if heads is not None:
            if head is not None and r.head is not None:
                self._keep_head(heads, head, r.head)
            if r.ftype == DIR_T:  # the head of the paths inside it
                self._keep_head(heads, spath, (r.ino, r.links))  # type: ignore[arg-type]
        return r

    def _resolve_by_inode(self, path: At | Ino, follow: bool, entry: bool) -> Resolved:
        """An inode, or a name in a directory given by inode (path.py): no
        path cache, and no PATH_MAX (the caller's path was checked by the
        kernel).  An inode number that names no inode now (another process
        removed the file) is ENOENT; an inode where a call that changes an
        entry needs a name (``entry``: unlink, rename, ...) is EINVAL."""
        start = path.ino if type(path) is Ino else path.dir  # type: ignore[union-attr]
        if not self._is_born(start, path.born):  # type: ignore[union-attr]
            raise oserror(errno.ENOENT, path)  # (gone, or its number another file's now)
        if entry and type(path) is Ino:
            raise oserror(errno.EINVAL, path)
        if type(path) is At:
            return resolve(
                path,
                self._lookup,
                self._readlink_ino,
                self._parent_of,
                follow,
                entry,
                (start, 0),
                None,
            )
        inode = self._inode(start)
        return Resolved(inode.parent, None, start, (inode.mode >> 12) & 0xF, False, "inode")

    def _is_born(self, ino: int, born: int | None) -> bool:
        """Is number ``ino`` in use, by the inode born at ``born`` (if given)?"""
        return self.inodes.in_use(ino) and (born is None or self._inode(ino).btime == born)

    @staticmethod
    def _keep_head(heads: Heads, head: str, led_to: tuple[int, int]) -> None:
        if len(heads) >= HEADS_KEPT or heads.chars >= HEADS_CHARS:
            heads.clear()
        heads.chars += len(head)  # (a head kept again counts again: it starts over sooner)
        heads[head] = led_to

    def _resolve_cached(self, spath: str, follow: bool) -> Resolved | None:
        """The walk of path.resolve for a path whose directory part is in the
        path cache (_heads_now), in the usual case (_cached_entry); None
        otherwise, and the walk does it."""
        got = self._cached_entry(spath, follow)
        if got is None:
            return None
        known, name, inode = got
        if inode is None:
            return _resolved(Resolved, (known[0], name, None, None, False, "name", known, known[1]))
        ftype = (inode.mode >> 12) & 0xF
        return _resolved(
            Resolved, (known[0], name, inode.ino, ftype, False, "name", known, known[1])
        )

    def _cached_entry(
        self, spath: str, follow: bool
    ) -> tuple[tuple[int, int], str, Inode | None] | None:
        """What ``spath`` names, from the caches alone, as every call on a
        path pays it: (its directory part's (directory, symlinks followed),
        its last name, the inode it names or None when there is no such
        name), when the directory part is in the path cache and the rest is
        the usual case: a plain last name, no symlink to follow, an inode
        cached, and lengths no count of bytes could refuse (4 bytes a
        character at most).  None otherwise."""
        # _heads_now's conditions (_heads_seq is -1 while the cache is empty
        # and unusable), or a change that may use it; a null byte is to_str's
        # error, raised by the walk.
        if self._changing and not self._paths_held_in_change():
            return None
        if self._heads_seq != self._seen_seq or "\0" in spath:
            return None
        cut = spath.rfind("/")
        if cut > 0:
            known = self._heads.get(spath[:cut])
            if known is None:
                return None
        elif cut == 0:
            known = _AT_ROOT  # a name in the root ("/name")
        else:
            return None  # (a relative path: the walk says how it reads)
        name = spath[cut + 1 :]
        if len(spath) >= SHORT_PATH or len(name) > SHORT_NAME or name in _NOT_PLAIN:
            return None
        cur = known[0]
        d = self.dirs.get(cur)  # (never in an optimistic change: no read to
        if d is None:  # record, as _lookup would)
            return None
        found = d.entries.get(name)
        if found is None:
            return known, name, None
        ino, ftype = found[0], found[1]
        if ftype == LNK_T and follow:
            return None
        inode = self.inodes.cache.get(ino)
        if inode is None:
            return None  # (the walk loads it)
        if not _entry_fits(cur, ino, ftype, inode):  # (_check_entry, the inode at hand)
            raise _bad_entry(cur, name, inode, ftype)
        if ftype == DIR_T:  # the head of the paths inside it
            self._keep_head(self._heads, spath, (ino, known[1]))
        return known, name, inode

    def _paths_held_in_change(self) -> bool:
        """May the change under way use the path cache?  One that holds the
        exclusive lock (an optimistic one must record each name it reads:
        _lookup), caught up with the cache current, while it has dropped no
        directory or symlink name (dir.path_drops): its own edits so far
        moved no path.  (What it adds is kept only if it commits.)"""
        return (
            self._changing == 1
            and self._reads is None
            and self._heads_seq == self._seen_seq
            and path_drops() == self._drops_at_change
        )

    def _heads_now(self) -> Heads | None:
        """The path cache, if this call may use it: what the directory part of
        a path resolved to, kept while the pool stays at the commit it was
        walked at (a path leads where it did as long as nothing commits but
        this mount's own changes that drop no directory or symlink name:
        coherence.Change carries it past those, and empties it if one
        fails past its first edit).  Not inside an optimistic change, which must record each
        name it reads (_lookup)."""
        if self._seen_seq < 0:
            return None
        if self._changing:
            return self._heads if self._paths_held_in_change() else None
        if self._heads_seq != self._seen_seq:
            self._heads.clear()
            self._heads_seq = self._seen_seq
        return self._heads

    def _entry(self, path: object) -> Resolved:
        """Resolve for a call that changes the entry itself (mkdir, rmdir,
        unlink, rename, link, symlink): the last name is never followed."""
        return self._resolve(path, follow=False, entry=True)

    def _existing(self, path: object, follow: bool = True, entry: bool = False) -> Resolved:
        r = self._resolve(path, follow, entry)
        if r.ino is None:
            raise oserror(errno.ENOENT, to_str(path))
        return r

    def _free_inode(self, txn: Transaction, inode: Inode) -> None:
        for dev, n in inode.cut_from(0):
            self._free(txn, dev, n)
        self.inodes.stage_free(inode, txn, self._free_meta_block)
        self._txn_dirty.discard(inode.ino)
        self.inodes.cache.pop(inode.ino, None)
        self.dirs.pop(inode.ino, None)
        self._txn_freed_inos.append(inode.ino)  # reusable once the change commits

    def _drop_link(self, txn: Transaction, inode: Inode) -> None:
        """One name fewer: free the inode when no name and no open handle is left.
        A removed directory loses both its name and its "." at once."""
        inode.nlink = 0 if inode.is_dir else inode.nlink - 1
        self._touch(inode, data=False)
        if inode.nlink == 0:
            if not self._is_open(inode.ino):
                self._free_inode(txn, inode)
            elif not self._open.get(inode.ino):
                # Kept for another process.  Its last close may fall between
                # our look at its pin and our commit, and then see the file
                # still named and leave it: look again at our next call,
                # after the commit (_free_unmapped_orphans).
                self._unmapped.append(inode.ino)

    def _is_open(self, ino: int) -> bool:
        return bool(self._open.get(ino)) or self._open_elsewhere(ino)

    # ======================================================================
    # handles and pins on inodes (OFD locks, dropped by the kernel on exit)
    # ======================================================================
    def _open_elsewhere(self, ino: int) -> bool:
        """Open (or mapped) in another process, or held by a follower."""
        if pinned_by_others(self.region.fd, self.inodes.slot_off(ino), 1):
            return True
        if self.followers.holds(ino):
            self._follower_inos.add(ino)  # (freed once no follower holds it)
            return True
        return False

    def _look_at_followers(self) -> None:
        """Clear followers' slots whose lease lapsed, and let go what they
        stopped holding: an inode they kept as an orphan is freed by the
        next call (through ``_unmapped``, as a dropped mapping's is)."""
        self._followers_due = time.monotonic() + FOLLOWER_LOOK_SECONDS
        table = self.followers
        if not (self._follower_inos or self._held_back or table.occupied()):
            return
        # (held() reads the table through standing(), which clears lapsed slots)
        held = {ino for ino in table.held() if self.inodes.valid_ino(ino)}  # (the table is input)
        for ino in self._follower_inos - held:
            self._unmapped.append(ino)
        self._follower_inos = held
        if self._held_back:
            mapped, waiting = table.mapped(), []
            for inos, runs in self._held_back:
                if inos & mapped:
                    waiting.append((inos, runs))
                else:
                    for start, n in runs:
                        self._free_space(start, n)
            self._held_back = waiting

    def _mapped_by_followers(self) -> set[int]:
        """The inodes followers map, read after a full fence (so after
        whatever this process published before): see _free_committed."""
        if not self.followers.occupied():
            return set()
        full_fence()
        return self.followers.mapped()

    def _free_committed(self, runs: list[tuple[int, int]], *inos) -> None:
        """Give the blocks a commit freed to the allocator, once it is
        published.  A follower maps a file only after it checked, past a
        fence, that the file is as it resolved it; a writer checks for
        followers' maps before it commits.  If both checks missed each
        other, the follower's came before our publish, and then its entry
        is seen here: the blocks of the files it maps that this commit
        changed (``inos``: collections of inode numbers) wait until it lets
        go (followers.py)."""
        mapped = self._mapped_by_followers() if runs else set()
        changed = mapped & set().union(*inos) if mapped else None  # (mapped: rarely any)
        if changed:
            self._held_back.append((frozenset(changed), list(runs)))
            return
        for start, n in runs:
            self._free_space(start, n)

    def _pin(self, ino: int) -> None:
        if self._reads is not None:  # undone if the optimistic change is
            self._txn_pins.append(ino)
        n = self._open.get(ino, 0)
        if n == 0:
            if self._held or self._keeping:  # (the pool lock kept: taken before it
                self._pins_due.add(ino)  # goes, logical.py, _take_pins_due)
            else:
                pin_slot(self.region.fd, self.inodes.slot_off(ino))
        self._open[ino] = n + 1

    def _unpin(self, ino: int) -> None:
        n = self._open.get(ino, 0) - 1
        if n > 0:
            self._open[ino] = n
            return
        self._open.pop(ino, None)
        if self._pins_due and ino in self._pins_due:
            self._pins_due.discard(ino)  # (never taken: the lock was kept, _pin)
            return
        unpin_slot(self.region.fd, self.inodes.slot_off(ino))

    def _release(self, ino: int) -> None:
        """A handle closed (and flushed: DaxRawFile.close): unpin, and free
        the inode if it was its last name's ghost."""
        if self.closed:
            return
        with self._thread_lock():
            if self._released_plainly(ino):
                return
            try:
                if self._open.get(ino) == 1 and self._may_have_tail(ino):
                    self._trim_tails([ino])  # (the last close in this process; our
                    # pin keeps the inode ours meanwhile)
            finally:
                self._unpin(ino)
            self._free_if_orphan(ino)

    def _released_plainly(self, ino: int) -> bool:
        """_release's usual case, written out (every close pays it): the last
        handle here of a file our current cache shows with a name and with
        nothing mapped past its end to trim.  Unpinned, and True; False,
        with nothing done, otherwise."""
        inode = self.inodes.cache.get(ino)
        if (
            self._open.get(ino) != 1
            or inode is None
            or not inode.nlink
            or self.journal.peek() != self._seen_seq
            or (self.tails == "trim" and not self.readonly and tail_of(inode) is not None)
        ):
            return False
        self._unpin(ino)
        if self.journal.peek() != self._seen_seq:  # a commit meanwhile: as _free_if_orphan
            self._free_if_orphan(ino)
        return True

    def _free_if_orphan(self, ino: int) -> None:
        """Free an inode whose last name is gone once its last user (handle or
        mapping, in any process) is gone too."""
        if self.readonly or self._open.get(ino) or self._surely_linked(ino):
            return
        with self._locked(exclusive=False):
            orphan = self._is_orphan(ino)
        if orphan:
            with self._change() as txn:
                if self._is_orphan(ino) and not self._is_open(ino):
                    self._free_inode(txn, self._inode(ino))

    def _is_orphan(self, ino: int) -> bool:
        """A live inode without a name.  Its slot may be free already: when the
        last users in two processes (or mounts) let go at once, both see no other
        pin and the first one frees it; the slot is then no corruption.  Or
        said free: another process said an unlink of it once our last pin
        went, and we made it again (its home still holds the file)."""
        if self.inodes.slot_free_now(ino):
            return False  # (free: as the mount-time scan counts it, or as said)
        return self._inode(ino).nlink == 0

    def _surely_linked(self, ino: int) -> bool:
        """True when our cache, still current (no commit by anyone since), says
        the inode has a name.  A commit that takes the name meanwhile saw our
        pin and kept the inode: its process looks again after that commit
        (_drop_link), and frees it if we let go in between."""
        inode = self.inodes.cache.get(ino)
        return inode is not None and inode.nlink > 0 and self.journal.peek() == self._seen_seq

    def _flush_ino(self, ino: int) -> None:
        if self.closed or self.readonly:
            return
        if not self._dirty_data and ino not in self._dirty_times:
            return  # (nothing of ours to flush, read with no lock: a write that
            # returned before this call was listed before it returned; every
            # close of a file open for writing asks)
        with self._thread_lock():
            self._persist_dirty_data()
            if ino in self._dirty_times:
                with self._change():
                    if self._inode(ino).nlink or self._open.get(ino):
                        self._txn_dirty.add(ino)

    def _persist_dirty_data(self) -> None:
        if self._dirty_data:
            if flush_ranges(self.region, self._dirty_data):
                self.region.fence()
            self._dirty_data.clear()

    RECLAIM_BATCH = 64  # orphans freed per transaction at mount

    def _reclaim_orphans(self) -> None:
        """Free inodes left with no name by a crash or by a process that has exited
        (an orphan still open in a live process keeps its OFD lock)."""
        victims = [ino for ino in self._orphans if not self._is_open(ino)]
        # In batches: one transaction freeing every slot of a table full of
        # orphans (a crash, or a crafted pool) would not fit the journal.
        for i in range(0, len(victims), self.RECLAIM_BATCH):
            with self._change() as txn:
                for ino in victims[i : i + self.RECLAIM_BATCH]:
                    self._free_inode(txn, self._inode(ino))

    def _truncate_ino(self, ino: int, length: int) -> None:
        length = operator.index(length)  # (TypeError for 1.5, as ftruncate)
        if not length and self._may_say and self._empty_said(ino):  # (logical.py)
            return
        with self._change() as txn:
            self._truncate_inode(txn, self._inode(ino), length)

    # ======================================================================
    # public API: files
    # ======================================================================
    def open(
        self,
        path,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ):
        """Open a file in the pool; returns what the builtin open() would
        (the same io classes), except that a file open for reading only is
        a fileio.MappedReader, unbuffered over the mapped pool, unless
        opened with buffering=0 (then, as open's FileIO, a DaxRawFile).
        The default buffer is DEFAULT_BUFFER, or WRITE_BUFFER (2 MiB) for a
        file open for writing only: each write that reaches the pool is a
        journaled change."""
        kind, plus, binary, text = parse_mode(mode)
        if binary and (encoding or errors or newline is not None):
            raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
        if buffering == 0 and text:
            raise ValueError("can't have unbuffered text I/O")
        spath = to_str(path)
        readable, writable = kind == "r" or plus, kind != "r" or plus
        if writable and self.readonly:
            raise oserror(errno.EROFS, spath)
        ino = self._open_inode(spath, kind)
        if not writable and buffering:
            reader = MappedReader(self, ino, spath, mode)
            self._handles.add(reader)
            if binary:
                return reader
            return _text(reader, mode, buffering, encoding, errors, newline)
        raw = DaxRawFile(
            self, ino, spath, mode, readable=readable, writable=writable, append=kind == "a"
        )
        self._handles.add(raw)
        return _wrap(raw, mode, buffering, binary, readable, encoding, errors, newline)

    def read_bytes(self, path) -> bytes:
        """The whole file ``path``, as pathlib's Path.read_bytes (open, read
        and close).  A file the caches know, with nothing committed since
        this mount caught up, is copied out in one section with no pool
        lock, no pin and no file object (_read_file_cached)."""
        got = self._read_file_cached(path) if type(path) is str else None
        if got is None:
            with self.open(path, "rb") as f:
                return f.read()
        return got

    def _read_file_cached(self, spath: str) -> bytes | None:
        """read_bytes from the caches (_cached_answer), or None.  No pin is
        needed: the bytes are copied before the second look at the live
        word, and space another process frees is freed after its commit
        moved that word (and written again only after that), so a copy it
        tore is never returned."""
        return self._cached_answer(spath, True, self._whole_regular_file)

    def _whole_regular_file(self, inode: Inode) -> bytes | None:
        return self._read_bytes(inode, 0, None) if stat.S_ISREG(inode.mode) else None

    def write_bytes(self, path, data) -> int:
        """Make the file ``path`` hold ``data``, as pathlib's Path.write_bytes
        (open "wb", write, close: created, or emptied first, through a
        symlink); returns len(data).  Up to WRITE_PIECE bytes are one
        change (_write_whole_change): another process, or the pool after a
        crash, sees the file as it was or all of ``data``, never an empty
        or half-written file, at one commit instead of two."""
        with memoryview(data) as view:
            data = view.cast("B")
            if len(data) <= self.WRITE_PIECE:
                perms = 0o666 & ~self.umask
                optimistically(self, self._write_whole_change, to_str(path), data, perms, False)
            else:
                with self.open(path, "wb") as f:
                    f.write(data)
            return len(data)

    def read_text(self, path, encoding: str | None = None, errors: str | None = None) -> str:
        """The whole file decoded, as pathlib's Path.read_text (universal newlines)."""
        with self.open(path, encoding=encoding, errors=errors) as f:
            return f.read()

    def write_text(
        self, path, data: str, encoding: str | None = None, errors: str | None = None,
        newline: str | None = None,
    ) -> int:  # fmt: skip
        """As pathlib's Path.write_text (the same encoding, errors and newline
        rules: the io layer's), in one change (write_bytes); returns the
        number of characters."""
        if not isinstance(data, str):
            raise TypeError(f"data must be str, not {type(data).__name__}")
        encoded = io.BytesIO()
        text = io.TextIOWrapper(encoded, io.text_encoding(encoding), errors, newline)
        n = text.write(data)
        text.flush()
        text.detach()  # (the BytesIO stays open)
        self.write_bytes(path, encoded.getbuffer())
        return n

    def _open_inode(self, spath: str, kind: str) -> int:
        if kind == "r":
            ino = self._open_cached(spath)
            if ino is MISSED:
                with self._locked(exclusive=False):
                    return self._open_to_read(spath)
            return ino
        if self._may_say:  # said, if it can be (logical.py)
            perms = 0o666 & ~self.umask
            ino = self._made_or_rewritten_said(spath, b"", perms, True, kind == "w")
            if ino is not None:
                return ino
        return optimistically(self, self._open_to_write, spath, kind)

    def _name_cached(self, spath) -> bool:
        """A hint, read with no lock: does the path cache show ``spath``'s
        last name in its directory?  Then an open for writing truncates
        (or refuses) the file there, which no said create does, and the
        said section that would find so is skipped.  A stale answer only
        sends the open the other way, which checks for itself."""
        if type(spath) is str:
            head, slash, name = spath.rpartition("/")
            known = self._heads.get(head) if head else _AT_ROOT if slash else None
            if known is not None:
                d = self.dirs.get(known[0])
                return d is not None and name in d.entries
        return False

    def _open_cached(self, spath: str):
        """Locked(exclusive=False) around _open_to_read, written out: every
        open for reading pays it.  The shared pool lock is held from the
        look at the live word to the pin, since a process that frees an
        inode checks for pins under the exclusive one.  A regular file that
        the path cache resolves to a cached inode, with nothing committed
        since this mount caught up, takes no more (half a microsecond less
        than the generic section did); otherwise it catches up and
        walks in the same section, as the usual way would.  MISSED when the
        lock is held exclusively or the call is not a plain one (after a
        fork, with mappings to let go of, inside another call): the caller
        takes the lock the usual way."""
        if self._forks != _forks[0] or self._unmapped:
            return MISSED
        lock = self._tlock
        lock.acquire()
        try:
            journal = self.journal
            now = time.monotonic()
            if (
                self._depth
                or self.closed
                or (journal.lazy_view and journal.drop_due())
                or self._followers_due <= now  # (Locked looks at them)
            ):
                return MISSED
            fd, held = self.region.fd, self._kept_for_read(now)  # (logical.py)
            if not held:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return MISSED  # (held exclusively: the usual way waits, catching up)
            try:
                if journal.peek() == self._seen_seq and type(spath) is str:
                    ino = self._regular_file_cached(spath)
                    if ino is not None:
                        self._pin(ino)
                        return ino
                self._depth += 1  # (as Locked: calls it makes are inside this section)
                try:
                    catch_up(self, exclusive=False)
                    return self._open_to_read(spath)
                finally:
                    self._depth -= 1
            finally:
                if not held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            lock.release()

    def _regular_file_cached(self, spath: str) -> int | None:
        """The inode of the regular file ``spath`` names, when the path cache
        and the inode cache hold it (_cached_entry); None otherwise, damage
        included (the walk meets it again and says where)."""
        try:
            entry = self._cached_entry(spath, True)
        except CorruptionError:
            return None
        if entry is None or entry[2] is None or not stat.S_ISREG(entry[2].mode):
            return None
        return entry[2].ino

    def _open_to_read(self, spath: str) -> int:
        r = self._resolve(spath)
        if r.ftype != REG_T:  # (_existing's check and _check_openable's, past the usual case)
            if r.ino is None:
                raise oserror(errno.ENOENT, spath)
            self._check_openable(r, spath)
        # The pin last: nothing after it may fail (_open_cached).
        self._pin(r.ino)  # type: ignore[arg-type]
        return r.ino  # type: ignore[return-value]

    def _open_to_write(self, spath: str, kind: str) -> int:
        with self._change() as txn:
            r = self._resolve_to_create(spath, exclusive=kind == "x")
            if r.ino is None:
                inode = self._create(txn, r, S_IFREG | (0o666 & ~self.umask), spath)
                self._pin(inode.ino)
                return inode.ino
            if kind == "x":
                raise oserror(errno.EEXIST, spath)
            self._check_openable(r, spath)
            if kind == "w":
                self._need_exclusive()  # frees blocks another process may map
                self._truncate_inode(txn, self._inode(r.ino), 0)  # type: ignore[arg-type]
            self._pin(r.ino)  # type: ignore[arg-type]
            return r.ino  # type: ignore[return-value]

    def _create_with(self, spath: str, data, perms: int | None = None) -> int:
        """Make the new file ``spath`` holding ``data`` (a buffer of at most
        WRITE_PIECE bytes) in one change: another process, or the pool
        after a crash, has no such file or all of it, as a write under a
        temporary name and a rename would give, in one commit instead of
        three (DaxStore writes a zarr chunk so; ``daxfs cp`` a small file,
        with its permission bits ``perms``: 0o666 less the umask if None).
        FileExistsError if the name exists, as open(path, "xb").  Returns
        the new file's inode number."""
        return self._whole_file(self._write_whole_change, spath, data, perms, True)

    def _whole_file(self, change: Callable[..., int], spath: str, data, perms, *more) -> int:
        """Run ``change(spath, data, perms, *more)`` as _create_with and
        _replace_with do: ``data`` as bytes, at most WRITE_PIECE of them
        (ValueError past it: one change holds them all), ``perms`` 0o666
        less the umask if None, the change optimistic when it may be."""
        perms = 0o666 & ~self.umask if perms is None else perms & 0o7777
        with memoryview(data) as view:
            data = view.cast("B")
            if len(data) > self.WRITE_PIECE:
                raise ValueError(f"{len(data)} bytes: more than one change holds")
            return optimistically(self, change, spath, data, perms, *more)

    def _write_whole_change(self, spath: str, data: memoryview, perms: int, exclusive: bool) -> int:
        """The change of _create_with (``exclusive``: EEXIST if the name
        is there) and of write_bytes (else: _open_to_write's for "w", an
        existing file emptied), with the data in it.  Returns the inode
        number."""
        said = self._made_or_rewritten_said(spath, data, perms, False, not exclusive)
        if said is not None:  # (logical.py)
            return said
        with self._change() as txn:
            r = self._resolve_to_create(spath, exclusive=exclusive)
            if r.ino is None:
                inode = self._create(txn, r, S_IFREG | perms, spath)
            elif exclusive:
                raise oserror(errno.EEXIST, spath)
            else:
                self._check_openable(r, spath)
                self._need_exclusive()  # frees blocks another process may map
                inode = self._inode(r.ino)
                self._truncate_inode(txn, inode, 0)
            if data:
                self._write_piece(txn, inode, 0, data)
        return inode.ino

    def _replace_with(self, path, data, perms: int | None = None) -> int:
        """Make ``path`` name a new file holding ``data`` (a buffer of at
        most WRITE_PIECE bytes) in one change, as writing a temporary file
        and renaming it over ``path`` would, in one commit instead of
        three (DaxStore replaces a zarr chunk so).  As rename: a symlink
        in the last name is replaced, not followed; the old file loses
        this name and is freed, or kept while open or mapped anywhere
        (its readers keep its bytes, where write_bytes would empty it
        under them, or fail with EBUSY while it is mapped); its other
        names keep it.  Another process, or the pool after a crash, sees
        the old file or all of the new one.  Returns the new inode number."""
        return self._whole_file(self._replace_whole_change, to_str(path), data, perms)

    def _replace_whole_change(self, spath: str, data: memoryview, perms: int) -> int:
        """_replace_with's change: a new inode with ``data``, under the name
        (retargeted, as _rename does over an existing file), or a new name."""
        with self._change() as txn:
            r = self._entry(spath)
            if r.ino is not None and r.ftype == DIR_T:
                raise oserror(errno.EISDIR, spath)
            if r.trailing_slash:  # (as a rename of a file to "name/")
                raise oserror(errno.ENOTDIR, spath)
            if r.ino is None:
                inode = self._create(txn, r, S_IFREG | perms, spath)
            else:
                parent = self._parent_inode(r.parent)
                inode = self._new_inode(txn, parent, S_IFREG | perms, spath)
                self._edit_dir(r.parent).retarget(r.name, inode.ino, REG_T, txn)
                self._touch_dir(parent)
                self._drop_link(txn, self._inode(r.ino))
            if data:
                self._write_piece(txn, inode, 0, data)
        return inode.ino

    def _resolve_to_create(self, spath: str, exclusive: bool) -> Resolved:
        """Resolve for open(O_CREAT), in Linux's order: the directories on
        the way, then a trailing slash (EISDIR: open cannot make a
        directory), then a symlink in the last name (followed, unless
        O_EXCL), whose own target must not end in "/" either."""
        r = self._entry(spath)
        if r.last == "name" and r.trailing_slash:
            raise oserror(errno.EISDIR, spath)
        if r.ftype == LNK_T and not exclusive:
            r = self._resolve(spath)
            if r.ino is None and r.trailing_slash:
                raise oserror(errno.EISDIR, spath)
        return r

    def _grow_inode_table(self, txn: Transaction, spath: str) -> None:
        """Every slot in use is taken: take more of the table (InodeTable.grow),
        under the exclusive lock, caught up, so that the limit we move is
        the pool's."""
        if self.inodes.limit >= self.sb.inode_count:
            raise oserror(errno.ENOSPC, spath)
        self._need_exclusive()
        self._flush_data([self.inodes.grow(txn)])  # durable before the record

    def _check_openable(self, r: Resolved, spath: str) -> None:
        if r.ftype == DIR_T:
            raise oserror(errno.EISDIR, spath)
        if r.ftype in SPECIAL_T:
            # Their I/O is the kernel's (a FIFO's pipe, a driver): served
            # through `daxfs mount`; Linux answers ENXIO where none is there.
            raise oserror(errno.ENXIO, spath)

    def _create(self, txn: Transaction, r: Resolved, mode: int, spath: str) -> Inode:
        if r.name is None:
            raise oserror(errno.EEXIST, spath)
        parent = self._parent_inode(r.parent)
        if parent.nlink == 0:
            raise oserror(errno.ENOENT, spath)  # creating in a removed directory
        inode = self._new_inode(txn, parent, mode, spath)
        adder = self._dir_block_adder(parent)
        self._edit_dir(r.parent).add(r.name, inode.ino, ftype_of(mode), txn, adder)
        self._touch_dir(parent)
        if stat.S_ISDIR(mode) and type(spath) is str:
            self._keep_made_head(spath, inode.ino, r.links)
        return inode

    def _new_owner(self, parent: Inode, mode: int) -> tuple[int, int, int]:
        """(uid, gid, mode) of a new inode of ``mode`` in ``parent``, as
        Linux's inode_init_owner gives them, for root: a set-group-ID
        directory gives its group, and a new directory its bit."""
        uid, gid = self.creator()
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        return uid, gid, mode

    def _new_inode(self, txn: Transaction, parent: Inode, mode: int, spath: str) -> Inode:
        """A new inode in directory ``parent``, owned as Linux's
        inode_init_owner would, with no name yet (the caller gives it one)."""
        if not self.inodes.nfree:
            self._grow_inode_table(txn, spath)
        ino = self.leases.take_ino()
        self._txn_took.append(ino)
        now = _now()
        uid, gid, mode = self._new_owner(parent, mode)
        inode = Inode(
            ino,
            mode,
            nlink=2 if stat.S_ISDIR(mode) else 1,
            size=0,
            atime=now,
            mtime=now,
            ctime=now,
            btime=now,
            parent=parent.ino,
            uid=uid,
            gid=gid,
        )
        self.inodes.cache[ino] = inode
        self._txn_dirty.add(ino)
        return inode

    def _keep_made_head(self, spath: str, ino: int, links: int) -> None:
        """A directory the change under way made: the head of the paths in it,
        in the path cache if the change may use it (kept only if it commits:
        coherence.Change), so that each mkdir of a chain walks one name."""
        heads = self._heads_now()
        if heads is not None:
            self._keep_head(heads, spath, (ino, links))

    # A growing directory takes blocks in runs (1, 2, 4, ... 16), so a big
    # directory stays in few extents instead of one per block, and its
    # inode changes once per run: each change of it makes every other
    # process's change in the directory run again (coherence.Change).
    DIR_PREALLOC_MAX = 16

    def _dir_block_adder(self, dir_inode: Inode) -> Callable[[Transaction], list[int]]:
        """What a directory calls when it needs blocks (_add_dir_blocks).
        A bound partial, not a closure: mypyc compiles no closure in a
        method of a class made of traits (scripts/compiled_trial.py)."""
        return functools.partial(self._add_dir_blocks, dir_inode)

    def _add_dir_blocks(self, dir_inode: Inode, txn: Transaction) -> list[int]:
        """The next run of blocks, allocated and in the directory's size
        (blocks an older pool left mapped past the end are taken first).
        An optimistic change does not grow a directory whose blocks lag said
        changes (logical.py): undone, it could not put them back, and the
        exclusive way absorbs them first."""
        if self._reads is not None and dir_inode.ino in self._lag_dirs:
            self._need_exclusive()
        end = dir_inode.size
        if dir_inode.iomap(end, BLOCK)[0].kind == "hole":
            self._preallocate_dir(txn, dir_inode, end)
        devs: list[int] = []
        for e in dir_inode.iomap(end, self._dir_run_cap() * BLOCK):
            if e.kind == "hole":
                break
            devs.extend(range(e.device_offset, e.device_offset + e.length, BLOCK))
        dir_inode.size = end + len(devs) * BLOCK
        self._txn_dirty.add(dir_inode.ino)
        return devs

    def _dir_run_cap(self) -> int:
        """The most blocks a directory takes at once: they are written whole
        in one change's record, which may fill an eighth of the journal."""
        return max(1, min(self.DIR_PREALLOC_MAX, self.sb.journal_len // (8 * BLOCK)))

    def _preallocate_dir(self, txn: Transaction, dir_inode: Inode, end: int) -> None:
        want = min(self._dir_run_cap(), max(1, end // BLOCK))
        hint = dir_inode.device_before(end)
        try:
            runs = self._alloc_blocks(txn, want, hint)
        except OSError:
            runs = self._alloc_blocks(txn, 1, hint)  # nearly full: one block will do
        foff = end
        for dev, n in runs:
            dir_inode.add_extent(foff, dev, n)
            foff += n

    # ======================================================================
    # public API: sizes and attributes
    # ======================================================================
    def truncate(self, path, length: int) -> None:
        spath = to_str(path)
        length = operator.index(length)  # (TypeError for 1.5, as os.truncate)
        if not length and self._may_say and self._emptied_said(spath):
            self._consolidate()  # (logical.py: emptied by a said rewrite)
            return
        with self._change() as txn:
            r = self._existing(spath)
            if r.ftype == DIR_T:
                raise oserror(errno.EISDIR, spath)
            if r.ftype in SPECIAL_T:
                raise oserror(errno.EINVAL, spath)  # (Linux: not a regular file)
            self._truncate_inode(txn, self._inode(r.ino), length)  # type: ignore[arg-type]
        self._consolidate()

    def fallocate(self, path, offset: int, length: int) -> None:
        """Allocate [offset, offset+length) so later writes cannot fail for space;
        extends the file like posix_fallocate.  New space reads as zeroes."""
        spath = to_str(path)
        if offset < 0 or length <= 0:
            raise oserror(errno.EINVAL, spath)
        refuse_past_largest_file(offset + length, spath)
        with self._change() as txn:
            r = self._existing(spath)
            if r.ftype == DIR_T:
                raise oserror(errno.EISDIR, spath)
            if r.ftype in SPECIAL_T:
                raise oserror(errno.ENODEV, spath)  # (fallocate(2): not a regular file)
            inode = self._inode(r.ino)  # type: ignore[arg-type]
            new_size = max(inode.size, offset + length)
            fresh = self._allocate(txn, inode, offset, length, new_size)
            self._resize_zeroed(inode, fresh, new_size)
            self._touch(inode)

    def chmod(self, path, mode: int) -> None:
        spath = to_str(path)
        with self._change():
            r = self._existing(spath)
            inode = self._inode(r.ino)  # type: ignore[arg-type]
            inode.mode = (inode.mode & ~0o7777) | (mode & 0o7777)
            self._touch(inode, data=False)

    def chown(self, path, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """Give a file to ``uid`` and ``gid`` (-1 keeps either), as os.chown
        run by root does: the API gives whoever can open the pool file every
        right (DESIGN.md, "Known limits").  As on Linux, a file that is not a
        directory loses its setuid bit, and its setgid bit when it is group
        executable (without group execute it marks mandatory locking, kept)."""
        for what, v in (("uid", uid), ("gid", gid)):
            if not -1 <= v < NO_ID:
                raise OverflowError(f"{what} {v} out of range")
        with self._change():
            r = self._existing(to_str(path), follow=follow_symlinks)
            inode = self._inode(r.ino)  # type: ignore[arg-type]
            if uid != -1:
                inode.uid = uid
            if gid != -1:
                inode.gid = gid
            if not stat.S_ISDIR(inode.mode):
                inode.mode &= ~stat.S_ISUID
                if inode.mode & stat.S_IXGRP:
                    inode.mode &= ~stat.S_ISGID
            self._touch(inode, data=False)

    def lchown(self, path, uid: int, gid: int) -> None:
        """chown of the symlink itself, not what it names."""
        self.chown(path, uid, gid, follow_symlinks=False)

    def utime(
        self, path, times: tuple[float, float] | None = None, *, ns: tuple[int, int] | None = None
    ) -> None:
        spath = to_str(path)
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        with self._change():
            r = self._existing(spath)
            inode = self._inode(r.ino)  # type: ignore[arg-type]
            if ns is None and times is not None:
                ns = (int(times[0] * 1e9), int(times[1] * 1e9))
            now = _now()
            inode.atime, inode.mtime = ns if ns is not None else (now, now)
            inode.ctime = now
            self._txn_dirty.add(inode.ino)

    # ======================================================================
    # public API: queries
    # ======================================================================
    def stat(self, path, *, follow_symlinks: bool = True) -> os.stat_result:
        got = (
            self._cached_answer(path, follow_symlinks, self._stat_result)
            if type(path) is str
            else None
        )
        if got is None:
            got = without_lock(self, self._stat_path, path, follow_symlinks)  # (_query,
            if got is MISSED:  # written out)
                with self._locked(exclusive=False):
                    return self._stat_path(path, follow_symlinks)
        return got

    def _cached_answer(self, spath: str, follow: bool, answer: Callable):
        """``answer(inode)`` for the inode that ``spath`` names, when the path
        cache resolves it to a cached inode and ``answer`` gives something
        (not None): coherence.without_lock written out, as every stat and
        read_bytes pays it (a microsecond less).  Everything it reads is
        this mount's caches, which change only under the thread lock: the
        live word, unmoved since they were caught up and again after the
        answer, says they are the pool's last commit.  None otherwise:
        the caller asks the usual way."""
        if self._forks != _forks[0] or self._unmapped:
            return None
        lock = self._tlock
        lock.acquire()
        try:
            seq = self._current_seq()
            if seq is None:
                return None
            try:
                entry = self._cached_entry(spath, follow)
            except CorruptionError:
                return None  # (said the locked way, with the media read again)
            if entry is None or entry[2] is None:
                return None
            got = answer(entry[2])
            return got if got is not None and self.journal.peek() == seq else None
        finally:
            lock.release()

    def _stat_path(self, path, follow_symlinks: bool) -> os.stat_result:
        return self._answer_for(path, follow_symlinks, self._stat_result)

    def _answer_for(self, path, follow_symlinks: bool, answer: Callable[[Inode], T]) -> T:
        """``answer(inode)`` for the inode ``path`` names (the FUSE server
        asks for more of it than a stat result holds)."""
        r = self._resolve(path, follow_symlinks)
        if r.ino is None:
            raise oserror(errno.ENOENT, to_str(path))
        return answer(self._inode(r.ino))

    def lstat(self, path) -> os.stat_result:
        return self.stat(path, follow_symlinks=False)

    def _stat_result(self, i: Inode) -> os.stat_result:
        # All 19 fields positionally: the fastest way to build a stat_result.
        return os.stat_result((
            i.mode, i.ino, self.st_dev, i.nlink, i.uid, i.gid, i.size,
            i.atime // 10**9, i.mtime // 10**9, i.ctime // 10**9,
            i.atime / 1e9, i.mtime / 1e9, i.ctime / 1e9, i.atime, i.mtime, i.ctime,
            CHUNK if i.size >= CHUNK else BLOCK, i.allocated_bytes // 512, i.rdev,
        ))  # fmt: skip

    def exists(self, path) -> bool:
        try:
            self.stat(path)
        except (OSError, ValueError):
            return False
        return True

    def isdir(self, path) -> bool:
        try:
            return stat.S_ISDIR(self.stat(path).st_mode)
        except (OSError, ValueError):
            return False

    def isfile(self, path) -> bool:
        try:
            return stat.S_ISREG(self.stat(path).st_mode)
        except (OSError, ValueError):
            return False

    def islink(self, path) -> bool:
        try:
            return stat.S_ISLNK(self.lstat(path).st_mode)
        except (OSError, ValueError):
            return False

    def iomap(self, path, offset: int = 0, length: int | None = None) -> list[Extent]:
        """The block map of [offset, offset+length) (default: to end of file), as
        maximal extents, mapped or hole."""
        return self._query(self._extents_of, path, offset, length)

    def _extents_of(self, path, offset: int, length: int | None) -> list[Extent]:
        r = self._existing(path)
        inode = self._inode(r.ino)  # type: ignore[arg-type]
        if offset < 0 or (length is not None and length < 0):
            raise oserror(errno.EINVAL, to_str(path))
        if length is None:
            length = max(0, inode.size - offset)
        return inode.iomap(offset, length) if length else []

    def statvfs(self) -> StatVFS:
        with self._locked(exclusive=False):
            self._release_said()  # (logical.py: what said unlinks freed)
            a = self.allocator
            nfree_inodes = self.inodes.free_count
            # Space held until a group commit (lazy mode) counts as free: the
            # allocator commits to get it when nothing else is left.
            free = a.free_blocks + sum(n for _seq, _start, n in self._quarantine)
            free_chunks = a.free_chunks + self._held_whole_chunks()
            return StatVFS(
                BLOCK,
                BLOCK,
                self.sb.data_blocks,
                free,
                free,
                self.sb.inode_count - 1,
                nfree_inodes,
                nfree_inodes,
                os.ST_RDONLY if self.readonly else 0,
                255,
                free_chunks,
                self.sb.data_blocks // (CHUNK // BLOCK),
            )

    def info(self) -> dict[str, object]:
        """What the pool is and what its backing promises (durability, huge pages)."""
        with self._locked(exclusive=False):
            d = dict(self.region.describe())
            d.update(
                format_version=self.sb.version,
                allocator=self.sb.allocator,
                uuid=self.sb.uuid.hex(),
                inodes=self.sb.inode_count,
                data_bytes=self.sb.data_blocks * BLOCK,
                # What a writable mount does by default (this one, if writable).
                commit=self.commit_mode
                if self._lazy or not self.readonly
                else ("lazy" if getattr(self.region, "lazy_capable", False) else "sync"),
                commit_interval=self.commit_interval,
                tails=self.tails,
                followers=len(self.followers.live()),  # (as far as this mount can tell yet)
                # A read-only mount showing a recovery of its own (pool.py,
                # "Recovered in private"): the pool file has not had it yet.
                private_recovery=self._private_baseline is not None,
                **self.journal.describe(),
            )
            return d

    # ======================================================================
    # durability and lifetime
    # ======================================================================
    def fsync(self, file) -> None:
        """Make the file's data and attributes durable (all backends; in lazy
        mode with every change made before it, by a group commit).  ``file``:
        a path, or a file this mount opened (flushed first, as
        ``f.flush(); os.fsync(f.fileno())`` would be on the kernel's)."""
        raw = _raw_file_of(file)
        if raw is not None:
            file.flush()
            self._fsync_ino(raw._ino)
            return
        with self._locked(exclusive=False):
            r = self._existing(file)
        self._fsync_ino(r.ino)  # type: ignore[arg-type]

    def _fsync_ino(self, ino: int) -> None:
        self._flush_ino(ino)
        self._trim_tails([ino])  # (durable with the rest)
        self._commit_now()

    def _commit_now(self) -> None:
        """Lazy mode: a group commit now, if anything is left to commit (in
        sync mode only what other processes left lazily)."""
        if self._lazy and not self.closed:
            with self._locked(exclusive=True):
                if self._batching or self.journal.lazy_pending():
                    self._group_commit()

    def sync(self) -> None:
        """Make every change made through this mount durable."""
        if self.readonly or self.closed:
            return
        with self._thread_lock():
            self._persist_dirty_data()
            if self._dirty_times:
                with self._change():
                    for ino in list(self._dirty_times):
                        if self.inodes.valid_ino(ino) and ino in self.inodes.cache:
                            self._txn_dirty.add(ino)
            self._commit_now()

    def close(self) -> None:
        """Flush and unmount.  Open files of this mount are closed first."""
        if self.closed:
            return
        if self._forks != forks_seen():  # a forked child that never used it: leave it alone
            self.closed = True
            return
        self._close_handles()
        self._stop_committer.set()
        self._hold_began.set()  # (the holder thread sees the stop)
        try:
            self._free_unmapped_orphans()
            try:
                self._trim_tails(list(self._tailed))  # what closes left (mapped, open elsewhere)
            finally:
                self.sync()
            if not self.readonly:  # a clean unmount leaves an empty journal
                with self._locked(exclusive=True):
                    if self._lag_bytes:
                        self._absorb()
                    self.journal.checkpoint()
                    self.leases.leave()
        finally:
            with self._thread_lock():
                self.closed = True
                self.region.close()
                self._drop_caches()

    def _drop_caches(self) -> None:
        """Let an unmounted pool's caches go now (no call reads them after
        ``closed``): a FileSystem sits in reference cycles (its threads, its
        handles), so they would otherwise live until the collector's next
        full pass, which then walks every inode and name a large pool had,
        in this process and in every child forked meanwhile (tens of
        milliseconds at some random later call)."""
        self.inodes.cache.clear()
        self.inodes.pending.clear()
        self.dirs.clear()
        self._heads.clear()

    def _close_handles(self) -> None:
        """Close the files opened through this mount (at unmount)."""
        for h in list(self._handles):
            try:
                h.close()
            except (OSError, ValueError):
                pass

    def _has_open_files(self) -> bool:
        """Are files opened through this mount still open?  (The mount
        registry does not unmount an idle mount under them.)"""
        return any(not h.closed for h in list(self._handles))

    def __enter__(self) -> FileSystem:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("ro" if self.readonly else "rw")
        return f"<daxfs.FileSystem {self.region.path!r} {state}>"


def _raw_file_of(obj) -> DaxRawFile | MappedReader | None:
    """The daxfs file under ``obj`` (itself, or inside a buffered or text
    wrapper), or None for anything else (a path)."""
    for _ in range(3):
        if isinstance(obj, (DaxRawFile, MappedReader)):
            return obj
        obj = getattr(obj, "buffer", None) or getattr(obj, "raw", None)
    return None


def _entry_fits(dir_ino: int, ino: int, ftype: int, inode: Inode) -> bool:
    """The rule FileSystem._lookup holds every entry to: it names an inode
    of its own type, never the root, and a directory only from the
    directory its parent field names."""
    return (
        ino != ROOT_INO
        and (inode.mode >> 12) & 0xF == ftype
        and (ftype != DIR_T or inode.parent == dir_ino)
    )


def _bad_entry(dir_ino: int, name: str, inode: Inode, ftype: int) -> CorruptionError:
    """Why the entry ``name`` of directory ``dir_ino`` fails FileSystem._lookup."""
    where = f"directory {dir_ino}: entry {name!r}"
    if inode.ino == ROOT_INO:
        return CorruptionError(f"{where} names the root")
    if ftype_of(inode.mode) != ftype:
        return CorruptionError(f"{where} names inode {inode.ino} of another type")
    return CorruptionError(f"{where} names directory {inode.ino}, whose parent is {inode.parent}")


def _wrap(
    raw: DaxRawFile,
    mode: str,
    buffering: int,
    binary: bool,
    readable: bool,
    encoding,
    errors,
    newline,
):
    if buffering == 0:
        return raw
    if buffering in (-1, 1):
        size = DEFAULT_BUFFER if readable else WRITE_BUFFER
    else:
        size = buffering
    # (read-only files, unless unbuffered, are MappedReaders: FileSystem.open)
    buffered = io.BufferedRandom(raw, size) if readable else io.BufferedWriter(raw, size)
    if binary:
        return buffered
    return _text(buffered, mode, buffering, encoding, errors, newline)


def _text(buffered, mode: str, buffering: int, encoding, errors, newline) -> io.TextIOWrapper:
    text = io.TextIOWrapper(
        buffered, io.text_encoding(encoding), errors, newline, line_buffering=buffering == 1
    )
    text.mode = mode  # type: ignore[misc]
    return text
