"""Training accuracy per epoch of several runs (searches: the supernet's; train runs: the network's), one plot.

    python bench/plot_curves.py OUT.png "ISTA-NAS s0=/tmp/quality/search-two-stage-s0" "plain=/tmp/quality/plain-s0"

Each argument after the output is LABEL=RUN_DIR; the curve is ``train_acc`` from RUN_DIR/metrics.jsonl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str]) -> None:
    out, runs = argv[0], [a.split("=", 1) for a in argv[1:]]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, run in runs:
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        ax.plot([r["epoch"] for r in rows], [r["train_acc"] for r in rows], marker="o", ms=3, label=label,
                ls="--" if label.startswith("plain") else "-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
