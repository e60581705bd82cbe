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
from collections.abc import Callable

from .journal import Transaction
from .layout import (
    BLOCK,
    DIRBLOCK_HEAD,
    DIRENT_HEAD,
    MAX_DIRENT,
    CorruptionError,
    dirblock_seal,
    parse_dirblock,
    valid_name,
)

DIR_FTYPE = 4  # (S_IFDIR >> 12): the entry's type field for a directory
Entry = tuple[int, int, int, int]  # ino, ftype, block index, position in block
NewBlock = Callable[[Transaction], int]  # allocates and maps the next block, returns device offset


class Directory:
    def __init__(self, ino: int):
        self.ino = ino
        self.entries: dict[str, Entry] = {}
        self.images: list[bytearray] = []
        self.devs: list[int] = []
        self.used: list[int] = []
        self.live: list[int] = []
        self.dead: list[int] = []  # tombstoned bytes per block, reclaimable by compaction

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, ino: int, buf, devs: list[int]) -> Directory:
        d = cls(ino)
        subdirs: set[int] = set()  # a directory is named once, or walks multiply
        for dev in devs:
            image = bytearray(buf[dev : dev + BLOCK])
            b = len(d.images)
            d.images.append(image)
            d.devs.append(dev)
            d.used.append(0)
            d.live.append(0)
            d.dead.append(0)
            for _name, eino, ftype, _pos in d._take_block(b):
                if ftype == DIR_FTYPE:
                    if eino in subdirs:
                        raise CorruptionError(
                            f"directory {ino}: two names for directory {eino}", dev
                        )
                    subdirs.add(eino)
        return d

    def _take_block(self, b: int) -> list[tuple[str, int, int, int]]:
        """Parse block ``b``'s image and enter its names; return them as
        (name, ino, ftype, pos).  A name that is invalid or already present
        is damage (CorruptionError)."""
        image, dev = self.images[b], self.devs[b]
        used, entries = parse_dirblock(image, dev, self.ino)
        live_bytes = 0
        out = []
        for pos, eino, ftype, raw in entries:
            name = raw.decode("utf-8", "surrogateescape")
            if not valid_name(raw) or name in self.entries:
                raise CorruptionError(f"directory {self.ino}: bad or duplicate name {raw!r}", dev)
            self.entries[name] = (eino, ftype, b, pos)
            live_bytes += DIRENT_HEAD.size + len(raw)
            out.append((name, eino, ftype, pos))
        self.used[b], self.live[b] = used, len(entries)
        self.dead[b] = used - DIRBLOCK_HEAD.size - live_bytes
        return out

    def refresh(self, buf, written: set[int]) -> bool:
        """Re-read those of our blocks (device offsets) that another process
        wrote.  False when that is not enough and the directory must be
        loaded again whole: a block does not check, or a directory entry
        appeared (only a whole load can tell it is the one name for that
        directory)."""
        index = {dev: b for b, dev in enumerate(self.devs)} if written else {}
        try:
            for dev in written:
                b = index.get(dev)
                if b is None:
                    continue
                had_dirs = set()
                for pos, ino, ftype, raw in parse_dirblock(self.images[b], dev, self.ino)[1]:
                    name = raw.decode("utf-8", "surrogateescape")
                    if self.entries.get(name, (0, 0, -1, -1))[2:] == (b, pos):
                        del self.entries[name]
                    if ftype == DIR_FTYPE:
                        had_dirs.add((name, ino))
                self.images[b] = bytearray(buf[dev : dev + BLOCK])
                for name, ino, ftype, _pos in self._take_block(b):
                    if ftype == DIR_FTYPE and (name, ino) not in had_dirs:
                        return False
        except CorruptionError:
            return False
        return True

    def lookup(self, name: str) -> tuple[int, int] | None:
        e = self.entries.get(name)
        return None if e is None else (e[0], e[1])

    # -- changes -----------------------------------------------------------
    def add(self, name: str, ino: int, ftype: int, txn: Transaction, new_block: NewBlock) -> None:
        raw = name.encode("utf-8", "surrogateescape")
        need = DIRENT_HEAD.size + len(raw)
        b = self._block_with_room(need, txn, new_block)
        image, pos = self.images[b], self.used[b]
        DIRENT_HEAD.pack_into(image, pos, ino, len(raw), ftype)
        image[pos + DIRENT_HEAD.size : pos + need] = raw
        self.used[b] += need
        self.live[b] += 1
        self.entries[name] = (ino, ftype, b, pos)
        self._seal(b)
        self._write(txn, self.devs[b] + pos, image[pos : pos + need])
        self._stage_header(b, txn)

    def remove(self, name: str, txn: Transaction) -> int:
        ino, _ftype, b, pos = self.entries.pop(name)
        image = self.images[b]
        struct.pack_into("<Q", image, pos, 0)
        self.live[b] -= 1
        self.dead[b] += DIRENT_HEAD.size + image[pos + 8]
        self._seal(b)
        self._write(txn, self.devs[b] + pos, image[pos : pos + 8])
        self._stage_header(b, txn)
        return ino

    def retarget(self, name: str, ino: int, ftype: int, txn: Transaction) -> int:
        """Point an existing name at another inode in place; return the old ino."""
        old, _f, b, pos = self.entries[name]
        image = self.images[b]
        struct.pack_into("<Q", image, pos, ino)
        image[pos + 9] = ftype
        self.entries[name] = (ino, ftype, b, pos)
        self._seal(b)
        self._write(txn, self.devs[b] + pos, image[pos : pos + DIRENT_HEAD.size])
        self._stage_header(b, txn)
        return old

    # -- blocks ------------------------------------------------------------
    def _block_with_room(self, need: int, txn: Transaction, new_block: NewBlock) -> int:
        # The newest block first (the common append), then any block with room
        # at its tail, then one whose tombstones would make room once compacted.
        candidates = range(len(self.images) - 1, -1, -1)
        for b in candidates:
            if BLOCK - self.used[b] >= need:
                return b
        for b in candidates:
            if BLOCK - self.used[b] + self.dead[b] >= need:
                self._compact(b, txn)
                return b
        dev = new_block(txn)
        self.images.append(bytearray(BLOCK))
        self.devs.append(dev)
        self.used.append(DIRBLOCK_HEAD.size)
        self.live.append(0)
        self.dead.append(0)
        b = len(self.images) - 1
        self._seal(b)
        self._write(txn, dev, bytes(self.images[b]))
        return b

    def _compact(self, b: int, txn: Transaction) -> None:
        old = self.images[b]
        image = bytearray(BLOCK)
        pos = DIRBLOCK_HEAD.size
        for name, (ino, ftype, eb, epos) in list(self.entries.items()):
            if eb != b:
                continue
            n = DIRENT_HEAD.size + old[epos + 8]
            image[pos : pos + n] = old[epos : epos + n]
            self.entries[name] = (ino, ftype, b, pos)
            pos += n
        self.images[b], self.used[b], self.dead[b] = image, pos, 0
        self._seal(b)
        self._write(txn, self.devs[b], bytes(image))

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
