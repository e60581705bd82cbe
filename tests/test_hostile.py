"""Every crafted hostile pool (daxfs.crafted) through every command.

Each attack is built once per module (deterministic; pristine images are
never touched) and every test works on its own copy of the image, since a
command may replay the journal, reclaim orphans or repair.  Commands run
as real subprocesses under a hang limit (a hang is a failure, and the
process group is killed):

  ls           ``daxfs ls -l POOL`` and ``daxfs ls -l POOL:/DIR`` for each
               directory of the root (as the API lists it)
  ls on a tty  ``daxfs ls -l POOL`` on a pseudo-terminal, for the pools with
               odd names and targets: no control character from a name
               or a link target reaches the screen, one line per entry
  fsck         ``daxfs fsck``: 0 for a legal pool, 4 for a hostile one
  repair       ``daxfs fsck --repair`` fixes (0 for a legal pool, 1 for a
               hostile one), after which ``fsck`` is clean, the API lists
               the whole tree, and ``ls -l`` lists the root and a
               lost+found the repair filled (no attack here is
               unrepairable by design)
  cp           ``daxfs cp -r POOL:/ DEST``
  fuse         ``daxfs mount -f POOL MNT``, then ``cp -r MNT DEST`` and
               ``tar --sparse -cf - -C MNT .`` (the stream is scanned)
  fsspec       ``DaxFileSystem(pool=...).get('/', DEST, recursive=True)``
  walk         ``fs.walk`` over ``daxfs.mount(pool, readonly=True)``
  case folding ``daxfs cp`` and fsspec's get of the case_fold pool into a
               case-insensitive destination (tests/casefold_fuse.py)

For each: exit 0 or clear errors (every stderr line starts with ``daxfs: ``
or the tool's own name, never a traceback), and for every copy: nothing
written outside the destination (the sentinel directory beside it, the
bait files the pools' symlinks name, /etc/passwd and the listing of / keep
their hashes), no host file read into it (the bait's random marker and
/etc/passwd's first line appear in no regular file of the copy, nor in the
tar stream), no directory copied twice (a copy holds fewer entries than
the pool has inodes), and success only for a whole copy (the tree as the
API lists it, sparse files sparse) of a pool the API lists without error:
never a silent partial success.  A legal pool (fsck clean) must give exit
0 everywhere, except that fsspec may refuse a pool's dangling or looping
symlinks with an error.

Attacks whose cost grows with the pool (``Attack.scales``) run at two
sizes under SCALE_LIMIT, a limit that the quadratic code this issue
replaced blows at the larger size (measured on this 2-core machine with
the code of ac70d92, ``python -m daxfs.bench hostile``: the quadratic
journal took 1.7 s to check at 8 MiB and 26-31 s at 64 MiB; the part-full
extent chain 0.28 s at 64 MiB and 4.5 s at 256 MiB per mount, so about
18 s at 512 MiB), while linear code takes well under a second there.
Everything else gets HANG_LIMIT (60 s; DAXFS_HOSTILE_HANG overrides it),
generous for pools of a few MiB.  Copies go to a private 1 GiB tmpfs, so
a copy that writes the zeroes of a 2^62-byte file fills that, not the
machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import pty
import re
import secrets
import select
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import casefold_mount, is_mounted, needs_fuse
from daxfs import crafted
from daxfs.crafted import ATTACKS, BAIT_DIR, BAIT_FILE, TERM_INJECT_NAMES
from daxfs.layout import BLOCK, INODE_MAGIC, INODE_SIZE, unpack_superblock

MiB = 1 << 20
HANG_LIMIT = float(os.environ.get("DAXFS_HOSTILE_HANG", "60"))
SCALE_LIMIT = 10.0
FUSE_SLOWER = 3  # hang limits through the FUSE mount (test_fuse_cp_and_tar)
BIG_SIZE = {
    "quadratic_journal": 64 * MiB,
    "long_chain": 64 * MiB,
    "long_chain_sparse": 512 * MiB,
    "orphans": 64 * MiB,
}
DEST_TMPFS_SIZE = "1G"
MOUNT_WAIT = 15.0
# A legal pool's symlinks may dangle or loop; fsspec may say so instead of copying.
SYMLINK_ATTACKS = {"symlink_farm", "case_fold", "term_inject"}

_venv_daxfs = Path(sys.executable).with_name("daxfs")
DAXFS = [str(_venv_daxfs)] if _venv_daxfs.exists() else [sys.executable, "-m", "daxfs.cli"]


@dataclass(frozen=True)
class Run:
    """One attack at one pool size."""

    attack: str
    size: int

    @property
    def id(self) -> str:
        return f"{self.attack}@{self.size // MiB}M"

    @property
    def legal(self) -> bool:
        return ATTACKS[self.attack].legal

    @property
    def limit(self) -> float:
        return SCALE_LIMIT if ATTACKS[self.attack].scales else HANG_LIMIT


RUNS = [Run(name, a.least) for name, a in ATTACKS.items()] + [
    Run(name, BIG_SIZE[name]) for name, a in ATTACKS.items() if a.scales
]
by_run = pytest.mark.parametrize("run", RUNS, ids=lambda r: r.id)


# --------------------------------------------------------------------------
# running a command under a hang limit
# --------------------------------------------------------------------------
@dataclass
class Ran:
    """What a finished (or killed) command did."""

    what: str  # the command, for messages
    code: int | None  # None: killed at the hang limit
    out: bytes
    err: str
    seconds: float


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group we started for ``proc`` (it leads it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def execute(argv: list[str], limit: float, what: str | None = None, **kw) -> Ran:
    """Run ``argv`` in its own process group; kill the group at ``limit``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **kw,
    )
    try:
        out, err = proc.communicate(timeout=limit)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        code = None
    text = err.decode("utf-8", "replace")
    return Ran(what or " ".join(argv), code, out, text, time.monotonic() - t0)


def daxfs(*args: str, limit: float) -> Ran:
    return execute([*DAXFS, *args], limit, "daxfs " + " ".join(_short(a) for a in args))


def python(script: str, *args: str, limit: float, what: str) -> Ran:
    return execute([sys.executable, "-c", script, *args], limit, what)


def together(*calls) -> list[Ran]:
    """Run the commands (zero-argument callables returning a Ran) at once:
    they are independent, and the machine has two cores."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: call(), calls))


def _short(arg: str) -> str:
    return re.sub(r"/\S*/(pool|dest\w*|mnt)\b", r"\1", arg)


def assert_clear(r: Ran, tool: str, *, must_succeed: bool = False) -> None:
    """Ended in time, with exit 0 or one-line errors naming ``tool``."""
    assert r.code is not None, f"hang: `{r.what}` did not end within {r.seconds:.0f} s"
    assert r.code >= 0, f"`{r.what}` died of signal {-r.code}: {r.err[-300:]}"
    assert "Traceback" not in r.err, f"`{r.what}`: traceback: {_last_line(r.err)}"
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    stray = [ln for ln in lines if not ln.startswith(f"{tool}: ")]
    assert not stray, f"`{r.what}`: stderr not `{tool}: ...`: {stray[:3]}"
    if must_succeed:
        assert r.code == 0, f"`{r.what}` failed on a legal pool: exit {r.code}: {_last_line(r.err)}"


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(nothing on stderr)"


# --------------------------------------------------------------------------
# the arena: pools, the destination tmpfs, the sentinel and the baits
# --------------------------------------------------------------------------
@dataclass
class Arena:
    pools: Path  # pristine images, and per-test copies (on /dev/shm)
    host: Path  # destinations, the sentinel and the baits (a private tmpfs)
    private_tmpfs: bool
    marker: bytes  # in the bait files: must never be copied anywhere

    @property
    def outside(self) -> Path:
        return self.host / "outside"

    @property
    def sentinel(self) -> Path:
        return self.host / "sentinel"


@pytest.fixture(scope="module")
def arena() -> Iterator[Arena]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    pools = Path(tempfile.mkdtemp(prefix="daxfs-hostile-", dir=base))
    host = pools / "host"
    host.mkdir()
    private = os.geteuid() == 0 and _mount_tmpfs(host)
    a = Arena(pools, host, private, b"daxfs-bait-" + secrets.token_hex(16).encode())
    try:
        a.outside.mkdir()
        (a.outside / BAIT_FILE).write_bytes(b"host bait file\n" + a.marker + b"\n")
        (a.outside / BAIT_DIR).mkdir()
        (a.outside / BAIT_DIR / "inside.txt").write_bytes(a.marker + b"\n")
        a.sentinel.mkdir()
        (a.sentinel / "keep.txt").write_bytes(b"a file beside the destination\n")
        yield a
    finally:
        if private:
            subprocess.run(["umount", "-l", str(host)], check=False)
        remove_tree(pools)


def _mount_tmpfs(where: Path) -> bool:
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DEST_TMPFS_SIZE}", "tmpfs", str(where)],
        capture_output=True,
    )
    return r.returncode == 0


@pytest.fixture(scope="module")
def pristine(arena: Arena):
    """pristine(run) -> the path of the run's pool as built (built once)."""
    built: dict[Run, Path] = {}

    def get(r: Run) -> Path:
        if r not in built:
            path = arena.pools / f"pristine-{r.id}"
            crafted.build(r.attack, str(path), r.size, str(arena.outside))
            built[r] = path
        return built[r]

    return get


@pytest.fixture
def pool(request, arena: Arena, pristine) -> Iterator[Path]:
    """A copy of the test's pristine pool (holes kept), removed afterwards."""
    r: Run = request.node.callspec.params["run"]
    copy = arena.pools / f"pool-{r.id}"
    crafted.copy_pool(pristine(r), copy)
    try:
        yield copy
    finally:
        copy.unlink(missing_ok=True)


@dataclass
class Dest:
    """Where a copy goes (not created beforehand), and what lay outside it then."""

    path: Path
    arena: Arena
    before: dict[str, str]

    def assert_nothing_written_outside(self) -> None:
        after = outside_state(self.arena)
        changed = sorted(
            p for p in set(after) | set(self.before) if after.get(p) != self.before.get(p)
        )
        shown = [
            os.path.relpath(p, self.arena.host) if p.startswith(str(self.arena.host)) else p
            for p in changed
        ]
        assert not changed, f"a write outside the destination: {shown[:4]}"


@pytest.fixture
def dest(request, arena: Arena) -> Iterator[Dest]:
    """A destination on the private tmpfs, removed afterwards."""
    if request.node.callspec.params["run"].attack == "huge_sparse" and not arena.private_tmpfs:
        pytest.skip("a copy that writes a 2^62-byte hole needs a private tmpfs to fill (root)")
    d = Dest(arena.host / "dest", arena, outside_state(arena))
    try:
        yield d
    finally:
        remove_tree(d.path)


# --------------------------------------------------------------------------
# nothing written outside, nothing read in
# --------------------------------------------------------------------------
def outside_state(arena: Arena) -> dict[str, str]:
    """Hashes of everything a copy must leave alone: the arena but its
    destinations, the baits, /etc/passwd, and the names in /."""
    state = {"/": " ".join(sorted(os.listdir("/"))), "/etc/passwd": _hash_file("/etc/passwd")}
    for p, st in host_entries(arena.host, skip=("dest", "cf-", "mnt")):
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            state[p] = f"{kind} {st.st_mode:o} {_hash_file(p)}"
        elif stat.S_ISLNK(st.st_mode):
            state[p] = f"{kind} {os.readlink(p)}"
        else:
            state[p] = f"{kind} {st.st_mode:o}"
    return state


def host_entries(top: Path, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of everything under ``top`` but its entries whose names
    start with one of ``skip``, without following symlinks: iterative, since
    a copied tree may be deeper than Python's recursion limit (os.walk and
    shutil.rmtree recurse in Python 3.11)."""
    todo = [str(top)]
    while todo:
        here = todo.pop()
        with os.scandir(here) as it:
            for e in it:
                if here == str(top) and e.name.startswith(skip or ("\0",)):
                    continue
                st = e.stat(follow_symlinks=False)
                yield e.path, st
                if stat.S_ISDIR(st.st_mode):
                    todo.append(e.path)


def remove_tree(path: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _hash_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return "missing"


def host_secrets(arena: Arena) -> list[bytes]:
    out = [arena.marker]
    try:
        with open("/etc/passwd", "rb") as f:
            first = f.readline().strip()
        if len(first) >= 8:
            out.append(first)
    except OSError:
        pass
    return out


def assert_nothing_read_in(arena: Arena, where: Path) -> None:
    """No regular file under ``where`` holds a host secret (its data
    segments are scanned, so a copied 2^62-byte hole costs nothing)."""
    needles = host_secrets(arena)
    if not os.path.lexists(where):
        return  # the copy made nothing
    for p, st in host_entries(where):
        if not stat.S_ISREG(st.st_mode):
            continue
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            for start, end in crafted.data_segments(fd, st.st_size):
                data = os.pread(fd, min(end - start, 256 * MiB), start)
                hit = [n for n in needles if n in data]
                assert not hit, f"host file content copied into {p}"
        finally:
            os.close(fd)


# --------------------------------------------------------------------------
# what the API lists (the reference a copy of a legal pool is held to)
# --------------------------------------------------------------------------
INVENTORY = r"""
import json, stat, sys
import daxfs
pool, full = sys.argv[1], sys.argv[2] == "full"
out = {"root_dirs": [], "tree": None}
try:
    with daxfs.mount(pool, readonly=True) as fs:
        for e in fs.scandir("/"):
            if e.is_dir(follow_symlinks=False):
                out["root_dirs"].append(e.name)
        if full:
            tree, todo, seen = {}, [""], set()
            while todo:
                rel = todo.pop()
                for e in fs.scandir(rel or "/"):
                    path = rel + "/" + e.name
                    st = fs.lstat(path)
                    if stat.S_ISDIR(st.st_mode):
                        if st.st_ino in seen:
                            raise OSError(40, "directory met twice", path)
                        seen.add(st.st_ino)
                        tree[path] = ["d"]
                        todo.append(path)
                    elif stat.S_ISLNK(st.st_mode):
                        tree[path] = ["l", fs.readlink(path)]
                    else:
                        tree[path] = ["f", st.st_size]
            out["tree"] = tree
except OSError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def inventory(arena: Arena, pristine):
    """inventory(run) -> what the API lists in the run's pool: {'root_dirs':
    [...], 'tree': {path: kind} or None, 'error': why the listing stopped (if
    it did), 'live_inodes': the inode slots in use}."""
    known: dict[Run, dict] = {}

    def get(r: Run) -> dict:
        if r not in known:
            copy = arena.pools / f"inventory-{r.id}"
            crafted.copy_pool(pristine(r), copy)
            try:
                ran = python(INVENTORY, str(copy), "full", limit=r.limit, what="inventory")
            finally:
                copy.unlink(missing_ok=True)
            known[r] = (
                json.loads(ran.out)
                if ran.code == 0
                else {"root_dirs": [], "tree": None, "error": f"the API listing: {ran.what} failed"}
            )
            known[r]["live_inodes"] = live_inodes(pristine(r))
        return known[r]

    return get


def host_tree(top: Path) -> dict[str, list]:
    """A host tree in the inventory's terms (paths from ``top``, '/'-rooted)."""
    tree: dict[str, list] = {}
    for p, st in host_entries(top):
        rel = "/" + os.path.relpath(p, top)
        if stat.S_ISDIR(st.st_mode):
            tree[rel] = ["d"]
        elif stat.S_ISLNK(st.st_mode):
            tree[rel] = ["l", os.readlink(p)]
        else:
            tree[rel] = ["f", st.st_size]
    return tree


def live_inodes(pool: Path) -> int:
    """Inode slots in use in ``pool`` (by their magic; the slots are read,
    nothing is parsed, so this is safe on any pool)."""
    with open(pool, "rb") as f:
        sb = unpack_superblock(f.read(BLOCK), 0, os.fstat(f.fileno()).st_size // BLOCK * BLOCK)
        f.seek(sb.itable_off)
        table = f.read(sb.inode_count * INODE_SIZE)
    return sum(
        1
        for off in range(0, len(table), INODE_SIZE)
        if int.from_bytes(table[off + 4 : off + 6], "little") == INODE_MAGIC
    )


def check_copy(r: Run, ran: Ran, inventory, copy: Path, what: str, links: bool = True) -> None:
    """What any copy of any pool must be: no directory copied twice (a copy
    of a pool holds fewer entries than the pool has inodes: none of these
    pools holds a hard link), and success only for a whole copy of a pool
    the API lists without error (never a silent partial success)."""
    inv = inventory(r)
    entries = len(host_tree(copy)) if os.path.lexists(copy) else 0
    assert entries < inv["live_inodes"], (
        f"{what}: {entries} entries copied from a pool of {inv['live_inodes']} inodes "
        "(a directory was copied again under another name)"
    )
    if ran.code == 0:
        assert inv.get("error") is None, (
            f"{what} succeeded, but the pool holds what the API cannot list: {inv['error']}"
        )
        assert_whole_copy(r, inventory, copy, what, links)


def _under(path: str, tops: set[str]) -> bool:
    """Is ``path`` one of ``tops`` or inside one?"""
    parts = path.split("/")
    return any("/".join(parts[:i]) in tops for i in range(2, len(parts) + 1))


def assert_whole_copy(r: Run, inventory, copy: Path, what: str, links: bool = True) -> None:
    """The copy holds the pool's tree as the API lists it (symlinks as
    symlinks, unless ``links`` is False: then whatever the copy made of a
    symlink is not compared), sparse files sparse."""
    expected = inventory(r)["tree"]
    assert expected is not None, f"the API could not list the legal pool {r.id}"
    got = host_tree(copy)
    if not links:  # what a copy makes of a symlink is its own business
        linked = {p for p, k in expected.items() if k[0] == "l"}
        expected = {p: k for p, k in expected.items() if p not in linked}
        got = {p: k for p, k in got.items() if not _under(p, linked)}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = sorted(p for p in set(expected) & set(got) if expected[p] != got[p])
    assert not (missing or extra or differ), (
        f"{what}: copy differs from the pool: missing {missing[:3]}, extra {extra[:3]}, "
        f"different {differ[:3]}"
    )
    for p, kind in expected.items():
        if kind[0] == "f" and kind[1] > 64 * MiB:
            st = os.lstat(str(copy) + p)
            assert st.st_blocks * 512 < 64 * MiB, f"{what}: {p} copied dense"


# --------------------------------------------------------------------------
# ls, fsck, repair
# --------------------------------------------------------------------------
def listings(pool: Path, r: Run, root_dirs: list[str]) -> list[Ran]:
    """``daxfs ls -l`` of the root and of each of ``root_dirs``, at once."""
    targets = [str(pool)] + [f"{pool}:/{name}" for name in root_dirs]
    return together(*(lambda t=t: daxfs("ls", "-l", t, limit=r.limit) for t in targets))


@by_run
def test_ls(run: Run, pool: Path, inventory):
    for ran in listings(pool, run, inventory(run)["root_dirs"]):
        assert_clear(ran, "daxfs", must_succeed=run.legal)


# The pools whose names and link targets hold bytes worth escaping (the
# others' root names are plain, and a terminal costs a process per run).
TERMINAL_RUNS = [r for r in RUNS if r.attack in ("term_inject", "symlink_farm")]


@pytest.mark.parametrize("run", TERMINAL_RUNS, ids=lambda r: r.id)
def test_ls_on_a_terminal_shows_no_control_characters(run: Run, pool: Path):
    ran = run_on_terminal([*DAXFS, "ls", "-l", str(pool)], run.limit)
    assert_clear(ran, "daxfs", must_succeed=run.legal)
    text = ran.out.decode("utf-8", "replace")
    raw = sorted({repr(c) for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0})
    assert not raw, f"control characters reached the terminal: {raw}"
    if run.attack == "term_inject":
        lines = text.rstrip("\n").split("\n")
        assert len(lines) == len(TERM_INJECT_NAMES), f"{len(lines)} lines for 6 names: {lines}"


def run_on_terminal(argv: list[str], limit: float) -> Ran:
    """``argv`` with stdout on a pseudo-terminal (raw mode, so the bytes read are
    the program's; 500 columns, TERM=dumb so that no styling is expected)."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 500, 0, 0))
    env = dict(os.environ, TERM="dumb", COLUMNS="500")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE,
        start_new_session=True, env=env,
    )  # fmt: skip
    os.close(slave)
    out, code = bytearray(), None
    try:
        while True:
            left = limit - (time.monotonic() - t0)
            if left <= 0 or not select.select([master], [], [], left)[0]:
                _kill_group(proc)
                break
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the terminal's other side is closed
                chunk = b""
            if not chunk:
                code = proc.wait(timeout=max(1.0, limit - (time.monotonic() - t0)))
                break
            out += chunk
    finally:
        os.close(master)
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    return Ran("daxfs ls -l POOL (on a terminal)", code, bytes(out), err, time.monotonic() - t0)


@by_run
def test_fsck_tells_legal_from_hostile(run: Run, pool: Path):
    ran = daxfs("fsck", str(pool), limit=run.limit)
    assert_clear(ran, "daxfs")
    want = 0 if run.legal else 4
    assert ran.code == want, f"fsck exit {ran.code}, expected {want}: {_tail(ran.out)}"


@by_run
def test_fsck_repair_converges(run: Run, pool: Path):
    fixed = daxfs("fsck", "--repair", str(pool), limit=run.limit)
    assert_clear(fixed, "daxfs")
    assert fixed.code in ((0,) if run.legal else (1,)), (
        f"fsck --repair exit {fixed.code}: {_tail(fixed.out)}"
    )
    # Then clean, and readable everywhere: the API lists the whole tree, and
    # ls lists the root and a lost+found the repair filled.
    lost_found = b"lost+found" in fixed.out
    again, listed, *shown = together(
        lambda: daxfs("fsck", str(pool), limit=run.limit),
        lambda: python(INVENTORY, str(pool), "full", limit=run.limit, what="API listing"),
        lambda: daxfs("ls", "-l", str(pool), limit=run.limit),
        *(
            [lambda: daxfs("ls", "-l", f"{pool}:/lost+found", limit=run.limit)]
            if lost_found
            else []
        ),
    )
    assert_clear(again, "daxfs")
    assert again.code == 0, f"fsck after repair: exit {again.code}: {_tail(again.out)}"
    assert_clear(listed, "inventory", must_succeed=True)
    error = json.loads(listed.out).get("error")
    assert error is None, f"after repair the API cannot list the tree: {error}"
    for ran in shown:
        assert_clear(ran, "daxfs", must_succeed=True)


def _tail(out: bytes, lines: int = 3) -> str:
    text = out.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:])


# --------------------------------------------------------------------------
# copies
# --------------------------------------------------------------------------
@by_run
def test_cp(run: Run, pool: Path, dest: Dest, arena: Arena, inventory):
    ran = daxfs("cp", "-r", f"{pool}:/", str(dest.path), limit=run.limit)
    dest.assert_nothing_written_outside()
    assert_clear(ran, "daxfs", must_succeed=run.legal)
    assert_nothing_read_in(arena, dest.path)
    check_copy(run, ran, inventory, dest.path, "daxfs cp -r")


FSSPEC_GET = r"""
import sys
from daxfs.fsspec import DaxFileSystem
pool, dest = sys.argv[1:3]
try:
    DaxFileSystem(pool=pool).get("/", dest, recursive=True)
except OSError as e:
    print(f"fsspec: {e}", file=sys.stderr)
    sys.exit(1)
"""


@by_run
def test_fsspec_get(run: Run, pool: Path, dest: Dest, arena: Arena, inventory):
    ran = python(FSSPEC_GET, str(pool), str(dest.path), limit=run.limit, what="fsspec get('/')")
    dest.assert_nothing_written_outside()
    strict = run.legal and run.attack not in SYMLINK_ATTACKS
    assert_clear(ran, "fsspec", must_succeed=strict)
    assert_nothing_read_in(arena, dest.path)
    check_copy(run, ran, inventory, dest.path, "fsspec get", links=False)


WALK = r"""
import sys
import daxfs
def fail(e):
    raise e
try:
    tops = names = 0
    with daxfs.mount(sys.argv[1], readonly=True) as fs:
        for _top, dirs, files in fs.walk("/", onerror=fail):
            tops, names = tops + 1, names + len(dirs) + len(files)
    print(tops, names)
except OSError as e:
    print(f"walk: {e}", file=sys.stderr)
    sys.exit(1)
"""


@by_run
@pytest.mark.parametrize("how", ["readonly", "follow"])
def test_walk(run: Run, pool: Path, inventory, how: str):
    """fs.walk through a read-only mount and through a follower (which
    replays nothing and trusts no lock: it reads the log up to the live
    word the pool names, and every home as it goes)."""
    script = WALK if how == "readonly" else WALK.replace("readonly=True", "follow=True")
    ran = python(script, str(pool), limit=run.limit, what=f"fs.walk('/'), {how}")
    assert_clear(ran, "walk", must_succeed=run.legal)
    if ran.code == 0:  # then it saw what the API lists, all of it
        inv = inventory(run)
        if how == "follow" and inv.get("error") and inv["tree"] is None:
            # A mount refused the pool at its scan of every slot, which a
            # follower does not make (it checks what it reads): damage the
            # walk never reads (a file's extent chain) is not its to find.
            return
        assert inv.get("error") is None, (
            f"fs.walk succeeded, but the pool holds what the API cannot list: {inv['error']}"
        )
        tops, names = map(int, ran.out.split())
        dirs = 1 + sum(1 for kind in inv["tree"].values() if kind[0] == "d")
        assert (tops, names) == (dirs, len(inv["tree"])), (
            f"fs.walk saw {tops} directories and {names} names; the pool holds "
            f"{dirs} and {len(inv['tree'])}"
        )


# --------------------------------------------------------------------------
# FUSE: real cp and tar through a mount
# --------------------------------------------------------------------------
class Served:
    """A FUSE server child (``argv`` serving on ``mnt`` in the foreground)."""

    def __init__(self, argv: list[str], mnt: Path, log: Path, limit: float):
        self.mnt, self.log, self.limit = mnt, log, limit
        mnt.mkdir()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + min(limit, MOUNT_WAIT)
        while time.monotonic() < deadline and not is_mounted(mnt) and self.proc.poll() is None:
            time.sleep(0.02)
        self.up = is_mounted(mnt)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> Ran:
        """Unmount, and wait for the server to finish (killed at the limit)."""
        t0 = time.monotonic()
        if is_mounted(self.mnt):
            if subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        try:
            code: int | None = self.proc.wait(timeout=self.limit)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            code = None
        return Ran("the FUSE server", code, b"", self.output(), time.monotonic() - t0)


@needs_fuse
@by_run
def test_fuse_cp_and_tar(run: Run, pool: Path, dest: Dest, arena: Arena, inventory):
    mnt = arena.host / "mnt"
    # cp and tar at once through FUSE, every path revalidated by the kernel:
    # the 1,500-level tree takes 5 s here (28 s to over 3 min before the
    # path cache), and its hang limit stays wider than a direct command's.
    limit = run.limit * FUSE_SLOWER
    served = Served(
        [*DAXFS, "mount", "-f", str(pool), str(mnt)], mnt, pool.with_suffix(".log"), limit
    )
    try:
        if not served.up:
            ended = served.stop()
            assert_clear(ended, "daxfs")
            assert not run.legal, f"daxfs mount refused a legal pool: {_last_line(ended.err)}"
            return
        copied, tarred = together(
            lambda: execute(["cp", "-r", str(served.mnt), str(dest.path)], limit, "cp -r MNT DEST"),
            lambda: tar_stream(served.mnt, limit, host_secrets(arena)),
        )
    finally:
        ended = served.stop()
        if not is_mounted(served.mnt):
            served.mnt.rmdir()
    dest.assert_nothing_written_outside()
    assert_clear(copied, "cp", must_succeed=run.legal)
    assert_clear(tarred, "tar", must_succeed=run.legal)
    assert not tarred.out, f"tar: host file content in the archive: {tarred.out!r}"
    assert_nothing_read_in(arena, dest.path)
    assert_clear(ended, "daxfs")
    check_copy(run, copied, inventory, dest.path, "cp -r through FUSE")


def tar_stream(mnt: Path, limit: float, needles: list[bytes]) -> Ran:
    """``tar --sparse -cf - -C MNT .`` with its stream scanned for ``needles``
    as it comes (never stored); ``out`` holds the needles found."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["tar", "--sparse", "-cf", "-", "-C", str(mnt), "."],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    found: set[bytes] = set()
    keep = max(len(n) for n in needles)
    tail = b""
    assert proc.stdout is not None and proc.stderr is not None
    code: int | None = None
    while True:
        left = limit - (time.monotonic() - t0)
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            _kill_group(proc)
            break
        chunk = os.read(proc.stdout.fileno(), 1 << 20)
        if not chunk:
            code = proc.wait(timeout=max(1.0, left))
            break
        window = tail + chunk
        found.update(n for n in needles if n in window)
        tail = window[-keep:]
    err = proc.stderr.read().decode("utf-8", "replace")
    return Ran("tar -cf - -C MNT .", code, b" ".join(sorted(found)), err, time.monotonic() - t0)


# --------------------------------------------------------------------------
# a destination that folds case
# --------------------------------------------------------------------------
@pytest.fixture
def folding_dest(arena: Arena) -> Iterator[Dest]:
    """A destination in a case-insensitive directory (tests/casefold_fuse.py
    over a backing directory; "cf-" keeps it out of outside_state)."""
    where = arena.host / "cf-folding"
    where.mkdir()
    before = outside_state(arena)
    try:
        with casefold_mount(where) as mnt:
            yield Dest(mnt / "dest", arena, before)
    finally:
        if not is_mounted(where / "folded"):
            remove_tree(where)


CASE_FOLD_RUN = Run("case_fold", ATTACKS["case_fold"].least)


@pytest.mark.parametrize("run", [CASE_FOLD_RUN], ids=lambda r: r.id)
def test_cp_into_a_case_folding_destination(run: Run, pool: Path, folding_dest: Dest, arena):
    ran = daxfs("cp", "-r", f"{pool}:/", str(folding_dest.path), limit=run.limit)
    folding_dest.assert_nothing_written_outside()
    assert_clear(ran, "daxfs")
    assert_nothing_read_in(arena, folding_dest.path)


@pytest.mark.parametrize("run", [CASE_FOLD_RUN], ids=lambda r: r.id)
def test_fsspec_get_into_a_case_folding_destination(
    run: Run, pool: Path, folding_dest: Dest, arena
):
    what = "fsspec get('/')"
    ran = python(FSSPEC_GET, str(pool), str(folding_dest.path), limit=run.limit, what=what)
    folding_dest.assert_nothing_written_outside()
    assert_clear(ran, "fsspec")
    assert_nothing_read_in(arena, folding_dest.path)


# --------------------------------------------------------------------------
# the corpus itself
# --------------------------------------------------------------------------
def test_every_attack_is_documented_and_deterministic(arena: Arena):
    for name, attack in ATTACKS.items():
        assert attack.doc, f"{name} has no description"
        assert crafted.BUILDERS[name] is attack.build
    a, b = arena.pools / "det-a", arena.pools / "det-b"
    for name in ("fanout", "bad_names", "long_chain_sparse"):
        crafted.build(name, str(a), 8 * MiB, str(arena.outside))
        crafted.build(name, str(b), 8 * MiB, str(arena.outside))
        # the uuid (superblock and replica) is mkfs's; every other byte is the attack's
        with open(a, "rb") as fa, open(b, "rb") as fb:
            da, db = bytearray(fa.read()), bytearray(fb.read())
        for buf in (da, db):
            buf[0:4096] = bytes(4096)
            buf[-4096:] = bytes(4096)
        assert da == db, f"{name}: two builds differ"
    a.unlink()
    b.unlink()
