"""The ``ista-nas`` command: parses flags and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .benchmark import DEFAULT_ARCH_COLUMN, DEFAULT_METRIC, NO_TABLE
from .config import TrainConfig, train_settings
from .errors import IstaNasError, UserError
from .files import claim_folder
from .limits import one_line
from .spaces import SPACES, check_network, get_genotype, published, space_of, write_diagrams

log = logging.getLogger("ista_nas")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (problem + where to look) and exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see '{self.prog} --help'\n")


def _add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per config field, the command's own fields first; defaults are SUPPRESSed so only explicit flags
    are seen."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    own = [name for name in vars(config_cls).get("__annotations__", {}) if name in fields]
    for f in [fields[name] for name in own] + [f for name, f in fields.items() if name not in own]:
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = type(f.default)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=f.name.upper(),
                                help=f.metadata["help"])


def _add_run_command(commands, name: str, config_cls: type, help: str, presets: list[str]) -> None:
    sub = commands.add_parser(name, help=help, description=f"{help}. Start from a preset; every flag overrides it.")
    sub.add_argument("--preset", default=argparse.SUPPRESS,
                     help=f"starting settings: {', '.join(presets)} (which ones a space and a method offer: "
                          "an unknown one is named with the choices) [default: paper]")
    sub.add_argument("--out", default=None, help=f"new run directory [default: runs/{name}-TIMESTAMP]")
    sub.add_argument("--resume", metavar="DIR", default=None,
                     help="continue the run in DIR from its last checkpoint (--epochs and --device may change)")
    _add_config_flags(sub, config_cls)


def _add_table_flags(parser: argparse.ArgumentParser, required: bool, builtin: str = "") -> None:
    """--benchmark, --arch-column, --metric; ``builtin`` names the built-in tables a missing --benchmark reads."""
    parser.add_argument("--benchmark", required=required, default=None, metavar="FILE",
                        help="benchmark table: CSV with a header, or JSON lines, one architecture a row"
                             + (f" [the built-in table of the architecture's space: {builtin}]" if builtin else ""))
    parser.add_argument("--arch-column", default=DEFAULT_ARCH_COLUMN,
                        help=f"the table's column of architecture strings [{DEFAULT_ARCH_COLUMN}]")
    parser.add_argument("--metric", default=None if builtin else DEFAULT_METRIC,
                        help=f"the table's numeric column to read [{DEFAULT_METRIC}"
                             + ("; a built-in table: its first]" if builtin else "]"))


def _builtin_tables() -> str:
    return "; ".join(f"{name}, metrics {' | '.join(space.builtin_table[1])}" for name, space in SPACES.items()
                     if space.builtin_table)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ista-nas", description="ISTA-NAS: architecture search by sparse coding")
    parser.add_argument("--version", action="version", version=f"ista-nas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from .methods import METHODS, SearchConfig

    search_presets = [SearchConfig.PRESETS, *(m.presets for m in METHODS.values()),
                      *(s.search_presets for s in SPACES.values()),
                      *(s.target.presets for s in SPACES.values() if s.target)]
    _add_run_command(commands, "search", SearchConfig, "Search a cell architecture: two-stage or one-stage ISTA-NAS, "
                     "or the DARTS baseline (--method)", list(dict.fromkeys(n for t in search_presets for n in t)))
    commands.choices["search"].add_argument(
        "--config", metavar="FILE", default=None,
        help="start a new search from a run's config.json (or a file of the same form): its settings, with every "
             "flag given overriding them (--seed for a new seed); the same seed reproduces the run")
    commands.choices["search"].add_argument(
        "--seeds", type=int, nargs="+", default=None, metavar="S",
        help="run the search once per seed, each in its own run directory OUT/seed-S; the same command again "
             "resumes the unfinished ones (ista-nas compare OUT summarises them)")
    train_presets = [TrainConfig.PRESETS, *(s.train_presets for s in SPACES.values())]
    _add_run_command(commands, "train", TrainConfig, "Train a genotype's network from scratch and test it",
                     list(dict.fromkeys(n for t in train_presets for n in t)))
    ev = commands.add_parser("evaluate", help="Test accuracy of a trained checkpoint",
                             description="Test loss, top-1 and top-5 accuracy of a checkpoint written by train.")
    ev.add_argument("checkpoint", help="checkpoint.pt of a training run (or the run directory)")
    ev.add_argument("--dataset", default=None, help="dataset to test on [default: the one it was trained on]")
    ev.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ex = commands.add_parser("export", help="Write a trained model as one deployable TorchScript or ONNX file",
                             description="Export a checkpoint written by train: normalisation, network and "
                                         "metadata (genotype, classes, accuracy) in one file.")
    ex.add_argument("checkpoint", help="checkpoint.pt of a training run (or the run directory)")
    ex.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript", help="[torchscript]")
    ex.add_argument("--out", default=None, help="output file [model.pt or model.onnx beside the checkpoint]")
    bench = commands.add_parser("bench", help="Time the sparse ISTA-NAS step against the dense DARTS step",
                                description="Median seconds per search step (architecture + weight update) of "
                                            "the sparse and the dense supernet, the retrain step and recovery.")
    bench.add_argument("--space", choices=tuple(SPACES), default="darts", help="the supernets' space [darts]")
    bench.add_argument("--layers", type=int, default=0,
                       help="cells L (a space of stages: per stage) [the space's paper size]")
    bench.add_argument("--channels", type=int, default=16, help="initial channels C of the search nets [16]")
    bench.add_argument("--size", type=int, default=32, help="input side [32]")
    bench.add_argument("--batch-size", type=int, default=64, help="search batch [64]")
    bench.add_argument("--steps", type=int, default=5, help="timed steps per figure [5]")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps first [2]")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    bench.add_argument("--retrain", action=argparse.BooleanOptionalAction, default=True,
                       help="also time the retrain network (batch 96)")
    bench.add_argument("--retrain-channels", type=int, default=36, help="its C [36]")
    bench.add_argument("--retrain-layers", type=int, default=20, help="its L [20]")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    show = commands.add_parser("show", help="Cells, parameters, FLOPs and diagrams of a genotype",
                               description="Print a genotype's cells, parameters and FLOPs; draw its cells.")
    written = [f"'{space.example}' ({space.name})" for space in SPACES.values() if space.example]
    show.add_argument("genotype", help=f"a built-in name ({', '.join(published())}), a genotype.json, a run directory "
                                       f"or a written architecture such as {' or '.join(written)}")
    sizes = "; ".join(f"{name}: {space.default_size[0]}" for name, space in SPACES.items())
    show.add_argument("--channels", type=int, default=None, help=f"initial channels C [{sizes}]")
    sizes = "; ".join(f"{name}: {space.default_size[1]}" for name, space in SPACES.items())
    show.add_argument("--layers", type=int, default=None, help=f"cells L, or cells per stage N where the space has "
                                                               f"stages [{sizes}]")
    show.add_argument("--dataset", default="cifar10", help="input size and classes: cifar10, cifar100, "
                      "fashion-mnist, imagenet or folder:PATH [cifar10]")
    show.add_argument("--out", default=None,
                      help="folder for the cell drawings (normal/reduce or cell .png and .svg) [diagrams/NAME]")
    show.add_argument("--json", action="store_true", help="print one JSON object (params, flops, ...) only")
    rep = commands.add_parser("report", help="Write a run's self-contained HTML report",
                              description="Curves, supports over the epochs, confidences, cells, parameters, "
                                          "FLOPs and time per epoch of a search or training run, in one HTML file.")
    rep.add_argument("run", help="a run directory")
    rep.add_argument("--out", default=None, help="HTML file to write [RUN/report.html]")
    look = commands.add_parser("lookup", help="An architecture's accuracy and rank in a benchmark table",
                               description="The benchmark metric of a run's (or a written) architecture, its rank "
                                           "among all the table's architectures, the table's best and mean, its "
                                           "parameter rank, and the largest cell of its op set with its margin.")
    look.add_argument("arch", help="a search or training run directory, a genotype.json or a written architecture")
    _add_table_flags(look, required=False, builtin=_builtin_tables())
    look.add_argument("--json", action="store_true", help="print one JSON object")
    cor = commands.add_parser("correlate", help="Kendall tau and Spearman rho between a search and evaluation",
                              description="How well a search run ranks architectures as their true accuracy does "
                                          "(docs/consistency.md): the trajectory of architectures it held, or K "
                                          "architectures scored with its trained supernet. Writes correlation.json, "
                                          "scatter.png and the architectures scored into --out.")
    cor.add_argument("run", help="a search run directory")
    cor.add_argument("--protocol", choices=("trajectory", "ranking"), default="trajectory",
                     help="trajectory: its supernet accuracy each epoch against the true accuracy of the architecture "
                          "it held; ranking: K sampled architectures scored with its supernet [trajectory]")
    _add_table_flags(cor, required=False, builtin=_builtin_tables() + "; none: no table")
    cor.add_argument("--truth", nargs="+", metavar="RUN", default=None,
                     help="ista-nas train run directories whose final test top-1 is the true accuracy (instead of "
                          "--benchmark)")
    cor.add_argument("--k", type=int, default=16, help="ranking: architectures sampled [16]")
    cor.add_argument("--sample-seed", type=int, default=0, help="ranking: seed of the sample [0]")
    cor.add_argument("--calibration-batches", type=int, default=10,
                     help="ranking: training batches that re-estimate batch-norm statistics per architecture [10]")
    cor.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    cor.add_argument("--out", default=None, help="output folder [RUN/correlate-PROTOCOL]")
    cor.add_argument("--json", action="store_true", help="print the result as one JSON object")
    prx = commands.add_parser("proxies", help="Zero-cost proxies of cells, and how they rank them against a table",
                              description="Parameters, FLOPs, synflow, NASWOT, grad_norm and snip of each cell's "
                                          "evaluation network at initialisation, from one batch; with a table, each "
                                          "one's Kendall tau and Spearman rho and the value of the cell it ranks "
                                          "first.")
    prx.add_argument("cells", nargs="*", help="built-in names, genotype.json files, run directories or written cells")
    prx.add_argument("--sample", type=int, default=0, metavar="K",
                     help="also K cells drawn from the op set the sparse search of --space chooses among [0]")
    prx.add_argument("--sample-seed", type=int, default=0, help="seed of the draw [0]")
    prx.add_argument("--space", choices=list(SPACES), default=None, help="the space --sample draws from")
    prx.add_argument("--dataset", default="cifar10", help="the batch's dataset, as search reads it [cifar10]")
    prx.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    prx.add_argument("--batch-size", type=int, default=64, help="images in the batch [64]")
    prx.add_argument("--seed", type=int, default=0, help="seed of the networks' initialisation and the batch [0]")
    prx.add_argument("--channels", type=int, default=None, help="C of the networks [the space's evaluation size]")
    prx.add_argument("--layers", type=int, default=None, help="L or N of the networks [the space's evaluation size]")
    prx.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add_table_flags(prx, required=False, builtin=_builtin_tables() + "; none: no table")
    prx.add_argument("--json", action="store_true", help="print one JSON object")
    cmp_ = commands.add_parser("compare", help="Runs side by side, and mean +- std over seeds",
                               description="Method, genotype, parameters, best accuracy and time of several runs; "
                                           "runs of the same settings but their seed grouped: mean +- std of best "
                                           "accuracy, benchmark value and time.")
    cmp_.add_argument("runs", nargs="+", help="run directories, or folders of them (the --out of search --seeds)")
    cmp_.add_argument("--plot", default="compare.png",
                      help="accuracy against parameters, and the spread over seeds [compare.png]")
    _add_table_flags(cmp_, required=False)
    cmp_.add_argument("--json", action="store_true", help="print the groups of seeds as JSON")
    return parser


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
             "lookup": _lookup, "correlate": _correlate, "proxies": _proxies}[args.command](args)
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
