"""How much each notebook runs, for the model and device in use: one place for step counts, batch and sample sizes.

Every notebook's setup cell calls ``PLAN = plan.run_plan(model)`` and prints it; its run-size cell then reads its own
part (``PLAN.posterior.num_steps``, ...). Two plans:

- :data:`EMBEDDED` for the 32 x 32 embedded model (any device): what the notebooks have always run on the CPU. Its
  values live in this one place; change them here (e.g. notebook 06's step count) and every notebook follows.
- :data:`PAPER_SCALE` for a 256 x 256 model (``ffhq256``, ``celebahq256``) on a CUDA GPU, sized so that every notebook
  runs within 10 minutes and 12 GB on Colab's free T4 (``scripts/audit_gpu_plan.py`` checks it, ``docs/gpu_plan.md``
  shows its table): no step-size search (DPS's published :math:`\\zeta`, cited below), 200 reverse steps instead of
  1000 for the posterior samplers (respaced chains use :math:`\\tilde\\beta`, ``sampling.default_variance``), the
  Monte-Carlo check of eq. 3 at 32 x 32 on the CPU, and diagnostics that keep every k-th state and run the network in
  chunks. Faster GPUs (L4, A100) finish sooner with the same plan.

Plain frozen dataclasses: a notebook reads a field, nothing is looked up by name.
"""
from __future__ import annotations

import dataclasses

import torch

PAPER_SCALE_SIZE = 256  # the image size of the paper-scale models


@dataclasses.dataclass(frozen=True)
class GettingStarted:
    """Notebook 00: ``num_samples`` DDPM samples with ``num_steps`` respaced steps."""

    num_samples: int
    num_steps: int


@dataclasses.dataclass(frozen=True)
class ForwardProcess:
    """Notebook 01: the Monte-Carlo check of eq. 3 against eq. 2 iterated.

    ``num_draws`` chains per check, checked after each of ``check_steps`` steps, on the test image resized to
    ``mc_image_size`` and computed on ``mc_device`` (float64). Eq. 3 holds per pixel whatever the resolution, so
    the check runs at 32 x 32 on the CPU for every model: at 256 x 256 it would take hours and ~8 GB of RAM.
    """

    num_draws: int
    check_steps: tuple[int, ...]
    mc_image_size: int
    mc_device: str


@dataclasses.dataclass(frozen=True)
class X0Identities:
    """Notebook 02: eq. 7 = eq. 5 on ``num_checks`` images at ``check_t``; the pseudocode erratum demonstrated on
    ``num_demo`` samples x 2 samplers x all T steps (the erratum is a single-step effect, so never respaced)."""

    num_checks: int
    check_t: tuple[int, ...]
    num_demo: int


@dataclasses.dataclass(frozen=True)
class SingleStepDenoising:
    """Notebook 03: Figs. 1-2 at ``t_fig``, ``num_draws`` noise draws per claim, the PSNR sweep over
    ``sweep_points`` values of t (geometric) on the test images and ``num_model_samples`` samples drawn with
    ``sample_steps`` DDPM steps."""

    t_fig: tuple[int, ...]
    num_draws: int
    num_model_samples: int
    sample_steps: int
    sweep_points: int


@dataclasses.dataclass(frozen=True)
class DDPMSampling:
    """Notebook 04: Fig. 3 (``num_fig3`` samples x all T steps, ``gif_frames`` kept states), respaced runs at
    ``step_counts`` (beta) and ``tilde_step_counts`` (beta_tilde), a batch of ``num_batch`` x ``batch_steps``, and
    the checks against diffusers on ``num_check`` images over ``oracle_steps`` steps."""

    num_fig3: int
    gif_frames: int
    step_counts: tuple[int, ...]
    tilde_step_counts: tuple[int, ...]
    num_batch: int
    batch_steps: int
    num_check: int
    oracle_steps: int


@dataclasses.dataclass(frozen=True)
class SDEdit:
    """Notebook 05: Figs. 4-5 from ``t_fig`` with ``fig_steps`` reverse steps (``None``: all t_start + 1, as the
    paper), and the sweep over ``t_sweep`` with ``num_draws`` draws and at most ``sweep_steps`` respaced steps."""

    t_fig: tuple[int, ...]
    fig_steps: int | None
    t_sweep: tuple[int, ...]
    num_draws: int
    sweep_steps: int


@dataclasses.dataclass(frozen=True)
class PosteriorSampling:
    """Notebook 06: DPS with ``num_steps`` reverse steps, ScoreALD with ``score_ald_steps`` (one network call per step
    against DPS's forward and backward pass: twice the steps is the same compute), SDEdit with ``sdedit_steps``;
    evaluation on
    ``eval_names`` + ``num_eval_samples`` model samples, each measured once and reconstructed ``num_draws`` times
    with independent sampler noise; tuning samples (``num_tune_samples``, all samples drawn with ``sample_steps``
    DDPM steps); the posterior mean of ``mean_samples`` DPS samples per evaluation face.

    ``tune``: search the step sizes on the tuning samples, with common random numbers (``search_gamma`` for
    ScoreALD's scale, ``search_zeta_1000`` for DPS, ``search_t_start`` for SDEdit, ``search_lam`` for the Tikhonov
    baseline; then a finer grid around the best), or use ``zeta_1000`` (DPS's published :math:`\\zeta` per task, in
    1000-step units; the notebook rescales by ``T / num_steps``), ``gamma`` (ScoreALD's scale), ``t_start``
    (SDEdit's start) and ``lam`` (the baseline's weight) as they are. ``keep_every``: the misfit diagnostic keeps
    every k-th state of the demo run; ``network_chunk``: images per network call when it evaluates them.
    """

    num_steps: int
    score_ald_steps: int
    t_start: int | None
    sdedit_steps: int
    sigma_y: float
    eval_names: tuple[str, ...]
    num_eval_samples: int
    num_draws: int
    num_tune_samples: int
    sample_steps: int
    check_steps: int
    mean_samples: int
    tune: bool
    search_gamma: tuple[float, ...]
    search_zeta_1000: tuple[float, ...]
    search_t_start: tuple[int, ...]
    search_lam: tuple[float, ...]
    zeta_1000: dict[str, float] | None
    gamma: dict[str, float] | None
    lam: float | None
    keep_every: int
    network_chunk: int


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Each notebook's run size for one model and device; ``str(plan)`` is the lines a setup cell prints."""

    name: str
    why: str
    getting_started: GettingStarted
    forward_process: ForwardProcess
    x0_identities: X0Identities
    single_step: SingleStepDenoising
    ddpm: DDPMSampling
    sdedit: SDEdit
    posterior: PosteriorSampling

    def __str__(self) -> str:
        p = self.posterior
        step_sizes = ("searched on the tuning samples" if p.tune else
                      f"published, no search: DPS zeta_1000 {p.zeta_1000}, ScoreALD gamma {p.gamma}, SDEdit "
                      f"t_start {p.t_start}")
        return "\n".join([
            f"run plan {self.name!r}: {self.why}",
            f"  00: {self.getting_started.num_samples} samples x {self.getting_started.num_steps} steps",
            f"  01: Monte Carlo of eq. 3 with {self.forward_process.num_draws} draws at "
            f"{self.forward_process.mc_image_size}x{self.forward_process.mc_image_size} on "
            f"{self.forward_process.mc_device}",
            f"  02: erratum demo on {self.x0_identities.num_demo} sample(s) x 2 samplers x all T steps",
            f"  03: {self.single_step.num_draws} draws per claim, sweep over {self.single_step.sweep_points} t, "
            f"{self.single_step.num_model_samples} samples x {self.single_step.sample_steps} steps",
            f"  04: Fig. 3 {self.ddpm.num_fig3} x all T steps, batch {self.ddpm.num_batch} x "
            f"{self.ddpm.batch_steps} steps",
            f"  05: Figs. 4-5 with {'all' if self.sdedit.fig_steps is None else self.sdedit.fig_steps} steps, "
            f"sweep {len(self.sdedit.t_sweep)} t_start x {self.sdedit.num_draws} draws x {self.sdedit.sweep_steps} steps",
            f"  06: DPS {p.num_steps} steps, ScoreALD {p.score_ald_steps}, "
            f"{len(p.eval_names) + p.num_eval_samples} evaluation faces x {p.num_draws} draws, step sizes "
            f"{step_sizes}; misfit of every {p.keep_every}th state, {p.network_chunk} images per network call",
        ])


# ---- the embedded 32 x 32 model: the notebooks' CPU run sizes (one place; change them here) ----

EMBEDDED = RunPlan(
    name="embedded",
    why="the 32x32 embedded model: the notebooks' CPU run sizes",
    getting_started=GettingStarted(num_samples=16, num_steps=200),
    forward_process=ForwardProcess(num_draws=1000, check_steps=(1, 10, 100, 500), mc_image_size=32, mc_device="cpu"),
    x0_identities=X0Identities(num_checks=4, check_t=(1, 50, 200, 500, 999), num_demo=2),
    single_step=SingleStepDenoising(t_fig=(50, 100, 200), num_draws=8, num_model_samples=4, sample_steps=50,
                                    sweep_points=27),
    ddpm=DDPMSampling(num_fig3=3, gif_frames=40, step_counts=(10, 50, 250), tilde_step_counts=(10, 50), num_batch=16,
                      batch_steps=100, num_check=2, oracle_steps=10),
    sdedit=SDEdit(t_fig=(250, 500, 750), fig_steps=None, t_sweep=(10, 25, 50, 100, 175, 250, 375, 500, 750, 950),
                  num_draws=3, sweep_steps=50),
    # 50 DPS steps: notebook 06 within 5 minutes on 2 CPU cores; scripts/evaluate_inverse.py measures 50 vs 250
    # steps. ScoreALD gets 100, the same compute (a DPS step costs 1.9-2.3 ScoreALD steps on the CPU, measured).
    # SDEdit's candidates bracket the paper's t_start = 500 matched to 32 x 32 by signal-to-noise ratio (125;
    # notebook 05).
    posterior=PosteriorSampling(num_steps=50, score_ald_steps=100, t_start=None, sdedit_steps=50, sigma_y=0.05,
                                eval_names=("astronaut", "grace_hopper"), num_eval_samples=6, num_draws=2,
                                num_tune_samples=4, sample_steps=100, check_steps=10, mean_samples=4, tune=True,
                                search_gamma=(1.2, 1.5, 2.0, 3.0), search_zeta_1000=(0.03, 0.1, 0.3, 1.0),
                                search_t_start=(10, 25, 50, 100, 200, 400), search_lam=(0.003, 0.01, 0.03, 0.1),
                                zeta_1000=None, gamma=None, lam=None, keep_every=1, network_chunk=64),
)

# DPS's published step sizes for FFHQ 256 x 256 with 1000 steps ("scale" under conditioning.params), from
# github.com/DPS2022/diffusion-posterior-sampling at commit 4962d6e (gaussian_deblur_config.yaml also at a1c8107):
DPS_ZETA_1000 = {
    "box": 0.5,      # configs/inpainting_config.yaml: scale 0.5 (the box mask, mask_len_range (128, 129))
    "random": 0.5,   # configs/inpainting_config.yaml: scale 0.5 (the random mask, mask_prob_range (0.3, 0.7))
    "blur": 0.3,     # configs/gaussian_deblur_config.yaml: scale 0.3 (kernel_size 61, intensity 3.0)
}
# ScoreALD has no published setting for these tasks: the scale of notebook 06's demo and slider (not tuned at 256).
SCORE_ALD_GAMMA = {"box": 1.5, "random": 1.5, "blur": 1.5}

# ---- a 256 x 256 model on a CUDA GPU: sized for Colab's T4 (scripts/audit_gpu_plan.py) ----

PAPER_SCALE = RunPlan(
    name="paper-scale",
    why="a 256x256 model on a CUDA GPU, sized for a Colab T4 (<= 10 min and <= 12 GB per notebook, "
        "scripts/audit_gpu_plan.py)",
    getting_started=GettingStarted(num_samples=16, num_steps=100),
    forward_process=ForwardProcess(num_draws=1000, check_steps=(1, 10, 100, 500), mc_image_size=32, mc_device="cpu"),
    x0_identities=X0Identities(num_checks=4, check_t=(1, 50, 200, 500, 999), num_demo=1),
    single_step=SingleStepDenoising(t_fig=(50, 100, 200), num_draws=8, num_model_samples=4, sample_steps=100,
                                    sweep_points=27),
    ddpm=DDPMSampling(num_fig3=3, gif_frames=40, step_counts=(10, 50, 250), tilde_step_counts=(10, 50), num_batch=16,
                      batch_steps=100, num_check=2, oracle_steps=10),
    sdedit=SDEdit(t_fig=(250, 500, 750), fig_steps=None, t_sweep=(10, 25, 50, 100, 175, 250, 375, 500, 750, 950),
                  num_draws=3, sweep_steps=50),
    # ScoreALD with DPS's 200 steps, not twice as many: the T4 budget of notebook 06 (scripts/audit_gpu_plan.py).
    posterior=PosteriorSampling(num_steps=200, score_ald_steps=200, t_start=500, sdedit_steps=200, sigma_y=0.05,
                                eval_names=("astronaut", "grace_hopper"), num_eval_samples=0, num_draws=1,
                                num_tune_samples=2, sample_steps=100, check_steps=10, mean_samples=2, tune=False,
                                search_gamma=(), search_zeta_1000=(), search_t_start=(), search_lam=(),
                                zeta_1000=dict(DPS_ZETA_1000), gamma=dict(SCORE_ALD_GAMMA), lam=0.01, keep_every=5,
                                network_chunk=10),
)


def run_plan(model, device: str | torch.device | None = None) -> RunPlan:
    """The run plan for ``model`` (a :class:`helpers.models.DiffusionModel`) on ``device`` (default: the model's).

    A 256 x 256 model on CUDA: :data:`PAPER_SCALE`. The embedded 32 x 32 model (any other size), on any device:
    :data:`EMBEDDED`, except that on CUDA notebook 06 runs all T steps, as it always has (SDEdit all
    ``t_start + 1``). A 256 x 256 model off CUDA (asked for by name): :data:`PAPER_SCALE` too, and the plan says
    that it is sized for a GPU (hours on a CPU).

    Raises ``ValueError`` for something that is not a model or a device that is not one.
    """
    for attribute in ("image_size", "T", "device"):
        if not hasattr(model, attribute):
            raise ValueError(f"model must be a helpers.models.DiffusionModel (from models.load_model); got "
                             f"{type(model).__name__} without .{attribute}.")
    if device is None:
        device = model.device
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be None (the model's), 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}.") \
            from error
    if model.image_size == PAPER_SCALE_SIZE:
        if device.type == "cuda":
            return PAPER_SCALE
        return dataclasses.replace(PAPER_SCALE, why=f"a 256x256 model on {device.type}: the GPU plan, which takes "
                                                    f"hours without a CUDA GPU (a T4 runs each notebook in <= 10 min)")
    if device.type == "cuda":
        return dataclasses.replace(
            EMBEDDED, name="embedded-cuda", why="the 32x32 embedded model on a CUDA GPU: notebook 06 with all T steps",
            posterior=dataclasses.replace(EMBEDDED.posterior, num_steps=model.T, score_ald_steps=model.T,
                                          sdedit_steps=model.T))
    return EMBEDDED
