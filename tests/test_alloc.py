"""alloc: the huge-page allocator's policy and the naive first-fit allocator.

Block numbers are relative to the data area; a chunk is 512 blocks (2 MiB).
"""

from __future__ import annotations

import copy
import errno

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daxfs.alloc import (
    HugePageAllocator,
    NaiveAllocator,
    RunSet,
    TinyRoom,
    first_free,
    free_runs,
    make_allocator,
)
from daxfs.layout import BLOCKS_PER_CHUNK

C = BLOCKS_PER_CHUNK


def fresh(cls, nblocks: int, used_ranges=()):
    used = np.zeros(nblocks, dtype=bool)
    for s, n in used_ranges:
        used[s : s + n] = True
    return cls.from_map(used)


def blocks_of(runs) -> list[int]:
    return [b for s, n in runs for b in range(s, s + n)]


def recount_free_chunks(used: np.ndarray, nblocks: int) -> int:
    whole = nblocks // C
    return int((~used[: whole * C].reshape(whole, C)).all(axis=1).sum())


def small_chunks_with_room(used: np.ndarray, nblocks: int, n: int) -> bool:
    """Is there a partly used chunk with at least n free blocks?  (A partial
    last chunk is partly used: its blocks past the data area never free.)"""
    nch = -(-nblocks // C)
    padded = np.ones(nch * C, dtype=bool)
    padded[:nblocks] = used
    free = C - padded.reshape(nch, C).sum(axis=1)
    return bool(((free > 0) & (free < C) & (free >= n)).any())


# ---------------------------------------------------------------------------
# RunSet and helpers
# ---------------------------------------------------------------------------
def test_free_runs_finds_runs_of_false():
    used = np.array([True, False, False, True, False, True, True, False])
    assert free_runs(used) == [(1, 2), (4, 1), (7, 1)]
    assert free_runs(np.ones(4, dtype=bool)) == []
    assert free_runs(np.zeros(3, dtype=bool)) == [(0, 3)]


def test_runset_merges_neighbours_and_refuses_double_free():
    rs = RunSet()
    rs.add(10, 5)
    rs.add(20, 5)
    rs.add(15, 5)  # bridges both
    assert list(rs.by_start.items()) == [(10, 15)] and rs.total == 15
    with pytest.raises(AssertionError):
        rs.add(12, 1)
    with pytest.raises(AssertionError):
        rs.add(24, 3)  # overlaps the tail
    rs.take(12, 3)
    assert list(rs.by_start.items()) == [(10, 2), (15, 10)] and rs.total == 12
    assert rs.take_at(16, 100) == 9 and rs.run_containing(15) == (15, 1)
    assert rs.best_fit(2) == (10, 2)
    assert rs.best_fit(50) == (10, 2)  # none big enough: the largest


def test_make_allocator_by_name():
    assert isinstance(make_allocator("hugepage", 4 * C), HugePageAllocator)
    assert isinstance(make_allocator("naive", 4 * C), NaiveAllocator)


# ---------------------------------------------------------------------------
# HugePageAllocator
# ---------------------------------------------------------------------------
def test_large_requests_get_whole_aligned_chunks():
    a = fresh(HugePageAllocator, 8 * C)
    assert a.free_chunks == 8
    runs = a.alloc_chunks(3)
    for s, n in runs:
        assert s % C == 0 and n % C == 0
    assert sum(n for _s, n in runs) == 3 * C
    assert a.free_chunks == 5 and a.free_blocks == 5 * C


def test_take_whole_takes_only_a_wholly_free_chunk():
    """A chunk leased for a large write is taken whole (leases.take_chunks),
    and only while nothing in it is used."""
    a = fresh(HugePageAllocator, 4 * C, used_ranges=[(C + 5, 1)])
    assert not a.take_whole(1)  # one block used
    assert a.take_whole(2)
    assert not a.take_whole(2)  # taken already
    assert a.used_map()[2 * C : 3 * C].all() and a.free_chunks == 2
    assert a.free_blocks == 4 * C - 1 - C
    a.free(2 * C, C)
    assert a.free_chunks == 3 and sorted(a.alloc_chunks(3)) == [(0, C), (2 * C, 2 * C)]


def test_large_request_contiguous_with_hint():
    a = fresh(HugePageAllocator, 8 * C)
    [(s, n)] = a.alloc_chunks(1)
    assert n == C
    # The next chunk right after the previous one, when it is free.
    assert a.alloc_chunks(2, hint=s + n) == [(s + n, 2 * C)]
    # A hint at a used chunk is ignored; still whole aligned chunks.
    runs = a.alloc_chunks(1, hint=s)
    assert runs[0][0] % C == 0 and runs[0][0] not in (s, s + C, s + 2 * C)


def test_large_request_best_fit_among_free_chunk_runs():
    # Free chunk runs: [0,1) [2,5) [6,8): a request for 2 takes the 2-run.
    a = fresh(HugePageAllocator, 8 * C, [(1 * C, C), (5 * C, C)])
    assert a.alloc_chunks(2) == [(6 * C, 2 * C)]
    assert a.alloc_chunks(1) == [(0, C)]


def test_large_request_falls_back_to_small_blocks_when_chunks_run_short():
    # Only one whole chunk free, but 700 free blocks in total.
    a = fresh(HugePageAllocator, 3 * C, [(0, 300), (C, C - 300)])
    free_before = a.free_blocks
    assert a.free_chunks == 1
    with pytest.raises(OSError) as ei:
        a.alloc_chunks(3)
    assert ei.value.errno == errno.ENOSPC and a.free_blocks == free_before
    runs = a.alloc_chunks(2)
    assert sum(n for _s, n in runs) == 2 * C
    assert runs[0] == (2 * C, C)
    assert len(set(blocks_of(runs))) == 2 * C


def test_small_requests_pack_into_one_chunk():
    a = fresh(HugePageAllocator, 8 * C)
    got = [a.alloc_blocks(1) for _ in range(10)]
    chunks = {r[0][0] // C for r in got}
    assert len(chunks) == 1, "small allocations should share one chunk"
    assert a.free_chunks == 7
    # Packed: the 10 blocks are the first 10 of that chunk, in order.
    c = chunks.pop()
    assert [r[0] for r in got] == [(c * C + i, 1) for i in range(10)]


def test_small_request_uses_partly_used_chunk_before_splitting():
    # Chunk 0 is partly used (100 free); chunk 1..3 whole.
    a = fresh(HugePageAllocator, 4 * C, [(0, C - 100)])
    assert a.free_chunks == 3
    runs = a.alloc_blocks(100)
    assert all(s // C == 0 for s, _ in runs)
    assert a.free_chunks == 3, "a whole chunk was split although a small chunk had room"


def test_free_chunk_split_only_when_no_small_chunk_has_room():
    a = fresh(HugePageAllocator, 4 * C, [(0, C - 1)])  # chunk 0 has exactly 1 free block
    runs = a.alloc_blocks(2)  # no small chunk has 2: split a whole one
    assert a.free_chunks == 2
    assert all(s // C != 0 for s, _ in runs)
    assert a.alloc_blocks(1) == [(C - 1, 1)]  # the 1-block hole in chunk 0 still fits 1
    assert a.free_chunks == 2


def test_small_request_best_fit_among_small_chunks():
    # chunk 0: 50 free, chunk 1: 10 free, chunk 2: 200 free.
    a = fresh(HugePageAllocator, 4 * C, [(0, C - 50), (C, C - 10), (2 * C, C - 200)])
    runs = a.alloc_blocks(8)
    assert all(s // C == 1 for s, _ in runs)
    runs = a.alloc_blocks(40)
    assert all(s // C == 0 for s, _ in runs)


def test_small_request_with_hint_is_contiguous():
    a = fresh(HugePageAllocator, 4 * C)
    [(s, n)] = a.alloc_blocks(4)
    a.alloc_blocks(4)  # someone else takes the following blocks
    other = a.alloc_blocks(3, hint=s + n)
    assert other[0][0] != s + n  # taken: hint not honoured
    [(s2, n2)] = a.alloc_blocks(2)
    assert a.alloc_blocks(5, hint=s2 + n2) == [(s2 + n2, 5)]


def test_emptied_small_chunk_returns_to_whole_pool():
    a = fresh(HugePageAllocator, 4 * C)
    r1 = a.alloc_blocks(3)
    r2 = a.alloc_blocks(7)
    assert a.free_chunks == 3
    for s, n in r1:
        a.free(s, n)
    assert a.free_chunks == 3
    for s, n in r2:
        a.free(s, n)
    assert a.free_chunks == 4 and a.free_blocks == 4 * C
    # And it can again be handed out whole.
    assert sum(n for _s, n in a.alloc_chunks(4)) == 4 * C


def test_a_trimmed_tail_is_taken_only_once_whole_chunks_are_scarce():
    """Chunk 0 holds a large file's last window, its tail trimmed (hold_tail,
    then the free): small requests split whole chunks first, so that chunk 0
    is whole again once the file goes, until less than SCARCE of the free
    space is in whole chunks; then they fill the tail before splitting
    another (the last whole chunks are kept for large files)."""
    a = fresh(HugePageAllocator, 8 * C, [(0, C)])
    a.hold_tail(0, owner=7)
    a.free(3, C - 3)  # the trim: the window keeps its first 3 blocks
    assert a.free_chunks == 7 and a.tails == {0: 7}
    split = 0
    while not a.whole_chunks_scarce():
        assert all(s // C != 0 for s, _ in a.alloc_blocks(C)), "small blocks went into the tail"
        split += 1
    assert split == 5 and a.free_chunks == 2
    assert blocks_of(a.alloc_blocks(2)) == [3, 4]  # the tail, with whole chunks left
    assert a.free_chunks == 2
    assert a.alloc_blocks(1, hint=5) == [(5, 1)]  # and the file's own appends
    a.free(0, 6)  # the file goes, and what the tail lent
    assert a.free_chunks == 3 and 0 not in a.tails


def test_a_file_regrowing_into_its_trimmed_tail_takes_it_in_place():
    a = fresh(HugePageAllocator, 2 * C, [(0, C)])
    a.hold_tail(0, owner=7)
    a.free(10, C - 10)
    assert a.alloc_blocks(20, hint=10) == [(10, 20)]
    a.free(0, 30)
    assert a.free_chunks == 2 and not a.tails


def test_a_moved_tail_goes_into_the_fullest_partly_used_chunk_that_holds_it():
    """alloc_packed, for a tail moved out of its chunk: the partly used chunk
    (small or another tail's) with the fewest free blocks that holds it
    all, never the chunk it leaves, never a whole chunk split for it; the
    holes of several when none holds it; None, taking nothing, when the
    partly used chunks do not hold it."""
    # Chunk 0: 10 free; chunk 1: 100 free; chunk 2: whole; chunk 3: a tail, 50 free.
    used = [(0, C - 10), (C, C - 100), (3 * C, C - 50)]
    a = fresh(HugePageAllocator, 4 * C, used)
    a.hold_tail(3, owner=9)
    assert {s // C for s in blocks_of(a.alloc_packed(20, avoid=3))} == {1}
    assert {s // C for s in blocks_of(a.alloc_packed(5, avoid=0))} == {3}  # 45 free < 80
    assert a.alloc_packed(300, avoid=1) is None  # 10 + 45 < 300: nothing taken
    assert a.free_chunks == 1 and a.free_blocks == 10 + 80 + C + 45
    got = blocks_of(a.alloc_packed(100, avoid=2))  # none holds 100: fullest first
    assert len(got) == 100 and [s // C for s in got].count(0) == 10
    assert [s // C for s in got].count(3) == 45 and [s // C for s in got].count(1) == 45
    assert a.free_chunks == 1  # chunk 2 was never split


def test_whole_chunks_are_scarce_below_the_share():
    a = fresh(HugePageAllocator, 4 * C, [(0, C // 2)])
    assert not a.whole_chunks_scarce()  # 3 whole of 3.5 chunks free
    a.alloc_chunks(2)
    assert a.whole_chunks_scarce()  # 1 whole of 1.5 chunks free: 0.67 < 0.75


def test_enospc_takes_nothing():
    a = fresh(HugePageAllocator, 2 * C + 100, [(0, 5)])
    used_before, free_before, chunks_before = a.used_map(), a.free_blocks, a.free_chunks
    for call in (lambda: a.alloc_blocks(free_before + 1), lambda: a.alloc_chunks(3)):
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.ENOSPC
        assert a.free_blocks == free_before and a.free_chunks == chunks_before
        assert (a.used_map() == used_before).all()
    # Exactly everything is still allocatable.
    runs = a.alloc_blocks(free_before)
    assert len(set(blocks_of(runs))) == free_before and a.free_blocks == 0


def test_partial_last_chunk_never_becomes_whole():
    a = fresh(HugePageAllocator, 2 * C + 100)
    assert a.free_chunks == 2 and a.free_blocks == 2 * C + 100
    runs = a.alloc_blocks(100)  # the partial chunk is a small chunk: used first
    assert all(s >= 2 * C for s, _ in runs) and a.free_chunks == 2
    for s, n in runs:
        a.free(s, n)
    assert a.free_chunks == 2 and a.free_blocks == 2 * C + 100


def test_free_of_unallocated_blocks_is_refused():
    for cls in (HugePageAllocator, NaiveAllocator):
        a = fresh(cls, 2 * C)
        [(s, n)] = a.alloc_blocks(4)
        with pytest.raises(AssertionError):
            a.free(s + 2, 4)
        with pytest.raises(AssertionError):
            a.free(2 * C - 1, 2)


# ---------------------------------------------------------------------------
# NaiveAllocator
# ---------------------------------------------------------------------------
def test_naive_first_fit_in_address_order():
    a = fresh(NaiveAllocator, 2 * C)
    assert a.alloc_blocks(3) == [(0, 3)]
    assert a.alloc_blocks(2) == [(3, 2)]
    a.free(1, 1)
    a.free(3, 1)
    # First fit: lowest addresses first, even if it fragments the request.
    assert a.alloc_blocks(3) == [(1, 1), (3, 1), (5, 1)]
    assert a.free_blocks == 2 * C - 6


def test_naive_chunks_have_no_alignment_policy():
    a = fresh(NaiveAllocator, 4 * C)
    a.alloc_blocks(1)
    assert a.alloc_chunks(1) == [(1, C)]  # not aligned: plain first fit
    assert a.free_chunks == 2


def test_naive_hint_and_enospc():
    a = fresh(NaiveAllocator, C)
    [(s, n)] = a.alloc_blocks(10)
    a.alloc_blocks(1)
    a.free(s, n)
    assert a.alloc_blocks(3, hint=4) == [(4, 3)]
    free_before = a.free_blocks
    with pytest.raises(OSError) as ei:
        a.alloc_blocks(free_before + 1)
    assert ei.value.errno == errno.ENOSPC and a.free_blocks == free_before


# ---------------------------------------------------------------------------
# Property: random alloc/free sequences keep the books straight.
# ---------------------------------------------------------------------------
ops = st.lists(
    st.one_of(
        st.tuples(st.just("blocks"), st.integers(1, 1200), st.booleans()),
        st.tuples(st.just("chunks"), st.integers(1, 4), st.booleans()),
        st.tuples(st.just("free"), st.integers(0, 10**6), st.integers(0, 10**6)),
        # A single unhinted block and a single block freed: what a 4 KiB
        # file's create and unlink ask (each written out: _take_tiny, _free_one).
        st.tuples(st.just("blocks"), st.just(1), st.just(False)),
        st.tuples(st.just("free"), st.integers(0, 10**6), st.just(0)),
        # Single blocks taken ahead in one step (a said create's stash).
        st.tuples(st.just("singles"), st.integers(1, 600), st.just(False)),
        # Blocks another process took, claimed from its record (one block:
        # a said create or fill made again, written out: _claim_one).
        st.tuples(st.just("claim"), st.integers(0, 10**6), st.sampled_from([1, 1, 2, 600])),
    ),
    max_size=60,
)


def assert_books_agree(a: HugePageAllocator) -> None:
    """The huge-page allocator's indexes say what its per-chunk counts and
    maps say: partly used chunks listed once by their free count (in
    tail_room when they hold a tail), whole ones in the run set, single
    blocks counted, used, and their chunks with room first in tiny_room."""
    per = BLOCKS_PER_CHUNK
    free = a.chunk_free.tolist()
    partly = {(f, c) for c, f in enumerate(free) if 0 < f < per}
    assert set(a.small) | set(a.tail_room) == partly
    assert len(a.small) + len(a.tail_room) == len(partly)
    assert all(c in a.tails for _f, c in a.tail_room)
    assert not any(c in a.tails for _f, c in a.small)
    assert set(a.maps) == {c for _f, c in partly}
    assert all(per - int(np.count_nonzero(m)) == free[c] for c, m in a.maps.items())
    whole = [c for c, f in enumerate(free) if f == per]
    assert a.whole.total == len(whole) == sum(n for _s, n in a.whole.by_start.items())
    assert all(a.whole.run_containing(c) for c in whole)
    counts = a.tiny_count.tolist()
    assert {c for c, n in enumerate(counts) if n} == set(a.tiny)
    for c, m in a.tiny.items():
        assert int(np.count_nonzero(m)) == counts[c]
        assert a.used_in_chunk(c)[m].all(), "a single block is marked free"
    assert a.tiny_room.key == {c: -counts[c] for c in a.tiny if free[c]}


def take_singles(a, k: int, shadow, held: list, free_now: int) -> None:
    """alloc_singles(k): at most k blocks, none used, at least one while
    any is free, and the blocks k single allocations would have given
    (asked of a copy), ENOSPC only when none is free."""
    twin = copy.deepcopy(a)
    try:
        got = a.alloc_singles(k)
    except OSError as e:
        assert e.errno == errno.ENOSPC and free_now == 0
        return
    assert 1 <= len(got) <= k and len(set(got)) == len(got)
    assert not shadow[got].any(), "a block was handed out twice"
    assert got == [twin.alloc_blocks(1)[0][0] for _ in got]
    shadow[got] = True
    held.extend((b, 1) for b in got)


def claim_some(a, i: int, n: int, shadow, held: list) -> None:
    """Claim up to n free blocks from the i-th free one (as far as they
    run free), and refuse a claim of a used block, changing nothing."""
    free = np.flatnonzero(~shadow)
    if len(free):
        b = int(free[i % len(free)])
        k = 1
        while k < n and b + k < len(shadow) and not shadow[b + k]:
            k += 1
        a.claim(b, k)
        shadow[b : b + k] = True
        held.append((b, k))
    used = np.flatnonzero(shadow)
    if len(used):
        before = a.free_blocks
        with pytest.raises(AssertionError):
            a.claim(int(used[i % len(used)]), 1)
        assert a.free_blocks == before


@pytest.mark.parametrize("cls", [HugePageAllocator, NaiveAllocator])
@given(
    nblocks=st.sampled_from([6 * C, 6 * C + 77, 3 * C + 511]),
    pre=st.lists(st.tuples(st.integers(0, 6 * C), st.integers(1, 700)), max_size=4),
    program=ops,
)
def test_random_alloc_free_keeps_accounting(cls, nblocks, pre, program):
    shadow = np.zeros(nblocks, dtype=bool)
    for s, n in pre:
        shadow[s : s + n] = True
    a = cls.from_map(shadow.copy())
    held: list[tuple[int, int]] = [(s, n) for s, n in free_runs(~shadow)]  # pre-used runs
    last_end = None
    for op in program:
        free_now = int((~shadow).sum())
        if op[0] == "singles":
            take_singles(a, op[1], shadow, held, free_now)
        elif op[0] == "claim":
            claim_some(a, op[1], op[2], shadow, held)
        elif op[0] in ("blocks", "chunks"):
            kind, n, use_hint = op
            want = n if kind == "blocks" else n * C
            hint = last_end if use_hint else None
            room = small_chunks_with_room(shadow, nblocks, want)
            chunks_before = a.free_chunks
            try:
                runs = (a.alloc_blocks if kind == "blocks" else a.alloc_chunks)(n, hint)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                assert want > free_now, "ENOSPC although enough blocks were free"
                assert (a.used_map()[:nblocks] == shadow).all(), "a failed allocation took blocks"
            else:
                got = blocks_of(runs)
                assert len(got) == want == len(set(got))
                assert all(0 <= b < nblocks for b in got)
                assert not shadow[got].any(), "a block was handed out twice"
                shadow[got] = True
                held.extend(runs)
                last_end = runs[-1][0] + runs[-1][1]
                if cls is HugePageAllocator and kind == "blocks" and hint is None and room:
                    assert a.free_chunks == chunks_before, (
                        "split a whole chunk although a small chunk had room"
                    )
                if cls is HugePageAllocator and kind == "chunks" and chunks_before >= n:
                    assert all(s % C == 0 and k % C == 0 for s, k in runs)
        elif held:
            _, i, j = op
            s, n = held.pop(i % len(held))
            k = 1 + j % n  # free a prefix of the run, keep the rest
            a.free(s, k)
            shadow[s : s + k] = False
            if k < n:
                held.append((s + k, n - k))
        assert a.free_blocks == int((~shadow).sum())
        assert a.free_chunks == recount_free_chunks(shadow, nblocks)
        assert (a.used_map()[:nblocks] == shadow).all()
        if cls is HugePageAllocator:
            assert_books_agree(a)


# ---------------------------------------------------------------------------
# building from the mount scan's runs
# ---------------------------------------------------------------------------
@given(
    nblocks=st.integers(1, 12 * C),
    cuts=st.lists(st.integers(0, 12 * C), max_size=60),
    keep=st.lists(st.booleans(), min_size=61, max_size=61),
    cls=st.sampled_from([HugePageAllocator, NaiveAllocator]),
)
def test_an_allocator_built_from_runs_knows_every_block(nblocks, cuts, keep, cls):
    """The scan gives sorted runs that may touch (one per extent); whatever
    chunks they fill, split or leave, the allocator's block state, counts
    and free runs are those of the map the runs draw."""
    edges = sorted({c for c in cuts if c < nblocks} | {0, nblocks})
    pairs = zip(zip(edges, edges[1:], strict=False), keep, strict=False)
    runs = [(a, b - a) for (a, b), k in pairs if k]
    used = np.zeros(nblocks, dtype=bool)
    for s, n in runs:
        used[s : s + n] = True
    a = cls(
        nblocks,
        (
            np.array([s for s, _ in runs], dtype=np.int64),
            np.array([n for _, n in runs], dtype=np.int64),
        ),
    )
    assert (a.used_map()[:nblocks] == used).all() and a.used_map()[nblocks:].all()
    assert a.free_blocks == int((~used).sum())
    assert a.free_chunks == recount_free_chunks(used, nblocks)
    assert a.free_runs_in(0, nblocks) == free_runs(used)
    for c in a.maps:
        assert 0 < a.chunk_free[c] < C, "only a partly used chunk keeps a block map"


def test_a_terabyte_of_free_space_costs_bytes_per_chunk_not_per_block():
    a = HugePageAllocator(1 << 28)  # 1 TiB of 4 KiB blocks
    assert a.free_chunks == 1 << 19 and not a.maps
    assert a.chunk_free.nbytes <= 4 << 19
    runs = a.alloc_blocks(3) + a.alloc_chunks(2)
    assert len(a.maps) == 1  # the chunk the small blocks split
    for s, n in runs:
        a.free(s, n)
    assert a.free_chunks == 1 << 19 and not a.maps


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 90), st.integers(-30, -1)), max_size=400))
def test_tiny_room_first_is_the_chunk_holding_the_most_single_blocks(steps):
    """TinyRoom (a heap with stale entries skipped) against a dict: first()
    is the chunk with the lowest key, the lowest-numbered of equals, after
    any adds (a chunk's count changing) and discards; stale entries do not
    pile up."""
    room, model = TinyRoom(), {}
    for add, c, key in steps:
        if add:
            room.add(c, key)
            model[c] = key
        else:
            room.discard(c)
            model.pop(c, None)
        want = min(((k, ch) for ch, k in model.items()), default=(None, None))[1]
        assert room.first() == want
        assert bool(room) == bool(model)
        assert room.items() == sorted((k, ch) for ch, k in model.items())
        assert len(room._heap) <= 2 * len(model) + 64


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=600), st.integers(1, 700))
def test_first_free_is_the_first_free_runs_cut_to_n(flags, n):
    """first_free (bytes.find over a chunk map) against free_runs: the same
    runs in order, the last cut so that they hold min(n, free) blocks."""
    used = np.array(flags, dtype=bool)
    want, left = [], n
    for start, length in free_runs(used):
        if not left:
            break
        want.append((start, min(length, left)))
        left -= min(length, left)
    assert first_free(used, n) == want
