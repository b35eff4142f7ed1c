"""scripts/audit_gpu_plan.py: the stand-in network, the cost model, the counting, and the notebooks under the GPU plan.

The synthetic notebooks make the audit's verdicts testable in seconds; the slow test runs the course's notebooks
(those that call plan.run_plan; the others are skipped by name) and fails if any is beyond a T4's limits.
"""
import importlib.util
import json
import pathlib
import sys

import pytest
import torch

from helpers import operators, plan, posterior

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("audit_gpu_plan", REPO / "scripts" / "audit_gpu_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def notebook(path, *sources):
    cells = [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
             for source in sources]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


SETUP = ("import torch\nfrom helpers import models, operators, plan, posterior, sampling\n"
         "model = models.load_model('auto', device='auto')\nPLAN = plan.run_plan(model)\nprint(PLAN)")


def test_stand_in_has_the_ffhq256_interface_and_counts_passes(audit):
    model, counts = audit.stand_in_model()
    assert model.image_size == 256 and model.T == 1000
    x = torch.randn(2, 3, 256, 256)
    assert model.unet.adm(x, torch.tensor([10, 500])).shape == (2, 6, 256, 256)
    assert counts.forward_images == 2 and counts.max_batch_no_grad == 2
    op = operators.course_operators(256)["box"]
    y = op.measure(torch.zeros(2, 3, 256, 256), 0.05, torch.Generator().manual_seed(0))
    posterior.dps_step(model, op, x, y, 500, 499, torch.Generator().manual_seed(0), 0.5, step="dps")
    assert (counts.forward_images_grad, counts.backward_images, counts.max_batch_grad) == (2, 2, 2)
    with pytest.raises(ValueError, match=r"the stand-in takes x of shape \(B, 3, 256, 256\)"):
        model.unet.adm(torch.zeros(1, 3, 32, 32), torch.tensor([0]))


def test_cost_model_arithmetic(audit):
    # 1000 forward images: 388 TFLOP at 8 TFLOP/s = 48.5 s; a backward image costs two forward ones
    assert audit.t4_minutes(1000, 0) == pytest.approx(388e3 / 8e3 / 60)
    assert audit.t4_minutes(0, 1000) == pytest.approx(2 * audit.t4_minutes(1000, 0))
    fixed = audit.WEIGHTS_GB + audit.AUTOCAST_COPY_GB + audit.CUDA_CONTEXT_GB
    assert audit.gpu_peak_gb(10, 0) == pytest.approx(fixed + 10 * audit.ACTIVATION_GB_NO_GRAD)
    assert audit.gpu_peak_gb(1, 4) == pytest.approx(fixed + 4 * audit.ACTIVATION_GB_GRAD)


def test_a_notebook_within_the_plan_is_counted_exactly_and_passes(audit, tmp_path):
    path = notebook(tmp_path / "01_small.ipynb", SETUP,
                    "samples, _ = sampling.ddpm_sample(model, 2, torch.Generator().manual_seed(0), num_steps=5, "
                    "progress=False)",
                    "op = operators.course_operators(model.image_size)['blur']\n"
                    "y = op.measure(samples, 0.05, torch.Generator().manual_seed(1))\n"
                    "x, _ = posterior.dps_sample(model, op, y, torch.Generator().manual_seed(2), zeta=0.5, step='dps', "
                    "num_steps=3, progress=False)",
                    "assert False, 'a claim the stand-in cannot meet'")
    (report,) = audit.audit([path])
    assert report.skipped is None and [c.index for c in report.cells] == [0, 1, 2, 3]
    setup, sample, dps, claim = report.cells
    assert (sample.counts.forward_images, sample.counts.max_batch_no_grad) == (10, 2)
    assert (dps.counts.forward_images_grad, dps.counts.backward_images, dps.counts.max_batch_grad) == (6, 6, 2)
    assert claim.error.startswith("AssertionError") and report.violations() == []
    assert report.t4_minutes == pytest.approx(audit.t4_minutes(16, 6))
    assert "01_small" in audit.format_table([report])


def test_a_notebook_beyond_a_t4_is_flagged(audit, tmp_path, monkeypatch):
    # A T4 ten times slower than assumed, so that 40 calls of batch 40 = 1,600 forward images are 12.9 T4 minutes in
    # one cell (the cost model is linear in images / throughput; 16,000 images at 256 x 256 take half a minute here)
    monkeypatch.setattr(audit, "T4_TFLOPS", audit.T4_TFLOPS / 10)
    path = notebook(tmp_path / "02_big.ipynb", SETUP,
                    "for _ in range(40):\n    model.eps(torch.zeros(40, 3, 256, 256), 10)",
                    "raise RuntimeError('not an assertion')")
    (report,) = audit.audit([path])
    problems = "\n".join(report.violations())
    assert "02_big: 12.9 T4 minutes > 10" in problems
    assert "02_big cell 1" in problems and "T4 minutes > 3" in problems
    assert "GB of GPU memory > 12" in problems   # 40 x 0.36 GB
    assert "raised RuntimeError: not an assertion" in problems


def test_a_notebook_without_the_plan_is_skipped_and_says_so(audit, tmp_path):
    path = notebook(tmp_path / "03_old.ipynb", "NUM_STEPS = 50")
    (report,) = audit.audit([path])
    assert report.skipped == "does not call plan.run_plan yet" and report.violations() == []
    assert "03_old | skipped" in audit.format_table([report])


def test_the_audit_leaves_load_model_and_run_plan_as_they_were(audit, tmp_path):
    from helpers import models

    load_model, run_plan = models.load_model, plan.run_plan
    audit.audit([notebook(tmp_path / "04.ipynb", SETUP)])
    assert models.load_model is load_model and plan.run_plan is run_plan


@pytest.mark.slow
def test_every_notebook_fits_a_t4_under_the_gpu_plan(audit):
    """The course's notebooks under plan.PAPER_SCALE with the stand-in: <= 10 T4 minutes and <= 12 GB each, no cell
    over 3 T4 minutes or 4 GB of CPU memory. Notebooks that do not call plan.run_plan yet are skipped, by name."""
    paths = sorted((REPO / "notebooks").glob("0*.ipynb"))
    reports = audit.audit(paths)
    print(audit.format_table(reports))
    problems = [line for report in reports for line in report.violations()]
    assert not problems, "\n".join(problems)
    skipped = [report.name for report in reports if report.skipped]
    if len(skipped) == len(reports):
        pytest.skip(f"no notebook calls plan.run_plan yet: {', '.join(skipped)}")
    if skipped:
        print(f"skipped (no plan.run_plan yet): {', '.join(skipped)}")
