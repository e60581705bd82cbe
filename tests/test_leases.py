"""Allocation windows per process (leases.py): processes sharing a pool
place their small files in chunks of their own and take inode numbers from
ranges of their own; a process alone keeps the single-process policy; the
slot of a process that died is reclaimed; a damaged table costs nothing
but placement, and the checker clears it."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import daxfs
from conftest import script_child, started_together
from daxfs import leases
from daxfs.layout import CHUNK
from daxfs.region import Region


def chunks_of(fs, path: str) -> set[int]:
    return {
        (e.device_offset - fs.sb.data_off) // CHUNK for e in fs.iomap(path) if e.kind == "mapped"
    }


def live_slots(path: str) -> list[int]:
    region = Region(path, readonly=True)
    try:
        return [i for i in range(leases.NSLOTS) if leases.read_slot(region.buf, i)[0]]
    finally:
        region.close()


def create_interleaved(a, b, n: int, size: int = 5000) -> None:
    a.makedirs("/a", exist_ok=True)
    b.makedirs("/b", exist_ok=True)
    for i in range(n):
        for fs, d in ((a, "/a"), (b, "/b")):
            with fs.open(f"{d}/f{i}", "wb") as f:
                f.write(bytes([i % 251]) * (size + i))


def test_two_processes_place_small_files_in_chunks_and_inode_ranges_of_their_own(make_pool):
    path = make_pool(size=256 << 20)
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        create_interleaved(a, b, 300)
        a_chunks = set().union(*(chunks_of(a, f"/a/f{i}") for i in range(300)))
        b_chunks = set().union(*(chunks_of(a, f"/b/f{i}") for i in range(300)))
        assert a_chunks and b_chunks and not a_chunks & b_chunks
        a_inos = {a.stat(f"/a/f{i}").st_ino // leases.INO_RANGE for i in range(300)}
        b_inos = {a.stat(f"/b/f{i}").st_ino // leases.INO_RANGE for i in range(300)}
        assert not a_inos & b_inos
        for i in (0, 150, 299):  # each sees the other's files, byte for byte
            with a.open(f"/b/f{i}", "rb") as f:
                assert f.read() == bytes([i % 251]) * (5000 + i)
        assert a.coherence["full_rebuilds"] == b.coherence["full_rebuilds"] == 0
        assert len(live_slots(path)) == 2
    assert live_slots(path) == []  # unmounting clears the slots
    report = daxfs.check(path)
    assert report.ok and not report.notes, (report.errors, report.notes)


def test_a_process_alone_keeps_the_single_process_policy(make_pool):
    path = make_pool(size=128 << 20)
    with daxfs.mount(path) as a:
        a.mkdir("/d")
        for i in range(50):
            with a.open(f"/d/f{i}", "wb") as f:
                f.write(b"s" * 3000)
        assert a.leases.windows == [] and a.leases.ino_range is None
        assert live_slots(path) == [a.leases.slot]


CHILD = textwrap.dedent("""
    import sys, daxfs
    fs = daxfs.mount(sys.argv[1])
    fs.mkdir("/child")
    with fs.open("/child/f", "wb") as f:
        f.write(b"c" * 5000)
    print("ready", flush=True)
    sys.stdin.readline()
""")


def test_the_slot_and_windows_of_a_killed_process_come_back(make_pool):
    path = make_pool(size=128 << 20)
    with daxfs.mount(path) as a:
        a.mkdir("/a")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert child.stdout.readline().strip() == b"ready"
            with a.open("/a/x", "wb") as f:  # a now shares: it takes a window
                f.write(b"a" * 5000)
            assert a.leases.shared and len(live_slots(path)) == 2
            child_slot = next(s for s in live_slots(path) if s != a.leases.slot)
            child_windows = leases.read_slot(a.region.buf, child_slot)[4]
            assert child_windows and set(child_windows) <= a.leases.others_chunks
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        report = daxfs.check(path)
        assert report.ok and any("gone" in n for n in report.notes), report.notes
        # a learns at its next look at the table (a new window, a new range).
        a.leases._new_window(1)
        assert live_slots(path) == [a.leases.slot]
        assert not a.leases.shared and a.leases.others_chunks == set()
        with a.open("/child/f", "rb") as f:
            assert f.read() == b"c" * 5000


def test_a_table_of_garbage_costs_placement_only(make_pool):
    path = make_pool(size=128 << 20)
    region = Region(path)
    try:
        region.store(leases.TABLE_OFF, os.urandom(1024))
    finally:
        region.close()
    report = daxfs.check(path)
    assert report.ok and report.notes  # hints, noted
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        create_interleaved(a, b, 40)
        assert sorted(b.listdir("/a")) == sorted(f"f{i}" for i in range(40))
    report = daxfs.check(path, repair=True)
    assert report.ok and not report.remaining
    assert daxfs.check(path).notes == []


def test_writes_that_outgrow_their_windows_leave_every_view_of_the_space_exact(make_pool):
    """A first write bigger than a process's windows' room needs a new window,
    which waits for the exclusive lock: the prepared change is undone and run
    again (taking spare windows, so that it happens less often).  The blocks
    it had already taken from its windows must go back, or this process
    would count them used for ever (and, when another process claimed them,
    drop all its caches)."""
    path = make_pool(size=512 << 20)
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        create_interleaved(a, b, 3)
        for i in range(24):
            for fs, d in ((a, "/a"), (b, "/b")):
                with fs.open(f"{d}/big{i}", "wb") as f:
                    f.write(b"m" * (1 << 20))
        a.listdir("/")
        b.listdir("/")
        asked = a.coherence["exclusive_asked"] + b.coherence["exclusive_asked"]
        assert asked > 0  # the case arose
        assert a.coherence["conflicts"] + b.coherence["conflicts"] == 0  # and was no conflict
        # Spare windows: a new window every 4 or so MiB files, not every 2
        # (12 and 13 of these 48 writes without spares).
        assert asked <= 16
        with daxfs.mount(path, readonly=True) as fresh:
            truth = fresh.statvfs().f_bfree
        assert a.statvfs().f_bfree == b.statvfs().f_bfree == truth
        assert a.coherence["full_rebuilds"] == b.coherence["full_rebuilds"] == 0


def test_no_process_allocates_in_anothers_window_until_it_takes_them_back(make_pool):
    """A process stores a new file's bytes into blocks of its windows before
    its change is checked, so another process never places anything there
    (its allocations that may go anywhere hide those windows) until no room
    is left elsewhere: then it takes the windows back, after any store in
    progress, and the owner, finding them gone from its slot, places its
    next file elsewhere."""
    path = make_pool(size=64 << 20)
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        create_interleaved(a, b, 4)
        windows = set(a.leases.windows)
        assert windows and set(read_windows(path, a.leases.slot)) == windows
        with b.open("/big", "wb") as f:  # whole chunks, never a's windows
            f.write(b"B" * (24 << 20))
        assert not chunks_of(b, "/big") & windows
        assert b.coherence["windows_reclaimed"] == 0
        # Fill the pool: past the room outside a's windows, b takes them back.
        i, filled = 0, 0
        try:
            while True:
                with b.open(f"/fill{i}", "wb") as f:
                    f.write(b"F" * (1 << 20))
                    filled += 1 << 20
                i += 1
        except OSError as e:
            assert e.errno == errno.ENOSPC
        assert b.coherence["windows_reclaimed"] >= 1
        assert read_windows(path, a.leases.slot) == []
        reused = set().union(*(chunks_of(b, f"/fill{k}") for k in range(i)))
        assert reused & windows  # the windows' free blocks were used
        with daxfs.mount(path, readonly=True) as fresh:
            assert fresh.statvfs().f_bfree < 2 * (CHUNK // 4096)
        for k in range(i):
            b.unlink(f"/fill{k}")

        # A take-back between a's allocation and its stores: a does not store
        # into blocks that are no longer its own, and runs the change again.
        real = a.leases.hold_for_stores
        raced = []

        def take_back_first(blocks):
            if not raced:
                with b._locked(exclusive=True):
                    b.leases._reclaim_windows()
                raced.append(blocks)
            return real(blocks)

        a._may_say = False  # (a said create takes its blocks under the lock)
        with a.open("/a/first", "wb") as f:  # a new window (the old ones are gone)
            f.write(b"a" * 9000)
        assert a.leases.windows
        a.leases.hold_for_stores = take_back_first
        conflicts = a.coherence["conflicts"]
        with a.open("/a/after", "wb") as f:
            f.write(b"A" * 9000)
        assert raced and a.coherence["conflicts"] == conflicts + 1
        for name, byte in (("/a/first", b"a"), ("/a/after", b"A")):
            with b.open(name, "rb") as f:
                assert f.read() == byte * 9000
    report = daxfs.check(path)
    assert report.ok, report.errors


# The owner of the windows: it writes a 4 MiB file optimistically (whole
# chunks leased for it), then pauses between its stores and its check; on
# a line from the test it finishes the write and says its counters.
PAUSED_OWNER = textwrap.dedent("""
    import json, sys, daxfs
    fs = daxfs.mount(sys.argv[1])
    fs.optimism = True
    fs.makedirs("/a", exist_ok=True)
    print("ready", flush=True)
    sys.stdin.readline()
    release, paused = fs.leases.release_stores, []
    def pause_after_stores():
        release()
        if not paused:
            paused.append(True)
            print(json.dumps(fs.leases.windows), flush=True)  # stored, not checked
            sys.stdin.readline()
    fs.leases.release_stores = pause_after_stores
    with fs.open("/a/big", "wb") as f:
        f.write(bytes(range(256)) * (16 << 10))
    print(json.dumps(dict(fs.coherence)), flush=True)
    sys.stdin.readline()
    fs.close()
""")


def test_windows_taken_back_after_the_owners_stores_are_not_committed_by_it(make_pool):
    """Process b takes a's windows back after a stored a file's bytes there
    and before a's check: b waited for a's stores, not for its commit, so b
    finds those chunks wholly free and leases them for a large write of its
    own, from a view taken before a commits.  If a then committed its file
    there, b's stores would land on it (b's check would undo b's change,
    not bring a's bytes back).  So a must find at its commit that the
    windows are no longer its own, and write its file again elsewhere."""
    path = make_pool(size=64 << 20)
    with daxfs.mount(path) as b:
        b.optimism = True
        b.makedirs("/b")  # (in the table: a shares the pool)
        with b.open("/b/big", "wb"):  # (its name made now: b's write commits no more)
            pass
        with script_child(PAUSED_OWNER, path) as a:
            assert a.stdout.readline().strip() == "ready"
            a.stdin.write("go\n")
            a.stdin.flush()
            a_windows = set(json.loads(a.stdout.readline()))  # a stored, unchecked
            with b._locked(exclusive=True):
                b.leases._reclaim_windows()  # as a process short of room does
                b.leases.lease_chunks(8, None)
            assert a_windows & set(b.leases.windows)  # a's big file's chunks: free in b's view
            real, raced, counters = b.leases.hold_for_stores, [], {}

            def owner_finishes_first(blocks):
                # b took its chunks (caught up before a's commit); a goes on.
                if not raced:
                    raced.append(list(blocks))  # (the change clears its own at an undo)
                    a.stdin.write("go\n")
                    a.stdin.flush()
                    counters.update(json.loads(a.stdout.readline()))
                return real(blocks)

            b.leases.hold_for_stores = owner_finishes_first
            with b.open("/b/big", "r+b") as f:
                f.write(b"B" * (8 * CHUNK))
            per = CHUNK // 4096
            assert a_windows & {s // per for s, _n in raced[0]}  # the race was set up
            with b.open("/a/big", "rb") as f:
                assert f.read() == bytes(range(256)) * (16 << 10)
            with b.open("/b/big", "rb") as f:
                assert f.read() == b"B" * (8 * CHUNK)
            assert counters.get("windows_lost") == 1  # a wrote its file again
            a.stdin.write("done\n")
            a.stdin.flush()
            assert a.wait(timeout=60) == 0
    report = daxfs.check(path)
    assert report.ok, report.errors


def read_windows(path: str, slot: int) -> list[int]:
    region = Region(path, readonly=True)
    try:
        return leases.read_slot(region.buf, slot)[4]
    finally:
        region.close()


# The sizes of the files FILLER writes (scripts/window_race.py reads them too).
FILLER_SIZES = [4096, 5000, 70000, 300000, 1 << 20, 1536 * 1024, 2560 * 1024]

FILLER = f"SIZES = {FILLER_SIZES!r}\n" + textwrap.dedent("""
    import hashlib, json, random, sys, daxfs
    pool, tag, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    fs = daxfs.mount(pool)
    fs.optimism = True
    fs.makedirs(f"/{tag}", exist_ok=True)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    written, refused, i = {}, 0, 0
    while refused < 8:
        i += 1
        size = rng.choice(SIZES)
        data = rng.randbytes(size)
        path = f"/{tag}/f{i}"
        try:
            with fs.open(path, "xb") as f:
                f.write(data)
        except OSError as e:
            assert e.errno == 28, e  # ENOSPC only
            refused += 1
            try:
                fs.unlink(path)  # a file left short by the refused write
            except FileNotFoundError:
                pass
            continue
        written[path] = hashlib.sha256(data).hexdigest()
    print(json.dumps([written, dict(fs.coherence)]), flush=True)
    fs.close()
""")


def test_two_processes_filling_a_pool_lose_no_byte_to_each_others_windows(make_pool):
    """Two real processes write files of 4 KiB to 1.5 MiB into a 48 MiB pool
    until it refuses them: their first writes' bytes are copied into their
    own windows before their changes are checked, the pool's last free
    space is in those windows, and a process short of room takes the
    other's back.  Every file either process was told it wrote must read
    back whole, and the pool must check clean."""
    import hashlib
    import json

    path = make_pool(size=48 << 20)
    kids = started_together(FILLER, [[path, f"p{i}", str(i)] for i in range(2)])
    results = [json.loads(kid.stdout.readline()) for kid in kids]
    for kid in kids:
        assert kid.wait(timeout=120) == 0
    written = {p: h for files, _counters in results for p, h in files.items()}
    assert len(written) > 20
    with daxfs.mount(path, readonly=True) as fs:
        for p, h in written.items():
            with fs.open(p, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == h, p
        # Full: a write is refused only when less than it is free (2.5 MiB at most).
        assert fs.statvfs().f_bfree < (3 << 20) // 4096
    report = daxfs.check(path)
    assert report.ok, report.errors
