"""helpers.mixture: the closed forms (p_t, score, E[x0 | x_t], the posterior) against autograd and Monte Carlo, the
model and operator interfaces against the face samplers, and the distance.

Monte-Carlo checks compare with a tolerance of 5 standard errors; identities are checked in float64.
"""
from __future__ import annotations

import math

import pytest
import torch

from helpers import mixture, posterior, sampling, schedule

MC_SIGMAS = 5.0


@pytest.fixture(scope="module")
def prior2() -> mixture.GaussianMixture:
    """The 2-D mixture of notebook 07: three components, one tilted."""
    return mixture.gaussian_mixture([0.45, 0.35, 0.20], [[-0.5, -0.1], [0.4, 0.5], [0.4, -0.5]],
                                    [[[0.03, 0.02], [0.02, 0.04]], [[0.02, 0.0], [0.0, 0.01]],
                                     [[0.01, 0.0], [0.0, 0.02]]])


@pytest.fixture(scope="module")
def prior(prior2) -> mixture.GaussianMixture:
    return mixture.append_coordinates(prior2, 1, 0.1)


@pytest.fixture(scope="module")
def model(prior) -> mixture.MixtureModel:
    return mixture.mixture_model(prior)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_mc_close(name: str, estimate: torch.Tensor, expected: torch.Tensor, standard_error: torch.Tensor,
                    floor: float = 1e-12) -> None:
    z = (estimate - expected).abs() / (standard_error + floor)
    assert bool((z < MC_SIGMAS).all()), f"{name}: {estimate} vs {expected}, {z.max():.1f} standard errors apart"


# ---- construction and errors ----

@pytest.mark.parametrize("weights, means, covs, message", [
    ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "weights must be positive and sum to 1"),
    ([1.0], [0.0, 1.0], [[[1.0]]], r"means must have shape \(K, d\) = \(1, d\)"),
    ([1.0], [[0.0, 1.0]], [[[1.0]]], r"covs must have shape \(K, d, d\) = \(1, 2, 2\)"),
    ([1.0], [[0.0, 1.0]], [[[1.0, 0.5], [0.0, 1.0]]], "covs must be symmetric"),
    ([1.0], [[0.0, 1.0]], [[[1.0, 2.0], [2.0, 1.0]]], r"covs must be positive definite; component\(s\) \[0\]"),
])
def test_a_bad_mixture_is_refused_with_what_is_allowed(weights, means, covs, message):
    with pytest.raises(ValueError, match=message):
        mixture.gaussian_mixture(weights, means, covs)


def test_a_model_needs_a_dimension_of_three_s_squared(prior2):
    with pytest.raises(ValueError, match=r"must be 3 S\^2 \(3, 12, 27, \.\.\.\) .* got d = 2\. Add coordinates"):
        mixture.mixture_model(prior2)
    assert mixture.mixture_model(mixture.append_coordinates(prior2, 10, 0.1)).image_size == 2


def test_the_model_refuses_a_wrong_shape(model):
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3, 1, 1\) .* got \(4, 3\)"):
        model.score(torch.zeros(4, 3), 10)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1000\)"):
        model.score(torch.zeros(4, 3, 1, 1), 1000)


# ---- sampling and the forward process (eq. 3) ----

def test_samples_have_the_weights_means_and_covariances(prior):
    n = 40_000
    x, labels = mixture.sample(prior, n, generator(0))
    frequency = torch.bincount(labels, minlength=prior.K).double() / n
    assert_mc_close("weights", frequency, prior.weights, (prior.weights * (1 - prior.weights) / n).sqrt())
    mean, cov = mixture.mean_and_cov(prior)
    assert_mc_close("mean", x.mean(dim=0), mean, cov.diagonal().sqrt() / math.sqrt(n))
    # the variance of a product of two coordinates, estimated from the samples themselves
    centred = x - mean
    products = centred[:, :, None] * centred[:, None, :]
    assert_mc_close("cov", products.mean(dim=0), cov, products.std(dim=0) / math.sqrt(n))


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_noised_is_the_law_of_eq_3(prior, t):
    alpha_bar = schedule.linear_schedule().alpha_bar
    n = 40_000
    x0, _ = mixture.sample(prior, n, generator(1))
    z = torch.randn(x0.shape, generator=generator(2), dtype=torch.float64)
    x_t = alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * z
    mean, cov = mixture.mean_and_cov(mixture.noised(prior, alpha_bar[t]))
    assert_mc_close("mean of x_t", x_t.mean(dim=0), mean, cov.diagonal().sqrt() / math.sqrt(n))
    centred = x_t - mean
    products = centred[:, :, None] * centred[:, None, :]
    assert_mc_close("cov of x_t", products.mean(dim=0), cov, products.std(dim=0) / math.sqrt(n))


def test_noised_at_alpha_bar_one_is_the_mixture_and_refuses_zero(prior):
    same = mixture.noised(prior, 1.0)
    assert torch.equal(same.means, prior.means) and torch.equal(same.covs, prior.covs)
    with pytest.raises(ValueError, match=r"alpha_bar_t must be in \(0, 1\]"):
        mixture.noised(prior, 0.0)


# ---- the score and E[x0 | x_t] ----

def test_the_score_is_the_gradient_of_log_prob(prior):
    x = torch.randn(50, 3, generator=generator(3), dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(mixture.log_prob(prior, x).sum(), x)
    torch.testing.assert_close(mixture.score(prior, x.detach()), grad, rtol=1e-10, atol=1e-10)


def test_one_component_gives_the_gaussian_formulas():
    gaussian = mixture.gaussian_mixture([1.0], [[0.2, -0.1, 0.3]], [[[0.5, 0.1, 0.0], [0.1, 0.3, 0.05],
                                                                      [0.0, 0.05, 0.2]]])
    x = torch.randn(20, 3, generator=generator(4), dtype=torch.float64)
    expected = -(x - gaussian.means[0]) @ torch.linalg.inv(gaussian.covs[0])
    torch.testing.assert_close(mixture.score(gaussian, x), expected, rtol=1e-10, atol=1e-10)
    logp = torch.distributions.MultivariateNormal(gaussian.means[0], gaussian.covs[0]).log_prob(x)
    torch.testing.assert_close(mixture.log_prob(gaussian, x), logp, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [5, 200, 700])
def test_tweedie_with_the_exact_score_is_the_exact_posterior_mean(model, prior, t):
    x_t = torch.randn(30, 3, 1, 1, generator=generator(5), dtype=torch.float64)
    direct = mixture.x0_mean(prior, mixture.to_points(x_t), model.alpha_bar[t])
    torch.testing.assert_close(mixture.to_points(model.x0_hat(x_t, t)), direct, rtol=1e-9, atol=1e-9)
    # eps and score: the relation below eq. 4
    torch.testing.assert_close(model.eps(x_t, t), -(1 - model.alpha_bar[t]).sqrt() * model.score(x_t, t))


@pytest.mark.parametrize("t", [100, 400])
def test_the_posterior_mean_matches_monte_carlo(model, prior, t):
    """E[x0 | x_t] by self-normalised importance sampling: prior draws weighted by N(x_t; sqrt(a) x0, (1 - a) I)."""
    a = model.alpha_bar[t]
    x0, _ = mixture.sample(prior, 200_000, generator(6))
    x_t = torch.tensor([[0.1, 0.2, 0.0], [-0.4, -0.3, 0.05], [0.5, -0.6, -0.1]], dtype=torch.float64)
    exact = mixture.x0_mean(prior, x_t, a)
    for i in range(len(x_t)):
        log_w = -((x_t[i] - a.sqrt() * x0) ** 2).sum(dim=1) / (2 * (1 - a))
        w = torch.softmax(log_w, dim=0)
        estimate = (w[:, None] * x0).sum(dim=0)
        # the delta-method standard error of a self-normalised estimate
        se = ((w[:, None] ** 2) * (x0 - estimate) ** 2).sum(dim=0).sqrt()
        assert_mc_close(f"E[x0 | x_t={x_t[i].tolist()}]", estimate, exact[i], se)


def test_the_model_accepts_a_timestep_per_image(model):
    x_t = torch.randn(6, 3, 1, 1, generator=generator(7), dtype=torch.float64)
    t = torch.tensor([10, 500, 10, 999, 500, 0])
    each = torch.cat([model.score(x_t[i:i + 1], int(t[i])) for i in range(6)])
    torch.testing.assert_close(model.score(x_t, t), each, rtol=1e-12, atol=1e-12)


def test_the_model_keeps_the_dtype_and_lets_gradients_through(model):
    x_t = torch.randn(4, 3, 1, 1, generator=generator(8)).requires_grad_()
    x0_hat = model.x0_hat(x_t, 300)
    assert x0_hat.dtype == torch.float32
    (grad,) = torch.autograd.grad(x0_hat.sum(), x_t)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---- the posterior under y = A x + sigma_y z ----

def test_one_component_posterior_is_the_kalman_update():
    mean = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    cov = torch.tensor([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]], dtype=torch.float64)
    A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    y, sigma_y = torch.tensor([0.3, -0.2], dtype=torch.float64), 0.2
    post_mean, post_cov = mixture.component_posterior(mean, cov, A, y, sigma_y)
    # the information form: C'^{-1} = C^{-1} + A^T A / sigma^2, C'^{-1} m' = C^{-1} m + A^T y / sigma^2
    precision = torch.linalg.inv(cov) + A.T @ A / sigma_y ** 2
    torch.testing.assert_close(post_cov, torch.linalg.inv(precision), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(post_mean, torch.linalg.solve(precision, torch.linalg.solve(cov, mean) + A.T @ y
                                                             / sigma_y ** 2), rtol=1e-10, atol=1e-12)


def test_the_posterior_matches_monte_carlo(prior):
    """Weights and mean of p(x0 | y) against prior draws weighted by the likelihood N(y; A x0, sigma_y^2)."""
    A, y, sigma_y = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), torch.tensor([0.0]), 0.1
    post = mixture.posterior(prior, A, y, sigma_y)
    assert abs(float(post.weights.sum()) - 1) < 1e-12
    x0, labels = mixture.sample(prior, 200_000, generator(9))
    w = torch.softmax(-((x0 @ A.T - y.double()) ** 2).sum(dim=1) / (2 * sigma_y ** 2), dim=0)
    one_hot = torch.nn.functional.one_hot(labels, prior.K).double()
    weights = (w[:, None] * one_hot).sum(dim=0)
    assert_mc_close("posterior weights", weights, post.weights, ((w[:, None] ** 2) * (one_hot - weights) ** 2)
                    .sum(dim=0).sqrt())
    mean = (w[:, None] * x0).sum(dim=0)
    assert_mc_close("posterior mean", mean, mixture.mean_and_cov(post)[0],
                    ((w[:, None] ** 2) * (x0 - mean) ** 2).sum(dim=0).sqrt())


def test_a_bad_measurement_is_refused(prior):
    with pytest.raises(ValueError, match=r"A must be a matrix of shape \(m, 3\)"):
        mixture.posterior(prior, torch.ones(1, 2), torch.zeros(1), 0.1)
    with pytest.raises(ValueError, match="y must hold one measurement of 1 values"):
        mixture.posterior(prior, torch.ones(1, 3), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="sigma_y must be a number >= 0"):
        mixture.posterior(prior, torch.ones(1, 3), torch.zeros(1), -0.1)


# ---- the operator and the face samplers, unchanged ----

def test_the_operator_adjoint_is_exact():
    op = mixture.matrix_operator([[1.0, 0.5, -2.0], [0.0, 1.0, 3.0]], "two projections")
    x = torch.randn(5, 3, 1, 1, generator=generator(10), dtype=torch.float64)
    y = torch.randn(5, 2, 1, 1, generator=generator(11), dtype=torch.float64)
    left, right = (op.A(x) * y).sum(), (x * op.A_adjoint(y)).sum()
    assert abs(float(left - right)) / float(left.abs()) < 1e-12
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 1, 1\)"):
        op.A(torch.zeros(5, 3))


def test_ddpm_with_the_exact_score_samples_the_prior(model, prior):
    n = 4000
    x, _ = sampling.ddpm_sample(model, n, generator(12), num_steps=200, variance="beta", clip_x0=False,
                                progress=False, x_T=torch.randn(n, 3, 1, 1, generator=generator(13),
                                                                dtype=torch.float64))
    points = mixture.to_points(x)
    mean, cov = mixture.mean_and_cov(prior)
    assert_mc_close("DDPM mean", points.mean(dim=0), mean, cov.diagonal().sqrt() / math.sqrt(n))
    hard = mixture.responsibilities(prior, points).argmax(dim=1)
    frequency = torch.bincount(hard, minlength=prior.K).double() / n
    # the components barely overlap: the hard assignment of exact samples has the same frequencies up to ~1 %
    exact, _ = mixture.sample(prior, n, generator(14))
    exact_frequency = torch.bincount(mixture.responsibilities(prior, exact).argmax(dim=1), minlength=prior.K) / n
    assert_mc_close("DDPM weights", frequency, exact_frequency.double(),
                    (2 * prior.weights * (1 - prior.weights) / n).sqrt())


def test_the_posterior_samplers_and_sdedit_run_on_points(model):
    op = mixture.matrix_operator([[1.0, 0.0, 0.0]], "observe x1")
    y = torch.full((8, 1, 1, 1), 0.1)
    for x in (posterior.dps_sample(model, op, y, generator(15), zeta=1e-4, sigma_y=0.1, num_steps=20,
                                   variance="beta", clip_x0=False, progress=False)[0],
              posterior.score_ald_sample(model, op, y, generator(16), gamma=2.0, sigma_y=0.1, num_steps=20,
                                         variance="beta", clip_x0=False, progress=False)[0],
              sampling.sdedit(model, op.A_adjoint(y), 100, generator(17), variance="beta", clip_x0=False,
                              progress=False)):
        assert x.shape == (8, 3, 1, 1) and torch.isfinite(x).all()


# ---- the distance ----

def test_sliced_wasserstein_of_a_shift_and_of_identical_sets():
    directions = mixture.random_directions(3, 64, generator(18))
    x = torch.randn(100, 3, generator=generator(19), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    assert float(mixture.sliced_wasserstein(x, x, directions)) == 0.0
    expected = (directions @ shift).pow(2).mean().sqrt()
    torch.testing.assert_close(mixture.sliced_wasserstein(x, x + shift, directions), expected)
    with pytest.raises(ValueError, match=r"x and y must be point sets of the same shape"):
        mixture.sliced_wasserstein(x, x[:50], directions)
    groups = mixture.sliced_wasserstein_groups(x, x + shift, directions, 4)
    assert groups.shape == (4,)
    torch.testing.assert_close(groups, expected.expand(4))


def test_standardized_reference_samples_have_unit_covariance(prior):
    x, _ = mixture.sample(prior, 40_000, generator(20))
    white = mixture.standardize(x, prior)
    n = len(white)
    assert_mc_close("standardized mean", white.mean(dim=0), torch.zeros(3, dtype=torch.float64),
                    torch.full((3,), 1 / math.sqrt(n), dtype=torch.float64))
    products = white[:, :, None] * white[:, None, :]
    assert_mc_close("standardized cov", products.mean(dim=0), torch.eye(3, dtype=torch.float64),
                    products.std(dim=0) / math.sqrt(n))
