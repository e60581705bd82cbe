"""daxfs command line: format, inspect and use a pool from the shell.

    daxfs mkfs pool.img --size 1G
    daxfs cp -r ./photos pool.img:/photos
    daxfs ls -l pool.img:/photos
    daxfs getmap pool.img:/photos/big.raw

A path inside a pool is written ``POOL:/path``.  Every command lives in its
own module here; errors print one ``daxfs: ...`` line and exit non-zero.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import age, cat, cp, demo, df, fsck, getmap, info, ls, mkdir, mkfs, mount, mv, rm, stat, viz

app = typer.Typer(
    name="daxfs",
    help="A file system for persistent and CXL memory, in one pool file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMANDS = {
    "mkfs": mkfs.mkfs_cmd,
    "info": info.info_cmd,
    "ls": ls.ls_cmd,
    "mkdir": mkdir.mkdir_cmd,
    "cp": cp.cp_cmd,
    "cat": cat.cat_cmd,
    "rm": rm.rm_cmd,
    "mv": mv.mv_cmd,
    "stat": stat.stat_cmd,
    "getmap": getmap.getmap_cmd,
    "df": df.df_cmd,
    "fsck": fsck.fsck_cmd,
    "demo": demo.demo_cmd,
    "mount": mount.mount_cmd,
    "age": age.age_cmd,
    "viz": viz.viz_cmd,
}
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"daxfs {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """A file system for persistent and CXL memory, in one pool file."""


def main() -> None:
    """Entry point of the ``daxfs`` script."""
    app(prog_name="daxfs")


__all__ = ["app", "main"]
