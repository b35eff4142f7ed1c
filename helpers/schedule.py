"""The noise schedule of the forward process: beta_t, alpha_t and alpha_bar_t (paper eqs. 2-3).

Timestep convention (used everywhere in the course, as in diffusers and in the DPS code): the code's
index ``t`` runs over ``0, 1, ..., T-1`` and stands for the paper's step ``t + 1``. So
``alpha_bar[t]`` is the paper's :math:`\\bar\\alpha_{t+1} = \\prod_{i=1}^{t+1} \\alpha_i`, ``alpha_bar[0]``
is :math:`1 - \\beta_1`, and the paper's last reverse step (``t = 1``, no noise) is the code's ``t = 0``.
"""
from __future__ import annotations

import dataclasses

import torch

T = 1000
BETA_START = 1e-4
BETA_END = 0.02


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The linear-beta schedule of the paper and of DDPM/DPS, stored in float64 on one device.

    ``beta[t]``, ``alpha[t] = 1 - beta[t]`` and ``alpha_bar[t] = prod_{i <= t} alpha[i]`` (paper eqs. 2-3),
    each of shape ``(T,)``.
    """

    beta: torch.Tensor
    alpha: torch.Tensor
    alpha_bar: torch.Tensor

    @property
    def T(self) -> int:
        return int(self.beta.shape[0])



def linear_schedule(T: int = T, beta_start: float = BETA_START, beta_end: float = BETA_END,
                    device: torch.device | str = "cpu") -> Schedule:
    """Linear betas from ``beta_start`` to ``beta_end`` over ``T`` steps (paper Sec. III-A; DDPM, DPS).

    .. math:: \\alpha_t = 1 - \\beta_t, \\qquad \\bar\\alpha_t = \\prod_{i=1}^{t} \\alpha_i

    Reference: paper eq. 3; notebook 01. Stored in float64 (float32 on Apple's MPS, which lacks float64) so that
    identities can be checked to float precision; functions that use it cast to the dtype of the image.
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer number of steps; got {T!r}.")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"betas must satisfy 0 < beta_start <= beta_end < 1; got beta_start={beta_start}, "
                         f"beta_end={beta_end}.")
    beta = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    alpha = 1.0 - beta
    alpha_bar = torch.cumprod(alpha, dim=0)
    # Apple's MPS has no float64: there the schedule is stored in float32 (computed in float64 first).
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return Schedule(beta=beta.to(device, dtype), alpha=alpha.to(device, dtype), alpha_bar=alpha_bar.to(device, dtype))


def check_timestep(t: int | torch.Tensor, T: int, batch: int | None = None) -> torch.Tensor:
    """Return ``t`` as a long tensor of shape ``(batch,)`` (or ``()``), after checking ``0 <= t < T``.

    Raises ``ValueError`` naming ``t`` and the allowed range when it is outside ``[0, T)``, not an integer,
    or has a shape that does not match the batch.
    """
    t_tensor = torch.as_tensor(t)
    if t_tensor.dtype.is_floating_point or t_tensor.dtype == torch.bool:
        if t_tensor.dtype == torch.bool or not torch.equal(t_tensor, t_tensor.round()):
            raise ValueError(f"t must be an integer timestep in [0, {T}); got {t!r} of dtype {t_tensor.dtype}.")
    t_tensor = t_tensor.long()
    if t_tensor.numel() and (t_tensor.min() < 0 or t_tensor.max() >= T):
        raise ValueError(f"t must be in [0, {T}) (the code's index runs 0..T-1 for the paper's steps 1..T); "
                         f"got t={t_tensor.tolist()}.")
    if t_tensor.ndim > 1 or (t_tensor.ndim == 1 and batch is not None and t_tensor.shape[0] not in (1, batch)):
        raise ValueError(f"t must be a scalar or have shape ({batch},) to match the batch; got shape "
                         f"{tuple(t_tensor.shape)}.")
    if batch is not None:
        t_tensor = t_tensor.reshape(-1).expand(batch) if t_tensor.ndim else t_tensor.expand(batch)
    return t_tensor


def add_noise(x0: torch.Tensor, z: torch.Tensor, t: int | torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    r"""Sample :math:`x_t` from :math:`x_0` in one shot, by the closed form of the forward process.

    .. math:: x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, z, \qquad z \sim \mathcal{N}(0, I)

    Reference: paper eq. 3; notebook 01. ``x0`` and ``z``: ``(B, 3, H, W)``; ``t``: int or ``(B,)`` in
    ``[0, T)``; ``alpha_bar``: the schedule's ``(T,)`` tensor. Returns a tensor of ``x0``'s dtype.
    """
    if x0.shape != z.shape:
        raise ValueError(f"x0 and z must have the same shape; got {tuple(x0.shape)} and {tuple(z.shape)}.")
    t = check_timestep(t, alpha_bar.shape[0], batch=x0.shape[0] if x0.ndim == 4 else None).to(alpha_bar.device)
    alpha_bar_t = alpha_bar[t].to(device=x0.device, dtype=x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * z
