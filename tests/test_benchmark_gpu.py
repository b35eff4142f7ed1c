"""scripts/benchmark_gpu.py runs end to end (--smoke: reduced widths, 32x32, one step) and writes its report."""
import importlib.util
import pathlib
import re
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "benchmark_gpu.py"


@pytest.fixture(scope="module")
def benchmark_gpu():
    spec = importlib.util.spec_from_file_location("benchmark_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark_gpu"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["benchmark_gpu"]


def test_smoke_run_reports_every_model_sampler_and_batch(benchmark_gpu, tmp_path, capsys):
    out = tmp_path / "report" / "smoke.txt"
    assert benchmark_gpu.main(["--smoke", "--steps", "1", "--warmup", "0", "--peak-tflops", "1", "--out", str(out)]) == 0
    report = out.read_text()
    printed = capsys.readouterr().out.splitlines()   # the report, with load_model's precision lines between
    assert [line for line in printed if line in report.splitlines()] == report.splitlines()
    for name in ("ffhq256", "celebahq256"):
        assert f"\n{name}: " in report
    for sampler in ("DDPM", "DPS"):
        for batch in (1, 2):
            runs = re.findall(rf"\n  {sampler} +batch {batch}: +[0-9.]+ s per image for 1000 steps", report)
            assert len(runs) == 2, (sampler, batch)  # one per model
    assert report.count("GFLOP per forward") == 2 and report.count("(2.00x)") == 2
    assert "timed 1 steps per run after 0 warm-up steps, extrapolated per step to 1000 steps" in report
    assert "measured / floor n/a" not in report  # --peak-tflops gives every run a floor
    assert report.count("n/a (smoke)") == 4 and report.rstrip().endswith("targets: 0 PASS, 0 FAIL (smoke run: not judged)")


def test_full_run_without_a_gpu_is_refused(benchmark_gpu, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(SystemExit):
        benchmark_gpu.main(["--out", str(tmp_path / "x.txt")])
    assert not (tmp_path / "x.txt").exists()
