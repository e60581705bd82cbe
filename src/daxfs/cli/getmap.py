"""daxfs getmap: a file's extent map, and which extents can take 2 MiB pages.

One row per extent from fs.iomap: file range, device range, length, whether
2 MiB pages can map part of it and how many bytes (daxfs.hugemap decides),
then a total line "N of M bytes 2 MiB-eligible".  With --touch, the file is
also mapped (fs.map) and read once every 4 KiB, and what the kernel gave is
printed from /proc/self/smaps: bytes mapped by 2 MiB pages (pmd), by 4 KiB
pages (pte), resident, and why 2 MiB pages are out of reach if they are.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..fs import FileSystem
from ..hugemap import eligible_bytes
from ..mapping import PAGE
from ..units import human
from .common import command, console, mounted, pool_path, table
from .quoting import quote


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
        title=quote(path),
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


def touch_pages(fs: FileSystem, path: str) -> tuple[dict[str, int], str | None]:
    """Map ``path``, read one byte of every 4 KiB, and return (page_sizes(),
    huge_pages_note) as the kernel left them."""
    with fs.map(path, "r") as m:
        view = m.buffer
        try:
            bytes(view[::PAGE])  # one read per page, in C
        finally:
            view.release()
        return m.page_sizes(), m.huge_pages_note


def page_lines(pages: dict[str, int], note: str | None) -> list[str]:
    """The kernel's accounting of a touched mapping, one fact a line."""

    def row(key: str, what: str) -> str:
        return f"  {key:<15}{pages[key]:>14}  ({human(pages[key])}{what})"

    lines = [
        row("pmd_bytes", " in 2 MiB pages"),
        row("pte_bytes", " in 4 KiB pages"),
        row("resident_bytes", ""),
    ]
    if note:
        lines.append(f"note: {note}")
    return lines


def show_touch(fs: FileSystem, path: str) -> dict[str, int]:
    """Touch the mapped file and print what the kernel gave; returns page_sizes()."""
    out = console()
    if fs.stat(path).st_size == 0:
        out.print("empty file: nothing to map")
        return {"pmd_bytes": 0, "pte_bytes": 0, "resident_bytes": 0}
    pages, note = touch_pages(fs, path)
    out.print("mapped with fs.map and touched every 4 KiB; the kernel mapped:")
    for line in page_lines(pages, note):
        out.print(line, markup=False)
    return pages


@command
def getmap_cmd(
    target: Annotated[str, typer.Argument(metavar="POOL:/path")],
    touch: Annotated[
        bool,
        typer.Option(
            "--touch", help="also map the file, touch every 4 KiB and show the page sizes"
        ),
    ] = False,
) -> None:
    """Show where a file's bytes live and what 2 MiB pages can map."""
    pp = pool_path(target)
    with mounted(pp.pool, readonly=True) as fs:
        show_map(fs, pp.path)
        if touch:
            show_touch(fs, pp.path)
