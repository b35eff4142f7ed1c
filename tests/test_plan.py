"""helpers.plan: which run sizes each notebook gets for the model and device in use."""
import dataclasses
import types

import pytest
import torch

from helpers import plan


def fake_model(image_size, device="cpu"):
    return types.SimpleNamespace(image_size=image_size, T=1000, device=torch.device(device))


def test_embedded_model_on_the_cpu_gets_the_notebooks_cpu_sizes():
    p = plan.run_plan(fake_model(32))
    assert p is plan.EMBEDDED
    # what notebooks 00-06 run today (their run-size cells)
    assert (p.getting_started.num_samples, p.getting_started.num_steps) == (16, 200)
    assert (p.forward_process.num_draws, p.forward_process.check_steps) == (1000, (1, 10, 100, 500))
    assert (p.forward_process.mc_image_size, p.forward_process.mc_device) == (32, "cpu")
    assert (p.x0_identities.num_checks, p.x0_identities.num_demo) == (4, 2)
    assert (p.single_step.num_draws, p.single_step.num_model_samples, p.single_step.sample_steps) == (8, 4, 50)
    assert (p.ddpm.num_fig3, p.ddpm.step_counts, p.ddpm.num_batch, p.ddpm.batch_steps) == (3, (10, 50, 250), 16, 100)
    assert (p.sdedit.fig_steps, p.sdedit.num_draws, p.sdedit.sweep_steps) == (None, 3, 50)
    post = p.posterior
    assert (post.num_steps, post.sdedit_steps, post.t_start, post.tune) == (50, 50, None, True)
    assert post.score_ald_steps == 2 * post.num_steps   # the same compute: a DPS step is a forward and a backward pass
    assert (post.search_gamma, post.search_zeta_1000) == ((1.2, 1.5, 2.0, 3.0), (0.03, 0.1, 0.3, 1.0))
    assert 125 in range(min(post.search_t_start), max(post.search_t_start))   # t_start = 500 matched to 32 px
    assert len(post.eval_names) + post.num_eval_samples >= 8 and post.num_draws >= 2 and post.num_tune_samples >= 4
    assert post.keep_every == 1 and post.network_chunk >= post.num_steps   # the misfit of all states in one call


def test_embedded_model_on_cuda_runs_notebook_06_with_all_steps_as_before():
    p = plan.run_plan(fake_model(32), device="cuda")
    assert (p.posterior.num_steps, p.posterior.score_ald_steps, p.posterior.sdedit_steps) == (1000, 1000, 1000)
    assert dataclasses.replace(p, name="embedded", why=plan.EMBEDDED.why,
                               posterior=plan.EMBEDDED.posterior) == plan.EMBEDDED


def test_paper_scale_model_on_cuda_gets_the_t4_plan_with_dps_published_step_sizes():
    p = plan.run_plan(fake_model(256), device="cuda")
    assert p is plan.PAPER_SCALE
    post = p.posterior
    assert not post.tune and post.search_gamma == () and post.search_zeta_1000 == ()
    # DPS2022/diffusion-posterior-sampling: configs/inpainting_config.yaml, configs/gaussian_deblur_config.yaml
    assert post.zeta_1000 == {"box": 0.5, "random": 0.5, "blur": 0.3}
    assert set(post.gamma) == {"box", "random", "blur"}
    assert 200 <= post.num_steps <= 500 and post.sdedit_steps <= post.t_start + 1
    assert p.forward_process.mc_image_size == 32 and p.forward_process.mc_device == "cpu"   # never 256 on the CPU
    assert post.num_steps // post.keep_every <= 50 and post.network_chunk <= 16


def test_paper_scale_model_off_cuda_gets_the_gpu_plan_and_says_it_is_slow():
    p = plan.run_plan(fake_model(256, "cpu"))
    assert p.posterior == plan.PAPER_SCALE.posterior and "hours" in p.why


def test_the_plan_prints_one_line_per_notebook():
    for p in (plan.EMBEDDED, plan.PAPER_SCALE):
        lines = str(p).splitlines()
        assert lines[0].startswith(f"run plan {p.name!r}: ") and [line.split(":")[0].strip() for line in lines[1:]] \
            == ["00", "01", "02", "03", "04", "05", "06"]
    assert "published, no search: DPS zeta_1000 {'box': 0.5, 'random': 0.5, 'blur': 0.3}" in str(plan.PAPER_SCALE)
    assert "searched on the tuning samples" in str(plan.EMBEDDED)


def test_plans_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.EMBEDDED.posterior.num_steps = 10


def test_the_real_embedded_model_gets_the_embedded_plan(tiny_model):
    assert plan.run_plan(tiny_model) is plan.EMBEDDED


@pytest.mark.parametrize("model, match", [(object(), r"model must be a helpers.models.DiffusionModel .*without "
                                                     r"\.image_size"),
                                          ("faces", r"model must be a helpers.models.DiffusionModel")])
def test_not_a_model_is_refused(model, match):
    with pytest.raises(ValueError, match=match):
        plan.run_plan(model)


@pytest.mark.parametrize("device", ["gpu", 3.5])
def test_bad_device_is_refused(device):
    with pytest.raises(ValueError, match=r"device must be None \(the model's\), 'cpu', 'cuda', 'cuda:N' or 'mps'; "
                                         rf"got {device!r}"):
        plan.run_plan(fake_model(32), device=device)
