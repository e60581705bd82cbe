"""fusewire: the kernel's FUSE protocol, spoken on /dev/fuse.

The kernel side of a FUSE mount is a character device: the server reads one
request at a time (a ``fuse_in_header`` and the operation's arguments) and
writes one reply (a ``fuse_out_header`` and the result) with the request's
``unique``; a write with ``unique`` 0 is a notification (drop a cached
attribute or name).  The layouts are Linux's ``include/uapi/linux/fuse.h``
(this module speaks protocol 7.31, which every kernel since 5.4 offers);
they are fixed, so they are written out here as ``struct`` formats.

Why not libfuse (through mfusepy or pyfuse3): fuse.py needs the low-level,
inode-addressed protocol, so that the kernel may cache names and
attributes.  mfusepy has only libfuse's path-based API; pyfuse3 has the
low-level one but no lseek (SEEK_DATA/SEEK_HOLE) or fallocate, needs a C
toolchain and libfuse3's headers to install, and runs each request as a
trio task.  A request here is one read into a reused buffer, one unpack and
one write: the fewest Python steps between the kernel and the pool.
Mounting still goes through libfuse's own tool, fusermount3, which checks a
non-root user's right to mount and hands back the device.

``mount`` returns the open device, ``Channel`` reads requests and writes
replies and notifications, ``unmount`` undoes a mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import os
import select
import socket
import struct
import subprocess
import time
from typing import NamedTuple

# Protocol 7.31 (the minor version this server speaks).
KERNEL_MAJOR, KERNEL_MINOR = 7, 31

# Opcodes.
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN = 8, 9, 10, 11, 12, 13, 14
READ, WRITE, STATFS, RELEASE, FSYNC = 15, 16, 17, 18, 20
SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT = 21, 22, 23, 24, 25, 26
OPENDIR, RELEASEDIR, FSYNCDIR, ACCESS, CREATE = 27, 29, 30, 34, 35
INTERRUPT, DESTROY, BATCH_FORGET, FALLOCATE, READDIRPLUS, RENAME2, LSEEK = (
    36,
    38,
    42,
    43,
    44,
    45,
    46,
)

# FUSE_INIT flags (fuse_init_in/out.flags).
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
# The server drops setuid and setgid on write, truncate and chown, told by
# flags in those requests when the caller lacks CAP_FSETID (7.33).
HANDLE_KILLPRIV_V2 = 1 << 28

# fuse_setattr_in.valid bits.
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1, 2, 4, 8
FATTR_ATIME, FATTR_MTIME, FATTR_FH = 16, 32, 64
FATTR_ATIME_NOW, FATTR_MTIME_NOW, FATTR_LOCKOWNER, FATTR_CTIME = 128, 256, 512, 1024
FATTR_KILL_SUIDGID = 2048
# What a setattr asks to change (not which handle or lock owner asks).
FATTR_CHANGES = (
    FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME | FATTR_CTIME
)
# fuse_write_in.write_flags and fuse_open_in.open_flags (fuse_create_in's
# too): the caller lacks CAP_FSETID, drop setuid and setgid (KILLPRIV_V2).
WRITE_KILL_SUIDGID = 1 << 2
OPEN_KILL_SUIDGID = 1 << 0

# Notification codes (fuse_out_header.error of a write with unique 0).
NOTIFY_INVAL_INODE, NOTIFY_INVAL_ENTRY = 2, 3

ROOT_ID = 1  # the mount's root directory's node id, fixed by the protocol

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
# major, minor, max_readahead, flags, max_background, congestion_threshold,
# max_write, time_gran, max_pages, map_alignment, flags2, unused[7]
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")
# ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
# mode, nlink, uid, gid, rdev, blksize, flags
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
# nodeid, generation, entry_valid, attr_valid, entry_valid_nsec, attr_valid_nsec
ENTRY_OUT_HEAD = struct.Struct("<QQQQII")
ENTRY_OUT = struct.Struct(ENTRY_OUT_HEAD.format + ATTR.format[1:])  # the two, whole
ATTR_OUT_HEAD = struct.Struct("<QII")  # attr_valid, attr_valid_nsec, dummy
FORGET_IN = struct.Struct("<Q")  # nlookup
BATCH_FORGET_IN = struct.Struct("<II")  # count, dummy
FORGET_ONE = struct.Struct("<QQ")  # nodeid, nlookup
GETATTR_IN = struct.Struct("<IIQ")  # getattr_flags, dummy, fh
# valid, padding, fh, size, lock_owner, atime, mtime, ctime, atimensec,
# mtimensec, ctimensec, mode, unused4, uid, gid, unused5
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
MKNOD_IN = struct.Struct("<IIII")  # mode, rdev, umask, padding
MKDIR_IN = struct.Struct("<II")  # mode, umask
RENAME_IN = struct.Struct("<Q")  # newdir
RENAME2_IN = struct.Struct("<QII")  # newdir, flags, padding
LINK_IN = struct.Struct("<Q")  # oldnodeid
OPEN_IN = struct.Struct("<II")  # flags, open_flags
CREATE_IN = struct.Struct("<IIII")  # flags, mode, umask, open_flags
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
READ_IN = struct.Struct("<QQIIQII")  # fh, offset, size, read_flags, lock_owner, flags, pad
WRITE_IN = struct.Struct("<QQIIQII")  # fh, offset, size, write_flags, lock_owner, flags, pad
WRITE_OUT = struct.Struct("<II")  # size, padding
RELEASE_IN = struct.Struct("<QIIQ")  # fh, flags, release_flags, lock_owner
FLUSH_IN = struct.Struct("<QIIQ")  # fh, unused, padding, lock_owner
FSYNC_IN = struct.Struct("<QII")  # fh, fsync_flags, padding
FALLOCATE_IN = struct.Struct("<QQQII")  # fh, offset, length, mode, padding
LSEEK_IN = struct.Struct("<QQII")  # fh, offset, whence, padding
LSEEK_OUT = struct.Struct("<Q")  # offset
# blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]
STATFS_OUT = struct.Struct("<QQQQQIIII24x")
DIRENT_HEAD = struct.Struct("<QQII")  # ino, off, namelen, type
INVAL_INODE_OUT = struct.Struct("<Qqq")  # ino, off, len
INVAL_ENTRY_OUT = struct.Struct("<QII")  # parent, namelen, padding

U64 = (1 << 64) - 1
# fuse_open_out.open_flags: no page cache for this open (each write(2) one
# request); keep the pages cached before; send no FLUSH at close (kernels
# before 5.16 ignore it and send it anyway).
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_NOFLUSH = 1 << 0, 1 << 1, 1 << 5


class Request(NamedTuple):
    """One request: its header fields and its arguments (a view of the
    channel's buffer, valid until the next read)."""

    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    args: memoryview


def attr_fields(st: os.stat_result) -> tuple[int, ...]:
    """A stat result as the fields of a fuse_attr, in order."""
    return (
        st.st_ino,
        st.st_size,
        st.st_blocks,
        # (Seconds are signed in the kernel: a time before 1970 is sent
        # in two's complement.)
        (st.st_atime_ns // 10**9) & U64,
        (st.st_mtime_ns // 10**9) & U64,
        (st.st_ctime_ns // 10**9) & U64,
        st.st_atime_ns % 10**9,
        st.st_mtime_ns % 10**9,
        st.st_ctime_ns % 10**9,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_rdev,
        st.st_blksize,
        0,
    )


def attr_bytes(st: os.stat_result) -> bytes:
    """A stat result as a fuse_attr."""
    return ATTR.pack(*attr_fields(st))


def split_seconds(seconds: float) -> tuple[int, int]:
    """A timeout as (seconds, nanoseconds), the protocol's two fields."""
    whole = int(seconds)
    return whole, int((seconds - whole) * 10**9)


# How long the kernel may keep a name and its attributes: entry_valid,
# attr_valid and their nanoseconds, in fuse_entry_out's order.
Validity = tuple[int, int, int, int]


def validity(entry_s: float, attr_s: float) -> Validity:
    """The Validity of timeouts in seconds: worked out once, for entry_bytes."""
    (es, ens), (as_, ans) = split_seconds(entry_s), split_seconds(attr_s)
    return es, as_, ens, ans


def entry_bytes(
    nodeid: int, attr: tuple[int, ...] | None, valid: Validity, generation: int = 0
) -> bytes:
    """A fuse_entry_out: node ``nodeid`` of ``generation`` with the fuse_attr
    fields ``attr`` (node 0 with ``attr`` None: no such name, remembered
    for as long as ``valid`` says)."""
    if attr is None:
        return ENTRY_OUT_HEAD.pack(nodeid, 0, *valid) + bytes(ATTR.size)
    return ENTRY_OUT.pack(nodeid, generation, *valid, *attr)


def generation(btime: int) -> int:
    """The generation of the node of a file born at ``btime`` (ns).  A pool
    gives a freed inode number to a new file; the server keeps the two
    apart with nodes of their own while the kernel holds the old one
    (fuse.Tracker), and a generation that differs is the protocol's guard
    besides: the kernel takes an entry whose node it holds under another
    generation for a new file, not for its inode changed (fuse_iget,
    fuse_stale_inode).  The birth time is what tells two files of one
    number apart everywhere in daxfs (coherence, follow); the kernel keeps
    32 bits of a generation, so the two halves are folded (two birth times
    in 2^32 fold alike)."""
    return (btime ^ (btime >> 32)) & 0xFFFFFFFF


def dirent_bytes(ino: int, off: int, name: bytes, ftype: int) -> bytes:
    """A fuse_dirent, padded to 8 bytes."""
    head = DIRENT_HEAD.pack(ino, off, len(name), ftype)
    return head + name + bytes(-(len(head) + len(name)) % 8)


def split_names(args: memoryview, count: int) -> list[bytes]:
    """The ``count`` NUL-terminated names at the start of ``args``."""
    raw = bytes(args)
    names, pos = [], 0
    for _ in range(count):
        end = raw.index(b"\0", pos)
        names.append(raw[pos:end])
        pos = end + 1
    return names


class ChannelClosed(Exception):
    """The mount is gone (unmounted, or the connection aborted)."""


# How long a server with no request looks for the next one before it
# sleeps.  A request that finds the server asleep pays for waking it: on a
# virtual machine whose idle vCPUs halt (this project's: cpuidle haltpoll
# with no halt polling), about 25 us of a 60 us round trip.  Requests come
# in bursts (a tar, a find), so a server that just answered one looks for
# the next for a while, then sleeps in poll(2).
POLL_SECONDS = 200e-6


class Channel:
    """The open /dev/fuse of one mount: requests in, replies and
    notifications out.  Replies and notifications may be written from
    different threads (each is one write)."""

    def __init__(self, fd: int, max_write: int, poll_seconds: float = POLL_SECONDS):
        self.fd = fd
        self.max_write = max_write
        self.poll_seconds = poll_seconds
        # The kernel refuses a read buffer that cannot hold its largest
        # request (a write of max_write bytes with its headers).
        self._buf = bytearray(max_write + 64 * 1024)
        self._view = memoryview(self._buf)
        os.set_blocking(fd, False)  # (reads return None when no request waits)
        self._file = io.FileIO(fd, "r", closefd=False)
        self._sleep = select.poll()
        self._sleep.register(fd, select.POLLIN)

    def read(self) -> Request:
        """The next request; ChannelClosed when the mount is gone."""
        until = None
        while True:
            try:
                n = self._file.readinto(self._buf)
            except OSError as e:
                if e.errno == errno.ENOENT:  # (the request was interrupted away)
                    continue
                if e.errno == errno.ENODEV:
                    raise ChannelClosed from None
                raise
            if n is None:  # nothing yet: look again for a while, then sleep
                now = time.perf_counter()
                if until is None:
                    until = now + self.poll_seconds
                if now < until:
                    os.sched_yield()  # (whatever else wants this CPU runs first)
                else:
                    self._sleep.poll()
                    until = None
                continue
            if not n:
                raise ChannelClosed
            length, opcode, unique, nodeid, uid, gid, pid, _ = IN_HEADER.unpack_from(self._buf)
            args = self._view[IN_HEADER.size : length]
            return Request(opcode, unique, nodeid, uid, gid, pid, args)

    def reply(self, unique: int, *parts) -> None:
        """Answer a request with its result (``parts`` joined)."""
        size = OUT_HEADER.size + sum(len(p) for p in parts)
        self._write([OUT_HEADER.pack(size, 0, unique), *parts])

    def reply_error(self, unique: int, code: int) -> None:
        self._write([OUT_HEADER.pack(OUT_HEADER.size, -code, unique)])

    def notify(self, code: int, *parts) -> None:
        """Send a notification; OSError(ENOENT) when the kernel has no such
        inode or name cached (nothing to drop)."""
        size = OUT_HEADER.size + sum(len(p) for p in parts)
        os.writev(self.fd, [OUT_HEADER.pack(size, code, 0), *parts])

    def inval_attrs(self, nodeid: int) -> None:
        """Drop the kernel's attributes of ``nodeid`` (an offset of -1: not
        its cached pages)."""
        self.notify(NOTIFY_INVAL_INODE, INVAL_INODE_OUT.pack(nodeid, -1, 0))

    def inval_data(self, nodeid: int) -> None:
        """Drop the kernel's cached pages of ``nodeid``, all of them (offset
        0, length 0: to the end); a symlink's cached target is one."""
        self.notify(NOTIFY_INVAL_INODE, INVAL_INODE_OUT.pack(nodeid, 0, 0))

    def inval_entry(self, parent: int, name: bytes) -> None:
        """Drop the kernel's entry ``name`` in directory ``parent``."""
        self.notify(NOTIFY_INVAL_ENTRY, INVAL_ENTRY_OUT.pack(parent, len(name), 0), name + b"\0")

    def _write(self, parts: list) -> None:
        try:
            os.writev(self.fd, parts)
        except OSError as e:
            # ENOENT: the request was interrupted and is gone.  ENODEV: so
            # is the mount (the next read says so).
            if e.errno not in (errno.ENOENT, errno.ENODEV):
                raise

    def close(self) -> None:
        self._file.close()
        os.close(self.fd)


class MountFailed(RuntimeError):
    """The kernel mount could not be made (the reason is in the message)."""


def mount(mountpoint: str, options: list[str]) -> int:
    """Mount a FUSE file system on ``mountpoint`` with ``options`` (mount -o
    words: fsname=..., subtype=..., allow_other, default_permissions, ro)
    and return the open /dev/fuse it is served on.  Done by fusermount3,
    as libfuse does for every user: it checks the caller's right to mount
    there and passes the device back over a socket (_FUSE_COMMFD)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.run(
            ["fusermount3", "-o", ",".join(options), "--", mountpoint],
            env={**os.environ, "_FUSE_COMMFD": str(theirs.fileno())},
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        theirs.close()
        if proc.returncode != 0:
            reason = proc.stderr.decode(errors="replace").strip().splitlines()
            raise MountFailed(reason[-1] if reason else f"fusermount3 status {proc.returncode}")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise MountFailed("fusermount3 passed no FUSE device back")
        return fds[0]
    except FileNotFoundError:
        raise MountFailed("fusermount3 not found (install the fuse3 package)") from None
    finally:
        ours.close()
        theirs.close()


MNT_DETACH = 2


def unmount(mountpoint: str) -> None:
    """Detach the mount (lazily: a process inside it keeps what it has until
    it leaves), as libfuse does when its session ends.  Root calls
    umount2 itself; anyone else asks fusermount3."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.umount2(mountpoint.encode(), MNT_DETACH) == 0:
            return
        if ctypes.get_errno() in (errno.EINVAL, errno.ENOENT):  # not mounted (any more)
            return
    subprocess.run(
        ["fusermount3", "-u", "-q", "-z", "--", mountpoint],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
