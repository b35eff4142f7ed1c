"""Forward-pass cost of a face model on this machine's CPU (float32, no grad), at batch 16 and batch 1.

Target (foundation issue): <= 25 ms per image at batch 16 on the 2-core course machine.

    python scripts/benchmark_model.py [--model-dir runs/faces32/ema] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from helpers import models

TARGET_MS_PER_IMAGE = 25.0


def time_forward(model: models.DiffusionModel, batch: int, repeats: int) -> list[float]:
    """Seconds per forward call of ``model.eps`` at ``batch``, after two warm-up calls."""
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(batch, 3, model.image_size, model.image_size, generator=generator)
    t = torch.randint(0, model.T, (batch,), generator=generator)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            start = time.perf_counter()
            model.eps(x_t, t)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    model = (models.load_model("faces", device="cpu") if args.model_dir is None
             else models.load_model_from_folder(args.model_dir, device="cpu"))
    n_params = sum(p.numel() for p in model.unet.parameters())
    print(f"model {model.name!r}: {n_params / 1e6:.2f} M parameters, {model.image_size}x{model.image_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    ok = True
    for batch in (16, 1):
        times = time_forward(model, batch, args.repeats)
        median, best = statistics.median(times), min(times)
        per_image = 1000 * median / batch
        line = (f"batch {batch:>2}: median {1000 * median:7.1f} ms per call (best {1000 * best:.1f}), "
                f"{per_image:6.2f} ms per image over {len(times)} calls")
        if batch == 16:
            ok = per_image <= TARGET_MS_PER_IMAGE
            line += f"  [target <= {TARGET_MS_PER_IMAGE:.0f} ms per image: {'PASS' if ok else 'FAIL'}]"
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
