"""daxfs df: space in a pool: total, used, free, free whole 2 MiB chunks, inodes."""

from __future__ import annotations

from ..fs import StatVFS
from ..layout import CHUNK
from ..units import human
from .common import PoolArg, command, console, mounted, table


def rows(vfs: StatVFS) -> list[tuple[str, str, str]]:
    """(what, human, exact) rows."""
    used = vfs.total_bytes - vfs.free_bytes
    inodes_used = vfs.f_files - vfs.f_ffree
    return [
        ("total", human(vfs.total_bytes), f"{vfs.total_bytes} bytes"),
        ("used", human(used), f"{used} bytes"),
        ("free", human(vfs.free_bytes), f"{vfs.free_bytes} bytes"),
        (
            "free 2 MiB chunks",
            human(vfs.free_chunks * CHUNK),
            f"{vfs.free_chunks} of {vfs.total_chunks} chunks",
        ),
        ("inodes", f"{inodes_used} used", f"{vfs.f_ffree} free of {vfs.f_files}"),
    ]


@command
def df_cmd(pool: PoolArg) -> None:
    """Show free and used space of a pool."""
    with mounted(pool, readonly=True) as fs:
        vfs = fs.statvfs()
    t = table("", "size", "detail", right=("size",))
    for row in rows(vfs):
        t.add_row(*row)
    console().print(t)
