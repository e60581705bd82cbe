"""Shared fixtures: pools on tmpfs (fast, durability "none") and on disk (msync).

Hypothesis profiles: "default" (what `pytest` runs), "quick" for a fast local
loop, "long" for a bug hunt (minutes).  Select with HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import daxfs
from daxfs import logical

settings.register_profile(
    "default",
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "quick",
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=2000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

SHM = "/dev/shm"
POOL_SIZE = 64 << 20


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted on the new directory ``where`` for the
    block (root only): a backing that fills up, or is remounted read-only."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def shm_dir() -> Iterator[str]:
    """A private directory on tmpfs, removed afterwards."""
    base = SHM if os.path.isdir(SHM) else None
    d = tempfile.mkdtemp(prefix="daxfs-test-", dir=base)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def started_together(script: str, argvs: list[list[str]]) -> list[subprocess.Popen]:
    """One Python process per argv running ``script``, released together:
    each prints "ready" when set up and waits for a line on stdin to go
    (so the timed part of each runs at the same moment as the others')."""
    kids = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    for kid in kids:
        assert kid.stdout.readline().strip() == "ready"
    for kid in kids:
        kid.stdin.write("go\n")
        kid.stdin.flush()
    return kids


@contextmanager
def script_child(src: str, *args: str) -> Iterator[subprocess.Popen]:
    """A child process running ``src`` with ``args``, text pipes both ways;
    killed at the end of the block if it is still running."""
    child = subprocess.Popen(
        [sys.executable, "-c", src, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def in_forked_child(work):
    """``work()``'s JSON-able result, computed in a forked child, for work
    that changes the process for good (chroot, setuid)."""
    import json

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(rfd)
            result = work()
            with os.fdopen(wfd, "w") as w:
                json.dump(result, w)
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as r:
        data = r.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def new_pool(
    directory: str,
    size: int = POOL_SIZE,
    allocator: str = "hugepage",
    inodes: int | None = None,
    name: str | None = None,
) -> str:
    """mkfs a fresh pool file in ``directory`` and return its path."""
    path = os.path.join(directory, name or f"pool-{uuid.uuid4().hex[:8]}")
    daxfs.mkfs(path, size, allocator=allocator, inodes=inodes)
    return path


def put(fs: daxfs.FileSystem, path: str, data: bytes) -> None:
    """Write a whole file through the API (created or truncated)."""
    with fs.open(path, "wb") as f:
        f.write(data)


def get(fs: daxfs.FileSystem, path: str) -> bytes:
    """A whole file's bytes through the API."""
    with fs.open(path, "rb") as f:
        return f.read()


@pytest.fixture
def pool_path(shm_dir: str) -> str:
    """A fresh 64 MiB pool (hugepage allocator) on /dev/shm."""
    return new_pool(shm_dir)


@pytest.fixture
def long_holds(monkeypatch):
    """Holds of the pool lock that last until a call ends them (not the
    hold times of logical.py, which a loaded machine's pauses outlast)."""
    monkeypatch.setattr(logical, "HOLD_SECONDS", 600.0)
    monkeypatch.setattr(logical, "HOLD_ALONE_MOST", 600.0)
    monkeypatch.setattr(logical, "HOLD_IDLE", 600.0)


@pytest.fixture
def make_pool(shm_dir: str):
    """Factory: make_pool(size=..., allocator=..., inodes=...) -> path on tmpfs."""

    def make(size: int = POOL_SIZE, allocator: str = "hugepage", inodes: int | None = None):
        return new_pool(shm_dir, size, allocator, inodes)

    return make


@pytest.fixture
def naive_pool(shm_dir: str) -> str:
    """A fresh 64 MiB pool built with the naive (first-fit) allocator."""
    return new_pool(shm_dir, allocator="naive")


@pytest.fixture
def fs(pool_path: str) -> Iterator[daxfs.FileSystem]:
    """The fresh tmpfs pool, mounted; closed afterwards."""
    f = daxfs.mount(pool_path)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def disk_pool(tmp_path) -> str:
    """A fresh 64 MiB pool on the ordinary disk (page cache: msync backend)."""
    return new_pool(str(tmp_path))


@pytest.fixture(params=["tmpfs", "disk"])
def any_fs(request, shm_dir: str, tmp_path) -> Iterator[daxfs.FileSystem]:
    """A fresh mounted pool on each backend: tmpfs ("none") and disk ("msync")."""
    where = shm_dir if request.param == "tmpfs" else str(tmp_path)
    f = daxfs.mount(new_pool(where))
    assert f.info()["durability"] == ("none" if request.param == "tmpfs" else "msync")
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="session")
def huge_dir():
    """A tmpfs mounted huge=always (2 MiB pages for pool files), once per session;
    tests put uniquely named pools in it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a huge=always tmpfs needs root")
    if not shutil.which("mount"):
        pytest.skip("no mount(8) on this machine")
    d = tempfile.mkdtemp(prefix="daxfs-hugemap-")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "huge=always,size=3G", "tmpfs", d],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a huge tmpfs here: {res.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=False)
        os.rmdir(d)


# --------------------------------------------------------------------------
# FUSE: whether it works here, mounts, and a case-folding destination
# --------------------------------------------------------------------------
def fuse_unavailable() -> str | None:
    """Why FUSE cannot be used here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no permission to open /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fusermount3 not installed (make deps installs the fuse3 package)"
    return None


NO_FUSE = fuse_unavailable()
needs_fuse = pytest.mark.skipif(NO_FUSE is not None, reason=NO_FUSE or "")


def _unescape_mount_field(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as \\ooo."""
    return field.encode().decode("unicode_escape")


def is_mounted(path: str | os.PathLike) -> bool:
    """From /proc/self/mounts: never touches the mount itself, so a hung
    server cannot hang the test."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(_unescape_mount_field(line.split()[1]) == target for line in f)


def unmount(path: str | os.PathLike) -> None:
    """fusermount3 -u, and a lazy unmount when something still holds it."""
    if not is_mounted(path):
        return
    if subprocess.run(["fusermount3", "-u", str(path)], capture_output=True).returncode:
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


CASEFOLD_SERVER = Path(__file__).with_name("casefold_fuse.py")


@contextmanager
def casefold_mount(where: Path) -> Iterator[Path]:
    """A case-insensitive, case-preserving directory (tests/casefold_fuse.py
    over ``where``/backing, mounted on ``where``/folded) for the block: this
    kernel has no casefold for ext4 or tmpfs (no CONFIG_UNICODE).  Skips
    where FUSE or root is missing."""
    if NO_FUSE or os.geteuid() != 0:
        pytest.skip(NO_FUSE or "the case-folding file system is mounted as root")
    backing, mnt = where / "backing", where / "folded"
    backing.mkdir()
    mnt.mkdir()
    with open(where / "casefold.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, str(CASEFOLD_SERVER), str(backing), str(mnt)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 15
        while not is_mounted(mnt) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert is_mounted(mnt), (where / "casefold.log").read_text()
        yield mnt
    finally:
        unmount(mnt)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_threads_switching_often(worker, n: int) -> None:
    """``worker(t)`` for t in range(n), each in a thread of its own, the
    interpreter switching threads as often as it can."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(switch)
