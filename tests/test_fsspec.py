"""daxfs through fsspec: fsspec's own conformance suites, the protocol and its
instance caching, errors, ranged reads against a model, transactions, and
pandas and pyarrow reading and writing through it."""

from __future__ import annotations

import errno
import multiprocessing
import os
import pickle
import posixpath
import shutil
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)
from hypothesis import given
from hypothesis import strategies as st

import daxfs
from conftest import new_pool
from daxfs.fsspec import DaxFileSystem, DaxRandom, DaxReader, DaxWriter
from daxfs.layout import CHUNK

MiB = 1 << 20


@pytest.fixture
def dfs(pool_path: str) -> Iterator[DaxFileSystem]:
    """The fresh tmpfs pool through fsspec; unmounted afterwards."""
    f = fsspec.filesystem("daxfs", pool=pool_path)
    try:
        yield f
    finally:
        f.unmount()


def errno_of(fn, *args, **kw) -> int | None:
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return None


# ---------------------------------------------------------------------------
# fsspec's conformance suites
# ---------------------------------------------------------------------------
class DaxFixtures(AbstractFixtures):
    @pytest.fixture
    def fs(self, pool_path):
        f = DaxFileSystem(pool=pool_path)
        try:
            yield f
        finally:
            f.unmount()

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def fs_path(self):
        return "/"


class TestDaxCopy(AbstractCopyTests, DaxFixtures):
    pass


class TestDaxGet(AbstractGetTests, DaxFixtures):
    pass


class TestDaxPut(AbstractPutTests, DaxFixtures):
    pass


class TestDaxOpen(AbstractOpenTests, DaxFixtures):
    pass


class TestDaxPipe(AbstractPipeTests, DaxFixtures):
    pass


# ---------------------------------------------------------------------------
# the protocol: registration, URLs, paths
# ---------------------------------------------------------------------------
def test_protocol_is_registered_through_the_entry_point(pool_path):
    f = fsspec.filesystem("daxfs", pool=pool_path)
    try:
        assert isinstance(f, DaxFileSystem)
        assert f.dax.region.path == os.path.realpath(pool_path)
        with fsspec.open("daxfs:///data/x.txt", "w", pool=pool_path) as out:
            out.write("through a URL")
        with fsspec.open("daxfs://data/x.txt", "r", pool=pool_path) as back:
            assert back.read() == "through a URL"
        url_fs, path = fsspec.core.url_to_fs("daxfs:///data/x.txt", pool=pool_path)
        assert url_fs is f and path == "/data/x.txt"
    finally:
        f.unmount()


@pytest.mark.parametrize(
    "spelled,path",
    [
        ("daxfs:///a/b", "/a/b"),
        ("daxfs://a/b", "/a/b"),
        ("daxfs::/a/b", "/a/b"),
        ("a/b/", "/a/b"),
        ("//a//./b/", "/a/b"),
        ("", "/"),
        ("daxfs://", "/"),
        ("/", "/"),
    ],
)
def test_paths_have_one_spelling(spelled, path):
    assert DaxFileSystem._strip_protocol(spelled) == path


def test_paths_round_trip_through_urls(dfs):
    dfs.pipe_file("/d/f", b"x")
    (name,) = dfs.ls("/d", detail=False)
    assert dfs.unstrip_protocol(name) == "daxfs:///d/f"
    assert dfs.cat_file(dfs.unstrip_protocol(name)) == b"x"


def test_pipe_file_makes_a_new_file_in_one_change_and_replaces_an_old_one(dfs):
    journal = dfs.dax.journal
    dfs.makedirs("/d", exist_ok=True)
    seq = journal.next_seq
    dfs.pipe_file("/d/new", b"n" * 5000)
    assert journal.next_seq == seq + 1  # name, bytes and size in one record
    assert dfs.cat_file("/d/new") == b"n" * 5000
    seq = journal.next_seq
    dfs.pipe_file("/d/new", b"replaced")
    assert journal.next_seq == seq + 1  # emptied and filled at once: never seen empty
    assert dfs.cat_file("/d/new") == b"replaced"
    with pytest.raises(FileExistsError):
        dfs.pipe_file("/d/new", b"x", mode="create")
    assert dfs.cat_file("/d/new") == b"replaced"
    dfs.pipe_file("/d/new", memoryview(b"wide" * 4).cast("I"))  # any buffer, as bytes
    assert dfs.cat_file("/d/new") == b"wide" * 4
    assert dfs.dax.stat("/d/new").st_mode & 0o777 == 0o666 & ~dfs.dax.umask


def test_rm_recursive_removes_a_directorys_files_several_to_a_change(dfs):
    """rm -r unlinks each directory's files UNLINK_BATCH to a change
    (FileSystem._unlink_names), then removes the directory."""
    from daxfs.namespace import UNLINK_BATCH

    journal = dfs.dax.journal
    dfs.makedirs("/t/sub", exist_ok=True)
    for i in range(3 * UNLINK_BATCH):
        dfs.pipe_file(f"/t/f{i}", b"x" * 100)
    dfs.pipe_file("/t/sub/g", b"y")
    dfs.dax.symlink("/t/f0", "/t/sub/link")
    seq = journal.next_seq
    dfs.rm("/t", recursive=True)
    # /t's files in 3 changes (said: logical.py), then an absorb of what they
    # left lagging before /t/sub's 2 names in 1 (a symlink among them: the
    # usual way), the 2 directories in 2
    assert journal.next_seq == seq + 3 + 1 + 1 + 2
    assert not dfs.exists("/t")


def test_needs_a_pool_or_a_mount(pool_path):
    with pytest.raises(ValueError):
        DaxFileSystem()
    with daxfs.mount(pool_path) as mounted, pytest.raises(ValueError):
        DaxFileSystem(pool=pool_path, fs=mounted)


def test_a_missing_pool_fails_at_construction(shm_dir):
    with pytest.raises(FileNotFoundError):
        DaxFileSystem(pool=os.path.join(shm_dir, "no-such-pool"))


# ---------------------------------------------------------------------------
# instance caching and shared mounts
# ---------------------------------------------------------------------------
def test_spellings_of_one_pool_share_the_instance_and_the_mount(pool_path, shm_dir):
    link = os.path.join(shm_dir, "link-to-pool")
    os.symlink(pool_path, link)
    a = DaxFileSystem(pool=pool_path)
    try:
        assert DaxFileSystem(pool=link) is a
        assert DaxFileSystem(pool=os.path.join(shm_dir, ".", os.path.basename(pool_path))) is a
        assert a.dax is DaxFileSystem(pool=link).dax
    finally:
        a.unmount()


def test_a_positional_pool_is_the_same_instance(dfs, pool_path):
    assert DaxFileSystem(pool_path) is dfs
    assert dfs.fsid == f"daxfs-{dfs.dax.info()['uuid']}"


def test_threads_get_their_own_instances_but_one_mount(dfs, pool_path):
    seen = []
    all_started = threading.Barrier(3)  # alive together: thread ids are not reused

    def worker():
        all_started.wait()
        other = DaxFileSystem(pool=pool_path)
        other.pipe_file(f"/from-thread-{threading.get_ident()}", b"t")
        seen.append((other, other.dax))
        all_started.wait()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(inst) for inst, _ in seen}) == 3  # fsspec caches per thread
    assert all(mounted is dfs.dax for _, mounted in seen)
    assert len(dfs.ls("/")) == 3


def test_a_cached_instance_mounts_again_after_unmount(dfs):
    dfs.pipe_file("/kept", b"durable")
    first = dfs.dax
    dfs.unmount()
    assert first.closed
    assert dfs.cat_file("/kept") == b"durable"
    assert dfs.dax is not first and not dfs.dax.closed


def test_a_pool_recreated_at_the_same_path_is_seen(dfs, pool_path):
    dfs.pipe_file("/old", b"old pool")
    os.unlink(pool_path)
    daxfs.mkfs(pool_path, 64 * MiB)
    assert DaxFileSystem(pool=pool_path) is dfs  # fsspec's cache hands out the same instance
    assert dfs.ls("/") == []
    assert not dfs.exists("/old")


def test_a_caller_mount_is_used_as_is_and_never_cached(pool_path):
    with daxfs.mount(pool_path) as one, daxfs.mount(pool_path) as two:
        a, b = DaxFileSystem(fs=one), DaxFileSystem(fs=two)
        assert a is not b and a.dax is one and b.dax is two
        a.pipe_file("/shared", b"one pool")
        assert b.cat_file("/shared") == b"one pool"
        a.unmount()  # the caller's mount is the caller's to close
        assert not one.closed


def test_instances_pickle_as_their_pool(pool_path):
    with daxfs.mount(pool_path) as mine:
        wrapped = DaxFileSystem(fs=mine)
        wrapped.pipe_file("/p", b"pickled")
        again = pickle.loads(pickle.dumps(wrapped))
        try:
            assert again.pool == os.path.realpath(pool_path) and again.dax is not mine
            assert again.cat_file("/p") == b"pickled"
            assert pickle.loads(pickle.dumps(again)) is again  # fsspec's instance cache
        finally:
            again.unmount()


def _child_writes(pool: str, path: str) -> None:
    f = fsspec.filesystem("daxfs", pool=pool)
    f.pipe_file(path, f"child {os.getpid()}".encode())


def test_a_forked_child_uses_the_inherited_mount(dfs, pool_path):
    dfs.pipe_file("/before-fork", b"parent")
    child = multiprocessing.get_context("fork").Process(
        target=_child_writes, args=(pool_path, "/from-child")
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert dfs.cat_file("/from-child") == f"child {child.pid}".encode()
    assert dfs.cat_file("/before-fork") == b"parent"


# ---------------------------------------------------------------------------
# listing and info
# ---------------------------------------------------------------------------
def test_ls_and_info(dfs):
    before = time.time()
    dfs.pipe_file("/d/b.bin", b"12345")
    dfs.mkdir("/d/sub")
    dfs.pipe_file("/d/a.bin", b"")
    entries = dfs.ls("/d")
    assert [e["name"] for e in entries] == ["/d/a.bin", "/d/b.bin", "/d/sub"]
    assert [e["type"] for e in entries] == ["file", "file", "directory"]
    assert entries[1]["size"] == 5 and entries[0]["size"] == 0
    assert dfs.ls("/d", detail=False) == ["/d/a.bin", "/d/b.bin", "/d/sub"]
    assert dfs.ls("/d/b.bin") == [dfs.info("/d/b.bin")]  # ls of a file: the file
    info = dfs.info("daxfs:///d/b.bin")
    assert info["ino"] == dfs.dax.stat("/d/b.bin").st_ino and not info["islink"]
    assert before - 1 <= dfs.modified("/d/b.bin").timestamp() <= time.time() + 1
    assert dfs.created("/d/b.bin").tzinfo is not None
    assert dfs.info("/")["type"] == "directory"
    assert dfs.find("/", withdirs=True) == ["/", "/d", "/d/a.bin", "/d/b.bin", "/d/sub"]
    assert dfs.du("/d") == 5


def test_names_are_utf8_with_spaces(dfs):
    dfs.pipe_file("daxfs:///données/naïve file.txt", "é".encode())
    assert dfs.ls("/données", detail=False) == ["/données/naïve file.txt"]
    assert dfs.cat_file("/données/naïve file.txt") == "é".encode()
    assert dfs.glob("/donn*/*.txt") == ["/données/naïve file.txt"]


def test_symlinks_are_described_by_their_target(dfs):
    dfs.pipe_file("/target", b"abc")
    dfs.dax.symlink("/target", "/link")
    dfs.dax.symlink("/nowhere", "/dangling")
    info = dfs.info("/link")
    assert info["islink"] and info["type"] == "file" and info["size"] == 3
    assert info["destination"] == "/target"
    assert dfs.cat_file("/link") == b"abc"
    assert dfs.info("/dangling")["type"] == "other"
    dfs.rm("/link")
    assert dfs.exists("/target")


def test_errors_are_builtin_oserrors_with_errno(dfs):
    dfs.pipe_file("/file", b"data")
    dfs.mkdir("/dir")
    assert errno_of(dfs.info, "/missing") == errno.ENOENT
    assert errno_of(dfs.ls, "/missing") == errno.ENOENT
    assert errno_of(dfs.cat_file, "/missing") == errno.ENOENT
    assert errno_of(dfs.open, "/missing") == errno.ENOENT
    assert errno_of(dfs.rm, "/missing") == errno.ENOENT
    assert errno_of(dfs.mv, "/missing", "/elsewhere") == errno.ENOENT
    assert errno_of(dfs.open, "/dir") == errno.EISDIR
    assert errno_of(dfs.cat_file, "/dir") == errno.EISDIR
    assert errno_of(dfs.rm, "/dir") == errno.EISDIR  # not recursive
    assert errno_of(dfs.rm_file, "/dir") == errno.EISDIR
    assert errno_of(dfs.ls, "/file/x") == errno.ENOTDIR
    assert errno_of(dfs.mkdir, "/dir") == errno.EEXIST
    assert errno_of(dfs.makedirs, "/dir") == errno.EEXIST
    assert errno_of(dfs.pipe_file, "/file", b"x", mode="create") == errno.EEXIST
    assert errno_of(dfs.open, "/file", "xb") == errno.EEXIST
    dfs.pipe_file("/dir/inside", b"")
    assert errno_of(dfs.rmdir, "/dir") == errno.ENOTEMPTY
    with pytest.raises(FileNotFoundError):
        dfs.cat_file("/missing")
    with pytest.raises(IsADirectoryError):
        dfs.open("/dir", "rb")


def test_without_auto_mkdir_a_missing_parent_is_an_error(pool_path):
    f = DaxFileSystem(pool=pool_path, auto_mkdir=False)
    try:
        assert errno_of(f.pipe_file, "/no/such/dir/f", b"x") == errno.ENOENT
        assert errno_of(f.open, "/no/f", "wb") == errno.ENOENT
        assert not f.exists("/no")
    finally:
        f.unmount()


def test_a_read_only_pool_refuses_changes(pool_path):
    with daxfs.mount(pool_path) as rw:
        with rw.open("/x", "wb") as out:
            out.write(b"x")
    ro = DaxFileSystem(pool=pool_path, readonly=True)
    try:
        assert ro.cat_file("/x") == b"x"
        assert errno_of(ro.pipe_file, "/y", b"y") == errno.EROFS
        assert errno_of(ro.rm, "/x") == errno.EROFS
        assert errno_of(ro.open, "/x", "ab") == errno.EROFS
    finally:
        ro.unmount()


# ---------------------------------------------------------------------------
# directories, removing, moving, copying
# ---------------------------------------------------------------------------
def test_mkdir_makedirs_rmdir(dfs):
    dfs.mkdir("/a/b/c")  # create_parents defaults to True
    assert dfs.isdir("/a/b/c")
    with pytest.raises(FileNotFoundError):
        dfs.mkdir("/x/y", create_parents=False)
    dfs.makedirs("/a/b/c", exist_ok=True)
    dfs.rmdir("/a/b/c")
    assert not dfs.exists("/a/b/c") and dfs.isdir("/a/b")


def test_rm_recursive_and_with_maxdepth(dfs):
    for p in ["/t/f1", "/t/s/f2", "/t/s/deep/f3"]:
        dfs.pipe_file(p, b"x")
    dfs.rm("/t", recursive=True, maxdepth=2)
    # Depth 2 reaches /t/s/f2 and /t/s/deep, which keeps its file and so stays.
    assert dfs.find("/t", withdirs=True) == ["/t", "/t/s", "/t/s/deep", "/t/s/deep/f3"]
    dfs.rm("/t", recursive=True)
    assert not dfs.exists("/t")


def test_rm_recursive_removes_symlinks_not_their_targets(dfs):
    dfs.pipe_file("/keep/precious", b"!")
    dfs.pipe_file("/tree/file", b"x")
    dfs.dax.symlink("/keep", "/tree/link-to-dir")
    assert dfs.isdir("/tree/link-to-dir")  # info and walk follow links, as LocalFileSystem
    dfs.rm("/tree", recursive=True)
    assert not dfs.exists("/tree")
    assert dfs.cat_file("/keep/precious") == b"!"


def test_rm_of_a_glob(dfs):
    for p in ["/g/a.tmp", "/g/b.tmp", "/g/c.txt", "/g/d.tmp/inner"]:
        dfs.pipe_file(p, b"x")
    with pytest.raises(IsADirectoryError):
        dfs.rm("/g/*.tmp")  # d.tmp is a directory
    dfs.rm("/g/*.tmp", recursive=True)
    assert dfs.ls("/g", detail=False) == ["/g/c.txt"]


def test_mv_is_an_atomic_rename(dfs):
    dfs.pipe_file("/src/f", b"payload")
    ino = dfs.info("/src/f")["ino"]
    dfs.mv("/src/f", "/new/place/g")  # missing parents made
    assert dfs.info("/new/place/g")["ino"] == ino  # the same inode: renamed, not copied
    assert not dfs.exists("/src/f")
    dfs.mkdir("/into")
    dfs.mv("/new/place/g", "/into")  # into an existing directory, as shutil.move
    assert dfs.cat_file("/into/g") == b"payload"
    dfs.pipe_file("/victim", b"old")
    dfs.mv("/into/g", "/victim")  # replaces a file
    assert dfs.cat_file("/victim") == b"payload"
    dfs.mv("/new", "/renamed-dir", recursive=True)
    assert dfs.isdir("/renamed-dir/place")
    dfs.rename("/victim", "/victim")  # onto itself: nothing happens
    assert dfs.cat_file("/victim") == b"payload"


def test_mv_of_a_glob_moves_each_match(dfs):
    for name in ["a.csv", "b.csv", "c.txt"]:
        dfs.pipe_file(f"/in/{name}", name.encode())
    dfs.mkdir("/out")
    dfs.mv("/in/*.csv", "/out")
    assert dfs.ls("/out", detail=False) == ["/out/a.csv", "/out/b.csv"]
    assert dfs.ls("/in", detail=False) == ["/in/c.txt"]


def test_cp_file_copies_bytes_and_keeps_holes(dfs):
    head, tail = os.urandom(5000), os.urandom(3000)
    with dfs.open("/sparse", "wb") as f:
        f.write(head)
        f.seek(3 * CHUNK)
        f.write(tail)
    dfs.cp_file("/sparse", "/copies/sparse")
    want = head + bytes(3 * CHUNK - len(head)) + tail
    assert dfs.cat_file("/copies/sparse") == want
    extents = dfs.dax.iomap("/copies/sparse")
    assert any(e.kind == "hole" for e in extents)
    assert dfs.dax.stat("/copies/sparse").st_blocks < dfs.dax.stat("/sparse").st_size // 512
    dfs.cp_file("/sparse", "/sparse")  # onto itself: unchanged
    assert dfs.cat_file("/sparse") == want
    dfs.touch("/empty")
    dfs.cp_file("/empty", "/empty-copy")
    assert dfs.cat_file("/empty-copy") == b""


def test_cp_file_ending_in_a_hole(dfs):
    with dfs.open("/tail-hole", "wb") as f:
        f.write(b"data")
        f.truncate(3 * CHUNK)
    dfs.cp_file("/tail-hole", "/tail-hole-copy")
    assert dfs.cat_file("/tail-hole-copy") == b"data" + bytes(3 * CHUNK - 4)


def test_get_and_put_large_files(dfs, tmp_path):
    blob = os.urandom(3 * MiB + 123)
    local = tmp_path / "blob"
    local.write_bytes(blob)
    dfs.put_file(str(local), "/up/blob")
    assert dfs.cat_file("/up/blob") == blob
    dfs.get_file("/up/blob", str(tmp_path / "down" / "blob"))
    assert (tmp_path / "down" / "blob").read_bytes() == blob
    (tmp_path / "empty").write_bytes(b"")
    dfs.put_file(str(tmp_path / "empty"), "/up/empty")
    dfs.get_file("/up/empty", str(tmp_path / "empty-back"))
    assert (tmp_path / "empty-back").read_bytes() == b""


def test_put_file_of_at_most_one_piece_is_one_change(dfs, tmp_path):
    """A local file of up to blocksize bytes comes in as one change (as
    pipe_file's bytes), new or over an old file, which is never seen empty;
    a bigger one is written piece by piece; progress reaches the size."""
    journal = dfs.dax.journal
    dfs.makedirs("/up", exist_ok=True)
    for size in (0, 5000, dfs.blocksize):
        local = tmp_path / f"f{size}"
        local.write_bytes(os.urandom(size))
        for _ in range(2):  # a new file, then over it
            if journal.unabsorbed:  # (said before, a small file: absorbed by a change first)
                dfs.dax.chmod("/up", 0o755)
            seq, progress = journal.next_seq, fsspec.callbacks.Callback()
            dfs.put_file(str(local), "/up/f", callback=progress)
            assert journal.next_seq == seq + 1, size
            assert dfs.cat_file("/up/f") == local.read_bytes()
            assert (progress.size, progress.value) == (size, size)
    with pytest.raises(FileExistsError):
        dfs.put_file(str(local), "/up/f", mode="create")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(dfs.blocksize + 1))
    progress = fsspec.callbacks.Callback()
    dfs.put_file(str(big), "/up/big", callback=progress)
    assert dfs.cat_file("/up/big") == big.read_bytes() and progress.value == dfs.blocksize + 1


def test_get_file_into_a_file_object_reports_progress(dfs, tmp_path):
    blob = os.urandom(2 * dfs.blocksize + 10)
    dfs.pipe_file("/b", blob)
    progress = fsspec.callbacks.Callback()
    with open(tmp_path / "out", "wb") as out:
        dfs.get_file("/b", out, callback=progress)
    assert (tmp_path / "out").read_bytes() == blob
    assert progress.size == progress.value == len(blob)


# ---------------------------------------------------------------------------
# file objects and transactions
# ---------------------------------------------------------------------------
def test_file_objects_are_the_io_classes_with_fsspec_attributes(dfs):
    with dfs.open("/f", "wb") as w:
        assert isinstance(w, DaxWriter) and w.fs is dfs and w.path == "/f"
        w.write(b"0123456789")
    with dfs.open("/f", "rb") as r:
        assert isinstance(r, DaxReader) and r.size == 10
        r.seek(-4, os.SEEK_END)
        assert r.read() == b"6789"
    with dfs.open("/f", "ab") as a:
        a.write(b"AB")
    with dfs.open("/f", "r+b") as rw:
        assert isinstance(rw, DaxRandom)
        rw.seek(2)
        rw.write(b"xx")
        rw.seek(0)
        assert rw.read() == b"01xx456789AB"
    with dfs.open("/f", "r", encoding="ascii") as text:
        assert text.read() == "01xx456789AB"


def test_transaction_publishes_on_success_only(dfs):
    dfs.pipe_file("/published", b"old")
    with dfs.transaction:
        with dfs.open("/published", "wb") as f:
            f.write(b"new")
        with dfs.open("/brand/new", "wb") as f:
            f.write(b"fresh")
        assert dfs.cat_file("/published") == b"old"  # not before the commit
        assert not dfs.exists("/brand/new")
    assert dfs.cat_file("/published") == b"new"
    assert dfs.cat_file("/brand/new") == b"fresh"

    with pytest.raises(RuntimeError), dfs.transaction:
        with dfs.open("/published", "wb") as f:
            f.write(b"never")
        raise RuntimeError("abort")
    assert dfs.cat_file("/published") == b"new"
    assert dfs.find("/") == ["/brand/new", "/published"]  # no staged leftovers


def test_transaction_stages_pipe_file_and_put_file_too(dfs, tmp_path):
    local = tmp_path / "local"
    local.write_bytes(b"from disk")
    with pytest.raises(RuntimeError), dfs.transaction:
        dfs.pipe_file("/piped", b"x")
        dfs.put_file(str(local), "/put")
        assert not dfs.exists("/piped") and not dfs.exists("/put")
        raise RuntimeError("abort")
    assert dfs.find("/") == []
    with dfs.transaction:
        dfs.pipe_file("/piped", b"x")
        dfs.put_file(str(local), "/put")
    assert dfs.cat_file("/piped") == b"x" and dfs.cat_file("/put") == b"from disk"


def test_reads_never_make_a_writer_fail(dfs):
    # A read must not pin the file's blocks: a writer replacing the file
    # (open "wb" truncates it) meanwhile must not get EBUSY.
    dfs.pipe_file("/f", os.urandom(MiB))
    stop, errors = threading.Event(), []

    def read_forever():
        while not stop.is_set():
            try:
                dfs.cat_file("/f", 0, 1000)
                dfs.cat_file("/f")
            except OSError as e:
                errors.append(e)

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for i in range(300):
            dfs.pipe_file("/f", bytes([i % 256]) * MiB)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert dfs.cat_file("/f") == bytes([299 % 256]) * MiB


def test_a_full_pool_during_cp_file_is_enospc(make_pool):
    pool = make_pool(size=16 * MiB)
    f = fsspec.filesystem("daxfs", pool=pool)
    try:
        f.pipe_file("/big", os.urandom(9 * MiB))
        with pytest.raises(OSError) as ei:
            f.cp_file("/big", "/big2")
        assert ei.value.errno == errno.ENOSPC
    finally:
        f.unmount()
    assert daxfs.check(pool).ok


def test_touch_truncates_or_only_updates_times(dfs):
    dfs.pipe_file("/t", b"content")
    dfs.dax.utime("/t", (1000.0, 1000.0))
    dfs.touch("/t", truncate=False)
    assert dfs.cat_file("/t") == b"content"
    assert dfs.info("/t")["mtime"] > 1000
    dfs.touch("/t")
    assert dfs.cat_file("/t") == b""
    dfs.touch("/new/file")
    assert dfs.isfile("/new/file")


# ---------------------------------------------------------------------------
# ranged reads against a model
# ---------------------------------------------------------------------------
def _sparse_content() -> bytes:
    rng = np.random.default_rng(7)
    data = bytearray(CHUNK + 3 * 4096 + 17)
    data[:5000] = rng.bytes(5000)
    data[CHUNK : CHUNK + 9000] = rng.bytes(9000)
    return bytes(data)


MODEL_FILES = {
    "/empty": b"",
    "/small": bytes(range(256)) * 20 + b"tail",
    "/sparse": _sparse_content(),
}


@pytest.fixture(scope="module")
def model_fs() -> Iterator[DaxFileSystem]:
    """One pool for every Hypothesis example (function fixtures would be reset
    between examples only in name)."""
    d = tempfile.mkdtemp(
        prefix="daxfs-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    f = DaxFileSystem(pool=new_pool(d))
    try:
        for path, data in MODEL_FILES.items():
            with f.open(path, "wb") as out:  # the sparse file keeps its holes
                for start in range(0, len(data), 4096):
                    block = data[start : start + 4096]
                    if any(block):
                        out.seek(start)
                        out.write(block)
                out.truncate(len(data))
        yield f
    finally:
        f.unmount()
        shutil.rmtree(d, ignore_errors=True)


def _bound(size: int):
    return st.one_of(st.none(), st.integers(-size - 20, size + 20))


@given(
    name=st.sampled_from(sorted(MODEL_FILES)),
    data=st.data(),
)
def test_cat_file_ranges_match_python_slices(model_fs, name, data):
    content = MODEL_FILES[name]
    start = data.draw(_bound(len(content)), label="start")
    end = data.draw(_bound(len(content)), label="end")
    assert model_fs.cat_file(name, start, end) == content[start:end]


@pytest.mark.parametrize(
    "start,end",
    [(None, None), (0, 0), (0, 1), (-1, None), (None, -1), (5, 2), (-5, -2), (4095, 4097),
     (CHUNK - 3, CHUNK + 3), (-10**9, 10**9), (10**9, None)],
)  # fmt: skip
def test_cat_file_edge_ranges(model_fs, start, end):
    for name, content in MODEL_FILES.items():
        assert model_fs.cat_file(name, start, end) == content[start:end]
        assert model_fs.cat_ranges([name], [start], [end]) == [content[start:end]]


def test_cat_file_copies_the_range_once(model_fs):
    content = MODEL_FILES["/sparse"]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        got = model_fs.cat_file("/sparse", 100, -100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == content[100:-100]
    # One bytes object of the range; a bounce buffer would double the peak.
    assert peak - before < 1.25 * len(got)


# ---------------------------------------------------------------------------
# pandas and pyarrow through the protocol
# ---------------------------------------------------------------------------
def _frame(n: int = 1000) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "i": np.arange(n, dtype="int64"),
            "x": np.linspace(0, 1, n),
            "s": [f"row {k}" for k in range(n)],
            "part": np.arange(n) % 3,
        }
    )


def test_pandas_parquet_and_csv_through_urls(dfs, pool_path):
    frame = _frame()
    opts = {"pool": pool_path}
    frame.to_parquet("daxfs:///tables/t.parquet", storage_options=opts)
    pd.testing.assert_frame_equal(
        pd.read_parquet("daxfs:///tables/t.parquet", storage_options=opts), frame
    )
    frame.to_csv("daxfs:///tables/t.csv", index=False, storage_options=opts)
    back = pd.read_csv("daxfs:///tables/t.csv", storage_options=opts)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert dfs.cat_file("/tables/t.csv").startswith(b"i,x,s,part\n0,0.0,row 0,0\n")
    frame.to_csv("daxfs:///tables/t.csv.gz", index=False, storage_options=opts)
    assert dfs.cat_file("/tables/t.csv.gz", 0, 2) == b"\x1f\x8b"  # gzip, inferred
    pd.testing.assert_frame_equal(
        pd.read_csv("daxfs:///tables/t.csv.gz", storage_options=opts), back
    )


def test_pandas_partitioned_parquet_dataset(dfs, pool_path):
    frame = _frame()
    frame.to_parquet("daxfs:///ds", partition_cols=["part"], storage_options={"pool": pool_path})
    assert dfs.ls("/ds", detail=False) == ["/ds/part=0", "/ds/part=1", "/ds/part=2"]
    back = pd.read_parquet("daxfs:///ds", storage_options={"pool": pool_path})
    back = back.sort_values("i").reset_index(drop=True)
    assert back["i"].tolist() == frame["i"].tolist()
    assert back["part"].astype("int64").tolist() == frame["part"].tolist()


def test_pyarrow_filesystem_over_fsspec_handler(dfs):
    arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(dfs))
    table = pa.Table.from_pandas(_frame(), preserve_index=False)
    ds.write_dataset(
        table,
        "/arrow-ds",
        filesystem=arrow_fs,
        format="parquet",
        partitioning=["part"],
        partitioning_flavor="hive",
    )
    assert sorted(dfs.find("/arrow-ds")) == [f"/arrow-ds/part={k}/part-0.parquet" for k in range(3)]
    back = ds.dataset("/arrow-ds", filesystem=arrow_fs, format="parquet", partitioning="hive")
    got = back.to_table().sort_by("i")
    assert got["i"].to_pylist() == table["i"].to_pylist()
    assert got["s"].to_pylist() == table["s"].to_pylist()

    pq.write_table(table, "/single.parquet", filesystem=arrow_fs)
    assert pq.read_table("/single.parquet", filesystem=arrow_fs).equals(table)
    info = arrow_fs.get_file_info("/single.parquet")
    assert info.type == pafs.FileType.File and info.size == dfs.size("/single.parquet")
    arrow_fs.move("/single.parquet", "/moved.parquet")
    arrow_fs.delete_dir("/arrow-ds")
    assert dfs.ls("/", detail=False) == ["/moved.parquet"]
    with arrow_fs.open_append_stream("/moved.parquet") as out:
        out.write(b"!")
    assert dfs.cat_file("/moved.parquet", -1) == b"!"


def test_pyarrow_reads_a_parquet_file_through_read_buffer_as_copies(dfs):
    """pyarrow's PythonFile reads a Parquet file's ranges with read_buffer
    when the file has it (one copy into pyarrow's pool, no bytes object):
    the reads must come that way, give the file's bytes at any range, the
    end included, and hold nothing of the pool (a copy: the file can be
    truncated under a table made from it)."""
    table = pa.Table.from_pandas(_frame(5000), preserve_index=False)
    with dfs.open("/t.parquet", "wb") as out:
        pq.write_table(table, out)
    content = dfs.cat_file("/t.parquet")
    asked: list[int] = []
    with dfs.open("/t.parquet", "rb") as f:
        real = f.read_buffer

        def counted(n=-1):
            asked.append(n)
            return real(n)

        f.read_buffer = counted
        got = pq.read_table(pa.PythonFile(f, mode="r"))
    assert got.equals(table)
    assert asked, "pyarrow did not read through read_buffer"
    with dfs.open("/t.parquet", "rb") as f:
        f.seek(len(content) - 10)
        tail = f.read_buffer(100)  # past the end: what there is
        assert isinstance(tail, pa.Buffer) and tail.to_pybytes() == content[-10:]
        f.seek(7)
        assert f.read_buffer(5).to_pybytes() == content[7:12]
        assert f.tell() == 12
        assert f.read_buffer().to_pybytes() == content[12:]
        f.seek(3)
        kept = f.read_buffer(1000)
    dfs.dax.truncate("/t.parquet", 0)  # refused (EBUSY) if a view pinned it
    dfs.pipe_file("/other", b"\xee" * len(content))
    assert kept.to_pybytes() == content[3:1003]


def test_a_pool_on_disk_behind_the_page_cache(disk_pool):
    """The msync backend: the same calls, durable through msync."""
    f = DaxFileSystem(pool=disk_pool)
    try:
        assert f.dax.info()["durability"] == "msync"
        blob = os.urandom(CHUNK + 12345)
        f.pipe_file("/d/blob", blob)
        f.cp_file("/d/blob", "/d/copy")
        f.mv("/d/copy", "/e/moved")
        assert f.cat_file("/e/moved", CHUNK - 5, CHUNK + 5) == blob[CHUNK - 5 : CHUNK + 5]
        _frame(100).to_parquet("daxfs:///t.parquet", storage_options={"pool": disk_pool})
    finally:
        f.unmount()
    with daxfs.mount(disk_pool) as again:  # all of it reached the file
        with again.open("/e/moved", "rb") as back:
            assert back.read() == blob
        with again.open("/t.parquet", "rb") as back:
            assert pq.read_table(back).num_rows == 100


def test_a_file_open_for_writing_gathers_its_writes_into_chunks(dfs):
    """pyarrow, pandas and zarr write a file through fsspec in many writes of
    16 - 256 KiB; each that reaches the pool is a journaled change.  A file
    open for writing only gathers them up to a 2 MiB chunk: 64 writes of
    100 kB are 4 changes, not 64, and the file holds every byte.  A
    block_size asked for is kept; reading files keep their smaller buffer."""
    journal = dfs.dax.journal
    piece = bytes(range(250)) * 400  # 100,000 bytes
    before = journal.next_seq
    with dfs.open("/gathered", "wb") as f:
        assert isinstance(f, DaxWriter)
        for _ in range(64):
            f.write(piece)
    assert journal.next_seq - before <= 8
    assert dfs.cat_file("/gathered") == piece * 64
    before = journal.next_seq
    with dfs.open("/asked", "wb", block_size=64 * 1024) as f:
        for _ in range(16):
            f.write(piece)
    assert journal.next_seq - before >= 16
    with dfs.open("/gathered", "rb") as f:
        assert isinstance(f, DaxReader) and f.read(10) == piece[:10]
        assert len(f.peek()) < CHUNK
