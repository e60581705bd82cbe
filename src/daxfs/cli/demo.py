"""daxfs demo: a tour on the default pool.

Formats the default pool (512 MiB, reformatted every time), copies in two
small text files, an 8 MiB binary and the daxfs package's own source tree,
then writes a dataset of 256 MiB of float64 straight into a mapped file
(fs.map(..., "w+") filled by numpy, then persist()).  It lists the files with their extent
maps (small files sit in 4 KiB blocks, large ones in 2 MiB chunks that huge
pages can map), maps the dataset and touches it to show what the kernel gave
(2 MiB or 4 KiB pages, from /proc/self/smaps), times random reads of it
against numpy.memmap of the same bytes in a /dev/shm file (4 KiB pages), and
says how to get 2 MiB pages when the pool's backing cannot give them.  It
ends with the space left and a consistency check.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from ..check import check
from ..fs import FileSystem
from ..hugemap import eligible_total
from ..mkfs import mkfs
from ..region import holds_a_pool, mount_of
from ..units import human, parse_size
from . import df, getmap, ls
from .common import EXIT_UNFIXED, CliError, command, console, default_pool, mounted, table
from .cp import Meter, Place, Sides, copy

MiB = 1 << 20
DEMO_SIZE = 512 * MiB
DATA_SIZE = "256M"
DATA_PATH = "/demo/data.f64"
BINARY_SIZE = 8 * MiB
READS = 2_000_000
REPEATS = 3
SMALL_FILES = {
    "hello.txt": "Hello from daxfs: these bytes live in one memory region.\n",
    "notes.txt": "Files of 2 MiB or more get whole 2 MiB chunks,\n"
    "so the kernel can map them with huge pages.\n",
}
HUGE_HINT = [
    "to get 2 MiB pages, put the pool on a huge tmpfs:",
    "    sudo mkdir -p /mnt/huge",
    "    sudo mount -t tmpfs -o huge=always,size=1G,mode=1777 tmpfs /mnt/huge",
    "    DAXFS_POOL=/mnt/huge/pool daxfs demo",
    "or on a device-dax device (DAXFS_POOL=/dev/daxX.Y) or a file on an fs-dax mount (-o dax).",
]


def make_samples(root: Path) -> Path:
    """Fill ``root/demo`` with the sample files and a copy of the daxfs sources."""
    top = root / "demo"
    top.mkdir()
    for name, text in SMALL_FILES.items():
        (top / name).write_text(text)
    (top / "random.bin").write_bytes(random.Random(2024).randbytes(BINARY_SIZE))
    package = Path(__file__).resolve().parent.parent
    shutil.copytree(
        package, top / "src" / "daxfs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return top


def copy_in(pool: Path, samples: Path) -> None:
    with ExitStack() as stack:
        destination = f"{pool}:/"
        sides = Sides(stack, destination)
        copy(Place(sides.host, str(samples)), sides.place(destination), True, Meter(None, 0))


def write_dataset(fs: FileSystem, path: str, count: int) -> float:
    """``count`` random float64 written straight into a mapped pool file; seconds."""
    import numpy as np

    t0 = time.perf_counter()
    rng = np.random.default_rng(2024)
    with fs.map(path, "w+", size=count * 8) as m:
        a = m.ndarray(np.float64)
        step = 4 * MiB
        for off in range(0, count, step):
            rng.random(out=a[off : off + step])
        del a
        m.persist()
    return time.perf_counter() - t0


def source_summary(fs: FileSystem, top: str) -> str:
    files = size = huge = 0
    for dirpath, _dirs, names in fs.walk(top):
        for name in names:
            path = f"{dirpath}/{name}"
            st = fs.stat(path)
            files, size = files + 1, size + st.st_size
            huge += eligible_total(fs.iomap(path), st.st_size)
    return f"{top}: {files} files, {human(size)}, {huge} bytes 2 MiB-eligible"


# --------------------------------------------------------------------------
# random reads: daxfs's mapping against numpy.memmap of the same bytes
# --------------------------------------------------------------------------
def _best_reads(arr, idx, out) -> tuple[float, float]:
    """(best seconds, checksum) of numpy.take(arr, idx, out=out).sum()."""
    import numpy as np

    best, total = float("inf"), 0.0
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        np.take(arr, idx, out=out, mode="clip")
        total = float(out.sum())
        best = min(best, time.perf_counter() - t0)
    return best, total


def _pages(pages: dict[str, int]) -> str:
    return f"2 MiB pages {human(pages['pmd_bytes'])}, 4 KiB pages {human(pages['pte_bytes'])}"


def compare_reads(fs: FileSystem, pool: Path, path: str) -> str | None:
    """Time random reads of ``path`` through fs.map and through numpy.memmap of
    a copy in /dev/shm; print both and the ratio.  Returns huge_pages_note."""
    import numpy as np

    from ..mapping import smaps_usage

    out = console()
    count = fs.stat(path).st_size // 8
    reads = READS
    idx = np.random.default_rng(7).integers(0, count, size=reads, dtype=np.int64)
    buf = np.zeros(reads, dtype=np.float64)
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    out.print(f"\n{reads:,} random 8-byte reads of {path} (numpy.take + sum), best of {REPEATS}:")
    with fs.map(path, "r") as m:
        arr = m.ndarray(np.float64)
        dax_s, dax_sum = _best_reads(arr, idx, buf)
        dax_pages, note = m.page_sizes(), m.huge_pages_note
        del arr
        fd, copy_path = tempfile.mkstemp(prefix="daxfs-demo-", suffix=".f64", dir=shm)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(m.buffer)
            mm = np.memmap(copy_path, dtype=np.float64, mode="r")
            mem_s, mem_sum = _best_reads(mm, idx, buf)
            lo = mm.ctypes.data
            mem_pages = smaps_usage(lo, lo + mm.nbytes)
            del mm
        finally:
            os.unlink(copy_path)
    if dax_sum != mem_sum:
        raise RuntimeError("demo: the two mappings read different values")
    shm_fs = mount_of(shm)
    rows = [
        ("daxfs fs.map", f"pool on {mount_of(str(pool)).fstype}", dax_s, dax_pages),
        ("numpy.memmap", f"{shm} ({shm_fs.fstype})", mem_s, mem_pages),
    ]
    for name, where, secs, pages in rows:
        out.print(
            f"  {name:<13}{secs * 1e3:7.1f} ms  {secs / reads * 1e9:5.1f} ns/read  "
            f"{where}: {_pages(pages)}",
            markup=False,
        )
    ratio = mem_s / dax_s
    out.print(f"daxfs random reads: {ratio:.2f}x as fast as numpy.memmap here")
    if ratio < 1.3:
        out.print(
            f"(4 KiB pages cost little over {human(count * 8)} on this machine; the gap "
            "grows with the data: python -m daxfs.bench map --size 8G)"
        )
    return note


def show(fs: FileSystem, pool: Path) -> None:
    out = console()
    out.print("\n$ daxfs ls -l POOL:/demo")
    ls.print_listing(fs, "/demo", long=True)
    for name in ("hello.txt", "random.bin"):
        out.print(f"\n$ daxfs getmap POOL:/demo/{name}")
        getmap.show_map(fs, f"/demo/{name}")
    out.print(f"\n$ daxfs getmap POOL:{DATA_PATH} --touch")
    getmap.show_map(fs, DATA_PATH)
    getmap.show_touch(fs, DATA_PATH)
    note = compare_reads(fs, pool, DATA_PATH)
    if note:
        out.print("")
        for line in HUGE_HINT:
            out.print(line, markup=False)
    out.print("\n" + source_summary(fs, "/demo/src"))
    out.print("\n$ daxfs df POOL")
    t = table("", "size", "detail", right=("size",))
    for row in df.rows(fs.statvfs()):
        t.add_row(*row)
    out.print(t)


def run_check(pool: Path) -> int:
    """Check the pool and print the verdict; returns the exit status for demo."""
    out = console()
    out.print(f"\n$ daxfs fsck {pool}")
    try:
        report = check(pool)
    except NotImplementedError:
        out.print("check not available")
        return 0
    for line in report.errors:
        out.print(f"error: {line}", markup=False)
    if not report.ok:
        return EXIT_UNFIXED
    out.print("clean")
    return 0


def refuse_to_format_other_data(pool: Path) -> None:
    """The demo reformats its pool each run: only a new or empty file, or a
    pool holding nothing but what the demo makes, may be formatted."""
    if not pool.exists() or (pool.is_file() and pool.stat().st_size == 0):
        return
    if not holds_a_pool(str(pool)):
        raise CliError(f"{pool}: not a daxfs pool; the demo formats its pool, {_ELSEWHERE}")
    try:
        with mounted(pool, readonly=True) as fs:
            others = sorted(set(fs.listdir("/")) - {"demo", "lost+found"})
    except OSError as e:  # CorruptionError included: it may hold someone's data
        raise CliError(f"{pool}: {e.strerror or e}; not formatting it, {_ELSEWHERE}") from None
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CliError(f"{pool}: holds files the demo did not make ({shown}); {_ELSEWHERE}")


_ELSEWHERE = "so point DAXFS_POOL at a new file"


def pool_size_for(data: int) -> int:
    """The demo pool: 512 MiB, or room for a larger dataset plus the samples."""
    need = data + data // 8 + 128 * MiB
    return max(DEMO_SIZE, -(-need // (2 * MiB)) * 2 * MiB)


@command
def demo_cmd(
    data_size: Annotated[
        str, typer.Option("--data-size", help="size of the float64 dataset (256M)")
    ] = DATA_SIZE,
) -> None:
    """Format the default pool, fill it with samples and a dataset, map it and
    show where the bytes went and what pages the kernel used."""
    data = parse_size(data_size)
    count = data // 8
    if count < 1:
        raise ValueError("--data-size must be at least 8 bytes")
    pool = default_pool()
    out = console()
    refuse_to_format_other_data(pool)
    sb = mkfs(pool, pool_size_for(data), force=True)
    out.print(f"formatted {pool} ({human(sb.region_size)})")
    with tempfile.TemporaryDirectory(prefix="daxfs-demo-") as tmp:
        samples = make_samples(Path(tmp))
        copy_in(pool, samples)
    out.print("copied hello.txt, notes.txt, random.bin (8 MiB) and the daxfs sources to /demo")
    with mounted(pool) as fs:
        secs = write_dataset(fs, DATA_PATH, count)
    out.print(
        f"wrote {DATA_PATH}: {count:,} float64 ({human(count * 8)}) through "
        f'fs.map(..., "w+") and numpy in {secs:.2f} s'
    )
    with mounted(pool, readonly=True) as fs:
        show(fs, pool)
    code = run_check(pool)
    out.print(f"\nthe pool stays at {pool}; try: daxfs getmap {pool}:{DATA_PATH} --touch")
    if code:
        raise typer.Exit(code)
