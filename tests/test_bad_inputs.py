"""Bad input to the public functions of helpers.mixture, helpers.baselines, helpers.download and helpers.exercises.

One row per (function, class of bad input): zero, boolean and fractional counts; shape and batch mismatches; integer
and non-finite tensors; infinite and NaN numbers; wrong generator types; odd or missing files and paths; absurd
sizes. Each must raise ``ValueError`` with a message that names the parameter and shows what came (``got ...``).
The modules with their own batteries (sampling, posterior, operators, models, images, metrics) test theirs there.
"""
from __future__ import annotations

import math

import pytest
import torch

from helpers import baselines, download, exercises, mixture, operators

NAN, INF = math.nan, math.inf

PRIOR = mixture.append_coordinates(
    mixture.gaussian_mixture([0.6, 0.4], [[-0.5, 0.0], [0.5, 0.2]], [[[0.03, 0.0], [0.0, 0.02]]] * 2), 1, 0.1)
MODEL = mixture.mixture_model(PRIOR)
MATRIX_OP = mixture.matrix_operator([[1.0, 0.0, 0.0]], "first coordinate")
OPS = operators.course_operators(32)
POINTS = torch.zeros(4, 3, dtype=torch.float64)
IMAGES = torch.zeros(4, 3, 1, 1)
Y32 = torch.zeros(1, 3, 32, 32)
DIRECTIONS = mixture.random_directions(3, 5, torch.Generator().manual_seed(0))
A = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
G = torch.Generator().manual_seed(0)


def nan_like(x: torch.Tensor) -> torch.Tensor:
    return x.clone().fill_(NAN)


def solution(*args, **kwargs):  # a callable that stands for a learner's function (never reached: the input is bad)
    raise AssertionError("the check should have refused its arguments before calling the solution")


CASES = {
    # ---- mixture: counts ----
    "append_coordinates count=True": (lambda: mixture.append_coordinates(PRIOR, True, 0.1), r"count must be .*got True"),
    "append_coordinates count=1.5": (lambda: mixture.append_coordinates(PRIOR, 1.5, 0.1), r"count must be .*got 1.5"),
    "sample num_samples=0": (lambda: mixture.sample(PRIOR, 0, G), r"num_samples must be a positive integer; got 0"),
    "sample num_samples=2.0": (lambda: mixture.sample(PRIOR, 2.0, G), r"num_samples must be .*got 2.0"),
    "random_directions num_directions=False": (lambda: mixture.random_directions(3, False, G),
                                               r"num_directions must be .*got False"),
    "random_directions d=2.5": (lambda: mixture.random_directions(2.5, 4, G), r"d must be .*got 2.5"),
    "sliced_wasserstein_groups num_groups=True": (
        lambda: mixture.sliced_wasserstein_groups(POINTS, POINTS, DIRECTIONS, True), r"num_groups must be .*got True"),
    "sliced_wasserstein_groups num_groups=3 (does not divide 4)": (
        lambda: mixture.sliced_wasserstein_groups(POINTS, POINTS, DIRECTIONS, 3), r"num_groups must be .*got 3"),
    # ---- mixture: shapes and batches ----
    "gaussian_mixture means for 3 weights": (
        lambda: mixture.gaussian_mixture([0.5, 0.5], [[0.0], [1.0], [2.0]], [[[1.0]], [[1.0]]]),
        r"means must have shape \(K, d\) = \(2, d\).*got shape \(3, 1\)"),
    "gaussian_mixture covs (K, d)": (lambda: mixture.gaussian_mixture([1.0], [[0.0, 0.0]], [[1.0, 1.0]]),
                                     r"covs must have shape \(K, d, d\) = \(1, 2, 2\).*got shape \(1, 2\)"),
    "log_prob points of the wrong dimension": (lambda: mixture.log_prob(PRIOR, torch.zeros(4, 2)),
                                               r"x must have shape \(N, 3\), one point per row.*got \(4, 2\)"),
    "posterior A of the wrong width": (lambda: mixture.posterior(PRIOR, [[1.0, 0.0]], [0.0], 0.1),
                                       r"A must be a matrix of shape \(m, 3\).*got shape \(1, 2\)"),
    "posterior y of the wrong length": (lambda: mixture.posterior(PRIOR, A, [0.0, 1.0], 0.1),
                                        r"y must hold one measurement of 1 values.*got 2 values"),
    "component_posterior cov (d+1, d+1)": (
        lambda: mixture.component_posterior(torch.zeros(3), torch.eye(4), A, torch.zeros(1), 0.1),
        r"mean, cov, A and y must have shapes .*got \(3,\), \(4, 4\), \(1, 3\) and \(1,\)"),
    "sliced_wasserstein x and y of different sizes": (
        lambda: mixture.sliced_wasserstein(POINTS, POINTS[:3], DIRECTIONS), r"x and y must be point sets.*got \(4, 3\) and \(3, 3\)"),
    "MixtureModel.eps x_t of a 2x2 image": (lambda: MODEL.eps(torch.zeros(4, 3, 2, 2), 10),
                                           r"x_t must have shape \(B, 3, 1, 1\).*got \(4, 3, 2, 2\)"),
    "MixtureModel.score t for another batch": (lambda: MODEL.score(IMAGES, torch.tensor([1, 2])),
                                              r"t must be a scalar or have shape \(4,\).*got shape \(2,\)"),
    "MatrixOperator.A a batch of points": (lambda: MATRIX_OP.A(POINTS), r"x must have shape \(B, 3, 1, 1\).*got \(4, 3\)"),
    "MatrixOperator.A_adjoint y with 2 values": (lambda: MATRIX_OP.A_adjoint(torch.zeros(4, 2, 1, 1)),
                                                 r"y must have shape \(B, 1, 1, 1\).*got \(4, 2, 1, 1\)"),
    "to_points a batch of points": (lambda: mixture.to_points(POINTS), r"x must have shape \(N, 3, S, S\); got \(4, 3\)"),
    "to_images images": (lambda: mixture.to_images(IMAGES), r"points must have shape \(N, d\).*got \(4, 3, 1, 1\)"),
    # ---- mixture: integer and non-finite tensors ----
    "score of integer points": (lambda: mixture.score(PRIOR, torch.zeros(4, 3, dtype=torch.long)),
                                r"x must be a floating-point tensor.*got dtype torch.int64"),
    "score of NaN points": (lambda: mixture.score(PRIOR, nan_like(POINTS)), r"x must be finite; got 12 NaN"),
    "MixtureModel.x0_hat of NaN x_t": (lambda: MODEL.x0_hat(nan_like(IMAGES), 10), r"x_t must be finite; got 12 NaN"),
    "MixtureModel.eps of integer x_t": (lambda: MODEL.eps(IMAGES.long(), 10), r"x_t must be a floating-point tensor"),
    "MatrixOperator.A of NaN x": (lambda: MATRIX_OP.A(nan_like(IMAGES)), r"x must be finite"),
    "gaussian_mixture NaN means": (lambda: mixture.gaussian_mixture([1.0], [[NAN]], [[[1.0]]]),
                                   r"means and covs must be finite; got NaN or inf"),
    "gaussian_mixture a bool tensor of weights": (lambda: mixture.gaussian_mixture(torch.tensor([True]), [[0.0]], [[[1.0]]]),
                                                  r"weights must hold real numbers; got a torch.bool tensor"),
    "gaussian_mixture weights as text": (lambda: mixture.gaussian_mixture("0.5", [[0.0]], [[[1.0]]]),
                                         r"weights must be a list or tensor of real numbers; got '0.5'"),
    "posterior NaN y": (lambda: mixture.posterior(PRIOR, A, [NAN], 0.1), r"A and y must be finite"),
    "matrix_operator inf entries": (lambda: mixture.matrix_operator([[INF, 0.0, 0.0]], "m"),
                                    r"matrix must be a finite \(m, d\) matrix"),
    "component_posterior integer y": (
        lambda: mixture.component_posterior(torch.zeros(3), torch.eye(3), A, torch.zeros(1, dtype=torch.long), 0.1),
        r"y must be a floating-point tensor"),
    # ---- mixture: infinite and NaN numbers ----
    "append_coordinates std=nan": (lambda: mixture.append_coordinates(PRIOR, 1, NAN), r"std must be a number > 0.*got nan"),
    "append_coordinates std=inf": (lambda: mixture.append_coordinates(PRIOR, 1, INF), r"std must be a number > 0.*got inf"),
    "noised alpha_bar_t=nan": (lambda: mixture.noised(PRIOR, NAN), r"alpha_bar_t must be in \(0, 1\].*got nan"),
    "noised alpha_bar_t=1.5": (lambda: mixture.noised(PRIOR, 1.5), r"alpha_bar_t must be in \(0, 1\].*got 1.5"),
    "noised alpha_bar_t=True": (lambda: mixture.noised(PRIOR, True), r"alpha_bar_t must be in \(0, 1\].*got True"),
    "x0_mean alpha_bar_t of 2 values": (lambda: mixture.x0_mean(PRIOR, POINTS, torch.tensor([0.5, 0.5])),
                                        r"alpha_bar_t must be in \(0, 1\].*got tensor"),
    "posterior sigma_y=inf": (lambda: mixture.posterior(PRIOR, A, [0.0], INF), r"sigma_y must be a number >= 0.*got inf"),
    "posterior sigma_y=-0.1": (lambda: mixture.posterior(PRIOR, A, [0.0], -0.1), r"sigma_y must be .*got -0.1"),
    "component_posterior sigma_y=nan": (
        lambda: mixture.component_posterior(torch.zeros(3), torch.eye(3), A, torch.zeros(1), NAN), r"sigma_y must be .*got nan"),
    "MatrixOperator.measure sigma_y=True": (lambda: MATRIX_OP.measure(IMAGES, True, G), r"sigma_y must be .*got True"),
    # ---- mixture: generators ----
    "sample generator=0": (lambda: mixture.sample(PRIOR, 4, 0), r"generator must be a torch.Generator.*got 0"),
    "random_directions generator=None": (lambda: mixture.random_directions(3, 4, None),
                                         r"generator must be a torch.Generator.*got None"),
    "MatrixOperator.measure generator='seed'": (lambda: MATRIX_OP.measure(IMAGES, 0.1, "seed"),
                                                r"generator must be a torch.Generator.*got 'seed'"),
    # ---- mixture: odd objects and absurd sizes ----
    "mixture_model of a dict": (lambda: mixture.mixture_model({"weights": [1.0]}), r"prior must be a GaussianMixture.*got dict"),
    "image_size_for d=5": (lambda: mixture.image_size_for(5), r"dimension must be 3 S\^2 .*got d = 5"),
    "image_size_for d=0": (lambda: mixture.image_size_for(0), r"d must be a positive integer .*got 0"),
    # ---- baselines ----
    "biharmonic y without a batch dimension": (lambda: baselines.biharmonic_inpainting(torch.zeros(3, 32, 32), OPS["box"]),
                                              r"y must have shape \(B, 3, 32, 32\); got \(3, 32, 32\)"),
    "biharmonic y of another size": (lambda: baselines.biharmonic_inpainting(torch.zeros(1, 3, 16, 16), OPS["random"]),
                                     r"y must have shape \(B, 3, 32, 32\); got \(1, 3, 16, 16\)"),
    "biharmonic integer y": (lambda: baselines.biharmonic_inpainting(Y32.byte(), OPS["box"]),
                             r"y must be a floating-point tensor.*got dtype torch.uint8"),
    "biharmonic NaN y": (lambda: baselines.biharmonic_inpainting(nan_like(Y32), OPS["box"]), r"y must be finite"),
    "biharmonic a blur operator": (lambda: baselines.biharmonic_inpainting(Y32, OPS["blur"]),
                                   r"op must be a helpers.operators.Inpainting.*got GaussianBlur"),
    "tikhonov y in [0, 255]": (lambda: baselines.tikhonov_deblurring(Y32 + 255, OPS["blur"], 0.03),
                               r"y must be in the model range \[-1, 1\].*got values in \[255, 255\]"),
    "tikhonov lam=nan": (lambda: baselines.tikhonov_deblurring(Y32, OPS["blur"], NAN), r"lam must be a number > 0.*got nan"),
    "tikhonov lam=inf": (lambda: baselines.tikhonov_deblurring(Y32, OPS["blur"], INF), r"lam must be .*got inf"),
    "tikhonov lam=True": (lambda: baselines.tikhonov_deblurring(Y32, OPS["blur"], True), r"lam must be .*got True"),
    "tikhonov tol=1": (lambda: baselines.tikhonov_deblurring(Y32, OPS["blur"], 0.03, tol=1),
                       r"tol must be a number in \(0, 1\).*got 1"),
    "tikhonov max_iter=0": (lambda: baselines.tikhonov_deblurring(Y32, OPS["blur"], 0.03, max_iter=0),
                            r"max_iter must be a positive integer .*got 0"),
    "tikhonov max_iter=2.5": (lambda: baselines.tikhonov_deblurring(Y32, OPS["blur"], 0.03, max_iter=2.5),
                              r"max_iter must be .*got 2.5"),
    "tikhonov an inpainting operator": (lambda: baselines.tikhonov_deblurring(Y32, OPS["box"], 0.03),
                                        r"op must be a helpers.operators.GaussianBlur; got Inpainting"),
    # ---- download: files, folders and numbers ----
    "sha256_of a number": (lambda: download.sha256_of(123), r"path must be a file path .*got int"),
    "hub_reachable timeout=0": (lambda: download.hub_reachable(timeout=0), r"timeout must be a finite number .*got 0"),
    "hub_reachable timeout=nan": (lambda: download.hub_reachable(timeout=NAN), r"timeout must be .*got nan"),
    "hub_reachable timeout=True": (lambda: download.hub_reachable(timeout=True), r"timeout must be .*got True"),
    "cache_root cache_dir=5": (lambda: download.cache_root(5), r"cache_dir must be a folder path .*got 5"),
    "fetch no files": (lambda: download.fetch(()), r"files must be a non-empty tuple of download.RemoteFile; got \(\)"),
    "find_cached a file name instead of a RemoteFile": (lambda: download.find_cached(("model.pt",)),
                                                       r"files must be a non-empty tuple of download.RemoteFile"),
    # ---- exercises: the learner's function and the model ----
    "check_forward_sample a result instead of the function": (lambda: exercises.check_forward_sample(torch.zeros(3)),
                                                              r"forward_sample must be your function itself.*got Tensor"),
    "check_x0_hat model=None": (lambda: exercises.check_x0_hat(solution, None),
                                r"model must be the notebook's diffusion model.*got NoneType"),
    "check_score_from_eps a mixture model": (lambda: exercises.check_score_from_eps(solution, MODEL),
                                             r"model must be the notebook's diffusion model.*got MixtureModel"),
    "check_mixture_score a string": (lambda: exercises.check_mixture_score("mixture_score"),
                                     r"mixture_score must be your function itself.*got str"),
    "check_ema_update None": (lambda: exercises.check_ema_update(None), r"ema_update must be your function itself"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_error(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("make_path, what", [(lambda tmp: tmp, "a folder"), (lambda tmp: tmp / "missing.bin", "missing")])
@pytest.mark.parametrize("function", [download.sha256_of, download.git_blob_sha1_of])
def test_checksums_refuse_a_folder_or_a_missing_file(tmp_path, make_path, what, function):
    with pytest.raises(ValueError, match=rf"path must be an existing file; got '.*', which is {what}\."):
        function(make_path(tmp_path))


def test_a_cache_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(ValueError, match=r"cache_dir must be a folder path .*got the file '.*cache'"):
        download.cache_root(tmp_path / "cache")


def test_the_check_functions_of_every_exercise_refuse_a_non_callable():
    """Every check_* of helpers.exercises names the learner's function when it gets something else."""
    checks = [name for name in dir(exercises) if name.startswith("check_")]
    assert len(checks) == len(exercises.REBUILDS)
    model_checks = {"check_score_from_eps", "check_posterior_mean", "check_x0_hat", "check_ddpm_step",
                    "check_score_ald_update", "check_dps_update"}
    for name in checks:
        args = (42, None) if name in model_checks else (42,)
        with pytest.raises(ValueError, match=rf"must be your function itself .*got int 42"):
            getattr(exercises, name)(*args)
