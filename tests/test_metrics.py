"""PSNR, SSIM and LPIPS per image, against scikit-image; LPIPS degrades to NaN offline."""

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from helpers import metrics
from helpers.images import to_unit_range


def random_pair(batch=3, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    reference = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    x = (reference + 0.2 * torch.randn(reference.shape, generator=generator)).clamp(-1, 1)
    return x, reference


def test_psnr_matches_skimage_on_unit_range_images():
    x, reference = random_pair()
    ours = metrics.psnr(x, reference)
    for i in range(len(x)):
        expected = peak_signal_noise_ratio(to_unit_range(reference[i]).double().numpy(),
                                           to_unit_range(x[i]).double().numpy(), data_range=1)
        assert abs(ours[i].item() - expected) < 1e-4


@pytest.mark.parametrize("metric", [metrics.psnr, metrics.ssim, metrics.lpips], ids=lambda f: f.__name__)
def test_batch_results_are_the_single_image_results(metric):
    x, reference = random_pair()
    batch = metric(x, reference)
    assert batch.shape == (3,)
    singles = torch.cat([metric(x[i], reference[i]) for i in range(3)])
    torch.testing.assert_close(batch, singles, equal_nan=True)
    # one reference for the whole batch
    torch.testing.assert_close(metric(x, reference[:1]), torch.cat([metric(xi, reference[0]) for xi in x]),
                               equal_nan=True)


def test_ssim_is_in_minus_one_one_and_one_for_identical_images():
    x, reference = random_pair()
    values = metrics.ssim(x, reference)
    assert ((values >= -1) & (values <= 1)).all()
    torch.testing.assert_close(metrics.ssim(reference, reference), torch.ones(3))


def test_lpips_is_nan_when_unavailable_and_finite_otherwise():
    x, reference = random_pair()
    values = metrics.lpips(x, reference)
    assert values.shape == (3,)
    if metrics.lpips_available():
        assert torch.isfinite(values).all()
    else:
        assert torch.isnan(values).all()


# ---- bad inputs ----

@pytest.mark.parametrize("shape", [(16, 16), (1, 1, 16, 16), (1, 4, 16, 16), (1, 1, 3, 16, 16)])
def test_psnr_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match=r"x must have shape \(3, H, W\) or \(B, 3, H, W\)"):
        metrics.psnr(torch.zeros(shape), torch.zeros(1, 3, 16, 16))


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="x and reference must have the same shape"):
        metrics.psnr(torch.zeros(2, 3, 16, 16), torch.zeros(3, 3, 16, 16))


def test_psnr_rejects_integer_images_and_non_finite_values():
    with pytest.raises(ValueError, match=r"reference must be a floating-point image in the model range \[-1, 1\].*to_model_range"):
        metrics.psnr(torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 255, dtype=torch.uint8))
    with pytest.raises(ValueError, match="x must contain finite values"):
        metrics.psnr(torch.full((1, 3, 8, 8), float("nan")), torch.zeros(1, 3, 8, 8))


def test_values_outside_the_model_range_are_clamped_like_a_saved_image():
    x0 = torch.zeros(1, 3, 8, 8)
    assert torch.equal(metrics.psnr(torch.full_like(x0, 227.0), x0), metrics.psnr(torch.ones_like(x0), x0))


# ---- high_frequency: mean |Laplacian|, the grain-vs-blur check ----

def test_high_frequency_is_zero_for_a_constant_image_and_four_for_a_checkerboard():
    torch.testing.assert_close(metrics.high_frequency(torch.full((2, 3, 8, 8), 0.3)), torch.zeros(2))
    i, j = torch.meshgrid(torch.arange(8), torch.arange(6), indexing="ij")
    checkerboard = ((i + j) % 2).double().expand(1, 3, 8, 6)
    # every pixel's 4 neighbours (reflected ones at the border too) have the other value: |4 (1 - v) - 4 v| = 4
    torch.testing.assert_close(metrics.high_frequency(checkerboard), torch.tensor([4.0]))


def test_high_frequency_falls_with_blur_and_rises_with_noise_per_image():
    from helpers import operators

    x, _ = random_pair(batch=2, size=16)
    x = operators.GaussianBlur(5, 1.0).A(x)
    blurred = operators.GaussianBlur(5, 1.0).A(x)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    value = metrics.high_frequency(to_unit_range(x))
    assert value.shape == (2,)
    assert (metrics.high_frequency(to_unit_range(blurred)) < value).all()
    assert (metrics.high_frequency(to_unit_range(noisy)) > value).all()
    torch.testing.assert_close(metrics.high_frequency(to_unit_range(x[1])), value[1:])


def test_high_frequency_rejects_model_range_images_and_wrong_shapes():
    with pytest.raises(ValueError, match=r"x must be in the unit range \[0, 1\].*to_unit_range"):
        metrics.high_frequency(torch.full((1, 3, 8, 8), -0.5))
    with pytest.raises(ValueError, match=r"x must have shape \(3, H, W\) or \(B, 3, H, W\)"):
        metrics.high_frequency(torch.zeros(1, 1, 8, 8))
