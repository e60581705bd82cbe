"""pins: who still uses which bytes of the pool, visible to every process.

A pin is an open-file-description (OFD) read lock on a byte range of the
pool file.  OFD locks are shared by every process, conflict between
different open descriptions even inside one process, and are dropped by
the kernel when the last descriptor of the description closes (so also
when a process dies).  daxfs pins

  * an inode's slot (the 256 bytes at ``itable_off + ino * 256``; a look
    asks about its first byte) while a file is open or mapped: an unlinked
    file then stays an orphan until the last user is gone.  The whole slot,
    not one byte: the kernel merges a description's read locks on touching
    ranges, so the pins of files numbered one after another are one lock,
    where a byte each would be one lock a file, and every lock call walks
    the file's list of them (an open + close with 10,000 files held open
    took 57 us a byte each, 6.4 a slot each);
  * the device ranges of a file's extents while a Mapping covers them:
    truncate refuses (EBUSY) to free them;
  * byte MOUNTED_BYTE while mounted, read-only mounts included (which have
    no slot in the process table): a writer alone keeps the exclusive
    pool lock between its said changes only while no other description
    holds it (logical.py, "Keeping the lock");
  * byte WAITING_BYTE while waiting for the exclusive pool lock
    (coherence.lock_pool): a reader keeping the shared one lets it go;
  * byte WRITER_BYTE while mounted writable, from the end of the mount's
    recovery on: while anyone holds it, the machine has not restarted
    since the journal was last recovered, so a read-only mount need not
    recover it first (pool.py, "A read-only mount of a live pool").

Asking "is this pinned by anyone else?" is F_OFD_GETLK for a write lock
over the range from a description that holds no pin itself.

Pins that are dropped by the garbage collector (a Mapping never closed)
report it through ``on_release``, so that the file system can free an
orphan whose last user they were.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from typing import ClassVar

from .layout import INODE_SIZE

OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (x86_64, aarch64)
# The superblock's first byte: no other pin covers it (slots are in the
# inode table, extents in the data area, process slots in the journal's).
MOUNTED_BYTE = 0
# The superblock's second byte, likewise covered by no other pin.
WRITER_BYTE = 1
# The superblock's third byte, likewise: locked by a process while it waits
# for the exclusive pool lock, so that a process keeping the shared one
# between its reads lets it go (logical.py, "Keeping the shared lock").
WAITING_BYTE = 2
# The fourth byte, likewise: locked by a process while it waits for the
# shared pool lock, so that a process keeping the exclusive one beside
# others (logical.py, "Keeping the lock") lets it go for readers too.
READER_WAITING_BYTE = 3
# What an inode's pin covers from its slot's first byte: the slot.
SLOT_PIN = INODE_SIZE


def set_lock(fd: int, ltype: int, start: int, length: int, wait: bool = False) -> None:
    """Take (F_RDLCK, F_WRLCK) or drop (F_UNLCK) an OFD lock; never blocks
    unless ``wait`` (then until whoever holds a conflicting one drops it)."""
    op = OFD_SETLKW if wait else OFD_SETLK
    fcntl.fcntl(fd, op, _FLOCK.pack(ltype, os.SEEK_SET, start, length, 0))


def pin_slot(fd: int, off: int) -> None:
    """Pin the inode whose slot begins at ``off`` (module doc)."""
    set_lock(fd, fcntl.F_RDLCK, off, SLOT_PIN)


def unpin_slot(fd: int, off: int) -> None:
    """Drop pin_slot's pin of the slot at ``off``."""
    set_lock(fd, fcntl.F_UNLCK, off, SLOT_PIN)


def mark_mounted(fd: int) -> None:
    """Mark a mount of the pool open on ``fd`` (its description), until closed."""
    set_lock(fd, fcntl.F_RDLCK, MOUNTED_BYTE, 1)


def mark_writer(fd: int) -> None:
    """Mark a writable mount of the pool open on ``fd``, its journal just
    recovered (under the exclusive pool lock), until closed."""
    set_lock(fd, fcntl.F_RDLCK, WRITER_BYTE, 1)


def writer_waiting(fd: int) -> bool:
    """Does a process (through another description) wait for the exclusive
    pool lock?"""
    return pinned_by_others(fd, WAITING_BYTE, 1)


def anyone_waiting(fd: int) -> bool:
    """Does a process (through another description) wait for the pool lock,
    exclusive or shared?  (WAITING_BYTE and READER_WAITING_BYTE, one look.)"""
    return pinned_by_others(fd, WAITING_BYTE, 2)


def writer_mounted(fd: int) -> bool:
    """Does a writable mount through another description hold the pool?"""
    return pinned_by_others(fd, WRITER_BYTE, 1)


def pinned_by_others(fd: int, start: int, length: int) -> bool:
    """Does any other open description hold a lock overlapping the range?"""
    reply = fcntl.fcntl(fd, OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0))
    return _FLOCK.unpack(reply)[0] != fcntl.F_UNLCK


def locked_by_others(fd: int) -> bool:
    """Does any other open description hold a lock on any byte of the file
    (a mount's mark, a pin, a process slot)?  One look (a length of 0
    covers the whole file)."""
    return pinned_by_others(fd, 0, 0)


class RangePins:
    """Pins held through a private open description of the pool, so that
    they are released exactly when this object is released (or its process
    dies), independently of every other pin in the process.

    ``on_release`` (if set) is called once, after the pins are gone.  It may
    run inside a garbage collection, in the middle of anything on this
    thread, so it must only take note (append to a queue), never do work."""

    fd = -1  # also what __del__ sees if __init__ failed
    on_release: Callable[[], None] | None = None
    # How many were ever made in this process: a look that found no lock
    # of another description holds only while no description of ours was
    # made since (logical.py, _others_may_pin).
    made: ClassVar[int] = 0

    def __init__(self, path: str, writable: bool):
        RangePins.made += 1  # (before the open: a failed one counts, harmlessly)
        self.fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)

    def pin(self, start: int, length: int) -> None:
        set_lock(self.fd, fcntl.F_RDLCK, start, length)

    def release(self) -> None:
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            os.close(fd)  # drops every lock of this description
        finally:
            callback, self.on_release = self.on_release, None
            if callback is not None:
                callback()

    def __del__(self) -> None:
        # A finalizer must not raise into whatever the collector interrupted
        # (nor print "Exception ignored"): a failed close has nothing to undo.
        try:
            self.release()
        except Exception:
            pass
