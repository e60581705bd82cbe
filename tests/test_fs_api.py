"""The public FileSystem API: open() and its io classes, namespace calls, the
errno of every failure, sparse files, unlinked-but-open files, huge-page
placement, ENOSPC accounting, read-only mounts and threads."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import random
import stat
import subprocess
import sys
import threading

import pytest

import daxfs
from conftest import get, run_threads_switching_often, small_tmpfs
from daxfs.fileio import MappedReader
from daxfs.inode import Inode
from daxfs.layout import BLOCK, CHUNK
from daxfs.path import Ino

MiB = 1 << 20


def errno_of(fn, *args, **kw) -> int | None:
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return None


def write(fs, path: str, data: bytes, mode: str = "wb") -> None:
    with fs.open(path, mode) as f:
        f.write(data)


def read(fs, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def used_blocks_by_inodes(fs, top: str = "/") -> int:
    """Blocks owned by every inode reachable from ``top`` (plus the root)."""
    seen, total = set(), 0
    for dirpath, dirs, files in fs.walk(top):
        for name in [None, *dirs, *files]:
            p = dirpath if name is None else dirpath.rstrip("/") + "/" + name
            st = fs.lstat(p)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512 // BLOCK
    return total


# ---------------------------------------------------------------------------
# open(): modes and the io classes returned
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode,cls",
    [
        ("rb", MappedReader),
        ("wb", io.BufferedWriter),
        ("ab", io.BufferedWriter),
        ("xb", io.BufferedWriter),
        ("r+b", io.BufferedRandom),
        ("w+b", io.BufferedRandom),
        ("a+b", io.BufferedRandom),
        ("r", io.TextIOWrapper),
        ("w", io.TextIOWrapper),
        ("a+", io.TextIOWrapper),
        ("rt", io.TextIOWrapper),
    ],
)
def test_open_returns_the_builtin_io_classes(fs, mode, cls):
    if "x" not in mode:
        write(fs, "/f", b"data")
    with fs.open("/f", mode) as f:
        assert type(f) is cls
        assert f.mode == mode
        assert f.name == "/f"
        assert f.readable() == ("r" in mode or "+" in mode)
        assert f.writable() == ("r" not in mode or "+" in mode)
        assert f.seekable()
        assert not f.isatty()
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()
    assert f.closed


@pytest.mark.parametrize("mode", ["wb", "ab", "w"])
def test_a_file_open_for_writing_only_gathers_2_mib_before_each_change(fs, mode):
    """Each write that reaches the pool is a journaled change, so a file open
    for writing only (binary or text) buffers a 2 MiB chunk: 64 writes of
    100 kB are 4 changes, not 64, and the file holds every byte.  A buffer
    size asked for is kept; files that read keep their 128 KiB."""
    piece = "0123456789" * 10_000
    data = piece if "b" not in mode else piece.encode()
    journal = fs.journal
    before = journal.next_seq
    with fs.open("/gathered", mode) as f:
        for _ in range(64):
            f.write(data)
    assert journal.next_seq - before <= 8
    assert read(fs, "/gathered") == piece.encode() * 64
    before = journal.next_seq
    with fs.open("/asked", "wb", buffering=64 * 1024) as f:
        for _ in range(16):
            f.write(piece.encode())
    assert journal.next_seq - before >= 16
    with fs.open("/gathered", "r+b") as f:
        assert f.read(10) == b"0123456789"
        assert len(f.peek()) <= 128 * 1024


def test_unbuffered_raw_file(fs):
    with fs.open("/raw", "wb", buffering=0) as f:
        assert isinstance(f, io.RawIOBase) and not isinstance(f, io.BufferedIOBase)
        assert f.write(b"hello world") == 11
        with pytest.raises(io.UnsupportedOperation):
            f.fileno()
        with pytest.raises(io.UnsupportedOperation):
            f.read()
    with fs.open("/raw", "rb", buffering=0) as f:
        buf = bytearray(5)
        assert f.readinto(buf) == 5 and bytes(buf) == b"hello"
        assert f.tell() == 5
        assert f.read() == b" world"
        assert f.read() == b""
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")
        with pytest.raises(OSError) as ei:
            f.seek(-1)
        assert ei.value.errno == errno.EINVAL
        with pytest.raises(OSError) as ei:
            f.seek(0, 7)  # as FileIO: lseek(2) refuses an unknown whence
        assert ei.value.errno == errno.EINVAL


def test_invalid_mode_arguments_match_builtin_open(fs, tmp_path):
    real = tmp_path / "f"
    real.write_bytes(b"")
    write(fs, "/f", b"")
    for kwargs in [
        dict(mode="rw"),
        dict(mode="z"),
        dict(mode="rbt"),
        dict(mode="rr"),
        dict(mode="r", buffering=0),
        dict(mode="rb", encoding="utf-8"),
        dict(mode="rb", newline="\n"),
        dict(mode="rb", errors="strict"),
    ]:
        with pytest.raises(ValueError):
            open(real, **kwargs)
        with pytest.raises(ValueError):
            fs.open("/f", **kwargs)


def test_text_mode_matches_builtin_open(fs, tmp_path):
    text = "héllo\nwörld\r\nlast\rline"
    for newline in (None, "", "\n", "\r\n"):
        real = tmp_path / "t"
        with open(real, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
        with fs.open("/t", "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
        assert read(fs, "/t") == real.read_bytes()
        with (
            open(real, encoding="utf-8", newline=newline) as f1,
            fs.open("/t", encoding="utf-8", newline=newline) as f2,
        ):
            assert f2.read() == f1.read()
        with (
            open(real, encoding="utf-8", newline=newline) as f1,
            fs.open("/t", encoding="utf-8", newline=newline) as f2,
        ):
            assert list(f2) == list(f1)
    with fs.open("/t", "w", encoding="latin-1", errors="replace") as f:
        f.write("snow ☃")
    assert read(fs, "/t") == b"snow ?"


def test_line_buffering(fs):
    with fs.open("/lb", "w", buffering=1) as f:
        assert f.line_buffering
        f.write("one\n")
        assert read(fs, "/lb") == b"one\n"  # flushed at the newline


def test_mode_semantics(any_fs):
    fs = any_fs
    write(fs, "/m", b"0123456789")
    with fs.open("/m", "ab") as f:  # append: every write at the end
        f.write(b"A")
        f.seek(0)
        f.write(b"B")
    assert read(fs, "/m") == b"0123456789AB"
    with fs.open("/m", "r+b") as f:  # update in place, no truncation
        f.seek(2)
        f.write(b"xy")
        f.seek(0)
        assert f.read(4) == b"01xy"
    assert read(fs, "/m") == b"01xy456789AB"
    with fs.open("/m", "w+b") as f:  # truncates
        assert f.read() == b""
        f.write(b"new")
        f.seek(0)
        assert f.read() == b"new"
    with fs.open("/m", "a+b") as f:
        assert f.tell() == 3 and f.read() == b""  # like open(): starts at the end
        f.seek(0)
        assert f.read() == b"new"
        f.write(b"!")
    assert read(fs, "/m") == b"new!"
    with pytest.raises(FileExistsError):
        fs.open("/m", "xb")
    with fs.open("/m2", "xb") as f:
        f.write(b"made")
    assert read(fs, "/m2") == b"made"


def test_handle_methods(any_fs):
    fs = any_fs
    with fs.open("/h", "w+b") as f:
        f.write(b"line1\nline2\nline3")
        f.seek(0)
        assert f.readline() == b"line1\n"
        assert f.readlines() == [b"line2\n", b"line3"]
        f.seek(0, os.SEEK_END)
        assert f.tell() == 17
        f.seek(-5, os.SEEK_END)
        assert f.read() == b"line3"
        assert f.truncate(5) == 5
        f.seek(0)
        assert f.read() == b"line1"
    assert fs.stat("/h").st_size == 5
    f = fs.open("/h", "rb")
    f.close()
    f.close()  # idempotent
    with pytest.raises(ValueError):
        f.read()


def test_paths_as_pathlib_and_bytes(fs):
    write(fs, pathlib.PurePosixPath("/p"), b"x")
    assert fs.exists(b"/p") and fs.isfile(pathlib.Path("/p"))
    fs.mkdir(b"/dir")
    assert fs.listdir(pathlib.PurePosixPath("/dir")) == []
    with pytest.raises(ValueError):
        fs.stat("/a\0b")
    assert fs.exists("p") and fs.listdir("dir") == fs.listdir("/dir")  # relative: from the root
    with pytest.raises(FileNotFoundError):
        fs.listdir("")  # as os.listdir(""): the empty path names nothing


# ---------------------------------------------------------------------------
# errno of every failure
# ---------------------------------------------------------------------------
def test_file_not_found(fs):
    for call in (
        lambda: fs.open("/nope"),
        lambda: fs.open("/nope", "r+b"),
        lambda: fs.stat("/nope"),
        lambda: fs.unlink("/nope"),
        lambda: fs.rmdir("/nope"),
        lambda: fs.listdir("/nope"),
        lambda: fs.mkdir("/nope/sub"),
        lambda: fs.open("/nope/f", "w"),
        lambda: fs.rename("/nope", "/x"),
        lambda: fs.link("/nope", "/x"),
        lambda: fs.readlink("/nope"),
        lambda: fs.truncate("/nope", 0),
        lambda: fs.chmod("/nope", 0o600),
        lambda: fs.utime("/nope"),
        lambda: fs.iomap("/nope"),
        lambda: fs.fallocate("/nope", 0, 10),
        lambda: fs.fsync("/nope"),
    ):
        with pytest.raises(FileNotFoundError) as ei:
            call()
        assert ei.value.errno == errno.ENOENT
    fs.symlink("/nowhere", "/dangling")
    with pytest.raises(FileNotFoundError):
        fs.stat("/dangling")
    assert fs.lstat("/dangling") and fs.islink("/dangling") and not fs.exists("/dangling")
    with pytest.raises(FileNotFoundError):
        fs.symlink("", "/empty-target")


def test_file_exists(fs):
    fs.mkdir("/d")
    write(fs, "/f", b"")
    for call in (
        lambda: fs.mkdir("/d"),
        lambda: fs.mkdir("/f"),
        lambda: fs.open("/f", "x"),
        lambda: fs.open("/d", "xb"),
        lambda: fs.symlink("x", "/f"),
        lambda: fs.link("/f", "/d"),
        lambda: fs.makedirs("/d"),
        lambda: fs.mkdir("/"),
        lambda: fs.link("/d", "/f"),
    ):
        with pytest.raises(FileExistsError) as ei:
            call()
        assert ei.value.errno == errno.EEXIST
    fs.makedirs("/d", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs("/f", exist_ok=True)  # exists, but not as a directory


def test_is_a_directory(fs):
    fs.mkdir("/d")
    for call in (
        lambda: fs.open("/d"),
        lambda: fs.open("/d", "wb"),
        lambda: fs.open("/d", "ab"),
        lambda: fs.open("/d", "r+b"),
        lambda: fs.unlink("/d"),
        lambda: fs.truncate("/d", 0),
        lambda: fs.fallocate("/d", 0, 1),
        lambda: fs.open("/newname/", "w"),
    ):
        with pytest.raises(IsADirectoryError) as ei:
            call()
        assert ei.value.errno == errno.EISDIR
    write(fs, "/f", b"")
    with pytest.raises(IsADirectoryError):
        fs.rename("/f", "/d")  # a file over a directory


def test_not_a_directory(fs):
    write(fs, "/f", b"x")
    fs.mkdir("/d")
    for call in (
        lambda: fs.mkdir("/f/sub"),
        lambda: fs.listdir("/f"),
        lambda: fs.rmdir("/f"),
        lambda: fs.open("/f/x", "w"),
        lambda: fs.stat("/f/x"),
        lambda: fs.open("/f/"),
        lambda: fs.unlink("/f/"),
        lambda: fs.rename("/d", "/f"),
        lambda: fs.rename("/f/", "/g"),
        lambda: fs.scandir("/f"),
        lambda: fs.makedirs("/f/a/b"),
    ):
        with pytest.raises(NotADirectoryError) as ei:
            call()
        assert ei.value.errno == errno.ENOTDIR


def test_directory_not_empty(fs):
    fs.makedirs("/a/b")
    fs.mkdir("/c")
    write(fs, "/c/f", b"")
    assert errno_of(fs.rmdir, "/a") == errno.ENOTEMPTY
    assert errno_of(fs.rename, "/a", "/c") == errno.ENOTEMPTY
    assert errno_of(fs.rename, "/a/b", "/a") == errno.ENOTEMPTY  # over its own parent
    assert errno_of(fs.rename, "/c/f", "/c") == errno.ENOTEMPTY  # a file over its parent too
    fs.rmdir("/a/b")
    fs.rename("/a", "/e")  # empty now: moves
    fs.mkdir("/g")
    fs.rename("/e", "/g")  # over an empty directory: replaces it
    assert fs.isdir("/g") and not fs.exists("/e")


def test_name_too_long(fs):
    ok, long = "n" * 255, "n" * 256
    write(fs, "/" + ok, b"fits")
    fs.mkdir("/" + ok[:-1] + "d")
    assert ok in fs.listdir("/")
    for call in (
        lambda: fs.open("/" + long, "w"),
        lambda: fs.mkdir("/" + long),
        lambda: fs.stat("/" + long),
        lambda: fs.symlink("x", "/" + long),
        lambda: fs.rename("/" + ok, "/" + long),
        lambda: fs.link("/" + ok, "/" + long),
        lambda: fs.mkdir("/" + "é" * 128),
    ):  # 256 bytes in UTF-8
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.ENAMETOOLONG
    fs.mkdir("/" + "é" * 127)  # 254 bytes
    fs.close()
    fs2 = daxfs.mount(fs.region.path)
    try:
        assert read(fs2, "/" + ok) == b"fits" and fs2.isdir("/" + "é" * 127)
    finally:
        fs2.close()


def test_invalid_argument(fs):
    fs.makedirs("/a/b")
    write(fs, "/f", b"x")
    cases = [
        lambda: fs.rename("/a", "/a/b/c"),
        lambda: fs.rename("/a", "/a/c"),
        lambda: fs.readlink("/f"),
        lambda: fs.readlink("/a"),
        lambda: fs.truncate("/f", -1),
        lambda: fs.fallocate("/f", 0, 0),
        lambda: fs.fallocate("/f", -1, 10),
        lambda: fs.iomap("/f", 0, -5),
    ]
    for call in cases:
        with pytest.raises(OSError) as ei:
            call()
        assert ei.value.errno == errno.EINVAL
    assert fs.isdir("/a/b") and not fs.exists("/a/b/c")


def test_a_length_that_is_not_an_integer_is_a_type_error(fs, tmp_path):
    """As os.truncate and ftruncate: TypeError, and the file as it was
    (a float reached the inode's packing, inside the change, as a
    struct.error)."""
    write(fs, "/f", b"xyz")
    (tmp_path / "f").write_bytes(b"xyz")
    with pytest.raises(TypeError):
        os.truncate(tmp_path / "f", 1.5)
    with pytest.raises(TypeError):
        fs.truncate("/f", 1.5)
    with fs.open("/f", "r+b") as f, pytest.raises(TypeError):
        f.truncate(1.5)
    assert fs.read_bytes("/f") == b"xyz"
    fs.truncate("/f", True)  # (an int, as os.truncate takes it)
    assert fs.read_bytes("/f") == b"x"


def test_other_errnos(fs):
    fs.mkdir("/d")
    fs.symlink("/loop1", "/loop2")
    fs.symlink("/loop2", "/loop1")
    assert errno_of(fs.stat, "/loop1") == errno.ELOOP
    assert errno_of(fs.open, "/loop1", "w") == errno.ELOOP
    assert errno_of(fs.link, "/d", "/d2") == errno.EPERM  # no hard links to directories
    assert errno_of(fs.rmdir, "/") == errno.EBUSY
    assert errno_of(fs.rename, "/", "/x") == errno.EBUSY
    with pytest.raises(ValueError):
        fs.utime("/d", (1, 2), ns=(1, 2))


def test_errno_precedence_like_linux(fs):
    """Where several errors apply, the one Linux reports."""
    fs.mkdir("/d")
    write(fs, "/f", b"")
    fs.symlink("dangling-target", "/dl")
    assert errno_of(fs.link, "/d", "/f") == errno.EEXIST  # EEXIST before EPERM
    assert errno_of(fs.rename, "/missing", "/f/x") == errno.ENOTDIR  # both parents first
    assert errno_of(fs.open, "/dl", "xb") == errno.EEXIST  # O_EXCL never follows
    assert not fs.exists("/dangling-target")
    write(fs, "/dl", b"through the link", "wb")  # O_CREAT alone follows
    assert read(fs, "/dangling-target") == b"through the link"


def test_failed_calls_change_nothing(fs):
    fs.makedirs("/a/b")
    write(fs, "/a/f", b"keep")
    before = sorted(fs.walk("/"))
    free = fs.statvfs().f_bfree
    for call in (
        lambda: fs.rename("/a", "/a/b/x"),
        lambda: fs.rmdir("/a"),
        lambda: fs.open("/a/f", "xb"),
        lambda: fs.mkdir("/a/f/x"),
        lambda: fs.link("/a", "/z"),
    ):
        with pytest.raises(OSError):
            call()
    assert sorted(fs.walk("/")) == before and fs.statvfs().f_bfree == free
    assert read(fs, "/a/f") == b"keep"


# ---------------------------------------------------------------------------
# Namespace behaviour
# ---------------------------------------------------------------------------
def test_dotdot_never_escapes_the_root(fs):
    fs.mkdir("/a")
    write(fs, "/a/f", b"x")
    root_ino = fs.stat("/").st_ino
    for p in ("/..", "/../..", "/a/../..", "/./../.", "/a/../../../a/.."):
        assert fs.stat(p).st_ino == root_ino, p
    assert fs.listdir("/../../..") == fs.listdir("/")
    assert read(fs, "/../../a/f") == b"x"
    assert read(fs, "/a/../a/./f") == b"x"
    fs.symlink("../../../../a", "/a/up")
    assert fs.stat("/a/up").st_ino == fs.stat("/a").st_ino
    assert read(fs, "/a/up/f") == b"x"
    fs.symlink("..", "/a/parent")
    assert fs.stat("/a/parent").st_ino == root_ino


def test_makedirs_like_os(fs, tmp_path):
    for p in ("x/y/", "p/q", "m//n", "r/./s", "x/y/z"):
        fs.makedirs("/" + p)
        os.makedirs(tmp_path / p)
    for d, ds, files in os.walk(tmp_path):
        rel = "/" + os.path.relpath(d, tmp_path) if d != str(tmp_path) else "/"
        assert sorted(fs.listdir(rel)) == sorted(ds + files), rel


def test_moved_directory_dotdot_is_its_new_parent(fs):
    fs.makedirs("/a/b/c")
    fs.mkdir("/x")
    fs.rename("/a/b", "/x/b")
    assert fs.stat("/x/b/..").st_ino == fs.stat("/x").st_ino
    assert fs.stat("/x/b/c/../..").st_ino == fs.stat("/x").st_ino
    assert fs.stat("/a").st_nlink == 2 and fs.stat("/x").st_nlink == 3
    fs.close()
    with daxfs.mount(fs.region.path) as again:
        assert again.stat("/x/b/..").st_ino == again.stat("/x").st_ino
        assert again.listdir("/x/b/../b/c/../..") == ["b"]  # that is /x


def test_hard_links_and_nlink(any_fs):
    fs = any_fs
    write(fs, "/f", b"shared")
    fs.link("/f", "/g")
    assert fs.stat("/f").st_nlink == 2 and fs.stat("/f").st_ino == fs.stat("/g").st_ino
    write(fs, "/g", b"changed", "r+b")
    assert read(fs, "/f") == b"changed"
    fs.unlink("/f")
    assert fs.stat("/g").st_nlink == 1 and read(fs, "/g") == b"changed"
    fs.mkdir("/d")
    assert fs.stat("/d").st_nlink == 2
    fs.mkdir("/d/e")
    assert fs.stat("/d").st_nlink == 3 and fs.stat("/").st_nlink == 3
    fs.rename("/d/e", "/e")
    assert fs.stat("/d").st_nlink == 2 and fs.stat("/").st_nlink == 4


def test_rename_replaces_and_frees_the_victim(any_fs):
    fs = any_fs
    write(fs, "/victim", os.urandom(300_000))
    write(fs, "/src", b"winner")
    free = fs.statvfs().f_bfree
    src_ino = fs.stat("/src").st_ino
    fs.replace("/src", "/victim")
    assert read(fs, "/victim") == b"winner" and fs.stat("/victim").st_ino == src_ino
    assert not fs.exists("/src")
    assert fs.statvfs().f_bfree > free + 300_000 // BLOCK - 2
    fs.link("/victim", "/same")
    fs.rename("/victim", "/same")  # two names of one inode: nothing happens
    assert fs.exists("/victim") and fs.exists("/same")


def test_symlinks(fs):
    fs.mkdir("/d")
    write(fs, "/d/f", b"target")
    fs.symlink("d/f", "/rel")
    fs.symlink("/d", "/abs")
    assert fs.readlink("/rel") == "d/f" and fs.readlink("/abs") == "/d"
    assert read(fs, "/rel") == b"target" and read(fs, "/abs/f") == b"target"
    assert stat.S_ISLNK(fs.lstat("/rel").st_mode) and stat.S_ISREG(fs.stat("/rel").st_mode)
    assert fs.lstat("/rel").st_size == 3
    assert fs.isdir("/abs") and fs.islink("/abs") and not fs.isdir("/rel")
    fs.unlink("/abs")  # removes the link, not the directory
    assert fs.isdir("/d")
    long_target = "x/" * 2000 + "y"
    fs.symlink(long_target, "/long")
    assert fs.readlink("/long") == long_target


def test_listdir_scandir_walk_match_os(fs, tmp_path):
    tree = ["a/", "a/b/", "a/b/f1", "a/f2", "c/", "f3", "a/b/c/", "a/b/c/f4"]
    for t in tree:
        if t.endswith("/"):
            fs.mkdir("/" + t)
            (tmp_path / t).mkdir()
        else:
            write(fs, "/" + t, t.encode())
            (tmp_path / t).write_bytes(t.encode())
    fs.symlink("a", "/ln")
    (tmp_path / "ln").symlink_to("a")

    def norm(walk, base):
        return sorted((os.path.relpath(d, base), sorted(ds), sorted(fs_)) for d, ds, fs_ in walk)

    for followlinks in (False, True):
        for topdown in (True, False):
            assert norm(fs.walk("/", topdown=topdown, followlinks=followlinks), "/") == norm(
                os.walk(tmp_path, topdown=topdown, followlinks=followlinks), tmp_path
            )
    with fs.scandir("/a") as it:
        entries = {e.name: e for e in it}
    assert set(entries) == {"b", "f2"}
    assert entries["b"].is_dir() and not entries["b"].is_file() and entries["f2"].is_file()
    assert entries["f2"].path == "/a/f2" and os.fspath(entries["f2"]) == "/a/f2"
    assert entries["f2"].inode() == fs.stat("/a/f2").st_ino
    assert entries["f2"].stat().st_size == 4
    ln = next(e for e in fs.scandir("/") if e.name == "ln")
    assert ln.is_symlink() and ln.is_dir() and not ln.is_dir(follow_symlinks=False)
    errors = []
    assert list(fs.walk("/nope", onerror=errors.append)) == []
    assert errors and errors[0].errno == errno.ENOENT


def test_stat_fields_chmod_utime(fs):
    write(fs, "/f", b"12345")
    st = fs.stat("/f")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_size == 5 and st.st_nlink == 1 and st.st_blocks == BLOCK // 512
    assert st.st_uid == os.getuid() and st.st_gid == os.getgid()
    assert st.st_dev == fs.stat("/").st_dev
    fs.chmod("/f", 0o4600)
    assert stat.S_IMODE(fs.stat("/f").st_mode) == 0o4600 and stat.S_ISREG(fs.stat("/f").st_mode)
    fs.utime("/f", ns=(1_000_000_123, 2_000_000_456))
    st = fs.stat("/f")
    assert st.st_atime_ns == 1_000_000_123 and st.st_mtime_ns == 2_000_000_456
    fs.utime("/f", (10.5, 20.25))
    assert fs.stat("/f").st_mtime == 20.25
    fs.close()
    fs2 = daxfs.mount(fs.region.path)
    try:
        st = fs2.stat("/f")
        assert st.st_mtime == 20.25 and stat.S_IMODE(st.st_mode) == 0o4600
    finally:
        fs2.close()


def test_mtime_advances_on_write_and_persists(fs):
    write(fs, "/f", b"a")
    fs.utime("/f", ns=(0, 0))
    write(fs, "/f", b"b", "r+b")
    m = fs.stat("/f").st_mtime_ns
    assert m > 0
    fs.close()
    fs2 = daxfs.mount(fs.region.path)
    try:
        assert fs2.stat("/f").st_mtime_ns == m  # written lazily, at close
    finally:
        fs2.close()


# ---------------------------------------------------------------------------
# Data: sparse files, truncate, fallocate
# ---------------------------------------------------------------------------
def test_sparse_files_read_zeros(any_fs):
    fs = any_fs
    write(fs, "/empty", b"")
    free = fs.statvfs().f_bfree
    fs.truncate("/empty", 10 * MiB)
    assert fs.stat("/empty").st_size == 10 * MiB and fs.stat("/empty").st_blocks == 0
    assert fs.statvfs().f_bfree == free  # growing by truncate allocates nothing
    assert read(fs, "/empty") == bytes(10 * MiB)
    with fs.open("/holes", "wb") as f:
        f.write(b"start")
        f.seek(5 * MiB + 17)  # window 0 becomes a whole chunk (migrated); window 1 a hole
        f.write(b"end")
    data = read(fs, "/holes")
    assert len(data) == 5 * MiB + 20
    assert data[:5] == b"start" and data[-3:] == b"end" and data[5:-3] == bytes(len(data) - 8)
    kinds = [e.kind for e in fs.iomap("/holes")]
    assert "hole" in kinds and kinds[0] == "mapped"


def test_truncate_down_then_up_reads_zeros(any_fs):
    fs = any_fs
    payload = bytes(range(256)) * 64 * 10  # 160 KiB
    write(fs, "/t", payload)
    fs.truncate("/t", 5000)
    fs.truncate("/t", 9000)
    assert read(fs, "/t") == payload[:5000] + bytes(4000)
    with fs.open("/t", "r+b") as f:
        f.truncate(100)
    assert read(fs, "/t") == payload[:100]
    write(fs, "/big", os.urandom(3 * MiB))
    fs.truncate("/big", 2 * MiB + 1)
    fs.truncate("/big", 3 * MiB)
    assert read(fs, "/big")[2 * MiB + 1 :] == bytes(MiB - 1)


def test_sizes_past_the_largest_file_are_efbig_and_change_nothing(any_fs):
    # As Linux's MAX_LFS_FILESIZE (2**63 - 1): offsets are signed 64-bit.
    fs = any_fs
    write(fs, "/f", b"abc")
    fs.truncate("/f", 2**63 - 1)  # the largest file is a sparse file like any other
    assert fs.stat("/f").st_size == 2**63 - 1
    for attempt in (
        lambda: fs.truncate("/f", 2**63),
        lambda: fs.truncate("/f", 2**64),
        lambda: fs.fallocate("/f", 2**63 - 1, 1),
        lambda: fs.fallocate("/f", 0, 2**64),
    ):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EFBIG
    with fs.open("/f", "r+b", buffering=0) as f:
        f.seek(2**63 - 1)
        with pytest.raises(OSError) as e:
            f.write(b"x")
        assert e.value.errno == errno.EFBIG
    assert fs.stat("/f").st_size == 2**63 - 1
    fs.truncate("/f", 3)
    assert read(fs, "/f") == b"abc"


def test_fallocate_extends_with_zeros_and_reserves(any_fs):
    fs = any_fs
    write(fs, "/f", b"abc")
    free = fs.statvfs().f_bfree
    fs.fallocate("/f", 0, 100_000)
    assert fs.stat("/f").st_size == 100_000
    assert read(fs, "/f") == b"abc" + bytes(100_000 - 3)
    assert fs.statvfs().f_bfree == free - (100_000 + BLOCK - 1) // BLOCK + 1
    assert all(e.kind == "mapped" for e in fs.iomap("/f"))
    fs.fallocate("/f", 10, 5)  # inside: size unchanged
    assert fs.stat("/f").st_size == 100_000
    fs.fallocate("/f", 300_000, 10)  # beyond: a hole between, zeros everywhere
    assert read(fs, "/f") == b"abc" + bytes(300_010 - 3)


# ---------------------------------------------------------------------------
# Unlinked while open
# ---------------------------------------------------------------------------
def test_unlinked_open_file_stays_readable_until_close(any_fs):
    fs = any_fs
    write(fs, "/anchor", b"")  # the root directory gets its block first
    free0 = fs.statvfs().f_bfree
    data = os.urandom(MiB + 123)
    write(fs, "/ghost", data)
    free1 = fs.statvfs().f_bfree
    assert free1 == free0 - (MiB + 123 + BLOCK - 1) // BLOCK
    r = fs.open("/ghost", "rb")
    w = fs.open("/ghost", "r+b")
    fs.unlink("/ghost")
    assert not fs.exists("/ghost") and "ghost" not in fs.listdir("/")
    assert fs.statvfs().f_bfree == free1, "space freed while the file is still open"
    assert r.read() == data
    w.seek(0)
    w.write(b"still writable")
    w.close()
    assert fs.statvfs().f_bfree == free1
    r.seek(0)
    assert r.read(14) == b"still writable"
    write(fs, "/ghost", b"a new file of the same name")
    assert fs.statvfs().f_bfree == free1 - 1
    r.close()
    assert fs.statvfs().f_bfree == free0 - 1
    assert read(fs, "/ghost") == b"a new file of the same name"
    fs.unlink("/ghost")
    assert fs.statvfs().f_bfree == free0


def test_unlinked_open_file_space_returns_at_close(fs):
    write(fs, "/keepdir-block", b"")  # the root directory gets its block first
    free0 = fs.statvfs().f_bfree
    write(fs, "/g", os.urandom(5 * MiB))
    f = fs.open("/g", "rb")
    fs.unlink("/g")
    assert fs.statvfs().f_bfree < free0
    f.close()
    assert fs.statvfs().f_bfree == free0


def test_unmount_closes_open_handles_and_frees_orphans(pool_path):
    fs = daxfs.mount(pool_path)
    write(fs, "/anchor", b"")
    free0 = fs.statvfs().f_bfree
    f = fs.open("/o", "wb")
    f.write(os.urandom(MiB))
    fs.unlink("/o")
    fs.close()
    assert f.closed
    fs = daxfs.mount(pool_path)
    try:
        assert fs.statvfs().f_bfree == free0
    finally:
        fs.close()


# ---------------------------------------------------------------------------
# Huge-page placement
# ---------------------------------------------------------------------------
def test_large_file_gets_chunk_aligned_extents(any_fs):
    fs = any_fs
    write(fs, "/anchor", b"small")  # a small file first, so chunk 0 is a small chunk
    chunks = fs.statvfs().free_chunks
    data = os.urandom(6 * MiB + 5000)
    write(fs, "/large", data)
    m = fs.iomap("/large")
    assert all(e.kind == "mapped" for e in m)
    for e in m:
        assert (e.device_offset - e.file_offset) % CHUNK == 0, e
    assert sum(e.length for e in m) == len(data)
    assert fs.statvfs().free_chunks <= chunks - 4
    assert fs.stat("/large").st_blksize == CHUNK
    assert read(fs, "/large") == data


def test_file_growing_past_2mib_gets_chunks_for_new_windows(fs):
    with fs.open("/grow", "wb") as f:
        f.write(os.urandom(100_000))  # small: 4 KiB blocks
        f.flush()
        for _ in range(60):
            f.write(os.urandom(100_000))  # grows to ~6 MiB
    for e in fs.iomap("/grow"):
        if e.file_offset >= CHUNK:
            assert (e.device_offset - e.file_offset) % CHUNK == 0, e
    # The windows after the first are each one chunk: contiguous when possible.
    assert len([e for e in fs.iomap("/grow") if e.file_offset >= CHUNK]) <= 3


def test_naive_allocator_has_no_alignment_policy(naive_pool):
    with daxfs.mount(naive_pool) as fs:
        write(fs, "/small", b"x")
        write(fs, "/large", os.urandom(4 * MiB))
        m = fs.iomap("/large")
        assert any((e.device_offset - e.file_offset) % CHUNK for e in m)
        assert fs.info()["allocator"] == "naive"


# ---------------------------------------------------------------------------
# ENOSPC
# ---------------------------------------------------------------------------
_FILL_UNTIL_FULL = """
import errno, sys, daxfs
with daxfs.mount(sys.argv[1]) as fs:
    for i in range(100):
        try:
            with fs.open(f"/f{i}", "wb") as f:
                f.write(bytes([i]) * (1 << 20))
        except OSError as e:
            print(i, errno.errorcode[e.errno])
            break
"""


def test_a_full_backing_is_enospc_not_sigbus(tmp_path):
    # A 64 MiB pool, sparse, on a 16 MiB tmpfs: the backing fills long before
    # the pool does.  Stores into holes would die of SIGBUS; the pool reserves
    # storage as it allocates, so the write that cannot have it is ENOSPC.
    with small_tmpfs(tmp_path / "small", "16M") as small:
        pool = str(small / "pool")
        daxfs.mkfs(pool, 64 * MiB)
        done = subprocess.run(
            [sys.executable, "-c", _FILL_UNTIL_FULL, pool], capture_output=True, text=True
        )
        assert done.returncode == 0, f"the writer died ({done.returncode}): {done.stderr}"
        full_at, code = done.stdout.split()
        assert code == "ENOSPC" and 5 <= int(full_at) < 16
        with daxfs.mount(pool) as fs:
            for i in range(int(full_at)):
                with fs.open(f"/f{i}", "rb") as f:
                    assert f.read() == bytes([i]) * MiB
        assert daxfs.check(pool).ok


def test_mkfs_on_a_backing_too_small_for_its_metadata_is_enospc(tmp_path):
    with small_tmpfs(tmp_path / "small", "8M") as small:
        code = "import sys, daxfs; daxfs.mkfs(sys.argv[1], '1T')"  # 1 GiB of inode table
        done = subprocess.run(
            [sys.executable, "-c", code, str(small / "pool")], capture_output=True, text=True
        )
        assert done.returncode == 1, f"mkfs died ({done.returncode}), not ENOSPC"
        assert "OSError: [Errno 28]" in done.stderr
        assert os.listdir(small) == []  # nothing left behind


def test_enospc_when_full_and_every_block_accounted_for(any_fs):
    fs = any_fs
    write(fs, "/anchor", b"")
    before = fs.statvfs()
    written = 0
    piece = os.urandom(MiB)
    f = fs.open("/fill", "wb", buffering=0)
    with pytest.raises(OSError) as ei:
        while True:
            f.write(piece)
            written += len(piece)
    assert ei.value.errno == errno.ENOSPC
    assert fs.stat("/fill").st_size == written  # the failed write took nothing
    small = 0
    with pytest.raises(OSError) as ei:
        while True:
            f.write(piece[:BLOCK])
            small += 1
    assert ei.value.errno == errno.ENOSPC
    f.close()
    full = fs.statvfs()
    assert full.f_bfree == 0 and full.free_chunks == 0
    # Every block is owned by an inode reachable from the root.
    assert full.f_blocks - full.f_bfree == used_blocks_by_inodes(fs)
    with pytest.raises(OSError) as ei:
        fs.fallocate("/anchor", 0, 10 * BLOCK)
    assert ei.value.errno == errno.ENOSPC and fs.stat("/anchor").st_size == 0
    with fs.open("/fill", "rb") as f:
        assert f.read(MiB) == piece
    fs.unlink("/fill")
    assert fs.statvfs().f_bfree == before.f_bfree
    assert fs.statvfs().free_chunks == before.free_chunks
    fs.close()
    with daxfs.mount(fs.region.path) as again:
        assert again.statvfs().f_bfree == before.f_bfree


def test_out_of_inodes_is_enospc(make_pool):
    with daxfs.mount(make_pool(inodes=20)) as fs:
        made = 0
        with pytest.raises(OSError) as ei:
            for i in range(100):
                fs.mkdir(f"/d{i}")
                made += 1
        assert ei.value.errno == errno.ENOSPC
        assert made == 18 and len(fs.listdir("/")) == made
        assert fs.statvfs().f_ffree == 0
        fs.rmdir("/d0")
        fs.mkdir("/again")
        assert fs.isdir("/again")


# ---------------------------------------------------------------------------
# Read-only mounts
# ---------------------------------------------------------------------------
def test_readonly_mount_refuses_changes_with_erofs(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        write(fs, "/f", b"content")
    with daxfs.mount(pool_path, readonly=True) as ro:
        assert read(ro, "/f") == b"content" and ro.listdir("/") and ro.isdir("/d")
        assert ro.statvfs().f_flag & os.ST_RDONLY
        for call in (
            lambda: ro.open("/f", "wb"),
            lambda: ro.open("/f", "r+b"),
            lambda: ro.open("/g", "xb"),
            lambda: ro.open("/f", "a"),
            lambda: ro.mkdir("/e"),
            lambda: ro.rmdir("/d"),
            lambda: ro.unlink("/f"),
            lambda: ro.rename("/f", "/g"),
            lambda: ro.link("/f", "/g"),
            lambda: ro.symlink("f", "/s"),
            lambda: ro.truncate("/f", 0),
            lambda: ro.fallocate("/f", 0, 10),
            lambda: ro.chmod("/f", 0o600),
            lambda: ro.utime("/f"),
        ):
            with pytest.raises(OSError) as ei:
                call()
            assert ei.value.errno == errno.EROFS
        ro.sync()
        ro.fsync("/f")
    with daxfs.mount(pool_path) as fs:
        assert read(fs, "/f") == b"content"


def test_readonly_mount_of_a_readonly_file(pool_path):
    os.chmod(pool_path, 0o444)
    with daxfs.mount(pool_path, readonly=True) as ro:
        assert ro.listdir("/") == []


# ---------------------------------------------------------------------------
# Lifetime, durability backends, info
# ---------------------------------------------------------------------------
def test_closed_filesystem_refuses_calls(pool_path):
    fs = daxfs.mount(pool_path)
    fs.close()
    fs.close()
    assert fs.closed
    with pytest.raises(ValueError):
        fs.listdir("/")
    with pytest.raises(ValueError):
        fs.open("/x", "w")


def test_disk_pool_uses_msync_and_keeps_data(disk_pool):
    data = os.urandom(3 * MiB + 11)
    with daxfs.mount(disk_pool) as fs:
        assert fs.info()["durability"] == "msync" and fs.info()["kind"] == "file"
        write(fs, "/f", data)
        with fs.open("/f", "r+b") as f:  # an overwrite in place: durable at flush/close
            f.write(b"OVERWRITE")
        fs.fsync("/f")
        fs.sync()
    with daxfs.mount(disk_pool) as fs:
        assert read(fs, "/f") == b"OVERWRITE" + data[9:]


def test_info_describes_the_pool(fs):
    info = fs.info()
    assert info["kind"] == "tmpfs" and info["durability"] == "none" and info["volatile"]
    assert info["allocator"] == "hugepage" and info["size"] == 64 * MiB
    st = fs.statvfs()
    assert st.total_bytes == info["data_bytes"] and st.free_bytes <= st.total_bytes
    assert st.free_chunks <= st.total_chunks and st.f_namemax == 255
    assert "rw" in repr(fs)


def test_mkfs_refuses_to_overwrite_without_force(pool_path):
    with daxfs.mount(pool_path) as fs:
        write(fs, "/f", b"x")
    with pytest.raises(FileExistsError):
        daxfs.mkfs(pool_path, "64M")
    daxfs.mkfs(pool_path, "64M", force=True)
    with daxfs.mount(pool_path) as fs:
        assert fs.listdir("/") == []
    with pytest.raises(ValueError):
        daxfs.mkfs(pool_path, "64M", force=True, allocator="buddy")


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------
def test_threads_writing_different_files(any_fs):
    fs = any_fs
    fs.mkdir("/shared")
    nthreads, nfiles = 4, 25
    errors: list[BaseException] = []
    expected: dict[str, bytes] = {}
    lock = threading.Lock()

    def worker(t: int) -> None:
        rng = random.Random(t)
        try:
            for i in range(nfiles):
                path = f"/shared/t{t}-{i}"
                data = rng.randbytes(rng.choice([10, 5000, 70_000, 300_000]))
                with fs.open(path, "wb") as f:
                    for k in range(0, len(data), 40_000):
                        f.write(data[k : k + 40_000])
                if i % 5 == 4:  # and some namespace churn
                    fs.rename(path, path + ".r")
                    path += ".r"
                with lock:
                    expected[path] = data
                with fs.open(path, "rb") as f:
                    assert f.read() == data
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sorted(fs.listdir("/shared")) == sorted(p.rsplit("/", 1)[1] for p in expected)
    for p, data in expected.items():
        assert read(fs, p) == data
    fs.close()
    with daxfs.mount(fs.region.path) as again:
        for p, data in expected.items():
            assert read(again, p) == data
        assert again.statvfs().f_bfree == again.statvfs().f_blocks - used_blocks_by_inodes(again)


# ---------------------------------------------------------------------------
# owners: chown and a new file's owner, against the kernel's tmpfs as root
# ---------------------------------------------------------------------------
OWNER_STEPS = [
    # (call, path, arguments): each run on the pool and through os on tmpfs
    ("mkdir", "/sg", ()),
    ("chmod", "/sg", (0o2775,)),
    ("chown", "/sg", (0, 4321)),
    ("create", "/sg/f", ()),  # a setgid directory's group
    ("mkdir", "/sg/sub", ()),  # ... and its setgid bit
    ("create", "/x", ()),
    ("chmod", "/x", (0o6755,)),
    ("chown", "/x", (-1, -1)),  # clears setuid, and setgid with group execute
    ("chmod", "/x", (0o2745,)),
    ("chown", "/x", (1000, 1000)),  # setgid without group execute stays
    ("chmod", "/x", (0o4711,)),
    ("chown", "/x", (1001, -1)),
    ("symlink", "/ln", ("/x",)),
    ("lchown", "/ln", (7, 8)),  # the link itself
    ("chown", "/ln", (9, 10)),  # what it names
    ("chmod", "/sg/sub", (0o6775,)),
    ("chown", "/sg/sub", (5, 6)),  # a directory keeps both bits
]


def _owner_step_os(root: str, call: str, path: str, args) -> None:
    p = root + path
    if call == "mkdir":
        os.mkdir(p)
    elif call == "create":
        open(p, "wb").close()
    elif call == "chmod":
        os.chmod(p, *args)
    elif call == "chown":
        os.chown(p, *args)
    elif call == "lchown":
        os.lchown(p, *args)
    elif call == "symlink":
        os.symlink(root + args[0], p)


def _owner_step_pool(fs, call: str, path: str, args) -> None:
    if call == "create":
        fs.open(path, "wb").close()
    elif call == "symlink":
        fs.symlink(args[0], path)
    else:
        getattr(fs, call)(path, *args)


@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel's side needs root")
def test_owners_follow_the_kernels_rules_for_root(fs, shm_dir):
    """chown, lchown and a new file's owner, step by step on the pool and on
    the kernel's tmpfs: mode, uid and gid of every file equal after each
    step (setuid and setgid cleared by chown as Linux clears them, a setgid
    directory's group and bit inherited)."""
    root = os.path.join(shm_dir, "owners")
    os.mkdir(root)
    old_umask = os.umask(fs.umask)
    try:
        for call, path, args in OWNER_STEPS:
            _owner_step_os(root, call, path, args)
            _owner_step_pool(fs, call, path, args)
            for p in ("/sg", "/sg/f", "/sg/sub", "/x", "/ln"):
                if not os.path.lexists(root + p):
                    continue
                k, d = os.lstat(root + p), fs.lstat(p)
                assert (d.st_mode, d.st_uid, d.st_gid) == (k.st_mode, k.st_uid, k.st_gid), (
                    f"after {call} {path} {args}: {p} is {oct(d.st_mode)} {d.st_uid}:{d.st_gid} "
                    f"in the pool, {oct(k.st_mode)} {k.st_uid}:{k.st_gid} on tmpfs"
                )
    finally:
        os.umask(old_umask)


def test_chown_keeps_what_it_is_not_given_and_sets_the_change_time(fs):
    write(fs, "/f", b"x")
    st = fs.stat("/f")
    fs.chown("/f", 1234, -1)
    after = fs.stat("/f")
    assert (after.st_uid, after.st_gid) == (1234, st.st_gid)
    assert after.st_ctime_ns > st.st_ctime_ns and after.st_mtime_ns == st.st_mtime_ns
    fs.chown("/f", -1, 5678)
    assert (fs.stat("/f").st_uid, fs.stat("/f").st_gid) == (1234, 5678)
    with pytest.raises(FileNotFoundError):
        fs.chown("/missing", 0, 0)
    with pytest.raises(OverflowError):
        fs.chown("/f", 2**32 - 1, 0)  # (uid_t)-1 names no user


def test_owners_survive_a_remount_and_new_files_take_the_creator(pool_path):
    with daxfs.mount(pool_path) as fs:
        write(fs, "/mine", b"")
        assert (fs.stat("/mine").st_uid, fs.stat("/mine").st_gid) == (os.geteuid(), os.getegid())
        fs.creator = lambda: (4000, 4001)  # a FUSE server's: the request's
        write(fs, "/theirs", b"t")
        fs.chown("/mine", 7, 9)
    with daxfs.mount(pool_path) as fs:
        assert (fs.stat("/theirs").st_uid, fs.stat("/theirs").st_gid) == (4000, 4001)
        assert (fs.stat("/mine").st_uid, fs.stat("/mine").st_gid) == (7, 9)
    assert daxfs.check(pool_path).ok


# --------------------------------------------------------------------------
# FIFOs, devices and sockets (issue 16, format version 6)
# --------------------------------------------------------------------------
SPECIAL_STEPS = [
    ("mkfifo", "/p", (0o640,)),
    ("mknod", "/null", (stat.S_IFCHR | 0o666, os.makedev(1, 3))),
    ("mknod", "/loop", (stat.S_IFBLK | 0o600, os.makedev(7, 0))),
    ("mknod", "/far", (stat.S_IFCHR | 0o600, os.makedev(4095, (1 << 20) - 1))),
    ("mknod", "/s", (stat.S_IFSOCK | 0o755,)),
    ("mknod", "/r", (0o644,)),  # no type: a regular file
    ("mkfifo", "/p", (0o600,)),  # EEXIST
    ("mkfifo", "/none/p", (0o600,)),  # ENOENT
    ("mknod", "/d", (stat.S_IFDIR | 0o755,)),  # EPERM: mkdir makes those
    ("mknod", "/bad", (0o170000 | 0o644,)),  # EINVAL: no such type
    ("mkfifo", "/r/p", (0o600,)),  # ENOTDIR
]


def _special_step(call, base, path, args):
    """The step's errno, or 0."""
    try:
        getattr(base[0], call)(base[1] + path, *args)
    except OSError as e:
        return e.errno
    return 0


def test_fifos_devices_and_sockets_are_made_and_reported_as_the_kernel_does(fs, shm_dir):
    root = os.path.join(shm_dir, "special")
    os.mkdir(root)
    old_umask = os.umask(fs.umask)
    try:
        for call, path, args in SPECIAL_STEPS:
            want = _special_step(call, (os, root), path, args)
            got = _special_step(call, (fs, ""), path, args)
            assert got == want, f"{call} {path}: errno {got} in the pool, {want} on tmpfs"
    finally:
        os.umask(old_umask)
    kernel = sorted(os.listdir(root))
    assert sorted(fs.listdir("/")) == kernel
    for name in kernel:
        k, d = os.lstat(f"{root}/{name}"), fs.lstat(f"/{name}")
        assert (d.st_mode, d.st_rdev, d.st_size, d.st_nlink) == (
            k.st_mode, k.st_rdev, k.st_size, k.st_nlink
        ), name  # fmt: skip
    types = {e.name: stat.S_IFMT(e.type_bits()) for e in fs.scandir("/")}
    assert types == {n: stat.S_IFMT(os.lstat(f"{root}/{n}").st_mode) for n in kernel}
    assert not any(e.is_file() or e.is_dir() for e in fs.scandir("/") if e.name != "r")


def test_a_special_file_has_no_bytes_through_the_api_and_survives_a_remount(pool_path):
    with daxfs.mount(pool_path) as fs:
        fs.mkfifo("/p")
        fs.mknod("/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        for path in ("/p", "/null"):
            for mode in ("rb", "r+b", "wb", "ab", "xb"):
                with pytest.raises(OSError) as e:
                    fs.open(path, mode).close()
                assert e.value.errno == (errno.EEXIST if mode == "xb" else errno.ENXIO)
            with pytest.raises(OSError) as e:
                fs.truncate(path, 0)
            assert e.value.errno == errno.EINVAL
            with pytest.raises(OSError) as e:
                fs.fallocate(path, 0, 4096)
            assert e.value.errno == errno.ENODEV
            with pytest.raises(OSError) as e:
                fs.map(path)
            assert e.value.errno == errno.ENODEV
        with pytest.raises(OSError) as e:
            fs.mknod("/big", stat.S_IFCHR, os.makedev(4096, 0))  # past 12 bits of major
        assert e.value.errno == errno.EINVAL
        fs.chmod("/p", 0o600)
        fs.chown("/null", 12, 34)
        fs.link("/p", "/p2")
        fs.rename("/null", "/zero")
    with daxfs.mount(pool_path) as fs:
        assert stat.S_ISFIFO(fs.lstat("/p2").st_mode) and fs.lstat("/p").st_nlink == 2
        assert stat.S_IMODE(fs.lstat("/p").st_mode) == 0o600
        z = fs.lstat("/zero")
        assert stat.S_ISCHR(z.st_mode) and (os.major(z.st_rdev), os.minor(z.st_rdev)) == (1, 3)
        assert (z.st_uid, z.st_gid, z.st_size, z.st_blocks) == (12, 34, 0, 0)
        for path in ("/p", "/p2", "/zero"):
            fs.unlink(path)
        assert fs.listdir("/") == []
    assert daxfs.check(pool_path).ok


# A write of a small file asks its block map once (Linux's iomap: the map of
# the range, holes allocated on the way, then the copy acts on that answer),
# whatever it meets: a new file, an append inside the last block or past it,
# a hole in the middle (a file truncated up), a gap past the end (left a
# hole; the old last block's bytes past the end, made non-zero by a
# truncate down, zeroed).  The bytes are checked against a bytearray.
WRITES_ONE_MAP = {  # case: (bytes first written, then truncated to, write at, length)
    "new file": (b"", None, 0, 4096),
    "append in the last block": (b"a" * 5000, None, 5000, 300),
    "append past the last block": (b"a" * 8192, None, 8192, 5000),
    "into a hole": (b"", 64 * 1024, 20000, 9000),
    "past the end, a gap": (b"a" * 5000, 100, 30000, 700),
    "overwrite and grow": (b"a" * 6000, None, 4000, 9000),
}


@pytest.mark.parametrize("case", list(WRITES_ONE_MAP))
def test_a_small_write_asks_the_block_map_once(fs, monkeypatch, case):
    before, size, off, n = WRITES_ONE_MAP[case]
    model = bytearray(before)
    with fs.open("/f", "wb") as f:
        f.write(before)
        if size is not None:
            f.truncate(size)
            model = model[:size] + bytes(max(0, size - len(model)))
    calls = []
    real = Inode.iomap

    def counted(self, o, length):
        calls.append((o, length))
        return real(self, o, length)

    monkeypatch.setattr(Inode, "iomap", counted)
    data = os.urandom(n)
    with fs.open("/f", "r+b", buffering=0) as f:
        f.seek(off)
        f.write(data)
    monkeypatch.undo()
    # An empty file's first data, by a process alone on a tmpfs pool, is
    # said (logical.py): its blocks taken with no map to ask.
    filled = fs.journal.log_records()[-1][1].fills
    assert len(calls) == (0 if case == "new file" else 1), calls
    assert bool(filled) == (case == "new file"), filled
    if off > len(model):
        model.extend(bytes(off - len(model)))
    model[off : off + n] = data
    assert get(fs, "/f") == bytes(model)
    assert fs.stat("/f").st_size == len(model)


# ---------------------------------------------------------------------------
# read_bytes / write_bytes (pathlib's names)
# ---------------------------------------------------------------------------
def test_write_bytes_makes_or_replaces_a_file_in_one_commit(fs):
    seq = fs.journal.peek()
    assert fs.write_bytes("/new", memoryview(b"abcd")) == 4
    assert fs.journal.peek() == seq + 1  # the name, the inode and the data at once
    assert fs.read_bytes("/new") == b"abcd"
    seq = fs.journal.peek()
    assert fs.write_bytes("/new", bytearray(b"xy")) == 2  # emptied and written at once
    assert fs.journal.peek() == seq + 1
    assert fs.read_bytes("/new") == b"xy"
    fs.symlink("new", "/link")
    fs.write_bytes("/link", b"through")  # a symlink is followed, as by open "wb"
    assert fs.read_bytes("/new") == b"through" and fs.readlink("/link") == "new"
    assert fs.write_bytes(b"/empty", b"") == 0
    assert fs.read_bytes(pathlib.PurePosixPath("/empty")) == b""
    with pytest.raises(TypeError):
        fs.write_bytes("/s", "text")  # as pathlib: bytes only


def test_replace_with_puts_a_new_file_in_place_as_a_rename_would(fs):
    """_replace_with (DaxStore's replace of a key): one commit; the name
    then holds a new inode; the old file loses only that name, and its
    readers, a mapping included, keep its bytes (no EBUSY, unlike
    write_bytes); it is freed with its last user."""
    fs.mkdir("/d")
    free = fs.statvfs().f_bfree  # (the root directory has its block now)
    seq = fs.journal.peek()
    fs._replace_with("/k", b"one" * 2000)  # a new name
    assert fs.journal.peek() == seq + 1 and fs.read_bytes("/k") == b"one" * 2000
    old_ino = fs.stat("/k").st_ino
    fs.link("/k", "/other")
    with fs.open("/k", "rb") as reader, fs.map("/k") as mapping:
        seq = fs.journal.peek()
        fs._replace_with("/k", b"two")
        assert fs.journal.peek() == seq + 1  # the inode, its bytes and the name at once
        assert reader.read() == b"one" * 2000 and bytes(mapping.buffer[:3]) == b"one"
    assert fs.read_bytes("/k") == b"two" and fs.stat("/k").st_ino != old_ino
    assert fs.read_bytes("/other") == b"one" * 2000 and fs.stat("/other").st_nlink == 1
    fs.symlink("k", "/sym")
    fs._replace_with(pathlib.PurePosixPath("/sym"), b"three")  # replaced, not followed
    assert fs.read_bytes("/k") == b"two" and not fs.islink("/sym")
    assert fs.read_bytes("/sym") == b"three"
    for path, code in [("/d", errno.EISDIR), ("/k/", errno.ENOTDIR), ("/none/x", errno.ENOENT),
                       ("/k/x", errno.ENOTDIR), ("/", errno.EISDIR)]:  # fmt: skip
        with pytest.raises(OSError) as e:
            fs._replace_with(path, b"x")
        assert e.value.errno == code, path
    with pytest.raises(ValueError):
        fs._replace_with("/big", memoryview(bytearray(fs.WRITE_PIECE + 1)))
    for name in ("/k", "/other", "/sym"):
        fs.unlink(name)
    assert fs.statvfs().f_bfree == free  # nothing kept past its users


def test_unlink_names_removes_a_directorys_files_in_batches_as_unlink_each_would(fs):
    """_unlink_names (rm -r's files, fsspec and zarr): UNLINK_BATCH names a
    commit; a missing name or a directory is left and said; symlinks go,
    not followed; hard links keep their file; an open file and a mapped
    one stay readable until their last user, then their space comes back;
    the directory's own errors come first, before anything is removed."""
    from daxfs.namespace import UNLINK_BATCH

    fs.mkdir("/d")
    fs.mkdir("/d/sub")
    fs.write_bytes("/target", b"t")
    free = fs.statvfs().f_bfree
    names = [f"f{i}" for i in range(2 * UNLINK_BATCH + 3)]
    for i, name in enumerate(names):
        fs.write_bytes("/d/" + name, bytes([i]) * 5000)
    fs.symlink("/target", "/d/link")
    fs.link("/d/f0", "/kept")
    asked = names + ["link", "sub", "gone"]
    with fs.open("/d/f1", "rb") as reader, fs.map("/d/f2") as mapping:
        mtime = fs.stat("/d").st_mtime_ns
        seq = fs.journal.peek()
        left = fs._unlink_names("/d", asked)
        assert left == [("sub", errno.EISDIR), ("gone", errno.ENOENT)]
        assert fs.journal.peek() == seq + -(-len(asked) // UNLINK_BATCH)
        assert fs.listdir("/d") == ["sub"] and fs.stat("/d").st_mtime_ns >= mtime
        assert reader.read() == b"\x01" * 5000 and bytes(mapping.buffer[:2]) == b"\x02\x02"
    assert fs.read_bytes("/target") == b"t" and fs.read_bytes("/kept") == b"\x00" * 5000
    assert fs.stat("/kept").st_nlink == 1
    fs.unlink("/kept")
    assert fs.statvfs().f_bfree == free  # every file's space back, the held ones too
    for directory, code in [("/target", errno.ENOTDIR), ("/none", errno.ENOENT)]:
        with pytest.raises(OSError) as e:
            fs._unlink_names(directory, ["target"])
        assert e.value.errno == code
    assert fs._unlink_names("/none", []) == []  # (nothing asked: nothing looked at)
    for bad in ("", ".", "..", "a/b", "a\0"):
        with pytest.raises(ValueError):
            fs._unlink_names("/", ["target", bad])
        assert fs.exists("/target")  # refused before any was removed


def test_rmtree_removes_a_tree_of_any_depth_and_follows_no_symlink(fs):
    """rmtree as shutil.rmtree: everything below, depth first with no
    recursion limit (2,000 levels), symlinks removed and never followed,
    an open file kept for its reader; the root, a symlink, a file and a
    last name of "." or ".." refused before anything is removed."""
    fs.mkdir("/keep")
    fs.write_bytes("/keep/f", b"k")
    fs.write_bytes("/keep/g", b"g")
    free = fs.statvfs().f_bfree
    deep = "/t"
    fs.mkdir(deep)
    for _ in range(2000):
        deep += "/d"
        fs.mkdir(deep)
    fs.write_bytes(deep + "/leaf", b"x" * 5000)
    for i in range(40):
        fs.write_bytes(f"/t/f{i}", b"y" * 100)
    fs.symlink("/keep", "/t/to-keep")
    fs.link("/keep/g", "/t/hard-g")
    with fs.open("/t/f3", "rb") as reader:
        fs.rmtree("/t")
        assert not fs.exists("/t") and reader.read() == b"y" * 100
    assert fs.read_bytes("/keep/f") == b"k" and fs.read_bytes("/keep/g") == b"g"
    assert fs.stat("/keep/g").st_nlink == 1
    assert fs.statvfs().f_bfree == free
    fs.symlink("/keep", "/link")
    for path, code in [("/", errno.EBUSY), ("/keep/..", errno.EINVAL), ("/keep/.", errno.EINVAL),
                       ("/link", errno.ENOTDIR), ("/keep/f", errno.ENOTDIR),
                       ("/none", errno.ENOENT)]:  # fmt: skip
        with pytest.raises(OSError) as e:
            fs.rmtree(path)
        assert e.value.errno == code, path
    assert fs.listdir("/keep") == ["f", "g"] and fs.islink("/link")


def test_read_bytes_answers_from_the_caches_only_when_they_are_current(fs):
    fs.write_bytes("/f", b"one")
    assert fs.read_bytes("/f") == b"one"
    assert fs._read_file_cached("/f") == b"one"  # (cached: no lock, no pin)
    with fs.open("/f", "r+b") as f:
        f.write(b"two")  # an overwrite in place, from the cache's inode
    assert fs.read_bytes("/f") == b"two"
    for path, err in (("/", errno.EISDIR), ("/missing", errno.ENOENT), ("/f/x", errno.ENOTDIR)):
        with pytest.raises(OSError) as e:
            fs.read_bytes(path)
        assert e.value.errno == err
    assert not fs._open  # nothing left pinned


@pytest.mark.parametrize(
    "text,kw",
    [
        ("plain\nlines\r\nand \r more", {}),
        ("ünïcode ✓\n", {"encoding": "utf-8"}),
        ("bom\n", {"encoding": "utf-16"}),
        ("a\nb\n", {"newline": "\r\n"}),
        ("a\nb\r\n", {"newline": ""}),
        ("caf\udce9\n", {"encoding": "ascii", "errors": "surrogateescape"}),
    ],
)
def test_read_text_and_write_text_as_pathlib(fs, tmp_path, text, kw):
    model = tmp_path / "t"
    assert fs.write_text("/t", text, **kw) == model.write_text(text, **kw)
    assert fs.read_bytes("/t") == model.read_bytes()
    rkw = {k: v for k, v in kw.items() if k != "newline"}
    assert fs.read_text("/t", **rkw) == model.read_text(**rkw)
    with pytest.raises(TypeError):
        fs.write_text("/t", b"bytes")


def test_an_unmounted_pool_lets_its_caches_go_without_the_collector(pool_path):
    """A FileSystem sits in reference cycles (its threads, its handles), so
    what it cached lived until the collector's next full pass, which then
    walked every inode and name of the pool: in a benchmark's children,
    forked after a 100,000-file pool was built and closed, that pass took
    tens of milliseconds at random calls.  close() lets the caches go."""
    import gc
    import weakref

    gc.disable()
    try:
        fs = daxfs.mount(pool_path)
        fs.mkdir("/d")
        for i in range(50):
            fs.write_bytes(f"/d/f{i}", b"x")
        ino = fs.stat("/d/f7").st_ino
        inode, d = fs.inodes.cache[ino], fs.dirs[fs.stat("/d").st_ino]
        gone = [weakref.ref(inode), weakref.ref(d)]
        del inode, d
        fs.close()
        assert [r() for r in gone] == [None, None]
        with pytest.raises(ValueError):
            fs.stat("/d/f7")
    finally:
        gc.enable()
    with daxfs.mount(pool_path) as fs:
        assert len(fs.listdir("/d")) == 50


def test_threads_making_and_unlinking_small_files_keep_the_allocator_right(fs):
    """Said creates take blocks and said unlinks give them back, from several
    threads of one mount at once, with the interpreter switching threads as
    often as it can: the allocator is edited under the thread lock only (a
    batch of said unlinks was once given back after the lock was let go),
    so the free space counted, the checker and a new mount all agree."""
    nthreads, rounds, per_round = 4, 30, 40
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            fs.mkdir(f"/t{t}")
            for r in range(rounds):
                names = [f"/t{t}/f{r}-{i}" for i in range(per_round)]
                for i, p in enumerate(names):
                    if i % 2:
                        fs.write_bytes(p, b"w" * 4096)
                    else:
                        with fs.open(p, "wb") as f:
                            f.write(b"o" * 4096)
                for p in names[: per_round - 2]:
                    fs.unlink(p)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    run_threads_switching_often(worker, nthreads)
    assert not errors, errors
    kept = sum(len(fs.listdir(f"/t{t}")) for t in range(nthreads))
    assert kept == nthreads * rounds * 2
    space_agrees_checked_and_remounted(fs)


def space_agrees_checked_and_remounted(fs) -> None:
    """The free space counted is what the files leave; ``fs`` is unmounted,
    the checker finds the pool clean, and a new mount counts the same."""
    st = fs.statvfs()
    assert st.f_bfree == st.f_blocks - used_blocks_by_inodes(fs)
    path = fs.region.path
    fs.close()
    assert daxfs.check(path).ok
    with daxfs.mount(path) as again:
        assert again.statvfs().f_bfree == st.f_bfree


# Each file of the thread stress below holds one byte value (its tag) or
# zeros (a hole, or a truncate that grew it), whatever thread wrote it.
_STRESS_NAMES = 24


def _stress_tag(t: int, n: int) -> int:
    return (t * _STRESS_NAMES + n) % 250 + 1


def _stress_bytes_ok(path: str, data: bytes) -> bool:
    t, n = path.split("/")[1], path.rsplit("/f", 1)[1].rstrip("r")
    return set(data) <= {0, _stress_tag(int(t[1:]), int(n))}


_STRESS_ERRNOS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR}


def _stress_step(fs, rng: random.Random, t: int, bad: list) -> None:
    """One call of the thread stress: mostly on this thread's directory,
    reads and looks often on the others'."""
    op = rng.random()
    d = t if op < 0.45 else rng.randrange(4)
    n = rng.randrange(_STRESS_NAMES)
    path, fill = f"/t{d}/f{n}", bytes([_stress_tag(d, n)])
    if op < 0.12:
        with fs.open(path, "wb") as f:
            f.write(fill * rng.choice([10, 4096, 9000, 70_000]))
    elif op < 0.2:
        fs.write_bytes(path, fill * rng.choice([1, 4096, 5000]))
    elif op < 0.25:
        with fs.open(path, "ab") as f:
            f.write(fill * rng.choice([1, 100, 5000]))
    elif op < 0.3:
        fs.truncate(path, rng.randrange(20_000))
    elif op < 0.38:
        fs.unlink(path)
    elif op < 0.41:  # (to the same name with an "r": the tag stays right)
        fs.rename(path, path + "r") if rng.random() < 0.5 else fs.rename(path + "r", path)
    elif op < 0.43:
        fs.mkdir(f"/t{d}/d{n}")
    elif op < 0.45:
        fs.rmdir(f"/t{d}/d{n}")
    elif op < 0.6:
        got = fs.read_bytes(path)
        if not _stress_bytes_ok(path, got):
            bad.append((path, sorted(set(got))[:4]))
    elif op < 0.7:
        with fs.open(path, "rb") as f:
            f.seek(rng.randrange(5000))
            got = f.read(rng.choice([1, 4096, 100_000]))
        if not _stress_bytes_ok(path, got):
            bad.append((path, sorted(set(got))[:4]))
    elif op < 0.75:
        fs.stat(path)
    elif op < 0.8:  # (by its number, as the FUSE server calls: it may be gone since)
        fs.stat(Ino(fs.stat(path).st_ino))
    elif op < 0.85:
        fs.listdir(f"/t{d}")
    elif op < 0.95:
        with fs.open(path, "r+b") as f:
            f.seek(rng.randrange(3000))
            f.write(fill * rng.choice([1, 4096]))
    else:
        fs.statvfs()


def test_threads_of_one_mount_calling_everything_at_once_keep_the_pool_whole(fs):
    """Four threads of one mount make, write, append to, truncate, rename,
    unlink, read and stat (by path and by number) files and directories at
    once, the interpreter switching threads as often as it can: no call
    fails but with an errno its race may give, every read sees only bytes
    some thread wrote to that file (or zeros), and the checker, the free
    space counted and a new mount agree afterwards."""
    steps, errors, bad = 1500, [], []

    def worker(t: int) -> None:
        rng = random.Random(t)
        try:
            for _ in range(steps):
                try:
                    _stress_step(fs, rng, t, bad)
                except OSError as e:
                    if e.errno not in _STRESS_ERRNOS:
                        raise
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    for t in range(4):
        fs.mkdir(f"/t{t}")
    run_threads_switching_often(worker, 4)
    assert not errors, errors
    assert not bad, bad[:5]
    for dirpath, _dirs, files in fs.walk("/"):
        for name in files:
            p = dirpath.rstrip("/") + "/" + name
            assert _stress_bytes_ok(p, read(fs, p)), p
    space_agrees_checked_and_remounted(fs)
