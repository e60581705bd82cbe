"""The two floors under ``bench fuse``'s commands (issue 16's aim is each
command within 5x of tmpfs):

    in process   the file-system calls the command makes (GNU tar, find,
                 cat and rm, as strace shows them on this machine) made
                 straight through the daxfs API, on a pool in the same
                 tmpfs: the FileSystem's own work with no FUSE at all
                 (issue 17's per-call path)
    round trips  the requests the kernel sends the server for the command
                 and waits for (all but FORGETs; counted by a server run in
                 this process) times the cheapest request there is: a
                 LOOKUP of a missing name, answered ENOENT from a cached
                 directory, timed through the `daxfs mount -f` the commands
                 ran on

A server over this FileSystem spends at least the in-process time on its
work and, at the least, the round trips' time on its requests: a command
whose in-process or round-trip figure is above the aim cannot meet it by
any change to fuse.py alone.  Beside them, not a floor but an account:

    server       the seconds the counting server's handlers spent on the
                 command's requests (the FileSystem calls and fuse.py's own
                 Python, no kernel): with the round trips, most of where a
                 command's time through the mount goes
"""

from __future__ import annotations

import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

RECORD = 10240  # tar's record (blocking factor 20): it writes a file's bytes cut at these
CAT_BUFFER = 128 * 1024  # what cat asks for per read(2)
ROUND_TRIP_CALLS = 2000


@dataclass
class Member:
    """A directory or regular file of the archive, as tar -x makes it."""

    name: str  # relative to the destination
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    writes: list[bytes]  # a file's write(2)s, in order; none for a directory


def tar_plan(archive: str) -> tuple[list[Member], list[Member]]:
    """(directories, files) of ``archive`` in its order, each file's bytes
    cut where tar's write(2)s cut them: at the archive's record boundaries."""
    dirs: list[Member] = []
    files: list[Member] = []
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            member = Member(m.name, m.mode, m.uid, m.gid, int(m.mtime) * 10**9, [])
            if m.isdir():
                dirs.append(member)
            elif m.isfile():
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                pos, end = m.offset_data, m.offset_data + m.size
                while pos < end:
                    stop = min(end, (pos // RECORD + 1) * RECORD)
                    member.writes.append(data[pos - m.offset_data : stop - m.offset_data])
                    pos = stop
                files.append(member)
    return dirs, files


def in_process_phases(fs, dirs: list[Member], files: list[Member], dest: str) -> dict[str, float]:
    """Every phase of bench fuse once through the API of ``fs``, into its
    empty directory ``dest``, left empty: seconds per phase."""
    as_root = os.geteuid() == 0  # (tar restores owners only as root)
    phases: list[tuple[str, Callable[[], object]]] = [
        ("tar", lambda: _extract(fs, dirs, files, dest, as_root)),
        ("find", lambda: _find(fs, dest)),
        ("cat", lambda: _cat(fs, files, dest)),
        ("cat2", lambda: _cat(fs, files, dest)),
        ("rm", lambda: _remove(fs, dirs, files, dest)),
    ]
    out = {}
    for phase, fn in phases:
        t0 = time.perf_counter()
        fn()
        out[phase] = time.perf_counter() - t0
    return out


def _extract(fs, dirs: list[Member], files: list[Member], dest: str, as_root: bool) -> None:
    """tar -x: each directory made 0700, each file created, written, given
    its times, owner and mode (utimensat, fchown, fchmod), then the
    directories' times, owners and modes, as GNU tar does."""
    for d in dirs:
        fs.mkdir(f"{dest}/{d.name}", 0o700)
    for f in files:
        path = f"{dest}/{f.name}"
        with fs.open(path, "xb", buffering=0) as out:
            for chunk in f.writes:
                out.write(chunk)
            _restore(fs, path, f, as_root)
    for d in reversed(dirs):
        _restore(fs, f"{dest}/{d.name}", d, as_root)


def _restore(fs, path: str, m: Member, as_root: bool) -> None:
    fs.utime(path, ns=(m.mtime_ns, m.mtime_ns))
    if as_root:
        fs.chown(path, m.uid, m.gid)
    fs.chmod(path, m.mode)


def _find(fs, dest: str) -> int:
    """find -printf %s: every entry's size, directory by directory."""
    total, stack = 0, [dest]
    while stack:
        for entry in fs.scandir(stack.pop()):
            total += entry.stat(follow_symlinks=False).st_size
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


def _cat(fs, files: list[Member], dest: str) -> None:
    buf = bytearray(CAT_BUFFER)
    for f in files:
        with fs.open(f"{dest}/{f.name}", "rb", buffering=0) as src:
            while src.readinto(buf):
                pass


def _remove(fs, dirs: list[Member], files: list[Member], dest: str) -> None:
    for f in files:
        fs.unlink(f"{dest}/{f.name}")
    for d in reversed(dirs):
        fs.rmdir(f"{dest}/{d.name}")


def lookup_round_trip(mnt: str, repeat: int) -> float:
    """Seconds of the cheapest request through the mount: a stat of a name
    that does not exist (the kernel caches no missing names here, so each
    is a LOOKUP the server answers ENOENT), best of ``repeat`` runs."""
    missing = os.path.join(mnt, "no-such-name")
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(ROUND_TRIP_CALLS):
            try:
                os.stat(missing)
            except FileNotFoundError:
                pass
        best = min(best, (time.perf_counter() - t0) / ROUND_TRIP_CALLS)
    return best


@dataclass
class Counted:
    """Per command: the requests the kernel sent, and the seconds the
    server's handlers spent answering them (the FileSystem calls and the
    server's own Python; not the kernel, nor the wait for a request, nor
    the reply's write, which wakes the caller)."""

    requests: dict[str, int]
    answered: dict[str, int]  # of those, the ones a caller waits for (not FORGETs)
    handling: dict[str, float]
    wall: dict[str, float]  # each command's seconds in this run, whole


def count_requests(
    pool: str, mnt: str, commands: list[tuple[str, list[str]]], io_uring: bool = False
) -> Counted:
    """The requests the kernel sends for each command, run in order through
    a FUSE mount of ``pool`` at ``mnt`` served by a thread of this process
    (the same Server as `daxfs mount`, over io_uring if asked), and the
    time its handlers took.  A release the kernel sends after a command
    ends may be counted with the next one."""
    import daxfs

    from .. import fusewire as w
    from ..fuse import MAX_WRITE, Server

    fs = daxfs.mount(pool)
    try:
        fd = w.mount(mnt, ["fsname=daxfs-bench-count", "subtype=daxfs", "nosuid", "nodev"])
        server = Server(fs, w.Channel(fd, MAX_WRITE), io_uring=io_uring)
        busy, answered = _time_handlers(server)
        thread = threading.Thread(target=_serve, args=(server,), daemon=True)
        thread.start()
        counted = Counted({}, {}, {}, {})
        try:
            for phase, argv in commands:
                before, answered_before = server.served, answered[0]
                busy_before, t0 = busy[0], time.perf_counter()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=mnt)
                counted.wall[phase] = time.perf_counter() - t0
                counted.requests[phase] = server.served - before
                counted.answered[phase] = answered[0] - answered_before
                counted.handling[phase] = busy[0] - busy_before
        finally:
            w.unmount(mnt)  # (the server's read then ends: ChannelClosed)
            thread.join(15.0)
            server.join_queues(15.0)
            server.ch.close()
    finally:
        fs.close()
    return counted


def _time_handlers(server) -> tuple[list[float], list[int]]:
    """Make ``server`` add up the seconds its handlers take (Server._answer,
    under its one-request-at-a-time lock on either path), and count the
    requests a caller waits for: ([seconds], [count]), updated in place."""
    from .. import fusewire as w

    one_way = (w.FORGET, w.BATCH_FORGET, w.INTERRUPT)  # (the kernel waits for no answer)
    busy, answered = [0.0], [0]
    answer = server._answer

    def timed(fn, req):
        # Counted as it starts, as Server.served is: a request that straddles
        # two commands (a late RELEASE) then counts in one phase for both,
        # never as answered in one phase and served in the one before.
        answered[0] += req.opcode not in one_way
        t0 = time.perf_counter()
        try:
            return answer(fn, req)
        finally:
            busy[0] += time.perf_counter() - t0

    server._answer = timed
    return busy, answered


def _serve(server) -> None:
    server.init()
    server.run()
