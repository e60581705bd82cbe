"""age: aging gracefully.  daxfs's huge-page allocator against its naive
allocator and ext4, after the same long history of churn.

For each --utilization (default 0.75 and 0.90), one history is generated
(daxfs.age: a lognormal body and Pareto tail of file sizes, creates,
appends, overwrites, truncates and deletes in nested directories, until
--churn times the capacity has been written at that utilization) and
applied, one after the other, to three file systems of --size bytes:

    daxfs   a pool with the default (hugepage) allocator; the history is
            generated here and written to a trace as it goes
    naive   a pool with the naive first-fit allocator, replaying the trace
    ext4    an ext4 image (mkfs.ext4 -b 4096 -m 0) loop-mounted as root,
            replaying the trace (skipped, with a note, if not root or the
            mount fails; always unmounted and removed)

Every --samples-th part of the run, the 2 MiB-eligible fraction of
large-file bytes is measured (outside the timed part), for the plot.  At the
end, the same figures for every side (daxfs.aging_stats; ext4 through
FIEMAP and dumpe2fs's free block list):

    2 MiB-eligible       bytes of files >= 2 MiB lying in 2 MiB windows that one
                         extent covers, aligned in the file and on the device,
                         over their bytes in whole windows (also over all bytes)
    free in whole chunks free space in wholly free aligned 2 MiB chunks
    extents per large file
    small-file waste     allocated minus size of files < 2 MiB, over their size
                         (famfs, which gives every file 2 MiB, shown beside)
    pmd / pte            daxfs sides: --touch large files mapped with fs.map,
                         every 4 KiB read, /proc/self/smaps (pools on a huge
                         tmpfs: --huge-dir, or one mounted as root)
    ops/s                the history's operations per second

and the trees are compared (names, sizes, content hashes): every side must
end with exactly the files of the history.  PNGs go to --out-dir:
age-eligible.png (eligible fraction against churn) and age-map-NN.png (the
allocation map of each side at NN% utilization).  The project's aims: at
least 95% of large-file bytes 2 MiB-eligible at 75% and at 90%, and space
lost to small files at most 10% of their size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from ..fs import DEFAULT_TAILS, TAILS
from . import (
    DEFAULT_POOL_DIR,
    GiB,
    MiB,
    Report,
    add_output_arguments,
    check_pool_dir,
    command_line,
    environment,
)

HELP = "aging: 2 MiB eligibility after long churn, daxfs vs its naive allocator vs ext4"
DESCRIPTION = __doc__
AIM_ELIGIBLE = 0.95
AIM_SMALL_WASTE = 0.10
SIDES = ("daxfs", "naive", "ext4")


@dataclass
class SideRun:
    """What one file system did with one history."""

    name: str
    utilization: float
    series: list[tuple[float, float]] = field(default_factory=list)  # (churn, eligible)
    ops: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    used: float = 0.0  # the file system's own utilization at the end
    stats: object = None  # aging_stats.AgingStats
    blocks: object = None  # aging_stats.BlockMap
    pages: dict[str, int] = field(default_factory=dict)
    tree: dict = field(default_factory=dict)  # age.tree_of_*: names, sizes, content hashes
    tree_ok: bool | None = None  # daxfs: as the generator's model; others: as daxfs's tree
    clean: bool | None = None  # daxfs.check after the run
    note: str | None = None

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------
# the daxfs sides
# --------------------------------------------------------------------------
def run_daxfs(
    name: str, allocator: str, pool_dir: str, size: int, u: float, args, trace: str
) -> SideRun:
    """Age a fresh pool: generate the history (and write ``trace``) when the
    trace does not exist yet, else replay it."""
    import daxfs

    from ..age import (
        AgeParams,
        DaxTarget,
        generate,
        model_tree,
        read_trace,
        sizes_of,
        tree_of_fs,
        write_trace,
    )
    from ..aging_stats import (
        dax_block_map,
        dax_file_maps,
        eligible_fraction,
        file_stats,
        touch_sample,
    )

    run = SideRun(name, u)
    pool = os.path.join(pool_dir, f"age-{name}-{os.getpid()}.pool")
    try:
        daxfs.mkfs(pool, size, force=True, allocator=allocator)
        with daxfs.mount(pool, tails=args.tails) as fs, contextlib.ExitStack() as stack:
            capacity = fs.statvfs().total_bytes
            gen = None
            if os.path.exists(trace):
                _header, ops = read_trace(stack.enter_context(open(trace)))
            else:
                params = AgeParams(capacity, u, args.churn, args.seed, args.tails)
                gen = generate(params)
                tf = stack.enter_context(open(trace, "w"))
                ops = write_trace(tf, params.header(), gen)

            res = _replay_sampled(
                run, ops, DaxTarget(fs), capacity, lambda: dax_file_maps(fs), name, args
            )
            files = dax_file_maps(fs)
            run.series.append((res.written / capacity, eligible_fraction(files)))
            run.blocks = dax_block_map(fs, files)
            run.blocks.label = f"daxfs, {allocator} allocator"
            run.stats = file_stats(files, run.blocks)
            vfs = fs.statvfs()
            run.used = 1 - vfs.free_bytes / vfs.total_bytes
            run.pages = touch_sample(fs, files, args.touch, args.seed)
            run.tree = tree_of_fs(fs)
            if gen is not None:
                run.tree_ok = sizes_of(run.tree) == model_tree(gen)
        run.clean = daxfs.check(pool).ok
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pool)
    return run


def _every(capacity: int, args) -> int:
    return max(1, int(capacity * args.churn / args.samples))


# --------------------------------------------------------------------------
# the ext4 side
# --------------------------------------------------------------------------
class Ext4Image:
    """A sparse ext4 image in ``directory`` loop-mounted on a temporary
    directory; close() unmounts and removes both whatever happened."""

    def __init__(self, directory: str, size: int):
        self.image = os.path.join(directory, f"age-ext4-{os.getpid()}.img")
        self.mnt: str | None = None
        with open(self.image, "wb") as f:
            f.truncate(size)
        try:
            _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0",
                  "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image])  # fmt: skip
            mnt = tempfile.mkdtemp(prefix="daxfs-bench-age-ext4-")
            try:
                _run(["mount", "-o", "loop", self.image, mnt])
            except BaseException:
                os.rmdir(mnt)
                raise
            self.mnt = mnt
        except BaseException:
            self.close()
            raise

    def unmount(self) -> None:
        if self.mnt:
            subprocess.run(["umount", self.mnt], check=False, capture_output=True)
            with contextlib.suppress(OSError):
                os.rmdir(self.mnt)
            self.mnt = None

    def close(self) -> None:
        self.unmount()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.image)


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise OSError(f"{' '.join(cmd[:2])} failed: {(r.stderr or r.stdout).strip()}")


def ext4_unavailable() -> str | None:
    """Why the ext4 side cannot run here, or None."""
    if os.geteuid() != 0:
        return "ext4 skipped: loop-mounting an image needs root"
    for tool in ("mkfs.ext4", "mount", "umount", "dumpe2fs"):
        if not shutil.which(tool):
            return f"ext4 skipped: no {tool} on this machine"
    return None


def _replay_sampled(run: SideRun, ops, target, capacity: int, file_maps, label: str, args):
    """Replay ``ops`` on ``target`` (any file system), appending the
    2 MiB-eligible fraction of ``file_maps()`` to ``run.series`` at every
    checkpoint and the operation counts to ``run``; returns the replay result."""
    from ..age import replay
    from ..aging_stats import eligible_fraction

    def sample(written: int) -> None:
        run.series.append((written / capacity, eligible_fraction(file_maps())))

    res = replay(
        ops,
        target,
        checkpoint_every=_every(capacity, args),
        on_checkpoint=sample,
        on_progress=_progress(label, run.utilization, capacity * args.churn),
    )
    _finish_progress()
    run.ops, run.seconds, run.errors = res.ops, res.seconds, res.errors
    return res


def run_ext4(shm_dir: str, size: int, u: float, args, trace: str) -> SideRun:
    from ..age import DirTarget, read_trace, tree_of_dir
    from ..aging_stats import (
        device_block_map,
        dir_file_maps,
        eligible_fraction,
        ext4_free_ranges,
        file_stats,
    )

    run = SideRun("ext4", u)
    img = Ext4Image(shm_dir, size)
    try:
        mnt = img.mnt
        assert mnt is not None
        with open(trace) as f:
            header, ops = read_trace(f)
            capacity = int(header["capacity"])

            res = _replay_sampled(
                run, ops, DirTarget(mnt), capacity, lambda: dir_file_maps(mnt), "ext4", args
            )
        files = dir_file_maps(mnt)
        run.series.append((res.written / capacity, eligible_fraction(files)))
        st = os.statvfs(mnt)
        run.used = 1 - st.f_bfree / st.f_blocks
        run.tree = tree_of_dir(mnt)
        img.unmount()  # dumpe2fs reads the bitmaps from the image
        run.blocks = device_block_map(size, ext4_free_ranges(img.image), files, "ext4 (loop image)")
        run.stats = file_stats(files, run.blocks)
    finally:
        img.close()
    return run


# --------------------------------------------------------------------------
# progress on stderr (one line per side, rewritten in place)
# --------------------------------------------------------------------------
def _progress(name: str, u: float, total: float):
    """A replay progress callback: one line rewritten in place on a terminal;
    elsewhere (a log) only _finish_progress's last state."""
    tty = sys.stderr.isatty()

    def show(res) -> None:
        pct = min(100.0, 100.0 * res.written / total) if total else 100.0
        _last[0] = f"  {name:<6} {u:.0%} full: {pct:5.1f}% of the history, {res.ops:,} ops"
        if tty:
            print("\r" + _last[0], end="", file=sys.stderr, flush=True)

    return show


_last = [""]


def _finish_progress() -> None:
    if sys.stderr.isatty():
        print(file=sys.stderr, flush=True)
    else:
        print(_last[0], file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="2G", help="size of each pool and of the ext4 image (2G)")
    p.add_argument("--churn", type=float, default=10.0, help="write this many capacities (10)")
    p.add_argument(
        "--utilization",
        default="0.75,0.90",
        help="comma-separated target utilizations (0.75,0.90)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the histories (1)")
    p.add_argument("--samples", type=int, default=20, help="eligibility samples per run (20)")
    p.add_argument("--touch", type=int, default=16, help="large files mapped and touched (16)")
    p.add_argument("--no-ext4", action="store_true", help="leave ext4 out")
    p.add_argument(
        "--tails",
        choices=TAILS,
        default=DEFAULT_TAILS,
        help='the daxfs pools\' mount option tails= ("trim", the default: large files '
        'give back their last chunk past the end at close; "keep"), which the '
        "history's space model follows",
    )
    p.add_argument(
        "--out-dir", default="daxfs-age-plots", help="directory for the PNGs (daxfs-age-plots)"
    )
    p.add_argument(
        "--huge-dir",
        "--pool-dir",
        dest="huge_dir",
        default=None,
        help="directory for the pools, ideally on a huge=always tmpfs (default: mount one "
        "as root, else --shm-dir)",
    )
    p.add_argument(
        "--shm-dir",
        default=DEFAULT_POOL_DIR,
        help=f"directory for the traces and the ext4 image ({DEFAULT_POOL_DIR})",
    )
    add_output_arguments(p)


def _utilizations(text: str) -> list[float]:
    try:
        us = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--utilization: not a list of numbers: {text!r}") from None
    if not us or not all(0 < u < 0.98 for u in us):
        raise SystemExit("--utilization values must lie in (0, 0.98)")
    return us


def main(args: argparse.Namespace) -> int:
    import daxfs

    from .map import HugeDir

    size = daxfs.parse_size(args.size)
    us = _utilizations(args.utilization)
    if size < 64 * MiB or args.churn <= 0 or args.samples < 1 or args.touch < 0:
        raise SystemExit("--size must be at least 64M, --churn positive, --samples at least 1")
    check_pool_dir(args.shm_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    skip_ext4 = "ext4 left out (--no-ext4)" if args.no_ext4 else ext4_unavailable()
    where = HugeDir(args, size)
    work = tempfile.mkdtemp(prefix="daxfs-bench-age-", dir=args.shm_dir)
    runs: dict[float, list[SideRun]] = {}
    try:
        env = environment(where.path, "none")
        for u in us:
            runs[u] = run_utilization(where.path, size, u, args, work, skip_ext4)
    finally:
        where.close()
        shutil.rmtree(work, ignore_errors=True)
    notes = [n for n in (where.note, skip_ext4) if n]
    pngs = draw(runs, args.out_dir)
    report = make_report(args, size, runs, env, notes, pngs)
    report.emit(args.format, args.json)
    return 0


def run_utilization(pool_dir, size, u, args, work, skip_ext4) -> list[SideRun]:
    trace = os.path.join(work, f"trace-{round(u * 100)}.jsonl")
    print(f"aging at {u:.0%} utilization, churn {args.churn:g}:", file=sys.stderr, flush=True)
    sides = [run_daxfs("daxfs", "hugepage", pool_dir, size, u, args, trace)]
    sides.append(run_daxfs("naive", "naive", pool_dir, size, u, args, trace))
    if skip_ext4 is None:
        try:
            sides.append(run_ext4(args.shm_dir, size, u, args, trace))
        except OSError as e:
            sides.append(SideRun("ext4", u, note=f"ext4 failed: {e}"))
    for s in sides[1:]:
        if s.tree:
            s.tree_ok = s.tree == sides[0].tree
        s.tree = {}
    sides[0].tree = {}
    return sides


def draw(runs: dict[float, list[SideRun]], out_dir: str) -> list[str]:
    """The PNGs; none (and a note on stderr) without matplotlib."""
    from .. import viz

    try:
        series = {
            f"{u:.0%} utilization": {s.name: s.series for s in sides if s.series}
            for u, sides in runs.items()
        }
        out = [
            viz.draw_eligibility(
                series,
                os.path.join(out_dir, "age-eligible.png"),
                title="large-file bytes 2 MiB-eligible during aging",
                aim=AIM_ELIGIBLE,
            )
        ]
        for u, sides in runs.items():
            maps = [s.blocks for s in sides if s.blocks is not None]
            path = os.path.join(out_dir, f"age-map-{round(u * 100)}.png")
            out.append(viz.draw_maps(maps, path, title=f"after aging at {u:.0%} utilization"))
        return out
    except RuntimeError as e:
        print(f"no pictures: {e}", file=sys.stderr)
        return []


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------
def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _rows(sides: list[SideRun]) -> list[list[str]]:
    def cell(fn, s: SideRun) -> str:
        return fn(s) if s.stats is not None else "-"

    def pmd_pte(s: SideRun) -> str:
        p = s.pages
        if not p.get("files"):
            return "-"
        return f"{p['pmd_bytes'] / MiB:,.0f} / {p['pte_bytes'] / MiB:,.0f}"

    def pmd_of_eligible(s: SideRun) -> str:
        p = s.pages
        return _pct(p["pmd_bytes"] / p["eligible_bytes"]) if p.get("eligible_bytes") else "-"

    def same_tree(s: SideRun) -> str:
        return {None: "-", True: "yes", False: "NO"}[s.tree_ok]

    spec = [
        ("2 MiB-eligible (whole windows)", lambda s: _pct(s.stats.eligible_fraction)),
        ("2 MiB-eligible (all large bytes)", lambda s: _pct(s.stats.eligible_of_all)),
        ("free space in whole 2 MiB chunks", lambda s: _pct(s.stats.free_whole_fraction)),
        ("extents per large file", lambda s: f"{s.stats.extents_per_large_file:.1f}"),
        ("small-file waste (alloc-size)/size", lambda s: _pct(s.stats.small_waste)),
        ("large-file slack past EOF", lambda s: _pct(s.stats.large_slack)),
        ("touched sample: MiB in 2 MiB / 4 KiB pages", pmd_pte),
        ("  2 MiB-mapped / eligible", pmd_of_eligible),
        ("large / small files at end", lambda s: f"{s.stats.large_files}/{s.stats.small_files}"),
        ("utilization at end (own terms)", lambda s: _pct(s.used)),
        ("ops/s during aging", lambda s: f"{s.ops_per_second:,.0f}"),
        ("failed ops", lambda s: str(sum(s.errors.values()))),
        ("tree as the history says", same_tree),
    ]
    return [[label, *(cell(fn, s) for s in sides)] for label, fn in spec]


def make_report(args, size: int, runs, env: str, notes: list[str], pngs: list[str]) -> Report:
    columns = ["measure"]
    grid: list[list[list[str]]] = []
    for u, sides in runs.items():
        columns += [f"{s.name} {u:.0%}" for s in sides]
        grid.append(_rows(sides))
    labels = [row[0] for row in grid[0]]
    rows = [[label] + [c for block in grid for c in block[i][1:]] for i, label in enumerate(labels)]
    verdict = _verdicts(runs)
    famfs = [s.stats.small_waste_famfs for sides in runs.values() for s in sides[:1] if s.stats]
    all_notes = [
        f"each side: {_size(size)}; history: seed {args.seed}, churn {args.churn:g} "
        "(bytes written / capacity), sizes lognormal body + Pareto tail (daxfs.age); "
        f"daxfs mounted tails={args.tails}",
        "eligible: bytes of files >= 2 MiB in 2 MiB windows one aligned extent covers "
        "(file and device offsets congruent mod 2 MiB); ext4 via FIEMAP on the loop image",
        f"touched sample: {args.touch} large files mapped (fs.map) and read every 4 KiB; "
        "the kernel's pmd_bytes and pte_bytes from /proc/self/smaps",
        "famfs, at 2 MiB per file, would lose "
        + ", ".join(f"{w:.0%}" for w in famfs)
        + " of the small files' size",
    ]
    all_notes += notes
    all_notes += [f"{s.name} {s.utilization:.0%}: {s.note}" for ss in runs.values() for s in ss
                  if s.note]  # fmt: skip
    if pngs:
        all_notes.append("plots: " + ", ".join(pngs))
    return Report(
        title=f"daxfs aging benchmark ({_size(size)}, churn {args.churn:g})",
        command=command_line(args.argv),
        env=env,
        notes=all_notes,
        columns=columns,
        rows=rows,
        verdict=verdict,
        data=_data(runs, size, args),
    )


def _verdicts(runs) -> list[str]:
    out = []
    for u, sides in runs.items():
        dax = sides[0]
        if dax.stats is None:
            continue
        e, w = dax.stats.eligible_fraction, dax.stats.small_waste
        others = ", ".join(
            f"{s.name} {_pct(s.stats.eligible_fraction)}" for s in sides[1:] if s.stats
        )
        out.append(
            f"{u:.0%} utilization: daxfs {_pct(e)} of large-file bytes 2 MiB-eligible "
            f"(aim >= {AIM_ELIGIBLE:.0%}): {'met' if e >= AIM_ELIGIBLE else 'NOT met'}"
            + (f"; beside it {others}" if others else "")
        )
        out.append(
            f"{u:.0%} utilization: daxfs small-file space lost {_pct(w)} "
            f"(aim <= {AIM_SMALL_WASTE:.0%}): {'met' if w <= AIM_SMALL_WASTE else 'NOT met'}"
        )
        checked = [s.clean for s in sides if s.clean is not None]
        if checked:
            clean = "yes" if all(checked) else "NO"
            out.append(f"{u:.0%} utilization: the aged pools check clean (daxfs.check): {clean}")
    return out


def _data(runs, size: int, args) -> dict[str, object]:
    return {
        "size": size,
        "churn": args.churn,
        "seed": args.seed,
        "tails": args.tails,
        "runs": {
            f"{u:.2f}": {
                s.name: {
                    "series": s.series,
                    "ops": s.ops,
                    "seconds": s.seconds,
                    "errors": s.errors,
                    "used": s.used,
                    "stats": s.stats.as_dict() if s.stats else None,
                    "pages": s.pages,
                    "clean": s.clean,
                    "note": s.note,
                }
                for s in sides
            }
            for u, sides in runs.items()
        },
    }


def _size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"
