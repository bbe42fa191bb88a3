import numpy as np
import pytest
import torch
from sklearn.linear_model import LassoLars

from ista_nas import lasso
from ista_nas.solver import lasso_objective

LAM = 1e-5


def reference(A, b, lam):
    """scikit-learn's exact homotopy solver; its objective is scaled by 1/m, hence alpha = lam / m."""
    return LassoLars(alpha=lam / A.shape[0], fit_intercept=False, max_iter=10_000).fit(A, b).coef_


def random_problems(rng, count, m, sizes, kind):
    problems = []
    for k in range(count):
        n = sizes[k % len(sizes)]
        A = rng.random((m, n)) if kind == "uniform" else rng.standard_normal((m, n)) / np.sqrt(m)
        if k % 3:
            # Like the search's b: no exact sparse preimage; b starts near 1e-3 and grows during a search
            # (larger b gives longer homotopy paths with drops, where degenerate steps used to hide).
            b = (1e-3 if k % 3 == 1 else 0.3) * rng.standard_normal(m)
        else:
            z = np.zeros(n)
            z[rng.choice(n, 2, replace=False)] = rng.standard_normal(2)
            b = A @ z
        problems.append((A, b))
    return problems


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_matches_exact_reference_solver(kind):
    rng = np.random.default_rng(1 if kind == "uniform" else 2)
    problems = random_problems(rng, 120, 7, (14, 21, 28, 35), kind)
    # Solve them all as one zero-padded batch, as the search does.
    A = torch.zeros(len(problems), 7, 35, dtype=torch.float64)
    b = torch.zeros(len(problems), 7, dtype=torch.float64)
    for k, (Ak, bk) in enumerate(problems):
        A[k, :, : Ak.shape[1]] = torch.from_numpy(Ak)
        b[k] = torch.from_numpy(bk)
    res = lasso(A, b, LAM)
    assert res.converged
    for k, (Ak, bk) in enumerate(problems):
        ref = reference(Ak, bk, LAM)
        f_ref = float(lasso_objective(torch.from_numpy(Ak), torch.from_numpy(bk), torch.from_numpy(ref), LAM))
        f = float(res.objective[k])
        assert (f - f_ref) / f_ref < 1e-6
        z = res.z[k, : Ak.shape[1]].numpy()
        assert set(np.argsort(-np.abs(z))[:2]) == set(np.argsort(-np.abs(ref))[:2])
        assert np.all(res.z[k, Ak.shape[1]:].numpy() == 0)  # padding never enters


def test_reported_residual_and_iterations():
    torch.manual_seed(0)
    A, b = torch.rand(3, 7, 21, dtype=torch.float64), 1e-3 * torch.randn(3, 7, dtype=torch.float64)
    res = lasso(A, b, LAM)
    assert res.iterations > 0
    expected = torch.linalg.vector_norm((A @ res.z.unsqueeze(-1)).squeeze(-1) - b, dim=-1)
    torch.testing.assert_close(res.residual, expected)
    assert float(res.kkt_violation.max()) <= 1e-9 * float((A.transpose(1, 2) @ b.unsqueeze(-1)).abs().max())


def test_warm_start_reaches_the_same_optimum():
    torch.manual_seed(1)
    A, b = torch.rand(8, 7, 35, dtype=torch.float64), 1e-3 * torch.randn(8, 7, dtype=torch.float64)
    cold = lasso(A, b, LAM)
    b2 = b + 1e-5 * torch.randn_like(b)
    warm = lasso(A, b2, LAM, z0=cold.z)
    fresh = lasso(A, b2, LAM)
    torch.testing.assert_close(warm.z, fresh.z, atol=1e-12, rtol=1e-9)
    # From the exact optimum itself, the exact step certifies it without any homotopy.
    again = lasso(A, b2, LAM, z0=fresh.z, fista_iters=0)
    assert again.iterations == 1
    torch.testing.assert_close(again.z, fresh.z, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("kind", ["uniform", "gaussian"])
def test_recovers_sparse_vectors_with_enough_measurements(kind):
    # With m = 7 exact recovery of a 2-sparse z fails often (a property of the problem, not the solver);
    # with m = 20 measurements of n = 35 it is reliable, so the solver must find z itself.
    gen = torch.Generator().manual_seed(3)
    m, n, count = 20, 35, 50
    A = torch.rand(count, m, n, generator=gen, dtype=torch.float64)
    if kind == "gaussian":
        A = torch.randn(count, m, n, generator=gen, dtype=torch.float64) / m**0.5
    z = torch.zeros(count, n, dtype=torch.float64)
    idx = torch.stack([torch.randperm(n, generator=gen)[:2] for _ in range(count)])
    z.scatter_(1, idx, 0.5 + torch.rand(count, 2, generator=gen, dtype=torch.float64))
    res = lasso(A, (A @ z.unsqueeze(-1)).squeeze(-1), 1e-8)
    support = res.z.abs().topk(2, dim=-1).indices.sort(-1).values
    assert torch.equal(support, idx.sort(-1).values)
    torch.testing.assert_close(res.z, z, atol=1e-6, rtol=0)


def test_batch_shape_and_dtype_are_kept():
    A, b = torch.rand(2, 4, 7, 14), torch.randn(2, 4, 7) * 1e-3
    res = lasso(A, b, LAM)
    assert res.z.shape == (2, 4, 14) and res.z.dtype == torch.float32
    assert res.residual.shape == (2, 4)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="lam must be positive"):
        lasso(torch.rand(7, 14), torch.rand(7), 0.0)
    with pytest.raises(ValueError, match="A must be"):
        lasso(torch.rand(7, 14), torch.rand(6), 1e-5)
    with pytest.raises(ValueError, match="z0 must have shape"):
        lasso(torch.rand(7, 14), torch.rand(7), 1e-5, z0=torch.zeros(13))


def test_zero_measurement_gives_zero():
    res = lasso(torch.rand(2, 7, 14), torch.zeros(2, 7), LAM)
    assert torch.count_nonzero(res.z) == 0


def test_certifies_optimality_along_long_homotopy_paths():
    # Large b relative to lam makes long solution paths with coefficients leaving and re-entering: the
    # degenerate breakpoints there once produced supports 2 lam away from optimal.
    gen = torch.Generator().manual_seed(11)
    for scale in (0.05, 0.3, 1.0):
        A = torch.rand(200, 7, 35, generator=gen, dtype=torch.float64)
        b = scale * torch.randn(200, 7, generator=gen, dtype=torch.float64)
        res = lasso(A, b, LAM)
        assert res.converged, float(res.kkt_violation.max())
