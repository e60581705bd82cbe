"""parquet: a real client, pandas and pyarrow, through ``daxfs://`` beside a
local file.

One table of --rows rows (five numeric columns, seeded random values) is
made in memory, untimed.  Then, on each side, best of --repeat:

    write     DataFrame.to_parquet(target)
    pandas    pandas.read_parquet(target)
    pyarrow   pyarrow.parquet.read_table(target)
    mapped    pyarrow.parquet.read_table of the file's bytes mapped, zero
              copy: pyarrow.memory_map(path) locally, a BufferReader over
              daxfs's fs.map(path).to_arrow() on the other side

where the target is

    local     a file path in --pool-dir (tmpfs: /dev/shm by default): the
              readers' own native file I/O
    daxfs     the URL daxfs:///table.parquet of a pool file in that same
              directory (``storage_options={"pool": ...}``: fsspec, one
              mount kept for the run; pyarrow is given that fsspec file
              system)

Sides alternate within a round, so both see the same machine noise.  Each
read is checked to give back the table written.  The ratio is local time
over daxfs time: above 1.0, daxfs is faster.

Issue 17's aim: the pandas and pyarrow reads at least 1.0x of the local
file's (the pool's memory is mapped already, so it should not lose).  The
mapped row shows the zero-copy way, for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

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
    timed,
)

HELP = "pandas and pyarrow Parquet through daxfs:// beside a local file"
DESCRIPTION = __doc__
AIM = 1.0  # reads: local time / daxfs time at least this
PHASES = [("write", "DataFrame.to_parquet"), ("pandas", "pandas.read_parquet"),
          ("pyarrow", "pyarrow.parquet.read_table"),
          ("mapped", "read_table of the mapping")]  # fmt: skip
AIMED = ("pandas", "pyarrow")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rows", type=int, default=5_200_000, help="rows (5,200,000: a file of about 178 MB)"
    )
    p.add_argument(
        "--compression",
        default="none",
        help="Parquet compression: none (default: the file system's share of the time "
        "is what is measured), snappy, zstd, ...",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per phase and side; best kept (3)")
    add_pool_dir_argument(p, "where the local file and the pool file go")
    add_output_arguments(p)


def make_table(rows: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(17)
    return pd.DataFrame({
        "id": np.arange(rows, dtype=np.int64),
        "key": rng.integers(0, 1 << 40, rows),
        "x": rng.random(rows),
        "y": rng.random(rows),
        "group": rng.integers(0, 1000, rows).astype(np.int32),
    })  # fmt: skip


class Side:
    """One place to write the table and read it back."""

    def __init__(self, name: str, target: str, storage_options: dict | None, filesystem, mapped):
        self.name, self.target = name, target
        self.storage_options, self.filesystem = storage_options, filesystem
        self.mapped = mapped  # () -> a pyarrow input over the file's bytes, mapped

    def write(self, df, compression) -> float:
        options = self.storage_options
        return timed(
            lambda: df.to_parquet(self.target, compression=compression, storage_options=options)
        )[1]

    def read_pandas(self, df) -> float:
        import pandas as pd

        got, seconds = timed(
            lambda: pd.read_parquet(self.target, storage_options=self.storage_options)
        )
        if not got.equals(df):
            raise RuntimeError(f"parquet benchmark: {self.name}: pandas read another table")
        return seconds

    def read_pyarrow(self, df) -> float:
        import pyarrow.parquet as pq

        path = self.target.removeprefix("daxfs://")
        got, seconds = timed(lambda: pq.read_table(path, filesystem=self.filesystem))
        self._check(got, df)
        return seconds

    def read_mapped(self, df) -> float:
        import pyarrow.parquet as pq

        got, seconds = timed(lambda: pq.read_table(self.mapped()))
        self._check(got, df)
        return seconds

    def _check(self, table, df) -> None:
        if table.num_rows != len(df) or table.column("id").to_numpy()[-1] != len(df) - 1:
            raise RuntimeError(f"parquet benchmark: {self.name}: pyarrow read another table")


def run_round(sides: list[Side], df, compression, best: dict) -> None:
    for side in sides:
        for phase, seconds in (
            ("write", side.write(df, compression)),
            ("pandas", side.read_pandas(df)),
            ("pyarrow", side.read_pyarrow(df)),
            ("mapped", side.read_mapped(df)),
        ):
            keep_fastest(best, side.name, phase, seconds)


def main(args: argparse.Namespace) -> int:
    if args.rows < 1 or args.repeat < 1:
        raise SystemExit("--rows and --repeat: at least 1")
    import fsspec
    import pyarrow as pa

    import daxfs

    compression = None if args.compression == "none" else args.compression
    pool_dir = check_pool_dir(args.pool_dir)
    work = tempfile.mkdtemp(prefix="daxfs-bench-parquet-", dir=pool_dir)
    try:
        print(f"making a table of {args.rows:,} rows ...", file=sys.stderr, flush=True)
        df = make_table(args.rows)
        pool = os.path.join(work, "parquet.pool")
        # Room for the file twice (a replacement is written before the old
        # one goes) and the pool's metadata.
        daxfs.mkfs(pool, next_pow2(max(64 * MiB, 3 * 40 * args.rows)))
        dax = fsspec.filesystem("daxfs", pool=pool)
        local = os.path.join(work, "table.parquet")
        try:
            sides = [
                Side("local", local, None, None, lambda: pa.memory_map(local)),
                Side(
                    "daxfs",
                    "daxfs:///table.parquet",
                    {"pool": pool},
                    dax,
                    lambda: pa.BufferReader(dax.dax.map("/table.parquet").to_arrow()),
                ),
            ]
            best: dict[tuple[str, str], float] = {}
            for i in range(args.repeat):
                run_round(sides if i % 2 == 0 else sides[::-1], df, compression, best)
            size = os.path.getsize(sides[0].target)
        finally:
            dax.unmount()
        report = make_report(args, best, size, environment(pool_dir))
        report.emit(args.format, args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def make_report(args, best: dict[tuple[str, str], float], size: int, env: str) -> Report:
    rows, ratios = [], {}
    for phase, label in PHASES:
        local, dax = best[("local", phase)], best[("daxfs", phase)]
        ratios[phase] = local / dax
        rows.append([label, fmt_seconds(local), fmt_seconds(dax), f"{ratios[phase]:.2f}"])
    verdict = [
        f"aim: {label} through daxfs:// >= {AIM}x of the local file: "
        + ("met" if ratios[phase] >= AIM else "not met")
        + f" ({ratios[phase]:.2f}x)"
        for phase, label in PHASES
        if phase in AIMED
    ]
    notes = [
        f"a table of {args.rows:,} rows, five numeric columns; a Parquet file of "
        f"{size / 1e6:,.0f} MB, compression {args.compression}; best of {args.repeat}, "
        "sides alternating",
        "local / daxfs: the local file's time over daxfs's (above 1.0: daxfs is faster)",
    ]
    return Report(
        title=f"daxfs parquet benchmark ({size / 1e6:,.0f} MB)",
        command=command_line(args.argv),
        env=env,
        notes=notes,
        columns=["call", "local file", "daxfs://", "local / daxfs"],
        rows=rows,
        verdict=verdict,
        data={
            "rows": args.rows,
            "bytes": size,
            "compression": args.compression,
            "ratio": ratios,
            "best_seconds": seconds_by_side(best),
        },
    )
