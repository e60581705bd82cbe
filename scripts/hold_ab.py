"""Creates, reads and unlinks with a part of keeping the pool lock between
calls and without it, switched between rounds in one process, beside the
kernel's tmpfs.

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
    read-hold  opens for reading that begin a hold (_kept_for_read),
               against opens that only use one kept already

    python scripts/hold_ab.py [--compare hold] [--files 5000] [--rounds 8]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import tempfile
import time

import daxfs
from daxfs import logical

BLOB = b"x" * 4096


def timed_phases(make, remove, paths: list[str], between) -> tuple[float, float, float]:
    """Microseconds a create (open "wb", 4 KiB write, close), an open +
    4 KiB read + close and an unlink; ``between()`` runs untimed before
    each phase (on the daxfs side a call the usual way, which lets a kept
    lock go, so each phase begins as it would alone)."""
    gc.collect()
    gc.disable()
    try:
        times = []
        between()
        start = time.perf_counter()
        for p in paths:
            with make(p, "wb") as f:
                f.write(BLOB)
        times.append(time.perf_counter() - start)
        between()
        start = time.perf_counter()
        for p in paths:
            with make(p, "rb") as f:
                f.read(4096)
        times.append(time.perf_counter() - start)
        between()
        start = time.perf_counter()
        for p in paths:
            remove(p)
        times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    c, r, u = (t / len(paths) * 1e6 for t in times)
    return c, r, u


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
    "read-hold": ("_kept_for_read", "read hold", lambda self, now: self._held),
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
                kernel = [f"{work}/k{r}/f{i}" for i in range(args.files)]
                got = {"kernel": timed_phases(open, os.unlink, kernel, lambda: None)}
                for name, way in ways.items():
                    setattr(logical.LogicalPath, method, way)
                    fs.mkdir(f"/{name}{r}")
                    paths = [f"/{name}{r}/f{i}" for i in range(args.files)]
                    usual_way = functools.partial(fs.utime, f"/{name}{r}")
                    got[name] = timed_phases(fs.open, fs.unlink, paths, usual_way)
                for name, times in got.items():
                    was = best.get(name, times)
                    best[name] = [min(b, t) for b, t in zip(was, times, strict=True)]
            setattr(logical.LogicalPath, method, kept)
        kc, kr, ku = best["kernel"]
        for name, (c, r, u) in best.items():
            print(f"{name:10s} create+write+close {c:6.1f} us ({kc / c:.3f} of the kernel's)"
                  f"  open+read+close {r:5.1f} us ({kr / r:.3f})"
                  f"  unlink {u:5.1f} us ({ku / u:.3f})")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
