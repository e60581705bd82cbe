"""daxfs info: what a pool is and what its backing promises.

One table: the backing (kind, file system, alignment), durability (and a
loud note when it is none: tmpfs is volatile memory), whether 2 MiB pages
are possible, the geometry and the journal, and space from statvfs.
"""

from __future__ import annotations

from ..fs import StatVFS
from ..units import human
from .common import PoolArg, cell, command, console, mounted, table
from .quoting import quote

_DURABILITY = {
    "none": "none - VOLATILE: the pool lives in RAM (tmpfs) and is lost on reboot",
    "msync": "msync - page-cache file, written back with msync",
    "pmem": "pmem - persistent memory, CPU cache flushes (CLWB + SFENCE)",
}


_PRIVATE = (
    "made in private for this read-only mount: the pool file still needs it "
    "(a writable mount, by a user who may write the pool, makes it)"
)


def _yes(flag: object) -> str:
    return "yes" if flag else "no"


def _huge(info: dict[str, object]) -> str:
    if info.get("huge_pages"):
        return "yes - the backing can map 2 MiB pages"
    kind, fstype = info.get("kind"), info.get("fstype")
    if kind == "tmpfs":
        return "no - tmpfs mounted without huge= (huge=within_size would allow them)"
    if kind == "file":
        return f"no - a page-cache file on {fstype} maps 4 KiB pages (use fs-dax or device-dax)"
    return f"no - a {kind} backing on {fstype} maps 4 KiB pages"


def _commit(info: dict[str, object]) -> str:
    if info.get("commit") == "lazy":
        return (
            f"lazy - changes durable at fsync, sync, unmount and every "
            f"{info.get('commit_interval'):g} s (mount -o commit=sync: each on return)"
        )
    if info.get("volatile"):
        return "on return (but the memory is volatile)"
    return "each change durable on return"


def rows(info: dict[str, object], vfs: StatVFS) -> list[tuple[str, str]]:
    """(field, value) rows describing the pool."""
    used = vfs.total_bytes - vfs.free_bytes
    durability = str(info.get("durability"))
    size, align, journal = (int(info[k]) for k in ("size", "align", "journal_bytes"))
    recovery = []
    if info.get("private_recovery"):  # (a reader who may not write the pool)
        recovery = [("recovery", _PRIVATE)]
    return [
        ("path", quote(str(info.get("path")))),
        ("backing", f"{info.get('kind')} on {info.get('fstype')}"),
        ("size", f"{human(size)} ({size} bytes)"),
        ("alignment", human(align)),
        ("durability", _DURABILITY.get(durability, durability)),
        ("commit", _commit(info)),
        ("volatile", _yes(info.get("volatile"))),
        ("MAP_SYNC", _yes(info.get("map_sync"))),
        ("2 MiB pages", _huge(info)),
        ("allocator", str(info.get("allocator"))),
        ("uuid", str(info.get("uuid"))),
        ("data", f"{human(vfs.total_bytes)}: {human(used)} used, {human(vfs.free_bytes)} free"),
        ("2 MiB chunks", f"{vfs.free_chunks} of {vfs.total_chunks} free"),
        ("inodes", f"{vfs.f_files - vfs.f_ffree} of {vfs.f_files} used"),
        ("journal", f"{human(journal)}, next transaction {info.get('next_seq')}"),
        *recovery,
        (
            "followers",
            f"{info.get('followers', 0)} holding leases (read-only mounts on other hosts)",
        ),
    ]


@command
def info_cmd(pool: PoolArg) -> None:
    """Describe POOL: backing, durability, 2 MiB page support, space."""
    with mounted(pool, readonly=True) as fs:
        info, vfs = fs.info(), fs.statvfs()
    t = table("field", "value")
    for field, value in rows(info, vfs):
        t.add_row(field, cell(value))
    out = console()
    out.print(t)
    if info.get("volatile"):
        out.print("warning: durability none - this pool is in volatile memory", style="bold red")
