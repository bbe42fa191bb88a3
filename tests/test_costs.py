"""Additive costs and the exact choice within a budget (costs.py), the costs of a space (hardware.py), and the
supernets holding only architectures within a budget (methods.budget)."""

import itertools
import random

import numpy as np
import pytest
import torch

from ista_nas import hardware
from ista_nas.analysis.summary import network_summary
from ista_nas.costs import AdditiveCost, best_within, fit_additive
from ista_nas.engine.data import DATASET_SHAPES
from ista_nas.errors import UserError
from ista_nas.methods import make_config
from ista_nas.methods.budget import Budget, constrain
from ista_nas.networks.nb201 import NB201_EDGES, NB201_OPS, Nb201Arch
from ista_nas.networks.nb201_search import Nb201DenseSearchNetwork, Nb201SearchNetwork
from ista_nas.spaces import SPACES


def brute_force(values, model, limit, picks, fixed, allowed=None):
    """The best value of any choice within ``limit``, by enumerating every choice (of the ``allowed`` ones)."""
    options = [[tuple(fixed[g])] if g in fixed else allowed[g] if allowed else
               list(itertools.combinations(range(len(row)), picks)) for g, row in enumerate(model.costs)]
    best = None
    for choice in itertools.product(*options):
        if model.of(choice) <= limit:
            value = sum(values[g][k] for g, o in enumerate(choice) for k in o)
            best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_the_choice_within_a_budget_is_the_best_one_enumeration_finds(seed):
    rng = np.random.default_rng(seed)
    groups, n = int(rng.integers(2, 5)), int(rng.integers(3, 6))
    picks = 1 if seed % 2 else 2
    # Integer costs make ties and exact fits at the limit common.
    model = AdditiveCost("c", "u", float(rng.integers(0, 5)), tuple(tuple(map(float, rng.integers(0, 10, n)))
                                                                     for _ in range(groups)))
    values = rng.random((groups, n))
    fixed = {0: tuple(sorted(rng.choice(n, picks, replace=False).tolist()))} if seed % 3 == 0 else {}
    # Every fourth case allows only some pairs per group (DARTS: two candidates of distinct inputs, here k // 2).
    allowed = ([[o for o in itertools.combinations(range(n), 2) if o[0] // 2 != o[1] // 2]] * groups
               if seed % 4 == 0 else None)
    limit = float(rng.integers(model.cheapest(picks) - 3, model.most(picks) + 2))
    choice = best_within(values, model, limit, picks, fixed, allowed)
    truth = brute_force(values, model, limit, picks, fixed, allowed)
    if allowed:
        assert model.cheapest(picks, allowed) == min(model.of(c) for c in itertools.product(*allowed))
    if truth is None:
        assert choice is None
        return
    assert model.of(choice) <= limit
    assert all(len(set(o)) == picks for o in choice) and all(choice[g] == fixed[g] for g in fixed)
    assert not allowed or all(choice[g] in allowed[g] for g in range(groups) if g not in fixed)
    assert sum(values[g][k] for g, o in enumerate(choice) for k in o) == pytest.approx(truth, abs=1e-12)


def test_a_fit_recovers_a_synthetic_additive_table_exactly():
    rng = np.random.default_rng(0)
    groups, n = 4, 3
    costs = rng.random((groups, n)) * 5
    choices = np.array(list(itertools.product(range(n), repeat=groups)))
    measured = 2.0 + costs[np.arange(groups), choices].sum(1)
    fit = fit_additive(choices, measured, n, "latency", "ms", "synthetic")
    assert fit.r2 == pytest.approx(1.0) and fit.tau == pytest.approx(1.0) and fit.median_relative_error < 1e-9
    predicted = [fit.model.of(c) for c in choices.tolist()]
    assert predicted == pytest.approx(measured.tolist())
    # Shifted so that each group's cheapest candidate costs 0: base is the cheapest architecture's cost.
    assert fit.model.base == pytest.approx(measured.min())
    assert all(min(row) == pytest.approx(0.0) for row in fit.model.costs)


@pytest.mark.parametrize("seed", range(3))
def test_nb201_parameters_and_flops_add_up_per_edge_exactly(seed):
    space = SPACES["nb201"]
    params, flops = hardware.cost_model("nb201", "params"), hardware.cost_model("nb201", "flops")
    arch = space.sample(random.Random(seed))  # no none: every op runs
    summary = network_summary(arch, 16, 5, "cifar10")
    assert params.of(space.choice(arch)) == pytest.approx(summary["params"] / 1e6, abs=1e-9)
    assert flops.of(space.choice(arch)) == pytest.approx(summary["flops"] / 1e6, abs=1e-9)
    with_none = Nb201Arch(("none",) + arch.ops[1:])  # parameters count every op built, cut off or not
    assert params.of(space.choice(with_none)) == pytest.approx(network_summary(with_none, 16, 5)["params"] / 1e6)


@pytest.mark.parametrize("flavour,stem,nodes", [("standard", "cifar", 4), ("one-stage", "imagenet", 3)])
def test_darts_cell_parameters_and_flops_add_up_per_candidate_exactly(flavour, stem, nodes):
    """Against the network each genotype builds, counted whole: parameters (auxiliary head excluded) and torch's
    FLOPs of one image."""
    from torch.utils.flop_counter import FlopCounterMode

    from ista_nas.genotype import Genotype
    from ista_nas.networks.cnn import Network, count_parameters
    from ista_nas.spaces.base import CostSize

    space, side = SPACES["darts"], 64 if stem == "imagenet" else 16
    size = CostSize(6, 5, nodes, 7, 3, side, stem, flavour)
    params, flops = space.cost_model("params", size), space.cost_model("flops", size)
    rng = random.Random(nodes)
    for _ in range(3):
        g = space.sample(rng, steps=nodes)
        g = Genotype(g.normal, g.normal_concat, g.reduce, g.reduce_concat, flavour)
        back = space.from_choice(space.choice(g))  # the same pairs, each node's in candidate order
        assert space.choice(back) == space.choice(g) and all(
            sorted(a[2 * i: 2 * i + 2]) == sorted(b[2 * i: 2 * i + 2]) for a, b in ((back.normal, g.normal),
                                                                                    (back.reduce, g.reduce))
            for i in range(nodes))
        net = Network(g, 6, 5, 7, 3, auxiliary=False, stem=stem).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(1, 3, side, side))
        assert params.of(space.choice(g)) == pytest.approx(count_parameters(net) / 1e6, abs=1e-9)
        assert flops.of(space.choice(g)) == pytest.approx(counter.get_total_flops() / 1e6, abs=1e-9)


def test_the_built_in_latency_table_is_fitted_over_the_cells_without_none():
    fit = hardware.latency_fit("nb201", "fpga")
    assert fit.cells == 4 ** len(NB201_EDGES) and fit.model.source == "nb201-latency.csv.gz:fpga"
    path, column = hardware.latency_source("nb201", "fpga")
    table = hardware.load_table(path, metric=column)
    # The fit is least squares: its residuals are orthogonal to every (edge, op) indicator and sum to zero.
    space = SPACES["nb201"]
    cells = [(space.choice(space.parse(a)), v) for a, v in table.values.items() if "none" not in a]
    residual = np.array([v - fit.model.of(c) for c, v in cells])
    assert abs(residual.sum()) < 1e-6 * len(cells)
    for k in range(len(NB201_EDGES)):
        for op in range(1, len(NB201_OPS)):
            assert abs(sum(r for (c, _), r in zip(cells, residual) if c[k] == op)) < 1e-6 * len(cells)


def test_budgets_nothing_meets_and_unknown_latency_tables_are_refused_before_any_data(tmp_path):
    cheapest = min(hardware.cost_model("nb201", "latency", "pixel3").of(c)
                   for c in itertools.product(range(1, len(NB201_OPS)), repeat=len(NB201_EDGES)))
    with pytest.raises(UserError, match=f"the cheapest costs {cheapest:.4g} ms"):
        make_config("quick", space="nb201", max_latency=cheapest * 0.99, latency="pixel3")
    make_config("quick", space="nb201", max_latency=cheapest * 1.001, latency="pixel3")  # the all-cheapest cell fits
    with pytest.raises(UserError, match="names no latency table"):
        make_config("quick", space="nb201", max_latency=10, latency="pixel9")
    with pytest.raises(UserError, match="needs --latency"):
        make_config("quick", space="nb201", max_latency=10)
    with pytest.raises(UserError, match="give one budget"):
        make_config("quick", space="nb201", max_flops=100, max_params=1)
    cfg = make_config("quick", space="darts")  # two-stage: the retrained network, C=36, L=20, of the quick data
    cheapest = hardware.cost_model("darts", "params", size=SPACES["darts"].cost_size(
        cfg, "sparse", DATASET_SHAPES[cfg.dataset])).cheapest(2)
    with pytest.raises(UserError, match=f"the cheapest costs {cheapest:.4g} M parameters"):
        make_config("quick", space="darts", max_params=cheapest * 0.99)
    own = tmp_path / "lat.csv"
    own.write_text("arch,ms\n" + "".join(f"{a},1\n" for a in ["|skip_connect~0|+|skip_connect~0|skip_connect~1|+|"
                                                              "skip_connect~0|skip_connect~1|skip_connect~2|"]))
    with pytest.raises(UserError, match="latency table .* has no column 'cpu'.*--latency FILE:COLUMN"):
        make_config("quick", space="nb201", max_latency=10, latency=f"{own}:cpu")


def _feasible_best(values, model, limit, candidates, fixed=None):
    """The best one-op-per-edge choice within ``limit`` by enumerating every cell."""
    best, arg = -1.0, None
    for choice in itertools.product(range(len(candidates)), repeat=len(NB201_EDGES)):
        if fixed and any(choice[g] != k for g, k in fixed.items()):
            continue
        if model.of(choice) <= limit:
            value = sum(values[g][k] for g, k in enumerate(choice))
            if value > best:
                best, arg = value, choice
    return best, arg


def test_a_budgeted_supernet_holds_the_best_cell_within_budget_and_frozen_edges_keep_theirs():
    base = hardware.cost_model("nb201", "latency", "pixel3")
    net = Nb201SearchNetwork(channels=4, layers=1, proj_dims=3, sparsity=2, seed=0, one_stage=True)
    model = base.columns(net.op_ids)
    limit = float(np.quantile([model.of(c) for c in itertools.product(range(4), repeat=6)], 0.1))
    constrain(net, Budget("latency", limit, base, model), dense=False)
    gen = torch.Generator().manual_seed(0)
    for trial in range(6):
        with torch.no_grad():
            net.arch.z.copy_(torch.rand(net.arch.z.shape, generator=gen))
        if trial == 4:
            net.freeze(torch.tensor([[True, False, False, False, False, True]]))
        fixed = {g: int(net.arch.lead[0, g]) for g in (0, 5)} if trial >= 4 else None
        net.arch.select()
        z = net.arch.z[0].abs().tolist()
        best, arg = _feasible_best(z, model, limit, net.candidates, fixed)
        assert tuple(net.arch.lead[0].tolist()) == arg and model.of(arg) <= limit
        assert net.genotype() == Nb201Arch(tuple(net.candidates[k] for k in arg))
        for g, support in enumerate(net.arch.support_list[0]):  # the held op, and the largest |z| of the others
            assert arg[g] in support and len(set(support)) == 2
            if not net.arch.frozen[0, g]:
                assert max(z[g][k] for k in support if k != arg[g]) == max(z[g][k] for k in range(4) if k != arg[g])


def test_the_dense_baseline_derives_the_best_cell_within_budget_from_its_weights():
    base = hardware.cost_model("nb201", "flops")
    net = Nb201DenseSearchNetwork(channels=4, layers=1, seed=0)
    model = base.columns(net.op_ids)
    limit = 150.0
    constrain(net, Budget("flops", limit, base, model), dense=True)
    with torch.no_grad():
        net.arch.alpha.copy_(torch.randn(net.arch.alpha.shape, generator=torch.Generator().manual_seed(1)))
    weights = net.arch.relaxed_weights()[0].tolist()
    _, arg = _feasible_best(weights, model, limit, net.candidates)
    assert net.genotype() == Nb201Arch(tuple(NB201_OPS[k] for k in arg))
    assert hardware.cost_of("nb201", "flops", net.genotype()) <= limit


def test_the_hypervolume_of_a_staircase_is_its_area():
    # Two points (cost 1, value 3) and (cost 2, value 5), reference (cost 4, value 1): 1x2 + 2x4.
    from ista_nas.analysis.front import hypervolume

    assert hypervolume([(2.0, 5.0), (1.0, 3.0)], (4.0, 1.0)) == pytest.approx(1 * 2 + 2 * 4)
    assert hypervolume([(1.0, 3.0), (2.0, 2.0)], (4.0, 1.0)) == pytest.approx(3 * 2)  # a dominated point adds nothing


def test_pick_by_params_is_the_largest_cell_within_budget_and_pareto_marks_a_run_against_the_true_front(
        runs, tmp_path, capsys):
    import json

    from ista_nas.analysis.front import cells, front
    from ista_nas.benchmark import builtin_table
    from ista_nas.cli import main

    space = SPACES["nb201"]
    model = hardware.cost_model("nb201", "latency", "fpga")
    archs = [space.from_choice(c) for c in itertools.product(range(1, 5), repeat=6)]
    costs = np.array([model.of(space.choice(a)) for a in archs])
    limit = float(np.median(costs))
    fits = costs <= limit * (1 + 1e-9)  # sums in another order may differ in the last bits: costs.SLACK
    counts = space.parameter_counts(archs, 16, 5, 10, 3)
    most = max(n for n, ok in zip(counts, fits) if ok)

    assert main(["pick", "--max-latency", str(limit), "--latency", "fpga", "--by", "params", "--json"]) == 0
    picked = json.loads(capsys.readouterr().out)
    assert counts[archs.index(space.parse(picked["arch"]))] == most and picked["cost"] <= limit * (1 + 1e-9)
    assert picked["within"] == int(fits.sum())

    # The front: at every cost, the best table value of any cell costing at most that (brute force).
    table = builtin_table(space)
    values = np.array([table.values[space.short(a)] for a in archs])
    points = front(cells("nb201", "latency", "fpga"), table)
    for cost, value, _ in points:
        assert value == values[costs <= cost * (1 + 1e-9)].max()
    assert points[-1][1] == values.max()

    # A run searched under a budget on the same costs: its margin is its value minus the front's at its budget.
    run = tmp_path / "run"
    import shutil

    shutil.copytree(runs["search"], run)
    config = json.loads((run / "config.json").read_text())
    config.update(max_latency=limit, latency="fpga")
    (run / "config.json").write_text(json.dumps(config))
    assert main(["pareto", str(run), str(runs["seeds"] / "seed-1"), "--latency", "fpga", "--plot",
                 str(tmp_path / "front.png"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["runs"][0]
    genotype = space.parse(row["arch"])
    assert row["cost"] == pytest.approx(model.of(space.choice(genotype)))
    assert row["front"] == values[fits].max()
    assert row["margin"] == pytest.approx(table.values[row["arch"]] - row["front"])
    assert result["runs"][1]["budget"] is None and 0 < result["hypervolume_fraction"] <= 1
    assert (tmp_path / "front.png").stat().st_size > 0


def test_a_latency_table_measured_here_is_read_back_by_a_budget_and_foreign_tables_are_refused(tmp_path, capsys):
    import json

    from ista_nas.cli import main

    out = tmp_path / "cpu.json"
    assert main(["latency", "--out", str(out), "--warmup", "1", "--passes", "3", "--calls", "1", "--check", "3",
                 "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == table and table["written_by"] == "ista-nas latency"
    costs = np.array(table["costs"])
    # none runs nothing; skip is the reference every op is timed against; a convolution costs more than no op
    assert costs.shape == (len(NB201_EDGES), len(NB201_OPS)) and (costs[:, :2] == 0).all()
    assert (costs == costs[0]).all() and (costs[:, 2:4] > 0).all()  # every edge runs the same ops
    assert table["base"] == pytest.approx(hardware.cost_model("nb201", "latency", str(out)).cheapest())
    model = hardware.cost_model("nb201", "latency", str(out))
    check = table["check"]
    for arch, predicted in zip(check["archs"], check["predicted"]):
        choice = SPACES["nb201"].choice(SPACES["nb201"].parse(arch))
        assert model.of(choice) == pytest.approx(table["base"] + sum(costs[g][k] for g, k in enumerate(choice)))
        assert model.of(choice) == pytest.approx(predicted)
    make_config("quick", space="nb201", max_latency=model.most(), latency=str(out))  # a budget reads it
    # The file is the tool's own: written again in place; a file it did not write is never replaced.
    assert main(["latency", "--out", str(out), "--warmup", "0", "--passes", "3", "--calls", "1", "--check", "2"]) == 0
    capsys.readouterr()
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    assert main(["latency", "--out", str(mine)]) == 2 and mine.read_text() == "{}"
    assert "was not written by ista-nas" in capsys.readouterr().err
    for bad in ({**table, "costs": table["costs"][:-1]}, {**table, "base": "fast"}, {**table, "space": "darts"}, [1]):
        mine.write_text(json.dumps(bad))
        hardware._measured.cache_clear()
        with pytest.raises(UserError, match="latency table"):
            hardware.cost_model("nb201", "latency", str(mine))


def test_darts_cell_latency_probes_recover_an_exactly_additive_time_and_tables_fit_one_network(tmp_path, monkeypatch):
    """With each network's "time" its parameter count (exactly additive per (cell type, input kind, op)), the
    probes' differences give a table that predicts every cell's exactly: the parameter model's prediction. A
    search reads the table for the network it was measured on and refuses it for another."""
    import json

    from torch.utils.flop_counter import FlopCounterMode

    from ista_nas.cli import main
    from ista_nas.networks.cnn import count_parameters
    from ista_nas.spaces.base import CostSize

    def flops(net, x):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(x)
        return counter.get_total_flops() / 1e6

    # FLOPs depend on the shape each op sees (a reduction cell's inputs at stride 2, its nodes after): a probe of
    # the wrong kind of input would show; parameters do not, and are the clock the budget below reads.
    for clock in (flops, lambda net, x: count_parameters(net) / 1e6):
        monkeypatch.setattr(hardware, "timed", lambda nets, x, warmup, passes, calls, device: [
            [clock(net, x)] * passes for net in nets])
        out = tmp_path / "darts.json"
        assert main(["latency", "--space", "darts", "--channels", "6", "--layers", "5", "--nodes", "3", "--dataset",
                     "fashion-mnist", "--passes", "3", "--check", "12", "--out", str(out)]) == 0
        check = json.loads(out.read_text())["check"]
        assert check["median_relative_error"] < 1e-9 and check["kendall_tau"] == pytest.approx(1.0)
    size = CostSize(6, 5, 3, 10, 1, 28, "cifar", "standard")
    latency, params = hardware.cost_model("darts", "latency", str(out), size), hardware.cost_model("darts", "params",
                                                                                                 size=size)
    rng = random.Random(1)
    for _ in range(10):
        choice = SPACES["darts"].choice(SPACES["darts"].sample(rng, steps=3))
        assert latency.of(choice) == pytest.approx(params.of(choice), abs=1e-9)
    search = dict(space="darts", nodes=3, budget_channels=6, budget_layers=5, latency=str(out))
    make_config("quick", max_latency=latency.most(2), **search)  # fashion-mnist: the network it was measured on
    with pytest.raises(UserError, match="measured on another network .* --channels 8 --layers 5 --nodes 3 "
                                        "--dataset fashion-mnist"):
        make_config("quick", max_latency=latency.most(2), **{**search, "budget_channels": 8})
    with pytest.raises(UserError, match="reads a table measured by ista-nas latency --space darts"):
        make_config("quick", max_latency=10, **{**search, "latency": "pixel3"})
    assert main(["latency", "--space", "nb201", "--channels", "8", "--out", str(tmp_path / "n.json")]) == 2
