"""Reproduce the rare loss test_leases.py's two-filler test meets: run its
two processes (FILLER) on fresh pools until a file one of them was told it
wrote reads back wrong, then say where each wrong 4 KiB block's bytes came
from (the fillers' data is a function of their seed and file number).

    PYTHONPATH=src python scripts/window_race.py [ATTEMPTS]

Seen 2026-12-06 before the fix: about one run in 40 to 140, a 1 MiB or
1.5 MiB file of one process overwritten from its middle on by blocks of a
file the other process wrote later; the pool checked clean.  The cause: a
process that took the other's windows back waited for its stores, not its
commit, so it leased chunks the other was about to commit into; the owner
now checks its windows again before it commits (leases.Leases.still_ours,
DESIGN.md "Windows of one's own").
"""

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import daxfs  # noqa: E402
from conftest import started_together  # noqa: E402
from test_leases import FILLER, FILLER_SIZES  # noqa: E402


def filler_data(seed: int, files: int) -> dict[int, bytes]:
    """What FILLER with ``seed`` writes as its file i, for i = 1..files."""
    rng = random.Random(seed)
    return {i: rng.randbytes(rng.choice(FILLER_SIZES)) for i in range(1, files + 1)}


def one_run(pool: str) -> tuple[dict[str, str], list]:
    daxfs.mkfs(pool, 48 << 20, force=True)
    kids = started_together(FILLER, [[pool, f"p{i}", str(i)] for i in range(2)])
    results = [json.loads(kid.stdout.readline()) for kid in kids]
    for kid in kids:
        kid.wait(timeout=120)
    return {p: h for files, _counters in results for p, h in files.items()}, results


def explain(pool: str, bad: list[str]) -> None:
    data = {f"p{seed}": filler_data(seed, 400) for seed in range(2)}
    where = {}
    for tag, files in data.items():
        for i, blob in files.items():
            for off in range(0, len(blob), 4096):
                where.setdefault(hashlib.sha1(blob[off : off + 4096]).digest(), (tag, i, off))
    with daxfs.mount(pool, readonly=True) as fs:
        for path in bad:
            tag, i = path.split("/")[1], int(path.rsplit("/f", 1)[1])
            got, want = fs.read_bytes(path), data[tag][i]
            extents = [(e.file_offset, e.device_offset, e.length) for e in fs.iomap(path)]
            print(path, len(want), "bytes; extents", extents)
            for off in range(0, len(want), 4096):
                block = got[off : off + 4096]
                if block != want[off : off + 4096]:
                    print(f"  at {off}: from {where.get(hashlib.sha1(block).digest())}")
    print("check ok:", daxfs.check(pool).ok)


def main(attempts: int) -> int:
    for attempt in range(attempts):
        work = tempfile.mkdtemp(dir="/dev/shm")
        pool = os.path.join(work, "pool")
        written, results = one_run(pool)
        with daxfs.mount(pool, readonly=True) as fs:
            bad = [
                p for p, h in written.items() if hashlib.sha256(fs.read_bytes(p)).hexdigest() != h
            ]
        if bad:
            print(f"run {attempt + 1}: {bad} read back wrong; counters {[r[1] for r in results]}")
            explain(pool, bad)
            return 1
        shutil.rmtree(work)
    print(f"{attempts} runs, every file whole")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
