"""``python -m daxfs.cli``: the daxfs command, for environments without the script."""

from . import main

main()
