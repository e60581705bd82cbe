"""daxfs.bench: benchmarks, run as ``python -m daxfs.bench NAME [options]``.

Each benchmark is a module of this package listed in BENCHMARKS, with

    HELP                 one line, shown in ``python -m daxfs.bench --help``
    DESCRIPTION          what is measured and how (the benchmark's --help)
    add_arguments(p)     its options, on an argparse (sub)parser
    main(args) -> int    run it; args also carries ``argv`` (the command line)

so adding one is a new module plus one line here.  The
helpers below are shared: timing, environment description, and output as a
Rich table plus a plain-text block meant to be pasted into a README.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

T = TypeVar("T")

BENCHMARKS: dict[str, str] = {
    "meta": "daxfs.bench.meta",
    "mount": "daxfs.bench.mount",
    "map": "daxfs.bench.map",
    "age": "daxfs.bench.age",
    "hostile": "daxfs.bench.hostile",
    "share": "daxfs.bench.share",
    "copy": "daxfs.bench.copy",
    "scale": "daxfs.bench.scale",
    "io": "daxfs.bench.io",
    "parquet": "daxfs.bench.parquet",
    "fuse": "daxfs.bench.fuse",
    "follow": "daxfs.bench.follow",
    "dirs": "daxfs.bench.dirs",
}

DEFAULT_POOL_DIR = "/dev/shm"

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------
def timed_command(argv: Sequence[str], cwd: str | None = None) -> float:
    """Seconds a whole command takes, start-up included (stdout discarded;
    a failure raises CalledProcessError)."""
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - t0


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and the seconds it took (a full collection first, so every
    measurement starts from the same heap; the collector stays enabled)."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def repeat_for(
    fn: Callable[[], object], min_seconds: float, min_calls: int = 3, max_calls: int = 100_000
) -> tuple[int, float]:
    """Call ``fn`` until ``min_seconds`` have passed (and at least ``min_calls``
    times); return (calls, seconds).  For operations too short to time once."""
    gc.collect()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if calls >= max_calls or (calls >= min_calls and elapsed >= min_seconds):
            return calls, elapsed


def keep_fastest(best: dict[tuple[str, str], float], side: str, phase: str, seconds: float) -> None:
    """Keep in ``best`` the shortest time seen for (side, phase)."""
    best[(side, phase)] = min(best.get((side, phase), float("inf")), seconds)


def seconds_by_side(best: dict[tuple[str, str], float]) -> dict[str, float]:
    """``best`` for a report's JSON: keys "side/phase"."""
    return {f"{side}/{phase}": s for (side, phase), s in best.items()}


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


# --------------------------------------------------------------------------
# what ran where
# --------------------------------------------------------------------------
def command_line(argv: Sequence[str]) -> str:
    return "python -m daxfs.bench " + shlex.join(argv)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(pool_dir: str, durability: str | None = None) -> str:
    """One line: versions, CPU, and what the pool directory is."""
    from .. import __version__
    from ..region import mount_of

    m = mount_of(pool_dir)
    where = f"{pool_dir} ({m.fstype}"
    if durability:
        where += f", durability {durability}"
    where += ")"
    return (
        f"daxfs {__version__}, Python {platform.python_version()}, "
        f"Linux {platform.release()}, {os.cpu_count()} CPU {cpu_model()}, pool dir {where}"
    )


def check_pool_dir(pool_dir: str) -> str:
    if not os.path.isdir(pool_dir):
        raise SystemExit(f"pool directory {pool_dir!r} does not exist (use --pool-dir)")
    return pool_dir


# --------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------
def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


@dataclass
class Report:
    """A titled table of rows, printed two ways; also dumpable as JSON."""

    title: str
    command: str
    env: str
    notes: list[str]
    columns: list[str]
    rows: list[list[str]]
    verdict: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)  # raw figures for --json

    def plain(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]

        def line(cells: Sequence[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return "  ".join([first, *rest]).rstrip()

        out = [f"$ {self.command}", f"# {self.env}"]
        out += [f"# {n}" for n in self.notes]
        out += ["", line(self.columns), line(["-" * w for w in widths])]
        out += [line(r) for r in self.rows]
        if self.verdict:
            out += [""] + self.verdict
        return "\n".join(out)

    def rich(self, console) -> None:
        from rich.table import Table

        table = Table(title=self.title, caption="\n".join(self.notes), caption_justify="left")
        for i, c in enumerate(self.columns):
            table.add_column(c, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for r in self.rows:
            table.add_row(*r)
        console.print(table)
        for v in self.verdict:
            console.print(v, highlight=False)

    def emit(self, fmt: str, json_path: str | None) -> None:
        if fmt in ("both", "rich"):
            from rich.console import Console

            console = Console()
            if not console.is_terminal:
                # To a file or a pipe Rich assumes 80 columns and cuts every
                # cell of a wide table short: give it the plain block's width.
                console = Console(width=max(len(line) for line in self.plain().splitlines()))
            self.rich(console)
        if fmt in ("both", "plain"):
            if fmt == "both":
                print("\nPlain text (for a README):\n")
            print(self.plain(), flush=True)
        if json_path:
            with open(json_path, "w") as f:
                json.dump(asdict(self), f, indent=2)
                f.write("\n")


def add_pool_dir_argument(p, holds: str) -> None:
    """--pool-dir, where the benchmark puts ``holds`` (tmpfs by default)."""
    p.add_argument("--pool-dir", default=DEFAULT_POOL_DIR, help=f"{holds} ({DEFAULT_POOL_DIR})")


def add_output_arguments(p) -> None:
    p.add_argument(
        "--format",
        choices=("both", "rich", "plain"),
        default="both",
        help="output: a Rich table, the plain-text block, or both (default)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")


def add_profile_arguments(p, phases: Sequence[str], ranked_by: str) -> None:
    """--profile [worst|PHASE|all] and --profile-lines, for a benchmark that
    reruns its daxfs phases under cProfile (profiled_phases picks them)."""
    p.add_argument(
        "--profile",
        nargs="?",
        const="worst",
        default=None,
        choices=("worst", *phases, "all"),
        help="after the timed rounds, run one more daxfs round under cProfile and "
        f"print the phase with the lowest {ranked_by} (or the one named, or all)",
    )
    p.add_argument("--profile-lines", type=int, default=15, help="profile entries shown (15)")


def profiled_phases(which: str, ratios: dict[str, float]) -> list[str]:
    """The phases --profile ``which`` names: all of them (in order), the one
    with the lowest ratio, or the one given."""
    if which == "all":
        return list(ratios)
    if which == "worst":
        return [min(ratios, key=ratios.__getitem__)]
    return [which]


def print_profile(prof, title: str, lines: int, stream=None) -> None:
    """The ``lines`` top entries of a cProfile.Profile, by cumulative time."""
    import pstats

    stream = stream or sys.stdout
    print(f"\n=== profile: {title} (top {lines} by cumulative time) ===", file=stream)
    st = pstats.Stats(prof, stream=stream)
    st.strip_dirs().sort_stats("cumulative").print_stats(lines)
    stream.flush()


def emit_all(reports: list[Report], fmt: str, json_path: str | None) -> None:
    """Each report as Report.emit prints it; the JSON file holds them all."""
    for r in reports:
        r.emit(fmt, None)
        print()
    if json_path:
        with open(json_path, "w") as f:
            json.dump([asdict(r) for r in reports], f, indent=2)
            f.write("\n")
