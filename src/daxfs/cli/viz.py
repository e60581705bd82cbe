"""daxfs viz: draw a pool's allocation map as a PNG.

One cell per 2 MiB chunk, in address order (superblock, journal and inode
table first, then the data area): free, large-file data (files of 2 MiB or
more), small-file data, metadata (directory and extent blocks, and the
pool's own headers).  Needs matplotlib (the ``viz`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..aging_stats import dax_block_map, dax_file_maps
from .common import CliError, PoolArg, command, console, mounted


@command
def viz_cmd(
    pool: PoolArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("map.png"),
    columns: Annotated[
        int | None, typer.Option("--columns", min=1, help="Chunks per row (default: square).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Title above the map.")] = None,
) -> None:
    """Draw the allocation map of POOL (free, large-file, small-file, metadata chunks)."""
    from .. import viz

    with mounted(pool, readonly=True) as fs:
        files = dax_file_maps(fs)
        bm = dax_block_map(fs, files)
    bm.label = f"{pool.name} ({fs.sb.allocator} allocator)"
    try:
        viz.draw_maps([bm], str(out), title=title, columns=columns)
    except RuntimeError as e:  # matplotlib missing
        raise CliError(str(e)) from None
    console().print(f"wrote {out}: " + viz.map_summary(bm).replace("\n", " "))
