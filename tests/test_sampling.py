"""DDPM sampling (paper Sec. III-B): respacing, one step against diffusers, the full loop."""
import pytest
import torch
from diffusers import DDPMScheduler

from helpers.sampling import ddpm_sample, ddpm_step, respaced_timesteps


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
    with pytest.raises(ValueError, match="variance must be 'beta' or 'beta_tilde'"):
        ddpm_step(tiny_model, torch.zeros(1, 3, 8, 8), 5, 4, torch.Generator(), variance="fixed_large")


@pytest.mark.parametrize("t, t_prev", [(5, 5), (5, 6), (5, -2)])
def test_t_prev_must_come_before_t(tiny_model, t, t_prev):
    with pytest.raises(ValueError, match="t_prev must satisfy -1 <= t_prev < t"):
        ddpm_step(tiny_model, torch.zeros(1, 3, 8, 8), t, t_prev, torch.Generator())


def test_ddpm_sample_rejects_a_bad_number_of_samples(tiny_model):
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        ddpm_sample(tiny_model, 0, torch.Generator(), num_steps=2, progress=False)
