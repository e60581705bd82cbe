"""Several real processes sharing one pool, against a model (issue 13).

  * A Hypothesis state machine drives three child processes, each with its
    own mount of one pool.  Every rule picks the process that acts and the
    one that checks: the acting process creates, appends, overwrites,
    truncates, makes and removes directories, renames files and directories
    across directories (replacing files), unlinks; or it opens a file and
    holds it while another process unlinks it or renames another file over
    it (the holder keeps reading the old bytes; its close gives the space
    back); or it maps a file read-only and later compares the mapped bytes
    with the model while the others change other files.  Some rules fill a
    directory with up to 150 files or thin it out in one command (directories
    of several blocks), and one runs two processes at once on one directory
    (both filling it, one filling while the other unlinks, or both creating
    the same name exclusively: exactly one wins).  After every step a
    different process lists the changed directories and reads the changed
    files; every few steps one process walks the whole tree, every process
    reports the same free space, and the checker runs on the live pool.  At
    the end the children unmount, the checker must find nothing, and a
    fresh mount must see the model.
  * Catching up with another process's commits: two processes creating
    files alternately must apply journal records, not rebuild.
  * SIGKILL: one process runs a loop of creates, appends, renames and
    unlinks in its own directory and is killed at a random moment while two
    others keep doing acknowledged work; the survivors see exactly what they
    were told was done, the killed one's directory holds its completed
    operations and at most its one in-flight operation (whole, or for a
    create, the empty file its open made), and the pool checks clean.
  * The two bugs these tests met at random, reproduced deterministically:
    a kill between a commit's record and the publication of the journal's
    live word, and free blocks lost from a process's count when an
    optimistic change runs out of its window.

Children are separate Python processes (subprocess) driven by JSON lines
over stdin/stdout: every step is ordered by messages, never by sleeps (only
the moment of a kill is drawn in time).  A child that does not answer in
CHILD_TIMEOUT seconds fails the test instead of hanging it.  File contents
are generated from (seed, length) on both sides; children answer with
digests (size and a hash per 64 KiB piece), so a difference names the
first piece that differs.
"""

from __future__ import annotations

import functools
import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import daxfs
from conftest import new_pool, started_together
from daxfs.layout import BLOCK

MiB = 1 << 20
CHILD_TIMEOUT = 60.0
SHARE_EXAMPLES = int(os.environ.get("DAXFS_SHARE_EXAMPLES", "25"))
SHARE_STEPS = int(os.environ.get("DAXFS_SHARE_STEPS", "30"))
KILL_REPS = int(os.environ.get("DAXFS_SHARE_KILLS", "5"))

# What both sides compute: the bytes of a write and the digest of a file.
COMMON = r"""
import hashlib, random

PIECE = 64 * 1024

def payload(seed, n):
    return random.Random(seed).randbytes(n)

def named(name, salt, n):
    unit = f"{name}:{salt};".encode()
    return (unit * (n // len(unit) + 1))[:n]

def digest(data):
    with memoryview(data) as mv:
        pieces = []
        for i in range(0, len(mv), PIECE):
            with mv[i : i + PIECE] as piece:
                pieces.append(hashlib.sha1(piece).hexdigest()[:16])
        return {"size": len(mv), "pieces": pieces}

def whole(data):
    return hashlib.sha1(data).hexdigest()
"""
_common: dict = {}
exec(COMMON, _common)
payload, named, digest, whole = (_common[k] for k in ("payload", "named", "digest", "whole"))
PIECE = _common["PIECE"]

CHILD = COMMON + textwrap.dedent(r"""
    import errno, json, os, stat, sys, traceback
    import daxfs
    from daxfs.layout import BLOCK

    fs = None
    held = {}  # slot -> open file
    maps = {}  # slot -> Mapping

    def usage(path):
        # Blocks a file owns: data plus extent overflow blocks (st_blocks counts both).
        return fs.stat(path).st_blocks * 512 // BLOCK

    def tree():
        out = {}
        for top, dirs, files in fs.walk("/"):
            pre = top.rstrip("/") + "/"
            for d in dirs:
                out[pre + d] = ["d"]
            for f in files:
                with fs.open(pre + f, "rb") as fh:
                    data = fh.read()
                out[pre + f] = ["f", len(data), whole(data)]
        return out

    def kill_loop(d, log_path, seed):
        # Forever (until SIGKILL): an intent line, the operation, a done line.
        rng = random.Random(seed)
        names = set(fs.listdir(d))
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        print(json.dumps({"ok": sorted(names)}), flush=True)  # what it starts from
        n = 0
        while True:
            n += 1
            existing = sorted(names)
            c = rng.random()
            if not existing or (c < 0.45 and len(existing) < 20):
                size = rng.choice([0, 100, 4096, 5000, 70000, 300000, 2 * 1024 * 1024 + 4096])
                op = ["create", f"k{seed}x{n}", size, rng.randrange(1000)]
            elif c < 0.65:
                op = ["unlink", rng.choice(existing)]
            elif c < 0.85:
                op = ["rename", rng.choice(existing), rng.choice(existing + [f"r{seed}x{n}"])]
            else:
                size = rng.choice([1, 4096, 9000])
                op = ["append", rng.choice(existing), size, rng.randrange(1000)]
            os.write(log, (json.dumps(op) + "\n").encode())
            if op[0] == "create":
                with fs.open(f"{d}/{op[1]}", "xb") as f:
                    f.write(named(op[1], op[3], op[2]))
                names.add(op[1])
            elif op[0] == "unlink":
                fs.unlink(f"{d}/{op[1]}")
                names.discard(op[1])
            elif op[0] == "rename":
                fs.rename(f"{d}/{op[1]}", f"{d}/{op[2]}")
                names.discard(op[1])
                names.add(op[2])
            else:
                with fs.open(f"{d}/{op[1]}", "ab") as f:
                    f.write(named(op[1], op[3], op[2]))
            os.write(log, b"done\n")

    def run(cmd, a):
        global fs
        if cmd == "mount":  # pool[, commit mode]
            fs = daxfs.mount(a[0], commit=a[1] if len(a) > 1 and a[1] else None)
        elif cmd == "umount":
            assert not held and not maps, (held, maps)
            fs.close()
            fs = None
        elif cmd == "reset":  # after a failed example: let go of everything
            for f in held.values():
                f.close()
            for m in maps.values():
                m.close()
            held.clear()
            maps.clear()
            if fs is not None:
                fs.close()
            fs = None
        elif cmd == "create":  # path, mode, seed, n
            with fs.open(a[0], a[1]) as f:
                f.write(payload(a[2], a[3]))
        elif cmd == "create-named":  # path, name, salt, n
            with fs.open(a[0], "xb") as f:
                f.write(named(a[1], a[2], a[3]))
        elif cmd == "fill":  # directory, names, seed: many small files at once
            for j, name in enumerate(a[1]):
                with fs.open(a[0] + "/" + name, "xb") as f:
                    f.write(payload(a[2] + j, (j * 37) % 3000))
        elif cmd == "unlink-many":
            for path in a[0]:
                fs.unlink(path)
        elif cmd == "unlink-names":  # directory, names: several to a change (rm -r)
            left = fs._unlink_names(a[0], a[1])
            assert not left, left
        elif cmd == "mkdir-many":  # directory, names
            for name in a[1]:
                fs.mkdir(a[0] + "/" + name)
        elif cmd == "append":  # path, seed, n
            with fs.open(a[0], "ab") as f:
                f.write(payload(a[1], a[2]))
        elif cmd == "append-named":  # path, name, salt, n
            with fs.open(a[0], "ab") as f:
                f.write(named(a[1], a[2], a[3]))
        elif cmd == "pwrite":  # path, offset, seed, n
            with fs.open(a[0], "r+b") as f:
                f.seek(a[1])
                f.write(payload(a[2], a[3]))
        elif cmd == "truncate":
            fs.truncate(a[0], a[1])
        elif cmd in ("mkdir", "rmdir", "unlink", "rename"):
            getattr(fs, cmd)(*a)
        elif cmd == "list":
            return sorted(fs.listdir(a[0]))
        elif cmd == "stat":
            st_ = fs.stat(a[0])
            return ["d" if stat.S_ISDIR(st_.st_mode) else "f", st_.st_size, st_.st_nlink]
        elif cmd == "digest":
            with fs.open(a[0], "rb") as f:
                return digest(f.read())
        elif cmd == "snapshot":  # a directory's files and their whole bytes, in hex
            out = {}
            for name in fs.listdir(a[0]):
                with fs.open(a[0] + "/" + name, "rb") as f:
                    out[name] = f.read().hex()
            return out
        elif cmd == "tree":
            return tree()
        elif cmd == "usage":
            return usage(a[0])
        elif cmd == "free":
            return fs.statvfs().f_bfree
        elif cmd == "hold":  # slot, path
            held[a[0]] = fs.open(a[1], "rb")
        elif cmd == "read-held":
            f = held[a[0]]
            f.seek(0)
            return digest(f.read())
        elif cmd == "release":
            held.pop(a[0]).close()
        elif cmd == "map":  # slot, path
            maps[a[0]] = fs.map(a[1], "r")
        elif cmd == "read-map":
            with maps[a[0]].buffer as b:
                return digest(b)
        elif cmd == "unmap":
            maps.pop(a[0]).close()
        elif cmd == "counters":
            return dict(fs.coherence)
        elif cmd == "loop":  # never returns: the test kills this process
            kill_loop(*a)
        else:
            raise ValueError(f"unknown command {cmd!r}")
        return None

    print(json.dumps({"ok": "ready"}), flush=True)
    for line in sys.stdin:
        cmd, *args = json.loads(line)
        try:
            reply = {"ok": run(cmd, args)}
        except OSError as e:
            reply = {"err": errno.errorcode.get(e.errno, str(e.errno)), "msg": str(e)}
        except Exception as e:
            reply = {"exc": repr(e), "tb": traceback.format_exc()}
        print(json.dumps(reply), flush=True)
""")


# ---------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    """The children import the daxfs this process imported."""
    env = dict(os.environ)
    # The children prepare changes optimistically (coherence.Change), the
    # path with more to get wrong; tests/test_share_stress.py runs both.
    env["DAXFS_OPTIMISM"] = "1"
    src = os.path.dirname(os.path.dirname(os.path.abspath(daxfs.__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ChildFailed(AssertionError):
    pass


class Child:
    """One child process; call() sends a command and waits for its answer."""

    def __init__(self, label: str):
        self.label = label
        self.broken = False  # a timeout or a death: the line protocol is out of step
        self.last_error = ""
        self.buf = b""
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        assert self.expect("start") == {"ok": "ready"}

    def alive(self) -> bool:
        return self.p.poll() is None and not self.broken

    def send(self, *cmd) -> None:
        try:
            self.p.stdin.write((json.dumps(cmd) + "\n").encode())
            self.p.stdin.flush()
        except BrokenPipeError:
            self.broken = True
            raise ChildFailed(f"{self.label}: died before {cmd} (exit {self.p.poll()})") from None

    def expect(self, what) -> dict:
        fd = self.p.stdout.fileno()
        deadline = time.monotonic() + CHILD_TIMEOUT
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.broken = True
                raise ChildFailed(f"{self.label}: no answer to {what} in {CHILD_TIMEOUT} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.broken = True
                raise ChildFailed(f"{self.label}: died during {what} (exit {self.p.wait()})")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def call(self, *cmd) -> tuple[str, object]:
        """("ok", value) or ("err", errno name); an exception in the child fails."""
        self.send(*cmd)
        return self.answer(cmd)

    def answer(self, cmd) -> tuple[str, object]:
        """The answer to ``cmd``, sent before (call() is send() and answer())."""
        reply = self.expect(cmd)
        if "exc" in reply:
            raise ChildFailed(f"{self.label}: {_short(cmd)} raised in the child:\n{reply['tb']}")
        if "err" in reply:
            self.last_error = f"{reply['err']} ({reply['msg']})"
            return ("err", reply["err"])
        return ("ok", reply["ok"])

    def ok(self, *cmd):
        got = self.call(*cmd)
        if got[0] != "ok":
            raise ChildFailed(f"{self.label}: {_short(cmd)} failed with {self.last_error}")
        return got[1]

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=60)
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.broken = True


def _short(cmd) -> str:
    return "(" + ", ".join(repr(c)[:60] for c in cmd) + ")"


class Crew:
    """Children kept across the examples of one test (a spawn costs an import
    of daxfs and numpy); after an example that fails they let go of the
    pool ("reset"), and any that does not answer is killed, all with it, so
    that the next example starts fresh ones.  The fixture kills them all at
    the end of the test, passed or failed."""

    def __init__(self) -> None:
        self.kids: list[Child] = []

    def ready(self, n: int) -> list[Child]:
        if len(self.kids) != n or not all(k.alive() for k in self.kids):
            self.kill_all()
            self.kids = [Child(f"process {i}") for i in range(n)]
        return self.kids

    def reset_all(self) -> None:
        try:
            for k in self.kids:
                if k.alive():
                    k.ok("reset")
        except BaseException:
            self.kill_all()
            raise

    def kill_all(self) -> None:
        for k in self.kids:
            k.kill()
        self.kids = []


@pytest.fixture
def crew():
    c = Crew()
    try:
        yield c
    finally:
        c.kill_all()


# ---------------------------------------------------------------------------
# comparing
# ---------------------------------------------------------------------------
def digest_diff(got: dict, want: dict) -> str | None:
    if got == want:
        return None
    msg = f"size {got['size']} (want {want['size']})"
    for i, (g, w) in enumerate(zip(got["pieces"], want["pieces"], strict=False)):
        if g != w:
            return f"{msg}, bytes differ from offset {i * PIECE} (64 KiB piece {i})"
    return msg + ", the common part is equal"


def tree_diff(got: dict, want: dict) -> str | None:
    if got == want:
        return None
    lines = []
    for p in sorted(set(got) | set(want)):
        g, w = got.get(p), want.get(p)
        if g != w:
            lines.append(f"  {p}: got {g}, want {w}")
    return "\n".join(lines[:40])


def owned_blocks(fs) -> int:
    """Blocks owned by inodes reachable from the root (test_statemachine's sum)."""
    total, seen = 0, set()
    for top, dirs, files in fs.walk("/"):
        for name in [None, *dirs, *files]:
            p = top if name is None else top.rstrip("/") + "/" + name
            st_ = fs.lstat(p)
            if st_.st_ino in seen:
                continue
            seen.add(st_.st_ino)
            total += st_.st_blocks * 512 // BLOCK  # (extent blocks included)
    return total


def assert_accounting(fs, what: str) -> None:
    sv = fs.statvfs()
    used, owned = sv.f_blocks - sv.f_bfree, owned_blocks(fs)
    assert used == owned, f"{what}: {used} blocks in use, {owned} owned by reachable inodes"


# ---------------------------------------------------------------------------
# 1. the state machine
# ---------------------------------------------------------------------------
NAMES = ("a", "b", "c", "d")  # files and directories share names: they collide
PROCS = 3
SHARE_POOL = 128 * MiB
WALK_EVERY = 4
HOLD_MAX = 2
MAP_MAX = 2

procs = st.integers(0, PROCS - 1)
others = st.integers(1, PROCS - 1)  # the checking process: (actor + other) % PROCS
picks = st.integers(0, 1 << 10)
names = st.sampled_from(NAMES)
KINDS = ["small"] * 6 + ["medium"] * 3 + ["large"]


@st.composite
def payloads(draw) -> tuple[int, int]:
    """(seed, length): small, sometimes over 4 KiB, rarely about 2.1 MiB so
    that chunk-sized extents occur."""
    kind = draw(st.sampled_from(KINDS))
    if kind == "small":
        n = draw(st.integers(0, 3000))
    elif kind == "medium":
        n = draw(st.integers(4097, 40_000))
    else:
        n = draw(st.integers(2 * MiB, 2 * MiB + 150_000))
    return draw(st.integers(0, 1 << 20)), n


sizes = st.one_of(
    st.sampled_from([0, 1, 4095, 4096, 4097, 2 * MiB, 2 * MiB + 1]), st.integers(0, 100_000)
)


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


def join(d: str, name: str) -> str:
    return d.rstrip("/") + "/" + name


def depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def tracked(fn):
    """Mark the machine failed when a rule or an invariant raises (teardown
    then only makes the children let go, or kills them), and name the step."""

    @functools.wraps(fn)
    def run(self, **kw):
        if fn.__name__ != "periodic":
            self.step_no += 1
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        self.where = f"step {self.step_no} {fn.__name__}({args})"
        try:
            return fn(self, **kw)
        except BaseException:
            self.failed = True
            raise

    return run


class ShareModel(RuleBasedStateMachine):
    crew: Crew  # set by the test function
    workdir: str
    commit: str = ""  # the processes' commit mode ("": the pool's default)

    def __init__(self) -> None:
        super().__init__()
        self.failed = False
        self.step_no = 0
        self.where = "setup"
        self.kids = self.crew.ready(PROCS)
        self.pool = new_pool(self.workdir, SHARE_POOL)
        self.dirs: set[str] = {"/"}
        self.files: dict[str, int] = {}  # path -> node
        self.data: dict[int, bytes] = {}  # node -> contents
        self.nodes = 0
        self.held: dict[int, tuple[int, int, int]] = {}  # slot -> (process, node, blocks)
        self.maps: dict[int, tuple[int, int, int]] = {}  # slot -> (process, node, blocks)
        self.slots = 0
        self.fills = 0
        self.rng = random.Random(0)
        try:
            for k in self.kids:
                k.ok("mount", self.pool, self.commit)
        except BaseException:
            self.failed = True
            self.teardown()
            raise

    @initialize(seed=st.integers(0, 1 << 32))
    def seed_walker(self, seed):
        self.rng = random.Random(seed)  # which process does the periodic walks

    # -- the model -----------------------------------------------------------
    def kind(self, path: str) -> str | None:
        return "d" if path in self.dirs else "f" if path in self.files else None

    def absent(self, path: str) -> str:
        """The errno of looking up a path the model does not hold."""
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            if "/" + "/".join(parts[:i]) in self.files:
                return "ENOTDIR"
        return "ENOENT"

    def listing(self, d: str) -> list[str]:
        return sorted(
            p.rsplit("/", 1)[1] for p in [*self.dirs, *self.files] if p != "/" and parent_of(p) == d
        )

    def model_tree(self) -> dict:
        out: dict = {p: ["d"] for p in self.dirs if p != "/"}
        for p, node in self.files.items():
            out[p] = ["f", len(self.data[node]), whole(self.data[node])]
        return out

    def frozen(self, node: int) -> bool:
        """Mapped somewhere: its bytes must not change under the mapping."""
        return any(n == node for _p, n, _b in self.maps.values())

    def users(self, node: int) -> int:
        return sum(n == node for _p, n, _b in [*self.held.values(), *self.maps.values()])

    def new_node(self, data: bytes) -> int:
        self.nodes += 1
        self.data[self.nodes] = data
        return self.nodes

    def pick(self, seq, i: int):
        seq = sorted(seq)
        return seq[i % len(seq)] if seq else None

    def pick_dir(self, i: int, max_depth: int = 99) -> str:
        return self.pick([d for d in self.dirs if depth(d) <= max_depth], i)

    # -- talking to the children ---------------------------------------------
    def kid(self, p: int) -> Child:
        return self.kids[p % PROCS]

    def act(self, p: int, want_err: str | None, *cmd):
        got = self.kid(p).call(*cmd)
        note(f"process {p}: {_short(cmd)} -> {got[0]} {got[1] if got[0] == 'err' else ''}")
        want = "ok" if want_err is None else f"err {want_err}"
        have = "ok" if got[0] == "ok" else f"err {got[1]}"
        assert have == want, (
            f"{self.where}: process {p} {_short(cmd)}: {have}, the model says {want}"
        )
        return got[1]

    def verify(self, q: int, dirs=(), paths=()) -> None:
        """From process q: list the changed directories, read the changed files."""
        kid = self.kid(q)
        for d in dict.fromkeys(dirs):
            got = kid.call("list", d)
            k = self.kind(d)
            want = (
                ("ok", self.listing(d)) if k == "d" else ("err", "ENOTDIR" if k else self.absent(d))
            )
            assert got == want, (
                f"{self.where}: process {q % PROCS} lists {d}: {got}, the model has {want}"
            )
        for path in dict.fromkeys(paths):
            k = self.kind(path)
            if k == "f":
                got = kid.ok("digest", path)
                diff = digest_diff(got, digest(self.data[self.files[path]]))
                assert diff is None, f"{self.where}: process {q % PROCS} reads {path}: {diff}"
            else:
                got = kid.call("stat", path)
                have = got[1][0] if got[0] == "ok" else got[1]
                want = "d" if k == "d" else self.absent(path)
                assert have == want, (
                    f"{self.where}: process {q % PROCS} stats {path}: {got}, the model says {want}"
                )
        for d in dict.fromkeys(dirs):  # a directory's links: 2 and one per subdirectory
            if self.kind(d) == "d":
                got = kid.ok("stat", d)
                links = 2 + sum(1 for x in self.dirs if x != "/" and parent_of(x) == d)
                assert got[2] == links, (
                    f"{self.where}: process {q % PROCS}: {d} has {got[2]} links, the model {links}"
                )

    def walk_from(self, p: int, what: str) -> None:
        got = self.kid(p).ok("tree")
        diff = tree_diff(got, self.model_tree())
        assert diff is None, f"{what}: process {p % PROCS}'s walk differs from the model:\n{diff}"

    # -- files ---------------------------------------------------------------
    @rule(p=procs, q=others, parent=picks, name=names, data=payloads(), exclusive=st.booleans())
    @tracked
    def create(self, p, q, parent, name, data, exclusive):
        self.do_create(p, q, parent, name, data, exclusive)

    @rule(p=procs, q=others, parent=picks, name=names, data=payloads())
    @tracked
    def create_more(self, p, q, parent, name, data):
        """Drawn as often again: most steps need files to work on."""
        self.do_create(p, q, parent, name, data, False)

    def do_create(self, p, q, parent, name, data, exclusive):
        d = self.pick_dir(parent, max_depth=2)
        path, k = join(d, name), self.kind(join(d, name))
        if k == "f" and self.frozen(self.files[path]) and not exclusive:
            return  # "wb" would truncate a mapped file
        want = "EEXIST" if k and exclusive else "EISDIR" if k == "d" else None
        self.act(p, want, "create", path, "xb" if exclusive else "wb", *data)
        if want is None:
            if k == "f":
                self.data[self.files[path]] = payload(*data)
            else:
                self.files[path] = self.new_node(payload(*data))
        self.verify(p + q, dirs=[d], paths=[path])

    @precondition(lambda self: self.files)
    @rule(p=procs, q=others, which=picks, data=payloads())
    @tracked
    def append(self, p, q, which, data):
        path = self.pick(self.files, which)
        node = self.files[path]
        if self.frozen(node):
            return
        self.act(p, None, "append", path, *data)
        self.data[node] += payload(*data)
        self.verify(p + q, paths=[path])

    @precondition(lambda self: self.files)
    @rule(p=procs, q=others, which=picks, at=st.integers(0, 1 << 22), data=payloads())
    @tracked
    def overwrite(self, p, q, which, at, data):
        path = self.pick(self.files, which)
        node = self.files[path]
        if self.frozen(node):
            return
        old = self.data[node]
        off = at % (len(old) + 8193)  # inside, at the end, or past it (a hole)
        chunk = payload(*data)
        self.act(p, None, "pwrite", path, off, *data)
        if chunk:  # an empty write past the end does not extend the file
            self.data[node] = old[:off].ljust(off, b"\0") + chunk + old[off + len(chunk) :]
        self.verify(p + q, paths=[path])

    @precondition(lambda self: self.files)
    @rule(p=procs, q=others, which=picks, size=sizes)
    @tracked
    def truncate(self, p, q, which, size):
        path = self.pick(self.files, which)
        node = self.files[path]
        if self.frozen(node):
            return
        self.act(p, None, "truncate", path, size)
        self.data[node] = self.data[node][:size].ljust(size, b"\0")
        self.verify(p + q, paths=[path])

    @precondition(lambda self: self.files)
    @rule(p=procs, q=others, which=picks)
    @tracked
    def unlink(self, p, q, which):
        path = self.pick(self.files, which)
        self.act(p, None, "unlink", path)
        self.drop(self.files.pop(path))
        self.verify(p + q, dirs=[parent_of(path)], paths=[path])

    def drop(self, node: int) -> None:
        """A node lost its name: forget its bytes unless a handle or a mapping has it."""
        if not self.users(node):
            del self.data[node]

    @rule(p=procs, q=others, parent=picks, count=st.integers(1, 150), long=st.booleans(),
          seed=st.integers(0, 1 << 20))  # fmt: skip
    @tracked
    def fill(self, p, q, parent, count, long, seed):
        """Many files in one directory in one command: directories of several
        blocks, grown by one process and followed by the others."""
        d = self.pick_dir(parent, max_depth=2)
        self.fills += 1
        tail = "-" + "x" * 150 if long else ""
        new = [f"m{self.fills}.{j}{tail}" for j in range(count)]
        self.act(p, None, "fill", d, new, seed)
        for j, name in enumerate(new):
            self.files[join(d, name)] = self.new_node(payload(seed + j, (j * 37) % 3000))
        self.verify(p + q, dirs=[d], paths=[join(d, new[0]), join(d, new[-1])])

    @precondition(lambda self: len(self.files) > 3)
    @rule(p=procs, q=others, which=picks, every=st.integers(2, 4), batched=st.booleans())
    @tracked
    def thin(self, p, q, which, every, batched):
        """Unlink every few files of one directory in one command: holes in
        the middle of its blocks; one unlink each, or several to a change
        (_unlink_names, as rm -r)."""
        d = parent_of(self.pick(self.files, which))
        victims = [f for f in sorted(self.files) if parent_of(f) == d][::every]
        if batched:
            self.act(p, None, "unlink-names", d, [basename(f) for f in victims])
        else:
            self.act(p, None, "unlink-many", victims)
        for f in victims:
            self.drop(self.files.pop(f))
        self.verify(p + q, dirs=[d], paths=victims[:2])

    # -- two processes at once ------------------------------------------------
    @rule(p=procs, q=others, parent=picks,
          kind=st.sampled_from(["fill", "thin", "thin-batched", "same", "mkdirs"]),
          count=st.integers(1, 120), seed=st.integers(0, 1 << 20))  # fmt: skip
    @tracked
    def race(self, p, q, parent, kind, count, seed):
        """Two processes change one directory at the same time: both fill it
        with new names, or one fills while the other unlinks (one at a time,
        or several to a change), or both create
        the same new name exclusively (exactly one wins, with its bytes), or
        both make subdirectories in it (each mkdir's link count on the
        parent taken in by the other, not lost)."""
        d = self.pick_dir(parent, max_depth=2)
        self.fills += 1
        one = [f"m{self.fills}.{j}" for j in range(count)]
        if kind == "fill":
            two = [f"m{self.fills}.{j}-2" for j in range(count)]
            cmds = [("fill", d, one, seed), ("fill", d, two, seed + count)]
        elif kind == "thin":
            two = [f for f in sorted(self.files) if parent_of(f) == d][::2]
            cmds = [("fill", d, one, seed), ("unlink-many", two)]
        elif kind == "thin-batched":
            two = [f for f in sorted(self.files) if parent_of(f) == d][::2]
            cmds = [("fill", d, one, seed), ("unlink-names", d, [basename(f) for f in two])]
        elif kind == "mkdirs":
            n = count // 4 + 1  # (mkdirs are fewer: each is a change the others follow)
            one, two = one[:n], [f"m{self.fills}.{j}-2" for j in range(n)]
            cmds = [("mkdir-many", d, one), ("mkdir-many", d, two)]
        else:
            path = join(d, f"m{self.fills}")
            cmds = [("create", path, "xb", seed, count * 100), ("create", path, "xb", seed + 1, 7)]
        a, b = self.kid(p), self.kid(p + q)
        a.send(*cmds[0])
        b.send(*cmds[1])
        got = [a.answer(cmds[0]), b.answer(cmds[1])]
        note(f"processes {p % PROCS} and {(p + q) % PROCS} at once: {got}")
        if kind == "same":
            wins = [i for i, g in enumerate(got) if g[0] == "ok"]
            assert len(wins) == 1 and ("err", "EEXIST") in got, (
                f"{self.where}: two exclusive creates of {path} at once: {got}"
            )
            self.files[path] = self.new_node(payload(*cmds[wins[0]][3:]))
            self.verify(p + q + q, dirs=[d], paths=[path])
            return
        assert got == [("ok", None)] * 2, f"{self.where}: {got}"
        if kind == "mkdirs":
            self.dirs.update(join(d, name) for name in one + two)
            self.verify(p + q + q, dirs=[d, join(d, one[-1])])
            return
        for j, name in enumerate(one):
            self.files[join(d, name)] = self.new_node(payload(seed + j, (j * 37) % 3000))
        if kind == "fill":
            for j, name in enumerate(two):
                self.files[join(d, name)] = self.new_node(
                    payload(seed + count + j, (j * 37) % 3000)
                )
        else:
            for f in two:
                self.drop(self.files.pop(f))
        self.verify(p + q + q, dirs=[d], paths=[join(d, one[-1])])

    # -- directories ---------------------------------------------------------
    @rule(p=procs, q=others, parent=picks, name=names)
    @tracked
    def mkdir(self, p, q, parent, name):
        d = self.pick_dir(parent, max_depth=2)
        path = join(d, name)
        want = "EEXIST" if self.kind(path) else None
        self.act(p, want, "mkdir", path)
        if want is None:
            self.dirs.add(path)
        self.verify(p + q, dirs=[d, path], paths=[path])

    @precondition(lambda self: len(self.dirs) > 1)
    @rule(p=procs, q=others, which=picks)
    @tracked
    def rmdir(self, p, q, which):
        path = self.pick(self.dirs - {"/"}, which)
        want = "ENOTEMPTY" if self.listing(path) else None
        self.act(p, want, "rmdir", path)
        if want is None:
            self.dirs.discard(path)
        self.verify(p + q, dirs=[parent_of(path), path], paths=[path])

    # -- renames ---------------------------------------------------------------
    @precondition(lambda self: self.files)
    @rule(p=procs, q=others, which=picks, to=picks, name=names)
    @tracked
    def rename_file(self, p, q, which, to, name):
        src = self.pick(self.files, which)
        dst = join(self.pick(self.dirs, to), name)
        k = self.kind(dst)
        # A directory that holds the source is "not empty" (Linux's order).
        want = ("ENOTEMPTY" if under(src, dst) else "EISDIR") if k == "d" else None
        self.act(p, want, "rename", src, dst)
        if want is None and dst != src:
            if k == "f":
                self.drop(self.files.pop(dst))
            self.files[dst] = self.files.pop(src)
        self.verify(p + q, dirs=[parent_of(src), parent_of(dst)], paths=[src, dst])

    @precondition(lambda self: len(self.dirs) > 1)
    @rule(p=procs, q=others, which=picks, to=picks, name=names)
    @tracked
    def rename_dir(self, p, q, which, to, name):
        src = self.pick(self.dirs - {"/"}, which)
        dparent = self.pick(self.dirs, to)
        dst = join(dparent, name)
        k = self.kind(dst)
        if under(dparent, src):
            want = "EINVAL"  # into itself
        elif dst == src:
            want = None
        elif k == "f":
            want = "ENOTDIR"
        elif k == "d" and self.listing(dst):
            want = "ENOTEMPTY"
        else:
            want = None
        self.act(p, want, "rename", src, dst)
        if want is None and dst != src:
            self.dirs.discard(dst)  # an empty directory replaced
            moved = sorted(d for d in self.dirs if under(d, src))
            for d in moved:
                self.dirs.discard(d)
                self.dirs.add(dst + d[len(src) :])
            for f in sorted(f for f in self.files if under(f, src)):
                self.files[dst + f[len(src) :]] = self.files.pop(f)
        self.verify(p + q, dirs=[parent_of(src), dparent, dst], paths=[src, dst, join(dst, "a")])

    # -- a handle held across another process's unlink or rename-over -----------
    @precondition(lambda self: self.files and len(self.held) < HOLD_MAX)
    @rule(p=procs, q=others, which=picks, over=st.booleans(), by=picks)
    @tracked
    def hold_then_drop(self, p, q, which, over, by):
        path = self.pick(self.files, which)
        node = self.files[path]
        holder, other = self.kid(p), self.kid(p + q)
        self.slots += 1
        slot = self.slots
        holder.ok("hold", slot, path)
        blocks = holder.ok("usage", path)
        self.held[slot] = (p % PROCS, node, blocks)
        free0 = other.ok("free")
        src = self.pick([f for f in self.files if f != path], by) if over else None
        if src is None:
            self.act(p + q, None, "unlink", path)
            self.files.pop(path)
            changed = [parent_of(path)]
        else:  # another file renamed over it
            self.act(p + q, None, "rename", src, path)
            self.files[path] = self.files.pop(src)
            changed = [parent_of(src), parent_of(path)]
        free1 = other.ok("free")
        assert free1 == free0, (
            f"{self.where}: dropping the last name of a file process {p % PROCS} holds open "
            f"changed the free blocks {free0} -> {free1}: it must free nothing yet"
        )
        got = holder.ok("read-held", slot)
        diff = digest_diff(got, digest(self.data[node]))
        assert diff is None, f"{self.where}: the holder reads through its handle: {diff}"
        self.verify(p + q + q, dirs=changed, paths=[path, src or path])

    @precondition(lambda self: self.held)
    @rule(which=picks)
    @tracked
    def read_held(self, which):
        self.compare_through(self.held, "read-held", self.pick(self.held, which), "held handle")

    @precondition(lambda self: self.held)
    @rule(which=picks)
    @tracked
    def release_held(self, which):
        self.release(self.pick(self.held, which))

    def release(self, slot: int) -> None:
        p, node, blocks = self.held.pop(slot)
        self.let_go(p, node, blocks, "release", slot)

    def let_go(self, p: int, node: int, blocks: int, cmd: str, slot: int) -> None:
        """Process p closes a handle or a mapping of ``node``: when that was the
        last user of a file with no name, its blocks come back, all of them."""
        kid = self.kid(p)
        free0 = kid.ok("free")
        kid.ok(cmd, slot)
        free1 = kid.ok("free")
        last = node not in self.files.values() and not self.users(node)
        want = blocks if last else 0
        assert free1 - free0 == want, (
            f"{self.where}: process {p} {cmd} {slot}: {free1 - free0} blocks came back, "
            f"want {want} ({'the last user of an unlinked file' if last else 'not the last user'})"
        )
        if last:
            del self.data[node]

    # -- mappings ----------------------------------------------------------------
    @precondition(lambda self: self.files and len(self.maps) < MAP_MAX)
    @rule(p=procs, which=picks)
    @tracked
    def map_file(self, p, which):
        path = self.pick(self.files, which)
        node = self.files[path]
        kid = self.kid(p)
        self.slots += 1
        kid.ok("map", self.slots, path)
        self.maps[self.slots] = (p % PROCS, node, kid.ok("usage", path))
        self.compare_map(self.slots)

    def compare_map(self, slot: int) -> None:
        self.compare_through(self.maps, "read-map", slot, "mapping")

    def compare_through(self, table, cmd: str, slot: int, what: str) -> None:
        """The process holding handle or mapping ``slot`` of ``table`` reads
        through it the model's bytes of its file."""
        p, node, _ = table[slot]
        got = self.kid(p).ok(cmd, slot)
        diff = digest_diff(got, digest(self.data[node]))
        assert diff is None, f"{self.where}: process {p} reads its {what} {slot}: {diff}"

    @precondition(lambda self: self.maps)
    @rule(which=picks)
    @tracked
    def read_map(self, which):
        self.compare_map(self.pick(self.maps, which))

    @precondition(lambda self: self.maps)
    @rule(which=picks)
    @tracked
    def unmap(self, which):
        slot = self.pick(self.maps, which)
        self.compare_map(slot)
        p, node, blocks = self.maps.pop(slot)
        self.let_go(p, node, blocks, "unmap", slot)

    # -- whole-tree checks -------------------------------------------------------
    @invariant()
    @tracked
    def periodic(self):
        """Every few steps: one random process walks the whole tree; the
        checker finds nothing wrong in the live pool; every process counts
        the free blocks the checker counts."""
        if self.step_no % WALK_EVERY:
            return
        what = f"after step {self.step_no}"
        self.walk_from(self.rng.randrange(PROCS), what)
        report = daxfs.check(self.pool)
        assert report.ok, f"{what}: check of the live pool: {report.errors}"
        truth = report.stats["free_blocks"]
        free = [k.ok("free") for k in self.kids]
        assert free == [truth] * PROCS, (
            f"{what}: free blocks per process {free}, the checker counts {truth} "
            f"(counters {[k.ok('counters') for k in self.kids]})"
        )

    # -- the end ------------------------------------------------------------------
    def teardown(self) -> None:
        try:
            if self.failed or not all(k.alive() for k in self.kids):
                self.crew.reset_all()
                return
            try:
                self.where = "teardown"
                for slot in sorted(self.held):
                    self.release(slot)
                for slot in sorted(self.maps):
                    self.compare_map(slot)
                    p, node, blocks = self.maps.pop(slot)
                    self.let_go(p, node, blocks, "unmap", slot)
                for p in range(PROCS):
                    self.walk_from(p, "teardown")
                for k in self.kids:
                    k.ok("umount")
                report = daxfs.check(self.pool)
                assert report.ok, f"teardown: check after every unmount: {report.errors}"
                orphans = [n for n in report.notes if "orphan" in n]
                assert not orphans, f"teardown: orphans left with no user: {orphans}"
                with daxfs.mount(self.pool) as fs:
                    got = {}
                    for top, dirs, files in fs.walk("/"):
                        for d in dirs:
                            got[join(top, d)] = ["d"]
                        for f in files:
                            with fs.open(join(top, f), "rb") as fh:
                                data = fh.read()
                            got[join(top, f)] = ["f", len(data), whole(data)]
                    diff = tree_diff(got, self.model_tree())
                    assert diff is None, f"teardown: a fresh mount differs from the model:\n{diff}"
                    assert_accounting(fs, "teardown")
            except BaseException:
                self.crew.reset_all()
                raise
        finally:
            try:
                os.unlink(self.pool)
            except OSError:
                pass


@pytest.mark.parametrize("where", ["tmpfs", "disk", "disk-sync"])
def test_three_processes_against_a_model(where, shm_dir, tmp_path, crew):
    # On a disk file the pool commits in groups (issue 14): each process
    # reads the others' homes from their records, and what the checker and a
    # fresh mount see comes from the records the page cache holds.  Mounted
    # commit="sync", new data is named by checks in its record, and a
    # process storing over another's checked bytes marks them durable first.
    ShareModel.crew = crew
    ShareModel.workdir = shm_dir if where == "tmpfs" else str(tmp_path)
    ShareModel.commit = "sync" if where == "disk-sync" else ""
    run_state_machine_as_test(
        ShareModel,
        settings=settings(
            max_examples=SHARE_EXAMPLES if where == "tmpfs" else max(1, SHARE_EXAMPLES // 3),
            stateful_step_count=SHARE_STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# ---------------------------------------------------------------------------
# 2. catching up with another process's commits
# ---------------------------------------------------------------------------
def test_interleaved_creators_catch_up_without_rebuilds(pool_path, crew):
    """Two processes create 200 small files each in their own directory, one
    after the other, so that each call of each process follows a commit of
    the other: every catch-up must apply the other's journal records, never
    drop the caches and rescan.  (The counters are compared before and after
    the creates: whatever the mount itself counts is not at issue.)"""
    a, b = crew.ready(2)
    for kid, d in ((a, "/A"), (b, "/B")):
        kid.ok("mount", pool_path)
        kid.ok("mkdir", d)
    for kid in (a, b):
        kid.ok("list", "/")  # each has caught up with both mkdirs
    before = [kid.ok("counters") for kid in (a, b)]
    n = 200
    for i in range(n):
        for kid, d in ((a, "/A"), (b, "/B")):
            kid.ok("create", f"{d}/f{i:03d}", "xb", i, 1 + (i * 37) % 3000)
    want = [f"f{i:03d}" for i in range(n)]
    for kid in (a, b):
        assert kid.ok("list", "/A") == want and kid.ok("list", "/B") == want
    after = [kid.ok("counters") for kid in (a, b)]
    for who, c0, c1 in zip("ab", before, after, strict=True):
        rebuilds = c1.get("full_rebuilds", 0) - c0.get("full_rebuilds", 0)
        applied = c1.get("records_applied", 0) - c0.get("records_applied", 0)
        assert rebuilds == 0, f"process {who}: {rebuilds} full rebuilds (counters {c0} -> {c1})"
        assert applied > 0, f"process {who}: no journal record applied (counters {c0} -> {c1})"
    for kid in (a, b):
        kid.ok("umount")
    assert daxfs.check(pool_path).ok


# ---------------------------------------------------------------------------
# 3. SIGKILL of one process while two others work
# ---------------------------------------------------------------------------
def _apply(model: dict[str, bytes], op: list) -> dict[str, bytes]:
    m = dict(model)
    if op[0] == "create":
        m[op[1]] = named(op[1], op[3], op[2])
    elif op[0] == "unlink":
        del m[op[1]]
    elif op[0] == "rename":
        if op[1] != op[2]:
            m[op[2]] = m.pop(op[1])
    else:
        m[op[1]] = m[op[1]] + named(op[1], op[3], op[2])
    return m


def _outcomes(base: dict[str, bytes], log_text: str) -> tuple[list[dict[str, bytes]], int, list]:
    """The states the killed process may have left: after every completed
    operation, plus the one in flight whole, or (a create: the name at open,
    the bytes at close) as an empty file.  Also: how many completed, and the
    operation in flight."""
    model, pending, done = base, None, 0
    for line in log_text.splitlines():
        if line == "done":
            model, pending, done = _apply(model, pending), None, done + 1
        elif line:
            pending = json.loads(line)
    allowed = [model]
    if pending is not None:
        allowed.append(_apply(model, pending))
        if pending[0] == "create":
            allowed.append({**model, pending[1]: b""})
    return allowed, done, pending


def _summary(state: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {k: (len(v), whole(v)[:12]) for k, v in sorted(state.items())}


def unpublished_commit(pool: str) -> str | None:
    """A whole record at the journal's live word with the seq the word
    expects next: what a process killed after its commit point (the record
    persisted) and before publishing the word leaves behind.  The record is
    committed (recovery replays it), but live mounts follow the word."""
    from daxfs.layout import JLIVE, JLIVE_OFF, JOURNAL_HEADER_OFF, parse_txn_record, superblock_at
    from daxfs.region import Region

    region = Region(pool, private=True)
    try:
        sb = superblock_at(region, 0)
        seq, pos = JLIVE.unpack_from(region.buf, JOURNAL_HEADER_OFF + JLIVE_OFF)
        start, end = sb.journal_off, sb.journal_off + sb.journal_len
        rec = parse_txn_record(region.buf, start + pos, end, seq) if start + pos < end else None
        if rec is None:
            return None
        return f"record {seq} ({len(rec.writes)} home writes) committed at journal offset {pos}"
    finally:
        region.close()


@pytest.mark.parametrize("where", ["tmpfs", "disk"])
def test_sigkill_one_process_while_two_others_work(where, shm_dir, crew, tmp_path):
    pool = new_pool(shm_dir if where == "tmpfs" else str(tmp_path), 128 * MiB)
    rng = random.Random(1313)
    with daxfs.mount(pool) as fs:
        for d in ("/A", "/B", "/K"):
            fs.mkdir(d)
    a, b = crew.ready(2)
    survivors = {"/A": a, "/B": b}
    model: dict[str, dict[str, bytes]] = {"/A": {}, "/B": {}}
    for kid in (a, b):
        kid.ok("mount", pool)
    ops = 0

    def survivor_op(d: str) -> None:
        """One acknowledged operation of a survivor in its directory; the
        model changes only once the child said "ok"."""
        nonlocal ops
        ops += 1
        kid, m = survivors[d], model[d]
        existing = sorted(m)
        c = rng.random()
        if not existing or (c < 0.5 and len(existing) < 25):
            name, salt, size = f"s{ops}", rng.randrange(1000), rng.choice([0, 10, 4096, 9000])
            kid.ok("create-named", f"{d}/{name}", name, salt, size)
            m[name] = named(name, salt, size)
        elif c < 0.75:
            src = rng.choice(existing)
            dst = rng.choice([*existing, f"t{ops}"])
            kid.ok("rename", f"{d}/{src}", f"{d}/{dst}")
            m[dst] = m.pop(src)
        elif c < 0.9:
            name, salt = rng.choice(existing), rng.randrange(1000)
            kid.ok("append-named", f"{d}/{name}", name, salt, 3000)
            m[name] += named(name, salt, 3000)
        else:
            name = rng.choice(existing)
            kid.ok("unlink", f"{d}/{name}")
            del m[name]

    def survivors_agree(what: str) -> None:
        for kid in (a, b):
            for d, m in model.items():
                got = {k: bytes.fromhex(v) for k, v in kid.ok("snapshot", d).items()}
                assert got == m, (
                    f"{what}: {kid.label} sees {d} as {_summary(got)}, acknowledged {_summary(m)}"
                )
        free = [kid.ok("free") for kid in (a, b)]
        assert free[0] == free[1], f"{what}: the survivors count free blocks {free}"

    def kills() -> None:
        kdir: dict[str, bytes] = {}
        completed = 0
        for rep in range(KILL_REPS):
            k = Child(f"killed process {rep}")
            crew.kids.append(k)  # killed by the fixture if the test fails first
            k.ok("mount", pool)
            log = tmp_path / f"k{rep}.log"
            k.send("loop", "/K", str(log), rep)
            start = k.expect("loop")["ok"]
            assert start == sorted(kdir), (
                f"kill {rep}: a process mounted after the previous kill lists /K as {start}; "
                f"the survivors saw {sorted(kdir)}"
            )
            delay = rng.uniform(0.01, 0.4)
            deadline, n = time.monotonic() + delay, 0
            while n < 2 or time.monotonic() < deadline:
                survivor_op("/A" if n % 2 == 0 else "/B")
                n += 1
            k.kill()
            crew.kids.remove(k)
            # Killed after a commit point, before publishing it (the record
            # persisted, its homes perhaps half stored): the survivors must
            # finish that commit.  Named in failures: it is the hard case.
            unpublished = unpublished_commit(pool)
            allowed, done, pending = _outcomes(kdir, log.read_text())
            completed += done
            what = f"kill {rep} (after {delay:.3f} s, {done} operations done, {pending} in flight"
            what += f"; {unpublished}, not published)" if unpublished else ")"
            try:
                survivors_agree(what)
                got = {key: bytes.fromhex(v) for key, v in a.ok("snapshot", "/K").items()}
            except ChildFailed as e:
                raise ChildFailed(f"{what}: {e}") from None
            assert got in allowed, (
                f"{what}: /K holds {_summary(got)}; the log allows "
                + " or ".join(str(_summary(s)) for s in allowed)
            )
            report = daxfs.check(pool)  # the survivors are still mounted
            assert report.ok, f"{what}: check of the live pool: {report.errors}"
            for i in range(rng.randrange(3, 12)):  # the survivors go on
                survivor_op("/A" if i % 2 else "/B")
            survivors_agree(f"{what}, then more work")
            kdir = got
        assert completed > KILL_REPS, "the killed processes hardly ran: the test proves little"
        for kid in (a, b):
            kid.ok("umount")
        report = daxfs.check(pool)
        assert report.ok, f"check after the survivors unmounted: {report.errors}"
        with daxfs.mount(pool) as fs:
            for d, m in [*model.items(), ("/K", kdir)]:
                got = {}
                for name in fs.listdir(d):
                    with fs.open(f"{d}/{name}", "rb") as f:
                        got[name] = f.read()
                assert got == m, f"a fresh mount sees {d} as {_summary(got)}, want {_summary(m)}"
            assert_accounting(fs, "after the kills")

    kills()


# ---------------------------------------------------------------------------
# 4. the bug test 3 met at random, deterministically (fixed in 43d7ef9)
# ---------------------------------------------------------------------------
KILLED_IN_COMMIT = COMMON + textwrap.dedent(r"""
    import os, signal, sys
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    fs.listdir("/d")
    j, half = fs.journal, sys.argv[2] == "half"
    store, commit, state = j.region.store, j.commit, {"on": False, "n": 0, "homes": -1}

    def stores(off, data):  # home writes of the commit: let some through, then die
        if state["on"] and not j.start <= off < j.end:
            if state["n"] == state["homes"]:
                os.kill(os.getpid(), signal.SIGKILL)
            state["n"] += 1
        return store(off, data)

    def commits(txn, prepared=None):
        state["on"], state["homes"] = True, len(txn.writes) // 2 if half else -1
        commit(txn, prepared)

    def publish():  # every home stored: die instead of publishing the live word
        if state["on"]:
            os.kill(os.getpid(), signal.SIGKILL)

    j.region.store, j.commit, j._publish = stores, commits, publish
    fs.rename("/d/old", "/e/new")
""")


@pytest.mark.parametrize("homes", ["half", "all"])
def test_kill_between_commit_point_and_publish(pool_path, crew, homes):
    """Process K renames /d/old to /e/new and is killed inside journal.commit
    after its record is persisted (the commit point) and after half or all
    of its home writes, before it publishes the live word; process A stayed
    mounted.  The rename was in flight, so it may be there or not, but
    whole: A sees /d/old or /e/new, and after A's next commit (in /e) the
    pool checks clean and holds the file under one of the names.  (Before
    43d7ef9 A never read the record and its next commit overwrote it: the
    half-stored homes stayed, /d's block failed its checksum, or with all
    homes stored the file was in neither directory.)"""
    (a,) = crew.ready(1)
    a.ok("mount", pool_path)
    for d in ("/d", "/e"):
        a.ok("mkdir", d)
    a.ok("create", "/d/old", "xb", 1, 5000)
    subprocess.run(
        [sys.executable, "-c", KILLED_IN_COMMIT, pool_path, homes],
        env=_child_env(),
        check=False,
        timeout=CHILD_TIMEOUT,
    )
    assert unpublished_commit(pool_path), "the kill did not land between commit and publish"
    # The rename may show at any of these calls (A's first call under the
    # lock finishes it; calls that need no lock answer from A's caches, as
    # of before it), but never undone once shown, and each listing whole.
    seen = [a.call("list", d) for d in ("/d", "/e", "/d", "/e")]
    before = {"/d": ("ok", ["old"]), "/e": ("ok", [])}
    after = {"/d": ("ok", []), "/e": ("ok", ["new"])}
    states = []
    for d, got in zip(("/d", "/e", "/d", "/e"), seen, strict=True):
        assert got in (before[d], after[d]), f"{d} holds {got}: half of a committed rename"
        states.append(got == after[d])
    assert states == sorted(states), f"the rename shown, then undone: {seen}"
    a.ok("create", "/e/y", "xb", 2, 3 * MiB)  # A's first commit after the kill
    a.ok("umount")
    report = daxfs.check(pool_path)
    assert report.ok, f"after the mounted process's next commit: {report.errors}"
    with daxfs.mount(pool_path) as fs:
        names = (fs.listdir("/d"), fs.listdir("/e"))
        assert names in ((["old"], ["y"]), ([], ["new", "y"])), f"/d and /e hold {names}"
        with fs.open("/d/old" if names[0] else "/e/new", "rb") as f:
            assert f.read() == payload(1, 5000)


# ---------------------------------------------------------------------------
# 5. the leak test 1's free-space invariant met, deterministically (fixed in 842e2e4)
# ---------------------------------------------------------------------------
def test_window_running_out_leaks_no_free_space(pool_path):
    """Two mounts share the pool, so B places small blocks in windows (2 MiB
    chunks) of its own.  B fills most of its first window, makes enough
    changes to be optimistic again after the conflict its first window cost,
    then writes a file larger than what the window has left: every mount, B
    included, must count the free blocks a fresh mount counts.  (Before
    842e2e4 the blocks B took from the old window before leases._new_window
    raised Conflict were in no transaction, so the undo kept them out of B's
    allocator: B counted 11 blocks fewer.)"""
    with daxfs.mount(pool_path) as a, daxfs.mount(pool_path) as b:
        a.optimism = b.optimism = True  # (DAXFS_OPTIMISM=1)
        a.listdir("/")
        with b.open("/f1", "wb") as f:
            f.write(b"x" * 500 * 4096)
        for i in range(10):
            b.open(f"/e{i}", "xb").close()
        with b.open("/f2", "wb") as f:
            f.write(b"x" * 20 * 4096)
        counts = [a.statvfs().f_bfree, b.statvfs().f_bfree]
        with daxfs.mount(pool_path) as c:
            truth = c.statvfs().f_bfree
        assert counts == [truth, truth], (
            f"free blocks: A {counts[0]}, B {counts[1]}, a fresh mount {truth} "
            f"(B's counters {dict(b.coherence)})"
        )


MKDIRS = textwrap.dedent(
    """
    import sys, daxfs
    pool, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fs = daxfs.mount(pool)
    fs.optimism = True
    print("ready", flush=True)
    sys.stdin.readline()  # go
    for k in range(n):
        fs.mkdir(f"/c/{tag}{k}")
    fs.close()
    """
)


def test_two_processes_making_subdirectories_in_one_directory_keep_every_link(pool_path):
    """Two real processes make subdirectories in one directory at once
    (mkdir runs optimistically; test_multiprocess has the interleaving that
    rebases one on the other, step by step): the parent ends with a link
    for each, and the pool checks clean."""
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/c")
    kids = started_together(MKDIRS, [[pool_path, f"p{i}-", "200"] for i in range(2)])
    for kid in kids:
        assert kid.wait(timeout=60) == 0
    with daxfs.mount(pool_path, readonly=True) as fs:
        assert fs.stat("/c").st_nlink == 2 + 400 and len(fs.listdir("/c")) == 400
    report = daxfs.check(pool_path)
    assert report.ok, report.errors
