"""DDPM sampling (paper Sec. III-B): respacing, one step against diffusers, the full loop."""
import pytest
import torch
from diffusers import DDPMScheduler

from helpers import sampling
from helpers.sampling import ddpm_sample, ddpm_step, randn, respaced_timesteps, sdedit
from helpers.schedule import add_noise


def test_full_respacing_is_every_timestep():
    assert respaced_timesteps(1000, 1000) == list(range(999, -1, -1))


@pytest.mark.parametrize("num_steps", [2, 3, 10, 50, 999])
def test_respacing_is_strictly_decreasing_from_T_minus_1_to_0(num_steps):
    steps = respaced_timesteps(1000, num_steps)
    assert len(steps) == num_steps
    assert steps[0] == 999 and steps[-1] == 0
    assert all(a > b for a, b in zip(steps, steps[1:]))


def test_single_step_starts_from_pure_noise():
    """ddpm_sample starts at x_T ~ N(0, I), which is timestep T - 1; a one-step schedule must start there."""
    assert respaced_timesteps(1000, 1) == [999]


@pytest.mark.parametrize("variance, variance_type", [("beta", "fixed_large"), ("beta_tilde", "fixed_small")])
@pytest.mark.parametrize("clip_x0", [True, False])
def test_ddpm_step_matches_diffusers(tiny_model, variance, variance_type, clip_x0):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                              variance_type=variance_type, clip_sample=clip_x0, prediction_type="epsilon")
    # diffusers keeps alpha_bar in float32, where 1 - alpha_bar near t = 0 loses about 3 digits; compare the
    # step's algebra on the same (float64) alpha_bar, after checking that the two schedules agree.
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), tiny_model.alpha_bar, rtol=1e-6, atol=0)
    scheduler.alphas_cumprod = tiny_model.alpha_bar.clone()
    ours_generator, diffusers_generator = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for start in (600, 3):  # a few consecutive steps mid-way, and the last ones (t = 0: no noise)
        x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(start))
        for t in range(start, max(start - 4, -1), -1):
            x_prev, x0_hat = ddpm_step(tiny_model, x_t, t, t - 1, ours_generator, variance=variance, clip_x0=clip_x0)
            expected = scheduler.step(tiny_model.eps(x_t, t), t, x_t, generator=diffusers_generator)
            torch.testing.assert_close(x0_hat, expected.pred_original_sample, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(x_prev, expected.prev_sample, rtol=1e-5, atol=1e-5)
            x_t = x_prev


def test_ddpm_step_uses_the_given_x0_hat(tiny_model):
    x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x0_hat = torch.full_like(x_t, 3.0)
    _, used = ddpm_step(tiny_model, x_t, 10, 9, torch.Generator(), x0_hat=x0_hat, clip_x0=True)
    assert (used == 1).all()


def test_ddpm_sample_is_finite_and_reproducible(tiny_model):
    def sample(seed):
        return ddpm_sample(tiny_model, 2, torch.Generator().manual_seed(seed), num_steps=5, keep=(999, -1),
                           progress=False)

    x0, kept = sample(0)
    assert x0.shape == (2, 3, 8, 8) and torch.isfinite(x0).all()
    assert set(kept) == {999, -1} and torch.equal(kept[-1], x0)
    assert torch.equal(sample(0)[0], x0)
    assert not torch.equal(sample(1)[0], x0)


# ---- bad inputs ----

@pytest.mark.parametrize("num_steps", [0, 1001, -5, 10.0, True])
def test_num_steps_out_of_range_is_rejected(num_steps):
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 1000\]"):
        respaced_timesteps(1000, num_steps)


def test_unknown_variance_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="variance must be one of 'beta', 'beta_tilde', None .*; got 'fixed_large'"):
        ddpm_step(tiny_model, torch.zeros(1, 3, 8, 8), 5, 4, torch.Generator(), variance="fixed_large")


@pytest.mark.parametrize("t, t_prev", [(5, 5), (5, 6), (5, -2), (5, 4.0), (5, True)])
def test_t_prev_must_come_before_t(tiny_model, t, t_prev):
    with pytest.raises(ValueError, match=rf"t_prev must be an integer in \[-1, 4\] .*; got {t_prev!r}\."):
        ddpm_step(tiny_model, torch.zeros(1, 3, 8, 8), t, t_prev, torch.Generator())


@pytest.mark.parametrize("t", [5.5, 5.0, True, torch.tensor(5), -1, 1000])
def test_ddpm_step_takes_t_as_an_integer_index(tiny_model, t):
    with pytest.raises(ValueError, match=r"t must be an integer in \[0, 999\] \(the code's timestep index\); got "):
        ddpm_step(tiny_model, torch.zeros(1, 3, 8, 8), t, 0, torch.Generator())


@pytest.mark.parametrize("num_steps", [0, False, 2.5, -3, 1001])
def test_ddpm_sample_rejects_what_the_other_samplers_reject_as_num_steps(tiny_model, num_steps):
    """num_steps=0 (or False) once ran all 1000 steps silently."""
    with pytest.raises(ValueError, match=rf"num_steps must be an integer in \[1, 1000\] .*; got {num_steps!r}\."):
        ddpm_sample(tiny_model, 2, torch.Generator(), num_steps=num_steps, progress=False)


@pytest.mark.parametrize("x_T, match", [(torch.zeros(3, 3, 8, 8), r"x_T must have the shape of the samples, \(2, 3, 8, 8\)"),
                                        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "x_T must be a floating-point"),
                                        (torch.full((2, 3, 8, 8), float("nan")), "x_T must be finite")])
def test_ddpm_sample_rejects_an_x_T_that_is_not_num_samples_starts(tiny_model, x_T, match):
    with pytest.raises(ValueError, match=match):
        ddpm_sample(tiny_model, 2, torch.Generator(), num_steps=2, x_T=x_T, progress=False)


@pytest.mark.parametrize("generator, got", [(None, "None"), (0, "0"), ([torch.Generator()], "a list of 1")])
def test_ddpm_step_and_sample_reject_what_is_not_a_generator(tiny_model, generator, got):
    x_t = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match=f"generator must be a torch.Generator .*; got {got}"):
        ddpm_step(tiny_model, x_t, 10, 9, generator)
    with pytest.raises(ValueError, match=f"generator must be a torch.Generator .*; got {got}"):
        ddpm_sample(tiny_model, 2, generator, num_steps=2, progress=False)


def test_ddpm_sample_rejects_a_bad_number_of_samples(tiny_model):
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        ddpm_sample(tiny_model, 0, torch.Generator(), num_steps=2, progress=False)


# ---- SDEdit (paper Sec. IV-C-1) ----



def _guide(seed=0, batch=2):
    """A guide image y in the model range, (batch, 3, 8, 8) for the tiny model."""
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_sdedit_is_finite_and_reproducible(tiny_model):
    y = _guide()
    x0 = sdedit(tiny_model, y, 40, torch.Generator().manual_seed(0), progress=False)
    assert x0.shape == y.shape and torch.isfinite(x0).all()
    assert x0.abs().max() <= 1  # the last step returns the clipped x0_hat
    assert torch.equal(sdedit(tiny_model, y, 40, torch.Generator().manual_seed(0), progress=False), x0)
    assert not torch.equal(sdedit(tiny_model, y, 40, torch.Generator().manual_seed(1), progress=False), x0)


@pytest.mark.parametrize("t_start, num_steps", [(0, None), (0, 1), (300, 1), (999, 1)])
def test_sdedit_with_one_step_is_single_step_denoising_of_the_noised_guide(tiny_model, t_start, num_steps):
    """One step from t_start to the end puts all of eq. 7's weight on x0_hat: the output is eq. 6, clipped,
    applied to y noised by eq. 3 with the generator's first draw."""
    y = _guide()
    out = sdedit(tiny_model, y, t_start, torch.Generator().manual_seed(3), num_steps=num_steps, progress=False)
    z = randn(tuple(y.shape), torch.Generator().manual_seed(3), like=y)
    expected = tiny_model.x0_hat(add_noise(y, z, t_start, tiny_model.alpha_bar), t_start).clamp(-1, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_sdedit_equals_its_loop_written_out(tiny_model):
    """Eq. 3 with the first draw, then ddpm_step over t_start, ..., 0 with the same generator."""
    y, t_start = _guide(), 12
    out = sdedit(tiny_model, y, t_start, torch.Generator().manual_seed(5), variance="beta_tilde", progress=False)
    generator = torch.Generator().manual_seed(5)
    x_t = add_noise(y, randn(tuple(y.shape), generator, like=y), t_start, tiny_model.alpha_bar)
    for t in range(t_start, -1, -1):
        x_t, _ = ddpm_step(tiny_model, x_t, t, t - 1, generator, variance="beta_tilde")
    torch.testing.assert_close(out, x_t, rtol=0, atol=0)


@pytest.mark.parametrize("t_start, num_steps, expected", [(500, 6, [500, 400, 300, 200, 100, 0]),
                                                          (10, None, list(range(10, -1, -1))),
                                                          (250, 2, [250, 0])])
def test_sdedit_visits_the_respaced_timesteps_once_each(tiny_model, t_start, num_steps, expected):
    seen = []
    hook = tiny_model.unet.register_forward_hook(lambda module, args, output: seen.append(int(args[1].reshape(-1)[0])))
    try:
        sdedit(tiny_model, _guide(batch=1), t_start, torch.Generator(), num_steps=num_steps, progress=False)
    finally:
        hook.remove()
    assert seen == expected


def test_sdedit_keeps_the_shape_and_dtype_of_y(tiny_model):
    out = sdedit(tiny_model, _guide(batch=3).double(), 5, torch.Generator(), num_steps=2, progress=False)
    assert out.shape == (3, 3, 8, 8) and out.dtype == torch.float64 and out.device == tiny_model.device


# ---- SDEdit: bad inputs ----

@pytest.mark.parametrize("t_start", [-1, 1000, 2.5, 500.0, True, "500", None])
def test_sdedit_rejects_t_start_outside_the_schedule(tiny_model, t_start):
    with pytest.raises(ValueError, match=r"t_start must be an integer in \[0, 999\] \(the code's timestep index") as error:
        sdedit(tiny_model, _guide(), t_start, torch.Generator(), progress=False)
    assert repr(t_start) in str(error.value)


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 3, 16, 16), (2, 1, 8, 8), (1, 3, 8, 8, 1)])
def test_sdedit_rejects_y_of_the_wrong_shape(tiny_model, shape):
    with pytest.raises(ValueError, match=r"y must have shape \(B, 3, 8, 8\)") as error:
        sdedit(tiny_model, torch.zeros(shape), 10, torch.Generator(), progress=False)
    assert str(shape) in str(error.value)


@pytest.mark.parametrize("y, match", [(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating-point"),
                                      (torch.full((1, 3, 8, 8), 255.0), r"model range \[-1, 1\]"),
                                      (torch.full((1, 3, 8, 8), float("nan")), "finite"),
                                      ([[0.0]], "torch.Tensor")])
def test_sdedit_rejects_y_that_is_not_an_image_in_model_range(tiny_model, y, match):
    with pytest.raises(ValueError, match=match):
        sdedit(tiny_model, y, 10, torch.Generator(), progress=False)


@pytest.mark.parametrize("num_steps", [0, 12, -1, 5.0, True])
def test_sdedit_rejects_more_steps_than_timesteps(tiny_model, num_steps):
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 11\] \(None for all 11 steps"):
        sdedit(tiny_model, _guide(), 10, torch.Generator(), num_steps=num_steps, progress=False)


def test_sdedit_rejects_a_seed_in_place_of_a_generator(tiny_model):
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        sdedit(tiny_model, _guide(), 10, 0, progress=False)


def test_the_default_variance_is_beta_for_single_steps_and_beta_tilde_for_respaced_jumps(tiny_model):
    """Full chains keep the paper's sigma^2 = beta; a respaced jump gets the posterior variance beta_tilde."""
    assert sampling.default_variance(10, 9) == "beta" and sampling.default_variance(10, 5) == "beta_tilde"
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for t, t_prev, named in ((10, 9, "beta"), (30, 10, "beta_tilde")):
        default, _ = sampling.ddpm_step(tiny_model, x_t, t, t_prev, torch.Generator().manual_seed(1))
        explicit, _ = sampling.ddpm_step(tiny_model, x_t, t, t_prev, torch.Generator().manual_seed(1), variance=named)
        other, _ = sampling.ddpm_step(tiny_model, x_t, t, t_prev, torch.Generator().manual_seed(1),
                                      variance="beta" if named == "beta_tilde" else "beta_tilde")
        assert torch.equal(default, explicit) and not torch.allclose(default, other)
    full, _ = sampling.ddpm_sample(tiny_model, 2, torch.Generator().manual_seed(2), num_steps=5, progress=False)
    tilde, _ = sampling.ddpm_sample(tiny_model, 2, torch.Generator().manual_seed(2), num_steps=5,
                                    variance="beta_tilde", progress=False)
    assert torch.equal(full, tilde)


# ---- DDPM verified exactly on a Gaussian prior (closed-form eps) ----

MU, S = 0.3, 0.5  # data x0 ~ N(MU, S^2 I) in d = 12 dimensions, as (3, 2, 2) images


def _gaussian_prior_model():
    """The exact eps of a single Gaussian N(MU, S^2 I), through helpers.mixture with one component."""
    from helpers import mixture

    d = 12
    prior = mixture.gaussian_mixture([1.0], torch.full((1, d), MU, dtype=torch.float64),
                                     (S ** 2 * torch.eye(d, dtype=torch.float64))[None])
    return mixture.mixture_model(prior, name="gaussian")


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_the_gaussian_prior_has_the_closed_form_eps(t):
    """x_t ~ N(sqrt(a) MU, (a S^2 + 1 - a) I), so eps*(x_t) = sqrt(1 - a) (x_t - sqrt(a) MU) / (a S^2 + 1 - a)."""
    model = _gaussian_prior_model()
    x_t = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    a = model.alpha_bar[t]
    expected = (1 - a).sqrt() * (x_t - a.sqrt() * MU) / (a * S ** 2 + 1 - a)
    torch.testing.assert_close(model.eps(x_t, t), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("num_steps, variance, variance_shortfall", [(None, "beta", 0.0), (None, "beta_tilde", 0.05),
                                                                     (100, None, 0.15)])
def test_ddpm_with_the_exact_eps_samples_the_gaussian_prior(num_steps, variance, variance_shortfall):
    """Mean and variance of DDPM's samples (every coordinate pooled, N = 4000 x 12) against MU and S^2, with the
    exact eps (so every error is the sampler's): the paper's chain (1000 steps, sigma^2 = beta) within 4 standard
    errors of both. With beta_tilde, and over 100 respaced jumps, the mean stays within 4 standard errors while the
    variance falls short by a discretisation error of a few percent (measured: 3 % and 13 %), allowed here as
    ``variance_shortfall`` below S^2, never above."""
    model = _gaussian_prior_model()
    x_T = torch.randn(4000, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0, _ = ddpm_sample(model, 4000, torch.Generator().manual_seed(2), num_steps=num_steps, variance=variance,
                        clip_x0=False, x_T=x_T, progress=False)
    values = x0.flatten()
    n = values.numel()
    se_mean, se_var = S / n ** 0.5, S ** 2 * (2 / (n - 1)) ** 0.5
    assert abs(values.mean().item() - MU) < 4 * se_mean
    assert S ** 2 * (1 - variance_shortfall) - 4 * se_var < values.var().item() < S ** 2 + 4 * se_var
