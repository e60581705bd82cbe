"""daxfs ls: list a directory in a pool (or name one file), optionally long.

``-l`` prints, like ls -l: mode string, links, size, modification time,
name (and ``-> target`` for a symlink).  One name a line, sorted by bytes
(as ``LC_ALL=C ls``).

Names are quoted as GNU ls quotes them.  On a terminal the default style is
shell-escape ('...' where a shell would need it, control characters as
$'\\033'), and any unprintable character left by the style chosen shows as
"?" (ls's -q, on by default there): no byte of a name reaches a terminal
raw.  Off a terminal the default is literal: each name's stored bytes as
they are, for scripts.  ``--quoting-style``, ``-Q``, ``-b``, ``-N`` and
``$QUOTING_STYLE`` choose a style as they do for ls.  In long format with
the shell styles, a name that needs no quotes is indented by one space when
some other does, so the names line up (ls does the same).
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys
import time
from dataclasses import dataclass
from typing import Annotated

import typer

from ..fs import FileSystem
from .common import CliError, command, mounted, pool_or_path
from .quoting import QUOTING_STYLES, hide_control_chars, name_bytes, quote

SIX_MONTHS = 183 * 24 * 3600
DIRECTORY_COLOUR = ("\x1b[1;34m", "\x1b[0m")  # bold blue, then reset
ALIGNED_STYLES = ("shell", "shell-escape")  # ls pads unquoted names in these


def format_mtime(mtime: float, now: float | None = None) -> str:
    """ls's time column: time of day for recent files, the year for old ones."""
    now = time.time() if now is None else now
    fmt = "%b %e %H:%M" if abs(now - mtime) < SIX_MONTHS else "%b %e  %Y"
    return time.strftime(fmt, time.localtime(mtime))


# --------------------------------------------------------------------------
# how names are shown
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """How this listing writes a name: a quoting style, and whether
    unprintable characters the style leaves become "?"."""

    style: str
    hide_control: bool

    def __call__(self, name: str) -> str:
        text = quote(name, self.style)
        if self.style == "escape":
            text = text.replace(" ", "\\ ")  # ls escapes spaces in this style too
        return hide_control_chars(text) if self.hide_control else text

    def needs_quotes(self, name: str) -> bool:
        return quote(name, self.style) != name


def choose_style(chosen: list[str], on_terminal: bool) -> str:
    """The quoting style: the one the options name, else $QUOTING_STYLE (when
    it names one), else shell-escape on a terminal and literal off one."""
    if len(set(chosen)) > 1:
        raise CliError(f"conflicting quoting options: {', '.join(sorted(set(chosen)))}")
    if chosen:
        return chosen[0]
    env = os.environ.get("QUOTING_STYLE", "")
    if env in QUOTING_STYLES:
        return env
    return "shell-escape" if on_terminal else "literal"


def use_colour() -> bool:
    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


# --------------------------------------------------------------------------
# the listing
# --------------------------------------------------------------------------
def entries(fs: FileSystem, path: str) -> list[tuple[str, str]]:
    """(name, full path) to list: a directory's children, or the file itself."""
    if fs.isdir(path):
        names = sorted(fs.listdir(path), key=name_bytes)
        return [(n, posixpath.join(path, n)) for n in names]
    fs.lstat(path)  # raises FileNotFoundError for a missing path
    return [(path, path)]


def widths(stats: list[os.stat_result]) -> tuple[int, int]:
    return (
        max((len(str(s.st_nlink)) for s in stats), default=1),
        max((len(str(s.st_size)) for s in stats), default=1),
    )


def long_prefix(st: os.stat_result, cols: tuple[int, int]) -> str:
    return (
        f"{stat.filemode(st.st_mode)} {st.st_nlink:>{cols[0]}} "
        f"{st.st_size:>{cols[1]}} {format_mtime(st.st_mtime)} "
    )


def listing_lines(fs: FileSystem, path: str, long: bool, shown: Shown, colour: bool) -> list[str]:
    """The lines of ``path``'s listing, names already quoted (and coloured)."""
    items = entries(fs, path)
    stats = [fs.lstat(full) for _, full in items]
    cols = widths(stats)
    pad = long and shown.style in ALIGNED_STYLES and any(shown.needs_quotes(n) for n, _ in items)
    lines = []
    for (name, full), st in zip(items, stats, strict=True):
        text = shown(name)
        if colour and stat.S_ISDIR(st.st_mode):
            text = DIRECTORY_COLOUR[0] + text + DIRECTORY_COLOUR[1]
        if not long:
            lines.append(text)
            continue
        if pad and not shown.needs_quotes(name):
            text = " " + text
        if stat.S_ISLNK(st.st_mode):
            text += " -> " + shown(fs.readlink(full))
        lines.append(long_prefix(st, cols) + text)
    return lines


def write_lines(lines: list[str]) -> None:
    """Each line and a newline, as bytes: a literal name goes out as stored,
    undecodable bytes included."""
    sys.stdout.flush()  # what was printed as text before goes first
    out = typer.get_binary_stream("stdout")
    out.write(b"".join(name_bytes(line) + b"\n" for line in lines))
    out.flush()


def print_listing(fs: FileSystem, path: str, long: bool, shown: Shown | None = None) -> None:
    """Print ``path``'s listing (one name a line, or ls -l lines); names as
    ``shown``, by default as ls shows them on this stdout."""
    on_terminal = sys.stdout.isatty()
    if shown is None:
        shown = Shown(choose_style([], on_terminal), on_terminal)
    write_lines(listing_lines(fs, path, long, shown, on_terminal and use_colour()))


@command
def ls_cmd(
    target: Annotated[str, typer.Argument(metavar="POOL[:/path]", help="A pool or a path.")],
    long: Annotated[bool, typer.Option("-l", help="Mode, links, size, mtime, name.")] = False,
    quoting_style: Annotated[
        str | None,
        typer.Option(
            "--quoting-style",
            metavar="WORD",
            help="How names are written: " + ", ".join(QUOTING_STYLES) + ".",
        ),
    ] = None,
    quote_name: Annotated[
        bool, typer.Option("-Q", "--quote-name", help="Names in double quotes (style c).")
    ] = False,
    escape: Annotated[
        bool, typer.Option("-b", "--escape", help="C escapes for unprintables (style escape).")
    ] = False,
    literal: Annotated[
        bool, typer.Option("-N", "--literal", help="Names as stored (style literal).")
    ] = False,
    hide_control: Annotated[
        bool,
        typer.Option(
            "-q",
            "--hide-control-chars",
            help="Unprintable characters as ? (always on a terminal).",
        ),
    ] = False,
) -> None:
    """List a directory in a pool."""
    if quoting_style is not None and quoting_style not in QUOTING_STYLES:
        raise CliError(
            f"invalid quoting style {quote(quoting_style)} (one of {', '.join(QUOTING_STYLES)})"
        )
    flags = {"c": quote_name, "escape": escape, "literal": literal}
    chosen = [s for s, on in flags.items() if on] + ([quoting_style] if quoting_style else [])
    on_terminal = sys.stdout.isatty()
    shown = Shown(choose_style(chosen, on_terminal), hide_control or on_terminal)
    pp = pool_or_path(target)
    with mounted(pp.pool, readonly=True) as fs:
        print_listing(fs, pp.path, long, shown)
