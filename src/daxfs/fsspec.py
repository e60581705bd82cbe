"""fsspec: a daxfs pool as an fsspec file system, protocol "daxfs".

    import fsspec, pandas as pd
    fs = fsspec.filesystem("daxfs", pool="/mnt/pmem/pool")
    pd.read_parquet("daxfs:///data/x.parquet", storage_options={"pool": "/mnt/pmem/pool"})

Paths are the pool's absolute POSIX paths: "daxfs:///data/x" and
"daxfs://data/x" both name /data/x (a pool has no working directory).

Design
------
*Mounts are shared, instances are not.*  fsspec caches one instance per
(arguments, process, thread); a mount per instance would mount a pool once
per thread, and pandas and pyarrow read from thread pools.  So instances
made with ``pool=`` hold a lease on the process's one mount of the pool
file in that mode (daxfs.mounts, which zarr's DaxStore shares): every
instance, thread, path spelling and store uses one mount.  Each call checks
that the mount is still open and still the file now at that path, so a
cached instance survives ``unmount()`` (it mounts again on its next call)
and a pool re-created at the same path.  The registry closes mounts
cleanly at interpreter exit and at the exit of multiprocessing's workers.
After a fork fsspec makes new instances; they find the inherited mount,
which daxfs re-arms for the child by itself.  ``fs=`` wraps a FileSystem
the caller mounted and owns: such instances are never cached (fsspec would
key them by the mount's repr) and pickle as ``pool=`` its path.

*Reads come straight from the mapped pool.*  File objects are the io
buffered classes over daxfs's unbuffered file (a BufferedReader over a raw
file whose readinto copies from the pool's mapping; daxfs's own open()
gives a MappedReader instead), with fsspec's attributes (fs, path, size,
commit, discard) added.  cat_file, get_file and cp_file read
through a plain open file (one copy out of the pool's mapping), not through
fs.map: a mapping pins the file's blocks, so a writer truncating the file
meanwhile would get EBUSY, and a read must never make a write fail.
put_file writes from an mmap of the local file.

*Directories are real* (unlike object stores), but writing a file creates
its missing parent directories (``auto_mkdir=True``, the default), which is
what fsspec's copy semantics and writers such as pyarrow's datasets
expect.  ``auto_mkdir=False`` gives POSIX behaviour (FileNotFoundError).

*Symlinks* are followed by info(path), as LocalFileSystem.info follows
them, and by the calls that open a path.  ls describes each entry without
following it, as LocalFileSystem.ls does: a symlink is type "other",
islink True, with its destination (size is its target's, 0 when that does
not resolve).  So walk, find, du, glob, get, copy and rm never enter a
symlink: two links to "/" in a pool are two entries, not a cycle.  rm
removes links, never their targets.  mv is one atomic rename (into path2
when that is a directory, as shutil.move).

*Walks terminate on every pool.*  walk is iterative (no recursion limit on
a tree's depth) and keeps a set of the directory inodes it met: a pool
whose tree names a directory twice (a directory inside itself or an
ancestor, or two names for one directory: damage, or a crafted pool) is
daxfs.CorruptionError naming the path, raised when the second name is
listed, not after a cycle or 2^n paths.  Errors surface: by default walk
(and so find, du, glob, expand_path, get, copy) raises every error,
CorruptionError and ELOOP included, except FileNotFoundError for a path
that is gone (an entry removed while the walk ran, or a missing top,
which walks nothing, as os.walk).  fsspec's own default, on_error="omit",
would skip an unreadable directory in silence; passing on_error="omit",
"raise" or a callable gets fsspec's meaning.  put() walks the local tree
the same way (fsspec's LocalFileSystem recurses).

*get writes only where it is told.*  A local file is created with
O_NOFOLLOW: a symlink already at its name is replaced, never written
through; a name that is not a regular file (a FIFO, a device) is an
error.  Within one get() call the directories below the destination that
the copy makes or enters are each checked once with lstat: a symlink
there (even one to a directory) or a file is an error, never followed.
The destination itself and the directories above it were named by the
caller and are used as they are.  A file that this get() wrote is never
overwritten by it (GNU cp's "will not overwrite just-created").  get never
creates a symlink on the host (a pool symlink is copied as what it
resolves to in the pool, a directory as an empty directory), so on a
case-insensitive destination two pool names such as "F" and "f" can only
collide with each other, and that is an error (FileExistsError for two
files; ENOTDIR or EISDIR for a file and a directory; two directories
merge), never a silent loss, and nothing is written outside the
destination.  Files are copied
sparse: only their data runs are written (fs.iomap) and the size is set
with ftruncate first, so a file of 2^62 bytes with no blocks is either a
sparse local file or, where the local file system cannot hold that size,
an immediate OSError (EFBIG); EFBIG, ENOSPC and EDQUOT remove the partial
file and say so.  A checked directory replaced by a symlink while the
copy runs is a race this does not close (a caller sharing the destination
with someone hostile should copy into a fresh directory).

*Transactions* (``with fs.transaction:``) write each "w" file (open,
pipe_file, put_file) under a temporary name in its directory and rename it
into place on commit, which daxfs does atomically.

Errors are the builtin OSError subclasses daxfs raises (FileNotFoundError,
IsADirectoryError, NotADirectoryError, FileExistsError, ...), errno set.
cat_file's start and end follow Python slice rules (negative counts from
the end, out-of-range clamps, end before start gives b"").
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import errno
import io
import mmap
import os
import stat
import uuid
from glob import has_magic

from fsspec import AbstractFileSystem
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.implementations.local import LocalFileSystem, make_path_posix, trailing_sep
from fsspec.spec import make_instance
from fsspec.utils import isfilelike, other_paths, stringify_path

from .fileio import DEFAULT_BUFFER, WRITE_BUFFER
from .fs import FileSystem
from .inode import data_runs
from .listing import met_twice
from .mounts import MOUNTS, Lease
from .path import oserror

PROTOCOL = "daxfs"


# ----------------------------------------------------------------------------
# file objects
# ----------------------------------------------------------------------------
class _PoolFile:
    """What fsspec expects of a file, on top of the io buffered classes."""

    def __init__(self, raw, buffer_size: int, *, owner, path: str, staged: str | None):
        super().__init__(raw, buffer_size)  # type: ignore[call-arg]
        self.fs, self.path = owner, path
        self._staged = staged  # the temporary name a transaction writes to

    @property
    def autocommit(self) -> bool:
        return self._staged is None

    def read_buffer(self, n: int = -1):
        """Up to ``n`` bytes (the rest of the file when negative) as a
        pyarrow Buffer.  pyarrow asks for this, when a file has it, for the
        ranged reads a Parquet or Arrow file is read by (its PythonFile);
        without it each one is read(n) into a new bytes object, whose fresh
        pages fault in one by one.  Here the bytes are copied once, straight
        from the pool into a buffer of pyarrow's own memory pool, whose pages
        are warm, as its native file reads do.  A copy, not a view of the
        mapped pool: a view would pin the file's space for as long as a
        table made from it lives (``dax.map(path).to_arrow()`` gives that,
        asked for)."""
        import pyarrow as pa

        if n is None or n < 0:
            return pa.py_buffer(self.read())  # type: ignore[attr-defined]
        buf = pa.allocate_buffer(n)
        got = self.readinto(memoryview(buf))  # type: ignore[attr-defined]
        return buf if got == n else buf.slice(0, got)

    def commit(self) -> None:
        """Publish a file written inside a transaction (atomic rename)."""
        self.close()  # type: ignore[attr-defined]
        if self._staged is not None:
            self.fs.dax.rename(self._staged, self.path)
            self._staged = None

    def discard(self) -> None:
        """Drop a file written inside a transaction."""
        self.close()  # type: ignore[attr-defined]
        if self._staged is not None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.dax.unlink(self._staged)
            self._staged = None


class DaxReader(_PoolFile, io.BufferedReader):
    """A file open for reading; ``size`` is the file's size when opened."""

    size: int


class DaxWriter(_PoolFile, io.BufferedWriter):
    """A file open for writing only."""


class DaxRandom(_PoolFile, io.BufferedRandom):
    """A file open for reading and writing."""


def _file_class(raw) -> type[_PoolFile]:
    if raw.readable() and raw.writable():
        return DaxRandom
    return DaxWriter if raw.writable() else DaxReader


# ----------------------------------------------------------------------------
# the file system
# ----------------------------------------------------------------------------
class _PoolCached(type(AbstractFileSystem)):  # type: ignore[misc]
    """fsspec's instance cache, keyed by the pool's real path (so that spellings
    of one pool share an instance) and bypassed for caller-owned mounts."""

    def __call__(cls, *args, **kwargs):
        if args and "pool" not in kwargs:
            kwargs["pool"], args = args[0], args[1:]
        if kwargs.get("pool") is not None:
            kwargs["pool"] = os.path.realpath(os.fspath(kwargs["pool"]))
        if kwargs.get("fs") is not None:
            kwargs["skip_instance_cache"] = True
        return super().__call__(*args, **kwargs)


class DaxFileSystem(AbstractFileSystem, metaclass=_PoolCached):
    """A daxfs pool through the fsspec interface (see the module docstring).

    pool: path of the pool file or device to mount (mounted once per process
    and shared); fs: an already mounted daxfs.FileSystem to use instead;
    readonly, durability: passed to daxfs.mount; auto_mkdir: writing a file
    creates its missing parent directories.
    """

    protocol = PROTOCOL
    root_marker = "/"

    def __init__(
        self,
        pool=None,
        *,
        fs: FileSystem | None = None,
        readonly: bool = False,
        durability: str | None = None,
        auto_mkdir: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (pool is None) == (fs is None):
            raise ValueError("daxfs needs exactly one of pool= (a pool path) or fs= (a mount)")
        self._given = fs
        self._lease: Lease | None = None  # on the shared mount of ``pool``
        self.pool = fs.region.path if fs is not None else os.path.realpath(os.fspath(pool))
        self.readonly = fs.readonly if fs is not None else readonly
        self.durability = durability
        self.auto_mkdir = auto_mkdir
        self.dax  # noqa: B018  (mount now, so a bad pool fails here, not later)

    @property
    def dax(self) -> FileSystem:
        """The mounted daxfs.FileSystem this instance works on."""
        if self._given is not None:
            return self._given
        lease = self._lease
        if lease is None or not lease.current():
            # Unmounted, or the pool replaced: a racing thread may do the same;
            # the lease it overwrites is given back when dropped.
            if lease is not None:
                lease.release()
            lease = self._lease = MOUNTS.acquire(
                self.pool, readonly=self.readonly, durability=self.durability
            )
        return lease.fs

    def unmount(self) -> None:
        """Unmount the shared mount of this pool (cleanly: journal checkpointed;
        files opened through it are closed), for every user of it in this
        process (zarr stores too).  Instances and stores mount again on their
        next call.  A mount passed in with fs= is the caller's to close."""
        if self._given is None:
            MOUNTS.unmount(self.pool)

    def __reduce__(self):
        if self._given is None:
            return super().__reduce__()
        options = {"pool": self.pool, "readonly": self.readonly, "auto_mkdir": self.auto_mkdir}
        return make_instance, (type(self), (), options)

    @property
    def fsid(self) -> str:
        return f"daxfs-{self.dax.info()['uuid']}"

    # -- paths -------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [_pool_path(p) for p in path]
        return _pool_path(path)

    def _ensure_parent(self, dax: FileSystem, path: str) -> None:
        parent = self._parent(path)
        if self.auto_mkdir and not dax.isdir(parent):
            dax.makedirs(parent, exist_ok=True)

    # -- listing -------------------------------------------------------------
    def info(self, path, **kwargs) -> dict:
        """fsspec's info dict; a symlink is followed, as LocalFileSystem.info
        does (islink True, destination set; a dangling one is type "other")."""
        path = self._strip_protocol(path)
        dax = self.dax
        return _describe(dax, path, dax.lstat(path))

    def ls(self, path, detail=True, **kwargs):
        """A directory's entries, each described without following it (a
        symlink is type "other", islink True), sorted by name; for a file,
        the file."""
        _, entries = self._listing(self._strip_protocol(path))
        return entries if detail else [e["name"] for e in entries]

    def _listing(self, path: str) -> tuple[dict, list[dict]]:
        """(info of ``path``, followed; its ls entries)."""
        top = self.info(path)
        if top["type"] != "directory":
            return top, [top]
        return top, _list_dir(self.dax, path)

    # -- walking -------------------------------------------------------------
    def walk(self, path, maxdepth=None, topdown=True, on_error=None, **kwargs):
        """fsspec's walk, without recursion and without following symlinks
        (see the module docstring): yields (path, dirs, files) depth first in
        name order; with topdown, removing names from dirs prunes the walk.

        on_error: None (daxfs's default) raises every error except
        FileNotFoundError for a path that is gone; "omit" skips a directory
        that cannot be listed, "raise" raises, a callable is called with the
        OSError and the walk goes on, as fsspec defines.  A directory met
        twice is daxfs.CorruptionError (errno EUCLEAN), handled the same way
        (skipped, never entered twice, when omitted)."""
        yield from _walk(self, path, maxdepth, topdown, on_error, kwargs)

    def _walk_below(self, path: str, detail: bool) -> list[dict]:
        """The entries of a directory met in a listing (so not a symlink);
        without detail only name, type and ino, read from the directory
        itself (no lookup of each entry's path)."""
        return _list_dir(self.dax, path) if detail else _list_names(self.dax, path)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        """fsspec's find; without detail (expand_path, get, copy), from a walk
        without detail, which reads each directory once and no entry's inode."""
        if detail:
            return super().find(path, maxdepth, withdirs, detail=True, **kwargs)
        path = self._strip_protocol(path)
        found = {path} if withdirs and self.isdir(path) else set()
        for top, dirs, files in self.walk(path, maxdepth, detail=False, **kwargs):
            prefix = top.rstrip("/") + "/"
            found.update(prefix + name if name else top for name in files)
            if withdirs:
                found.update(prefix + name for name in dirs)
        return sorted(found)

    def _walk_identity(self, info: dict) -> int:
        return info["ino"]

    def _walk_still_names(self, path: str, ino: int) -> bool:
        try:
            return self.dax.lstat(path).st_ino == ino
        except OSError as e:
            return e.errno not in (errno.ENOENT, errno.ENOTDIR)

    def du(self, path, total=True, maxdepth=None, withdirs=False, **kwargs):
        """fsspec's du, from the sizes the walk already has (a symlink counts
        its target's size, as with LocalFileSystem); nothing is looked up again."""
        found = self.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=True, **kwargs)
        sizes = {name: info["size"] for name, info in found.items()}
        return sum(sizes.values()) if total else sizes

    def isdir(self, path) -> bool:
        return self.dax.isdir(self._strip_protocol(path))

    def isfile(self, path) -> bool:
        return self.dax.isfile(self._strip_protocol(path))

    def exists(self, path, **kwargs) -> bool:
        return self.dax.exists(self._strip_protocol(path))

    def created(self, path) -> datetime.datetime:
        """The inode change time, as fsspec's LocalFileSystem reports it
        (stat carries no birth time)."""
        return _utc(self.info(path)["created"])

    def modified(self, path) -> datetime.datetime:
        return _utc(self.info(path)["mtime"])

    # -- directories ---------------------------------------------------------
    def mkdir(self, path, create_parents=True, **kwargs) -> None:
        path = self._strip_protocol(path)
        dax = self.dax
        if create_parents:
            parent = self._parent(path)
            if not dax.isdir(parent):
                dax.makedirs(parent, exist_ok=True)
        dax.mkdir(path, kwargs.get("mode", 0o777))

    def makedirs(self, path, exist_ok=False) -> None:
        self.dax.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def rmdir(self, path) -> None:
        self.dax.rmdir(self._strip_protocol(path))

    # -- removing and moving ---------------------------------------------------
    def rm_file(self, path) -> None:
        self.dax.unlink(self._strip_protocol(path))

    def _rm(self, path) -> None:
        path = self._strip_protocol(path)
        dax = self.dax
        if stat.S_ISDIR(dax.lstat(path).st_mode):
            dax.rmdir(path)
        else:
            dax.unlink(path)

    def rm(self, path, recursive=False, maxdepth=None) -> None:
        """Remove files, and with recursive=True directories and what they hold,
        maxdepth levels deep.  Symlinks are removed, never followed."""
        dax = self.dax
        # Globs only: the trees are walked here.  Deepest first, so that a
        # match inside another match goes before it.
        for p in reversed(self.expand_path(path, maxdepth=maxdepth)):
            if not stat.S_ISDIR(dax.lstat(p).st_mode):
                dax.unlink(p)
            elif not recursive:
                raise oserror(errno.EISDIR, p)
            else:
                dax._remove_tree(p, maxdepth)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs) -> None:
        """Rename, atomically; into path2 when it is a directory (as shutil.move).
        Lists and globs move one by one through fsspec's copy-and-remove."""
        if not (isinstance(path1, str) and isinstance(path2, str)) or has_magic(path1):
            return super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        dax = self.dax
        if path2.endswith("/") or (dax.isdir(dst) and dst != src):
            dst = dst.rstrip("/") + "/" + src.rsplit("/", 1)[-1]
        if src == dst:
            return None
        dax.lstat(src)  # a missing source is FileNotFoundError before any mkdir
        self._ensure_parent(dax, dst)
        dax.rename(src, dst)
        return None

    # -- copying -------------------------------------------------------------
    def cp_file(self, path1, path2, **kwargs) -> None:
        """Copy one file, its data runs only: holes stay holes."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        dax = self.dax
        st = dax.stat(src)
        if stat.S_ISDIR(st.st_mode):
            dax.makedirs(dst, exist_ok=True)
            return
        if _same_inode(dax, dst, st):
            return  # copying a file onto itself must not truncate it first
        self._ensure_parent(dax, dst)
        with dax.open(src, "rb", buffering=0) as inp, dax.open(dst, "wb", buffering=0) as out:
            for start, end in data_runs(dax.iomap(src)):
                inp.seek(start)
                out.seek(start)
                for pos in range(start, end, self.blocksize):
                    out.write(inp.read(min(self.blocksize, end - pos)))
            out.truncate(st.st_size)

    def get(
        self, rpath, lpath, recursive=False, callback=DEFAULT_CALLBACK, maxdepth=None, **kwargs
    ):
        """fsspec's get, writing only below the destination ``lpath`` (module
        docstring): its get_file calls check, once each, that the directories
        they make or enter below it are real directories.  Any entry that
        fails makes get raise (after copying the entries before it)."""
        root = os.path.abspath(make_path_posix(lpath)) if isinstance(lpath, str) else None
        token = _DESTINATION.set(_Destination(root))
        try:
            super().get(rpath, lpath, recursive, callback, maxdepth, **kwargs)
        finally:
            _DESTINATION.reset(token)

    def get_file(self, rpath, lpath, callback=DEFAULT_CALLBACK, outfile=None, **kwargs) -> None:
        """Copy to a local file (or file-like ``outfile``), sparse: holes stay
        holes.  A symlink at ``lpath`` is replaced, never written through; a
        directory of the pool becomes a directory."""
        rpath = self._strip_protocol(rpath)
        dax = self.dax
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        if outfile is not None:
            with dax.open(rpath, "rb", buffering=0) as inp:
                self._copy_out(inp, outfile, callback)
            return
        local = os.path.abspath(os.fspath(lpath))
        destination = _DESTINATION.get() or _Destination(None)
        if dax.isdir(rpath):
            destination.directory(local)
            return
        source = f"{PROTOCOL}://{rpath}"
        with _naming_errors(source):
            inp = dax.open(rpath, "rb", buffering=0)
        with inp:
            with _naming_errors(source):
                runs = data_runs(dax.iomap(rpath))
            destination.directory(os.path.dirname(local))
            fd = destination.new_file(local)
            _SparseCopy(inp, runs, source).to_local(fd, local, self.blocksize, callback)

    def _copy_out(self, inp, out, callback) -> None:
        callback.set_size(inp.seek(0, os.SEEK_END))
        inp.seek(0)
        buf = bytearray(self.blocksize)
        while n := inp.readinto(buf):
            with memoryview(buf)[:n] as piece:
                out.write(piece)
            callback.relative_update(n)

    def put(
        self, lpath, rpath, recursive=False, callback=DEFAULT_CALLBACK, maxdepth=None, **kwargs
    ):
        """fsspec's put, with the local tree walked without recursion (fsspec's
        LocalFileSystem walk recurses, and fails on a tree ~1,000 deep) and
        without following local symlinks; the pairing of local and pool
        paths is fsspec's own."""
        if isinstance(lpath, list) and isinstance(rpath, list):
            super().put(lpath, rpath, callback=callback, **kwargs)
            return
        source_is_str = isinstance(lpath, str)
        if source_is_str:
            lpath = make_path_posix(lpath)
        host = _HostTree()
        lpaths = host.expand_path(lpath, recursive=recursive, maxdepth=maxdepth, **kwargs)
        if source_is_str and (not recursive or maxdepth is not None):
            # Non-recursive glob does not copy directories (as fsspec).
            lpaths = [p for p in lpaths if not (trailing_sep(p) or host.isdir(p))]
            if not lpaths:
                return
        dest_is_dir = isinstance(rpath, str) and (trailing_sep(rpath) or self.isdir(rpath))
        rpath = self._strip_protocol(rpath)
        exists = source_is_str and (
            (has_magic(lpath) and len(lpaths) == 1)
            or (not has_magic(lpath) and dest_is_dir and not trailing_sep(lpath))
        )
        rpaths = other_paths(lpaths, rpath, exists=exists, flatten=not source_is_str)
        super().put(lpaths, rpaths, callback=callback, **kwargs)

    def put_file(self, lpath, rpath, callback=DEFAULT_CALLBACK, mode="overwrite", **kwargs) -> None:
        """Copy a local file in, writing straight from an mmap of it."""
        rpath = self._strip_protocol(rpath)
        dax = self.dax
        if os.path.isdir(lpath):
            dax.makedirs(rpath, exist_ok=True)
            return
        if self._intrans:  # staged under a temporary name until commit
            super().put_file(lpath, rpath, callback=callback, mode=mode, **kwargs)
            return
        self._ensure_parent(dax, rpath)
        with open(lpath, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            callback.set_size(size)
            if size <= min(self.blocksize, dax.WRITE_PIECE):
                # Read, not mapped: a view of an mmap that an error's frames
                # still hold would keep the mmap from closing (BufferError).
                callback.relative_update(self._put_whole(rpath, src.read(), mode))
                return
            with dax.open(rpath, _write_mode(mode), buffering=0) as out:
                with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as local:
                    with memoryview(local) as view:
                        for start in range(0, size, self.blocksize):
                            with view[start : start + self.blocksize] as piece:
                                callback.relative_update(out.write(piece))

    def _put_whole(self, path: str, data, mode: str) -> int:
        """A file of at most one write piece, written in one change, so that a
        crash or another process sees the file as it was or all of ``data``:
        a new file's name, bytes and mode (_create_with, FileExistsError for
        "create"), or an old file emptied and filled (write_bytes), never
        empty in between.  Returns the bytes written."""
        if mode == "create":
            self.dax._create_with(path, data)
            return memoryview(data).nbytes
        return self.dax.write_bytes(path, data)

    # -- whole-file and ranged reads and writes --------------------------------
    def cat_file(self, path, start=None, end=None, **kwargs) -> bytes:
        """Bytes [start, end) as a Python slice, copied once out of the pool."""
        path = self._strip_protocol(path)
        if start is None and end is None:
            return self.dax.read_bytes(path)  # (the whole file: no file object)
        with self.dax.open(path, "rb", buffering=0) as f:
            lo, hi, _ = slice(start, end).indices(f.seek(0, os.SEEK_END))
            if hi <= lo:
                return b""
            f.seek(lo)
            return f.read(hi - lo)

    def pipe_file(self, path, value, mode="overwrite", **kwargs) -> None:
        if self._intrans:  # staged under a temporary name until commit
            super().pipe_file(path, value, mode=mode, **kwargs)
            return
        path = self._strip_protocol(path)
        open_mode = _write_mode(mode)
        dax = self.dax
        self._ensure_parent(dax, path)
        if memoryview(value).nbytes <= dax.WRITE_PIECE:
            self._put_whole(path, value, mode)
            return
        with dax.open(path, open_mode, buffering=0) as f:
            f.write(value)

    def touch(self, path, truncate=True, **kwargs) -> None:
        path = self._strip_protocol(path)
        dax = self.dax
        if not truncate and dax.exists(path):
            dax.utime(path)
            return
        self._ensure_parent(dax, path)
        dax.open(path, "wb", buffering=0).close()

    def _open(
        self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs
    ):
        path = self._strip_protocol(path)
        dax = self.dax
        if "r" not in mode:
            self._ensure_parent(dax, path)
        # Only "w" is staged: "a" and "r+" build on the current file, "x" must
        # fail now if the name exists.
        staged = _staging_name(path) if not autocommit and "w" in mode else None
        raw = dax.open(staged or path, mode, buffering=0)
        try:
            cls = _file_class(raw)
            # Writing only, a chunk is gathered before each change (fileio.WRITE_BUFFER),
            # as fsspec's own buffered files gather 5 MiB before they upload.
            size = block_size or (WRITE_BUFFER if cls is DaxWriter else DEFAULT_BUFFER)
            f = cls(raw, size, owner=self, path=path, staged=staged)
            if isinstance(f, DaxReader):
                f.size = raw.seek(0, os.SEEK_END)
                raw.seek(0)
        except BaseException:
            raw.close()
            raise
        return f


# ----------------------------------------------------------------------------
# walks
# ----------------------------------------------------------------------------
def _walk(fs, path, maxdepth, topdown: bool, on_error, kwargs: dict):
    """The walk of DaxFileSystem and _HostTree (fsspec's arguments)."""
    if maxdepth is not None and maxdepth < 1:
        raise ValueError("maxdepth must be at least 1")
    walk = _Walk(fs, maxdepth, on_error, kwargs.pop("detail", False))
    path = fs._strip_protocol(path)
    return walk.top_down(path) if topdown else walk.bottom_up(path)


class _Walk:
    """One walk, depth first in listing order (fsspec's order), with a stack
    instead of recursion.  The top is followed if it is a symlink (as by
    os.walk and fsspec); entries never are: a directory is entered only if
    its listing says it is one.

    The file system answers: _listing(top) -> (info, entries), _walk_below(
    path) -> entries of a directory met in a listing, _walk_identity(info) ->
    a directory's identity (None: not tracked) and _walk_still_names(path,
    identity).  A directory met twice is CorruptionError unless its first
    path no longer names it (renamed while the walk ran)."""

    def __init__(self, fs, maxdepth: int | None, on_error, detail: bool):
        self.fs, self.maxdepth, self.on_error, self.detail = fs, maxdepth, on_error, detail
        self.met: dict[object, str] = {}  # directory identity -> where it was met

    def top_down(self, top: str):
        stack = [(top, 1, True)]
        while stack:
            path, depth, followed = stack.pop()
            level = self._level(path, followed)
            if level is None:
                continue
            dirs, files = level
            known = {name: info["name"].rstrip("/") for name, info in dirs.items()}
            shown = dirs if self.detail else list(dirs)
            yield path, shown, (files if self.detail else list(files))
            if not self._goes_deeper(depth):
                continue
            # The names the caller left in dirs (pruning, as os.walk); a name it
            # added was not listed, so it is walked as a top: followed.
            for name in reversed(list(shown)):
                child = known.get(name) or f"{path.rstrip('/')}/{name}"
                stack.append((child, depth + 1, name not in known))

    def bottom_up(self, top: str):
        level = self._level(top, True)
        if level is None:
            return
        stack = [self._frame(top, 1, level)]
        while stack:
            path, depth, dirs, files, below = stack[-1]
            child = next(below, None)
            if child is not None:
                level = self._level(child, False)
                if level is not None:
                    stack.append(self._frame(child, depth + 1, level))
                continue
            stack.pop()
            yield (
                path,
                (dirs if self.detail else list(dirs)),
                (files if self.detail else list(files)),
            )

    def _frame(self, path: str, depth: int, level: tuple[dict, dict]):
        dirs, files = level
        below = (
            [info["name"].rstrip("/") for info in dirs.values()] if self._goes_deeper(depth) else []
        )
        return path, depth, dirs, files, iter(below)

    def _goes_deeper(self, depth: int) -> bool:
        return self.maxdepth is None or depth < self.maxdepth

    def _level(self, path: str, followed: bool) -> tuple[dict, dict] | None:
        """(dirs, files) of one directory, name -> info; None when it could
        not be listed (or is a directory met before) and on_error let the
        walk go on."""
        try:
            if followed:
                info, listing = self.fs._listing(path)
                if info["type"] == "directory" and not self._first_meeting(path, info):
                    return None
            else:
                listing = self.fs._walk_below(path, self.detail)
        except OSError as e:
            self._failed(_naming(e, path))
            return None
        dirs: dict[str, dict] = {}
        files: dict[str, dict] = {}
        for info in listing:
            pathname = info["name"].rstrip("/")
            name = pathname.rsplit("/", 1)[-1]
            if pathname == path:
                files[""] = info  # the top is a file (as fsspec)
            elif info["type"] != "directory":
                files[name] = info
            elif self._first_meeting(pathname, info):
                dirs[name] = info
        return dirs, files

    def _first_meeting(self, path: str, info: dict) -> bool:
        """Record a directory; False (after on_error) if it was met before."""
        key = self.fs._walk_identity(info)
        if key is None:
            return True
        first = self.met.setdefault(key, path)
        if first == path or not self.fs._walk_still_names(first, key):
            self.met[key] = path
            return True
        self._failed(met_twice(path, first, key))
        return False

    def _failed(self, error: OSError) -> None:
        """Raise ``error`` or let the walk skip its path, as on_error says."""
        if self.on_error is None:  # daxfs's default: only a path that is gone is skipped
            if not isinstance(error, FileNotFoundError):
                raise error
        elif self.on_error == "raise":
            raise error
        elif callable(self.on_error):
            self.on_error(error)


class _HostTree(LocalFileSystem):
    """The local file system with daxfs's walk (iterative, entries never
    followed; no identity tracking: the host kernel keeps its trees trees),
    for put()'s expansion of local paths."""

    def walk(self, path, maxdepth=None, topdown=True, on_error=None, **kwargs):
        yield from _walk(self, path, maxdepth, topdown, on_error, kwargs)

    def _listing(self, path: str) -> tuple[dict, list[dict]]:
        top = self.info(path)
        return top, (self.ls(path, detail=True) if top["type"] == "directory" else [top])

    def _walk_below(self, path: str, detail: bool) -> list[dict]:
        return self.ls(path, detail=True)

    def _walk_identity(self, info: dict) -> None:
        return None

    def _walk_still_names(self, path: str, key: object) -> bool:
        return True


# ----------------------------------------------------------------------------
# copying out
# ----------------------------------------------------------------------------
class _Destination:
    """The local directory one get() copies into.  The directories below it
    that the copy makes or enters must be real directories: each is checked
    once with lstat (a symlink there, even to a directory, is an error, never
    followed).  The root and the directories above it were named by the
    caller and are used as open() would use them; so is every directory of a
    get_file call outside get() (root None)."""

    def __init__(self, root: str | None):
        self.root = root
        self.ready: set[str] = set()  # directories made or checked
        self.written: set[tuple[int, int]] = set()  # (st_dev, st_ino) of files written

    def new_file(self, path: str) -> int:
        """A descriptor of ``path``, empty and open for writing: created, or
        truncated if it was there before this copy, never a file this copy
        wrote (two pool names for one local name, as on a case-insensitive
        file system, would lose one file without a word)."""
        fd = _open_local(path)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in self.written:
            os.close(fd)
            raise FileExistsError(
                errno.EEXIST,
                "written already by this copy (two pool names for one local name); not overwritten",
                path,
            )
        self.written.add((st.st_dev, st.st_ino))
        os.ftruncate(fd, 0)
        return fd

    def directory(self, path: str) -> None:
        """Make sure the local directory ``path`` exists and may be written in."""
        root = self.root
        if root is None or not _inside(path, root):
            os.makedirs(path, exist_ok=True)
            return
        missing = []
        while path != root and path not in self.ready:
            missing.append(path)
            path = os.path.dirname(path)
        if path == root and root not in self.ready:
            os.makedirs(root, exist_ok=True)
            self.ready.add(root)
        for path in reversed(missing):
            _real_directory(path)
            self.ready.add(path)


# The destination of the get() running in this thread or task: get_file,
# which fsspec's get calls per entry, learns from it what it may follow.
_DESTINATION: contextvars.ContextVar[_Destination | None] = contextvars.ContextVar(
    "daxfs_get_destination", default=None
)


def _naming(error: OSError, path: str) -> OSError:
    """``error``, naming ``path`` if it names no file (an error from deep in
    the pool, a damaged block or a symlink loop, may not say where)."""
    if error.filename is None:
        error.filename = path
    return error


@contextlib.contextmanager
def _naming_errors(path: str):
    """Errors of the block name ``path`` if they name no file."""
    try:
        yield
    except OSError as e:
        _naming(e, path)
        raise


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _real_directory(path: str) -> None:
    """mkdir ``path``, or make sure what is there is a directory, not a
    symlink to one."""
    try:
        os.mkdir(path)
        return
    except FileExistsError:
        pass
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        return
    if stat.S_ISLNK(mode):
        raise OSError(
            errno.ELOOP,
            "a symbolic link in the destination; get() does not write through one",
            path,
        )
    raise NotADirectoryError(errno.ENOTDIR, "in the destination and not a directory", path)


# O_NONBLOCK: a FIFO at the name fails (ENXIO) instead of blocking the copy.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _open_local(path: str) -> int:
    """Open or create the regular file ``path`` for writing, without following
    a symlink at it: one already there is replaced by a new file."""
    try:
        fd = os.open(path, _NEW_FILE, 0o666)
    except OSError as e:
        if e.errno != errno.ELOOP or not os.path.islink(path):
            raise
        os.unlink(path)
        fd = os.open(path, _NEW_FILE | os.O_EXCL, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file", path)
    return fd


class _SparseCopy:
    """A pool file copied to a local one: its size set first (a size the
    local file system cannot hold fails at once, EFBIG), then its data runs
    written where they belong; holes are never written."""

    def __init__(self, inp, runs: list[tuple[int, int]], source: str):
        self.inp, self.runs, self.source = inp, runs, source
        self.size = inp.seek(0, os.SEEK_END)

    def to_local(self, fd: int, path: str, blocksize: int, callback) -> None:
        """Write the empty local file ``fd`` (at ``path``) and close it; on any
        failure the partial file is removed, and a full or too small local
        file system is an OSError saying so."""
        made = os.fstat(fd)
        try:
            try:
                os.ftruncate(fd, self.size)
                self._write_runs(fd, blocksize, callback)
            finally:
                os.close(fd)
        except BaseException as e:
            _remove_if_same(path, made)
            if isinstance(e, OSError) and e.errno in _FULL:
                raise OSError(
                    e.errno,
                    f"{e.strerror}: copying {self.source} ({self.size:,} bytes) failed, "
                    "the partial copy was removed",
                    path,
                ) from e
            raise

    def _write_runs(self, fd: int, blocksize: int, callback) -> None:
        callback.set_size(self.size)
        buf = memoryview(bytearray(min(blocksize, max(self.size, 1))))
        for start, end in self.runs:
            end = min(end, self.size)  # a run past the size it had when opened
            self.inp.seek(start)
            pos = start
            while pos < end:
                n = self.inp.readinto(buf[: min(len(buf), end - pos)])
                if not n:
                    return  # the file shrank while being copied
                _pwrite_all(fd, buf[:n], pos)
                pos += n
                callback.absolute_update(pos)
        callback.absolute_update(self.size)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _remove_if_same(path: str, made: os.stat_result) -> None:
    """Unlink ``path`` if it is still the file this copy wrote."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == (made.st_dev, made.st_ino):
            os.unlink(path)


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _pool_path(path) -> str:
    """The one spelling of a path in the pool: fsspec compares the names ls
    returns with the paths it was given as strings."""
    path = stringify_path(path)
    for prefix in (PROTOCOL + "://", PROTOCOL + "::"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
            break
    return "/" + "/".join(part for part in path.split("/") if part and part != ".")


def _write_mode(mode: str) -> str:
    """fsspec's pipe/put modes as open() modes; "create" must not replace."""
    if mode not in ("overwrite", "create"):
        raise ValueError(f"mode must be 'overwrite' or 'create', not {mode!r}")
    return "xb" if mode == "create" else "wb"


def _staging_name(path: str) -> str:
    """A fresh hidden name beside ``path`` for a transaction's file."""
    head, _, name = path.rpartition("/")
    return f"{head}/.{name}.{uuid.uuid4().hex[:12]}.tmp"


def _kind(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _describe(dax: FileSystem, path: str, lst: os.stat_result) -> dict:
    """fsspec's info dict for info(path): a symlink is described by its
    target, flagged islink, as LocalFileSystem.info does (a dangling one by
    itself, type "other")."""
    st = lst
    if stat.S_ISLNK(lst.st_mode):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            st = dax.stat(path)
    return _info(dax, path, st, lst, st.st_size)


def _describe_entry(dax: FileSystem, path: str, lst: os.stat_result) -> dict:
    """fsspec's info dict for an ls entry, which is not followed (as
    LocalFileSystem.ls describes a scandir entry): a symlink is type "other",
    with its target's size when that resolves, else 0."""
    size = lst.st_size
    if stat.S_ISLNK(lst.st_mode):
        try:
            size = dax.stat(path).st_size
        except OSError:
            size = 0
    return _info(dax, path, lst, lst, size)


def _info(dax: FileSystem, path: str, st: os.stat_result, lst: os.stat_result, size: int) -> dict:
    """The keys LocalFileSystem gives, from ``st``; islink from ``lst``."""
    link = stat.S_ISLNK(lst.st_mode)
    info = {
        "name": path,
        "size": size,
        "type": _kind(st),
        "created": st.st_ctime,
        "mtime": st.st_mtime,
        "islink": link,
        "mode": st.st_mode,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "ino": st.st_ino,
        "nlink": st.st_nlink,
    }
    if link:
        info["destination"] = dax.readlink(path)
    return info


def _list_dir(dax: FileSystem, path: str) -> list[dict]:
    out = []
    prefix = path.rstrip("/") + "/"
    for entry in sorted(dax.scandir(path), key=lambda e: e.name):
        try:
            out.append(_describe_entry(dax, prefix + entry.name, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:
            pass  # removed since the listing
    return out


def _list_names(dax: FileSystem, path: str) -> list[dict]:
    """ls entries cut to what a walk without detail needs (name, type, ino),
    from the directory's own records."""
    prefix = path.rstrip("/") + "/"
    return [
        {"name": prefix + e.name, "type": _entry_kind(e), "ino": e.inode()}
        for e in sorted(dax.scandir(path), key=lambda e: e.name)
    ]


def _entry_kind(entry) -> str:
    if entry.is_dir(follow_symlinks=False):
        return "directory"
    return "file" if entry.is_file(follow_symlinks=False) else "other"


def _same_inode(dax: FileSystem, path: str, st: os.stat_result) -> bool:
    try:
        return dax.stat(path).st_ino == st.st_ino
    except (FileNotFoundError, NotADirectoryError):
        return False


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
