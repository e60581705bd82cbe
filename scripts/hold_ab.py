"""Creates and unlinks with the pool lock kept between said changes and
without, switched between rounds in one process, beside the kernel's tmpfs.

bench meta runs each side once per round in its own process, and on a
noisy machine the ratios move more than keeping the lock does; here both
ways share the process, the pool and the machine's mood, and each takes
its best round.  "Without" makes LogicalPath._may_hold answer False, so
every said change takes and releases the lock as before (DESIGN.md,
"Keeping the lock while alone").

    python scripts/hold_ab.py [--files 5000] [--rounds 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time

import daxfs
from daxfs import logical

BLOB = b"x" * 4096


def timed_creates_and_unlinks(make, remove, paths: list[str]) -> tuple[float, float]:
    """Microseconds a create (open "wb", 4 KiB write, close) and an unlink."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for p in paths:
            with make(p, "wb") as f:
                f.write(BLOB)
        made = time.perf_counter()
        for p in paths:
            remove(p)
        done = time.perf_counter()
    finally:
        gc.enable()
    n = len(paths)
    return (made - start) / n * 1e6, (done - made) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    work = tempfile.mkdtemp(dir="/dev/shm")
    try:
        daxfs.mkfs(f"{work}/pool", 1 << 30, force=True)
        kept = logical.LogicalPath._may_hold
        ways = {
            "lock kept": kept,
            "without": lambda self, now: False,
        }
        best: dict[str, list[float]] = {}
        with daxfs.mount(f"{work}/pool") as fs:
            for r in range(args.rounds):
                os.mkdir(f"{work}/k{r}")
                got = {"kernel": timed_creates_and_unlinks(
                    open, os.unlink, [f"{work}/k{r}/f{i}" for i in range(args.files)]
                )}  # fmt: skip
                for name, may_hold in ways.items():
                    logical.LogicalPath._may_hold = may_hold
                    fs.mkdir(f"/{name}{r}")
                    paths = [f"/{name}{r}/f{i}" for i in range(args.files)]
                    got[name] = timed_creates_and_unlinks(fs.open, fs.unlink, paths)
                for name, (c, u) in got.items():
                    b = best.setdefault(name, [c, u])
                    best[name] = [min(b[0], c), min(b[1], u)]
            logical.LogicalPath._may_hold = kept
        kc, ku = best["kernel"]
        for name, (c, u) in best.items():
            print(f"{name:10s} create+write+close {c:6.1f} us ({kc / c:.3f} of the kernel's)"
                  f"  unlink {u:5.1f} us ({ku / u:.3f})")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
