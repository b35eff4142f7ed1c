"""DiffusionModel: eps, score and x0_hat (paper eqs. 4-6); loading, verifying and refusing bad checkpoints."""
import shutil
import types

import pytest
import torch

from helpers import models
from helpers.models import EMBEDDED_MODEL_DIR, WEIGHTS_FILE, DiffusionModel, load_model_from_folder
from helpers.schedule import linear_schedule


def x_t_batch(batch=2, size=8, seed=0, dtype=torch.float32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class OracleUNet(torch.nn.Module):
    """Stands in for a U-Net that predicts the true noise exactly (float64)."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps
        self.dtype_anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x_t, t):
        return types.SimpleNamespace(sample=self.eps)


@pytest.fixture
def copied_unet_dir(tiny_unet_dir, tmp_path):
    return shutil.copytree(tiny_unet_dir, tmp_path / "unet")


def test_round_trip_eps_is_the_saved_unets_output(tiny_unet, tiny_model):
    x_t = x_t_batch()
    for t in (0, 500, 999):
        expected = tiny_unet(x_t, torch.full((2,), t)).sample
        assert torch.equal(tiny_model.eps(x_t, t), expected)
    assert tiny_model.image_size == 8 and tiny_model.T == 1000
    assert torch.equal(tiny_model.alpha_bar, linear_schedule().alpha_bar)


def test_eps_accepts_one_timestep_per_image(tiny_model):
    x_t = x_t_batch()
    per_image = tiny_model.eps(x_t, torch.tensor([10, 900]))
    torch.testing.assert_close(per_image[:1], tiny_model.eps(x_t[:1], 10))
    torch.testing.assert_close(per_image[1:], tiny_model.eps(x_t[1:], 900))


@pytest.mark.parametrize("t", [0, 123, 999])
def test_score_and_x0_hat_follow_eq_6(tiny_model, t):
    x_t = x_t_batch()
    alpha_bar = tiny_model.alpha_bar[t]  # float64: 1 - alpha_bar[0] = 1e-4 loses digits in float32
    score = tiny_model.score(x_t, t)
    torch.testing.assert_close(score, -tiny_model.eps(x_t, t) / (1 - alpha_bar).sqrt().float())
    torch.testing.assert_close(tiny_model.x0_hat(x_t, t),
                               (x_t + (1 - alpha_bar).float() * score) / alpha_bar.sqrt().float())


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_x0_hat_recovers_x0_when_eps_is_the_true_noise(t):
    x0, eps = x_t_batch(seed=1, dtype=torch.float64), x_t_batch(seed=2, dtype=torch.float64)
    schedule = linear_schedule()
    x_t = schedule.alpha_bar[t].sqrt() * x0 + (1 - schedule.alpha_bar[t]).sqrt() * eps  # eq. 3
    oracle = DiffusionModel(name="oracle", unet=OracleUNet(eps), schedule=schedule, image_size=8,
                            device=torch.device("cpu"))
    torch.testing.assert_close(oracle.x0_hat(x_t, t), x0, rtol=0, atol=1e-10)


def test_corrupt_weights_are_refused(copied_unet_dir):
    weights = copied_unet_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10:] = bytes(255 - b for b in data[-10:])
    weights.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="corrupt"):
        load_model_from_folder(copied_unet_dir, device="cpu")


def test_truncated_weights_are_refused(copied_unet_dir):
    weights = copied_unet_dir / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match="corrupt"):
        load_model_from_folder(copied_unet_dir, device="cpu")


def test_unreadable_weights_without_checksum_are_refused(copied_unet_dir):
    (copied_unet_dir / models.CHECKSUM_FILE).unlink()
    weights = copied_unet_dir / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match="could not load"):
        load_model_from_folder(copied_unet_dir, device="cpu")


def test_weights_missing_a_tensor_are_refused_not_filled_in(copied_unet_dir):
    from safetensors.torch import load_file, save_file

    weights = copied_unet_dir / WEIGHTS_FILE
    state = load_file(weights)
    del state["conv_in.bias"]
    save_file(state, weights)
    models.write_checksum(copied_unet_dir)
    with pytest.raises(RuntimeError, match="conv_in.bias"):
        load_model_from_folder(copied_unet_dir, device="cpu")


@pytest.mark.parametrize("missing", ["config.json", WEIGHTS_FILE])
def test_missing_file_raises_file_not_found_naming_it(copied_unet_dir, missing):
    (copied_unet_dir / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_model_from_folder(copied_unet_dir, device="cpu")


@pytest.mark.skipif(not EMBEDDED_MODEL_DIR.exists(), reason=f"embedded weights not built yet: {EMBEDDED_MODEL_DIR} "
                    f"is absent (make train writes it)")
def test_embedded_model_loads_and_predicts(device):
    model = models.load_model("faces", device=device)
    assert model.name == "faces" and model.device == device
    x_t = x_t_batch(size=model.image_size)
    eps = model.eps(x_t, 500)
    assert eps.shape == x_t.shape and torch.isfinite(eps).all()


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"),
                                                 (False, False, "cpu")])
def test_pick_device_auto_prefers_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert models.pick_device("auto") == torch.device(expected)
    assert models.pick_device("cpu") == models.pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("device, available", [("cuda", dict(cuda=False)), ("cuda:1", dict(cuda=False)),
                                               ("mps", dict(mps=False))])
def test_pick_device_refuses_a_device_that_is_not_here(monkeypatch, device, available):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available.get("cuda", True))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: available.get("mps", True))
    with pytest.raises(RuntimeError, match=rf"device='{device}' was asked for, but .* is not available|"
                                           rf"device='{device}' was asked for, but no CUDA GPU is available"):
        models.pick_device(device)


def test_load_model_resolves_the_device_once(monkeypatch, capsys):
    calls = []
    real = models.pick_device
    monkeypatch.setattr(models, "pick_device", lambda device="auto": calls.append(device) or real(device))
    model = models.load_model("faces", device="cpu")
    assert calls == ["cpu"] and model.device == torch.device("cpu")


def test_the_timestep_is_checked_once_per_call(tiny_model, monkeypatch):
    calls = []
    real = models.check_timestep
    monkeypatch.setattr(models, "check_timestep", lambda *args, **kwargs: calls.append(args[0]) or real(*args, **kwargs))
    x_t = x_t_batch()
    for method in ("eps", "score", "x0_hat"):
        calls.clear()
        getattr(tiny_model, method)(x_t, 10)
        assert calls == [10], method


# ---- precision by capability (the fast path) ----

@pytest.fixture
def cuda_with_capability(monkeypatch):
    """Pretend the CUDA GPU has a given compute capability; is_bf16_supported would fail the test if asked (it
    answers True on a T4, which has no bfloat16 tensor cores)."""
    def make(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda *args, **kwargs: pytest.fail("precision must follow the compute capability"))
        return torch.device("cuda")
    return make


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16),    # Colab's T4
                                               ((7, 0), torch.float16),    # V100
                                               ((8, 0), torch.bfloat16),   # A100
                                               ((8, 9), torch.bfloat16),   # L4
                                               ((9, 0), torch.bfloat16)])  # H100, H200
def test_fast_path_on_cuda_picks_the_half_precision_of_the_tensor_cores(cuda_with_capability, capability, dtype):
    cuda = cuda_with_capability(capability)
    assert models.fast_settings(cuda, None) == (dtype, True)
    assert models.fast_settings(cuda, True) == (dtype, True)
    assert models.fast_settings(cuda, False) == (None, False)
    line = models.describe_precision(cuda, None)
    assert line.startswith(f"{str(dtype).removeprefix('torch.')} autocast (compute capability "
                           f"{capability[0]}.{capability[1]}")
    assert models.describe_precision(cuda, False) == "float32, the network as stored (fast=False)"


def test_fast_path_is_float32_off_cuda_and_says_so():
    cpu = torch.device("cpu")
    assert models.fast_settings(cpu, None) == (None, False)
    assert models.describe_precision(cpu, None).startswith("float32, the network as stored (the fast path is for CUDA")
    assert models.fast_settings(cpu, True) == (torch.bfloat16, False)
    assert models.fast_settings(torch.device("mps"), True) == (torch.float16, False)


def test_loading_states_the_precision_and_leaves_the_cpu_bit_identical(tiny_unet_dir, tiny_unet, capsys):
    model = load_model_from_folder(tiny_unet_dir, name="tiny", device="cpu")
    assert capsys.readouterr().out == ("tiny on cpu: float32, the network as stored (the fast path is for CUDA; "
                                       "fast=True forces it)\n")
    assert model.autocast_dtype is None and not model.channels_last
    x_t = x_t_batch()
    assert torch.equal(model.eps(x_t, 10), tiny_unet(x_t, torch.full((2,), 10)).sample)


@pytest.mark.parametrize("fast", ["yes", 1, 0.0])
def test_fast_must_be_none_or_a_bool(fast):
    with pytest.raises(ValueError, match=rf"fast must be None \(on for CUDA, off elsewhere\), True or False; got "
                                         rf"{fast!r}"):
        models.fast_settings(torch.device("cpu"), fast)


# ---- bad inputs ----

@pytest.mark.parametrize("name", ["nope", "FACES", ""])
def test_unknown_model_name_lists_the_allowed_names(name):
    with pytest.raises(ValueError, match=r"name must be one of \['auto', 'faces', 'ffhq256', 'celebahq256'\]"):
        models.load_model(name, device="cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "banana", ""])
def test_bad_device_string_lists_the_allowed_devices(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        models.pick_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_cuda_without_a_gpu_is_an_environment_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        models.pick_device("cuda")


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 1, 8, 8), (3, 8, 8), (2, 4, 8, 8)])
def test_eps_rejects_wrong_shape_or_channels(tiny_model, shape):
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 3, 8, 8\)"):
        tiny_model.eps(torch.zeros(shape), 0)


def test_eps_rejects_integer_images(tiny_model):
    with pytest.raises(ValueError, match="x_t must be a floating-point tensor"):
        tiny_model.eps(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0)


@pytest.mark.parametrize("method", ["eps", "score", "x0_hat"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_model_rejects_non_finite_images(tiny_model, method, bad):
    x_t = x_t_batch()
    x_t[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match="x_t must be finite; got 1 NaN or infinite values"):
        getattr(tiny_model, method)(x_t, 10)


@pytest.mark.parametrize("x_t", [[[0.0]], None])
def test_model_rejects_what_is_not_a_tensor(tiny_model, x_t):
    with pytest.raises(ValueError, match=r"x_t must be a torch.Tensor of shape \(B, 3, 8, 8\)"):
        tiny_model.eps(x_t, 10)


# ---- the fast GPU path against float32, on a CUDA GPU ----

def _both_precisions(tiny_unet_dir):
    exact = load_model_from_folder(tiny_unet_dir, name="float32", device="cuda", fast=False)
    fast = load_model_from_folder(tiny_unet_dir, name="fast", device="cuda", fast=True)
    return exact, fast


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("t", [10, 500, 990])
def test_the_fast_path_agrees_with_float32_to_half_precision(tiny_unet_dir, t):
    """bfloat16 keeps about 3 significant digits (float16 about 3-4): the fast eps stays within a few percent of the
    float32 one, relative to its size, and x0_hat inherits that error scaled by sqrt((1 - alpha_bar_t)/alpha_bar_t)."""
    exact, fast = _both_precisions(tiny_unet_dir)
    assert fast.autocast_dtype in (torch.bfloat16, torch.float16) and exact.autocast_dtype is None
    x_t = x_t_batch(batch=4).cuda()
    eps_exact, eps_fast = exact.eps(x_t, t), fast.eps(x_t, t)
    assert eps_fast.dtype == torch.float32
    relative = (eps_fast - eps_exact).norm() / eps_exact.norm()
    assert 0 < relative < 3e-2
    x0_exact, x0_fast = exact.x0_hat(x_t, t), fast.x0_hat(x_t, t)
    ratio = float(((1 - exact.alpha_bar[t]) / exact.alpha_bar[t]).sqrt())
    assert (x0_fast - x0_exact).norm() <= 1.01 * ratio * (eps_fast - eps_exact).norm()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_fast_path_samples_like_float32(tiny_unet_dir):
    """A short DDPM chain from the same start and noise ends close to the float32 one."""
    from helpers import sampling

    exact, fast = _both_precisions(tiny_unet_dir)
    x_T = x_t_batch(batch=4)
    outputs = [sampling.ddpm_sample(model, 4, torch.Generator().manual_seed(0), num_steps=10, x_T=x_T,
                                    progress=False)[0] for model in (exact, fast)]
    assert torch.isfinite(outputs[1]).all()
    assert (outputs[1] - outputs[0]).abs().mean() < 0.05


@pytest.mark.parametrize("method", ["eps", "score", "x0_hat"])
@pytest.mark.parametrize("t, match", [(-1, r"t must be in \[0, 1000\)"), (1000, r"t must be in \[0, 1000\)"),
                                      (2.5, r"t must be an integer timestep in \[0, 1000\)")])
def test_model_rejects_timesteps_outside_the_schedule(tiny_model, method, t, match):
    with pytest.raises(ValueError, match=match):
        getattr(tiny_model, method)(torch.zeros(1, 3, 8, 8), t)
