"""Several processes mounting one pool: changes are seen on the next call,
concurrent creators lose nothing and never share a block, and the space of a
file left open (and unlinked) by a killed process comes back at the next mount.

Children are separate Python processes (subprocess) driven line by line
through stdin/stdout, so every step is ordered by messages, never by sleeps.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import daxfs
from conftest import script_child
from daxfs import FileSystem
from daxfs.layout import BLOCK
from daxfs.pins import RangePins, pinned_by_others

MiB = 1 << 20

CHILD = textwrap.dedent(r"""
    import hashlib, sys
    import daxfs

    def content(name, size):
        seed = hashlib.sha256(name.encode()).digest()
        return (seed * (size // len(seed) + 1))[:size]

    fs = daxfs.mount(sys.argv[1])
    held = {}
    print("mounted", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "list":
            print(" ".join(sorted(fs.listdir(args[0]))) or "-", flush=True)
        elif cmd == "read":
            with fs.open(args[0], "rb") as f:
                print(f.read().decode(), flush=True)
        elif cmd == "write":
            with fs.open(args[0], "w") as f:
                f.write(args[1])
            print("ok", flush=True)
        elif cmd == "create-many":  # dir, prefix, count
            d, prefix, n = args[0], args[1], int(args[2])
            for i in range(n):
                name = f"{prefix}{i:04d}"
                size = (3 * 1024 * 1024 + i) if i % 50 == 7 else (i * 997) % 150_000
                with fs.open(f"{d}/{name}", "xb") as f:
                    f.write(content(name, size))
                if i % 10 == 3:
                    fs.mkdir(f"{d}/{name}.dir")
                    fs.rename(f"{d}/{name}", f"{d}/{name}.dir/moved")
                    fs.rename(f"{d}/{name}.dir/moved", f"{d}/{name}")
                    fs.rmdir(f"{d}/{name}.dir")
            print("done", flush=True)
        elif cmd == "churn":  # dir, prefix, count: create 4 KiB files, unlink even, rename odd
            d, prefix, n = args[0], args[1], int(args[2])
            for i in range(n):
                with fs.open(f"{d}/{prefix}{i}", "xb") as f:
                    f.write(content(f"{prefix}{i}", 4096))
            for i in range(0, n, 2):
                fs.unlink(f"{d}/{prefix}{i}")
                fs.rename(f"{d}/{prefix}{i + 1}", f"{d}/{prefix}{i + 1}.r")
            print(fs.coherence["rebases"], fs.coherence["optimistic_commits"], flush=True)
        elif cmd == "hold-orphan":  # path, size: write, keep open, unlink
            path, size = args[0], int(args[1])
            with fs.open(path, "wb") as f:
                f.write(content(path, size))
            held[path] = fs.open(path, "rb")
            fs.unlink(path)
            print("held", flush=True)
        elif cmd == "unlink-all":  # dir: unlink each name, one call a name; blocks freed
            names, before = fs.listdir(args[0]), fs.statvfs().f_bfree
            for name in names:
                fs.unlink(f"{args[0]}/{name}")
            print(len(names), fs.statvfs().f_bfree - before, flush=True)
        elif cmd == "quit":
            break
    fs.close()
    print("bye", flush=True)
""")


def content(name: str, size: int) -> bytes:
    import hashlib

    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Child:
    def __init__(self, pool: str, say: bool = True):
        env = dict(os.environ)
        if not say:  # (small files the usual way: optimistic changes, rebases)
            env["DAXFS_SAY"] = "0"
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, pool],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.expect() == "mounted"

    def send(self, line: str) -> None:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def expect(self) -> str:
        line = self.p.stdout.readline()
        assert line, f"child died (exit code {self.p.poll()})"
        return line.rstrip("\n")

    def ask(self, line: str) -> str:
        self.send(line)
        return self.expect()

    def quit(self) -> None:
        if self.p.poll() is None:
            assert self.ask("quit") == "bye"
        assert self.p.wait(timeout=60) == 0

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        assert self.p.wait(timeout=60) == -signal.SIGKILL
        self.p.stdin.close()
        self.p.stdout.close()


@pytest.fixture
def children():
    made: list[Child] = []
    yield made
    for c in made:
        if c.p.poll() is None:
            c.kill()


def fill_the_whole_chunks(fs) -> None:
    """Every whole chunk left goes to /fill: a file written next can only go
    where a file just freed was."""
    fs.open("/fill", "xb").close()
    fs.fallocate("/fill", 0, fs.allocator.free_chunks * (2 * MiB))


def check_pool(path: str) -> None:
    try:
        report = daxfs.check(path)
    except NotImplementedError:
        return
    assert report.ok, report.errors


def test_changes_are_seen_by_the_other_process_on_its_next_call(pool_path, children):
    fs = daxfs.mount(pool_path)
    try:
        child = Child(pool_path)
        children.append(child)
        assert child.ask("list /") == "-"
        with fs.open("/from-parent", "w") as f:
            f.write("hello")
        fs.mkdir("/dir")
        assert child.ask("list /") == "dir from-parent"
        assert child.ask("read /from-parent") == "hello"

        assert child.ask("write /dir/from-child hi-there") == "ok"
        assert fs.listdir("/dir") == ["from-child"]
        with fs.open("/dir/from-child") as f:
            assert f.read() == "hi-there"

        with fs.open("/from-parent", "a") as f:  # grows: a committed change
            f.write("-more")
        assert child.ask("read /from-parent") == "hello-more"
        with fs.open("/from-parent", "r+") as f:  # in place: the same memory
            f.write("HELLO")
        assert child.ask("read /from-parent") == "HELLO-more"
        fs.rename("/from-parent", "/dir/renamed")
        assert child.ask("list /dir") == "from-child renamed"
        fs.unlink("/dir/renamed")
        assert child.ask("list /dir") == "from-child"
        child.quit()
    finally:
        fs.close()
    check_pool(pool_path)


def test_concurrent_creators_lose_nothing_and_share_no_block(make_pool, children):
    pool = make_pool(size=256 * MiB)
    with daxfs.mount(pool) as fs:
        fs.mkdir("/shared")
        free0 = fs.statvfs().f_bfree
    n = 300
    a, b = Child(pool), Child(pool)
    children.extend([a, b])
    a.send(f"create-many /shared a {n}")
    b.send(f"create-many /shared b {n}")
    assert a.expect() == "done" and b.expect() == "done"
    a.quit()
    b.quit()

    with daxfs.mount(pool) as fs:  # the mount scan refuses a block owned twice
        names = fs.listdir("/shared")
        want = sorted(f"{p}{i:04d}" for p in "ab" for i in range(n))
        assert sorted(names) == want
        total = 0
        for name in names:
            i = int(name[1:])
            size = (3 * MiB + i) if i % 50 == 7 else (i * 997) % 150_000
            with fs.open(f"/shared/{name}", "rb") as f:
                assert f.read() == content(name, size), f"{name} damaged"
            total += fs.stat(f"/shared/{name}").st_blocks * 512 // BLOCK
        st = fs.statvfs()
        assert free0 - st.f_bfree >= total  # plus directory blocks
        for name in names:
            fs.unlink(f"/shared/{name}")
        assert fs.statvfs().f_bfree >= free0 - 8  # the directory's own blocks stay
    check_pool(pool)


def test_edits_of_one_directory_by_two_processes_are_rebased_not_run_again(make_pool, children):
    """Two processes adding, removing and renaming names in one directory
    write the same blocks (the tail, the header).  A change that finds the
    other's commits there is put after them (coherence.Change._rebase) and
    still commits optimistically, instead of being undone and run again
    under the exclusive lock; and the directory ends holding what both
    made."""
    pool = make_pool(size=256 * MiB)
    with daxfs.mount(pool) as fs:
        fs.mkdir("/shared")
    a, b = Child(pool, say=False), Child(pool, say=False)
    children.extend([a, b])
    n = 200
    for rnd in range(5):  # until the two ran at the same time (nearly always the first)
        a.send(f"churn /shared a{rnd}- {n}")
        b.send(f"churn /shared b{rnd}- {n}")
        counts = [tuple(map(int, child.expect().split())) for child in (a, b)]
        if sum(r for r, _o in counts):
            break
    # (cumulative per process: rebases, optimistic commits)
    assert sum(r for r, _o in counts) > 0
    # 3n changes a round (open, first write, unlink or rename); the old way,
    # renames included, would be at most 2.5n.
    assert all(o >= (rnd + 1) * 11 * n // 4 for _r, o in counts)
    a.quit()
    b.quit()
    with daxfs.mount(pool) as fs:
        made = [f"{p}{r}-{i}" for p in "ab" for r in range(rnd + 1) for i in range(1, n, 2)]
        assert set(fs.listdir("/shared")) == {f"{name}.r" for name in made}
        for name in made:
            with fs.open(f"/shared/{name}.r", "rb") as f:
                assert f.read() == content(name, 4096)
    check_pool(pool)


def test_orphan_of_a_killed_process_is_reclaimed_at_next_mount(pool_path, children):
    with daxfs.mount(pool_path) as fs:
        with fs.open("/anchor", "w"):
            pass
        free0 = fs.statvfs().f_bfree

    child = Child(pool_path)
    children.append(child)
    assert child.ask(f"hold-orphan /victim {5 * MiB}") == "held"

    # While the holder lives, a new mount must not reclaim the open orphan.
    with daxfs.mount(pool_path) as fs:
        assert "victim" not in fs.listdir("/")
        assert fs.statvfs().f_bfree <= free0 - 5 * MiB // BLOCK

    child.kill()  # dies holding the file open: no close, no cleanup

    with daxfs.mount(pool_path) as fs:
        assert fs.statvfs().f_bfree == free0
        assert fs.listdir("/") == ["anchor"]
    check_pool(pool_path)


def test_orphan_survives_other_mounts_closing(pool_path, children):
    """A second mount in another process coming and going leaves the orphan
    of a live holder alone; the holder's own close frees it."""
    with daxfs.mount(pool_path) as fs:
        with fs.open("/anchor", "w"):
            pass
        free0 = fs.statvfs().f_bfree
    holder = Child(pool_path)
    children.append(holder)
    assert holder.ask(f"hold-orphan /o {MiB}") == "held"
    other = Child(pool_path)
    children.append(other)
    assert other.ask("list /") == "anchor"
    other.quit()
    with daxfs.mount(pool_path) as fs:
        assert fs.statvfs().f_bfree < free0
    holder.quit()  # closes its handles: the orphan goes
    with daxfs.mount(pool_path) as fs:
        assert fs.statvfs().f_bfree == free0


def ofd_read_locks(path: str) -> list[tuple[int, int]]:
    """The OFD read locks on file ``path`` as the kernel lists them in
    /proc/locks (every process's): (first byte, last byte) each."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if "->" in fields or fields[1:4] != ["OFDLCK", "ADVISORY", "READ"]:
                continue  # (a waiter's line, or another kind of lock)
            if fields[5] == dev:
                end = fields[7]
                found.append((int(fields[6]), 2**63 - 1 if end == "EOF" else int(end)))
    return found


def test_pins_of_files_opened_one_after_another_are_one_lock_and_each_holds(pool_path, children):
    """The kernel merges a description's read locks on touching ranges: a
    pin covers its inode's whole slot so that the pins of files numbered
    one after another are one lock (each lock call walks the file's list
    of them).  Merged, each pin still keeps its file: another process's
    unlinks leave every file an orphan, readable whole, until the holder
    closes it, and a file closed in the middle of the run is freed."""
    n = 64
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/p")
        names = [f"f{i:02d}" for i in range(n)]
        for name in names:
            fs.write_bytes(f"/p/{name}", content(name, 4096))
        free_with_files = fs.statvfs().f_bfree
        inos = [fs.stat(f"/p/{name}").st_ino for name in names]
        assert inos == list(range(inos[0], inos[0] + n))  # (numbered one after another)
        handles = [fs.open(f"/p/{name}", "rb") for name in names]
        handles[n // 2].close()  # (freed by the unlink: the run split in two)
        child = Child(pool_path)  # (its mount ends any hold: the pins are taken)
        children.append(child)
        locks = ofd_read_locks(pool_path)
        assert len(locks) < 10, locks  # (a byte a pin: more than 64)
        for i, ino in enumerate(inos):
            first = fs.inodes.slot_off(ino)
            held = any(lo <= first <= hi for lo, hi in locks)
            assert held == (i != n // 2), (i, locks)
        unlinked, freed = map(int, child.ask("unlink-all /p").split())
        assert (unlinked, freed) == (n, 1)  # (the closed one's block: the rest orphans)
        for name, h in zip(names, handles, strict=True):
            if not h.closed:
                assert h.read() == content(name, 4096)
                h.close()
        child.quit()
        assert fs.listdir("/p") == []
        assert fs.statvfs().f_bfree == free_with_files + n
    check_pool(pool_path)


def test_a_pin_of_one_byte_as_older_daxfs_took_keeps_its_file(pool_path):
    """An older daxfs pinned its files by the first byte of their slots, and
    looks there: each kind of pin is seen by the other's look."""
    with daxfs.mount(pool_path) as fs:
        fs.write_bytes("/anchor", b"")
        free0 = fs.statvfs().f_bfree
        fs.write_bytes("/old", content("old", 4096))
        ino = fs.stat("/old").st_ino
        older = RangePins(pool_path, writable=False)  # (another description)
        older.pin(fs.inodes.slot_off(ino), 1)
        try:
            fs.unlink("/old")
            assert fs.statvfs().f_bfree == free0 - 1  # an orphan, not freed
        finally:
            older.release()
        with fs.open("/anchor", "rb"):  # a pin of the whole slot, as daxfs takes it
            other = RangePins(pool_path, writable=False)
            try:
                assert pinned_by_others(other.fd, fs.inodes.slot_off(fs.stat("/anchor").st_ino), 1)
            finally:
                other.release()
    with daxfs.mount(pool_path) as fs:  # (the orphan no one pins: reclaimed)
        assert fs.statvfs().f_bfree == free0
    check_pool(pool_path)


def test_a_foreign_commit_is_applied_from_its_record_not_rebuilt(pool_path):
    """Another mount's commits are caught up with by applying their journal
    records (issue 13): no rebuild, and the counters (what `bench share`
    reports) count exactly those records."""
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.listdir("/")
        b.listdir("/")
        before = a.coherence.copy()
        a.mkdir("/own")  # a's own commit: nothing to catch up with
        a.listdir("/")
        assert a.coherence == before
        seen = a.journal.next_seq  # the commits a has caught up with
        b.mkdir("/theirs")
        with b.open("/theirs/f", "wb") as f:
            f.write(b"x" * 5000)
        assert a.listdir("/") == ["own", "theirs"]
        assert a.listdir("/theirs") == ["f"]
        assert a.stat("/theirs/f").st_size == 5000
        applied = a.coherence["records_applied"] - before["records_applied"]
        assert applied == b.journal.next_seq - seen >= 2
        assert a.coherence["full_rebuilds"] == before["full_rebuilds"]


def test_a_directory_past_its_slot_another_mount_fills_is_never_loaded_again(
    pool_path,
):
    """A directory whose extents pass its slot (an extent chain: past 32
    blocks) that another mount fills and grows: our copy keeps its blocks
    through every write of its slot (its times, its links, a new extent
    and chain block), taking each new block from the record that wrote
    it.  It was parsed again whole at every such write, in every process:
    a few thousand names each time (and at every growth, whatever its
    size, and at every chmod)."""
    from daxfs.layout import INLINE_EXTENTS

    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.mkdir("/big")
        ino = a.stat("/big").st_ino
        assert b.listdir("/big") == []
        copy = b.dirs[ino]
        names, i = set(), 0
        while len(a._inode(ino).extents) <= INLINE_EXTENTS + 1:  # (two chain extents)
            for _ in range(25):
                name = f"{i:04d}{'n' * 200}"
                a.write_bytes(f"/big/{name}", b"n")
                names.add(name)
                i += 1
            assert set(b.listdir("/big")) == names
            assert b.dirs[ino] is copy
        assert a._inode(ino).ext_blocks and b._inode(ino).ext_blocks
        a.chmod("/big", 0o700)  # (the slot written again, the chain not)
        a.mkdir("/big/sub")  # (its links)
        names.add("sub")
        for k in range(0, i, 7):
            a.unlink(f"/big/{k:04d}{'n' * 200}")
            names.discard(f"{k:04d}{'n' * 200}")
        assert set(b.listdir("/big")) == names and b.stat("/big").st_mode & 0o777 == 0o700
        assert b.dirs[ino] is copy
        assert copy.devs == a.dirs[ino].devs
    assert daxfs.check(pool_path).ok
    with daxfs.mount(pool_path) as fs:
        assert set(fs.listdir("/big")) == names


def test_a_directory_another_mount_makes_subdirectories_in_is_refreshed_not_reloaded(
    pool_path, monkeypatch
):
    """A mkdir beside us rewrites the parent's slot (its link count) and adds
    a directory entry: our copy of the parent keeps its blocks and takes the
    entry in (zarr makes a directory per chunk row in one shared directory;
    parsing it whole per mkdir made two writers no faster than one).  When
    the parent grows a block, the copy takes the new block from the record
    that wrote it, and is right (it was loaded again whole)."""
    from daxfs.dir import Directory

    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.mkdir("/c")
        for i in range(20):
            a.mkdir(f"/c/{i}")
        ino = a.stat("/c").st_ino
        copy = a.dirs[ino]
        b.listdir("/c")  # b's copy loaded now: the loads counted below are a's
        loads = []
        real_load = Directory.load.__func__
        monkeypatch.setattr(
            Directory,
            "load",
            classmethod(lambda cls, *args: loads.append(args[0]) or real_load(cls, *args)),
        )
        for i in range(20, 40):
            b.mkdir(f"/c/{i}")
            assert sorted(a.listdir("/c"), key=int) == [str(k) for k in range(i + 1)]
            assert a.stat("/c").st_nlink == i + 3
        assert a.dirs[ino] is copy and ino not in loads
        b.rmdir("/c/3")
        b.rename("/c/4", "/c/four")
        assert "3" not in a.listdir("/c") and a.stat("/c/four").st_ino == b.stat("/c/four").st_ino
        assert a.dirs[ino] is copy and copy.subdirs == b.dirs[ino].subdirs
        i = 40
        while len(b.dirs[ino].devs) == len(copy.devs):  # until the directory grows
            b.mkdir(f"/c/{'x' * 200}{i}")
            i += 1
        assert sorted(a.listdir("/c")) == sorted(b.listdir("/c"))
        assert a.dirs[ino] is copy and ino not in loads
        assert copy.devs == b.dirs[ino].devs and copy.subdirs == b.dirs[ino].subdirs
        b.mkdir(f"/c/{'y' * 200}")  # (into the new block)
        assert sorted(a.listdir("/c")) == sorted(b.listdir("/c"))
        assert a.dirs[ino] is copy and ino not in loads
    assert daxfs.check(pool_path).ok


def test_a_mount_lapped_by_the_log_rebuilds_and_stays_correct(make_pool):
    """A mount whose unread records were checkpointed over (the smallest
    journal mkfs makes, 256 KiB, filled by the other mount) cannot catch up
    from them: it rebuilds from the inode table, once, and sees everything."""
    path = make_pool(size=16 * MiB)
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        a.listdir("/")
        assert a.journal.describe()["journal_bytes"] == 256 << 10
        b.mkdir("/d")
        names, wrapped, last_pos = [], False, b.journal.pos
        for i in itertools.count():
            name = f"/d/f{i:05d}"
            with b.open(name, "wb") as f:
                f.write(name.encode())
            names.append(name)
            if i % 7 == 6:
                b.unlink(names.pop(0))
            wrapped, last_pos = b.journal.pos < last_pos, b.journal.pos
            if wrapped:
                break
        rebuilds = a.coherence["full_rebuilds"]
        assert sorted(a.listdir("/d")) == sorted(n.rsplit("/", 1)[1] for n in names)
        assert a.coherence["full_rebuilds"] == rebuilds + 1
        for name in names[-5:]:
            with a.open(name, "rb") as f:
                assert f.read() == name.encode()
        a.mkdir("/after")  # a's allocator and inode numbers are right again
        with a.open("/after/g", "wb") as f:
            f.write(b"g" * 9000)
        assert b.listdir("/after") == ["g"]
        assert a.coherence["full_rebuilds"] == rebuilds + 1
    report = daxfs.check(path)
    assert report.ok, report.errors


def test_a_mount_a_little_behind_a_checkpoint_reads_the_retired_records(make_pool):
    """Records a checkpoint retires stay in the area until new ones reach
    them: a mount that stopped just before the checkpoint reads them there,
    then the new ones, and does not rebuild."""
    path = make_pool(size=16 * MiB)
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        b.mkdir("/d")
        size = b.journal.describe()["journal_bytes"]
        names = []
        for i in itertools.count():
            if b.journal.pos < size * 9 // 10:
                a.listdir("/")  # a keeps up until the log is nearly full
            last_pos = b.journal.pos
            names.append(f"f{i:05d}")
            with b.open(f"/d/{names[-1]}", "wb") as f:
                f.write(b"y" * 100)
            if b.journal.pos < last_pos:
                break
        with b.open("/d/after-the-checkpoint", "wb") as f:
            f.write(b"z")
        before = a.coherence.copy()
        assert sorted(a.listdir("/d")) == sorted(names + ["after-the-checkpoint"])
        assert a.coherence["full_rebuilds"] == before["full_rebuilds"]
        assert a.coherence["records_applied"] > before["records_applied"] + 3


def test_records_read_without_the_lock_are_those_read_with_it_or_none(make_pool):
    """An optimistic change catches up with no pool lock
    (Journal.records_unlocked): it gets exactly what the locked read gets,
    and nothing (so the caller takes the lock) once a checkpoint may have
    written over them."""
    path = make_pool(size=16 * MiB)
    with daxfs.mount(path) as a, daxfs.mount(path) as b:
        a.listdir("/")
        seq, pos = a._seen_seq, a._seen_pos
        b.mkdir("/d")
        for i in range(20):
            with b.open(f"/d/f{i}", "wb") as f:
                f.write(b"x" * 100)
        upto = a.journal.peek()
        unlocked = a.journal.records_unlocked(seq, pos, upto)
        locked = a.journal.records_between(seq, pos, upto)
        assert unlocked is not None and len(unlocked) == upto - seq
        assert [r.writes for r in unlocked] == [r.writes for r in locked]
        assert [r.claims for r in unlocked] == [r.claims for r in locked]
        b.chmod("/d", 0o755)  # (a change that writes: said creates absorbed first)
        b.journal.checkpoint()  # the same records, now of an older log generation
        assert a.journal.records_unlocked(seq, pos, a.journal.peek()) is None
        assert sorted(a.listdir("/d")) == sorted(f"f{i}" for i in range(20))
        assert a.coherence["full_rebuilds"] == 0  # (the locked way read them)


def test_backoff_is_kept_per_contended_directory():
    """After conflicts over a directory, changes reaching it go the
    exclusive way for a while (doubling per conflict, halving per optimistic
    commit there); changes elsewhere are not held back.  A conflict over
    anything else holds back every change."""
    from daxfs.coherence import MAX_BACKOFF, MIN_BACKOFF, Backoff

    b = Backoff()
    assert not b.busy(7) and not b.everywhere()
    b.conflict(frozenset({7}))
    assert b.busy(7) and not b.busy(8) and not b.everywhere()
    for _ in range(MIN_BACKOFF):
        assert b.busy(7)
        b.spend({7})
    assert not b.busy(7)
    b.conflict(frozenset({7}))  # again: twice as long
    for _ in range(2 * MIN_BACKOFF):
        b.spend({7})
    assert not b.busy(7)
    for _ in range(20):
        b.conflict(frozenset({7}))
    assert b.left[7] == MAX_BACKOFF
    b.left.clear()
    b.committed({7})  # an optimistic commit there halves the next back-off
    b.conflict(frozenset({7}))
    assert b.left[7] == MAX_BACKOFF // 2
    b.conflict(frozenset())  # not over a directory: everything waits
    assert all(b.everywhere() for _ in range(MIN_BACKOFF))
    assert not b.everywhere()


@pytest.mark.parametrize("theirs", [["theirs"], [f"{i:03d}" + "t" * 200 for i in range(40)]])
def test_a_mkdir_meeting_anothers_mkdir_in_its_parent_is_rebased_with_its_link(
    pool_path, monkeypatch, theirs
):
    """An optimistic mkdir that finds, at its check, another mount's mkdir
    committed in the same parent (which rewrote the parent's slot, its link
    count) is rebased, not run again: its entry goes after the other's and
    its +1 onto the count the other left, so the parent counts both.  Also
    when the other's mkdirs gave the parent new blocks, so that the rebase
    loads the parent anew to check its names (a link count lost so until
    this session: the reload hid that the count had to be taken in)."""
    from daxfs.coherence import Change

    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        a.mkdir("/c")
        for i in range(3):
            a.mkdir(f"/c/old{i}")
        b.listdir("/c")
        real = Change._store_new_blocks
        cut_in = []

        def b_cuts_in(change):
            if change.fs is a and not cut_in:  # a's mkdir, prepared, not checked
                cut_in.append(True)
                for name in theirs:
                    b.mkdir(f"/c/{name}")
            return real(change)

        monkeypatch.setattr(Change, "_store_new_blocks", b_cuts_in)
        before = a.coherence.copy()
        a.mkdir("/c/ours")
        assert cut_in
        assert a.coherence["rebases"] == before["rebases"] + 1
        assert a.coherence["conflicts"] == before["conflicts"]
        names = sorted(["old0", "old1", "old2", "ours", *theirs])
        for fs in (a, b):
            assert fs.stat("/c").st_nlink == 2 + len(names)
            assert sorted(fs.listdir("/c")) == names
    with daxfs.mount(pool_path) as fresh:
        assert fresh.stat("/c").st_nlink == 2 + len(names)
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


def exclusive_locks_taken(monkeypatch) -> list[int]:
    """The fds coherence.lock_pool is asked to lock exclusively from now on
    (appended as it is called)."""
    from daxfs import coherence

    taken: list[int] = []
    real_lock = coherence.lock_pool

    def counting(fd, op, *args):
        if op == fcntl.LOCK_EX:
            taken.append(fd)
        return real_lock(fd, op, *args)

    monkeypatch.setattr(coherence, "lock_pool", counting)
    return taken


def test_a_missing_name_is_answered_without_the_exclusive_lock_unless_someone_made_it(
    pool_path, monkeypatch
):
    """An optimistic change that fails before changing anything (no such
    directory, a name taken) lets its error out after checking, with no
    lock, that the records published meanwhile did not touch what it read
    (zarr probes for each new chunk row's directory so).  When one did (the
    directory appeared meanwhile), the error does not stand: the change
    runs again and succeeds."""
    from daxfs.coherence import Change

    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        a.mkdir("/z")
        b.listdir("/z")
        exclusive = exclusive_locks_taken(monkeypatch)
        with pytest.raises(FileNotFoundError):
            a._create_with("/z/row/0", b"x" * 5000)
        with pytest.raises(FileExistsError):
            a.open("/z", "xb")
        assert exclusive == []

        real_check = Change._error_stands_unlocked
        made = []

        def b_makes_it_first(change, etype):
            if change.fs is a and not made:
                made.append(True)
                b.mkdir("/z/row")
            return real_check(change, etype)

        monkeypatch.setattr(Change, "_error_stands_unlocked", b_makes_it_first)
        a._create_with("/z/row/0", b"y" * 5000)  # ENOENT met, not let out
        assert made
        with b.open("/z/row/0", "rb") as f:
            assert f.read() == b"y" * 5000
    assert daxfs.check(pool_path).ok


def test_an_overwrite_after_anothers_truncate_lands_in_the_file_not_in_what_it_gave_up(pool_path):
    """An overwrite with nothing to commit (DataPath._overwrite) stores with
    the cached inode's extents only while this mount is caught up: after
    another mount truncated the file and a new file took its blocks, the
    write goes the way of a change, which catches up first, and the new
    file keeps its bytes."""
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        with a.open("/f", "wb") as f:
            f.write(b"o" * 20_000)
        with a.open("/f", "r+b", buffering=0) as f:
            f.write(b"n" * 100)  # an overwrite: a's inode cached, caught up
            b.truncate("/f", 0)
            with b.open("/g", "wb") as g:  # takes the blocks /f gave up
                g.write(b"g" * 20_000)
            f.seek(100)
            f.write(b"w" * 300)
        for fs in (a, b):
            with fs.open("/f", "rb") as f:
                assert f.read() == bytes(100) + b"w" * 300
            with fs.open("/g", "rb") as g:
                assert g.read() == b"g" * 20_000
    assert daxfs.check(pool_path).ok


def test_an_overwrite_stores_under_the_shared_lock_and_a_truncate_meanwhile_sends_it_again(
    pool_path, monkeypatch
):
    """An optimistic write over bytes a file has stores them under the
    shared pool lock once the records published since it caught up are
    found disjoint from it; an overwrite in place then commits nothing (its
    new times wait for the close) and never takes the exclusive lock.  When
    another mount truncated the file meanwhile and its blocks went to a new
    file, the store does not land: the write runs again the exclusive way,
    after the truncate, and the other file keeps its bytes."""
    from daxfs.coherence import Change

    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        with a.open("/f", "wb") as f:
            f.write(b"o" * 20_000)
        with b.open("/f", "rb") as f:
            assert f.read() == b"o" * 20_000
        exclusive = exclusive_locks_taken(monkeypatch)
        with a.open("/f", "r+b") as f:
            f.seek(4096)
            f.write(b"n" * 8192)
            assert exclusive == []  # (closing commits the new times)
        with b.open("/f", "rb") as f:
            assert f.read() == b"o" * 4096 + b"n" * 8192 + b"o" * 7712

        real_store = Change._store_over_existing
        cut_in = []

        def b_truncates_first(change):
            if change.fs is a and not cut_in:
                cut_in.append(True)
                b.truncate("/f", 0)
                with b.open("/g", "wb") as g:  # takes the blocks /f gave up
                    g.write(b"g" * 20_000)
            return real_store(change)

        monkeypatch.setattr(Change, "_store_over_existing", b_truncates_first)
        before = a.coherence.copy()
        with a.open("/f", "r+b") as f:
            b.mkdir("/m")  # a behind: its overwrite is a change (not DataPath._overwrite)
            f.seek(100)
            f.write(b"w" * 300)
        assert cut_in
        for fs in (a, b):
            with fs.open("/f", "rb") as f:
                assert f.read() == bytes(100) + b"w" * 300
            with fs.open("/g", "rb") as g:
                assert g.read() == b"g" * 20_000
        assert a.coherence["conflicts"] == before["conflicts"] + 1
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


def test_a_large_write_copies_its_data_with_no_exclusive_lock_into_leased_chunks(
    pool_path, monkeypatch
):
    """Sharing the pool, a write that makes a file large first leases the
    whole chunks it needs as windows of its own (one short exclusive
    section), then places and copies its data optimistically: while the
    bytes are stored, another process can take the pool lock.  The file
    is whole chunks, nobody else's window is used, and the pool checks
    clean."""
    from daxfs.coherence import Change
    from daxfs.layout import CHUNK

    data = os.urandom(MiB) * 12
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        b.mkdir("/b")
        with b.open("/b/small", "wb") as f:
            f.write(b"s" * 5000)
        real = Change._store_new_blocks
        lock_free_while_storing = []

        def storing(change):
            if change.fs is a and a._txn_deferred:
                probe = os.open(pool_path, os.O_RDONLY)
                try:
                    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    lock_free_while_storing.append(True)
                except BlockingIOError:
                    lock_free_while_storing.append(False)
                finally:
                    os.close(probe)
            return real(change)

        monkeypatch.setattr(Change, "_store_new_blocks", storing)
        before = a.coherence.copy()
        with a.open("/big", "wb") as f:
            f.write(data)
        assert lock_free_while_storing and all(lock_free_while_storing)
        assert a.coherence["optimistic_commits"] > before["optimistic_commits"]
        with b.open("/big", "rb") as f:
            assert f.read() == data
        assert all(e.device_offset % CHUNK == 0 and e.length % CHUNK == 0 for e in a.iomap("/big"))
        with b.open("/b/small", "rb") as f:
            assert f.read() == b"s" * 5000
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


# How long a reading child and the churning parent go on.  Not a rate: on
# a loaded machine (two cores, the other test worker busy) a fixed two
# seconds saw 92 reads where the tests ask for more than 100.  Each side
# goes on for its seconds *and* until it has done its share, so the
# asserted counts are reached however slow the machine is (within a
# minute more), and the race they are there to make stays likely.
AT_LEAST = 150

KEEP_READING = f"AT_LEAST = {AT_LEAST}\n" + textwrap.dedent(r"""
    import os, select, time

    enough = False
    start = None

    def wait_for_go():
        global start
        assert os.read(0, 3) == b"go\n"
        start = time.monotonic()

    def keep_reading(reads, seconds):
        # For `seconds`, for AT_LEAST reads, and until the parent has said
        # "enough" (it has changed the file AT_LEAST times); never for a
        # minute more than `seconds`.
        global enough
        if not enough and select.select([0], [], [], 0)[0]:
            enough = os.read(0, 7) == b"enough\n"
        elapsed = time.monotonic() - start
        wanted = elapsed < seconds or reads < AT_LEAST or not enough
        return wanted and elapsed < seconds + 60
""")


def churn_while_the_child_reads(child, step) -> tuple[list[str], int]:
    """Let ``child`` (a KEEP_READING script, waiting for "go") start, and
    run ``step`` until it exits, saying "enough" after AT_LEAST steps; the
    child's last line ("ok ..."), split, and how many steps ran."""
    child.stdin.write("go\n")
    child.stdin.flush()
    steps = 0
    while child.poll() is None and steps < 100 * AT_LEAST:
        step()
        steps += 1
        if steps == AT_LEAST:
            child.stdin.write("enough\n")
            child.stdin.flush()
    reply = child.stdout.readline().split()
    assert reply and reply[0] == "ok", reply
    return reply, steps


READER = KEEP_READING + textwrap.dedent(r"""
    import sys, time
    import daxfs

    size = int(sys.argv[2])
    pattern = (bytes(range(1, 256)) * (size // 255 + 1))[:size]
    fs = daxfs.mount(sys.argv[1])
    buf = bytearray(size)
    f = fs.open("/f", "rb", buffering=0)
    print("open", flush=True)
    wait_for_go()
    reads = whole = 0
    while keep_reading(reads, float(sys.argv[3])):
        f.seek(0)
        n = f.readinto(buf)
        reads += 1
        whole += n == size
        # The file only ever holds the pattern (or is shorter): any other
        # byte is another file's, read through space freed under the copy.
        if buf[:n] != pattern[:n]:
            bad = next(i for i in range(n) if buf[i] != pattern[i])
            print("WRONG", n, bad, buf[bad], flush=True)
            sys.exit(1)
    print("ok", reads, whole, flush=True)
""")


def test_a_read_never_returns_bytes_of_space_freed_under_it(pool_path):
    """A reader in another process reads an open file over and over, with no
    pool lock while nothing changes (the seqlock on the live word:
    data._unlocked_read), while this process truncates the file (its blocks
    freed), writes another file into the space it freed, and writes the
    file again, for two seconds.  Every read returns the file's own
    bytes, or fewer of them."""
    size = 4 * MiB
    pattern = (bytes(range(1, 256)) * (size // 255 + 1))[:size]
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(pattern)
        fill_the_whole_chunks(fs)
        with script_child(READER, pool_path, str(size), "2.0") as child:
            assert child.stdout.readline().strip() == "open"

            def rewrite():
                fs.truncate("/f", 0)  # its blocks freed,
                with fs.open("/other", "wb") as g:  # taken by another file,
                    g.write(b"\xee" * size)
                fs.unlink("/other")
                with fs.open("/f", "ab") as f:  # and the file written again
                    f.write(pattern)

            reply, rewrites = churn_while_the_child_reads(child, rewrite)
            assert int(reply[1]) >= AT_LEAST and rewrites >= AT_LEAST, (reply, rewrites)
            assert child.wait(timeout=60) == 0


PAUSED_READER = textwrap.dedent(r"""
    import sys
    import daxfs
    from daxfs.inode import Inode

    where = Inode.device_at
    armed = False

    def paused(self, off, length):
        # Once armed (no lock: the read's first look at the live word is
        # made): before the copy, let the other process free and reuse the
        # space.  The read again under the lock asks too, disarmed.
        global armed
        if armed:
            armed = False
            print("reading", flush=True)
            sys.stdin.readline()
        return where(self, off, length)

    Inode.device_at = paused
    fs = daxfs.mount(sys.argv[1])
    f = fs.open("/f", "rb", buffering=0)
    f.read(1)  # cached, caught up
    f.seek(0)
    buf = bytearray(int(sys.argv[2]))
    armed = True
    n = f.readinto(buf)
    print("read", n, buf[:n].count(0xEE), flush=True)
""")


@pytest.mark.parametrize("buffer", ["bytearray", "memoryview"])
def test_a_read_whose_space_is_reused_before_its_copy_reads_again(pool_path, buffer):
    """The race of the test above, made certain: a reader with no lock has
    read the live word and is about to copy when this process truncates
    the file and writes another file (0xEE) into exactly its space.  The
    copy sees the other file's bytes; the second look at the live word
    must throw them away, and the read runs again under the lock (the file
    is empty by then)."""
    size = 1 * MiB
    with daxfs.mount(pool_path) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"\x01" * size)
        fill_the_whole_chunks(fs)
        src = PAUSED_READER
        if buffer == "memoryview":
            src = src.replace("n = f.readinto(buf)", "n = f.readinto(memoryview(buf))")
        with script_child(src, pool_path, str(size)) as child:
            assert child.stdout.readline().strip() == "reading"
            fs.truncate("/f", 0)
            with fs.open("/other", "wb") as g:
                g.write(b"\xee" * size)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().split() == ["read", "0", "0"]
            assert child.wait(timeout=60) == 0


WHOLE_FILE_READER = KEEP_READING + textwrap.dedent(r"""
    import sys, time
    import daxfs

    size = int(sys.argv[2])
    pattern = (bytes(range(1, 256)) * (size // 255 + 1))[:size]
    fs = daxfs.mount(sys.argv[1])
    fs.read_bytes("/f")  # (cached, caught up)
    print("ready", flush=True)
    wait_for_go()
    reads = whole = 0
    while keep_reading(whole, float(sys.argv[3])):
        try:
            got = fs.read_bytes("/f")
        except FileNotFoundError:
            continue
        reads += 1
        whole += got == pattern
        # /f only ever holds the whole pattern: anything else is bytes of a
        # file written into its space after an unlink freed it.
        if got != pattern:
            print("WRONG", len(got), flush=True)
            sys.exit(1)
    print("ok", reads, whole, flush=True)
""")


def test_read_bytes_never_returns_bytes_of_space_freed_under_it(pool_path):
    """read_bytes copies a file with no pin and no pool lock (the seqlock of
    FileSystem._cached_answer).  A reader in another process reads /f
    whole, over and over, while this process unlinks it (its blocks freed:
    no pin holds them), writes another file into the space, and makes /f
    again, for two seconds.  Every answer is the whole of /f, or no such
    file.  (Files of whole chunks, as the small blocks left are the
    reader's windows; the pool all but full, so that freed space is what
    the next file takes, with room for /f and /other twice: an unlink
    meeting the reader's pin, in its usual way's open, leaves /f's space
    to the reader's close to free.)"""
    size = 4 * MiB
    pattern = (bytes(range(1, 256)) * (size // 255 + 1))[:size]
    with daxfs.mount(pool_path) as fs:
        fs.write_bytes("/f", pattern)
        fs.open("/fill", "xb").close()
        fs.fallocate("/fill", 0, (fs.allocator.free_chunks - 6) * (2 * MiB))
        with script_child(WHOLE_FILE_READER, pool_path, str(size), "2.0") as child:
            assert child.stdout.readline().strip() == "ready"

            def rewrite():
                fs.unlink("/f")
                fs.write_bytes("/other", b"\xee" * size)
                fs.unlink("/other")
                fs.write_bytes("/f", pattern)

            reply, rewrites = churn_while_the_child_reads(child, rewrite)
            assert int(reply[2]) >= AT_LEAST and rewrites >= AT_LEAST, (reply, rewrites)
            assert child.wait(timeout=60) == 0


PAUSED_WHOLE_FILE_READER = textwrap.dedent(r"""
    import sys
    import daxfs
    from daxfs.data import DataPath

    copy = DataPath._read_bytes
    paused = []

    def pausing(self, inode, off, n):
        # The first copy, with no lock (depth 0): between the first look at
        # the live word and the copy, let the other process free the space
        # and write another file into it.
        if self._depth == 0 and not paused:
            paused.append(1)
            print("reading", flush=True)
            sys.stdin.readline()
        return copy(self, inode, off, n)

    fs = daxfs.mount(sys.argv[1])
    fs.read_bytes("/f")  # cached, caught up
    DataPath._read_bytes = pausing
    try:
        got = fs.read_bytes("/f")
        print("read", len(got), got.count(0xEE), flush=True)
    except FileNotFoundError:
        print("missing", flush=True)
""")


def test_a_read_bytes_whose_space_is_reused_before_its_copy_reads_again(pool_path):
    """The race of the test above, made certain: read_bytes has looked at
    the live word and is about to copy when this process unlinks the file
    and writes another (0xEE) into exactly its space.  The copy sees the
    other file's bytes; the second look at the live word must throw them
    away, and the read goes the usual way, which finds no such file."""
    size = 1 * MiB
    with daxfs.mount(pool_path) as fs:
        fs.write_bytes("/f", b"\x01" * size)
        fill_the_whole_chunks(fs)
        with script_child(PAUSED_WHOLE_FILE_READER, pool_path) as child:
            assert child.stdout.readline().strip() == "reading"
            fs.unlink("/f")
            fs.write_bytes("/other", b"\xee" * size)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().split() == ["missing"]
            assert child.wait(timeout=60) == 0


OLD_OR_NEW_READER = KEEP_READING + textwrap.dedent(r"""
    import sys, time
    import daxfs

    contents = {b"a" * 5000, b"b" * 70000}
    fs = daxfs.mount(sys.argv[1])
    print("ready", flush=True)
    wait_for_go()
    reads, seen = 0, set()
    while keep_reading(reads, float(sys.argv[2])):
        how = reads % 3
        if how == 0:
            got = fs.read_bytes("/f")
        else:
            with fs.open("/f", "rb") as f:
                got = f.read() if how == 1 else f.read(70000)
        reads += 1
        if got not in contents:  # empty, or a mix: the replace was seen half done
            print("WRONG", len(got), got[:1], got[-1:], flush=True)
            sys.exit(1)
        seen.add(got[:1])
    print("ok", reads, len(seen), flush=True)
""")


def test_write_bytes_replaces_a_file_that_another_process_reads_whole_at_once(pool_path):
    """write_bytes over an existing file is one change: a reader in another
    process (read_bytes, or an open file) gets the old bytes or the new,
    never an empty file or a mix, while this process replaces the file
    with either of two contents for a second and a half."""
    with daxfs.mount(pool_path) as fs:
        fs.write_bytes("/f", b"a" * 5000)
        with script_child(OLD_OR_NEW_READER, pool_path, "1.5") as child:
            assert child.stdout.readline().strip() == "ready"
            contents = itertools.cycle([b"b" * 70000, b"a" * 5000])
            reply, replaces = churn_while_the_child_reads(
                child, lambda: fs.write_bytes("/f", next(contents))
            )
            assert int(reply[1]) >= AT_LEAST and reply[2] == "2", reply
            assert replaces >= AT_LEAST, replaces
            assert child.wait(timeout=60) == 0


def _rename_over(fs, path: str, data: bytes) -> None:
    fs.write_bytes("/tmp", data)
    fs.rename("/tmp", path)


@pytest.mark.parametrize(
    "replace",
    [FileSystem._replace_with, _rename_over],
    ids=["replace_with", "write and rename over"],
)
def test_a_file_replaced_while_another_process_reads_it_is_freed_after(pool_path, replace):
    """A new file put in place of one another process reads whole, in one
    change (_replace_with, DaxStore's replace of a key) or by a rename over
    it: the reader gets the old bytes or the new, never a missing name, an
    empty file or a mix.  Each old file it had open is kept for it and
    freed after it, while both run: its close may come between our look at
    its pin and our commit (and then leave it to us), which left hundreds
    of orphans until the next mount."""
    with daxfs.mount(pool_path) as fs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        fs.write_bytes("/f", b"a" * 5000)
        free = fs.statvfs().f_bfree
        with script_child(OLD_OR_NEW_READER, pool_path, "1.5") as child:
            assert child.stdout.readline().strip() == "ready"
            contents = itertools.cycle([b"b" * 70000, b"a" * 5000])
            reply, replaces = churn_while_the_child_reads(
                child, lambda: replace(fs, "/f", next(contents))
            )
            assert int(reply[1]) >= AT_LEAST and reply[2] == "2", reply
            assert replaces >= AT_LEAST, replaces
            assert child.wait(timeout=60) == 0
        fs._replace_with("/f", b"a" * 5000)  # (a call after the last commit's)
        assert fs.statvfs().f_bfree == free
    # (A look that an optimistic call ran used to fail on a Conflict, warn,
    # and leave the orphan to the next mount.)
    assert not [w for w in caught if "orphan" in str(w.message)], caught
    report = daxfs.check(pool_path)
    assert report.ok and not [n for n in report.notes if "orphan" in n], report.notes


PAUSED_BEFORE_PUBLISH = textwrap.dedent(r"""
    import sys
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    publish = fs.journal._publish

    def paused():  # every home of the commit stored: wait before publishing
        print("stored", flush=True)
        sys.stdin.readline()
        publish()

    fs.journal._publish = paused
    fs.rename("/d/old", "/e/new")
    print("renamed", flush=True)
""")


def test_a_query_with_no_lock_reads_no_home_before_its_record_is_published(pool_path):
    """A committer stores its homes (here the two directories' blocks of a
    rename) before it publishes the live word.  A query taking no lock may
    answer only from this mount's caches: a directory it has not cached
    must wait for the lock, and so for the publish, rather than be read
    from the media half-way (coherence.without_lock, cache_only)."""
    make_d_old_and_e(pool_path)
    with daxfs.mount(pool_path) as fs:
        listing_waits_for_the_publish(fs, pool_path)


def listing_waits_for_the_publish(fs, pool_path: str) -> None:
    """With /d/old made, ``fs`` lists /d (cached) and then, while another
    process's rename of /d/old to /e/new waits between its homes and its
    publish (PAUSED_BEFORE_PUBLISH), /e, which it has not cached: that
    listing must not show the rename before the publish, and must after."""
    assert fs.listdir("/d") == ["old"]  # /d cached, /e not
    with script_child(PAUSED_BEFORE_PUBLISH, pool_path) as child:
        assert child.stdout.readline().strip() == "stored"
        seq = fs.journal.peek()
        answers = []
        reader = threading.Thread(target=lambda: answers.append(fs.listdir("/e")))
        reader.start()
        reader.join(0.5)
        published = fs.journal.peek() != seq
        assert not answers or published, f"/e read as {answers[0]} before the publish"
        child.stdin.write("go\n")
        child.stdin.flush()
        reader.join(30)
        assert answers == [["new"]]
        assert child.stdout.readline().strip() == "renamed"
        assert child.wait(timeout=60) == 0
        assert fs.listdir("/d") == []


def make_d_old_and_e(pool_path: str) -> None:
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        fs.mkdir("/e")
        with fs.open("/d/old", "wb") as f:
            f.write(b"x")


HOLDER_OF_TWO = textwrap.dedent(r"""
    import sys
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    reader, mapping = fs.open("/d/f3", "rb"), fs.map("/d/f7")
    print("holding", flush=True)
    sys.stdin.readline()  # the other process has removed every file of /d
    ok = reader.read() == b"\x03" * 6000 and bytes(mapping.buffer[:6000]) == b"\x07" * 6000
    reader.close()
    mapping.close()
    print("ok" if ok else "WRONG", flush=True)
""")


def test_files_another_process_holds_outlive_a_batched_removal_and_are_freed_after(pool_path):
    """rm -r of a directory (_unlink_names, several files to a change) while
    another process has one of its files open and another mapped: both are
    kept for it, whole, and freed once it lets go, with no orphan left for
    the next mount."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        fs.write_bytes("/d/probe", b"")  # (so that /d has its first block)
        fs.unlink("/d/probe")
        free = fs.statvfs().f_bfree
        names = [f"f{i}" for i in range(40)]
        for i, name in enumerate(names):
            fs.write_bytes("/d/" + name, bytes([i]) * 6000)
        with script_child(HOLDER_OF_TWO, pool_path) as child:
            assert child.stdout.readline().strip() == "holding"
            assert fs._unlink_names("/d", names) == [] and fs.listdir("/d") == []
            assert fs.statvfs().f_bfree < free  # (the two held files' blocks)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
            assert child.wait(timeout=60) == 0
        fs.mkdir("/e")  # (a call after the holder let go: its orphans are looked at again)
        fs.rmdir("/e")
        assert fs.statvfs().f_bfree == free
    report = daxfs.check(pool_path)
    assert report.ok and not [n for n in report.notes if "orphan" in n], report.notes
