"""engine.graphs on the CPU: where steps are captured, and the bookkeeping of a captured step (static inputs,
outputs written in place, a capture per epoch, the eager smaller batch) with a stand-in for the CUDA graph. The
real capture on a card: tests/test_gpu.py."""

import dataclasses

import pytest
import torch

from ista_nas import methods
from ista_nas.engine.distributed import Dist
from ista_nas.engine.graphs import CapturedStep, use_graphs
from ista_nas.engine.loop import Meter
from ista_nas.errors import UserError
from ista_nas.methods.base import build_supernet
from ista_nas.methods.bilevel import BilevelStepper
from ista_nas.methods.one_stage import OneStageStepper
from ista_nas.engine.data import DataInfo

CUDA = Dist(device=torch.device("cuda"))


@pytest.mark.parametrize("setting, ctx, fp16, captured, refusal", [
    ("auto", Dist(), False, False, None),
    ("auto", CUDA, False, True, None),
    ("auto", dataclasses.replace(CUDA, world=2), False, False, None),
    ("auto", CUDA, True, False, None),
    ("off", CUDA, False, False, None),
    ("on", CUDA, False, True, None),
    ("on", Dist(), False, None, "on the CPU"),
    ("on", dataclasses.replace(CUDA, world=2), False, None, "2 processes"),
    ("on", CUDA, True, None, "fp16 loss scaling"),
])
def test_graphs_run_on_one_cuda_process_without_fp16_and_on_is_refused_elsewhere(setting, ctx, fp16, captured,
                                                                                   refusal):
    if refusal is None:
        assert use_graphs(setting, ctx, fp16) is captured
        return
    with pytest.raises(UserError) as refused:
        use_graphs(setting, ctx, fp16)
    message = str(refused.value)
    assert refusal in message and "--cuda-graphs auto" in message and len(message.splitlines()) == 1


def test_cuda_graphs_on_is_refused_on_the_cpu_before_the_data_loads(tmp_path):
    cfg = methods.settings("quick", dataset="folder:/nonexistent", cuda_graphs="on", device="cpu")
    with pytest.raises(UserError, match="--cuda-graphs on: this run is on the CPU"):
        methods.search(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="--amp bf16 or --cuda-graphs auto"):
        methods.make_config("quick", method="one-stage", cuda_graphs="on", amp="fp16")


class ReplayingCapture:
    """A stand-in for a CUDA graph on the CPU: the capture runs the step once for its output tensors, a replay
    runs it again on the same static inputs and writes the results into those tensors, as a graph's replay
    writes its outputs. Counts captures and replays."""

    def __init__(self):
        self.captures = self.replays = 0

    def __call__(self, fn):
        self.captures += 1
        outputs = fn()

        def replay():
            self.replays += 1
            for key, value in fn().items():
                outputs[key].copy_(value)

        return replay, outputs, True


def _stepper(kind, seed=0):
    cfg = methods.make_config("quick", space="nb201", method="one-stage" if kind == "target" else "two-stage",
                              channels=4, layers=1, arch_lr=0.05, device="cpu", seed=seed, cuda_graphs="off")
    net = build_supernet(cfg, DataInfo(["a", "b", "c"], 3, (8, 8)), kind)
    with torch.no_grad():
        net.arch.b.normal_(0, 1e-2, generator=torch.Generator().manual_seed(1))
    net.arch.recover()
    return (OneStageStepper if kind == "target" else BilevelStepper)(net, cfg), net


@pytest.mark.parametrize("kind", ["sparse", "target"])
def test_a_captured_step_replays_the_eager_steps_across_a_support_change(kind):
    """Three epochs of 8 batches (the first's last one smaller), the supports recovered (and changed) between
    epochs: the captured stepper's sums, weights, optimiser state and supports are the eager stepper's; a graph
    is captured once an epoch after two eager warm-up steps, and the smaller batch runs eagerly."""
    gen = torch.Generator().manual_seed(0)
    epochs = [[(torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen))
               for n in sizes] for sizes in ([6] * 7 + [4], [6] * 8, [6] * 8)]
    runs = []
    for captured in (False, True):
        stepper, net = _stepper(kind)
        capture = ReplayingCapture()
        if captured:
            stepper.captured = CapturedStep(stepper.eager_step, capture=capture)
        sums, supports = [], [net.arch.support_list]
        for epoch, batches in enumerate(epochs):
            stepper.begin_epoch(epoch) if kind == "sparse" else stepper.begin_epoch()
            meter = Meter()
            for x, y in batches:
                meter.add(stepper.step(x, y, x.flip(0), y.flip(0)) if kind == "sparse" else stepper.step(x, y))
            sums.append(meter.values())
            net.arch.recover()
            supports.append(net.arch.support_list)
        runs.append((sums, supports, stepper.state_dict(), capture))
    (eager_sums, eager_supports, eager_state, _), (sums, supports, state, capture) = runs
    assert len({str(s) for s in eager_supports}) > 1, "the supports should move between epochs"
    assert sums == eager_sums and supports == eager_supports
    torch.testing.assert_close(state, eager_state, rtol=0, atol=0)
    # Per epoch 2 warm-up steps, 1 capture (which runs its batch), then replays: 4 in the first, 5 in the others.
    assert (capture.captures, capture.replays) == (3, 4 + 5 + 5)


def test_a_captured_step_copies_new_inputs_into_its_static_ones_and_can_be_reset():
    """The step sees each call's inputs (not the captured ones); a reset makes the next calls eager again."""
    seen = []

    def step(x):
        seen.append(x.clone())
        return {"double": x * 2}

    capture = ReplayingCapture()
    captured = CapturedStep(step, warmup=1, capture=capture)
    values = [captured(torch.full((2,), float(k)))["double"].clone() for k in range(4)]
    assert [v.tolist() for v in values] == [[2 * k] * 2 for k in range(4)]
    assert capture.captures == 1 and capture.replays == 2
    captured.reset()
    captured(torch.zeros(2))
    assert capture.captures == 1  # a warm-up call again
    captured(torch.zeros(3))  # another shape: eager, and the warm-up count starts over
    captured(torch.zeros(3))
    assert capture.captures == 2


def test_a_failed_capture_goes_on_eagerly_unless_graphs_were_required(caplog):
    def broken(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    step = CapturedStep(lambda x: {"y": x + 1}, warmup=0, capture=broken)
    assert step(torch.ones(1))["y"].item() == 2 and step(torch.ones(1))["y"].item() == 2
    assert "capture failed" in caplog.text
    with pytest.raises(RuntimeError, match="not permitted"):
        CapturedStep(lambda x: {"y": x}, warmup=0, capture=broken, required=True)(torch.ones(1))
