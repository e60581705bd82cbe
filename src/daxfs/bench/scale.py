"""scale: pools at the size of real devices, beside ext4 (issue 15).

Pools (--sizes, default 1G,64G,1T), each a sparse file in --pool-dir:

    empty         daxfs.mkfs(pool, size) at defaults: its time and the bytes
                  it left allocated on disk (st_blocks * 512)
    N files       the same pool holding --files files of --file-size bytes
                  (1,000 per directory; open "wb", write, close)

For each, a fresh process (python -c) mounts the pool read-only, then
another mounts it writable; each reports the wall time of daxfs.mount()
and how far it raised the process's peak RSS (VmHWM) above the figure
after its imports (pages of the pool file it touched count: the map is
the process's), and its anonymous memory (RssAnon) likewise.  "df used"
is the pool's statvfs (total - free).  A size daxfs fails at (a pool
this machine cannot map, say) is reported as failed; the others still run.

ext4 beside it, in the same run (root and mkfs.ext4 needed; skipped with a
note otherwise): a sparse file of the same size, mkfs.ext4 -q -F (timed,
a whole command), mounted with mount -o loop (timed, a whole command),
read-only and writable, df used from statvfs; the same N files created
through the kernel.  When the default inode count of a size is below N
(1 GiB: 65,536 on both), that pool is made again with enough inodes
(daxfs inodes=, mkfs.ext4 -N) before the files go in.

Tail waste: --medium files of sizes uniform in 2-10 MiB (seeded), each
written by appends of --piece bytes through fs.open(p, "wb"), into a pool
of twice their size.  Space taken is the pool's used space after the
writes minus the empty pool's (both from statvfs in a fresh read-only
mount); the figure is file bytes / space taken.  Churn: a pool of 1.2x
that dataset filled to 90% of its data area with such files, then
--churn rounds of deleting a random file and writing a new one of a
random 2-10 MiB size (deleting more first when it would pass 90%); the
same figure for the files left.

Aims (issue 15): an empty 1 TiB pool makes in < 1 s and mounts in < 0.5 s
raising peak RSS by < 64 MiB; with 100,000 files, mount < 0.5 s; tail
figure >= 97% fresh and >= 95% after churn.  The aims column applies the
time and memory aims to every pool measured.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from . import (
    MiB,
    Report,
    add_output_arguments,
    check_pool_dir,
    command_line,
    emit_all,
    environment,
    fmt_seconds,
)

HELP = "mkfs, mount time and memory of 1 GiB-1 TiB pools beside ext4; tail waste of 2-10 MiB files"
DESCRIPTION = __doc__
PER_DIR = 1000
MEDIUM_MIN, MEDIUM_MAX = 2 * MiB, 10 * MiB
CHUNK = 2 * MiB
FILL = 0.9  # churn keeps the pool's data area this full
AIM_MKFS, AIM_MOUNT, AIM_RSS = 1.0, 0.5, 64 * MiB
AIM_FRESH, AIM_CHURN = 0.97, 0.95

# Run in a fresh interpreter: the baseline is taken after the imports, so the
# figure is what mount() itself costs, not Python's or numpy's start-up.
MOUNT_SCRIPT = """
import json, sys, time
import daxfs

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

path, readonly = sys.argv[1], sys.argv[2] == "ro"
hwm, anon = status("VmHWM"), status("RssAnon")
t0 = time.perf_counter()
fs = daxfs.mount(path, readonly=readonly)
seconds = time.perf_counter() - t0
hwm, anon = status("VmHWM") - hwm, status("RssAnon") - anon
st = fs.statvfs()
fs.close()
used = st.total_bytes - st.free_bytes
print(json.dumps({"seconds": seconds, "rss": hwm, "anon": anon, "used": used}))
"""


def default_dir() -> str:
    return "/root/benchdir" if os.path.isdir("/root/benchdir") else "/var/tmp"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1G,64G,1T", help="pool sizes, comma-separated (1G,64G,1T)")
    p.add_argument("--files", type=int, default=None, help="files per pool (100000; --quick 10000)")
    p.add_argument("--file-size", type=int, default=4096, help="bytes per file (4096)")
    p.add_argument("--medium", type=int, default=None, help="2-10 MiB files (200; --quick 50)")
    p.add_argument("--churn", type=int, default=None, help="churn rounds (1000; --quick 100)")
    p.add_argument("--piece", type=int, default=MiB, help="bytes per append (1 MiB)")
    p.add_argument("--seed", type=int, default=15, help="seed for the medium sizes (15)")
    p.add_argument("--quick", action="store_true", help="fewer files and rounds, as noted above")
    p.add_argument("--no-ext4", action="store_true", help="leave out the ext4 side")
    p.add_argument(
        "--pool-dir",
        "--dir",
        dest="pool_dir",
        default=default_dir(),
        help=f"where the pool files and ext4 images go ({default_dir()})",
    )
    add_output_arguments(p)


def resolve(args: argparse.Namespace) -> None:
    """Fill the counts --quick chooses unless given."""
    for name, full, quick in (
        ("files", 100_000, 10_000),
        ("medium", 200, 50),
        ("churn", 1000, 100),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if min(args.files, args.medium, args.churn, args.file_size) < 0 or args.piece < 1:
        raise SystemExit("--files, --medium, --churn, --file-size: >= 0; --piece: >= 1")


def fmt_bytes(n: int | None) -> str:
    from ..units import human

    return "-" if n is None else human(n)


def inodes_needed(files: int) -> int:
    return files + files // PER_DIR + 64  # files, their directories, room


def file_path(i: int) -> str:
    return f"/d{i // PER_DIR:03d}/f{i:06d}"


# --------------------------------------------------------------------------
# daxfs side
# --------------------------------------------------------------------------
def on_disk(path: str) -> int:
    return os.stat(path).st_blocks * 512


def fresh_mount(pool: str, mode: str) -> dict[str, float]:
    """daxfs.mount in a new process: seconds, peak RSS raised, df used."""
    r = subprocess.run(
        [sys.executable, "-c", MOUNT_SCRIPT, pool, mode], capture_output=True, text=True
    )
    if r.returncode:  # the child's last line: its exception
        last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise RuntimeError(f"mount {mode} in a fresh process: {last}")
    return json.loads(r.stdout.splitlines()[-1])


def mounts(pool: str) -> dict[str, object]:
    ro, rw = fresh_mount(pool, "ro"), fresh_mount(pool, "rw")
    return {"disk": on_disk(pool), "used": ro["used"], "ro": ro, "rw": rw}


def fill_daxfs(pool: str, files: int, payload: bytes) -> float:
    import daxfs

    t0 = time.perf_counter()
    with daxfs.mount(pool) as fs:
        op = fs.open
        for i in range(files):
            if i % PER_DIR == 0:
                fs.mkdir(f"/d{i // PER_DIR:03d}")
            with op(file_path(i), "wb") as f:
                if payload:
                    f.write(payload)
    return time.perf_counter() - t0


def daxfs_side(work: str, size: int, files: int, payload: bytes) -> dict[str, object]:
    """What was measured; a failure (a pool this machine cannot map, say)
    is kept as "error", so that the other sizes still run."""
    import daxfs

    pool = os.path.join(work, "scale.pool")
    out: dict[str, object] = {}
    try:
        t0 = time.perf_counter()
        sb = daxfs.mkfs(pool, size, force=True)
        mkfs = time.perf_counter() - t0
        out["empty"] = {"mkfs": mkfs, **mounts(pool)}
        if files:
            raised = None
            if sb.inode_count < inodes_needed(files):
                raised = inodes_needed(files)
                daxfs.mkfs(pool, size, force=True, inodes=raised)
            fill = fill_daxfs(pool, files, payload)
            out["files"] = {"fill": fill, "inodes": raised, **mounts(pool)}
    except (OSError, RuntimeError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        if os.path.exists(pool):
            os.unlink(pool)
    return out


# --------------------------------------------------------------------------
# ext4 side
# --------------------------------------------------------------------------
def ext4_unavailable() -> str | None:
    """Why the ext4 side cannot run here, or None."""
    if os.geteuid() != 0:
        return "ext4 side skipped: mount -o loop needs root"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"ext4 side skipped: {tool} not found"
    return None


def run_timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        raise OSError(f"{' '.join(argv)}: {r.stderr.strip() or r.returncode}")
    return time.perf_counter() - t0


def df_used(mnt: str) -> int:
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def ext4_mkfs(img: str, size: int, inodes: int | None = None) -> float:
    with open(img, "wb") as f:
        f.truncate(size)
    extra = ["-N", str(inodes)] if inodes else []
    return run_timed(["mkfs.ext4", "-q", "-F", *extra, img])


def ext4_mounts(img: str, mnt: str) -> dict[str, object]:
    """Timed mounts read-only then writable (each unmounted after)."""
    out: dict[str, object] = {"disk": on_disk(img)}
    for mode in ("ro", "rw"):
        seconds = run_timed(["mount", "-o", f"loop,{mode}", img, mnt])
        try:
            out["used"] = df_used(mnt)
        finally:
            run_timed(["umount", mnt])
        out[mode] = {"seconds": seconds, "rss": None, "anon": None}
    return out


def fill_ext4(img: str, mnt: str, files: int, payload: bytes) -> float:
    """The same files through the kernel; timed to the end of the umount."""
    t0 = time.perf_counter()
    run_timed(["mount", "-o", "loop", img, mnt])
    try:
        for i in range(files):
            if i % PER_DIR == 0:
                os.mkdir(f"{mnt}/d{i // PER_DIR:03d}")
            with open(mnt + file_path(i), "wb") as f:
                f.write(payload)
    finally:
        run_timed(["umount", mnt])
    return time.perf_counter() - t0


def ext4_side(work: str, size: int, files: int, payload: bytes) -> dict[str, dict]:
    img, mnt = os.path.join(work, "ext4.img"), os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    try:
        mkfs = ext4_mkfs(img, size)
        out: dict[str, dict] = {"empty": {"mkfs": mkfs, **ext4_mounts(img, mnt)}}
        if files:
            raised = None
            run_timed(["mount", "-o", "loop,ro", img, mnt])
            try:
                have = os.statvfs(mnt).f_files
            finally:
                run_timed(["umount", mnt])
            if have < inodes_needed(files):
                raised = inodes_needed(files)
                ext4_mkfs(img, size, raised)
            fill = fill_ext4(img, mnt, files, payload)
            out["files"] = {"fill": fill, "inodes": raised, **ext4_mounts(img, mnt)}
        return out
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["umount", mnt], check=False)
        if os.path.exists(img):
            os.unlink(img)


# --------------------------------------------------------------------------
# tail waste
# --------------------------------------------------------------------------
def used_bytes(pool: str) -> int:
    """The pool's used space, seen by a fresh read-only mount (so nothing a
    writer's mount held for itself is counted)."""
    import daxfs

    with daxfs.mount(pool, readonly=True) as fs:
        st = fs.statvfs()
        return st.total_bytes - st.free_bytes


def write_medium(fs, path: str, size: int, blob: memoryview, piece: int) -> None:
    with fs.open(path, "wb") as f:
        for off in range(0, size, piece):
            f.write(blob[: min(piece, size - off)])


def medium_size(rng: random.Random) -> int:
    return rng.randint(MEDIUM_MIN, MEDIUM_MAX)


def align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def tail_fresh(
    pool: str, sizes: list[int], blob: memoryview, piece: int, tails: str
) -> dict[str, int]:
    import daxfs

    daxfs.mkfs(pool, align_up(2 * sum(sizes) + 64 * MiB, CHUNK), force=True)
    empty = used_bytes(pool)
    with daxfs.mount(pool, tails=tails) as fs:
        fs.mkdir("/m")
        for i, n in enumerate(sizes):
            write_medium(fs, f"/m/f{i:05d}", n, blob, piece)
    return {"files": len(sizes), "bytes": sum(sizes), "taken": used_bytes(pool) - empty}


class Churn:
    """A mounted pool kept about FILL full of medium files."""

    def __init__(self, fs, rng: random.Random, blob: memoryview, piece: int):
        self.fs, self.rng, self.blob, self.piece = fs, rng, blob, piece
        self.live: dict[str, int] = {}
        self.serial = self.enospc = 0
        st = fs.statvfs()
        self.limit = FILL * st.total_bytes

    def used(self) -> int:
        st = self.fs.statvfs()
        return st.total_bytes - st.free_bytes

    def delete_random(self) -> None:
        names = list(self.live)
        name = names[self.rng.randrange(len(names))]
        self.fs.unlink(name)
        del self.live[name]

    def add(self, size: int) -> bool:
        """Write one file of ``size``; False if the pool had no room for it."""
        name = f"/c/f{self.serial:06d}"
        self.serial += 1
        try:
            write_medium(self.fs, name, size, self.blob, self.piece)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            self.enospc += 1
            if self.fs.exists(name):
                self.fs.unlink(name)
            return False
        self.live[name] = size
        return True

    def fill(self) -> None:
        while self.used() + MEDIUM_MAX < self.limit:
            self.add(medium_size(self.rng))

    def round(self) -> None:
        self.delete_random()
        size = medium_size(self.rng)
        while self.live and self.used() + size > self.limit:
            self.delete_random()
        while not self.add(size) and self.live:
            self.delete_random()


def tail_churn(
    pool: str,
    dataset: int,
    rounds: int,
    rng: random.Random,
    blob: memoryview,
    piece: int,
    tails: str,
) -> dict[str, int]:
    import daxfs

    daxfs.mkfs(pool, max(64 * MiB, align_up(dataset * 6 // 5, CHUNK)), force=True)
    empty = used_bytes(pool)
    with daxfs.mount(pool, tails=tails) as fs:
        fs.mkdir("/c")
        c = Churn(fs, rng, blob, piece)
        c.fill()
        filled = len(c.live)
        for _ in range(rounds):
            c.round()
        live = dict(c.live)
    return {
        "files": len(live),
        "filled": filled,
        "rounds": rounds,
        "enospc": c.enospc,
        "bytes": sum(live.values()),
        "taken": used_bytes(pool) - empty,
    }


TAIL_POLICIES = ("keep", "trim")  # the mount option tails= (DESIGN.md, "Tails")


def run_tail(work: str, args) -> dict[str, dict[str, int]]:
    """The same files, and the same churn, under each tail policy."""
    out: dict[str, dict[str, int]] = {}
    blob = memoryview(os.urandom(max(args.piece, 1)))
    pool = os.path.join(work, "tail.pool")
    try:
        for tails in TAIL_POLICIES:
            rng = random.Random(args.seed)
            sizes = [medium_size(rng) for _ in range(args.medium)]
            out[f"fresh/{tails}"] = tail_fresh(pool, sizes, blob, args.piece, tails)
            out[f"churn/{tails}"] = tail_churn(
                pool, sum(sizes), args.churn, rng, blob, args.piece, tails
            )
    finally:
        if os.path.exists(pool):
            os.unlink(pool)
    return out


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------
def size_label(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} B"


def worst_mount(side: dict) -> float:
    return max(side["ro"]["seconds"], side["rw"]["seconds"])


def aims_cell(d: dict, empty: bool) -> str:
    """Which of the aims a daxfs row misses."""
    missed = []
    if empty and d["mkfs"] >= AIM_MKFS:
        missed.append("mkfs")
    if worst_mount(d) >= AIM_MOUNT:
        missed.append("mount")
    if empty and peak(d, "rss") >= AIM_RSS:
        missed.append("RSS")
    return "met" if not missed else "not met: " + ", ".join(missed)


def peak(d: dict, key: str) -> int | None:
    """The larger of the read-only and the writable mount's figure."""
    if d["ro"][key] is None:
        return None
    return max(d["ro"][key], d["rw"][key])


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.1f}"


def side_row(label: str, d: dict, other: dict | None, aims: str) -> list[str]:
    mkfs = d.get("mkfs")
    return [
        label,
        fmt_seconds(mkfs),
        fmt_bytes(d["disk"]),
        fmt_bytes(d["used"]),
        fmt_seconds(d["ro"]["seconds"]),
        fmt_seconds(d["rw"]["seconds"]),
        fmt_bytes(peak(d, "rss")),
        fmt_bytes(peak(d, "anon")),
        ratio(mkfs, other.get("mkfs")) if other else "",
        ratio(d["rw"]["seconds"], other["rw"]["seconds"]) if other else "",
        aims,
    ]


SCALE_COLUMNS = [
    "pool",
    "mkfs",
    "on disk",
    "df used",
    "mount ro",
    "mount rw",
    "peak RSS",
    "anon",
    "mkfs x ext4",
    "mount x ext4",
    "aims",
]


def scale_rows(results: dict[int, dict], files: int) -> tuple[list[list[str]], list[str]]:
    rows, notes = [], []
    for size, r in results.items():
        dax, ext4 = r["daxfs"], r.get("ext4")
        for state, what in (("empty", "empty"), ("files", f"{files:,} files")):
            if state not in dax:
                continue
            other = ext4[state] if ext4 else None
            label = f"{size_label(size)} {what}"
            rows.append(
                side_row(
                    f"{label}: daxfs", dax[state], other, aims_cell(dax[state], state == "empty")
                )
            )
            if other:
                rows.append(side_row(f"{label}: ext4", other, None, ""))
            if state == "files":
                notes.append(fill_note(size, dax[state], other, files))
        if "error" in dax:
            rows.append([f"{size_label(size)}: daxfs", *["-"] * 9, "failed"])
            notes.append(f"{size_label(size)}: daxfs failed: {dax['error']}")
    return rows, notes


def fill_note(size: int, dax: dict, ext4: dict | None, files: int) -> str:
    note = f"{size_label(size)}: {files:,} files in {fmt_seconds(dax['fill'])} on daxfs"
    if ext4:
        note += f", {fmt_seconds(ext4['fill'])} on ext4"
    if dax["inodes"]:
        note += f"; remade with {dax['inodes']:,} inodes (the default holds fewer)"
    return note


def scale_verdict(results: dict[int, dict], files: int) -> list[str]:
    size = max(results)
    dax = results[size]["daxfs"]
    label = size_label(size)
    if "empty" not in dax:
        return [f"aim: empty {label} pool: mkfs, mount and memory: not met ({dax['error']})"]
    e = dax["empty"]
    rss = peak(e, "rss")
    lines = [
        f"aim: empty {label} pool: mkfs < {AIM_MKFS:g} s: "
        + met(e["mkfs"] < AIM_MKFS)
        + f" ({fmt_seconds(e['mkfs'])})",
        f"aim: empty {label} pool: mount < {AIM_MOUNT:g} s: "
        + met(worst_mount(e) < AIM_MOUNT)
        + f" (ro {fmt_seconds(e['ro']['seconds'])}, rw {fmt_seconds(e['rw']['seconds'])})",
        f"aim: empty {label} pool: mount raises peak RSS < {fmt_bytes(AIM_RSS)}: "
        + met(rss < AIM_RSS)
        + f" ({fmt_bytes(rss)})",
    ]
    if files:
        full = [r["daxfs"]["files"] for r in results.values() if "files" in r["daxfs"]]
        worst = max(map(worst_mount, full), default=None)
        missing = len(results) - len(full)
        lines.append(
            f"aim: {files:,} files: mount < {AIM_MOUNT:g} s at every size: "
            + met(worst is not None and worst < AIM_MOUNT and not missing)
            + f" (slowest {fmt_seconds(worst)}"
            + (f"; {missing} size(s) failed)" if missing else ")")
        )
    return lines


def met(ok: bool) -> str:
    return "met" if ok else "not met"


def scale_report(args, results: dict[int, dict], ext4_note: str | None, env: str) -> Report:
    rows, fills = scale_rows(results, args.files)
    notes = [
        f"sparse pool files in {args.pool_dir}; files of {args.file_size:,} bytes, "
        f"{PER_DIR:,} per directory",
        "mount: daxfs.mount() in a fresh process; peak RSS: how far the mount raised its "
        "VmHWM (file pages of the pool it touched count), anon: its RssAnon after the mount "
        "against before; both the larger of ro and rw",
        "ext4: mkfs.ext4 and mount -o loop as whole commands",
        "x ext4: daxfs's time against ext4's (mount: writable); on disk: st_blocks of the "
        "file; df used: statvfs total - free",
        *fills,
    ]
    if ext4_note:
        notes.append(ext4_note)
    return Report(
        title="daxfs scale benchmark: pools at device sizes",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=SCALE_COLUMNS,
        rows=rows,
        verdict=scale_verdict(results, args.files),
        data={"files": args.files, "file_size": args.file_size, "sizes": results},
    )


def tail_report(args, tail: dict[str, dict[str, int]], env: str) -> Report:
    rows, verdict = [], []
    phases = [
        (f"{p}/{t}", aim)
        for t in TAIL_POLICIES
        for p, aim in (("fresh", AIM_FRESH), ("churn", AIM_CHURN))
    ]
    for phase, aim in phases:
        t = tail[phase]
        figure = t["bytes"] / t["taken"] if t["taken"] else 0.0
        kind, policy = phase.split("/")
        label = "fresh" if kind == "fresh" else f"after {t['rounds']:,} rounds of churn"
        label += f", tails={policy}"
        ok = met(figure >= aim)
        rows.append(
            [
                label,
                f"{t['files']:,}",
                fmt_bytes(t["bytes"]),
                fmt_bytes(t["taken"]),
                f"{figure:.1%}",
                f">= {aim:.0%}",
                ok,
            ]
        )
        verdict.append(f"aim: tail figure {label} >= {aim:.0%}: {ok} ({figure:.1%})")
    c = tail[f"churn/{TAIL_POLICIES[0]}"]
    notes = [
        f"files of 2-10 MiB (seed {args.seed}), written by appends of {fmt_bytes(args.piece)}; "
        "space taken: used space (statvfs, fresh read-only mount) minus the empty pool's",
        f"churn: a pool of 1.2x the fresh dataset filled to {FILL:.0%} ({c['filled']:,} files), "
        f"then delete one, write one; {c['enospc']} writes hit ENOSPC",
    ]
    return Report(
        title="daxfs scale benchmark: tail waste of 2-10 MiB files",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["phase", "files", "file bytes", "space taken", "bytes/space", "aim", "verdict"],
        rows=rows,
        verdict=verdict,
        data=tail,
    )


# --------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    import daxfs

    resolve(args)
    sizes = [daxfs.parse_size(s) for s in args.sizes.split(",") if s.strip()]
    pool_dir = check_pool_dir(args.pool_dir)
    ext4_note = "ext4 side left out (--no-ext4)" if args.no_ext4 else ext4_unavailable()
    payload = os.urandom(args.file_size)
    work = tempfile.mkdtemp(prefix="daxfs-bench-scale-", dir=pool_dir)
    reports = []
    try:
        results: dict[int, dict] = {}
        for size in sizes:
            say(f"{size_label(size)}: daxfs ...")
            results[size] = {"daxfs": daxfs_side(work, size, args.files, payload)}
            if ext4_note is None:
                say(f"{size_label(size)}: ext4 ...")
                try:
                    results[size]["ext4"] = ext4_side(work, size, args.files, payload)
                except OSError as e:  # no loop devices, say: report daxfs alone
                    ext4_note = f"ext4 side skipped: {e}"
        env = environment(pool_dir)
        if results:
            reports.append(scale_report(args, results, ext4_note, env))
        if args.medium:
            say(f"tail waste: {args.medium} files, then {args.churn} rounds of churn ...")
            reports.append(tail_report(args, run_tail(work, args), env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit_all(reports, args.format, args.json)
    return 0


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
