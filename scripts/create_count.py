"""Count what one create of a small file costs in Python steps, not time.

This machine's timings move 10 - 40% between runs, so a change that saves
3% of a create cannot be seen in `bench meta`.  Counts can: this script
makes new files the way `bench meta`'s create phase does (open "wb",
one 4 KiB write, close) on a pool in /dev/shm and prints

- with ``--trace`` (the default): the bytecodes, lines and Python calls
  of one create, from ``sys.settrace``, and the functions that run the
  most bytecodes;
- with ``--instructions``: the machine instructions of one create, from
  ``valgrind --tool=callgrind`` (the Debian package valgrind): a run of
  ``--files`` creates and one of 3,000 more, the difference divided by
  3,000, so that mounting and importing cancel out.  About 3 minutes.

The clocks of the hold, the absorber and the looks for waiters and
followers are set far off, so that a run slowed by tracing or by
valgrind takes the paths a run at full speed takes (DESIGN.md, "What
the rest would take").

    python scripts/create_count.py [--trace] [--instructions] [--files 300]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

PAYLOAD = b"x" * 4096
TRACED = 200  # creates traced (after --files made untraced): the refills of
# blocks taken ahead, one in 64 creates, fall evenly enough in 200
MORE = 3000  # the second --instructions run's extra creates (absorbs, one in about
# 1,000 creates, fall evenly enough in 3,000)


def _mounted(files: int):
    """A fresh pool with ``files`` made in /d, the clocks set far off."""
    import daxfs
    from daxfs import fs as fs_module
    from daxfs import logical

    never = 1e9
    logical.HOLD_ALONE_MOST = logical.HOLD_SECONDS = logical.BESIDE_LOOK = never
    logical.ABSORB_SECONDS = logical.HOLD_IDLE = fs_module.FOLLOWER_LOOK_SECONDS = never
    fd, path = tempfile.mkstemp(dir="/dev/shm", suffix=".pool")
    os.close(fd)
    daxfs.mkfs(path, 256 << 20, force=True)
    fs = daxfs.mount(path)
    os.unlink(path)  # (the mapping keeps the file)
    fs.mkdir("/d")
    _create(fs, "w", files)
    return fs


def _create(fs, prefix: str, n: int) -> None:
    for i in range(n):
        with fs.open(f"/d/{prefix}{i}", "wb") as f:
            f.write(PAYLOAD)


def trace(files: int) -> None:
    fs = _mounted(files)
    ops: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    calls = [0]

    def on_call(frame, _event, _arg):
        calls[0] += 1
        frame.f_trace_opcodes = True
        key = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}"

        def on_step(_frame, event, _arg):
            if event == "opcode":
                ops[key] += 1
            elif event == "line":
                lines[key] += 1
            return on_step

        return on_step

    sys.settrace(on_call)
    try:
        _create(fs, "t", TRACED)
    finally:
        sys.settrace(None)
        fs.close()
    total = sum(ops.values()) / TRACED
    print(
        f"one create: {total:,.0f} bytecodes, {sum(lines.values()) / TRACED:,.0f} lines, "
        f"{calls[0] / TRACED:.0f} calls, {len(ops)} functions"
    )
    for key, n in ops.most_common(25):
        print(f"{n / TRACED:7.1f}  {100 * n / TRACED / total:4.1f}%  {key}")


def instructions(files: int) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    counts = [_callgrind(n) for n in (files, files + MORE)]
    print(f"one create: {(counts[1] - counts[0]) / MORE:,.0f} instructions")


def _callgrind(files: int) -> int:
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--make-only", "--files", str(files),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONHASHSEED="0")
    err = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise SystemExit(f"valgrind printed no count:\n{err[-2000:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", action="store_true", help="bytecodes of a create (default)")
    ap.add_argument("--instructions", action="store_true", help="instructions, by callgrind")
    ap.add_argument("--files", type=int, default=300, help="files made first (300)")
    ap.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_only:  # (the run callgrind counts)
        _mounted(args.files).close()
        return
    if args.trace or not args.instructions:
        trace(args.files)
    if args.instructions:
        instructions(args.files)


if __name__ == "__main__":
    main()
