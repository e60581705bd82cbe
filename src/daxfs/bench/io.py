"""io: reads and writes through an open file, daxfs against the kernel on
tmpfs and against memcpy (issue 17's per-call path).

One file of --size bytes (random data) on each side, opened once, outside
the timing, with buffering=0:

    kernel  builtin open(p, "r+b", buffering=0) on a file in --pool-dir
            (tmpfs: /dev/shm by default): a read() or write() system call
            per call
    daxfs   fs.open(p, "r+b", buffering=0) on a pool file in that same
            directory
    memcpy  no file at all: the same loop copying between a buffer and a
            bytearray of the file's bytes with memoryview slice assignment
            (the ceiling: what a call costs without any file system)

Phases, each a loop of calls moving sequentially through the file (back to
its start at its end), the same code on every side:

    read 4K    readinto of a 4 KiB buffer                  (--ops calls)
    read 1M    readinto of a 1 MiB buffer                  (--mib MiB)
    write 4K   write of 4 KiB over the file's own bytes    (--ops calls)
    write 1M   write of 1 MiB over the file's own bytes    (--mib MiB)
    append     a new file opened "wb" with the default buffering, written
               in 64 KiB writes to --size (or --mib MiB, if less), and
               closed: a stream written out (pickle, numpy's tofile, a
               log); memcpy writes the same bytes into its bytearray

The in-place writes go over existing bytes (the file keeps its size: no
allocation, as a database page write or an in-place update); append's
file is new each round (the last round's removed first, untimed).  A
round runs every phase on one side; rounds alternate between the sides
so that each sees the same machine noise, and each phase's best round is
reported.  After the rounds the files are read back and compared with
what was written.

The aims (issue 17): 4 KiB readinto at least 0.5x of the kernel's; 1 MiB
readinto at least 0.9x of memcpy, and ahead of the kernel's read().
--profile runs one more daxfs round under cProfile and prints where the
time of the phase furthest from its aim goes (or of the one named).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import (
    KiB,
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    add_profile_arguments,
    check_pool_dir,
    command_line,
    environment,
    fmt_rate,
    fmt_ratio,
    print_profile,
    profiled_phases,
    timed,
)

HELP = (
    "reads and writes through an open file (4 KiB, 1 MiB, 64 KiB appends), "
    "daxfs vs kernel tmpfs vs memcpy"
)
DESCRIPTION = __doc__
SIDES = ("kernel", "daxfs", "memcpy")
# (phase, label, bytes per call, kind: read, write in place or append)
PHASES: list[tuple[str, str, int, str]] = [
    ("read4k", "readinto 4 KiB", 4 * KiB, "read"),
    ("read1m", "readinto 1 MiB", MiB, "read"),
    ("write4k", "write 4 KiB in place", 4 * KiB, "write"),
    ("write1m", "write 1 MiB in place", MiB, "write"),
    ("append", "write 64 KiB appending, new file", 64 * KiB, "append"),
]
AIM_READ4K_VS_KERNEL = 0.5
AIM_READ1M_VS_MEMCPY = 0.9


@dataclass
class Side:
    """Where the calls go: an open file, or (memcpy) a bytearray; and
    ``new_file``, ``fresh``: a new file opened for appending, and the last
    one removed."""

    name: str
    readinto: Callable[[memoryview], object]
    write: Callable[[memoryview], object]
    seek: Callable[[int], object]
    new_file: Callable[[], Any]
    fresh: Callable[[], object]


class MemoryFile:
    """The memcpy side: a file's calls as slice assignments on a bytearray."""

    def __init__(self, data: bytearray):
        self.mv = memoryview(data)
        self.pos = 0

    def readinto(self, buf: memoryview) -> int:
        n = len(buf)
        buf[:] = self.mv[self.pos : self.pos + n]
        self.pos += n
        return n

    def write(self, buf: memoryview) -> int:
        n = len(buf)
        self.mv[self.pos : self.pos + n] = buf
        self.pos += n
        return n

    def seek(self, pos: int) -> int:
        self.pos = pos
        return pos

    def __enter__(self) -> MemoryFile:  # (the append phase's "new file")
        return self

    def __exit__(self, *exc) -> None:
        pass


# --------------------------------------------------------------------------
# the phases: identical code for every side
# --------------------------------------------------------------------------
def run_phase(s: Side, size: int, chunk: int, calls: int, kind: str, buf: memoryview) -> int:
    """``calls`` sequential calls of ``chunk`` bytes, wrapping at ``size``;
    appending, ``calls`` writes to a new file."""
    if kind == "append":
        with s.new_file() as f:
            write = f.write
            for _ in range(calls):
                write(buf)
        return calls
    op = s.write if kind == "write" else s.readinto
    seek, per_pass = s.seek, size // chunk
    done = 0
    while done < calls:
        seek(0)
        for _ in range(min(per_pass, calls - done)):
            op(buf)
        done += min(per_pass, calls - done)
    return calls


def calls_of(phase: str, phase_bytes: int, size: int, args) -> int:
    if phase == "append":
        return min(size, args.mib * MiB) // phase_bytes
    return args.ops if phase_bytes < MiB else args.mib


def run_round(
    s: Side, size: int, args, bufs: dict[int, memoryview], profilers=None
) -> dict[str, tuple[int, float]]:
    """Every phase once on side ``s``: {phase: (calls, seconds)}.  With
    ``profilers``, each phase runs under its profiler (its time is then moot)."""
    out = {}
    for phase, _label, chunk, kind in PHASES:
        calls = calls_of(phase, chunk, size, args)
        if kind == "append":
            s.fresh()

        def fn(chunk=chunk, calls=calls, kind=kind) -> int:
            return run_phase(s, size, chunk, calls, kind, bufs[chunk])

        if profilers is not None:
            out[phase] = (profilers[phase].runcall(fn), 1.0)
        else:
            out[phase] = timed(fn)
    return out


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="256M", help="file size on each side (256M)")
    p.add_argument("--ops", type=int, default=200_000, help="calls per 4 KiB phase (200000)")
    p.add_argument("--mib", type=int, default=2048, help="MiB moved per 1 MiB phase (2048)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per side; best is kept (3)")
    add_pool_dir_argument(p, "directory for the kernel's file and the pool file")
    add_profile_arguments(p, [name for name, *_ in PHASES], "daxfs/kernel ratio")
    add_output_arguments(p)


def main(args: argparse.Namespace) -> int:
    import daxfs

    size = daxfs.parse_size(args.size)
    if size < MiB or size % MiB or args.ops < 1 or args.mib < 1 or args.rounds < 1:
        raise SystemExit("--size must be a whole number of MiB; --ops, --mib, --rounds >= 1")
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-io-", dir=pool_dir)
    data = bytearray(os.urandom(min(size, 64 * MiB))) * (size // min(size, 64 * MiB))
    pool_size = 3 * size + 64 * MiB  # (the file, the appended one, and room)
    fs = kfile = dfile = None
    try:
        kpath = os.path.join(work, "kernel")
        with open(kpath, "wb") as f:
            f.write(data)
        daxfs.mkfs(os.path.join(work, "pool"), pool_size, force=True)
        fs = daxfs.mount(os.path.join(work, "pool"))
        with fs.open("/io", "wb") as f:
            f.write(data)
        kfile = open(kpath, "r+b", buffering=0)  # noqa: SIM115 - closed below
        dfile = fs.open("/io", "r+b", buffering=0)
        memory = MemoryFile(bytearray(data))
        kappend = os.path.join(work, "kernel-appended")
        sides = {
            "kernel": Side(
                "kernel", kfile.readinto, kfile.write, kfile.seek,
                partial(open, kappend, "wb"), partial(_remove, os.unlink, kappend),
            ),
            "daxfs": Side(
                "daxfs", dfile.readinto, dfile.write, dfile.seek,
                partial(fs.open, "/appended", "wb"), partial(_remove, fs.unlink, "/appended"),
            ),
            "memcpy": Side(
                "memcpy", memory.readinto, memory.write, memory.seek,
                partial(MemoryFile, bytearray(size)), lambda: None,
            ),
        }  # fmt: skip
        # The buffers written are the file's own first bytes: the files keep their content.
        bufs = {chunk: memoryview(bytearray(data[:chunk])) for _p, _l, chunk, _w in PHASES}
        results: dict[str, list[dict[str, tuple[int, float]]]] = {s: [] for s in SIDES}
        for r in range(args.rounds):
            order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
            for name in order:
                results[name].append(run_round(sides[name], size, args, bufs))
        _check_contents(kfile, dfile, memory, bufs, size)
        appended = bytes(bufs[64 * KiB]) * calls_of("append", 64 * KiB, size, args)
        _check_appended(kappend, fs, appended)

        env = environment(pool_dir, fs.info()["durability"])
        report = make_report(args, results, env, size)
        report.emit(args.format, args.json)
        if args.profile:
            profile_round(sides["daxfs"], size, args, bufs, report)
    finally:
        for f in (kfile, dfile):
            if f is not None:
                f.close()
        if fs is not None:
            fs.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _check_contents(kfile, dfile, memory: MemoryFile, bufs, size: int) -> None:
    """Every side holds the same bytes: the pattern with each pass's first
    chunks written over by themselves (the same bytes)."""
    want = bytes(memory.mv[:size])
    for name, f in (("kernel", kfile), ("daxfs", dfile)):
        f.seek(0)
        got = f.read(size)
        if got != want:
            raise RuntimeError(f"io benchmark, {name} side: the file's bytes changed")


def _remove(unlink: Callable[[str], object], path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        unlink(path)


def _check_appended(kpath: str, fs, want: bytes) -> None:
    """Both appended files hold what was written to them."""
    with open(kpath, "rb") as f:
        kernel = f.read()
    for name, got in (("kernel", kernel), ("daxfs", fs.read_bytes("/appended"))):
        if got != want:
            raise RuntimeError(f"io benchmark, {name} side: the appended file's bytes differ")


def best_rates(rounds: list[dict[str, tuple[int, float]]]) -> dict[str, float]:
    """Bytes per second, best round per phase."""
    per = {phase: chunk for phase, _l, chunk, _w in PHASES}
    return {ph: max(r[ph][0] * per[ph] / r[ph][1] for r in rounds) for ph in per}


def _fmt_bytes_rate(bps: float, chunk: int) -> str:
    if chunk < 64 * KiB:
        return f"{fmt_rate(bps / chunk)} calls/s"
    return f"{bps / 1e9:.2f} GB/s"


def make_report(args, results, env: str, size: int) -> Report:
    best = {side: best_rates(results[side]) for side in SIDES}
    rows, vs_kernel, vs_memcpy = [], {}, {}
    for ph, label, chunk, _kind in PHASES:
        k, d, m = best["kernel"][ph], best["daxfs"][ph], best["memcpy"][ph]
        vs_kernel[ph], vs_memcpy[ph] = d / k, d / m
        rows.append(
            [label]
            + [_fmt_bytes_rate(best[side][ph], chunk) for side in SIDES]
            + [fmt_ratio(vs_kernel[ph]), fmt_ratio(vs_memcpy[ph])]
        )
    verdict = [
        f"aim: 4 KiB readinto daxfs/kernel >= {AIM_READ4K_VS_KERNEL}: "
        + _met(vs_kernel["read4k"] >= AIM_READ4K_VS_KERNEL, vs_kernel["read4k"]),
        f"aim: 1 MiB readinto daxfs/memcpy >= {AIM_READ1M_VS_MEMCPY}: "
        + _met(vs_memcpy["read1m"] >= AIM_READ1M_VS_MEMCPY, vs_memcpy["read1m"]),
        "aim: 1 MiB readinto ahead of the kernel's read(): "
        + _met(vs_kernel["read1m"] >= 1.0, vs_kernel["read1m"]),
    ]
    notes = [
        f"one file of {size // MiB} MiB per side, opened once with buffering=0; calls move "
        f"sequentially through it; kernel = builtin open on {args.pool_dir}, daxfs = fs.open "
        "on a pool file there, memcpy = memoryview slice assignment on a bytearray",
        f"best of {args.rounds} rounds (sides interleaved); {args.ops:,} calls per 4 KiB phase, "
        f"{args.mib:,} MiB per 1 MiB phase, {min(size, args.mib * MiB) // MiB:,} MiB appended; "
        "higher is better",
    ]
    raw = {
        side: [{ph: {"calls": c, "seconds": s} for ph, (c, s) in r.items()} for r in rounds]
        for side, rounds in results.items()
    }
    data = {
        "size": size,
        "rounds": args.rounds,
        "best_bytes_per_s": best,
        "ratio_vs_kernel": vs_kernel,
        "ratio_vs_memcpy": vs_memcpy,
        "raw": raw,
    }
    return Report(
        title=f"daxfs io benchmark ({size // MiB} MiB file)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["phase", "kernel", "daxfs", "memcpy", "daxfs/kernel", "daxfs/memcpy"],
        rows=rows,
        verdict=verdict,
        data=data,
    )


def _met(ok: bool, ratio: float) -> str:
    return f"{'met' if ok else 'not met'} ({ratio:.2f})"


def profile_round(dax: Side, size: int, args, bufs, report: Report) -> None:
    profilers = {ph: cProfile.Profile() for ph, *_ in PHASES}
    run_round(dax, size, args, bufs, profilers)
    ratios = report.data["ratio_vs_kernel"]
    assert isinstance(ratios, dict)
    for ph in profiled_phases(args.profile, ratios):
        title = f"daxfs {ph} (daxfs/kernel {ratios[ph]:.2f}), one extra round"
        print_profile(profilers[ph], title, args.profile_lines)
