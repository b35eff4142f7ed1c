"""Forward operators A (paper eq. 8): exact adjoints, fixed parameters, measurements, bad inputs."""
import numpy as np
import pytest
import torch

from helpers import operators
from helpers.operators import GaussianBlur, box_inpainting, random_inpainting

SIZES = [8, 17, 32, 64]
OPERATORS = {
    "box": lambda size: box_inpainting(size, size // 2),
    "box_corner": lambda size: box_inpainting(size, 3, top=0, left=size - 3),
    "random": lambda size: random_inpainting(size, 0.3, seed=1),
    "blur_7_1.0": lambda size: GaussianBlur(7, 1.0),
    "blur_3_0.5": lambda size: GaussianBlur(3, 0.5),
    "blur_5_2.0": lambda size: GaussianBlur(5, 2.0),
    "blur_7_1.5_separable": lambda size: GaussianBlur(7, 1.5, separable=True),
}


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_adjoint_satisfies_inner_product_identity(make, size):
    op = make(size)
    x, y = randn(2, 3, size, size, seed=1), randn(2, 3, size, size, seed=2)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert (lhs - rhs).abs() / lhs.abs() < 1e-12


@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_calling_an_operator_changes_nothing(make):
    """After A, A_adjoint and measure (in float32 and float64), the operator still computes what a fresh copy does;
    its mask is still the one it was built with (a blur has no stored state to compare but its outputs)."""
    op, fresh = make(16), make(16)
    x = randn(2, 3, 16, 16)
    for dtype in (torch.float32, torch.float64):
        op.A(x.to(dtype))
        op.A_adjoint(x.to(dtype))
        op.measure(x.to(dtype), 0.1, torch.Generator().manual_seed(0))
    if hasattr(op, "mask"):
        assert torch.equal(op.mask, fresh.mask)
    assert torch.equal(op.A(x), fresh.A(x)) and torch.equal(op.A_adjoint(x), fresh.A_adjoint(x))


def test_random_inpainting_mask_is_shared_by_channels_and_reproducible_by_seed():
    op = random_inpainting(32, 0.5, seed=3)
    assert op.mask.shape == (1, 1, 32, 32)
    ones = op.A(torch.ones(1, 3, 32, 32))
    assert torch.equal(ones[:, 0], ones[:, 1]) and torch.equal(ones[:, 0], ones[:, 2])
    assert torch.equal(op.mask, random_inpainting(32, 0.5, seed=3).mask)
    assert not torch.equal(op.mask, random_inpainting(32, 0.5, seed=4).mask)


@pytest.mark.parametrize("drop_fraction", [0.0, 0.3, 0.9])
def test_random_inpainting_drops_about_drop_fraction(drop_fraction):
    n = 64 * 64
    dropped = 1 - random_inpainting(64, drop_fraction, seed=0).mask.mean().item()
    standard_error = (drop_fraction * (1 - drop_fraction) / n) ** 0.5
    assert abs(dropped - drop_fraction) <= 5 * standard_error


def test_box_inpainting_hides_a_centred_box_by_default():
    mask = box_inpainting(8, 4).mask[0, 0]
    assert mask.sum() == 64 - 16
    assert (mask[2:6, 2:6] == 0).all()


@pytest.mark.parametrize("blur", [GaussianBlur(7, 1.0), GaussianBlur(3, 0.5), GaussianBlur(9, 3.0)], ids=str)
def test_gaussian_kernel_sums_to_one_and_is_symmetric(blur):
    k = blur.kernel(torch.float64)
    assert k.shape == (blur.kernel_size, blur.kernel_size)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(k, k.T) and torch.equal(k, k.flip(0))


def test_blur_of_a_constant_image_is_that_constant():
    x = torch.full((1, 3, 16, 16), 0.37, dtype=torch.float64)
    torch.testing.assert_close(GaussianBlur(7, 2.0).A(x), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
def test_noiseless_measurement_equals_A_and_noisy_one_is_reproducible(make):
    op = make(16)
    x = randn(2, 3, 16, 16)
    assert torch.equal(op.measure(x, 0, torch.Generator().manual_seed(0)), op.A(x))
    y1 = op.measure(x, 0.05, torch.Generator().manual_seed(5))
    y2 = op.measure(x, 0.05, torch.Generator().manual_seed(5))
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, op.A(x))


def test_blur_measurement_noise_has_std_sigma_y():
    x = torch.zeros(4, 3, 32, 32, dtype=torch.float64)
    y = GaussianBlur(7, 1.0).measure(x, 0.1, torch.Generator().manual_seed(0))
    assert y.std().item() == pytest.approx(0.1, rel=0.05)


def test_inpainting_measurement_leaves_missing_pixels_at_zero():
    op = random_inpainting(16, 0.5, seed=0)
    y = op.measure(randn(2, 3, 16, 16), 0.5, torch.Generator().manual_seed(0))
    missing = (op.mask == 0).expand_as(y)
    assert missing.any()
    assert (y[missing] == 0).all()
    assert (y[~missing] != 0).all()


# ---- bad inputs: ValueError naming the parameter and what is allowed ----

@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (3, 16, 16), (1, 4, 16, 16)])
def test_A_rejects_wrong_shape_or_channels(make, shape):
    op = make(16)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, (H, W|16, 16)\)"):
        op.A(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"y must have shape \(B, 3, (H, W|16, 16)\)"):
        op.A_adjoint(torch.zeros(shape))


def test_inpainting_rejects_an_image_of_another_size():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 16, 16\) for this operator; got \(1, 3, 8, 8\)"):
        box_inpainting(16, 4).A(torch.zeros(1, 3, 8, 8))


def test_blur_rejects_a_kernel_too_large_for_the_image():
    with pytest.raises(ValueError, match="kernel_size=9 is too large"):
        GaussianBlur(9, 1.0).A(torch.zeros(1, 3, 4, 4))


def test_box_larger_than_image_is_rejected():
    with pytest.raises(ValueError, match="box_size must be between 1 and image_size=8"):
        box_inpainting(8, 9)


@pytest.mark.parametrize("name, kwargs", [("top", dict(top=5)), ("left", dict(left=-1)), ("top", dict(top=1.5))])
def test_box_position_that_does_not_fit_is_rejected(name, kwargs):
    with pytest.raises(ValueError, match=rf"{name} must be an integer in \[0, 4\]"):
        box_inpainting(8, 4, **kwargs)


@pytest.mark.parametrize("drop_fraction", [1.0, -0.1, 1.5, float("nan")])
def test_drop_fraction_outside_0_1_is_rejected(drop_fraction):
    with pytest.raises(ValueError, match=r"drop_fraction must be in \[0, 1\)"):
        random_inpainting(8, drop_fraction)


@pytest.mark.parametrize("op", [box_inpainting(8, 2), GaussianBlur(3, 1.0)], ids=["inpainting", "blur"])
@pytest.mark.parametrize("sigma_y", [-0.1, float("nan"), float("inf"), "0.1", True, None])
def test_negative_or_non_numeric_sigma_y_is_rejected(op, sigma_y):
    with pytest.raises(ValueError, match="sigma_y must be a number >= 0"):
        op.measure(torch.zeros(1, 3, 8, 8), sigma_y, torch.Generator())


@pytest.mark.parametrize("kernel_size", [4, 0, -3, 2.0])
def test_even_or_non_positive_kernel_size_is_rejected(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be an odd positive integer"):
        GaussianBlur(kernel_size, 1.0)


@pytest.mark.parametrize("sigma", [0, -1.0, float("nan"), float("inf"), True])
def test_non_positive_or_infinite_sigma_is_rejected(sigma):
    """sigma = inf once became a box blur quietly."""
    with pytest.raises(ValueError, match=rf"sigma must be a number > 0 \(finite\) .*; got {sigma!r}"):
        GaussianBlur(7, sigma)


def test_course_operators_at_32_are_the_notebooks_sizes_exactly():
    small = operators.course_operators(32, seed=3)
    assert set(small) == {"box", "random", "blur"}
    # the embedded model's settings, as the notebooks have always used them (their saved outputs depend on it)
    assert torch.equal(small["box"].mask, operators.box_inpainting(32, box_size=12).mask)
    assert torch.equal(small["random"].mask, operators.random_inpainting(32, drop_fraction=0.7, seed=3).mask)
    assert (small["blur"].kernel_size, small["blur"].sigma, small["blur"].separable) == (7, 1.0, False)
    assert small.source.startswith("the course's operators, sized relative to the 32x32 image")
    assert [op.name for op in small.values()] == ["box inpainting (12x12 at top=10, left=10)",
                                                  "random inpainting (70% of pixels dropped)",
                                                  "Gaussian blur (7x7, sigma=1 px)"]


def test_course_operators_at_256_are_dps_ffhq_operators():
    """DPS's configs/inpainting_config.yaml (box 128, random 30-70 %) and configs/gaussian_deblur_config.yaml
    (kernel 61, intensity 3.0), github.com/DPS2022/diffusion-posterior-sampling."""
    large = operators.course_operators(256, seed=3)
    assert set(large) == {"box", "random", "blur"}
    assert large.source.startswith("DPS's FFHQ 256x256 operators")
    assert int((large["box"].mask == 0).sum()) == 128 * 128 and large["box"].mask[0, 0, 64:192, 64:192].eq(0).all()
    dropped = 1 - float(large["random"].mask.mean())
    assert operators.DPS_DROP_FRACTION_RANGE[0] <= 0.7 <= operators.DPS_DROP_FRACTION_RANGE[1]
    assert abs(dropped - 0.7) < 0.01
    assert (large["blur"].kernel_size, large["blur"].sigma, large["blur"].separable) == (61, 3.0, True)


@pytest.mark.parametrize("image_size", [8, 64, 128, 512])
def test_course_operators_at_other_sizes_scale_with_the_image(image_size):
    ops = operators.course_operators(image_size)
    assert ops.source.startswith(f"the course's operators, sized relative to the {image_size}x{image_size} image")
    assert int((ops["box"].mask == 0).sum()) == (image_size * 3 // 8) ** 2
    assert ops["blur"].sigma == image_size / 32 and not ops["blur"].separable


def test_separable_blur_is_the_same_operator_as_the_2d_one():
    x, y = randn(2, 3, 64, 64, seed=1), randn(2, 3, 64, 64, seed=2)
    for size, sigma in ((61, 3.0), (7, 1.0), (9, 2.5)):
        separable, full = GaussianBlur(size, sigma, separable=True), GaussianBlur(size, sigma)
        torch.testing.assert_close(separable.A(x), full.A(x), rtol=0, atol=1e-12)
        torch.testing.assert_close(separable.A_adjoint(y), full.A_adjoint(y), rtol=0, atol=1e-12)


def test_separable_blur_backward_is_its_adjoint():
    """DPS differentiates ||y - A(x0_hat)||^2 through A: the backward pass must be A^H (written out, not autograd's)."""
    op = GaussianBlur(61, 3.0, separable=True)
    x = randn(1, 3, 96, 96, seed=1).requires_grad_()
    y = randn(1, 3, 96, 96, seed=2)
    (grad,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    torch.testing.assert_close(grad, op.A_adjoint(y), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, GaussianBlur(61, 3.0).A_adjoint(y), rtol=0, atol=1e-12)


def test_separable_must_be_a_bool():
    with pytest.raises(ValueError, match="separable must be True or False; got 'yes'"):
        GaussianBlur(7, 1.0, separable="yes")


@pytest.mark.parametrize("image_size", [4, 32.0, True, "32"])
def test_course_operators_refuse_bad_sizes(image_size):
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        operators.course_operators(image_size)


# ---- the bad-input battery: integer or non-finite images, wrong generators, for every operator ----

@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
@pytest.mark.parametrize("x, match", [
    (torch.ones(1, 3, 16, 16, dtype=torch.uint8), "x must be a floating-point tensor .*got dtype torch.uint8"),
    (torch.ones(1, 3, 16, 16, dtype=torch.long), "x must be a floating-point tensor .*got dtype torch.int64"),
    (torch.full((1, 3, 16, 16), float("nan")), "x must be finite; got 768 NaN or infinite values"),
    (torch.full((1, 3, 16, 16), float("inf")), "x must be finite"),
    (np.zeros((1, 3, 16, 16)), "x must be a torch.Tensor"),
], ids=["uint8", "int64", "nan", "inf", "numpy"])
def test_A_and_measure_reject_integer_and_non_finite_images(make, x, match):
    """An integer image through the blur once came back as an all-zero integer tensor."""
    op = make(16)
    with pytest.raises(ValueError, match=match):
        op.A(x)
    with pytest.raises(ValueError, match=match):
        op.measure(x, 0.05, torch.Generator())
    with pytest.raises(ValueError, match=match.replace("x must", "y must")):
        op.A_adjoint(x)


@pytest.mark.parametrize("make", OPERATORS.values(), ids=OPERATORS.keys())
@pytest.mark.parametrize("generator", [None, 0, [torch.Generator()]], ids=["None", "int", "list"])
def test_measure_needs_a_generator(make, generator):
    """None once drew from the global RNG silently; an int failed deep inside torch."""
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        make(16).measure(torch.zeros(1, 3, 16, 16), 0.05, generator)
