"""Processes reading one pool at once, with readers keeping the shared
pool lock between their opens and without (DESIGN.md, "Keeping the lock
while alone": readers beside others), each way in turn.

    readers  N processes each open, read 4 KiB and close files of the pool
             for --seconds: microseconds an open each, and reads a second
             together
    writer   the same two ways, with this process also making 4 KiB files
             by write_bytes meanwhile: its files a second and latencies,
             and the readers' rate beside it (a reader that lets a waiting
             writer in holds no shared lock for a while after)

"Without" makes LogicalPath._shared_for_read answer False in every
process (children are forked), so each open takes and drops the shared
lock and its pin as before.  The machine's mood moves between runs: read
the two ways of one run side by side.

    python scripts/readers_ab.py [--readers 2] [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time

import daxfs
from daxfs.logical import LogicalPath

FILES = 1000
PAYLOAD = b"x" * 4096


def read_for(pool: str, seconds: float, start, out) -> None:
    """A child: read files of /r as fast as it can for ``seconds``."""
    fs = daxfs.mount(pool)
    try:
        start.wait()
        n, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            with fs.open(f"/r/f{n % FILES}", "rb") as f:
                f.read()
            n += 1
        out.put(n / seconds)
    finally:
        fs.close()


def one_run(pool: str, readers: int, seconds: float, write: bool) -> dict:
    start, out = mp.Barrier(readers + 1), mp.Queue()
    procs = [mp.Process(target=read_for, args=(pool, seconds, start, out)) for _ in range(readers)]
    for p in procs:
        p.start()
    got: dict = {}
    with daxfs.mount(pool) as fs:
        start.wait()
        if write:
            time.sleep(seconds / 10)  # (into the readers' loops)
            lat, end, n = [], time.monotonic() + seconds * 0.7, 0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                fs.write_bytes(f"/w/f{n}", PAYLOAD)
                lat.append(time.perf_counter() - t0)
                n += 1
            lat.sort()
            got["writer files/s"] = n / (seconds * 0.7)
            got["writer median us"] = lat[len(lat) // 2] * 1e6
            got["writer p99 us"] = lat[int(len(lat) * 0.99)] * 1e6
            for i in range(n):
                fs.unlink(f"/w/f{i}")
        rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    got["reads/s together"] = sum(rates)
    got["us an open each"] = sum(1e6 / r for r in rates) / len(rates)
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    mp.set_start_method("fork")
    work = tempfile.mkdtemp(prefix="daxfs-readers-", dir="/dev/shm")
    try:
        pool = os.path.join(work, "pool")
        daxfs.mkfs(pool, 1 << 30)
        with daxfs.mount(pool) as fs:
            fs.mkdir("/r")
            fs.mkdir("/w")
            for i in range(FILES):
                fs.write_bytes(f"/r/f{i}", PAYLOAD)
        keep = LogicalPath._shared_for_read
        for case in ("readers", "writer"):
            for r in range(args.rounds):
                for way in ("with", "without"):
                    LogicalPath._shared_for_read = keep if way == "with" else _never
                    got = one_run(pool, args.readers, args.seconds, case == "writer")
                    shown = ", ".join(f"{k} {v:,.1f}" for k, v in got.items())
                    print(f"{case}, round {r + 1}, shared holds {way}: {shown}", flush=True)
        LogicalPath._shared_for_read = keep
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _never(self, now: float) -> bool:
    return False


if __name__ == "__main__":
    main()
