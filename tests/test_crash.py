"""Crash states: ACE-style workloads (every seq-1 operation of a bounded
generator, sampled seq-2 pairs of its core operations) are recorded through
the crash tester's RecordingRegion; at every fence (pmem) or msync (page
cache) the images a power failure could leave are rebuilt (daxfs.crash) and
each one must mount (recovering the journal), check clean, recover a second
time to the same tree, and show each operation wholly done or wholly undone;
once an operation has returned, wholly done.  Every tree a workload's
images recover to, and a sample of the other images, must then take new
work: a file created in every directory, then everything deleted, and a
clean check.  A sample of the images is also crashed again at every
fence inside recovery, and each recorded operation's flushes are checked
(check_discipline).

The lazy-sync cases (a page-cache pool mounted with commit="sync") are
checked as msync: each operation durable on return.

The lazy cases (group commit on a page-cache pool) crash also after each
operation returned, and accept a power loss taking back operations that
returned, but only the latest ones, whole, and none that a completed group
commit covered: the tree recovered is that after a prefix of the steps,
from the last one a group commit covered (its fdatasync, then the durable
mark's msync, both before the crash) to the one under way.  Their images
are crashed again inside a lazy recovery, as pages (a lazy pool is a
page-cache file).  A sample of the seq-1 workloads and the seq-2 pairs
runs by default, with fewer random subsets per crash point; every seq-1
workload and a sample of the seq-2 and seq-3 ones with DAXFS_CRASH_FULL.

By default a pmem crash point with 11 or 12 units in flight takes every
subset of up to two, 250 random ones and all of them, not every subset
(EXHAUSTIVE_UNITS); DAXFS_CRASH_FULL tries every subset of up to 12.

DAXFS_CRASH_FULL=1 (make crash-full) tries more random subsets per crash
point, every seq-2 pair of the core operations and sampled seq-3 triples
(about 12 million states); DAXFS_CRASH_STATS=FILE appends each process's
totals to FILE as a JSON line; DAXFS_CRASH_SHARD=k/n runs every n-th case
from the k-th, so a long run can be split and its totals added up.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import random
import stat
import time
import zlib

import pytest

import daxfs
from daxfs import alloc as alloc_mod
from daxfs import fs as fs_mod
from daxfs import inode as inode_mod
from daxfs import layout as L
from daxfs import logical as logical_mod
from daxfs.check import check_region
from daxfs.crash import (
    EXHAUSTIVE,
    CrashPoint,
    CrashState,
    RecordingRegion,
    ScratchImage,
    check_discipline,
    crash_states,
    group_commits,
    model_points,
    recovery_log,
    steps_covered,
)
from daxfs.data import DataPath
from daxfs.logical import LogicalPath
from daxfs.pool import mount_region
from daxfs.region import Region

FULL = bool(os.environ.get("DAXFS_CRASH_FULL"))
RANDOM_SUBSETS = 1000 if FULL else 60
RECOVERY_IMAGES = 6 if FULL else 2  # images per workload crashed again during recovery
RECOVERY_SUBSETS = 200 if FULL else 12
RECOVERY_EXHAUSTIVE = 12 if FULL else 6  # in-flight units up to which every subset is tried
# A workload's own pmem crash points: every subset up to EXHAUSTIVE_UNITS
# units in flight, else every subset of up to two, random ones and all of
# them.  By default a point of 11 or 12 units (which make crash-full takes
# whole) gets SAMPLED_WHOLE random subsets, a larger one RANDOM_SUBSETS:
# an absorb's or a checkpoint's point holds 12 units, a torn one among
# them, and every subset with the torn unit's variants is 10,240 states.
EXHAUSTIVE_UNITS = EXHAUSTIVE if FULL else 10  # (crash.EXHAUSTIVE: 12)
SAMPLED_WHOLE = 250
# One restore of the scratch image in VERIFY_EVERY is compared with the
# crash point's image whole (a store that bypassed the undo log): with
# every one, the comparison was an eighth of the module's time.
VERIFY_EVERY = 8
SEQ2_DEFAULT = 16  # sampled seq-2 pairs in the default suite
LAZY_DEFAULT = 32  # sampled lazy-mode workloads in the default suite
LAZY_SEQUENCES_FULL = 200  # with every seq-1 workload, sampled seq-2 and seq-3 ones
# Lazy crash points hold every page dirtied since the last group commit: the
# structured fates (each page alone against all written or all dropped)
# are what find ordering bugs there, the random ones add less per second.
LAZY_RANDOM_SUBSETS = RANDOM_SUBSETS if FULL else 15
EXERCISE_EVERY = 10 if FULL else 25  # besides each new tree, 1 in N images is exercised
# 1 in N distinct images is also recovered by a read-only mount in private
# (pool.py, "Recovered in private"), which must show the same tree.
PRIVATE_EVERY = 4 if FULL else 32
SEQ3_FULL = 400
POOL = "8M"
DIRS = ["/A", "/B", "/C", "/D"]
FILES = ["/A/foo", "/A/bar", "/B/foo", "/B/bar", "/C/foo", "/C/bar", "/D/foo", "/D/bar"]
SIZES = {"/A/foo": 5000, "/A/bar": 0, "/B/foo": 8192, "/B/bar": 100, "/C/foo": 70000,
         "/C/bar": 4096, "/D/foo": 1, "/D/bar": 12288}  # fmt: skip
STATS = {"workloads": 0, "points": 0, "states": 0, "unique": 0, "recovery_states": 0,
         "exercised": 0, "recovered_in_private": 0, "flushes": 0, "redundant_flushes": 0,
         "fences": 0, "redundant_fences": 0}  # fmt: skip


def _setup(fs) -> None:
    for d in DIRS:
        fs.mkdir(d)
    fs.mkdir("/A/sub")
    fs.mkdir("/E")  # an empty directory to remove or rename over
    for i, path in enumerate(FILES):
        with fs.open(path, "wb") as f:
            f.write(bytes([65 + i]) * SIZES[path])
    fs.link("/A/foo", "/D/hard")


def _fill(off: int, n: int) -> bytes:
    return bytes([(off + n) % 251 + 1]) * n


def _write(path: str, off: int, n: int):
    def op(fs):
        with fs.open(path, "r+b", buffering=0) as f:
            f.seek(off)
            f.write(_fill(off, n))

    return op


def _append_to(path: str, end: int):
    """One write from the current end of file to ``end``."""

    def op(fs):
        size = fs.stat(path).st_size
        with fs.open(path, "r+b", buffering=0) as f:
            f.seek(size)
            f.write(_fill(size, end - size))

    return op


def _write_two_fds(a: str, b: str):
    """Writes through two open files of one inode (a bug class peers shipped).
    Three steps, one per write, with both files open throughout: each write
    is an operation of its own, and a crash may fall between two of them
    (found by crash-full: after a truncate to 100 bytes, the first write
    alone leaves a 310-byte file, neither before nor after all three)."""
    files: dict[str, object] = {}

    def open_both_and_write(fs):
        try:
            files["f"] = fs.open(a, "r+b", buffering=0)
            files["g"] = fs.open(b, "r+b", buffering=0)
        except (OSError, ValueError):
            close_both()
            raise
        files["f"].seek(10)
        files["f"].write(_fill(10, 300))

    def write_through_the_other(fs):
        if files:
            files["g"].seek(4000)
            files["g"].write(_fill(4000, 5000))

    def write_again_and_close(fs):
        try:
            if files:
                files["f"].write(_fill(310, 70))  # at the first file's own position
        finally:
            close_both()

    def close_both():
        for f in files.values():
            f.close()
        files.clear()

    return (open_both_and_write, write_through_the_other, write_again_and_close)


def _open_then_write(path: str, n: int):
    """A new file opened "wb", then its first write and the close: two
    steps, as the open shows the file (empty) before the write (each said
    when alone on pmem: a create, then a fill)."""
    files: dict[str, object] = {}

    def open_new(fs):
        files["f"] = fs.open(path, "wb")

    def write_and_close(fs):
        f = files.pop("f", None)
        if f is not None:  # (the open failed: nothing to write)
            with f:
                f.write(_fill(0, n))

    return (open_new, write_and_close)


def _map_store(path: str, off: int, n: int, size: int | None = None):
    """map + store + persist: stores through the mapping, not the region."""

    def op(fs):
        mode = "r+" if size is None else "w+"
        with fs.map(path, mode, size=size) as m:
            arr = m.ndarray()
            arr[off : off + n] = (off + n) % 251 + 1
            del arr
            m.persist(off, n)

    return op


def _workloads() -> tuple[dict[str, object], list[str]]:
    """(every seq-1 workload by name, the names of the core operations: one
    per operation and kind of argument, the alphabet of seq-2 and seq-3)."""
    w: dict[str, object] = {}
    core: list[str] = []
    for d in DIRS:
        w[f"creat {d}/new"] = lambda fs, d=d: fs.open(f"{d}/new", "xb").close()
        # A new file and its bytes in one change (DaxStore's zarr chunks).
        w[f"create with bytes {d}/cw"] = lambda fs, d=d: fs._create_with(f"{d}/cw", b"w" * 9000)
        w[f"open, write, close {d}/ow"] = _open_then_write(f"{d}/ow", 5000)
        w[f"mkdir {d}/new"] = lambda fs, d=d: fs.mkdir(f"{d}/new")
        w[f"symlink {d}/sym"] = lambda fs, d=d: fs.symlink("/A/foo", f"{d}/sym")
        w[f"rmdir {d}"] = lambda fs, d=d: fs.rmdir(d)  # fails: not empty
        w[f"rename {d} -> /E"] = lambda fs, d=d: fs.rename(d, "/E")
        w[f"rename {d} -> /Z"] = lambda fs, d=d: fs.rename(d, "/Z")
        w[f"link /A/foo -> {d}/lnk"] = lambda fs, d=d: fs.link("/A/foo", f"{d}/lnk")
        w[f"rename {d}/foo -> {d}/bar (over)"] = lambda fs, d=d: fs.rename(f"{d}/foo", f"{d}/bar")
    w["rmdir /E"] = lambda fs: fs.rmdir("/E")
    w["rmdir /A/sub"] = lambda fs: fs.rmdir("/A/sub")
    w["creat /A/sub/new"] = lambda fs: fs.open("/A/sub/new", "xb").close()
    w["mkdir /A/sub/new"] = lambda fs: fs.mkdir("/A/sub/new")
    w["rename /A -> /A/sub/x (EINVAL)"] = lambda fs: fs.rename("/A", "/A/sub/x")
    w["rename /E -> /A/sub (over empty dir)"] = lambda fs: fs.rename("/E", "/A/sub")
    w["rename /A -> /B (ENOTEMPTY)"] = lambda fs: fs.rename("/A", "/B")
    w["rename /A/sub -> /B/sub"] = lambda fs: fs.rename("/A/sub", "/B/sub")
    w["rename /A/foo -> /D/hard (same inode)"] = lambda fs: fs.rename("/A/foo", "/D/hard")
    w["unlink /D/hard"] = lambda fs: fs.unlink("/D/hard")
    w["mkfifo /B/fifo"] = lambda fs: fs.mkfifo("/B/fifo")
    w["mknod /C/dev"] = lambda fs: fs.mknod("/C/dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    w["create with bytes /A/foo (EEXIST)"] = lambda fs: fs._create_with("/A/foo", b"x")
    w["create with bytes /A/big 1M"] = lambda fs: fs._create_with("/A/big", b"\x5a" * (1 << 20))
    # pathlib's write_bytes: a new file, or an old one emptied and written, in one change.
    w["write_bytes /A/wb"] = lambda fs: fs.write_bytes("/A/wb", b"\x77" * 9000)
    w["write_bytes /D/hard 1M (replaced)"] = lambda fs: fs.write_bytes(
        "/D/hard", b"\x78" * (1 << 20)
    )
    # A new file put in place of a name, as a rename over it (DaxStore's
    # replace of a zarr key): the old file loses the name; a hard link keeps it.
    w["replace with bytes /A/rw (new)"] = lambda fs: fs._replace_with("/A/rw", b"\x7a" * 9000)
    w["replace with bytes /D/hard 1M"] = lambda fs: fs._replace_with("/D/hard", b"\x7b" * (1 << 20))
    w["replace with bytes /A (EISDIR)"] = lambda fs: fs._replace_with("/A", b"x")
    # A directory's files removed several to a change (rm -r, zarr's delete_dir).
    w["unlink names /A (sub and gone left)"] = lambda fs: fs._unlink_names(
        "/A", ["foo", "bar", "sub", "gone"]
    )
    w["unlink names /D (a hard link among them)"] = lambda fs: fs._unlink_names(
        "/D", ["foo", "hard", "bar"]
    )
    w["unlink names /B"] = lambda fs: fs._unlink_names("/B", ["foo", "bar"])
    w["unlink /A/cw"] = lambda fs: fs.unlink("/A/cw")  # (made by a step before, or ENOENT)
    w["unlink /A/ow"] = lambda fs: fs.unlink("/A/ow")
    w["write /A/foo /D/hard through two fds"] = _write_two_fds("/A/foo", "/D/hard")
    w["write /B/foo /B/foo through two fds"] = _write_two_fds("/B/foo", "/B/foo")
    core += ["creat /A/new", "mkdir /B/new", "symlink /C/sym", "rmdir /E",
             "rename /A -> /E", "rename /D -> /Z", "rename /A/sub -> /B/sub", "unlink /D/hard",
             "write /A/foo /D/hard through two fds"]  # fmt: skip
    for p in FILES:
        size = SIZES[p]
        d = p.rsplit("/", 1)[0]
        for off, n in [(0, 4096), (100, 50), (4000, 200), (size, 4096), (size, 3000),
                       (size + 10000, 10), (0, 2 << 20), (2 << 20, 2 << 20),
                       (60, 10), (4090, 12), (8190, 4100)]:  # fmt: skip
            w[f"write {p} {off}+{n}"] = _write(p, off, n)
        w[f"fallocate {p} 0+16384"] = lambda fs, p=p: fs.fallocate(p, 0, 16384)
        w[f"fallocate {p} end+8192"] = lambda fs, p=p, s=size: fs.fallocate(p, s, 8192)
        w[f"fallocate {p} 0+4M"] = lambda fs, p=p: fs.fallocate(p, 0, 4 << 20)
        # Appends that make the file large: its small-block window 0 moves into
        # a whole chunk in the same transaction (content checked: appends are atomic).
        w[f"append {p} to 2M+4096"] = _append_to(p, (2 << 20) + 4096)
        w[f"append {p} to 1M+100, to 2M"] = (_append_to(p, (1 << 20) + 100),
                                              _append_to(p, 2 << 20))  # fmt: skip
        for length in (0, 100, 20000, 3 << 20, size + 1):
            w[f"truncate {p} {length}"] = lambda fs, p=p, n=length: fs.truncate(p, n)
        w[f"unlink {p}"] = lambda fs, p=p: fs.unlink(p)
        w[f"write_bytes {p} 9000 (replaced)"] = lambda fs, p=p: fs.write_bytes(p, b"\x79" * 9000)
        # Emptied by the open, then written (alone on pmem: a said rewrite, a said fill).
        w[f"open wb, write, close {p}"] = _open_then_write(p, 3000)
        w[f"replace with bytes {p} 9000"] = lambda fs, p=p: fs._replace_with(p, b"\x7c" * 9000)
        w[f"link {p} -> /E/l"] = lambda fs, p=p: fs.link(p, "/E/l")
        w[f"link {p} -> {d}/l"] = lambda fs, p=p, d=d: fs.link(p, f"{d}/l")
        w[f"rename {p} -> /E/r"] = lambda fs, p=p: fs.rename(p, "/E/r")
        w[f"rename {p} -> {d}/r"] = lambda fs, p=p, d=d: fs.rename(p, f"{d}/r")
        w[f"rename {p} -> /B/foo"] = lambda fs, p=p: fs.rename(p, "/B/foo")
        w[f"chmod {p}"] = lambda fs, p=p: fs.chmod(p, 0o600)
        w[f"utime {p}"] = lambda fs, p=p: fs.utime(p, (1, 2))
        w[f"fsync {p}"] = lambda fs, p=p: fs.fsync(p)
        if size:
            w[f"map {p} store {min(100, size - 1)}+1"] = _map_store(p, min(100, size - 1), 1)
        if size > 260:
            w[f"map {p} store 60+200"] = _map_store(p, 60, 200)
        w[f"map {p} w+ 12288 store 0+12288"] = _map_store(p, 0, 12288, size=12288)
        w[f"map {p} w+ 2M store 4000+100"] = _map_store(p, 4000, 100, size=2 << 20)
        # A seq-2 workload (the bug class peers shipped): each step is atomic,
        # so a crash may also leave the state between the two.
        w[f"truncate, fallocate {p}"] = (lambda fs, p=p: fs.truncate(p, 10),
                                         lambda fs, p=p: fs.fallocate(p, 0, 9000))  # fmt: skip
    for p in ("/A/foo", "/C/foo"):
        core += [f"write {p} 100+50", f"write {p} {SIZES[p]}+4096", f"write {p} 0+2097152",
                 f"fallocate {p} end+8192", f"truncate {p} 100", f"truncate {p} 20000",
                 f"unlink {p}", f"link {p} -> /E/l", f"rename {p} -> /E/r",
                 f"rename {p} -> /B/foo", f"chmod {p}", f"map {p} store 60+200",
                 f"map {p} w+ 12288 store 0+12288"]  # fmt: skip
    assert set(core) <= set(w), set(core) - set(w)
    return w, core


WORKLOADS, CORE = _workloads()


def _sequences() -> dict[str, tuple[str, ...]]:
    """Workload name -> the seq-1 operations it runs, in order."""
    seqs = {name: (name,) for name in WORKLOADS}
    pairs = list(itertools.permutations(CORE, 2)) + [(op, op) for op in CORE]
    rng = random.Random(2)
    if not FULL:
        pairs = rng.sample(pairs, SEQ2_DEFAULT)
    else:
        pairs += [tuple(rng.sample(CORE, 3)) for _ in range(SEQ3_FULL)]
    seqs.update({" ; ".join(ops): ops for ops in pairs})
    return seqs


# Sync mode on the page cache names new data in its record by checks
# (journal.py, "Checked records"): a store over those bytes before anything
# durable covers the record (a later record, or the mark _confirm_in_place
# writes) would make a power loss drop it although it returned.
CHECKED_SEQUENCES = [
    ("write /C/bar 4096+4096", "write /C/bar 4096+3000", "chmod /C/bar"),
    ("write /C/bar 4096+4096", "write /C/bar 8190+4100"),
    ("fallocate /C/bar end+8192", "write /C/bar 4096+3000", "chmod /C/bar"),
]
# Unlinks and new small files said and not written (logical.py), then what
# comes after them: more said, nothing that writes (a crash must make them
# again), or a change that absorbs them first, taking their inode numbers
# and blocks again, or changing what they made.
SAID_SEQUENCES = [
    ("unlink /A/foo", "unlink /C/foo", "chmod /B/foo"),
    ("unlink /A/foo", "creat /A/new"),
    ("unlink /C/foo", "create with bytes /A/cw"),
    ("unlink /A/foo", "mkdir /A/new", "unlink /C/foo"),
    ("unlink names /B", "rmdir /B"),
    ("unlink /C/foo", "write /C/bar 0+4096", "unlink /C/bar"),
    ("create with bytes /A/cw", "unlink /A/cw"),
    ("write_bytes /A/wb", "create with bytes /B/cw", "chmod /A/foo"),
    ("unlink /B/foo", "create with bytes /B/cw", "rename /B -> /Z"),
    ("create with bytes /C/cw", "rename /C/foo -> /C/r"),
    ("open, write, close /A/ow", "unlink /A/ow"),
    ("unlink /C/foo", "open, write, close /C/ow", "chmod /C/bar"),
    ("open, write, close /B/ow", "create with bytes /B/cw", "rename /B -> /Z"),
    # Files emptied or rewritten whole (said rewrites), then what comes after.
    ("open wb, write, close /B/foo", "unlink /C/foo"),
    ("write_bytes /C/bar 9000 (replaced)", "create with bytes /C/cw", "chmod /C/foo"),
    ("unlink /B/bar", "open wb, write, close /C/bar", "write /C/bar 0+4096"),
    ("open wb, write, close /D/bar", "write_bytes /D/bar 9000 (replaced)"),
    ("write_bytes /B/foo 9000 (replaced)", "unlink /B/foo", "creat /B/new"),
    ("truncate /B/bar 0", "write /B/bar 0+4096", "unlink /C/foo"),
]
SEQUENCES = _sequences()
SEQUENCES.update({" ; ".join(ops): ops for ops in SAID_SEQUENCES})
CHECKED = {" ; ".join(ops): ops for ops in CHECKED_SEQUENCES}


def _lazy_names() -> list[str]:
    """Lazy mode keeps records undurable across operations, so sequences
    matter more there: each sample takes its share of them."""
    singles = sorted(WORKLOADS)
    sequences = sorted(set(SEQUENCES) - set(WORKLOADS))
    rng = random.Random(14)
    if FULL:
        return singles + sorted(rng.sample(sequences, LAZY_SEQUENCES_FULL))
    picked = rng.sample(singles, LAZY_DEFAULT * 3 // 4) + rng.sample(sequences, LAZY_DEFAULT // 4)
    return sorted(picked)


CASES = (
    [("pmem", name) for name in sorted(SEQUENCES)]
    + [("msync", name) for name in sorted(WORKLOADS)]
    + [("lazy", name) for name in _lazy_names()]
    + [("lazy-sync", name) for name in _lazy_names()[::4]]
    + [("lazy-sync", name) for name in CHECKED]
)
if os.environ.get("DAXFS_CRASH_SHARD"):  # "k/n": every n-th case from the k-th, to split a long run
    _k, _n = (int(x) for x in os.environ["DAXFS_CRASH_SHARD"].split("/"))
    CASES = CASES[_k - 1 :: _n]


# On a pool whose whole chunks are scarce (_base_pool "scarce"): a delete
# moves a trimmed tail out of its chunk, and heals a window that had to take
# small blocks (DataPath._consolidate), each in a change of its own.
SCARCE_POOL = "32M"
SCARCE_WORKLOADS = {
    "unlink /T/small (a tail moves out)": lambda fs: fs.unlink("/T/small"),
    "write /T/new 4M, unlink /T/fill (a window heals)": (
        lambda fs: fs._create_with("/T/new", b"\x6e" * (4 << 20)),
        lambda fs: fs.unlink("/T/fill"),
    ),
}


def _steps(ops: tuple[str, ...]) -> list[tuple[str, object]]:
    out = []
    for op in ops:
        fn = WORKLOADS.get(op) or SCARCE_WORKLOADS.get(op) or HELD_WORKLOADS[op]
        out += [(op, f) for f in fn] if isinstance(fn, tuple) else [(op, fn)]
    return out


def _snapshot(fs) -> dict[str, tuple]:
    # One shared lock for the whole walk, as one read-only call would take:
    # the calls inside skip the pool lock's system calls.
    with fs._locked(exclusive=False):
        return _walk_tree(fs)


def _walk_tree(fs) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    todo = ["/"]
    while todo:
        d = todo.pop()
        for name in fs.listdir(d):
            p = d.rstrip("/") + "/" + name
            st = fs.lstat(p)
            entry = (stat.S_IFMT(st.st_mode), st.st_ino, st.st_nlink, st.st_size)
            if stat.S_ISDIR(st.st_mode):
                todo.append(p)
            elif stat.S_ISLNK(st.st_mode):
                entry += (fs.readlink(p),)
            elif not stat.S_ISREG(st.st_mode):  # a FIFO, device or socket: no bytes
                entry += (st.st_rdev, stat.S_IMODE(st.st_mode))
            else:
                with fs.open(p, "rb") as f:
                    entry += (zlib.crc32(f.read()), stat.S_IMODE(st.st_mode))
            out[p] = entry
    # A file a follower holds that lost its names lives on as an orphan
    # (its bytes too): part of the state a crash must keep.
    for ino in sorted(fs.followers.held()):
        if fs._live(ino) and fs._inode(ino).nlink == 0:
            inode = fs._inode(ino)
            out[f"#held {ino}"] = (inode.size, zlib.crc32(fs._read_bytes(inode, 0, inode.size)))
    return out


def _base_pool(full_table: bool, scarce: bool = False):
    """The pool every workload starts from (written once per module), its
    image and a lock file.  ``full_table``: the inode table grows by 16 slots
    (one page) and the setup leaves it full, so that a create moves the
    table's limit, zeroing the next slots first.  ``scarce``: the pool of
    the consolidation cases instead (_scarce_pool)."""
    kind = "scarce" if scarce else "full-table" if full_table else "base"
    path = f"/dev/shm/daxfs-crash-{kind}-{os.getpid()}.pool"
    with _timers_held_off():  # (where its files land, too, the machine's speed aside)
        if scarce:
            _scarce_pool(path)
        else:
            _standard_pool(path, full_table)
    with open(path, "rb") as f:
        image = f.read()
    lock = f"/dev/shm/daxfs-crash-lock-{kind}-{os.getpid()}"
    yield path, image, lock
    os.unlink(path)
    if os.path.exists(lock):
        os.unlink(lock)


def _standard_pool(path: str, full_table: bool) -> None:
    with pytest.MonkeyPatch.context() as mp:
        if full_table:
            mp.setattr(inode_mod, "ITABLE_GROW", L.SLOTS_PER_PAGE)
            mp.setattr(importlib.import_module("daxfs.mkfs"), "ITABLE_GROW", L.SLOTS_PER_PAGE)
        daxfs.mkfs(path, POOL, inodes=256)
        with daxfs.mount(path) as fs:
            _setup(fs)
            if full_table:
                fs.mkdir("/G")
                for i in range(fs.inodes.nfree):
                    fs.open(f"/G/{i}", "xb").close()
                assert fs.inodes.nfree == 0 and fs.inodes.limit < fs.sb.inode_count
                _forge_past_the_limit(fs, path)


def _scarce_pool(path: str) -> None:
    """A pool holding a large file whose trimmed tail stayed in its chunk
    (trimmed while whole chunks were plentiful), a small file, and a fill
    that leaves one whole chunk: whole chunks are scarce, and a delete
    consolidates."""
    daxfs.mkfs(path, SCARCE_POOL, inodes=256)
    scarce = alloc_mod.SCARCE
    # (Never scarce while it is made: the tail stays, and the unmount
    # consolidates nothing.)
    with pytest.MonkeyPatch.context() as mp, daxfs.mount(path) as fs:
        mp.setattr(alloc_mod, "SCARCE", 0.0)
        fs.mkdir("/T")
        with fs.open("/T/big", "wb") as f:
            f.write(bytes(range(256)) * ((2 << 20) // 256 + 48))  # 2 MiB + 12 KiB
        with fs.open("/T/small", "wb") as f:
            f.write(b"s" * 20000)
        fs.open("/T/fill", "xb").close()
        fs.fallocate("/T/fill", 0, (fs.allocator.free_chunks - 1) * L.CHUNK)
        a = fs.allocator
        assert a.free_chunks * (L.CHUNK // L.BLOCK) < a.free_blocks * scarce and a.tail_room


def _forge_past_the_limit(fs, path: str) -> None:
    """What a device may hold past the table's limit: here a valid-looking
    copy of /A/foo's inode (owning its blocks), in a slot the next growth
    takes.  A growth whose zeros were not durable before its record would
    let a crash show it live: a block owned twice."""
    slot = bytearray(fs.region.read(fs.inodes.slot_off(fs.stat("/A/foo").st_ino), L.INODE_SIZE))
    ino = fs.inodes.limit + 3
    slot[8:16] = ino.to_bytes(8, "little")
    slot[0:4] = L.crc32c(slot[4:]).to_bytes(4, "little")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(slot), fs.sb.itable_off + ino * L.INODE_SIZE)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def base_pool(tmp_path_factory):
    yield from _base_pool(full_table=False)
    print(f"\ncrash states: {STATS}")
    if os.environ.get("DAXFS_CRASH_STATS"):  # make crash-full adds up its workers' totals
        with open(os.environ["DAXFS_CRASH_STATS"], "a") as f:
            f.write(json.dumps(STATS) + "\n")


@pytest.fixture(scope="module")
def full_table_pool(tmp_path_factory):
    yield from _base_pool(full_table=True)


@pytest.fixture(scope="module")
def held_pool(base_pool):
    """The base pool with a follower's lease in its follower table (format
    version 7): /B/foo held open and /C/foo held mapped, by a slot whose
    lease (an hour) outlasts the test, as a live follower's would."""
    path, image, lock = base_pool
    with daxfs.mount(path) as fs:
        b, c = fs.stat("/B/foo").st_ino, fs.stat("/C/foo").st_ino
    slot = bytearray(L.FOLLOWER_SLOT_SIZE)
    L.FOLLOWER_HEAD.pack_into(slot, 0, L.FOLLOWER_MAGIC, 3_600_000, 0x1234_5679, 7, 0)
    slot[32:48] = b.to_bytes(8, "little") + (c | 1 << 63).to_bytes(8, "little")
    held = bytearray(image)
    held[L.FOLLOWERS_OFF : L.FOLLOWERS_OFF + len(slot)] = slot
    copy = path + ".held"
    with open(copy, "wb") as f:
        f.write(held)
    yield copy, bytes(held), lock
    os.unlink(copy)


def _content_free(name: str) -> bool:
    # Overwrites in place are not atomic (POSIX allows any mix of old and new
    # bytes after a crash), nor are stores through a mapping.
    return name.startswith(("write ", "map "))


def _record(path: str, image: bytes, ops: tuple[str, ...], model: str):
    """Run the operations on a recorded mount.  Returns the starting image,
    the log, the tree after each step, and the inodes whose content may be
    any mix of old and new."""
    with open(path, "wb") as f:
        f.write(image)
    # "lazy-sync": a page-cache pool mounted with commit="sync" (records
    # durable when written, homes still through the private view).
    rec = RecordingRegion(Region(path, durability="none"), model.removesuffix("-sync"))
    with _timers_held_off():  # (from the mount on: it sets the first look's due time)
        fs = mount_region(rec, commit="sync" if model.endswith("-sync") else None)
        base = bytes(rec.inner.buf)
        rec.reset()
        states, mixed, trims = _recorded_steps(fs, rec, ops)
    journal = (fs.sb.journal_off, fs.sb.journal_off + fs.sb.journal_len)
    fs.close()
    return base, rec.log, states, mixed, journal, trims


def _recorded_steps(fs, rec: RecordingRegion, ops: tuple[str, ...]):
    """_record's steps on the mount ``fs``: the tree after each, the inodes
    whose content may be any mix, and the spans of the changes the calls
    made of their own."""
    states, mixed = [], set()
    with _own_changes_marked(rec.log) as trims:
        for name, step in _steps(ops):
            if _content_free(name):
                target = (states[-1] if states else _snapshot(fs)).get(name.split()[1])
                if target is not None:
                    mixed.add(target[1])
            with rec.operation(name):
                try:
                    step(fs)
                except (OSError, ValueError):
                    pass  # a failing operation must leave the tree as it was
            states.append(_snapshot(fs))
            if _content_free(name) and name.split()[1] in states[-1]:
                mixed.add(states[-1][name.split()[1]][1])  # a file the step created
    return states, mixed, trims


@contextlib.contextmanager
def _timers_held_off():
    """Holds of the pool lock that last the whole recording, as a process
    writing alone is in one for all but its first change, no pause after
    a hold is let go, no absorb but those a change asks for, and no look
    at the follower table but the mount's.  Otherwise whether a said
    change takes its block from those taken ahead (in a hold: logical.py,
    _stashed_block; a section that says nothing lets a hold go, and none
    is taken again for HOLD_PAUSE, so whether the next call came within
    it decided), whether the absorber thread wrote the homes between two
    steps (every ABSORB_SECONDS), and whether a snapshot's open met the
    look at followers (every FOLLOWER_LOOK_SECONDS: it goes the usual way,
    which ends the hold and gives the blocks taken ahead back) would
    depend on how long each step and snapshot took on the machine, and so
    would where files land, the images and their count."""
    timers = [(logical_mod, "HOLD_SECONDS", 3600.0), (logical_mod, "HOLD_IDLE", 3600.0)]
    timers += [(logical_mod, "ABSORB_SECONDS", 3600.0), (fs_mod, "FOLLOWER_LOOK_SECONDS", 3600.0)]
    timers += [(logical_mod, "HOLD_ALONE_MOST", 3600.0), (logical_mod, "HOLD_PAUSE", 0.0)]
    saved = [getattr(module, name) for module, name, _value in timers]
    for module, name, value in timers:
        setattr(module, name, value)
    try:
        yield
    finally:
        for (module, name, _value), value in zip(timers, saved, strict=True):
            setattr(module, name, value)


@contextlib.contextmanager
def _own_changes_marked(log: list[tuple]):
    """Where each change a call makes of its own, apart from what it was
    asked, began and ended, as positions in ``log``: a tail trim
    (tails="trim": DataPath._trim_tails, at a file's last close), a
    consolidation (DataPath._consolidate, after a delete, a truncate or a
    trim, when whole chunks are scarce or windows wait for one) and an
    absorb (LogicalPath._absorb, of what calls before it said).  Their
    fences count apart from the step's own (at most two each); the
    methods are instrumented for the duration."""
    spans: list[tuple[int, int]] = []
    owners = {"_trim_tails": DataPath, "_consolidate": DataPath, "_absorb": LogicalPath}
    plain = {name: getattr(cls, name) for name, cls in owners.items()}

    def marking(method):
        def marked(self, *args, **kwargs):
            start = len(log)
            try:
                return method(self, *args, **kwargs)
            finally:
                spans.append((start, len(log)))

        return marked

    for name, method in plain.items():
        setattr(owners[name], name, marking(method))
    try:
        yield spans
    finally:
        for name, method in plain.items():
            setattr(owners[name], name, method)


def _recovered_snapshot(scratch: ScratchImage, lock: str) -> dict[str, tuple]:
    """Mount the crash image built in ``scratch`` (recovering it), snapshot
    the tree, then recover again and check."""
    fs = mount_region(scratch.region(lock))
    try:
        snap = _snapshot(fs)
    finally:
        fs.close()
    again = scratch.region(lock)
    report = check_region(again)  # recovers again, then checks
    assert report.ok, report.errors
    if not again.changed:
        return snap  # the second recovery changed no byte at all
    fs = mount_region(scratch.region(lock))
    try:
        assert _snapshot(fs) == snap, "a second recovery changed the tree"
    finally:
        fs.close()
    return snap


def _privately_recovered_snapshot(scratch: ScratchImage, lock: str) -> dict[str, tuple]:
    """The tree a read-only mount that recovers the crash image in private
    shows (what a reader who may not write the pool gets); the image is
    then as it was built."""
    region = scratch.region(lock)
    fs = mount_region(region, readonly=True, recover_in_private=True)
    try:
        return _snapshot(fs)
    finally:
        region.forget_stores()  # (before the close lets the image go)
        fs.close()


def _exercise(scratch: ScratchImage, lock: str, tree: dict[str, tuple]) -> None:
    """The recovered pool takes new work: a file created in every directory,
    then everything deleted, and it checks clean after."""
    fs = mount_region(scratch.region(lock))
    try:
        dirs = ["/"] + [p for p, e in tree.items() if stat.S_ISDIR(e[0])]
        for i, d in enumerate(dirs):
            with fs.open(d.rstrip("/") + f"/new-{i}", "wb") as f:
                f.write(_fill(i, 5000))
        _delete_everything(fs, "/")
        assert fs.listdir("/") == [], "deleting everything left names behind"
    finally:
        fs.close()
    report = check_region(scratch.region(lock))
    assert report.ok, f"after creating and deleting everything: {report.errors}"


def _delete_everything(fs, d: str) -> None:
    for name in fs.listdir(d):
        p = d.rstrip("/") + "/" + name
        if stat.S_ISDIR(fs.lstat(p).st_mode):
            _delete_everything(fs, p)
            fs.rmdir(p)
        else:
            fs.unlink(p)


def _blur(snap: dict[str, tuple], inos: set[int]) -> dict[str, tuple]:
    if not inos:
        return snap
    return {p: (e[:4] if e[1] in inos else e) for p, e in snap.items()}


class _Checker:
    """Recovers each distinct crash image once (by key) and remembers what it
    showed; has a sample of them take new work, and crashes a few of them
    again inside their own recovery."""

    def __init__(self, lock: str, name: str, size: int, lazy: bool = False):
        self.lock, self.name = lock, name
        # A lazy pool is a page-cache file: its recovery is lazy too, and a
        # crash inside it leaves pages, not cache lines.
        self.recovery_model = "lazy" if lazy else "pmem"
        self.seen: dict[bytes, dict] = {}
        self.recovery_tries = 0
        self.rng = random.Random(name)
        self.scratch = ScratchImage(size, verify=0 if FULL else VERIFY_EVERY)
        self.trees: set[frozenset] = set()

    def snapshot(self, state) -> dict[str, tuple]:
        STATS["states"] += 1
        got = self.seen.get(state.key)
        if got is None:
            STATS["unique"] += 1
            self.scratch.build(state)
            private = None
            if STATS["unique"] % PRIVATE_EVERY == 0:
                STATS["recovered_in_private"] += 1
                private = _privately_recovered_snapshot(self.scratch, self.lock)
            got = self.seen[state.key] = _recovered_snapshot(self.scratch, self.lock)
            assert private in (None, got), (
                f"{self.name}: a read-only mount recovered in private shows another tree"
            )
            self._maybe_exercise(got)
            self._maybe_crash_recovery(state, got)
        return got

    def _maybe_exercise(self, tree: dict[str, tuple]) -> None:
        # Sampled (it costs twice the recovery): every tree the workload's
        # images recover to, and one image in EXERCISE_EVERY besides.
        key = frozenset(tree.items())
        if key in self.trees and len(self.seen) % EXERCISE_EVERY:
            return
        self.trees.add(key)
        STATS["exercised"] += 1
        _exercise(self.scratch, self.lock, tree)

    def _maybe_crash_recovery(self, crashed, expected: dict) -> None:
        # Sampled: recovery replays whole transactions again, so a few images
        # per workload cover its paths; only images that recovery changes count.
        if self.recovery_tries >= RECOVERY_IMAGES or self.rng.random() > 0.2:
            return
        img = crashed.image()
        log = recovery_log(img, self.lock, self.recovery_model)
        if not any(ev[0] == "store" for ev in log):
            return
        self.recovery_tries += 1
        points = model_points(self.recovery_model, bytes(img), log)
        if self.recovery_model == "lazy":
            points = _after_new_stores(points, log)
        for point in points:
            for state in crash_states(point, self.rng, RECOVERY_SUBSETS, RECOVERY_EXHAUSTIVE):
                STATS["recovery_states"] += 1
                if state.key not in self.seen:
                    self.scratch.build(state)
                    self.seen[state.key] = _recovered_snapshot(self.scratch, self.lock)
                assert self.seen[state.key] == expected, (
                    f"{self.name}: a crash during recovery (event {point.index}) "
                    "recovered to a different tree"
                )


def _after_new_stores(points, log: list[tuple]):
    """The crash points with a store since the one before.  A page-cache
    point with none adds no state: each of its states is one of the point
    before's, with the pages made durable in between written (a lazy
    recovery erases stale records one msync at a time)."""
    before = None
    for point in points:
        if before is None or any(ev[0] == "store" for ev in log[before : point.index]):
            yield point
        before = point.index


# A follower holds /B/foo open and /C/foo mapped (held_pool): unlinked,
# each must stay an orphan with its bytes in every crash state, however
# the space is taken again; a truncate into the mapped one is refused.
HELD_WORKLOADS = {
    "rename /B/bar -> /B/foo (over the held file)": lambda fs: fs.rename("/B/bar", "/B/foo"),
}
HELD_CASES = {
    "unlink /B/foo": ("unlink /B/foo",),
    "unlink /C/foo, create with bytes /A/big 1M": ("unlink /C/foo", "create with bytes /A/big 1M"),
    "rename /B/bar -> /B/foo, creat /A/new": (
        "rename /B/bar -> /B/foo (over the held file)",
        "creat /A/new",
    ),
    "truncate /C/foo 100 (EBUSY), unlink /B/foo": ("truncate /C/foo 100", "unlink /B/foo"),
    "replace with bytes /B/foo 9000": ("replace with bytes /B/foo 9000",),
    "unlink names /B": ("unlink names /B",),
}


@pytest.mark.parametrize("name", sorted(HELD_CASES))
def test_a_file_a_follower_holds_survives_every_crash_state(held_pool, name):
    trees = _every_crash_state_is_before_or_after(held_pool, "pmem", name, HELD_CASES[name])
    assert [k for k in trees[-1] if k.startswith("#held")], "no held file outlived its names"


@pytest.mark.parametrize("model,name", CASES)
def test_every_crash_state_is_before_or_after(base_pool, model, name):
    _every_crash_state_is_before_or_after(base_pool, model, name)


GROWTH_CASES = [
    (model, name)
    for model in ("pmem", "msync", "lazy", "lazy-sync")
    for name in ("creat /A/new", "mkdir /B/new", "symlink /C/sym", "create with bytes /D/cw")
]


@pytest.mark.parametrize("model,name", GROWTH_CASES)
def test_a_create_that_grows_the_inode_table_is_before_or_after(full_table_pool, model, name):
    """Format v4: the create finds every slot in use and moves the table's
    limit (zeroed slots, then the header in its record)."""
    _every_crash_state_is_before_or_after(full_table_pool, model, name)


@pytest.fixture(scope="module")
def scarce_pool(tmp_path_factory):
    yield from _base_pool(full_table=False, scarce=True)


CONSOLIDATION_CASES = [
    (model, name) for model in ("pmem", "msync", "lazy") for name in sorted(SCARCE_WORKLOADS)
]


@pytest.mark.parametrize("model,name", CONSOLIDATION_CASES)
def test_a_consolidation_is_before_or_after(scarce_pool, model, name):
    """A delete on a pool short of whole chunks moves a trimmed tail out of
    its chunk, or a fragmented window into one, in a change of its own: a
    crash anywhere leaves the tree before or after the step, the moved
    bytes whole."""
    if model == "pmem":
        _consolidation_happens(scarce_pool, name)
    _every_crash_state_is_before_or_after(scarce_pool, model, name)


def _consolidation_happens(pool, name: str) -> None:
    """The workload does move what it is named for (on a plain copy)."""
    path, image, _lock = pool
    copy = path + ".plain"
    with open(copy, "wb") as f:
        f.write(image)
    try:
        with daxfs.mount(copy) as fs:
            tail = fs.iomap("/T/big", 2 << 20, 4096)[0].device_offset
            for _op, step in _steps((name,)):
                step(fs)
            if "tail" in name:
                assert fs.iomap("/T/big", 2 << 20, 4096)[0].device_offset != tail
            else:
                assert [e.device_offset % L.CHUNK for e in fs.iomap("/T/new")] == [0, 0]
    finally:
        os.unlink(copy)


def _every_crash_state_is_before_or_after(pool, model: str, name: str, ops=None) -> None:
    path, image, lock = pool
    lazy = model == "lazy"  # (lazy-sync: durable on return, as msync)
    checker = _Checker(lock, name, len(image), model.startswith("lazy"))
    checker.scratch.build(CrashState(CrashPoint(-1, image), []))  # the image as it was
    before = _recovered_snapshot(checker.scratch, lock)
    base, log, states, mixed, journal, trims = _record(
        path + ".w", image, ops or SEQUENCES.get(name) or CHECKED.get(name, (name,)), model
    )
    os.unlink(path + ".w")
    trees = [_blur(t, mixed) for t in [before, *states]]
    ends = [i for i, ev in enumerate(log) if ev[0] == "end"]
    commits = group_commits(log)
    if lazy:
        assert commits, f"{name}: no group commit in lazy mode, not even at close"
    STATS["workloads"] += 1
    for point in model_points(model.removesuffix("-sync"), base, log):
        STATS["points"] += 1
        returned = sum(1 for e in ends if e < point.index)
        # pmem and msync: an operation is durable when it returns; lazy: when
        # a group commit covering it completed.
        durable = steps_covered(commits, point.index) if lazy else returned
        allowed = trees[durable : returned + 2]  # up to the step under way
        subsets = LAZY_RANDOM_SUBSETS if lazy else RANDOM_SUBSETS
        if not point.pages and EXHAUSTIVE_UNITS < len(point.inflight) <= EXHAUSTIVE:
            subsets = SAMPLED_WHOLE  # (what make crash-full takes whole)
        for state in crash_states(point, checker.rng, subsets, EXHAUSTIVE_UNITS):
            got = _blur(checker.snapshot(state), mixed)
            assert got in allowed, (
                f"{name} ({model}): a crash at event {point.index}, after {returned} "
                f"of {len(states)} steps returned and {durable} were durable, left a tree "
                f"that is none of steps {durable}..{min(returned + 1, len(states))} "
                f"(it is {_which(got, trees)})"
            )
    if model == "pmem":
        _check_discipline(name, log, journal)
        _check_fences_per_operation(name, log, trims)
    return trees


def _check_fences_per_operation(name: str, log: list[tuple], own: list[tuple[int, int]]) -> None:
    # Issue 14: on pmem each operation stays durable on return with at most
    # two fences (its new data, then its record).  A tail trim at a close, a
    # consolidation and an absorb are changes of their own
    # (_own_changes_marked), each counted apart, in the innermost span (a
    # trim consolidates at its end): at most two each too.
    fences, own_fences, op = 0, {}, None
    for i, ev in enumerate(log):
        if ev[0] == "begin":
            fences, op = 0, ev[1]
        elif ev[0] == "fence":
            inside = [s for s in own if s[0] <= i < s[1]]
            if not inside:
                fences += 1
                continue
            span = max(inside, key=lambda s: (s[0], -s[1]))  # (the innermost: latest, shortest)
            own_fences[span] = own_fences.get(span, 0) + 1
            assert own_fences[span] <= 2, (
                f"{name}: a change of {op}'s own took {own_fences[span]} fences"
            )
        elif ev[0] == "end" and not op.startswith("map "):  # (its persist is the user's)
            assert fences <= 2, f"{name}: {op} took {fences} fences"
            STATS["max_fences_per_op"] = max(STATS.get("max_fences_per_op", 0), fences)


def _which(tree: dict, trees: list[dict]) -> str:
    """For a failure message: which step's tree ``tree`` is, if any."""
    found = [str(i) for i, t in enumerate(trees) if t == tree]
    return "that after step " + " or ".join(found) if found else "no step's tree"


def _check_discipline(name: str, log: list[tuple], journal: tuple[int, int]) -> None:
    # Every pmem operation promises durability on return: what it stored is
    # flushed and fenced, or covered by a durable journal record.
    d = check_discipline(log, journal)
    assert not d.unflushed, f"{name}: returned with stores not durable: {d.unflushed[:5]}"
    assert not d.misordered, f"{name}: {d.misordered[:5]}"
    # And no wasted work: each flush covers a pending store, each fence a flush.
    assert not d.redundant_flushes, f"{name}: redundant flushes {d.redundant_flushes[:5]}"
    assert not d.redundant_fences, f"{name}: fences with nothing to order {d.redundant_fences}"
    STATS["flushes"] += d.flushes
    STATS["fences"] += d.fences
    STATS["redundant_flushes"] += len(d.redundant_flushes)
    STATS["redundant_fences"] += len(d.redundant_fences)


# The pace of a slower machine: longer than any pause or look a timer sets
# (logical.HOLD_PAUSE), short of those _timers_held_off puts off.
SLOW_STEP = 0.003


class _Slowed:
    """A mount each of whose calls begins SLOW_STEP later."""

    def __init__(self, fs) -> None:
        self._fs = fs

    def __getattr__(self, name: str):
        attr = getattr(self._fs, name)
        if not callable(attr):
            return attr

        def slowed(*args, **kwargs):
            time.sleep(SLOW_STEP)
            return attr(*args, **kwargs)

        return slowed


def _layout(path: str) -> dict[str, list]:
    """Where each name's blocks are, in the pool at ``path``."""
    with daxfs.mount(path) as fs:
        return {p: fs._inode(entry[1]).extents for p, entry in _walk_tree(fs).items()}


def test_the_base_pool_is_laid_out_alike_however_fast_its_calls_run():
    """The pool every recording starts from: built at full speed and with
    every call slowed, its files land in the same blocks (else its images,
    and the crash-state totals, would depend on the machine)."""
    paths = [f"/dev/shm/daxfs-crash-pace-{i}-{os.getpid()}.pool" for i in range(2)]
    try:
        for path, slow in zip(paths, (False, True), strict=True):
            with _timers_held_off():
                daxfs.mkfs(path, POOL, inodes=256)
                with daxfs.mount(path) as fs:
                    _setup(_Slowed(fs) if slow else fs)
        assert _layout(paths[0]) == _layout(paths[1])
    finally:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)


def test_crash_state_totals_are_reported():
    # Runs last in this module (pytest keeps file order): the totals for the README.
    if STATS["workloads"] < len(CASES):
        pytest.skip("run the whole module to count crash states")
    assert STATS["states"] > 0
    print(f"\n{STATS}")
