"""The report's figures, drawn from a run's records (``report`` embeds them; ``compare`` draws with ``drawn`` and
``plain``): the loss and accuracy curves, the benchmark table's value of the architecture held and where the found
cell stands, and every decision group's support over the epochs. Values read from files are drawn within bounds
(``drawn``) and text literally (``plain``)."""

from __future__ import annotations

import base64
import io
import logging
import statistics
from typing import Any

from ..diagram import pyplot
from ..errors import UserError
from ..fields import fits
from ..spaces import genotype_from_dict, space_of
from .baselines import OpSet

log = logging.getLogger(__name__)
ACCURACIES = ("_acc", "_top1", "_top5")  # metrics in percent
DRAWN = 1e15  # the largest magnitude a plot draws: matplotlib's axis arithmetic overflows near the float range's end


def epoch_of(record: dict[str, Any]) -> int | None:
    epoch = record.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def drawn(values: list[Any], key: str, where: Any) -> list[float]:
    """``values`` as a plot draws them: an accuracy (``key`` ends in _acc, _top1, _top5) clipped to 0..100, any
    other value to +-DRAWN, with a warning naming ``where`` when one was outside. A hand-edited file's finite
    numbers pass the readers' checks (``valid_acc`` 1e308), but broke matplotlib's axis arithmetic."""
    low, high = (0.0, 100.0) if key.endswith(ACCURACIES) else (-DRAWN, DRAWN)
    outside = [v for v in values if not low <= v <= high]
    if outside:
        log.warning("%s: %d value%s of %s outside %g..%g (the first: %.40r), drawn at the bound; the run's records "
                    "are damaged or were edited by hand", where, len(outside), "s" if len(outside) > 1 else "", key,
                    low, high, outside[0])
    return [float(min(max(v, low), high)) for v in values]


def plain(text: Any) -> str:
    """``text`` (a name or setting read from a file) as matplotlib draws it literally: a ``$`` escaped (matplotlib
    reads the text between two as math and fails on what does not parse), characters UTF-8 cannot hold replaced."""
    return str(text).encode("utf-8", "replace").decode().replace("$", r"\$")


def png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def curves(metrics: list[dict[str, Any]], where: Any = "metrics") -> str | None:
    if not any(epoch_of(m) is not None for m in metrics):
        return None
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("train", "train"), ("valid", "valid (architecture batches)"), ("test", "test")):
        for ax, suffix in ((loss_ax, "_loss"), (acc_ax, "_top1" if key == "test" else "_acc")):
            points = [(epoch_of(m), m[key + suffix]) for m in metrics if epoch_of(m) is not None and
                      fits(m.get(key + suffix), float)]
            if points:
                epochs, values = zip(*points)
                ax.plot(epochs, drawn(list(values), key + suffix, where), marker="o", ms=3, label=label)
    loss_ax.set(title="loss", xlabel="epoch")
    acc_ax.set(title="accuracy (%)", xlabel="epoch")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return png(fig)


def benchmark_plots(metrics: list[dict[str, Any]], bench: dict[str, Any], op_set: OpSet | None,
                     where: Any = "benchmark") -> str:
    """The table's value of the architecture held, epoch by epoch; and where the found cell stands among every
    cell of the searched op set (a histogram, with the found cell, the random-draw mean and the largest cell)."""
    plt = pyplot()
    fig, (held_ax, hist_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    points = [(epoch_of(m), m["benchmark"]) for m in metrics
              if epoch_of(m) is not None and fits(m.get("benchmark"), float)]
    metric = plain(bench["metric"])
    values = op_set.values if op_set else None
    best, value, largest, mean = drawn([bench["best"], bench.get("value") or 0.0,
                                        op_set.largest.value if op_set else 0.0,
                                        statistics.fmean(values) if values else 0.0], "benchmark", where)
    if points:
        epochs, held = zip(*points)
        held_ax.plot(epochs, drawn(list(held), "benchmark", where), marker="s", ms=3, label="architecture held")
    if values:
        held_ax.axhline(mean, ls="--", color="gray", label="random draw, mean")
    if op_set:
        held_ax.axhline(largest, ls="-.", color="darkorange", label=f"largest cell ({op_set.largest.value:.2f})")
    held_ax.axhline(best, ls=":", color="green", label=f"table best ({bench['best']:.2f})")
    held_ax.set(title=f"table {metric} of the architecture held", xlabel="epoch", ylabel=f"{metric} (table)")
    held_ax.xaxis.get_major_locator().set_params(integer=True)
    if values:
        hist_ax.hist(drawn(list(values), "benchmark", where), bins=60, color="#9ab8d8")
        hist_ax.axvline(mean, ls="--", color="gray", label=f"random draw, mean {statistics.fmean(values):.2f}")
        hist_ax.axvline(largest, ls="-.", color="darkorange", label=f"largest cell {op_set.largest.value:.2f}")
        hist_ax.set(title=f"{len(values)} cells of the searched op set", xlabel=f"{metric} (table)",
                    ylabel="cells")
    if bench.get("value") is not None:
        hist_ax.axvline(value, color="crimson", lw=2,
                        label=f"found {bench['value']:.2f} (rank {bench['rank']} of {bench['of']})")
    for ax in (held_ax, hist_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return png(fig)


def support_history(metrics: list[dict[str, Any]], where: Any = "metrics"
                    ) -> dict[str, list[tuple[int, tuple[str, ...]]]]:
    """Per decision group, the (epoch, held candidates) of every epoch whose record names a genotype; a damaged
    genotype is left out with a warning naming ``where``."""
    history: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    damaged = []
    for m in metrics:
        data, epoch = m.get("genotype"), epoch_of(m)
        if not isinstance(data, dict) or epoch is None:
            continue
        try:
            genotype = genotype_from_dict(data, source=f"the genotype of epoch {epoch}")
        except UserError as exc:
            damaged.append(str(exc))
            continue
        for name, held in space_of(genotype).groups(genotype).items():
            history.setdefault(name, []).append((epoch, held))
    if damaged:
        log.warning("%s: %d damaged genotype%s left out of the supports (%s)", where, len(damaged),
                    "s" if len(damaged) > 1 else "", damaged[0])
    return history


def settled_after(history: list[tuple[int, tuple[str, ...]]]) -> int:
    """The epoch from which the group held the same candidates to the end."""
    epoch = history[-1][0]
    for e, held in reversed(history):
        if held != history[-1][1]:
            break
        epoch = e
    return epoch


def support_plot(history: dict[str, list[tuple[int, tuple[str, ...]]]]) -> str | None:
    if not history:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(history), 1, figsize=(10, 1.0 + 0.9 * len(history)), squeeze=False, sharex=True)
    for ax, (name, rows) in zip(axes[:, 0], history.items()):
        labels = sorted({c for _, held in rows for c in held})
        grid = [[1.0 if label in held else 0.0 for _, held in rows] for label in labels]
        ax.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest",
                  extent=(rows[0][0] - 0.5, rows[-1][0] + 0.5, len(labels) - 0.5, -0.5))
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel("epoch")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle("support of every decision group (shaded: held in that epoch)", fontsize=10)
    return png(fig)
