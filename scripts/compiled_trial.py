"""What a compiled build of daxfs's per-call modules would buy (issue 17),
measured beside the pure Python one in the same run.

A copy of the source tree in a temporary directory is compiled, then
``python -m daxfs.bench meta`` runs on the pure tree and on the compiled
one in turn, --runs times each, alternating, and the best of each side is
kept.  Nothing is installed or shipped: this only measures.

    python scripts/compiled_trial.py [--compiler cython|mypyc] [--runs 3] [--files 10000]

- ``cython`` (the default): Cython 3 compiles the modules as they are (pure
  Python mode: annotations not enforced as C types; FileSystem stays an
  ordinary class).
- ``mypyc``: mypyc compiles the core with FileSystem a native class, so
  that its attributes are C fields and its methods C calls.  The copy is
  edited first, mechanically (mypyc_edits): the mixins FileSystem is made
  of become traits declaring the attributes they use (typed Any), classes
  that subclass builtins stay Python classes, the allocator's numbers are
  typed Any (numpy scalars flow where ints are annotated), and every line
  mypy still rejects is marked ``# type: ignore``.  An upper bound on what
  compiling alone buys today, not a build: the edits lose type safety.

Needs a C compiler and Python's headers; installs Cython or mypy into the
running interpreter's environment when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The modules a create, stat, open, read or unlink runs through, and the
# FUSE server's.
MODULES = """alloc coherence data dir fields fileio followers fs fuse fusewire fuseuring
hugemap inode journal layout leases listing logical mapping mounts namespace path pins
region units""".split()


# What mypyc compiles: MODULES but for the FUSE server's, path (its str
# subclasses build themselves with object.__new__) and fileio (its io
# subclasses crash when an open file is put in a WeakSet).
MYPYC_MODULES = """alloc coherence data dir followers fs inode journal layout leases listing
logical mapfiles mapping namespace pins region""".split()

# FileSystem's mixins, which mypyc compiles as traits.
MIXINS = {"data": "DataPath", "namespace": "NamespacePath", "listing": "ListingPath"}
MIXINS["mapfiles"] = "MapPath"
MIXINS["logical"] = "LogicalPath"


def copy_of_src(workdir: Path) -> Path:
    tree = workdir / "src"
    shutil.copytree(SRC, tree, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return tree


def compiled_tree(workdir: Path, compiler: str) -> Path:
    """A copy of src/ with its modules compiled beside their sources."""
    tree = copy_of_src(workdir)
    if compiler == "mypyc":
        mypyc_build(tree / "daxfs")
        return tree
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


def mypyc_build(package: Path) -> None:
    """Edit the copy in ``package`` as the module doc says, then compile it."""
    files = [f"daxfs/{name}.py" for name in MYPYC_MODULES]
    mypyc_edits(package)
    for _ in range(4):  # (each pass may uncover errors the last one hid)
        errors = _errors(_run(["mypy", *files], package))
        if not errors:
            break
        _ignore_lines(package, errors)
    for _ in range(4):
        built = _run(["mypyc", *files], package)
        python_classes = [e for e in _errors(built) if "Inheriting from" in e[2]]
        if not python_classes:
            break
        _keep_python_classes(package, python_classes)
    if built.returncode:
        sys.exit(f"mypyc failed:\n{(built.stdout + built.stderr)[-4000:]}")


def _run(tool: list[str], package: Path) -> subprocess.CompletedProcess:
    flags = ["--ignore-missing-imports", "--follow-imports=silent"]
    return subprocess.run(
        [sys.executable, "-m", tool[0], *flags, *tool[1:]],
        cwd=package.parent,
        capture_output=True,
        text=True,
    )


def _errors(run: subprocess.CompletedProcess) -> list[tuple[str, int, str]]:
    """(file, line, message) of each error a mypy or mypyc run reported."""
    found = re.finditer(r"^daxfs/(\w+\.py):(\d+): error: (.*)$", run.stdout + run.stderr, re.M)
    return [(m[1], int(m[2]), m[3]) for m in found]


def mypyc_edits(package: Path) -> None:
    """Mixins as traits declaring the attributes they use; FileSystem
    declaring those other modules set on it; the allocator's ints as Any."""
    sources = {p.stem: p.read_text() for p in package.glob("*.py")}
    assigned = r"\.(\w+)\s*(?::[^=\n]*)?[|+-]?=[^=]"
    on_fs = set(re.findall(r"self" + assigned, sources["fs"]))
    set_elsewhere = {a for s in sources.values() for a in re.findall(r"\bfs" + assigned, s)}
    methods = {m for name in ["fs", *MIXINS] for m in re.findall(r"def (\w+)\(", sources[name])}
    declared: set[str] = set()
    for name, cls in MIXINS.items():
        text = sources[name]
        used = set(re.findall(r"self\.(\w+)", text))
        own = set(re.findall(r"self" + assigned, text))
        attrs = sorted((used & (on_fs | set_elsewhere | own)) - methods)
        declared |= set(attrs)
        # (A method's alias in a trait's body breaks its module's import.)
        text = re.sub(r"^    (\w+) = (\w+)$", partial(_forward, methods), text, flags=re.M)
        text = _declare(text, cls, attrs, "@trait")
        sources[name] = _import(text, "from mypy_extensions import trait")
    fs = sources["fs"]
    for attr in declared:  # (the trait's declaration is the one type mypyc allows)
        fs = re.sub(rf"(self\.{attr})\s*:[^=\n]*=", r"\1 =", fs)
        fs = re.sub(rf"^\s*self\.{attr}\s*:[^=\n]*\n", "", fs, flags=re.M)
    sources["fs"] = _declare(fs, "FileSystem", sorted(set_elsewhere - on_fs - declared), "")
    alloc = re.sub(r": int\b", ": Any", sources["alloc"])
    sources["alloc"] = _import(re.sub(r"-> int:", "-> Any:", alloc), "from typing import Any")
    for name, text in sources.items():
        (package / f"{name}.py").write_text(text)


def _forward(methods: set[str], alias: re.Match) -> str:
    """A method that calls the one ``alias`` names, if it names one."""
    name, target = alias[1], alias[2]
    if target not in methods:
        return alias[0]
    return f"    def {name}(self, *args, **kwargs):\n        return self.{target}(*args, **kwargs)"


def _declare(text: str, cls: str, attrs: list[str], decorator: str) -> str:
    """``text`` with class ``cls`` declaring ``attrs`` (typed Any) after its
    docstring, and decorated with ``decorator`` if given."""
    head = re.search(rf"^class {cls}\b.*\n(\s+\"\"\"(?:.|\n)*?\"\"\"\n)?", text, re.M)
    assert head, cls
    body = "".join(f"    {attr}: Any\n" for attr in attrs)
    text = text[: head.end()] + body + text[head.end() :]
    if decorator:
        text = text[: head.start()] + decorator + "\n" + text[head.start() :]
    return _import(text, "from typing import Any")


def _import(text: str, line: str) -> str:
    """``text`` with ``line`` among its imports (after ``from __future__``)."""
    if line in text.split("\n"):
        return text
    future = "from __future__ import annotations\n"
    return text.replace(future, future + line + "\n", 1)


def _ignore_lines(package: Path, errors: list[tuple[str, int, str]]) -> None:
    """Mark each line of ``errors`` ``# type: ignore`` (put before any
    comment, where mypy reads it)."""
    by_file: dict[str, set[int]] = {}
    for name, line, _ in errors:
        by_file.setdefault(name, set()).add(line)
    for name, lines in by_file.items():
        path = package / name
        text = path.read_text().split("\n")
        for n in lines:
            line = re.sub(r"  # type: ignore(\[[^]]*\])?", "", text[n - 1])
            code, hash_, comment = line.partition("  # ")
            text[n - 1] = code + "  # type: ignore" + (f"  # {comment}" if hash_ else "")
        path.write_text("\n".join(text))


def _keep_python_classes(package: Path, errors: list[tuple[str, int, str]]) -> None:
    """Classes that subclass builtins stay Python classes."""
    for name, line, _ in sorted(errors, key=lambda e: -e[1]):
        path = package / name
        text = path.read_text().split("\n")
        text.insert(line - 1, "@mypyc_attr(native_class=False)")
        path.write_text(_import("\n".join(text), "from mypy_extensions import mypyc_attr"))


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
    p.add_argument("--compiler", choices=("cython", "mypyc"), default="cython")
    p.add_argument("--runs", type=int, default=3, help="bench meta runs per side (3)")
    p.add_argument("--files", type=int, default=10_000, help="files per run (10,000)")
    args = p.parse_args()
    needs = {"cython": ("Cython", "cython>=3"), "mypyc": ("mypy", "mypy>=1.15")}
    module, package = needs[args.compiler]
    try:
        __import__(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
    with tempfile.TemporaryDirectory(prefix="daxfs-compiled-") as tmp:
        work = Path(tmp)
        sides = {"pure": SRC, "compiled": compiled_tree(work, args.compiler)}
        if not imports_from(sides["compiled"]).endswith(".so"):
            sys.exit("the compiled tree did not import its compiled modules")
        best: dict[str, dict[str, tuple[float, float]]] = {side: {} for side in sides}
        for _ in range(args.runs):
            for side, tree in sides.items():
                for phase, (kernel, dax) in bench(tree, args.files, work / "m.json").items():
                    was = best[side].get(phase, (0.0, 0.0))
                    best[side][phase] = (max(was[0], kernel), max(was[1], dax))
    print(f"bench meta, {args.files:,} files, best of {args.runs} runs a side, alternating;")
    print(f"compiled with {args.compiler}")
    print(f"{'phase':26} {'pure ops/s':>11} {'compiled':>11} {'compiled/pure':>14}", end="")
    print(f" {'kernel':>11} {'compiled/kernel':>16}")
    for phase, (_, pure) in best["pure"].items():
        kernel = max(best[side][phase][0] for side in sides)
        compiled = best["compiled"][phase][1]
        print(f"{phase:26} {pure:11,.0f} {compiled:11,.0f} {compiled / pure:14.2f}", end="")
        print(f" {kernel:11,.0f} {compiled / kernel:16.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
