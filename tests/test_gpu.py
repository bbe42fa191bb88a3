"""CUDA checks (skipped without a CUDA device): same numbers as the CPU, no host syncs in a search step."""

import pytest
import torch
import torch.nn.functional as F

from ista_nas.engine.data import Augment, DeviceLoader, ImageData
from ista_nas.methods.bilevel import BilevelStepper
from ista_nas.networks import SearchNetwork
from ista_nas import methods

pytestmark = pytest.mark.gpu


def _net(device):
    torch.manual_seed(0)
    net = SearchNetwork(channels=4, layers=3, num_classes=3, seed=0)
    with torch.no_grad():
        net.arch.b.normal_(0, 1e-2, generator=torch.Generator().manual_seed(1))
    net.arch.recover()
    return net.to(device)


def test_gradients_weights_and_supports_match_the_cpu(tiny_config):
    cfg = tiny_config(channels_last=False)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    grads, weights, supports = [], [], []
    for device in ("cpu", "cuda"):
        net = _net(device)
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        grads.append(torch.autograd.grad(loss, [net.arch.b])[0].cpu())
        stepper = BilevelStepper(net, cfg)
        stepper.begin_epoch(0)
        stepper.step(x.to(device), y.to(device), x.to(device), y.to(device))
        weights.append({k: v.detach().cpu() for k, v in net.state_dict().items()})
        net.arch.recover()
        supports.append(net.arch.support_list)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-3)
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-4, rtol=1e-3, msg=key)
    assert supports[0] == supports[1]


def test_search_steps_do_not_synchronise_with_the_host(tiny_config):
    cfg = tiny_config()
    data = ImageData(torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8), torch.randint(0, 3, (64,)),
                     ["a", "b", "c"])
    device = torch.device("cuda")
    loader = DeviceLoader(data, torch.arange(64), 8, device, [0.5] * 3, [0.25] * 3,
                          Augment(crop_padding=2, flip=True, cutout=4), channels_last=True)
    net = _net(device).to(memory_format=torch.channels_last)
    stepper = BilevelStepper(net, cfg)
    stepper.begin_epoch(0)
    batches = list(loader.epoch(0))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for (x, y), (xv, yv) in zip(batches, batches[1:]):
            stepper.step(x, y, xv, yv)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_tiny_search_runs_on_cuda(tiny_config, tmp_path):
    """A search on CUDA trains as the same search on the CPU (first epoch's losses within 2%) and ends with the
    genotype its checkpoint and its last metrics line hold."""
    import dataclasses

    from ista_nas.engine.checkpoint import load_checkpoint

    cfg = tiny_config(device="cuda", epochs=1)
    result = methods.search(cfg, tmp_path / "cuda")
    cpu = methods.search(dataclasses.replace(cfg, device="cpu"), tmp_path / "cpu")
    for key in ("train_loss", "valid_loss"):
        assert result.metrics[0][key] == pytest.approx(cpu.metrics[0][key], rel=0.02), key
    state = load_checkpoint(tmp_path / "cuda" / "checkpoint.pt")
    assert state["genotype"] == result.genotype.to_dict() == result.metrics[-1]["genotype"]


def test_tiny_training_runs_on_cuda_with_mixed_precision(tiny_folder, tmp_path, monkeypatch):
    from ista_nas import retrain
    from ista_nas.config import make_train_config

    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    for amp in ("auto", "fp16"):
        cfg = make_train_config("quick", dataset=f"folder:{tiny_folder}", subset=0, epochs=1, batch_size=12,
                                channels=4, layers=3, device="cuda", amp=amp)
        result = retrain.train(cfg, tmp_path / amp)
        assert 0 <= result.test_top1 <= 100


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
@pytest.mark.parametrize("kind", ["search", "train"])
def test_two_gpu_processes_compute_the_one_process_steps(kind, tmp_path):
    # nccl, cuda:LOCAL_RANK and the global-batch BN on CUDA (float64; cuDNN may pick other algorithms per run).
    from test_distributed import TORCHRUN, compare_processes

    if TORCHRUN is None:
        pytest.skip("torchrun is not on PATH")
    compare_processes(kind, tmp_path, "cuda", rtol=1e-7)


@pytest.mark.parametrize("space, method, kind", [("nb201", "two-stage", "sparse"), ("darts", "two-stage", "sparse"),
                                                 ("nb201", "darts", "dense"), ("nb201", "one-stage", "target")])
def test_captured_steps_give_the_eager_steps_losses_weights_and_supports(space, method, kind):
    """20 steps in two epochs with a recovery (which moves the supports) between them: replayed from CUDA graphs
    (--cuda-graphs on) they give the eager steps' losses, weights, optimiser states and supports."""
    from ista_nas.engine.data import DataInfo
    from ista_nas.engine.distributed import Dist
    from ista_nas.methods.base import build_supernet
    from ista_nas.methods.one_stage import OneStageStepper

    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    epochs = [[(torch.randn(16, 3, 16, 16, generator=gen).to(device), torch.randint(0, 3, (16,), generator=gen)
                .to(device)) for _ in range(10)] for _ in range(2)]
    runs = []
    for graphs in ("off", "on"):
        cfg = methods.make_config("quick", space=space, method=method, channels=8, layers=1 if space == "nb201" else 3,
                                  arch_lr=0.05, device="cuda", seed=0, cuda_graphs=graphs)
        net = build_supernet(cfg, DataInfo(["a", "b", "c"], 3, (16, 16)), kind).to(device)
        if kind != "dense":
            with torch.no_grad():
                net.arch.b.copy_(1e-2 * torch.randn(net.arch.b.shape, generator=torch.Generator().manual_seed(1)))
            net.arch.recover()
        stepper = (OneStageStepper if kind == "target" else BilevelStepper)(net, cfg, Dist(device=device))
        losses, supports = [], []
        for epoch, batches in enumerate(epochs):
            stepper.begin_epoch() if kind == "target" else stepper.begin_epoch(epoch)
            for x, y in batches:
                out = stepper.step(x, y) if kind == "target" else stepper.step(x, y, x.flip(0), y.flip(0))
                losses.append(float(out["loss" if kind == "target" else "train_loss"]))
            if kind != "dense":
                net.arch.recover()
                supports.append(net.arch.support_list)
        if graphs == "on":
            assert stepper.captured.captures == 2
        runs.append((losses, supports, stepper.state_dict()))
    (eager_losses, eager_supports, eager_state), (losses, supports, state) = runs
    assert losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-5)
    assert supports == eager_supports
    torch.testing.assert_close(state, eager_state, rtol=1e-3, atol=1e-4)


def test_a_captured_training_step_gives_the_eager_steps():
    from ista_nas.config import make_train_config
    from ista_nas.engine.distributed import Dist
    from ista_nas.engine.trainer import Trainer
    from ista_nas.networks.cnn import Network
    from ista_nas.published import PUBLISHED

    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 3, 32, 32, generator=gen).to(device), torch.randint(0, 10, (16,), generator=gen)
                .to(device)) for _ in range(10)]
    runs = []
    for graphs in ("off", "on"):
        torch.manual_seed(0)
        model = Network(PUBLISHED["ista_twostage"], 8, 5, 10).to(device)
        cfg = make_train_config("quick", channels=8, layers=5, drop_path=0.0, amp="off", device="cuda",
                                cuda_graphs=graphs)
        trainer = Trainer(model, cfg, Dist(device=device))
        losses = []
        for epoch in range(2):
            trainer.begin_epoch(epoch)
            losses += [float(trainer.step(x, y)["loss"]) for x, y in batches[5 * epoch: 5 * epoch + 5]]
        runs.append((losses, trainer.state_dict()))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-4, abs=1e-5)
    torch.testing.assert_close(runs[1][1]["model"], runs[0][1]["model"], rtol=1e-3, atol=1e-4)
