"""A dask array over a zarr array in a daxfs pool, computed by worker processes.

The zarr array lives in the pool through daxfs.zarr.DaxStore.  dask pickles
the array into its tasks; each worker process unpickles the store, mounts
the pool itself (once per process) and reads chunks as views of the pool's
memory: the array is uncompressed, so the one copy a read makes is zarr
assembling the block dask asked for.  The workers also write a result array
back into the pool (each chunk replaced atomically), which the parent reads.

    python examples/dask_zarr.py [POOL]   # POOL: a pool file to make (default: a temporary one)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import Executor, ProcessPoolExecutor

import dask
import dask.array as da
import numpy as np
import zarr

import daxfs
from daxfs.zarr import DaxStore

SHAPE = (1024, 1024)
CHUNKS = (256, 256)


def make_array(pool: str) -> zarr.Array:
    """A float64 array in the pool, filled with data numpy can recompute."""
    store = DaxStore(pool, root="/demo")
    z = zarr.create_array(
        store, name="x", shape=SHAPE, chunks=CHUNKS, dtype="f8", compressors=None, overwrite=True
    )
    z[:] = expected_data()
    return z


def expected_data() -> np.ndarray:
    return np.arange(SHAPE[0] * SHAPE[1], dtype="f8").reshape(SHAPE) / 7.0


def block_pid(block: np.ndarray) -> np.ndarray:
    """Which process read this block (one number per block)."""
    return np.full((1, 1), os.getpid(), dtype="i8")


def mapped_file(address: int) -> str | None:
    """The file the kernel maps at ``address`` in this process (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) == 6 else None
    return None


def probe(store: DaxStore, key: str) -> tuple[int, bool]:
    """In a worker: read one chunk through the store; are its bytes the pool's
    own memory, mapped at the buffer's address?"""
    buffer = store.get_sync(key)
    assert buffer is not None, key
    address = buffer.as_numpy_array().__array_interface__["data"][0]
    return os.getpid(), mapped_file(address) == store.pool


def run(pool: str, executor: Executor) -> dict:
    """Everything the example does, with dask's process scheduler on ``executor``."""
    z = make_array(pool)
    x = da.from_zarr(z)
    on_workers = {"scheduler": "processes", "pool": executor}

    total, column_means, pids = dask.compute(
        x.sum(), x.mean(axis=0), x.map_blocks(block_pid, chunks=(1, 1), dtype="i8"), **on_workers
    )

    y = zarr.create_array(
        z.store, name="y", shape=SHAPE, chunks=CHUNKS, dtype="f8", compressors=None, overwrite=True
    )
    da.store(2 * x + 1, y, lock=False, **on_workers)  # each worker writes its own chunks

    rows, cols = (n // c for n, c in zip(SHAPE, CHUNKS, strict=True))
    keys = [f"x/c/{i}/{j}" for i in range(rows) for j in range(cols)]
    probes = dask.compute(*[dask.delayed(probe)(z.store, k) for k in keys], **on_workers)
    return {
        "total": total,
        "column_means": column_means,
        "read_pids": set(pids.ravel().tolist()),
        "written": y[:],
        "probes": list(probes),
    }


def spawn_pool(workers: int = 2) -> ProcessPoolExecutor:
    """Fresh worker processes (spawn, not fork): each mounts the pool on its own."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def main(pool: str) -> None:
    daxfs.mkfs(pool, "64M")
    with spawn_pool() as executor:
        result = run(pool, executor)
    data = expected_data()
    assert np.isclose(result["total"], data.sum())
    assert np.allclose(result["column_means"], data.mean(axis=0))
    assert np.array_equal(result["written"], 2 * data + 1)
    assert os.getpid() not in result["read_pids"]
    zero_copy = all(in_pool for _, in_pool in result["probes"])
    probe_pids = {pid for pid, _ in result["probes"]}
    print(f"sum {result['total']:.6g} == numpy's; column means == numpy's")
    print(f"chunks read by worker processes {sorted(result['read_pids'])} (this is {os.getpid()})")
    print(f"chunk buffers were views of the pool's memory in {sorted(probe_pids)}: {zero_copy}")
    print("2 * x + 1, written by the workers into the pool, reads back equal: True")
    assert zero_copy
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(os.path.join(tmp, "pool"))
