"""Real kills: a child process runs a random workload on a pool and is killed
with SIGKILL at a random moment, again and again.

The child writes an intent line before each operation and a done line
after it, to a log outside the pool.  After each kill the parent mounts
(recovering the journal), checks, and compares the pool with the state the
log implies: every completed operation is there, and the one in flight (if
any) is either wholly done or wholly absent.  Then the next child starts
from whatever the pool now holds.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

import daxfs

KILLS = int(os.environ.get("DAXFS_KILLS", "200"))
MAX_FILES = 40


def _content(name: str, size: int, salt: int) -> bytes:
    unit = f"{name}:{salt};".encode()
    return (unit * (size // len(unit) + 1))[:size]


def _snapshot(fs) -> dict[str, bytes]:
    out = {}
    for name in fs.listdir("/"):
        with fs.open("/" + name, "rb") as f:
            out[name] = f.read()
    return out


def _child(pool: str, log_path: str, seed: int) -> None:
    """Run operations forever (until killed), logging intent and completion."""
    rng = random.Random(seed)
    fs = daxfs.mount(pool)
    names = set(fs.listdir("/"))
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while True:
        n += 1
        op = _pick(rng, names)
        os.write(log, ("begin " + " ".join(map(str, op)) + "\n").encode())
        _apply_fs(fs, op)
        _apply_names(names, op)
        os.write(log, f"end {n}\n".encode())


def _pick(rng: random.Random, names: set[str]) -> tuple:
    existing = sorted(names)
    choice = rng.random()
    if not existing or (choice < 0.45 and len(existing) < MAX_FILES):
        return ("create", f"f{rng.randrange(10**9)}", rng.choice([0, 100, 4096, 5000, 70000]),
                rng.randrange(1000))  # fmt: skip
    if choice < 0.65:
        return ("unlink", rng.choice(existing))
    if choice < 0.85:
        return ("rename", rng.choice(existing), rng.choice([*existing, f"r{rng.randrange(10**9)}"]))
    return ("append", rng.choice(existing), rng.choice([1, 4096, 9000]), rng.randrange(1000))


def _apply_fs(fs, op: tuple) -> None:
    kind = op[0]
    if kind == "create":
        with fs.open("/" + op[1], "xb") as f:
            f.write(_content(op[1], op[2], op[3]))
    elif kind == "unlink":
        fs.unlink("/" + op[1])
    elif kind == "rename":
        fs.rename("/" + op[1], "/" + op[2])
    else:
        with fs.open("/" + op[1], "ab") as f:
            f.write(_content(op[1], op[2], op[3]))


def _apply_names(names: set[str], op: tuple) -> None:
    if op[0] == "create":
        names.add(op[1])
    elif op[0] == "unlink":
        names.discard(op[1])
    elif op[0] == "rename":
        names.discard(op[1])
        names.add(op[2])


def _apply_model(model: dict[str, bytes], op: tuple) -> dict[str, bytes]:
    m = dict(model)
    kind = op[0]
    if kind == "create":
        m[op[1]] = _content(op[1], op[2], op[3])
    elif kind == "unlink":
        del m[op[1]]
    elif kind == "rename":
        if op[1] != op[2]:
            m[op[2]] = m.pop(op[1])
    else:
        m[op[1]] = m[op[1]] + _content(op[1], op[2], op[3])
    return m


def _pending_outcomes(done: dict[str, bytes], pending: tuple | None) -> list[dict[str, bytes]]:
    """What the interrupted operation may have left besides nothing: all of it,
    or for a create (two atomic steps: the name at open, the data at close)
    the empty file."""
    if pending is None:
        return []
    outcomes = [_apply_model(done, pending)]
    if pending[0] == "create":
        outcomes.append({**done, pending[1]: b""})
    return outcomes


def _parse(token: str):
    return int(token) if token.isdigit() else token


def _expected(base: dict[str, bytes], log_text: str) -> tuple[dict[str, bytes], tuple | None]:
    """The state after every completed operation, and the one in flight."""
    model, pending = base, None
    for line in log_text.splitlines():
        word, _, rest = line.partition(" ")
        if word == "begin":
            pending = tuple(_parse(t) for t in rest.split(" "))
        elif word == "end" and pending is not None:
            model, pending = _apply_model(model, pending), None
    return model, pending


@pytest.mark.parametrize("where", ["tmpfs", "disk"])
def test_sigkill_at_random_moments(where, tmp_path):
    # On a disk file the child commits lazily (issue 14): what it was told
    # is done is in the page cache, which outlives it, so nothing is lost.
    base_dir = "/dev/shm" if where == "tmpfs" else str(tmp_path)
    pool = os.path.join(base_dir, f"daxfs-kills-{os.getpid()}.pool")
    log_path = str(tmp_path / "log")
    rng = random.Random(1234)
    daxfs.mkfs(pool, "32M", force=True)
    try:
        with daxfs.mount(pool) as fs:
            base = _snapshot(fs)
        completed_total = 0
        kills = KILLS if where == "tmpfs" else max(1, KILLS // 2)
        for kill in range(kills):
            open(log_path, "w").close()
            pid = os.fork()
            if pid == 0:  # the child never returns: it is killed
                try:
                    _child(pool, log_path, seed=kill)
                finally:
                    os._exit(1)
            time.sleep(rng.uniform(0.002, 0.04))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            with open(log_path) as f:
                done, pending = _expected(base, f.read())
            with daxfs.mount(pool) as fs:
                got = _snapshot(fs)
            allowed = [done] + _pending_outcomes(done, pending)
            assert got in allowed, f"kill {kill}: pool state is not the log's (pending {pending})"
            report = daxfs.check(pool)
            assert report.ok, (kill, report.errors)
            completed_total += sum(1 for line in open(log_path) if line.startswith("end"))
            base = got
        assert completed_total > kills, "the children hardly ran: the test proves little"
    finally:
        os.unlink(pool)
