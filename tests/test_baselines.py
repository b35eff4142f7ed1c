"""Classical baselines: biharmonic inpainting and Tikhonov (gradient-penalty) deblurring by conjugate gradients."""

import math

import pytest
import torch

from helpers import baselines, operators


def smooth_images(batch=2, size=32):
    """Low-order polynomial images in [-1, 1]: biharmonic interpolation reproduces them almost exactly."""
    i, j = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                          torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    channels = [0.5 * i, 0.4 * j - 0.2, 0.3 * i * j + 0.2 * i ** 2 - 0.1]
    image = torch.stack(channels)[None]
    return torch.cat([image * (1 - 0.3 * k) for k in range(batch)])


@pytest.mark.parametrize("task", ["box", "random"])
def test_biharmonic_fills_a_smooth_image_nearly_exactly(task):
    x = smooth_images()
    op = operators.course_operators(32)[task]
    y = op.A(x)
    x_hat = baselines.biharmonic_inpainting(y, op)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    error = x_hat - x
    if task == "box":  # the hole is surrounded by observed pixels: the quadratic images are reproduced exactly
        assert error.abs().max() < 1e-10
    else:  # missing pixels on the border have no data beyond them, so small errors there
        assert error.pow(2).mean().sqrt() < 5e-3 and error.abs().max() < 0.05
    torch.testing.assert_close(op.A(x_hat), y)  # observed pixels are kept as measured
    # images are filled independently
    torch.testing.assert_close(baselines.biharmonic_inpainting(y[1:], op), x_hat[1:])


def test_tikhonov_with_small_lambda_recovers_a_noise_free_blurred_image():
    generator = torch.Generator().manual_seed(0)
    x = operators.GaussianBlur(5, 1.5).A(torch.rand(2, 3, 32, 32, generator=generator, dtype=torch.float64) * 2 - 1)
    op = operators.course_operators(32)["blur"]
    y = op.A(x)
    x_hat = baselines.tikhonov_deblurring(y, op, lam=1e-6, tol=1e-10, max_iter=5000)
    error = (x_hat - x).pow(2).mean().sqrt()
    blurred_error = (y - x).pow(2).mean().sqrt()
    assert error < 0.05 * blurred_error, (error, blurred_error)
    # the answer is the exact minimiser: the objective's gradient there vanishes (by autograd, independent of CG)
    lam = 1e-6
    x_var = x_hat.clone().requires_grad_()
    dy, dx = baselines._grad(x_var)
    objective = (op.A(x_var) - y).pow(2).sum() + lam * (dy.pow(2).sum() + dx.pow(2).sum())
    (grad,) = torch.autograd.grad(objective, x_var)
    assert grad.norm() / (2 * op.A_adjoint(y)).norm() < 1e-8


def test_tikhonov_gradient_adjoint_is_exact_and_larger_lambda_is_smoother():
    generator = torch.Generator().manual_seed(1)
    u = torch.randn(2, 3, 9, 7, generator=generator, dtype=torch.float64)
    v1, v2 = (torch.randn(2, 3, 9, 7, generator=generator, dtype=torch.float64) for _ in range(2))
    dy, dx = baselines._grad(u)
    lhs = (dy * v1).sum() + (dx * v2).sum()
    rhs = (u * baselines._grad_adjoint(v1, v2)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-12
    op = operators.course_operators(32)["blur"]
    y = op.measure(smooth_images(1), 0.05, torch.Generator().manual_seed(2))
    roughness = [sum(d.abs().mean() for d in baselines._grad(baselines.tikhonov_deblurring(y, op, lam)))
                 for lam in (0.01, 0.1, 1.0)]
    assert roughness[0] > roughness[1] > roughness[2]


def test_tikhonov_keeps_float32_and_raises_when_cg_cannot_converge():
    op = operators.course_operators(32)["blur"]
    y = op.A(smooth_images(1)).float()
    assert baselines.tikhonov_deblurring(y, op, 0.03).dtype == torch.float32
    with pytest.raises(RuntimeError, match="conjugate gradients did not reach tol=1e-12 in max_iter=2"):
        baselines.tikhonov_deblurring(y, op, 1e-6, tol=1e-12, max_iter=2)


# ---- bad inputs ----

@pytest.mark.parametrize("lam", [0, -1.0, math.inf, math.nan, "0.1", True])
def test_tikhonov_rejects_bad_lambda(lam):
    op = operators.course_operators(32)["blur"]
    with pytest.raises(ValueError, match=r"lam must be a number > 0 \(finite\) .*got"):
        baselines.tikhonov_deblurring(torch.zeros(1, 3, 32, 32), op, lam)


def test_baselines_reject_the_wrong_operator_and_bad_measurements():
    ops = operators.course_operators(32)
    with pytest.raises(ValueError, match="op must be a helpers.operators.GaussianBlur; got Inpainting"):
        baselines.tikhonov_deblurring(torch.zeros(1, 3, 32, 32), ops["box"], 0.03)
    with pytest.raises(ValueError, match="op must be a helpers.operators.Inpainting.*got GaussianBlur"):
        baselines.biharmonic_inpainting(torch.zeros(1, 3, 32, 32), ops["blur"])
    with pytest.raises(ValueError, match=r"y must have shape \(B, 3, 32, 32\); got \(3, 32, 32\)"):
        baselines.biharmonic_inpainting(torch.zeros(3, 32, 32), ops["box"])
    with pytest.raises(ValueError, match=r"y must be in the model range \[-1, 1\].*got values in \[0, 255\]"):
        baselines.biharmonic_inpainting(torch.full((1, 3, 32, 32), 255.0).clamp(0, 255) * ops["box"].mask,
                                        ops["box"])
    with pytest.raises(ValueError, match="y must be a floating-point tensor"):
        baselines.tikhonov_deblurring(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), ops["blur"], 0.03)
    with pytest.raises(ValueError, match="tol must be a number"):
        baselines.tikhonov_deblurring(torch.zeros(1, 3, 32, 32), ops["blur"], 0.03, tol=0)
