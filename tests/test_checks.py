"""check_close: one stable line, the max error back, AssertionError on failure."""
import pytest
import torch

from helpers.checks import check_close


def test_close_tensors_print_ok_and_return_the_max_error(capsys):
    error = check_close("x0_hat", torch.tensor([1.0, 2.0], dtype=torch.float64),
                        torch.tensor([1.0, 2.0 + 1e-7], dtype=torch.float64))
    assert error == pytest.approx(1e-7, rel=1e-3)
    line = capsys.readouterr().out
    assert line.startswith("ok") and "x0_hat" in line and "shape (2,)" in line


def test_different_tensors_raise_naming_the_check():
    with pytest.raises(AssertionError, match="FAIL  score: max abs error 1.0e-01"):
        check_close("score", torch.tensor([1.0]), torch.tensor([1.1]))


def test_different_shapes_raise():
    with pytest.raises(AssertionError, match=r"FAIL  eps: shapes differ, \(2,\) vs \(3,\)"):
        check_close("eps", torch.zeros(2), torch.zeros(3))
