"""Reports, comparisons and TensorBoard logs of real (tiny) runs."""

import base64
import json
import re
import shutil
import subprocess

import pytest

from ista_nas.cli import main
from ista_nas.report import read_run, settled_after, support_history
from ista_nas import methods


@pytest.fixture(scope="module")
def search_run(tiny_folder, tmp_path_factory):
    from ista_nas.methods import make_config

    out = tmp_path_factory.mktemp("runs") / "search"
    cfg = make_config("quick", dataset=f"folder:{tiny_folder}", subset=0, epochs=3, batch_size=12, channels=4,
                      layers=3, device="cpu", seed=0, tensorboard=True)
    methods.search(cfg, out)
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
