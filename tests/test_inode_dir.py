"""inode and dir: extent maps (iomap, merging, cutting, overflow blocks) and
directories (entries, tombstones, compaction, a directory of 100,000 names)."""

from __future__ import annotations

import errno
import os
import random
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daxfs
from daxfs.coherence import add_written
from daxfs.dir import DIR_FTYPE, ROOM_STEPS, Directory
from daxfs.inode import Extent, Inode
from daxfs.journal import Transaction
from daxfs.layout import (
    BLOCK,
    CHUNK,
    DIRBLOCK_HEAD,
    DIRENT_HEAD,
    EXTENTS_PER_BLOCK,
    INLINE_EXTENTS,
    MAX_DIRENT,
    CorruptionError,
)

MiB = 1 << 20


def file_inode(extents=()) -> Inode:
    ino = Inode(5, stat.S_IFREG | 0o644)
    for e in extents:
        ino.add_extent(*e)
    return ino


# ---------------------------------------------------------------------------
# Inode: extent map
# ---------------------------------------------------------------------------
def test_iomap_maximal_extents_and_holes():
    i = file_inode(
        [
            (0, 100 * BLOCK, 2 * BLOCK),
            (2 * BLOCK, 102 * BLOCK, BLOCK),
            (5 * BLOCK, 10 * BLOCK, BLOCK),
        ]
    )
    # The first two are contiguous in the file and on the device: one extent.
    assert i.extents == [(0, 100 * BLOCK, 3 * BLOCK), (5 * BLOCK, 10 * BLOCK, BLOCK)]
    assert i.iomap(0, 7 * BLOCK) == [
        Extent(0, 100 * BLOCK, 3 * BLOCK, "mapped"),
        Extent(3 * BLOCK, None, 2 * BLOCK, "hole"),
        Extent(5 * BLOCK, 10 * BLOCK, BLOCK, "mapped"),
        Extent(6 * BLOCK, None, BLOCK, "hole"),
    ]
    # Unaligned windows are clipped, device offsets shifted to match.
    assert i.iomap(100, 50) == [Extent(100, 100 * BLOCK + 100, 50, "mapped")]
    assert i.iomap(3 * BLOCK - 10, 20) == [
        Extent(3 * BLOCK - 10, 103 * BLOCK - 10, 10, "mapped"),
        Extent(3 * BLOCK, None, 10, "hole"),
    ]
    assert i.iomap(50 * BLOCK, 1) == [Extent(50 * BLOCK, None, 1, "hole")]
    assert i.holes(0, 6 * BLOCK) == [(3 * BLOCK, 2 * BLOCK)]
    assert file_inode().iomap(0, 10) == [Extent(0, None, 10, "hole")]


def test_add_extent_merges_only_when_contiguous_in_file_and_device():
    i = file_inode()
    i.add_extent(BLOCK, 50 * BLOCK, BLOCK)
    i.add_extent(0, 10 * BLOCK, BLOCK)  # file-contiguous, not device-contiguous
    assert len(i.extents) == 2
    i.add_extent(2 * BLOCK, 51 * BLOCK, BLOCK)  # merges with its predecessor
    assert i.extents == [(0, 10 * BLOCK, BLOCK), (BLOCK, 50 * BLOCK, 2 * BLOCK)]
    i.add_extent(4 * BLOCK, 53 * BLOCK, BLOCK)
    i.add_extent(3 * BLOCK, 52 * BLOCK, BLOCK)  # bridges both neighbours
    assert i.extents == [(0, 10 * BLOCK, BLOCK), (BLOCK, 50 * BLOCK, 4 * BLOCK)]
    with pytest.raises(AssertionError):
        i.add_extent(2 * BLOCK, 90 * BLOCK, BLOCK)  # overlaps a mapped range


def test_generation_bumps_on_every_map_change():
    i = file_inode()
    g = i.generation
    i.add_extent(0, 10 * BLOCK, BLOCK)
    assert i.generation == g + 1
    assert i.cut_from(4 * BLOCK) == [] and i.generation == g + 1  # nothing cut: unchanged
    i.cut_from(0)
    assert i.generation == g + 2


def test_cut_from_splits_and_returns_device_ranges():
    i = file_inode(
        [
            (0, 100 * BLOCK, 4 * BLOCK),
            (6 * BLOCK, 200 * BLOCK, 2 * BLOCK),
            (10 * BLOCK, 300 * BLOCK, BLOCK),
        ]
    )
    freed = i.cut_from(2 * BLOCK)
    assert freed == [(102 * BLOCK, 2 * BLOCK), (200 * BLOCK, 2 * BLOCK), (300 * BLOCK, BLOCK)]
    assert i.extents == [(0, 100 * BLOCK, 2 * BLOCK)]
    assert i.cut_from(0) == [(100 * BLOCK, 2 * BLOCK)] and i.extents == []
    with pytest.raises(AssertionError):
        i.cut_from(100)  # must be block aligned


def test_device_before():
    i = file_inode([(0, 100 * BLOCK, 2 * BLOCK)])
    assert i.device_before(2 * BLOCK) == 102 * BLOCK
    assert i.device_before(3 * BLOCK) is None  # a hole before
    assert i.device_before(0) is None


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 60)), max_size=40, unique_by=lambda t: t[0]
    ),
    cut=st.integers(0, 45),
)
def test_extent_map_matches_a_block_model(blocks, cut):
    """Map single blocks in random order: iomap agrees block by block with a
    dict model, extents stay sorted, disjoint and maximal."""
    i = file_inode()
    model = {}
    for fblk, dblk in blocks:
        if dblk in model.values():
            continue
        i.add_extent(fblk * BLOCK, dblk * BLOCK, BLOCK)
        model[fblk] = dblk
    ex = i.extents
    for (f1, d1, n1), (f2, d2, _) in zip(ex, ex[1:], strict=False):
        assert f1 + n1 <= f2
        assert not (f1 + n1 == f2 and d1 + n1 == d2), "not maximal"
    for e in i.iomap(0, 50 * BLOCK):
        for k in range(e.length // BLOCK):
            fblk = e.file_offset // BLOCK + k
            if e.kind == "hole":
                assert fblk not in model
            else:
                assert model[fblk] == e.device_offset // BLOCK + k
    freed = i.cut_from(cut * BLOCK)
    assert sorted(d // BLOCK + k for d, n in freed for k in range(n // BLOCK)) == sorted(
        d for f, d in model.items() if f >= cut
    )
    assert all(f + n <= cut * BLOCK for f, _, n in i.extents)


# ---------------------------------------------------------------------------
# Extent overflow blocks, through the file system
# ---------------------------------------------------------------------------
def test_more_than_six_extents_survive_remount(naive_pool):
    """Interleaved appends to two files on the naive allocator fragment both,
    one extent per block: hundreds of extents, in several overflow blocks."""
    nblocks = 2 * EXTENTS_PER_BLOCK + 40
    fs = daxfs.mount(naive_pool)
    rng = random.Random(1)
    want = {"/a": bytearray(), "/b": bytearray()}
    with fs.open("/a", "wb", buffering=0) as fa, fs.open("/b", "wb", buffering=0) as fb:
        free0 = fs.statvfs().f_bfree  # the root directory has its block now
        for _ in range(nblocks):
            for f, name in ((fa, "/a"), (fb, "/b")):
                blk = rng.randbytes(BLOCK)
                f.write(blk)
                want[name] += blk
    maps = {p: fs.iomap(p) for p in want}
    for p, m in maps.items():
        assert all(e.kind == "mapped" for e in m)
        assert len(m) > INLINE_EXTENTS + EXTENTS_PER_BLOCK, f"{p}: only {len(m)} extents"
    assert_blocks_add_up(fs, free0)
    fs.close()

    fs = daxfs.mount(naive_pool)
    try:
        assert_blocks_add_up(fs, free0)
        for p, data in want.items():
            assert fs.iomap(p) == maps[p]
            with fs.open(p, "rb") as f:
                assert f.read() == data
        # Shrinking releases overflow blocks; the map stays valid across remount.
        fs.truncate("/a", 3 * BLOCK)
        fs.truncate("/b", (INLINE_EXTENTS + 5) * BLOCK)
        fs.close()
        fs = daxfs.mount(naive_pool)
        assert len(fs.iomap("/a")) == 3 and len(fs.iomap("/b")) == INLINE_EXTENTS + 5
        with fs.open("/b", "rb") as f:
            assert f.read() == want["/b"][: (INLINE_EXTENTS + 5) * BLOCK]
        fs.unlink("/a")
        fs.unlink("/b")
        assert fs.statvfs().f_bfree == free0, "data or overflow blocks leaked"
        fs.close()
        fs = daxfs.mount(naive_pool)
        assert fs.statvfs().f_bfree == free0
    finally:
        fs.close()


def assert_blocks_add_up(fs, free_before: int) -> None:
    """st_blocks of /a and /b counts their data and their overflow blocks
    (more than one each here), as ext4's counts its tree's: together they
    are what statvfs says was taken."""
    taken = sum(fs.stat(p).st_blocks * 512 // BLOCK for p in ("/a", "/b"))
    data = sum(e.length // BLOCK for p in ("/a", "/b") for e in fs.iomap(p))
    assert taken > data + 2
    assert taken == free_before - fs.statvfs().f_bfree


def test_iomap_reports_holes_of_sparse_files(fs):
    with fs.open("/s", "wb") as f:
        f.seek(5 * BLOCK)
        f.write(b"x" * 10)
    m = fs.iomap("/s")
    assert m[0] == Extent(0, None, 5 * BLOCK, "hole")
    assert m[1].kind == "mapped" and m[1].file_offset == 5 * BLOCK and m[1].length == 10
    assert fs.iomap("/s", 0, 0) == []
    assert fs.iomap("/s", 5 * BLOCK + 10) == []
    with pytest.raises(OSError) as ei:
        fs.iomap("/s", -1)
    assert ei.value.errno == errno.EINVAL


# ---------------------------------------------------------------------------
# Directory: staged bytes reload to the same entries
# ---------------------------------------------------------------------------
class Media:
    """A plain buffer standing in for the data area, and a block allocator."""

    def __init__(self, nblocks: int = 64):
        self.buf = bytearray(nblocks * BLOCK)
        self.next = 0

    def new_block(self, txn: Transaction) -> list[int]:
        dev = self.next * BLOCK
        self.next += 1
        return [dev]

    def apply(self, txn: Transaction) -> None:
        for off, data in txn.writes:
            self.buf[off : off + len(data)] = data

    def devs(self) -> list[int]:
        return [k * BLOCK for k in range(self.next)]


def reloaded(d: Directory, media: Media) -> dict[str, tuple[int, int]]:
    again = Directory.load(d.ino, memoryview(media.buf), media.devs())
    return {n: (e[0], e[1]) for n, e in again.entries.items()}


def test_directory_add_remove_retarget_reload():
    media, d = Media(), Directory(7)
    t = Transaction()
    d.add("alpha", 10, 8, t, media.new_block)
    d.add("beta", 11, 4, t, media.new_block)
    media.apply(t)
    assert reloaded(d, media) == {"alpha": (10, 8), "beta": (11, 4)}
    assert d.lookup("alpha") == (10, 8) and d.lookup("nope") is None
    t = Transaction()
    assert d.remove("alpha", t) == 10
    assert d.retarget("beta", 12, 8, t) == 11
    media.apply(t)
    assert reloaded(d, media) == {"beta": (12, 8)} and len(d) == 1
    # A removal stages only the 8-byte ino and the header: journal records stay small.
    t = Transaction()
    d.remove("beta", t)
    assert sum(len(w) for _, w in t.writes) <= 8 + DIRBLOCK_HEAD.size


def test_directory_reuses_tombstone_space_by_compaction():
    media, d = Media(), Directory(3)
    per_block = (BLOCK - DIRBLOCK_HEAD.size) // (DIRENT_HEAD.size + 20)
    names = [f"{i:020d}" for i in range(per_block)]
    t = Transaction()
    for i, n in enumerate(names):
        d.add(n, 100 + i, 8, t, media.new_block)
    media.apply(t)
    assert media.next == 1
    t = Transaction()
    for n in names[::2]:
        d.remove(n, t)
    for i in range(len(names) // 2):  # same size entries: fit only after compaction
        d.add(f"{i:019d}x", 500 + i, 8, t, media.new_block)
    media.apply(t)
    assert media.next == 1, "a new block was added although tombstones had room"
    assert reloaded(d, media) == {n: (e[0], e[1]) for n, e in d.entries.items()}


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 60), st.integers(1, 255)), max_size=120)
)
def test_directory_matches_a_dict(ops):
    media, d = Media(256), Directory(9)
    model: dict[str, int] = {}
    for add, k, length in ops:
        name = (str(k) * 255)[:length]
        t = Transaction()
        if add and name not in model:
            d.add(name, 1000 + k, 8, t, media.new_block)
            model[name] = 1000 + k
        elif not add and name in model:
            d.remove(name, t)
            del model[name]
        media.apply(t)
    assert {n: e[0] for n, e in d.entries.items()} == model
    assert {n: ino for n, (ino, _ft) in reloaded(d, media).items()} == model


def room_answer_holds(d: Directory, need: int) -> None:
    """Directory._existing_room's answer for an entry of ``need`` bytes is
    room there is, and None only when no block has room at the step the
    entry is listed at (ROOM_STEPS), at its tail or once compacted."""
    used, dead, newest = d.used, d.dead, len(d.images) - 1
    got = d._existing_room(need)
    if got is not None:
        b, compact = got
        assert BLOCK - used[b] + (dead[b] if compact else 0) >= need
        if compact:  # (a tail with room comes first)
            assert BLOCK - used[newest] < need
        return
    step = next(s for s in ROOM_STEPS if s >= need)
    assert newest < 0 or BLOCK - used[newest] + dead[newest] < need
    assert all(BLOCK - used[b] + dead[b] < step for b in range(newest + 1))


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 400), st.integers(1, 255)), max_size=300)
)
def test_directory_room_is_found_where_there_is_some(ops):
    """After any adds and removes (compactions, new blocks), a placement
    finds room wherever a block has it at the entry's step."""
    media, d = Media(512), Directory(9)
    live: list[str] = []
    for add, k, length in ops:
        name = (f"{k}-" * 128)[:length]
        t = Transaction()
        if add and name not in d.entries:
            d.add(name, 1000 + k, 8, t, media.new_block)
            live.append(name)
        elif not add and live:
            d.remove(live.pop(k % len(live)), t)
        media.apply(t)
        for need in (DIRENT_HEAD.size + 1, DIRENT_HEAD.size + length, MAX_DIRENT):
            room_answer_holds(d, need)
    assert {n: (e[0], e[1]) for n, e in d.entries.items()} == reloaded(d, media)


class CountedList(list):
    """A list that counts its reads by index."""

    reads = 0

    def __getitem__(self, i):
        CountedList.reads += 1
        return super().__getitem__(i)


def test_a_directory_emptied_oldest_first_places_each_name_in_constant_reads():
    """A directory used as a cache (the oldest names removed, new ones
    made) has its room in its oldest blocks, behind every full one: a
    placement must not walk back over them (it read each block's room,
    O(blocks) a create).  Counted in reads of the blocks' fill levels, by
    blocks: with 4 times the blocks a create reads no more."""
    reads_per_create = []
    for nblocks in (50, 200):
        per_block = (BLOCK - DIRBLOCK_HEAD.size) // (DIRENT_HEAD.size + 20)
        media, d = Media(nblocks + 8), Directory(5)
        names = [f"{i:020d}" for i in range(nblocks * per_block)]
        t = Transaction()
        for i, n in enumerate(names):
            d.add(n, 100 + i, 8, t, media.new_block)
        for n in names[: len(names) // 2]:  # the oldest half goes
            d.remove(n, t)
        media.apply(t)
        d.used, d.dead = CountedList(d.used), CountedList(d.dead)
        CountedList.reads = 0
        made = len(names) // 4
        t = Transaction()
        for i in range(made):
            d.add(f"{i:019d}x", 10**6 + i, 8, t, media.new_block)
        media.apply(t)
        assert media.next == nblocks, "the emptied blocks were not reused"
        reads_per_create.append(CountedList.reads / made)
    assert reads_per_create[1] <= 1.2 * reads_per_create[0] + 1, reads_per_create
    assert reads_per_create[1] < 20, reads_per_create


class MediaByRuns(Media):
    """Media whose directory grows by runs of blocks, doubling up to 16, as
    a directory's preallocation takes them."""

    def new_block(self, txn: Transaction) -> list[int]:
        k = max(1, min(16, self.next))
        self.next += k
        return [(self.next - k + i) * BLOCK for i in range(k)]


def test_names_made_in_a_row_share_a_block():
    """A directory that took a run of empty blocks fills them one after
    another: each name made goes where the last one went while it fits,
    not to whichever listed block comes up (said creates leave every block
    they touch for an absorb to write whole)."""
    media, d = MediaByRuns(64), Directory(5)
    blocks = []
    for i in range(3000):
        name = f"file-{i:07d}"
        d.add(name, 100 + i, 8, Transaction(), media.new_block)
        blocks.append(d.entries[name][2])
    switches = sum(1 for a, b in zip(blocks, blocks[1:], strict=False) if a != b)
    assert switches < 2 * len(set(blocks)), (switches, len(set(blocks)))


def test_a_block_room_for_misses_is_found_when_a_record_names_it():
    """Block 0 keeps 44 bytes at its tail, the newest block 30: a fresh copy
    (a mount recovering, another process catching up) lists block 0 only
    for entries up to 32 bytes (ROOM_STEPS), so room_for finds no block
    for an entry of 40 that its writer, placing by the block it placed in
    last, put there.  Made again, a create goes to the block its record
    names (room_in), or, named none (an older writer), to the first block
    with room (any_room): never "no room" where its writer found some."""
    media, d = Media(), Directory(9)
    lengths = [245] * 15 + [193] + [245] * 15 + [207]  # 44, then 30 bytes left
    for i, n in enumerate(lengths):
        txn = Transaction()
        d.add(f"{i:03d}".ljust(n, "x"), 100 + i, 8, txn, media.new_block)
        media.apply(txn)
    assert [BLOCK - u for u in d.used] == [44, 30]
    fresh = Directory.load(9, memoryview(media.buf), media.devs())
    raw = b"n" * 30  # an entry of 40 bytes
    assert ROOM_STEPS[1] < 40 <= 44 < ROOM_STEPS[2]
    assert fresh.room_for(raw) is None
    assert fresh.room_in(0, raw) == (0, False) and fresh.any_room(raw) == (0, False)
    assert fresh.room_in(1, raw) is None and fresh.room_in(2, raw) is None
    assert fresh.room_in(-1, raw) is None
    assert fresh.place("n" * 30, 500, 8, fresh.room_in(0, raw)) == 0
    assert fresh.entries["n" * 30][:3] == (500, 8, 0)


def written_by(txns) -> dict[int, list[tuple[int, bytes]]]:
    """The writes records of these transactions hold, by block, as
    coherence.apply_records gathers them."""
    written: dict[int, list[tuple[int, bytes]]] = {}
    for t in txns:
        for off, data in t.writes:
            add_written(written, off, bytes(data))
    return written


def caught_up(reader: Directory, media: Media, written) -> tuple[Directory, bool]:
    """What another process's copy becomes (coherence.apply_records): its
    refresh from the written ranges, or a fresh load when refresh says no
    (or the directory gained a block); and whether it was loaded again."""
    if len(reader.devs) == len(media.devs()) and reader.refresh(written):
        return reader, False
    return Directory.load(9, memoryview(media.buf), media.devs()), True


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from("aadrrt"), st.integers(0, 40), st.integers(1, 200)), max_size=80
    ),
    sync_every=st.integers(1, 6),
)
def test_a_copy_refreshed_from_written_blocks_equals_a_fresh_load(ops, sync_every):
    """What another process does (coherence.apply_records): its Directory
    copy re-reads only what a record wrote (entries one by one, or a block
    whole).  Whenever refresh says that sufficed, the copy must equal a
    fresh load of the media, its subdirectories included; when it says no
    (a new block), the caller loads again."""
    media, writer = Media(256), Directory(9)
    reader = Directory.load(9, memoryview(media.buf), media.devs())
    unread: list[Transaction] = []
    for i, (op, k, length) in enumerate(ops):
        name = (str(k) * 200)[:length]
        t = Transaction()
        if op in "ad" and name not in writer.entries:
            writer.add(name, 1000 + k * 256 + length, 4 if op == "d" else 8, t, media.new_block)
        elif op == "r" and name in writer.entries:
            writer.remove(name, t)
        elif op == "t" and name in writer.entries and writer.entries[name][1] == 8:
            writer.retarget(name, writer.entries[name][0] + 1, 8, t)
        media.apply(t)
        unread.append(t)
        if i % sync_every == 0:
            reader, _loaded = caught_up(reader, media, written_by(unread))
            unread = []
            fresh = Directory.load(9, memoryview(media.buf), media.devs())
            assert reader.entries == fresh.entries and reader.subdirs == fresh.subdirs
            assert (reader.used, reader.live, reader.dead) == (fresh.used, fresh.live, fresh.dead)
            assert [bytes(x) for x in reader.images] == [bytes(x) for x in fresh.images]


def names_of_images(d: Directory) -> dict[str, tuple[int, int]]:
    """What a parse of a Directory's own block images names."""
    again = Directory.load(
        d.ino, b"".join(bytes(x) for x in d.images), [b * BLOCK for b in range(len(d.images))]
    )
    return {n: (e[0], e[1]) for n, e in again.entries.items()}


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from("aamrrt"), st.integers(0, 30)), min_size=10, max_size=80
    ),
    lag=st.lists(st.integers(0, 4), min_size=1, max_size=20),
)
def test_a_copy_loaded_from_a_newer_block_still_names_what_its_images_hold(ops, lag):
    """A block read with no pool lock may already hold later records' bytes
    than the copy has applied (coherence.catch_up_unlocked): a copy loaded
    then has records to apply that it already holds, in part or whole.
    Refresh lays each record's bytes over the copy, so whatever it does,
    the copy's names must stay those its block images hold (or it says to
    load again), and applying the later records makes it equal a fresh
    load.  (A copy that kept a removed name because the live count
    happened to balance was a real bug, when refresh read the media.)"""
    media, writer = Media(256), Directory(9)
    t = Transaction()
    writer.add("seed", 999, 8, t, media.new_block)  # one block to start with
    media.apply(t)
    reader = Directory.load(9, memoryview(media.buf), media.devs())
    pending: list[Transaction] = []  # records not applied yet
    lags = iter(lag * 10)
    for op, k in ops:
        name = f"n{k}-" + "x" * (k % 7)
        t = Transaction()
        if op == "a" and name not in writer.entries:
            writer.add(name, 1000 + k, 8, t, media.new_block)
        elif op == "m" and name in writer.entries and name + "m" not in writer.entries:
            ino = writer.remove(name, t)  # a rename within the directory
            writer.add(name + "m", ino, 8, t, media.new_block)
        elif op == "r" and name in writer.entries:
            writer.remove(name, t)
        elif op == "t" and name in writer.entries:
            writer.retarget(name, writer.entries[name][0] + 1, 8, t)
        if not t.writes:
            continue
        media.apply(t)
        pending.append(t)
        # Apply all but the newest few records, from the media as it is now.
        keep = min(next(lags, 0), len(pending))
        batch, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
        reader, _loaded = caught_up(reader, media, written_by(batch))
        assert reader.entries.keys() == names_of_images(reader).keys()
        assert {n: e[:2] for n, e in reader.entries.items()} == names_of_images(reader)
    reader, _loaded = caught_up(reader, media, written_by(pending))
    assert {n: e[:2] for n, e in reader.entries.items()} == reloaded(writer, media)


def state_of(d: Directory):
    """Everything a Directory copy holds, to compare two copies."""
    return (
        dict(d.entries),
        dict(d.subdirs),
        [bytes(x) for x in d.images],
        list(d.used),
        list(d.live),
        list(d.dead),
    )


@settings(max_examples=150, deadline=None)
@given(
    seed=st.lists(st.integers(0, 60), max_size=40),
    ours=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=12),
    theirs=st.lists(st.tuples(st.booleans(), st.integers(0, 60)), max_size=12),
)
def test_an_edit_rolled_back_refreshed_and_replayed_is_made_after_the_others(seed, ours, theirs):
    """What an optimistic change does when another process committed edits
    to the same directory meanwhile (coherence.Change._rebase): our copy,
    edited but not committed, is rolled back to exactly what it was, takes
    the other's records in, and makes our edits again after them.  The
    media then holds both processes' edits, as if ours had come second;
    an edit that no longer fits (a name the other took or removed) is
    refused, not made."""
    media = Media(256)
    theirs_dir = Directory(9)
    t = Transaction()
    theirs_dir.add("base", 99, 8, t, media.new_block)  # one block to start with
    for k in seed:
        name = f"s{k}"
        if name not in theirs_dir.entries:
            theirs_dir.add(name, 100 + k, 8, t, media.new_block)
    media.apply(t)
    mine = Directory.load(9, memoryview(media.buf), media.devs())
    before = state_of(mine)

    # Our edits, made on our copy and staged, not committed.
    mine.track()
    staged = Transaction()
    model = {n: e[:2] for n, e in mine.entries.items()}
    for add, k in ours:
        name = f"o{k}" if add else f"s{k}"
        if add and name not in model and BLOCK - mine.used[-1] >= DIRENT_HEAD.size + len(name):
            ftype = DIR_FTYPE if k % 3 == 0 else 8  # subdirectories among them
            mine.add(name, 500 + k, ftype, staged, media.new_block)
            model[name] = (500 + k, ftype)
        elif not add and name in model:
            mine.remove(name, staged)
            del model[name]
    assert mine.rebasable
    edited = {n for n in model} ^ {n for n in before[0]}

    # Theirs, committed meanwhile.
    committed = []
    for add, k in theirs:
        t = Transaction()
        name = f"o{k}" if add else f"s{k}"
        if add and name not in theirs_dir.entries:
            theirs_dir.add(name, 900 + k, DIR_FTYPE if k % 2 else 8, t, media.new_block)
        elif not add and name in theirs_dir.entries:
            theirs_dir.remove(name, t)
        media.apply(t)
        committed.append(t)

    ops, blocks = mine.rollback()
    assert state_of(mine) == before
    assert all(off - off % BLOCK in blocks for off, _d in staged.writes)
    if len(mine.devs) != len(media.devs()) or not mine.refresh(written_by(committed)):
        mine = Directory.load(9, memoryview(media.buf), media.devs())
    assert state_of(mine) == state_of(Directory.load(9, memoryview(media.buf), media.devs()))

    theirs_names = {n: e[:2] for n, e in theirs_dir.entries.items()}
    clash = any((n in theirs_names) != (n in before[0]) for n in edited)
    again = Transaction()
    replayed = mine.replay(ops, again)
    if clash:
        assert not replayed
        return
    if not replayed:  # only for want of room: the change would run again the old way
        assert any(ino is not None for _n, ino, _f in ops)
        return
    media.apply(again)
    want = dict(theirs_names)
    for name, ino, ftype in ops:
        if ino is None:
            del want[name]
        else:
            want[name] = (ino, ftype)
    assert reloaded(mine, media) == want
    assert {n: e[:2] for n, e in mine.entries.items()} == want


def test_refresh_takes_in_a_new_subdirectory_but_not_a_second_name_for_one():
    """Another process's mkdir is taken in by refresh (its copy need not be
    parsed whole), but a record that names a directory a second time (a
    crafted or damaged pool) makes refresh refuse, and the whole load that
    follows says why: two names for one directory multiply walks."""
    media, writer = Media(256), Directory(9)
    t = Transaction()
    writer.add("a", 50, DIR_FTYPE, t, media.new_block)
    media.apply(t)
    reader = Directory.load(9, memoryview(media.buf), media.devs())
    t = Transaction()
    writer.add("b", 51, DIR_FTYPE, t, media.new_block)
    media.apply(t)
    assert reader.refresh(written_by([t]))
    assert reader.lookup("b") == (51, DIR_FTYPE) and reader.subdirs == {50: "a", 51: "b"}
    t = Transaction()
    writer.subdirs.clear()  # a writer that does not check (a crafted record)
    writer.add("c", 50, DIR_FTYPE, t, media.new_block)  # directory 50 again
    media.apply(t)
    assert not reader.refresh(written_by([t]))
    with pytest.raises(CorruptionError, match="two names for directory 50"):
        Directory.load(9, memoryview(media.buf), media.devs())


def test_refresh_takes_appends_removals_and_retargets_without_parsing_the_block(monkeypatch):
    """Following a directory another process fills costs what its records
    wrote, not a parse of the whole block per record."""
    media, writer = Media(256), Directory(9)
    t = Transaction()
    for i in range(20):
        writer.add(f"name{i}", 100 + i, 8, t, media.new_block)
    media.apply(t)
    reader = Directory.load(9, memoryview(media.buf), media.devs())

    def whole_parse(*_a):
        raise AssertionError("the block was parsed whole")

    monkeypatch.setattr(Directory, "_reparse", whole_parse)
    t = Transaction()
    writer.add("new", 500, 8, t, media.new_block)
    writer.remove("name3", t)
    writer.retarget("name7", 777, 8, t)
    media.apply(t)
    assert reader.refresh(written_by([t]))
    assert reader.entries == writer.entries
    assert (reader.used, reader.live, reader.dead) == (writer.used, writer.live, writer.dead)

    # Several records at once, one entry written by two of them.
    retarget, remove = Transaction(), Transaction()
    writer.retarget("name9", 999, 8, retarget)
    media.apply(retarget)
    writer.remove("name9", remove)
    media.apply(remove)
    assert reader.refresh(written_by([retarget, remove]))
    assert reader.entries == writer.entries
    assert (reader.used, reader.live, reader.dead) == (writer.used, writer.live, writer.dead)


# ---------------------------------------------------------------------------
# A directory of 100,000 names, through the file system
# ---------------------------------------------------------------------------
def test_directory_with_100k_entries(make_pool):
    n = 100_000
    pool = make_pool(size=160 * MiB, inodes=n + 1000)
    fs = daxfs.mount(pool)
    try:
        fs.mkdir("/big")
        for i in range(n):
            fs.open(f"/big/f{i:06d}", "xb").close()
        assert len(fs.listdir("/big")) == n
        dir_blocks = fs.stat("/big").st_size // BLOCK
        fs.close()

        fs = daxfs.mount(pool)
        names = fs.listdir("/big")
        assert len(names) == n and len(set(names)) == n
        rng = random.Random(5)
        for i in rng.sample(range(n), 500):
            assert fs.isfile(f"/big/f{i:06d}")
        assert not fs.exists("/big/f100000")
        # Remove every third, check, remount, refill: tombstones get reused.
        for i in range(0, n, 3):
            fs.unlink(f"/big/f{i:06d}")
        fs.close()
        fs = daxfs.mount(pool)
        left = set(fs.listdir("/big"))
        assert len(left) == n - len(range(0, n, 3))
        assert "f000000" not in left and "f000001" in left
        for i in range(0, 3000, 3):
            fs.open(f"/big/g{i:06d}", "xb").close()
        assert fs.stat("/big").st_size // BLOCK == dir_blocks, "tombstones were not reused"
        with pytest.raises(FileExistsError):
            fs.open("/big/f000001", "xb")
    finally:
        fs.close()
        os.unlink(pool)


def test_directories_grow_block_by_block(fs):
    """Directories grow block by block (never whole chunks), whatever their size."""
    fs.mkdir("/d")
    for i in range(400):
        fs.mkdir(f"/d/{'x' * 200}{i:04d}")
    for e in fs.iomap("/d"):
        assert e.kind == "mapped"
    assert fs.stat("/d").st_size % BLOCK == 0 and fs.stat("/d").st_size < CHUNK


# ---------------------------------------------------------------------------
# Damage found at mount or on first use: CorruptionError, never a crash
# ---------------------------------------------------------------------------
def _poke(path: str, off: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def _geometry(path: str):
    from daxfs.layout import unpack_superblock

    with open(path, "rb") as f:
        raw = f.read(BLOCK)
    return unpack_superblock(raw, 0, os.path.getsize(path))


def test_damaged_primary_superblock_falls_back_to_the_replica(pool_path):
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"survives")
    _poke(pool_path, 40, b"\xff\xff")
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "rb") as f:
            assert f.read() == b"survives"
    _poke(pool_path, os.path.getsize(pool_path) - BLOCK + 40, b"\xff\xff")  # both now
    with pytest.raises(daxfs.CorruptionError) as ei:
        daxfs.mount(pool_path)
    assert ei.value.errno == errno.EUCLEAN


def test_damaged_inode_is_refused_at_mount(pool_path):
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"x")
        ino = fs.stat("/f").st_ino
    sb = _geometry(pool_path)
    off = sb.itable_off + ino * 256 + 60
    with open(pool_path, "rb") as f:
        f.seek(off)
        old = f.read(1)[0]
    _poke(pool_path, off, bytes([old ^ 0xFF]))  # a real change, whatever the byte was
    with pytest.raises(daxfs.CorruptionError) as ei:
        daxfs.mount(pool_path)
    assert ei.value.offset == sb.itable_off + ino * 256


def test_damaged_directory_block_is_refused_on_use(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        with fs.open("/d/f", "wb"):
            pass
        [blk] = fs.iomap("/d")
    _poke(pool_path, blk.device_offset + 40, b"\x00\x01")
    with daxfs.mount(pool_path) as fs:
        with pytest.raises(daxfs.CorruptionError):
            fs.listdir("/d")
        assert fs.listdir("/") == ["d"]  # the rest of the pool still works


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 4)), max_size=12),
    st.integers(0, 200),
)
def test_next_data_and_next_hole_agree_with_iomap(spans, off_blocks):
    """SEEK_DATA/SEEK_HOLE by bisection give iomap's answer (the first mapped
    or hole byte at or after the offset) without listing every extent."""
    inode = file_inode()
    taken: set[int] = set()
    for start, n in spans:  # non-overlapping, in any order, some touching
        blocks = set(range(start, start + n))
        if not blocks & taken:
            taken |= blocks
            inode.add_extent(start * BLOCK, (1000 + start) * BLOCK, n * BLOCK)
    off, end = off_blocks * BLOCK // 3, 200 * BLOCK
    kinds = inode.iomap(off, end - off)
    first_mapped = next((max(off, e.file_offset) for e in kinds if e.kind == "mapped"), None)
    first_hole = next((max(off, e.file_offset) for e in kinds if e.kind == "hole"), end)
    assert inode.next_data(off) == first_mapped
    assert inode.next_hole(off) == first_hole


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 4)), max_size=6),
    st.integers(0, 50 * BLOCK),
    st.integers(1, 6 * BLOCK),
)
def test_device_at_is_iomap_when_one_extent_covers_the_range(spans, off, length):
    """The read path's device_at answers where one extent maps the whole
    range, as iomap says (one mapped extent), and None otherwise: files
    of one extent (its short way) and of several (its search) alike."""
    inode = file_inode()
    taken: set[int] = set()
    for start, n in spans:
        blocks = set(range(start, start + n))
        if not blocks & taken:
            taken |= blocks
            inode.add_extent(start * BLOCK, (1000 + 7 * start) * BLOCK, n * BLOCK)
    kinds = inode.iomap(off, length)
    one = kinds[0].device_offset if len(kinds) == 1 and kinds[0].kind == "mapped" else None
    assert inode.device_at(off, length) == one
