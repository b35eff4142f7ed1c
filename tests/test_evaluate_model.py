"""scripts/evaluate_model.py and scripts/export_model.py on tiny random models and a few synthetic "held-out" images:
two models see identical (t, eps) draws (a model against itself differs by exactly 0), the bands partition [0, T),
the printout has every part, bad inputs fail with a message that names the parameter; the export writes a card
that states what was measured."""
import importlib.util
import json
import pathlib
import shutil
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.models import load_model_from_folder
from conftest import TINY_UNET_CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = ["--draws-per-band", "1", "--batch-size", "5", "--sample-steps", "2", "--threads", "1"]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluate_model():
    module = load_script("evaluate_model")
    yield module
    sys.modules.pop("evaluate_model", None)


@pytest.fixture(scope="module")
def held_out_zip(tmp_path_factory):
    """Four smooth 178 x 218 RGB images named like CelebA's held-out identities, and one training identity."""
    path = tmp_path_factory.mktemp("data") / "celeba-tiny.zip"
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.linspace(0, 1, 218), np.linspace(0, 1, 178), indexing="ij")
    with zipfile.ZipFile(path, "w") as z:
        for k, name in enumerate(["celeb_180/1.png", "celeb_180/2.png", "celeb_195/3.png", "celeb_199/4.png",
                                  "celeb_17/5.png"]):
            image = np.stack([i * (k + 1) / 5, j, 0.5 + 0.3 * np.sin(6 * i + k)], axis=-1)
            image = ((image + 0.05 * rng.random(image.shape)).clip(0, 1) * 255).astype(np.uint8)
            png = path.parent / f"{k}.png"
            Image.fromarray(image).save(png)
            z.write(png, f"celeba-6k/{name}")
    return path


@pytest.fixture(scope="module")
def other_tiny_dir(tiny_unet, tmp_path_factory):
    """Another tiny model: ``tiny_unet`` with its weights perturbed."""
    from diffusers import UNet2DModel

    other = UNet2DModel.from_config(tiny_unet.config)
    other.load_state_dict(tiny_unet.state_dict())
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("other_tiny")
    other.save_pretrained(folder)
    return folder


def test_bands_partition_zero_to_T(evaluate_model):
    evaluate_model.check_bands(evaluate_model.BANDS, 1000)
    weights = evaluate_model.band_weights(evaluate_model.BANDS, 1000)
    assert weights.sum() == pytest.approx(1.0)
    covered = torch.cat([torch.arange(low, high) for low, high in evaluate_model.BANDS])
    assert torch.equal(covered, torch.arange(1000))  # every t once, in order
    for bad in [((0, 100), (150, 1000)), ((0, 100), (50, 1000)), ((1, 1000),), ((0, 100), (100, 999))]:
        with pytest.raises(ValueError, match="bands must"):
            evaluate_model.check_bands(bad, 1000)


def test_draws_lie_in_their_bands_and_depend_only_on_the_seed(evaluate_model):
    t, eps = evaluate_model.loss_draws(50, (3, 8, 8), 3, 1000, seed=0)
    assert t.shape == (50, 4, 3) and eps.shape == (50, 4, 3, 3, 8, 8)
    for b, (low, high) in enumerate(evaluate_model.BANDS):
        assert low <= int(t[:, b].min()) and int(t[:, b].max()) < high
    t2, eps2 = evaluate_model.loss_draws(50, (3, 8, 8), 3, 1000, seed=0)
    assert torch.equal(t, t2) and torch.equal(eps, eps2)


def test_a_model_against_itself_differs_by_exactly_zero(evaluate_model, tiny_unet_dir):
    """Two separately loaded copies of one model: identical (t, eps) draws give identical losses and x0_hat."""
    old, new = (load_model_from_folder(tiny_unet_dir, device="cpu") for _ in range(2))
    x0 = torch.rand(6, 3, 8, 8) * 2 - 1
    t, eps = evaluate_model.loss_draws(6, (3, 8, 8), 2, old.T, seed=0)
    losses = evaluate_model.denoising_losses({"old": old, "new": new}, x0, t, eps, batch_size=5)
    assert losses["old"].shape == (6, 4, 2)
    assert torch.equal(losses["new"] - losses["old"], torch.zeros(6, 4, 2, dtype=torch.float64))
    rows = evaluate_model.evaluate({"old": old, "new": new}, x0, batch_size=4)
    assert [row["t"] for row in rows] == [50, 100, 200, 400]
    assert all(torch.equal(row["x0_hat"]["old"], row["x0_hat"]["new"]) for row in rows)


def test_the_losses_do_not_depend_on_the_batch_size(evaluate_model, tiny_model):
    x0 = torch.rand(5, 3, 8, 8) * 2 - 1
    t, eps = evaluate_model.loss_draws(5, (3, 8, 8), 2, tiny_model.T, seed=3)
    one = evaluate_model.denoising_losses({"m": tiny_model}, x0, t, eps, batch_size=1)["m"]
    many = evaluate_model.denoising_losses({"m": tiny_model}, x0, t, eps, batch_size=40)["m"]
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-7)
    # the loss is the training objective: mean over pixels of (eps - eps_theta(x_t, t))^2 with x_t by eq. 3
    from helpers.schedule import add_noise
    x_t = add_noise(x0[:1], eps[0, 2, 1][None], t[0, 2, 1], tiny_model.alpha_bar.float())
    expected = ((eps[0, 2, 1] - tiny_model.eps(x_t, t[0, 2, 1])[0]) ** 2).mean()
    assert float(one[0, 2, 1]) == pytest.approx(float(expected), rel=1e-5)


def test_two_models_print_the_whole_comparison(evaluate_model, held_out_zip, tiny_unet_dir, other_tiny_dir,
                                              tmp_path, capsys):
    code = evaluate_model.main(["--data", str(held_out_zip), "--old", str(tiny_unet_dir), "--new",
                                str(other_tiny_dir), "--samples-dir", str(tmp_path / "samples"), *FAST])
    out = capsys.readouterr().out
    assert code == 1  # random models fail the bars, and the exit status says so
    assert "Held-out evaluation: 4 faces" in out  # celeb_17 is a training identity, not read
    for band in ("0-99", "100-299", "300-599", "600-999", "all t"):
        assert f"\n{band} " in out
    assert "new - old (paired)" in out and "< -3 SE" in out
    for t in (50, 100, 200, 400):
        assert f"\n{t:>4} " in out
    assert "Samples: 64 per model, DDPM (helpers.sampling.ddpm_sample) with 2 respaced steps" in out
    assert "bar (new vs old, issue 11)" in out and "bar (old)" in out and "bar (new)" in out
    for label in ("old", "new"):
        with Image.open(tmp_path / "samples" / f"samples_{label}.png") as grid:
            assert grid.size == (8 * 8 * 12, 8 * 8 * 12)  # 8 x 8 images of 8 px, enlarged 12 times


def test_the_same_folder_twice_gives_zero_differences_in_the_printout(evaluate_model, held_out_zip, tiny_unet_dir,
                                                                      capsys):
    evaluate_model.main(["--data", str(held_out_zip), "--old", str(tiny_unet_dir), "--new", str(tiny_unet_dir),
                         "--skip-samples", *FAST])
    out = capsys.readouterr().out
    assert "Samples: skipped (--skip-samples)" in out
    loss_lines = [line for line in out.splitlines() if line.split(" ")[0] in
                  ("0-99", "100-299", "300-599", "600-999", "all")]
    assert len(loss_lines) == 5
    assert all("+0.000000 ±0.000000" in line for line in loss_lines), loss_lines
    gain_lines = [line for line in out.splitlines() if line[:4].strip() in ("50", "100", "200", "400")]
    assert len(gain_lines) == 4 and all(line.rstrip().endswith("+0.000 ±0.000") for line in gain_lines), gain_lines


def test_one_model_prints_no_comparison(evaluate_model, held_out_zip, tiny_unet_dir, capsys):
    evaluate_model.main(["--data", str(held_out_zip), "--model-dir", str(tiny_unet_dir), "--skip-samples", *FAST])
    out = capsys.readouterr().out
    assert "model:" in out and "new - old" not in out and "bar (model)" in out


@pytest.mark.parametrize("which", ["--old", "--new"])
def test_a_missing_folder_is_named(evaluate_model, held_out_zip, tiny_unet_dir, tmp_path, which):
    args = {"--old": str(tiny_unet_dir), "--new": str(tiny_unet_dir), which: str(tmp_path / "nowhere")}
    with pytest.raises(FileNotFoundError, match=f"{which}.*nowhere.*no such folder; expected a diffusers model "
                                                f"folder holding config.json"):
        evaluate_model.main(["--data", str(held_out_zip), *sum(args.items(), ()), "--skip-samples", *FAST])


def test_a_folder_that_is_not_a_model_is_named(evaluate_model, held_out_zip, tiny_unet_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match=r"--old .* is not a model folder: it has no config.json and no "
                                         r"diffusion_pytorch_model.safetensors"):
        evaluate_model.main(["--data", str(held_out_zip), "--old", str(tmp_path), "--new", str(tiny_unet_dir), *FAST])
    broken = tmp_path / "broken"
    shutil.copytree(tiny_unet_dir, broken)
    (broken / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "block_out_channels": [4]}))
    with pytest.raises(ValueError, match="--model-dir/--new .*broken.* could not be loaded"):
        evaluate_model.main(["--data", str(held_out_zip), "--new", str(broken), *FAST])


def test_bad_data_and_options_are_named(evaluate_model, tiny_unet_dir, tmp_path, held_out_zip, capsys):
    with pytest.raises(FileNotFoundError, match="--data .*nowhere.zip"):
        evaluate_model.main(["--data", str(tmp_path / "nowhere.zip"), "--new", str(tiny_unet_dir), *FAST])
    with pytest.raises(ValueError, match=r"--sample-steps must be between 1 and T = 1000; got 1001"):
        evaluate_model.main(["--data", str(held_out_zip), "--new", str(tiny_unet_dir), *FAST,
                             "--sample-steps", "1001"])
    with pytest.raises(SystemExit):
        evaluate_model.main(["--data", str(held_out_zip), "--draws-per-band", "0"])
    assert "--draws-per-band must be a positive integer; got '0'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def export_model():
    load_script("evaluate_model")
    module = load_script("export_model")
    yield module
    sys.modules.pop("export_model", None)


@pytest.fixture(scope="module")
def warm_run(held_out_zip, tiny_unet_dir, tmp_path_factory):
    """A 3-step tiny training run warm-started from ``tiny_unet_dir`` with a cosine schedule, on the one training
    identity of ``held_out_zip``."""
    from helpers.train import train

    run = tmp_path_factory.mktemp("run")
    train(str(held_out_zip), str(run), size=8, steps=3, batch_size=2, lr=1e-3, warmup=1, lr_schedule="cosine",
          min_lr=1e-5, unet_config=dict(TINY_UNET_CONFIG), init=str(tiny_unet_dir), checkpoint_every=1, log_every=1,
          exclude=["celeba-6k/celeb_18?/*", "celeba-6k/celeb_19?/*"], crop_box=(19, 39, 159, 179))
    return run


def test_export_ships_the_run_and_writes_a_card_of_what_was_measured(export_model, warm_run, held_out_zip,
                                                                     tiny_unet_dir, tmp_path):
    target = tmp_path / "faces32"
    shutil.copytree(tiny_unet_dir, target)  # the "shipped" model, which becomes --old by default
    (target / "loss.png").write_bytes((ROOT / "helpers" / "weights" / "faces32" / "loss.png").read_bytes())
    old_weights = (target / "diffusion_pytorch_model.safetensors").read_bytes()
    args = ["--run", str(warm_run), "--data", str(held_out_zip), "--init-iterations", "4500", "--target",
            str(target), "--sample-steps", "2"]
    with pytest.raises(RuntimeError, match="not shipped: the run's step 3 fails a bar .* with --ship-anyway"):
        export_model.main(args)  # random tiny models fail the 1 dB bar against the Gaussian filter
    assert (target / "diffusion_pytorch_model.safetensors").read_bytes() == old_weights
    assert not (target / "README.md").exists()
    assert export_model.main([*args, "--ship-anyway"]) == 0
    assert (target / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (warm_run / "ema" / "diffusion_pytorch_model.safetensors").read_bytes() != old_weights
    load_model_from_folder(target, device="cpu")  # SHA256SUMS written and matching
    for name in ("samples.png", "samples_4500.png", "loss.png", "loss_0-4500.png", "evaluation.txt", "benchmark.txt",
                 "training.json"):
        assert (target / name).is_file(), name
    card = (target / "README.md").read_text()
    assert "**4,503 iterations** at batch 2" in card and "Iterations 4,501 to 4,503 (3 steps)" in card
    assert f"warm-started from the 4,500-iteration EMA weights (`{tiny_unet_dir}`)" in card
    assert "linear warm-up over 1 steps to 0.001, then a cosine decay to 1e-05 at the run's step 3;" in card
    assert "EMA of the weights (decay 0.999 with warm-up: min(0.999, 1 - (1 + step)^-0.75)" in card
    assert "bfloat16" not in card  # the run did not use it
    assert "stopped at" not in card  # the run finished
    assert (target / "evaluation.txt").read_text().strip() in card and "new - old (paired)" in card
    assert f"{target} (before this export)" in card and f"{warm_run}/ema at step 3" in card
    assert "2 respaced steps, variance beta_tilde" in card
    assert (target / "benchmark.txt").read_text().strip() in card
    # --card-only rewrites the same card from the exported files, whatever the run does meanwhile
    (target / "README.md").unlink()
    assert export_model.main(["--run", str(tmp_path / "gone"), "--target", str(target), "--card-only"]) == 0
    assert (target / "README.md").read_text() == card


def test_export_refuses_unclear_iterations_and_non_runs(export_model, warm_run, held_out_zip, tmp_path):
    with pytest.raises(ValueError, match=r"--init-iterations is required: the run .* was warm-started from"):
        export_model.main(["--run", str(warm_run), "--data", str(held_out_zip), "--target", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"--run .*nowhere.* is not a training run: it has no train_args.json"):
        export_model.main(["--run", str(tmp_path / "nowhere"), "--target", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"--old .*nowhere.*: no such folder"):
        export_model.main(["--run", str(warm_run), "--init-iterations", "4500", "--old", str(tmp_path / "nowhere"),
                           "--target", str(tmp_path / "target")])
    assert not (tmp_path / "target").exists()  # nothing written before the inputs are checked
    with pytest.raises(FileNotFoundError, match="--card-only needs .*training.json"):
        export_model.main(["--target", str(tmp_path), "--card-only"])


def test_a_snapshot_whose_ema_is_not_the_checkpoints_is_refused(export_model, warm_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(warm_run, run)
    state = export_model.snapshot_run(run, tmp_path / "ok", attempts=1, wait_s=0)
    assert state["step"] == 3
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=False)
    checkpoint["ema"]["shadow_params"][0] += 1  # as if the run had written a newer checkpoint.pt meanwhile
    torch.save(checkpoint, run / "checkpoint.pt")
    with pytest.raises(RuntimeError, match="could not copy a consistent ema/ \\+ checkpoint.pt"):
        export_model.snapshot_run(run, tmp_path / "bad", attempts=1, wait_s=0)
