"""Test images, loading a learner's own image, range conversions and saving (the grid plot is in
:mod:`helpers.figures`).

Ranges: the model works in [-1, 1] ("model range"); display and metrics use [0, 1] ("unit range").
:func:`to_model_range` and :func:`to_unit_range` are the only places that convert between them.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from helpers import _checks


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data
        return getattr(skimage.data, name)()
    return load


def _matplotlib_sample(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook
        with Image.open(matplotlib.cbook.get_sample_data(filename)) as image:
            return np.asarray(image.convert("RGB"))
    return load


@dataclasses.dataclass(frozen=True)
class NamedImage:
    """A test image that ships inside an installed package, with a square crop that frames it."""

    load: Callable[[], np.ndarray]
    crop_box: tuple[int, int, int, int]  # left, top, right, bottom in the original pixels
    is_face: bool
    description: str


# Crops frame the faces like the training data (eye-aligned CelebA crops: the face fills a little over half
# the width, eyes slightly above the middle), so that the face model sees what it was trained on.
NAMED_IMAGES: dict[str, NamedImage] = {
    "astronaut": NamedImage(_skimage("astronaut"), (145, 35, 281, 171), True,
                            "Eileen Collins, NASA portrait (scikit-image), the course's test face"),
    "grace_hopper": NamedImage(_matplotlib_sample("grace_hopper.jpg"), (106, 50, 424, 368), True,
                               "Grace Hopper, US Navy portrait (matplotlib sample data)"),
    "chelsea": NamedImage(_skimage("chelsea"), (100, 0, 400, 300), False,
                          "Chelsea the cat (scikit-image): the out-of-distribution animal, in place of the "
                          "paper's red panda"),
    "coffee": NamedImage(_skimage("coffee"), (100, 0, 500, 400), False, "a cup of coffee (scikit-image)"),
    "rocket": NamedImage(_skimage("rocket"), (100, 0, 527, 427), False, "a rocket on its pad (scikit-image)"),
}


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (``2 x - 1``). ``x``: a floating-point tensor of any shape (8-bit images: ``x / 255``).

    Raises ``ValueError`` for a non-tensor, an integer tensor (``2 x - 1`` on bytes wraps around) or NaN or infinite
    values.
    """
    _checks.tensor(x, "x", shape="(..., H, W) in [0, 1]", ndim=None, channels=None)
    return x * 2 - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, for display and metrics. ``x``: a floating-point tensor of any shape.

    Raises ``ValueError`` for a non-tensor, an integer tensor or NaN or infinite values (a diverged sampler shows
    as an error, not as a black image).
    """
    _checks.tensor(x, "x", shape="(..., H, W) in [-1, 1]", ndim=None, channels=None)
    return ((x + 1) / 2).clamp(0, 1)


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL image (grayscale, 16-bit, float, palette, RGBA) -> (H, W, 3) uint8."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit files open as "I;16" (or as "I" in older Pillow); 8-bit-range "I" images are rare.
        top = 65535.0 if image.mode.startswith("I;16") or image.mode == "I" else 255.0
        if image.mode == "F":
            top = 1.0 if array.max() <= 1.0 else 255.0
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def centred_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square of a ``width`` x ``height`` image as a crop box (left, top, right, bottom)."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


MAX_SIZE = 1024  # load_image's largest size: 4 times the paper's 256 x 256 models, 12 MB as float32


def load_image(path_or_name: str | pathlib.Path, size: int = 32,
               crop_box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Load a named test image or any PNG/JPEG file as a ``(1, 3, size, size)`` tensor in [-1, 1].

    ``path_or_name``: a key of :data:`NAMED_IMAGES` (``"astronaut"``, ``"chelsea"``, ...) or a file path.
    Grayscale, 16-bit, palette and RGBA files (composited on white) are converted to RGB. The image is
    cropped to ``crop_box`` (left, top, right, bottom) if given, else to the named image's face-framing
    crop, else to its centred square; then resized with Lanczos filtering.

    Raises ``ValueError`` for an unknown name, a file that is not an image (or a truncated one, or a folder), a
    ``size`` outside ``[1, MAX_SIZE]`` or a ``crop_box`` that is not four integers inside the image;
    ``FileNotFoundError`` for a missing file.
    """
    _checks.integer(size, "size", 1, MAX_SIZE, hint="pixels per side, e.g. model.image_size")
    if crop_box is not None and (not isinstance(crop_box, (tuple, list)) or len(crop_box) != 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in crop_box)):
        raise ValueError(f"crop_box must be None or four integers (left, top, right, bottom) in pixels; got "
                         f"{crop_box!r}.")
    key = str(path_or_name)
    if key in NAMED_IMAGES:
        named = NAMED_IMAGES[key]
        array = named.load()
        image = Image.fromarray(array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2))
        box = crop_box or named.crop_box
    else:
        path = pathlib.Path(path_or_name)
        if not path.exists():
            if path.suffix == "" and "/" not in key:
                raise ValueError(f"path_or_name must be one of the named images {sorted(NAMED_IMAGES)} or an "
                                 f"image file; got {key!r}, which is neither.")
            raise FileNotFoundError(f"path_or_name: no such file {key!r}.")
        if not path.is_file():
            raise ValueError(f"path_or_name must be an image file; got {key!r}, which is a folder.")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = Image.fromarray(_to_rgb_uint8(opened))
        except UnidentifiedImageError as error:
            raise ValueError(f"path_or_name: {key!r} is not an image file PIL can read (PNG, JPEG, ...).") from error
        except (OSError, SyntaxError) as error:  # PIL: a truncated or corrupt file ("image file is truncated")
            raise ValueError(f"path_or_name: {key!r} is a damaged image file ({error}); save it again or use another "
                             f"one.") from error
        box = crop_box or centred_square(*image.size)
    left, top, right, bottom = box
    if not (0 <= left < right <= image.size[0] and 0 <= top < bottom <= image.size[1]):
        raise ValueError(f"crop_box must lie inside the {image.size[0]}x{image.size[1]} image as (left, top, right, "
                         f"bottom) with left < right and top < bottom; got {box}.")
    image = image.crop(box).resize((size, size), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255.0)
    return to_model_range(x)[None]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in [-1, 1] -> ``(H, W, 3)`` uint8 array (values clamped)."""
    x = _checks.single_image(x, "x")
    return (to_unit_range(x.detach().float().cpu()) * 255).round().byte().permute(1, 2, 0).numpy()


def to_pil(x: torch.Tensor) -> Image.Image:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in [-1, 1] -> PIL RGB image."""
    return Image.fromarray(to_uint8(x))


def save_image(x: torch.Tensor, path: str | pathlib.Path, scale: int = 1) -> pathlib.Path:
    """Save one image in [-1, 1] as PNG, optionally enlarged ``scale`` times with nearest-neighbour."""
    image = to_pil(x)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
