"""share: several processes working on one pool at once, beside the kernel's tmpfs.

The workload of one process, in its own directory or in one directory that
all share, over N files (--files):

    create   open(p, "wb") + write 4 KiB + close      (N ops)
    stat     stat(p), checking the size               (N ops)
    read     open(p, "rb") + read 4 KiB + close       (N ops)
    unlink   unlink(p)                                (N ops)

For each process count in --procs and each layout in --layout (disjoint:
a directory per process; shared: one directory, names prefixed per
process), that many processes (multiprocessing, --start-method) run it
together, on two sides in the same run:

    daxfs   each child mounts the pool itself (daxfs.mount, untimed), runs
            fs.open, fs.stat, fs.unlink, and closes it at the end (untimed)
    kernel  builtin open, os.stat, os.unlink in a directory of --pool-dir
            (tmpfs: /dev/shm by default)

All children of a case wait at a barrier before each phase; a phase's time
runs from the barrier to the last child finishing it, and a case's from
the first barrier to the last child finishing its unlinks.  Rates are of
all processes together: ops/s counts creates, stats, reads and unlinks.  The
scaling ratio is N processes together against one process alone, on the
same side; daxfs/kernel compares the sides.  One process has no layout
(its row stands for both).

Each of --prefill is a pool (and a kernel directory) holding that many
4 KiB files beforehand, in /prefill (1,000 per subdirectory), built once
per run in one process, untimed; the pool is --pool-size (sparse) with
inodes for everything.  Between cases the parent removes anything left.

Coherence: each daxfs child reports its mount's fs.coherence Counter for
the timed phases.  full_rebuilds counts the times it dropped its caches
and rescanned the inode table because another process had committed;
the table shows them per FileSystem call (open, write, close, stat,
unlink: five per file), and records_applied (catching up from the
journal, issue 13) the same way once the Counter has it; --json has every
count, by phase.

A case that runs long is stopped: each phase ends --limit/3 seconds after
its barrier, and the rates are of the work done (marked *).  A round
alternates the sides' order; each case keeps its best round of --repeat,
and a case stopped at the limit is not repeated.

Small files beside a large writer (--beside, on; bench/beside.py): one
process's creates of 4 KiB files, alone and while another process writes
files of --beside-big in one write() each, on both sides.

A real client (--dask, on when dask and zarr import): a dask array of
--dask-size float64 in --dask-chunk chunks, computed and written
(da.store) to zarr by a process pool of 2 workers (dask's multiprocessing
scheduler, spawned workers), then read back and summed by them, through
daxfs.zarr.DaxStore on a pool and through zarr's LocalStore on a directory
of --pool-dir.  Uncompressed; the workers are started (and import zarr)
before timing; each round writes a fresh array.

Aims (issue 13): 2 processes in disjoint directories together at least
1.0x one process (aim 1.5x on 2 cores); with 100,000 files in the pool,
within 10% of an empty pool for 1 and 2 processes, with zero full
rebuilds; one shared directory at least 0.7x disjoint directories; dask +
zarr through DaxStore at least 0.8x LocalStore, for the write and the read.
"""

from __future__ import annotations

import argparse
import collections
import math
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from . import (
    GiB,
    KiB,
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    check_pool_dir,
    command_line,
    emit_all,
    environment,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    next_pow2,
)
from .beside import beside_report, run_beside

HELP = "several processes on one pool (create/stat/read/unlink), 1-4 processes, daxfs vs kernel"
DESCRIPTION = __doc__
FILE_SIZE = 4 * KiB
PHASES = ("create", "stat", "read", "unlink")
# FileSystem calls per file: open+write+close, stat, open+read+close, unlink.
CALLS = {"create": 3, "stat": 1, "read": 3, "unlink": 1}
LAYOUTS = ("disjoint", "shared")
PREFILL_PER_DIR = 1000
BARRIER_SLACK = 600.0  # seconds a child waits at a barrier beyond --limit: a hang guard

AIM_TWO = 1.0  # 2 processes disjoint against 1 process: no collapse ...
AIM_TWO_GOAL = 1.5  # ... and the goal on 2 cores
AIM_PREFILL = 0.9  # a full pool against an empty one
AIM_SHARED = 0.7  # one shared directory against disjoint directories
AIM_DASK = 0.8  # DaxStore against LocalStore on tmpfs


# --------------------------------------------------------------------------
# one child: its part of a case
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What one child process does (picklable, for the spawn start method)."""

    side: str  # "daxfs" or "kernel"
    pool: str  # the pool file (daxfs side)
    directory: str  # where its files go: a pool path or a kernel path
    prefix: str  # of its file names
    files: int
    phase_limit: float  # seconds a phase may run after its barrier


@dataclass
class ChildResult:
    phases: dict[str, tuple[int, float, float]]  # phase: (ops, start, end), time.monotonic
    stopped: list[str]  # phases stopped at their deadline
    coherence: dict[str, dict[str, int]]  # phase: fs.coherence counted in it


def child_main(job: Job, barrier, results, index: int) -> None:
    """A child's entry point: run ``job``, put (index, ChildResult or traceback)."""
    try:
        results.put((index, run_child(job, barrier)))
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        results.put((index, traceback.format_exc()))


def run_child(job: Job, barrier) -> ChildResult:
    import daxfs

    fs = daxfs.mount(job.pool) if job.side == "daxfs" else None
    try:
        ops = (fs.open, fs.stat, fs.unlink) if fs is not None else (open, os.stat, os.unlink)
        paths = [f"{job.directory}/{job.prefix}{i:05d}" for i in range(job.files)]
        payload = os.urandom(FILE_SIZE)
        phases, stopped, coherence = {}, [], {}
        wait = job.phase_limit + BARRIER_SLACK
        for phase in PHASES:
            barrier.wait(wait)
            before = collections.Counter(fs.coherence if fs is not None else {})
            t0 = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes
            done = PHASE_LOOPS[phase](ops, paths, payload, t0 + job.phase_limit)
            phases[phase] = (done, t0, time.monotonic())
            coherence[phase] = dict(collections.Counter(fs.coherence if fs else {}) - before)
            if done < len(paths):
                stopped.append(phase)
            paths = paths[:done]  # a stopped create leaves only these to stat and unlink
        return ChildResult(phases, stopped, coherence)
    finally:
        if fs is not None:
            fs.close()


# The phase loops: identical code for both sides; each checks the clock
# before every file so a collapsed case stops near its deadline.
def _create(ops, paths: list[str], payload: bytes, deadline: float) -> int:
    op, clock = ops[0], time.monotonic
    for i, p in enumerate(paths):
        if clock() > deadline:
            return i
        with op(p, "wb") as f:
            f.write(payload)
    return len(paths)


def _stat(ops, paths: list[str], payload: bytes, deadline: float) -> int:
    op, clock, size = ops[1], time.monotonic, len(payload)
    for i, p in enumerate(paths):
        if clock() > deadline:
            return i
        if op(p).st_size != size:
            raise RuntimeError(f"share benchmark: {p} has the wrong size")
    return len(paths)


def _read(ops, paths: list[str], payload: bytes, deadline: float) -> int:
    op, clock, size = ops[0], time.monotonic, len(payload)
    for i, p in enumerate(paths):
        if clock() > deadline:
            return i
        with op(p, "rb") as f:
            if len(f.read(size)) != size:
                raise RuntimeError(f"share benchmark: {p} read short")
    return len(paths)


def _unlink(ops, paths: list[str], payload: bytes, deadline: float) -> int:
    op, clock = ops[2], time.monotonic
    for i, p in enumerate(paths):
        if clock() > deadline:
            return i
        op(p)
    return len(paths)


PHASE_LOOPS: dict[str, Callable[..., int]] = {
    "create": _create,
    "stat": _stat,
    "read": _read,
    "unlink": _unlink,
}


# --------------------------------------------------------------------------
# one case on one side: all its children together
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    prefill: int
    procs: int
    layout: str

    def label(self) -> str:
        who = "1 process" if self.procs == 1 else f"{self.procs} {self.layout}"
        return f"{self.prefill:,} files: {who}"


@dataclass
class Outcome:
    """One case on one side, all processes together."""

    ops: dict[str, int]
    seconds: dict[str, float]
    total_seconds: float
    stopped_phases: list[str]  # by the limit, in any child
    coherence: dict[str, int]  # fs.coherence counts of all children, timed phases
    coherence_by_phase: dict[str, dict[str, int]]

    @property
    def stopped(self) -> bool:
        return bool(self.stopped_phases)

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def calls(self) -> int:
        return sum(CALLS[ph] * n for ph, n in self.ops.items())

    def rate(self, phase: str | None = None) -> float | None:
        ops, s = (
            (self.total_ops, self.total_seconds)
            if phase is None
            else (self.ops[phase], self.seconds[phase])
        )
        return ops / s if ops and s > 0 else None

    def per_call(self, counter: str) -> float | None:
        return self.coherence.get(counter, 0) / self.calls if self.calls else None


def combine(results: Sequence[ChildResult]) -> Outcome:
    """All children's phases as one: ops summed, time from the earliest
    start to the latest end."""
    ops, seconds = {}, {}
    for ph in PHASES:
        spans = [r.phases[ph] for r in results]
        ops[ph] = sum(n for n, _, _ in spans)
        seconds[ph] = max(e for _, _, e in spans) - min(s for _, s, _ in spans)
    total = max(r.phases[PHASES[-1]][2] for r in results) - min(
        r.phases[PHASES[0]][1] for r in results
    )
    by_phase = {ph: collections.Counter() for ph in PHASES}
    for r in results:
        for ph in PHASES:
            by_phase[ph].update(r.coherence[ph])
    coherence = sum(by_phase.values(), collections.Counter())
    stopped = [ph for ph in PHASES if any(ph in r.stopped for r in results)]
    return Outcome(
        ops, seconds, total, stopped, dict(coherence), {ph: dict(c) for ph, c in by_phase.items()}
    )


@dataclass
class Target:
    """Where a prefill's cases run: a pool and a kernel directory, each with
    the case directories made."""

    prefill: int
    pool: str
    kernel: str
    built_seconds: dict[str, float] = field(default_factory=dict)

    def root(self, side: str) -> str:
        return "/w" if side == "daxfs" else os.path.join(self.kernel, "w")


def case_dirs(case: Case, root: str) -> list[str]:
    """Each child's directory."""
    if case.layout == "shared":
        return [f"{root}/shared"] * case.procs
    return [f"{root}/p{i}" for i in range(case.procs)]


def jobs_for(case: Case, side: str, target: Target, args) -> list[Job]:
    dirs = case_dirs(case, target.root(side))
    return [
        Job(
            side,
            target.pool,
            d,
            f"p{i}-f" if case.layout == "shared" else "f",
            args.files,
            args.limit / len(PHASES),
        )
        for i, d in enumerate(dirs)
    ]


def run_case(ctx, case: Case, side: str, target: Target, args) -> Outcome:
    """Start the case's children together, gather their results, clean up."""
    jobs = jobs_for(case, side, target, args)
    barrier, results = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [
        ctx.Process(target=child_main, args=(job, barrier, results, i), daemon=True)
        for i, job in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    try:
        gathered = gather(procs, results, args.limit + BARRIER_SLACK)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    failed = [r for r in gathered if isinstance(r, str)]
    if failed:
        raise RuntimeError(f"share benchmark, {side} {case.label()}: a child failed:\n{failed[0]}")
    outcome = combine(gathered)
    left = remove_leftovers(case, side, target)
    if left and not outcome.stopped:
        raise RuntimeError(f"share benchmark, {side} {case.label()}: {left} files left")
    return outcome


def gather(procs, results, timeout: float) -> list:
    """Each child's result, in child order; a child that died without one
    (or a case past ``timeout``) is an error."""
    got: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            index, result = results.get(timeout=1.0)
            got[index] = result
            continue
        except queue.Empty:
            pass
        dead = [i for i, p in enumerate(procs) if i not in got and p.exitcode not in (None, 0)]
        if dead or time.monotonic() > deadline:
            why = f"exit code {procs[dead[0]].exitcode}" if dead else "no result in time"
            raise RuntimeError(f"share benchmark: a child gave no result ({why})")
    return [got[i] for i in range(len(procs))]


def remove_leftovers(case: Case, side: str, target: Target) -> int:
    """Unlink what a stopped case left (untimed); return how many."""
    import daxfs

    dirs = sorted(set(case_dirs(case, target.root(side))))
    if side == "kernel":
        names = [os.path.join(d, n) for d in dirs for n in os.listdir(d)]
        for p in names:
            os.unlink(p)
        return len(names)
    with daxfs.mount(target.pool) as fs:
        names = [f"{d}/{n}" for d in dirs for n in fs.listdir(d)]
        for p in names:
            fs.unlink(p)
    return len(names)


# --------------------------------------------------------------------------
# the pools
# --------------------------------------------------------------------------
def pool_inodes(args) -> int:
    """Inodes for the largest prefill, every process's files and the directories."""
    dirs = max(args.prefill) // PREFILL_PER_DIR + max(args.procs) + 16
    return next_pow2(max(args.prefill) + max(args.procs) * args.files + dirs)


def prefill_names(n: int) -> list[tuple[str, list[str]]]:
    """(subdirectory, file names) holding ``n`` files, PREFILL_PER_DIR each."""
    out = []
    for start in range(0, n, PREFILL_PER_DIR):
        count = min(PREFILL_PER_DIR, n - start)
        out.append((f"d{start // PREFILL_PER_DIR:04d}", [f"f{j:04d}" for j in range(count)]))
    return out


def build_target(work: str, prefill: int, args) -> Target:
    """A fresh pool and kernel directory, each with /w's case directories
    and ``prefill`` files in /prefill (timed, untimed by the cases)."""
    import daxfs

    target = Target(
        prefill, os.path.join(work, f"pool-{prefill}"), os.path.join(work, f"kernel-{prefill}")
    )
    payload = os.urandom(FILE_SIZE)
    case_names = [f"p{i}" for i in range(max(args.procs))] + ["shared"]
    daxfs.mkfs(target.pool, args.pool_size, force=True, inodes=pool_inodes(args))
    t0 = time.perf_counter()
    with daxfs.mount(target.pool) as fs:
        fill(fs.makedirs, fs.open, "", payload, case_names, prefill)
    target.built_seconds["daxfs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fill(os.makedirs, open, target.kernel, payload, case_names, prefill)
    target.built_seconds["kernel"] = time.perf_counter() - t0
    return target


def fill(makedirs, op, base: str, payload: bytes, case_names: list[str], prefill: int) -> None:
    for name in case_names:
        makedirs(f"{base}/w/{name}")
    for sub, names in prefill_names(prefill):
        d = f"{base}/prefill/{sub}"
        makedirs(d)
        for n in names:
            with op(f"{d}/{n}", "wb") as f:
                f.write(payload)


def remove_target(target: Target) -> None:
    os.unlink(target.pool)
    shutil.rmtree(target.kernel, ignore_errors=True)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def cases_for(prefill: int, args) -> list[Case]:
    """Every case of one prefill; one process once (it has no layout)."""
    out = []
    for n in args.procs:
        for layout in args.layout[:1] if n == 1 else args.layout:
            out.append(Case(prefill, n, layout))
    return out


Results = dict[Case, dict[str, Outcome]]


def run_all(work: str, args) -> tuple[Results, dict[int, dict[str, float]]]:
    ctx = multiprocessing.get_context(args.start_method)
    results: Results = {}
    builds = {}
    for prefill in args.prefill:
        print(f"building the pool with {prefill:,} files ...", file=sys.stderr, flush=True)
        target = build_target(work, prefill, args)
        builds[prefill] = target.built_seconds
        try:
            for case in cases_for(prefill, args):
                print(f"  {case.label()} ...", file=sys.stderr, flush=True)
                results[case] = run_rounds(ctx, case, target, args)
        finally:
            remove_target(target)
    return results, builds


def run_rounds(ctx, case: Case, target: Target, args) -> dict[str, Outcome]:
    """Best round (by total rate) of each side; a side stopped at the limit
    runs once."""
    best: dict[str, Outcome] = {}
    for r in range(args.repeat):
        for side in ("kernel", "daxfs") if r % 2 == 0 else ("daxfs", "kernel"):
            if side in best and best[side].stopped:
                continue
            o = run_case(ctx, case, side, target, args)
            if side not in best or (o.rate() or 0) > (best[side].rate() or 0):
                best[side] = o
    return best


def parse_list(text: str, what: str, convert: Callable[[str], object]) -> list:
    try:
        out = [convert(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--{what}: cannot read {text!r}") from None
    if not out:
        raise SystemExit(f"--{what} needs at least one value")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=2000, help="files per process (2000)")
    p.add_argument("--procs", default="1,2,4", help="process counts, comma-separated (1,2,4)")
    p.add_argument(
        "--layout",
        default="disjoint,shared",
        help="disjoint (a directory per process) and/or shared (one directory) (disjoint,shared)",
    )
    p.add_argument(
        "--prefill",
        default="0,100000",
        help="files in the pool before the cases, comma-separated (0,100000)",
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds per case; best kept (3)")
    p.add_argument(
        "--limit",
        type=float,
        default=120.0,
        help="seconds a case may run on one side; each phase is stopped at a third (120)",
    )
    p.add_argument(
        "--start-method",
        choices=("fork", "spawn"),
        default="fork",
        help="how the children start (fork); either way each mounts the pool itself",
    )
    add_pool_dir_argument(p, "directory for the pool files and the kernel side")
    p.add_argument("--pool-size", default="2G", help="pool size, sparse (2G)")
    p.add_argument(
        "--dask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time dask + zarr through DaxStore and LocalStore (default: if both import)",
    )
    p.add_argument(
        "--beside",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time small creates beside a process writing large files (on)",
    )
    p.add_argument("--beside-files", type=int, default=2000, help="creates timed there (2000)")
    p.add_argument("--beside-big", default="32M", help="the large files' size there (32M)")
    p.add_argument("--dask-size", default="256M", help="the dask array's size (256M)")
    p.add_argument("--dask-chunk", default="1M", help="its chunk size (1M)")
    p.add_argument("--dask-workers", type=int, default=2, help="dask worker processes (2)")
    add_output_arguments(p)


def check_arguments(args) -> None:
    import daxfs

    args.procs = sorted(set(parse_list(args.procs, "procs", int)))
    args.layout = list(dict.fromkeys(parse_list(args.layout, "layout", str)))
    args.prefill = sorted(set(parse_list(args.prefill, "prefill", int)))
    args.pool_size = daxfs.parse_size(args.pool_size)
    args.beside_big = daxfs.parse_size(args.beside_big)
    if args.beside_big < MiB or args.beside_big % MiB or args.beside_files < 100:
        raise SystemExit("--beside-big: whole MiB, at least 1; --beside-files: at least 100")
    bad = [x for x in args.layout if x not in LAYOUTS]
    if bad:
        raise SystemExit(f"--layout: unknown {bad} (choose from {', '.join(LAYOUTS)})")
    if args.files < 1 or args.repeat < 1 or args.limit <= 0 or min(args.procs) < 1:
        raise SystemExit("--files, --repeat and --procs must be at least 1, --limit above 0")
    if min(args.prefill) < 0:
        raise SystemExit("--prefill: a count of files is at least 0")
    if args.dask is None:
        args.dask = dask_available()


def main(args: argparse.Namespace) -> int:
    import daxfs

    check_arguments(args)
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-share-", dir=pool_dir)
    try:
        probe = os.path.join(work, "probe")
        daxfs.mkfs(probe, 64 * MiB)
        with daxfs.mount(probe) as fs:
            env = environment(pool_dir, str(fs.info()["durability"]))
        os.unlink(probe)
        print("CPU ceiling ...", file=sys.stderr, flush=True)
        ceiling = cpu_ceiling(args.procs, args.start_method)
        results, builds = run_all(work, args)
        reports = [make_report(args, results, builds, env, ceiling)]
        if args.beside:
            print("small files beside a large writer ...", file=sys.stderr, flush=True)
            reports.append(beside_report(args, run_beside(work, args), env))
        if args.dask:
            print("dask + zarr ...", file=sys.stderr, flush=True)
            reports.append(dask_report(args, run_dask(work, args), env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit_all(reports, args.format, args.json)
    return 0


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------
def scaling(results: Results, case: Case, side: str) -> float | None:
    """N processes together against one process alone (same pool, same side)."""
    one = next((c for c in results if c.prefill == case.prefill and c.procs == 1), None)
    if one is None or case.procs == 1:
        return None
    return ratio_of(results[case][side].rate(), results[one][side].rate())


def ratio_of(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def counters_shown(results: Results) -> list[str]:
    return list(COUNTER_COLUMNS)


# What fs.coherence counts, per FileSystem call: caches rebuilt from the inode
# table, other processes' records applied instead, changes committed after
# being prepared without the pool lock, those that conflicted and ran again,
# and those sent the old way on reaching a directory conflicts showed busy.
COUNTER_COLUMNS = {
    "full_rebuilds": "rebuilds/call",
    "records_applied": "records/call",
    "optimistic_commits": "optimistic/call",
    "conflicts": "conflicts/call",
    "contended": "contended/call",
}


def ratio_cell(x: float | None) -> str:
    """A ratio, with two significant digits below 0.01 (a collapse reads
    0.0021 or 0.000094, not 0.00)."""
    if x is None or not 0 < x < 0.01:
        return fmt_ratio(x)
    return f"{x:.{1 - math.floor(math.log10(x))}f}"


def fmt_per_call(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def make_report(
    args, results: Results, builds, env: str, ceiling: dict[int, float] | None = None
) -> Report:
    counters = counters_shown(results)
    rows, data = [], []
    for case, sides in results.items():
        k, d = sides["kernel"], sides["daxfs"]
        rows.append(
            [
                case.label(),
                fmt_rate(k.rate()) + ("*" if k.stopped else ""),
                fmt_rate(d.rate()) + ("*" if d.stopped else ""),
                ratio_cell(ratio_of(d.rate(), k.rate())),
                ratio_cell(scaling(results, case, "kernel")),
                ratio_cell(scaling(results, case, "daxfs")),
                *(fmt_rate(d.rate(ph)) + ("*" if ph in d.stopped_phases else "") for ph in PHASES),
                *(fmt_per_call(d.per_call(c)) for c in counters),
            ]
        )
        data.append(
            {
                **asdict(case),
                **{side: {**asdict(o), "rate": o.rate()} for side, o in sides.items()},
                "scaling": {s: scaling(results, case, s) for s in ("kernel", "daxfs")},
            }
        )
    stopped = any(s["daxfs"].stopped or s["kernel"].stopped for s in results.values())
    notes = [
        f"{args.files:,} files of 4 KiB per process: create+write+close, stat, "
        "open+read+close, unlink; "
        f"children by {args.start_method}, each mounting the pool; a barrier before each phase",
        f"ops/s of all processes together (creates+stats+reads+unlinks), best of "
        f"{args.repeat}; xN/1 = N processes against 1; create/s, stat/s, read/s, unlink/s: "
        "daxfs, by phase",
        "per FileSystem call (open, write, close, stat, unlink), from fs.coherence: "
        "rebuilds = full cache rebuilds, records = other processes' records applied, "
        "optimistic = changes prepared without the pool lock, conflicts = those run again, "
        "contended = changes sent the old way on reaching a directory conflicts showed busy",
        pools_note(args, builds),
    ]
    if stopped:
        notes.append(
            f"* stopped at --limit {args.limit:g} s "
            f"(each phase at {args.limit / len(PHASES):g} s): rates of the work done"
        )
    return Report(
        title=f"daxfs share benchmark ({args.files:,} files per process)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=[
            "pool: processes",
            "kernel ops/s",
            "daxfs ops/s",
            "daxfs/kernel",
            "kernel xN/1",
            "daxfs xN/1",
            "create/s",
            "stat/s",
            "read/s",
            "unlink/s",
            *(COUNTER_COLUMNS[c] for c in counters),
        ],
        rows=rows,
        verdict=verdict(results, ceiling or {}),
        data={
            "files": args.files,
            "limit": args.limit,
            "builds": builds,
            "cases": data,
            "cpu_ceiling": ceiling or {},
        },
    )


def pools_note(args, builds: dict[int, dict[str, float]]) -> str:
    note = f"pools of {args.pool_size // MiB:,} MiB (sparse) on {args.pool_dir}"
    built = [
        f"{n:,} files in {fmt_seconds(b['daxfs'])} (kernel {fmt_seconds(b['kernel'])})"
        for n, b in builds.items()
        if n
    ]
    return note + ("; prefill built untimed, in one process: " + ", ".join(built) if built else "")


def find(results: Results, prefill: int, procs: int, layout: str | None = None) -> Case | None:
    for c in results:
        if c.prefill == prefill and c.procs == procs and (layout is None or c.layout == layout):
            return c
    return None


def met(ok: bool) -> str:
    return "met" if ok else "not met"


def verdict(results: Results, ceiling: dict[int, float]) -> list[str]:
    lines = [aim_two(results, ceiling), aim_prefill(results), aim_shared(results)]
    if ceiling:
        lines.append(
            "ceiling: pure Python arithmetic in N processes against 1 on this machine: "
            + ", ".join(f"{n} processes {ratio_cell(x)}x" for n, x in sorted(ceiling.items()))
            + " (no CPU-bound N-process run can scale further here)"
        )
    return lines


# The machine's own limit on scaling a CPU-bound Python program with
# processes: each of N processes runs the same loop, timed against one.
CEILING_LOOP = 3_000_000


def _spin(q) -> None:
    t, x = time.perf_counter(), 0
    for i in range(CEILING_LOOP):
        x += i & 7
    q.put(time.perf_counter() - t)


def cpu_ceiling(procs: Sequence[int], start_method: str) -> dict[int, float]:
    """N processes' throughput against one's, for each N above 1 in ``procs``."""
    ctx = multiprocessing.get_context(start_method)
    took = {}
    for n in sorted(set(procs) | {1}):
        q = ctx.Queue()
        children = [ctx.Process(target=_spin, args=(q,)) for _ in range(n)]
        for c in children:
            c.start()
        took[n] = max(q.get(timeout=120) for _ in children)
        for c in children:
            c.join()
    return {n: n * took[1] / t for n, t in took.items() if n > 1}


def aim_two(results: Results, ceiling: dict[int, float] | None = None) -> str:
    head = (
        f"aim: 2 processes in disjoint directories >= {AIM_TWO:g}x one process "
        f"(goal {AIM_TWO_GOAL:g}x): "
    )
    found = []
    for prefill in sorted({c.prefill for c in results}):
        case = find(results, prefill, 2, "disjoint")
        if case is not None and find(results, prefill, 1):
            found.append(
                (prefill, scaling(results, case, "daxfs"), scaling(results, case, "kernel"))
            )
    if not found:
        return head + "not measured (needs --procs 1,2 and --layout disjoint)"
    ok = all(d is not None and d >= AIM_TWO for _, d, _ in found)
    goal = all(d is not None and d >= AIM_TWO_GOAL for _, d, _ in found)
    detail = "; ".join(
        f"{p:,} files: daxfs {ratio_cell(d)}x, kernel {ratio_cell(k)}x" for p, d, k in found
    )
    if ceiling and 2 in ceiling:
        detail += f"; CPU ceiling {ratio_cell(ceiling[2])}x"
    return head + met(ok) + (", goal met" if goal else "") + f" ({detail})"


def aim_prefill(results: Results) -> str:
    prefills = sorted({c.prefill for c in results})
    within = round(100 - AIM_PREFILL * 100)
    head = f"aim: a full pool within {within}% of an empty one, zero full rebuilds: "
    if len(prefills) < 2 or prefills[0] != 0:
        return head + "not measured (needs --prefill 0,N)"
    full = prefills[-1]
    found = []
    for procs in (1, 2):
        empty_case = find(results, 0, procs, "disjoint" if procs > 1 else None)
        full_case = find(results, full, procs, "disjoint" if procs > 1 else None)
        if empty_case and full_case:
            r = ratio_of(results[full_case]["daxfs"].rate(), results[empty_case]["daxfs"].rate())
            found.append((procs, r, results[full_case]["daxfs"].coherence.get("full_rebuilds", 0)))
    if not found:
        return head + "not measured (needs --procs 1 or 2)"
    ok = all(r is not None and r >= AIM_PREFILL and n == 0 for _, r, n in found)
    detail = "; ".join(
        f"{p} process{'es' if p > 1 else ''}: {ratio_cell(r)}x, {n:,} full rebuilds"
        for p, r, n in found
    )
    return head + met(ok) + f" ({full:,} files against 0: {detail})"


def aim_shared(results: Results) -> str:
    head = f"aim: one shared directory >= {AIM_SHARED:g}x disjoint directories: "
    found = []
    for case in results:
        if case.layout == "shared" and case.procs > 1:
            other = find(results, case.prefill, case.procs, "disjoint")
            if other is not None:
                r = ratio_of(results[case]["daxfs"].rate(), results[other]["daxfs"].rate())
                found.append((case, r))
    if not found:
        return head + "not measured (needs --layout disjoint,shared and --procs above 1)"
    ok = all(r is not None and r >= AIM_SHARED for _, r in found)
    detail = "; ".join(
        f"{c.prefill:,} files, {c.procs} processes: {ratio_cell(r)}x" for c, r in found
    )
    return head + met(ok) + f" ({detail})"


# --------------------------------------------------------------------------
# a real client: dask + zarr
# --------------------------------------------------------------------------
def dask_available() -> bool:
    try:
        import dask.array  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        return False
    return True


def fill_block(block_info=None):
    """A chunk of the benchmark array: chunk k (row-major) holds k + 1, so
    the sum is known and no chunk equals the fill value (zarr would skip it)."""
    import numpy as np

    info = block_info[None]
    (row, col), (_, cols) = info["chunk-location"], info["num-chunks"]
    return np.full(info["chunk-shape"], float(row * cols + col + 1))


def warm_worker(directory: str, seconds: float) -> int:
    """Import what the tasks need and start zarr's machinery with a small
    array on LocalStore (untimed); linger so that every worker gets one."""
    import numpy as np
    import zarr
    from zarr.storage import LocalStore

    import daxfs.zarr  # noqa: F401

    z = zarr.create_array(
        LocalStore(os.path.join(directory, str(os.getpid()))),
        shape=(64,),
        chunks=(16,),
        dtype="f8",
        compressors=None,
    )
    z[:] = np.arange(64.0)
    if z[:].sum() != 2016:
        raise RuntimeError("share benchmark: zarr warm-up read back wrong")
    time.sleep(seconds)
    return os.getpid()


def worker_rebuilds(pool: str, seconds: float) -> tuple[int, int]:
    """(pid, full rebuilds) of this worker's shared mount of ``pool``."""
    from ..mounts import MOUNTS

    time.sleep(seconds)
    lease = MOUNTS.acquire(pool)
    try:
        return os.getpid(), lease.fs.coherence["full_rebuilds"]
    finally:
        lease.release()


ROW_BYTES = 1024 * 8  # a row of the array: 1,024 float64


def dask_geometry(args) -> tuple[tuple[int, int], tuple[int, int]]:
    import daxfs

    size, chunk = daxfs.parse_size(args.dask_size), daxfs.parse_size(args.dask_chunk)
    if chunk < ROW_BYTES or chunk % ROW_BYTES or size % chunk or size < chunk:
        raise SystemExit("--dask-chunk: a multiple of 8 KiB dividing --dask-size")
    return (size // ROW_BYTES, 1024), (chunk // ROW_BYTES, 1024)


@dataclass
class DaskTimes:
    write: float
    read: float


def run_dask(work: str, args) -> dict[str, object]:
    """Write and read the array through both stores, best of --repeat."""
    from concurrent.futures import ProcessPoolExecutor

    shape, chunks = dask_geometry(args)
    best: dict[str, DaskTimes] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.dask_workers, mp_context=ctx) as ex:
        warm = os.path.join(work, "dask-warm")
        pids = set(ex.map(warm_worker, [warm] * args.dask_workers, [0.5] * args.dask_workers))
        shutil.rmtree(warm, ignore_errors=True)
        last_pool = ""
        for r in range(args.repeat):
            for side in ("local", "daxfs") if r % 2 == 0 else ("daxfs", "local"):
                where = os.path.join(work, f"dask-{side}-{r}")
                t = dask_round(side, where, shape, chunks, ex)
                if side == "daxfs":
                    last_pool = where
                else:
                    shutil.rmtree(where, ignore_errors=True)
                b = best.get(side)
                best[side] = DaskTimes(
                    min(t.write, b.write) if b else t.write, min(t.read, b.read) if b else t.read
                )
        rebuilds = dict(ex.map(worker_rebuilds, [last_pool] * len(pids), [0.3] * len(pids)))
    return {
        "shape": shape,
        "chunks": chunks,
        "workers": args.dask_workers,
        "times": {side: asdict(t) for side, t in best.items()},
        "worker_rebuilds_last_round": rebuilds,
    }


def dask_round(side: str, where: str, shape, chunks, ex) -> DaskTimes:
    """One write and read of a fresh array at ``where`` (a directory, or a
    pool file made here); checks the sum."""
    import dask
    import dask.array as da
    import zarr
    from zarr.storage import LocalStore

    import daxfs
    from daxfs.zarr import DaxStore

    fs = None
    if side == "daxfs":
        size = shape[0] * shape[1] * 8
        daxfs.mkfs(where, max(256 * MiB, next_pow2(2 * size + 64 * MiB)))
        fs = daxfs.mount(where)  # the parent's: makes the array, then idles
        store = DaxStore(fs, root="/dask")
    else:
        store = LocalStore(where)
    try:
        z = zarr.create_array(
            store, name="x", shape=shape, chunks=chunks, dtype="f8", compressors=None
        )
        x = da.map_blocks(fill_block, dtype="f8", chunks=da.core.normalize_chunks(chunks, shape))
        on_workers = {"scheduler": "processes", "pool": ex}
        t0 = time.perf_counter()
        da.store(x, z, lock=False, **on_workers)
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = dask.compute(da.from_zarr(z).sum(), **on_workers)[0]
        read = time.perf_counter() - t0
    finally:
        if fs is not None:
            fs.close()
    n = (shape[0] // chunks[0]) * (shape[1] // chunks[1])
    if total != n * (n + 1) // 2 * chunks[0] * chunks[1]:
        raise RuntimeError(f"share benchmark, dask on {side}: wrong sum {total}")
    return DaskTimes(write, read)


def dask_report(args, dask: dict[str, object], env: str) -> Report:
    times = dask["times"]
    assert isinstance(times, dict)
    local, dax = times["local"], times["daxfs"]
    size = daxfs_size(args.dask_size)
    rows, speed = [], {}
    for step, label in (("write", f"write {size} (da.store)"), ("read", "read back + sum")):
        speed[step] = ratio_of(local[step], dax[step])
        rows.append(
            [label, fmt_seconds(local[step]), fmt_seconds(dax[step]), ratio_cell(speed[step])]
        )
    ok = all(s is not None and s >= AIM_DASK for s in speed.values())
    rebuilds = dask["worker_rebuilds_last_round"]
    assert isinstance(rebuilds, dict)
    verdict = [
        f"aim: dask + zarr through DaxStore >= {AIM_DASK:g}x LocalStore on tmpfs, write and "
        f"read: {met(ok)} (write {ratio_cell(speed['write'])}x, read {ratio_cell(speed['read'])}x)"
    ]
    notes = [
        f"a {size} float64 array {tuple(dask['shape'])} in {args.dask_chunk} chunks "
        f"{tuple(dask['chunks'])}, uncompressed; dask's multiprocessing scheduler on "
        f"{args.dask_workers} spawned workers (started before timing); best of {args.repeat}",
        "speed = LocalStore time / DaxStore time (higher is better); full rebuilds in the "
        "workers' mounts, last round: " + (", ".join(f"{n:,}" for n in rebuilds.values()) or "-"),
    ]
    return Report(
        title="dask + zarr: DaxStore vs LocalStore",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["step", "LocalStore (tmpfs)", "DaxStore", "speed DaxStore/LocalStore"],
        rows=rows,
        verdict=verdict,
        data=dask,
    )


def daxfs_size(text: str) -> str:
    import daxfs

    n = daxfs.parse_size(text)
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"
