"""``ista-nas bench``: time the search step of the sparse ISTA-NAS supernet against the dense DARTS supernet
(same cells, same code, same settings), the retrain network's training step, and the recovery.

Each figure is the median over ``steps`` timed steps after ``warmup`` untimed ones, on random data, with the
device synchronised around every step. Peak memory is CUDA's allocator peak, or the process's peak RSS on CPU.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Any

import torch

from .config import make_train_config
from .engine.distributed import Dist
from .errors import UserError
from .engine.loop import resolve_device
from .engine.data import DataInfo
from .methods import make_config
from .methods.base import build_supernet
from .methods.bilevel import BilevelStepper
from .networks import SearchNetwork
from .published import PUBLISHED
from .spaces import SPACES, check_network


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


def _search_step(kind: str, cfg: Any, device: torch.device, size: int, graphs: str):
    """One search step of the space's ``kind`` supernet (sparse: a random 2-sparse support, as a search in
    progress has; dense: every candidate), at the config's batch, eager or replayed from a CUDA graph."""
    cfg = dataclasses.replace(cfg, cuda_graphs=graphs)
    net = build_supernet(cfg, DataInfo([str(k) for k in range(10)], 3, (size, size)), kind)
    if kind == "sparse":
        with torch.no_grad():
            net.arch.b.copy_(1e-2 * torch.randn(net.arch.b.shape, generator=torch.Generator().manual_seed(1)))
        net.arch.recover()
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = net.to(device).to(memory_format=memory_format)
    stepper = BilevelStepper(net, cfg, Dist(device=device))
    stepper.begin_epoch(0)
    x = torch.randn(cfg.batch_size, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (cfg.batch_size,), device=device)
    return lambda: stepper.step(x, y, x, y)


def run_bench(layers: int = 0, channels: int = 16, size: int = 32, batch: int = 64, steps: int = 5,
              warmup: int = 2, device: str = "auto", channels_last: bool = True, retrain: bool = True,
              retrain_batch: int = 96, space: str = "darts", retrain_size: tuple[int, int] = (36, 20)
              ) -> dict[str, Any]:
    """The figures of ``ista-nas bench``; ``layers`` 0: the space's paper size. On CUDA every step is timed
    eager and replayed from a CUDA graph (``--cuda-graphs``), the graph after ``warmup`` + 3 untimed steps."""
    least = {"--layers": (layers, 0), "--channels": (channels, 2), "--size": (size, 8), "--batch-size": (batch, 2),
             "--steps": (steps, 1), "--warmup": (warmup, 0), "--retrain-channels": (retrain_size[0], 2),
             "--retrain-layers": (retrain_size[1], 1)}
    for flag, (value, bound) in least.items():
        if value < bound:
            raise UserError(f"{flag} must be at least {bound}, got {value}")
    if space not in SPACES:
        raise UserError(f"unknown --space {space!r}; choose one of {', '.join(SPACES)}")
    if retrain:  # the search networks' sizes are checked by make_config (methods.check_search_size)
        check_network(space, *retrain_size, flags=("--retrain-channels", "--retrain-layers"), least_channels=2)
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(torch.get_num_threads())  # one thread per core, no oversubscription
    cfg = make_config("paper", space=space, channels=channels, batch_size=batch, channels_last=channels_last,
                      device=str(dev), **({"layers": layers} if layers else {}))
    out: dict[str, Any] = {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
                           else "cpu", "dtype": "float32", "memory_format": "channels_last" if channels_last else
                           "contiguous", "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "space": space, "layers": cfg.layers, "channels": channels, "size": size, "batch": batch,
                           "steps": steps}
    modes = [("", "off", warmup)] + ([("graph_", "on", warmup + 3)] if dev.type == "cuda" else [])
    for prefix, graphs, untimed in modes:
        for kind in ("sparse", "dense"):
            step = _search_step(kind, cfg, dev, size, graphs)
            out[f"{kind}_{prefix}step_s"], out[f"{kind}_{prefix}peak_mb"] = _time(step, dev, steps, untimed)
            out[f"{kind}_{prefix}images_per_s"] = batch / out[f"{kind}_{prefix}step_s"]
    out["speedup"] = out["dense_step_s"] / out["sparse_step_s"]
    if dev.type == "cuda":
        out["graph_speedup"] = out["sparse_step_s"] / out["sparse_graph_step_s"]
    code = SearchNetwork(channels=channels, layers=3, num_classes=10, seed=0).arch
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

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(retrain_batch, 3, 32, 32, device=dev).contiguous(memory_format=memory_format)
        y = torch.randint(0, 10, (retrain_batch,), device=dev)
        for prefix, graphs, untimed in modes:
            torch.manual_seed(0)
            model = Network(PUBLISHED["ista_twostage"], *retrain_size, 10).to(dev).to(memory_format=memory_format)
            tcfg = make_train_config("paper", batch_size=retrain_batch, device=str(dev), cuda_graphs=graphs)
            trainer = Trainer(model, tcfg, Dist(device=dev))
            trainer.begin_epoch(0)
            out[f"retrain_{prefix}step_s"], out[f"retrain_{prefix}peak_mb"] = _time(
                lambda: trainer.step(x, y), dev, max(steps // 2, 1), max(untimed - 1, 1))
        out["retrain_amp"] = "bf16/fp16 autocast" if dev.type == "cuda" else "off (CPU)"
        out["retrain_channels"], out["retrain_layers"] = retrain_size
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [f"device {r['device']} ({r['device_name']}), {r['dtype']}, {r['memory_format']}, torch {r['torch']}, "
             f"{r['threads']} threads",
             f"search step (arch + weight update), space {r['space']}, L={r['layers']} C={r['channels']} "
             f"{r['size']}x{r['size']} batch {r['batch']}, median of {r['steps']}:",
             f"  ISTA-NAS sparse   {r['sparse_step_s']:8.3f} s  {r['sparse_images_per_s']:8.1f} img/s  "
             f"peak {r['sparse_peak_mb']:.0f} MB",
             f"  DARTS dense       {r['dense_step_s']:8.3f} s  {r['dense_images_per_s']:8.1f} img/s  "
             f"peak {r['dense_peak_mb']:.0f} MB",
             f"  speedup (dense / sparse)  {r['speedup']:.1f}x"]
    if "graph_speedup" in r:
        lines += [f"  {name} CUDA graph {r[f'{kind}_graph_step_s']:8.4f} s  {r[f'{kind}_graph_images_per_s']:8.1f} "
                  f"img/s" for name, kind in (("ISTA-NAS sparse", "sparse"), ("DARTS dense", "dense"))]
        lines.append(f"  speedup (eager / graph, sparse)  {r['graph_speedup']:.1f}x")
    lines.append(f"recovery of the DARTS cell's {2 * 4} node problems (warm start): {1000 * r['recovery_s']:.1f} ms")
    if "retrain_step_s" in r:
        lines.append(f"retrain step (ista_twostage C={r['retrain_channels']} L={r['retrain_layers']}, batch 96, "
                     f"{r['retrain_amp']}): "
                     f"{r['retrain_step_s']:.3f} s, peak {r['retrain_peak_mb']:.0f} MB"
                     + (f"; CUDA graph {r['retrain_graph_step_s']:.4f} s" if "retrain_graph_step_s" in r else ""))
    return "\n".join(lines)
