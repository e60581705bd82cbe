"""durable: what making small files durable costs, by backend (bench meta --durable).

The create phase of ``bench meta`` (open "wb" + write 4 KiB + close, N
files in one directory), timed on five sides in the same run:

    kernel          builtin open on --pool-dir, no fsync
    kernel+fsync    the same, with os.fsync of each file before its close
    daxfs           a pool file in --pool-dir (on a disk file system: the
                    page-cache backend, each operation durable on return)
    daxfs on tmpfs  a pool in /dev/shm (no flush at all): the ceiling for
                    a pool whose durability costs nothing between commits
    (the first and third are the main table's rows, measured again here)

Issue 14's aims, as ratios of these: group commit at least 0.8x of the
tmpfs pool and 0.5x of the kernel without fsync; a per-operation sync
mode at least 1.0x of the kernel with fsync per file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

from . import Report, command_line, fmt_rate, fmt_ratio, timed

TMPFS_DIR = "/dev/shm"


class _FsyncedFile:
    """A file opened for writing whose close first fsyncs it."""

    def __init__(self, path: str, mode: str):
        self.f = open(path, mode)

    def write(self, data) -> int:
        return self.f.write(data)

    def __enter__(self) -> _FsyncedFile:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
        finally:
            self.f.close()


def _create_rate(open_: Callable, unlink: Callable, paths: list[str], payload: bytes) -> float:
    def run() -> int:
        for p in paths:
            with open_(p, "wb") as f:
                f.write(payload)
        return len(paths)

    n, seconds = timed(run)
    for p in paths:  # untimed
        unlink(p)
    return n / seconds


def _best(rounds: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(rounds))


def measure(work: str, names: list[str], payload: bytes, rounds: int, pool_size: int):
    """{side: best create rate}, the sides interleaved round by round."""
    import daxfs

    kdir = os.path.join(work, "durable-kernel")
    os.mkdir(kdir)
    kpaths = [os.path.join(kdir, n) for n in names]
    tmp_work = tempfile.mkdtemp(prefix="daxfs-bench-durable-", dir=TMPFS_DIR)
    mounts = []
    try:
        pools = {}
        for side, where in (("daxfs", work), ("daxfs on tmpfs", tmp_work)):
            pool = os.path.join(where, "durable.pool")
            daxfs.mkfs(pool, pool_size, force=True)
            fs = daxfs.mount(pool)
            mounts.append(fs)
            fs.mkdir("/d")
            pools[side] = fs
        sides: dict[str, Callable[[], float]] = {
            "kernel": lambda: _create_rate(open, os.unlink, kpaths, payload),
            "kernel+fsync": lambda: _create_rate(_FsyncedFile, os.unlink, kpaths, payload),
        }
        for side, fs in pools.items():
            dpaths = ["/d/" + n for n in names]
            sides[side] = lambda fs=fs, dpaths=dpaths: _create_rate(
                fs.open, fs.unlink, dpaths, payload
            )
        best: dict[str, float] = dict.fromkeys(sides, 0.0)
        for _ in range(rounds):
            for side, fn in sides.items():
                best[side] = max(best[side], fn())
        return best, mounts[0].info()["durability"]
    finally:
        for fs in mounts:
            fs.close()
        shutil.rmtree(tmp_work, ignore_errors=True)


def durable_report(args, best: dict[str, float], durability: str, env: str) -> Report:
    dax = best["daxfs"]
    rows = [[side, fmt_rate(rate), fmt_ratio(dax / rate)] for side, rate in best.items()]
    verdict = [
        f"daxfs pool on {args.pool_dir} (durability {durability}, each operation durable on "
        f"return): {dax / best['kernel+fsync']:.2f}x the kernel with fsync per file "
        f"(issue 14's sync-mode aim: 1.0x), {dax / best['kernel']:.2f}x the kernel without "
        f"(group-commit aim: 0.5x), {dax / best['daxfs on tmpfs']:.2f}x a pool on tmpfs "
        "(group-commit aim: 0.8x)"
    ]
    notes = [
        f"create+write 4K+close of {args.files:,} files in one directory, ops/s, best of "
        f"{args.rounds} rounds (sides interleaved); kernel+fsync: os.fsync of each file "
        f"before its close; daxfs on tmpfs: a pool in {TMPFS_DIR}",
        "daxfs / side: the pool on --pool-dir against that side (higher is better)",
    ]
    return Report(
        title="durable creates by backend",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["side", "creates/s", "daxfs / side"],
        rows=rows,
        verdict=verdict,
        data={"best_creates_per_s": best, "durability": durability},
    )
