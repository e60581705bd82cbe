"""Changes said in the journal (logical.py): a process alone on a pool logs
what an unlink, a small create or a new file's first write did and writes
its homes later, in an absorb.  What is held here: the record writes
nothing and the homes lag until an absorb; a killed writer's changes are
made again by the next mount, by the checker and by a process that mounts
beside a live writer; a reader applies them; a follower waits for the
absorb; a crafted record is damage, never a misread; and the journal never
fills with unabsorbed changes.
Processes are real (subprocess) and killed with SIGKILL.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zlib

import pytest

import daxfs
from daxfs import logical
from daxfs.layout import (
    BLOCKS_PER_CHUNK,
    INODE_SIZE,
    CorruptionError,
    pack_inode,
    pack_txn,
    unpack_inode,
)
from daxfs.logical import ABSORB_SECONDS
from daxfs.path import Ino
from daxfs.region import Region

MiB = 1 << 20

# A writer in its own process: "make D N" (N 4 KiB files), "unlink D A B"
# (files A..B-1), "list D"; killed by the parent (SIGKILL: no close).
WRITER = textwrap.dedent(r"""
    import os, sys
    import daxfs
    fs = daxfs.mount(sys.argv[1])
    print("mounted", flush=True)
    for line in sys.stdin:
        cmd, *a = line.split()
        if cmd == "make":
            fs.makedirs(a[0], exist_ok=True)
            for i in range(int(a[1])):
                fs.write_bytes(f"{a[0]}/f{i}", bytes([i % 251]) * 4096)
            print("made", flush=True)
        elif cmd == "unlink":  # prints how many were said (left a said record last)
            said = 0
            for i in range(int(a[1]), int(a[2])):
                fs.unlink(f"{a[0]}/f{i}")
                said += fs.journal.unabsorbed > 0
            print(said, flush=True)
        elif cmd == "fill":  # N new files, each opened, written and closed
            fs.makedirs(a[0], exist_ok=True)
            for i in range(int(a[1])):
                with fs.open(f"{a[0]}/o{i}", "wb") as f:
                    f.write(bytes([i % 251]) * (100 + i))
            print("filled", flush=True)
        elif cmd == "rewrite":  # o0..oN-1 emptied and written again, f0..fN-1 rewritten whole
            for i in range(int(a[1])):
                with fs.open(f"{a[0]}/o{i}", "wb") as f:
                    f.write(bytes([(i + 7) % 251]) * (300 + i))
                fs.write_bytes(f"{a[0]}/f{i}", bytes([(i + 9) % 251]) * (5000 + i))
            print("rewritten", flush=True)
        elif cmd == "empty":  # o0..oN-1 emptied, left open
            held = [fs.open(f"{a[0]}/o{i}", "wb") for i in range(int(a[1]))]
            print("emptied", flush=True)
        elif cmd == "hold":  # N new files left open, the first written
            held = [fs.open(f"{a[0]}/h{i}", "wb", buffering=0) for i in range(int(a[1]))]
            held[0].write(b"h" * 300)
            print("held", flush=True)
        elif cmd == "list":
            print(len(fs.listdir(a[0])), flush=True)
        elif cmd == "quit":
            break
    fs.close()
    print("bye", flush=True)
""")


class Writer:
    def __init__(self, pool: str):
        self.p = subprocess.Popen(
            [sys.executable, "-c", WRITER, pool],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask(None) == "mounted"

    def ask(self, line: str | None) -> str:
        if line is not None:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        out = self.p.stdout.readline()
        assert out, f"writer died (exit code {self.p.poll()})"
        return out.rstrip("\n")

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        assert self.p.wait(timeout=60) == -signal.SIGKILL

    def quit(self) -> None:
        assert self.ask("quit") == "bye"
        assert self.p.wait(timeout=60) == 0


@pytest.fixture
def writers():
    made: list[Writer] = []
    yield made
    for w in made:
        if w.p.poll() is None:
            w.kill()


def last_record(fs):
    return fs.journal.log_records()[-1][1]


def slot_bytes(fs, ino: int) -> bytes:
    off = fs.inodes.slot_off(ino)
    return bytes(fs.region.buf[off : off + INODE_SIZE])


def free_blocks_after_remount(path: str) -> int:
    fs = daxfs.mount(path)
    try:
        return fs.allocator.free_blocks
    finally:
        fs.close()


def a_directory_with_a_block(fs) -> None:
    """/d, with its first block made (the usual way: a said create needs a
    block with room) by a file, /d/first."""
    fs.mkdir("/d")
    fs.write_bytes("/d/first", b"1")
    assert not last_record(fs).creates


@pytest.mark.parametrize("other", ["read-only", "writable"])
def test_the_first_change_after_another_mount_left_is_said(pool_path, other):
    """Another mount of the pool comes and goes (a read-only one, or one
    that writes and unmounts, absorbing and moving the log); the next
    change of a mount alone again is said: its section catches up under
    the exclusive lock it took, instead of leaving the change to the
    usual way."""
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        fs.write_bytes("/d/mine", b"m" * 100)
        assert last_record(fs).creates
        with daxfs.mount(pool_path, readonly=other == "read-only") as it:
            if other == "writable":
                it.write_bytes("/d/theirs", b"t" * 100)
                it.unlink("/d/mine")
            else:
                assert it.read_bytes("/d/mine") == b"m" * 100
        fs.write_bytes("/d/next", b"n" * 100)
        assert last_record(fs).creates
        assert sorted(fs.listdir("/d")) == sorted(
            ["first", "next"] + (["theirs"] if other == "writable" else ["mine"])
        )
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


def test_an_unlink_alone_writes_no_home_until_the_next_change_absorbs_it(pool_path):
    fs = daxfs.mount(pool_path)
    try:
        fs.mkdir("/d")
        fs.write_bytes("/d/a", b"a" * 4096)
        fs.write_bytes("/d/b", b"b" * 4096)
        fs.chmod("/d", 0o755)  # (absorbs the two creates: said too)
        ino = fs.stat("/d/a").st_ino
        before = slot_bytes(fs, ino)
        fs.unlink("/d/a")
        rec = last_record(fs)
        d = fs.stat("/d")
        assert rec.unlinks == [(d.st_ino, ino, b"a", d.st_mtime_ns)]
        assert rec.writes == [] and len(rec.revokes) == 1
        assert slot_bytes(fs, ino) == before  # the home lags
        assert fs.journal.unabsorbed == 1 and fs._lag_bytes > 0
        assert fs.listdir("/d") == ["b"]
        fs.chmod("/d/b", 0o600)  # a change that writes: the absorb comes first
        records = [r for _s, r in fs.journal.log_records()]
        absorb, chmod = records[-2], records[-1]
        assert absorb.writes and not absorb.unlinks and not chmod.unlinks
        assert slot_bytes(fs, ino) == bytes(INODE_SIZE)
        assert fs.journal.unabsorbed == 0 and fs._lag_bytes == 0
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


def test_a_new_small_file_is_said_and_its_slot_written_by_the_absorb(pool_path):
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        data = os.urandom(9000)
        ino = fs.write_bytes("/d/new", data) and fs.stat("/d/new").st_ino
        rec = last_record(fs)
        ((parent, made, name, when, slot, block),) = rec.creates
        assert (parent, made, name, block) == (fs.stat("/d").st_ino, ino, b"new", 0)
        assert rec.writes == [] and sum(n for _dev, n in rec.claims) == 3 * 4096
        assert slot_bytes(fs, ino) == bytes(INODE_SIZE)  # the home lags
        assert fs.read_bytes("/d/new") == data and fs.stat("/d").st_mtime_ns == when
        fs.chmod("/d", 0o700)  # a change that writes: the absorb first
        assert slot_bytes(fs, ino) == slot and fs.journal.unabsorbed == 0
        with fs.open("/d/new", "rb") as f:
            assert f.read() == data
    finally:
        fs.close()
    with daxfs.mount(pool_path) as fs:
        assert fs.read_bytes("/d/new") == data
    assert daxfs.check(pool_path).ok


def test_a_new_file_opened_then_written_is_a_said_create_then_a_said_fill(pool_path):
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        f = fs.open("/d/new", "wb")
        ino = fs.stat("/d/new").st_ino
        ((_parent, made, name, _when, empty, _block),) = last_record(fs).creates
        assert (made, name) == (ino, b"new")
        data = os.urandom(6000)
        f.write(data)
        f.close()
        rec = last_record(fs)
        assert rec.fills == [(ino, rec.fills[0][1])] and rec.fills[0][1] != empty
        assert rec.writes == [] and sum(n for _dev, n in rec.claims) == 2 * 4096
        assert slot_bytes(fs, ino) == bytes(INODE_SIZE)  # the home lags
        st = fs.stat("/d/new")
        assert st.st_size == 6000 and fs.read_bytes("/d/new") == data
        fs.chmod("/d", 0o700)  # a change that writes: the absorb first
        assert slot_bytes(fs, ino) == rec.fills[0][1] and fs.journal.unabsorbed == 0
    finally:
        fs.close()
    with daxfs.mount(pool_path) as fs:
        assert fs.read_bytes("/d/new") == data and fs.stat("/d/new").st_mtime_ns == st.st_mtime_ns
    assert daxfs.check(pool_path).ok


def test_an_existing_file_opened_for_writing_is_a_said_rewrite_then_a_said_fill(pool_path):
    """open(p, "wb") of a small file empties it with one record (its blocks
    revoked, its slot said, the home lagging); the write its close flushes
    is a said fill, as for a new file."""
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        fs.write_bytes("/d/f", os.urandom(9000))
        ino = fs.stat("/d/f").st_ino
        fs.chmod("/d", 0o755)  # (absorbed: the slot's home holds the file)
        home = slot_bytes(fs, ino)
        old = [(dev, n) for _f, dev, n in fs._inode(ino).extents]
        f = fs.open("/d/f", "wb")
        rec = last_record(fs)
        assert [i for i, _slot in rec.rewrites] == [ino] and rec.writes == []
        assert rec.revokes == old and rec.claims == []
        assert fs.stat("/d/f").st_size == 0 and fs.read_bytes("/d/f") == b""
        assert slot_bytes(fs, ino) == home  # the home lags
        data = os.urandom(6000)
        f.write(data)
        f.close()
        rec = last_record(fs)
        assert [i for i, _slot in rec.fills] == [ino] and rec.writes == []
        assert fs.read_bytes("/d/f") == data and slot_bytes(fs, ino) == home
        st = fs.stat("/d/f")
        fs.chmod("/d", 0o700)  # a change that writes: the absorb first
        assert slot_bytes(fs, ino) == rec.fills[0][1] and fs.journal.unabsorbed == 0
    finally:
        fs.close()
    with daxfs.mount(pool_path) as fs:
        assert fs.read_bytes("/d/f") == data and fs.stat("/d/f").st_mtime_ns == st.st_mtime_ns
    assert daxfs.check(pool_path).ok


def test_write_bytes_over_a_small_file_is_one_said_rewrite(pool_path, shm_dir):
    """write_bytes over an existing small file: its new bytes stored in new
    blocks, then one record that revokes the old and claims the new; a
    crash copy taken after it makes it again, and one taken before the
    record finds the old file whole (write_bytes is one change)."""
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        before = os.urandom(9000)
        fs.write_bytes("/d/f", before)
        copy_before = os.path.join(shm_dir, "before")
        shutil.copyfile(pool_path, copy_before)
        old = [(dev, n) for _f, dev, n in fs._inode(fs.stat("/d/f").st_ino).extents]
        after = os.urandom(5000)
        fs.write_bytes("/d/f", after)
        rec = last_record(fs)
        assert len(rec.rewrites) == 1 and rec.writes == [] and rec.revokes == old
        new = rec.claims
        assert sum(n for _dev, n in new) == 2 * 4096
        assert not any(d < e + m and e < d + n for d, n in new for e, m in old)  # disjoint
        assert fs.read_bytes("/d/f") == after
        copy_after = os.path.join(shm_dir, "after")
        shutil.copyfile(pool_path, copy_after)
    finally:
        fs.close()
    for copy, want in ((copy_before, before), (copy_after, after)):
        with daxfs.mount(copy) as again:
            assert again.read_bytes("/d/f") == want
        assert daxfs.check(copy).ok


def test_a_rewrites_old_block_is_the_next_said_change_of_one_block(pool_path, long_holds):
    """With the lock kept, a said rewrite's freed block (free on the media
    once the record is committed) goes to the blocks taken ahead, not back
    to the allocator: an overwrite's fill, or the next rewrite, takes it,
    and nothing is lost when the lock goes (the space counts as before)."""
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        fs.write_bytes("/d/f", b"a" * 4096)
        assert fs._held
        free_with_f = fs.statvfs().f_bfree + len(fs._stash)  # (those taken ahead: free)
        rounds = []
        for i in range(5):
            ((_f, old, _n),) = fs._inode(fs.stat("/d/f").st_ino).extents
            with fs.open("/d/f", "wb") as f:  # (a said rewrite to nothing, then a fill)
                f.write(bytes([i]) * 4096)
            rec = last_record(fs)
            assert len(rec.fills) == 1 and rec.claims == [(old, 4096)]  # (the old block again)
            rounds.append(fs.read_bytes("/d/f") == bytes([i]) * 4096)
        assert rounds == [True] * 5
        assert fs.statvfs().f_bfree + len(fs._stash) == free_with_f
    finally:
        fs.close()
    with daxfs.mount(pool_path) as again:
        assert again.read_bytes("/d/f") == bytes([4]) * 4096
        assert again.statvfs().f_bfree == free_with_f
    assert daxfs.check(pool_path).ok


def test_a_truncate_to_nothing_is_a_said_rewrite_by_path_or_by_inode(pool_path):
    """fs.truncate(p, 0); the FUSE server's setattr (fs.truncate of an Ino)
    and its O_TRUNC (by inode, with the file open: its handle reads it
    empty); a truncate to another length goes the usual way."""
    fs = daxfs.mount(pool_path)
    try:
        a_directory_with_a_block(fs)
        fs.write_bytes("/d/f", b"f" * 9000)
        fs.write_bytes("/d/g", b"g" * 9000)
        fs.truncate("/d/f", 0)
        ino = fs.stat("/d/f").st_ino
        assert [i for i, _slot in last_record(fs).rewrites] == [ino]
        assert fs.read_bytes("/d/f") == b""
        fs.write_bytes("/d/f", b"F" * 9000)
        fs.truncate(Ino(ino), 0)
        assert [i for i, _slot in last_record(fs).rewrites] == [ino]
        assert fs.read_bytes("/d/f") == b""
        fs.write_bytes("/d/f", b"F" * 9000)
        fs.truncate("/d/f", 10)
        assert not last_record(fs).rewrites and fs.read_bytes("/d/f") == b"F" * 10
        with pytest.raises(IsADirectoryError):  # (not a file: the usual way says so)
            fs.truncate(Ino(fs.stat("/d").st_ino), 0)
        with fs.open("/d/g", "r+b", buffering=0) as h:
            fs._truncate_ino(h._ino, 0)
            assert [i for i, _slot in last_record(fs).rewrites] == [h._ino]
            assert h.read() == b"" and fs.stat("/d/g").st_size == 0
            h.write(b"G" * 100)
        assert fs.read_bytes("/d/g") == b"G" * 100
    finally:
        fs.close()
    with daxfs.mount(pool_path) as fs:
        assert fs.read_bytes("/d/f") == b"F" * 10 and fs.read_bytes("/d/g") == b"G" * 100
    assert daxfs.check(pool_path).ok


def test_a_file_said_unlinked_is_gone_by_its_number_too(pool_path):
    """The FUSE server calls by inode number (a lookup the kernel keeps,
    then an open or a getattr).  A file said unlinked keeps its number until
    a batch gives numbers back, its slot all zero meanwhile: a call by that
    number is ENOENT, as after the batch, never a damaged slot (a FUSE
    client's open that raced another's unlink got EUCLEAN)."""
    with daxfs.mount(pool_path) as fs:
        fs.write_bytes("/x", b"x" * 4096)
        ino = fs.stat("/x").st_ino
        fs.unlink("/x")
        assert fs._said_freed and not fs.inodes.in_use(ino)  # (the batch is not due yet)
        for call in (fs.stat, fs.lstat, lambda p: fs.open(p, "rb"), fs.listdir):
            with pytest.raises(FileNotFoundError):
                call(Ino(ino))
        fs._release_said()
        with pytest.raises(FileNotFoundError):
            fs.stat(Ino(ino))
        fs.write_bytes("/y", b"y")  # (the number is taken again)
        assert fs.stat(Ino(fs.stat("/y").st_ino)).st_size == 1


def test_a_crash_copy_makes_the_unlink_again_with_its_time(pool_path, shm_dir):
    """A copy of a tmpfs pool's file is what SIGKILL would leave: the said
    unlink is made again, the directory's times the record's."""
    fs = daxfs.mount(pool_path)
    try:
        fs.mkdir("/d")
        fs.write_bytes("/d/a", b"a" * 100)
        fs.write_bytes("/d/b", b"b" * 100)
        fs.unlink("/d/a")
        when = last_record(fs).unlinks[0][3]
        copy = os.path.join(shm_dir, "crash-copy")
        shutil.copyfile(pool_path, copy)
    finally:
        fs.close()
    with daxfs.mount(copy) as again:
        assert again.listdir("/d") == ["b"]
        st = again.stat("/d")
        assert st.st_mtime_ns == st.st_ctime_ns == when
    assert daxfs.check(copy).ok


def test_what_is_not_said_goes_the_usual_way(pool_path):
    fs = daxfs.mount(pool_path)
    try:
        fs.write_bytes("/hard", b"h")
        fs.link("/hard", "/hard2")  # two names
        fs.symlink("/hard", "/sym")  # not a regular file
        fs.write_bytes("/open", b"o")
        fs.write_bytes("/big", b"x" * (3 * MiB))  # past a chunk
        assert not last_record(fs).creates
        fs.write_bytes("/open", b"O")  # a name there: emptied and written (a rewrite)
        assert not last_record(fs).creates
        for path in ("/hard", "/big"):  # not rewritten so: two names, past a chunk
            fs.write_bytes(path, b"w")
            assert not last_record(fs).rewrites, path
        fs.write_bytes("/mapped", b"m" * 5000)
        with fs.map("/mapped", "r"):  # mapped: never freed under the map
            with pytest.raises(OSError) as e:
                fs.write_bytes("/mapped", b"M")
            assert e.value.errno == errno.EBUSY and not last_record(fs).rewrites
        assert fs.read_bytes("/mapped") == b"m" * 5000
        fs.unlink("/mapped")
        fs.write_bytes("/e", b"")  # an empty file given its first data...
        fs.link("/e", "/e2")
        with fs.open("/e", "r+b") as f:  # ...with two names,
            f.write(b"e" * 10)
        assert not last_record(fs).fills
        fs.truncate("/e", 0)
        fs.unlink("/e2")
        with fs.open("/e", "r+b") as f:  # or too much of it,
            f.write(b"e" * (2 * MiB))
        assert not last_record(fs).fills
        fs.truncate("/e", 0)
        with fs.open("/e", "r+b", buffering=0) as f:  # or past its start,
            f.seek(5)
            f.write(b"e")
            assert not last_record(fs).fills
            f.write(b"e")  # or past its end
            assert not last_record(fs).fills
        fs.unlink("/e")
        held = fs.open("/open", "rb")
        for path in ("/hard", "/sym", "/open", "/big"):
            fs.unlink(path)
            assert not last_record(fs).unlinks, path
        assert held.read() == b"O"
        held.close()
        assert fs.listdir("/") == ["hard2"] and fs.read_bytes("/hard2") == b"w"
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


def test_a_killed_writers_unlinks_are_made_again_by_the_next_mount(pool_path, writers):
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")  # (a directory keeps its blocks: made before counting)
    free_at_start = free_blocks_after_remount(pool_path)
    w = Writer(pool_path)
    writers.append(w)
    assert w.ask("make /d 300") == "made"
    assert int(w.ask("unlink /d 0 200")) == 200  # all said
    w.kill()
    report = daxfs.check(pool_path)  # (a copy of its view: the pool is left as it is)
    assert report.ok, report.errors
    assert any("of said changes made again" in n for n in report.notes)
    fs = daxfs.mount(pool_path)
    try:
        assert sorted(fs.listdir("/d")) == sorted(f"f{i}" for i in range(200, 300))
        assert fs.read_bytes("/d/f250") == bytes([250]) * 4096
        assert fs.journal.unabsorbed == 0
        for i in range(200, 300):
            fs.unlink(f"/d/f{i}")
        fs.rmdir("/d")
    finally:
        fs.close()
    assert free_blocks_after_remount(pool_path) == free_at_start
    assert daxfs.check(pool_path).ok


def test_a_killed_writers_new_files_and_their_first_writes_are_made_again(pool_path, writers):
    """Files opened, written and closed (a said create, then a said fill
    each), and files left open by the killed writer, one of them written:
    the next mount and the checker make them all again."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
    w = Writer(pool_path)
    writers.append(w)
    assert w.ask("fill /d 200") == "filled"
    assert w.ask("hold /d 3") == "held"
    w.kill()
    report = daxfs.check(pool_path)
    assert report.ok, report.errors
    assert any("of said changes made again" in n for n in report.notes)
    with daxfs.mount(pool_path) as fs:
        names = sorted(fs.listdir("/d"))
        assert names == sorted([f"o{i}" for i in range(200)] + ["h0", "h1", "h2"])
        for i in (0, 99, 199):
            assert fs.read_bytes(f"/d/o{i}") == bytes([i % 251]) * (100 + i)
        assert fs.read_bytes("/d/h0") == b"h" * 300
        assert fs.stat("/d/h1").st_size == fs.stat("/d/h2").st_size == 0
        assert fs.journal.unabsorbed == 0
    assert daxfs.check(pool_path).ok


def test_a_killed_writers_rewrites_are_made_again(pool_path, writers):
    """Files emptied and written again (a said rewrite, then a said fill),
    rewritten whole (one said rewrite), and emptied and left open by the
    killed writer: the checker and the next mount make them all again."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
    w = Writer(pool_path)
    writers.append(w)
    assert w.ask("make /d 40") == "made"
    assert w.ask("fill /d 40") == "filled"
    assert w.ask("rewrite /d 30") == "rewritten"
    assert w.ask("empty /d 35") == "emptied"  # o30..o34 emptied (and o0..o29 again)
    w.kill()
    report = daxfs.check(pool_path)
    assert report.ok, report.errors
    assert any("of said changes made again" in n for n in report.notes)
    with daxfs.mount(pool_path) as fs:
        for i in range(40):
            want_f = bytes([(i + 9) % 251]) * (5000 + i) if i < 30 else bytes([i % 251]) * 4096
            assert fs.read_bytes(f"/d/f{i}") == want_f
            want_o = b"" if i < 35 else bytes([i % 251]) * (100 + i)
            assert fs.read_bytes(f"/d/o{i}") == want_o
        assert fs.journal.unabsorbed == 0
    report = daxfs.check(pool_path)  # (no block two files claim)
    assert report.ok, report.errors


def test_a_process_that_mounts_beside_a_live_writer_makes_its_unlinks_again(pool_path, writers):
    w = Writer(pool_path)
    writers.append(w)
    assert w.ask("make /d 100") == "made"
    assert int(w.ask("unlink /d 0 60")) == 60
    fs = daxfs.mount(pool_path)  # absorbs them, then joins: the writer is not alone
    try:
        assert len(fs.listdir("/d")) == 40
        assert int(w.ask("unlink /d 60 80")) == 20  # said beside it too
        assert w.ask("list /d") == "20"
        assert len(fs.listdir("/d")) == 20  # (made again from the records)
        fs.write_bytes("/d/new", b"n")
        assert last_record(fs).creates  # (said here too)
        assert w.ask("list /d") == "21"
    finally:
        fs.close()
    assert int(w.ask("unlink /d 80 100")) >= 10  # alone again (once caught up)
    w.quit()
    fs = daxfs.mount(pool_path)
    try:
        assert fs.listdir("/d") == ["new"]
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


def test_said_records_are_made_again_with_no_lock_only_over_what_is_cached(pool_path):
    """catch_up_unlocked makes said records again only where what each names
    is cached when it comes (a load of a home could meet an absorb being
    stored): an unlink of a number not cached is no such record, even if a
    create after it makes that number again; a fill after an unlink needs a
    create between."""
    from daxfs.coherence import _said_unlocked_ok
    from daxfs.layout import TxnRecord

    with daxfs.mount(pool_path) as fs:
        a_directory_with_a_block(fs)
        d, f = fs.stat("/d").st_ino, fs.stat("/d/first").st_ino
        unlink = TxnRecord([], [], 0, unlinks=[(d, f, b"first", 0)])
        create = TxnRecord([], [], 0, creates=[(d, f, b"again", 0, bytes(INODE_SIZE), -1)])
        fill = TxnRecord([], [], 0, fills=[(f, bytes(INODE_SIZE))])
        fs._inode(f)
        assert _said_unlocked_ok(fs, [unlink, create, fill])
        assert not _said_unlocked_ok(fs, [unlink, fill])
        fs.inodes.cache.pop(f)
        assert not _said_unlocked_ok(fs, [unlink, create])
        assert _said_unlocked_ok(fs, [create, fill])


def test_two_writers_say_their_changes_side_by_side(pool_path):
    """Beside another writer, new files (opened, written, closed), files
    rewritten whole and unlinks are still said: each mount makes the
    other's again as it catches up, in order and with no rebuild; a change
    that writes absorbs every one of them, whoever said it, and the other
    loads the directories that lagged again; a fresh mount sees it all."""
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        for fs, d in ((a, "/a"), (b, "/b")):
            fs.mkdir(d)
            fs.write_bytes(f"{d}/first", b"1")  # (the directory's first block)
        start = a.journal.next_seq
        want = {"/a": {"first": b"1"}, "/b": {"first": b"1"}}
        taken_ahead = 0
        for i in range(40):
            for fs, d in ((a, "/a"), (b, "/b")):
                data = os.urandom(100 + 97 * i)
                with fs.open(f"{d}/f{i}", "wb") as f:
                    f.write(data)
                want[d][f"f{i}"] = data
                # Blocks taken ahead beside the other come from this mount's
                # own windows, which the other never allocates in.
                assert {blk // BLOCKS_PER_CHUNK for blk in fs._stash} <= set(fs.leases.windows)
                taken_ahead += len(fs._stash)
                if i % 4 == 3:
                    fs.unlink(f"{d}/f{i - 1}")
                    del want[d][f"f{i - 1}"]
                    fs.write_bytes(f"{d}/f{i - 2}", b"again")
                    want[d][f"f{i - 2}"] = b"again"
        assert taken_ahead
        records = [rec for seq, rec in a.journal.log_records() if seq >= start]
        assert sum(len(rec.creates) for rec in records) == 80
        assert sum(len(rec.unlinks) for rec in records) == 20
        assert sum(len(rec.rewrites) for rec in records) == 20
        assert not any(rec.writes for rec in records if rec.says())
        for fs in (a, b):
            for d, files in want.items():
                assert sorted(fs.listdir(d)) == sorted(files)
                for name, data in files.items():
                    assert fs.read_bytes(f"{d}/{name}") == data
        assert a.journal.unabsorbed and b._lag_bytes  # (b counts a's said changes too)
        a.chmod("/a", 0o700)  # writes a home: absorbs what both said first
        assert a.journal.unabsorbed == 0 and not a._lag_bytes
        assert sorted(b.listdir("/b")) == sorted(want["/b"]) and not b._lag_bytes
        b.unlink("/b/first")  # said again, over the directory loaded anew
        del want["/b"]["first"]
        assert last_record(b).unlinks
        assert a.coherence["full_rebuilds"] == b.coherence["full_rebuilds"] == 0
    with daxfs.mount(pool_path) as fs:
        for d, files in want.items():
            assert sorted(fs.listdir(d)) == sorted(files)
            for name, data in files.items():
                assert fs.read_bytes(f"{d}/{name}") == data
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


def test_said_changes_absorbed_in_the_batch_caught_up_leave_the_directory_cached(pool_path):
    """A mount that catches up on another's said creates and unlinks and,
    in the same batch, the absorb that wrote them keeps its copy of the
    directory: the absorb's whole blocks are laid over it (every copy holds
    the same names in the same blocks), not loaded again; so does a copy
    whose blocks lag, with said changes made again in it (unsealed)."""
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.mkdir("/d")
        a.write_bytes("/d/first", b"1")  # (the directory's first block)
        assert b.listdir("/d") == ["first"]
        d_ino = b.stat("/d").st_ino
        kept = b.dirs[d_ino]
        start = a.journal.next_seq
        for i in range(10):
            a.write_bytes(f"/d/f{i}", b"x" * i)
        assert len(b.listdir("/d")) == 11 and b._lag_dirs  # (made again: lagging here)
        for i in range(10, 30):
            a.write_bytes(f"/d/f{i}", b"x" * i)
        for i in range(0, 30, 3):
            a.unlink(f"/d/f{i}")
        a.chmod("/d/first", 0o600)  # writes a home: absorbs what a said first
        records = [rec for seq, rec in a.journal.log_records() if seq >= start]
        assert sum(len(rec.creates) for rec in records) == 30 and not records[-1].says()
        want = sorted(["first"] + [f"f{i}" for i in range(30) if i % 3])
        assert sorted(b.listdir("/d")) == want  # one catch-up: the whole batch
        assert b.dirs.get(d_ino) is kept  # laid over, not loaded again
        assert b.read_bytes("/d/f5") == b"x" * 5
        b.write_bytes("/d/g", b"g")  # and it says changes there again
        assert last_record(b).creates
        assert sorted(a.listdir("/d")) == sorted(want + ["g"])
    with daxfs.mount(pool_path) as fs:
        assert sorted(fs.listdir("/d")) == sorted(want + ["g"])
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


def test_an_absorb_of_blocks_made_alike_here_parses_no_name_again(pool_path, monkeypatch):
    """A mount that made another's said creates and unlinks again holds
    their directory blocks byte for byte as their writer does (a create's
    record names its block, and compacting one is done alike).  The
    absorb that writes those blocks whole is laid over them with no name
    dropped and entered again: in every process, at every absorb, that was
    a parse of every lagging block."""
    from daxfs.dir import Directory

    # (No absorb but the one asked for: one the timer made before b caught
    # up would come in the same batch as the changes it absorbs, which b
    # then has not made, and b would rightly parse those blocks.)
    monkeypatch.setattr(logical, "ABSORB_SECONDS", 3600.0)
    reparsed = []
    reparse = Directory._reparse
    monkeypatch.setattr(
        Directory, "_reparse", lambda d, b, image: (reparsed.append(b), reparse(d, b, image))
    )
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.mkdir("/d")
        for i in range(400):  # (two blocks of names, then room in both)
            a.write_bytes(f"/d/p{i:03d}", b"p")
        for i in range(0, 400, 2):
            a.unlink(f"/d/p{i:03d}")
        a.chmod("/d", 0o755)  # (absorbed: b starts from the homes)
        names = {f"p{i:03d}" for i in range(1, 400, 2)}
        assert set(b.listdir("/d")) == names
        d_ino = b.stat("/d").st_ino
        kept = b.dirs[d_ino]
        assert len(kept.devs) == 2
        for i in range(250):  # (into both blocks, compacting them)
            a.write_bytes(f"/d/f{i:03d}", b"f")
        for i in range(1, 400, 6):
            a.unlink(f"/d/p{i:03d}")
        names |= {f"f{i:03d}" for i in range(250)}
        names -= {f"p{i:03d}" for i in range(1, 400, 6)}
        assert set(b.listdir("/d")) == names  # (made again here: lagging)
        assert len(b._lag_dirs[d_ino]) == 2 and b.dirs[d_ino] is kept
        a.chmod("/d/f000", 0o600)  # writes a home: absorbs them, each block whole
        assert not last_record(a).says()
        assert set(b.listdir("/d")) == names
        assert b.dirs.get(d_ino) is kept and not b._lag_dirs
        assert reparsed == []
        b.write_bytes("/d/g", b"g")  # names go on where they fit, in both
        a.unlink("/d/f001")
        names = (names | {"g"}) - {"f001"}
        assert set(a.listdir("/d")) == set(b.listdir("/d")) == names
    with daxfs.mount(pool_path) as fs:
        assert set(fs.listdir("/d")) == names
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


def test_a_close_that_meets_another_mounts_said_unlink_of_its_file_frees_nothing_twice(
    pool_path, monkeypatch
):
    """The last close of a file drops its pin, then looks whether the file
    lost its last name meanwhile.  Another mount may say an unlink of it
    in between (nothing pins it any more): the closing mount makes that
    unlink again as it catches up, so the file's slot lags, free as said
    but still whole at home.  The close must count it free, not load it
    (a stack of "bad magic" from the all-zero bytes the slot is to hold,
    found by test_share_stress)."""
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.mkdir("/d")
        a.write_bytes("/d/first", b"1")
        a.write_bytes("/d/x", b"x" * 100)
        a.chmod("/d/first", 0o600)  # (absorbs: /d/x's slot is written at home)
        f = b.open("/d/x", "rb")
        assert f.read() == b"x" * 100
        with b._tlock:
            if b._held:
                b._let_go(pause=True)  # (b keeps no pool lock: a may commit)
        unpin = b._unpin

        def unpin_then_unlinked_elsewhere(ino):
            unpin(ino)
            a.unlink("/d/x")  # said: nothing pins the file now
            assert last_record(a).unlinks

        monkeypatch.setattr(b, "_unpin", unpin_then_unlinked_elsewhere)
        f.close()
        monkeypatch.undo()
        assert b.listdir("/d") == ["first"] and a.listdir("/d") == ["first"]
        assert b.coherence["full_rebuilds"] == 0
        b.write_bytes("/d/y", b"y")  # (its number and blocks reused, maybe)
        assert sorted(a.listdir("/d")) == ["first", "y"]
    report = daxfs.check(pool_path)
    assert report.ok, report.errors


READER = textwrap.dedent(r"""
    import sys, zlib
    import daxfs
    fs = daxfs.mount(sys.argv[1], readonly=True)
    print("mounted", flush=True)
    for line in sys.stdin:
        cmd, path = line.split()
        if cmd == "list":
            print(len(fs.listdir(path)), fs.coherence["full_rebuilds"], flush=True)
        else:  # "read": the file's size and crc
            data = fs.read_bytes(path)
            print(len(data), zlib.crc32(data), fs.coherence["full_rebuilds"], flush=True)
""")


class Reader:
    def __init__(self, pool: str):
        self.p = subprocess.Popen(
            [sys.executable, "-c", READER, pool], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.p.stdout.readline().strip() == "mounted"

    def ask(self, line: str) -> list[int]:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return list(map(int, self.p.stdout.readline().split()))

    def stop(self) -> None:
        self.p.kill()
        self.p.wait()


def test_a_reader_in_another_process_sees_said_unlinks_at_its_next_call(pool_path, writers):
    w = Writer(pool_path)
    writers.append(w)
    assert w.ask("make /d 50") == "made"
    w.ask("unlink /d 0 0")  # (caught up, nothing said)
    r = Reader(pool_path)
    try:
        assert r.ask("list /d")[0] == 50
        assert int(w.ask("unlink /d 0 30")) >= 25  # (the first catches up the usual way)
        listed, rebuilds = r.ask("list /d")
        assert listed == 20
        # Unlinks alone are made again one by one, with no rebuild.
        assert int(w.ask("unlink /d 30 45")) >= 15
        assert r.ask("list /d") == [5, rebuilds]
        # New files opened, written and closed: creates and fills, alike.
        assert r.ask("read /d/f49")[0] == 4096  # (the file cached)
        assert w.ask("fill /d 3") == "filled"
        _n, _crc, rebuilds = r.ask("read /d/f49")
        assert r.ask("list /d") == [8, rebuilds]
        assert r.ask("read /d/o2") == [102, zlib.crc32(bytes([2]) * 102), rebuilds]
        # Files emptied and written again, and rewritten whole: rewrites, alike.
        assert w.ask("rewrite /d 3") == "rewritten"
        assert r.ask("read /d/o2") == [302, zlib.crc32(bytes([9]) * 302), rebuilds]
        assert r.ask("read /d/f49")[:2] == [4096, zlib.crc32(bytes([49]) * 4096)]
        assert r.ask("read /d/f0") == [5000, zlib.crc32(bytes([9]) * 5000), rebuilds]
    finally:
        r.stop()
    w.quit()


def test_a_follower_waits_for_the_absorb_and_then_sees_the_unlinks(pool_path, writers):
    w = Writer(pool_path)
    writers.append(w)
    assert w.ask("make /d 20") == "made"
    assert int(w.ask("unlink /d 0 5")) == 5
    follower = daxfs.mount(pool_path, follow=True)
    try:
        # The writer's absorber writes the homes within ABSORB_SECONDS; the
        # follower reads nothing before.
        assert len(follower.listdir("/d")) == 15
        assert int(w.ask("unlink /d 5 10")) == 0  # a follower: said no more
        assert len(follower.listdir("/d")) == 10
    finally:
        follower.close()
    w.quit()


def test_unlinks_in_a_small_journal_are_absorbed_before_it_fills(make_pool):
    path = make_pool(size=32 * MiB)
    fs = daxfs.mount(path)
    try:
        room = fs.journal.end - fs.journal.start
        fs.mkdir("/d")
        said = 0
        for rnd in range(3):
            for i in range(1500):
                fs.write_bytes(f"/d/{rnd}-{i}", b"z" * 100)
            for i in range(1500):
                fs.unlink(f"/d/{rnd}-{i}")
                # Said records not absorbed yet: none after an unlink the
                # usual way (it writes homes), at least this one after a
                # said one.  (Reading the log for it is quadratic here.)
                said += fs.journal.unabsorbed > 0
            assert fs._lag_bytes <= fs._absorb_most <= room // 4
        assert said > 3000  # most were said; the rest went the usual way
        assert fs.listdir("/d") == []
    finally:
        fs.close()
    assert daxfs.check(path).ok


def crafted_record(path: str, **entries) -> None:
    """Append a record of ``entries`` (pack_txn's keywords), as daxfs would
    write one, its crc right, to a cleanly closed pool's journal."""
    fs = daxfs.mount(path)
    j = fs.journal
    seq, at = j.next_seq, j.start + j.pos
    fs.close()
    region = Region(path)
    try:
        rec = pack_txn(seq, [], **entries)
        region.store(at, rec)
        region.persist(at, len(rec))
    finally:
        region.close()


def slot_with_a_block(inode, ino: int, dev: int, nlink: int = 1, uid: int | None = None) -> bytes:
    """A crafted slot: ``inode``'s, as inode ``ino`` with ``nlink`` names
    (and owner ``uid``, if given) and 4 KiB in the block at ``dev`` (what
    a said fill or rewrite gives)."""
    r = inode.record(0)
    r.ino, r.size, r.nextents, r.inline, r.generation = ino, 4096, 1, [(0, dev, 4096)], 9
    r.nlink = nlink
    if uid is not None:
        r.uid = uid
    return pack_inode(r)


def refused_then_dropped(path: str, match: str) -> None:
    """A pool whose journal ends in a crafted said record: its mount is
    refused (CorruptionError matching ``match``), the checker says the
    changes cannot be made again, and its repair drops them."""
    with pytest.raises(CorruptionError, match=match):
        daxfs.mount(path)
    report = daxfs.check(path)
    assert not report.ok and any("cannot be made again" in e for e in report.errors)
    assert daxfs.check(path, repair=True).repaired


@pytest.mark.parametrize("what", ["missing name", "a directory", "wrong inode"])
def test_a_crafted_unlink_is_damage_never_a_misread(pool_path, what):
    fs = daxfs.mount(pool_path)
    fs.mkdir("/sub")
    fs.write_bytes("/f", b"f")
    fs.write_bytes("/g", b"g")
    f, g, sub = (fs.stat(p).st_ino for p in ("/f", "/g", "/sub"))
    fs.close()
    cases = {"missing name": (b"nope", f), "a directory": (b"sub", sub), "wrong inode": (b"f", g)}
    name, ino = cases[what]
    crafted_record(pool_path, unlinks=[(1, ino, name, 0)])
    refused_then_dropped(pool_path, "unlink")
    fs = daxfs.mount(pool_path)
    try:
        assert sorted(fs.listdir("/")) == ["f", "g", "sub"]  # the record dropped
    finally:
        fs.close()
    assert daxfs.check(pool_path).ok


@pytest.mark.parametrize(
    "what",
    [
        "none: as a writer says it",
        "a free inode",
        "a directory",
        "a file with data",
        "another file's slot",
        "another owner",
        "used blocks",
        "a slot failing its checksum",
        "an extent chain",
        "more extents than the slot holds",
    ],
)
def test_a_crafted_fill_is_damage_never_a_misread(pool_path, what):
    fs = daxfs.mount(pool_path)
    fs.mkdir("/sub")
    fs.write_bytes("/full", b"f" * 100)
    fs.write_bytes("/e", b"")
    fs.write_bytes("/e2", b"")
    e, e2, sub, full = (fs.stat(p).st_ino for p in ("/e", "/e2", "/sub", "/full"))
    # A fill as the writer would say it: /e given 4 KiB in a free block.
    inode = fs._inode(e)
    free_dev = fs._dev(fs.allocator.alloc_blocks(1)[0][0])
    used_dev = fs._inode(full).extents[0][1]
    fs.close()

    def slot_of(ino: int, dev: int) -> bytes:
        return slot_with_a_block(inode, ino, dev)

    def slot_changed(**fields) -> bytes:
        r = unpack_inode(slot_of(e, free_dev), 0, e)
        for name, value in fields.items():
            setattr(r, name, value)
        return pack_inode(r)

    bad_sum = bytearray(slot_of(e, free_dev))
    bad_sum[-1] ^= 1  # (in the zeros past the extents: only the checksum tells)
    cases = {
        "none: as a writer says it": (e, slot_of(e, free_dev), free_dev),
        "a free inode": (e + 100, slot_of(e + 100, free_dev), free_dev),
        "a directory": (sub, slot_of(sub, free_dev), free_dev),
        "a file with data": (full, slot_of(full, free_dev), free_dev),
        "another file's slot": (e2, slot_of(e, free_dev), free_dev),
        "another owner": (e, slot_with_a_block(inode, e, free_dev, uid=inode.uid + 1), free_dev),
        "used blocks": (e, slot_of(e, used_dev), used_dev),
        "a slot failing its checksum": (e, bytes(bad_sum), free_dev),
        "an extent chain": (e, slot_changed(ext_block=used_dev), free_dev),
        "more extents than the slot holds": (e, slot_changed(nextents=7), free_dev),
    }
    ino, slot, dev = cases[what]
    crafted_record(pool_path, claims=[(dev, 4096)], fills=[(ino, slot)])
    if what == "none: as a writer says it":  # (the crafting is right)
        with daxfs.mount(pool_path) as fs:
            assert fs.stat("/e").st_size == 4096 and fs.journal.unabsorbed == 0
        assert daxfs.check(pool_path).ok
        return
    refused_then_dropped(pool_path, "fill|inode")
    with daxfs.mount(pool_path) as fs:
        assert sorted(fs.listdir("/")) == ["e", "e2", "full", "sub"]  # the record dropped
        assert fs.read_bytes("/e") == b"" and fs.read_bytes("/full") == b"f" * 100
    assert daxfs.check(pool_path).ok


@pytest.mark.parametrize(
    "what",
    [
        "none: as a writer says it",
        "a free inode",
        "a directory",
        "two names",
        "another file's slot",
        "used blocks",
        "its own blocks",
    ],
)
def test_a_crafted_rewrite_is_damage_never_a_misread(pool_path, what):
    fs = daxfs.mount(pool_path)
    fs.mkdir("/sub")
    fs.write_bytes("/full", b"f" * 100)
    fs.write_bytes("/other", b"o" * 100)
    fs.write_bytes("/two", b"t" * 100)
    fs.link("/two", "/two2")
    full, other, sub, two = (fs.stat(p).st_ino for p in ("/full", "/other", "/sub", "/two"))
    # A rewrite as the writer would say it: /full's 100 bytes for 4 KiB in a free block.
    inode = fs._inode(full)
    old_dev = inode.extents[0][1]
    free_dev = fs._dev(fs.allocator.alloc_blocks(1)[0][0])
    used_dev = fs._inode(other).extents[0][1]
    fs.close()

    def slot_of(ino: int, dev: int, nlink: int = 1) -> bytes:
        return slot_with_a_block(inode, ino, dev, nlink)

    cases = {
        "none: as a writer says it": (full, slot_of(full, free_dev), free_dev),
        "a free inode": (full + 100, slot_of(full + 100, free_dev), free_dev),
        "a directory": (sub, slot_of(sub, free_dev), free_dev),
        "two names": (two, slot_of(two, free_dev, nlink=2), free_dev),
        "another file's slot": (other, slot_of(full, free_dev), free_dev),
        "used blocks": (full, slot_of(full, used_dev), used_dev),
        "its own blocks": (full, slot_of(full, old_dev), old_dev),
    }
    ino, slot, dev = cases[what]
    crafted_record(
        pool_path, revokes=[(old_dev, 4096)], claims=[(dev, 4096)], rewrites=[(ino, slot)]
    )
    if what == "none: as a writer says it":  # (the crafting is right)
        with daxfs.mount(pool_path) as fs:
            assert fs.stat("/full").st_size == 4096 and fs.journal.unabsorbed == 0
        assert daxfs.check(pool_path).ok
        return
    refused_then_dropped(pool_path, "rewrite|inode")
    with daxfs.mount(pool_path) as fs:
        assert sorted(fs.listdir("/")) == ["full", "other", "sub", "two", "two2"]  # dropped
        assert fs.read_bytes("/full") == b"f" * 100 and fs.read_bytes("/other") == b"o" * 100
    assert daxfs.check(pool_path).ok


def test_the_absorber_writes_an_idle_writers_homes(pool_path):
    fs = daxfs.mount(pool_path)
    try:
        fs.write_bytes("/a", b"a")
        ino = fs.stat("/a").st_ino
        fs.unlink("/a")
        assert fs._lag_bytes
        import time

        deadline = time.monotonic() + 10 * ABSORB_SECONDS
        while fs._lag_bytes and time.monotonic() < deadline:
            time.sleep(ABSORB_SECONDS / 10)
        assert not fs._lag_bytes and slot_bytes(fs, ino) == bytes(INODE_SIZE)
    finally:
        fs.close()
