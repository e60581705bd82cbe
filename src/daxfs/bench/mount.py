"""mount: how long mounting a pool full of small files takes.

Build (timed once): mkfs a pool file in --pool-dir (tmpfs: /dev/shm by
default), mount it, create N files with fs.open(p, "wb") + write + close,
sizes uniform in 0..--max-size bytes (seeded), spread round-robin over
--dirs directories /d0 /d1 ..., then close (unmount).

Then, each a fresh daxfs.mount(pool) ... fs.close():

    first mount    the first mount after the build (once)
    mount          daxfs.mount(pool): recovery check, inode-table scan,
                   allocator rebuild (best and median of --repeat)
    first listdir  fs.listdir("/d0") right after mount: the first use of a
                   directory loads it whole
    close          fs.close()

The aim stated by the project is a mount under 0.5 s for 100,000 files.
The pool size defaults to what mkfs's default of one inode per 16 KiB needs
for N files (2 GiB for 100,000); --inodes overrides the inode count.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import random
import shutil
import sys
import tempfile
import time

from . import (
    GiB,
    KiB,
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    check_pool_dir,
    command_line,
    environment,
    fmt_seconds,
    median,
    next_pow2,
    print_profile,
)

HELP = "mount time of a pool holding N small files, and time to the first listdir"
DESCRIPTION = __doc__
AIM_SECONDS = 0.5


def auto_pool_size(files: int, dirs: int, inodes: int | None) -> int:
    data = (files + dirs) * 4 * KiB * 5 // 4 + 64 * MiB
    if inodes is None:  # mkfs default: one inode per 16 KiB of pool
        need = max(data, (files + dirs + 64) * 16 * KiB * 21 // 20)
    else:
        need = data + inodes * 256 + 16 * MiB
    return next_pow2(max(need, 256 * MiB))


def file_path(i: int, dirs: int) -> str:
    return f"/d{i % dirs}/f{i:07d}"


def build(
    pool: str, files: int, dirs: int, max_size: int, seed: int, size: int, inodes: int | None
) -> dict[str, float | int]:
    import daxfs

    t0 = time.perf_counter()
    daxfs.mkfs(pool, size, force=True, inodes=inodes)
    t1 = time.perf_counter()
    rng = random.Random(seed)
    payload = memoryview(os.urandom(max_size)) if max_size else memoryview(b"")
    total = 0
    fs = daxfs.mount(pool)
    try:
        for d in range(dirs):
            fs.mkdir(f"/d{d}")
        op = fs.open
        for i in range(files):
            n = rng.randint(0, max_size)
            with op(file_path(i, dirs), "wb") as f:
                if n:
                    f.write(payload[:n])
            total += n
        t2 = time.perf_counter()
        journal_used = int(fs.info()["journal_used"])  # type: ignore[call-overload]
        inode_count = int(fs.info()["inodes"])  # type: ignore[call-overload]
    finally:
        fs.close()
    t3 = time.perf_counter()
    return {
        "mkfs": t1 - t0,
        "create": t2 - t1,
        "close": t3 - t2,
        "bytes": total,
        "journal_used_at_unmount": journal_used,
        "inodes": inode_count,
    }


def one_mount(pool: str, expect: int) -> dict[str, float]:
    """A fresh mount, the first listdir of /d0, and close; their seconds."""
    gc.collect()
    return _mount_listdir_close(pool, expect)


def _mount_listdir_close(pool: str, expect: int) -> dict[str, float]:
    import daxfs

    t0 = time.perf_counter()
    fs = daxfs.mount(pool)
    t1 = time.perf_counter()
    try:
        n = len(fs.listdir("/d0"))
        t2 = time.perf_counter()
    finally:
        fs.close()
    t3 = time.perf_counter()
    if n != expect:
        raise RuntimeError(f"mount benchmark: /d0 holds {n} entries, expected {expect}")
    return {"mount": t1 - t0, "listdir": t2 - t1, "mount+listdir": t2 - t0, "close": t3 - t2}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=100_000, help="files in the pool (100000)")
    p.add_argument(
        "--dirs",
        type=int,
        default=10,
        help="directories the files are spread over, round-robin (10)",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=4096,
        help="file sizes are uniform in 0..MAX_SIZE bytes (4096)",
    )
    p.add_argument("--repeat", type=int, default=5, help="fresh mounts timed; best kept (5)")
    add_pool_dir_argument(p, "directory for the pool file")
    p.add_argument(
        "--pool-size",
        default=None,
        help="pool size, e.g. 2G (default: enough for --files at mkfs defaults)",
    )
    p.add_argument(
        "--inodes",
        type=int,
        default=None,
        help="inode count for mkfs (default: mkfs's one per 16 KiB of pool)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed for the file sizes (1)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the timed mounts, profile one more mount + first listdir",
    )
    p.add_argument("--profile-lines", type=int, default=15, help="profile entries shown (15)")
    add_output_arguments(p)


def main(args: argparse.Namespace) -> int:
    import daxfs

    if args.files < 1 or args.dirs < 1 or args.repeat < 1 or args.max_size < 0:
        raise SystemExit("--files, --dirs and --repeat must be at least 1, --max-size >= 0")
    pool_dir = check_pool_dir(args.pool_dir)
    size = (
        daxfs.parse_size(args.pool_size)
        if args.pool_size
        else auto_pool_size(args.files, args.dirs, args.inodes)
    )
    work = tempfile.mkdtemp(prefix="daxfs-bench-mount-", dir=pool_dir)
    pool = os.path.join(work, "pool")
    expect = len(range(0, args.files, args.dirs))  # entries of /d0
    try:
        print(
            f"building {args.files:,} files in {args.dirs} directories (pool {fmt_size(size)}) ...",
            file=sys.stderr,
            flush=True,
        )
        b = build(pool, args.files, args.dirs, args.max_size, args.seed, size, args.inodes)
        first = one_mount(pool, expect)
        runs = [one_mount(pool, expect) for _ in range(args.repeat)]
        with daxfs.mount(pool) as fs:
            durability = str(fs.info()["durability"])
            total = sum(len(fs.listdir(f"/d{d}")) for d in range(args.dirs))
        if total != args.files:
            raise RuntimeError(f"mount benchmark: {total} files found, expected {args.files}")
        report = make_report(args, b, first, runs, size, expect, environment(pool_dir, durability))
        report.emit(args.format, args.json)
        if args.profile:
            gc.collect()
            prof = cProfile.Profile()
            prof.runcall(_mount_listdir_close, pool, expect)
            print_profile(prof, "daxfs mount + first listdir of /d0", args.profile_lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def fmt_size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def make_report(args, b, first, runs, size: int, expect: int, env: str) -> Report:
    def best_median(key: str) -> list[str]:
        xs = [r[key] for r in runs]
        return [fmt_seconds(min(xs)), fmt_seconds(median(xs))]

    rows = [
        ["mkfs", fmt_seconds(b["mkfs"]), "", f"{fmt_size(size)}, {b['inodes']:,} inodes"],
        [
            "build: create+write+close",
            fmt_seconds(b["create"]),
            "",
            f"{args.files / b['create']:,.0f} files/s, {b['bytes'] / MiB:.0f} MiB",
        ],
        ["build: close (unmount)", fmt_seconds(b["close"]), "", ""],
        ["first mount after build", fmt_seconds(first["mount"]), "", "once"],
        ["mount", *best_median("mount"), "mount(pool)"],
        ["first listdir", *best_median("listdir"), f"/d0, {expect:,} entries"],
        ["mount + first listdir", *best_median("mount+listdir"), ""],
        ["close", *best_median("close"), ""],
    ]
    best_mount = min(r["mount"] for r in runs)
    verdict = [
        f"aim: mount < {AIM_SECONDS} s with {args.files:,} files: "
        + ("met" if best_mount < AIM_SECONDS else "not met")
        + f" (best {fmt_seconds(best_mount)}, "
        f"median {fmt_seconds(median([r['mount'] for r in runs]))})"
    ]
    notes = [
        f"{args.files:,} files of 0-{args.max_size} bytes over {args.dirs} directories, "
        f"pool file of {fmt_size(size)} on {args.pool_dir}",
        f"wall-clock seconds; mount rows: best and median of {args.repeat} fresh "
        "mount + listdir + close (build rows: once)",
    ]
    data = {
        "files": args.files,
        "dirs": args.dirs,
        "max_size": args.max_size,
        "pool_size": size,
        "build": b,
        "first_mount": first,
        "runs": runs,
    }
    return Report(
        title=f"daxfs mount benchmark ({args.files:,} files)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["step", "best", f"median of {args.repeat}", "detail"],
        rows=rows,
        verdict=verdict,
        data=data,
    )
