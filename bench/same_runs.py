"""Do two versions of the package run the same searches? For a refactor that must change no behaviour.

``run`` searches the quick preset of every registered space x method pair (seed 0, CPU; ``--only`` picks
pairs) into OUT/SPACE-METHOD and writes OUT/digest.json: per pair the metrics without their timings, the
genotype, and a SHA-256 of every tensor of the final checkpoint (by key path, dtype and shape included).
``compare A B`` prints the pairs whose digests differ and where. Run both versions with the same thread count
(``OMP_NUM_THREADS=1``) on the same machine; point ``PYTHONPATH`` at the version's ``src`` to run another
checkout than the installed one.

    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before/src python bench/same_runs.py run --out /tmp/before-runs \\
        --data nb201=folder:/tmp/data/cifar10-jpeg
    python bench/same_runs.py compare /tmp/before-runs/digest.json /tmp/after-runs/digest.json

``--epochs`` and ``--subset`` shorten every pair alike (e.g. ``--epochs 2 --subset 1200``: a few minutes a pair
on one thread); the script is the same for both versions, only ``PYTHONPATH`` differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch


def tensor_digests(value: Any, where: str = "") -> dict[str, str]:
    """SHA-256 of every tensor in a nested checkpoint, keyed by its path; other leaves as their repr."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {where: f"{t.dtype} {tuple(value.shape)} " + hashlib.sha256(data).hexdigest()}
    if isinstance(value, dict):
        return {k: v for key in value for k, v in tensor_digests(value[key], f"{where}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in tensor_digests(item, f"{where}[{i}]").items()}
    return {where: repr(value)}


def run(args: argparse.Namespace) -> None:
    from ista_nas.engine.checkpoint import load_checkpoint
    from ista_nas.methods import METHODS, make_config, search
    from ista_nas.spaces import SPACES

    data = dict(item.split("=", 1) for item in args.data)
    digest = {}
    for space in SPACES:
        for method in METHODS:
            name = f"{space}-{method}"
            if args.only and name not in args.only:
                continue
            overrides = dict(space=space, method=method, device="cpu", seed=0)
            overrides.update({k: v for k, v in (("epochs", args.epochs), ("subset", args.subset)) if v is not None})
            if space in data:
                overrides["dataset"] = data[space]
            try:
                cfg = make_config("quick", **overrides)
            except Exception as exc:  # a pair the method cannot search: its refusal is the behaviour
                digest[name] = {"refused": str(exc)}
                continue
            out = Path(args.out) / name
            result = search(cfg, out)
            digest[name] = {"genotype": result.genotype.to_dict(),
                            "metrics": [{k: v for k, v in m.items() if k != "seconds"} for m in result.metrics],
                            "checkpoint": tensor_digests(load_checkpoint(out / "checkpoint.pt"))}
            print(name, "done", file=sys.stderr)
    path = Path(args.out) / "digest.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **digest}, indent=1, sort_keys=True) + "\n")


def compare(args: argparse.Namespace) -> None:
    """Pairs whose genotype, metrics or checkpoint state differ. The settings a checkpoint records (its
    ``/config/...`` entries) are listed apart: a refactor that renames or removes a setting changes them
    without changing what the search computes."""
    a, b = (json.loads(Path(p).read_text()) for p in (args.a, args.b))
    differ = 0
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        if x is None or y is None:
            differ += 1
            print(f"{name}: only in {'B' if x is None else 'A'}")
            continue
        if "refused" in x or "refused" in y:  # a pair the method cannot search: the refusals compared
            differ += x != y
            print(f"{name}: {'identical refusal' if x == y else 'refusals differ'}")
            continue
        state = [{k: v for k, v in run["checkpoint"].items() if not k.startswith("/config/")} for run in (x, y)]
        settings = sorted(k for k in set(x["checkpoint"]) | set(y["checkpoint"]) if k.startswith("/config/") and
                          x["checkpoint"].get(k) != y["checkpoint"].get(k))
        parts = [part for part, same in (("genotype", x["genotype"] == y["genotype"]),
                                         ("metrics", x["metrics"] == y["metrics"]),
                                         ("checkpoint state", state[0] == state[1])) if not same]
        note = f"; recorded settings differ: {', '.join(s.removeprefix('/config/') for s in settings)}" if settings \
            else ""
        if parts:
            differ += 1
            detail = sorted(k for k in set(state[0]) | set(state[1]) if state[0].get(k) != state[1].get(k))
            print(f"{name}: differs in {', '.join(parts)}" + (f" ({', '.join(detail[:8])})" if detail else "") + note)
        else:
            print(f"{name}: identical ({len(state[0])} checkpoint tensors and entries, {len(x['metrics'])} epochs)"
                  + note)
    raise SystemExit(1 if differ else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--data", nargs="*", default=[], metavar="SPACE=DATASET", help="a space's --dataset")
    r.add_argument("--only", nargs="*", default=[], metavar="SPACE-METHOD")
    r.add_argument("--epochs", type=int, default=None, help="fewer epochs than the quick presets' (a faster check)")
    r.add_argument("--subset", type=int, default=None, help="fewer images than the quick presets'")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args()
    run(args) if args.command == "run" else compare(args)


if __name__ == "__main__":
    main()
