"""dir: directory entries.

A directory's data is a sequence of 4 KiB blocks (its extents, like any
file's), each a checksummed header followed by packed entries
(ino, name_len, ftype, name).  Removing an entry zeroes its ino in place (a
tombstone); a block is compacted only when a new entry needs the room.  So
an insert stages the new entry bytes plus the 24-byte header, a removal 8
bytes plus the header: journal records stay small however big the
directory grows.

In memory a Directory is a dict from name to (ino, ftype, block, pos),
loaded whole on first use, so lookups are O(1) at any size ("." and ".."
are not stored: the parent is a field of the directory's inode).  Loading
validates every block, and refuses names that are invalid or repeated and
two names for one directory: each would make a walk of the tree meet a
directory twice (forty directories each naming the next twice hold 2^40
paths).
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable

from .journal import Transaction
from .layout import (
    BLOCK,
    DIRBLOCK_HEAD,
    DIRENT_HEAD,
    MAX_DIRENT,
    CorruptionError,
    check_dirblock,
    dirblock_seal,
    parse_dirblock,
    valid_name,
)
from .path import LNK_T

DIR_FTYPE = 4  # (S_IFDIR >> 12): the entry's type field for a directory
# Entries naming a directory or a symlink that any Directory of this process
# dropped (removed, or replaced by another), ever.  A path leads through
# directories and symlinks only, so while this count stays put every path
# that resolved still leads where it did, whatever names were added or
# which files went: the path cache (FileSystem._cached_entry) holds across
# such edits, and across the commit that makes them (coherence.Change).
_path_drops = [0]


def path_drops() -> int:
    return _path_drops[0]


Entry = tuple[int, int, int, int]  # ino, ftype, block index, position in block
# Allocates and maps the directory's next blocks (one or more), returns their device offsets.
NewBlock = Callable[[Transaction], list[int]]


class Directory:
    def __init__(self, ino: int):
        self.ino = ino
        self.entries: dict[str, Entry] = {}
        # Which name each subdirectory has here: a directory is named once,
        # or walks multiply.  Kept as entries change (_enter, _drop), so
        # that taking in another process's new subdirectory (refresh) is
        # checked without parsing the directory whole.
        self.subdirs: dict[int, str] = {}
        self.images: list[bytearray] = []
        self.devs: list[int] = []
        self.used: list[int] = []
        self.live: list[int] = []
        self.dead: list[int] = []  # tombstoned bytes per block, reclaimable by compaction
        # Blocks that may have room for an entry of ROOM_STEPS[k] bytes, at
        # their tail (_tail_room[k]) and once compacted (_hole_room[k]):
        # every edit that makes room lists its block, and a placement drops
        # those it finds without (_room_among).  So a placement costs O(1)
        # amortized however many blocks a churned directory has, where a
        # scan of them cost O(blocks) a create: a directory emptied oldest
        # first, as a cache is, made each create walk back over every full
        # block to the emptied ones.
        self._tail_room: list[set[int]] = [set() for _ in ROOM_STEPS]
        self._hole_room: list[set[int]] = [set() for _ in ROOM_STEPS]
        # The block a placement last took from those lists, tried first
        # until full: names made in a row share a block (one block for an
        # absorb to write, logical.py), where the lists' order would deal
        # them out over every block with room.
        self._last_room = -1
        self._index: dict[int, int] = {}  # device offset -> block, built by refresh
        # While an optimistic change edits this directory (track): its edits,
        # to replay, and what they overwrote, to roll them back.
        self.ops: list[tuple] | None = None
        self.rebasable = False
        self._saved: dict[int, tuple[bytes, int, int, int]] = {}  # block -> image, used, live, dead
        self._saved_names: dict[str, Entry | None] = {}  # name -> its entry before (None: none)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, ino: int, buf, devs: list[int]) -> Directory:
        d = cls(ino)
        d.take_blocks([(dev, bytearray(buf[dev : dev + BLOCK])) for dev in devs])
        return d

    def take_blocks(self, blocks: list[tuple[int, bytearray]]) -> None:
        """Add ``blocks`` (device offset, image) at the end, parsed and
        checked as a load parses them (CorruptionError): a load's, or the
        blocks another process's record gave the directory (coherence.py)."""
        for dev, image in blocks:
            b = len(self.images)
            self.images.append(image)
            self.devs.append(dev)
            self.used.append(0)
            self.live.append(0)
            self.dead.append(0)
            self._take_block(b)

    def _take_block(self, b: int) -> list[tuple[str, int, int, int]]:
        """Parse block ``b``'s image and enter its names; return them as
        (name, ino, ftype, pos).  A name that is invalid or already present
        is damage (CorruptionError), as is a second name for a directory."""
        image, dev = self.images[b], self.devs[b]
        used, entries = parse_dirblock(image, dev, self.ino)
        live_bytes = 0
        out = []
        for pos, eino, ftype, raw in entries:
            name = raw.decode("utf-8", "surrogateescape")
            if not valid_name(raw) or name in self.entries:
                raise CorruptionError(f"directory {self.ino}: bad or duplicate name {raw!r}", dev)
            self._enter(name, (eino, ftype, b, pos))
            live_bytes += DIRENT_HEAD.size + len(raw)
            out.append((name, eino, ftype, pos))
        self.used[b], self.live[b] = used, len(entries)
        self.dead[b] = used - DIRBLOCK_HEAD.size - live_bytes
        self._note_room(b)
        return out

    def refresh(self, written: dict[int, list[tuple[int, bytes]]]) -> bool:
        """Take in what another process's records wrote in our blocks:
        ``written`` maps a block's device offset to the (device offset,
        bytes) writes into it, in record order.  False when that is not
        enough and the directory must be loaded again whole: a block does
        not check, or names a directory another name here names too.

        The writes are laid over our copy of each block, not read back from
        the media: a block read with no pool lock may hold a later, not yet
        published record's bytes, while our copy plus the records is
        exactly what they committed.  Entries a record added at the tail,
        removed (a tombstone) or retargeted are then taken one by one
        (_refresh_entries); only a block compacted, new, or written some
        other way is parsed again whole.  So following one directory that
        another process fills costs O(entries it wrote), not O(the block)
        per record."""
        if not written:
            return True
        if len(self._index) != len(self.devs):
            self._index = {dev: b for b, dev in enumerate(self.devs)}
        try:
            for dev, writes in written.items():
                b = self._index.get(dev)
                if b is None:
                    continue
                image = bytearray(self.images[b])
                for off, data in writes:
                    image[off - dev : off - dev + len(data)] = data
                if len(writes[-1][1]) == BLOCK and self._holds_as_is(b, image):
                    self.images[b] = image  # (sealed now, as written)
                elif not self._refresh_entries(b, image, writes):
                    self._reparse(b, image)
        except CorruptionError:
            return False
        return True

    def _holds_as_is(self, b: int, image: bytearray) -> bool:
        """Does ``image``, block ``b`` written whole, hold exactly the
        entries our copy holds, byte for byte?  So it is when an absorb
        writes a block whose said changes we made again: a create's record
        names its block, and every copy places a name where its writer
        did.  Then only the header changes for us (sealed), and no name
        need be dropped and entered again (a reparse, for every name of
        every lagging block, in every process, at every absorb).
        CorruptionError if the image does not check."""
        used, live = check_dirblock(image, self.devs[b], self.ino)
        mine, head = self.used[b], DIRBLOCK_HEAD.size
        return (
            used == mine and live == self.live[b] and image[head:mine] == self.images[b][head:mine]
        )

    def _reparse(self, b: int, image: bytearray) -> None:
        """Take block ``b`` again whole from ``image`` (CorruptionError if
        it does not check, or names a directory named elsewhere here).  The
        names our copy holds there go first, read from our image as far as
        we use it, unchecked: a block said changes edited in memory is
        sealed only when written (its header and checksum are stale until
        then), and such a block is what an absorb writes whole."""
        old, pos, used = self.images[b], DIRBLOCK_HEAD.size, self.used[b]
        while pos < used:  # (each step passes at least an entry's head)
            ino, nlen, _ftype = DIRENT_HEAD.unpack_from(old, pos)
            end = pos + DIRENT_HEAD.size + nlen
            if ino:
                name = bytes(old[end - nlen : end]).decode("utf-8", "surrogateescape")
                if self.entries.get(name, (0, 0, -1, -1))[2:] == (b, pos):
                    self._drop(name)
            pos = end
        self.images[b] = image
        self._take_block(b)

    def _refresh_entries(self, b: int, image: bytearray, writes) -> bool:
        """Take into block ``b`` the entries the ``writes`` changed, reading
        them from its new ``image`` (our copy with the writes laid over);
        False (nothing changed) when the writes are not entry heads
        rewritten in place and entries appended, or anything does not
        check: the caller parses the block."""
        dev, old = self.devs[b], self.images[b]
        used, live = check_dirblock(image, dev, self.ino)
        head, old_used = DIRBLOCK_HEAD.size, self.used[b]
        if used < old_used:
            return False  # compacted
        changed: list[tuple[str, int, int, int]] = []  # name, pos, new ino, ftype
        seen: set[int] = set()
        for off, data in writes:
            pos, n = off - dev, len(data)
            if pos + n <= head or pos >= old_used:
                continue  # the header; appended entries are read below
            # An entry head rewritten in place (removed or retargeted): its
            # name bytes must be those our copy has at that position.
            if pos in seen:
                continue  # written again by a later record: read once, as it is now
            seen.add(pos)
            if pos < head or n > DIRENT_HEAD.size or pos + DIRENT_HEAD.size > old_used:
                return False
            oino, nlen, _of = DIRENT_HEAD.unpack_from(old, pos)
            end = pos + DIRENT_HEAD.size + nlen
            if (
                not oino
                or image[pos + 8] != nlen
                or image[end - nlen : end] != old[end - nlen : end]
            ):
                return False
            name = bytes(old[end - nlen : end]).decode("utf-8", "surrogateescape")
            if self.entries.get(name, (0, 0, -1, -1))[2:] != (b, pos):
                return False
            ino, _nlen, ftype = DIRENT_HEAD.unpack_from(image, pos)
            changed.append((name, pos, ino, ftype))
        removed = {c[0] for c in changed if not c[2]}
        appended = self._appended(image, old_used, used, removed)
        if appended is None:
            return False
        added, dead = appended
        if self.live[b] + len(added) - len(removed) != live:
            return False
        dead += self.dead[b]
        for name, pos, ino, _ftype in changed:
            self._drop(name)
            if not ino:
                dead += DIRENT_HEAD.size + image[pos + 8]
        for name, pos, ino, ftype in changed:
            if ino:
                self._enter(name, (ino, ftype, b, pos))
        for name, ino, ftype, pos in added:
            self._enter(name, (ino, ftype, b, pos))
        self.images[b], self.used[b], self.live[b], self.dead[b] = image, used, live, dead
        self._note_room(b)
        return True

    def _appended(self, image, start: int, used: int, removing: set[str]):
        """The live entries in ``image`` between ``start`` and ``used`` as
        (name, ino, ftype, pos), checked as a load checks them, and the bytes
        of the tombstones among them.  None when they are not plain new
        names (a name we hold, damage)."""
        out, pos, dead = [], start, 0
        while pos < used:
            if pos + DIRENT_HEAD.size > used:
                return None
            ino, nlen, ftype = DIRENT_HEAD.unpack_from(image, pos)
            end = pos + DIRENT_HEAD.size + nlen
            if nlen == 0 or end > used:
                return None
            if ino:
                raw = bytes(image[pos + DIRENT_HEAD.size : end])
                name = raw.decode("utf-8", "surrogateescape")
                if not valid_name(raw):
                    return None
                if name in self.entries and name not in removing:
                    return None
                out.append((name, ino, ftype, pos))
            else:
                dead += end - pos
            pos = end
        if len({e[0] for e in out}) != len(out):
            return None
        return out, dead

    def _enter(self, name: str, entry: Entry, checked: bool = True) -> None:
        """Set ``name``'s entry (it has none).  CorruptionError if it names a
        directory that another name here names already, unless ``checked``
        is false: our own edits, where a rename within the directory adds
        the new name before it removes the old one."""
        if entry[1] == DIR_FTYPE:
            other = self.subdirs.setdefault(entry[0], name)
            if other != name and not checked:
                self.subdirs[entry[0]] = name
            elif other != name:
                raise CorruptionError(
                    f"directory {self.ino}: two names for directory {entry[0]}",
                    self.devs[entry[2]],
                )
        self.entries[name] = entry

    def _drop(self, name: str) -> Entry:
        entry = self.entries.pop(name)
        if entry[1] == DIR_FTYPE or entry[1] == LNK_T:
            _path_drops[0] += 1
        if entry[1] == DIR_FTYPE and self.subdirs.get(entry[0]) == name:
            del self.subdirs[entry[0]]
        return entry

    def lookup(self, name: str) -> tuple[int, int] | None:
        e = self.entries.get(name)
        return None if e is None else (e[0], e[1])

    # -- changes -----------------------------------------------------------
    def add(self, name: str, ino: int, ftype: int, txn: Transaction, new_block: NewBlock) -> None:
        raw = name.encode("utf-8", "surrogateescape")
        need = DIRENT_HEAD.size + len(raw)
        b = self._block_with_room(need, txn, new_block)
        if self.ops is not None:
            self._keep(b, name)
            self.ops.append((name, ino, ftype))
        pos = self._put(b, name, raw, ino, ftype)
        self._seal(b)
        self._write(txn, self.devs[b] + pos, self.images[b][pos : pos + need])
        self._stage_header(b, txn)

    def _put(self, b: int, name: str, raw: bytes, ino: int, ftype: int) -> int:
        """Write the entry at the end of block ``b``'s image (it has room)
        and enter it; its position.  The header is sealed by whoever
        writes the block."""
        image, pos, n = self.images[b], self.used[b], len(raw)
        DIRENT_HEAD.pack_into(image, pos, ino, n, ftype)
        start = pos + DIRENT_HEAD.size
        image[start : start + n] = raw
        self.used[b] = start + n
        self.live[b] += 1
        self._enter(name, (ino, ftype, b, pos), checked=False)
        return pos

    def remove(self, name: str, txn: Transaction) -> int:
        if self.ops is not None:
            self._keep(self.entries[name][2], name)
            self.ops.append((name, None, None))
        ino, b, pos = self._tombstone(name)
        self._seal(b)
        self._write(txn, self.devs[b] + pos, self.images[b][pos : pos + 8])
        self._stage_header(b, txn)
        return ino

    def place(self, name: str, ino: int, ftype: int, room=None) -> int | None:
        """Add ``name`` as ``add`` does, in memory only, in a block with room
        (compacted in memory if its tombstones make the room), and return
        that block, whose home no longer matches: a create said in the
        journal (logical.py).  None, with nothing done, when only a new
        block would hold it.  ``room``: what ``room_for`` found for the
        name, when the caller asked it first (nothing changed since)."""
        raw = name.encode("utf-8", "surrogateescape")
        found = self.room_for(raw) if room is None else room
        if found is None:
            return None
        b, compact = found
        if compact:
            self._compact_image(b)
        self._put(b, name, raw, ino, ftype)
        return b

    def room_for(self, raw: bytes) -> tuple[int, bool] | None:
        """Where an entry named ``raw`` would go among the blocks there are
        (place): (block, whether it must be compacted first), or None."""
        return self._existing_room(DIRENT_HEAD.size + len(raw))

    def room_in(self, b: int, raw: bytes) -> tuple[int, bool] | None:
        """room_for's answer for block ``b``, the one a said create's record
        names (making it again puts the name where its writer did): (b,
        whether it must be compacted first), or None if there is no such
        block or it has no room for the entry even compacted."""
        if not 0 <= b < len(self.images):
            return None
        need = DIRENT_HEAD.size + len(raw)
        if BLOCK - self.used[b] >= need:
            return b, False
        if BLOCK - self.used[b] + self.dead[b] >= need:
            return b, True
        return None

    def any_room(self, raw: bytes) -> tuple[int, bool] | None:
        """room_for's answer where a said create's record names no block (a
        version 9 writer's, SPEC.md): the first block with room at its
        tail, else the first that compacting gives room, looked for in
        every block (room_for may miss one, and making a create again must
        not fail where its writer found room)."""
        need = DIRENT_HEAD.size + len(raw)
        used, dead = self.used, self.dead
        for b in range(len(self.images)):
            if BLOCK - used[b] >= need:
                return b, False
        for b in range(len(self.images)):
            if BLOCK - used[b] + dead[b] >= need:
                return b, True
        return None

    def forget(self, name: str) -> int:
        """Remove ``name`` as ``remove`` does, in memory only, and return its
        block, whose home no longer matches: an unlink said in the journal
        and not written (logical.py), whose block an absorb writes whole."""
        return self._tombstone(name)[1]

    def _tombstone(self, name: str) -> tuple[int, int, int]:
        """Drop ``name`` and zero its entry's ino in the image; (ino, block,
        position).  The header is sealed by whoever writes the block."""
        ino, _ftype, b, pos = self._drop(name)
        image = self.images[b]
        struct.pack_into("<Q", image, pos, 0)
        self.live[b] -= 1
        n = DIRENT_HEAD.size + image[pos + 8]
        room = BLOCK - self.used[b] + self.dead[b]
        self.dead[b] += n
        for k in range(bisect_right(ROOM_STEPS, room), bisect_right(ROOM_STEPS, room + n)):
            self._hole_room[k].add(b)  # (the steps this tombstone crossed)
        return ino, b, pos

    def write_whole(self, b: int, txn: Transaction) -> None:
        """Seal block ``b`` and stage it whole (an absorb, logical.py: it
        writes each home once, so the write overlaps none staged)."""
        self._seal(b)
        txn.touch(self.ino)
        txn.write_apart(self.devs[b], self.images[b])

    def retarget(self, name: str, ino: int, ftype: int, txn: Transaction) -> int:
        """Point an existing name at another inode in place; return the old ino."""
        old, _f, b, pos = self.entries[name]
        self.rebasable = False  # rollback keeps no copy of a retarget
        image = self.images[b]
        struct.pack_into("<Q", image, pos, ino)
        image[pos + 9] = ftype
        self._drop(name)
        self._enter(name, (ino, ftype, b, pos), checked=False)
        self._seal(b)
        self._write(txn, self.devs[b] + pos, image[pos : pos + DIRENT_HEAD.size])
        self._stage_header(b, txn)
        return old

    # -- rebasing an optimistic change (coherence.Change._rebase) ------------
    def track(self) -> None:
        """Keep, from now on, the edits made (``ops``) and what they overwrote,
        so that ``rollback`` can undo them: an optimistic change edits its
        copy before it knows whether another process committed edits to the
        same blocks meanwhile.  Only adds and removes in blocks with room
        can be rolled back (a compaction or a new block sets ``rebasable``
        false)."""
        self.ops, self.rebasable = [], True
        self._saved, self._saved_names = {}, {}

    def untrack(self) -> None:
        self.ops, self.rebasable = None, False
        self._saved, self._saved_names = {}, {}

    def _keep(self, b: int, name: str) -> None:
        if b not in self._saved:
            self._saved[b] = (bytes(self.images[b]), self.used[b], self.live[b], self.dead[b])
        if name not in self._saved_names:
            self._saved_names[name] = self.entries.get(name)

    def rollback(self) -> tuple[list[tuple], set[int]]:
        """Undo every edit since ``track`` (which must be ``rebasable``) and
        stop tracking; return the edits, to replay, and the device offsets
        of the blocks they wrote (whose staged writes the caller drops)."""
        assert self.ops is not None and self.rebasable
        for b, (image, used, live, dead) in self._saved.items():
            self.images[b] = bytearray(image)
            self.used[b], self.live[b], self.dead[b] = used, live, dead
            self._note_room(b)
        for name in self._saved_names:  # all dropped first: a rename within
            if name in self.entries:  # the directory moves a subdirectory's name
                self._drop(name)
        for name, entry in self._saved_names.items():
            if entry is not None:
                self._enter(name, entry)
        ops, devs = self.ops, {self.devs[b] for b in self._saved}
        self.untrack()
        return ops, devs

    def replay(self, ops: list[tuple], txn: Transaction) -> bool:
        """Make ``ops`` (from rollback) again, tracked, on this directory as
        it is now.  False, with part of them made, when one no longer fits:
        its name is taken or gone, or it needs a new block (the directory's
        inode would change: the change runs again the old way)."""
        self.track()
        try:
            for name, ino, ftype in ops:
                if ino is None:
                    if name not in self.entries:
                        return False
                    self.remove(name, txn)
                elif name in self.entries:
                    return False
                else:
                    self.add(name, ino, ftype, txn, _no_new_block)
        except _NoRoom:
            return False
        return True

    # -- blocks ------------------------------------------------------------
    def _existing_room(self, need: int) -> tuple[int, bool] | None:
        """The block an entry of ``need`` bytes goes in, among those there
        are, and whether it must be compacted first; None: a new one.  The
        newest block if the entry fits at its tail (the common append),
        else the block the last such placement took if it still fits, else
        a block with room at its tail, else the newest if compacting
        it makes room, else a block that compacting gives room.  Room is
        looked for in steps (ROOM_STEPS): an older block's tail with room
        for the entry but not for the next step up is left, as finding it
        would cost a scan."""
        newest = len(self.images) - 1
        if newest < 0:
            return None
        used, dead, last = self.used, self.dead, self._last_room
        if BLOCK - used[newest] >= need:
            return newest, False
        if last >= 0 and BLOCK - used[last] >= need:
            return last, False
        step = bisect_left(ROOM_STEPS, need)
        b = self._room_among(self._tail_room[step], ROOM_STEPS[step], False)
        if b is not None:
            self._last_room = b
            return b, False
        if BLOCK - used[newest] + dead[newest] >= need:
            return newest, True
        b = self._room_among(self._hole_room[step], ROOM_STEPS[step], True)
        if b is None:
            return None
        self._last_room = b  # (compacted, it has room at its tail)
        return b, True

    def _room_among(self, candidates: set[int], want: int, compacted: bool) -> int | None:
        """A block of ``candidates`` with ``want`` bytes of room (once
        ``compacted``), the ones found without it dropped: each was listed
        by an edit that made room, so the drops are paid for by edits."""
        used, dead = self.used, self.dead
        while candidates:
            b = candidates.pop()
            if BLOCK - used[b] + (dead[b] if compacted else 0) >= want:
                candidates.add(b)
                return b
        return None

    def _note_room(self, b: int) -> None:
        """Block ``b``'s room may have grown: listed at every step it has."""
        room = BLOCK - self.used[b]
        for k in range(bisect_right(ROOM_STEPS, room)):
            self._tail_room[k].add(b)
        for k in range(bisect_right(ROOM_STEPS, room + self.dead[b])):
            self._hole_room[k].add(b)

    def _block_with_room(self, need: int, txn: Transaction, new_block: NewBlock) -> int:
        found = self._existing_room(need)
        if found is not None:
            b, compact = found
            if compact:
                self._compact(b, txn)
            return b
        devs = new_block(txn)
        self.rebasable = False  # the directory's inode changes too: no rebase
        for dev in devs:  # each written whole, empty: a directory has no holes
            self.images.append(bytearray(BLOCK))
            self.devs.append(dev)
            self.used.append(DIRBLOCK_HEAD.size)
            self.live.append(0)
            self.dead.append(0)
            self._note_room(len(self.images) - 1)
            self._seal(len(self.images) - 1)
            self._write(txn, dev, bytes(self.images[-1]))
        return len(self.images) - len(devs)

    def _compact(self, b: int, txn: Transaction) -> None:
        self.rebasable = False  # entries move: rollback keeps no copy of that
        self._compact_image(b)
        self._seal(b)
        self._write(txn, self.devs[b], bytes(self.images[b]))

    def _compact_image(self, b: int) -> None:
        """Block ``b``'s live entries moved to its start, in order, tombstones
        dropped: a walk of the block's image (used bytes of it, every entry
        length one we wrote or checked at load), not of the directory's
        names, so that a compaction costs one block however big the
        directory."""
        old, end = self.images[b], self.used[b]
        image = bytearray(BLOCK)
        pos = at = DIRBLOCK_HEAD.size
        entries, head = self.entries, DIRENT_HEAD.size
        while at < end:
            n = head + old[at + 8]
            ino = int.from_bytes(old[at : at + 8], "little")
            if ino:
                image[pos : pos + n] = old[at : at + n]
                name = old[at + head : at + n].decode("utf-8", "surrogateescape")
                entries[name] = (ino, old[at + 9], b, pos)
                pos += n
            at += n
        self.images[b], self.used[b], self.dead[b] = image, pos, 0
        self._note_room(b)

    def _seal(self, b: int) -> None:
        dirblock_seal(self.images[b], self.ino, self.used[b], self.live[b])

    def _write(self, txn: Transaction, off: int, data) -> None:
        """Stage a write to one of our blocks, naming this directory in the
        record so that other processes drop their copy of it."""
        txn.touch(self.ino)
        txn.write(off, data)

    def _stage_header(self, b: int, txn: Transaction) -> None:
        self._write(txn, self.devs[b], self.images[b][: DIRBLOCK_HEAD.size])


assert MAX_DIRENT <= BLOCK - DIRBLOCK_HEAD.size
# The entry sizes room is listed by (Directory._existing_room): an entry
# goes in a block listed at the first step it fits, so a block's tail
# shorter than the next step is all a placement may leave unused.
ROOM_STEPS = (24, 32, 48, 64, 96, 128, 192, MAX_DIRENT)
assert ROOM_STEPS[-1] == MAX_DIRENT and list(ROOM_STEPS) == sorted(set(ROOM_STEPS))


class _NoRoom(Exception):
    """A replayed add needs a new block (Directory.replay)."""


def _no_new_block(txn: Transaction) -> list[int]:
    raise _NoRoom
