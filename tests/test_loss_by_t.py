"""scripts/loss_by_t.py on a tiny random model and a few synthetic "held-out" images: it reads only the held-out
identities, as scripts/evaluate_model.py does; every t sees the same noise; the CSV has one row per t with the loss and
the x0_hat error of eq. 6, which is (1 - alpha_bar_t) / alpha_bar_t times the loss; bad inputs fail with a message that
names the parameter."""
import csv
import importlib.util
import pathlib
import shutil
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import schedule

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def loss_by_t():
    spec = importlib.util.spec_from_file_location("loss_by_t", ROOT / "scripts" / "loss_by_t.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["loss_by_t"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("loss_by_t", None)


@pytest.fixture(scope="module")
def fake_zip(tmp_path_factory):
    """Three smooth 178 x 218 RGB images named like CelebA's held-out identities, and one training identity."""
    path = tmp_path_factory.mktemp("data") / "celeba-fake.zip"
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.linspace(0, 1, 218), np.linspace(0, 1, 178), indexing="ij")
    with zipfile.ZipFile(path, "w") as z:
        for k, name in enumerate(["celeb_180/1.png", "celeb_191/2.png", "celeb_199/3.png", "celeb_5/4.png"]):
            image = np.stack([i * (k + 1) / 4, j, 0.5 + 0.3 * np.sin(6 * i + k)], axis=-1)
            image = ((image + 0.05 * rng.random(image.shape)).clip(0, 1) * 255).astype(np.uint8)
            png = path.parent / f"{k}.png"
            Image.fromarray(image).save(png)
            z.write(png, f"celeba-6k/{name}")
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_csv_has_one_row_per_t_from_the_held_out_faces(loss_by_t, fake_zip, tiny_unet_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_unet_dir, model_dir)
    code = loss_by_t.main(["--data", str(fake_zip), "--model-dir", str(model_dir), "--timesteps", "0,10,500,999",
                           "--batch-size", "2", "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3 faces (celeb_180..celeb_199)" in out  # celeb_5 is a training identity, not read
    rows = read_csv(model_dir / "loss_by_t.csv")  # the default: next to the weights
    assert list(rows[0]) == list(loss_by_t.COLUMNS)
    assert [int(row["t"]) for row in rows] == [0, 10, 500, 999]
    alpha_bar = schedule.linear_schedule().alpha_bar
    for row in rows:
        assert int(row["n_faces"]) == 3 and int(row["seed"]) == 0 and len(row["weights_sha256"]) == 16
        a = float(alpha_bar[int(row["t"])])
        assert float(row["alpha_bar"]) == pytest.approx(a, rel=1e-5)
        assert float(row["loss_mean"]) > 0 and float(row["loss_se"]) >= 0
        # eq. 6 with eq. 3: x0_hat - x0 = -sqrt(1 - a) / sqrt(a) (eps_hat - eps), face by face
        assert float(row["x0_mse_mean"]) == pytest.approx((1 - a) / a * float(row["loss_mean"]), rel=1e-3)


def test_the_same_noise_at_every_t_and_the_loss_is_the_training_objective(loss_by_t, tiny_model):
    x0 = torch.rand(5, 3, 8, 8) * 2 - 1
    eps = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    results = loss_by_t.loss_by_t(tiny_model, x0, eps, (3, 300), batch_size=2)
    assert set(results) == {3, 300} and results[3][0].shape == (5,) and results[3][0].dtype == torch.float64
    for t, (loss, x0_mse) in results.items():
        x_t = schedule.add_noise(x0, eps, t, tiny_model.alpha_bar.float())
        expected = ((eps - tiny_model.eps(x_t, t)) ** 2).mean(dim=(1, 2, 3))
        torch.testing.assert_close(loss, expected.double(), rtol=1e-5, atol=1e-7)
        a = float(tiny_model.alpha_bar[t])
        torch.testing.assert_close(x0_mse, (1 - a) / a * loss, rtol=1e-3, atol=1e-9)
    # a batch size that does not divide the faces gives the same numbers
    again = loss_by_t.loss_by_t(tiny_model, x0, eps, (3, 300), batch_size=5)
    for t in results:
        torch.testing.assert_close(again[t][0], results[t][0], rtol=1e-5, atol=1e-7)


def test_out_writes_elsewhere(loss_by_t, fake_zip, tiny_unet_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "by_t.csv"
    loss_by_t.main(["--data", str(fake_zip), "--model-dir", str(tiny_unet_dir), "--timesteps", "7",
                    "--out", str(out), "--threads", "1"])
    assert [int(row["t"]) for row in read_csv(out)] == [7]
    assert f"wrote {out}" in capsys.readouterr().out


def test_bad_inputs_are_named(loss_by_t, fake_zip, tiny_unet_dir, tmp_path, capsys):
    for bad in ("5,3", "0,1000", "a,b", "3,3"):
        with pytest.raises(SystemExit):
            loss_by_t.main(["--data", str(fake_zip), "--model-dir", str(tiny_unet_dir), "--timesteps", bad])
        assert "--timesteps must be increasing, distinct integers in [0, 1000)" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--model-dir .*nowhere.*no such folder"):
        loss_by_t.main(["--data", str(fake_zip), "--model-dir", str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError, match="--data .*nowhere.zip"):
        loss_by_t.main(["--data", str(tmp_path / "nowhere.zip"), "--model-dir", str(tiny_unet_dir)])
    with pytest.raises(SystemExit):
        loss_by_t.main(["--data", str(fake_zip), "--batch-size", "0"])
    assert "--batch-size must be a positive integer; got '0'" in capsys.readouterr().err


def test_the_shipped_csv_belongs_to_the_shipped_weights():
    """The notebook reads helpers/weights/faces32/loss_by_t.csv; it must have been measured on the weights beside it."""
    from helpers.download import sha256_of
    from helpers.models import EMBEDDED_MODEL_DIR, WEIGHTS_FILE

    rows = read_csv(EMBEDDED_MODEL_DIR / "loss_by_t.csv")
    assert {row["weights_sha256"] for row in rows} == {sha256_of(EMBEDDED_MODEL_DIR / WEIGHTS_FILE)[:16]}, (
        "loss_by_t.csv is stale: run python scripts/loss_by_t.py (with the CelebA zip) and commit the CSV")
    assert {int(row["n_faces"]) for row in rows} == {600}
