"""``daxfs mount``: a pool served through FUSE and used with ordinary tools.

Every test that mounts runs the real command (``daxfs mount``) in a child
process against a fresh pool on tmpfs, uses the mount with real programs
(ls, cp, cat, find, dd, mv, ln, rm, rsync when installed) and Python's own
open(), then unmounts and checks the pool with daxfs.check.  The fixtures
always unmount (lazily if they must) and reap the server, so a failing test
leaves no mount behind.

Skipped, with the reason, only where FUSE cannot work: no /dev/fuse, no
permission on it, or no fusermount3 (``make deps`` installs the fuse3
package).  The CLI's error messages are tested
without FUSE.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import mmap
import os
import posixpath
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from typer.testing import CliRunner

import daxfs
from conftest import is_mounted, needs_fuse, unmount
from daxfs.cli import app
from daxfs.cli import mount as mount_module

MiB = 1 << 20
DAXFS = [sys.executable, "-c", "from daxfs.cli import main; main()"]
MOUNT_TIMEOUT = 15.0


def wait_until(condition, timeout: float = MOUNT_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Mount:
    """A running ``daxfs mount -f POOL DIR`` child."""

    def __init__(self, pool: str, path: Path, *options: str):
        self.pool, self.path = pool, path
        self.log = path.parent / f"{path.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [*DAXFS, "mount", "-f", *options, pool, str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(lambda: is_mounted(path) or self.proc.poll() is not None):
            self.close()
            raise AssertionError(f"not mounted after {MOUNT_TIMEOUT} s: {self.output()}")
        if self.proc.poll() is not None:
            raise AssertionError(f"daxfs mount exited {self.proc.returncode}: {self.output()}")

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """Unmount and wait for the server; its exit status."""
        unmount(self.path)
        return self.wait()

    def wait(self, timeout: float = MOUNT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server still running after unmount: {self.output()}") from None

    def close(self) -> None:
        """Teardown: never leave a mount or a server behind."""
        unmount(self.path)
        if self.proc.poll() is None:
            try:
                self.proc.wait(MOUNT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def mountpoint(tmp_path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.fixture
def start(pool_path, mountpoint):
    """start(*options) -> Mount of the test's pool; all unmounted at teardown."""
    mounts: list[Mount] = []

    def starter(*options: str) -> Mount:
        m = Mount(pool_path, mountpoint, *options)
        mounts.append(m)
        return m

    try:
        yield starter
    finally:
        for m in mounts:
            m.close()


@pytest.fixture
def mnt(start) -> Mount:
    return start()


def run(
    *args: str | os.PathLike, ok: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run a program; with ok, insist that it succeeded."""
    res = subprocess.run([str(a) for a in args], capture_output=True, timeout=timeout)
    if ok:
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-2000:])
    return res


def assert_clean(pool: str) -> None:
    """daxfs.check finds nothing, and the journal was empty (a clean unmount)."""
    report = daxfs.check(pool)
    assert report.ok and not report.errors, report
    assert not [n for n in report.notes if n.startswith("journal")], report.notes


def pool_read(pool: str, path: str) -> bytes:
    with daxfs.mount(pool, readonly=True) as fs, fs.open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------
# ordinary tools
# --------------------------------------------------------------------------
@needs_fuse
def test_ls_l_shows_files_dirs_links_and_daxfs_inode_numbers(mnt):
    (mnt / "dir").mkdir()
    (mnt / "file.txt").write_bytes(b"x" * 1234)
    os.chmod(mnt / "file.txt", 0o640)
    os.symlink("file.txt", mnt / "link")
    lines = run("ls", "-l", mnt.path).stdout.decode().splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in lines}
    assert by_name["dir"].startswith("d")
    assert by_name["file.txt"].startswith("-rw-r----- 1 ")
    assert " 1234 " in by_name["file.txt"]
    assert by_name["link"].startswith("l") and by_name["link"].endswith("link -> file.txt")
    listed_ino = int(run("ls", "-i", mnt / "file.txt").stdout.split()[0])
    assert run("ls", "-a", mnt.path).stdout.decode().split()[:2] == [".", ".."]
    assert mnt.stop() == 0
    with daxfs.mount(mnt.pool, readonly=True) as fs:
        assert fs.stat("/file.txt").st_ino == listed_ino
        assert stat.S_IMODE(fs.stat("/file.txt").st_mode) == 0o640


@needs_fuse
def test_cp_in_and_out_multi_mib_byte_for_byte(mnt, tmp_path):
    data = random.Random(1).randbytes(9 * MiB + 123)
    src, back = tmp_path / "src.bin", tmp_path / "back.bin"
    src.write_bytes(data)
    run("cp", src, mnt / "big.bin")
    run("cp", mnt / "big.bin", back)
    run("cmp", src, back)
    assert os.stat(mnt / "big.bin").st_size == len(data)
    assert mnt.stop() == 0
    assert_clean(mnt.pool)
    assert pool_read(mnt.pool, "/big.bin") == data


@needs_fuse
def test_cat_and_find_walk_a_tree(mnt):
    tree = {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n", "sub/deep/c.bin": bytes(5000)}
    for rel, data in tree.items():
        (mnt / rel).parent.mkdir(parents=True, exist_ok=True)
        (mnt / rel).write_bytes(data)
    (mnt / "empty").mkdir()
    os.symlink("sub/b.txt", mnt / "to-b")
    assert run("cat", mnt / "a.txt", mnt / "to-b").stdout == b"alpha\nbeta\n"

    def find(*args: str) -> list[str]:
        out = run("find", mnt.path, *args).stdout.decode().splitlines()
        return sorted(os.path.relpath(p, mnt.path) for p in out)

    assert find("-type", "f") == sorted(tree)
    assert find("-type", "d") == [".", "empty", "sub", "sub/deep"]
    assert find("-type", "l") == ["to-b"]
    assert find("-name", "*.txt") == ["a.txt", "sub/b.txt"]
    assert find("-size", "+4k") == ["sub/deep/c.bin"]


def cpu_seconds(pid: int) -> float:
    """User and system time a process has used (its /proc stat ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@needs_fuse
def test_a_server_looks_for_requests_briefly_then_sleeps(mnt):
    """After a burst of requests the server polls /dev/fuse for a moment
    (fusewire.POLL_SECONDS: a sleeping server costs each request a wake-up)
    and then sleeps: an idle mount uses no CPU to speak of."""
    for i in range(200):
        (mnt / f"f{i}").write_bytes(b"x")
        assert (mnt / f"f{i}").read_bytes() == b"x"
    time.sleep(0.2)
    before = cpu_seconds(mnt.proc.pid)
    time.sleep(1.0)
    # (A server that never slept would use a whole second; its watcher
    # thread's look every 5 ms uses a few ms.)
    assert cpu_seconds(mnt.proc.pid) - before < 0.15


@needs_fuse
def test_dd_with_block_size_seek_and_notrunc(mnt, tmp_path):
    rnd = random.Random(2)
    src = tmp_path / "src"
    src.write_bytes(rnd.randbytes(3 * MiB))
    target = mnt / "dd.bin"
    model = bytearray()

    def dd(*operands: str) -> None:
        run("dd", f"if={src}", f"of={target}", "status=none", *operands)

    dd("bs=4096", "count=3", "seek=5")  # a hole of 5 blocks, then 3 blocks
    model[:] = bytes(5 * 4096) + src.read_bytes()[: 3 * 4096]
    dd("bs=1000", "count=2", "seek=7", "conv=notrunc")  # overwrite inside
    model[7000:9000] = src.read_bytes()[:2000]
    dd("bs=1M", "count=3", "seek=1", "conv=notrunc")  # grow past 2 MiB windows
    model.extend(bytes(MiB - len(model)))  # the gap reads as zeroes
    model[MiB:] = src.read_bytes()
    assert target.read_bytes() == bytes(model)
    out = run("dd", f"if={target}", "bs=512", "skip=14", "count=4", "status=none").stdout
    assert out == bytes(model[14 * 512 : 18 * 512])
    dd("bs=4096", "count=1", "seek=2")  # without notrunc: cut after the block
    assert target.stat().st_size == 3 * 4096
    assert target.read_bytes() == bytes(model[: 2 * 4096]) + src.read_bytes()[:4096]


@needs_fuse
def test_rsync_both_ways(mnt, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed (not on PATH)")
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a" * 10)
    (src / "sub" / "b.bin").write_bytes(random.Random(3).randbytes(3 * MiB))
    os.symlink("a.txt", src / "link")
    run("rsync", "-a", f"{src}/", f"{mnt / 'copy'}/")
    back = tmp_path / "back"
    run("rsync", "-a", f"{mnt / 'copy'}/", f"{back}/")
    run("diff", "-r", "--no-dereference", src, back)
    again = run("rsync", "-a", "--itemize-changes", f"{src}/", f"{mnt / 'copy'}/")
    assert again.stdout == b""  # nothing left to transfer


@needs_fuse
def test_fifos_devices_and_sockets_through_the_mount(mnt, shm_dir):
    """mkfifo, mknod and a unix socket's bind make inodes in the pool, with
    the types, modes and device numbers tmpfs shows; the kernel carries a
    FIFO's bytes between two processes and a socket's between two ends."""
    import socket

    kernel = Path(shm_dir) / "special"
    kernel.mkdir()
    for root in (mnt.path, kernel):
        run("mkfifo", "-m", "640", root / "pipe")
        run("mknod", "-m", "666", root / "null", "c", "1", "3")
        run("mknod", root / "loop0", "b", "7", "0")
    reader = subprocess.Popen(["cat", str(mnt.path / "pipe")], stdout=subprocess.PIPE)
    with open(mnt.path / "pipe", "wb") as w:
        w.write(b"through the fifo\n")
    assert reader.communicate(timeout=30)[0] == b"through the fifo\n"
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(str(mnt.path / "sock"))
        server.listen(1)
        client.connect(str(mnt.path / "sock"))
        conn, _ = server.accept()
        with conn:
            client.sendall(b"hi")
            assert conn.recv(2) == b"hi"
    for name in ("pipe", "null", "loop0"):
        k, d = os.lstat(kernel / name), os.lstat(mnt.path / name)
        assert (d.st_mode, d.st_rdev, d.st_size) == (k.st_mode, k.st_rdev, k.st_size), name
    assert stat.S_ISSOCK(os.lstat(mnt.path / "sock").st_mode)
    listing = run("ls", "-l", mnt.path).stdout.decode().splitlines()[1:]
    kinds = {line.split()[-1]: line[0] for line in listing}
    assert kinds == {"pipe": "p", "null": "c", "loop0": "b", "sock": "s"}
    assert "1, 3" in next(line for line in listing if line.endswith(" null"))
    found = run("find", mnt.path, "-type", "p", "-o", "-type", "s").stdout.decode().split()
    assert sorted(found) == sorted([str(mnt.path / "pipe"), str(mnt.path / "sock")])
    with pytest.raises(OSError) as e:  # a FUSE mount is nodev, as the kernel makes it
        open(mnt.path / "null", "rb").close()
    assert e.value.errno == errno.EACCES
    run("mv", mnt.path / "pipe", mnt.path / "pipe2")
    run("rm", mnt.path / "null", mnt.path / "sock")
    assert mnt.stop() == 0
    with daxfs.mount(mnt.pool) as fs:
        assert sorted(fs.listdir("/")) == ["loop0", "pipe2"]
        assert stat.S_ISFIFO(fs.lstat("/pipe2").st_mode)
        assert fs.lstat("/loop0").st_rdev == os.makedev(7, 0)
    assert_clean(mnt.pool)


@needs_fuse
def test_mkdir_mv_ln_rm_rmdir(mnt):
    run("mkdir", "-p", mnt / "a/b/c")
    (mnt / "a/b/c/f").write_bytes(b"content")
    run("mv", mnt / "a/b", mnt / "a/moved")
    assert sorted(os.listdir(mnt / "a")) == ["moved"]
    run("ln", mnt / "a/moved/c/f", mnt / "hard")
    run("ln", "-s", "a/moved/c/f", mnt / "soft")
    assert run("stat", "-c", "%h", mnt / "hard").stdout.strip() == b"2"
    assert run("readlink", mnt / "soft").stdout.strip() == b"a/moved/c/f"
    assert run("cat", mnt / "soft").stdout == b"content"
    os.rename(mnt / "hard", mnt / "a/moved/c/f")  # onto another name of itself: no-op
    assert (mnt / "hard").exists()
    run("rm", mnt / "hard", mnt / "soft")
    assert run("stat", "-c", "%h", mnt / "a/moved/c/f").stdout.strip() == b"1"
    run("rm", mnt / "a/moved/c/f")
    run("rmdir", mnt / "a/moved/c", mnt / "a/moved")
    run("rm", "-r", mnt / "a")
    assert os.listdir(mnt.path) == []
    assert mnt.stop() == 0
    assert_clean(mnt.pool)


@needs_fuse
def test_files_made_written_and_removed_through_the_mount_are_said(mnt):
    """The server, alone on its pool, says a new file's create, its first
    write and its unlink (logical.py), by name in a directory (At) as for
    a path; a read-only mount beside it reads them in the log."""

    def said() -> tuple[int, int, int]:
        with daxfs.mount(mnt.pool, readonly=True) as fs:
            records = [r for _seq, r in fs.journal.log_records()]
        return tuple(
            sum(len(getattr(r, k)) for r in records) for k in ("creates", "fills", "unlinks")
        )

    run("mkdir", mnt / "d")
    (mnt / "d/keep").write_bytes(b"k")  # (the directory's first block: the usual way)
    before = said()
    for i in range(20):
        (mnt / f"d/f{i}").write_bytes(bytes([i + 1]) * 1000)
    made = said()
    assert made[0] - before[0] >= 20 and made[1] - before[1] >= 20, (before, made)
    run("rm", *[mnt / f"d/f{i}" for i in range(10)])
    assert said()[2] - made[2] >= 10
    assert sorted(os.listdir(mnt / "d")) == sorted(["keep"] + [f"f{i}" for i in range(10, 20)])
    assert (mnt / "d/f15").read_bytes() == bytes([16]) * 1000
    assert mnt.stop() == 0
    assert_clean(mnt.pool)
    assert pool_read(mnt.pool, "/d/f19") == bytes([20]) * 1000


@needs_fuse
def test_python_open_read_write_seek_truncate_times_modes(mnt):
    path = mnt / "py.txt"
    with open(path, "w") as f:
        f.write("hello\n")
    with open(path, "a") as f:
        f.write("world\n")
    with open(path, "r+b") as f:
        f.seek(1)
        f.write(b"E")
        f.seek(0, os.SEEK_END)
        assert f.tell() == 12
        os.fsync(f.fileno())
    assert path.read_text() == "hEllo\nworld\n"
    os.truncate(path, 3)
    assert path.read_bytes() == b"hEl"
    os.truncate(path, 6000)
    assert path.read_bytes() == b"hEl" + bytes(5997)
    os.utime(path, ns=(1_000_000_001, 2_000_000_002))
    st1 = os.stat(path)
    assert (st1.st_atime_ns, st1.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    os.chmod(path, 0o600)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.symlink("nowhere", mnt / "dangling")
    os.utime(mnt / "dangling", ns=(5, 7), follow_symlinks=False)  # lutimes
    assert os.lstat(mnt / "dangling").st_mtime_ns == 7
    old = os.umask(0o027)
    try:
        os.mkdir(mnt / "masked")
        (mnt / "masked/f").touch()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(mnt / "masked").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(mnt / "masked/f").st_mode) == 0o640
    vfs = os.statvfs(mnt.path)
    assert vfs.f_bsize == 4096 and 0 < vfs.f_bfree < vfs.f_blocks
    assert mnt.stop() == 0
    with daxfs.mount(mnt.pool, readonly=True) as fs:
        assert fs.stat("/py.txt").st_mtime_ns == 2_000_000_002
        assert fs.stat("/py.txt").st_size == 6000


@needs_fuse
@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_owners_through_the_mount_chown_cp_a_and_a_setgid_directory(mnt, tmp_path):
    """chown and lchown reach the pool; cp -a keeps owners; a setgid
    directory's group and bit go to what is made in it; all still there
    through the library after unmount."""
    (mnt / "f").write_bytes(b"x")
    os.chown(mnt / "f", 1234, 5678)
    assert (os.stat(mnt / "f").st_uid, os.stat(mnt / "f").st_gid) == (1234, 5678)
    os.symlink("f", mnt / "ln")
    os.lchown(mnt / "ln", 11, 12)
    assert (os.lstat(mnt / "ln").st_uid, os.stat(mnt / "ln").st_uid) == (11, 1234)
    src = tmp_path / "src"
    src.mkdir()
    (src / "owned").write_bytes(b"o")
    os.chown(src / "owned", 2001, 2002)
    run("cp", "-a", str(src), str(mnt / "copy"))
    st = os.stat(mnt / "copy/owned")
    assert (st.st_uid, st.st_gid) == (2001, 2002)
    os.mkdir(mnt / "sg")
    os.chown(mnt / "sg", 0, 4321)
    os.chmod(mnt / "sg", 0o2775)
    os.mkdir(mnt / "sg/sub")
    (mnt / "sg/file").write_bytes(b"")
    assert os.stat(mnt / "sg/sub").st_gid == os.stat(mnt / "sg/file").st_gid == 4321
    assert os.stat(mnt / "sg/sub").st_mode & stat.S_ISGID
    assert mnt.stop() == 0
    with daxfs.mount(mnt.pool, readonly=True) as fs:
        assert (fs.stat("/f").st_uid, fs.stat("/f").st_gid) == (1234, 5678)
        assert fs.stat("/copy/owned").st_uid == 2001 and fs.stat("/sg/file").st_gid == 4321


def _archive_tree(root: Path) -> None:
    """Files (setuid and setgid programs too), a directory, a symlink, a FIFO
    and device nodes with their own owners, modes and times: what cp -a,
    rsync -a and tar -xp must keep."""
    (root / "d").mkdir()
    (root / "d/f").write_bytes(b"data" * 1000)
    (root / "d/suid").write_bytes(b"#!/bin/sh\n")  # (chowned, then given its
    (root / "d/sgid").write_bytes(b"#!/bin/sh\n")  # bits: a chown drops them)
    os.symlink("d/f", root / "ln")
    os.mkfifo(root / "d/fifo", 0o640)
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 1))
    names = ("d/f", "d/fifo", "null", "loop", "d", "d/suid", "d/sgid")
    for i, name in enumerate(names):
        os.chown(root / name, 3000 + i, 4000 + i)
        os.chmod(root / name, (0o751, 0o620, 0o604, 0o640, 0o2755, 0o4755, 0o2745)[i])
        os.utime(root / name, ns=(1_500_000_000_123_456_789 + i, 1_600_000_000_987_654_321 + i))
    os.lchown(root / "ln", 77, 88)


def _archive_view(root: Path) -> dict[str, tuple]:
    """What an archive keeps of each name under ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st_ = os.lstat(p)
            kind = stat.S_IFMT(st_.st_mode)
            times = () if kind in (stat.S_IFLNK, stat.S_IFDIR) else (st_.st_mtime_ns,)
            out[str(p.relative_to(root))] = (
                st_.st_mode, st_.st_uid, st_.st_gid, st_.st_rdev, *times,
                st_.st_size if stat.S_ISREG(st_.st_mode) else 0,
            )  # fmt: skip
    return out


@needs_fuse
def test_cp_a_rsync_a_and_tar_xp_keep_what_they_keep_on_tmpfs(mnt, shm_dir, tmp_path):
    """Each archiver copies the same tree onto tmpfs and through the mount:
    types (FIFOs and device nodes included), modes, owners, device numbers
    and file times come out the same on both."""
    src = tmp_path / "src"
    src.mkdir()
    _archive_tree(src)
    tarball = tmp_path / "t.tar"
    run("tar", "-cf", tarball, "-C", src, ".")
    for side in (Path(shm_dir), mnt.path):
        (side / "tar").mkdir()
        run("cp", "-a", src, side / "cp")
        run("rsync", "-a", "--devices", "--specials", f"{src}/", side / "rsync")
        run("tar", "-xpf", tarball, "-C", side / "tar")
    for how in ("cp", "rsync", "tar"):
        kernel, pool = _archive_view(Path(shm_dir) / how), _archive_view(mnt.path / how)
        assert pool == kernel, how
        assert stat.S_ISFIFO(pool["d/fifo"][0]) and pool["null"][3] == os.makedev(1, 3)
    assert mnt.stop() == 0
    assert_clean(mnt.pool)


AS_NOBODY = textwrap.dedent(r"""
    import errno, os, sys
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    mnt = sys.argv[1]

    def outcome(action):
        try:
            action()
            return "ok"
        except OSError as e:
            return errno.errorcode[e.errno]

    def write_into(path):
        with open(path, "wb") as f:
            f.write(b"nobody")

    print(outcome(lambda: write_into(mnt + "/secret")))  # root's 0600 file
    print(outcome(lambda: write_into(mnt + "/private/new")))  # root's 0700 directory
    print(outcome(lambda: os.chmod(mnt + "/public", 0o777)))  # root's file
    print(outcome(lambda: os.unlink(mnt + "/tmp/roots")))  # root's, in a sticky directory
    print(outcome(lambda: write_into(mnt + "/tmp/mine")))
    print(outcome(lambda: os.unlink(mnt + "/tmp/mine")))
    write_into(mnt + "/tmp/kept")
    print(os.stat(mnt + "/tmp/kept").st_uid, os.stat(mnt + "/tmp/kept").st_gid)
""")


def _tree_for_nobody(root: Path) -> None:
    (root / "secret").write_bytes(b"s")
    os.chmod(root / "secret", 0o600)
    (root / "private").mkdir(mode=0o700)
    (root / "public").write_bytes(b"p")
    os.chmod(root / "public", 0o644)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "tmp/roots").write_bytes(b"r")


@needs_fuse
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_allow_other_lets_users_in_and_the_kernel_checks_them_as_on_tmpfs(pool_path):
    """daxfs mount --allow-other: uid 65534 gets the answers tmpfs gives it
    (EACCES for root's 0600 file and 0700 directory, EPERM for chmod of
    root's file and for removing root's file from a sticky directory) and
    owns what it makes."""
    base = Path(tempfile.mkdtemp(prefix="daxfs-test-", dir="/dev/shm"))
    try:
        os.chmod(base, 0o755)
        kernel, mountpoint = base / "tmpfs", base / "mnt"
        kernel.mkdir(mode=0o755)
        mountpoint.mkdir(mode=0o755)
        m = Mount(pool_path, mountpoint, "--allow-other")
        try:
            os.chmod(mountpoint, 0o755)  # the pool's root, now
            answers = []
            for root in (kernel, mountpoint):
                _tree_for_nobody(root)
                res = run(sys.executable, "-c", AS_NOBODY, root)
                answers.append(res.stdout.decode().split("\n"))
            assert answers[1] == answers[0]
            assert answers[0][:7] == [
                "EACCES",
                "EACCES",
                "EPERM",
                "EPERM",
                "ok",
                "ok",
                "65534 65534",
            ]
        finally:
            m.close()
        assert_clean(pool_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_mount_allow_other_refused_without_fuse_conf(tmp_path):
    """--allow-other for a user other than root needs user_allow_other in
    fuse.conf (a commented line does not count); root needs nothing."""
    from daxfs.cli.common import CliError
    from daxfs.cli.mount import check_allow_other

    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    check_allow_other(str(conf), euid=0)
    with pytest.raises(CliError, match="user_allow_other"):
        check_allow_other(str(conf), euid=1000)
    with pytest.raises(CliError, match="user_allow_other"):
        check_allow_other(str(tmp_path / "missing.conf"), euid=1000)
    conf.write_text("user_allow_other  # for daxfs\n")
    check_allow_other(str(conf), euid=1000)


@needs_fuse
def test_path_limits_apply_to_the_path_a_caller_passes(mnt):
    """PATH_MAX (4,096 bytes with the NUL) limits the path a caller passes,
    as on any Linux file system: a 4,095-byte path relative to the mount's
    root works (libfuse hands the server "/" before it: 4,096 bytes), and
    from a directory fd deep in the mount, short relative paths go on
    growing a tree whose paths from the root are far longer."""
    name = "n" * 255
    root = os.open(mnt.path, os.O_RDONLY | os.O_DIRECTORY)
    fds = [root]
    try:
        for _ in range(15):
            os.mkdir(name, dir_fd=fds[-1])
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        rel = "/".join([name] * 16)
        assert len(rel.encode()) == 4095
        fd = os.open(rel, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=root)
        os.write(fd, b"at 4095")
        os.close(fd)
        assert os.stat(rel, dir_fd=root).st_size == 7
        with pytest.raises(OSError) as e:
            os.stat(rel + "x", dir_fd=root)  # 4,096 bytes: the caller's limit
        assert e.value.errno == errno.ENAMETOOLONG
        deeper = "m" * 255
        for _ in range(10):  # on to 25 levels: about 6,400 bytes from the root
            os.mkdir(deeper, dir_fd=fds[-1])
            fds.append(os.open(deeper, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open("deep", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fds[-1])
        os.write(fd, b"deep")
        os.close(fd)
        assert os.stat("deep", dir_fd=fds[-1]).st_size == 4
        os.rename("deep", "deeper", src_dir_fd=fds[-1], dst_dir_fd=fds[-1])
        assert os.listdir(fds[-1]) == ["deeper"]
    finally:
        for fd in fds:
            os.close(fd)
    assert mnt.stop() == 0
    assert_clean(mnt.pool)


@needs_fuse
def test_open_unlinked_file_keeps_working_and_is_freed(mnt):
    (mnt / "placeholder").touch()  # the root's first directory block, kept for good
    free_before = os.statvfs(mnt.path).f_bfree
    f = open(mnt / "tmp.bin", "w+b")
    try:
        f.write(b"x" * 100_000)
        f.flush()
        os.unlink(mnt / "tmp.bin")
        assert os.listdir(mnt.path) == ["placeholder"]
        time.sleep(1.1)  # past FUSE's attribute cache: the server answers fstat
        st1 = os.fstat(f.fileno())
        assert (st1.st_nlink, st1.st_size) == (0, 100_000)
        f.truncate(10)
        f.seek(0)
        f.write(b"yy")
        f.flush()
        f.seek(0)
        assert f.read() == b"yyxxxxxxxx"
        os.mkdir(mnt / "d")
        g = open(mnt / "d/inner", "wb")
        os.unlink(mnt / "d/inner")
        os.rmdir(mnt / "d")  # nothing named is left in it
        g.close()
    finally:
        f.close()
    # The kernel sends RELEASE after close() has returned, so the server may
    # free the orphans a moment later: wait for it rather than race it.
    wait_until(lambda: os.statvfs(mnt.path).f_bfree == free_before)
    assert os.statvfs(mnt.path).f_bfree == free_before
    assert mnt.stop() == 0
    assert_clean(mnt.pool)
    with daxfs.mount(mnt.pool, readonly=True) as fs:
        assert fs.listdir("/") == ["placeholder"]


@needs_fuse
def test_errors_reach_the_tools_with_their_errno(mnt):
    (mnt / "full").mkdir()
    (mnt / "full/f").write_bytes(b"1")
    (mnt / "file").write_bytes(b"2")
    (mnt / "other").mkdir()
    res = run("rmdir", mnt / "full", ok=False)
    assert res.returncode != 0 and b"Directory not empty" in res.stderr
    assert b"Is a directory" in run("cat", mnt / "full", ok=False).stderr
    cases = [
        (errno.ENOENT, lambda: open(mnt / "missing")),
        (errno.EEXIST, lambda: os.mkdir(mnt / "full")),
        (errno.ENOTDIR, lambda: os.rmdir(mnt / "file")),
        (errno.ENOTDIR, lambda: os.listdir(mnt / "file")),
        (errno.EPERM, lambda: os.link(mnt / "full", mnt / "dirlink")),
        (errno.EINVAL, lambda: os.rename(mnt / "full", mnt / "full/inside")),
        (errno.ENOTEMPTY, lambda: os.rename(mnt / "other", mnt / "full")),
        (errno.EISDIR, lambda: os.rename(mnt / "file", mnt / "full")),
        (errno.EEXIST, lambda: os.symlink("x", mnt / "file")),
    ]
    for code, action in cases:
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == code, (code, info.value)
    # mv -n never replaces an existing name (renameat2 RENAME_NOREPLACE or not).
    (mnt / "keep").write_bytes(b"keep")
    run("mv", "-n", mnt / "file", mnt / "keep", ok=False)
    assert (mnt / "keep").read_bytes() == b"keep"


@needs_fuse
def test_readonly_mount_gives_erofs(pool_path, start):
    with daxfs.mount(pool_path) as fs, fs.open("/present.txt", "wb") as f:
        f.write(b"here")
    m = start("--readonly")
    assert (m / "present.txt").read_bytes() == b"here"
    for action in (
        lambda: open(m / "new.txt", "w"),
        lambda: open(m / "present.txt", "r+b"),
        lambda: os.mkdir(m / "d"),
        lambda: os.unlink(m / "present.txt"),
        lambda: os.chmod(m / "present.txt", 0o600),
    ):
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == errno.EROFS
    assert b"Read-only file system" in run("touch", m / "t", ok=False).stderr
    assert m.stop() == 0
    assert_clean(pool_path)


@needs_fuse
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_unmounts_and_leaves_a_clean_pool(mnt, signum):
    payload = random.Random(4).randbytes(3 * MiB)
    (mnt / "big").write_bytes(payload)
    (mnt / "dir").mkdir()
    (mnt / "dir/small").write_text("small")
    still_open = open(mnt / "open.txt", "wb", buffering=0)
    still_open.write(b"written before the signal")
    mnt.proc.send_signal(signum)
    assert mnt.wait() == 0, mnt.output()
    assert not is_mounted(mnt.path)
    with contextlib.suppress(OSError):
        still_open.close()  # the connection is gone: the close may fail
    assert_clean(mnt.pool)
    assert pool_read(mnt.pool, "/big") == payload
    assert pool_read(mnt.pool, "/dir/small") == b"small"
    assert pool_read(mnt.pool, "/open.txt") == b"written before the signal"


@needs_fuse
def test_a_server_killed_mid_extraction_leaves_only_whole_prefixes(mnt, tmp_path):
    """SIGKILL of the server while tar writes through it: the mount is
    dead (the kernel answers ENOTCONN) until unmounted, and the pool, once
    recovered, holds for each file that has a name some prefix of what tar
    was writing: every write the server committed, none of anyone's
    garbage, and a check with no error."""
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    want = {}
    for i in range(300):
        data = rng.randbytes(rng.randrange(0, 40_000))
        (src / f"f{i:03d}").write_bytes(data)
        want[f"/src/f{i:03d}"] = data
    archive = tmp_path / "a.tar"
    run("tar", "-cf", archive, "-C", tmp_path, "src")
    tar = subprocess.Popen(
        ["tar", "-xf", str(archive), "-C", str(mnt.path)], stderr=subprocess.DEVNULL
    )
    # Killed once a random number of files exist (through the mount).
    made = random.Random().randrange(10, 200)
    assert wait_until(
        lambda: os.path.isdir(mnt / "src") and len(os.listdir(mnt / "src")) >= made, timeout=60
    )
    mnt.proc.kill()
    mnt.proc.wait()
    tar.wait(timeout=60)
    with pytest.raises(OSError) as info:
        os.listdir(mnt.path)
    assert info.value.errno == errno.ENOTCONN
    unmount(mnt.path)
    report = daxfs.check(mnt.pool)
    assert report.ok and not report.errors, report
    with daxfs.mount(mnt.pool, readonly=True) as fs:
        names = fs.listdir("/src")
        assert len(names) >= made
        for name in names:
            got = fs.open(f"/src/{name}", "rb").read()
            assert want[f"/src/{name}"].startswith(got), name


def daemons_serving(mountpoint: Path) -> list[int]:
    """Pids of background ``daxfs mount`` processes for this mount point."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and str(mountpoint).encode() in argv:
            pids.append(int(entry))
    return pids


@needs_fuse
def test_background_mount_returns_once_mounted(pool_path, mountpoint):
    res = run(*DAXFS, "mount", pool_path, mountpoint, timeout=MOUNT_TIMEOUT)
    daemons = daemons_serving(mountpoint)
    try:
        assert res.stdout == b""
        assert is_mounted(mountpoint)  # ready when the command returns
        assert len(daemons) == 1
        (mountpoint / "bg.txt").write_bytes(b"from the background")
        unmount(mountpoint)
        assert wait_until(lambda: not pid_alive(daemons[0]))
    finally:
        unmount(mountpoint)
        for pid in daemons:  # only the server this test started
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert_clean(pool_path)
    assert pool_read(pool_path, "/bg.txt") == b"from the background"


# --------------------------------------------------------------------------
# the command's one-line errors (no FUSE needed for most)
# --------------------------------------------------------------------------
def mount_via_runner(*args: str, code: int = 1) -> str:
    result = CliRunner().invoke(app, ["mount", *args])
    assert result.exit_code == code, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daxfs: "), result.output
    return lines[0]


def test_mount_missing_or_bad_mountpoint(pool_path, tmp_path):
    assert "mount point does not exist" in mount_via_runner(pool_path, str(tmp_path / "nope"))
    (tmp_path / "plain").write_text("x")
    assert "not a directory" in mount_via_runner(pool_path, str(tmp_path / "plain"))


def test_mount_without_dev_fuse(pool_path, mountpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(mount_module, "FUSE_DEVICE", str(tmp_path / "no-fuse-device"))
    line = mount_via_runner(pool_path, str(mountpoint))
    assert "does not exist" in line and "FUSE" in line


@needs_fuse
def test_mount_bad_or_missing_pool(mountpoint, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(8 * MiB))
    assert "not a daxfs pool" in mount_via_runner(str(junk), str(mountpoint))
    assert "No such file or directory" in mount_via_runner(str(tmp_path / "x"), str(mountpoint))
    assert not is_mounted(mountpoint)


# --------------------------------------------------------------------------
# the mount against a real directory, operation by operation
# --------------------------------------------------------------------------
NAMES = ("a", "b", "d/a", "d/b", "d", "e")
DATA = st.binary(max_size=9000)
OFFSETS = st.sampled_from((0, 1, 4095, 4096, 10_000, 2 * MiB - 3))


def _outcome(action):
    """(True, result) or (False, errno): what both sides must agree on."""
    try:
        return True, action()
    except OSError as e:
        return False, e.errno


def snapshot(root: str, via=os) -> dict[str, tuple]:
    """Everything comparable under root: kind, size, bytes, link target,
    links.  ``via``: os, or a daxfs FileSystem (what the API sees)."""
    opener = open if via is os else via.open
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in via.walk(root):
        for name in dirs + files:
            full = posixpath.join(dirpath, name)
            rel = posixpath.relpath(full, root)
            st_ = via.lstat(full)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("link", via.readlink(full))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", st_.st_nlink, stat.S_IMODE(st_.st_mode))
            else:
                with opener(full, "rb") as f:
                    out[rel] = ("file", st_.st_nlink, st_.st_size, f.read())
    return out


class MountMatchesDirectory(RuleBasedStateMachine):
    """The same calls on the mount and on a directory of the host."""

    roots: tuple[str, str] = ("", "")
    runs = 0

    def __init__(self):
        super().__init__()
        type(self).runs += 1
        self.sides = [os.path.join(r, f"run{self.runs}") for r in self.roots]
        for side in self.sides:
            os.mkdir(side)
        self.handles: list[list[int]] = []  # per open file: its descriptor on each side

    def both(self, action, same_value: bool = True) -> list:
        """Run action on each side: the same errno, or success on both (with
        the same value unless told otherwise).  The values, or [] on errors."""
        results = [_outcome(lambda side=side: action(side)) for side in self.sides]
        if same_value or not (results[0][0] and results[1][0]):
            assert results[0] == results[1], results
        return [value for _ok, value in results] if results[0][0] else []

    def teardown(self):
        for fds in self.handles:
            for fd in fds:
                os.close(fd)
        # Each example's tree goes: 500 of them (the long profile) left on a
        # 64 MiB pool filled it, and the mount said ENOSPC where the host's
        # tmpfs had room.
        for side in self.sides:
            shutil.rmtree(side)

    @rule(name=st.sampled_from(NAMES), data=DATA, offset=OFFSETS)
    def pwrite(self, name, data, offset):
        def write(side):
            fd = os.open(os.path.join(side, name), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(write)

    @rule(name=st.sampled_from(NAMES), size=OFFSETS)
    def truncate(self, name, size):
        self.both(lambda side: os.truncate(os.path.join(side, name), size))

    @rule(name=st.sampled_from(NAMES))
    def mkdir(self, name):
        self.both(lambda side: os.mkdir(os.path.join(side, name), 0o755))

    @rule(name=st.sampled_from(NAMES))
    def rmdir(self, name):
        self.both(lambda side: os.rmdir(os.path.join(side, name)))

    @rule(name=st.sampled_from(NAMES))
    def unlink(self, name):
        self.both(lambda side: os.unlink(os.path.join(side, name)))

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src, dst):
        self.both(lambda side: os.rename(os.path.join(side, src), os.path.join(side, dst)))

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def link(self, src, dst):
        self.both(
            lambda side: os.link(
                os.path.join(side, src), os.path.join(side, dst), follow_symlinks=False
            )
        )

    @rule(points_to=st.sampled_from(("a", "d/b", "nowhere")), name=st.sampled_from(NAMES))
    def symlink(self, points_to, name):
        self.both(lambda side: os.symlink(points_to, os.path.join(side, name)))

    @rule(name=st.sampled_from(NAMES), offset=OFFSETS, size=st.integers(0, 20_000))
    def pread(self, name, offset, size):
        def read(side):
            fd = os.open(os.path.join(side, name), os.O_RDONLY)
            try:
                return os.pread(fd, size, offset)
            finally:
                os.close(fd)

        self.both(read)

    # Descriptors that stay open across steps: unlinked or renamed over, they
    # must keep working (the FUSE layer's handle table and hidden aliases).
    @rule(name=st.sampled_from(NAMES))
    def open_and_keep(self, name):
        fds = self.both(
            lambda side: os.open(os.path.join(side, name), os.O_RDWR | os.O_CREAT, 0o644),
            same_value=False,  # descriptor numbers differ
        )
        if fds:
            self.handles.append(fds)

    @rule(pick=st.integers(0, 7), data=DATA, offset=OFFSETS)
    def write_kept(self, pick, data, offset):
        if self.handles:
            fds = self.handles[pick % len(self.handles)]
            assert [os.pwrite(fd, data, offset) for fd in fds] == [len(data)] * 2

    @rule(pick=st.integers(0, 7), size=OFFSETS)
    def truncate_kept(self, pick, size):
        if self.handles:
            for fd in self.handles[pick % len(self.handles)]:
                os.ftruncate(fd, size)

    @rule(pick=st.integers(0, 7))
    def close_kept(self, pick):
        if self.handles:
            for fd in self.handles.pop(pick % len(self.handles)):
                os.close(fd)

    @invariant()
    def same_tree(self):
        assert snapshot(self.sides[0]) == snapshot(self.sides[1])

    @invariant()
    def same_open_files(self):
        for fds in self.handles:
            stats = [os.fstat(fd) for fd in fds]
            assert [(s.st_size, s.st_nlink) for s in stats] == [
                (stats[0].st_size, stats[0].st_nlink)
            ] * 2
            sizes = stats[0].st_size
            assert os.pread(fds[0], sizes, 0) == os.pread(fds[1], sizes, 0)


def run_over_the_mount(machine, steps: int) -> None:
    """Run a state machine whose every call is a FUSE round trip: a quarter
    of the profile's examples (50 by default, 500 with
    HYPOTHESIS_PROFILE=long)."""
    examples = max(10, settings.default.max_examples // 4)
    run_state_machine_as_test(
        machine, settings=settings(max_examples=examples, stateful_step_count=steps, deadline=None)
    )


@needs_fuse
def test_mount_behaves_like_a_real_directory(mnt, shm_dir):
    MountMatchesDirectory.roots = (str(mnt.path), shm_dir)
    run_over_the_mount(MountMatchesDirectory, steps=30)
    assert mnt.stop() == 0
    assert_clean(mnt.pool)


# --------------------------------------------------------------------------
# coherence with other processes, fallocate
# --------------------------------------------------------------------------
@needs_fuse
def test_changes_through_the_python_api_show_at_once(mnt):
    (mnt / "shared.txt").write_bytes(b"one")
    with daxfs.mount(mnt.pool) as fs:  # a second user of the pool, beside the server
        with fs.open("/shared.txt", "ab") as f:
            f.write(b" two")
        fs.mkdir("/from-api")
        assert fs.open("/shared.txt", "rb").read() == b"one two"
    assert (mnt / "shared.txt").read_bytes() == b"one two"
    assert os.stat(mnt / "shared.txt").st_size == 7
    assert sorted(os.listdir(mnt.path)) == ["from-api", "shared.txt"]
    with open(mnt / "shared.txt", "ab") as f:  # O_APPEND finds the new end
        f.write(b" three")
    assert pool_read(mnt.pool, "/shared.txt") == b"one two three"


def _api_child(pool: str, code: str) -> None:
    """Run ``code`` with ``fs`` mounted on ``pool`` in another process (a user
    of the pool beside the server, as the Python API would be)."""
    src = f"import daxfs\nwith daxfs.mount({pool!r}) as fs:\n" + textwrap.indent(code, "    ")
    subprocess.run([sys.executable, "-c", src], check=True, timeout=60)


@needs_fuse
def test_what_the_kernel_cached_is_dropped_when_another_process_changes_it(mnt):
    """The kernel caches names and attributes now; a request that reaches
    the server (here readdir) catches up with another process's commits
    and drops what they changed before it is answered."""
    (mnt / "d").mkdir()
    for name in ("a", "b", "gone", "moved"):
        (mnt / "d" / name).write_bytes(b"x")
    os.link(mnt / "d" / "a", mnt / "d" / "a2")
    before = {n: os.stat(mnt / "d" / n) for n in ("a", "b", "gone", "moved")}  # now cached
    assert before["a"].st_nlink == 2
    _api_child(
        mnt.pool,
        """
fs.chmod("/d/a", 0o600)
fs.unlink("/d/a2")
with fs.open("/d/b", "ab") as f:
    f.write(b"yz")
fs.unlink("/d/gone")
fs.rename("/d/moved", "/d/there")
with fs.open("/d/gone", "wb") as f:  # the name again, for another inode
    f.write(b"new one")
""",
    )
    assert sorted(os.listdir(mnt / "d")) == ["a", "b", "gone", "there"]
    a = os.stat(mnt / "d" / "a")
    assert (stat.S_IMODE(a.st_mode), a.st_nlink) == (0o600, 1)
    assert os.stat(mnt / "d" / "b").st_size == 3
    assert (mnt / "d" / "b").read_bytes() == b"xyz"
    # (The new file may take the freed inode's number: then the kernel's
    # inode of that number must show the new file's size and bytes.)
    assert os.stat(mnt / "d" / "gone").st_size == 7
    assert (mnt / "d" / "gone").read_bytes() == b"new one"
    assert not os.path.lexists(mnt / "d" / "moved")
    assert os.stat(mnt / "d" / "there").st_ino == before["moved"].st_ino


@needs_fuse
def test_the_watcher_drops_stale_attributes_and_names_with_no_request(mnt):
    """With no request to catch up on, the server's watcher does (every few
    ms): a cached size and a cached name another process changed go stale
    in the kernel well before their timeout (1 s) would end them."""
    from daxfs.fuse import ATTR_TIMEOUT, ENTRY_TIMEOUT

    (mnt / "f").write_bytes(b"1")
    (mnt / "old").write_bytes(b"x")
    assert os.stat(mnt / "f").st_size == 1 and os.path.exists(mnt / "old")  # cached
    _api_child(mnt.pool, 'fs.truncate("/f", 5)\nfs.rename("/old", "/new")\n')
    start = time.monotonic()
    assert wait_until(lambda: os.stat(mnt / "f").st_size == 5, timeout=5)
    assert wait_until(lambda: not os.path.exists(mnt / "old"), timeout=5)
    took = time.monotonic() - start
    assert took < min(ATTR_TIMEOUT, ENTRY_TIMEOUT) / 2, f"stale for {took:.3f} s"


@needs_fuse
def test_pages_cached_at_one_open_are_dropped_after_another_process_writes(mnt):
    """Close-to-open: the kernel keeps a file's pages from one open to the
    next, unless another process's commit changed the file between.  Two
    things each give it (checked by turning each off): the server's
    refusal to keep pages at that open, and the kernel's own dropping of
    them when the mtime it refreshes has moved (FUSE_AUTO_INVAL_DATA)."""
    f = mnt / "f"
    f.write_bytes(b"a" * 10_000)
    assert f.read_bytes() == b"a" * 10_000  # the pages are cached now
    _api_child(mnt.pool, 'with fs.open("/f", "r+b") as f:\n    f.write(b"B" * 5000)\n')
    assert f.read_bytes() == b"B" * 5000 + b"a" * 5000
    assert mnt.stop() == 0
    assert_clean(mnt.pool)


class MountFollowsAnotherProcess(RuleBasedStateMachine):
    """Calls made now through the mount, now by another user of the pool
    (a FileSystem of this process: to the server, another process); after
    each, the mount shows what the API shows.  The check walks the mount
    (os.walk: each directory listed, so each step reaches the server, which
    catches up first) and reads every file (each open reaches it too),
    while names, attributes and pages the kernel cached before the step
    are still in its caches."""

    mnt: str = ""
    fs = None

    def __init__(self):
        super().__init__()
        empty_dir(self.mnt)

    def act(self, through_mount: bool, mount_call, api_call) -> None:
        with contextlib.suppress(OSError):
            if through_mount:
                mount_call(lambda name: os.path.join(self.mnt, name))
            else:
                api_call(lambda name: "/" + name)

    @rule(via=st.booleans(), name=st.sampled_from(NAMES), data=DATA, offset=OFFSETS)
    def pwrite(self, via, name, data, offset):
        def by_os(p):
            fd = os.open(p(name), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        def by_api(p):
            try:
                f = self.fs.open(p(name), "r+b")
            except FileNotFoundError:
                f = self.fs.open(p(name), "xb")
            with f:
                f.seek(offset)
                f.write(data)

        self.act(via, by_os, by_api)

    @rule(via=st.booleans(), name=st.sampled_from(NAMES), size=OFFSETS)
    def truncate(self, via, name, size):
        self.act(
            via,
            lambda p: os.truncate(p(name), size),
            lambda p: self.fs.truncate(p(name), size),
        )

    @rule(via=st.booleans(), name=st.sampled_from(NAMES))
    def unlink(self, via, name):
        self.act(via, lambda p: os.unlink(p(name)), lambda p: self.fs.unlink(p(name)))

    @rule(via=st.booleans(), name=st.sampled_from(NAMES))
    def mkdir(self, via, name):
        self.act(via, lambda p: os.mkdir(p(name)), lambda p: self.fs.mkdir(p(name)))

    @rule(via=st.booleans(), name=st.sampled_from(NAMES))
    def rmdir(self, via, name):
        self.act(via, lambda p: os.rmdir(p(name)), lambda p: self.fs.rmdir(p(name)))

    @rule(via=st.booleans(), src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, via, src, dst):
        self.act(
            via,
            lambda p: os.rename(p(src), p(dst)),
            lambda p: self.fs.rename(p(src), p(dst)),
        )

    @rule(via=st.booleans(), src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def link(self, via, src, dst):
        self.act(via, lambda p: os.link(p(src), p(dst)), lambda p: self.fs.link(p(src), p(dst)))

    @rule(via=st.booleans(), name=st.sampled_from(NAMES), mode=st.sampled_from((0o600, 0o755)))
    def chmod(self, via, name, mode):
        self.act(
            via,
            lambda p: os.chmod(p(name), mode),
            lambda p: self.fs.chmod(p(name), mode),
        )

    @rule(via=st.booleans(), name=st.sampled_from(NAMES), to=st.sampled_from(NAMES))
    def symlink(self, via, name, to):
        self.act(
            via,
            lambda p: os.symlink(to, p(name)),
            lambda p: self.fs.symlink(to, p(name)),
        )

    @invariant()
    def the_mount_shows_what_the_api_shows(self):
        # First each name on its own, through what the kernel cached (no
        # listing refreshes it): right once the server's watcher has
        # dropped what the step made stale, in milliseconds, well before
        # the cache's own timeout would.
        deadline = time.monotonic() + STALE_AT_MOST
        while (seen := self.names_seen()) != self.names_kept() and time.monotonic() < deadline:
            time.sleep(0.002)
        assert seen == self.names_kept()
        assert snapshot(self.mnt) == snapshot("/", via=self.fs)

    def names_seen(self) -> dict[str, object]:
        return {n: _entry_view(os.lstat, os.path.join(self.mnt, n)) for n in NAMES}

    def names_kept(self) -> dict[str, object]:
        return {n: _entry_view(self.fs.lstat, "/" + n) for n in NAMES}


# How long a name or attribute another process changed may stay stale in the
# kernel's cache: half its timeout (the watcher looks every 5 ms).
STALE_AT_MOST = 0.5


def _entry_view(lstat, path: str) -> object:
    """What lstat says that both views must agree on (times aside), or the errno."""
    try:
        s = lstat(path)
    except OSError as e:
        return e.errno
    return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_nlink, s.st_ino,
            s.st_size if not stat.S_ISDIR(s.st_mode) else None)  # fmt: skip


def empty_dir(root: str) -> None:
    for name in os.listdir(root):
        p = os.path.join(root, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)


@needs_fuse
def test_the_mount_follows_another_process_step_by_step(mnt):
    with daxfs.mount(mnt.pool) as fs:
        MountFollowsAnotherProcess.mnt, MountFollowsAnotherProcess.fs = str(mnt.path), fs
        run_over_the_mount(MountFollowsAnotherProcess, steps=25)
    assert mnt.stop() == 0
    assert_clean(mnt.pool)


@needs_fuse
def test_a_write_only_descriptor_and_a_reading_one_see_each_other(mnt):
    """A write-only open skips the page cache (fuse._open_flags); what it
    writes must still show through a descriptor that reads through the
    cache, and through a mapping, as on tmpfs."""
    f = mnt / "f"
    f.write_bytes(b"a" * 20_000)
    reader = os.open(f, os.O_RDONLY)
    writer = os.open(f, os.O_WRONLY)
    try:
        assert os.pread(reader, 20_000, 0) == b"a" * 20_000  # cached now
        with (
            open(reader, "rb", closefd=False) as r,
            mmap.mmap(r.fileno(), 0, prot=mmap.PROT_READ) as m,
        ):
            assert m[:4] == b"aaaa"
            assert os.pwrite(writer, b"B" * 5000, 3000) == 5000
            assert os.pwrite(writer, b"C" * 4, 19_998) == 4  # past the end: grows it
            assert (
                os.pread(reader, 30_000, 0) == b"a" * 3000 + b"B" * 5000 + b"a" * 11_998 + b"CCCC"
            )
            assert m[3000:3004] == b"BBBB"
        assert os.fstat(reader).st_size == 20_002
    finally:
        os.close(reader)
        os.close(writer)
    assert f.read_bytes()[2999:8001] == b"a" + b"B" * 5000 + b"a"


@needs_fuse
def test_holes_are_found_by_seek_data_and_seek_hole_and_dirs_fsync(mnt):
    """SEEK_DATA and SEEK_HOLE through the mount answer what the API's
    extent map answers (which rounds data to what the file holds blocks
    for), so a sparse copy skips the holes."""
    offsets = [0, 4096, 1 << 20, (1 << 30) - 1, 1 << 30, (1 << 30) + 4096, (1 << 40) - 1]
    with daxfs.mount(mnt.pool) as fs:  # a file with a hole in the middle and at the end
        with fs.open("/sparse", "wb") as f:
            f.write(b"x" * 4096)
            f.seek(1 << 30)
            f.write(b"y" * 4096)
            f.truncate(1 << 40)
        with fs.open("/sparse", "rb", buffering=0) as f:
            want = {
                (off, whence): _outcome(functools.partial(f.seek, off, whence))
                for off in offsets
                for whence in (os.SEEK_DATA, os.SEEK_HOLE)
            }
    fd = os.open(mnt / "sparse", os.O_RDONLY)
    try:
        got = {(o, w): _outcome(functools.partial(os.lseek, fd, o, w)) for o, w in want}
        assert os.fstat(fd).st_size == 1 << 40
    finally:
        os.close(fd)
    assert got == want
    assert want[0, os.SEEK_DATA] == (True, 0) and want[(1 << 40) - 1, os.SEEK_DATA][0] is False
    run("cp", "--sparse=always", mnt / "sparse", mnt / "copy")  # (in moments: holes skipped)
    assert os.stat(mnt / "copy").st_size == 1 << 40
    assert os.stat(mnt / "copy").st_blocks <= os.stat(mnt / "sparse").st_blocks
    dfd = os.open(mnt.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # a directory's fsync: its names durable (FSYNCDIR)
    finally:
        os.close(dfd)


@needs_fuse
def test_fallocate_extends_with_zeroes(mnt):
    path = mnt / "pre.bin"
    path.write_bytes(b"head")
    run("fallocate", "-l", str(3 * MiB), path)
    assert path.stat().st_size == 3 * MiB
    assert path.read_bytes() == b"head" + bytes(3 * MiB - 4)
    assert path.stat().st_blocks * 512 >= 3 * MiB
    res = run("fallocate", "--punch-hole", "-o", "0", "-l", "4096", path, ok=False)
    assert res.returncode != 0 and b"unsupported" in res.stderr  # EOPNOTSUPP
    fd = os.open(mnt / "posix.bin", os.O_CREAT | os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 10_000)
        assert os.fstat(fd).st_size == 10_000
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# system calls tools rarely make, through the mount
# --------------------------------------------------------------------------
AT_FDCWD, AT_SYMLINK_NOFOLLOW = -100, 0x100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


LIBC = ctypes.CDLL(None, use_errno=True)


def renameat2(old: Path, new: Path, flags: int) -> int:
    """renameat2(2): 0, or the errno."""
    ok = LIBC.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags) == 0
    return 0 if ok else ctypes.get_errno()


def utimensat(path: Path, atime_ns: int | None, mtime_ns: int | None, flags: int = 0) -> None:
    """utimensat(2) with ns times; None is UTIME_OMIT, -1 UTIME_NOW."""

    def spec(t: int | None) -> Timespec:
        if t is None:
            return Timespec(0, UTIME_OMIT)
        if t == -1:
            return Timespec(0, UTIME_NOW)
        return Timespec(t // 10**9, t % 10**9)

    times = (Timespec * 2)(spec(atime_ns), spec(mtime_ns))
    if LIBC.utimensat(AT_FDCWD, bytes(path), times, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


@needs_fuse
def test_rename_flags_as_linux_answers_them(mnt):
    for name in ("a", "b"):
        (mnt / name).write_bytes(name.encode())
    os.symlink("nowhere", mnt / "dangling")
    assert renameat2(mnt / "a", mnt / "b", RENAME_NOREPLACE) == errno.EEXIST
    assert renameat2(mnt / "a", mnt / "dangling", RENAME_NOREPLACE) == errno.EEXIST
    assert renameat2(mnt / "a", mnt / "b", RENAME_EXCHANGE) == errno.EINVAL  # not supported
    assert renameat2(mnt / "a", mnt / "c", RENAME_NOREPLACE) == 0
    assert sorted(os.listdir(mnt.path)) == ["b", "c", "dangling"]
    assert (mnt / "c").read_bytes() == b"a"


@needs_fuse
def test_utimensat_omit_now_nanoseconds_and_symlinks(mnt):
    f = mnt / "f"
    f.write_bytes(b"x")
    utimensat(f, 10**9 + 7, 20 * 10**9 + 123_456_789)
    utimensat(f, None, 30 * 10**9 + 1)  # atime omitted
    st_ = os.stat(f)
    assert (st_.st_atime_ns, st_.st_mtime_ns) == (10**9 + 7, 30 * 10**9 + 1)
    before = time.time_ns()
    utimensat(f, -1, None)  # atime now, mtime omitted
    st_ = os.stat(f)
    assert st_.st_atime_ns >= before - 10**7 and st_.st_mtime_ns == 30 * 10**9 + 1
    assert st_.st_ctime_ns >= before - 10**7  # a metadata change sets ctime
    utimensat(f, -(10**9), -(5 * 10**9))  # before 1970
    assert os.stat(f).st_mtime_ns == -(5 * 10**9)
    os.symlink("nowhere", mnt / "link")
    utimensat(mnt / "link", 1, 2, AT_SYMLINK_NOFOLLOW)  # the link itself, even dangling
    assert os.lstat(mnt / "link").st_mtime_ns == 2
    assert mnt.stop() == 0
    with daxfs.mount(mnt.pool, readonly=True) as fs:
        assert fs.stat("/f").st_mtime_ns == -(5 * 10**9)
        assert fs.stat("/f").st_ctime_ns >= before - 10**7
        assert fs.lstat("/link").st_mtime_ns == 2


@needs_fuse
def test_chown_minus_one_keeps_and_errors_keep_their_errno(mnt):
    f = mnt / "f"
    f.write_bytes(b"")
    os.chown(f, -1, -1)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (0, 0)
    os.chown(f, 1234, -1)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 0)
    (mnt / "d").mkdir()
    (mnt / "d" / "x").write_bytes(b"")
    with pytest.raises(OSError) as info:
        os.rmdir(mnt / "d")
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "missing")
    with pytest.raises(OSError) as info:
        os.open(mnt / ("n" * 256), os.O_CREAT | os.O_WRONLY)
    assert info.value.errno == errno.ENAMETOOLONG
    with pytest.raises(IsADirectoryError):
        open(mnt / "d", "rb")
    with pytest.raises(NotADirectoryError):
        os.listdir(mnt / "f")


@needs_fuse
def test_open_file_unlinked_under_one_of_two_names_keeps_its_link_count(mnt):
    # Found by the state machine: libfuse counts its hidden name as a link
    # and takes it off, so fstat showed 0 links while another name remained.
    fd = os.open(mnt / "a", os.O_CREAT | os.O_RDWR)
    try:
        os.link(mnt / "a", mnt / "b")
        os.unlink(mnt / "a")
        assert os.fstat(fd).st_nlink == 1 == os.stat(mnt / "b").st_nlink
        os.unlink(mnt / "b")
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)


@settings(max_examples=60, deadline=None)
@given(
    size=st.one_of(
        st.sampled_from([0, 1, 4095, 4096, (2 << 20) - 1, 2 << 20, 5 << 20]),
        st.integers(0, 5 << 20),
    ),
    times=st.tuples(*[st.integers(-(2**62), 2**62)] * 2),
    kind=st.sampled_from(["file", "dir", "symlink", "fifo", "device"]),
)
def test_a_listing_reports_what_getattr_reports(tmp_path_factory, size, times, kind):
    """READDIRPLUS packs each entry's attributes straight from the inode
    (fuse.inode_attr); they must be what GETATTR sends, made from the stat
    result, for every kind of inode, size and time (before 1970 too)."""
    from daxfs import fusewire
    from daxfs.fuse import inode_attr

    pool = str(tmp_path_factory.mktemp("attr") / "pool")
    daxfs.mkfs(pool, "64M")
    with daxfs.mount(pool) as fs:
        {
            "file": lambda: fs.open("/x", "wb").close(),
            "dir": lambda: fs.mkdir("/x"),
            "symlink": lambda: fs.symlink("target", "/x"),
            "fifo": lambda: fs.mkfifo("/x"),
            "device": lambda: fs.mknod("/x", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        }[kind]()
        if kind == "file":
            with fs.open("/x", "r+b") as f:
                f.write(b"z" * min(size, 1 << 16))
            fs.truncate("/x", size)
        if kind != "symlink":
            fs.utime("/x", ns=times)
        inode = fs._inode(fs.lstat("/x").st_ino)
        assert inode_attr(inode) == fusewire.attr_fields(fs._stat_result(inode))


def _ask(server, opcode: int, node: int, args: bytes = b""):
    """One request to ``server``'s handler, as the kernel makes it."""
    from daxfs import fusewire as w

    req = w.Request(opcode, 1, node, os.geteuid(), os.getegid(), os.getpid(), memoryview(args))
    return server.handlers[opcode](req)


def _looked_up(server, parent: int, name: str) -> tuple[int, int, int]:
    """LOOKUP of ``name`` in node ``parent``: (node, generation, st_ino)."""
    from daxfs import fusewire as w

    (entry,) = _ask(server, w.LOOKUP, parent, name.encode() + b"\0")
    node, generation, *_valid, ino = w.ENTRY_OUT.unpack(entry)[:7]
    return node, generation, ino


def _made_again(fs, path: str, ino: int, make) -> None:
    """``make(path)`` until the pool gives it number ``ino`` (said unlinks
    give their numbers back in batches, so it can take a few dozen)."""
    for n in range(200):
        make(f"{path}.{n}")
        if fs.lstat(f"{path}.{n}").st_ino == ino:
            fs.rename(f"{path}.{n}", path)
            return
        fs.rmdir(f"{path}.{n}") if fs.isdir(f"{path}.{n}") else fs.unlink(f"{path}.{n}")
    raise AssertionError(f"number {ino} never given again")


def test_a_node_the_kernel_still_holds_names_its_file_while_the_number_serves_another(pool_path):
    """The kernel may still hold a node for a file that is gone when the
    pool gives its number to a new file: a LOOKUP answered for the old file
    can be applied after an unlink and a create that took the number (the
    FUSE-over-io_uring clients test met the new file's reads answered from
    the old one's cached pages).  The server's answers in that order, as
    the kernel asks: the new file is another node, of another generation;
    the old node finds its file gone, as a file and as a directory; once
    the kernel forgets the old node the number is the new file's node
    again."""
    from daxfs import fusewire as w
    from daxfs.fuse import Server

    def forget(node: int, n: int = 1) -> None:
        _ask(server, w.FORGET, node, w.FORGET_IN.pack(n))

    with daxfs.mount(pool_path) as fs:
        server = Server(fs, None)  # type: ignore[arg-type]  (no kernel: no notifications here)
        fs.write_bytes("/a", b"A")
        old, old_gen, ino = _looked_up(server, w.ROOT_ID, "a")
        assert old == ino  # (a node is its file's number while it can be)
        fs.unlink("/a")
        _made_again(fs, "/b", ino, lambda p: fs.write_bytes(p, b"B"))
        new, new_gen, new_ino = _looked_up(server, w.ROOT_ID, "b")
        assert new_ino == ino and new != old and new_gen != old_gen
        (attr_out,) = _ask(server, w.GETATTR, new, w.GETATTR_IN.pack(0, 0, 0))[1:]
        assert w.ATTR.unpack_from(attr_out)[:2] == (ino, 1)
        for opcode, args in [
            (w.GETATTR, w.GETATTR_IN.pack(0, 0, 0)),
            (w.OPEN, w.OPEN_IN.pack(os.O_RDONLY, 0)),
            (w.OPEN, w.OPEN_IN.pack(os.O_WRONLY | os.O_TRUNC, 0)),
        ]:
            with pytest.raises(FileNotFoundError):
                _ask(server, opcode, old, args)
        assert fs.read_bytes("/b") == b"B"  # (the O_TRUNC meant for the old file did nothing)
        assert _looked_up(server, w.ROOT_ID, "b")[0] == new  # (held: the same node)
        forget(old)
        forget(new, 2)
        assert not server.track.aliases  # (what the kernel forgot is forgotten here)
        assert _looked_up(server, w.ROOT_ID, "b")[:2] == (ino, new_gen)

        fs.mkdir("/d")
        fs.write_bytes("/d/x", b"x")
        old_dir, _gen, dino = _looked_up(server, w.ROOT_ID, "d")
        fs.unlink("/d/x")
        fs.rmdir("/d")
        _made_again(fs, "/e", dino, fs.mkdir)
        fs.write_bytes("/e/x", b"y")
        with pytest.raises(FileNotFoundError):
            _looked_up(server, old_dir, "x")
        new_dir = _looked_up(server, w.ROOT_ID, "e")[0]
        assert new_dir != old_dir and _looked_up(server, new_dir, "x")[2] > 0
    assert daxfs.check(pool_path).ok


class NodesAsTheKernelHoldsThem(RuleBasedStateMachine):
    """fuse.Tracker against what the kernel holds: files (inode number,
    birth time) given in any order, numbers given again to new files,
    nodes forgotten in part or whole.  A node the kernel holds names one
    file until it is forgotten, a file has one node, every other view of
    the tracker agrees, and what is forgotten is forgotten there too."""

    def __init__(self) -> None:
        super().__init__()
        from daxfs.fuse import Tracker

        self.track = Tracker()
        self.held: dict[int, tuple[tuple[int, int], int]] = {}  # node -> (file, lookups)
        self.births = {ino: 0 for ino in range(2, 6)}  # the pool's files now

    @rule(ino=st.integers(2, 5), name=st.sampled_from(["a", "b"]))
    def give(self, ino: int, name: str) -> None:
        file = (ino, self.births[ino])
        (node,) = self.track.give(1, [(name, *file)])
        was = self.held.get(node)
        assert was is None or was[0] == file, (node, was, file)
        self.held[node] = (file, 1 if was is None else was[1] + 1)

    @rule(ino=st.integers(2, 5))
    def number_given_again(self, ino: int) -> None:
        self.births[ino] += 1

    @rule(data=st.data())
    def forget(self, data) -> None:
        if not self.held:
            return
        node = data.draw(st.sampled_from(sorted(self.held)))
        file, lookups = self.held[node]
        n = data.draw(st.integers(1, lookups))
        self.track.forget(node, n)
        if n == lookups:
            del self.held[node]
        else:
            self.held[node] = (file, lookups - n)

    @invariant()
    def the_tracker_names_what_the_kernel_holds(self) -> None:
        track = self.track
        files = [file for file, _n in self.held.values()]
        assert len(set(files)) == len(files)  # (a file, one node)
        assert {node: track.file_of(node) for node in self.held} == {
            node: file for node, (file, _n) in self.held.items()
        }
        assert track.lookups == {node: n for node, (_file, n) in self.held.items()}
        assert set(track.files) == set(self.held)
        assert track.all_inos() == {1, *(ino for ino, _born in files)}
        for ino in range(2, 6):
            mine = {node for node, ((i, _b), _n) in self.held.items() if i == ino}
            assert set(track.known([ino])) == mine
        for node in self.held:
            assert node == self.held[node][0][0] or node >= track.ALIASES


def test_a_node_names_one_file_while_the_kernel_holds_it():
    run_state_machine_as_test(
        NodesAsTheKernelHoldsThem, settings=settings(max_examples=200, deadline=None)
    )


def test_a_listing_read_in_parts_gives_no_name_its_directory_lost_meanwhile(pool_path):
    """READDIRPLUS gives each listed name to the kernel as a lookup, from a
    listing taken at the first part.  A name removed before a later part,
    its number since given to another file, goes as a plain entry: given
    with the new file's node, the kernel kept a name the directory no
    longer has, as the new file's (the io_uring clients test met mkdir
    answering EEXIST for a directory its client had removed)."""
    from daxfs import fusewire as w
    from daxfs.fuse import Server

    with daxfs.mount(pool_path) as fs:
        server = Server(fs, None)  # type: ignore[arg-type]  (no kernel: no notifications here)
        fs.mkdir("/d")
        fs.write_bytes("/d/a", b"a")
        fs.write_bytes("/d/b", b"b")
        node = _looked_up(server, w.ROOT_ID, "d")[0]
        (opened,) = _ask(server, w.OPENDIR, node, w.OPEN_IN.pack(0, 0))
        fh = w.OPEN_OUT.unpack(opened)[0]

        def part(off: int, size: int) -> list[tuple[bytes, int]]:
            (got,) = _ask(server, w.READDIRPLUS, node, w.READ_IN.pack(fh, off, size, 0, 0, 0, 0))
            out, at = [], 0
            while at < len(got):
                nodeid = w.ENTRY_OUT.unpack_from(got, at)[0]
                at += w.ENTRY_OUT.size
                _ino, _off, namelen, _type = w.DIRENT_HEAD.unpack_from(got, at)
                name = bytes(got[at + w.DIRENT_HEAD.size : at + w.DIRENT_HEAD.size + namelen])
                at += len(w.dirent_bytes(0, 0, name, 0))
                out.append((name, nodeid))
            return out

        first = [(b".", 0), (b"..", 0), (b"a", fs.lstat("/d/a").st_ino)]
        size = sum(w.ENTRY_OUT.size + len(w.dirent_bytes(0, 0, n, 0)) for n, _node in first)
        assert part(0, size) == first
        ino = fs.lstat("/d/b").st_ino
        fs.unlink("/d/b")
        _made_again(fs, "/d/c", ino, lambda p: fs.write_bytes(p, b"c"))  # (same type, same parent)
        assert part(3, 1 << 16) == [(b"b", 0)]
    assert daxfs.check(pool_path).ok


@needs_fuse
def test_a_symlink_remade_by_another_process_shows_its_new_target(mnt):
    """Another process replaces a symlink and the new one gets the old one's
    inode number: the kernel keeps its inode (same node, same type) and,
    caching symlinks, the old target, which no attribute refresh drops.  The
    server's watcher drops it: the new target shows within STALE_AT_MOST,
    as any other change does."""
    link = mnt.path / "a"
    with daxfs.mount(mnt.pool) as fs:
        for n, (old, new) in enumerate([("b", "d/b"), ("x" * 100, "y"), ("same", "same2")]):
            fs.symlink(old, f"/a{n}")
            assert os.readlink(f"{link}{n}") == old  # (cached by the kernel now)
            ino = fs.lstat(f"/a{n}").st_ino
            fs.unlink(f"/a{n}")
            fs.symlink(new, f"/a{n}")
            reused = fs.lstat(f"/a{n}").st_ino == ino
            deadline = time.monotonic() + STALE_AT_MOST
            while os.readlink(f"{link}{n}") != new and time.monotonic() < deadline:
                time.sleep(0.002)
            assert os.readlink(f"{link}{n}") == new, f"reused inode: {reused}"
    assert mnt.stop() == 0
    assert_clean(mnt.pool)
