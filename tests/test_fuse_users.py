"""Several real users through ``daxfs mount --allow-other``, side by side with
the kernel's tmpfs (issue 16).

Each step runs in a forked child that becomes one of three users (root,
1000, 1001: groups of their own, 1000 also in group 2000) and makes one
call on the mount and on a tmpfs directory given the same tree; the
answers (result or errno) must be equal, and so must the trees as root
sees them after every step: type, mode, owner, group, size, link count,
device numbers and bytes.  The kernel checks permissions on both sides
(FUSE's default_permissions on what getattr reports), so what this holds
daxfs to is the attributes it keeps and reports: owners of new files
(the caller's, or a setgid directory's group), modes after chmod, chown
and writes, sticky directories, special files.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import in_forked_child, needs_fuse
from test_fuse import Mount, assert_clean, empty_dir

pytestmark = [
    needs_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="becoming other users needs root"),
]

USERS = {0: [], 1000: [2000], 1001: []}  # uid -> supplementary groups (gid = uid)

# The tree every example starts from: (path, kind, mode, uid, gid).
TREE = [
    ("/pub", "dir", 0o777, 0, 0),
    ("/tmp", "dir", 0o1777, 0, 0),
    ("/home1000", "dir", 0o700, 1000, 1000),
    ("/home1001", "dir", 0o755, 1001, 1001),
    ("/shared", "dir", 0o2775, 0, 2000),
    ("/f", "file", 0o644, 0, 0),
    ("/secret", "file", 0o600, 0, 0),
    ("/pub/mine", "file", 0o664, 1000, 1000),
    ("/tmp/roots", "file", 0o666, 0, 0),
    ("/tmp/theirs", "file", 0o666, 1001, 1001),
]

PATHS = ["/pub/a", "/pub/mine", "/tmp/a", "/tmp/roots", "/tmp/theirs", "/home1000/a",
         "/home1001/a", "/shared/a", "/shared/d", "/f", "/secret", "/pub"]  # fmt: skip
MODES = [0o600, 0o644, 0o755, 0o4755, 0o2755, 0o1777]
IDS = [-1, 0, 1000, 1001, 2000]

steps = st.lists(
    st.tuples(
        st.sampled_from(sorted(USERS)),
        st.one_of(
            st.tuples(
                st.sampled_from(
                    [
                        "create",
                        "write",
                        "read",
                        "mkdir",
                        "rmdir",
                        "unlink",
                        "mkfifo",
                        "truncate",
                        "utime_now",
                    ]
                ),
                st.sampled_from(PATHS),
            ),  # fmt: skip
            st.tuples(st.just("chmod"), st.sampled_from(PATHS), st.sampled_from(MODES)),
            st.tuples(
                st.just("chown"), st.sampled_from(PATHS), st.sampled_from(IDS), st.sampled_from(IDS)
            ),  # fmt: skip
            st.tuples(
                st.sampled_from(["rename", "link"]), st.sampled_from(PATHS), st.sampled_from(PATHS)
            ),  # fmt: skip
            st.tuples(st.just("utime"), st.sampled_from(PATHS), st.integers(0, 2**33)),
        ),
    ),
    min_size=1,
    max_size=8,
)


def call(root: str, op: tuple) -> object:
    """One call under ``root``; what it returned (JSON-able)."""
    name, path, *args = op
    p = root + path
    if name == "create":
        with open(p, "xb") as f:
            return f.write(b"made")
    if name == "write":
        with open(p, "r+b") as f:
            return f.write(b"written")
    if name == "read":
        # Non-blocking: opening a FIFO to read waits for a writer otherwise.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            return f.read().decode()
    if name in ("rename", "link"):
        return getattr(os, name)(p, root + args[0])
    if name == "utime_now":
        return os.utime(p)
    if name == "utime":
        return os.utime(p, ns=(args[0], args[0] + 1))
    if name == "truncate":
        return os.truncate(p, 0)
    if name == "mkdir":
        return os.mkdir(p, 0o775)
    if name == "mkfifo":
        return os.mkfifo(p, 0o664)
    return getattr(os, name)(p, *args)


def as_user(uid: int, root: str, op: tuple) -> list:
    """["ok", result] or ["error", errno name] of ``op`` made by ``uid``, in a
    forked child (a process changes its ids for good)."""

    def made_by_uid() -> list:
        os.setgroups(USERS[uid])
        os.setgid(uid)
        os.setuid(uid)
        os.umask(0o022)
        try:
            return ["ok", call(root, op)]
        except OSError as e:
            return ["error", errno.errorcode.get(e.errno, str(e.errno))]

    return in_forked_child(made_by_uid)


def tree(root: str) -> dict[str, tuple]:
    """Everything root sees under ``root`` (bytes only of regular files; the
    times of files only where a step set them exactly)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            s = os.lstat(p)
            entry = (s.st_mode, s.st_uid, s.st_gid, s.st_nlink, s.st_rdev)
            if stat.S_ISREG(s.st_mode):
                with open(p, "rb") as f:
                    entry += (f.read().decode(),)
                # Times a step set (or the tree's 7): the same; "now": close enough.
                entry += (s.st_mtime_ns if s.st_mtime_ns <= 2**34 else "now",)
            out[p[len(root) :]] = entry
    return out


def build(root: str) -> None:
    for path, kind, mode, uid, gid in TREE:
        p = root + path
        if kind == "dir":
            os.mkdir(p)
        else:
            with open(p, "wb") as f:
                f.write(b"was")
            os.utime(p, ns=(7, 7))
        os.chown(p, uid, gid)
        os.chmod(p, mode)


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    """(tmpfs root, mount root) with --allow-other, for the whole module."""
    base = tempfile.mkdtemp(prefix="daxfs-users-", dir="/dev/shm")
    os.chmod(base, 0o755)
    kernel, mnt = os.path.join(base, "tmpfs"), os.path.join(base, "mnt")
    os.mkdir(kernel, 0o755)
    os.mkdir(mnt, 0o755)
    import daxfs

    pool = os.path.join(base, "users.pool")
    daxfs.mkfs(pool, "64M")
    m = Mount(pool, Path(mnt), "--allow-other")
    os.chmod(mnt, 0o755)
    try:
        yield kernel, mnt
    finally:
        m.close()
        assert_clean(pool)
        shutil.rmtree(base, ignore_errors=True)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_users_get_through_the_mount_what_tmpfs_gives_them(sides, sequence):
    kernel, mnt = sides
    for root in sides:
        empty_dir(root)
        build(root)
    assert tree(mnt) == tree(kernel)
    for uid, op in sequence:
        want, got = as_user(uid, kernel, op), as_user(uid, mnt, op)
        assert got == want, f"uid {uid} {op}: tmpfs {want}, daxfs {got}"
        assert tree(mnt) == tree(kernel), f"after uid {uid} {op}"


def test_a_setuid_file_written_by_another_user_loses_the_bit_as_on_tmpfs(sides):
    """The kernel asks the server to drop setuid and setgid when someone
    other than root writes (or truncates) the file: a kept bit would let
    them plant a program that runs as its owner."""
    kernel, mnt = sides
    for root in sides:
        empty_dir(root)
        build(root)
        os.chmod(root + "/pub/mine", 0o6777)
    for root in sides:
        assert as_user(1001, root, ("write", "/pub/mine")) == ["ok", 7]
    assert stat.S_IMODE(os.stat(kernel + "/pub/mine").st_mode) == 0o777
    assert tree(mnt) == tree(kernel)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
