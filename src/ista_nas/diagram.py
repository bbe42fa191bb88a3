"""Cell diagrams (PNG and SVG) drawn with matplotlib: inputs on the left, nodes in the middle, output right.

Each edge is labelled with its op; the intermediate nodes feed the concatenated cell output.
"""

from __future__ import annotations

from pathlib import Path

from .genotype import NB201_EDGES, NB201_NODES, AnyGenotype, Genotype, Nb201Arch

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


def _arrow(ax, pos, a, b, colour: str, rad: float, label: str | None = None, dashed: bool = False) -> None:
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


def _nodes(ax, pos, names, io) -> None:
    for key, (x, y) in pos.items():
        ax.text(x, y, names[key], ha="center", va="center", fontsize=11, zorder=3,
                bbox=dict(boxstyle="round,pad=0.45", fc="#d9ead3" if key in io else "#cfe2f3",
                          ec="#38761d" if key in io else "#0b5394", lw=1.4))


def _save(fig, stem: str | Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def draw_cell(genotype: Genotype, cell: str, stem: str | Path) -> list[Path]:
    """Draw the ``normal`` or ``reduce`` cell into ``stem``.png and ``stem``.svg; return both paths."""
    plt = pyplot()
    pairs = genotype.normal if cell == "normal" else genotype.reduce
    concat = genotype.normal_concat if cell == "normal" else genotype.reduce_concat
    steps = len(pairs) // 2
    # Positions: inputs at x=0, node i at x=1.6+1.4i (zig-zag in y), output at the right.
    pos = {0: (0.0, 1.2), 1: (0.0, -1.2)}
    for i in range(steps):
        pos[i + 2] = (1.6 + 1.4 * i, 0.9 if i % 2 == 0 else -0.9)
    out_x = 1.6 + 1.4 * steps + 0.6
    pos["out"] = (out_x, 0.0)
    names = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
    names.update({i + 2: str(i) for i in range(steps)})

    fig, ax = plt.subplots(figsize=(2.2 + 1.5 * steps, 4.2))
    ax.set_title(f"{cell} cell", fontsize=13)
    for k, (op, pred) in enumerate(pairs):
        node = k // 2 + 2
        same = pairs[2 * (k // 2)][1] == pairs[2 * (k // 2) + 1][1]
        rad = (0.25 if k % 2 == 0 else -0.25) if same else (0.12 if k % 2 == 0 else -0.12)
        _arrow(ax, pos, pred, node, OP_COLOURS.get(op, "black"), rad, op)
    for node in concat:
        _arrow(ax, pos, node, "out", "#bbbbbb", 0.0)
    _nodes(ax, pos, names, io=(0, 1, "out"))
    ax.set_xlim(-0.8, out_x + 0.8)
    ax.set_ylim(-2.0, 2.0)
    ax.axis("off")
    return _save(fig, stem)


def draw_nb201_cell(arch: Nb201Arch, stem: str | Path) -> list[Path]:
    """Draw a NAS-Bench-201 cell (nodes 0..3 in a row, one labelled arc per edge) into ``stem``.png/.svg."""
    plt = pyplot()
    pos = {j: (2.2 * j, 0.0) for j in range(NB201_NODES)}
    names = {0: "in", NB201_NODES - 1: "out", **{j: str(j) for j in range(1, NB201_NODES - 1)}}
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    ax.set_title("NAS-Bench-201 cell", fontsize=13)
    for op, (to, i) in zip(arch.ops, NB201_EDGES):
        span = to - i  # neighbours: straight; longer edges: higher arcs, alternating sides
        rad = 0.0 if span == 1 else (0.45 if span == 2 else -0.4)
        _arrow(ax, pos, i, to, OP_COLOURS.get(op, "black") if op != "none" else "#bbbbbb", rad, op,
               dashed=op == "none")
    _nodes(ax, pos, names, io=(0, NB201_NODES - 1))
    ax.set_xlim(-0.8, 2.2 * (NB201_NODES - 1) + 0.8)
    ax.set_ylim(-2.2, 2.2)
    ax.axis("off")
    return _save(fig, stem)


def write_diagrams(genotype: AnyGenotype, directory: str | Path) -> list[Path]:
    """normal.png/.svg and reduce.png/.svg (DARTS space) or cell.png/.svg (NAS-Bench-201) in ``directory``."""
    directory = Path(directory)
    if isinstance(genotype, Nb201Arch):
        return draw_nb201_cell(genotype, directory / "cell")
    return [p for cell in ("normal", "reduce") for p in draw_cell(genotype, cell, directory / cell)]
