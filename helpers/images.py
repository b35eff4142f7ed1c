"""Test images, loading a learner's own image, range conversions, saving, and the course's one grid plot.

Ranges: the model works in [-1, 1] ("model range"); display and metrics use [0, 1] ("unit range").
:func:`to_model_range` and :func:`to_unit_range` are the only places that convert between them.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


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
    """[0, 1] -> [-1, 1] (``2 x - 1``)."""
    return x * 2 - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, for display and metrics."""
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


def _centred_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def load_image(path_or_name: str | pathlib.Path, size: int = 32,
               crop_box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Load a named test image or any PNG/JPEG file as a ``(1, 3, size, size)`` tensor in [-1, 1].

    ``path_or_name``: a key of :data:`NAMED_IMAGES` (``"astronaut"``, ``"chelsea"``, ...) or a file path.
    Grayscale, 16-bit, palette and RGBA files (composited on white) are converted to RGB. The image is
    cropped to ``crop_box`` (left, top, right, bottom) if given, else to the named image's face-framing
    crop, else to its centred square; then resized with Lanczos filtering.

    Raises ``ValueError`` for an unknown name, a file that is not an image, or a bad ``size``/``crop_box``;
    ``FileNotFoundError`` for a missing file.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive integer number of pixels (e.g. model.image_size); got {size!r}.")
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
        try:
            with Image.open(path) as opened:
                opened.load()
                image = Image.fromarray(_to_rgb_uint8(opened))
        except UnidentifiedImageError as error:
            raise ValueError(f"path_or_name: {key!r} is not an image file PIL can read (PNG, JPEG, ...).") from error
        box = crop_box or _centred_square(*image.size)
    left, top, right, bottom = box
    if not (0 <= left < right <= image.size[0] and 0 <= top < bottom <= image.size[1]):
        raise ValueError(f"crop_box must lie inside the {image.size[0]}x{image.size[1]} image as (left, top, right, "
                         f"bottom) with left < right and top < bottom; got {box}.")
    image = image.crop(box).resize((size, size), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255.0)
    return to_model_range(x)[None]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` or ``(1, 3, H, W)`` tensor in [-1, 1] -> ``(H, W, 3)`` uint8 array (values clamped)."""
    x = _single(x, "x")
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


def _single(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor image of shape (3, H, W) or (1, 3, H, W); got "
                         f"{type(x).__name__}.")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, H, W) or (1, 3, H, W); got {tuple(x.shape)}.")
    return x


def plot_grid(rows: Sequence[Sequence[torch.Tensor]] | torch.Tensor, row_titles: Sequence[str] | None = None,
              col_titles: Sequence[str] | None = None, references: Sequence[torch.Tensor | None] | None = None,
              captions: Sequence[Sequence[str]] | None = None, path: str | pathlib.Path | None = None,
              panel_size: float = 1.6, title: str | None = None):
    """Plot images in [-1, 1] as a grid, as in the paper's figures; return the matplotlib figure.

    ``rows``: a list of rows, each a list of images (``(3, H, W)`` or ``(1, 3, H, W)``), or a tensor
    ``(R, C, 3, H, W)`` or ``(N, 3, H, W)`` (then one row). ``references``: one ground truth per row (or
    ``None``); each panel of that row gets a caption with PSNR and LPIPS (SSIM when LPIPS is unavailable)
    against it, except the reference itself. ``captions`` overrides the computed ones. Fixed display range
    [-1, 1] (no per-image stretching), nearest-neighbour upscaling, no ticks. Saved to ``path`` if given.
    """
    import matplotlib.pyplot as plt

    from helpers import metrics

    if isinstance(rows, torch.Tensor):
        rows = [list(rows)] if rows.ndim == 4 else [list(r) for r in rows]
    rows = [list(r) for r in rows]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    for name, titles, n, unit in (("row_titles", row_titles, n_rows, "row"), ("col_titles", col_titles, n_cols,
                                  "column"), ("references", references, n_rows, "row")):
        if titles is not None and len(titles) != n:
            raise ValueError(f"{name} must have {n} entries (one per {unit}); got {len(titles)}.")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_size * n_cols, panel_size * n_rows + 0.3),
                             squeeze=False)
    for i, row in enumerate(rows):
        reference = None if references is None or references[i] is None else _single(references[i], "references")
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row) or row[j] is None:
                ax.axis("off")
                continue
            image = _single(row[j], "rows")
            ax.imshow(to_uint8(image), interpolation="nearest", vmin=0, vmax=255)
            caption = None
            if captions is not None and captions[i] is not None and j < len(captions[i]):
                caption = captions[i][j]
            elif reference is not None and not torch.equal(image.cpu(), reference.cpu()):
                caption = metrics.caption(image, reference)
            if caption:
                ax.set_xlabel(caption, fontsize=7)
            if i == 0 and col_titles is not None:
                ax.set_title(col_titles[j], fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig
