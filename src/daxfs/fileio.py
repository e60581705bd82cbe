"""fileio: the objects fs.open() returns.

DaxRawFile is an io.RawIOBase over one inode; fs.open() wraps it in the
same Buffered*/TextIOWrapper classes the builtin open() uses, so a daxfs
file behaves like any Python file.  There is no kernel descriptor behind
it: fileno() raises io.UnsupportedOperation.
"""

from __future__ import annotations

import errno
import functools
import io
import os
from typing import Protocol

from .path import oserror

DEFAULT_BUFFER = 128 * 1024


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
        if self.closed or not self._readable:  # (_check_reading, written out: every read pays it)
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
        if whence == os.SEEK_SET:
            new = pos
        elif whence == os.SEEK_CUR:
            new = self._pos + pos
        elif whence == os.SEEK_END:
            new = self._fs._size_of(self._ino) + pos
        elif whence in (os.SEEK_DATA, os.SEEK_HOLE):
            new = self._fs._seek_data(self._ino, pos, hole=whence == os.SEEK_HOLE)
        else:
            raise oserror(errno.EINVAL, self.name)  # as lseek(2)
        if new < 0:
            raise oserror(errno.EINVAL, self.name)
        self._pos = new
        return new

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
            try:
                super().close()  # calls flush()
            finally:
                self._fs._release(self._ino)
