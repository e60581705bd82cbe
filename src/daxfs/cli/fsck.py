"""daxfs fsck: check a pool's consistency, optionally repairing it.

Prints each error found (and each repair, note and error left).  Exit
status, as fsck(8): 0 clean; 1 errors were found and all were fixed; 4
errors are left (always when errors are found without --repair, or with
--dry-run); 8 the check could not run (missing pool, checker unavailable).
A line of the report may hold a name from the pool: its control characters
are printed escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..check import Report, check
from .common import CliError, PoolArg, command, console, describe_oserror
from .quoting import escape_controls

EXIT_CLEAN, EXIT_FIXED, EXIT_UNFIXED, EXIT_OPERATIONAL = 0, 1, 4, 8


def run_check(pool: Path, repair: bool) -> Report:
    """daxfs.check, with failures to run it turned into CliErrors (exit 8)."""
    try:
        return check(pool, repair=repair)
    except NotImplementedError:
        raise CliError("check not available in this version", EXIT_OPERATIONAL) from None
    except OSError as e:
        raise CliError(describe_oserror(e), EXIT_OPERATIONAL) from None


def left(report: Report) -> list[str]:
    """Errors still in the pool after the check (and the repair, if any)."""
    if report.ok:
        return []
    return list(report.remaining) or list(report.errors)


def print_report(report: Report, repairing: bool) -> None:
    out = console()
    for prefix, lines in (
        ("error", report.errors),
        ("repaired", report.repaired),
        ("note", report.notes),
    ):
        for line in lines:
            out.print(f"{prefix}: {escape_controls(line)}", markup=False)
    remaining = left(report)
    if repairing:
        for line in remaining:
            out.print(f"left: {escape_controls(line)}", markup=False)
    if not report.errors and not remaining:
        out.print("clean")
    elif remaining:
        out.print(f"{len(remaining)} error(s) left" + ("" if repairing else ", nothing changed"))
    else:
        out.print(f"{len(report.errors)} error(s) found, all fixed")


def verdict(report: Report) -> int:
    if left(report):
        return EXIT_UNFIXED
    return EXIT_FIXED if report.errors else EXIT_CLEAN


@command
def fsck_cmd(
    pool: PoolArg,
    repair: Annotated[bool, typer.Option("--repair", "-r", help="Fix what can be fixed.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Report only.")] = False,
) -> None:
    """Check (and with --repair, fix) a pool.  Exit 0 clean, 1 fixed, 4 errors left."""
    repairing = repair and not dry_run
    report = run_check(pool, repair=repairing)
    print_report(report, repairing)
    code = verdict(report)
    if code:
        raise typer.Exit(code)
