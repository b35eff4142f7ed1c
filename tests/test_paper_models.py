"""The 256 x 256 models ffhq256 and celebahq256: architectures, strict loading, the fast path, and every sampler.

The real checkpoints cannot be downloaded here, so each test makes a tiny checkpoint in the real file format (a
``torch.save`` of an ADM state dict; a diffusers folder with ``config.json`` and the old pickle
``diffusion_pytorch_model.bin`` with 2022 attention names, as google/ddpm-celebahq-256 has) and swaps it for the real
one in ``paper_models``: same repository, commit and file names, same loading code, only the size numbers differ.
"""
import dataclasses
import hashlib
import json

import pytest
import torch

from helpers import download, models, operators, paper_models, posterior, sampling

# The real architectures with only their size numbers reduced: 32 x 32 images, 1/4 of the channels.
TINY_ADM = dataclasses.replace(paper_models.FFHQ256_ARCHITECTURE, image_size=32, model_channels=32)
TINY_DDPM = {**paper_models.CELEBAHQ256_ARCHITECTURE, "sample_size": 32, "block_out_channels": (32, 32, 64, 64, 128, 128)}
DEPRECATED_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


pytestmark = pytest.mark.usefixtures("isolated_caches")   # tests/conftest.py: no network, caches in tmp_path


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random weights everywhere (the builders zero some output layers, which would hide errors), frozen as
    the loaders freeze them (with gradients on, attention may take another, not bit-identical, CPU kernel)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return module.requires_grad_(False)


def pinned(remote: download.RemoteFile, path) -> download.RemoteFile:
    data = path.read_bytes()
    return dataclasses.replace(remote, size=len(data), sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="session")
def tiny_adm():
    return randomize(paper_models.build_adm_unet(TINY_ADM), seed=0)


@pytest.fixture(scope="session")
def tiny_ddpm():
    return randomize(paper_models.build_ddpm_unet(TINY_DDPM), seed=1)


@pytest.fixture
def tiny_ffhq256(tiny_adm, tmp_path, monkeypatch):
    """The tiny ADM saved as diffusion_ffhq_10m.pt in the course cache, pinned in place of the real file."""
    real = paper_models.FFHQ256.weights
    path = download.course_folder(real, tmp_path) / real.filename
    path.parent.mkdir(parents=True)
    torch.save(tiny_adm.state_dict(), path)
    spec = dataclasses.replace(paper_models.FFHQ256, image_size=32, architecture=TINY_ADM, files=(pinned(real, path),))
    monkeypatch.setattr(paper_models, "FFHQ256", spec)
    return path


@pytest.fixture
def tiny_celebahq256(tiny_ddpm, tmp_path, monkeypatch):
    """The tiny UNet2DModel as google/ddpm-celebahq-256's files are: config.json + a pickle with 2022 attention names."""
    config_file, weights_file = paper_models.CELEBAHQ256.files
    folder = download.course_folder(weights_file, tmp_path)
    tiny_ddpm.save_pretrained(folder, safe_serialization=False)
    state = torch.load(folder / weights_file.filename, weights_only=True)
    for new, old in DEPRECATED_ATTENTION_NAMES.items():
        state = {key.replace(f".{new}.", f".{old}."): value for key, value in state.items()}
    assert any(".query." in key for key in state)
    torch.save(state, folder / weights_file.filename)
    spec = dataclasses.replace(paper_models.CELEBAHQ256, image_size=32, architecture=TINY_DDPM,
                               files=(pinned(config_file, folder / "config.json"),
                                      pinned(weights_file, folder / weights_file.filename)))
    monkeypatch.setattr(paper_models, "CELEBAHQ256", spec)
    return folder


def x_t_batch(batch=2, size=32, seed=3):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- the architectures at full size (on the meta device: shapes only, no memory) ----

def test_adm_unet_has_the_parameters_of_deepinvs_diffunet():
    from deepinv.models import DiffUNet

    with torch.device("meta"):
        ours = paper_models.ADMUNet(paper_models.FFHQ256_ARCHITECTURE).state_dict()
        reference = DiffUNet(pretrained=None).state_dict()
    # DiffUNet registers two schedule buffers after loading its checkpoint; they are not in ffhq_10m.pt
    reference = {k: tuple(v.shape) for k, v in reference.items() if k not in {"sqrt_alphas_cumprod",
                                                                             "sqrt_1m_alphas_cumprod"}}
    assert {k: tuple(v.shape) for k, v in ours.items()} == reference


def test_adm_unet_computes_what_deepinvs_diffunet_computes():
    from deepinv.models import DiffUNet

    reference = randomize(DiffUNet(pretrained=None), seed=2).eval()
    ours = paper_models.ADMUNet(paper_models.FFHQ256_ARCHITECTURE)
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("sqrt_")}, strict=True)
    x, t = x_t_batch(batch=1), torch.tensor([321])
    with torch.no_grad():
        expected = reference.forward_diffusion(x, t)
        assert expected.shape == (1, 6, 32, 32) and expected.abs().max() > 0.1
        assert torch.equal(ours.eval()(x, t), expected)


def test_ffhq256_has_as_many_parameters_as_the_published_file_holds():
    with torch.device("meta"):
        n = sum(p.numel() for p in paper_models.build_adm_unet(paper_models.FFHQ256_ARCHITECTURE).parameters())
    size = paper_models.FFHQ256.weights.size  # float32 tensors plus a little pickle overhead
    assert 0 < size - 4 * n < 0.001 * size, (n, size)


def test_ffhq256_forward_costs_388_gflop():
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        adm = paper_models.build_adm_unet(paper_models.FFHQ256_ARCHITECTURE)
        with FlopCounterMode(display=False) as counter:
            adm(torch.zeros(1, 3, 256, 256), torch.zeros(1, dtype=torch.long))
    assert counter.get_total_flops() / 1e9 == pytest.approx(388, rel=0.005)


def test_celebahq256_has_as_many_parameters_as_the_published_455_mb_file_holds():
    with torch.device("meta"):
        n = sum(p.numel() for p in paper_models.build_ddpm_unet(paper_models.CELEBAHQ256_ARCHITECTURE).parameters())
    assert 4 * n / 1e6 == pytest.approx(455, abs=0.5)


@pytest.mark.parametrize("change, match", [(dict(model_channels=48), "multiple of 32"),
                                           (dict(image_size=48), "divisible by 2"),
                                           (dict(attention_ds=(3,)), "downsampling factors"),
                                           (dict(num_head_channels=96), "must divide the 512 channels")])
def test_bad_adm_configs_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(paper_models.FFHQ256_ARCHITECTURE, **change)


# ---- loading through load_model ----

def test_ffhq256_loads_the_checkpoint_and_its_eps_is_the_first_3_of_6_channels(tiny_ffhq256, tiny_adm, tmp_path):
    model = models.load_model("ffhq256", device="cpu", cache_dir=tmp_path)
    assert (model.name, model.image_size, model.T) == ("ffhq256", 32, 1000)
    assert model.autocast_dtype is None and not model.channels_last  # fast=None on the CPU: off
    x_t, t = x_t_batch(), torch.tensor([5, 900])
    with torch.no_grad():
        six = tiny_adm(x_t, t)
    assert six.shape == (2, 6, 32, 32)
    assert torch.equal(model.eps(x_t, t), six[:, :3])


def test_celebahq256_loads_the_old_pickle_with_2022_attention_names(tiny_celebahq256, tiny_ddpm, tmp_path):
    model = models.load_model("celebahq256", device="cpu", cache_dir=tmp_path)
    x_t, t = x_t_batch(), torch.tensor([5, 900])
    with torch.no_grad():
        expected = tiny_ddpm(x_t, t).sample
    assert expected.abs().max() > 0.1
    assert torch.equal(model.eps(x_t, t), expected)


@pytest.mark.parametrize("edit, match", [("drop", "Missing key.*out.2.bias"), ("add", "Unexpected key.*extra"),
                                         ("reshape", "size mismatch for out.2.weight")])
def test_ffhq256_checkpoint_that_does_not_fit_is_refused(tiny_ffhq256, tmp_path, monkeypatch, edit, match):
    state = torch.load(tiny_ffhq256, weights_only=True)
    if edit == "drop":
        del state["out.2.bias"]
    elif edit == "add":
        state["extra"] = torch.zeros(1)
    else:
        state["out.2.weight"] = state["out.2.weight"][:3]
    torch.save(state, tiny_ffhq256)
    spec = paper_models.FFHQ256
    monkeypatch.setattr(paper_models, "FFHQ256", dataclasses.replace(spec, files=(pinned(spec.weights, tiny_ffhq256),)))
    with pytest.raises(RuntimeError, match=f"(?s)do not fit the ADM U-Net.*{match}"):
        models.load_model("ffhq256", device="cpu", cache_dir=tmp_path)


def test_celebahq256_config_of_another_architecture_is_refused(tiny_celebahq256, tmp_path, monkeypatch):
    config = json.loads((tiny_celebahq256 / "config.json").read_text())
    (tiny_celebahq256 / "config.json").write_text(json.dumps({**config, "layers_per_block": 1}))
    spec = paper_models.CELEBAHQ256
    files = (pinned(spec.files[0], tiny_celebahq256 / "config.json"), spec.files[1])
    monkeypatch.setattr(paper_models, "CELEBAHQ256", dataclasses.replace(spec, files=files))
    with pytest.raises(RuntimeError, match=r"another architecture.*'layers_per_block': \(1, 2\)"):
        models.load_model("celebahq256", device="cpu", cache_dir=tmp_path)


def test_corrupt_ffhq256_checkpoint_is_deleted_and_never_replaced_by_random_weights(tiny_ffhq256, tmp_path):
    data = bytearray(tiny_ffhq256.read_bytes())
    data[1000:1010] = bytes(10)
    tiny_ffhq256.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="corrupt.*sha256.*has been deleted"):
        models.load_model("ffhq256", device="cpu", cache_dir=tmp_path)
    assert not tiny_ffhq256.exists()


def test_missing_ffhq256_weights_say_file_size_path_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as info:
        models.load_model("ffhq256", device="cpu", cache_dir=tmp_path)
    message = str(info.value)
    assert "diffusion_ffhq_10m.pt (374,417,833 bytes (374 MB))" in message
    assert f"put it at {tmp_path}/deepinv/diffunet/6b0a2cf45decab1f022d22eefe3787d9d515f32b/diffusion_ffhq_10m.pt" in message
    assert ("https://huggingface.co/deepinv/diffunet/resolve/6b0a2cf45decab1f022d22eefe3787d9d515f32b/"
            "diffusion_ffhq_10m.pt") in message


def test_missing_celebahq256_weights_give_their_approximate_size(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"config.json \(790 bytes\) of google/ddpm-celebahq-256"):
        models.load_model("celebahq256", device="cpu", cache_dir=tmp_path)
    folder = download.course_folder(paper_models.CELEBAHQ256.weights, tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="config.json is corrupt: it has 2 bytes, expected 790"):
        models.load_model("celebahq256", device="cpu", cache_dir=tmp_path)
    assert not (folder / "config.json").exists()
    with pytest.raises(FileNotFoundError):
        models.load_model("celebahq256", device="cpu", cache_dir=tmp_path)
    assert paper_models.CELEBAHQ256.weights.describe_size() == "about 455 MB"


# ---- every sampler, end to end, through load_model ----

@pytest.mark.parametrize("name", ["ffhq256", "celebahq256"])
def test_every_sampler_runs_on_the_paper_models(request, tmp_path, name):
    request.getfixturevalue(f"tiny_{name}")
    model = models.load_model(name, device="cpu", cache_dir=tmp_path)
    generator = torch.Generator().manual_seed(0)
    x0, _ = sampling.ddpm_sample(model, 2, generator, num_steps=3, progress=False)
    op = operators.box_inpainting(model.image_size, 12)
    y = op.measure(x0.clamp(-1, 1), 0.05, generator)
    outputs = [x0, sampling.sdedit(model, y, 500, generator, num_steps=2, progress=False),
               posterior.score_ald_sample(model, op, y, generator, gamma=0.1, sigma_y=0.05, num_steps=3,
                                          progress=False)[0],
               posterior.dps_sample(model, op, y, generator, zeta=0.5, step="dps", num_steps=3, progress=False)[0]]
    for x in outputs:
        assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()


# ---- the fast path ----

def test_fast_path_is_off_on_the_cpu_by_default_and_eps_is_bit_identical(tiny_model):
    assert models.fast_settings(torch.device("cpu"), None) == (None, False)
    assert tiny_model.autocast_dtype is None and not tiny_model.channels_last
    x_t = x_t_batch(size=8)
    assert torch.equal(tiny_model.eps(x_t, 10), tiny_model.unet(x_t, torch.full((2,), 10)).sample)


def test_fast_path_forced_on_the_cpu_autocasts_and_returns_float32(tiny_ffhq256, tmp_path, capsys):
    exact = models.load_model("ffhq256", device="cpu", cache_dir=tmp_path)
    fast = models.load_model("ffhq256", device="cpu", cache_dir=tmp_path, fast=True)
    assert "fast path with bfloat16 autocast" in capsys.readouterr().out
    x_t = x_t_batch()
    eps_fast, eps_exact = fast.eps(x_t, 500), exact.eps(x_t, 500)
    assert eps_fast.dtype == torch.float32 and not torch.equal(eps_fast, eps_exact)
    torch.testing.assert_close(eps_fast, eps_exact, rtol=0, atol=0.05 * eps_exact.abs().max().item())


def test_compile_option_is_checked():
    with pytest.raises(ValueError, match="compile must be False, True or one of"):
        models.wrap_network("x", torch.nn.Identity(), 8, "cpu", compile="fastest")


# ---- "auto" ----

def test_auto_without_cuda_picks_the_embedded_model_and_says_why(capsys):
    model = models.load_model("auto", device="cpu")
    assert model.name == "faces"
    assert "load_model('auto') -> 'faces': no CUDA GPU (device cpu)" in capsys.readouterr().out


def test_auto_with_cuda_picks_ffhq256_when_cached_or_downloadable(tmp_path, monkeypatch, tiny_ffhq256):
    cuda = torch.device("cuda")
    name, why = models.choose_auto(cuda, cache_dir=tmp_path)
    assert name == "ffhq256" and str(tiny_ffhq256.parent) in why
    tiny_ffhq256.unlink()
    monkeypatch.setattr(download, "hub_reachable", lambda: True)
    assert models.choose_auto(cuda, cache_dir=tmp_path)[0] == "ffhq256"
    monkeypatch.setattr(download, "hub_reachable", lambda: False)
    assert models.choose_auto(cuda, cache_dir=tmp_path) == ("faces", models.choose_auto(cuda, tmp_path)[1])
    assert "cannot be reached" in models.choose_auto(cuda, cache_dir=tmp_path)[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, why = models.choose_auto(cuda, cache_dir=tmp_path)
    assert name == "faces" and "HF_HUB_OFFLINE" in why
