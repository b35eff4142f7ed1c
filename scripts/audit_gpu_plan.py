"""Cost audit of the notebooks under the GPU plan, run on the CPU: would "Run all" fit a free Colab T4?

Executes every notebook (``notebooks/0*.ipynb``) in this process with IPython, cell by cell, top to bottom, with
``models.load_model`` replaced by a zero-cost stand-in of ``ffhq256`` (same interface: ``(B, 3, 256, 256)`` in, the
ADM U-Net's 6 channels out, of which :class:`helpers.paper_models.EpsilonOfLearnedSigma` passes the first 3 as eps;
no weights, no convolutions) and ``plan.run_plan`` answering as on a CUDA GPU (:data:`helpers.plan.PAPER_SCALE`).
Per cell it counts the images through the network in forward passes (with and without gradients) and in backward
passes, and the largest batch of each; it measures the cell's wall time and how far the process's resident memory
grew (the CPU side: the samplers' arithmetic, the operators, the metrics at 256 x 256). From the counts:

- T4 minutes: ``(forward images + BACKWARD_FACTOR x backward images) x GFLOP_PER_FORWARD / T4_TFLOPS``. The network
  dominates; the samplers' arithmetic on the GPU is not counted.
- Peak GPU memory: weights + the half-precision weight copy autocast keeps + CUDA context + the largest batch times
  the activation memory of one image (with gradients if that batch needed them), measured below.

Limits (the audit fails beyond them): a notebook > 10 T4 minutes or > 12 GB, a cell > 3 T4 minutes, a cell that grows
the CPU process by > 4 GB. A notebook that does not call ``plan.run_plan`` yet is skipped and reported: it would run
its CPU sizes at 256 x 256 and the audit would mean nothing. Cells that fail with ``AssertionError`` are reported and
the audit goes on: the stand-in is a Gaussian-prior denoiser, so the notebooks' claims about a trained face model
(e.g. "DPS beats SDEdit") cannot hold for it; any other error fails the audit.

Usage: ``python scripts/audit_gpu_plan.py [notebooks ...]``; ``--measure-activations`` re-measures the constants below
(one image through the real-size ADM U-Net with random weights on the CPU, ~10 s and ~2.5 GB).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# ---- the cost model ----
GFLOP_PER_FORWARD = 388.0  # ffhq256, one 256x256 image, counted with torch.utils.flop_counter (scripts/benchmark_gpu.py)
BACKWARD_FACTOR = 2.0      # a backward pass through the network (gradient w.r.t. its input) ~ 2 forward passes
# Assumed sustained throughput of a Colab T4 on this U-Net under float16 autocast: 8 TFLOP/s, 12 % of its 65 TFLOP/s
# float16 tensor-core peak. Not measured (no T4 here): Colab's T4 is capped at 70 W and clocks down under sustained
# load, GroupNorm/SiLU/attention run in float32 and are memory-bound, and batches are small. 8 TFLOP/s is 48 ms per
# image per forward pass; a measurement on a T4 (scripts/benchmark_gpu.py) should replace it.
T4_TFLOPS = 8.0
# Activation memory of one 256x256 image through the real-size ADM U-Net (helpers.paper_models.build_adm_unet, random
# weights, float32, batch 1) on the CPU, measured with measure_activation_memory() below (peak resident memory above
# the level before the call, sampled every 5 ms) on 2 CPU cores, torch 2.x:
#   no gradients: 0.36 GB;   with gradients w.r.t. the input, forward + backward: 1.97 GB
#   (the tensors autograd saves: 2.07 GB, of which 0.37 GB are the weights themselves).
# float32 is an upper bound for float16 autocast (half the bytes for convolution outputs, float32 normalisations).
ACTIVATION_GB_NO_GRAD = 0.36
ACTIVATION_GB_GRAD = 1.97
WEIGHTS_GB = 0.374         # 93.6 M float32 parameters
AUTOCAST_COPY_GB = 0.187   # the float16 copy of the weights that autocast caches inside a forward pass
CUDA_CONTEXT_GB = 0.5      # CUDA context and cuDNN workspace (assumed; not counted by torch's allocator)
LIMITS = dict(notebook_minutes=10.0, notebook_gpu_gb=12.0, cell_minutes=3.0, cell_cpu_gb=4.0)


def t4_minutes(forward_images: int, backward_images: int) -> float:
    """Estimated T4 minutes of the network for these counts (cost model above)."""
    return (forward_images + BACKWARD_FACTOR * backward_images) * GFLOP_PER_FORWARD / (T4_TFLOPS * 1e3) / 60


def gpu_peak_gb(max_batch_no_grad: int, max_batch_grad: int) -> float:
    """Estimated peak GPU memory (GB) for the largest batches through the network without and with gradients."""
    activations = max(max_batch_no_grad * ACTIVATION_GB_NO_GRAD, max_batch_grad * ACTIVATION_GB_GRAD)
    return WEIGHTS_GB + AUTOCAST_COPY_GB + CUDA_CONTEXT_GB + activations


# ---- the stand-in network ----

@dataclasses.dataclass
class Counts:
    """Images through the network: forward passes without and with gradients, backward passes, largest batches."""

    forward_images: int = 0
    forward_images_grad: int = 0
    backward_images: int = 0
    max_batch_no_grad: int = 0
    max_batch_grad: int = 0

    @property
    def all_forward_images(self) -> int:
        return self.forward_images + self.forward_images_grad


class _CountBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, counts: Counts) -> torch.Tensor:
        ctx.counts = counts
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.counts.backward_images += grad.shape[0]
        return grad, None


class StandInADM(torch.nn.Module):
    """A zero-cost network with the interface of ffhq256's ADM U-Net: ``forward(x, t)`` with ``x`` of shape
    ``(B, 3, 256, 256)`` and ``t`` of shape ``(B,)`` returns ``(B, 6, 256, 256)``; no weights but a dtype anchor.

    Its eps (the first 3 channels) is :math:`\\sqrt{1 - \\bar\\alpha_t}\\, x_t`, the exact noise prediction for a
    standard-normal prior on :math:`x_0` (so :math:`\\hat x_0 = \\sqrt{\\bar\\alpha_t} x_t` stays bounded and the
    samplers' arithmetic runs on sensible values); the variance channels are zeros. Differentiable in ``x``; every
    call and every backward pass through it is counted in ``self.counts``.
    """

    def __init__(self, image_size: int = 256):
        from helpers.paper_models import ADMConfig
        from helpers.schedule import linear_schedule

        super().__init__()
        self.config = ADMConfig(image_size=image_size)
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.register_buffer("sqrt_one_minus_alpha_bar", (1 - linear_schedule().alpha_bar).sqrt().float())
        self.counts = Counts()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size) or t.shape != (x.shape[0],):
            raise ValueError(f"the stand-in takes x of shape (B, 3, {size}, {size}) and t of shape (B,), like "
                             f"ffhq256's ADM U-Net; got {tuple(x.shape)} and {tuple(t.shape)}.")
        batch = x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.counts.forward_images_grad += batch
            self.counts.max_batch_grad = max(self.counts.max_batch_grad, batch)
            x = _CountBackward.apply(x, self.counts)
        else:
            self.counts.forward_images += batch
            self.counts.max_batch_no_grad = max(self.counts.max_batch_no_grad, batch)
        eps = self.sqrt_one_minus_alpha_bar.to(x)[t.long()].view(-1, 1, 1, 1) * x
        return torch.cat([eps, torch.zeros_like(x)], dim=1)


def stand_in_model(device: str = "cpu"):
    """``ffhq256``'s stand-in as :func:`helpers.models.load_model` would return it (float32, no fast path)."""
    from helpers import models, paper_models

    adm = StandInADM()
    model = models.wrap_network("ffhq256 (zero-cost stand-in)", paper_models.EpsilonOfLearnedSigma(adm), 256, device,
                                fast=False)
    return model, adm.counts


# ---- measuring the CPU side and the activation constants ----

class PeakRSS:
    """Peak resident memory of this process while the block runs, above its level at entry (bytes), sampled every
    ``interval`` seconds from ``/proc/self/statm`` by a background thread."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def grown(self) -> int:
        return self.peak - self.start


def measure_activation_memory() -> dict[str, float]:
    """One 256x256 image through the real-size ADM U-Net (random weights, float32) on the CPU: peak memory above the
    baseline without gradients, and with gradients w.r.t. the input (forward + backward, as in a DPS step), in GB."""
    from helpers import paper_models

    torch.manual_seed(0)
    adm = paper_models.build_adm_unet(paper_models.FFHQ256_ARCHITECTURE).requires_grad_(False)
    x, t = torch.randn(1, 3, 256, 256), torch.tensor([500])
    start = time.perf_counter()
    with torch.no_grad(), PeakRSS() as no_grad:
        adm(x, t)
    seconds = time.perf_counter() - start
    saved: dict[int, int] = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    x_grad = x.clone().requires_grad_()
    with torch.enable_grad(), PeakRSS() as with_grad:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = adm(x_grad, t)
        torch.autograd.grad(out[:, :3].pow(2).sum(), x_grad)
    return {"weights_gb": sum(p.numel() * p.element_size() for p in adm.parameters()) / 1e9,
            "no_grad_gb": no_grad.grown / 1e9, "grad_gb": with_grad.grown / 1e9,
            "grad_saved_tensors_gb": sum(saved.values()) / 1e9, "forward_seconds": seconds}


# ---- executing a notebook ----

@dataclasses.dataclass
class CellReport:
    index: int
    first_line: str
    counts: Counts
    cpu_seconds: float
    cpu_gb: float
    error: str | None

    @property
    def t4_minutes(self) -> float:
        return t4_minutes(self.counts.all_forward_images, self.counts.backward_images)


@dataclasses.dataclass
class NotebookReport:
    name: str
    cells: list[CellReport]
    skipped: str | None = None

    def total(self) -> Counts:
        total = Counts()
        for cell in self.cells:
            total.forward_images += cell.counts.forward_images
            total.forward_images_grad += cell.counts.forward_images_grad
            total.backward_images += cell.counts.backward_images
            total.max_batch_no_grad = max(total.max_batch_no_grad, cell.counts.max_batch_no_grad)
            total.max_batch_grad = max(total.max_batch_grad, cell.counts.max_batch_grad)
        return total

    @property
    def t4_minutes(self) -> float:
        return sum(cell.t4_minutes for cell in self.cells)

    @property
    def gpu_gb(self) -> float:
        total = self.total()
        return gpu_peak_gb(total.max_batch_no_grad, total.max_batch_grad)

    def violations(self) -> list[str]:
        """What breaks the limits, one line each (empty: within them)."""
        if self.skipped:
            return []
        problems = []
        if self.t4_minutes > LIMITS["notebook_minutes"]:
            problems.append(f"{self.name}: {self.t4_minutes:.1f} T4 minutes > {LIMITS['notebook_minutes']:g}")
        if self.gpu_gb > LIMITS["notebook_gpu_gb"]:
            problems.append(f"{self.name}: {self.gpu_gb:.1f} GB of GPU memory > {LIMITS['notebook_gpu_gb']:g}")
        for cell in self.cells:
            where = f"{self.name} cell {cell.index} ({cell.first_line!r})"
            if cell.t4_minutes > LIMITS["cell_minutes"]:
                problems.append(f"{where}: {cell.t4_minutes:.1f} T4 minutes > {LIMITS['cell_minutes']:g}")
            if cell.cpu_gb > LIMITS["cell_cpu_gb"]:
                problems.append(f"{where}: grew the CPU process by {cell.cpu_gb:.1f} GB > {LIMITS['cell_cpu_gb']:g}")
            if cell.error is not None and not cell.error.startswith("AssertionError"):
                problems.append(f"{where}: raised {cell.error}")
        return problems


def uses_plan(notebook: dict) -> bool:
    return any("plan.run_plan(" in "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")


@contextlib.contextmanager
def gpu_plan_environment(counts_sink: list):
    """``models.load_model`` returns the stand-in (its counts appended to ``counts_sink``); ``plan.run_plan`` answers
    as on CUDA. Restored on exit."""
    from helpers import models, plan

    original_load, original_plan = models.load_model, plan.run_plan

    def load_stand_in(name="auto", device="auto", fast=None, compile=False, cache_dir=None):
        model, counts = stand_in_model()
        counts_sink.append(counts)
        return model

    def run_plan_as_on_cuda(model, device=None):
        return original_plan(model, device="cuda")

    models.load_model, plan.run_plan = load_stand_in, run_plan_as_on_cuda
    try:
        yield
    finally:
        models.load_model, plan.run_plan = original_load, original_plan


def audit_notebook(path: pathlib.Path, workdir: pathlib.Path, echo: bool = False) -> NotebookReport:
    """Run one notebook under the GPU plan with the stand-in, in ``workdir/notebooks`` (figures land in
    ``workdir/figures``); return its per-cell report. A notebook that does not call ``plan.run_plan`` is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.core.interactiveshell import InteractiveShell

    notebook = json.loads(path.read_text())
    if not uses_plan(notebook):
        return NotebookReport(path.stem, [], skipped="does not call plan.run_plan yet")
    (workdir / "notebooks").mkdir(parents=True, exist_ok=True)
    (workdir / "figures").mkdir(exist_ok=True)
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    counts_sink: list[Counts] = []
    cells, cwd = [], os.getcwd()
    os.chdir(workdir / "notebooks")
    try:
        with gpu_plan_environment(counts_sink):
            for index, cell in enumerate(notebook["cells"]):
                if cell["cell_type"] != "code":
                    continue
                source = "".join(cell["source"])
                before = [dataclasses.replace(c) for c in counts_sink]
                output = io.StringIO()
                start = time.perf_counter()
                with PeakRSS() as memory, contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                    result = shell.run_cell(source, store_history=False)
                seconds = time.perf_counter() - start
                plt.close("all")
                error = result.error_in_exec or result.error_before_exec
                delta = Counts()
                for i, counts in enumerate(counts_sink):
                    old = before[i] if i < len(before) else Counts()
                    delta.forward_images += counts.forward_images - old.forward_images
                    delta.forward_images_grad += counts.forward_images_grad - old.forward_images_grad
                    delta.backward_images += counts.backward_images - old.backward_images
                    delta.max_batch_no_grad = max(delta.max_batch_no_grad, counts.max_batch_no_grad)
                    delta.max_batch_grad = max(delta.max_batch_grad, counts.max_batch_grad)
                    counts.max_batch_no_grad = counts.max_batch_grad = 0  # per cell
                first_line = next((line for line in source.splitlines() if line and not line.startswith("#")), "")
                report = CellReport(index, first_line[:60], delta, seconds, memory.grown / 1e9,
                                    None if error is None else f"{type(error).__name__}: {str(error)[:300]}")
                cells.append(report)
                if echo:
                    print(f"  cell {index:2d}: {report.t4_minutes:5.2f} T4 min, {delta.all_forward_images:6d} fwd "
                          f"{delta.backward_images:6d} bwd, CPU {seconds:5.1f} s {report.cpu_gb:4.2f} GB"
                          + (f"  [{report.error[:100]}]" if report.error else ""), flush=True)
    finally:
        os.chdir(cwd)
        shell.reset(new_session=False)
        gc.collect()
    return NotebookReport(path.stem, cells)


def format_table(reports: list[NotebookReport]) -> str:
    lines = [f"T4 estimate: {GFLOP_PER_FORWARD:g} GFLOP per forward, backward = {BACKWARD_FACTOR:g} x forward, "
             f"{T4_TFLOPS:g} TFLOP/s sustained (assumed; float16 autocast). GPU memory: weights {WEIGHTS_GB:g} + "
             f"autocast copy {AUTOCAST_COPY_GB:g} + context {CUDA_CONTEXT_GB:g} GB + largest batch x "
             f"{ACTIVATION_GB_NO_GRAD:g} GB (no grad) or {ACTIVATION_GB_GRAD:g} GB (grad) per image.",
             "| notebook | forward images (no grad + grad) | backward images | largest batch no grad / grad "
             "| T4 minutes | slowest cell (T4 min) | GPU GB | CPU: wall s, largest cell growth GB | cells raising |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        if r.skipped:
            lines.append(f"| {r.name} | skipped: {r.skipped} | | | | | | | |")
            continue
        total = r.total()
        slowest = max(r.cells, key=lambda c: c.t4_minutes)
        raising = [f"{c.index} ({c.error.split(':')[0]})" for c in r.cells if c.error]
        lines.append(f"| {r.name} | {total.forward_images} + {total.forward_images_grad} | {total.backward_images} | "
                     f"{total.max_batch_no_grad} / {total.max_batch_grad} | {r.t4_minutes:.1f} | "
                     f"{slowest.t4_minutes:.1f} (cell {slowest.index}) | {r.gpu_gb:.1f} | "
                     f"{sum(c.cpu_seconds for c in r.cells):.0f}, {max(c.cpu_gb for c in r.cells):.2f} | "
                     f"{', '.join(raising) or '-'} |")
    return "\n".join(lines)


def audit(paths: list[pathlib.Path], echo: bool = False) -> list[NotebookReport]:
    """Audit each notebook in its own temporary working copy; return the reports."""
    reports = []
    for path in paths:
        if echo:
            print(f"{path.name}:", flush=True)
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="audit_gpu_plan_"))
        try:
            reports.append(audit_notebook(path, workdir, echo=echo))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path,
                        default=sorted((REPO / "notebooks").glob("0*.ipynb")))
    parser.add_argument("--measure-activations", action="store_true",
                        help="re-measure the activation constants on the real-size ADM U-Net and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.measure_activations:
        print(measure_activation_memory())
        return 0
    reports = audit(args.notebooks, echo=True)
    print(format_table(reports))
    problems = [line for r in reports for line in r.violations()]
    skipped = [r.name for r in reports if r.skipped]
    if skipped:
        print(f"skipped (no plan.run_plan yet): {', '.join(skipped)}")
    print("\n".join(["beyond the limits:", *problems]) if problems else "every audited notebook within the limits")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
