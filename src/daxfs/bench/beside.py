"""beside: small files created beside a process writing large files.

Part of ``bench share`` (--beside, on by default).  One process creates
--beside-files files of 4 KiB (open "wb", write, close), timing each;
it does so alone, and then while another process writes files of
--beside-big (32 MiB by default, four names over and over) in one
write() each.  Both on a daxfs pool (each process mounting it) and
through ``os`` in a directory of --pool-dir, in the same run; best of
--repeat rounds.

What it shows: whether a writer's data copies hold the other process up.
Before issue 13's last round a large write ran whole under the pool's
exclusive lock, so each create beside it waited for a 32 MiB copy.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass

from . import MiB, Report, command_line

SMALL = 4096
# Rounds the large writer must have started before the creates are timed.
WARM_WRITES = 1


@dataclass
class Creates:
    rate: float  # creates/s
    p50: float  # seconds
    p99: float
    big_writes: int  # large files the writer finished meanwhile (0 alone)


def _opener(side: str, where: str):
    """(open, makedirs, close) for a side: a mount of the pool, or os."""
    if side == "daxfs":
        import daxfs

        fs = daxfs.mount(where)
        return fs.open, lambda p: fs.makedirs(p, exist_ok=True), fs.close
    root = where

    def makedirs(p: str) -> None:
        os.makedirs(root + p, exist_ok=True)

    return (lambda p, mode: open(root + p, mode)), makedirs, (lambda: None)


def big_writer(side: str, where: str, size: int, started, stop, done) -> None:
    op, makedirs, close = _opener(side, where)
    try:
        makedirs("/big")
        blob = os.urandom(1 << 20) * (size >> 20)
        k = 0
        while not stop.is_set():
            with op(f"/big/f{k % 4}", "wb") as f:
                f.write(blob)
            k += 1
            if k == WARM_WRITES:
                started.set()
        done.value = k
    finally:
        started.set()
        close()


def small_creator(side: str, where: str, n: int, results) -> None:
    op, makedirs, close = _opener(side, where)
    try:
        makedirs("/small")
        payload = b"s" * SMALL
        lat = []
        clock = time.perf_counter
        t0 = clock()
        for i in range(n):
            t = clock()
            with op(f"/small/f{i}", "wb") as f:
                f.write(payload)
            lat.append(clock() - t)
        elapsed = clock() - t0
        lat.sort()
        results.put((n / elapsed, lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)]))
    finally:
        close()


def fresh_target(side: str, work: str, pool_size: int) -> str:
    import daxfs

    where = os.path.join(work, f"beside-{side}")
    shutil.rmtree(where, ignore_errors=True)
    if os.path.exists(where):
        os.unlink(where)
    if side == "daxfs":
        daxfs.mkfs(where, pool_size)
    else:
        os.makedirs(where)
    return where


def run_once(ctx, side: str, work: str, args, beside: bool) -> Creates:
    big = args.beside_big
    where = fresh_target(side, work, max(args.pool_size, 8 * big))
    results = ctx.Queue()
    started, stop, done = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
    writer = None
    try:
        if beside:
            writer = ctx.Process(target=big_writer, args=(side, where, big, started, stop, done))
            writer.start()
            if not started.wait(timeout=args.limit):
                raise RuntimeError("share benchmark: the large writer did not start")
        creator = ctx.Process(target=small_creator, args=(side, where, args.beside_files, results))
        creator.start()
        rate, p50, p99 = results.get(timeout=args.limit)
        creator.join()
    finally:
        stop.set()
        if writer is not None:
            writer.join(timeout=args.limit)
        if side == "daxfs":
            os.unlink(where)
        else:
            shutil.rmtree(where, ignore_errors=True)
    return Creates(rate, p50, p99, done.value if beside else 0)


def run_beside(work: str, args) -> dict[str, dict[str, Creates]]:
    """{side: {"alone": best, "beside": best}}, best by rate of --repeat."""
    ctx = mp.get_context(args.start_method)
    out: dict[str, dict[str, Creates]] = {}
    for side in ("daxfs", "kernel"):
        out[side] = {}
        for case, beside in (("alone", False), ("beside", True)):
            runs = [run_once(ctx, side, work, args, beside) for _ in range(args.repeat)]
            out[side][case] = max(runs, key=lambda c: c.rate)
    return out


def beside_rows(found: dict[str, dict[str, Creates]]) -> list[list[str]]:
    rows = []
    for side, cases in found.items():
        alone, beside = cases["alone"], cases["beside"]
        rows.append(
            [
                side,
                f"{alone.rate:,.0f}",
                f"{beside.rate:,.0f}",
                f"{beside.rate / alone.rate:.2f}",
                f"{alone.p99 * 1e6:,.0f}",
                f"{beside.p99 * 1e6:,.0f}",
                f"{beside.big_writes:,}",
            ]
        )
    return rows


BESIDE_COLUMNS = [
    "side",
    "creates/s alone",
    "creates/s beside",
    "beside / alone",
    "p99 us alone",
    "p99 us beside",
    "large files written",
]


def beside_report(args, found: dict[str, dict[str, Creates]], env: str) -> Report:
    dax, kernel = (found[s]["beside"].rate / found[s]["alone"].rate for s in ("daxfs", "kernel"))
    size = f"{args.beside_big // MiB} MiB"
    notes = [
        f"one process creates {args.beside_files:,} files of 4 KiB (open, write, close; each "
        f"timed), alone and then beside another writing files of {size} in one write() each, "
        f"over and over; children by {args.start_method}; best of {args.repeat}",
        "beside / alone: the creator's rate with the large writer running against without",
    ]
    verdict = [
        f"beside a large writer: daxfs creates at {dax:.2f}x its rate alone (kernel {kernel:.2f}x);"
        " a large write's data is copied with no exclusive lock held"
    ]
    return Report(
        title="small files beside a large writer",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=BESIDE_COLUMNS,
        rows=beside_rows(found),
        verdict=verdict,
        data={side: {k: asdict(v) for k, v in cases.items()} for side, cases in found.items()},
    )
