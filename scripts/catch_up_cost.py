"""What one mount pays to follow another's changes (DESIGN.md, "Several
processes"): two mounts of one pool in this process, A making files, B
catching up after each batch.

    growth   A fills one directory with --files 4 KiB files (write_bytes);
             B catches up every 100: microseconds a file for B, and how
             many times B loaded a directory whole
    absorb   A makes --files files (open, write, close) and B makes them
             again; then A absorbs: how long that takes, and how long B
             takes to take the absorb in

    python scripts/catch_up_cost.py growth --files 60000
    python scripts/catch_up_cost.py absorb --files 2000

Run it beside a worktree of other code with PYTHONPATH=<worktree>/src.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import daxfs
from daxfs import logical
from daxfs.dir import Directory


def count_loads() -> list[int]:
    """Directory.load, counted (the whole parses a catch-up avoids)."""
    loads = [0]
    real = Directory.load.__func__

    def load(cls, *args):
        loads[0] += 1
        return real(cls, *args)

    Directory.load = classmethod(load)
    return loads


def growth(pool: str, files: int) -> None:
    loads = count_loads()
    with daxfs.mount(pool) as a, daxfs.mount(pool) as b:
        a.mkdir("/d")
        b.listdir("/d")
        loads[0] = 0
        spent = 0.0
        for i in range(files):
            a.write_bytes(f"/d/f{i:07d}", b"x" * 4096)
            if i % 100 == 99:
                a._let_go(pause=False)  # (A's kept lock: B's catch-up waits for none)
                t0 = time.perf_counter()
                b.stat("/d")
                spent += time.perf_counter() - t0
                if b._held:
                    b._let_go(pause=False)
    print(
        f"growth: B followed {files:,} files in one directory in {spent * 1e3:.0f} ms "
        f"({spent / files * 1e6:.1f} us a file); directory loads {loads[0]}"
    )


def absorb(pool: str, files: int) -> None:
    with daxfs.mount(pool) as a, daxfs.mount(pool) as b:
        a.mkdir("/d")
        a.write_bytes("/d/first", b"1")
        b.listdir("/d")
        for i in range(files):
            with a.open(f"/d/f{i}", "wb") as f:
                f.write(b"x" * 4096)
        a._let_go(pause=False)
        t0 = time.perf_counter()
        b.stat("/d/first")  # (B makes A's said changes again)
        remade = time.perf_counter() - t0
        if b._held:
            b._let_go(pause=False)
        lag = a._lag_bytes
        t0 = time.perf_counter()
        with a._locked(exclusive=True):
            a._absorb()
        absorbed = time.perf_counter() - t0
        t0 = time.perf_counter()
        b.stat("/d/first")
        taken_in = time.perf_counter() - t0
    print(
        f"absorb: B made {2 * files:,} records again in {remade * 1e3:.1f} ms; "
        f"A absorbed {lag / 1e6:.2f} MB in {absorbed * 1e3:.1f} ms; "
        f"B took it in in {taken_in * 1e3:.1f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=("growth", "absorb"))
    p.add_argument("--files", type=int, default=20000)
    args = p.parse_args()
    logical.ABSORB_SECONDS = 3600.0  # (only the absorbs the runs ask for)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as work:
        pool = os.path.join(work, "pool")
        daxfs.mkfs(pool, "4G")
        (growth if args.what == "growth" else absorb)(pool, args.files)


if __name__ == "__main__":
    main()
