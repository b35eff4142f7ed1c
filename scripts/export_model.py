"""Ship a training run as the embedded model: copy its EMA weights into helpers/weights/faces32 and write
the model card (README.md) with the loss curve, 64 DDPM samples, the held-out evaluation and the speed.

    python scripts/export_model.py --run runs/faces32 --data ../shared/data/celeba-6k.zip [--sample-steps 1000]

Writes only into helpers/weights/faces32 (weights, SHA256SUMS, README.md, loss.png, samples.png,
evaluation.txt, benchmark.txt). Takes about 15 minutes on 2 CPU cores, most of it the 1000-step samples.
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
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import benchmark_model  # noqa: E402
import evaluate_model  # noqa: E402

from helpers import images, models, sampling  # noqa: E402

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

![64 samples](samples.png)

*64 samples, DDPM with all {sample_steps} steps, variance beta_t, x0_hat clipped, seed 0.*

## Data and licence
- **Data**: {n_images} colour face photos of identities `celeb_0` to `celeb_179` from a 6,000-image subset of
  CelebA's aligned-and-cropped set (`img_align_celeba`), cropped to the box (19, 39, 159, 179) and resized to
  32 x 32 with Lanczos filtering; random horizontal flips. Identities `celeb_180` to `celeb_199` (600 images)
  were held out for the evaluation below.
- **Licence restriction**: CelebA is available for non-commercial research and educational purposes only.
  These weights inherit that restriction: use them for teaching and research, not commercially. No CelebA
  image, crop or figure made from one is shipped with the course.

## Architecture
diffusers `UNet2DModel`, {n_params:,} parameters ({size_mb:.1f} MB in float32 safetensors), 32 x 32 RGB:
block channels {channels}, {layers} ResNet layers per block, self-attention at 8 x 8 and in the middle block,
GroupNorm with {groups} groups, sinusoidal time embedding.

```json
{config}
```

## Training
AdamW, learning rate {lr:g} (linear warm-up over {warmup} steps, then constant), batch {batch}, gradient
clipping at 1, bfloat16 autocast on the CPU, EMA of the weights (decay {ema:g} with warm-up; the EMA weights are
shipped), the simple DDPM loss. **{steps:,} iterations** ({epochs:.0f} epochs), **{wall_h:.1f} hours** of
training-step time on a 2-core CPU (Intel Xeon with AMX, 1-2 threads; the machine was shared, so the wall clock
was longer). Reproduce with `make train` (resumable), then `make export-model`.

![loss](loss.png)

*Training loss (MSE on epsilon) per logged step and its moving average.*

## Held-out evaluation (`make evaluate`)
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


def plot_loss(loss_csv: pathlib.Path, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(loss_csv) as f:
        rows = list(csv.DictReader(f))
    steps = torch.tensor([float(r["step"]) for r in rows])
    loss = torch.tensor([float(r["loss"]) for r in rows])
    window = min(50, len(loss))
    smooth = torch.nn.functional.avg_pool1d(loss[None, None], window, stride=1)[0, 0]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="logged step")
    ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"moving average ({window} logs)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("MSE on epsilon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def captured(function, argv: list[str]) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        function(argv)
    text = buffer.getvalue().rstrip()
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/faces32")
    parser.add_argument("--data", default="../shared/data/celeba-6k.zip")
    parser.add_argument("--sample-steps", type=int, default=1000)
    parser.add_argument("--card-only", action="store_true", help="only rewrite README.md from the files already "
                        "exported (e.g. after re-running `make benchmark > .../benchmark.txt` on an idle machine)")
    args = parser.parse_args(argv)
    run = pathlib.Path(args.run)
    target = models.EMBEDDED_MODEL_DIR
    state = torch.load(run / "checkpoint.pt", weights_only=False, map_location="cpu")
    train_args = json.loads((run / "train_args.json").read_text())
    if not args.card_only:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", models.WEIGHTS_FILE):
            shutil.copyfile(run / "ema" / name, target / name)
        models.write_checksum(target)
        plot_loss(run / "loss.csv", target / "loss.png")
        model = models.load_model("faces", device="cpu")
        start = time.perf_counter()
        samples, _ = sampling.ddpm_sample(model, 64, torch.Generator().manual_seed(0), num_steps=args.sample_steps)
        print(f"64 samples with {args.sample_steps} steps in {time.perf_counter() - start:.0f} s")
        grid = samples.reshape(8, 8, 3, model.image_size, model.image_size).permute(2, 0, 3, 1, 4)
        images.save_image(grid.reshape(3, 8 * model.image_size, 8 * model.image_size), target / "samples.png",
                          scale=3)
        (target / "evaluation.txt").write_text(captured(evaluate_model.main, ["--data", args.data]) + "\n")
        (target / "benchmark.txt").write_text(captured(benchmark_model.main, []) + "\n")
    model = models.load_model("faces", device="cpu")
    evaluation = (target / "evaluation.txt").read_text().rstrip()
    benchmark = (target / "benchmark.txt").read_text().rstrip()

    config = state["config"]
    n_params = sum(p.numel() for p in model.unet.parameters())
    card = CARD.format(
        sample_steps=args.sample_steps, n_images=train_args["n_images"], n_params=n_params,
        size_mb=(target / models.WEIGHTS_FILE).stat().st_size / 1e6, channels=tuple(config["block_out_channels"]),
        layers=config["layers_per_block"], groups=config["norm_num_groups"], config=json.dumps(config, indent=2),
        lr=train_args["lr"], warmup=train_args["warmup"], batch=train_args["batch_size"], ema=train_args["ema_decay"],
        steps=state["step"], epochs=state["step"] * train_args["batch_size"] / train_args["n_images"],
        wall_h=state["wall"] / 3600, evaluation=evaluation, benchmark=benchmark)
    (target / "README.md").write_text(card)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
