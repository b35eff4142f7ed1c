"""The paper's comparison as a table over a whole image set: inverse problems x methods, sharded with Accelerate.

For every image x task x method (x seed) it measures the image (paper eq. 8, ``op.measure``), reconstructs it and
writes one JSON line -- image id, PSNR, SSIM, LPIPS (null where its weights are unavailable), the mean |Laplacian|
of output and truth (``metrics.high_frequency``: above the truth's = grain, below = blur), run time, seed -- to
this process's own file, flushed row by row. Then the main process merges every process's rows into one table:
mean +- standard error per task x method (the measurement itself as the first baseline, the classical baseline of
the task as the second), paired differences between methods with their standard errors, the high-frequency ratio
output / truth, as text and CSV. Reference: paper Sec. IV-C, Fig. 6 and its claims; issues 10 and 17; notebook 06.

Methods: ``measurement`` (y itself), ``biharmonic`` (box, random; ``helpers.baselines``), ``tikhonov`` (blur; its
``lam``), ``sdedit`` (``t_start``; ``helpers.sampling.sdedit``), ``score_ald`` (``gamma``;
``helpers.posterior.score_ald_sample``), ``dps_paper`` (the paper's step, ``zeta_1000``) and ``dps_published``
(DPS's published step, ``zeta_1000``; both ``helpers.posterior.dps_sample``). A method that does not apply to a
task (biharmonic on blur, tikhonov on inpainting) is skipped with a note. With ``--samples K > 1`` every sampler
draws K reconstructions of each measurement and the table shows a single sample and the mean of the K next to each
other: PSNR rewards the posterior mean (the MMSE estimate), while one sample -- sharper, with plausible but invented
detail -- is what a posterior sampler is for.

One process, no launcher (CPU or one GPU)::

    python scripts/evaluate_inverse.py --data FOLDER_OR_ZIP --out runs/evaluate_inverse

N processes, each on its own device (GPUs), or N CPU processes talking gloo (``--multi_gpu`` is how Accelerate's
launcher is told to start a torchrun group; on a machine without CUDA it runs CPU processes)::

    accelerate launch --multi_gpu --num_processes N scripts/evaluate_inverse.py --data ... --out ...
    torchrun --nproc_per_node N scripts/evaluate_inverse.py --data ... --out ...

Reproducibility. The images are sorted and cut into batches of ``--batch-size`` consecutive images; batch g goes to
process g mod N. An image's measurement noise comes from a generator seeded by (seed, image id, task,
"measurement"), and its k-th sample's sampler noise from one seeded by (seed, image id, task, method, k) -- the
samplers take one generator per image -- so nothing depends on the number of processes, on which process ran an
image or on its batch-mates (tested: 2 processes give the 1-process table bit for bit).

Resumable. The settings that change results (data, crop, model and its precision, sigma_y, steps, variance, every
hyperparameter, samples, LPIPS on/off) are hashed into the run folder ``OUT/<hash>/`` (``settings.json`` inside); a
re-run with the same settings skips the rows already written, by any process count, and never mixes settings.
Images, tasks, methods and seeds are row keys, so adding some reuses what is done. ``--batch-size`` is not a
setting: it changes no noise, only (at rounding level) the network's arithmetic.

Outputs in ``OUT/<hash>/``: ``rows-<rank>-of-<N>.jsonl`` (the rows), ``table.csv``, ``pairs.csv`` (every paired
difference), ``timing.csv``, ``table.txt`` (what is printed) and, with ``--save-images``, ``images/`` (PNG per
task/method/image; do not commit reconstructions of images whose licence forbids it, e.g. CelebA).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import pathlib
import sys
import time

import torch

# ---------------------------------------------------------------------------------------------------------------
# DEFAULTS: every setting that has a default, in one place. Per-task values are {task: value}; on the command line
# pass one value for all tasks (--gamma 1.5) or per task (--gamma box=1.5,random=1.5,blur=1.2).
# The hyperparameter values below are the ones notebook 06 chose for the embedded model at 50 DPS steps and 100
# ScoreALD steps (its tuning printout, with beta_tilde and common random numbers); dps_paper's zeta was not tuned.
# ---------------------------------------------------------------------------------------------------------------
DEFAULTS = {
    "model": "faces",                  # helpers.models.load_model name: "faces", "ffhq256", "celebahq256"
    "tasks": ["box", "random", "blur"],  # helpers.operators.course_operators (sizes relative to the image)
    "methods": ["measurement", "biharmonic", "tikhonov", "sdedit", "score_ald", "dps_paper", "dps_published"],
    "sigma_y": 0.05,                   # measurement noise std, model-range units (the notebooks' and DPS's value)
    "steps": 50,                       # reverse steps of DPS (respaced from T = 1000)
    "score_ald_steps": None,           # ScoreALD's; None: 2 x steps, at most T (the same compute as DPS, see below)
    "sdedit_steps": None,              # SDEdit's steps from t_start to 0; None: min(steps, t_start + 1)
    "variance": "auto",                # "auto", per sampler: beta_tilde if it runs < T steps, else beta
    "samples": 1,                      # K reconstructions per measurement; K > 1 adds the mean of the K
    "seeds": [0],                      # each seed: a fresh measurement noise and sampler noise
    "batch_size": 8,                   # images per sampler call (x samples); changes no noise
    "crop_box": None,                  # left,top,right,bottom before resizing; None: the centred square
    "out": "runs/evaluate_inverse",    # run folders OUT/<settings hash>/ (runs/ is git-ignored)
    # per-task hyperparameters, each method's one knob
    "lam": {"blur": 0.03},                                     # tikhonov: weight of the gradient penalty
    "t_start": {"box": 10, "random": 200, "blur": 10},       # sdedit: start timestep t_0 (code index, < T)
    "gamma": {"box": 2.4, "random": 1.3, "blur": 1.2},         # score_ald: gamma scale (posterior.score_ald_gamma)
    "zeta_paper": {"box": 2.5e-4, "random": 2.5e-4, "blur": 2.5e-4},  # dps_paper: zeta_1000 (see below)
    "zeta_published": {"box": 0.1, "random": 0.17, "blur": 0.3},       # dps_published: zeta_1000 (see below)
}
# A DPS step is a forward and a backward pass of the network, a ScoreALD step one forward pass: measured on the CPU,
# a DPS step costs 1.9-2.3 ScoreALD steps (notebook 06), so by default ScoreALD runs twice DPS's steps, the same
# compute, as in notebook 06.
# Both DPS zetas are given per 1000 steps, as in notebook 06: the sampler gets zeta = zeta_1000 * T / steps (a
# respaced run takes fewer, longer steps). DPS's public configs use zeta = 0.3 (blur) and 0.5 (inpainting) at 1000.

TASKS = ("box", "random", "blur")
METHODS = ("measurement", "biharmonic", "tikhonov", "sdedit", "score_ald", "dps_paper", "dps_published")
SAMPLERS = ("sdedit", "score_ald", "dps_paper", "dps_published")  # stochastic: --samples applies
APPLIES = {"biharmonic": ("box", "random"), "tikhonov": ("blur",)}  # the rest apply to every task
CLASSICAL = {"box": "biharmonic", "random": "biharmonic", "blur": "tikhonov"}
HYPERPARAMETERS = {"tikhonov": "lam", "sdedit": "t_start", "score_ald": "gamma", "dps_paper": "zeta_paper",
                   "dps_published": "zeta_published"}
METRICS = ("psnr", "ssim", "lpips", "hf_ratio")
FORMAT = 2  # bump when the rows' meaning changes


# ---- command line ----

def _positive_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1; got {text!r}")
        return value
    return parse


def _per_task(name, kind):
    """'1.5' (every task) or 'box=1.5,blur=1.2' (those tasks) -> {task: value}."""
    def parse(text):
        try:
            if "=" not in text:
                return {task: kind(text) for task in TASKS}
            values = {}
            for part in text.split(","):
                task, value = part.split("=")
                if task.strip() not in TASKS:
                    raise argparse.ArgumentTypeError(f"{name}: unknown task {task.strip()!r} in {text!r}; tasks are "
                                                     f"{', '.join(TASKS)}")
                values[task.strip()] = kind(value)
            return values
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a {kind.__name__} for every task ('1.5') or per task "
                                             f"('box=1.5,blur=1.2'); got {text!r}") from None
    return parse


def _crop_box(text):
    from helpers.train import _parse_box
    return _parse_box(text)


def parse_args(argv=None) -> argparse.Namespace:
    d = DEFAULTS
    parser = argparse.ArgumentParser(prog="scripts/evaluate_inverse.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="folder or zip of images")
    parser.add_argument("--include", action="append", help="fnmatch pattern of image paths to use (repeatable)")
    parser.add_argument("--exclude", action="append", help="fnmatch pattern of image paths to skip (repeatable)")
    parser.add_argument("--num-images", type=_positive_int("--num-images"), default=None,
                        help="use this many images, evenly spaced over the sorted list (default: all)")
    parser.add_argument("--crop-box", type=_crop_box, default=d["crop_box"], help="left,top,right,bottom")
    parser.add_argument("--model", default=d["model"], help="helpers.models.load_model name")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=d["tasks"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=d["methods"])
    parser.add_argument("--sigma-y", type=float, default=d["sigma_y"], help="measurement noise std (model range)")
    parser.add_argument("--steps", type=_positive_int("--steps"), default=d["steps"],
                        help="reverse steps of DPS")
    parser.add_argument("--score-ald-steps", type=_positive_int("--score-ald-steps"), default=d["score_ald_steps"],
                        help="reverse steps of ScoreALD (default: 2 x --steps, at most T: the same compute as DPS)")
    parser.add_argument("--sdedit-steps", type=_positive_int("--sdedit-steps"), default=d["sdedit_steps"],
                        help="SDEdit's steps (default: min(steps, t_start + 1))")
    parser.add_argument("--variance", choices=("auto", "beta", "beta_tilde"), default=d["variance"],
                        help="the reverse steps' noise variance; auto: per sampler, beta_tilde if it runs fewer "
                             "than T steps, else beta")
    parser.add_argument("--samples", type=_positive_int("--samples"), default=d["samples"],
                        help="reconstructions per measurement for the samplers; K > 1 also reports their mean")
    parser.add_argument("--seeds", nargs="+", type=int, default=d["seeds"])
    parser.add_argument("--batch-size", type=_positive_int("--batch-size"), default=d["batch_size"])
    parser.add_argument("--lam", type=_per_task("--lam", float), default={}, help=f"tikhonov; default {d['lam']}")
    parser.add_argument("--t-start", type=_per_task("--t-start", int), default={},
                        help=f"sdedit; default {d['t_start']}")
    parser.add_argument("--gamma", type=_per_task("--gamma", float), default={},
                        help=f"score_ald; default {d['gamma']}")
    parser.add_argument("--zeta-paper", type=_per_task("--zeta-paper", float), default={},
                        help=f"dps_paper, per 1000 steps; default {d['zeta_paper']}")
    parser.add_argument("--zeta-published", type=_per_task("--zeta-published", float), default={},
                        help=f"dps_published, per 1000 steps; default {d['zeta_published']}")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (written as null)")
    parser.add_argument("--save-images", action="store_true", help="save every reconstruction as PNG")
    parser.add_argument("--out", default=d["out"], help="folder of run folders")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is available")
    parser.add_argument("--threads", type=_positive_int("--threads"), default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    for key in HYPERPARAMETERS.values():  # command-line values override the defaults task by task
        setattr(args, key, {**d[key], **getattr(args, key)})
    if not (args.sigma_y >= 0 and math.isfinite(args.sigma_y)):
        parser.error(f"--sigma-y must be a finite number >= 0 (model-range units, e.g. 0.05); got {args.sigma_y!r}")
    if "dps_paper" in args.methods and args.sigma_y == 0:
        parser.error("--sigma-y must be > 0 for method dps_paper (its step is zeta / (2 sigma_y^2)); got 0. Use "
                     "dps_published for noiseless measurements.")
    for method, key in HYPERPARAMETERS.items():
        if method not in args.methods:
            continue
        for task in args.tasks:
            if task not in APPLIES.get(method, TASKS):
                continue
            value = args.__dict__[key].get(task)
            ok = value is not None and (0 <= value < 1000 if key == "t_start" else value > 0 and math.isfinite(value))
            if not ok:
                allowed = "an integer in [0, T)" if key == "t_start" else "a finite number > 0"
                parser.error(f"--{key.replace('_', '-')} for task {task!r} must be {allowed}; got {value!r}")
    return args


# ---- settings, seeds, files ----

def resolve_settings(args, model) -> dict:
    """Everything that changes a row's numbers; hashed into the run folder (images, tasks, methods and seeds are
    row keys, free to change)."""
    for flag, value in (("--steps", args.steps), ("--score-ald-steps", args.score_ald_steps)):
        if value is not None and value > model.T:
            raise ValueError(f"{flag} must be at most the model's T = {model.T}; got {value}.")
    score_ald_steps = args.score_ald_steps or min(2 * args.steps, model.T)
    variance, score_ald_variance = (
        args.variance if args.variance != "auto" else ("beta_tilde" if steps < model.T else "beta")
        for steps in (args.steps, score_ald_steps))
    return {
        "format": FORMAT, "data": str(pathlib.Path(args.data).resolve()), "crop_box": args.crop_box,
        "model": model.name, "weights": weights_fingerprint(model), "image_size": model.image_size, "mask_seed": 0,
        "sigma_y": args.sigma_y,
        "steps": args.steps, "sdedit_steps": args.sdedit_steps, "variance": variance, "samples": args.samples,
        "score_ald_steps": score_ald_steps, "score_ald_variance": score_ald_variance,
        "network_autocast": str(model.autocast_dtype), "lpips": (not args.no_lpips),
        **{key: dict(sorted(getattr(args, key).items())) for key in HYPERPARAMETERS.values()},
    }


def weights_fingerprint(model) -> str:
    """sha256 of the network's parameters and buffers as loaded (so a re-trained model never reuses a run folder)."""
    digest = hashlib.sha256()
    for name, tensor in model.unet.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def generator_for(*key) -> torch.Generator:
    """A CPU generator seeded by a hash of ``key`` (seed, image id, task, method, ...): independent of the process
    and of the batch."""
    text = "|".join(str(k) for k in key)
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1)


def read_rows(path: pathlib.Path) -> tuple[list[dict], bool]:
    """The complete rows of a JSON-lines file, and whether it ended in an incomplete line (an interrupted write)."""
    rows, incomplete = [], False
    text = path.read_text()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line, not terminated: written when the process was stopped
                incomplete = True
            else:
                raise RuntimeError(f"{path} line {i + 1} is not a JSON row; the file is damaged. Delete it to "
                                   f"recompute its rows.") from None
    return rows, incomplete


def open_own_shard(path: pathlib.Path):
    """Open this process's file for appending, first cutting off an incomplete last line (an interrupted write)."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[:data.rfind(b"\n") + 1]
            print(f"note: {path.name} ended in an incomplete row (an interrupted run); it is dropped and recomputed.")
            path.write_bytes(keep)
    return open(path, "a", buffering=1)


def row_key(row: dict) -> tuple:
    return row["image"], row["task"], row["method"], row["seed"]


# ---- data ----

def load_image_list(args) -> list[str]:
    from helpers import train

    try:
        names = train.list_images(args.data, args.include, args.exclude)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"--data: {error}") from None
    if args.num_images is not None and args.num_images < len(names):
        step = len(names) / args.num_images
        names = [names[int(i * step)] for i in range(args.num_images)]
    return names


def read_truth(args, names: list[str], size: int) -> torch.Tensor:
    """The images ``(N, 3, size, size)`` in the model range [-1, 1]; ``ValueError`` naming a file that is not a
    readable image."""
    from PIL import UnidentifiedImageError

    from helpers import images, train

    try:
        data = train.read_images(args.data, names, size, args.crop_box)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        for name in names:  # find the culprit
            try:
                train.read_images(args.data, [name], size, args.crop_box)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                raise ValueError(f"--data: {name!r} in {args.data!r} is not a readable image ({error}); remove it or "
                                 f"skip it with --exclude.") from None
        raise
    return images.to_model_range(data.float() / 255)


# ---- one unit of work: a batch of images, one task, one method, one seed ----

def reconstruct(method: str, task: str, op, y: torch.Tensor, model, settings: dict,
                generator: list[torch.Generator], progress: bool) -> torch.Tensor:
    """Reconstructions ``(B * K, 3, S, S)`` of ``y`` (already repeated K times for the samplers; one generator per
    row of ``y``)."""
    from helpers import baselines, posterior, sampling

    if method == "measurement":
        return y
    if method == "biharmonic":
        return baselines.biharmonic_inpainting(y, op)
    if method == "tikhonov":
        return baselines.tikhonov_deblurring(y, op, settings["lam"][task])
    variance, steps = settings["variance"], settings["steps"]
    if method == "sdedit":
        t_start = settings["t_start"][task]
        num_steps = settings["sdedit_steps"] or min(steps, t_start + 1)
        return sampling.sdedit(model, y, t_start, generator, num_steps=num_steps, variance=variance, progress=progress)
    if method == "score_ald":
        x, _ = posterior.score_ald_sample(model, op, y, generator, gamma=settings["gamma"][task],
                                          sigma_y=settings["sigma_y"], num_steps=settings["score_ald_steps"],
                                          variance=settings["score_ald_variance"],
                                          progress=progress)
        return x
    key, step = ("zeta_paper", "paper") if method == "dps_paper" else ("zeta_published", "dps")
    zeta = settings[key][task] * model.T / steps
    x, _ = posterior.dps_sample(model, op, y, generator, zeta=zeta, sigma_y=settings["sigma_y"], num_steps=steps,
                                step=step, variance=variance, progress=progress)
    return x


def score(x: torch.Tensor, truth: torch.Tensor, use_lpips: bool) -> dict[str, list]:
    """Per image: PSNR, SSIM, LPIPS (None if off), high frequency of x (model range in, [0, 1] for the HF)."""
    from helpers import images, metrics

    x = x.detach().cpu().float()
    result = {"psnr": metrics.psnr(x, truth).tolist(), "ssim": metrics.ssim(x, truth).tolist(),
              "hf": metrics.high_frequency(images.to_unit_range(x)).tolist()}
    result["lpips"] = metrics.lpips(x, truth).tolist() if use_lpips else [None] * len(x)
    result["lpips"] = [None if v is None or math.isnan(v) else v for v in result["lpips"]]
    return result


def run_unit(method, task, seed, ids, truth, op, model, settings, use_lpips, progress, save_dir):
    """Rows for one batch of images: measure, reconstruct (K samples for the samplers), score."""
    from helpers import images, metrics

    start = time.perf_counter()
    # (1) the measurement, per image from (seed, image id, task): the same y for every method (paired comparisons)
    y = torch.cat([op.measure(truth[i:i + 1], settings["sigma_y"], generator_for(seed, image_id, task, "measurement"))
                   for i, image_id in enumerate(ids)])
    # (2) the reconstruction; the samplers see each measurement K times, sample j of an image with noise from its
    #     own generator (seed, image id, task, method, j)
    k = settings["samples"] if method in SAMPLERS else 1
    generator = [generator_for(seed, image_id, task, method, j) for image_id in ids for j in range(k)]
    x = reconstruct(method, task, op, y.repeat_interleave(k, dim=0).to(model.device), model, settings, generator,
                    progress).detach().cpu().float()
    seconds = (time.perf_counter() - start) / len(ids)
    # (3) scores of the first sample, and of the mean of the K
    first = score(x[::k], truth, use_lpips)
    mean = score(x.reshape(len(ids), k, *x.shape[1:]).mean(dim=1), truth, use_lpips) if k > 1 else None
    hf_truth = metrics.high_frequency(images.to_unit_range(truth)).tolist()
    rows = []
    for i, image_id in enumerate(ids):
        row = {"image": image_id, "task": task, "method": method, "seed": seed, "samples": k,
               **{name: first[name][i] for name in ("psnr", "ssim", "lpips", "hf")}, "hf_truth": hf_truth[i],
               **{f"{name}_mean": (mean[name][i] if mean else None) for name in ("psnr", "ssim", "lpips", "hf")},
               "seconds": seconds}
        rows.append(row)
        if save_dir is not None:
            stem = image_id.replace("/", "__").rsplit(".", 1)[0]
            images.save_image(x[i * k], save_dir / task / method / f"{stem}_seed{seed}.png")
            if k > 1:
                images.save_image(x[i * k:(i + 1) * k].mean(dim=0), save_dir / task / f"{method}_mean{k}" /
                                  f"{stem}_seed{seed}.png")
    return rows


# ---- the merged table ----

def lines_of(methods, samples) -> list[tuple[str, str]]:
    """The table's lines: (label, source) with source a method, or 'method:mean' for the mean of the K samples."""
    lines = []
    for method in methods:
        lines.append((method, method))
        if method in SAMPLERS and samples > 1:
            lines.append((f"{method} (mean of {samples})", f"{method}:mean"))
    return lines


def per_image_values(rows, task, source, names, seeds) -> dict[str, torch.Tensor]:
    """{metric: (n_images,) float64 tensor}, each image's value averaged over the seeds (NaN if missing)."""
    method, _, part = source.partition(":")
    suffix = "_mean" if part == "mean" else ""
    by_key = {(r["image"], r["seed"]): r for r in rows if r["task"] == task and r["method"] == method}
    values = {m: torch.zeros(len(names), dtype=torch.float64) for m in METRICS}
    for i, name in enumerate(names):
        per_seed = [by_key[(name, s)] for s in seeds]
        for metric in METRICS:
            if metric == "hf_ratio":
                v = [r["hf" + suffix] / r["hf_truth"] if r["hf_truth"] > 0 else math.nan for r in per_seed]
            else:
                v = [r[metric + suffix] for r in per_seed]
            v = [math.nan if x is None else x for x in v]
            values[metric][i] = sum(v) / len(v)
    return values


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    if torch.isnan(v).any():
        return math.nan, math.nan
    n = len(v)
    return v.mean().item(), (v.std(correction=1).item() / math.sqrt(n)) if n > 1 else math.nan


def merge(run_dir: pathlib.Path, names, tasks, methods, seeds, settings, quiet=False) -> str:
    """Read every process's rows, check they are complete, write table.csv, pairs.csv, timing.csv, table.txt."""
    rows, seen = [], {}
    for path in sorted(run_dir.glob("rows-*.jsonl")):
        shard, incomplete = read_rows(path)
        if incomplete:
            print(f"note: {path.name} ends in an incomplete row (an interrupted run); ignored.")
        for row in shard:
            key = row_key(row)
            if key in seen:
                a, b = seen[key], row
                if any(a[f] != b[f] for f in a if f not in ("seconds", "process")):
                    print(f"note: row {key} was computed twice with different results ({path.name}); the first is "
                          f"used. Results are not reproducible on this machine (e.g. a different thread count).")
                continue
            seen[key] = row
            rows.append(row)
    wanted = [(n, t, m, s) for t in tasks for m in methods if t in APPLIES.get(m, TASKS) for n in names for s in seeds]
    missing = [key for key in wanted if key not in seen]
    if missing:
        raise RuntimeError(f"{len(missing)} rows are missing from {run_dir} (e.g. {missing[0]}); run again to "
                           f"compute them.")
    rows = [seen[key] for key in wanted]
    lines = lines_of(methods, settings["samples"])
    table, pairs, timing = [], [], []
    for task in tasks:
        task_lines = [(label, source) for label, source in lines if task in APPLIES.get(source.split(":")[0], TASKS)]
        values = {label: per_image_values(rows, task, source, names, seeds) for label, source in task_lines}
        for label, source in task_lines:
            entry = {"task": task, "method": label, "images": len(names), "seeds": len(seeds)}
            for metric in METRICS:
                entry[metric], entry[f"{metric}_se"] = mean_se(values[label][metric])
            for reference in ("measurement", CLASSICAL[task]):
                if reference in values and reference != label:
                    entry[f"psnr_minus_{'measurement' if reference == 'measurement' else 'classical'}"], \
                        entry[f"psnr_minus_{'measurement' if reference == 'measurement' else 'classical'}_se"] = \
                        mean_se(values[label]["psnr"] - values[reference]["psnr"])
            table.append(entry)
            method = source.split(":")[0]
            seconds = [r["seconds"] for r in rows if r["task"] == task and r["method"] == method]
            timing.append({"task": task, "method": label, "seconds_per_image": sum(seconds) / len(seconds)})
        for i, (a, _) in enumerate(task_lines):
            for b, _ in task_lines[i + 1:]:
                pair = {"task": task, "a": a, "b": b}
                for metric in ("psnr", "ssim", "lpips"):
                    pair[f"{metric}_a_minus_b"], pair[f"{metric}_se"] = mean_se(values[a][metric] - values[b][metric])
                pairs.append(pair)
    _write_csv(run_dir / "table.csv", table)
    _write_csv(run_dir / "pairs.csv", pairs)
    _write_csv(run_dir / "timing.csv", timing)
    text = format_table(table, pairs, timing, settings, names, seeds)
    (run_dir / "table.txt").write_text(text)
    return text


def _write_csv(path, entries):
    keys = []
    for entry in entries:
        keys += [k for k in entry if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for entry in entries:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in entry.items()})


def _pm(mean, se, digits):
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(se) else f" ± {se:.{digits}f}")


def format_table(table, pairs, timing, settings, names, seeds) -> str:
    out = io.StringIO()
    out.write(f"{len(names)} images x {len(seeds)} seed(s); model {settings['model']}, "
              f"sigma_y = {settings['sigma_y']}, {settings['steps']} steps (ScoreALD {settings['score_ald_steps']}), "
              f"variance {settings['variance']}\n")
    out.write("mean ± standard error over images; Δ: paired difference in PSNR; HF ratio: mean |Laplacian| of the "
              "output / the truth's (> 1 grain, < 1 blur)\n")
    header = (f"{'task':6s} {'method':28s} {'PSNR (dB)':>15s} {'Δ vs measurement':>17s} {'Δ vs classical':>15s} "
              f"{'SSIM':>15s} {'LPIPS':>15s} {'HF ratio':>13s} {'s/image':>8s}")
    out.write(header + "\n" + "-" * len(header) + "\n")
    for entry, time_entry in zip(table, timing):
        vs_measurement = _pm(entry.get("psnr_minus_measurement", math.nan),
                             entry.get("psnr_minus_measurement_se", math.nan), 2)
        vs_classical = _pm(entry.get("psnr_minus_classical", math.nan),
                           entry.get("psnr_minus_classical_se", math.nan), 2)
        out.write(f"{entry['task']:6s} {entry['method']:28s} {_pm(entry['psnr'], entry['psnr_se'], 2):>15s} "
                  f"{vs_measurement:>17s} {vs_classical:>15s} "
                  f"{_pm(entry['ssim'], entry['ssim_se'], 3):>15s} {_pm(entry['lpips'], entry['lpips_se'], 3):>15s} "
                  f"{_pm(entry['hf_ratio'], entry['hf_ratio_se'], 2):>13s} {time_entry['seconds_per_image']:8.3f}\n")
    shown = [p for p in pairs if p["a"].split(" ")[0] in SAMPLERS and p["b"].split(" ")[0] in SAMPLERS
             and "mean of" not in p["a"] and "mean of" not in p["b"]]
    if shown:
        out.write("\npaired PSNR differences between the samplers (a - b, dB; every pair in pairs.csv)\n")
        for p in shown:
            out.write(f"{p['task']:6s} {p['a']:28s} - {p['b']:28s} {_pm(p['psnr_a_minus_b'], p['psnr_se'], 2):>15s}\n")
    return out.getvalue()


# ---- main ----

def main(argv=None) -> int:
    args = parse_args(argv)
    names = load_image_list(args)  # before starting anything: an empty folder fails here

    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from helpers import metrics, models, operators

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Accelerate forms a group of CPU processes (gloo) only when told cpu=True: without a CUDA GPU, say so
    cpu = args.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu)
    rank, world, main_process = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise RuntimeError(f"the launcher started {launched} processes but Accelerate sees {world}; they would write "
                           f"the same rows. Launch with `accelerate launch --multi_gpu --num_processes N` or torchrun.")
    with contextlib.redirect_stdout(sys.stdout if main_process else io.StringIO()):  # quiet on non-main processes
        model = models.load_model(args.model, device=accelerator.device)
    settings = resolve_settings(args, model)
    use_lpips = settings["lpips"] and metrics.lpips_available()
    if settings["lpips"] and not use_lpips:
        settings["lpips"] = False  # written as null: the hash says so, so rows with and without LPIPS never mix
        if main_process:
            print("note: LPIPS is written as null (its weights are unavailable here, see the message above).")
    run_dir = pathlib.Path(args.out) / settings_hash(settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_file = run_dir / "settings.json"
    if main_process and not settings_file.exists():
        settings_file.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    ops = operators.course_operators(model.image_size, seed=settings["mask_seed"])
    skipped = [f"{m} on {t}" for t in args.tasks for m in args.methods if t not in APPLIES.get(m, TASKS)]
    if main_process:
        print(f"{len(names)} images from {args.data}; {world} process(es) on {accelerator.device}"
              f"{' (no CUDA GPU here)' if cpu and not args.cpu else ''}; run folder {run_dir}")
        if skipped:
            print(f"note: skipped (the method does not apply to the task): {', '.join(skipped)}")

    # (1) what is done already, by any earlier run of these settings (any process count)
    done = set()
    for path in run_dir.glob("rows-*.jsonl"):
        done.update(row_key(row) for row in read_rows(path)[0])
    # (2) this process's share: batches g = rank, rank + world, ... of the sorted images
    batches = [names[i:i + args.batch_size] for i in range(0, len(names), args.batch_size)]
    mine = [(g, batch) for g, batch in enumerate(batches) if g % world == rank]
    units = [(batch_index, batch, task, method, seed) for batch_index, batch in mine for task in args.tasks
             for method in args.methods if task in APPLIES.get(method, TASKS) for seed in args.seeds
             if any((n, task, method, seed) not in done for n in batch)]
    pairs_per_batch = sum(task in APPLIES.get(m, TASKS) for task in args.tasks for m in args.methods)
    total = len(mine) * pairs_per_batch * len(args.seeds)
    # every image of this process's share, read now so that an unreadable file fails before hours of sampling
    my_names = [name for _, batch in mine for name in batch]
    my_truth = dict(zip(my_names, read_truth(args, my_names, model.image_size))) if my_names else {}
    save_dir = run_dir / "images" if args.save_images else None
    with open_own_shard(run_dir / f"rows-{rank}-of-{world}.jsonl") as shard:
        bar = tqdm(units, desc=f"process {rank}/{world}", disable=not main_process, dynamic_ncols=True)
        if main_process:
            bar.write(f"process 0: {len(units)} of its {total} units to compute ({total - len(units)} done before)")
        for batch_index, batch, task, method, seed in bar:
            bar.set_postfix_str(f"{task} {method} seed {seed}", refresh=False)
            truth = torch.stack([my_truth[name] for name in batch])
            for row in run_unit(method, task, seed, batch, truth, ops[task], model, settings, use_lpips,
                                progress=False, save_dir=save_dir):
                if row_key(row) not in done:
                    shard.write(json.dumps({**row, "process": rank}) + "\n")
                    shard.flush()
        bar.close()
    # (3) every process done: the main one merges all the rows into the table
    accelerator.wait_for_everyone()
    if main_process:
        text = merge(run_dir, names, args.tasks, args.methods, args.seeds, settings)
        print(text, end="")
        print(f"table: {run_dir / 'table.csv'} (pairs.csv, timing.csv, table.txt next to it)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
