"""daxfs.zarr.DaxStore: zarr's own store test suite, zero-copy reads, the
lifetime of a read under overwrite and delete, and zarr arrays in a pool."""

from __future__ import annotations

import functools
import gc
import inspect
import os
import pickle

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from zarr.core.buffer import cpu, default_buffer_prototype  # noqa: E402
from zarr.core.sync import sync  # noqa: E402
from zarr.testing.store import StoreTests  # noqa: E402

import daxfs  # noqa: E402
from daxfs.zarr import DaxStore  # noqa: E402

POOL_SIZE = 16 << 20
PROTO = default_buffer_prototype()


# --------------------------------------------------------------------------
# zarr's StoreTests
# --------------------------------------------------------------------------
def _run_to_completion(test):
    @functools.wraps(test)  # keeps the signature (fixtures) and the marks
    def run(*args, **kwargs):
        return sync(test(*args, **kwargs))

    return run


def run_coroutine_tests(cls):
    """Most of zarr's store tests are coroutines, which pytest runs only with an
    async plugin (the project has none): run each on zarr's own event loop."""
    for name in dir(cls):
        if name.startswith("test_") and inspect.iscoroutinefunction(getattr(cls, name)):
            setattr(cls, name, _run_to_completion(getattr(cls, name)))
    return cls


def _pool_file(directory: str) -> str:
    path = os.path.join(directory, "pool")
    daxfs.mkfs(path, POOL_SIZE)
    return path


@run_coroutine_tests
class TestDaxStore(StoreTests[DaxStore, cpu.Buffer]):
    store_cls = DaxStore
    buffer_cls = cpu.Buffer

    # Each variant: how the store reaches the pool, and its root in the pool.
    @pytest.fixture(params=["path:/", "path:/deep/er", "mounted:/deep/er"])
    def store_kwargs(self, request, shm_dir):
        how, root = request.param.split(":")
        pool = _pool_file(shm_dir)
        with daxfs.mount(pool) as fs:  # read-only stores need their root to exist
            fs.makedirs(root, exist_ok=True)
        if how == "path":
            yield {"pool": pool, "root": root}
            return
        fs = daxfs.mount(pool)
        try:
            yield {"pool": fs, "root": root}
        finally:
            fs.close()

    # zarr's fixtures are coroutines too: the same stores, made synchronously.
    @pytest.fixture
    def store(self, open_kwargs):
        store = sync(self.store_cls.open(**open_kwargs))
        yield store
        store.close()

    @pytest.fixture
    def store_not_open(self, store_kwargs):
        return self.store_cls(**store_kwargs)

    # The suite's own access path: the FileSystem, bypassing the store.
    @staticmethod
    def _file(store: DaxStore, key: str) -> str:
        return store.root.rstrip("/") + "/" + key

    async def set(self, store: DaxStore, key: str, value) -> None:
        path = self._file(store, key)
        store.fs.makedirs(path.rpartition("/")[0] or "/", exist_ok=True)
        with store.fs.open(path, "wb") as f:
            f.write(value.to_bytes())

    async def get(self, store: DaxStore, key: str):
        with store.fs.open(self._file(store, key), "rb") as f:
            return self.buffer_cls.from_bytes(f.read())

    def test_store_repr(self, store: DaxStore) -> None:
        assert str(store) == f"daxfs://{store.pool}:{store.root}"
        assert repr(store) == f"DaxStore('{store}')"

    def test_store_supports_writes(self, store: DaxStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: DaxStore) -> None:
        assert store.supports_listing


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def mapped_file(address: int) -> str | None:
    """The file the kernel maps at ``address`` in this process (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) == 6 else None
    return None


def address_of(buffer) -> int:
    return buffer.as_numpy_array().__array_interface__["data"][0]


def mapping_behind(buffer) -> daxfs.Mapping:
    """The daxfs Mapping a buffer from DaxStore.get is a view of: the base of its
    array is the store's lease on the mapping."""
    base = buffer.as_numpy_array()
    while isinstance(base, np.ndarray):
        base = base.base
    return base.mapping


def value(n: int, seed: int) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(np.random.default_rng(seed).bytes(n))


@pytest.fixture
def pool(shm_dir) -> str:
    return _pool_file(shm_dir)


@pytest.fixture
def store(pool):
    s = DaxStore(pool, root="/z")
    yield s
    s.close()


def used_blocks(store: DaxStore) -> int:
    st = store.fs.statvfs()
    return st.f_blocks - st.f_bfree


async def _collect(it):
    return sorted([x async for x in it])


# --------------------------------------------------------------------------
# zero-copy reads
# --------------------------------------------------------------------------
def test_get_returns_a_view_of_the_mapped_pool(store, pool):
    data = value(1 << 20, seed=1)
    store.set_sync("c/0/0", data)
    got = store.get_sync("c/0/0")
    assert got.to_bytes() == data.to_bytes()

    m = mapping_behind(got)
    assert m.path == "/z/c/0/0" and m.length == 1 << 20
    addr = address_of(got)
    assert m.address <= addr < m.address + m.length
    assert mapped_file(addr) == pool  # the kernel maps the pool file itself there
    assert not got.as_numpy_array().flags.writeable  # mapped read-only


def test_byte_ranges_are_views_into_the_same_mapping(store):
    store.set_sync("k", value(64 << 10, seed=2))
    whole = store.get_sync("k")
    for request, start in [
        (zarr.abc.store.RangeByteRequest(100, 200), 100),
        (zarr.abc.store.OffsetByteRequest(5000), 5000),
        (zarr.abc.store.SuffixByteRequest(10), (64 << 10) - 10),
    ]:
        part = sync(store.get("k", PROTO, byte_range=request))
        assert part.to_bytes() == whole.to_bytes()[start : start + len(part)]
        m = mapping_behind(part)
        assert address_of(part) == m.address + start


def test_a_buffer_keeps_its_mapping_after_the_store_is_gone(pool):
    store = DaxStore(pool, root="/z")
    store.set_sync("k", cpu.Buffer.from_bytes(b"persistent bytes"))
    got = store.get_sync("k")
    m = mapping_behind(got)
    store.close()
    del store
    gc.collect()
    assert got.to_bytes() == b"persistent bytes"
    with pytest.raises(BufferError):  # the lease's export: it cannot be unmapped
        m.close()
    assert not m.closed


def test_a_dropped_buffer_has_its_mapping_closed_by_the_next_call(store):
    store.set_sync("k", value(4096, seed=3))
    got = store.get_sync("k")
    m = mapping_behind(got)
    tail = got[4000:4096]  # a view derived from the buffer keeps the mapping too
    del got
    sync(store.exists("k"))
    assert not m.closed
    del tail
    sync(store.exists("k"))
    assert m.closed


# --------------------------------------------------------------------------
# writes replace atomically; readers of the old value keep valid memory
# --------------------------------------------------------------------------
def test_overwrite_leaves_an_old_reader_its_bytes_until_it_lets_go(store):
    old, new = value(256 << 10, seed=4), value(256 << 10, seed=5)
    store.set_sync("c/0", old)
    baseline = used_blocks(store)
    reader = store.get_sync("c/0")

    store.set_sync("c/0", new)
    # The old file is an orphan pinned by the reader's mapping: not freed, not
    # reused by later writes, still the old bytes.
    assert used_blocks(store) == baseline + (256 << 10) // 4096
    for i in range(8):
        store.set_sync(f"filler/{i}", value(128 << 10, seed=10 + i))
    assert reader.to_bytes() == old.to_bytes()
    assert store.get_sync("c/0").to_bytes() == new.to_bytes()

    sync(store.delete_dir("filler"))  # its directory block too
    del reader
    gc.collect()
    sync(store.exists("c/0"))  # closes the reader's mapping: the orphan is freed
    assert used_blocks(store) == baseline


def test_delete_under_a_reader(store):
    store.set_sync("k", value(64 << 10, seed=6))
    baseline = used_blocks(store)
    reader = store.get_sync("k")
    store.delete_sync("k")
    assert store.get_sync("k") is None
    assert used_blocks(store) == baseline
    assert reader.to_bytes() == value(64 << 10, seed=6).to_bytes()
    del reader
    sync(store.exists("k"))
    assert used_blocks(store) == baseline - (64 << 10) // 4096


def test_writes_leave_no_temporary_files(store):
    for i in range(5):
        store.set_sync("a/k", value(1000, seed=i))
        sync(store.set_if_not_exists("a/k", value(10, seed=99)))
        sync(store.set_if_not_exists(f"a/new{i}", value(10, seed=i)))
    assert sorted(store.fs.listdir("/z/a")) == ["k", "new0", "new1", "new2", "new3", "new4"]
    assert store.get_sync("a/k").to_bytes() == value(1000, seed=4).to_bytes()


def test_a_new_key_is_one_change_and_a_removed_root_is_made_again(store, pool):
    """A value for a new key is its file made with its bytes in one change
    (no temporary name, one commit); an existing key is replaced through a
    temporary name.  A store made again from a pickle (a dask task) does not
    make its root again, so a root removed meanwhile is made again by the
    next write, with its parents."""
    fs = store.fs
    store.set_sync("c/0/0", value(5000, seed=1))
    commits = fs.journal.next_seq
    store.set_sync("c/1/0", value(5000, seed=2))  # the row's directory, then the file
    assert fs.journal.next_seq - commits == 2
    store.set_sync("c/1/0", value(300, seed=3))  # a replace: temporary name and rename
    assert store.get_sync("c/1/0").to_bytes() == value(300, seed=3).to_bytes()
    copy = pickle.loads(pickle.dumps(store))
    copy.set_sync("c/1/1", value(10, seed=3))
    fs.rename("/z", "/gone")
    copy = pickle.loads(pickle.dumps(store))
    copy.set_sync("c/2/0", value(10, seed=4))
    copy.set_sync("c/1/2", value(10, seed=5))  # a directory known here, gone since
    assert sorted(fs.listdir("/z/c")) == ["1", "2"]
    assert copy.get_sync("c/2/0").to_bytes() == value(10, seed=4).to_bytes()
    assert copy.get_sync("c/1/2").to_bytes() == value(10, seed=5).to_bytes()
    with pytest.raises(FileExistsError):  # set_if_not_exists's exclusive create
        store._write("c/2/0", value(1, seed=5), exclusive=True)
    copy.close()
    assert daxfs.check(pool).ok


def test_a_write_in_progress_is_not_listed(store):
    store.set_sync("a/k", cpu.Buffer.from_bytes(b"v"))
    with store.fs.open("/z/a/.daxfs-tmp-" + "0" * 32, "wb") as f:
        f.write(b"half")
    assert sync(_collect(store.list())) == ["a/k"]
    assert sync(_collect(store.list_dir("a"))) == ["k"]


def test_list_prefix_is_a_string_prefix(store):
    for key in ["c/1/0", "c/10/0", "c/2/0", "cx", "zarr.json"]:
        store.set_sync(key, cpu.Buffer.from_bytes(b"."))
    assert sync(_collect(store.list_prefix("c/1"))) == ["c/1/0", "c/10/0"]
    assert sync(_collect(store.list_prefix("c"))) == ["c/1/0", "c/10/0", "c/2/0", "cx"]
    assert sync(_collect(store.list_prefix("c/1/"))) == ["c/1/0"]


def test_keys_cannot_leave_the_root(store):
    for key in ["../x", "a/../../x", "./x"]:
        with pytest.raises(ValueError):
            store.set_sync(key, cpu.Buffer.from_bytes(b"x"))


# --------------------------------------------------------------------------
# mounts, borrowing, pickling
# --------------------------------------------------------------------------
def test_stores_on_one_pool_share_one_mount(pool):
    a, b = DaxStore(pool, root="/a"), DaxStore(pool, root="/b")
    copy = pickle.loads(pickle.dumps(a))
    assert a.fs is b.fs is copy.fs
    assert copy == a and copy != b and a != a.with_read_only(True)
    for s in (a, b, copy):
        s.close()


def test_mounts_of_dropped_stores_are_kept_idle_then_unmounted(make_pool):
    pools = [make_pool(size=POOL_SIZE) for _ in range(4)]
    mounts = []
    for p in pools:
        s = DaxStore(p)
        s.set_sync("k", cpu.Buffer.from_bytes(b"v"))
        mounts.append(s.fs)
        del s  # never closed: its mount is given back at the next store call
    again = DaxStore(pools[3])
    assert again.get_sync("k").to_bytes() == b"v"
    assert again.fs is mounts[3]  # an idle mount is reused, not mounted again
    assert [m.closed for m in mounts] == [True, True, False, False]  # two idle at most
    again.close()


def test_a_pool_replaced_at_its_path_is_mounted_again(store, pool):
    # As the fsspec file system does: each call checks the mount is still
    # of the file at that path, so writes never go into a deleted pool.
    store.set_sync("k", cpu.Buffer.from_bytes(b"old"))
    old = store.fs
    os.unlink(pool)
    daxfs.mkfs(pool, POOL_SIZE)
    store.set_sync("k2", cpu.Buffer.from_bytes(b"new"))
    assert store.fs is not old
    assert sync(_collect(store.list())) == ["k2"]
    store.close()
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/z") == ["k2"]


def test_a_borrowed_filesystem_is_not_unmounted(pool):
    with daxfs.mount(pool) as fs:
        store = DaxStore(fs, root="/r")
        store.set_sync("k", cpu.Buffer.from_bytes(b"v"))
        store.close()
        assert not fs.closed
        assert fs.listdir("/r") == ["k"]
        # A pickled copy names the pool by path and mounts it (here: the registry's mount).
        copy = pickle.loads(pickle.dumps(store))
        assert copy.get_sync("k").to_bytes() == b"v" and copy.fs is not fs
        copy.close()


def test_read_only_store_on_a_missing_root(pool):
    with pytest.raises(FileNotFoundError):
        sync(DaxStore.open(pool, root="/nowhere", read_only=True))


# --------------------------------------------------------------------------
# zarr arrays in a pool
# --------------------------------------------------------------------------
@pytest.mark.parametrize("compressors", [None, "auto"], ids=["raw", "zstd"])
def test_zarr_array_round_trip_overwrite_resize(store, pool, compressors):
    rng = np.random.default_rng(7)
    data = rng.standard_normal((100, 70))
    z = zarr.create_array(
        store, name="a", shape=data.shape, chunks=(32, 32), dtype="f8", compressors=compressors
    )
    z[:] = data
    np.testing.assert_array_equal(z[:], data)

    z[10:50, 5] = -1.0  # a partial overwrite of several chunks
    data[10:50, 5] = -1.0
    z[64:96, 32:64] = 7.0  # one whole chunk replaced
    data[64:96, 32:64] = 7.0
    z.attrs["units"] = "K"
    np.testing.assert_array_equal(z[:], data)

    z.resize((130, 40))  # grow one axis, shrink the other: chunks outside are deleted
    assert not sync(store.exists("a/c/0/2"))
    reopened = zarr.open_array(DaxStore(pool, root="/z"), path="a", mode="r")
    assert reopened.shape == (130, 40) and reopened.attrs["units"] == "K"
    np.testing.assert_array_equal(reopened[:100, :40], data[:, :40])
    assert (reopened[100:, :] == 0).all()


def test_zarr_group_hierarchy(store):
    root = zarr.open_group(store, mode="w")
    root.create_group("g").create_array("v", shape=(5,), dtype="i4")[:] = np.arange(5)
    root.create_array("w", shape=(2, 2), dtype="u1")[:] = 9
    again = zarr.open_group(store, mode="r")
    assert sorted(again.group_keys()) == ["g"] and sorted(again.array_keys()) == ["w"]
    np.testing.assert_array_equal(again["g/v"][:], np.arange(5))


def test_sharded_array_reads_through_byte_ranges(store):
    data = np.arange(128 * 128, dtype="i4").reshape(128, 128)
    z = zarr.create_array(
        store, name="s", shape=data.shape, chunks=(16, 16), shards=(64, 64), dtype="i4"
    )
    z[:] = data
    assert sorted(store.fs.listdir("/z/s/c")) == ["0", "1"]  # 4 shard files of 16 chunks
    np.testing.assert_array_equal(z[3:90, 17:18], data[3:90, 17:18])
    np.testing.assert_array_equal(z[:], data)


def test_threads_share_a_store(store):
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> bool:
        key = f"t/{i % 4}"
        store.set_sync(key, value(8192, seed=i))
        got = store.get_sync(key)
        return got is not None and len(got) == 8192

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(64)))
    assert sync(_collect(store.list_dir("t"))) == ["0", "1", "2", "3"]


# --------------------------------------------------------------------------
# a reader in another process
# --------------------------------------------------------------------------
def _hold_a_read(pool: str, conn) -> None:
    """Child: read "k" through its own mount, hold it while the parent replaces
    it, report what it still sees, then let go (which frees the old value)."""
    store = DaxStore(pool, root="/z")
    held = store.get_sync("k")
    conn.send(os.getpid())
    conn.recv()  # the parent has replaced "k" and written over the free space
    conn.send(held.to_bytes())
    del held
    sync(store.exists("k"))  # closes the mapping; this mount frees the orphan
    store.close()
    conn.send("released")


def test_a_reader_in_another_process_keeps_the_replaced_value(store, pool):
    import multiprocessing

    old = value(256 << 10, seed=20)
    store.set_sync("k", old)
    baseline = used_blocks(store)
    ctx = multiprocessing.get_context("spawn")  # a fresh process that mounts the pool itself
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_hold_a_read, args=(pool, child_end))
    child.start()
    try:
        assert parent_end.poll(30) and parent_end.recv() != os.getpid()
        store.set_sync("k", value(256 << 10, seed=21))
        assert used_blocks(store) == baseline + (256 << 10) // 4096  # the orphan is kept
        for i in range(4):
            store.set_sync(f"filler/{i}", value(128 << 10, seed=30 + i))
        parent_end.send("check")
        assert parent_end.poll(30) and parent_end.recv() == old.to_bytes()
        assert parent_end.poll(30) and parent_end.recv() == "released"
    finally:
        child.join(30)
    sync(store.delete_dir("filler"))
    assert used_blocks(store) == baseline


# --------------------------------------------------------------------------
# daxfs regression found through the store
# --------------------------------------------------------------------------
def test_two_mounts_letting_go_of_one_orphan_at_once(pool):
    """Two processes (here: two mounts) map a value that is then replaced; both
    let go at once.  Each unmaps and drops its pins, then checks for an orphan
    to free: both see no other pin, the first frees it, and the second used to
    read the freed slot as damage (Mapping.close raised CorruptionError)."""
    with daxfs.mount(pool) as fs_a, daxfs.mount(pool) as fs_b:
        with fs_a.open("/k", "wb") as f:
            f.write(b"x" * 10000)
        baseline = fs_a.statvfs().f_bfree
        map_a, map_b = fs_a.map("/k"), fs_b.map("/k")
        fs_a.unlink("/k")  # an orphan, pinned by both mappings
        check_a = fs_a._mapping_closed

        def b_lets_go_in_between(ino: int) -> None:
            map_b.close()  # B frees the orphan: A's pins are already gone
            check_a(ino)

        fs_a._mapping_closed = b_lets_go_in_between
        map_a.close()
        assert map_a.closed and map_b.closed
        assert fs_a.statvfs().f_bfree == baseline + 3  # the orphan's blocks, freed once
    assert daxfs.check(pool).ok


# --------------------------------------------------------------------------
# nasty trees (issue 12): no recursion, no cycles
# --------------------------------------------------------------------------
def test_a_key_1500_directories_deep_is_listed_and_deleted(shm_dir):
    """Deeper than Python's recursion limit: listing and deleting walk with a stack."""
    pool = os.path.join(shm_dir, "deep-pool")
    daxfs.mkfs(pool, 64 << 20, inodes=4096)
    key = "d/" * 1500 + "k"
    store = DaxStore(pool, root="/z")
    try:
        store.set_sync(key, cpu.Buffer.from_bytes(b"v"))
        store.set_sync("top", cpu.Buffer.from_bytes(b"t"))
        assert sync(_collect(store.list())) == [key, "top"]
        assert sync(_collect(store.list_prefix("d/d/d"))) == [key]
        sync(store.delete_dir("d"))
        assert sync(_collect(store.list())) == ["top"]
        store.set_sync(key, cpu.Buffer.from_bytes(b"v"))
        sync(store.clear())
        assert sync(_collect(store.list())) == []
    finally:
        store.close()


def test_a_directory_inside_its_own_subtree_is_corruption_not_a_loop(shm_dir):
    from test_fsspec_hostile import hang_limit, retarget_entry

    pool = _pool_file(shm_dir)
    with daxfs.mount(pool) as fs:
        fs.makedirs("/z/a/b/c")
        with fs.open("/z/a/b/k", "wb") as f:
            f.write(b"v")
    retarget_entry(pool, "/z/a/b", "c", "/z/a")  # /z/a/b/c is /z/a again
    store = DaxStore(pool, root="/z")
    try:
        with hang_limit():
            with pytest.raises(daxfs.CorruptionError):
                sync(_collect(store.list()))
            with pytest.raises(daxfs.CorruptionError):
                sync(store.clear())
    finally:
        store.close()
