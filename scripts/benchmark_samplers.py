"""Sampler overhead on this machine's CPU: how much of a sampling run is not the network.

    overhead = wall time of one sampling run / (number of model calls x cost of one model call)

with the cost of the model calls measured as a bare loop of the same number of calls, at the same batch and
timesteps. The two are timed in alternating rounds and the medians compared, so that a slow spell of a shared
machine hits both. An overhead of 1.00 means the loop adds nothing to the network's own cost. Target (DDPM
issue): <= 1.05. Each sampler has its own ``benchmark_*`` function returning a :class:`SamplerTiming`; ``main``
lists the ones it runs.

    python scripts/benchmark_samplers.py [--batch 4] [--steps 200] [--rounds 3]
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
                f"{self.run_seconds:.2f} s, one call {1000 * self.call_seconds:.1f} ms; overhead "
                f"{self.overhead:.3f}  [target <= {TARGET_OVERHEAD:.2f}: {verdict}]")


def alternating_medians(first: Callable[[], object], second: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median wall times of ``first()`` and ``second()``, timed in ``rounds`` alternating rounds after a warm-up."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def benchmark_ddpm(model: models.DiffusionModel, batch: int, steps: int, rounds: int) -> SamplerTiming:
    """DDPM (paper Sec. III-B; ``sampling.ddpm_sample``): one network evaluation ``model.eps`` per step."""
    generator = torch.Generator().manual_seed(0)
    x_t = sampling.randn((batch, 3, model.image_size, model.image_size), generator, device=model.device)
    timesteps = sampling.respaced_timesteps(model.T, steps)

    def model_calls_only() -> None:
        with torch.no_grad():
            for t in timesteps:
                model.eps(x_t, t)

    def sampler() -> None:
        sampling.ddpm_sample(model, batch, generator, num_steps=steps, progress=False)

    calls_seconds, run_seconds = alternating_medians(model_calls_only, sampler, rounds)
    return SamplerTiming("DDPM", batch, steps, model_calls=steps, run_seconds=run_seconds,
                         call_seconds=calls_seconds / steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds (medians are used)")
    args = parser.parse_args(argv)
    model = models.load_model("faces", device="cpu")
    print(f"model {model.name!r} on {model.device}, {model.image_size}x{model.image_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    timings = [
        benchmark_ddpm(model, args.batch, args.steps, args.rounds),
    ]
    for timing in timings:
        print(timing.line())
    return 0 if all(timing.overhead <= TARGET_OVERHEAD for timing in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
