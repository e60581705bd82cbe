"""Model-based test: random operations on daxfs and on a real directory (the model).

Every rule runs the same operation on a daxfs pool and, through ``os``, on a
directory on tmpfs, then asserts the same outcome: the same result, or the
same errno.  An invariant compares the whole namespace after every step
(existence, file type, size, link count, listings, and which paths share an
inode).  Paths come from a small universe (three names, depth <= 2) so that
operations collide often: creating over directories, renaming into one's own
subtree, linking onto existing names, symlinks that loop or dangle.

Deliberate choices where ``os`` offers two behaviours:
  * fs.link does not follow a symlink given as the source (link(2)); the model
    calls os.link(follow_symlinks=False) accordingly.
  * Symlink targets are relative and never contain "..": in daxfs ".." stops
    at the pool root, while in the model it would leave the model directory.
  * A directory's st_size is not compared: every file system reports its own
    (tmpfs counts entries, daxfs its blocks).  Times are not compared.
Handles opened by one step and used by later ones are unbuffered on both
sides (FileIO and daxfs's raw file), so positions and bytes compare exactly.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import pathlib
import random
import shutil
import stat
import tempfile

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import daxfs
from daxfs.layout import BLOCK

NAMES = ("a", "b", "c")
PATHS = tuple([f"/{x}" for x in NAMES] + [f"/{x}/{y}" for x in NAMES for y in NAMES])
ALL_PATHS = ("/",) + PATHS
LINK_TARGETS = ("a", "b", "c", "a/b", "b/c", "zz", ".")
MiB = 1 << 20
POOL_SIZE = 256 * MiB

OFFSETS = (
    0,
    1,
    100,
    4095,
    4096,
    5000,
    8192,
    65536,
    2 * MiB - 1,
    2 * MiB,
    2 * MiB + 4096,
    3 * MiB + 7,
)
SIZES = (
    0,
    1,
    10,
    4095,
    4096,
    4097,
    12288,
    100_000,
    2 * MiB - 4096,
    2 * MiB,
    2 * MiB + 1,
    4 * MiB + 123,
)

# Depth-1 names are drawn more often than depth-2 ones, so that a parent exists
# often enough for depth-2 operations, and so that operations collide.
slots = st.integers(0, 2)
paths = st.sampled_from(PATHS[:3] * 3 + PATHS[3:])
any_paths = st.sampled_from(("/",) + PATHS[:3] * 3 + PATHS[3:])
offsets = st.one_of(st.sampled_from(OFFSETS), st.integers(0, 300_000))
sizes = st.one_of(st.sampled_from(SIZES), st.integers(0, 300_000))

# Payload kinds, weighted by repetition; a large (2-5 MiB) write is rare.
KINDS = ["tiny", "aligned", "unaligned"] * 5 + ["large"]


@st.composite
def payloads(draw) -> tuple[int, int]:
    """(seed, length) of a write; bytes are made from the seed (cheap to draw)."""
    kind = draw(st.sampled_from(KINDS))
    if kind == "tiny":
        n = draw(st.integers(1, 16))
    elif kind == "aligned":
        n = 4096 * draw(st.integers(1, 8))
    elif kind == "unaligned":
        n = draw(st.integers(1, 40_000))
    else:
        n = draw(st.integers(2 * MiB, 5 * MiB))
    return draw(st.integers(0, 1 << 16)), n


def payload_bytes(spec: tuple[int, int]) -> bytes:
    seed, n = spec
    return random.Random(seed * 7919 + n).randbytes(n)


def outcome(fn):
    """("ok", value), ("err", errno), or ("unsupported", None) for io's refusal
    to read a write-only handle and the like."""
    try:
        return ("ok", fn())
    except io.UnsupportedOperation:
        return ("unsupported", None)
    except OSError as e:
        assert e.errno is not None, f"OSError without errno: {e!r}"
        return ("err", e.errno)


def errname(o) -> str:
    return errno.errorcode.get(o[1], str(o[1])) if o[0] == "err" else o[0]


def check_pool(path: str) -> None:
    """daxfs.check(path).ok, once check is implemented (it is being written)."""
    check = getattr(daxfs, "check", None)
    if check is None:
        return
    try:
        report = check(path)
    except NotImplementedError:
        return
    assert report.ok, f"fsck found: {report.errors}"


def _copy_sparse(fd: int, dst: str) -> None:
    """Copy the file open at ``fd`` to ``dst``, its holes left holes."""
    size = os.fstat(fd).st_size
    out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(out, size)
        off = 0
        while off < size:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                break  # (only a hole left)
            end = os.lseek(fd, off, os.SEEK_HOLE)
            while off < end:
                off += os.copy_file_range(fd, out, end - off, off, off)
    finally:
        os.close(out)


def _kind_and_size(lstat, path: str):
    """(type, size of a regular file) of what ``path`` names, or its errno."""
    try:
        st_ = lstat(path)
    except OSError as e:
        return e.errno
    kind = stat.S_IFMT(st_.st_mode)
    return kind, st_.st_size if kind == stat.S_IFREG else None


class DaxVsOs(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = tempfile.mkdtemp(prefix="daxfs-sm-", dir=base)
        self.root = os.path.join(self.tmp, "model")
        os.mkdir(self.root)
        self.pool = os.path.join(self.tmp, "pool")
        daxfs.mkfs(self.pool, POOL_SIZE)
        self.fs = daxfs.mount(self.pool)
        self.handles: dict[int, tuple[object, object, str]] = {}  # slot -> (dax, model, mode)

    def teardown(self) -> None:
        try:
            if not self.fs.closed:
                self.close_all_handles()
                self.compare_contents()
                self.check_accounting()
                self.fs.close()
                check_pool(self.pool)
        finally:
            for _d, mh, _mode in self.handles.values():
                mh.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def close_all_handles(self) -> None:
        for slot in list(self.handles):
            self.close_handle(slot)

    def check_accounting(self) -> None:
        """Every used block belongs to a reachable inode (no leak, no orphan left
        once every handle is closed): its extents plus its overflow blocks."""
        seen: set[int] = set()
        total = 0
        for dirpath, dirs, files in self.fs.walk("/"):
            for name in [None, *dirs, *files]:
                p = dirpath if name is None else dirpath.rstrip("/") + "/" + name
                st_ = self.fs.lstat(p)
                if st_.st_ino in seen:
                    continue
                seen.add(st_.st_ino)
                total += st_.st_blocks * 512 // BLOCK  # (overflow blocks included)
        sv = self.fs.statvfs()
        assert sv.f_blocks - sv.f_bfree == total, (
            f"{sv.f_blocks - sv.f_bfree} blocks in use, {total} owned by reachable inodes"
        )

    # -- helpers -----------------------------------------------------------
    def m(self, path: str) -> str:
        return self.root + path if path != "/" else self.root

    def same(self, dax, model, what: str):
        rd, rm = outcome(dax), outcome(model)
        event(f"{what.split('(')[0].split(' ')[0]}: {errname(rm)}")
        assert rd[0] == rm[0] and (rd[0] == "ok" or rd[1] == rm[1]), (
            f"{what}: daxfs {errname(rd)} {rd[1] if rd[0] == 'ok' else ''!r:.80} "
            f"vs os {errname(rm)} {rm[1] if rm[0] == 'ok' else ''!r:.80}"
        )
        return rd, rm

    def ino_map(self) -> dict[int, int]:
        """daxfs ino -> model ino over every reachable path; must be a bijection."""
        d2m: dict[int, int] = {}
        m2d: dict[int, int] = {}
        for p in ALL_PATHS:
            rd, rm = outcome(lambda p=p: self.fs.lstat(p)), outcome(lambda p=p: os.lstat(self.m(p)))
            if rd[0] != "ok" or rm[0] != "ok":
                continue
            di, mi = rd[1].st_ino, rm[1].st_ino
            assert d2m.setdefault(di, mi) == mi, f"{p}: daxfs inode {di} maps to two model inodes"
            assert m2d.setdefault(mi, di) == di, f"{p}: model inode {mi} maps to two daxfs inodes"
        return d2m

    def compare_stat(self, p: str, sd: os.stat_result, sm: os.stat_result) -> None:
        assert stat.S_IFMT(sd.st_mode) == stat.S_IFMT(sm.st_mode), p
        if not stat.S_ISDIR(sd.st_mode):
            assert sd.st_size == sm.st_size, f"{p}: size {sd.st_size} != {sm.st_size}"
        assert sd.st_nlink == sm.st_nlink, f"{p}: nlink {sd.st_nlink} != {sm.st_nlink}"

    def compare_contents(self) -> None:
        for p in PATHS:
            if os.path.isfile(self.m(p)) and not os.path.islink(self.m(p)):
                with open(self.m(p), "rb") as f:
                    want = f.read()
                with self.fs.open(p, "rb") as f:
                    got = f.read()
                assert got == want, f"{p}: contents differ (len {len(got)} vs {len(want)})"

    # -- a starting tree, so that early steps find something to work on ---------
    @initialize(
        kinds=st.lists(
            st.sampled_from(["none", "file", "dir", "dir+files"]), min_size=3, max_size=3
        )
    )
    def starting_tree(self, kinds):
        for name, kind in zip(NAMES, kinds, strict=True):
            if kind == "file":
                self.open_write(f"/{name}", "x", [(len(name), 5000)])
            elif kind.startswith("dir"):
                self.mkdir(f"/{name}")
                if kind == "dir+files":
                    for child in NAMES[:2]:
                        self.open_write(f"/{name}/{child}", "x", [(ord(child), 100)])

    # -- invariant: the whole namespace ----------------------------------------
    @invariant()
    def namespace_matches(self) -> None:
        for p in ALL_PATHS:
            rd, rm = self.same(
                lambda p=p: self.fs.lstat(p), lambda p=p: os.lstat(self.m(p)), f"lstat {p}"
            )
            if rd[0] != "ok":
                continue
            self.compare_stat(p, rd[1], rm[1])
            if stat.S_ISDIR(rm[1].st_mode):
                assert sorted(self.fs.listdir(p)) == sorted(os.listdir(self.m(p))), p
            elif stat.S_ISLNK(rm[1].st_mode):
                assert self.fs.readlink(p) == os.readlink(self.m(p)), p
        self.ino_map()

    # -- files ---------------------------------------------------------------
    @rule(
        path=paths,
        mode=st.sampled_from(["w", "a", "r+", "x"]),
        writes=st.lists(payloads(), max_size=3),
    )
    def open_write(self, path, mode, writes):
        chunks = [payload_bytes(w) for w in writes]

        def go(opener, p):
            with opener(p, mode + "b") as f:
                for c in chunks:
                    assert f.write(c) == len(c)

        self.same(
            lambda: go(self.fs.open, path),
            lambda: go(open, self.m(path)),
            f"open({path!r}, {mode!r}) + {len(chunks)} writes",
        )

    @rule(path=paths, data=payloads())
    def create(self, path, data):
        """The common case, drawn more often: create or replace a file with contents."""
        self.open_write(path, "w", [data])

    @rule(path=paths, off=offsets, data=payloads())
    def pwrite(self, path, off, data):
        chunk = payload_bytes(data)

        def go(opener, p):
            with opener(p, "r+b") as f:
                f.seek(off)
                f.write(chunk)

        self.same(
            lambda: go(self.fs.open, path),
            lambda: go(open, self.m(path)),
            f"pwrite({path!r}, off={off}, len={len(chunk)})",
        )

    @rule(path=paths)
    def read_whole(self, path):
        def go(opener, p):
            with opener(p, "rb") as f:
                return f.read()

        rd, rm = self.same(
            lambda: go(self.fs.open, path), lambda: go(open, self.m(path)), f"read {path!r}"
        )
        if rd[0] == "ok":
            assert rd[1] == rm[1], f"{path}: contents differ ({len(rd[1])} vs {len(rm[1])})"

    @rule(path=paths, data=payloads())
    def write_bytes(self, path, data):
        """pathlib's write_bytes: a new file in one change, else as open "wb"."""
        chunk = payload_bytes(data)
        self.same(
            lambda: self.fs.write_bytes(path, chunk),
            lambda: pathlib.Path(self.m(path)).write_bytes(chunk),
            f"write_bytes({path!r}, len={len(chunk)})",
        )

    @rule(path=paths, data=payloads())
    def replace_with(self, path, data):
        """A new file put in place of ``path`` in one change (DaxStore's
        replace of a zarr key), as a temporary file renamed over it."""
        chunk = payload_bytes(data)

        def model():
            tmp = pathlib.Path(self.m(path)).with_name(".replacing")
            tmp.write_bytes(chunk)
            try:
                os.rename(tmp, self.m(path))
            except OSError:
                tmp.unlink()
                raise

        self.same(
            lambda: self.fs._replace_with(path, chunk),
            model,
            f"replace_with({path!r}, len={len(chunk)})",
        )

    @rule(path=any_paths)
    def read_bytes(self, path):
        """pathlib's read_bytes: from the caches, with no lock or pin, when they know."""
        rd, rm = self.same(
            lambda: self.fs.read_bytes(path),
            lambda: pathlib.Path(self.m(path)).read_bytes(),
            f"read_bytes {path!r}",
        )
        if rd[0] == "ok":
            assert rd[1] == rm[1], f"{path}: contents differ ({len(rd[1])} vs {len(rm[1])})"

    @rule(path=paths, off=offsets, n=st.integers(0, 70_000))
    def read_range(self, path, off, n):
        def go(opener, p):
            with opener(p, "rb") as f:
                f.seek(off)
                return f.read(n)

        rd, rm = self.same(
            lambda: go(self.fs.open, path),
            lambda: go(open, self.m(path)),
            f"read {path!r} [{off}:+{n}]",
        )
        if rd[0] == "ok":
            assert rd[1] == rm[1], f"{path}[{off}:+{n}]: contents differ"

    @rule(path=paths, size=sizes)
    def truncate(self, path, size):
        self.same(
            lambda: self.fs.truncate(path, size),
            lambda: os.truncate(self.m(path), size),
            f"truncate({path!r}, {size})",
        )

    @rule(
        path=paths,
        off=offsets,
        length=st.one_of(st.sampled_from(SIZES[1:]), st.integers(1, 300_000)),
    )
    def fallocate(self, path, off, length):
        def model():
            fd = os.open(self.m(path), os.O_RDWR)
            try:
                os.posix_fallocate(fd, off, length)
            finally:
                os.close(fd)

        self.same(
            lambda: self.fs.fallocate(path, off, length),
            model,
            f"fallocate({path!r}, {off}, {length})",
        )

    # -- namespace -------------------------------------------------------------
    @rule(path=paths)
    def mkdir(self, path):
        self.same(lambda: self.fs.mkdir(path), lambda: os.mkdir(self.m(path)), f"mkdir {path!r}")

    @rule(path=paths)
    def rmdir(self, path):
        self.same(lambda: self.fs.rmdir(path), lambda: os.rmdir(self.m(path)), f"rmdir {path!r}")

    @rule(path=paths)
    def unlink(self, path):
        self.same(lambda: self.fs.unlink(path), lambda: os.unlink(self.m(path)), f"unlink {path!r}")

    @rule(
        steps=st.lists(
            st.tuples(
                st.sampled_from(["unlink", "write_bytes", "open, write, close"]),
                paths,
                st.integers(0, 1 << 16),
                st.integers(0, 9000),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def said_changes_then_a_crash(self, steps):
        """Unlinks, and small files made or rewritten whole (write_bytes, or
        opened, written and closed: a name there is a said rewrite), said
        and not absorbed when they can be (logical.py), then a crash.
        (With nothing to make again, a crash is the crash suite's.)"""
        for how, path, seed, n in steps:
            if how == "unlink":
                self.unlink(path)
            elif how == "write_bytes":
                self.write_bytes(path, (seed, n))
            else:
                self.open_write(path, "w", [(seed, n)])
        said = self.fs.journal.unabsorbed
        event(f"crash with said changes to make again: {bool(said)}")
        if said:
            self.a_crash_now_recovers_this_tree()

    @rule(directory=any_paths, names=st.lists(st.sampled_from(NAMES + ("zz",)), max_size=5))
    def unlink_names(self, directory, names):
        """Names of one directory removed at once (what rm -r does to its
        files), as rm -r does it: the directory opened, then an unlinkat of
        each name in turn, so a symlink on the way to it removed among them
        stops nothing; a missing name or a directory is left and said, with
        its errno; the directory's own errors (not one, not there) are
        raised before anything is removed."""

        def model():
            if not names:
                return []
            fd = os.open(self.m(directory), os.O_RDONLY | os.O_DIRECTORY)
            left = []
            try:
                for name in names:
                    try:
                        os.unlink(name, dir_fd=fd)
                    except (FileNotFoundError, IsADirectoryError) as e:
                        left.append((name, e.errno))
            finally:
                os.close(fd)
            return left

        rd, rm = self.same(
            lambda: self.fs._unlink_names(directory, names),
            model,
            f"unlink_names({directory!r}, {names})",
        )
        assert rd == rm, f"unlink_names({directory!r}, {names}): daxfs {rd} vs os {rm}"

    @rule(path=paths)
    def rmtree(self, path):
        """A directory and all below it, as shutil.rmtree; a symlink or a
        file given is NotADirectoryError (shutil's has no errno)."""

        def model():
            p = self.m(path)
            if not stat.S_ISDIR(os.lstat(p).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), p)
            shutil.rmtree(p)

        self.same(lambda: self.fs.rmtree(path), model, f"rmtree({path!r})")

    @rule(src=paths, dst=paths)
    def rename(self, src, dst):
        self.same(
            lambda: self.fs.rename(src, dst),
            lambda: os.rename(self.m(src), self.m(dst)),
            f"rename({src!r}, {dst!r})",
        )

    @rule(src=paths, dst=paths)
    def link(self, src, dst):
        self.same(
            lambda: self.fs.link(src, dst),
            lambda: os.link(self.m(src), self.m(dst), follow_symlinks=False),
            f"link({src!r}, {dst!r})",
        )

    @rule(link_target=st.sampled_from(LINK_TARGETS), path=paths)
    def symlink(self, link_target, path):
        self.same(
            lambda: self.fs.symlink(link_target, path),
            lambda: os.symlink(link_target, self.m(path)),
            f"symlink({link_target!r}, {path!r})",
        )

    @rule(path=paths)
    def readlink(self, path):
        rd, rm = self.same(
            lambda: self.fs.readlink(path), lambda: os.readlink(self.m(path)), f"readlink {path!r}"
        )
        if rd[0] == "ok":
            assert rd[1] == rm[1]

    @rule(path=any_paths)
    def listdir(self, path):
        rd, rm = self.same(
            lambda: self.fs.listdir(path), lambda: os.listdir(self.m(path)), f"listdir {path!r}"
        )
        if rd[0] == "ok":
            assert sorted(rd[1]) == sorted(rm[1]), path

    @rule(path=any_paths, follow=st.booleans())
    def stat(self, path, follow):
        rd, rm = self.same(
            lambda: self.fs.stat(path, follow_symlinks=follow),
            lambda: os.stat(self.m(path), follow_symlinks=follow),
            f"stat {path!r} follow={follow}",
        )
        if rd[0] == "ok":
            self.compare_stat(path, rd[1], rm[1])
            d2m = self.ino_map()
            if rd[1].st_ino in d2m:
                assert d2m[rd[1].st_ino] == rm[1].st_ino, f"{path}: inode identity differs"
            else:  # reachable only through a symlink: must be no other path's inode
                assert rm[1].st_ino not in d2m.values(), f"{path}: inode identity differs"

    # -- lifetime ----------------------------------------------------------------
    @rule()
    def remount(self):
        self.close_all_handles()
        self.check_accounting()
        inos = {
            p: self.fs.lstat(p).st_ino for p in ALL_PATHS if self.fs.exists(p) or self.fs.islink(p)
        }
        self.fs.close()
        check_pool(self.pool)
        self.fs = daxfs.mount(self.pool)
        after = {
            p: self.fs.lstat(p).st_ino for p in ALL_PATHS if self.fs.exists(p) or self.fs.islink(p)
        }
        assert after == inos, "inode numbers changed across remount"
        self.compare_contents()

    def a_crash_now_recovers_this_tree(self):
        """What SIGKILL now would leave (a tmpfs pool's file holds every
        store): a copy, taken under the shared pool lock so that no commit
        is half copied, mounts to the model's tree, with the changes said
        and not absorbed yet made again (logical.py)."""
        copy = self.pool + ".crash"
        fd = os.open(self.pool, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            _copy_sparse(fd, copy)
        finally:
            os.close(fd)
        try:
            with daxfs.mount(copy) as fs:
                for p in ALL_PATHS:
                    got, want = _kind_and_size(fs.lstat, p), _kind_and_size(os.lstat, self.m(p))
                    assert got == want, f"{p} after a crash: {got} where the model has {want}"
                    if isinstance(got, tuple) and got[0] == stat.S_IFREG:
                        with open(self.m(p), "rb") as f:
                            assert fs.read_bytes(p) == f.read(), f"{p}: contents after a crash"
            check_pool(copy)
        finally:
            os.unlink(copy)

    # -- open handles across steps (raw, unbuffered, on both sides) ---------------
    @rule(slot=slots, path=paths, mode=st.sampled_from(["rb", "r+b", "ab", "wb", "a+b"]))
    def open_handle(self, slot, path, mode):
        if slot in self.handles:
            self.close_handle(slot)
        rd, rm = self.same(
            lambda: self.fs.open(path, mode, buffering=0),
            lambda: open(self.m(path), mode, buffering=0),
            f"open handle {slot} {path!r} {mode!r}",
        )
        if rd[0] == "ok":
            self.handles[slot] = (rd[1], rm[1], mode)

    def close_handle(self, slot):
        dh, mh, _mode = self.handles.pop(slot)
        self.same(dh.close, mh.close, f"close handle {slot}")

    @precondition(lambda self: self.handles)
    @rule(slot=slots)
    def handle_close(self, slot):
        slot = sorted(self.handles)[slot % len(self.handles)]
        self.close_handle(slot)

    @precondition(lambda self: self.handles)
    @rule(slot=slots, data=payloads())
    def handle_write(self, slot, data):
        slot = sorted(self.handles)[slot % len(self.handles)]
        dh, mh, mode = self.handles[slot]
        chunk = payload_bytes(data)
        rd, rm = self.same(
            lambda: dh.write(chunk),
            lambda: mh.write(chunk),
            f"handle {slot} ({mode}) write {len(chunk)}",
        )
        assert rd == rm
        assert dh.tell() == mh.tell(), f"handle {slot}: position differs after write"

    @precondition(lambda self: self.handles)
    @rule(slot=slots, n=st.one_of(st.integers(0, 10_000), st.just(-1)))
    def handle_read(self, slot, n):
        slot = sorted(self.handles)[slot % len(self.handles)]
        dh, mh, mode = self.handles[slot]
        rd, rm = self.same(
            lambda: dh.read(n), lambda: mh.read(n), f"handle {slot} ({mode}) read {n}"
        )
        assert rd == rm, f"handle {slot}: read differs"
        assert dh.tell() == mh.tell()

    @precondition(lambda self: self.handles)
    @rule(slot=slots, off=offsets, whence=st.sampled_from([os.SEEK_SET, os.SEEK_END]))
    def handle_seek(self, slot, off, whence):
        slot = sorted(self.handles)[slot % len(self.handles)]
        dh, mh, mode = self.handles[slot]
        off = -min(off, 100) if whence == os.SEEK_END else off
        rd, rm = self.same(
            lambda: dh.seek(off, whence),
            lambda: mh.seek(off, whence),
            f"handle {slot} seek {off} {whence}",
        )
        assert rd == rm

    @precondition(lambda self: self.handles)
    @rule(slot=slots, size=sizes)
    def handle_truncate(self, slot, size):
        slot = sorted(self.handles)[slot % len(self.handles)]
        dh, mh, mode = self.handles[slot]
        rd, rm = self.same(
            lambda: dh.truncate(size),
            lambda: mh.truncate(size),
            f"handle {slot} ({mode}) truncate {size}",
        )
        assert rd == rm


TestDaxVsOs = DaxVsOs.TestCase
