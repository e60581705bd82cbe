"""daxfs: a file system for persistent and CXL memory, mapped straight into Python.

import daxfs
daxfs.mkfs("/mnt/pmem/pool", "4G")
with daxfs.mount("/mnt/pmem/pool") as fs:
    with fs.open("/hello.txt", "w") as f:
        f.write("hi")
    fs.iomap("/hello.txt")   # where the bytes live: [Extent(...)]
"""

from .check import Report, check
from .fs import FileSystem, StatVFS
from .inode import Extent
from .layout import CorruptionError
from .mapping import Mapping
from .mkfs import mkfs
from .pool import mount
from .units import parse_size

__all__ = [
    "CorruptionError",
    "Extent",
    "FileSystem",
    "Mapping",
    "Report",
    "StatVFS",
    "check",
    "mkfs",
    "mount",
    "parse_size",
]
__version__ = "0.1.0"
