r"""quoting: names shown as GNU coreutils shows them, never raw on a terminal.

A pool's names are anybody's bytes.  ``quote`` writes a name as GNU's
quotearg does in one of its styles (``shell-escape`` by default: '...'
only when needed, control characters as $'\033'); ``escape_controls``
makes prose that may hold a name safe; ``hide_control_chars`` is ls's
``-q``.  The code is written anew from the styles' documented behaviour
and checked against /bin/ls in tests/test_cli_quoting.py.

Names are str as daxfs gives them: UTF-8 with undecodable bytes kept as
surrogates (surrogateescape), so ``name_bytes`` gets the stored bytes back.
The terminal is taken to be UTF-8.  Printable means ``str.isprintable``,
which is stricter than glibc's iswprint: format characters (bidi overrides
such as U+202E), private-use characters and spaces other than U+0020 are
escaped too, where GNU ls prints them as they are.
"""

from __future__ import annotations

QUOTING_STYLES = (
    "literal",  # as stored
    "shell",  # '...' when a shell would need it; control characters as they are
    "shell-always",  # always '...'
    "shell-escape",  # as shell, control characters as $'\n' (the default on a terminal)
    "shell-escape-always",
    "c",  # "..." with C escapes
    "escape",  # C escapes, no quotes
)

_LETTER_ESCAPES = {"\a": "a", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\v": "v"}
# Characters a shell gives a meaning wherever they are in a word, those it
# does only at a word's start, and those special only as the whole word.
_SHELL_SPECIAL = frozenset(" \t\n\r!\"$&'()*;<=>?[\\^`|")
_SHELL_SPECIAL_FIRST = frozenset("#~{}")
_SHELL_SPECIAL_ALONE = frozenset("{}")
# Characters that mean the same in C's and the shell's double quotes: a name
# of only these (and an apostrophe) is shown "it's" rather than 'it'\''s'.
_DOUBLE_QUOTE_SAFE = frozenset(
    " '%+,-./:@]_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def name_bytes(name: str) -> bytes:
    """The bytes a daxfs name stands for (undecodable ones are surrogates)."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate not from surrogateescape
        return name.encode("utf-8", "surrogatepass")


def _c_escape(char: str) -> str:
    r"""``\n`` for the seven characters C names, else ``\ooo`` for each byte."""
    letter = _LETTER_ESCAPES.get(char)
    if letter:
        return "\\" + letter
    return "".join(f"\\{b:03o}" for b in name_bytes(char))


def escape_controls(text: str) -> str:
    """``text`` with every unprintable character (controls, undecodable
    bytes) as a C escape; printable text, backslashes included, unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _c_escape(c) for c in text)


def _backslashed(name: str, quote_char: str) -> str:
    """The inside of the c and escape styles."""
    out = []
    for c in name:
        if c == "\\" or c == quote_char:
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(_c_escape(c))
    return "".join(out)


def _shell_special(name: str, i: int, c: str, escapes: bool) -> bool:
    if c in _SHELL_SPECIAL:
        return True
    if c in _SHELL_SPECIAL_FIRST and i == 0:
        return c not in _SHELL_SPECIAL_ALONE or len(name) == 1
    return escapes and not c.isprintable()


def _double_quote_safe(name: str, i: int, c: str) -> bool:
    if c in _DOUBLE_QUOTE_SAFE or (c in "#~" and i == 0) or (c in "{}" and len(name) == 1):
        return True
    return not c.isascii() and c.isprintable()


def _single_quoted(name: str, escapes: bool) -> str:
    r"""'...' around ``name``: an apostrophe as '\'', and with ``escapes`` each
    run of unprintable characters as $'...' between the quoted parts."""
    out = ["'"]
    in_dollar = False  # inside a $'...' run
    for c in name:
        if escapes and not c.isprintable():
            if not in_dollar:
                out.append("'$'")  # close '...', open $'...'
                in_dollar = True
            out.append(_c_escape(c))
            continue
        if c == "'":
            out.append("'\\''")  # close (either kind), a quoted ', reopen
        else:
            out.append("''" + c if in_dollar else c)  # close $'...', reopen '...'
        in_dollar = False
    out.append("'")
    return "".join(out)


def _shell_quote(name: str, escapes: bool, always: bool) -> str:
    if (
        not always
        and name
        and not any(_shell_special(name, i, c, escapes) for i, c in enumerate(name))
    ):
        return name
    if "'" in name and all(_double_quote_safe(name, i, c) for i, c in enumerate(name)):
        return f'"{name}"'  # what GNU does for an apostrophe: shorter, same meaning
    return _single_quoted(name, escapes)


def quote(name: str, style: str = "shell-escape") -> str:
    r"""``name`` as GNU tools show it in ``style`` (one of QUOTING_STYLES).

    The default, shell-escape, is what coreutils uses for a name at the
    start of a diagnostic: unchanged when a shell would take it as it is,
    else in '...' with control characters and undecodable bytes as $'\ooo'.
    Only literal (and shell, shell-always, which quote but do not escape)
    can give back unprintable characters."""
    if style == "literal":
        return name
    if style == "c":
        return '"' + _backslashed(name, '"') + '"'
    if style == "escape":
        return _backslashed(name, "")
    if style not in QUOTING_STYLES:
        raise ValueError(f"unknown quoting style {style!r}")
    return _shell_quote(name, style.startswith("shell-escape"), style.endswith("-always"))


def quote_always(name: str) -> str:
    """``name`` in quotes, as coreutils quotes a name inside a sentence
    (``cannot move 'a' ...``): shell-escape-always."""
    return quote(name, "shell-escape-always")


def hide_control_chars(text: str) -> str:
    """ls's ``-q``: each unprintable character, and each byte that is not
    UTF-8, as "?" (an incomplete character at the end as one "?")."""
    if text.isprintable():
        return text
    raw, out, i = name_bytes(text), [], 0
    while i < len(raw):
        char, size = _next_char(raw, i)
        if size == 0:  # a character cut short by the end of the text
            out.append("?")
            break
        out.append(char if char is not None and char.isprintable() else "?")
        i += size
    return "".join(out)


def _next_char(raw: bytes, i: int) -> tuple[str | None, int]:
    """(character, its length) at ``raw[i]``, the character None when it is
    not printable anyway (past U+10FFFF, which glibc still reads as one);
    (None, 1) for a byte that starts no character; (None, 0) for a character
    cut short by the end of ``raw`` (a lead byte, too few continuations)."""
    size = _claimed_length(raw[i])
    piece = raw[i : i + size]
    if not all(0x80 <= b <= 0xBF for b in piece[1:]):
        return None, 1
    if len(piece) < size:
        return None, 0
    try:
        return piece.decode("utf-8"), size
    except UnicodeDecodeError:
        return None, size if size > 1 and _beyond_unicode(piece) else 1


def _beyond_unicode(piece: bytes) -> bool:
    """A sequence in its shortest form for a value past U+10FFFF (not an
    overlong spelling of a smaller one)."""
    value = piece[0] & (0x7F >> len(piece))
    for b in piece[1:]:
        value = value << 6 | (b & 0x3F)
    shortest = 1 + sum(value >= limit for limit in (0x80, 0x800, 0x10000, 0x200000, 0x4000000))
    return value > 0x10FFFF and shortest == len(piece)


def _claimed_length(lead: int) -> int:
    """The length of the UTF-8 sequence ``lead`` begins, read as glibc reads
    it (which still knows the 5- and 6-byte forms); 1 for a byte that begins
    none, or ASCII."""
    for below, length in ((0xC0, 1), (0xE0, 2), (0xF0, 3), (0xF8, 4), (0xFC, 5), (0xFE, 6)):
        if lead < below:
            return length
    return 1
