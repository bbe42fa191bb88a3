"""``ista-nas report``: what a run did, from its run directory alone (``compare`` reads runs with ``read_run``).

The report is one self-contained HTML file (plots as embedded PNG data, no external resources): the loss and
accuracy curves, every decision group's support over the epochs and when it settled, the final ranked
confidences, the cell diagrams, parameters, FLOPs and time per epoch; with a benchmark table, the found cell beside
the baselines (``baselines``: the random draw and the largest cell of the op set it searched). The figures are
``plots``'s.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baselines import bench_record, run_op_set
from .front import budget_baselines, budget_line
from ..engine.rundir import RunDir
from ..errors import UserError
from ..fields import fits
from ..files import LIMITS, MARKS, atomic_write_bytes, claim_output, read_bytes
from ..files import read_json as read_json_file
from ..methods import RunRecord, evaluation_fields, run_record
from ..spaces import load_genotype, space_of
from .plots import benchmark_plots, curves, settled_after, support_history, support_plot

log = logging.getLogger(__name__)
GENERATOR = MARKS["report"].decode()  # the mark that lets a later report replace this one (files.claim_output)
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class RunInfo:
    """What the report and the comparison read from one run directory."""

    path: Path
    record: RunRecord  # what the run is: command, method, space
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    genotype: Any | None
    ranking: dict[str, Any] | None
    size: dict[str, Any] = field(default_factory=dict)  # params, flops of the evaluation network, when known
    finished: bool | None = None  # status.json: False for a run stopped early, None for one written before it
    bench: dict[str, Any] | None = None  # benchmark.json, checked (baselines.bench_record)

    @property
    def activity(self) -> str:
        """What the run did, for headings: search or training."""
        return "search" if self.record.search else "training"

    @property
    def name(self) -> str:
        if not self.record.search:
            return f"train ({self.record.space})"
        return f"{self.record.method} search ({self.record.space})"

    def best_accuracy(self) -> tuple[str, float | None]:
        for key in ("test_top1", "valid_acc", "train_acc"):
            values = [m[key] for m in self.metrics if fits(m.get(key), float)]
            if values:
                return key, max(values)
        return "-", None

    def seconds(self) -> float:
        return float(sum(m["seconds"] for m in self.metrics if fits(m.get("seconds"), float)))


def read_run(path: str | Path, with_size: bool = True) -> RunInfo:
    run, config = RunDir.open(path)
    record = run_record(config, str(run.config_path))
    genotype = load_genotype(run.path / "genotype.json") if (run.path / "genotype.json").is_file() else None
    ranking = read_json(run.path / "ranking.json")
    problem = None if ranking is None else _ranking_problem(ranking)
    if problem:
        log.warning("ignoring %s: %s; not a ranking as ista-nas writes it (cell -> groups -> candidates with an op "
                    "and a weight)", run.path / "ranking.json", problem)
        ranking = None
    info = RunInfo(run.path, record, config, run.read_metrics(warn=True), genotype, ranking, finished=run.finished(),
                   bench=bench_record(read_json(run.path / "benchmark.json"), run.path / "benchmark.json"))
    if with_size and genotype is not None:
        info.size = _size(genotype, config, record)
    return info


def _ranking_problem(ranking: Any) -> str | None:
    """What makes ``ranking`` other than a ranking as ista-nas writes it, or None: cell -> groups -> candidates,
    each an object with a string op, one of abs_z or weight (a number; one of them for the whole file), and where
    given an input node number as predecessor and a string edge."""
    if not isinstance(ranking, dict):
        return "it holds no object of cells"
    keys = set()
    for cell, groups in ranking.items():
        if not isinstance(groups, list) or not all(isinstance(entries, list) for entries in groups):
            return f"cell {cell!r:.40} is not a list of groups of candidates"
        for g, entries in enumerate(groups):
            for k, e in enumerate(entries):
                where = f"{cell!r:.40}[{g}][{k}]"
                if not isinstance(e, dict):
                    return f"{where} is not an object"
                weights = [key for key in ("abs_z", "weight") if key in e]
                if len(weights) != 1:
                    return f"{where} holds {' and '.join(weights) or 'neither abs_z nor weight'}, not one of them"
                value, predecessor = e[weights[0]], e.get("predecessor", 0)
                if not isinstance(e.get("op"), str):
                    return f"{where}: op {e.get('op')!r:.40} is not a string"
                if not (fits(value, float) and abs(value) < 1e300):
                    return f"{where}: {weights[0]} {value!r:.40} is not a number"
                if not (fits(predecessor, int) and 0 <= predecessor < 2**31):
                    return f"{where}: predecessor {predecessor!r:.40} is not an input node number"
                if not isinstance(e.get("edge", ""), str):
                    return f"{where}: edge {e.get('edge')!r:.40} is not a string"
                keys.add(weights[0])
    return "its candidates mix abs_z and weight" if len(keys) > 1 else None


def read_json(path: Path) -> Any:
    """A run's optional JSON file, or None (with a warning when it is there but unreadable or damaged)."""
    if not path.exists():
        return None
    try:
        return read_json_file(path, "run file", "the run directory is damaged")
    except UserError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def _size(genotype: Any, config: dict[str, Any], record: RunRecord) -> dict[str, Any]:
    """Parameters and FLOPs of the network the run trains or would train (its space says which: e.g. a
    two-stage DARTS-space search's budget_channels x budget_layers evaluation network)."""
    from .summary import network_summary

    channels, layers = space_of(genotype).evaluation_size(config, record.search, evaluation_fields(record))
    try:
        info = network_summary(genotype, channels, layers, config.get("dataset", "cifar10"))
    except (UserError, ValueError, RuntimeError) as exc:
        log.warning("cannot size the network of %s: %s", genotype, exc)
        return {}
    return {"params": info["params"], "flops": info["flops"], "channels": channels, "layers": layers}


# --- HTML ---

def _img(data: str | None, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">' if data else ""


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows) + \
        "</table>"


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _source(entry: dict[str, Any]) -> str:
    return f" (input {_escape(entry['predecessor'])})" if "predecessor" in entry else ""


def _ranking_html(ranking: dict[str, Any]) -> str:
    """The top candidates of every group, each with a bar of its weight (a ranking ``_ranking_problem`` passed:
    every text in it is escaped, every number checked)."""
    parts = []
    for cell, groups in ranking.items():
        for g, entries in enumerate(groups):
            top = entries[:4]
            if not top:
                continue
            key = "abs_z" if "abs_z" in top[0] else "weight"  # the file's one key
            largest = max(e[key] for e in top)
            scale = 100 / largest if largest > 0 else 0.0
            items = "".join(
                f'<li><span class="bar" style="width:{max(0.0, e[key] * scale):.0f}px"></span> '
                f'{_escape(e["op"])}{_source(e)} <small>{key} {e[key]:.3g}</small></li>' for e in top)
            name = top[0].get("edge", f"{cell}/node{g}")
            parts.append(f"<div class='rank'><b>{_escape(name)}</b><ol>{items}</ol></div>")
    return "".join(parts)


def _diagram(path: Path) -> str | None:
    """A cell drawing of the run as base64 PNG data; None, with a warning, for a file that is not a PNG image or
    cannot be read within the bound of a run file."""
    try:
        data = read_bytes(path, "cell drawing", LIMITS["json"], "the run directory is damaged")
    except UserError as exc:
        log.warning("leaving out %s: %s", path, exc)
        return None
    if not data.startswith(PNG):
        log.warning("leaving out %s: not a PNG image; the run directory is damaged", path)
        return None
    return base64.b64encode(data).decode()


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;
font-size:14px}th{background:#f3f3f3}img.plot{max-width:100%;display:block;margin:0.5em 0}
.rank{display:inline-block;vertical-align:top;margin:0 1.5em 1em 0;font-size:13px}
.bar{display:inline-block;height:9px;background:#4a86c5}code{background:#f3f3f3;padding:1px 4px}"""

# Records, once the page has loaded, how many of its plots the browser decoded (read by the tests).
CHECK = """window.addEventListener('load',function(){var i=Array.prototype.slice.call(document.images);
document.body.setAttribute('data-plots-total',i.length);
document.body.setAttribute('data-plots-loaded',i.filter(function(x){return x.complete&&x.naturalWidth>0}).length);});"""


def _epochs_finished(metrics: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """'N of E'; a one-stage run: its search epochs, then its training epochs of E."""
    phases = [m.get("phase") for m in metrics]
    if "search" not in phases and "train" not in phases:
        return f"{len(metrics)} of {config.get('epochs')}"
    cap = config.get("max_search_epochs") or "no cap"
    return (f"search {phases.count('search')} (cap {cap}), training {phases.count('train')} of "
            f"{config.get('epochs')}")


def render(info: RunInfo) -> str:
    metrics, config = info.metrics, info.config
    seconds = [m["seconds"] for m in metrics if fits(m.get("seconds"), float)]
    key, best = info.best_accuracy()
    overview = [("run", str(info.path)), ("kind", info.name), ("dataset", str(config.get("dataset"))),
                ("finished", {True: "yes", False: "no: stopped early, continue it with --resume"}.get(info.finished,
                                                                                                    "unknown")),
                ("epochs finished", _epochs_finished(metrics, config)),
                ("best accuracy", f"{best:.2f}% ({key})" if best is not None else "-"),
                ("time per epoch", f"{sum(seconds) / len(seconds):.1f} s (total {sum(seconds) / 60:.1f} min)"
                 if seconds else "-")]
    if info.genotype is not None:
        overview.append(("genotype", json.dumps(info.genotype.to_dict())))
    bench = info.bench
    if bench and bench.get("value") is not None:
        overview.append((f"benchmark {bench['metric']}", f"{bench['value']:.2f}, rank {bench['rank']} of {bench['of']} "
                                                        f"(table best {bench['best']:.2f}, mean {bench['mean']:.2f})"))
    op_set = run_op_set(bench, info.record, config) if bench and bench.get("value") is not None else None
    if op_set:
        values, largest = op_set.values, op_set.largest
        better = sum(v > bench["value"] for v in values)
        overview.append(("random draw of the searched op set", f"mean {statistics.fmean(values):.2f} +- "
                         f"{statistics.stdev(values):.2f} over {len(values)} cells; {100 * better / len(values):.1f}% "
                         "of them better than the found cell"))
        overview.append(("largest cell of the searched op set", f"{largest.describe()}; margin of the found cell "
                         f"{largest.margin(bench['value']):+.2f}"))
    budget = budget_baselines(bench, info.record, config, info.genotype)
    if budget:
        overview.append(("budget", budget_line(budget)))
    if info.size:
        overview += [("parameters", f"{info.size['params'] / 1e6:.3f}M (C={info.size['channels']}, "
                                    f"L/N={info.size['layers']}, auxiliary head excluded)"),
                     ("FLOPs", f"{info.size['flops'] / 1e6:.1f}M (multiply-add = 2)")]
    body = [f"<h1>ista-nas {html.escape(info.activity)} run</h1>", _table(overview),
            "<h2>Loss and accuracy</h2>",
            _img(curves(metrics, info.path / "metrics.jsonl"), "loss and accuracy curves")]
    if bench and bench.get("value") is not None:
        body += ["<h2>Against the benchmark table</h2>",
                 _img(benchmark_plots(metrics, bench, op_set, info.path / "benchmark.json"),
                      "table accuracy of the architecture held, and where the found cell stands")]
    history = support_history(metrics, info.path / "metrics.jsonl")
    if history:
        settled = [(name, f"epoch {settled_after(rows)}") for name, rows in history.items()]
        body += ["<h2>Supports over the search</h2>", _img(support_plot(history), "supports over the epochs"),
                 "<h3>Settled (same candidates from this epoch on)</h3>", _table(settled)]
    if info.ranking:
        body += ["<h2>Final confidences</h2>", _ranking_html(info.ranking)]
    diagrams = [p for p in (info.path / "normal.png", info.path / "reduce.png", info.path / "cell.png") if p.is_file()]
    if diagrams:
        body.append("<h2>Cells</h2>")
        body += [_img(_diagram(p), p.stem + " cell") for p in diagrams]
    body.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=1)) + "</pre>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{GENERATOR}"
            f"<title>ista-nas report: {html.escape(info.path.name)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}<script>{CHECK}</script></body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report (default RUN_DIR/report.html); returns its path."""
    path = claim_output(out, "report", "--out") if out else None  # before the run is read
    info = read_run(run_dir)
    path = path or claim_output(info.path / "report.html", "report", "--out")
    atomic_write_bytes(path, render(info).encode("utf-8", "replace"))  # a JSON string may hold a lone surrogate
    return path


def write_run_report(run_dir: str | Path) -> None:
    """The report ``ista-nas search`` writes once a search returns; a failure to draw it never fails the command
    (the search result is already safe on disk)."""
    try:
        log.info("report: %s", write_report(run_dir))
    except Exception as exc:  # noqa: BLE001 - the search result is already safe on disk
        log.warning("could not write the report of %s (%s: %s); try 'ista-nas report %s'", run_dir,
                    type(exc).__name__, exc, run_dir)
