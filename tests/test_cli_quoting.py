"""Names from a pool never reach a terminal raw, and daxfs ls quotes as GNU ls.

The oracle is the real /bin/ls: the same names are made as host files on
tmpfs and in a pool, and each quoting style's output is compared byte for
byte (sorted by bytes on both sides: LC_COLLATE=C, LC_CTYPE=C.UTF-8).  The
terminal tests run the CLI and ls on real ptys (output processing off, so
the bytes read are the bytes written).  Also here: ``daxfs rm -r`` of a
1,500-level tree and of trees that name a directory twice.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import random
import re
import selectors
import shutil
import struct
import subprocess
import sys
import termios
import time
import unicodedata

import pytest
from typer.testing import CliRunner

import daxfs
from conftest import new_pool
from daxfs.cli import app
from daxfs.cli.common import describe_oserror
from daxfs.cli.quoting import QUOTING_STYLES, hide_control_chars, quote
from daxfs.cli.rm import remove
from daxfs.layout import INODE_SIZE, CorruptionError

LS = shutil.which("ls")
pytestmark = pytest.mark.skipif(LS is None, reason="no ls(1) to compare with")

# Names as bytes: escape sequences (clear screen, set the title), each C0
# control that has a C escape, DEL, C1 controls written in UTF-8 (NEL, CSI),
# bytes that are not UTF-8, shell metacharacters in every position GNU
# treats specially, apostrophes beside controls.
NASTY = [
    b"plain",
    b"a b",
    b"\x1b[2J",
    b"\x1b]0;title\x07",
    b"new\nline",
    b"fake\n-rw-r--r-- 1 0 Jan  1 00:00 owned",
    b"cr\r",
    b"bel\x07",
    b"tab\t",
    b"bs\x08",
    b"vt\x0bff\x0c",
    b"\x01soh",
    b"\x7f",
    b"nel\xc2\x85",
    b"csi\xc2\x9b2J",
    b"\xff\xfe",
    b"cut\xe2\x80",
    b"\xe2\x80A",
    b"caf\xc3\xa9",
    b"it's",
    b"x y'",
    b'say "hi"',
    b"ab'\ncd",
    b"'\n",
    b"\n'",
    b"back\\slash",
    b"-dash",
    b"~home",
    b"#hash",
    b"x#y",
    b"{",
    b"{a}",
    b"a:b",
    b"q?",
    b"@at",
    b"$(reboot)",
    b"`id`",
    b"*",
    b"a=b",
    b"[x]",
    # coreutils 9.1 shows this one as '''m'\'''$'\n' (two redundant quotes:
    # gnulib did not reset its state before a second pass); newer gnulib and
    # daxfs give 'm'\'''$'\n'.  same_as_gnu() undoes the old quirk.
    b"m'\n",
]
TARGETS = {
    b"link": b"\x1b[31mred\nline",
    b"link\x1b]0;t\x07": b"/\x1b]0;t\x07/\xff\xfe/it's",
    b"plain link": b"plain target",
}
ONELINE_TARGETS = {name: t for name, t in TARGETS.items() if b"\n" not in t}
DIRECTORY = b"d\x1bir"
# One name holding every kind of hostile byte, for the error messages.
EVIL = b"\x1b[2J\x1b]0;owned\x07\n\r\t\x08\x7f\xc2\x85\xc2\x9b\xff"

MAX_SECONDS = 120  # a hang limit, not a speed requirement


def text(raw: bytes) -> str:
    """A name as daxfs holds it."""
    return raw.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# the same names on the host and in a pool
# --------------------------------------------------------------------------
def populate_host(where: bytes, names: list[bytes], targets: dict[bytes, bytes]) -> None:
    os.mkdir(where)
    for name in names:
        with open(os.path.join(where, name), "wb"):
            pass
    for name, target in targets.items():
        os.symlink(target, os.path.join(where, name))
    os.mkdir(os.path.join(where, DIRECTORY))


def populate_pool(fs: daxfs.FileSystem, where: str, names, targets) -> None:
    fs.mkdir(where)
    for name in names:
        with fs.open(f"{where}/{text(name)}", "wb"):
            pass
    for name, target in targets.items():
        fs.symlink(text(target), f"{where}/{text(name)}")
    fs.mkdir(f"{where}/{text(DIRECTORY)}")


def one_line(names) -> list[bytes]:
    return [n for n in names if b"\n" not in n]


@pytest.fixture
def twins(shm_dir) -> tuple[str, str]:
    """(host directory, pool): /all holds NASTY, TARGETS and DIRECTORY in
    both; /oneline the same without the names holding a newline (for ls -l in
    the styles that leave a newline raw)."""
    host = os.path.join(shm_dir, "host").encode()
    os.mkdir(host)
    pool = new_pool(shm_dir)
    with daxfs.mount(pool) as fs:
        for sub, names, targets in (
            ("all", NASTY, TARGETS),
            ("oneline", one_line(NASTY), ONELINE_TARGETS),
        ):
            populate_host(host + b"/" + sub.encode(), names, targets)
            populate_pool(fs, "/" + sub, names, targets)
    return host.decode(), pool


def plain_env(**extra: str) -> dict[str, str]:
    """No inherited locale or QUOTING_STYLE: UTF-8 characters, byte order."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    env.update(LANG="C.UTF-8", LC_COLLATE="C", **extra)
    return env


def gnu_ls(*args: str | bytes) -> bytes:
    return subprocess.run([LS, *args], env=plain_env(), capture_output=True, check=True).stdout


def daxfs_ls(*args: str) -> bytes:
    result = CliRunner().invoke(app, ["ls", *args])
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.stdout_bytes


def same_as_gnu(listing: bytes) -> bytes:
    """GNU's listing (or one name column) with coreutils 9.1's redundant
    leading '' removed (a quoted name never starts with ''' otherwise)."""
    return re.sub(rb"(^|\n| -> )'''", rb"\1'", listing)


def name_column(listing: bytes, fields_before: int) -> list[bytes]:
    """What follows the time column of each ls -l line (the one space after
    it dropped, the alignment space kept)."""
    pattern = rb"^(?:\S+ +){%d}\S+ (.*)$" % (fields_before - 1)
    return [re.match(pattern, line).group(1) for line in listing.rstrip(b"\n").split(b"\n")]


# --------------------------------------------------------------------------
# piped: every style as ls gives it
# --------------------------------------------------------------------------
@pytest.mark.parametrize("style", QUOTING_STYLES)
def test_each_quoting_style_is_gnu_ls(twins, style):
    host, pool = twins
    ours = daxfs_ls(f"--quoting-style={style}", f"{pool}:/all")
    assert ours == same_as_gnu(gnu_ls("-1", f"--quoting-style={style}", f"{host}/all"))


@pytest.mark.parametrize("style", QUOTING_STYLES)
def test_long_listing_names_and_targets_are_gnu_ls(twins, style):
    host, pool = twins
    sub = "all" if style in ("shell-escape", "shell-escape-always", "c", "escape") else "oneline"
    ours = daxfs_ls("-l", f"--quoting-style={style}", f"{pool}:/{sub}")
    theirs = gnu_ls("-l", f"--quoting-style={style}", f"{host}/{sub}").split(b"\n", 1)[1]
    # ls -l: mode links owner group size month day time; daxfs: no owner, group
    assert name_column(ours, 6) == [same_as_gnu(name) for name in name_column(theirs, 8)]
    if style in ("shell", "shell-escape"):  # the alignment space is there to compare
        assert re.search(rb"\d\d:\d\d  plain\n", ours) and re.search(rb"\d\d:\d\d 'a b'\n", ours)


@pytest.mark.parametrize(("flag", "style"), [("-Q", "c"), ("-b", "escape"), ("-N", "literal")])
def test_short_options_name_their_styles(twins, flag, style):
    host, pool = twins
    assert daxfs_ls(flag, f"{pool}:/all") == daxfs_ls(f"--quoting-style={style}", f"{pool}:/all")
    assert daxfs_ls(flag, f"{pool}:/all") == same_as_gnu(gnu_ls("-1", flag, f"{host}/all"))


def test_quoting_style_from_the_environment_and_conflicts(twins, monkeypatch):
    _host, pool = twins
    monkeypatch.setenv("QUOTING_STYLE", "c")
    assert daxfs_ls(f"{pool}:/all") == daxfs_ls("-Q", f"{pool}:/all")
    monkeypatch.setenv("QUOTING_STYLE", "no-such-style")  # ignored, as ls ignores it
    assert daxfs_ls(f"{pool}:/all") == daxfs_ls("-N", f"{pool}:/all")
    result = CliRunner().invoke(app, ["ls", "-Q", "-b", f"{pool}:/all"])
    assert result.exit_code == 1 and "conflicting quoting options" in result.output
    result = CliRunner().invoke(app, ["ls", "--quoting-style=locale", f"{pool}:/all"])
    assert result.exit_code == 1 and "invalid quoting style" in result.output


def test_hide_control_chars_is_gnu_ls_q(twins):
    host, pool = twins
    for style in ("literal", "shell", "shell-always"):  # the styles that leave controls
        ours = daxfs_ls("-q", f"--quoting-style={style}", f"{pool}:/all")
        assert ours == gnu_ls("-1", "-q", f"--quoting-style={style}", f"{host}/all")


def random_names(count: int, seed: int) -> list[bytes]:
    """Short names of random bytes (and a few UTF-8 characters, some cut
    short), none a hidden file, none holding what daxfs shows more strictly
    than glibc (private use, format characters, spaces but U+0020)."""
    rnd = random.Random(seed)
    pieces = [bytes([b]) for b in range(1, 256) if b != ord("/")]
    pieces += ["é".encode(), "日".encode(), "\u0085".encode(), b"\xe2\x80", b"\xf0\x9f", b"'"]
    names: set[bytes] = set()
    while len(names) < count:
        name = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 6)))
        if not name.startswith(b".") and not glibc_prints_it(text(name)):
            names.add(name)
    return sorted(names)


def glibc_prints_it(name: str) -> bool:
    """Whether ``name`` holds a character glibc prints but daxfs escapes."""
    return any(
        unicodedata.category(c) in ("Co", "Cf", "Zs") and c != " "
        for c in name
        if not "\udc80" <= c <= "\udcff"
    )


def same_as_gnu_line(name: bytes, line: bytes) -> bytes:
    """One name's line from coreutils 9.1 with its stale-state quirks undone:
    ''' for ', and '\\ooo for ''$'\\ooo when the name starts unprintable."""
    if line.startswith(b"'''"):
        return line[2:]
    if line.startswith(b"'\\") and not text(name)[0].isprintable():
        return b"''$'" + line[1:]
    return line


def test_random_names_are_gnu_ls(shm_dir):
    names = random_names(400, seed=12)
    host = os.path.join(shm_dir, "random").encode()
    pool = new_pool(shm_dir)
    with daxfs.mount(pool) as fs:
        populate_host(host, names, {})
        populate_pool(fs, "/random", names, {})
    for style in QUOTING_STYLES:
        for hide in ([], ["-q"]):
            ours = daxfs_ls(*hide, f"--quoting-style={style}", f"{pool}:/random")
            theirs = gnu_ls("-1", *hide, f"--quoting-style={style}", host)
            if style in ("literal", "shell", "shell-always") and not hide:
                assert ours == theirs, style  # raw newlines: compare whole listings
                continue
            lines = theirs.rstrip(b"\n").split(b"\n")
            expected = [
                same_as_gnu_line(n, line)
                for n, line in zip(sorted([*names, DIRECTORY]), lines, strict=True)
            ]
            assert ours.rstrip(b"\n").split(b"\n") == expected, (style, hide)


def test_piped_listing_is_the_raw_names(twins):
    """Off a terminal, scripts get the stored bytes: a real pipe, a real process."""
    _host, pool = twins
    out = subprocess.run(
        [sys.executable, "-m", "daxfs.cli", "ls", f"{pool}:/oneline"],
        env=plain_env(),
        capture_output=True,
        check=True,
        timeout=MAX_SECONDS,
    ).stdout
    expected = sorted(one_line(NASTY) + list(ONELINE_TARGETS) + [DIRECTORY])
    assert out == b"".join(name + b"\n" for name in expected)
    long = daxfs_ls("-l", f"{pool}:/all")
    assert b" link -> \x1b[31mred\nline\n" in long


# --------------------------------------------------------------------------
# on a terminal
# --------------------------------------------------------------------------
def on_terminal(args: list, env: dict[str, str]) -> tuple[bytes, bytes, int]:
    """Run ``args`` with stdout and stderr each on its own pty (250 columns,
    no output processing); return what each received and the exit status."""
    ptys = [pty.openpty() for _ in range(2)]
    for _master, slave in ptys:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=ptys[0][1], stderr=ptys[1][1], env=env
    )
    for _master, slave in ptys:
        os.close(slave)
    got = {master: bytearray() for master, _ in ptys}
    with selectors.DefaultSelector() as sel:
        for master in got:
            sel.register(master, selectors.EVENT_READ)
        deadline = time.monotonic() + MAX_SECONDS
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                try:
                    chunk = os.read(key.fd, 65536)
                except OSError as e:  # EIO: the other end is closed
                    assert e.errno == errno.EIO
                    chunk = b""
                if chunk:
                    got[key.fd] += chunk
                else:
                    sel.unregister(key.fd)
    code = proc.wait(timeout=MAX_SECONDS)
    for master in got:
        os.close(master)
    return bytes(got[ptys[0][0]]), bytes(got[ptys[1][0]]), code


DAXFS = [sys.executable, "-m", "daxfs.cli"]
DUMB = plain_env(TERM="dumb", NO_COLOR="1")  # no styling: every byte is the program's text


def raw_controls(out: bytes) -> list[str]:
    """Characters that may drive a terminal: C0 but newline, DEL, C1, and
    bytes that are not UTF-8."""
    chars = out.decode("utf-8", "surrogateescape")
    return [
        c
        for c in chars
        if (c < " " and c != "\n") or "\x7f" <= c <= "\x9f" or "\udc80" <= c <= "\udcff"
    ]


def test_terminal_listing_is_gnu_ls_on_a_terminal(twins):
    """On a terminal both default to shell-escape, and both show what a
    style leaves unprintable as "?"."""
    host, pool = twins
    for args in ([], ["-l"], ["-N"], ["--quoting-style=shell"], ["-l", "--quoting-style=shell"]):
        ours, err, code = on_terminal([*DAXFS, "ls", *args, f"{pool}:/all"], DUMB)
        assert (code, err) == (0, b"")
        theirs, _, _ = on_terminal([LS, "-1", *args, f"{host}/all"], DUMB)
        if "-l" in args:
            theirs_names = name_column(theirs.split(b"\n", 1)[1], 8)
            assert name_column(ours, 6) == [same_as_gnu(name) for name in theirs_names]
        else:
            assert ours == same_as_gnu(theirs)
        assert raw_controls(ours) == [], args
    assert b"''$'\\033''[2J'\n" in on_terminal([*DAXFS, "ls", f"{pool}:/all"], DUMB)[0]


def test_terminal_colour_is_the_only_escape(twins):
    _host, pool = twins
    out, _err, code = on_terminal([*DAXFS, "ls", "-l", f"{pool}:/all"], plain_env(TERM="xterm"))
    assert code == 0
    assert b"\x1b[1;34m'd'$'\\033''ir'\x1b[0m" in out  # the directory, blue
    assert raw_controls(out.replace(b"\x1b[1;34m", b"").replace(b"\x1b[0m", b"")) == []


@pytest.fixture
def evil_pool(shm_dir) -> str:
    """A pool holding /EVIL (a file with data), /EVIL-dir/, /EVIL-link -> EVIL."""
    pool = new_pool(shm_dir)
    with daxfs.mount(pool) as fs:
        with fs.open("/" + text(EVIL), "wb") as f:
            f.write(b"x" * 5000)
        fs.mkdir("/" + text(EVIL) + "-dir")
        fs.symlink(text(EVIL), "/" + text(EVIL) + "-link")
    return pool


def evil_commands(pool: str, shm_dir: str) -> dict[str, list]:
    """Every command that shows a pool's name, or reports one in an error."""
    evil = text(EVIL)
    at = f"{pool}:/{evil}"
    nasty_pool = os.path.join(shm_dir, evil + ".pool")
    daxfs.mkfs(nasty_pool, "16M")
    damaged = damaged_pool_with_evil_name(shm_dir)
    return {
        "ls": ["ls", pool],
        "ls -l": ["ls", "-l", pool],
        "ls -l literal": ["ls", "-l", "-N", pool],
        "ls -l shell": ["ls", "-l", "--quoting-style=shell-always", pool],
        "ls one file": ["ls", "-l", at + "-link"],
        "ls missing": ["ls", at + "-missing"],
        "stat file": ["stat", at],
        "stat link": ["stat", at + "-link"],
        "getmap": ["getmap", at],
        "rm a directory": ["rm", at + "-dir"],
        "rm missing": ["rm", at + "-missing"],
        "rm the root through a link": ["rm", "-r", f"{pool}:/{evil}-dir/../"],
        "mv into itself": ["mv", at + "-dir", at + "-dir/sub"],
        "mv missing": ["mv", at + "-missing", f"{pool}:/{evil}-x/y"],
        "mkdir existing": ["mkdir", at + "-dir"],
        "mkdir under a file": ["mkdir", at + "/sub"],
        "cat a directory": ["cat", at + "-dir"],
        "cat not a spec": ["cat", "/" + evil],
        "info": ["info", nasty_pool],
        "info missing pool": ["info", nasty_pool + "-missing"],
        "fsck": ["fsck", damaged],
    }


def damaged_pool_with_evil_name(shm_dir: str) -> str:
    """A pool whose /EVIL entry names an inode that was zeroed behind its back."""
    pool = new_pool(shm_dir)
    with daxfs.mount(pool) as fs:
        with fs.open("/" + text(EVIL), "wb") as f:
            f.write(b"data")
        off = fs.sb.itable_off + fs.stat("/" + text(EVIL)).st_ino * INODE_SIZE
    with open(pool, "r+b") as f:
        f.seek(off)
        f.write(bytes(INODE_SIZE))
    return pool


# EVIL's "\x1b[2J" as a style shows it: \033[2J, '$'\033''[2J, ?[2J (ls -q)
SHOWN_ESCAPED = re.compile(rb"(\\033|\?)(?:'')?\[2J")


# Runs each command in one process on the ptys (a process each costs a
# second here): the CLI as the daxfs script runs it, a marker after each.
DRIVER = """
import json, sys
from daxfs.cli import app
for args in json.load(open(sys.argv[1])):
    try:
        app(args, prog_name="daxfs")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.write(f"=====end {code}\\n")
        stream.flush()
"""
END = re.compile(rb"=====end (\d+)\n")


def on_terminal_each(commands: list[list[str]], tmp_dir: str) -> list[tuple[bytes, bytes, int]]:
    """(stdout, stderr, status) of each command, run on ptys in one process."""
    listing = os.path.join(tmp_dir, "commands.json")
    with open(listing, "w") as f:
        json.dump(commands, f)  # lone surrogates (bytes that are not UTF-8) survive
    out, err, code = on_terminal([sys.executable, "-c", DRIVER, listing], DUMB)
    assert code == 0, err
    outs, errs = END.split(out), END.split(err)
    assert len(outs) == len(errs) == 2 * len(commands) + 1, (out, err)
    assert outs[1::2] == errs[1::2]
    return list(zip(outs[0::2], errs[0::2], map(int, outs[1::2]), strict=False))


def test_no_command_writes_a_raw_control_byte_to_a_terminal(evil_pool, shm_dir):
    commands = evil_commands(evil_pool, shm_dir)
    results = on_terminal_each(list(commands.values()), shm_dir)
    for what, (out, err, code) in zip(commands, results, strict=True):
        assert raw_controls(out) == [] and raw_controls(err) == [], (what, out, err)
        assert b"Traceback" not in err, (what, err)
        if what == "fsck":  # the report names the entry (as check words it)
            assert code == 4 and b"error: " in out, (what, out, err)
        elif code:  # an error: one line, the name escaped in it
            assert len(err.splitlines()) == 1 and err.startswith(b"daxfs: "), (what, err)
            assert SHOWN_ESCAPED.search(err), (what, err)
        else:
            assert SHOWN_ESCAPED.search(out), (what, out)


def test_stat_and_getmap_show_names_as_coreutils_messages_do(evil_pool):
    runner = CliRunner()
    evil = text(EVIL)
    out = runner.invoke(app, ["stat", f"{evil_pool}:/{evil}-link"]).output
    assert f"{quote('/' + evil + '-link')} -> {quote(evil)}" in out
    assert (
        quote("/" + evil)
        == "'/'$'\\033''[2J'$'\\033'']0;owned'$'\\a\\n\\r\\t\\b\\177\\302\\205\\302\\233\\377'"
    )
    out = runner.invoke(app, ["getmap", f"{evil_pool}:/{evil}"]).output
    assert out.splitlines()[0].rstrip() == quote("/" + evil)
    assert raw_controls(out.encode("utf-8", "surrogateescape")) == []


def test_names_in_os_errors_are_quoted(evil_pool):
    """filename and filename2 of an OSError from the pool come out quoted."""
    evil = "/" + text(EVIL)
    with daxfs.mount(evil_pool) as fs, pytest.raises(NotADirectoryError) as info:
        fs.rename(evil + "-dir", evil)
    line = describe_oserror(info.value)
    assert line == f"{quote(evil + '-dir')} -> {quote(evil)}: Not a directory"
    assert raw_controls(line.encode("utf-8", "surrogateescape")) == []
    prose = OSError(errno.EIO, f"could not read {evil}")  # a name inside the reason
    assert raw_controls(describe_oserror(prose).encode("utf-8", "surrogateescape")) == []


def test_markup_in_a_name_is_shown_as_written(shm_dir):
    """rich would read "[bold red]x" as markup in a table cell or title."""
    pool = new_pool(shm_dir)
    with daxfs.mount(pool) as fs, fs.open("/[bold red]x", "wb") as f:
        f.write(b"y")
    runner = CliRunner()
    assert "[bold red]x" in runner.invoke(app, ["stat", f"{pool}:/[bold red]x"]).output
    assert "'/[bold red]x'" in runner.invoke(app, ["getmap", f"{pool}:/[bold red]x"]).output


def test_quote_corner_cases():
    assert quote("") == "''" and quote("", "c") == '""' and quote("", "escape") == ""
    assert quote("plain") == "plain" and quote("plain", "shell-always") == "'plain'"
    assert quote("it's") == '"it\'s"'
    assert quote("it's\n") == "'it'\\''s'$'\\n'"  # a control: no "..." form
    assert hide_control_chars("a\x1b[2J\udce2\udc80") == "a?[2J?"  # cut short: one ?
    assert hide_control_chars("\udce2\udc80A") == "??A"  # not UTF-8: one ? a byte
    # stricter than glibc: a bidi override and a no-break space are escaped
    assert quote("\u202eevil") == "''$'\\342\\200\\256''evil'"
    assert quote("a\u00a0b") == "'a'$'\\302\\240''b'"


# --------------------------------------------------------------------------
# rm -r: a loop, and a directory met twice stops it
# --------------------------------------------------------------------------
DEEP = 1500


def test_rm_removes_a_1500_level_tree(shm_dir):
    pool = new_pool(shm_dir)
    bottom = "/d" * DEEP
    with daxfs.mount(pool) as fs:
        fs.makedirs(bottom)
        fs.symlink("/", bottom + "/to-root")  # removed, never followed
        with fs.open("/d" * (DEEP // 2) + "/f", "wb") as f:
            f.write(b"half way")
        with fs.open("/keep", "wb") as f:
            f.write(b"keep")
    result = CliRunner().invoke(app, ["rm", "-r", f"{pool}:/d"])
    assert result.exit_code == 0, (result.output, result.exception)
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == ["keep"]
    assert daxfs.check(pool).ok


@pytest.mark.parametrize(
    ("attack", "target", "met", "kept"),
    [
        ("self_dir", "/a", "/a/self", "/a/f"),
        ("ancestor_dir", "/a", "/a/b/c/up", "/a/b/c/f"),
        ("fanout", "/top", None, None),
    ],
)
def test_rm_stops_at_a_directory_met_twice(shm_dir, attack, target, met, kept):
    """A cycle or a second name for a directory: CorruptionError (EUCLEAN) with
    the path at once, before the directory listing it loses anything."""
    crafted = pytest.importorskip("daxfs.crafted")
    pool = os.path.join(shm_dir, attack + ".pool")
    crafted.build(attack, pool, "16M")
    with daxfs.mount(pool) as fs:
        with pytest.raises(CorruptionError) as info:
            remove(fs, target, recursive=True)
        assert info.value.errno == errno.EUCLEAN
        if met is not None:  # rm's own set finds it (in fanout, loading /top does)
            assert info.value.filename == met
            assert fs.lstat(kept).st_size > 0  # the directory listing it was left whole
    result = CliRunner().invoke(app, ["rm", "-r", f"{pool}:{target}"])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert result.output.startswith("daxfs: ") and "Traceback" not in result.output
