"""seed_everything: one call seeds everything and returns a generator."""
import random

import numpy as np
import pytest
import torch

from helpers.seeding import seed_everything


def test_same_seed_gives_the_same_draws_everywhere():
    def draws():
        generator = seed_everything(3)
        return (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())

    assert draws() == draws()


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        seed_everything(seed)


def test_seeded_global_rng_seeds_inside_and_restores_outside():
    from helpers.seeding import seeded_global_rng

    torch.manual_seed(3)
    outside = torch.rand(2)
    torch.manual_seed(3)
    with seeded_global_rng(11):
        inside = torch.rand(2)
    assert torch.equal(torch.rand(2), outside)
    with seeded_global_rng(11):
        assert torch.equal(torch.rand(2), inside)
    with pytest.raises(ValueError, match="seed must be a non-negative integer; got -1"):
        with seeded_global_rng(-1):
            pass
