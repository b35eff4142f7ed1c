"""Ship a training run as the embedded model: copy its EMA weights into helpers/weights/faces32 and write the model
card (README.md) with the recipe, the loss curve, 64 DDPM samples of the new and the previous model, the held-out
evaluation of new against previous, and the speed.

    python scripts/export_model.py --run ~/.cache/diffusion-course/runs/faces32-15k --init-iterations 4500 \\
        --old helpers/weights/faces32 --data ../shared/data/celeba-6k.zip [--sample-steps 1000]

- ``--run``: a run of ``python -m helpers.train`` (checkpoint.pt, train_args.json, loss.csv, ema/). The run may
  still be training: its ema/ and checkpoint.pt are copied first, and the copy is used only if the EMA weights
  are those of the checkpoint (same step), so the card's iteration count is that of the weights shipped.
- ``--init-iterations``: for a run warm-started with ``--init`` (train_args.json says so), the iterations the
  initial model had been trained for; the card counts ``init + the run's steps`` (required then).
- The evaluation (scripts/evaluate_model.py, new against ``--old``) runs before anything is written: if it fails a
  bar (the new model must have a lower held-out loss by > 3 SE and higher x0_hat gains at t = 100, 200, and beat
  the best Gaussian filter by 1 dB), nothing is shipped unless ``--ship-anyway``.
- ``--old``: the model to compare against (default: the folder as it is before this export, i.e. the shipped
  model). On a second export from the same run the shipped model is no longer the initial one: restore the
  4,500-iteration model from git first, e.g.
  ``mkdir -p /tmp/faces32-4500 && for f in config.json diffusion_pytorch_model.safetensors SHA256SUMS loss.png; do
  git show 52ac44c:helpers/weights/faces32/$f > /tmp/faces32-4500/$f; done`` and pass ``--old /tmp/faces32-4500``.

Writes only into ``--target`` (default helpers/weights/faces32): the weights, SHA256SUMS, config.json, README.md,
training.json (what the card states about training, so ``--card-only`` stays true while the run goes on),
loss.png, loss_0-<init>.png (the previous model's curve, from ``--old``), samples.png, samples_<init>.png,
evaluation.txt, benchmark.txt. Takes about an hour on the shared 2-core course machine (measured there: the
evaluation without samples 8-13 minutes, 64 samples x 50 steps about a minute per model), most of it the two
1000-step sample grids (2 x 64,000 network evaluations).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import pathlib
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import benchmark_model  # noqa: E402
import evaluate_model  # noqa: E402

from helpers import models  # noqa: E402
from helpers.download import sha256_of  # noqa: E402

CARD = """---
license: other
license_name: celeba-research-only
tags: [diffusers, unconditional-image-generation, ddpm, faces, education]
---
# `faces32`: the course's embedded 32 x 32 face diffusion model

A small denoising diffusion model (epsilon-prediction, linear betas from 1e-4 to 0.02, T = 1000, as in the
paper and in DDPM/DPS) trained by this project on CPU so that the whole course runs offline on a laptop.
Load it with `helpers.models.load_model("faces")`, or with diffusers: `UNet2DModel.from_pretrained(
"helpers/weights/faces32")` plus `DDPMScheduler(beta_schedule="linear")`.

{samples}

## Data and licence
- **Data**: {n_images} colour face photos of identities `celeb_0` to `celeb_179` from a 6,000-image subset of
  CelebA's aligned-and-cropped set (`img_align_celeba`), cropped to {crop_box} and resized to
  {size} x {size} with Lanczos filtering; random horizontal flips. Identities `celeb_180` to `celeb_199` (600 images)
  were held out for the evaluation below.
- **Licence restriction**: CelebA is available for non-commercial research and educational purposes only.
  These weights inherit that restriction: use them for teaching and research, not commercially. No CelebA
  image, crop or figure made from one is shipped with the course.

## Architecture
diffusers `UNet2DModel`, {n_params:,} parameters ({size_mb:.1f} MB in float32 safetensors), {size} x {size} RGB:
block channels {channels}, {layers} ResNet layers per block, self-attention at 8 x 8 and in the middle block,
GroupNorm with {groups} groups, sinusoidal time embedding.

```json
{config}
```

## Training
{training}

## Held-out evaluation (`make evaluate`)
{evaluation_note}

```
{evaluation}
```

## Speed (`make benchmark`)
```
{benchmark}
```

## Limitations
32 x 32 pixels keep the course fast on a CPU but remove fine detail: samples are recognisable faces, not
photographs, and PSNR values are not comparable to those of the paper's 256 x 256 FFHQ model. The data set is
small (180 identities) and inherits CelebA's biases in age, ethnicity and pose.
"""


def plot_loss(loss_csv: pathlib.Path, path: pathlib.Path, offset: int = 0, last_step: int | None = None) -> None:
    """The run's logged loss (and its moving average) and learning rate against the total iteration count.

    ``offset``: iterations before the run (a warm start); ``last_step``: the run's step of the shipped weights
    (rows logged after it, while the run went on, are left out).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(loss_csv) as f:
        rows = [r for r in csv.DictReader(f) if last_step is None or int(r["step"]) <= last_step]
    if not rows:
        raise ValueError(f"{loss_csv} has no logged step up to {last_step}; nothing to plot.")
    steps = torch.tensor([float(r["step"]) for r in rows]) + offset
    loss = torch.tensor([float(r["loss"]) for r in rows])
    lr = torch.tensor([float(r["lr"]) for r in rows])
    window = min(50, len(loss))
    smooth = torch.nn.functional.avg_pool1d(loss[None, None], window, stride=1)[0, 0]
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="logged step")
    ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"moving average ({window} logs)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration" + (f" (counting the {offset:,} of the initial model)" if offset else ""))
    ax.set_ylabel("MSE on epsilon")
    lr_axis = ax.twinx()
    lr_axis.plot(steps, lr, color="grey", lw=1, ls="--", label="learning rate")
    lr_axis.set_ylabel("learning rate")
    lr_axis.set_ylim(0, float(lr.max()) * 1.1)
    lines = ax.get_legend_handles_labels()
    more = lr_axis.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def captured(function, argv: list[str]) -> tuple[str, int]:
    """Run a script's ``main(argv)``; return what it printed (also echoed) and its exit status."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = function(argv)
    text = buffer.getvalue().rstrip()
    print(text)
    return text, code


def snapshot_run(run: pathlib.Path, into: pathlib.Path, attempts: int = 5, wait_s: float = 20.0) -> dict:
    """Copy ``run``'s ema/ and checkpoint.pt into ``into``; return the checkpoint, checked to hold the same EMA.

    A running training rewrites both every few hundred steps (checkpoint first, then ema/), so a copy can catch
    one of them before and one after; such a copy is retried after ``wait_s`` seconds.
    """
    from diffusers import UNet2DModel

    for attempt in range(attempts):
        if into.exists():
            shutil.rmtree(into)
        into.mkdir(parents=True)
        try:
            shutil.copytree(run / "ema", into / "ema")
            shutil.copyfile(run / "checkpoint.pt", into / "checkpoint.pt")
        except FileNotFoundError:  # caught between the training's two renames of ema/
            time.sleep(wait_s)
            continue
        state = torch.load(into / "checkpoint.pt", weights_only=False, map_location="cpu")
        unet = UNet2DModel.from_pretrained(into / "ema")
        shadow = state["ema"]["shadow_params"]
        params = list(unet.parameters())
        if len(shadow) == len(params) and all(torch.equal(s, p) for s, p in zip(shadow, params)):
            return state
        print(f"the copy of {run}/ema is not the EMA of its checkpoint.pt (step {state['step']}): the run wrote "
              f"one of them meanwhile; trying again in {wait_s:.0f} s ({attempt + 1}/{attempts})")
        time.sleep(wait_s)
    raise RuntimeError(f"could not copy a consistent ema/ + checkpoint.pt from {run} in {attempts} attempts.")


def copy_model(source: pathlib.Path, target: pathlib.Path, extra: tuple[str, ...] = ()) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", models.WEIGHTS_FILE, *extra):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def describe_training(info: dict) -> str:
    """The card's training section, from training.json (train_args.json of the run and its checkpoint)."""
    args, ema = info["train_args"], info["ema"]
    init, step, planned = info["init_iterations"], info["run_steps"], args["steps"]
    total = init + step
    epochs = total * args["batch_size"] / args["n_images"]
    if args["lr_schedule"] == "cosine":
        schedule = (f"then a cosine decay to {args['min_lr']:g} at the run's step {planned:,}"
                    + (f" (at the shipped step {step:,} it was at {info['last_lr']:.2e})" if step < planned else ""))
    else:
        schedule = "then constant"
    ema_text = (f"EMA of the weights (decay {args['ema_decay']:g}"
                + (f" with warm-up: min({args['ema_decay']:g}, 1 - (1 + step)^-{ema['power']:g})"
                   if ema.get("use_ema_warmup") else "") + "; the EMA weights are shipped)")
    recipe = (f"AdamW (weight decay 0), learning rate: linear warm-up over {args['warmup']} steps to {args['lr']:g}, "
              f"{schedule}; batch {args['batch_size']}; gradient clipping at 1; "
              f"{'bfloat16 autocast on the CPU; ' if args['bf16'] else ''}{ema_text}; the simple DDPM loss "
              f"(MSE on epsilon, t uniform in [0, 1000)); seed {args['seed']}.")
    stopped = (f" It was stopped at step {step:,} of the {planned:,} planned." if step < planned else "")
    hours = (f"{info['wall_s'] / 3600:.1f} hours of training-step time{' for this run' if init else ''} on a 2-core "
             f"CPU shared with other work (the wall clock was longer).")
    if init:
        text = (f"**{total:,} iterations** at batch {args['batch_size']} ({epochs:.0f} epochs of the "
                f"{args['n_images']:,} training images), in two runs:\n\n"
                f"1. Iterations 1 to {init:,}: the previous model's run (its recipe, loss curve and training time are "
                f"in the previous version of this card: `git log -- helpers/weights/faces32/README.md`).\n"
                f"2. Iterations {init + 1:,} to {total:,} ({step:,} steps): warm-started from the {init:,}-iteration "
                f"EMA weights (`{args['init']}`), which initialised both the model and its EMA, with a fresh "
                f"optimiser: {recipe}{stopped} {hours}\n\n"
                f"Reproduce with `make train` (resumable), then `make export-model`.")
    else:
        text = (f"{recipe} **{step:,} iterations** ({epochs:.0f} epochs).{stopped} {hours} Reproduce with "
                f"`make train` (resumable), then `make export-model`.")
    text += ("\n\n![loss](loss.png)\n\n*Training loss (MSE on epsilon) per logged step, its moving average and the "
             "learning rate" + (f", iterations {init + 1:,} to {total:,} (the continuation).*" if init else ".*"))
    if init and info.get("init_loss_png"):
        text += (f"\n\nThe first {init:,} iterations (the previous model's run; its card's curve):\n\n"
                 f"![loss of the first {init:,} iterations]({info['init_loss_png']})")
    elif init:
        text += (f" The first {init:,} iterations' curve is the previous card's (`loss.png` in git history).")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/faces32", help="the training run folder")
    parser.add_argument("--data", default="../shared/data/celeba-6k.zip")
    parser.add_argument("--init-iterations", type=int, default=None,
                        help="iterations of the model the run was warm-started from (required for a warm start)")
    parser.add_argument("--old", default=None,
                        help="the model to compare against (default: --target as it is before this export)")
    parser.add_argument("--target", default=str(models.EMBEDDED_MODEL_DIR), help="where to ship the model")
    parser.add_argument("--sample-steps", type=int, default=1000)
    parser.add_argument("--ship-anyway", action="store_true", help="ship even if the evaluation fails a bar "
                        "(by default nothing is written then)")
    parser.add_argument("--card-only", action="store_true", help="only rewrite README.md from the files already "
                        "exported (e.g. after re-running `make benchmark > .../benchmark.txt` on an idle machine)")
    args = parser.parse_args(argv)
    run, target = pathlib.Path(args.run).expanduser(), pathlib.Path(args.target)

    if not args.card_only:
        for name in ("train_args.json", "checkpoint.pt", "loss.csv", "ema"):
            if not (run / name).exists():
                raise FileNotFoundError(f"--run {args.run!r} is not a training run: it has no {name}; expected a "
                                        f"folder written by `python -m helpers.train --out ...` (make train).")
        train_args = json.loads((run / "train_args.json").read_text())
        if train_args.get("init") and args.init_iterations is None:
            raise ValueError(f"--init-iterations is required: the run {args.run!r} was warm-started from "
                             f"{train_args['init']!r}; give the iterations that model had been trained for "
                             f"(e.g. --init-iterations 4500).")
        if args.init_iterations is not None and (args.init_iterations < 0 or (args.init_iterations
                                                                              and not train_args.get("init"))):
            raise ValueError(f"--init-iterations must be >= 0, and 0 for a run that was not warm-started (--init); "
                             f"got {args.init_iterations} for a run with init={train_args.get('init')!r}.")
        init = args.init_iterations or 0
        old = pathlib.Path(args.old if args.old is not None else target).expanduser()
        evaluate_model.load_checked(str(old), "--old")  # fails early, naming the parameter
        with tempfile.TemporaryDirectory(prefix="export_model_") as tmp:
            tmp = pathlib.Path(tmp)
            # (1) Frozen copies: the run goes on writing, and the old model may live in the target.
            state = snapshot_run(run, tmp / "run")
            new_dir = tmp / "run" / "ema"
            copy_model(old, tmp / "old", extra=("loss.png",))
            old_sha256 = sha256_of(tmp / "old" / models.WEIGHTS_FILE)
            print(f"exporting step {state['step']} of {run} (+{init} initial iterations); old model: {old}")
            # (2) Measure: new against old on the held-out faces, with both sample grids; the speed.
            evaluation, code = captured(evaluate_model.main, [
                "--data", args.data, "--old", str(tmp / "old"), "--new", str(new_dir), "--samples-dir",
                str(tmp / "samples"), "--sample-steps", str(args.sample_steps)])
            evaluation = (evaluation.replace(str(tmp / "samples" / "samples_new.png"), "samples.png")
                          .replace(str(tmp / "samples" / "samples_old.png"), f"samples_{init or 'old'}.png")
                          .replace(str(tmp / "old"), f"{old} (before this export)")
                          .replace(str(new_dir), f"{run}/ema at step {state['step']}"))
            if code != 0 and not args.ship_anyway:
                raise RuntimeError(f"not shipped: the run's step {state['step']} fails a bar of the evaluation above "
                                   f"against --old {str(old)!r} (a FAIL line), so {target} is left as it was. Ship "
                                   f"it anyway, with the FAIL in its card, with --ship-anyway.")
            benchmark, _ = captured(benchmark_model.main, ["--model-dir", str(new_dir)])
            # (3) Ship.
            copy_model(new_dir, target)
            models.write_checksum(target)
            init_loss_png = None
            if init and (tmp / "old" / "loss.png").is_file():
                init_loss_png = f"loss_0-{init}.png"
                if not (target / init_loss_png).is_file():  # a second export keeps the first one's
                    shutil.copyfile(tmp / "old" / "loss.png", target / init_loss_png)
            plot_loss(run / "loss.csv", target / "loss.png", offset=init, last_step=state["step"])
            shutil.copyfile(tmp / "samples" / "samples_new.png", target / "samples.png")
            shutil.copyfile(tmp / "samples" / "samples_old.png", target / f"samples_{init or 'old'}.png")
        with open(run / "loss.csv") as f:
            last_lr = [float(r["lr"]) for r in csv.DictReader(f) if int(r["step"]) <= state["step"]][-1]
        info = dict(init_iterations=init, run_steps=state["step"], wall_s=state["wall"], last_lr=last_lr,
                    train_args=train_args, ema={k: v for k, v in state["ema"].items() if k != "shadow_params"},
                    sample_steps=args.sample_steps, old=str(old), old_sha256=old_sha256, init_loss_png=init_loss_png)
        (target / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        (target / "evaluation.txt").write_text(evaluation + "\n")
        (target / "benchmark.txt").write_text(benchmark + "\n")
    for name in ("training.json", "evaluation.txt", "benchmark.txt", "config.json", models.WEIGHTS_FILE):
        if not (target / name).is_file():
            raise FileNotFoundError(f"--card-only needs {target / name}, written by a full export; run without "
                                    f"--card-only first.")
    info = json.loads((target / "training.json").read_text())
    model = models.load_model_from_folder(target, device="cpu")
    init, total = info["init_iterations"], info["init_iterations"] + info["run_steps"]
    steps_text = "all 1000 steps, variance beta_t" if info["sample_steps"] == model.T else \
        f"{info['sample_steps']} respaced steps, variance beta_tilde"
    if init:
        samples = (f"| {total:,} iterations (this model) | {init:,} iterations (the previous model) |\n|---|---|\n"
                   f"| ![64 samples of this model](samples.png) | ![64 samples of the previous model]"
                   f"(samples_{init}.png) |\n\n*64 samples from each model, DDPM with {steps_text}, x0_hat "
                   f"clipped, seed 0: the same x_T and noise for both (`make evaluate`).*")
        evaluation_note = (f"`old` is the previous, {init:,}-iteration model, `new` this one, on the same draws. "
                           f"Printout of `scripts/evaluate_model.py` at export:")
    else:
        samples = (f"![64 samples](samples.png)\n\n*64 samples, DDPM with {steps_text}, x0_hat clipped, seed 0 "
                   f"(`old` in the evaluation below: samples_old.png).*")
        evaluation_note = "Printout of `scripts/evaluate_model.py` at export, against the model shipped before:"
    unet_config, crop_box = info["train_args"]["config"], info["train_args"]["crop_box"]
    card = CARD.format(
        samples=samples, n_images=info["train_args"]["n_images"],
        crop_box=f"the box {tuple(crop_box)}" if crop_box else "the centred square",
        size=model.image_size, n_params=sum(p.numel() for p in model.unet.parameters()),
        size_mb=(target / models.WEIGHTS_FILE).stat().st_size / 1e6, channels=tuple(unet_config["block_out_channels"]),
        layers=unet_config["layers_per_block"], groups=unet_config["norm_num_groups"],
        config=json.dumps(unet_config, indent=2), training=describe_training(info), evaluation_note=evaluation_note,
        evaluation=(target / "evaluation.txt").read_text().rstrip(),
        benchmark=(target / "benchmark.txt").read_text().rstrip())
    (target / "README.md").write_text(card)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
