"""`daxfs mount --io-uring`: the same server, its requests through FUSE over
io_uring (fuseuring.py), checked with the tools and state machines of
test_fuse.py, and the rings seen to carry the requests.

The clients tests run over /dev/fuse too (one serving thread), which met
the same stale nodes.

The kernel's switch (/sys/module/fuse/parameters/enable_uring) is the
machine's: the tests turn it on while any of them runs, in any test process,
and the last to finish puts it back as it was (shared_io_uring)."""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
import random
import signal
import subprocess
import time

import pytest
from typer.testing import CliRunner

import daxfs
import test_fuse
from conftest import is_mounted, needs_fuse, started_together
from daxfs import fuseuring
from daxfs.cli import app
from test_fuse import mountpoint, start  # noqa: F401, F811  (fixtures)

STATE = "/tmp/daxfs-tests-io-uring.json"  # who has the switch on, and what it was before


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def shared_io_uring():
    """FUSE over io_uring on while any test process is inside this block."""
    with open(STATE + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(STATE) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {"holders": [], "was": None}
        alive = [p for p in state["holders"] if _alive(p)]
        if not state["holders"]:  # (if only killed runs held it, what they found stands)
            state["was"] = fuseuring.enabled()
        if not alive and not fuseuring.enabled():
            fuseuring._set_knob("Y")
        state["holders"] = [*alive, os.getpid()]
        with open(STATE, "w") as f:
            json.dump(state, f)
    try:
        yield
    finally:
        with open(STATE + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(STATE) as f:
                state = json.load(f)
            state["holders"] = [p for p in state["holders"] if p != os.getpid() and _alive(p)]
            if not state["holders"] and not state["was"]:
                fuseuring._set_knob("N")
            with open(STATE, "w") as f:
                json.dump(state, f)


@pytest.fixture
def io_uring():
    if os.geteuid() != 0 or not os.path.exists(fuseuring.ENABLE_KNOB):
        pytest.skip("needs root and a kernel with FUSE over io_uring (Linux 6.14 or later)")
    with shared_io_uring():
        yield


@pytest.fixture
def umnt(io_uring, start) -> test_fuse.Mount:  # noqa: F811
    return start("--io-uring")


@pytest.fixture(params=["io_uring", "dev_fuse"])
def either(request, start) -> test_fuse.Mount:  # noqa: F811
    """A mount served over io_uring (a thread per CPU) or /dev/fuse (one)."""
    return request.getfixturevalue("umnt") if request.param == "io_uring" else start()


def threads(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of a process: (the CPUs it may run on, its voluntary
    context switches: one per wait that blocked)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        cpus = fields["Cpus_allowed_list"].strip()
        out[int(tid)] = (cpus, int(fields["voluntary_ctxt_switches"]))
    return out


@needs_fuse
def test_each_cpu_queue_answers_the_requests_made_on_it(umnt):
    """One serving thread per CPU, pinned to it, and the lookups a client
    makes on one CPU wake that CPU's thread, not the /dev/fuse reader."""
    ncpu = len(fuseuring.queue_ids())
    before = threads(umnt.proc.pid)
    pinned = {tid for tid, (cpus, _n) in before.items() if cpus.isdigit()}
    assert sorted(before[tid][0] for tid in pinned) == [str(q) for q in range(ncpu)]
    lookups = 400
    for cpu in range(ncpu):
        os.sched_setaffinity(0, {cpu})
        try:
            for _ in range(lookups):
                assert not os.path.exists(umnt / "no-such-name")  # (not cached: a LOOKUP each)
        finally:
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        after = threads(umnt.proc.pid)
        woke = {tid: after[tid][1] - before[tid][1] for tid in before if tid in after}
        queue = next(tid for tid in pinned if after[tid][0] == str(cpu))
        # Nearly one wait a lookup: a request that comes in before the thread
        # waits again is answered without one (a run gave 399 of 400).
        assert woke[queue] >= lookups * 9 // 10, (cpu, woke)
        assert woke[umnt.proc.pid] < lookups // 4, woke  # the main thread: /dev/fuse
        before = after


# A client of the tests below: in its own directory of the mount, files made
# whole, rewritten, replaced (written beside and renamed over, as editors
# and atomic writers do), appended to and unlinked, and subdirectories
# made and removed; the other clients' files read by name and through
# listings of their directories.  Every byte a file f<n> of directory c<d>
# holds is its tag (or a read saw another byte: "bad" and the name).  It
# prints the names it left and their lengths (a directory's as -1).  One
# started in the directory of a client killed before it takes up what that
# one left, as an editor cleans up after a crash: the beside-files go, and
# subdirectories killed half made or half removed.
_CLIENT = r"""
import json, os, random, sys
root, me, clients, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.sched_setaffinity(0, {me % os.cpu_count()})
rng, names = random.Random(sys.argv[5]), 40
def tag(d, n):
    return (d * names + n) % 250 + 1
def check(d, name, path):
    try:
        with open(path, "rb") as f:
            got = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return  # (gone, or a name the owner since gave to a directory)
    n = int(name[1:])
    if set(got) - {tag(d, n)}:
        print("bad", d, name, len(got), sorted(set(got))[:4], flush=True)
mine = os.path.join(root, f"c{me}")
os.makedirs(mine, exist_ok=True)
left, subdirs = {}, set()
for entry in os.scandir(mine):
    n = int(entry.name[1:].removesuffix(".tmp"))
    if entry.name.endswith(".tmp"):
        os.unlink(entry.path)
    elif entry.name.startswith("f"):
        check(me, entry.name, entry.path)
        left[n] = entry.stat().st_size
    elif os.listdir(entry.path):
        check(me + clients, "f0", os.path.join(entry.path, "f0"))
        subdirs.add(n)
    else:
        os.rmdir(entry.path)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(steps):
    n, op = rng.randrange(names), rng.random()
    path = os.path.join(mine, f"f{n}")
    size = rng.choice([1, 4096, 9000, 70_000])
    if op < 0.2:
        with open(path, "wb") as f:
            f.write(bytes([tag(me, n)]) * size)
        left[n] = size
    elif op < 0.32:
        with open(path + ".tmp", "wb") as f:
            f.write(bytes([tag(me, n)]) * size)
        os.replace(path + ".tmp", path)
        left[n] = size
    elif op < 0.4 and n in left:
        with open(path, "ab") as f:
            f.write(bytes([tag(me, n)]) * 100)
        left[n] += 100
    elif op < 0.52 and n in left:
        os.unlink(path)
        del left[n]
    elif op < 0.6:
        sub = os.path.join(mine, f"s{n}")
        if n in subdirs:
            os.unlink(os.path.join(sub, "f0"))
            os.rmdir(sub)
            subdirs.discard(n)
        else:
            os.mkdir(sub)
            with open(os.path.join(sub, "f0"), "wb") as f:
                f.write(bytes([tag(me + clients, 0)]) * size)
            subdirs.add(n)
    elif op < 0.8:
        d = rng.randrange(clients)
        check(d, f"f{n}", os.path.join(root, f"c{d}", f"f{n}"))
    else:
        d = rng.randrange(clients)
        for entry in os.scandir(os.path.join(root, f"c{d}")):
            if entry.name.startswith("f") and not entry.name.endswith(".tmp"):
                check(d, entry.name, entry.path)
            elif entry.name.startswith("s"):
                check(d + clients, "f0", os.path.join(entry.path, "f0"))
out = {f"f{n}": size for n, size in left.items()}
out.update({f"s{n}": -1 for n in subdirs})
print(json.dumps(out), flush=True)
"""


@needs_fuse
def test_clients_on_every_cpu_at_once_each_find_what_they_left(either, pool_path):
    """Four client processes, each pinned to a CPU (so that every queue's
    thread serves at once, on one mount of the pool), make, rewrite,
    replace, append to and unlink files and make and remove subdirectories
    of their own directories, and read each other's by name and by
    listing: no read sees a byte its file was never given, each directory
    holds what its client left, byte for byte, and after the unmount the
    checker finds the pool clean.  (Threads of one mount editing the
    allocator together once lost blocks: test_fs_api's thread tests; a
    node the kernel still held for a removed file once named the new file
    that took its number, whose reads then met the old file's pages:
    fuse.Tracker.)"""
    clients, steps = 4, 600
    argvs = [[str(either.path), str(c), str(clients), str(steps), str(c)] for c in range(clients)]
    kids = started_together(_CLIENT, argvs)
    _each_finds_what_it_left(either, kids)
    assert either.stop() == 0
    assert daxfs.check(pool_path).ok


def _each_finds_what_it_left(mnt, kids) -> None:
    """Client ``c`` of ``kids`` ran to its end: no read of any saw a byte
    its file was never given, and directory c<c> holds what it left."""
    outputs = [kid.communicate(timeout=300)[0].splitlines() for kid in kids]
    assert all(kid.returncode == 0 for kid in kids), outputs
    for c, lines in enumerate(outputs):
        assert not [line for line in lines if line.startswith("bad")], (c, lines[:5])
        left = json.loads(lines[-1])
        d = mnt / f"c{c}"
        assert sorted(os.listdir(d)) == sorted(left)
        for name, size in left.items():
            n = int(name[1:])
            if size < 0:
                assert os.listdir(d / name) == ["f0"]
            else:
                assert (d / name).read_bytes() == bytes([(c * 40 + n) % 250 + 1]) * size


@needs_fuse
def test_clients_killed_mid_call_leave_the_others_and_the_pool_whole(either, pool_path):
    """The clients of the test above, killed (SIGKILL) at random moments,
    mid-call, and others started in their place, which take up what they
    left: the server answers on, no read sees a byte its file was never
    given, each directory holds what its last client left, and after the
    unmount the checker finds the pool clean (a killed client's open files
    are released by the kernel, its half-done calls done or not)."""
    clients, rng = 4, random.Random(54)
    root = str(either.path)

    def started(c: int, steps: int, seed: str) -> subprocess.Popen:
        return started_together(_CLIENT, [[root, str(c), str(clients), str(steps), seed]])[0]

    for c in range(clients):  # (each reads the others' from its start)
        (either / f"c{c}").mkdir()
    kids = [started(c, 10**6, f"{c}") for c in range(clients)]
    for kill in range(12):
        time.sleep(rng.uniform(0.05, 0.4))
        c = rng.randrange(clients)
        kids[c].kill()
        out = kids[c].communicate(timeout=60)[0]
        assert "bad" not in out and kids[c].returncode == -signal.SIGKILL, (c, out[-500:])
        kids[c] = started(c, 10**6, f"{c}.{kill}")
    for c in range(clients):
        kids[c].kill()
        out = kids[c].communicate(timeout=60)[0]
        assert "bad" not in out, (c, out[-500:])
    _each_finds_what_it_left(either, [started(c, 200, f"{c}.last") for c in range(clients)])
    assert either.stop() == 0
    assert daxfs.check(pool_path).ok


def _reused(check):
    """A test of test_fuse.py run on an io_uring mount."""

    def run(umnt, request):
        names = [n for n in inspect.signature(check).parameters if n != "mnt"]
        check(umnt, **{n: request.getfixturevalue(n) for n in names})

    run.__name__ = check.__name__
    return run


REUSED = [
    test_fuse.test_ls_l_shows_files_dirs_links_and_daxfs_inode_numbers,
    test_fuse.test_cp_in_and_out_multi_mib_byte_for_byte,
    test_fuse.test_cat_and_find_walk_a_tree,
    test_fuse.test_dd_with_block_size_seek_and_notrunc,
    test_fuse.test_mkdir_mv_ln_rm_rmdir,
    test_fuse.test_python_open_read_write_seek_truncate_times_modes,
    test_fuse.test_cp_a_rsync_a_and_tar_xp_keep_what_they_keep_on_tmpfs,
    test_fuse.test_open_unlinked_file_keeps_working_and_is_freed,
    test_fuse.test_errors_reach_the_tools_with_their_errno,
    test_fuse.test_mount_behaves_like_a_real_directory,
    test_fuse.test_changes_through_the_python_api_show_at_once,
    test_fuse.test_what_the_kernel_cached_is_dropped_when_another_process_changes_it,
    test_fuse.test_holes_are_found_by_seek_data_and_seek_hole_and_dirs_fsync,
]


@needs_fuse
@pytest.mark.parametrize("check", REUSED, ids=[c.__name__.removeprefix("test_") for c in REUSED])
def test_over_io_uring(check, umnt, request):
    _reused(check)(umnt, request)


@needs_fuse
def test_a_stop_signal_ends_every_queue_and_leaves_a_clean_pool(umnt):
    test_fuse.test_stop_signal_unmounts_and_leaves_a_clean_pool(umnt, signal.SIGTERM)
    assert "Traceback" not in umnt.output(), umnt.output()


@needs_fuse
def test_a_killed_server_leaves_only_whole_prefixes(umnt, tmp_path):
    test_fuse.test_a_server_killed_mid_extraction_leaves_only_whole_prefixes(umnt, tmp_path)


@needs_fuse
def test_an_idle_io_uring_server_sleeps(umnt):
    for i in range(100):
        (umnt / f"f{i}").write_bytes(b"x")
    time.sleep(0.2)
    before = test_fuse.cpu_seconds(umnt.proc.pid)
    time.sleep(1.0)
    assert test_fuse.cpu_seconds(umnt.proc.pid) - before < 0.15


def test_io_uring_refused_with_one_line_when_the_kernel_has_it_off(
    pool_path, tmp_path, monkeypatch
):
    monkeypatch.setattr(fuseuring, "ENABLE_KNOB", str(tmp_path / "no-such-switch"))
    (tmp_path / "mnt").mkdir()
    result = CliRunner().invoke(app, ["mount", "--io-uring", pool_path, str(tmp_path / "mnt")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "FUSE over io_uring is off" in lines[0], result.output
    assert not is_mounted(tmp_path / "mnt")
