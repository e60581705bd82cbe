"""casefold_fuse: a case-insensitive, case-preserving passthrough file system.

A test fixture standing in for the destinations that fold case (vfat, NTFS,
SMB shares, APFS, ext4 with casefold), which this kernel cannot make
(no CONFIG_UNICODE).  It serves a backing directory through FUSE:

* A lookup folds each name with ``str.casefold`` and matches it against the
  backing directory's entries, so ``/F`` and ``/f`` name one entry.
* create, mkdir and symlink keep the caller's case, and the kernel's own
  lookup before them gives EEXIST for a name that folds to an existing one,
  so the backing never holds two names that fold alike.
* Symlink targets are passed through verbatim: an absolute target leads out
  of the mount, as on a real file system.
* ``st_ino`` is the backing file's (``use_ino``), so every spelling of a
  name shows one inode, as a real case-folding file system does.
* The kernel's entry and attribute caches are off, so a name created under
  one case is seen at once under every other.

Run ``python casefold_fuse.py BACKING MOUNTPOINT``: it serves in the
foreground until ``fusermount3 -u MOUNTPOINT`` (or SIGTERM).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import mfusepy


def _attrs(st: os.stat_result) -> dict[str, Any]:
    names = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
    attrs: dict[str, Any] = {name: getattr(st, name) for name in names}
    attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
    return attrs


class CaseFold(mfusepy.Operations):
    """Passthrough to ``backing`` with case-folded lookups."""

    use_ns = True

    def __init__(self, backing: str):
        self.backing = os.path.realpath(backing)

    # -- names ---------------------------------------------------------------
    def _match(self, directory: str, name: str) -> str:
        """The backing entry of ``directory`` that ``name`` folds to, else
        ``name`` itself (a new entry keeps the caller's case)."""
        if os.path.lexists(os.path.join(directory, name)):
            return name
        folded = name.casefold()
        try:
            entries = os.listdir(directory)
        except OSError:
            return name
        return next((e for e in entries if e.casefold() == folded), name)

    def _real(self, path: str) -> str:
        # The kernel resolves symlinks itself: every component before the
        # last is a directory here, so the backing path has no symlink in it.
        real = self.backing
        for name in (n for n in path.split("/") if n):
            real = os.path.join(real, self._match(real, name))
        return real

    # -- session -------------------------------------------------------------
    def init_with_config(self, conn_info, config_3) -> None:
        if config_3 is not None:
            config_3.use_ino = 1
            config_3.entry_timeout = config_3.attr_timeout = config_3.negative_timeout = 0.0

    # -- attributes ----------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if fh is not None:
            return _attrs(os.fstat(fh))
        return _attrs(self._passthrough(os.lstat, self._real(path or "/")))

    def chmod(self, path: str, mode: int) -> int:
        self._passthrough(os.chmod, self._real(path), mode & 0o7777)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self._passthrough(os.chown, self._real(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        real = self._real(path)
        self._passthrough(os.utime, real, ns=times, follow_symlinks=False)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None:
            self._passthrough(os.ftruncate, fh, length)
        else:
            self._passthrough(os.truncate, self._real(path or "/"), length)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        v = self._passthrough(os.statvfs, self._real(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")
        return {k: getattr(v, k) for k in (*keys, "f_favail", "f_namemax")}

    # -- namespace -----------------------------------------------------------
    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # With use_ino each entry needs its inode: readdir(3) skips d_ino 0.
        real = self._real(path)
        dots = [
            (name, self._passthrough(os.lstat, os.path.join(real, name))) for name in (".", "..")
        ]
        with self._passthrough(os.scandir, real) as it:
            listed = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        return [(n, {"st_mode": st.st_mode, "st_ino": st.st_ino}, 0) for n, st in dots + listed]

    def readlink(self, path: str) -> str:
        return self._passthrough(os.readlink, self._real(path))

    def mkdir(self, path: str, mode: int) -> int:
        self._passthrough(os.mkdir, self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        self._passthrough(os.rmdir, self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        self._passthrough(os.unlink, self._real(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        # mfusepy's naming: ``target`` is the new link, ``source`` its text.
        self._passthrough(os.symlink, source, self._real(target))
        return 0

    def rename(self, old: str, new: str) -> int:
        self._passthrough(os.rename, self._real(old), self._real(new))
        return 0

    # -- files ---------------------------------------------------------------
    def create(self, path: str, mode: int, flags: int) -> int:
        flags |= os.O_CREAT | os.O_NOFOLLOW
        return self._passthrough(os.open, self._real(path), flags, mode)

    def open(self, path: str, flags: int) -> int:
        return self._passthrough(os.open, self._real(path), flags | os.O_NOFOLLOW)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self._passthrough(os.pread, fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self._passthrough(os.pwrite, fh, data, offset)

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        os.close(fh)
        return 0

    # -- errors --------------------------------------------------------------
    @staticmethod
    def _passthrough(call, *args, **kwargs):
        """``call`` with an OSError passed to the kernel as its errno."""
        try:
            return call(*args, **kwargs)
        except OSError as e:
            raise mfusepy.FuseOSError(e.errno or errno.EIO) from None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: casefold_fuse.py BACKING MOUNTPOINT", file=sys.stderr)
        return 2
    backing, mountpoint = argv
    mfusepy.FUSE(CaseFold(backing), mountpoint, foreground=True, nothreads=True, fsname="casefold")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
