"""The daxfs command line, run through Typer's CliRunner against pools in tmp_path."""

from __future__ import annotations

import os
import random
import re
import stat
import subprocess

import pytest
from typer.testing import CliRunner

import daxfs
from conftest import small_tmpfs
from daxfs.cli import app
from daxfs.cli import cp as cp_module
from daxfs.cli.common import default_pool, split_spec
from daxfs.hugemap import eligible_bytes, eligible_total, huge_windows
from daxfs.inode import Extent
from daxfs.layout import CHUNK, INODE_SIZE

MiB = 1 << 20


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def pool(tmp_path) -> str:
    path = str(tmp_path / "test.pool")
    daxfs.mkfs(path, "64M")
    return path


def run(runner: CliRunner, *args: str, code: int = 0):
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def field(out: str, name: str) -> str:
    """The value column of a two-column (field, value) table row."""
    m = re.search(rf"^{re.escape(name)}\s+(.*?)\s*$", out, re.M)
    assert m, (name, out)
    return m.group(1)


def read_pool(pool: str, path: str) -> bytes:
    with daxfs.mount(pool, readonly=True) as fs, fs.open(path, "rb") as f:
        return f.read()


def write_pool(pool: str, path: str, data: bytes) -> None:
    with daxfs.mount(pool) as fs, fs.open(path, "wb") as f:
        f.write(data)


def make_tree(root) -> dict[str, bytes]:
    """A small host tree (nested dirs, an empty dir, a 3 MiB file); relpath -> bytes."""
    rnd = random.Random(7)
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": rnd.randbytes(3 * MiB),
        "sub/deeper/c.txt": b"gamma\n" * 100,
        "empty.txt": b"",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "nothing").mkdir()
    return files


def host_tree(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root)] = f.read()
    return out


# --------------------------------------------------------------------------
# mkfs, info, df
# --------------------------------------------------------------------------
def test_mkfs_creates_a_mountable_pool(runner, tmp_path):
    path = str(tmp_path / "new.pool")
    result = run(runner, "mkfs", path, "--size", "64M", "--allocator", "naive", "--inodes", "300")
    assert "formatted" in result.output
    with daxfs.mount(path) as fs:
        assert fs.info()["allocator"] == "naive"
        assert fs.info()["inodes"] == 300
        assert fs.listdir("/") == []


def test_mkfs_refuses_an_existing_pool_without_force(runner, pool):
    write_pool(pool, "/keep", b"x")
    result = run(runner, "mkfs", pool, "--size", "64M", code=1)
    assert "--force" in result.output and "Traceback" not in result.output
    assert read_pool(pool, "/keep") == b"x"
    run(runner, "mkfs", pool, "--size", "64M", "--force")
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == []


@pytest.mark.parametrize("size", ["4M", "1K", "0"])
def test_mkfs_too_small_with_force_leaves_the_pool_alone(runner, pool, size):
    write_pool(pool, "/keep", b"x")
    before = os.path.getsize(pool)
    result = run(runner, "mkfs", pool, "--size", size, "--force", code=1)
    assert "at least" in result.output and "Traceback" not in result.output
    assert os.path.getsize(pool) == before and read_pool(pool, "/keep") == b"x"


def test_a_failed_mkfs_leaves_no_file_behind(runner, tmp_path):
    path = str(tmp_path / "new.img")
    run(runner, "mkfs", path, "--size", "1K", code=1)
    assert not os.path.exists(path)
    run(runner, "mkfs", path, "--size", "16M")


def test_mkfs_says_what_is_in_the_way(runner, pool, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("precious")
    result = run(runner, "mkfs", str(text), "--size", "16M", code=1)
    assert "not a pool" in result.output and text.read_text() == "precious"
    assert "holds a pool" in run(runner, "mkfs", pool, "--size", "16M", code=1).output
    result = run(runner, "mkfs", str(tmp_path), "--size", "16M", code=1)
    assert "directory" in result.output


def test_mkfs_bad_size_is_one_line_error(runner, tmp_path):
    result = run(runner, "mkfs", str(tmp_path / "p"), "--size", "12Q", code=1)
    assert result.output.strip().splitlines() == [
        "daxfs: not a size: '12Q' (examples: 4096, 64M, 4G)"
    ]


def test_mkfs_unknown_allocator(runner, tmp_path):
    result = run(runner, "mkfs", str(tmp_path / "p"), "--size", "64M", "--allocator", "x", code=1)
    assert "unknown allocator" in result.output


def test_info_reports_backing_and_huge_pages(runner, pool):
    out = run(runner, "info", pool).output
    for word in ("durability", "msync", "2 MiB pages", "allocator", "hugepage", "inodes"):
        assert word in out
    assert "VOLATILE" not in out


def test_info_says_tmpfs_is_volatile(runner, pool_path):
    out = run(runner, "info", pool_path).output
    assert "none" in out and "VOLATILE" in out


def test_df_counts_space_and_chunks(runner, pool):
    before = run(runner, "df", pool).output
    assert "free 2 MiB chunks" in before and "inodes" in before
    write_pool(pool, "/big", bytes(4 * MiB))
    after = run(runner, "df", pool).output
    with daxfs.mount(pool) as fs:
        v = fs.statvfs()
    assert f"{v.free_chunks} of {v.total_chunks} chunks" in after
    assert f"{v.free_bytes} bytes" in after
    assert before != after


# --------------------------------------------------------------------------
# namespace commands
# --------------------------------------------------------------------------
def test_mkdir_and_parents(runner, pool):
    run(runner, "mkdir", f"{pool}:/d")
    run(runner, "mkdir", "-p", f"{pool}:/x/y/z")
    run(runner, "mkdir", "-p", f"{pool}:/x/y")  # exists: fine with -p
    result = run(runner, "mkdir", f"{pool}:/d", code=1)
    assert result.output.strip() == "daxfs: /d: File exists"
    with daxfs.mount(pool) as fs:
        assert fs.isdir("/d") and fs.isdir("/x/y/z")


def test_ls_plain_and_long(runner, pool):
    write_pool(pool, "/file.txt", b"12345")
    with daxfs.mount(pool) as fs:
        fs.mkdir("/dir")
        fs.symlink("/file.txt", "/link")
    assert run(runner, "ls", pool).output.split() == ["dir", "file.txt", "link"]
    lines = run(runner, "ls", "-l", f"{pool}:/").output.splitlines()
    assert lines[0].startswith("d") and lines[0].endswith(" dir")
    assert lines[1].startswith("-rw-r--r-- 1 ") and " 5 " in lines[1]
    assert lines[1].endswith(" file.txt")
    assert lines[2].startswith("l") and lines[2].endswith("link -> /file.txt")
    assert run(runner, "ls", f"{pool}:/file.txt").output.strip() == "/file.txt"


def test_cat_is_binary_safe(runner, pool):
    data = bytes(range(256)) * 1000
    write_pool(pool, "/bin", data)
    assert run(runner, "cat", f"{pool}:/bin").stdout_bytes == data


def test_rm_file_and_tree(runner, pool):
    write_pool(pool, "/f", b"x")
    with daxfs.mount(pool) as fs:
        fs.makedirs("/t/u")
        with fs.open("/t/u/g", "wb") as f:
            f.write(b"y")
    run(runner, "rm", f"{pool}:/f")
    result = run(runner, "rm", f"{pool}:/t", code=1)
    assert "Is a directory" in result.output
    run(runner, "rm", "-r", f"{pool}:/t")
    run(runner, "rm", "-r", f"{pool}:/", code=1)
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == []


@pytest.mark.parametrize("root", ["/", "//", "/.", "/s/..", "/s/to-root/", "/s/to-root/s/.."])
def test_rm_refuses_every_spelling_of_the_root(runner, pool, root):
    write_pool(pool, "/keep", b"x")
    with daxfs.mount(pool) as fs:
        fs.mkdir("/s")
        fs.symlink("/", "/s/to-root")
    result = run(runner, "rm", "-r", f"{pool}:{root}", code=1)
    assert "refusing to remove the root" in result.output
    with daxfs.mount(pool) as fs:
        assert sorted(fs.listdir("/")) == ["keep", "s"] and fs.listdir("/s") == ["to-root"]


def test_mv_says_why_in_words(runner, pool):
    with daxfs.mount(pool) as fs:
        fs.makedirs("/src/sub")
    result = run(runner, "mv", f"{pool}:/src", f"{pool}:/src/sub", code=1)
    assert "to a subdirectory of itself" in result.output
    result = run(runner, "mv", f"{pool}:/", f"{pool}:/x", code=1)
    assert "it is a root" in result.output
    with daxfs.mount(pool) as fs:
        assert fs.isdir("/src/sub")


def test_rm_goes_on_past_a_failing_target(runner, pool):
    write_pool(pool, "/a", b"x")
    write_pool(pool, "/b", b"y")
    result = run(runner, "rm", f"{pool}:/a", f"{pool}:/missing", f"{pool}:/b", code=1)
    assert result.output.strip() == "daxfs: /missing: No such file or directory"
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == []


def test_mv_renames_and_moves_into_directory(runner, pool):
    write_pool(pool, "/a", b"A")
    with daxfs.mount(pool) as fs:
        fs.mkdir("/d")
    run(runner, "mv", f"{pool}:/a", f"{pool}:/b")
    run(runner, "mv", f"{pool}:/b", f"{pool}:/d")
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == ["d"]
    assert read_pool(pool, "/d/b") == b"A"


def test_stat_shows_inode(runner, pool):
    write_pool(pool, "/s", b"hello")
    out = run(runner, "stat", f"{pool}:/s").output
    with daxfs.mount(pool) as fs:
        ino = fs.stat("/s").st_ino
    assert field(out, "type") == "regular file"
    assert field(out, "inode") == str(ino)
    assert field(out, "size") == "5"
    assert field(out, "access") == "0644 (-rw-r--r--)"
    assert field(out, "2 MiB-eligible") == "0 of 5 bytes"


def test_stat_and_ls_name_fifos_devices_and_sockets(runner, pool):
    with daxfs.mount(pool) as fs:
        fs.mkfifo("/p", 0o644)
        fs.mknod("/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        fs.mknod("/s", stat.S_IFSOCK | 0o755)
    out = run(runner, "stat", f"{pool}:/null").output
    assert field(out, "type") == "character special file"
    assert field(out, "device") == "1, 3"
    assert field(run(runner, "stat", f"{pool}:/p").output, "type") == "fifo"
    listing = run(runner, "ls", "-l", f"{pool}:/").output.splitlines()
    assert sorted(line[0] + line.split()[-1] for line in listing) == ["cnull", "pp", "ss"]
    result = run(runner, "cat", f"{pool}:/p", code=1)  # no pipe outside a mount
    assert "No such device or address" in result.output


# --------------------------------------------------------------------------
# cp
# --------------------------------------------------------------------------
def test_cp_host_to_pool_and_back(runner, pool, tmp_path):
    data = random.Random(1).randbytes(5 * MiB + 123)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    run(runner, "cp", str(src), f"{pool}:/in.bin")
    assert read_pool(pool, "/in.bin") == data
    out = tmp_path / "out.bin"
    run(runner, "cp", f"{pool}:/in.bin", str(out))
    assert out.read_bytes() == data
    assert run(runner, "cp", str(src), f"{pool}:/in.bin").output == ""  # overwrite, quiet


def test_cp_into_existing_directory(runner, pool, tmp_path):
    (tmp_path / "f.txt").write_bytes(b"in a dir")
    with daxfs.mount(pool) as fs:
        fs.mkdir("/d")
    run(runner, "cp", str(tmp_path / "f.txt"), f"{pool}:/d")
    assert read_pool(pool, "/d/f.txt") == b"in a dir"
    outdir = tmp_path / "out"
    outdir.mkdir()
    run(runner, "cp", f"{pool}:/d/f.txt", str(outdir))
    assert (outdir / "f.txt").read_bytes() == b"in a dir"


def test_cp_within_a_pool(runner, pool):
    write_pool(pool, "/a", b"abc" * 1000)
    run(runner, "cp", f"{pool}:/a", f"{pool}:/b")
    assert read_pool(pool, "/b") == b"abc" * 1000
    result = run(runner, "cp", f"{pool}:/a", f"{pool}:/a", code=1)
    assert "same file" in result.output
    assert read_pool(pool, "/a") == b"abc" * 1000


def test_cp_recursive_both_ways(runner, pool, tmp_path):
    src = tmp_path / "tree"
    files = make_tree(src)
    result = run(runner, "cp", str(src), f"{pool}:/", code=1)
    assert "use -r" in result.output
    run(runner, "cp", "-r", str(src), f"{pool}:/")
    with daxfs.mount(pool) as fs:
        assert fs.isdir("/tree/nothing")
        for rel, data in files.items():
            with fs.open(f"/tree/{rel}", "rb") as f:
                assert f.read() == data, rel
    back = tmp_path / "back"
    run(runner, "cp", "-r", f"{pool}:/tree", str(back))
    assert host_tree(back) == files
    assert (back / "nothing").is_dir()
    run(runner, "cp", "-r", f"{pool}:/tree", f"{pool}:/copy")
    assert read_pool(pool, "/copy/sub/b.bin") == files["sub/b.bin"]
    result = run(runner, "cp", "-r", f"{pool}:/tree", f"{pool}:/tree/inner", code=1)
    assert "into itself" in result.output


def test_cp_makes_each_small_new_file_in_one_commit_with_its_mode(runner, pool, tmp_path):
    """Into a pool, a new file up to 1 MiB is made with its bytes and mode
    in one change (a crash leaves it whole or absent; on a page-cache pool
    one msync instead of three or four); a larger one, and a name already
    there, go the general way.  Contents, sizes (holes too) and modes are
    what the source has."""
    from daxfs.cli.cp import WHOLE_MAX

    src = tmp_path / "small"
    src.mkdir()
    rng = random.Random(7)
    sizes = {"empty": 0, "one": 1, "page": 4096, "odd": 70_001, "max": WHOLE_MAX}
    for name, size in sizes.items():
        (src / name).write_bytes(rng.randbytes(size))
        os.chmod(src / name, 0o640 if size % 2 else 0o604)
    with open(src / "holey", "wb") as f:
        f.truncate(300_000)
        f.seek(100_000)
        f.write(b"middle")
    (src / "big").write_bytes(rng.randbytes(WHOLE_MAX + 1))
    with daxfs.mount(pool) as fs:
        before = fs.journal.next_seq
    run(runner, "cp", "-r", str(src), f"{pool}:/small")
    with daxfs.mount(pool) as fs:
        commits = fs.journal.next_seq - before
        for name in [*sizes, "holey", "big"]:
            with fs.open(f"/small/{name}", "rb") as f:
                assert f.read() == (src / name).read_bytes(), name
            want = stat.S_IMODE(os.stat(src / name).st_mode) & ~os.umask(os.umask(0))
            assert stat.S_IMODE(fs.stat(f"/small/{name}").st_mode) == want, name
    # mkdir and its mode, one change per small file, and the big file's
    # create, writes, mode and times: fewer than two changes a file.
    assert commits < 2 * (len(sizes) + 2), commits
    (src / "one").write_bytes(b"again")  # there already: overwritten the general way
    run(runner, "cp", str(src / "one"), f"{pool}:/small/one")
    assert read_pool(pool, "/small/one") == b"again"


def test_cp_recursive_keeps_symlinks(runner, pool, tmp_path):
    src = tmp_path / "t"
    src.mkdir()
    (src / "target").write_bytes(b"T")
    os.symlink("target", src / "link")
    run(runner, "cp", "-r", str(src), f"{pool}:/t")
    with daxfs.mount(pool) as fs:
        assert fs.readlink("/t/link") == "target"
    run(runner, "cp", "-r", f"{pool}:/t", str(tmp_path / "u"))
    assert os.readlink(tmp_path / "u" / "link") == "target"


def test_cp_large_copy_with_progress_threshold(runner, pool, tmp_path, monkeypatch):
    monkeypatch.setattr(cp_module, "PROGRESS_THRESHOLD", MiB)  # no TTY: still quiet
    data = os.urandom(9 * MiB)
    (tmp_path / "big").write_bytes(data)
    result = run(runner, "cp", str(tmp_path / "big"), f"{pool}:/big")
    assert result.output == ""
    assert read_pool(pool, "/big") == data


def test_cp_never_overwrites_the_pool_being_copied(runner, pool):
    write_pool(pool, "/f", b"f")
    result = run(runner, "cp", f"{pool}:/f", pool, code=1)
    assert "refusing to overwrite" in result.output
    assert read_pool(pool, "/f") == b"f"


def test_cp_missing_source_is_one_line(runner, pool):
    result = run(runner, "cp", f"{pool}:/nope", "/tmp/x-never", code=1)
    assert result.output.strip().splitlines() == ["daxfs: /nope: No such file or directory"]


def test_cp_out_of_space_names_the_file_and_leaves_no_half_copy(runner, pool, tmp_path):
    (tmp_path / "huge").write_bytes(bytes(80 * MiB))
    result = run(runner, "cp", str(tmp_path / "huge"), f"{pool}:/huge", code=1)
    assert result.output.strip() == (
        f"daxfs: {pool}:/huge: No space left on device (removed the partial copy)"
    )
    with daxfs.mount(pool) as fs:
        assert fs.listdir("/") == []
    assert daxfs.check(pool).ok


def test_cp_onto_a_pool_file_with_the_colon_forgotten_is_refused(runner, pool, tmp_path):
    write_pool(pool, "/keep", b"x")
    (tmp_path / "in.txt").write_bytes(b"hello\n")
    result = run(runner, "cp", str(tmp_path / "in.txt"), pool, code=1)
    assert f"{pool}:/NAME" in result.output
    assert read_pool(pool, "/keep") == b"x"


def test_cp_out_of_a_read_only_pool(runner, tmp_path):
    # A pool on a file system mounted read-only (EROFS even for root): a
    # source pool is mounted read-only, so copying out of it works.
    with small_tmpfs(tmp_path / "ro", "32M") as ro:
        pool = str(ro / "pool.img")
        daxfs.mkfs(pool, 16 * MiB)
        write_pool(pool, "/hello.txt", b"hi")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        run(runner, "cp", f"{pool}:/hello.txt", str(tmp_path / "out.txt"))
        assert (tmp_path / "out.txt").read_bytes() == b"hi"
        result = run(runner, "cp", str(tmp_path / "out.txt"), f"{pool}:/again", code=1)
        assert "Read-only file system" in result.output


# --------------------------------------------------------------------------
# getmap and the eligibility rule
# --------------------------------------------------------------------------
def test_getmap_five_mib_file_has_four_mib_eligible(runner, pool):
    write_pool(pool, "/five", os.urandom(5 * MiB))
    out = run(runner, "getmap", f"{pool}:/five").output
    assert f"{4 * MiB} of {5 * MiB} bytes 2 MiB-eligible" in out
    assert "yes" in out


def test_getmap_tiny_file_not_eligible(runner, pool):
    write_pool(pool, "/tiny", b"tiny")
    out = run(runner, "getmap", f"{pool}:/tiny").output
    assert "0 of 4 bytes 2 MiB-eligible" in out
    assert "mapped" in out and "no" in out


def test_getmap_touch_shows_the_page_accounting(runner, pool):
    write_pool(pool, "/five", os.urandom(5 * MiB))
    out = run(runner, "getmap", f"{pool}:/five", "--touch").output
    assert f"{4 * MiB} of {5 * MiB} bytes 2 MiB-eligible" in out  # the table comes first
    assert out.index("2 MiB-eligible") < out.index("pmd_bytes")
    pmd, pte, resident = (
        int(field(out, f"  {key}").split()[0])
        for key in ("pmd_bytes", "pte_bytes", "resident_bytes")
    )
    assert resident == 5 * MiB and pmd + pte == resident
    assert pmd <= 4 * MiB  # the last MiB is not a whole 2 MiB window


def test_getmap_touch_on_plain_tmpfs_says_why_4k(runner, pool_path):
    write_pool(pool_path, "/five", os.urandom(5 * MiB))
    out = run(runner, "getmap", f"{pool_path}:/five", "--touch").output
    assert int(field(out, "  pmd_bytes").split()[0]) == 0
    assert int(field(out, "  pte_bytes").split()[0]) == 5 * MiB
    assert "note: 4 KiB pages only" in out and "huge=always" in out


def test_getmap_touch_empty_file(runner, pool):
    write_pool(pool, "/empty", b"")
    out = run(runner, "getmap", f"{pool}:/empty", "--touch").output
    assert "empty file: nothing to map" in out


def test_eligible_bytes_rules():
    def ext(f, d, n, kind="mapped"):
        return Extent(f, d, n, kind)

    assert eligible_bytes(ext(0, 4 * MiB, 5 * MiB), 5 * MiB) == 4 * MiB
    assert eligible_bytes(ext(0, 4 * MiB, 6 * MiB), 5 * MiB) == 4 * MiB  # past EOF
    assert eligible_bytes(ext(0, 4 * MiB + 4096, 8 * MiB), 8 * MiB) == 0  # misaligned
    assert eligible_bytes(ext(MiB, 5 * MiB, 4 * MiB), 8 * MiB) == CHUNK  # one inner window
    assert eligible_bytes(ext(0, None, 8 * MiB, "hole"), 8 * MiB) == 0
    assert eligible_bytes(ext(0, 4 * MiB, CHUNK - 1), CHUNK) == 0
    exts = [ext(0, 4 * MiB, 2 * MiB), ext(2 * MiB, 10 * MiB, 3 * MiB)]
    assert eligible_total(exts, 5 * MiB) == 4 * MiB
    assert list(huge_windows(exts[1], 5 * MiB)) == [(2 * MiB, 10 * MiB)]


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [["cat"], ["stat"], ["getmap"], ["rm"], ["ls"]])
def test_missing_path_exits_one_with_one_line(runner, pool, cmd):
    result = run(runner, *cmd, f"{pool}:/no/such", code=1)
    assert result.output.strip().splitlines() == ["daxfs: /no/such: No such file or directory"]


def test_missing_pool_and_not_a_pool(runner, tmp_path):
    result = run(runner, "ls", str(tmp_path / "absent.pool"), code=1)
    assert "No such file or directory" in result.output
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(8 * MiB))
    result = run(runner, "df", str(junk), code=1)
    assert len(result.output.strip().splitlines()) == 1
    assert "not a daxfs pool" in result.output


def test_path_without_pool_is_an_error(runner):
    result = run(runner, "cat", "/definitely/not/a/pool/file", code=1)
    assert "expected POOL:/path" in result.output


def test_split_spec(pool, tmp_path):
    assert split_spec(f"{pool}:/a/b").path == "/a/b"
    assert split_spec(f"{pool}:").path == "/"
    assert split_spec(f"{pool}:rel").path == "/rel"
    assert split_spec(str(tmp_path)) is None
    missing = split_spec(str(tmp_path / "x.pool") + ":/a")
    assert missing is not None and missing.pool == str(tmp_path / "x.pool")


def test_default_pool_location(monkeypatch, tmp_path):
    monkeypatch.delenv("DAXFS_POOL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_pool() == tmp_path / "xdg" / "daxfs" / "default.pool"
    assert (tmp_path / "xdg" / "daxfs").is_dir()
    monkeypatch.setenv("DAXFS_POOL", str(tmp_path / "p" / "mine.pool"))
    assert default_pool() == tmp_path / "p" / "mine.pool"


# --------------------------------------------------------------------------
# fsck
# --------------------------------------------------------------------------
def _check_available(tmp_path) -> bool:
    path = str(tmp_path / "probe.pool")
    daxfs.mkfs(path, "64M")
    try:
        daxfs.check(path)
    except NotImplementedError:
        return False
    finally:
        os.unlink(path)
    return True


@pytest.fixture
def needs_check(tmp_path):
    if not _check_available(tmp_path):
        pytest.skip("daxfs.check not implemented yet")


def damage_inode(pool: str, path: str) -> None:
    """Zero the inode slot of ``path`` behind the file system's back."""
    with daxfs.mount(pool) as fs:
        off = fs.sb.itable_off + fs.stat(path).st_ino * INODE_SIZE
    with open(pool, "r+b") as f:
        f.seek(off)
        f.write(bytes(INODE_SIZE))


def test_fsck_clean(runner, pool, needs_check):
    write_pool(pool, "/f", b"data")
    assert "clean" in run(runner, "fsck", pool).output


def test_fsck_repair_cycle(runner, pool, needs_check):
    write_pool(pool, "/victim", b"data")
    write_pool(pool, "/keep", b"keep")
    damage_inode(pool, "/victim")
    found = run(runner, "fsck", pool, code=4).output
    assert "error:" in found
    run(runner, "fsck", "--repair", "--dry-run", pool, code=4)
    fixed = run(runner, "fsck", "--repair", pool, code=1).output
    assert "repaired:" in fixed
    run(runner, "fsck", pool, code=0)
    assert read_pool(pool, "/keep") == b"keep"


def test_fsck_missing_pool(runner, tmp_path):
    result = run(runner, "fsck", str(tmp_path / "nope"), code=8)
    assert "No such file or directory" in result.output


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------
def test_demo_builds_the_default_pool(runner, tmp_path, monkeypatch):
    target = tmp_path / "demo" / "default.pool"
    monkeypatch.setenv("DAXFS_POOL", str(target))
    out = run(runner, "demo", "--data-size", "16M").output
    assert "random.bin" in out and f"{8 * MiB} of {8 * MiB} bytes 2 MiB-eligible" in out
    assert f"{16 * MiB} of {16 * MiB} bytes 2 MiB-eligible" in out  # the dataset
    assert int(field(out, "  resident_bytes").split()[0]) == 16 * MiB
    assert "pmd_bytes" in out and "pte_bytes" in out
    assert "2,000,000 random 8-byte reads" in out and "numpy.memmap" in out
    assert "x as fast as numpy.memmap" in out
    assert "DAXFS_POOL=/mnt/huge/pool daxfs demo" in out  # tmp_path is no huge tmpfs
    assert "clean" in out or "check not available" in out
    with daxfs.mount(target, readonly=True) as fs:
        assert fs.isfile("/demo/src/daxfs/fs.py")
        assert fs.stat("/demo/random.bin").st_size == 8 * MiB
        data = fs.ndarray("/demo/data.f64", "float64")
        assert data.shape == (2 * MiB,) and 0 <= data.min() and data.max() < 1
        del data
    run(runner, "demo", "--data-size", "4M")  # reformats every time
    with daxfs.mount(target, readonly=True) as fs:
        assert fs.stat("/demo/data.f64").st_size == 4 * MiB


def test_demo_never_formats_someone_elses_data(runner, tmp_path, monkeypatch):
    text = tmp_path / "important.txt"
    text.write_text("precious")
    monkeypatch.setenv("DAXFS_POOL", str(text))
    result = run(runner, "demo", "--data-size", "1M", code=1)
    assert "not a daxfs pool" in result.output and text.read_text() == "precious"
    pool = str(tmp_path / "mine.pool")
    daxfs.mkfs(pool, 16 * MiB)
    write_pool(pool, "/thesis.tex", b"years of work")
    monkeypatch.setenv("DAXFS_POOL", pool)
    result = run(runner, "demo", "--data-size", "1M", code=1)
    assert "thesis.tex" in result.output and read_pool(pool, "/thesis.tex") == b"years of work"


@pytest.mark.parametrize(
    "options", ["commit=sometimes", "commit_interval=0", "commit_interval=soon", "noatime"]
)
def test_mount_refuses_an_unknown_option_in_one_line(runner, pool, tmp_path, options):
    result = run(runner, "mount", pool, str(tmp_path), "-o", options, code=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and ("commit" in lines[0] or "unknown mount option" in lines[0])


def test_mount_options_reach_the_mount():
    from daxfs.cli.mount import parse_mount_options

    assert parse_mount_options("commit=sync,commit_interval=0.5") == {
        "commit": "sync",
        "commit_interval": 0.5,
    }
    assert parse_mount_options(None) == {}
