"""GPU benchmark of the 256 x 256 models (ffhq256, celebahq256): seconds per image, peak memory, compute floor.

Prints figures (and writes them to ``--out``); it is not a test. For each model, built with random weights of the
right shapes through ``helpers.paper_models``' builders (the GPU machine has no network, so timings are valid and
images are not) and wrapped by ``models.wrap_network`` exactly as ``load_model`` wraps the real checkpoint:

1. FLOPs per U-Net forward and per DPS step (forward and backward to the input), counted by
   ``torch.utils.flop_counter.FlopCounterMode`` at batch 1 (ffhq_10m: about 388 GFLOP per forward).
2. Seconds per image of a 1000-step DDPM run (``sampling.ddpm_sample``) and a 1000-step DPS run
   (``posterior.dps_sample``, box inpainting, DPS's step) at batch 1 and batch 8: the course's own samplers. To keep
   the run short, ``--steps`` steps are timed after a warm-up and the time is extrapolated per step to 1000 (every
   step of a respaced run costs what a step of the full run costs: one forward, or one forward and one backward);
   the output says how many steps were timed.
3. Peak GPU memory of each run (``torch.cuda.max_memory_allocated``).
4. The compute floor, 1000 x FLOPs per step per image / peak throughput, and the ratio measured / floor. Peak
   throughput: dense bf16 (fp16 on a T4) tensor-core TFLOP/s of the detected GPU, or ``--peak-tflops``.

Targets (issue "paper-scale models", on an H100): DPS <= 4 s per image at batch 1 and <= 2 s per image at batch 8;
peak memory of DPS at batch 1 <= 6 GB (a Colab T4 has 16 GB). The fast path is ``load_model``'s default on CUDA
(bf16 autocast, channels_last); noise is drawn by a generator on the GPU (``sampling.randn``).

    python scripts/benchmark_gpu.py --out runs/benchmark_gpu.txt [--steps 50] [--peak-tflops 989] [--no-fast]
                                    [--compile reduce-overhead]
    python scripts/benchmark_gpu.py --smoke --out /tmp/smoke.txt   # any machine: reduced widths, 32x32, 2 steps
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import platform
import sys
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers import models, operators, paper_models, posterior, sampling

T = 1000
TARGET_DPS_S_PER_IMAGE = {1: 4.0, 8: 2.0}
TARGET_DPS_PEAK_GB_BATCH_1 = 6.0
# Dense tensor-core peak in TFLOP/s for the autocast dtype (bf16; fp16 on the T4, which has no bf16): NVIDIA's
# datasheets. Matched against torch.cuda.get_device_name() in this order.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L4", 121.0),
               ("T4", 65.0))
SMOKE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    image_size: int
    build: Callable[[], torch.nn.Module]


def cases(smoke: bool) -> list[Case]:
    """The two architectures at full size, or (``smoke``) with only their size numbers reduced."""
    adm = paper_models.FFHQ256_ARCHITECTURE
    ddpm = paper_models.CELEBAHQ256_ARCHITECTURE
    if smoke:
        adm = dataclasses.replace(adm, image_size=SMOKE_SIZE, model_channels=32)
        ddpm = {**ddpm, "sample_size": SMOKE_SIZE, "block_out_channels": (32, 32, 64, 64, 128, 128)}
    return [Case("ffhq256", adm.image_size,
                 lambda: paper_models.EpsilonOfLearnedSigma(paper_models.build_adm_unet(adm))),
            Case("celebahq256", ddpm["sample_size"], lambda: paper_models.build_ddpm_unet(ddpm))]


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for a CPU: pass --peak-tflops"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS:
        if key in name:
            return value, f"{name}: dense {'fp16' if key == 'T4' else 'bf16'} datasheet peak"
    return None, f"unknown for {name}: pass --peak-tflops"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(model: models.DiffusionModel, op: operators.Inpainting, y: torch.Tensor,
                generator: torch.Generator) -> tuple[float, float]:
    """FLOPs of one forward (``model.eps``) and of one DPS step's network work (``posterior.dps_step``'s forward and
    backward to ``x_t``), at batch 1. The DPS step is replayed with ``.backward()`` because ``FlopCounterMode``'s
    module hooks do not support ``torch.autograd.grad``; the elementwise rest of the step costs no counted FLOPs."""
    x_t = sampling.randn(tuple(y.shape), generator, like=y)
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model.eps(x_t, 500)
    with FlopCounterMode(display=False) as dps:
        x_t_grad = x_t.detach().requires_grad_()
        x0_hat = model.x0_hat(x_t_grad, 500).clamp(-1, 1)
        torch.linalg.vector_norm((y - op.A(x0_hat)).flatten(1), dim=1).sum().backward()
    return float(forward.get_total_flops()), float(dps.get_total_flops())


def timed(run, device: torch.device) -> tuple[float, float | None]:
    """Wall seconds of ``run()`` and the peak GPU memory it allocated (GB; ``None`` on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="write the report to this file too")
    parser.add_argument("--steps", type=int, default=None, help="steps timed per run (default 50; smoke: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before each run (default 3; smoke 1)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 8; smoke 1 2)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense TFLOP/s for the compute floor")
    parser.add_argument("--no-fast", action="store_true", help="float32, no channels_last (fast=False)")
    parser.add_argument("--compile", default=False, choices=list(models.COMPILE_MODES),
                        help="torch.compile the U-Net with this mode ('reduce-overhead': CUDA graphs)")
    parser.add_argument("--smoke", action="store_true",
                        help="prove the script end to end on any machine: reduced widths, 32x32 images, few steps")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.smoke else 50)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    batches = args.batches or ([1, 2] if args.smoke else [1, 8])
    if not 1 <= steps <= T or warmup < 0 or min(batches) < 1:
        parser.error(f"--steps must be in [1, {T}], --warmup >= 0 and batches >= 1; got steps={steps}, "
                     f"warmup={warmup}, batches={batches}.")
    device = models.pick_device("auto")
    if device.type != "cuda" and not args.smoke:
        parser.error(f"no CUDA GPU here (device {device}): the full-size benchmark needs one; use --smoke to check "
                     f"the script end to end.")

    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    tflops, tflops_source = peak_tflops(device, args.peak_tflops)
    say(f"benchmark_gpu{' --smoke (reduced widths, 32x32: timings are not comparable, targets not judged)' if args.smoke else ''}")
    say(f"device {device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}; torch "
        f"{torch.__version__}; python {platform.python_version()}; peak throughput "
        f"{f'{tflops:.0f} TFLOP/s' if tflops else 'n/a'} ({tflops_source})")
    say(f"timed {steps} steps per run after {warmup} warm-up steps, extrapolated per step to {T} steps; batches "
        f"{batches}; fast={'False' if args.no_fast else 'None (on for CUDA)'}; compile={args.compile}; random weights")
    verdicts = []
    for case in cases(args.smoke):
        model = models.wrap_network(case.name, case.build(), case.image_size, device,
                                    fast=False if args.no_fast else None, compile=args.compile)
        n_params = sum(p.numel() for p in model.unet.parameters())
        op = operators.box_inpainting(case.image_size, case.image_size // 2)
        measurement_generator = torch.Generator().manual_seed(0)
        x = torch.rand(1, 3, case.image_size, case.image_size, generator=measurement_generator) * 2 - 1
        y1 = op.measure(x, 0.05, measurement_generator).to(device)
        generator = torch.Generator(device).manual_seed(0)
        flops_forward, flops_dps = count_flops(model, op, y1, generator)
        floor_ddpm, floor_dps = (None, None) if tflops is None else (T * flops_forward / (tflops * 1e12),
                                                                     T * flops_dps / (tflops * 1e12))
        say()
        say(f"{case.name}: {n_params / 1e6:.1f} M parameters, {case.image_size}x{case.image_size}, autocast "
            f"{model.autocast_dtype}, channels_last {model.channels_last}")
        say(f"  FLOPs: {flops_forward / 1e9:.1f} GFLOP per forward, {flops_dps / 1e9:.1f} GFLOP per DPS step "
            f"({flops_dps / flops_forward:.2f}x); floor for {T} steps per image: "
            + (f"DDPM {floor_ddpm:.3f} s, DPS {floor_dps:.3f} s" if tflops else "n/a (peak unknown)"))
        for batch in batches:
            y = y1.expand(batch, -1, -1, -1).contiguous()
            runs = {
                "DDPM": lambda n: sampling.ddpm_sample(model, batch, generator, num_steps=n, progress=False),
                "DPS": lambda n: posterior.dps_sample(model, op, y, generator, zeta=1.0, step="dps", num_steps=n,
                                                      progress=False),
            }
            for sampler, run in runs.items():
                if warmup:
                    run(warmup)
                seconds, peak_gb = timed(lambda: run(steps), device)
                per_image = seconds / steps * T / batch
                floor = floor_ddpm if sampler == "DDPM" else floor_dps
                line = (f"  {sampler:<4} batch {batch}: {per_image:8.3f} s per image for {T} steps "
                        f"({1000 * seconds / steps:.2f} ms per step of the batch); peak memory "
                        f"{f'{peak_gb:.2f} GB' if peak_gb is not None else 'n/a'}; measured / floor "
                        f"{f'{per_image / floor:.1f}' if floor else 'n/a'}")
                if sampler == "DPS" and batch in TARGET_DPS_S_PER_IMAGE:
                    checks = [(f"<= {TARGET_DPS_S_PER_IMAGE[batch]:.0f} s per image",
                               per_image <= TARGET_DPS_S_PER_IMAGE[batch])]
                    if batch == 1:
                        checks.append((f"peak <= {TARGET_DPS_PEAK_GB_BATCH_1:.0f} GB",
                                       peak_gb is not None and peak_gb <= TARGET_DPS_PEAK_GB_BATCH_1))
                    for target, ok in checks:
                        verdict = "n/a (smoke)" if args.smoke else ("PASS" if ok else "FAIL")
                        line += f"  [target {target}: {verdict}]"
                        verdicts.append(verdict)
                say(line)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    say()
    failed = verdicts.count("FAIL")
    say(f"targets: {verdicts.count('PASS')} PASS, {failed} FAIL" + (" (smoke run: not judged)" if args.smoke else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"report written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
