r"""Reference posterior samplers: ScoreALD and DPS (paper Sec. III-C), with timestep respacing.

Both samplers run the unconditional DDPM step of :func:`helpers.sampling.ddpm_step` (eqs. 6-7, with the corrected
coefficient on :math:`x_t`) to get :math:`x'_{t-1}`, then pull it towards the measurement :math:`y` (eq. 8) with a
gradient that approximates the likelihood term :math:`\nabla_{x_t} \log p_t(y \mid x_t)` of the posterior SDE
(eq. 9):

- ScoreALD: :math:`x_{t-1} = x'_{t-1} - \frac{1}{\sigma_y^2 + \gamma_t^2} \nabla_{x_t} \|\mathcal{A}(x_t) - y\|^2`,
  an analytic gradient (no network call);
- DPS: :math:`x_{t-1} = x'_{t-1} - \frac{\zeta_t}{2 \sigma_y^2} \nabla_{x_t} \|\mathcal{A}(\hat x_0) - y\|^2`, a
  gradient through the network by autograd; or DPS's published step
  :math:`x_{t-1} = x'_{t-1} - \zeta \nabla_{x_t} \|y - \mathcal{A}(\hat x_0)\|`.

Notebook 06 writes these loops out cell by cell and checks its version against the one here. Conventions: images
``(B, 3, S, S)`` in the model range [-1, 1]; ``sigma_y`` in the same units (the operators' convention); every norm
is taken per image, so a batch gives the same result as its images one by one (the official DPS code's
batch-wide norm couples the samples); all randomness comes from the CPU ``torch.Generator`` passed in.
"""
from __future__ import annotations

import math
from typing import Literal, Protocol

import torch

from helpers import _checks
from helpers.models import DiffusionModel
from helpers.sampling import Generators, Variance, ddpm_step, randn, respaced_timesteps, run_reverse_chain

DPSStep = Literal["paper", "dps"]


class Operator(Protocol):
    """What the samplers need from a forward model (``helpers.operators``): ``A`` (DPS differentiates through it by
    autograd, so it may be nonlinear) and, for ScoreALD, the exact adjoint ``A_adjoint``."""

    def A(self, x: torch.Tensor) -> torch.Tensor: ...

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor: ...


# ---- the gamma_t schedule of ScoreALD ----

def score_ald_gamma(model: DiffusionModel, t: int, gamma: float | torch.Tensor) -> float | torch.Tensor:
    r"""ScoreALD's :math:`\gamma_t` at the code's timestep ``t``, from the "gamma scale" ``gamma``:

    .. math:: \gamma_t = \frac{\gamma}{\sqrt{\bar\alpha_t}}, \qquad
              \gamma_t^2 = \gamma^2 \left(1 + \frac{1 - \bar\alpha_t}{\bar\alpha_t}\right)

    Reference: paper Sec. III-C (":math:`\{\gamma_t\}` are hyperparameters"); notebook 06. The paper leaves the
    schedule open; this is the course's choice. :math:`(1-\bar\alpha_t)/\bar\alpha_t` is the variance of the noise
    in :math:`x_t / \sqrt{\bar\alpha_t} = x_0 + \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}\, z` (eq. 3 rescaled to the
    data's scale), so :math:`\gamma_t` grows with the noise level and the pull towards :math:`y` fades at large
    :math:`t`, where :math:`x_t` says little about :math:`x_0`; the constant part :math:`\gamma^2` bounds the step
    at small :math:`t`. The update moves a component of :math:`x_t` seen with gain 1 by :math:`\mathcal{A}` by
    :math:`2/(\sigma_y^2 + \gamma_t^2) \le 2/\gamma^2` of its misfit: ``gamma > 1`` keeps it stable (below
    ``sqrt(2)`` it overshoots, the misfit changing sign from step to step), ``gamma = sqrt(2)`` nearly replaces the
    observed pixels by :math:`y` at the last steps. ``gamma = inf`` switches the pull off (plain DDPM).

    ``gamma``: a number > 0 (``inf`` allowed) or a tensor of such numbers (one per image); returns the same kind.
    Raises ``ValueError`` for a number that is not > 0.
    """
    if not isinstance(gamma, torch.Tensor):
        _checks.number(gamma, "gamma", allow_zero=False, allow_inf=True,
                       hint="the gamma scale of ScoreALD, e.g. 2.0; inf switches the data term off")
        return gamma / math.sqrt(float(model.alpha_bar[t]))
    return gamma / model.alpha_bar[t].sqrt().to(gamma)


# ---- one step of each sampler ----

@torch.no_grad()
def score_ald_step(model: DiffusionModel, op: Operator, x_t: torch.Tensor, y: torch.Tensor, t: int, t_prev: int,
                   generator: Generators, gamma_t: float | torch.Tensor, sigma_y: float,
                   variance: Variance | None = None, clip_x0: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One ScoreALD step from index ``t`` to ``t_prev`` (``-1`` after the last step); returns ``(x_prev, x0_hat)``.

    (1)-(3) :math:`x'_{t-1}` and :math:`\hat x_0` by :func:`helpers.sampling.ddpm_step` (eq. 6, eq. 7 with the
        corrected coefficient :math:`\sqrt{\alpha_t}` and :math:`\bar\alpha` at ``t`` and ``t_prev``, noise from
        ``generator`` unless ``t_prev = -1``).
    (4) The gradient of the data misfit at :math:`x_t`, analytic for a linear :math:`\mathcal{A}`:
        :math:`\nabla_{x_t} \|\mathcal{A} x_t - y\|^2 = 2 \mathcal{A}^H (\mathcal{A} x_t - y)`.
    (5) The paper's update, exactly as printed:

        .. math:: x_{t-1} = x'_{t-1} - \frac{1}{\sigma_y^2 + \gamma_t^2} \nabla_{x_t} \|\mathcal{A}(x_t) - y\|^2
                          = x'_{t-1} + \frac{2}{\sigma_y^2 + \gamma_t^2} \mathcal{A}^H (y - \mathcal{A} x_t)

    Reference: paper Sec. III-C, ScoreALD pseudocode (Jalal et al., 2021); notebook 06. The likelihood
    approximation the paper quotes is :math:`\nabla_{x_t} \log p(y \mid x_t) \approx
    \mathcal{A}^H (y - \mathcal{A} x_t) / (\sigma_y^2 + \gamma_t^2)`; the pseudocode's step is *twice* that
    (the gradient of the squared norm carries a factor 2) and has no step size in front. In annealed Langevin
    dynamics and in a discretised eq. 9 a step size multiplies this term (:math:`\beta_t/\sqrt{\alpha_t}` in
    the reverse SDE); here it is absorbed into :math:`\gamma_t`, which is therefore a tuning knob rather than a
    noise level (see :func:`score_ald_gamma`).

    ``x_t``: ``(B, 3, S, S)`` on ``model.device``; ``y``: the measurement, ``op.A(x_t)``'s shape; ``gamma_t``: a
    number ``> 0`` (``inf`` gives plain DDPM) or a ``(B,)`` tensor of per-image values; ``sigma_y >= 0`` in
    model-range units. ``variance`` and ``clip_x0`` as in :func:`helpers.sampling.ddpm_step`.

    Deviation from the paper: :math:`\hat x_0` is clipped to [-1, 1] if ``clip_x0`` (as in the DDPM and DPS
    code); the data term uses the unclipped :math:`x_t`, as printed.
    """
    _checks.number(sigma_y, "sigma_y", allow_zero=True, hint=SIGMA_Y_HINT)
    gamma_t = _checks.per_image(gamma_t, "gamma_t", x_t, allow_zero=False, allow_inf=True)
    # (1)-(3) the unconditional DDPM step (eqs. 6-7): x'_{t-1} and x0_hat
    x_prev, x0_hat = ddpm_step(model, x_t, t, t_prev, generator, variance=variance, clip_x0=clip_x0)
    # (4) grad_{x_t} ||A x_t - y||^2 = 2 A^H (A x_t - y), no autograd needed
    grad = 2 * op.A_adjoint(_measured(op, x_t, y) - y)
    # (5) x_{t-1} = x'_{t-1} - grad / (sigma_y^2 + gamma_t^2)   (gamma_t = inf: the data term vanishes)
    return x_prev - grad / (sigma_y ** 2 + gamma_t ** 2), x0_hat


def dps_step(model: DiffusionModel, op: Operator, x_t: torch.Tensor, y: torch.Tensor, t: int, t_prev: int,
             generator: Generators, zeta: float | torch.Tensor, sigma_y: float | None = None,
             step: DPSStep = "paper", variance: Variance | None = None, clip_x0: bool = True
             ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One DPS step from index ``t`` to ``t_prev`` (``-1`` after the last step); returns ``(x_prev, x0_hat)``.

    (1) :math:`\hat x_0` by eq. 6 with gradients on (inside ``torch.enable_grad()``, on
        ``x_t.detach().requires_grad_()``), clipped to [-1, 1] if ``clip_x0``.
    (2) The residual :math:`r = y - \mathcal{A}(\hat x_0)` and its norm, per image, and the gradient of the data
        term with respect to :math:`x_t` through the network, by autograd (no in-place operations; all results
        detached).
    (3) :math:`x'_{t-1}` by :func:`helpers.sampling.ddpm_step` from the same :math:`\hat x_0` (eq. 7 with the
        corrected coefficient; noise from ``generator`` unless ``t_prev = -1``).
    (4) The update. ``step="paper"``, the paper's pseudocode as printed, with a constant :math:`\zeta_t = \zeta`:

        .. math:: x_{t-1} = x'_{t-1} - \frac{\zeta}{2 \sigma_y^2} \nabla_{x_t} \|\mathcal{A}(\hat x_0) - y\|^2

        ``step="dps"``, the step of DPS's published code (Chung et al.), which differentiates the norm itself:

        .. math:: x_{t-1} = x'_{t-1} - \zeta \nabla_{x_t} \|y - \mathcal{A}(\hat x_0)\|
                          = x'_{t-1} - \frac{\zeta}{\|y - \mathcal{A}(\hat x_0)\|}
                            \nabla_{x_t} \tfrac{1}{2} \|y - \mathcal{A}(\hat x_0)\|^2

        since :math:`\nabla \|r\| = \nabla \sqrt{\|r\|^2} = \nabla \|r\|^2 / (2 \|r\|)`. It is the paper's step with
        :math:`\zeta_t = \zeta \sigma_y^2 / \|y - \mathcal{A}(\hat x_0)\|`: the step is normalised by the current
        misfit, so :math:`\sigma_y` cancels and :math:`\zeta` is a plain step length (DPS's public configs use 0.3
        for deblurring and 0.5 for inpainting, with 1000 steps). DPS's Algorithm 1 writes :math:`\zeta_i = \zeta'/\|y - \mathcal{A}(\hat x_0)\|` in front of
        the squared norm, which is twice this; the code, followed here, is what produced its results.

    Reference: paper Sec. III-C, DPS pseudocode; Chung et al., 2022 (Algorithm 1 and the official code,
    ``PosteriorSampling.conditioning``); notebook 06.

    ``x_t``: ``(B, 3, S, S)`` on ``model.device``; ``y``: ``op.A(x_t)``'s shape; ``zeta``: a number ``>= 0`` or a
    ``(B,)`` tensor of per-image values; ``sigma_y > 0`` in model-range units, required for ``step="paper"``
    (unused by ``"dps"``, where it cancels). ``op.A`` may be nonlinear: only autograd through it is needed.

    Deviations from the paper: :math:`\hat x_0` is clipped to [-1, 1] before the residual if ``clip_x0``, as in the
    DPS code (the clip passes no gradient where :math:`\hat x_0` is out of range); norms are per image, whereas
    the DPS code takes one norm over the whole batch.
    """
    _checks.one_of(step, "step", ("paper", "dps"), hint="the paper's zeta_t / (2 sigma_y^2) on the gradient of the "
                   "squared norm, or DPS's published zeta on the gradient of the norm")
    if step == "paper" or sigma_y is not None:  # step="dps" does not use it
        _checks.number(sigma_y, "sigma_y", allow_zero=step == "dps", hint=SIGMA_Y_HINT if step == "dps" else
                       "required for step='paper', which divides by 2 sigma_y^2; use step='dps' for noiseless y")
    zeta = _checks.per_image(zeta, "zeta", x_t, allow_zero=True, allow_inf=False)
    # (1)-(2) x0_hat by eq. 6 and the data term, differentiated through the network
    with torch.enable_grad():
        x_t_grad = x_t.detach().requires_grad_()
        x0_hat = model.x0_hat(x_t_grad, t)
        if clip_x0:
            x0_hat = x0_hat.clamp(-1, 1)
        residual = (y - _measured(op, x0_hat, y)).flatten(1)
        if step == "paper":
            data_term = residual.pow(2).sum(dim=1)                # ||y - A(x0_hat)||^2, per image
        else:
            data_term = torch.linalg.vector_norm(residual, dim=1)  # ||y - A(x0_hat)||, per image
        # the images are independent, so the gradient of the sum is each image's own gradient
        (grad,) = torch.autograd.grad(data_term.sum(), x_t_grad)
    x0_hat = x0_hat.detach()
    # (3) x'_{t-1} by eq. 7 from the same x0_hat
    x_prev, x0_hat = ddpm_step(model, x_t.detach(), t, t_prev, generator, variance=variance, clip_x0=clip_x0,
                               x0_hat=x0_hat)
    # (4) the update: the paper's zeta_t / (2 sigma_y^2), or DPS's zeta on the gradient of the norm
    step_size = zeta / (2 * sigma_y ** 2) if step == "paper" else zeta
    return x_prev - step_size * grad, x0_hat


# ---- the loops ----

@torch.no_grad()
def score_ald_sample(model: DiffusionModel, op: Operator, y: torch.Tensor, generator: Generators, *,
                     gamma: float | torch.Tensor, sigma_y: float, num_steps: int | None = None,
                     variance: Variance | None = None, clip_x0: bool = True, x_T: torch.Tensor | None = None,
                     keep: tuple[int, ...] = (), progress: bool = True) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    r"""ScoreALD posterior sampling (paper Sec. III-C pseudocode, with the corrected eq. 7).

    Starts from :math:`x_T \sim \mathcal{N}(0, I)` (or ``x_T``) and runs :func:`score_ald_step` over
    :func:`helpers.sampling.respaced_timesteps` (``num_steps=None``: all ``T`` steps), with
    :math:`\gamma_t` = :func:`score_ald_gamma` (``gamma`` / :math:`\sqrt{\bar\alpha_t}`).

    Reference: paper Sec. III-C; notebook 06. ``y``: ``(B, 3, S, S)`` measurement in model-range units (one
    reconstruction per measurement; repeat ``y`` for several samples of one posterior). ``gamma``: the gamma scale,
    a number > 0 (``inf``: plain DDPM) or a ``(B,)`` tensor of per-image values, e.g. for a hyperparameter sweep
    in one batch. ``sigma_y >= 0``: the measurement noise std. ``variance``, ``clip_x0`` as in
    :func:`helpers.sampling.ddpm_step`. Returns ``(x_0, kept)``: ``kept[t]`` is :math:`x_t` (on the CPU) for each
    ``t`` in ``keep`` the schedule visits (``-1`` is the output). The progress bar shows
    :math:`\|y - \mathcal{A}(\hat x_0)\|`, the mean over the batch of the per-image norms.

    Raises ``ValueError`` for a bad ``gamma``, ``sigma_y``, ``y``, ``x_T``, ``num_steps`` or ``generator``.
    """
    x_t, y, timesteps = _start(model, op, y, generator, num_steps, x_T, adjoint=True)
    gamma = _checks.per_image(gamma, "gamma", x_t, allow_zero=False, allow_inf=True)  # a float, or (B, 1, 1, 1)

    def step(x, t, t_prev):
        gamma_t = score_ald_gamma(model, t, gamma)  # gamma / sqrt(alpha_bar_t), per image
        gamma_t = gamma_t.flatten() if isinstance(gamma_t, torch.Tensor) else gamma_t
        return score_ald_step(model, op, x, y, t, t_prev, generator, gamma_t, sigma_y, variance=variance,
                              clip_x0=clip_x0)

    return run_reverse_chain(x_t, timesteps, step, keep=keep, progress=progress, desc="ScoreALD",
                             postfix=lambda x0_hat: {"misfit": f"{residual_norm(op, x0_hat, y).mean():.3f}"})


@torch.no_grad()
def dps_sample(model: DiffusionModel, op: Operator, y: torch.Tensor, generator: Generators, *,
               zeta: float | torch.Tensor, sigma_y: float | None = None, num_steps: int | None = None,
               step: DPSStep = "paper", variance: Variance | None = None, clip_x0: bool = True,
               x_T: torch.Tensor | None = None, keep: tuple[int, ...] = (), progress: bool = True
               ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    r"""DPS posterior sampling (paper Sec. III-C pseudocode with the corrected eq. 7, or DPS's published step).

    Starts from :math:`x_T \sim \mathcal{N}(0, I)` (or ``x_T``) and runs :func:`dps_step` over
    :func:`helpers.sampling.respaced_timesteps` (``num_steps=None``: all ``T`` steps) with a constant ``zeta``.
    Each step costs one forward and one backward pass of the network.

    Reference: paper Sec. III-C; Chung et al., 2022; notebook 06. ``y``: ``(B, 3, S, S)`` measurement in
    model-range units. ``zeta >= 0``: a number or a ``(B,)`` tensor of per-image values. ``step``: ``"paper"``
    (:math:`\zeta / (2\sigma_y^2)` on the gradient of the squared norm; needs ``sigma_y > 0``) or ``"dps"``
    (:math:`\zeta` on the gradient of the norm); see :func:`dps_step`. ``zeta = 0`` is plain DDPM with the same
    noise. Returns ``(x_0, kept)`` as :func:`score_ald_sample`; the progress bar shows
    :math:`\|y - \mathcal{A}(\hat x_0)\|`, the mean over the batch of the per-image norms.

    Raises ``ValueError`` for a bad ``zeta``, ``sigma_y``, ``step``, ``y``, ``x_T``, ``num_steps`` or ``generator``.
    """
    x_t, y, timesteps = _start(model, op, y, generator, num_steps, x_T)
    return run_reverse_chain(
        x_t, timesteps, lambda x, t, t_prev: dps_step(model, op, x, y, t, t_prev, generator, zeta, sigma_y=sigma_y,
                                                      step=step, variance=variance, clip_x0=clip_x0),
        keep=keep, progress=progress, desc=f"DPS, step={step!r}",
        postfix=lambda x0_hat: {"misfit": f"{residual_norm(op, x0_hat, y).mean():.3f}"})


def residual_norm(op: Operator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The misfit :math:`\|y - \mathcal{A}(x)\|` per image, a ``(B,)`` tensor (no reduction over the batch).

    The samplers' diagnostic, shown on their progress bars for :math:`x = \hat x_0`. For the true image it is about
    :math:`\sigma_y \sqrt{m}` (:math:`m` measured values), the size of the measurement noise. Reference: notebook 06.
    """
    return torch.linalg.vector_norm((y - op.A(x)).flatten(1), dim=1)


# ---- argument checks (the rules themselves are in helpers/_checks.py) ----

SIGMA_Y_HINT = "the measurement noise std in [-1, 1] units, e.g. 0.05"


def _measured(op: Operator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``op.A(x)``, after checking that ``y`` is a finite measurement of exactly its shape (no broadcasting)."""
    A_x = op.A(x)
    _checks.tensor(y, "y", shape=f"op.A(x_t)'s {tuple(A_x.shape)}", ndim=None, channels=None)
    _checks.same_shape(y, A_x, "y", "op.A(x_t)", "one measurement per image of x_t")
    return A_x


def _start(model: DiffusionModel, op: Operator, y: torch.Tensor, generator: Generators, num_steps: int | None,
           x_T: torch.Tensor | None, adjoint: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Check what a loop adds to its steps' arguments; return x_T (drawn from ``generator`` unless given, in ``y``'s
    dtype), ``y`` on the model's device, and the timesteps."""
    for method in ("A", "A_adjoint") if adjoint else ("A",):
        if not callable(getattr(op, method, None)):
            raise ValueError(f"op must be a forward model with a method op.{method} (every operator of "
                             f"helpers.operators has A and its exact adjoint A_adjoint); got {type(op).__name__}.")
    _checks.tensor(y, "y", shape="(B, ...) as made by op.measure(x, sigma_y, generator)", ndim=4, channels=None,
                   max_abs=3)
    shape = (y.shape[0], 3, model.image_size, model.image_size)
    _checks.same_shape(y, op.A(torch.zeros(shape, dtype=y.dtype, device=y.device)), "y",
                       f"op.A(x) for images of model {model.name!r}",
                       f"measure images of size {model.image_size}: images.load_image(..., size={model.image_size})")
    _checks.generator(generator, y.shape[0])
    timesteps = respaced_timesteps(model.T, model.T if num_steps is None else num_steps)
    y = y.to(model.device)
    if x_T is None:
        x_T = randn(shape, generator, like=y)
    else:
        _checks.tensor(x_T, "x_T", shape=f"None or {shape}, one start per measurement", size=model.image_size)
        _checks.same_shape(x_T, y.new_empty(shape), "x_T", "one start per measurement")
    return x_T.to(device=model.device, dtype=y.dtype), y, timesteps
