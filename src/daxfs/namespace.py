"""namespace: the FileSystem calls that add, remove and move names.

NamespacePath is the part of FileSystem that changes directories (mkdir,
rmdir, unlink, link, symlink, mkfifo, mknod, rename); it is a mixin, as data.py's
DataPath is, so that fs.py keeps the call protocol, lookups and handles.
Create, unlink and rename are optimistic changes when another process
shares the pool (coherence.Change): they edit directories through
fs._edit_dir and read parents through fs._parent_inode, so that others'
edits of the same directory are rebased on, not a conflict.
"""

from __future__ import annotations

import errno
import os
import stat

from .coherence import optimistically
from .journal import Transaction
from .layout import DEVICE_TYPES, MAX_MAJOR, MAX_MINOR, SPECIAL_TYPES, CorruptionError
from .listing import MetOnce
from .path import DIR_T, LNK_T, PATH_MAX, ROOT_INO, Resolved, oserror, to_str

S_IFDIR, S_IFLNK = stat.S_IFDIR, stat.S_IFLNK

# Names _unlink_names removes in one change.  A change's locks, catching
# up and record are paid once a batch; a bigger batch pays more for
# Transaction.write's search of the last writes for one to patch, which
# grows with the record up to PATCH_WINDOW writes.  Per 4 KiB file, 5,000
# in one directory (2026-12-05): 36.4 us a batch of 1, 20.2 of 4, 16.6
# of 8, 15.8 of 16, 16.9 of 32, 18.9 of 128.
UNLINK_BATCH = 16


class NamespacePath:
    """Names: make, remove, link and move them."""

    def mkdir(self, path, mode: int = 0o777) -> None:
        optimistically(self, self._mkdir, to_str(path), mode)

    def _mkdir(self, spath: str, mode: int) -> None:
        with self._change() as txn:
            r = self._entry(spath)
            if r.ino is not None:
                raise oserror(errno.EEXIST, spath)
            self._create(txn, r, S_IFDIR | (mode & 0o7777 & ~self.umask), spath)
            self._add_links(self._parent_inode(r.parent), 1)  # type: ignore[arg-type]

    def makedirs(self, path, mode: int = 0o777, exist_ok: bool = False) -> None:
        """os.makedirs: the missing ancestors first (each as with exist_ok),
        found by a loop rather than recursion, since a tree has no depth limit."""
        spath = to_str(path)
        if exist_ok and self.isdir(spath):
            # Asked again and again (each zarr store a dask task unpickles
            # makes its root): a look under the shared lock, where a mkdir
            # that fails with EEXIST is a change, checked under the
            # exclusive one.
            return
        for ancestor in reversed(self._missing_ancestors(spath)):
            self._mkdir_exist_ok(ancestor, mode)
        try:
            self.mkdir(spath, mode)
        except OSError:
            if not exist_ok or not self.isdir(spath):
                raise

    def _missing_ancestors(self, spath: str) -> list[str]:
        """The ancestors of ``spath`` that do not exist, deepest first."""
        missing = []
        head, _, tail = spath.rstrip("/").rpartition("/")
        while head and tail and not self.exists(head):
            missing.append(head)
            head, _, tail = head.rstrip("/").rpartition("/")
        return missing

    def _mkdir_exist_ok(self, spath: str, mode: int) -> None:
        try:
            self.mkdir(spath, mode)
        except OSError:
            if not self.isdir(spath):
                raise

    def rmdir(self, path) -> None:
        spath = to_str(path)
        with self._change() as txn:
            r = self._existing(spath, follow=False, entry=True)
            if r.name is None:  # Linux's errno for "/", "." and ".."
                code = {"root": errno.EBUSY, "dot": errno.EINVAL, "dotdot": errno.ENOTEMPTY}
                raise oserror(code[r.last], spath)
            if r.ftype != DIR_T:
                raise oserror(errno.ENOTDIR, spath)
            if len(self._dir(r.ino)):  # type: ignore[arg-type]
                raise oserror(errno.ENOTEMPTY, spath)
            self._dir(r.parent).remove(r.name, txn)
            parent = self._inode(r.parent)
            parent.nlink -= 1
            self._touch(parent)
            self._drop_link(txn, self._inode(r.ino))  # type: ignore[arg-type]

    def unlink(self, path) -> None:
        spath = to_str(path)
        if not self._unlink_said(spath):  # (logical.py)
            optimistically(self, self._unlink, spath)
        self._consolidate()

    def _unlink(self, spath: str) -> None:
        with self._change() as txn:
            r = self._existing(spath, follow=False, entry=True)
            if r.ftype == DIR_T:
                raise oserror(errno.EISDIR, spath)
            if r.trailing_slash:
                raise oserror(errno.ENOTDIR, spath)
            self._edit_dir(r.parent).remove(r.name, txn)  # type: ignore[arg-type]
            self._touch_dir(self._parent_inode(r.parent))
            self._drop_link(txn, self._inode(r.ino))  # type: ignore[arg-type]

    remove = unlink

    def _unlink_names(self, directory, names) -> list[tuple[str, int]]:
        """What ``unlinkat(fd, name)`` for each of ``names`` in turn would do,
        ``fd`` the directory ``directory`` open: what rm -r does to the
        files of a directory (rmtree, fsspec's rm, zarr's delete_dir),
        UNLINK_BATCH names to a change, so that a change's locks, catching
        up and record are paid once a batch instead of once a name.  The
        directory is looked up once a batch: as with rm -r's open
        directory, a name removed from the way to it (a symlink) does not
        stop the others.  A name that is missing or a directory is left,
        and returned as (name, errno) in order, for the caller to report or
        to walk into; symlinks are removed, not followed.  The names are
        single components (ValueError otherwise, before any is removed)."""
        sdir = to_str(directory)
        names = [to_str(name) for name in names]
        for name in names:
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise ValueError(f"not a name in a directory: {name!r}")
        left: list[tuple[str, int]] = []
        for i in range(0, len(names), UNLINK_BATCH):
            batch = names[i : i + UNLINK_BATCH]
            if not self._unlink_names_said(sdir, batch):  # (logical.py)
                left += optimistically(self, self._unlink_batch, sdir, batch)
            self._consolidate()
        return left

    def rmtree(self, path) -> None:
        """shutil.rmtree: the directory ``path`` and everything below it.
        Symlinks inside are removed, never followed; ``path`` itself must be
        a directory, not a symlink to one (NotADirectoryError, where
        shutil's error has no errno), nor the root (EBUSY), nor end in "."
        or ".." (EINVAL).  A loop, not recursion, so a tree of
        any depth goes; each directory's files go several to a change
        (_unlink_names).  A directory met twice (a damaged pool) is
        CorruptionError, with what was removed before it gone."""
        spath = to_str(path)
        if spath.rstrip("/").rsplit("/", 1)[-1] in (".", ".."):
            raise oserror(errno.EINVAL, spath)  # (as rmdir: not a name to remove)
        st = self.lstat(spath)
        if not stat.S_ISDIR(st.st_mode):
            raise oserror(errno.ENOTDIR, spath)
        if st.st_ino == ROOT_INO:
            raise oserror(errno.EBUSY, spath)  # (refused before anything goes)
        self._remove_tree(spath, None)

    def _remove_tree(self, top: str, levels: int | None) -> None:
        """rm -r of ``top`` without following symlinks; with ``levels`` set,
        the directories deeper than that many levels keep what they hold,
        and so stay, as do the directories above them (fsspec's maxdepth).

        Depth first with a stack: a directory is emptied when first taken
        and removed when taken again, after what it held; its files go
        first, several to a change.  Errors name the directory they met."""
        met = MetOnce()
        stack: list[tuple[str, int | None, bool]] = [(top, levels, False)]
        while stack:
            path, left, emptied = stack.pop()
            if emptied:
                if left is None:
                    self.rmdir(path)
                else:
                    self._rmdir_if_empty(path)
                continue
            stack.append((path, left, True))
            try:
                entries = list(self.scandir(path))
            except OSError as e:  # (damage deep in the pool may not say where)
                if e.filename is None:
                    e.filename = path
                raise
            dirs, files = [], []
            for entry in entries:
                (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry)
            kept = self._unlink_names(path, [entry.name for entry in files])
            if kept:  # (gone or made a directory meanwhile: as its unlink would say)
                raise oserror(kept[0][1], path.rstrip("/") + "/" + kept[0][0])
            for entry in dirs:
                if left is None or left > 1:
                    met.check(entry)
                    stack.append((entry.path, None if left is None else left - 1, False))
                else:
                    self._rmdir_if_empty(entry.path)

    def _rmdir_if_empty(self, path: str) -> None:
        try:
            self.rmdir(path)
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise

    def _unlink_batch(self, sdir: str, names: list[str]) -> list[tuple[str, int]]:
        """One change of _unlink_names: each name as _unlink's body would
        remove it, its entry looked up as a walk's last step is (_lookup:
        checked, and recorded by an optimistic change)."""
        left: list[tuple[str, int]] = []
        with self._change() as txn:
            r = self._existing(sdir)
            if r.ftype != DIR_T:
                raise oserror(errno.ENOTDIR, sdir)
            d, removed = self._edit_dir(r.ino), False  # type: ignore[arg-type]
            for name in names:
                found = self._lookup(r.ino, name)  # type: ignore[arg-type]
                if found is None or found[1] == DIR_T:
                    left.append((name, errno.ENOENT if found is None else errno.EISDIR))
                    continue
                d.remove(name, txn)
                self._drop_link(txn, self._inode(found[0]))
                removed = True
            if removed:
                self._touch_dir(self._parent_inode(r.ino))  # type: ignore[arg-type]
        return left

    def link(self, src, dst) -> None:
        ssrc, sdst = to_str(src), to_str(dst)
        with self._change() as txn:
            s = self._existing(ssrc, follow=False)
            d = self._entry(sdst)
            if d.ino is not None or d.name is None:  # EEXIST before EPERM, as Linux
                raise oserror(errno.EEXIST, ssrc, sdst)
            if d.trailing_slash:  # a new name ending in "/" asks for a directory
                raise oserror(errno.ENOENT, ssrc, sdst)
            if s.ftype == DIR_T:
                raise oserror(errno.EPERM, ssrc, sdst)
            dparent = self._inode(d.parent)
            if dparent.nlink == 0:
                raise oserror(errno.ENOENT, ssrc, sdst)
            inode = self._inode(s.ino)  # type: ignore[arg-type]
            self._dir(d.parent).add(
                d.name,
                inode.ino,
                s.ftype,
                txn,  # type: ignore[arg-type]
                self._dir_block_adder(dparent),
            )
            inode.nlink += 1
            self._touch(inode, data=False)
            self._touch_dir(dparent)

    def symlink(self, target, path) -> None:
        starget, spath = to_str(target), to_str(path)
        if not starget:
            raise oserror(errno.ENOENT, starget, spath)
        if len(starget.encode("utf-8", "surrogateescape")) >= PATH_MAX:
            raise oserror(errno.ENAMETOOLONG, starget, spath)
        with self._change() as txn:
            r = self._entry(spath)
            if r.ino is not None or r.name is None:
                raise oserror(errno.EEXIST, starget, spath)
            if r.trailing_slash:
                raise oserror(errno.ENOENT, starget, spath)
            inode = self._create(txn, r, S_IFLNK | 0o777, spath)
            raw = starget.encode("utf-8", "surrogateescape")
            self._write_piece(txn, inode, 0, memoryview(raw))

    def mkfifo(self, path, mode: int = 0o666) -> None:
        """os.mkfifo: a FIFO named ``path``.  The pool keeps its name and
        attributes; the pipe itself is the kernel's, through a mount
        (``daxfs mount``): opening one through this API is ENXIO."""
        self.mknod(path, stat.S_IFIFO | (mode & 0o7777))

    def mknod(self, path, mode: int = 0o600, device: int = 0) -> None:
        """os.mknod: a regular file, FIFO, character or block device, or socket
        (the type from ``mode``, a regular file if it has none), with the
        permission bits less the umask.  ``device`` (os.makedev) for a
        device node: a major below 4096 and a minor below 2**20, what Linux
        keeps in 32 bits.  The API lets whoever opens the pool make any,
        as it gives them every right (no CAP_MKNOD: README, "A FUSE mount
        for ordinary tools"); a mount serves them nodev, as FUSE mounts
        are by default."""
        spath = to_str(path)
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == S_IFDIR:
            raise oserror(errno.EPERM, spath)  # (as Linux: mkdir makes those)
        if kind not in SPECIAL_TYPES and kind != stat.S_IFREG:
            raise oserror(errno.EINVAL, spath)
        rdev = _device_number(device, spath) if kind in DEVICE_TYPES else 0
        optimistically(self, self._mknod, spath, kind | (mode & 0o7777), rdev)

    def _mknod(self, spath: str, mode: int, rdev: int) -> None:
        with self._change() as txn:
            r = self._entry(spath)
            if r.ino is not None or r.name is None:
                raise oserror(errno.EEXIST, spath)
            if r.trailing_slash:
                raise oserror(errno.ENOENT, spath)
            inode = self._create(txn, r, mode & ~(self.umask & 0o777), spath)
            inode.rdev = rdev

    def readlink(self, path) -> str:
        return self._query(self._link_target, to_str(path))

    def _link_target(self, spath: str) -> str:
        r = self._existing(spath, follow=False)
        if r.ftype != LNK_T:
            raise oserror(errno.EINVAL, spath)
        return self._readlink_ino(r.ino)  # type: ignore[arg-type]

    def rename(self, src, dst) -> None:
        """Atomically rename, replacing an existing target as os.rename does on POSIX."""
        optimistically(self, self._rename_change, to_str(src), to_str(dst))

    replace = rename

    def _rename_change(self, ssrc: str, sdst: str) -> None:
        with self._change() as txn:
            # Both parents resolve before the source must exist, as in Linux.
            s = self._entry(ssrc)
            d = self._entry(sdst)
            if s.name is None or d.name is None:  # "/", "." or "..": before ENOENT, as Linux
                raise oserror(errno.EBUSY, ssrc, sdst)
            if s.ino is None:
                raise oserror(errno.ENOENT, ssrc)
            # Linux's order: trailing slashes, then ancestry, then "same file".
            src_is_dir = s.ftype == DIR_T
            if src_is_dir:
                self._check_not_inside(s.ino, d.parent, ssrc, sdst)  # type: ignore[arg-type]
            elif s.trailing_slash or d.trailing_slash:
                raise oserror(errno.ENOTDIR, ssrc, sdst)
            if d.ino is not None and d.ftype == DIR_T:
                # A target that is an ancestor of the source is not empty (Linux
                # says so before comparing file types).
                self._check_not_inside(
                    d.ino,
                    s.parent,
                    ssrc,
                    sdst,  # type: ignore[arg-type]
                    errno.ENOTEMPTY,
                )
            if d.ino == s.ino:
                return
            if d.ino is not None:
                self._check_replaceable(s, d, ssrc, sdst)
            self._rename(txn, s, d)

    def _check_not_inside(
        self, src_ino: int, dst_parent: int, ssrc: str, sdst: str, code: int = errno.EINVAL
    ) -> None:
        x, seen = dst_parent, set()
        while True:
            if x == src_ino:
                raise oserror(code, ssrc, sdst)
            if x == ROOT_INO:
                return
            if x in seen:  # parent fields in a cycle that never reaches the root
                raise CorruptionError(f"directory {x}: its parents never reach the root")
            seen.add(x)
            x = self._parent_of(x)

    def _check_replaceable(self, s: Resolved, d: Resolved, ssrc: str, sdst: str) -> None:
        if s.ftype == DIR_T:
            if d.ftype != DIR_T:
                raise oserror(errno.ENOTDIR, ssrc, sdst)
            if len(self._dir(d.ino)):  # type: ignore[arg-type]
                raise oserror(errno.ENOTEMPTY, ssrc, sdst)
        elif d.ftype == DIR_T:
            raise oserror(errno.EISDIR, ssrc, sdst)

    def _rename(self, txn: Transaction, s: Resolved, d: Resolved) -> None:
        moving = self._inode(s.ino)  # type: ignore[arg-type]
        sparent, dparent = self._parent_inode(s.parent), self._parent_inode(d.parent)  # type: ignore[arg-type]
        if dparent.nlink == 0:
            raise oserror(errno.ENOENT)
        ddir = self._edit_dir(d.parent)
        if d.ino is not None:
            ddir.retarget(d.name, moving.ino, s.ftype, txn)  # type: ignore[arg-type]
            victim = self._inode(d.ino)
            if victim.is_dir:
                dparent.nlink -= 1
                self._txn_dirty.add(dparent.ino)
            self._drop_link(txn, victim)
        else:
            adder = self._dir_block_adder(dparent)
            ddir.add(d.name, moving.ino, s.ftype, txn, adder)  # type: ignore[arg-type]
        self._edit_dir(s.parent).remove(s.name, txn)  # type: ignore[arg-type]
        if moving.is_dir and s.parent != d.parent:
            sparent.nlink -= 1
            dparent.nlink += 1
            moving.parent = d.parent
            self._txn_dirty.update((sparent.ino, dparent.ino))
        self._touch(moving, data=False)
        self._touch_dir(sparent)
        self._touch_dir(dparent)


def _device_number(device: int, spath: str) -> int:
    """``device`` as an inode keeps it: EINVAL past 12 bits of major or 20 of
    minor (Linux's own limit for a device number in 32 bits)."""
    try:
        major, minor = os.major(device), os.minor(device)
    except (OverflowError, ValueError, TypeError) as e:
        raise oserror(errno.EINVAL, spath) from e
    if major > MAX_MAJOR or minor > MAX_MINOR:
        raise oserror(errno.EINVAL, spath)
    return os.makedev(major, minor)
