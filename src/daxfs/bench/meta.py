"""meta: small-file metadata operations, daxfs against the kernel on tmpfs.

The same Python loop runs on two sides:

    kernel  builtin open, os.stat, os.listdir, os.unlink on a directory in
            --pool-dir (tmpfs: /dev/shm by default)
    daxfs   fs.open, fs.stat, fs.listdir, fs.unlink on a pool file in that
            same directory

Phases, each over the same N files of one directory, in this order:

    create      open(p, "wb") + write 4 KiB + close      (N ops)
    stat        stat(p)                                  (N ops)
    read        open(p, "rb") + read(4096) + close       (N ops)
    read_bytes  the whole file: fs.read_bytes(p); the kernel's side
                pathlib's read_bytes (open, read, close)  (N ops)
    held        open(p, "rb") of every file, each kept open, then every
                one closed: what a process holding many files open pays
                (as many as the open-file limit allows) (N ops)
    overwrite   open(p, "wb") + write 4 KiB + close of each file again: a
                file rewritten whole, as a checkpoint or a zarr chunk is
                (N ops)
    listdir     listdir of the N-entry directory, repeated for >= 0.2 s (calls)
    unlink      unlink(p)                                (N ops)
    write_bytes a new 4 KiB file: fs.write_bytes(p, data); the kernel's
                side pathlib's write_bytes (open "wb", write, close) (N ops)
    rewrite_bytes  write_bytes of each file again, other 4 KiB: a file
                replaced whole in one call (N ops)
    unlink_all  the N files again, all at once, as rm -r removes a
                directory's files: fs._unlink_names(dir, names),
                UNLINK_BATCH names to a change (fsspec's rm -r, zarr's delete_dir); the
                kernel's side os.unlink of each, it has no batch (N ops)

and on the daxfs side, last, the floor: N changes that change nothing
(``with fs._change(): pass``).  An op that makes k journaled changes (a
create or an overwrite 2, an unlink or a write_bytes 1: CHANGES) costs at least k
of them, so "change floor" is the ratio it would reach if the rest of
its work were free: an aim above it cannot be met without a cheaper
change.

A round runs every phase on one side; rounds alternate between the sides
(kernel first, then daxfs first, ...) so both see the same machine noise,
and each phase's best round is reported.  Paths are built before timing;
the garbage collector stays enabled (a collection runs before each phase).
The daxfs pool is formatted and mounted once, untimed; its directory is warm
after the first round (daxfs keeps a directory in memory once used).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import resource
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from ..namespace import UNLINK_BATCH
from . import (
    KiB,
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    add_profile_arguments,
    check_pool_dir,
    command_line,
    durable,
    environment,
    fmt_rate,
    fmt_ratio,
    next_pow2,
    print_profile,
    profiled_phases,
    repeat_for,
    timed,
)

HELP = "small-file ops (create, stat, read, listdir, unlink; whole-file calls) vs kernel tmpfs"
DESCRIPTION = __doc__
# Issue 17's aims, daxfs/kernel per phase (listdir: the project's older 0.5).
# read_bytes and write_bytes have none: they show what the whole-file calls
# buy over open, read or write, close.
AIMS = {"create": 0.35, "stat": 0.6, "read": 0.5, "listdir": 0.5, "unlink": 0.35}
FILE_SIZE = 4 * KiB
LISTDIR_SECONDS = 0.2
# The deepest --depth: the kernel side's paths ("d/" a level) stay under
# PATH_MAX with room for the temporary directory's name.
MAX_DEPTH = 1500
# Descriptors left for all else while the held phase holds its files.
FD_ROOM = 256
# Journaled changes per op: open("wb") commits the name, the write at close
# the data (DESIGN.md, "The per-call path"); write_bytes both at once.
# An overwrite: the open empties the file, the write at close fills it.
CHANGES = {"create": 2, "overwrite": 2, "unlink": 1, "write_bytes": 1, "rewrite_bytes": 1}

PHASES: list[tuple[str, str]] = [
    ("create", "create+write 4K+close"),
    ("stat", "stat"),
    ("read", "open+read 4K+close"),
    ("read_bytes", "read_bytes 4K"),
    ("held", "open, all held open, close"),
    ("overwrite", "overwrite 4K (open wb+write+close)"),
    ("listdir", "listdir ({n:,} entries)"),
    ("unlink", "unlink"),
    ("write_bytes", "write_bytes 4K (new file)"),
    ("rewrite_bytes", "write_bytes 4K (over a file)"),
    ("unlink_all", f"unlink all, {UNLINK_BATCH} a change"),
]


def _missing(*args):
    raise NotImplementedError("this side has no such call")


@dataclass
class Side:
    """One namespace the phases run against: the kernel's or a mounted pool's."""

    name: str
    open: Callable
    stat: Callable
    listdir: Callable
    unlink: Callable
    dir: str
    paths: list[str]
    # The daxfs side's floor: one change that changes nothing (None: kernel).
    empty_change: Callable[[], None] | None = None
    # The whole-file calls (run_round needs them; bench/durable.py does not).
    read_bytes: Callable = _missing
    write_bytes: Callable = _missing
    # Remove names of a directory at once (directory, names) -> names left.
    unlink_names: Callable = _missing


# --------------------------------------------------------------------------
# the phases: identical code for both sides
# --------------------------------------------------------------------------
def _create(s: Side, payload: bytes) -> int:
    op = s.open
    for p in s.paths:
        with op(p, "wb") as f:
            f.write(payload)
    return len(s.paths)


def _each_path(s: Side, op: Callable) -> int:
    """``op(path)`` for every path: the stat, read_bytes and unlink phases."""
    for p in s.paths:
        op(p)
    return len(s.paths)


def _read(s: Side, payload: bytes) -> int:
    op, n = s.open, len(payload)
    for p in s.paths:
        with op(p, "rb") as f:
            f.read(n)
    return len(s.paths)


def _held(s: Side, count: int) -> int:
    """Open the first ``count`` files for reading and keep each open, then
    close them all."""
    op = s.open
    handles = [op(p, "rb") for p in s.paths[:count]]
    for h in handles:
        h.close()
    return count


def files_to_hold(files: int) -> int:
    """How many files the held phase keeps open at once: all of them, the
    soft limit on open files raised toward the hard one as far as needed
    (with room for what else is open), or as many as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = files + FD_ROOM
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return files if soft == resource.RLIM_INFINITY else max(0, min(files, soft - FD_ROOM))


def _write_bytes(s: Side, payload: bytes) -> int:
    op = s.write_bytes
    for p in s.paths:
        op(p, payload)
    return len(s.paths)


def _kernel_read_bytes(path: str) -> bytes:
    """pathlib.Path.read_bytes's body, without making a Path."""
    with open(path, "rb") as f:
        return f.read()


def _kernel_write_bytes(path: str, data: bytes) -> int:
    """pathlib.Path.write_bytes's body, without making a Path."""
    with open(path, "wb") as f:
        return f.write(data)


def _unlink(s: Side, payload: bytes) -> int:
    return _each_path(s, s.unlink)


def _unlink_all(s: Side, names: list[str], left: list[tuple[str, int]]) -> int:
    """Every name of the directory at once; what was not removed into ``left``."""
    left.extend(s.unlink_names(s.dir, names))
    return len(names)


def _kernel_unlink_names(directory: str, names: list[str]) -> list[tuple[str, int]]:
    """What fs._unlink_names does, the kernel's way: one unlink a name."""
    for name in names:
        os.unlink(os.path.join(directory, name))
    return []


def _floor(s: Side, payload: bytes) -> int:
    change = s.empty_change
    assert change is not None
    for _ in s.paths:
        change()
    return len(s.paths)


def run_round(
    s: Side,
    payload: bytes,
    profilers: dict[str, cProfile.Profile] | None = None,
    held: int | None = None,
) -> dict[str, tuple[int, float]]:
    """Every phase once on side ``s``; returns {phase: (ops, seconds)}.  With
    ``profilers``, each phase runs under its profiler (its time is then moot).
    ``held``: files the held phase keeps open (files_to_hold; all of them)."""
    held = len(s.paths) if held is None else held
    out: dict[str, tuple[int, float]] = {}

    def run(phase: str, fn: Callable[[], int]) -> None:
        if profilers is not None:
            fn = functools.partial(profilers[phase].runcall, fn)
        out[phase] = timed(fn)

    def listdir() -> tuple[int, float]:
        return repeat_for(lambda: s.listdir(s.dir), LISTDIR_SECONDS)

    run("create", lambda: _create(s, payload))
    _check(len(s.listdir(s.dir)) == len(s.paths), s, "create: wrong entry count")
    run("stat", lambda: _each_path(s, s.stat))
    run("read", lambda: _read(s, payload))
    with s.open(s.paths[-1], "rb") as f:
        _check(f.read() == payload, s, "read back wrong bytes")
    run("read_bytes", lambda: _each_path(s, s.read_bytes))
    _check(s.read_bytes(s.paths[0]) == payload, s, "read_bytes: wrong bytes")
    run("held", lambda: _held(s, held))
    run("overwrite", lambda: _create(s, payload[::-1]))  # (the same calls, each name there)
    _check(s.read_bytes(s.paths[-1]) == payload[::-1], s, "overwrite: wrong bytes")
    out["listdir"] = profilers["listdir"].runcall(listdir) if profilers is not None else listdir()
    run("unlink", lambda: _unlink(s, payload))
    _check(s.listdir(s.dir) == [], s, "unlink: directory not empty")
    run("write_bytes", lambda: _write_bytes(s, payload))
    _check(s.read_bytes(s.paths[-1]) == payload, s, "write_bytes: wrong bytes")
    run("rewrite_bytes", lambda: _write_bytes(s, payload[::-1]))
    _check(s.read_bytes(s.paths[-1]) == payload[::-1], s, "rewrite_bytes: wrong bytes")
    base = [p.rsplit("/", 1)[1] for p in s.paths]
    left: list = []
    run("unlink_all", lambda: _unlink_all(s, base, left))
    _check(not left and s.listdir(s.dir) == [], s, "unlink_all: names left")
    if s.empty_change is not None and profilers is None:
        out["floor"] = timed(lambda: _floor(s, payload))
    return out


def _check(ok: bool, s: Side, what: str) -> None:
    if not ok:
        raise RuntimeError(f"meta benchmark, {s.name} side: {what}")


def _empty_change(fs) -> None:
    """What every change pays, whatever it changes (the thread lock, the
    exclusive pool lock and its release, catching up, an empty commit)."""
    with fs._change():
        pass


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def auto_pool_size(files: int) -> int:
    # mkfs gives one inode per 16 KiB of pool; leave twice that, and room for data.
    return max(256 * MiB, next_pow2(files * 32 * KiB))


def names(n: int) -> list[str]:
    return [f"f{i:07d}" for i in range(n)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=10_000, help="files in the directory (10000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side; best is kept (3)")
    p.add_argument(
        "--depth",
        type=int,
        default=1,
        help=f"levels below the root the files' directory lies, 1 to {MAX_DEPTH} (1)",
    )
    add_pool_dir_argument(p, "directory for the kernel side and the pool file")
    p.add_argument(
        "--pool-size", default=None, help="pool size, e.g. 512M (default: enough for --files)"
    )
    add_profile_arguments(p, [name for name, _ in PHASES], "ratio")
    p.add_argument(
        "--durable",
        action="store_true",
        help="also time creates with fsync per file and on a pool in /dev/shm (bench/durable.py)",
    )
    add_output_arguments(p)


def main(args: argparse.Namespace) -> int:
    import daxfs

    if args.files < 1 or args.rounds < 1:
        raise SystemExit("--files and --rounds must be at least 1")
    if not 1 <= args.depth <= MAX_DEPTH:
        raise SystemExit(f"--depth must be from 1 to {MAX_DEPTH}")
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-meta-", dir=pool_dir)
    pool = os.path.join(work, "pool")
    size = daxfs.parse_size(args.pool_size) if args.pool_size else auto_pool_size(args.files)
    fs = None
    try:
        kdir = os.path.join(work, "kernel")
        os.mkdir(kdir)
        daxfs.mkfs(pool, size, force=True)
        fs = daxfs.mount(pool)
        ddir = "/bench"
        fs.mkdir(ddir)
        for _ in range(args.depth - 1):  # (untimed)
            kdir, ddir = kdir + "/d", ddir + "/d"
            os.mkdir(kdir)
            fs.mkdir(ddir)
        base = names(args.files)
        kernel = Side(
            "kernel",
            open,
            os.stat,
            os.listdir,
            os.unlink,
            kdir,
            [os.path.join(kdir, n) for n in base],
            read_bytes=_kernel_read_bytes,
            write_bytes=_kernel_write_bytes,
            unlink_names=_kernel_unlink_names,
        )
        dax = Side(
            "daxfs",
            fs.open,
            fs.stat,
            fs.listdir,
            fs.unlink,
            ddir,
            [ddir + "/" + n for n in base],
            lambda: _empty_change(fs),
            read_bytes=fs.read_bytes,
            write_bytes=fs.write_bytes,
            unlink_names=fs._unlink_names,
        )
        payload = os.urandom(FILE_SIZE)

        held = files_to_hold(args.files)
        results: dict[str, list[dict[str, tuple[int, float]]]] = {"kernel": [], "daxfs": []}
        for r in range(args.rounds):
            for s in (kernel, dax) if r % 2 == 0 else (dax, kernel):
                results[s.name].append(run_round(s, payload, held=held))

        env = environment(pool_dir, fs.info()["durability"])
        report = make_report(args, results, env, size, held)
        report.emit(args.format, args.json)
        if args.durable:
            print()
            best, durability = durable.measure(work, base, payload, args.rounds, size)
            durable.durable_report(args, best, durability, env).emit(args.format, None)

        if args.profile:
            profile_round(dax, payload, report, args.profile, args.profile_lines, held)
    finally:
        if fs is not None:
            fs.close()
        # rm, not shutil.rmtree: it recurses once per level, and --depth
        # goes deeper than Python's recursion limit.
        subprocess.run(["rm", "-rf", "--", work], check=False)
    return 0


def best_rates(rounds: list[dict[str, tuple[int, float]]]) -> dict[str, float]:
    """The best rate of each phase of PHASES over the rounds."""
    return {ph: max(r[ph][0] / r[ph][1] for r in rounds) for ph, _ in PHASES}


def make_report(args, results, env: str, pool_size: int, held: int) -> Report:
    k, d = best_rates(results["kernel"]), best_rates(results["daxfs"])
    floor = max(r["floor"][0] / r["floor"][1] for r in results["daxfs"])
    rows, ratios, ceilings = [], {}, {}
    for ph, label in PHASES:
        ratios[ph] = d[ph] / k[ph]
        changes = CHANGES.get(ph)
        if changes:
            ceilings[ph] = floor / changes / k[ph]
        rows.append(
            [
                label.format(n=args.files),
                fmt_rate(k[ph]),
                fmt_rate(d[ph]),
                fmt_ratio(ratios[ph]),
                fmt_ratio(ceilings[ph]) if ph in ceilings else "-",
            ]
        )
    verdict = [
        f"aim: {ph} daxfs/kernel >= {AIMS[ph]}: "
        + ("met" if ratios[ph] >= AIMS[ph] else f"not met ({ratios[ph]:.2f})")
        for ph, _ in PHASES
        if ph in AIMS
    ]
    if args.depth > 1:  # (deep, the kernel walks every name of each path again)
        verdict = ["the aims are for files one level down (--depth 1): not judged here"]
    notes = [
        f"{args.files:,} files of 4 KiB in one directory"
        + (f" {args.depth:,} levels down" if args.depth > 1 else "")
        + f"; kernel = builtin open/os.* on {args.pool_dir}, daxfs = fs.* on a "
        f"{pool_size // MiB} MiB pool file there",
        f"ops/s, best of {args.rounds} rounds (sides interleaved); higher is better; "
        "listdir in calls/s of a warm directory",
        f"held: {held:,} files open at once"
        + ("" if held == args.files else " (as many as the open-file limit allows)"),
        "change floor: daxfs/kernel if each journaled change of the op ("
        + ", ".join(f"{ph} {k}" for ph, k in CHANGES.items())
        + ") "
        f"cost no more than a change that changes nothing ({fmt_rate(floor)}/s here: the "
        "locks, catching up, no record); no such op can do better",
    ]
    raw = {
        side: [{ph: {"ops": o, "seconds": s} for ph, (o, s) in r.items()} for r in rounds]
        for side, rounds in results.items()
    }
    data = {
        "files": args.files,
        "depth": args.depth,
        "rounds": args.rounds,
        "pool_size": pool_size,
        "held": held,
        "best_ops_per_s": {"kernel": k, "daxfs": d},
        "ratio": ratios,
        "empty_changes_per_s": floor,
        "change_floor_ratio": ceilings,
        "raw": raw,
    }
    return Report(
        title=f"daxfs meta benchmark ({args.files:,} files)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["phase", "kernel ops/s", "daxfs ops/s", "daxfs/kernel", "change floor"],
        rows=rows,
        verdict=verdict,
        data=data,
    )


def profile_round(
    dax: Side, payload: bytes, report: Report, which: str, lines: int, held: int
) -> None:
    profilers = {ph: cProfile.Profile() for ph, _ in PHASES}
    run_round(dax, payload, profilers, held)
    ratios = report.data["ratio"]
    assert isinstance(ratios, dict)
    for ph in profiled_phases(which, ratios):
        print_profile(profilers[ph], f"daxfs {ph} (ratio {ratios[ph]:.2f}), one extra round", lines)
