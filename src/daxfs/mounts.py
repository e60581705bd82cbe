"""mounts: one mount of each pool per process, shared by whoever mounts by path.

    lease = MOUNTS.acquire("/mnt/pmem/pool")     # mounts, or shares a mount
    lease.fs.listdir("/")
    lease.release()                              # or just drop the lease

DaxFileSystem (fsspec) and DaxStore (zarr) mount pools given by path.  Two
mounts of one pool in one process work, but each rebuilds its caches after
every commit of the other, so both take their mounts from this registry: an
fsspec instance and a zarr store on one pool share one FileSystem.

*Keyed by the pool file, not its name.*  A mount is found by the pool
file's (st_dev, st_ino) plus readonly and durability, so every spelling of
a path (symlinks, "..", hard links) shares it, and a pool file replaced at
the same path gets a mount of its own.  An identity is safe to reuse as a
key because every mount in the registry holds its file open, so no other
file can get its inode number meanwhile.  ``Lease.current()`` tells a
holder whether its path still names the mounted file.

*Counted, with a few idle mounts kept.*  Each acquire returns a Lease; a
mount nobody holds stays open (up to ``idle_limit`` of them, least recently
used closed first), so that a dask worker unpickling a store per task does
not mount per task.  An idle mount with files still open through it is not
closed until they are.  A mount that someone closed directly (or
``unmount()``) is mounted again by the next acquire.

*Dropped leases come back later.*  A lease dropped without release() (its
holder was garbage collected) only queues its mount: a finalizer can run in
the middle of anything on this thread, even inside this registry's lock or
a FileSystem call, so the count is settled by the next registry call.

*Threads, fork, exit.*  One lock guards the table (re-made in a forked
child, where another thread of the parent may have held it).  A forked
child keeps the inherited mounts and uses them: the FileSystem re-arms
itself for the child on its first call, and closing one the child never
used only marks it closed (fs.py), so the child's exit never flushes or
unpins the parent's state.  Every mount still open is closed cleanly (the
journal checkpointed, so empty) at interpreter exit and at the exit of
multiprocessing's workers, which leave through os._exit and run only
multiprocessing's finalizers.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import multiprocessing.util
import os
import threading
from collections.abc import Callable

from .fs import FileSystem
from .pool import mount

IDLE_MOUNTS = 2  # mounts kept open while nobody holds them

_Key = tuple[int, int, bool, str | None]  # st_dev, st_ino, readonly, durability


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _Entry:
    """One mount in the registry and how many leases hold it."""

    __slots__ = ("key", "path", "fs", "users")

    def __init__(self, key: _Key, path: str, fs: FileSystem):
        self.key, self.path, self.fs, self.users = key, path, fs, 0


class Lease:
    """One holder's share of a mount.  ``fs`` is the mounted pool; release()
    gives it back (so does dropping the lease, settled at the registry's next
    call).  Releasing twice is harmless."""

    __slots__ = ("fs", "_entry", "_registry")

    def __init__(self, registry: MountRegistry, entry: _Entry):
        self.fs: FileSystem = entry.fs
        self._entry: _Entry | None = entry
        self._registry = registry

    def current(self) -> bool:
        """Is the mount still open and still of the file at its path?  (One
        stat; the file may have been replaced, or the mount closed by anyone.)"""
        entry = self._entry
        if entry is None or self.fs.closed:
            return False
        try:
            return _identity(os.stat(entry.path)) == entry.key[:2]
        except OSError:
            return False

    def release(self) -> None:
        self._registry._release(self)

    def __del__(self) -> None:
        # Only queue: see the module docstring.  deque.append cannot fail here.
        entry, self._entry = self._entry, None
        if entry is not None:
            self._registry._dropped.append(entry)

    def __repr__(self) -> str:
        return f"<daxfs.mounts.Lease {self.fs!r}{'' if self._entry else ' released'}>"


class MountRegistry:
    """The process's shared mounts (see the module docstring); MOUNTS is the one."""

    def __init__(self, idle_limit: int = IDLE_MOUNTS) -> None:
        self.idle_limit = idle_limit
        self._lock = threading.Lock()
        self._entries: dict[_Key, _Entry] = {}
        self._idle: collections.OrderedDict[_Key, None] = collections.OrderedDict()
        self._dropped: collections.deque[_Entry] = collections.deque()
        self._before_close_all: list[Callable[[], None]] = []

    # -- holding mounts ------------------------------------------------------
    def acquire(self, pool, *, readonly: bool = False, durability: str | None = None) -> Lease:
        """A lease on the mount of the pool file at ``pool`` in this mode,
        mounting it if no open mount of that file and mode is known."""
        self.collect()  # first, so that a mount just dropped is found idle
        path = os.path.realpath(os.fspath(pool))
        for _attempt in range(3):
            key: _Key = (*_identity(os.stat(path)), readonly, durability)
            stray: list[FileSystem] = []
            with self._lock:
                entry = self._entries.get(key)
                if entry is None or entry.fs.closed:
                    fs = mount(path, readonly=readonly, durability=durability)
                    if _identity(os.fstat(fs.region.fd)) == key[:2]:
                        entry = self._entries[key] = _Entry(key, path, fs)
                    else:  # the file was replaced while we mounted it: look again
                        entry, stray = None, [fs]
                if entry is not None:
                    self._idle.pop(key, None)
                    entry.users += 1
                    return Lease(self, entry)
            _close_quietly(stray)  # outside the lock: unmounting persists
        raise OSError(errno.EAGAIN, "the pool file keeps being replaced", path)

    def _release(self, lease: Lease) -> None:
        with self._lock:
            entry, lease._entry = lease._entry, None
            if entry is not None:
                self._give_back(entry)
            evicted = self._evict()
        _close_quietly(evicted)

    def collect(self) -> None:
        """Settle the leases dropped without release() (cheap when there are none)."""
        if not self._dropped:
            return
        with self._lock:
            while self._dropped:
                try:
                    entry = self._dropped.popleft()
                except IndexError:  # another thread took the last one
                    break
                self._give_back(entry)
            evicted = self._evict()
        _close_quietly(evicted)

    def _give_back(self, entry: _Entry) -> None:
        if self._entries.get(entry.key) is not entry:
            return  # unmounted, or replaced after someone closed it: nothing to count
        entry.users -= 1
        if entry.users == 0:
            self._idle[entry.key] = None

    def _evict(self) -> list[FileSystem]:
        """Take out the oldest idle mounts past the limit (closed by the caller,
        outside the lock); one with open files waits until they are closed."""
        evicted = []
        excess = len(self._idle) - self.idle_limit
        for key in list(self._idle):
            if excess <= 0:
                break
            fs = self._entries[key].fs
            if fs._has_open_files():
                continue
            del self._idle[key], self._entries[key]
            evicted.append(fs)
            excess -= 1
        return evicted

    # -- unmounting ------------------------------------------------------------
    def unmount(self, pool) -> None:
        """Close every mount of the pool at ``pool`` (mounted through that path,
        or of the file now there), held or not: files opened through them are
        closed; holders mount again on their next acquire."""
        self.collect()
        path = os.path.realpath(os.fspath(pool))
        try:
            now = _identity(os.stat(path))
        except OSError:
            now = None
        with self._lock:
            gone = [e for e in self._entries.values() if e.path == path or e.key[:2] == now]
            self._forget(gone)
        for entry in gone:
            entry.fs.close()

    def close_all(self) -> None:
        """Close every mount (at exit: a clean unmount leaves an empty journal).
        Hooks added with before_close_all run first."""
        for hook in self._before_close_all:
            with contextlib.suppress(Exception):
                hook()
        with self._lock:
            self._dropped.clear()
            gone = list(self._entries.values())
            self._forget(gone)
        _close_quietly([e.fs for e in gone])

    def before_close_all(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before close_all unmounts (zarr closes its idle reads)."""
        self._before_close_all.append(hook)

    def _forget(self, entries: list[_Entry]) -> None:
        for entry in entries:
            del self._entries[entry.key]
            self._idle.pop(entry.key, None)

    # -- process lifetime --------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        # Another thread of the parent may have held the lock at the fork; the
        # child's copy would never be released.
        self._lock = threading.Lock()

    def _close_at_worker_exit(self) -> None:
        """multiprocessing's workers leave through os._exit, skipping atexit, but
        run the finalizers registered here.  Their start clears the finalizers
        inherited (or registered while the worker's target was unpickled), so
        this runs again in each worker (register_after_fork)."""
        multiprocessing.util.Finalize(None, self.close_all, exitpriority=10)


def _close_quietly(mounts: list[FileSystem]) -> None:
    for fs in mounts:
        with contextlib.suppress(OSError, ValueError):
            fs.close()


MOUNTS = MountRegistry()
atexit.register(MOUNTS.close_all)
MOUNTS._close_at_worker_exit()
multiprocessing.util.register_after_fork(MOUNTS, MountRegistry._close_at_worker_exit)
os.register_at_fork(after_in_child=MOUNTS._after_fork_in_child)
