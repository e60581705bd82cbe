"""data: where a file's bytes go, and in what order they become durable.

DataPath is the part of FileSystem that reads and writes file data; it is a
mixin so that fs.py keeps the namespace and locking.  Its callers hold an
open change (coherence.Change): the pool lock, or, for an optimistic
change, stores deferred until its check (``_txn_deferred``).

Placement (the huge-page policy lives here and in alloc):
  * a file that is or becomes 2 MiB or larger gets a whole aligned chunk for
    every 2 MiB window of the file that is entirely unmapped, contiguous
    with the previous window's chunk when that chunk is free (bytes of the
    chunk beyond the end of file are allocated but not yet in the file);
  * smaller files, and partly mapped windows, get 4 KiB blocks packed into
    small chunks, contiguous with the previous block when possible;
  * when a write, fallocate or truncate makes a file large, or touches a
    window of a large file, each such window that lies wholly inside the
    file and is mapped by small blocks is migrated into a whole chunk
    (``_migrate``): the bytes are copied and persisted first, then the same
    transaction that commits the change swaps the window's extents and
    frees the old blocks.  A window any Mapping pins is left alone, and so
    is every window when no whole chunk (or too little space) is free.

Ordering: data written into newly allocated space, and zeroes that make new
space read as zero, are persisted before the transaction that makes them
part of the file commits (ordered mode).  Bytes past the end of file in an
allocated block are undefined until the file grows over them, when they are
zeroed (again before the size change commits).  Overwrites in place are
persisted on return except on page-cache files, where they wait for
flush/fsync/sync (``_dirty_data``).  In lazy mode (group commit) nothing is
flushed here: the group commit's one fdatasync makes the data durable
before the durable mark that makes its records count (journal.py).  In sync
mode on the page cache, data stored into space the change allocated is not
flushed either: its record names it with a crc, and the commit's one
fdatasync makes both durable (``_settle_ordered``; journal.py, "Checked
records"); a store over a file's existing bytes first makes sure no such
check still depends on them (``_confirm_in_place``).
"""

from __future__ import annotations

import bisect
import errno
import functools
import operator
import stat
import time
from collections.abc import Sequence

from .coherence import _forks, cached_under_shared_lock, optimistically
from .inode import Inode
from .journal import Transaction
from .layout import BLOCK, BLOCKS_PER_CHUNK, CHUNK, MAX_FILE_SIZE
from .leases import LEASED_CHUNKS
from .path import oserror
from .pins import pinned_by_others
from .region import flush_ranges, merge_ranges


def _now() -> int:
    return time.time_ns()


def refuse_past_largest_file(end: int, path: str | None = None) -> None:
    if end > MAX_FILE_SIZE:
        raise oserror(errno.EFBIG, path)


class DataPath:
    """File data: allocation in device offsets, read, write, truncate."""

    # ======================================================================
    # allocation (device offsets at this level; blocks inside alloc)
    # ======================================================================
    def _dev(self, block: int) -> int:
        return self.sb.data_off + block * BLOCK

    def _block(self, dev: int) -> int:
        return (dev - self.sb.data_off) // BLOCK

    def _take(self, txn: Transaction, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
        txn.allocated.extend(runs)
        taken = [(self._dev(b), n * BLOCK) for b, n in runs]
        for dev, n in taken:
            self.region.reserve(dev, n)  # ENOSPC here, not SIGBUS at a store
        return taken

    def _alloc_blocks(self, txn: Transaction, n: int, hint_dev: int | None):
        # Through this process's windows when it shares the pool (leases.py).
        hint = None if hint_dev is None else self._block(hint_dev)
        return self._take(txn, self._unless_held(self.leases.alloc_blocks, n, hint))

    def _alloc_chunks(self, txn: Transaction, n: int, hint_dev: int | None):
        hint = None if hint_dev is None else self._block(hint_dev)
        if self._reads is not None:
            # Preparing without the lock: only chunks leased to us for it.
            runs = self.leases.take_chunks(n, hint)
            if runs is None:
                self._need_exclusive()
            return self._take(txn, runs)
        # Never in another process's window, which may be storing into it.
        alloc = self.leases.fenced
        return self._take(txn, self._unless_held(alloc, self.allocator.alloc_chunks, n, hint))

    def _unless_held(self, alloc, *args):
        """``alloc(*args)``; when the pool is full but space freed by commits
        not yet durable is held (lazy mode, fs._quarantine), a group commit
        frees it and the allocation is tried again (as ext4 commits its
        journal when the space it waits on is what holds it up)."""
        try:
            return alloc(*args)
        except OSError as e:
            if e.errno != errno.ENOSPC or not self._quarantine:
                raise
        if self._reads is not None:
            self._need_exclusive()  # (a group commit needs the exclusive lock)
        self._group_commit()
        return alloc(*args)

    def _free(self, txn: Transaction, dev: int, length: int) -> None:
        txn.to_free.append((self._block(dev), length // BLOCK))
        txn.revoke(dev, length)

    def _alloc_meta_block(self, txn: Transaction) -> int:
        ((dev, _n),) = self._alloc_blocks(txn, 1, None)
        return dev

    def _free_meta_block(self, txn: Transaction, dev: int) -> None:
        self._free(txn, dev, BLOCK)

    # ======================================================================
    # reading and writing file data
    # ======================================================================
    def _read_bytes(self, inode: Inode, off: int, n: int | None) -> bytes:
        """Up to ``n`` bytes from ``off`` (to the end when None)."""
        n = max(0, inode.size - off if n is None else min(n, inode.size - off))
        if not n:
            return b""
        dev = inode.device_at(off, n)
        if dev is not None:  # one extent: one copy, the usual case
            return bytes(self.region.buf[dev : dev + n])  # type: ignore[operator]
        out = bytearray(n)
        self._copy_extents(inode.iomap(off, n), memoryview(out))
        return bytes(out)

    def _copy_out(self, inode: Inode, off: int, dst) -> int:
        n = len(dst)
        if off + n > inode.size:
            n = max(0, inode.size - off)
        if n:
            dev = inode.device_at(off, n)
            if dev is not None:  # one extent: one copy, the usual case
                dst[:n] = self.region.buf[dev : dev + n]
            else:
                self._copy_extents(inode.iomap(off, n), dst)
        return n

    def _copy_extents(self, extents: list, dst: memoryview) -> None:
        """Consecutive extents (an iomap) into ``dst``: bytes, or zeroes for holes."""
        buf, pos = self.region.buf, 0
        for e in extents:
            if e.kind == "mapped":
                dst[pos : pos + e.length] = buf[e.device_offset : e.device_offset + e.length]
            else:
                dst[pos : pos + e.length] = bytes(e.length)
            pos += e.length

    def _pread_into(self, ino: int, off: int, b) -> int:
        if type(b) is bytearray or (type(b) is memoryview and b.format == "B" and b.ndim == 1):
            n = self._unlocked_read(ino, None, off, b)  # the usual buffers:
            if n is not None:  # no view to make
                return n
            with self._locked(exclusive=False):
                return self._copy_out(self._inode(ino), off, b)
        with memoryview(b) as view:
            return self._pread_into(ino, off, view.cast("B"))

    def _unlocked_read(self, ino: int, copy, off: int, arg):
        """``copy(inode, off, arg)`` with no pool lock: coherence.without_lock
        written out for a cached inode, as this is every read's path (the
        general one costs about half a microsecond more); None when it
        cannot, and the caller reads the locked way.  ``copy`` None:
        _copy_out into the buffer ``arg``, its usual case (all of it from
        one extent) written out: a call less is a tenth of a 4 KiB
        readinto."""
        if self._forks != _forks[0] or self._unmapped:
            return None
        lock = self._tlock
        lock.acquire()
        try:
            # _current_seq, written out: a call more is a tenth of a 4 KiB read.
            journal = self.journal
            word = journal.live_seq  # (journal.peek, written out)
            seq = word[0] if word is not None else journal.peek()
            inode = self.inodes.cache.get(ino)
            if (
                self._depth
                or self.closed
                or seq != self._seen_seq
                or inode is None
                or (journal.lazy_view and journal.drop_due())
            ):
                return None
            if copy is not None:
                got = copy(inode, off, arg)
            else:
                got = len(arg)
                dev = inode.device_at(off, got) if off + got <= inode.size else None
                if dev is not None:
                    arg[:got] = self.region.buf[dev : dev + got]
                else:
                    got = self._copy_out(inode, off, arg)
            return got if (word[0] if word is not None else journal.peek()) == seq else None
        finally:
            lock.release()

    def _current_seq(self) -> int | None:
        """The live word's sequence number, when a call may answer from this
        mount's caches with no pool lock (coherence.without_lock, written
        out: FileSystem._cached_answer, and inline in _unlocked_read): the
        caches are the pool's last commit (they change only under the
        thread lock, which the caller holds), and the call is not inside
        another, on an unmounted pool, or due to drop lazy homes.  None
        otherwise."""
        journal = self.journal
        word = journal.live_seq  # (journal.peek, written out)
        seq = word[0] if word is not None else journal.peek()
        if (
            self._depth
            or self.closed
            or seq != self._seen_seq
            or (journal.lazy_view and journal.drop_due())
        ):
            return None
        return seq

    def _pread(self, ino: int, off: int, n: int | None) -> bytes:
        data = self._unlocked_read(ino, self._read_bytes, off, n)
        if data is None:
            with self._locked(exclusive=False):
                return self._read_bytes(self._inode(ino), off, n)
        return data

    def _size_of(self, ino: int) -> int:
        with self._locked(exclusive=False):
            return self._inode(ino).size

    def _seek_data(self, ino: int, off: int, hole: bool) -> int:
        """lseek's SEEK_DATA (``hole`` False) and SEEK_HOLE: the first byte at
        or after ``off`` that is allocated, or in a hole (the end of the file
        counts as a hole).  Allocated space reads as data, as on tmpfs."""
        with self._locked(exclusive=False):
            return seek_in(self._inode(ino), off, hole)

    # Large writes commit in pieces so that one transaction stays small; a crash
    # leaves a prefix of the write, as POSIX allows.
    WRITE_PIECE = 64 * CHUNK

    # Sharing the pool, pieces of a large file's write take the whole chunks
    # leased for them (Leases.lease_chunks), so that their data is copied
    # with no pool lock held, while other processes commit.
    SHARED_PIECE = LEASED_CHUNKS * CHUNK

    def _pwrite(self, ino: int, off: int, data: memoryview) -> None:
        refuse_past_largest_file(off + len(data))
        # An append or a new file's first write needs a change: no lock is
        # taken to find that out when the cached size says so (a hint: a
        # stale one only sends an overwrite the longer, still right, way).
        cached = self.inodes.cache.get(ino)
        if cached is None or off + len(data) <= cached.size:
            if cached_under_shared_lock(self, self._overwrite, ino, off, data) is True:
                return
        elif not cached.size and not off and self._may_say and self._fill_said(ino, data):
            return  # a new file's first data, said (logical.py)
        shared = self.optimism and self.leases.shared and not self.readonly
        step = self.SHARED_PIECE if shared else self.WRITE_PIECE
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            if shared:
                self._lease_chunks_for(ino, off + start, len(piece))
            optimistically(self, self._write_change, ino, off + start, piece)

    def _lease_chunks_for(self, ino: int, off: int, n: int) -> None:
        """Before a write that may make file ``ino`` large, or grow it: have
        the whole chunks its unmapped windows will take among our windows.
        Decided from the cached inode, a hint (the change checks again):
        writes of small files and overwrites never come to the lock."""
        with self._thread_lock():
            cached = self.inodes.cache.get(ino)
            if max(off + n, cached.size if cached is not None else 0) < CHUNK:
                return
            want = _unmapped_windows(cached, off, off + n) if cached is not None else 1
            if want < self.leases.whole_windows():  # (one spare: lease_chunks)
                return
        with self._locked(exclusive=True):
            inode = self._inode(ino)
            want = _unmapped_windows(inode, off, off + n)
            if want and max(inode.size, off + n) >= CHUNK:
                hint = _chunk_hint(inode, _align_down(off, CHUNK))
                self.leases.lease_chunks(want, None if hint is None else self._block(hint))

    def _overwrite(self, ino: int, off: int, data: memoryview) -> bool:
        """A write wholly over bytes the file has, with no change to commit:
        no space to take, no size to change, no window to migrate, so only
        the bytes are stored, under the shared pool lock (frees happen under
        the exclusive one: the blocks stay the file's meanwhile), and the
        times kept for later, as lazytime does (_write_piece keeps an
        overwrite's times so too).  Durable as _write_piece's stores: on
        return on pmem, at flush/close/fsync on the page cache.  False when
        it is not such a write: the change does it."""
        inode = self._inode(ino)
        n = len(data)
        end = off + n
        if not n or end > inode.size or n > self.WRITE_PIECE:
            return False
        if inode.size >= CHUNK and self.allocator.name == "hugepage":
            for w in range(_align_down(off, CHUNK), end, CHUNK):
                if w + CHUNK <= inode.size and self._small_window(inode, w):
                    return False  # a window the change would move into a chunk
        if inode.device_at(off, n) is None and inode.next_hole(off) < end:
            return False  # a hole to allocate: the change does it
        if self._stores_over_pending_checks(inode, off, end):
            return False  # a check to confirm first, under the exclusive lock
        touched = self._copy_in(inode, off, data)
        if self._batching or self.region.durability.name != "msync":
            if not self.region.volatile:  # (tmpfs: nothing to order)
                self._order_data(touched)
        else:
            self._dirty_data.extend(touched)  # page cache: durable at fsync/close
        inode.mtime = inode.atime = inode.ctime = _now()
        self._dirty_times.add(ino)
        return True

    def _write_change(self, ino: int, off: int, data: memoryview) -> None:
        with self._change() as txn:
            self._write_piece(txn, self._inode(ino), off, data)

    def _write_piece(self, txn: Transaction, inode: Inode, off: int, data: memoryview) -> None:
        """Write ``data`` at ``off`` in ``txn``, as Linux's iomap does: the
        block map of the range is asked for once (iomap_begin: its holes
        are allocated on the way) and the stores act on that answer (the
        actor: zero what must read as zero, copy the data in).  A file
        growing to 2 MiB or more may have windows moved into chunks
        (_allocate): its map is asked for again once they are."""
        end = off + len(data)
        old_size, new_size = inode.size, max(inode.size, end)
        optimistic = self._reads is not None
        # What a small file's write stores into or zeroes: from the old end,
        # when it grows the file past it, to the end of its last block.
        lo, hi = _align_down(min(off, old_size), BLOCK), _align_up(end, BLOCK)
        small = new_size < CHUNK
        before = inode.iomap(lo, hi - lo) if small or optimistic else []
        over_existing = False
        if optimistic:
            # Stores over blocks the file has (an overwrite, an append into
            # its last block or chunk) are made under the shared lock, after
            # a check (coherence.Change._store_over_existing).
            kinds = {e.kind for e in before}
            over_existing = "mapped" in kinds
            if data and (end > old_size or "hole" in kinds):
                # New extents to come: a change undone half-way (Exclusive,
                # say) must drop our copy of the inode too.
                self._txn_dirty.add(inode.ino)
        generation = inode.generation
        self._confirm_in_place(inode, min(off, old_size), new_size)
        self._before_regrowing(inode, old_size, new_size)
        pieces: list[tuple[int, int, int]] | None = None  # (file offset, device offset, length)
        if not data:
            fresh: list[tuple[int, int]] = []
        elif small and inode.generation == generation:
            pieces, fresh = self._map_holes(txn, inode, before, off, end)
        else:
            fresh = self._allocate(txn, inode, off, len(data), new_size, writes=True)
        # New extents (fresh space or a migrated window) make this no plain
        # overwrite: what was stored there is persisted before the commit.
        grows = new_size != old_size or inode.generation != generation
        stores = (inode, off, data, pieces, fresh, (old_size, new_size), grows)
        if optimistic:
            # An optimistic change stores nothing before its check: the space
            # it took may be another process's by then (coherence.Change).
            # (Nothing else in the change remaps this range meanwhile.)
            self._txn_deferred.append(functools.partial(self._store_written, *stores))
            self._txn_over_existing |= over_existing
        else:
            self._store_written(*stores)
        inode.size = new_size
        inode.mtime = inode.atime = inode.ctime = _now()
        if grows:
            self._txn_dirty.add(inode.ino)
        else:
            self._dirty_times.add(inode.ino)

    def _store_written(
        self,
        inode: Inode,
        off: int,
        data: memoryview,
        pieces: list[tuple[int, int, int]] | None,
        fresh: list[tuple[int, int]],
        sizes: tuple[int, int],
        grows: bool,
    ) -> None:
        """_write_piece's stores (its actor): zero what must read as zero in
        the space it mapped, copy ``data`` in at ``off``, and order or note
        the data written.  ``pieces``: the mapped pieces of a small file's
        write (None: ask the map again); ``sizes``: the file's size before
        and after.  A method with its arguments bound, not a closure: mypyc
        compiles no closure in a method of a trait (compiled_trial.py)."""
        old_size, new_size = sizes
        written = [(off, off + len(data))] if data else []
        if pieces is None:
            # An empty write, or a large file's: its map asked again,
            # for what must read as zero (a window completed in place
            # may have holes below the write) and for the copy.
            touched = self._zero_unwritten(inode, fresh, old_size, new_size, written)
            if data:
                touched += self._copy_in(inode, off, data)
        else:
            zero = _unwritten(fresh, old_size, new_size, written)  # (inside the blocks written)
            touched = self._zero_pieces(pieces, zero) if zero else []
            touched += self._copy_pieces(pieces, off, data)
        if self._batching or grows or self.region.durability.name != "msync":
            self._order_data(touched)  # ordered: data before metadata
        else:
            self._dirty_data.extend(touched)  # page cache: durable at fsync/close

    def _map_holes(
        self, txn: Transaction, inode: Inode, extents, off: int, end: int
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """iomap_begin for a write into a small file: ``extents`` is the
        file's map (inode.iomap) of a range holding [off, end); the holes
        of the blocks [off, end) touches get new blocks, placed after the
        extent just before them (as _map_blocks places them).  Returns the
        mapped pieces of the whole range, (file offset, device offset,
        length) in file order, and the file ranges newly mapped."""
        start, stop = _align_down(off, BLOCK), _align_up(end, BLOCK)
        pieces: list[tuple[int, int, int]] = []
        fresh: list[tuple[int, int]] = []
        for e in extents:
            if e.kind == "mapped":
                pieces.append((e.file_offset, e.device_offset, e.length))
                continue
            a, b = max(e.file_offset, start), min(e.file_offset + e.length, stop)
            if a >= b:
                continue  # a hole the write does not reach (between the old end and it)
            if pieces and pieces[-1][0] + pieces[-1][2] == a:
                hint: int | None = pieces[-1][1] + pieces[-1][2]
            else:
                hint = inode.device_before(a)
            runs = self._alloc_blocks(txn, (b - a) // BLOCK, hint)
            self._map_runs(inode, a, runs, fresh)
            for dev, n in runs:
                pieces.append((a, dev, n))
                a += n
        return pieces, fresh

    def _copy_pieces(self, pieces, off: int, data: memoryview) -> list[tuple[int, int]]:
        """The actor's copy: ``data`` into file offset ``off`` through the
        mapped ``pieces`` (_map_holes), which cover it; the device ranges
        written."""
        out, stored = [], 0
        for foff, dev, n in _overlapping(pieces, off, off + len(data)):
            self.region.store(dev, data[foff - off : foff - off + n])
            out.append((dev, n))
            stored += n
        if stored != len(data):
            raise AssertionError(f"a write of {len(data)} bytes at {off} met a hole")
        return out

    def _zero_pieces(self, pieces, ranges) -> list[tuple[int, int]]:
        """The actor's zeroing: the file ``ranges`` (sorted, disjoint) where
        ``pieces`` map them (a hole reads as zero already); the device
        ranges zeroed."""
        out = []
        for s, e in ranges:
            for _foff, dev, n in _overlapping(pieces, s, e):
                self.region.zero(dev, n)
                out.append((dev, n))
        return out

    def _copy_in(self, inode: Inode, off: int, data: memoryview) -> list[tuple[int, int]]:
        """Store ``data`` at file offset ``off``, all of it mapped; the device
        ranges written."""
        dev = inode.device_at(off, len(data))
        if dev is not None:  # one extent, the usual case: no iomap
            self.region.store(dev, data)
            return [(dev, len(data))]
        return self._copy_pieces(_mapped_pieces(inode.iomap(off, len(data))), off, data)

    def _zero_unwritten(
        self,
        inode: Inode,
        fresh: list[tuple[int, int]],
        old_size: int,
        new_size: int,
        written: list[tuple[int, int]],
    ) -> list[tuple[int, int]]:
        """Zero what must read as zero and was not just written (_unwritten)."""
        zero = _unwritten(fresh, old_size, new_size, written)
        if not zero:
            return []
        lo, hi = zero[0][0], zero[-1][1]
        return self._zero_pieces(_mapped_pieces(inode.iomap(lo, hi - lo)), zero)

    def _allocate(
        self,
        txn: Transaction,
        inode: Inode,
        off: int,
        length: int,
        new_size: int,
        *,
        writes: bool = False,
    ) -> list[tuple[int, int]]:
        """Map every hole in [off, off+length); return the file ranges newly mapped.
        ``writes``: the caller is about to write all of [off, off+length) (so a
        migrated window need not copy those bytes)."""
        start, stop = _align_down(off, BLOCK), _align_up(off + length, BLOCK)
        fresh: list[tuple[int, int]] = []
        large = new_size >= CHUNK
        if large:
            written = [(off, off + length)] if writes else []
            self._migrate(txn, inode, (start, stop), new_size, written, fresh)
        for hoff, hlen in inode.holes(start, stop - start):
            if large:
                self._allocate_large(txn, inode, hoff, hoff + hlen, fresh)
            else:
                self._map_blocks(txn, inode, hoff, hlen, fresh)
        if large and fresh and self.tails == "trim":
            self._tailed.add(inode.ino)  # its last chunk may reach past its end
        return fresh

    def _allocate_large(self, txn, inode: Inode, hstart: int, hend: int, fresh) -> None:
        pos = hstart
        while pos < hend:
            w0 = _align_down(pos, CHUNK)
            w1 = w0 + CHUNK
            stop = min(hend, w1)
            if not any(e.kind == "mapped" for e in inode.iomap(w0, CHUNK)):
                try:
                    runs = self._alloc_chunks(txn, 1, _chunk_hint(inode, w0))
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    # No room for a whole window: blocks for just what is asked.
                    self._map_blocks(txn, inode, pos, stop - pos, fresh)
                else:
                    self._map_runs(inode, w0, runs, fresh)
                    if len(runs) != 1:  # (whole chunks ran short)
                        self._fragmented.setdefault(inode.ino, set()).add(w0)
            else:
                self._map_blocks(txn, inode, pos, stop - pos, fresh)
            pos = stop

    def _map_blocks(self, txn, inode: Inode, foff: int, length: int, fresh) -> None:
        runs = self._alloc_blocks(txn, length // BLOCK, inode.device_before(foff))
        self._map_runs(inode, foff, runs, fresh)

    def _map_runs(self, inode: Inode, foff: int, runs, fresh) -> None:
        for dev, n in runs:
            inode.add_extent(foff, dev, n)
            fresh.append((foff, foff + n))
            foff += n

    def _truncate_inode(self, txn: Transaction, inode: Inode, length: int) -> None:
        if length < 0:
            raise oserror(errno.EINVAL)
        refuse_past_largest_file(length)
        if length < inode.size:
            keep = _align_up(length, CHUNK if length >= CHUNK else BLOCK)
            tail = _align_up(length, BLOCK)
            trimmed = False
            if self.tails == "trim" and keep > tail and not self._open.get(inode.ino):
                # Not open here (a truncate by path): its tail goes now, as a
                # close would take it, unless mapped or open elsewhere.
                trimmed = not self._tail_in_use(inode, inode.tail_ranges(tail))
                if trimmed:
                    keep = tail
            if self._batching and keep > length:
                # Bytes past the new end stay in kept blocks: _before_regrowing.
                # (Truncating to 0, as open "wb" does, keeps none.)
                self._shrunk.add(inode.ino)
            self._refuse_if_mapped(inode.tail_ranges(keep), inode.ino)
            if trimmed:
                self._cut_tail(txn, inode, keep)
            else:
                for dev, n in inode.cut_from(keep):
                    self._free(txn, dev, n)
            if keep > tail and self.tails == "trim":
                self._tailed.add(inode.ino)  # the kept chunk's tail: trimmed at close
        fresh: list[tuple[int, int]] = []
        if inode.size <= length and length >= CHUNK:
            self._migrate(txn, inode, None, length, [], fresh)
        self._resize_zeroed(inode, fresh, length)
        self._touch(inode)

    # ======================================================================
    # migration: small-block windows of a large file into whole chunks
    # ======================================================================
    # Blocks kept free beyond what a migration and the caller's own holes
    # need (extent blocks the changed extent list may take).
    MIGRATE_SLACK = 16

    def _migrate(
        self,
        txn: Transaction,
        inode: Inode,
        touched: tuple[int, int] | None,
        new_size: int,
        written: list[tuple[int, int]],
        fresh: list[tuple[int, int]],
    ) -> None:
        """Move into whole chunks the windows of a file becoming ``new_size``
        (>= 2 MiB) that are mapped by small blocks and lie wholly inside it.

        Candidates, so that the cost stays bounded: the windows of the range
        the caller ``touched`` (a write, fallocate or writable map) and, when
        the file grows, the window holding its old last byte (the only window
        a size change alone can complete; at the 2 MiB crossing, window 0).
        ``written`` is what the caller is about to overwrite: not copied.

        A window whose blocks all lie where one aligned chunk would hold
        them (a chunk whose tail was trimmed at a close, appended to since)
        is completed in place when the rest of that chunk is free: its holes
        are mapped there (into ``fresh``, the caller zeroes them) and nothing
        is copied (_complete_in_place).  Any other window is copied (holes as
        zeroes, bytes up to the old size) and persisted here, before the
        commit; the caller's transaction then swaps the extents and frees the
        old blocks after it commits.  Skipped, silently (it is an
        optimization): on the naive allocator; a window that any Mapping
        pins; and whenever taking a chunk could leave the caller short (the
        whole chunks its entirely unmapped windows will take, the blocks its
        holes will take, a little slack)."""
        if self.allocator.name != "hugepage":
            return
        windows: set[int] = set()
        if touched is not None:
            windows.update(range(_align_down(touched[0], CHUNK), touched[1], CHUNK))
        if new_size > inode.size > 0:
            windows.add(_align_down(inode.size - 1, CHUNK))
        todo = [
            w for w in sorted(windows) if w + CHUNK <= new_size and self._small_window(inode, w)
        ]
        if not todo:
            return
        self._need_exclusive()  # the copy reads blocks a commit may free
        t0, t1 = touched if touched is not None else (0, 0)
        # The whole chunks _allocate_large will give entirely unmapped windows.
        reserve = _unmapped_windows(inode, t0, t1)
        need = _hole_blocks(inode, t0, t1)  # at most what the caller's holes will take
        for w in todo:
            # The window's own holes need no blocks once it is a chunk.
            own = _hole_blocks(inode, max(w, t0), min(w + CHUNK, t1))
            a = self.allocator
            # In place, the window takes its holes: the caller's and the rest.
            extra = _hole_blocks(inode, w, w + CHUNK) - own
            if a.free_blocks >= need + extra + self.MIGRATE_SLACK and self._complete_in_place(
                txn, inode, w, fresh
            ):
                need -= own
                continue
            if a.free_chunks <= reserve or (
                a.free_blocks < BLOCKS_PER_CHUNK + need - own + self.MIGRATE_SLACK
            ):
                self._fragmented.setdefault(inode.ino, set()).add(w)  # later: _consolidate
                continue
            if self._migrate_window(txn, inode, w, written):
                need -= own

    def _complete_in_place(
        self, txn: Transaction, inode: Inode, w0: int, fresh: list[tuple[int, int]]
    ) -> bool:
        """Window w0 whose mapped blocks all lie at their places in one
        aligned chunk (its offset in the window is its offset in the chunk):
        map each of its holes at its place in that chunk, if those blocks
        are all free, so that the window becomes the chunk whole, with
        nothing copied.  That is a large file's last chunk after its tail
        was trimmed (_trim_tails) and appends took the blocks after its last
        one again.  False, with nothing taken, otherwise."""
        win = inode.iomap(w0, CHUNK)
        base = None
        for e in win:
            if e.kind == "mapped":
                at = e.device_offset - (e.file_offset - w0)  # type: ignore[operator]
                if at % CHUNK or (base is not None and at != base):
                    return False
                base = at
        if base is None:
            return False
        holes = [
            (e.file_offset, base + (e.file_offset - w0), e.length) for e in win if e.kind == "hole"
        ]
        mark, placed = len(txn.allocated), False
        try:
            for _foff, home, n in holes:
                if self._alloc_blocks(txn, n // BLOCK, home) != [(home, n)]:
                    return False  # a block of its place is in use
            placed = True
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            return False
        finally:
            if not placed:
                # Taken, but not where they belong: given back at once, never
                # in the record (a record never frees what it claims).
                for b, k in txn.allocated[mark:]:
                    self.allocator.free(b, k)
                del txn.allocated[mark:]
        for foff, home, n in holes:
            inode.add_extent(foff, home, n)
            fresh.append((foff, foff + n))
        self._txn_dirty.add(inode.ino)
        return True

    def _small_window(self, inode: Inode, w0: int) -> bool:
        """Is window [w0, w0 + 2 MiB) mapped, but not by one aligned whole chunk?"""
        if inode.maps_whole_chunk(w0):  # (the usual answer, without an iomap)
            return False
        win = inode.iomap(w0, CHUNK)
        if len(win) == 1:
            e = win[0]
            return e.kind == "mapped" and e.device_offset % CHUNK != 0  # type: ignore[operator]
        return any(e.kind == "mapped" for e in win)

    def _chunk_at(self, inode: Inode, w0: int) -> int | None:
        """The device offset of the aligned whole chunk mapping window w0, if any."""
        if w0 < 0:
            return None
        win = inode.iomap(w0, CHUNK)
        dev = win[0].device_offset if len(win) == 1 else None
        return dev if dev is not None and dev % CHUNK == 0 else None

    def _migrate_window(
        self, txn: Transaction, inode: Inode, w0: int, written: list[tuple[int, int]]
    ) -> bool:
        old = merge_ranges(
            (e.device_offset, e.device_offset + e.length)
            for e in inode.iomap(w0, CHUNK)
            if e.kind == "mapped"
        )
        if any(pinned_by_others(self.region.fd, s, e - s) for s, e in old):
            return False  # mapped memory is never moved under its user
        if self.followers.maps(inode.ino):
            return False  # (nor under a follower's)
        prev, nxt = self._chunk_at(inode, w0 - CHUNK), self._chunk_at(inode, w0 + CHUNK)
        if prev is not None:
            hint = prev + CHUNK
        elif nxt is not None and nxt - CHUNK >= self.sb.data_off:
            hint = nxt - CHUNK
        else:
            hint = None
        ((dev, n),) = self._alloc_chunks(txn, 1, hint)
        assert n == CHUNK and dev % CHUNK == 0, (dev, n)
        # Copy what the file holds now, holes as zeroes, except what the caller
        # will overwrite; persisted before the commit that maps the chunk.
        buf, stored = self.region.buf, []
        wanted = [(w0, min(w0 + CHUNK, inode.size))] if inode.size > w0 else []
        for s, e in subtract_ranges(wanted, written):
            for x in inode.iomap(s, e - s):
                dst = dev + (x.file_offset - w0)
                if x.kind == "mapped":
                    src = x.device_offset
                    self.region.store(dst, buf[src : src + x.length])  # type: ignore[operator]
                else:
                    self.region.zero(dst, x.length)
                stored.append((dst, x.length))
        # Ordered: the copy before the commit; flushed now, fenced with the
        # change's own data (or just before its record): one fence for both.
        self._flush_data(stored)
        for s, ln in inode.unmap(w0, CHUNK):
            self._free(txn, s, ln)  # returned to the allocator after the commit
        inode.add_extent(w0, dev, CHUNK)
        self._txn_dirty.add(inode.ino)
        return True

    # ======================================================================
    # consolidation: whole chunks back for large files
    # ======================================================================
    # Moves per consolidation (each copies at most 2 MiB), and whole chunks
    # a heal leaves free for new files.
    CONSOLIDATE_BATCH = 8
    HEAL_RESERVE = 1

    def _consolidate(self) -> None:
        """After a delete, a truncate or a trim gave space back: one change of
        at most CONSOLIDATE_BATCH moves that gives large files whole chunks.
        While whole chunks are scarce, trimmed tails move out of the
        emptiest tail chunks into holes (_pack_tails); while whole chunks
        are free, windows that had to take small blocks move into chunks
        (_heal_windows).  Each move copies at most 2 MiB, once per tail
        trimmed or window fragmented, as a migration does; khugepaged
        collapses small pages into huge ones the same way, later, once huge
        ones are free.  At 90% full without it, new large files found no
        whole chunk (DESIGN.md, "Tails")."""
        a = self.allocator
        if self.readonly or self.closed or a.name != "hugepage":
            return
        scarce = a.whole_chunks_scarce()
        if not (scarce or self._fragmented):
            return  # (nothing due: every unlink pays this look)
        if self._said_freed:
            with self._thread_lock():
                self._release_said()  # (said unlinks' space: what this looks for)
            scarce = a.whole_chunks_scarce()
        tails_due = scarce and any(True for _c in self._tail_candidates())
        heal_due = bool(self._fragmented) and a.free_chunks > self.HEAL_RESERVE
        if not (tails_due or heal_due):
            return
        with self._thread_lock():
            if self._depth or self.closed:
                return  # (inside a call of ours: a file the collector closed)
            try:
                with self._change() as txn:
                    budget = self.CONSOLIDATE_BATCH
                    if tails_due:
                        budget -= self._pack_tails(txn, budget)
                    if heal_due:
                        self._heal_windows(txn, budget)
            except OSError as e:
                # The call that asked for it succeeded; a move that finds no
                # backing for its blocks (a sparse pool file's full disk) is
                # given up, whole: its change aborted.
                if e.errno != errno.ENOSPC:
                    raise

    def _pack_tails(self, txn: Transaction, budget: int) -> int:
        """Move trimmed tails out of the tail chunks holding the fewest blocks
        (least to copy), at most ``budget``, each only if its blocks are all
        its chunk holds and its file is not open here (it may grow into its
        chunk again), not open elsewhere and not mapped; how many moved.
        Owners are known from this mount's trims and its scan; a chunk that
        is found to hold no tail of its owner's forgets it, and one that
        could not move is not tried again until its free count changes."""
        a, moved = self.allocator, 0
        for c, ino in list(self._tail_candidates()):
            if moved == budget:
                break
            inode = self._inode(ino) if self._live(ino) else None
            window = self._last_window_in(inode, c)
            if window is None:
                a.tails[c] = None  # (its owner's tail is elsewhere, or gone)
            elif (
                tail_of(inode) is None  # (untrimmed: not ours to move, trims take it)
                and self._lone_chunk(window) == c
                and not self._open.get(ino)
                and not self._tail_in_use(inode, window)
                and self._move_tail_out(txn, inode, _align_up(inode.size, BLOCK))
            ):
                moved += 1
                continue
            self._unmovable[c] = a.chunk_free[c]
        return moved

    def _last_window_in(self, inode: Inode | None, c: int) -> list[tuple[int, int]] | None:
        """The device ranges of large file ``inode``'s last, partial window, if
        they begin in chunk c."""
        if inode is None or not stat.S_ISREG(inode.mode) or inode.size <= CHUNK:
            return None
        w0 = _align_down(inode.size - 1, CHUNK)
        window = inode.tail_ranges(w0)
        if not window or self._block(window[0][0]) // BLOCKS_PER_CHUNK != c:
            return None
        return window

    def _tail_candidates(self):
        """(chunk, owner) of the emptiest tail chunks, 4 * CONSOLIDATE_BATCH
        at most, but those with no owner known and those that could not
        move at their present free count."""
        a, room = self.allocator, self.allocator.tail_room
        for _free, c in room.islice(max(0, len(room) - 4 * self.CONSOLIDATE_BATCH), reverse=True):
            ino = a.tails.get(c)
            if ino is not None and self._unmovable.get(c) != a.chunk_free[c]:
                yield c, ino

    def _heal_windows(self, txn: Transaction, budget: int) -> None:
        """Move into whole chunks up to ``budget`` windows of large files that
        took small blocks when no whole chunk was free (``_fragmented``),
        leaving HEAL_RESERVE chunks free.  A window that is pinned, no
        longer wholly inside its file, or already a chunk leaves the list;
        the list is this process's and not on the media (a mount starts
        with none)."""
        todo = [(ino, w) for ino, ws in self._fragmented.items() for w in sorted(ws)]
        for ino, w0 in todo[:budget]:
            if self.allocator.free_chunks <= self.HEAL_RESERVE:
                return
            windows = self._fragmented[ino]
            windows.discard(w0)
            if not windows:
                del self._fragmented[ino]
            if self._live(ino):
                inode = self._inode(ino)
                if w0 + CHUNK <= inode.size and self._small_window(inode, w0):
                    self._migrate_window(txn, inode, w0, [])

    def _live(self, ino: int) -> bool:
        """Is ``ino`` an inode in use (said unlinks counted: slot_free_now)?"""
        return self.inodes.valid_ino(ino) and not self.inodes.slot_free_now(ino)

    def _refuse_if_mapped(self, ranges: list[tuple[int, int]], ino: int) -> None:
        """Memory a Mapping (of any process, or of a follower: of any part
        of the file) covers is never freed under it."""
        if self._mapped(ranges, ino):
            raise oserror(errno.EBUSY)

    def _mapped(self, ranges: list[tuple[int, int]], ino: int) -> bool:
        """Does a Mapping (of any process, or a follower's of any part of
        file ``ino``) cover any of the device ``ranges``?"""
        fd = self.region.fd
        if any(pinned_by_others(fd, dev, n) for dev, n in ranges):
            return True
        followers = self.followers  # (any() is one look; maps() reads every lease)
        return bool(ranges) and followers.any() and followers.maps(ino)

    def _resize_zeroed(self, inode: Inode, fresh, new_size: int) -> None:
        """Set the size after zeroing, and persisting before the commit (ordered),
        whatever must now read as zero: new space inside the file and the
        allocated bytes between the old and the new end."""
        self._confirm_in_place(inode, inode.size, new_size)
        self._before_regrowing(inode, inode.size, new_size)
        if new_size > inode.size or fresh:
            zeroed = self._zero_unwritten(inode, fresh, inode.size, new_size, [])
            self._order_data(zeroed)  # (a hole needs no zeroing)
        inode.size = new_size

    def _before_regrowing(self, inode: Inode, old_size: int, new_size: int) -> None:
        """Lazy mode: growing a file zeroes (or writes) in place the bytes past
        its end in the blocks it kept.  If it shrank since the last group
        commit, those bytes are inside the file as the media knows it, and a
        power loss would bring that file back with them changed: commit the
        shrink first (once; appends to a file that never shrank pay nothing)."""
        if self._batching and new_size > old_size and inode.ino in self._shrunk:
            if self._reads is not None:
                self._need_exclusive()  # (a group commit needs the exclusive lock)
            self._group_commit()

    def _confirm_in_place(self, inode: Inode, lo: int, hi: int) -> None:
        """Before storing over the blocks ``inode`` has in file range [lo, hi):
        if the newest durable record checks some of those bytes and nothing
        durable covers it yet, cover it (a durable mark), or a power loss
        could find that record last with its check failed by our store, and
        drop it (journal.py, "Checked records").  Rare: only right after a
        sync-mode change that put data into new space."""
        if self._stores_over_pending_checks(inode, lo, hi):
            self._need_exclusive()
            self.journal.confirm()

    def _stores_over_pending_checks(self, inode: Inode, lo: int, hi: int) -> bool:
        """Would storing over file range [lo, hi) of ``inode`` go over bytes
        the newest durable record checks, unconfirmed (Journal.unconfirmed)?
        The block map is asked only while checks are pending."""
        return (
            self.journal.pending_checks is not None
            and hi > lo
            and self.journal.unconfirmed(_device_ranges(inode, lo, hi))
        )

    def _settle_ordered(self, txn: Transaction) -> None:
        """Sync mode on the page cache, before the record is made: of the data
        the change stored (``_ordered``), what went into space it allocated
        is named in the record by checks, so the commit's one fdatasync
        makes data and record durable together; the rest (bytes of blocks
        the file had, and more than CHECKED_AT_MOST) is flushed now, before
        the record, as on every other backend."""
        ranges, self._ordered = self._ordered, []
        if not ranges:
            return
        data_off = self.sb.data_off
        fresh = merge_ranges((data_off + b * BLOCK, data_off + (b + n) * BLOCK)
                             for b, n in txn.allocated)  # fmt: skip
        spans = merge_ranges((off, off + n) for off, n in ranges)
        inside, outside = split_ranges(spans, fresh)
        if sum(e - s for s, e in inside) > self.CHECKED_AT_MOST:
            outside, inside = spans, []
        txn.checks.extend((s, e - s) for s, e in inside)
        if flush_ranges(self.region, [(s, e - s) for s, e in outside]):
            self.region.fence()

    def _flush_ordered(self) -> None:
        """Sync mode: flush what the change ordered so far instead of naming it
        in checks, for space that will be stored over with no change."""
        ranges, self._ordered = self._ordered, []
        if flush_ranges(self.region, ranges):
            self.region.fence()

    # A change's checked data is read again for its crc: past this, a flush
    # (which a large write amortises) costs less than the second read.
    CHECKED_AT_MOST = 4 * CHUNK

    def _order_data(self, ranges) -> None:
        """Make file data stored in ``ranges`` durable before the commit that
        exposes it; in lazy mode the next group commit does (journal.py), in
        sync mode the commit (_settle_ordered)."""
        if self._batching:
            self._unsynced = True
        elif self.journal.sync_records and self._changing:
            self._ordered.extend(ranges)
        elif flush_ranges(self.region, ranges) or self._unfenced:
            self.region.fence()
            self._unfenced = False

    def _flush_data(self, ranges) -> None:
        """_order_data without its fence: the change's next _order_data, or
        the commit (coherence.Change), fences it, so that a change makes at
        most two fences (its data, its record) on pmem."""
        if self._batching:
            self._unsynced = True
        elif self.journal.sync_records and self._changing:
            self._ordered.extend(ranges)
        elif flush_ranges(self.region, ranges):
            self._unfenced = True

    # ======================================================================
    # tails: the space of a large file's last chunk past its end
    # ======================================================================
    # Files trimmed per transaction (at unmount there may be many).
    TRIM_BATCH = 64

    def _trim_tails(self, inos) -> None:
        """With the mount option tails="trim": give back the tails of files
        ``inos``, the space of each one's extents past its size rounded up
        to 4 KiB (its last window's chunk past its end), as a truncate to
        its own size would that kept no chunk.  Called at a file's last
        close in this process, at fsync, when a mapping of it closes, and at
        unmount for the files this mount left a tail in (``_tailed``); never
        at a write, so that appends stay cheap.  A file that is mapped
        anywhere (in this process too) or open in another process keeps its
        tail, since a 2 MiB mapping covers the whole chunk, past the end
        too: it stays in ``_tailed``, for a later close or the unmount.  The
        blocks go the way a truncate's go: revoked in the record, freed
        after the commit (held until durable in lazy mode).  A read-only
        mount never trims (DESIGN.md, "Tails")."""
        if self.readonly or self.tails != "trim":
            return
        with self._thread_lock():
            if self.closed:
                return
            if self._depth:
                # Inside a call of ours on this thread (a file the garbage
                # collector closed): no change may start here; left for later.
                self._tailed.update(inos)
                return
            todo = [ino for ino in dict.fromkeys(inos) if self._may_have_tail(ino)]
            for i in range(0, len(todo), self.TRIM_BATCH):
                batch = todo[i : i + self.TRIM_BATCH]
                with self._change() as txn:
                    left = [ino for ino in batch if not self._trim_in(txn, ino)]
                self._tailed.difference_update(batch)
                self._tailed.update(left)
            if todo:  # (space given back; a close of a file with no tail costs nothing)
                self._consolidate()

    def _may_have_tail(self, ino: int) -> bool:
        """A hint, from the cached inode while no commit was made since our
        last call (else read under the shared lock, caught up: another
        process may have grown the file), that the change checks again
        under the exclusive lock."""
        inode = self.inodes.cache.get(ino)
        if inode is None or self.journal.peek() != self._seen_seq:
            with self._locked(exclusive=False):
                if not self._live(ino):
                    return False
                inode = self._inode(ino)
        return tail_of(inode) is not None

    def _trim_in(self, txn: Transaction, ino: int) -> bool:
        """Trim file ``ino``'s tail in ``txn``; False if it holds one that
        must stay (mapped, or open elsewhere)."""
        if not self._live(ino):
            return True  # gone
        inode = self._inode(ino)
        keep = tail_of(inode)
        if keep is None or inode.nlink == 0:
            return True  # none; or an orphan, freed whole by its last user
        if self._tail_in_use(inode, inode.tail_ranges(keep)):
            return False
        self._cut_tail(txn, inode, keep)
        self._txn_dirty.add(ino)
        return True

    def _cut_tail(self, txn: Transaction, inode: Inode, keep: int) -> None:
        """Free a large file's extents from ``keep`` (its size rounded up to
        4 KiB) on: its last window's chunk is then partly free, and its
        blocks go to small requests last (alloc.hold_tail); when whole
        chunks are scarce, what is left of the window moves out instead."""
        cut = inode.cut_from(keep)
        for dev, n in cut:
            c = self._block(dev) // BLOCKS_PER_CHUNK
            self.allocator.hold_tail(c, inode.ino)
            self._unmovable.pop(c, None)
            self._free(txn, dev, n)
        if self._whole_chunks_scarce():
            self._move_tail_out(txn, inode, keep, cut)

    def _whole_chunks_scarce(self) -> bool:
        a = self.allocator
        return a.name == "hugepage" and a.whole_chunks_scarce()

    def _move_tail_out(
        self, txn: Transaction, inode: Inode, keep: int, cut: Sequence[tuple[int, int]] = ()
    ) -> bool:
        """Move the blocks of a trimmed file's last window (below ``keep``, its
        size rounded up to 4 KiB) out of their chunk, into the holes of
        partly used chunks, other tails' included, so that the chunk is
        whole again after the commit.  Only when the file's blocks (the
        window's, and the ``cut`` ones being freed) are all that chunk
        holds, and never by splitting another whole chunk (alloc_packed).
        The bytes are copied to free blocks and flushed before the commit,
        and the old ones freed after it, as a migration does; the caller
        checked that nothing maps or pins the chunk (_tail_in_use).  True
        if moved.  Trimmed tails left in their chunks at 90% full left no
        whole chunk for new large files (DESIGN.md, "Tails")."""
        if keep % CHUNK == 0:
            return False
        w0 = _align_down(keep, CHUNK)
        moves = [
            (e.file_offset, e.device_offset, e.length)
            for e in inode.iomap(w0, keep - w0)
            if e.kind == "mapped"
        ]
        c = self._lone_chunk([(d, n) for _f, d, n in moves] + list(cut))
        if c is None:
            return False
        self._need_exclusive()  # the copy reads blocks a commit may free
        blocks = sum(n for _f, _d, n in moves) // BLOCK
        runs = self.leases.fenced(self.allocator.alloc_packed, blocks, c)
        if runs is None:
            return False
        mark = len(txn.allocated)
        try:
            taken = self._take(txn, runs)
        except OSError as e:  # (no backing for the blocks: a sparse pool file's full disk)
            if e.errno != errno.ENOSPC:
                raise
            for b, k in txn.allocated[mark:]:
                self.allocator.free(b, k)  # given back at once: never in the record
            del txn.allocated[mark:]
            return False
        pieces = _spread(moves, taken)
        buf = self.region.buf
        for _foff, src, dst, n in pieces:
            self.region.store(dst, buf[src : src + n])
        self._flush_data([(dst, n) for _f, _s, dst, n in pieces])  # fenced with the record
        for dev, n in inode.unmap(w0, keep - w0):
            self._free(txn, dev, n)
        for foff, _src, dst, n in pieces:
            inode.add_extent(foff, dst, n)
        self._txn_dirty.add(inode.ino)
        return True

    def _lone_chunk(self, ranges: list[tuple[int, int]]) -> int | None:
        """The chunk holding all of device ``ranges``, if they are all it holds."""
        if not ranges:
            return None
        chunks = {self._block(d) // BLOCKS_PER_CHUNK for d, _n in ranges}
        chunks |= {self._block(d + n - 1) // BLOCKS_PER_CHUNK for d, n in ranges}
        if len(chunks) != 1:
            return None
        (c,) = chunks
        used = BLOCKS_PER_CHUNK - int(self.allocator.chunk_free[c])
        return c if used == sum(n for _d, n in ranges) // BLOCK else None

    def _tail_in_use(self, inode: Inode, ranges: list[tuple[int, int]]) -> bool:
        """Is the file mapped anywhere (this process's mappings pin through
        descriptions of their own) or open in another process (the inode's
        slot byte), or any of the device's mapping units holding its tail
        pinned?  A mapping maps whole units (Region.map_unit): on
        device-dax the device's (2 MiB or more), so another file's mapping
        there reaches these blocks too; elsewhere 4 KiB pages, its own
        blocks only (a small file mapped beside a tail in its chunk kept
        that tail once).  Pins are taken under the pool lock, so under the
        exclusive lock the answer holds until the commit."""
        fd, unit = self.region.fd, self.region.map_unit
        if self._open_elsewhere(inode.ino):  # (in another process, or by a follower)
            return True
        for dev, n in ranges:
            lo, hi = _align_down(dev, unit), _align_up(dev + n, unit)
            if pinned_by_others(fd, lo, hi - lo):
                return True
        return False

    def _trim_after_unmap(self, ino: int) -> None:
        """A mapping of file ``ino`` closed: a tail it kept goes now, unless
        the file is open in this process (its last close trims it)."""
        if self.tails == "trim" and not self.closed and not self._open.get(ino):
            self._trim_tails([ino])


def _device_ranges(inode: Inode, lo: int, hi: int) -> list[tuple[int, int]]:
    """(device offset, length) of the blocks ``inode`` has in [lo, hi)."""
    dev = inode.device_at(lo, hi - lo)
    if dev is not None:
        return [(dev, hi - lo)]
    return [(e.device_offset, e.length) for e in inode.iomap(lo, hi - lo) if e.kind == "mapped"]


def split_ranges(
    ranges: list[tuple[int, int]], within: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(inside, outside): the parts of sorted, disjoint (start, end)
    ``ranges`` inside sorted, disjoint ``within`` and the rest, in one pass
    over both (a large write's ranges and runs are both many)."""
    inside: list[tuple[int, int]] = []
    outside: list[tuple[int, int]] = []
    i = 0
    for s, e in ranges:
        while i < len(within) and within[i][1] <= s:
            i += 1
        at, j = s, i
        while j < len(within) and within[j][0] < e:
            lo, hi = max(at, within[j][0]), min(e, within[j][1])
            if at < lo:
                outside.append((at, lo))
            inside.append((lo, hi))
            at = hi
            j += 1
        if at < e:
            outside.append((at, e))
    return inside, outside


def subtract_ranges(
    ranges: list[tuple[int, int]], cut: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The parts of sorted, disjoint (start, end) ``ranges`` outside sorted,
    disjoint ``cut``."""
    return split_ranges(ranges, cut)[1]


def tail_of(inode: Inode) -> int | None:
    """Where a regular file's tail starts (its size rounded up to 4 KiB),
    if it maps anything from there on; else None."""
    if not inode.extents or not stat.S_ISREG(inode.mode):
        return None
    keep = _align_up(inode.size, BLOCK)
    foff, _doff, n = inode.extents[-1]  # (sorted: the last one ends last)
    return keep if foff + n > keep else None


def _spread(moves, runs) -> list[tuple[int, int, int, int]]:
    """Extents ``moves`` (file offset, device offset, length) laid in order
    over new device ``runs`` (offset, length): pieces (file offset, old
    device offset, new device offset, length)."""
    out, free = [], iter(runs)
    dst = room = 0
    for foff, src, n in moves:
        while n:
            if not room:
                dst, room = next(free)
            k = min(n, room)
            out.append((foff, src, dst, k))
            foff, src, n, dst, room = foff + k, src + k, n - k, dst + k, room - k
    return out


def _hole_blocks(inode: Inode, start: int, stop: int) -> int:
    """How many 4 KiB blocks of the block-aligned [start, stop) are holes."""
    if stop <= start:
        return 0
    return sum(n for _o, n in inode.holes(start, stop - start)) // BLOCK


def _chunk_hint(inode: Inode, w0: int) -> int | None:
    """Where window w0's chunk would best go: right after the file's
    previous extent, when that ends on a chunk boundary (device offset)."""
    hint = inode.device_before(w0)
    return hint if hint and hint % CHUNK == 0 else None


def _unmapped_windows(inode: Inode, start: int, stop: int) -> int:
    """How many 2 MiB windows of [start, stop) ``inode`` maps nothing in."""
    w0 = _align_down(start, CHUNK)
    return sum(
        1 for w in range(w0, stop, CHUNK) if all(e.kind == "hole" for e in inode.iomap(w, CHUNK))
    )


def _unwritten(
    fresh: list[tuple[int, int]], old_size: int, new_size: int, written: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The file ranges a write or resize must zero: newly mapped space
    inside the old size, and the space between the old and the new size,
    less what is ``written``; sorted and disjoint."""
    wanted = [(s, min(e, old_size)) for s, e in fresh if s < old_size]
    if not wanted and len(written) == 1 and written[0][0] <= old_size <= new_size <= written[0][1]:
        return []  # an append (a new file's first write): it writes all it adds
    if new_size > old_size:
        wanted.append((old_size, new_size))
    return subtract_ranges(merge_ranges(wanted), written)


def _mapped_pieces(extents) -> list[tuple[int, int, int]]:
    """(file offset, device offset, length) of the mapped ones of ``extents``."""
    return [(e.file_offset, e.device_offset, e.length) for e in extents if e.kind == "mapped"]


def _overlapping(pieces, s: int, e: int):
    """The parts of mapped ``pieces`` (in file order) inside file range
    [s, e), as (file offset, device offset, length)."""
    i = max(0, bisect.bisect_right(pieces, s, key=_first) - 1)
    for foff, dev, n in pieces[i:]:
        if foff >= e:
            break
        a, b = max(s, foff), min(e, foff + n)
        if a < b:
            yield a, dev + (a - foff), b - a


_first = operator.itemgetter(0)  # a piece's file offset


def _align_down(n: int, a: int) -> int:
    return n - n % a


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def seek_in(inode: Inode, off: int, hole: bool) -> int:
    """lseek's SEEK_DATA (``hole`` False) or SEEK_HOLE from ``off`` in ``inode``."""
    size = inode.size
    if not 0 <= off < size:
        raise oserror(errno.ENXIO)
    found = inode.next_hole(off) if hole else inode.next_data(off)
    if found is None or found >= size:
        if hole:
            return size
        raise oserror(errno.ENXIO)
    return found
