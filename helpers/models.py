"""Pretrained diffusion models and the paper's quantities computed from them: eps, score and x0_hat.

``load_model("faces")`` loads the course's embedded 32 x 32 face model, which ships inside this package;
``load_model("ffhq256")`` (the paper's DPS checkpoint) and ``load_model("celebahq256")`` load the 256 x 256 face
models, downloaded once per machine and verified (:mod:`helpers.download`, :mod:`helpers.paper_models`).
Every model, whatever its checkpoint format, is wrapped in :class:`DiffusionModel`, so notebooks run
unchanged with any of them.
"""
from __future__ import annotations

import dataclasses
import pathlib
import warnings

import torch

from helpers import _checks, download, paper_models
from helpers.download import sha256_of
from helpers.schedule import Schedule, check_timestep, linear_schedule

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
EMBEDDED_MODEL_DIR = WEIGHTS_DIR / "faces32"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
LEGACY_WEIGHTS_FILE = "diffusion_pytorch_model.bin"  # diffusers' pickle format, e.g. google/ddpm-celebahq-256
CHECKSUM_FILE = "SHA256SUMS"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class ScoreModel:
    """What every model of the course shares: the schedule read like the paper and the quantities of eqs. 4-6, written
    once for :class:`DiffusionModel` (a trained network) and :class:`helpers.mixture.MixtureModel` (the exact score).

    A subclass holds ``schedule`` and defines ``_check(x_t, t)`` (checks the public call's arguments, returns ``t`` as
    a ``(B,)`` long tensor) and one of ``_eps`` or ``_score``, the unchecked forms for a ``t`` already checked; the
    other follows from the relation below eq. 4. So each public call checks its arguments once, not once per layer.
    """

    schedule: Schedule

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

    def eps(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The noise prediction :math:`\\epsilon_\\theta(x_t, t)`: the estimate of eq. 3's noise ``z`` in ``x_t`` that
        drives the reverse step (paper eq. 4).

        ``x_t``: ``(B, 3, S, S)`` on ``self.device``, finite floats; ``t``: int or ``(B,)`` integer tensor in
        ``[0, T)``. Returns a tensor of the same shape and dtype as ``x_t``. Gradients flow if ``x_t`` requires them.
        """
        return self._eps(x_t, self._check(x_t, t))

    def score(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The score :math:`s_\\theta(x_t, t) = -\\epsilon_\\theta(x_t, t) / \\sqrt{1 - \\bar\\alpha_t}`.

        Shapes as :meth:`eps`. Reference: the relation below paper eq. 4; notebook 02.
        """
        return self._score(x_t, self._check(x_t, t))

    def x0_hat(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Single-step estimate of the clean image (Tweedie's formula, paper eq. 6).

        .. math:: \\hat x_0 = \\frac{1}{\\sqrt{\\bar\\alpha_t}} \\left(x_t + (1 - \\bar\\alpha_t) s_\\theta(x_t, t)\\right)

        Shapes as :meth:`eps`. Reference: paper eq. 6; notebooks 02-03. Not clipped to [-1, 1] (the samplers say
        where they clip).
        """
        t = self._check(x_t, t)
        alpha_bar_t = self.alpha_bar[t].view(-1, 1, 1, 1)  # float64: 1 - alpha_bar_t keeps its digits near t = 0
        return (x_t + (1 - alpha_bar_t).to(x_t.dtype) * self._score(x_t, t)) / alpha_bar_t.sqrt().to(x_t.dtype)

    # The relation below eq. 4, each way; a subclass overrides the one it computes.
    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -(1 - self.alpha_bar[t]).sqrt().to(x_t.dtype).view(-1, 1, 1, 1) * self._score(x_t, t)

    def _score(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -self._eps(x_t, t) / (1 - self.alpha_bar[t]).sqrt().to(x_t.dtype).view(-1, 1, 1, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class DiffusionModel(ScoreModel):
    """An epsilon-predicting network with its noise schedule: ``eps``, ``score``, ``x0_hat`` (:class:`ScoreModel`).

    Attributes: ``name``, ``unet`` (a network in eval mode called as ``unet(x_t, t).sample``: a diffusers
    ``UNet2DModel``, or :class:`helpers.paper_models.EpsilonOfLearnedSigma` around an ADM U-Net), ``schedule``
    (:class:`helpers.schedule.Schedule`: ``beta``, ``alpha``, ``alpha_bar`` on ``device``, float64),
    ``image_size`` (pixels per side), ``device``. The fast GPU path (see :func:`load_model`): ``autocast_dtype``
    (``None``: the network runs in its own dtype, float32; else ``torch.bfloat16`` or ``torch.float16``, under
    ``torch.autocast``) and ``channels_last`` (the input is passed in channels-last memory format).

    Fast path (off by default on the CPU, where ``eps`` is exactly ``unet(x_t, t).sample``): with ``autocast_dtype``
    set, the network runs under ``torch.autocast`` (convolutions and attention in bfloat16 or float16,
    normalisations in float32) and its output is cast back to ``x_t``'s dtype; everything outside the network
    (eqs. 5-7, the DPS gradient's arithmetic) stays in float32.
    """

    name: str
    unet: torch.nn.Module
    schedule: Schedule
    image_size: int
    device: torch.device
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    def _check(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        size = self.image_size
        _checks.tensor(x_t, "x_t", shape=f"(B, 3, {size}, {size}) for model {self.name!r}", size=size,
                       fix=f"Use images.load_image(..., size={size}) to resize.")
        return check_timestep(t, self.T, batch=x_t.shape[0]).to(x_t.device)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:   # the network: eq. 4's epsilon_theta
        x = x_t.to(next(self.unet.parameters()).dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.unet(x, t).sample.to(x_t.dtype)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
            eps = self.unet(x, t).sample
        return eps.to(x_t.dtype).contiguous()


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


def write_checksum(folder: str | pathlib.Path) -> str:
    """Record the sha256 of a diffusers folder's weights in ``folder/SHA256SUMS``; return it."""
    folder = pathlib.Path(folder)
    digest = sha256_of(folder / WEIGHTS_FILE)
    (folder / CHECKSUM_FILE).write_text(f"{digest}  {WEIGHTS_FILE}\n")
    return digest


def load_unet_folder(folder: str | pathlib.Path, device: torch.device) -> torch.nn.Module:
    """Load a diffusers ``UNet2DModel`` folder (config.json + safetensors, or diffusers' older pickle
    ``diffusion_pytorch_model.bin``), verified, in eval mode.

    Raises ``FileNotFoundError`` if a file is missing and ``RuntimeError`` if the weights do not match the
    checksum in ``SHA256SUMS`` (when present) or cannot be read. Never returns random weights.
    """
    from diffusers import UNet2DModel

    folder = pathlib.Path(folder)
    weights = next((folder / name for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE) if (folder / name).is_file()),
                   folder / WEIGHTS_FILE)
    for required in (folder / "config.json", weights):
        if not required.is_file():
            raise FileNotFoundError(f"model folder {str(folder)!r} has no {required.name!r}"
                                    f"{f' (nor {LEGACY_WEIGHTS_FILE!r})' if required == weights else ''}. The "
                                    f"embedded model ships with the course in helpers/weights/faces32; reinstall the "
                                    f"package (pip install -e .) or restore the file from git.")
    checksum_file = folder / CHECKSUM_FILE
    if checksum_file.is_file():
        expected = checksum_file.read_text().split()[0]
        actual = sha256_of(weights)
        if actual != expected:
            raise RuntimeError(f"{weights} is corrupt: sha256 {actual[:16]}... does not match "
                               f"{expected[:16]}... recorded in {CHECKSUM_FILE}. Restore it from git "
                               f"(git checkout -- {folder}).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            unet, info = UNet2DModel.from_pretrained(folder, low_cpu_mem_usage=False, output_loading_info=True,
                                                     use_safetensors=weights.name == WEIGHTS_FILE)
    except (OSError, ValueError, RuntimeError) as error:
        raise RuntimeError(f"could not load the diffusers model in {str(folder)!r}: {error}") from error
    # diffusers only warns about weights missing from the file and leaves them uninitialised: refuse instead.
    problems = {key: value for key, value in info.items() if value}
    if problems:
        raise RuntimeError(f"the weights in {str(folder)!r} do not match its config.json: {problems}. The "
                           f"checkpoint is incomplete or from another architecture; restore it from git.")
    return unet.to(device).eval().requires_grad_(False)


BF16_MIN_CAPABILITY = (8, 0)  # Ampere (A100, RTX 30xx, L4 is 8.9) and later have bfloat16 tensor cores; a T4 is 7.5


def fast_settings(device: torch.device, fast: bool | None) -> tuple[torch.dtype | None, bool]:
    """``(autocast_dtype, channels_last)`` for ``fast``: ``None`` means on for CUDA and off elsewhere.

    On CUDA: half precision where the GPU has tensor cores for it, and channels-last memory format. bfloat16 on
    compute capability >= 8.0 (A100, L4, H100, RTX 30xx and later); float16 below (Colab's T4 is 7.5, a V100 7.0).
    ``torch.cuda.is_bf16_supported()`` is not the test: it also counts emulation and answers True on a T4, whose
    bfloat16 then runs on slow emulated kernels (or fails). Forced on elsewhere: float16 on Apple's MPS, bfloat16
    on the CPU. Off: ``(None, False)``, the network exactly as stored (float32). :func:`describe_precision` says
    which in words.

    Deviation: the network's output then carries bfloat16's 3 significant digits (float16's: 3-4); the samplers'
    arithmetic stays float32. DPS's gradient flows back through the network in that precision, without loss
    scaling; with float16 (T4) very small gradients could underflow: compare with ``fast=False`` if results look off.
    """
    if fast is not None and not isinstance(fast, bool):
        raise ValueError(f"fast must be None (on for CUDA, off elsewhere), True or False; got {fast!r}.")
    if not (device.type == "cuda" if fast is None else fast):
        return None, False
    if device.type == "cuda":
        return (torch.bfloat16 if _cuda_capability(device) >= BF16_MIN_CAPABILITY else torch.float16), True
    return (torch.float16 if device.type == "mps" else torch.bfloat16), False


def _cuda_capability(device: torch.device) -> tuple[int, int]:
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


def describe_precision(device: torch.device, fast: bool | None) -> str:
    """One line saying in which precision the network runs on ``device`` with ``fast``, and why.

    The line :func:`wrap_network` prints when a model is loaded, e.g. ``"float16 autocast (compute capability 7.5
    < 8.0: no bfloat16 tensor cores), channels_last"``.
    """
    autocast_dtype, channels_last = fast_settings(device, fast)
    if autocast_dtype is None:
        why = ("fast=False" if fast is False else
               "the fast path is for CUDA; fast=True forces it" if device.type != "cuda" else "fast path off")
        return f"float32, the network as stored ({why})"
    name = str(autocast_dtype).removeprefix("torch.")
    if device.type == "cuda":
        capability = _cuda_capability(device)
        relation = (">= 8.0: bfloat16 tensor cores" if autocast_dtype == torch.bfloat16
                    else "< 8.0: no bfloat16 tensor cores")
        why = f"compute capability {capability[0]}.{capability[1]} {relation}"
    else:
        why = f"fast=True on {device.type}"
    return f"{name} autocast ({why})" + (", channels_last" if channels_last else "")


def wrap_network(name: str, unet: torch.nn.Module, image_size: int, device: str | torch.device = "auto",
                 fast: bool | None = None, compile: bool | str = False) -> DiffusionModel:
    """Wrap an epsilon-predicting network (called as ``unet(x_t, t).sample``; linear betas, T = 1000) as a
    :class:`DiffusionModel` on ``device``, in eval mode and without parameter gradients, with the fast path of
    :func:`fast_settings` and, if ``compile``, ``torch.compile`` (``True`` or a mode: ``"default"``,
    ``"reduce-overhead"`` for CUDA graphs, ``"max-autotune"``). Every loader and the GPU benchmark build models here.
    Prints one line with the precision chosen and why (:func:`describe_precision`).
    """
    return _wrap(name, unet, image_size, pick_device(device), fast, compile)


def _wrap(name: str, unet: torch.nn.Module, image_size: int, device: torch.device, fast: bool | None,
          compile: bool | str) -> DiffusionModel:
    """:func:`wrap_network` for a ``device`` that :func:`pick_device` has already checked."""
    if not (isinstance(compile, bool) or compile in COMPILE_MODES):
        raise ValueError(f"compile must be False, True or one of {list(COMPILE_MODES)}; got {compile!r}.")
    autocast_dtype, channels_last = fast_settings(device, fast)
    unet = unet.to(device).eval().requires_grad_(False)
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if compile:
        unet = torch.compile(unet, mode=None if compile is True else compile)
    precision = describe_precision(device, fast)
    if autocast_dtype is not None:
        precision = f"fast path with {precision}"
    print(f"{name} on {device}: {precision}" + (f", torch.compile(mode={compile!r})" if compile else ""))
    return DiffusionModel(name=name, unet=unet, schedule=linear_schedule(device=device), image_size=image_size,
                          device=device, autocast_dtype=autocast_dtype, channels_last=channels_last)


def _load_ffhq256(device: torch.device, fast: bool | None, compile: bool | str,
                  cache_dir: str | pathlib.Path | None) -> DiffusionModel:
    """DPS's FFHQ checkpoint: fetched and verified, loaded strictly into the ADM U-Net, seen through its first 3
    output channels (eps)."""
    spec = paper_models.FFHQ256
    folder = download.fetch(spec.files, cache_dir)
    adm = paper_models.load_adm_checkpoint(folder / spec.weights.filename, spec.architecture)
    return _wrap(spec.name, paper_models.EpsilonOfLearnedSigma(adm), spec.image_size, device, fast, compile)


def _load_celebahq256(device: torch.device, fast: bool | None, compile: bool | str,
                      cache_dir: str | pathlib.Path | None) -> DiffusionModel:
    """google/ddpm-celebahq-256: fetched and verified, its config.json checked against the architecture the course
    expects, loaded by diffusers (which refuses missing or unexpected weights here)."""
    spec = paper_models.CELEBAHQ256
    folder = download.fetch(spec.files, cache_dir)
    paper_models.check_ddpm_config(folder, spec.architecture)
    return _wrap(spec.name, load_unet_folder(folder, torch.device("cpu")), spec.image_size, device, fast, compile)


MODEL_NAMES = ("faces", "ffhq256", "celebahq256")


def choose_auto(device: torch.device, cache_dir: str | pathlib.Path | None = None) -> tuple[str, str]:
    """What ``load_model("auto")`` loads on ``device``, and why: ``"ffhq256"`` (the paper's model) with a CUDA GPU
    and its weights cached or downloadable, else the embedded ``"faces"``."""
    if device.type != "cuda":
        return "faces", (f"no CUDA GPU (device {device}); the 256x256 models take minutes per image without one. "
                         f"Ask for one by name to use it anyway")
    cached = download.find_cached(paper_models.FFHQ256.files, cache_dir)
    if cached is not None:
        return "ffhq256", f"a CUDA GPU and its weights in {cached}"
    if not download.download_allowed():
        return "faces", (f"a CUDA GPU, but the ffhq256 weights are not cached and HF_HUB_OFFLINE is set "
                         f"(put them at {download.course_folder(paper_models.FFHQ256.weights, cache_dir)})")
    if not download.hub_reachable():
        return "faces", (f"a CUDA GPU, but the ffhq256 weights are not cached and the hub cannot be reached "
                         f"(put them at {download.course_folder(paper_models.FFHQ256.weights, cache_dir)})")
    return "ffhq256", "a CUDA GPU and the hub within reach: its weights are downloaded once (374 MB)"


def load_model(name: str = "auto", device: str | torch.device = "auto", fast: bool | None = None,
               compile: bool | str = False, cache_dir: str | pathlib.Path | None = None) -> DiffusionModel:
    """Load a pretrained diffusion model by name and wrap it as a :class:`DiffusionModel`.

    ``name``: ``"faces"`` (the embedded 32 x 32 face model, CPU-friendly), ``"ffhq256"`` (DPS's 256 x 256 FFHQ
    checkpoint, the paper's model), ``"celebahq256"`` (``google/ddpm-celebahq-256``) or ``"auto"``, which picks
    ``"ffhq256"`` with a CUDA GPU when its weights are cached or downloadable and ``"faces"`` otherwise, and prints
    which and why. ``device``: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ...

    ``fast``: the fast GPU path (:func:`fast_settings`): ``None`` (default) turns it on for CUDA only, so on the
    CPU the model computes exactly what it always did; ``True``/``False`` force it. ``compile``: ``False``,
    ``True`` or a ``torch.compile`` mode (``"reduce-overhead"`` uses CUDA graphs). ``cache_dir``: where the
    256 x 256 weights are cached (default ``$COURSE_CACHE_DIR``, else ``$HF_HOME/diffusion-course``; see
    :mod:`helpers.download`).

    Raises ``ValueError`` for an unknown name or option, ``FileNotFoundError`` for weights that are missing and
    cannot be downloaded (the message says where to put them), ``RuntimeError`` for a corrupt checkpoint.
    """
    if name != "auto" and name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {['auto', *MODEL_NAMES]}; got {name!r}.")
    device = pick_device(device)
    if name == "auto":
        name, why = choose_auto(device, cache_dir)
        print(f"load_model('auto') -> {name!r}: {why}.")
    if name == "ffhq256":
        return _load_ffhq256(device, fast, compile, cache_dir)
    if name == "celebahq256":
        return _load_celebahq256(device, fast, compile, cache_dir)
    unet = load_unet_folder(EMBEDDED_MODEL_DIR, device)  # "faces", the embedded model
    return _wrap("faces", unet, int(unet.config.sample_size), device, fast, compile)


def load_model_from_folder(folder: str | pathlib.Path, name: str | None = None,
                           device: str | torch.device = "auto", fast: bool | None = None) -> DiffusionModel:
    """Wrap any diffusers ``UNet2DModel`` folder (epsilon-prediction, linear betas, T = 1000), e.g. a training
    run's ``ema/`` folder, the same way as the embedded model."""
    device = pick_device(device)
    unet = load_unet_folder(folder, device)
    return _wrap(name or pathlib.Path(folder).name, unet, int(unet.config.sample_size), device, fast, False)
