"""The ``ista-nas`` command: parses flags and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .benchmark import NO_TABLE
from .config import train_settings
from .errors import IstaNasError, UserError
from .flags import build_parser
from .files import claim_folder
from .limits import one_line
from .spaces import check_network, get_genotype, space_of, write_diagrams

log = logging.getLogger("ista_nas")


def _report(args: argparse.Namespace) -> None:
    from .analysis.report import write_report

    print(write_report(args.run, args.out))


def _compare(args: argparse.Namespace) -> None:
    from .benchmark import load_table
    from .analysis.compare import compare, format_comparison, format_groups

    table = load_table(args.benchmark, args.arch_column, args.metric) if args.benchmark else None
    infos, groups, plot = compare(args.runs, args.plot, table)
    if args.json:
        print(json.dumps(groups))
        return
    print(format_comparison(infos))
    print("\nover seeds (mean +- sample std):")
    print(format_groups(groups))
    print(f"plot: {plot}")


def _lookup(args: argparse.Namespace) -> None:
    from .analysis.baselines import format_lookup, lookup

    result = lookup(args.arch, args.benchmark, args.arch_column, args.metric)
    print(json.dumps(result) if args.json else format_lookup(result))


def _correlate(args: argparse.Namespace) -> None:
    from .benchmark import table_for
    from .analysis.consistency import correlate, format_result, run_space, truth_from_runs, truth_from_table

    if args.benchmark and args.truth:
        raise UserError("--benchmark and --truth exclude each other; give one source of true accuracy")
    table = None if args.truth else table_for(run_space(args.run), args.benchmark, args.arch_column, args.metric)
    truth = truth_from_runs(args.truth) if args.truth else truth_from_table(table) if table else None
    out = args.out or str(Path(args.run) / f"correlate-{args.protocol}")
    result = correlate(args.run, out, args.protocol, truth, args.k, args.sample_seed, args.calibration_batches,
                       args.device)
    print(json.dumps(result) if args.json else format_result(result) + f"\nwritten: {out}")


def _proxies(args: argparse.Namespace) -> None:
    from .analysis.proxies import format_score, score

    result = score(args.cells, args.sample, args.sample_seed, args.space, args.dataset, args.batch_size, args.seed,
                   args.channels, args.layers, args.device, args.benchmark, args.arch_column, args.metric,
                   args.data_dir)
    print(json.dumps(result) if args.json else format_score(result))


def _pick(args: argparse.Namespace) -> None:
    import torch

    from .analysis.front import budget_from, format_pick, pick
    from .analysis.proxies import one_batch
    from .limits import check_seed

    check_seed(args.seed, "--seed")
    if args.sample < 1 or args.batch_size < 2:
        raise UserError(f"--sample and --batch-size must be at least 1 and 2, got {args.sample} and {args.batch_size}")
    budget = budget_from(args.space, args.with_none, max_params=args.max_params, max_flops=args.max_flops,
                         max_latency=args.max_latency, latency=args.latency)
    if args.by == "naswot":
        batch, classes = one_batch(args.dataset, args.batch_size, args.seed, args.data_dir)
    else:  # synflow reads no data (one all-ones image); params and flops no network
        batch, classes = (torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)), 10
    result = pick(args.space, budget.kind, args.latency, budget.limit, args.by, args.sample, args.seed,
                  args.with_none, batch, classes)
    print(json.dumps(result) if args.json else format_pick(result))


def _latency_size(args: argparse.Namespace) -> Any:
    """The network ``ista-nas latency`` times, where the space's costs depend on it (the DARTS cell's); None
    where the space times its own (a benchmark's network)."""
    from .engine.data import DATASET_SHAPES
    from .limits import MAX_NODES, check_count
    from .networks.cnn import stem_for
    from .spaces import SPACES
    from .spaces.base import CostSize

    space = SPACES[args.space]
    given = [f"--{name}" for name in ("channels", "layers", "nodes", "dataset", "flavour")
             if getattr(args, name) is not None]
    if not space.sized_costs:
        if given:
            raise UserError(f"{' and '.join(given)}: --space {args.space} times its own evaluation network; leave "
                            f"{'them' if len(given) > 1 else 'it'} out")
        return None
    channels = space.default_size[0] if args.channels is None else args.channels
    layers = space.default_size[1] if args.layers is None else args.layers
    nodes, dataset = 4 if args.nodes is None else args.nodes, args.dataset or "cifar10"
    for flag, value, low, high in (("--channels", channels, 2, 1024), ("--layers", layers, 3, 200),
                                   ("--nodes", nodes, 1, MAX_NODES)):
        check_count(flag, value, low, high)
    if dataset not in DATASET_SHAPES:
        raise UserError(f"--dataset {dataset}: give one of {', '.join(DATASET_SHAPES)} (the network's classes, "
                        "channels and image side)")
    classes, in_channels, side = DATASET_SHAPES[dataset]
    return CostSize(channels, layers, nodes, classes, in_channels, side, stem_for(side), args.flavour or "standard")


def _latency(args: argparse.Namespace) -> None:
    from .engine.loop import resolve_device
    from .files import atomic_write_bytes, claim_output
    from .hardware import measure
    from .limits import check_count, check_seed

    if not args.out.lower().endswith(".json"):
        raise UserError(f"--out {args.out}: a latency table is a .json file (what --latency FILE.json reads)")
    out = claim_output(args.out, "json", "--out")
    for flag, value, low, high in (("--batch-size", args.batch_size, 1, 4096), ("--warmup", args.warmup, 0, 10_000),
                                   ("--passes", args.passes, 3, 10_000), ("--calls", args.calls, 1, 10_000),
                                   ("--check", args.check, 2, 10_000), ("--threads", args.threads, 1, 1024)):
        check_count(flag, value, low, high)
    check_seed(args.seed)
    size = _latency_size(args)
    device = resolve_device(args.device)
    table = measure(args.space, device, args.batch_size, args.warmup, args.passes, args.calls, args.check, args.seed,
                    args.threads, size)
    atomic_write_bytes(out, json.dumps(table, indent=1).encode())
    check = table["check"]
    print(json.dumps(table) if args.json else
          f"{table['space']} on {table['device_name']} ({table['device']}, {table['threads']} thread(s), batch "
          f"{table['batch_size']}): every candidate op timed; {check['cells']} whole networks: Kendall tau {check['kendall_tau']:.3f} and median "
          f"relative error {100 * check['median_relative_error']:.1f}% of the table's prediction\nwritten: {out} "
          f"(use --latency {out})")


def _pareto(args: argparse.Namespace) -> None:
    from .analysis.front import format_pareto, pareto
    from .analysis.report import read_run
    from .files import claim_plot

    if (args.cost == "latency") != bool(args.latency):
        raise UserError("--cost latency needs --latency DEVICE or FILE:COLUMN, and --latency is read only with it")
    plot = claim_plot(args.plot, "--plot")
    runs = [read_run(r, with_size=False) for r in args.runs]
    result = pareto(runs, args.space, args.cost, args.latency, args.metric, args.with_none, plot)
    print(json.dumps(result) if args.json else format_pareto(result) + f"\nwritten: {plot}")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _run_command(args: argparse.Namespace, module: Any, make: Any, start: Any) -> Any:
    """search and train: a new run from a preset and flags, or --resume of an existing one; its result."""
    from .engine.rundir import default_out

    given: dict[str, Any] = {k: v for k, v in vars(args).items()
                             if k not in ("command", "verbose", "out", "resume")}
    if args.resume is not None:
        if args.out is not None:
            raise UserError("--out and --resume exclude each other; --resume continues the run where it is")
        return module.resume(args.resume, **given)
    # Paths are stored absolute, so a resume works from any directory.
    if given.get("dataset", "").startswith("folder:"):
        given["dataset"] = "folder:" + _absolute(given["dataset"][len("folder:"):])
    if given.get("benchmark") and given["benchmark"] != NO_TABLE:
        given["benchmark"] = _absolute(given["benchmark"])
    if given.get("data_dir"):
        given["data_dir"] = _absolute(given["data_dir"])
    if "genotype" in given and Path(given["genotype"]).exists():
        given["genotype"] = _absolute(given["genotype"])
    cfg = make(**given)
    with default_out(args.out, f"runs/{args.command}") as out:
        return start(cfg, out)


def _search(args: argparse.Namespace) -> None:
    from . import methods
    from .analysis.report import write_run_report
    from .engine.distributed import launched_as_main

    seeds, config = vars(args).pop("seeds"), vars(args).pop("config")
    if config is not None:
        if args.resume is not None:
            raise UserError("--config starts a new run and --resume continues one; give one of them")
        for key, value in methods.stored_settings(config).items():  # flags given override the file
            vars(args).setdefault(key, value)
    if seeds is None:
        results = [_run_command(args, methods, methods.settings, methods.search)]  # search validates the settings
    elif args.resume is not None or ("seed" in vars(args) and config is None):
        raise UserError("--seeds excludes --seed and --resume; give the same --seeds and --out again to continue")
    else:
        results = _run_command(args, methods, methods.settings, lambda cfg, out: methods.search_seeds(cfg, seeds, out))
    if launched_as_main():  # one process writes each run's report
        for result in results:
            write_run_report(result.run_dir)


def _train(args: argparse.Namespace) -> None:
    from . import retrain

    _run_command(args, retrain, train_settings, retrain.train)  # train validates the settings


def _evaluate(args: argparse.Namespace) -> None:
    from . import retrain

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    result = retrain.evaluate_checkpoint(_checkpoint_path(args.checkpoint), args.dataset, args.data_dir,
                                         args.device, args.batch_size)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['dataset']} test split, {result['images']} images: top-1 {result['top1']:.2f}%  "
              f"top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}")


def _checkpoint_path(arg: str) -> Path:
    path = Path(arg)
    return path / "checkpoint.pt" if path.is_dir() else path


def _export(args: argparse.Namespace) -> None:
    from .export import export

    print(export(_checkpoint_path(args.checkpoint), args.format, args.out))


def _bench(args: argparse.Namespace) -> None:
    from .bench import format_table, run_bench

    result = run_bench(args.layers, args.channels, args.size, args.batch_size, args.steps, args.warmup, args.device,
                       args.channels_last, args.retrain, space=args.space,
                       retrain_size=(args.retrain_channels, args.retrain_layers))
    print(json.dumps(result) if args.json else format_table(result))


def _show(args: argparse.Namespace) -> None:
    from .analysis.baselines import space_parameter_rank
    from .analysis.summary import network_summary

    genotype = get_genotype(args.genotype)
    space = space_of(genotype)
    channels = args.channels if args.channels is not None else space.default_size[0]
    layers = args.layers if args.layers is not None else space.default_size[1]
    check_network(space.name, channels, layers, genotype, least_channels=2)
    space.check_size(channels, layers, args.dataset)
    info = network_summary(genotype, channels, layers, args.dataset)
    rank = space_parameter_rank(genotype, channels, layers, args.dataset)
    if rank:
        info["parameter_rank"] = rank
    out = claim_folder(args.out or Path("diagrams") / Path(args.genotype).stem, "--out")
    info["diagrams"] = [str(p) for p in write_diagrams(genotype, out)]
    if args.json:
        print(json.dumps({"genotype": genotype.to_dict(), **info}))
        return
    print("\n".join(space.describe(genotype, info)))
    if rank:
        print(f"parameter rank {rank['rank']} of the space's {rank['of']} cells (1 = the most parameters)")
    print(f"diagrams: {', '.join(info['diagrams'])}")


def main(argv: list[str] | None = None) -> int:
    from .engine import distributed

    args = build_parser().parse_args(argv)
    main_rank = True
    try:
        if args.command in ("search", "train"):  # under torchrun: rank 0 logs
            main_rank = distributed.launched_as_main()
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if main_rank else logging.WARNING,
                            format="%(message)s", stream=sys.stderr)
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            {"search": _search, "train": _train, "evaluate": _evaluate, "show": _show,
             "export": _export, "bench": _bench, "report": _report, "compare": _compare,
             "lookup": _lookup, "correlate": _correlate, "proxies": _proxies,
             "pick": _pick, "pareto": _pareto, "latency": _latency}[args.command](args)
    except IstaNasError as exc:
        if not getattr(exc, "reported_by_main", False):
            print(f"ista-nas: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if main_rank:
            print("ista-nas: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
