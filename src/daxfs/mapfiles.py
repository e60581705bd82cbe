"""mapfiles: the FileSystem calls that map files into the process.

MapPath is the part of FileSystem that plans a mapping (mapping.py maps
it): it asks the file system for the block map, allocating a file's
space first when it is to be written, pins the ranges so that they are
never freed under a live mapping, and frees an unlinked file once its last
mapping is gone.  A mixin, as data.py's DataPath is.
"""

from __future__ import annotations

import errno
import functools
import stat
import warnings
from collections.abc import Callable

from .hugemap import eligible_total
from .inode import Inode
from .layout import CorruptionError
from .mapping import MODES, Mapping, MapPlan, device_span
from .path import DIR_T, SPECIAL_T, oserror, to_str
from .pins import SLOT_PIN, RangePins

S_IFREG = stat.S_IFREG


class MapPath:
    """Mapping files: plans, pins, and orphans freed once unmapped."""

    def map(
        self,
        path,
        mode: str = "r",
        *,
        offset: int = 0,
        length: int | None = None,
        size: int | None = None,
    ) -> Mapping:
        """Map [offset, offset+length) of a file (default: to its end) zero-copy.

        Modes as numpy.memmap's: "r" read-only; "r+" read-write (holes are
        allocated first); "w+" create the file or resize it to ``size``, all of
        it allocated; "c" copy-on-write (stores stay in this process).  The
        extents stay pinned until the Mapping is closed: unlink defers freeing,
        truncate into them raises EBUSY."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "w+" and size is None:
            raise ValueError("mode 'w+' needs a size")
        spath = to_str(path)
        writable = mode in ("r+", "w+")
        if writable and self.readonly:
            raise oserror(errno.EROFS, spath)
        if offset < 0 or (length is not None and length < 0) or (size is not None and size < 0):
            raise oserror(errno.EINVAL, spath)
        pins = self._map_pins(writable)
        try:
            plan = self._plan_map(spath, mode, offset, length, size, pins)
            return Mapping(self, spath, mode, plan, pins)
        except BaseException:
            pins.release()
            raise

    def _map_pins(self, writable: bool) -> RangePins:
        """What a new Mapping pins its file with (a follower's: its lease)."""
        return RangePins(self.region.path, writable=writable)

    def _plan_map(
        self,
        spath: str,
        mode: str,
        offset: int,
        length: int | None,
        size: int | None,
        pins: RangePins,
    ) -> MapPlan:
        writable = mode in ("r+", "w+")
        with self._change() if writable else self._locked(exclusive=False) as txn:
            inode = self._map_target(txn, spath, mode, size)
            if length is None:
                length = max(0, inode.size - offset)
            if offset + length > inode.size:
                raise ValueError(
                    f"{spath}: mapping [{offset}, {offset + length}) "
                    f"exceeds the file size {inode.size}"
                )
            if writable and length:
                # Stores through the map go over the file's bytes unseen.
                self._confirm_in_place(inode, offset, offset + length)
                fresh = self._allocate(txn, inode, offset, length, inode.size)
                self._resize_zeroed(inode, fresh, inode.size)
                self._flush_ordered()  # (no check on bytes the map will change)
                self._txn_dirty.add(inode.ino)
            extents = inode.iomap(offset, length) if length else []
            for dev, n in device_span(extents):
                pins.pin(dev, n)
            pins.pin(self.inodes.slot_off(inode.ino), SLOT_PIN)
            return MapPlan(
                inode.ino, inode.generation, inode.size, inode.btime, offset, length, extents
            )

    def _map_target(self, txn, spath: str, mode: str, size: int | None) -> Inode:
        r = self._resolve_to_create(spath, False) if mode == "w+" else self._resolve(spath)
        if r.ino is None:
            if mode != "w+":
                raise oserror(errno.ENOENT, spath)
            inode = self._create(txn, r, S_IFREG | (0o666 & ~self.umask), spath)
        elif r.ftype == DIR_T:
            raise oserror(errno.EISDIR, spath)
        elif r.ftype in SPECIAL_T:
            raise oserror(errno.ENODEV, spath)  # (mmap(2): nothing to map)
        else:
            inode = self._inode(r.ino)
        if mode == "w+":
            self._truncate_inode(txn, inode, size)  # type: ignore[arg-type]
        return inode

    def ndarray(self, path, dtype="uint8", shape=None, mode: str = "r"):
        """A numpy array over a mapped file (fs.map(path, mode).ndarray(...)).
        The array keeps the memory and its pins alive."""
        import numpy as np

        if mode == "w+":
            if shape is None:
                raise ValueError("mode 'w+' needs a shape")
            dims = (shape,) if isinstance(shape, int) else tuple(shape)
            count = int(np.prod(dims)) if dims else 1
            m = self.map(path, mode, size=count * np.dtype(dtype).itemsize)
        else:
            m = self.map(path, mode)
        return m.ndarray(dtype, shape)

    def _map_is_stale(self, plan: MapPlan) -> bool:
        if self.closed:
            return True  # no longer known: treat as stale
        with self._locked(exclusive=False):
            try:
                inode = self._inode(plan.ino)
            except CorruptionError:
                return True  # the slot was freed
            return (inode.generation, inode.size, inode.btime) != (
                plan.generation,
                plan.file_size,
                plan.btime,
            )

    def _huge_pages_note(self, plan: MapPlan) -> str | None:
        r = self.region
        how = (
            "for 2 MiB pages put the pool on a huge tmpfs (mount -t tmpfs -o huge=always "
            "tmpfs DIR), /dev/daxX.Y or fs-dax"
        )
        if r.kind == "file" and not r.huge_capable:
            return (
                "2 MiB pages not guaranteed: a page-cache file gets them only where the "
                f"kernel happens to use large folios; {how}"
            )
        if not r.huge_capable:
            where = f"tmpfs at {r.mount.mountpoint} is mounted without huge="
            if r.kind != "tmpfs":
                where = f"a {r.kind} backing that cannot map 2 MiB pages"
            return f"4 KiB pages only: {where}; {how}"
        if not eligible_total(plan.extents, plan.file_size):
            return (
                "4 KiB pages only: no extent covers a whole 2 MiB window aligned in the "
                "file and on the device (the file is small or fragmented)"
            )
        return None

    def _mapping_closed(self, ino: int) -> None:
        if not self.closed:
            with self._thread_lock():
                self._free_if_orphan(ino)

    def _orphan_check_later(self, ino: int) -> Callable[[], None]:
        """What a mapping's pins call when the garbage collector drops them.
        That can happen in the middle of a call of this FileSystem on the same
        thread (the lock is re-entrant), so it only queues the inode; it holds
        the queue, not the FileSystem, which may go away first."""
        return functools.partial(self._unmapped.append, ino)

    def _free_unmapped_orphans(self) -> None:
        """Free the orphans whose last user was a mapping dropped without
        close(), and look again at those our changes kept for another
        process (_drop_link).  Runs at the start of an outermost call and
        at unmount; a failure is reported, never raised into the unrelated
        call that happens to run this (the next mount or
        check(repair=True) reclaims the orphan)."""
        inos = []
        while self._unmapped:
            try:
                inos.append(self._unmapped.popleft())
            except IndexError:  # another thread took the last one
                break
        # Each look is a change of its own, made the old way even when the
        # call that runs it is optimistic: nobody is there to run it again
        # on a Conflict.
        optimistic, self._optimistic = self._optimistic, False
        try:
            for ino in dict.fromkeys(inos):  # in order, each once
                try:
                    self._free_if_orphan(ino)
                except Exception as e:
                    _report_unfreed_orphan(self, ino, e)
        finally:
            self._optimistic = optimistic


def _report_unfreed_orphan(fs, ino: int, error: Exception) -> None:
    # A warning, not an exception: even a filter that turns warnings into
    # errors must not make an unrelated call fail because of this.
    try:
        warnings.warn(
            f"daxfs: freeing orphan inode {ino} of {fs.region.path} failed ({error!r}); "
            "the next mount reclaims it",
            RuntimeWarning,
            stacklevel=2,
        )
    except Warning:
        pass
