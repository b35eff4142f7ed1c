"""helpers.exercises: the notebooks' own solutions pass every check; each usual slip fails with its own message.

Test (b) of the teaching version: the solution cells of the source notebooks, run as they are, pass their checks (the
whole notebooks also run under nbval). Test (c): a deliberately wrong solution (a flipped sign, a missing square
root, the pseudocode's erratum, a batch-wide norm, ...) fails the matching check, and the message names the slip.
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import pathlib
import re

import nbformat
import pytest
import torch

from helpers import exercises, mixture, models, posterior, sampling, schedule

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"

# exercise function -> (notebook, check, whether the check takes the model)
EXERCISES = {
    "forward_sample": ("01_forward_process.ipynb", exercises.check_forward_sample, False),
    "score_from_eps": ("02_x0_identities.ipynb", exercises.check_score_from_eps, True),
    "posterior_mean": ("02_x0_identities.ipynb", exercises.check_posterior_mean, True),
    "x0_hat_from_score": ("03_single_step_denoising.ipynb", exercises.check_x0_hat, True),
    "ddpm_step_mine": ("04_ddpm_sampling.ipynb", exercises.check_ddpm_step, True),
    "sdedit_start": ("05_sdedit.ipynb", exercises.check_sdedit_start, False),
    "score_ald_update": ("06_posterior_sampling.ipynb", exercises.check_score_ald_update, True),
    "dps_update": ("06_posterior_sampling.ipynb", exercises.check_dps_update, True),
}


@pytest.fixture(scope="module")
def model():
    return models.load_model("faces", device="cpu")


def notebook_functions(notebook: str) -> dict:
    """Every function a notebook defines in cells that hold only definitions (and imports), executed as they are."""
    namespace = {"torch": torch, "sampling": sampling, "schedule": schedule, "posterior": posterior}
    for cell in nbformat.read(NOTEBOOKS / notebook, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            body = ast.parse(cell.source).body
        except SyntaxError:  # IPython syntax (!git, %pip): the Colab cell, never a definition
            continue
        if body and all(isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom)) for node in body):
            exec(compile(cell.source, f"{notebook}:{cell.get('id')}", "exec"), namespace)
    return namespace


def run_check(name: str, fn, model):
    _, check, needs_model = EXERCISES[name]
    return check(fn, model) if needs_model else check(fn)


def all_checks() -> dict:
    """Every graded exercise -> its check, notebook 07's included."""
    return {**{name: check for name, (_, check, _) in EXERCISES.items()}, **NOTEBOOK_07}


def run_any_check(name: str, fn, model):
    if name in EXERCISES:
        return run_check(name, fn, model)
    return graded_checks()[name](fn)     # notebooks 07 and 08: no model


# ---- (b) the notebooks' solutions pass ----

@pytest.mark.parametrize("name", EXERCISES)
def test_the_notebook_solution_passes_its_check(name, model, capsys):
    notebook = EXERCISES[name][0]
    functions = notebook_functions(notebook)
    assert name in functions, f"{notebook} defines no function {name} in a definitions-only cell"
    deviation = run_check(name, functions[name], model)
    line = capsys.readouterr().out
    assert line.startswith(f"✓ {name} matches") and f"max deviation {deviation:.1e}" in line
    assert deviation < 1e-5


# ---- (a) a solution that delegates to the helper it should rebuild fails ----

def timestep_of(model, alpha_bar_t) -> int:
    """The index t with model.alpha_bar[t] == alpha_bar_t: how a delegating solution finds the t it is not given."""
    return int((model.alpha_bar - alpha_bar_t.to(model.alpha_bar.dtype)).abs().argmin())


def delegations(model) -> dict:
    """Per graded exercise, a "solution" that calls the reference it is meant to rebuild. All but score_from_eps (which
    is not given x_t, so no reference can be called for it) pass their checks when nothing is blocked."""
    def seeded():
        return torch.Generator().manual_seed(0)

    def posterior_mean(x_t, x0_hat, a_t, a_prev):
        t = timestep_of(model, a_t)
        x_prev, _ = sampling.ddpm_step(model, x_t, t, t - 1, seeded(), variance="beta", clip_x0=False, x0_hat=x0_hat)
        noise = (1 - a_t / a_prev).sqrt() * sampling.randn(x_t.shape, seeded(), like=x_t)
        return x_prev - noise if t > 0 else x_prev

    def ddpm_step_mine(model, x_t, t, z, variance):
        x_prev, _ = sampling.ddpm_step(model, x_t, t, t - 1, seeded(), variance)
        if t == 0:
            return x_prev
        a_t, a_prev = model.alpha_bar[t], model.alpha_bar[t - 1]
        beta = 1 - a_t / a_prev
        sigma = (beta if variance == "beta" else beta * (1 - a_prev) / (1 - a_t)).sqrt().to(x_t.dtype)
        return x_prev + sigma * (z - sampling.randn(x_t.shape, seeded(), like=x_t))

    return {
        "forward_sample": lambda x0, z, t, alpha_bar: schedule.add_noise(x0, z, t, alpha_bar),
        "score_from_eps": lambda eps, alpha_bar_t: model.score(eps, timestep_of(model, alpha_bar_t)),
        "posterior_mean": posterior_mean,
        "x0_hat_from_score": lambda x_t, score, alpha_bar_t: model.x0_hat(x_t, timestep_of(model, alpha_bar_t)),
        "ddpm_step_mine": ddpm_step_mine,
        "sdedit_start": lambda y, t_start, z, alpha_bar: schedule.add_noise(y, z, t_start, alpha_bar),
        "score_ald_update": lambda model, op, x_t, y, t, t_prev, generator, gamma_t, sigma_y:
            posterior.score_ald_step(model, op, x_t, y, t, t_prev, generator, gamma_t, sigma_y)[0],
        "dps_update": lambda model, op, x_t, y, t, t_prev, generator, zeta_t, sigma_y:
            posterior.dps_step(model, op, x_t, y, t, t_prev, generator, zeta_t, sigma_y=sigma_y, step="paper")[0],
        "mixture_score": lambda weights, means, covs, x_t, alpha_bar_t: mixture.score(
            mixture.noised(mixture.GaussianMixture(weights, means, covs), alpha_bar_t), x_t),
        "component_posterior": lambda mean, cov, A, y, sigma_y: mixture.component_posterior(mean, cov, A, y, sigma_y),
        "training_loss": lambda eps_model, x0, t, eps, alpha_bar: torch.nn.functional.mse_loss(
            eps_model(schedule.add_noise(x0, eps, t, alpha_bar), t), eps),
    }


BLOCKED = {"forward_sample": "schedule.add_noise", "score_from_eps": "model.score",
           "posterior_mean": "sampling.ddpm_step", "x0_hat_from_score": "model.x0_hat",
           "ddpm_step_mine": "sampling.ddpm_step", "sdedit_start": "schedule.add_noise",
           "score_ald_update": "posterior.score_ald_step", "dps_update": "posterior.dps_step",
           "mixture_score": "mixture.noised", "component_posterior": "mixture.component_posterior"}
if hasattr(exercises, "check_training_loss"):   # notebook 08
    BLOCKED["training_loss"] = "schedule.add_noise"


def graded_checks() -> dict:
    """Every check in helpers.exercises, keyed by the learner's function it checks (its first parameter)."""
    return {next(iter(inspect.signature(check).parameters)): check
            for name, check in inspect.getmembers(exercises, inspect.isfunction) if name.startswith("check_")}


def test_every_graded_exercise_has_its_references_blocked():
    checks = graded_checks()
    assert set(all_checks()) <= set(checks) and set(checks) <= set(exercises.REBUILDS)
    for name, check in checks.items():
        assert f"with _rebuilding(name, {name}):" in inspect.getsource(check), (
            f"exercises.{check.__name__} runs the learner's {name} outside _rebuilding")
    assert set(BLOCKED) == {name for name in checks if exercises.REBUILDS[name][2]}


def references_now() -> dict:
    return {(id(owner), attribute): vars(owner)[attribute]
            for _, _, references in exercises.REBUILDS.values() for owner, attribute in references}


@pytest.mark.parametrize("name", BLOCKED)
def test_a_solution_calling_the_reference_fails_with_implement_this_yourself(name, model):
    before = references_now()
    source = exercises.REBUILDS[name][0]
    message = (rf"{name} calls {re.escape(BLOCKED[name])}: implement this yourself from {re.escape(source)}; "
               rf"{re.escape(BLOCKED[name])} is what this exercise rebuilds \(allowed here: ")
    with pytest.raises(AssertionError, match=message):
        run_any_check(name, delegations(model)[name], model)
    assert references_now() == before


def independent_solutions() -> dict:
    """Per exercise checked against a helper, a solution written out in this file from the equations (the slip-free
    case of the slip families below), sharing no code with the reference the check compares it with."""
    def posterior_mean(x_t, x0_hat, a_t, a_prev):
        alpha_t = a_t / a_prev
        return (alpha_t.sqrt() * (1 - a_prev) * x_t + a_prev.sqrt() * (1 - alpha_t) * x0_hat) / (1 - a_t)

    return {
        "forward_sample": lambda x0, z, t, alpha_bar: eq3(x0, z, alpha_bar[t]),
        "score_from_eps": lambda eps, a: -eps / (1 - a).sqrt(),
        "posterior_mean": posterior_mean,
        "x0_hat_from_score": lambda x_t, score, a: (x_t + (1 - a) * score) / a.sqrt(),
        "ddpm_step_mine": ddpm_step_with(None),
        "sdedit_start": lambda y, t_start, z, alpha_bar: eq3(y, z, alpha_bar[t_start]),
        "score_ald_update": score_ald_with(None),
        "dps_update": dps_with(None),
        "training_loss": training_loss_with(None),
    }


@pytest.mark.parametrize("name", ["forward_sample", "score_from_eps", "posterior_mean", "x0_hat_from_score",
                                  "ddpm_step_mine", "sdedit_start", "score_ald_update", "dps_update", "training_loss"])
def test_an_independent_solution_passes_and_the_same_one_slightly_off_fails(name, model):
    """The checks compare with their reference, not with themselves: a solution written from the equations passes, and
    the same solution moved by 1e-3 (well above float32 rounding, well below any slip) fails."""
    solution = independent_solutions()[name]
    assert run_any_check(name, solution, model) < 1e-5

    def off(*args):
        return solution(*args) + 1e-3

    with pytest.raises(AssertionError, match=f"{name} differs from .* by 0.001"):
        run_any_check(name, off, model)


def test_the_reference_itself_or_imported_by_name_is_blocked_too():
    with pytest.raises(AssertionError, match="component_posterior calls mixture.component_posterior: implement this"):
        exercises.check_component_posterior(mixture.component_posterior)
    namespace = {"add_noise": schedule.add_noise}    # a notebook that ran `from helpers.schedule import add_noise`
    exec("def forward_sample(x0, z, t, alpha_bar):\n    return add_noise(x0, z, t, alpha_bar)\n", namespace)
    with pytest.raises(AssertionError, match="forward_sample calls schedule.add_noise: implement this yourself"):
        exercises.check_forward_sample(namespace["forward_sample"])
    assert namespace["add_noise"] is schedule.add_noise


def test_the_references_are_restored_after_a_pass_a_failure_and_an_error(model):
    before = references_now()
    exercises.check_x0_hat(lambda x_t, score, a: (x_t + (1 - a) * score) / a.sqrt(), model)
    assert references_now() == before
    with pytest.raises(AssertionError, match="implement this yourself"):
        exercises.check_x0_hat(lambda x_t, score, a: model.x0_hat(x_t, 50), model)
    assert references_now() == before

    def raises(model, op, x_t, y, t, t_prev, generator, zeta_t, sigma_y):
        assert posterior.dps_step is not before[(id(posterior), "dps_step")]   # blocked while it runs
        raise ValueError("the learner's own error")

    with pytest.raises(ValueError, match="the learner's own error"):
        exercises.check_dps_update(raises, model)
    assert references_now() == before
    assert models.ScoreModel.x0_hat is before[(id(models.ScoreModel), "x0_hat")]
    assert "x0_hat" not in vars(models.DiffusionModel)                # nothing left behind on the subclass
    x_t = torch.zeros(1, 3, model.image_size, model.image_size)
    assert model.x0_hat(x_t, 10).shape == x_t.shape           # the model works again after the checks


# ---- (c) wrong solutions fail, naming the slip ----

def eq3(signal, z, a, slip=None):
    """Eq. 3 for a 0-dim tensor ``a``, with one of the usual slips."""
    a = a.to(signal.dtype)
    return {None: a.sqrt() * signal + (1 - a).sqrt() * z,
            "no roots": a * signal + (1 - a) * z,
            "noise variance": a.sqrt() * signal + (1 - a) * z,
            "one minus root": a.sqrt() * signal + (1 - a.sqrt()) * z,
            "swapped": (1 - a).sqrt() * signal + a.sqrt() * z,
            "unscaled": signal + (1 - a).sqrt() * z,
            "minus": a.sqrt() * signal - (1 - a).sqrt() * z}[slip]


@pytest.mark.parametrize("slip, message", [
    ("no roots", "Both square roots are missing"),
    ("noise variance", "the square root of the noise variance, not by 1 - alpha_bar_t"),
    ("one minus root", "not 1 - sqrt(alpha_bar_t)"),
    ("swapped", "The two coefficients are swapped"),
    ("unscaled", "x0 is not scaled"),
    ("minus", "Check the sign of the noise term"),
])
def test_forward_sample_slips(slip, message):
    def forward_sample(x0, z, t, alpha_bar):
        return eq3(x0, z, alpha_bar[t], slip)

    with pytest.raises(AssertionError, match=r"forward_sample differs from eq\. 3 by [0-9.e+-]+ at t = 0 ") as info:
        exercises.check_forward_sample(forward_sample)
    assert message in str(info.value)


@pytest.mark.parametrize("offset, message", [(-1, "alpha_bar[t - 1] is used"), (1, "alpha_bar[t + 1] is used")])
def test_forward_sample_off_by_one_names_the_timestep_convention(offset, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        exercises.check_forward_sample(lambda x0, z, t, alpha_bar: eq3(x0, z, alpha_bar[t + offset]))


def test_sdedit_start_slip_names_y():
    with pytest.raises(AssertionError, match=r"sdedit_start differs from eq\. 3 .* at t_start = 250 .*y is not scaled"):
        exercises.check_sdedit_start(lambda y, t_start, z, alpha_bar: eq3(y, z, alpha_bar[t_start], "unscaled"))


def test_an_unknown_mistake_gets_the_general_hint():
    with pytest.raises(AssertionError, match="It matches none of the usual slips. Write eq. 3 term by term"):
        exercises.check_forward_sample(lambda x0, z, t, alpha_bar: 0.5 * x0)


@pytest.mark.parametrize("slip, message", [
    ("sign", "Check the sign: the score points away from the predicted noise"),
    ("no root", "The square root is missing"),
    ("multiplied", "eps is multiplied by sqrt(1 - alpha_bar_t)"),
    ("alpha_bar", "sqrt(alpha_bar_t) is used"),
])
def test_score_from_eps_slips(slip, message, model):
    def score_from_eps(eps, a):
        return {"sign": eps / (1 - a).sqrt(), "no root": -eps / (1 - a), "multiplied": -eps * (1 - a).sqrt(),
                "alpha_bar": -eps / a.sqrt()}[slip]

    with pytest.raises(AssertionError, match=re.escape(message)):
        exercises.check_score_from_eps(score_from_eps, model)


@pytest.mark.parametrize("slip, message", [
    ("erratum", "x_t is weighted with sqrt(alpha_bar_t), the erratum of the paper's pseudocode"),
    ("alpha_bar everywhere", "alpha_bar_t is used where alpha_t = alpha_bar_t / alpha_bar_prev belongs"),
    ("swapped", "The two weights are swapped"),
    ("no root prev", "it has sqrt(alpha_bar_prev), not alpha_bar_prev"),
    ("no root alpha", "it has sqrt(alpha_t), not alpha_t"),
    ("no division", "The division by 1 - alpha_bar_t is missing"),
])
def test_posterior_mean_slips(slip, message, model):
    def posterior_mean(x_t, x0_hat, a_t, a_prev):
        alpha_t = a_t / a_prev
        w_x_t, w_x0 = alpha_t.sqrt() * (1 - a_prev) / (1 - a_t), a_prev.sqrt() * (1 - alpha_t) / (1 - a_t)
        if slip == "erratum":
            w_x_t = a_t.sqrt() * (1 - a_prev) / (1 - a_t)
        elif slip == "alpha_bar everywhere":
            w_x_t, w_x0 = a_t.sqrt() * (1 - a_prev) / (1 - a_t), a_prev.sqrt() * (1 - a_t) / (1 - a_t)
        elif slip == "swapped":
            w_x_t, w_x0 = w_x0, w_x_t
        elif slip == "no root prev":
            w_x0 = a_prev * (1 - alpha_t) / (1 - a_t)
        elif slip == "no root alpha":
            w_x_t = alpha_t * (1 - a_prev) / (1 - a_t)
        elif slip == "no division":
            w_x_t, w_x0 = w_x_t * (1 - a_t), w_x0 * (1 - a_t)
        return w_x_t * x_t + w_x0 * x0_hat

    with pytest.raises(AssertionError, match=re.escape(message)):
        exercises.check_posterior_mean(posterior_mean, model)


@pytest.mark.parametrize("slip, message", [
    ("sign", "Check the sign of the score term: eq. 6 adds (1 - alpha_bar_t) * score to x_t"),
    ("no root", "eq. 6 divides by its square root"),
    ("root on score", "eq. 6 scales it by the variance 1 - alpha_bar_t, no root"),
    ("noise form", "This is the noise form of eq. 6"),
    ("no division", "The division by sqrt(alpha_bar_t) is missing"),
    ("only score divided", "eq. 6 divides the whole bracket"),
])
def test_x0_hat_slips(slip, message, model):
    def x0_hat_from_score(x_t, score, a):
        return {"sign": (x_t - (1 - a) * score) / a.sqrt(), "no root": (x_t + (1 - a) * score) / a,
                "root on score": (x_t + (1 - a).sqrt() * score) / a.sqrt(),
                "noise form": (x_t - (1 - a).sqrt() * score) / a.sqrt(),
                "no division": x_t + (1 - a) * score, "only score divided": x_t + (1 - a) * score / a.sqrt()}[slip]

    with pytest.raises(AssertionError, match=r"x0_hat_from_score differs from eq\. 6 by [0-9.e+-]+ at t = 50 ") as info:
        exercises.check_x0_hat(x0_hat_from_score, model)
    assert message in str(info.value)


def ddpm_step_with(slip):
    """A DDPM step (eq. 6 clipped, eq. 7, + sigma_t z except at t = 0) with one of the usual slips."""
    def ddpm_step_mine(model, x_t, t, z, variance):
        a_t = model.alpha_bar[t]
        a_prev = model.alpha_bar[t - 1] if t > 0 else torch.ones_like(a_t)
        alpha_t = a_t / a_prev
        x0_hat = model.x0_hat(x_t, t)
        if slip != "no clip":
            x0_hat = x0_hat.clamp(-1, 1)
        root = a_t.sqrt() if slip == "erratum" else alpha_t.sqrt()
        x_prev = (root * (1 - a_prev) * x_t + a_prev.sqrt() * (1 - alpha_t) * x0_hat) / (1 - a_t)
        beta, beta_tilde = 1 - alpha_t, (1 - alpha_t) * (1 - a_prev) / (1 - a_t)
        if slip == "other variance":
            variance = "beta" if variance == "beta_tilde" else "beta_tilde"
        sigma = (beta if variance == "beta" else beta_tilde).sqrt()
        if slip == "variance as std":
            sigma = sigma ** 2
        if slip == "minus":
            sigma = -sigma
        if (t > 0 and slip != "no noise") or slip == "noise at 0":
            x_prev = x_prev + (sigma if t > 0 else beta.sqrt()) * z
        return x_prev.float()
    return ddpm_step_mine


def test_the_ddpm_step_written_here_passes(model):
    assert exercises.check_ddpm_step(ddpm_step_with(None), model) < 1e-5


@pytest.mark.parametrize("slip, where, message", [
    ("no clip", "t = 999", "x0_hat is not clipped to [-1, 1]"),
    ("erratum", "t = 999", "the erratum of the paper's pseudocode"),
    ("no noise", "t = 999", "The noise term sigma_t z is missing"),
    ("noise at 0", "t = 0", "Noise was added at t = 0"),
    ("other variance", "t = 500, variance = 'beta'", "sigma_t^2 is the other variance ('beta_tilde')"),
    ("variance as std", "t = 999", "The noise is scaled by the variance sigma_t^2"),
    ("minus", "t = 999", "Check the sign of the noise term"),
])
def test_ddpm_step_slips(slip, where, message, model):
    with pytest.raises(AssertionError, match=f"ddpm_step_mine differs .* at {re.escape(where)}[ ,]") as info:
        exercises.check_ddpm_step(ddpm_step_with(slip), model)
    assert message in str(info.value)


def score_ald_with(slip):
    def score_ald_update(model, op, x_t, y, t, t_prev, generator, gamma_t, sigma_y):
        x_prev, _ = sampling.ddpm_step(model, x_t, t, t_prev, generator)
        at = x_prev if slip == "misfit at x_prev" else x_t
        back = op.A if slip == "A for adjoint" else op.A_adjoint
        grad = (1 if slip == "no factor 2" else 2) * back(op.A(at) - y)
        denominator = {"squared sum": sigma_y ** 2 + gamma_t ** 2, "square of sum": (sigma_y + gamma_t) ** 2,
                       "gamma not squared": sigma_y ** 2 + gamma_t}
        step = grad / denominator.get(slip, denominator["squared sum"])
        return {"sign": x_prev + step, "no data step": x_prev}.get(slip, x_prev - step)
    return score_ald_update


@pytest.mark.parametrize("slip, message", [
    ("no factor 2", "The factor 2 is missing"),
    ("sign", "Check the sign of the data step"),
    ("A for adjoint", "A is used where its adjoint belongs"),
    ("misfit at x_prev", "The misfit is taken at x'_{t-1}"),
    ("square of sum", "The denominator is (sigma_y + gamma_t)^2"),
    ("gamma not squared", "The denominator is sigma_y^2 + gamma_t;"),
    ("no data step", "The data step is missing: that is plain DDPM"),
])
def test_score_ald_slips(slip, message, model):
    with pytest.raises(AssertionError, match=r"score_ald_update differs .* at t = 300 -> t_prev = 280 ") as info:
        exercises.check_score_ald_update(score_ald_with(slip), model)
    assert message in str(info.value)


def dps_with(slip):
    def dps_update(model, op, x_t, y, t, t_prev, generator, zeta_t, sigma_y):
        with torch.enable_grad():
            leaf = x_t.detach().requires_grad_()
            x0_hat = model.x0_hat(leaf, t)
            if slip != "no clip":
                x0_hat = x0_hat.clamp(-1, 1)
            residual = (op.A(x0_hat) - y).flatten(1)
            loss = {"norm": residual.norm(dim=1).sum(), "batch norm": residual.norm(),
                    "batch mean": residual.pow(2).sum(dim=1).mean(),
                    "pixel mean": residual.pow(2).mean(dim=1).sum()}.get(slip, residual.pow(2).sum())
            (grad,) = torch.autograd.grad(loss, x0_hat if slip == "wrt x0_hat" else leaf)
        x_prev, _ = sampling.ddpm_step(model, x_t, t, t_prev, generator,
                                       x0_hat=x0_hat if slip == "not detached" else x0_hat.detach())
        scale = {"scale": 1 / sigma_y ** 2, "sign": -1 / (2 * sigma_y ** 2)}.get(slip, 1 / (2 * sigma_y ** 2))
        return x_prev - zeta_t * scale * grad
    return dps_update


@pytest.mark.parametrize("slip, message", [
    ("no clip", "x0_hat is not clipped to [-1, 1] before the misfit"),
    ("sign", "Check the sign of the data step"),
    ("norm", "This is the gradient of the norm"),
    ("batch norm", "The norm is taken over the whole batch, as in the official DPS code"),
    ("batch mean", "The per-image losses are averaged over the batch"),
    ("pixel mean", "The misfit is a mean over pixels"),
    ("wrt x0_hat", "The gradient is taken with respect to x0_hat"),
    ("scale", "The step is zeta_t / sigma_y^2"),
    ("not detached", "returned a tensor that still requires grad"),
])
def test_dps_slips(slip, message, model):
    with pytest.raises(AssertionError, match=r"dps_update .* at t = (300 -> t_prev = 280|50 -> t_prev = 30)") as info:
        exercises.check_dps_update(dps_with(slip), model)
    assert message in str(info.value)


def test_the_dps_step_written_here_passes(model):
    assert exercises.check_dps_update(dps_with(None), model) < 1e-5


# ---- what else can go wrong in the learner's function, and bad arguments ----

def test_a_missing_return_is_named():
    with pytest.raises(AssertionError, match=r"forward_sample returned NoneType at t = 0; .* Is the `return` missing\?"):
        exercises.check_forward_sample(lambda x0, z, t, alpha_bar: None)


def test_a_wrong_shape_is_named():
    with pytest.raises(AssertionError, match=r"forward_sample returned shape \(2, 32, 32\) at t = 0; eq\. 3 gives "
                                             r"\(2, 3, 32, 32\)"):
        exercises.check_forward_sample(lambda x0, z, t, alpha_bar: eq3(x0, z, alpha_bar[t]).sum(dim=1))


def test_nan_is_named(model):
    def posterior_mean(x_t, x0_hat, a_t, a_prev):   # right, except 0 / 0 at the last step
        alpha_t = a_t / a_prev
        right = (alpha_t.sqrt() * (1 - a_prev) * x_t + a_prev.sqrt() * (1 - alpha_t) * x0_hat) / (1 - a_t)
        return right * (1 - a_prev) / (1 - a_prev)

    with pytest.raises(AssertionError, match="posterior_mean returned NaN or inf at t = 0, where eq. 7 is finite"):
        exercises.check_posterior_mean(posterior_mean, model)


def test_an_unfilled_exercise_raises_not_implemented_error():
    def forward_sample(x0, z, t, alpha_bar):
        # YOUR CODE HERE
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        exercises.check_forward_sample(forward_sample)


@pytest.mark.parametrize("check", [exercises.check_forward_sample, exercises.check_sdedit_start])
def test_a_value_instead_of_a_function_is_refused(check):
    with pytest.raises(ValueError, match=r"must be your function itself \(pass .*, without calling it\); got Tensor"):
        check(torch.zeros(3))


@pytest.mark.parametrize("name", [name for name, (_, _, needs_model) in EXERCISES.items() if needs_model])
def test_a_missing_model_is_refused(name):
    check = EXERCISES[name][1]
    with pytest.raises(ValueError, match=r"model must be the notebook's diffusion model, models.load_model\(\.\.\.\); "
                                         r"got str"):
        check(lambda *args: None, "faces")


# ---- notebook 07: the exact score of a noised mixture and the posterior of one component ----

NOTEBOOK_07 = {"mixture_score": exercises.check_mixture_score,
               "component_posterior": exercises.check_component_posterior}


@pytest.mark.parametrize("name", NOTEBOOK_07)
def test_the_notebook_07_solution_passes_its_check(name, capsys):
    functions = notebook_functions("07_ground_truth.ipynb")
    assert name in functions, f"07_ground_truth.ipynb defines no function {name} in a definitions-only cell"
    deviation = NOTEBOOK_07[name](functions[name])
    line = capsys.readouterr().out
    assert line.startswith(f"✓ {name} matches") and f"max deviation {deviation:.1e}" in line
    assert deviation < 1e-9


def mixture_score_with(slip):
    """The score of a Gaussian mixture noised by eq. 3, written out, with one of the usual slips."""
    def mixture_score(weights, means, covs, x_t, a):
        eye = torch.eye(means.shape[1], dtype=means.dtype)
        mu = means if slip in ("unscaled means", "p0") else a.sqrt() * means
        sigma = {"unscaled covs": covs + (1 - a) * eye, "root on cov": a.sqrt() * covs + (1 - a) * eye,
                 "noise std": a * covs + (1 - a).sqrt() * eye, "no noise": a * covs,
                 "p0": covs}.get(slip, a * covs + (1 - a) * eye)
        diff = x_t[:, None, :] - mu[None]                                            # (N, K, d)
        precision_diff = torch.linalg.solve(sigma[None], diff[..., None])[..., 0]
        log_r = torch.log(weights) - 0.5 * ((diff * precision_diff).sum(dim=2) + torch.logdet(sigma))
        if slip == "prior weights":
            log_r = torch.log(weights).expand_as(log_r)
        elif slip == "no det":
            log_r = log_r + 0.5 * torch.logdet(sigma)
        elif slip == "no weights":
            log_r = log_r - torch.log(weights)
        score = -(torch.softmax(log_r, dim=1)[:, :, None] * precision_diff).sum(dim=1)
        return -score if slip == "sign" else score

    return mixture_score


def test_the_mixture_score_written_here_passes():
    assert exercises.check_mixture_score(mixture_score_with(None)) < 1e-12


@pytest.mark.parametrize("slip, message", [
    ("sign", "Check the sign: the score points towards the components"),
    ("unscaled means", "The means are not scaled"),
    ("unscaled covs", "The covariances are not scaled"),
    ("root on cov", "C_k is scaled by sqrt(alpha_bar_t)"),
    ("noise std", "not its standard deviation sqrt(1 - alpha_bar_t)"),
    ("no noise", "The noise is missing from the covariance"),
    ("p0", "This is the score of the clean mixture, p_0"),
    ("prior weights", "mixed with the prior weights w_k; use the responsibilities"),
    ("no det", "The responsibilities miss the log-determinant"),
    ("no weights", "The responsibilities miss the weights"),
])
def test_mixture_score_slips(slip, message):
    with pytest.raises(AssertionError, match=r"mixture_score differs from the score of p_t \(eq\. 3\) by [0-9.e+-]+ "
                                             r"at t = 300 ") as info:
        exercises.check_mixture_score(mixture_score_with(slip))
    assert message in str(info.value)


def component_posterior_with(slip):
    """The Kalman update of one Gaussian, written out, with one of the usual slips."""
    def component_posterior(mean, cov, A, y, sigma_y):
        noise = {"no noise": 0.0, "sigma not squared": sigma_y}.get(slip, sigma_y ** 2)
        S = A @ cov @ A.T + noise * torch.eye(A.shape[0], dtype=cov.dtype)
        gain = (A.T if slip == "gain without C" else cov @ A.T) @ torch.linalg.inv(S)
        innovation = {"innovation sign": A @ mean - y, "innovation y": y}.get(slip, y - A @ mean)
        post_cov = {"cov sign": cov + gain @ A @ cov, "cov kept": cov}.get(slip, cov - gain @ A @ cov)
        return mean + gain @ innovation, post_cov

    return component_posterior


def test_the_component_posterior_written_here_passes():
    assert exercises.check_component_posterior(component_posterior_with(None)) < 1e-12


@pytest.mark.parametrize("slip, part, message", [
    ("no noise", "post_mean", "The measurement noise is missing"),
    ("sigma not squared", "post_mean", "S has sigma_y where the noise variance sigma_y^2 belongs"),
    ("innovation sign", "post_mean", "Check the sign of the innovation"),
    ("innovation y", "post_mean", "The innovation is y itself"),
    ("gain without C", "post_mean", "The gain misses the prior covariance"),
    ("cov sign", "post_cov", "Check the sign of the covariance update"),
    ("cov kept", "post_cov", "The covariance is not updated"),
])
def test_component_posterior_slips(slip, part, message):
    with pytest.raises(AssertionError, match=rf"component_posterior \({part}\) differs from the Gaussian posterior "
                                             r"\(Kalman update\) by [0-9.e+-]+ at two projections") as info:
        exercises.check_component_posterior(component_posterior_with(slip))
    assert message in str(info.value)


def test_component_posterior_must_return_a_pair():
    with pytest.raises(AssertionError, match=r"component_posterior returned Tensor for two projections, sigma_y = 0\.2; "
                                             r"it should return a tuple \(post_mean, post_cov\)"):
        exercises.check_component_posterior(lambda mean, cov, A, y, sigma_y: mean)


# ---- notebook 08: the training loss and the EMA update ----

NOTEBOOK_08 = {"training_loss": exercises.check_training_loss, "ema_update": exercises.check_ema_update}


@pytest.mark.parametrize("name", NOTEBOOK_08)
def test_the_notebook_08_solution_passes_its_check(name, capsys):
    functions = notebook_functions("08_training.ipynb")
    assert name in functions, f"08_training.ipynb defines no function {name} in a definitions-only cell"
    deviation = NOTEBOOK_08[name](functions[name])
    line = capsys.readouterr().out
    assert line.startswith(f"✓ {name} matches") and f"max deviation {deviation:.1e}" in line
    assert deviation < 1e-6


def test_the_training_references_pass():
    import torch.nn.functional as F
    from diffusers.training_utils import EMAModel

    def training_loss(eps_model, x0, t, eps, alpha_bar):   # helpers.train's loss, eq. 3 written out
        a = alpha_bar[t].to(x0.dtype)[:, None, None, None]
        return F.mse_loss(eps_model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t), eps)

    assert exercises.check_training_loss(training_loss) < 1e-6

    def ema_update(ema, theta, decay):   # diffusers' EMAModel.step at a fixed decay
        reference = EMAModel([torch.nn.Parameter(ema.clone())], decay=decay, min_decay=decay, update_after_step=-2)
        reference.step([torch.nn.Parameter(theta)])
        return reference.shadow_params[0].detach()

    assert exercises.check_ema_update(ema_update) < 1e-6


def training_loss_with(slip):
    """The simple loss, written out, with one of the usual slips."""
    def training_loss(eps_model, x0, t, eps, alpha_bar):
        index = {"t - 1": t - 1, "t + 1": (t + 1).clamp(max=len(alpha_bar) - 1), "one t": t[:1]}.get(slip, t)
        a = alpha_bar[index].float().reshape(-1, 1, 1, 1)
        x_t = {"x0 to the model": x0, "no roots": a * x0 + (1 - a) * eps, "noise not rooted": a.sqrt() * x0 + (1 - a) * eps,
               "signal not rooted": a * x0 + (1 - a).sqrt() * eps,
               "swapped": (1 - a).sqrt() * x0 + a.sqrt() * eps}.get(slip, a.sqrt() * x0 + (1 - a).sqrt() * eps)
        eps_hat = eps_model(x_t, alpha_bar[t].float() if slip == "alpha_bar to the model" else t)
        error = (x0 if slip == "x0 target" else eps) - eps_hat
        return {"image sum": (error ** 2).sum(dim=(1, 2, 3)).mean(), "sum": (error ** 2).sum(),
                "abs": error.abs().mean(), "norm": error.norm(), "rmse": (error ** 2).mean().sqrt(),
                "per image": (error ** 2).mean(dim=(1, 2, 3))}.get(slip, (error ** 2).mean())

    return training_loss


def test_the_training_loss_written_here_passes():
    assert exercises.check_training_loss(training_loss_with(None)) < 1e-6


@pytest.mark.parametrize("slip, message", [
    ("x0 target", "The network's output is compared with x0"),
    ("x0 to the model", "The network is given x0"),
    ("no roots", "Both square roots are missing in x_t"),
    ("noise not rooted", "Check the noise coefficient of x_t"),
    ("signal not rooted", "Check the signal coefficient of x_t"),
    ("swapped", "The coefficients of x_t are swapped"),
    ("one t", "One alpha_bar for the whole batch"),
    ("t - 1", "alpha_bar[t - 1] is used"),
    ("t + 1", "alpha_bar[t + 1] is used"),
    ("alpha_bar to the model", "The network is given alpha_bar_t instead of the timestep t"),
    ("image sum", "summed over the pixels of each image"),
    ("sum", "The squared errors are summed: take their mean"),
    ("abs", "The errors are not squared"),
    ("norm", "This is the norm of the error"),
    ("rmse", "The square root of the mean squared error is taken"),
])
def test_training_loss_slips(slip, message):
    with pytest.raises(AssertionError, match=r"training_loss differs from the simple loss \(eq\. 3 inside\) by "
                                             r"[0-9.e+-]+ at t = 999, 400, 50, 0 ") as info:
        exercises.check_training_loss(training_loss_with(slip))
    assert message in str(info.value)


def test_a_loss_per_image_is_named():
    with pytest.raises(AssertionError, match=r"training_loss returned one loss per image, shape \(4,\), at t = 999, "
                                             r"400, 50, 0; the training loss is one number, their mean"):
        exercises.check_training_loss(training_loss_with("per image"))


@pytest.mark.parametrize("slip, ema_update, message", [
    ("swapped", lambda ema, theta, decay: (1 - decay) * ema + decay * theta, "The weights are swapped"),
    ("no 1 - decay", lambda ema, theta, decay: decay * ema + theta, "added without the factor 1 - decay"),
    ("no decay", lambda ema, theta, decay: ema + (1 - decay) * theta, "The old average is not multiplied by decay"),
    ("sign", lambda ema, theta, decay: ema + (1 - decay) * (ema - theta), "Check the sign: the average moves towards"),
    ("theta", lambda ema, theta, decay: theta, "It returns the current weights"),
    ("ema", lambda ema, theta, decay: ema, "It returns the old average unchanged"),
])
def test_ema_update_slips(slip, ema_update, message):
    with pytest.raises(AssertionError, match=r"ema_update differs from the EMA update by [0-9.e+-]+ at decay = 0\.999, "
                                             r"shape \(4, 3\)") as info:
        exercises.check_ema_update(ema_update)
    assert message in str(info.value)


def test_an_in_place_ema_update_passes():
    def ema_update(ema, theta, decay):
        return ema.mul_(decay).add_(theta, alpha=1 - decay)

    assert exercises.check_ema_update(ema_update) < 1e-6
