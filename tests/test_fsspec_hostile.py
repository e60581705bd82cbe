"""daxfs through fsspec on nasty trees and hostile pools (issue 12): every walk
ends, symlinks are entries, not detours, errors surface, and get writes only
below its destination.

Pools are real (daxfs.mkfs and mount); damage is done to the pool file the
way a disk or a hostile sender would do it (a flipped byte, a directory entry
rewritten with a valid checksum).  Destinations are real local directories,
a real small tmpfs that fills up, and a real case-folding FUSE mount.  Walks
that the old code ran forever run under a generous hang limit."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import resource
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import daxfs
from conftest import casefold_mount, small_tmpfs
from daxfs.fsspec import DaxFileSystem
from daxfs.layout import DIRENT_HEAD, dirblock_seal, parse_dirblock

MiB = 1 << 20
DEPTH = 1500  # deeper than Python's recursion limit (1000)
HANG_LIMIT = 120  # seconds: a generous bound, not a speed claim


@pytest.fixture
def pool(make_pool) -> str:
    return make_pool(size=64 * MiB, inodes=8192)


@pytest.fixture
def dfs(pool) -> Iterator[DaxFileSystem]:
    f = DaxFileSystem(pool=pool)
    try:
        yield f
    finally:
        f.unmount()


class Hung(BaseException):
    """A block ran past its hang limit.  Not an OSError, nor an Exception: a
    walk that swallows errors (fsspec's on_error="omit") must not swallow it."""


@contextlib.contextmanager
def hang_limit(seconds: int = HANG_LIMIT) -> Iterator[None]:
    """Fail, instead of hanging the suite, if the block runs past ``seconds``
    (then again every second, should something catch it)."""

    def expire(signum, frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def digest(root: Path) -> str:
    """A hash of everything under ``root``: names, types, link targets, bytes
    (walked with a stack, symlinks not followed)."""
    h = hashlib.sha256()
    stack = [root]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        h.update(f"{path.relative_to(root)}\0{stat.S_IFMT(st.st_mode)}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            h.update(path.read_bytes())
        elif stat.S_ISDIR(st.st_mode):
            stack.extend(sorted(path.iterdir()))
    return h.hexdigest()


@pytest.fixture
def deep_local(tmp_path) -> Iterator[Path]:
    """A local path for a deep copy, removed afterwards by rm(1), which walks
    with directory descriptors (shutil.rmtree recurses on Python 3.11, so
    pytest's own clean-up of tmp_path would fail on a 1,500-level tree)."""
    path = tmp_path / "copy"
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", "--", str(path)], check=True)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A host directory a copy must never touch: a file and a directory to bait."""
    d = tmp_path / "outside"
    (d / "baitdir").mkdir(parents=True)
    (d / "bait.txt").write_bytes(b"must stay")
    (d / "baitdir" / "inner.txt").write_bytes(b"must stay too")
    return d


def make_chain(fs: daxfs.FileSystem, top: str, levels: int) -> str:
    """``levels`` nested directories named "d" under ``top``, a file at the
    bottom; returns the bottom directory."""
    fs.makedirs(top, exist_ok=True)
    path = top.rstrip("/")
    for _ in range(levels):
        path += "/d"
        fs.mkdir(path)
    with fs.open(path + "/f", "wb") as f:
        f.write(b"bottom")
    return path


def damage_directory(pool: str, path: str) -> None:
    """Flip a byte in the block of directory ``path`` (its checksum then fails)."""
    with daxfs.mount(pool) as fs:
        block = fs.iomap(path)[0].device_offset
    with open(pool, "r+b") as f:
        f.seek(block + 100)
        byte = f.read(1)[0]
        f.seek(block + 100)
        f.write(bytes([byte ^ 0xFF]))


def retarget_entry(pool: str, directory: str, name: str, target: str) -> None:
    """Rewrite the entry ``name`` of ``directory`` to name the directory
    ``target`` (its block resealed: the checksum is valid, the tree is not)."""
    with daxfs.mount(pool) as fs:
        block = fs.iomap(directory)[0].device_offset
        dir_ino, target_ino = fs.stat(directory).st_ino, fs.stat(target).st_ino
    with open(pool, "r+b") as f:
        f.seek(block)
        image = bytearray(f.read(4096))
        used, entries = parse_dirblock(image, block, dir_ino)
        pos = next(pos for pos, _ino, _ftype, raw in entries if raw == name.encode())
        _, length, ftype = DIRENT_HEAD.unpack_from(image, pos)
        DIRENT_HEAD.pack_into(image, pos, target_ino, length, ftype)
        dirblock_seal(image, dir_ino, used, len(entries))
        f.seek(block)
        f.write(image)


# ---------------------------------------------------------------------------
# a tree deeper than Python's recursion limit
# ---------------------------------------------------------------------------
def test_a_1500_level_tree_through_every_walk(dfs, deep_local):
    bottom = make_chain(dfs.dax, "/t", DEPTH)
    dirs = ["/t"] + ["/t" + "/d" * n for n in range(1, DEPTH + 1)]
    with hang_limit():
        assert dfs.find("/t", withdirs=True) == sorted(dirs + [bottom + "/f"])
        walked = list(dfs.walk("/t"))
        assert [w[0] for w in walked] == dirs  # depth first, top down
        assert walked[-1] == (bottom, [], ["f"])
        assert [w[0] for w in dfs.walk("/t", topdown=False)] == dirs[::-1]
        assert dfs.du("/t") == len(b"bottom")

        local = deep_local
        dfs.get("/t", str(local), recursive=True)
        assert (local / ("d/" * DEPTH) / "f").read_bytes() == b"bottom"

        dfs.put(str(local), "/back", recursive=True)
        assert dfs.cat_file("/back" + "/d" * DEPTH + "/f") == b"bottom"

        dfs.makedirs("/m" * DEPTH)
        assert dfs.isdir("/m" * DEPTH)

        dfs.rm("/t", recursive=True)
    assert dfs.ls("/", detail=False) == ["/back", "/m"]


# ---------------------------------------------------------------------------
# symlinks are entries
# ---------------------------------------------------------------------------
@pytest.fixture
def links_to_root(dfs) -> DaxFileSystem:
    """Two symlinks to "/" at two levels (fsck calls such a pool clean)."""
    dfs.pipe_file("/t/sub/f", b"hello")
    dfs.dax.symlink("/", "/t/root1")
    dfs.dax.symlink("/", "/t/sub/root2")
    return dfs


def test_ls_describes_symlinks_without_following_them(links_to_root):
    dfs = links_to_root
    dfs.dax.symlink("/t/sub/f", "/t/to-file")
    entries = {e["name"]: e for e in dfs.ls("/t")}
    for name in ("/t/root1", "/t/to-file"):
        assert entries[name]["islink"] and entries[name]["type"] == "other"
        assert entries[name]["ino"] == dfs.dax.lstat(name).st_ino  # the link's own
    assert entries["/t/root1"]["destination"] == "/"
    assert entries["/t/to-file"]["size"] == 5  # the target's size, as LocalFileSystem
    assert entries["/t/sub"]["type"] == "directory" and not entries["/t/sub"]["islink"]
    # info(path) follows, as LocalFileSystem.info does.
    assert dfs.info("/t/root1")["type"] == "directory" and dfs.info("/t/root1")["islink"]
    assert dfs.ls("/t/root1", detail=False) == ["/t/root1/t"]  # ls of a path follows it


def test_two_symlinks_to_the_root_are_walked_once(links_to_root, tmp_path):
    dfs = links_to_root
    with hang_limit():
        assert dfs.find("/", withdirs=True) == [
            "/", "/t", "/t/root1", "/t/sub", "/t/sub/f", "/t/sub/root2",
        ]  # fmt: skip
        assert list(dfs.walk("/")) == [
            ("/", ["t"], []),
            ("/t", ["sub"], ["root1"]),
            ("/t/sub", [], ["f", "root2"]),
        ]
        dfs.get("/", str(tmp_path / "copy"), recursive=True)
    # A symlink to a directory is copied as what it resolves to, a directory,
    # but its content is not walked; no symlink is made on the host.
    assert (tmp_path / "copy/t/sub/f").read_bytes() == b"hello"
    for link in ("t/root1", "t/sub/root2"):
        path = tmp_path / "copy" / link
        assert path.is_dir() and not path.is_symlink() and not list(path.iterdir())


def test_a_symlink_loop_is_listed_and_get_says_where_it_failed(dfs, tmp_path):
    dfs.pipe_file("/t/a-file", b"a")
    dfs.dax.symlink("/t/loop2", "/t/loop1")
    dfs.dax.symlink("/t/loop1", "/t/loop2")
    with hang_limit():
        assert dfs.find("/t") == ["/t/a-file", "/t/loop1", "/t/loop2"]
        assert [e["type"] for e in dfs.ls("/t")] == ["file", "other", "other"]
        with pytest.raises(OSError) as raised:
            dfs.get("/t", str(tmp_path / "copy"), recursive=True)
    assert raised.value.errno == errno.ELOOP
    assert "/t/loop1" in str(raised.value)


# ---------------------------------------------------------------------------
# damaged pools: errors surface
# ---------------------------------------------------------------------------
def test_a_damaged_directory_is_an_error_not_a_gap(pool, tmp_path):
    with daxfs.mount(pool) as fs:
        fs.makedirs("/d")
        fs.makedirs("/ok")
        for path in ("/d/x", "/ok/y"):
            with fs.open(path, "wb") as f:
                f.write(b"data")
    damage_directory(pool, "/d")
    dfs = DaxFileSystem(pool=pool)
    try:
        with pytest.raises(daxfs.CorruptionError) as raised:
            list(dfs.walk("/"))
        assert raised.value.errno == errno.EUCLEAN and "/d" in str(raised.value)
        with pytest.raises(daxfs.CorruptionError):
            dfs.find("/")
        with pytest.raises(daxfs.CorruptionError):
            dfs.get("/", str(tmp_path / "copy"), recursive=True)
        with pytest.raises(daxfs.CorruptionError):
            dfs.get("/d", str(tmp_path / "copy-d"), recursive=True)
        # Asked for, fsspec's meanings: omit skips it, a callable hears of it.
        assert dfs.find("/", on_error="omit") == ["/ok/y"]
        heard: list[OSError] = []
        assert dfs.find("/", on_error=heard.append) == ["/ok/y"]
        assert [e.errno for e in heard] == [errno.EUCLEAN]
    finally:
        dfs.unmount()


def test_a_directory_inside_its_own_subtree_stops_every_walk(pool, tmp_path):
    with daxfs.mount(pool) as fs:
        fs.makedirs("/a/b/c")
        with fs.open("/a/b/file", "wb") as f:
            f.write(b"x")
    retarget_entry(pool, "/a/b", "c", "/a")  # /a/b/c is /a again: a cycle
    dfs = DaxFileSystem(pool=pool)
    try:
        with hang_limit():
            # Omitted, the walk goes on past it and never enters it twice.
            assert set(dfs.find("/", on_error="omit")) <= {"/a/b/file"}
            for walk in (
                lambda: list(dfs.walk("/")),
                lambda: list(dfs.walk("/", topdown=False)),
                lambda: dfs.find("/"),
                lambda: dfs.du("/"),
                lambda: dfs.get("/a", str(tmp_path / "copy"), recursive=True),
                lambda: dfs.rm("/a", recursive=True),
            ):
                with pytest.raises(daxfs.CorruptionError) as raised:
                    walk()
                assert "/a/b" in str(raised.value)
    finally:
        dfs.unmount()


def test_a_directory_named_twice_is_met_once(pool):
    with daxfs.mount(pool) as fs:
        fs.makedirs("/x/shared/deeper")
        fs.makedirs("/y/other")
    retarget_entry(pool, "/y", "other", "/x/shared")  # two paths to one directory
    dfs = DaxFileSystem(pool=pool)
    try:
        with hang_limit(), pytest.raises(daxfs.CorruptionError):
            dfs.find("/", withdirs=True)
    finally:
        dfs.unmount()


# ---------------------------------------------------------------------------
# the walk's own contract
# ---------------------------------------------------------------------------
def test_walk_prunes_limits_depth_and_details_as_fsspec(dfs):
    for path in ("/w/a/1/f", "/w/a/2/f", "/w/b/f", "/w/c/x/y/f"):
        dfs.pipe_file(path, b".")
    seen = []
    for path, dirs, _files in dfs.walk("/w"):
        seen.append(path)
        if path == "/w":
            dirs.remove("b")  # pruned: not entered
    assert seen == ["/w", "/w/a", "/w/a/1", "/w/a/2", "/w/c", "/w/c/x", "/w/c/x/y"]
    assert [p for p, _, _ in dfs.walk("/w", maxdepth=2)] == ["/w", "/w/a", "/w/b", "/w/c"]
    bottom_up = [p for p, _, _ in dfs.walk("/w", topdown=False, maxdepth=2)]
    assert bottom_up == ["/w/a", "/w/b", "/w/c", "/w"]
    top, dirs, files = next(dfs.walk("/w/b", detail=True))
    assert top == "/w/b" and dirs == {} and files["f"]["name"] == "/w/b/f"
    assert list(dfs.walk("/w/b/f")) == [("/w/b/f", [], [""])]  # a file: as fsspec
    with pytest.raises(ValueError):
        list(dfs.walk("/w", maxdepth=0))


def test_a_directory_gone_during_the_walk_is_skipped_unless_asked(dfs):
    for path in ("/w/a/f", "/w/b/f"):
        dfs.pipe_file(path, b".")
    walk = dfs.walk("/w")
    assert next(walk) == ("/w", ["a", "b"], [])
    dfs.rm("/w/a", recursive=True)  # between two steps of the walk
    assert [p for p, _, _ in walk] == ["/w/b"]
    walk = dfs.walk("/w", on_error="raise")
    next(walk)
    dfs.rm("/w/b", recursive=True)
    with pytest.raises(FileNotFoundError):
        list(walk)
    assert list(dfs.walk("/missing")) == []  # as os.walk; fsspec's find gives []


def test_a_directory_moved_during_the_walk_is_walked_at_its_new_place(dfs):
    dfs.pipe_file("/w/a/x/f", b".")
    dfs.mkdir("/w/b")
    walk = dfs.walk("/w")
    assert next(walk)[0] == "/w"
    assert next(walk) == ("/w/a", ["x"], [])  # x met as /w/a/x, not entered yet
    dfs.mv("/w/a/x", "/w/b/x")  # met again as /w/b/x: a move, not damage
    assert list(walk) == [("/w/b", ["x"], []), ("/w/b/x", [], ["f"])]


# ---------------------------------------------------------------------------
# get writes only below its destination
# ---------------------------------------------------------------------------
@pytest.fixture
def small_tree(dfs) -> DaxFileSystem:
    dfs.pipe_file("/t/sub/f", b"from the pool")
    dfs.pipe_file("/t/g", b"g")
    return dfs


def test_a_symlink_where_a_file_goes_is_replaced_not_followed(small_tree, tmp_path, outside):
    dfs, dest = small_tree, tmp_path / "dest"
    (dest / "t/sub").mkdir(parents=True)
    (dest / "t/sub/f").symlink_to(outside / "bait.txt")
    before = digest(outside)
    dfs.get("/t", str(dest) + "/", recursive=True)
    assert digest(outside) == before
    assert not (dest / "t/sub/f").is_symlink()
    assert (dest / "t/sub/f").read_bytes() == b"from the pool"
    # get_file on its own does the same.
    (dest / "single").symlink_to(outside / "bait.txt")
    dfs.get_file("/t/g", str(dest / "single"))
    assert digest(outside) == before and (dest / "single").read_bytes() == b"g"


def test_a_symlink_where_a_directory_goes_is_an_error(small_tree, tmp_path, outside):
    dfs, dest = small_tree, tmp_path / "dest"
    (dest / "t").mkdir(parents=True)
    (dest / "t/sub").symlink_to(outside / "baitdir")
    before = digest(outside)
    with pytest.raises(OSError) as raised:
        dfs.get("/t", str(dest) + "/", recursive=True)
    assert raised.value.errno == errno.ELOOP and "t/sub" in str(raised.value)
    assert digest(outside) == before
    assert (dest / "t/sub").is_symlink()  # left as it was


def test_the_destination_named_by_the_caller_may_be_a_symlink(small_tree, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via-link").symlink_to(real)
    small_tree.get("/t", str(tmp_path / "via-link") + "/", recursive=True)
    assert (real / "t/sub/f").read_bytes() == b"from the pool"


def test_a_fifo_where_a_file_goes_fails_at_once(small_tree, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    os.mkfifo(dest / "g")
    with hang_limit(30), pytest.raises(OSError) as raised:
        small_tree.get_file("/t/g", str(dest / "g"))
    assert raised.value.errno == errno.ENXIO  # no reader: refused, not waited for


def test_a_file_this_copy_wrote_is_not_overwritten_by_it(small_tree, tmp_path):
    dest = tmp_path / "dest"
    (dest / "t").mkdir(parents=True)
    (dest / "t/g").write_bytes(b"old")
    os.link(dest / "t/g", dest / "t/h")  # two local names for one file
    small_tree.pipe_file("/t/h", b"h")
    with pytest.raises(FileExistsError) as raised:
        small_tree.get("/t", str(dest) + "/", recursive=True)
    assert raised.value.filename == str(dest / "t/h")
    assert (dest / "t/g").read_bytes() == b"g"  # what the copy wrote stays


@pytest.fixture
def folded(tmp_path) -> Iterator[Path]:
    """A case-insensitive, case-preserving FUSE mount (tests/casefold_fuse.py)."""
    with casefold_mount(tmp_path) as mnt:
        yield mnt


def test_names_that_fold_together_write_nowhere_else(dfs, folded, outside):
    dest = folded
    (dest / "c").mkdir()
    (dest / "c/f").symlink_to(outside / "bait.txt")  # the pool's "F" folds onto it
    dfs.pipe_file("/c/F", b"upper")
    dfs.dax.symlink("/c/F", "/c/G")  # a pool symlink: copied as a file
    dfs.pipe_file("/c/g", b"lower")  # folds onto that file
    before = digest(outside)
    with pytest.raises(FileExistsError) as raised:
        dfs.get("/c", str(dest) + "/", recursive=True)
    assert raised.value.filename == str(dest / "c/g")  # said, not a silent loss
    assert digest(outside) == before
    # "F" replaced the link "f"; "g" could only meet the file "G", which this
    # copy wrote and so keeps.
    assert sorted(os.listdir(dest / "c")) == ["F", "G"]
    assert (dest / "c/F").read_bytes() == b"upper" and (dest / "c/G").read_bytes() == b"upper"
    assert not any(p.is_symlink() for p in (dest / "c").iterdir())

    (dest / "e").mkdir()
    (dest / "e/D").symlink_to(outside / "baitdir")  # the pool's "d" folds onto it
    dfs.pipe_file("/e/d/inner.txt", b"into d")
    with pytest.raises(OSError) as raised:
        dfs.get("/e", str(dest) + "/", recursive=True)
    assert raised.value.errno == errno.ELOOP
    assert digest(outside) == before


# ---------------------------------------------------------------------------
# sparse copies, full disks
# ---------------------------------------------------------------------------
def test_a_file_of_2_to_the_62_bytes_with_no_blocks_copies_sparse(dfs, tmp_path):
    dfs.touch("/huge")
    dfs.dax.truncate("/huge", 2**62)
    with dfs.open("/gappy", "wb") as f:
        f.write(b"head")
        f.seek(40 * MiB)
        f.write(b"tail")
    with small_tmpfs(tmp_path / "small", "16m") as where, hang_limit():
        dfs.get_file("/huge", str(where / "huge"))
        dfs.get("/gappy", str(where / "gappy"))
        st = os.stat(where / "huge")
        assert st.st_size == 2**62 and st.st_blocks == 0
        with open(where / "gappy", "rb") as f:
            assert f.read(4) == b"head"
            f.seek(40 * MiB)
            assert f.read() == b"tail"
        # The pool allocates whole chunks: the copy holds those, not the gap.
        assert os.stat(where / "gappy").st_blocks <= dfs.dax.stat("/gappy").st_blocks
        assert os.stat(where / "gappy").st_blocks * 512 < 8 * MiB


def test_a_size_the_local_file_system_refuses_is_efbig_and_leaves_nothing(dfs, tmp_path):
    dfs.touch("/huge")
    dfs.dax.truncate("/huge", 2**62)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, hard))  # Python ignores SIGXFSZ
    try:
        with hang_limit(), pytest.raises(OSError) as raised:
            dfs.get_file("/huge", str(tmp_path / "huge"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.EFBIG
    assert "partial copy was removed" in str(raised.value)
    assert not (tmp_path / "huge").exists()


def test_a_full_disk_is_enospc_and_leaves_nothing(dfs, tmp_path):
    dfs.pipe_file("/big", os.urandom(3 * MiB))
    dfs.pipe_file("/small", b"fits")
    with small_tmpfs(tmp_path / "small", "1m") as where:
        with pytest.raises(OSError) as raised:
            dfs.get(["/small", "/big"], [str(where / "small"), str(where / "big")])
        assert raised.value.errno == errno.ENOSPC
        assert "partial copy was removed" in str(raised.value)
        assert sorted(os.listdir(where)) == ["small"]  # the one before stays
