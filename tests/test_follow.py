"""Followers (follow.py): read-only mounts that take no kernel lock and
follow a writer from the pool's bytes alone, as hosts sharing a CXL device
must.  The churn test runs the writer and the followers as processes of
their own, the followers with every kernel lock call replaced by one that
kills them; every answer a follower gives is checked against the tree at
the commit it says it answered from."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import daxfs
from conftest import needs_fuse, new_pool, put, script_child
from daxfs import follow
from daxfs import fs as fs_module
from test_multiprocess import (
    PAUSED_BEFORE_PUBLISH,
    listing_waits_for_the_publish,
    make_d_old_and_e,
)

# A process that runs this takes no flock, lockf or fcntl lock: it dies
# with status 17 if it asks for one.
NO_KERNEL_LOCKS = textwrap.dedent(r"""
    import fcntl, os, sys

    def no_kernel_locks(*args, **kw):
        sys.stderr.write("a follower asked for a kernel lock\n")
        sys.stderr.flush()
        os._exit(17)

    fcntl.flock = fcntl.lockf = fcntl.fcntl = os.lockf = no_kernel_locks
""")

# The follower's process: calls of every kind, each logged with the
# commit its answer is from.
FOLLOWER = NO_KERNEL_LOCKS + textwrap.dedent(r"""
    import errno, hashlib, json, random, time

    import daxfs

    pool, out, stop, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    fs = daxfs.mount(pool, follow=True)
    names = ["/a", "/b", "/a/c"] + [f"{d}/f{i}" for d in ("/a", "/b", "/a/c") for i in range(8)]
    names += ["/a/l", "/b/l"]

    def err(e):
        return ["error", e.errno]

    with open(out, "w") as log:
        print("ready", flush=True)
        n, slept = 0, seed % 10 != 0
        while not os.path.exists(stop) or n < 200:
            n += 1
            if not slept and fs._seen_seq > 300:
                time.sleep(1.5)  # (the first follower falls a lap behind, once)
                slept = True
            kind = rng.choice(["listdir", "stat", "read", "readlink", "walk", "map"])
            path = rng.choice(names)
            try:
                if kind == "listdir":
                    path = rng.choice(["/", "/a", "/b", "/a/c"])
                    answer = sorted(fs.listdir(path))
                elif kind == "stat":
                    st = fs.lstat(path)
                    answer = [st.st_mode, st.st_size, st.st_ino]
                elif kind == "readlink":
                    answer = fs.readlink(path)
                elif kind == "walk":
                    path = rng.choice(["/a", "/b"])
                    answer = sorted(e.name for e in fs.scandir(path))
                elif kind == "map":
                    # The mapped bytes, now and after the writer went on: a
                    # mapping's memory is never reused under it.
                    m = fs.map(path)
                    seq = fs._seen_seq
                    first = hashlib.sha256(m.buffer).hexdigest()
                    time.sleep(rng.choice([0, 0.001, 0.01]))
                    for _ in range(20):
                        fs.listdir("/a")  # (calls: the follower catches up meanwhile)
                    later = hashlib.sha256(m.buffer).hexdigest()
                    ino, btime = m._plan.ino, m._plan.btime
                    answer = ["bytes", m.length, first, later, [ino, btime]]
                    m.close()
                    log.write(json.dumps({"seq": seq, "kind": kind, "path": path,
                                          "answer": answer}) + "\n")
                    continue
                else:
                    f = fs.open(path, "rb")
                    opened = fs._seen_seq
                    try:
                        data = f.read()
                        answer = ["bytes", len(data), hashlib.sha256(data).hexdigest()]
                    except OSError as e:
                        answer = err(e)
                    finally:
                        f.close()
                    answer.append([int(f._ino), f._ino.btime])  # (the file opened)
                    log.write(json.dumps({"seq": fs._seen_seq, "opened": opened, "kind": kind,
                                          "path": path, "answer": answer}) + "\n")
                    continue
            except OSError as e:
                answer = err(e)
            log.write(json.dumps({"seq": fs._seen_seq, "kind": kind, "path": path,
                                  "answer": answer}) + "\n")
        print(json.dumps(dict(fs.coherence)), flush=True)
""")

# The writer: churns a small tree and logs the whole tree after every call
# that may commit, with the commit it is at (one writer: the live word).
WRITER = textwrap.dedent(r"""
    import hashlib, json, os, random, stat, sys, time
    import daxfs

    pool, out, stop = sys.argv[1:4]
    steps, seed = int(sys.argv[4]), int(sys.argv[5])
    rng = random.Random(seed)
    fs = daxfs.mount(pool)
    dirs = ["/a", "/b", "/a/c"]
    files = [f"{d}/f{i}" for d in dirs for i in range(8)]

    def tree():
        t = {}
        for top, subdirs, names in fs.walk("/"):
            for name in subdirs + names:
                p = top.rstrip("/") + "/" + name
                st = fs.lstat(p)
                if stat.S_ISDIR(st.st_mode):
                    t[p] = ["dir", st.st_mode, st.st_size, st.st_ino]
                elif stat.S_ISLNK(st.st_mode):
                    t[p] = ["link", st.st_mode, st.st_size, st.st_ino, fs.readlink(p)]
                else:
                    with fs.open(p, "rb") as f:
                        data = f.read()
                    t[p] = ["file", st.st_mode, st.st_size, st.st_ino,
                            hashlib.sha256(data).hexdigest(), fs._inode(st.st_ino).btime]
        return t

    with open(out, "w") as log:
        def note():
            log.write(json.dumps({"seq": fs.journal.peek(), "tree": tree()}) + "\n")

        for d in dirs:
            fs.makedirs(d, exist_ok=True)
        note()
        print("ready", flush=True)
        sys.stdin.readline()
        for step in range(steps):
            c = rng.random()
            path = rng.choice(files)
            try:
                if c < 0.3:
                    f = fs.open(path, "wb")
                    note()
                    f.write(os.urandom(rng.choice([0, 10, 5000, 70000])))
                    note()
                    f.close()
                elif c < 0.45:
                    f = fs.open(path, "ab")
                    note()
                    f.write(os.urandom(rng.choice([1, 4096, 9000])))
                    note()
                    f.close()
                elif c < 0.6:
                    fs.rename(path, rng.choice(files))
                elif c < 0.75:
                    fs.unlink(path)
                elif c < 0.85:
                    fs.truncate(path, rng.choice([0, 100, 20000]))
                elif c < 0.92:
                    link = rng.choice(["/a/l", "/b/l"])
                    if fs.exists(link) or fs.islink(link):
                        fs.unlink(link)
                    else:
                        fs.symlink(rng.choice(files), link)
                else:
                    d = rng.choice(["/a/c", "/b"])
                    if not fs.exists(d):
                        fs.mkdir(d)
                    elif not fs.listdir(d):
                        fs.rmdir(d)
            except OSError:
                pass
            note()
            time.sleep(0.0002)  # (yield the core: on a loaded machine the
            # followers would otherwise see only a few of the steps)
        fs.close()  # (its last commits too: the tree as they leave it)
        fs = daxfs.mount(pool, readonly=True)
        note()
        open(stop, "w").close()
    fs.close()
""")


def children_of(tree: dict, d: str) -> list[str] | None:
    if d != "/" and (d not in tree or tree[d][0] != "dir"):
        return None
    prefix = d.rstrip("/") + "/"
    return sorted(
        p[len(prefix) :] for p in tree if p.startswith(prefix) and "/" not in p[len(prefix) :]
    )


def expected(tree: dict, entry: dict):
    """What a call logged by the follower should have answered at the
    commit whose tree is ``tree``."""
    kind, path = entry["kind"], entry["path"]
    if kind in ("listdir", "walk"):
        names = children_of(tree, path)
        return ["error", errno.ENOENT] if names is None else names
    node = tree.get(path)
    if kind == "stat":
        return ["error", errno.ENOENT] if node is None else [node[1], node[2], node[3]]
    if kind == "readlink":
        if node is None:
            return ["error", errno.ENOENT]
        return node[4] if node[0] == "link" else ["error", errno.EINVAL]
    raise AssertionError(kind)


def named_states(trees: dict) -> dict:
    """(inode, birth time) -> [(commit, size, sha256)] of each commit that
    names the file, in order."""
    out: dict = {}
    for seq in sorted(trees):
        for node in trees[seq].values():
            if node[0] == "file":
                out.setdefault((node[3], node[5]), []).append((seq, node[2], node[4]))
    return out


def check_entry(trees: dict, entry: dict, named: dict) -> None:
    seq, kind, answer = entry["seq"], entry["kind"], entry["answer"]
    tree = trees[seq]
    if kind == "map" and answer[0] == "bytes":
        assert answer[2] == answer[3], (
            f"at commit {seq}: the bytes under a mapping of {entry['path']} changed "
            "(the writer reused, moved or truncated a mapped file's memory)"
        )
        check_entry(trees, {**entry, "kind": "read", "answer": answer[:3] + answer[4:]}, named)
    elif kind == "map":  # the map failed: as an open would
        check_entry(trees, {**entry, "kind": "read"}, named)
    elif kind == "read" and len(answer) == 2:  # the open failed
        node = tree.get(entry["path"])
        if node is not None and node[0] == "link":
            node = tree.get(node[4])
        want = errno.ENOENT if node is None else errno.EISDIR if node[0] == "dir" else None
        assert answer == ["error", want], f"at commit {seq}: open {entry['path']} gave {answer}"
    elif kind == "read":
        ino, btime = answer[-1]  # (a number, and a birth time: the file, not a later one)
        holders = [p for p, n in tree.items() if n[0] == "file" and n[3] == ino and n[5] == btime]
        if answer[0] == "bytes" and holders:
            assert any(tree[p][2] == answer[1] and tree[p][4] == answer[2] for p in holders), (
                f"at commit {seq}: read {entry['path']} (inode {ino}) gave bytes no file held"
            )
        elif answer[0] == "bytes":
            # Unlinked while held open (the lease kept it, an orphan): its
            # bytes as its last name left them.
            last = [state for state in named[ino, btime] if state[0] <= seq][-1]
            assert list(last[1:]) == answer[1:3], (
                f"at commit {seq}: read of the unlinked {entry['path']} (inode {ino}) gave "
                "bytes it never held"
            )
        else:  # the file went before the lease held it: ESTALE, never another file's bytes
            assert answer[1] == errno.ESTALE and not holders, entry
    else:
        want = expected(tree, entry)
        assert answer == want, f"at commit {seq}: {kind} {entry['path']} gave {answer}, not {want}"


def read_log(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("seed", [1, 2])
def test_followers_take_no_kernel_lock_and_every_answer_is_a_committed_state(shm_dir, seed):
    """A writer churns (creates, writes, appends, renames, unlinks,
    truncates, symlinks, mkdir and rmdir) while two followers, in
    processes whose kernel lock calls kill them, list, stat, readlink and
    read.  Every answer must equal the tree at the commit the follower
    says it answered from, those commits never go back, and a read through
    a file the writer unlinked gives the bytes its last name left (its
    lease kept it) or fails with ESTALE (the writer freed it before the
    lease held it), never bytes another file now holds.  The small pool's journal is lapped many
    times, so followers also catch up by rebuilding."""
    pool = new_pool(shm_dir, size=16 << 20)  # (a 256 KiB journal, lapped often)
    model, stop = os.path.join(shm_dir, "model"), os.path.join(shm_dir, "stop")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, pool, model, stop, "1500", str(seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert writer.stdout.readline().strip() == "ready"
    logs = [os.path.join(shm_dir, f"follower{i}") for i in range(2)]
    followers = [
        subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, pool, log, stop, str(seed * 10 + i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i, log in enumerate(logs)
    ]
    for f in followers:
        assert f.stdout.readline().strip() == "ready"
    writer.stdin.write("go\n")
    writer.stdin.flush()
    assert writer.wait(timeout=300) == 0
    counters = []
    for f in followers:
        out, err = f.communicate(timeout=300)
        assert f.returncode == 0, err
        counters.append(json.loads(out.strip().splitlines()[-1]))
    trees = {}
    for line in read_log(model):
        trees[line["seq"]] = line["tree"]  # (a later note of one commit: the same tree)
    named = named_states(trees)
    # The commits the writer did not note: each frees an orphan its
    # followers no longer hold, at the start of a call (so before the
    # call's own commit), which changes no name: the tree noted before.
    noted = sorted(trees)
    for seq in range(noted[0], noted[-1]):
        if seq not in trees:
            trees[seq] = trees[seq - 1]
    total, unnoted, named_seqs, mapped = 0, 0, set(noted), 0
    for log in logs:
        entries = read_log(log)
        seqs = [e["seq"] for e in entries]
        assert seqs == sorted(seqs), "a follower went back to an older commit"
        assert len(set(seqs)) > 50, "the follower never saw the writer move"
        for e in entries:
            assert noted[0] <= e["seq"] <= noted[-1], e
            check_entry(trees, e, named)
            unnoted += e["seq"] not in named_seqs
            mapped += e["kind"] == "map" and e["answer"][0] == "bytes"
        total += len(entries)
    assert total > 1000 and unnoted < total // 20, (total, unnoted)
    assert mapped > 20, mapped
    assert sum(c.get("full_rebuilds", 0) for c in counters) >= 1, counters


def test_a_follower_reads_no_home_of_a_commit_before_it_is_published(pool_path):
    """A writer stores its homes before it publishes the live word.  A
    follower that must load a directory meanwhile (here /e, never cached)
    finds the commit's record at the journal's next position, so it waits
    for the publish rather than answer from homes half-way through."""
    make_d_old_and_e(pool_path)
    with daxfs.mount(pool_path, follow=True) as fo:
        listing_waits_for_the_publish(fo, pool_path)
        assert fo.coherence["retries"] > 0


def test_a_commit_that_never_publishes_fails_the_call_clearly(pool_path, monkeypatch):
    """A writer that dies between its homes and its publish leaves a whole
    record nobody published (the next writable mount finishes it).  A
    follower that needs what it changed says so with EAGAIN after
    RETRY_SECONDS rather than answer from its half-stored homes; what it
    has cached it still answers."""
    monkeypatch.setattr(follow, "RETRY_SECONDS", 0.3)
    make_d_old_and_e(pool_path)
    with daxfs.mount(pool_path, follow=True) as fo:
        assert fo.listdir("/d") == ["old"]
        with script_child(PAUSED_BEFORE_PUBLISH, pool_path) as child:
            assert child.stdout.readline().strip() == "stored"
            with pytest.raises(BlockingIOError) as e:
                fo.listdir("/e")
            assert "changed under every attempt" in str(e.value)
            assert fo.listdir("/d") == ["old"]  # (cached, at the published commit)
            child.kill()
            child.wait()
        with daxfs.mount(pool_path):
            pass  # finishes the dead commit
        assert fo.listdir("/e") == ["new"]
        assert fo.listdir("/d") == []


def test_a_follower_refuses_writes_maps_page_cache_pools_and_old_formats(pool_path, tmp_path):
    with daxfs.mount(pool_path) as fs:
        put(fs, "/f", b"abc")
    with daxfs.mount(pool_path, follow=True) as fo:
        for call in (
            lambda: fo.open("/f", "wb"),
            lambda: fo.mkdir("/x"),
            lambda: fo.unlink("/f"),
            lambda: fo.rename("/f", "/g"),
            lambda: fo.truncate("/f", 0),
            lambda: fo.write_bytes("/f", b"x"),
            lambda: fo.write_bytes("/new", b"x"),
        ):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EROFS
        assert fo.read_bytes("/f") == b"abc"  # (through an open file, leased)
        assert not fo._open
        with pytest.raises(OSError) as e:
            fo.map("/f", "r+")
        assert e.value.errno == errno.EROFS
        assert fo.info()["follower"] is True
        assert fo.statvfs().f_flag & os.ST_RDONLY
    disk = str(tmp_path / "pool")
    daxfs.mkfs(disk, 64 << 20)
    with pytest.raises(OSError) as e:
        daxfs.mount(disk, follow=True)
    assert e.value.errno == errno.EOPNOTSUPP and "page cache" in str(e.value)
    from test_format_version import set_versions

    set_versions(pool_path, 6, 6)  # (a pool a version 6 writer, blind to leases, may hold)
    with pytest.raises(OSError) as e:
        daxfs.mount(pool_path, follow=True)
    assert e.value.errno == errno.EOPNOTSUPP and "format version 6" in str(e.value)
    with daxfs.mount(pool_path):
        pass  # (upgrades it)
    daxfs.mount(pool_path, follow=True).close()


def test_a_follower_counts_space_as_the_writer_does(pool_path):
    with daxfs.mount(pool_path) as fs, daxfs.mount(pool_path, follow=True) as fo:
        for i in range(40):
            put(fs, f"/f{i}", os.urandom(i * 7000))
        fs.unlink("/f3")
        mine, theirs = fs.statvfs(), fo.statvfs()
        assert dataclasses.replace(theirs, f_flag=0) == mine
        assert theirs.f_bfree < theirs.f_blocks and theirs.free_chunks < theirs.total_chunks


def test_a_follower_lapped_by_the_log_rebuilds_and_answers_the_new_tree(pool_path):
    """While a follower does nothing, the writer writes more than the
    journal holds: the records the follower needs are gone, so it drops its
    caches and answers the new tree (no stale name, no stale bytes)."""
    with daxfs.mount(pool_path) as fs, daxfs.mount(pool_path, follow=True) as fo:
        put(fs, "/keep", b"old")
        assert fo.listdir("/") == ["keep"]
        with fo.open("/keep", "rb") as f:
            assert f.read() == b"old"
        start = fo.coherence["full_rebuilds"]
        n = 0
        while fs.journal._header_seq() <= fo._seen_seq:  # (until a checkpoint retires them)
            put(fs, f"/n{n}", b"y" * 10)
            n += 1
        put(fs, "/keep", b"new!")
        assert fo.coherence["full_rebuilds"] == start
        assert sorted(fo.listdir("/")) == sorted(["keep"] + [f"n{i}" for i in range(n)])
        assert fo.coherence["full_rebuilds"] == start + 1
        with fo.open("/keep", "rb") as f:
            assert f.read() == b"new!"


def test_a_file_a_follower_holds_open_outlives_its_unlink(pool_path):
    """The follower's lease keeps an open file as the writer keeps one open
    in another of its processes: unlinked, it is an orphan the follower
    still reads (its blocks not reused by a file written meanwhile); once
    the follower closes it, the writer's next call frees it."""
    with daxfs.mount(pool_path) as fs, daxfs.mount(pool_path, follow=True) as fo:
        put(fs, "/keep", b"")  # (the root's first block, kept while it exists)
        empty = fs.statvfs().f_bfree
        put(fs, "/f", b"0123456789" * 100_000)
        f = fo.open("/f", "rb")
        assert f.read(4) == b"0123"
        with fs.open("/f", "ab") as g:
            g.write(b"abc")
        fs.rename("/f", "/g")
        f.seek(999_998)
        assert f.read() == b"89abc"  # (the file, grown, under its new name)
        fs.unlink("/g")
        put(fs, "/h", b"\xee" * 1_000_003)
        f.seek(0)
        assert f.read() == b"0123456789" * 100_000 + b"abc"
        h_blocks = fs.stat("/h").st_blocks // 8
        assert fs.statvfs().f_bfree <= empty - h_blocks - 245  # (both files' blocks in use)
        f.close()
        time.sleep(fs_module.FOLLOWER_LOOK_SECONDS)
        fs.stat("/h")  # (a call: the writer looks at the table and frees the orphan)
        fs.stat("/h")
        assert fs.statvfs().f_bfree == empty - h_blocks


HOLDER = textwrap.dedent(r"""
    import sys
    import daxfs

    fs = daxfs.mount(sys.argv[1], follow=True, lease_seconds=float(sys.argv[2]))
    if sys.argv[3] == "map":
        m = fs.map("/f")
        print("open", flush=True)
        sys.stdin.readline()
        print("stale" if m.stale else "fresh", flush=True)
        sys.exit(0)
    f = fs.open("/f", "rb")
    print("open", flush=True)
    sys.stdin.readline()
    f.seek(0)
    try:
        data = f.read()
        print("read", len(data), flush=True)
    except OSError as e:
        print("error", e.errno, e.strerror, flush=True)
""")


def freed_within(fs, free_before: int, seconds: float) -> float | None:
    """Call the writer until its free blocks are back to ``free_before``:
    how long that took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        fs.stat("/")
        if fs.statvfs().f_bfree >= free_before:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


@pytest.mark.parametrize("how", ["open", "map"])
def test_a_killed_followers_lease_lapses_and_the_file_it_held_is_freed(pool_path, how):
    """A follower process holds a file open, or mapped; the writer unlinks
    it (an orphan, held); the follower is killed.  Its heartbeat stops, and once
    its lease period has passed by the writer's clock the writer clears
    its slot and frees the file; its space is taken again."""
    with daxfs.mount(pool_path) as fs:
        put(fs, "/keep", b"")  # (the root's first block, kept while it exists)
        free_before = fs.statvfs().f_bfree
        put(fs, "/f", os.urandom(4 << 20))
        with script_child(HOLDER, pool_path, "0.5", how) as child:
            assert child.stdout.readline().strip() == "open"
            fs.unlink("/f")
            assert freed_within(fs, free_before, 0.3) is None  # held
            t_kill = time.monotonic()
            child.kill()
            child.wait()
            took = freed_within(fs, free_before, 10)
            assert took is not None, "the dead follower's file was never freed"
            assert time.monotonic() - t_kill >= 0.5 - 0.05
        put(fs, "/again", os.urandom(4 << 20))  # (the space, taken again)
        assert fs.statvfs().f_bfree < free_before


@pytest.mark.parametrize("how", ["open", "map"])
def test_a_follower_whose_lease_lapsed_reads_estale(pool_path, how):
    """A follower stopped (SIGSTOP) past its lease period: the writer frees
    the file it held and writes another over its space; resumed, the
    follower's read fails with ESTALE, naming the lapsed lease, rather than
    return the new file's bytes; its mapping says it is stale."""
    with daxfs.mount(pool_path) as fs:
        put(fs, "/keep", b"")  # (the root's first block, kept while it exists)
        free_before = fs.statvfs().f_bfree
        put(fs, "/f", b"\x01" * (1 << 20))
        with script_child(HOLDER, pool_path, "0.3", how) as child:
            assert child.stdout.readline().strip() == "open"
            os.kill(child.pid, signal.SIGSTOP)
            try:
                fs.unlink("/f")
                assert freed_within(fs, free_before, 10) is not None
                put(fs, "/other", b"\xee" * (1 << 20))
            finally:
                os.kill(child.pid, signal.SIGCONT)
            answer = answer_once_resumed(child)
            if how == "map":
                assert answer == ["stale"]
            else:
                assert_estale_naming_the_lease(answer)
            assert child.wait(timeout=30) == 0


def answer_once_resumed(child) -> list[str]:
    """What HOLDER says of its file once told to go on: its words, split."""
    child.stdin.write("go\n")
    child.stdin.flush()
    return child.stdout.readline().split(maxsplit=2)


def assert_estale_naming_the_lease(answer: list[str]) -> None:
    assert answer[:2] == ["error", str(errno.ESTALE)], answer
    assert "lease" in answer[2]


def test_a_lapsed_lease_the_writer_disregards_is_cleared_then_and_there(pool_path):
    """The writer may find a follower's lease lapsed at an unlink, before
    its periodic look (``_look_at_followers``) came round: it frees the
    file at once, and must clear the slot then and there.  Else the
    follower, resumed, finds its slot its own and the file gone, and
    blames the writer rather than its lapsed lease."""
    with daxfs.mount(pool_path) as fs:
        put(fs, "/keep", b"")
        free_before = fs.statvfs().f_bfree
        put(fs, "/f", b"\x01" * (1 << 20))
        with script_child(HOLDER, pool_path, "0.3", "open") as child:
            assert child.stdout.readline().strip() == "open"
            os.kill(child.pid, signal.SIGSTOP)
            try:
                fs._followers_due = float("inf")  # (no periodic look from here on)
                table = fs.followers
                (i,) = table.live()
                ident, beat, _seen = table._beats[i]
                table._beats[i] = (ident, beat, time.monotonic() - 10)  # (lapsed, unseen)
                fs.unlink("/f")
                assert fs.statvfs().f_bfree == free_before  # (freed at once)
                assert not table.occupied()
                put(fs, "/other", b"\xee" * (1 << 20))
            finally:
                os.kill(child.pid, signal.SIGCONT)
            assert_estale_naming_the_lease(answer_once_resumed(child))
            assert child.wait(timeout=30) == 0


UNLINK_AND_DIE = textwrap.dedent(r"""
    import os, sys
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    fs.unlink("/f")
    print("unlinked", flush=True)
    os.kill(os.getpid(), 9)
""")


def test_a_writer_killed_after_unlinking_a_held_file_leaves_it_to_the_next(pool_path):
    """The writer unlinks a file a follower holds open (an orphan) and is
    killed.  The next writer's mount reclaims orphans, but not this one
    while the follower's lease stands: the follower reads it whole; once
    it closes it, the new writer frees it."""
    with daxfs.mount(pool_path) as fs:
        put(fs, "/keep", b"")
        free_before = fs.statvfs().f_bfree
        put(fs, "/f", b"\x5a" * (2 << 20))
    with daxfs.mount(pool_path, follow=True, lease_seconds=0.5) as fo:
        f = fo.open("/f", "rb")
        with script_child(UNLINK_AND_DIE, pool_path) as child:
            assert child.stdout.readline().strip() == "unlinked"
            assert child.wait(timeout=30) == -signal.SIGKILL
        with daxfs.mount(pool_path) as fs:  # (recovery, then orphans reclaimed)
            assert fs.listdir("/") == ["keep"]
            assert freed_within(fs, free_before, 1.0) is None  # still held, past the lease period
            assert f.read() == b"\x5a" * (2 << 20)
            f.close()
            assert freed_within(fs, free_before, 5) is not None


def test_a_follower_holds_at_most_so_many_files_and_the_table_so_many_followers(pool_path):
    from daxfs.layout import FOLLOWER_ENTRIES, FOLLOWER_SLOTS

    with daxfs.mount(pool_path) as fs:
        for i in range(FOLLOWER_ENTRIES + 1):
            put(fs, f"/f{i}", b"x")
    fo = daxfs.mount(pool_path, follow=True)
    with daxfs.mount(pool_path) as fs:
        assert fs.info()["followers"] == 1
    from typer.testing import CliRunner

    from daxfs.cli import app

    shown = CliRunner().invoke(app, ["info", pool_path])
    assert shown.exit_code == 0 and "1 holding leases" in shown.output, shown.output
    files = [fo.open(f"/f{i}", "rb") for i in range(FOLLOWER_ENTRIES)]
    with pytest.raises(OSError) as e:
        fo.open(f"/f{FOLLOWER_ENTRIES}", "rb")
    assert e.value.errno == errno.ENOSPC
    files.pop().close()
    fo.open(f"/f{FOLLOWER_ENTRIES}", "rb").close()  # (an entry freed is taken again)
    others = [daxfs.mount(pool_path, follow=True) for _ in range(FOLLOWER_SLOTS - 1)]
    with pytest.raises(OSError) as e:
        daxfs.mount(pool_path, follow=True)
    assert e.value.errno == errno.EUSERS
    for m in [fo, *others]:
        m.close()
    daxfs.mount(pool_path, follow=True).close()  # (slots given back at unmount)


LOCK_FREE_CLI = NO_KERNEL_LOCKS + "from daxfs.cli import main\nmain()\n"


@needs_fuse
def test_a_follower_mount_shows_the_writers_commits_to_ls_and_cat(pool_path, tmp_path, monkeypatch):
    """`daxfs mount --follow`, its server in a process whose kernel lock
    calls kill it, while this process writes the pool: real ls, cat and
    stat see the writer's files, renames and rewrites; writes are refused
    by the kernel (a read-only mount)."""
    import test_fuse

    monkeypatch.setattr(test_fuse, "DAXFS", [sys.executable, "-c", LOCK_FREE_CLI])
    where = tmp_path / "mnt"
    where.mkdir()
    with daxfs.mount(pool_path) as fs:
        fs.mkdir("/d")
        put(fs, "/d/a", b"one\n")
        m = test_fuse.Mount(pool_path, where, "--follow", "--lease-seconds", "2")
        try:
            assert test_fuse.run("cat", m / "d/a").stdout == b"one\n"
            for i in range(20):
                put(fs, f"/d/f{i}", b"%d\n" % i)
            fs.rename("/d/a", "/d/b")
            put(fs, "/d/b", b"two, longer\n")
            want = sorted(["b"] + [f"f{i}" for i in range(20)])
            assert test_fuse.wait_until(lambda: sorted(os.listdir(m / "d")) == want, 5)
            assert test_fuse.run("cat", m / "d/b", m / "d/f7").stdout == b"two, longer\n7\n"
            assert os.stat(m / "d/b").st_size == len(b"two, longer\n")
            # (The kernel drops the old name when the server's watcher tells
            # it, soon after the listing shows the new one.)
            assert test_fuse.wait_until(lambda: not os.path.exists(m / "d/a"), 5)
            touch = test_fuse.run("touch", m / "d/x", ok=False)
            assert touch.returncode != 0 and b"Read-only file system" in touch.stderr
            assert m.stop() == 0
        finally:
            m.close()
    assert "kernel lock" not in m.output(), m.output()


def test_a_follower_maps_a_file_the_writer_may_not_free_truncate_or_move(pool_path):
    """A follower's mapping (zero-copy, numpy over it) is held by its lease
    as a process's mapping is by its pins: truncating into it is EBUSY, an
    unlink leaves an orphan whose bytes a file written meanwhile does not
    take, writes elsewhere do not move it; unmapped, the orphan is freed."""
    import numpy as np

    data = os.urandom(8 << 20)
    with daxfs.mount(pool_path) as fs, daxfs.mount(pool_path, follow=True) as fo:
        put(fs, "/keep", b"")
        empty = fs.statvfs().f_bfree
        put(fs, "/big", data)
        m = fo.map("/big")
        a = m.ndarray()
        assert a.tobytes() == data and not m.stale
        with pytest.raises(OSError) as e:
            fs.truncate("/big", 100)
        assert e.value.errno == errno.EBUSY
        fs.unlink("/big")
        put(fs, "/other", b"\xee" * (8 << 20))
        assert a.tobytes() == data and not m.stale
        with pytest.raises(OSError) as e:
            fo.map("/big")
        assert e.value.errno == errno.ENOENT
        assert np.shares_memory(a, np.frombuffer(m.buffer, dtype=np.uint8))
        del a
        m.close()
        time.sleep(fs_module.FOLLOWER_LOOK_SECONDS)
        fs.stat("/")
        fs.stat("/")
        assert fs.statvfs().f_bfree == empty - fs.stat("/other").st_blocks // 8
        with pytest.raises(OSError) as e:
            fo.map("/other", "r+")
        assert e.value.errno == errno.EROFS


PAUSED_BEFORE_COMMIT = textwrap.dedent(r"""
    import sys
    import daxfs

    fs = daxfs.mount(sys.argv[1])
    commit = fs.journal.commit

    def paused(*args, **kw):  # checked for followers' maps, not yet committed
        print("checked", flush=True)
        sys.stdin.readline()
        fs.journal.commit = commit
        return commit(*args, **kw)

    fs.journal.commit = paused
    fs.truncate("/big", 0)
    print("truncated", fs.statvfs().f_bfree, flush=True)
    sys.stdin.readline()
    with fs.open("/other", "wb") as f:  # (as much as the truncate freed)
        f.write(b"\xee" * (8 << 20))
    print("written", flush=True)
    sys.stdin.readline()
    fs.stat("/")  # (a call: the writer looks at the table)
    print("free", fs.statvfs().f_bfree, flush=True)
""")


def test_a_map_taken_between_the_writers_check_and_its_commit_keeps_its_bytes(pool_path):
    """The race the two checks close (followers.py): a writer has checked
    that no follower maps /big and is about to commit its truncation; a
    follower maps /big meanwhile (its own check passes: nothing is
    committed yet).  After publishing, the writer sees the follower's entry
    and holds the freed blocks back: a file it writes next does not take
    them, the mapping keeps its bytes, and they are freed once it goes."""
    data = os.urandom(8 << 20)
    with daxfs.mount(pool_path) as fs:
        put(fs, "/big", data)
    with daxfs.mount(pool_path, follow=True) as fo:
        with script_child(PAUSED_BEFORE_COMMIT, pool_path) as child:
            assert child.stdout.readline().strip() == "checked"
            m = fo.map("/big")
            child.stdin.write("go\n")
            child.stdin.flush()
            truncated, free_held = child.stdout.readline().split()
            assert truncated == "truncated"
            assert bytes(m.buffer) == data
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "written"
            assert bytes(m.buffer) == data, "the writer reused a follower's mapped blocks"
            assert m.stale  # (the file was truncated under the mapping)
            m.close()
            time.sleep(fs_module.FOLLOWER_LOOK_SECONDS)
            child.stdin.write("go\n")
            child.stdin.flush()
            free, free_after = child.stdout.readline().split()
            # /other took 2,048 blocks, and the 2,048 held back came back.
            assert abs(int(free_after) - int(free_held)) <= 1, (free_held, free_after)
            assert child.wait(timeout=30) == 0


def test_a_mapping_outliving_its_follower_mount_keeps_its_lease(pool_path):
    """Unmounting a follower gives its slot back only once its last
    mapping goes: until then the heartbeat goes on and the file stays."""
    data = os.urandom(4 << 20)
    with daxfs.mount(pool_path) as fs:
        put(fs, "/keep", b"")
        empty = fs.statvfs().f_bfree
        put(fs, "/big", data)
        fo = daxfs.mount(pool_path, follow=True, lease_seconds=0.2)
        m = fo.map("/big")
        fo.close()
        fs.unlink("/big")
        assert freed_within(fs, empty, 0.6) is None  # (three lease periods: still held)
        assert bytes(m.buffer) == data
        m.close()
        assert freed_within(fs, empty, 5) is not None
        daxfs.mount(pool_path, follow=True).close()  # (the slot is free again)


def test_a_hostile_follower_table_costs_the_writer_nothing_but_what_it_names(pool_path):
    """The follower table is input like any byte of a pool: a slot that
    asks for a 49-day lease and never beats, naming numbers past the inode
    table and a real file, holds that file one hour at most (MAX_LEASE_MS),
    and the bogus numbers are never acted on (no warning, no error)."""
    import warnings

    from daxfs import followers
    from daxfs import layout as L

    with daxfs.mount(pool_path) as fs:
        put(fs, "/f", b"held")
        put(fs, "/g", b"free to go")
        ino = fs.stat("/f").st_ino
    slot = bytearray(L.FOLLOWER_SLOT_SIZE)
    L.FOLLOWER_HEAD.pack_into(slot, 0, L.FOLLOWER_MAGIC, 0xFFFF_FFFF, 3, 1, 0)
    entries = [ino, 2**62, 2**40 | 1 << 63, 0xFFFF_FFFF, ino | 1 << 63]
    for k, e in enumerate(entries):
        slot[32 + 8 * k : 40 + 8 * k] = e.to_bytes(8, "little")
    fd = os.open(pool_path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(slot), L.FOLLOWERS_OFF)
    finally:
        os.close(fd)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with daxfs.mount(pool_path) as fs:
            with pytest.raises(OSError) as e:
                fs.truncate("/f", 0)  # (held mapped)
            assert e.value.errno == errno.EBUSY
            fs.unlink("/f")
            fs.unlink("/g")
            free = fs.statvfs().f_bfree
            time.sleep(2 * fs_module.FOLLOWER_LOOK_SECONDS)
            fs.stat("/")
            fs.stat("/")
            assert fs.statvfs().f_bfree == free  # (/f held: its lease has not lapsed)
            table = fs.followers
            (i,) = table.occupied()
            table._beats[i] = (
                *table._beats[i][:2],
                time.monotonic() - followers.MAX_LEASE_MS / 1000 - 1,
            )
            time.sleep(2 * fs_module.FOLLOWER_LOOK_SECONDS)
            fs.stat("/")  # (an hour on by the writer's clock: lapsed, cleared, freed)
            fs.stat("/")
            assert fs.statvfs().f_bfree == free + 1
            assert not table.occupied()
    assert not [w for w in warned if issubclass(w.category, RuntimeWarning)], warned


def test_pyarrow_through_fsspec_and_zarr_read_what_the_writer_wrote_through_a_follower(pool_path):
    """Real clients over a follower: pyarrow reads a Parquet file through
    daxfs's fsspec file system, zarr an array through DaxStore (its reads
    are mappings, held by the follower's lease), while the writer's own
    mount wrote them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zarr

    from daxfs.fsspec import DaxFileSystem
    from daxfs.zarr import DaxStore

    table = pa.table({"a": np.arange(50_000), "b": np.random.default_rng(1).random(50_000)})
    with daxfs.mount(pool_path) as fs, daxfs.mount(pool_path, follow=True) as fo:
        with DaxFileSystem(fs=fs).open("/t.parquet", "wb") as f:
            pq.write_table(table, f)
        z = zarr.open_array(
            DaxStore(fs, root="/z"), mode="w", shape=(1000,), chunks=(100,), dtype="f8"
        )
        z[:] = np.arange(1000.0)
        assert pq.read_table("/t.parquet", filesystem=DaxFileSystem(fs=fo)).equals(table)
        r = zarr.open_array(DaxStore(fo, root="/z", read_only=True), mode="r")
        assert (r[:] == np.arange(1000.0)).all()
        z[:100] = -1.0  # (a chunk replaced: the follower sees it at its next read)
        assert (r[:100] == -1.0).all() and (r[100:] == np.arange(100.0, 1000.0)).all()
