"""A read-only mount of a pool a writer is using (pool.py, "A read-only
mount of a live pool").

A read-only mount needs no recovery while a writable mount is live: that
mount recovered the journal when it began, and the machine has not
restarted since.  So a user who may only read the pool file mounts it
while its owner writes, and the mount writes nothing to it.  What a live
writer cannot vouch for (a commit its writer died inside, lazy records
read without a private view) and a pool left by a crash still recover
first: in place for a user who may write the pool, else in a private
copy ("Recovered in private"), the file left as it was.

Real processes throughout: the writer is a child process (or this one),
the reader a forked child that switched to uid 65534, and kills are
SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap

import pytest

import daxfs
from conftest import in_forked_child, new_pool, script_child, small_tmpfs
from daxfs.cli.info import rows as info_rows
from daxfs.journal import Journal
from daxfs.layout import JHEADER, JLIVE, JLIVE_OFF, JOURNAL_HEADER_OFF, JSLOT_OFFSETS
from daxfs.pool import read_superblock
from daxfs.region import Region
from test_share_model import KILLED_IN_COMMIT  # (dies inside a rename's commit)

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


def become_nobody() -> None:
    """Switch this (forked) process to uid 65534, for good."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def as_nobody(work):
    """``work()`` after switching this (forked) process to uid 65534."""
    become_nobody()
    return work()


def read_as_nobody(pool: str, **opts) -> list:
    """["ok", {path: bytes as latin-1}, recovered in private?] of every file
    under /d and /e, read through a read-only mount by uid 65534 made for
    this read alone (a NobodyReader's), or ["error", errno, message]."""
    reader = NobodyReader(pool, **opts)
    try:
        got = reader.tree()
        return [*got, reader.ask("private")[1]] if got[0] == "ok" else got
    finally:
        reader.close()


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
        assert read_as_nobody(public_pool) == ["ok", expected(), False]  # (no recovery at all)
        assert journal_words(public_pool) == words
        writer.stdin.write("write /d/later\nstats\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "ok"
        assert json.loads(writer.stdout.readline()).get("full_rebuilds", 0) == 0
        assert read_as_nobody(public_pool) == ["ok", expected(**{"/d/later": b"later"}), False]


def pool_digest(pool: str) -> str:
    with open(pool, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class NobodyReader:
    """A forked child, uid 65534, that keeps one read-only mount of ``pool``
    and answers tree() (every file under /d and /e) from it, for as long as
    the test runs: what a reader who may not write sees as the pool moves."""

    def __init__(self, pool: str, **opts):
        down_r, self._down = os.pipe()
        self._up, up_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            try:
                os.close(self._down)
                os.close(self._up)
                _serve_as_nobody(pool, opts, down_r, up_w)
            finally:
                os._exit(0)
        os.close(down_r)
        os.close(up_w)
        self._replies = os.fdopen(self._up)

    def ask(self, what: str) -> list:
        os.write(self._down, what.encode() + b"\n")
        line = self._replies.readline()
        assert line, "the reader died"
        return json.loads(line)

    def tree(self) -> list:
        return self.ask("tree")

    def close(self) -> None:
        os.close(self._down)
        self._replies.close()
        os.waitpid(self.pid, 0)


def _serve_as_nobody(pool: str, opts: dict, down: int, up: int) -> None:
    become_nobody()
    with os.fdopen(down) as commands, os.fdopen(up, "w") as replies:
        fs, failed = None, ["error", 0, "uid 65534 may write the pool: the test proves nothing"]
        if not os.access(pool, os.W_OK):
            try:
                fs = daxfs.mount(pool, readonly=True, **opts)
            except OSError as e:
                failed = ["error", e.errno, str(e)]
        for line in commands:
            if fs is None:
                reply = failed
            elif line.strip() == "tree":
                try:
                    reply = ["ok", tree_of(fs)]
                except OSError as e:
                    reply = ["error", e.errno, str(e)]
            else:
                reply = ["ok", fs.info()["private_recovery"]]
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
        if fs is not None:
            fs.close()


def test_a_pool_left_by_a_killed_writer_is_recovered_in_private_for_a_reader(public_pool):
    """No writer is live and its records are in the log: a read-only mount
    must recover first, and uid 65534 may not write the pool.  Its mount
    recovers in a private copy: it shows what a writable mount's recovery
    then shows, and the pool file is left byte for byte as it was.  When a
    writer mounts (recovering the file) and changes the pool, the same
    mount lets its private copy go and follows the file."""
    with started_writer(public_pool) as writer:
        wait_ready(writer)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert log_holds(public_pool)[0]
    before = pool_digest(public_pool)
    reader = NobodyReader(public_pool)
    try:
        assert reader.tree() == ["ok", expected()]
        assert reader.ask("private") == ["ok", True]
        assert pool_digest(public_pool) == before
        with daxfs.mount(public_pool) as fs:  # recovers the file in place
            assert tree_of(fs) == expected()
            assert reader.tree() == ["ok", expected()]
            fs.write_bytes("/d/new", b"new")
            fs.unlink("/d/a")
            want = expected(**{"/d/new": b"new"})
            del want["/d/a"]
            assert reader.tree() == ["ok", want]
            # On tmpfs the file is whole now.  On the disk the writer's
            # records are lazy (their homes in its own view): the reader,
            # with no view that takes them, recovers them in private again.
            on_disk = not public_pool.startswith("/dev/shm")
            assert reader.ask("private") == ["ok", on_disk]
            fs.rename("/d/new", "/e/new")
            want["/e/new"] = want.pop("/d/new")
            assert reader.tree() == ["ok", want]
    finally:
        reader.close()


def test_lazy_records_read_with_no_private_view_are_recovered_first(tmp_path):
    """A lazy writer's homes are in its private view until written out.  A
    read-only mount that applies records to a private view of its own sees
    them (the first test); one that does not (durability "none") must not
    read the stale homes: it recovers first (uid 65534 in private), and
    again as the writer commits more."""
    d = tempfile.mkdtemp(prefix="daxfs-ro-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        pool = new_pool(d)
        os.chmod(pool, 0o644)
        with started_writer(pool) as writer:
            wait_ready(writer)
            assert log_holds(pool) == (True, True)
            reader = NobodyReader(pool, durability="none")
            try:
                assert reader.tree() == ["ok", expected()]
                writer.stdin.write("write /d/later\n")
                writer.stdin.flush()
                assert writer.stdout.readline().strip() == "ok"
                assert reader.tree() == ["ok", expected(**{"/d/later": b"later"})]
                assert reader.ask("private") == ["ok", True]
            finally:
                reader.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_commit_its_writer_died_inside_is_recovered_before_a_reader_reads(pool_path):
    """A writer is live (this process) when another dies inside a rename's
    commit, half of its homes stored.  A read-only mount must not read
    them half-way: uid 65534's recovers in private, root's recovers the
    file first; both see the rename whole."""
    os.chmod(os.path.dirname(pool_path), 0o755)
    os.chmod(pool_path, 0o644)
    with daxfs.mount(pool_path) as live:
        for d in ("/d", "/e"):
            live.mkdir(d)
        live.write_bytes("/d/old", b"old")
        with script_child(KILLED_IN_COMMIT, pool_path, "half") as dying:
            dying.wait()
        assert dying.returncode == -signal.SIGKILL

        def both_sides() -> list:
            with daxfs.mount(pool_path, readonly=True) as fs:
                return [fs.listdir("/d"), fs.listdir("/e"), fs.read_bytes("/e/new").decode()]

        assert in_forked_child(lambda: as_nobody(both_sides)) == [[], ["new"], "old"]
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
            assert read_as_nobody(public_pool) == ["ok", {"/d/child": "child"}, False]
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
            with script_child(KILLED_IN_COMMIT, pool_path, "half") as dying:
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


def test_a_crashed_pool_on_a_read_only_file_system_mounts_read_only(tmp_path):
    """A pool its last writer left unrecovered, on a file system mounted
    read-only (a medium handed over: EROFS even for root).  The read-only
    mount recovers in private and shows what the writer had done."""
    with small_tmpfs(tmp_path / "ro", "128M") as where:
        pool = new_pool(str(where), size=64 << 20)
        with started_writer(pool) as writer:
            wait_ready(writer)
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        assert log_holds(pool)[0]
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        with daxfs.mount(pool, readonly=True) as fs:
            assert tree_of(fs) == expected()
            assert fs.info()["private_recovery"] is True
            assert fs.read_bytes("/d/big") == FILES["/d/big"]
            shown = dict(info_rows(fs.info(), fs.statvfs()))  # (daxfs info's table)
            assert "made in private" in shown["recovery"]
            # A forked child (a data loader's worker) goes on with the mount.
            in_child = in_forked_child(lambda: [tree_of(fs), fs.info()["private_recovery"]])
            assert in_child == [expected(), True]
            assert tree_of(fs) == expected()
