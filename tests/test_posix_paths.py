"""Path resolution and errno against Linux itself.

Each sequence of calls runs twice: on a pool, and through ``os`` on a real
tmpfs directory in a child process chrooted into it, so that absolute
paths, ".." at the root and absolute symlink targets mean the same on both
sides.  Every call must end the same way (its result, or its errno) and the
trees must match after every call."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import daxfs
from conftest import in_forked_child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root (CI runs as root)")

# A small world with every kind of name a path can meet.
SETUP = [
    ("mkdir", "/d"),
    ("mkdir", "/d/e"),
    ("mkdir", "/y"),
    ("write", "/f", "w"),
    ("write", "/d/g", "w"),
    ("symlink", "d", "/ld"),  # to a directory
    ("symlink", "/f", "/lf"),  # to a file, absolute
    ("symlink", "nowhere", "/ln"),  # dangling
    ("symlink", "sub/", "/ls"),  # dangling, ending in "/"
    ("symlink", "p2", "/p1"),  # a loop
    ("symlink", "p1", "/p2"),
]


class Os:
    """The os calls, in the shape of the pool's API."""

    stat, lstat, mkdir, rmdir, unlink = os.stat, os.lstat, os.mkdir, os.rmdir, os.unlink
    rename, link, symlink, readlink = os.rename, os.link, os.symlink, os.readlink
    truncate, chmod, listdir, mkfifo = os.truncate, os.chmod, os.listdir, os.mkfifo
    open = staticmethod(open)


def apply(api, call: tuple) -> object:
    """Run one call; return a JSON-able summary of its result."""
    op, *args = call
    if op == "pwrite":  # ten bytes at an offset, leaving holes before them
        path, off = args
        with api.open(path, "r+b") as f:
            f.seek(off)
            return f.write(b"0123456789")
    if op == "seek":
        path, off, whence = args
        with api.open(path, "rb", buffering=0) as f:
            return f.seek(off, whence)
    if op == "write":
        path, mode = args
        with api.open(path, mode + "b") as f:
            if mode == "r":
                return f.read().decode()
            f.write(path.encode())
        return None
    result = getattr(api, op)(*args)
    if op in ("stat", "lstat"):
        return [stat.S_IFMT(result.st_mode), result.st_nlink]
    if op == "listdir":
        return sorted(result)
    return result


def outcome(api, call: tuple) -> list:
    try:
        return ["ok", apply(api, call)]
    except OSError as e:
        return ["error", e.errno]


def tree(api, top: str = "/") -> dict[str, list]:
    """Every name under ``top`` with what it is (directory sizes differ
    between file systems by design, so a directory is type and links)."""
    out = {}
    for name in api.listdir(top):
        path = top.rstrip("/") + "/" + name
        st_ = api.lstat(path)
        entry = [stat.S_IFMT(st_.st_mode), stat.S_IMODE(st_.st_mode), st_.st_nlink]
        if stat.S_ISDIR(st_.st_mode):
            out[path] = entry
            out.update(tree(api, path))
        elif stat.S_ISLNK(st_.st_mode):
            out[path] = [*entry, api.readlink(path)]
        elif stat.S_ISFIFO(st_.st_mode):  # (opening one on Linux would wait for a writer)
            out[path] = entry
        else:
            with api.open(path, "rb") as f:
                out[path] = [*entry, f.read().decode()]
    return out


def run_on_linux(calls: list[tuple]) -> list:
    """[outcome, tree] after each call, from a chrooted child on tmpfs."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as root:

        def in_chroot() -> list:
            os.chroot(root)
            os.chdir("/")
            for call in SETUP:
                apply(Os, call)
            return [[outcome(Os, c), tree(Os)] for c in calls]

        return in_forked_child(in_chroot)


def run_on_pool(fs, calls: list[tuple]) -> list:
    for call in SETUP:
        apply(fs, call)
    return json.loads(json.dumps([[outcome(fs, c), tree(fs)] for c in calls]))


def assert_same(fs, calls: list[tuple]) -> None:
    linux, pool = run_on_linux(calls), run_on_pool(fs, calls)
    for call, (l_out, l_tree), (p_out, p_tree) in zip(calls, linux, pool, strict=True):
        assert p_out == l_out, f"{call}: Linux {l_out}, daxfs {p_out}"
        assert p_tree == l_tree, f"after {call} the trees differ"


# Each of these once differed from Linux (found by running them side by side).
CASES = [
    # FIFOs (version 6): made where the path says, never through a last symlink.
    ("mkfifo", "/ld/q"),
    ("mkfifo", "/d/q"),
    ("mkfifo", "/lf"),
    ("mkfifo", "/ln"),
    ("mkfifo", "/nowhere/q"),
    ("mkfifo", "/q/"),
    ("mkfifo", "/f/q"),
    ("lstat", "/d/q"),
    ("truncate", "/d/q", 3),
    ("rename", "/d/q", "/q2"),
    ("link", "/q2", "/q3"),
    ("unlink", "/q2"),
    ("rename", "/d/.", "/z"),  # EBUSY, not a rename of d
    ("rename", "/f", "/d/."),
    ("rmdir", "/d/e/."),  # EINVAL, not a removal of e
    ("rmdir", "/d/e/.."),  # ENOTEMPTY
    ("stat", "/f/."),  # ENOTDIR: f is not a directory
    ("write", "/f/.", "r"),
    ("unlink", "/f/."),
    ("rmdir", "/ld/"),  # the symlink, not the directory it names
    ("rename", "/ld/", "/z"),
    ("rename", "/d/e", "/ld/"),
    ("unlink", "/ld/"),
    ("rmdir", "/p1/"),
    ("unlink", "/p1/"),
    ("rename", "/p1/", "/z"),
    ("write", "/f/", "w"),  # EISDIR: O_CREAT with a trailing slash
    ("write", "/f/", "a"),
    ("write", "/f/", "x"),
    ("write", "/new/", "w"),
    ("link", "/f", "/g/"),  # ENOENT: a new name ending in "/"
    ("symlink", "f", "/g/"),
    ("symlink", "d", "/g/"),
    ("write", "/ls", "w"),  # the target ends in "/": EISDIR
    ("stat", ""),  # the empty path names nothing
    ("chmod", "", 0o700),
    ("listdir", ""),
    ("mkdir", ""),
    ("rmdir", ""),
    ("stat", "/" + "/".join(["a"] * 2100)),  # over PATH_MAX
    ("write", "/" + "/".join(["a"] * 2100), "w"),
    ("symlink", "b" * 4096, "/lb"),
    ("symlink", "b" * 4095, "/lb"),
    ("rmdir", "/"),
    ("rename", "/", "/z"),
    ("rename", "/d/..", "/z"),
    ("mkdir", "/d/."),
    ("link", "/f", "/d/."),
    ("stat", "/lf/"),
    ("write", "/ln", "w"),  # creates the target of a dangling link
    ("write", "/ln", "x"),  # ... but not with O_EXCL
    ("truncate", "/f", 30000),  # a hole after the first page
    ("pwrite", "/f", 20000),
    ("seek", "/f", 0, os.SEEK_DATA),  # lseek(2)'s SEEK_DATA and SEEK_HOLE
    ("seek", "/f", 0, os.SEEK_HOLE),
    ("seek", "/f", 5000, os.SEEK_DATA),
    ("seek", "/f", 20000, os.SEEK_HOLE),
    ("seek", "/f", 30000, os.SEEK_DATA),  # ENXIO at the end
    ("seek", "/f", 0, 7),  # EINVAL
]


def test_calls_that_once_differed_from_linux(fs):
    assert_same(fs, CASES)


# ---------------------------------------------------------------------------
# Random sequences over paths built from the names above, ".", ".." and "/".
# ---------------------------------------------------------------------------
NAMES = ["d", "e", "f", "g", "y", "ld", "lf", "ln", "ls", "p1", "new", ".", ".."]
paths = st.builds(
    lambda lead, parts, trail: ("/" if lead else "") + "/".join(parts) + ("/" if trail else ""),
    st.booleans(),
    st.lists(st.sampled_from(NAMES), min_size=0, max_size=3),
    st.booleans(),
)
calls = st.one_of(
    st.tuples(st.sampled_from(["stat", "lstat", "rmdir", "unlink", "readlink", "listdir"]), paths),
    st.tuples(st.just("mkdir"), paths),
    st.tuples(st.just("write"), paths, st.sampled_from(["r", "w", "a", "x"])),
    st.tuples(st.sampled_from(["rename", "link"]), paths, paths),
    st.tuples(st.just("symlink"), st.sampled_from(["d", "f", "/d/e", "nowhere", "d/", "."]), paths),
    st.tuples(st.just("truncate"), paths, st.sampled_from([3, 4096, 12288, 30000])),
    st.tuples(st.just("pwrite"), paths, st.sampled_from([0, 5000, 9000, 20000])),
    st.tuples(
        st.just("seek"),
        paths,
        st.sampled_from([-1, 0, 1, 4096, 5000, 8192, 20000, 40000]),
        st.sampled_from([os.SEEK_DATA, os.SEEK_HOLE, 7]),
    ),
    st.tuples(st.just("chmod"), paths, st.sampled_from([0o700, 0o644])),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(calls, min_size=1, max_size=8))
def test_random_calls_end_as_on_linux(make_pool, sequence):
    path = make_pool(size=8 << 20)
    try:
        with daxfs.mount(path) as fs:
            assert_same(fs, sequence)
    finally:
        os.unlink(path)


def test_inode_paths_name_an_inode_or_a_name_in_a_directory(fs):
    """path.Ino and path.At, the paths the FUSE server passes: an inode
    itself (never followed, reached while open after its last name went)
    and one name in a directory given by inode (no PATH_MAX: the kernel
    checked the caller's path)."""
    from daxfs.path import At, Ino

    fs.mkdir("/d")
    with fs.open("/d/f", "wb") as f:
        f.write(b"data")
    fs.symlink("f", "/d/link")
    d, f_ino = fs.stat("/d").st_ino, fs.stat("/d/f").st_ino
    assert fs.stat(At("f", d)).st_ino == f_ino
    assert fs.stat(At("link", d)).st_ino == f_ino  # followed from its directory
    assert stat.S_ISLNK(fs.lstat(At("link", d)).st_mode)
    link_ino = fs.lstat("/d/link").st_ino
    assert stat.S_ISLNK(fs.stat(Ino(link_ino)).st_mode)  # an inode is never followed
    assert fs.readlink(Ino(link_ino)) == "f"
    assert fs.open(Ino(f_ino), "rb").read() == b"data"
    with pytest.raises(FileNotFoundError):
        fs.stat(At("missing", d))
    with pytest.raises(OSError) as info:
        fs.stat(At("n" * 256, d))
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as info:
        fs.unlink(Ino(f_ino))  # a call on an entry needs a name
    assert info.value.errno == errno.EINVAL
    held = fs.open(Ino(f_ino), "rb")
    fs.unlink(At("f", d))
    assert fs.stat(Ino(f_ino)).st_nlink == 0  # the orphan, while open
    held.close()
    with pytest.raises(FileNotFoundError):
        fs.stat(Ino(f_ino))  # freed at its last close
    fs.unlink(At("link", d))
    fs.rmdir("/d")
    with pytest.raises(FileNotFoundError):
        fs.stat(At("f", d))  # its directory is gone
