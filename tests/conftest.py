"""Shared fixtures: the CPU device and a tiny random diffusers U-Net saved as a checkpoint folder."""
from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # no display in tests
torch.set_num_threads(1)  # the test machine is small and often busy

# Small enough to run in milliseconds on a CPU, with the same structure as the course's model.
TINY_UNET_CONFIG = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")


@pytest.fixture
def tiny_unet_config() -> dict:
    return dict(TINY_UNET_CONFIG)


@pytest.fixture(scope="session")
def tiny_unet():
    """A randomly initialised (seeded) tiny ``UNet2DModel`` in eval mode."""
    from diffusers import UNet2DModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DModel(**TINY_UNET_CONFIG)
    return unet.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_unet_dir(tiny_unet, tmp_path_factory):
    """``tiny_unet`` saved with ``save_pretrained``, with its ``SHA256SUMS`` written by ``write_checksum``."""
    from helpers.models import write_checksum

    folder = tmp_path_factory.mktemp("tiny_unet")
    tiny_unet.save_pretrained(folder)
    write_checksum(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_unet_dir):
    """The tiny U-Net loaded back as a :class:`helpers.models.DiffusionModel` on the CPU."""
    from helpers.models import load_model_from_folder

    return load_model_from_folder(tiny_unet_dir, name="tiny", device="cpu")


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """Every cache location of helpers.download under tmp_path, downloads allowed, and no network: both hub calls
    fail the test. Modules that touch the caches use it for every test (``pytestmark``)."""
    import huggingface_hub

    from helpers import download

    for name in ("COURSE_CACHE_DIR", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"a network call was made: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    monkeypatch.setattr(download, "hub_reachable", no_network)
