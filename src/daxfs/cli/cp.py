"""daxfs cp: copy files and trees between the host and pools (and within a pool).

Either side of a copy is a host path or ``POOL:/path``.  As with cp(1): a copy
onto an existing directory lands inside it, a directory needs -r, and in a
recursive copy symlinks are copied as symlinks.  Copies of 64 MiB or more
show a progress bar with the transfer speed on stderr when it is a terminal.

A pool is a file someone else may have built, and a destination may fold
case (``F`` and ``f`` one name), so the copy holds to these rules:

* The walk is iterative (any depth) and remembers each directory it enters
  by (st_dev, st_ino): one met again (a loop; in a pool, damage for ``daxfs
  fsck``) is reported at once and not walked again.  Symlinks inside the
  tree are copied as symlinks with their text verbatim and never followed,
  so no host file is read into the copy.  A source the user named is
  followed, as by cp(1).
* Writes go only where they were told.  On the host every name is resolved
  in its directory's descriptor (sides.HostDir): a new file is created
  with O_CREAT|O_EXCL|O_NOFOLLOW, a directory entered with O_NOFOLLOW.
  Merging into an existing tree: a regular file is overwritten in place; a
  symlink or special file where a file or symlink goes is replaced, never
  written through; a symlink where a directory goes is refused unless
  ``--keep-directory-symlink`` (GNU tar's option) says to follow it.  The
  destination the user named is followed as given.
* Nothing this run created is overwritten or followed ("will not overwrite
  just-created ...", as GNU cp says), so on a case-insensitive destination
  a pool's ``F -> /elsewhere/f.txt`` cannot make its ``f`` write elsewhere.
  A pool destination holds to the same rules through the daxfs API.
* Files are copied sparse: the data runs only, then the size.  A new file
  that cannot be finished (no space, too large) is removed.
* Each failure is one line naming its entry (``daxfs: LABEL: message``) and
  the copy goes on with the next; the status is 1 if anything failed.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Annotated, Protocol

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .common import CliError, command, console, mounted, split_spec, umask, warn
from .quoting import quote
from .sides import (
    Entry,
    HostSide,
    Identity,
    PoolSide,
    Reader,
    Side,
    Target,
    Tree,
    Writer,
    identity,
)

PIECE = 4 << 20
PROGRESS_THRESHOLD = 64 << 20
# Names that put a copy in the destination directory itself (cp -r POOL:/ DIR).
HERE = ("", ".", "..")

Report = Callable[[str], None]


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

    def stat(self) -> os.stat_result | None:
        try:
            return self.side.stat(self.path)
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
            # A pool's name, shown as ls shows it and never read as rich markup.
            self._progress.update(self._task, description=quote(name))  # type: ignore[arg-type]

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)  # type: ignore[arg-type]


def may_show_progress(quiet: bool) -> bool:
    return not quiet and console(stderr=True).is_terminal


@contextmanager
def metered(total: int, quiet: bool = False) -> Iterator[Meter]:
    if total < PROGRESS_THRESHOLD or not may_show_progress(quiet):
        yield Meter(None, total)
        return
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console(stderr=True), transient=False) as progress:
        yield Meter(progress, total)


def data_bytes(st: os.stat_result) -> int:
    """The bytes a sparse copy of a file moves: what it has allocated."""
    return min(st.st_size, st.st_blocks * 512)


class Sizer:
    """A visitor that sums the data bytes of the regular files of a walk."""

    def __init__(self) -> None:
        self.total = 0

    def enter(self, entry: Entry) -> None:
        pass

    def leave(self, entry: Entry) -> None:
        pass

    def leaf(self, entry: Entry) -> None:
        if stat.S_ISREG(entry.st.st_mode):
            self.total += data_bytes(entry.st)


def planned_bytes(sources: list[Place], recursive: bool) -> int:
    """Data bytes the copy will move (for the progress bar); failures are
    left for the copy itself to report."""
    sizer = Sizer()
    for src in sources:
        tree = src.side.tree(src.path)
        try:
            top = tree.top()
            if recursive or not stat.S_ISDIR(top.st.st_mode):
                walk(tree, top, sizer, lambda message: None)
        except (OSError, ValueError, CliError):
            pass
        finally:
            tree.close()
    return sizer.total


# --------------------------------------------------------------------------
# the walk: iterative, each directory entered once
# --------------------------------------------------------------------------
class Visitor(Protocol):
    def enter(self, entry: Entry) -> None: ...
    def leave(self, entry: Entry) -> None: ...
    def leaf(self, entry: Entry) -> None: ...


ENTRY_ERRORS = (OSError, ValueError, CliError)


def failure(label: str, e: Exception) -> str:
    """The one line for ``e`` met at ``label``."""
    if isinstance(e, CliError):
        return e.message
    if isinstance(e, OSError):
        return f"{label}: {e.strerror or e}"
    return f"{label}: {e}"


def valid_name(name: str) -> bool:
    """One name in a directory (a crafted pool may list "..", "a/b" or "")."""
    return name not in HERE and "/" not in name and "\0" not in name


def walk(tree: Tree, top: Entry, visitor: Visitor, report: Report) -> None:
    """Visit ``top`` and, if it is a directory, everything below it, depth
    first in name order; a failure is reported and its subtree skipped."""
    if not stat.S_ISDIR(top.st.st_mode):
        _attempt(report, top.label, visitor.leaf, top)
        return
    visited: set[Identity] = set()
    stack: list[tuple[Entry, Iterator[str]]] = []
    names = _enter(tree, top, visitor, visited, report)
    if names is not None:
        stack.append((top, names))
    while stack:
        directory, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            visitor.leave(directory)
            tree.up()
            continue
        entry = _child(tree, directory, name, report)
        if entry is None:
            continue
        if not stat.S_ISDIR(entry.st.st_mode):
            _attempt(report, entry.label, visitor.leaf, entry)
            continue
        names = _enter(tree, entry, visitor, visited, report)
        if names is not None:
            stack.append((entry, names))


def _attempt(report: Report, label: str, call: Callable, *args):
    try:
        return call(*args)
    except ENTRY_ERRORS as e:
        report(failure(label, e))
        return None


def _child(tree: Tree, directory: Entry, name: str, report: Report) -> Entry | None:
    if not valid_name(name):
        report(f"{directory.label}: holds an entry named {name!r}, not a name; skipped")
        return None
    return _attempt(report, posixpath.join(directory.label, name), tree.child, name)


def _enter(
    tree: Tree, entry: Entry, visitor: Visitor, visited: set[Identity], report: Report
) -> Iterator[str] | None:
    """Step into directory ``entry``, source then destination, and list it:
    its names, or None when it is skipped (reported).  As cp(1), a directory
    that cannot be listed is still made."""
    if entry.ident in visited:
        report(tree.met_twice(entry))
        return None
    visited.add(entry.ident)
    st = _attempt(report, entry.label, tree.down, entry)
    if st is None:
        return None
    if identity(st) != entry.ident:
        report(f"{entry.label}: replaced during the copy; not copied")
    elif _attempt(report, entry.label, _entered, visitor, entry):
        names = _attempt(report, entry.label, tree.names)
        if names is not None:
            return iter(names)
        visitor.leave(entry)
    tree.up()
    return None


def _entered(visitor: Visitor, entry: Entry) -> bool:
    visitor.enter(entry)
    return True


# --------------------------------------------------------------------------
# copying: the destination half of a walk
# --------------------------------------------------------------------------
@dataclass
class Frame:
    """A destination directory the copy stands in: the mode it gets when the
    copy leaves it (a directory it made), and whether the copy moved into it."""

    mode: int | None
    moved: bool


class Copier:
    """The visitor that writes a copy of one source tree (see the module
    docstring for the rules).  ``created`` holds the (st_dev, st_ino) of
    everything the whole run created in the destination."""

    def __init__(
        self,
        tree: Tree,
        target: Target,
        top_name: tuple[str, bool],
        created: set[Identity],
        meter: Meter,
        report: Report,
        keep_directory_symlink: bool = False,
    ):
        self.tree, self.target, self.created, self.meter = tree, target, created, meter
        self.top_name, self.user_named = top_name
        self.report, self.keep_directory_symlink = report, keep_directory_symlink
        self.same_side = tree.side is target.side
        self._frames: list[Frame] = []

    def _name(self, entry: Entry) -> str:
        return self.top_name if entry.top else entry.name

    # -- directories -------------------------------------------------------
    def enter(self, entry: Entry) -> None:
        if entry.top and not self.user_named and self.top_name in HERE:
            self._frames.append(Frame(None, moved=False))  # into the destination itself
            return
        if self.same_side and entry.ident in self.created:
            raise CliError(f"{entry.label}: made by this copy; not copied into itself")
        name = self._name(entry)
        label = self.target.label(name)
        seen = self._seen(entry, name)
        if seen is None:
            self._frames.append(self._make_dir(entry, name))
            return
        follow = stat.S_ISLNK(seen.st_mode)
        if follow:
            seen = self._followed_directory_link(entry, name)
        elif not stat.S_ISDIR(seen.st_mode):
            raise CliError(
                f"cannot overwrite non-directory '{label}' with directory '{entry.label}'"
            )
        with naming(label):
            st = self.target.enter(name, follow)
        self._check_same(st, seen, label)  # merging into what was looked at, nothing else
        self._frames.append(Frame(None, moved=True))

    def _make_dir(self, entry: Entry, name: str) -> Frame:
        t = self.target
        mode = entry.st.st_mode & 0o777 & ~umask()
        with naming(t.label(name)):
            t.mkdir(name, mode | 0o700)  # writable while we fill it
            self.created.add(identity(t.enter(name)))
        return Frame(None if mode & 0o700 == 0o700 else mode, moved=True)

    def _followed_directory_link(self, entry: Entry, name: str) -> os.stat_result:
        """A symlink already in the destination where a directory goes: its
        directory, if --keep-directory-symlink says to follow it."""
        label = self.target.label(name)
        if not self.keep_directory_symlink:
            raise CliError(
                f"{label}: a symlink where the directory '{entry.label}' goes; not followed "
                "(--keep-directory-symlink follows it)"
            )
        with naming(label):
            st = self.target.lstat(name, follow=True)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise CliError(
                f"cannot overwrite non-directory '{label}' with directory '{entry.label}'"
            )
        self._refuse_just_created(st, entry, label)
        return st

    def _check_same(self, st: os.stat_result, seen: os.stat_result, label: str) -> None:
        if identity(st) != identity(seen):
            self.target.leave()
            raise CliError(f"{label}: replaced during the copy; not copied into")

    def leave(self, entry: Entry) -> None:
        frame = self._frames.pop()
        if not frame.moved:
            return
        if frame.mode is not None:
            label = self.target.label()
            _attempt(self.report, label, self.target.set_dir_mode, frame.mode)
        self.target.leave()  # a failure here ends this source (CliError)

    # -- files and symlinks -------------------------------------------------
    def leaf(self, entry: Entry) -> None:
        kind = stat.S_IFMT(entry.st.st_mode)
        if kind == stat.S_IFLNK:
            self._copy_link(entry)
        elif kind == stat.S_IFREG or entry.top:  # a named pipe or device: its contents
            self._copy_file(entry)
        else:
            warn(f"{entry.label}: skipping special file")

    def _copy_link(self, entry: Entry) -> None:
        name, t = self._name(entry), self.target
        text = self.tree.readlink(entry)
        seen = self._seen(entry, name)
        with naming(t.label(name)):
            if seen is not None:
                self._refuse_directory(seen, entry, name)
                t.remove(name)  # a symlink replaces what is there, as cp -r does
            self.created.add(identity(t.symlink(text, name)))

    def _copy_file(self, entry: Entry) -> None:
        name, t = self._name(entry), self.target
        self.meter.now_copying(name)
        reader = self.tree.open_data(entry)  # first: an unreadable source leaves no empty file
        try:
            if self._copy_whole(entry, name, reader):
                return
            writer, new = self._file_writer(entry, name)
            try:
                copy_data(reader, writer, self.meter, entry.label, t.label(name))
                if new:
                    t.set_file_mode(name, writer, entry.st.st_mode & 0o777 & ~umask())
            except ENTRY_ERRORS as e:
                writer.close()
                if new:
                    self._discard(name, writer)
                    raise CliError(
                        f"{failure(t.label(name), e)} (removed the partial copy)"
                    ) from None
                raise
            finally:
                writer.close()
        finally:
            reader.close()

    def _copy_whole(self, entry: Entry, name: str, reader: Reader) -> bool:
        """A small file new to a pool: read whole, then made with its bytes
        and mode in one change (PoolTarget.create_whole), where the general
        way takes three or four (create, write, chmod, times at close),
        each durable on return (about 1 ms apiece on a page-cache pool).
        A crash leaves it whole or absent.  False, having made nothing,
        where that does not apply: the target is the host, the source is
        large or streamed, or the name is taken."""
        t = self.target
        create_whole = getattr(t, "create_whole", None)
        if create_whole is None or entry.st.st_size > WHOLE_MAX:
            return False
        with naming(entry.label):
            whole = read_whole(reader, WHOLE_MAX)
        if whole is None:
            return False
        data, moved = whole
        perms = entry.st.st_mode & 0o777 & ~umask()
        with naming(t.label(name)):
            try:
                self.created.add(create_whole(name, data, perms))
            except FileExistsError:
                # Replaced or written through: the general way checks what
                # (and reads again: read_whole reads at offsets).
                return False
        self.meter.advance(moved)
        return True

    def _file_writer(self, entry: Entry, name: str) -> tuple[Writer, bool]:
        """The destination file, and whether this run created it."""
        t = self.target
        follow = entry.top and self.user_named  # cp(1) writes through the DST it was given
        seen = self._seen(entry, name, follow)
        with naming(t.label(name)):
            if seen is not None:
                self._refuse_directory(seen, entry, name)
                if self.same_side and identity(seen) == entry.ident:
                    raise CliError(f"'{entry.label}' and '{t.label(name)}' are the same file")
                if stat.S_ISREG(seen.st_mode):
                    return t.overwrite_file(name, seen, follow), False
                t.remove(name)  # a symlink or special file: replaced, never written through
            writer = t.create_file(name)
        self.created.add(writer.ident)
        return writer, True

    def _discard(self, name: str, writer: Writer) -> None:
        self.created.discard(writer.ident)
        _attempt(self.report, self.target.label(name), self.target.discard, name, writer)

    # -- what is in the way ------------------------------------------------
    def _seen(self, entry: Entry, name: str, follow: bool = False) -> os.stat_result | None:
        """What the destination holds at ``name`` (refused if this run made it)."""
        label = self.target.label(name)
        with naming(label):
            seen = self.target.lstat(name, follow)
        if seen is not None:
            self._refuse_just_created(seen, entry, label)
        return seen

    def _refuse_just_created(self, seen: os.stat_result, entry: Entry, label: str) -> None:
        if identity(seen) in self.created:
            raise CliError(f"will not overwrite just-created '{label}' with '{entry.label}'")

    def _refuse_directory(self, seen: os.stat_result, entry: Entry, name: str) -> None:
        if stat.S_ISDIR(seen.st_mode):
            label = self.target.label(name)
            raise CliError(
                f"cannot overwrite directory '{label}' with non-directory '{entry.label}'"
            )


@contextmanager
def naming(label: str) -> Iterator[None]:
    """OSErrors raised inside name ``label`` (a call by descriptor names no path)."""
    try:
        yield
    except OSError as e:
        raise CliError(failure(label, e)) from None


# Files up to this size are copied into a pool whole, in one change (_copy_whole).
WHOLE_MAX = 1 << 20


def read_whole(reader: Reader, limit: int) -> tuple[bytearray, int] | None:
    """All of a file's bytes (holes as zeroes) and how many were read (its
    data runs, as copy_data moves them); None if it has more than ``limit``
    (it grew since it was listed) or is a stream (no offsets)."""
    size = reader.size()
    if size > limit:
        return None
    buf = bytearray(size)
    view, moved = memoryview(buf), 0
    for start, end in reader.data_runs():
        if end is None or end > size:
            return None
        pos = start
        while pos < end:
            n = reader.read_into(view[pos:end], pos)
            if n == 0:
                return None  # shrank meanwhile: the general way copies what is there
            pos += n
        moved += end - start
    return (buf, moved) if reader.size() == size else None


def copy_data(reader: Reader, writer: Writer, meter: Meter, src: str, dst: str) -> None:
    """The data runs of ``reader`` into ``writer`` at the same offsets, then
    the size: holes stay holes, a file of 2^62 bytes and no data is instant."""
    buf = bytearray(PIECE)
    view = memoryview(buf)
    with naming(src):
        runs = list(reader.data_runs())
    for start, end in runs:
        pos = start
        while end is None or pos < end:
            want = PIECE if end is None else min(PIECE, end - pos)
            with naming(src):
                n = reader.read_into(view[:want], pos)
            if n == 0:  # the end (a pipe, or a file that shrank meanwhile)
                break
            with naming(dst):
                writer.write_at(view[:n], pos)
            meter.advance(n)
            pos += n
    with naming(src):
        size = reader.size()
    with naming(dst):
        writer.truncate(size)


# --------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------
def _inside(src: Place, dst: Place) -> bool:
    """Is ``dst`` ``src`` itself or below it (a copy into itself)?"""
    if src.side is not dst.side:
        return False
    norm = os.path.realpath if isinstance(src.side, HostSide) else posixpath.normpath
    a, b = norm(src.path), norm(dst.path)
    return b == a or b.startswith(a.rstrip("/") + "/")


class Failures:
    """Reports each failure on its own line and counts them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str) -> None:
        warn(message)
        self.count += 1


@dataclass
class Run:
    """What one ``daxfs cp`` shares across its sources."""

    dst: Place
    target: Target
    recursive: bool
    keep_directory_symlink: bool
    meter: Meter
    report: Failures
    created: set[Identity]


def copy_source(src: Place, run: Run) -> None:
    """cp SRC DST for one source: into DST when it is a directory, else as DST."""
    tree = src.side.tree(src.path)
    try:
        top = tree.top()
    except ENTRY_ERRORS as e:
        run.report(failure(str(src), e) if not isinstance(e, OSError) else _describe(e))
        return
    if stat.S_ISDIR(top.st.st_mode) and not _may_copy_directory(src, top, run):
        return
    try:
        with naming(str(run.dst)):
            top_name = run.target.start(run.dst.path, top.name)
        copier = Copier(
            tree, run.target, top_name, run.created, run.meter, run.report,
            run.keep_directory_symlink,
        )  # fmt: skip
        walk(tree, top, copier, run.report)
    except CliError as e:  # lost track of a directory: this source ends here
        run.report(e.message)
    finally:
        tree.close()
        run.target.stop()


def _may_copy_directory(src: Place, top: Entry, run: Run) -> bool:
    if not run.recursive:
        run.report(f"{src}: is a directory (use -r)")
        return False
    dst_st = run.dst.stat()
    final = run.dst.child(top.name) if dst_st and stat.S_ISDIR(dst_st.st_mode) else run.dst
    if _inside(src, final):
        run.report(f"cannot copy '{src}' into itself ('{final}')")
        return False
    return True


def copy(src: Place, dst: Place, recursive: bool, meter: Meter) -> None:
    """Copy one source as ``daxfs cp`` does (failures reported as they
    happen); CliError at the end if anything failed."""
    report = Failures()
    copy_source(src, Run(dst, dst.side.target(), recursive, False, meter, report, set()))
    if report.count:
        raise CliError(f"copying {src} to {dst}: {report.count} failed (see above)")


def _describe(e: OSError) -> str:
    """A source that cannot be found, as the API names it."""
    msg = e.strerror or str(e)
    return f"{e.filename}: {msg}" if e.filename is not None else msg


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
    keep_directory_symlink: Annotated[
        bool,
        typer.Option(
            "--keep-directory-symlink",
            help="Copy into a directory through a symlink the destination already holds.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Never show progress.")] = False,
) -> None:
    """Copy files between the host and a pool, or within a pool."""
    if len(paths) < 2:
        raise CliError("cp needs a source and a destination")
    report = Failures()
    with ExitStack() as stack:
        sides = Sides(stack, paths[-1])
        places = [sides.place(p) for p in paths]
        sources, dst = places[:-1], places[-1]
        if len(sources) > 1:
            st = dst.stat()
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise CliError(f"target '{dst}' is not a directory")
        total = planned_bytes(sources, recursive) if may_show_progress(quiet) else 0
        with metered(total, quiet) as meter:
            run = Run(
                dst, dst.side.target(), recursive, keep_directory_symlink, meter, report, set()
            )
            for src in sources:
                copy_source(src, run)
    if report.count:
        raise typer.Exit(1)
