"""fuseuring: FUSE over io_uring, for fuse.Server (Linux 6.14 to 6.18's interface).

With it the kernel keeps a queue of requests per CPU and gives each request
to the queue of the CPU its caller runs on, where a serving thread pinned to
that CPU answers it: a round trip wakes no task on another CPU.  On a
virtual machine whose idle vCPUs halt that wake-up is most of what a
classic /dev/fuse round trip costs (DESIGN.md, "Serving FUSE").

Root turns it on for the machine (ENABLE_KNOB); a server asks for it in
its INIT reply (FUSE_OVER_IO_URING, a flags2 bit, so with FUSE_INIT_EXT and
protocol 7.42) and then registers entries on every CPU's queue.  An entry
is an io_uring command (IORING_OP_URING_CMD in a 128-byte SQE) on the
/dev/fuse descriptor that carries two buffers: a header (the request's
fuse_in_header, its first argument, and fuse_uring_ent_in_out) and a
payload (the rest of the request).  Its completion is a request; the reply
goes into the same buffers and back with COMMIT_AND_FETCH, which also
waits for the next request.  The kernel uses the ring only once every
queue has an entry; until then, and for FORGET and INTERRUPT always,
requests come through /dev/fuse, and notifications go out there.

No liburing: the two system calls through ctypes, the rings through mmap.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import struct
from collections.abc import Callable

from . import fusewire as w

ENABLE_KNOB = "/sys/module/fuse/parameters/enable_uring"
MINOR = 42  # the protocol version that brought FUSE_OVER_IO_URING
INIT_EXT = 1 << 30  # fuse_init_in/out.flags: the flags2 word is meant
OVER_IO_URING = 1 << (41 - 32)  # FUSE_OVER_IO_URING, in flags2
FLAGS2 = struct.Struct("<I")  # fuse_init_in.flags2, after major, minor, max_readahead, flags

# The header buffer (fuse_uring_req_header): the request's (and the
# reply's) header, its first argument (op_in), then fuse_uring_ent_in_out.
IN_OUT, OP_IN, ENT = 0, 128, 256
HEADER_SIZE = 288
ENT_IN_OUT = struct.Struct("<QQI")  # flags, commit_id, payload_sz (then padding, reserved)
PAYLOAD_SZ_OFF = ENT + 16
REGISTER, COMMIT_AND_FETCH = 1, 2  # enum fuse_uring_cmd

# io_uring (x86_64 system call numbers; the layouts of include/uapi/linux/io_uring.h)
SYS_SETUP, SYS_ENTER = 425, 426
SETUP_SQE128 = 1 << 10
ENTER_GETEVENTS = 1
FEAT_SINGLE_MMAP = 1
OFF_SQ_RING, OFF_SQES = 0, 0x10000000
OP_URING_CMD = 46
SQE_SIZE = 128
# opcode, flags, ioprio, fd, cmd_op (+ 4 bytes), addr, len, uring_cmd_flags,
# user_data, buf_index, personality, file_index; the 80-byte command follows
SQE_HEAD = struct.Struct("<BBHiIIQIIQHHI")
CMD_AREA = SQE_HEAD.size  # 48
CMD_REQ = struct.Struct("<QQH6x")  # fuse_uring_cmd_req: flags, commit_id, qid
CQE = struct.Struct("<QiI")  # user_data, res, flags
# What a ring entry completes with once the mount is gone.
GONE = (errno.ENOTCONN, errno.ECANCELED, errno.ECONNABORTED, errno.ENODEV)


class _Params(ctypes.Structure):
    """struct io_uring_params (120 bytes)."""

    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        # head, tail, ring_mask, ring_entries, flags, dropped, array, resv1; resv2
        ("sq_off", ctypes.c_uint32 * 8),
        ("sq_resv2", ctypes.c_uint64),
        # head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1; resv2
        ("cq_off", ctypes.c_uint32 * 8),
        ("cq_resv2", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args) -> int:
    while True:
        r = _libc.syscall(ctypes.c_long(number), *args)
        if r >= 0:
            return r
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def unsupported_here() -> str | None:
    """Why this machine cannot use it, or None.  Ring.queue stores an
    entry, then the tail, with no fence between: enough on x86-64, whose
    stores are not reordered, not on weaker machines."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"done for x86-64 only here, not {platform.machine()}"
    if not enabled():
        return f"off in this kernel (Linux 6.14 or later; as root: echo Y > {ENABLE_KNOB})"
    return None


def enabled() -> bool:
    """Has root turned FUSE over io_uring on for this machine?"""
    try:
        with open(ENABLE_KNOB) as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


@contextlib.contextmanager
def turned_on():
    """FUSE over io_uring on for the machine during the block, then as it
    was (for benchmarks and tests; root only).  OSError when this kernel has
    no such switch or it cannot be set."""
    was = enabled()
    if not was:
        _set_knob("Y")
    try:
        yield
    finally:
        if not was:
            _set_knob("N")


def _set_knob(value: str) -> None:
    try:
        with open(ENABLE_KNOB, "w") as f:
            f.write(value)
    except OSError as e:
        why = "no FUSE over io_uring in this kernel" if e.errno == errno.ENOENT else e.strerror
        raise OSError(e.errno, f"{ENABLE_KNOB}: {why}") from None


def kernel_offers(init_args) -> bool:
    """Does the kernel's INIT request (its body) offer FUSE over io_uring?"""
    flags = w.INIT_IN.unpack_from(init_args)[3]
    if not flags & INIT_EXT or len(init_args) < w.INIT_IN.size + FLAGS2.size:
        return False
    return bool(FLAGS2.unpack_from(init_args, w.INIT_IN.size)[0] & OVER_IO_URING)


def queue_ids() -> list[int]:
    """The kernel's queues: one per possible CPU, numbered as the CPUs."""
    with open("/sys/devices/system/cpu/possible") as f:
        last = max(int(part.split("-")[-1]) for part in f.read().strip().split(","))
    return list(range(last + 1))


def uring_cmd_head(fd: int, cmd_op: int, addr: int, length: int, tag: int) -> bytes:
    """An IORING_OP_URING_CMD's SQE up to its command, ``tag`` its user_data."""
    return SQE_HEAD.pack(OP_URING_CMD, 0, 0, fd, cmd_op, 0, addr, length, 0, tag, 0, 0, 0)


class Ring:
    """One io_uring with 128-byte SQEs, its rings mapped with mmap; used by
    one thread."""

    def __init__(self, entries: int):
        p = _Params()
        p.flags = SETUP_SQE128
        self.fd = _syscall(SYS_SETUP, ctypes.c_long(entries), ctypes.byref(p))
        if not p.features & FEAT_SINGLE_MMAP:
            os.close(self.fd)
            raise OSError(errno.EOPNOTSUPP, "io_uring without a single mapping for both rings")
        sq, cq = p.sq_off, p.cq_off
        size = max(sq[6] + p.sq_entries * 4, cq[5] + p.cq_entries * CQE.size)
        prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_POPULATE
        self.rings = mmap.mmap(self.fd, size, flags, prot, offset=OFF_SQ_RING)
        self.sqes = mmap.mmap(self.fd, p.sq_entries * SQE_SIZE, flags, prot, offset=OFF_SQES)
        u32 = ctypes.c_uint32
        self._sq_tail = u32.from_buffer(self.rings, sq[1])
        self._sq_mask = u32.from_buffer(self.rings, sq[2]).value
        self._cq_head = u32.from_buffer(self.rings, cq[0])
        self._cq_tail = u32.from_buffer(self.rings, cq[1])
        self._cq_mask = u32.from_buffer(self.rings, cq[2]).value
        self._cqes = cq[5]
        self._unsubmitted = 0
        # Slot i of the submission array always names SQE i, and the bytes of
        # an SQE that command() does not write stay zero (a fresh mapping).
        for i in range(p.sq_entries):
            struct.pack_into("<I", self.rings, sq[6] + 4 * i, i)

    def command(self, fd: int, cmd_op: int, addr: int, length: int, tag: int, cmd: bytes) -> None:
        """Queue an IORING_OP_URING_CMD on ``fd`` (submitted by wait())."""
        self.queue(uring_cmd_head(fd, cmd_op, addr, length, tag) + cmd)

    def queue(self, sqe: bytes) -> None:
        """Queue an SQE given whole, up to its command (submitted by wait())."""
        tail = self._sq_tail.value
        off = (tail & self._sq_mask) * SQE_SIZE
        self.sqes[off : off + len(sqe)] = sqe
        # The kernel reads the tail after the entry: stores are not reordered on x86.
        self._sq_tail.value = (tail + 1) & 0xFFFFFFFF
        self._unsubmitted += 1

    def wait(self, completions: int) -> None:
        """Submit what is queued and wait for ``completions`` (0: none)."""
        done = _syscall(
            SYS_ENTER,
            ctypes.c_long(self.fd),
            ctypes.c_long(self._unsubmitted),
            ctypes.c_long(completions),
            ctypes.c_long(ENTER_GETEVENTS if completions else 0),
            None,
            ctypes.c_long(0),
        )
        self._unsubmitted -= done

    def completions(self) -> list[tuple[int, int]]:
        """(tag, result) of every completion posted, taken off the ring."""
        head, tail = self._cq_head.value, self._cq_tail.value
        out = []
        while head != tail:
            at = self._cqes + (head & self._cq_mask) * CQE.size
            tag, res, _flags = CQE.unpack_from(self.rings, at)
            out.append((tag, res))
            head = (head + 1) & 0xFFFFFFFF
        self._cq_head.value = head
        return out

    def close(self) -> None:
        # (The ctypes views of the rings must go before the mapping can.)
        self._sq_tail = self._cq_head = self._cq_tail = None  # type: ignore[assignment]
        self.rings.close()
        self.sqes.close()
        os.close(self.fd)


class Entry:
    """A ring entry's buffers, and the reply to the request it holds
    (fuse.Server.handle answers through it as through a Channel)."""

    def __init__(self, payload_size: int):
        self.header = ctypes.create_string_buffer(HEADER_SIZE)
        # (Anonymous memory: a queue no request comes to, as one of a CPU
        # that is possible but not online, costs no pages.)
        self.payload = mmap.mmap(-1, payload_size)
        payload_at = ctypes.addressof(ctypes.c_char.from_buffer(self.payload))
        self.iov = (ctypes.c_uint64 * 4)(
            ctypes.addressof(self.header), HEADER_SIZE, payload_at, payload_size
        )
        self.h = memoryview(self.header).cast("B")
        self.p = memoryview(self.payload)
        self.replied = False

    def request(self, body: bytearray) -> tuple[w.Request, int]:
        """The request held, its body copied into ``body`` as /dev/fuse lays
        it out (the first argument, then the rest: Request.args), and its
        commit id."""
        length, opcode, unique, nodeid, uid, gid, pid, _ = w.IN_HEADER.unpack_from(self.h, IN_OUT)
        _flags, commit_id, payload_sz = ENT_IN_OUT.unpack_from(self.h, ENT)
        first = length - w.IN_HEADER.size - payload_sz  # (op_in's length is not given)
        if not payload_sz:  # (most requests: a read, an open, a getattr, a release)
            args = self.h[OP_IN : OP_IN + first]
        elif not first:  # (a lookup: a name only)
            args = self.p[:payload_sz]
        else:  # (a write, a create: both; a handler reads its request before replying)
            body[:first] = self.h[OP_IN : OP_IN + first]
            body[first : first + payload_sz] = self.p[:payload_sz]
            args = memoryview(body)[: first + payload_sz]
        self.replied = False
        return w.Request(opcode, unique, nodeid, uid, gid, pid, args), commit_id

    def reply(self, unique: int, *parts) -> None:
        n = 0
        for part in parts:
            self.p[n : n + len(part)] = part
            n += len(part)
        w.OUT_HEADER.pack_into(self.h, IN_OUT, w.OUT_HEADER.size + n, 0, unique)
        struct.pack_into("<I", self.h, PAYLOAD_SZ_OFF, n)
        self.replied = True

    def reply_error(self, unique: int, code: int) -> None:
        w.OUT_HEADER.pack_into(self.h, IN_OUT, w.OUT_HEADER.size, -code, unique)
        struct.pack_into("<I", self.h, PAYLOAD_SZ_OFF, 0)
        self.replied = True


class Queue:
    """One CPU's queue: its ring, ``depth`` entries, and the loop that
    serves them (run by a thread pinned to that CPU: the kernel hands a
    request to the thread that registered the entry)."""

    def __init__(self, dev_fd: int, qid: int, depth: int, payload_size: int):
        self.dev_fd, self.qid = dev_fd, qid
        self.entries = [Entry(payload_size) for _ in range(depth)]
        self.ring = Ring(2 * depth)
        self._early: list[tuple[int, int]] = []  # requests that came while registering
        # The body of the request being answered (one at a time), made at
        # the first request: an offline CPU's queue never gets one.
        self._body_size = (ENT - OP_IN) + payload_size
        self._body: bytearray | None = None
        # Each entry's COMMIT_AND_FETCH, but for its command (the commit id).
        self._commits = [
            uring_cmd_head(dev_fd, COMMIT_AND_FETCH, 0, 0, tag) for tag in range(depth)
        ]

    def register(self) -> None:
        """Hand every entry to the kernel.  Raises if it took none; then,
        and only then, the kernel never uses the ring (it waits for an entry
        on every queue), so /dev/fuse goes on serving.  Once it took one,
        this queue must be served: requests may already be on their way
        (the last queue's first entry makes the ring live)."""
        cmd = CMD_REQ.pack(0, 0, self.qid)
        for tag, e in enumerate(self.entries):
            self.ring.command(self.dev_fd, REGISTER, ctypes.addressof(e.iov), 2, tag, cmd)
        self.ring.wait(0)
        refused = []
        for tag, res in self.ring.completions():  # (an entry taken completes with a request)
            (refused if res < 0 else self._early).append((tag, res))
        if len(refused) == len(self.entries):
            code = -refused[0][1]
            raise OSError(code, f"FUSE over io_uring, queue {self.qid}: {os.strerror(code)}")

    def serve(self, handle: Callable[[w.Request, Entry], None]) -> None:
        """Answer requests until the mount goes away."""
        ring = self.ring
        done, self._early = self._early, []
        while True:
            if not done:
                ring.wait(1)  # (submits the commits queued below)
                done = ring.completions()
            for tag, res in done:
                if res < 0:
                    if -res in GONE:
                        return  # unmounted (or aborted)
                    why = f"FUSE over io_uring, queue {self.qid}: {os.strerror(-res)}"
                    raise OSError(-res, why)
                entry = self.entries[tag]
                if self._body is None:
                    self._body = bytearray(self._body_size)
                req, commit_id = entry.request(self._body)
                handle(req, entry)
                if not entry.replied:  # (the ring carries no request that takes no reply)
                    entry.reply_error(req.unique, errno.ENOSYS)
                ring.queue(self._commits[tag] + CMD_REQ.pack(0, commit_id, self.qid))
            done = []

    def close(self) -> None:
        self.ring.close()
