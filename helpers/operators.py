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


def _check_image(x: torch.Tensor, name: str, size: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, 3, H, W); got {type(x).__name__}.")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W); got {tuple(x.shape)}.")
    if size is not None and tuple(x.shape[2:]) != (size, size):
        raise ValueError(f"{name} must be {size}x{size} pixels for this operator; got shape {tuple(x.shape)}.")


def _check_sigma_y(sigma_y: float) -> None:
    if not isinstance(sigma_y, (int, float)) or isinstance(sigma_y, bool) or not sigma_y >= 0:
        raise ValueError(f"sigma_y must be a number >= 0 (noise std in [-1, 1] image units, e.g. 0.05); "
                         f"got {sigma_y!r}.")


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
        _check_sigma_y(sigma_y)
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
    :math:`\\mathcal{A}^H`); it is checked against :math:`\\langle \\mathcal{A}x, y\\rangle =
    \\langle x, \\mathcal{A}^H y\\rangle` in the tests and in notebook 00.
    """

    kernel_size: int = 7
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.kernel_size, int) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer; got {self.kernel_size!r}.")
        if not isinstance(self.sigma, (int, float)) or not self.sigma > 0:
            raise ValueError(f"sigma must be a positive number of pixels; got {self.sigma!r}.")

    @property
    def name(self) -> str:
        return f"Gaussian blur ({self.kernel_size}x{self.kernel_size}, sigma={self.sigma:g} px)"

    def kernel(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``(kernel_size, kernel_size)`` kernel, summing to 1."""
        r = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        g = torch.exp(-r**2 / (2 * self.sigma**2))
        k = torch.outer(g, g)
        return (k / k.sum()).to(dtype=dtype, device=device)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "x")
        pad = self.kernel_size // 2
        if pad >= min(x.shape[-2:]):
            raise ValueError(f"kernel_size={self.kernel_size} is too large for {tuple(x.shape[-2:])} images: reflect "
                             f"padding needs kernel_size // 2 < the image side.")
        weight = self.kernel(x.dtype, x.device).expand(3, 1, -1, -1)
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, groups=3)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_image(y, "y")
        with torch.enable_grad():
            _, vjp = torch.func.vjp(self.A, torch.zeros_like(y))
            return vjp(y)[0]

    def measure(self, x: torch.Tensor, sigma_y: float, generator: torch.Generator) -> torch.Tensor:
        """:math:`y = \\mathcal{A}(x) + \\sigma_y z`, ``z`` drawn on the CPU from ``generator``."""
        _check_sigma_y(sigma_y)
        y = self.A(x)
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return y + sigma_y * z


def course_operators(image_size: int, seed: int = 0) -> dict[str, Inpainting | GaussianBlur]:
    """The course's three inverse problems at ``image_size``: ``{"box": ..., "random": ..., "blur": ...}``.

    Sizes are relative to the image, so a task is the same for the 32 x 32 embedded model and the 256 x 256 models:
    a centred box of 3/8 of the side (12 px at 32, 96 px at 256), 70 % of the pixels dropped at random (mask drawn
    from ``seed``), and a Gaussian blur with :math:`\\sigma` = 1/32 of the side (1 px at 32, 8 px at 256) and a
    kernel of :math:`2 \\lceil 3 \\sigma \\rceil + 1` taps (7 at 32, 49 at 256). Reference: paper eq. 8, Sec. IV-C;
    notebooks 00, 05, 06.

    Raises ``ValueError`` unless ``image_size`` is an int >= 8.
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (pixels per side); got {image_size!r}.")
    sigma = image_size / 32
    return {
        "box": box_inpainting(image_size, box_size=image_size * 3 // 8),
        "random": random_inpainting(image_size, drop_fraction=0.7, seed=seed),
        "blur": GaussianBlur(kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma),
    }
