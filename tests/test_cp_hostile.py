"""``daxfs cp`` on nasty trees and hostile pools: it ends, and writes only
where it was told.

Every copy runs the real ``daxfs`` command in a subprocess under a hang
limit, with its pools on tmpfs and its destination beside a sentinel
directory (``outside``: a bait file holding a random marker, a bait
directory, a victim file).  Each test checks what the copy made, the exit
status, one ``daxfs: `` line per failure and nothing else on stderr (never
a traceback), and that no byte of ``outside`` changed unless the test asked
for it (``--keep-directory-symlink``).

Pools are built through the daxfs API (every structure here is legal);
the damaged ones come from daxfs.crafted.  The case-insensitive
destination is tests/casefold_fuse.py, a FUSE file system (this kernel has
no casefold for ext4 or tmpfs); a full disk is a small real tmpfs, and a
file system that cannot hold 2^62 bytes is a loop-mounted ext4.
"""

from __future__ import annotations

import hashlib
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import daxfs
from conftest import casefold_mount, small_tmpfs
from daxfs.cli.cp import Place, planned_bytes
from daxfs.cli.sides import PoolSide

DAXFS = str(Path(sys.executable).with_name("daxfs"))
HANG_LIMIT = 120.0  # seconds: a generous bound, only to turn a hang into a failure
MiB = 1 << 20
DEEP = 1500
HUGE = 1 << 62


# --------------------------------------------------------------------------
# the arena: pools, a destination, and the sentinel beside it
# --------------------------------------------------------------------------
@dataclass
class Arena:
    root: Path
    marker: bytes

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def bait(self) -> Path:
        return self.outside / "bait.txt"

    @property
    def bait_dir(self) -> Path:
        return self.outside / "baitdir"

    @property
    def dest(self) -> Path:
        return self.root / "dest"

    def pool(self, name: str, build: Callable[[daxfs.FileSystem], None], size="64M") -> str:
        path = str(self.root / name)
        daxfs.mkfs(path, size)
        with daxfs.mount(path) as fs:
            build(fs)
        return path


def snapshot(top: Path) -> dict[str, object]:
    """Every name under ``top`` (symlinks not followed): a file's sha256 and
    size, a symlink's text, a directory's mode."""
    seen: dict[str, object] = {}
    for where, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(where, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if os.path.islink(path):
                seen[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                seen[rel] = ("dir", st.st_mode)
            else:
                seen[rel] = (
                    "file",
                    st.st_size,
                    hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                )
    return seen


@pytest.fixture
def arena() -> Iterator[Arena]:
    root = Path(tempfile.mkdtemp(prefix="daxfs-cp-hostile-", dir="/dev/shm"))
    a = Arena(root, b"MARKER-" + secrets.token_hex(16).encode())
    try:
        a.outside.mkdir()
        a.bait.write_bytes(b"bait file " + a.marker + b"\n")
        a.bait_dir.mkdir()
        (a.bait_dir / "kept.txt").write_bytes(b"bait directory " + a.marker + b"\n")
        (a.outside / "victim.txt").write_bytes(b"victim " + a.marker + b"\n")
        a.dest.mkdir()
        yield a
    finally:
        # rm(1), not shutil.rmtree: some trees here are deeper than its recursion.
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


@pytest.fixture
def unchanged_outside(arena: Arena) -> Iterator[Arena]:
    """The arena, asserting afterwards that nothing outside the destination changed."""
    before = snapshot(arena.outside)
    yield arena
    assert snapshot(arena.outside) == before, "a write outside the destination"


def daxfs_cp(*args: str, nofile: int | None = None) -> subprocess.CompletedProcess:
    """Run ``daxfs cp ARGS``; with ``nofile``, under RLIMIT_NOFILE=nofile."""

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    res = subprocess.run(
        [DAXFS, "cp", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=HANG_LIMIT,
        preexec_fn=limit,
    )
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.stdout == ""
    return res


def failures(res: subprocess.CompletedProcess) -> list[str]:
    """The ``daxfs: `` lines of a run; every line on stderr must be one."""
    lines = res.stderr.splitlines()
    assert all(line.startswith("daxfs: ") for line in lines), res.stderr
    return lines


def assert_copied(res: subprocess.CompletedProcess) -> None:
    assert (res.returncode, failures(res)) == (0, []), res.stderr


def files_holding(top: Path, needle: bytes) -> list[Path]:
    """Regular files under ``top`` (symlinks not followed) that contain ``needle``."""
    found = []
    for where, _, files in os.walk(top):
        for name in files:
            path = Path(where, name)
            if not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
    return found


def pool_files_holding(pool: str, needle: bytes) -> list[str]:
    found = []
    with daxfs.mount(pool, readonly=True) as fs:
        for where, _, files in fs.walk("/"):
            for name in files:
                path = where.rstrip("/") + "/" + name
                if not fs.islink(path):
                    with fs.open(path, "rb") as f:
                        if needle in f.read():
                            found.append(path)
    return found


def write(fs: daxfs.FileSystem, path: str, data: bytes) -> None:
    with fs.open(path, "wb") as f:
        f.write(data)


def read(pool: str, path: str) -> bytes:
    with daxfs.mount(pool, readonly=True) as fs, fs.open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------
# depth: no recursion, a bounded number of descriptors
# --------------------------------------------------------------------------
def build_deep(fs: daxfs.FileSystem) -> None:
    """/d/d/.../d (1,500 levels) with /d.../leaf at the bottom, and /huge:
    2^62 bytes without a block."""
    where = ""
    for _ in range(DEEP):
        where += "/d"
        fs.mkdir(where)
    write(fs, where + "/leaf", b"bottom")
    with fs.open("/huge", "wb"):
        pass
    fs.truncate("/huge", HUGE)


def test_a_1500_level_tree_copies_out_and_back_with_64_descriptors(unchanged_outside: Arena):
    arena = unchanged_outside
    pool = arena.pool("deep.pool", build_deep)
    out = arena.dest / "out"
    assert_copied(daxfs_cp("-r", f"{pool}:/d", str(out), nofile=64))
    assert out.joinpath(*["d"] * (DEEP - 1), "leaf").read_bytes() == b"bottom"
    assert_copied(daxfs_cp("-r", str(out), f"{pool}:/back", nofile=64))
    assert read(pool, "/back" + "/d" * (DEEP - 1) + "/leaf") == b"bottom"


def test_the_progress_total_walks_deep_trees_and_counts_data_not_size(arena: Arena):
    pool = arena.pool("deep.pool", build_deep)
    with daxfs.mount(pool, readonly=True) as fs:
        side = PoolSide(pool, fs)
        # the leaf's 6 bytes; /huge claims 2^62 but holds no data
        assert planned_bytes([Place(side, "/")], recursive=True) == len(b"bottom")


def make_host_deep(top: Path, levels: int, name: str) -> None:
    """``levels`` directories ``name`` below ``top`` and a file at the bottom,
    made through descriptors (the path outgrows PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"bottom")
        os.close(leaf)
    finally:
        os.close(fd)


def read_host_deep(top: Path, levels: int, name: str) -> bytes:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(leaf, 100)
        finally:
            os.close(leaf)
    finally:
        os.close(fd)


def test_a_host_tree_past_path_max_copies_whole_to_the_host_and_stops_once_in_a_pool(
    unchanged_outside: Arena,
):
    arena, levels, name = unchanged_outside, 400, "n" * 20  # paths of 8,400 bytes
    src = arena.root / "src"
    src.mkdir()
    make_host_deep(src, levels, name)
    assert_copied(daxfs_cp("-r", str(src), str(arena.dest / "copy"), nofile=64))
    assert read_host_deep(arena.dest / "copy", levels, name) == b"bottom"
    # A pool path stops at PATH_MAX: one line for the first directory too
    # deep, its subtree skipped, everything above it copied.
    pool = arena.pool("p.pool", lambda fs: None)
    res = daxfs_cp("-r", str(src), f"{pool}:/s", nofile=64)
    assert res.returncode == 1
    (line,) = failures(res)
    assert line.endswith(": File name too long"), line
    with daxfs.mount(pool, readonly=True) as fs:
        assert fs.isdir("/s" + f"/{name}" * 190)


# --------------------------------------------------------------------------
# symlinks: copied as links, never followed, nothing read through them
# --------------------------------------------------------------------------
LINKS = {
    "root1": "/",
    "root2": "/",
    "loopa": "loopb",
    "loopb": "loopa",
    "sub/dot": ".",
    "sub/up": "..",
    "passwd": "/etc/passwd",
}


def build_links(arena: Arena) -> Callable[[daxfs.FileSystem], None]:
    def build(fs: daxfs.FileSystem) -> None:
        fs.mkdir("/t")
        fs.mkdir("/t/sub")
        write(fs, "/t/data.txt", b"data")
        for name, text in links_of(arena).items():
            fs.symlink(text, f"/t/{name}")

    return build


def links_of(arena: Arena) -> dict[str, str]:
    climb = os.path.relpath(arena.bait, arena.dest / "t")
    return {
        **LINKS,
        "bait": str(arena.bait),
        "bait_rel": climb,
        "baitdir": str(arena.bait_dir),
        "sub/bait_up": os.path.relpath(arena.bait, arena.dest / "t" / "sub"),
    }


def test_symlinks_to_the_root_loops_and_bait_are_copied_as_links(unchanged_outside: Arena):
    arena = unchanged_outside
    pool = arena.pool("links.pool", build_links(arena))
    assert_copied(daxfs_cp("-r", f"{pool}:/t", str(arena.dest)))
    t = arena.dest / "t"
    for name, text in links_of(arena).items():
        assert os.readlink(t / name) == text, name
    assert sorted(p.name for p in t.iterdir()) == sorted(
        ["data.txt", "sub", *[n for n in links_of(arena) if "/" not in n]]
    )
    assert (t / "data.txt").read_bytes() == b"data"
    assert files_holding(arena.dest, arena.marker) == []
    passwd_line = Path("/etc/passwd").read_bytes().splitlines()[0]
    assert files_holding(arena.dest, passwd_line) == []


def test_copies_into_pools_keep_links_and_read_no_host_file(unchanged_outside: Arena):
    arena = unchanged_outside
    pool = arena.pool("links.pool", build_links(arena))
    other = arena.pool("other.pool", lambda fs: None)
    assert_copied(daxfs_cp("-r", f"{pool}:/t", f"{pool}:/again"))  # within one pool
    assert_copied(daxfs_cp("-r", f"{pool}:/t", f"{other}:/t"))  # pool to pool
    host = arena.root / "host"
    host.mkdir()
    os.symlink(arena.bait, host / "bait")
    os.symlink(arena.bait_dir, host / "baitdir")
    (host / "plain.txt").write_bytes(b"plain")
    assert_copied(daxfs_cp("-r", str(host), f"{other}:/host"))  # host to pool
    with daxfs.mount(other, readonly=True) as fs:
        assert fs.readlink("/t/bait") == str(arena.bait)
        assert fs.readlink("/t/root1") == "/"
        assert fs.readlink("/host/bait") == str(arena.bait)
        assert fs.readlink("/host/baitdir") == str(arena.bait_dir)
    with daxfs.mount(pool, readonly=True) as fs:
        assert fs.readlink("/again/loopa") == "loopb"
    assert pool_files_holding(pool, arena.marker) == []
    assert pool_files_holding(other, arena.marker) == []


# --------------------------------------------------------------------------
# merging into a destination that holds symlinks
# --------------------------------------------------------------------------
def build_merge(fs: daxfs.FileSystem) -> None:
    fs.mkdir("/t")
    fs.mkdir("/t/sub")
    write(fs, "/t/x.txt", b"x from the pool")
    write(fs, "/t/sub/y.txt", b"y from the pool")
    write(fs, "/t/z.txt", b"z from the pool")


def test_a_symlink_where_a_file_goes_is_replaced_not_written_through(unchanged_outside: Arena):
    arena = unchanged_outside
    pool = arena.pool("merge.pool", build_merge)
    (arena.dest / "t").mkdir()
    os.symlink(arena.outside / "victim.txt", arena.dest / "t" / "x.txt")
    os.symlink("../../outside/victim.txt", arena.dest / "t" / "z.txt")
    assert_copied(daxfs_cp("-r", f"{pool}:/t", str(arena.dest)))
    for name in ("x.txt", "z.txt"):
        path = arena.dest / "t" / name
        assert not path.is_symlink()
        assert path.read_bytes() == f"{name[0]} from the pool".encode()


def test_a_symlink_where_a_directory_goes_is_refused_and_the_rest_copied(
    unchanged_outside: Arena,
):
    arena = unchanged_outside
    pool = arena.pool("merge.pool", build_merge)
    (arena.dest / "t").mkdir()
    os.symlink(arena.bait_dir, arena.dest / "t" / "sub")
    res = daxfs_cp("-r", f"{pool}:/t", str(arena.dest))
    assert res.returncode == 1
    assert failures(res) == [
        f"daxfs: {arena.dest}/t/sub: a symlink where the directory '{pool}:/t/sub' goes; "
        "not followed (--keep-directory-symlink follows it)"
    ]
    assert (arena.dest / "t" / "x.txt").read_bytes() == b"x from the pool"
    assert (arena.dest / "t" / "z.txt").read_bytes() == b"z from the pool"


def test_keep_directory_symlink_follows_one_the_destination_held(arena: Arena):
    pool = arena.pool("merge.pool", build_merge)
    (arena.dest / "t").mkdir()
    os.symlink(arena.bait_dir, arena.dest / "t" / "sub")
    assert_copied(daxfs_cp("-r", "--keep-directory-symlink", f"{pool}:/t", str(arena.dest)))
    assert (arena.bait_dir / "y.txt").read_bytes() == b"y from the pool"  # asked for
    assert os.readlink(arena.dest / "t" / "sub") == str(arena.bait_dir)


def test_a_pool_destination_replaces_its_symlinks_and_refuses_directory_links(
    unchanged_outside: Arena,
):
    arena = unchanged_outside

    def build(fs: daxfs.FileSystem) -> None:
        fs.mkdir("/t")
        fs.mkdir("/elsewhere")
        write(fs, "/victim", b"victim in the pool")
        fs.symlink("/victim", "/t/x.txt")
        fs.symlink("/elsewhere", "/t/sub")

    pool = arena.pool("dest.pool", build)
    src = arena.root / "t"
    (src / "sub").mkdir(parents=True)
    (src / "x.txt").write_bytes(b"x from the host")
    (src / "sub" / "y.txt").write_bytes(b"y from the host")
    res = daxfs_cp("-r", str(src), f"{pool}:/")
    assert res.returncode == 1
    (line,) = failures(res)
    assert line.startswith(f"daxfs: {pool}:/t/sub: a symlink where the directory")
    with daxfs.mount(pool, readonly=True) as fs:
        assert not fs.islink("/t/x.txt")
        assert fs.listdir("/elsewhere") == []
    assert read(pool, "/t/x.txt") == b"x from the host"
    assert read(pool, "/victim") == b"victim in the pool"


def test_two_sources_with_one_name_do_not_overwrite_each_other(unchanged_outside: Arena):
    arena = unchanged_outside

    def build(fs: daxfs.FileSystem) -> None:
        for top in ("/a", "/b"):
            fs.mkdir(top)
            write(fs, f"{top}/x", f"x of {top}".encode())

    pool = arena.pool("two.pool", build)
    res = daxfs_cp(f"{pool}:/a/x", f"{pool}:/b/x", str(arena.dest))
    assert res.returncode == 1
    assert failures(res) == [
        f"daxfs: will not overwrite just-created '{arena.dest}/x' with '{pool}:/b/x'"
    ]
    assert (arena.dest / "x").read_bytes() == b"x of /a"


# --------------------------------------------------------------------------
# a destination that folds case
# --------------------------------------------------------------------------
@pytest.fixture
def folding(arena: Arena) -> Iterator[Path]:
    """A case-insensitive, case-preserving directory (tests/casefold_fuse.py)."""
    with casefold_mount(arena.root) as mnt:
        yield mnt


def test_the_folding_fixture_folds_and_a_plain_open_writes_through_it(arena: Arena, folding: Path):
    # What the copy of issue 12 did: open(dst/"f", "wb") after making the
    # symlink dst/"F" wrote the file the symlink names.  Here with a scratch
    # file, to show the fixture folds as a real case-insensitive system does.
    scratch = arena.root / "scratch.txt"
    scratch.write_bytes(b"before")
    os.symlink(scratch, folding / "F")
    assert os.readlink(folding / "f") == str(scratch)
    assert os.lstat(folding / "f").st_ino == os.lstat(folding / "F").st_ino
    with open(folding / "f", "wb") as f:
        f.write(b"written through")
    assert scratch.read_bytes() == b"written through"
    assert os.listdir(folding) == ["F"]


def build_case_fold(arena: Arena) -> Callable[[daxfs.FileSystem], None]:
    def build(fs: daxfs.FileSystem) -> None:
        fs.mkdir("/t")
        fs.symlink(str(arena.bait), "/t/F")
        write(fs, "/t/f", b"f from the pool")
        fs.symlink(str(arena.bait_dir), "/t/D")
        fs.mkdir("/t/d")
        write(fs, "/t/d/x.txt", b"x from the pool")
        write(fs, "/t/A", b"A from the pool")
        write(fs, "/t/a", b"a from the pool")

    return build


@pytest.mark.parametrize("option", [[], ["--keep-directory-symlink"]], ids=["plain", "keep"])
def test_case_collisions_never_write_through_a_link_the_copy_made(
    unchanged_outside: Arena, folding: Path, option: list[str]
):
    arena = unchanged_outside
    pool = arena.pool("fold.pool", build_case_fold(arena))
    res = daxfs_cp("-r", *option, f"{pool}:/t", str(folding / "t"))
    assert res.returncode == 1
    out = folding / "t"
    assert failures(res) == [  # name order: A D F a d f
        f"daxfs: will not overwrite just-created '{out}/a' with '{pool}:/t/a'",
        f"daxfs: will not overwrite just-created '{out}/d' with '{pool}:/t/d'",
        f"daxfs: will not overwrite just-created '{out}/f' with '{pool}:/t/f'",
    ]
    assert sorted(os.listdir(out)) == ["A", "D", "F"]
    assert (out / "A").read_bytes() == b"A from the pool"
    assert os.readlink(out / "F") == str(arena.bait)
    assert os.readlink(out / "D") == str(arena.bait_dir)


# --------------------------------------------------------------------------
# sparse files and full disks
# --------------------------------------------------------------------------
def build_sparse(fs: daxfs.FileSystem) -> None:
    fs.mkdir("/t")
    write(fs, "/t/a.txt", b"small")
    with fs.open("/t/huge", "wb"):
        pass
    fs.truncate("/t/huge", HUGE)
    with fs.open("/t/runs", "wb") as f:
        f.write(b"A" * 5000)
        f.seek(40 * MiB)
        f.write(b"B" * 100)


def test_a_2_62_byte_file_without_data_copies_sparse_and_at_once(unchanged_outside: Arena):
    arena = unchanged_outside
    pool = arena.pool("sparse.pool", build_sparse)
    assert_copied(daxfs_cp("-r", f"{pool}:/t", str(arena.dest)))
    huge, runs = arena.dest / "t" / "huge", arena.dest / "t" / "runs"
    assert (huge.stat().st_size, huge.stat().st_blocks) == (HUGE, 0)
    data = runs.read_bytes()
    assert data == b"A" * 5000 + bytes(40 * MiB - 5000) + b"B" * 100
    assert runs.stat().st_blocks * 512 < 8 * MiB  # the hole stayed a hole
    # and back into a pool
    assert_copied(daxfs_cp(str(huge), f"{pool}:/huge2"))
    with daxfs.mount(pool, readonly=True) as fs:
        st = fs.stat("/huge2")
        assert (st.st_size, st.st_blocks) == (HUGE, 0)


@pytest.fixture
def small_ext4(arena: Arena) -> Iterator[Path]:
    """A 16 MiB ext4 (it holds files of 16 TiB at most), loop-mounted."""
    if shutil.which("mkfs.ext4") is None or os.geteuid() != 0:
        pytest.skip("needs mkfs.ext4 and root")
    image, mnt = arena.root / "ext4.img", arena.root / "ext4"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    mnt.mkdir()
    res = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
    if res.returncode:
        pytest.skip(f"cannot loop-mount here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_file_too_large_for_the_destination_is_one_line_and_removed(
    unchanged_outside: Arena, small_ext4: Path
):
    arena = unchanged_outside
    pool = arena.pool("sparse.pool", build_sparse)
    res = daxfs_cp("-r", f"{pool}:/t", str(small_ext4))
    assert res.returncode == 1
    assert failures(res) == [
        f"daxfs: {small_ext4}/t/huge: File too large (removed the partial copy)"
    ]
    assert sorted(os.listdir(small_ext4 / "t")) == ["a.txt", "runs"]
    assert (small_ext4 / "t" / "a.txt").read_bytes() == b"small"


def test_a_full_tmpfs_names_the_file_removes_it_and_copies_the_rest(unchanged_outside: Arena):
    arena = unchanged_outside
    rng = __import__("random").Random(12)
    blobs = {"a": rng.randbytes(MiB), "big": rng.randbytes(8 * MiB), "z": rng.randbytes(MiB)}

    def build(fs: daxfs.FileSystem) -> None:
        fs.mkdir("/t")
        for name, data in blobs.items():
            write(fs, f"/t/{name}", data)

    pool = arena.pool("fill.pool", build)
    with small_tmpfs(arena.dest / "small", "4M") as small:
        res = daxfs_cp("-r", f"{pool}:/t", str(small))
        assert res.returncode == 1
        assert failures(res) == [
            f"daxfs: {small}/t/big: No space left on device (removed the partial copy)"
        ]
        assert sorted(os.listdir(small / "t")) == ["a", "z"]
        assert (small / "t" / "a").read_bytes() == blobs["a"]
        assert (small / "t" / "z").read_bytes() == blobs["z"]


# --------------------------------------------------------------------------
# directories met twice
# --------------------------------------------------------------------------
def test_a_bind_mount_loop_in_a_host_source_is_walked_once(unchanged_outside: Arena):
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    arena = unchanged_outside
    src = arena.root / "src"
    (src / "a" / "loop").mkdir(parents=True)
    (src / "a" / "f.txt").write_bytes(b"f")
    subprocess.run(["mount", "--bind", str(src), str(src / "a" / "loop")], check=True)
    try:
        pool = arena.pool("p.pool", lambda fs: None)
        res = daxfs_cp("-r", str(src), f"{pool}:/s")
    finally:
        subprocess.run(["umount", str(src / "a" / "loop")], check=True)
    assert res.returncode == 1
    assert failures(res) == [
        f"daxfs: {src}/a/loop: a directory met twice (a loop: a bind mount?); not copied again"
    ]
    assert read(pool, "/s/a/f.txt") == b"f"


@pytest.mark.parametrize("attack", ["self_dir", "ancestor_dir", "root_named", "fanout"])
def test_a_pool_directory_met_twice_ends_at_once_and_asks_for_fsck(
    unchanged_outside: Arena, attack: str
):
    crafted = pytest.importorskip("daxfs.crafted")
    arena = unchanged_outside
    pool = str(arena.root / f"{attack}.pool")
    crafted.build(attack, pool, 8 * MiB, str(arena.outside))
    res = daxfs_cp("-r", f"{pool}:/", str(arena.dest))
    assert res.returncode == 1
    lines = failures(res)
    # One line per directory met twice (fanout: at most one per level), each
    # naming it and calling the pool damaged.
    assert 1 <= len(lines) <= crafted.FANOUT_LEVELS
    assert all(f"run 'daxfs fsck {pool}'" in line for line in lines), lines
