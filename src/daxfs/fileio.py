"""fileio: the objects fs.open() returns.

DaxRawFile is an io.RawIOBase over one inode; fs.open() wraps it in the
same BufferedWriter/BufferedRandom/TextIOWrapper classes the builtin open()
uses, so a daxfs file behaves like any Python file.  A file open for
reading only is a MappedReader instead of a BufferedReader: the bytes are
mapped already, so it reads straight from the pool with no buffer between
(and under a TextIOWrapper for "r").  There is no kernel descriptor behind
either: fileno() raises io.UnsupportedOperation.
"""

from __future__ import annotations

import errno
import functools
import io
import operator
import os
import threading
from typing import Protocol

from .path import oserror

DEFAULT_BUFFER = 128 * 1024
# What a file open for writing only gathers before its bytes go to the
# pool (one 2 MiB chunk, layout.CHUNK).  Each write that reaches the pool
# is a journaled change (its blocks and size): a stream of 64 KiB writes
# made one every 128 KiB (0.45 of the kernel's speed, bench io's append
# phase) and makes one a chunk (0.89); pyarrow's Parquet writer's 2,000
# writes of 16 - 256 KiB for a 178 MB file are about 100 changes, not
# 2,000.  Files that read keep DEFAULT_BUFFER: a read fills it whole.
WRITE_BUFFER = 2 * 1024 * 1024


class FileHost(Protocol):
    """What a file object asks of the file system that opened it (fs.py's
    FileSystem), named here so that this module does not import fs.py."""

    def _size_of(self, ino: int) -> int: ...
    def _pread(self, ino: int, pos: int, size: int | None) -> bytes: ...
    def _pread_into(self, ino: int, pos: int, buf) -> int: ...
    def _pwrite(self, ino: int, pos: int, data) -> None: ...
    def _seek_data(self, ino: int, pos: int, hole: bool) -> int: ...
    def _truncate_ino(self, ino: int, length: int) -> None: ...
    def _flush_ino(self, ino: int) -> None: ...
    def _release(self, ino: int) -> None: ...


@functools.lru_cache(maxsize=64)  # (every open parses one of a few modes)
def parse_mode(mode: str) -> tuple[str, bool, bool, bool]:
    """(kind r/w/a/x, plus, binary, text) with open()'s validation and messages."""
    chars = set(mode)
    if len(mode) != len(chars) or not chars <= set("rwaxbt+"):
        raise ValueError(f"invalid mode: {mode!r}")
    kinds = chars & set("rwax")
    if len(kinds) != 1:
        raise ValueError("must have exactly one of create/read/write/append mode")
    if "b" in chars and "t" in chars:
        raise ValueError("can't have text and binary mode at once")
    return kinds.pop(), "+" in chars, "b" in chars, "b" not in chars


class DaxRawFile(io.RawIOBase):
    # Slots for what every call reads: an io class's instance attributes
    # are read through its __dict__ the slow way (about 35 ns each; a 4
    # KiB readinto reads six).
    __slots__ = ("_fs", "_ino", "_pos", "_readable", "_writable", "_append", "_reading")

    def __init__(
        self,
        fs: FileHost,
        ino: int,
        name: str,
        mode: str,
        *,
        readable: bool,
        writable: bool,
        append: bool,
    ):
        super().__init__()
        self._fs, self._ino, self.name, self.mode = fs, ino, name, mode
        self._readable, self._writable, self._append = readable, writable, append
        self._reading = readable  # (open for reading and not closed: readinto's one check)
        # As the builtin open: an append-mode file starts positioned at its end.
        self._pos = fs._size_of(ino) if append else 0

    # -- capabilities ------------------------------------------------------
    def readable(self) -> bool:
        self._checkClosed()
        return self._readable

    def writable(self) -> bool:
        self._checkClosed()
        return self._writable

    def seekable(self) -> bool:
        self._checkClosed()
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("daxfs files have no kernel file descriptor")

    def isatty(self) -> bool:
        self._checkClosed()
        return False

    # -- I/O ---------------------------------------------------------------
    def _check_reading(self) -> None:
        self._checkClosed()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")

    def readinto(self, b) -> int:
        if not self._reading:  # (closed, or not for reading: _check_reading says which)
            self._check_reading()
        n = self._fs._pread_into(self._ino, self._pos, b)
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all when negative), copied once
        (RawIOBase's read copies twice)."""
        self._check_reading()
        data = self._fs._pread(self._ino, self._pos, None if size is None or size < 0 else size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read()

    def write(self, b) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        with memoryview(b) as view:
            data = view.cast("B")
            if self._append:
                self._pos = self._fs._size_of(self._ino)
            self._fs._pwrite(self._ino, self._pos, data)
            self._pos += len(data)
            return len(data)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        if whence not in _WHENCES:
            raise oserror(errno.EINVAL, self.name)  # as lseek(2)
        self._pos = _seek_target(self._fs, self._ino, self.name, self._pos, pos, whence)
        return self._pos

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")
        size = self._pos if size is None else size
        self._fs._truncate_ino(self._ino, size)
        return size

    def flush(self) -> None:
        if self._writable:
            super().flush()  # raises on a closed file, as io does
            self._fs._flush_ino(self._ino)
        elif self.closed:  # (nothing to flush: IOBase.flush's check, written out,
            raise ValueError("I/O operation on closed file.")  # as every close pays it twice)

    def close(self) -> None:
        if not self.closed:
            self._reading = False
            try:
                super().close()  # calls flush()
            finally:
                self._fs._release(self._ino)


_WHENCES = (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END, os.SEEK_DATA, os.SEEK_HOLE)


def _seek_target(fs: FileHost, ino: int, name: str, cur: int, pos, whence: int) -> int:
    """Where lseek(2) would put a file positioned at ``cur`` (EINVAL before
    the start)."""
    pos = operator.index(pos)
    if whence == os.SEEK_SET:
        new = pos
    elif whence == os.SEEK_CUR:
        new = cur + pos
    elif whence == os.SEEK_END:
        new = fs._size_of(ino) + pos
    else:
        new = fs._seek_data(ino, pos, hole=whence == os.SEEK_HOLE)
    if new < 0:
        raise oserror(errno.EINVAL, name)
    return new


def _read_size(size) -> int | None:
    """A read's size argument as BufferedReader takes it: None for the rest
    of the file (None or -1), ValueError for other negatives, TypeError for
    what is not an integer."""
    if size is None:
        return None
    size = operator.index(size)
    if size >= 0:
        return size
    if size == -1:
        return None
    raise ValueError("read length must be non-negative or -1")


class MappedReader(io.BufferedIOBase):
    """A file open for reading only: what a BufferedReader over a
    DaxRawFile would be, without the buffer.  The file's bytes are mapped
    already, so every read copies straight from the pool, once, and sees
    the file as it is now (a BufferedReader would copy twice, once into a
    buffer that then goes stale).  It is also one Python object instead of
    two that call each other: an open, 4 KiB read and close of a small file
    costs about 1.0 us of objects here against 2.9 (benchmark meta).

    It reads as BufferedReader does (the differential test holds it to
    one over a real file), but it is not one: isinstance(f, io.BufferedReader)
    is False, and it has no ``raw``.  Reads take the file system's usual
    paths (_pread, _pread_into: no pool lock and no syscall when nobody
    else committed); closing it unpins the inode, as closing a DaxRawFile
    does.  As io documents for BufferedReader, several threads may read
    one at once: a read and the move of the position it makes are one step
    (the reader's own lock), so no two reads get the same bytes."""

    __slots__ = ("_fs", "_ino", "_pos", "_lock")  # (as DaxRawFile's)

    def __init__(self, fs: FileHost, ino: int, name: str, mode: str):
        # (no super().__init__(): IOBase keeps no state until it is closed)
        self._fs, self._ino, self.name, self.mode = fs, ino, name, mode
        self._pos = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<daxfs.MappedReader name={self.name!r}>"

    def __getstate__(self):
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    # -- capabilities ------------------------------------------------------
    def readable(self) -> bool:
        self._checkClosed()
        return True

    def writable(self) -> bool:
        self._checkClosed()
        return False

    def seekable(self) -> bool:
        self._checkClosed()
        return True

    def isatty(self) -> bool:
        self._checkClosed()
        return False

    def fileno(self) -> int:
        self._checkClosed()
        raise io.UnsupportedOperation("daxfs files have no kernel file descriptor")

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        raise io.UnsupportedOperation("truncate")

    # -- reads -------------------------------------------------------------
    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            self._checkClosed()
        if type(size) is not int or size < 0:
            size = _read_size(size)
        with self._lock:
            data = self._fs._pread(self._ino, self._pos, size)
            self._pos += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, or up to a buffer's worth when negative."""
        size = operator.index(size)
        return self.read(size if size >= 0 else DEFAULT_BUFFER)

    def readinto(self, b) -> int:
        if self.closed:
            self._checkClosed()
        with self._lock:
            n = self._fs._pread_into(self._ino, self._pos, b)
            self._pos += n
        return n

    readinto1 = readinto

    def peek(self, size: int = 0) -> bytes:
        """Bytes from the position on, without moving it: at least one
        unless at the end, and at most a buffer's worth."""
        self._checkClosed()
        want = min(max(operator.index(size), io.DEFAULT_BUFFER_SIZE), DEFAULT_BUFFER)
        with self._lock:
            return self._fs._pread(self._ino, self._pos, want)

    def readline(self, size: int | None = -1) -> bytes:
        """One line, its newline included; at most ``size`` bytes.  Read in
        pieces that double (a line of a few hundred bytes is one copy)."""
        self._checkClosed()
        limit = None if size is None else operator.index(size)
        if limit is not None and limit < 0:
            limit = None
        with self._lock:
            return self._line(limit)

    def _line(self, limit: int | None) -> bytes:
        """readline's reads, under the reader's lock."""
        pieces, got, step = [], 0, _LINE_STEP
        while limit is None or got < limit:
            want = step if limit is None else min(step, limit - got)
            piece = self._fs._pread(self._ino, self._pos, want)
            end = piece.find(b"\n") + 1
            if end:
                piece = piece[:end]
            pieces.append(piece)
            got += len(piece)
            self._pos += len(piece)
            if end or len(piece) < want:
                break
            step = min(step * 2, DEFAULT_BUFFER)
        return b"".join(pieces)

    # -- position ------------------------------------------------------------
    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        if whence not in _WHENCES:
            raise ValueError(f"whence value {whence} unsupported")
        with self._lock:
            self._pos = _seek_target(self._fs, self._ino, self.name, self._pos, pos, whence)
            return self._pos

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                self._fs._release(self._ino)


_LINE_STEP = 256  # readline's first piece: most lines are shorter
