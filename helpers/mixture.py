r"""A Gaussian-mixture prior whose score, :math:`\hat x_0` and posterior are exact: ground truth for the samplers.

On faces nobody knows the right answer; for a mixture of Gaussians everything the samplers approximate has a closed
form (notebook 07):

- the forward process (paper eq. 3) keeps every component Gaussian, so :math:`p_t` is again a mixture
  (:func:`noised`), with an exact score (:func:`score`) and an exact posterior mean :math:`E[x_0 \mid x_t]`
  (:func:`x0_mean`), which Tweedie's formula (eq. 6) must reproduce;
- a linear measurement :math:`y = A x + \sigma_y z` (eq. 8) keeps it a mixture too, with new weights, means and
  covariances (:func:`posterior`, :func:`component_posterior`);
- :class:`MixtureModel` puts the exact score behind the interface of :class:`helpers.models.DiffusionModel`
  (``eps``, ``score``, ``x0_hat``, ``alpha_bar``, ``T``, ``image_size``, ``device``, ``name``), and
  :class:`MatrixOperator` a matrix behind the operators' (``A``, ``A_adjoint``, ``measure``), so that the face
  samplers of :mod:`helpers.sampling` and :mod:`helpers.posterior` run on points unchanged;
- :func:`sliced_wasserstein` measures how far a sampler's output is from exact samples.

Shapes: a mixture in :math:`d` dimensions holds ``weights`` ``(K,)``, ``means`` ``(K, d)`` and ``covs``
``(K, d, d)``, stored in float64; points are ``(N, d)``. The samplers work on images ``(B, 3, S, S)``, so a model
sees a point of dimension :math:`d = 3 S^2` as a ``(1, 3, S, S)`` image: with ``S = 1``, a point in 3-D. A 2-D
mixture gets a third coordinate, the same independent Gaussian in every component (:func:`append_coordinates`),
which leaves its picture in the plane unchanged. All randomness comes from the ``torch.Generator`` passed in.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from helpers import _checks
from helpers.models import ScoreModel
from helpers.schedule import Schedule, check_timestep, linear_schedule

CHANNELS = 3   # the samplers' images have 3 channels: a point of dimension 3 S^2 is a (3, S, S) image


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    r""":math:`p(x) = \sum_k w_k\, \mathcal{N}(x;\, m_k, C_k)`: ``weights`` ``(K,)``, ``means`` ``(K, d)``, ``covs``
    ``(K, d, d)``, float64 on the CPU. Make one with :func:`gaussian_mixture`, which checks the arguments."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    @property
    def K(self) -> int:
        return int(self.weights.shape[0])

    @property
    def d(self) -> int:
        return int(self.means.shape[1])


def _array(value, name: str) -> torch.Tensor:
    """An array-like of real numbers as a float64 CPU tensor, or a ``ValueError`` naming it."""
    if isinstance(value, torch.Tensor) and not (value.dtype.is_floating_point or value.dtype == torch.long):
        raise ValueError(f"{name} must hold real numbers; got a {value.dtype} tensor.")
    try:
        return torch.as_tensor(value, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be a list or tensor of real numbers; got {value!r:.80} ({error}).") from None


def gaussian_mixture(weights, means, covs) -> GaussianMixture:
    """A checked :class:`GaussianMixture` from array-likes (lists or tensors), stored in float64.

    Raises ``ValueError`` naming the argument, what came and what is allowed: ``weights`` positive and summing to 1
    (within 1e-6), ``means`` ``(K, d)``, ``covs`` ``(K, d, d)`` symmetric positive definite, all finite.
    """
    weights, means, covs = (_array(v, name) for v, name in ((weights, "weights"), (means, "means"), (covs, "covs")))
    if weights.ndim != 1 or weights.shape[0] < 1:
        raise ValueError(f"weights must be a 1-D list of K >= 1 component weights; got shape {tuple(weights.shape)}.")
    K = weights.shape[0]
    if not torch.isfinite(weights).all() or (weights <= 0).any() or abs(float(weights.sum()) - 1) > 1e-6:
        raise ValueError(f"weights must be positive and sum to 1; got {weights.tolist()} (sum "
                         f"{float(weights.sum()):.6g}). Divide by their sum.")
    if means.ndim != 2 or means.shape[0] != K:
        raise ValueError(f"means must have shape (K, d) = ({K}, d), one mean per weight; got shape "
                         f"{tuple(means.shape)}.")
    d = means.shape[1]
    if covs.shape != (K, d, d):
        raise ValueError(f"covs must have shape (K, d, d) = ({K}, {d}, {d}), one covariance per component; got shape "
                         f"{tuple(covs.shape)}.")
    if not (torch.isfinite(means).all() and torch.isfinite(covs).all()):
        raise ValueError("means and covs must be finite; got NaN or inf.")
    if not torch.allclose(covs, covs.transpose(1, 2), rtol=0, atol=1e-12):
        raise ValueError(f"covs must be symmetric; component(s) "
                         f"{[k for k in range(K) if not torch.allclose(covs[k], covs[k].T, rtol=0, atol=1e-12)]} "
                         f"are not.")
    eigenvalues = torch.linalg.eigvalsh(covs)
    if (eigenvalues <= 0).any():
        bad = sorted({int(k) for k in torch.nonzero(eigenvalues <= 0)[:, 0]})
        raise ValueError(f"covs must be positive definite; component(s) {bad} have eigenvalues "
                         f"{[eigenvalues[k].tolist() for k in bad]}.")
    return GaussianMixture(weights=weights, means=means, covs=covs)


def append_coordinates(mixture: GaussianMixture, count: int, std: float) -> GaussianMixture:
    r"""The mixture with ``count`` more coordinates, each an independent :math:`\mathcal{N}(0, \text{std}^2)`, the
    same in every component: :math:`p(x, u) = p(x)\, \mathcal{N}(u;\, 0, \text{std}^2 I)`.

    The first ``d`` coordinates keep their distribution, their scores under eq. 3 and their posterior under a
    measurement of them alone; the new ones never depend on them. Used to give a 2-D mixture the 3 coordinates of a
    1x1 image with 3 channels (notebook 07).
    """
    _checks.integer(count, "count", low=0, hint="coordinates to add")
    _checks.number(std, "std", allow_zero=False, hint="the added coordinates' standard deviation")
    K, d = mixture.K, mixture.d
    means = torch.cat([mixture.means, torch.zeros(K, count, dtype=torch.float64)], dim=1)
    covs = torch.zeros(K, d + count, d + count, dtype=torch.float64)
    covs[:, :d, :d] = mixture.covs
    covs[:, d:, d:] = std ** 2 * torch.eye(count, dtype=torch.float64)
    return GaussianMixture(weights=mixture.weights, means=means, covs=covs)


def _check_alpha_bar(alpha_bar_t) -> float:
    ok = isinstance(alpha_bar_t, (int, float)) and not isinstance(alpha_bar_t, bool) or (
        isinstance(alpha_bar_t, torch.Tensor) and alpha_bar_t.numel() == 1 and alpha_bar_t.dtype.is_floating_point)
    value = float(alpha_bar_t) if ok else alpha_bar_t
    if not ok or not 0 < value <= 1:
        raise ValueError(f"alpha_bar_t must be in (0, 1] (e.g. model.alpha_bar[t]); got {value!r}.")
    return value


def noised(mixture: GaussianMixture, alpha_bar_t: float | torch.Tensor) -> GaussianMixture:
    r"""The distribution :math:`p_t` of :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, z` for
    :math:`x_0` from the mixture: the same weights, and components

    .. math:: \mathcal{N}\left(\sqrt{\bar\alpha_t}\, m_k,\; \bar\alpha_t C_k + (1 - \bar\alpha_t) I\right).

    Reference: paper eq. 3 (a Gaussian through a linear map plus independent Gaussian noise stays Gaussian);
    notebook 07. ``alpha_bar_t``: a number or 0-dim tensor in (0, 1]; 1 gives the mixture itself.
    """
    a = _check_alpha_bar(alpha_bar_t)
    eye = torch.eye(mixture.d, dtype=torch.float64)
    return GaussianMixture(weights=mixture.weights, means=math.sqrt(a) * mixture.means,
                           covs=a * mixture.covs + (1 - a) * eye)


def _points(x: torch.Tensor, mixture: GaussianMixture, name: str = "x") -> torch.Tensor:
    return _checks.tensor(x, name, shape=f"(N, {mixture.d}), one point per row", ndim=2, channels=mixture.d,
                          fix="Convert images with mixture.to_points(x).").to(torch.float64)


def _component_terms(mixture: GaussianMixture, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(log_joint, precision_times_diff)``: :math:`\log w_k + \log \mathcal{N}(x;\, m_k, C_k)` of shape ``(N, K)``
    and :math:`C_k^{-1}(x - m_k)` of shape ``(N, K, d)``, by Cholesky factors (differentiable in ``x``)."""
    chol = torch.linalg.cholesky(mixture.covs)                                  # (K, d, d)
    diff = (x[:, None, :] - mixture.means[None]).permute(1, 2, 0)              # (K, d, N)
    white = torch.linalg.solve_triangular(chol, diff, upper=False)             # L^{-1} (x - m)
    mahalanobis = white.pow(2).sum(dim=1).T                                    # (N, K)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(dim=1)   # (K,)
    log_normal = -0.5 * (mahalanobis + log_det + mixture.d * math.log(2 * math.pi))
    precision_diff = torch.linalg.solve_triangular(chol.transpose(1, 2), white, upper=True).permute(2, 0, 1)
    return torch.log(mixture.weights) + log_normal, precision_diff


def log_prob(mixture: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(x) = \log \sum_k w_k \mathcal{N}(x;\, m_k, C_k)` for points ``x`` ``(N, d)``; returns ``(N,)``
    in float64."""
    log_joint, _ = _component_terms(mixture, _points(x, mixture))
    return torch.logsumexp(log_joint, dim=1)


def responsibilities(mixture: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    r""":math:`r_k(x) = w_k \mathcal{N}(x;\, m_k, C_k) / p(x)`, the probability that ``x`` came from component
    :math:`k`: ``(N, K)`` in float64, rows summing to 1."""
    log_joint, _ = _component_terms(mixture, _points(x, mixture))
    return torch.softmax(log_joint, dim=1)


def score(mixture: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    r"""The exact score of the mixture, :math:`\nabla_x \log p(x)`, for points ``x`` ``(N, d)``:

    .. math:: \nabla_x \log p(x) = -\sum_k r_k(x)\, C_k^{-1} (x - m_k)

    each component's score weighted by its responsibility :math:`r_k(x)` (:func:`responsibilities`). The score of
    :math:`p_t` is ``score(noised(mixture, alpha_bar_t), x_t)``. Reference: the score below paper eq. 4; notebook
    07. Returns ``(N, d)`` in float64; differentiable in ``x``.
    """
    log_joint, precision_diff = _component_terms(mixture, _points(x, mixture))
    return -(torch.softmax(log_joint, dim=1)[:, :, None] * precision_diff).sum(dim=1)


def x0_mean(mixture: GaussianMixture, x_t: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    r"""The exact posterior mean :math:`E[x_0 \mid x_t]` under eq. 3, computed without the score:

    .. math:: E[x_0 \mid x_t] = \sum_k r_k^{(t)}(x_t) \left(m_k + \sqrt{\bar\alpha_t}\, C_k \Sigma_k^{-1}
              (x_t - \sqrt{\bar\alpha_t}\, m_k)\right), \qquad \Sigma_k = \bar\alpha_t C_k + (1 - \bar\alpha_t) I

    the mean of each component's Gaussian posterior (:func:`component_posterior` with :math:`A = \sqrt{\bar\alpha_t}
    I`, :math:`\sigma_y^2 = 1 - \bar\alpha_t`), weighted by the responsibilities :math:`r_k^{(t)}` under
    :math:`p_t`. Tweedie's formula (eq. 6) with the exact score gives the same (:meth:`MixtureModel.x0_hat`).
    Reference: paper eq. 6; notebook 07. ``x_t``: ``(N, d)``; returns ``(N, d)`` in float64.
    """
    a = _check_alpha_bar(alpha_bar_t)
    x_t = _points(x_t, mixture, "x_t")
    p_t = noised(mixture, a)
    log_joint, precision_diff = _component_terms(p_t, x_t)                      # Sigma_k^{-1} (x_t - sqrt(a) m_k)
    means = mixture.means[None] + math.sqrt(a) * torch.einsum("kij,nkj->nki", mixture.covs, precision_diff)
    return (torch.softmax(log_joint, dim=1)[:, :, None] * means).sum(dim=1)


def sample(mixture: GaussianMixture, num_samples: int, generator: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` exact draws from the mixture: ``(points (N, d) float64, component labels (N,) long)``.

    A component by its weight, then :math:`m_k + L_k z` with :math:`C_k = L_k L_k^T`; all from ``generator``.
    """
    _checks.integer(num_samples, "num_samples", low=1)
    _checks.generator(generator, batch=1)
    labels = torch.multinomial(mixture.weights, num_samples, replacement=True, generator=generator)
    z = torch.randn(num_samples, mixture.d, generator=generator, dtype=torch.float64)
    chol = torch.linalg.cholesky(mixture.covs)
    return mixture.means[labels] + torch.einsum("nij,nj->ni", chol[labels], z), labels


# ---- the posterior under a linear measurement y = A x + sigma_y z (paper eq. 8) ----

def component_posterior(mean: torch.Tensor, cov: torch.Tensor, A: torch.Tensor, y: torch.Tensor,
                        sigma_y: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The posterior of one Gaussian :math:`\mathcal{N}(m, C)` after :math:`y = A x + \sigma_y z`: mean and covariance

    .. math:: S = A C A^T + \sigma_y^2 I, \quad G = C A^T S^{-1}, \quad
              m' = m + G (y - A m), \quad C' = C - G A C

    (the Kalman update). Reference: paper eq. 8 with a linear :math:`\mathcal{A}`; notebook 07, exercise 2. Shapes:
    ``mean`` ``(..., d)``, ``cov`` ``(..., d, d)``, ``A`` ``(m, d)``, ``y`` ``(m,)``; returns ``(..., d)`` and
    ``(..., d, d)`` (leading dimensions broadcast, e.g. over components).
    """
    for value, name, ndim in ((mean, "mean", 1), (cov, "cov", 2), (A, "A", 2), (y, "y", 1)):
        _checks.tensor(value, name, shape="(..., d), (..., d, d), (m, d) and (m,) for mean, cov, A and y",
                       ndim=None if name in ("mean", "cov") else ndim, channels=None)
    d = mean.shape[-1] if mean.ndim else 0
    if d < 1 or cov.shape[-2:] != (d, d) or A.shape[1] != d or y.shape != (A.shape[0],):
        raise ValueError(f"mean, cov, A and y must have shapes (..., d), (..., d, d), (m, d) and (m,); got "
                         f"{tuple(mean.shape)}, {tuple(cov.shape)}, {tuple(A.shape)} and {tuple(y.shape)}.")
    _checks.number(sigma_y, "sigma_y", allow_zero=True, hint="the measurement noise std")
    return _kalman(mean, cov, A, y, sigma_y)


def _kalman(mean: torch.Tensor, cov: torch.Tensor, A: torch.Tensor, y: torch.Tensor, sigma_y: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    S = A @ cov @ A.T + sigma_y ** 2 * torch.eye(A.shape[0], dtype=cov.dtype)
    gain = torch.linalg.solve(S, A @ cov).transpose(-1, -2)                    # C A^T S^{-1} (S and C symmetric)
    post_mean = mean + (gain @ (y - (A @ mean[..., None])[..., 0])[..., None])[..., 0]
    post_cov = cov - gain @ A @ cov
    return post_mean, 0.5 * (post_cov + post_cov.transpose(-1, -2))           # symmetric to rounding


def posterior(mixture: GaussianMixture, A: torch.Tensor, y: torch.Tensor, sigma_y: float) -> GaussianMixture:
    r"""The exact posterior :math:`p(x \mid y)` of the mixture after :math:`y = A x + \sigma_y z`, again a mixture:

    .. math:: w'_k \propto w_k\, \mathcal{N}(y;\, A m_k,\, A C_k A^T + \sigma_y^2 I),

    each component updated by :func:`component_posterior`. Reference: paper eq. 8 and Bayes' rule (Sec. III-C);
    notebook 07. ``A``: ``(m, d)``; ``y``: ``(m,)`` (one measurement); ``sigma_y >= 0`` (0 needs
    :math:`A C_k A^T` invertible).
    """
    A, y = _check_measurement(mixture, A, y, sigma_y)
    S = A @ mixture.covs @ A.T + sigma_y ** 2 * torch.eye(A.shape[0], dtype=torch.float64)   # (K, m, m)
    evidence = GaussianMixture(weights=mixture.weights, means=mixture.means @ A.T, covs=S)
    log_joint, _ = _component_terms(evidence, y[None])
    means, covs = _kalman(mixture.means, mixture.covs, A, y, sigma_y)
    return GaussianMixture(weights=torch.softmax(log_joint[0], dim=0), means=means, covs=covs)


def _check_measurement(mixture: GaussianMixture, A, y, sigma_y) -> tuple[torch.Tensor, torch.Tensor]:
    A, y = _array(A, "A"), _array(y, "y").reshape(-1)
    if A.ndim != 2 or A.shape[1] != mixture.d:
        raise ValueError(f"A must be a matrix of shape (m, {mixture.d}) for this {mixture.d}-D mixture; got shape "
                         f"{tuple(A.shape)}.")
    if y.shape != (A.shape[0],):
        raise ValueError(f"y must hold one measurement of {A.shape[0]} values (A has {A.shape[0]} rows); got "
                         f"{y.numel()} values.")
    if not (torch.isfinite(A).all() and torch.isfinite(y).all()):
        raise ValueError("A and y must be finite; got NaN or infinite values.")
    _checks.number(sigma_y, "sigma_y", allow_zero=True, hint="the measurement noise std")
    return A, y


# ---- the samplers' interfaces: a model and an operator for points seen as (B, 3, S, S) images ----

def image_size_for(d: int) -> int:
    """The side ``S`` of the ``(3, S, S)`` image that holds a point of dimension ``d = 3 S^2`` (3 -> 1, 12 -> 2)."""
    _checks.integer(d, "d", low=1, hint="a point's dimension")
    size = math.isqrt(d // CHANNELS) if d % CHANNELS == 0 else 0
    if size < 1 or CHANNELS * size * size != d:
        raise ValueError(f"the mixture's dimension must be 3 S^2 (3, 12, 27, ...) so that a point is a (3, S, S) "
                         f"image for the samplers; got d = {d}. Add coordinates with "
                         f"mixture.append_coordinates(prior, count, std).")
    return size


def to_images(points: torch.Tensor) -> torch.Tensor:
    """Points ``(N, d)`` as the samplers' images ``(N, 3, S, S)``, ``d = 3 S^2`` (a view, same dtype)."""
    _checks.tensor(points, "points", shape="(N, d), one point per row", ndim=2, channels=None, finite=False)
    size = image_size_for(points.shape[-1])
    return points.reshape(points.shape[0], CHANNELS, size, size)


def to_points(x: torch.Tensor) -> torch.Tensor:
    """The samplers' images ``(N, 3, S, S)`` as points ``(N, 3 S^2)`` (a view, same dtype)."""
    _checks.tensor(x, "x", shape="(N, 3, S, S)", finite=False)
    return x.flatten(1)


@dataclasses.dataclass(frozen=True, eq=False)
class MixtureModel(ScoreModel):
    r"""The exact "network" of a Gaussian-mixture prior, with the interface of
    :class:`helpers.models.DiffusionModel`: ``eps``, ``score``, ``x0_hat`` (:class:`helpers.models.ScoreModel`),
    ``beta``, ``alpha``, ``alpha_bar``, ``T``, ``image_size``, ``device``, ``name``. Make one with
    :func:`mixture_model`.

    Where a trained network *approximates* the score of :math:`p_t`, this one *is* it, from :func:`noised` and
    :func:`score`; every sampler of :mod:`helpers.sampling` and :mod:`helpers.posterior` runs on it unchanged, on
    points of dimension ``d = 3 S^2`` held as ``(B, 3, S, S)`` images (``S = image_size``). Computed in float64,
    returned in the dtype of ``x_t``; differentiable in ``x_t`` (DPS). Its ``score`` is the exact
    :math:`\nabla_{x_t} \log p_t(x_t)` (eq. 3 applied to each component, :func:`noised`), so its ``x0_hat``
    (Tweedie, eq. 6) is the exact :math:`E[x_0 \mid x_t]` (:func:`x0_mean`) and its ``eps`` what a perfectly trained
    network returns.
    """

    name: str
    prior: GaussianMixture
    schedule: Schedule
    image_size: int
    device: torch.device

    def _check(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        size = self.image_size
        _checks.tensor(x_t, "x_t", shape=f"(B, 3, {size}, {size}) for the {self.prior.d}-D mixture {self.name!r}",
                       size=size, fix="Convert points with mixture.to_images(points).")
        return check_timestep(t, self.T, batch=x_t.shape[0])

    def _score(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact score of the noised mixture, one :func:`noised` prior per distinct timestep in the batch."""
        points = to_points(x_t).to(torch.float64)
        out = torch.zeros_like(points)
        for t_value in torch.unique(t).tolist():
            rows = (t == t_value).nonzero()[:, 0]
            out[rows] = score(noised(self.prior, self.alpha_bar[t_value]), points[rows])
        return out.reshape(x_t.shape).to(x_t.dtype)


def mixture_model(prior: GaussianMixture, schedule: Schedule | None = None, name: str = "mixture") -> MixtureModel:
    """Wrap ``prior`` (dimension ``d = 3 S^2``) as a :class:`MixtureModel` on the CPU with ``schedule`` (default: the
    paper's linear schedule, ``schedule.linear_schedule()``, the one of the face models)."""
    if not isinstance(prior, GaussianMixture):
        raise ValueError(f"prior must be a GaussianMixture (mixture.gaussian_mixture(...)); got {type(prior).__name__}.")
    schedule = linear_schedule() if schedule is None else schedule
    schedule = Schedule(beta=schedule.beta.cpu(), alpha=schedule.alpha.cpu(), alpha_bar=schedule.alpha_bar.cpu())
    return MixtureModel(name=name, prior=prior, schedule=schedule, image_size=image_size_for(prior.d),
                        device=torch.device("cpu"))


@dataclasses.dataclass(frozen=True, eq=False)
class MatrixOperator:
    r"""A linear forward model :math:`\mathcal{A} x = M x` for points held as ``(B, 3, S, S)`` images: ``matrix``
    ``(m, d)``, fixed at construction. ``A(x)`` gives ``(B, m, 1, 1)`` (4-D, as the samplers expect),
    ``A_adjoint(y)`` is exactly :math:`M^T y` back in image shape. Make one with :func:`matrix_operator`."""

    matrix: torch.Tensor
    name: str

    @property
    def image_size(self) -> int:
        return image_size_for(self.matrix.shape[1])

    def A(self, x: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        _checks.tensor(x, "x", shape=f"(B, {CHANNELS}, {size}, {size}) for {self.name!r}", size=size,
                       fix="Convert points with mixture.to_images(points).")
        return (to_points(x) @ self.matrix.to(x).T)[:, :, None, None]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        m = self.matrix.shape[0]
        _checks.tensor(y, "y", shape=f"(B, {m}, 1, 1) for {self.name!r}", channels=m, size=1)
        return to_images(y.flatten(1) @ self.matrix.to(y))

    def measure(self, x: torch.Tensor, sigma_y: float, generator: torch.Generator) -> torch.Tensor:
        r""":math:`y = M x + \sigma_y z`, ``z`` from ``generator`` (CPU), ``(B, m, 1, 1)``. Paper eq. 8."""
        _checks.number(sigma_y, "sigma_y", allow_zero=True, hint="the measurement noise std")
        _checks.generator(generator, batch=1)
        y = self.A(x)
        return y + sigma_y * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)


def matrix_operator(matrix, name: str) -> MatrixOperator:
    """A :class:`MatrixOperator` from an ``(m, d)`` array-like, ``d = 3 S^2``; e.g. ``[[1., 0, 0]]`` observes the
    first coordinate of a 3-D point."""
    matrix = _array(matrix, "matrix")
    if matrix.ndim != 2 or not torch.isfinite(matrix).all():
        raise ValueError(f"matrix must be a finite (m, d) matrix; got shape {tuple(matrix.shape)}.")
    image_size_for(matrix.shape[1])
    return MatrixOperator(matrix=matrix, name=name)


# ---- a distance between two sets of samples ----

def random_directions(d: int, num_directions: int, generator: torch.Generator) -> torch.Tensor:
    """``num_directions`` unit vectors uniform on the sphere in ``d`` dimensions, ``(L, d)`` float64."""
    _checks.integer(d, "d", low=1, hint="the points' dimension")
    _checks.integer(num_directions, "num_directions", low=1)
    _checks.generator(generator, batch=1)
    directions = torch.randn(num_directions, d, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    r"""The sliced Wasserstein-2 distance between two equal-size sets of points ``(N, d)``:

    .. math:: \mathrm{SW}_2(x, y) = \Big(\frac{1}{L} \sum_{l=1}^{L} W_2^2(\theta_l^T x,\, \theta_l^T y)\Big)^{1/2},
              \qquad W_2^2(a, b) = \frac{1}{N} \sum_i (a_{(i)} - b_{(i)})^2

    along the fixed unit ``directions`` :math:`\theta_l` ``(L, d)``; in one dimension the optimal transport pairs
    the sorted values :math:`a_{(i)}, b_{(i)}`. Same units as the points. Two finite samples of the *same*
    distribution are not at distance 0: compare with that floor at the same ``N`` (notebook 07). Returns a 0-dim
    float64 tensor.
    """
    dimension = f"(N, {directions.shape[1]}), the directions' dimension"
    _checks.tensor(x, "x", shape=dimension, ndim=2, channels=directions.shape[1])
    _checks.tensor(y, "y", shape=dimension, ndim=2, channels=directions.shape[1])
    if x.shape != y.shape:
        raise ValueError(f"x and y must be point sets of the same shape (N, d) with d = {directions.shape[1]} (the "
                         f"directions' dimension); got {tuple(x.shape)} and {tuple(y.shape)}.")
    a = torch.sort(x.to(torch.float64) @ directions.T, dim=0).values
    b = torch.sort(y.to(torch.float64) @ directions.T, dim=0).values
    return (a - b).pow(2).mean().sqrt()


def sliced_wasserstein_groups(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor,
                              num_groups: int) -> torch.Tensor:
    """:func:`sliced_wasserstein` between ``x`` and ``y`` ``(N, d)`` split into ``num_groups`` consecutive groups of
    ``N / num_groups`` points: a ``(num_groups,)`` tensor of independent estimates at that group size, whose mean and
    standard error give the distance with its Monte-Carlo error."""
    _checks.integer(num_groups, "num_groups", low=1, hint=f"groups of the N = {x.shape[0]} points")
    if x.shape[0] % num_groups:
        raise ValueError(f"num_groups must be a positive integer dividing N = {x.shape[0]}; got {num_groups!r}.")
    return torch.stack([sliced_wasserstein(a, b, directions)
                        for a, b in zip(x.chunk(num_groups), y.chunk(num_groups))])


def mean_and_cov(mixture: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The mixture's mean :math:`\mu = \sum_k w_k m_k` and covariance
    :math:`\sum_k w_k (C_k + m_k m_k^T) - \mu \mu^T`: ``(d,)`` and ``(d, d)`` float64."""
    mean = mixture.weights @ mixture.means
    second = (mixture.weights[:, None, None] * (mixture.covs + mixture.means[:, :, None] * mixture.means[:, None, :]))
    return mean, second.sum(dim=0) - torch.outer(mean, mean)


def standardize(points: torch.Tensor, reference: GaussianMixture) -> torch.Tensor:
    r"""Points ``(N, d)`` in units of the ``reference`` distribution's spread: :math:`L^{-1}(x - \mu)` with
    :math:`\mu, L L^T` the reference's mean and covariance (:func:`mean_and_cov`). The reference then has mean 0 and
    covariance :math:`I`, so that a distance counts an error along a thin direction of it as much as one along a
    wide direction. Returns ``(N, d)`` float64."""
    mean, cov = mean_and_cov(reference)
    chol = torch.linalg.cholesky(cov)
    centred = (_points(points, reference, "points") - mean).T
    return torch.linalg.solve_triangular(chol, centred, upper=False).T
