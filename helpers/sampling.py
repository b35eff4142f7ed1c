"""Reference samplers: DDPM (paper Sec. III-B), with optional timestep respacing, and SDEdit (Sec. IV-C-1).

Notebooks write these loops out cell by cell and check their version against the one here. All
randomness comes from the ``torch.Generator`` passed in (a CPU generator, or one on the model's GPU; noise is
moved to the model's device), never from the global seed.
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm

from helpers import _checks
from helpers.models import DiffusionModel
from helpers.schedule import add_noise

Variance = Literal["beta", "beta_tilde"]
# One generator for the batch, or one per image (see randn).
Generators = torch.Generator | Sequence[torch.Generator]

# Progress bars redraw at most twice a second: in a notebook every redraw is a widget message, and thousands
# of them per cell can make the kernel's final status arrive late (nbval then times out).
PROGRESS_THROTTLE = dict(mininterval=0.5, maxinterval=5.0)


def respaced_timesteps(T: int, num_steps: int) -> list[int]:
    """``num_steps`` timesteps from ``T - 1`` down to 0, evenly spaced (improved DDPM's respacing).

    With ``num_steps == T`` this is ``T-1, T-2, ..., 0``: the full sampler.
    """
    _checks.integer(num_steps, "num_steps", 1, T, hint=f"None for all {T} steps, where a sampler allows it")
    return torch.linspace(T - 1, 0, num_steps, dtype=torch.float64).round().long().tolist()


def randn(shape: tuple[int, ...], generator: Generators, like: torch.Tensor | None = None,
          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise drawn from ``generator`` on the generator's own device, then moved to ``device``.

    ``generator``: one ``torch.Generator`` for the whole batch, or a list of them, one per image (``shape[0]``
    of them): then image ``i``'s noise comes from ``generator[i]`` alone, so it does not depend on the rest of the
    batch. That gives common random numbers (the same noise for every candidate of a hyperparameter search run in
    one batch, notebook 06) and results that do not depend on how images are batched (``scripts/evaluate_inverse.py``).

    The course's generators are CPU ones (``seeding.seed_everything``): the same seed gives the same noise on every
    device. A generator on the GPU (``torch.Generator("cuda")``) skips the CPU draw and the copy at every step, which
    the fast GPU path needs (``scripts/benchmark_gpu.py``), at the price of noise that differs from the CPU's.
    """
    if like is not None:
        device, dtype = like.device, like.dtype
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generator]).to(device)


def default_variance(t: int, t_prev: int) -> Variance:
    """The reverse step's variance when none is named: ``"beta"`` for a single step (``t_prev = t - 1``, the
    paper's :math:`\sigma_t^2 = \beta_t`, so the full 1000-step chain is the paper's), ``"beta_tilde"`` for a
    jump over several steps (a respaced chain).

    Why: over a jump, :math:`\beta = 1 - \bar\alpha_t / \bar\alpha_{prev}` is much larger than
    :math:`\tilde\beta`, and the noise of the chain's last jumps is never removed: 50 respaced steps with
    :math:`\beta` leave grain of standard deviation about 0.08 in the output, with :math:`\tilde\beta` about
    0.01. Reference: notebook 04 (respacing); the improved-DDPM paper (Nichol & Dhariwal, 2021) respaces with
    :math:`\tilde\beta` too.
    """
    return "beta" if t_prev == t - 1 else "beta_tilde"


def ddpm_step(model: DiffusionModel, x_t: torch.Tensor, t: int, t_prev: int, generator: Generators,
              variance: Variance | None = None, clip_x0: bool = True, x0_hat: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One reverse step from index ``t`` to ``t_prev`` (``t_prev = -1`` after the last step); returns
    ``(x_prev, x0_hat)``.

    (1) :math:`\\hat x_0` by eq. 6 (or the ``x0_hat`` given), clipped to [-1, 1] if ``clip_x0``.
    (2) The posterior mean by eq. 7, written with :math:`\\bar\\alpha` at the two timesteps used, so that
        respaced schedules stay correct: with :math:`\\alpha = \\bar\\alpha_t / \\bar\\alpha_{prev}` and
        :math:`\\beta = 1 - \\alpha`,

        .. math:: \\mu = \\frac{\\sqrt{\\alpha}(1-\\bar\\alpha_{prev})}{1-\\bar\\alpha_t} x_t
                  + \\frac{\\sqrt{\\bar\\alpha_{prev}}\\,\\beta}{1-\\bar\\alpha_t} \\hat x_0

        (eq. 7 has :math:`\\sqrt{\\alpha_t}` on :math:`x_t`; the paper's DDPM pseudocode prints
        :math:`\\sqrt{\\bar\\alpha_t}`, an erratum shown in notebook 02).
    (3) Noise only if ``t_prev >= 0`` (the paper's "z = 0 if t = 1"), with variance ``beta`` (the paper's
        :math:`\\sigma_t^2 = \\beta_t`; diffusers' "fixed_large") or ``beta_tilde``
        (:math:`\\tilde\\beta = \\beta (1-\\bar\\alpha_{prev})/(1-\\bar\\alpha_t)`; "fixed_small");
        ``None``: :func:`default_variance` (``beta`` for a single step, ``beta_tilde`` for a respaced jump).

    Deviation from the paper: ``clip_x0=True`` clips :math:`\\hat x_0` as the DDPM and DPS code do; pass
    ``False`` for the pseudocode as printed.
    """
    _checks.one_of(variance, "variance", ("beta", "beta_tilde", None),
                   hint="beta for single steps, beta_tilde for respaced jumps")
    _checks.integer(t, "t", low=0, high=model.T - 1, hint="the code's timestep index")
    _checks.integer(t_prev, "t_prev", low=-1, high=t - 1, hint="the next timestep, -1 after the last step")
    _checks.generator(generator, x_t.shape[0])
    # (1) x0_hat by eq. 6
    if x0_hat is None:
        x0_hat = model.x0_hat(x_t, t)
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    # (2) posterior mean by eq. 7, from alpha_bar at t and t_prev
    alpha_bar_t = model.alpha_bar[t]
    alpha_bar_prev = model.alpha_bar[t_prev] if t_prev >= 0 else torch.ones_like(alpha_bar_t)
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1 - alpha_t
    coef_x_t = (alpha_t.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t)).to(x_t.dtype)
    coef_x0 = (alpha_bar_prev.sqrt() * beta_t / (1 - alpha_bar_t)).to(x_t.dtype)
    x_prev = coef_x_t * x_t + coef_x0 * x0_hat
    # (3) noise, except at the last step
    if t_prev >= 0:
        variance = variance or default_variance(t, t_prev)
        sigma2 = beta_t if variance == "beta" else beta_t * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
        x_prev = x_prev + sigma2.sqrt().to(x_t.dtype) * randn(x_t.shape, generator, like=x_t)
    return x_prev, x0_hat


def run_reverse_chain(x_t: torch.Tensor, timesteps: list[int],
                      step: Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]],
                      keep: tuple[int, ...] = (), progress: bool = True, desc: str = "reverse process",
                      postfix: Callable[[torch.Tensor], dict[str, str]] | None = None
                      ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The loop every sampler shares: ``x_t, x0_hat = step(x_t, t, t_prev)`` over ``timesteps`` (descending; the
    last step goes to ``t_prev = -1``), with a progress bar. Returns ``(x_0, kept)``, ``kept[t]`` being
    :math:`x_t` (on the CPU) for each ``t`` in ``keep`` that is visited (``-1``: the output). ``postfix(x0_hat)``
    gives the bar's diagnostic, e.g. the misfit.
    """
    kept = {}
    bar = tqdm(timesteps, desc=f"{desc} ({len(timesteps)} steps)", disable=not progress, leave=False,
               **PROGRESS_THROTTLE)
    for i, t in enumerate(bar):
        if t in keep:
            kept[t] = x_t.cpu()
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x_t, x0_hat = step(x_t, t, t_prev)
        if progress and postfix is not None:
            bar.set_postfix(postfix(x0_hat), refresh=False)  # shown at the bar's next regular refresh
    if -1 in keep:
        kept[-1] = x_t.cpu()
    return x_t, kept


@torch.no_grad()
def ddpm_sample(model: DiffusionModel, num_samples: int, generator: Generators, num_steps: int | None = None,
                variance: Variance | None = None, clip_x0: bool = True, x_T: torch.Tensor | None = None,
                keep: tuple[int, ...] = (), progress: bool = True) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Unconditional DDPM sampling (paper Sec. III-B pseudocode, with the corrected eq. 7).

    Starts from :math:`x_T \\sim \\mathcal{N}(0, I)` (or ``x_T``) and runs :func:`ddpm_step` over
    :func:`respaced_timesteps` (``num_steps=None``: all ``T`` steps), with the variance of
    :func:`default_variance` unless ``variance`` names one (all ``T`` steps: the paper's :math:`\\beta`; respaced:
    :math:`\\tilde\\beta`). Returns ``(x_0, kept)`` where
    ``kept[t]`` is :math:`x_t` for each ``t`` in ``keep`` that the schedule visits (``-1`` is the output).
    """
    _checks.integer(num_samples, "num_samples", 1)
    _checks.generator(generator, num_samples)
    timesteps = respaced_timesteps(model.T, model.T if num_steps is None else num_steps)
    shape = (num_samples, 3, model.image_size, model.image_size)
    if x_T is not None:
        _checks.tensor(x_T, "x_T", shape=f"{shape}, one start per sample (num_samples={num_samples})",
                       size=model.image_size)
        _checks.same_shape(x_T, torch.empty(shape), "x_T", "the samples", f"num_samples={num_samples}")
    x_t = randn(shape, generator, device=model.device) if x_T is None else x_T.to(model.device)
    return run_reverse_chain(
        x_t, timesteps, lambda x, t, t_prev: ddpm_step(model, x, t, t_prev, generator, variance=variance,
                                                       clip_x0=clip_x0),
        keep=keep, progress=progress, desc="DDPM")


@torch.no_grad()
def sdedit(model: DiffusionModel, y: torch.Tensor, t_start: int, generator: Generators,
           num_steps: int | None = None, variance: Variance | None = None, clip_x0: bool = True,
           progress: bool = True) -> torch.Tensor:
    r"""SDEdit: noise a guide image ``y`` to step ``t_start`` by eq. 3, then run the DDPM reverse steps to 0.

    .. math:: x_{t_0} = \sqrt{\bar\alpha_{t_0}}\, y + \sqrt{1 - \bar\alpha_{t_0}}\, z, \qquad z \sim \mathcal{N}(0, I),

    then :func:`ddpm_step` (:math:`\hat x_0` by eq. 6, :math:`x_{t-1}` by eq. 7) from :math:`t_0` = ``t_start``
    down to 0. Returns the final image :math:`x_0`, the estimate of the clean image.

    Reference: paper Sec. IV-C-1 and Figs. 4-5 (Meng et al., 2021); notebook 05. ``y``: ``(B, 3, S, S)`` with
    ``S = model.image_size``, in the model range [-1, 1] (a measurement such as a masked or blurred image, or any
    image to edit; moved to ``model.device``). ``t_start``: the code's timestep index in ``[0, T)`` (the paper's
    Figs. 4-5 use 250, 500, 750). ``num_steps``: ``None`` for every step ``t_start, t_start - 1, ..., 0``
    (``t_start + 1`` network calls), or an integer in ``[1, t_start + 1]`` for that many evenly spaced steps from
    ``t_start`` to 0 (:func:`respaced_timesteps` with ``T = t_start + 1``); each step uses
    :math:`\bar\alpha` at the two timesteps it actually joins, so respacing stays correct. ``variance`` and
    ``clip_x0`` as in :func:`ddpm_step`. Returns ``(B, 3, S, S)`` on ``model.device``. All noise (``z`` first,
    then one draw per step except the last) comes from ``generator``.

    The last step goes to :math:`\bar\alpha = 1`, where eq. 7 puts all weight on :math:`\hat x_0`: the output is
    the last step's :math:`\hat x_0` (clipped to [-1, 1] if ``clip_x0``). With ``num_steps=1`` SDEdit is
    therefore single-step denoising (eq. 6, notebook 03) of the noised ``y``.

    Raises ``ValueError`` for a ``t_start`` outside ``[0, T)``, a ``y`` of the wrong type, shape or range, a
    ``num_steps`` outside ``[1, t_start + 1]``, or a ``generator`` that is not a ``torch.Generator`` or a list of one per image.
    """
    size = model.image_size
    _checks.integer(t_start, "t_start", 0, model.T - 1, hint="the code's timestep index; the paper's Figs. 4-5 use "
                    "250, 500, 750")
    _checks.tensor(y, "y", shape=f"(B, 3, {size}, {size}) for model {model.name!r}", size=size, max_abs=3,
                   fix=f"Add a batch dimension with y[None], or resize with images.load_image(..., size={size}).")
    _checks.generator(generator, y.shape[0])
    timesteps = respaced_timesteps(t_start + 1, t_start + 1 if num_steps is None else num_steps)

    y = y.to(model.device)
    # (1) the start point: y noised to t_start by eq. 3
    z = randn(tuple(y.shape), generator, like=y)
    x_t = add_noise(y, z, t_start, model.alpha_bar)
    # (2) the timesteps t_start, ..., 0, evenly respaced if num_steps is given (computed above)
    # (3) DDPM reverse steps (eqs. 6-7), the last one (to t_prev = -1) without noise
    # how far the current estimate has moved from the guide: RMS of x0_hat - y, batch mean
    x_t, _ = run_reverse_chain(
        x_t, timesteps, lambda x, t, t_prev: ddpm_step(model, x, t, t_prev, generator, variance=variance,
                                                       clip_x0=clip_x0),
        progress=progress, desc=f"SDEdit from t_start={t_start}",
        postfix=lambda x0_hat: {"rms_x0_hat_minus_y": f"{(x0_hat - y).pow(2).mean(dim=(1, 2, 3)).sqrt().mean():.3f}"})
    return x_t
