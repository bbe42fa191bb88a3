"""Cell diagrams (PNG and SVG, matplotlib): labelled arcs between boxed nodes. Each space lays out its own
cells and draws them with ``draw_graph`` (``SearchSpace.draw``)."""

from __future__ import annotations

import io
from pathlib import Path

from .files import PLOT_METADATA, atomic_write_bytes

OP_COLOURS = {
    "max_pool_3x3": "#8c564b", "avg_pool_3x3": "#bcbd22", "skip_connect": "#7f7f7f",
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#17becf", "dil_conv_3x3": "#d62728", "dil_conv_5x5": "#ff7f0e",
    "nor_conv_1x1": "#9467bd", "nor_conv_3x3": "#1f77b4",
}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig, path: str | Path, **kwargs) -> None:
    """``fig.savefig`` with the mark of an ista-nas plot in the file's metadata (a later run may replace it),
    written whole or not at all (``files.atomic_write_bytes``)."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower() or "png", metadata=PLOT_METADATA, **kwargs)
    atomic_write_bytes(path, buffer.getbuffer())


def arrow(ax, pos, a, b, colour: str, rad: float, label: str | None = None, dashed: bool = False) -> None:
    """An arc from node ``a`` to node ``b``, its label on the arc's midpoint."""
    from matplotlib.patches import FancyArrowPatch

    (x0, y0), (x1, y1) = pos[a], pos[b]
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, lw=1.6, color=colour,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=20, shrinkB=20,
                                 linestyle="--" if dashed else "-"))
    if label:
        # The midpoint of matplotlib's arc3 curve (a quadratic Bezier): the label sits on the edge.
        dx, dy = x1 - x0, y1 - y0
        mx, my = (x0 + x1) / 2 + rad * dy * 0.5, (y0 + y1) / 2 - rad * dx * 0.5
        ax.text(mx, my, label, fontsize=8.5, ha="center", va="center", color=colour,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))


def draw_graph(title: str, figsize: tuple[float, float], pos: dict, names: dict, io: tuple, arcs: list[tuple],
               xlim: tuple[float, float], ylim: tuple[float, float], stem: str | Path) -> list[Path]:
    """A cell as a graph: nodes at ``pos`` labelled by ``names`` (those in ``io`` boxed as inputs and outputs),
    ``arcs`` as ``arrow``'s arguments after the axes and positions (a, b, colour, rad[, label[, dashed]]), into
    ``stem``.png and ``stem``.svg; returns both paths."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_title(title, fontsize=13)
    for arc in arcs:
        arrow(ax, pos, *arc)
    nodes(ax, pos, names, io)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.axis("off")
    return save(fig, stem)


def nodes(ax, pos, names, io) -> None:
    for key, (x, y) in pos.items():
        ax.text(x, y, names[key], ha="center", va="center", fontsize=11, zorder=3,
                bbox=dict(boxstyle="round,pad=0.45", fc="#d9ead3" if key in io else "#cfe2f3",
                          ec="#38761d" if key in io else "#0b5394", lw=1.4))


def save(fig, stem: str | Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        savefig(fig, path, dpi=150)
    plt.close(fig)
    return paths
