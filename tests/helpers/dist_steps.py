"""Run a few search or training steps in float64 on this process's shard of fixed global batches and save the
resulting state: under torchrun every rank saves ``rank<R>.pt``; run plainly it is the one-process reference.

    python dist_steps.py search|train OUT_DIR [DEVICE]      (DEVICE: cpu, the default, or cuda)
"""

import os
import sys

import torch

from ista_nas.config import make_train_config
from ista_nas.methods import make_config
from ista_nas.engine.distributed import Dist, place, shutdown
from ista_nas.methods.budget import recover
from ista_nas.methods.bilevel import BilevelStepper
from ista_nas.networks import SearchNetwork
from ista_nas.networks.cnn import Network
from ista_nas.published import PUBLISHED
from ista_nas.engine.trainer import Trainer

BATCH, CLASSES = 12, 3


def batches(count, seed, device):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        x = torch.randn(BATCH, 3, 16, 16, generator=gen, dtype=torch.float64)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        yield x.contiguous(memory_format=torch.channels_last).to(device), y.to(device)


def main(kind, out, device="cpu"):
    ctx = Dist.setup(device)
    part = lambda t: t.tensor_split(ctx.world)[ctx.rank]  # noqa: E731  (the loaders' shard rule)
    torch.manual_seed(0)
    if kind == "search":
        net = place(SearchNetwork(channels=4, layers=3, num_classes=CLASSES, seed=0).double(), ctx, True, True)
        stepper = BilevelStepper(net, make_config("paper", batch_size=BATCH, arch_lr=3e-2), ctx)
        for epoch in range(2):
            stepper.begin_epoch(epoch)
            for (x, y), (xv, yv) in zip(batches(3, 2 * epoch, ctx.device), batches(3, 2 * epoch + 1, ctx.device)):
                stepper.step(part(x), part(y), part(xv), part(yv))
            recover(net, ctx)
        state = {k: v.cpu() for k, v in net.state_dict().items()}
    else:
        model = place(Network(PUBLISHED["ista_twostage"], 4, 3, CLASSES, auxiliary=True).double(), ctx, True, True)
        trainer = Trainer(model, make_train_config("quick", drop_path=0.0), ctx)
        trainer.begin_epoch(0)
        for x, y in batches(4, 0, ctx.device):
            trainer.step(part(x), part(y))
        state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save(state, os.path.join(out, f"rank{ctx.rank}.pt"))
    shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
