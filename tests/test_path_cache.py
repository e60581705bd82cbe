"""The path cache (FileSystem._heads_now): a path's directory part is walked
once per commit, and a cached answer is always the answer a walk from the
root gives.

The oracle is path.resolve itself with no cache, run on the same mount
under its lock; the trees come from random changes (mkdir, rename, rmdir,
symlinks, including chains that come near the 40-link limit), made by this
process and by another one."""

from __future__ import annotations

import errno
import stat
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import daxfs
from conftest import get, put
from daxfs.coherence import MISSED
from daxfs.path import MAX_SYMLINKS, resolve

NAMES = ["a", "b", "c", "la", "lb", "c0", "loop", ".", ".."]


def walked(fs: daxfs.FileSystem, path: str, follow: bool, entry: bool):
    """What a path resolves to, or the errno it fails with: through the
    mount's cache, and walked from the root with no cache (the oracle)."""

    def answer(call):
        try:
            return call()
        except OSError as e:
            return ("error", e.errno)

    with fs._locked(exclusive=False):
        cached = answer(lambda: fs._resolve(path, follow, entry))
        oracle = answer(
            lambda: resolve(path, fs._lookup, fs._readlink_ino, fs._parent_of, follow, entry)
        )
    return cached, oracle


def stated(fs: daxfs.FileSystem, path: str, follow: bool):
    """stat's answer (the errno it fails with), through its unlocked path
    (FileSystem._cached_answer) and under the lock, from the caches or not."""

    def answer(call):
        try:
            return call()
        except OSError as e:
            return ("error", e.errno)

    quick = answer(lambda: fs.stat(path, follow_symlinks=follow))
    with fs._locked(exclusive=False):
        locked = answer(lambda: fs._stat_path(path, follow))
    return quick, locked


def opened_same(fs: daxfs.FileSystem, path: str) -> None:
    """An open for reading answered from the caches (FileSystem._open_cached)
    opens the inode the locked way opens, or fails as it does."""
    try:
        quick = fs._open_cached(path)
    except OSError as e:
        quick = ("error", e.errno)
    if quick is MISSED:  # (the caches could not say: the locked way answers)
        return
    if type(quick) is int:
        fs._release(quick)
    with fs._locked(exclusive=False):
        try:
            ino = fs._open_to_read(path)
        except OSError as e:
            assert quick == ("error", e.errno), path
            return
    fs._release(ino)
    assert quick == ino, path


def change(fs: daxfs.FileSystem, op: str, a: str, b: str) -> None:
    """One change; failures (a name missing or taken) are just skipped."""
    try:
        if op == "mkdir":
            fs.mkdir(a)
        elif op == "rename":
            fs.rename(a, b)
        elif op == "rmdir":
            fs.rmdir(a)
        elif op == "symlink":
            fs.symlink(b, a)
        elif op == "unlink":
            fs.unlink(a)
        elif op == "file":
            put(fs, a, b"x")
    except OSError:
        pass


paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=6).map(lambda p: "/" + "/".join(p))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("probe"), paths, st.booleans(), st.booleans()),
        st.tuples(
            st.sampled_from(["mkdir", "rename", "rmdir", "symlink", "unlink", "file"]),
            paths,
            paths,
            st.just(False),
        ),
    ),
    min_size=1,
    max_size=40,
)


def probe(fs: daxfs.FileSystem, path: str, follow: bool, entry: bool) -> None:
    """Each prefix of the path, shortest first (so the walks fill the cache
    with the heads the longer ones then use), then the path itself again."""
    names = path.split("/")[1:]
    for i in range(1, len(names) + 1):
        prefix = "/" + "/".join(names[:i])
        cached, oracle = walked(fs, prefix, follow, entry)
        assert cached == oracle, (prefix, follow, entry)
    cached, oracle = walked(fs, path, follow, entry)
    assert cached == oracle, (path, follow, entry)
    quick, locked = stated(fs, path, follow)
    assert quick == locked, (path, follow)
    opened_same(fs, path)


def probe_kept(fs: daxfs.FileSystem, kept: list[str]) -> None:
    """The paths the cache held before a change, and one name inside each."""
    for head in kept:
        for path in (head, head + "/c", head + "/la"):
            cached, oracle = walked(fs, path, True, False)
            assert cached == oracle, path


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_a_cached_walk_answers_as_a_walk_from_the_root(make_pool, steps):
    with daxfs.mount(make_pool()) as fs:
        for d in ("/a", "/a/b", "/a/b/c", "/b"):
            fs.mkdir(d)
        fs.symlink("a/b", "/la")
        fs.symlink("/a/b/c/..", "/lb")
        fs.symlink("loop", "/loop")
        chain(fs, MAX_SYMLINKS - 2, "/a")  # /c0: near the limit already
        for op, x, y, z in steps:
            if op == "probe":
                probe(fs, x, y, z)
            else:
                kept = list(fs._heads)
                change(fs, op, x, y)
                probe_kept(fs, kept)


def chain(fs: daxfs.FileSystem, n: int, end: str) -> str:
    """n symlinks, each naming the next, the last naming ``end``: the first's path."""
    fs.symlink(end, f"/c{n - 1}")
    for i in range(n - 2, -1, -1):
        fs.symlink(f"c{i + 1}", f"/c{i}")
    return "/c0"


def test_symlinks_followed_in_the_cached_part_count_toward_the_limit(fs):
    """A head reached through 39 links leaves room for one more: a last name
    that is one link resolves, one that is two fails with ELOOP, cached or not."""
    fs.mkdir("/d")
    fs.symlink("/d", "/d/one")
    fs.symlink("one", "/d/two")
    put(fs, "/d/f", b"f")
    head = chain(fs, MAX_SYMLINKS - 1, "/d")
    for _ in range(2):
        assert fs.stat(head).st_ino == fs.stat("/d").st_ino
        assert fs.stat(head + "/f").st_size == 1
        assert fs.stat(head + "/one").st_ino == fs.stat("/d").st_ino
        with pytest.raises(OSError) as e:
            fs.stat(head + "/two")
        assert e.value.errno == errno.ELOOP


def count_lookups(fs: daxfs.FileSystem) -> list[int]:
    """Count the names the mount looks up in directories from now on."""
    seen = [0]
    lookup = fs._lookup

    def counted(dir_ino: int, name: str):
        seen[0] += 1
        return lookup(dir_ino, name)

    fs._lookup = counted  # type: ignore[method-assign]
    return seen


def test_a_path_1500_levels_down_walks_one_name_once_its_directory_was_walked(fs):
    seen = count_lookups(fs)
    where = ""
    for _ in range(1500):
        where += "/d"
        fs.mkdir(where)  # its walk is one name: the cache holds past our mkdirs
    put(fs, where + "/f", b"deep")
    assert seen[0] <= 3 * 1501  # not the 1.1 million names of a walk from the root each
    drop_a_directory_name(fs)  # the cache starts again
    seen[0] = 0
    assert fs.stat(where).st_nlink == 2  # walked from the root: 1,500 names
    walked_once = seen[0]
    assert walked_once == 1500
    assert get(fs, where + "/f") == b"deep"
    assert fs.stat(where + "/f").st_size == 4
    assert [e.name for e in fs.scandir(where)] == ["f"]
    assert seen[0] - walked_once <= 3  # one name each
    fs.rename(where + "/f", where + "/g")  # a commit that moves no path: kept
    assert fs.stat(where + "/g").st_size == 4
    assert seen[0] - walked_once <= 6
    drop_a_directory_name(fs)  # a commit that may move paths: the cache starts again
    seen[0] = 0
    assert fs.stat(where + "/g").st_size == 4
    assert seen[0] == 1501


def drop_a_directory_name(fs: daxfs.FileSystem) -> None:
    """Commits that drop a directory's name: the path cache holds past none."""
    fs.mkdir("/gone")
    fs.rmdir("/gone")


FOREIGN = """
import sys, daxfs
with daxfs.mount(sys.argv[1]) as fs:
    fs.rename("/a/b", "/a/old")
    fs.mkdir("/a/b")
    fs.mkdir("/a/b/c")
    with fs.open("/a/b/c/f", "wb") as f:
        f.write(b"new")
"""


def test_another_process_renaming_a_cached_directory_is_seen(pool_path):
    """The cache holds /a/b/c as a directory; another process renames /a/b
    away and makes a new /a/b/c/f: the next call finds the new file, and
    the old one under its new name."""
    with daxfs.mount(pool_path) as fs:
        fs.makedirs("/a/b/c")
        put(fs, "/a/b/c/f", b"old")
        assert get(fs, "/a/b/c/f") == b"old"  # cached: /a/b/c
        put(fs, "/a/b/c/e", b"ours")  # (a change of ours: the cache holds past it)
        assert "/a/b/c" in fs._heads
        subprocess.run([sys.executable, "-c", FOREIGN, pool_path], check=True)
        put(fs, "/a/b/c/g", b"after")  # a change: into the new /a/b/c
        assert sorted(fs.listdir("/a/b/c")) == ["f", "g"]
        assert sorted(fs.listdir("/a/old/c")) == ["e", "f"]
        assert get(fs, "/a/b/c/f") == b"new"
        assert get(fs, "/a/old/c/f") == b"old"
        cached, oracle = walked(fs, "/a/b/c/f", True, False)
        assert cached == oracle


def test_a_change_does_not_see_its_own_edits_as_cached(fs):
    """rename then resolve inside one call sequence: the second call sees the
    rename (our own commit moves the cache on)."""
    fs.makedirs("/x/y")
    put(fs, "/x/y/f", b"1")
    assert fs.exists("/x/y/f")
    fs.rename("/x", "/z")
    assert not fs.exists("/x/y/f")
    assert get(fs, "/z/y/f") == b"1"
    fs.mkdir("/x")
    with pytest.raises(FileNotFoundError):
        fs.stat("/x/y/f")


class Undo(Exception):
    """Raised to abandon a change (nothing of it is committed)."""


def test_a_change_that_dropped_a_directory_name_walks_again(fs):
    """Inside a change the path cache holds until the change drops a
    directory's or a symlink's name; after that, its walks go from the root
    (no operation resolves after its own edits today: this holds the rule
    for the one that will).  What a change's walks add stays; what a change
    that fails after an edit added (a directory it made) goes."""
    fs.makedirs("/a/b")
    put(fs, "/a/b/f", b"1")
    assert fs.stat("/a/b/f").st_size == 1  # the cache holds /a/b
    with pytest.raises(Undo):
        with fs._change() as txn:
            assert fs._resolve("/a/b/f").ino is not None  # (from the cache)
            r = fs._entry("/a")
            fs._edit_dir(r.parent).remove(r.name, txn)
            with pytest.raises(FileNotFoundError):
                fs._resolve("/a/b/f")  # /a is gone
            raise Undo
    assert get(fs, "/a/b/f") == b"1"  # abandoned: nothing changed
    with fs._change():
        r = fs._entry("/a/b/f")  # a change's walk, from the cache...
    assert "/a/b" in fs._heads  # ...which it kept
    with pytest.raises(Undo):
        with fs._change():
            raise Undo  # failed before any edit: what it kept is the pool's
    assert "/a/b" in fs._heads
    with pytest.raises(Undo):
        with fs._change() as txn:
            made = fs._entry("/made")
            fs._create(txn, made, stat.S_IFDIR | 0o755, "/made")  # as mkdir does
            assert fs._heads["/made"][0] == fs._resolve("/made").ino  # the head kept
            raise Undo
    assert "/made" not in fs._heads  # kept only if the change commits
    assert not fs.exists("/made")


def test_the_cache_keeps_the_directories_of_thousands_and_stays_bounded(fs, monkeypatch):
    """Paths spread over 2,000 directories (more than the 1,024 heads it
    kept once) are all answered from the cache after one walk each; and
    the cache starts over, empty, once it holds HEADS_KEPT heads or
    HEADS_CHARS characters of them, whichever comes first."""
    from daxfs import fs as fs_module

    dirs = [f"/d{i}" for i in range(2000)]
    for d in dirs:
        fs.mkdir(d)
        fs.write_bytes(d + "/f", b"x")
    for d in dirs:
        fs.stat(d + "/f")
    assert all(d in fs._heads for d in dirs)
    assert fs._cached_entry(dirs[0] + "/f", True) is not None  # (no walk needed)

    for limits in ({"HEADS_KEPT": 50}, {"HEADS_CHARS": 200}):
        for name, value in limits.items():
            monkeypatch.setattr(fs_module, name, value)
        fs._heads.clear()
        most = 0
        for d in dirs[:500]:
            fs.stat(d + "/f")
            most = max(most, len(fs._heads))
            assert len(fs._heads) <= fs_module.HEADS_KEPT
            assert fs._heads.chars <= fs_module.HEADS_CHARS + len(d)
        assert most >= min(50, 200 // len(dirs[499]))  # (it did keep some)
        monkeypatch.undo()
