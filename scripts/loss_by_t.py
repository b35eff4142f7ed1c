"""Held-out denoising loss of a face model as a function of t: which noise levels are hard (notebook 08).

On the 600 held-out faces (identities celeb_180..celeb_199, never seen in training; selected and read exactly as
scripts/evaluate_model.py does) and at each t of ``--timesteps`` it measures, per face,

- the training objective :math:`\\|\\epsilon - \\epsilon_\\theta(x_t, t)\\|^2` per pixel, with
  :math:`x_t = \\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t} \\epsilon` (paper eq. 3);
- the error of the single-step estimate :math:`\\|\\hat x_0 - x_0\\|^2` per pixel, :math:`\\hat x_0` by paper eq. 6
  (not clipped), which equals :math:`(1 - \\bar\\alpha_t) / \\bar\\alpha_t` times the loss;

and writes their mean and standard error over the faces, one row per t, to a CSV. Every face gets one noise draw
:math:`\\epsilon` (from ``--seed``), the same at every t, so that the curve's shape comes from the model, not from
the draws. The network runs in float32 on the CPU, as in scripts/evaluate_model.py.

    python scripts/loss_by_t.py                                   # the shipped model -> its folder's loss_by_t.csv
    python scripts/loss_by_t.py --model-dir RUN/ema --data ../shared/data/celeba-6k.zip --threads 1

CSV columns: ``t`` (the code's index, 0..T-1), ``alpha_bar``, ``loss_mean``, ``loss_se``, ``x0_mse_mean``,
``x0_mse_se``, ``n_faces``, ``seed``, ``weights_sha256`` (the first 16 hex digits of the evaluated weights, so a
reader can tell whether the CSV belongs to the weights beside it). Cost: 20 values of t x 600 faces, about 2.5
minutes on one CPU thread.
"""
from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # scripts/ is not a package

import evaluate_model  # noqa: E402  (its selection of held-out faces, crop, loader and mean_sem are reused)
from helpers import images, models, schedule, train  # noqa: E402
from helpers.download import sha256_of  # noqa: E402

# Dense where the loss changes fastest (small t), sparse where it is flat.
TIMESTEPS = (0, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 700, 800, 900, 999)
COLUMNS = ("t", "alpha_bar", "loss_mean", "loss_se", "x0_mse_mean", "x0_mse_se", "n_faces", "seed", "weights_sha256")


def parse_timesteps(text: str) -> tuple[int, ...]:
    """``"0,10,100"`` -> ``(0, 10, 100)``: distinct integers in [0, 1000), increasing."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not 0 <= v < schedule.T for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"--timesteps must be increasing, distinct integers in [0, {schedule.T}) "
                                         f"separated by commas, e.g. 0,10,100; got {text!r}.")
    return values


@torch.no_grad()
def loss_by_t(model: models.DiffusionModel, x0_all: torch.Tensor, eps_all: torch.Tensor, timesteps: tuple[int, ...],
              batch_size: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    r"""Per t, per face: the loss :math:`\|\epsilon - \epsilon_\theta(x_t, t)\|^2` and :math:`\|\hat x_0 - x_0\|^2`,
    both averaged over pixels, with :math:`x_t` by eq. 3 from the same ``eps_all`` at every t.

    ``x0_all``, ``eps_all``: ``(N, 3, S, S)``, float32, ``x0_all`` in [-1, 1]. Returns ``{t: (loss (N,), x0_mse (N,))}``
    in float64. Reference: paper eqs. 3 and 6; scripts/evaluate_model.denoising_losses computes the same loss.
    """
    alpha_bar = model.alpha_bar.float().cpu()  # x_t in float32, as in training
    out = {}
    for t in timesteps:
        loss, x0_mse = [], []
        for start in range(0, len(x0_all), batch_size):
            x0, eps = x0_all[start:start + batch_size], eps_all[start:start + batch_size]
            x_t = schedule.add_noise(x0, eps, t, alpha_bar)                                  # eq. 3
            eps_hat = model.eps(x_t.to(model.device), t).float().cpu()
            x0_hat = (x_t - (1 - alpha_bar[t]).sqrt() * eps_hat) / alpha_bar[t].sqrt()        # eq. 6 with eps_hat
            loss.append(((eps - eps_hat) ** 2).mean(dim=(1, 2, 3)).double())
            x0_mse.append(((x0_hat - x0) ** 2).mean(dim=(1, 2, 3)).double())
        out[t] = (torch.cat(loss), torch.cat(x0_mse))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/celeba-6k.zip",
                        help="the CelebA zip or folder (only the held-out identities celeb_180..199 are read)")
    parser.add_argument("--model-dir", default=str(models.EMBEDDED_MODEL_DIR),
                        help="diffusers model folder to measure (default: the shipped model, helpers/weights/faces32)")
    parser.add_argument("--out", default=None, help="the CSV to write (default: MODEL_DIR/loss_by_t.csv)")
    parser.add_argument("--timesteps", type=parse_timesteps, default=TIMESTEPS,
                        help=f"comma-separated t (default: {','.join(map(str, TIMESTEPS))})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=evaluate_model.positive_int("--batch-size"), default=200, help="faces per network call")
    parser.add_argument("--threads", type=evaluate_model.positive_int("--threads"), default=None,
                        help="torch threads (default: torch's, which follows OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter()

    # (1) The model, checked as scripts/evaluate_model.py checks it.
    model = evaluate_model.load_checked(args.model_dir, "--model-dir")
    digest = sha256_of(pathlib.Path(args.model_dir).expanduser() / models.WEIGHTS_FILE)[:16]
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.model_dir).expanduser() / "loss_by_t.csv"

    # (2) The held-out faces, selected, cropped and resized as in scripts/evaluate_model.py, in [-1, 1].
    try:
        names = train.list_images(args.data, include=evaluate_model.HELD_OUT)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"--data {args.data!r}: {error} Expected the CelebA zip (or its folder) with the held-out "
                          f"identities {evaluate_model.HELD_OUT}.") from error
    size = model.image_size
    x0_all = train.read_images(args.data, names, size, evaluate_model.CELEBA_CROP)
    x0_all = images.to_model_range(x0_all.float() / 255)

    # (3) One noise draw per face, the same at every t.
    eps_all = torch.randn(x0_all.shape, generator=torch.Generator().manual_seed(args.seed))
    print(f"Held-out loss by t: {len(names)} faces (celeb_180..celeb_199), {size}x{size}, {len(args.timesteps)} "
          f"values of t, one eps per face (seed {args.seed}) shared by every t; model {args.model_dir} (weights "
          f"sha256 {digest}...); float32, {torch.get_num_threads()} thread(s)", flush=True)
    results = loss_by_t(model, x0_all, eps_all, args.timesteps, args.batch_size)

    # (4) Mean ± standard error over faces, one row per t.
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        print(f"{'t':>4} {'alpha_bar':>9} {'loss':>20} {'||x0_hat - x0||^2':>22}")
        for t, (loss, x0_mse) in results.items():
            loss_mean, loss_se = evaluate_model.mean_sem(loss)
            mse_mean, mse_se = evaluate_model.mean_sem(x0_mse)
            alpha_bar_t = float(model.alpha_bar[t])
            writer.writerow([t, f"{alpha_bar_t:.6g}", f"{loss_mean:.6g}", f"{loss_se:.6g}", f"{mse_mean:.6g}",
                             f"{mse_se:.6g}", len(names), args.seed, digest])
            print(f"{t:>4} {alpha_bar_t:>9.4f} {loss_mean:>11.5f} ±{loss_se:.5f} {mse_mean:>13.5g} ±{mse_se:.2g}")
    print(f"wrote {out} ({time.perf_counter() - clock:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
