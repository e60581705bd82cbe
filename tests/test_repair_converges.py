"""fsck --repair converges on whole-structure damage to the namespace.

Each case builds a small pool through the daxfs API, then rewrites
directory blocks and inode slots in the pool file with the format's own
pack functions (valid checksums: a well-formed pool whose namespace is
broken) -- cycles of directories, directories named twice, names of the
root, a lost+found that already holds the names repair would pick or is no
directory at all -- and demands:

  * check() reports errors;
  * check(repair=True) leaves nothing remaining, and a second check() finds
    nothing at all (so `daxfs fsck --repair` exits 1, never 4);
  * the pool mounts, every directory is met once by a walk, and every file
    and symlink that existed before the damage reads back its content
    (found by inode number, wherever repair put it);
  * a new file can be created, and read back, in every directory.

Cases then assert where repair put things.  Every check runs under a
generous hang limit.
"""

from __future__ import annotations

import itertools
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

import daxfs
from daxfs.inode import INODE_DTYPE, InodeTable
from daxfs.layout import (
    BLOCK,
    DIRENT_HEAD,
    INODE_SIZE,
    InodeRecord,
    dirblock_seal,
    ftype_of,
    pack_inode,
    parse_dirblock,
    superblock_at,
)
from daxfs.region import Region

POOL_SIZE = "8M"
HANG_LIMIT = 120  # seconds for a whole check/repair/check round: a hang, not a speed test
ROOT = 1
DAXFS = os.path.join(os.path.dirname(sys.executable), "daxfs")


# --------------------------------------------------------------------------
# building pools, then damaging them in the file
# --------------------------------------------------------------------------
@dataclass
class Pool:
    path: str
    ino: dict[str, int] = field(default_factory=dict)  # path -> inode, before the damage
    mode: dict[str, int] = field(default_factory=dict)  # path -> st_mode
    blocks: dict[str, list[int]] = field(default_factory=dict)  # directory -> its blocks
    content: dict[int, bytes] = field(default_factory=dict)  # inode -> data or link target


def make_pool(where, build: Callable[[daxfs.FileSystem], None], size: str = POOL_SIZE) -> Pool:
    """A pool made by ``build(fs)``, with every path's inode, every directory's
    first block and every file's content recorded."""
    pool = Pool(os.path.join(where, "victim.pool"))
    daxfs.mkfs(pool.path, size)
    with daxfs.mount(pool.path) as fs:
        build(fs)
        dirs, _files = walk(fs)
        for d in dirs:
            _record(fs, pool, d)
            for name in fs.listdir(d):
                _record(fs, pool, d.rstrip("/") + "/" + name)
    return pool


def _record(fs, pool: Pool, p: str) -> None:
    st = fs.lstat(p)
    pool.ino[p], pool.mode[p] = st.st_ino, st.st_mode
    if stat.S_ISDIR(st.st_mode):
        pool.blocks[p] = [
            dev
            for e in fs.iomap(p)
            for dev in range(e.device_offset, e.device_offset + e.length, BLOCK)
        ]
    else:
        pool.content[st.st_ino] = _content(fs, p, st)


def _content(fs, p: str, st) -> bytes:
    if stat.S_ISLNK(st.st_mode):
        return b"->" + fs.readlink(p).encode()
    with fs.open(p, "rb") as f:
        return f.read()


def walk(fs, top: str = "/") -> tuple[list[str], dict[int, bytes]]:
    """(every directory, {inode: content} of every file and symlink), by a
    loop; a directory met twice fails the test."""
    dirs, files, seen, todo = [], {}, {fs.lstat(top).st_ino}, [top]
    while todo:
        d = todo.pop()
        dirs.append(d)
        for name in fs.listdir(d):
            p = d.rstrip("/") + "/" + name
            st = fs.lstat(p)
            if stat.S_ISDIR(st.st_mode):
                assert st.st_ino not in seen, f"directory {st.st_ino} met twice, again at {p}"
                seen.add(st.st_ino)
                todo.append(p)
            else:
                files.setdefault(st.st_ino, _content(fs, p, st))
    return dirs, files


def edit_block(pool: Pool, directory: str, edit, block: int = 0) -> None:
    """Rewrite a block of ``directory``: ``edit(image, used, entries)`` changes
    the image and returns the new (used, live); the block is resealed."""
    dev, dir_ino = pool.blocks[directory][block], pool.ino[directory]
    with open(pool.path, "r+b") as f:
        f.seek(dev)
        image = bytearray(f.read(BLOCK))
        used, entries = parse_dirblock(image, dev, dir_ino)
        used, live = edit(image, used, entries)
        dirblock_seal(image, dir_ino, used, live)
        f.seek(dev)
        f.write(image)


def add_entry(pool: Pool, directory: str, name: str, target: str | int) -> None:
    """Give ``target`` (a recorded path, or the root's number) one more name."""
    ino = target if isinstance(target, int) else pool.ino[target]
    mode = pool.mode["/" if ino == ROOT else target]
    raw = name.encode()

    def edit(image, used, entries):
        DIRENT_HEAD.pack_into(image, used, ino, len(raw), ftype_of(mode))
        image[used + DIRENT_HEAD.size : used + DIRENT_HEAD.size + len(raw)] = raw
        return used + DIRENT_HEAD.size + len(raw), len(entries) + 1

    edit_block(pool, directory, edit)


def drop_entry(pool: Pool, directory: str, name: str) -> None:
    """Tombstone the entry ``name`` of ``directory``."""

    def edit(image, used, entries):
        pos = next(p for p, _ino, _t, raw in entries if raw == name.encode())
        image[pos : pos + 8] = bytes(8)
        return used, len(entries) - 1

    edit_block(pool, directory, edit)


def empty_directory(pool: Pool, directory: str) -> None:
    """Tombstone every entry of ``directory``."""

    def edit(image, used, entries):
        for pos, _ino, _t, _raw in entries:
            image[pos : pos + 8] = bytes(8)
        return used, 0

    for b in range(len(pool.blocks[directory])):
        edit_block(pool, directory, edit, b)


def set_inode(pool: Pool, path: str, **changes: int) -> None:
    """Rewrite fields of the inode of ``path`` in its slot (checksummed)."""
    region = Region(pool.path)
    try:
        table = InodeTable(region, superblock_at(region, 0))
        inode = table._load(pool.ino[path])
        for name, value in changes.items():
            setattr(inode, name, value)
        head = inode.ext_blocks[0] if inode.ext_blocks else 0
        off = table.slot_off(inode.ino)
        region.store(off, pack_inode(inode.record(head)))
        region.persist(off, INODE_SIZE)
    finally:
        region.close()


# --------------------------------------------------------------------------
# the demands every case makes
# --------------------------------------------------------------------------
class Hang(BaseException):
    pass


def _on_alarm(_sig, _frame):
    raise Hang(f"no answer within {HANG_LIMIT} s")


def repaired(pool: Pool, room: bool = True) -> None:
    """Damage is reported, repair leaves nothing, and the pool works (takes a
    new file in every directory, unless it has no ``room``)."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG_LIMIT)
    try:
        found = daxfs.check(pool.path)
        assert not found.ok and found.errors
        fixed = daxfs.check(pool.path, repair=True)
        assert fixed.ok and not fixed.remaining, (fixed.remaining, fixed.repaired)
        again = daxfs.check(pool.path)
        assert again.ok and not again.errors, (again.errors, fixed.repaired)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    with daxfs.mount(pool.path) as fs:
        dirs, files = walk(fs)
        for ino, data in pool.content.items():
            assert files.get(ino) == data, f"inode {ino} lost or changed by repair"
        for d in dirs if room else []:
            new = d.rstrip("/") + "/made-after-repair"
            with fs.open(new, "xb") as f:
                f.write(d.encode())
            with fs.open(new, "rb") as f:
                assert f.read() == d.encode()
    assert daxfs.check(pool.path).ok


def where(fs, ino: int) -> list[str]:
    """Every path naming ``ino`` now."""
    out, todo = [], ["/"]
    while todo:
        d = todo.pop()
        for name in fs.listdir(d):
            p = d.rstrip("/") + "/" + name
            st = fs.lstat(p)
            if st.st_ino == ino:
                out.append(p)
            if stat.S_ISDIR(st.st_mode):
                todo.append(p)
    return sorted(out)


def write(fs, path: str, data: bytes) -> None:
    with fs.open(path, "wb") as f:
        f.write(data)


# --------------------------------------------------------------------------
# lost+found
# --------------------------------------------------------------------------
def _victim_and_its_names(fs) -> None:
    fs.mkdir("/lost+found")
    write(fs, "/victim", b"the unreachable file")
    v = fs.stat("/victim").st_ino
    write(fs, f"/lost+found/#{v}", b"adopted earlier, same number")
    write(fs, f"/lost+found/#{v}.1", b"and its first alternative")


def test_lost_found_names_never_collide(shm_dir):
    pool = make_pool(shm_dir, _victim_and_its_names)
    v = pool.ino["/victim"]
    drop_entry(pool, "/", "victim")
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert where(fs, v) == [f"/lost+found/#{v}.2"]
        assert fs.open(f"/lost+found/#{v}", "rb").read() == b"adopted earlier, same number"
        assert sorted(fs.listdir("/lost+found")) == sorted(
            [f"#{v}", f"#{v}.1", f"#{v}.2", "made-after-repair"]
        )


def test_fsck_cli_repairs_a_taken_lost_found_name(shm_dir):
    # The report: fsck --repair added a second "#8", exited 4, and
    # `ls` of lost+found failed afterwards.
    pool = make_pool(shm_dir, _victim_and_its_names)
    drop_entry(pool, "/", "victim")
    run = subprocess.run([DAXFS, "fsck", "--repair", pool.path], capture_output=True, text=True)
    assert run.returncode == 1 and "all fixed" in run.stdout, run.stdout + run.stderr
    run = subprocess.run([DAXFS, "fsck", pool.path], capture_output=True, text=True)
    assert run.returncode == 0 and "clean" in run.stdout, run.stdout + run.stderr
    run = subprocess.run([DAXFS, "ls", f"{pool.path}:/lost+found"], capture_output=True, text=True)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert f"#{pool.ino['/victim']}.2" in run.stdout


def _lost_found_a_file(fs) -> None:
    write(fs, "/lost+found", b"a file that happens to be called lost+found")
    write(fs, "/victim", b"the unreachable file")


def _lost_found_and_next_files(fs) -> None:
    _lost_found_a_file(fs)
    write(fs, "/lost+found.1", b"and so is its first alternative")


def _lost_found_a_symlink(fs) -> None:
    fs.mkdir("/target")
    write(fs, "/target/t", b"a file in the symlink's target")
    fs.symlink("/target", "/lost+found")
    write(fs, "/victim", b"the unreachable file")


@pytest.mark.parametrize(
    "build,used",
    [
        (_lost_found_a_file, "/lost+found.1"),
        (_lost_found_and_next_files, "/lost+found.2"),
        (_lost_found_a_symlink, "/lost+found.1"),
    ],
    ids=["file", "file-and-next", "symlink"],
)
def test_lost_found_that_is_no_directory_is_left_alone(shm_dir, build, used):
    pool = make_pool(shm_dir, build)
    v = pool.ino["/victim"]
    drop_entry(pool, "/", "victim")
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert where(fs, v) == [f"{used}/#{v}"]
        assert fs.lstat("/lost+found").st_mode == pool.mode["/lost+found"]
        if stat.S_ISLNK(pool.mode["/lost+found"]):
            assert fs.readlink("/lost+found") == "/target"
            assert sorted(fs.listdir("/target")) == ["made-after-repair", "t"]


# --------------------------------------------------------------------------
# unreachable cycles
# --------------------------------------------------------------------------
def _cycle_dirs(n: int):
    def build(fs) -> None:
        write(fs, "/keep", b"hard-linked into the cycle")
        for i in range(n):
            fs.makedirs(f"/c{i}/sub")
            write(fs, f"/c{i}/file", b"in c%d" % i)
            write(fs, f"/c{i}/sub/deep", b"deep in c%d" % i)
        fs.symlink("/keep", "/c0/link")
        fs.link("/keep", f"/c{n - 1}/keep")

    return build


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("parents", ["along-the-cycle", "stale"])
def test_unreachable_cycle_is_adopted(shm_dir, n, parents):
    """c0 -> c1 -> ... -> c0 by names, none reachable from the root."""
    pool = make_pool(shm_dir, _cycle_dirs(n))
    cs = [f"/c{i}" for i in range(n)]
    for i, c in enumerate(cs):
        drop_entry(pool, "/", c[1:])
        add_entry(pool, c, "next", cs[(i + 1) % n])
        if parents == "along-the-cycle":
            set_inode(pool, cs[(i + 1) % n], parent=pool.ino[c])
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        tops = [p for p in fs.listdir("/lost+found") if p != "made-after-repair"]
        assert len(tops) == 1, tops  # one member adopted, the others below it
        for c in cs:
            (p,) = where(fs, pool.ino[c])
            assert p.startswith("/lost+found/")
        assert fs.stat("/keep").st_nlink == 2


@pytest.mark.parametrize("reachable", [True, False])
def test_directory_containing_itself(shm_dir, reachable):
    pool = make_pool(shm_dir, lambda fs: (fs.mkdir("/d"), write(fs, "/d/f", b"in d")))
    add_entry(pool, "/d", "me", "/d")
    if not reachable:  # its only other name gone, and it says it is its own parent
        drop_entry(pool, "/", "d")
        set_inode(pool, "/d", parent=pool.ino["/d"])
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        (p,) = where(fs, pool.ino["/d"])
        assert p == "/d" if reachable else p.startswith("/lost+found/")
        assert "me" not in fs.listdir(p)


@pytest.mark.parametrize("parent_field", ["true", "points-into-the-loop"])
def test_directory_containing_its_parent(shm_dir, parent_field):
    def build(fs):
        fs.makedirs("/a/b")
        write(fs, "/a/f", b"in a")
        write(fs, "/a/b/f", b"in b")

    pool = make_pool(shm_dir, build)
    add_entry(pool, "/a/b", "up", "/a")
    if parent_field != "true":  # /a claims /a/b as its parent: the name in b is kept
        set_inode(pool, "/a", parent=pool.ino["/a/b"])
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        (a,) = where(fs, pool.ino["/a"])
        assert where(fs, pool.ino["/a/b"]) == [a + "/b"]
        if parent_field == "true":
            assert a == "/a"


def test_entry_naming_the_root(shm_dir):
    pool = make_pool(shm_dir, lambda fs: (fs.mkdir("/s"), write(fs, "/s/f", b"in s")))
    add_entry(pool, "/s", "root", ROOT)
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert sorted(fs.listdir("/s")) == ["f", "made-after-repair"]


# --------------------------------------------------------------------------
# directories named twice
# --------------------------------------------------------------------------
def test_directory_named_twice_in_one_parent(shm_dir):
    pool = make_pool(shm_dir, lambda fs: (fs.makedirs("/p/c"), write(fs, "/p/c/f", b"in c")))
    add_entry(pool, "/p", "c2", "/p/c")
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert where(fs, pool.ino["/p/c"]) == ["/p/c"]


def test_directory_named_in_two_parents_keeps_the_one_its_parent_field_names(shm_dir):
    def build(fs):
        fs.mkdir("/x")  # first, so its entries come first in (directory, block) order
        write(fs, "/x/f", b"in x")
        fs.makedirs("/y/c")
        write(fs, "/y/c/f", b"in c")

    pool = make_pool(shm_dir, build)
    assert pool.ino["/x"] < pool.ino["/y"]
    add_entry(pool, "/x", "c2", "/y/c")
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert where(fs, pool.ino["/y/c"]) == ["/y/c"]
        assert sorted(fs.listdir("/x")) == ["f", "made-after-repair"]


def test_forty_directories_each_naming_the_next_twice(shm_dir):
    """2^40 paths from the root to the bottom file."""
    chain = ["/n" + "/a" * i for i in range(41)]

    def build(fs):
        fs.makedirs(chain[-1])
        write(fs, chain[-1] + "/bottom", b"at the bottom")

    pool = make_pool(shm_dir, build)
    for upper, lower in itertools.pairwise(chain):
        add_entry(pool, upper, "b", lower)
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert where(fs, pool.ino[chain[-1]]) == [chain[-1]]


# --------------------------------------------------------------------------
# nameless inodes
# --------------------------------------------------------------------------
def test_nameless_directory_with_no_links_but_entries_is_adopted(shm_dir):
    # nlink 0 and no name is what a directory removed while open looks like,
    # but that one is empty: one still holding entries is damage, and what it
    # holds must not be freed with it.
    pool = make_pool(shm_dir, lambda fs: (fs.mkdir("/d"), write(fs, "/d/f", b"in d")))
    drop_entry(pool, "/", "d")
    set_inode(pool, "/d", nlink=0)
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        (p,) = where(fs, pool.ino["/d"])
        assert p.startswith("/lost+found/")


def test_many_adoptions_do_not_overflow_the_journal(shm_dir):
    # 2,000 nameless files: one transaction adopting all of them needs more
    # than the 512 KiB journal of a 32 MiB pool.
    def build(fs):
        fs.mkdir("/d")
        for i in range(2000):
            write(fs, f"/d/f{i}", b"%d" % i)

    pool = make_pool(shm_dir, build, size="32M")
    empty_directory(pool, "/d")
    repaired(pool)
    with daxfs.mount(pool.path) as fs:
        assert len(fs.listdir("/lost+found")) == 2001


def test_no_inode_left_for_lost_found_adopts_into_the_root(shm_dir):
    # As e2fsck offers: with no inode to make lost+found, the root takes them.
    pool = make_pool(shm_dir, lambda fs: write(fs, "/victim", b"the unreachable file"))
    drop_entry(pool, "/", "victim")
    region = Region(pool.path)
    try:
        sb = superblock_at(region, 0)
        table = np.frombuffer(
            region.buf, dtype=INODE_DTYPE, count=sb.inode_count, offset=sb.itable_off
        )
        free = np.flatnonzero(table["magic"][1:] == 0) + 1
        del table
        for ino in free.tolist():  # every free slot: a nameless empty file
            record = InodeRecord(ino, 0, stat.S_IFREG | 0o644, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, [])
            region.store(sb.itable_off + ino * INODE_SIZE, pack_inode(record))
        region.persist(sb.itable_off, sb.inode_count * INODE_SIZE)
    finally:
        region.close()
    repaired(pool, room=False)
    with daxfs.mount(pool.path) as fs:
        names = fs.listdir("/")
        assert "lost+found" not in names
        assert sorted(names) == sorted([f"#{pool.ino['/victim']}"] + [f"#{i}" for i in free])
