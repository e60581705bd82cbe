"""What a compiled build of daxfs's per-call modules would buy (issue 17),
measured beside the pure Python one in the same run.

Cython 3 compiles the modules as they are (pure Python mode: annotations
not enforced as C types) into a copy of the source tree in a temporary
directory; then ``python -m daxfs.bench meta`` runs on the pure tree and
on the compiled one in turn, --runs times each, alternating, and the best
of each side is kept.  Nothing is installed or shipped: this only
measures.

    python scripts/compiled_trial.py [--runs 3] [--files 10000]

Needs a C compiler and Python's headers; installs Cython into the running
interpreter's environment when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The modules a create, stat, open, read or unlink runs through, and the
# FUSE server's.
MODULES = """alloc coherence data dir fields fileio followers fs fuse fusewire fuseuring
hugemap inode journal layout leases listing mapping mounts namespace path pins region
units""".split()


def compiled_tree(workdir: Path) -> Path:
    """A copy of src/ with MODULES compiled beside their sources."""
    tree = workdir / "src"
    shutil.copytree(SRC, tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    package = tree / "daxfs"
    files = [f"{name}.py" for name in MODULES]
    built = subprocess.run(
        [sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", "-q"]
        + ["-j", str(os.cpu_count() or 1), "-X", "annotation_typing=False", *files],
        cwd=package,
        capture_output=True,
        text=True,
    )
    if built.returncode:  # (the compiler's warnings are shown only then)
        sys.exit(f"cythonize failed:\n{built.stderr[-4000:]}")
    return tree


def imports_from(tree: Path) -> str:
    """Where daxfs.fs comes from with ``tree`` first on the path."""
    return subprocess.run(
        [sys.executable, "-c", "import daxfs.fs; print(daxfs.fs.__file__)"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def bench(tree: Path, files: int, out: Path) -> dict[str, tuple[float, float]]:
    """phase -> (kernel ops/s, daxfs ops/s) of one `bench meta` run."""
    subprocess.run(
        [sys.executable, "-m", "daxfs.bench", "meta", "--files", str(files), "--rounds", "1"]
        + ["--format", "plain", "--json", str(out)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rows = json.loads(out.read_text())["rows"]
    return {row[0]: (_number(row[1]), _number(row[2])) for row in rows}


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="bench meta runs per side (3)")
    p.add_argument("--files", type=int, default=10_000, help="files per run (10,000)")
    args = p.parse_args()
    try:
        import Cython  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cython>=3"], check=True)
    with tempfile.TemporaryDirectory(prefix="daxfs-compiled-") as tmp:
        work = Path(tmp)
        sides = {"pure": SRC, "compiled": compiled_tree(work)}
        if not imports_from(sides["compiled"]).endswith(".so"):
            sys.exit("the compiled tree did not import its compiled modules")
        best: dict[str, dict[str, tuple[float, float]]] = {side: {} for side in sides}
        for _ in range(args.runs):
            for side, tree in sides.items():
                for phase, (kernel, dax) in bench(tree, args.files, work / "m.json").items():
                    was = best[side].get(phase, (0.0, 0.0))
                    best[side][phase] = (max(was[0], kernel), max(was[1], dax))
    print(f"bench meta, {args.files:,} files, best of {args.runs} runs a side, alternating")
    print(f"{'phase':26} {'pure ops/s':>11} {'compiled':>11} {'compiled/pure':>14}")
    for phase, (_, pure) in best["pure"].items():
        compiled = best["compiled"][phase][1]
        print(f"{phase:26} {pure:11,.0f} {compiled:11,.0f} {compiled / pure:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
