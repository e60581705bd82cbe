"""The crash tester's own parts (daxfs.crash), on logs small enough to reason
about by hand: the persistence models, the identity keys of crash states,
the recorder's catching of stores made through a mapping, and the flush
discipline checker catching each kind of mistake it exists to catch.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daxfs
from daxfs.crash import (
    MAPPED,
    PAGE,
    CrashPoint,
    CrashState,
    MemoryRegion,
    RecordingRegion,
    ScratchImage,
    check_discipline,
    crash_points,
    crash_states,
    group_commits,
    page_cache_points,
    steps_covered,
)
from daxfs.layout import JOURNAL_HEADER_OFF, JSLOT_OFFSETS, pack_jheader, pack_txn
from daxfs.region import Region

IMAGE = bytes(4 * PAGE)
LOCK = f"/dev/shm/daxfs-crash-tools-lock-{os.getpid()}"  # MemoryRegion's flock file


@pytest.fixture(autouse=True, scope="module")
def _remove_lock_file():
    yield
    if os.path.exists(LOCK):
        os.unlink(LOCK)


# --------------------------------------------------------------------------
# pmem model
# --------------------------------------------------------------------------
def test_a_flushed_and_fenced_store_is_persisted_and_an_unfenced_one_in_flight():
    log = [("store", 0, b"a" * 8), ("flush", 0, 8), ("fence",), ("store", 64, b"b" * 8)]
    points = list(crash_points(IMAGE, log))
    assert [p.index for p in points] == [2, 4]
    assert points[0].persisted == IMAGE and len(points[0].inflight) == 1
    assert points[1].persisted[:8] == b"a" * 8 and points[1].inflight[0].off == 64
    images = {bytes(s.image()[:72]) for s in crash_states(points[1], random.Random(0))}
    assert images == {b"a" * 8 + bytes(64), b"a" * 8 + bytes(56) + b"b" * 8}


def test_a_flush_that_misses_the_line_does_not_persist_it():
    log = [("store", 64, b"x"), ("flush", 0, 64), ("fence",)]
    final = list(crash_points(IMAGE, log))[-1]
    assert final.persisted[64] == 0 and len(final.inflight) == 1


def test_large_stores_are_also_tried_torn():
    data = bytes(range(256)) * 4  # 1 KiB: one unit of 16 lines
    point = list(crash_points(IMAGE, [("store", 0, data)]))[-1]
    images = [bytes(s.image()[:1024]) for s in crash_states(point, random.Random(0))]
    assert bytes(1024) in images and data in images
    torn = [i for i in images if i not in (data, bytes(1024))]
    assert len(torn) == 3
    for img in torn:  # exactly one line left as it was
        missing = [k for k in range(16) if img[k * 64 : k * 64 + 64] != data[k * 64 : k * 64 + 64]]
        assert len(missing) == 1


# --------------------------------------------------------------------------
# page-cache model
# --------------------------------------------------------------------------
def test_page_cache_dirty_pages_are_written_dropped_or_torn():
    log = [("store", 0, b"\xff" * PAGE), ("store", PAGE, b"\xee" * 10)]
    point = list(page_cache_points(IMAGE, log))[-1]
    assert [u.off for u in point.inflight] == [0, PAGE]
    states = list(crash_states(point, random.Random(1)))
    assert len(states) == 9  # 3 fates for each of 2 pages
    first_pages = {bytes(s.image()[:PAGE]) for s in states}
    assert b"\xff" * PAGE in first_pages and bytes(PAGE) in first_pages
    torn = [p for p in first_pages if p not in (b"\xff" * PAGE, bytes(PAGE))]
    assert torn, "a torn page is a mix of written and unwritten 512-byte sectors"
    for page in torn:
        sectors = {page[i : i + 512] for i in range(0, PAGE, 512)}
        assert sectors <= {b"\xff" * 512, bytes(512)}


def test_msync_makes_exactly_its_pages_durable():
    log = [("store", 0, b"a"), ("store", 2 * PAGE, b"b"), ("flush", 0, 1), ("store", 0, b"c")]
    points = list(page_cache_points(IMAGE, log))
    assert len(points) == 2
    final = points[-1]
    assert final.persisted[0:1] == b"a"  # synced, with its content then
    assert sorted(u.off for u in final.inflight) == [0, 2 * PAGE]  # redirtied, never synced
    assert all(s.image()[0:1] in (b"a", b"c") for s in crash_states(final, random.Random(0)))


def test_many_dirty_pages_are_sampled_not_enumerated():
    log = [("store", i * 64, b"z") for i in range(0, 4 * PAGE // 64, PAGE // 64)]
    big = IMAGE * 4
    log += [("store", PAGE * k, b"y") for k in range(4, 16)]
    point = list(page_cache_points(big, log))[-1]
    assert len(point.inflight) == 16
    states = list(crash_states(point, random.Random(0), random_subsets=50))
    assert 50 < len(states) < 3**16


# --------------------------------------------------------------------------
# lazy model (group commit on a page-cache pool)
# --------------------------------------------------------------------------
def _images(log: list[tuple], lazy: bool = True) -> list[bytes]:
    """Every crash image of every crash point of ``log``."""
    return [
        bytes(s.image())
        for point in page_cache_points(IMAGE, log, lazy=lazy)
        for s in crash_states(point, random.Random(0))
    ]


def test_a_home_never_reaches_a_crash_image():
    log = [("begin", "op"), ("home", 0, b"h" * 8), ("store", PAGE, b"s"), ("end", "op"),
           ("sync",), ("home", 2 * PAGE + 8, b"x"), ("flush", 2 * PAGE, 16)]  # fmt: skip
    images = _images(log)
    assert all(img[:8] == bytes(8) and img[2 * PAGE + 8] == 0 for img in images)
    # ... while the store beside it does, or the test would prove nothing
    assert any(img[PAGE : PAGE + 1] == b"s" for img in images)


def test_a_sync_makes_every_dirty_page_durable_and_a_crash_may_come_before_it():
    log = [("store", 0, b"a"), ("store", 3 * PAGE, b"b"), ("sync",), ("store", PAGE, b"c")]
    for lazy in (False, True):  # fdatasync means the same in both page-cache models
        before, after = list(page_cache_points(IMAGE, log, lazy=lazy))
        assert before.index == 2 and before.persisted == IMAGE
        assert [u.off for u in before.inflight] == [0, 3 * PAGE]
        assert after.index == 4
        assert after.persisted[0:1] == b"a" and after.persisted[3 * PAGE : 3 * PAGE + 1] == b"b"
        assert [u.off for u in after.inflight] == [PAGE]


def test_a_crash_may_come_after_each_operation_returned_in_lazy_mode_only():
    log = [("begin", "one"), ("store", 0, b"a"), ("end", "one"),
           ("begin", "two"), ("store", PAGE, b"b"), ("end", "two")]  # fmt: skip
    lazy = list(page_cache_points(IMAGE, log, lazy=True))
    assert [p.index for p in lazy] == [3, 6]  # after "one"; after "two" is the end of the log
    assert [u.off for u in lazy[0].inflight] == [0]
    assert [p.index for p in page_cache_points(IMAGE, log)] == [6]  # msync: none at "end"
    # An operation's end just before a flush is one crash point, not two.
    log = [("store", 0, b"a"), ("end", "op"), ("flush", 0, 1)]
    assert [p.index for p in page_cache_points(IMAGE, log, lazy=True)] == [2, 3]


def test_an_operation_that_returned_may_be_lost_until_a_sync():
    log = [("begin", "op"), ("store", 0, b"a"), ("end", "op")]
    assert {img[:1] for img in _images(log)} == {b"a", b"\0"}
    final = list(page_cache_points(IMAGE, log + [("sync",)], lazy=True))[-1]
    assert final.index == 4 and not final.inflight
    assert {bytes(s.image()[:1]) for s in crash_states(final, random.Random(0))} == {b"a"}


def test_a_group_commit_covers_what_ended_before_its_sync_once_its_mark_is_flushed():
    log = [("begin", "one"), ("end", "one"),
           ("sync",), ("begin", "two"), ("end", "two"),  # (the later sync is the one)
           ("sync",), ("store", 1024, b"mark"), ("flush", 1024, 4), ("fence",)]  # fmt: skip
    commits = group_commits(log)
    assert commits == [(7, 2)]
    assert steps_covered(commits, 7) == 0  # before the mark's msync: both may be lost
    assert steps_covered(commits, 8) == 2
    # A step ending between the sync and the mark is not covered by it.
    late = [("sync",), ("end", "x"), ("flush", 1024, 4)]
    assert steps_covered(group_commits(late), 3) == 0


# --------------------------------------------------------------------------
# identity keys
# --------------------------------------------------------------------------
overlays = st.lists(st.tuples(st.integers(0, 500), st.binary(min_size=0, max_size=40)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(persisted=st.binary(min_size=600, max_size=600), a=overlays, b=overlays)
def test_equal_keys_mean_equal_images(persisted, a, b):
    point = CrashPoint(0, persisted)
    sa, sb = CrashState(point, a), CrashState(point, b)
    if sa.key == sb.key:
        assert sa.image() == sb.image()
    if not a:
        assert sa.image() == bytearray(persisted)


# --------------------------------------------------------------------------
# the scratch image (states built by undo, not by copying the pool)
# --------------------------------------------------------------------------
stores = st.lists(st.tuples(st.integers(0, 560), st.binary(min_size=1, max_size=40)), max_size=4)
steps = st.lists(st.tuples(overlays, stores, st.booleans()), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(persisted=st.binary(min_size=600, max_size=600), steps=steps)
def test_a_scratch_image_builds_each_state_as_a_fresh_copy_would(persisted, steps):
    # Each state's image must not depend on what earlier states and the
    # stores made through the scratch's regions left in the buffer.
    points = [CrashPoint(0, persisted), CrashPoint(1, bytes(reversed(persisted)))]
    scratch = ScratchImage(len(persisted), verify=True)
    for overlays_, stored, second in steps:
        state = CrashState(points[second], overlays_)
        assert scratch.build(state) == state.image()
        region = scratch.region(LOCK)
        for off, data in stored:
            region.store(off, data)
        assert region.changed == len(stored) - _unchanged(state.image(), stored)
        region.close()


def _unchanged(image: bytearray, stores: list[tuple[int, bytes]]) -> int:
    n = 0
    for off, data in stores:
        n += image[off : off + len(data)] == data
        image[off : off + len(data)] = data
    return n


def test_a_store_that_bypasses_the_scratch_region_is_caught():
    point = CrashPoint(0, bytes(64))
    scratch = ScratchImage(64, verify=True)
    scratch.build(CrashState(point, []))
    scratch.buf[3] = 1  # not through region().store: no undo entry
    with pytest.raises(AssertionError, match="bypassed"):
        scratch.build(CrashState(point, []))


def test_an_overlay_that_rewrites_the_persisted_bytes_keys_as_no_change():
    point = CrashPoint(0, b"abcdef")
    assert CrashState(point, [(1, b"bc")]).key == CrashState(point, []).key
    assert CrashState(point, [(1, b"XX"), (1, b"bc")]).key == CrashState(point, []).key
    assert CrashState(point, [(1, b"bc"), (1, b"XX")]).key != CrashState(point, []).key


# --------------------------------------------------------------------------
# the recorder
# --------------------------------------------------------------------------
def test_stores_through_a_mapping_are_caught_at_persist(tmp_path):
    pool = str(tmp_path / "pool")
    daxfs.mkfs(pool, "8M")
    with daxfs.mount(pool) as fs:
        with fs.open("/f", "wb") as f:
            f.write(bytes(8192))
        dev = fs.iomap("/f")[0].device_offset
    rec = RecordingRegion(Region(pool, durability="none"))
    fs = daxfs.pool.mount_region(rec)
    try:
        rec.reset()
        with rec.operation("map store persist"):
            with fs.map("/f", "r+") as m:
                arr = m.ndarray()
                arr[100:110] = 7
                del arr
                m.persist(100, 10)
    finally:
        fs.close()
    stores = [ev for ev in rec.log if ev[0] == "store" and ev[1] <= dev + 100 < ev[1] + len(ev[2])]
    assert stores, "the mapping's store was not logged"
    off, data = stores[0][1], stores[0][2]
    assert data[dev + 100 - off : dev + 110 - off] == b"\x07" * 10
    kinds = [ev[0] for ev in rec.log]
    assert kinds.index("store") < kinds.index("flush") < kinds.index("fence")


def _memory_recorder(model: str) -> RecordingRegion:
    return RecordingRegion(MemoryRegion(bytearray(IMAGE), LOCK), model)


def test_a_lazy_recorder_logs_homes_and_syncs_and_passes_them_through():
    rec = _memory_recorder("lazy")
    assert rec.lazy_capable and rec.durability.name == "msync"  # a page-cache pool
    assert not rec.holds_homes
    rec.store_home(100, b"home")
    assert rec.holds_homes
    rec.sync_file()
    rec.store(200, b"s")
    rec.flush(0, PAGE)  # looks for stores through a mapping: the home is none
    assert rec.log == [("home", 100, b"home"), ("sync",), ("store", 200, b"s"), ("flush", 0, PAGE)]
    assert rec.inner.image[100:104] == b"home"
    rec.drop_homes([(PAGE, 8)])  # another page: the home is still held
    assert rec.holds_homes
    rec.drop_homes()
    assert not rec.holds_homes and len(rec.log) == 4  # no media effect, nothing logged


def test_pmem_and_msync_recorders_take_a_home_for_a_plain_store():
    for model in ("pmem", "msync"):
        rec = _memory_recorder(model)
        assert not rec.lazy_capable
        rec.store_home(100, b"home")
        assert rec.log == [("store", 100, b"home")]


def test_a_sync_logs_stores_through_a_mapping_before_it():
    rec = _memory_recorder("lazy")
    rec.inner.buf[300:302] = b"mm"  # as a user's mapping would, not through the region
    rec.sync_file()
    assert rec.log == [("store", 256, bytes(44) + b"mm" + bytes(18), MAPPED), ("sync",)]


def test_dropped_homes_are_not_taken_for_stores_through_a_mapping(tmp_path):
    # A real lazy region: after drop_homes the private pages read the file
    # again, a change of what the process sees that no store made.
    pool = str(tmp_path / "pool")
    daxfs.mkfs(pool, "8M")
    region = Region(pool)
    if not getattr(region, "lazy_capable", False):
        region.close()
        pytest.skip("no lazy mode on this file system (page-cache files only)")
    rec = RecordingRegion(region, "lazy")
    try:
        off = 5 * PAGE
        rec.store_home(off, b"private")
        assert bytes(region.buf[off : off + 7]) == b"private"
        rec.drop_homes([(off, 7)])
        assert bytes(region.buf[off : off + 7]) != b"private"  # the file's bytes again
        rec.flush(0, region.size)
        assert rec.log == [("home", off, b"private"), ("flush", 0, region.size)]
    finally:
        region.close()


def test_a_crash_image_never_shares_a_real_boot_identity(tmp_path):
    pool = str(tmp_path / "pool")
    daxfs.mkfs(pool, "8M")
    region = Region(pool, durability="none")
    try:
        if not hasattr(region, "boot_identity"):
            pytest.skip("Region has no boot identity yet")
        real = region.boot_identity()
        image = MemoryRegion(bytearray(IMAGE), LOCK)
        assert len(real) == len(image.boot_identity()) == 32
        assert image.boot_identity() != real
        assert RecordingRegion(region, "lazy").boot_identity() == real
    finally:
        region.close()


# --------------------------------------------------------------------------
# flush discipline
# --------------------------------------------------------------------------
def _op(*events):
    return [("begin", "op"), *events, ("end", "op")]


def test_discipline_accepts_store_flush_fence():
    d = check_discipline(_op(("store", 4096 * 100, b"x" * 100), ("flush", 409600, 100), ("fence",)))
    assert d.ok and not d.redundant_flushes and not d.redundant_fences


def test_discipline_catches_a_missing_flush_and_a_missing_fence():
    d = check_discipline(_op(("store", 409600, b"x"), ("fence",)))
    assert d.unflushed == [("op", 409600, 64)]
    d = check_discipline(_op(("store", 409600, b"x"), ("flush", 409600, 1)))
    assert d.unflushed == [("op", 409600, 64)]


def test_discipline_reports_redundant_flushes_and_fences():
    d = check_discipline(
        _op(
            ("store", 409600, b"x"),
            ("flush", 409600, 1),
            ("flush", 409600, 1),
            ("fence",),
            ("fence",),
        )  # fmt: skip
    )
    assert d.ok
    assert d.redundant_flushes == [("op", 409600, 1)] and d.redundant_fences == ["op"]


JOURNAL = (8192, 8192 + 65536)
HOME = 300_000


def _committed(home_data: bytes):
    record = pack_txn(5, [(HOME, home_data)])
    return [("store", JOURNAL[0], record), ("flush", JOURNAL[0], len(record)), ("fence",)]


def test_home_writes_covered_by_a_durable_record_may_stay_unflushed():
    d = check_discipline(_op(*_committed(b"home"), ("store", HOME, b"home")), JOURNAL)
    assert d.ok
    # ... but not a home write the record does not hold
    d = check_discipline(_op(*_committed(b"home"), ("store", HOME, b"HOME")), JOURNAL)
    assert d.unflushed


def test_a_home_written_before_its_record_is_durable_is_misordered():
    record = pack_txn(5, [(HOME, b"home")])
    log = _op(("store", JOURNAL[0], record), ("store", HOME, b"home"),
              ("flush", JOURNAL[0], len(record)), ("fence",))  # fmt: skip
    assert check_discipline(log, JOURNAL).misordered


def test_a_checkpoint_header_before_the_homes_are_durable_is_misordered():
    slot = JOURNAL_HEADER_OFF + JSLOT_OFFSETS[1]
    header = pack_jheader(6)
    good = _op(*_committed(b"home"), ("store", HOME, b"home"), ("flush", HOME, 4), ("fence",),
               ("store", slot, header), ("flush", slot, 16), ("fence",))  # fmt: skip
    assert check_discipline(good, JOURNAL).ok
    bad = _op(*_committed(b"home"), ("store", HOME, b"home"),
              ("store", slot, header), ("flush", slot, 16), ("fence",))  # fmt: skip
    assert check_discipline(bad, JOURNAL).misordered


def test_every_real_operation_keeps_the_discipline(tmp_path):
    """A whole session through the public API, recorded: clean by the checker."""
    pool = str(tmp_path / "pool")
    daxfs.mkfs(pool, "16M")
    rec = RecordingRegion(Region(pool, durability="none"))
    fs = daxfs.pool.mount_region(rec)
    try:
        sb = fs.sb
        steps = {
            "mkdir": lambda: fs.makedirs("/a/b"),
            "write": lambda: fs.open("/a/b/f", "wb").write(np.arange(5000).tobytes()),
            "append": lambda: fs.open("/a/b/f", "ab").write(b"tail"),
            "rename": lambda: fs.rename("/a/b/f", "/a/g"),
            "truncate": lambda: fs.truncate("/a/g", 100),
            "unlink": lambda: fs.unlink("/a/g"),
        }
        for name, step in steps.items():
            with rec.operation(name):
                step()
    finally:
        fs.close()
    d = check_discipline(rec.log, (sb.journal_off, sb.journal_off + sb.journal_len))
    assert d.ok, (d.unflushed, d.misordered)
    assert d.flushes > 0 and not d.redundant_flushes and not d.redundant_fences


def test_stores_through_a_mapping_are_the_users_to_persist():
    # Found by crash-full: a map step whose persist() failed (bad range) left
    # its stores unflushed; that is the user's choice, not a file-system slip.
    mapped = _op(("store", 409600, b"u" * 64, MAPPED))
    assert check_discipline(mapped).ok
    # ... but a store the file system made on the same line is still its own
    mixed = _op(("store", 409600, b"u" * 64, MAPPED), ("store", 409600, b"f"))
    assert check_discipline(mixed).unflushed
    # ... and flushing a user's store is not redundant
    persisted = _op(("store", 409600, b"u" * 64, MAPPED), ("flush", 409600, 64), ("fence",))
    d = check_discipline(persisted)
    assert d.ok and not d.redundant_flushes


def test_persisting_a_mapping_again_is_not_a_redundant_flush():
    # Found by crash-full ("map /A/foo store 60+200" twice): the second store
    # wrote the bytes already there, which the recorder cannot see, so the
    # user's second persist() found nothing pending.  Lines last stored
    # through a mapping are the user's to flush.
    again = _op(
        ("store", 409600, b"u" * 64, MAPPED), ("flush", 409600, 64), ("fence",),
        ("flush", 409600, 64), ("fence",),
    )  # fmt: skip
    assert not check_discipline(again).redundant_flushes
    # A line the file system stored last is still the file system's.
    fs_line = _op(
        ("store", 409600, b"u" * 64, MAPPED), ("store", 409600, b"f"), ("flush", 409600, 64),
        ("fence",), ("flush", 409600, 64), ("fence",),
    )  # fmt: skip
    assert check_discipline(fs_line).redundant_flushes == [("op", 409600, 64)]
