"""daxfs age: age a pool (or a directory) with a long, deterministic history
of creates, appends, overwrites, truncates and deletes, then show how its
layout has held up.

    daxfs age pool.img --utilization 0.75 --churn 10 --seed 1 --trace t.jsonl
    daxfs age /mnt/ext4 --replay t.jsonl        # the same history elsewhere

TARGET is a pool file (aged under --root inside it) or a host directory
(an ext4 mount, say), aged through ordinary os calls.  --trace writes the
operations as JSON lines; --replay applies such a trace instead of
generating one.  At the end: operations per second, the utilization, and the
aging figures of daxfs.aging_stats (2 MiB-eligible fraction of large-file
bytes, free space in whole 2 MiB chunks, extents per large file, space lost
to small files).  A directory is measured with FIEMAP where its file system
has it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ..age import AgeParams, DaxTarget, DirTarget, generate, read_trace, replay, write_trace
from ..aging_stats import AgingStats, dax_block_map, dax_file_maps, dir_file_maps, file_stats
from ..units import human
from .common import CliError, command, console, mounted, table


def _is_pool(target: Path) -> bool:
    try:
        mode = target.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISCHR(mode)


@contextlib.contextmanager
def _meter(total: int, quiet: bool) -> Iterator:
    """A progress callback for replay(): a Rich bar of bytes written on stderr."""
    if quiet:
        yield lambda _res: None
        return
    columns = (
        TextColumn("aging"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[ops]:>9,} ops"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(stderr=True), transient=False) as progress:
        task = progress.add_task("aging", total=total, ops=0)
        yield lambda res: progress.update(task, completed=min(res.written, total), ops=res.ops)


def _ops(target_capacity: int, replay_path, trace_path, utilization, churn, seed, stack):
    """(ops, total bytes the run will write) from --replay or a new history."""
    if replay_path is not None:
        f = stack.enter_context(open(replay_path))
        try:
            header, ops = read_trace(f)
        except ValueError as e:
            raise CliError(f"{replay_path}: {e}") from None
        return ops, int(header["capacity"] * header["churn"])
    params = AgeParams(capacity=target_capacity, utilization=utilization, churn=churn, seed=seed)
    ops = generate(params)
    if trace_path is not None:
        tf = stack.enter_context(open(trace_path, "w"))
        ops = write_trace(tf, params.header(), ops)
    return ops, int(params.capacity * params.churn)


def _stats_rows(s: AgingStats) -> list[tuple[str, str]]:
    rows = [
        ("large files (>= 2 MiB)", f"{s.large_files:,}, {human(s.large_bytes)}"),
        ("  2 MiB-eligible", f"{s.eligible_fraction:.1%} of bytes in whole 2 MiB windows"),
        ("", f"{s.eligible_of_all:.1%} of all their bytes"),
        ("  extents per large file", f"{s.extents_per_large_file:.1f}"),
        ("small files", f"{s.small_files:,}, {human(s.small_bytes)}"),
        ("  space lost (alloc - size)", f"{s.small_waste:.1%} of their size"),
        ("  at 2 MiB per file (famfs)", f"{s.small_waste_famfs:.0%} of their size"),
    ]
    if s.free_whole_fraction is not None:
        rows.append(("free space in whole 2 MiB chunks", f"{s.free_whole_fraction:.1%}"))
    return rows


@command
def age_cmd(
    target: Annotated[Path, typer.Argument(help="Pool file, or a host directory.", readable=False)],
    utilization: Annotated[
        float, typer.Option("--utilization", "-u", min=0.01, max=0.97, help="Target fullness.")
    ] = 0.75,
    churn: Annotated[
        float, typer.Option("--churn", "-c", min=0.01, help="Write this many times the capacity.")
    ] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the history (same seed, same history).")] = 1,
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Also write the history here (JSON lines).")
    ] = None,
    replay_path: Annotated[
        Path | None, typer.Option("--replay", help="Apply this trace instead of a new history.")
    ] = None,
    root: Annotated[str, typer.Option(help="Directory inside the pool to age.")] = "/",
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bar.")] = False,
) -> None:
    """Age TARGET: churn it at a fixed utilization, then report how its layout aged."""
    if trace is not None and replay_path is not None:
        raise CliError("--trace and --replay do not go together (copy the trace instead)")
    if _is_pool(target):
        _age_pool(target, utilization, churn, seed, trace, replay_path, root, quiet)
    elif target.is_dir():
        if replay_path is None and not os.path.ismount(target):
            # A history fills its target's whole file system, say / of the host.
            raise CliError(
                f"{target}: not the root of its own file system; aging fills the whole "
                "file system it is on (mount one for it, or --replay a trace)"
            )
        _age_dir(target, utilization, churn, seed, trace, replay_path, quiet)
    elif not target.exists():
        raise CliError(f"{target}: No such file or directory")
    else:
        raise CliError(f"{target}: neither a pool nor a directory")


def _age_pool(pool, utilization, churn, seed, trace, replay_path, root, quiet) -> None:
    with mounted(pool) as fs, contextlib.ExitStack() as stack:
        vfs = fs.statvfs()
        ops, total = _ops(vfs.total_bytes, replay_path, trace, utilization, churn, seed, stack)
        # Only now that the history is possible: a refused run changes nothing.
        fs.makedirs(root, exist_ok=True)
        if fs.listdir(root):
            raise CliError(f"{pool}:{root}: not empty; a history starts from an empty directory")
        with _meter(total, quiet) as progress:
            res = replay(ops, DaxTarget(fs, root), on_progress=progress)
        files = dax_file_maps(fs, root)
        s = file_stats(files, dax_block_map(fs, files))
        vfs = fs.statvfs()
        used = 1 - vfs.free_bytes / vfs.total_bytes
        _show(res, used, s, f"{pool} ({fs.sb.allocator} allocator)", None)


def _age_dir(directory, utilization, churn, seed, trace, replay_path, quiet) -> None:
    st = os.statvfs(directory)
    capacity = st.f_blocks * st.f_frsize
    with contextlib.ExitStack() as stack:
        ops, total = _ops(capacity, replay_path, trace, utilization, churn, seed, stack)
        with _meter(total, quiet) as progress:
            res = replay(ops, DirTarget(str(directory)), on_progress=progress)
    st = os.statvfs(directory)
    used = 1 - st.f_bfree / st.f_blocks
    try:
        s, note = file_stats(dir_file_maps(str(directory))), None
    except OSError as e:
        s, note = None, f"no layout figures: FIEMAP failed ({e.strerror or e})"
    _show(res, used, s, str(directory), note)


def _show(res, used: float, s: AgingStats | None, what: str, note: str | None) -> None:
    t = table("", "value", title=f"aged {what}")
    t.add_row("operations", f"{res.ops:,} in {res.seconds:.1f} s ({res.ops_per_second:,.0f}/s)")
    t.add_row("written", human(res.written))
    t.add_row("utilization now", f"{used:.1%}")
    if res.errors:
        t.add_row("failed operations", ", ".join(f"{k} {v}" for k, v in res.errors.items()))
    for row in _stats_rows(s) if s is not None else []:
        t.add_row(*row)
    out = console()
    out.print(t)
    if note:
        out.print(note)
