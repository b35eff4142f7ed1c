"""The linear beta schedule (paper eqs. 2-3), its timestep convention and check_timestep."""
import numpy as np
import pytest
import torch

from helpers.schedule import check_timestep, linear_schedule


def test_linear_schedule_has_the_papers_betas_alphas_and_alpha_bars():
    s = linear_schedule()
    assert s.T == 1000
    for name in ("beta", "alpha", "alpha_bar"):
        assert getattr(s, name).dtype == torch.float64
        assert getattr(s, name).shape == (1000,)
    expected_beta = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.beta.numpy(), expected_beta, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.alpha.numpy(), 1 - expected_beta, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.alpha_bar.numpy(), np.cumprod(1 - expected_beta), rtol=1e-12)


def test_code_index_zero_is_the_papers_first_step():
    s = linear_schedule()
    assert s.alpha_bar[0].item() == pytest.approx(1 - 1e-4, abs=1e-15)
    assert s.alpha_bar[-1].item() < 1e-4  # x_T is almost pure noise


def test_iterating_eq2_gives_eq3s_mean_and_variance():
    """Run x_k = sqrt(1 - beta) x_{k-1} + sqrt(beta) z for k steps; compare with eq. 3 at code index k - 1."""
    s = linear_schedule()
    generator = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.tensor([-0.9, 0.0, 0.4, 1.0], dtype=torch.float64)
    x = x0.expand(n, -1).clone()
    for k in range(1, 101):
        beta = s.beta[k - 1]  # the paper's beta_k is the code's beta[k - 1]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        if k not in (1, 10, 100):
            continue
        alpha_bar = s.alpha_bar[k - 1]
        mean, var = x.mean(0), x.var(0)
        mean_se = (var / n).sqrt()
        var_se = var * (2 / (n - 1)) ** 0.5
        assert ((mean - alpha_bar.sqrt() * x0).abs() < 5 * mean_se).all(), (k, mean)
        assert ((var - (1 - alpha_bar)).abs() < 5 * var_se).all(), (k, var)
        if k == 1:  # the check is sharp enough to reject the off-by-one convention alpha_bar[k]
            assert ((var - (1 - s.alpha_bar[k])).abs() > 5 * var_se).all()


def test_check_timestep_expands_an_int_to_the_batch():
    assert check_timestep(7, 1000, batch=3).tolist() == [7, 7, 7]
    assert check_timestep(torch.tensor([1, 2, 3]), 1000, batch=3).tolist() == [1, 2, 3]
    assert check_timestep(5.0, 1000).item() == 5  # an integral float is accepted


@pytest.mark.parametrize("t", [-1, 1000, torch.tensor([0, 1000])])
def test_timestep_outside_range_is_rejected(t):
    with pytest.raises(ValueError, match=r"t must be in \[0, 1000\)"):
        check_timestep(t, 1000, batch=2)


@pytest.mark.parametrize("t", [2.5, torch.tensor([0.5, 1.0]), True])
def test_non_integer_timestep_is_rejected(t):
    with pytest.raises(ValueError, match=r"t must be an integer timestep in \[0, 1000\)"):
        check_timestep(t, 1000, batch=2)


def test_timestep_batch_mismatch_is_rejected():
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(3,\)"):
        check_timestep(torch.tensor([1, 2]), 1000, batch=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(T=0), "T must be a positive integer"),
    (dict(beta_start=0.0), "0 < beta_start <= beta_end < 1"),
    (dict(beta_start=0.1, beta_end=0.01), "0 < beta_start <= beta_end < 1"),
])
def test_bad_schedule_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        linear_schedule(**kwargs)
