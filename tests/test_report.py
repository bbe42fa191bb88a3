"""Reports, comparisons and TensorBoard logs of real (tiny) runs."""

import base64
import io
import json
import logging
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from ista_nas.cli import main
from ista_nas.analysis.compare import compare, format_comparison, format_groups
from ista_nas.networks.nb201 import NB201_EXAMPLE
from ista_nas.analysis.plots import settled_after, support_history
from ista_nas.analysis.report import CHECK, read_run, render
from ista_nas import methods


@pytest.fixture(scope="module")
def search_run(tiny_folder, tmp_path_factory):
    from ista_nas.methods import make_config

    out = tmp_path_factory.mktemp("runs") / "search"
    cfg = make_config("quick", dataset=f"folder:{tiny_folder}", subset=0, epochs=3, batch_size=12, channels=4,
                      layers=3, device="cpu", seed=0, tensorboard=True)
    assert main(["search", "--preset", "quick", "--dataset", f"folder:{tiny_folder}", "--subset", "0", "--epochs", "3",
                 "--batch-size", "12", "--channels", "4", "--layers", "3", "--device", "cpu", "--seed", "0",
                 "--tensorboard", "--out", str(out)]) == 0  # the command writes the report
    assert json.loads((out / "config.json").read_text()) == cfg.record()
    return out


def _images(page):
    return re.findall(r'<img class="plot" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)


def test_a_search_writes_a_self_contained_report(search_run):
    page = (search_run / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    images = _images(page)
    assert len(images) == 4  # curves, supports, normal cell, reduce cell
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    metrics = [json.loads(line) for line in (search_run / "metrics.jsonl").read_text().splitlines()]
    genotype = json.loads((search_run / "genotype.json").read_text())
    history = support_history(metrics)
    assert len(history) == 8 and all(len(rows) == 3 for rows in history.values())
    for node in range(4):  # the last held candidates are the genotype's
        pairs = genotype["normal"][2 * node: 2 * node + 2]
        assert history[f"normal/node{node}"][-1][1] == tuple(sorted(f"{op}({p})" for op, p in pairs))
    for name, rows in history.items():  # settled: unchanged from that epoch on, changed just before it
        epoch = settled_after(rows)
        assert all(held == rows[-1][1] for e, held in rows if e >= epoch)
        assert epoch == rows[0][0] or dict(rows)[epoch - 1] != rows[-1][1]
        assert f"<tr><th>{name}</th><td>epoch {epoch}</td></tr>" in page
    assert f"{3} of {3}" in page and "parameters" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_report_opens_in_a_headless_browser_with_its_plots(search_run):
    page = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", (search_run / "report.html").as_uri()], capture_output=True, text=True,
                          timeout=120).stdout
    loaded = re.search(r'data-plots-loaded="(\d+)"', page)
    total = re.search(r'data-plots-total="(\d+)"', page)
    assert loaded and total, page[:500]
    assert int(loaded.group(1)) == int(total.group(1)) == 4


def test_tensorboard_receives_the_metrics(search_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(search_run / "tensorboard"))
    events.Reload()
    metrics = [json.loads(line) for line in (search_run / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "valid_acc", "lr"):
        logged = events.Scalars(key)
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([m[key] for m in metrics], rel=1e-6)


def test_compare_and_report_commands(search_run, tiny_folder, tmp_path, capsys):
    from ista_nas import retrain
    from ista_nas.config import make_train_config

    cfg = make_train_config("quick", genotype=str(search_run), dataset=f"folder:{tiny_folder}", subset=0,
                            epochs=2, batch_size=12, channels=4, layers=3, device="cpu")
    retrain.train(cfg, tmp_path / "train")
    assert main(["report", str(tmp_path / "train"), "--out", str(tmp_path / "train.html")]) == 0
    page = (tmp_path / "train.html").read_text()
    assert len(_images(page)) == 3 and "test" in page  # curves and the two cells; no search sections
    assert "Supports over the search" not in page
    capsys.readouterr()
    assert main(["compare", str(search_run), str(tmp_path / "train"), "--plot", str(tmp_path / "cmp.png")]) == 0
    table = capsys.readouterr().out
    search_info, train_info = read_run(search_run), read_run(tmp_path / "train")
    assert f"{search_info.size['params'] / 1e6:.3f}M" in table and f"{train_info.size['params'] / 1e6:.3f}M" in table
    assert "test_top1" in table and "valid_acc" in table
    assert (tmp_path / "cmp.png").read_bytes().startswith(b"\x89PNG")
    assert main(["report", str(tmp_path / "nowhere")]) == 2


# --- runs shared by others: every file is data (issue 43) ---

SCRIPT, IMG = "<script>x</script>", '"><img src=x onerror=y>'


def write_run(path, metrics=(), config=None, files=None, base=None):
    """A run folder written file by file, no search run: config.json (``base``, by default a quick NAS-Bench-201
    search's settings, updated by ``config``), metrics.jsonl (``metrics``) and ``files`` (name: a JSON value, or
    bytes)."""
    path.mkdir(parents=True)
    base = base or methods.make_config("quick", space="nb201", device="cpu").to_dict()
    config = {**base, **(config or {})}
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    for name, content in (files or {}).items():
        (path / name).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


class Tags(HTMLParser):
    """The start tags of a page, with their attributes, and its text."""

    def __init__(self, page):
        super().__init__()
        self.tags, self.text, self.scripts, self.open = [], [], [], None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.open = tag

    def handle_endtag(self, tag):
        self.open = None

    def handle_data(self, data):
        (self.scripts if self.open == "script" else self.text).append(data)


def assert_only_own_markup(page):
    """No markup of the inputs in ``page``: its tags and attributes are the ones render writes, its one script is
    render's own, and each image is an embedded PNG plot."""
    assert "<script>x" not in page and "<img src=x" not in page and "onerror=y>" not in page
    parsed = Tags(page)
    own = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "table", "tr", "th", "td", "img",
           "div", "b", "ol", "li", "span", "small", "pre", "script"}
    assert {tag for tag, _ in parsed.tags} <= own
    assert all(set(attrs) <= {"charset", "name", "content", "class", "style", "alt", "src"} for _, attrs in parsed.tags)
    assert [tag for tag, _ in parsed.tags].count("script") == 1 and parsed.scripts == [CHECK]
    for tag, attrs in parsed.tags:
        if tag == "img":
            assert attrs["class"] == "plot" and re.fullmatch(r"data:image/png;base64,[A-Za-z0-9+/=]+", attrs["src"])
        assert tag != "span" or re.fullmatch(r"width:\d+px", attrs["style"])
    return "".join(parsed.text)


def _png():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="png")
    return buffer.getvalue()


def test_a_report_shows_every_string_of_a_runs_files_as_text_never_as_markup(tmp_path, caplog):
    """Every string of every file a shared run holds, and its folder's name, carry markup; the report shows them
    as text (escaped) and its only tags are its own. A predecessor that is no input node number (a string, any
    other type) leaves the ranking out with a warning."""
    config = {k: SCRIPT if i % 2 else IMG for i, (k, v) in
              enumerate(methods.make_config("quick", space="nb201").to_dict().items()) if isinstance(v, str)}
    config.update({"space": "nb201", "data_dir": IMG + "\ud800", IMG: SCRIPT})  # a lone surrogate, too
    records = [{"epoch": e, "train_loss": 1.0 / e, "valid_acc": 20.0 * e, "seconds": 1.5, "phase": SCRIPT,
                "supports_changed": [IMG], "genotype": {"arch": SCRIPT}, "benchmark": 40.0 + e, IMG: SCRIPT}
               for e in (1, 2)]
    ranking = {SCRIPT: [[{"edge": IMG, "op": SCRIPT, "abs_z": 0.5, "predecessor": 1, IMG: SCRIPT},
                         {"edge": IMG, "op": IMG, "abs_z": 0.25}]]}
    bench = {"metric": SCRIPT + " $\\foo$", "table": IMG, "builtin": False, "value": 42.0, "rank": 1, "of": 2,
             "best": 60.0, "mean": 40.0, IMG: SCRIPT}
    run = write_run(tmp_path / (IMG + "<script>x"), records, config, {
        "ranking.json": ranking, "benchmark.json": bench, "genotype.json": {"arch": NB201_EXAMPLE},
        "status.json": {"finished": SCRIPT, IMG: SCRIPT}, "data.json": {"dataset": SCRIPT, "identity": IMG},
        "normal.png": SCRIPT.encode(), "reduce.png": _png()})
    with caplog.at_level(logging.WARNING):
        assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    text = assert_only_own_markup(page)
    for shown in (SCRIPT, IMG, f"{IMG}<script>x", f"{SCRIPT} $\\foo$"):  # as text: the folder, ops, edges, metric
        assert shown in text
    assert "Final confidences" in page and " (input 1)" in text
    assert len(_images(page)) == 3  # curves, the benchmark plots, reduce.png; normal.png is no PNG
    assert "not a PNG image" in caplog.text and "damaged genotypes left out" in caplog.text
    # A genotype.json of markup is refused in one line; nothing is written.
    (run / "genotype.json").write_text(json.dumps({"arch": SCRIPT}))
    assert main(["report", str(run), "--out", str(tmp_path / "g.html")]) == 2 and not (tmp_path / "g.html").exists()
    for name in ("genotype.json", "benchmark.json", "metrics.jsonl"):  # no plots: the loop below reads rankings
        (run / name).unlink()
    # A predecessor that is no input node number: the ranking is left out, with a warning naming it.
    for predecessor in (SCRIPT, IMG, "1", 1.5, True, None, -1, 2**40, [SCRIPT], {IMG: SCRIPT}):
        (run / "ranking.json").write_text(json.dumps({"normal": [[{"predecessor": predecessor, "op": "x",
                                                                   "abs_z": 1.0}]]}))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            page = render(read_run(run))
        assert_only_own_markup(page)
        assert "Final confidences" not in page and "predecessor" in caplog.text, predecessor


def test_a_ranking_mixing_abs_z_and_weight_is_left_out_with_a_warning(tmp_path, caplog):
    """ista-nas writes one of abs_z (the sparse code) and weight (a dense method's softmax) for a whole ranking;
    a file mixing them (a hand edit, two files merged) is not a ranking: left out, named in a warning. One key
    throughout is shown, each bar scaled to its group's largest value."""
    def entry(key, op, value, predecessor):
        return {"predecessor": predecessor, "op": op, key: value}

    mixed = [{"normal": [[entry("abs_z", "sep_conv_3x3", 0.5, 0), entry("weight", "skip_connect", 0.9, 1)]]},
             {"normal": [[entry("abs_z", "sep_conv_3x3", 0.5, 0)]], "reduce": [[entry("weight", "none", 0.9, 1)]]},
             {"normal": [[{**entry("abs_z", "sep_conv_3x3", 0.5, 0), "weight": 0.9}]]}]
    run = write_run(tmp_path / "run", [{"epoch": 1, "valid_acc": 50.0}])
    for ranking in mixed:
        (run / "ranking.json").write_text(json.dumps(ranking))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            page = render(read_run(run))
        assert "Final confidences" not in page
        assert "ranking.json" in caplog.text and ("mix abs_z and weight" in caplog.text or
                                                  "holds abs_z and weight" in caplog.text)
    (run / "ranking.json").write_text(json.dumps({"normal": [[entry("weight", "sep_conv_3x3", 0.8, 0),
                                                              entry("weight", "skip_connect", 0.2, 1)]]}))
    page = render(read_run(run))
    assert ('<li><span class="bar" style="width:100px"></span> sep_conv_3x3 (input 0) <small>weight 0.8</small>'
            '</li><li><span class="bar" style="width:25px"></span> skip_connect (input 1) <small>weight 0.2</small>'
            in page)


def test_compare_and_report_draw_numbers_past_a_plots_range_at_its_bound(tmp_path, caplog):
    """Finite numbers a hand edit left in metrics.jsonl (+-1e308: they pass the finite check, but broke
    matplotlib) are drawn at the bound of the plot (an accuracy 0..100, anything else +-1e15) with a warning; a
    group's mean +- std of them is computed exactly (fmean's running sum overflowed), not a traceback."""
    from ista_nas.config import make_train_config

    # Training runs of a small network (their parameters are counted at the run's own C and L: cheap to count).
    train = make_train_config("quick", space="nb201", genotype=NB201_EXAMPLE, channels=4, layers=1).to_dict()
    genotype = {"genotype.json": {"arch": NB201_EXAMPLE}}
    write_run(tmp_path / "runs" / "seed-0", [{"epoch": 1, "valid_acc": 50.0, "valid_loss": 1.0, "seconds": 1e308},
                                             {"epoch": 2, "valid_acc": 1e308, "valid_loss": -1e308, "seconds": 1e308}],
              {"seed": 0}, genotype, train)
    write_run(tmp_path / "runs" / "seed-1", [{"epoch": 1, "valid_acc": 1.7e308, "train_loss": 1e308}], {"seed": 1},
              genotype, train)
    write_run(tmp_path / "runs" / "other", [{"epoch": 1, "valid_acc": -1e308}], {"seed": 0, "lr": 0.1}, genotype,
              train)
    with caplog.at_level(logging.WARNING):
        infos, groups, plot = compare([tmp_path / "runs"], tmp_path / "c.png")
        assert main(["report", str(tmp_path / "runs" / "seed-0"), "--out", str(tmp_path / "r.html")]) == 0
    assert plot.read_bytes().startswith(b"\x89PNG") and format_comparison(infos) and format_groups(groups)
    assert "drawn at the bound" in caplog.text and "valid_acc outside 0..100" in caplog.text
    assert len(_images((tmp_path / "r.html").read_text())) == 1
    best = {tuple(g["seeds"]): g["best_accuracy"] for g in groups}
    assert best[(0, 1)]["mean"] == pytest.approx(1.35e308) and best[(0, 1)]["std"] == pytest.approx(0.7e308 / 2**0.5)
    assert best[(0,)]["mean"] == -1e308
