"""daxfs mkdir: create directories in a pool (-p: with parents, no error if present)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import command, mounted, pool_path, umask


@command
def mkdir_cmd(
    targets: Annotated[list[str], typer.Argument(metavar="POOL:/path", help="Directories.")],
    parents: Annotated[bool, typer.Option("-p", "--parents", help="Make parents too.")] = False,
) -> None:
    """Create directories in a pool."""
    mode = 0o777 & ~umask()
    for spec in targets:
        pp = pool_path(spec)
        with mounted(pp.pool) as fs:
            if parents:
                fs.makedirs(pp.path, mode, exist_ok=True)
            else:
                fs.mkdir(pp.path, mode)
