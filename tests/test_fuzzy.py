"""Damaged media: the fstests "fuzzy" protocol over every metadata field, and a
Hypothesis fuzzer over whole images.

Fuzzy protocol.  A pristine 8 MiB pool (a tree, a hard link, a symlink, a
fragmented file with an extent block) is built once per module; a second
image ("pending") is the same pool with one committed rename still in the
journal, as a crash right after the commit point leaves it.  For every field
of every record kind in daxfs.fields, in a concrete instance (the primary
superblock, the current journal header slot, the inode table header, the
inodes of a regular file, a
directory, the fragmented file and the symlink, the fragmented file's extent
block and first overflow extent, the root directory's first block and its
entry for "d", the pending transaction's header and first write), each
mutation -- zeroes, ones, first (lowest) bit, middle bit, last (highest)
bit, add 1, subtract 1, random (seeded) -- is applied once leaving the
record's checksum wrong and once fixing it up.  Each case demands:

  * mounting raises CorruptionError or works; walking the tree and reading
    every file raises nothing but OSError, and what it shows for files the
    damaged record does not describe is the pristine content or
    CorruptionError -- never a silent difference;
  * check() reports the damage: always when the checksum was left wrong,
    and after a fix-up whenever the field's ``care`` (see daxfs.fields)
    says the change matters; for changes that cannot matter (times, ids,
    permission bits, ...) check() must instead stay clean (a few per-instance
    overrides: a directory's size and parent matter; a symlink's size may
    name another valid target or be reported, either is right);
  * check(repair=True) leaves a pool that checks clean, mounts, and takes
    a new file that reads back.

Two record kinds are different by design.  A journal header slot with a bad
checksum is what a torn checkpoint leaves (the other slot takes over), so
check() reports it as a note, not an error.  A transaction record with a
bad checksum is the normal end of the journal (a commit that never
completed), so nothing is reported and the pool must read exactly as
before the transaction.

Every mutation of every field runs by default (2,926 cases, ~25 s on two
cores; the sampling the protocol allows for was not needed); the number of
cases run is printed at the end (test_zz_case_count).

Whole-image fuzzer.  Hypothesis patches the pristine or the pending image
in its metadata areas -- single bytes, or whole fields (found through the
field table) set to values that mean something in this pool, such as
another record's block -- optionally fixing up the checksums of the records
it hit to get past them, always sparing one superblock copy.  Mount, walk,
read, a read-write mount taking a write, check and repair must raise nothing
but OSError, never hang (a per-example alarm), and a repaired pool must
check clean and take a write.  300 examples by default, 3000 with
DAXFS_FUZZ_FULL=1.  What it found is kept as patch lists, [(offset, byte),
...] against the pristine build (which is deterministic in layout), in
tests/fuzz_corpus/*.json and replayed by test_corpus_replays.
"""

from __future__ import annotations

import collections
import errno
import glob
import json
import os
import random
import shutil
import signal
import stat
import struct
import traceback
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import daxfs
from daxfs import fields as F
from daxfs import layout as L
from test_check import build_pristine

POOL_SIZE = "8M"
FULL = os.environ.get("DAXFS_FUZZ_FULL") == "1"
MUTATIONS = ("zeroes", "ones", "firstbit", "middlebit", "lastbit", "add", "sub", "random")
READ_CAP = 1 << 20  # read at most this much of a file (sizes may be damaged)
CASE_TIMEOUT = 30  # seconds; a hang is a failure
CORPUS = os.path.join(os.path.dirname(__file__), "fuzz_corpus")

CASES: collections.Counter[str] = collections.Counter()


# --------------------------------------------------------------------------
# the pristine image
# --------------------------------------------------------------------------
class Hang(BaseException):
    """Raised by the alarm: not an Exception, so no except clause swallows it."""


class _Deadline:
    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def on_alarm(_sig, _frame):
            raise Hang(f"no answer within {self.seconds} s")

        self.old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


ERR = "error"


def snapshot(fs, top: str = "/", out=None, seen=None) -> dict[str, object]:
    """Every path's content, tolerating damage: a path whose listing, stat or
    read fails maps to (ERR, errno); a directory seen twice is not re-entered."""
    out = {} if out is None else out
    seen = set() if seen is None else seen
    try:
        names = fs.listdir(top)
    except OSError as e:
        out[top] = (ERR, e.errno)
        return out
    for name in names:
        p = top.rstrip("/") + "/" + name
        if len(out) > 10000:
            break
        try:
            st_ = fs.lstat(p)
            if stat.S_ISREG(st_.st_mode):
                with fs.open(p, "rb") as f:
                    out[p] = f.read(READ_CAP)
            elif stat.S_ISLNK(st_.st_mode):
                out[p] = "->" + fs.readlink(p)
            elif stat.S_ISDIR(st_.st_mode):
                out[p] = "dir"
                if st_.st_ino not in seen:
                    seen.add(st_.st_ino)
                    snapshot(fs, p, out, seen)
            else:
                out[p] = f"mode {st_.st_mode:o}"
        except OSError as e:
            out[p] = (ERR, e.errno)
    return out


def _ancestors(p: str) -> list[str]:
    parts = p.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) if i else "/" for i in range(len(parts))]


@dataclass
class Instance:
    """One concrete record in an image, the target of the fuzzy cases."""

    name: str
    kind: F.RecordKind
    image: str  # "pristine" or "pending"
    off: int  # the record's offset in the region
    unit_off: int  # the offset of the checksummed unit holding it
    affected: tuple[str, ...] = ()  # paths (subtrees) whose content may change
    new_names_in: str | None = None  # a directory that may show new names
    override: dict[str, str] = field(default_factory=dict)  # field -> care
    var_size: int = 0  # bytes of the trailing variable field to mutate

    def care(self, f: F.Field) -> str:
        return self.override.get(f.name, f.care)

    def span(self, f: F.Field) -> tuple[int, int]:
        return self.off + f.offset, f.size if f.size is not None else self.var_size


class World:
    """The images, what they show, and the fuzz targets in them."""

    def __init__(self, d, images, expected, post, instances, regions, units):
        self.dir = d
        self.images: dict[str, bytes] = images
        self.expected: dict[str, dict[str, object]] = expected  # image -> snapshot
        self.post: dict[str, object] = post  # the pending image after its transaction
        self.instances: dict[str, Instance] = instances
        # Per image: metadata byte ranges for the whole-image fuzzer (the two
        # superblocks first), and (unit kind, offset) of every checksummed record.
        self.regions: dict[str, list[tuple[int, int]]] = regions
        self.units: dict[str, list[tuple[str, int]]] = units
        self.words: list[int] = []  # values worth writing into fields (the fuzzer's)
        self.spans = {k: _field_spans(images[k], v) for k, v in units.items()}
        self.counter = 0

    def __repr__(self) -> str:
        return f"<World {self.dir}>"

    def victim(self, data: bytes | bytearray) -> str:
        self.counter += 1
        path = os.path.join(self.dir, f"victim-{self.counter}.pool")
        with open(path, "wb") as f:
            f.write(data)
        return path


def _inode_instance(name, fs, path, extra: dict[str, str] | None = None) -> Instance:
    ino = fs.lstat(path).st_ino
    off = fs.sb.itable_off + ino * L.INODE_SIZE
    return Instance(name, F.INODE, "pristine", off, off, (path,), override=dict(extra or {}))


def _build_world(d: str) -> World:
    path = os.path.join(d, "pristine.pool")
    build_pristine(path)  # the same image test_check flips bytes of
    with open(path, "rb") as f:
        pristine = f.read()
    with daxfs.mount(path, readonly=True) as fs:
        expected = snapshot(fs)
        sb = fs.sb
        frag = fs._inode(fs.lstat("/frag").st_ino)
        assert len(frag.ext_blocks) == 1 and len(frag.extents) > L.INLINE_EXTENTS
        blk = frag.ext_blocks[0]
        root_dev = fs.iomap("/")[0].device_offset
        _used, entries = L.parse_dirblock(pristine[root_dev : root_dev + L.BLOCK], root_dev, 1)
        pos, _ino, _ft, raw = entries[0]
        assert raw == b"d", entries
        slots = [
            L.unpack_jheader(pristine[L.BLOCK + o : L.BLOCK + o + 16]) for o in L.JSLOT_OFFSETS
        ]
        cur = max((s, i) for i, s in enumerate(slots) if s is not None)[1]
        jslot = L.BLOCK + L.JSLOT_OFFSETS[cur]
        dir_always = {"size": "always", "parent": "always"}
        inst = [
            Instance("superblock", F.SUPERBLOCK, "pristine", 0, 0),
            Instance("jslot", F.JSLOT, "pristine", jslot, jslot),
            Instance("itable", F.ITABLE, "pristine", sb.itable_off, sb.itable_off),
            _inode_instance("inode-file", fs, "/d/f3"),
            _inode_instance("inode-dir", fs, "/d/e", dir_always),
            _inode_instance("inode-frag", fs, "/frag"),
            # A symlink's size picks its target: shorter is another valid
            # target, longer reads NULs or holes (reported).  Either is fine.
            _inode_instance("inode-symlink", fs, "/d/e/soft", {"size": "either"}),
            Instance("extblock", F.EXTBLOCK, "pristine", blk, blk, ("/frag",)),
            Instance("extent", F.EXTENT, "pristine", blk + F.EXTBLOCK.size, blk, ("/frag",)),
            Instance("dirblock", F.DIRBLOCK, "pristine", root_dev, root_dev),
            Instance(
                "dirent",
                F.DIRENT,
                "pristine",
                root_dev + pos,
                root_dev,
                ("/d",),
                new_names_in="/",
                var_size=len(raw),
            ),
        ]
        # Metadata areas for the whole-image fuzzer, and the checksummed units in them.
        live = [ino for ino in range(1, sb.inode_count) if any(_slot(pristine, sb, ino))]
        regions = [(0, L.SUPER.size), (sb.replica_off, sb.replica_off + L.SUPER.size)]
        regions += [(L.BLOCK + o, L.BLOCK + o + L.JHEADER.size) for o in L.JSLOT_OFFSETS]
        regions.append((sb.itable_off, sb.itable_off + (max(live) + 2) * L.INODE_SIZE))
        units = [("superblock", 0), ("superblock", sb.replica_off)]
        units += [("jslot", L.BLOCK + o) for o in L.JSLOT_OFFSETS]
        units.append(("itable", sb.itable_off))
        units += [("inode", sb.itable_off + i * L.INODE_SIZE) for i in range(1, max(live) + 2)]
        words = list(range(max(live) + 3)) + [L.BLOCK, sb.data_off, sb.data_end, sb.itable_off]
        words += [2**31, 2**32 - 1, 2**63, 2**64 - 1]
        for ino in live:
            inode = fs._inode(ino)
            words += [dev for _f, dev, _n in inode.extents] + inode.ext_blocks
            for b in inode.ext_blocks:
                count = struct.unpack_from("<I", pristine, b + F.EXTBLOCK.field("count").offset)[0]
                regions.append((b, b + F.EXTBLOCK.size + count * F.EXTENT.size + 8))
                units.append(("extblock", b))
            if inode.is_dir:
                for e in inode.iomap(0, inode.size):
                    for b in range(e.device_offset, e.device_offset + e.length, L.BLOCK):
                        used = struct.unpack_from("<H", pristine, b + 16)[0]
                        regions.append((b, b + used + 16))
                        units.append(("dirblock", b))
    pending, post = _build_pending(d, path, sb, pristine, expected)
    txn = sb.journal_off
    (length,) = struct.unpack_from("<I", pending, txn + F.TXN.size + 8)
    (plen,) = struct.unpack_from("<I", pending, txn + F.TXN.field("payload_len").offset)
    inst += [
        Instance("txn", F.TXN, "pending", txn, txn),
        Instance(
            "txn_write", F.TXN_WRITE, "pending", txn + F.TXN.size, txn, var_size=min(16, length)
        ),
    ]
    world = World(
        d,
        {"pristine": pristine, "pending": pending},
        {"pristine": expected, "pending": expected},
        post,
        {i.name: i for i in inst},
        {"pristine": regions, "pending": regions + [(txn, txn + F.TXN.size + plen)]},
        {"pristine": units, "pending": units + [("txn", txn)]},
    )
    world.words = sorted(set(words))
    world.inode_count, world.highest_live = sb.inode_count, max(live)
    return world


def _field_spans(image: bytes, units: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """(offset, size) of every fixed-size field of every record in the image."""
    out: list[tuple[int, int]] = []

    def add(kind: F.RecordKind, off: int) -> None:
        out.extend((off + f.offset, f.size) for f in kind.fields if f.size is not None)

    for unit, off in units:
        if unit in ("superblock", "jslot", "itable", "inode"):
            add(F.RECORDS[unit], off)
        elif unit == "extblock":
            add(F.EXTBLOCK, off)
            count = F.EXTBLOCK.field("count").read(image, off)
            for i in range(min(count, L.EXTENTS_PER_BLOCK)):
                add(F.EXTENT, off + F.EXTBLOCK.size + i * F.EXTENT.size)
        elif unit == "dirblock":
            add(F.DIRBLOCK, off)
            used, pos = F.DIRBLOCK.field("used").read(image, off), F.DIRBLOCK.size
            while pos + F.DIRENT.size <= used:
                add(F.DIRENT, off + pos)
                pos += F.DIRENT.size + F.DIRENT.field("name_len").read(image, off + pos)
        elif unit == "txn":
            add(F.TXN, off)
            pos = off + F.TXN.size
            for _ in range(F.TXN.field("nrec").read(image, off)):
                add(F.TXN_WRITE, pos)
                length = F.TXN_WRITE.field("length").read(image, pos)
                flags = F.TXN_WRITE.field("flags").read(image, pos)
                pos += F.TXN_WRITE.size + (0 if flags else L.pad8(length))
    return out


def _slot(image: bytes, sb, ino: int) -> bytes:
    off = sb.itable_off + ino * L.INODE_SIZE
    return image[off : off + L.INODE_SIZE]


def _build_pending(d: str, path: str, sb, pristine: bytes, expected) -> tuple[bytes, dict]:
    """The pristine pool with one committed transaction (a rename) whose home
    writes never reached the media: what a crash right after commit leaves."""
    work = os.path.join(d, "pending-work.pool")
    shutil.copyfile(path, work)
    fs = daxfs.mount(work)
    try:
        seq = fs.journal.next_seq
        assert fs.journal.pos == 0
        fs.rename("/d/f0", "/d/e/moved")
        assert fs.journal.next_seq == seq + 1, "the rename should be one transaction"
        with open(work, "rb") as f:
            image = bytearray(f.read())
    finally:
        fs.close()
    start, end = sb.journal_off, sb.journal_off + sb.journal_len
    writes, nxt = L.parse_txn(image, start, end, seq)
    assert L.parse_txn(image, nxt, end, seq + 1) is None
    for dst, data in writes:  # the homes still hold the old bytes
        image[dst : dst + len(data)] = pristine[dst : dst + len(data)]
    check_path = os.path.join(d, "pending-check.pool")
    with open(check_path, "wb") as f:
        f.write(image)
    with daxfs.mount(check_path, readonly=True) as fs:
        post = snapshot(fs)
    os.unlink(check_path)
    os.unlink(work)
    assert post != expected and "/d/e/moved" in post and "/d/f0" not in post
    return bytes(image), post


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzzy", numbered=True)
    d = f"/dev/shm/daxfs-fuzzy-{os.getpid()}-{base.name}"
    os.makedirs(d)
    try:
        yield _build_world(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# mutations
# --------------------------------------------------------------------------
def mutate(old: int, nbytes: int, how: str, rng: random.Random) -> int:
    bits = 8 * nbytes
    top = (1 << bits) - 1
    if how == "zeroes":
        return 0
    if how == "ones":
        return top
    if how == "firstbit":
        return old ^ 1
    if how == "middlebit":
        return old ^ (1 << (bits // 2))
    if how == "lastbit":
        return old ^ (1 << (bits - 1))
    if how == "add":
        return (old + 1) & top
    if how == "sub":
        return (old - 1) & top
    assert how == "random"
    while True:
        v = rng.getrandbits(bits)
        if v != old:
            return v


def _needs_detection(inst: Instance, f: F.Field, old: int, new: int, n: int, world) -> bool | None:
    """After a fix-up: True if check() must report the change, False if it must
    stay clean (the pool is consistent), None if either is acceptable."""
    care = inst.care(f)
    if care == "always":
        return True
    if care == "content":
        return new > L.MAX_FILE_SIZE
    if care in ("ignored", "seq"):
        return False
    if care == "type":
        return True if (old ^ new) & 0xFFFF_F000 else False
    if care == "alignment":
        return True if (old ^ new) & (L.BLOCK - 1) else None
    if care == "either":
        return None
    if care == "limit":  # the inode table's: refused, or hiding a live slot
        page = L.SLOTS_PER_PAGE
        valid = 2 <= new <= world.inode_count and (new % page == 0 or new == world.inode_count)
        return not valid or new <= world.highest_live
    if care == "name":  # of an entry in the root directory
        name = new.to_bytes(n, "little")
        siblings = {p[1:].encode() for p in world.expected["pristine"] if p.count("/") == 1}
        return True if not L.valid_name(name) or name in siblings else False
    raise AssertionError(care)


# --------------------------------------------------------------------------
# one case
# --------------------------------------------------------------------------
def _content_problems(inst: Instance, got, expected) -> list[str]:
    """Differences between what a mount shows and the pristine content that
    the damage does not explain."""

    def affected(p: str) -> bool:
        if any(p == a or p.startswith(a + "/") for a in inst.affected):
            return True
        if inst.new_names_in is not None:
            first = p[len(inst.new_names_in) :].split("/")[0]
            return "/" + first not in expected
        return False

    out = []
    for p, want in expected.items():
        if affected(p):
            continue
        have = got.get(p)
        if have is None:
            if not any(isinstance(got.get(a), tuple) for a in _ancestors(p)):
                out.append(f"{p} vanished")
        elif have != want and have != (ERR, errno.EUCLEAN):
            out.append(f"{p}: {str(have)[:60]} instead of {str(want)[:60]}")
    for p in got:
        if p not in expected and p != "/" and not affected(p):
            out.append(f"{p} appeared")
    return out


def _mount_and_read(path: str):
    """What a read-only mount shows, or None if it refuses (CorruptionError)."""
    try:
        fs = daxfs.mount(path, readonly=True)
    except daxfs.CorruptionError:
        return None
    with fs:
        return snapshot(fs)


def _repair_and_write(path: str) -> list[str]:
    problems = []
    fixed = daxfs.check(path, repair=True)
    if not fixed.ok:
        problems.append(f"repair left {fixed.remaining}")
    again = daxfs.check(path)
    if not again.ok or again.errors:
        problems.append(f"check after repair: {again.errors}")
    payload = os.urandom(10000)
    with daxfs.mount(path) as fs:
        with fs.open("/after-repair", "wb") as f:
            f.write(payload)
    with daxfs.mount(path) as fs:
        with fs.open("/after-repair", "rb") as f:
            if f.read() != payload:
                problems.append("the file written after repair reads back wrong")
    final = daxfs.check(path)
    if not final.ok:
        problems.append(f"check after the write: {final.errors}")
    return problems


def run_case(world: World, inst: Instance, f: F.Field, how: str, fixup: bool) -> list[str] | None:
    """Apply one mutation; return the problems found (None: the mutation was a no-op)."""
    image = bytearray(world.images[inst.image])
    at, n = inst.span(f)
    old = int.from_bytes(image[at : at + n], "little")
    new = mutate(old, n, how, random.Random(f"{inst.name}/{f.name}"))
    if new == old:
        return None
    image[at : at + n] = new.to_bytes(n, "little")
    unit = F.UNITS[inst.kind.unit]
    if fixup:
        unit.fix_up(image, inst.unit_off)
    elif unit.valid(image, inst.unit_off) and _covered(unit, image, inst.unit_off, at, n):
        return None  # the mutation happened to keep the checksum right (2^-32)
    CASES["total"] += 1
    CASES[inst.name] += 1
    path = world.victim(image)
    problems: list[str] = []
    try:
        with _Deadline(CASE_TIMEOUT):
            report = daxfs.check(path)  # first: a mount may recover (write)
            got = _mount_and_read(path)
            problems += _judge(world, inst, f, old, new, n, fixup, got, report)
            problems += _repair_and_write(path)
    except (Exception, Hang) as e:
        problems.append("raised " + "".join(traceback.format_exception_only(e)).strip())
        problems.append(traceback.format_exc(limit=-4))
    finally:
        os.unlink(path)
    where = f"{inst.name}.{f.name} {how} {'fixed-up' if fixup else 'crc-wrong'} {old:#x}->{new:#x}"
    return [f"{where}: {p}" for p in problems]


def _covered(unit: F.Unit, image, unit_off: int, at: int, n: int) -> bool:
    """Whether the checksum covers the field (a journal slot's magic it does not)."""
    lo, hi = unit.covered(image, unit_off)
    return lo <= at and at + n <= hi


def _judge(world, inst, f, old, new, n, fixup, got, report) -> list[str]:
    problems = []
    expected = world.expected[inst.image]
    care = inst.care(f)
    if inst.kind.unit == "txn":
        # A record is committed exactly when it is whole and checks; one that
        # does not is the end of the journal, as after a crash mid-commit.
        outcomes = (expected, world.post)
        if not fixup:
            if got != expected:
                problems.append("a transaction with a bad checksum was (partly) applied")
            if not report.ok:
                problems.append(f"check complains about a clean pool: {report.errors}")
        elif got not in outcomes and report.ok:
            problems.append("a damaged committed transaction changed the pool unnoticed")
        return problems
    if got is not None:
        if care == "ignored":  # no file may change at all
            inst = Instance(inst.name, inst.kind, inst.image, inst.off, inst.unit_off)
        problems += _content_problems(inst, got, expected)
    if inst.kind.unit == "jslot":
        noticed = bool(report.errors) or any("journal header" in x for x in report.notes)
    else:
        noticed = bool(report.errors)
    need = True if not fixup else _needs_detection(inst, f, old, new, n, world)
    if need and not noticed:
        problems.append("check() did not notice")
    if need is False and not report.ok:
        problems.append(f"check() complains about a consistent pool: {report.errors}")
    return problems


def _cases() -> list[tuple[str, str]]:
    out = []
    for inst, kind in [
        ("superblock", F.SUPERBLOCK),
        ("jslot", F.JSLOT),
        ("itable", F.ITABLE),
        ("inode-file", F.INODE),
        ("inode-dir", F.INODE),
        ("inode-frag", F.INODE),
        ("inode-symlink", F.INODE),
        ("extblock", F.EXTBLOCK),
        ("extent", F.EXTENT),
        ("dirblock", F.DIRBLOCK),
        ("dirent", F.DIRENT),
        ("txn", F.TXN),
        ("txn_write", F.TXN_WRITE),
    ]:
        out += [(inst, f.name) for f in kind.fields]
    return out


@pytest.mark.parametrize("inst_name,field_name", _cases())
def test_fuzzy_field(world, inst_name, field_name):
    inst = world.instances[inst_name]
    f = inst.kind.field(field_name)
    if f.size is None and not inst.var_size:
        pytest.skip("no variable part in this instance")
    problems: list[str] = []
    for fixup in (False, True):
        if fixup and f.care == "checksum":
            continue  # fixing up the checksum would undo the mutation
        for how in MUTATIONS:
            problems += run_case(world, inst, f, how, fixup) or []
    assert not problems, "\n".join(problems)


def test_fuzzy_table_covers_layout():
    """The field table spans each record exactly (fields.py asserts it at
    import); here: a fix-up makes a damaged unit check again."""
    image = bytearray(os.urandom(2 * L.BLOCK))
    struct.pack_into("<I", image, 20, 100)  # a transaction's payload_len
    for unit in F.UNITS.values():
        unit.fix_up(image, 0)
        assert unit.valid(image, 0)
        image[unit.covered(image, 0)[0]] ^= 1
        assert not unit.valid(image, 0)


# --------------------------------------------------------------------------
# the whole-image fuzzer
# --------------------------------------------------------------------------
def _apply(world: World, image_name: str, patches, fix_up: bool) -> bytearray:
    image = bytearray(world.images[image_name])
    for off, byte in patches:
        image[off] = byte
    if fix_up:
        for kind, off in world.units[image_name]:
            unit = F.UNITS[kind]
            size = unit.size or L.BLOCK
            if any(off <= p < off + size for p, _b in patches):
                unit.fix_up(image, off)
    return image


def whole_image_property(world: World, image: str, patches, fix_up: bool) -> list[str]:
    """Damage, use, check, repair, use again; returns what happened (for statistics)."""
    path = world.victim(_apply(world, image, patches, fix_up))
    try:
        with _Deadline(CASE_TIMEOUT):
            report = daxfs.check(path)
            got = _mount_and_read(path)
            try:  # a read-write mount of the damaged pool, and a change
                with daxfs.mount(path) as fs:
                    snapshot(fs)
                    with fs.open("/fuzz-write", "wb") as f:
                        f.write(b"w" * 5000)
                wrote = "took a write"
            except OSError as e:
                wrote = f"refused a write ({errno.errorcode.get(e.errno, e.errno)})"
            problems = _repair_and_write(path)
        assert not problems, problems
    finally:
        os.unlink(path)
    return [
        f"check: {'clean' if report.ok else 'damage found'}",
        "read-only mount: " + ("refused" if got is None else "worked"),
        "damaged pool " + wrote,
    ]


def _patches(world: World, image: str, spare: int):
    """Patches in the metadata areas, sparing superblock copy ``spare`` (with
    both copies gone nothing can be repaired; that is the point of having two):
    single bytes, or a whole field (from the field table) set to a value that
    means something here -- a block another record uses, an inode number, a
    limit -- which random bytes would hardly ever hit."""
    regions = [r for i, r in enumerate(world.regions[image]) if i != spare]
    offsets = st.sampled_from(regions).flatmap(lambda r: st.integers(r[0], r[1] - 1))
    byte = st.tuples(offsets, st.integers(0, 255)).map(lambda p: [p])
    lost = world.regions[image][spare]
    spans = [s for s in world.spans[image] if not lost[0] <= s[0] < lost[1]]
    word = st.tuples(st.sampled_from(spans), st.sampled_from(world.words)).map(
        lambda w: [(w[0][0] + i, b) for i, b in enumerate(_le(w[1], w[0][1]))]
    )
    return st.lists(st.one_of(byte, word), min_size=1, max_size=4).map(
        lambda ps: [p for group in ps for p in group]
    )


def _le(value: int, width: int) -> bytes:
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


@settings(
    max_examples=3000 if FULL else 300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_whole_image_fuzz(world, data):
    image = data.draw(st.sampled_from(["pristine", "pending"]), label="image")
    spare = data.draw(st.sampled_from([0, 1]), label="spared superblock")
    patches = data.draw(_patches(world, image, spare), label="patches")
    fix_up = data.draw(st.booleans(), label="fix_up")
    for outcome in whole_image_property(world, image, patches, fix_up):
        event(outcome)


def _corpus() -> list[str]:
    return sorted(glob.glob(os.path.join(CORPUS, "*.json")))


@pytest.mark.parametrize("entry", _corpus(), ids=os.path.basename)
def test_corpus_replays(world, entry):
    with open(entry) as f:
        case = json.load(f)
    patches = [tuple(p) for p in case["patches"]]
    whole_image_property(world, case.get("image", "pristine"), patches, case.get("fix_up", False))


def test_zz_case_count(capsys):
    """Report how many fuzzy cases ran (the README cites the full count)."""
    if not CASES:
        pytest.skip("no fuzzy case ran in this session")
    with capsys.disabled():
        per = ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()) if k != "total")
        print(f"\ndaxfs fuzzy: {CASES['total']} cases ({per})")
