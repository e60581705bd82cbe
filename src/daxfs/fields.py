"""fields: a table of every metadata field, derived from layout.py's struct formats.

For each record kind (superblock, journal header slot, inode table header,
inode slot, extent
block header and one extent, directory block header and one entry,
transaction record header and one write) the table gives each field's
name, byte offset within the record and size, and which checksummed *unit*
holds it, so a tool can change a field and then "fix up" the unit's crc32c
(or leave it wrong).  Offsets come from ``struct.calcsize`` over prefixes of
the formats in layout.py, and the table is checked against the record sizes
at import, so it cannot drift from the code that gives the bytes meaning.

Each field also says how much a change to it matters once the checksum has
been fixed up (``care``), which is what the damaged-media ("fuzzy") tests
need to know to demand that ``daxfs.check`` notice it:

  checksum   the unit's crc itself: a change is only ever "checksum wrong"
  always     any change leaves an inconsistent pool that check must report
             (every superblock field: the replica no longer agrees; flags,
             reserved words and unused bytes: the format defines them as 0)
  ignored    no meaning for consistency (times, ids, generation, a regular
             file's parent): invisible, check must stay clean, and the
             files must read exactly as before
  type       the file-type bits and the bits above st_mode must be
             reported; permission bits are an attribute
  alignment  an extent's file offset: a misaligned value must be reported;
             an aligned one only moves the data within the file
  content    a regular file's size: any value up to 2^63 - 1 is a valid
             file (the file's content changes, nothing else); a larger one
             is damage check must report
  name       a directory entry's name: must be reported if the new name is
             invalid or not unique in the directory; a valid one is a rename
  seq        a journal sequence number in a header slot: any value is a
             consistent state (at worst the log is replayed again, which is
             idempotent); from 2^63 up the slot is invalid, as if torn
  journal    a field of a committed transaction: the pool must end up as if
             the transaction happened or as if it never did, or check must
             report the damage
  limit      the inode table's in-use limit: a value the header rules refuse,
             or one below a live slot (its names dangle), must be reported;
             any other is a consistent pool

Variable-length fields (a directory entry's name, a journal write's data)
have ``size`` None; their length is in the record (name_len, length).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from . import layout as L

CARE = (
    "checksum",
    "always",
    "ignored",
    "type",
    "alignment",
    "content",
    "name",
    "seq",
    "journal",
    "limit",
)


@dataclass(frozen=True)
class Field:
    name: str
    offset: int  # within the record
    size: int | None  # bytes; None: variable, given by another field of the record
    code: str  # struct code ("I", "Q", "8s"), "" for variable bytes
    care: str

    def read(self, buf, record_off: int) -> int:
        """The field as an unsigned little-endian integer (fixed-size fields)."""
        assert self.size is not None
        return int.from_bytes(
            buf[record_off + self.offset : record_off + self.offset + self.size], "little"
        )


@dataclass(frozen=True)
class Unit:
    """A checksummed unit: crc32c at ``crc_off`` over [start, end) of the unit."""

    name: str
    size: int | None  # None: variable (a transaction record)
    crc_off: int
    start: int
    end: int | None  # None: computed from the record (24 + payload_len)
    magic_first: bool = False  # the first 4 bytes are covered too, before the rest

    def covered(self, buf, off: int) -> tuple[int, int]:
        if self.end is not None:
            return off + self.start, off + self.end
        (plen,) = struct.unpack_from("<I", buf, off + 20)
        return off + self.start, min(len(buf), off + L.TXN_HEADER.size + plen)

    def crc(self, buf, off: int) -> int:
        lo, hi = self.covered(buf, off)
        head = bytes(buf[off : off + 4]) if self.magic_first else b""
        return L.crc32c(head + bytes(buf[lo:hi]))

    def fix_up(self, buf: bytearray, off: int) -> None:
        """Recompute the unit's checksum in place (``off``: the unit's offset in buf)."""
        struct.pack_into("<I", buf, off + self.crc_off, self.crc(buf, off))

    def valid(self, buf, off: int) -> bool:
        return struct.unpack_from("<I", buf, off + self.crc_off)[0] == self.crc(buf, off)


@dataclass(frozen=True)
class RecordKind:
    name: str
    size: int | None  # fixed part of the record
    unit: str  # the checksummed unit that holds it (see UNITS)
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


_CODE = re.compile(r"(\d*)([xcbB?hHiIlLqQnNefdsp])")


def split_format(fmt: str) -> list[str]:
    """'<8sIIQ' -> ['8s', 'I', 'I', 'Q']: one struct code per field."""
    assert fmt[0] in "<>=!@", fmt
    out: list[str] = []
    for count, code in _CODE.findall(fmt[1:]):
        if code in "sp":
            out.append(count + code)
        else:
            out.extend([code] * int(count or 1))
    assert "".join(out) == re.sub(r"(\d+)([^sp\d])", lambda m: m[2] * int(m[1]), fmt[1:]), fmt
    return out


def _fields(
    st: struct.Struct, names: list[str], care: dict[str, str], prefix: str = "", base: int = 0
) -> list[Field]:
    fmt = st.format if isinstance(st.format, str) else st.format.decode()
    codes = split_format(fmt)
    assert len(codes) == len(names), (fmt, names)
    out = []
    for i, (code, name) in enumerate(zip(codes, names, strict=True)):
        off = struct.calcsize(fmt[0] + "".join(codes[:i]))
        size = struct.calcsize(fmt[0] + code)
        out.append(Field(prefix + name, base + off, size, code, care.get(name, "always")))
    assert struct.calcsize(fmt) == st.size
    return out


# -- superblock: every field "always": a primary that differs from the replica
# is reported whatever the field.
SUPER_NAMES = (
    "magic version features allocator uuid region_size block_size chunk_size journal_off "
    "journal_len itable_off inode_count data_off data_blocks replica_off root_ino created_ns crc"
).split()
SUPERBLOCK = RecordKind(
    "superblock",
    L.SUPER.size,
    "superblock",
    tuple(_fields(L.SUPER, SUPER_NAMES, {"crc": "checksum"})),
)

JSLOT = RecordKind(
    "jslot",
    L.JHEADER.size,
    "jslot",
    tuple(_fields(L.JHEADER, ["magic", "crc", "seq"], {"crc": "checksum", "seq": "seq"})),
)

# -- inode slot: the head (names from the numpy dtype that scans the table),
# six inline extents, the zero tail.
_INODE_HEAD_NAMES = [
    name for name, *_ in L.INODE_DTYPE_FIELDS[: len(split_format(L.INODE_HEAD.format))]
]
_INODE_CARE = {
    "crc": "checksum",
    "generation": "ignored",
    "mode": "type",
    "uid": "ignored",
    "gid": "ignored",
    "size": "content",  # a directory's size is "always": the tests override per instance
    "atime": "ignored",
    "mtime": "ignored",
    "ctime": "ignored",
    "btime": "ignored",
    "parent": "ignored",  # meaningful for directories only: overridden there
}
EXTENT_NAMES = ["file_off", "dev_off", "length"]
EXTENT_CARE = {"file_off": "alignment"}
_inode_fields = _fields(L.INODE_HEAD, _INODE_HEAD_NAMES, _INODE_CARE)
for _i in range(L.INLINE_EXTENTS):
    _inode_fields += _fields(
        L.EXTENT, EXTENT_NAMES, EXTENT_CARE, f"ext{_i}.", L.INODE_HEAD.size + _i * L.EXTENT.size
    )
_tail = L.INODE_HEAD.size + L.INLINE_EXTENTS * L.EXTENT.size
_inode_fields.append(
    Field("zero", _tail, L.INODE_SIZE - _tail, f"{L.INODE_SIZE - _tail}s", "always")
)
INODE = RecordKind("inode", L.INODE_SIZE, "inode", tuple(_inode_fields))

# -- inode table header (slot 0, version 4): a changed limit matters when the
# header no longer checks or hides a live slot ("limit").
ITABLE = RecordKind(
    "itable",
    L.INODE_SIZE,
    "itable",
    tuple(
        _fields(L.ITABLE_HEAD, ["magic", "crc", "limit"], {"crc": "checksum", "limit": "limit"})
        + [Field("zero", L.ITABLE_HEAD.size, L.INODE_SIZE - L.ITABLE_HEAD.size, "240s", "always")]
    ),
)

EXTBLOCK = RecordKind(
    "extblock",
    L.EXTBLOCK_HEAD.size,
    "extblock",
    tuple(
        _fields(
            L.EXTBLOCK_HEAD,
            ["magic", "crc", "owner", "next", "count", "reserved"],
            {"crc": "checksum"},
        )
    ),
)
EXTENT = RecordKind(
    "extent", L.EXTENT.size, "extblock", tuple(_fields(L.EXTENT, EXTENT_NAMES, EXTENT_CARE))
)

DIRBLOCK = RecordKind(
    "dirblock",
    L.DIRBLOCK_HEAD.size,
    "dirblock",
    tuple(
        _fields(
            L.DIRBLOCK_HEAD,
            ["magic", "crc", "ino", "used", "live", "reserved"],
            {"crc": "checksum"},
        )
    ),
)
DIRENT = RecordKind(
    "dirent",
    L.DIRENT_HEAD.size,
    "dirblock",
    tuple(
        _fields(L.DIRENT_HEAD, ["ino", "name_len", "ftype"], {})
        + [Field("name", L.DIRENT_HEAD.size, None, "", "name")]
    ),
)

_TXN_NAMES = ["magic", "crc", "seq", "nrec", "payload_len"]
TXN = RecordKind(
    "txn",
    L.TXN_HEADER.size,
    "txn",
    tuple(
        _fields(L.TXN_HEADER, _TXN_NAMES, {n: "journal" for n in _TXN_NAMES} | {"crc": "checksum"})
    ),
)
_TXW_NAMES = ["dst_off", "length", "flags"]
TXN_WRITE = RecordKind(
    "txn_write",
    L.TXN_REC.size,
    "txn",
    tuple(
        _fields(L.TXN_REC, _TXW_NAMES, dict.fromkeys(_TXW_NAMES, "journal"))
        + [Field("data", L.TXN_REC.size, None, "", "journal")]
    ),
)

RECORDS: dict[str, RecordKind] = {
    r.name: r
    for r in (SUPERBLOCK, JSLOT, ITABLE, INODE, EXTBLOCK, EXTENT, DIRBLOCK, DIRENT, TXN, TXN_WRITE)
}

UNITS: dict[str, Unit] = {
    "superblock": Unit("superblock", L.SUPER.size, L.SUPER.size - 4, 0, L.SUPER.size - 4),
    "jslot": Unit("jslot", L.JHEADER.size, 4, 8, L.JHEADER.size),
    "itable": Unit("itable", L.INODE_SIZE, 4, 8, L.INODE_SIZE),
    "inode": Unit("inode", L.INODE_SIZE, 0, 4, L.INODE_SIZE),
    "extblock": Unit("extblock", L.BLOCK, 4, 8, L.BLOCK),
    "dirblock": Unit("dirblock", L.BLOCK, 4, 8, L.BLOCK),
    "txn": Unit("txn", None, 4, 8, None, magic_first=True),
}


def _self_check() -> None:
    for rec in RECORDS.values():
        assert rec.unit in UNITS, rec
        pos = 0
        for f in rec.fields:
            assert f.care in CARE, f
            assert f.offset == pos, (rec.name, f, pos)  # contiguous, nothing left out
            if f.size is None:
                assert f is rec.fields[-1], f  # only a trailing variable part
                assert pos == rec.size, (rec.name, pos)
                break
            pos += f.size
        else:
            assert pos == rec.size, (rec.name, pos, rec.size)
        unit = UNITS[rec.unit]
        crcs = [f for f in rec.fields if f.care == "checksum"]
        if crcs:  # the record is the head of its unit: its crc field is the unit's
            assert rec.fields[0].offset == 0
            assert [(f.offset, f.size) for f in crcs] == [(unit.crc_off, 4)], rec.name
    # The record sizes layout.py asserts, seen from here.
    assert SUPERBLOCK.size == 128 and JSLOT.size == 16 and INODE.size == 256
    assert EXTBLOCK.size == 32 and EXTENT.size == 24 and DIRBLOCK.size == 24
    assert DIRENT.size == 10 and TXN.size == 24 and TXN_WRITE.size == 16
    # The inode head agrees with the numpy dtype the mount scan uses.
    dtype = np.dtype(L.INODE_DTYPE_FIELDS)
    for f in INODE.fields[: len(_INODE_HEAD_NAMES)]:
        assert dtype.fields[f.name][1] == f.offset, f
    assert dtype.fields["ext"][1] == INODE.field("ext0.file_off").offset
    assert dtype.itemsize == INODE.size


_self_check()

__all__ = ["CARE", "RECORDS", "UNITS", "Field", "RecordKind", "Unit", "split_format"]
