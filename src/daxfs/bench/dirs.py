"""dirs: creates in a directory used as a cache, daxfs against the kernel.

A cache directory is filled, then emptied oldest first while new names
come in: its free room sits in its oldest blocks, behind every full one.
Where a file system looks for room decides what a create costs there.
On each side (kernel: pathlib's calls on a directory in --pool-dir,
tmpfs by default; daxfs: the same calls on a pool file there), a new
directory each round, in this order (then it is emptied and removed):

    fill      --files empty files made by write_bytes (timed: creates in a
              directory as it grows)
    drain     the oldest half of them unlinked, in the order they were made
              (timed: unlinks in a large directory, each absorb writing
              the blocks they emptied)
    refill    --creates more empty files, new names (timed: creates in the
              drained directory)

Reported: creates a second in each timed phase, daxfs/kernel, and each
side's refill rate over its own fill rate ("kept"): 1.0 when a create
costs in the drained directory what it cost in the growing one.  A
daxfs directory finds room in O(1) amortized (DESIGN.md, "Directory
changes stay small"); before, each create read every block back from
the newest, and at 300,000 names a refill ran at a third of the fill.
The sides alternate by round (kernel first, then daxfs first); the best
round of each phase is kept.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

from . import (
    KiB,
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    check_pool_dir,
    command_line,
    environment,
    fmt_rate,
    fmt_ratio,
    next_pow2,
    timed,
)
from .meta import _kernel_write_bytes  # pathlib's write_bytes, with no Path to build

HELP = "creates in a directory emptied oldest first (a cache) vs kernel tmpfs"
DESCRIPTION = __doc__


PHASES = [
    ("fill", "creates, growing"),
    ("drain", "unlinks, oldest half"),
    ("refill", "creates, drained"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=100_000, help="files the fill makes (100000)")
    p.add_argument("--creates", type=int, default=20_000, help="files the refill makes (20000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per side; best kept (2)")
    add_pool_dir_argument(p, "directory for the kernel's side and the pool file")
    add_output_arguments(p)


def one_round(directory: str, calls, files: int, creates: int) -> dict[str, float]:
    """fill, drain and refill a new directory ``directory`` with ``calls``
    (write_bytes, unlink, mkdir, rmdir), then remove it; creates a second
    of the timed phases."""
    write_bytes, unlink, mkdir, rmdir = calls
    mkdir(directory)
    old = [f"{directory}/file-{i:08d}" for i in range(files)]
    new = [f"{directory}/new-{i:08d}" for i in range(creates)]

    def make(paths: list[str]) -> int:
        for p in paths:
            write_bytes(p, b"")
        return len(paths)

    def remove(paths: list[str]) -> int:
        for p in paths:
            unlink(p)
        return len(paths)

    _n, fill = timed(lambda: make(old))
    _n, drain = timed(lambda: remove(old[: files // 2]))
    _n, refill = timed(lambda: make(new))
    for p in old[files // 2 :] + new:
        unlink(p)
    rmdir(directory)
    return {"fill": files / fill, "drain": files // 2 / drain, "refill": creates / refill}


def main(args: argparse.Namespace) -> int:
    import daxfs

    if args.files < 2 or args.creates < 1 or args.rounds < 1:
        raise SystemExit("--files must be at least 2, --creates and --rounds at least 1")
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-dirs-", dir=pool_dir)
    fs = None
    try:
        pool = os.path.join(work, "pool")
        # mkfs gives one inode per 16 KiB; room for every file at once, twice over.
        daxfs.mkfs(pool, max(256 * MiB, next_pow2((args.files + args.creates) * 32 * KiB)))
        fs = daxfs.mount(pool)
        sides = {"kernel": os.path.join(work, "kernel"), "daxfs": ""}  # (the pool's root)
        os.mkdir(sides["kernel"])
        calls = {
            "kernel": (_kernel_write_bytes, os.unlink, os.mkdir, os.rmdir),
            "daxfs": (fs.write_bytes, fs.unlink, fs.mkdir, fs.rmdir),
        }
        best: dict[str, dict[str, float]] = {"kernel": {}, "daxfs": {}}
        for r in range(args.rounds):  # (each round a new directory: one that grows)
            for side in ("kernel", "daxfs") if r % 2 == 0 else ("daxfs", "kernel"):
                got = one_round(f"{sides[side]}/cache{r}", calls[side], args.files, args.creates)
                for phase, rate in got.items():
                    best[side][phase] = max(best[side].get(phase, 0.0), rate)
        env = environment(pool_dir, fs.info()["durability"])
        make_report(args, best, env).emit(args.format, args.json)
    finally:
        if fs is not None:
            fs.close()
        subprocess.run(["rm", "-rf", "--", work], check=False)
    return 0


def make_report(args, best: dict[str, dict[str, float]], env: str) -> Report:
    k, d = best["kernel"], best["daxfs"]
    rows = [
        [label, fmt_rate(k[ph]), fmt_rate(d[ph]), fmt_ratio(d[ph] / k[ph])] for ph, label in PHASES
    ]
    kept = {side: best[side]["refill"] / best[side]["fill"] for side in best}
    rows.append(
        ["kept (drained / growing)", fmt_ratio(kept["kernel"]), fmt_ratio(kept["daxfs"]), "-"]
    )
    notes = [
        f"one directory: {args.files:,} empty files made, the oldest {args.files // 2:,} "
        f"unlinked, then {args.creates:,} more made; best of {args.rounds} rounds a side",
        "kernel = open(p, 'wb') + close on a directory in the pool dir, daxfs = fs.write_bytes",
    ]
    return Report(
        title=f"daxfs dirs benchmark ({args.files:,} files)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["", "kernel ops/s", "daxfs ops/s", "daxfs/kernel"],
        rows=rows,
        data={"files": args.files, "creates": args.creates, "best": best, "kept": kept},
    )
