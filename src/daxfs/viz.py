"""viz: pictures of aging, drawn with matplotlib (Agg, no display needed).

  * the allocation map of a pool or device (an aging_stats.BlockMap): one
    square cell per 2 MiB chunk, in address order, row by row; each cell is
    8 x 8 pixels of 8 blocks (32 KiB) each, coloured by what those blocks
    hold (free, large-file data, small-file data, metadata; mixed blocks
    blend), so a chunk shared by small files and metadata, or a large file
    placed in the holes of small chunks, shows as such;
  * the 2 MiB-eligible fraction of large-file bytes against churn, one line
    per file system, one panel per utilization.

matplotlib is an optional dependency (the ``viz`` extra); the functions
import it when called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .aging_stats import BLOCKS_PER_CHUNK, FREE, KIND_NAMES, LARGE, META, SMALL, BlockMap

# RGB per block kind (colour-blind-safe-ish: grey, blue, orange, red).
COLORS = {
    FREE: (0.92, 0.92, 0.92),
    LARGE: (0.17, 0.48, 0.71),
    SMALL: (0.99, 0.68, 0.38),
    META: (0.84, 0.10, 0.11),
}
CELL = 8  # pixels per chunk side: 64 pixels of 8 blocks each
GAP = 1  # white pixels between chunks
BLOCKS_PER_PIXEL = BLOCKS_PER_CHUNK // (CELL * CELL)


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # the viz extra is not installed
        raise RuntimeError("pictures need matplotlib: pip install 'daxfs[viz]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def map_image(bm: BlockMap, columns: int | None = None) -> np.ndarray:
    """An (H, W, 3) float image of the map, ``columns`` chunks per row
    (default: about square)."""
    nchunks = -(-bm.nblocks // BLOCKS_PER_CHUNK)
    cols = columns or max(1, math.ceil(math.sqrt(nchunks)))
    rows = -(-nchunks // cols)
    kinds = np.full(nchunks * BLOCKS_PER_CHUNK, META, dtype=np.uint8)
    kinds[: bm.nblocks] = bm.kinds  # the tail of a partial last chunk: not usable
    palette = np.array([COLORS[k] for k in range(len(KIND_NAMES))])
    # Mean colour of each pixel's blocks, then each chunk's pixels as a CELL x CELL square.
    pixels = palette[kinds].reshape(nchunks, CELL * CELL, BLOCKS_PER_PIXEL, 3).mean(axis=2)
    cells = pixels.reshape(nchunks, CELL, CELL, 3)
    step = CELL + GAP
    img = np.ones((rows * step - GAP, cols * step - GAP, 3))
    for c in range(nchunks):
        r, q = divmod(c, cols)
        img[r * step : r * step + CELL, q * step : q * step + CELL] = cells[c]
    return img


def map_summary(bm: BlockMap) -> str:
    """Two lines under a map: chunk counts by what they hold."""
    counts = bm.chunk_kinds()
    whole_free = int((counts[:, FREE] == BLOCKS_PER_CHUNK).sum())
    used = counts[:, FREE] < BLOCKS_PER_CHUNK
    only_large = int((used & (counts[:, LARGE] + counts[:, FREE] == BLOCKS_PER_CHUNK)).sum())
    mixed = int(used.sum()) - only_large
    return (
        f"{len(counts)} chunks: {whole_free} free, {only_large} large-file only,\n"
        f"{mixed} small/metadata/mixed; {bm.free_whole_fraction():.0%} of free space whole"
    )


def _legend(ax) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=COLORS[k], label=KIND_NAMES[k]) for k in range(len(KIND_NAMES))]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4,
              fontsize=8, frameon=False)  # fmt: skip


def draw_maps(maps: Sequence[BlockMap], out: str, title: str | None = None, columns=None) -> str:
    """Write one PNG with a panel per map, side by side; returns ``out``."""
    plt = _pyplot()
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 5.4), squeeze=False)
    for ax, bm in zip(axes[0], maps, strict=True):
        ax.imshow(map_image(bm, columns), interpolation="nearest")
        ax.set_title(bm.label or "allocation map", fontsize=10)
        ax.set_xlabel(map_summary(bm), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        _legend(ax)
    return _save(plt, fig, out, title)


def draw_eligibility(
    series: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    out: str,
    title: str | None = None,
    aim: float | None = None,
) -> str:
    """``series[panel][line] = [(churn, fraction), ...]``; one panel per key
    (e.g. "75% full"), one line per file system.  Writes a PNG; returns ``out``."""
    plt = _pyplot()
    n = max(1, len(series))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False, sharey=True)
    for ax, (panel, lines) in zip(axes[0], series.items(), strict=False):
        for name, points in lines.items():
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, [100 * y for y in ys], marker="o", markersize=3, label=name)
        if aim is not None:
            ax.axhline(100 * aim, color="grey", linestyle="--", linewidth=0.8, label="aim")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("churn (bytes written / capacity)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("large-file bytes 2 MiB-eligible (%)")
    return _save(plt, fig, out, title)


def _save(plt, fig, out: str, title: str | None) -> str:
    """Title, lay out, write the PNG and free the figure; returns ``out``."""
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110, format="png")  # exactly ``out``, even without ".png"
    plt.close(fig)
    return out
