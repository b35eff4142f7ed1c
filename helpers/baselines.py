r"""Classical baselines a diffusion posterior sampler should beat: biharmonic inpainting and Tikhonov deblurring.

Both take a batch of measurements ``y`` ``(B, 3, S, S)`` in the model range [-1, 1] (as made by
``op.measure(x, sigma_y, generator)`` with a :mod:`helpers.operators` operator) and return reconstructions of the
same shape, dtype and device. Neither uses a learned prior: they are what "a smooth image that agrees with the
measurement" gives, the bar a face model has to clear (issue 10; notebook 06).
"""
from __future__ import annotations


import numpy as np
import torch

from helpers import _checks
from helpers.operators import GaussianBlur, Inpainting


def _check_measurement(y: torch.Tensor, size: int | None = None) -> None:
    shape = f"(B, 3, {size}, {size})" if size is not None else "(B, 3, S, S)"
    _checks.tensor(y, "y", shape=shape, size=size, max_abs=3, fix="Measure with op.measure(x, sigma_y, generator); add a "
                   "batch dimension with y[None].")


def biharmonic_inpainting(y: torch.Tensor, op: Inpainting) -> torch.Tensor:
    r"""Fill the pixels ``op`` hides by biharmonic interpolation of the observed ones (scikit-image).

    The missing pixels :math:`u` solve :math:`\Delta^2 u = 0` with the observed pixels as boundary values, each
    colour channel separately (``skimage.restoration.inpaint_biharmonic(..., channel_axis=-1)``); observed pixels
    are kept as measured, noise included. The mask is ``op.mask`` (``(1, 1, S, S)``, 1 = observed), the same for
    every image and channel. Reference: issue 10 (honest baselines); Damelin & Hoang, 2018.

    ``y``: ``(B, 3, S, S)`` measurement in model-range units, zeros where pixels are missing, on any device.
    ``op``: a :class:`helpers.operators.Inpainting` (box or random). Returns ``(B, 3, S, S)`` in ``y``'s dtype and
    on its device. No parameter to tune.

    Raises ``ValueError`` for an ``op`` that is not an inpainting operator, a ``y`` of the wrong type, shape or
    range, or a mask that observes no pixel at all.
    """
    from skimage.restoration import inpaint_biharmonic

    if not isinstance(op, Inpainting):
        raise ValueError(f"op must be a helpers.operators.Inpainting (operators.box_inpainting or "
                         f"operators.random_inpainting); got {type(op).__name__}. For a blur use tikhonov_deblurring.")
    _check_measurement(y, op.image_size)
    observed = op.mask[0, 0].cpu().numpy() > 0.5
    if not observed.any():
        raise ValueError(f"op.mask must observe at least one pixel for biharmonic inpainting; {op.name} observes none.")
    missing = ~observed
    out = []
    for image in y.detach().cpu().double().numpy():
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        filled = inpaint_biharmonic(hwc, missing, channel_axis=-1) if missing.any() else hwc
        out.append(torch.from_numpy(np.ascontiguousarray(filled.transpose(2, 0, 1))))
    return torch.stack(out).to(device=y.device, dtype=y.dtype)


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences with a zero difference across the last row/column (Neumann boundary)."""
    dy = torch.zeros_like(x)
    dx = torch.zeros_like(x)
    dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return dy, dx


def _grad_adjoint(dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    r"""The exact adjoint :math:`D^H` of :func:`_grad` (a negative divergence)."""
    out = torch.zeros_like(dy)
    out[..., :-1, :] -= dy[..., :-1, :]
    out[..., 1:, :] += dy[..., :-1, :]
    out[..., :, :-1] -= dx[..., :, :-1]
    out[..., :, 1:] += dx[..., :, :-1]
    return out


def tikhonov_deblurring(y: torch.Tensor, op: GaussianBlur, lam: float, tol: float = 1e-6,
                        max_iter: int = 2000) -> torch.Tensor:
    r"""The exact minimiser of a gradient-penalised least-squares deblurring problem, by conjugate gradients.

    .. math:: \hat x = \arg\min_x \|\mathcal{A} x - y\|^2 + \lambda \|D x\|^2, \qquad
              (\mathcal{A}^H \mathcal{A} + \lambda D^H D)\, \hat x = \mathcal{A}^H y

    with :math:`D` the forward differences along rows and columns (zero across the last row/column, a Neumann
    boundary) and :math:`\mathcal{A}`, :math:`\mathcal{A}^H` the operator's own ``op.A`` and ``op.A_adjoint``, so the
    solution is exact for its reflect padding (no circular-convolution approximation, as a Fourier-domain Wiener
    filter would make). The normal equations are solved per image by conjugate gradients in float64, from
    :math:`x = \mathcal{A}^H y`, until the residual :math:`r` of the normal equations has
    :math:`\|r\| \le` ``tol`` :math:`\cdot \|\mathcal{A}^H y\|` for every image (recomputed at the end; more than
    10 ``tol`` raises).
    Reference: Tikhonov regularisation (e.g. Hansen, *Discrete Inverse Problems*, ch. 4); the blur is paper eq. 8;
    issue 10 (honest baselines).

    Why :math:`\|D x\|^2` and not :math:`\|x\|^2`: the plain penalty pulls every pixel towards 0 (mid-grey in the
    model range) and damps the low frequencies that the blur keeps, so it trades contrast for noise suppression;
    the gradient penalty leaves constant and slowly varying content free and only damps the high frequencies that
    the blur destroyed and the noise fills. Measured on 48 held-out faces (every 12th of ``celeb_180``..``celeb_199``,
    32 x 32, the course's blur, :math:`\sigma_y = 0.05`; blurry measurement 23.1 dB), each penalty at its best
    :math:`\lambda` of 0.003, 0.01, 0.03, 0.1, 0.3: :math:`\|D x\|^2` 25.2 dB PSNR / SSIM 0.888, :math:`\|x\|^2`
    23.5 dB / 0.855, both at :math:`\lambda = 0.03`.

    ``y``: ``(B, 3, S, S)`` blurred measurement in model-range units. ``op``: a
    :class:`helpers.operators.GaussianBlur`. ``lam``: the one parameter, :math:`\lambda > 0` (tune it on held-out
    images: larger is smoother). ``tol`` in (0, 1), ``max_iter >= 1``. Returns :math:`\hat x`, ``(B, 3, S, S)`` in
    ``y``'s dtype and on its device.

    Raises ``ValueError`` for a bad ``lam``, ``tol``, ``max_iter``, ``op`` or ``y``, and ``RuntimeError`` if CG
    does not reach ``tol`` within ``max_iter`` iterations (never a silently unconverged answer).
    """
    if not isinstance(op, GaussianBlur):
        raise ValueError(f"op must be a helpers.operators.GaussianBlur; got {type(op).__name__}. For inpainting use "
                         f"biharmonic_inpainting.")
    _checks.number(lam, "lam", allow_zero=False, hint="the weight of the gradient penalty lam ||D x||^2; e.g. 0.03 "
                   "for sigma_y = 0.05 at 32 x 32")
    if not _checks.number(tol, "tol", allow_zero=False, hint="CG stops when ||r|| <= tol ||A^H y||") < 1:
        raise ValueError(f"tol must be a number in (0, 1) (CG stops when ||r|| <= tol ||A^H y||); got {tol!r}.")
    _checks.integer(max_iter, "max_iter", low=1, hint="the most CG iterations")
    _check_measurement(y)

    def normal(x):  # (A^H A + lam D^H D) x
        return op.A_adjoint(op.A(x)) + lam * _grad_adjoint(*_grad(x))

    def dot(a, b):  # per image
        return (a * b).sum(dim=(1, 2, 3), keepdim=True)

    b = op.A_adjoint(y.detach().double())
    b_norm = torch.linalg.vector_norm(b.flatten(1), dim=1).clamp_min(1e-300)
    # (1) start from A^H y; r = b - M x, p = r
    x = b.clone()
    r = b - normal(x)
    p = r.clone()
    rr = dot(r, r)
    iterations = 0
    relative = torch.linalg.vector_norm(r.flatten(1), dim=1) / b_norm
    # (2) CG iterations on the symmetric positive definite normal equations, every image at once (their own steps)
    while (relative > tol).any() and iterations < max_iter:
        Mp = normal(p)
        pMp = dot(p, Mp)
        step = torch.where(rr > 0, rr / pMp.clamp_min(1e-300), torch.zeros_like(rr))
        x = x + step * p
        r = r - step * Mp
        rr_new = dot(r, r)
        p = r + torch.where(rr > 0, rr_new / rr.clamp_min(1e-300), torch.zeros_like(rr)) * p
        rr = rr_new
        iterations += 1
        relative = torch.linalg.vector_norm(r.flatten(1), dim=1) / b_norm
    # (3) the true residual of the normal equations, recomputed (CG's recursive r drifts in long runs)
    relative = torch.linalg.vector_norm((b - normal(x)).flatten(1), dim=1) / b_norm
    if (relative > 10 * tol).any():
        raise RuntimeError(f"conjugate gradients did not reach tol={tol:g} in max_iter={max_iter} iterations "
                           f"(worst relative residual {relative.max().item():.3g}); raise max_iter or lam.")
    return x.to(dtype=y.dtype, device=y.device)
