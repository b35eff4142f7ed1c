"""Sampler overhead on this machine's CPU: how much of a sampling run is not the network.

    overhead = wall time of one sampling run / (number of model calls x cost of one model call)

with the cost of one call measured separately, at the same batch, as the median of a few timed calls. An overhead
of 1.00 means the loop adds nothing to the network's own cost. Target (DDPM issue): <= 1.05. Each sampler has its
own ``benchmark_*`` function returning a :class:`SamplerTiming`; ``main`` lists the ones it runs.

    python scripts/benchmark_samplers.py [--batch 4] [--steps 200] [--repeats 7]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

from helpers import models, sampling

TARGET_OVERHEAD = 1.05


@dataclasses.dataclass(frozen=True)
class SamplerTiming:
    """One sampler's wall time against the cost of the model calls it made."""

    name: str
    batch: int
    steps: int
    model_calls: int
    run_seconds: float
    call_seconds: float

    @property
    def overhead(self) -> float:
        return self.run_seconds / (self.model_calls * self.call_seconds)

    def line(self) -> str:
        verdict = "PASS" if self.overhead <= TARGET_OVERHEAD else "FAIL"
        return (f"{self.name}: batch {self.batch}, {self.steps} steps, {self.model_calls} model calls; run "
                f"{self.run_seconds:.2f} s, one call {1000 * self.call_seconds:.1f} ms (median); overhead "
                f"{self.overhead:.3f}  [target <= {TARGET_OVERHEAD:.2f}: {verdict}]")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def benchmark_ddpm(model: models.DiffusionModel, batch: int, steps: int, repeats: int) -> SamplerTiming:
    """DDPM (paper Sec. III-B; ``sampling.ddpm_sample``): one network evaluation ``model.eps`` per step."""
    generator = torch.Generator().manual_seed(0)
    x_t = sampling.randn((batch, 3, model.image_size, model.image_size), generator, device=model.device)
    with torch.no_grad():
        call_seconds = median_seconds(lambda: model.eps(x_t, model.T // 2), repeats)
    sampling.ddpm_sample(model, batch, generator, num_steps=2, progress=False)  # warm-up of the loop itself
    start = time.perf_counter()
    sampling.ddpm_sample(model, batch, generator, num_steps=steps, progress=False)
    run_seconds = time.perf_counter() - start
    return SamplerTiming("DDPM", batch, steps, model_calls=steps, run_seconds=run_seconds, call_seconds=call_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7, help="timed single model calls (the median is used)")
    args = parser.parse_args(argv)
    model = models.load_model("faces", device="cpu")
    print(f"model {model.name!r} on {model.device}, {model.image_size}x{model.image_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    timings = [
        benchmark_ddpm(model, args.batch, args.steps, args.repeats),
    ]
    for timing in timings:
        print(timing.line())
    return 0 if all(timing.overhead <= TARGET_OVERHEAD for timing in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
