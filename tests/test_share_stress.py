"""Several processes changing one pool at once, as hard as they can: creates
(prepared under the shared lock, coherence.Change), first writes into fresh
blocks, appends and overwrites (exclusive), renames and unlinks, in one
shared directory and in directories of their own, while each reads back
what the others wrote.  Every byte of every file must be what its writer
wrote: an optimistic change that lost its race must never have stored into
space another process took."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest

import daxfs

WORKER = textwrap.dedent(r"""
    import hashlib, random, sys, time
    import daxfs

    def content(name, size):
        seed = hashlib.sha256(name.encode()).digest()
        return (seed * (size // 32 + 1))[:size]

    pool, me, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(me)
    fs = daxfs.mount(pool)
    own = f"/own{me}"
    fs.makedirs(own, exist_ok=True)
    mine, n, checked = [], 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        d = rng.choice([own, "/shared"])
        name = f"{d}/p{me}-{n}"
        size = rng.choice([0, 1, 100, 4096, 5000, 9000, 70000, 300000])
        with fs.open(name, "wb") as f:
            f.write(content(name, size))
        mine.append((name, size))
        n += 1
        if len(mine) > 300:  # a bounded working set: however fast, no ENOSPC
            name, _ = mine.pop(rng.randrange(len(mine)))
            fs.unlink(name)
        c = rng.random()
        if c < 0.15 and mine:  # append: the file's bytes stay name-derived
            name, size = mine.pop(rng.randrange(len(mine)))
            extra = rng.choice([1, 4096, 10000])
            full = content(name, size + extra)
            with fs.open(name, "ab") as f:
                f.write(full[size:])
            mine.append((name, size + extra))
        elif c < 0.3 and mine:
            name, _ = mine.pop(rng.randrange(len(mine)))
            fs.unlink(name)
        elif c < 0.4 and mine:  # rename within its directory, content follows
            i = rng.randrange(len(mine))
            name, size = mine[i]
            new = name + "r"
            with fs.open(name, "rb") as f:
                assert f.read() == content(name, size), name
            fs.rename(name, new)
            with fs.open(new, "wb") as f:  # rewrite under the new name's content
                f.write(content(new, size))
            mine[i] = (new, size)
        if n % 7 == 0:  # read what another process has in the shared directory
            others = [x for x in fs.listdir("/shared") if not x.startswith(f"p{me}-")]
            for other in rng.sample(others, min(3, len(others))):
                path = "/shared/" + other
                try:
                    with fs.open(path, "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue  # unlinked since the listing
                size = len(data)
                # A renamed file holds its old name's bytes until rewritten;
                # and an open file follows its inode: renamed and rewritten
                # (maybe more than once) after our open, it holds the bytes
                # of a later name.
                was = path[:-1] if path.endswith("r") else path
                names = [was] + [path + "r" * k for k in range(8)]
                assert any(data == content(n, size) for n in names), path
                checked += 1
    optimistic = fs.coherence["optimistic_commits"]
    fs.close()
    print("\n".join(f"{name} {size}" for name, size in mine))
    print(f"checked {checked} {optimistic}", flush=True)
""")


def content(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


@pytest.mark.parametrize("optimism", ["1", "0"])
def test_processes_racing_on_one_pool_keep_every_byte(make_pool, optimism):
    path = make_pool(size=512 << 20)
    with daxfs.mount(path) as fs:
        fs.mkdir("/shared")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, path, str(i), "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DAXFS_OPTIMISM": optimism},
        )
        for i in range(3)
    ]
    expected, checked, optimistic = {}, 0, 0
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        lines = out.splitlines()
        checked += int(lines[-1].split()[1])
        optimistic += int(lines[-1].split()[2])
        for line in lines[:-1]:
            name, size = line.rsplit(" ", 1)
            expected[name] = int(size)
    assert checked > 0 and len(expected) > 100
    if optimism == "1":
        assert optimistic > 100  # the racing path was taken
    else:
        assert optimistic == 0
    with daxfs.mount(path) as fs:
        got = {}
        for top, _dirs, files in fs.walk("/"):
            for f in files:
                p = top.rstrip("/") + "/" + f
                with fs.open(p, "rb") as fh:
                    got[p] = fh.read()
        assert set(got) == set(expected)
        for p, data in got.items():
            assert data == content(p, expected[p]), p
    report = daxfs.check(path)
    assert report.ok, report.errors
