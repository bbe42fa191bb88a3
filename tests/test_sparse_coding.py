import numpy as np
import pytest
import torch

from ista_nas.sparse_coding import SparseCode, measurement_matrices

SIZES = [14, 21, 28, 35]


def test_measurement_matrices_are_seeded_padded_and_distributed():
    a = measurement_matrices(SIZES, 7, "uniform", torch.Generator().manual_seed(0), copies=2)
    b = measurement_matrices(SIZES, 7, "uniform", torch.Generator().manual_seed(0), copies=2)
    assert torch.equal(a, b) and a.shape == (2, 4, 7, 35)
    for g, n in enumerate(SIZES):
        assert torch.count_nonzero(a[:, g, :, n:]) == 0
    block = a[:, 3]
    assert 0 <= float(block.min()) and float(block.max()) < 1
    g = measurement_matrices([2000], 7, "gaussian", torch.Generator().manual_seed(1))
    assert abs(float(g.std()) - 7**-0.5) < 0.02 and abs(float(g.mean())) < 0.02
    with pytest.raises(ValueError, match="unknown measurement matrix"):
        measurement_matrices(SIZES, 7, "cauchy", torch.Generator())


def test_relaxed_weights_follow_the_formula():
    torch.manual_seed(0)
    code = SparseCode(SIZES, types=2, m=7, s=2, seed=3)
    with torch.no_grad():
        code.b.normal_(0, 1e-2)
    code.recover()
    alpha = code.relaxed_weights().detach().double().numpy()
    A, b, z = code.A.double().numpy(), code.b.detach().double().numpy(), code.z.double().numpy()
    for t in range(2):
        for g in range(4):
            S = code.support_list[t][g]
            zs = np.zeros_like(z[t, g])
            zs[S] = z[t, g, S]
            expected = zs[S] + A[t, g][:, S].T @ (b[t, g] - A[t, g] @ zs)
            np.testing.assert_allclose(alpha[t, g], expected, rtol=1e-5, atol=1e-9)
            # The official code's form: alpha = A^T b - E^T z_S with E = A^T A - I restricted to the support.
            E = A[t, g].T @ A[t, g] - np.eye(A.shape[-1])
            official = (A[t, g].T @ b[t, g] - E.T @ zs)[S]
            np.testing.assert_allclose(alpha[t, g], official, rtol=1e-5, atol=1e-9)


def test_gradient_of_relaxed_weights_is_A_S_transposed():
    code = SparseCode(SIZES, m=7, s=2, seed=1)
    jac = torch.autograd.functional.jacobian(lambda b: _alpha_with_b(code, b), code.b.detach())
    # jac: (T, G, s, T, G, m); only the same (t, g) block is nonzero, and it equals A_S^T.
    for t in range(2):
        for g in range(4):
            S = code.support_list[t][g]
            torch.testing.assert_close(jac[t, g, :, t, g], code.A[t, g][:, S].T)
            block = jac[t, g].clone()
            block[:, t, g] = 0
            assert torch.count_nonzero(block) == 0


def _alpha_with_b(code, b):
    saved = code.b
    try:
        del code.b
        code.b = b
        return code.relaxed_weights()
    finally:
        del code.b
        code.b = saved


def test_support_is_top_s_and_never_padding():
    code = SparseCode(SIZES, m=7, s=3, seed=2)
    with torch.no_grad():
        code.b.zero_()  # z = 0: every entry ties, padding must still be excluded
    code.recover()
    for t in range(2):
        for g, n in enumerate(SIZES):
            assert all(k < n for k in code.support_list[t][g])
    with torch.no_grad():
        code.b.normal_(0, 1e-2)
    code.recover()
    for t in range(2):
        for g, n in enumerate(SIZES):
            top = torch.topk(code.z[t, g, :n].abs(), 3).indices.sort().values.tolist()
            assert code.support_list[t][g] == top


def test_state_dict_round_trip_restores_the_host_support_cache():
    a = SparseCode(SIZES, seed=4)
    with torch.no_grad():
        a.b.normal_(0, 1e-2)
    a.recover()
    b = SparseCode(SIZES, seed=5)
    assert b.support_list != a.support_list
    b.load_state_dict(a.state_dict())
    assert b.support_list == a.support_list
    assert torch.equal(b.A, a.A) and torch.equal(b.z, a.z)


def test_recover_reports_changed_groups():
    code = SparseCode(SIZES, seed=6)
    with torch.no_grad():
        code.b.normal_(0, 1e-2, generator=torch.Generator().manual_seed(0))
    code.recover()
    before = code.support.clone()
    _, changed = code.recover()
    assert not changed.any()  # same b: same supports
    k = next(k for k in range(28) if k not in before[1, 2].tolist())
    with torch.no_grad():
        # Make candidate k of node 2 (reduce) dominate: b = 10 A_k has the 1-sparse preimage 10 e_k.
        code.b[1, 2] = 10 * code.A[1, 2, :, k]
    _, changed = code.recover()
    expected = torch.zeros(2, 4, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(changed, expected)
    assert k in code.support_list[1][2]


def test_ties_are_broken_the_same_way_for_support_and_ranking():
    code = SparseCode(SIZES, m=7, s=2, seed=7)
    with torch.no_grad():
        code.b.zero_()
    code.recover()  # z = 0 everywhere: every candidate ties
    assert code.support.tolist() == [[[0, 1]] * 4] * 2
    assert torch.equal(code.ranking()[..., :2].sort(-1).values, code.support)


def test_a_lambda_that_zeroes_every_group_is_named_in_a_warning(caplog):
    """With lam above every |A^T b| (b ~ 1e-3) the LASSO's solution is z = 0 in every group (its optimality
    condition), so the supports fall to the candidates' order: the recovery says so."""
    from ista_nas.sparse_coding import SparseCode

    code = SparseCode([5, 5], types=1, m=3, s=2, lam=1.0)
    code.recover()
    assert not code.z.any() and "zeroes z in every decision group" in caplog.text
    caplog.clear()
    SparseCode([5, 5], types=1, m=3, s=2).recover()
    assert "zeroes z" not in caplog.text
