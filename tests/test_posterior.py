"""Posterior sampling (paper Sec. III-C): ScoreALD and DPS steps and loops, on the tiny model and on stub models
whose x0_hat is known in closed form (a linear network, and the exact denoiser of a Gaussian prior)."""
import types

import pytest
import torch

from helpers import operators, posterior
from helpers.models import DiffusionModel
from helpers.posterior import dps_sample, dps_step, residual_norm, score_ald_gamma, score_ald_sample, score_ald_step
from helpers.sampling import ddpm_sample, ddpm_step
from helpers.schedule import linear_schedule

SIGMA_Y = 0.05


def _image(seed, batch=2, size=8, dtype=torch.float32):
    """Images in the model range, (batch, 3, size, size)."""
    return (torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1)


def _ops(size=8):
    return {"box": operators.box_inpainting(size, box_size=4), "blur": operators.GaussianBlur(kernel_size=3, sigma=1.0)}


def _measure(op, seed=0, batch=2, size=8, dtype=torch.float32):
    return op.measure(_image(seed, batch, size, dtype), SIGMA_Y, torch.Generator().manual_seed(seed + 100))


class _StubUNet(torch.nn.Module):
    """A stand-in for the U-Net: ``unet(x_t, t).sample`` is ``eps(x_t, t)``, computed in float64."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps
        self.dtype_anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

    def forward(self, x_t, t):
        return types.SimpleNamespace(sample=self.eps(x_t, t))


def _stub_model(eps, size=8):
    return DiffusionModel(name="stub", unet=_StubUNet(eps), schedule=linear_schedule(), image_size=size,
                          device=torch.device("cpu"))


@pytest.fixture(scope="module")
def linear_model():
    """eps(x_t, t) = conv(x_t): a fixed linear network, so x0_hat is linear in x_t with a matrix we can write out."""
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(0.2 * torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0),
                                            dtype=torch.float64))
    conv.requires_grad_(False)
    return _stub_model(lambda x_t, t: conv(x_t))


@pytest.fixture(scope="module")
def gaussian_prior_model():
    """The exact denoiser of data x0 ~ N(0, I): x_t ~ N(0, I) for every t, so the score is -x_t and
    eps*(x_t, t) = sqrt(1 - alpha_bar_t) x_t, hence x0_hat = sqrt(alpha_bar_t) x_t (eq. 6)."""
    alpha_bar = linear_schedule().alpha_bar
    return _stub_model(lambda x_t, t: (1 - alpha_bar[t]).sqrt().to(x_t).view(-1, 1, 1, 1) * x_t)


def _x0_hat_matrix(model, t, size=8):
    """The (n, n) matrix M with x0_hat(x_t) = M x_t (flattened), for a model whose x0_hat is linear."""
    n = 3 * size * size
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 3, size, size)
    return model.x0_hat(basis, t).reshape(n, n).T


# ---- the steps ----

@pytest.mark.parametrize("step", ["paper", "dps"])
@pytest.mark.parametrize("op_name", ["box", "blur"])
def test_dps_gradient_is_the_analytic_one_for_a_linear_network(linear_model, step, op_name):
    """x0_hat = M x_t, so grad ||A M x_t - y||^2 = 2 M^T A^H (A M x_t - y); the norm's gradient is that / (2 ||r||)."""
    op, t, t_prev = _ops()[op_name], 400, 380
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = _measure(op, dtype=torch.float64)
    zeta = 0.7
    out, _ = dps_step(linear_model, op, x_t, y, t, t_prev, torch.Generator().manual_seed(3), zeta, sigma_y=SIGMA_Y,
                      step=step, clip_x0=False)
    x_prev, _ = ddpm_step(linear_model, x_t, t, t_prev, torch.Generator().manual_seed(3), clip_x0=False)
    M = _x0_hat_matrix(linear_model, t)
    residual = op.A((x_t.reshape(2, -1) @ M.T).reshape(x_t.shape)) - y              # A M x_t - y
    grad_squared = 2 * (op.A_adjoint(residual).reshape(2, -1) @ M).reshape(x_t.shape)  # 2 M^T A^H r
    if step == "paper":
        expected = x_prev - zeta / (2 * SIGMA_Y ** 2) * grad_squared
    else:
        norm = residual.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        expected = x_prev - zeta * grad_squared / (2 * norm)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("step", ["paper", "dps"])
@pytest.mark.parametrize("t", [600, 30])
def test_dps_step_on_a_batch_equals_the_images_one_by_one(tiny_model, step, t):
    """Per-image norms: image i's step depends on image i only (the last step, t_prev = -1, adds no noise). The
    network runs in float32, whose rounding depends on the batch size, and the paper's step multiplies it by
    zeta / (2 sigma_y^2) = 200 zeta: so the tolerance is relative to the size of the result."""
    op = _ops()["blur"]
    x_t = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = _measure(op, batch=3)
    zeta = torch.tensor([0.5, 1.0, 2.0])
    batch, _ = dps_step(tiny_model, op, x_t, y, t, -1, torch.Generator(), zeta, sigma_y=SIGMA_Y, step=step)
    singles = torch.cat([dps_step(tiny_model, op, x_t[i:i + 1], y[i:i + 1], t, -1, torch.Generator(), float(zeta[i]),
                                  sigma_y=SIGMA_Y, step=step)[0] for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-5 * singles.abs().max().item())


def test_a_batch_wide_norm_would_couple_the_images(tiny_model):
    """The official DPS code's one norm over the batch gives another step: the test above can tell the difference."""
    op, t = _ops()["box"], 600
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = _measure(op)
    ours, _ = dps_step(tiny_model, op, x_t, y, t, -1, torch.Generator(), 1.0, step="dps")
    x = x_t.clone().requires_grad_()
    x0_hat = tiny_model.x0_hat(x, t).clamp(-1, 1)
    (grad,) = torch.autograd.grad(torch.linalg.vector_norm(y - op.A(x0_hat)), x)  # one norm for the whole batch
    batch_wide = x0_hat.detach() - grad
    assert not torch.allclose(ours, batch_wide, rtol=1e-3, atol=1e-3)


def test_dps_published_step_is_the_paper_step_with_a_normalised_zeta(tiny_model):
    """zeta * grad ||r|| = zeta_t / (2 sigma_y^2) * grad ||r||^2 with zeta_t = zeta sigma_y^2 / ||r||, per image."""
    op, t = _ops()["box"], 250
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = _measure(op, dtype=torch.float64)
    dps, _ = dps_step(tiny_model, op, x_t, y, t, t - 1, torch.Generator().manual_seed(0), 0.8, step="dps")
    norm = torch.linalg.vector_norm((y - op.A(tiny_model.x0_hat(x_t, t).clamp(-1, 1))).flatten(1), dim=1)
    paper, _ = dps_step(tiny_model, op, x_t, y, t, t - 1, torch.Generator().manual_seed(0), 0.8 * SIGMA_Y ** 2 / norm,
                        sigma_y=SIGMA_Y, step="paper")
    torch.testing.assert_close(dps, paper, rtol=1e-5, atol=1e-7)  # the network runs in float32


def test_dps_step_leaves_no_autograd_state(tiny_model):
    op = _ops()["blur"]
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = x_t.clone()
    x_prev, x0_hat = dps_step(tiny_model, op, x_t, _measure(op), 500, 499, torch.Generator(), 1.0, step="dps")
    assert not x_prev.requires_grad and not x0_hat.requires_grad and x_prev.grad_fn is None
    assert torch.equal(x_t, before) and not x_t.requires_grad
    assert all(p.grad is None for p in tiny_model.unet.parameters())


@pytest.mark.parametrize("op_name", ["box", "blur"])
def test_score_ald_step_is_ddpm_minus_the_misfit_gradient(tiny_model, op_name):
    """grad ||A x_t - y||^2 by autograd equals the analytic 2 A^H (A x_t - y) that the step uses (float64)."""
    op, t = _ops()[op_name], 300
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = _measure(op, dtype=torch.float64)
    out, _ = score_ald_step(tiny_model, op, x_t, y, t, t - 1, torch.Generator().manual_seed(5), 1.5, SIGMA_Y)
    x_prev, _ = ddpm_step(tiny_model, x_t, t, t - 1, torch.Generator().manual_seed(5))
    x = x_t.clone().requires_grad_()
    (grad,) = torch.autograd.grad((op.A(x) - y).pow(2).sum(), x)
    torch.testing.assert_close(out, x_prev - grad / (SIGMA_Y ** 2 + 1.5 ** 2), rtol=1e-10, atol=1e-12)


def test_score_ald_gamma_schedule():
    model = types.SimpleNamespace(alpha_bar=linear_schedule().alpha_bar)
    for t in (0, 500, 999):
        assert score_ald_gamma(model, t, 2.0) == pytest.approx(2.0 / model.alpha_bar[t].item() ** 0.5, rel=1e-12)
    assert score_ald_gamma(model, 10, float("inf")) == float("inf")
    torch.testing.assert_close(score_ald_gamma(model, 500, torch.tensor([1.0, 2.0])),
                               torch.tensor([1.0, 2.0]) / model.alpha_bar[500].sqrt().float())


# ---- the loops ----

@pytest.mark.parametrize("step", ["paper", "dps"])
def test_dps_with_zero_zeta_is_plain_ddpm(tiny_model, step):
    """zeta = 0 leaves only x'_{t-1}: the same draws from the same generator give DDPM's samples exactly."""
    y = _measure(_ops()["box"])
    ours, _ = dps_sample(tiny_model, _ops()["box"], y, torch.Generator().manual_seed(7), zeta=0.0, sigma_y=SIGMA_Y,
                         num_steps=6, step=step, progress=False)
    ddpm, _ = ddpm_sample(tiny_model, 2, torch.Generator().manual_seed(7), num_steps=6, progress=False)
    assert torch.equal(ours, ddpm)


def test_score_ald_with_infinite_gamma_is_plain_ddpm(tiny_model):
    y = _measure(_ops()["blur"])
    ours, _ = score_ald_sample(tiny_model, _ops()["blur"], y, torch.Generator().manual_seed(7), gamma=float("inf"),
                               sigma_y=SIGMA_Y, num_steps=6, progress=False)
    ddpm, _ = ddpm_sample(tiny_model, 2, torch.Generator().manual_seed(7), num_steps=6, progress=False)
    assert torch.equal(ours, ddpm)


@pytest.mark.parametrize("sampler, kwargs", [(score_ald_sample, dict(gamma=1.5, sigma_y=SIGMA_Y)),
                                             (dps_sample, dict(zeta=0.5, step="dps")),
                                             (dps_sample, dict(zeta=1e-3, sigma_y=SIGMA_Y, step="paper"))])
def test_samplers_are_finite_and_reproducible(tiny_model, sampler, kwargs):
    op = _ops()["box"]
    y = _measure(op)

    def run(seed):
        return sampler(tiny_model, op, y, torch.Generator().manual_seed(seed), num_steps=4, keep=(999, -1),
                       progress=False, **kwargs)

    x0, kept = run(0)
    assert x0.shape == y.shape and torch.isfinite(x0).all() and not x0.requires_grad
    assert set(kept) == {999, -1} and torch.equal(kept[-1], x0)
    assert torch.equal(run(0)[0], x0)
    assert not torch.equal(run(1)[0], x0)


def test_the_progress_bar_runs(tiny_model):
    op = _ops()["blur"]
    y = _measure(op)
    for sampler, kwargs in ((score_ald_sample, dict(gamma=1.5, sigma_y=SIGMA_Y)), (dps_sample, dict(zeta=0.5, step="dps"))):
        quiet, _ = sampler(tiny_model, op, y, torch.Generator().manual_seed(0), num_steps=2, progress=False, **kwargs)
        shown, _ = sampler(tiny_model, op, y, torch.Generator().manual_seed(0), num_steps=2, progress=True, **kwargs)
        assert torch.equal(quiet, shown)


# ---- the Gaussian prior: exact answers ----

def test_gaussian_prior_model_has_the_closed_form_x0_hat(gaussian_prior_model):
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in (0, 300, 999):
        torch.testing.assert_close(gaussian_prior_model.x0_hat(x_t, t), gaussian_prior_model.alpha_bar[t].sqrt() * x_t)


@pytest.mark.parametrize("sampler, kwargs", [(score_ald_sample, dict(gamma=1.5, sigma_y=SIGMA_Y)),
                                             (dps_sample, dict(zeta=1.0, step="dps")),
                                             (dps_sample, dict(zeta=2e-3, sigma_y=SIGMA_Y, step="paper"))])
def test_with_a_gaussian_prior_box_inpainting_fits_the_observed_pixels_and_leaves_the_rest_to_the_prior(
        gaussian_prior_model, sampler, kwargs):
    """For x0 ~ N(0, I) and a mask, the exact posterior is y / (1 + sigma_y^2) (std ~ sigma_y) on the observed
    pixels and the prior N(0, 1) on the hidden ones. x0_hat = sqrt(alpha_bar_t) x_t acts pixel by pixel, so the data
    term never touches a hidden pixel: there the sampler must reproduce plain DDPM exactly, and on the observed
    pixels it must land near y, where DDPM (the prior) is about 1.4 away."""
    model, op = gaussian_prior_model, _ops()["box"]
    observed = op.mask.bool().expand(16, 3, 8, 8)
    x0 = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64).clamp(-1, 1)
    y = op.measure(x0, SIGMA_Y, torch.Generator().manual_seed(1)).expand(16, 3, 8, 8)
    out, _ = sampler(model, op, y, torch.Generator().manual_seed(2), num_steps=50, clip_x0=False, progress=False,
                     **kwargs)
    prior, _ = dps_sample(model, op, y, torch.Generator().manual_seed(2), zeta=0.0, step="dps", num_steps=50,
                          clip_x0=False, progress=False)
    torch.testing.assert_close(out[~observed], prior[~observed], rtol=0, atol=1e-12)
    rms_to_y = (out - y)[observed].pow(2).mean().sqrt()
    rms_prior = (prior - y)[observed].pow(2).mean().sqrt()
    assert rms_prior > 1.0
    assert rms_to_y < 0.3, f"observed pixels are {rms_to_y:.3f} (RMS) from y; the exact posterior is ~{SIGMA_Y}"


# ---- bad inputs ----

@pytest.mark.parametrize("zeta", [-0.1, float("nan"), float("inf"), "1", None, True])
def test_dps_rejects_a_bad_zeta(tiny_model, zeta):
    with pytest.raises(ValueError, match="zeta must be a number >= 0") as error:
        dps_sample(tiny_model, _ops()["box"], _measure(_ops()["box"]), torch.Generator(), zeta=zeta, step="dps",
                   num_steps=2, progress=False)
    assert repr(zeta) in str(error.value)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), "2"])
def test_score_ald_rejects_a_bad_gamma(tiny_model, gamma):
    with pytest.raises(ValueError, match=r"gamma must be a number > 0 \(inf allowed\)"):
        score_ald_sample(tiny_model, _ops()["box"], _measure(_ops()["box"]), torch.Generator(), gamma=gamma,
                         sigma_y=SIGMA_Y, num_steps=2, progress=False)


def test_per_image_values_must_match_the_batch_and_be_allowed(tiny_model):
    y = _measure(_ops()["box"])
    with pytest.raises(ValueError, match=r"zeta must be a number or a floating-point tensor of shape \(2,\)"):
        dps_sample(tiny_model, _ops()["box"], y, torch.Generator(), zeta=torch.ones(3), step="dps", progress=False)
    with pytest.raises(ValueError, match=r"gamma must be > 0 \(inf allowed\) for every image; got \[1.0, 0.0\]"):
        score_ald_sample(tiny_model, _ops()["box"], y, torch.Generator(), gamma=torch.tensor([1.0, 0.0]),
                         sigma_y=SIGMA_Y, progress=False)


@pytest.mark.parametrize("sigma_y, match", [(None, "sigma_y must be a number > 0 .*required for step='paper'.*; got None"),
                                            (0.0, "sigma_y must be a number > 0"),
                                            (-0.05, "sigma_y must be a number > 0")])
def test_the_paper_dps_step_needs_a_positive_sigma_y(tiny_model, sigma_y, match):
    with pytest.raises(ValueError, match=match):
        dps_step(tiny_model, _ops()["box"], torch.zeros(2, 3, 8, 8), _measure(_ops()["box"]), 5, 4, torch.Generator(),
                 1.0, sigma_y=sigma_y, step="paper")


def test_unknown_dps_step_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="step must be one of 'paper', 'dps' .*; got 'normalised'"):
        dps_step(tiny_model, _ops()["box"], torch.zeros(2, 3, 8, 8), _measure(_ops()["box"]), 5, 4, torch.Generator(),
                 1.0, sigma_y=SIGMA_Y, step="normalised")
    with pytest.raises(ValueError, match="step must be one of 'paper', 'dps' .*; got 'DPS'"):
        dps_sample(tiny_model, _ops()["box"], _measure(_ops()["box"]), torch.Generator(), zeta=1.0, step="DPS")


def test_score_ald_rejects_a_negative_sigma_y(tiny_model):
    with pytest.raises(ValueError, match=r"sigma_y must be a number >= 0"):
        score_ald_sample(tiny_model, _ops()["box"], _measure(_ops()["box"]), torch.Generator(), gamma=1.0,
                         sigma_y=-1.0, progress=False)


@pytest.mark.parametrize("y, match", [(torch.zeros(2, 3, 16, 16), r"y must have the shape of op.A\(x\)"),
                                      (torch.zeros(3, 8, 8), r"y must have shape \(B, ...\) as made by op.measure.*; got \(3, 8, 8\)"),
                                      (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating-point"),
                                      (torch.full((1, 3, 8, 8), 255.0), r"y must be in the model range \[-1, 1\] .*got values in \[255, 255\]"),
                                      (torch.full((1, 3, 8, 8), float("nan")), "finite")])
def test_samplers_reject_a_bad_measurement(tiny_model, y, match):
    op = _ops()["blur"] if y.ndim == 4 and y.shape[-1] == 16 else _ops()["box"]
    with pytest.raises(ValueError, match=match):
        dps_sample(tiny_model, op, y, torch.Generator(), zeta=1.0, step="dps", progress=False)


def test_samplers_reject_a_seed_in_place_of_a_generator_and_bad_num_steps(tiny_model):
    y = _measure(_ops()["box"])
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        score_ald_sample(tiny_model, _ops()["box"], y, 0, gamma=1.0, sigma_y=SIGMA_Y, progress=False)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 1000\] \(None for all 1000 steps"):
        dps_sample(tiny_model, _ops()["box"], y, torch.Generator(), zeta=1.0, step="dps", num_steps=0)


# ---- the bad-input battery: each class of bad input, for each public function, named in the message ----

def _step_args(tiny_model, **changes):
    op = _ops()["box"]
    args = dict(model=tiny_model, op=op, x_t=_image(5), y=_measure(op), t=300, t_prev=280,
                generator=torch.Generator().manual_seed(0))
    args.update(changes)
    return args


BAD_STEP_INPUTS = [
    # (what, changes to the arguments, message)
    ("y of another batch", dict(y=torch.zeros(1, 3, 8, 8)), r"y must have the shape of op.A\(x_t\), \(2, 3, 8, 8\)"),
    ("y of another size", dict(y=torch.zeros(2, 3, 4, 4)), r"y must have the shape of op.A\(x_t\), \(2, 3, 8, 8\)"),
    ("integer y", dict(y=torch.zeros(2, 3, 8, 8, dtype=torch.long)), "y must be a floating-point tensor"),
    ("NaN in y", dict(y=torch.full((2, 3, 8, 8), float("nan"))), "y must be finite"),
    ("no generator", dict(generator=None), "generator must be a torch.Generator .*; got None"),
    ("a seed as generator", dict(generator=3), "generator must be a torch.Generator .*; got 3"),
    ("too few generators", dict(generator=[torch.Generator()]), "generator must be .* a list of 2 of them"),
    ("NaN in x_t", dict(x_t=torch.full((2, 3, 8, 8), float("nan"))), "x_t must be finite"),
]


@pytest.mark.parametrize("what, changes, match", BAD_STEP_INPUTS, ids=[case[0] for case in BAD_STEP_INPUTS])
@pytest.mark.parametrize("step", ["score_ald", "dps"])
def test_the_steps_reject_each_class_of_bad_input(tiny_model, step, what, changes, match):
    args = _step_args(tiny_model, **changes)
    with pytest.raises(ValueError, match=match):
        if step == "dps":
            dps_step(**args, zeta=1.0, sigma_y=SIGMA_Y)
        else:
            score_ald_step(**args, gamma_t=1.5, sigma_y=SIGMA_Y)


@pytest.mark.parametrize("sigma_y", [float("inf"), float("nan"), -0.1, True, "0.05"])
@pytest.mark.parametrize("step", ["score_ald", "dps"])
def test_the_steps_reject_a_sigma_y_that_is_not_a_finite_number(tiny_model, step, sigma_y):
    with pytest.raises(ValueError, match=rf"sigma_y must be a number >= 0|sigma_y must be a number > 0"):
        if step == "dps":
            dps_step(**_step_args(tiny_model), zeta=1.0, sigma_y=sigma_y)
        else:
            score_ald_step(**_step_args(tiny_model), gamma_t=1.5, sigma_y=sigma_y)


@pytest.mark.parametrize("num_steps", [0, False, 2.0, -1, 1001])
@pytest.mark.parametrize("sampler", ["score_ald", "dps"])
def test_the_loops_reject_zero_boolean_fractional_and_out_of_range_num_steps(tiny_model, sampler, num_steps):
    op = _ops()["box"]
    kwargs = dict(gamma=1.5, sigma_y=SIGMA_Y) if sampler == "score_ald" else dict(zeta=1.0, sigma_y=SIGMA_Y)
    run = score_ald_sample if sampler == "score_ald" else dps_sample
    with pytest.raises(ValueError, match=rf"num_steps must be an integer in \[1, 1000\] .*; got {num_steps!r}\."):
        run(tiny_model, op, _measure(op), torch.Generator(), num_steps=num_steps, progress=False, **kwargs)


@pytest.mark.parametrize("x_T, match", [(torch.zeros(3, 3, 8, 8), r"x_T must have the shape of one start per measurement"),
                                        (torch.zeros(2, 3, 8, 8, dtype=torch.long), "x_T must be a floating-point"),
                                        (torch.full((2, 3, 8, 8), float("inf")), "x_T must be finite")])
def test_the_loops_reject_an_x_T_that_does_not_match_the_measurements(tiny_model, x_T, match):
    op = _ops()["box"]
    with pytest.raises(ValueError, match=match):
        dps_sample(tiny_model, op, _measure(op), torch.Generator(), zeta=1.0, sigma_y=SIGMA_Y, x_T=x_T, progress=False)


def test_score_ald_needs_an_adjoint(tiny_model):
    class NoAdjoint:
        def A(self, x):
            return x

    with pytest.raises(ValueError, match="op must be a forward model with a method op.A_adjoint"):
        score_ald_sample(tiny_model, NoAdjoint(), _measure(_ops()["box"]), torch.Generator(), gamma=1.0,
                         sigma_y=SIGMA_Y, progress=False)


def test_residual_norm_is_per_image():
    op = _ops()["box"]
    x, y = _image(0), _measure(op)
    expected = torch.stack([(y[i] - op.A(x[i:i + 1])[0]).flatten().norm() for i in range(2)])
    torch.testing.assert_close(residual_norm(op, x, y), expected)


def test_one_generator_per_image_makes_each_image_independent_of_its_batch(tiny_model):
    """With a list of generators, image i's noise comes from generator i alone: a batch equals its images run one by
    one, and two candidates given the same seeds see the same noise (common random numbers)."""
    from helpers import operators
    op = operators.box_inpainting(8, 3)
    x0 = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = op.measure(x0, 0.05, torch.Generator().manual_seed(1))
    seeds = [10, 11, 12]
    batch, _ = posterior.dps_sample(tiny_model, op, y, [torch.Generator().manual_seed(s) for s in seeds], zeta=0.5,
                                    step="dps", num_steps=4, progress=False)
    for i, s in enumerate(seeds):
        alone, _ = posterior.dps_sample(tiny_model, op, y[i:i + 1], [torch.Generator().manual_seed(s)], zeta=0.5,
                                        step="dps", num_steps=4, progress=False)
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=0, atol=1e-4)  # float32 sums differ by batch
    twice, _ = posterior.score_ald_sample(tiny_model, op, y[:1].repeat(2, 1, 1, 1),
                                         [torch.Generator().manual_seed(5)] * 1 + [torch.Generator().manual_seed(5)],
                                         gamma=2.0, sigma_y=0.05, num_steps=4, progress=False)
    assert torch.equal(twice[0], twice[1])
    with pytest.raises(ValueError, match="a list of 3 of them, one per image; got a list of 2"):
        posterior.dps_sample(tiny_model, op, y, [torch.Generator()] * 2, zeta=0.5, step="dps", num_steps=2)
