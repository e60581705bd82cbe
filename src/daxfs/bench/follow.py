"""follow: how soon a follower sees a writer's commits, and how fast it reads.

A follower (daxfs.mount(pool, follow=True), follow.py) takes no kernel
lock: it tails the journal before each call and checks the live word
after.  Two measurements, each in one run beside its baseline:

    delay        a writer process creates --commits files, one every
                 --period microseconds; a follower process polls for each
                 name (fs.exists in a loop) and notes when it first sees
                 it.  Delay = that moment minus the moment the writer's
                 create returned (CLOCK_MONOTONIC, shared by processes;
                 negative: seen before the writer's call returned, which
                 happens, as the commit is published inside it).
                 Beside it, famfs's model: a follower that replays the
                 whole log from its start at every refresh (famfs clients
                 see new files only when `famfs logplay` replays the
                 metadata log, whole, each time), here a Follower whose
                 catching up always drops its caches and reads every
                 record of the log's current generation.  famfs's log is
                 never trimmed; daxfs's is, at each checkpoint, so this
                 model flatters famfs as the log grows.
    reads        stat + open + read 4 KiB + close of random files among
                 --files, for --seconds per round, through a follower and
                 through an ordinary read-only mount (flock, OFD pins), in
                 this process, rounds interleaved, best of --rounds; once
                 with the pool idle and once while a writer process
                 churns (creates, appends and unlinks in another
                 directory, as fast as it can).

Aims (issue 18): a commit visible to a follower in under 1 ms (median);
follower reads at least 0.8x of a read-only mount's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from ..follow import Follower
from . import (
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
    median,
)

HELP = "how soon a follower (no kernel locks) sees commits; its reads beside a read-only mount"
DESCRIPTION = __doc__


class ReplayingFollower(Follower):
    """famfs's model: every refresh replays the whole log (module doc)."""

    def _catch_up(self) -> None:
        if self.journal.peek() != self._seen_seq:
            self._reload()  # (every cache dropped, and the whole log read again)
            self._seen_seq = -1
        super()._catch_up()


def follower(pool: str, model: str):
    from ..follow import mount_follower

    return mount_follower(pool, cls=ReplayingFollower if model == "famfs" else Follower)


WATCHER = textwrap.dedent(r"""
    import json, sys, time
    from daxfs.bench.follow import follower

    pool, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fs = follower(pool, model)
    print("ready", flush=True)
    seen, clock = [], time.monotonic_ns
    for i in range(n):
        name = f"/v/f{i}"
        while not fs.exists(name):
            pass
        seen.append(clock())
    print(json.dumps({"seen": seen, "coherence": dict(fs.coherence)}), flush=True)
""")

PACED_WRITER = textwrap.dedent(r"""
    import json, sys, time
    import daxfs

    pool, n, period_ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fs = daxfs.mount(pool)
    print("ready", flush=True)
    sys.stdin.readline()
    done, clock = [], time.monotonic_ns
    due = clock()
    for i in range(n):
        due += period_ns
        while clock() < due:
            pass
        f = fs.open(f"/v/f{i}", "wb")
        done.append(clock())
        f.close()
    print(json.dumps(done), flush=True)
    fs.close()
""")

CHURNER = textwrap.dedent(r"""
    import os, random, sys
    import daxfs

    pool = sys.argv[1]
    fs = daxfs.mount(pool)
    rng, live, i = random.Random(1), [], 0
    block = os.urandom(4096)
    print("ready", flush=True)
    while True:
        name = f"/churn/c{i}"
        with fs.open(name, "wb") as f:
            f.write(block)
        live.append(name)
        i += 1
        if rng.random() < 0.3:
            with fs.open(rng.choice(live), "ab") as f:
                f.write(block)
        if len(live) > 200:
            fs.unlink(live.pop(rng.randrange(len(live))))
""")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--commits", type=int, default=2000, help="files the paced writer makes (2000)")
    p.add_argument("--period", type=int, default=500, help="µs between its creates (500)")
    p.add_argument("--files", type=int, default=1000, help="4 KiB files read (1000)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of a read round (1.0)")
    p.add_argument("--rounds", type=int, default=3, help="read rounds per side; best kept (3)")
    add_pool_dir_argument(p, "directory for the pool file (tmpfs: a follower needs shared memory)")
    add_output_arguments(p)


def _child(script: str, *argv: str, stdin: bool = False) -> subprocess.Popen:
    kid = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    if kid.stdout.readline().strip() != "ready":
        kid.kill()
        raise SystemExit(f"a benchmark child failed to start: {script.splitlines()[1]}")
    return kid


def measure_delay(pool: str, model: str, commits: int, period_us: int) -> dict[str, object]:
    """The paced writer against one follower of ``model``: delays in µs."""
    import daxfs

    with daxfs.mount(pool) as fs:
        if fs.exists("/v"):
            for name in fs.listdir("/v"):
                fs.unlink("/v/" + name)
        else:
            fs.mkdir("/v")
    writer = _child(PACED_WRITER, pool, str(commits), str(period_us * 1000), stdin=True)
    watcher = _child(WATCHER, pool, model, str(commits))
    writer.stdin.write("go\n")
    writer.stdin.flush()
    done = json.loads(writer.stdout.readline())
    got = json.loads(watcher.stdout.readline())
    writer.wait()
    watcher.wait()
    delays = sorted((s - d) / 1e3 for s, d in zip(got["seen"], done, strict=True))
    return {
        "median_us": median(delays),
        "p99_us": delays[min(len(delays) - 1, int(0.99 * len(delays)))],
        "max_us": delays[-1],
        "coherence": got["coherence"],
    }


def _read_round(fs, names: list[str], seconds: float) -> float:
    """stat + open + read 4 KiB + close of random ``names`` for ``seconds``: calls/s."""
    rng, buf, n = random.Random(7), bytearray(4 * KiB), 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        for _ in range(100):
            name = names[rng.randrange(len(names))]
            fs.stat(name)
            with fs.open(name, "rb", buffering=0) as f:
                f.readinto(buf)
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def measure_reads(pool: str, files: int, seconds: float, rounds: int, churn: bool) -> dict:
    import daxfs

    names = [f"/data/f{i}" for i in range(files)]
    with daxfs.mount(pool) as fs:
        if not fs.exists("/data"):
            fs.mkdir("/data")
            fs.mkdir("/churn")
            block = os.urandom(4 * KiB)
            for name in names:
                with fs.open(name, "wb") as f:
                    f.write(block)
    sides = {
        "follower": follower(pool, "daxfs"),
        "read-only mount": daxfs.mount(pool, readonly=True),
    }
    churner = _child(CHURNER, pool) if churn else None
    best = dict.fromkeys(sides, 0.0)
    try:
        for _ in range(rounds):
            for side, fs in sides.items():
                best[side] = max(best[side], _read_round(fs, names, seconds))
        coherence = {side: dict(fs.coherence) for side, fs in sides.items()}
    finally:
        if churner is not None:
            churner.kill()
            churner.wait()
        for fs in sides.values():
            fs.close()
    return {"best_calls_per_s": best, "coherence": coherence}


def main(args: argparse.Namespace) -> int:
    import daxfs

    if min(args.commits, args.period, args.files, args.rounds) < 1 or args.seconds <= 0:
        raise SystemExit("--commits, --period, --files, --rounds must be >= 1, --seconds > 0")
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-follow-", dir=pool_dir)
    try:
        pool = os.path.join(work, "pool")
        daxfs.mkfs(pool, 256 * MiB, force=True)
        delay = {m: measure_delay(pool, m, args.commits, args.period) for m in ("daxfs", "famfs")}
        reads = {
            state: measure_reads(pool, args.files, args.seconds, args.rounds, state == "churning")
            for state in ("idle", "churning")
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit_all([delay_report(args, delay, pool_dir), reads_report(args, reads, pool_dir)],
             args.format, args.json)  # fmt: skip
    return 0


def _us(x: float) -> str:
    return f"{x:,.0f} µs" if abs(x) >= 10 else f"{x:.1f} µs"


def delay_report(args, delay: dict, pool_dir: str) -> Report:
    rows = [
        [
            "daxfs follower (tails the journal)"
            if m == "daxfs"
            else "famfs model (replays the log)",
            _us(d["median_us"]),
            _us(d["p99_us"]),
            _us(d["max_us"]),
        ]
        for m, d in delay.items()
    ]
    ours, theirs = delay["daxfs"]["median_us"], delay["famfs"]["median_us"]
    verdict = [
        f"daxfs follower: median {_us(ours)} from a commit to its follower seeing it "
        f"(aim: under 1,000 µs); famfs's model {_us(theirs)}"
    ]
    return Report(
        title="follower: commit-to-visible delay",
        command=command_line(args.argv),
        env=environment(pool_dir),
        notes=[
            f"a writer process creates {args.commits:,} files, one every {args.period} µs; a "
            "follower process polls each name; delay = first seen - writer's create returned",
        ],
        columns=["follower", "median", "p99", "max"],
        rows=rows,
        verdict=verdict,
        data=delay,
    )


def reads_report(args, reads: dict, pool_dir: str) -> Report:
    rows, verdict = [], []
    for state, r in reads.items():
        best = r["best_calls_per_s"]
        ratio = best["follower"] / best["read-only mount"]
        rows.append([state, fmt_rate(best["follower"]), fmt_rate(best["read-only mount"]),
                     fmt_ratio(ratio)])  # fmt: skip
        verdict.append(f"{state}: a follower reads at {ratio:.2f}x a read-only mount (aim: 0.8x)")
    return Report(
        title="follower: stat + open + read 4 KiB + close",
        command=command_line(args.argv),
        env=environment(pool_dir),
        notes=[
            f"random files among {args.files:,} of 4 KiB, calls/s (a call: the four steps), "
            f"best of {args.rounds} rounds of {args.seconds:g} s, sides interleaved; churning: "
            "a writer process creates, appends and unlinks in another directory meanwhile",
        ],
        columns=["pool", "follower", "read-only mount", "follower / read-only"],
        rows=rows,
        verdict=verdict,
        data=reads,
    )
