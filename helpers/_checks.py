"""Argument checks of the public functions, one place per kind of check (private: notebooks never call these).

Each raises ``ValueError`` with a message that names the parameter, the value that came and what is allowed, so the
public functions validate their inputs in one line each and then read as the method they implement.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def integer(value, name: str, low: int, high: int | None = None, hint: str = "") -> int:
    """``value`` must be an ``int`` (not a ``bool``, not ``10.0``) in ``[low, high]`` (``high=None``: no bound)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        allowed = (f"an integer in [{low}, {high}]" if high is not None else
                   "a positive integer" if low == 1 else f"an integer >= {low}")
        raise ValueError(f"{name} must be {allowed}{f' ({hint})' if hint else ''}; got {value!r}.")
    return value


def number(value, name: str, allow_zero: bool, allow_inf: bool = False, hint: str = "") -> float:
    """``value`` must be a real number (not a ``bool``, not NaN), ``> 0`` (``>= 0`` if ``allow_zero``), and finite
    unless ``allow_inf``. Returns it unchanged."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value >= 0 if allow_zero else value > 0) and (allow_inf or math.isfinite(value))
    if not ok:
        allowed = f"{'>= 0' if allow_zero else '> 0'} {'(inf allowed)' if allow_inf else '(finite)'}"
        raise ValueError(f"{name} must be a number {allowed}{f' ({hint})' if hint else ''}; got {value!r}.")
    return value


def per_image(value, name: str, x: torch.Tensor, allow_zero: bool, allow_inf: bool) -> float | torch.Tensor:
    """A number (checked, returned as a float) or a ``(B,)`` tensor (checked, returned as ``(B, 1, 1, 1)`` in ``x``'s
    dtype and device), for ``B = x.shape[0]``.

    Numbers stay Python floats so that a step's arithmetic is the same as a loop written out with numbers, to the bit
    (notebook 06 checks its loops against the samplers that way).
    """
    batch = x.shape[0]
    if not isinstance(value, torch.Tensor):
        return float(number(value, name, allow_zero=allow_zero, allow_inf=allow_inf))
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != batch) or not value.dtype.is_floating_point:
        raise ValueError(f"{name} must be a number or a floating-point tensor of shape ({batch},), one value per "
                         f"image; got a {value.dtype} tensor of shape {tuple(value.shape)}.")
    bad = torch.isnan(value) | (value < 0 if allow_zero else value <= 0)
    if not allow_inf:
        bad = bad | torch.isinf(value)
    if bad.any():
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}{' (inf allowed)' if allow_inf else ''} "
                         f"for every image; got {value.tolist()}.")
    return value.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)


def generator(value, batch: int) -> None:
    """``value`` must be a ``torch.Generator`` or a list (or tuple) of ``batch`` of them, one per image."""
    if isinstance(value, torch.Generator):
        return
    if (not isinstance(value, (list, tuple)) or len(value) != batch
            or not all(isinstance(g, torch.Generator) for g in value)):
        got = (f"a {type(value).__name__} of {len(value)}" if isinstance(value, (list, tuple))
               else f"{value!r}" if isinstance(value, (int, float, str, type(None))) else type(value).__name__)
        raise ValueError(f"generator must be a torch.Generator (e.g. seeding.seed_everything(seed)) or a list of "
                         f"{batch} of them, one per image; got {got}.")


def one_of(value, name: str, allowed: Sequence, hint: str = "") -> None:
    """``value`` must be one of ``allowed`` (compared with ``==``; ``True`` is not ``1``)."""
    if isinstance(value, bool) and not any(a is value for a in allowed) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}{f' ({hint})' if hint else ''}; "
                         f"got {value!r}.")


def tensor(x, name: str, shape: str = "(B, 3, H, W)", ndim: int | None = 4, channels: int | None = 3,
           size: int | None = None, finite: bool = True, max_abs: float | None = None, fix: str = "") -> torch.Tensor:
    """``x`` must be a floating-point tensor of ``ndim`` dimensions with ``channels`` in dimension 1 and ``size`` x
    ``size`` pixels (each ``None``: any), finite if ``finite``, and within ``[-max_abs, max_abs]`` if given.

    ``shape`` says the expected shape in the message; ``fix`` is appended to it (how to get a right input).
    """
    fix = f" {fix}" if fix else ""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {shape}; got {type(x).__name__}.{fix}")
    if ((ndim is not None and x.ndim != ndim) or (channels is not None and (x.ndim < 2 or x.shape[1] != channels))
            or (size is not None and tuple(x.shape[-2:]) != (size, size))):
        raise ValueError(f"{name} must have shape {shape}; got {tuple(x.shape)}.{fix}")
    if not x.dtype.is_floating_point:
        if channels in (3, None):   # images
            raise ValueError(f"{name} must be a floating-point tensor (model-range images are float); got dtype "
                             f"{x.dtype}. Convert 8-bit images with images.to_model_range(x / 255).")
        raise ValueError(f"{name} must be a floating-point tensor of shape {shape}; got dtype {x.dtype}.")
    if finite and x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite; got {int((~torch.isfinite(x)).sum())} NaN or infinite values.")
    if max_abs is not None and x.numel() and x.abs().max() > max_abs:
        raise ValueError(f"{name} must be in the model range [-1, 1] (a little beyond is fine for noisy measurements, "
                         f"up to +-{max_abs:g}); got values in [{x.min().item():.3g}, {x.max().item():.3g}]. Use "
                         f"images.to_model_range() for [0, 1] images.")
    return x


def same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, why: str = "") -> None:
    """``a`` and ``b`` must have the same shape (no broadcasting)."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} must have the shape of {name_b}, {tuple(b.shape)}{f' ({why})' if why else ''}; "
                         f"got {tuple(a.shape)}.")


def single_image(x, name: str) -> torch.Tensor:
    """``x`` must be one image, ``(3, H, W)`` or ``(1, 3, H, W)``; returns it as ``(3, H, W)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor image of shape (3, H, W) or (1, 3, H, W); got "
                         f"{type(x).__name__}.")
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, H, W) or (1, 3, H, W); got {tuple(x.shape)}.")
    return x
