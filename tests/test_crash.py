"""Crash states: every seq-1 workload of an ACE-style generator is recorded
through the crash tester's RecordingRegion; at every fence the images a
power failure could leave are rebuilt (daxfs.crash) and each one must
mount (recovering the journal), check clean, recover a second time to the
same tree, and show the operation wholly done or wholly undone; once the
operation has returned, wholly done.

DAXFS_CRASH_FULL=1 tries more random subsets per crash point (make crash-full).
"""

from __future__ import annotations

import os
import random
import stat
import zlib

import pytest

import daxfs
from daxfs.check import check_region
from daxfs.crash import MemoryRegion, RecordingRegion, crash_images, crash_points
from daxfs.fs import mount_region
from daxfs.region import Region

FULL = bool(os.environ.get("DAXFS_CRASH_FULL"))
RANDOM_SUBSETS = 1000 if FULL else 60
POOL = "6M"
DIRS = ["/A", "/B", "/C", "/D"]
FILES = ["/A/foo", "/A/bar", "/B/foo", "/B/bar", "/C/foo", "/C/bar", "/D/foo", "/D/bar"]
SIZES = {"/A/foo": 5000, "/A/bar": 0, "/B/foo": 8192, "/B/bar": 100, "/C/foo": 70000,
         "/C/bar": 4096, "/D/foo": 1, "/D/bar": 12288}  # fmt: skip
STATS = {"workloads": 0, "points": 0, "states": 0, "unique": 0}


def _setup(fs) -> None:
    for d in DIRS:
        fs.mkdir(d)
    fs.mkdir("/A/sub")
    fs.mkdir("/E")  # an empty directory to remove or rename over
    for i, path in enumerate(FILES):
        with fs.open(path, "wb") as f:
            f.write(bytes([65 + i]) * SIZES[path])
    fs.link("/A/foo", "/D/hard")


def _write(path: str, off: int, n: int):
    def op(fs):
        with fs.open(path, "r+b", buffering=0) as f:
            f.seek(off)
            f.write(bytes([(off + n) % 251 + 1]) * n)

    return op


def _workloads() -> dict[str, object]:
    w: dict[str, object] = {}
    for d in DIRS:
        w[f"creat {d}/new"] = lambda fs, d=d: fs.open(f"{d}/new", "xb").close()
        w[f"mkdir {d}/new"] = lambda fs, d=d: fs.mkdir(f"{d}/new")
        w[f"rmdir {d}"] = lambda fs, d=d: fs.rmdir(d)  # fails: not empty
        w[f"rename {d} -> /E"] = lambda fs, d=d: fs.rename(d, "/E")
        w[f"rename {d} -> /Z"] = lambda fs, d=d: fs.rename(d, "/Z")
    w["rmdir /E"] = lambda fs: fs.rmdir("/E")
    w["rename /A -> /A/sub/x (EINVAL)"] = lambda fs: fs.rename("/A", "/A/sub/x")
    w["rename /E -> /A/sub (over empty dir)"] = lambda fs: fs.rename("/E", "/A/sub")
    for p in FILES:
        size = SIZES[p]
        for off, n in [(0, 4096), (100, 50), (4000, 200), (size, 4096), (size, 3000),
                       (size + 10000, 10), (0, 2 << 20)]:  # fmt: skip
            w[f"write {p} {off}+{n}"] = _write(p, off, n)
        w[f"fallocate {p} 0+16384"] = lambda fs, p=p: fs.fallocate(p, 0, 16384)
        w[f"fallocate {p} end+8192"] = lambda fs, p=p, s=size: fs.fallocate(p, s, 8192)
        for length in (0, 100, 20000):
            w[f"truncate {p} {length}"] = lambda fs, p=p, n=length: fs.truncate(p, n)
        w[f"unlink {p}"] = lambda fs, p=p: fs.unlink(p)
        w[f"link {p} -> /E/l"] = lambda fs, p=p: fs.link(p, "/E/l")
        w[f"rename {p} -> /E/r"] = lambda fs, p=p: fs.rename(p, "/E/r")
        w[f"rename {p} -> /B/foo"] = lambda fs, p=p: fs.rename(p, "/B/foo")
        # A seq-2 workload (the bug class peers shipped): each step is atomic,
        # so a crash may also leave the state between the two.
        w[f"truncate, fallocate {p}"] = (lambda fs, p=p: fs.truncate(p, 10),
                                         lambda fs, p=p: fs.fallocate(p, 0, 9000))  # fmt: skip
    return w


WORKLOADS = _workloads()


def _snapshot(fs) -> dict[str, tuple]:
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
            else:
                with fs.open(p, "rb") as f:
                    entry += (zlib.crc32(f.read()),)
            out[p] = entry
    return out


@pytest.fixture(scope="module")
def base_pool(tmp_path_factory):
    path = f"/dev/shm/daxfs-crash-base-{os.getpid()}.pool"
    daxfs.mkfs(path, POOL, inodes=256)
    with daxfs.mount(path) as fs:
        _setup(fs)
    with open(path, "rb") as f:
        image = f.read()
    lock = f"/dev/shm/daxfs-crash-lock-{os.getpid()}"
    yield path, image, lock
    os.unlink(path)
    if os.path.exists(lock):
        os.unlink(lock)
    print(f"\ncrash states: {STATS}")


def _record(path: str, image: bytes, steps):
    """Run the workload's steps on a recorded mount; the tree after each step."""
    with open(path, "wb") as f:
        f.write(image)
    rec = RecordingRegion(Region(path, durability="none"))
    fs = mount_region(rec)
    base = bytes(rec.inner.buf)
    rec.log.clear()
    states = []
    for step in steps if isinstance(steps, tuple) else (steps,):
        try:
            step(fs)
        except (OSError, ValueError):
            pass  # a failing operation must leave the tree as it was
        states.append(_snapshot(fs))
    returned_at = len(rec.log)
    fs.close()
    return base, rec.log, returned_at, states


def _recovered_snapshot(img: bytearray, lock: str) -> dict[str, tuple]:
    fs = mount_region(MemoryRegion(img, lock))
    try:
        snap = _snapshot(fs)
    finally:
        fs.close()
    report = check_region(MemoryRegion(img, lock))  # recovers again, then checks
    assert report.ok, report.errors
    fs = mount_region(MemoryRegion(img, lock))
    try:
        assert _snapshot(fs) == snap, "a second recovery changed the tree"
    finally:
        fs.close()
    return snap


def _blur(snap: dict[str, tuple], ino: int) -> dict[str, tuple]:
    return {p: (e[:4] if e[1] == ino else e) for p, e in snap.items()}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_crash_state_is_before_or_after(base_pool, name):
    path, image, lock = base_pool
    before = _recovered_snapshot(bytearray(image), lock)
    base, log, returned_at, states = _record(path + ".w", image, WORKLOADS[name])
    os.unlink(path + ".w")
    after = states[-1]
    if name.startswith("write "):
        # Overwrites in place are not atomic (POSIX allows any mix of old and
        # new bytes after a crash): compare the written file without content.
        ino = before[name.split()[1]][1]
        before, after = _blur(before, ino), _blur(after, ino)
        states = [_blur(s, ino) for s in states]
    else:
        ino = None
    rng = random.Random(name)
    seen: dict[int, dict] = {}
    STATS["workloads"] += 1
    for point in crash_points(base, log):
        STATS["points"] += 1
        for img in crash_images(point, rng, RANDOM_SUBSETS):
            STATS["states"] += 1
            key = zlib.crc32(img)
            if key not in seen:
                STATS["unique"] += 1
                seen[key] = _recovered_snapshot(img, lock)
            got = seen[key] if ino is None else _blur(seen[key], ino)
            if point.index >= returned_at:
                assert got == after, f"{name}: crash after return lost the operation"
            else:
                assert got in [before, *states], f"{name}: crash at event {point.index} left a mix"


def test_crash_state_totals_are_reported():
    # Runs last in this module (pytest keeps file order): the totals for the README.
    if STATS["workloads"] < len(WORKLOADS):
        pytest.skip("run the whole module to count crash states")
    assert STATS["states"] > 0
    print(f"\n{STATS}")
