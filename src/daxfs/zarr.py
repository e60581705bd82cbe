"""daxfs.zarr: a zarr v3 store whose reads are views of the pool's memory.

    from daxfs.zarr import DaxStore
    store = DaxStore("/mnt/pmem0/pool", root="/arrays/t2m")   # or DaxStore(fs, ...)
    z = zarr.create_array(store, shape=(4096, 4096), chunks=(512, 512), dtype="f4")

Design.

* Keys are files.  Key ``a/c/0/1`` is the file ``<root>/a/c/0/1`` of the pool;
  listing walks the directories.  A store made from a path mounts the pool
  itself; one made from a mounted FileSystem borrows it (and never closes it).

* Reads are zero-copy.  get() maps the whole file read-only (fs.map, which
  pins its extents under the pool lock, so it sees one consistent version of
  the file) and returns a Buffer over that mapping; a byte range is a slice of
  the same view.  For an uncompressed array zarr's decode is a view as well,
  so the only copy a read makes is zarr assembling the selection asked for.

* Lifetime of a read.  The array handed to zarr has a _Lease as its base: the
  lease holds the Mapping and a buffer export of it (so the Mapping cannot be
  unmapped under a view), and every view numpy, zarr or a codec derives keeps
  the lease alive.  When the last view is gone the lease queues its Mapping,
  and the next call of any DaxStore in the process closes it.  Closing is
  deferred because it is a FileSystem call (it frees the file if it was
  replaced meanwhile), and a garbage collection can run a __del__ in the
  middle of another FileSystem call on the same thread, whose lock is
  re-entrant.  A read held by the caller costs a descriptor of the pool (the
  mapping's pins) and a few VMAs until it is dropped.

* Writes replace atomically.  set() writes a new file under a temporary name
  in the key's directory and renames it over the key: one journaled namespace
  change, so a crash leaves the old value or the new one, and a reader never
  sees a half-written chunk.  A reader that mapped the old value keeps valid
  memory: its mapping pins the old inode, which rename leaves as an orphan,
  freed when the mapping closes.  set_if_not_exists links the temporary file
  to the key instead (link fails with EEXIST), so it has no check-then-write
  race.  Temporary names (``.daxfs-tmp-<hex>``) are never listed.

* Listing and deleting walk the directories with a stack, not recursion (a
  tree has no depth limit), never enter a symlink, and stop with
  daxfs.CorruptionError at a directory met twice (a damaged or crafted
  pool), instead of cycling or listing 2^n keys.

* One mount per pool per process.  Stores made from a path hold a lease on
  the process's mount of the pool file (daxfs.mounts, shared with fsspec's
  DaxFileSystem): two mounts of one pool in a process work, but each would
  rebuild its caches after every commit of the other.  A dropped store's
  lease is given back at the next store call; a mount no store uses stays
  open (a few of them), so that a dask worker unpickling a store per task
  does not mount per task.  Mounts still open at process exit (also of a
  multiprocessing worker) are closed cleanly then, after the reads nobody
  holds.

* Pickling is by pool path, root and read_only: the copy mounts the pool in
  whatever process unpickles it, which is how dask's process workers read
  the same pool, each zero-copy.

* Every daxfs call is short and serialized by the FileSystem's lock, so the
  async methods run inline on the event loop (a thread hop would cost more
  than the call); get_sync, set_sync and delete_sync (zarr's SupportsSyncStore)
  are the same code without the coroutine.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import stat
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from .fs import FileSystem
from .listing import DirEntry, MetOnce
from .mapping import Mapping
from .mounts import MOUNTS, Lease
from .path import oserror

__all__ = ["DaxStore"]

_TMP_PREFIX = ".daxfs-tmp-"
_TMP_NAME = re.compile(r"\.daxfs-tmp-[0-9a-f]{32}\Z")
_BYTE_REQUESTS = (RangeByteRequest, OffsetByteRequest, SuffixByteRequest)
_NOT_A_FILE = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _is_temp(name: str) -> bool:
    return _TMP_NAME.match(name) is not None


# --------------------------------------------------------------------------
# cleanup that garbage collection starts and the next store call finishes
# --------------------------------------------------------------------------
# A __del__ runs wherever a collection happens, perhaps in the middle of a
# FileSystem call on the same thread, so all it does is queue (deque.append
# and popleft are atomic: any thread may feed and drain this).  The mounts of
# dead stores come back the same way, through their leases (daxfs.mounts).
_released: collections.deque[Mapping] = collections.deque()  # reads nobody holds
# Directories this process made or wrote a value into lately, per mount (at
# most KNOWN_DIRS of them), writable stores' roots among them.  A value for
# a new key goes straight in; one in a directory not known is preceded by
# a mkdir of it (zarr makes a directory per chunk row, so that is usually
# the right guess) rather than tried first and found to have nowhere to
# go.  A known root is not made again when a dask worker unpickles a store
# per task (that cost two calls under the pool lock per chunk).  A known
# directory removed since costs one failed try, and is made again with its
# parents; reads of it find nothing.
KNOWN_DIRS = 1024
_known_dirs: weakref.WeakKeyDictionary[FileSystem, collections.OrderedDict[str, None]] = (
    weakref.WeakKeyDictionary()
)


class _Lease:
    """The base object of every array get() returns.  numpy builds the array
    from __array_interface__ and keeps this object as its base, so the lease
    lives exactly as long as some view of the memory does."""

    __slots__ = ("mapping", "_export", "__array_interface__")

    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        # A buffer export: Mapping.close() raises BufferError while it lives.
        self._export = mapping.ndarray()
        self.__array_interface__ = self._export.__array_interface__

    def __del__(self, _queue: collections.deque = _released) -> None:
        self._export = None
        _queue.append(self.mapping)


def _settle() -> None:
    """Finish the queued cleanup: close the mappings of reads nobody holds and
    give back the mounts of stores that are gone."""
    _close_released_reads()
    MOUNTS.collect()


def _close_released_reads() -> None:
    """Close the mappings of reads nobody holds (pins released; a value
    replaced or deleted meanwhile is freed now)."""
    while _released:
        try:
            mapping = _released.popleft()
        except IndexError:  # another thread took the last one
            break
        try:
            mapping.close()
        except OSError as e:  # the memory is unmapped; only freeing an orphan failed
            warnings.warn(
                f"daxfs.zarr: freeing {mapping.path} failed ({e}); the next mount reclaims it",
                RuntimeWarning,
                stacklevel=2,
            )


# At exit, before the shared mounts are closed: a replaced value whose last
# reader is gone is freed then, not left for the next mount to reclaim.
MOUNTS.before_close_all(_close_released_reads)


def _leased_view(mapping: Mapping):
    import numpy as np

    return np.asarray(_Lease(mapping))


def _byte_slice(size: int, byte_range: ByteRequest | None) -> tuple[int, int]:
    """[start, stop) of a byte request over a value of ``size`` bytes (a range
    past the end is cut at the end, as zarr's stores do)."""
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        return byte_range.start, byte_range.end
    if isinstance(byte_range, OffsetByteRequest):
        return byte_range.offset, size
    return max(0, size - byte_range.suffix), size


# --------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------
def _normalize_root(root: str) -> str:
    parts = [p for p in str(root).split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"root {root!r}: '.' and '..' are not allowed")
    return "/" + "/".join(parts)


class DaxStore(Store):
    """A zarr v3 store in a daxfs pool: keys are files under ``root``; get()
    returns views of the mapped files (zero-copy); set() replaces atomically.

    ``pool`` is the pool file's path (the store mounts it, shared with every
    other store of this process on that pool) or a mounted daxfs.FileSystem
    (borrowed: the store never unmounts it).  Pickles by path and root."""

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(
        self, pool: str | os.PathLike[str] | FileSystem, root: str = "/", *, read_only: bool = False
    ) -> None:
        super().__init__(read_only=read_only)
        if isinstance(pool, FileSystem):
            self._borrowed: FileSystem | None = pool
            self.pool = os.path.realpath(pool.region.path)
        else:
            self._borrowed = None
            self.pool = os.path.realpath(os.fspath(pool))
        self.root = _normalize_root(root)
        self._fs = self._borrowed
        self._lease: Lease | None = None  # on the shared mount, for a path-made store

    # -- the file system ---------------------------------------------------
    @property
    def fs(self) -> FileSystem:
        """The mounted pool (mounted on first use for a store made from a path)."""
        fs = self._fs
        if self._borrowed is None and (fs is None or not self._lease.current()):  # type: ignore[union-attr]
            # Not mounted yet, unmounted, or the pool file replaced at its
            # path (one stat per call, as the fsspec file system does).
            fs = self._fs = self._mount()
        return fs

    def _mount(self) -> FileSystem:
        if self._lease is not None:  # its mount was closed or its pool replaced
            self._lease.release()
        self._lease = MOUNTS.acquire(self.pool, readonly=not os.access(self.pool, os.W_OK))
        return self._lease.fs

    def _begin(self) -> FileSystem:
        """Every operation starts here: finish queued cleanup, open the store."""
        _settle()
        if not self._is_open:
            self._prepare_root()
            self._is_open = True
        return self.fs

    def _prepare_root(self) -> None:
        fs = self.fs
        known = _known_dirs_of(fs)
        if not self.read_only and self.root in known:
            return
        if not self.read_only:
            fs.makedirs(self.root, exist_ok=True)
        if not fs.isdir(self.root):
            raise FileNotFoundError(errno.ENOENT, f"{self.root} does not exist in {self.pool}")
        if not self.read_only:
            _remember(known, self.root)

    def _path(self, key: str) -> str:
        """The pool path of a key (or of a prefix, without its trailing '/')."""
        key = key.strip("/")
        if not key:
            return self.root
        if any(p in (".", "..") for p in key.split("/")):
            raise ValueError(f"key {key!r}: '.' and '..' are not allowed")
        return self.root.rstrip("/") + "/" + key

    def _key(self, path: str) -> str:
        return path[len(self.root.rstrip("/")) + 1 :]

    # -- store identity, lifetime, pickling ----------------------------------
    async def _open(self) -> None:
        self._prepare_root()
        await super()._open()

    def close(self) -> None:
        """Close the store: finished reads are closed, a mount made for this
        store is given back.  Buffers from get() stay valid."""
        super().close()
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        self._fs = self._borrowed
        _settle()

    def with_read_only(self, read_only: bool = False) -> DaxStore:
        return type(self)(self._borrowed or self.pool, self.root, read_only=read_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DaxStore) and (self.pool, self.root, self.read_only) == (
            other.pool,
            other.root,
            other.read_only,
        )

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        return {"pool": self.pool, "root": self.root, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["pool"], state["root"], read_only=state["read_only"])  # type: ignore[misc]

    def __str__(self) -> str:
        return f"daxfs://{self.pool}:{self.root}"

    def __repr__(self) -> str:
        return f"DaxStore('{self}')"

    # -- reads -----------------------------------------------------------------
    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """The value at ``key`` (or a byte range of it) as a view of the mapped
        file, or None if there is no such key."""
        if byte_range is not None and not isinstance(byte_range, _BYTE_REQUESTS):
            raise TypeError(f"Unexpected byte_range, got {byte_range}.")
        prototype = prototype or default_buffer_prototype()
        fs = self._begin()
        try:
            mapping = fs.map(self._path(key), "r")
        except _NOT_A_FILE:
            return None
        if mapping.length == 0:  # nothing to view: no need to keep a mapping
            mapping.close()
            return prototype.buffer.create_zero_length()
        start, stop = _byte_slice(mapping.length, byte_range)
        return prototype.buffer.from_array_like(_leased_view(mapping)[start:stop])

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        return self.get_sync(key, prototype=prototype, byte_range=byte_range)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return [self.get_sync(k, prototype=prototype, byte_range=r) for k, r in key_ranges]

    async def exists(self, key: str) -> bool:
        return self._begin().isfile(self._path(key))

    async def getsize(self, key: str) -> int:
        fs = self._begin()
        try:
            st = fs.stat(self._path(key))
        except _NOT_A_FILE:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, f"no key {key!r} in {self}")
        return st.st_size

    # -- writes ----------------------------------------------------------------
    def set_sync(self, key: str, value: Buffer) -> None:
        self._write(key, value, exclusive=False)

    async def set(self, key: str, value: Buffer) -> None:
        self._write(key, value, exclusive=False)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        try:
            self._write(key, value, exclusive=True)
        except FileExistsError:
            pass

    def _write(self, key: str, value: Buffer, *, exclusive: bool) -> None:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(
                f"DaxStore.set(): `value` must be a Buffer instance. "
                f"Got an instance of {type(value)} instead."
            )
        fs = self._begin()
        path = self._path(key)
        if path == self.root:
            raise ValueError("the empty key names the store's root directory, not a value")
        data = value.as_buffer_like()
        if self._write_whole(fs, path, data, exclusive):
            return
        tmp = self._write_temp(fs, path, data)
        if exclusive:
            try:
                fs.link(tmp, path)  # EEXIST if another writer won: no race
            finally:
                _unlink_quietly(fs, tmp)
            return
        try:
            fs.rename(tmp, path)  # the atomic replace
        except BaseException:
            _unlink_quietly(fs, tmp)
            raise

    def _write_whole(self, fs: FileSystem, path: str, data, exclusive: bool) -> bool:
        """A value of at most one change's size is written in one, so that
        readers see no key, or the old value, or all of the new one: a new
        key's name and bytes together (_create_with), or a new file put in
        place of an old key's, as a rename over it would (_replace_with: a
        reader holding the old value, a view of its mapping, keeps it).
        False when the value is too big for one change (the caller writes
        a temporary file and renames it).  FileExistsError if
        ``exclusive`` and the key exists."""
        if memoryview(data).nbytes > fs.WRITE_PIECE:
            return False
        put = fs._create_with if exclusive else fs._replace_with
        known = _known_dirs_of(fs)
        parent = path.rpartition("/")[0] or "/"
        try:
            if parent not in known:
                _make_parent(fs, parent)
            try:
                put(path, data)
            except FileNotFoundError:  # the directory is gone since
                _make_parent(fs, parent)
                put(path, data)
        except FileExistsError:  # (exclusive: the key is there, so its directory is)
            _remember(known, parent)
            raise
        _remember(known, parent)
        return True

    def _write_temp(self, fs: FileSystem, path: str, data) -> str:
        """Write a new file beside ``path`` and return its name."""
        parent = path.rpartition("/")[0] or "/"
        tmp = f"{parent.rstrip('/')}/{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            f = fs.open(tmp, "xb")
        except FileNotFoundError:  # first value in this directory
            fs.makedirs(parent, exist_ok=True)
            f = fs.open(tmp, "xb")
        try:
            with f:
                f.write(data)
        except BaseException:
            _unlink_quietly(fs, tmp)
            raise
        return tmp

    def delete_sync(self, key: str) -> None:
        self._check_writable()
        fs = self._begin()
        path = self._path(key)
        try:
            fs.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except IsADirectoryError:  # as LocalStore: a directory goes with its keys
            self._remove_tree(fs, path)

    async def delete(self, key: str) -> None:
        self.delete_sync(key)

    async def delete_dir(self, prefix: str) -> None:
        self._check_writable()
        fs = self._begin()
        path = self._path(prefix)
        if fs.isdir(path):
            self._remove_tree(fs, path)

    async def clear(self) -> None:
        self._check_writable()
        self._remove_tree(self._begin(), self.root)

    def _remove_tree(self, fs: FileSystem, path: str) -> None:
        """Remove a directory and everything below it; the root directory stays.
        Depth first with a stack: a directory is emptied when first taken and
        removed when taken again, after what it held."""
        met = MetOnce()
        stack = [(path, False)]
        while stack:
            where, emptied = stack.pop()
            if emptied:
                if where != self.root:
                    _rmdir_quietly(fs, where)
                continue
            stack.append((where, True))
            files = []
            for entry in _entries(fs, where):
                if entry.is_dir(follow_symlinks=False):
                    met.check(entry)
                    stack.append((entry.path, False))
                else:
                    files.append(entry.name)
            _unlink_names_quietly(fs, where, files)

    # -- listing -----------------------------------------------------------------
    async def list(self) -> AsyncIterator[str]:
        for key in self._keys_below(self._begin(), self.root, ""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # A prefix is a string prefix of keys ("c/1" matches "c/1/0" and "c/10"),
        # so start in the deepest directory it names whole.
        fs = self._begin()
        start = self._path(prefix.rpartition("/")[0])
        for key in self._keys_below(fs, start, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        fs = self._begin()
        try:
            names = fs.listdir(self._path(prefix))
        except _NOT_A_FILE:
            return
        for name in names:
            if not _is_temp(name):
                yield name

    def _keys_below(self, fs: FileSystem, path: str, prefix: str) -> Iterator[str]:
        """Keys of the files below directory ``path`` that start with ``prefix``;
        only directories that can hold such keys are entered.  Depth first in
        directory order, with a stack of listings instead of recursion."""
        met = MetOnce()
        stack = [_entries(fs, path)]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            if _is_temp(entry.name):
                continue
            key = self._key(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    met.check(entry)
                    stack.append(_entries(fs, entry.path))
            elif key.startswith(prefix):
                yield key


def _entries(fs: FileSystem, path: str) -> Iterator[DirEntry]:
    """The entries of a directory; none if it is gone or not a directory."""
    try:
        return iter(list(fs.scandir(path)))
    except _NOT_A_FILE:
        return iter(())


def _known_dirs_of(fs: FileSystem) -> collections.OrderedDict[str, None]:
    return _known_dirs.setdefault(fs, collections.OrderedDict())


def _remember(known: collections.OrderedDict[str, None], directory: str) -> None:
    known[directory] = None
    known.move_to_end(directory)
    if len(known) > KNOWN_DIRS:
        known.popitem(last=False)


def _make_parent(fs: FileSystem, parent: str) -> None:
    """Make the directory ``parent`` (a value's): usually one mkdir (its own
    parent is there: zarr makes a directory per chunk row), else every
    missing one; one that is there already is no error."""
    if parent == "/":
        return
    try:
        fs.mkdir(parent)
    except FileExistsError:
        pass  # another writer made it (a file there fails the create again)
    except FileNotFoundError:
        fs.makedirs(parent, exist_ok=True)


def _unlink_quietly(fs: FileSystem, path: str) -> None:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_names_quietly(fs: FileSystem, directory: str, names: list[str]) -> None:
    """_unlink_quietly of each of the files ``names`` of ``directory``,
    several to a change (FileSystem._unlink_names)."""
    try:
        kept = fs._unlink_names(directory, names)
    except FileNotFoundError:
        return  # (the directory went meanwhile, its files with it)
    for name, code in kept:
        if code != errno.ENOENT:
            raise oserror(code, directory.rstrip("/") + "/" + name)


def _rmdir_quietly(fs: FileSystem, path: str) -> None:
    try:
        fs.rmdir(path)
    except (FileNotFoundError, NotADirectoryError):  # gone, or replaced meanwhile
        pass
