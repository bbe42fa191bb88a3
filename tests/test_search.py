import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ista_nas import Genotype, RunFailed, load_genotype
from ista_nas.engine.checkpoint import load_checkpoint
from ista_nas.methods.bilevel import BilevelStepper
from ista_nas import methods

from conftest import interrupted_copy


def test_tiny_search_writes_every_output(tiny_config, tmp_path):
    cfg = tiny_config(epochs=2)
    result = methods.search(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "genotype.json", "ranking.json",
                                               "checkpoint.pt", "normal.png", "normal.svg", "reduce.png",
                                               "reduce.svg"}
    assert json.loads((run / "config.json").read_text()) == cfg.record()
    genotype = load_genotype(run / "genotype.json")
    assert genotype == result.genotype and len(genotype.normal) == 8
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert {"train_loss", "train_acc", "valid_loss", "valid_acc", "supports_changed", "seconds", "genotype"} <= set(r)
        Genotype.from_dict(r["genotype"])
    assert Genotype.from_dict(lines[-1]["genotype"]) == genotype
    ranking = json.loads((run / "ranking.json").read_text())
    assert [len(node) for node in ranking["normal"]] == [14, 21, 28, 35]
    # The genotype's pairs are the two best-ranked candidates of each node.
    for node, entries in enumerate(ranking["normal"]):
        best = {(e["op"], e["predecessor"]) for e in entries[:2]}
        assert best == set(genotype.normal[2 * node: 2 * node + 2])
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2


def test_resume_equals_an_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    # Stopped after epoch 2 of 3 (the learning rate has moved along its cosine by then).
    with monkeypatch.context() as patch:
        interrupted_copy(patch, 2, tmp_path / "full", tmp_path / "part")
        full = methods.search(tiny_config(epochs=3), tmp_path / "full")
    resumed = methods.resume(tmp_path / "part")
    assert resumed.genotype == full.genotype
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["search"]
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")["search"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3]
    assert resumed.metrics[-1]["train_loss"] == full.metrics[-1]["train_loss"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    methods.search(tiny_config(epochs=1), tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    real_step = BilevelStepper.step

    def poisoned(self, *batch):
        stats = real_step(self, *batch)
        stats["train_loss"] = stats["train_loss"] * float("nan")
        return stats

    monkeypatch.setattr(BilevelStepper, "step", poisoned)
    with pytest.raises(RunFailed, match="train_loss became non-finite"):
        methods.resume(tmp_path / "run", epochs=2)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def cli(*args):
    """``ista-nas ARGS`` run in this process: its exit code and what it printed (no interpreter start per call)."""
    import contextlib
    import io

    from ista_nas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ista-nas") and " error: " in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--preset", "fast"], ["unknown preset 'fast'", "quick"]),
    (["--dataset", "imagenet9"], ["unknown dataset 'imagenet9'"]),
    (["--sparsity", "14"], ["--sparsity (s) must be in 1..13"]),
    (["--proj-dims", "0"], ["--proj-dims (m) must be at least 1"]),
    (["--lr", "0"], ["--lr must be positive"]),
    (["--arch-lr", "-1"], ["--arch-lr must be positive"]),
    (["--matrix", "cauchy"], ["unknown --matrix 'cauchy'"]),
    (["--dataset", "folder:/nonexistent/x"], ["has no train/ directory"]),
    (["--lr", "abc"], ["invalid float value: 'abc'", "--help"]),
    (["--sparsity", "8"], ["at most --proj-dims (m)"]),
    (["--seed", str(2**64)], ["--seed must be in"]),
    (["--device", "tpu"], ["unknown --device 'tpu'"]),
    (["--channels", "4096"], ["G parameters needs", "lower --channels or --layers"]),
    (["--lr", "1e300"], ["--lr must be a finite number float32 holds"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
])
def test_bad_flags_give_one_line_and_exit_2(args, fragments, tmp_path):
    _assert_user_error(cli("search", "--preset", "quick", "--out", str(tmp_path / "r"), *args), *fragments)


@pytest.mark.slow  # launches processes
def test_bad_runs_and_checkpoints_give_one_line_and_exit_2(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    base = ["search", "--preset", "quick", "--dataset", f"folder:{tiny_folder}", "--channels", "4", "--layers",
            "3", "--batch-size", "12", "--epochs", "1", "--device", "cpu", "--subset", "0"]
    _assert_user_error(cli(*base, "--subset", "100000", "--out", str(tmp_path / "a")), "--subset 100000 is larger")
    assert not (tmp_path / "a").exists()  # a run that never started leaves nothing to clean up
    ok = cli(*base, "--out", str(tmp_path / "run"))
    assert ok.returncode == 0, ok.stderr
    _assert_user_error(cli(*base, "--lr", "0.5", "--out", str(tmp_path / "run")), "holds a different run")
    _assert_user_error(cli(*base, "--out", str(tmp_path / "run")), "already holds this run", "--resume")
    _assert_user_error(cli("search", "--resume", str(tmp_path / "run"), "--lr", "0.5"), "only --epochs and --device")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    good = ckpt.read_bytes()
    assert cli(*base, "--lr", "0.5", "--out", str(tmp_path / "other")).returncode == 0
    ckpt.write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    _assert_user_error(cli("search", "--resume", str(tmp_path / "run"), "--epochs", "2"), "other settings", "lr")
    ckpt.write_bytes(good[:1000])
    _assert_user_error(cli("search", "--resume", str(tmp_path / "run"), "--epochs", "2"), "cannot be read", str(ckpt))
    _assert_user_error(cli("search", "--resume", str(tmp_path / "nothing")), "not a run directory")


def test_stored_config_with_wrong_types_is_rejected(tiny_config, tmp_path):
    from ista_nas import UserError
    from ista_nas.methods import SearchConfig

    data = tiny_config().to_dict()
    with pytest.raises(UserError, match="epochs = '5' is not of type int"):
        SearchConfig.from_dict({**data, "epochs": "5"}).validate()
    with pytest.raises(UserError, match="augment = 1 is not of type bool"):
        SearchConfig.from_dict({**data, "augment": 1}).validate()
    SearchConfig.from_dict({**data, "lr": 1}).validate()  # an int where a float is expected is fine


def test_unfinished_first_epoch_can_simply_be_started_again(tiny_config, tmp_path):
    from ista_nas.engine.rundir import RunDir

    cfg = tiny_config(epochs=1)
    RunDir.create(tmp_path / "run", cfg.record())  # as left by a run killed before its first checkpoint
    result = methods.search(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoint.pt").exists() and len(result.metrics) == 1


def test_resume_survives_a_torn_metrics_line(tiny_config, tmp_path):
    methods.search(tiny_config(epochs=1), tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "train_lo')  # killed while appending epoch 2
    result = methods.resume(tmp_path / "run", epochs=2)
    assert [r["epoch"] for r in result.metrics] == [1, 2]


def test_unused_weights_keep_decaying_like_the_official_code(tiny_config):
    from ista_nas.methods import make_config
    from ista_nas.networks import SearchNetwork

    cfg = make_config("paper", lr=0.1, momentum=0.9, weight_decay=0.01)
    torch.manual_seed(0)
    net = SearchNetwork(channels=4, layers=3, num_classes=3, seed=0)
    stepper = BilevelStepper(net, cfg)
    x, y = torch.randn(6, 3, 16, 16), torch.randint(0, 3, (6,))
    stepper.begin_epoch(0)
    stepper.step(x, y, x, y)
    # Move node 0 of the normal cell to another support; its old ops are now unused.
    old = net.arch.support_list[0][0]
    new = [k for k in range(14) if k not in old][:2]
    with torch.no_grad():
        net.arch.support[0, 0] = torch.tensor(new)
    net.arch.cache_support()
    op = net.cells[0].nodes[0][old[0]]
    params = [p for p in op.parameters()]
    if not params:  # a parameter-free candidate: use the other one
        op = net.cells[0].nodes[0][old[1]]
        params = list(op.parameters())
    never_used = list(net.cells[0].nodes[0][new[0]].parameters())
    assert params and all(p.grad is not None for p in params)
    before = [p.detach().clone() for p in params]
    buffers = [stepper.w_opt.state[p]["momentum_buffer"].clone() for p in params]
    stepper.begin_epoch(1)
    lr = stepper.w_opt.param_groups[0]["lr"]
    stepper.step(x, y, x, y)
    for p, p0, buf in zip(params, before, buffers):
        expected_buf = 0.9 * buf + 0.01 * p0  # zero gradient: decay and momentum only
        torch.testing.assert_close(p.detach(), p0 - lr * expected_buf)
    assert all(p.grad is not None for p in never_used)  # active now


@pytest.mark.parametrize("method", ["two-stage", "one-stage", "darts"])
def test_a_darts_cell_budget_holds_every_epochs_cell_within_it(method, tiny_config, tmp_path):
    """--max-params in the DARTS cell space, exact per (cell type, node, input, op) candidate: a budget below the
    sampled cells' 10th percentile (two-stage and DARTS count the retrained network, one-stage its own); every
    epoch's held cell, counted whole, fits, and DARTS's holds two distinct inputs per node."""
    import random

    from ista_nas.spaces import SPACES

    space = SPACES["darts"]
    size = dict(budget_channels=6, budget_layers=5) if method != "one-stage" else {}
    own = space.cost_size(tiny_config(method=method, **size), "target" if method == "one-stage" else "sparse",
                          (3, 3, 16))
    count = lambda g: space.parameter_count(g, own.channels, own.layers, 3, 3, "cifar") / 1e6  # noqa: E731
    rng = random.Random(0)
    limit = float(np.quantile([count(space.sample(rng)) for _ in range(60)], 0.1))
    extra = dict(max_search_epochs=2, epochs=1) if method == "one-stage" else {}
    result = methods.search(tiny_config(method=method, max_params=limit, **size, **extra), tmp_path / "run")
    searched = [m for m in result.metrics if m.get("phase", "search") == "search"]
    assert len(searched) == 2
    for m in searched:
        held = space.from_dict(m["genotype"])
        assert m["budget"]["cost"] == pytest.approx(count(held), abs=1e-9) and count(held) <= limit
        if method == "darts":
            assert all(cell[2 * i][1] != cell[2 * i + 1][1] for cell in (held.normal, held.reduce) for i in range(4))
    assert count(result.genotype) <= limit


def test_darts_baseline_runs_every_op_and_derives_a_genotype(tiny_config, tmp_path):
    from ista_nas.networks.dense import DenseSearchNetwork

    torch.manual_seed(0)
    net = DenseSearchNetwork(channels=4, layers=3, num_classes=3, seed=0)
    calls = []
    for cell in net.cells:
        for ops in cell.nodes:
            for op in ops:
                op.register_forward_hook(lambda *_: calls.append(1))
    net(torch.randn(2, 3, 16, 16))
    assert len(calls) == 3 * 98  # every candidate of every node of every cell: (2+3+4+5) edges x 7 ops
    # DARTS's derivation: make edge 1 of node 2 (normal) carry the strongest op, dil_conv_5x5.
    with torch.no_grad():
        net.arch.alpha.zero_()
        net.arch.alpha[0, 2, 1, 6] = 5.0
        net.arch.alpha[0, 2, 3, 0] = 4.0
    g = net.genotype()
    assert g.normal[4:6] == (("dil_conv_5x5", 1), ("max_pool_3x3", 3))
    result = methods.search(tiny_config(method="darts", epochs=1), tmp_path / "run")
    assert len(result.genotype.normal) == 8 and "supports_changed" not in result.metrics[0]
    ranking = json.loads((tmp_path / "run" / "ranking.json").read_text())
    assert abs(sum(e["weight"] for e in ranking["normal"][0]) - 2.0) < 1e-5  # two edges, softmax each


def test_clip_with_b_clips_the_weight_step_by_the_norm_with_bs_accumulated_gradient():
    """The official two-stage rule, written out: b's gradient at the weight step is the architecture step's
    (held-out batch) plus the training batch's, and it counts in the norm that scales the weight gradients."""
    import copy

    import torch.nn.functional as F

    from ista_nas.methods import make_config
    from ista_nas.networks import SearchNetwork

    torch.manual_seed(0)
    net = SearchNetwork(channels=4, layers=3, num_classes=3, seed=0).double()
    with torch.no_grad():
        net.arch.b.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    net.arch.recover()
    gen = torch.Generator().manual_seed(1)
    x, x_val = (torch.randn(6, 3, 16, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    y, y_val = (torch.randint(0, 3, (6,), generator=gen) for _ in range(2))
    results = {}
    for rule in (False, True):
        cfg = make_config("paper", lr=0.1, momentum=0.9, weight_decay=0.01, grad_clip=0.05, clip_with_b=rule)
        model = copy.deepcopy(net)
        stepper = BilevelStepper(model, cfg)
        stepper.begin_epoch(0)
        start = copy.deepcopy(model)
        stepper.step(x, y, x_val, y_val)
        results[rule] = (start, model, cfg, stepper)
    start, model, cfg, _ = results[True]
    # Reference: b after its Adam step (the same in both rules), then the training batch's gradients.
    torch.testing.assert_close(model.arch.b, results[False][1].arch.b, rtol=0, atol=0)
    (g_val,) = torch.autograd.grad(F.cross_entropy(start(x_val), y_val), [start.arch.b])
    ref = copy.deepcopy(start)
    with torch.no_grad():
        ref.arch.b.copy_(model.arch.b)
    active = ref.active_weight_parameters()
    logits, _ = ref.forward_with_aux(x)
    *g_w, g_b = torch.autograd.grad(F.cross_entropy(logits, y), active + [ref.arch.b], allow_unused=True)
    lr, coefs = cfg.lr, []  # epoch 0 of the cosine
    for with_b in (False, True):
        norm = torch.sqrt(sum((g ** 2).sum() for g in g_w if g is not None) +
                          (((g_val + g_b) ** 2).sum() if with_b else 0))
        coef = min(1.0, cfg.grad_clip / (float(norm) + 1e-6))
        coefs.append(coef)
        assert coef < 1
        trained = dict(results[with_b][1].named_parameters())
        names = {id(p): n for n, p in ref.named_parameters()}
        for p0, g in zip(active, g_w):
            name = names[id(p0)]
            # The first step: no momentum yet; a weight the loss did not reach gets no gradient and stays.
            want = p0 if g is None else p0 - lr * (coef * g + cfg.weight_decay * p0)
            torch.testing.assert_close(trained[name], want, rtol=1e-9, atol=1e-12, msg=name)
    assert coefs[1] < 0.99 * coefs[0]  # b's gradient made the step measurably smaller


def test_a_setting_other_plugins_own_is_refused_in_one_line_before_anything_is_read(tmp_path, monkeypatch):
    """Walking the registries: every setting a method or a space lists (its ``fields.Settings`` groups) is
    refused under each method and each space that does not list it, by the one ownership check, in one line
    naming the flag, its owner and the fix; the search stops before it reads the (missing) dataset or makes its
    run directory. The same value is taken by a plug-in that lists it."""
    import dataclasses

    from ista_nas.errors import UserError
    from ista_nas.methods import METHODS, owned, settings
    from ista_nas.spaces import SPACES

    def other(f):  # a value away from the field's default that its own rule accepts
        rule = f.metadata["rule"]
        if rule is not None and rule.choices:
            return next(c for c in rule.choices if c != f.default)
        if isinstance(f.default, str):
            return f.default + "x"
        return not f.default if isinstance(f.default, bool) else f.default + (1 if isinstance(f.default, int) else 0.1)

    def listing(plugins, name):
        return [key for key, plugin in plugins.items()
                if any(name in {f.name for f in dataclasses.fields(part)} for part in plugin.settings)]

    fields = {f.name: f for plugin in (*METHODS.values(), *SPACES.values()) for part in plugin.settings
              for f in dataclasses.fields(part)}
    assert len(fields) >= 21  # the sparse code, clip, budget, split, retrain size, freezing, training phase, nodes
    tried = 0
    for name, f in fields.items():
        by_method, by_space = listing(METHODS, name), listing(SPACES, name)
        for space in SPACES:
            for method in METHODS:
                if (not by_method or method in by_method) and (not by_space or space in by_space):
                    mine = settings("quick", space=space, method=method, **{name: other(f)})
                    assert not owned(mine, settings("quick", space=space, method=method)), (name, space, method)
                    continue
                cfg = settings("quick", space=space, method=method, dataset="folder:/nonexistent", **{name: other(f)})
                with pytest.raises(UserError) as refused:
                    methods.search(cfg, tmp_path / "run")
                message, flag = str(refused.value), f"--{name.replace('_', '-')}"
                assert len(message.splitlines()) == 1, message
                if by_method and method not in by_method:
                    assert message.startswith(f"{flag} is a setting of --method {' and '.join(by_method)} ("), message
                    assert message.endswith(f"unused by --method {method}: drop it or use --method {by_method[0]}")
                else:
                    assert message == (f"{flag} is a setting of --space {by_space[0]} only, unused by --space {space}: "
                                       f"drop it or use --space {by_space[0]}"), message
                tried += 1
    assert tried >= 40
    assert not (tmp_path / "run").exists()


def test_a_batch_whose_activations_exceed_the_memory_is_refused_before_any_step(tiny_config, tmp_path, monkeypatch):
    """With the device's memory (patched) below what the batch's activations need, the search stops in one line
    naming the flags to lower, before any step and before the run directory is made; with just enough it runs."""
    from ista_nas import spaces
    from ista_nas.errors import UserError
    from ista_nas.methods.bilevel import BilevelStepper

    cfg, eager = tiny_config(epochs=1), BilevelStepper.eager_step
    need = cfg.batch_size * spaces.activation_bytes("darts", cfg.channels, cfg.layers, (16, 16), 3, 3)
    monkeypatch.setattr(spaces, "memory_of", lambda device: (need - 1, "this machine's memory"))
    monkeypatch.setattr(BilevelStepper, "eager_step", lambda *a: pytest.fail("a step ran"))
    with pytest.raises(UserError) as refused:
        methods.search(cfg, tmp_path / "run")
    assert "lower --batch-size, --channels or --layers" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1 and not (tmp_path / "run").exists()
    monkeypatch.setattr(spaces, "memory_of", lambda device: (need, "this machine's memory"))  # just enough
    monkeypatch.setattr(BilevelStepper, "eager_step", eager)
    assert methods.search(cfg, tmp_path / "fits").genotype is not None


def test_supernets_that_would_take_hours_to_build_are_refused_by_their_formula(tmp_path):
    """The candidate ops a supernet would build, counted node by node (DARTS cell: node i has i + 2 inputs) or
    edge by edge (NAS-Bench-201: 6 edges in each of the 3 stages' N cells), are bounded before anything is built;
    so are the measurement matrices' size and a trained network's cells."""
    from ista_nas import retrain
    from ista_nas.config import make_train_config
    from ista_nas.errors import UserError
    from ista_nas.limits import MAX_NODES
    from ista_nas.methods import MAX_CANDIDATE_OPS
    from ista_nas.networks.nb201 import NB201_OPS
    from ista_nas.ops import PRIMITIVES

    def darts(layers, nodes):
        return layers * sum((i + 2) * len(PRIMITIVES) for i in range(nodes))

    assert darts(6, MAX_NODES) <= MAX_CANDIDATE_OPS < darts(7, MAX_NODES)
    methods.make_config("quick", nodes=MAX_NODES, layers=6)
    with pytest.raises(UserError, match=f"would build {darts(7, MAX_NODES):,} candidate ops"):
        methods.make_config("quick", nodes=MAX_NODES, layers=7)
    nb201 = 3 * 1200 * 6 * len(NB201_OPS)
    with pytest.raises(UserError, match=f"--layers 1200: the supernet would build {nb201:,} candidate ops"):
        methods.make_config("quick", space="nb201", layers=1200)
    with pytest.raises(UserError, match="lower --proj-dims"):
        methods.make_config("quick", proj_dims=10**9)
    with pytest.raises(UserError, match="--layers must be at most 2,000"):
        retrain.train(make_train_config("quick", layers=100000), tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_a_missing_tensorboard_is_refused_before_the_data_loads(tmp_path, monkeypatch):
    from ista_nas.errors import UserError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    cfg = methods.settings("quick", dataset="folder:/nonexistent", tensorboard=True, device="cpu")
    with pytest.raises(UserError, match="needs the tensorboard package"):
        methods.search(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- the two-stage step on a toy sparse supernet -----------------------------------------------------------


class _SliceSupernet(torch.nn.Module):
    """A toy sparse supernet with the contract the two-stage step uses: one decision group of 4 candidates,
    candidate k a linear classifier of the k-th slice of the input, mixed over the step's support as the nb201
    supernet mixes an edge (``sparse_coding.scale_weights``)."""

    def __init__(self, cfg, start: list[int], seed: int):
        super().__init__()
        from ista_nas.sparse_coding import SparseCode

        torch.manual_seed(seed)
        self.candidates = torch.nn.ModuleList(torch.nn.Linear(8, 3) for _ in range(4))
        self.arch = SparseCode([4], types=1, m=cfg.proj_dims, s=cfg.sparsity, seed=seed, init_scale=cfg.arch_init)
        with torch.no_grad():  # the start: z ~ the indicator of ``start`` (plus small entries), the support
            self.arch.b.copy_(cfg.arch_init * (self.arch.A[..., start].sum(-1) + 0.05 * torch.randn(1, 1, 3)))
        self.arch.recover()
        self.weight_scale = cfg.weight_scale

    def forward_with_aux(self, x):
        from ista_nas.sparse_coding import scale_weights

        weights = scale_weights(self.arch.relaxed_weights()[0], self.weight_scale)[0]
        support = self.arch.support_list[0][0]
        return sum(w * self.candidates[k](x[:, k]) for w, k in zip(weights, support)), None

    def forward(self, x):
        return self.forward_with_aux(x)[0]

    def arch_parameters(self):
        return [self.arch.b]

    def weight_parameters(self):
        return list(self.candidates.parameters())

    def active_weight_parameters(self):
        return [p for k in self.arch.support_list[0][0] for p in self.candidates[k].parameters()]


def test_the_search_moves_its_support_to_the_candidate_the_task_needs(tiny_config):
    """The labels depend only on slice 2 of the input and the search starts from a support without candidate 2.
    With the nb201 preset's settings it must end with candidate 2 as the genotype's choice,
    in every one of 4 seeds."""
    for seed in range(4):
        cfg = tiny_config(space="nb201", lr=0.1, epochs=120, seed=seed)
        g = torch.Generator().manual_seed(seed)
        teacher = torch.randn(8, 3, generator=g)

        def batch(n):
            x = torch.randn(n, 4, 8, generator=g)
            return x, (x[:, 2] @ teacher).argmax(1)

        net = _SliceSupernet(cfg, start=[0, 1, 3][: cfg.sparsity], seed=seed)
        assert 2 not in net.arch.support_list[0][0]
        stepper = BilevelStepper(net, cfg)
        for epoch in range(cfg.epochs):
            stepper.begin_epoch(epoch)
            for _ in range(20):
                stepper.step(*batch(32), *batch(32))
            net.arch.recover()
        assert int(net.arch.ranking()[0, 0, 0]) == 2, (seed, net.arch.z)


def _same_tensors(a, b, where=""):
    """Every leaf of two nested checkpoints equal (tensors bit for bit: dtype, shape and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _same_tensors(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_search_started_from_a_runs_config_reproduces_it_and_flags_override_it(tiny_folder, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    first = tmp_path / "first"
    methods.search(methods.make_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=2,
                                       batch_size=12, channels=4, layers=1, device="cpu", seed=3), first)
    again = tmp_path / "again"
    assert cli("search", "--config", str(first / "config.json"), "--out", str(again)).returncode == 0
    assert json.loads((again / "config.json").read_text()) == json.loads((first / "config.json").read_text())
    assert (again / "genotype.json").read_text() == (first / "genotype.json").read_text()

    def timeless(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert timeless(again) == timeless(first)
    _same_tensors(load_checkpoint(again / "checkpoint.pt"), load_checkpoint(first / "checkpoint.pt"))
    # A flag overrides the file; --resume excludes it; a training run's config is no search config.
    other = tmp_path / "other"
    assert cli("search", "--config", str(first / "config.json"), "--seed", "4", "--epochs", "1", "--out",
               str(other)).returncode == 0
    stored = json.loads((other / "config.json").read_text())
    lr = json.loads((first / "config.json").read_text())["lr"]
    assert (stored["seed"], stored["epochs"], stored["lr"]) == (4, 1, lr)
    _assert_user_error(cli("search", "--config", str(first / "config.json"), "--resume", str(first)), "--resume")
    (tmp_path / "train.json").write_text(json.dumps({"genotype": "ista_twostage", "seed": 0}))
    _assert_user_error(cli("search", "--config", str(tmp_path / "train.json")), "(genotype)")
    (tmp_path / "old.json").write_text(json.dumps({"explore": 1}))
    _assert_user_error(cli("search", "--config", str(tmp_path / "old.json")), "explore")
    (tmp_path / "recorded.json").write_text(json.dumps({"command": "train", "seed": 0}))
    _assert_user_error(cli("search", "--config", str(tmp_path / "recorded.json")), "records an ista-nas train run")


def test_a_run_records_what_it_is_and_a_run_of_an_earlier_version_is_read_by_a_named_rule(runs):
    """config.json names the command, and a search's method and space; every reader asks ``run_record``, which
    reads those keys, or applies the written-out rule for runs of earlier versions and says which it applied."""
    from ista_nas.errors import UserError
    from ista_nas.methods import LEGACY_COMMAND, LEGACY_METHOD, LEGACY_SPACE, RunRecord, run_record

    search = json.loads((runs["search"] / "config.json").read_text())
    train = json.loads((runs["train"] / "config.json").read_text())
    assert (search["command"], search["method"], search["space"]) == ("search", "two-stage", "nb201")
    assert train["command"] == "train" and "method" not in train
    assert run_record(search, "s") == RunRecord("search", "two-stage", "nb201", "recorded")
    assert run_record(train, "t") == RunRecord("train", None, "nb201", "recorded")
    # Earlier versions: no command (then neither space nor method, before those existed).
    old = {k: v for k, v in search.items() if k not in ("command", "space", "method")}
    assert run_record(old, "o") == RunRecord("search", "two-stage", "darts",
                                             "; ".join((LEGACY_COMMAND, LEGACY_SPACE, LEGACY_METHOD)))
    old_train = {k: v for k, v in train.items() if k != "command"}
    assert run_record(old_train, "o") == RunRecord("train", None, "nb201", LEGACY_COMMAND)
    with pytest.raises(UserError, match="unknown command 'evaluate'"):
        run_record({**search, "command": "evaluate"}, "e")


@pytest.mark.parametrize("method", ["two-stage", "one-stage", "darts"])
def test_a_budgeted_search_holds_a_cell_within_budget_at_every_epoch(method, tiny_config, tmp_path):
    """A tight budget (the 10th percentile of the 4,096 cells' latency on pixel3): the cell held after every epoch,
    recomputed from its record, fits; where the search's own unconstrained choice (ISTA-NAS: the largest |z| per
    edge, in ranking.json) did not fit, the budget chose another."""
    import itertools

    from ista_nas import hardware
    from ista_nas.networks.nb201 import NB201_OPS, Nb201Arch
    from ista_nas.spaces import SPACES

    model = hardware.cost_model("nb201", "latency", "pixel3")
    limit = float(np.quantile([model.of(c) for c in itertools.product(range(1, 5), repeat=6)], 0.1))
    extra = dict(max_search_epochs=2, epochs=1) if method == "one-stage" else {}
    cfg = tiny_config(space="nb201", method=method, channels=4, layers=1, max_latency=limit, latency="pixel3",
                      **extra)
    result = methods.search(cfg, tmp_path / "run")
    searched = [m for m in result.metrics if m.get("phase", "search") == "search"]
    assert len(searched) == 2
    for m in searched:
        cost = hardware.cost_of("nb201", "latency", Nb201Arch.parse(m["genotype"]["arch"]), "pixel3")
        assert m["budget"]["limit"] == limit and m["budget"]["cost"] == pytest.approx(cost) and cost <= limit
    assert hardware.cost_of("nb201", "latency", result.genotype, "pixel3") <= limit
    if method == "two-stage":
        ranking = json.loads((tmp_path / "run" / "ranking.json").read_text())["cell"]
        top = Nb201Arch(tuple(edge[0]["op"] for edge in ranking))
        assert hardware.cost_of("nb201", "latency", top, "pixel3") > limit and top != result.genotype
        assert all(op != NB201_OPS[0] for op in result.genotype.ops)
        # The report and compare set the found cell beside the best and the mean cell within the same budget,
        # here enumerated from the table.
        from ista_nas.analysis.compare import compare, format_groups
        from ista_nas.analysis.report import write_run_report
        from ista_nas.benchmark import builtin_table

        table = builtin_table(SPACES["nb201"])
        within = [v for a, v in table.values.items() if "none" not in a
                  and hardware.cost_of("nb201", "latency", Nb201Arch.parse(a), "pixel3") <= limit * (1 + 1e-9)]
        value = table.values[str(result.genotype)]
        line = (f"within budget ({len(within):,} cells) the front {max(within):.2f} (margin "
                f"{value - max(within):+.2f})")
        write_run_report(tmp_path / "run")
        assert line in (tmp_path / "run" / "report.html").read_text()
        _, groups, _ = compare([tmp_path / "run"])
        assert line in format_groups(groups) and f"a random draw {np.mean(within):.2f}" in format_groups(groups)
