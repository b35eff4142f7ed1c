"""Image quality metrics: PSNR, SSIM and LPIPS, per image.

All take images in the model range [-1, 1] -- the range every tensor of the course lives in -- as
``(3, H, W)`` or ``(B, 3, H, W)``, convert them with :func:`helpers.images.to_unit_range` (which clamps to
[0, 1], as saving an image does) and return one value per image (a ``(B,)`` tensor on the CPU). Reductions are per image, never across the batch.
"""
from __future__ import annotations

import functools
import warnings

import torch

from helpers.download import torch_hub_checkpoints
from helpers.images import to_model_range, to_unit_range


def _batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (3, H, W) or (B, 3, H, W); got {type(x).__name__}.")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (3, H, W) or (B, 3, H, W); got {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must contain finite values; got NaN or inf.")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point image in the model range [-1, 1]; got dtype {x.dtype}. "
                         f"Convert 8-bit images with images.to_model_range(x / 255).")
    return to_unit_range(x.detach().to("cpu", torch.float64))


def _pair(x: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, reference = _batch(x, "x"), _batch(reference, "reference")
    if reference.shape[0] == 1 and x.shape[0] > 1:
        reference = reference.expand_as(x)
    if x.shape != reference.shape:
        raise ValueError(f"x and reference must have the same shape (or one reference for the batch); got "
                         f"{tuple(x.shape)} and {tuple(reference.shape)}.")
    return x, reference


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, computed on [0, 1] with peak 1.

    .. math:: \\mathrm{PSNR} = 10 \\log_{10} \\frac{1}{\\mathrm{MSE}}

    Agrees with ``skimage.metrics.peak_signal_noise_ratio(..., data_range=1)`` on the unit-range images.
    """
    x, reference = _pair(x, reference)
    mse = (x - reference).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse)).float()


def ssim(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (scikit-image, 7x7 window, ``data_range=1``, over the RGB channels)."""
    from skimage.metrics import structural_similarity

    x, reference = _pair(x, reference)
    values = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=2,
                                    data_range=1.0) for a, b in zip(x, reference)]
    return torch.tensor(values, dtype=torch.float32)


LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"


@functools.lru_cache(maxsize=1)
def _lpips_network():
    """The LPIPS(AlexNet) network, or ``None`` (after printing why, once) if its backbone cannot be had."""
    import lpips as lpips_package

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network = lpips_package.LPIPS(net="alex", verbose=False)
    except OSError as error:  # urllib's URLError is an OSError: no network, no file in the cache
        print(f"LPIPS is unavailable, so it is reported as NaN and SSIM is shown instead.\n"
              f"  Missing: the ImageNet AlexNet weights that LPIPS builds on ({LPIPS_BACKBONE_FILE}, 233 MB), which "
              f"torchvision downloads on first use; the download failed ({error}).\n"
              f"  Fix: on a machine with internet run `python -c \"import lpips; lpips.LPIPS(net='alex')\"`, or copy "
              f"{LPIPS_BACKBONE_FILE} into {torch_hub_checkpoints()} (set TORCH_HOME to change it).")
        return None
    return network.eval().requires_grad_(False)


def lpips_available() -> bool:
    """True if LPIPS can be computed here (its AlexNet backbone is cached or downloadable)."""
    return _lpips_network() is not None


def lpips(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """LPIPS distance (AlexNet, v0.1) per image, lower is better; NaN when the backbone is unavailable.

    Computed at the images' own resolution. Never from a randomly initialised backbone: if the ImageNet
    weights are missing (offline), it prints once what is missing and where to put it, and returns NaN.
    """
    x, reference = _pair(x, reference)
    network = _lpips_network()
    if network is None:
        return torch.full((x.shape[0],), float("nan"))
    with torch.no_grad():
        values = network(to_model_range(x.float()), to_model_range(reference.float()))  # LPIPS takes [-1, 1]
    return values.reshape(-1).float()


def high_frequency(x: torch.Tensor) -> torch.Tensor:
    r"""Mean absolute discrete Laplacian per image: how much fine-scale contrast (edges, texture, noise) it holds.

    .. math:: \mathrm{HF}(x) = \frac{1}{3 H W} \sum_{c, i, j} \left| x_{c,i-1,j} + x_{c,i+1,j} + x_{c,i,j-1}
              + x_{c,i,j+1} - 4 x_{c,i,j} \right|

    with reflect padding at the border (so a constant image gives exactly 0 and the border adds no false edges).
    Reference: issue 10 (a deblurring sharpness check); notebook 06.

    Why it tells grain from blur: the Laplacian is a high-pass filter (its frequency response
    :math:`4 - 2\cos\omega_x - 2\cos\omega_y` grows from 0 at the mean to 8 at the Nyquist frequency), so it responds
    to exactly the content that a blur removes and that sampler noise adds, pixel-to-pixel. Compared with the true
    image's value, an output with *less* is blurred (detail lost, as in a blurry measurement or a posterior mean),
    one with *more* carries grain (noise the reverse process left in, or invented texture); PSNR alone cannot tell
    the two apart. Report it as the ratio output / truth: 1 is right, < 1 blurred, > 1 grainy.

    ``x``: ``(3, H, W)`` or ``(B, 3, H, W)`` in the unit range [0, 1] -- unlike :func:`psnr`, which takes the model
    range; convert with :func:`helpers.images.to_unit_range` -- with H, W >= 2. Returns a ``(B,)`` float32 tensor on
    the CPU, computed in float64. Raises ``ValueError`` for a wrong shape, a non-float or non-finite image, or
    values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (3, H, W) or (B, 3, H, W); got {type(x).__name__}.")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < 2:
        raise ValueError(f"x must have shape (3, H, W) or (B, 3, H, W) with H, W >= 2; got {tuple(x.shape)}.")
    if not x.dtype.is_floating_point or not torch.isfinite(x).all():
        raise ValueError(f"x must be a finite floating-point image in the unit range [0, 1]; got dtype {x.dtype}.")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must be in the unit range [0, 1]; got values in [{x.min().item():.3g}, "
                         f"{x.max().item():.3g}]. Use images.to_unit_range() for model-range ([-1, 1]) images.")
    x = torch.nn.functional.pad(x.detach().to("cpu", torch.float64), (1, 1, 1, 1), mode="reflect")
    centre = x[..., 1:-1, 1:-1]
    laplacian = x[..., :-2, 1:-1] + x[..., 2:, 1:-1] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:] - 4 * centre
    return laplacian.abs().mean(dim=(1, 2, 3)).float()
