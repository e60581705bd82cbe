"""daxfs mkfs: format a pool file (created or resized to --size) or a dax device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..layout import BLOCK
from ..mkfs import ALLOCATOR_CHOICES, mkfs
from ..units import human, parse_size
from .common import CliError, command, console


@command
def mkfs_cmd(
    pool: Annotated[
        Path, typer.Argument(help="Pool file (or /dev/daxX.Y) to format.", readable=False)
    ],
    size: Annotated[str | None, typer.Option("--size", "-s", help="e.g. 64M or 4G.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite a pool.")] = False,
    allocator: Annotated[str, typer.Option(help="hugepage (2 MiB-aware) or naive.")] = "hugepage",
    inodes: Annotated[
        int | None,
        typer.Option(
            "--inodes",
            "-i",
            min=2,
            help="Inode table slots (default: one per 16 KiB of pool, 256 to 4,194,304; "
            "mkfs writes only the first 16,384 and the table grows into the rest).",
        ),
    ] = None,
) -> None:
    """Format POOL as an empty daxfs file system."""
    if allocator not in ALLOCATOR_CHOICES:
        raise CliError(f"unknown allocator {allocator!r} (choose {', '.join(ALLOCATOR_CHOICES)})")
    nbytes = parse_size(size) if size is not None else None
    try:
        sb = mkfs(pool, nbytes, force=force, allocator=allocator, inodes=inodes)
    except FileExistsError as e:
        raise CliError(f"{pool}: {e.strerror.replace('use force', 'use --force')}") from None
    console().print(
        f"formatted {pool}: {human(sb.region_size)}, {human(sb.data_blocks * BLOCK)} for data, "
        f"{sb.inode_count - 1} inodes, allocator {sb.allocator}"
    )
