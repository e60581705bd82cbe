"""hostile: what a crafted pool costs to mount and check, beside a clean one.

For each size in --sizes and each attack of daxfs.crafted whose cost grows
with the pool (Attack.scales: a journal record that a naive replay checks
in quadratic time, extent chains through the whole pool, an inode table
full of orphans), two pool files of that size are made in --pool-dir
(sparse files; tmpfs, /dev/shm, by default): the crafted pool, and a clean
one (mkfs and one small file).  Then, on a fresh copy of each pool (a
mount may replay the journal or free orphans, and the copy is not timed):

    mount ro   daxfs.mount(pool, readonly=True) + close (a pool with a
               journal to replay is recovered first, as mount does)
    mount rw   daxfs.mount(pool) + close (replays, frees orphans)
    check      daxfs.check(pool): fsck without repair

Rounds alternate between the clean and the crafted pool, so both see the
same machine noise; each step's best of --repeat is kept, and the ratio is
crafted / clean.  A step that runs past --limit seconds is stopped and
reported as such (the quadratic code this benchmark was written against
took 30.7 s for the 64 MiB journal and passed a 60 s limit at 256 MiB; the
audit extrapolated about two hours at 1 GiB); a step that fails reports its
error.

The aim (issue 12): every step on every crafted pool ends in seconds at
any size, growing no faster than the pool.  The ratios grow with the pool
(a crafted pool's structure fills it, a clean one holds one file), so the
figure to read is the growth exponent printed at the end: 1 is linear, 2
quadratic.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

from . import (
    GiB,
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    check_pool_dir,
    command_line,
    environment,
    fmt_ratio,
    fmt_seconds,
)

HELP = "mount and check of crafted hostile pools (quadratic journal, long chains, orphans) vs clean"
DESCRIPTION = __doc__
AIM_SECONDS = 10.0
DEFAULT_SIZES = "64M,256M,1G"
STEPS = ("mount ro", "mount rw", "check")


class StepTimeout(Exception):
    """A step ran past --limit (raised by SIGALRM between bytecodes)."""


@dataclass
class Timing:
    """The best time of a step, or why there is none."""

    seconds: float | None = None
    failure: str | None = None  # "> 120 s", or the error

    def cell(self) -> str:
        return self.failure if self.seconds is None else fmt_seconds(self.seconds)


def run_step(step: str, pool: str, limit: float) -> Timing:
    """Time one step on ``pool``; stopped at ``limit`` seconds."""
    import daxfs

    def on_alarm(_sig, _frame):
        raise StepTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        if step == "check":
            daxfs.check(pool)
        else:
            daxfs.mount(pool, readonly=step == "mount ro").close()
        return Timing(time.perf_counter() - t0)
    except StepTimeout:
        return Timing(failure=f"> {limit:g} s")
    except OSError as e:
        return Timing(failure=f"error: {e.strerror or e}"[:60])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def best(a: Timing, b: Timing) -> Timing:
    """The faster of two timings; a failure only when both failed (the later one)."""
    if a.seconds is None:
        return b
    if b.seconds is None:
        return a
    return a if a.seconds <= b.seconds else b


def measure(pristine: str, work: str, limit: float) -> dict[str, Timing]:
    """One round: each step on its own fresh copy of ``pristine``."""
    from ..crafted import copy_pool

    out = {}
    for step in STEPS:
        copy_pool(pristine, work)
        try:
            out[step] = run_step(step, work, limit)
        finally:
            os.unlink(work)
    return out


def clean_pool(path: str, size: int) -> None:
    import daxfs

    daxfs.mkfs(path, size, force=True)
    with daxfs.mount(path) as fs, fs.open("/f", "wb") as f:
        f.write(b"a clean pool\n")


def compare(attack: str, size: int, work: str, args) -> dict[str, tuple[Timing, Timing]]:
    """{step: (clean, crafted)} for ``attack`` at ``size``, best of --repeat."""
    from .. import crafted

    clean, hostile = os.path.join(work, "clean"), os.path.join(work, "crafted")
    clean_pool(clean, size)
    crafted.build(attack, hostile, size, os.path.join(work, "outside"))
    results = {step: (Timing(failure="-"), Timing(failure="-")) for step in STEPS}
    try:
        for i in range(args.repeat):
            order = [(0, clean), (1, hostile)] if i % 2 == 0 else [(1, hostile), (0, clean)]
            for side, pristine in order:
                for step, t in measure(pristine, os.path.join(work, "copy"), args.limit).items():
                    pair = list(results[step])
                    pair[side] = best(pair[side], t)
                    results[step] = (pair[0], pair[1])
            if all(results[s][1].seconds is None for s in STEPS):
                break  # nothing of the crafted pool ends in time: once is enough
    finally:
        os.unlink(clean)
        os.unlink(hostile)
    return results


def parse_sizes(text: str) -> list[int]:
    import daxfs

    sizes = [daxfs.parse_size(s) for s in text.split(",") if s.strip()]
    if not sizes:
        raise SystemExit("--sizes needs at least one size, e.g. 64M,256M")
    return sizes


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..crafted import ATTACKS

    scaling = [name for name, a in ATTACKS.items() if a.scales]
    p.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"pool sizes, comma-separated ({DEFAULT_SIZES}; against quadratic code a "
        "1 GiB step runs for hours: see --limit)",
    )
    p.add_argument(
        "--attacks",
        default=",".join(scaling),
        help=f"crafted pools to time, comma-separated ({','.join(scaling)})",
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds per pool; best kept (3)")
    p.add_argument(
        "--limit", type=float, default=120.0, help="seconds before a step is stopped (120)"
    )
    add_pool_dir_argument(p, "directory for the pool files")
    add_output_arguments(p)


def main(args: argparse.Namespace) -> int:
    from ..crafted import ATTACKS

    sizes = parse_sizes(args.sizes)
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or args.repeat < 1 or args.limit <= 0:
        raise SystemExit(
            f"unknown attack(s) {unknown}" if unknown else "--repeat >= 1, --limit > 0"
        )
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-hostile-", dir=pool_dir)
    table: dict[tuple[str, int], dict[str, tuple[Timing, Timing]]] = {}
    try:
        for size in sizes:
            for attack in attacks:
                print(f"{attack} at {fmt_size(size)} ...", file=sys.stderr, flush=True)
                table[(attack, size)] = compare(attack, size, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    make_report(args, sizes, attacks, table, environment(pool_dir)).emit(args.format, args.json)
    return 0


def fmt_size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def ratio(clean: Timing, crafted: Timing) -> float | None:
    if clean.seconds is None or crafted.seconds is None or clean.seconds <= 0:
        return None
    return crafted.seconds / clean.seconds


GROWTH_FLOOR = 0.01  # seconds: shorter crafted times are too noisy to fit an exponent to


def steepest_growth(sizes, attacks, table) -> tuple[float, str] | None:
    """The largest k with time(b) / time(a) = (b / a)^k over consecutive sizes
    (crafted side, steps that took at least GROWTH_FLOOR), and where."""
    steepest = None
    for attack in attacks:
        for a, b in itertools.pairwise(sizes):
            for step in STEPS:
                ta, tb = table[(attack, a)][step][1].seconds, table[(attack, b)][step][1].seconds
                if ta is None or tb is None or min(ta, tb) < GROWTH_FLOOR or b <= a:
                    continue
                k = math.log(tb / ta) / math.log(b / a)
                label = f"{attack} {step}, {fmt_size(a)} -> {fmt_size(b)}"
                if steepest is None or k > steepest[0]:
                    steepest = (k, label)
    return steepest


def make_report(args, sizes, attacks, table, env: str) -> Report:
    rows, data = [], {}
    worst: tuple[float, str] = (0.0, "")
    late: list[str] = []
    for attack in attacks:
        for size in sizes:
            for step, (clean, hostile) in table[(attack, size)].items():
                label = f"{attack} {fmt_size(size)}: {step}"
                r = ratio(clean, hostile)
                rows.append([label, clean.cell(), hostile.cell(), fmt_ratio(r)])
                data[label] = {
                    "clean": clean.seconds,
                    "crafted": hostile.seconds,
                    "crafted_failure": hostile.failure,
                    "ratio": r,
                }
                if hostile.seconds is None and hostile.failure.startswith(">"):
                    late.append(label)
                elif hostile.seconds is not None:
                    worst = max(worst, (hostile.seconds, label))
    met = not late and worst[0] < AIM_SECONDS
    verdict = [
        f"aim: every step on every crafted pool ends within {AIM_SECONDS:g} s: "
        + ("met" if met else "not met")
        + (f" (slowest: {worst[1]}, {fmt_seconds(worst[0])})" if worst[1] else "")
        + (f"; stopped at {args.limit:g} s: {', '.join(late)}" if late else "")
    ]
    growth = steepest_growth(sizes, attacks, table)
    if growth is not None:
        k, label = growth
        verdict.append(
            f"growth: crafted time ~ size^k between the sizes; steepest k = {k:.2f} ({label}); "
            "1 is linear, 2 quadratic"
        )
    notes = [
        f"pools of {', '.join(fmt_size(s) for s in sizes)} on {args.pool_dir} (sparse files)",
        f"wall-clock seconds, best of {args.repeat} rounds alternating clean and crafted; "
        "each step on a fresh copy of the pool; ratio = crafted / clean",
    ]
    return Report(
        title="daxfs on crafted hostile pools",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["pool: step", "clean", "crafted", "ratio"],
        rows=rows,
        verdict=verdict,
        data={"sizes": sizes, "attacks": attacks, "steps": data},
    )
