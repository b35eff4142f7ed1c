"""Held-out quality of a face model: single-step x0_hat (paper eq. 6) against the best Gaussian filter.

For every held-out face x0 (identities celeb_180..celeb_199, never seen in training) and each t, draw
x_t by eq. 3 with a fixed seed, then compare with x0, by PSNR on [0, 1]:

- the noisy image rescaled to the data scale, x_t / sqrt(alpha_bar_t) (what a classical denoiser sees);
- the best Gaussian filter of x_t / sqrt(alpha_bar_t): sigma chosen *per image* from a grid to maximise
  PSNR against the truth (an oracle choice, generous to the baseline);
- the model's single-step estimate x0_hat(x_t, t), clipped to [-1, 1] as for display.

The bar (foundation issue): x0_hat beats the best Gaussian filter by >= 1 dB mean PSNR at t = 50, 100, 200.

    python scripts/evaluate_model.py --data ../shared/data/celeba-6k.zip [--model-dir runs/faces32/ema]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from helpers import metrics, models, operators, schedule, train

HELD_OUT = ["celeba-6k/celeb_18?/*", "celeba-6k/celeb_19?/*"]
CELEBA_CROP = (19, 39, 159, 179)
TIMESTEPS = (50, 100, 200)
FILTER_SIGMAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0)
MARGIN_DB = 1.0


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


def evaluate(model: models.DiffusionModel, x0_all: torch.Tensor, seed: int = 0, batch_size: int = 100) -> list[dict]:
    rows = []
    for t in TIMESTEPS:
        generator = torch.Generator().manual_seed(seed + t)
        alpha_bar_t = model.alpha_bar[t].float()
        noisy_psnr, filter_psnr, filter_sigma, model_psnr = [], [], [], []
        for start in range(0, len(x0_all), batch_size):
            x0 = x0_all[start:start + batch_size]
            x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=generator), t, model.alpha_bar)  # eq. 3
            rescaled = (x_t / alpha_bar_t.sqrt()).clamp(-1, 1)
            with torch.no_grad():
                x0_hat = model.x0_hat(x_t.to(model.device), t).cpu().clamp(-1, 1)  # eq. 6
            noisy_psnr.append(metrics.psnr(rescaled, x0))
            best, sigma = best_gaussian_filter_psnr(x_t / alpha_bar_t.sqrt(), x0)
            filter_psnr.append(best)
            filter_sigma.append(sigma)
            model_psnr.append(metrics.psnr(x0_hat, x0))
        rows.append(dict(t=t, alpha_bar=float(alpha_bar_t), noisy=torch.cat(noisy_psnr), gaussian=torch.cat(filter_psnr),
                         sigma=torch.cat(filter_sigma), x0_hat=torch.cat(model_psnr)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/celeba-6k.zip", help="the CelebA zip (held-out identities)")
    parser.add_argument("--model-dir", default=None, help="diffusers folder to evaluate (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = (models.load_model("faces", device="cpu") if args.model_dir is None
             else models.load_model_from_folder(args.model_dir, device="cpu"))
    names = train.list_images(args.data, include=HELD_OUT)
    x0_all = train.read_images(args.data, names, model.image_size, CELEBA_CROP).float() / 127.5 - 1
    start = time.perf_counter()
    rows = evaluate(model, x0_all, seed=args.seed)
    print(f"Held-out single-step denoising: {len(names)} faces of 20 identities never seen in training "
          f"({model.image_size}x{model.image_size}, seed {args.seed}); mean PSNR in dB on [0, 1] "
          f"(± standard error of the mean)")
    print(f"{'t':>4} {'alpha_bar':>9} {'noisy x_t/sqrt(ab)':>19} {'best Gaussian':>14} {'(median sigma)':>14} "
          f"{'x0_hat (eq. 6)':>15} {'gain':>6}")
    passed = True
    for row in rows:
        n = len(row["x0_hat"])
        gain = row["x0_hat"].mean() - row["gaussian"].mean()
        sem = lambda v: float(v.std() / n**0.5)  # noqa: E731
        print(f"{row['t']:>4} {row['alpha_bar']:>9.4f} {row['noisy'].mean():>13.2f} ±{sem(row['noisy']):.2f} "
              f"{row['gaussian'].mean():>8.2f} ±{sem(row['gaussian']):.2f} {row['sigma'].median():>10.1f} px   "
              f"{row['x0_hat'].mean():>9.2f} ±{sem(row['x0_hat']):.2f} {gain:>+6.2f}")
        passed &= bool(gain >= MARGIN_DB)
    wins = [float((row["x0_hat"] > row["gaussian"]).float().mean()) for row in rows]
    print("x0_hat beats the best Gaussian filter on " + ", ".join(f"{w:.0%} of images at t={r['t']}"
                                                                   for w, r in zip(wins, rows)))
    print(f"bar: x0_hat >= best Gaussian + {MARGIN_DB:.1f} dB at every t: {'PASS' if passed else 'FAIL'} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
