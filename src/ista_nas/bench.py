"""``ista-nas bench``: time the search step of the sparse ISTA-NAS supernet against the dense DARTS supernet
(same cells, same code, same settings), the retrain network's training step, and the recovery.

Each figure is the median over ``steps`` timed steps after ``warmup`` untimed ones, on random data, with the
device synchronised around every step. Peak memory is CUDA's allocator peak, or the process's peak RSS on CPU.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import torch

from .config import make_train_config
from .engine.distributed import Dist
from .errors import UserError
from .engine.loop import resolve_device
from .methods import make_config
from .methods.base import BilevelStepper
from .networks import SearchNetwork
from .networks.dense import DenseSearchNetwork
from .published import PUBLISHED


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _time(fn, device: torch.device, steps: int, warmup: int) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        _sync(device)
        began = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times), _peak_mb(device)


def _search_step(cls: type, args: dict[str, Any], device: torch.device, batch: int, size: int, channels_last: bool):
    torch.manual_seed(0)
    net = cls(**args)
    if not isinstance(net, DenseSearchNetwork):
        with torch.no_grad():  # a random 2-sparse support, as a search in progress has
            net.arch.b.normal_(0, 1e-2, generator=torch.Generator().manual_seed(1))
        net.arch.recover()
    net = net.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    stepper = BilevelStepper(net, make_config("paper", batch_size=batch))
    stepper.begin_epoch(0)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)
    return lambda: stepper.step(x, y, x, y)


def run_bench(layers: int = 8, channels: int = 16, size: int = 32, batch: int = 64, steps: int = 5,
              warmup: int = 2, device: str = "auto", channels_last: bool = True, retrain: bool = True,
              retrain_batch: int = 96) -> dict[str, Any]:
    if min(layers, steps, channels - 1, size - 7, batch - 1) < 1 or warmup < 0:
        raise UserError("--layers and --steps must be at least 1, --channels and --batch-size at least 2, "
                        "--size at least 8 and --warmup at least 0")
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(torch.get_num_threads())  # one thread per core, no oversubscription
    args = dict(channels=channels, layers=layers, num_classes=10, in_channels=3, seed=0)
    out: dict[str, Any] = {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
                           else "cpu", "dtype": "float32", "memory_format": "channels_last" if channels_last else
                           "contiguous", "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "layers": layers, "channels": channels, "size": size, "batch": batch, "steps": steps}
    sparse = _search_step(SearchNetwork, args, dev, batch, size, channels_last)
    out["sparse_step_s"], out["sparse_peak_mb"] = _time(sparse, dev, steps, warmup)
    dense = _search_step(DenseSearchNetwork, args, dev, batch, size, channels_last)
    out["dense_step_s"], out["dense_peak_mb"] = _time(dense, dev, steps, warmup)
    out["speedup"] = out["dense_step_s"] / out["sparse_step_s"]
    out["sparse_images_per_s"] = batch / out["sparse_step_s"]
    out["dense_images_per_s"] = batch / out["dense_step_s"]
    code = SearchNetwork(**args).arch
    with torch.no_grad():
        code.b.normal_(0, 1e-2, generator=torch.Generator().manual_seed(2))
    times = []
    for k in range(20):
        with torch.no_grad():
            code.b.add_(1e-4 * torch.randn(code.b.shape, generator=torch.Generator().manual_seed(10 + k)))
        began = time.perf_counter()
        code.recover()  # warm-started from the previous z, as after every epoch
        times.append(time.perf_counter() - began)
    out["recovery_s"] = statistics.median(times)
    if retrain:
        from .engine.trainer import Trainer
        from .networks.cnn import Network

        torch.manual_seed(0)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = Network(PUBLISHED["ista_twostage"], 36, 20, 10).to(dev).to(memory_format=memory_format)
        tcfg = make_train_config("paper", batch_size=retrain_batch, device=str(dev))
        trainer = Trainer(model, tcfg, Dist(device=dev))
        trainer.begin_epoch(0)
        x = torch.randn(retrain_batch, 3, 32, 32, device=dev).contiguous(memory_format=memory_format)
        y = torch.randint(0, 10, (retrain_batch,), device=dev)
        out["retrain_step_s"], out["retrain_peak_mb"] = _time(lambda: trainer.step(x, y), dev, max(steps // 2, 1), 1)
        out["retrain_amp"] = "bf16/fp16 autocast" if dev.type == "cuda" else "off (CPU)"
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [f"device {r['device']} ({r['device_name']}), {r['dtype']}, {r['memory_format']}, torch {r['torch']}, "
             f"{r['threads']} threads",
             f"search step (arch + weight update), L={r['layers']} C={r['channels']} {r['size']}x{r['size']} "
             f"batch {r['batch']}, median of {r['steps']}:",
             f"  ISTA-NAS sparse   {r['sparse_step_s']:8.3f} s  {r['sparse_images_per_s']:8.1f} img/s  "
             f"peak {r['sparse_peak_mb']:.0f} MB",
             f"  DARTS dense       {r['dense_step_s']:8.3f} s  {r['dense_images_per_s']:8.1f} img/s  "
             f"peak {r['dense_peak_mb']:.0f} MB",
             f"  speedup (dense / sparse)  {r['speedup']:.1f}x",
             f"recovery of all {2 * 4} node problems (warm start): {1000 * r['recovery_s']:.1f} ms"]
    if "retrain_step_s" in r:
        lines.append(f"retrain step (ista_twostage C=36 L=20, batch 96, {r['retrain_amp']}): "
                     f"{r['retrain_step_s']:.3f} s, peak {r['retrain_peak_mb']:.0f} MB")
    return "\n".join(lines)
