"""Smoke tests of the benchmarks: each runs at a tiny size and prints the rows
it should.  Nothing here checks timings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import needs_fuse
from daxfs.bench import BENCHMARKS
from daxfs.bench.__main__ import main
from daxfs.namespace import UNLINK_BATCH

META_LABELS = [
    "create+write 4K+close",
    "stat",
    "open+read 4K+close",
    "read_bytes 4K",
    "open, all held open, close",
    "overwrite 4K (open wb+write+close)",
    "listdir (12 entries)",
    "unlink",
    "write_bytes 4K (new file)",
    "write_bytes 4K (over a file)",
    f"unlink all, {UNLINK_BATCH} a change",
]
MOUNT_LABELS = [
    "mkfs",
    "build: create+write+close",
    "build: close (unmount)",
    "first mount after build",
    "mount",
    "first listdir",
    "mount + first listdir",
    "close",
]

MAP_LABELS = [
    "backing",
    "first-touch minor faults",
    "  per 2 MiB",
    "first-touch major faults",
    "first-touch time",
    "10,000 random reads",
    "  ns per read",
    "mapped by 2 MiB pages",
    "mapped by 4 KiB pages",
]


def plain_rows(out: str, labels: list[str]) -> dict[str, list[str]]:
    """The plain-text table's rows, by label (the label may contain spaces)."""
    rows = {}
    for line in out.splitlines():
        for label in labels:
            if line.startswith(label + "  "):
                rows[label] = line[len(label) :].split()
    return rows


def test_no_arguments_lists_the_benchmarks(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: python -m daxfs.bench" in out
    for name in BENCHMARKS:
        assert name in out


def test_module_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "daxfs.bench", "--help"], capture_output=True, text=True, check=True
    )
    assert "meta" in r.stdout and "mount" in r.stdout and "map" in r.stdout


def test_meta_tiny(tmp_path, capsys):
    js = tmp_path / "meta.json"
    argv = [
        "meta",
        "--files",
        "12",
        "--rounds",
        "1",
        "--pool-dir",
        str(tmp_path),
        "--pool-size",
        "64M",
        "--format",
        "plain",
        "--json",
        str(js),
        "--profile",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "$ python -m daxfs.bench " + " ".join(argv) in out
    rows = plain_rows(out, META_LABELS)
    assert list(rows) == META_LABELS
    for label, cells in rows.items():
        kernel, dax, ratio = (float(c.replace(",", "")) for c in cells[:3])
        # A loaded machine can round a tiny ratio to 0.00; the rates are never 0.
        assert kernel > 0 and dax > 0 and ratio >= 0
        # The change floor: for the ops that make journaled changes only.
        has_floor = label.startswith(("create", "overwrite", "write_bytes")) or label == "unlink"
        assert (cells[3] != "-") == has_floor, cells
    for phase, aim in (("create", 0.35), ("stat", 0.6), ("read", 0.5), ("unlink", 0.35)):
        assert f"aim: {phase} daxfs/kernel >= {aim}: " in out
    assert "=== profile: daxfs " in out
    data = json.loads(js.read_text())["data"]
    assert set(data["ratio"]) == {
        "create", "stat", "read", "read_bytes", "held", "overwrite", "listdir", "unlink",
        "write_bytes", "rewrite_bytes", "unlink_all",
    }  # fmt: skip
    assert data["held"] == 12
    assert len(data["raw"]["kernel"]) == len(data["raw"]["daxfs"]) == 1
    assert data["empty_changes_per_s"] > 0
    # A create is two changes and an unlink one, each at least an empty change.
    floor = data["empty_changes_per_s"] / data["best_ops_per_s"]["kernel"]["unlink"]
    assert data["change_floor_ratio"]["unlink"] == pytest.approx(floor)
    assert set(data["change_floor_ratio"]) == {
        "create", "overwrite", "unlink", "write_bytes", "rewrite_bytes"
    }  # fmt: skip
    assert os.listdir(tmp_path) == ["meta.json"]  # the work directory is removed


def test_meta_deep(tmp_path, capsys):
    """bench meta --depth: the files 300 levels down on both sides (deeper
    than shutil.rmtree's recursion could remove), no aims judged there, and
    nothing left behind."""
    js = tmp_path / "meta.json"
    argv = ["meta", "--files", "6", "--rounds", "1", "--depth", "300"]
    argv += ["--pool-dir", str(tmp_path), "--pool-size", "64M", "--format", "plain"]
    assert main([*argv, "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "6 files of 4 KiB in one directory 300 levels down" in out
    labels = [label.replace("(12 ", "(6 ") for label in META_LABELS]
    assert list(plain_rows(out, labels)) == labels
    assert "the aims are for files one level down (--depth 1): not judged here" in out
    assert "aim: create" not in out
    assert json.loads(js.read_text())["data"]["depth"] == 300
    assert os.listdir(tmp_path) == ["meta.json"]
    with pytest.raises(SystemExit, match="--depth must be from 1 to 1500"):
        main(["meta", "--depth", "0", "--pool-dir", str(tmp_path)])


IO_LABELS = ["readinto 4 KiB", "readinto 1 MiB", "write 4 KiB in place", "write 1 MiB in place"]
IO_LABELS.append("write 64 KiB appending, new file")


def test_io_tiny(tmp_path, capsys):
    """bench io: every phase on the three sides, the files checked after the
    rounds (the appended ones too), the aims' verdicts, a profile, and
    nothing left behind."""
    js = tmp_path / "io.json"
    argv = ["io", "--size", "4M", "--ops", "300", "--mib", "6", "--rounds", "2"]
    argv += ["--pool-dir", str(tmp_path), "--format", "plain", "--json", str(js), "--profile"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = plain_rows(out, IO_LABELS)
    assert list(rows) == IO_LABELS
    for label, cells in rows.items():  # (rate, unit) per side, then the two ratios
        unit = "GB/s" if "1 MiB" in label or "64 KiB" in label else "calls/s"
        assert cells[1:6:2] == [unit] * 3, cells
        assert all(float(c.replace(",", "")) > 0 for c in cells[0:6:2])
        assert len(cells) == 8
    for aim in ("4 KiB readinto daxfs/kernel >= 0.5", "1 MiB readinto daxfs/memcpy >= 0.9"):
        assert f"aim: {aim}: " in out
    assert "=== profile: daxfs " in out
    data = json.loads(js.read_text())["data"]
    assert set(data["ratio_vs_kernel"]) == {"read4k", "read1m", "write4k", "write1m", "append"}
    assert all(len(r) == 2 for r in data["raw"].values())
    assert data["raw"]["daxfs"][0]["read4k"]["calls"] == 300
    assert data["raw"]["daxfs"][0]["append"]["calls"] == 4 * 16  # (--size 4M, 64 KiB each)
    assert os.listdir(tmp_path) == ["io.json"]  # the work directory is removed


def test_meta_durable_tiny(tmp_path, capsys):
    """--durable: creates on the kernel with and without fsync per file,
    on the pool in --pool-dir and on a pool in /dev/shm, in one table;
    nothing is left in either place."""
    shm_before = set(os.listdir("/dev/shm"))
    argv = ["meta", "--files", "8", "--rounds", "1", "--pool-dir", str(tmp_path)]
    argv += ["--pool-size", "64M", "--format", "plain", "--durable"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = plain_rows(out, ["kernel+fsync", "daxfs sync", "daxfs on tmpfs"])
    assert len(rows) == 3
    for cells in rows.values():
        rate, ratio = (float(c.replace(",", "")) for c in cells)
        assert rate > 0 and ratio > 0
    assert "a pool on tmpfs (issue 14's aim: 0.8x)" in out
    assert "the kernel with fsync per file (aim: 1.0x)" in out
    assert os.listdir(tmp_path) == []
    assert not {n for n in set(os.listdir("/dev/shm")) - shm_before if "durable" in n}


def test_copy_tiny(tmp_path, capsys):
    """bench copy: cp -r and daxfs cp -r (pool in --pool-dir and in
    /dev/shm) of a tiny folder, the copies checked, nothing left behind."""
    argv = ["copy", "--files", "5", "--size", "100", "--repeat", "1"]
    argv += ["--pool-dir", str(tmp_path), "--format", "plain"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = plain_rows(out, ["cp -r", "daxfs, pool-dir", "daxfs, tmpfs"])
    assert len(rows) == 3
    assert "aim: daxfs cp -r into a pool on " in out
    assert os.listdir(tmp_path) == []
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("daxfs-bench-copy-")]


def test_parquet_tiny(tmp_path, capsys):
    """bench parquet: pandas and pyarrow through daxfs:// beside a local
    file, each read checked, the aims printed, nothing left behind."""
    argv = ["parquet", "--rows", "1000", "--repeat", "1", "--pool-dir", str(tmp_path)]
    assert main([*argv, "--format", "plain"]) == 0
    out = capsys.readouterr().out
    labels = [
        "DataFrame.to_parquet",
        "pandas.read_parquet",
        "pyarrow.parquet.read_table",
        "read_table of the mapping",
    ]
    rows = plain_rows(out, labels)
    assert len(rows) == 4
    for cells in rows.values():
        assert float(cells[-1]) > 0
    assert "aim: pandas.read_parquet through daxfs:// >= 1.0x of the local file: " in out
    assert "aim: pyarrow.parquet.read_table through daxfs:// >= 1.0x" in out
    assert os.listdir(tmp_path) == []


@needs_fuse
def test_fuse_tiny(tmp_path, capsys):
    """bench fuse: tar, find, cat and rm on tmpfs and through a real daxfs
    mount (the pool checked clean after), beside the calls in process and
    the requests counted, nothing left mounted or behind."""
    work, js = tmp_path / "work", tmp_path / "fuse.json"
    work.mkdir()
    argv = ["fuse", "--files", "20", "--max-size", "5000", "--repeat", "1"]
    argv += ["--pool-dir", str(work), "--format", "plain", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = plain_rows(out, ["tar -x", "find -printf %s", "cat every file", "rm -r"])
    assert len(rows) == 4
    assert all(len(cells) == 9 for cells in rows.values()), rows  # (a time is 2 cells)
    data = json.loads(js.read_text())["data"]
    phases = {"tar", "find", "cat", "cat2", "rm"}
    assert set(data["best_seconds"]) == {
        f"{side}/{phase}" for side in ("tmpfs", "daxfs", "in process") for phase in phases
    }
    assert all(seconds > 0 for seconds in data["best_seconds"].values())
    assert data["round_trip_seconds"] > 0
    # tar makes at least a CREATE, a WRITE and a RELEASE per file with data;
    # find asks once per directory.
    assert data["requests"]["tar"] >= 3 * 20
    assert data["requests"]["find"] < 20
    # rm's FORGETs are requests nobody waits for: no round trip.
    assert data["answered"]["rm"] < data["requests"]["rm"]
    assert all(data["answered"][p] <= data["requests"][p] for p in phases)
    # Every phase's requests took the counting server some time, less than
    # the whole command took in that run.
    handling, wall = data["handling_seconds"], data["counting_run_seconds"]
    assert all(0 < handling[phase] < wall[phase] for phase in phases), (handling, wall)
    assert os.listdir(work) == []
    with open("/proc/self/mounts") as f:
        assert str(tmp_path) not in f.read()


def test_meta_rich_output(tmp_path, capsys):
    argv = [
        "meta",
        "--files",
        "3",
        "--rounds",
        "2",
        "--pool-dir",
        str(tmp_path),
        "--pool-size",
        "64M",
        "--format",
        "rich",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "daxfs meta benchmark" in out
    assert "listdir (3 entries)" in out


def test_mount_tiny(tmp_path, capsys):
    js = tmp_path / "mount.json"
    argv = [
        "mount",
        "--files",
        "40",
        "--dirs",
        "3",
        "--repeat",
        "2",
        "--pool-dir",
        str(tmp_path),
        "--format",
        "plain",
        "--json",
        str(js),
        "--profile",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "$ python -m daxfs.bench " + " ".join(argv) in out
    rows = plain_rows(out, MOUNT_LABELS)
    assert set(rows) == set(MOUNT_LABELS)
    assert "14 entries" in out  # /d0 holds files 0, 3, ..., 39
    assert "aim: mount < 0.5 s with 40 files" in out
    assert "=== profile: daxfs mount" in out
    data = json.loads(js.read_text())["data"]
    assert len(data["runs"]) == 2
    assert set(data["runs"][0]) == {"mount", "listdir", "mount+listdir", "close"}


def map_argv(*extra: str) -> list[str]:
    return ["map", "--size", "16M", "--reads", "10000", "--format", "plain", *extra]


def test_map_tiny(shm_dir, capsys):
    js = os.path.join(shm_dir, "map.json")
    argv = map_argv("--huge-dir", shm_dir, "--shm-dir", shm_dir, "--json", js)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "$ python -m daxfs.bench " + " ".join(argv) in out
    rows = plain_rows(out, MAP_LABELS)
    assert list(rows) == MAP_LABELS
    for label in MAP_LABELS[1:]:
        assert len(rows[label]) >= 3, (label, rows[label])  # daxfs, memmap, anon
    assert rows["first-touch minor faults"][0] != "0"
    assert "daxfs vs anonymous THP" in out and "daxfs vs 4 KiB numpy.memmap" in out
    assert "faults per 2 MiB" in out
    data = json.loads(open(js).read())["data"]
    assert set(data["sides"]) == {"daxfs", "memmap", "anon"}
    assert len(data["sides"]["daxfs"]["read_seconds"]) == 3
    for side in data["sides"].values():
        assert side["pages"]["resident_bytes"] == 16 << 20
    assert os.listdir(shm_dir) == ["map.json"]  # the pool and the memmap file are gone


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a huge tmpfs needs root")
def test_map_mounts_and_unmounts_its_huge_tmpfs(shm_dir, capsys):
    assert main(map_argv("--shm-dir", shm_dir)) == 0
    out = capsys.readouterr().out
    if "2 MiB pages need a huge tmpfs" not in out:  # the mount worked
        m = re.search(r"pool dir (/tmp/daxfs-bench-map-huge-\S+) ", out)
        assert m, out
        with open("/proc/self/mounts") as f:  # this run's mount, not another benchmark's
            assert f" {m.group(1)} " not in f.read()
        assert not os.path.exists(m.group(1))
    assert os.listdir(shm_dir) == []


def test_map_rejects_a_size_not_in_2_mib(shm_dir):
    with pytest.raises(SystemExit):
        main(["map", "--size", "3M", "--huge-dir", shm_dir, "--shm-dir", shm_dir])


def test_hostile_tiny(tmp_path, capsys):
    js = tmp_path / "h.json"
    argv = ["hostile", "--sizes", "8M,16M", "--attacks", "quadratic_journal,orphans"]
    argv += ["--repeat", "1", "--pool-dir", str(tmp_path), "--format", "plain", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "quadratic_journal 8 MiB: mount ro" in out and "orphans 16 MiB: check" in out
    assert "aim: every step on every crafted pool ends within 10 s" in out
    assert os.listdir(tmp_path) == ["h.json"]  # its pools are gone
    assert json.loads(js.read_text())


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_benchmark_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "--pool-dir" in capsys.readouterr().out


SHARE_LABELS = [
    "0 files: 1 process",
    "0 files: 2 disjoint",
    "0 files: 2 shared",
    "30 files: 1 process",
    "30 files: 2 disjoint",
    "30 files: 2 shared",
]


def test_share_tiny(tmp_path, capsys):
    js = tmp_path / "share.json"
    argv = ["share", "--files", "20", "--procs", "1,2", "--prefill", "0,30", "--repeat", "1"]
    argv += ["--no-dask", "--no-beside", "--pool-size", "64M", "--pool-dir", str(tmp_path)]
    argv += ["--format", "plain", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "$ python -m daxfs.bench " + " ".join(argv) in out
    rows = plain_rows(out, SHARE_LABELS)
    assert list(rows) == SHARE_LABELS
    for label, cells in rows.items():
        assert len(cells) == 14, (label, cells)
        kernel, dax = (float(c.replace(",", "")) for c in cells[:2])
        assert kernel > 0 and dax > 0
        rebuilds, records, optimistic, conflicts, contended = cells[9:]
        assert float(conflicts) >= 0 and float(contended) >= 0
        if label.endswith("1 process"):
            assert cells[3:5] == ["-", "-"]  # no scaling against itself
            # Nobody else commits; alone, changes are not prepared apart.
            assert rebuilds == records == optimistic == contended == "0"
        else:
            assert float(cells[4]) > 0  # daxfs's 2 processes against 1
            assert float(records) > 0
            if "disjoint" in label:  # creates, first writes, unlinks: optimistic
                assert float(optimistic) > 0
    assert "aim: 2 processes in disjoint directories >= 1x one process (goal 1.5x): " in out
    assert "aim: a full pool within 10% of an empty one, zero full rebuilds: " in out
    assert "(30 files against 0: 1 process: " in out
    assert "aim: one shared directory >= 0.7x disjoint directories: " in out
    assert "ceiling: pure Python arithmetic in N processes against 1 on this machine: " in out
    assert "stopped at --limit" not in out
    (report,) = json.loads(js.read_text())
    cases = report["data"]["cases"]
    assert [(c["prefill"], c["procs"], c["layout"]) for c in cases] == [
        (p, n, layout)
        for p in (0, 30)
        for n, layout in ((1, "disjoint"), (2, "disjoint"), (2, "shared"))
    ]
    for c in cases:
        for side in ("kernel", "daxfs"):
            assert c[side]["ops"] == dict.fromkeys(
                ("create", "stat", "read", "unlink"), 20 * c["procs"]
            )
        by_phase = c["daxfs"]["coherence_by_phase"].values()
        assert sum(p.get("full_rebuilds", 0) for p in by_phase) == c["daxfs"]["coherence"].get(
            "full_rebuilds", 0
        )
    assert os.listdir(tmp_path) == ["share.json"]  # pools and directories are gone


def test_share_stops_a_case_at_the_limit(tmp_path, capsys):
    argv = ["share", "--files", "3000", "--procs", "2", "--layout", "shared", "--prefill", "0"]
    argv += ["--limit", "0.3", "--no-dask", "--no-beside", "--pool-size", "64M"]
    argv += ["--pool-dir", str(tmp_path)]
    argv += ["--format", "plain", "--start-method", "spawn"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    (cells,) = plain_rows(out, ["0 files: 2 shared"]).values()
    assert cells[1].endswith("*") and cells[5].endswith("*")  # daxfs total and creates
    assert "* stopped at --limit 0.3 s (each phase at 0.075 s): rates of the work done" in out
    assert "not measured (needs --procs 1,2 and --layout disjoint)" in out
    assert os.listdir(tmp_path) == []


def test_share_dask_tiny(tmp_path, capsys):
    pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    argv = ["share", "--files", "2", "--procs", "1", "--prefill", "0", "--repeat", "1"]
    argv += ["--dask", "--dask-size", "2M", "--dask-chunk", "1M", "--pool-size", "64M"]
    argv += ["--no-beside", "--pool-dir", str(tmp_path), "--format", "plain"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = plain_rows(out, ["write 2 MiB (da.store)", "read back + sum"])
    assert len(rows) == 2
    for cells in rows.values():
        assert len(cells) == 5  # two times with their units, and the speed ratio
        assert float(cells[4]) > 0
    assert "aim: dask + zarr through DaxStore >= 0.8x LocalStore on tmpfs, write and read: " in out
    assert os.listdir(tmp_path) == []


def test_share_beside_tiny(tmp_path, capsys):
    """Small creates alone and beside a large writer, on both sides: a row
    each, rates above zero, the writer's files counted, nothing left."""
    js = tmp_path / "share.json"
    argv = ["share", "--files", "2", "--procs", "1", "--prefill", "0", "--repeat", "1"]
    argv += ["--no-dask", "--beside-files", "100", "--beside-big", "2M", "--pool-size", "64M"]
    argv += ["--pool-dir", str(tmp_path), "--format", "plain", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = plain_rows(out, ["daxfs", "kernel"])
    assert list(rows) == ["daxfs", "kernel"]
    for cells in rows.values():
        alone, beside, ratio = (float(c.replace(",", "")) for c in cells[:3])
        assert alone > 0 and beside > 0 and ratio == pytest.approx(beside / alone, abs=0.01)
        assert int(cells[-1].replace(",", "")) >= 1  # the writer wrote while timed
    assert "beside a large writer: daxfs creates at " in out
    _share, beside = json.loads(js.read_text())
    assert beside["data"]["daxfs"]["beside"]["big_writes"] >= 1
    assert os.listdir(tmp_path) == ["share.json"]


def test_share_prints_each_coherence_counter_per_call():
    """Every counter of fs.coherence gets a column, per FileSystem call, 0
    when a mount never counted it."""
    import argparse

    from daxfs.bench.share import Case, Outcome, make_report

    def outcome(coherence):
        ops = dict.fromkeys(("create", "stat", "read", "unlink"), 10)
        return Outcome(ops, dict.fromkeys(ops, 0.01), 0.03, [], coherence, {})

    args = argparse.Namespace(
        files=10,
        repeat=1,
        start_method="fork",
        pool_size=64 << 20,
        pool_dir="/dev/shm",
        limit=1.0,
        argv=["share"],
    )
    case = Case(0, 1, "disjoint")
    counted = {"records_applied": 40, "optimistic_commits": 16, "conflicts": 2}
    results = {case: {"kernel": outcome({}), "daxfs": outcome(counted)}}
    report = make_report(args, results, {0: {}}, "env")
    assert report.columns[-5:] == [
        "rebuilds/call",
        "records/call",
        "optimistic/call",
        "conflicts/call",
        "contended/call",
    ]
    assert report.rows[0][-5:] == ["0", "0.500", "0.200", "0.025", "0"]  # over 80 calls


def test_scale_tiny(tmp_path, capsys):
    """bench scale at 64 MiB with 30 files (ext4 beside it when root can
    loop-mount), then the tail-waste phases with 3 medium files: every row,
    the aims, nothing left in --pool-dir."""
    js = tmp_path / "scale.json"
    pool_dir = tmp_path / "pools"
    pool_dir.mkdir()
    argv = ["scale", "--sizes", "64M", "--files", "30", "--medium", "3", "--churn", "3"]
    argv += ["--pool-dir", str(pool_dir), "--format", "plain", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "$ python -m daxfs.bench " + " ".join(argv) in out
    labels = ["64 MiB empty: daxfs", "64 MiB 30 files: daxfs"]
    if "ext4 side skipped" not in out:
        labels += ["64 MiB empty: ext4", "64 MiB 30 files: ext4"]
    rows = plain_rows(out, labels)
    assert set(rows) == set(labels)
    aims = rows["64 MiB empty: daxfs"]
    assert aims[-1] == "met" or "met:" in aims  # the aims cell (timings are not checked)
    assert "aim: empty 64 MiB pool: mkfs < 1 s: " in out
    assert "aim: 30 files: mount < 0.5 s at every size: " in out
    phases = [
        f"{p}, tails={t}" for t in ("keep", "trim") for p in ("fresh", "after 3 rounds of churn")
    ]
    tail = plain_rows(out, phases)
    assert len(tail) == 4
    ratios = {}
    for label, cells in tail.items():
        files, ratio = int(cells[0]), float(cells[5].rstrip("%"))  # cells[1:5]: two sizes
        assert files > 0 and 0 < ratio <= 100  # file bytes / space taken
        ratios[label] = ratio
    # Trimming gives the last chunks' tails back: the same files take less.
    assert ratios["fresh, tails=trim"] > ratios["fresh, tails=keep"]
    assert "aim: tail figure fresh, tails=trim >= 97%: " in out
    scale, tail_data = json.loads(js.read_text())
    empty = scale["data"]["sizes"][str(64 << 20)]["daxfs"]["empty"]
    assert empty["ro"]["seconds"] > 0 and empty["rw"]["rss"] > 0 and empty["disk"] > 0
    assert tail_data["data"]["fresh/trim"]["files"] == 3
    assert os.listdir(pool_dir) == []  # pools, images and the mount point are gone


def test_follow_tiny(capsys):
    """bench follow: the delay of both followers and the reads of both
    mounts, idle and churning, at a tiny size; nothing left in /dev/shm."""
    argv = ["follow", "--commits", "30", "--files", "20", "--seconds", "0.1", "--rounds", "1"]
    left = {n for n in os.listdir("/dev/shm") if n.startswith("daxfs-bench-follow-")}
    assert main([*argv, "--format", "plain"]) == 0
    out = capsys.readouterr().out
    delays = plain_rows(
        out, ["daxfs follower (tails the journal)", "famfs model (replays the log)"]
    )
    assert len(delays) == 2 and all(cells[-1] == "µs" for cells in delays.values())
    reads = plain_rows(out, ["idle", "churning"])
    assert len(reads) == 2
    assert all(float(cells[-1]) > 0 for cells in reads.values())
    assert {n for n in os.listdir("/dev/shm") if n.startswith("daxfs-bench-follow-")} == left


def test_dirs_tiny(tmp_path, capsys):
    """bench dirs: both sides' fill, drain and refill rates, their ratios and
    what each side kept of its fill rate, at a tiny size; nothing left
    behind."""
    js = tmp_path / "dirs.json"
    argv = ["dirs", "--files", "40", "--creates", "10", "--rounds", "1"]
    argv += ["--pool-dir", str(tmp_path), "--format", "plain", "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    labels = ["creates, growing", "unlinks, oldest half", "creates, drained"]
    rows = plain_rows(out, [*labels, "kept (drained / growing)"])
    assert len(rows) == 4
    for label in labels:
        kernel, dax, ratio = (float(c.replace(",", "")) for c in rows[label])
        assert kernel > 0 and dax > 0 and ratio >= 0
    data = json.loads(js.read_text())["data"]
    best = data["best"]
    assert data["kept"]["daxfs"] == pytest.approx(best["daxfs"]["refill"] / best["daxfs"]["fill"])
    assert os.listdir(tmp_path) == ["dirs.json"]  # the work directory is removed


def test_create_count_traces_a_said_create():
    """scripts/create_count.py --trace counts one create's Python steps;
    the creates it counts take the said path (its create and fill are
    among the functions that run most), as bench meta's do."""
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "create_count.py")
    out = subprocess.run(
        [sys.executable, script, "--trace", "--files", "50"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    head = re.match(r"one create: ([\d,]+) bytecodes, ([\d,]+) lines, (\d+) calls", out)
    assert head is not None, out
    bytecodes, calls = int(head.group(1).replace(",", "")), int(head.group(3))
    assert 500 < bytecodes < 20_000 and 10 < calls < bytecodes
    top = out.splitlines()[1:]
    assert any(line.endswith("logical.py:_say_create") for line in top), out
    assert any(line.endswith("logical.py:_say_data") for line in top), out
