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
classes daxfs's own open() returns (a BufferedReader over a raw file whose
readinto copies from the pool's mapping), with fsspec's attributes (fs,
path, size, commit, discard) added.  cat_file, get_file and cp_file read
through a plain open file (one copy out of the pool's mapping), not through
fs.map: a mapping pins the file's blocks, so a writer truncating the file
meanwhile would get EBUSY, and a read must never make a write fail.
put_file writes from an mmap of the local file.

*Directories are real* (unlike object stores), but writing a file creates
its missing parent directories (``auto_mkdir=True``, the default), which is
what fsspec's copy semantics and writers such as pyarrow's datasets
expect.  ``auto_mkdir=False`` gives POSIX behaviour (FileNotFoundError).

*Symlinks* are followed by info, ls and walk (as fsspec's LocalFileSystem
does) but never by rm, which removes the link.  mv is one atomic rename
(into path2 when that is a directory, as shutil.move).

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
from fsspec.spec import make_instance
from fsspec.utils import isfilelike, stringify_path

from .fileio import DEFAULT_BUFFER
from .fs import FileSystem
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
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        for prefix in (PROTOCOL + "://", PROTOCOL + "::"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        # One spelling per path: fsspec compares the names ls returns with the
        # paths it was given as strings.
        return "/" + "/".join(part for part in path.split("/") if part and part != ".")

    def _ensure_parent(self, dax: FileSystem, path: str) -> None:
        parent = self._parent(path)
        if self.auto_mkdir and not dax.isdir(parent):
            dax.makedirs(parent, exist_ok=True)

    # -- listing -------------------------------------------------------------
    def info(self, path, **kwargs) -> dict:
        path = self._strip_protocol(path)
        dax = self.dax
        return _describe(dax, path, dax.lstat(path))

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path)
        dax = self.dax
        top = self.info(path)
        if top["type"] != "directory":
            entries = [top]
        else:
            entries = _list_dir(dax, path)
        return entries if detail else [e["name"] for e in entries]

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
        maxdepth levels deep.  Symlinks are removed, never followed (fsspec's
        own walk follows them, as LocalFileSystem's info does)."""
        dax = self.dax
        # Globs only: the trees are walked here.  Deepest first, so that a
        # match inside another match goes before it.
        for p in reversed(self.expand_path(path, maxdepth=maxdepth)):
            if not stat.S_ISDIR(dax.lstat(p).st_mode):
                dax.unlink(p)
            elif not recursive:
                raise oserror(errno.EISDIR, p)
            else:
                _remove_tree(dax, p, maxdepth)

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
            for start, end in _data_runs(dax.iomap(src)):
                inp.seek(start)
                out.seek(start)
                for pos in range(start, end, self.blocksize):
                    out.write(inp.read(min(self.blocksize, end - pos)))
            out.truncate(st.st_size)

    def get_file(self, rpath, lpath, callback=DEFAULT_CALLBACK, outfile=None, **kwargs) -> None:
        """Copy to a local file (or file-like ``outfile``)."""
        rpath = self._strip_protocol(rpath)
        dax = self.dax
        if outfile is None and isfilelike(lpath):
            outfile = lpath
        if outfile is None and dax.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        with dax.open(rpath, "rb", buffering=0) as inp:
            if outfile is not None:
                self._copy_out(inp, outfile, callback)
                return
            os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
            with open(lpath, "wb") as f:
                self._copy_out(inp, f, callback)

    def _copy_out(self, inp, out, callback) -> None:
        callback.set_size(inp.seek(0, os.SEEK_END))
        inp.seek(0)
        buf = bytearray(self.blocksize)
        while n := inp.readinto(buf):
            with memoryview(buf)[:n] as piece:
                out.write(piece)
            callback.relative_update(n)

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
        with open(lpath, "rb") as src, dax.open(rpath, _write_mode(mode), buffering=0) as out:
            size = os.fstat(src.fileno()).st_size
            callback.set_size(size)
            if not size:
                return  # mmap refuses empty files
            with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as local:
                with memoryview(local) as view:
                    for start in range(0, size, self.blocksize):
                        with view[start : start + self.blocksize] as piece:
                            callback.relative_update(out.write(piece))

    # -- whole-file and ranged reads and writes --------------------------------
    def cat_file(self, path, start=None, end=None, **kwargs) -> bytes:
        """Bytes [start, end) as a Python slice, copied once out of the pool."""
        path = self._strip_protocol(path)
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
        dax = self.dax
        self._ensure_parent(dax, path)
        with dax.open(path, _write_mode(mode), buffering=0) as f:
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
            f = cls(raw, block_size or DEFAULT_BUFFER, owner=self, path=path, staged=staged)
            if isinstance(f, DaxReader):
                f.size = raw.seek(0, os.SEEK_END)
                raw.seek(0)
        except BaseException:
            raw.close()
            raise
        return f


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
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
    """fsspec's info dict (the keys LocalFileSystem gives); a symlink is
    described by its target, flagged islink, as LocalFileSystem does."""
    st, link = lst, stat.S_ISLNK(lst.st_mode)
    if link:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            st = dax.stat(path)
    info = {
        "name": path,
        "size": st.st_size,
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
            out.append(_describe(dax, prefix + entry.name, entry.stat(follow_symlinks=False)))
        except FileNotFoundError:
            pass  # removed since the listing
    return out


def _remove_tree(dax: FileSystem, top: str, levels: int | None) -> None:
    """rm -r of ``top`` without following symlinks; with ``levels`` set, the
    directories deeper than that many levels keep what they hold, and so
    stay, as do the directories above them."""
    for entry in dax.scandir(top):
        if not entry.is_dir(follow_symlinks=False):
            dax.unlink(entry.path)
        elif levels is None or levels > 1:
            _remove_tree(dax, entry.path, None if levels is None else levels - 1)
        else:
            _rmdir_if_empty(dax, entry.path)
    if levels is None:
        dax.rmdir(top)
    else:
        _rmdir_if_empty(dax, top)


def _rmdir_if_empty(dax: FileSystem, path: str) -> None:
    try:
        dax.rmdir(path)
    except OSError as e:
        if e.errno != errno.ENOTEMPTY:
            raise


def _same_inode(dax: FileSystem, path: str, st: os.stat_result) -> bool:
    try:
        return dax.stat(path).st_ino == st.st_ino
    except (FileNotFoundError, NotADirectoryError):
        return False


def _data_runs(extents) -> list[tuple[int, int]]:
    """File ranges holding data: consecutive mapped extents merged, holes left out
    (so a copy writes each run at once and leaves holes unallocated)."""
    runs: list[list[int]] = []
    for e in extents:
        if e.kind != "mapped":
            continue
        if runs and runs[-1][1] == e.file_offset:
            runs[-1][1] += e.length
        else:
            runs.append([e.file_offset, e.file_offset + e.length])
    return [(s, e) for s, e in runs]


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
