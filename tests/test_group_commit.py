"""Group commit on page-cache pools (issue 14, DESIGN.md "Group commit").

On a pool file on an ordinary disk, changes commit to the journal in memory
and become durable together at fsync, sync, close, every commit_interval
seconds, or (mount option commit="sync") on return.  What is checked here
on the real kernel, with real files and real kills:

  * no home location is in the file before its record is durable: a new
    inode's slot reads as zeroes through pread until a group commit, while
    the mount sees the file; the private copies those homes took show in
    /proc/self/smaps as anonymous memory and are given back after it;
  * a killed process loses nothing: the next mount (same boot, same file)
    replays every record the page cache holds;
  * a power loss loses at most what followed the last group commit: a copy
    of the pool file (another file, as after a restart: recovery cannot
    trust that the page cache held it) recovers to the state of the last
    durable mark, never to a mix;
  * fsync, sync, the commit interval and sync mode each make the changes
    before them survive that;
  * space freed by a commit not yet durable is not reused until it is
    durable, and a full pool commits to get that space rather than fail.
Crash states (every subset of dirty pages at every operation's end) are in
test_crash.py ("lazy" cases); several processes on a disk pool in
test_share_model.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import daxfs
from conftest import new_pool, script_child

MiB = 1 << 20


def power_loss_copy(pool: str, tmp_path) -> str:
    """The pool file as a restart after a power loss could find it at best
    (everything the page cache held), in another file: recovery there trusts
    only what a durable mark covers."""
    copy = str(tmp_path / f"after-power-loss-{time.monotonic_ns()}.pool")
    shutil.copyfile(pool, copy)
    return copy


def names(pool: str) -> list[str]:
    with daxfs.mount(pool) as fs:
        return sorted(fs.listdir("/"))


def anonymous_kib(addr: int) -> int:
    """Anonymous memory of the mapping that starts at ``addr`` (smaps)."""
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            first = line.split()[0]
            if "-" in first and ":" not in first:
                inside = int(first.split("-")[0], 16) == addr
            elif inside and first == "Anonymous:":
                return int(line.split()[1])
    raise AssertionError(f"no mapping at {addr:#x}")


def test_a_disk_pool_commits_lazily_and_a_tmpfs_pool_does_not(disk_pool, pool_path):
    with daxfs.mount(disk_pool) as fs:
        assert fs.commit_mode == "lazy" and fs.region.lazy_capable
    with daxfs.mount(disk_pool, commit="sync") as fs:
        assert fs.commit_mode == "sync"
    with daxfs.mount(pool_path) as fs:  # tmpfs: durable on return, no page cache to batch
        assert fs.commit_mode == "sync" and not fs.region.lazy_capable
    with pytest.raises(ValueError, match="commit"):
        daxfs.mount(disk_pool, commit="sometimes")


def test_homes_stay_out_of_the_file_until_their_record_is_durable(disk_pool):
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"x" * 5000)
        ino = fs.stat("/f").st_ino
        slot = fs.inodes.slot_off(ino)
        with open(disk_pool, "rb") as raw:
            assert os.pread(raw.fileno(), 256, slot) == bytes(256), "a home reached the file"
            assert fs.region.holds_homes and anonymous_kib(fs.region.addr) > 0
            fs.sync()
            assert os.pread(raw.fileno(), 256, slot) != bytes(256), "sync wrote no home"
        assert not fs.region.holds_homes and anonymous_kib(fs.region.addr) == 0
        with fs.open("/f", "rb") as f:
            assert f.read() == b"x" * 5000  # read from the file again, the same


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import daxfs
    fs = daxfs.mount(sys.argv[1], commit_interval=3600)
    fs.mkdir("/durable")
    fs.sync()
    for i in range(int(sys.argv[2])):
        with fs.open(f"/f{i}", "wb") as f:
            f.write(bytes([i % 251]) * (1000 + 37 * i))
    fs.unlink("/f0")
    print("done", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_process_loses_nothing_and_a_power_loss_only_the_undurable(disk_pool, tmp_path):
    n = 50
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, disk_pool, str(n)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL and child.stdout.strip() == "done"
    crashed = power_loss_copy(disk_pool, tmp_path)
    # The same file, the same boot: the page cache holds every record.
    with daxfs.mount(disk_pool) as fs:
        assert sorted(fs.listdir("/")) == sorted(["durable"] + [f"f{i}" for i in range(1, n)])
        for i in range(1, n):
            with fs.open(f"/f{i}", "rb") as f:
                assert f.read() == bytes([i % 251]) * (1000 + 37 * i)
    assert daxfs.check(disk_pool).ok
    # After a power loss: what the last group commit covered, nothing after.
    assert names(crashed) == ["durable"]
    assert daxfs.check(crashed).ok


@pytest.mark.parametrize("how", ["fsync", "sync", "interval", "sync mode"])
def test_each_commit_point_makes_what_came_before_survive_a_power_loss(how, disk_pool, tmp_path):
    mode = "sync" if how == "sync mode" else None
    fs = daxfs.mount(disk_pool, commit=mode, commit_interval=0.2 if how == "interval" else 3600)
    try:
        fs.mkdir("/before")
        with fs.open("/before/f", "wb") as f:
            f.write(b"kept" * 3000)
        if how == "fsync":
            fs.fsync("/before/f")
        elif how == "sync":
            fs.sync()
        elif how == "interval":
            deadline = time.monotonic() + 10
            while fs._unsynced and time.monotonic() < deadline:
                time.sleep(0.05)
        fs.mkdir("/after")  # lazy: may be lost; sync mode: durable on return
        crashed = power_loss_copy(disk_pool, tmp_path)
    finally:
        fs.close()
    with daxfs.mount(crashed) as got:
        assert "before" in got.listdir("/")
        with got.open("/before/f", "rb") as f:
            assert f.read() == b"kept" * 3000
        assert ("after" in got.listdir("/")) == (how == "sync mode")


def test_space_freed_lazily_is_reused_only_once_durable(disk_pool):
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        with fs.open("/old", "wb") as f:
            f.write(b"o" * (3 * MiB))
        fs.sync()
        old = {(e.device_offset, e.length) for e in fs.iomap("/old")}
        fs.unlink("/old")
        free_after_unlink = fs.statvfs().f_bfree
        with fs.open("/new", "wb") as f:
            f.write(b"n" * (3 * MiB))
        new = [(e.device_offset, e.length) for e in fs.iomap("/new")]
        # A power loss now must find /old's blocks holding /old's bytes.
        assert not any(a < d + n and d < a + m for a, m in old for d, n in new), (old, new)
        assert free_after_unlink > fs.statvfs().f_bfree  # held space counts as free
        fs.sync()
        with fs.open("/newer", "wb") as f:
            f.write(b"m" * (3 * MiB))  # (may reuse /old's blocks now)
    assert daxfs.check(disk_pool).ok


def test_a_full_pool_commits_to_reuse_space_freed_lazily(tmp_path):
    pool = new_pool(str(tmp_path), 16 * MiB)
    with daxfs.mount(pool, commit_interval=3600) as fs:
        room = fs.statvfs().f_bavail * 4096 - 2 * MiB
        with fs.open("/big", "wb") as f:
            f.write(b"b" * room)
        fs.unlink("/big")
        with fs.open("/again", "wb") as f:  # only the freed space is left
            f.write(b"a" * room)
        assert fs.stat("/again").st_size == room
    assert daxfs.check(pool).ok


FOLLOWER = textwrap.dedent(
    """
    import sys
    import daxfs
    with daxfs.mount(sys.argv[1], readonly=True) as fs:
        for line in sys.stdin:
            path = line.strip()
            with fs.open(path, "rb") as f:
                print(len(f.read()), sorted(fs.listdir("/")), flush=True)
    """
)


def test_another_process_sees_commits_before_they_are_durable(disk_pool):
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        fs.mkdir("/d")
        fs.sync()  # (a read-only mount of a pool with records recovers it first)
        with script_child(FOLLOWER, disk_pool) as follower:
            for i in range(5):
                with fs.open(f"/f{i}", "wb") as f:
                    f.write(b"z" * (100 + i))
                assert not fs.journal.durable_limit() >= fs.journal.next_seq
                follower.stdin.write(f"/f{i}\n")
                follower.stdin.flush()
                size, _, listing = follower.stdout.readline().partition(" ")
                assert int(size) == 100 + i
                assert listing.strip() == repr(sorted(["d"] + [f"f{k}" for k in range(i + 1)]))
            follower.stdin.close()
            assert follower.wait(timeout=30) == 0


def test_records_a_power_loss_dropped_never_come_back(disk_pool, tmp_path):
    """Lazy records past the durable mark may be whole in the file after a
    power loss.  Dropped by the first recovery, they must be gone for good:
    not replayed by a later recovery that trusts the page cache (same boot),
    nor taken by a new generation of the log that starts at the same seq."""
    fs = daxfs.mount(disk_pool, commit_interval=3600)
    try:
        for i in range(3):
            fs.mkdir(f"/lost{i}")  # never durable: no group commit
        crashed = power_loss_copy(disk_pool, tmp_path)
    finally:
        fs.close()
    assert names(crashed) == []
    with daxfs.mount(crashed) as again:
        assert again.journal._same_boot()  # from now on recovery trusts this boot
    assert names(crashed) == []
    with daxfs.mount(crashed) as again:
        again.mkdir("/new")
        with again.open("/new/f", "wb") as f:
            f.write(b"n" * 100)
    assert names(crashed) == ["new"]
    assert daxfs.check(crashed).ok


def test_a_follower_lets_its_copies_go_once_the_homes_are_written_out(disk_pool):
    with daxfs.mount(disk_pool, commit_interval=3600) as writer:
        with daxfs.mount(disk_pool, readonly=True) as follower:
            writer.mkdir("/d")
            assert follower.listdir("/") == ["d"]  # caught up: the homes in its copy
            assert follower.region.holds_homes
            writer.sync()  # written out to the file
            assert follower.listdir("/") == ["d"]  # (nothing new: still caught up)
            writer.mkdir("/e")
            assert sorted(follower.listdir("/")) == ["d", "e"]
            writer.sync()
            follower.listdir("/")
            assert not follower.region.holds_homes
            assert anonymous_kib(follower.region.addr) == 0


def test_fsync_takes_an_open_file_too(disk_pool, tmp_path):
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        with fs.open("/t.txt", "w") as f:
            f.write("written, not yet flushed")
            fs.fsync(f)  # flushed and made durable, as f.flush() + os.fsync(f.fileno())
            crashed = power_loss_copy(disk_pool, tmp_path)
        with pytest.raises(TypeError):
            fs.fsync(3.5)
    with daxfs.mount(crashed) as got, got.open("/t.txt") as f:
        assert f.read() == "written, not yet flushed"


@pytest.mark.parametrize("regrow", ["fallocate", "truncate", "write"])
def test_a_file_that_shrank_lazily_is_not_changed_in_place_by_growing_again(
    regrow, disk_pool, tmp_path
):
    """Growing zeroes (or writes) the bytes past the end in the blocks a file
    kept when it shrank; before the shrink is durable those bytes are still
    the file's on the media, so the shrink is committed first."""
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"a" * 12288)
        fs.sync()
        fs.truncate("/f", 5000)
        if regrow == "fallocate":
            fs.fallocate("/f", 0, 12288)
        elif regrow == "truncate":
            fs.truncate("/f", 12288)
        else:
            with fs.open("/f", "r+b") as f:
                f.seek(5000)
                f.write(b"b" * 3000)
        crashed = power_loss_copy(disk_pool, tmp_path)
    with daxfs.mount(crashed) as got, got.open("/f", "rb") as f:
        data = f.read()
    # The shrink was committed before the growth: the file as it was, or shrunk.
    assert data in (b"a" * 12288, b"a" * 5000), (len(data), data[4990:5010])


def test_rewriting_a_file_costs_no_group_commit(disk_pool, monkeypatch):
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"1" * 5000)
        commits = []
        monkeypatch.setattr(fs.journal, "group_commit", lambda: commits.append(1))
        for _ in range(5):
            with fs.open("/f", "wb") as f:  # truncates to 0: no block kept
                f.write(b"2" * 5000)
        assert commits == []


def test_a_rebuild_keeps_holding_space_freed_lazily(disk_pool):
    """A full rebuild (a lapped process, a forked child, an aborted change)
    reads the freed blocks as free in the inode table: it must hold those
    that commits not yet durable freed, as the process that freed them did."""
    with daxfs.mount(disk_pool, commit_interval=3600) as fs:
        with fs.open("/old", "wb") as f:
            f.write(b"o" * (3 * MiB))
        fs.sync()
        old = [(e.device_offset, e.length) for e in fs.iomap("/old")]
        fs.unlink("/old")
        with fs._locked(exclusive=True):
            fs._reload()
        assert fs._quarantine, "the rebuild forgot the space a lazy unlink freed"
        with fs.open("/new", "wb") as f:
            f.write(b"n" * (3 * MiB))
        new = [(e.device_offset, e.length) for e in fs.iomap("/new")]
        assert not any(a < d + n and d < a + m for a, m in old for d, n in new), (old, new)
    assert daxfs.check(disk_pool).ok


def count_device_flushes(monkeypatch) -> list[str]:
    """Each msync and fdatasync the pool makes from now on, by name."""
    from daxfs import region as region_mod

    calls: list[str] = []
    msync, fdatasync = region_mod._libc.msync, os.fdatasync

    def counted_msync(*args):
        calls.append("msync")
        return msync(*args)

    def counted_fdatasync(fd):
        calls.append("fdatasync")
        return fdatasync(fd)

    monkeypatch.setattr(region_mod._libc, "msync", counted_msync)
    monkeypatch.setattr(os, "fdatasync", counted_fdatasync)
    return calls


def test_sync_mode_makes_a_new_file_durable_with_two_flushes(disk_pool, monkeypatch, tmp_path):
    """A create (its record: one msync), then a write into new space: its
    record names the data by crc, and one fdatasync makes both durable
    (journal.py, "Checked records").  Three flushes before version 6."""
    from daxfs.layout import crc32c

    with daxfs.mount(disk_pool, commit="sync", commit_interval=3600) as fs:
        fs.mkdir("/d")
        seq, pos = fs.journal.next_seq, fs.journal.pos
        flushes = count_device_flushes(monkeypatch)
        for i in range(20):
            with fs.open(f"/d/f{i}", "wb") as f:
                f.write(bytes([i]) * 4096)
        assert flushes == ["msync", "fdatasync"] * 20
        records = fs.journal.records_between(seq, pos, fs.journal.next_seq)
        checks = [c for r in records for c in r.checks]
        assert len(checks) == 20
        for i, (off, n, crc) in enumerate(checks):
            assert n == 4096 and crc == crc32c(bytes([i]) * 4096)
            assert [e.device_offset for e in fs.iomap(f"/d/f{i}")] == [off]
        copy = power_loss_copy(disk_pool, tmp_path)
    with daxfs.mount(copy) as fs:
        for i in range(20):
            with fs.open(f"/d/f{i}", "rb") as f:
                assert f.read() == bytes([i]) * 4096


SYNC_APPENDER = textwrap.dedent(
    """
    import sys, daxfs
    with daxfs.mount(sys.argv[1], commit="sync") as fs:
        with fs.open("/f", "ab") as f:
            f.write(b"n" * 8192)
        print(fs.journal.next_seq - 1, flush=True)
        sys.stdin.readline()  # (mounted, so that its unmount does not checkpoint first)
    """
)


def test_an_overwrite_of_bytes_another_process_checked_marks_them_durable_first(disk_pool):
    """The record that named the new bytes came from another process: this
    one learns of its checks by catching up, and covers them with a durable
    mark before storing over them."""
    with daxfs.mount(disk_pool, commit="sync", commit_interval=3600) as fs:
        with fs.open("/f", "wb") as f:
            f.write(b"o" * 100)
        with script_child(SYNC_APPENDER, disk_pool) as child:
            seq = int(child.stdout.readline())
            assert fs.stat("/f").st_size == 8292  # caught up
            assert fs.journal.pending_checks is not None
            assert fs.journal.pending_checks[0] == seq
            assert fs.journal.durable_limit() <= seq
            with fs.open("/f", "r+b") as f:
                f.seek(5000)
                f.write(b"w" * 100)  # over the child's new block
            assert fs.journal.durable_limit() > seq
            assert fs.journal.pending_checks is None
            child.stdin.close()
            assert child.wait(timeout=30) == 0
