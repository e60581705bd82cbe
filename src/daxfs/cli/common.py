r"""common: what every command shares.

* ``POOL:/path`` specs: a spec names a path in a pool when some prefix before
  a ``:`` is an existing pool file (or dax device); otherwise it is a host path
  if that exists, and a (missing) pool spec if it contains a ``:`` at all.
* the default pool (``$DAXFS_POOL``, else ``$XDG_DATA_HOME/daxfs/default.pool``);
* consoles and tables that turn plain (no colour, no box) off a terminal;
* mounting with errors that name the pool;
* quoting (quoting.py): a pool's names are anybody's bytes, so none
  reaches a terminal raw; errors quote the names they carry;
* ``@command``: every failure becomes one ``daxfs: ...`` line on stderr and an
  exit status (1 for ordinary errors), never a traceback.  Every message goes
  out through ``warn``, which escapes control characters whatever the caller
  put in it.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..fs import FileSystem
from ..pool import mount
from .quoting import escape_controls, quote

EXIT_ERROR = 1
EXIT_UNFIXED = 4
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., object])


# A pool argument.  readable=False: click's own check would end the command
# with a boxed usage error (status 2); mounting says it in one line.
PoolArg = Annotated[Path, typer.Argument(help="Pool file or dax device.", readable=False)]


class CliError(Exception):
    """A failure already phrased for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.message, self.code = message, code


# --------------------------------------------------------------------------
# pools and specs
# --------------------------------------------------------------------------
def default_pool() -> Path:
    """$DAXFS_POOL, else $XDG_DATA_HOME/daxfs/default.pool; creates the directory."""
    env = os.environ.get("DAXFS_POOL")
    if env:
        pool = Path(env).expanduser()
    else:
        data = os.environ.get("XDG_DATA_HOME", "")
        base = Path(data) if os.path.isabs(data) else Path.home() / ".local" / "share"
        pool = base / "daxfs" / "default.pool"
    pool.parent.mkdir(parents=True, exist_ok=True)
    return pool


@dataclass(frozen=True)
class PoolPath:
    pool: str
    path: str

    def __str__(self) -> str:
        return f"{self.pool}:{self.path}"


def _is_pool_file(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(mode) or stat.S_ISCHR(mode)


def _inner(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def split_spec(spec: str) -> PoolPath | None:
    """``POOL:/path`` as a PoolPath, or None when ``spec`` is a host path."""
    colons = [i for i, c in enumerate(spec) if c == ":" and i > 0]
    for i in reversed(colons):
        if _is_pool_file(spec[:i]):
            return PoolPath(spec[:i], _inner(spec[i + 1 :]))
    if not colons or os.path.lexists(spec):
        return None
    return PoolPath(spec[: colons[0]], _inner(spec[colons[0] + 1 :]))


def pool_path(spec: str) -> PoolPath:
    """A spec that must be ``POOL:/path``."""
    pp = split_spec(spec)
    if pp is None:
        raise CliError(f"{quote(spec)}: expected POOL:/path (a pool file, a colon, a path)")
    return pp


def pool_or_path(spec: str) -> PoolPath:
    """``POOL`` (meaning its root) or ``POOL:/path``."""
    if _is_pool_file(spec):
        return PoolPath(spec, "/")
    return split_spec(spec) or PoolPath(spec, "/")


def umask() -> int:
    """The process umask (a pool has no kernel applying it, so commands do)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def mounted(
    pool: str | os.PathLike, readonly: bool = False, **options: object
) -> Iterator[FileSystem]:
    """Mount ``pool`` for one command; errors without a file name get the pool's.
    ``options``: mount options (commit=, commit_interval=)."""
    try:
        fs = mount(pool, readonly=readonly, **options)  # type: ignore[arg-type]
    except OSError as e:
        if e.filename is None:
            raise CliError(f"{quote(_as_name(pool))}: {e.strerror or e}") from e
        raise
    try:
        yield fs
    finally:
        fs.close()


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
def console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr); plain and unwrapped when not a terminal."""
    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:
        c = Console(stderr=stderr, highlight=False, no_color=True, width=1000, soft_wrap=True)
    return c


def table(*columns: str, title: str | None = None, right: tuple[str, ...] = ()) -> Table:
    """A table with the given column headers; boxed on a terminal, bare
    otherwise.  The title is shown as it is (no markup: it may be a name)."""
    plain = not Console().is_terminal
    t = Table(
        title=None if title is None else cell(title),
        box=None if plain else box.SIMPLE_HEAVY,
        pad_edge=False,
        title_justify="left",
    )
    for name in columns:
        t.add_column(name, justify="right" if name in right else "left", no_wrap=plain)
    return t


def warn(message: str) -> None:
    """``daxfs: message`` on stderr, control characters escaped (a last line
    of defence: names in ``message`` should already be quoted)."""
    typer.echo(f"daxfs: {escape_controls(message)}", err=True)


def cell(text: str) -> Text:
    """A table cell or title showing ``text`` as it is: no rich markup (a name
    holding "[red]" stays those characters) and no control characters."""
    return Text(escape_controls(text))


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def _as_name(filename: object) -> str:
    """An OSError's filename as text (it may be str, bytes, a path, an fd)."""
    if isinstance(filename, os.PathLike):
        filename = os.fspath(filename)
    if isinstance(filename, bytes):
        return filename.decode("utf-8", "surrogateescape")
    return str(filename)


def describe_oserror(e: OSError) -> str:
    """``NAME: reason`` (or ``NAME -> NAME2: reason``), each name quoted as
    coreutils quotes one at the start of a diagnostic, the reason's control
    characters escaped (a reason may hold a name too)."""
    msg = escape_controls(e.strerror or str(e))
    if e.filename is not None and e.filename2 is not None:
        return f"{quote(_as_name(e.filename))} -> {quote(_as_name(e.filename2))}: {msg}"
    if e.filename is not None:
        return f"{quote(_as_name(e.filename))}: {msg}"
    return msg


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    warn(message)
    return typer.Exit(code)


def _quiet_broken_pipe() -> None:
    """stdout's reader went away (``daxfs cat ... | head``): drop what is left."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def command(fn: F) -> F:
    """Run a command body turning every expected failure into one line and a status."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CliError as e:
            raise fail(e.message, e.code) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(EXIT_ERROR) from None
        except OSError as e:
            raise fail(describe_oserror(e)) from None
        except (ValueError, NotImplementedError) as e:
            raise fail(str(e) or type(e).__name__) from None
        except KeyboardInterrupt:
            raise fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
