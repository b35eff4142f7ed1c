"""Training the course model: a tiny run writes its files and resumes; image listing with patterns."""
import csv
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.models import load_model_from_folder
from helpers.train import list_images, read_images, train


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / f"face_{i}.png")
    return folder


def loss_steps(run):
    with open(run / "loss.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_tiny_training_run_writes_its_files_and_resumes(image_folder, tmp_path, tiny_unet_config, capsys):
    run = tmp_path / "run"
    settings = dict(size=8, batch_size=2, checkpoint_every=2, log_every=1, warmup=2, unet_config=tiny_unet_config)
    ema_dir = train(str(image_folder), str(run), steps=3, **settings)
    assert ema_dir == run / "ema"
    assert (run / "checkpoint.pt").is_file() and (run / "loss.csv").is_file() and (run / "ema").is_dir()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3
    assert loss_steps(run) == [1, 2, 3]
    capsys.readouterr()

    train(str(image_folder), str(run), steps=5, **settings)
    assert "resuming from" in capsys.readouterr().out
    assert loss_steps(run) == [1, 2, 3, 4, 5]
    model = load_model_from_folder(run / "ema", device="cpu")
    assert model.image_size == 8
    x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model.eps(x_t, 10)).all()


def test_resuming_with_another_architecture_is_refused(image_folder, tmp_path, tiny_unet_config):
    run = tmp_path / "run"
    train(str(image_folder), str(run), size=8, steps=1, batch_size=2, unet_config=tiny_unet_config)
    other = dict(tiny_unet_config, layers_per_block=2)
    with pytest.raises(ValueError, match="checkpoint.pt was trained with config"):
        train(str(image_folder), str(run), size=8, steps=2, batch_size=2, unet_config=other)


@pytest.fixture
def image_zip(tmp_path):
    path = tmp_path / "data.zip"
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((6, 4, 3), dtype=np.uint8)).save(png)
    with zipfile.ZipFile(path, "w") as z:
        for name in ("set/a/1.png", "set/a/2.PNG", "set/b/3.png", "set/c/4.png"):
            z.write(png, name)
        z.writestr("set/README.txt", "not an image")
    return path


def test_list_images_in_a_zip_with_include_and_exclude(image_zip):
    assert list_images(image_zip) == ["set/a/1.png", "set/a/2.PNG", "set/b/3.png", "set/c/4.png"]
    assert list_images(image_zip, include=["set/a/*"]) == ["set/a/1.png", "set/a/2.PNG"]
    assert list_images(image_zip, exclude=["set/a/*", "set/c/*"]) == ["set/b/3.png"]
    assert list_images(image_zip, include=["set/?/*"], exclude=["*/b/*"]) == ["set/a/1.png", "set/a/2.PNG",
                                                                              "set/c/4.png"]


def test_read_images_centre_crops_and_resizes(image_zip):
    images = read_images(image_zip, ["set/a/1.png", "set/b/3.png"], size=4)
    assert images.shape == (2, 3, 4, 4) and images.dtype == torch.uint8


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"no images \(.png, .jpg"):
        list_images(tmp_path)


def test_patterns_that_exclude_everything_are_an_error(image_zip):
    with pytest.raises(ValueError, match="no images .* after include=.* and exclude="):
        list_images(image_zip, exclude=["*"])


def test_missing_data_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data must be a folder or a zip file"):
        list_images(tmp_path / "nowhere.zip")


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(batch_size=0), dict(warmup=0)])
def test_non_positive_steps_batch_size_or_warmup_are_rejected(image_folder, tmp_path, kwargs):
    with pytest.raises(ValueError, match="steps, batch_size and warmup must be >= 1"):
        train(str(image_folder), str(tmp_path / "run"), **kwargs)


def test_warm_start_begins_from_the_given_weights(image_folder, tmp_path, tiny_unet_config):
    first = train(str(image_folder), str(tmp_path / "first"), size=8, steps=2, batch_size=2,
                  unet_config=tiny_unet_config)
    warm = tmp_path / "warm"
    # lr = 0: the weights cannot move, so the warm-started EMA must equal the initial weights exactly
    train(str(image_folder), str(warm), size=8, steps=1, batch_size=2, lr=0.0, unet_config=tiny_unet_config,
          init=str(first))
    before = load_model_from_folder(first, device="cpu").unet.state_dict()
    after = load_model_from_folder(warm / "ema", device="cpu").unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_warm_start_from_another_architecture_is_refused(image_folder, tmp_path, tiny_unet_config):
    first = train(str(image_folder), str(tmp_path / "first"), size=8, steps=1, batch_size=2,
                  unet_config=tiny_unet_config)
    other = dict(tiny_unet_config, block_out_channels=(8, 24))
    with pytest.raises(ValueError, match="another architecture"):
        train(str(image_folder), str(tmp_path / "warm"), size=8, steps=1, batch_size=2, unet_config=other,
              init=str(first))


def test_learning_rate_warms_up_then_decays_by_a_cosine_to_min_lr():
    from helpers.train import learning_rate
    assert learning_rate(0, 1e-3, 10, 100) == pytest.approx(1e-4)
    assert learning_rate(9, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert learning_rate(50, 1e-3, 10, 100) == 1e-3  # constant by default
    assert learning_rate(10, 1e-3, 10, 100, "cosine", 1e-5) == pytest.approx(1e-3)
    assert learning_rate(55, 1e-3, 10, 100, "cosine", 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(100, 1e-3, 10, 100, "cosine", 1e-5) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="lr_schedule must be 'constant' or 'cosine'; got 'step'"):
        train("unused", "unused", lr_schedule="step")


def test_the_training_loss_noises_images_with_add_noise(image_folder, tmp_path, tiny_unet_config, monkeypatch):
    """The loss's x_t is eq. 3 through schedule.add_noise, the course's one implementation of it."""
    import helpers.train as train_module
    calls = []

    def spy(x0, z, t, alpha_bar):
        calls.append((x0.shape, t.shape))
        return train_module.__dict__["_real_add_noise"](x0, z, t, alpha_bar)

    monkeypatch.setitem(train_module.__dict__, "_real_add_noise", train_module.add_noise)
    monkeypatch.setattr(train_module, "add_noise", spy)
    train(str(image_folder), str(tmp_path / "run"), size=8, steps=2, batch_size=3, unet_config=tiny_unet_config)
    assert calls == [(torch.Size([3, 3, 8, 8]), torch.Size([3]))] * 2


def test_training_leaves_the_global_random_state_alone(image_folder, tmp_path, tiny_unet_config):
    """The initial weights come from `seed` through seeding.seeded_global_rng; the caller's generator is untouched."""
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train(str(image_folder), str(tmp_path / "run"), size=8, steps=1, batch_size=2, unet_config=tiny_unet_config)
    assert torch.equal(torch.rand(3), expected)


def test_training_step_is_the_simple_loss_of_add_noise_by_hand(tiny_unet_config):
    """The loss training_step returns is ||eps - eps_theta(add_noise(x0, eps, t))||^2, with the batch drawn from the
    generator in the documented order (images, flips, t, eps)."""
    from diffusers import UNet2DModel

    from helpers import images as images_module
    from helpers.schedule import add_noise, linear_schedule
    from helpers.train import training_step

    model = UNet2DModel(**dict(tiny_unet_config, sample_size=8))
    data = torch.randint(0, 256, (5, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    alpha_bar = linear_schedule().alpha_bar.float()
    generator = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 5, (3,), generator=generator)
    x0 = images_module.to_model_range(data[idx].float() / 255)
    flip = torch.rand(3, generator=generator) < 0.5
    x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    t = torch.randint(0, 1000, (3,), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(model(add_noise(x0, eps, t, alpha_bar), t).sample, eps).item()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    assert training_step(model, optimizer, data, alpha_bar, 3, 0.0, torch.Generator().manual_seed(2)) == expected
