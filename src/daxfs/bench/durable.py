"""durable: what making small files durable costs, by backend (bench meta --durable).

The create phase of ``bench meta`` (open "wb" + write 4 KiB + close, N
files in one directory), timed on five sides in the same run:

    kernel          builtin open on --pool-dir, no fsync
    kernel+fsync    the same, with os.fsync of each file before its close
    daxfs           a pool file in --pool-dir (on a disk file system: the
                    page-cache backend, group commit: durable at fsync,
                    sync, unmount and every 5 s)
    daxfs sync      the same pool mounted with commit="sync" (each
                    operation durable on return)
    daxfs on tmpfs  a pool in /dev/shm (no flush at all): the ceiling for
                    a pool whose durability costs nothing between commits
    (the first and third are the main table's rows, measured again here)

Issue 14's aims, as ratios of these: group commit at least 0.8x of the
tmpfs pool and 0.5x of the kernel without fsync; sync mode at least 1.0x
of the kernel with fsync per file.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from . import Report, command_line, fmt_rate, fmt_ratio, timed

TMPFS_DIR = "/dev/shm"


class _FsyncedFile:
    """A file opened for writing whose close first fsyncs it."""

    def __init__(self, path: str, mode: str):
        self.f = open(path, mode)

    def write(self, data) -> int:
        return self.f.write(data)

    def __enter__(self) -> _FsyncedFile:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
        finally:
            self.f.close()


def _create_rate(side, payload: bytes) -> float:
    """bench meta's create phase on ``side`` (its files unlinked after,
    untimed): creates per second."""
    from .meta import _create, _unlink  # (meta imports this module)

    n, seconds = timed(lambda: _create(side, payload))
    _unlink(side, payload)
    return n / seconds


def measure(work: str, names: list[str], payload: bytes, rounds: int, pool_size: int):
    """{side: best create rate}, the sides interleaved round by round."""
    import daxfs

    from .meta import Side

    kdir = os.path.join(work, "durable-kernel")
    os.mkdir(kdir)
    kpaths = [os.path.join(kdir, n) for n in names]
    tmp_work = tempfile.mkdtemp(prefix="daxfs-bench-durable-", dir=TMPFS_DIR)
    mounts = []
    try:
        sides = [
            Side("kernel", open, os.stat, os.listdir, os.unlink, kdir, kpaths),
            Side("kernel+fsync", _FsyncedFile, os.stat, os.listdir, os.unlink, kdir, kpaths),
        ]
        pools = (
            ("daxfs", work, None),
            ("daxfs sync", work, "sync"),
            ("daxfs on tmpfs", tmp_work, None),
        )
        for name, where, commit in pools:
            pool = os.path.join(where, name.replace(" ", "-") + ".pool")
            daxfs.mkfs(pool, pool_size, force=True)
            fs = daxfs.mount(pool, commit=commit)
            mounts.append(fs)
            fs.mkdir("/d")
            dpaths = ["/d/" + n for n in names]
            sides.append(Side(name, fs.open, fs.stat, fs.listdir, fs.unlink, "/d", dpaths))
        best: dict[str, float] = {side.name: 0.0 for side in sides}
        for _ in range(rounds):
            for side in sides:
                best[side.name] = max(best[side.name], _create_rate(side, payload))
        return best, mounts[0].info()["durability"]
    finally:
        for fs in mounts:
            fs.close()
        shutil.rmtree(tmp_work, ignore_errors=True)


def durable_report(args, best: dict[str, float], durability: str, env: str) -> Report:
    dax, sync = best["daxfs"], best["daxfs sync"]
    rows = [[side, fmt_rate(rate), fmt_ratio(dax / rate)] for side, rate in best.items()]
    verdict = [
        f"daxfs pool on {args.pool_dir} (durability {durability}, group commit): "
        f"{dax / best['daxfs on tmpfs']:.2f}x a pool on tmpfs (issue 14's aim: 0.8x), "
        f"{dax / best['kernel']:.2f}x the kernel without fsync (aim: 0.5x, with issue 17's "
        "per-call work)",
        f"daxfs sync mode (each operation durable on return): {sync / best['kernel+fsync']:.2f}x "
        "the kernel with fsync per file (aim: 1.0x)",
    ]
    notes = [
        f"create+write 4K+close of {args.files:,} files in one directory, ops/s, best of "
        f"{args.rounds} rounds (sides interleaved); kernel+fsync: os.fsync of each file "
        f"before its close; daxfs on tmpfs: a pool in {TMPFS_DIR}",
        "daxfs / side: the pool on --pool-dir against that side (higher is better)",
    ]
    return Report(
        title="durable creates by backend",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["side", "creates/s", "daxfs / side"],
        rows=rows,
        verdict=verdict,
        data={"best_creates_per_s": best, "durability": durability},
    )
