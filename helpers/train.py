"""Train the course's small face diffusion model (epsilon-prediction, linear betas, T = 1000).

Usage (the embedded model was made with ``make train``, which runs exactly this)::

    python -m helpers.train --data ../shared/data/celeba-6k.zip --out runs/faces32 \\
        --exclude 'celeba-6k/celeb_18?/*' --exclude 'celeba-6k/celeb_19?/*' \\
        --crop-box 19,39,159,179 --steps 6000

``--data`` is any folder or zip of images. The run writes, under ``--out``:

- ``checkpoint.pt``: model, EMA, optimiser, step and random state; a run started again with the same
  ``--out`` resumes from it (written atomically every ``--checkpoint-every`` steps);
- ``loss.csv``: step, loss, learning rate and wall time of every logged step;
- ``ema/``: the EMA weights in diffusers format (``config.json`` + safetensors), the model to ship.

``--init FOLDER`` warm-starts a new run from a diffusers folder (for example the shipped
``helpers/weights/faces32``): model and EMA start from its weights, the optimiser starts afresh with the warm-up.
``--lr-schedule cosine`` decays the learning rate from ``--lr`` to ``--min-lr`` over the run, after the warm-up.

The loss is the "simple" DDPM objective :math:`\\| \\epsilon - \\epsilon_\\theta(\\sqrt{\\bar\\alpha_t} x_0 +
\\sqrt{1-\\bar\\alpha_t} \\epsilon, t) \\|^2` with t uniform (paper eq. 3 gives x_t).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import os
import pathlib
import shutil
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import seeding
from helpers.images import centred_square, to_model_range
from helpers.schedule import add_noise, linear_schedule

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# The embedded model's architecture: about 3.9 M parameters, 32 x 32 RGB, self-attention at 8 x 8.
UNET_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
    attention_head_dim=32,
)


def list_images(source: str | os.PathLike, include: list[str] | None = None,
                exclude: list[str] | None = None) -> list[str]:
    """Relative paths (zip members or files below a folder) of the images in ``source``, sorted.

    ``include``/``exclude`` are fnmatch patterns on those paths (e.g. ``'celeba-6k/celeb_19?/*'``).
    """
    source = pathlib.Path(source)
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            names = z.namelist()
    elif source.is_dir():
        names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    else:
        raise FileNotFoundError(f"data must be a folder or a zip file of images; got {str(source)!r}, "
                                f"which is neither.")
    names = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if include:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in include)]
    if exclude:
        names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in exclude)]
    if not names:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(source)!r} after include={include} "
                         f"and exclude={exclude}.")
    return sorted(names)


def read_images(source: str | os.PathLike, names: list[str], size: int,
                crop_box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """Read ``names`` from ``source`` into a uint8 tensor ``(N, 3, size, size)``.

    Each image is converted to RGB, cropped to ``crop_box`` (left, top, right, bottom) if given, else to
    its centred square, then resized with Lanczos filtering.
    """
    source = pathlib.Path(source)
    archive = zipfile.ZipFile(source) if zipfile.is_zipfile(source) else None
    out = torch.empty(len(names), 3, size, size, dtype=torch.uint8)
    try:
        for i, name in enumerate(names):
            data = archive.read(name) if archive else (source / name).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("RGB")
                crop = centred_square(*image.size) if crop_box is None else crop_box
                image = image.crop(crop).resize((size, size), Image.LANCZOS)
                out[i] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    finally:
        if archive:
            archive.close()
    return out


def _atomic_save(obj, path: pathlib.Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def learning_rate(step: int, lr: float, warmup: int, steps: int, schedule: str = "constant",
                  min_lr: float = 0.0) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up over ``warmup`` steps, then constant, or a
    cosine decay from ``lr`` to ``min_lr`` at step ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def _save_run(out_dir: pathlib.Path, model, ema, optimizer, generator: torch.Generator, step: int, wall: float,
              config: dict) -> None:
    """Write checkpoint.pt and the EMA weights in diffusers format (ema/), each replaced atomically."""
    from diffusers import UNet2DModel

    _atomic_save(dict(model=model.state_dict(), ema=ema.state_dict(), optimizer=optimizer.state_dict(),
                      generator=generator.get_state(), step=step, wall=wall, config=config),
                 out_dir / "checkpoint.pt")
    with torch.random.fork_rng():  # its random initial weights are overwritten: draw them off the caller's RNG
        ema_model = UNet2DModel(**config)
    ema.copy_to(ema_model.parameters())
    ema_model.save_pretrained(out_dir / "ema.tmp")
    if (out_dir / "ema").exists():
        os.replace(out_dir / "ema", out_dir / "ema.old")
    os.replace(out_dir / "ema.tmp", out_dir / "ema")
    if (out_dir / "ema.old").exists():
        shutil.rmtree(out_dir / "ema.old")


def _open_log(path: pathlib.Path, step: int):
    """Open loss.csv for appending, first dropping rows logged after ``step`` (a resumed run redoes them)."""
    if path.exists():
        with open(path) as f:
            rows = list(csv.reader(f))
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(r for r in rows if not r[0].isdigit() or int(r[0]) <= step)
    new = not path.exists()
    log_file = open(path, "a", newline="")
    if new:
        csv.writer(log_file).writerow(["step", "loss", "lr", "wall_s"])
    return log_file


def train(data: str, out: str, size: int = 32, steps: int = 6000, batch_size: int = 64, lr: float = 4e-4,
          warmup: int = 200, ema_decay: float = 0.999, checkpoint_every: int = 250, log_every: int = 10,
          include: list[str] | None = None, exclude: list[str] | None = None,
          crop_box: tuple[int, int, int, int] | None = None, seed: int = 0, bf16: bool = False,
          unet_config: dict | None = None, threads: int | None = None, init: str | None = None,
          lr_schedule: str = "constant", min_lr: float = 0.0) -> pathlib.Path:
    """Train (or resume) a UNet2DModel on the images of ``data``; return the folder of the EMA weights.

    (1) the images, (2) the model, its EMA and optimiser (from ``init`` or seeded weights), (3) the state of an
    interrupted run in ``out`` if there is one, (4) the loop of :func:`training_step` with its log and checkpoints.
    """
    from diffusers.training_utils import EMAModel

    if steps < 1 or batch_size < 1 or warmup < 1:
        raise ValueError(f"steps, batch_size and warmup must be >= 1; got steps={steps}, batch_size={batch_size}, "
                         f"warmup={warmup}.")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine'; got {lr_schedule!r}.")
    if threads:
        torch.set_num_threads(threads)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = dict(UNET_CONFIG if unet_config is None else unet_config, sample_size=size)
    # (1) the images, as uint8
    names = list_images(data, include, exclude)
    print(f"reading {len(names)} images from {data} at {size}x{size} ...", flush=True)
    images = read_images(data, names, size, crop_box)
    # (2) the model, its EMA and the optimiser
    model = _new_model(config, seed, init)
    ema = EMAModel(model.parameters(), decay=ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    # (3) resume an interrupted run
    step, wall = _resume(out_dir / "checkpoint.pt", config, model, ema, optimizer, generator)
    (out_dir / "train_args.json").write_text(json.dumps(dict(
        data=str(data), n_images=len(names), size=size, steps=steps, batch_size=batch_size, lr=lr,
        warmup=warmup, lr_schedule=lr_schedule, min_lr=min_lr, ema_decay=ema_decay, include=include,
        exclude=exclude, crop_box=crop_box, seed=seed, bf16=bf16, init=init, config=config), indent=2))
    # (4) the loop
    alpha_bar = linear_schedule().alpha_bar.float()
    model.train()
    with _open_log(out_dir / "loss.csv", step) as log_file, _progress(steps, step) as bar:
        running = None
        while step < steps:
            t0 = time.perf_counter()
            lr_now = learning_rate(step, lr, warmup, steps, lr_schedule, min_lr)
            loss = training_step(model, optimizer, images, alpha_bar, batch_size, lr_now, generator, bf16)
            ema.step(model.parameters())
            step += 1
            wall += time.perf_counter() - t0
            running = loss if running is None else 0.98 * running + 0.02 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if step % log_every == 0:
                _log(log_file, step, loss, lr_now, wall)
            if step % checkpoint_every == 0 or step == steps:
                _save_run(out_dir, model, ema, optimizer, generator, step, wall, config)
    return out_dir / "ema"


def training_step(model, optimizer, images: torch.Tensor, alpha_bar: torch.Tensor, batch_size: int, lr: float,
                  generator: torch.Generator, bf16: bool = False) -> float:
    r"""One step of the simple loss :math:`\|\epsilon - \epsilon_\theta(x_t, t)\|^2`; returns the loss.

    (1) A batch: random images (uint8, converted by :func:`helpers.images.to_model_range`), random horizontal flips,
    ``t`` uniform in ``[0, T)``, :math:`x_t` by eq. 3 (:func:`helpers.schedule.add_noise`). (2) The loss, one AdamW
    step at learning rate ``lr`` with the gradient norm clipped to 1. All randomness from ``generator``.
    """
    # (1) the batch, x_t by eq. 3
    idx = torch.randint(0, len(images), (batch_size,), generator=generator)
    x0 = to_model_range(images[idx].float() / 255)
    flip = torch.rand(batch_size, generator=generator) < 0.5
    x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    t = torch.randint(0, len(alpha_bar), (batch_size,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    x_t = add_noise(x0, eps, t, alpha_bar)
    # (2) the simple loss || eps - eps_theta(x_t, t) ||^2 and one AdamW step
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        eps_hat = model(x_t, t).sample
    loss = F.mse_loss(eps_hat.float(), eps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def _new_model(config: dict, seed: int, init: str | None):
    """A UNet2DModel of ``config``: its initial weights drawn from ``seed`` (diffusers draws them from torch's global
    generator, so :func:`helpers.seeding.seeded_global_rng` seeds it for the construction alone and restores it), or
    loaded from the diffusers folder ``init``."""
    from diffusers import UNet2DModel

    with seeding.seeded_global_rng(seed):
        model = UNet2DModel(**config)
    if init is not None:
        try:
            model.load_state_dict(UNet2DModel.from_pretrained(init).state_dict())
        except RuntimeError as error:
            raise ValueError(f"init={init!r} holds a model of another architecture than {config}: {error}") from error
    return model


def _resume(path: pathlib.Path, config: dict, model, ema, optimizer, generator: torch.Generator) -> tuple[int, float]:
    """Load the run's state from ``checkpoint.pt`` if it exists; return ``(step, wall seconds)`` (0, 0 for a new run)."""
    if not path.exists():
        return 0, 0.0
    state = torch.load(path, weights_only=False)
    if state["config"] != config:
        raise ValueError(f"{path} was trained with config {state['config']}, not {config}; "
                         f"use another --out or the same settings.")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    print(f"resuming from {path} at step {state['step']}", flush=True)
    return state["step"], state["wall"]


def _log(log_file, step: int, loss: float, lr: float, wall: float) -> None:
    csv.writer(log_file).writerow([step, f"{loss:.5f}", f"{lr:.2e}", f"{wall:.1f}"])
    log_file.flush()


def _progress(steps: int, step: int):
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=step, desc="train")


def _parse_box(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"--crop-box takes left,top,right,bottom in pixels; got {text!r}")
    left, top, right, bottom = (int(p) for p in parts)
    if right <= left or bottom <= top:
        raise argparse.ArgumentTypeError(f"--crop-box needs right > left and bottom > top; got {text!r}")
    return left, top, right, bottom


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder or zip of images")
    parser.add_argument("--out", required=True, help="run folder (resumes if it holds checkpoint.pt)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--include", action="append", help="fnmatch pattern of paths to use (repeatable)")
    parser.add_argument("--exclude", action="append", help="fnmatch pattern of paths to skip (repeatable)")
    parser.add_argument("--crop-box", type=_parse_box, default=None, help="left,top,right,bottom; default: "
                        "centred square")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the U-Net (fast on CPUs "
                        "with AMX/AVX512-BF16)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--init", default=None, help="diffusers folder to warm-start a new run from (e.g. "
                        "helpers/weights/faces32); ignored when --out already holds a checkpoint")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--min-lr", type=float, default=0.0, help="the cosine schedule's final learning rate")
    args = parser.parse_args(argv)
    ema_dir = train(args.data, args.out, size=args.size, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    warmup=args.warmup, ema_decay=args.ema_decay, checkpoint_every=args.checkpoint_every,
                    log_every=args.log_every, include=args.include, exclude=args.exclude,
                    crop_box=args.crop_box, seed=args.seed, bf16=args.bf16, threads=args.threads,
                    init=args.init, lr_schedule=args.lr_schedule, min_lr=args.min_lr)
    print(f"EMA weights: {ema_dir}")


if __name__ == "__main__":
    main()
