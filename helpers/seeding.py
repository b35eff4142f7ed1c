"""Reproducibility in one call, and the one place in ``helpers`` that seeds a global generator."""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global generators and return a fresh CPU ``torch.Generator``.

    The course draws all its noise from the returned generator (on the CPU, then moved to the model's
    device), so a seed gives the same images on every device up to floating-point differences.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator with ``seed`` inside the ``with`` block only, and restore it afterwards.

    For code that draws from the global generator and takes no ``torch.Generator`` (diffusers' weight initialisation
    in :func:`helpers.train.train`): the draws depend on ``seed`` alone and the caller's random state is untouched.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
