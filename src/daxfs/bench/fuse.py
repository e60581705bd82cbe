"""fuse: shell work through ``daxfs mount``, beside the same commands on tmpfs.

A tar archive of --files files (sizes seeded, uniform in 0..--max-size
bytes, 250 per directory) is made in --pool-dir (tmpfs: /dev/shm by
default), untimed.  Then, on each side, best of --repeat, each a whole
command timed from outside:

    tar -x     tar -xf ARCHIVE -C DEST
    find       find DEST -printf '%s\\n'           (every entry's size)
    cat        find DEST -type f -exec cat {} +   (every file's bytes)
    cat again  the same, at once (what the kernel cached of the files may
               serve it)
    rm -r      rm -rf DEST/*

where DEST is

    tmpfs      a directory in --pool-dir
    daxfs      a ``daxfs mount -f`` of a pool file in that directory,
               served for the run (unmounted, and the pool checked
               clean, at the end); with --io-uring, ``daxfs mount -f
               --io-uring`` (root: the kernel's switch is turned on for
               the run and put back after)

The ratio is daxfs's time over tmpfs's (lower is better).  Issue 16 asks
for shell work near the kernel's; this says where it stands, and beside it
the two floors under it (fuse_floor.py): the same calls made in process
through the daxfs API (no FUSE), and the command's requests times the
cheapest round trip through the mount.  Needs /dev/fuse, the fuse3
package and daxfs[fuse].
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import fuseuring
from ..region import mount_of
from . import (
    MiB,
    Report,
    add_output_arguments,
    add_pool_dir_argument,
    check_pool_dir,
    command_line,
    environment,
    fmt_seconds,
    keep_fastest,
    next_pow2,
    seconds_by_side,
    timed_command,
)
from .fuse_floor import Counted, count_requests, in_process_phases, lookup_round_trip, tar_plan

HELP = "tar, find, cat and rm through a FUSE mount, beside tmpfs"
DESCRIPTION = __doc__
PER_DIR = 250
MOUNT_WAIT = 15.0  # seconds for the mount to appear, and the server to end
PHASES = [
    ("tar", "tar -x"),
    ("find", "find -printf %s"),
    ("cat", "cat every file"),
    ("cat2", "cat again"),
    ("rm", "rm -r"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=5000, help="files in the archive (5000)")
    p.add_argument("--max-size", type=int, default=48 * 1024, help="largest file, bytes (49152)")
    p.add_argument("--repeat", type=int, default=3, help="runs per phase and side; best kept (3)")
    p.add_argument(
        "--io-uring",
        action="store_true",
        help="serve the daxfs side with daxfs mount --io-uring (root: turns the kernel's "
        "FUSE over io_uring on for the run)",
    )
    add_pool_dir_argument(p, "where the archive, the tmpfs side and the pool file go")
    add_output_arguments(p)


def make_archive(path: str, files: int, max_size: int) -> int:
    """The tar of the benchmark's tree; its size in bytes of file data."""
    rng = random.Random(16)
    total = 0
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as src:
        for i in range(files):
            d = os.path.join(src, "tree", f"d{i // PER_DIR:03d}")
            if i % PER_DIR == 0:
                os.makedirs(d)
            size = rng.randint(0, max_size)
            with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
                f.write(rng.randbytes(size))
            total += size
        with tarfile.open(path, "w") as tar:
            tar.add(os.path.join(src, "tree"), arcname="tree")
    return total


def phase_commands(archive: str, dest: str) -> list[tuple[str, list[str]]]:
    """Every phase's command, in order, into the empty directory ``dest``
    (left empty)."""
    cat = ["find", dest, "-type", "f", "-exec", "cat", "{}", "+"]
    return [
        ("tar", ["tar", "-xf", archive, "-C", dest]),
        ("find", ["find", dest, "-printf", "%s\\n"]),
        ("cat", cat),
        ("cat2", cat),
        ("rm", ["rm", "-rf", os.path.join(dest, "tree")]),
    ]


def run_phases(archive: str, dest: str) -> dict[str, float]:
    """Every phase once into the empty directory ``dest``, left empty."""
    return {phase: timed_command(argv, dest) for phase, argv in phase_commands(archive, dest)}


def is_mounted(path: str) -> bool:
    """Is ``path`` a mount point now (from /proc/self/mountinfo)?"""
    return mount_of(path).mountpoint == os.path.realpath(path)


class Served:
    """``daxfs mount -f [--io-uring] POOL MNT`` for the block; unmounted and
    waited for."""

    def __init__(self, pool: str, mnt: str, io_uring: bool = False):
        self.pool, self.mnt, self.io_uring = pool, mnt, io_uring

    def __enter__(self) -> str:
        cli = [sys.executable, "-m", "daxfs.cli", "mount", "-f", self.pool, self.mnt]
        if self.io_uring:
            cli.insert(-2, "--io-uring")
        self.proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + MOUNT_WAIT
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._stop()
                err = self.proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
                raise SystemExit(f"fuse benchmark: daxfs mount failed: {err or 'timed out'}")
            time.sleep(0.02)
        return self.mnt

    def __exit__(self, *exc) -> None:
        self._stop()

    def _stop(self) -> None:
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        try:
            self.proc.wait(MOUNT_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        raise SystemExit("fuse benchmark: needs /dev/fuse and fusermount3 (the fuse3 package)")


def main(args: argparse.Namespace) -> int:
    if args.files < 1 or args.max_size < 0 or args.repeat < 1:
        raise SystemExit("--files and --repeat: at least 1; --max-size: at least 0")
    check_fuse()
    if args.io_uring and fuseuring.unsupported_here() and os.geteuid() != 0:
        raise SystemExit("fuse benchmark: --io-uring needs root (it turns the kernel's switch on)")
    import daxfs

    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-fuse-", dir=pool_dir)
    try:
        archive = os.path.join(work, "tree.tar")
        print(f"making an archive of {args.files:,} files ...", file=sys.stderr, flush=True)
        data = make_archive(archive, args.files, args.max_size)
        kernel, mnt = os.path.join(work, "tmpfs"), os.path.join(work, "mnt")
        os.mkdir(kernel)
        os.mkdir(mnt)
        # The tree's bytes in 4 KiB blocks, an inode per file, room to spare.
        pool_size = next_pow2(max(64 * MiB, 2 * (data + args.files * 20 * 1024)))
        pool, in_pool, count_pool = (
            os.path.join(work, name) for name in ("fuse.pool", "in-process.pool", "count.pool")
        )
        for p in (pool, in_pool, count_pool):
            daxfs.mkfs(p, pool_size)
        dirs, files = tar_plan(archive)
        best: dict[tuple[str, str], float] = {}
        # (The kernel's switch, with --io-uring, on for the timed run and the count.)
        with fuseuring.turned_on() if args.io_uring else contextlib.nullcontext():
            with Served(pool, mnt, args.io_uring), daxfs.mount(in_pool) as in_fs:
                in_fs.mkdir("/dest")
                sides: list[tuple[str, Callable[[], dict[str, float]]]] = [
                    ("tmpfs", lambda: run_phases(archive, kernel)),
                    ("daxfs", lambda: run_phases(archive, mnt)),
                    ("in process", lambda: in_process_phases(in_fs, dirs, files, "/dest")),
                ]
                for i in range(args.repeat):
                    for side, run in sides[i % 3 :] + sides[: i % 3]:  # (each goes first in turn)
                        for phase, seconds in run().items():
                            keep_fastest(best, side, phase, seconds)
                round_trip = lookup_round_trip(mnt, args.repeat)
            for checked in (pool, in_pool):
                report = daxfs.check(checked)
                if not report.ok:
                    why = f"{checked} does not check clean: {report.errors}"
                    raise RuntimeError(f"fuse benchmark: {why}")
            commands = phase_commands(archive, mnt)
            counted = count_requests(count_pool, mnt, commands, args.io_uring)
        floors = Floors(round_trip, counted)
        make_report(args, best, floors, data, environment(pool_dir)).emit(args.format, args.json)
    finally:
        if is_mounted(os.path.join(work, "mnt")):
            subprocess.run(["fusermount3", "-uz", os.path.join(work, "mnt")], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


@dataclass
class Floors:
    """What FUSE's round trips alone cost (fuse_floor.py): the cheapest
    request's seconds, and what the counting server saw of each phase (its
    requests, those answered, its handlers' seconds)."""

    round_trip: float
    counted: Counted


def make_report(
    args, best: dict[tuple[str, str], float], floors: Floors, data: int, env: str
) -> Report:
    rows, ratios, in_process, trips, server = [], {}, {}, {}, {}
    counted = floors.counted
    for phase, label in PHASES:
        k, d, p = (best[(side, phase)] for side in ("tmpfs", "daxfs", "in process"))
        n = counted.requests[phase]
        ratios[phase], in_process[phase] = d / k, p / k
        trips[phase] = counted.answered[phase] * floors.round_trip / k
        server[phase] = counted.handling[phase] / k
        rows.append(
            [
                label,
                fmt_seconds(k),
                fmt_seconds(d),
                f"{ratios[phase]:,.1f}",
                f"{in_process[phase]:,.1f}",
                f"{n / args.files:,.1f}",
                f"{trips[phase]:,.1f}",
                f"{server[phase]:,.1f}",
            ]
        )
    notes = [
        f"a tar of {args.files:,} files ({data / 1e6:,.0f} MB of data, {PER_DIR} per "
        f"directory); whole commands, best of {args.repeat}, sides alternating"
        + ("; daxfs mount --io-uring" if args.io_uring else ""),
        "x tmpfs: daxfs's time over tmpfs's (lower is better)",
        "in process: the same file-system calls through the daxfs API, no FUSE; requests: "
        "what the kernel sent the server, per file; round trips: those it waited for (all but "
        f"FORGETs) times the cheapest one ({floors.round_trip * 1e6:,.1f} us, a LOOKUP "
        "answered ENOENT), over tmpfs's time.  No server over this FileSystem beats either "
        "floor (fuse_floor.py)",
        "server: the seconds the server's handlers spent on those requests (FileSystem calls "
        "and fuse.py's Python; no kernel, no reply), over tmpfs's time",
    ]
    return Report(
        title=f"daxfs fuse benchmark ({args.files:,} files)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=[
            "command",
            "tmpfs",
            "daxfs mount",
            "x tmpfs",
            "in process x",
            "requests/file",
            "round trips x",
            "server x",
        ],
        rows=rows,
        verdict=[],
        data={
            "files": args.files,
            "bytes": data,
            "ratio": ratios,
            "in_process_ratio": in_process,
            "requests": floors.counted.requests,
            "answered": floors.counted.answered,
            "round_trip_seconds": floors.round_trip,
            "round_trips_ratio": trips,
            "server_ratio": server,
            "handling_seconds": floors.counted.handling,
            "counting_run_seconds": floors.counted.wall,
            "best_seconds": seconds_by_side(best),
        },
    )
