"""Zero-cost proxies against values computed by hand on tiny networks, and the invariances their definitions
promise: synflow reads no data, NASWOT no labels."""

import json
import math
import random

import pytest
import torch
from torch import nn

from ista_nas.networks.nb201 import Nb201Network
from ista_nas.analysis.proxies import batch_scores, score_cell, synflow, top_picks
from ista_nas.spaces import SPACES


def test_synflow_of_a_linear_chain_is_its_depth_times_the_flow_of_absolute_weights():
    # f(x) = W2 W1 x, bias-free: R = 1^T |W2| |W1| 1 is homogeneous of degree 1 in each layer's weights, so the sum
    # of W * dR/dW over one layer is R, over both 2R. By hand: |W1| 1 = (3.5, 4), |W2| (3.5, 4) = 2*3.5 + 1*4 = 11.
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
        net[1].weight.copy_(torch.tensor([[2.0, -1.0]]))
    flat = nn.Sequential(nn.Flatten(), net)
    assert synflow(flat, (3, 1, 1)) == pytest.approx(22.0, rel=1e-12)


def test_naswot_is_the_log_determinant_of_the_relu_agreement_kernel():
    # Codes (x > 0 at the ReLU's input): (1,0,1,1), (1,1,0,0), (0,0,1,1). Agreements: K = [[4,1,3],[1,4,0],[3,0,4]],
    # det K = 4*16 - 1*4 + 3*(0 - 12) = 24.
    x = torch.tensor([[0.5, -1.0, 2.0, 0.1], [3.0, 0.2, -0.3, -2.0], [-1.0, -0.5, 0.7, 4.0]])
    net = nn.Sequential(nn.ReLU(), nn.Linear(4, 4, bias=False))
    assert batch_scores(net, x, torch.tensor([0, 1, 2]))["naswot"] == pytest.approx(math.log(24.0), rel=1e-12)


def test_grad_norm_and_snip_of_a_linear_classifier_by_hand():
    # W = I, x = (1, 2), label 0: p = softmax(1, 2), dL/dW = (p - e0) x^T = a [[-1, -2], [1, 2]] with a = e/(1+e).
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    scores = batch_scores(net, torch.tensor([[1.0, 2.0]]), torch.tensor([0]))
    a = math.e / (1 + math.e)
    assert scores["grad_norm"] == pytest.approx(a * math.sqrt(10), rel=1e-6)
    assert scores["snip"] == pytest.approx(3 * a, rel=1e-6)  # |1 * -a| + |1 * 2a|: only the diagonal is nonzero


def _batch(seed, n=8, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_synflow_reads_no_data_naswot_no_labels_and_a_seed_fixes_every_score():
    cell = SPACES["nb201"].sample(random.Random(3))
    x, y = _batch(0)
    first = score_cell(cell, 4, 1, (x, y), 10, seed=5)
    other_images = score_cell(cell, 4, 1, _batch(1), 10, seed=5)
    other_labels = score_cell(cell, 4, 1, (x, (y + 1) % 10), 10, seed=5)
    assert other_images["synflow"] == first["synflow"] and other_images["naswot"] != first["naswot"]
    assert other_labels["naswot"] == first["naswot"] and other_labels["grad_norm"] != first["grad_norm"]
    assert score_cell(cell, 4, 1, (x, y), 10, seed=5) == first
    assert score_cell(cell, 4, 1, (x, y), 10, seed=6)["grad_norm"] != first["grad_norm"]
    # The size proxies are the evaluation network's own counts, and scoring leaves the global RNG alone.
    assert first["params"] == sum(p.numel() for p in Nb201Network(cell, 4, 1, 10, 3).parameters())
    before = torch.get_rng_state()
    score_cell(cell, 4, 1, (x, y), 10, seed=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_top_picks_take_the_true_value_of_each_pools_highest_score():
    scores = [{"p": float(i), "q": float(-i)} for i in range(10)]
    true = [float(10 * i) for i in range(10)]
    picks = top_picks(scores, true, ("p", "q"), pool=4, samples=3, seed=0)
    rng = random.Random(0)  # the pools, drawn as the definition says
    pools = [rng.sample(range(10), 4) for _ in range(3)]
    assert picks["p"]["mean"] == pytest.approx(sum(10 * max(p) for p in pools) / 3)
    assert picks["q"]["mean"] == pytest.approx(sum(10 * min(p) for p in pools) / 3)
    assert picks["best in the pool"] == picks["p"]


def test_the_proxies_command_scores_cells_and_ranks_them_against_a_table(tiny_folder, tmp_path, capsys, monkeypatch):
    from scipy import stats

    from ista_nas.cli import main

    cells = [SPACES["nb201"].sample(random.Random(i)) for i in range(4)]
    table = tmp_path / "t.csv"
    table.write_text("arch,acc\n" + "".join(f"{c},{80 + i}\n" for i, c in enumerate(cells)))
    argv = ["proxies", *map(str, cells), "--dataset", f"folder:{tiny_folder}", "--batch-size", "8", "--channels", "4",
            "--layers", "1", "--benchmark", str(table), "--metric", "acc"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    true = [80.0 + i for i in range(4)]
    assert [r["arch"] for r in result["cells"]] == list(map(str, cells))
    assert [r["true"] for r in result["cells"]] == true
    for name in ("params", "synflow", "naswot", "snip"):
        values = [r[name] for r in result["cells"]]
        assert math.isclose(result["correlation"][name]["kendall_tau"], stats.kendalltau(values, true).statistic)
        assert result["picks"][name] == true[values.index(max(values))]
    # Each cell's scores are score_cell's on the same seeded batch.
    from ista_nas.analysis.proxies import one_batch

    batch, classes = one_batch(f"folder:{tiny_folder}", 8, 0)
    assert score_cell(cells[2], 4, 1, batch, classes, seed=0)["grad_norm"] == pytest.approx(
        result["cells"][2]["grad_norm"], rel=1e-6)
    assert main(argv) == 0
    assert "Kendall tau" in capsys.readouterr().out
    for bad, expected in ((["--sample", "5000", "--space", "nb201"], "--sample between 0"),
                          (["--sample", "5"], "name it with --space"),
                          (["--channels", "4000"], "lower --channels or --layers"),
                          (["--batch-size", "1"], "--batch-size at least 2"), (["ista_twostage"], "one space"),
                          (["--benchmark", str(tmp_path / "none.csv")], "none.csv")):
        assert main([*argv, *bad] if bad[0].startswith("--") else ["proxies", *bad, *argv[1:]]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1
    # A batch whose activations (counted on the meta device) exceed the device's memory is refused before it is
    # drawn; with just enough memory the same command scores.
    from ista_nas import spaces

    need = 8 * spaces.activation_bytes("nb201", 4, 1, tuple(batch[0].shape[2:]), 3, classes)
    monkeypatch.setattr(spaces, "memory_of", lambda device: (need - 1, "this machine's memory"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lower --batch-size, --channels or --layers" in err and err.count("\n") == 1
    monkeypatch.setattr(spaces, "memory_of", lambda device: (need, "this machine's memory"))
    assert main(argv) == 0
