"""Forward models :math:`\\mathcal{A}` of the inverse problems (paper eq. 8): inpainting and Gaussian blur.

Each operator is fixed at construction and has ``A(x)``, its exact adjoint ``A_adjoint(y)`` (the
:math:`\\mathcal{A}^H` of the ScoreALD step) and ``measure(x, sigma_y, generator)``, which makes a noisy
measurement :math:`y = \\mathcal{A}(x) + \\sigma_y z`. Images are ``(B, 3, H, W)`` in the model range [-1, 1],
and ``sigma_y`` is in those units too, as in the DPS code (its ``sigma = 0.05`` is 2.5 % of the range).
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from helpers import _checks


def _check_image(x: torch.Tensor, name: str, size: int | None = None) -> None:
    _checks.tensor(x, name, shape="(B, 3, H, W)" if size is None else f"(B, 3, {size}, {size}) for this operator",
                   size=size)


def _check_measure(sigma_y: float, generator: torch.Generator) -> None:
    _checks.number(sigma_y, "sigma_y", allow_zero=True, hint="noise std in [-1, 1] image units, e.g. 0.05")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (e.g. seeding.seed_everything(seed)); got "
                         f"{generator!r:.60}.")


@dataclasses.dataclass(frozen=True, eq=False)
class Inpainting:
    """Pixel masking :math:`\\mathcal{A}(x) = m \\odot x` with a fixed 0/1 mask ``m`` of shape ``(1, 1, H, W)``.

    Self-adjoint: :math:`\\mathcal{A}^H(y) = m \\odot y`. Make one with :func:`box_inpainting` or
    :func:`random_inpainting`. Measurements keep the image's shape, with zeros where pixels are missing.
    """

    mask: torch.Tensor
    name: str

    @property
    def image_size(self) -> int:
        return int(self.mask.shape[-1])

    def A(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "x", self.image_size)
        return self.mask.to(x) * x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_image(y, "y", self.image_size)
        return self.mask.to(y) * y

    def measure(self, x: torch.Tensor, sigma_y: float, generator: torch.Generator) -> torch.Tensor:
        """:math:`y = m \\odot (x + \\sigma_y z)`: noise only on the observed pixels (missing ones stay 0).

        ``z`` is drawn on the CPU from ``generator`` (same result on every device).
        """
        _check_measure(sigma_y, generator)
        _check_image(x, "x", self.image_size)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        return self.A(x + sigma_y * z)


def box_inpainting(image_size: int, box_size: int, top: int | None = None, left: int | None = None) -> Inpainting:
    """Hide a ``box_size`` x ``box_size`` square whose top-left corner is (``top``, ``left``), centred by default."""
    for name, value in (("image_size", image_size), ("box_size", box_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer number of pixels; got {value!r}.")
    if box_size > image_size:
        raise ValueError(f"box_size must be between 1 and image_size={image_size}; got {box_size}.")
    top = (image_size - box_size) // 2 if top is None else top
    left = (image_size - box_size) // 2 if left is None else left
    for name, value in (("top", top), ("left", left)):
        if not isinstance(value, int) or not 0 <= value <= image_size - box_size:
            raise ValueError(f"{name} must be an integer in [0, {image_size - box_size}] so that the {box_size}-pixel "
                             f"box fits in the {image_size}-pixel image; got {value!r}.")
    mask = torch.ones(1, 1, image_size, image_size)
    mask[..., top:top + box_size, left:left + box_size] = 0
    return Inpainting(mask=mask, name=f"box inpainting ({box_size}x{box_size} at top={top}, left={left})")


def random_inpainting(image_size: int, drop_fraction: float, seed: int = 0) -> Inpainting:
    """Drop each pixel (all three channels together) with probability ``drop_fraction``, from a seeded mask."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer number of pixels; got {image_size!r}.")
    if not isinstance(drop_fraction, (int, float)) or not 0 <= drop_fraction < 1:
        raise ValueError(f"drop_fraction must be in [0, 1) (the fraction of pixels removed); got {drop_fraction!r}.")
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(1, 1, image_size, image_size, generator=generator) >= drop_fraction
    return Inpainting(mask=keep.float(), name=f"random inpainting ({drop_fraction:.0%} of pixels dropped)")


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianBlur:
    """Convolution with a normalised ``kernel_size`` x ``kernel_size`` Gaussian of std ``sigma`` pixels.

    Padding: reflect (``F.pad(mode="reflect")``) by ``kernel_size // 2`` on each side, as in the DPS code, so
    the output has the input's size and no dark border. The adjoint is the exact transpose of
    pad-then-convolve, computed with autograd's vector-Jacobian product (``A`` is linear, so its VJP is
    :math:`\mathcal{A}^H`); it is checked against :math:`\langle \mathcal{A}x, y\rangle =
    \langle x, \mathcal{A}^H y\rangle` in the tests and in notebook 00.

    ``separable=True`` computes the same operator as two 1-D convolutions (the Gaussian kernel is the outer product
    of two 1-D Gaussians), for large kernels such as DPS's 61 x 61: ``A`` costs ``2 k`` instead of ``k^2``
    multiply-adds per pixel, and ``A_adjoint`` (also the backward pass of ``A``, e.g. in DPS's gradient) is written
    out as the transposed convolutions followed by the adjoint of the reflect padding, instead of autograd's
    depthwise-convolution backward (1.3 s against 0.03 s for two 256 x 256 images on one CPU core). Same operator,
    different rounding (tested to 1e-12 in float64); the 2-D form stays the default, so the 32 x 32 notebooks
    compute bit for bit what they always did.
    """

    kernel_size: int = 7
    sigma: float = 1.0
    separable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer; got {self.kernel_size!r}.")
        _checks.number(self.sigma, "sigma", allow_zero=False, hint="the Gaussian's std in pixels")
        if not isinstance(self.separable, bool):
            raise ValueError(f"separable must be True or False; got {self.separable!r}.")

    @property
    def name(self) -> str:
        return f"Gaussian blur ({self.kernel_size}x{self.kernel_size}, sigma={self.sigma:g} px)"

    def kernel_1d(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``(kernel_size,)`` 1-D Gaussian, summing to 1; :meth:`kernel` is its outer product with itself."""
        r = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        g = torch.exp(-r**2 / (2 * self.sigma**2))
        return (g / g.sum()).to(dtype=dtype, device=device)

    def kernel(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``(kernel_size, kernel_size)`` kernel, summing to 1."""
        r = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        g = torch.exp(-r**2 / (2 * self.sigma**2))
        k = torch.outer(g, g)
        return (k / k.sum()).to(dtype=dtype, device=device)

    def _check_fits(self, x: torch.Tensor) -> None:
        if self.kernel_size // 2 >= min(x.shape[-2:]):
            raise ValueError(f"kernel_size={self.kernel_size} is too large for {tuple(x.shape[-2:])} images: reflect "
                             f"padding needs kernel_size // 2 < the image side.")

    def A(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "x")
        self._check_fits(x)
        pad = self.kernel_size // 2
        if self.separable:
            return _SeparableBlur.apply(x, self.kernel_1d(x.dtype, x.device), pad)
        weight = self.kernel(x.dtype, x.device).expand(3, 1, -1, -1)
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, groups=3)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_image(y, "y")
        if self.separable:
            self._check_fits(y)
            return _separable_blur_adjoint(y, self.kernel_1d(y.dtype, y.device), self.kernel_size // 2)
        with torch.enable_grad():
            _, vjp = torch.func.vjp(self.A, torch.zeros_like(y))
            return vjp(y)[0]

    def measure(self, x: torch.Tensor, sigma_y: float, generator: torch.Generator) -> torch.Tensor:
        """:math:`y = \mathcal{A}(x) + \sigma_y z`, ``z`` drawn on the CPU from ``generator``."""
        _check_measure(sigma_y, generator)
        y = self.A(x)
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return y + sigma_y * z


def _depthwise_1d(x: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """Valid correlation of every channel of ``x`` with the 1-D kernel ``g`` along ``dim`` (-1: columns, -2: rows)."""
    shape = (1, 1, 1, g.numel()) if dim == -1 else (1, 1, g.numel(), 1)
    return F.conv2d(x, g.view(shape).expand(x.shape[1], -1, -1, -1), groups=x.shape[1])


def _separable_blur(x: torch.Tensor, g: torch.Tensor, pad: int) -> torch.Tensor:
    # (1) reflect padding, (2) the 1-D Gaussian along rows, then along columns
    x = F.pad(x, (pad,) * 4, mode="reflect")
    return _depthwise_1d(_depthwise_1d(x, g, -1), g, -2)


def _separable_blur_adjoint(y: torch.Tensor, g: torch.Tensor, pad: int) -> torch.Tensor:
    # (1) the transposed valid correlations: full correlations with the flipped kernel, on y zero-padded by k - 1
    k = g.numel()
    u = _depthwise_1d(_depthwise_1d(F.pad(y, (k - 1,) * 4), g.flip(0), -2), g.flip(0), -1)
    # (2) the adjoint of reflect padding: each padded pixel's value is added back onto the pixel it mirrors
    return torch.ops.aten.reflection_pad2d_backward(u, y.new_empty(y.shape), [pad] * 4)


class _SeparableBlur(torch.autograd.Function):
    """``A`` of a separable :class:`GaussianBlur` whose backward pass is its exact adjoint, written out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: torch.Tensor, pad: int) -> torch.Tensor:
        ctx.save_for_backward(g)
        ctx.pad = pad
        return _separable_blur(x, g, pad)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (g,) = ctx.saved_tensors
        return _separable_blur_adjoint(grad, g, ctx.pad), None, None


class OperatorSet(dict):
    """The course's three tasks, ``{"box": ..., "random": ..., "blur": ...}`` (a ``dict``), and ``source``: which
    set they are and where their sizes come from, in one line (the notebooks print it)."""

    def __init__(self, operators: dict[str, Inpainting | GaussianBlur], source: str):
        super().__init__(operators)
        self.source = source


# DPS's FFHQ 256 x 256 experiments (github.com/DPS2022/diffusion-posterior-sampling, files at commit 4962d6e):
DPS_IMAGE_SIZE = 256
DPS_BOX_SIZE = 128              # configs/inpainting_config.yaml: mask_len_range (128, 129), "for box"
DPS_DROP_FRACTION_RANGE = (0.3, 0.7)   # configs/inpainting_config.yaml: mask_prob_range (0.3, 0.7), "for random"
DPS_BLUR_KERNEL_SIZE = 61       # configs/gaussian_deblur_config.yaml: kernel_size 61
DPS_BLUR_SIGMA = 3.0            # configs/gaussian_deblur_config.yaml: intensity 3.0 (the Gaussian's std in pixels)
COURSE_DROP_FRACTION = 0.7      # the course's random inpainting at every size: the top of DPS's range


def course_operators(image_size: int, seed: int = 0) -> OperatorSet:
    """The course's three inverse problems at ``image_size``: ``{"box": ..., "random": ..., "blur": ...}``, with
    ``.source`` saying which set it is.

    At 256 x 256 (the paper-scale models), DPS's FFHQ operators (Chung et al., 2022; their config files, cited at
    ``DPS_BOX_SIZE`` and below): a centred 128 x 128 box, 70 % of the pixels dropped at random (DPS draws a
    fraction from 30-70 % per image; the course fixes the top of that range, as at 32 x 32), and a 61 x 61 Gaussian
    blur with :math:`\sigma` = 3 px (computed separably, see :class:`GaussianBlur`).

    At any other size (the 32 x 32 embedded model), sizes relative to the image, as the notebooks have always used
    them: a centred box of 3/8 of the side (12 px at 32), 70 % of the pixels dropped, and a Gaussian blur with
    :math:`\sigma` = 1/32 of the side (1 px at 32) and a kernel of :math:`2 \lceil 3 \sigma \rceil + 1` taps (7
    at 32). Random masks are drawn from ``seed``. Reference: paper eq. 8, Sec. IV-C; notebooks 00, 05, 06.

    Deviations from DPS at 256: the box is centred (DPS places it at random, 16 px from the border at least); the
    random mask drops each pixel with probability 0.7 rather than exactly a drawn fraction.

    Raises ``ValueError`` unless ``image_size`` is an int >= 8.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (pixels per side); got {image_size!r}.")
    if image_size == DPS_IMAGE_SIZE:
        return OperatorSet({
            "box": box_inpainting(image_size, box_size=DPS_BOX_SIZE),
            "random": random_inpainting(image_size, drop_fraction=COURSE_DROP_FRACTION, seed=seed),
            "blur": GaussianBlur(kernel_size=DPS_BLUR_KERNEL_SIZE, sigma=DPS_BLUR_SIGMA, separable=True),
        }, source=f"DPS's FFHQ {DPS_IMAGE_SIZE}x{DPS_IMAGE_SIZE} operators (box {DPS_BOX_SIZE} px, blur "
                  f"{DPS_BLUR_KERNEL_SIZE}x{DPS_BLUR_KERNEL_SIZE} with sigma {DPS_BLUR_SIGMA:g} px, "
                  f"{COURSE_DROP_FRACTION:.0%} of pixels dropped; configs/inpainting_config.yaml, "
                  f"configs/gaussian_deblur_config.yaml)")
    sigma = image_size / 32
    return OperatorSet({
        "box": box_inpainting(image_size, box_size=image_size * 3 // 8),
        "random": random_inpainting(image_size, drop_fraction=COURSE_DROP_FRACTION, seed=seed),
        "blur": GaussianBlur(kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma),
    }, source=f"the course's operators, sized relative to the {image_size}x{image_size} image (box 3/8 of the side, "
              f"blur sigma 1/32 of the side, {COURSE_DROP_FRACTION:.0%} of pixels dropped)")
