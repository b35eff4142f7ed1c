"""scripts/evaluate_inverse.py: one process and two (gloo) give the same table bit for bit; an interrupted run
resumes; settings never mix; bad inputs fail with a message that names the parameter, the value and what is allowed.

The embedded 'faces' model at 2 steps on 3 synthetic images written to tmp_path keeps it quick."""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "evaluate_inverse.py"
# every task and method, 2 samples (so the mean-of-K path runs), 3 images in 2 batches (2 + 1)
FAST = ["--steps", "2", "--samples", "2", "--batch-size", "2", "--no-lpips", "--threads", "1",
        "--t-start", "20"]


@pytest.fixture(scope="module")
def evaluate_inverse():
    spec = importlib.util.spec_from_file_location("evaluate_inverse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_inverse"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["evaluate_inverse"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three smooth 40 x 48 RGB images with a little texture (cropped to the centred square, resized to 32)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.linspace(0, 1, 40), np.linspace(0, 1, 48), indexing="ij")
    for k in range(3):
        image = np.stack([i * (k + 1) / 3, j, 0.5 + 0.3 * np.sin(6 * i + k)], axis=-1) + 0.05 * rng.random((40, 48, 3))
        Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"face_{k}.png")
    (folder / "notes.txt").write_text("not an image, ignored by its suffix")
    return folder


@pytest.fixture(scope="module")
def one_process_run(evaluate_inverse, image_folder, tmp_path_factory):
    """The whole evaluation in this process (no launcher); returns its run folder."""
    out = tmp_path_factory.mktemp("one")
    assert evaluate_inverse.main(["--data", str(image_folder), "--out", str(out), *FAST]) == 0
    (run_dir,) = out.iterdir()
    return run_dir


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_process_writes_every_row_and_the_table(one_process_run, evaluate_inverse):
    rows = read_jsonl(one_process_run / "rows-0-of-1.jsonl")
    # 3 images x 3 tasks x 6 methods that apply to each task (measurement, its classical baseline, 4 samplers)
    assert len(rows) == 3 * 3 * 6
    assert {r["method"] for r in rows if r["task"] == "blur"} == {"measurement", "tikhonov", "sdedit", "score_ald",
                                                                   "dps_paper", "dps_published"}
    for row in rows:
        assert set(row) >= {"image", "task", "method", "seed", "psnr", "ssim", "lpips", "hf", "hf_truth", "seconds"}
        assert row["lpips"] is None  # --no-lpips: null, never a made-up number
        assert (row["psnr_mean"] is None) == (row["method"] not in evaluate_inverse.SAMPLERS)
    table = (one_process_run / "table.csv").read_text().splitlines()
    assert table[0].startswith("task,method,images,seeds,psnr,psnr_se")
    assert any(line.startswith("box,dps_published (mean of 2),3,1,") for line in table)
    settings = json.loads((one_process_run / "settings.json").read_text())
    assert one_process_run.name == evaluate_inverse.settings_hash(settings)
    assert settings["variance"] == "beta_tilde" and settings["t_start"]["blur"] == 20


@pytest.mark.slow
def test_two_gloo_processes_give_the_one_process_table_bit_for_bit(one_process_run, image_folder, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    result = subprocess.run([*launcher, str(SCRIPT), "--data", str(image_folder), "--out", str(out), *FAST],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    run_dir = out / one_process_run.name  # the same settings, so the same folder name
    assert sorted(p.name for p in run_dir.glob("rows-*")) == ["rows-0-of-2.jsonl", "rows-1-of-2.jsonl"]
    shares = [{r["image"] for r in read_jsonl(run_dir / f"rows-{k}-of-2.jsonl")} for k in range(2)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]  # disjoint shares of the images
    for name in ("table.csv", "pairs.csv"):
        assert (run_dir / name).read_bytes() == (one_process_run / name).read_bytes(), name
    drop = ("seconds", "process")
    rows = lambda d: sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True)
                            for path in d.glob("rows-*") for r in read_jsonl(path))
    assert rows(run_dir) == rows(one_process_run)


def test_an_interrupted_run_resumes_and_recomputes_only_what_is_missing(one_process_run, evaluate_inverse,
                                                                         image_folder, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(one_process_run, out / one_process_run.name)
    run_dir = out / one_process_run.name
    for name in ("table.csv", "pairs.csv", "timing.csv", "table.txt"):
        (run_dir / name).unlink()
    shard = run_dir / "rows-0-of-1.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    # as if killed while writing: the first 20 rows complete, the 21st cut in the middle
    shard.write_text("".join(lines[:20]) + lines[20][:37])
    capsys.readouterr()
    assert evaluate_inverse.main(["--data", str(image_folder), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "ended in an incomplete row" in printed
    assert "of its 36 units to compute" in printed and "of its 36 units to compute (0 done before)" not in printed
    rows = read_jsonl(shard)
    assert len(rows) == len(lines)  # nothing lost, nothing twice
    assert len({(r["image"], r["task"], r["method"], r["seed"]) for r in rows}) == len(lines)
    for name in ("table.csv", "pairs.csv"):
        assert (run_dir / name).read_bytes() == (one_process_run / name).read_bytes(), name
    # a second re-run computes nothing
    assert evaluate_inverse.main(["--data", str(image_folder), "--out", str(out), *FAST]) == 0
    assert "0 of its 36 units to compute (36 done before)" in capsys.readouterr().out


def test_different_settings_go_to_different_run_folders(evaluate_inverse, image_folder, tmp_path):
    common = ["--data", str(image_folder), "--out", str(tmp_path), "--methods", "measurement", *FAST]
    evaluate_inverse.main(common)
    evaluate_inverse.main([*common, "--sigma-y", "0.1"])
    evaluate_inverse.main([*common, "--gamma", "box=2.0"])
    assert len(list(tmp_path.iterdir())) == 3


def test_a_retrained_model_never_reuses_a_run_folder(evaluate_inverse):
    """The settings carry a fingerprint of the weights: the same model name with other weights is other settings."""
    from helpers import models
    model = models.load_model("faces", device="cpu")
    before = evaluate_inverse.weights_fingerprint(model)
    assert evaluate_inverse.weights_fingerprint(model) == before
    with torch.no_grad():
        next(model.unet.parameters()).view(-1)[0] += 1e-3
    assert evaluate_inverse.weights_fingerprint(model) != before


# ---- bad inputs ----

def test_an_empty_folder_or_one_without_images_is_refused(evaluate_inverse, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--data: no images \(.png, .jpg.*\) in .*empty"):
        evaluate_inverse.main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"--data: no images"):
        evaluate_inverse.main(["--data", str(tmp_path / "texts"), "--out", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match=r"--data: data must be a folder or a zip file"):
        evaluate_inverse.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])


def test_a_file_that_is_not_an_image_is_named(evaluate_inverse, image_folder, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(image_folder, folder)
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=r"--data: 'broken.png' in .* is not a readable image.*--exclude"):
        evaluate_inverse.main(["--data", str(folder), "--out", str(tmp_path / "out"), *FAST])


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "inpaint"], "argument --tasks: invalid choice: 'inpaint' (choose from 'box', 'random', 'blur')"),
    (["--methods", "ddim"], "argument --methods: invalid choice: 'ddim' (choose from 'measurement', 'biharmonic'"),
    (["--batch-size", "0"], "argument --batch-size: --batch-size must be an integer >= 1; got '0'"),
    (["--gamma", "blurry=1"], "argument --gamma: --gamma: unknown task 'blurry' in 'blurry=1'; tasks are box, random"),
    (["--gamma", "-1"], "--gamma for task 'box' must be a finite number > 0; got -1.0"),
    (["--t-start", "1000"], "--t-start for task 'box' must be an integer in [0, T); got 1000"),
    (["--sigma-y", "0", "--methods", "dps_paper"], "--sigma-y must be > 0 for method dps_paper"),
])
def test_bad_options_are_refused_with_what_is_allowed(evaluate_inverse, image_folder, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_inverse.main(["--data", str(image_folder), "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
