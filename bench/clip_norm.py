"""What the official two-stage clipping rule would change in ista-nas's two-stage search.

The official two-stage code clips the weight gradient by the norm over all model parameters, and b's gradient
is in it: the architecture step's gradient (held-out batch) plus the training batch's, accumulated because only
the weights' gradients are zeroed before the weight step. ista-nas clips by the norm over the weights only. This
script runs an ordinary two-stage search, also computes b's accumulated gradient at every weight step (which does
not change the search: the weights' gradients are the same, and the next architecture step replaces b's), and
reports how often each rule clips and how much smaller the official rule would make the weight step.

    python bench/clip_norm.py --out /tmp/clip --preset quick
    python bench/clip_norm.py --out /tmp/clip-cifar --preset quick --dataset folder:/tmp/data/cifar10-jpeg --epochs 4
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from ista_nas.methods import make_config, search, two_stage
from ista_nas.methods.bilevel import BilevelStepper


class Probe(BilevelStepper):
    rows: list[dict[str, float]] = []

    def _weight_step(self, x, y):
        logits, _ = self.train_net(x)
        loss = F.cross_entropy(logits, y)
        for p in self.active:
            p.grad = None
        loss.backward(inputs=self.active + [self.b])  # b.grad: the architecture step's + this batch's
        weights = float(torch.nn.utils.get_total_norm([p.grad for p in self.active if p.grad is not None]))
        b = float(torch.linalg.vector_norm(self.b.grad))
        clip = self.cfg.grad_clip
        ours, official = min(1.0, clip / (weights + 1e-6)), min(1.0, clip / ((weights ** 2 + b ** 2) ** 0.5 + 1e-6))
        self.rows.append({"weights": weights, "b": b, "ours": ours, "official": official})
        torch.nn.utils.clip_grad_norm_(self.active, clip)
        self.w_opt.step()
        return loss, logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    overrides = {k: v for k, v in (("dataset", args.dataset), ("epochs", args.epochs)) if v is not None}
    cfg = make_config(args.preset, device="cpu", **overrides)
    two_stage.TwoStage.stepper_class = Probe  # the two-stage job's steps, probed
    result = search(cfg, Path(args.out) / "run")
    rows = Probe.rows
    ratio = [r["official"] / r["ours"] for r in rows]
    summary = {"steps": len(rows), "dataset": cfg.dataset, "epochs": cfg.epochs,
               "clipped_ours": sum(r["ours"] < 1 for r in rows) / len(rows),
               "clipped_official": sum(r["official"] < 1 for r in rows) / len(rows),
               "step_ratio_median": statistics.median(ratio), "step_ratio_min": min(ratio),
               "b_over_weights_median": statistics.median(r["b"] / r["weights"] for r in rows),
               "weights_norm_median": statistics.median(r["weights"] for r in rows),
               "genotype": result.genotype.to_dict()}
    Path(args.out, "clip_norm.json").write_text(json.dumps({"summary": summary, "steps": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
