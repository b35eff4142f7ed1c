"""Numerical checks that print one stable line and raise on failure (Karpathy's ``cmp()``, enforcing)."""
from __future__ import annotations

import torch


def check_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5,
                atol: float = 1e-8) -> float:
    """Compare two tensors elementwise: ``|actual - expected| <= atol + rtol * |expected|``.

    Prints ``"ok    name: max abs error 1.2e-07 (tolerance atol=1e-08, rtol=1e-05), shape (4, 3, 32, 32)"``
    and returns the maximum absolute error; raises ``AssertionError`` with the same line if it fails.
    """
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"FAIL  {name}: shapes differ, {tuple(actual.shape)} vs {tuple(expected.shape)}")
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    error = (actual - expected).abs()
    max_error = float(error.max()) if error.numel() else 0.0
    passed = bool((error <= atol + rtol * expected.abs()).all())
    line = (f"{'ok  ' if passed else 'FAIL'}  {name}: max abs error {max_error:.1e} (tolerance atol={atol:g}, "
            f"rtol={rtol:g}), shape {tuple(actual.shape)}")
    if not passed:
        raise AssertionError(line)
    print(line)
    return max_error
