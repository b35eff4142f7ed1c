"""Held-out quality of a face model, alone or against a previous one: denoising loss, single-step x0_hat, samples.

On every held-out face x0 (identities celeb_180..celeb_199: 600 faces never seen in training) it prints:

1. The held-out denoising loss, the training objective ||eps - eps_theta(x_t, t)||^2 (per pixel, the scale of
   a run's loss.csv) with x_t drawn by eq. 3, averaged over t uniform in [0, T) and in the bands of t
   0-99, 100-299, 300-599, 600-999. The draws are stratified: every face gets ``--draws-per-band`` pairs (t, eps)
   in every band, t uniform within the band; the mean over all t weights each band by its width / T, which is the
   expectation over t uniform in [0, T) with less variance than unstratified draws. Both models see exactly the
   same (t, eps) draws (drawn once, from ``--seed``, before any network call), so their paired difference
   new - old is precise; it is reported with its standard error and whether it lies below -3 SE.
2. Single-step x0_hat (paper eq. 6) against the best Gaussian filter, by PSNR on [0, 1], at t = 50, 100, 200, 400
   (the same noise for both models):
   - the noisy image rescaled to the data scale, x_t / sqrt(alpha_bar_t) (what a classical denoiser sees);
   - the best Gaussian filter of x_t / sqrt(alpha_bar_t): sigma chosen *per image* from a grid to maximise
     PSNR against the truth (an oracle choice, generous to the baseline);
   - the model's estimate x0_hat(x_t, t), clipped to [-1, 1] as for display; gain = x0_hat - best Gaussian.
3. A grid of 64 DDPM samples per model (``helpers.sampling.ddpm_sample``, the same seed for both), saved as
   ``samples_<label>.png`` in ``--samples-dir``; ``--sample-steps`` (default all 1000) or ``--skip-samples``.

Standard errors are over the 600 faces, treated as independent (they come from 20 identities, so they are a
little optimistic). The network runs in float32 on the CPU (training used bfloat16 autocast).

Bars, each printed with PASS/FAIL; the exit status is 1 if any fails:
- every model: x0_hat beats the best Gaussian filter by >= 1 dB mean PSNR at t = 50, 100, 200 (foundation issue);
- new against old (issue 11): a lower loss averaged over t by more than 3 standard errors of the paired
  difference, and a higher x0_hat gain at t = 100 and t = 200.

    python scripts/evaluate_model.py --data ../shared/data/celeba-6k.zip                       # the shipped model
    python scripts/evaluate_model.py --data ../shared/data/celeba-6k.zip --old helpers/weights/faces32 \\
        --new ~/.cache/diffusion-course/runs/faces32-15k/ema [--samples-dir runs/evaluate_model] [--skip-samples]

Cost on one busy CPU core: about 1-3 minutes per model for 1 and 2, and 64 x 1000 network evaluations per model
for the samples (about 10 minutes each at 10 ms per image).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import sys
import time

import torch

from helpers import images, metrics, models, operators, sampling, schedule, train
from helpers.download import sha256_of

HELD_OUT = ["celeba-6k/celeb_18?/*", "celeba-6k/celeb_19?/*"]
CELEBA_CROP = (19, 39, 159, 179)
TIMESTEPS = (50, 100, 200, 400)
BAR_TIMESTEPS = (50, 100, 200)  # the foundation issue's bar: x0_hat >= best Gaussian + MARGIN_DB at these t
COMPARE_TIMESTEPS = (100, 200)  # issue 11: the new model's gain must be higher at these t
BANDS = ((0, 100), (100, 300), (300, 600), (600, 1000))  # [low, high): a partition of [0, T)
FILTER_SIGMAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0)
MARGIN_DB = 1.0
NUM_SAMPLES = 64  # an 8 x 8 grid


def check_bands(bands: tuple[tuple[int, int], ...], T: int) -> None:
    """Raise ValueError unless ``bands`` (``[low, high)`` pairs, in order) partition ``[0, T)``."""
    edges = [0]
    for low, high in bands:
        if low != edges[-1] or high <= low:
            raise ValueError(f"bands must be consecutive [low, high) intervals starting at 0; got {bands} "
                             f"(problem at {(low, high)}).")
        edges.append(high)
    if edges[-1] != T:
        raise ValueError(f"bands must end at T = {T}; got {bands}, which end at {edges[-1]}.")


def band_weights(bands: tuple[tuple[int, int], ...], T: int) -> torch.Tensor:
    """The probability of each band under t uniform in [0, T): its width / T."""
    check_bands(bands, T)
    return torch.tensor([(high - low) / T for low, high in bands], dtype=torch.float64)


def loss_draws(n_images: int, image_shape: tuple[int, int, int], draws_per_band: int, T: int, seed: int,
               bands: tuple[tuple[int, int], ...] = BANDS) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, eps) pairs of the denoising loss, drawn once so that every model sees the same ones.

    Returns ``t`` of shape ``(n_images, len(bands), draws_per_band)`` with ``t[:, b]`` uniform in band ``b``, and
    ``eps ~ N(0, I)`` of shape ``(n_images, len(bands), draws_per_band, *image_shape)``.
    """
    check_bands(bands, T)
    generator = torch.Generator().manual_seed(seed)
    t = torch.stack([torch.randint(low, high, (n_images, draws_per_band), generator=generator)
                     for low, high in bands], dim=1)
    eps = torch.randn((n_images, len(bands), draws_per_band, *image_shape), generator=generator)
    return t, eps


@torch.no_grad()
def denoising_losses(models_by_label: dict[str, models.DiffusionModel], x0_all: torch.Tensor, t: torch.Tensor,
                     eps: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per draw, :math:`\\|\\epsilon - \\epsilon_\\theta(x_t, t)\\|^2` averaged over pixels (the training loss).

    ``x0_all``: ``(N, 3, S, S)`` in [-1, 1]; ``t``, ``eps``: from :func:`loss_draws`. Each batch's x_t is computed
    once by eq. 3 and given to every model, so the models see identical inputs. Returns, per label, a float64
    tensor of ``t``'s shape.
    """
    first = next(iter(models_by_label.values()))
    alpha_bar = first.alpha_bar.float().cpu()  # as in training: x_t in float32
    n, n_bands, k = t.shape
    image = torch.arange(n).repeat_interleave(n_bands * k)
    t_flat, eps_flat = t.reshape(-1), eps.reshape(-1, *eps.shape[3:])
    out = {label: torch.empty(n * n_bands * k, dtype=torch.float64) for label in models_by_label}
    for start in range(0, len(t_flat), batch_size):
        stop = start + batch_size
        x_t = schedule.add_noise(x0_all[image[start:stop]], eps_flat[start:stop], t_flat[start:stop], alpha_bar)
        for label, model in models_by_label.items():
            eps_hat = model.eps(x_t.to(model.device), t_flat[start:stop].to(model.device)).float().cpu()
            out[label][start:stop] = ((eps_flat[start:stop] - eps_hat) ** 2).mean(dim=(1, 2, 3)).double()
    return {label: losses.reshape(n, n_bands, k) for label, losses in out.items()}


def best_gaussian_filter_psnr(noisy: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the highest PSNR over Gaussian filters (sigma in FILTER_SIGMAS, or none) and that sigma."""
    best = metrics.psnr(noisy, x0)
    best_sigma = torch.zeros_like(best)
    for sigma in FILTER_SIGMAS:
        kernel_size = min(2 * int(3 * sigma + 0.5) + 1, 2 * (x0.shape[-1] // 2) - 1)
        value = metrics.psnr(operators.GaussianBlur(kernel_size, sigma).A(noisy).clamp(-1, 1), x0)
        better = value > best
        best = torch.where(better, value, best)
        best_sigma = torch.where(better, torch.full_like(best_sigma, sigma), best_sigma)
    return best, best_sigma


@torch.no_grad()
def evaluate(models_by_label: dict[str, models.DiffusionModel], x0_all: torch.Tensor, seed: int = 0,
             batch_size: int = 100, timesteps: tuple[int, ...] = TIMESTEPS) -> list[dict]:
    """Per t, PSNR per image of x_t / sqrt(alpha_bar_t), of its best Gaussian filter and of each model's x0_hat.

    The noise of step t comes from a generator seeded with ``seed + t``, drawn for all images at once, so it is
    the same for every model and every ``batch_size``.
    """
    first = next(iter(models_by_label.values()))
    rows = []
    for t in timesteps:
        generator = torch.Generator().manual_seed(seed + t)
        alpha_bar_t = first.alpha_bar[t].float().cpu()
        x_t_all = schedule.add_noise(x0_all, torch.randn(x0_all.shape, generator=generator), t,
                                     first.alpha_bar.float().cpu())  # eq. 3
        noisy_psnr, filter_psnr, filter_sigma = [], [], []
        model_psnr = {label: [] for label in models_by_label}
        for start in range(0, len(x0_all), batch_size):
            x0, x_t = x0_all[start:start + batch_size], x_t_all[start:start + batch_size]
            noisy_psnr.append(metrics.psnr((x_t / alpha_bar_t.sqrt()).clamp(-1, 1), x0))
            best, sigma = best_gaussian_filter_psnr(x_t / alpha_bar_t.sqrt(), x0)
            filter_psnr.append(best)
            filter_sigma.append(sigma)
            for label, model in models_by_label.items():
                x0_hat = model.x0_hat(x_t.to(model.device), t).float().cpu().clamp(-1, 1)  # eq. 6
                model_psnr[label].append(metrics.psnr(x0_hat, x0))
        rows.append(dict(t=t, alpha_bar=float(alpha_bar_t), noisy=torch.cat(noisy_psnr),
                         gaussian=torch.cat(filter_psnr), sigma=torch.cat(filter_sigma),
                         x0_hat={label: torch.cat(v) for label, v in model_psnr.items()}))
    return rows


def save_samples(model: models.DiffusionModel, path: pathlib.Path, seed: int, sample_steps: int) -> float:
    """Draw NUM_SAMPLES DDPM samples (seeded generator), save them as an 8 x 8 grid; return the seconds taken."""
    start = time.perf_counter()
    samples, _ = sampling.ddpm_sample(model, NUM_SAMPLES, torch.Generator().manual_seed(seed),
                                      num_steps=None if sample_steps == model.T else sample_steps, progress=False)
    size = model.image_size
    grid = samples.cpu().reshape(8, 8, 3, size, size).permute(2, 0, 3, 1, 4).reshape(3, 8 * size, 8 * size)
    images.save_image(grid, path, scale=max(1, 96 // size))
    return time.perf_counter() - start


def mean_sem(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-D tensor."""
    values = values.double()
    return float(values.mean()), float(values.std() / len(values) ** 0.5) if len(values) > 1 else float("nan")


def load_checked(folder: str, parameter: str) -> models.DiffusionModel:
    """Load a diffusers model folder on the CPU; errors name ``parameter`` and say what a model folder holds."""
    expected = (f"a diffusers model folder holding config.json and {models.WEIGHTS_FILE} (for example "
                f"helpers/weights/faces32 or a training run's ema/)")
    path = pathlib.Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{parameter} {folder!r}: no such folder; expected {expected}.")
    missing = [name for name in ("config.json", models.WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{parameter} {folder!r} is not a model folder: it has no {' and no '.join(missing)}; "
                         f"expected {expected}.")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its precision line; the header says float32 on the CPU
            return models.load_model_from_folder(path, device="cpu")
    except (RuntimeError, FileNotFoundError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{parameter} {folder!r} could not be loaded as {expected}: {error}") from error


def positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer; got {text!r}.")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/celeba-6k.zip",
                        help="the CelebA zip or folder (only the held-out identities celeb_180..199 are read)")
    parser.add_argument("--new", "--model-dir", dest="new", default=None,
                        help="diffusers folder to evaluate (default: the shipped model, helpers/weights/faces32)")
    parser.add_argument("--old", default=None, help="a second diffusers folder to compare --new against")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws-per-band", type=positive_int("--draws-per-band"), default=2,
                        help="(t, eps) draws per face in each band of t for the denoising loss")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=256,
                        help="images per network call")
    parser.add_argument("--samples-dir", default="runs/evaluate_model",
                        help="where the sample grids samples_<label>.png are written")
    parser.add_argument("--sample-steps", type=positive_int("--sample-steps"), default=1000,
                        help="DDPM steps for the samples (1000: every step of the paper's chain)")
    parser.add_argument("--skip-samples", action="store_true", help="draw no samples")
    parser.add_argument("--threads", type=positive_int("--threads"), default=None,
                        help="torch threads (default: torch's, which follows OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter()

    # (1) The models, checked: same size and schedule, so that the same draws mean the same thing for both.
    folders = {"new": args.new}
    if args.old is not None:
        folders = {"old": args.old, "new": args.new if args.new is not None else str(models.EMBEDDED_MODEL_DIR)}
    loaded = {}
    for label, folder in folders.items():
        parameter = "--model-dir/--new" if label == "new" else "--old"
        if folder is None:
            with contextlib.redirect_stdout(io.StringIO()):
                loaded[label] = models.load_model("faces", device="cpu")
        else:
            loaded[label] = load_checked(folder, parameter)
    if args.old is None:
        loaded = {"model": loaded["new"]}
        folders = {"model": args.new if args.new is not None else str(models.EMBEDDED_MODEL_DIR)}
    labels = list(loaded)
    first = loaded[labels[0]]
    for label in labels[1:]:
        other = loaded[label]
        if other.image_size != first.image_size or not torch.equal(other.alpha_bar, first.alpha_bar):
            raise ValueError(f"--old and --new must have the same image size and noise schedule; got "
                             f"{first.image_size} and {other.image_size} pixels, T = {first.T} and {other.T}.")
    if args.sample_steps > first.T:
        raise ValueError(f"--sample-steps must be between 1 and T = {first.T}; got {args.sample_steps}.")
    check_bands(BANDS, first.T)

    # (2) The held-out faces, in the model range [-1, 1].
    try:
        names = train.list_images(args.data, include=HELD_OUT)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"--data {args.data!r}: {error} Expected the CelebA zip (or its folder) with the held-out "
                          f"identities {HELD_OUT}.") from error
    x0_all = train.read_images(args.data, names, first.image_size, CELEBA_CROP)
    x0_all = images.to_model_range(x0_all.float() / 255)
    n = len(names)
    print(f"Held-out evaluation: {n} faces of the identities never seen in training (celeb_180..celeb_199), "
          f"{first.image_size}x{first.image_size}, seed {args.seed}; float32 on the CPU, "
          f"{torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs")
    for label in labels:
        folder = pathlib.Path(folders[label]).expanduser()
        digest = sha256_of(folder / models.WEIGHTS_FILE)[:16]
        print(f"  {label}: {folders[label]} (weights sha256 {digest}...)", flush=True)

    # (3) Denoising loss with the same (t, eps) draws for every model.
    start = time.perf_counter()
    t, eps = loss_draws(n, tuple(x0_all.shape[1:]), args.draws_per_band, first.T, args.seed)
    losses = denoising_losses(loaded, x0_all, t, eps, args.batch_size)
    weights = band_weights(BANDS, first.T)
    per_band = {label: value.mean(dim=2) for label, value in losses.items()}  # (N, bands): per face
    overall = {label: (value * weights).sum(dim=1) for label, value in per_band.items()}  # (N,): t uniform
    loss_seconds = time.perf_counter() - start
    print()
    print(f"Denoising loss ||eps - eps_theta(x_t, t)||^2 per pixel (the training objective) on x_t by eq. 3; "
          f"{args.draws_per_band} draw(s) (t, eps) per face in every band, t uniform in the band, the same draws "
          f"for every model; mean ± standard error over the {n} faces; 'all t' weights the bands by width "
          f"(t uniform in [0, {first.T}))")
    header = f"{'t':<11}" + "".join(f"{label:>21}" for label in labels)
    if len(labels) == 2:
        header += f"{'new - old (paired)':>24} {'< -3 SE':>8}"
    print(header)
    rows = [(f"{low}-{high - 1}", {label: per_band[label][:, b] for label in labels})
            for b, (low, high) in enumerate(BANDS)]
    rows.append(("all t", overall))
    loss_better = None
    for name, values in rows:
        line = f"{name:<11}"
        for label in labels:
            mean, sem = mean_sem(values[label])
            line += f"{mean:>11.6f} ±{sem:.6f}"
        if len(labels) == 2:
            mean, sem = mean_sem(values["new"] - values["old"])
            below = mean < -3 * sem
            line += f"{mean:>+14.6f} ±{sem:.6f} {'yes' if below else 'no':>8}"
            if name == "all t":
                loss_better = below
        print(line)
    print(f"({n * len(BANDS) * args.draws_per_band} draws per model, batch {args.batch_size}: "
          f"{loss_seconds:.0f} s)", flush=True)

    # (4) Single-step x0_hat against the best Gaussian filter.
    start = time.perf_counter()
    x0_rows = evaluate(loaded, x0_all, seed=args.seed, batch_size=args.batch_size)
    x0_seconds = time.perf_counter() - start
    print()
    print("Single-step denoising: mean PSNR in dB on [0, 1] ± standard error; the same noise for every model; "
          "gain = x0_hat - best Gaussian filter (sigma chosen per image, an oracle)")
    header = f"{'t':>4} {'alpha_bar':>9} {'noisy x_t/sqrt(ab)':>19} {'best Gaussian':>14} {'(median sigma)':>14}"
    for label in labels:
        header += f" {label + ' x0_hat (eq. 6)':>21} {'gain':>6}"
    if len(labels) == 2:
        header += f" {'gain new - old (paired)':>24}"
    print(header)
    bar_pass = {label: True for label in labels}
    gain_better = {}
    for row in x0_rows:
        noisy, gaussian = mean_sem(row["noisy"]), mean_sem(row["gaussian"])
        line = (f"{row['t']:>4} {row['alpha_bar']:>9.4f} {noisy[0]:>13.2f} ±{noisy[1]:.2f} {gaussian[0]:>8.2f} "
                f"±{gaussian[1]:.2f} {row['sigma'].median():>10.1f} px")
        for label in labels:
            value = mean_sem(row["x0_hat"][label])
            gain = value[0] - gaussian[0]
            line += f" {value[0]:>15.2f} ±{value[1]:.2f} {gain:>+6.2f}"
            if row["t"] in BAR_TIMESTEPS:
                bar_pass[label] &= gain >= MARGIN_DB
        if len(labels) == 2:
            mean, sem = mean_sem(row["x0_hat"]["new"] - row["x0_hat"]["old"])
            line += f" {mean:>+17.3f} ±{sem:.3f}"
            gain_better[row["t"]] = (mean, sem)
        print(line)
    for label in labels:
        wins = [f"{float((row['x0_hat'][label] > row['gaussian']).float().mean()):.0%} at t={row['t']}"
                for row in x0_rows]
        print(f"{label}: x0_hat beats the best Gaussian filter on " + ", ".join(wins) + " of the images")
    print(f"({len(TIMESTEPS)} t x {n} faces per model: {x0_seconds:.0f} s)", flush=True)

    # (5) Samples.
    print()
    if args.skip_samples:
        print("Samples: skipped (--skip-samples)")
    else:
        samples_dir = pathlib.Path(args.samples_dir)
        steps = "all 1000 steps" if args.sample_steps == first.T else f"{args.sample_steps} respaced steps"
        print(f"Samples: {NUM_SAMPLES} per model, DDPM (helpers.sampling.ddpm_sample) with {steps}, variance "
              f"{'beta_t' if args.sample_steps == first.T else 'beta_tilde'}, x0_hat clipped, seed {args.seed} "
              f"(the same x_T and noise for every model)")
        for label in labels:
            path = samples_dir / f"samples_{label}.png"
            seconds = save_samples(loaded[label], path, args.seed, args.sample_steps)
            print(f"  {label}: {path} ({seconds:.0f} s)", flush=True)

    # (6) The bars.
    print()
    passed = True
    for label in labels:
        print(f"bar ({label}): x0_hat >= best Gaussian + {MARGIN_DB:.1f} dB at t = "
              f"{', '.join(map(str, BAR_TIMESTEPS))}: {'PASS' if bar_pass[label] else 'FAIL'}")
        passed &= bar_pass[label]
    if len(labels) == 2:
        higher = {t: gain_better[t][0] > 0 for t in COMPARE_TIMESTEPS}
        compare = bool(loss_better) and all(higher.values())
        print(f"bar (new vs old, issue 11): loss over all t lower by > 3 SE of the paired difference: "
              f"{'yes' if loss_better else 'no'}; x0_hat gain higher at "
              + ", ".join(f"t={t}: {'yes' if higher[t] else 'no'} ({gain_better[t][0]:+.3f} "
                          f"±{gain_better[t][1]:.3f} dB)" for t in COMPARE_TIMESTEPS)
              + f": {'PASS' if compare else 'FAIL'}")
        passed &= compare
    print(f"total {time.perf_counter() - clock:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
