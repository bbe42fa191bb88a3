"""The command line's grammar: every ``ista-nas`` command and its flags (``build_parser``). A run command's flags
are its settings, one per field of its config (a search's: every search's and each plug-in's); the other
commands' flags are written here. What each command does is cli.py's."""

from __future__ import annotations

import argparse
import dataclasses

from . import __version__
from .benchmark import DEFAULT_ARCH_COLUMN, DEFAULT_METRIC
from .config import RunConfig, TrainConfig
from .analysis.front import PICKS
from .limits import one_line
from .spaces import SPACES, published


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (problem + where to look) and exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see '{self.prog} --help'\n")


def _add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One flag per config field, the command's own first (those it declares or redefines, then those every run
    does not have: a search's method and plug-in settings); defaults are SUPPRESSed so only explicit flags are
    seen."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    every_run = {f.name for f in dataclasses.fields(RunConfig)}
    own = [name for name in vars(config_cls).get("__annotations__", {}) if name in fields]
    own += [name for name in fields if name not in every_run and name not in own]
    for f in [fields[name] for name in own] + [f for name, f in fields.items() if name not in own]:
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        expected = type(f.default)
        if expected is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=expected, default=argparse.SUPPRESS, metavar=f.name.upper(),
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


def _add_cost_space(parser: argparse.ArgumentParser) -> None:
    """--space of pick, pareto and latency: the spaces whose costs add up per candidate and whose table gives
    every cell's accuracy (the front)."""
    exact = [name for name, space in SPACES.items() if space.exact_budgets and space.builtin_table]
    parser.add_argument("--space", choices=exact, default=exact[0], help=f"a space with exact budgets [{exact[0]}]")


def _add_budget_flags(parser: argparse.ArgumentParser) -> None:
    """The budget of pick and pareto: one of --max-params, --max-flops, --max-latency (with --latency)."""
    from .methods.budget import BudgetSettings

    _add_cost_space(parser)
    for name in ("max_params", "max_flops", "max_latency", "latency"):
        spec = BudgetSettings.__dataclass_fields__[name]
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(spec.default), default=spec.default,
                            help=spec.metadata["help"])


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
    pick = commands.add_parser("pick", help="The cell a training-free score ranks first within a budget",
                               description="Among the cells of the op set the search chooses among whose cost is "
                                           "within the budget, the one a training-free score ranks first (the "
                                           "largest), with its cost: params and flops over every such cell, synflow "
                                           "and naswot over a uniform sample of them.")
    _add_budget_flags(pick)
    pick.add_argument("--by", choices=PICKS, default="synflow", help="the score [synflow]")
    pick.add_argument("--sample", type=int, default=100, metavar="K",
                      help="synflow, naswot: score K cells drawn at random among those within budget [100]")
    pick.add_argument("--seed", type=int, default=0, help="seed of the draw, the networks and the batch [0]")
    pick.add_argument("--with-none", action="store_true",
                      help="choose among the cells with none edges too (the DARTS baseline's op set)")
    pick.add_argument("--dataset", default="cifar10", help="naswot: the batch's dataset, as search reads it [cifar10]")
    pick.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    pick.add_argument("--batch-size", type=int, default=64, help="naswot: images in the batch [64]")
    pick.add_argument("--json", action="store_true", help="print one JSON object")
    lat = commands.add_parser("latency", help="Measure a latency table of every candidate op on this device",
                              description="Times, for every kind of candidate, the evaluation network that holds "
                                          "it in place of a reference cell's candidates against the reference "
                                          "network: its cost per place (median over the passes, spread: "
                                          "interquartile range); writes the table --latency FILE.json reads, and "
                                          "checks it against whole networks of random cells timed here (Kendall "
                                          "tau, median relative error).")
    timed = [name for name, space in SPACES.items() if "latency" in space.exact_budgets]
    default = next(name for name in timed if not SPACES[name].sized_costs)  # a benchmark's own network
    lat.add_argument("--space", choices=timed, default=default, help=f"[{default}]")
    lat.add_argument("--channels", type=int, default=None,
                     help="darts: C of the network timed, the one a budget counts (two-stage and DARTS: "
                          "--budget-channels; one-stage: --channels) [36]")
    lat.add_argument("--layers", type=int, default=None, help="darts: L of the network timed [20]")
    lat.add_argument("--nodes", type=int, default=None, help="darts: the cell's intermediate nodes [4]")
    lat.add_argument("--dataset", default=None, help="darts: the data whose classes, channels and image side the "
                                                     "network is built for (cifar10, cifar100, fashion-mnist, "
                                                     "imagenet) [cifar10]")
    lat.add_argument("--flavour", choices=("standard", "one-stage"), default=None,
                     help="darts: the ops of a two-stage or DARTS search's network, or of a one-stage one's "
                          "[standard]")
    lat.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    lat.add_argument("--out", default="latency.json", help="the table to write (.json) [latency.json]")
    lat.add_argument("--batch-size", type=int, default=1, help="images per forward pass [1]")
    lat.add_argument("--threads", type=int, default=1, help="CPU threads of the forward passes [1]")
    lat.add_argument("--warmup", type=int, default=2, help="untimed calls of each network first [2]")
    lat.add_argument("--passes", type=int, default=10,
                     help="passes over all networks; a time is the median over them [10]")
    lat.add_argument("--calls", type=int, default=3, help="calls per network and pass; the fastest counts [3]")
    lat.add_argument("--check", type=int, default=100, help="random cells timed whole to check the table [100]")
    lat.add_argument("--seed", type=int, default=0, help="seed of the check's cells and of their weights [0]")
    lat.add_argument("--json", action="store_true", help="print the table as one JSON object")
    par = commands.add_parser("pareto", help="A table's accuracy-against-cost front, with found cells and baselines",
                              description="The best table value within each cost (the front) over the op set the "
                                          "search chooses among; for each run its found cell's cost and value, its "
                                          "budget, the front's value there and its margin, the largest cell and the "
                                          "random draw within that budget; for several runs their hypervolume as a "
                                          "fraction of the front's.")
    par.add_argument("runs", nargs="*", help="search run directories")
    _add_cost_space(par)
    par.add_argument("--cost", choices=("params", "flops", "latency"), default="latency", help="[latency]")
    par.add_argument("--latency", default="", help="the latency --cost latency counts: DEVICE or FILE:COLUMN")
    par.add_argument("--metric", default="", help="the table's column [its first: cifar10]")
    par.add_argument("--with-none", action="store_true", help="the DARTS baseline's op set (cells with none too)")
    par.add_argument("--plot", default="pareto.png", help="the figure [pareto.png]")
    par.add_argument("--json", action="store_true", help="print one JSON object")
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
