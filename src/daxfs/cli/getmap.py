"""daxfs getmap: a file's extent map, and which extents can take 2 MiB pages.

One row per extent from fs.iomap: file range, device range, length, whether
2 MiB pages can map part of it and how many bytes (daxfs.hugemap decides),
then a total line "N of M bytes 2 MiB-eligible".
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..fs import FileSystem
from ..hugemap import eligible_bytes
from .common import command, console, mounted, pool_path, table


def _span(start: int, length: int) -> str:
    return f"{start:#x}-{start + length:#x}"


def map_table(fs: FileSystem, path: str) -> tuple[Table, int, int]:
    """The extent table of ``path`` with (eligible bytes, file size)."""
    st = fs.stat(path)
    t = table(
        "file range",
        "device range",
        "length",
        "kind",
        "2 MiB",
        "eligible",
        title=path,
        right=("length", "eligible"),
    )
    total = 0
    for e in fs.iomap(path):
        n = eligible_bytes(e, st.st_size)
        total += n
        dev = _span(e.device_offset, e.length) if e.device_offset is not None else "-"
        t.add_row(
            _span(e.file_offset, e.length), dev, str(e.length), e.kind, "yes" if n else "no", str(n)
        )
    return t, total, st.st_size


def summary(eligible: int, size: int) -> str:
    return f"{eligible} of {size} bytes 2 MiB-eligible"


def show_map(fs: FileSystem, path: str) -> None:
    t, eligible, size = map_table(fs, path)
    out = console()
    out.print(t)
    out.print(summary(eligible, size))


@command
def getmap_cmd(target: Annotated[str, typer.Argument(metavar="POOL:/path")]) -> None:
    """Show where a file's bytes live and what 2 MiB pages can map."""
    pp = pool_path(target)
    with mounted(pp.pool, readonly=True) as fs:
        show_map(fs, pp.path)
