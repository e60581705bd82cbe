"""daxfs mount: serve a pool through FUSE so that ordinary tools can use it.

    daxfs mount pool.img /mnt/dax        # returns once mounted; serves in the background
    daxfs mount -f pool.img /mnt/dax     # serves in the foreground; Ctrl-C unmounts
    fusermount3 -u /mnt/dax              # unmounts (either way)

Without --foreground, the command forks after the kernel mount exists: the
command returns (status 0) with the mount ready, and the child serves it,
with its output sent to /dev/null.  SIGINT, SIGTERM, SIGHUP and
``fusermount3 -u`` end the session; the pool is then unmounted the daxfs
way (synced, journal checkpointed), so ``daxfs fsck`` finds it clean.

The checks that can be made before mounting are, so a missing mount point,
an unusable /dev/fuse, a missing fusermount3 or a bad pool is one ``daxfs:``
line and status 1.  FUSE reads copy; zero-copy access is ``fs.map`` in the
Python API.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Annotated

import typer

from .. import fuse, fuseuring
from ..fs import TAILS
from .common import CliError, PoolArg, command, mounted

FUSE_DEVICE = "/dev/fuse"
FUSE_CONF = "/etc/fuse.conf"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def check_mountpoint(mountpoint: Path) -> str:
    """The mount point as an absolute path (the serving child changes directory to /)."""
    if not mountpoint.exists():
        raise CliError(f"{mountpoint}: mount point does not exist")
    if not mountpoint.is_dir():
        raise CliError(f"{mountpoint}: mount point is not a directory")
    return os.path.abspath(mountpoint)


def check_fuse_device() -> None:
    """FUSE needs the device, and fusermount3 to mount (daxfs serves the
    protocol itself: fuse.py, fusewire.py)."""
    if not os.path.exists(FUSE_DEVICE):
        raise CliError(
            f"cannot mount: {FUSE_DEVICE} does not exist (FUSE is unavailable here: "
            "load the fuse module, or give the container the device)"
        )
    if not os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        raise CliError(f"cannot mount: no permission to use {FUSE_DEVICE}")
    if shutil.which("fusermount3") is None:
        raise CliError("cannot mount: fusermount3 not found (install the fuse3 package)")


def parse_mount_options(text: str | None) -> dict[str, object]:
    """``commit=sync,commit_interval=1,tails=trim`` as mount() keyword
    arguments; a clear error for anything else."""
    out: dict[str, object] = {}
    for item in filter(None, (text or "").split(",")):
        key, eq, value = item.partition("=")
        if key == "commit" and value in ("lazy", "sync"):
            out["commit"] = value
        elif key == "commit_interval" and eq:
            try:
                seconds = float(value)
            except ValueError:
                seconds = float("nan")
            if not seconds > 0:
                raise CliError(f"commit_interval must be a positive number of seconds: {item}")
            out["commit_interval"] = seconds
        elif key == "tails" and value in TAILS:
            out["tails"] = value
        else:
            raise CliError(
                f"unknown mount option {item!r} "
                "(known: commit=lazy|sync, commit_interval=SECONDS, tails=trim|keep)"
            )
    return out


def check_allow_other(conf: str = FUSE_CONF, euid: int | None = None) -> None:
    """--allow-other: root may; another user (``euid``, default ours) only if
    /etc/fuse.conf says user_allow_other (else fusermount3 refuses, with a
    less clear line)."""
    if (os.geteuid() if euid is None else euid) == 0:
        return
    try:
        with open(conf) as f:
            allowed = any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        allowed = False
    if not allowed:
        raise CliError(
            f"--allow-other: {conf} does not allow it for users other than root "
            "(add the line user_allow_other there, or mount as root)"
        )


def finish_quietly() -> None:
    """The session is over and the pool is about to be closed: a second Ctrl-C
    or SIGTERM must not cut that short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@command
def mount_cmd(
    pool: PoolArg,
    mountpoint: Annotated[Path, typer.Argument(help="An existing directory to mount on.")],
    foreground: Annotated[
        bool,
        typer.Option("--foreground", "-f", help="Serve in the foreground (Ctrl-C unmounts)."),
    ] = False,
    readonly: Annotated[bool, typer.Option("--readonly", help="Mount read-only.")] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Mount read-only as a follower: take no kernel lock and follow the "
            "writer from the pool's bytes alone, as a host sharing a CXL device with "
            "the writer's host must (a pool in shared memory: device-dax, fs-dax, tmpfs).",
        ),
    ] = False,
    lease_seconds: Annotated[
        float | None,
        typer.Option(
            "--lease-seconds",
            help="With --follow: how long the writer keeps the files this follower holds "
            "open after it stops (10).",
        ),
    ] = None,
    allow_other: Annotated[
        bool,
        typer.Option(
            "--allow-other",
            help="Let other users in (the kernel checks their permissions). Needs root, "
            "or user_allow_other in /etc/fuse.conf.",
        ),
    ] = False,
    io_uring: Annotated[
        bool,
        typer.Option(
            "--io-uring",
            help="Serve through FUSE over io_uring: each CPU's requests answered by a "
            "thread on that CPU, without waking another (Linux 6.14 or later; root "
            f"turns it on with: echo Y > {fuseuring.ENABLE_KNOB}).",
        ),
    ] = False,
    options: Annotated[
        str | None,
        typer.Option(
            "--options",
            "-o",
            help="Mount options, comma-separated: commit=lazy|sync (a pool on a disk "
            "file: durable at fsync and every commit_interval seconds, or each "
            "change on return), commit_interval=SECONDS (default 5), tails=trim|keep "
            "(trim, the default: a large file gives back its last chunk past its end "
            "at close; keep: it keeps the whole chunk).",
        ),
    ] = None,
) -> None:
    """Mount a pool on a directory through FUSE, for ordinary tools."""
    opts = parse_mount_options(options)
    if follow and opts:
        raise CliError("--follow takes no -o options: a follower never writes")
    if lease_seconds is not None and not follow:
        raise CliError("--lease-seconds is for --follow")
    if follow:
        readonly, opts = True, {"follow": True, "lease_seconds": lease_seconds}
    where = check_mountpoint(mountpoint)
    if allow_other:
        check_allow_other()
    why_not = fuseuring.unsupported_here() if io_uring else None
    if why_not:
        raise CliError(f"--io-uring: FUSE over io_uring is {why_not}")
    check_fuse_device()
    pool_abs = os.path.abspath(pool)
    with mounted(pool_abs, readonly=readonly, **opts) as fs:
        try:
            fuse.serve(
                fs,
                where,
                foreground=foreground,
                readonly=readonly,
                pool_name=pool_abs,
                allow_other=allow_other,
                io_uring=io_uring,
            )
        except fuse.MountError as e:
            raise CliError(f"{mountpoint}: {e}") from None
        finally:
            finish_quietly()
