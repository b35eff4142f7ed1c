"""The paper-scale 256 x 256 face models: their architectures (buildable at any width), files and loaders.

- ``ffhq256``: the DPS checkpoint ``ffhq_10m.pt`` (Chung et al., 2022), an ADM U-Net (guided-diffusion, Dhariwal &
  Nichol 2021) trained on FFHQ with a learned variance, so 6 output channels of which the first 3 are
  :math:`\\epsilon_\\theta`. Mirrored by deepinv as ``deepinv/diffunet`` / ``diffusion_ffhq_10m.pt``. Built here from
  deepinv's blocks of that architecture (the ones ``deepinv.models.DiffUNet`` is made of), with the width a
  parameter; ``tests/test_paper_models.py`` checks it against ``DiffUNet`` itself.
- ``celebahq256``: ``google/ddpm-celebahq-256`` (Ho et al., 2020, as converted to diffusers), a diffusers
  ``UNet2DModel``, :math:`\\epsilon`-prediction.

Both use the paper's schedule (linear :math:`\\beta` from 1e-4 to 0.02, T = 1000, eq. 3) and the course's timestep
convention (index ``t`` in ``0..999``, as in DPS's code with ``rescale_timesteps=False`` and in diffusers).
:func:`helpers.models.load_model` fetches, verifies and wraps them; the benchmark builds the same architectures with
random weights (:func:`build_adm_unet`, :func:`build_ddpm_unet`).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import torch
from torch import nn

from helpers.download import RemoteFile


# ---- ffhq256: the ADM U-Net of DPS's FFHQ checkpoint ----

@dataclasses.dataclass(frozen=True)
class ADMConfig:
    """The hyperparameters of guided-diffusion's ``UNetModel`` that set its shape.

    Defaults: DPS's ``configs/model_config.yaml`` for ``ffhq_10m.pt`` (image_size 256, num_channels 128,
    num_res_blocks 1, attention_resolutions 16, num_head_channels 64, learn_sigma True, resblock_updown True,
    use_scale_shift_norm True, channel_mult "" which guided-diffusion turns into (1, 1, 2, 2, 4, 4) at 256), the same
    as ``deepinv.models.DiffUNet(large_model=False)``. ``attention_ds``: the downsampling factors at which blocks
    have self-attention (guided-diffusion's ``image_size // attention_resolution``: 256 // 16 = 16).
    ``out_channels``: 6 with a learned variance (:math:`\\epsilon` then the variance interpolation ``v``).
    """

    image_size: int = 256
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 1
    attention_ds: tuple[int, ...] = (16,)
    num_head_channels: int = 64
    out_channels: int = 6

    def __post_init__(self) -> None:
        levels = len(self.channel_mult)
        if self.model_channels < 32 or self.model_channels % 32:
            raise ValueError(f"model_channels must be a positive multiple of 32 (the blocks' GroupNorm has 32 "
                             f"groups); got {self.model_channels}.")
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size must be divisible by 2**(len(channel_mult) - 1) = {2 ** (levels - 1)} "
                             f"(one halving per level); got {self.image_size}.")
        channels_at = {2 ** level: self.model_channels * mult for level, mult in enumerate(self.channel_mult)}
        if not set(self.attention_ds) <= set(channels_at):
            raise ValueError(f"attention_ds must hold downsampling factors of the levels, {sorted(channels_at)}; got "
                             f"{self.attention_ds}.")
        for ds in (*self.attention_ds, 2 ** (levels - 1)):  # the middle block has attention too
            if channels_at[ds] % self.num_head_channels:
                raise ValueError(f"num_head_channels={self.num_head_channels} must divide the {channels_at[ds]} "
                                 f"channels of the attention block at downsampling factor {ds}.")


class ADMUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (unconditional, as DPS uses it), from deepinv's blocks.

    ``forward(x, t)``: ``x`` ``(B, 3, S, S)`` in [-1, 1], ``t`` ``(B,)`` integer timesteps in ``[0, 1000)`` (the raw
    network, no rescaling: ``deepinv.models.DiffUNet.forward_diffusion``); returns ``(B, out_channels, S, S)``.
    Parameter names are those of guided-diffusion and ``DiffUNet``, so their state dicts load strictly.
    """

    def __init__(self, config: ADMConfig):
        # deepinv is imported here, not with the module: it takes seconds, and only the 256 x 256 models need it
        from deepinv.models.diffunet import (AttentionBlock, ResBlock, TimestepEmbedSequential, normalization,
                                             timestep_embedding, zero_module)
        from deepinv.models.utils import conv_nd

        super().__init__()
        self.config = config
        self.timestep_embedding = timestep_embedding  # sinusoidal embedding of t, as in guided-diffusion
        mc, dropout = config.model_channels, 0.0  # dropout only acts in training; DPS's config has 0

        def res_block(channels: int, out: int, **updown: bool) -> nn.Module:
            return ResBlock(channels, 4 * mc, dropout, out_channels=out, dims=2, use_checkpoint=False,
                            use_scale_shift_norm=True, **updown)

        def attention(channels: int) -> nn.Module:
            return AttentionBlock(channels, use_checkpoint=False, num_heads=-1,
                                  num_head_channels=config.num_head_channels, use_new_attention_order=False)

        self.time_embed = nn.Sequential(nn.Linear(mc, 4 * mc), nn.SiLU(), nn.Linear(4 * mc, 4 * mc))
        # encoder: per level, num_res_blocks res blocks (+ attention), then a res block that halves the size
        ch = mc * config.channel_mult[0]
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_nd(2)(3, ch, 3, padding=1))])
        skip_channels, ds = [ch], 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [res_block(ch, mc * mult)]
                ch = mc * mult
                if ds in config.attention_ds:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(res_block(ch, ch, down=True)))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), attention(ch), res_block(ch, ch))
        # decoder: per level, num_res_blocks + 1 res blocks on [h, skip] (+ attention), then one that doubles the size
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), mc * mult)]
                ch = mc * mult
                if ds in config.attention_ds:
                    layers.append(attention(ch))
                if level and i == config.num_res_blocks:
                    layers.append(res_block(ch, ch, up=True))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(conv_nd(2)(mc * config.channel_mult[0], config.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(self.timestep_embedding(t, self.config.model_channels))
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


class EpsilonOfLearnedSigma(nn.Module):
    """An ADM U-Net with a learned variance seen as an :math:`\\epsilon`-predictor: the first 3 of its 6 output
    channels (guided-diffusion's ``model_output, model_var_values = split(model_output, C, dim=1)``).

    ``forward(x, t)`` returns diffusers' ``UNet2DOutput`` (``.sample``), like a ``UNet2DModel``, so that
    :class:`helpers.models.DiffusionModel` calls every checkpoint the same way (and ``torch.compile`` traces it).

    Deviation from DPS's code: the variance channels are unused. The course's samplers fix :math:`\\sigma_t^2`
    (``beta`` as in the paper's pseudocode, or ``beta_tilde``); DPS's code samples with the learned variance
    (``model_var_type: learned_range`` in its ``configs/diffusion_config.yaml``).
    """

    def __init__(self, adm: ADMUNet):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        super().__init__()
        self.output_type = UNet2DOutput
        if adm.config.out_channels != 6:
            raise ValueError(f"the ADM U-Net must have 6 output channels (eps and the learned variance); got "
                             f"{adm.config.out_channels}.")
        self.adm = adm

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        return self.output_type(sample=self.adm(x, t)[:, :3])


def build_adm_unet(config: ADMConfig) -> ADMUNet:
    """The ADM U-Net of ``config`` with random (PyTorch default) weights, in eval mode: for benchmarks and tests."""
    return ADMUNet(config).eval()


def load_adm_checkpoint(path: str | pathlib.Path, config: ADMConfig) -> ADMUNet:
    """The ADM U-Net of ``config`` with the state dict in ``path`` (a ``torch.save`` of guided-diffusion's
    ``state_dict()``, like ``ffhq_10m.pt``), loaded strictly, in eval mode, on the CPU.

    Raises ``RuntimeError`` if the file cannot be read or if any parameter is missing, unexpected or of another
    shape (the checkpoint is of another architecture): never a partly random network.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as error:  # pickle errors surface as these
        raise RuntimeError(f"could not read the ADM checkpoint {path}: {error}") from error
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} must hold a state dict (name -> tensor); got a {type(state).__name__}.")
    adm = ADMUNet(config)
    try:
        adm.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"the weights in {path} do not fit the ADM U-Net of {config}: {error}") from error
    return adm.eval()


# ---- celebahq256: diffusers' UNet2DModel ----

def build_ddpm_unet(config: dict) -> nn.Module:
    """A diffusers ``UNet2DModel`` of ``config`` (its ``config.json`` keys) with random weights, in eval mode."""
    from diffusers import UNet2DModel

    return UNet2DModel(**config).eval()


def check_ddpm_config(folder: str | pathlib.Path, expected: dict) -> None:
    """Check that ``folder/config.json`` describes the architecture ``expected`` (every key of ``expected`` with the
    same value), so that the benchmark's random-weight model is the one that is loaded. Raises ``RuntimeError``."""
    path = pathlib.Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RuntimeError(f"could not read {path}: {error}") from error
    normalise = lambda value: list(value) if isinstance(value, (list, tuple)) else value  # noqa: E731
    different = {key: (config.get(key, "<absent>"), value) for key, value in expected.items()
                 if normalise(config.get(key, "<absent>")) != normalise(value)}
    if different:
        raise RuntimeError(f"{path} describes another architecture than the course expects; (found, expected) per "
                           f"key: {different}.")


# ---- the two checkpoints: architecture and files ----

@dataclasses.dataclass(frozen=True)
class PaperCheckpoint:
    """What :func:`helpers.models.load_model` needs to fetch and build one paper-scale model.

    ``architecture``: an :class:`ADMConfig` (``ffhq256``) or a ``UNet2DModel`` config dict (``celebahq256``);
    ``files``: the hub files, all from one repository at one commit (the weights file last).
    """

    name: str
    image_size: int
    architecture: ADMConfig | dict
    files: tuple[RemoteFile, ...]

    @property
    def weights(self) -> RemoteFile:
        return self.files[-1]


# Pinned values and where they come from. Established offline from stored copies of the hub's pages (no network here):
# - deepinv/diffunet: main is commit 6b0a2cf45decab1f022d22eefe3787d9d515f32b ("Upload diffusion_openai.pt", the
#   repository's 3rd and last commit); diffusion_ffhq_10m.pt was added in its parent 57178e9f4ddfa931018774cccb7ccffe4ac969b5,
#   whose diff shows the LFS pointer "oid sha256:81d5357...faa, size 374417833", and not changed since.
# - google/ddpm-celebahq-256: main is commit cd5c944777ea2668051904ead6cc120739b86c4d ("Update README.md", 13
#   commits; the full hash as recorded in the cache path of a config.json saved from it). diffusion_pytorch_model.bin
#   was last changed in 03d0f408f283b62a881f06bdbd9377aa83c825ce ("convert weights"); its LFS sha256 is efff8971...361d
#   (the hub's blob page). Its exact size in bytes is NOT known offline (the hub shows "455 MB"): size=None, so the
#   download is checked against the hub's Content-Length and sha256. config.json is 790 bytes (not LFS, so no
#   sha256 record; after a download it is checked against the hub's git blob sha1, and its content against
#   CELEBAHQ256_ARCHITECTURE on every load).
# On a machine with network, confirm with: huggingface_hub.HfApi().get_paths_info(repo_id, [filename], revision=...).
FFHQ256_ARCHITECTURE = ADMConfig()
FFHQ256 = PaperCheckpoint(
    name="ffhq256", image_size=256, architecture=FFHQ256_ARCHITECTURE,
    files=(RemoteFile(repo_id="deepinv/diffunet", filename="diffusion_ffhq_10m.pt",
                      revision="6b0a2cf45decab1f022d22eefe3787d9d515f32b", size=374417833,
                      sha256="81d535743156ec6be34d8668e6920da94f0614074d7793a16c8fa9e306237faa", in_torch_hub=True),))

# google/ddpm-celebahq-256's config.json (the keys that set the architecture), as on the hub and in configs saved
# from it; the same as google/ddpm-cat-256's.
CELEBAHQ256_ARCHITECTURE = dict(
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0, flip_sin_to_cos=False,
    freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-06, norm_num_groups=32, time_embedding_type="positional",
)
_CELEBAHQ_REVISION = "cd5c944777ea2668051904ead6cc120739b86c4d"
CELEBAHQ256 = PaperCheckpoint(
    name="celebahq256", image_size=256, architecture=CELEBAHQ256_ARCHITECTURE,
    files=(RemoteFile(repo_id="google/ddpm-celebahq-256", filename="config.json", revision=_CELEBAHQ_REVISION,
                      size=790, sha256=None),
           RemoteFile(repo_id="google/ddpm-celebahq-256", filename="diffusion_pytorch_model.bin",
                      revision=_CELEBAHQ_REVISION, size=None, approx_size="455 MB",
                      sha256="efff89712093ad060ce99d9b461bbe542b49d8dd4ce30f23fe5761dca292361d")))
