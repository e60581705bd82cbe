"""daxfs demo: a tour on the default pool.

Formats the default pool (256 MiB, reformatted every time), copies in two
small text files, an 8 MiB binary and the daxfs package's own source tree,
lists them with their extent maps (the getmap table: small files sit in
4 KiB blocks, the binary in 2 MiB chunks that huge pages can map), shows the
space left and finishes with a consistency check.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import typer

from ..check import check
from ..fs import FileSystem
from ..hugemap import eligible_total
from ..mkfs import mkfs
from ..units import human
from . import df, getmap, ls
from .common import EXIT_UNFIXED, command, console, default_pool, mounted, table
from .cp import Meter, Place, Sides, copy

DEMO_SIZE = 256 << 20
BINARY_SIZE = 8 << 20
SMALL_FILES = {
    "hello.txt": "Hello from daxfs: these bytes live in one memory region.\n",
    "notes.txt": "Files of 2 MiB or more get whole 2 MiB chunks,\n"
    "so the kernel can map them with huge pages.\n",
}


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
        sides = Sides(stack)
        copy(Place(sides.host, str(samples)), sides.place(f"{pool}:/"), True, Meter(None, 0))


def source_summary(fs: FileSystem, top: str) -> str:
    files = size = huge = 0
    for dirpath, _dirs, names in fs.walk(top):
        for name in names:
            path = f"{dirpath}/{name}"
            st = fs.stat(path)
            files, size = files + 1, size + st.st_size
            huge += eligible_total(fs.iomap(path), st.st_size)
    return f"{top}: {files} files, {human(size)}, {huge} bytes 2 MiB-eligible"


def show(fs: FileSystem) -> None:
    out = console()
    out.print("\n$ daxfs ls -l POOL:/demo")
    ls.print_listing(fs, "/demo", long=True)
    for name in (*SMALL_FILES, "random.bin"):
        out.print(f"\n$ daxfs getmap POOL:/demo/{name}")
        getmap.show_map(fs, f"/demo/{name}")
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


@command
def demo_cmd() -> None:
    """Format the default pool, fill it with samples and show where the bytes went."""
    pool = default_pool()
    out = console()
    sb = mkfs(pool, DEMO_SIZE, force=True)
    out.print(f"formatted {pool} ({human(sb.region_size)})")
    with tempfile.TemporaryDirectory(prefix="daxfs-demo-") as tmp:
        samples = make_samples(Path(tmp))
        copy_in(pool, samples)
    out.print("copied hello.txt, notes.txt, random.bin (8 MiB) and the daxfs sources to /demo")
    with mounted(pool, readonly=True) as fs:
        show(fs)
    code = run_check(pool)
    out.print(f"\nthe pool stays at {pool}; try: daxfs ls -l {pool}:/demo")
    if code:
        raise typer.Exit(code)
