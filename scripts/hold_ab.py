"""Creates and unlinks with a part of keeping the pool lock between said
changes and without it, switched between rounds in one process, beside
the kernel's tmpfs.

bench meta runs each side once per round in its own process, and on a
noisy machine the ratios move more than one part does; here both ways
share the process, the pool and the machine's mood, and each takes its
best round (DESIGN.md, "Keeping the lock while alone").  --compare:

    hold       the lock kept, against LogicalPath._may_hold answering
               False (every said change takes and releases the lock)
    ahead      blocks taken ahead 16 at a time (_stashed_block), against
               one allocator take per block
    slot-look  no look at an unlinked file's slot in a hold that began
               with no other description's lock on the pool, against the
               look every time (_others_may_pin answering True)

    python scripts/hold_ab.py [--compare hold] [--files 5000] [--rounds 8]
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


def one_block_at_a_time(self):
    """_stashed_block as before blocks were taken ahead."""
    try:
        return self.allocator.alloc_blocks(1)
    except OSError:
        return None


# --compare: the method switched, and its two ways (the part, then without).
COMPARED = {
    "hold": ("_may_hold", "lock kept", lambda self, now: False),
    "ahead": ("_stashed_block", "ahead", one_block_at_a_time),
    "slot-look": ("_others_may_pin", "no look", lambda self: True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", choices=sorted(COMPARED), default="hold")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    work = tempfile.mkdtemp(dir="/dev/shm")
    method, with_it, without = COMPARED[args.compare]
    try:
        daxfs.mkfs(f"{work}/pool", 1 << 30, force=True)
        kept = getattr(logical.LogicalPath, method)
        ways = {with_it: kept, "without": without}
        best: dict[str, list[float]] = {}
        with daxfs.mount(f"{work}/pool") as fs:
            for r in range(args.rounds):
                os.mkdir(f"{work}/k{r}")
                got = {"kernel": timed_creates_and_unlinks(
                    open, os.unlink, [f"{work}/k{r}/f{i}" for i in range(args.files)]
                )}  # fmt: skip
                for name, way in ways.items():
                    setattr(logical.LogicalPath, method, way)
                    fs.mkdir(f"/{name}{r}")
                    paths = [f"/{name}{r}/f{i}" for i in range(args.files)]
                    got[name] = timed_creates_and_unlinks(fs.open, fs.unlink, paths)
                for name, (c, u) in got.items():
                    b = best.setdefault(name, [c, u])
                    best[name] = [min(b[0], c), min(b[1], u)]
            setattr(logical.LogicalPath, method, kept)
        kc, ku = best["kernel"]
        for name, (c, u) in best.items():
            print(f"{name:10s} create+write+close {c:6.1f} us ({kc / c:.3f} of the kernel's)"
                  f"  unlink {u:5.1f} us ({ku / u:.3f})")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
