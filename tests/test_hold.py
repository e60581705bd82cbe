"""The pool lock kept between said changes (logical.py, "Keeping the lock").

A writer alone on its pool keeps the exclusive flock from one said change
to the next.  These tests look at the kernel's own lock state from
another open description (a real flock, a real OFD pin) and use real
processes for what another process must see: the lock let go when the
writer stops calling, the pins it put off taken before anyone can look,
a second mount never waiting on a busy writer for long.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import textwrap
import time

import pytest

import daxfs
from conftest import script_child
from daxfs import coherence, logical
from daxfs.pins import pinned_by_others


def lock_is_free(path: str, op: int = fcntl.LOCK_SH) -> bool:
    """Can another open description take the pool lock (shared, or ``op``)
    right now?"""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def wait_for(predicate, seconds: float = 5.0) -> float:
    """Seconds until ``predicate()`` held; fails the test past ``seconds``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < seconds, "never happened"
        time.sleep(0.002)
    return time.monotonic() - start


def a_marked_wait_gets_the_lock(path: str) -> None:
    """Another open description waits for the exclusive pool lock as
    coherence.lock_pool does (its wait marked) and gets it within 5 s."""
    lock = os.open(path, os.O_RDONLY)
    try:
        began = time.monotonic()
        coherence.lock_pool(lock, fcntl.LOCK_EX)
        assert time.monotonic() - began < 5.0
        fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        os.close(lock)


def made_said(fs, path: str, data: bytes) -> None:
    """/d with its first block (made the usual way), then ``path`` (in /d)
    made by a said create, which leaves the lock kept."""
    fs.mkdir("/d")
    fs.write_bytes("/d/first", b"1")
    fs.write_bytes(path, data)
    assert fs.journal.log_records()[-1][1].creates and fs._held


def test_a_writer_alone_keeps_the_lock_until_it_stops_calling(pool_path):
    """Said changes keep the lock (another description cannot take it); a
    call the usual way lets it go first; a writer that stops calling lets
    it go within HOLD_IDLE (the holder thread)."""
    fs = daxfs.mount(pool_path)
    try:
        made_said(fs, "/d/a", b"a" * 100)
        assert not lock_is_free(pool_path)
        fs.mkdir("/e")  # the usual way: its own lock, then nothing kept
        assert not fs._held and lock_is_free(pool_path)
        fs.write_bytes("/d/b", b"b" * 100)
        assert fs._held
        waited = wait_for(lambda: lock_is_free(pool_path))
        assert waited < logical.HOLD_IDLE * 2 + 1.0
        assert not fs._held
        assert fs.read_bytes("/d/a") == b"a" * 100 and fs.read_bytes("/d/b") == b"b" * 100
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


def test_a_writer_alone_on_a_version_10_pool_keeps_the_lock_until_a_wait_is_marked(
    make_pool, monkeypatch
):
    """On a version 10 pool every process that can wait for the pool lock
    marks its wait, so a hold alone runs past HOLD_SECONDS with no pause
    (HOLD_ALONE_MOST is 30 s here: only a mark ends it): a marked waiter
    gets the lock from a writer busy with said changes (at its next look,
    every BESIDE_LOOK) and from one that stopped calling (the holder
    thread, every HOLD_IDLE).  On an older pool, where a waiter may not
    mark, a hold still ends after HOLD_SECONDS.  (The absorber's timer,
    whose absorb would let the lock go too, is 30 s here as well, and the
    journal 8 MiB: a said change the log has no room for goes the usual
    way, letting the hold go first.)"""
    monkeypatch.setattr(logical, "HOLD_ALONE_MOST", 30.0)
    monkeypatch.setattr(logical, "ABSORB_SECONDS", 30.0)
    pool_path = make_pool(size=512 << 20)
    fs = daxfs.mount(pool_path)
    let_go = []
    plain_let_go = fs._let_go
    monkeypatch.setattr(fs, "_let_go", lambda pause: let_go.append(pause) or plain_let_go(pause))
    try:
        made_said(fs, "/d/a", b"a" * 100)
        assert fs._held and fs.sb.version >= 10
        ends = time.monotonic() + logical.HOLD_SECONDS * 6
        while time.monotonic() < ends:  # (one name: the directory needs no new block)
            fs.write_bytes("/d/busy", b"b")
            fs.unlink("/d/busy")
        # (an absorb the lag asks for goes the usual way, which lets a hold
        # go with no pause; a hold whose time was up would pause)
        assert fs._held and True not in let_go, "a hold alone ran out with nobody waiting"
        let_go.clear()
        with script_child(MARKED_WAITER, pool_path) as waiter:
            assert waiter.stdout.readline().strip() == "waiting"
            time.sleep(logical.BESIDE_LOOK * 2)  # (the next change looks)
            fs.write_bytes("/d/seen", b"s")  # lets the hold go, then waits its turn
            assert let_go == [False]
            assert waiter.wait(10) == 0
        fs.write_bytes("/d/again", b"g")
        assert fs._held
        a_marked_wait_gets_the_lock(pool_path)  # (the writer idle)
        fs.sb = dataclasses.replace(fs.sb, version=9)  # (as on a pool an older daxfs shares)
        fs.mkdir("/e")  # (the usual way: nothing kept)
        time.sleep(logical.HOLD_PAUSE * 3)
        let_go.clear()
        fs.write_bytes("/d/v9", b"9")
        assert fs._held and not fs._held_watching
        time.sleep(logical.HOLD_SECONDS * 2)
        fs.write_bytes("/d/v9b", b"9")  # its time was up: let go first
        assert let_go[:1] == [True]
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


def test_a_lock_kept_beside_another_mount_goes_to_whoever_waits(pool_path, monkeypatch):
    """A read-only mount has no slot in the process table, but marks its
    mount: beside it the writer keeps the exclusive lock only until a
    process waits for the lock, shared or exclusive (pins.WAITING_BYTE,
    READER_WAITING_BYTE), the blocks it took ahead given back with it,
    and after a reader keeps none for HOLD_RECHECK; once the reader has
    gone, it keeps it alone again.
    (Holds here would last 30 s: only the waiter's mark ends them.)"""
    monkeypatch.setattr(logical, "HOLD_SECONDS", 30.0)
    fs = daxfs.mount(pool_path)
    try:
        fs.mkdir("/d")
        fs.write_bytes("/d/first", b"1")
        reader = daxfs.mount(pool_path, readonly=True)
        try:
            fs.write_bytes("/d/settle", b"s")  # (catches up with the mount first)
            fs.write_bytes("/d/a", b"a" * 100)
            assert fs.journal.log_records()[-1][1].creates  # said beside it too
            assert fs._held and fs._held_beside and fs._stash
            assert not lock_is_free(pool_path)
            began = time.monotonic()
            assert reader.read_bytes("/d/a") == b"a" * 100  # waits, marked: let in
            assert time.monotonic() - began < 5.0
            assert not fs._held and not fs._stash
            fs.write_bytes("/d/after", b"r")  # (for a reader: no new hold for a while)
            assert not fs._held
            time.sleep(logical.HOLD_RECHECK * 1.5)
            fs.write_bytes("/d/b", b"b")
            assert fs._held_beside
            a_marked_wait_gets_the_lock(pool_path)  # (a writer's wait, marked too)
        finally:
            reader.close()
        time.sleep(logical.HOLD_RECHECK * 1.5)
        fs.write_bytes("/d/c", b"c" * 100)
        assert fs._held and not fs._held_beside
    finally:
        fs.close()


# A process about to take the exclusive pool lock: it marks WAITING_BYTE as
# coherence.lock_pool does, says so, and keeps the mark for a while without
# taking the lock; then reports the CLOCK_MONOTONIC time just before it
# drops the mark.
MARKED_WAITER = textwrap.dedent("""
    import fcntl, os, sys, time
    from daxfs.pins import WAITING_BYTE, set_lock
    fd = os.open(sys.argv[1], os.O_RDWR)
    set_lock(fd, fcntl.F_RDLCK, WAITING_BYTE, 1)
    print("waiting", flush=True)
    time.sleep(0.3)
    gone = time.monotonic()
    set_lock(fd, fcntl.F_UNLCK, WAITING_BYTE, 1)
    print(gone, flush=True)
""")


def test_a_writer_lets_the_waiter_it_let_go_for_in_first(pool_path, monkeypatch):
    """A writer whose hold beside others ends because a process waits takes
    the lock again only once no process marks a wait (the waiter has the
    lock then): flock hands a released lock to nobody, and the writer,
    back first, took it again for change after change while the waiter,
    asleep in flock, slept on.  (HANDOFF_MOST is 30 s here: only the mark
    going ends the wait.)"""
    monkeypatch.setattr(logical, "HANDOFF_MOST", 30.0)
    monkeypatch.setattr(logical, "HOLD_SECONDS", 30.0)
    fs = daxfs.mount(pool_path)
    try:
        fs.mkdir("/d")
        fs.write_bytes("/d/first", b"1")
        reader = daxfs.mount(pool_path, readonly=True)  # (beside another mount)
        try:
            fs.write_bytes("/d/settle", b"s")
            fs.write_bytes("/d/a", b"a")
            assert fs._held and fs._held_beside
            with script_child(MARKED_WAITER, pool_path) as waiter:
                assert waiter.stdout.readline().strip() == "waiting"
                time.sleep(logical.BESIDE_LOOK * 2)  # (the next change looks)
                fs.write_bytes("/d/b", b"b")  # lets the hold go, then waits its turn
                done = time.monotonic()
                assert not lock_is_free(pool_path)  # (and keeps the lock again)
                gone = float(waiter.stdout.readline())
                assert gone < done
                assert waiter.wait(10) == 0
        finally:
            reader.close()
        assert fs.read_bytes("/d/b") == b"b"
    finally:
        fs.close()


HOLDER = textwrap.dedent("""
    import sys, time, daxfs
    from daxfs import logical
    # (a busy machine may pause us past a hold's time between calls)
    logical.HOLD_SECONDS = logical.HOLD_ALONE_MOST = 0.5
    fs = daxfs.mount(sys.argv[1])
    fs.mkdir("/d")
    fs.write_bytes("/d/first", b"1")
    if sys.argv[2] == "made":  # a said create begins the hold
        f = fs.open("/d/kept", "w+b", buffering=0)
        f.write(b"K" * 5000)
    else:  # an open for reading begins it
        fs.write_bytes("/d/kept", b"K" * 5000)
        fs.mkdir("/e")  # (the usual way: the kept lock goes first)
        time.sleep(0.05)  # (past its pause)
        for _ in range(3):  # (an open may meet the look at followers: Locked)
            f = fs.open("/d/kept", "rb")
            if fs._held:
                break
            f.close()
    print("open", fs._held, fs._pins_due == {f._ino}, flush=True)
    sys.stdin.readline()  # idle: the holder thread lets the lock go
    f.seek(0)
    print(f.read() == b"K" * 5000, flush=True)
    f.close()
    fs.close()
    print("bye", flush=True)
""")


def reuse_while_the_holder_reads(fs, child, directory: str) -> None:
    """After the holder's file was unlinked here: make files in
    ``directory`` that would take a freed file's blocks and number, then
    let the holder (``child``) read its file back whole and close it, and
    check that no file lost a byte."""
    for i in range(64):
        fs.write_bytes(f"{directory}/n{i}", bytes([i]) * 5000)
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "True"
    assert child.stdout.readline().strip() == "bye"
    assert child.wait(timeout=60) == 0
    assert all(fs.read_bytes(f"{directory}/n{i}") == bytes([i]) * 5000 for i in range(64))


@pytest.mark.parametrize("how", ["made", "read"])
def test_a_file_opened_while_the_lock_was_kept_is_pinned_before_it_is_let_go(pool_path, how):
    """A process opens a file with the lock kept (no pin taken: nobody else
    could look), the hold begun by a said create or by that open for
    reading, and then stops calling.  Once the lock is let go another
    process sees the pin: its unlink leaves an orphan whose blocks no new
    file takes, the holder reads its bytes back whole, and its close frees
    it."""
    with script_child(HOLDER, pool_path, how) as child:
        assert child.stdout.readline().split() == ["open", "True", "True"]
        other = daxfs.mount(pool_path)  # waits for the lock to be let go
        try:
            ino = other.stat("/d/kept").st_ino
            assert pinned_by_others(other.region.fd, other.inodes.slot_off(ino), 1)
            other.unlink("/d/kept")
            reuse_while_the_holder_reads(other, child, "/d")
        finally:
            other.close()
    result = daxfs.check(pool_path)
    assert result.ok, result
    with daxfs.mount(pool_path) as fs:
        assert not fs.exists("/d/kept") and fs.inodes.slot_is_free(ino)  # freed at its close


BUSY = textwrap.dedent("""
    import sys, time, daxfs
    fs = daxfs.mount(sys.argv[1])
    fs.mkdir("/busy")
    fs.write_bytes("/busy/first", b"1")
    for i in range(500):
        fs.write_bytes(f"/busy/f{i}", b"x" * 4096)
    print("ready", flush=True)
    end, i = time.monotonic() + float(sys.argv[2]), 0
    while time.monotonic() < end:
        if sys.argv[3] == "write":
            with fs.open(f"/busy/f{i % 500}", "wb") as f:
                f.write(b"x" * 4096)
        else:
            with fs.open(f"/busy/f{i % 500}", "rb") as f:
                assert f.read() == b"x" * 4096
        i += 1
    fs.close()
    print(i, flush=True)
""")


@pytest.mark.parametrize("work", ["write", "read"])
def test_a_busy_process_lets_another_in_soon(pool_path, work):
    """While one process makes (or reads) files as fast as it can, its
    lock kept HOLD_SECONDS at a time, another mounts, makes files and
    unmounts, well before the busy one is done."""
    daxfs.mount(pool_path).close()
    with script_child(BUSY, pool_path, "6", work) as busy:
        assert busy.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # (well into its loop)
        start = time.monotonic()
        with daxfs.mount(pool_path) as fs:
            for i in range(20):
                fs.write_bytes(f"/mine{i}", b"m" * 100)
        took = time.monotonic() - start
        assert busy.poll() is None, "the busy process ended first"
        assert took < 3.0, f"another process waited {took:.2f} s"
        assert int(busy.stdout.readline()) > 0
        assert busy.wait(timeout=60) == 0
    with daxfs.mount(pool_path) as fs:
        assert sorted(fs.listdir("/"))[:3] == ["busy", "mine0", "mine1"]
        assert all(fs.read_bytes(f"/mine{i}") == b"m" * 100 for i in range(20))
    assert daxfs.check(pool_path).ok


def test_a_forked_child_waits_for_its_parents_kept_lock(pool_path):
    """A child forked while its parent keeps the lock shares the parent's
    description until its first call, which takes one of its own: it
    waits for the parent (idle in waitpid) to let the lock go, and both
    see each other's files."""
    fs = daxfs.mount(pool_path)
    try:
        made_said(fs, "/d/parent", b"p" * 100)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                fs.write_bytes("/d/child", b"c" * 100)
                code = 0 if fs.read_bytes("/d/parent") == b"p" * 100 else 2
            finally:
                os._exit(code)
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert fs.read_bytes("/d/child") == b"c" * 100
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


@pytest.mark.parametrize("call", ["open for reading", "stat", "overwrite"])
def test_calls_that_take_the_shared_lock_use_the_kept_one(pool_path, call, long_holds):
    """An open for reading, a lookup and an overwrite in place take the
    shared lock the short way: with the exclusive one kept they take
    nothing, and it stays kept (no flock of theirs converts it).  (Long
    holds: on a loaded machine 5 ms can pass between two calls.)"""
    fs = daxfs.mount(pool_path)
    try:
        made_said(fs, "/d/a", b"a" * 5000)
        if call == "open for reading":
            with fs.open("/d/a", "rb") as f:
                assert f.read() == b"a" * 5000
        elif call == "stat":
            assert fs.stat("/d/a").st_size == 5000
        else:
            with fs.open("/d/a", "r+b", buffering=0) as f:
                f.write(b"b" * 10)
                # (looked at before the close, which commits the new times
                # the usual way and so lets the lock go)
                assert fs._held and not lock_is_free(pool_path)
        if call != "overwrite":
            assert fs._held and not lock_is_free(pool_path)
    finally:
        fs.close()
    with daxfs.mount(pool_path) as again:
        want = b"b" * 10 + b"a" * 4990 if call == "overwrite" else b"a" * 5000
        assert again.read_bytes("/d/a") == want


def opened_in_a_hold(fs, path: str) -> None:
    """Open ``path`` for reading, and close it, until an open begins a hold
    (one may meet the look at followers, which goes the usual way)."""
    for _ in range(3):
        fs.open(path, "rb").close()
        if fs._held:
            return
    raise AssertionError("no open for reading began a hold")


def test_a_reader_alone_keeps_the_lock_and_a_read_only_mount_only_the_shared_one(
    pool_path, long_holds
):
    """An open for reading by a writable mount alone begins a hold, as a
    said change does: the exclusive lock kept past the call, its pin put
    off, and taken before a call the usual way lets the lock go; an open
    once the hold's time is up lets it go, as a said change does.  A
    read-only mount never takes the exclusive lock: it keeps the shared
    one, which others may share."""
    fs = daxfs.mount(pool_path)
    try:
        fs.mkdir("/d")
        fs.write_bytes("/d/a", b"a" * 5000)
        fs.mkdir("/e")  # (the usual way: the kept lock goes first)
        time.sleep(logical.HOLD_PAUSE * 5)
        opened_in_a_hold(fs, "/d/a")
        with fs.open("/d/a", "rb") as f:
            assert fs._held and not lock_is_free(pool_path)
            assert fs._pins_due == {f._ino}
            fs.mkdir("/f")  # (the usual way: the pin taken, then the lock let go)
            assert not fs._held and not fs._pins_due and lock_is_free(pool_path)
            with daxfs.mount(pool_path) as other:
                slot = other.inodes.slot_off(f._ino)
                assert pinned_by_others(other.region.fd, slot, 1)
            assert f.read() == b"a" * 5000
        opened_in_a_hold(fs, "/d/a")  # (caught up with the other mount first)
        fs._hold_until = time.monotonic() - 1  # its time is up: the next open lets it go
        with fs.open("/d/a", "rb") as f:
            assert not fs._held and lock_is_free(pool_path)
            assert f.read() == b"a" * 5000
    finally:
        fs.close()
    with daxfs.mount(pool_path, readonly=True) as ro:
        with ro.open("/d/a", "rb") as f:
            assert lock_is_free(pool_path) and not lock_is_free(pool_path, fcntl.LOCK_EX)
            assert ro._held and ro._held_shared
            assert f.read() == b"a" * 5000


def unlink_in_a_hold_then_reuse(fs, path: str) -> None:
    """Unlink ``path`` with the lock kept (a said create first begins a
    hold, whose first look sees whatever other descriptions lock), then
    unlink enough other files that said unlinks give their blocks back,
    and make files that would take them again."""
    others = [f"/d/o{i}" for i in range(2 * logical.RELEASE_BATCH)]
    for p in others:
        fs.write_bytes(p, b"o")
    fs.write_bytes("/d/before", b"b")  # (a said create: the hold kept)
    assert fs._held
    fs.unlink(path)
    for p in others:
        fs.unlink(p)
    assert len(fs._said_freed) < logical.RELEASE_BATCH  # (given back since)
    for i in range(2 * logical.RELEASE_BATCH):
        fs.write_bytes(f"/d/n{i}", bytes([i]) * 8192)


def test_an_unlink_with_the_lock_kept_spares_a_file_mapped_here(pool_path, long_holds):
    """A Mapping pins its file through a description of its own, which
    the hold's first look sees: the unlink asks about the file's slot and
    leaves it an orphan, so the mapped bytes stay the file's."""
    fs = daxfs.mount(pool_path)
    try:
        made_said(fs, "/d/m", b"m" * 8192)
        with fs.map("/d/m") as m:
            unlink_in_a_hold_then_reuse(fs, "/d/m")
            assert bytes(m.buffer) == b"m" * 8192
    finally:
        fs.close()
    result = daxfs.check(pool_path)
    assert result.ok, result


def test_an_unlink_with_the_lock_kept_spares_a_file_a_forked_child_maps(pool_path, long_holds):
    """A child forked with a Mapping open keeps its description (and pin)
    alive after the parent closes its own copy: the parent's next hold
    sees that lock, and its unlink leaves the file to the child, whose
    inherited map still reads the file's bytes."""
    fs = daxfs.mount(pool_path)
    try:
        made_said(fs, "/d/m", b"m" * 8192)
        m = fs.map("/d/m")
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no daxfs call, only the inherited map
            code = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)  # (b"" if the parent dies first)
                code = 0 if bytes(m.buffer) == b"m" * 8192 else 3
            finally:
                os._exit(code)
        os.close(go_r)
        m.close()  # (the parent's copy; the child's keeps the pin)
        unlink_in_a_hold_then_reuse(fs, "/d/m")
        os.write(go_w, b"g")
        os.close(go_w)
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child's map changed"
    finally:
        fs.close()
    result = daxfs.check(pool_path)
    assert result.ok, result


def test_blocks_taken_ahead_go_back_before_the_lock_does(pool_path, long_holds):
    """Said creates of one block take theirs from blocks taken ahead while
    the lock is kept.  Those left are free again in this process's
    allocator once the lock goes (it agrees with a new mount's, built
    from the media), so another process may take them, and both
    processes' files keep their bytes."""
    fs = daxfs.mount(pool_path)
    try:
        made_said(fs, "/d/a", b"a" * 100)
        assert fs._held and fs._stash
        fs.mkdir("/e")  # (the usual way: the kept lock goes first)
        assert not fs._held and not fs._stash
        with daxfs.mount(pool_path) as other:
            assert (other.allocator.used_map() == fs.allocator.used_map()).all()
            for i in range(2 * logical.STASH_BLOCKS):
                other.write_bytes(f"/e/o{i}", bytes([i]) * 4096)
        for i in range(2 * logical.STASH_BLOCKS):
            fs.write_bytes(f"/d/m{i}", bytes([100 + i]) * 4096)
        for i in range(2 * logical.STASH_BLOCKS):
            assert fs.read_bytes(f"/e/o{i}") == bytes([i]) * 4096
            assert fs.read_bytes(f"/d/m{i}") == bytes([100 + i]) * 4096
    finally:
        fs.close()
    result = daxfs.check(pool_path)
    assert result.ok, result


# A reader beside another mount: its holds end only by a process waiting for
# the exclusive lock (HOLD_SECONDS and HOLD_IDLE are 30 s here: a test that
# misses the mark waits that long and fails, rather than hang).
READER = textwrap.dedent("""
    import sys, time, daxfs
    from daxfs import logical
    logical.HOLD_SECONDS = logical.HOLD_ALONE_MOST = logical.HOLD_IDLE = 30.0
    fs = daxfs.mount(sys.argv[1], readonly=sys.argv[-1] == "readonly")
    if sys.argv[2] == "idle":  # open one file, keep it open, stop calling
        for _ in range(3):  # (an open may meet the look at followers: Locked)
            f = fs.open("/r/kept", "rb")
            if fs._held:
                break
            f.close()
        print("open", fs._held, fs._held_shared, fs._pins_due == {f._ino}, flush=True)
        sys.stdin.readline()
        f.seek(0)
        print(f.read() == b"K" * 5000, flush=True)
        f.close()
    else:  # read files as fast as it can for argv[3] seconds
        print("ready", flush=True)
        end, n, held = time.monotonic() + float(sys.argv[3]), 0, 0
        while time.monotonic() < end:
            with fs.open(f"/r/f{n % 100}", "rb") as f:
                assert f.read() == b"x" * 4096
                held += fs._held_shared
            n += 1
        print(n, held, flush=True)
    fs.close()
    print("bye", flush=True)
""")


@pytest.mark.parametrize("mount", ["writable", "readonly"])
def test_a_reader_beside_another_mount_keeps_the_shared_lock_and_pins_before_it_goes(
    pool_path, mount
):
    """A process reading beside another mount keeps the shared pool lock
    (others may share it, nobody may take it exclusively) and puts its
    pins off.  A process that waits for the exclusive lock marks it, and
    the idle reader lets the lock go within a moment, its pins taken
    first: the unlink leaves an orphan whose blocks no new file takes, the
    reader reads its bytes back whole, and its close frees it."""
    with daxfs.mount(pool_path) as fs:  # (mounted first: the reader is not alone)
        fs.mkdir("/r")
        fs.write_bytes("/r/kept", b"K" * 5000)
        ino = fs.stat("/r/kept").st_ino
        with script_child(READER, pool_path, "idle", mount) as child:
            assert child.stdout.readline().split() == ["open", "True", "True", "True"]
            assert lock_is_free(pool_path) and not lock_is_free(pool_path, fcntl.LOCK_EX)
            assert not pinned_by_others(fs.region.fd, fs.inodes.slot_off(ino), 1)  # put off
            start = time.monotonic()
            fs.unlink("/r/kept")  # waits for the exclusive lock, marked
            assert time.monotonic() - start < 1.0  # (its holds run 30 s)
            assert pinned_by_others(fs.region.fd, fs.inodes.slot_off(ino), 1)
            assert not fs.inodes.slot_is_free(ino)  # an orphan
            reuse_while_the_holder_reads(fs, child, "/r")
    result = daxfs.check(pool_path)
    assert result.ok, result
    with daxfs.mount(pool_path) as fs:
        assert not fs.exists("/r/kept") and fs.inodes.slot_is_free(ino)  # freed at its close


def test_readers_keeping_the_shared_lock_let_a_writer_in_soon(pool_path):
    """Two processes read files as fast as they can, beside this mount,
    each keeping the shared lock between its opens (most of them open in a
    hold), with holds that would run 30 s: this process still makes 20
    files, each waiting only until the readers see its mark, well before
    they are done."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/r")
        for i in range(100):
            fs.write_bytes(f"/r/f{i}", b"x" * 4096)
        with (
            script_child(READER, pool_path, "busy", "6") as a,
            script_child(READER, pool_path, "busy", "6") as b,
        ):
            assert a.stdout.readline().strip() == b.stdout.readline().strip() == "ready"
            time.sleep(0.5)  # (well into their loops)
            start = time.monotonic()
            for i in range(20):
                fs.write_bytes(f"/mine{i}", b"m" * 100)
            took = time.monotonic() - start
            assert a.poll() is None and b.poll() is None, "a reader ended first"
            assert took < 3.0, f"the writer waited {took:.2f} s"
            for reader in (a, b):
                n, held = map(int, reader.stdout.readline().split())
                assert held > n // 2, (n, held)
                assert reader.stdout.readline().strip() == "bye"
                assert reader.wait(timeout=60) == 0
        assert all(fs.read_bytes(f"/mine{i}") == b"m" * 100 for i in range(20))
    result = daxfs.check(pool_path)
    assert result.ok, result


def test_a_reader_that_let_a_writer_in_keeps_no_shared_lock_for_a_while(
    pool_path, long_holds, monkeypatch
):
    """A reader keeping the shared lock lets a waiting writer in (its
    holder thread sees the mark), then begins no shared hold for
    HOLD_RECHECK: a writer that came once may soon come again, and each
    change would wait for the readers' next look.  After that, it holds
    again.  (Two mounts of one process: two descriptions, as two
    processes.)"""
    monkeypatch.setattr(logical, "HOLD_RECHECK", 1.0)  # (more than a loaded machine's step)
    with daxfs.mount(pool_path) as writer:
        writer.mkdir("/r")
        writer.write_bytes("/r/a", b"a" * 100)
        with daxfs.mount(pool_path, readonly=True) as reader:
            opened_in_a_hold(reader, "/r/a")
            assert reader._held_shared
            writer.write_bytes("/r/b", b"b" * 100)  # waits, marked
            assert not reader._held
            time.sleep(logical.HOLD_PAUSE * 3)  # (past the pause every let-go has)
            with reader.open("/r/a", "rb") as f:
                assert not reader._held and f.read() == b"a" * 100
            time.sleep(logical.HOLD_RECHECK * 1.2)
            opened_in_a_hold(reader, "/r/a")
            assert reader._held_shared and reader.read_bytes("/r/b") == b"b" * 100
