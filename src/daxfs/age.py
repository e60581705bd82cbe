"""age: a deterministic aging workload, its trace, and a replayer.

Aging a file system means giving it a long history of creates and deletes
at a fixed fullness, then looking at how its free space and its large files
are laid out.  This module makes that history and applies it; aging_stats.py
measures the result.

The generator (``generate``) is a pure function of its parameters: a stream
of operations on paths relative to the aging root, with no knowledge of any
file system, so that one history can be replayed on daxfs (either
allocator) and on a kernel file system alike.  It keeps a model of how much
space its files take and:

  * first fills to the target utilization with creates only, then churns
    with a mix of creates, appends, overwrites, truncates and deletes
    (growth favoured below the target, deletion above it), deleting random
    files first whenever a growing operation would pass a ceiling just above
    the target; it stops once the bytes written reach ``churn`` times the
    capacity;
  * draws file sizes from a hybrid distribution after the file-system
    metadata studies that Impressions and Geriatrix build on (Agrawal et
    al., FAST '07 and '09): a lognormal body (mu 9.48, sigma 2.46, in
    bytes: median about 13 KiB) truncated below 2 MiB, and with probability
    LARGE_FRACTION a Pareto tail (shape 0.91) from 2 MiB up to capacity/16,
    scaled down from the study's 512 MB so that a pool of a gigabyte holds
    dozens of large files; appends and overwrites draw from the body;
  * places files in nested directories (a new directory now and then, up
    to MAX_DEPTH deep; a directory emptied by a delete is removed).

The model charges a file what daxfs charges it: whole 2 MiB chunks once it
is 2 MiB or larger, 4 KiB blocks below (ext4 takes no more than that), so
"utilization" is the fraction of ``capacity`` the files occupy.

Trace format: JSON lines; a header object, then one object per operation:

    {"trace": "daxfs-age", "version": 1, "seed": 1, "capacity": ..., ...}
    {"op": "mkdir", "path": "d3"}
    {"op": "create", "path": "d3/f17", "len": 40960, "key": 17}
    {"op": "append", "path": "d3/f17", "len": 812, "key": 18}
    {"op": "overwrite", "path": "d3/f17", "off": 4096, "len": 100, "key": 19}
    {"op": "truncate", "path": "d3/f17", "size": 2048}
    {"op": "unlink", "path": "d3/f17"}
    {"op": "rmdir", "path": "d3"}

File contents are a function of ``key`` (a rotation of one fixed random
pattern), so every replay writes the same bytes.  ``replay`` applies any
operation stream to a Target: DaxTarget (a mounted daxfs FileSystem) or
DirTarget (a directory of the host, e.g. an ext4 mount).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol

BLOCK = 4096
CHUNK = 2 << 20

TRACE_NAME = "daxfs-age"
TRACE_VERSION = 1

# Sizes: Impressions' lognormal body (natural log of bytes) and Pareto tail shape.
BODY_MU, BODY_SIGMA = 9.48, 2.46
TAIL_SHAPE = 0.91
LARGE_FRACTION = 0.04  # of created files, drawn from the tail (2 MiB and up)
MAX_FILE_FRACTION = 1 / 16  # largest file, as a fraction of the capacity

# Operation mix in the churn phase: (create, append, overwrite, truncate, delete).
OPS = ("create", "append", "overwrite", "truncate", "delete")
WEIGHTS_BELOW = (0.40, 0.25, 0.15, 0.05, 0.15)  # below the target: grow
WEIGHTS_ABOVE = (0.20, 0.10, 0.15, 0.10, 0.45)  # at or above it: shrink
CEILING_SLACK = 0.01  # of capacity: growth past target + this deletes first

NEW_DIR_PROBABILITY = 0.015  # a create first makes a new directory
MAX_DEPTH = 6

PATTERN_BYTES = 8 << 20
PATTERN_SEED = 0x64617866  # "daxf"


# --------------------------------------------------------------------------
# the space model and the size distribution
# --------------------------------------------------------------------------
def charged(size: int, tails: str = "trim") -> int:
    """Bytes a closed file of ``size`` occupies: with the mount option
    tails="trim" (daxfs's default), whole 4 KiB blocks; with tails="keep",
    whole 2 MiB chunks once it is 2 MiB or larger (the large-file policy
    keeps the last window's chunk), else whole 4 KiB blocks."""
    unit = CHUNK if size >= CHUNK and tails == "keep" else BLOCK
    return -(-size // unit) * unit


class SizeModel:
    """File sizes: a truncated lognormal body below 2 MiB, a truncated Pareto
    tail from 2 MiB to ``max_size``.  Sampled by inverse CDF from one
    uniform number each, so the stream depends on random.random() alone
    (which Python keeps reproducible for a seed)."""

    def __init__(self, max_size: int):
        self.max_size = max(max_size, CHUNK + BLOCK)
        self._normal = statistics.NormalDist()
        # The body's CDF at 2 MiB: uniforms are scaled into [0, this).
        self._body_top = self._normal.cdf((math.log(CHUNK) - BODY_MU) / BODY_SIGMA)
        self._tail_mass = 1.0 - (CHUNK / self.max_size) ** TAIL_SHAPE

    def body(self, rng: random.Random) -> int:
        u = max(rng.random() * self._body_top, 1e-12)
        size = math.exp(BODY_MU + BODY_SIGMA * self._normal.inv_cdf(u))
        return max(1, min(CHUNK - 1, int(size)))

    def tail(self, rng: random.Random) -> int:
        u = rng.random()
        size = CHUNK / (1.0 - u * self._tail_mass) ** (1.0 / TAIL_SHAPE)
        return max(CHUNK, min(self.max_size, int(size)))

    def file(self, rng: random.Random) -> int:
        return self.tail(rng) if rng.random() < LARGE_FRACTION else self.body(rng)


class _Bag:
    """A set with uniform random choice and O(1) removal (swap with the last)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, x: str) -> None:
        self.pos[x] = len(self.items)
        self.items.append(x)

    def remove(self, x: str) -> None:
        i = self.pos.pop(x)
        last = self.items.pop()
        if last != x:
            self.items[i] = last
            self.pos[last] = i

    def choice(self, rng: random.Random) -> str:
        return self.items[int(rng.random() * len(self.items))]


# --------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class AgeParams:
    capacity: int  # bytes utilization is measured against
    utilization: float = 0.75
    churn: float = 10.0  # stop after writing churn * capacity bytes
    seed: int = 1
    tails: str = "trim"  # the daxfs mount option the space model follows (charged)

    def __post_init__(self) -> None:
        if not 0.0 < self.utilization < 0.98:
            raise ValueError(f"utilization must be in (0, 0.98), not {self.utilization}")
        if self.churn <= 0:
            raise ValueError(f"churn must be positive, not {self.churn}")
        if self.tails not in ("trim", "keep"):
            raise ValueError(f"tails must be 'trim' or 'keep', not {self.tails!r}")
        if self.capacity < 16 * CHUNK:
            raise ValueError(f"capacity must be at least 32 MiB, not {self.capacity}")

    def header(self) -> dict:
        return {
            "trace": TRACE_NAME,
            "version": TRACE_VERSION,
            "seed": self.seed,
            "capacity": self.capacity,
            "utilization": self.utilization,
            "churn": self.churn,
            "tails": self.tails,
        }


@dataclass
class _Dir:
    depth: int
    files: int = 0
    dirs: int = 0


class Generator:
    """The operation stream of one aging run; iterate it once.

    ``used`` (bytes charged, see ``charged``) and ``written`` follow the
    operations yielded so far, so a caller can watch the utilization."""

    def __init__(self, params: AgeParams):
        self.p = params
        self.rng = random.Random(params.seed)
        self.sizes = SizeModel(int(params.capacity * MAX_FILE_FRACTION))
        self.target = int(params.capacity * params.utilization)
        self.ceiling = self.target + int(params.capacity * CEILING_SLACK)
        self.budget = int(params.capacity * params.churn)
        self.files: dict[str, int] = {}  # path -> size
        self.bag = _Bag()
        self.dirs: dict[str, _Dir] = {"": _Dir(0)}
        self.dir_bag = _Bag()
        self.dir_bag.add("")
        self.used = 0
        self.written = 0
        self.ops = 0
        self._names = 0

    # -- the stream --------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        while self.used < self.target and self.written < self.budget:
            yield from self._create()
        while self.written < self.budget:
            yield from self._step()

    def _step(self) -> Iterator[dict]:
        weights = WEIGHTS_BELOW if self.used < self.target else WEIGHTS_ABOVE
        kind = self.rng.choices(OPS, weights)[0]
        if kind != "create" and not self.bag:
            kind = "create"
        if kind == "create":
            yield from self._create()
        elif kind == "append":
            yield from self._append()
        elif kind == "overwrite":
            yield from self._overwrite()
        elif kind == "truncate":
            yield from self._truncate()
        else:
            yield from self._delete(self.bag.choice(self.rng))

    def _emit(self, op: dict) -> dict:
        self.ops += 1
        self.written += op.get("len", 0)
        return op

    # -- operations --------------------------------------------------------
    def _create(self) -> Iterator[dict]:
        size = self.sizes.file(self.rng)
        yield from self._make_room(charged(size, self.p.tails), keep=None)
        parent = yield from self._pick_dir()
        self._names += 1
        path = _join(parent, f"f{self._names}")
        self.files[path] = size
        self.bag.add(path)
        self.dirs[parent].files += 1
        self.used += charged(size, self.p.tails)
        yield self._emit({"op": "create", "path": path, "len": size, "key": self.ops})

    def _append(self) -> Iterator[dict]:
        path = self.bag.choice(self.rng)
        old = self.files[path]
        n = self.sizes.body(self.rng)
        n = min(n, self.sizes.max_size - old)
        if n <= 0:
            return
        yield from self._make_room(
            charged(old + n, self.p.tails) - charged(old, self.p.tails), keep=path
        )
        self._resize(path, old + n)
        yield self._emit({"op": "append", "path": path, "len": n, "key": self.ops})

    def _overwrite(self) -> Iterator[dict]:
        path = self.bag.choice(self.rng)
        size = self.files[path]
        if size == 0:
            return
        off = int(self.rng.random() * size) // BLOCK * BLOCK
        n = min(self.sizes.body(self.rng), size - off)
        yield self._emit({"op": "overwrite", "path": path, "off": off, "len": n, "key": self.ops})

    def _truncate(self) -> Iterator[dict]:
        path = self.bag.choice(self.rng)
        new = int(self.files[path] * self.rng.random())
        self._resize(path, new)
        yield self._emit({"op": "truncate", "path": path, "size": new})

    def _delete(self, path: str) -> Iterator[dict]:
        size = self.files.pop(path)
        self.bag.remove(path)
        self.used -= charged(size, self.p.tails)
        parent = _parent(path)
        self.dirs[parent].files -= 1
        yield self._emit({"op": "unlink", "path": path})
        yield from self._prune(parent)

    def _make_room(self, need: int, keep: str | None) -> Iterator[dict]:
        """Delete random files (never ``keep``) until ``need`` more bytes fit
        under the ceiling."""
        while self.used + need > self.ceiling and len(self.bag) > (keep is not None):
            victim = self.bag.choice(self.rng)
            if victim != keep:
                yield from self._delete(victim)

    def _resize(self, path: str, new: int) -> None:
        self.used += charged(new, self.p.tails) - charged(self.files[path], self.p.tails)
        self.files[path] = new

    # -- directories -------------------------------------------------------
    def _pick_dir(self) -> Iterator[dict]:
        """A directory for a new file: now and then a new one, made here."""
        parent = self.dir_bag.choice(self.rng)
        if self.rng.random() >= NEW_DIR_PROBABILITY:
            return parent
        while self.dirs[parent].depth >= MAX_DEPTH:
            parent = _parent(parent)
        self._names += 1
        path = _join(parent, f"d{self._names}")
        self.dirs[path] = _Dir(self.dirs[parent].depth + 1)
        self.dirs[parent].dirs += 1
        self.dir_bag.add(path)
        yield self._emit({"op": "mkdir", "path": path})
        return path

    def _prune(self, path: str) -> Iterator[dict]:
        """Remove ``path`` and then its parents while they are empty (not the root)."""
        while path and not self.dirs[path].files and not self.dirs[path].dirs:
            del self.dirs[path]
            self.dir_bag.remove(path)
            parent = _parent(path)
            self.dirs[parent].dirs -= 1
            yield self._emit({"op": "rmdir", "path": path})
            path = parent


def generate(params: AgeParams) -> Generator:
    """The operation stream of an aging run (see the module docstring)."""
    return Generator(params)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


# --------------------------------------------------------------------------
# the trace
# --------------------------------------------------------------------------
def write_trace(f: IO[str], header: dict, ops: Iterable[dict]) -> Iterator[dict]:
    """Write the header, then each op as it passes through (a tee)."""
    f.write(json.dumps(header) + "\n")
    for op in ops:
        f.write(json.dumps(op, separators=(",", ":")) + "\n")
        yield op


def read_trace(f: IO[str]) -> tuple[dict, Iterator[dict]]:
    """(header, ops) of a trace file; raises ValueError if it is not one."""
    first = f.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("trace") != TRACE_NAME:
        raise ValueError(f"not a {TRACE_NAME} trace (first line {first[:60]!r})")
    if header.get("version") != TRACE_VERSION:
        version = header.get("version")
        raise ValueError(f"trace version {version} (this daxfs reads {TRACE_VERSION})")
    return header, (json.loads(line) for line in f if line.strip())


# --------------------------------------------------------------------------
# file contents: a rotation of one fixed random pattern, chosen by key
# --------------------------------------------------------------------------
_pattern: memoryview | None = None


def _double_pattern() -> memoryview:
    global _pattern
    if _pattern is None:
        p = random.Random(PATTERN_SEED).randbytes(PATTERN_BYTES)
        _pattern = memoryview(p + p)  # any PATTERN_BYTES-long slice is contiguous
    return _pattern


def pieces(key: int, n: int) -> Iterator[memoryview]:
    """The bytes an op with ``key`` writes, in pieces of at most 8 MiB."""
    pat = _double_pattern()
    start = (key * 2654435761) % PATTERN_BYTES
    while n > 0:
        k = min(n, PATTERN_BYTES)
        yield pat[start : start + k]
        n -= k


# --------------------------------------------------------------------------
# targets: where a replay applies the operations
# --------------------------------------------------------------------------
class Target(Protocol):
    def mkdir(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def create(self, path: str, n: int, key: int) -> None: ...
    def append(self, path: str, n: int, key: int) -> None: ...
    def overwrite(self, path: str, off: int, n: int, key: int) -> None: ...
    def truncate(self, path: str, size: int) -> None: ...
    def unlink(self, path: str) -> None: ...


class DaxTarget:
    """A mounted daxfs FileSystem, operations under ``root`` (which must exist)."""

    def __init__(self, fs, root: str = "/"):
        self.fs = fs
        self.root = root.rstrip("/")

    def _p(self, path: str) -> str:
        return f"{self.root}/{path}"

    def mkdir(self, path: str) -> None:
        self.fs.mkdir(self._p(path))

    def rmdir(self, path: str) -> None:
        self.fs.rmdir(self._p(path))

    def _write(self, path: str, mode: str, off: int | None, n: int, key: int) -> None:
        with self.fs.open(self._p(path), mode, buffering=0) as f:
            if off is not None:
                f.seek(off)
            for piece in pieces(key, n):
                f.write(piece)

    def create(self, path: str, n: int, key: int) -> None:
        self._write(path, "xb", None, n, key)

    def append(self, path: str, n: int, key: int) -> None:
        self._write(path, "ab", None, n, key)

    def overwrite(self, path: str, off: int, n: int, key: int) -> None:
        self._write(path, "r+b", off, n, key)

    def truncate(self, path: str, size: int) -> None:
        self.fs.truncate(self._p(path), size)

    def unlink(self, path: str) -> None:
        self.fs.unlink(self._p(path))


class DirTarget:
    """A directory of the host (an ext4 mount, tmpfs, ...), through os calls."""

    def __init__(self, root: str):
        self.root = root

    def _p(self, path: str) -> str:
        return os.path.join(self.root, path)

    def mkdir(self, path: str) -> None:
        os.mkdir(self._p(path))

    def rmdir(self, path: str) -> None:
        os.rmdir(self._p(path))

    def _write(self, path: str, flags: int, off: int | None, n: int, key: int) -> None:
        fd = os.open(self._p(path), flags, 0o644)
        try:
            if off is not None:
                os.lseek(fd, off, os.SEEK_SET)
            for piece in pieces(key, n):
                while piece:
                    piece = piece[os.write(fd, piece) :]
        finally:
            os.close(fd)

    def create(self, path: str, n: int, key: int) -> None:
        self._write(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, None, n, key)

    def append(self, path: str, n: int, key: int) -> None:
        self._write(path, os.O_WRONLY | os.O_APPEND, None, n, key)

    def overwrite(self, path: str, off: int, n: int, key: int) -> None:
        self._write(path, os.O_WRONLY, off, n, key)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(self._p(path), size)

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))


# --------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------
@dataclass
class ReplayResult:
    ops: int = 0
    written: int = 0  # bytes the ops wrote
    seconds: float = 0.0  # in the operations only (not in checkpoints)
    errors: dict[str, int] = field(default_factory=dict)  # errno name -> count

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


def apply_op(target: Target, op: dict) -> None:
    kind, path = op["op"], op["path"]
    if kind == "create":
        target.create(path, op["len"], op["key"])
    elif kind == "append":
        target.append(path, op["len"], op["key"])
    elif kind == "overwrite":
        target.overwrite(path, op["off"], op["len"], op["key"])
    elif kind == "truncate":
        target.truncate(path, op["size"])
    elif kind == "unlink":
        target.unlink(path)
    elif kind == "mkdir":
        target.mkdir(path)
    elif kind == "rmdir":
        target.rmdir(path)
    else:
        raise ValueError(f"unknown op {kind!r}")


def replay(
    ops: Iterable[dict],
    target: Target,
    *,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    on_progress: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    """Apply ``ops`` to ``target``.  Every ``checkpoint_every`` bytes written,
    ``on_checkpoint(written)`` runs (outside the timed part).  An op that
    fails with ENOSPC, ENOENT or ENOTEMPTY is counted in ``errors`` and the
    replay goes on (a history made for this capacity should have none)."""
    res = ReplayResult()
    _double_pattern()  # made once, before the clock starts
    next_mark = checkpoint_every or 0
    clock = time.perf_counter
    for op in ops:
        t0 = clock()
        try:
            apply_op(target, op)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise
            name = errno.errorcode.get(e.errno or 0, str(e.errno))
            res.errors[name] = res.errors.get(name, 0) + 1
        res.seconds += clock() - t0
        res.ops += 1
        res.written += op.get("len", 0)
        if on_progress is not None and res.ops % 256 == 0:
            on_progress(res)
        if checkpoint_every and res.written >= next_mark:
            if on_checkpoint is not None:
                on_checkpoint(res.written)
            while next_mark <= res.written:
                next_mark += checkpoint_every
    if on_progress is not None:
        on_progress(res)
    return res


# --------------------------------------------------------------------------
# comparing trees
# --------------------------------------------------------------------------
def _digest_stream(read: Callable[[int], bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    while chunk := read(8 << 20):
        h.update(chunk)
    return h.hexdigest()


def tree_of_fs(fs, root: str = "/") -> dict[str, tuple[int, str] | None]:
    """{relative path: (size, content hash)} for files, None for directories."""
    out: dict[str, tuple[int, str] | None] = {}
    base = root.rstrip("/")
    for top, dirs, files in fs.walk(root):
        rel = top[len(base) :].lstrip("/")
        for d in dirs:
            out[_join(rel, d)] = None
        for name in files:
            with fs.open(f"{top.rstrip('/')}/{name}", "rb", buffering=0) as f:
                digest = _digest_stream(f.read)
            out[_join(rel, name)] = (fs.stat(f"{top.rstrip('/')}/{name}").st_size, digest)
    return out


def tree_of_dir(root: str, skip: tuple[str, ...] = ("lost+found",)) -> dict:
    """The same for a host directory (ext4's lost+found is not part of the history)."""
    out: dict[str, tuple[int, str] | None] = {}
    for top, dirs, files in os.walk(root):
        rel = os.path.relpath(top, root)
        rel = "" if rel == "." else rel
        if not rel:
            dirs[:] = [d for d in dirs if d not in skip]
        for d in dirs:
            out[_join(rel, d)] = None
        for name in files:
            p = os.path.join(top, name)
            with open(p, "rb", buffering=0) as f:
                digest = _digest_stream(f.read)
            out[_join(rel, name)] = (os.path.getsize(p), digest)
    return out


def model_tree(gen: Generator) -> dict[str, int | None]:
    """What the generator believes the tree is: {path: size, or None for a dir}."""
    out: dict[str, int | None] = {d: None for d in gen.dirs if d}
    out.update(gen.files)
    return out


def sizes_of(tree: dict[str, tuple[int, str] | None]) -> dict[str, int | None]:
    """A tree_of_* result reduced to what model_tree knows: sizes (None for directories)."""
    return {p: (v[0] if v is not None else None) for p, v in tree.items()}
