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
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import daxfs
from conftest import get, in_forked_child, is_mounted, needs_fuse, unmount
from test_fuse import Mount, assert_clean, daemons_serving, empty_dir, wait_until

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
MODES = [0o600, 0o644, 0o755, 0o4755, 0o2755, 0o2745, 0o6777, 0o1777]
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
                        "write_only",
                        "open_trunc",
                        "read",
                        "mkdir",
                        "rmdir",
                        "unlink",
                        "mkfifo",
                        "truncate",
                        "utime_now",
                        "append",
                        "open_creat",
                        "ftruncate",
                        "access",
                        "stat",
                        "listdir",
                        "symlink",
                        "readlink",
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
    if name == "write_only":  # (no page cache through the mount: a direct write)
        fd = os.open(p, os.O_WRONLY)
        try:
            return os.write(fd, b"w")
        finally:
            os.close(fd)
    if name == "open_trunc":
        os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
        return None
    if name in ("append", "open_creat", "ftruncate"):
        how = {"append": os.O_APPEND, "open_creat": os.O_CREAT, "ftruncate": 0}[name]
        fd = os.open(p, os.O_WRONLY | how, 0o666)
        try:
            return os.ftruncate(fd, 2) if name == "ftruncate" else os.write(fd, b"+")
        finally:
            os.close(fd)
    if name == "access":
        return [os.access(p, m) for m in (os.R_OK, os.W_OK, os.X_OK)]
    if name == "stat":
        s = os.stat(p)  # (a directory's size is each file system's own)
        size = s.st_size if stat.S_ISREG(s.st_mode) else None
        return [s.st_mode, s.st_uid, s.st_gid, size, s.st_nlink]
    if name == "listdir":
        return sorted(os.listdir(p))
    if name == "symlink":
        return os.symlink("target", p)
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


EXAMPLES = int(os.environ.get("DAXFS_USERS_EXAMPLES", "40"))  # (400 before a release)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
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


SETID_STEPS = [
    (1001, ("write", "/pub/mine")),
    (1001, ("write_only", "/pub/mine")),
    (1001, ("open_trunc", "/pub/mine")),
    (1001, ("truncate", "/pub/mine")),
    (0, ("write_only", "/pub/mine")),  # (root keeps the bits: CAP_FSETID)
    (0, ("open_trunc", "/pub/mine")),
    (0, ("chown", "/pub/mine", -1, -1)),
    (0, ("chown", "/pub/mine", 1001, -1)),
    (1000, ("chown", "/pub/mine", -1, 2000)),
]


@pytest.mark.parametrize("mode", [0o6777, 0o6767], ids=["group-executable", "not"])
@pytest.mark.parametrize("uid,op", SETID_STEPS, ids=lambda v: str(v).replace(" ", ""))
def test_setuid_and_setgid_go_as_on_tmpfs(sides, uid, op, mode):
    """A write, a truncate or a chown drops setuid, and setgid when the file
    is group-executable, as Linux does; writes and truncates by root keep
    them.  A kept bit would let a user plant a program that runs as its
    owner.  Every way the kernel asks for it: the page-cache write (a
    SETATTR before it), a direct write (a flag in the WRITE), an O_TRUNC
    open (a flag in the OPEN) and a chown the server applies the rule to."""
    kernel, mnt = sides
    for root in sides:
        empty_dir(root)
        build(root)
        os.chmod(root + "/pub/mine", mode)
    assert as_user(uid, mnt, op) == as_user(uid, kernel, op)
    assert tree(mnt) == tree(kernel)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# ---------------------------------------------------------------------------
# a user who is not root mounts a pool of their own
# ---------------------------------------------------------------------------
USER = 1000


def _as_user_env() -> tuple[list[str], dict[str, str]] | None:
    """An interpreter and environment with which USER can import daxfs and
    its dependencies: this process's own may lie where only root can go
    (a pyenv Python under /root), so the system's Python of the same
    version is taken, given this checkout's source and site-packages.
    None when USER cannot run daxfs so (the test is skipped)."""
    import site

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if not os.path.exists(python):
            continue
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "PYTHONPATH": os.pathsep.join(
                [os.path.dirname(os.path.dirname(daxfs.__file__)), *site.getsitepackages()]
            ),
        }
        try:
            probe = subprocess.run(
                [python, "-c", "import daxfs.cli, daxfs.fuse, numpy, crc32c"],
                env=env,
                user=USER,
                group=USER,
                extra_groups=[],
                capture_output=True,
            )
        except PermissionError:
            continue  # (not executable by USER: under /root, say)
        if probe.returncode == 0:
            return [python, "-c", "from daxfs.cli import main; main()"], env
    return None


def test_a_user_who_is_not_root_mounts_serves_and_unmounts_a_pool_of_their_own(tmp_path):
    """As user 1000: mkfs, `daxfs mount` (fusermount3 mounts, the server
    forks into the background), files written and read back through the
    mount by ordinary tools, owned by the user, then `fusermount3 -u`: the
    server ends, and the pool is clean and holds what was written."""
    found = _as_user_env()
    if found is None:
        pytest.skip(f"no Python with which user {USER} can import this daxfs")
    daxfs_cmd, env = found
    base = Path(tempfile.mkdtemp(prefix="daxfs-user-", dir="/dev/shm"))
    # fusermount3 opens /dev/fuse with the user's rights: distributions
    # make it 0666; this machine's is 0600, so it is for this test.
    device_mode = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
    os.chmod("/dev/fuse", device_mode | 0o666)
    try:
        os.chown(base, USER, USER)
        pool, mnt = base / "mine.pool", base / "mnt"

        def run(*argv, check=True):
            return subprocess.run(
                list(argv), env=env, user=USER, group=USER, extra_groups=[],
                capture_output=True, text=True, check=check, cwd=base, timeout=60,
            )  # fmt: skip

        run("mkdir", str(mnt))
        run(*daxfs_cmd, "mkfs", "-s", "64M", str(pool))
        started = run(*daxfs_cmd, "mount", str(pool), str(mnt), check=False)
        assert started.returncode == 0, started.stderr
        try:
            assert wait_until(lambda: is_mounted(mnt)), "not mounted"
            run("sh", "-c", f"printf 'hello' > {mnt}/a && mkdir {mnt}/d && cp {mnt}/a {mnt}/d/b")
            assert run("cat", f"{mnt}/d/b").stdout == "hello"
            # (Only the user may look: root too is kept out of a mount made
            # without allow_other, as FUSE does.)
            assert run("stat", "-c", "%u %g", f"{mnt}/d/b").stdout.split() == [str(USER)] * 2
            with pytest.raises(PermissionError):
                os.lstat(mnt / "d" / "b")
        finally:
            run("fusermount3", "-u", str(mnt), check=False)
        assert wait_until(lambda: not is_mounted(mnt)), "still mounted"
        assert wait_until(lambda: not daemons_serving(mnt)), "the server is still running"
        assert_clean(str(pool))
        with daxfs.mount(str(pool), readonly=True) as fs:
            assert get(fs, "/d/b") == b"hello"
            assert fs.stat("/a").st_uid == USER
        # Stopped by a signal instead, the server unmounts itself, the way
        # a user may (fusermount3 -u -z: it is not root).
        run(*daxfs_cmd, "mount", str(pool), str(mnt))
        assert wait_until(lambda: is_mounted(mnt)), "not mounted again"
        (server,) = daemons_serving(mnt)
        os.kill(server, signal.SIGTERM)
        assert wait_until(lambda: not is_mounted(mnt) and not daemons_serving(mnt)), "not unmounted"
        assert_clean(str(pool))
    finally:
        if is_mounted(base / "mnt"):
            unmount(base / "mnt")
        os.chmod("/dev/fuse", device_mode)
        shutil.rmtree(base, ignore_errors=True)
