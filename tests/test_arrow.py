"""Arrow and numpy over a pool: Arrow IPC opened zero-copy from a mapping
(every column buffer lies inside the mapped range), Parquet read from a
mapping, and numpy arrays through fs.ndarray, np.save/np.load through
fs.open, and .npy files viewed in place through fs.map."""

from __future__ import annotations

import gc
import os

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

import daxfs
from daxfs.fsspec import DaxFileSystem

MiB = 1 << 20


def sample_table(n: int = 200_000) -> pa.Table:
    return pa.table(
        {
            "i": pa.array(np.arange(n, dtype="int64")),
            "x": pa.array(np.linspace(-1, 1, n)),
            "maybe": pa.array([None if k % 7 == 0 else k for k in range(n)], type=pa.int32()),
            "s": pa.array([f"s{k % 1000}" for k in range(n)]),
        }
    )


def write_ipc_file(fs: daxfs.FileSystem, path: str, table: pa.Table) -> None:
    with fs.open(path, "wb") as f, ipc.new_file(f, table.schema) as writer:
        writer.write_table(table, max_chunksize=50_000)


def buffers_of(table: pa.Table) -> list[pa.Buffer]:
    return [
        buf
        for column in table.columns
        for chunk in column.chunks
        for buf in chunk.buffers()
        if buf is not None
    ]


def inside(buf: pa.Buffer, m: daxfs.Mapping) -> bool:
    return m.address <= buf.address and buf.address + buf.size <= m.address + len(m)


# ---------------------------------------------------------------------------
# Arrow IPC: zero-copy from the mapping
# ---------------------------------------------------------------------------
def test_ipc_file_opens_zero_copy_from_the_mapping(fs):
    table = sample_table()
    write_ipc_file(fs, "/t.arrow", table)
    with fs.map("/t.arrow") as m:
        allocated = pa.total_allocated_bytes()
        got = ipc.open_file(pa.BufferReader(m.to_arrow())).read_all()
        assert got.equals(table)
        bufs = buffers_of(got)
        assert len(bufs) >= 4 * 4  # validity + data (+ offsets) of every chunk
        assert all(inside(b, m) for b in bufs)
        # Arrow's allocator gave out (almost) nothing: only schema-sized objects.
        assert pa.total_allocated_bytes() - allocated < 64 * 1024 < table.nbytes
        del got, bufs


def test_ipc_stream_opens_zero_copy_too(fs):
    table = sample_table(10_000)
    with fs.open("/t.arrows", "wb") as f, ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    with fs.map("/t.arrows") as m:
        got = ipc.open_stream(m.to_arrow()).read_all()
        assert got.equals(table)
        assert all(inside(b, m) for b in buffers_of(got))
        del got


def test_ipc_written_through_fsspec_maps_zero_copy(pool_path):
    dfs = DaxFileSystem(pool=pool_path)
    try:
        table = sample_table(20_000)
        with dfs.open("/via-fsspec.arrow", "wb") as f, ipc.new_file(f, table.schema) as w:
            w.write_table(table)
        with dfs.dax.map("/via-fsspec.arrow") as m:
            got = ipc.open_file(m.to_arrow()).read_all()
            assert got.equals(table) and all(inside(b, m) for b in buffers_of(got))
            del got
    finally:
        dfs.unmount()


def test_a_zero_copy_table_sees_stores_into_the_pool(fs):
    table = pa.table({"v": pa.array(np.zeros(1000, dtype="int64"))})
    write_ipc_file(fs, "/live.arrow", table)
    with fs.map("/live.arrow", "r+") as m:
        got = ipc.open_file(m.to_arrow()).read_all()
        (data,) = [b for b in buffers_of(got) if b.size >= 8000]
        values = np.frombuffer(m.buffer, dtype="int64", count=1000, offset=data.address - m.address)
        values[123] = 42  # a store through the mapping, not a rewrite of the file
        assert got["v"][123].as_py() == 42
        del got, data, values


def test_a_table_outlives_its_mapping_and_the_file_name(fs, pool_path):
    table = sample_table(100_000)
    write_ipc_file(fs, "/gone.arrow", table)

    def load() -> pa.Table:
        # The Mapping object is dropped here; the table's buffers keep the
        # memory mapped and the extents pinned.
        return ipc.open_file(fs.map("/gone.arrow").to_arrow()).read_all()

    got = load()
    gc.collect()
    fs.unlink("/gone.arrow")
    with fs.open("/filler", "wb") as f:  # new allocations must not reuse pinned space
        f.write(b"\xff" * (16 * MiB))
    assert got.equals(table)
    free_while_pinned = fs.statvfs().free_bytes
    del got
    gc.collect()
    fs.close()
    with daxfs.mount(pool_path) as again:  # the orphan is reclaimed once unpinned
        assert again.statvfs().free_bytes > free_while_pinned + table.nbytes // 2


# ---------------------------------------------------------------------------
# Parquet: the file is read from the mapping without a copy of it
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_parquet_reads_from_the_mapping(fs, compression):
    table = sample_table()
    with fs.open("/t.parquet", "wb") as f:
        pq.write_table(table, f, compression=compression, row_group_size=60_000)
    with fs.map("/t.parquet") as m:
        source = pa.BufferReader(m.to_arrow())
        parquet = pq.ParquetFile(source)
        assert parquet.metadata.num_rows == table.num_rows
        assert parquet.metadata.num_row_groups == 4
        assert parquet.read().equals(table)
        assert (
            parquet.read_row_group(2, columns=["s"])
            .column("s")
            .equals(table.column("s").slice(120_000, 60_000))
        )
        # What the Parquet reader gets from this source are slices of the
        # mapping (decoding into columns then makes new buffers, as it must).
        chunk = parquet.metadata.row_group(1).column(0)
        source.seek(chunk.data_page_offset)
        piece = source.read_buffer(chunk.total_compressed_size)
        assert inside(piece, m) and piece.address == m.address + chunk.data_page_offset
        del source, parquet, piece, chunk
        gc.collect()  # ParquetFile holds its source in reference cycles


def test_parquet_round_trips_through_fsspec_paths(pool_path):
    dfs = DaxFileSystem(pool=pool_path)
    try:
        table = sample_table(30_000)
        with dfs.open("/p/t.parquet", "wb") as f:
            pq.write_table(table, f)
        with dfs.open("/p/t.parquet", "rb") as f:
            assert pq.read_table(f).equals(table)
        assert pq.read_table("/p/t.parquet", filesystem=dfs).equals(table)
    finally:
        dfs.unmount()


# ---------------------------------------------------------------------------
# numpy
# ---------------------------------------------------------------------------
def test_fs_ndarray_round_trip(fs):
    made = fs.ndarray("/grid.f32", dtype="float32", shape=(300, 400), mode="w+")
    assert made.shape == (300, 400) and not made.any()  # new space reads as zero
    made[:] = np.arange(300 * 400, dtype="float32").reshape(300, 400)
    del made
    seen = fs.ndarray("/grid.f32", dtype="float32", shape=(300, 400))
    assert (seen == np.arange(300 * 400, dtype="float32").reshape(300, 400)).all()
    assert not seen.flags.writeable
    with fs.open("/grid.f32", "rb") as f:
        assert f.read(8) == np.array([0, 1], dtype="float32").tobytes()
    assert fs.stat("/grid.f32").st_size == 300 * 400 * 4
    del seen


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype="<i8").reshape(3, 4),
        np.asfortranarray(np.linspace(0, 1, 20).reshape(4, 5)),
        np.zeros(5, dtype=[("id", "<u4"), ("xy", "<f8", (2,))]),
        np.array([], dtype="float16"),
        np.array(3.5),
    ],
    ids=["int", "fortran", "structured", "empty", "scalar"],
)
def test_np_save_and_load_through_fs_open(fs, array):
    with fs.open("/a.npy", "wb") as f:
        np.save(f, array)
    with fs.open("/a.npy", "rb") as f:
        back = np.load(f)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)
    assert back.flags.f_contiguous == array.flags.f_contiguous


NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npy_mapped(fs: daxfs.FileSystem, path: str, mode: str = "r") -> np.ndarray:
    """np.load(..., mmap_mode=mode) for a pool: the header is read through
    fs.open, the array is a view of fs.map (no copy of the data)."""
    with fs.open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = NPY_HEADER_READERS[version](f)
        data_offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: object arrays cannot be mapped")
    order = "F" if fortran else "C"
    return fs.map(path, mode).ndarray(dtype, shape, offset=data_offset, order=order)


def test_npy_files_are_viewed_in_place_through_fs_map(fs):
    array = np.asfortranarray(np.random.default_rng(1).random((256, 300)))
    with fs.open("/big.npy", "wb") as f:
        np.save(f, array)
    view = load_npy_mapped(fs, "/big.npy", "r+")
    assert np.array_equal(view, array) and view.flags.f_contiguous
    assert not view.flags.owndata
    # Shared both ways, so a view and not a copy: a store into the view is
    # what np.load reads back, and a write() through the file is in the view.
    view[7, 11] = -1.0
    with fs.open("/big.npy", "rb") as f:
        assert np.load(f)[7, 11] == -1.0
    with fs.open("/big.npy", "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(np.float64(2.5).tobytes())
    assert view[-1, -1] == 2.5
    del view
