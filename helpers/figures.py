"""The course's one grid plot, with metrics in its captions (the paper's figures: truth | measurement | estimate).

Plotting sits on top of :mod:`helpers.images` (the display conversion) and :mod:`helpers.metrics` (the captions'
numbers), so neither of those two needs the other.
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import torch

from helpers import _checks, metrics
from helpers.images import to_uint8


def caption(x: torch.Tensor, reference: torch.Tensor) -> str:
    """One panel caption: ``"PSNR 27.1 dB, LPIPS 0.123"`` (``"SSIM 0.871"`` when LPIPS is unavailable)."""
    text = f"PSNR {metrics.psnr(x, reference).item():.1f} dB"
    if metrics.lpips_available():
        return text + f", LPIPS {metrics.lpips(x, reference).item():.3f}"
    return text + f", SSIM {metrics.ssim(x, reference).item():.3f}"


def plot_grid(rows: Sequence[Sequence[torch.Tensor]] | torch.Tensor, row_titles: Sequence[str] | None = None,
              col_titles: Sequence[str] | None = None, references: Sequence[torch.Tensor | None] | None = None,
              captions: Sequence[Sequence[str]] | None = None, path: str | pathlib.Path | None = None,
              panel_size: float = 1.6, title: str | None = None):
    """Plot images in [-1, 1] as a grid, as in the paper's figures; return the matplotlib figure.

    ``rows``: a list of rows, each a list of images (``(3, H, W)`` or ``(1, 3, H, W)``), or a tensor
    ``(R, C, 3, H, W)`` or ``(N, 3, H, W)`` (then one row). ``references``: one ground truth per row (or
    ``None``); each panel of that row gets a :func:`caption` with PSNR and LPIPS (SSIM when LPIPS is unavailable)
    against it, except the reference itself. ``captions`` overrides the computed ones. Fixed display range
    [-1, 1] (no per-image stretching), nearest-neighbour upscaling, no ticks. Saved to ``path`` if given.
    """
    import matplotlib.pyplot as plt

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
        reference = (None if references is None or references[i] is None
                     else _checks.single_image(references[i], "references"))
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row) or row[j] is None:
                ax.axis("off")
                continue
            image = _checks.single_image(row[j], "rows")
            ax.imshow(to_uint8(image), interpolation="nearest", vmin=0, vmax=255)
            text = None
            if captions is not None and captions[i] is not None and j < len(captions[i]):
                text = captions[i][j]
            elif reference is not None and not torch.equal(image.cpu(), reference.cpu()):
                text = caption(image, reference)
            if text:
                ax.set_xlabel(text, fontsize=7)
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
