"""A read-only mount of a pool a writer is using (pool.py, "A read-only
mount of a live pool").

A read-only mount needs no recovery while a writable mount is live: that
mount recovered the journal when it began, and the machine has not
restarted since.  So a user who may only read the pool file mounts it
while its owner writes, and the mount writes nothing to it.  What a live
writer cannot vouch for (a commit its writer died inside, lazy records
read without a private view) and a pool left by a crash still recover
first, which takes write access.

Real processes throughout: the writer is a child process (or this one),
the reader a forked child that switched to uid 65534, and kills are
SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
import textwrap

import pytest

import daxfs
from conftest import in_forked_child, new_pool, script_child
from daxfs.journal import Journal
from daxfs.layout import JHEADER, JLIVE, JLIVE_OFF, JOURNAL_HEADER_OFF, JSLOT_OFFSETS
from daxfs.pool import read_superblock
from daxfs.region import Region

NOBODY = 65534

BIG = 12_000  # /d/big is bytes(range(256)) this many times: 3 MiB, not inline
FILES = {"/d/a": b"hello", "/d/big": bytes(range(256)) * BIG, "/e/moved": b"moved"}

# A writer: mounts, makes FILES (and a rename, an unlink: records that
# write homes), says "ready", then answers "write PATH" and "stats" lines.
WRITER = textwrap.dedent(r"""
    import json, os, sys
    import daxfs

    files = {"/d/a": b"hello", "/d/big": bytes(range(256)) * int(sys.argv[2]), "/e/moved": b"moved"}
    fs = daxfs.mount(sys.argv[1], **json.loads(sys.argv[3]))
    for d in ("/d", "/e"):
        fs.mkdir(d)
    fs.write_bytes("/d/gone", b"x")
    fs.unlink("/d/gone")
    fs.write_bytes("/d/moving", b"")
    fs.rename("/d/moving", "/e/moving")
    for path, text in files.items():  # (FILES)
        fs.write_bytes(path, text)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "write":
            fs.write_bytes(arg[0], b"later")
            print("ok", flush=True)
        elif cmd == "stats":
            print(json.dumps(dict(fs.coherence)), flush=True)
""")


@pytest.fixture(params=["tmpfs", "disk"])
def public_pool(request):
    """A fresh pool (mode 0644) in a directory anyone may enter: on tmpfs,
    or on the disk (page cache: the writer commits lazily)."""
    base = "/dev/shm" if request.param == "tmpfs" and os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="daxfs-ro-", dir=base)
    try:
        os.chmod(d, 0o755)
        pool = new_pool(d)
        os.chmod(pool, 0o644)
        yield pool
    finally:
        shutil.rmtree(d, ignore_errors=True)


def started_writer(pool: str, **opts):
    """The WRITER script on ``pool`` (a context manager)."""
    return script_child(WRITER, pool, str(BIG), json.dumps(opts))


def wait_ready(child) -> None:
    assert child.stdout.readline().strip() == "ready"


def journal_words(pool: str) -> tuple[tuple[int, int], list[bytes]]:
    """The journal's live word and its two header slots: what a recovery
    (its checkpoint) changes."""
    with open(pool, "rb") as f:
        f.seek(JOURNAL_HEADER_OFF)
        raw = f.read(4096)
    live = JLIVE.unpack_from(raw, JLIVE_OFF)
    return live, [raw[o : o + JHEADER.size] for o in JSLOT_OFFSETS]


def log_holds(pool: str) -> tuple[bool, bool]:
    """(a record that writes homes, a lazy record) in the pool's log, read
    from the file: what the tests count on being there."""
    region = Region(pool, private=True)
    try:
        sb, _ = read_superblock(region)
        records = [rec for _seq, rec in Journal(region, sb).log_records()]
        return any(rec.writes for rec in records), any(rec.lazy for rec in records)
    finally:
        region.close()


def read_as_nobody(pool: str, **opts) -> list:
    """["ok", {path: bytes as latin-1}] of every file under /d and /e, read
    through a read-only mount by uid 65534, or ["error", errno, message]."""

    def work() -> list:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        assert not os.access(pool, os.W_OK)
        try:
            with daxfs.mount(pool, readonly=True, **opts) as fs:
                return ["ok", tree_of(fs)]
        except OSError as e:
            return ["error", e.errno, str(e)]

    return in_forked_child(work)


def tree_of(fs: daxfs.FileSystem) -> dict[str, str]:
    return {
        f"{d}/{name}": fs.read_bytes(f"{d}/{name}").decode("latin-1")
        for d in ("/d", "/e")
        for name in fs.listdir(d)
    }


def expected(**more: bytes) -> dict[str, str]:
    files = {**FILES, "/e/moving": b"", **more}
    return {k: v.decode("latin-1") for k, v in files.items()}


def test_a_reader_who_may_not_write_mounts_a_pool_its_writer_is_using(public_pool):
    """The writer's changes are in the log (a recovery would replay them);
    uid 65534 mounts read-only, sees every one, and the journal is as the
    writer left it: the mount recovered nothing and checkpointed nothing.
    The writer then goes on with no rebuild (nothing moved under it), and
    a second read sees its next change."""
    with started_writer(public_pool) as writer:
        wait_ready(writer)
        writes, lazy = log_holds(public_pool)
        assert writes, "the writer's records are gone: the test proves nothing"
        assert lazy == public_pool.startswith("/tmp")  # (lazy records on the disk)
        words = journal_words(public_pool)
        assert read_as_nobody(public_pool) == ["ok", expected()]
        assert journal_words(public_pool) == words
        writer.stdin.write("write /d/later\nstats\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "ok"
        assert json.loads(writer.stdout.readline()).get("full_rebuilds", 0) == 0
        assert read_as_nobody(public_pool) == ["ok", expected(**{"/d/later": b"later"})]


def test_a_pool_left_by_a_killed_writer_needs_write_access_to_mount(public_pool):
    """No writer is live and its records are in the log: a read-only mount
    must recover first.  uid 65534 cannot, and is told why (EROFS); root's
    read-only mount recovers through a writable one, and then uid 65534
    mounts and reads."""
    with started_writer(public_pool) as writer:
        wait_ready(writer)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert log_holds(public_pool)[0]
    got = read_as_nobody(public_pool)
    assert got[:2] == ["error", errno.EROFS]
    assert "needs recovery" in got[2] and public_pool in got[2]
    with daxfs.mount(public_pool, readonly=True) as fs:
        assert tree_of(fs) == expected()
    assert not log_holds(public_pool)[0]
    assert read_as_nobody(public_pool) == ["ok", expected()]


def test_lazy_records_read_with_no_private_view_are_recovered_first(tmp_path):
    """A lazy writer's homes are in its private view until written out.  A
    read-only mount that applies records to a private view of its own sees
    them (the first test); one that does not (durability "none") must not
    read the stale homes: it recovers first, so uid 65534 gets EROFS."""
    d = tempfile.mkdtemp(prefix="daxfs-ro-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        pool = new_pool(d)
        os.chmod(pool, 0o644)
        with started_writer(pool) as writer:
            wait_ready(writer)
            assert log_holds(pool) == (True, True)
            got = read_as_nobody(pool, durability="none")
            assert got[:2] == ["error", errno.EROFS], got
            assert read_as_nobody(pool) == ["ok", expected()]
    finally:
        shutil.rmtree(d, ignore_errors=True)


# Dies inside the commit of a rename, its record persisted and half of its
# homes stored, before it publishes the live word.
DIES_IN_COMMIT = textwrap.dedent(r"""
    import os, signal, sys
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    j = fs.journal
    store, commit, state = j.region.store, j.commit, {"on": False, "n": 0, "homes": -1}

    def stores(off, data):
        if state["on"] and not j.start <= off < j.end:
            if state["n"] == state["homes"]:
                os.kill(os.getpid(), signal.SIGKILL)
            state["n"] += 1
        return store(off, data)

    def commits(txn, prepared=None):
        state["on"], state["homes"] = True, len(txn.writes) // 2
        commit(txn, prepared)

    j.region.store, j.commit = stores, commits
    fs.rename("/d/old", "/e/new")
""")


def test_a_commit_its_writer_died_inside_is_recovered_before_a_reader_reads(pool_path):
    """A writer is live (this process) when another dies inside a rename's
    commit, half of its homes stored.  A read-only mount must not read
    them half-way: uid 65534, who cannot recover, gets EROFS; root's
    read-only mount recovers and sees the rename whole."""
    os.chmod(os.path.dirname(pool_path), 0o755)
    os.chmod(pool_path, 0o644)
    with daxfs.mount(pool_path) as live:
        for d in ("/d", "/e"):
            live.mkdir(d)
        live.write_bytes("/d/old", b"old")
        with script_child(DIES_IN_COMMIT, pool_path) as dying:
            dying.wait()
        assert dying.returncode == -signal.SIGKILL
        got = read_as_nobody(pool_path)
        assert got[:2] == ["error", errno.EROFS], got
        with daxfs.mount(pool_path, readonly=True) as fs:
            assert (fs.listdir("/d"), fs.listdir("/e")) == ([], ["new"])
            assert fs.read_bytes("/e/new") == b"old"
        assert live.listdir("/e") == ["new"]
    assert daxfs.check(pool_path).ok


# A writer that forks: the child goes on with the mount (taking a
# description of its own), and the parent exits.
FORKS = textwrap.dedent(r"""
    import os, sys, time
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    fs.mkdir("/d")
    fs.mkdir("/e")
    r, w = os.pipe()
    if os.fork() == 0:
        fs.write_bytes("/d/child", b"child")
        os.write(w, b"x")
        print("ready", os.getpid(), flush=True)
        time.sleep(60)
        os._exit(0)
    os.read(r, 1)
    os._exit(0)
""")


def test_a_forked_writer_that_outlives_its_parent_still_vouches(public_pool):
    """The writer mark belongs to an open description, which a forked child
    that goes on with the mount keeps (its map of the pool holds the
    parent's, and it takes one of its own).  With the parent gone, uid
    65534 mounts read-only while the child's records are in the log."""
    with script_child(FORKS, public_pool) as parent:
        word, pid = parent.stdout.readline().split()
        assert word == "ready"
        parent.wait()
        try:
            assert log_holds(public_pool)[0]
            assert read_as_nobody(public_pool) == ["ok", {"/d/child": "child"}]
        finally:
            os.kill(int(pid), signal.SIGKILL)


def test_a_mounted_reader_waits_for_a_writer_to_finish_a_dead_commit(pool_path):
    """A read-only mount already live when a writer dies inside a rename's
    commit, half of its homes stored.  It cannot finish that commit, so it
    answers what it has cached (as of the last commit published) and says
    EAGAIN for what it would have to load; it never reads the half-stored
    homes (a block checksum mismatch, before: damage that is not there).
    After a writer's next change finishes the commit, it sees the rename."""
    with daxfs.mount(pool_path) as live:
        for d in ("/d", "/e"):
            live.mkdir(d)
        live.write_bytes("/d/old", b"old")
        with daxfs.mount(pool_path, readonly=True) as ro:
            assert ro.listdir("/") == ["d", "e"]  # (/d and /e not loaded yet)
            with script_child(DIES_IN_COMMIT, pool_path) as dying:
                dying.wait()
            assert dying.returncode == -signal.SIGKILL
            for call in (lambda: ro.listdir("/d"), lambda: ro.stat("/e/new")):
                with pytest.raises(BlockingIOError) as e:
                    call()
                assert "died inside a commit" in str(e.value)
            assert ro.listdir("/") == ["d", "e"]
            live.mkdir("/x")  # (its catching up finishes the dead commit)
            assert (ro.listdir("/d"), ro.listdir("/e")) == ([], ["new"])
            assert ro.read_bytes("/e/new") == b"old"
    assert daxfs.check(pool_path).ok
