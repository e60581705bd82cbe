"""copy: ``daxfs cp -r`` of a folder of small files, beside ``cp -r``.

A folder of --files files of --size bytes each (random bytes, 1,000 per
subdirectory) is made in --pool-dir, untimed.  Then, each a whole
command with its start-up, timed from outside:

    cp -r            the folder copied onto --pool-dir by coreutils' cp
    daxfs, pool-dir  daxfs cp -r -q into a pool file in --pool-dir (on a
                     disk file system: the page-cache backend)
    daxfs, tmpfs     daxfs cp -r -q into a pool in /dev/shm

Each copy goes to a fresh destination (a new pool); best of --repeat.
The copies are checked: the pool holds every file with its bytes.

Issue 14's aim: daxfs cp -r of 20,000 small files into a pool on disk
within 5x of cp -r onto the same disk.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile

from . import (
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    check_pool_dir,
    command_line,
    environment,
    fmt_seconds,
    next_pow2,
    timed_command,
)

HELP = "daxfs cp -r of a folder of small files into a pool, beside cp -r"
DESCRIPTION = __doc__
PER_DIR = 1000
TMPFS_DIR = "/dev/shm"
AIM = 5.0  # daxfs cp -r at most this many times cp -r's time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=20_000, help="files in the folder (20000)")
    p.add_argument("--size", type=int, default=3000, help="bytes per file (3000)")
    p.add_argument("--repeat", type=int, default=3, help="copies per side; best kept (3)")
    add_pool_dir_argument(p, "where the folder, cp's copy and the pool file go")
    add_output_arguments(p)


def make_folder(root: str, files: int, size: int) -> None:
    rng = random.Random(14)
    for i in range(files):
        d = os.path.join(root, f"d{i // PER_DIR:03d}")
        if i % PER_DIR == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(rng.randbytes(size))


def pool_size(files: int, size: int) -> int:
    # a block or more per file, an inode per file (mkfs: one per 16 KiB), room
    return next_pow2(max(64 << 20, files * max(size, 4096) * 2 + files * 16384))


def daxfs_copy(src: str, where: str, args) -> float:
    """One timed ``daxfs cp -r`` into a fresh pool in ``where``; checked."""
    import daxfs

    pool = os.path.join(where, "copy.pool")
    daxfs.mkfs(pool, pool_size(args.files, args.size), force=True)
    try:
        cli = [sys.executable, "-m", "daxfs.cli", "cp", "-r", "-q", src, f"{pool}:/copy"]
        seconds = timed_command(cli)
        check_copy(pool, src, args.files)
        return seconds
    finally:
        os.unlink(pool)


def check_copy(pool: str, src: str, files: int) -> None:
    import daxfs

    with daxfs.mount(pool, readonly=True) as fs:
        n = 0
        for top, _dirs, names in fs.walk("/copy"):
            for name in names:
                rel = os.path.relpath(f"{top}/{name}", "/copy")
                with fs.open(f"{top}/{name}", "rb") as f, open(os.path.join(src, rel), "rb") as g:
                    if f.read() != g.read():
                        raise RuntimeError(f"copy benchmark: {rel} differs in the pool")
                n += 1
    if n != files:
        raise RuntimeError(f"copy benchmark: {n} files in the pool, {files} in the folder")


def cp_copy(src: str, work: str) -> float:
    dst = os.path.join(work, "cp-copy")
    try:
        return timed_command(["cp", "-r", src, dst])
    finally:
        shutil.rmtree(dst, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    if args.files < 1 or args.size < 0 or args.repeat < 1:
        raise SystemExit("--files and --repeat: at least 1; --size: at least 0")
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-copy-", dir=pool_dir)
    shm = tempfile.mkdtemp(prefix="daxfs-bench-copy-", dir=TMPFS_DIR)
    try:
        src = os.path.join(work, "folder")
        print(f"making {args.files:,} files ...", file=sys.stderr, flush=True)
        make_folder(src, args.files, args.size)
        best = {
            "cp -r": float("inf"),
            "daxfs, pool-dir": float("inf"),
            "daxfs, tmpfs": float("inf"),
        }
        for _ in range(args.repeat):
            best["cp -r"] = min(best["cp -r"], cp_copy(src, work))
            best["daxfs, pool-dir"] = min(best["daxfs, pool-dir"], daxfs_copy(src, work, args))
            best["daxfs, tmpfs"] = min(best["daxfs, tmpfs"], daxfs_copy(src, shm, args))
        report = make_report(args, best, environment(pool_dir))
        report.emit(args.format, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)
    return 0


def make_report(args, best: dict[str, float], env: str) -> Report:
    cp = best["cp -r"]
    rows = [[side, fmt_seconds(s), f"{s / cp:,.1f}"] for side, s in best.items()]
    times = best["daxfs, pool-dir"] / cp
    verdict = [
        f"aim: daxfs cp -r into a pool on {args.pool_dir} within {AIM:g}x of cp -r: "
        + ("met" if times <= AIM else "not met")
        + f" ({times:,.1f}x)"
    ]
    notes = [
        f"a folder of {args.files:,} files of {args.size:,} bytes ({PER_DIR:,} per directory); "
        f"whole commands with their start-up, best of {args.repeat}; each copy into a fresh "
        f"destination; daxfs, tmpfs: a pool in {TMPFS_DIR}",
        "x cp -r: the time against cp -r's (lower is better)",
    ]
    return Report(
        title=f"daxfs copy benchmark ({args.files:,} files)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["copy", "time", "x cp -r"],
        rows=rows,
        verdict=verdict,
        data={"files": args.files, "size": args.size, "best_seconds": best},
    )
