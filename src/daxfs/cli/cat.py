"""daxfs cat: write files from a pool to stdout, byte for byte."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import command, mounted, pool_path

BUFFER = 1 << 20


@command
def cat_cmd(
    targets: Annotated[list[str], typer.Argument(metavar="POOL:/path", help="Files.")],
) -> None:
    """Print files from a pool (binary-safe)."""
    out = typer.get_binary_stream("stdout")
    for spec in targets:
        pp = pool_path(spec)
        with mounted(pp.pool, readonly=True) as fs, fs.open(pp.path, "rb") as f:
            while chunk := f.read(BUFFER):
                out.write(chunk)
    out.flush()
