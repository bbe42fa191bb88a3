"""Benchmark tables, lookups, ranks, Kendall tau and Spearman rho between a search and evaluation, checked
against independent truths: scipy's statistics, tables generated so that every answer is known by construction,
the discrete network of an architecture given the supernet's weights, and the bad-input cases."""

import csv
import itertools
import json
import math
import random
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from ista_nas.analysis.report import write_run_report
from ista_nas.benchmark import builtin_table, load_table
from ista_nas.cli import main
from ista_nas.analysis.consistency import (_recalibrate, architecture_key, correlate, correlation, sample_architectures,
                                  supernet_scores, truth_from_runs, truth_from_table)
from ista_nas.engine.checkpoint import load_checkpoint
from ista_nas.errors import UserError
from ista_nas.methods import make_config, search
from ista_nas.networks.nb201 import NB201_EDGES, NB201_OPS, Nb201Arch, Nb201Network
from ista_nas.networks.nb201_search import Nb201DenseSearchNetwork, Nb201SearchNetwork
from ista_nas.spaces import SPACES

ALL = [Nb201Arch(ops) for ops in itertools.product(NB201_OPS, repeat=len(NB201_EDGES))]


def write_table(path, rows, columns=("arch", "test_acc")):
    """rows: tuples in ``columns`` order; CSV or JSON lines by the suffix."""
    if path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(dict(zip(columns, row))) + "\n" for row in rows))
    return path


def known_table(tmp_path, suffix=".csv", n=300, seed=0):
    """n architectures with values that repeat (ties), and their ranks by the definition: 1 + the number of
    architectures with a strictly higher value."""
    rng = random.Random(seed)
    archs = rng.sample(ALL, n)
    values = [float(rng.randrange(40)) / 2 for _ in archs]
    path = write_table(tmp_path / f"table{suffix}", [(str(a), v) for a, v in zip(archs, values)])
    ranks = [1 + sum(w > v for w in values) for v in values]
    return path, archs, values, ranks


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_lookup_gives_value_rank_best_and_mean_by_their_definitions(tmp_path, suffix):
    path, archs, values, ranks = known_table(tmp_path, suffix)
    table = load_table(path)
    assert len(table) == len(archs) and table.best == max(values)
    assert math.isclose(table.mean, statistics.fmean(values))
    scipy_ranks = stats.rankdata([-v for v in values], method="min")
    for arch, value, rank, expected in zip(archs, values, ranks, scipy_ranks):
        entry = table.lookup(arch)
        assert (entry.value, entry.rank, entry.size) == (value, rank, len(archs)) and rank == expected
    assert table.get(next(a for a in ALL if a not in set(archs))) is None


def test_any_numeric_column_serves_and_the_cli_prints_the_entry(tmp_path, capsys):
    rows = [(str(ALL[i]), 90.0 + i, 70.0 - i) for i in range(5)]
    path = write_table(tmp_path / "t.csv", rows, ("arch", "cifar10", "cifar100"))
    assert load_table(path, metric="cifar100").lookup(ALL[0]).rank == 1
    assert load_table(path, metric="cifar10").lookup(ALL[0]).rank == 5
    assert main(["lookup", str(ALL[3]), "--benchmark", str(path), "--metric", "cifar10", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {k: found[k] for k in ("metric", "arch", "value", "rank", "of", "best", "mean")} == \
        {"metric": "cifar10", "arch": str(ALL[3]), "value": 93.0, "rank": 2, "of": 5, "best": 94.0, "mean": 92.0}
    renamed = write_table(tmp_path / "r.jsonl", rows, ("architecture", "acc", "x"))
    assert main(["lookup", str(ALL[1]), "--benchmark", str(renamed), "--arch-column", "architecture",
                 "--metric", "acc"]) == 0
    assert "rank 4 of 5" in capsys.readouterr().out


BAD_TABLES = {
    "no arch column": ("arch,acc\n" + f"{ALL[0]},1\n", "no column 'test_acc'"),
    "no metric column": ("name,test_acc\n" + f"{ALL[0]},1\n", "no column 'arch'"),
    "duplicate": (f"arch,test_acc\n{ALL[0]},1\n{ALL[1]},2\n{ALL[0]},3\n", "line 4 repeats"),
    "malformed": ("arch,test_acc\n|nor_conv_3x3~0|+|none~1|,1\n", "line 2"),
    "not an arch": ("arch,test_acc\nresnet,1\n", "no architecture string"),
    "non-numeric": (f"arch,test_acc\n{ALL[0]},high\n", "not a finite number"),
    "nan": (f"arch,test_acc\n{ALL[0]},nan\n", "not a finite number"),
    "empty": ("arch,test_acc\n", "no rows"),
    "extra field": (f"arch,test_acc\n{ALL[0]},1,2\n", "line 2 has 3 fields, the header 2"),
    "row cut short": (f"arch,test_acc,x\n{ALL[0]},1.5,2\n{ALL[1]},86.\n", "line 3 has 2 fields, the header 3"),
    "number cut short": (f"arch,test_acc\n{ALL[0]},86.\n", "not a finite number written whole"),
    "last line cut": (f"arch,test_acc\n{ALL[0]},86.57\n{ALL[1]},86.5", "line 3 has no line end"),
    "blank": ("\n\n", "is empty"),
    "no header": (f"\n{ALL[0]},1\n", "line 1 is no header"),
    "bad json line": ('{"arch": "x", "test_acc": 1}\n{oops\n', "line 2 is not JSON"),
    "json not an object": ('{"arch": "x", "test_acc": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_bad_tables_get_one_line_and_exit_code_2(case, tmp_path, capsys):
    text, expected = BAD_TABLES[case]
    path = tmp_path / ("t.jsonl" if text.startswith("{") else "t.csv")
    path.write_text(text)
    with pytest.raises(UserError, match=expected.replace("|", r"\|")):
        load_table(path)
    assert main(["lookup", str(ALL[0]), "--benchmark", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ista-nas: error:") and err.count("\n") == 1


def test_an_architecture_the_table_lacks_and_a_missing_file_are_user_errors(tmp_path, capsys):
    path = write_table(tmp_path / "t.csv", [(str(ALL[0]), 1.0)])
    assert main(["lookup", str(ALL[1]), "--benchmark", str(path)]) == 2
    assert "is not in the benchmark table" in capsys.readouterr().err
    assert main(["lookup", str(ALL[1]), "--benchmark", str(tmp_path / "none.csv")]) == 2
    assert "no benchmark table at" in capsys.readouterr().err
    assert main(["lookup", "ista_twostage", "--benchmark", str(path)]) == 2  # a DARTS-space cell
    assert "another space's" in capsys.readouterr().err


cell_text = st.one_of(st.text(max_size=30), st.sampled_from([str(a) for a in ALL[:50]]),
                      st.builds(lambda ops: "+".join(ops), st.lists(st.sampled_from(["|skip_connect~0|", "|x~1|",
                                                                                     "||", "|none~0|none~1|"]),
                                                                    max_size=4)))
value_text = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6),
                       st.integers().map(str))


@given(st.lists(st.tuples(cell_text, value_text), max_size=6), st.sampled_from([".csv", ".jsonl"]))
def test_any_table_is_read_or_refused_in_one_line(tmp_path_factory, rows, suffix):
    path = write_table(tmp_path_factory.mktemp("p") / f"t{suffix}", rows)
    try:
        table = load_table(path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    # Read: every row's value is what was written, and the ranks follow the definition.
    values = {str(Nb201Arch.parse(a.strip())): float(v) for a, v in rows}
    assert table.values == values
    for arch, value in values.items():
        assert table.lookup(Nb201Arch.parse(arch)).rank == 1 + sum(w > value for w in values.values())


def test_a_table_cut_at_any_byte_is_refused_or_read_exactly(tmp_path):
    rows = [(str(ALL[i]), f"{80 + i * 1.2345:.4f}", f"{60 + i:.4f}") for i in range(4)]
    full = write_table(tmp_path / "full.csv", rows, ("arch", "test_acc", "other")).read_bytes()
    written = {str(Nb201Arch.parse(a)): float(v) for a, v, _ in rows}
    for cut in range(full.index(b"\n") + 1, len(full) + 1):
        path = tmp_path / "cut.csv"
        path.write_bytes(full[:cut])
        try:
            table = load_table(path)
        except UserError as exc:
            assert "\n" not in str(exc)
            continue
        assert full[cut - 1:cut] in (b"\n", b"\r")  # only whole rows are read ...
        assert all(table.values[a] == written[a] for a in table.values)  # ... with the values written


# --- tau and rho ---

def test_correlation_is_scipys_and_known_extremes_hold():
    rng = np.random.default_rng(0)
    x = rng.normal(size=25).round(1).tolist()  # rounded: ties
    y = (np.array(x) + rng.normal(size=25)).round(1).tolist()
    result = correlation(x, y)
    assert math.isclose(result["kendall_tau"], stats.kendalltau(x, y).statistic)
    assert math.isclose(result["spearman_rho"], stats.spearmanr(x, y).statistic)
    assert math.isclose(result["kendall_p"], stats.kendalltau(x, y).pvalue)
    # Concordant / discordant pairs counted by hand (no ties here): tau = (C - D) / (n choose 2).
    a, b = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    pairs = list(itertools.combinations(range(5), 2))
    c = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs)
    assert math.isclose(correlation(a, b)["kendall_tau"], (c - (len(pairs) - c)) / len(pairs))
    assert correlation(x, [math.exp(v) for v in x])["kendall_tau"] == pytest.approx(1.0)
    assert correlation(x, [-v for v in x])["spearman_rho"] == pytest.approx(-1.0)
    assert correlation([1, 2, 3], [5, 5, 5])["kendall_tau"] is None
    assert correlation([1], [2])["undefined"] == "fewer than 2 points"


# --- run directories made by hand: the trajectory protocol and training runs as the truth ---

def fake_search(path, archs, scores, method="two-stage"):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"method": method, "space": "nb201", "seed": 0}))
    (path / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e + 1, "valid_acc": s, "genotype": a.to_dict()}) + "\n"
        for e, (a, s) in enumerate(zip(archs, scores))))
    return path


def fake_train(path, arch, top1s):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"space": "nb201", "genotype": "x", "arch": str(arch)}))
    (path / "genotype.json").write_text(json.dumps(arch.to_dict()))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "test_top1": t}) + "\n"
                                                for e, t in enumerate(top1s)))
    return path


def test_trajectory_pairs_each_epoch_with_the_true_accuracy_of_the_architecture_held(tmp_path, capsys):
    archs = [ALL[5], ALL[5], ALL[77], ALL[900], ALL[900]]
    scores = [10.0, 20.0, 30.0, 40.0, 50.0]
    true = {ALL[5]: 60.0, ALL[77]: 50.0, ALL[900]: 70.0}
    table = write_table(tmp_path / "t.csv", [(str(a), v) for a, v in true.items()])
    run = fake_search(tmp_path / "run", archs, scores)
    result = correlate(run, tmp_path / "c", truth=truth_from_table(load_table(table)))
    expected = [true[a] for a in archs]
    assert [p["true"] for p in result["points"]] == expected and [p["search"] for p in result["points"]] == scores
    assert math.isclose(result["kendall_tau"], stats.kendalltau(scores, expected).statistic)
    assert result["distinct_architectures"] == 3 and (tmp_path / "c" / "scatter.png").stat().st_size > 0
    # The same truth from training runs: two runs of one architecture are averaged.
    runs = [fake_train(tmp_path / "t5a", ALL[5], [1.0, 59.0]), fake_train(tmp_path / "t5b", ALL[5], [61.0]),
            fake_train(tmp_path / "t77", ALL[77], [50.0]), fake_train(tmp_path / "t900", ALL[900], [3.0, 70.0])]
    assert truth_from_runs(runs).values == {architecture_key(a): v for a, v in true.items()}
    assert main(["correlate", str(run), "--truth", *map(str, runs), "--out", str(tmp_path / "c2"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kendall_tau"] == pytest.approx(result["kendall_tau"])
    # A truth that lacks an architecture names a file to train; a search that held one architecture: undefined.
    assert main(["correlate", str(run), "--truth", str(runs[0]), "--out", str(tmp_path / "c3")]) == 2
    assert "lacks 2 of the 3 architectures" in capsys.readouterr().err
    still = correlate(fake_search(tmp_path / "still", [ALL[5]] * 3, [1.0, 2.0, 3.0]), tmp_path / "c4",
                      truth=truth_from_table(load_table(table)))
    assert still["kendall_tau"] is None and "same true accuracy" in still["undefined"]
    assert main(["correlate", str(runs[0])]) == 2  # a training run is no search
    assert main(["correlate", str(run), "--benchmark", str(table), "--truth", str(runs[0])]) == 2


# --- the ranking protocol: architectures on the supernet's shared weights ---

def test_the_nb201_supernet_running_a_fixed_architecture_is_that_architectures_network():
    torch.manual_seed(0)
    for dense in (False, True):
        supernet = (Nb201DenseSearchNetwork if dense else Nb201SearchNetwork)(channels=4, layers=1, num_classes=3).eval()
        for arch in random.Random(1).sample(ALL, 5):
            net = Nb201Network(arch, channels=4, layers=1, num_classes=3).eval()
            state = supernet.state_dict()
            mapped = {}
            for name in net.state_dict():  # the cell's edge k op o <- the supernet's edges[k][index of o]
                parts = name.split(".")
                if parts[0] == "blocks" and parts[2] == "edges":
                    parts.insert(4, str(NB201_OPS.index(arch.ops[int(parts[3])])))
                key = ".".join(parts)
                mapped[name] = state[key] if key in state else net.state_dict()[name]  # affine BN: 1 and 0 at init
            net.load_state_dict(mapped)
            x = torch.randn(2, 3, 8, 8)
            assert torch.allclose(supernet.forward_fixed(x, arch), net(x), atol=1e-6), (dense, arch)


def test_darts_space_supernets_run_exactly_the_genotypes_candidates():
    space = SPACES["darts"]
    genotype = space.sample(random.Random(3))
    from ista_nas.networks.dense import DenseSearchNetwork
    from ista_nas.networks.search_cnn import SearchNetwork

    for cls in (SearchNetwork, DenseSearchNetwork):
        net = cls(channels=4, layers=3, num_classes=3).eval()
        called = []
        for c, cell in enumerate(net.cells):
            for i, ops in enumerate(cell.nodes):
                for k, op in enumerate(ops):
                    op.register_forward_hook(lambda *_, key=(c, i, k): called.append(key))
        net.forward_fixed(torch.randn(1, 3, 8, 8), genotype)
        expected = []
        for c, cell in enumerate(net.cells):
            pairs = genotype.reduce if cell.reduction else genotype.normal
            expected += [(c, i, pred * 7 + space_ops_index(op)) for i in range(4) for op, pred in pairs[2 * i: 2 * i + 2]]
        assert sorted(called) == sorted(expected)


def space_ops_index(op):
    from ista_nas.ops import PRIMITIVES

    return PRIMITIVES.index(op)


def test_sampling_is_seeded_distinct_and_from_the_sparse_search_candidates():
    first = sample_architectures("nb201", 20, seed=4)
    assert first == sample_architectures("nb201", 20, seed=4) != sample_architectures("nb201", 20, seed=5)
    assert len(set(first)) == 20 and all("none" not in a.ops for a in first)
    darts = sample_architectures("darts", 5, seed=0)
    assert len({architecture_key(g) for g in darts}) == 5
    for g in darts:
        for i in range(4):
            (op_a, p_a), (op_b, p_b) = g.normal[2 * i: 2 * i + 2]
            assert (op_a, p_a) != (op_b, p_b) and max(p_a, p_b) < i + 2 and "none" not in (op_a, op_b)


def test_recalibration_sets_bn_statistics_to_the_calibration_batches_average():
    net = Nb201SearchNetwork(channels=4, layers=1, num_classes=3)
    batches = [torch.randn(6, 3, 8, 8) + i for i in range(3)]
    _recalibrate(net, ALL[100], batches)
    bn = net.stem[1]
    with torch.no_grad():
        means = [net.stem[0](x).mean(dim=(0, 2, 3)) for x in batches]
    assert not net.training and torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)


@pytest.fixture(scope="module")
def nb201_search(tiny_folder, tmp_path_factory):
    """A tiny NAS-Bench-201 search with a benchmark table of the whole space (value: convolutions on the cell's
    edges, plus a small distinct fraction so that no two architectures tie)."""
    root = tmp_path_factory.mktemp("nb201-search")
    values = {a: 10.0 * sum(op.startswith("nor_conv") for op in a.ops) + i / len(ALL) for i, a in enumerate(ALL)}
    table = write_table(root / "table.csv", [(str(a), v) for a, v in values.items()])
    cfg = make_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=2, batch_size=12,
                      channels=4, device="cpu", seed=0, benchmark=str(table))
    result = search(cfg, root / "run")
    write_run_report(result.run_dir)
    return result, table, values


def test_search_records_the_benchmark_value_of_the_architecture_it_holds_each_epoch(nb201_search):
    result, table, values = nb201_search
    for record in result.metrics:
        arch = Nb201Arch.from_dict(record["genotype"])
        assert record["benchmark"] == values[arch]
        assert record["benchmark_rank"] == 1 + sum(v > values[arch] for v in values.values())
    final = json.loads((result.run_dir / "benchmark.json").read_text())
    assert final["value"] == values[result.genotype] and final["of"] == len(ALL)
    assert f"benchmark test_acc</th><td>{final['value']:.2f}, rank {final['rank']}" in \
        (result.run_dir / "report.html").read_text()


def test_ranking_scores_each_sampled_architecture_on_the_held_out_half(nb201_search, tmp_path):
    result, table, values = nb201_search
    truth = truth_from_table(load_table(table))
    out = correlate(result.run_dir, tmp_path / "c", "ranking", truth, k=6, seed=2, calibration_batches=2,
                    device="cpu")
    sample = sample_architectures("nb201", 6, 2)
    assert [p["arch"] for p in out["points"]] == [str(a) for a in sample]
    assert [p["true"] for p in out["points"]] == [values[a] for a in sample]
    scores, held_out = supernet_scores(result.run_dir, sample, 2, "cpu")
    assert [p["search"] for p in out["points"]] == scores  # deterministic
    # top-1 over the whole held-out half: the tiny folder's 120 training images split in half, so j/60 right
    assert held_out == 60
    assert all(abs(s * 60 / 100 - round(s * 60 / 100)) < 1e-6 for s in scores)
    assert math.isclose(out["kendall_tau"], stats.kendalltau(scores, [values[a] for a in sample]).statistic)
    for i, arch in enumerate(sample):
        assert json.loads((tmp_path / "c" / "architectures" / f"arch-{i:02d}.json").read_text()) == arch.to_dict()


def test_benchmark_tables_are_refused_where_they_cannot_serve(tmp_path, tiny_folder):
    table = write_table(tmp_path / "t.csv", [(str(ALL[0]), 1.0)])
    with pytest.raises(UserError, match="have a written form; --space darts has none"):
        make_config("quick", dataset=f"folder:{tiny_folder}", benchmark=str(table))
    with pytest.raises(UserError, match="no column 'top1'"):
        make_config("quick", space="nb201", benchmark=str(table), metric="top1")


def test_an_architecture_the_table_lacks_is_recorded_as_null_during_a_search(tmp_path, tiny_folder, caplog,
                                                                               monkeypatch):
    import ista_nas.benchmark as benchmark

    held = Nb201Arch(("avg_pool_3x3",) * 6)  # not what the seed-0 search holds
    table = write_table(tmp_path / "t.csv", [(str(held), 1.0)])
    reads = []
    monkeypatch.setattr(benchmark, "load_table", lambda *a, **k: reads.append(a) or load_table(*a, **k))
    cfg = make_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=1, batch_size=12,
                      channels=4, device="cpu", seed=0, benchmark=str(table))
    result = search(cfg, tmp_path / "run")
    assert result.genotype != held and result.metrics[0]["benchmark"] is None
    assert "is not in the benchmark table" in caplog.text
    assert json.loads((tmp_path / "run" / "benchmark.json").read_text())["value"] is None
    assert len(reads) == 1  # validated twice (make_config, search) and recorded with: one reading


# --- seeds ---

def test_search_over_seeds_runs_each_seed_continues_the_stopped_ones_and_compare_summarises_them(
        tiny_folder, tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from conftest import interrupted_copy

    from ista_nas.methods import search_seeds
    from ista_nas.analysis.compare import summarize_groups
    from ista_nas.analysis.report import read_run

    cfg = make_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=2, batch_size=12,
                      channels=4, device="cpu")
    search_seeds(cfg, [0], tmp_path / "seeds")
    interrupted_copy(monkeypatch, 1, tmp_path / "seeds" / "seed-1", tmp_path / "stopped" / "seed-1")
    results = search_seeds(cfg, [0, 1], tmp_path / "seeds")  # seed 0 is read back, seed 1 runs (and is copied)
    monkeypatch.undo()
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    single = search(replace(cfg, seed=1), tmp_path / "single")  # each seed is the plain search with that seed
    assert results[1].genotype == single.genotype and drop(results[1].metrics) == drop(single.metrics)
    # A run that stopped early (status.json): compare marks it and leaves it out of the seeds' mean +- std, and
    # train refuses its interim genotype unless given the file itself.
    import shutil

    from ista_nas.analysis.compare import compare, format_comparison

    for seed, source in ((0, tmp_path / "seeds"), (1, tmp_path / "stopped")):
        shutil.copytree(source / f"seed-{seed}", tmp_path / "mixed" / f"seed-{seed}")
    infos, groups, _ = compare([tmp_path / "mixed"])
    assert [g["seeds"] for g in groups] == [[0]] and "(unfinished)" in format_comparison(infos).splitlines()[2]
    stopped = tmp_path / "stopped" / "seed-1"
    assert main(["train", "--space", "nb201", "--preset", "quick", "--genotype", str(stopped), "--out",
                 str(tmp_path / "t")]) == 2
    assert "stopped early" in capsys.readouterr().err and not (tmp_path / "t").exists()
    # The same command again: the stopped seed continues to the end, the finished one is read back untouched.
    again = search_seeds(cfg, [1], tmp_path / "stopped")
    assert drop(again[0].metrics) == drop(single.metrics)
    assert search_seeds(cfg, [0], tmp_path / "seeds")[0].genotype == results[0].genotype
    assert [r["epoch"] for r in results[0].metrics] == [1, 2]  # not run twice
    with pytest.raises(UserError, match="other settings \\(lr\\)"):
        search_seeds(replace(cfg, lr=0.01), [0], tmp_path / "seeds")
    # compare: one group of the two seeds, mean and sample std of their best accuracy and of their table values.
    values = {a: float(i % 97) for i, a in enumerate(ALL)}
    table = write_table(tmp_path / "t.csv", [(str(a), v) for a, v in values.items()])
    infos = [read_run(tmp_path / "seeds" / f"seed-{s}") for s in (0, 1)] + [read_run(tmp_path / "single")]
    with pytest.raises(UserError, match="the same seed 1"):  # single is seed 1 again: one sample, not two
        summarize_groups(infos, load_table(table))
    groups = summarize_groups([infos[0], infos[2]], load_table(table))
    assert [g["seeds"] for g in groups] == [[0, 1]]  # a run of the same settings from another folder joins them
    best = [max(r["valid_acc"] for r in res.metrics) for res in (results[0], single)]
    found = [values[res.genotype] for res in (results[0], single)]
    assert groups[0]["best_accuracy"]["mean"] == pytest.approx(statistics.fmean(best))
    assert groups[0]["best_accuracy"]["std"] == pytest.approx(statistics.stdev(best))
    assert groups[0]["benchmark"]["values"] == found
    assert main(["compare", str(tmp_path / "seeds"), "--benchmark", str(table), "--plot", str(tmp_path / "c.png"),
                 "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)
    assert group["seeds"] == [0, 1] and group["benchmark"]["mean"] == pytest.approx(statistics.fmean(found[:2]))
    assert (tmp_path / "c.png").stat().st_size > 0
    assert main(["search", "--seeds", "0", "--seed", "1", "--out", str(tmp_path / "x")]) == 2


# --- the built-in NAS-Bench-201 table ---

def test_the_builtin_table_is_whole_and_holds_the_known_optimum():
    """15,625 distinct valid architectures (the whole 5^6 space), finite values in every metric, and the
    benchmark's known CIFAR-10 optimum at rank 1 (94.37, NATS-Bench)."""
    space = SPACES["nb201"]
    names, metrics = space.builtin_table
    for metric in metrics:
        table = builtin_table(space, metric)  # load_table refuses a missing or non-finite value
        assert len(table) == len(NB201_OPS) ** 6 == 15625
        assert set(table.values) == {space.short(Nb201Arch(ops)) for ops in itertools.product(NB201_OPS, repeat=6)}
    best = Nb201Arch.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                           "nor_conv_1x1~2|")
    entry = builtin_table(space).lookup(best)
    assert entry.rank == 1 and round(entry.value, 2) == 94.37


def test_lookup_reads_the_builtin_table_without_a_file(capsys):
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert main(["lookup", arch, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["metric"], result["rank"], result["of"], round(result["value"], 2)) == ("cifar10", 1, 15625, 94.37)
    # Its parameter rank by the definition: a cell's count grows by k*k*c*c + 2c per nor_conv_kxk at each stage's
    # width c (C=16, N=5 cells per stage); the rest of the network is the same for every cell.
    def conv_params(a):
        return sum({"nor_conv_1x1": c * c + 2 * c, "nor_conv_3x3": 9 * c * c + 2 * c}.get(op, 0)
                   for c in (16, 32, 64) for op in a.ops)

    optimum = conv_params(Nb201Arch.parse(arch))
    assert (result["parameter_rank"], result["parameter_rank_of"], result["op_set_cells"]) == \
        (1 + sum(conv_params(a) > optimum for a in ALL), 15625, 4096)
    assert result["largest_cell"]["value"] == builtin_table(SPACES["nb201"]).values[
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"]
    assert main(["lookup", arch, "--metric", "cifar100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == builtin_table(SPACES["nb201"], "cifar100").values[arch]
    for argv, expected in ((["--metric", "test_acc"], "cifar10 | cifar100 | imagenet16-120"),
                           (["--benchmark", "none"], "leave out --benchmark")):
        assert main(["lookup", arch, *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
    assert main(["lookup", "ista_twostage"]) == 2  # a DARTS-space cell: no table ships for that space
    assert "give one with --benchmark FILE" in capsys.readouterr().err


def test_comment_lines_at_the_top_of_a_table_keep_line_numbers(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(f"# source\n# licence\narch,test_acc\n{ALL[0]},1\n{ALL[1]},x\n")
    with pytest.raises(UserError, match="line 5: test_acc = 'x'"):
        load_table(path)


# --- the built-in table recorded by default, read for nothing ---

def test_a_search_records_the_built_in_table_and_decides_nothing_by_it(tiny_folder, tmp_path, capsys):
    runs = {}
    for name, benchmark in (("built-in", ""), ("none", "none")):
        cfg = make_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=2, batch_size=12,
                          channels=4, device="cpu", seed=3, benchmark=benchmark)
        runs[name] = search(cfg, tmp_path / name)
    recorded = ("benchmark", "benchmark_rank")

    def without(metrics):
        return [{k: v for k, v in m.items() if k not in recorded + ("seconds",)} for m in metrics]

    assert runs["built-in"].genotype == runs["none"].genotype
    assert without(runs["built-in"].metrics) == without(runs["none"].metrics)
    assert all(k not in m for m in runs["none"].metrics for k in recorded)
    a, b = (load_checkpoint(tmp_path / name / "checkpoint.pt")["search"]["model"] for name in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The recorded values are the packaged CSV's, read here independently of load_table.
    import gzip

    from ista_nas.benchmark import BUILTIN

    text = gzip.decompress((BUILTIN / "nb201-accuracy.csv.gz").read_bytes()).decode()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    cifar10 = {r["arch"]: float(r["cifar10"]) for r in rows}
    for m in runs["built-in"].metrics:
        value = cifar10[m["genotype"]["arch"]]
        assert m["benchmark"] == value and m["benchmark_rank"] == 1 + sum(v > value for v in cifar10.values())
    found = json.loads((tmp_path / "built-in" / "benchmark.json").read_text())
    assert found["builtin"] and found["dense"] is False and found["value"] == cifar10[str(runs["built-in"].genotype)]
    assert not (tmp_path / "none" / "benchmark.json").exists()
    # The report shows where the found cell stands among the 4^6 cells without none (the sparse search's ops).
    without_none = [v for arch, v in cifar10.items() if "none" not in arch]
    write_run_report(tmp_path / "built-in")
    write_run_report(tmp_path / "none")
    page = (tmp_path / "built-in" / "report.html").read_text()
    assert "table accuracy of the architecture held, and where the found cell stands" in page
    better = sum(v > found["value"] for v in without_none)
    assert (f"mean {statistics.fmean(without_none):.2f} +- {statistics.stdev(without_none):.2f} over 4096 cells; "
            f"{100 * better / 4096:.1f}% of them better") in page
    assert "Against the benchmark table" not in (tmp_path / "none" / "report.html").read_text()
    # compare: the group's random draw is the same op set's distribution, drawn beside the found cells.
    from ista_nas.analysis.compare import compare

    _, groups, plot = compare([tmp_path / "built-in"], tmp_path / "seeds.png")
    assert groups[0]["random_draw"]["cells"] == 4096 and plot.stat().st_size > 0
    assert math.isclose(groups[0]["random_draw"]["mean"], statistics.fmean(without_none))
    # Beside it the largest cell of that op set by parameters (3x3 convolutions on every edge, the benchmark's
    # 1.53M) and the found cell's margin over it: in the report, compare and lookup of the run.
    largest = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    margin = found["value"] - cifar10[largest]
    assert f"{cifar10[largest]:.2f} ({largest}; 1.532M parameters at C=16, L/N=5); margin of the found cell " \
           f"{margin:+.2f}" in page
    assert groups[0]["largest_cell"]["archs"] == [largest] and groups[0]["largest_cell"]["value"] == cifar10[largest]
    assert math.isclose(groups[0]["margin"]["mean"], margin)
    from ista_nas.analysis.compare import format_groups

    header, row = format_groups(groups).splitlines()
    assert header.split()[-5:-2] == ["largest", "cell", "margin"] and row.split()[-3:-1] == \
        [f"{cifar10[largest]:.2f}", f"{margin:+.2f}"]
    assert main(["lookup", str(tmp_path / "built-in"), "--json"]) == 0
    looked = json.loads(capsys.readouterr().out)
    assert looked["largest_cell"]["archs"] == [largest] and math.isclose(looked["margin"], margin)
    assert looked["op_set_cells"] == 4096


def test_correlate_sets_the_parameter_count_and_flops_beside_the_search_and_shows_the_scores_spread(tmp_path):
    archs = random.Random(7).sample([a for a in ALL if "none" not in a.ops], 12)
    scores = [float(s) for s in range(12)]
    truth_values = [float(v) for v in random.Random(8).sample(range(100), 12)]
    table = write_table(tmp_path / "t.csv", [(str(a), v) for a, v in zip(archs, truth_values)])
    result = correlate(fake_search(tmp_path / "run", archs, scores), tmp_path / "c",
                       truth=truth_from_table(load_table(table)))
    # Independent sizes: the discrete NAS-Bench-201 network at C=16, N=5, counted by hand, and torch's FLOPs.
    from torch.utils.flop_counter import FlopCounterMode

    params, flops = [], []
    for arch in archs:
        net = Nb201Network(arch, channels=16, layers=5, num_classes=10).eval()
        params.append(sum(p.numel() for p in net.parameters()))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, 32, 32))
        flops.append(counter.get_total_flops())
    assert [p["params"] for p in result["points"]] == params and [p["flops"] for p in result["points"]] == flops
    for name, sizes in (("params", params), ("flops", flops)):
        assert math.isclose(result["baselines"][name]["kendall_tau"], stats.kendalltau(sizes, truth_values).statistic)
        assert math.isclose(result["baselines"][name]["spearman_rho"], stats.spearmanr(sizes, truth_values).statistic)
    spread = result["score_spread"]
    assert (spread["mean"], spread["std"], spread["min"], spread["max"], spread["chance"]) == \
        (statistics.fmean(scores), statistics.stdev(scores), 0.0, 11.0, 10.0)
    assert "binomial_se" not in spread  # a trajectory's scores are per-epoch batches, not one held-out set


def test_ranking_scores_spread_carries_the_binomial_noise_of_one_score(nb201_search, tmp_path):
    result, table, values = nb201_search
    out = correlate(result.run_dir, tmp_path / "c", "ranking", truth_from_table(load_table(table)), k=4, seed=1,
                    calibration_batches=1, device="cpu")
    spread = out["score_spread"]
    p = statistics.fmean(pt["search"] for pt in out["points"]) / 100
    assert spread["held_out"] == 60 and math.isclose(spread["binomial_se"], 100 * math.sqrt(p * (1 - p) / 60))
    # The zero-cost proxies beside the supernet: each architecture's scores are score_cell's on the evaluation
    # network (C=16, N=5) from one seeded batch of the run's training images, each tau is scipy's over them.
    from ista_nas.analysis.proxies import one_batch, score_cell

    config = json.loads((result.run_dir / "config.json").read_text())
    batch, classes = one_batch(config["dataset"], 64, 0)
    true = [pt["true"] for pt in out["points"]]
    first = score_cell(Nb201Arch.parse(out["points"][0]["arch"]), 16, 5, batch, classes, seed=0)
    for name in ("synflow", "naswot", "grad_norm", "snip"):
        values = [pt[name] for pt in out["points"]]
        assert values[0] == pytest.approx(first[name], rel=1e-6)
        assert math.isclose(out["baselines"][name]["kendall_tau"], stats.kendalltau(values, true).statistic)
        assert out["baselines"][name]["spread"]["max"] == max(values)
