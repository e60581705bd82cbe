"""Faults from below: the durability backend fails at its Nth call.

As SQLite's I/O-error tests do, each operation is run again and again with
the failure moved one call later (N = 1, 2, ...) until it succeeds without
meeting the fault.  Every time: the call either succeeds or raises OSError
with the injected errno; the pool then mounts, checks clean, and shows the
operation whole or not at all.
"""

from __future__ import annotations

import errno
import os

import pytest

import daxfs


class FailingDurability:
    """Wraps the region's real backend; the Nth flush or fence fails."""

    def __init__(self, real, fail_at: int, code: int):
        self.real, self.fail_at, self.code = real, fail_at, code
        self.name, self.volatile = real.name, real.volatile
        self.calls = 0
        self.fired = False

    def _tick(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            self.fired = True
            raise OSError(self.code, os.strerror(self.code))

    def flush(self, addr: int, n: int) -> None:
        self._tick()
        self.real.flush(addr, n)

    def fence(self) -> None:
        self._tick()
        self.real.fence()


def _seed(fs) -> None:
    fs.makedirs("/d/sub")
    with fs.open("/d/a", "wb") as f:
        f.write(b"a" * 5000)
    with fs.open("/d/big", "wb") as f:
        f.write(b"B" * (3 << 20))


def _state(fs) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for top, dirs, files in fs.walk("/"):
        for name in dirs:
            out[top.rstrip("/") + "/" + name] = "dir"
        for name in files:
            p = top.rstrip("/") + "/" + name
            with fs.open(p, "rb") as f:
                out[p] = f.read()
    return out


# Each operation is one atomic change (one call, or a handle whose only
# change is the single write its close flushes).
def _create(fs):
    fs.open("/d/new", "xb").close()


def _append(fs):
    with fs.open("/d/a", "ab") as f:
        f.write(b"+" * 9000)


def _big_write(fs):
    with fs.open("/d/big", "r+b") as f:  # 3 MiB grows to 5 MiB: new whole chunks
        f.write(b"Z" * (5 << 20))


# States other than "before" and "after" that POSIX allows an operation to
# leave when it fails: a write that fails may leave the bytes it overwrote in
# place (the written prefix) without the size change that failed.
PARTIAL = {"large write": lambda before: {**before, "/d/big": b"Z" * (3 << 20)}}

OPERATIONS = {
    "create": _create,
    "append": _append,
    "large write": _big_write,
    "mkdir": lambda fs: fs.mkdir("/d/sub/x"),
    "rename over": lambda fs: fs.rename("/d/a", "/d/big"),
    "unlink": lambda fs: fs.unlink("/d/big"),
    "truncate": lambda fs: fs.truncate("/d/big", 100),
    "fallocate": lambda fs: fs.fallocate("/d/a", 0, 4 << 20),
    "link": lambda fs: fs.link("/d/a", "/d/sub/a2"),
}


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_failing_flush_leaves_the_pool_consistent(tmp_path, op, code):
    path = str(tmp_path / "pool")
    daxfs.mkfs(path, "16M")
    with daxfs.mount(path) as fs:
        _seed(fs)
        before = _state(fs)
    with daxfs.mount(path) as fs:  # the state the operation should produce
        OPERATIONS[op](fs)
        after = _state(fs)
    daxfs.mkfs(path, "16M", force=True)
    with daxfs.mount(path) as fs:
        _seed(fs)
    image = open(path, "rb").read()

    for n in range(1, 200):
        with open(path, "wb") as f:
            f.write(image)
        fs = daxfs.mount(path)
        faulty = FailingDurability(fs.region.durability, n, code)
        fs.region.durability = faulty
        try:
            OPERATIONS[op](fs)
        except OSError as e:
            assert e.errno == code, f"N={n}: unexpected {e!r}"
        finally:
            fs.region.durability = faulty.real
            try:
                fs.close()
            except OSError:
                pass
        report = daxfs.check(path)
        assert report.ok, (n, report.errors)
        with daxfs.mount(path) as again:
            got = _state(again)
        allowed = [before, after] + ([PARTIAL[op](before)] if op in PARTIAL else [])
        assert got in allowed, f"N={n}: the operation is neither whole nor absent"
        if not faulty.fired:
            assert got == after
            break
    else:
        pytest.fail("the operation never completed")
