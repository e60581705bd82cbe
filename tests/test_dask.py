"""dask over a zarr array in a pool, computed by other processes that each
mount the pool and read it zero-copy (examples/dask_zarr.py does the work)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import daxfs

pytest.importorskip("dask.array")
pytest.importorskip("zarr")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture
def example(monkeypatch):
    """The example as a module; on sys.path so that spawned workers import its
    functions by name."""
    monkeypatch.syspath_prepend(EXAMPLES)
    import dask_zarr

    return dask_zarr


def test_worker_processes_read_and_write_the_pool(example, shm_dir):
    pool = os.path.join(shm_dir, "pool")
    daxfs.mkfs(pool, "64M")
    with example.spawn_pool(2) as executor:
        result = example.run(pool, executor)
    data = example.expected_data()

    assert np.isclose(result["total"], data.sum(), rtol=1e-12)
    np.testing.assert_allclose(result["column_means"], data.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(result["written"], 2 * data + 1)
    # The blocks were read by worker processes, not by this one ...
    assert result["read_pids"] and os.getpid() not in result["read_pids"]
    # ... and a chunk read in a worker is the pool file's memory mapped there.
    probes = result["probes"]
    assert len(probes) == 16
    assert all(pid != os.getpid() for pid, _ in probes)
    assert all(in_pool for _, in_pool in probes)


def test_example_runs_as_a_script(shm_dir):
    pool = os.path.join(shm_dir, "script-pool")
    res = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "dask_zarr.py"), pool],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("OK")
