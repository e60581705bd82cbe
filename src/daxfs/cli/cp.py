"""daxfs cp: copy files and trees between the host and pools (and within a pool).

Either side of a copy is a host path or ``POOL:/path``.  As with cp(1): a copy
onto an existing directory lands inside it, a directory needs -r, and in a
recursive copy symlinks are copied as symlinks.  Data streams in 4 MiB
pieces; copies of 64 MiB or more show a progress bar with the transfer speed
on stderr when it is a terminal.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..fs import FileSystem
from ..region import holds_a_pool
from .common import CliError, command, console, mounted, split_spec, umask, warn

PIECE = 4 << 20
PROGRESS_THRESHOLD = 64 << 20


# --------------------------------------------------------------------------
# the two kinds of side: the host's file system and a mounted pool
# --------------------------------------------------------------------------
class HostSide:
    """The host file system, through os; never overwrites a pool in use."""

    def __init__(self) -> None:
        self.pools_in_use: set[object] = set()

    def label(self, path: str) -> str:
        return path

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        return os.stat(path) if follow else os.lstat(path)

    def open(self, path: str, mode: str):
        if "w" in mode and file_key(path) in self.pools_in_use:
            raise CliError(f"{path}: refusing to overwrite a pool that is being copied")
        if "w" in mode and holds_a_pool(path):
            raise CliError(
                f"{path}: refusing to overwrite a daxfs pool with a host file "
                f"(to copy into the pool, name a path in it: {path}:/NAME)"
            )
        return open(path, mode)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def names(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)


class PoolSide:
    """A mounted pool; labels read ``POOL:/path``."""

    def __init__(self, pool: str, fs: FileSystem):
        self.pool, self.fs = pool, fs

    def label(self, path: str) -> str:
        return f"{self.pool}:{path}"

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        return self.fs.stat(path) if follow else self.fs.lstat(path)

    def open(self, path: str, mode: str):
        return self.fs.open(path, mode)

    def names(self, path: str) -> list[str]:
        return sorted(self.fs.listdir(path))

    def mkdir(self, path: str, mode: int) -> None:
        self.fs.mkdir(path, mode)

    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    def symlink(self, target: str, path: str) -> None:
        self.fs.symlink(target, path)

    def chmod(self, path: str, mode: int) -> None:
        self.fs.chmod(path, mode)

    def remove(self, path: str) -> None:
        self.fs.unlink(path)


Side = HostSide | PoolSide


def file_key(path: str) -> object:
    """What identifies a host file: (device, inode), or the path if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return path
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True)
class Place:
    side: Side
    path: str

    def child(self, name: str) -> Place:
        return Place(self.side, posixpath.join(self.path, name))

    def stat(self, follow: bool = True) -> os.stat_result | None:
        try:
            return self.side.stat(self.path, follow)
        except FileNotFoundError:
            return None

    def __str__(self) -> str:
        return self.side.label(self.path)


class Sides:
    """Opens each pool named by the specs once (a pool is mounted once per
    process): read-only unless it holds the destination, so that copying out
    of a read-only pool works."""

    def __init__(self, stack: ExitStack, destination: str):
        self._stack, self._pools, self.host = stack, {}, HostSide()
        pp = split_spec(destination)
        self._written = file_key(pp.pool) if pp is not None else None

    def place(self, spec: str) -> Place:
        pp = split_spec(spec)
        if pp is None:
            return Place(self.host, spec)
        key = file_key(pp.pool)
        if key not in self._pools:
            fs = self._stack.enter_context(mounted(pp.pool, readonly=key != self._written))
            self._pools[key] = PoolSide(pp.pool, fs)
            self.host.pools_in_use.add(key)
        return Place(self._pools[key], pp.path)


# --------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------
class Meter:
    """Counts copied bytes; draws a progress bar for big copies on a terminal."""

    def __init__(self, progress: Progress | None, total: int):
        self._progress = progress
        self._task = progress.add_task("copying", total=total) if progress else None

    def now_copying(self, name: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=name)  # type: ignore[arg-type]

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)  # type: ignore[arg-type]


@contextmanager
def metered(total: int, quiet: bool = False) -> Iterator[Meter]:
    err = console(stderr=True)
    if quiet or total < PROGRESS_THRESHOLD or not err.is_terminal:
        yield Meter(None, total)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        yield Meter(progress, total)


def tree_bytes(src: Place, recursive: bool) -> int:
    """Bytes of regular files a copy of ``src`` will move."""
    st = src.side.stat(src.path)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if not (recursive and stat.S_ISDIR(st.st_mode)):
        return 0
    total = 0
    for name in src.side.names(src.path):
        child = src.child(name)
        if not stat.S_ISLNK(child.side.stat(child.path, follow=False).st_mode):
            total += tree_bytes(child, True)
    return total


# --------------------------------------------------------------------------
# copying
# --------------------------------------------------------------------------
def same_file(a: Place, b: Place) -> bool:
    if a.side is not b.side:
        return False
    sa, sb = a.stat(), b.stat()
    return sa is not None and sb is not None and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _new_mode(src: Place) -> int:
    """cp's mode for a new file or directory: the source's bits less the umask."""
    return src.side.stat(src.path).st_mode & 0o777 & ~umask()


def copy_file(src: Place, dst: Place, meter: Meter) -> None:
    """Stream one regular file; a new destination gets the source's permission bits."""
    if same_file(src, dst):
        raise CliError(f"'{src}' and '{dst}' are the same file")
    existed = dst.stat() is not None
    meter.now_copying(_basename(src.path))
    buf = bytearray(PIECE)
    view = memoryview(buf)
    with src.side.open(src.path, "rb") as fin, dst.side.open(dst.path, "wb") as fout:
        try:
            while n := fin.readinto(buf):
                fout.write(view[:n])
                meter.advance(n)
        except OSError as e:
            if existed:
                raise _naming(e, dst) from None
            fout.close()
            dst.side.remove(dst.path)  # no half copy under the new name
            raise _naming(e, dst, "removed the partial copy") from None
    if not existed:
        dst.side.chmod(dst.path, _new_mode(src))


def _naming(e: OSError, dst: Place, note: str | None = None) -> OSError:
    """``e`` with the destination named (ENOSPC from a write names no file)."""
    message = e.strerror or str(e)
    return OSError(e.errno, f"{message} ({note})" if note else message, e.filename or str(dst))


def copy_link(src: Place, dst: Place) -> None:
    dst.side.symlink(src.side.readlink(src.path), dst.path)


def copy_tree(src: Place, dst: Place, meter: Meter) -> None:
    """Copy directory ``src`` as ``dst`` (merging into it if it is a directory)."""
    mode = _new_mode(src)
    try:
        dst.side.mkdir(dst.path, mode | 0o700)  # writable while we fill it
        created = True
    except FileExistsError:
        st = dst.stat()
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise CliError(f"cannot overwrite non-directory '{dst}' with a directory") from None
        created = False
    for name in src.side.names(src.path):
        copy_entry(src.child(name), dst.child(name), meter)
    if created and mode != mode | 0o700:
        dst.side.chmod(dst.path, mode)


def copy_entry(src: Place, dst: Place, meter: Meter) -> None:
    """One entry of a recursive copy, by its own (not followed) type."""
    mode = src.side.stat(src.path, follow=False).st_mode
    if stat.S_ISLNK(mode):
        copy_link(src, dst)
    elif stat.S_ISDIR(mode):
        copy_tree(src, dst, meter)
    elif stat.S_ISREG(mode):
        copy_file(src, dst, meter)
    else:
        warn(f"{src}: skipping special file")


def _basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _inside(src: Place, dst: Place) -> bool:
    """Is ``dst`` ``src`` itself or below it (a copy into itself)?"""
    if src.side is not dst.side:
        return False
    norm = os.path.realpath if isinstance(src.side, HostSide) else posixpath.normpath
    a, b = norm(src.path), norm(dst.path)
    return b == a or b.startswith(a.rstrip("/") + "/")


def copy(src: Place, dst: Place, recursive: bool, meter: Meter) -> None:
    """cp SRC DST for one source: into DST when it is a directory, else as DST."""
    st = src.side.stat(src.path)
    dst_st = dst.stat()
    if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
        dst = dst.child(_basename(src.path))
    if not stat.S_ISDIR(st.st_mode):
        copy_file(src, dst, meter)
        return
    if not recursive:
        raise CliError(f"{src}: is a directory (use -r)")
    if _inside(src, dst):
        raise CliError(f"cannot copy '{src}' into itself ('{dst}')")
    copy_tree(src, dst, meter)


@command
def cp_cmd(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="SRC DST", help="Sources, then the target: host paths or POOL:/path."
        ),
    ],
    recursive: Annotated[
        bool, typer.Option("-r", "-R", "--recursive", help="Copy directories.")
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Never show progress.")] = False,
) -> None:
    """Copy files between the host and a pool, or within a pool."""
    if len(paths) < 2:
        raise CliError("cp needs a source and a destination")
    with ExitStack() as stack:
        sides = Sides(stack, paths[-1])
        places = [sides.place(p) for p in paths]
        sources, dst = places[:-1], places[-1]
        if len(sources) > 1:
            st = dst.stat()
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise CliError(f"target '{dst}' is not a directory")
        total = sum(tree_bytes(s, recursive) for s in sources)
        with metered(total, quiet) as meter:
            for src in sources:
                copy(src, dst, recursive, meter)
