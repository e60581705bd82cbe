"""MappedReader (what fs.open(p, "rb") returns) against the kernel's files.

A Hypothesis state machine keeps one file open for reading on both sides:
daxfs's MappedReader, and the kernel's unbuffered FileIO over the same bytes
on tmpfs, which like MappedReader reads the file as it is at each call.
Every read, readinto, readline, readlines, next, seek and tell must answer
the same (errors included), also after another handle wrote, extended or
truncated the file.  read1 and peek, whose lengths io leaves open, are held
to their contracts instead.  With no writer, a BufferedReader agrees with
FileIO; the tests after the machine hold MappedReader to BufferedReader's
own answers where the two differ (bad arguments, closed files), and hold
"r" (a TextIOWrapper over MappedReader) to the builtin open's "r".
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import daxfs
from conftest import put, run_threads_switching_often
from daxfs.fileio import DEFAULT_BUFFER, MappedReader

LINE_BYTES = st.binary(max_size=40) | st.sampled_from([b"\n", b"\n\n", b"x" * 300 + b"\n"])
CONTENTS = st.lists(LINE_BYTES, max_size=12).map(b"".join) | st.binary(max_size=9000)
SIZES = st.sampled_from([None, -1, 0, 1, 2, 7, 255, 256, 257, 4096, 20_000])
OFFSETS = st.integers(-50, 10_000)


def outcome(fn):
    """What a call gives: ("ok", value) or ("err", exception type, errno)."""
    try:
        return ("ok", fn())
    except (OSError, ValueError, TypeError) as e:
        return ("err", type(e).__name__, getattr(e, "errno", None))


class ReaderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(dir="/dev/shm")
        self.pool = os.path.join(self.dir, "pool")
        daxfs.mkfs(self.pool, "64M")
        self.fs = daxfs.mount(self.pool)
        self.model_path = os.path.join(self.dir, "model")

    def teardown(self) -> None:
        for f in ("dax", "model", "dax_w", "model_w"):
            if hasattr(self, f):
                getattr(self, f).close()
        self.fs.close()
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    @initialize(data=CONTENTS)
    def open_both(self, data):
        put(self.fs, "/f", data)
        with open(self.model_path, "wb") as f:
            f.write(data)
        self.dax = self.fs.open("/f", "rb")
        assert type(self.dax) is MappedReader
        self.model = open(self.model_path, "rb", buffering=0)
        self.dax_w = self.fs.open("/f", "r+b", buffering=0)
        self.model_w = open(self.model_path, "r+b", buffering=0)

    def same(self, dax_call, model_call):
        got, want = outcome(dax_call), outcome(model_call)
        assert got == want
        return got

    @rule(n=SIZES)
    def read(self, n):
        self.same(lambda: self.dax.read(n), lambda: self.model.read(n))

    @rule(n=st.integers(0, 20_000), kind=st.sampled_from([bytearray, "view", "ints"]))
    def readinto(self, n, kind):
        def into(f):
            buf = bytearray(n)
            if kind == "view":
                got = f.readinto(memoryview(buf)[: n // 2 * 2])
            elif kind == "ints":  # a view of another format: counted in bytes
                got = f.readinto(memoryview(buf)[: n // 4 * 4].cast("I"))
            else:
                got = f.readinto(buf)
            return got, bytes(buf)

        self.same(lambda: into(self.dax), lambda: into(self.model))

    @rule(n=SIZES)
    def readline(self, n):
        self.same(lambda: self.dax.readline(n), lambda: self.model.readline(n))

    @rule(hint=st.sampled_from([-1, 0, 1, 50, 1000]))
    def readlines(self, hint):
        self.same(lambda: self.dax.readlines(hint), lambda: self.model.readlines(hint))

    @rule()
    def next_line(self):
        self.same(lambda: next(self.dax, None), lambda: next(self.model, None))

    @rule(n=st.sampled_from([-1, 0, 1, 100, 5000]))
    def read1(self, n):
        pos = self.model.tell()
        rest = self.model.read()
        got = self.dax.read1(n)
        assert rest.startswith(got)
        assert got or not rest or n == 0
        assert len(got) <= (n if n >= 0 else DEFAULT_BUFFER)
        self.model.seek(pos + len(got))

    @rule(n=st.sampled_from([0, 1, 100, 9000]))
    def peek(self, n):
        pos = self.model.tell()
        rest = self.model.read()
        self.model.seek(pos)
        got = self.dax.peek(n)
        assert rest.startswith(got)
        assert got or not rest
        assert self.dax.tell() == pos

    @rule(off=OFFSETS, whence=st.sampled_from([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END]))
    def seek(self, off, whence):
        self.same(lambda: self.dax.seek(off, whence), lambda: self.model.seek(off, whence))

    @rule(off=st.integers(0, 9000), data=st.binary(min_size=1, max_size=3000))
    def write_elsewhere(self, off, data):
        """Another handle writes: the reader sees it at its next read."""
        for f in (self.dax_w, self.model_w):
            f.seek(off)
            f.write(data)

    @rule(size=st.integers(0, 9000))
    def truncate_elsewhere(self, size):
        for f in (self.dax_w, self.model_w):
            f.truncate(size)

    @invariant()
    def same_position(self):
        if hasattr(self, "dax"):
            assert self.dax.tell() == self.model.tell()


TestReaderMachine = ReaderMachine.TestCase
TestReaderMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


# ---------------------------------------------------------------------------
# Where BufferedReader is the model: arguments, closed files, the io surface
# ---------------------------------------------------------------------------
@pytest.fixture
def both(fs, tmp_path):
    data = b"ab\ncd\n\nlast"
    put(fs, "/f", data)
    (tmp_path / "f").write_bytes(data)
    dax, model = fs.open("/f", "rb"), open(tmp_path / "f", "rb")
    yield dax, model
    dax.close()
    model.close()


CALLS = [
    lambda f: f.read(1.5),
    lambda f: f.read(-2),
    lambda f: f.read(True),
    lambda f: f.readline(1.5),
    lambda f: f.readline(-3),
    lambda f: f.readinto(b"xx"),
    lambda f: f.seek(1.5),
    lambda f: f.seek(0, 7),
    lambda f: f.seek(-1),
    lambda f: f.seek(True),
    lambda f: f.read1(-5),
    lambda f: f.readable(),
    lambda f: f.writable(),
    lambda f: f.seekable(),
    lambda f: f.isatty(),
]


@pytest.mark.parametrize("call", range(len(CALLS)))
def test_answers_as_buffered_reader(both, call):
    dax, model = both
    assert outcome(lambda: CALLS[call](dax)) == outcome(lambda: CALLS[call](model))
    assert dax.tell() == model.tell()


def test_refusals_as_buffered_reader(both):
    dax, _ = both
    for call in (lambda: dax.write(b"x"), dax.truncate, dax.detach, dax.fileno):
        with pytest.raises(io.UnsupportedOperation):
            call()
    assert isinstance(dax, io.BufferedIOBase) and not isinstance(dax, io.BufferedReader)
    with pytest.raises(TypeError):
        pickle.dumps(dax)


CLOSED_CALLS = [
    "read",
    "read1",
    "readline",
    "readlines",
    "peek",
    "tell",
    "readable",
    "seekable",
    "isatty",
    "flush",
]


@pytest.mark.parametrize("name", CLOSED_CALLS)
def test_closed_reader_refuses_as_buffered_reader(both, name):
    dax, model = both
    dax.close()
    model.close()
    dax.close()  # (twice is no error)
    for f in (dax, model):
        with pytest.raises(ValueError):
            getattr(f, name)()
    for f in (dax, model):
        with pytest.raises(ValueError):
            f.seek(0)
        with pytest.raises(ValueError):
            f.readinto(bytearray(2))
        with pytest.raises(ValueError):
            iter(f)


def test_closing_unpins_and_unmount_closes(pool_path):
    fs = daxfs.mount(pool_path)
    put(fs, "/f", b"x" * 5000)
    f = fs.open("/f", "rb")
    assert fs._open
    f.close()
    assert not fs._open
    g = fs.open("/f", "rb")
    fs.close()
    assert g.closed


def test_threads_reading_one_reader_never_get_the_same_bytes(fs):
    """io's promise for BufferedReader: several threads may read one file
    object at once.  Each record read is one that no other read got."""
    records = [b"%015d\n" % i for i in range(20_000)]
    put(fs, "/f", b"".join(records))
    got: list[bytes] = []
    with fs.open("/f", "rb") as f:

        def reader(_t: int) -> None:
            mine = []
            while piece := (f.read(16) if len(mine) % 2 else f.readline()):
                mine.append(piece)
            got.extend(mine)

        run_threads_switching_often(reader, 4)
    assert sorted(got) == records


def test_reader_is_what_fsync_takes(fs):
    put(fs, "/f", b"data")
    with fs.open("/f", "rb") as f:
        fs.fsync(f)


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(st.characters(codec="utf-8"), max_size=400),
    newline=st.sampled_from([None, "", "\n", "\r", "\r\n"]),
    sizes=st.lists(st.integers(-1, 50), max_size=8),
)
def test_text_mode_reads_as_builtin_open(text, newline, sizes):
    """ "r" is a TextIOWrapper over a MappedReader; it decodes, splits lines
    and tells positions as the builtin open's "r" does."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        pool, model = os.path.join(d, "pool"), os.path.join(d, "model")
        raw = text.replace("\n", "\r\n").encode()  # (some \r\n for the newline modes)
        with open(model, "wb") as f:
            f.write(raw)
        daxfs.mkfs(pool, "16M")
        with daxfs.mount(pool) as fs:
            put(fs, "/t", raw)
            with (
                fs.open("/t", encoding="utf-8", newline=newline) as dax,
                open(model, encoding="utf-8", newline=newline) as want,
            ):
                assert type(dax.buffer) is MappedReader
                for n in sizes:
                    assert dax.read(n) == want.read(n)
                    assert dax.tell() == want.tell()
                    assert dax.readline() == want.readline()
                cookie = want.tell()
                assert dax.tell() == cookie
                assert dax.readlines() == want.readlines()
                dax.seek(cookie)
                want.seek(cookie)
                assert dax.read() == want.read()
