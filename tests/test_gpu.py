import pytest
import torch

from ista_nas.methods.two_stage import TwoStageSearch
from ista_nas.networks import SearchNetwork

pytestmark = pytest.mark.gpu


def test_search_step_on_cuda_matches_cpu(tiny_config):
    cfg = tiny_config(channels_last=False)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,))
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = SearchNetwork(channels=4, layers=3, num_classes=3, seed=0).to(device)
        searcher = TwoStageSearch(net, cfg)
        searcher.begin_epoch(0)
        searcher.step(x.to(device), y.to(device), x.to(device), y.to(device))
        results.append(net.arch.b.detach().cpu())
    torch.testing.assert_close(results[0], results[1], atol=1e-4, rtol=1e-3)
