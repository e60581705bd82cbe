"""daxfs.mounts: the process's one registry of mounted pools, shared by
fsspec's DaxFileSystem and zarr's DaxStore.  Sharing, counting and idle
eviction, a pool file replaced at the same path, threads, a forked child
beside its parent, and clean unmounts at the exit of the interpreter and of
multiprocessing's workers (checked by daxfs.check: no journal record left
to replay)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import daxfs
from conftest import new_pool
from daxfs.fsspec import DaxFileSystem
from daxfs.mounts import MountRegistry

zarr = pytest.importorskip("zarr")

from zarr.core.buffer import cpu  # noqa: E402

from daxfs.zarr import DaxStore  # noqa: E402

POOL_SIZE = 16 << 20


@pytest.fixture
def pools(shm_dir):
    """Factory: a fresh small pool on tmpfs."""
    return lambda: new_pool(shm_dir, POOL_SIZE)


@pytest.fixture
def registry():
    """A private registry (one idle mount kept), closed afterwards."""
    r = MountRegistry(idle_limit=1)
    yield r
    r.close_all()


def journal_was_empty(pool: str) -> bool:
    """Did the last user unmount cleanly?  check() maps the pool copy-on-write
    and notes the records it had to replay."""
    report = daxfs.check(pool)
    assert report.ok, report.errors
    return not any("replayed" in note for note in report.notes)


# ---------------------------------------------------------------------------
# one mount for fsspec and zarr
# ---------------------------------------------------------------------------
def test_an_fsspec_instance_and_a_zarr_store_share_one_mount(pools):
    pool = pools()
    dfs = DaxFileSystem(pool=pool)
    store = DaxStore(pool, root="/z")
    try:
        assert store.fs is dfs.dax
        store.set_sync("k", cpu.Buffer.from_bytes(b"from zarr"))
        assert dfs.cat_file("/z/k") == b"from zarr"
        dfs.pipe_file("/z/f", b"from fsspec")
        assert store.get_sync("f").to_bytes() == b"from fsspec"

        shared = dfs.dax
        store.close()  # the fsspec instance still holds the mount
        assert not shared.closed
        dfs.unmount()  # closes it for every user; both mount again
        assert shared.closed
        again = DaxStore(pool, root="/z")
        assert again.fs is dfs.dax and again.fs is not shared
        assert again.get_sync("k").to_bytes() == b"from zarr"
        again.close()
    finally:
        dfs.unmount()
    assert journal_was_empty(pool)


def test_every_name_of_a_pool_file_finds_its_mount(registry, pools, shm_dir):
    pool = pools()
    symlink, hardlink = os.path.join(shm_dir, "sym"), os.path.join(shm_dir, "hard")
    os.symlink(pool, symlink)
    os.link(pool, hardlink)
    leases = [registry.acquire(p) for p in (pool, symlink, hardlink, shm_dir + "/./sym")]
    assert len({id(lease.fs) for lease in leases}) == 1
    readonly = registry.acquire(pool, readonly=True)  # another mode: a mount of its own
    assert readonly.fs is not leases[0].fs and readonly.fs.readonly
    for lease in [*leases, readonly]:
        lease.release()


# ---------------------------------------------------------------------------
# counting, idle mounts, eviction
# ---------------------------------------------------------------------------
def test_mounts_are_counted_and_the_least_recently_idle_are_closed(registry, pools):
    p1, p2, p3 = pools(), pools(), pools()
    a, b = registry.acquire(p1), registry.acquire(p1)
    fs1 = a.fs
    assert b.fs is fs1
    a.release()
    a.release()  # twice is harmless: b still holds the mount
    fs2 = registry.acquire(p2)
    fs2_mount = fs2.fs
    fs2.release()  # idle: p2
    assert not fs1.closed and not fs2_mount.closed
    b.release()  # idle: p2, p1 -> the older one goes (one idle kept)
    assert fs2_mount.closed and not fs1.closed
    again = registry.acquire(p1)
    assert again.fs is fs1  # an idle mount is taken back, not mounted again
    registry.acquire(p3).release()  # idle: p3 (p1 is held)
    assert not fs1.closed
    again.release()  # idle: p3, p1 -> p3 closed
    assert not fs1.closed
    assert journal_was_empty(p2) and journal_was_empty(p3)  # evicted: unmounted cleanly


def test_a_dropped_lease_is_given_back_at_the_next_registry_call(pools):
    registry = MountRegistry(idle_limit=0)
    lease = registry.acquire(pools())
    fs = lease.fs
    del lease
    gc.collect()
    assert not fs.closed  # the finalizer only queued it
    registry.collect()
    assert fs.closed  # given back, idle, past the limit of none


def test_an_idle_mount_with_open_files_stays_until_they_are_closed(pools):
    registry = MountRegistry(idle_limit=0)
    pool = pools()
    lease = registry.acquire(pool)
    fs = lease.fs
    f = fs.open("/still-open", "wb")
    lease.release()
    assert not fs.closed
    f.write(b"written after the last lease went")
    f.close()
    registry.acquire(pools()).release()  # the next give-back evicts it
    assert fs.closed
    with daxfs.mount(pool) as again, again.open("/still-open", "rb") as back:
        assert back.read() == b"written after the last lease went"


def test_a_mount_closed_by_its_user_is_mounted_again(pools):
    registry = MountRegistry(idle_limit=0)
    pool = pools()
    old = registry.acquire(pool)
    old.fs.close()
    assert not old.current()
    new = registry.acquire(pool)
    assert new.fs is not old.fs and not new.fs.closed
    old.release()  # counted against the closed mount, not the new one
    assert not new.fs.closed
    new.release()
    assert new.fs.closed


def test_threads_share_one_mount_and_the_count_comes_back_to_zero(pools):
    registry = MountRegistry(idle_limit=0)
    pool = pools()
    keeper = registry.acquire(pool)
    seen, start = [], threading.Barrier(8)

    def churn() -> None:
        start.wait()
        for _ in range(100):
            lease = registry.acquire(pool)
            seen.append(lease.fs)
            lease.release()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 800 and all(fs is keeper.fs for fs in seen)
    keeper.release()  # the last holder: idle past the limit, so closed
    assert keeper.fs.closed
    assert journal_was_empty(pool)


# ---------------------------------------------------------------------------
# a pool file replaced at the same path
# ---------------------------------------------------------------------------
def test_a_replaced_pool_file_gets_a_mount_of_its_own(registry, pools):
    pool = pools()
    old = registry.acquire(pool)
    old.fs.makedirs("/in-the-old-pool")
    os.unlink(pool)
    daxfs.mkfs(pool, POOL_SIZE)
    assert not old.current()
    new = registry.acquire(pool)
    assert new.current() and new.fs is not old.fs
    assert new.fs.listdir("/") == []
    assert old.fs.listdir("/") == ["in-the-old-pool"]  # still usable by its holder
    new.release()
    old.release()
    registry.unmount(pool)  # both were mounted through this path
    assert old.fs.closed and new.fs.closed
    assert journal_was_empty(pool)


# ---------------------------------------------------------------------------
# fork: the child uses the inherited mount; the parent keeps what it had
# ---------------------------------------------------------------------------
def _child_uses_the_inherited_mount(pool: str) -> None:
    store = DaxStore(pool, root="/z")
    assert store.fs is DaxFileSystem(pool=pool).dax  # still one mount, in the child too
    store.set_sync("from-child", cpu.Buffer.from_bytes(str(os.getpid()).encode()))
    assert store.get_sync("from-parent").to_bytes() == b"parent"
    # Returns with the store, a read and the mount left open: the worker's
    # exit closes the mounts (multiprocessing's finalizers).


def test_a_forked_child_shares_the_mount_and_leaves_the_parent_alone(pools):
    pool = pools()
    dfs = DaxFileSystem(pool=pool)
    store = DaxStore(pool, root="/z")
    try:
        store.set_sync("from-parent", cpu.Buffer.from_bytes(b"parent"))
        dax = dfs.dax
        # What the parent holds across the fork: an unlinked file still open,
        # another still mapped, and a file open for writing.
        for name in ("/open-orphan", "/mapped-orphan"):
            dfs.pipe_file(name, os.urandom(256 << 10))
        held = dax.open("/open-orphan", "rb")
        mapping = dax.map("/mapped-orphan")
        dax.unlink("/open-orphan")
        dax.unlink("/mapped-orphan")
        writer = dax.open("/log", "wb")
        writer.write(b"before the fork;")
        free = dax.statvfs().f_bfree

        child = multiprocessing.get_context("fork").Process(
            target=_child_uses_the_inherited_mount, args=(pool,)
        )
        child.start()
        child.join(30)
        assert child.exitcode == 0

        assert not dax.closed and dfs.dax is dax
        assert store.get_sync("from-child").to_bytes() == str(child.pid).encode()
        childs_blocks = dax.stat("/z/from-child").st_blocks * 512 // 4096
        assert dax.statvfs().f_bfree == free - childs_blocks  # the child freed neither orphan
        assert len(held.read()) == 256 << 10 and len(bytes(mapping.buffer)) == 256 << 10
        writer.write(b" after it")
        writer.close()
        assert dfs.cat_file("/log") == b"before the fork; after it"
        free = dax.statvfs().f_bfree
        held.close()
        mapping.close()
        assert dax.statvfs().f_bfree == free + 2 * (256 << 10) // 4096  # freed by their user
    finally:
        store.close()
        dfs.unmount()
    assert journal_was_empty(pool)


# ---------------------------------------------------------------------------
# exit: every mount closed cleanly
# ---------------------------------------------------------------------------
def _worker_writes_through_both(pool: str) -> None:
    DaxFileSystem(pool=pool).pipe_file("/fsspec", b"f")
    store = DaxStore(pool, root="/z")
    store.set_sync("k", cpu.Buffer.from_bytes(b"z"))
    store.get_sync("k")  # a read nobody holds any more, not yet closed


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_multiprocessing_worker_unmounts_cleanly_at_exit(pools, method):
    pool = pools()
    worker = multiprocessing.get_context(method).Process(
        target=_worker_writes_through_both, args=(pool,)
    )
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert journal_was_empty(pool)
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == ["fsspec", "z"] and fs.listdir("/z") == ["k"]


def test_interpreter_exit_unmounts_cleanly_and_frees_dropped_reads(pools):
    pool = pools()
    script = """
        import sys
        from zarr.core.buffer import cpu
        from daxfs.fsspec import DaxFileSystem
        from daxfs.zarr import DaxStore

        pool = sys.argv[1]
        dfs = DaxFileSystem(pool=pool)
        store = DaxStore(pool, root="/z")
        store.set_sync("k", cpu.Buffer.from_bytes(b"old" * 5000))
        reader = store.get_sync("k")
        store.set_sync("k", cpu.Buffer.from_bytes(b"new"))  # the old value: an orphan
        dfs.pipe_file("/f", b"fsspec")
        print(dfs.dax.statvfs().f_bfree)
        del reader  # let go of; closed by the next store call, or at exit
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), pool],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    free_with_orphan = int(done.stdout)
    assert journal_was_empty(pool)
    with daxfs.mount(pool, readonly=True) as fs:  # read-only: reclaims nothing itself
        assert fs.statvfs().f_bfree > free_with_orphan  # the orphan was freed at exit
        with fs.open("/z/k", "rb") as f:
            assert f.read() == b"new"
