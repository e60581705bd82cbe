"""fuse: a mounted pool served to the kernel through FUSE, for ordinary tools.

``DaxOperations`` is an mfusepy ``Operations`` over one daxfs.FileSystem;
``serve()`` runs the FUSE session until the mount goes away (``fusermount3
-u``, SIGINT, SIGTERM).  ``daxfs mount`` (cli/mount.py) owns the pool's
lifetime around it.

What FUSE changes, and why:

* Reads copy.  The kernel hands the server a buffer to fill, so every read
  is a copy out of the pool and a write copies the caller's bytes in; the
  zero-copy path (``fs.map``) exists only in the Python API.
* Open files are handles, not paths.  Each open/create puts the daxfs file
  object in a table keyed by the FUSE file handle, and I/O on a handle goes
  to its inode: a file renamed or unlinked while open keeps working, and
  the daxfs handle pins the inode (an unlinked file becomes an orphan that
  the last release frees, as in the Python API).  Like fileio.py, the
  handle I/O uses FileSystem's package-internal inode calls (``_pread``,
  ``_pwrite``, ...).
* Unlinking an open file.  libfuse's high-level API renames such a file to
  ``.fuse_hidden<16 hex digits>`` and unlinks that name at the last release;
  with its alternative (``hard_remove``) fstat of the open file fails with
  ESTALE.  So the hiding rename is honoured as what it means: daxfs unlinks
  the file at once (an orphan that no crash can leave behind as a name) and
  the hidden name is remembered as an alias of the inode, for the stat,
  truncate, chmod and times calls libfuse makes through it.  (Reopening
  such a file through /proc/PID/fd is not supported.)
* Caches: the kernel's attribute and negative-entry caches are off
  (timeouts 0).  Other processes may change the pool through the Python
  API at any time, and libfuse's path-based API gives every name of a
  hard-linked file its own kernel inode; with attribute caching on, either
  would show stale sizes and link counts for a second.  Tried with a 1 s
  attribute timeout: `find`, `cat` and `rm -r` of many small files ran
  about 2x faster, but even one process saw stale link counts (the
  mount-vs-tmpfs state machine found an open file whose fstat said nlink
  0 where tmpfs said 1, after its name was unlinked and made again), so
  caching waits for a server that addresses inodes, not paths.  FUSE's
  writeback cache is not used either: with it the kernel keeps its own
  size of a file over what the server reports while it holds the inode,
  so another process's append never showed (a size still 10 after the API
  made it 100), for 1.2x on `tar -x`.  Reads and writes already come in
  requests of 256 KiB and 1 MiB (libfuse 3.14's defaults: `dd bs=1M`
  makes one write request per MiB).  Names the kernel looked up are
  trusted for ENTRY_TIMEOUT (1 s): without that, every system call
  revalidated each component of its path with a request, so `cp -r` of
  a 1,500-level tree cost O(depth^2) requests per file and had not
  finished after five minutes (3 s now, with the FileSystem's path cache:
  each request's path is walked from its directory, not the root).  A
  trusted name costs little coherence here, because libfuse turns it
  back into a path that daxfs resolves anew: a name
  another process removed answers ENOENT, one it replaced names the new
  file.  File data still goes through the page cache, which the kernel
  drops on every open.
* Holes: lseek's SEEK_DATA and SEEK_HOLE come from the extent map, so
  sparse-aware tools skip them.
* The kernel applies the caller's umask before create and mkdir, so the
  FileSystem's own umask is set to 0 here and created files get the mode
  the caller asked for.
* Errors: every daxfs OSError becomes a FuseOSError with the same errno, so
  tools print the usual message ("Directory not empty", ...).
* Ownership: a new file gets the uid and gid of the process that asked
  (the request's, fuse_get_context), or the group of a setgid directory,
  and chown sets them (FileSystem.lchown).  Permissions: FUSE lets only
  the user who mounted in.  ``daxfs mount --allow-other`` lets others in
  and adds default_permissions, so the kernel checks every caller against
  the modes and owners getattr reports, as for a local file system (the
  server, like the library, checks nothing itself).
* FIFOs, device nodes and sockets: mknod makes them in the pool; the
  kernel does their I/O (a mount is nodev, so devices do not open).
* Not supported: extended attributes (EOPNOTSUPP), fallocate modes other
  than 0 (EOPNOTSUPP), rename with RENAME_EXCHANGE (EINVAL).  File locks
  are kept by the kernel.

mfusepy 3.1 drops three things libfuse 3 passes: the file handle of
ftruncate, the rename flags, and UTIME_NOW/UTIME_OMIT.  ``DaxFUSE`` keeps
them by overriding those three callbacks.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import posixpath
import re
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import mfusepy

from .fileio import DaxRawFile
from .fs import NO_ID, FileSystem, process_owner

log = logging.getLogger(__name__)

# renameat2(2) flags and the utimensat(2) markers libfuse passes in tv_nsec.
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
MAX_THREADS = 8  # FUSE worker threads; daxfs serialises calls anyway
# How long the kernel may trust a name it looked up (see the module docstring).
ENTRY_TIMEOUT = 1.0
# The name libfuse gives an open file it is asked to unlink (fuse.c, hidden_name).
HIDDEN_NAME = re.compile(r"\.fuse_hidden[0-9a-f]{16}\Z")


def fuse_errors(method: Callable) -> Callable:
    """Turn daxfs failures into FuseOSError with the same errno (EIO when the
    error carries none; EINVAL for the ValueErrors of bad arguments)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except mfusepy.FuseOSError:
            raise
        except OSError as e:
            raise mfusepy.FuseOSError(e.errno or errno.EIO) from e
        except ValueError as e:
            log.debug("%s: %s", method.__name__, e)
            raise mfusepy.FuseOSError(errno.EINVAL) from e

    return wrapper


def stat_attrs(st: os.stat_result) -> dict[str, int]:
    """A stat result as mfusepy's attribute dict (times in ns: use_ns)."""
    return {
        "st_mode": st.st_mode,
        "st_ino": st.st_ino,
        "st_nlink": st.st_nlink,
        "st_uid": st.st_uid,
        "st_gid": st.st_gid,
        "st_size": st.st_size,
        "st_blocks": st.st_blocks,
        "st_blksize": st.st_blksize,
        "st_atime": st.st_atime_ns,
        "st_mtime": st.st_mtime_ns,
        "st_ctime": st.st_ctime_ns,
        "st_rdev": st.st_rdev,
    }


def _type_bits(entry) -> int:
    """The S_IFMT bits of a daxfs DirEntry (all readdir may pass to the kernel)."""
    return entry.type_bits()


def _open_mode(flags: int) -> str:
    """The daxfs mode for open(2) flags.  Never "w" or "a": O_TRUNC is applied
    separately and O_APPEND offsets come from the kernel."""
    return "rb" if flags & os.O_ACCMODE == os.O_RDONLY else "r+b"


class DaxOperations(mfusepy.Operations):
    """FUSE callbacks over a mounted daxfs.FileSystem (see the module docstring)."""

    use_ns = True  # times as integer nanoseconds, daxfs's own unit

    def __init__(self, fs: FileSystem):
        self.fs = fs
        fs.umask = 0  # the kernel has applied the caller's umask already
        # ... and PATH_MAX to the path the caller passed: a relative one from
        # a working directory deep in the mount may name a file whose path
        # from the mount's root, which libfuse hands over, is longer.
        fs.path_max = None
        fs.creator = request_owner  # new files are the caller's, not the server's
        self._files: dict[int, DaxRawFile] = {}
        self._hidden: dict[str, int] = {}  # libfuse's hidden name -> inode (see above)
        self._files_lock = threading.Lock()
        self._next_fh = 1
        self.started = False  # set once the kernel has spoken to us (FUSE_INIT)

    # -- session -----------------------------------------------------------
    def init_with_config(self, conn_info, config_3) -> None:
        self.started = True
        if config_3 is not None:
            config_3.use_ino = 1  # st_ino is the daxfs inode number (find, cp -a, ls -i)
            config_3.attr_timeout = config_3.negative_timeout = 0.0
            config_3.entry_timeout = ENTRY_TIMEOUT

    def destroy(self, path: str) -> None:
        """The mount is gone: release what the kernel never released (a lazy or
        forced unmount), so the pool unmounts cleanly."""
        with self._files_lock:
            leftover, self._files = list(self._files.values()), {}
            self._hidden.clear()
        for raw in leftover:
            raw.close()

    # -- handles -----------------------------------------------------------
    def _register(self, raw: DaxRawFile) -> int:
        with self._files_lock:
            fh = self._next_fh
            self._next_fh += 1
            self._files[fh] = raw
        return fh

    def _file(self, fh: int) -> DaxRawFile:
        raw = self._files.get(fh)
        if raw is None:
            raise mfusepy.FuseOSError(errno.EBADF)
        return raw

    def _ino(self, fh: int) -> int:
        return self._file(fh)._ino

    def _open_inos(self) -> set[int]:
        with self._files_lock:
            return {raw._ino for raw in self._files.values()}

    def _hidden_ino(self, path: str | None) -> int | None:
        """The inode a libfuse hidden name stands for, if ``path`` is one."""
        return None if path is None else self._hidden.get(path)

    def _opened(self, path: str, mode: str, flags: int) -> int:
        raw = self.fs.open(path, mode, buffering=0)
        try:
            if flags & os.O_TRUNC:  # even with O_RDONLY, as Linux does
                self.fs._truncate_ino(raw._ino, 0)
        except BaseException:
            raw.close()
            raise
        return self._register(raw)

    @fuse_errors
    def open(self, path: str, flags: int) -> int:
        return self._opened(path, _open_mode(flags), flags)

    @fuse_errors
    def create(self, path: str, mode: int, flags: int) -> int:
        try:
            raw = self.fs.open(path, "x+b", buffering=0)
        except FileExistsError:
            # Someone created it since the kernel's lookup: plain open, as open(2).
            if flags & os.O_EXCL:
                raise
            return self._opened(path, "r+b", flags)
        fh = self._register(raw)
        self.fs.chmod(path, stat.S_IMODE(mode))
        return fh

    @fuse_errors
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.fs._pread(self._ino(fh), offset, size)

    @fuse_errors
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        self.fs._pwrite(self._ino(fh), offset, memoryview(data))
        return len(data)

    @fuse_errors
    def flush(self, path: str | None, fh: int) -> int:
        # Every close(2) of a descriptor: make its writes and times durable,
        # as closing a daxfs file does.
        self.fs._flush_ino(self._ino(fh))
        return 0

    @fuse_errors
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        self.fs._fsync_ino(self._ino(fh))  # (lazy mode: a group commit)
        return 0

    @fuse_errors
    def release(self, path: str | None, fh: int) -> int:
        with self._files_lock:
            raw = self._files.pop(fh, None)
            if raw is not None and all(f._ino != raw._ino for f in self._files.values()):
                # The inode's last handle: its hidden alias (if any) dies with it.
                for name in [n for n, ino in self._hidden.items() if ino == raw._ino]:
                    del self._hidden[name]
        if raw is not None:
            raw.close()  # unpins; frees the inode if it was an unlinked orphan
        return 0

    @fuse_errors
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        ino = self._ino(fh) if fh in self._files else self._hidden_ino(path)
        if ino is not None:
            self.fs._truncate_ino(ino, length)
        else:
            self.fs.truncate(path, length)
        return 0

    @fuse_errors
    def lseek(self, path: str | None, offset: int, whence: int, fh: int) -> int:
        """SEEK_DATA and SEEK_HOLE from the extent map, so that cp, tar
        --sparse and rsync skip holes (a 2^62-byte file with no blocks is
        copied in an instant, not read as zeroes); the kernel answers the
        other whences itself."""
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise mfusepy.FuseOSError(errno.EINVAL)
        return self.fs._seek_data(self._ino(fh), offset, hole=whence == os.SEEK_HOLE)

    @fuse_errors
    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        # daxfs fallocate is posix_fallocate (mode 0); glibc falls back to
        # writing zeroes on EOPNOTSUPP.  It is by path, so an unlinked file
        # cannot take it.
        if mode != 0 or path is None or path in self._hidden:
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
        self.fs.fallocate(path, offset, size)
        return 0

    # -- attributes --------------------------------------------------------
    @fuse_errors
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if fh in self._files:
            attrs = stat_attrs(self._stat_ino(self._ino(fh)))
        else:
            attrs = stat_attrs(self._lstat(path))
        if path is not None and path in self._hidden:
            # libfuse takes one off st_nlink for a hidden node, counting its
            # hidden name as a link; daxfs already unlinked that name, so
            # give it back (else a file still linked elsewhere shows 0).
            attrs["st_nlink"] += 1
        return attrs

    def _stat_ino(self, ino: int) -> os.stat_result:
        fs = self.fs
        with fs._locked(exclusive=False):
            return fs._stat_result(fs._inode(ino))

    def _lstat(self, path: str) -> os.stat_result:
        ino = self._hidden_ino(path)
        return self.fs.lstat(path) if ino is None else self._stat_ino(ino)

    def _update_inode(self, path: str, update: Callable[[Any], None]) -> None:
        """One atomic attribute change to the inode ``path`` names (a final
        symlink itself, not its target) or that its hidden alias stands for."""
        fs, ino = self.fs, self._hidden_ino(path)
        with fs._change():
            inode = fs._inode(ino if ino is not None else fs._existing(path, follow=False).ino)
            update(inode)
            inode.ctime = time.time_ns()
            fs._txn_dirty.add(inode.ino)

    @fuse_errors
    def chmod(self, path: str, mode: int) -> int:
        def set_mode(inode) -> None:
            inode.mode = (inode.mode & ~0o7777) | (mode & 0o7777)

        self._update_inode(path, set_mode)
        return 0

    @fuse_errors
    def chown(self, path: str, uid: int, gid: int) -> int:
        # (The kernel asks for the entry itself: a symlink's own owner.)
        self.fs.lchown(path, -1 if uid == NO_ID else uid, -1 if gid == NO_ID else gid)
        return 0

    @fuse_errors
    def utimens(self, path: str, times: tuple[int | None, int | None] | None = None) -> int:
        """Set (atime, mtime) in ns; None leaves that time as it is (UTIME_OMIT).
        Symlinks get their own times (the kernel asks this for lutimes)."""
        now = time.time_ns()
        atime, mtime = times if times is not None else (now, now)

        def set_times(inode) -> None:
            inode.atime = inode.atime if atime is None else atime
            inode.mtime = inode.mtime if mtime is None else mtime

        self._update_inode(path, set_times)
        return 0

    @fuse_errors
    def statfs(self, path: str) -> dict[str, int]:
        v = self.fs.statvfs()
        return {
            "f_bsize": v.f_bsize,
            "f_frsize": v.f_frsize,
            "f_blocks": v.f_blocks,
            "f_bfree": v.f_bfree,
            "f_bavail": v.f_bavail,
            "f_files": v.f_files,
            "f_ffree": v.f_ffree,
            "f_favail": v.f_favail,
            "f_namemax": v.f_namemax,
        }

    # -- namespace ---------------------------------------------------------
    @fuse_errors
    def readdir(self, path: str, fh: int) -> list:
        # "." and ".." need their inode numbers: readdir(3) skips d_ino 0.
        dots = [
            (name, {"st_mode": stat.S_IFDIR, "st_ino": self.fs.lstat(where).st_ino}, 0)
            for name, where in ((".", path), ("..", posixpath.dirname(path)))
        ]
        with self.fs.scandir(path) as entries:
            listed = [(e.name, {"st_mode": _type_bits(e), "st_ino": e.inode()}, 0) for e in entries]
        return dots + listed

    @fuse_errors
    def readlink(self, path: str) -> str:
        return self.fs.readlink(path)

    @fuse_errors
    def mkdir(self, path: str, mode: int) -> int:
        self.fs.mkdir(path, mode)
        return 0

    @fuse_errors
    def mknod(self, path: str, mode: int, dev: int) -> int:
        # FIFOs, devices and sockets (mkfifo, mknod, a unix socket's bind):
        # the kernel does their I/O; the pool keeps the name and attributes.
        self.fs.mknod(path, mode, dev)
        return 0

    @fuse_errors
    def rmdir(self, path: str) -> int:
        self.fs.rmdir(path)
        return 0

    @fuse_errors
    def unlink(self, path: str) -> int:
        with self._files_lock:
            alias = self._hidden.pop(path, None)
        if alias is None:  # a hidden alias's inode is an orphan already
            self.fs.unlink(path)
        return 0

    @fuse_errors
    def symlink(self, target: str, source: str) -> int:
        # mfusepy's naming: ``target`` is the new link's path, ``source`` what it points to.
        self.fs.symlink(source, target)
        return 0

    @fuse_errors
    def link(self, target: str, source: str) -> int:
        # ``target`` is the new name, ``source`` the existing file.
        self.fs.link(source, target)
        return 0

    @fuse_errors
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags == 0 and self._hide(old, new):
            return 0
        if flags & RENAME_EXCHANGE or flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise mfusepy.FuseOSError(errno.EINVAL)
        if flags & RENAME_NOREPLACE:
            # The existence check and the rename under one exclusive pool lock,
            # so no one can create ``new`` in between.
            with self.fs._locked(exclusive=True):
                if self.fs.exists(new) or self.fs.islink(new):
                    raise mfusepy.FuseOSError(errno.EEXIST)
                self.fs.rename(old, new)
            return 0
        self.fs.rename(old, new)
        return 0

    def _hide(self, old: str, new: str) -> bool:
        """libfuse hiding an open file it was asked to unlink: unlink it in
        daxfs (the open handles keep the orphan) and alias the hidden name to
        its inode.  False when this is an ordinary rename."""
        if not HIDDEN_NAME.match(posixpath.basename(new)):
            return False
        fs = self.fs
        with fs._locked(exclusive=True):  # no change by anyone between the checks and the unlink
            st = fs.lstat(old)
            if stat.S_ISDIR(st.st_mode) or st.st_ino not in self._open_inos() or fs.islink(new):
                return False
            if fs.exists(new):
                return False
            fs.unlink(old)
        with self._files_lock:
            self._hidden[new] = st.st_ino
        return True


def _time_ns(ts) -> int | None:
    """A timespec from libfuse as ns; UTIME_NOW is now, UTIME_OMIT is None."""
    if ts.tv_nsec == UTIME_OMIT:
        return None
    if ts.tv_nsec == UTIME_NOW:
        return time.time_ns()
    return ts.tv_sec * 10**9 + ts.tv_nsec


class DaxFUSE(mfusepy.FUSE):
    """mfusepy's FUSE keeping what its libfuse 3 callbacks drop (see the module
    docstring).  Like FUSE, constructing it runs the session."""

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    def truncate_fuse_3(self, path, length, fip) -> int:
        fh = fip.contents.fh if fip else None
        return self.operations.truncate(self._path(path), length, fh)

    def rename_fuse_3(self, old, new, flags) -> int:
        return self.operations.rename(self._path(old), self._path(new), flags)

    def lseek_fuse_3(self, path, offset, whence, fip) -> int:
        # mfusepy 3.1 has the libfuse slot but no wrapper for it.
        return self.operations.lseek(self._path(path), offset, whence, fip.contents.fh)

    def utimens_fuse_3(self, path, buf, fip) -> int:
        times = None
        if buf:
            times = (_time_ns(buf.contents.actime), _time_ns(buf.contents.modtime))
        return self.operations.utimens(self._path(path), times)


class MountError(RuntimeError):
    """libfuse could not mount (it prints its own reason on stderr)."""


def _escape_option(value: str) -> str:
    """A value inside libfuse's comma-separated -o list."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def request_owner() -> tuple[int, int]:
    """The (uid, gid) of the process whose request is being served; the
    server's own outside a request."""
    try:
        uid, gid, _pid = mfusepy.fuse_get_context()
    except ValueError:  # (no request: a NULL context)
        return process_owner()
    return uid, gid


def serve(
    fs: FileSystem,
    mountpoint: str,
    *,
    foreground: bool,
    readonly: bool,
    pool_name: str,
    allow_other: bool = False,
) -> DaxOperations:
    """Mount ``fs`` at ``mountpoint`` and serve it until unmounted.  Without
    ``foreground`` libfuse forks once the mount exists: the parent exits
    (status 0) and the child serves.  ``allow_other``: users other than the
    one mounting may use it, and the kernel checks everyone's permissions
    on the modes and owners getattr reports (default_permissions).
    Returns the operations object (its ``started`` tells whether the kernel
    ever connected); raises MountError when the mount could not be made."""
    ops = DaxOperations(fs)
    if not fs.readonly and readonly:
        raise ValueError("a read-only FUSE mount needs a read-only FileSystem")
    options: dict[str, Any] = {
        "fsname": "daxfs:" + _escape_option(pool_name),
        "subtype": "daxfs",
        "foreground": foreground,
        # Explicit: libfuse 3.14 warns about its own default for idle threads.
        "max_threads": MAX_THREADS,
        "max_idle_threads": MAX_THREADS,
    }
    if readonly:
        options["ro"] = True  # the kernel itself answers EROFS
    if allow_other:
        options["allow_other"] = True
        # The kernel checks permissions as for a local file system (read,
        # write, search, sticky directories, chmod, chown and utime by
        # non-owners) on what getattr reports, fresh each time (attribute
        # caching is off).  Only here: it asks for every component of
        # every path, so a 1,500-level tree costs O(depth^2) requests
        # (cp -r of one: 3 s without, over 3 minutes with).
        options["default_permissions"] = True
    try:
        DaxFUSE(ops, mountpoint, **options)
    except RuntimeError as e:
        # libfuse reports a session ended by a signal with a non-zero status
        # too; only a session that never started is a failure to mount.
        if not ops.started:
            raise MountError(f"FUSE mount failed (libfuse status {e})") from None
    return ops
