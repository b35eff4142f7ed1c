"""Checks for the notebooks' exercises: run your function on fixed inputs, compare it with the course's reference.

One function per exercise, called in the check cell right after the exercise:

====================================  ===========================  ========  =====================================
check                                 your function                notebook  reference in ``helpers``
====================================  ===========================  ========  =====================================
:func:`check_forward_sample`          ``forward_sample``            01        ``schedule.add_noise`` (eq. 3)
:func:`check_score_from_eps`          ``score_from_eps``            02        ``model.score`` (below eq. 4)
:func:`check_posterior_mean`          ``posterior_mean``            02        ``sampling.ddpm_step`` (eq. 7)
:func:`check_x0_hat`                  ``x0_hat_from_score``         03        ``model.x0_hat`` (eq. 6)
:func:`check_ddpm_step`               ``ddpm_step_mine``            04        ``sampling.ddpm_step`` (eqs. 6-7)
:func:`check_sdedit_start`            ``sdedit_start``              05        ``schedule.add_noise`` (eq. 3)
:func:`check_score_ald_update`        ``score_ald_update``          06        ``posterior.score_ald_step``
:func:`check_dps_update`              ``dps_update``                06        ``posterior.dps_step(step="paper")``
:func:`check_training_loss`           ``training_loss``             08        ``helpers.train``'s loss (eq. 3)
:func:`check_ema_update`              ``ema_update``                08        diffusers' ``EMAModel.step``
====================================  ===========================  ========  =====================================

Every check does the same four things:

(1) builds fixed inputs from a seeded ``torch.Generator`` (small random images; the network only where the exercise
    needs it), so that it gives the same verdict on every machine and takes well under a second on a CPU;
(2) runs your function and the reference on them, at a few timesteps;
(3) compares the two elementwise, ``|mine - reference| <= atol + rtol * |reference|``; if all agree it prints one
    line, e.g. ``✓ x0_hat_from_score matches eq. 6 at t = 50, 200, 700 (max deviation 2.4e-07)``, and returns the
    largest deviation;
(4) otherwise it raises ``AssertionError`` with the size of the mismatch, where it happened and its likely cause,
    e.g. ``x0_hat_from_score differs from eq. 6 by 0.31 at t = 200. Check the sign of the score term: ...``. The
    cause is found by computing the usual slips on the same inputs (a flipped sign, a missing square root,
    ``alpha_bar_t`` where eq. 7 has ``alpha_t``, noise added at the last step, ...) and naming the one that your
    output matches (the closest, if several do); if none does, a general hint follows.

Errors raised inside your function pass through unchanged: an exercise that still says
``raise NotImplementedError`` fails its check with ``NotImplementedError``.

Your function is checked, not the course's: while it runs, the helpers an exercise rebuilds (:data:`REBUILDS`:
``schedule.add_noise`` for eq. 3, ``model.x0_hat`` for eq. 6, ``sampling.ddpm_step`` for the DDPM step,
``posterior.dps_step`` for DPS, ...) raise ``AssertionError: ... implement this yourself from eq. N (notebook NN);
<helper> is what this exercise rebuilds (allowed here: ...)``. The helpers an exercise builds on (``model.x0_hat``
in the DDPM and DPS steps, ``sampling.ddpm_step`` in ScoreALD and DPS) stay available; the exercise's text names
them. Everything is restored when your function returns or raises.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from helpers import mixture, operators, posterior, sampling, schedule
from helpers.models import DiffusionModel, ScoreModel

SEED = 1234          # every check draws its inputs from generators seeded from this
BATCH = 2            # images per check: enough to catch slips that mix up the images of a batch
IMAGE_SIZE = 32      # the side of the inputs of the checks that need no network
SIGMA_Y = 0.05       # measurement noise of the posterior-sampling checks, model-range units
MATCH_SLIP = dict(rtol=1e-4, atol=1e-4)   # how close your output must be to a slip to name it

Slips = dict[str, Callable[[], torch.Tensor | None]]


# ---- the comparison every check shares ----

def _compare(name: str, reference: str, where: str, mine, expected: torch.Tensor, slips: Slips, fallback: str,
             rtol: float, atol: float) -> float:
    """Compare ``mine`` with ``expected``; return the max abs deviation, or raise ``AssertionError`` naming the slip.

    ``slips`` maps a likely cause to a function computing the output that slip gives (``None`` where the slip makes
    no difference); they are computed only after a mismatch, and the one closest to ``mine`` among those within
    ``MATCH_SLIP`` of it is named.
    """
    if not isinstance(mine, torch.Tensor):
        missing = " Is the `return` missing?" if mine is None else ""
        raise AssertionError(f"{name} returned {type(mine).__name__} at {where}; it should return a tensor of shape "
                             f"{tuple(expected.shape)}.{missing}")
    if mine.requires_grad:
        raise AssertionError(f"{name} returned a tensor that still requires grad at {where}: it drags the autograd "
                             f"graph into the next step. Detach x0_hat before passing it on, and return plain "
                             f"tensors (torch.autograd.grad's result is already detached).")
    if tuple(mine.shape) != tuple(expected.shape):
        raise AssertionError(f"{name} returned shape {tuple(mine.shape)} at {where}; {reference} gives "
                             f"{tuple(expected.shape)}. Check which dimensions you sum or index over: every "
                             f"operation here is elementwise or per image.")
    mine64, expected64 = mine.detach().cpu().double(), expected.detach().cpu().double()
    if not torch.isfinite(mine64).all():
        raise AssertionError(f"{name} returned NaN or inf at {where}, where {reference} is finite. Look for a "
                             f"division by zero, e.g. by 1 - alpha_bar_prev, which is 0 at the last step.")
    deviation = (mine64 - expected64).abs()
    max_deviation = float(deviation.max()) if deviation.numel() else 0.0
    if bool((deviation <= atol + rtol * expected64.abs()).all()):
        return max_deviation
    # the slip closest to your output, among those it matches (near t = 0 several slips differ by little)
    cause, closest = None, float("inf")
    for candidate, compute in slips.items():
        wrong = compute()
        if wrong is None or tuple(wrong.shape) != tuple(mine.shape):
            continue
        wrong64 = wrong.detach().cpu().double()
        distance = float((mine64 - wrong64).abs().max())
        if torch.allclose(mine64, wrong64, **MATCH_SLIP) and distance < closest:
            cause, closest = candidate, distance
    explanation = cause if cause is not None else f"It matches none of the usual slips. {fallback}"
    raise AssertionError(f"{name} differs from {reference} by {max_deviation:.2g} at {where} (largest deviation; "
                         f"tolerance {atol:g} + {rtol:g} * |reference|). {explanation}")


def _passed(name: str, reference: str, where: str, deviation: float) -> float:
    print(f"✓ {name} matches {reference} at {where} (max deviation {deviation:.1e})")
    return deviation


def _check_function(fn, name: str) -> None:
    if not callable(fn):
        raise ValueError(f"{name} must be your function itself (pass {name}, without calling it); got "
                         f"{type(fn).__name__} {fn!r:.60}.")


def _check_model(model) -> None:
    if not isinstance(model, DiffusionModel):
        raise ValueError(f"model must be the notebook's diffusion model, models.load_model(...); got "
                         f"{type(model).__name__}.")


# ---- the references your function must not call ----

# exercise -> (where its formula is derived, what it may call, the references it rebuilds: (owner, attribute)).
# While the learner's function runs inside its check, each of these raises AssertionError; the check's own reference
# output is computed outside, before or after. Functions are blocked on their module, so calls made through other
# helpers (sampling.ddpm_sample -> ddpm_step, MixtureModel.score -> mixture.score) are blocked too.
REBUILDS: dict[str, tuple[str, str, tuple[tuple[object, str], ...]]] = {
    "forward_sample": ("eq. 3 (notebook 01)", "torch operations on alpha_bar[t]",
                       ((schedule, "add_noise"),)),
    "score_from_eps": ("the relation below eq. 4 (notebook 02)", "torch operations on eps and alpha_bar_t",
                       ((ScoreModel, "score"), (ScoreModel, "x0_hat"))),
    "posterior_mean": ("eq. 7 (notebook 02)", "torch operations on the four inputs",
                       ((sampling, "ddpm_step"),)),
    "x0_hat_from_score": ("eq. 6 (notebook 03)", "torch operations on x_t, score and alpha_bar_t",
                          ((ScoreModel, "x0_hat"),)),
    "ddpm_step_mine": ("eqs. 6-7 (notebooks 02 and 04)", "model.x0_hat, model.eps, posterior_variances",
                       ((sampling, "ddpm_step"),)),
    "sdedit_start": ("eq. 3 (notebooks 01 and 05)", "torch operations on alpha_bar[t_start]",
                     ((schedule, "add_noise"),)),
    "score_ald_update": ("the ScoreALD pseudocode, Sec. III-C (notebook 06)",
                         "sampling.ddpm_step, op.A, op.A_adjoint",
                         ((posterior, "score_ald_step"), (posterior, "score_ald_sample"))),
    "dps_update": ("the DPS pseudocode, Sec. III-C (notebook 06)",
                   "model.x0_hat, sampling.ddpm_step, op.A, torch.autograd.grad",
                   ((posterior, "dps_step"), (posterior, "dps_sample"))),
    "mixture_score": ("eqs. 3a-3b (notebook 07)", "torch.linalg, torch.logdet, torch.softmax",
                      ((mixture, "score"), (mixture, "noised"), (mixture, "log_prob"), (mixture, "responsibilities"),
                       (mixture, "x0_mean"), (mixture, "_component_terms"))),
    "component_posterior": ("eq. 8a (notebook 07)", "torch.linalg",
                            ((mixture, "component_posterior"), (mixture, "posterior"))),
    "training_loss": ("eq. 3 (notebook 01) inside the simple loss (notebook 08)",
                      "eps_model, torch.nn.functional.mse_loss", ((schedule, "add_noise"),)),
    # no helper computes one EMA step (helpers.train leaves it to diffusers' EMAModel, whose warm-up changes decay)
    "ema_update": ("the EMA update (notebook 08)", "torch operations, torch.lerp included", ()),
}


def _reference_name(owner: object, attribute: str) -> str:
    """How the notebooks call a reference: ``model.x0_hat``, ``schedule.add_noise``, ``mixture.score``."""
    if owner is ScoreModel:
        return f"model.{attribute}"
    if isinstance(owner, type):
        return f"{owner.__name__}.{attribute}"
    return f"{owner.__name__.removeprefix('helpers.')}.{attribute}"


@contextlib.contextmanager
def _rebuilding(exercise: str, fn: Callable) -> Iterator[None]:
    """While the body runs, the references ``exercise`` rebuilds (:data:`REBUILDS`) raise ``AssertionError``.

    Each is replaced on its module or class, and under any other name in ``fn``'s module that holds it (``from
    helpers.schedule import add_noise`` in a notebook); everything is put back in ``finally``, also when ``fn``
    raises.
    """
    source, allowed, references = REBUILDS[exercise]
    replaced: list[tuple[object, str, object]] = []   # (module, class or namespace dict, attribute, original)

    def blocked(reference: str) -> Callable:
        def refuse(*args, **kwargs):
            raise AssertionError(f"{exercise} calls {reference}: implement this yourself from {source}; {reference} "
                                 f"is what this exercise rebuilds (allowed here: {allowed}).")
        return refuse

    namespace = getattr(fn, "__globals__", None)
    try:
        for owner, attribute in references:
            original = vars(owner)[attribute]
            refuse = blocked(_reference_name(owner, attribute))
            if fn is original:   # the reference itself, passed as the learner's function
                refuse()
            replaced.append((owner, attribute, original))
            setattr(owner, attribute, refuse)
            for name, value in list((namespace or {}).items()):
                if value is original:
                    replaced.append((namespace, name, value))
                    namespace[name] = refuse
        yield
    finally:
        for owner, attribute, original in reversed(replaced):
            if isinstance(owner, dict):
                owner[attribute] = original
            else:
                setattr(owner, attribute, original)


def _generator(offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + offset)


def _images(shape: tuple[int, ...], offset: int, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed test images ``x0`` (uniform in [-1, 1], the model range) and noise ``z``, both of ``shape``."""
    generator = _generator(offset)
    x0 = torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1
    z = torch.randn(shape, generator=generator, dtype=dtype)
    return x0.to(device), z.to(device)


def _eq3_slips(a: torch.Tensor, signal: torch.Tensor, z: torch.Tensor, alpha_bar: torch.Tensor, t: int,
               signal_name: str) -> Slips:
    """The usual slips in eq. 3, :math:`\\sqrt{\\bar\\alpha_t}\\, x + \\sqrt{1 - \\bar\\alpha_t}\\, z`."""
    def at(index: int) -> torch.Tensor | None:
        if not -alpha_bar.shape[0] <= index < alpha_bar.shape[0]:
            return None
        a_other = alpha_bar[index].to(signal.dtype)
        return a_other.sqrt() * signal + (1 - a_other).sqrt() * z

    return {
        f"Both square roots are missing: eq. 3 scales {signal_name} by sqrt(alpha_bar_t) and z by "
        f"sqrt(1 - alpha_bar_t).": lambda: a * signal + (1 - a) * z,
        "Check the noise coefficient: eq. 3 scales z by sqrt(1 - alpha_bar_t), the square root of the noise "
        "variance, not by 1 - alpha_bar_t.": lambda: a.sqrt() * signal + (1 - a) * z,
        f"Check the signal coefficient: eq. 3 scales {signal_name} by sqrt(alpha_bar_t), not by alpha_bar_t.":
            lambda: a * signal + (1 - a).sqrt() * z,
        "Check the noise coefficient: it is sqrt(1 - alpha_bar_t), the root of the whole difference, not "
        "1 - sqrt(alpha_bar_t).": lambda: a.sqrt() * signal + (1 - a.sqrt()) * z,
        f"The two coefficients are swapped: {signal_name} gets sqrt(alpha_bar_t) and z gets sqrt(1 - alpha_bar_t).":
            lambda: (1 - a).sqrt() * signal + a.sqrt() * z,
        f"{signal_name} is not scaled: eq. 3 shrinks the signal by sqrt(alpha_bar_t) as it adds the noise.":
            lambda: signal + (1 - a).sqrt() * z,
        "Check the sign of the noise term: eq. 3 adds sqrt(1 - alpha_bar_t) z (with the same z, a minus sign gives "
        "a different x_t).": lambda: a.sqrt() * signal - (1 - a).sqrt() * z,
        "alpha_bar[t - 1] is used: the code's alpha_bar[t] already is the paper's alpha_bar_{t+1}, the value after "
        "t + 1 steps of eq. 2 (notebook 00's timestep convention). Index with t itself.": lambda: at(t - 1),
        "alpha_bar[t + 1] is used: index the schedule with t itself (notebook 00's timestep convention).":
            lambda: at(t + 1),
    }


# ---- notebook 01 ----

def check_forward_sample(forward_sample: Callable) -> float:
    r"""Check ``forward_sample(x0, z, t, alpha_bar)``, one-shot sampling of the forward process, against eq. 3.

    .. math:: x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, z

    Reference: paper eq. 3; notebook 01, exercise 1; ``helpers.schedule.add_noise``. Inputs: two fixed
    ``(2, 3, 32, 32)`` float32 images in [-1, 1] and noise, the paper's schedule (``schedule.linear_schedule()``,
    float64 ``alpha_bar``), ``t`` = 0, 199, 999 (Python ints). Tolerance ``1e-6 + 1e-5 |reference|``. Returns the
    largest deviation; raises ``AssertionError`` with the likely slip, ``ValueError`` if ``forward_sample`` is not a
    function.
    """
    name, reference, steps = "forward_sample", "eq. 3", (0, 199, 999)
    _check_function(forward_sample, name)
    alpha_bar = schedule.linear_schedule().alpha_bar
    x0, z = _images((BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), offset=1)
    deviation = 0.0
    for t in steps:
        with _rebuilding(name, forward_sample):
            mine = forward_sample(x0, z, t, alpha_bar)
        expected = schedule.add_noise(x0, z, t, alpha_bar)
        a = alpha_bar[t].to(x0.dtype)
        deviation = max(deviation, _compare(
            name, reference, f"t = {t}", mine, expected, _eq3_slips(a, x0, z, alpha_bar, t, "x0"),
            "Write eq. 3 term by term: the coefficient of x0, then that of z, both from alpha_bar[t].", rtol=1e-5,
            atol=1e-6))
    return _passed(name, reference, f"t = {', '.join(map(str, steps))}", deviation)


# ---- notebook 02 ----

def check_score_from_eps(score_from_eps: Callable, model: DiffusionModel) -> float:
    r"""Check ``score_from_eps(eps, alpha_bar_t)``, the score from the network's noise prediction.

    .. math:: s_\theta(x_t, t) = -\frac{\epsilon_\theta(x_t, t)}{\sqrt{1 - \bar\alpha_t}}

    Reference: the relation below paper eq. 4; notebook 02, exercise 1; ``model.score``. Inputs: fixed noisy images
    ``(2, 3, S, S)`` at ``t`` = 50, 500, ``eps = model.eps(x_t, t)`` and ``alpha_bar_t = model.alpha_bar[t].float()``
    (a 0-dim tensor). Tolerance ``1e-5 + 1e-5 |reference|``. Raises as :func:`check_forward_sample`, and
    ``ValueError`` if ``model`` is not a :class:`helpers.models.DiffusionModel`.
    """
    name, reference, steps = "score_from_eps", "the score relation below eq. 4", (50, 500)
    _check_function(score_from_eps, name)
    _check_model(model)
    x0, z = _images((BATCH, 3, model.image_size, model.image_size), offset=2, device=model.device)
    deviation = 0.0
    for t in steps:
        x_t = schedule.add_noise(x0, z, t, model.alpha_bar)
        with torch.no_grad():
            eps, expected = model.eps(x_t, t), model.score(x_t, t)
            a = model.alpha_bar[t].float()
            with _rebuilding(name, score_from_eps):
                mine = score_from_eps(eps, a)
        slips = {
            "Check the sign: the score points away from the predicted noise, s = -eps / sqrt(1 - alpha_bar_t).":
                lambda: eps / (1 - a).sqrt(),
            "The square root is missing: divide by sqrt(1 - alpha_bar_t), the standard deviation of the noise in "
            "x_t (eq. 3), not by 1 - alpha_bar_t.": lambda: -eps / (1 - a),
            "eps is multiplied by sqrt(1 - alpha_bar_t); the relation divides by it.":
                lambda: -eps * (1 - a).sqrt(),
            "sqrt(alpha_bar_t) is used; the noise in x_t has standard deviation sqrt(1 - alpha_bar_t).":
                lambda: -eps / a.sqrt(),
        }
        deviation = max(deviation, _compare(
            name, reference, f"t = {t}", mine, expected, slips,
            "Compare your line with the relation below eq. 4: which way the score points, and what scale of the "
            "noise in x_t (eq. 3) the prediction is divided by.",
            rtol=1e-5, atol=1e-5))
    return _passed(name, reference, f"t = {', '.join(map(str, steps))}", deviation)


def check_posterior_mean(posterior_mean: Callable, model: DiffusionModel) -> float:
    r"""Check ``posterior_mean(x_t, x0_hat, alpha_bar_t, alpha_bar_prev)``, the mean of the reverse step (eq. 7).

    .. math:: \mu = \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t
              + \frac{\sqrt{\bar\alpha_{t-1}}(1-\alpha_t)}{1-\bar\alpha_t} \hat x_0,
              \qquad \alpha_t = \bar\alpha_t / \bar\alpha_{t-1}

    Reference: paper eq. 7 (with :math:`\sqrt{\alpha_t}`, not the pseudocode's :math:`\sqrt{\bar\alpha_t}`);
    notebook 02, exercise 2; the coefficients of ``sampling.ddpm_step``: its output with ``clip_x0=False`` and the
    given ``x0_hat``, minus its noise term :math:`\sqrt{\beta_t} z` (``z`` drawn again from a generator seeded alike).
    Inputs: fixed ``(2, 3, S, S)`` tensors ``x_t`` and ``x0_hat`` in the schedule's dtype (float64; float32 on MPS),
    ``alpha_bar_t = model.alpha_bar[t]`` and ``alpha_bar_prev = model.alpha_bar[t - 1]`` (1 at ``t = 0``) as 0-dim
    tensors, ``t`` = 999, 500, 50, 0. Tolerance ``1e-6 + 1e-5 |reference|``.
    """
    name, reference, steps = "posterior_mean", "eq. 7", (999, 500, 50, 0)
    _check_function(posterior_mean, name)
    _check_model(model)
    dtype = model.alpha_bar.dtype
    shape = (BATCH, 3, model.image_size, model.image_size)
    x0_hat, _ = _images(shape, offset=3, device=model.device, dtype=dtype)
    deviation = 0.0
    for t in steps:
        x_t = torch.randn(shape, generator=_generator(4 + t), dtype=dtype).to(model.device)
        a_t = model.alpha_bar[t]
        a_prev = model.alpha_bar[t - 1] if t > 0 else torch.ones_like(a_t)
        with _rebuilding(name, posterior_mean):
            mine = posterior_mean(x_t, x0_hat, a_t, a_prev)
        # the reference: ddpm_step's x_prev without its noise term sqrt(beta_t) z (variance="beta")
        with torch.no_grad():
            x_prev, _ = sampling.ddpm_step(model, x_t, t, t - 1, _generator(5), variance="beta", clip_x0=False,
                                           x0_hat=x0_hat)
        if t > 0:
            x_prev = x_prev - (1 - a_t / a_prev).sqrt() * sampling.randn(shape, _generator(5), like=x_t)
        expected = x_prev
        alpha_t = a_t / a_prev

        def eq7(coef_x_t: torch.Tensor, coef_x0: torch.Tensor) -> torch.Tensor:
            return coef_x_t * x_t + coef_x0 * x0_hat

        right_x_t = alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)
        right_x0 = a_prev.sqrt() * (1 - alpha_t) / (1 - a_t)
        slips = {
            "x_t is weighted with sqrt(alpha_bar_t), the erratum of the paper's pseudocode (notebook 02, section 4); "
            "eq. 7 has sqrt(alpha_t), with alpha_t = alpha_bar_t / alpha_bar_prev.":
                lambda: eq7(a_t.sqrt() * (1 - a_prev) / (1 - a_t), right_x0),
            "alpha_bar_t is used where alpha_t = alpha_bar_t / alpha_bar_prev belongs (in both weights).":
                lambda: eq7(a_t.sqrt() * (1 - a_prev) / (1 - a_t), a_prev.sqrt() * (1 - a_t) / (1 - a_t)),
            "The two weights are swapped: x_t gets sqrt(alpha_t)(1 - alpha_bar_prev) / (1 - alpha_bar_t), x0_hat gets "
            "sqrt(alpha_bar_prev)(1 - alpha_t) / (1 - alpha_bar_t).":
                lambda: right_x0 * x_t + right_x_t * x0_hat,
            "Check the weight on x0_hat: it has sqrt(alpha_bar_prev), not alpha_bar_prev.":
                lambda: eq7(right_x_t, a_prev * (1 - alpha_t) / (1 - a_t)),
            "Check the weight on x_t: it has sqrt(alpha_t), not alpha_t.":
                lambda: eq7(alpha_t * (1 - a_prev) / (1 - a_t), right_x0),
            "The division by 1 - alpha_bar_t is missing (both weights have it).":
                lambda: eq7(right_x_t * (1 - a_t), right_x0 * (1 - a_t)),
        }
        deviation = max(deviation, _compare(
            name, reference, f"t = {t}", mine, expected, slips,
            "Compute alpha_t = alpha_bar_t / alpha_bar_prev first, then the two weights of eq. 7 one by one.",
            rtol=1e-5, atol=1e-6))
    return _passed(name, reference, f"t = {', '.join(map(str, steps))}", deviation)


# ---- notebook 03 ----

def check_x0_hat(x0_hat_from_score: Callable, model: DiffusionModel) -> float:
    r"""Check ``x0_hat_from_score(x_t, score, alpha_bar_t)``, the single-step estimate of the clean image (eq. 6).

    .. math:: \hat x_0 = \frac{1}{\sqrt{\bar\alpha_t}} \left(x_t + (1 - \bar\alpha_t)\, s_\theta(x_t, t)\right)

    Reference: paper eq. 6; notebook 03, exercise 1; ``model.x0_hat``. Inputs: fixed noisy images ``(2, 3, S, S)``
    (float32) at ``t`` = 50, 200, 700, ``score = model.score(x_t, t)`` and ``alpha_bar_t = model.alpha_bar[t]`` (a
    0-dim tensor). Tolerance ``1e-5 + 1e-5 |reference|``.
    """
    name, reference, steps = "x0_hat_from_score", "eq. 6", (50, 200, 700)
    _check_function(x0_hat_from_score, name)
    _check_model(model)
    x0, z = _images((BATCH, 3, model.image_size, model.image_size), offset=6, device=model.device)
    deviation = 0.0
    for t in steps:
        x_t = schedule.add_noise(x0, z, t, model.alpha_bar)
        with torch.no_grad():
            score, expected = model.score(x_t, t), model.x0_hat(x_t, t)
            a = model.alpha_bar[t]
            with _rebuilding(name, x0_hat_from_score):
                mine = x0_hat_from_score(x_t, score, a)
            af = a.to(x_t.dtype)
        slips = {
            "Check the sign of the score term: eq. 6 adds (1 - alpha_bar_t) * score to x_t (the score points towards "
            "the data).": lambda: (x_t - (1 - af) * score) / af.sqrt(),
            "The bracket is divided by alpha_bar_t; eq. 6 divides by its square root, sqrt(alpha_bar_t).":
                lambda: (x_t + (1 - af) * score) / af,
            "The score is scaled by sqrt(1 - alpha_bar_t); eq. 6 scales it by the variance 1 - alpha_bar_t, no root.":
                lambda: (x_t + (1 - af).sqrt() * score) / af.sqrt(),
            "This is the noise form of eq. 6, (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), with the score "
            "in place of eps; written with the score the term is + (1 - alpha_bar_t) * score.":
                lambda: (x_t - (1 - af).sqrt() * score) / af.sqrt(),
            "The division by sqrt(alpha_bar_t) is missing.": lambda: x_t + (1 - af) * score,
            "Only the score term is divided by sqrt(alpha_bar_t); eq. 6 divides the whole bracket.":
                lambda: x_t + (1 - af) * score / af.sqrt(),
        }
        deviation = max(deviation, _compare(
            name, reference, f"t = {t}", mine, expected, slips,
            "Compare your line with eq. 6 (the score form) piece by piece: the bracket first, then the division.",
            rtol=1e-5, atol=1e-5))
    return _passed(name, reference, f"t = {', '.join(map(str, steps))}", deviation)


# ---- notebook 04 ----

def check_ddpm_step(ddpm_step_mine: Callable, model: DiffusionModel) -> float:
    r"""Check ``ddpm_step_mine(model, x_t, t, z, variance)``, one reverse DDPM step with the noise ``z`` given.

    (1) :math:`\hat x_0` by eq. 6, clipped to [-1, 1]; (2) the mean by eq. 7 (with :math:`\sqrt{\alpha_t}`);
    (3) :math:`+ \sigma_t z` with :math:`\sigma_t^2 = \beta_t` (``"beta"``) or
    :math:`\tilde\beta_t = \beta_t (1-\bar\alpha_{t-1})/(1-\bar\alpha_t)` (``"beta_tilde"``), except at ``t = 0``.

    Reference: paper eqs. 6-7 and the DDPM pseudocode; notebook 04's exercise; ``sampling.ddpm_step(model, x_t, t,
    t - 1, generator, variance)``, whose noise is the ``z`` passed to your function (drawn with ``sampling.randn``
    from a generator seeded alike). Inputs: fixed noisy images ``(2, 3, S, S)`` at ``t`` = 999, 500, 50, 0, each with
    both variances. Tolerance ``1e-5 + 1e-5 |reference|``.
    """
    name, reference, steps = "ddpm_step_mine", "eqs. 6-7 (sampling.ddpm_step)", (999, 500, 50, 0)
    _check_function(ddpm_step_mine, name)
    _check_model(model)
    shape = (BATCH, 3, model.image_size, model.image_size)
    x0, _ = _images(shape, offset=7, device=model.device)
    deviation = 0.0
    for t in steps:
        noise = torch.randn(shape, generator=_generator(8 + t)).to(model.device)
        x_t = schedule.add_noise(x0, noise, t, model.alpha_bar)
        z = sampling.randn(shape, _generator(9), like=x_t)            # the draw ddpm_step makes from _generator(9)
        with torch.no_grad():
            x0_hat = model.x0_hat(x_t, t)
        for variance in ("beta", "beta_tilde"):
            with torch.no_grad():
                with _rebuilding(name, ddpm_step_mine):
                    mine = ddpm_step_mine(model, x_t, t, z, variance)
                expected, _ = sampling.ddpm_step(model, x_t, t, t - 1, _generator(9), variance, x0_hat=x0_hat)
            a_t = model.alpha_bar[t]
            a_prev = model.alpha_bar[t - 1] if t > 0 else torch.ones_like(a_t)
            alpha_t = a_t / a_prev
            variances = {"beta": 1 - alpha_t, "beta_tilde": (1 - alpha_t) * (1 - a_prev) / (1 - a_t)}
            sigma = {key: value.sqrt().to(x_t.dtype) for key, value in variances.items()}
            other = "beta_tilde" if variance == "beta" else "beta"
            coef_x0 = (a_prev.sqrt() * (1 - alpha_t) / (1 - a_t)).to(x_t.dtype)
            coef_x_t = ((1 - a_prev) / (1 - a_t)).to(x_t.dtype)
            noisy = t > 0

            def shifted(offset: torch.Tensor | None, expected=expected) -> torch.Tensor | None:
                return None if offset is None else expected + offset

            slips = {
                "x0_hat is not clipped to [-1, 1]; ddpm_step clips it before eq. 7 (x0_hat.clamp(-1, 1)).":
                    lambda: shifted(coef_x0 * (x0_hat - x0_hat.clamp(-1, 1))),
                "x_t is weighted with sqrt(alpha_bar_t), the erratum of the paper's pseudocode (notebook 02); eq. 7 "
                "has sqrt(alpha_t), with alpha_t = alpha_bar_t / alpha_bar_prev.":
                    lambda: shifted((a_t.sqrt() - alpha_t.sqrt()).to(x_t.dtype) * coef_x_t * x_t),
                "The noise term sigma_t z is missing.": lambda: shifted(-sigma[variance] * z if noisy else None),
                "Noise was added at t = 0: the last step adds none (the paper's z = 0 at t = 1).":
                    lambda: shifted(sigma["beta"] * z if not noisy else None),
                f"sigma_t^2 is the other variance ({other!r}), but variance={variance!r} asks for "
                f"{'beta_t' if variance == 'beta' else 'beta_tilde_t'}.":
                    lambda: shifted((sigma[other] - sigma[variance]) * z if noisy else None),
                "The noise is scaled by the variance sigma_t^2; scale it by the standard deviation sigma_t, its square "
                "root.": lambda: shifted((sigma[variance] ** 2 - sigma[variance]) * z if noisy else None),
                "Check the sign of the noise term: ddpm_step adds + sigma_t z (with the same z, the sign matters).":
                    lambda: shifted(-2 * sigma[variance] * z if noisy else None),
            }
            deviation = max(deviation, _compare(
                name, reference, f"t = {t}, variance = {variance!r}", mine, expected, slips,
                "Build the step in three parts, as ddpm_step does: (1) x0_hat by eq. 6, clipped to [-1, 1]; (2) the "
                "mean by eq. 7, with sqrt(alpha_t) on x_t; (3) + sigma_t z, except at t = 0.", rtol=1e-5, atol=1e-5))
    where = f"t = {', '.join(map(str, steps))} with both variances"
    return _passed(name, reference, where, deviation)


# ---- notebook 05 ----

def check_sdedit_start(sdedit_start: Callable) -> float:
    r"""Check ``sdedit_start(y, t_start, z, alpha_bar)``, SDEdit's start point: the measurement noised by eq. 3.

    .. math:: x_{t_0} = \sqrt{\bar\alpha_{t_0}}\, y + \sqrt{1 - \bar\alpha_{t_0}}\, z

    Reference: paper eq. 3 and Sec. IV-C-1; notebook 05, exercise 1; ``schedule.add_noise``, as in
    ``sampling.sdedit``. Inputs: a fixed box-inpainting measurement of two ``(2, 3, 32, 32)`` images (float32,
    ``sigma_y = 0.05``), noise ``z``, the paper's ``alpha_bar`` (float64), ``t_start`` = 250, 500, 750 (Python ints).
    Tolerance ``1e-6 + 1e-5 |reference|``.
    """
    name, reference, steps = "sdedit_start", "eq. 3", (250, 500, 750)
    _check_function(sdedit_start, name)
    alpha_bar = schedule.linear_schedule().alpha_bar
    x0, z = _images((BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), offset=10)
    y = operators.box_inpainting(IMAGE_SIZE, box_size=12).measure(x0, SIGMA_Y, _generator(11))
    deviation = 0.0
    for t_start in steps:
        with _rebuilding(name, sdedit_start):
            mine = sdedit_start(y, t_start, z, alpha_bar)
        expected = schedule.add_noise(y, z, t_start, alpha_bar)
        a = alpha_bar[t_start].to(y.dtype)
        deviation = max(deviation, _compare(
            name, reference, f"t_start = {t_start}", mine, expected, _eq3_slips(a, y, z, alpha_bar, t_start, "y"),
            "SDEdit's start is eq. 3 with y in place of x0, your forward_sample of notebook 01 at t_start.",
            rtol=1e-5, atol=1e-6))
    return _passed(name, reference, f"t_start = {', '.join(map(str, steps))}", deviation)


# ---- notebook 06 ----

def _posterior_inputs(model: DiffusionModel, t: int, offset: int
                      ) -> tuple[operators.GaussianBlur, torch.Tensor, torch.Tensor]:
    """The deblurring problem of the posterior checks: ``(op, x_t, y)``, ``x_t`` noised to ``t`` by eq. 3.

    A blur, because its adjoint is not the blur itself (reflect padding): that catches ``A`` used for ``A^H``.
    """
    op = operators.GaussianBlur(kernel_size=7, sigma=1.0)
    shape = (BATCH, 3, model.image_size, model.image_size)
    x0, z = _images(shape, offset=offset, device=model.device)
    y = op.measure(x0, SIGMA_Y, _generator(offset + 1))
    return op, schedule.add_noise(x0, z, t, model.alpha_bar), y


def check_score_ald_update(score_ald_update: Callable, model: DiffusionModel) -> float:
    r"""Check ``score_ald_update(model, op, x_t, y, t, t_prev, generator, gamma_t, sigma_y)``, one ScoreALD step.

    .. math:: x_{t-1} = x'_{t-1} - \frac{1}{\sigma_y^2 + \gamma_t^2} \nabla_{x_t} \|\mathcal{A} x_t - y\|^2,
              \qquad \nabla_{x_t} \|\mathcal{A} x_t - y\|^2 = 2 \mathcal{A}^H (\mathcal{A} x_t - y)

    with :math:`x'_{t-1}` from ``sampling.ddpm_step`` (eqs. 6-7). Reference: paper Sec. III-C, ScoreALD pseudocode;
    notebook 06, exercise 1; ``posterior.score_ald_step``. Inputs: two fixed images blurred (7 x 7, sigma 1 px) with
    noise ``sigma_y = 0.05``, ``x_t`` noised by eq. 3, ``gamma_t = posterior.score_ald_gamma(model, t, 1.5)``, steps
    ``(t, t_prev)`` = (300, 280) and (0, -1), the generator seeded alike for both. Tolerance
    ``1e-5 + 1e-5 |reference|``.
    """
    name, reference = "score_ald_update", "the ScoreALD step (posterior.score_ald_step)"
    _check_function(score_ald_update, name)
    _check_model(model)
    cases = ((300, 280), (0, -1))
    deviation = 0.0
    for t, t_prev in cases:
        op, x_t, y = _posterior_inputs(model, t, offset=20)
        gamma_t = posterior.score_ald_gamma(model, t, 1.5)
        with torch.no_grad():
            with _rebuilding(name, score_ald_update):
                mine = score_ald_update(model, op, x_t, y, t, t_prev, _generator(22), gamma_t, SIGMA_Y)
            expected, _ = posterior.score_ald_step(model, op, x_t, y, t, t_prev, _generator(22), gamma_t, SIGMA_Y)
            x_prev, _ = sampling.ddpm_step(model, x_t, t, t_prev, _generator(22))
        misfit = op.A(x_t) - y
        step = 1 / (SIGMA_Y ** 2 + gamma_t ** 2)
        slips = {
            "The factor 2 is missing: the gradient of the squared norm ||A x_t - y||^2 is 2 A^H (A x_t - y).":
                lambda: x_prev - step * op.A_adjoint(misfit),
            "Check the sign of the data step: it goes down the misfit, x'_{t-1} - grad / (sigma_y^2 + gamma_t^2), "
            "with grad = 2 A^H (A x_t - y).": lambda: x_prev + 2 * step * op.A_adjoint(misfit),
            "A is used where its adjoint belongs: the gradient is 2 op.A_adjoint(op.A(x_t) - y).":
                lambda: x_prev - 2 * step * op.A(misfit),
            "The misfit is taken at x'_{t-1}; the pseudocode differentiates ||A x_t - y||^2 at x_t.":
                lambda: x_prev - 2 * step * op.A_adjoint(op.A(x_prev) - y),
            "The denominator is (sigma_y + gamma_t)^2; the pseudocode has sigma_y^2 + gamma_t^2.":
                lambda: x_prev - 2 * op.A_adjoint(misfit) / (SIGMA_Y + gamma_t) ** 2,
            "The denominator is sigma_y^2 + gamma_t; square gamma_t too: sigma_y^2 + gamma_t^2.":
                lambda: x_prev - 2 * op.A_adjoint(misfit) / (SIGMA_Y ** 2 + gamma_t),
            "The data step is missing: that is plain DDPM.": lambda: x_prev,
        }
        deviation = max(deviation, _compare(
            name, reference, f"t = {t} -> t_prev = {t_prev}", mine, expected, slips,
            "Start from x_prev, _ = sampling.ddpm_step(model, x_t, t, t_prev, generator), then take the data step of "
            "the pseudocode, with the gradient of ||A x_t - y||^2 worked out by hand (op.A, op.A_adjoint).",
            rtol=1e-5, atol=1e-5))
    return _passed(name, reference, ", ".join(f"t = {t} -> {t_prev}" for t, t_prev in cases), deviation)


def check_dps_update(dps_update: Callable, model: DiffusionModel) -> float:
    r"""Check ``dps_update(model, op, x_t, y, t, t_prev, generator, zeta_t, sigma_y)``, one DPS step as printed.

    .. math:: x_{t-1} = x'_{t-1} - \frac{\zeta_t}{2 \sigma_y^2} \nabla_{x_t} \|\mathcal{A}(\hat x_0) - y\|^2

    with :math:`\hat x_0` by eq. 6 (clipped), the gradient through the network, the squared norm per image and
    :math:`x'_{t-1}` from ``sampling.ddpm_step`` with the same :math:`\hat x_0`. Reference: paper Sec. III-C, DPS
    pseudocode; notebook 06, exercise 2; ``posterior.dps_step(..., step="paper")``. Inputs as in
    :func:`check_score_ald_update`, ``zeta_t = 1e-3``, steps ``(t, t_prev)`` = (300, 280) and (50, 30). Tolerance
    ``1e-5 + 1e-5 |reference|`` on the CPU; ``1e-3 + 1e-3 |reference|`` on a GPU or MPS, where autograd through the
    network need not be bitwise reproducible (and runs in bfloat16 on CUDA's fast path). The wrong variants
    recognised include the DPS code's slip of coupling the images of a batch: a norm (or a mean) taken over the
    whole batch instead of per image.
    """
    name, reference = "dps_update", "the DPS step as printed (posterior.dps_step, step='paper')"
    _check_function(dps_update, name)
    _check_model(model)
    cases, zeta_t = ((300, 280), (50, 30)), 1e-3
    # on a GPU the backward pass may sum in a different order from call to call, and the fast path runs the U-Net in
    # bfloat16: two correct gradients then agree to about 1e-3, not to float32 precision (not yet measured on a GPU)
    tolerance = 1e-5 if model.device.type == "cpu" else 1e-3
    deviation = 0.0
    for t, t_prev in cases:
        op, x_t, y = _posterior_inputs(model, t, offset=30)
        with _rebuilding(name, dps_update):
            mine = dps_update(model, op, x_t, y, t, t_prev, _generator(32), zeta_t, SIGMA_Y)
        expected, _ = posterior.dps_step(model, op, x_t, y, t, t_prev, _generator(32), zeta_t, sigma_y=SIGMA_Y,
                                         step="paper")

        def variant(clip: bool = True, loss: str = "squared", wrt: str = "x_t", scale: float = 1 / (2 * SIGMA_Y ** 2),
                    t=t, t_prev=t_prev, op=op, x_t=x_t, y=y) -> torch.Tensor:
            with torch.enable_grad():
                leaf = x_t.detach().requires_grad_()
                x0_hat = model.x0_hat(leaf, t)
                x0_hat = x0_hat.clamp(-1, 1) if clip else x0_hat
                residual = (op.A(x0_hat) - y).flatten(1)
                value = {"squared": residual.pow(2).sum(dim=1), "norm": residual.norm(dim=1),
                         "pixel mean": residual.pow(2).mean(dim=1), "batch mean": residual.pow(2).sum(dim=1).mean(),
                         "batch norm": residual.norm()}[loss]
                (grad,) = torch.autograd.grad(value.sum(), leaf if wrt == "x_t" else x0_hat)
            x_prev, _ = sampling.ddpm_step(model, x_t, t, t_prev, _generator(32), x0_hat=x0_hat.detach())
            return x_prev - zeta_t * scale * grad

        slips = {
            "x0_hat is not clipped to [-1, 1] before the misfit (use x0_hat.clamp(-1, 1), not clamp_).":
                lambda: variant(clip=False),
            "Check the sign of the data step: it goes down the misfit, x'_{t-1} - zeta_t / (2 sigma_y^2) * grad.":
                lambda: variant(scale=-1 / (2 * SIGMA_Y ** 2)),
            "This is the gradient of the norm ||A(x0_hat) - y||, not of the squared norm the pseudocode uses.":
                lambda: variant(loss="norm"),
            "The norm is taken over the whole batch, as in the official DPS code; that couples the images. Take the "
            "squared norm per image (sum over dim=1 after flatten(1)).": lambda: variant(loss="batch norm"),
            "The per-image losses are averaged over the batch (mean()); sum them, so that each image gets its own "
            "full gradient.": lambda: variant(loss="batch mean"),
            "The misfit is a mean over pixels; the pseudocode's squared norm is a sum.":
                lambda: variant(loss="pixel mean"),
            "The gradient is taken with respect to x0_hat; DPS differentiates with respect to x_t, through the "
            "network (torch.autograd.grad(loss, x_t_leaf)).": lambda: variant(wrt="x0_hat"),
            "The step is zeta_t / sigma_y^2; the pseudocode has zeta_t / (2 sigma_y^2).":
                lambda: variant(scale=1 / SIGMA_Y ** 2),
        }
        deviation = max(deviation, _compare(
            name, reference, f"t = {t} -> t_prev = {t_prev}", mine, expected, slips,
            "Follow the four numbered steps: inside torch.enable_grad(), x_t.detach().requires_grad_() is the leaf to "
            "differentiate, and torch.autograd.grad(loss, leaf) returns a tuple.", rtol=tolerance, atol=tolerance))
    return _passed(name, reference, ", ".join(f"t = {t} -> {t_prev}" for t, t_prev in cases), deviation)


# ---- notebook 07 ----

def _check_mixture_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed 2-D mixture of the notebook-07 checks (three components, one tilted, unequal weights) and six points
    ``x_t`` around it: ``(weights (3,), means (3, 2), covs (3, 2, 2), x_t (6, 2))``, float64."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.tensor([[-0.5, 0.1], [0.4, 0.5], [0.3, -0.6]], dtype=torch.float64)
    covs = torch.tensor([[[0.04, 0.02], [0.02, 0.03]], [[0.02, 0.0], [0.0, 0.05]], [[0.01, -0.005], [-0.005, 0.02]]],
                        dtype=torch.float64)
    x_t = torch.randn(6, 2, generator=_generator(70), dtype=torch.float64) * 0.6
    return weights, means, covs, x_t


def _mixture_score_variant(weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, x: torch.Tensor,
                           mixing: str = "responsibilities") -> torch.Tensor:
    r"""The score of :math:`\sum_k w_k \mathcal{N}(m_k, C_k)` at ``x``, or a slip in how the components are mixed:
    ``"responsibilities"`` (right), ``"weights"`` (the prior weights :math:`w_k`), ``"no det"`` (responsibilities
    without the :math:`\log\det C_k` term), ``"no weights"`` (responsibilities without :math:`w_k`)."""
    if mixing == "responsibilities":
        return mixture.score(mixture.GaussianMixture(weights, means, covs), x)
    precision_diff = torch.linalg.solve(covs[None], (x[:, None, :] - means[None])[..., None])[..., 0]   # (N, K, d)
    mahalanobis = ((x[:, None, :] - means[None]) * precision_diff).sum(dim=2)
    log_det = torch.logdet(covs)
    log_r = {"weights": torch.log(weights).expand(len(x), -1),
             "no det": torch.log(weights) - 0.5 * mahalanobis,
             "no weights": -0.5 * (mahalanobis + log_det)}[mixing]
    return -(torch.softmax(log_r, dim=1)[:, :, None] * precision_diff).sum(dim=1)


def check_mixture_score(mixture_score: Callable) -> float:
    r"""Check ``mixture_score(weights, means, covs, x_t, alpha_bar_t)``, the exact score of a Gaussian mixture
    noised by eq. 3.

    .. math:: p_t = \sum_k w_k \mathcal{N}\left(\sqrt{\bar\alpha_t} m_k,\; \bar\alpha_t C_k + (1 - \bar\alpha_t) I
              \right), \qquad \nabla \log p_t(x_t) = -\sum_k r_k(x_t)\, \Sigma_k^{-1}(x_t - \sqrt{\bar\alpha_t} m_k)

    with the responsibilities :math:`r_k \propto w_k \mathcal{N}(x_t;\, \sqrt{\bar\alpha_t} m_k, \Sigma_k)`.
    Reference: paper eq. 3 and the score below eq. 4; notebook 07, exercise 1; ``mixture.score(mixture.noised(...),
    x_t)``. Inputs: a fixed 2-D mixture of three components (``weights`` ``(3,)``, ``means`` ``(3, 2)``, ``covs``
    ``(3, 2, 2)``, float64), six points ``x_t`` ``(6, 2)``, ``alpha_bar_t`` the paper's :math:`\bar\alpha` at
    ``t`` = 300, 800, 20 (0-dim float64 tensors). Tolerance ``1e-8 + 1e-8 |reference|``.
    """
    name, reference, steps = "mixture_score", "the score of p_t (eq. 3)", (300, 800, 20)
    _check_function(mixture_score, name)
    weights, means, covs, x_t = _check_mixture_inputs()
    alpha_bar = schedule.linear_schedule().alpha_bar
    eye = torch.eye(2, dtype=torch.float64)
    deviation = 0.0
    for t in steps:
        a = alpha_bar[t]
        with _rebuilding(name, mixture_score):
            mine = mixture_score(weights.clone(), means.clone(), covs.clone(), x_t.clone(), a.clone())
        root_a, noisy_covs = a.sqrt(), a * covs + (1 - a) * eye
        expected = mixture.score(mixture.noised(mixture.GaussianMixture(weights, means, covs), a), x_t)

        def score_of(m, c, mixing="responsibilities"):
            return _mixture_score_variant(weights, m, c, x_t, mixing)

        slips = {
            "Check the sign: the score points towards the components, -Sigma_k^{-1} (x_t - mu_k).":
                lambda: -expected,
            "The means are not scaled: under eq. 3 component k has mean sqrt(alpha_bar_t) * m_k.":
                lambda: score_of(means, noisy_covs),
            "The covariances are not scaled: under eq. 3 component k has covariance alpha_bar_t * C_k + "
            "(1 - alpha_bar_t) I (the signal shrinks by sqrt(alpha_bar_t), so its covariance by alpha_bar_t).":
                lambda: score_of(root_a * means, covs + (1 - a) * eye),
            "C_k is scaled by sqrt(alpha_bar_t); a covariance scales with the square of the factor, alpha_bar_t.":
                lambda: score_of(root_a * means, root_a * covs + (1 - a) * eye),
            "The noise adds its variance 1 - alpha_bar_t to the covariance, not its standard deviation "
            "sqrt(1 - alpha_bar_t).": lambda: score_of(root_a * means, a * covs + (1 - a).sqrt() * eye),
            "The noise is missing from the covariance: add (1 - alpha_bar_t) I to alpha_bar_t * C_k.":
                lambda: score_of(root_a * means, a * covs),
            "This is the score of the clean mixture, p_0: alpha_bar_t is not used.": lambda: score_of(means, covs),
            "The component scores are mixed with the prior weights w_k; use the responsibilities r_k(x_t), which "
            "depend on x_t (softmax over k of log w_k + log N(x_t; mu_k, Sigma_k)).":
                lambda: score_of(root_a * means, noisy_covs, "weights"),
            "The responsibilities miss the log-determinant: log N(x_t; mu_k, Sigma_k) includes "
            "-0.5 * logdet(Sigma_k), which differs between components.":
                lambda: score_of(root_a * means, noisy_covs, "no det"),
            "The responsibilities miss the weights: add log w_k before the softmax.":
                lambda: score_of(root_a * means, noisy_covs, "no weights"),
        }
        deviation = max(deviation, _compare(
            name, reference, f"t = {t}", mine, expected, slips,
            "Write it in three steps: the noised components of eq. 3a, the responsibilities by a softmax over k, and "
            "the weighted sum of eq. 3b.",
            rtol=1e-8, atol=1e-8))
    return _passed(name, reference, f"t = {', '.join(map(str, steps))}", deviation)


def check_component_posterior(component_posterior: Callable) -> float:
    r"""Check ``component_posterior(mean, cov, A, y, sigma_y)``, the posterior of one Gaussian after a linear
    measurement :math:`y = A x + \sigma_y z`: returns ``(post_mean, post_cov)``.

    .. math:: S = A C A^T + \sigma_y^2 I, \quad G = C A^T S^{-1}, \quad m' = m + G (y - A m), \quad C' = C - G A C

    Reference: paper eq. 8 and Bayes' rule; notebook 07, exercise 2; ``mixture.component_posterior``. Inputs: a fixed
    3-D Gaussian (``mean`` ``(3,)``, ``cov`` ``(3, 3)`` with correlations, float64) measured twice: two projections
    (``A`` ``(2, 3)``, ``sigma_y = 0.2``) and one coordinate (``A`` ``(1, 3)``, ``sigma_y = 0.05``); ``y`` ``(m,)``.
    Tolerance ``1e-9 + 1e-9 |reference|`` on the mean and the covariance.
    """
    name, reference = "component_posterior", "the Gaussian posterior (Kalman update)"
    _check_function(component_posterior, name)
    mean = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    cov = torch.tensor([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.2]], dtype=torch.float64)
    cases = {"two projections, sigma_y = 0.2": (torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]], dtype=torch.float64),
                                                torch.tensor([0.3, -0.2], dtype=torch.float64), 0.2),
             "one coordinate, sigma_y = 0.05": (torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64),
                                                torch.tensor([0.4], dtype=torch.float64), 0.05)}
    deviation = 0.0
    for where, (A, y, sigma_y) in cases.items():
        with _rebuilding(name, component_posterior):
            result = component_posterior(mean.clone(), cov.clone(), A.clone(), y.clone(), sigma_y)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise AssertionError(f"{name} returned {type(result).__name__} for {where}; it should return a tuple "
                                 f"(post_mean, post_cov) of shapes (3,) and (3, 3).")
        expected_mean, expected_cov = mixture.component_posterior(mean, cov, A, y, sigma_y)
        eye = torch.eye(A.shape[0], dtype=torch.float64)

        def kalman(S=None, gain=None, innovation=None, cov_sign=-1.0):
            S = A @ cov @ A.T + sigma_y ** 2 * eye if S is None else S
            gain = cov @ A.T @ torch.linalg.inv(S) if gain is None else gain
            innovation = y - A @ mean if innovation is None else innovation
            return mean + gain @ innovation, cov + cov_sign * gain @ A @ cov

        slips = {
            "The measurement noise is missing: S = A C A^T + sigma_y^2 I.": lambda: kalman(S=A @ cov @ A.T),
            "S has sigma_y where the noise variance sigma_y^2 belongs.":
                lambda: kalman(S=A @ cov @ A.T + sigma_y * eye),
            "Check the sign of the innovation: m' = m + G (y - A m).": lambda: kalman(innovation=A @ mean - y),
            "The innovation is y itself; subtract the predicted measurement: y - A m.": lambda: kalman(innovation=y),
            "The gain misses the prior covariance: G = C A^T S^{-1}.":
                lambda: kalman(gain=A.T @ torch.linalg.inv(A @ cov @ A.T + sigma_y ** 2 * eye)),
            "Check the sign of the covariance update: measuring shrinks it, C' = C - G A C.":
                lambda: kalman(cov_sign=1.0),
            "The covariance is not updated: C' = C - G A C.": lambda: kalman(cov_sign=0.0),
        }
        for part, mine, expected, index in (("post_mean", result[0], expected_mean, 0),
                                            ("post_cov", result[1], expected_cov, 1)):
            deviation = max(deviation, _compare(
                f"{name} ({part})", reference, where, mine, expected,
                {cause: (lambda compute=compute, index=index: compute()[index]) for cause, compute in slips.items()},
                "Write it in the order of eq. 8a: S, then the gain G (torch.linalg.solve or inv), then the mean and "
                "the covariance.", rtol=1e-9, atol=1e-9))
    return _passed(name, reference, ", ".join(cases), deviation)


# ---- notebook 08 ----

def _toy_eps_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed, smooth stand-in for :math:`\\epsilon_\\theta(x_t, t)` (no parameters, milliseconds): it depends on
    ``x_t`` and on each image's ``t``, so that every slip in the training loss changes its value."""
    scale = 0.5 + torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1, 1, 1) / 1000
    return torch.tanh(scale * x_t.roll(1, dims=-1)) - 0.1 * x_t


def check_training_loss(training_loss: Callable) -> float:
    r"""Check ``training_loss(eps_model, x0, t, eps, alpha_bar)``, DDPM's simple loss on one batch.

    .. math:: L = \frac{1}{B D} \sum_{b=1}^{B} \big\| \epsilon_b - \epsilon_\theta\big(\sqrt{\bar\alpha_{t_b}}\, x_{0,b}
              + \sqrt{1 - \bar\alpha_{t_b}}\, \epsilon_b,\; t_b\big) \big\|^2

    the mean over the batch and the D pixels of each image, as ``F.mse_loss`` in ``helpers.train``. Reference: paper
    eq. 3 for :math:`x_t`; Ho et al. (2020), eq. 14 (:math:`L_\text{simple}`); notebook 08, exercise 1; the loss of
    ``helpers.train.train``. Inputs: ``eps_model`` a fixed smooth function of ``(x_t, t)`` standing in for the network,
    a batch of four ``(3, 8, 8)`` float32 images ``x0`` in [-1, 1] with noise ``eps``, ``t`` a ``(4,)`` long tensor with
    a different timestep per image (two batches: t = 999, 400, 50, 0 and 10, 700, 200, 600), ``alpha_bar`` the paper's
    (float64). Tolerance ``1e-6 + 1e-5 |reference|``. Returns the largest deviation; raises ``AssertionError`` with
    the likely slip, ``ValueError`` if ``training_loss`` is not a function.
    """
    name, reference = "training_loss", "the simple loss (eq. 3 inside)"
    _check_function(training_loss, name)
    alpha_bar = schedule.linear_schedule().alpha_bar
    batches = {"t = 999, 400, 50, 0": torch.tensor([999, 400, 50, 0]),
               "t = 10, 700, 200, 600": torch.tensor([10, 700, 200, 600])}
    deviation = 0.0
    for offset, (where, t) in enumerate(batches.items()):
        x0, eps = _images((4, 3, 8, 8), offset=80 + offset)
        with _rebuilding(name, training_loss):
            mine = training_loss(_toy_eps_model, x0.clone(), t.clone(), eps.clone(), alpha_bar.clone())
        expected = ((eps - _toy_eps_model(schedule.add_noise(x0, eps, t, alpha_bar), t)) ** 2).mean()
        if isinstance(mine, torch.Tensor) and tuple(mine.shape) == (len(t),):
            raise AssertionError(f"{name} returned one loss per image, shape {tuple(mine.shape)}, at {where}; the "
                                 f"training loss is one number, their mean (a 0-dim tensor, as F.mse_loss returns).")
        a = alpha_bar[t].to(x0.dtype).reshape(-1, 1, 1, 1)

        def loss_of(x_t, target=eps, t_model=t, reduce="mean"):
            error = target - _toy_eps_model(x_t, t_model)
            return {"mean": (error ** 2).mean(), "image sum": (error ** 2).sum(dim=(1, 2, 3)).mean(),
                    "sum": (error ** 2).sum(), "abs": error.abs().mean(), "norm": error.norm(),
                    "rmse": (error ** 2).mean().sqrt()}[reduce]

        def x_t_at(index):
            a_other = alpha_bar[index].to(x0.dtype).reshape(-1, 1, 1, 1)
            return a_other.sqrt() * x0 + (1 - a_other).sqrt() * eps

        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        slips = {
            "The network's output is compared with x0; the simple loss compares it with the noise eps that made x_t "
            "(the network predicts eps, eq. 4).": lambda: loss_of(x_t, target=x0),
            "The network is given x0; give it the noisy x_t of eq. 3, sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) "
            "eps.": lambda: loss_of(x0),
            "Both square roots are missing in x_t: eq. 3 scales x0 by sqrt(alpha_bar_t) and eps by "
            "sqrt(1 - alpha_bar_t).": lambda: loss_of(a * x0 + (1 - a) * eps),
            "Check the noise coefficient of x_t: sqrt(1 - alpha_bar_t), not 1 - alpha_bar_t.":
                lambda: loss_of(a.sqrt() * x0 + (1 - a) * eps),
            "Check the signal coefficient of x_t: sqrt(alpha_bar_t), not alpha_bar_t.":
                lambda: loss_of(a * x0 + (1 - a).sqrt() * eps),
            "The coefficients of x_t are swapped: x0 gets sqrt(alpha_bar_t), eps gets sqrt(1 - alpha_bar_t).":
                lambda: loss_of((1 - a).sqrt() * x0 + a.sqrt() * eps),
            "One alpha_bar for the whole batch: every image has its own t, so index alpha_bar with the vector t and "
            "reshape it to (B, 1, 1, 1).": lambda: loss_of(alpha_bar[t[0]].to(x0.dtype).sqrt() * x0
                                                          + (1 - alpha_bar[t[0]].to(x0.dtype)).sqrt() * eps),
            "alpha_bar[t - 1] is used: the code's alpha_bar[t] already is the paper's alpha_bar_{t+1} (notebook 00's "
            "timestep convention). Index with t itself.": lambda: loss_of(x_t_at(t - 1)),
            "alpha_bar[t + 1] is used: index the schedule with t itself.":
                lambda: loss_of(x_t_at((t + 1).clamp(max=len(alpha_bar) - 1))),
            "The network is given alpha_bar_t instead of the timestep t: it takes the integer t, as in training.":
                lambda: loss_of(x_t, t_model=alpha_bar[t].to(x0.dtype)),
            "The squared errors are summed over the pixels of each image: the simple loss averages them (mean over "
            "images and pixels, as F.mse_loss), so that its scale does not depend on the image size.":
                lambda: loss_of(x_t, reduce="image sum"),
            "The squared errors are summed: take their mean over images and pixels, as F.mse_loss does.":
                lambda: loss_of(x_t, reduce="sum"),
            "The errors are not squared: this is the mean absolute error; the simple loss squares them.":
                lambda: loss_of(x_t, reduce="abs"),
            "This is the norm of the error, not the mean of its square.": lambda: loss_of(x_t, reduce="norm"),
            "The square root of the mean squared error is taken; the loss is the mean squared error itself.":
                lambda: loss_of(x_t, reduce="rmse"),
        }
        deviation = max(deviation, _compare(
            name, reference, where, mine, expected, slips,
            "Write it in two lines: x_t by eq. 3 with alpha_bar[t] reshaped to (B, 1, 1, 1), then the mean of "
            "(eps - eps_model(x_t, t)) ** 2.", rtol=1e-5, atol=1e-6))
    return _passed(name, reference, "; ".join(batches), deviation)


def check_ema_update(ema_update: Callable) -> float:
    r"""Check ``ema_update(ema, theta, decay)``, one step of the exponential moving average of a weight tensor.

    .. math:: \theta_\text{EMA} \leftarrow \text{decay}\; \theta_\text{EMA} + (1 - \text{decay})\; \theta

    what ``diffusers.training_utils.EMAModel.step`` does to each parameter (as
    ``ema -= (1 - decay) * (ema - theta)``), with the decay its warm-up gives at that step. Reference: notebook 08,
    exercise 2; ``helpers.train`` keeps the EMA with ``EMAModel``. Inputs: three fixed float32 weight tensors (shapes
    ``(4, 3)``, ``(5,)``, ``(2, 3, 3, 3)``) and their current values ``theta``, ``decay`` = 0.999, 0.9, 0.0 (Python
    floats; 0 is the warm-up's first step, which copies ``theta``). Tolerance ``1e-6 + 1e-6 |reference|``.
    """
    name, reference = "ema_update", "the EMA update"
    _check_function(ema_update, name)
    shapes, decays = ((4, 3), (5,), (2, 3, 3, 3)), (0.999, 0.9, 0.0)
    deviation = 0.0
    for i, (shape, decay) in enumerate(zip(shapes, decays)):
        generator = _generator(90 + i)
        ema, theta = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        with _rebuilding(name, ema_update):
            mine = ema_update(ema.clone(), theta.clone(), decay)
        expected = ema - (1 - decay) * (ema - theta)
        slips = {
            "The weights are swapped: the average keeps decay (close to 1) of its old value and takes 1 - decay of "
            "the current weights.": lambda: (1 - decay) * ema + decay * theta,
            "The current weights are added without the factor 1 - decay: the two weights must sum to 1.":
                lambda: decay * ema + theta,
            "The old average is not multiplied by decay: decay * ema + (1 - decay) * theta.":
                lambda: ema + (1 - decay) * theta,
            "Check the sign: the average moves towards theta, ema - (1 - decay) * (ema - theta).":
                lambda: ema + (1 - decay) * (ema - theta),
            "It returns the current weights: the average must remember its past, decay * ema + (1 - decay) * theta.":
                lambda: theta if decay > 0 else None,
            "It returns the old average unchanged: add (1 - decay) of the current weights.":
                lambda: ema,
        }
        deviation = max(deviation, _compare(name, reference, f"decay = {decay:g}, shape {shape}", mine, expected, slips,
                                            "The update is decay * ema + (1 - decay) * theta.", rtol=1e-6, atol=1e-6))
    return _passed(name, reference, f"decay = {', '.join(f'{d:g}' for d in decays)}", deviation)
