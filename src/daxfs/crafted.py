"""crafted: hostile pools, built on purpose, for the tests and the benchmarks.

A pool is a file people hand to each other, so every byte of one may be
chosen by someone else, checksums included.  Each attack here builds one
such pool: ``ATTACKS[name].build(path, size, outside)`` runs mkfs at ``path``
(a pool of ``size``) and shapes it; ``BUILDERS`` is the same registry as
{name: builder(path, size)}.  Builds are deterministic (fixed times, no
randomness), so one attack always gives the same bytes but for mkfs's uuid.

Legal structures (``Attack.legal``: fsck finds them clean) are made through
the daxfs API, except where the API would take quadratic time to make them
(a file of a hundred thousand extents).  The rest are whole structures
written with the format's own pack functions and valid checksums by
ImageWriter: cycles, fan-out, duplicate and forbidden names, wrong types,
huge sizes, long extent chains, a journal record that costs a naive replay
quadratic time.  Field-by-field damage is tests/test_fuzzy.py's business.

``outside`` is a host directory the symlink attacks point at: they name
``outside/bait.txt`` (BAIT_FILE) and ``outside/baitdir`` (BAIT_DIR), which
the caller creates (or not); nothing here reads or writes them.

``Attack.scales``: the attack's cost grows with the pool (its structure
fills the pool, or the journal, which mkfs sizes by the pool), so it is
timed at more than one size.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import mkfs, mount
from .layout import (
    BLOCK,
    DIRBLOCK_HEAD,
    DIRENT_HEAD,
    EXTENTS_PER_BLOCK,
    INLINE_EXTENTS,
    INODE_MAGIC,
    INODE_SIZE,
    JHEADER,
    JOURNAL_HEADER_OFF,
    JSLOT_OFFSETS,
    TXN_REC,
    InodeRecord,
    Superblock,
    dirblock_seal,
    pack_extblock,
    pack_inode,
    pack_jheader,
    pack_txn,
    unpack_extblock,
    unpack_inode,
    unpack_jheader,
    unpack_superblock,
)
from .path import ROOT_INO

MiB = 1 << 20
REG, DIR, LNK = stat.S_IFREG >> 12, stat.S_IFDIR >> 12, stat.S_IFLNK >> 12
FILE_MODE, DIR_MODE, LINK_MODE = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777
CRAFTED_NS = 1_700_000_000 * 10**9  # every time a crafted record holds

BAIT_FILE = "bait.txt"
BAIT_DIR = "baitdir"
DEFAULT_OUTSIDE = "/tmp/daxfs-outside"

Entry = tuple[bytes, int, int]  # name, ino, ftype
Extent = tuple[int, int, int]  # file_off, dev_off, length


# --------------------------------------------------------------------------
# the image writer
# --------------------------------------------------------------------------
class ImageWriter:
    """Raw records written into a formatted pool file, each packed and sealed
    by layout's own functions: an inode slot, a directory block holding given
    entries, a file's data, an extent-block chain, a journal record.

    It allocates inode numbers and data blocks itself, past everything the
    pool's live inodes own when it is opened (so it may follow the API), and
    checks nothing: making inconsistent structures is its purpose.  Use as a
    context manager; it writes with pwrite, so the pool must not be mounted."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR)
        size = os.fstat(self.fd).st_size // BLOCK * BLOCK
        self.sb: Superblock = unpack_superblock(os.pread(self.fd, BLOCK, 0), 0, size)
        # A zero table header puts the whole table in use (as in a pool
        # upgraded from before version 4), so that any slot may be crafted.
        # Past mkfs's limit a new pool file's slots are zero, as they must be.
        os.pwrite(self.fd, bytes(INODE_SIZE), self.sb.itable_off)
        self._used_inos, used_blocks = self._scan()
        self._next_ino = 2
        self._next_block = max(used_blocks, default=-1) + 1

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def _scan(self) -> tuple[set[int], set[int]]:
        """The live inode numbers and the data blocks (indices) they own."""
        sb = self.sb
        table = os.pread(self.fd, sb.inode_count * INODE_SIZE, sb.itable_off)
        inos, blocks = set(), set()
        for ino in range(1, sb.inode_count):
            raw = table[ino * INODE_SIZE : (ino + 1) * INODE_SIZE]
            if int.from_bytes(raw[4:6], "little") != INODE_MAGIC:
                continue
            inos.add(ino)
            r = unpack_inode(raw, sb.itable_off + ino * INODE_SIZE, ino)
            extents, nxt = list(r.inline), r.ext_block
            while len(extents) < r.nextents and nxt:
                blocks.add((nxt - sb.data_off) // BLOCK)
                nxt, more = unpack_extblock(os.pread(self.fd, BLOCK, nxt), nxt, ino)
                extents += more
            for _f, dev, n in extents:
                first = (dev - sb.data_off) // BLOCK
                blocks.update(range(first, first + n // BLOCK))
        return inos, blocks

    # -- allocation --------------------------------------------------------
    @property
    def first_free_block(self) -> int:
        """Index of the lowest data block not handed out yet (all above are free)."""
        return self._next_block

    @property
    def free_blocks(self) -> int:
        return self.sb.data_blocks - self._next_block

    def new_ino(self) -> int:
        while self._next_ino in self._used_inos:
            self._next_ino += 1
        if self._next_ino >= self.sb.inode_count:
            raise ValueError("crafted pool: out of inode slots (a bigger pool is needed)")
        self._used_inos.add(self._next_ino)
        return self._next_ino

    def new_blocks(self, n: int = 1) -> int:
        """Device offset of ``n`` fresh contiguous data blocks."""
        if n > self.free_blocks:
            raise ValueError("crafted pool: out of data blocks (a bigger pool is needed)")
        dev = self.block(self._next_block)
        self._next_block += n
        return dev

    def block(self, index: int) -> int:
        """Device offset of data block ``index``."""
        return self.sb.data_off + index * BLOCK

    def skip_to_block(self, index: int) -> None:
        self._next_block = max(self._next_block, index)

    # -- records -----------------------------------------------------------
    def write(self, off: int, data: bytes) -> None:
        os.pwrite(self.fd, data, off)

    def inode(
        self,
        ino: int,
        mode: int,
        *,
        size: int = 0,
        nlink: int = 1,
        parent: int = 0,
        extents: Iterable[Extent] = (),
        ext_block: int = 0,
        nextents: int | None = None,
    ) -> None:
        """Write inode slot ``ino``; ``extents`` beyond the inline six must be
        in a chain at ``ext_block`` (see extent_chain)."""
        ex = list(extents)
        t = CRAFTED_NS
        record = InodeRecord(
            ino, 0, mode, nlink, 0, 0, size, t, t, t, t, parent,
            len(ex) if nextents is None else nextents, ext_block, ex[:INLINE_EXTENTS],
        )  # fmt: skip
        self.write(self.sb.itable_off + ino * INODE_SIZE, pack_inode(record))

    def dirblock(self, dev: int, dir_ino: int, entries: Iterable[Entry]) -> None:
        """A directory block at ``dev`` holding exactly ``entries``, in order."""
        image = bytearray(BLOCK)
        pos, live = DIRBLOCK_HEAD.size, 0
        for name, ino, ftype in entries:
            n = DIRENT_HEAD.size + len(name)
            if pos + n > BLOCK:
                raise ValueError("crafted directory block: entries do not fit")
            DIRENT_HEAD.pack_into(image, pos, ino, len(name), ftype)
            image[pos + DIRENT_HEAD.size : pos + n] = name
            pos, live = pos + n, live + (ino != 0)
        dirblock_seal(image, dir_ino, pos, live)
        self.write(dev, bytes(image))

    def extent_chain(self, owner: int, groups: list[list[Extent]], devs: list[int]) -> int:
        """Extent blocks at ``devs`` holding ``groups`` (one group a block),
        linked in order; returns the head (0 when there are none)."""
        for i, (dev, group) in enumerate(zip(devs, groups, strict=True)):
            nxt = devs[i + 1] if i + 1 < len(devs) else 0
            self.write(dev, pack_extblock(owner, nxt, group))
        return devs[0] if devs else 0

    def journal_record(self, writes: list[tuple[int, bytes]], revokes: list[tuple[int, int]]):
        """One committed record at the start of the journal area, and the
        header pointing at it (slot 0 expecting its seq, slot 1 cleared): the
        next mount replays it.  Returns the record's length."""
        seqs = [
            unpack_jheader(os.pread(self.fd, JHEADER.size, JOURNAL_HEADER_OFF + o))
            for o in JSLOT_OFFSETS
        ]
        seq = max(s for s in seqs if s is not None)
        record = pack_txn(seq, writes, revokes)
        if len(record) > self.sb.journal_len:
            raise ValueError("crafted journal record: larger than the journal")
        self.write(self.sb.journal_off, record)
        self.write(JOURNAL_HEADER_OFF + JSLOT_OFFSETS[0], pack_jheader(seq))
        self.write(JOURNAL_HEADER_OFF + JSLOT_OFFSETS[1], bytes(JHEADER.size))
        return len(record)

    # -- whole files -------------------------------------------------------
    def directory(
        self,
        ino: int,
        parent: int,
        entries: Iterable[Entry] = (),
        *,
        blocks: list[list[Entry]] | None = None,
        size: int | None = None,
        nlink: int | None = None,
    ) -> None:
        """Directory ``ino``: ``entries`` packed into as few blocks as they
        fit, or exactly the given ``blocks``; nlink and size as daxfs keeps
        them unless told otherwise."""
        groups = blocks if blocks is not None else _pack_blocks(list(entries))
        devs = [self.new_blocks() for _ in groups]
        for dev, group in zip(devs, groups, strict=True):
            self.dirblock(dev, ino, group)
        subdirs = sum(1 for g in groups for _n, _i, t in g if t == DIR)
        self.inode(
            ino,
            DIR_MODE,
            size=len(devs) * BLOCK if size is None else size,
            nlink=2 + subdirs if nlink is None else nlink,
            parent=parent,
            extents=_runs(devs),
        )

    def file(self, ino: int, data: bytes = b"", *, nlink: int = 1) -> None:
        """Regular file ``ino`` holding ``data`` in one run of fresh blocks."""
        n = -(-len(data) // BLOCK)
        extents = []
        if n:
            dev = self.new_blocks(n)
            self.write(dev, data + bytes(n * BLOCK - len(data)))
            extents = [(0, dev, n * BLOCK)]
        self.inode(ino, FILE_MODE, size=len(data), nlink=nlink, extents=extents)

    def symlink(self, ino: int, target: bytes) -> None:
        dev = self.new_blocks(-(-len(target) // BLOCK))
        self.write(dev, target)
        length = -(-len(target) // BLOCK) * BLOCK
        self.inode(ino, LINK_MODE, size=len(target), extents=[(0, dev, length)])


def _pack_blocks(entries: list[Entry]) -> list[list[Entry]]:
    """Entries in order, as many to a directory block as fit."""
    blocks: list[list[Entry]] = [[]]
    room = BLOCK - DIRBLOCK_HEAD.size
    for e in entries:
        need = DIRENT_HEAD.size + len(e[0])
        if need > room:
            blocks.append([])
            room = BLOCK - DIRBLOCK_HEAD.size
        blocks[-1].append(e)
        room -= need
    return blocks


def _runs(devs: list[int]) -> list[Extent]:
    """Extents mapping file blocks 0, 1, ... to ``devs``, contiguous runs merged
    (daxfs keeps extents maximal, and fsck holds it to that)."""
    out: list[Extent] = []
    for i, dev in enumerate(devs):
        if out and out[-1][1] + out[-1][2] == dev:
            f, d, n = out[-1]
            out[-1] = (f, d, n + BLOCK)
        else:
            out.append((i * BLOCK, dev, BLOCK))
    return out


def _fresh(path: str, size: int | str) -> None:
    mkfs(path, size, force=True)


def _writer(path: str, size: int | str) -> ImageWriter:
    _fresh(path, size)
    return ImageWriter(path)


def content(name: str) -> bytes:
    """What a crafted regular file holds (small, recognisable)."""
    return f"crafted file {name}\n".encode()


# --------------------------------------------------------------------------
# legal but nasty trees (fsck clean), through the API
# --------------------------------------------------------------------------
DEEP_LEVELS = 1500
DEEP_FILE_EVERY = 50


def deep(path, size, outside=DEFAULT_OUTSIDE):
    """A legitimate 1,500-level tree /d/d/.../d with a file every 50 levels
    (legal): attacks every recursive walk (cp, fsspec get, makedirs, walk)."""
    _fresh(path, size)
    with mount(path) as fs:
        where = ""
        for level in range(1, DEEP_LEVELS + 1):
            where += "/d"
            fs.mkdir(where)
            if level % DEEP_FILE_EVERY == 0 or level == DEEP_LEVELS:
                with fs.open(where + "/f", "wb") as f:
                    f.write(content(f"level {level}"))


HUGE_SIZE = 1 << 62


def huge_sparse(path, size, outside=DEFAULT_OUTSIDE):
    """A regular file of 2^62 bytes with no blocks, beside a small one (legal):
    attacks copies that write the zeroes of holes (the disk fills)."""
    _fresh(path, size)
    with mount(path) as fs:
        with fs.open("/small", "wb") as f:
            f.write(content("small"))
        with fs.open("/huge", "wb"):
            pass
        fs.truncate("/huge", HUGE_SIZE)


LONG_TARGET = "/" + "p/" * 2046 + "p"  # 4095 bytes, the longest a symlink holds
SYMLINK_CHAIN = 41  # one more than the 40 links a resolution may follow


def symlink_farm(path, size, outside=DEFAULT_OUTSIDE):
    """Symlinks that make walks that follow links loop or escape (legal): two
    to '/', a 2-link loop, a chain of 41, '../' runs, absolute host paths
    (/etc/passwd, the bait file), one to '.' and '..', a 4095-byte target."""
    _fresh(path, size)
    with mount(path) as fs:
        with fs.open("/data.txt", "wb") as f:
            f.write(content("data.txt"))
        fs.symlink("/", "/root1")
        fs.symlink("/", "/root2")
        fs.symlink("loopb", "/loopa")
        fs.symlink("loopa", "/loopb")
        for i in range(SYMLINK_CHAIN):
            fs.symlink(f"chain{i + 1}" if i + 1 < SYMLINK_CHAIN else "data.txt", f"/chain{i}")
        fs.symlink("../" * 64 + "etc/passwd", "/up_passwd")
        fs.symlink("/etc/passwd", "/passwd")
        fs.symlink(os.path.join(outside, BAIT_FILE), "/bait")
        fs.symlink(os.path.join(outside, BAIT_DIR), "/baitdir")
        fs.symlink(LONG_TARGET, "/long")
        fs.mkdir("/sub")
        fs.symlink(".", "/sub/dot")
        fs.symlink("..", "/sub/parent")
        fs.symlink("../..", "/sub/above_root")


def root_links(path, size, outside=DEFAULT_OUTSIDE):
    """Two symlinks to '/' beside a file and a directory holding one (legal):
    a walk that follows symlinks to directories never ends."""
    _fresh(path, size)
    with mount(path) as fs:
        fs.symlink("/", "/root1")
        fs.symlink("/", "/root2")
        fs.mkdir("/d")
        for name in ("/f", "/d/g"):
            with fs.open(name, "wb") as f:
                f.write(content(name))


def case_fold(path, size, outside=DEFAULT_OUTSIDE):
    """Names that collide when the destination folds case (legal): 'F' is a
    symlink to the host's bait file beside a regular file 'f'; 'D' a symlink
    to the bait directory beside a directory 'd' holding files."""
    _fresh(path, size)
    with mount(path) as fs:
        fs.symlink(os.path.join(outside, BAIT_FILE), "/F")
        with fs.open("/f", "wb") as f:
            f.write(content("f"))
        fs.symlink(os.path.join(outside, BAIT_DIR), "/D")
        fs.mkdir("/d")
        for name in ("x.txt", "y.txt"):
            with fs.open(f"/d/{name}", "wb") as f:
                f.write(content(name))


TERM_INJECT_NAMES = (
    "\x1b[2J",
    "\x1b]0;x\x07title",
    "line\nfake -rw-r--r-- 1 0 Jan  1 00:00 owned",
    "car\rriage",
    "\x1b[31mred_dir",
    "link",
)
TERM_INJECT_TARGET = "\x1b[2J\x1b]0;x\x07\n\rtarget"


def term_inject(path, size, outside=DEFAULT_OUTSIDE):
    """Names and a link target holding escape sequences (clear screen, set
    title), newline and CR (legal): attacks listings printed raw on a terminal.
    The root holds exactly TERM_INJECT_NAMES."""
    _fresh(path, size)
    with mount(path) as fs:
        for name in TERM_INJECT_NAMES[:4]:
            with fs.open("/" + name, "wb") as f:
                f.write(content("terminal"))
        fs.mkdir("/" + TERM_INJECT_NAMES[4])
        fs.symlink(TERM_INJECT_TARGET, "/" + TERM_INJECT_NAMES[5])


# --------------------------------------------------------------------------
# directories named twice, cycles, bad entries (ImageWriter)
# --------------------------------------------------------------------------
def self_dir(path, size, outside=DEFAULT_OUTSIDE):
    """/a holds an entry 'self' naming /a: the tree is infinite to a walk."""
    with _writer(path, size) as w:
        a, f = w.new_ino(), w.new_ino()
        w.file(f, content("a/f"))
        w.directory(a, ROOT_INO, [(b"f", f, REG), (b"self", a, DIR)])
        w.directory(ROOT_INO, ROOT_INO, [(b"a", a, DIR)])


def ancestor_dir(path, size, outside=DEFAULT_OUTSIDE):
    """/a/b/c holds an entry 'up' naming /a, its grandparent: a cycle."""
    with _writer(path, size) as w:
        a, b, c, f = (w.new_ino() for _ in range(4))
        w.file(f, content("a/b/c/f"))
        w.directory(c, b, [(b"f", f, REG), (b"up", a, DIR)])
        w.directory(b, a, [(b"c", c, DIR)])
        w.directory(a, ROOT_INO, [(b"b", b, DIR)])
        w.directory(ROOT_INO, ROOT_INO, [(b"a", a, DIR)])


def root_named(path, size, outside=DEFAULT_OUTSIDE):
    """/a holds an entry 'root' naming the root directory: a cycle through /."""
    with _writer(path, size) as w:
        a, f = w.new_ino(), w.new_ino()
        w.file(f, content("f"))
        w.directory(a, ROOT_INO, [(b"root", ROOT_INO, DIR)])
        w.directory(ROOT_INO, ROOT_INO, [(b"a", a, DIR), (b"f", f, REG)])


FANOUT_LEVELS = 40


def fanout(path, size, outside=DEFAULT_OUTSIDE):
    """40 directories, each holding two names ('a', 'b') for the next: 2^40
    paths, no cycle; each directory's parent field is right."""
    with _writer(path, size) as w:
        dirs = [w.new_ino() for _ in range(FANOUT_LEVELS + 1)]
        f = w.new_ino()
        w.file(f, content("bottom"))
        w.directory(dirs[-1], dirs[-2], [(b"f", f, REG)])
        for i in range(FANOUT_LEVELS - 1, -1, -1):
            parent = dirs[i - 1] if i else ROOT_INO
            nxt = dirs[i + 1]
            w.directory(dirs[i], parent, [(b"a", nxt, DIR), (b"b", nxt, DIR)])
        w.directory(ROOT_INO, ROOT_INO, [(b"top", dirs[0], DIR)])


def unreachable_cycle(path, size, outside=DEFAULT_OUTSIDE):
    """Directories x -> y -> z -> x naming each other in a ring (parent fields
    consistent with it), none reachable from the root, which holds a file."""
    with _writer(path, size) as w:
        x, y, z, f, g = (w.new_ino() for _ in range(5))
        w.file(f, content("f"))
        w.file(g, content("in the ring"))
        w.directory(x, z, [(b"y", y, DIR), (b"g", g, REG)])
        w.directory(y, x, [(b"z", z, DIR)])
        w.directory(z, y, [(b"x", x, DIR)])
        w.directory(ROOT_INO, ROOT_INO, [(b"f", f, REG)])


def parent_cycle(path, size, outside=DEFAULT_OUTSIDE):
    """/a/b is an ordinary tree by its entries, but a's parent field names b
    and b's names a: '..' and anything climbing parents go round forever."""
    with _writer(path, size) as w:
        a, b, f = w.new_ino(), w.new_ino(), w.new_ino()
        w.file(f, content("a/b/f"))
        w.directory(b, a, [(b"f", f, REG)])
        w.directory(a, b, [(b"b", b, DIR)])
        w.directory(ROOT_INO, ROOT_INO, [(b"a", a, DIR)])


def dup_names(path, size, outside=DEFAULT_OUTSIDE):
    """The root holds the name 'x' twice, once in each of its two blocks, for
    two different files (and a directory 'd' named twice the same way)."""
    with _writer(path, size) as w:
        x1, x2, d1, d2 = (w.new_ino() for _ in range(4))
        w.file(x1, content("first x"))
        w.file(x2, content("second x"))
        w.directory(d1, ROOT_INO, [])
        w.directory(d2, ROOT_INO, [])
        w.directory(
            ROOT_INO,
            ROOT_INO,
            blocks=[[(b"x", x1, REG), (b"d", d1, DIR)], [(b"x", x2, REG), (b"d", d2, DIR)]],
        )


BAD_NAMES = {
    "slash": b"../../sentinel/pwned",
    "dot": b".",
    "dotdot": b"..",
    "nul": b"x\0y",
    "empty": b"",
}


def bad_names(path, size, outside=DEFAULT_OUTSIDE):
    """Names a directory may not hold: '/' (a path climbing out with '..'),
    '.', '..', NUL, empty; each in its own directory /NAME beside a file 'ok',
    so one bad name spoils one directory only."""
    with _writer(path, size) as w:
        top = []
        for label, bad in BAD_NAMES.items():
            d, ok, victim = w.new_ino(), w.new_ino(), w.new_ino()
            w.file(ok, content(f"{label}/ok"))
            w.file(victim, content(f"{label}/bad"))
            w.directory(d, ROOT_INO, [(b"ok", ok, REG), (bad, victim, REG)])
            top.append((label.encode(), d, DIR))
        w.directory(ROOT_INO, ROOT_INO, top)


def type_mismatch(path, size, outside=DEFAULT_OUTSIDE):
    """Entries whose type lies: 'looks_dir' says directory for a regular file,
    'looks_file' says regular file for a directory holding a file."""
    with _writer(path, size) as w:
        f, d, inner = w.new_ino(), w.new_ino(), w.new_ino()
        w.file(f, content("really a file"))
        w.file(inner, content("inside the directory"))
        w.directory(d, ROOT_INO, [(b"inner", inner, REG)])
        entries = [(b"looks_dir", f, DIR), (b"looks_file", d, REG)]
        w.directory(ROOT_INO, ROOT_INO, entries, nlink=3)  # d is its one real subdirectory


HUGE_DIR_SIZE = 1 << 40


def huge_dir(path, size, outside=DEFAULT_OUTSIDE):
    """/big is a directory of one block whose size claims 2^40 bytes (2^28
    blocks): attacks loaders that trust a size to allocate or iterate."""
    with _writer(path, size) as w:
        big, f = w.new_ino(), w.new_ino()
        w.file(f, content("big/f"))
        w.directory(big, ROOT_INO, [(b"f", f, REG)], size=HUGE_DIR_SIZE)
        w.directory(ROOT_INO, ROOT_INO, [(b"big", big, DIR)])


# --------------------------------------------------------------------------
# attacks whose cost grows with the pool
# --------------------------------------------------------------------------
def _chained_file(w: ImageWriter, per_block: int) -> int:
    """A file mapping one block per extent over most of the pool, its overflow
    extents ``per_block`` to an extent block: data on the even free blocks
    (the gaps keep the extents from merging), extent blocks on the odd ones.
    Returns its inode number."""
    ino, first = w.new_ino(), w.first_free_block
    n = (w.free_blocks - 2) // 2  # n extents need at most n - 6 extent blocks
    extents = [(i * BLOCK, w.block(first + 2 * i), BLOCK) for i in range(n)]
    overflow = extents[INLINE_EXTENTS:]
    groups = [overflow[i : i + per_block] for i in range(0, len(overflow), per_block)]
    head = w.extent_chain(ino, groups, [w.block(first + 2 * i + 1) for i in range(len(groups))])
    w.skip_to_block(first + 2 * n)
    w.inode(ino, FILE_MODE, size=n * BLOCK, extents=extents, ext_block=head)
    return ino


def long_chain(path, size, outside=DEFAULT_OUTSIDE):
    """/chain: one extent per data block over half the pool, so its extent
    blocks form a long chain, each full (169 extents) as daxfs writes them
    (legal; made with ImageWriter because the API restages the whole chain
    on every change, quadratic in building this)."""
    with _writer(path, size) as w:
        chain = _chained_file(w, EXTENTS_PER_BLOCK)
        w.directory(ROOT_INO, ROOT_INO, [(b"chain", chain, REG)])


def long_chain_sparse(path, size, outside=DEFAULT_OUTSIDE):
    """/chain: one extent per extent block, a chain through every other block
    of the pool: attacks chain checks that compare each block with all before."""
    with _writer(path, size) as w:
        chain = _chained_file(w, 1)
        w.directory(ROOT_INO, ROOT_INO, [(b"chain", chain, REG)])


def quadratic_journal(path, size, outside=DEFAULT_OUTSIDE):
    """A committed journal record as big as the journal (right seq, valid crc,
    the header slot expecting it): zero-length writes into the inode table and
    revokes of data blocks, half each, none overlapping, so a replay that
    compares every write with every revoke does (n/2)^2 comparisons.  The
    tree beside it is legal, and so is the record."""
    _fresh(path, size)
    with mount(path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(content("f"))
    with ImageWriter(path) as w:
        sb = w.sb
        room = sb.journal_len - 24  # a record's header is 24 bytes
        half = room // (2 * TXN_REC.size)
        writes = [(sb.itable_off + (i % sb.inode_count) * INODE_SIZE, b"") for i in range(half)]
        revokes = [(sb.data_end - (1 + i % sb.data_blocks) * BLOCK, BLOCK) for i in range(half)]
        w.journal_record(writes, revokes)


def orphans(path, size, outside=DEFAULT_OUTSIDE):
    """Every free inode slot an orphan (nlink 0, no name) owning one data block,
    beside /f: the first writable mount frees them all (legal: a crash with
    files open leaves orphans; today one transaction frees them all)."""
    with _writer(path, size) as w:
        f = w.new_ino()
        w.file(f, content("f"))
        w.directory(ROOT_INO, ROOT_INO, [(b"f", f, REG)])
        for _ in range(min(w.sb.inode_count - 3, w.free_blocks)):
            w.file(w.new_ino(), content("orphan"), nlink=0)


# --------------------------------------------------------------------------
# lost+found
# --------------------------------------------------------------------------
def lf_collision(path, size, outside=DEFAULT_OUTSIDE):
    """/lost+found already holds '#N' (a file) while inode N, a file with a
    link count of 1, is named nowhere: a repair that names it '#N' collides."""
    with _writer(path, size) as w:
        lf, stray, holder = w.new_ino(), w.new_ino(), w.new_ino()
        w.file(stray, content("unreachable"))
        w.file(holder, content("already in lost+found"))
        w.directory(lf, ROOT_INO, [(f"#{stray}".encode(), holder, REG)])
        w.directory(ROOT_INO, ROOT_INO, [(b"lost+found", lf, DIR)])


def lf_file(path, size, outside=DEFAULT_OUTSIDE):
    """/lost+found is a regular file with content while a file is unreachable:
    a repair must neither overwrite it nor fail on it."""
    with _writer(path, size) as w:
        lf, stray = w.new_ino(), w.new_ino()
        w.file(lf, content("not a directory"))
        w.file(stray, content("unreachable"))
        w.directory(ROOT_INO, ROOT_INO, [(b"lost+found", lf, REG)])


def copy_pool(src, dst) -> None:
    """Copy a (crafted) pool file keeping its holes: a pristine image stays
    pristine while each use, which may replay its journal, reclaim orphans or
    repair it, gets its own copy.  Costs what the pool holds, not its size."""
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        size = os.fstat(fin.fileno()).st_size
        fout.truncate(size)
        for start, end in data_segments(fin.fileno(), size):
            for off in range(start, end, 8 * MiB):
                os.pwrite(fout.fileno(), os.pread(fin.fileno(), min(8 * MiB, end - off), off), off)


def data_segments(fd: int, size: int) -> Iterable[tuple[int, int]]:
    """The [start, end) ranges of file ``fd`` that hold data (SEEK_DATA and
    SEEK_HOLE; a file system without them reports one range, all data)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        pos = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, pos


# --------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------
Builder = Callable[..., None]


@dataclass(frozen=True)
class Attack:
    """A crafted pool: how to build it and what to expect of it."""

    build: Builder  # build(path, size, outside=DEFAULT_OUTSIDE)
    legal: bool = False  # fsck finds the pool clean
    scales: bool = False  # its cost grows with the pool: time it at two sizes
    least: int = 8 * MiB  # the smallest pool it is built in

    @property
    def doc(self) -> str:
        return " ".join((self.build.__doc__ or "").split())


ATTACKS: dict[str, Attack] = {
    "deep": Attack(deep, legal=True, least=32 * MiB),
    "self_dir": Attack(self_dir),
    "ancestor_dir": Attack(ancestor_dir),
    "root_named": Attack(root_named),
    "fanout": Attack(fanout),
    "unreachable_cycle": Attack(unreachable_cycle),
    "parent_cycle": Attack(parent_cycle),
    "dup_names": Attack(dup_names),
    "bad_names": Attack(bad_names),
    "type_mismatch": Attack(type_mismatch),
    "huge_sparse": Attack(huge_sparse, legal=True),
    "huge_dir": Attack(huge_dir),
    "long_chain": Attack(long_chain, legal=True, scales=True),
    "long_chain_sparse": Attack(long_chain_sparse, scales=True),
    "quadratic_journal": Attack(quadratic_journal, legal=True, scales=True),
    "symlink_farm": Attack(symlink_farm, legal=True),
    "root_links": Attack(root_links, legal=True),
    "case_fold": Attack(case_fold, legal=True),
    "term_inject": Attack(term_inject, legal=True),
    "lf_collision": Attack(lf_collision),
    "lf_file": Attack(lf_file),
    "orphans": Attack(orphans, legal=True, scales=True),
}

BUILDERS: dict[str, Builder] = {name: a.build for name, a in ATTACKS.items()}


def build(name: str, path: str, size: int | str, outside: str = DEFAULT_OUTSIDE) -> None:
    """Build attack ``name`` as a pool of ``size`` at ``path``."""
    ATTACKS[name].build(os.fspath(path), size, outside)
