"""Pretrained diffusion models and the paper's quantities computed from them: eps, score and x0_hat.

``load_model("faces")`` loads the course's embedded 32 x 32 face model, which ships inside this package.
Every model, whatever its checkpoint format, is wrapped in :class:`DiffusionModel`, so notebooks run
unchanged with any of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import warnings

import torch

from helpers.schedule import Schedule, check_timestep, linear_schedule

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
EMBEDDED_MODEL_DIR = WEIGHTS_DIR / "faces32"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CHECKSUM_FILE = "SHA256SUMS"


@dataclasses.dataclass(frozen=True, eq=False)
class DiffusionModel:
    """An epsilon-predicting network with its noise schedule.

    Attributes: ``name``, ``unet`` (a diffusers ``UNet2DModel`` in eval mode), ``schedule``
    (:class:`helpers.schedule.Schedule`: ``beta``, ``alpha``, ``alpha_bar`` on ``device``, float64),
    ``image_size`` (pixels per side), ``device``.
    """

    name: str
    unet: torch.nn.Module
    schedule: Schedule
    image_size: int
    device: torch.device

    # Shortcuts that read like the paper: model.alpha_bar[t] is the code's alpha_bar at index t.
    @property
    def beta(self) -> torch.Tensor:
        return self.schedule.beta

    @property
    def alpha(self) -> torch.Tensor:
        return self.schedule.alpha

    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.schedule.alpha_bar

    @property
    def T(self) -> int:
        return self.schedule.T

    def _check(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor):
            raise ValueError(f"x_t must be a torch.Tensor of shape (B, 3, {self.image_size}, {self.image_size}); "
                             f"got {type(x_t).__name__}.")
        if x_t.ndim != 4 or x_t.shape[1] != 3 or tuple(x_t.shape[2:]) != (self.image_size,) * 2:
            raise ValueError(f"x_t must have shape (B, 3, {self.image_size}, {self.image_size}) for model "
                             f"{self.name!r}; got shape {tuple(x_t.shape)}. Use images.load_image(..., "
                             f"size={self.image_size}) to resize.")
        if not x_t.dtype.is_floating_point:
            raise ValueError(f"x_t must be a floating-point tensor in model range; got dtype {x_t.dtype}.")
        return check_timestep(t, self.T, batch=x_t.shape[0]).to(x_t.device)

    def eps(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The network's noise prediction :math:`\\epsilon_\\theta(x_t, t)` (paper eq. 4).

        ``x_t``: ``(B, 3, S, S)`` on ``self.device``; ``t``: int or ``(B,)`` integer tensor in ``[0, T)``.
        Returns a tensor of the same shape and dtype as ``x_t``. Gradients flow if ``x_t`` requires them.
        """
        t = self._check(x_t, t)
        dtype = next(self.unet.parameters()).dtype
        return self.unet(x_t.to(dtype), t).sample.to(x_t.dtype)

    def score(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The score :math:`s_\\theta(x_t, t) = -\\epsilon_\\theta(x_t, t) / \\sqrt{1 - \\bar\\alpha_t}`.

        Reference: the relation below paper eq. 4; notebook 02.
        """
        t = self._check(x_t, t)
        one_minus_alpha_bar = (1 - self.alpha_bar[t]).to(x_t.dtype).view(-1, 1, 1, 1)
        return -self.eps(x_t, t) / one_minus_alpha_bar.sqrt()

    def x0_hat(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Single-step estimate of the clean image (Tweedie's formula, paper eq. 6).

        .. math:: \\hat x_0 = \\frac{1}{\\sqrt{\\bar\\alpha_t}} \\left(x_t + (1 - \\bar\\alpha_t) s_\\theta(x_t, t)\\right)

        Reference: paper eq. 6; notebooks 02-03. Not clipped to [-1, 1] (the samplers say where they clip).
        """
        t = self._check(x_t, t)
        alpha_bar_t = self.alpha_bar[t].view(-1, 1, 1, 1)  # float64: 1 - alpha_bar_t keeps its digits near t = 0
        return (x_t + (1 - alpha_bar_t).to(x_t.dtype) * self.score(x_t, t)) / alpha_bar_t.sqrt().to(x_t.dtype)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` gives CUDA if available, then Apple's MPS, then the CPU; anything else is checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} was asked for, but no CUDA GPU is available here. Use "
                           f"device='auto' or 'cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={str(device)!r} was asked for, but MPS is not available here. Use "
                           f"device='auto' or 'cpu'.")
    return device


def sha256_of(path: str | pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(folder: str | pathlib.Path) -> str:
    """Record the sha256 of a diffusers folder's weights in ``folder/SHA256SUMS``; return it."""
    folder = pathlib.Path(folder)
    digest = sha256_of(folder / WEIGHTS_FILE)
    (folder / CHECKSUM_FILE).write_text(f"{digest}  {WEIGHTS_FILE}\n")
    return digest


def load_unet_folder(folder: str | pathlib.Path, device: torch.device) -> torch.nn.Module:
    """Load a diffusers ``UNet2DModel`` folder (config.json + safetensors), verified, in eval mode.

    Raises ``FileNotFoundError`` if a file is missing and ``RuntimeError`` if the weights do not match the
    checksum in ``SHA256SUMS`` (when present) or cannot be read. Never returns random weights.
    """
    from diffusers import UNet2DModel

    folder = pathlib.Path(folder)
    for required in ("config.json", WEIGHTS_FILE):
        if not (folder / required).is_file():
            raise FileNotFoundError(f"model folder {str(folder)!r} has no {required!r}. The embedded model "
                                    f"ships with the course in helpers/weights/faces32; reinstall the package "
                                    f"(pip install -e .) or restore the file from git.")
    checksum_file = folder / CHECKSUM_FILE
    if checksum_file.is_file():
        expected = checksum_file.read_text().split()[0]
        actual = sha256_of(folder / WEIGHTS_FILE)
        if actual != expected:
            raise RuntimeError(f"{folder / WEIGHTS_FILE} is corrupt: sha256 {actual[:16]}... does not match "
                               f"{expected[:16]}... recorded in {CHECKSUM_FILE}. Restore it from git "
                               f"(git checkout -- {folder}).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            unet, info = UNet2DModel.from_pretrained(folder, low_cpu_mem_usage=False, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise RuntimeError(f"could not load the diffusers model in {str(folder)!r}: {error}") from error
    # diffusers only warns about weights missing from the file and leaves them uninitialised: refuse instead.
    problems = {key: value for key, value in info.items() if value}
    if problems:
        raise RuntimeError(f"the weights in {str(folder)!r} do not match its config.json: {problems}. The "
                           f"checkpoint is incomplete or from another architecture; restore it from git.")
    return unet.to(device).eval().requires_grad_(False)


def _load_faces(device: torch.device) -> DiffusionModel:
    return load_model_from_folder(EMBEDDED_MODEL_DIR, name="faces", device=device)


# The registry: model name -> function that loads it (paper-scale 256 x 256 models join later).
MODELS = {
    "faces": _load_faces,
}


def load_model(name: str = "auto", device: str | torch.device = "auto") -> DiffusionModel:
    """Load a pretrained diffusion model by name and wrap it as a :class:`DiffusionModel`.

    ``name``: ``"faces"`` (the embedded 32 x 32 face model, CPU-friendly) or ``"auto"``, which picks the
    embedded model (the only one available offline). ``device``: ``"auto"`` (CUDA, then MPS, then CPU),
    ``"cpu"``, ``"cuda"``, ... Raises ``ValueError`` for an unknown name and ``FileNotFoundError`` or
    ``RuntimeError`` for a missing or corrupt checkpoint.
    """
    if name == "auto":
        name = "faces"
    if name not in MODELS:
        raise ValueError(f"name must be one of {['auto', *MODELS]}; got {name!r}.")
    return MODELS[name](pick_device(device))


def load_model_from_folder(folder: str | pathlib.Path, name: str | None = None,
                           device: str | torch.device = "auto") -> DiffusionModel:
    """Wrap any diffusers ``UNet2DModel`` folder (epsilon-prediction, linear betas, T = 1000), e.g. a training
    run's ``ema/`` folder, the same way as the embedded model."""
    device = pick_device(device)
    unet = load_unet_folder(folder, device)
    return DiffusionModel(name=name or pathlib.Path(folder).name, unet=unet, schedule=linear_schedule(device=device),
                          image_size=int(unet.config.sample_size), device=device)
